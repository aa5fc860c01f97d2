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

/// The pure second decision: call the provider or not, and why. The Service's own facts
/// (labels, selector, traffic policy) never count as a change of the load balancer: when
/// they alone changed, a provider that `reads_facts` is asked again silently, any other
/// is not asked at all. `shown`: the Service's status already shows this class's load
/// balancer as ensured (see [`Change::Resume`]).
pub fn plan_ensure(
    desired: &DesiredLoadBalancer,
    previous: Option<(&DesiredLoadBalancer, bool, Duration)>,
    resync: Duration,
    reads_facts: bool,
    shown: bool,
) -> EnsurePlan {
    let Some((prev, has_address, age)) = previous else {
        return EnsurePlan::Call(if shown { Change::Resume } else { Change::Spec });
    };
    let facts_changed = reads_facts && !prev.same_service_facts(desired);
    let prev = &prev.clone().with_service_facts_of(desired);
    if prev == desired {
        if has_address && age < resync && !facts_changed {
            EnsurePlan::UpToDate
        } else {
            EnsurePlan::Call(Change::Recheck)
        }
    } else {
        let mut same_but_targets = prev.clone();
        same_but_targets.targets = desired.targets.clone();
        same_but_targets.endpoints = desired.endpoints.clone();
        if same_but_targets == *desired {
            EnsurePlan::Call(Change::Targets)
        } else {
            EnsurePlan::Call(Change::Spec)
        }
    }
}
