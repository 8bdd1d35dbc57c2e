//! The printers linked through the Obico profile, recognised by their token.
//! It must never keep, log or show a token: only its digest.
//!
//! After `verify` an agent authenticates every call with `Authorization: Token <auth_token>`.
//! The server keeps only [`AuthToken::digest`] of each token it handed out ([`PrinterTokens`]),
//! and compares digests in constant time: a leak of the store gives no token.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use subtle::ConstantTimeEq;

use crate::id::InstanceId;
use crate::secret::AuthToken;
use crate::server::StoreError;

pub use crate::server::store::printer::{LinkedPrinter, PrinterTokens};

/// The numeric id Obico's wire gives a printer: the first 48 bits of the agent's id.
///
/// ```
/// let id: lanlink::InstanceId = "9f0c3b5e2a7d4e1f8b6c0d2e4f6a8b0c".parse().unwrap();
/// assert_eq!(lanlink::obico::tokens::printer_id(&id), 0x9f0c_3b5e_2a7d);
/// ```
pub fn printer_id(instance_id: &InstanceId) -> u64 {
    let uuid = instance_id.as_uuid();
    uuid.as_bytes()[..6]
        .iter()
        .fold(0u64, |id, byte| (id << 8) | u64::from(*byte))
}

/// The printer a presented token stands for: `Ok(None)` for a token that is not 64 hex
/// characters or was never issued.
///
/// ```
/// # use lanlink::obico::tokens::{authenticate, LinkedPrinter, MemoryTokens, PrinterTokens};
/// # use lanlink::{AccountId, AuthToken, InstanceId};
/// # let printer = |name: &str| LinkedPrinter { id: 1, name: name.into(), account: AccountId::new("alice").unwrap(),
/// #     instance_id: InstanceId::from_bytes([7; 16]), linked_at: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap() };
/// # let mut fut = std::pin::pin!(async {
/// let tokens = MemoryTokens::default();
/// let token = AuthToken::generate(&mut lanlink::os_rng());
/// tokens.issue(token.digest(), printer("voron")).await.unwrap();
/// // The header's value, surrounding blanks allowed, in either case.
/// let header = format!(" {} ", token.to_hex().to_uppercase());
/// assert!(authenticate(&tokens, &header).await.unwrap().is_some());
/// assert_eq!(authenticate(&tokens, "not a token").await.unwrap(), None);
/// # });
/// # use std::future::Future;
/// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
/// ```
pub async fn authenticate(
    tokens: &dyn PrinterTokens,
    presented: &str,
) -> Result<Option<LinkedPrinter>, StoreError> {
    match AuthToken::from_hex(presented.trim()) {
        Some(token) => tokens.printer(&token.digest()).await,
        None => Ok(None),
    }
}

/// The most tokens [`MemoryTokens::default`] keeps (the oldest is forgotten past it).
pub const DEFAULT_MAX_TOKENS: usize = 100_000;

/// Token digests in memory, at most a bound (past it the oldest is forgotten, so that linking
/// cannot grow memory without bound).
///
/// ```
/// use lanlink::obico::tokens::{authenticate, LinkedPrinter, MemoryTokens, PrinterTokens};
/// # let mut fut = std::pin::pin!(async {
/// let tokens = MemoryTokens::default();
/// let token = lanlink::AuthToken::generate(&mut lanlink::os_rng());
/// let printer = LinkedPrinter {
///     id: 1,
///     name: "voron".into(),
///     account: lanlink::AccountId::new("alice").unwrap(),
///     instance_id: lanlink::InstanceId::generate(&mut lanlink::os_rng()),
///     linked_at: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
/// };
/// tokens.issue(token.digest(), printer.clone()).await.unwrap();
/// assert_eq!(authenticate(&tokens, &token.to_hex()).await.unwrap(), Some(printer));
/// assert_eq!(authenticate(&tokens, &"0".repeat(64)).await.unwrap(), None);
/// # });
/// # use std::future::Future;
/// # let waker = std::task::Waker::noop();
/// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(waker)).is_ready());
/// ```
pub struct MemoryTokens {
    inner: Mutex<Inner>,
    max: usize,
}

