//! Fuzzing harnesses (feature `fuzz`): each takes the fuzzer's bytes, builds a sequence of
//! operations from them with [`arbitrary`], drives a state machine (or the whole simulator), and
//! asserts the protocol's invariants after every step. A failed assertion is a finding.
//! A harness must not read the wall clock or an unseeded RNG into a state machine, so that a
//! finding replays from its input: wall-clock time starts at a fixed timestamp, monotonic time at
//! one `Instant` taken at the start (it has no fixed value), and both move only as the input says;
//! every RNG is seeded.
//!
//! The targets in `fuzz/fuzz_targets/` are one-line calls to these functions, so the harnesses are
//! compiled and type-checked by ordinary builds (`cargo test --all-features`), as str0m does.
//! One file per harness; the decoding of the operations from the input is shared here.

use std::collections::HashMap;
#[cfg(feature = "obico-wire")]
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use chrono::{DateTime, TimeDelta, Utc};
use ipnet::IpNet;
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::addr::{ClientAddrError, ClientAddrResolver, ForwardedHeaders};
use crate::agent::{Agent, AgentConfig, AgentStatus, AgentTransmit, SecretRequest};
use crate::code::LinkCode;
use crate::confirm::{ConfirmNonce, Confirmation, Decision, DisplayName};
use crate::error::{Refusal, WireCode};
use crate::event::ServerEvent;
use crate::id::{AccountId, InstanceId};
use crate::linker::{FetchFailure, Linker, LinkerConfig, LinkerTransmit};
use crate::secret::{AuthToken, LocalSecret, PresenceKey};
use crate::server::{at_once, AtOnce, Server, ServerConfig, User};
use crate::wire::{
    self, AgentMessage, Announce, AnnounceReply, DeviceInfo, DiscoverReply, DiscoveredAgent,
    LinkRequest, LinkState, LinkStatusReply, RedeemReply, RedeemRequest, SecretReply,
};

/// Most operations read from one input.
const MAX_OPS: usize = 256;

fn ops<'a, T: Arbitrary<'a>>(data: &'a [u8]) -> Vec<T> {
    let mut u = Unstructured::new(data);
    let mut out = Vec::new();
    while out.len() < MAX_OPS && !u.is_empty() {
        match T::arbitrary(&mut u) {
            Ok(op) => out.push(op),
            Err(_) => break,
        }
    }
    out
}

mod agent;
mod client_addr;
mod decode;
mod linker;
#[cfg(feature = "obico-wire")]
mod obico;
mod server;
mod sim;
#[cfg(test)]
mod tests;

use self::agent::reference_is_local;
pub use self::agent::*;
pub use self::client_addr::*;
pub use self::decode::*;
pub use self::linker::*;
#[cfg(feature = "obico-wire")]
pub use self::obico::*;
#[cfg(feature = "obico-wire")]
use self::server::net_ip;
#[cfg(feature = "obico")]
use self::server::network_of;
pub use self::server::*;
pub use self::sim::*;
