//! Simulated Nodes: the objects [`Cluster::add_node`](super::Cluster::add_node) creates, the
//! completion of Nodes created through the API (what kubelet registration and the cloud
//! controller manager would fill in), and the garbage collection of a deleted Node's pods.

use super::{Controller, Kind, NodeAlloc, Shared, list, modify, name_of, namespace_of, str_at};
use crate::apiserver::DeleteOptions;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

pub const ZONES: [&str; 3] = ["zone-a", "zone-b", "zone-c"];
pub const REGION: &str = "mock-region-1";
pub const INSTANCE_TYPE: &str = "mock.standard";
pub const KUBELET_VERSION: &str = "v1.33.0";

/// The node's InternalIP (IPv4) from `status.addresses`.
pub fn internal_ip(node: &Value) -> Option<Ipv4Addr> {
    super::array(node, "/status/addresses")
        .iter()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())
        .and_then(|s| s.parse().ok())
}

/// Whether the node's Ready condition is True.
pub fn is_ready(node: &Value) -> bool {
    super::array(node, "/status/conditions")
        .iter()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// The zone of a node with these addresses: spread over [`ZONES`] by pod subnet.
pub fn zone_for(a: NodeAlloc) -> &'static str {
    ZONES[usize::from(a.subnet.saturating_sub(super::POD_SUBNET_BASE)) % ZONES.len()]
}

/// The labels kubelet and the cloud provider put on a node.
pub fn standard_labels(name: &str, zone: &str) -> BTreeMap<String, String> {
    [
        ("kubernetes.io/hostname", name),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
        ("beta.kubernetes.io/os", "linux"),
        ("beta.kubernetes.io/arch", "amd64"),
        ("node.kubernetes.io/instance-type", INSTANCE_TYPE),
        ("topology.kubernetes.io/zone", zone),
        ("topology.kubernetes.io/region", REGION),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn pod_cidr(ip: Ipv4Addr, subnet: u8) -> String {
    let o = ip.octets();
    format!("{}.{}.{subnet}.0/24", o[0], o[1])
}

fn condition(type_: &str, status: bool, reason: &str, message: &str, now: &str) -> Value {
    json!({
        "type": type_,
        "status": if status { "True" } else { "False" },
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
        "reason": reason,
        "message": message,
    })
}

fn ready_condition(ready: bool, now: &str) -> Value {
    if ready {
        condition(
            "Ready",
            true,
            "KubeletReady",
            "kubelet is posting ready status",
            now,
        )
    } else {
        condition(
            "Ready",
            false,
            "KubeletNotReady",
            "container runtime is down",
            now,
        )
    }
}

fn default_conditions(now: &str) -> Value {
    json!([
        condition(
            "MemoryPressure",
            false,
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
            now
        ),
        condition(
            "DiskPressure",
            false,
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
            now
        ),
        condition(
            "PIDPressure",
            false,
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
            now
        ),
        ready_condition(true, now),
    ])
}

fn resources() -> Value {
    json!({
        "cpu": "4",
        "memory": "16384Mi",
        "ephemeral-storage": "100Gi",
        "pods": "110",
        "hugepages-2Mi": "0",
    })
}

fn node_info(name: &str) -> Value {
    json!({
        "machineID": format!("mock-{name}"),
        "systemUUID": format!("mock-{name}"),
        "bootID": format!("mock-boot-{name}"),
        "kernelVersion": "6.8.0-mock",
        "osImage": "mock-cloud Linux",
        "containerRuntimeVersion": "mock://1.0",
        "kubeletVersion": KUBELET_VERSION,
        "kubeProxyVersion": KUBELET_VERSION,
        "operatingSystem": "linux",
        "architecture": "amd64",
    })
}

/// A complete Node object as a freshly registered kubelet on a cloud would have it.
pub fn node_object(
    name: &str,
    a: NodeAlloc,
    extra_labels: &BTreeMap<String, String>,
    provider_id: Option<&str>,
    now: &str,
) -> Value {
    let mut labels = standard_labels(name, zone_for(a));
    labels.extend(extra_labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    let cidr = pod_cidr(a.ip, a.subnet);
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {
            "podCIDR": cidr,
            "podCIDRs": [cidr],
            "providerID": provider_id.map(str::to_string).unwrap_or_else(|| format!("mock-cloud://{name}")),
        },
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": a.ip.to_string()},
                {"type": "Hostname", "address": name},
            ],
            "conditions": default_conditions(now),
            "capacity": resources(),
            "allocatable": resources(),
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": node_info(name),
        },
    })
}

