//! Dual-stack announcing (feature `tokio`): one agent, two paths to the server.
//! It must not decide any protocol rule: it carries each message unchanged, and which refusal ends
//! discovery is the core's ([`Class::ends_discovery`](crate::Class::ends_discovery)).
//!
//! A home with IPv4 and IPv6 reaches the server from two public networks: its IPv4 address and
//! its IPv6 prefix. A browser may use either. [`DualStack`] is an [`AgentServerTransport`] over
//! two transports (one per family: e.g. two `HttpAgentClient`s, one for `http://192.0.2.1` and
//! one for `http://[2001:db8::1]`, or two clients bound to each family) that announces over both
//! at once. The server then holds one presence — one instance, proven by one presence key — in
//! each network it was seen from, each counted within that network's own limits, and each network
//! sees only its own agents. A link accepted in one network claims the instance in all of them
//! (the server's instance claim: `409 already_linking` elsewhere), so the secret is good for one
//! link.
//!
//! A `verify_and_redeem` message arrives in the reply of the path whose network linked, and the
//! code it carries redeems only from that network (`403 invalid_code` elsewhere): the
//! transport remembers which path delivered each code (by its hash, a few at most) and redeems
//! over that path. A code it did not deliver (a manual code the user typed) goes over the first
//! path, and over the second if the first cannot be reached.
//!
//! Fail closed: a refusal on either path that ends discovery (`window_over`, `forged_instance`,
//! …) is what the agent gets, even when the other path answered. Otherwise one path answering is
//! enough; when both fail, the first path's error comes back. A reply that carries messages (a
//! link) is handed on as soon as it comes, without waiting for the other path, whose
//! announcement may be held (revision 1.6) with nothing to say: it is dropped.
//!
//! (`HttpAgentClient` is `lanlink::http::client::HttpAgentClient`, feature `http-client`.)
//!
//! ```
//! # #[cfg(feature = "http-client")]
//! # async fn demo() -> Result<(), lanlink::transport::TransportError> {
//! use lanlink::dual::DualStack;
//! use lanlink::http::client::HttpAgentClient;
//! let transport = DualStack::new(
//!     HttpAgentClient::new("http://127.0.0.1:8443")?,
//!     HttpAgentClient::new("http://[::1]:8443")?,
//! );
//! // `lanlink::driver::run_agent(&agent, &transport, …)` then announces over both.
//! # let _ = transport; Ok(()) }
//! ```

use std::sync::Mutex;

use async_trait::async_trait;

use crate::code::CodeKey;
use crate::transport::{AgentServerTransport, TransportError};
use crate::wire::{AgentMessage, Announce, AnnounceReply, RedeemReply, RedeemRequest, Visibility};

/// How many delivered codes a [`DualStack`] remembers the path of (an agent gets one per link;
/// a few cover a link retried while an old message is still delivered).
const ROUTES: usize = 8;

/// Which of a [`DualStack`]'s two transports.
///
/// ```
/// # use lanlink::dual::{DualStack, Path};
/// # use lanlink::transport::{AgentServerTransport, TransportError};
/// # use lanlink::wire::{AgentMessage, Announce, AnnounceReply, RedeemReply, RedeemRequest};
/// # use lanlink::{secret::PresenceKey, LinkCode, LocalSecret};
/// # /// A path that answers every announcement with the same reply.
/// # struct Canned(AnnounceReply);
/// # #[lanlink::async_trait]
/// # impl AgentServerTransport for Canned {
/// #     async fn announce(&self, _: &Announce) -> Result<AnnounceReply, TransportError> { Ok(self.0.clone()) }
/// #     async fn redeem(&self, _: &RedeemRequest) -> Result<RedeemReply, TransportError> { Err(TransportError::Malformed) }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # let key = PresenceKey::from_bytes([1; 32]);
/// # let id = key.instance_id();
/// # let secret = LocalSecret::from_bytes([2; 32]);
/// # let announce = Announce::new(id, "192.168.1.50".parse().unwrap(), 8080, Default::default(), secret.commitment(&id), key);
/// # let code = LinkCode::parse("0123456789abcdef0123456789abcdef").unwrap();
/// # let message = AgentMessage::VerifyAndRedeem { instance_id: id, local_secret: secret,
/// #     code: code.clone(), display_name: None, nonce: None };
/// // The IPv6 network linked: its reply carries the message, so the code goes back that way.
/// let dual = DualStack::new(Canned(AnnounceReply::new(vec![], 2000)), Canned(AnnounceReply::new(vec![message], 2000)));
/// let reply = dual.announce(&announce).await.unwrap();
/// assert_eq!(reply.messages.len(), 1);
/// assert_eq!(dual.route_of(&code), Some(Path::Second));
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Path {
    /// The first transport given to [`DualStack::new`] (by convention IPv4).
    First,
    /// The second (by convention IPv6).
    Second,
}

