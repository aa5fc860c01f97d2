//! The names berth reads and writes on Kubernetes objects — what users see, select on and
//! wait for: annotations, labels, finalizers, Lease names, conditions and event reasons.
//!
//! Names that only a provider reads or writes stay with that provider in `berth-providers`
//! (which has no Kubernetes dependency): the l2 allocator's `berth.io/address-pool`,
//! `berth.io/allow-shared-ip` and `berth.io/load-balancer-ips`, the aws provider's
//! annotations, and the ownership labels on load balancers (`berth.io/cluster`,
//! `berth.io/class`, `berth.io/service-*`).

pub use crate::crd::{STATUS_NODE_LABEL, STATUS_SERVICE_LABEL};
pub use crate::nodes::{AUTOSCALER_TAINT, EXCLUDE_LABEL, KARPENTER_TAINT};

/// berth's annotations on Services, and the upstream ones it honours.
pub mod annotations {
    pub const HC_PROTOCOL: &str = "berth.io/health-check-protocol";
    pub const HC_PORT: &str = "berth.io/health-check-port";
    pub const HC_PATH: &str = "berth.io/health-check-path";
    pub const HC_INTERVAL: &str = "berth.io/health-check-interval-seconds";
    pub const HC_TIMEOUT: &str = "berth.io/health-check-timeout-seconds";
    pub const HC_HEALTHY: &str = "berth.io/health-check-healthy-threshold";
    pub const HC_UNHEALTHY: &str = "berth.io/health-check-unhealthy-threshold";
    pub const LB_IPS: &str = "berth.io/load-balancer-ips";
    /// Upstream's annotation, used when `spec.loadBalancerSourceRanges` is empty.
    pub const SOURCE_RANGES: &str = "service.beta.kubernetes.io/load-balancer-source-ranges";
    /// The node announcing a Service's VIP (written by the l2 controller from the speakers'
    /// [`crate::crd::ServiceL2Status`] objects).
    pub const ANNOUNCING_NODE: &str = "berth.io/announcing-node";
}

/// The finalizer every class shared before finalizers were per class. Services that carry
/// it are still recognised: see `ClassFilter::claims` in berth-controller.
pub const LEGACY_FINALIZER: &str = "berth.io/load-balancer-cleanup";

/// The longest name part of a qualified name (`prefix/name`).
const MAX_NAME_PART: usize = 63;

/// `class` as a name part: lowercase, `/` → `.`, anything outside `[a-z0-9.-]` → `-`, trimmed
/// so that it starts and ends with a letter or digit.
fn class_slug(class: &str) -> String {
    let s: String = class
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            '/' => '.',
            c @ ('a'..='z' | '0'..='9' | '.' | '-') => c,
            _ => '-',
        })
        .collect();
    s.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// `prefix` + the class slug, cut to `max` characters with a hash of the whole class when it
/// does not fit, so two long classes never share a name.
fn class_name(prefix: &str, class: &str, max: usize) -> String {
    use sha2::Digest;
    let slug = class_slug(class);
    let full = format!("{prefix}{slug}");
    if full.len() <= max && !slug.is_empty() {
        return full;
    }
    let digest = sha2::Sha256::digest(class.as_bytes());
    let hash: String = digest[..5].iter().map(|b| format!("{b:02x}")).collect();
    let keep = max - prefix.len() - hash.len() - 1;
    let mut cut: String = slug.chars().take(keep).collect();
    while cut.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
        cut.pop();
    }
    if cut.is_empty() {
        format!("{prefix}{hash}")
    } else {
        format!("{prefix}{cut}-{hash}")
    }
}

/// The finalizer of `class`: `berth.io/cleanup.<class, '/' as '.'>`, e.g.
/// `berth.io/cleanup.berth.io.http`. Present while that class may own a load balancer for
/// the Service; a controller only ever cleans up Services carrying its own.
pub fn finalizer_for(class: &str) -> String {
    format!("berth.io/{}", class_name("cleanup.", class, MAX_NAME_PART))
}

/// What every per-class finalizer starts with.
pub const FINALIZER_PREFIX: &str = "berth.io/cleanup.";

/// The default leader Lease name of `class`: `berth-<class, '/' as '.'>`, e.g.
/// `berth-berth.io.http`, so controllers of different classes each lead.
pub fn lease_name_for(class: &str) -> String {
    class_name("berth-", class, MAX_NAME_PART)
}

/// The condition type on a Service that `kubectl wait --for=condition=berth.io/LoadBalancerReady`
/// waits for.
pub const LOAD_BALANCER_READY: &str = "berth.io/LoadBalancerReady";

/// Reasons of the [`LOAD_BALANCER_READY`] condition.
pub mod condition_reasons {
    /// True: the load balancer is in place and published.
    pub const ENSURED: &str = "Ensured";
    /// False: the provider failed (the Service's events say why).
    pub const SYNC_FAILED: &str = "SyncFailed";
    /// False: the Service asks for something berth cannot do (the message names the field).
    pub const INVALID_CONFIGURATION: &str = "InvalidConfiguration";
    /// False: the load balancer exists but has no address yet.
    pub const ADDRESS_PENDING: &str = "AddressPending";
}

/// Event reasons on Services: upstream's service controller's, where berth does the same.
pub mod reasons {
    pub const ENSURING_LOAD_BALANCER: &str = "EnsuringLoadBalancer";
    pub const ENSURED_LOAD_BALANCER: &str = "EnsuredLoadBalancer";
    pub const UPDATED_LOAD_BALANCER: &str = "UpdatedLoadBalancer";
    pub const SYNC_LOAD_BALANCER_FAILED: &str = "SyncLoadBalancerFailed";
    pub const UPDATE_LOAD_BALANCER_FAILED: &str = "UpdateLoadBalancerFailed";
    pub const DELETING_LOAD_BALANCER: &str = "DeletingLoadBalancer";
    pub const DELETED_LOAD_BALANCER: &str = "DeletedLoadBalancer";
    pub const DELETE_LOAD_BALANCER_FAILED: &str = "DeleteLoadBalancerFailed";
    /// No eligible node (upstream's spelling).
    pub const UNAVAILABLE_LOAD_BALANCER: &str = "UnAvailableLoadBalancer";
    /// The l2 provider gave the Service addresses.
    pub const IP_ALLOCATED: &str = "IPAllocated";
    /// The l2 provider could not give the Service an address.
    pub const ALLOCATION_FAILED: &str = "AllocationFailed";
    /// A speaker took over a Service's VIPs.
    pub const NODE_ASSIGNED: &str = "NodeAssigned";
    /// On an IPAddressPool: it cannot be used (the note says why).
    pub const INVALID_POOL: &str = "InvalidPool";
    /// A Service annotation of a known family that its provider does not implement (the note
    /// names it and says what berth does instead).
    pub const UNSUPPORTED_ANNOTATION: &str = "UnsupportedAnnotation";
    /// A `berth.io/` Service annotation berth does not know (a typo; the note suggests the
    /// closest known key).
    pub const UNKNOWN_ANNOTATION: &str = "UnknownAnnotation";
}

/// The condition type on an IPAddressPool.
pub const POOL_VALID: &str = "Valid";

/// The Secret (in the controller's namespace) holding the speakers' membership key, which the
/// speaker DaemonSet mounts.
pub const MEMBERSHIP_SECRET: &str = "berth-memberlist";
/// The key of [`MEMBERSHIP_SECRET`] holding the key file.
pub const MEMBERSHIP_SECRET_KEY: &str = "key";
