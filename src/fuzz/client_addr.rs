//! The client-address resolver's harness (`client_addr`), against a reference written apart.
//! The reference must not call the resolver it checks.

use super::*;

/// One resolver input.
///
/// ```
/// use arbitrary::{Arbitrary, Unstructured};
/// use lanlink::fuzz::ClientAddrInput;
/// // Too few bytes still build an input (empty lists, zeros): the harness never skips one.
/// let input = ClientAddrInput::arbitrary(&mut Unstructured::new(&[]))?;
/// assert!(input.trusted.is_empty() && input.forwarded.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Arbitrary)]
pub struct ClientAddrInput {
    /// Trusted proxy networks, as (address, prefix).
    pub trusted: Vec<([u8; 4], u8)>,
    /// The socket peer.
    pub peer: PeerKind,
    /// `Forwarded` lines.
    pub forwarded: Vec<String>,
    /// `X-Forwarded-For` lines.
    pub xff: Vec<String>,
    /// A configured NAT64/SIIT prefix (its address; its length indexes
    /// [`NAT64_PREFIX_LENGTHS`](crate::addr::NAT64_PREFIX_LENGTHS)), and an IPv4 address to embed
    /// in it.
    pub nat64: ([u8; 16], u8, [u8; 4]),
}

/// The trusted-proxy resolver over arbitrary peers and headers, against a plain reference
/// implementation of the same rule.
///
/// ```
/// use lanlink::fuzz::client_addr;
/// // A finding is a panic; these inputs (empty, short, and a longer pseudo-random one) find none.
/// let long: Vec<u8> = (0..512u32).map(|i| (i * 37 % 251) as u8).collect();
/// for input in [&b""[..], b"\x00\x01\x02\x03", b"{}", &long] {
///     assert!(std::panic::catch_unwind(|| client_addr(input)).is_ok());
/// }
/// ```
pub fn client_addr(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(input) = ClientAddrInput::arbitrary(&mut u) else {
        return;
    };
    let trusted: Vec<IpNet> = input
        .trusted
        .iter()
        .take(4)
        .filter_map(|(addr, prefix)| {
            ipnet::Ipv4Net::new(Ipv4Addr::from(*addr), prefix % 33)
                .ok()
                .map(IpNet::V4)
        })
        .collect();
    let resolver = ClientAddrResolver::new(trusted.clone());
    let forwarded: Vec<&str> = input.forwarded.iter().map(String::as_str).collect();
    let xff: Vec<&str> = input.xff.iter().map(String::as_str).collect();
    let headers = ForwardedHeaders {
        forwarded: &forwarded,
        x_forwarded_for: &xff,
    };
    let got = resolver.resolve(input.peer.ip(), headers);
    let want = reference_resolve(&trusted, input.peer.ip(), &forwarded, &xff);
    assert_eq!(
        got, want,
        "resolver disagrees with the reference for {input:?}"
    );
    // Whatever it returns is never a trusted proxy.
    if let Ok(ip) = got {
        assert!(!resolver.is_trusted(ip), "resolved to a trusted proxy");
    }
    // The public network of the resolved client (and of the peer, and of an IPv4 address
    // embedded in the configured prefix), against a plain reference: NAT64 addresses stand for
    // the IPv4 address they embed, other IPv6 for its /64.
    let (prefix_bytes, length, v4) = input.nat64;
    let lengths = crate::addr::NAT64_PREFIX_LENGTHS;
    let length = lengths[usize::from(length) % lengths.len()];
    let prefix = ipnet::Ipv6Net::new(Ipv6Addr::from(prefix_bytes), length)
        .unwrap_or_default()
        .trunc();
    let config = ServerConfig::default().nat64_prefixes(vec![prefix]);
    // A refused prefix (one that overlaps the IPv4-mapped range) is not applied.
    let accepted = config.validate().is_ok();
    let prefixes: &[ipnet::Ipv6Net] = if accepted {
        &[crate::addr::NAT64_WELL_KNOWN_PREFIX, prefix]
    } else {
        &[crate::addr::NAT64_WELL_KNOWN_PREFIX]
    };
    let embedded = reference_embed(prefix, Ipv4Addr::from(v4));
    let probes = [got.ok(), Some(input.peer.ip()), Some(IpAddr::V6(embedded))];
    for ip in probes.into_iter().flatten() {
        assert_eq!(
            config.network_of(ip),
            reference_network(ip, prefixes),
            "network of {ip} under {prefix}"
        );
    }
    // Unless an earlier form (the well-known prefix, a fixed embedding form) claims it, the
    // embedded address maps back.
    if accepted && crate::addr::ipv4_embedded(embedded).is_none() {
        assert_eq!(
            config.network_of(IpAddr::V6(embedded)),
            crate::addr::PublicNetwork::V4(Ipv4Addr::from(v4))
        );
    }
}

