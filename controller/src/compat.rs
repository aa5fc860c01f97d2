//! Annotations of the load balancers berth replaces (MetalLB, kube-vip, Cilium LB-IPAM),
//! honoured with the meaning of berth's own: a Service moved to berth keeps the address, pool
//! and sharing its owner asked for. Two annotations of one meaning that disagree make the
//! Service invalid (a Warning naming both, nothing allocated) rather than one silently winning.

use crate::desired::{InvalidField, annotation_field as field, annotations};
use berth_providers::l2::{POOL_ANNOTATION, SHARING_ANNOTATION};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// berth's annotation → the other projects' annotations with the same meaning.
pub const ALIASES: [(&str, &[&str]); 3] = [
    (
        annotations::LB_IPS,
        &[
            "metallb.io/loadBalancerIPs",
            "metallb.universe.tf/loadBalancerIPs",
            "kube-vip.io/loadbalancerIPs",
            "lbipam.cilium.io/ips",
        ],
    ),
    (
        POOL_ANNOTATION,
        &[
            "metallb.io/address-pool",
            "metallb.universe.tf/address-pool",
        ],
    ),
    (
        SHARING_ANNOTATION,
        &[
            "metallb.io/allow-shared-ip",
            "metallb.universe.tf/allow-shared-ip",
            "lbipam.cilium.io/sharing-key",
        ],
    ),
];

/// The value's meaning, for comparing two annotations: a set of addresses for address lists,
/// the trimmed text otherwise.
fn meaning(berth_key: &str, key: &str, value: &str) -> Result<String, InvalidField> {
    if berth_key != annotations::LB_IPS {
        return Ok(value.trim().to_string());
    }
    let mut ips = BTreeSet::new();
    for part in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let ip: IpAddr = part.parse().map_err(|_| InvalidField {
            field: field(key),
            message: format!(
                "invalid value {}: must be a comma-separated list of IP addresses",
                berth_providers::bounds::quote(part)
            ),
        })?;
        ips.insert(ip);
    }
    Ok(ips
        .iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(","))
}

/// `ann` with every honoured alias folded into berth's annotation of the same meaning (which
/// keeps its own text when present). Err when two of one meaning disagree.
pub fn fold_aliases(
    ann: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, InvalidField> {
    let mut out = ann.clone();
    for (berth_key, aliases) in ALIASES {
        let given: Vec<(&str, &String)> = std::iter::once(berth_key)
            .chain(aliases.iter().copied())
            .filter_map(|k| ann.get(k).map(|v| (k, v)))
            .filter(|(_, v)| !v.trim().is_empty())
            .collect();
        let Some(&(first_key, first_value)) = given.first() else {
            continue;
        };
        let first_meaning = meaning(berth_key, first_key, first_value)?;
        for &(key, value) in &given[1..] {
            if meaning(berth_key, key, value)? != first_meaning {
                return Err(InvalidField {
                    field: field(key),
                    message: format!(
                        "{} disagrees with {first_key} ({}); they mean the same, so give one",
                        berth_providers::bounds::quote(value),
                        berth_providers::bounds::quote(first_value),
                    ),
                });
            }
        }
        out.entry(berth_key.to_string())
            .or_insert_with(|| first_value.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_alias_means_berths_annotation() {
        for (berth_key, aliases) in ALIASES {
            for alias in aliases {
                let value = if berth_key == annotations::LB_IPS {
                    "10.0.0.5"
                } else {
                    "blue"
                };
                let got = fold_aliases(&map(&[(alias, value)])).unwrap();
                assert_eq!(
                    got.get(berth_key).map(String::as_str),
                    Some(value),
                    "{alias}"
                );
                assert_eq!(got.get(*alias).map(String::as_str), Some(value), "kept");
            }
        }
    }

    #[test]
    fn agreeing_annotations_are_fine_and_berths_text_wins() {
        let got = fold_aliases(&map(&[
            (annotations::LB_IPS, "10.0.0.5, 2001:db8::5"),
            ("metallb.io/loadBalancerIPs", "2001:db8::5,10.0.0.5"),
            ("lbipam.cilium.io/ips", "10.0.0.5,2001:db8:0::5"),
        ]))
        .unwrap();
        assert_eq!(got[annotations::LB_IPS], "10.0.0.5, 2001:db8::5");
        let got = fold_aliases(&map(&[
            ("metallb.io/allow-shared-ip", "k"),
            ("lbipam.cilium.io/sharing-key", " k "),
        ]))
        .unwrap();
        assert_eq!(got[SHARING_ANNOTATION], "k");
        // Nothing of these: the map is unchanged.
        let plain = map(&[("other", "x")]);
        assert_eq!(fold_aliases(&plain).unwrap(), plain);
    }

    #[test]
    fn disagreeing_annotations_name_both() {
        let e = fold_aliases(&map(&[
            (annotations::LB_IPS, "10.0.0.5"),
            ("metallb.io/loadBalancerIPs", "10.0.0.6"),
        ]))
        .unwrap_err();
        assert_eq!(e.field, "metadata.annotations[metallb.io/loadBalancerIPs]");
        assert!(e.message.contains(annotations::LB_IPS), "{e}");
        let e = fold_aliases(&map(&[
            ("metallb.io/address-pool", "a"),
            ("metallb.universe.tf/address-pool", "b"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("metallb.io/address-pool"), "{e}");
        assert!(
            e.to_string().contains("metallb.universe.tf/address-pool"),
            "{e}"
        );
        // A bad address is named under the key the user wrote.
        let e = fold_aliases(&map(&[("kube-vip.io/loadbalancerIPs", "10.0.0.300")])).unwrap_err();
        assert_eq!(e.field, "metadata.annotations[kube-vip.io/loadbalancerIPs]");
    }
}
