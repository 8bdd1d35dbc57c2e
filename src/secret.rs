//! Secret values: the agent's `local_secret`, the commitment to it, and the auth token.
//! A secret must never reach a log, a `Debug` or `Display` output or an error; this module must not
//! draw one from anything but the RNG it is given.
//!
//! Every secret type here
//! - is generated from an injected cryptographic RNG ([`rand::CryptoRng`] + [`rand::RngCore`]),
//! - has a redacted `Debug` and `Display` (`LocalSecret(<redacted>)`),
//! - compares in constant time with [`subtle`] (there is no `PartialEq`: use [`LocalSecret::ct_eq`]),
//! - is zeroized when dropped,
//! - has no `Serialize`; only the wire types that must carry it serialize it, through
//!   [`crate::wire`]'s field helpers.

use std::fmt;

use rand::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::id::InstanceId;

/// Number of bytes in a [`LocalSecret`], an [`AuthToken`] and a [`PresenceKey`].
pub const SECRET_LEN: usize = 32;

/// Domain-separation tag of the commitment hash, so that a commitment can never be confused with
/// any other SHA-256 value that the crate or an embedder computes.
pub const COMMITMENT_DOMAIN_TAG: &[u8] = b"lanlink/v1/local-secret-commitment\0";

/// Defines a 32-byte secret newtype with what every secret here shares: drawn from a CSPRNG,
/// redacted `Debug`, zeroized on drop, hex in and out, constant-time equality.
macro_rules! secret_bytes {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Zeroize, ZeroizeOnDrop)]
        pub struct $name([u8; SECRET_LEN]);

        impl $name {
            /// Draws a fresh value from `rng`.
            ///
            #[doc = concat!("```\nuse lanlink::secret::", stringify!($name), ";\nlet mut rng = lanlink::os_rng();\nlet a = ", stringify!($name), "::generate(&mut rng);\nlet b = ", stringify!($name), "::generate(&mut rng);\nassert!(!a.ct_eq(&b));\nassert!(a.ct_eq(&a.clone()));\n```")]
            pub fn generate<R: CryptoRng + RngCore + ?Sized>(rng: &mut R) -> Self {
                let mut bytes = [0u8; SECRET_LEN];
                rng.fill_bytes(&mut bytes);
                let value = Self(bytes);
                bytes.zeroize();
                value
            }

            /// Builds a value from raw bytes (for tests and for decoding).
            ///
            #[doc = concat!("```\nuse lanlink::secret::", stringify!($name), ";\nlet a = ", stringify!($name), "::from_bytes([7; 32]);\nassert!(a.ct_eq(&", stringify!($name), "::from_bytes([7; 32])));\nassert!(!a.ct_eq(&", stringify!($name), "::from_bytes([8; 32])));\n```")]
            pub fn from_bytes(bytes: [u8; SECRET_LEN]) -> Self {
                Self(bytes)
            }

            /// Parses 64 hex characters (either case). Returns `None` on any other input; the
            /// error says nothing about where the input went wrong.
            ///
            #[doc = concat!("```\nuse lanlink::secret::", stringify!($name), ";\nlet a = ", stringify!($name), "::from_hex(&\"Ab\".repeat(32)).unwrap();\nassert!(a.ct_eq(&", stringify!($name), "::from_bytes([0xab; 32])));\nassert!(", stringify!($name), "::from_hex(\"abab\").is_none());\nassert!(", stringify!($name), "::from_hex(&\"zz\".repeat(32)).is_none());\n```")]
            pub fn from_hex(text: &str) -> Option<Self> {
                decode_hex_32(text).map(Self)
            }

            /// The value as 64 lowercase hex characters, in a buffer zeroized when dropped.
            ///
            #[doc = concat!("```\nuse lanlink::secret::", stringify!($name), ";\nlet a = ", stringify!($name), "::generate(&mut lanlink::os_rng());\nlet hex = a.to_hex();\nassert_eq!(hex.len(), 64);\nassert!(hex.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));\nassert!(", stringify!($name), "::from_hex(&hex).unwrap().ct_eq(&a));\n```")]
            pub fn to_hex(&self) -> Zeroizing<String> {
                encode_hex(&self.0)
            }

            /// Constant-time equality.
            ///
            #[doc = concat!("```\nuse lanlink::secret::", stringify!($name), ";\nlet a = ", stringify!($name), "::from_bytes([1; 32]);\nassert!(a.ct_eq(&", stringify!($name), "::from_bytes([1; 32])));\nlet mut other = [1; 32];\nother[31] = 2;\nassert!(!a.ct_eq(&", stringify!($name), "::from_bytes(other)));\n```")]
            pub fn ct_eq(&self, other: &Self) -> bool {
                self.0.ct_eq(&other.0).into()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(<redacted>)"))
            }
        }
    };
}

