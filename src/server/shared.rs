//! Shared-network detection: the server judges each public network from signals it already has
//! and, when the network looks shared by several households (a carrier's NAT pool, a dormitory,
//! an office), hides auto-discovery there and refuses auto links (`shared_network`), so the
//! linking page offers the manual code instead.
//! It must not keep an account id (only short per-network hashes) or read a clock: the judgement is
//! a function of the record, the request and `now`.
//!
//! The signals ([`SharedSignal`]):
//!
//! - **many accounts**: more distinct accounts discover from the network within
//!   [`window`](SharedNetworkPolicy::window) than a household has
//!   ([`max_accounts`](SharedNetworkPolicy::max_accounts), default 4 in 10 minutes). The record
//!   keeps a bounded set ([`MAX_DISCOVERERS`]) of short per-network hashes of the accounts that
//!   discovered, never the account ids; an account is added, and the count judged, in the one
//!   store update that writes it.
//! - **many subnets**: the agents present announce more distinct private subnets (/24 for IPv4,
//!   /64 for IPv6) than [`max_subnets`](SharedNetworkPolicy::max_subnets) (default 2: a main
//!   network and a guest or IoT VLAN). Judged in the update that admits the announcement.
//! - **carrier NAT**: the network is an address in `100.64.0.0/10` (RFC 6598), which a server
//!   sees only through a trusted proxy or from inside a carrier's network (on by default).
//! - **known shared range**: the network lies in an operator's list of known shared ranges.
//! - **failures**: wrong guesses from the network filled one of its guessing budgets (the
//!   network is locked out, see [`Budgets`](super::Budgets)): strangers failing to link
//!   each other's devices is what a shared address looks like (on by default,
//!   [`failures`](SharedNetworkPolicy::failures)).
//!
//! The first two and the last are stateful and *sticky*: once tripped, the network stays shared for
//! [`sticky`](SharedNetworkPolicy::sticky) (default 10 minutes) so that it does not flap. The
//! other two are judged from the address on every request. A false positive costs convenience
//! only: the manual code works everywhere. What an attacker can trip, and what it gains (only the
//! downgrade), is in SECURITY.md ("Shared networks").

use std::net::IpAddr;

use chrono::TimeDelta;
use ipnet::{IpNet, Ipv4Net};

use crate::addr::PublicNetwork;
use crate::error::ConfigError;
pub use crate::event::vocab::SharedSignal;
use crate::id::AccountId;

/// How many recent discoverers a network record remembers (the most distinct accounts it can
/// count): [`SharedNetworkPolicy::max_accounts`] must be below it.
pub const MAX_DISCOVERERS: usize = 8;

/// When the server judges a public network shared. Set with
/// [`ServerConfig::shared_network`](super::ServerConfig::shared_network); see the
/// [module docs](self).
///
/// ```
/// use lanlink::server::{ServerConfig, SharedNetworkPolicy};
/// let policy = SharedNetworkPolicy::default()
///     .max_accounts(3)
///     .shared_ranges(vec!["198.51.100.0/24".parse().unwrap()]);
/// let config = ServerConfig::default().shared_network(policy);
/// assert!(config.validate().is_ok());
/// let bad = ServerConfig::default().shared_network(SharedNetworkPolicy::default().max_accounts(8));
/// assert!(bad.validate().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedNetworkPolicy {
    pub(crate) max_accounts: usize,
    pub(crate) window: TimeDelta,
    pub(crate) max_subnets: usize,
    pub(crate) carrier_nat: bool,
    pub(crate) shared_ranges: Vec<IpNet>,
    pub(crate) sticky: TimeDelta,
    pub(crate) failures: bool,
    pub(crate) enabled: bool,
}

impl Default for SharedNetworkPolicy {
    /// 4 accounts in 10 minutes, 2 subnets, carrier NAT and a lockout judged shared, no known
    /// ranges, sticky for 10 minutes.
    fn default() -> Self {
        Self {
            max_accounts: 4,
            window: TimeDelta::minutes(10),
            max_subnets: 2,
            carrier_nat: true,
            shared_ranges: Vec::new(),
            sticky: TimeDelta::minutes(10),
            failures: true,
            enabled: true,
        }
    }
}

