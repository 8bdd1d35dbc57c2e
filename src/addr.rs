// (885 lines, 279 of them docs and doc examples: one concern, because it is the address rules (private, announceable, public networks, forwarded headers) that every party reads together.)
//! Addresses: who is asking ([`ClientAddrResolver`]), which public network they are on
//! ([`PublicNetwork`]), and whether an address is on the local network ([`LocalPolicy`]).
//! Pure functions of the addresses and header lines they are given: this module must not open a
//! socket, look a name up or read a clock, and must not take a forwarding header's word from a peer
//! the embedder did not name as a proxy.
//!
//! The resolver is the fix for the 2021 Obico incident: the client address is the socket peer unless
//! that peer is a proxy the embedder said to trust, and when a trusted proxy does not say who its
//! client was, the request is refused rather than attributed to the proxy.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

/// Most hops read from forwarding headers; a longer chain is refused.
pub const MAX_FORWARDED_HOPS: usize = 32;

/// Normalizes an address: an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) becomes the IPv4 address.
///
/// ```
/// use lanlink::addr::canonical;
/// use std::net::IpAddr;
/// let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
/// assert_eq!(canonical(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
/// let v6: IpAddr = "2001:db8::1".parse().unwrap();
/// assert_eq!(canonical(v6), v6);
/// ```
#[inline]
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// The forwarding headers of one request, each header line in the order received.
///
/// Give every `Forwarded` line and every `X-Forwarded-For` line; the resolver reads them only when
/// the socket peer is a trusted proxy.
///
/// ```
/// use lanlink::{ClientAddrResolver, ForwardedHeaders};
/// let proxy = ClientAddrResolver::new(vec!["10.0.0.0/8".parse().unwrap()]);
/// let headers = ForwardedHeaders { forwarded: &["for=198.51.100.4;proto=https"], x_forwarded_for: &[] };
/// assert_eq!(proxy.resolve("10.1.1.1".parse().unwrap(), headers), Ok("198.51.100.4".parse().unwrap()));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct ForwardedHeaders<'a> {
    /// Values of the `Forwarded` header (RFC 7239), one per header line.
    pub forwarded: &'a [&'a str],
    /// Values of the `X-Forwarded-For` header, one per header line.
    pub x_forwarded_for: &'a [&'a str],
}

impl ForwardedHeaders<'_> {
    /// No forwarding headers.
    pub const NONE: ForwardedHeaders<'static> = ForwardedHeaders {
        forwarded: &[],
        x_forwarded_for: &[],
    };
}

/// Why a client address could not be resolved. Each is a refusal: the request must not proceed.
///
/// ```
/// use lanlink::{ClientAddrError, ClientAddrResolver, ForwardedHeaders};
/// let proxy = ClientAddrResolver::new(vec!["10.0.0.0/8".parse().unwrap()]);
/// let peer = "10.0.0.2".parse().unwrap();
/// assert_eq!(proxy.resolve(peer, ForwardedHeaders::NONE), Err(ClientAddrError::MissingForwarded));
/// let both = ForwardedHeaders { forwarded: &["for=1.2.3.4"], x_forwarded_for: &["5.6.7.8"] };
/// assert_eq!(proxy.resolve(peer, both), Err(ClientAddrError::AmbiguousHeaders));
/// let junk = ForwardedHeaders { forwarded: &["for=unknown"], x_forwarded_for: &[] };
/// assert_eq!(proxy.resolve(peer, junk), Err(ClientAddrError::UnparsableHop));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientAddrError {
    /// The peer is a trusted proxy but sent no forwarding header: the client is unknown.
    #[error("a trusted proxy sent no forwarding header")]
    MissingForwarded,
    /// A hop in the forwarding headers is not an IP address (`unknown`, an obfuscated name, junk).
    #[error("a forwarding hop is not an IP address")]
    UnparsableHop,
    /// Every hop in the chain is a trusted proxy: there is no client address to take.
    #[error("every forwarding hop is a trusted proxy")]
    OnlyTrustedHops,
    /// More than [`MAX_FORWARDED_HOPS`] hops.
    #[error("too many forwarding hops")]
    TooManyHops,
    /// Both `Forwarded` and `X-Forwarded-For` arrived. A proxy writes one of them; the other came
    /// from the client, and which is which cannot be told, so neither is believed.
    #[error("both Forwarded and X-Forwarded-For are present")]
    AmbiguousHeaders,
}

