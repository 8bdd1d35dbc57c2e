//! The link-outcome hook: how the host service learns of every completed link, and keeps it.
//! The hook must never see a token, only its digest, and a host's hook must not assume one call per
//! link (see below).
//!
//! A redemption ([`Server::redeem`](super::Server::redeem)) runs in three steps:
//!
//! 1. **claim**: the guess is charged and checked, and the code is marked redeemed by the agent
//!    (one atomic store write: single use across every instance);
//! 2. **hook**: the host's [`LinkHook`] receives the [`CompletedLink`] — account, instance,
//!    network, device info, how it was linked, and the digest of the token about to be handed
//!    out (never the token) — and records it in the host's own tables;
//! 3. **complete**: the link is completed in the network record and the token is returned to
//!    the agent.
//!
//! If the hook fails, the code is given back and the agent is answered `503 link_unavailable`
//! (retryable): nothing is half-linked, and the agent's retry links. A redemption retried after a
//! lost reply (the agent proves it is the instance that redeemed, with its presence key) runs the
//! hook again with a **new** token's digest and `reissued: true`: the host keeps one digest per
//! instance and replaces it, which revokes the earlier token. The hook can therefore be called
//! more than once for one link, and two calls can overlap (a retry while the first attempt's hook
//! still runs): keep the digest of the highest [`CompletedLink::attempt`], the only one whose
//! token the agent takes.
//!
//! Later, the host authenticates the device from the digest it kept: parse the token the device
//! presents ([`AuthToken::from_hex`](crate::AuthToken::from_hex)) and compare with
//! [`TokenDigest::verify`] (constant time), or index the host's table by
//! [`TokenDigest::of`] of the presented token (a hash of 256 random bits, safe as a lookup key).
//!
//! ```
//! use std::sync::Mutex;
//! use std::collections::HashMap;
//! use lanlink::async_trait;
//! use lanlink::server::hook::{CompletedLink, HookError, LinkHook};
//! use lanlink::{AccountId, InstanceId, TokenDigest};
//!
//! /// The host's table: device → (owner, digest of its current token, that token's attempt).
//! #[derive(Default)]
//! struct Devices(Mutex<HashMap<InstanceId, (AccountId, TokenDigest, u32)>>);
//!
//! #[async_trait]
//! impl LinkHook for Devices {
//!     async fn link_completed(&self, link: &CompletedLink) -> Result<(), HookError> {
//!         let mut devices = self.0.lock().map_err(|_| HookError::new("table poisoned"))?;
//!         // One digest per instance: a reissue replaces (revokes) the earlier token, and an
//!         // older attempt never replaces a newer one.
//!         match devices.get(&link.instance_id) {
//!             Some((_, _, kept)) if *kept > link.attempt => {}
//!             _ => {
//!                 devices.insert(
//!                     link.instance_id,
//!                     (link.account.clone(), link.token_digest, link.attempt),
//!                 );
//!             }
//!         }
//!         Ok(())
//!     }
//! }
//! ```

use std::fmt;

use async_trait::async_trait;
use subtle::ConstantTimeEq;

use crate::addr::PublicNetwork;
pub use crate::event::vocab::LinkVia;
use crate::id::{AccountId, InstanceId};
use crate::secret::AuthToken;
use crate::wire::DeviceInfo;

