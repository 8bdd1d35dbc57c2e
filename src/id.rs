//! Identifiers: the agent's [`InstanceId`] and the embedder's [`AccountId`].
//! Neither is a secret, so both show in `Debug` and `Display`; neither may be trusted as proof on
//! its own: an instance id is proven by its presence key ([`crate::secret::PresenceKey`]), an
//! account id by the embedder's authentication.
//! It must not depend on anything above the vocabulary.

use std::fmt;

use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// The agent's identity for one discovery window: a random UUID v4, made afresh each time discovery
/// starts. Shown as a lowercase hyphenated UUID (`"0b3e…-…"`).
///
/// Parsing accepts only version-4, RFC 4122 variant UUIDs in the hyphenated or simple (32 hex) form.
///
/// ```
/// use lanlink::InstanceId;
/// let id = InstanceId::generate(&mut lanlink::os_rng());
/// let text = id.to_string();
/// assert_eq!(text.len(), 36);
/// assert_eq!(text.parse::<InstanceId>().unwrap(), id);
/// assert!("not-a-uuid".parse::<InstanceId>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
// Aligned, so that the records and events holding it copy it in whole words.
#[repr(align(8))]
pub struct InstanceId(Uuid);

impl InstanceId {
    /// Draws a fresh random (version 4) id from `rng`.
    ///
    /// ```
    /// use lanlink::InstanceId;
    /// let mut rng = lanlink::os_rng();
    /// let id = InstanceId::generate(&mut rng);
    /// assert_eq!(id.as_uuid().get_version_num(), 4);
    /// assert_ne!(id, InstanceId::generate(&mut rng));
    /// ```
    pub fn generate<R: CryptoRng + RngCore + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; 16];
        rng.fill_bytes(&mut bytes);
        Self::from_bytes(bytes)
    }

    /// Builds an id from 16 bytes, setting the version-4 and variant bits.
    ///
    /// ```
    /// use lanlink::InstanceId;
    /// let id = InstanceId::from_bytes([0; 16]);
    /// // The version and variant bits are set, so the id parses back.
    /// assert_eq!(id.to_string(), "00000000-0000-4000-8000-000000000000");
    /// assert_eq!(id.to_string().parse::<InstanceId>(), Ok(id));
    /// ```
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(uuid::Builder::from_random_bytes(bytes).into_uuid())
    }

    /// The 16 bytes.
    ///
    /// ```
    /// use lanlink::InstanceId;
    /// let id = InstanceId::generate(&mut lanlink::os_rng());
    /// assert_eq!(InstanceId::from_bytes(*id.as_bytes()), id);
    /// ```
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// The id as a [`Uuid`].
    ///
    /// ```
    /// use lanlink::InstanceId;
    /// let id = InstanceId::from_bytes([0x11; 16]);
    /// assert_eq!(id.as_uuid().as_bytes(), id.as_bytes());
    /// assert_eq!(id.as_uuid().hyphenated().to_string(), id.to_string());
    /// ```
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

/// Why a string is not an [`InstanceId`].
///
/// ```
/// use lanlink::{id::InstanceIdError, InstanceId};
/// // A version-1 UUID, a braced one and garbage are all refused the same way.
/// assert_eq!("c232ab00-9414-11ec-b3c8-9f6bdeced846".parse::<InstanceId>(), Err(InstanceIdError));
/// assert_eq!("{00000000-0000-4000-8000-000000000000}".parse::<InstanceId>(), Err(InstanceIdError));
/// assert_eq!(InstanceIdError.to_string(), "not a version-4 UUID");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a version-4 UUID")]
pub struct InstanceIdError;

impl std::str::FromStr for InstanceId {
    type Err = InstanceIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        // Only the two plain forms; braced and URN forms are not part of the wire.
        if text.len() != 36 && text.len() != 32 {
            return Err(InstanceIdError);
        }
        let uuid = Uuid::try_parse(text).map_err(|_| InstanceIdError)?;
        if uuid.get_version_num() != 4 || uuid.get_variant() != uuid::Variant::RFC4122 {
            return Err(InstanceIdError);
        }
        Ok(Self(uuid))
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InstanceId({})", self.0.hyphenated())
    }
}

impl Serialize for InstanceId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0.hyphenated())
    }
}

impl<'de> Deserialize<'de> for InstanceId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Maximum length of an [`AccountId`], in bytes.
pub const MAX_ACCOUNT_ID_LEN: usize = 128;

/// The embedder's identifier for a user account (opaque to lanlink; the embedder's authentication
/// decides it). At most [`MAX_ACCOUNT_ID_LEN`] bytes, no control characters.
///
/// ```
/// use lanlink::AccountId;
/// let alice = AccountId::new("alice").unwrap();
/// assert_eq!(alice.as_str(), "alice");
/// assert!(AccountId::new("").is_none());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AccountId(String);

impl AccountId {
    /// Wraps `id`; `None` if it is empty, longer than [`MAX_ACCOUNT_ID_LEN`] bytes or holds a
    /// control character.
    ///
    /// ```
    /// use lanlink::{id::MAX_ACCOUNT_ID_LEN, AccountId};
    /// assert!(AccountId::new("bob").is_some());
    /// assert!(AccountId::new("a\nb").is_none(), "a control character");
    /// assert!(AccountId::new("x".repeat(MAX_ACCOUNT_ID_LEN + 1)).is_none());
    /// ```
    pub fn new(id: impl Into<String>) -> Option<Self> {
        let id = id.into();
        let ok =
            !id.is_empty() && id.len() <= MAX_ACCOUNT_ID_LEN && !id.chars().any(char::is_control);
        ok.then_some(Self(id))
    }

    /// The id as text.
    ///
    /// ```
    /// use lanlink::AccountId;
    /// let id = AccountId::new(String::from("user-42")).unwrap();
    /// assert_eq!(id.as_str(), "user-42");
    /// assert_eq!(id.to_string(), "user-42");
    /// ```
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for AccountId {
    type Error = &'static str;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value).ok_or("invalid account id")
    }
}

impl From<AccountId> for String {
    fn from(value: AccountId) -> Self {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_v4() {
        let id = InstanceId::from_bytes([0x11; 16]);
        assert_eq!(id.as_uuid().get_version_num(), 4);
        let simple = id.as_uuid().simple().to_string();
        assert_eq!(simple.parse::<InstanceId>(), Ok(id));
        // A version-1 UUID is refused.
        assert!("c232ab00-9414-11ec-b3c8-9f6bdeced846"
            .parse::<InstanceId>()
            .is_err());
        assert!(format!("{{{id}}}").parse::<InstanceId>().is_err());
        assert!(format!("urn:uuid:{id}").parse::<InstanceId>().is_err());
    }
}