/// An [`AgentServerTransport`] announcing over two transports at once (see the
/// [module docs](self)).
///
/// ```
/// # use lanlink::dual::{DualStack, Path};
/// # use lanlink::transport::{AgentServerTransport, TransportError};
/// # use lanlink::wire::{AgentMessage, Announce, AnnounceReply, RedeemReply, RedeemRequest};
/// # use lanlink::{secret::PresenceKey, LinkCode, LocalSecret};
/// # /// A path that answers every announcement with the same reply.
/// # struct Canned(AnnounceReply);
/// # #[lanlink::async_trait]
/// # impl AgentServerTransport for Canned {
/// #     async fn announce(&self, _: &Announce) -> Result<AnnounceReply, TransportError> { Ok(self.0.clone()) }
/// #     async fn redeem(&self, _: &RedeemRequest) -> Result<RedeemReply, TransportError> { Err(TransportError::Malformed) }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # let key = PresenceKey::from_bytes([1; 32]);
/// # let id = key.instance_id();
/// # let secret = LocalSecret::from_bytes([2; 32]);
/// # let announce = Announce::new(id, "192.168.1.50".parse().unwrap(), 8080, Default::default(), secret.commitment(&id), key);
/// # let code = LinkCode::parse("0123456789abcdef0123456789abcdef").unwrap();
/// # let message = AgentMessage::VerifyAndRedeem { instance_id: id, local_secret: secret,
/// #     code: code.clone(), display_name: None, nonce: None };
/// // Both networks answer: one reply, the sooner poll of the two.
/// let dual = DualStack::new(Canned(AnnounceReply::new(vec![], 2000)), Canned(AnnounceReply::new(vec![], 500)));
/// let reply = dual.announce(&announce).await.unwrap();
/// assert_eq!(reply.poll_after_ms, 500);
/// # let _ = (message, code);
/// # }
/// ```
pub struct DualStack<A, B> {
    first: A,
    second: B,
    /// The path that delivered each recent code, by the code's hash (never the code).
    routes: Mutex<Vec<(CodeKey, Path)>>,
}

impl<A, B> std::fmt::Debug for DualStack<A, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DualStack").finish_non_exhaustive()
    }
}

impl<A: AgentServerTransport, B: AgentServerTransport> DualStack<A, B> {
    /// Announces over `first` and `second`; redeems over the one that delivered the code.
    ///
    /// ```
    /// # use lanlink::dual::{DualStack, Path};
    /// # use lanlink::transport::{AgentServerTransport, TransportError};
    /// # use lanlink::wire::{AgentMessage, Announce, AnnounceReply, RedeemReply, RedeemRequest};
    /// # use lanlink::{secret::PresenceKey, LinkCode, LocalSecret};
    /// # /// A path that answers every announcement with the same reply.
    /// # struct Canned(AnnounceReply);
    /// # #[lanlink::async_trait]
    /// # impl AgentServerTransport for Canned {
    /// #     async fn announce(&self, _: &Announce) -> Result<AnnounceReply, TransportError> { Ok(self.0.clone()) }
    /// #     async fn redeem(&self, _: &RedeemRequest) -> Result<RedeemReply, TransportError> { Err(TransportError::Malformed) }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let key = PresenceKey::from_bytes([1; 32]);
    /// # let id = key.instance_id();
    /// # let secret = LocalSecret::from_bytes([2; 32]);
    /// # let announce = Announce::new(id, "192.168.1.50".parse().unwrap(), 8080, Default::default(), secret.commitment(&id), key);
    /// # let code = LinkCode::parse("0123456789abcdef0123456789abcdef").unwrap();
    /// # let message = AgentMessage::VerifyAndRedeem { instance_id: id, local_secret: secret,
    /// #     code: code.clone(), display_name: None, nonce: None };
    /// let dual = DualStack::new(Canned(AnnounceReply::new(vec![message], 2000)), Canned(AnnounceReply::new(vec![], 2000)));
    /// assert_eq!(dual.route_of(&code), None, "nothing delivered yet");
    /// dual.announce(&announce).await.unwrap();
    /// assert_eq!(dual.route_of(&code), Some(Path::First));
    /// # }
    /// ```
    pub fn new(first: A, second: B) -> Self {
        Self {
            first,
            second,
            routes: Mutex::new(Vec::new()),
        }
    }

