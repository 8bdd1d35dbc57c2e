//! Connection shares: how many connections a server serves at once for one client and for each
//! coarser prefix around it, decided by a pure function ([`ConnectionShares::admit`]) over the
//! counts the accept loop keeps (`http::serve` is one such loop; any stack can call it).
//! It must not count, accept or close a connection itself, nor touch a socket: the accept loop
//! keeps the counts and asks.
//!
//! A connection from a socket peer counts in every **group** of its address, finest first: its
//! client (the IPv4 address; for IPv6 its /64, the block one host or home usually holds; an
//! IPv4-mapped IPv6 address is its IPv4 address), then each coarser [`Level`], as the guessing
//! budgets count a guess ([`Budgets`](super::Budgets)). It is admitted only if every group has
//! room, and then counts in all of them at once; it gives all of them back at once when it
//! closes. So a home with a /56 holds at most the /56's share however many /64s it uses, and
//! the others are still served.
//!
//! ```
//! use lanlink::server::connections::ConnectionShares;
//! let shares = ConnectionShares::default();
//! let first = "2001:db8:0:100::1".parse().unwrap();
//! // One connection open in every group of that address: one more is admitted.
//! let groups = shares.admit(first, |_| 1).unwrap();
//! assert_eq!(groups.len(), 4); // its /64, /56, /48, /32
//! // Its /56 full (64 by default): refused, and the full group named.
//! let full = shares.admit(first, |group| if group.prefix_len() == 56 { 64 } else { 0 });
//! assert_eq!(full.unwrap_err().to_string(), "2001:db8:0:100::/56");
//! ```

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use smallvec::SmallVec;

use super::budget::Level;

/// The prefix length of one IPv6 client: a /64.
pub const IPV6_CLIENT_PREFIX: u8 = 64;

/// The groups of one address with their shares, finest first (at most 9: the client and 8
/// levels).
pub type Groups = SmallVec<[(IpNet, usize); 4]>;

/// How many connections one client, and each coarser prefix, may hold at once.
///
/// The client's share is `per_client`; each coarser level's is its `threshold`, raised to at
/// least `per_client` (a prefix is never stricter than one client in it). A level at least as
/// fine as the client (an IPv6 prefix longer than /64) counts at the client with the smaller of
/// the two shares. A share of 0 counts as 1.
///
/// ```
/// use lanlink::server::connections::ConnectionShares;
/// use lanlink::server::Level;
/// let shares = ConnectionShares::default();
/// assert_eq!(shares.per_client, 32);
/// assert_eq!(shares.ipv4, [Level { prefix: 24, threshold: 128 }]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionShares {
    /// Connections one client (an IPv4 address, an IPv6 /64) may hold (default 32).
    pub per_client: usize,
    /// Coarser IPv4 prefixes and their shares (default: each /24 128).
    pub ipv4: Vec<Level>,
    /// Coarser IPv6 prefixes and their shares (default: each /56 64, /48 128, /32 256).
    pub ipv6: Vec<Level>,
}

impl Default for ConnectionShares {
    /// A client 32; an IPv4 /24 128; an IPv6 /56 (one home) 64, /48 (a site) 128, /32 (a
    /// provider) 256: a quarter of a server's 512 connections for any /24 or /48, an eighth for
    /// any home's /56.
    fn default() -> Self {
        Self {
            per_client: 32,
            ipv4: vec![Level {
                prefix: 24,
                threshold: 128,
            }],
            ipv6: vec![
                Level {
                    prefix: 56,
                    threshold: 64,
                },
                Level {
                    prefix: 48,
                    threshold: 128,
                },
                Level {
                    prefix: 32,
                    threshold: 256,
                },
            ],
        }
    }
}

