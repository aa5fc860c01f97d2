//! From watched objects to the election's inputs.

use super::election::{Advertisement, Inputs, NodeView, ServiceView};
use crate::nodes;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;
use kube::api::DynamicObject;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// The annotation naming the pool a Service asks its address from (see the l2 allocator).
pub const POOL_ANNOTATION: &str = "berth.io/address-pool";

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

/// The election's inputs from the watched objects.
pub fn inputs<'a>(
    class: &str,
    nodes: impl IntoIterator<Item = &'a Node>,
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    advertisements: Option<Vec<Advertisement>>,
    live: BTreeSet<String>,
) -> Inputs {
    let eps = endpoint_nodes(slices);
    let mut vips: BTreeMap<IpAddr, Vec<ServiceView>> = BTreeMap::new();
    for s in services {
        let ips = vips_of(s, class);
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
            pool: s.annotations().get(POOL_ANNOTATION).cloned(),
            key: k,
        };
        for ip in ips {
            vips.entry(ip).or_default().push(view.clone());
        }
    }
    Inputs {
        nodes: nodes.into_iter().map(node_view).collect(),
        live,
        vips,
        advertisements,
    }
}

fn vips_of(s: &Service, class: &str) -> Vec<IpAddr> {
    vips(s, class)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
