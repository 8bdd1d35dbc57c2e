//! [`PrinterTokens`] in Redis (features `redis` and `obico-wire`): the Obico profile's linked
//! printers, shared by every server instance on the same Redis, so that a printer's post-link
//! calls are recognised whichever instance they reach.
//!
//! One key per token, `{prefix}:tok:{<hash>}`: the hash is the keyed hash of the token's
//! [`AuthToken::digest`](crate::AuthToken::digest) (never the token, nor its plain digest), the
//! value the [`LinkedPrinter`] encrypted like every record, with the key name as associated data.
//! A lookup is one `GET` of the presented token's key; a token that was never issued has no key.
//! The keys do not expire: a link lasts until the host service removes it.

use async_trait::async_trait;

use super::RedisStore;
use crate::obico::tokens::{LinkedPrinter, PrinterTokens};
use crate::server::StoreError;

impl RedisStore {
    /// The Redis key of a printer token's record (from its digest).
    pub fn token_key(&self, digest: &[u8; 32]) -> String {
        let mut name = Vec::with_capacity(36);
        name.extend_from_slice(b"tok\0");
        name.extend_from_slice(digest);
        format!("{}:tok:{{{}}}", self.prefix, self.name_hash(&name).as_str())
    }
}

#[async_trait]
impl PrinterTokens for RedisStore {
    async fn issue(&self, digest: [u8; 32], printer: LinkedPrinter) -> Result<(), StoreError> {
        let key = self.token_key(&digest);
        let value = self.seal(&key, &printer)?;
        // A `SET` of the same value is idempotent: resent when its reply was lost.
        self.read::<()>(|| ::redis::cmd("SET").arg(&key).arg(&value).clone())
            .await
    }

    async fn printer(&self, digest: &[u8; 32]) -> Result<Option<LinkedPrinter>, StoreError> {
        let key = self.token_key(digest);
        Ok(self
            .load_record::<LinkedPrinter>(&key)
            .await?
            .map(|loaded| loaded.record))
    }
}