impl SharedNetworkPolicy {
    /// A policy that never judges a network shared (the behaviour before revision 1.2).
    ///
    /// ```
    /// use lanlink::server::SharedNetworkPolicy;
    /// assert!(!SharedNetworkPolicy::disabled().is_enabled());
    /// ```
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            carrier_nat: false,
            failures: false,
            ..Self::default()
        }
    }

    /// Whether any signal is judged.
    ///
    /// ```
    /// use lanlink::server::SharedNetworkPolicy;
    /// assert!(SharedNetworkPolicy::default().is_enabled());
    /// assert!(!SharedNetworkPolicy::disabled().is_enabled());
    /// ```
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The most distinct accounts that may discover from one network within
    /// [`window`](Self::window) before it is judged shared (1..[`MAX_DISCOVERERS`], default 4).
    ///
    /// ```
    /// use lanlink::{server::SharedNetworkPolicy, ConfigError};
    /// assert!(SharedNetworkPolicy::default().max_accounts(2).validate().is_ok());
    /// assert_eq!(SharedNetworkPolicy::default().max_accounts(0).validate(), Err(ConfigError::SharedNetwork));
    /// ```
    pub fn max_accounts(mut self, max: usize) -> Self {
        self.max_accounts = max;
        self
    }

    /// The window in which distinct discovering accounts are counted (default 10 minutes).
    ///
    /// ```
    /// use std::time::Duration;
    /// use lanlink::{server::SharedNetworkPolicy, ConfigError};
    /// assert!(SharedNetworkPolicy::default().window(Duration::from_secs(3600)).validate().is_ok());
    /// assert_eq!(SharedNetworkPolicy::default().window(Duration::ZERO).validate(), Err(ConfigError::SharedNetwork));
    /// ```
    pub fn window(mut self, window: std::time::Duration) -> Self {
        self.window = TimeDelta::from_std(window).unwrap_or(TimeDelta::zero());
        self
    }

    /// The most distinct private subnets (/24, /64) among the agents present (default 2).
    ///
    /// ```
    /// use lanlink::{server::SharedNetworkPolicy, ConfigError};
    /// assert!(SharedNetworkPolicy::default().max_subnets(4).validate().is_ok());
    /// assert_eq!(SharedNetworkPolicy::default().max_subnets(0).validate(), Err(ConfigError::SharedNetwork));
    /// ```
    pub fn max_subnets(mut self, max: usize) -> Self {
        self.max_subnets = max;
        self
    }

    /// Whether a carrier-grade NAT address (`100.64.0.0/10`) is judged shared (default true).
    ///
    /// ```
    /// use lanlink::{server::SharedNetworkPolicy, PublicNetwork};
    /// let cgnat = PublicNetwork::from_ip("100.64.3.9".parse().unwrap(), 64);
    /// assert!(SharedNetworkPolicy::default().judge_address(&cgnat).is_some());
    /// assert!(SharedNetworkPolicy::default().carrier_nat(false).judge_address(&cgnat).is_none());
    /// ```
    pub fn carrier_nat(mut self, on: bool) -> Self {
        self.carrier_nat = on;
        self
    }

    /// Known shared ranges (a campus, a hotel, a carrier's pool): every network in them is
    /// judged shared (default none).
    ///
    /// ```
    /// use lanlink::{server::SharedNetworkPolicy, PublicNetwork};
    /// let campus = SharedNetworkPolicy::default().shared_ranges(vec!["198.51.100.0/24".parse().unwrap()]);
    /// assert!(campus.judge_address(&PublicNetwork::from_ip("198.51.100.77".parse().unwrap(), 64)).is_some());
    /// assert!(campus.judge_address(&PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64)).is_none());
    /// ```
    pub fn shared_ranges(mut self, ranges: Vec<IpNet>) -> Self {
        self.shared_ranges = ranges.iter().map(IpNet::trunc).collect();
        self
    }

    /// Whether a network whose wrong guesses filled one of its guessing budgets (a lockout) is
    /// judged shared too (default true). The lockout already refuses the network's guesses; the
    /// mark adds the hidden discovery and the reason, so the page offers the code.
    ///
    /// ```
    /// use lanlink::server::SharedNetworkPolicy;
    /// let policy = SharedNetworkPolicy::default().failures(false);
    /// assert!(policy.validate().is_ok());
    /// ```
    pub fn failures(mut self, on: bool) -> Self {
        self.failures = on;
        self
    }

    /// How long a network judged shared by a stateful signal stays shared (default 10 minutes).
    ///
    /// ```
    /// use std::time::Duration;
    /// use lanlink::{server::SharedNetworkPolicy, ConfigError};
    /// assert!(SharedNetworkPolicy::default().sticky(Duration::from_secs(60)).validate().is_ok());
    /// assert_eq!(SharedNetworkPolicy::default().sticky(Duration::ZERO).validate(), Err(ConfigError::SharedNetwork));
    /// ```
    pub fn sticky(mut self, sticky: std::time::Duration) -> Self {
        self.sticky = TimeDelta::from_std(sticky).unwrap_or(TimeDelta::zero());
        self
    }

    /// The configured known shared ranges.
    ///
    /// ```
    /// use lanlink::server::SharedNetworkPolicy;
    /// // Ranges are kept truncated to their prefix.
    /// let policy = SharedNetworkPolicy::default().shared_ranges(vec!["198.51.100.9/24".parse().unwrap()]);
    /// assert_eq!(policy.ranges(), ["198.51.100.0/24".parse::<lanlink::ipnet::IpNet>().unwrap()]);
    /// ```
    pub fn ranges(&self) -> &[IpNet] {
        &self.shared_ranges
    }

    /// Checks the policy.
    ///
    /// ```
    /// use lanlink::server::{SharedNetworkPolicy, MAX_DISCOVERERS};
    /// assert!(SharedNetworkPolicy::default().validate().is_ok());
    /// assert!(SharedNetworkPolicy::default().max_accounts(MAX_DISCOVERERS).validate().is_err());
    /// assert!(SharedNetworkPolicy::default().max_accounts(MAX_DISCOVERERS - 1).validate().is_ok());
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        let duration_ok = |d: TimeDelta| d > TimeDelta::zero() && d <= super::limits::MAX_TTL;
        if !(1..MAX_DISCOVERERS).contains(&self.max_accounts)
            || self.max_subnets == 0
            || !duration_ok(self.window)
            || !duration_ok(self.sticky)
        {
            return Err(ConfigError::SharedNetwork);
        }
        Ok(())
    }

    /// The signal a network trips by its address alone (carrier NAT, a known shared range), if
    /// any. Pure; judged on every request.
    ///
    /// ```
    /// use lanlink::server::{SharedNetworkPolicy, SharedSignal};
    /// use lanlink::PublicNetwork;
    /// let policy = SharedNetworkPolicy::default();
    /// let cgnat = PublicNetwork::from_ip("100.64.3.9".parse().unwrap(), 64);
    /// assert_eq!(policy.judge_address(&cgnat), Some(SharedSignal::CarrierNat));
    /// let home = PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64);
    /// assert_eq!(policy.judge_address(&home), None);
    /// ```
    #[inline]
    pub fn judge_address(&self, network: &PublicNetwork) -> Option<SharedSignal> {
        if !self.enabled {
            return None;
        }
        if self.carrier_nat {
            if let PublicNetwork::V4(ip) = network {
                if carrier_nat_range().contains(ip) {
                    return Some(SharedSignal::CarrierNat);
                }
            }
        }
        if self.shared_ranges.is_empty() {
            return None;
        }
        let inside = match network {
            PublicNetwork::V4(ip) => {
                let ip = IpAddr::V4(*ip);
                self.shared_ranges.iter().any(|r| r.contains(&ip))
            }
            PublicNetwork::V6(net) => {
                let net = IpNet::V6(*net);
                self.shared_ranges.iter().any(|r| r.contains(&net))
            }
        };
        inside.then_some(SharedSignal::KnownSharedRange)
    }
}