    /// The path that delivered `code` in an announce reply, if this transport still remembers.
    ///
    /// ```
    /// # #[cfg(feature = "http-client")] {
    /// # use lanlink::dual::DualStack;
    /// # use lanlink::http::client::HttpAgentClient;
    /// let dual = DualStack::new(
    ///     HttpAgentClient::new("http://127.0.0.1:1").unwrap(),
    ///     HttpAgentClient::new("http://[::1]:1").unwrap(),
    /// );
    /// let code = lanlink::LinkCode::parse("ABCD-EFGH").unwrap();
    /// assert_eq!(dual.route_of(&code), None);
    /// # }
    /// ```
    pub fn route_of(&self, code: &crate::LinkCode) -> Option<Path> {
        let key = code.key();
        crate::lock_unpoisoned(&self.routes)
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, path)| *path)
    }

    /// The paths of the codes this transport remembers delivering, oldest first (one per link
    /// message; for diagnostics and tests: which family the link came through).
    ///
    /// ```
    /// # use lanlink::dual::{DualStack, Path};
    /// # use lanlink::transport::{AgentServerTransport, TransportError};
    /// # use lanlink::wire::{AgentMessage, Announce, AnnounceReply, RedeemReply, RedeemRequest};
    /// # use lanlink::{secret::PresenceKey, LinkCode, LocalSecret};
    /// # /// A path that answers every announcement with the same reply.
    /// # struct Canned(AnnounceReply);
    /// # #[lanlink::async_trait]
    /// # impl AgentServerTransport for Canned {
    /// #     async fn announce(&self, _: &Announce) -> Result<AnnounceReply, TransportError> { Ok(self.0.clone()) }
    /// #     async fn redeem(&self, _: &RedeemRequest) -> Result<RedeemReply, TransportError> { Err(TransportError::Malformed) }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let key = PresenceKey::from_bytes([1; 32]);
    /// # let id = key.instance_id();
    /// # let secret = LocalSecret::from_bytes([2; 32]);
    /// # let announce = Announce::new(id, "192.168.1.50".parse().unwrap(), 8080, Default::default(), secret.commitment(&id), key);
    /// # let code = LinkCode::parse("0123456789abcdef0123456789abcdef").unwrap();
    /// # let message = AgentMessage::VerifyAndRedeem { instance_id: id, local_secret: secret,
    /// #     code: code.clone(), display_name: None, nonce: None };
    /// let dual = DualStack::new(Canned(AnnounceReply::new(vec![], 2000)), Canned(AnnounceReply::new(vec![message], 2000)));
    /// assert!(dual.routes().is_empty());
    /// dual.announce(&announce).await.unwrap();
    /// assert_eq!(dual.routes(), [Path::Second]);
    /// # let _ = code;
    /// # }
    /// ```
    pub fn routes(&self) -> Vec<Path> {
        crate::lock_unpoisoned(&self.routes)
            .iter()
            .map(|(_, path)| *path)
            .collect()
    }

    fn remember(&self, reply: &AnnounceReply, path: Path) {
        let mut routes = crate::lock_unpoisoned(&self.routes);
        for message in &reply.messages {
            if let AgentMessage::VerifyAndRedeem { code, .. } = message {
                let key = code.key();
                routes.retain(|(k, _)| *k != key);
                if routes.len() >= ROUTES {
                    routes.remove(0);
                }
                routes.push((key, path));
            }
        }
    }
}

/// Whether an announce error is a refusal after which the agent must end discovery.
fn ends_discovery(err: &TransportError) -> bool {
    err.class().is_some_and(|class| class.ends_discovery)
}

/// One reply from two: every message (each delivered once, by one path), the sooner poll, and
/// visible if either network shows the agent.
fn merge(mut first: AnnounceReply, second: AnnounceReply) -> AnnounceReply {
    first.messages.extend(second.messages);
    first.poll_after_ms = first.poll_after_ms.min(second.poll_after_ms);
    if second.visibility == Visibility::Visible {
        first.visibility = Visibility::Visible;
    }
    first
}

#[async_trait]
impl<A: AgentServerTransport, B: AgentServerTransport> AgentServerTransport for DualStack<A, B> {
    async fn announce(&self, announce: &Announce) -> Result<AnnounceReply, TransportError> {
        let first = self.first.announce(announce);
        let second = self.second.announce(announce);
        tokio::pin!(first, second);
        // A reply that carries messages goes to the agent at once: the other path's
        // announcement may be held (revision 1.6) for many seconds with nothing to say, and a
        // link must not wait for it. That request is dropped.
        let (first, second) = tokio::select! {
            first_done = &mut first => match first_done {
                Ok(reply) if !reply.messages.is_empty() => {
                    self.remember(&reply, Path::First);
                    return Ok(reply);
                }
                first_done => (first_done, second.await),
            },
            second_done = &mut second => match second_done {
                Ok(reply) if !reply.messages.is_empty() => {
                    self.remember(&reply, Path::Second);
                    return Ok(reply);
                }
                second_done => (first.await, second_done),
            },
        };
        // Messages are remembered before anything is refused: their codes stay routable.
        if let Ok(reply) = &first {
            self.remember(reply, Path::First);
        }
        if let Ok(reply) = &second {
            self.remember(reply, Path::Second);
        }
        match (first, second) {
            (Err(err), _) | (_, Err(err)) if ends_discovery(&err) => Err(err),
            (Ok(a), Ok(b)) => Ok(merge(a, b)),
            (Ok(reply), Err(_)) | (Err(_), Ok(reply)) => Ok(reply),
            (Err(err), Err(_)) => Err(err),
        }
    }

