//! IP address pools as the allocator sees them: parsed ranges, auto-assign, priority and
//! the namespace/Service selectors, evaluated over plain label maps.

use crate::types::IpFamily;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A pool as its custom resource declares it (unparsed, so errors can name the input).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolSpec {
    /// The pool's name (`metadata.name` of its IPAddressPool).
    pub name: String,
    /// CIDRs (`10.0.0.0/24`, `2001:db8::/120`) or ranges (`10.0.0.10-10.0.0.20`).
    pub addresses: Vec<String>,
    /// Whether Services that name no pool and request no address may get one from here.
    pub auto_assign: bool,
    /// Skip IPv4 addresses ending in `.0` and `.255` (some clients drop them).
    pub avoid_buggy_ips: bool,
    /// Which Services may use the pool, and its priority among pools.
    pub allocation: Option<ServiceAllocation>,
}

/// Which Services may take addresses from a pool.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAllocation {
    /// Lower is preferred; 0 (unset) comes after every positive priority.
    pub priority: i32,
    /// Namespaces allowed by name.
    pub namespaces: Vec<String>,
    /// Namespaces allowed by label (any selector matching is enough).
    pub namespace_selectors: Vec<LabelSelector>,
    /// Services allowed by label (any selector matching is enough; empty: all).
    pub service_selectors: Vec<LabelSelector>,
}

/// A Kubernetes label selector, as plain data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// Every key must have exactly this value.
    pub match_labels: BTreeMap<String, String>,
    /// Every requirement must hold.
    pub match_expressions: Vec<SelectorRequirement>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelectorRequirement {
    /// The label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// The values for `In` / `NotIn`.
    pub values: Vec<String>,
}

impl LabelSelector {
    /// Whether `labels` satisfy the selector (an empty selector matches everything).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| {
                let got = labels.get(&e.key);
                match e.operator.as_str() {
                    "In" => got.is_some_and(|v| e.values.contains(v)),
                    "NotIn" => got.is_none_or(|v| !e.values.contains(v)),
                    "Exists" => got.is_some(),
                    "DoesNotExist" => got.is_none(),
                    _ => false,
                }
            })
    }

    fn validate(&self) -> Result<(), String> {
        for e in &self.match_expressions {
            match e.operator.as_str() {
                "In" | "NotIn" if e.values.is_empty() => {
                    return Err(format!(
                        "selector on {:?}: operator {} needs at least one value",
                        e.key, e.operator
                    ));
                }
                "Exists" | "DoesNotExist" if !e.values.is_empty() => {
                    return Err(format!(
                        "selector on {:?}: operator {} takes no values",
                        e.key, e.operator
                    ));
                }
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                other => {
                    return Err(format!(
                        "selector on {:?}: unsupported operator {other:?}; supported: In, NotIn, Exists, DoesNotExist",
                        e.key
                    ));
                }
            }
        }
        Ok(())
    }
}

/// An inclusive range of addresses of one family, as integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Range {
    pub family: IpFamily,
    pub first: u128,
    pub last: u128,
}

impl Range {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (f, n) = to_int(ip);
        f == self.family && (self.first..=self.last).contains(&n)
    }

    fn overlaps(&self, other: &Range) -> bool {
        self.family == other.family && self.first <= other.last && other.first <= self.last
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}",
            from_int(self.family, self.first),
            from_int(self.family, self.last)
        )
    }
}

pub(crate) fn to_int(ip: IpAddr) -> (IpFamily, u128) {
    match ip {
        IpAddr::V4(a) => (IpFamily::IPv4, u128::from(u32::from(a))),
        IpAddr::V6(a) => (IpFamily::IPv6, u128::from(a)),
    }
}

