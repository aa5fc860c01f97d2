//! Which nodes may receive load balancer traffic, and what a provider needs to know of them.
//!
//! A node is eligible unless it is being deleted, carries the
//! `node.kubernetes.io/exclude-from-external-load-balancers` label (any value except one that
//! parses as false), or is tainted for removal by the cluster autoscaler
//! (`ToBeDeletedByClusterAutoscaler`) or karpenter (`karpenter.sh/disrupted`).
//!
//! Readiness does not matter, as upstream since KEP-3458: a NotReady node stays a target and
//! the load balancer's health check decides whether it gets traffic. Dropping NotReady nodes
//! would rewrite every load balancer whenever one kubelet flaps.

use berth_providers::NodeTarget;
use k8s_openapi::api::core::v1::Node;

pub use berth_api::nodes::{
    AUTOSCALER_TAINT, EXCLUDE_LABEL, KARPENTER_TAINT, is_eligible, is_ready, node_address,
};

const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// What a provider sees of a node.
pub fn target_of(node: &Node) -> NodeTarget {
    NodeTarget {
        name: node.metadata.name.clone().unwrap_or_default(),
        internal_ip: node_address(node),
        provider_id: node.spec.as_ref().and_then(|s| s.provider_id.clone()),
        zone: node
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(ZONE_LABEL).cloned()),
    }
}

/// The targets of every eligible node, sorted by name (a stable order keeps desired states
/// comparable).
pub fn eligible_targets<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> Vec<NodeTarget> {
    let mut out: Vec<NodeTarget> = nodes
        .into_iter()
        .filter(|n| is_eligible(n))
        .map(target_of)
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// What about a node matters to load balancers: a change here can change target sets.
pub fn fingerprint(node: &Node) -> Option<NodeTarget> {
    is_eligible(node).then(|| target_of(node))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus, Taint};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    /// A test node builder.
    pub struct NodeB(pub Node);

    impl NodeB {
        pub fn new(name: &str, ip: &str) -> Self {
            let mut n = Node::default();
            n.metadata.name = Some(name.into());
            n.status = Some(NodeStatus {
                addresses: Some(vec![NodeAddress {
                    type_: "InternalIP".into(),
                    address: ip.into(),
                }]),
                ..Default::default()
            });
            n.spec = Some(NodeSpec {
                provider_id: Some(format!("mock-cloud://{name}")),
                ..Default::default()
            });
            NodeB(n)
        }
        pub fn label(mut self, k: &str, v: &str) -> Self {
            self.0
                .metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert(k.into(), v.into());
            self
        }
        pub fn taint(mut self, key: &str) -> Self {
            let spec = self.0.spec.get_or_insert_with(Default::default);
            spec.taints.get_or_insert_with(Vec::new).push(Taint {
                key: key.into(),
                effect: "NoSchedule".into(),
                ..Default::default()
            });
            self
        }
        pub fn deleting(mut self) -> Self {
            self.0.metadata.deletion_timestamp =
                Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
            self
        }
    }

    #[test]
    fn eligibility_follows_labels_taints_and_deletion() {
        let cases = [
            (NodeB::new("a", "10.0.0.1"), true),
            (NodeB::new("a", "10.0.0.1").label(EXCLUDE_LABEL, ""), false),
            (
                NodeB::new("a", "10.0.0.1").label(EXCLUDE_LABEL, "true"),
                false,
            ),
            (
                NodeB::new("a", "10.0.0.1").label(EXCLUDE_LABEL, "false"),
                true,
            ),
            (NodeB::new("a", "10.0.0.1").label(EXCLUDE_LABEL, "0"), true),
            (NodeB::new("a", "10.0.0.1").taint(AUTOSCALER_TAINT), false),
            (NodeB::new("a", "10.0.0.1").taint(KARPENTER_TAINT), false),
            (NodeB::new("a", "10.0.0.1").taint("other"), true),
            (NodeB::new("a", "10.0.0.1").deleting(), false),
        ];
        for (i, (n, want)) in cases.into_iter().enumerate() {
            assert_eq!(is_eligible(&n.0), want, "case {i}");
        }
    }

    #[test]
    fn targets_are_sorted_and_carry_address_and_provider_id() {
        let nodes = [
            NodeB::new("b", "10.0.0.2").0,
            NodeB::new("a", "10.0.0.1").label(ZONE_LABEL, "z1").0,
            NodeB::new("c", "10.0.0.3").label(EXCLUDE_LABEL, "yes").0,
        ];
        let t = eligible_targets(nodes.iter());
        assert_eq!(
            t.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(t[0].internal_ip, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(t[0].provider_id.as_deref(), Some("mock-cloud://a"));
        assert_eq!(t[0].zone.as_deref(), Some("z1"));
    }
}
