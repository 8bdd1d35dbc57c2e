//! A code's record.
//! Pure, like every record function: no I/O, no clock (`now` is an argument); it must not hold the
//! code itself, only live under its hash ([`CodeKey`](crate::code::CodeKey)).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::addr::PublicNetwork;
use crate::code::LinkCode;
use crate::error::Refusal;
use crate::id::{AccountId, InstanceId};

/// A live code: minted for an account, optionally bound to one instance and one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeRecord {
    /// The account a redemption links to.
    pub account: AccountId,
    /// The only instance that may redeem it (auto codes).
    pub instance_id: Option<InstanceId>,
    /// The only network it may be redeemed from (auto codes).
    pub network: Option<PublicNetwork>,
    /// When it stops being valid.
    pub expires_at: DateTime<Utc>,
    /// Whether it was redeemed (single-use).
    pub redeemed: bool,
    /// The instance that redeemed it, while `redeemed`: the only one that may redeem it again
    /// after a lost reply, by proving its presence key ([`CodeRecord::redeem_by`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redeemed_by: Option<InstanceId>,
    /// Per [`kind`](Self::kind): for a link code, the newest attempt of the redeemer's that
    /// claimed the code (see [`RedeemRequest::attempt`](crate::wire::RedeemRequest::attempt)).
    /// For an [`InstanceClaim`](CodeKind::InstanceClaim), how many link requests hold the claim:
    /// 1 when created, one more for each request of the same network that joins it, one less
    /// for each that fails after joining; 0 in a claim written before holders were counted,
    /// whose holder is unknown and which is therefore never released. Unused by other kinds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub claim_attempt: u32,
    /// Whether it is a manual code.
    pub manual: bool,
    /// What the record is: a link code (the default), or another profile's code-like record.
    #[serde(default)]
    pub kind: CodeKind,
    /// Whether the mint-quota slots of this manual code were returned (its link completed): set
    /// once, by the atomic write in which [`release_quota`](Self::release_quota) says so.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quota_released: bool,
}

