//! What the Obico profile's printer tokens are kept as, and where (features `obico-wire`): the
//! vocabulary a store implements, below the store and the profile, re-exported at
//! [`crate::obico::tokens`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::store_error::StoreError;
use crate::id::{AccountId, InstanceId};

#[cfg(doc)]
use crate::secret::AuthToken;

/// A printer linked through the Obico profile, as its post-link routes show it.
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
#[async_trait]
pub trait PrinterTokens: Send + Sync {
    /// Keeps `digest` ([`AuthToken::digest`] of the token about to be handed out) for
    /// `printer`. The token is handed out only if this succeeds.
    async fn issue(&self, digest: [u8; 32], printer: LinkedPrinter) -> Result<(), StoreError>;

    /// The printer whose token has `digest` (compared in constant time), if any.
    async fn printer(&self, digest: &[u8; 32]) -> Result<Option<LinkedPrinter>, StoreError>;
}
