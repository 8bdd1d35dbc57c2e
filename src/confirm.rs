//! Confirmation at both ends (PROTOCOL.md revision 1.4): an agent may ask its owner to approve a
//! link on the device itself before it redeems.
//! Pure values and functions: this module must not do I/O or read a clock, and the short code it
//! derives must not be treated as a secret or as proof on its own (see below).
//!
//! An agent's [`Confirmation`] policy (set with
//! [`AgentConfig::confirmation`](crate::agent::AgentConfig::confirmation)) decides what happens
//! when a verified `verify_and_redeem` message arrives:
//!
//! - [`Confirmation::None`] (the default): the agent redeems at once, as before revision 1.4.
//! - [`Confirmation::Approve`]: the device shows the account's [`DisplayName`] ("alice@example.com
//!   wants to link this printer") and waits for [`Agent::confirm`](crate::agent::Agent::confirm).
//! - [`Confirmation::Compare`]: as `Approve`, and the device and the linking page each show the
//!   same [`ShortCode`], derived by [`short_code`] from the link's transcript (the instance, the
//!   commitment, the display name and the linker's fresh [`ConfirmNonce`]); the owner approves
//!   only when the two match.
//!
//! The short code is not a secret and not an authenticator on its own: it lets the owner tell
//! *their* link attempt from someone else's. The security comes from the owner's decision at the
//! device, which no one off the device can make.
//!
//! ```
//! use lanlink::confirm::{short_code, ConfirmNonce, DisplayName};
//! use lanlink::{InstanceId, LocalSecret};
//!
//! let id = InstanceId::from_bytes([7; 16]);
//! let commitment = LocalSecret::from_bytes([9; 32]).commitment(&id);
//! let name = DisplayName::new("alice@example.com").unwrap();
//! let nonce = ConfirmNonce::from_bytes([1; 16]);
//! let code = short_code(&id, &commitment, &name, &nonce);
//! // The page (web/lanlink.js, `shortCode`) derives the same digits from the same inputs.
//! assert_eq!(code.to_string(), "401 257");
//! assert_eq!(code.digits(), "401257");
//! ```

use std::fmt;

use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::hidden::is_hidden;
use crate::id::{AccountId, InstanceId};
use crate::secret::Commitment;

/// The domain-separation prefix of the short-code hash.
pub const SHORT_CODE_DOMAIN: &[u8] = b"lanlink/v1/confirm\0";

/// The longest display name, in bytes of UTF-8: 64.
pub const MAX_DISPLAY_NAME_LEN: usize = 64;

/// An agent's confirmation policy: what it needs before it redeems a link the server forwarded.
///
/// ```
/// use lanlink::confirm::Confirmation;
/// assert_eq!(Confirmation::default(), Confirmation::None);
/// assert!(Confirmation::Compare.shows_short_code());
/// assert!(!Confirmation::Approve.shows_short_code());
/// assert!(Confirmation::Approve.requires_decision());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Confirmation {
    /// Redeem at once (the flow before revision 1.4).
    #[default]
    None,
    /// Show the account's display name and wait for the owner's approval on the device.
    Approve,
    /// Show the display name and a short code the linking page shows too; wait for the owner's
    /// approval on the device.
    Compare,
}

impl Confirmation {
    /// Whether the agent waits for [`Agent::confirm`](crate::agent::Agent::confirm).
    ///
    /// ```
    /// use lanlink::confirm::Confirmation;
    /// assert!(!Confirmation::None.requires_decision());
    /// assert!(Confirmation::Approve.requires_decision());
    /// assert!(Confirmation::Compare.requires_decision());
    /// ```
    pub fn requires_decision(self) -> bool {
        !matches!(self, Self::None)
    }

    /// Whether the agent derives and shows a [`ShortCode`] (and so needs the linker's nonce).
    ///
    /// ```
    /// use lanlink::confirm::Confirmation;
    /// assert!(Confirmation::Compare.shows_short_code());
    /// assert!(!Confirmation::None.shows_short_code());
    /// ```
    pub fn shows_short_code(self) -> bool {
        matches!(self, Self::Compare)
    }
}

/// The owner's answer to a confirmation request.
///
/// ```
/// use lanlink::confirm::Decision;
/// let answer = Decision::Refuse;
/// assert!(!matches!(answer, Decision::Approve));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Decision {
    /// Link: the agent redeems its code.
    Approve,
    /// Do not link: discovery ends and the secret is forgotten.
    Refuse,
}

