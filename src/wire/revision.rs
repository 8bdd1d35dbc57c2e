//! The wire revision each side states (revision 1.5 and later).
//! It must not read a revision of another major as this one: such a revision parses as
//! incompatible ([`Revision::is_compatible`]) and does not decode.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::WIRE_VERSION;

/// A revision of the wire protocol, `major.minor`: the major is the [`WIRE_VERSION`], the minor
/// counts the additions made to it (PROTOCOL.md's opening lists each). On the wire it is the text
/// `"1.5"` in the `revision` field.
///
/// From revision 1.5 a server states its own revision in every reply, and a client (agent or
/// linker) states its own in every request once the server has stated 1.5 or later (a server
/// before 1.5 refuses the field: its requests are strict). A reply with no `revision` comes from
/// a server of revision 1.4 or earlier. A revision of another major is refused
/// (`400 unsupported_version`), never read as this one.
///
/// ```
/// use lanlink::wire::Revision;
/// let newer: Revision = "1.9".parse().unwrap();
/// assert!(newer > Revision::CURRENT && newer.is_compatible());
/// assert_eq!(Revision::V1_3.to_string(), "1.3");
/// assert!("2.0".parse::<Revision>().unwrap().is_compatible() == false);
/// assert!("1.x".parse::<Revision>().is_err());
/// // In JSON it is a string, and a revision of another major does not decode.
/// assert_eq!(serde_json::to_string(&Revision::V1_5).unwrap(), r#""1.5""#);
/// assert!(serde_json::from_str::<Revision>(r#""2.0""#).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    major: u16,
    minor: u16,
}

impl Revision {
    /// Revision 1.0, the first.
    pub const V1_0: Self = Self::new(1, 0);
    /// Revision 1.1: a redemption retried after a lost reply (`presence_key`, `attempt`).
    pub const V1_1: Self = Self::new(1, 1);
    /// Revision 1.2: shared-network detection (`visibility`, `hidden`), reply fields only.
    pub const V1_2: Self = Self::new(1, 2);
    /// Revision 1.3: address `candidates`.
    pub const V1_3: Self = Self::new(1, 3);
    /// Revision 1.4: confirmation at both ends (`nonce`, `display_name`).
    pub const V1_4: Self = Self::new(1, 4);
    /// Revision 1.5: each side states its `revision`.
    pub const V1_5: Self = Self::new(1, 5);
    /// Revision 1.6: held requests (`hold_ms`), so a link reaches an HTTP agent at once.
    pub const V1_6: Self = Self::new(1, 6);
    /// The revision this crate speaks.
    pub const CURRENT: Self = Self::V1_6;
    /// Every revision of major 1 this crate knows, oldest first.
    pub const ALL: [Self; 7] = [
        Self::V1_0,
        Self::V1_1,
        Self::V1_2,
        Self::V1_3,
        Self::V1_4,
        Self::V1_5,
        Self::V1_6,
    ];

    /// The revision `major.minor`.
    ///
    /// ```
    /// assert_eq!(lanlink::wire::Revision::new(1, 4), lanlink::wire::Revision::V1_4);
    /// ```
    pub const fn new(major: u16, minor: u16) -> Self {
        Self { major, minor }
    }

    /// The major (the [`WIRE_VERSION`] it belongs to).
    ///
    /// ```
    /// assert_eq!(lanlink::wire::Revision::CURRENT.major(), lanlink::wire::WIRE_VERSION);
    /// ```
    pub const fn major(&self) -> u16 {
        self.major
    }

    /// The minor.
    ///
    /// ```
    /// assert_eq!(lanlink::wire::Revision::V1_3.minor(), 3);
    /// ```
    pub const fn minor(&self) -> u16 {
        self.minor
    }

    /// Whether this crate can talk to a peer of this revision: the same major. A newer minor
    /// only adds optional fields, which each side leaves out until the other states it knows
    /// them.
    ///
    /// ```
    /// use lanlink::wire::Revision;
    /// assert!(Revision::new(1, 40).is_compatible());
    /// assert!(!Revision::new(2, 0).is_compatible());
    /// ```
    pub const fn is_compatible(&self) -> bool {
        self.major == WIRE_VERSION
    }

    /// Whether a peer that stated `stated` (or nothing: `None`, a server of 1.4 or earlier)
    /// knows what revision `self` added.
    ///
    /// ```
    /// use lanlink::wire::Revision;
    /// assert!(Revision::V1_5.known_to(Some(Revision::V1_5)));
    /// assert!(!Revision::V1_5.known_to(None));
    /// assert!(Revision::V1_4.known_to(Some(Revision::new(1, 7))));
    /// ```
    pub fn known_to(&self, stated: Option<Revision>) -> bool {
        stated.is_some_and(|peer| peer.major == self.major && peer >= *self)
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Why text is not a revision: not `major.minor` in decimal digits (at most 5 each).
///
/// ```
/// use lanlink::wire::{Revision, RevisionError};
/// assert_eq!("1.6".parse::<Revision>(), Ok(Revision::V1_6));
/// assert_eq!("1".parse::<Revision>(), Err(RevisionError));
/// assert_eq!("1.x".parse::<Revision>(), Err(RevisionError));
/// assert_eq!("1.123456".parse::<Revision>(), Err(RevisionError), "more than 5 digits");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a revision is `major.minor` in decimal digits")]
pub struct RevisionError;

impl FromStr for Revision {
    type Err = RevisionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let number = |part: &str| {
            if part.is_empty() || part.len() > 5 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(RevisionError);
            }
            part.parse::<u16>().map_err(|_| RevisionError)
        };
        let (major, minor) = text.split_once('.').ok_or(RevisionError)?;
        Ok(Self::new(number(major)?, number(minor)?))
    }
}

impl Serialize for Revision {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The prefix of the decoding error a revision of another major gives, mapped by
/// [`decode`](super::decode) to [`WireError::Version`](super::WireError::Version).
pub(super) const UNSUPPORTED: &str = "unsupported revision ";

impl<'de> Deserialize<'de> for Revision {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Revision;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a revision such as \"1.5\"")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Revision, E> {
                let revision: Revision =
                    text.parse().map_err(|_| E::custom("malformed revision"))?;
                if !revision.is_compatible() {
                    return Err(E::custom(UNSUPPORTED));
                }
                Ok(revision)
            }
        }
        d.deserialize_str(Text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_order_by_major_then_minor_and_round_trip() {
        assert!(Revision::V1_0 < Revision::V1_4 && Revision::V1_4 < Revision::new(1, 10));
        assert!(Revision::new(1, 65535) < Revision::new(2, 0));
        for revision in Revision::ALL {
            assert_eq!(revision.to_string().parse::<Revision>(), Ok(revision));
        }
        for bad in [
            "", "1", "1.", ".1", "1.2.3", "+1.2", "1.-2", "1.99999", "0001.2x", " 1.2",
        ] {
            assert!(bad.parse::<Revision>().is_err(), "{bad:?}");
        }
        assert_eq!(Revision::ALL.last(), Some(&Revision::CURRENT));
    }

    #[test]
    fn a_peer_that_states_nothing_knows_no_stated_revision() {
        assert!(!Revision::V1_0.known_to(None));
        assert!(!Revision::V1_5.known_to(Some(Revision::V1_4)));
        assert!(!Revision::V1_5.known_to(Some(Revision::new(2, 9))));
    }
}
