//! The event vocabulary that the state machines above define and the events name: why a linker
//! gave up, how a link was made, a code space, why a network was judged shared. Defined here,
//! below the linker and the server, so that [`crate::event`] reads nothing above it; each is
//! re-exported at its public path ([`crate::linker`], [`crate::server`]).
//! It must not depend on the linker, the server or any adapter.

use serde::{Deserialize, Serialize};

use crate::error::WireCode;
use crate::wire::HiddenReason;

/// Why fetching the secret failed.
///
/// ```
/// # use std::time::Instant;
/// # use lanlink::linker::{FetchFailure, Linker, LinkerConfig, LinkerFailure, LinkerTransmit};
/// # use lanlink::wire::{DiscoverReply, DiscoveredAgent};
/// # use lanlink::WireCode;
/// # let now = Instant::now();
/// # let mut linker = Linker::new(LinkerConfig::default(), now, &mut lanlink::os_rng());
/// # let _ = linker.poll_transmit(now);
/// # let id = lanlink::InstanceId::from_bytes([7; 16]);
/// # let agent = DiscoveredAgent::new(id, "192.168.1.50".parse()?, 8080, Default::default());
/// # linker.handle_discover_reply(now, Ok(DiscoverReply::new(vec![agent].into())))?;
/// let Some(LinkerTransmit::FetchSecret { fetch, .. }) = linker.poll_transmit(now) else { panic!() };
/// // The agent answered and said no: the attempt ends (fail closed).
/// let no = FetchFailure::Refused(WireCode::NotLocal);
/// assert_eq!(no.to_string(), "the agent refused: not_local");
/// linker.handle_secret_reply(now, fetch, Err(no.clone()))?;
/// assert_eq!(linker.failure(), Some(&LinkerFailure::Fetch(no)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FetchFailure {
    /// The agent refused, with this wire code ([`WireCode::NoCode`] for a peer that answered,
    /// but not as an agent: no code, or a reply that is not one).
    #[error("the agent refused: {0}")]
    Refused(WireCode),
    /// The agent could not be reached (not on this LAN, blocked, down).
    #[error("the agent could not be reached")]
    Unreachable,
}

/// Why the linker gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkerFailure {
    /// `give_up_after` passed.
    #[error("timed out")]
    Timeout,
    /// The agent would not hand out its secret.
    #[error("could not fetch the secret: {0}")]
    Fetch(FetchFailure),
    /// The server refused (its wire code; a code this version does not know is final too).
    #[error("the server refused: {0}")]
    Refused(WireCode),
    /// The server hides auto-discovery on this network (`shared_network`): link with a manual
    /// code instead.
    #[error("devices on this network are not shown ({}); use a code", .0.code())]
    Hidden(HiddenReason),
    /// The server lost the link (the agent never redeemed it).
    #[error("the link expired before the agent completed it")]
    LinkLost,
    /// The server refused the link request as malformed although it carried nothing newer than
    /// revision 1.0 (see [`Linker::handle_link_malformed`](crate::linker::Linker::handle_link_malformed)).
    #[error("the server refused the link request as malformed")]
    RequestMalformed,
}

/// How a link was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LinkVia {
    /// Auto-discovery: the linker fetched the agent's secret on the LAN.
    Auto,
    /// A manual code the user typed into the device.
    Manual,
    /// The Obico profile's verify route (an unmodified Obico agent).
    Obico,
}

/// A code space with budgets of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CodeSpace {
    /// Manual codes in the configured (short) format.
    Manual,
    /// Manual codes in the long fallback format, minted while the short space is suspended or
    /// full.
    Fallback,
}

impl CodeSpace {
    pub(crate) fn tag(self) -> u8 {
        match self {
            Self::Manual => 0,
            Self::Fallback => 1,
        }
    }
}

/// Why a network was judged shared. Serializes as a snake_case code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SharedSignal {
    /// More distinct accounts discovered from the network in the window than `max_accounts`.
    ManyAccounts,
    /// The agents present announce more distinct private subnets than `max_subnets`.
    ManySubnets,
    /// The network is a carrier-grade NAT address (`100.64.0.0/10`).
    CarrierNat,
    /// The network lies in an operator's list of known shared ranges.
    KnownSharedRange,
    /// Wrong guesses from the network filled one of its guessing budgets (it is locked out).
    Failures,
    /// A signal this version does not know (a mark written by a newer server instance sharing
    /// the store): still a mark, so the network stays judged shared.
    #[serde(other)]
    Other,
}

impl SharedSignal {
    /// The signal's stable snake_case code.
    ///
    /// ```
    /// assert_eq!(lanlink::server::SharedSignal::CarrierNat.code(), "carrier_nat");
    /// ```
    pub fn code(&self) -> &'static str {
        match self {
            Self::ManyAccounts => "many_accounts",
            Self::ManySubnets => "many_subnets",
            Self::CarrierNat => "carrier_nat",
            Self::KnownSharedRange => "known_shared_range",
            Self::Failures => "failures",
            Self::Other => "other",
        }
    }
}