/// How many tokens it holds and may hold; never a digest.
impl std::fmt::Debug for MemoryTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = crate::lock_unpoisoned(&self.inner).order.len();
        f.debug_struct("MemoryTokens")
            .field("held", &held)
            .field("max", &self.max)
            .finish()
    }
}

#[derive(Default)]
struct Inner {
    /// Indexed by the digest's first 8 bytes; each entry's full digest is compared in
    /// constant time.
    printers: HashMap<[u8; 8], Vec<([u8; 32], LinkedPrinter)>>,
    order: VecDeque<[u8; 32]>,
}

fn index_of(digest: &[u8; 32]) -> [u8; 8] {
    let mut index = [0u8; 8];
    index.copy_from_slice(&digest[..8]);
    index
}

impl Default for MemoryTokens {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_TOKENS)
    }
}

impl MemoryTokens {
    /// Keeps at most `max` tokens (at least one).
    ///
    /// ```
    /// use lanlink::obico::tokens::MemoryTokens;
    /// let tokens = MemoryTokens::new(0); // at least one is kept
    /// assert_eq!(format!("{tokens:?}"), "MemoryTokens { held: 0, max: 1 }");
    /// ```
    pub fn new(max: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            max: max.max(1),
        }
    }

    /// How many tokens are kept.
    ///
    /// ```
    /// # use lanlink::obico::tokens::{authenticate, LinkedPrinter, MemoryTokens, PrinterTokens};
    /// # use lanlink::{AccountId, AuthToken, InstanceId};
    /// # let printer = |name: &str| LinkedPrinter { id: 1, name: name.into(), account: AccountId::new("alice").unwrap(),
    /// #     instance_id: InstanceId::from_bytes([7; 16]), linked_at: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap() };
    /// # let mut fut = std::pin::pin!(async {
    /// let tokens = MemoryTokens::new(2);
    /// for _ in 0..3 {
    ///     tokens.issue(AuthToken::generate(&mut lanlink::os_rng()).digest(), printer("p")).await.unwrap();
    /// }
    /// assert_eq!(tokens.len(), 2, "bounded");
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    pub fn len(&self) -> usize {
        crate::lock_unpoisoned(&self.inner).order.len()
    }

    /// Whether none is kept.
    ///
    /// ```
    /// # use lanlink::obico::tokens::{authenticate, LinkedPrinter, MemoryTokens, PrinterTokens};
    /// # use lanlink::{AccountId, AuthToken, InstanceId};
    /// # let printer = |name: &str| LinkedPrinter { id: 1, name: name.into(), account: AccountId::new("alice").unwrap(),
    /// #     instance_id: InstanceId::from_bytes([7; 16]), linked_at: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap() };
    /// # let mut fut = std::pin::pin!(async {
    /// let tokens = MemoryTokens::default();
    /// assert!(tokens.is_empty());
    /// tokens.issue([1; 32], printer("p")).await.unwrap();
    /// assert!(!tokens.is_empty());
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl PrinterTokens for MemoryTokens {
    async fn issue(&self, digest: [u8; 32], printer: LinkedPrinter) -> Result<(), StoreError> {
        let mut inner = crate::lock_unpoisoned(&self.inner);
        while inner.order.len() >= self.max {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            let index = index_of(&oldest);
            if let Some(entries) = inner.printers.get_mut(&index) {
                entries.retain(|(d, _)| !bool::from(d.ct_eq(&oldest)));
                if entries.is_empty() {
                    inner.printers.remove(&index);
                }
            }
        }
        inner
            .printers
            .entry(index_of(&digest))
            .or_default()
            .push((digest, printer));
        inner.order.push_back(digest);
        Ok(())
    }

    async fn printer(&self, digest: &[u8; 32]) -> Result<Option<LinkedPrinter>, StoreError> {
        let inner = crate::lock_unpoisoned(&self.inner);
        let mut found = None;
        for (stored, printer) in inner.printers.get(&index_of(digest)).into_iter().flatten() {
            if bool::from(stored.ct_eq(digest)) {
                found = Some(printer.clone());
            }
        }
        Ok(found)
    }
}
