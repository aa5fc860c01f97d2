//! IP prefixes (`10.0.0.0/8`, `2001:db8::/32`) as Services write them in
//! `spec.loadBalancerSourceRanges`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::types::IpFamily;

/// An IPv4 or IPv6 prefix, normalised: host bits are accepted on input, as Kubernetes does
/// (`10.1.2.3/8` is valid), and cleared (it becomes `10.0.0.0/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    prefix_len: u8,
}

/// Why a string is not a CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid CIDR {input:?}: {reason}")]
pub struct CidrError {
    input: String,
    reason: &'static str,
}

impl Cidr {
    /// The prefix `addr/prefix_len` with host bits cleared, or `None` when `prefix_len` is
    /// longer than the address (32 for IPv4, 128 for IPv6).
    pub fn new(addr: IpAddr, prefix_len: u8) -> Option<Self> {
        let max = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        (prefix_len <= max).then(|| Self {
            addr: network(addr, prefix_len),
            prefix_len,
        })
    }

    /// The network address (host bits are always zero).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The address family.
    pub fn family(&self) -> IpFamily {
        match self.addr {
            IpAddr::V4(_) => IpFamily::IPv4,
            IpAddr::V6(_) => IpFamily::IPv6,
        }
    }

    /// Whether `ip` is inside this prefix (never across families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                network(ip, self.prefix_len) == self.addr
            }
            _ => false,
        }
    }
}

/// `addr` with every bit after the first `prefix_len` cleared.
fn network(addr: IpAddr, prefix_len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix_len))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix_len))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| CidrError {
            input: s.to_string(),
            reason,
        };
        let (addr, len) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| err("expected ADDRESS/PREFIX, e.g. 10.0.0.0/8 or 2001:db8::/32"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| err("the address is neither IPv4 nor IPv6"))?;
        // Digits only: `u8::from_str` would also take "+8".
        let prefix_len = Some(len)
            .filter(|l| !l.is_empty() && l.len() <= 3 && l.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|l| l.parse::<u8>().ok());
        let prefix_len = prefix_len.ok_or_else(|| err("the prefix length is not a number"))?;
        Cidr::new(addr, prefix_len).ok_or_else(|| match addr {
            IpAddr::V4(_) => err("the prefix length must be from 0 to 32 for IPv4"),
            IpAddr::V6(_) => err("the prefix length must be from 0 to 128 for IPv6"),
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises() {
        let ok = [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("10.1.2.3/8", "10.0.0.0/8"),
            (" 192.168.1.7/24 ", "192.168.1.0/24"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("1.2.3.4/0", "0.0.0.0/0"),
            ("1.2.3.4/32", "1.2.3.4/32"),
            ("2001:db8::/32", "2001:db8::/32"),
            ("2001:DB8:1::5/48", "2001:db8:1::/48"),
            ("::/0", "::/0"),
            ("fe80::1/128", "fe80::1/128"),
            ("::ffff:10.0.0.1/104", "::ffff:10.0.0.0/104"),
            ("::ffff:10.1.0.1/100", "::ffff:0.0.0.0/100"),
            ("10.0.0.0/08", "10.0.0.0/8"),
        ];
        for (input, want) in ok {
            let c: Cidr = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(c.to_string(), want, "{input}");
        }
    }

    #[test]
    fn rejects_with_a_reason() {
        let bad = [
            ("", "expected ADDRESS/PREFIX"),
            ("10.0.0.0", "expected ADDRESS/PREFIX"),
            ("10.0.0/8", "neither IPv4 nor IPv6"),
            ("010.0.0.0/8", "neither IPv4 nor IPv6"),
            ("10.0.0.0/", "not a number"),
            ("10.0.0.0/+8", "not a number"),
            ("10.0.0.0/-1", "not a number"),
            ("10.0.0.0/8/8", "not a number"),
            ("10.0.0.0/33", "from 0 to 32 for IPv4"),
            ("::/129", "from 0 to 128 for IPv6"),
            ("::/1000", "not a number"),
            ("example.com/8", "neither IPv4 nor IPv6"),
        ];
        for (input, reason) in bad {
            let e = input.parse::<Cidr>().expect_err(input).to_string();
            assert!(e.starts_with(&format!("Invalid CIDR {input:?}: ")), "{e}");
            assert!(e.contains(reason), "{input}: {e}");
        }
    }

    #[test]
    fn contains_only_its_own_family() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains("10.255.0.1".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(!c.contains("::a00:1".parse().unwrap()));
        let all6: Cidr = "::/0".parse().unwrap();
        assert!(all6.contains("2001:db8::1".parse().unwrap()));
        assert!(!all6.contains("1.2.3.4".parse().unwrap()));
        assert_eq!(all6.family(), IpFamily::IPv6);
    }

    #[test]
    fn serde_is_the_string_form() {
        let c: Cidr = serde_json::from_str("\"10.1.0.0/16\"").unwrap();
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"10.1.0.0/16\"");
        let e = serde_json::from_str::<Cidr>("\"nope\"").unwrap_err();
        assert!(e.to_string().contains("Invalid CIDR \"nope\""), "{e}");
    }
}