/// `v4` embedded in `prefix` as RFC 6052 §2.2 lays it out, written with 128-bit arithmetic: the
/// address bits right after the prefix, bits 64–71 (the u octet) left zero, the suffix zero.
pub(super) fn reference_embed(prefix: ipnet::Ipv6Net, v4: Ipv4Addr) -> Ipv6Addr {
    let length = u32::from(prefix.prefix_len());
    let base = u128::from(prefix.network());
    let v4 = u128::from(u32::from(v4));
    let bits = if length == 96 {
        base | v4
    } else {
        // Place the 32 bits in a 120-bit word without the u octet, then open the octet at 64.
        let word = v4 << (120 - length - 32);
        let high = word >> 56;
        let low = word & ((1u128 << 56) - 1);
        base | (high << 64) | low
    };
    Ipv6Addr::from(bits)
}

/// The public network of `ip`, written plainly: IPv4 (or mapped IPv4) as itself; an address in
/// one of `nat64` (checked in order, RFC 6052 lengths only) as the IPv4 address it embeds, read
/// with 128-bit arithmetic; other IPv6 by its /64.
pub(super) fn reference_network(
    ip: IpAddr,
    nat64: &[ipnet::Ipv6Net],
) -> crate::addr::PublicNetwork {
    let v6 = match ip {
        IpAddr::V4(v4) => return crate::addr::PublicNetwork::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => return crate::addr::PublicNetwork::V4(v4),
            None => v6,
        },
    };
    let bits = u128::from(v6);
    // The fixed IPv4-embedding forms, in 128-bit arithmetic: SIIT-translated ::ffff:0:0:0/96,
    // compatible ::/96 (but :: and ::1), Teredo 2001::/32 (the client inverted in the low bits).
    let low = Ipv4Addr::from((bits & 0xffff_ffff) as u32);
    if bits >> 32 == 0xffff_0000 || (bits >> 32 == 0 && bits > 1) {
        return crate::addr::PublicNetwork::V4(low);
    }
    if bits >> 96 == 0x2001_0000 {
        return crate::addr::PublicNetwork::V4(Ipv4Addr::from(!u32::from(low)));
    }
    for prefix in nat64 {
        let length = u32::from(prefix.prefix_len());
        if ![32, 40, 48, 56, 64, 96].contains(&length) {
            continue;
        }
        let mask = u128::MAX << (128 - length);
        if bits & mask != u128::from(prefix.network()) & mask {
            continue;
        }
        let v4 = if length == 96 {
            bits & 0xffff_ffff
        } else {
            // Drop the u octet (bits 64–71 from the top): a 120-bit word.
            let word = ((bits >> 64) << 56) | (bits & ((1u128 << 56) - 1));
            (word >> (120 - length - 32)) & 0xffff_ffff
        };
        return crate::addr::PublicNetwork::V4(Ipv4Addr::from(u32::try_from(v4).unwrap_or(0)));
    }
    let net = u128::MAX << 64;
    crate::addr::PublicNetwork::V6(
        ipnet::Ipv6Net::new(Ipv6Addr::from(bits & net), 64).unwrap_or_default(),
    )
}

/// The rule, written out plainly: the peer unless trusted; then the one forwarding header present
/// (both: an error) right to left, skipping trusted hops; anything unusable is an error.
fn reference_resolve(
    trusted: &[IpNet],
    peer: IpAddr,
    forwarded: &[&str],
    xff: &[&str],
) -> Result<IpAddr, ClientAddrError> {
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(&canon(ip)));
    let peer = canon(peer);
    if !is_trusted(peer) {
        return Ok(peer);
    }
    let use_forwarded = forwarded.iter().any(|l| !l.trim().is_empty());
    let use_xff = xff.iter().any(|l| !l.trim().is_empty());
    if use_forwarded && use_xff {
        return Err(ClientAddrError::AmbiguousHeaders);
    }
    if !use_forwarded && !use_xff {
        return Err(ClientAddrError::MissingForwarded);
    }
    let lines = if use_forwarded { forwarded } else { xff };
    let mut hops: Vec<Option<IpAddr>> = Vec::new();
    for line in lines {
        for element in split_outside_quotes(line, ',') {
            if hops.len() == crate::addr::MAX_FORWARDED_HOPS {
                return Err(ClientAddrError::TooManyHops);
            }
            let node = if use_forwarded {
                forwarded_for(element.trim())
            } else {
                Some(element.trim().to_owned())
            };
            hops.push(node.and_then(|n| parse_node(&n)).map(canon));
        }
    }
    for hop in hops.into_iter().rev() {
        let ip = hop.ok_or(ClientAddrError::UnparsableHop)?;
        if !is_trusted(ip) {
            return Ok(ip);
        }
    }
    Err(ClientAddrError::OnlyTrustedHops)
}

fn split_outside_quotes(text: &str, sep: char) -> Vec<&str> {
    let (mut parts, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            parts.push(&text[start..i]);
            start = i + 1;
        }
    }
    parts.push(&text[start..]);
    parts
}

fn forwarded_for(element: &str) -> Option<String> {
    let mut found: Option<String> = None;
    for pair in split_outside_quotes(element, ';') {
        let Some((name, value)) = pair.split_once('=') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("for") {
            if found.is_some() {
                return None;
            }
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            found = Some(value.to_owned());
        }
    }
    found
}

fn parse_node(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sock) = text.parse::<std::net::SocketAddr>() {
        return Some(sock.ip());
    }
    text.strip_prefix('[')?
        .strip_suffix(']')?
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}