secret_bytes!(
    /// The agent's one-time second factor: 32 random bytes that only a caller on the local
    /// network can fetch during the discovery window.
    ///
    /// Shown on the wire as 64 lowercase hex characters.
    ///
    /// ```
    /// use lanlink::LocalSecret;
    /// let secret = LocalSecret::generate(&mut lanlink::os_rng());
    /// assert_eq!(format!("{secret:?}"), "LocalSecret(<redacted>)");
    /// let again = LocalSecret::from_hex(&secret.to_hex()).unwrap();
    /// assert!(secret.ct_eq(&again));
    /// ```
    LocalSecret
);

impl LocalSecret {
    /// The commitment `SHA-256(COMMITMENT_DOMAIN_TAG ‖ instance_id ‖ secret)` that the agent
    /// announces in place of the secret.
    ///
    /// ```
    /// use lanlink::{InstanceId, LocalSecret};
    /// let secret = LocalSecret::from_bytes([5; 32]);
    /// let a = InstanceId::from_bytes([1; 16]);
    /// let b = InstanceId::from_bytes([2; 16]);
    /// // Deterministic, and bound to the instance.
    /// assert_eq!(secret.commitment(&a), secret.commitment(&a));
    /// assert_ne!(secret.commitment(&a), secret.commitment(&b));
    /// ```
    pub fn commitment(&self, instance_id: &InstanceId) -> Commitment {
        let mut hasher = Sha256::new();
        hasher.update(COMMITMENT_DOMAIN_TAG);
        hasher.update(instance_id.as_bytes());
        hasher.update(self.0);
        Commitment(hasher.finalize().into())
    }
}

impl fmt::Display for LocalSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A binding commitment to a [`LocalSecret`] for one instance: the server keeps this, never the
/// secret, and checks a presented secret against it in constant time.
///
/// Not secret by itself (it is a hash of 256 random bits), but the server never shows it to
/// linkers.
///
/// ```
/// use lanlink::{secret::Commitment, InstanceId, LocalSecret};
/// let id = InstanceId::from_bytes([3; 16]);
/// let c: Commitment = LocalSecret::from_bytes([4; 32]).commitment(&id);
/// // Its Debug is redacted all the same.
/// assert_eq!(format!("{c:?}"), "Commitment(<redacted>)");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Commitment([u8; 32]);

impl Commitment {
    /// Builds a commitment from its 32 bytes.
    ///
    /// ```
    /// use lanlink::secret::Commitment;
    /// let c = Commitment::from_bytes([9; 32]);
    /// assert_eq!(c.as_bytes(), &[9; 32]);
    /// ```
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 bytes.
    ///
    /// ```
    /// use lanlink::secret::Commitment;
    /// let c = Commitment::from_bytes([1; 32]);
    /// assert_eq!(Commitment::from_bytes(*c.as_bytes()), c);
    /// ```
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses 64 hex characters.
    ///
    /// ```
    /// use lanlink::secret::Commitment;
    /// let c = Commitment::from_hex(&"0F".repeat(32)).unwrap();
    /// assert_eq!(c.as_bytes(), &[0x0f; 32]);
    /// assert!(Commitment::from_hex(&"0f".repeat(31)).is_none());
    /// ```
    pub fn from_hex(text: &str) -> Option<Self> {
        decode_hex_32(text).map(Self)
    }

    /// The commitment as 64 lowercase hex characters.
    ///
    /// ```
    /// use lanlink::secret::Commitment;
    /// let c = Commitment::from_bytes([0xa0; 32]);
    /// assert_eq!(c.to_hex(), "a0".repeat(32));
    /// assert_eq!(Commitment::from_hex(&c.to_hex()), Some(c));
    /// ```
    pub fn to_hex(&self) -> String {
        encode_hex(&self.0).to_string()
    }