/// Resolves the client's address from the socket peer and the trusted-proxy list.
///
/// Start from the socket peer; only if it is in the trusted set, read the forwarding header —
/// `Forwarded` or `X-Forwarded-For`, whichever is present — right to left, skipping trusted hops,
/// and take the first untrusted one. A request carrying both is refused
/// ([`ClientAddrError::AmbiguousHeaders`]): a trusted proxy writes one kind, so the other kind
/// came from the client, and a resolver that preferred it would let the client choose its own
/// address. IPv4-mapped IPv6 addresses are normalized throughout.
///
/// ```
/// use lanlink::{ClientAddrResolver, ForwardedHeaders};
/// let none = ClientAddrResolver::default();
/// let peer = "203.0.113.9".parse().unwrap();
/// let spoof = ForwardedHeaders { forwarded: &[], x_forwarded_for: &["192.168.1.5"] };
/// // An untrusted peer's headers are ignored.
/// assert_eq!(none.resolve(peer, spoof), Ok(peer));
///
/// let lb = ClientAddrResolver::new(vec!["10.0.0.0/8".parse().unwrap()]);
/// let hdr = ForwardedHeaders { forwarded: &[], x_forwarded_for: &["1.2.3.4, 198.51.100.7, 10.0.0.3"] };
/// assert_eq!(lb.resolve("10.0.0.2".parse().unwrap(), hdr), Ok("198.51.100.7".parse().unwrap()));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientAddrResolver {
    trusted: Vec<IpNet>,
}

impl ClientAddrResolver {
    /// A resolver that trusts the given proxy networks (empty: trust no forwarding header).
    ///
    /// ```
    /// use lanlink::ClientAddrResolver;
    /// // A proxy range written as IPv4-mapped IPv6 is kept as the IPv4 range it denotes.
    /// let r = ClientAddrResolver::new(vec!["::ffff:10.0.0.0/104".parse().unwrap()]);
    /// assert_eq!(r.trusted_proxies(), &["10.0.0.0/8".parse().unwrap()]);
    /// assert!(r.is_trusted("10.9.9.9".parse().unwrap()));
    /// ```
    pub fn new(trusted_proxies: Vec<IpNet>) -> Self {
        let trusted = trusted_proxies
            .into_iter()
            .map(|net| match net {
                // A mapped-v6 proxy range is stored as the IPv4 range it denotes.
                IpNet::V6(v6) => match v6.addr().to_ipv4_mapped() {
                    Some(v4) if v6.prefix_len() >= 96 => {
                        Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4)
                    }
                    _ => net,
                },
                IpNet::V4(_) => net,
            })
            .collect();
        Self { trusted }
    }

    /// The trusted proxy networks.
    ///
    /// ```
    /// use lanlink::ClientAddrResolver;
    /// assert!(ClientAddrResolver::default().trusted_proxies().is_empty());
    /// let r = ClientAddrResolver::new(vec!["192.0.2.0/24".parse().unwrap()]);
    /// assert_eq!(r.trusted_proxies().len(), 1);
    /// ```
    pub fn trusted_proxies(&self) -> &[IpNet] {
        &self.trusted
    }

    /// Whether `ip` is a trusted proxy.
    ///
    /// ```
    /// use lanlink::ClientAddrResolver;
    /// let r = ClientAddrResolver::new(vec!["192.0.2.0/24".parse().unwrap()]);
    /// assert!(r.is_trusted("192.0.2.10".parse().unwrap()));
    /// assert!(r.is_trusted("::ffff:192.0.2.10".parse().unwrap()), "normalized first");
    /// assert!(!r.is_trusted("198.51.100.1".parse().unwrap()));
    /// ```
    #[inline]
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusts(canonical(ip))
    }

    /// Whether an already canonical `ip` is a trusted proxy.
    #[inline]
    fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client address of a request whose socket peer is `peer`.
    ///
    /// ```
    /// use lanlink::{ClientAddrError, ClientAddrResolver, ForwardedHeaders};
    /// let r = ClientAddrResolver::new(vec!["10.0.0.0/8".parse().unwrap()]);
    /// // Every hop trusted: there is no client to name.
    /// let inner = ForwardedHeaders { forwarded: &[], x_forwarded_for: &["10.0.0.7"] };
    /// assert_eq!(r.resolve("10.0.0.1".parse().unwrap(), inner), Err(ClientAddrError::OnlyTrustedHops));
    /// ```
    #[inline]
    pub fn resolve(
        &self,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
    ) -> Result<IpAddr, ClientAddrError> {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return Ok(peer);
        }
        let has_forwarded = headers.forwarded.iter().any(|l| !l.trim().is_empty());
        let has_xff = headers.x_forwarded_for.iter().any(|l| !l.trim().is_empty());
        let hops = match (has_forwarded, has_xff) {
            (true, true) => return Err(ClientAddrError::AmbiguousHeaders),
            (true, false) => parse_forwarded(headers.forwarded)?,
            (false, true) => parse_x_forwarded_for(headers.x_forwarded_for)?,
            (false, false) => return Err(ClientAddrError::MissingForwarded),
        };
        for hop in hops.iter().rev() {
            let ip = hop.ok_or(ClientAddrError::UnparsableHop)?;
            if !self.is_trusted(ip) {
                return Ok(ip);
            }
        }
        Err(ClientAddrError::OnlyTrustedHops)
    }
}

