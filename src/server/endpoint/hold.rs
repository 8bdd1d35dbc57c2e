//! Held requests (revision 1.6): the decision to answer a request later, and its answer when
//! the time comes, as pure steps over the server. An agent's announcement that asks for a hold
//! (`hold_ms`) and finds no message, or a linker's status request (`?hold_ms=`) whose link is
//! still on its way, comes back from [`handle`](crate::server::endpoint::handle) as
//! [`Handled::Hold`](crate::server::endpoint::Handled::Hold) with a [`Held`]; the host keeps the
//! connection open and calls [`resume`] when its bell rings for [`Held::instance_id`] or at
//! [`Held::next_check`], until it answers.
//!
//! It must not wait, sleep or read a clock: `now` comes in, and what to wait for goes out. The
//! host's side is the wait alone (`http::hold` over tokio; a blocking host may call [`resume`]
//! on a timer).
//!
//! **Lost wake-ups.** The host must start listening for the instance's bell *before* each call
//! to [`resume`], never after: a link accepted between a check and a subscription would
//! otherwise wait for the next check. [`resume`] looks at the store itself every time, so a
//! ring is only a hint to look now; a host that misses one (a pub/sub message lost with its
//! connection) answers at the next check, at most one announce interval later.

use chrono::{DateTime, TimeDelta, Utc};

use super::ServerResponse;
use crate::addr::PublicNetwork;
use crate::id::{AccountId, InstanceId};
use crate::server::machine::Server;
use crate::server::store::Backend;
use crate::wire::{self, Announce, LinkState};

/// A request the server holds open (revision 1.6): what it waits for, and until when. Made by
/// [`handle`](crate::server::endpoint::handle) ([`Handled::Hold`](crate::server::endpoint::Handled::Hold));
/// given back to [`resume`]. `Debug` shows the instance and the times, never the agent's
/// presence key.
///
/// ```
/// # use lanlink::server::endpoint::{handle, Handled, HttpRequest, RequestBody};
/// # use lanlink::server::{Server, ServerConfig};
/// # use lanlink::wire::{self, Announce};
/// # use lanlink::{secret::PresenceKey, LocalSecret};
/// # let mut fut = std::pin::pin!(async {
/// # let server = Server::new(ServerConfig::default()).unwrap();
/// # let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
/// # let key = PresenceKey::from_bytes([1; 32]);
/// # let id = key.instance_id();
/// # let announce = Announce::new(id, "192.168.1.50".parse().unwrap(), 8080, Default::default(),
/// #     LocalSecret::from_bytes([2; 32]).commitment(&id), key).with_hold(10_000);
/// # let headers: [(&str, &[u8]); 2] = [("host", b"cloud.example"), ("content-type", b"application/json")];
/// let request = HttpRequest { method: "POST", path: "/lanlink/v1/agent/announce", query: None,
///     authority: None, headers: &headers, peer: Some("203.0.113.7".parse().unwrap()) };
/// let body = wire::encode(&announce); // asks for a 10 s hold
/// let handled = handle(&server, now, &mut lanlink::os_rng(), "/lanlink/v1", &request, RequestBody::Complete(&body), None).await;
/// let Handled::Hold(held) = handled else { panic!("no message waits: held") };
/// assert!(format!("{held:?}").contains(r#"kind: "announce""#));
/// assert!(!format!("{held:?}").contains("PresenceKey"));
/// # });
/// # use std::future::Future;
/// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
/// ```
pub struct Held {
    waiting: Waiting,
    until: DateTime<Utc>,
    recheck: TimeDelta,
    head: bool,
}

enum Waiting {
    /// An announcement that found no message: answered when one waits, else at the hold's end
    /// (announcing again then, without a hold).
    Announce {
        network: PublicNetwork,
        announce: Box<Announce>,
    },
    /// A linker's status request: answered when the state moves off `seen`, else at the end.
    Status {
        network: PublicNetwork,
        account: AccountId,
        instance_id: InstanceId,
        seen: LinkState,
    },
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.waiting {
            Waiting::Announce { .. } => "announce",
            Waiting::Status { .. } => "link_status",
        };
        f.debug_struct("Held")
            .field("kind", &kind)
            .field("instance_id", &self.instance_id())
            .field("until", &self.until)
            .finish_non_exhaustive()
    }
}