impl ConnectionShares {
    /// The groups a connection from `ip` counts in, finest first, each with its share: the
    /// client, then each coarser level, without duplicates (see the type's docs for how shares
    /// combine).
    ///
    /// ```
    /// use lanlink::server::connections::ConnectionShares;
    /// let groups = ConnectionShares::default().groups("::ffff:192.0.2.7".parse().unwrap());
    /// let shown: Vec<_> = groups.iter().map(|(net, share)| format!("{net} {share}")).collect();
    /// assert_eq!(shown, ["192.0.2.7/32 32", "192.0.2.0/24 128"]);
    /// ```
    pub fn groups(&self, ip: IpAddr) -> Groups {
        let per_client = self.per_client.max(1);
        let (client, levels) = match ip.to_canonical() {
            IpAddr::V4(v4) => (IpNet::V4(Ipv4Net::from(v4)), &self.ipv4),
            IpAddr::V6(v6) => {
                let net = Ipv6Net::new(v6, IPV6_CLIENT_PREFIX).map(|n| IpNet::V6(n.trunc()));
                (net.unwrap_or(IpNet::V6(Ipv6Net::from(v6))), &self.ipv6)
            }
        };
        let client_prefix = client.prefix_len();
        let share = |level: &Level| usize::try_from(level.threshold).unwrap_or(usize::MAX);
        // Levels as fine as the client lower its share; coarser ones are never below it.
        let client_share = levels
            .iter()
            .filter(|l| l.prefix >= client_prefix)
            .map(|l| share(l).max(1))
            .fold(per_client, usize::min);
        let mut coarser: SmallVec<[&Level; 8]> =
            levels.iter().filter(|l| l.prefix < client_prefix).collect();
        coarser.sort_by_key(|l| std::cmp::Reverse(l.prefix));
        let mut groups = Groups::new();
        groups.push((client, client_share));
        for level in coarser {
            let Ok(net) = IpNet::new(client.addr(), level.prefix).map(|n| n.trunc()) else {
                continue;
            };
            let share = share(level).max(client_share);
            match groups.iter_mut().find(|(n, _)| *n == net) {
                Some((_, existing)) => *existing = (*existing).min(share),
                None => groups.push((net, share)),
            }
        }
        groups
    }

    /// Whether one more connection from `ip` is admitted, given how many each group has open
    /// (`open`; 0 for a group with none): the groups to count it in (all of them, finest
    /// first), or the first group that is full. Pure: the caller counts, in one step under one
    /// lock, and gives every group back at once when the connection closes.
    pub fn admit(&self, ip: IpAddr, open: impl Fn(&IpNet) -> usize) -> Result<Groups, IpNet> {
        let groups = self.groups(ip);
        match groups.iter().find(|(net, share)| open(net) >= *share) {
            Some((full, _)) => Err(*full),
            None => Ok(groups),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::Ipv6Addr;

    use super::*;

    /// The accept loop's counting, as `http::serve` does it: admit, then count in every group.
    #[derive(Default)]
    struct Table {
        open: HashMap<IpNet, usize>,
    }

    impl Table {
        fn take(&mut self, shares: &ConnectionShares, ip: IpAddr) -> Result<Groups, IpNet> {
            let groups = shares.admit(ip, |net| self.open.get(net).copied().unwrap_or(0))?;
            for (net, _) in &groups {
                *self.open.entry(*net).or_insert(0) += 1;
            }
            Ok(groups)
        }

        fn give_back(&mut self, groups: &Groups) {
            for (net, _) in groups {
                if let Some(count) = self.open.get_mut(net) {
                    *count -= 1;
                    if *count == 0 {
                        self.open.remove(net);
                    }
                }
            }
        }
    }

    /// The `n`th /64 of the /56 `home` (0..=255), host `host`.
    fn in_home(home: u16, n: u16, host: u16) -> IpAddr {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0,
            (home << 8) | n,
            0,
            0,
            0,
            host,
        ))
    }

    #[test]
    fn sixteen_slash_64s_of_one_home_cannot_take_every_slot() {
        let shares = ConnectionShares::default();
        let total = 512;
        let mut table = Table::default();
        let mut admitted = 0;
        // Sixteen /64s of one /56, each asking for 32 connections: 512 in all, every slot.
        for n in 0..16 {
            for host in 0..32 {
                if table.take(&shares, in_home(1, n, host)).is_ok() {
                    admitted += 1;
                }
            }
        }
        assert_eq!(admitted, 64, "the home's /56 share, not the whole server");
        assert!(admitted < total);
        // Another home of the same /48 still gets in, up to the /48's share.
        let mut second = 0;
        for n in 0..16 {
            for host in 0..32 {
                if table.take(&shares, in_home(2, n, host)).is_ok() {
                    second += 1;
                }
            }
        }
        assert_eq!(second, 64);
        // The /48 (128) is now full: a third home of it is refused, naming the /48 ...
        let refused = table.take(&shares, in_home(3, 0, 1)).unwrap_err();
        assert_eq!(refused.to_string(), "2001:db8::/48");
        // ... while another /48, and IPv4 clients, are served.
        let elsewhere = "2001:db8:1::1".parse().unwrap();
        assert!(table.take(&shares, elsewhere).is_ok());
        assert!(table.take(&shares, "192.0.2.1".parse().unwrap()).is_ok());
    }

