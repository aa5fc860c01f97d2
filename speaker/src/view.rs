//! From watched objects to the election's inputs.

use super::election::{Advertisement, Inputs, NodeView, ServiceView};
use berth_api::nodes;
use berth_providers::l2::{AllocRequest, Allocator, PoolSpec};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;
use kube::api::DynamicObject;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

pub fn node_view(n: &Node) -> NodeView {
    NodeView {
        name: n.name_any(),
        labels: n.labels().clone(),
        usable: nodes::is_eligible(n) && nodes::is_ready(n),
    }
}

/// `namespace/name`.
pub fn key(s: &Service) -> String {
    format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any())
}

/// The VIPs of a Service of our class: its `status.loadBalancer.ingress[].ip`.
pub fn vips(s: &Service, class: &str) -> Vec<IpAddr> {
    let Some(spec) = s.spec.as_ref() else {
        return vec![];
    };
    if spec.type_.as_deref() != Some("LoadBalancer")
        || spec.load_balancer_class.as_deref() != Some(class)
    {
        return vec![];
    }
    s.status
        .as_ref()
        .and_then(|st| st.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|ing| {
            ing.iter()
                .filter(|i| i.ip_mode.as_deref().is_none_or(|m| m == "VIP"))
                .filter_map(|i| i.ip.as_deref()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Nodes with a ready endpoint, per `namespace/service`.
pub fn endpoint_nodes<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for sl in slices {
        let Some(svc) = sl.labels().get("kubernetes.io/service-name") else {
            continue;
        };
        let k = format!("{}/{}", sl.namespace().unwrap_or_default(), svc);
        let set = out.entry(k).or_default();
        for e in &sl.endpoints {
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if ready && let Some(n) = &e.node_name {
                set.insert(n.clone());
            }
        }
    }
    out
}

/// An L2Advertisement's spec.
pub fn advertisement(o: &DynamicObject) -> Advertisement {
    let spec = &o.data["spec"];
    let strings = |k: &str| -> Vec<String> {
        spec[k]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    Advertisement {
        pools: strings("ipAddressPools"),
        node_selectors: spec["nodeSelectors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| serde_json::from_value::<LabelSelector>(v.clone()).ok())
                    .collect()
            })
            .unwrap_or_default(),
        interfaces: strings("interfaces"),
    }
}

/// The pools in the controller's precedence order (oldest first, then by name).
pub use berth_api::crd::pool_specs;

/// Which IPAddressPool each address lies in — the pool a VIP came from, whatever the
/// Service's `berth.io/address-pool` says (the controller may have auto-assigned it, or the
/// annotation may have changed since). Decided by the l2 allocator itself, so parsing, and
/// which of two overlapping or invalid pools holds an address, match the controller exactly.
#[derive(Debug, Default)]
pub struct PoolIndex {
    /// The pools as watched, in precedence order.
    specs: Vec<PoolSpec>,
    /// An allocator holding the pools' ranges only (no selectors, nothing avoided); it never
    /// keeps an assignment.
    alloc: Allocator,
    memo: HashMap<IpAddr, Option<String>>,
}

impl PoolIndex {
    const PROBE: &str = "berth-speaker/pool-of";

    pub fn new(specs: Vec<PoolSpec>) -> Self {
        let mut p = Self::default();
        p.set(specs);
        p
    }

    /// Replaces the pools (in precedence order) when they changed.
    pub fn set(&mut self, specs: Vec<PoolSpec>) {
        if specs == self.specs {
            return;
        }
        let ranges: Vec<PoolSpec> = specs
            .iter()
            .map(|s| PoolSpec {
                name: s.name.clone(),
                addresses: s.addresses.clone(),
                ..Default::default()
            })
            .collect();
        self.alloc = Allocator::new();
        self.alloc.set_pools(&ranges);
        self.specs = specs;
        self.memo.clear();
    }

    /// The pool whose `spec.addresses` contain `ip`, if a valid one does.
    pub fn pool_of(&mut self, ip: IpAddr) -> Option<String> {
        if let Some(p) = self.memo.get(&ip) {
            return p.clone();
        }
        // Restoring an address succeeds exactly when it lies in a valid pool, and names it.
        let probe = AllocRequest {
            uid: Self::PROBE.into(),
            requested_field: "status.loadBalancer.ingress".into(),
            ..Default::default()
        };
        let pool = match self.alloc.restore(&probe, &[ip]) {
            Ok(()) => self.alloc.release(Self::PROBE).map(|a| a.pool),
            Err(_) => None,
        };
        self.memo.insert(ip, pool.clone());
        pool
    }

    /// Forgets the answers for addresses that are no longer VIPs.
    fn retain(&mut self, keep: impl Fn(&IpAddr) -> bool) {
        self.memo.retain(|ip, _| keep(ip));
    }
}

/// The election's inputs from the watched objects.
pub fn inputs<'a>(
    class: &str,
    nodes: impl IntoIterator<Item = &'a Node>,
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    pools: &mut PoolIndex,
    advertisements: Option<Vec<Advertisement>>,
    live: BTreeSet<String>,
) -> Inputs {
    let eps = endpoint_nodes(slices);
    let mut by_vip: BTreeMap<IpAddr, Vec<ServiceView>> = BTreeMap::new();
    for s in services {
        let ips = vips(s, class);
        if ips.is_empty() {
            continue;
        }
        let k = key(s);
        let view = ServiceView {
            local: s
                .spec
                .as_ref()
                .and_then(|sp| sp.external_traffic_policy.as_deref())
                == Some("Local"),
            endpoint_nodes: eps.get(&k).cloned().unwrap_or_default(),
            key: k,
        };
        for ip in ips {
            by_vip.entry(ip).or_default().push(view.clone());
        }
    }
    pools.retain(|ip| by_vip.contains_key(ip));
    let pools = by_vip
        .keys()
        .filter_map(|ip| Some((*ip, pools.pool_of(*ip)?)))
        .collect();
    Inputs {
        nodes: nodes.into_iter().map(node_view).collect(),
        live,
        vips: by_vip,
        pools,
        advertisements,
    }
}

#[cfg(test)]
mod tests {
    use super::super::election;
    use super::*;
    use berth_api::crd::IPAddressPool;
    use serde_json::{Value, json};

    #[test]
    fn reads_vips_of_our_class_only() {
        let svc = |class: &str| -> Service {
            serde_json::from_value(json!({
                "metadata": {"name": "a", "namespace": "default"},
                "spec": {"type": "LoadBalancer", "loadBalancerClass": class},
                "status": {"loadBalancer": {"ingress": [
                    {"ip": "10.99.0.100", "ipMode": "VIP"},
                    {"ip": "fd99::64"},
                    {"ip": "10.99.0.101", "ipMode": "Proxy"},
                    {"hostname": "x.example"}
                ]}}
            }))
            .unwrap()
        };
        assert_eq!(
            vips(&svc("berth.io/l2"), "berth.io/l2"),
            vec![
                "10.99.0.100".parse::<IpAddr>().unwrap(),
                "fd99::64".parse().unwrap()
            ]
        );
        assert!(vips(&svc("other"), "berth.io/l2").is_empty());
    }

    #[test]
    fn endpoint_nodes_keep_ready_endpoints() {
        let sl: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "a-1", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "a"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["1.1.1.1"], "nodeName": "n1", "conditions": {"ready": true}},
                {"addresses": ["1.1.1.2"], "nodeName": "n2", "conditions": {"ready": false}},
                {"addresses": ["1.1.1.3"], "nodeName": "n3"}
            ]
        }))
        .unwrap();
        let got = endpoint_nodes([&sl]);
        assert_eq!(
            got["default/a"],
            ["n1".to_string(), "n3".to_string()].into()
        );
    }

    #[test]
    fn advertisement_spec_is_read() {
        let o: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "berth.io/v1alpha1", "kind": "L2Advertisement",
            "metadata": {"name": "x"},
            "spec": {"ipAddressPools": ["p"], "interfaces": ["eth0"],
                     "nodeSelectors": [{"matchLabels": {"a": "b"}}]}
        }))
        .unwrap();
        let a = advertisement(&o);
        assert_eq!(a.pools, ["p"]);
        assert_eq!(a.interfaces, ["eth0"]);
        assert_eq!(a.node_selectors.len(), 1);
    }

    fn pool(name: &str, created: &str, addresses: &[&str]) -> IPAddressPool {
        serde_json::from_value(json!({
            "apiVersion": "berth.io/v1alpha1", "kind": "IPAddressPool",
            "metadata": {"name": name, "creationTimestamp": created},
            "spec": {"addresses": addresses, "autoAssign": false, "avoidBuggyIPs": true,
                     "serviceAllocation": {"namespaces": ["elsewhere"]}}
        }))
        .unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn pool_index_finds_the_pool_holding_an_address_as_the_allocator_does() {
        let pools = [
            // Newer and overlapping "a": the controller rejects it, so it holds nothing.
            pool("late", "2024-01-03T00:00:00Z", &["10.99.0.8/29"]),
            pool(
                "b",
                "2024-01-02T00:00:00Z",
                &["10.99.0.100-10.99.0.110", "fd99::/120"],
            ),
            pool("a", "2024-01-01T00:00:00Z", &["10.99.0.0/28"]),
            pool("bad", "2024-01-01T00:00:00Z", &["banana"]),
        ];
        let specs = pool_specs(&pools);
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "bad", "b", "late"]);
        let mut idx = PoolIndex::new(specs.clone());
        // Selectors, autoAssign and avoidBuggyIPs do not matter: only the ranges do.
        assert_eq!(idx.pool_of(ip("10.99.0.0")).as_deref(), Some("a"));
        assert_eq!(idx.pool_of(ip("10.99.0.12")).as_deref(), Some("a"));
        assert_eq!(idx.pool_of(ip("10.99.0.105")).as_deref(), Some("b"));
        assert_eq!(idx.pool_of(ip("fd99::ff")).as_deref(), Some("b"));
        assert_eq!(idx.pool_of(ip("10.99.0.16")), None);
        assert_eq!(idx.pool_of(ip("10.99.0.111")), None);
        // Asking again (memoised) and after a pool change.
        assert_eq!(idx.pool_of(ip("10.99.0.105")).as_deref(), Some("b"));
        idx.set(pool_specs(&pools[1..2]));
        assert_eq!(idx.pool_of(ip("10.99.0.12")), None);
        assert_eq!(idx.pool_of(ip("10.99.0.105")).as_deref(), Some("b"));
        idx.set(specs);
        assert_eq!(idx.pool_of(ip("10.99.0.12")).as_deref(), Some("a"));
    }

    fn node(name: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap()
    }

    fn service(name: &str, vip: &str, annotations: Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "annotations": annotations},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": "berth.io/l2"},
            "status": {"loadBalancer": {"ingress": [{"ip": vip, "ipMode": "VIP"}]}}
        }))
        .unwrap()
    }

    fn advertise(pools: &[&str], node: &str) -> Advertisement {
        advertisement(
            &serde_json::from_value(json!({
                "apiVersion": "berth.io/v1alpha1", "kind": "L2Advertisement",
                "metadata": {"name": format!("on-{node}")},
                "spec": {"ipAddressPools": pools,
                         "nodeSelectors": [{"matchLabels": {"kubernetes.io/hostname": node}}]}
            }))
            .unwrap(),
        )
    }

    #[test]
    fn a_vip_is_advertised_only_by_advertisements_listing_the_pool_it_lies_in() {
        let pools = [
            pool("a", "2024-01-01T00:00:00Z", &["10.99.0.200-10.99.0.250"]),
            pool("b", "2024-01-02T00:00:00Z", &["10.99.0.100-10.99.0.150"]),
        ];
        let mut idx = PoolIndex::new(pool_specs(&pools));
        let nodes = [node("n1"), node("n2"), node("n3")];
        let services = [
            // Auto-assigned from a: no annotation at all.
            service("auto", "10.99.0.200", json!({})),
            // The request annotation names b, but the address lies in a: a decides.
            service(
                "stale",
                "10.99.0.201",
                json!({"berth.io/address-pool": "b"}),
            ),
            service("in-b", "10.99.0.100", json!({})),
            service("in-none", "10.99.0.10", json!({})),
        ];
        let live: BTreeSet<String> = ["n1", "n2", "n3"].map(String::from).into();
        let winners = |advs: Vec<Advertisement>, idx: &mut PoolIndex| {
            let inp = inputs(
                "berth.io/l2",
                &nodes,
                &services,
                [],
                idx,
                Some(advs),
                live.clone(),
            );
            election::elect(&inp)
                .into_iter()
                .map(|(ip, a)| (ip.to_string(), a.node))
                .collect::<BTreeMap<_, _>>()
        };
        let got = winners(
            vec![advertise(&["a"], "n1"), advertise(&["b"], "n2")],
            &mut idx,
        );
        let want: BTreeMap<String, String> = [
            ("10.99.0.200", "n1"),
            ("10.99.0.201", "n1"),
            ("10.99.0.100", "n2"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .into();
        assert_eq!(got, want);
        // Only a is advertised: b's VIP and the one in no pool are announced by nobody.
        let got = winners(vec![advertise(&["a"], "n3")], &mut idx);
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            ["10.99.0.200", "10.99.0.201"]
        );
        assert!(got.values().all(|n| n == "n3"));
        // An advertisement listing no pool announces every VIP, in a pool or not.
        let got = winners(vec![advertise(&[], "n2")], &mut idx);
        assert_eq!(got.len(), 4);
        // With no pools known, advertisements listing pools announce nothing.
        idx.set(vec![]);
        assert!(winners(vec![advertise(&["a", "b"], "n1")], &mut idx).is_empty());
    }
}
