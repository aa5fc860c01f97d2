//! The pure decisions of a reconcile: which branch it takes ([`branch`]), and whether the
//! provider must be called and why ([`plan_ensure`]). No I/O; table-tested.

use crate::service::ClassFilter;
use berth_providers::DesiredLoadBalancer;
use k8s_openapi::api::core::v1::Service;
use std::time::Duration;

/// Which branch a reconcile takes (the pure first decision).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Branch {
    /// Not this class's, nothing of ours to clean up: forget it.
    Ignore,
    /// It does not want this class's load balancer (any more) and this class may own one:
    /// delete it, clear the status, remove the finalizer(s).
    CleanUp,
    /// It wants a load balancer from this class but has no finalizer of ours yet: add it
    /// before anything is created.
    AddFinalizer,
    /// It wants a load balancer from this class: make it so.
    Apply,
}

/// The first decision of a reconcile, from the Service and the class alone.
pub fn branch(classes: &ClassFilter, svc: &Service) -> Branch {
    if classes.wants_load_balancer(svc) {
        if classes.has_finalizer(svc) {
            Branch::Apply
        } else {
            Branch::AddFinalizer
        }
    } else if classes.claims(svc) {
        Branch::CleanUp
    } else {
        Branch::Ignore
    }
}

/// What must happen to a valid Service's load balancer, given what berth last ensured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnsurePlan {
    /// As berth last ensured it, with an address, within the resync period: no call.
    UpToDate,
    /// Call the provider; `change` says what the owner is told.
    Call(Change),
}

/// Why the provider is called, which decides the events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Never ensured by this process, or its spec changed: `EnsuringLoadBalancer`, then
    /// `EnsuredLoadBalancer` (or `SyncLoadBalancerFailed`).
    Spec,
    /// Only the targets changed: `UpdatedLoadBalancer` (or `UpdateLoadBalancerFailed`).
    Targets,
    /// Never ensured by this process, but the Service already shows this class's load
    /// balancer, ensured for its current generation (the controller restarted): no
    /// `EnsuringLoadBalancer`, and `EnsuredLoadBalancer` only when the outcome differs from
    /// what the Service shows. A restart of a controller with 10,000 settled Services then
    /// writes no events, where the upstream controller writes 20,000.
    Resume,
    /// Nothing changed, but it is time to look again (resync, address still pending, the
    /// Service's own facts changed for a provider that reads them): no event unless it
    /// fails.
    Recheck,
}

/// What berth remembers of a desired state it ensured: three digests instead of a copy (a
/// copy with its labels and listeners was about 1.6 KB per Service, 16 MB at 10,000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digests {
    /// Everything but the targets and the Service's own facts.
    pub spec: u64,
    /// The node targets and the pods behind each port.
    pub targets: u64,
    /// The Service's own facts: labels, selector, traffic policy.
    pub facts: u64,
}

impl Digests {
    /// The digests of `d`, its targets' digest given (see [`targets_digest`]: the node list
    /// is shared by every Service, so its digest is computed once per list).
    pub fn of(d: &DesiredLoadBalancer, targets: u64) -> Digests {
        use std::hash::{Hash, Hasher};
        // Named field by field, so a new field cannot be left out of every digest unnoticed.
        let DesiredLoadBalancer {
            id,
            cluster,
            service,
            listeners,
            targets: _,
            health_check,
            source_ranges,
            session_affinity,
            ip_families,
            requested_addresses,
            labels,
            annotations,
            service_labels,
            selector,
            external_traffic_policy,
            endpoints,
        } = d;
        let digest = |f: &dyn Fn(&mut std::collections::hash_map::DefaultHasher)| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            f(&mut h);
            h.finish()
        };
        Digests {
            spec: digest(&|h| {
                (id, cluster, service, listeners, health_check, source_ranges).hash(h);
                (
                    session_affinity,
                    ip_families,
                    requested_addresses,
                    labels,
                    annotations,
                )
                    .hash(h);
            }),
            targets: digest(&|h| (targets, endpoints).hash(h)),
            facts: digest(&|h| (service_labels, selector, external_traffic_policy).hash(h)),
        }
    }
}

/// The digest of a node target list.
pub fn targets_digest(targets: &[berth_providers::NodeTarget]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    targets.hash(&mut h);
    h.finish()
}

/// The pure second decision: call the provider or not, and why. The Service's own facts
/// (labels, selector, traffic policy) never count as a change of the load balancer: when
/// they alone changed, a provider that `reads_facts` is asked again silently, any other
/// is not asked at all. `shown`: the Service's status already shows this class's load
/// balancer as ensured (see [`Change::Resume`]).
pub fn plan_ensure(
    desired: &Digests,
    previous: Option<(&Digests, bool, Duration)>,
    resync: Duration,
    reads_facts: bool,
    shown: bool,
) -> EnsurePlan {
    let Some((prev, has_address, age)) = previous else {
        return EnsurePlan::Call(if shown { Change::Resume } else { Change::Spec });
    };
    let facts_changed = reads_facts && prev.facts != desired.facts;
    if prev.spec != desired.spec {
        EnsurePlan::Call(Change::Spec)
    } else if prev.targets != desired.targets {
        EnsurePlan::Call(Change::Targets)
    } else if has_address && age < resync && !facts_changed {
        EnsurePlan::UpToDate
    } else {
        EnsurePlan::Call(Change::Recheck)
    }
}