    #[test]
    fn a_client_is_capped_alone_and_groups_come_back_at_once() {
        let shares = ConnectionShares::default();
        let mut table = Table::default();
        let mut held = Vec::new();
        for host in 0..40 {
            match table.take(&shares, in_home(1, 0, host)) {
                Ok(groups) => held.push(groups),
                Err(full) => assert_eq!(full.to_string(), "2001:db8:0:100::/64"),
            }
        }
        assert_eq!(held.len(), 32, "the per-client cap");
        // Every group is counted once per connection, and all come back when it closes.
        assert_eq!(table.open.len(), 4);
        assert!(table.open.values().all(|&n| n == 32));
        let first = held.remove(0);
        table.give_back(&first);
        assert!(table.open.values().all(|&n| n == 31));
        let again = table
            .take(&shares, in_home(1, 0, 99))
            .expect("a slot came back");
        held.push(again);
        for groups in held.drain(..) {
            table.give_back(&groups);
        }
        let last = table.take(&shares, in_home(1, 0, 7)).unwrap();
        table.give_back(&last);
        table.give_back(&Groups::new());
        assert!(table.open.is_empty(), "nothing leaks: {:?}", table.open);
    }

    #[test]
    fn ipv4_addresses_of_one_slash_24_share_its_slots() {
        let shares = ConnectionShares::default();
        let mut table = Table::default();
        let mut admitted = 0;
        for host in 1..=20u8 {
            for _ in 0..32 {
                admitted += usize::from(
                    table
                        .take(&shares, IpAddr::from([198, 51, 100, host]))
                        .is_ok(),
                );
            }
        }
        assert_eq!(admitted, 128);
        assert!(table.take(&shares, "198.51.101.1".parse().unwrap()).is_ok());
        // An IPv4-mapped address is its IPv4 address: refused with the rest of its /24.
        let mapped = table.take(&shares, "::ffff:198.51.100.200".parse().unwrap());
        assert_eq!(mapped.unwrap_err().to_string(), "198.51.100.0/24");
    }

    #[test]
    fn shares_combine_finest_first_and_never_below_the_client() {
        let level = |prefix, threshold| Level { prefix, threshold };
        let shares = ConnectionShares {
            per_client: 10,
            ipv4: vec![level(16, 4), level(24, 100), level(32, 3)],
            ipv6: vec![level(96, 2), level(40, 0), level(40, 50), level(129, 1)],
        };
        let shown = |ip: &str| -> Vec<String> {
            let groups = shares.groups(ip.parse().unwrap());
            groups.iter().map(|(n, s)| format!("{n} {s}")).collect()
        };
        // The /32 level lowers the client's share; coarser ones are raised to it.
        assert_eq!(
            shown("192.0.2.9"),
            ["192.0.2.9/32 3", "192.0.2.0/24 100", "192.0.0.0/16 4"]
        );
        // Finer than /64 counts at the /64 (the smallest share); a repeated prefix keeps the
        // smaller; a prefix past 128 is at least as fine as the client.
        assert_eq!(shown("2001:db8::1"), ["2001:db8::/64 1", "2001:db8::/40 1"]);
        // A share of 0 counts as 1, never as "refuse everything".
        let zero = ConnectionShares {
            per_client: 0,
            ..ConnectionShares::default()
        };
        assert!(zero.admit("192.0.2.1".parse().unwrap(), |_| 0).is_ok());
        assert!(zero.admit("192.0.2.1".parse().unwrap(), |_| 1).is_err());
    }
}