impl Held {
    /// A held announcement of `announce` (its hold is dropped: the answer announces without
    /// one) from `network`, until `until`.
    pub(crate) fn announce(
        network: PublicNetwork,
        mut announce: Announce,
        until: DateTime<Utc>,
        recheck: TimeDelta,
    ) -> Self {
        announce.hold_ms = None;
        Self {
            waiting: Waiting::Announce {
                network,
                announce: Box::new(announce),
            },
            until,
            recheck,
            head: false,
        }
    }

    /// A held status request of `account` for `instance_id`, last seen in state `seen`.
    pub(crate) fn status(
        network: PublicNetwork,
        account: AccountId,
        instance_id: InstanceId,
        seen: LinkState,
        until: DateTime<Utc>,
        recheck: TimeDelta,
        head: bool,
    ) -> Self {
        Self {
            waiting: Waiting::Status {
                network,
                account,
                instance_id,
                seen,
            },
            until,
            recheck,
            head,
        }
    }

    /// The instance whose bell answers this request sooner: listen for it before each
    /// [`resume`].
    ///
    /// ```
    /// # use lanlink::server::endpoint::{handle, Handled, HttpRequest, RequestBody};
    /// # use lanlink::server::{Server, ServerConfig};
    /// # use lanlink::wire::{self, Announce};
    /// # use lanlink::{secret::PresenceKey, LocalSecret};
    /// # let mut fut = std::pin::pin!(async {
    /// # let server = Server::new(ServerConfig::default()).unwrap();
    /// # let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// # let key = PresenceKey::from_bytes([1; 32]);
    /// # let id = key.instance_id();
    /// # let announce = Announce::new(id, "192.168.1.50".parse().unwrap(), 8080, Default::default(),
    /// #     LocalSecret::from_bytes([2; 32]).commitment(&id), key).with_hold(10_000);
    /// # let headers: [(&str, &[u8]); 2] = [("host", b"cloud.example"), ("content-type", b"application/json")];
    /// let request = HttpRequest { method: "POST", path: "/lanlink/v1/agent/announce", query: None,
    ///     authority: None, headers: &headers, peer: Some("203.0.113.7".parse().unwrap()) };
    /// let body = wire::encode(&announce); // asks for a 10 s hold
    /// let handled = handle(&server, now, &mut lanlink::os_rng(), "/lanlink/v1", &request, RequestBody::Complete(&body), None).await;
    /// let Handled::Hold(held) = handled else { panic!("no message waits: held") };
    /// assert_eq!(held.instance_id(), id, "ring this instance's bell to answer it");
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    pub fn instance_id(&self) -> InstanceId {
        match &self.waiting {
            Waiting::Announce { announce, .. } => announce.instance_id,
            Waiting::Status { instance_id, .. } => *instance_id,
        }
    }

    /// When the hold ends: [`resume`] answers then, whatever happened.
    ///
    /// ```
    /// # use lanlink::server::endpoint::{handle, Handled, HttpRequest, RequestBody};
    /// # use lanlink::server::{Server, ServerConfig};
    /// # use lanlink::wire::{self, Announce};
    /// # use lanlink::{secret::PresenceKey, LocalSecret};
    /// # let mut fut = std::pin::pin!(async {
    /// # let server = Server::new(ServerConfig::default()).unwrap();
    /// # let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// # let key = PresenceKey::from_bytes([1; 32]);
    /// # let id = key.instance_id();
    /// # let announce = Announce::new(id, "192.168.1.50".parse().unwrap(), 8080, Default::default(),
    /// #     LocalSecret::from_bytes([2; 32]).commitment(&id), key).with_hold(10_000);
    /// # let headers: [(&str, &[u8]); 2] = [("host", b"cloud.example"), ("content-type", b"application/json")];
    /// let request = HttpRequest { method: "POST", path: "/lanlink/v1/agent/announce", query: None,
    ///     authority: None, headers: &headers, peer: Some("203.0.113.7".parse().unwrap()) };
    /// let body = wire::encode(&announce); // asks for a 10 s hold
    /// let handled = handle(&server, now, &mut lanlink::os_rng(), "/lanlink/v1", &request, RequestBody::Complete(&body), None).await;
    /// let Handled::Hold(held) = handled else { panic!("no message waits: held") };
    /// assert_eq!(held.until(), now + chrono::TimeDelta::seconds(10));
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    pub fn until(&self) -> DateTime<Utc> {
        self.until
    }