/// `100.64.0.0/10` (RFC 6598).
fn carrier_nat_range() -> Ipv4Net {
    // Cannot fail: a valid prefix length.
    Ipv4Net::new(std::net::Ipv4Addr::new(100, 64, 0, 0), 10).unwrap_or_default()
}

/// The private subnet an agent's address counts in: /24 for IPv4, /64 for IPv6.
pub(crate) fn subnet_of(ip: IpAddr) -> IpNet {
    let ip = crate::addr::canonical(ip);
    let len = if ip.is_ipv4() { 24 } else { 64 };
    // Cannot fail: the lengths fit their families.
    IpNet::new(ip, len)
        .map(|n| n.trunc())
        .unwrap_or(IpNet::from(ip))
}

/// The short hash a network record keeps of an account that discovered from it: the first 8
/// bytes of `SHA-256(tag ‖ network ‖ account)`. Salted by the network, so the same account has
/// unrelated hashes in two networks' records, and the record never holds the id itself.
pub(crate) fn discoverer_tag(network: &PublicNetwork, account: &AccountId) -> u64 {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(b"lanlink/v1/discoverer\0");
    match network {
        PublicNetwork::V4(ip) => {
            hash.update([4]);
            hash.update(ip.octets());
        }
        PublicNetwork::V6(net) => {
            hash.update([6, net.prefix_len()]);
            hash.update(net.network().octets());
        }
    }
    hash.update(account.as_str().as_bytes());
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> PublicNetwork {
        PublicNetwork::from_ip(s.parse().unwrap(), 64)
    }

    #[test]
    fn carrier_nat_signal() {
        let policy = SharedNetworkPolicy::default();
        for ip in ["100.64.0.1", "100.127.255.254"] {
            assert_eq!(
                policy.judge_address(&net(ip)),
                Some(SharedSignal::CarrierNat)
            );
        }
        for ip in [
            "100.63.255.255",
            "100.128.0.0",
            "203.0.113.7",
            "2001:db8::1",
        ] {
            assert_eq!(policy.judge_address(&net(ip)), None, "{ip}");
        }
        let off = SharedNetworkPolicy::default().carrier_nat(false);
        assert_eq!(off.judge_address(&net("100.64.0.1")), None);
        assert_eq!(
            SharedNetworkPolicy::disabled().judge_address(&net("100.64.0.1")),
            None
        );
    }

    #[test]
    fn known_shared_range_signal() {
        let policy = SharedNetworkPolicy::default().shared_ranges(vec![
            "198.51.100.0/24".parse().unwrap(),
            "2001:db8:100::/48".parse().unwrap(),
        ]);
        assert_eq!(
            policy.judge_address(&net("198.51.100.77")),
            Some(SharedSignal::KnownSharedRange)
        );
        assert_eq!(
            policy.judge_address(&net("2001:db8:100:7::1")),
            Some(SharedSignal::KnownSharedRange)
        );
        assert_eq!(policy.judge_address(&net("198.51.101.1")), None);
        assert_eq!(policy.judge_address(&net("2001:db8:101::1")), None);
        // A range finer than the IPv6 grouping does not cover the whole /64: not judged.
        let fine = SharedNetworkPolicy::default()
            .shared_ranges(vec!["2001:db8:1:2::/80".parse().unwrap()]);
        assert_eq!(fine.judge_address(&net("2001:db8:1:2::1")), None);
    }

    #[test]
    fn policy_validation() {
        assert!(SharedNetworkPolicy::default().validate().is_ok());
        for bad in [
            SharedNetworkPolicy::default().max_accounts(0),
            SharedNetworkPolicy::default().max_accounts(MAX_DISCOVERERS),
            SharedNetworkPolicy::default().max_subnets(0),
            SharedNetworkPolicy::default().window(std::time::Duration::ZERO),
            SharedNetworkPolicy::default().sticky(std::time::Duration::from_secs(400 * 86_400)),
        ] {
            assert_eq!(bad.validate(), Err(ConfigError::SharedNetwork), "{bad:?}");
        }
    }

    #[test]
    fn discoverer_tags_are_salted_by_network() {
        let alice = AccountId::new("alice").unwrap();
        let bob = AccountId::new("bob").unwrap();
        let (a, b) = (net("203.0.113.7"), net("203.0.113.8"));
        assert_eq!(discoverer_tag(&a, &alice), discoverer_tag(&a, &alice));
        assert_ne!(discoverer_tag(&a, &alice), discoverer_tag(&b, &alice));
        assert_ne!(discoverer_tag(&a, &alice), discoverer_tag(&a, &bob));
    }

    #[test]
    fn a_signal_from_a_newer_version_reads_as_other() {
        let read: SharedSignal = serde_json::from_str(r#""future_signal""#).unwrap();
        assert_eq!(read, SharedSignal::Other);
        let failures: SharedSignal = serde_json::from_str(r#""failures""#).unwrap();
        assert_eq!(failures, SharedSignal::Failures);
    }

    #[test]
    fn subnets() {
        let s = |ip: &str| subnet_of(ip.parse().unwrap()).to_string();
        assert_eq!(s("192.168.1.50"), "192.168.1.0/24");
        assert_eq!(s("::ffff:10.0.0.9"), "10.0.0.0/24");
        assert_eq!(s("fd00:1:2:3::9"), "fd00:1:2:3::/64");
    }
}
