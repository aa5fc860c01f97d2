//! CIDR parsing and matching for `sourceRanges`, on [`ipnet::IpNet`].

use ipnet::IpNet;
use std::net::IpAddr;

/// Parses `address/prefix` (host bits are cleared: `10.1.2.3/8` is `10.0.0.0/8`).
pub fn parse(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .map(|n| n.trunc())
        .map_err(|_| format!("{s:?} is not a CIDR (expected address/prefix, e.g. 10.0.0.0/8)"))
}

/// Whether `ip` may connect: no ranges means everyone. An IPv4-mapped IPv6 client counts
/// as IPv4.
pub fn allowed(ranges: &[IpNet], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    ranges.is_empty() || ranges.iter().any(|r| r.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> IpNet {
        parse(s).expect("valid CIDR")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn parses_and_matches_v4() {
        let r = c("10.1.2.3/8");
        assert_eq!(r.to_string(), "10.0.0.0/8");
        assert!(r.contains(&ip("10.200.0.1")));
        assert!(!r.contains(&ip("11.0.0.1")));
        assert!(c("127.0.0.0/8").contains(&ip("127.251.200.1")));
        assert!(c("0.0.0.0/0").contains(&ip("8.8.8.8")));
        assert!(c("1.2.3.4/32").contains(&ip("1.2.3.4")));
        assert!(!c("1.2.3.4/32").contains(&ip("1.2.3.5")));
    }

    #[test]
    fn parses_and_matches_v6_and_mapped() {
        let r = [c("fd00::/8")];
        assert!(allowed(&r, ip("fd12::1")));
        assert!(!allowed(&r, ip("fe80::1")));
        assert!(!allowed(&r, ip("10.0.0.1")));
        assert!(allowed(&[c("10.0.0.0/8")], ip("::ffff:10.1.1.1")));
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
            " 10.0.0.0/8",
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(e.contains("is not a CIDR"), "{bad}: {e}");
        }
    }

    #[test]
    fn empty_ranges_allow_everyone() {
        let ip = ip("192.0.2.1");
        assert!(allowed(&[], ip));
        assert!(!allowed(&[c("10.0.0.0/8")], ip));
        assert!(allowed(&[c("10.0.0.0/8"), c("192.0.2.0/24")], ip));
    }
}
