//! [`PrinterTokens`] in any [`Store`] (features `shared-store` and `obico-wire`): the Obico
//! profile's linked printers, shared by every server instance on the same store, so that a
//! printer's post-link calls are recognised whichever instance they reach.
//!
//! One key per token, kind `tok`: its slot is the keyed hash of the token's
//! [`AuthToken::digest`](crate::AuthToken::digest) (never the token, nor its plain digest), its
//! value the [`LinkedPrinter`] sealed like every record, with the key's name as associated data.
//! A lookup is one load of the presented token's key; a token never issued has no key. The
//! values do not expire: a link lasts until the host service removes it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{encode, Records};
use crate::server::store::printer::{LinkedPrinter, PrinterTokens};
use crate::server::store::{Key, Store, StoreError, Write};

impl<S: Store> Records<S> {
    /// The key of a printer token's record (from the token's digest).
    pub fn token_key(&self, digest: &[u8; 32]) -> Key {
        let mut name = Vec::with_capacity(36);
        name.extend_from_slice(b"tok\0");
        name.extend_from_slice(digest);
        self.key("tok", &name)
    }
}

/// A token's record never expires: a link lasts until the host removes it.
const NEVER: DateTime<Utc> = DateTime::<Utc>::MAX_UTC;

#[async_trait]
impl<S: Store> PrinterTokens for Records<S> {
    /// One swap expecting what the key holds (nothing, for a fresh token). A swap whose reply
    /// was lost is told by loading the key again: it holds this very value, or the swap is
    /// tried again.
    async fn issue(&self, digest: [u8; 32], printer: LinkedPrinter) -> Result<(), StoreError> {
        let key = self.token_key(&digest);
        let value = self.seal(&key, &[], NEVER, &encode(&printer)?)?;
        for attempt in 0..self.max_attempts {
            if attempt > 0 {
                self.store.pause(attempt).await;
            }
            let held = self.store.load(&key).await?;
            if held.as_deref() == Some(value.as_slice()) {
                return Ok(());
            }
            let write = Write::new(&key, held.as_deref(), Some((&value, NEVER)));
            match self.store.swap(&[write]).await {
                Ok(true) => return Ok(()),
                Ok(false) | Err(StoreError::Unavailable) => {}
                Err(err) => return Err(err),
            }
        }
        Err(StoreError::Contention)
    }

    async fn printer(&self, digest: &[u8; 32]) -> Result<Option<LinkedPrinter>, StoreError> {
        let key = self.token_key(digest);
        let Some(value) = self.store.load(&key).await? else {
            return Ok(None);
        };
        // Never expires: any time will do.
        let opened = self.open(&key, &value, DateTime::<Utc>::MIN_UTC)?;
        serde_json::from_slice(&opened.json)
            .map(Some)
            .map_err(|_| StoreError::Corrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{MemoryBytes, RecordsConfig, StoreKey};
    use std::sync::atomic::{AtomicBool, Ordering};

    fn printer() -> LinkedPrinter {
        LinkedPrinter {
            id: 7,
            name: "garage-printer".into(),
            account: crate::AccountId::new("alice").expect("account"),
            instance_id: "9f0c3b5e2a7d4e1f8b6c0d2e4f6a8b0c".parse().expect("id"),
            linked_at: DateTime::from_timestamp(1_800_000_000, 0).expect("time"),
        }
    }

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        let mut f = std::pin::pin!(f);
        let waker = std::task::Waker::noop();
        match f.as_mut().poll(&mut std::task::Context::from_waker(waker)) {
            std::task::Poll::Ready(value) => value,
            std::task::Poll::Pending => panic!("the memory store is ready at once"),
        }
    }

    #[test]
    fn a_token_is_found_by_its_digest_and_sealed_under_a_keyed_name() {
        let store = std::sync::Arc::new(MemoryBytes::default());
        let key = StoreKey::from_bytes([7; 32]);
        let records = Records::new(store.clone(), RecordsConfig::new(key.clone()));
        let digest = [0xab; 32];
        block_on(records.issue(digest, printer())).expect("issue");
        assert_eq!(block_on(records.printer(&digest)), Ok(Some(printer())));
        assert_eq!(block_on(records.printer(&[0xac; 32])), Ok(None));
        let keys = store.keys();
        assert_eq!(keys, vec![records.token_key(&digest)]);
        assert_eq!(keys[0].kind(), "tok");
        assert!(
            !keys[0].slot().contains("abab"),
            "the digest is not in the name"
        );
        let value = block_on(store.load(&keys[0])).expect("load").expect("held");
        assert!(!value.windows(14).any(|w| w == b"garage-printer"), "sealed");
        // Another key neither finds it nor opens it.
        let other = Records::new(
            store.clone(),
            RecordsConfig::new(StoreKey::from_bytes([8; 32])),
        );
        assert_eq!(block_on(other.printer(&digest)), Ok(None));
        let elsewhere = other.token_key(&digest);
        let write = Write::new(&elsewhere, None, Some((&value, NEVER)));
        assert_eq!(block_on(store.swap(&[write])), Ok(true));
        assert_eq!(block_on(other.printer(&digest)), Err(StoreError::Corrupt));
        // Issuing again replaces the record.
        let mut renamed = printer();
        renamed.name = "attic".into();
        block_on(records.issue(digest, renamed.clone())).expect("issue");
        assert_eq!(block_on(records.printer(&digest)), Ok(Some(renamed)));
    }

    /// A store whose first swap applies and then answers `Unavailable` (its reply lost).
    struct LosesFirstReply(MemoryBytes, AtomicBool);

    #[async_trait]
    impl Store for LosesFirstReply {
        async fn load(&self, key: &Key) -> Result<Option<Vec<u8>>, StoreError> {
            self.0.load(key).await
        }
        async fn swap(&self, writes: &[Write<'_>]) -> Result<bool, StoreError> {
            let applied = self.0.swap(writes).await?;
            if !self.1.swap(true, Ordering::SeqCst) {
                return Err(StoreError::Unavailable);
            }
            Ok(applied)
        }
        async fn purge(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
            self.0.purge(now).await
        }
    }

    #[test]
    fn an_issue_whose_reply_was_lost_is_recognised() {
        let store = LosesFirstReply(MemoryBytes::default(), AtomicBool::new(false));
        let records = Records::new(store, RecordsConfig::new(StoreKey::from_bytes([7; 32])));
        block_on(records.issue([1; 32], printer())).expect("issued once, told by a load");
        assert!(
            records.store().1.load(Ordering::SeqCst),
            "the reply was lost"
        );
        assert_eq!(block_on(records.printer(&[1; 32])), Ok(Some(printer())));
        assert_eq!(records.store().0.len(), 1);
    }
}
