//! Which node announces each VIP: a pure function of what every speaker sees (Nodes,
//! Services, EndpointSlices, L2Advertisements, live speakers), so every speaker computes the
//! same answer without talking to the API server or to each other.
//!
//! Rendezvous hashing: among the candidates for a VIP the node with the highest
//! `sha256(node 0x00 vip)` wins. VIPs spread evenly, a node joining or leaving moves only the
//! VIPs it wins or won, and Services sharing an IP land on one node because the election is
//! per IP, not per Service.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// A node as the election sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeView {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// `nodes::is_eligible` and Ready (a NotReady node's network may be down: it must not
    /// announce).
    pub usable: bool,
}

/// One Service holding a VIP.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceView {
    /// `namespace/name`.
    pub key: String,
    /// `externalTrafficPolicy: Local`.
    pub local: bool,
    /// Nodes with a ready endpoint of this Service.
    pub endpoint_nodes: BTreeSet<String>,
}

/// An `L2Advertisement` (berth.io/v1alpha1) spec.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Advertisement {
    /// `ipAddressPools`: empty means every pool.
    pub pools: Vec<String>,
    /// `nodeSelectors`: empty means every node.
    pub node_selectors: Vec<LabelSelector>,
    /// `interfaces`: empty means the speaker's default interfaces.
    pub interfaces: Vec<String>,
}

/// The winner of one VIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub node: String,
    /// Interfaces to announce on; None: the speaker's default set.
    pub interfaces: Option<BTreeSet<String>>,
    /// The Services (`namespace/name`) holding the VIP.
    pub services: BTreeSet<String>,
}

/// Everything the election depends on.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub nodes: Vec<NodeView>,
    /// Speakers the failure detector considers alive (this one included).
    pub live: BTreeSet<String>,
    pub vips: BTreeMap<IpAddr, Vec<ServiceView>>,
    /// The IPAddressPool each VIP lies in (a VIP in no known pool is absent).
    pub pools: BTreeMap<IpAddr, String>,
    /// None: no L2Advertisement resource is served (announce everything everywhere).
    /// Some(empty): the resource exists but no advertisement does (announce nothing).
    pub advertisements: Option<Vec<Advertisement>>,
}