/// Splits header lines into comma-separated elements, bounded by [`MAX_FORWARDED_HOPS`].
fn elements<'a>(lines: &[&'a str]) -> Result<Vec<&'a str>, ClientAddrError> {
    let mut out = Vec::new();
    for line in lines {
        for element in split_unquoted(line, ',') {
            if out.len() == MAX_FORWARDED_HOPS {
                return Err(ClientAddrError::TooManyHops);
            }
            out.push(element.trim());
        }
    }
    Ok(out)
}

/// Splits on `sep` outside double quotes.
fn split_unquoted(text: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            parts.push(&text[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&text[start..]);
    parts
}

/// Each hop of RFC 7239 `Forwarded` lines: `Some(ip)` for an address, `None` for a hop without a
/// usable `for=` (missing, `unknown`, obfuscated).
fn parse_forwarded(lines: &[&str]) -> Result<Vec<Option<IpAddr>>, ClientAddrError> {
    Ok(elements(lines)?
        .into_iter()
        .map(|element| {
            let mut found = None;
            for pair in split_unquoted(element, ';') {
                let Some((name, value)) = pair.split_once('=') else {
                    continue;
                };
                if name.trim().eq_ignore_ascii_case("for") {
                    if found.is_some() {
                        // Two `for` parameters in one element: ambiguous, treat as unusable.
                        return None;
                    }
                    found = Some(value.trim());
                }
            }
            let value = found?;
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            parse_node(value)
        })
        .collect())
}

/// Each hop of `X-Forwarded-For` lines.
fn parse_x_forwarded_for(lines: &[&str]) -> Result<Vec<Option<IpAddr>>, ClientAddrError> {
    Ok(elements(lines)?.into_iter().map(parse_node).collect())
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]`,
/// `[2001:db8::1]:80`.
fn parse_node(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sock) = text.parse::<SocketAddr>() {
        return Some(canonical(sock.ip()));
    }
    let inner = text.strip_prefix('[')?.strip_suffix(']')?;
    inner
        .parse::<Ipv6Addr>()
        .ok()
        .map(|ip| canonical(ip.into()))
}

/// The NAT64 well-known prefix, `64:ff9b::/96` (RFC 6052 §2.1). A client address in it is an
/// IPv4 client reached through a NAT64 or SIIT translator; [`PublicNetwork::from_ip`] maps it back
/// to that IPv4 address.
pub const NAT64_WELL_KNOWN_PREFIX: Ipv6Net =
    Ipv6Net::new_assert(Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96);

/// The prefix lengths RFC 6052 §2.2 defines for IPv4-embedded IPv6 addresses.
pub const NAT64_PREFIX_LENGTHS: [u8; 6] = [32, 40, 48, 56, 64, 96];

/// The IPv4 address embedded in `ip` under the NAT64/SIIT `prefix` (RFC 6052 §2.2): `None` unless
/// `ip` is in `prefix` and the prefix length is one of [`NAT64_PREFIX_LENGTHS`].
///
/// The 32 address bits follow the prefix, skipping bits 64–71 (the "u" octet, which carries none);
/// the u octet and the suffix are not read, so no value a translator writes there can split one
/// IPv4 client into several networks or merge several into one.
///
/// ```
/// use lanlink::addr::{nat64_embedded, NAT64_WELL_KNOWN_PREFIX};
/// let wkp = NAT64_WELL_KNOWN_PREFIX;
/// let ip = "64:ff9b::203.0.113.7".parse().unwrap();
/// assert_eq!(nat64_embedded(ip, &wkp), Some("203.0.113.7".parse().unwrap()));
/// // RFC 6052's example for a /48 prefix: 192.0.2.33 in 2001:db8:122:c000:2:2100::.
/// let nsp = "2001:db8:122::/48".parse().unwrap();
/// let ip = "2001:db8:122:c000:2:2100::".parse().unwrap();
/// assert_eq!(nat64_embedded(ip, &nsp), Some("192.0.2.33".parse().unwrap()));
/// assert_eq!(nat64_embedded("2001:db8::1".parse().unwrap(), &wkp), None);
/// ```
pub fn nat64_embedded(ip: Ipv6Addr, prefix: &Ipv6Net) -> Option<Ipv4Addr> {
    if !NAT64_PREFIX_LENGTHS.contains(&prefix.prefix_len()) || !prefix.contains(&ip) {
        return None;
    }
    let octets = ip.octets();
    let mut at = usize::from(prefix.prefix_len() / 8);
    let mut v4 = [0u8; 4];
    for byte in &mut v4 {
        if at == 8 {
            at += 1;
        }
        // Cannot miss: a /96 reads octets 12 to 15, shorter prefixes end earlier.
        *byte = octets.get(at).copied().unwrap_or(0);
        at += 1;
    }
    Some(Ipv4Addr::from(v4))
}

/// The fixed ranges whose addresses [`ipv4_embedded`] reads as an IPv4 client, besides the NAT64
/// well-known prefix: IPv4-mapped `::ffff:0:0/96`, IPv4-translated `::ffff:0:0:0/96`,
/// IPv4-compatible `::/96` and Teredo `2001::/32`. A configured NAT64 prefix may not overlap them
/// ([`ServerConfig::nat64_prefixes`](crate::server::ServerConfig::nat64_prefixes)).
pub const IPV4_EMBEDDING_RANGES: [Ipv6Net; 4] = [
    Ipv6Net::new_assert(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96),
    Ipv6Net::new_assert(Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, 0, 0), 96),
    Ipv6Net::new_assert(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 96),
    Ipv6Net::new_assert(Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 32),
];