    async fn redeem(&self, request: &RedeemRequest) -> Result<RedeemReply, TransportError> {
        match self.route_of(&request.code) {
            Some(Path::First) => self.first.redeem(request).await,
            Some(Path::Second) => self.second.redeem(request).await,
            None => match self.first.redeem(request).await {
                Err(TransportError::Unreachable(_)) => self.second.redeem(request).await,
                other => other,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::HiddenReason;

    /// A path whose announcement is held and never answers.
    struct Held;

    #[async_trait]
    impl AgentServerTransport for Held {
        async fn announce(&self, _: &Announce) -> Result<AnnounceReply, TransportError> {
            std::future::pending().await
        }
        async fn redeem(&self, _: &RedeemRequest) -> Result<RedeemReply, TransportError> {
            std::future::pending().await
        }
    }

    /// A path that answers every announcement with `reply` at once.
    struct Answers(AnnounceReply);

    #[async_trait]
    impl AgentServerTransport for Answers {
        async fn announce(&self, _: &Announce) -> Result<AnnounceReply, TransportError> {
            Ok(self.0.clone())
        }
        async fn redeem(&self, _: &RedeemRequest) -> Result<RedeemReply, TransportError> {
            Err(TransportError::Unreachable("not here".into()))
        }
    }

    fn announce() -> Announce {
        let key = crate::secret::PresenceKey::from_bytes([1; 32]);
        let id = key.instance_id();
        let secret = crate::LocalSecret::from_bytes([2; 32]);
        Announce::new(
            id,
            "192.168.1.50".parse().unwrap(),
            8080,
            crate::wire::DeviceInfo::default(),
            secret.commitment(&id),
            key,
        )
    }

    /// A link that comes through one path reaches the agent while the other path's
    /// announcement is still held; a reply with nothing to say waits for the other path.
    #[test]
    fn a_link_does_not_wait_for_the_other_paths_hold() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let message = AgentMessage::VerifyAndRedeem {
            instance_id: crate::InstanceId::from_bytes([1; 16]),
            local_secret: crate::LocalSecret::from_bytes([2; 32]),
            code: crate::LinkCode::parse("0123456789abcdef0123456789abcdef").unwrap(),
            display_name: None,
            nonce: None,
        };
        let link = AnnounceReply::new(vec![message], 2000);
        runtime.block_on(async {
            let wait = std::time::Duration::from_secs(5);
            let first = DualStack::new(Answers(link.clone()), Held);
            let reply = tokio::time::timeout(wait, first.announce(&announce()))
                .await
                .expect("the link, without the second path's hold");
            assert_eq!(reply.unwrap().messages.len(), 1);
            assert_eq!(first.routes(), [Path::First]);
            let second = DualStack::new(Held, Answers(link.clone()));
            let reply = tokio::time::timeout(wait, second.announce(&announce()))
                .await
                .expect("the link, without the first path's hold");
            assert_eq!(reply.unwrap().messages.len(), 1);
            assert_eq!(second.routes(), [Path::Second]);
            let quiet = DualStack::new(Answers(AnnounceReply::new(Vec::new(), 2000)), Held);
            let short = std::time::Duration::from_millis(50);
            assert!(
                tokio::time::timeout(short, quiet.announce(&announce()))
                    .await
                    .is_err(),
                "nothing to say: both paths are heard"
            );
        });
    }

    #[test]
    fn merged_replies_keep_every_message_and_the_sooner_poll() {
        let hidden = AnnounceReply::new(vec![AgentMessage::Unknown], 5000)
            .with_visibility(Visibility::Hidden(HiddenReason::TooManyAgents));
        let visible = AnnounceReply::new(vec![AgentMessage::Unknown], 2000);
        let merged = merge(hidden.clone(), visible);
        assert_eq!(merged.messages.len(), 2);
        assert_eq!(merged.poll_after_ms, 2000);
        assert_eq!(merged.visibility, Visibility::Visible);
        let both_hidden = merge(hidden.clone(), hidden);
        assert_eq!(
            both_hidden.visibility,
            Visibility::Hidden(HiddenReason::TooManyAgents)
        );
    }
}
