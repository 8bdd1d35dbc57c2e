//! Link codes: the single-use codes an agent redeems for an auth token.
//! A code is a secret until it is redeemed: this module must not show one (its `Debug` and
//! `Display` are redacted) or let a store hold one (a record is named by the code's hash,
//! [`CodeKey`]), and draws codes only from the RNG it is given.
//!
//! Two kinds share one redemption path ([`crate::server::Server::redeem`]):
//! - *manual* codes, minted for an account and typed by the user into the agent: short
//!   ([`CodeFormat`], 6 digits by default), drawn uniformly from the CSPRNG;
//! - *auto* codes, minted by a successful link request and delivered to the agent with the secret:
//!   32 hex characters (128 bits), bound to one instance and one public network.

use std::fmt;

use rand::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::ConfigError;

/// Longest code the crate accepts anywhere, in characters.
pub const MAX_CODE_LEN: usize = 64;

/// A single-use link code. Redacted in `Debug`/`Display`, zeroized on drop, no `Serialize`.
///
/// ```
/// use lanlink::LinkCode;
/// let code = LinkCode::parse("123456").unwrap();
/// assert_eq!(code.expose(), "123456");
/// assert_eq!(format!("{code:?}"), "LinkCode(<redacted>)");
/// assert!(LinkCode::parse("12 34").is_none());
/// ```
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct LinkCode(String);

impl LinkCode {
    /// Accepts a code as typed or received: 1 to [`MAX_CODE_LEN`] printable ASCII characters, no
    /// spaces. Whether it is a *live* code is the server's question.
    ///
    /// ```
    /// use lanlink::{code::MAX_CODE_LEN, LinkCode};
    /// assert!(LinkCode::parse("AB12-cd").is_some());
    /// assert!(LinkCode::parse("").is_none());
    /// assert!(LinkCode::parse("é").is_none(), "not ASCII");
    /// assert!(LinkCode::parse(&"1".repeat(MAX_CODE_LEN + 1)).is_none());
    /// ```
    pub fn parse(text: &str) -> Option<Self> {
        let ok = !text.is_empty()
            && text.len() <= MAX_CODE_LEN
            && text.bytes().all(|b| b.is_ascii_graphic());
        ok.then(|| Self(text.to_owned()))
    }

    /// The code's text, for the one place that must show or send it.
    ///
    /// ```
    /// use lanlink::LinkCode;
    /// let code = LinkCode::parse("654321").unwrap();
    /// // Only `expose` shows it: Display is redacted.
    /// assert_eq!(code.to_string(), "<redacted>");
    /// assert_eq!(code.expose().len(), 6);
    /// ```
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The key under which the server stores the code's record: a domain-separated SHA-256, so a
    /// store never holds a redeemable code.
    ///
    /// ```
    /// use lanlink::LinkCode;
    /// let a = LinkCode::parse("123456").unwrap();
    /// assert_eq!(a.key(), LinkCode::parse("123456").unwrap().key());
    /// assert_ne!(a.key(), LinkCode::parse("123457").unwrap().key());
    /// ```
    pub fn key(&self) -> CodeKey {
        let mut hasher = Sha256::new();
        hasher.update(b"lanlink/v1/link-code\0");
        hasher.update(self.0.as_bytes());
        CodeKey(hasher.finalize().into())
    }

    /// A fresh 128-bit auto-link code (32 lowercase hex characters).
    pub(crate) fn generate_auto<R: CryptoRng + RngCore + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; 16];
        rng.fill_bytes(&mut bytes);
        let hex = crate::secret::encode_hex(&bytes);
        bytes.zeroize();
        Self(hex.to_string())
    }
}

impl fmt::Debug for LinkCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LinkCode(<redacted>)")
    }
}

impl fmt::Display for LinkCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The storage key of a code record (a hash of the code).
///
/// ```
/// use lanlink::{code::CodeKey, LinkCode};
/// let key: CodeKey = LinkCode::parse("123456").unwrap().key();
/// assert_eq!(format!("{key:?}"), "CodeKey(<redacted>)");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CodeKey([u8; 32]);