/// The rendezvous score of `node` for `vip`.
pub fn score(node: &str, vip: IpAddr) -> u64 {
    let mut h = Sha256::new();
    h.update(node.as_bytes());
    h.update([0u8]);
    h.update(vip.to_string().as_bytes());
    let d = h.finalize();
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// Whether `labels` satisfy `sel`, by kube's selector matcher; a selector kube refuses (an
/// unknown operator, `In` without values) matches nothing.
pub fn selects(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    use kube::core::{Selector, SelectorExt};
    Selector::try_from(sel.clone()).is_ok_and(|s| s.matches(labels))
}

/// Whether `a` announces a VIP lying in `pool`: one listing pools announces only their
/// addresses, so a VIP in no known pool is announced only by advertisements listing none.
fn adv_applies(a: &Advertisement, pool: Option<&String>) -> bool {
    a.pools.is_empty() || pool.is_some_and(|p| a.pools.contains(p))
}

fn adv_selects(a: &Advertisement, n: &NodeView) -> bool {
    a.node_selectors.is_empty() || a.node_selectors.iter().any(|s| selects(s, &n.labels))
}

/// The winner of every VIP that has one. A VIP with no candidate is announced by nobody.
pub fn elect(inp: &Inputs) -> BTreeMap<IpAddr, Assignment> {
    let mut out = BTreeMap::new();
    for (vip, svcs) in &inp.vips {
        let advs: Option<Vec<&Advertisement>> = inp.advertisements.as_ref().map(|all| {
            let pool = inp.pools.get(vip);
            all.iter().filter(|a| adv_applies(a, pool)).collect()
        });
        if advs.as_ref().is_some_and(|a| a.is_empty()) {
            continue;
        }
        let winner = inp
            .nodes
            .iter()
            .filter(|n| n.usable && inp.live.contains(&n.name))
            .filter(|n| {
                svcs.iter()
                    .filter(|s| s.local)
                    .all(|s| s.endpoint_nodes.contains(&n.name))
            })
            .filter(|n| {
                advs.as_ref()
                    .is_none_or(|a| a.iter().any(|a| adv_selects(a, n)))
            })
            .max_by(|a, b| (score(&a.name, *vip), &b.name).cmp(&(score(&b.name, *vip), &a.name)));
        let Some(w) = winner else { continue };
        let interfaces = advs.and_then(|advs| {
            let sel: Vec<&&Advertisement> = advs.iter().filter(|a| adv_selects(a, w)).collect();
            if sel.iter().any(|a| a.interfaces.is_empty()) {
                None
            } else {
                Some(
                    sel.iter()
                        .flat_map(|a| a.interfaces.iter().cloned())
                        .collect(),
                )
            }
        });
        out.insert(
            *vip,
            Assignment {
                node: w.name.clone(),
                interfaces,
                services: svcs.iter().map(|s| s.key.clone()).collect(),
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn node(name: &str) -> NodeView {
        NodeView {
            name: name.into(),
            labels: [("kubernetes.io/hostname".to_string(), name.to_string())].into(),
            usable: true,
        }
    }

    fn svc(key: &str) -> ServiceView {
        ServiceView {
            key: key.into(),
            ..Default::default()
        }
    }

    fn inputs(nodes: &[&str], vips: &[(&str, Vec<ServiceView>)]) -> Inputs {
        Inputs {
            nodes: nodes.iter().map(|n| node(n)).collect(),
            live: nodes.iter().map(|n| n.to_string()).collect(),
            vips: vips
                .iter()
                .map(|(ip, s)| (ip.parse().unwrap(), s.clone()))
                .collect(),
            pools: BTreeMap::new(),
            advertisements: None,
        }
    }

    fn winner(inp: &Inputs, ip: &str) -> Option<String> {
        elect(inp)
            .get(&ip.parse::<IpAddr>().unwrap())
            .map(|a| a.node.clone())
    }

    #[test]
    fn the_highest_score_wins_and_order_does_not_matter() {
        let ip: IpAddr = "10.99.0.100".parse().unwrap();
        let names = ["node-a", "node-b", "node-c"];
        let best = names.iter().max_by_key(|n| score(n, ip)).unwrap();
        let mut inp = inputs(&names, &[("10.99.0.100", vec![svc("default/a")])]);
        assert_eq!(winner(&inp, "10.99.0.100").as_deref(), Some(*best));
        inp.nodes.reverse();
        assert_eq!(winner(&inp, "10.99.0.100").as_deref(), Some(*best));
    }

    #[test]
    fn vips_spread_evenly() {
        let names: Vec<String> = (0..4).map(|i| format!("node-{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let vips: Vec<(String, Vec<ServiceView>)> = (0..1000)
            .map(|i| (format!("10.99.{}.{}", i / 250, i % 250), vec![svc("x/y")]))
            .collect();
        let vref: Vec<(&str, Vec<ServiceView>)> =
            vips.iter().map(|(a, s)| (a.as_str(), s.clone())).collect();
        let inp = inputs(&refs, &vref);
        let mut per: BTreeMap<String, usize> = BTreeMap::new();
        for a in elect(&inp).values() {
            *per.entry(a.node.clone()).or_default() += 1;
        }
        assert_eq!(per.values().sum::<usize>(), 1000);
        for (n, c) in &per {
            assert!((180..=320).contains(c), "{n} got {c} of 1000");
        }
    }

    #[test]
    fn a_dead_speaker_loses_only_its_vips() {
        let names = ["n1", "n2", "n3"];
        let vips: Vec<(String, Vec<ServiceView>)> = (0..60)
            .map(|i| (format!("10.99.0.{i}"), vec![svc("x/y")]))
            .collect();
        let vref: Vec<(&str, Vec<ServiceView>)> =
            vips.iter().map(|(a, s)| (a.as_str(), s.clone())).collect();
        let mut inp = inputs(&names, &vref);
        let before = elect(&inp);
        inp.live.remove("n2");
        let after = elect(&inp);
        for (ip, a) in &before {
            if a.node != "n2" {
                assert_eq!(after[ip].node, a.node, "{ip} moved needlessly");
            } else {
                assert_ne!(after[ip].node, "n2");
            }
        }
    }

    #[test]
    fn unusable_or_dead_nodes_never_win() {
        let mut inp = inputs(&["n1", "n2"], &[("10.99.0.1", vec![svc("a/b")])]);
        inp.nodes[0].usable = false;
        assert_eq!(winner(&inp, "10.99.0.1").as_deref(), Some("n2"));
        inp.live.remove("n2");
        assert_eq!(winner(&inp, "10.99.0.1"), None);
    }

    #[test]
    fn local_traffic_policy_needs_a_local_endpoint() {
        let mut s = svc("a/b");
        s.local = true;
        s.endpoint_nodes = ["n3".to_string()].into();
        let mut inp = inputs(&["n1", "n2", "n3"], &[("10.99.0.1", vec![s])]);
        assert_eq!(winner(&inp, "10.99.0.1").as_deref(), Some("n3"));
        inp.vips.values_mut().next().unwrap()[0].endpoint_nodes = BTreeSet::new();
        assert_eq!(winner(&inp, "10.99.0.1"), None);
    }

    #[test]
    fn shared_ip_services_are_elected_together() {
        let inp = inputs(
            &["n1", "n2", "n3"],
            &[("10.99.0.7", vec![svc("a/one"), svc("a/two")])],
        );
        let got = elect(&inp);
        let a = &got[&"10.99.0.7".parse::<IpAddr>().unwrap()];
        assert_eq!(
            a.services,
            ["a/one".to_string(), "a/two".to_string()].into()
        );
    }

    #[test]
    fn advertisements_filter_pools_nodes_and_pick_interfaces() {
        let mut inp = inputs(&["n1", "n2", "n3"], &[("10.99.0.1", vec![svc("a/b")])]);
        inp.pools = [("10.99.0.1".parse().unwrap(), "blue".to_string())].into();
        // The resource exists but nothing advertises: nobody announces.
        inp.advertisements = Some(vec![]);
        assert_eq!(winner(&inp, "10.99.0.1"), None);
        // An advertisement for another pool does not apply.
        inp.advertisements = Some(vec![Advertisement {
            pools: vec!["red".into()],
            ..Default::default()
        }]);
        assert_eq!(winner(&inp, "10.99.0.1"), None);
        // One for this pool, selecting n2 only, on eth1.
        inp.advertisements = Some(vec![Advertisement {
            pools: vec!["blue".into()],
            node_selectors: vec![LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "kubernetes.io/hostname".into(),
                    operator: "In".into(),
                    values: Some(vec!["n2".into()]),
                }]),
                ..Default::default()
            }],
            interfaces: vec!["eth1".into()],
        }]);
        let got = elect(&inp);
        let a = got.values().next().unwrap();
        assert_eq!(a.node, "n2");
        assert_eq!(a.interfaces, Some(["eth1".to_string()].into()));
    }

    #[test]
    fn label_selector_operators() {
        let labels: BTreeMap<String, String> = [("k".to_string(), "v".to_string())].into();
        let expr = |op: &str, vals: &[&str]| LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "k".into(),
                operator: op.into(),
                values: Some(vals.iter().map(|s| s.to_string()).collect()),
            }]),
            ..Default::default()
        };
        assert!(selects(&expr("In", &["v"]), &labels));
        assert!(!selects(&expr("NotIn", &["v"]), &labels));
        assert!(selects(&expr("Exists", &[]), &labels));
        assert!(!selects(&expr("DoesNotExist", &[]), &labels));
        assert!(!selects(&expr("Bogus", &[]), &labels));
        let ml = LabelSelector {
            match_labels: Some([("k".to_string(), "w".to_string())].into()),
            ..Default::default()
        };
        assert!(!selects(&ml, &labels));
        assert!(selects(&LabelSelector::default(), &labels));
    }
}
