//! berth's custom resources for the `l2` provider (group `berth.io`, version `v1alpha1`):
//! [`IPAddressPool`] (where VIPs come from) and [`L2Advertisement`] (which pools the speaker
//! announces, from which nodes, on which interfaces), both cluster-scoped, and
//! [`ServiceL2Status`] (namespaced: what one node's speaker announces for one Service).

// Several `printcolumn(...)` attributes are how kube-derive declares several columns.
#![allow(clippy::duplicated_attributes)]

#[cfg(feature = "l2")]
use berth_providers::l2 as l2p;
use kube::CustomResource;
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

fn yes() -> bool {
    true
}

/// A range of addresses berth may give LoadBalancer Services.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "berth.io",
    version = "v1alpha1",
    kind = "IPAddressPool",
    plural = "ipaddresspools",
    doc = "A pool of addresses berth gives LoadBalancer Services (provider l2): CIDRs and ranges of both IP families, and which Services may use them. `kubectl apply` refuses a malformed entry; a pool that overlaps an older one is accepted and reported in `.status.conditions` (VALID False) and a Warning event.",
    shortname = "ippool",
    category = "berth",
    status = "IPAddressPoolStatus",
    printcolumn(
        name = "Auto Assign",
        type_ = "boolean",
        json_path = ".spec.autoAssign"
    ),
    printcolumn(name = "Assigned", type_ = "integer", json_path = ".status.assigned"),
    printcolumn(name = "Available", type_ = "integer", json_path = ".status.available"),
    printcolumn(
        name = "Valid",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Valid")].status"#
    ),
    printcolumn(
        name = "Addresses",
        type_ = "string",
        json_path = ".spec.addresses",
        priority = "1"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct IPAddressPoolSpec {
    /// CIDRs (`198.51.100.0/24`, `2001:db8::/120`) or ranges (`198.51.100.10-198.51.100.20`),
    /// IPv4 and IPv6; 1 to 64 entries.
    #[schemars(schema_with = "crate::rules::pool_addresses")]
    pub addresses: Vec<String>,
    /// Whether Services that name no pool and request no address get addresses from here.
    #[serde(default = "yes")]
    pub auto_assign: bool,
    /// Skip IPv4 addresses ending in `.0` and `.255`.
    #[serde(default, rename = "avoidBuggyIPs")]
    pub avoid_buggy_ips: bool,
    /// Which Services may use the pool, and its priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_allocation: Option<ServiceAllocation>,
}

/// Which Services may take addresses from a pool.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAllocation {
    /// Lower is preferred; unset (0) comes after every positive priority. Not negative.
    #[serde(default)]
    #[schemars(extend("minimum" = 0))]
    pub priority: i32,
    /// Namespaces allowed by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::rules::namespaces")]
    pub namespaces: Vec<String>,
    /// Namespaces allowed by label (any matching selector is enough).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespace_selectors: Vec<LabelSelector>,
    /// Services allowed by label (any matching selector is enough).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
}

/// A Kubernetes label selector: `matchLabels` and `matchExpressions` must all match.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// Labels that must have these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Requirements on labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One `matchExpressions` entry.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": crate::rules::selector_values_rule(),
    "message": crate::rules::MSG_SELECTOR_VALUES,
}]))]
pub struct LabelSelectorRequirement {
    /// The label key.
    #[schemars(length(min = 1, max = 317))]
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    #[schemars(extend("enum" = ["In", "NotIn", "Exists", "DoesNotExist"]))]
    pub operator: String,
    /// The values for `In` and `NotIn`; empty for `Exists` and `DoesNotExist`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub values: Vec<String>,
}