/// The IPv4 address that an IPv6 address of one of the fixed IPv4-embedding forms stands for,
/// forms in which every IPv4 client of a translator or relay would otherwise share one /64:
///
/// - IPv4-mapped, `::ffff:a.b.c.d` (RFC 4291 §2.5.5.2);
/// - IPv4-translated, `::ffff:0:a.b.c.d` (SIIT, RFC 2765 §2.1);
/// - IPv4-compatible, `::a.b.c.d` (deprecated by RFC 4291 §2.5.5.1), but not `::` or `::1`;
/// - Teredo, `2001:0::/32` (RFC 4380 §4): the client's public address, stored inverted in the
///   last 32 bits (the /64 would otherwise be the Teredo server's, shared by all its clients);
/// - the NAT64 well-known prefix `64:ff9b::/96` (RFC 6052), see [`nat64_embedded`].
///
/// ```
/// use lanlink::addr::ipv4_embedded;
/// let client = Some("203.0.113.7".parse().unwrap());
/// assert_eq!(ipv4_embedded("::ffff:203.0.113.7".parse().unwrap()), client);
/// assert_eq!(ipv4_embedded("::ffff:0:203.0.113.7".parse().unwrap()), client);
/// assert_eq!(ipv4_embedded("::203.0.113.7".parse().unwrap()), client);
/// assert_eq!(ipv4_embedded("64:ff9b::203.0.113.7".parse().unwrap()), client);
/// // Teredo: server 65.54.227.120, client 192.0.2.45 (RFC 4380 §4's layout; the client
/// // address inverted).
/// assert_eq!(
///     ipv4_embedded("2001:0:4136:e378:8000:63bf:3fff:fdd2".parse().unwrap()),
///     Some("192.0.2.45".parse().unwrap())
/// );
/// assert_eq!(ipv4_embedded("::1".parse().unwrap()), None);
/// assert_eq!(ipv4_embedded("2001:db8::1".parse().unwrap()), None);
/// ```
pub fn ipv4_embedded(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0xffff, 0, _, _] => Some(low),
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => None,
        [0, 0, 0, 0, 0, 0, _, _] => Some(low),
        [0x2001, 0, _, _, _, _, _, _] => Some(Ipv4Addr::from(!u32::from(low))),
        _ => nat64_embedded(ip, &NAT64_WELL_KNOWN_PREFIX),
    }
}

/// The public network a caller is on: the key under which the server groups announcements.
///
/// An IPv4 address stands for itself; an IPv6 address is grouped by its prefix (/64 by default),
/// because one home's devices use many addresses of one prefix. An address of a form that
/// embeds an IPv4 client ([`ipv4_embedded`]: mapped, SIIT-translated, compatible, Teredo, the
/// NAT64 well-known prefix, and any NAT64 prefix configured with
/// [`from_ip_nat64`](Self::from_ip_nat64)) stands for the IPv4 client it embeds: otherwise every
/// IPv4 user of the translator or relay would share one /64.
///
/// ```
/// use lanlink::PublicNetwork;
/// let a = PublicNetwork::from_ip("2001:db8:1:2::10".parse().unwrap(), 64);
/// let b = PublicNetwork::from_ip("2001:db8:1:2:aaaa::1".parse().unwrap(), 64);
/// assert_eq!(a, b);
/// let v4 = PublicNetwork::from_ip("::ffff:203.0.113.7".parse().unwrap(), 64);
/// assert_eq!(v4.to_string(), "203.0.113.7");
/// let nat64 = PublicNetwork::from_ip("64:ff9b::203.0.113.7".parse().unwrap(), 64);
/// assert_eq!(nat64, v4);
/// let siit = PublicNetwork::from_ip("::ffff:0:203.0.113.7".parse().unwrap(), 64);
/// assert_eq!(siit, v4);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
// Aligned (24 bytes, not 18 at any offset): the server copies this key into every event and
// store call, and odd-offset partial copies stall the CPU's store forwarding.
#[repr(align(8))]
pub enum PublicNetwork {
    /// An IPv4 address.
    V4(Ipv4Addr),
    /// An IPv6 prefix.
    V6(Ipv6Net),
}