/// The digest of an [`AuthToken`] ([`AuthToken::digest`]): what a host keeps to recognise a
/// linked device later, never the token itself. Not a secret (it cannot be presented as the
/// token), but shown in `Debug` only by its first 4 bytes, and compared in constant time.
///
/// ```
/// use lanlink::{AuthToken, TokenDigest};
/// let token = AuthToken::generate(&mut lanlink::os_rng());
/// let kept = TokenDigest::of(&token);
/// // Later, the device presents its token as 64 hex characters:
/// let presented = AuthToken::from_hex(&token.to_hex()).unwrap();
/// assert!(kept.verify(&presented));
/// assert!(!kept.verify(&AuthToken::generate(&mut lanlink::os_rng())));
/// assert_eq!(TokenDigest::from_hex(&kept.to_hex()), Some(kept));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    /// The digest of `token`.
    ///
    /// ```
    /// use lanlink::{AuthToken, TokenDigest};
    /// let token = AuthToken::generate(&mut lanlink::os_rng());
    /// assert_eq!(TokenDigest::of(&token).as_bytes(), &token.digest());
    /// assert_eq!(format!("{:?}", TokenDigest::of(&token)), "TokenDigest(<redacted>)");
    /// ```
    pub fn of(token: &AuthToken) -> Self {
        Self(token.digest())
    }

    /// A digest from its 32 bytes (as a host read it back from its store).
    ///
    /// ```
    /// use lanlink::{AuthToken, TokenDigest};
    /// let token = AuthToken::generate(&mut lanlink::os_rng());
    /// let stored: [u8; 32] = *TokenDigest::of(&token).as_bytes(); // what the host keeps
    /// assert!(TokenDigest::from_bytes(stored).verify(&token));
    /// ```
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 bytes.
    ///
    /// ```
    /// use lanlink::TokenDigest;
    /// let digest = TokenDigest::from_bytes([3; 32]);
    /// assert_eq!(digest.as_bytes(), &[3; 32]);
    /// ```
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses 64 hex characters (either case).
    ///
    /// ```
    /// use lanlink::TokenDigest;
    /// assert_eq!(TokenDigest::from_hex(&"AB".repeat(32)), Some(TokenDigest::from_bytes([0xab; 32])));
    /// assert_eq!(TokenDigest::from_hex("abc"), None);
    /// ```
    pub fn from_hex(text: &str) -> Option<Self> {
        crate::secret::decode_hex_32(text).map(Self)
    }

    /// The digest as 64 lowercase hex characters.
    ///
    /// ```
    /// use lanlink::TokenDigest;
    /// let digest = TokenDigest::from_bytes([0x0f; 32]);
    /// assert_eq!(digest.to_hex(), "0f".repeat(32));
    /// assert_eq!(serde_json::to_string(&digest)?, format!("\"{}\"", digest.to_hex()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn to_hex(&self) -> String {
        crate::secret::encode_hex(&self.0).to_string()
    }

    /// Whether `token` is the token this digest was made from (constant time in the comparison).
    ///
    /// ```
    /// use lanlink::{AuthToken, TokenDigest};
    /// let mut rng = lanlink::os_rng();
    /// let token = AuthToken::generate(&mut rng);
    /// let kept = TokenDigest::of(&token);
    /// assert!(kept.verify(&token));
    /// assert!(!kept.verify(&AuthToken::generate(&mut rng)));
    /// ```
    pub fn verify(&self, token: &AuthToken) -> bool {
        self.ct_eq(&Self::of(token))
    }

    /// Constant-time equality of two digests.
    ///
    /// ```
    /// use lanlink::TokenDigest;
    /// let a = TokenDigest::from_bytes([1; 32]);
    /// assert!(a.ct_eq(&TokenDigest::from_bytes([1; 32])));
    /// assert!(!a.ct_eq(&TokenDigest::from_bytes([2; 32])));
    /// ```
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenDigest(<redacted>)")
    }
}

impl serde::Serialize for TokenDigest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for TokenDigest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::from_hex(&text).ok_or_else(|| serde::de::Error::custom("expected 64 hex characters"))
    }
}

