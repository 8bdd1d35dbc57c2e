//! What the Obico profile's printer tokens are kept as, and where (features `obico-wire`): the
//! vocabulary a store implements, below the store and the profile, re-exported at
//! [`crate::obico::tokens`].
//! It must not depend on the Obico profile (the profile depends on it).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::store_error::StoreError;
use crate::id::{AccountId, InstanceId};

#[cfg(doc)]
use crate::secret::AuthToken;

/// A printer linked through the Obico profile, as its post-link routes show it.
///
/// ```
/// use lanlink::obico::tokens::{printer_id, LinkedPrinter};
/// use lanlink::{AccountId, InstanceId};
/// let instance_id = InstanceId::from_bytes([7; 16]);
/// let printer = LinkedPrinter { id: printer_id(&instance_id), name: "My Printer".into(),
///     account: AccountId::new("alice").unwrap(), instance_id,
///     linked_at: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap() };
/// assert!(printer.id < 1 << 53, "JavaScript reads it exactly");
/// let json = serde_json::to_string(&printer)?;
/// assert_eq!(serde_json::from_str::<LinkedPrinter>(&json)?, printer);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LinkedPrinter {
    /// Obico's numeric printer id (derived from the agent's id, below 2⁵³ so that JavaScript
    /// reads it exactly).
    pub id: u64,
    /// The printer's name (the agent's hostname, or `"My Printer"`).
    pub name: String,
    /// The account it is linked to.
    pub account: AccountId,
    /// The agent (its `device_id`, or a fresh id for a manual code).
    pub instance_id: InstanceId,
    /// When it was linked.
    pub linked_at: DateTime<Utc>,
}

/// Where the tokens of linked printers are recognised. Implement it over your own store (the
/// server keeps only digests); [`MemoryTokens`](crate::obico::tokens::MemoryTokens) is the in-memory default.
///
/// ```
/// # use lanlink::obico::tokens::{authenticate, LinkedPrinter, MemoryTokens, PrinterTokens};
/// # use lanlink::{AccountId, AuthToken, InstanceId};
/// # let printer = |name: &str| LinkedPrinter { id: 1, name: name.into(), account: AccountId::new("alice").unwrap(),
/// #     instance_id: InstanceId::from_bytes([7; 16]), linked_at: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap() };
/// # let mut fut = std::pin::pin!(async {
/// // Any implementation: keep the digest, find the printer by it, never keep the token.
/// let tokens: &dyn PrinterTokens = &MemoryTokens::default();
/// let token = AuthToken::generate(&mut lanlink::os_rng());
/// tokens.issue(token.digest(), printer("voron")).await.unwrap();
/// assert_eq!(tokens.printer(&token.digest()).await.unwrap().map(|p| p.name), Some("voron".into()));
/// # });
/// # use std::future::Future;
/// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
/// ```
#[async_trait]
pub trait PrinterTokens: Send + Sync {
    /// Keeps `digest` ([`AuthToken::digest`] of the token about to be handed out) for
    /// `printer`. The token is handed out only if this succeeds.
    ///
    /// ```
    /// # use lanlink::obico::tokens::{authenticate, LinkedPrinter, MemoryTokens, PrinterTokens};
    /// # use lanlink::{AccountId, AuthToken, InstanceId};
    /// # let printer = |name: &str| LinkedPrinter { id: 1, name: name.into(), account: AccountId::new("alice").unwrap(),
    /// #     instance_id: InstanceId::from_bytes([7; 16]), linked_at: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap() };
    /// # let mut fut = std::pin::pin!(async {
    /// let tokens = MemoryTokens::new(1);
    /// let (first, second) = (AuthToken::generate(&mut lanlink::os_rng()), AuthToken::generate(&mut lanlink::os_rng()));
    /// tokens.issue(first.digest(), printer("a")).await.unwrap();
    /// tokens.issue(second.digest(), printer("b")).await.unwrap();
    /// // Past its bound the oldest token is forgotten.
    /// assert_eq!(tokens.printer(&first.digest()).await.unwrap(), None);
    /// assert!(tokens.printer(&second.digest()).await.unwrap().is_some());
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    async fn issue(&self, digest: [u8; 32], printer: LinkedPrinter) -> Result<(), StoreError>;

    /// The printer whose token has `digest` (compared in constant time), if any.
    ///
    /// ```
    /// # use lanlink::obico::tokens::{authenticate, LinkedPrinter, MemoryTokens, PrinterTokens};
    /// # use lanlink::{AccountId, AuthToken, InstanceId};
    /// # let printer = |name: &str| LinkedPrinter { id: 1, name: name.into(), account: AccountId::new("alice").unwrap(),
    /// #     instance_id: InstanceId::from_bytes([7; 16]), linked_at: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap() };
    /// # let mut fut = std::pin::pin!(async {
    /// let tokens = MemoryTokens::default();
    /// assert_eq!(tokens.printer(&[0; 32]).await.unwrap(), None, "never issued");
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    async fn printer(&self, digest: &[u8; 32]) -> Result<Option<LinkedPrinter>, StoreError>;
}