pub(crate) fn from_int(family: IpFamily, n: u128) -> IpAddr {
    match family {
        // Ranges of IPv4 never exceed u32.
        IpFamily::IPv4 => IpAddr::V4(Ipv4Addr::from(n as u32)),
        IpFamily::IPv6 => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

pub(crate) fn family_of(ip: IpAddr) -> IpFamily {
    to_int(ip).0
}

/// Whether an IPv4 address ends in `.0` or `.255` (IPv6 has no such addresses).
pub(crate) fn is_buggy(family: IpFamily, n: u128) -> bool {
    family == IpFamily::IPv4 && matches!(n & 0xff, 0 | 0xff)
}

/// How many `.0`/`.255` addresses lie in `first..=last`.
fn buggy_in(first: u128, last: u128) -> u128 {
    // Numbers ≤ n that end in 0x00 or 0xff, for n ≥ 0.
    let upto = |n: u128| n / 256 + 1 + (n + 1) / 256;
    let below = if first == 0 { 0 } else { upto(first - 1) };
    upto(last) - below
}

/// Parses one entry of `spec.addresses`: a CIDR or `FIRST-LAST`.
pub(crate) fn parse_range(s: &str) -> Result<Range, String> {
    let t = s.trim();
    if let Some((a, b)) = t.split_once('-') {
        let a: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("invalid range {s:?}: {a:?} is not an IP address"))?;
        let b: IpAddr = b
            .trim()
            .parse()
            .map_err(|_| format!("invalid range {s:?}: {b:?} is not an IP address"))?;
        let ((fa, na), (fb, nb)) = (to_int(a), to_int(b));
        if fa != fb {
            return Err(format!(
                "invalid range {s:?}: both ends must be of the same IP family"
            ));
        }
        if na > nb {
            return Err(format!(
                "invalid range {s:?}: the first address is after the last"
            ));
        }
        return Ok(Range {
            family: fa,
            first: na,
            last: nb,
        });
    }
    let cidr: crate::Cidr = t.parse().map_err(|e: crate::CidrError| {
        format!("{e}; expected a CIDR (10.0.0.0/24) or a range (10.0.0.10-10.0.0.20)")
    })?;
    let (family, first) = to_int(cidr.addr());
    let (_, last) = to_int(cidr.last());
    Ok(Range {
        family,
        first,
        last,
    })
}

/// A parsed, valid pool.
#[derive(Debug, Clone)]
pub(crate) struct Pool {
    pub name: String,
    pub ranges: Vec<Range>,
    /// Per range: every address before this one is known to be taken (first-fit cursor).
    pub cursors: Vec<u128>,
    pub auto_assign: bool,
    pub avoid_buggy_ips: bool,
    pub allocation: Option<ServiceAllocation>,
}

impl Pool {
    pub fn parse(spec: &PoolSpec) -> Result<Pool, String> {
        if spec.addresses.is_empty() {
            return Err("spec.addresses is empty; give at least one CIDR or range".into());
        }
        let mut ranges: Vec<Range> = Vec::new();
        for (i, a) in spec.addresses.iter().enumerate() {
            let r = parse_range(a).map_err(|e| format!("spec.addresses[{i}]: {e}"))?;
            if let Some(o) = ranges.iter().find(|o| o.overlaps(&r)) {
                return Err(format!(
                    "spec.addresses[{i}]: {a:?} overlaps {o} in the same pool"
                ));
            }
            ranges.push(r);
        }
        if let Some(al) = &spec.allocation {
            for s in al.namespace_selectors.iter() {
                s.validate()
                    .map_err(|e| format!("spec.serviceAllocation.namespaceSelectors: {e}"))?;
            }
            for s in al.service_selectors.iter() {
                s.validate()
                    .map_err(|e| format!("spec.serviceAllocation.serviceSelectors: {e}"))?;
            }
            if al.priority < 0 {
                return Err("spec.serviceAllocation.priority must not be negative".into());
            }
        }
        Ok(Pool {
            name: spec.name.clone(),
            cursors: ranges.iter().map(|r| r.first).collect(),
            ranges,
            auto_assign: spec.auto_assign,
            avoid_buggy_ips: spec.avoid_buggy_ips,
            allocation: spec.allocation.clone(),
        })
    }

    /// The first range of another pool this one overlaps, if any.
    pub fn overlap_with(&self, other: &Pool) -> Option<(Range, Range)> {
        self.ranges.iter().find_map(|a| {
            other
                .ranges
                .iter()
                .find(|b| a.overlaps(b))
                .map(|b| (*a, *b))
        })
    }

    /// Whether `ip` is one of the pool's usable addresses.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.ranges.iter().any(|r| r.contains(ip))
    }

    pub fn range_of(&self, ip: IpAddr) -> Option<usize> {
        self.ranges.iter().position(|r| r.contains(ip))
    }

    pub fn has_family(&self, family: IpFamily) -> bool {
        self.ranges.iter().any(|r| r.family == family)
    }

    /// Usable addresses of `family` (without `.0`/`.255` when avoiding buggy IPs).
    pub fn size(&self, family: IpFamily) -> u128 {
        self.ranges
            .iter()
            .filter(|r| r.family == family)
            .map(|r| {
                let n = (r.last - r.first).saturating_add(1);
                if self.avoid_buggy_ips && family == IpFamily::IPv4 {
                    n - buggy_in(r.first, r.last)
                } else {
                    n
                }
            })
            .fold(0u128, u128::saturating_add)
    }

    /// Lower sorts first: positive priorities ascending, then unprioritised pools.
    pub fn order_key(&self) -> (i64, &str) {
        let p = self.allocation.as_ref().map_or(0, |a| a.priority);
        (
            if p > 0 { i64::from(p) } else { i64::MAX },
            self.name.as_str(),
        )
    }

    /// Whether a Service in `namespace` (with `namespace_labels`) labelled `service_labels`
    /// may use the pool; `Err` says why not.
    pub fn allows(
        &self,
        namespace: &str,
        namespace_labels: &BTreeMap<String, String>,
        service_labels: &BTreeMap<String, String>,
    ) -> Result<(), String> {
        let Some(al) = &self.allocation else {
            return Ok(());
        };
        let ns_listed = !al.namespaces.is_empty() || !al.namespace_selectors.is_empty();
        if ns_listed
            && !al.namespaces.iter().any(|n| n == namespace)
            && !al
                .namespace_selectors
                .iter()
                .any(|s| s.matches(namespace_labels))
        {
            return Err(format!(
                "pool {} does not serve namespace {namespace:?} (spec.serviceAllocation.namespaces / namespaceSelectors)",
                self.name
            ));
        }
        if !al.service_selectors.is_empty()
            && !al
                .service_selectors
                .iter()
                .any(|s| s.matches(service_labels))
        {
            return Err(format!(
                "pool {} does not serve this Service's labels (spec.serviceAllocation.serviceSelectors)",
                self.name
            ));
        }
        Ok(())
    }

    pub fn describe(&self) -> String {
        let r: Vec<String> = self.ranges.iter().map(|r| r.to_string()).collect();
        format!("{} ({})", self.name, r.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_and_ranges_parse() {
        let r = parse_range("10.0.0.0/30").unwrap();
        assert_eq!(r.to_string(), "10.0.0.0-10.0.0.3");
        let r = parse_range(" 10.0.0.7 - 10.0.0.9 ").unwrap();
        assert_eq!(r.to_string(), "10.0.0.7-10.0.0.9");
        assert!(r.contains(ip("10.0.0.8")) && !r.contains(ip("10.0.0.10")));
        let r = parse_range("10.0.0.5/32").unwrap();
        assert_eq!(r.to_string(), "10.0.0.5-10.0.0.5");
        let r = parse_range("2001:db8::/126").unwrap();
        assert_eq!(r.to_string(), "2001:db8::-2001:db8::3");
        assert!(!r.contains(ip("10.0.0.1")));
        let r = parse_range("2001:db8::10-2001:db8::20").unwrap();
        assert_eq!(r.family, IpFamily::IPv6);
        let all = parse_range("::/0").unwrap();
        assert_eq!((all.first, all.last), (0, u128::MAX));
        // Host bits are cleared, as for any CIDR.
        assert_eq!(
            parse_range("10.0.0.9/24").unwrap().to_string(),
            "10.0.0.0-10.0.0.255"
        );
    }

    #[test]
    fn invalid_addresses_say_why() {
        let bad = [
            ("10.0.0.0/33", "from 0 to 32"),
            ("10.0.0/24", "neither IPv4 nor IPv6"),
            ("banana", "expected a CIDR (10.0.0.0/24) or a range"),
            ("10.0.0.9-10.0.0.1", "first address is after the last"),
            ("10.0.0.1-2001:db8::1", "same IP family"),
            ("10.0.0.1-x", "\"x\" is not an IP address"),
            ("", "expected a CIDR"),
        ];
        for (input, want) in bad {
            let e = parse_range(input).unwrap_err();
            assert!(e.contains(want), "{input}: {e}");
        }
    }

    #[test]
    fn pools_validate_their_ranges_and_selectors() {
        let spec = |addrs: &[&str]| PoolSpec {
            name: "p".into(),
            addresses: addrs.iter().map(|s| s.to_string()).collect(),
            auto_assign: true,
            ..Default::default()
        };
        assert!(Pool::parse(&spec(&[])).unwrap_err().contains("empty"));
        let e = Pool::parse(&spec(&["10.0.0.0/24", "10.0.0.128-10.0.1.5"])).unwrap_err();
        assert!(
            e.contains("spec.addresses[1]") && e.contains("overlaps"),
            "{e}"
        );
        let e = Pool::parse(&spec(&["10.0.0.0/24", "nope"])).unwrap_err();
        assert!(e.starts_with("spec.addresses[1]: "), "{e}");
        let mut s = spec(&["10.0.0.0/24"]);
        s.allocation = Some(ServiceAllocation {
            service_selectors: vec![LabelSelector {
                match_expressions: vec![SelectorRequirement {
                    key: "app".into(),
                    operator: "Matches".into(),
                    values: vec![],
                }],
                ..Default::default()
            }],
            ..Default::default()
        });
        let e = Pool::parse(&s).unwrap_err();
        assert!(e.contains("unsupported operator \"Matches\""), "{e}");
    }

    #[test]
    fn sizes_count_buggy_addresses_once() {
        let pool = |a: &str, avoid: bool| {
            Pool::parse(&PoolSpec {
                name: "p".into(),
                addresses: vec![a.into()],
                avoid_buggy_ips: avoid,
                ..Default::default()
            })
            .unwrap()
        };
        assert_eq!(pool("10.0.0.0/24", false).size(IpFamily::IPv4), 256);
        assert_eq!(pool("10.0.0.0/24", true).size(IpFamily::IPv4), 254);
        assert_eq!(pool("10.0.0.0/23", true).size(IpFamily::IPv4), 508);
        assert_eq!(pool("10.0.0.250-10.0.1.5", true).size(IpFamily::IPv4), 10);
        assert_eq!(pool("10.0.0.1-10.0.0.254", true).size(IpFamily::IPv4), 254);
        assert_eq!(
            pool("0.0.0.0/0", true).size(IpFamily::IPv4),
            (1 << 32) - (1 << 25)
        );
        assert_eq!(pool("2001:db8::/120", true).size(IpFamily::IPv6), 256);
        assert_eq!(pool("::/0", false).size(IpFamily::IPv6), u128::MAX);
        // Brute force over small ranges.
        for first in 0u128..600 {
            for last in [first, first + 1, first + 255, first + 256, first + 700] {
                let brute = (first..=last)
                    .filter(|n| is_buggy(IpFamily::IPv4, *n))
                    .count();
                assert_eq!(buggy_in(first, last), brute as u128, "{first}..={last}");
            }
        }
    }

    #[test]
    fn selectors_match_like_kubernetes() {
        let labels: BTreeMap<String, String> = [("team", "a"), ("env", "prod")]
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        let req = |key: &str, op: &str, values: &[&str]| SelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: values.iter().map(|s| s.to_string()).collect(),
        };
        let sel = |ml: &[(&str, &str)], me: Vec<SelectorRequirement>| LabelSelector {
            match_labels: ml
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            match_expressions: me,
        };
        assert!(sel(&[], vec![]).matches(&labels));
        assert!(sel(&[("team", "a")], vec![]).matches(&labels));
        assert!(!sel(&[("team", "b")], vec![]).matches(&labels));
        assert!(sel(&[], vec![req("env", "In", &["prod", "dev"])]).matches(&labels));
        assert!(!sel(&[], vec![req("env", "NotIn", &["prod"])]).matches(&labels));
        assert!(sel(&[], vec![req("zone", "NotIn", &["x"])]).matches(&labels));
        assert!(sel(&[], vec![req("team", "Exists", &[])]).matches(&labels));
        assert!(!sel(&[], vec![req("team", "DoesNotExist", &[])]).matches(&labels));
        assert!(!sel(&[("team", "a")], vec![req("zone", "Exists", &[])]).matches(&labels));
    }
}