/// A link about to complete, as the [`LinkHook`] sees it. Carries no secret: the token's
/// [`TokenDigest`] only.
///
/// ```
/// use lanlink::server::hook::{CompletedLink, LinkVia};
/// use lanlink::{AccountId, AuthToken, InstanceId, PublicNetwork, TokenDigest};
/// let token = AuthToken::generate(&mut lanlink::os_rng());
/// let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
/// let link = CompletedLink::new(AccountId::new("alice").unwrap(), InstanceId::from_bytes([7; 16]),
///     PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64), LinkVia::Auto, TokenDigest::of(&token), at);
/// // Serializable for the host's audit, with no secret in it.
/// let json = serde_json::to_string(&link)?;
/// assert!(json.contains(r#""via":"auto""#) && json.contains(r#""network":"203.0.113.7""#));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct CompletedLink {
    /// The account the device is linked to.
    pub account: AccountId,
    /// The device.
    pub instance_id: InstanceId,
    /// The public network the device redeemed from.
    #[serde(serialize_with = "crate::event::network_text")]
    pub network: PublicNetwork,
    /// What the device announced about itself, if its presence was still recorded.
    pub info: Option<DeviceInfo>,
    /// How the link was made.
    pub via: LinkVia,
    /// The digest of the token the device receives once the hook succeeds.
    pub token_digest: TokenDigest,
    /// Whether this is a retried redemption of a link the hook may already have seen (after a
    /// lost reply): `token_digest` replaces the earlier digest, whose token must stop
    /// authenticating.
    pub reissued: bool,
    /// The agent's attempt number ([`RedeemRequest::attempt`](crate::wire::RedeemRequest::attempt);
    /// 0 when it sends none). Two calls for one instance can overlap (a retry while the first
    /// attempt's hook still runs): keep the digest of the **highest** attempt, which is the only
    /// one whose token the agent takes; never let a lower attempt replace a higher one.
    pub attempt: u32,
    /// When the server claimed the code (its clock, as given to the redemption).
    pub at: chrono::DateTime<chrono::Utc>,
}

impl CompletedLink {
    /// A link as the server would hand it to a hook (no device info, not reissued): for a host's
    /// tests of its own [`LinkHook`].
    ///
    /// ```
    /// use lanlink::server::hook::{CompletedLink, LinkVia};
    /// use lanlink::{AccountId, AuthToken, InstanceId, PublicNetwork, TokenDigest};
    /// let token = AuthToken::generate(&mut lanlink::os_rng());
    /// let link = CompletedLink::new(
    ///     AccountId::new("alice").unwrap(),
    ///     InstanceId::generate(&mut lanlink::os_rng()),
    ///     PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64),
    ///     LinkVia::Manual,
    ///     TokenDigest::of(&token),
    ///     chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
    /// );
    /// assert!(link.token_digest.verify(&token) && !link.reissued && link.info.is_none());
    /// ```
    pub fn new(
        account: AccountId,
        instance_id: InstanceId,
        network: PublicNetwork,
        via: LinkVia,
        token_digest: TokenDigest,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Self {
        Self {
            account,
            instance_id,
            network,
            info: None,
            via,
            token_digest,
            reissued: false,
            attempt: 0,
            at,
        }
    }
}

/// Why a [`LinkHook`] failed. Its message goes to the server's events and logs, never to the
/// agent (which is answered `503 link_unavailable`): keep secrets out of it.
///
/// ```
/// let err = lanlink::server::hook::HookError::new("database unavailable");
/// assert_eq!(err.to_string(), "link hook failed: database unavailable");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("link hook failed: {message}")]
pub struct HookError {
    message: String,
}

impl HookError {
    /// A failure with a short description (for logs).
    ///
    /// ```
    /// let err = lanlink::server::hook::HookError::new("database unavailable");
    /// assert_eq!(err.message(), "database unavailable");
    /// ```
    pub fn new(message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string(),
        }
    }