    /// Checks, in constant time, that `secret` is the secret this commitment binds for `instance_id`.
    ///
    /// ```
    /// use lanlink::{InstanceId, LocalSecret};
    /// let id = InstanceId::from_bytes([4; 16]);
    /// let secret = LocalSecret::from_bytes([9; 32]);
    /// let c = secret.commitment(&id);
    /// assert!(c.verify(&id, &secret));
    /// assert!(!c.verify(&id, &LocalSecret::from_bytes([8; 32])));
    /// ```
    pub fn verify(&self, instance_id: &InstanceId, secret: &LocalSecret) -> bool {
        self.ct_eq(&secret.commitment(instance_id))
    }

    /// Constant-time equality.
    ///
    /// ```
    /// use lanlink::secret::Commitment;
    /// let c = Commitment::from_bytes([2; 32]);
    /// assert!(c.ct_eq(&Commitment::from_bytes([2; 32])));
    /// assert!(!c.ct_eq(&Commitment::from_bytes([3; 32])));
    /// ```
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

/// Redacted, like everything derived from a secret: a log line needs no part of it.
impl fmt::Debug for Commitment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Commitment(<redacted>)")
    }
}

secret_bytes!(
    /// The credential minted for a linked agent: 32 random bytes (256 bits), shown as 64 hex
    /// characters.
    ///
    /// The agent keeps it to authenticate later; the server's embedder stores only
    /// [`AuthToken::digest`].
    ///
    /// ```
    /// use lanlink::AuthToken;
    /// let token = AuthToken::from_bytes([1; 32]);
    /// assert_eq!(token.to_string(), "<redacted>");
    /// assert_eq!(token.digest().len(), 32);
    /// ```
    AuthToken
);

impl AuthToken {
    /// SHA-256 of the token under a domain tag: what a server should store to recognise it later.
    ///
    /// ```
    /// use lanlink::AuthToken;
    /// let token = AuthToken::generate(&mut lanlink::os_rng());
    /// // Stable for one token, different for another.
    /// assert_eq!(token.digest(), token.clone().digest());
    /// assert_ne!(token.digest(), AuthToken::generate(&mut lanlink::os_rng()).digest());
    /// ```
    pub fn digest(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(b"lanlink/v1/auth-token\0");
        hasher.update(self.0);
        hasher.finalize().into()
    }
}

impl fmt::Display for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

secret_bytes!(
    /// The agent's proof of identity toward the server: 32 random bytes from which its
    /// [`InstanceId`] is derived ([`PresenceKey::instance_id`]). The agent sends it in every
    /// announcement and to nobody else; the server checks that it hashes to the announced id.
    ///
    /// Anyone can learn an instance id (discovery shows it to a whole public network), and a LAN
    /// caller can learn the secret during the window; neither lets them announce *as* the agent,
    /// so neither can receive the agent's messages or claim its id from elsewhere.
    ///
    /// ```
    /// use lanlink::secret::PresenceKey;
    /// let key = PresenceKey::generate(&mut lanlink::os_rng());
    /// let id = key.instance_id();
    /// assert_eq!(id.as_uuid().get_version_num(), 4);
    /// assert!(key.proves(&id));
    /// assert!(!PresenceKey::from_bytes([0; 32]).proves(&id));
    /// assert_eq!(format!("{key:?}"), "PresenceKey(<redacted>)");
    /// ```
    PresenceKey
);

/// Domain-separation tag of [`PresenceKey::instance_id`] (short, so the hash is one block).
pub const INSTANCE_DOMAIN_TAG: &[u8] = b"lanlink/v1/instance\0";

impl PresenceKey {
    /// The instance id this key stands for: the first 16 bytes of
    /// `SHA-256(INSTANCE_DOMAIN_TAG ‖ key)`, with the UUID version-4 and variant bits set.
    ///
    /// ```
    /// use lanlink::secret::PresenceKey;
    /// let key = PresenceKey::from_bytes([6; 32]);
    /// assert_eq!(key.instance_id(), key.instance_id());
    /// assert_ne!(key.instance_id(), PresenceKey::from_bytes([7; 32]).instance_id());
    /// assert_eq!(key.instance_id().as_uuid().get_version_num(), 4);
    /// ```
    pub fn instance_id(&self) -> InstanceId {
        let mut hasher = Sha256::new();
        hasher.update(INSTANCE_DOMAIN_TAG);
        hasher.update(self.0);
        let digest: [u8; 32] = hasher.finalize().into();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        InstanceId::from_bytes(bytes)
    }