impl PublicNetwork {
    /// The network of `ip`, grouping IPv6 by `v6_prefix` bits (clamped to 0..=128), an address of
    /// a form that embeds an IPv4 client ([`ipv4_embedded`]) read as that IPv4 address.
    ///
    /// ```
    /// use lanlink::PublicNetwork;
    /// let net = PublicNetwork::from_ip("2001:db8:1:2:3::9".parse().unwrap(), 48);
    /// assert_eq!(net.to_string(), "2001:db8:1::/48");
    /// let v4 = PublicNetwork::from_ip("198.51.100.20".parse().unwrap(), 64);
    /// assert!(matches!(v4, PublicNetwork::V4(_)));
    /// ```
    #[inline]
    pub fn from_ip(ip: IpAddr, v6_prefix: u8) -> Self {
        Self::from_ip_nat64(ip, v6_prefix, &[])
    }

    /// As [`from_ip`](Self::from_ip), with `nat64_prefixes` (an operator's NAT64 or SIIT
    /// prefixes, of the lengths in [`NAT64_PREFIX_LENGTHS`]; others are ignored) mapped back to
    /// IPv4 like the well-known prefix.
    ///
    /// ```
    /// use lanlink::PublicNetwork;
    /// let prefix = "2001:db8:64::/96".parse().unwrap();
    /// let ip = "2001:db8:64::203.0.113.7".parse().unwrap();
    /// assert_eq!(PublicNetwork::from_ip_nat64(ip, 64, &[prefix]).to_string(), "203.0.113.7");
    /// // Without the operator's prefix it is an ordinary IPv6 /64.
    /// assert_eq!(PublicNetwork::from_ip(ip, 64).to_string(), "2001:db8:64::/64");
    /// ```
    pub fn from_ip_nat64(ip: IpAddr, v6_prefix: u8, nat64_prefixes: &[Ipv6Net]) -> Self {
        match canonical(ip) {
            IpAddr::V4(v4) => Self::V4(v4),
            IpAddr::V6(v6) => {
                let embedded = ipv4_embedded(v6).or_else(|| {
                    nat64_prefixes
                        .iter()
                        .find_map(|prefix| nat64_embedded(v6, prefix))
                });
                if let Some(v4) = embedded {
                    return Self::V4(v4);
                }
                let prefix = v6_prefix.min(128);
                // Cannot fail: the prefix is clamped to at most 128.
                let net = Ipv6Net::new(v6, prefix).unwrap_or_default().trunc();
                Self::V6(net)
            }
        }
    }
}

impl fmt::Display for PublicNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::V4(ip) => write!(f, "{ip}"),
            Self::V6(net) => write!(f, "{net}"),
        }
    }
}

/// Which caller addresses the agent treats as "on the local network".
///
/// The default: RFC 1918 (10/8, 172.16/12, 192.168/16), loopback (127/8, ::1), link-local
/// (169.254/16, fe80::/10) and IPv6 ULA (fc00::/7). Not CGNAT (100.64/10), which neighbours behind
/// a carrier's NAT share, and nothing public. Nor a NAT64/SIIT address (`64:ff9b::/96` and the
/// like), whatever IPv4 address it embeds: such a caller is a translated remote host, so its
/// address is never read as the IPv4 address inside it.
///
/// ```
/// use lanlink::LocalPolicy;
/// let policy = LocalPolicy::default();
/// assert!(policy.is_local("192.168.1.20".parse().unwrap()));
/// assert!(policy.is_local("::ffff:10.1.2.3".parse().unwrap()));
/// assert!(!policy.is_local("100.64.0.9".parse().unwrap()));
/// assert!(!policy.is_local("203.0.113.9".parse().unwrap()));
/// assert!(!policy.is_local("64:ff9b::192.168.1.20".parse().unwrap()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPolicy {
    networks: Vec<IpNet>,
}

impl LocalPolicy {
    /// A policy that accepts exactly `networks`.
    ///
    /// ```
    /// use lanlink::LocalPolicy;
    /// let only_lab = LocalPolicy::new(vec!["192.168.50.0/24".parse().unwrap()]);
    /// assert!(only_lab.is_local("192.168.50.3".parse().unwrap()));
    /// assert!(!only_lab.is_local("192.168.1.3".parse().unwrap()));
    /// ```
    pub fn new(networks: Vec<IpNet>) -> Self {
        Self { networks }
    }