    /// The description.
    ///
    /// ```
    /// use lanlink::server::hook::HookError;
    /// let err = HookError::new(format_args!("timeout after {} ms", 500));
    /// assert_eq!(err.message(), "timeout after 500 ms");
    /// ```
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// The host's side of every completed link (see the [module docs](self)).
///
/// Called after the code is claimed and before the token is returned; an `Err` fails the
/// redemption retryably (the code is given back). Implementations should be idempotent per
/// instance: keep one digest per instance, replaced by each call.
///
/// ```
/// use lanlink::server::hook::{CompletedLink, HookError, LinkHook};
/// use lanlink::server::{Server, ServerConfig};
/// use lanlink::wire::RedeemRequest;
/// use lanlink::{AccountId, InstanceId, PublicNetwork, Refusal};
/// /// A host whose database is down.
/// struct Down;
/// #[lanlink::async_trait]
/// impl LinkHook for Down {
///     async fn link_completed(&self, _: &CompletedLink) -> Result<(), HookError> {
///         Err(HookError::new("database unavailable"))
///     }
/// }
/// # let mut fut = std::pin::pin!(async {
/// let server = Server::new(ServerConfig::default()).unwrap().with_link_hook(std::sync::Arc::new(Down));
/// let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
/// let mut rng = lanlink::os_rng();
/// let code = server.mint_code(now, &mut rng, &AccountId::new("alice").unwrap()).await.unwrap().code;
/// let request = RedeemRequest::new(InstanceId::generate(&mut rng), code);
/// let network = PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64);
/// let refused = server.redeem(now, &mut rng, network, &request).await.unwrap_err();
/// assert_eq!(refused, Refusal::LinkUnavailable);
/// assert!(refused.is_retryable(), "the code was given back");
/// # });
/// # use std::future::Future;
/// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
/// ```
#[async_trait]
pub trait LinkHook: Send + Sync {
    /// Records `link` in the host's own tables.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use std::sync::Mutex;
    /// use lanlink::server::hook::{CompletedLink, HookError, LinkHook};
    /// use lanlink::{InstanceId, TokenDigest};
    /// /// Keeps one digest per instance: the one of the highest attempt.
    /// #[derive(Default)]
    /// struct Devices(Mutex<HashMap<InstanceId, (u32, TokenDigest)>>);
    /// #[lanlink::async_trait]
    /// impl LinkHook for Devices {
    ///     async fn link_completed(&self, link: &CompletedLink) -> Result<(), HookError> {
    ///         let mut devices = self.0.lock().unwrap();
    ///         let entry = devices.entry(link.instance_id).or_insert((link.attempt, link.token_digest));
    ///         if link.attempt >= entry.0 { *entry = (link.attempt, link.token_digest); }
    ///         Ok(())
    ///     }
    /// }
    /// # use lanlink::{server::hook::LinkVia, AccountId, PublicNetwork};
    /// # let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// # let link = CompletedLink::new(AccountId::new("alice").unwrap(), InstanceId::from_bytes([7; 16]),
    /// #     PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64), LinkVia::Manual, TokenDigest::from_bytes([1; 32]), at);
    /// # let devices = Devices::default();
    /// # let mut fut = std::pin::pin!(async { devices.link_completed(&link).await });
    /// # use std::future::Future;
    /// # let done = fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
    /// assert!(matches!(done, std::task::Poll::Ready(Ok(()))));
    /// assert_eq!(devices.0.lock().unwrap().len(), 1);
    /// ```
    async fn link_completed(&self, link: &CompletedLink) -> Result<(), HookError>;
}

/// A redemption whose code is claimed, waiting for the hook's outcome.
///
/// Dropping it without finishing (a host that drops the request's future while its hook runs)
/// leaves the code claimed by the agent: the agent's proven retry completes the link (an agent
/// that sends no presence key finds the code used).
#[derive(Debug)]
pub(crate) struct PendingLink {
    pub(crate) link: CompletedLink,
    pub(crate) token: AuthToken,
    pub(crate) attempt: u32,
    pub(crate) key: crate::code::CodeKey,
    pub(crate) first: bool,
    pub(crate) manual: bool,
    pub(crate) space: Option<super::budget::CodeSpace>,
    pub(crate) code_expires_at: chrono::DateTime<chrono::Utc>,
}

impl PendingLink {
    /// The link, as the hook sees it.
    pub(crate) fn link(&self) -> &CompletedLink {
        &self.link
    }
}