impl CodeRecord {
    /// Whether the code may still be redeemed at `now`.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.expires_at > now
    }

    /// Redeems the code for `instance_id` presenting from `network` (protocol step 8), marking it
    /// used. Refuses without change when any check fails.
    pub fn redeem(
        &mut self,
        now: DateTime<Utc>,
        instance_id: &InstanceId,
        network: &PublicNetwork,
    ) -> Result<(), Refusal> {
        self.redeem_by(now, instance_id, network, false, 0)
            .map(|_| ())
    }

    /// [`redeem`](Self::redeem), where `proven` says the presenter proved it is `instance_id`
    /// (its presence key) and `attempt` numbers its attempts. A proven presenter may redeem
    /// again a code that it redeemed itself, while the code is live, with an attempt newer than
    /// the one that last claimed it: the retry after a lost reply ([`Redemption::Again`]); an
    /// older or equal attempt is [`Refusal::Superseded`]. Anyone else gets
    /// [`Refusal::CodeUsed`] for a used code, as before.
    ///
    /// ```
    /// # use lanlink::server::{CodeRecord, CodeKind};
    /// # use lanlink::server::record::Redemption;
    /// # use lanlink::{AccountId, InstanceId, PublicNetwork, Refusal};
    /// # let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// let (me, other) = (InstanceId::from_bytes([1; 16]), InstanceId::from_bytes([2; 16]));
    /// let home = PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64);
    /// let mut code = CodeRecord {
    ///     account: AccountId::new("alice").unwrap(), instance_id: None, network: None,
    ///     expires_at: now + chrono::TimeDelta::minutes(10), redeemed: false, redeemed_by: None,
    ///     claim_attempt: 0, manual: true, kind: CodeKind::Link, quota_released: false,
    /// };
    /// assert_eq!(code.redeem_by(now, &me, &home, true, 1), Ok(Redemption::First));
    /// assert_eq!(code.redeem_by(now, &me, &home, true, 3), Ok(Redemption::Again));
    /// // A late duplicate of attempt 2 cannot replace attempt 3's token.
    /// assert_eq!(code.redeem_by(now, &me, &home, true, 2), Err(Refusal::Superseded));
    /// assert_eq!(code.redeem_by(now, &me, &home, false, 4), Err(Refusal::CodeUsed));
    /// assert_eq!(code.redeem_by(now, &other, &home, true, 4), Err(Refusal::CodeUsed));
    /// ```
    pub fn redeem_by(
        &mut self,
        now: DateTime<Utc>,
        instance_id: &InstanceId,
        network: &PublicNetwork,
        proven: bool,
        attempt: u32,
    ) -> Result<Redemption, Refusal> {
        if !self.is_live(now) || !matches!(self.kind, CodeKind::Link) {
            return Err(Refusal::UnknownCode);
        }
        if self.instance_id.is_some_and(|id| id != *instance_id) {
            return Err(Refusal::CodeWrongAgent);
        }
        if self.network.is_some_and(|n| n != *network) {
            return Err(Refusal::CodeWrongNetwork);
        }
        if self.redeemed && !crate::mutant::active(crate::mutant::Mutant::UsedCodeAccepted) {
            if !proven || self.redeemed_by != Some(*instance_id) {
                return Err(Refusal::CodeUsed);
            }
            if attempt <= self.claim_attempt {
                return Err(Refusal::Superseded);
            }
            self.claim_attempt = attempt;
            return Ok(Redemption::Again);
        }
        self.redeemed = true;
        self.redeemed_by = Some(*instance_id);
        self.claim_attempt = attempt;
        Ok(Redemption::First)
    }

    /// Marks the mint-quota slots of a redeemed manual code returned, when a link redeemed with
    /// it completed (its life is over). `true` for the one call that marked them (its caller
    /// returns the slots), `false` for a code that holds none (an auto code), that is not
    /// redeemed, or whose slots were already returned: so they are returned exactly once,
    /// whichever attempt or instance completes the link, however often.
    ///
    /// ```
    /// # use lanlink::server::{CodeRecord, CodeKind};
    /// # use lanlink::{AccountId, InstanceId, PublicNetwork};
    /// # let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// # let me = InstanceId::from_bytes([1; 16]);
    /// # let home = PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64);
    /// # let mut code = CodeRecord {
    /// #     account: AccountId::new("alice").unwrap(), instance_id: None, network: None,
    /// #     expires_at: now + chrono::TimeDelta::minutes(10), redeemed: false, redeemed_by: None,
    /// #     claim_attempt: 0, manual: true, kind: CodeKind::Link, quota_released: false,
    /// # };
    /// assert!(!code.release_quota(), "not redeemed: still live, still holds its slots");
    /// code.redeem_by(now, &me, &home, true, 1).unwrap();
    /// code.redeem_by(now, &me, &home, true, 2).unwrap(); // a retry after a lost reply
    /// assert!(code.release_quota(), "the first completion returns them");
    /// assert!(!code.release_quota(), "the second does not");
    /// ```
    pub fn release_quota(&mut self) -> bool {
        if !self.manual || !self.redeemed || self.quota_released {
            return false;
        }
        self.quota_released = true;
        true
    }

    /// Gives back a code that attempt `attempt` of `instance_id` claimed by
    /// [`redeem_by`](Self::redeem_by) (its link could not be completed), so that the agent's
    /// retry redeems it. Only that very claim is undone: if a newer attempt of the agent has
    /// claimed the code since (and may be completing its link), nothing changes, so a code can
    /// never be left redeemable beside a completed link. Returns whether it was given back.
    ///
    /// ```
    /// # use lanlink::server::{CodeRecord, CodeKind};
    /// # use lanlink::{AccountId, InstanceId, PublicNetwork};
    /// # let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// # let me = InstanceId::from_bytes([1; 16]);
    /// # let home = PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64);
    /// # let mut code = CodeRecord {
    /// #     account: AccountId::new("alice").unwrap(), instance_id: None, network: None,
    /// #     expires_at: now + chrono::TimeDelta::minutes(10), redeemed: false, redeemed_by: None,
    /// #     claim_attempt: 0, manual: true, kind: CodeKind::Link, quota_released: false,
    /// # };
    /// code.redeem_by(now, &me, &home, true, 1).unwrap();
    /// code.redeem_by(now, &me, &home, true, 2).unwrap(); // a retry claimed it meanwhile
    /// assert!(!code.give_back(&me, 1), "attempt 1 may not undo attempt 2's claim");
    /// assert!(code.redeemed);
    /// assert!(code.give_back(&me, 2));
    /// assert!(!code.redeemed);
    /// ```
    pub fn give_back(&mut self, instance_id: &InstanceId, attempt: u32) -> bool {
        if !self.redeemed || self.redeemed_by != Some(*instance_id) || self.claim_attempt != attempt
        {
            return false;
        }
        self.redeemed = false;
        self.redeemed_by = None;
        self.claim_attempt = 0;
        true
    }
}

