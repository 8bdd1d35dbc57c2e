//! [`WireError`]: why bytes are not a valid message, vocabulary of every layer that decodes
//! (re-exported at [`crate::wire::WireError`]).
//! It must not echo the bytes it refuses (they may hold a secret), nor depend on the wire.

/// Why bytes are not a valid message. Says where, never what: no input is echoed.
///
/// ```
/// use lanlink::wire::{decode, decode_announce, ErrorBody, WireError, MAX_ANNOUNCE_BYTES};
/// let big = vec![b' '; MAX_ANNOUNCE_BYTES + 1];
/// assert_eq!(decode_announce(&big), Err(WireError::TooLarge { limit: MAX_ANNOUNCE_BYTES }));
/// let err = decode::<ErrorBody>(br#"{"error": 7}"#, 100).unwrap_err();
/// assert_eq!(err, WireError::Malformed);
/// // The message names no input.
/// assert_eq!(err.to_string(), "malformed message");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The input is longer than the message's limit.
    #[error("message larger than {limit} bytes")]
    TooLarge {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// Not JSON of the expected shape (a missing, unknown or mistyped field).
    #[error("malformed message")]
    Malformed,
    /// A text field is over its limit.
    #[error("field `{0}` is too long")]
    BadField(&'static str),
    /// A text field holds a character that may make it render as another text: a control, bidi
    /// or zero-width character, or any other default-ignorable one (see [`is_hidden`](crate::wire::is_hidden)). Names the
    /// field, never the character.
    #[error("field `{0}` holds a control, bidi or invisible character")]
    HiddenCharacter(&'static str),
    /// The message's version is not one this crate speaks.
    #[error("unsupported wire version")]
    Version,
}
