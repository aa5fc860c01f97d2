//! CIDR parsing and matching for `sourceRanges`.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IPv4 or IPv6 network, host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` (IPv4-mapped IPv6 counts as IPv4) lies in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = mask32(self.prefix);
                u32::from(ip) & mask == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = mask128(self.prefix);
                u128::from(ip) & mask == u128::from(net)
            }
            _ => false,
        }
    }
}

fn mask32(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

fn mask128(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix))
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ip, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (expected address/prefix)"))?;
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("{s:?} is not a CIDR: bad address"))?;
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) || prefix.len() > 3 {
            return Err(format!("{s:?} is not a CIDR: bad prefix length"));
        }
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| format!("{s:?} is not a CIDR: bad prefix length"))?;
        let net = match ip {
            IpAddr::V4(v4) if prefix <= 32 => IpAddr::V4((u32::from(v4) & mask32(prefix)).into()),
            IpAddr::V6(v6) if prefix <= 128 => {
                IpAddr::V6((u128::from(v6) & mask128(prefix)).into())
            }
            _ => return Err(format!("{s:?} is not a CIDR: prefix length out of range")),
        };
        Ok(Cidr { net, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

/// Whether `ip` may connect: no ranges means everyone.
pub fn allowed(ranges: &[Cidr], ip: IpAddr) -> bool {
    ranges.is_empty() || ranges.iter().any(|r| r.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().expect("valid CIDR")
    }

    #[test]
    fn parses_and_matches_v4() {
        let r = c("10.1.2.3/8");
        assert_eq!(r.to_string(), "10.0.0.0/8");
        assert!(r.contains("10.200.0.1".parse().expect("ip")));
        assert!(!r.contains("11.0.0.1".parse().expect("ip")));
        assert!(c("127.0.0.0/8").contains("127.251.200.1".parse().expect("ip")));
        assert!(c("0.0.0.0/0").contains("8.8.8.8".parse().expect("ip")));
        assert!(c("1.2.3.4/32").contains("1.2.3.4".parse().expect("ip")));
        assert!(!c("1.2.3.4/32").contains("1.2.3.5".parse().expect("ip")));
    }

    #[test]
    fn parses_and_matches_v6_and_mapped() {
        let r = c("fd00::/8");
        assert!(r.contains("fd12::1".parse().expect("ip")));
        assert!(!r.contains("fe80::1".parse().expect("ip")));
        assert!(!r.contains("10.0.0.1".parse().expect("ip")));
        assert!(c("10.0.0.0/8").contains("::ffff:10.1.1.1".parse().expect("ip")));
    }

    #[test]
    fn rejects_non_cidrs() {
        for bad in [
            "10.0.0.1",
            "10.0.0.0/33",
            "10.0.0.0/",
            "nope/8",
            "10.0.0.0/+8",
            "::/129",
            "",
            "10.0.0.0/8/8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn empty_ranges_allow_everyone() {
        let ip = "192.0.2.1".parse().expect("ip");
        assert!(allowed(&[], ip));
        assert!(!allowed(&[c("10.0.0.0/8")], ip));
        assert!(allowed(&[c("10.0.0.0/8"), c("192.0.2.0/24")], ip));
    }
}
