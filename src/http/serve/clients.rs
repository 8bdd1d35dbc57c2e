//! The per-client connection cap of [`serve()`](super::serve): connections counted per client
//! group (an IPv4 address, or an IPv6 /64) of the socket peer.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};

/// The group a socket peer's connections are counted in: an IPv4 address stands for itself
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

/// Open connections per client group, each below `limit`. Groups with no connection are
/// forgotten, so the table holds at most as many groups as there are open connections.
#[derive(Debug)]
pub(super) struct ClientSlots {
    limit: usize,
    open: Mutex<HashMap<ClientGroup, usize>>,
}

impl ClientSlots {
    pub(super) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit: limit.max(1),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for one more connection of `group`, or `None` when the group has `limit` open.
    pub(super) fn try_take(self: &Arc<Self>, group: ClientGroup) -> Option<ClientSlot> {
        let mut open = crate::lock_unpoisoned(&self.open);
        let count = open.entry(group).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            slots: Arc::clone(self),
            group,
        })
    }

    #[cfg(test)]
    fn open(&self, group: ClientGroup) -> usize {
        let open = crate::lock_unpoisoned(&self.open);
        open.get(&group).copied().unwrap_or(0)
    }

    #[cfg(test)]
    fn groups(&self) -> usize {
        crate::lock_unpoisoned(&self.open).len()
    }
}

/// One open connection of a group; gives its slot back when dropped.
#[derive(Debug)]
pub(super) struct ClientSlot {
    slots: Arc<ClientSlots>,
    group: ClientGroup,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = crate::lock_unpoisoned(&self.slots.open);
        if let Some(count) = open.get_mut(&self.group) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.group);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(ip: &str) -> ClientGroup {
        ClientGroup::of(ip.parse().unwrap())
    }

    #[test]
    fn groups_are_ipv4_addresses_and_ipv6_slash_64s() {
        assert_eq!(group("192.0.2.1"), group("::ffff:192.0.2.1"));
        assert_ne!(group("192.0.2.1"), group("192.0.2.2"));
        assert_eq!(group("2001:db8:1:2::1"), group("2001:db8:1:2:ffff::9"));
        assert_ne!(group("2001:db8:1:2::1"), group("2001:db8:1:3::1"));
        assert_eq!(group("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
        assert_eq!(group("::ffff:192.0.2.1").to_string(), "192.0.2.1");
    }

    #[test]
    fn a_group_gets_at_most_its_limit_and_slots_come_back_when_dropped() {
        let slots = ClientSlots::new(2);
        let (a, b) = (group("2001:db8::1"), group("192.0.2.1"));
        let first = slots.try_take(a).expect("first");
        let second = slots
            .try_take(group("2001:db8::2"))
            .expect("same /64, second");
        assert!(
            slots.try_take(group("2001:db8::3")).is_none(),
            "over the limit"
        );
        // Another group is not affected.
        let other = slots.try_take(b).expect("another group");
        assert_eq!((slots.open(a), slots.open(b)), (2, 1));
        drop(first);
        assert_eq!(slots.open(a), 1);
        let third = slots.try_take(a).expect("a slot came back");
        drop((second, third, other));
        assert_eq!(slots.groups(), 0, "empty groups are forgotten");
    }
}