/// Fills in what a Node created through the API lacks in metadata/spec (standard labels,
/// podCIDR, providerID). Returns whether anything changed.
pub fn complete_spec(node: &mut Value, a: NodeAlloc) -> bool {
    let name = name_of(node).to_string();
    let mut changed = false;
    for (k, v) in standard_labels(&name, zone_for(a)) {
        if super::label(node, &k).is_none() {
            changed |= super::set_label(node, &k, Some(&v));
        }
    }
    if !node["spec"].is_object() {
        node["spec"] = json!({});
        changed = true;
    }
    let spec = &mut node["spec"];
    if spec.get("podCIDR").and_then(Value::as_str).is_none() {
        let cidr = pod_cidr(a.ip, a.subnet);
        spec["podCIDR"] = json!(cidr);
        spec["podCIDRs"] = json!([cidr]);
        changed = true;
    }
    if spec.get("providerID").and_then(Value::as_str).is_none() {
        spec["providerID"] = json!(format!("mock-cloud://{name}"));
        changed = true;
    }
    changed
}

/// Fills in what a Node created through the API lacks in status (InternalIP, Hostname,
/// conditions, capacity, nodeInfo). Returns whether anything changed.
pub fn complete_status(node: &mut Value, ip: Ipv4Addr, now: &str) -> bool {
    let name = name_of(node).to_string();
    let mut changed = false;
    if !node["status"].is_object() {
        node["status"] = json!({});
        changed = true;
    }
    let has_ip = internal_ip(node).is_some();
    let status = match node["status"].as_object_mut() {
        Some(s) => s,
        None => return changed,
    };
    if !has_ip {
        let mut addrs: Vec<Value> = status
            .get("addresses")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        addrs.retain(|a| a["type"] != "InternalIP");
        addrs.insert(0, json!({"type": "InternalIP", "address": ip.to_string()}));
        if !addrs.iter().any(|a| a["type"] == "Hostname") {
            addrs.push(json!({"type": "Hostname", "address": name}));
        }
        status.insert("addresses".into(), Value::Array(addrs));
        changed = true;
    }
    let mut fill = |s: &mut Map<String, Value>, key: &str, v: Value| {
        if s.get(key).is_none_or(|x| x.is_null()) {
            s.insert(key.into(), v);
            changed = true;
        }
    };
    fill(status, "conditions", default_conditions(now));
    fill(status, "capacity", resources());
    fill(status, "allocatable", resources());
    fill(status, "nodeInfo", node_info(&name));
    fill(
        status,
        "daemonEndpoints",
        json!({"kubeletEndpoint": {"Port": 10250}}),
    );
    changed
}

/// Sets the Ready condition. Returns whether anything changed.
pub fn set_ready(node: &mut Value, ready: bool, now: &str) -> bool {
    if !node["status"].is_object() {
        node["status"] = json!({});
    }
    let want = if ready { "True" } else { "False" };
    let conds = &mut node["status"]["conditions"];
    if !conds.is_array() {
        *conds = json!([]);
    }
    let Some(conds) = conds.as_array_mut() else {
        return false;
    };
    match conds.iter_mut().find(|c| c["type"] == "Ready") {
        Some(c) if c["status"] == want => false,
        Some(c) => {
            *c = ready_condition(ready, now);
            true
        }
        None => {
            conds.push(ready_condition(ready, now));
            true
        }
    }
}

/// Adds a taint, replacing one with the same key and effect. Returns whether anything changed.
pub fn add_taint(node: &mut Value, key: &str, value: Option<&str>, effect: &str) -> bool {
    let mut taint = json!({"key": key, "effect": effect});
    if let Some(v) = value {
        taint["value"] = json!(v);
    }
    if !node["spec"].is_object() {
        node["spec"] = json!({});
    }
    let taints = &mut node["spec"]["taints"];
    if !taints.is_array() {
        *taints = json!([]);
    }
    let Some(taints) = taints.as_array_mut() else {
        return false;
    };
    if taints.contains(&taint) {
        return false;
    }
    taints.retain(|t| !(t["key"] == key && t["effect"] == effect));
    taints.push(taint);
    true
}

/// Removes every taint with this key. Returns whether anything changed.
pub fn remove_taint(node: &mut Value, key: &str) -> bool {
    let Some(taints) = node
        .pointer_mut("/spec/taints")
        .and_then(Value::as_array_mut)
    else {
        return false;
    };
    let before = taints.len();
    taints.retain(|t| t["key"] != key);
    before != taints.len()
}

/// Completes Nodes created through the API and cleans up after deleted ones.
#[derive(Default)]
pub(crate) struct NodeController {
    seen: BTreeSet<String>,
}

impl Controller for NodeController {
    const NAME: &'static str = "nodes";