    /// Whether this key stands for `instance_id` (constant time in the comparison).
    ///
    /// ```
    /// use lanlink::{secret::PresenceKey, InstanceId};
    /// let key = PresenceKey::generate(&mut lanlink::os_rng());
    /// assert!(key.proves(&key.instance_id()));
    /// // An id chosen by someone else is not proven by this key.
    /// assert!(!key.proves(&InstanceId::from_bytes([0x42; 16])));
    /// ```
    pub fn proves(&self, instance_id: &InstanceId) -> bool {
        self.instance_id()
            .as_bytes()
            .ct_eq(instance_id.as_bytes())
            .into()
    }
}

/// Constant-time equality (so announcements can be compared in tests without a timing channel).
impl PartialEq for PresenceKey {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other)
    }
}

impl Eq for PresenceKey {}

/// Lowercase hex of `bytes`, in a zeroizing buffer.
pub(crate) fn encode_hex(bytes: &[u8]) -> Zeroizing<String> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Zeroizing::new(String::with_capacity(bytes.len() * 2));
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0x0f)] as char);
    }
    out
}

/// Decodes exactly 64 hex characters into 32 bytes. The digit decoding has no data-dependent
/// branches, so the time taken does not depend on which characters a secret contains.
pub(crate) fn decode_hex_32(text: &str) -> Option<[u8; 32]> {
    let raw = text.as_bytes();
    if raw.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    let mut bad = 0u8;
    for (i, pair) in raw.chunks_exact(2).enumerate() {
        let (hi, hi_bad) = nibble(pair[0]);
        let (lo, lo_bad) = nibble(pair[1]);
        bad |= hi_bad | lo_bad;
        out[i] = (hi << 4) | lo;
    }
    if bad == 0 {
        Some(out)
    } else {
        out.zeroize();
        None
    }
}

/// One hex digit: (value, 0) when valid, (_, 1) otherwise; branch-free on the character.
fn nibble(c: u8) -> (u8, u8) {
    // Masks are 0xff when the range test holds, 0x00 otherwise.
    let in_range = |c: u8, lo: u8, hi: u8| -> u8 {
        let below = (u16::from(c).wrapping_sub(u16::from(lo)) >> 8) as u8; // 0xff when c < lo
        let above = (u16::from(hi).wrapping_sub(u16::from(c)) >> 8) as u8; // 0xff when c > hi
        !(below | above)
    };
    let digit = in_range(c, b'0', b'9');
    let lower = in_range(c, b'a', b'f');
    let upper = in_range(c, b'A', b'F');
    let value = (digit & c.wrapping_sub(b'0'))
        | (lower & c.wrapping_sub(b'a').wrapping_add(10))
        | (upper & c.wrapping_sub(b'A').wrapping_add(10));
    let valid = digit | lower | upper;
    (value & 0x0f, (!valid) & 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects() {
        let bytes: [u8; 32] = core::array::from_fn(|i| (i * 37 + 5) as u8);
        let hex = encode_hex(&bytes);
        assert_eq!(decode_hex_32(&hex), Some(bytes));
        assert_eq!(decode_hex_32(&hex.to_uppercase()), Some(bytes));
        assert_eq!(decode_hex_32(&hex[..63]), None);
        let mut bad = hex.to_string();
        bad.replace_range(10..11, "g");
        assert_eq!(decode_hex_32(&bad), None);
        for c in 0u8..=255 {
            let (v, b) = nibble(c);
            let expected = (c as char).to_digit(16);
            match expected {
                Some(d) => assert_eq!((v, b), (d as u8, 0), "char {c}"),
                None => assert_eq!(b, 1, "char {c}"),
            }
        }
    }

    #[test]
    fn secrets_are_redacted() {
        let s = LocalSecret::from_bytes([0xab; 32]);
        assert!(!format!("{s:?}{s}").contains("ab"));
        let t = AuthToken::from_bytes([0xcd; 32]);
        assert!(!format!("{t:?}{t}").contains("cd"));
    }

    #[test]
    fn commitment_binds_instance_and_secret() {
        let a = InstanceId::from_bytes([1; 16]);
        let b = InstanceId::from_bytes([2; 16]);
        let s = LocalSecret::from_bytes([3; 32]);
        assert_ne!(s.commitment(&a), s.commitment(&b));
        assert!(s.commitment(&a).verify(&a, &s));
        assert!(!s.commitment(&a).verify(&b, &s));
    }
}
