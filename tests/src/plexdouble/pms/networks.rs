//! The `allowedNetworks` pref: comma-separated networks whose clients an
//! unclaimed server serves without a token. Plex writes them as
//! `192.168.1.0/255.255.255.0`; docker's ALLOWED_NETWORKS uses CIDR; a bare
//! address is a single host.

use std::net::IpAddr;

use ipnet::IpNet;

pub fn parse(text: &str) -> Result<Vec<IpNet>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(parse_one)
        .collect()
}

fn parse_one(part: &str) -> Result<IpNet, String> {
    let bad = || format!("{part:?} is not a network (CIDR, address/netmask or address)");
    let (address, suffix) = match part.split_once('/') {
        Some((address, suffix)) => (address, Some(suffix)),
        None => (part, None),
    };
    let ip: IpAddr = address.parse().map_err(|_| bad())?;
    let prefix = match (suffix, ip) {
        (None, IpAddr::V4(_)) => 32,
        (None, IpAddr::V6(_)) => 128,
        (Some(suffix), _) if suffix.bytes().all(|b| b.is_ascii_digit()) => {
            suffix.parse().map_err(|_| bad())?
        }
        (Some(mask), IpAddr::V4(_)) => {
            ipnet::ipv4_mask_to_prefix(mask.parse().map_err(|_| bad())?).map_err(|_| bad())?
        }
        (Some(mask), IpAddr::V6(_)) => {
            ipnet::ipv6_mask_to_prefix(mask.parse().map_err(|_| bad())?).map_err(|_| bad())?
        }
    };
    IpNet::new(ip, prefix).map(|n| n.trunc()).map_err(|_| bad())
}

/// Whether `ip` (an IPv4-mapped IPv6 address counts as IPv4) is inside
/// one of `networks`.
pub fn allows(networks: &[IpNet], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    networks.iter().any(|n| n.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plex_and_docker_forms() {
        let nets = parse("192.168.1.0/255.255.255.0, 10.0.0.0/8,127.0.0.1").unwrap();
        assert!(allows(&nets, "192.168.1.77".parse().unwrap()));
        assert!(allows(&nets, "10.2.3.4".parse().unwrap()));
        assert!(allows(&nets, "::ffff:127.0.0.1".parse().unwrap()));
        assert!(!allows(&nets, "127.0.0.2".parse().unwrap()));
        assert!(parse("").unwrap().is_empty());
        assert!(parse("10.0.0.0/33").is_err());
        assert!(parse("somewhere").is_err());
    }
}