/// An account's name as the device shows it: 1 to [`MAX_DISPLAY_NAME_LEN`] bytes, none of
/// them a character [`is_hidden`] names (controls, bidi overrides, zero-width characters), so
/// that what the device shows is what it reads. Never a secret.
///
/// ```
/// use lanlink::confirm::DisplayName;
/// assert_eq!(DisplayName::new("alice@example.com").unwrap().as_str(), "alice@example.com");
/// assert!(DisplayName::new("").is_none());
/// assert!(DisplayName::new("alice\u{202E}moc.elpmaxe").is_none()); // a bidi override
/// assert!(DisplayName::new("x".repeat(65)).is_none());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DisplayName(String);

impl TryFrom<String> for DisplayName {
    type Error = &'static str;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value).ok_or("invalid display name")
    }
}

impl From<DisplayName> for String {
    fn from(value: DisplayName) -> Self {
        value.0
    }
}

impl DisplayName {
    /// Checks `name`: `None` when it is empty, too long or holds a hidden character.
    ///
    /// ```
    /// use lanlink::confirm::{DisplayName, MAX_DISPLAY_NAME_LEN};
    /// assert!(DisplayName::new("Ada's printer").is_some());
    /// assert!(DisplayName::new("x".repeat(MAX_DISPLAY_NAME_LEN)).is_some());
    /// assert!(DisplayName::new("zero\u{200B}width").is_none());
    /// assert!(DisplayName::new("tab\there").is_none());
    /// ```
    pub fn new(name: impl Into<String>) -> Option<Self> {
        let name = name.into();
        let ok =
            !name.is_empty() && name.len() <= MAX_DISPLAY_NAME_LEN && !name.chars().any(is_hidden);
        ok.then_some(Self(name))
    }

    /// The server's default for an account the embedder gave no display name: the account id
    /// itself, when it passes the checks of [`DisplayName::new`] (`None` otherwise: the message
    /// then carries no name, and an agent with a policy refuses it — fail closed).
    ///
    /// ```
    /// use lanlink::confirm::DisplayName;
    /// use lanlink::AccountId;
    /// let alice = AccountId::new("alice@example.com").unwrap();
    /// assert_eq!(DisplayName::of_account(&alice).unwrap().as_str(), "alice@example.com");
    /// ```
    pub fn of_account(account: &AccountId) -> Option<Self> {
        Self::new(account.as_str())
    }

    /// The name.
    ///
    /// ```
    /// use lanlink::confirm::DisplayName;
    /// let name = DisplayName::new("bob@example.org").unwrap();
    /// assert_eq!(name.as_str(), "bob@example.org");
    /// assert_eq!(name.to_string(), name.as_str());
    /// ```
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DisplayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The linker's fresh nonce for one link request: 16 bytes from its CSPRNG, 32 lowercase hex
/// characters on the wire (either case accepted). Public: it only makes each link's short code
/// fresh.
///
/// ```
/// use lanlink::confirm::ConfirmNonce;
/// let nonce = ConfirmNonce::from_bytes([0xab; 16]);
/// assert_eq!(nonce.to_hex(), "ab".repeat(16));
/// assert_eq!(ConfirmNonce::from_hex(&"AB".repeat(16)), Some(nonce));
/// assert_eq!(ConfirmNonce::from_hex("ab"), None);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ConfirmNonce([u8; 16]);

impl ConfirmNonce {
    /// A fresh nonce from `rng`.
    ///
    /// ```
    /// use lanlink::confirm::ConfirmNonce;
    /// let mut rng = lanlink::os_rng();
    /// assert_ne!(ConfirmNonce::generate(&mut rng), ConfirmNonce::generate(&mut rng));
    /// ```
    pub fn generate<R: CryptoRng + RngCore + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; 16];
        rng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// A nonce from its bytes.
    ///
    /// ```
    /// use lanlink::confirm::ConfirmNonce;
    /// let nonce = ConfirmNonce::from_bytes([0x01; 16]);
    /// assert_eq!(nonce.to_hex(), "01".repeat(16));
    /// ```
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The bytes.
    ///
    /// ```
    /// use lanlink::confirm::ConfirmNonce;
    /// let nonce = ConfirmNonce::generate(&mut lanlink::os_rng());
    /// assert_eq!(ConfirmNonce::from_bytes(*nonce.as_bytes()), nonce);
    /// ```
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Parses 32 hex characters.
    ///
    /// ```
    /// use lanlink::confirm::ConfirmNonce;
    /// let nonce = ConfirmNonce::from_hex("000102030405060708090a0b0c0d0E0F").unwrap();
    /// assert_eq!(nonce.as_bytes()[15], 0x0f);
    /// assert!(ConfirmNonce::from_hex(&"g0".repeat(16)).is_none());
    /// ```
    pub fn from_hex(text: &str) -> Option<Self> {
        let text = text.as_bytes();
        if text.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (byte, pair) in bytes.iter_mut().zip(text.chunks_exact(2)) {
            let digit = |c: u8| char::from(c).to_digit(16);
            *byte = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
        }
        Some(Self(bytes))
    }

