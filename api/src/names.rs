//! Annotations, labels, finalizers, conditions and event reasons berth reads or writes.

/// The annotation naming the node that announces a Service's VIP (written by the l2
/// controller from the speakers' [`crate::crd::ServiceL2Status`] objects).
pub const ANNOUNCING_ANNOTATION: &str = "berth.io/announcing-node";
/// The event reason on a speaker's takeover of a Service's VIPs.
pub const NODE_ASSIGNED: &str = "NodeAssigned";
