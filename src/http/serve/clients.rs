//! The connection shares of [`serve()`](super::serve): connections counted in every group of
//! the socket peer's address — its client (an IPv4 address, an IPv6 /64) and each coarser
//! prefix — as the core's [`ConnectionShares`] decides; this file only counts, and must not
//! decide who is admitted.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use ipnet::IpNet;
use smallvec::SmallVec;

use crate::server::connections::ConnectionShares;

/// The client a socket peer's connections are logged as: an IPv4 address stands for itself
/// (an IPv4-mapped IPv6 address is its IPv4 address); IPv6 addresses group by /64, the block a
/// single host or home usually holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum ClientGroup {
    V4(Ipv4Addr),
    /// The upper 64 bits of the address.
    V6(u64),
}

impl ClientGroup {
    pub(super) fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self::V4(v4),
            IpAddr::V6(v6) => Self::V6((v6.to_bits() >> 64) as u64),
        }
    }
}

impl fmt::Display for ClientGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::V4(v4) => write!(f, "{v4}"),
            Self::V6(prefix) => write!(f, "{}/64", Ipv6Addr::from_bits(u128::from(*prefix) << 64)),
        }
    }
}

/// Why a connection got no slot: the group that was full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Full {
    /// The peer's own client group.
    Client,
    /// A coarser prefix around it.
    Prefix(IpNet),
}

/// Open connections per group. Groups with no connection are forgotten, so the table holds at
/// most a few groups per open connection.
#[derive(Debug)]
pub(super) struct ClientSlots {
    shares: ConnectionShares,
    open: Mutex<HashMap<IpNet, usize>>,
}

impl ClientSlots {
    pub(super) fn new(shares: ConnectionShares) -> Arc<Self> {
        Arc::new(Self {
            shares,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot in every group of `ip`, taken in one step; or the group that is full, and nothing
    /// taken.
    pub(super) fn try_take(self: &Arc<Self>, ip: IpAddr) -> Result<ClientSlot, Full> {
        let mut open = crate::lock_unpoisoned(&self.open);
        let admitted = self
            .shares
            .admit(ip, |group| open.get(group).copied().unwrap_or(0));
        let groups = match admitted {
            Ok(groups) => groups,
            Err(full) => {
                let client = self.shares.groups(ip).first().map(|(net, _)| *net);
                return Err(if client == Some(full) {
                    Full::Client
                } else {
                    Full::Prefix(full)
                });
            }
        };
        let groups: SmallVec<[IpNet; 4]> = groups.into_iter().map(|(net, _)| net).collect();
        for group in &groups {
            let count = open.entry(*group).or_insert(0);
            *count = count.saturating_add(1);
        }
        Ok(ClientSlot {
            slots: Arc::clone(self),
            groups,
        })
    }

    #[cfg(test)]
    fn open(&self, group: &str) -> usize {
        let open = crate::lock_unpoisoned(&self.open);
        open.get(&group.parse().unwrap()).copied().unwrap_or(0)
    }

    #[cfg(test)]
    fn groups(&self) -> usize {
        crate::lock_unpoisoned(&self.open).len()
    }
}

/// One open connection, counted in each of its groups; gives every slot back, in one step,
/// when dropped.
#[derive(Debug)]
pub(super) struct ClientSlot {
    slots: Arc<ClientSlots>,
    groups: SmallVec<[IpNet; 4]>,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = crate::lock_unpoisoned(&self.slots.open);
        for group in &self.groups {
            if let Some(count) = open.get_mut(group) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    open.remove(group);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::Level;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn group(text: &str) -> ClientGroup {
        ClientGroup::of(ip(text))
    }

    #[test]
    fn clients_are_ipv4_addresses_and_ipv6_slash_64s() {
        assert_eq!(group("192.0.2.1"), group("::ffff:192.0.2.1"));
        assert_ne!(group("192.0.2.1"), group("192.0.2.2"));
        assert_eq!(group("2001:db8:1:2::1"), group("2001:db8:1:2:ffff::9"));
        assert_ne!(group("2001:db8:1:2::1"), group("2001:db8:1:3::1"));
        assert_eq!(group("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
        assert_eq!(group("::ffff:192.0.2.1").to_string(), "192.0.2.1");
    }

    #[test]
    fn a_client_gets_at_most_its_share_and_slots_come_back_when_dropped() {
        let slots = ClientSlots::new(ConnectionShares {
            per_client: 2,
            ..ConnectionShares::default()
        });
        let first = slots.try_take(ip("2001:db8::1")).expect("first");
        let second = slots.try_take(ip("2001:db8::2")).expect("same /64, second");
        assert_eq!(slots.try_take(ip("2001:db8::3")).unwrap_err(), Full::Client);
        // Another client is not affected.
        let other = slots.try_take(ip("192.0.2.1")).expect("another client");
        assert_eq!(
            (slots.open("2001:db8::/64"), slots.open("2001:db8::/48")),
            (2, 2)
        );
        assert_eq!(slots.open("192.0.2.0/24"), 1);
        drop(first);
        assert_eq!(
            (slots.open("2001:db8::/64"), slots.open("2001:db8::/32")),
            (1, 1)
        );
        let third = slots.try_take(ip("2001:db8::4")).expect("a slot came back");
        drop((second, third, other));
        assert_eq!(slots.groups(), 0, "empty groups are forgotten");
    }

    #[test]
    fn a_full_prefix_refuses_its_other_clients_and_takes_nothing() {
        let slots = ClientSlots::new(ConnectionShares {
            per_client: 2,
            ipv4: vec![Level {
                prefix: 24,
                threshold: 3,
            }],
            ipv6: Vec::new(),
        });
        let held: Vec<_> = ["192.0.2.1", "192.0.2.1", "192.0.2.2"]
            .iter()
            .map(|a| slots.try_take(ip(a)).expect("within the /24's share"))
            .collect();
        assert_eq!(
            slots.try_take(ip("192.0.2.3")).unwrap_err(),
            Full::Prefix("192.0.2.0/24".parse().unwrap())
        );
        assert_eq!(slots.open("192.0.2.3/32"), 0, "a refusal takes nothing");
        assert!(slots.try_take(ip("192.0.3.1")).is_ok(), "another /24");
        drop(held);
        assert_eq!(slots.groups(), 0);
    }
}