/// What berth reports about a pool.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct IPAddressPoolStatus {
    /// IPv4 addresses in use.
    #[serde(rename = "assignedIPv4", default)]
    pub assigned_ipv4: i64,
    /// IPv6 addresses in use.
    #[serde(rename = "assignedIPv6", default)]
    pub assigned_ipv6: i64,
    /// IPv4 addresses still free.
    #[serde(rename = "availableIPv4", default)]
    pub available_ipv4: i64,
    /// IPv6 addresses still free (capped at 2^63-1).
    #[serde(rename = "availableIPv6", default)]
    pub available_ipv6: i64,
    /// Addresses in use, both families.
    #[serde(default)]
    pub assigned: i64,
    /// Addresses free, both families (capped).
    #[serde(default)]
    pub available: i64,
    /// `Valid`: whether the pool parses and overlaps no other pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A status condition.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The condition's type, e.g. `Valid`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    #[schemars(extend("enum" = ["True", "False", "Unknown"]))]
    pub status: String,
    /// Why, in one CamelCase word.
    pub reason: String,
    /// Why, for a human.
    #[serde(default)]
    pub message: String,
    /// When `status` last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// The `metadata.generation` the condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Which pools the speaker announces, and where from.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "berth.io",
    version = "v1alpha1",
    kind = "L2Advertisement",
    plural = "l2advertisements",
    doc = "Which IPAddressPools the l2 speakers announce with ARP/NDP, from which nodes and on which interfaces.",
    shortname = "l2adv",
    category = "berth",
    printcolumn(name = "Pools", type_ = "string", json_path = ".spec.ipAddressPools"),
    printcolumn(name = "Interfaces", type_ = "string", json_path = ".spec.interfaces"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct L2AdvertisementSpec {
    /// Pool names announced; empty: every pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::rules::names")]
    pub ip_address_pools: Vec<String>,
    /// Interfaces to answer ARP/NDP on; empty: the speaker's default selection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::rules::interfaces")]
    pub interfaces: Vec<String>,
    /// Nodes that may announce (any matching selector is enough); empty: every node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
}

/// What the speaker on one node announces for one Service: written (and deleted) by that
/// speaker only, one object per Service per node, owned by the Service. The l2 controller
/// mirrors the node into the Service's `berth.io/announcing-node` annotation.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "berth.io",
    version = "v1alpha1",
    kind = "ServiceL2Status",
    plural = "servicel2statuses",
    doc = "What the l2 speaker on one node announces for one Service; written by that speaker.",
    shortname = "l2status",
    category = "berth",
    namespaced,
    printcolumn(name = "Service", type_ = "string", json_path = ".spec.serviceName"),
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.node"),
    printcolumn(name = "VIPs", type_ = "string", json_path = ".spec.vips"),
    printcolumn(
        name = "Interfaces",
        type_ = "string",
        json_path = ".spec.interfaces",
        priority = "1"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ServiceL2StatusSpec {
    /// The Service (same namespace).
    pub service_name: String,
    /// The node whose speaker answers ARP/NDP for the VIPs.
    pub node: String,
    /// The VIPs announced.
    #[serde(default)]
    #[schemars(schema_with = "crate::rules::ips")]
    pub vips: Vec<String>,
    /// The interfaces they are announced on.
    #[serde(default)]
    #[schemars(schema_with = "crate::rules::interfaces")]
    pub interfaces: Vec<String>,
}

/// Labels on a [`ServiceL2Status`]: the Service's name and the node's (hashed when too long
/// for a label value), for selecting one side.
pub const STATUS_SERVICE_LABEL: &str = "berth.io/service-name";
pub const STATUS_NODE_LABEL: &str = "berth.io/node";

/// A label value for `s`: as is when it fits, else a prefix and a hash.
pub fn label_value(s: &str) -> String {
    if s.len() <= 63 {
        return s.to_string();
    }
    use sha2::Digest;
    let h = sha2::Sha256::digest(s.as_bytes());
    let hex: String = h[..6].iter().map(|b| format!("{b:02x}")).collect();
    let keep: String = s.chars().take(50).collect();
    format!(
        "{}-{hex}",
        keep.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
    )
}

/// The name of the [`ServiceL2Status`] of `service` on `node`.
pub fn status_name(service: &str, node: &str) -> String {
    let full = format!("{service}-{node}");
    if full.len() <= 253 {
        return full;
    }
    use sha2::Digest;
    let h = sha2::Sha256::digest(full.as_bytes());
    let hex: String = h[..8].iter().map(|b| format!("{b:02x}")).collect();
    let keep: String = full.chars().take(200).collect();
    format!(
        "{}-{hex}",
        keep.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
    )
}

#[cfg(feature = "l2")]
impl From<&LabelSelector> for l2p::LabelSelector {
    fn from(s: &LabelSelector) -> Self {
        l2p::LabelSelector {
            match_labels: s.match_labels.clone(),
            match_expressions: s
                .match_expressions
                .iter()
                .map(|e| l2p::SelectorRequirement {
                    key: e.key.clone(),
                    operator: e.operator.clone(),
                    values: e.values.clone(),
                })
                .collect(),
        }
    }
}

#[cfg(feature = "l2")]
impl IPAddressPool {
    /// The allocator's view of this pool.
    pub fn pool_spec(&self) -> l2p::PoolSpec {
        let name = self.metadata.name.clone().unwrap_or_default();
        l2p::PoolSpec {
            name,
            addresses: self.spec.addresses.clone(),
            auto_assign: self.spec.auto_assign,
            avoid_buggy_ips: self.spec.avoid_buggy_ips,
            allocation: self
                .spec
                .service_allocation
                .as_ref()
                .map(|a| l2p::ServiceAllocation {
                    priority: a.priority,
                    namespaces: a.namespaces.clone(),
                    namespace_selectors: a.namespace_selectors.iter().map(Into::into).collect(),
                    service_selectors: a.service_selectors.iter().map(Into::into).collect(),
                }),
        }
    }
}

/// The allocator's view of `pools` in precedence order: oldest first, then by name (an older
/// pool wins an overlap, and the newer one holds no address). The controller and the speaker
/// both order pools this way, so they agree on which pool an address lies in.
#[cfg(feature = "l2")]
pub fn pool_specs<'a>(pools: impl IntoIterator<Item = &'a IPAddressPool>) -> Vec<l2p::PoolSpec> {
    use kube::ResourceExt;
    let mut v: Vec<&IPAddressPool> = pools.into_iter().collect();
    v.sort_by_key(|p| {
        (
            p.metadata.creation_timestamp.as_ref().map(|t| t.0),
            p.name_any(),
        )
    });
    v.into_iter().map(IPAddressPool::pool_spec).collect()
}

/// The CRDs as one multi-document YAML (what `berth crds` prints and deploy/ holds).
pub fn crds_yaml() -> String {
    let docs = [
        IPAddressPool::crd(),
        L2Advertisement::crd(),
        ServiceL2Status::crd(),
        crate::bgp::BGPPeer::crd(),
        crate::bgp::BGPAdvertisement::crd(),
        crate::bgp::BFDProfile::crd(),
        crate::bgp::BGPSessionStatus::crd(),
    ];
    let mut out = String::from("# Generated by `berth crds`; do not edit.\n");
    for d in docs {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&d).expect("a CRD serialises"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_crds_match_the_code() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/crds/berth.io_crds.yaml"
        );
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        if committed != crds_yaml() {
            if std::env::var_os("BERTH_UPDATE_CRDS").is_some() {
                std::fs::create_dir_all(std::path::Path::new(path).parent().unwrap()).unwrap();
                std::fs::write(path, crds_yaml()).unwrap();
                return;
            }
            panic!(
                "deploy/crds/berth.io_crds.yaml is stale: run `berth crds > deploy/crds/berth.io_crds.yaml` (or this test with BERTH_UPDATE_CRDS=1)"
            );
        }
    }

    #[cfg(feature = "l2")]
    #[test]
    fn pools_deserialise_with_defaults_and_convert() {
        let p: IPAddressPool = serde_json::from_value(serde_json::json!({
            "apiVersion": "berth.io/v1alpha1", "kind": "IPAddressPool",
            "metadata": {"name": "default"},
            "spec": {"addresses": ["198.51.100.0/24"], "avoidBuggyIPs": true,
                "serviceAllocation": {"priority": 2, "namespaces": ["shop"],
                    "serviceSelectors": [{"matchExpressions": [{"key": "app", "operator": "Exists"}]}]}}
        }))
        .unwrap();
        assert!(p.spec.auto_assign, "autoAssign defaults to true");
        let s = p.pool_spec();
        assert_eq!(s.name, "default");
        assert!(s.avoid_buggy_ips && s.auto_assign);
        let al = s.allocation.unwrap();
        assert_eq!(al.priority, 2);
        assert_eq!(
            al.service_selectors[0].match_expressions[0].operator,
            "Exists"
        );
        let crd = serde_json::to_value(IPAddressPool::crd()).unwrap();
        assert_eq!(crd["spec"]["scope"], "Cluster");
        let cols: Vec<&str> = crd["spec"]["versions"][0]["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(
            cols,
            [
                "Auto Assign",
                "Assigned",
                "Available",
                "Valid",
                "Addresses",
                "Age"
            ]
        );
        assert!(crd["spec"]["versions"][0]["subresources"]["status"].is_object());
    }

    #[test]
    fn every_crd_is_described_and_carries_its_rules() {
        let docs: Vec<serde_json::Value> = [
            IPAddressPool::crd(),
            L2Advertisement::crd(),
            ServiceL2Status::crd(),
            crate::bgp::BGPPeer::crd(),
            crate::bgp::BGPAdvertisement::crd(),
            crate::bgp::BFDProfile::crd(),
            crate::bgp::BGPSessionStatus::crd(),
        ]
        .iter()
        .map(|c| serde_json::to_value(c).unwrap())
        .collect();
        for d in &docs {
            let root = &d["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
            let desc = root["description"].as_str().unwrap_or_default();
            assert!(
                !desc.is_empty() && !desc.contains("Auto-generated"),
                "{}: {desc}",
                d["metadata"]["name"]
            );
        }
        let spec =
            &docs[0]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let addrs = &spec["properties"]["addresses"];
        assert!(addrs["description"].as_str().unwrap().starts_with("CIDRs"));
        assert_eq!(addrs["minItems"], 1);
        let rules: Vec<&str> = addrs["items"]["x-kubernetes-validations"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["message"].as_str())
            .collect();
        assert_eq!(
            rules,
            [
                crate::rules::MSG_ADDRESS,
                crate::rules::MSG_RANGE_FAMILY,
                crate::rules::MSG_RANGE_ORDER
            ]
        );
        let alloc = &spec["properties"]["serviceAllocation"]["properties"];
        assert_eq!(alloc["priority"]["minimum"].as_f64(), Some(0.0));
        let req = &alloc["serviceSelectors"]["items"]["properties"]["matchExpressions"]["items"];
        assert_eq!(
            req["properties"]["operator"]["enum"]
                .as_array()
                .unwrap()
                .len(),
            4
        );
        assert!(req["x-kubernetes-validations"].is_array());
        let peer =
            &docs[3]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let bound = |f: &str, b: &str| peer["properties"][f][b].as_f64();
        assert_eq!(bound("peerASN", "minimum"), Some(1.0));
        assert_eq!(bound("peerASN", "maximum"), Some(4_294_967_295.0));
        assert_eq!(bound("peerPort", "minimum"), Some(1.0));
        assert!(peer["x-kubernetes-validations"][0]["rule"].is_string());
    }

    #[cfg(feature = "l2")]
    #[test]
    fn pools_are_ordered_oldest_first_then_by_name() {
        let pool = |name: &str, created: Option<&str>| -> IPAddressPool {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "berth.io/v1alpha1", "kind": "IPAddressPool",
                "metadata": {"name": name, "creationTimestamp": created},
                "spec": {"addresses": ["198.51.100.0/24"]}
            }))
            .unwrap()
        };
        let pools = [
            pool("b", Some("2024-01-02T00:00:00Z")),
            pool("c", Some("2024-01-01T00:00:00Z")),
            pool("a", Some("2024-01-02T00:00:00Z")),
            pool("z", None),
        ];
        let names: Vec<String> = pool_specs(&pools).into_iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            ["z", "c", "a", "b"],
            "no timestamp sorts first, as before"
        );
    }

    #[test]
    fn service_l2_status_is_namespaced_and_names_fit() {
        let crd = serde_json::to_value(ServiceL2Status::crd()).unwrap();
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        assert_eq!(crd["spec"]["names"]["plural"], "servicel2statuses");
        assert_eq!(status_name("web", "node-1"), "web-node-1");
        let long = status_name(&"s".repeat(63), &"n".repeat(253));
        assert!(long.len() <= 253, "{}", long.len());
        assert_ne!(long, status_name(&"s".repeat(63), &"n".repeat(252)));
        assert_eq!(label_value("node-1"), "node-1");
        assert!(label_value(&"n".repeat(253)).len() <= 63);
    }
}