    /// When to call [`resume`] again if no bell rings: the hold's end, or one recheck interval
    /// (the server's announce interval) from `now`, whichever comes first. A host that cannot
    /// hear bells at all may simply call [`resume`] at these times.
    ///
    /// ```
    /// # use lanlink::server::endpoint::Held;
    /// # fn check(held: &Held, now: chrono::DateTime<chrono::Utc>) {
    /// assert!(held.next_check(now) <= held.until().max(now));
    /// # }
    /// ```
    pub fn next_check(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now.checked_add_signed(self.recheck)
            .unwrap_or(self.until)
            .min(self.until)
    }
}

/// Looks again at a held request at `now`: its answer when what it waits for has happened (a
/// message for the agent, a new state of the link) or its hold is over, `None` to keep
/// holding. It reads the store each time (one read while nothing happened), so it may be
/// called on any ring, spurious or not, and on a timer. A store that fails answers its
/// refusal (`503`) at once.
///
/// ```
/// use lanlink::endpoint::HttpRequest;
/// use lanlink::secret::PresenceKey;
/// use lanlink::server::endpoint::{self, Handled, RequestBody};
/// use lanlink::server::{Server, ServerConfig};
/// use lanlink::wire::{self, Announce};
/// use lanlink::LocalSecret;
/// # let mut fut = std::pin::pin!(async {
/// let server = Server::new(ServerConfig::default()).unwrap();
/// let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
/// let key = PresenceKey::from_bytes([1; 32]);
/// let id = key.instance_id();
/// let announce = Announce::new(id, "192.168.1.50".parse().unwrap(), 8080, Default::default(),
///     LocalSecret::from_bytes([2; 32]).commitment(&id), key).with_hold(20_000);
/// let body = wire::encode(&announce);
/// let request = HttpRequest {
///     method: "POST", path: "/lanlink/v1/agent/announce", query: None, authority: None,
///     headers: &[], peer: Some("203.0.113.7".parse().unwrap()),
/// };
/// let mut rng = lanlink::os_rng();
/// let prefix = lanlink::transport::DEFAULT_PREFIX;
/// let handled = endpoint::handle(&server, now, &mut rng, prefix, &request,
///     RequestBody::Complete(&body), None).await;
/// let Handled::Hold(held) = handled else { panic!("no message waits: held") };
/// assert_eq!(held.instance_id(), id);
/// // Nothing happened: keep holding; at the hold's end, the answer (no messages).
/// assert!(endpoint::resume(&server, now, &held).await.is_none());
/// let answer = endpoint::resume(&server, held.until(), &held).await.unwrap();
/// assert_eq!(answer.status, 200);
/// # });
/// # use std::future::Future;
/// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
/// ```
pub async fn resume<S: Backend>(
    server: &Server<S>,
    now: DateTime<Utc>,
    held: &Held,
) -> Option<ServerResponse> {
    let due = now >= held.until;
    let mut answer = match &held.waiting {
        Waiting::Announce { network, announce } => {
            if !due {
                match server
                    .message_waits(now, *network, &announce.instance_id)
                    .await
                {
                    Ok(false) => return None,
                    Ok(true) => {}
                    Err(refusal) => return Some(ServerResponse::refusal(&refusal)),
                }
            }
            match server.announce(now, *network, announce).await {
                Ok(reply) => ServerResponse::json(200, wire::encode(&reply)),
                Err(refusal) => ServerResponse::refusal(&refusal),
            }
        }
        Waiting::Status {
            network,
            account,
            instance_id,
            seen,
        } => match server
            .link_status(now, *network, account, instance_id)
            .await
        {
            Ok(reply) if !due && reply.state == *seen => return None,
            Ok(reply) => ServerResponse::json(200, wire::encode(&reply)),
            Err(refusal) => ServerResponse::refusal(&refusal),
        },
    };
    if held.head {
        answer.body = zeroize::Zeroizing::new(Vec::new());
    }
    Some(answer)
}