impl CodeKey {
    /// The key of an instance's link claim ([`CodeKind::InstanceClaim`](crate::server::CodeKind::InstanceClaim)):
    /// a SHA-256 under its own tag, so no code's key is ever a claim's.
    ///
    /// ```
    /// use lanlink::{code::CodeKey, InstanceId};
    /// let id = InstanceId::from_bytes([7; 16]);
    /// assert_eq!(CodeKey::instance_claim(&id), CodeKey::instance_claim(&id));
    /// assert_ne!(CodeKey::instance_claim(&id), CodeKey::instance_claim(&InstanceId::from_bytes([8; 16])));
    /// ```
    pub fn instance_claim(instance_id: &crate::InstanceId) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"lanlink/v1/instance-claim\0");
        hasher.update(instance_id.as_bytes());
        CodeKey(hasher.finalize().into())
    }

    /// The key's bytes.
    ///
    /// ```
    /// use lanlink::LinkCode;
    /// let key = LinkCode::parse("123456").unwrap().key();
    /// assert_eq!(key.as_bytes().len(), 32);
    /// assert_ne!(key.as_bytes(), b"123456".repeat(6)[..32].as_ref());
    /// ```
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Redacted: a code has few digits, so even a prefix of its key's hash singles it out offline.
///
/// ```
/// use lanlink::{code::CodeKey, InstanceId};
/// let key = CodeKey::instance_claim(&InstanceId::from_bytes([7; 16]));
/// assert_eq!(format!("{key:?}"), "CodeKey(<redacted>)");
/// ```
impl fmt::Debug for CodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CodeKey(<redacted>)")
    }
}

/// The shape of manual codes: length and alphabet.
///
/// ```
/// use lanlink::CodeFormat;
/// let format = CodeFormat::default();
/// assert_eq!((format.length(), format.alphabet()), (6, "0123456789"));
/// let code = format.generate(&mut lanlink::os_rng());
/// assert!(code.expose().chars().all(|c| c.is_ascii_digit()));
/// assert!(CodeFormat::new(3, "0123456789").is_err(), "too little entropy");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeFormat {
    length: usize,
    alphabet: Vec<u8>,
}