    /// 32 lowercase hex characters.
    ///
    /// ```
    /// use lanlink::confirm::ConfirmNonce;
    /// let nonce = ConfirmNonce::from_bytes([0xC3; 16]);
    /// assert_eq!(nonce.to_hex(), "c3".repeat(16));
    /// // The JSON form is the same text.
    /// assert_eq!(serde_json::to_string(&nonce)?, format!("\"{}\"", nonce.to_hex()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl Serialize for ConfirmNonce {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ConfirmNonce {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        ConfirmNonce::from_hex(&text).ok_or_else(|| serde::de::Error::custom("bad nonce"))
    }
}

/// Six decimal digits both ends of a link show under [`Confirmation::Compare`]. `Display` groups
/// them in threes ("123 456"); [`ShortCode::digits`] gives them plain.
///
/// ```
/// use lanlink::confirm::{short_code, ConfirmNonce, DisplayName};
/// use lanlink::{InstanceId, LocalSecret};
/// let id = InstanceId::from_bytes([7; 16]);
/// let commitment = LocalSecret::from_bytes([9; 32]).commitment(&id);
/// let name = DisplayName::new("alice@example.com").unwrap();
/// let code = short_code(&id, &commitment, &name, &ConfirmNonce::from_bytes([1; 16]));
/// assert_eq!(code.to_string(), "401 257");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ShortCode(u32);

impl ShortCode {
    /// The code as a number below 1 000 000.
    ///
    /// ```
    /// # use lanlink::confirm::{short_code, ConfirmNonce, DisplayName};
    /// # use lanlink::{InstanceId, LocalSecret};
    /// # let id = InstanceId::from_bytes([7; 16]);
    /// # let commitment = LocalSecret::from_bytes([9; 32]).commitment(&id);
    /// # let name = DisplayName::new("alice@example.com").unwrap();
    /// let code = short_code(&id, &commitment, &name, &ConfirmNonce::from_bytes([1; 16]));
    /// assert_eq!(code.value(), 401_257);
    /// assert!(code.value() < 1_000_000);
    /// ```
    pub fn value(self) -> u32 {
        self.0
    }

    /// The six digits, without a space ("012345").
    ///
    /// ```
    /// # use lanlink::confirm::{short_code, ConfirmNonce, DisplayName};
    /// # use lanlink::{InstanceId, LocalSecret};
    /// # let id = InstanceId::from_bytes([7; 16]);
    /// # let commitment = LocalSecret::from_bytes([9; 32]).commitment(&id);
    /// # let name = DisplayName::new("alice@example.com").unwrap();
    /// let code = short_code(&id, &commitment, &name, &ConfirmNonce::from_bytes([1; 16]));
    /// assert_eq!(code.digits(), "401257");
    /// assert_eq!(code.digits(), code.to_string().replace(' ', ""));
    /// ```
    pub fn digits(self) -> String {
        format!("{:06}", self.0)
    }
}

impl fmt::Display for ShortCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:03} {:03}", self.0 / 1000, self.0 % 1000)
    }
}

