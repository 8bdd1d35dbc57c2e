//! [`StoreError`]: why a store failed, vocabulary every layer reads (the server's backends
//! raise it, [`Refusal::Store`](crate::error::Refusal::Store) carries it).
//! It must not carry a value read from the store, nor depend on the server.

/// Why a store could not carry out an operation. Nothing was changed by the failed operation,
/// with one exception: a shared store that lost a write's reply and could not read the record
/// back either (see `Records` (feature `shared-store`)'s "Lost replies") answers
/// [`Unavailable`](Self::Unavailable) with the write possibly applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store cannot be reached (or timed out), or answered with an error.
    #[error("the store is unavailable")]
    Unavailable,
    /// Other writers changed the record each time it was read, for the store's whole retry
    /// budget.
    #[error("too much contention on one record")]
    Contention,
    /// A stored value could not be read back (not written by this server, or with another key).
    #[error("a stored record could not be read")]
    Corrupt,
    /// The store refused the call, or could not be reached at all (a refused connection, an
    /// error answer): nothing was written, so a [`Store::swap`](crate::server::Store::swap)
    /// answered so surely did not apply, and needs no reading back.
    #[error("the store refused the call")]
    Refused,
}