impl CodeFormat {
    /// A format of `length` characters from `alphabet` (distinct printable ASCII characters).
    ///
    /// Refuses fewer than 2 or more than 64 symbols, a repeated symbol, a length over
    /// [`MAX_CODE_LEN`], and formats with fewer than 10⁶ possible codes (the 6-digit default).
    ///
    /// ```
    /// use lanlink::{CodeFormat, ConfigError};
    /// let format = CodeFormat::new(8, "ABCDEFGHJKMNPQRSTVWXYZ23456789")?;
    /// assert_eq!(format.length(), 8);
    /// assert_eq!(CodeFormat::new(6, "0012345678"), Err(ConfigError::CodeAlphabet));
    /// assert_eq!(CodeFormat::new(4, "0123456789"), Err(ConfigError::CodeLength));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(length: usize, alphabet: &str) -> Result<Self, ConfigError> {
        let symbols = alphabet.as_bytes().to_vec();
        let mut sorted = symbols.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if symbols.len() < 2
            || symbols.len() > 64
            || sorted.len() != symbols.len()
            || !symbols.iter().all(u8::is_ascii_graphic)
        {
            return Err(ConfigError::CodeAlphabet);
        }
        if length == 0 || length > MAX_CODE_LEN {
            return Err(ConfigError::CodeLength);
        }
        let space = (symbols.len() as f64).powi(length as i32);
        if space < 1e6 {
            return Err(ConfigError::CodeLength);
        }
        Ok(Self {
            length,
            alphabet: symbols,
        })
    }

    /// Characters per code.
    ///
    /// ```
    /// use lanlink::CodeFormat;
    /// let format = CodeFormat::new(10, "0123456789")?;
    /// assert_eq!(format.length(), 10);
    /// assert_eq!(format.generate(&mut lanlink::os_rng()).expose().len(), 10);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn length(&self) -> usize {
        self.length
    }

    /// The alphabet.
    ///
    /// ```
    /// use lanlink::CodeFormat;
    /// let format = CodeFormat::new(5, "ABCDEFGHKMNPRSTUVWXYZ")?;
    /// assert_eq!(format.alphabet(), "ABCDEFGHKMNPRSTUVWXYZ");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn alphabet(&self) -> &str {
        // Cannot fail: `new` admits only ASCII.
        std::str::from_utf8(&self.alphabet).unwrap_or_default()
    }

    /// The number of possible codes (as a float: it may exceed any integer type).
    ///
    /// ```
    /// assert_eq!(lanlink::CodeFormat::default().space(), 1e6);
    /// ```
    pub fn space(&self) -> f64 {
        (self.alphabet.len() as f64).powi(self.length as i32)
    }

    /// log2 of the number of possible codes.
    ///
    /// ```
    /// use lanlink::CodeFormat;
    /// let bits = CodeFormat::default().entropy_bits();
    /// assert!((bits - 19.93).abs() < 0.01, "{bits}"); // log2(10^6)
    /// assert_eq!(CodeFormat::new(8, "0123456789abcdef")?.entropy_bits(), 32.0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn entropy_bits(&self) -> f64 {
        self.length as f64 * (self.alphabet.len() as f64).log2()
    }

    /// Draws a code uniformly (rejection sampling, no modulo bias) from `rng`.
    ///
    /// ```
    /// use lanlink::CodeFormat;
    /// let format = CodeFormat::new(7, "ACEFHJKMNPRTWXY")?;
    /// let code = format.generate(&mut lanlink::os_rng());
    /// assert!(format.matches(&code));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn generate<R: CryptoRng + RngCore + ?Sized>(&self, rng: &mut R) -> LinkCode {
        let n = self.alphabet.len() as u32; // 2..=64
                                            // Largest multiple of n that fits in a byte; bytes at or above it are redrawn.
        let limit = 256 - (256 % n);
        let mut out = String::with_capacity(self.length);
        let mut buf = [0u8; 32];
        while out.len() < self.length {
            rng.fill_bytes(&mut buf);
            for &b in &buf {
                if u32::from(b) < limit && out.len() < self.length {
                    // In bounds: the index is taken modulo the alphabet's length.
                    out.push(char::from(self.alphabet[(u32::from(b) % n) as usize]));
                }
            }
        }
        buf.zeroize();
        LinkCode(out)
    }

    /// Whether `code` has this format's shape (length and alphabet).
    ///
    /// ```
    /// use lanlink::{CodeFormat, LinkCode};
    /// let format = CodeFormat::default();
    /// assert!(format.matches(&LinkCode::parse("000123").unwrap()));
    /// assert!(!format.matches(&LinkCode::parse("00012").unwrap()), "too short");
    /// assert!(!format.matches(&LinkCode::parse("00012a").unwrap()), "not a digit");
    /// ```
    pub fn matches(&self, code: &LinkCode) -> bool {
        code.0.len() == self.length && code.0.bytes().all(|b| self.alphabet.contains(&b))
    }
}

impl Default for CodeFormat {
    fn default() -> Self {
        Self {
            length: 6,
            alphabet: b"0123456789".to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn generation_is_uniform_enough_and_in_format() {
        let format = CodeFormat::new(8, "ABCDEFGHJKMNPQRSTVWXYZ23456789").unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut counts = [0u32; 30];
        for _ in 0..30_000 {
            let code = format.generate(&mut rng);
            assert!(format.matches(&code));
            for b in code.expose().bytes() {
                let i = format.alphabet.iter().position(|&a| a == b).unwrap();
                counts[i] += 1;
            }
        }
        // 240 000 draws over 30 symbols: 8 000 expected each (standard deviation about 88). A
        // modulo-biased draw over 256 would put the first 16 symbols near 8 440 and the rest near
        // 7 500, outside this band.
        for c in counts {
            assert!((7_700..=8_300).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn formats_refused() {
        assert_eq!(CodeFormat::new(6, "0"), Err(ConfigError::CodeAlphabet));
        assert_eq!(
            CodeFormat::new(6, "0012345678"),
            Err(ConfigError::CodeAlphabet)
        );
        assert_eq!(
            CodeFormat::new(6, "01234 6789"),
            Err(ConfigError::CodeAlphabet)
        );
        assert_eq!(
            CodeFormat::new(5, "0123456789"),
            Err(ConfigError::CodeLength)
        );
        assert!(CodeFormat::new(20, "01").is_ok());
    }

    #[test]
    fn auto_codes_are_128_bit_hex() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let code = LinkCode::generate_auto(&mut rng);
        assert_eq!(code.expose().len(), 32);
        assert!(code.expose().bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