    /// The accepted networks.
    ///
    /// ```
    /// use lanlink::{addr::default_private_networks, LocalPolicy};
    /// assert_eq!(LocalPolicy::default().networks(), default_private_networks().as_slice());
    /// ```
    pub fn networks(&self) -> &[IpNet] {
        &self.networks
    }

    /// Whether `ip` (normalized) is local under this policy.
    ///
    /// ```
    /// use lanlink::LocalPolicy;
    /// let policy = LocalPolicy::default();
    /// assert!(policy.is_local("fe80::1".parse().unwrap()));
    /// assert!(policy.is_local("fd00::5".parse().unwrap()));
    /// assert!(!policy.is_local("2001:db8::5".parse().unwrap()));
    /// ```
    pub fn is_local(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.networks.iter().any(|net| net.contains(&ip))
    }
}

impl Default for LocalPolicy {
    fn default() -> Self {
        Self::new(default_private_networks())
    }
}

/// RFC 1918, loopback, link-local and ULA networks.
///
/// ```
/// use lanlink::addr::default_private_networks;
/// let nets = default_private_networks();
/// assert_eq!(nets.len(), 8);
/// assert!(nets.contains(&"172.16.0.0/12".parse().unwrap()));
/// assert!(!nets.contains(&"100.64.0.0/10".parse().unwrap()), "not CGNAT");
/// ```
pub fn default_private_networks() -> Vec<IpNet> {
    [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
    ]
    .iter()
    // Cannot fail: the literals above are valid networks (checked by a unit test).
    .filter_map(|net| net.parse().ok())
    .collect()
}

