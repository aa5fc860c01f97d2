//! Which nodes may receive load balancer traffic (shared by the controller and the speaker).
//!
//! A node is eligible unless it is being deleted, carries the
//! `node.kubernetes.io/exclude-from-external-load-balancers` label (any value except one that
//! parses as false), or is tainted for removal by the cluster autoscaler
//! (`ToBeDeletedByClusterAutoscaler`) or karpenter (`karpenter.sh/disrupted`).
//!
//! Readiness does not matter to the controller, as upstream since KEP-3458: a NotReady node
//! stays a target and the load balancer's health check decides whether it gets traffic. The
//! speaker, which must answer ARP/NDP itself, also asks for [`is_ready`].

use k8s_openapi::api::core::v1::Node;
use std::net::IpAddr;

pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
pub const AUTOSCALER_TAINT: &str = "ToBeDeletedByClusterAutoscaler";
pub const KARPENTER_TAINT: &str = "karpenter.sh/disrupted";

/// Values Go's `strconv.ParseBool` reads as false.
fn parses_false(v: &str) -> bool {
    matches!(v, "0" | "f" | "F" | "false" | "FALSE" | "False")
}

/// Whether a node may be a load balancer target.
pub fn is_eligible(node: &Node) -> bool {
    if node.metadata.deletion_timestamp.is_some() {
        return false;
    }
    if let Some(v) = node
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(EXCLUDE_LABEL))
        && !parses_false(v)
    {
        return false;
    }
    let tainted = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| {
            ts.iter()
                .any(|t| t.key == AUTOSCALER_TAINT || t.key == KARPENTER_TAINT)
        });
    !tainted
}

/// The node's InternalIP (first one), else its first ExternalIP.
pub fn node_address(node: &Node) -> Option<IpAddr> {
    let addrs = node.status.as_ref()?.addresses.as_ref()?;
    let pick = |t: &str| {
        addrs
            .iter()
            .filter(|a| a.type_ == t)
            .find_map(|a| a.address.parse::<IpAddr>().ok())
    };
    pick("InternalIP").or_else(|| pick("ExternalIP"))
}

/// Whether the node's Ready condition is True.
pub fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}