    fn watches(&self) -> &'static [Kind] {
        &[Kind::Nodes]
    }

    async fn reconcile(&mut self, shared: &Arc<Shared>, _resync: bool) {
        let nodes = list(shared, Kind::Nodes);
        let mut present = BTreeSet::new();
        for node in &nodes {
            let name = name_of(node).to_string();
            present.insert(name.clone());
            let Some(a) = shared.node_alloc(node) else {
                tracing::warn!(node = %name, "no free address for node");
                continue;
            };
            if super::is_deleting(node) {
                continue;
            }
            let mut probe = (**node).clone();
            if complete_spec(&mut probe, a)
                && let Err(e) = modify(shared, Kind::Nodes, "", &name, false, |n| {
                    complete_spec(n, a)
                })
            {
                tracing::warn!(node = %name, error = %e, "completing node spec");
            }
            let t = super::now();
            let mut probe = (**node).clone();
            if complete_status(&mut probe, a.ip, &t)
                && let Err(e) = modify(shared, Kind::Nodes, "", &name, true, |n| {
                    complete_status(n, a.ip, &t)
                })
            {
                tracing::warn!(node = %name, error = %e, "completing node status");
            }
        }
        let gone: Vec<String> = self.seen.difference(&present).cloned().collect();
        for name in gone {
            tracing::info!(node = %name, "node deleted; deleting its pods");
            shared.release_node(&name);
            for pod in list(shared, Kind::Pods) {
                if str_at(&pod, "/spec/nodeName") == Some(name.as_str()) {
                    let r = shared.core.delete(
                        &shared.infos.pods,
                        namespace_of(&pod),
                        name_of(&pod),
                        &DeleteOptions::default(),
                    );
                    if let Err(e) = r
                        && e.code != 404
                    {
                        tracing::warn!(pod = %name_of(&pod), error = %e, "deleting pod of deleted node");
                    }
                }
            }
        }
        self.seen = present;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc() -> NodeAlloc {
        NodeAlloc {
            ip: Ipv4Addr::new(127, 30, 1, 2),
            subnet: 17,
        }
    }

    #[test]
    fn node_object_is_complete() {
        let mut extra = BTreeMap::new();
        extra.insert("role".to_string(), "edge".to_string());
        let n = node_object(
            "node-2",
            alloc(),
            &extra,
            Some("aws:///us-east-1a/i-1"),
            "t",
        );
        assert_eq!(internal_ip(&n), Some(Ipv4Addr::new(127, 30, 1, 2)));
        assert!(is_ready(&n));
        assert_eq!(n["spec"]["providerID"], "aws:///us-east-1a/i-1");
        assert_eq!(n["spec"]["podCIDR"], "127.30.17.0/24");
        assert_eq!(
            n["metadata"]["labels"]["topology.kubernetes.io/zone"],
            "zone-b"
        );
        assert_eq!(n["metadata"]["labels"]["role"], "edge");
        assert_eq!(
            n["status"]["nodeInfo"]["containerRuntimeVersion"],
            "mock://1.0"
        );
        // Nothing left to complete.
        let mut m = n.clone();
        assert!(!complete_spec(&mut m, alloc()));
        assert!(!complete_status(&mut m, alloc().ip, "t"));
    }

    #[test]
    fn bare_node_gets_completed_but_keeps_what_it_has() {
        let mut n = json!({
            "metadata": {"name": "edge", "labels": {"kubernetes.io/os": "windows"}},
            "status": {"addresses": [{"type": "ExternalIP", "address": "1.2.3.4"}]},
        });
        assert!(complete_spec(&mut n, alloc()));
        assert!(complete_status(&mut n, alloc().ip, "t"));
        assert_eq!(n["metadata"]["labels"]["kubernetes.io/os"], "windows");
        assert_eq!(n["metadata"]["labels"]["kubernetes.io/hostname"], "edge");
        assert_eq!(n["spec"]["providerID"], "mock-cloud://edge");
        assert_eq!(internal_ip(&n), Some(alloc().ip));
        assert_eq!(n["status"]["addresses"].as_array().map(Vec::len), Some(3));
        assert!(is_ready(&n));
    }

    #[test]
    fn ready_and_taints_report_changes() {
        let mut n = node_object("node-1", alloc(), &BTreeMap::new(), None, "t0");
        assert!(!set_ready(&mut n, true, "t1"));
        assert!(set_ready(&mut n, false, "t1"));
        assert!(!is_ready(&n));
        assert!(add_taint(&mut n, "k", Some("v"), "NoSchedule"));
        assert!(!add_taint(&mut n, "k", Some("v"), "NoSchedule"));
        assert!(add_taint(&mut n, "k", Some("w"), "NoSchedule"));
        assert_eq!(n["spec"]["taints"].as_array().map(Vec::len), Some(1));
        assert!(remove_taint(&mut n, "k"));
        assert!(!remove_taint(&mut n, "k"));
    }
}