/// Whether `ip` may be announced as an agent's private address: private, loopback, ULA or
/// link-local (the default [`LocalPolicy`] set). Anything else would let an announcement point
/// linkers at a public host.
///
/// ```
/// use lanlink::addr::is_announceable_private_ip;
/// assert!(is_announceable_private_ip("192.168.1.40".parse().unwrap()));
/// assert!(is_announceable_private_ip("fd12::40".parse().unwrap()));
/// assert!(!is_announceable_private_ip("8.8.8.8".parse().unwrap()));
/// assert!(!is_announceable_private_ip("100.64.0.1".parse().unwrap()));
/// ```
pub fn is_announceable_private_ip(ip: IpAddr) -> bool {
    let ip = canonical(ip);
    match ip {
        IpAddr::V4(v4) => v4.is_private() || v4.is_loopback() || v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unique_local() || v6.is_unicast_link_local(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn default_networks_all_parse() {
        assert_eq!(default_private_networks().len(), 8);
    }

    #[test]
    fn forwarded_rfc7239_forms() {
        let r = ClientAddrResolver::new(vec!["10.0.0.0/8".parse().unwrap()]);
        let h = |f: &'static [&'static str]| ForwardedHeaders {
            forwarded: f,
            x_forwarded_for: &[],
        };
        assert_eq!(
            r.resolve(
                ip("10.0.0.1"),
                h(&["for=\"[2001:db8:cafe::17]:4711\";proto=https"])
            ),
            Ok(ip("2001:db8:cafe::17"))
        );
        assert_eq!(
            r.resolve(
                ip("10.0.0.1"),
                h(&["For=192.0.2.60;by=10.0.0.1, for=10.0.0.9"])
            ),
            Ok(ip("192.0.2.60"))
        );
        assert_eq!(
            r.resolve(ip("10.0.0.1"), h(&["for=unknown"])),
            Err(ClientAddrError::UnparsableHop)
        );
        assert_eq!(
            r.resolve(ip("10.0.0.1"), h(&["for=_hidden, for=198.51.100.1"])),
            Ok(ip("198.51.100.1"))
        );
        assert_eq!(
            r.resolve(ip("10.0.0.1"), h(&["for=10.0.0.7"])),
            Err(ClientAddrError::OnlyTrustedHops)
        );
        assert_eq!(
            r.resolve(ip("10.0.0.1"), ForwardedHeaders::NONE),
            Err(ClientAddrError::MissingForwarded)
        );
        assert_eq!(
            r.resolve(ip("::ffff:10.0.0.1"), h(&["for=\"[::ffff:198.51.100.2]\""])),
            Ok(ip("198.51.100.2"))
        );
    }

    #[test]
    fn both_headers_are_refused() {
        // Behind a proxy that appends X-Forwarded-For, a client-written `Forwarded` must not
        // choose the client's address.
        let r = ClientAddrResolver::new(vec!["127.0.0.0/8".parse().unwrap()]);
        let h = ForwardedHeaders {
            forwarded: &["for=192.168.1.20"],
            x_forwarded_for: &["198.51.100.9"],
        };
        assert_eq!(
            r.resolve(ip("127.0.0.1"), h),
            Err(ClientAddrError::AmbiguousHeaders)
        );
        // An untrusted peer's headers are ignored altogether, both or not.
        assert_eq!(r.resolve(ip("198.51.100.9"), h), Ok(ip("198.51.100.9")));
    }

    #[test]
    fn mapped_trusted_range_is_ipv4() {
        let r = ClientAddrResolver::new(vec!["::ffff:10.0.0.0/104".parse().unwrap()]);
        assert!(r.is_trusted(ip("10.1.1.1")));
        assert!(r.is_trusted(ip("::ffff:10.1.1.1")));
    }

    #[test]
    fn too_many_hops_refused() {
        let r = ClientAddrResolver::new(vec!["10.0.0.0/8".parse().unwrap()]);
        let long = vec!["1.1.1.1"; MAX_FORWARDED_HOPS + 1].join(",");
        let lines = [long.as_str()];
        let h = ForwardedHeaders {
            forwarded: &[],
            x_forwarded_for: &lines,
        };
        assert_eq!(
            r.resolve(ip("10.0.0.1"), h),
            Err(ClientAddrError::TooManyHops)
        );
    }

    /// Every IPv6 form that embeds an IPv4 client stands for that client: two clients of one
    /// translator or relay are two networks (not one /64 for all of them), and each is the
    /// network its plain IPv4 address is.
    #[test]
    fn every_ipv4_embedding_form_maps_back_to_its_client() {
        let (a, b): (Ipv4Addr, Ipv4Addr) = (
            "203.0.113.7".parse().unwrap(),
            "198.51.100.9".parse().unwrap(),
        );
        let teredo = |v4: Ipv4Addr| {
            let client = !u32::from(v4);
            // Server 65.54.227.120, flags 0x8000, an obfuscated port.
            Ipv6Addr::new(
                0x2001,
                0,
                0x4136,
                0xe378,
                0x8000,
                0x63bf,
                (client >> 16) as u16,
                client as u16,
            )
        };
        let forms: [(&str, &dyn Fn(Ipv4Addr) -> Ipv6Addr); 5] = [
            ("mapped", &|v4: Ipv4Addr| v4.to_ipv6_mapped()),
            ("SIIT-translated", &|v4: Ipv4Addr| {
                let [x, y, z, w] = v4.octets();
                Ipv6Addr::new(
                    0,
                    0,
                    0,
                    0,
                    0xffff,
                    0,
                    u16::from_be_bytes([x, y]),
                    u16::from_be_bytes([z, w]),
                )
            }),
            ("compatible", &|v4: Ipv4Addr| v4.to_ipv6_compatible()),
            ("Teredo", &teredo),
            ("NAT64", &|v4: Ipv4Addr| {
                let [x, y, z, w] = v4.octets();
                Ipv6Addr::new(
                    0x64,
                    0xff9b,
                    0,
                    0,
                    0,
                    0,
                    u16::from_be_bytes([x, y]),
                    u16::from_be_bytes([z, w]),
                )
            }),
        ];
        for (name, form) in forms {
            for v4 in [a, b] {
                assert_eq!(ipv4_embedded(form(v4)), Some(v4), "{name}");
                assert_eq!(
                    PublicNetwork::from_ip(IpAddr::V6(form(v4)), 64),
                    PublicNetwork::V4(v4),
                    "{name} {v4}"
                );
            }
            assert_ne!(
                PublicNetwork::from_ip(IpAddr::V6(form(a)), 64),
                PublicNetwork::from_ip(IpAddr::V6(form(b)), 64),
                "{name}: two clients share a network"
            );
        }
        // Not embedding forms: the unspecified address, loopback, an ordinary address.
        for ip in ["::", "::1", "2001:db8::1", "2002:cb00:7107::1"] {
            assert_eq!(ipv4_embedded(ip.parse().unwrap()), None, "{ip}");
        }
    }

    /// RFC 6052 §2.4's examples: 192.0.2.33 embedded under each prefix length.
    #[test]
    fn nat64_embedded_reads_every_rfc6052_length() {
        let want: Ipv4Addr = "192.0.2.33".parse().unwrap();
        for (prefix, ip) in [
            ("2001:db8::/32", "2001:db8:c000:221::"),
            ("2001:db8:100::/40", "2001:db8:1c0:2:21::"),
            ("2001:db8:122::/48", "2001:db8:122:c000:2:2100::"),
            ("2001:db8:122:300::/56", "2001:db8:122:3c0:0:221::"),
            ("2001:db8:122:344::/64", "2001:db8:122:344:c0:2:2100::"),
            ("2001:db8:122:344::/96", "2001:db8:122:344::192.0.2.33"),
            ("64:ff9b::/96", "64:ff9b::192.0.2.33"),
        ] {
            let prefix: Ipv6Net = prefix.parse().unwrap();
            let ip: Ipv6Addr = ip.parse().unwrap();
            assert_eq!(nat64_embedded(ip, &prefix), Some(want), "{prefix}");
            assert_eq!(
                PublicNetwork::from_ip_nat64(IpAddr::V6(ip), 64, &[prefix]),
                PublicNetwork::V4(want),
                "{prefix}"
            );
        }
        // Outside the prefix, or a length RFC 6052 does not define: not mapped.
        let wkp = NAT64_WELL_KNOWN_PREFIX;
        assert_eq!(nat64_embedded("64:ff9b:1::1".parse().unwrap(), &wkp), None);
        let odd: Ipv6Net = "2001:db8::/33".parse().unwrap();
        assert_eq!(nat64_embedded("2001:db8::1".parse().unwrap(), &odd), None);
        // The u octet and the suffix are not address bits: what a translator writes there does
        // not change the network.
        let nsp: Ipv6Net = "2001:db8:122::/48".parse().unwrap();
        let noisy: Ipv6Addr = "2001:db8:122:c000:ff02:2100:abcd:1".parse().unwrap();
        assert_eq!(nat64_embedded(noisy, &nsp), Some(want));
    }

    #[test]
    fn nat64_clients_are_their_ipv4_networks() {
        let net = |s: &str| PublicNetwork::from_ip(ip(s), 64);
        assert_eq!(net("64:ff9b::203.0.113.7"), net("203.0.113.7"));
        assert_eq!(net("64:ff9b::203.0.113.7"), net("::ffff:203.0.113.7"));
        assert_ne!(net("64:ff9b::203.0.113.7"), net("64:ff9b::198.51.100.9"));
        assert_eq!(net("64:ff9b::203.0.113.7").to_string(), "203.0.113.7");
        // Ordinary IPv6 is grouped by prefix as before, the RFC 8215 local-use prefix included
        // (it is an operator's choice: configure it to map it).
        assert_eq!(net("2001:db8:1:2::10"), net("2001:db8:1:2:aaaa::1"));
        assert_eq!(net("64:ff9b:1::1"), net("64:ff9b:1::2"));
        let local: Ipv6Net = "64:ff9b:1::/96".parse().unwrap();
        assert_ne!(
            PublicNetwork::from_ip_nat64(ip("64:ff9b:1::203.0.113.7"), 64, &[local]),
            PublicNetwork::from_ip_nat64(ip("64:ff9b:1::198.51.100.9"), 64, &[local])
        );
        // A NAT64 address is never local and never announceable, whatever it embeds.
        let policy = LocalPolicy::default();
        for translated in [
            "64:ff9b::192.168.1.20",
            "64:ff9b::127.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(!policy.is_local(ip(translated)), "{translated}");
            assert!(!is_announceable_private_ip(ip(translated)), "{translated}");
        }
    }

    /// The mapping applies to the resolved client only: the resolver's trust decisions and
    /// refusals read the addresses as they arrive.
    #[test]
    fn nat64_does_not_change_who_is_trusted() {
        let r = ClientAddrResolver::new(vec!["64:ff9b::/96".parse().unwrap()]);
        // A trusted translator-side proxy that names no client is still refused.
        assert_eq!(
            r.resolve(ip("64:ff9b::198.51.100.1"), ForwardedHeaders::NONE),
            Err(ClientAddrError::MissingForwarded)
        );
        let h = ForwardedHeaders {
            forwarded: &[],
            x_forwarded_for: &["64:ff9b::203.0.113.7"],
        };
        assert_eq!(
            r.resolve(ip("64:ff9b::198.51.100.1"), h),
            Err(ClientAddrError::OnlyTrustedHops)
        );
        // An IPv4 proxy range does not trust the proxy's NAT64 form.
        let v4 = ClientAddrResolver::new(vec!["198.51.100.0/24".parse().unwrap()]);
        assert!(!v4.is_trusted(ip("64:ff9b::198.51.100.1")));
        assert_eq!(
            v4.resolve(ip("64:ff9b::203.0.113.7"), ForwardedHeaders::NONE),
            Ok(ip("64:ff9b::203.0.113.7"))
        );
    }

    #[test]
    fn announceable() {
        for ok in [
            "10.1.1.1",
            "172.31.0.1",
            "192.168.0.2",
            "127.0.0.1",
            "169.254.3.3",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:192.168.1.1",
        ] {
            assert!(is_announceable_private_ip(ip(ok)), "{ok}");
        }
        for bad in [
            "8.8.8.8",
            "100.64.0.1",
            "2001:db8::1",
            "0.0.0.0",
            "224.0.0.1",
            "::",
        ] {
            assert!(!is_announceable_private_ip(ip(bad)), "{bad}");
        }
    }
}