/// The holders of an [`InstanceClaim`](CodeKind::InstanceClaim), counted in
/// [`claim_attempt`](CodeRecord::claim_attempt).
impl CodeRecord {
    /// Joins the instance claim of `network`: counts one more holder and returns the claim's
    /// expiry, which names this claim among any that ever hold its key (see
    /// [`release_claim`](Self::release_claim)); `None`, changing nothing, when the record is not
    /// a claim of `network`'s. A claim whose holder count is unknown (0: written before holders
    /// were counted) counts that holder as one that never lets go, so the count goes to 2 and
    /// the joiner's release can never free it.
    pub(crate) fn join_claim(&mut self, network: &PublicNetwork) -> Option<DateTime<Utc>> {
        if !matches!(self.kind, CodeKind::InstanceClaim) || self.network != Some(*network) {
            return None;
        }
        self.claim_attempt = match self.claim_attempt {
            0 => 2,
            holders => holders.saturating_add(1),
        };
        Some(self.expires_at)
    }

    /// Lets go of a hold on the instance claim of `network` whose expiry was `held` (the hold
    /// of a link request that failed after claiming): one holder fewer, and when none is left
    /// the claim ends at `now` (a store then drops it as expired). Changes nothing, returning
    /// `false`, unless the record is that very claim (a claim that lapsed and was created
    /// again has another expiry: its holders are not this request's to release), or when its
    /// count cannot be trusted: 0 (a legacy claim, see [`join_claim`](Self::join_claim)) or
    /// saturated (a hold may have gone uncounted). Returns whether the claim ended.
    pub(crate) fn release_claim(
        &mut self,
        now: DateTime<Utc>,
        network: &PublicNetwork,
        held: DateTime<Utc>,
    ) -> bool {
        if !matches!(self.kind, CodeKind::InstanceClaim)
            || self.network != Some(*network)
            || self.expires_at != held
            || matches!(self.claim_attempt, 0 | u32::MAX)
        {
            return false;
        }
        self.claim_attempt -= 1;
        if self.claim_attempt > 0 {
            return false;
        }
        self.expires_at = now;
        true
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What [`CodeRecord::redeem_by`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redemption {
    /// The code was unused and is now redeemed.
    First,
    /// The code was already redeemed by the same, proven instance: a retry after a lost reply.
    Again,
}

/// What a [`CodeRecord`] stands for. Only [`CodeKind::Link`] records can be redeemed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CodeKind {
    /// A link code (manual or auto), redeemed by an agent for a token.
    #[default]
    Link,
    /// A one-time passcode shown by an Obico agent (feature `obico`, `crate::obico`): never
    /// redeemable. Its `instance_id` and `network` are the showing agent's; `redeemed` means a
    /// user claimed it, and `account` is that user (a placeholder before). Boxed, so that link
    /// code records grow by one pointer only.
    ObicoPasscode(Box<ObicoPasscode>),
    /// An instance's link claim, under [`CodeKey::instance_claim`](crate::code::CodeKey::instance_claim):
    /// the first link request that passed every check for the instance, in any network, writes it
    /// (create-if-absent, one atomic step) before it accepts the link, and a link request for the
    /// instance from any other network is refused while it lives (`409 already_linking`). An agent
    /// announcing over IPv4 and IPv6 is present in two networks; this makes its secret good for
    /// one link in all of them. Its `network` and `instance_id` are the claimant's; never
    /// redeemable. Concurrent requests of the claimant's network share it, counted in
    /// [`claim_attempt`](CodeRecord::claim_attempt): a request that fails after claiming lets go
    /// of its hold, and the claim ends when no request holds it; an accepted link keeps its
    /// hold, so the claim then lives its full time.
    InstanceClaim,
}

/// A link code is stored as `"link"`; an Obico passcode as `{"obico_passcode": {"v": …}}`, with
/// the code it holds for the agent (if any). A shared store encrypts every record whole (see
/// `Records`, feature `shared-store`), so the held code is never at rest in the clear.
impl Serialize for CodeKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Link => serializer.serialize_unit_variant("CodeKind", 0, "link"),
            Self::InstanceClaim => {
                serializer.serialize_unit_variant("CodeKind", 2, "instance_claim")
            }
            Self::ObicoPasscode(state) => {
                use serde::ser::SerializeMap;
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("obico_passcode", &StoredPasscode::of(state))?;
                map.end()
            }
        }
    }
}