/// The short code of a link: the first 8 bytes of
/// `SHA-256("lanlink/v1/confirm\0" ‖ instance_id (16 bytes) ‖ commitment (32 bytes) ‖
/// len(display_name) (4 bytes, big-endian) ‖ display_name (UTF-8) ‖ nonce (16 bytes))`, read as a
/// big-endian `u64`, reduced mod 10^6. The reduction's bias is below 2^-44 per value
/// (2^64 mod 10^6 of the 2^64 inputs land one extra time): negligible.
///
/// A pure function: the agent, the Rust linker and `web/lanlink.js` compute it from the same
/// inputs. See the [module example](self).
///
/// ```
/// use lanlink::confirm::{short_code, ConfirmNonce, DisplayName};
/// use lanlink::{InstanceId, LocalSecret};
/// let id = InstanceId::from_bytes([7; 16]);
/// let commitment = LocalSecret::from_bytes([9; 32]).commitment(&id);
/// let name = DisplayName::new("alice@example.com").unwrap();
/// let a = short_code(&id, &commitment, &name, &ConfirmNonce::from_bytes([1; 16]));
/// // A fresh nonce gives another code (with overwhelming probability).
/// let b = short_code(&id, &commitment, &name, &ConfirmNonce::from_bytes([2; 16]));
/// assert_ne!(a, b);
/// ```
pub fn short_code(
    instance_id: &InstanceId,
    commitment: &Commitment,
    display_name: &DisplayName,
    nonce: &ConfirmNonce,
) -> ShortCode {
    let name = display_name.as_str().as_bytes();
    // Cannot fail: a display name is at most 64 bytes.
    let len = u32::try_from(name.len()).unwrap_or(u32::MAX);
    let digest = Sha256::new()
        .chain_update(SHORT_CODE_DOMAIN)
        .chain_update(instance_id.as_bytes())
        .chain_update(commitment.as_bytes())
        .chain_update(len.to_be_bytes())
        .chain_update(name)
        .chain_update(
            if crate::mutant::active(crate::mutant::Mutant::ShortCodeWithoutNonce) {
                &[0u8; 16]
            } else {
                nonce.as_bytes()
            },
        )
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // The remainder is below 10^6, so it fits a u32.
    ShortCode((u64::from_be_bytes(first) % 1_000_000) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::LocalSecret;

    fn inputs() -> (InstanceId, Commitment, DisplayName, ConfirmNonce) {
        let id = InstanceId::from_bytes([7; 16]);
        (
            id,
            LocalSecret::from_bytes([9; 32]).commitment(&id),
            DisplayName::new("alice@example.com").unwrap(),
            ConfirmNonce::from_bytes([1; 16]),
        )
    }

    #[test]
    fn every_input_changes_the_code() {
        let (id, commitment, name, nonce) = inputs();
        let base = short_code(&id, &commitment, &name, &nonce);
        let other_id = InstanceId::from_bytes([8; 16]);
        assert_ne!(short_code(&other_id, &commitment, &name, &nonce), base);
        let other_commitment = LocalSecret::from_bytes([10; 32]).commitment(&id);
        assert_ne!(short_code(&id, &other_commitment, &name, &nonce), base);
        let mallory = DisplayName::new("mallory@example.com").unwrap();
        assert_ne!(short_code(&id, &commitment, &mallory, &nonce), base);
        let other_nonce = ConfirmNonce::from_bytes([2; 16]);
        assert_ne!(short_code(&id, &commitment, &name, &other_nonce), base);
    }

    #[test]
    fn display_groups_and_pads() {
        assert_eq!(ShortCode(12).to_string(), "000 012");
        assert_eq!(ShortCode(12).digits(), "000012");
        assert_eq!(ShortCode(999_999).to_string(), "999 999");
    }

    #[test]
    fn display_name_limits() {
        assert!(DisplayName::new("x".repeat(MAX_DISPLAY_NAME_LEN)).is_some());
        assert!(DisplayName::new("a\u{200B}b").is_none());
        assert!(DisplayName::new("a\nb").is_none());
        assert!(DisplayName::new("Zoë 中 🖨").is_some());
    }

    #[test]
    fn nonce_serde() {
        let nonce = ConfirmNonce::from_bytes([0x5a; 16]);
        let json = serde_json::to_string(&nonce).unwrap();
        assert_eq!(json, format!("\"{}\"", "5a".repeat(16)));
        assert_eq!(serde_json::from_str::<ConfirmNonce>(&json).unwrap(), nonce);
        assert!(serde_json::from_str::<ConfirmNonce>("\"zz\"").is_err());
    }
}
