//! IP prefixes (`10.0.0.0/8`, `2001:db8::/32`) as Services write them in
//! `spec.loadBalancerSourceRanges`: an [`ipnet::IpNet`] that is always a network address.

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::types::IpFamily;

/// An IPv4 or IPv6 prefix, normalised: host bits are accepted on input, as Kubernetes does
/// (`10.1.2.3/8` is valid), and cleared (it becomes `10.0.0.0/8`). Two spellings of one
/// prefix are therefore equal, and every `Cidr` prints as its network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr(IpNet);

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
        IpNet::new(addr, prefix_len).ok().map(Self::from)
    }

    /// The prefix as an [`IpNet`] (its address is the network address).
    pub fn net(&self) -> IpNet {
        self.0
    }

    /// The network address (host bits are always zero).
    pub fn addr(&self) -> IpAddr {
        self.0.network()
    }

    /// The last address of the prefix (the IPv4 broadcast address; for IPv6 simply the
    /// highest address).
    pub fn last(&self) -> IpAddr {
        self.0.broadcast()
    }

    /// The prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.0.prefix_len()
    }

    /// The address family.
    pub fn family(&self) -> IpFamily {
        match self.0 {
            IpNet::V4(_) => IpFamily::IPv4,
            IpNet::V6(_) => IpFamily::IPv6,
        }
    }

    /// Whether `ip` is inside this prefix (never across families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip)
    }
}

impl From<IpNet> for Cidr {
    /// Clears the host bits.
    fn from(net: IpNet) -> Self {
        Self(net.trunc())
    }
}

impl From<Cidr> for IpNet {
    fn from(c: Cidr) -> Self {
        c.0
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// Parses `ADDRESS/PREFIX`. The address goes through the standard library's parser, which
    /// refuses the ambiguous leading zeros (`010.0.0.0`) that `IpNet::from_str` takes, and each
    /// way of failing gets its own reason.
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
        self.0.fmt(f)
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
    fn first_and_last_address() {
        let cases = [
            ("10.1.2.3/24", "10.1.2.0", "10.1.2.255"),
            ("0.0.0.0/0", "0.0.0.0", "255.255.255.255"),
            ("192.168.0.7/32", "192.168.0.7", "192.168.0.7"),
            ("2001:db8::5/126", "2001:db8::4", "2001:db8::7"),
            ("::/0", "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        ];
        for (input, first, last) in cases {
            let c: Cidr = input.parse().unwrap();
            assert_eq!(c.addr().to_string(), first, "{input}");
            assert_eq!(c.last().to_string(), last, "{input}");
        }
    }

    #[test]
    fn from_an_ipnet_is_normalised() {
        let net: IpNet = "10.1.2.3/8".parse().unwrap();
        let c = Cidr::from(net);
        assert_eq!(c, "10.0.0.0/8".parse().unwrap());
        assert_eq!(IpNet::from(c).to_string(), "10.0.0.0/8");
        assert_eq!(c.net(), IpNet::from(c));
    }

    #[test]
    fn serde_is_the_string_form() {
        let c: Cidr = serde_json::from_str("\"10.1.0.0/16\"").unwrap();
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"10.1.0.0/16\"");
        let e = serde_json::from_str::<Cidr>("\"nope\"").unwrap_err();
        assert!(e.to_string().contains("Invalid CIDR \"nope\""), "{e}");
    }
}