/// An [`ObicoPasscode`] as stored.
#[derive(Serialize, Deserialize)]
struct StoredPasscode {
    #[serde(rename = "v", default, with = "held_code")]
    verification: Option<LinkCode>,
}

impl StoredPasscode {
    fn of(state: &ObicoPasscode) -> Self {
        Self {
            verification: state.verification.clone(),
        }
    }
}

/// An optional held code (serde `with` helper).
mod held_code {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::code::LinkCode;

    pub fn serialize<S: Serializer>(code: &Option<LinkCode>, s: S) -> Result<S::Ok, S::Error> {
        match code {
            Some(code) => s.serialize_some(code.expose()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<LinkCode>, D::Error> {
        let text: Option<zeroize::Zeroizing<String>> =
            Option::<String>::deserialize(d)?.map(zeroize::Zeroizing::new);
        match text {
            None => Ok(None),
            Some(text) => LinkCode::parse(&text)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom("bad code")),
        }
    }
}

/// Reads back what [`Serialize`] writes (no buffering: a held code is read straight into its
/// place).
impl<'de> Deserialize<'de> for CodeKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Kind;
        impl<'de> serde::de::Visitor<'de> for Kind {
            type Value = CodeKind;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"link\", \"instance_claim\" or an Obico passcode")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<CodeKind, E> {
                match text {
                    "link" => Ok(CodeKind::Link),
                    "instance_claim" => Ok(CodeKind::InstanceClaim),
                    other => Err(E::unknown_variant(
                        other,
                        &["link", "instance_claim", "obico_passcode"],
                    )),
                }
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<CodeKind, A::Error> {
                let mut kind = None;
                while let Some(key) = map.next_key::<std::borrow::Cow<'_, str>>()? {
                    if key != "obico_passcode" || kind.is_some() {
                        return Err(serde::de::Error::unknown_field(&key, &["obico_passcode"]));
                    }
                    let stored: StoredPasscode = map.next_value()?;
                    kind = Some(CodeKind::ObicoPasscode(Box::new(ObicoPasscode {
                        verification: stored.verification,
                    })));
                }
                kind.ok_or_else(|| serde::de::Error::missing_field("obico_passcode"))
            }
        }
        deserializer.deserialize_any(Kind)
    }
}

/// The state of an Obico one-time passcode (see [`CodeKind::ObicoPasscode`]).
#[derive(Clone, Default)]
pub struct ObicoPasscode {
    /// The code minted for the claiming user, bound to the agent's network, held in the clear
    /// only until the agent's next poll takes it (as a queued auto code is).
    pub verification: Option<LinkCode>,
}

impl ObicoPasscode {
    fn held(&self) -> Option<&str> {
        self.verification.as_ref().map(LinkCode::expose)
    }
}

impl PartialEq for ObicoPasscode {
    fn eq(&self, other: &Self) -> bool {
        match (self.held(), other.held()) {
            (Some(a), Some(b)) => {
                a.len() == b.len()
                    && bool::from(subtle::ConstantTimeEq::ct_eq(a.as_bytes(), b.as_bytes()))
            }
            (None, None) => true,
            _ => false,
        }
    }
}

impl Eq for ObicoPasscode {}

impl std::fmt::Debug for ObicoPasscode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObicoPasscode")
            .field("verification_held", &self.verification.is_some())
            .finish()
    }
}
