//! IPAddressPool status: counts and a `Valid` condition, written only when they change, and
//! a Warning event when a pool becomes (or stays, with a new reason) invalid.

use super::STATUS_INTERVAL;
use super::crd::{Condition, IPAddressPool, IPAddressPoolStatus};
use crate::reconcile::Context;
use berth_api::names::reasons;
use berth_providers::l2::{L2Provider, PoolStats};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::Store;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::watch;
use tracing::warn;

/// The condition type on a pool.
pub use berth_api::names::POOL_VALID as VALID;

/// The status a pool should have: `Err(reason)` when it is unusable.
pub fn desired_status(
    pool: &IPAddressPool,
    stats: Option<PoolStats>,
    validity: Result<(), String>,
) -> IPAddressPoolStatus {
    let s = stats.unwrap_or_default();
    let i = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let (status, reason, message) = match validity {
        Ok(()) => ("True", "Valid", String::new()),
        Err(e) => ("False", "InvalidPool", e),
    };
    let existing = pool
        .status
        .as_ref()
        .and_then(|st| st.conditions.iter().find(|c| c.type_ == VALID));
    let transition = match existing {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
    };
    IPAddressPoolStatus {
        assigned_ipv4: i(s.assigned_ipv4),
        assigned_ipv6: i(s.assigned_ipv6),
        available_ipv4: i(s.available_ipv4),
        available_ipv6: i(s.available_ipv6),
        assigned: i(s.assigned_ipv4.saturating_add(s.assigned_ipv6)),
        available: i(s.available_ipv4.saturating_add(s.available_ipv6)),
        conditions: vec![Condition {
            type_: VALID.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            last_transition_time: transition,
            observed_generation: pool.metadata.generation,
        }],
    }
}

/// Whether `want` differs from what the pool shows (ignoring transition times).
fn differs(pool: &IPAddressPool, want: &IPAddressPoolStatus) -> bool {
    let Some(have) = pool.status.as_ref() else {
        return true;
    };
    let strip = |s: &IPAddressPoolStatus| {
        let mut s = s.clone();
        for c in s.conditions.iter_mut() {
            c.last_transition_time = None;
        }
        s
    };
    strip(have) != strip(want)
}

fn pool_ref(p: &IPAddressPool) -> ObjectReference {
    ObjectReference {
        api_version: Some("berth.io/v1alpha1".into()),
        kind: Some("IPAddressPool".into()),
        name: p.metadata.name.clone(),
        uid: p.metadata.uid.clone(),
        ..Default::default()
    }
}

/// Brings every pool's status up to date whenever `changes` fires (at most every
/// [`STATUS_INTERVAL`]).
pub async fn write_loop(
    provider: Arc<L2Provider>,
    ctx: Arc<Context>,
    store: Store<IPAddressPool>,
    mut changes: watch::Receiver<()>,
) {
    let api = Api::<IPAddressPool>::all(ctx.client.clone());
    let mut warned: HashMap<String, String> = HashMap::new();
    // Pools whose gauges are published, to drop those of deleted pools.
    let mut published: std::collections::HashSet<String> = Default::default();
    while changes.changed().await.is_ok() {
        tokio::time::sleep(STATUS_INTERVAL).await;
        changes.borrow_and_update();
        let stats = provider.pool_stats();
        let results: HashMap<String, Result<(), String>> = provider
            .pool_results()
            .into_iter()
            .map(|r| (r.name, r.result))
            .collect();
        let pools = store.state();
        let metrics = ctx.metrics.shared();
        for gone in published.difference(&pools.iter().map(|p| p.name_any()).collect()) {
            metrics.remove_pool(gone);
        }
        published = pools.iter().map(|p| p.name_any()).collect();
        for pool in pools {
            let name = pool.name_any();
            if let Some(s) = stats.get(&name) {
                metrics.set_pool(&name, "ipv4", s.assigned_ipv4, s.available_ipv4);
                metrics.set_pool(&name, "ipv6", s.assigned_ipv6, s.available_ipv6);
            }
            let validity = results
                .get(&name)
                .cloned()
                .unwrap_or_else(|| Err("not loaded yet".into()));
            if let Err(e) = &validity {
                if warned.get(&name) != Some(e) {
                    warned.insert(name.clone(), e.clone());
                    let ev = Event {
                        type_: EventType::Warning,
                        reason: reasons::INVALID_POOL.into(),
                        note: Some(format!("Invalid IPAddressPool {name}: {e}")),
                        action: "Validate".into(),
                        secondary: None,
                    };
                    if let Err(err) = ctx.recorder.publish(&ev, &pool_ref(&pool)).await {
                        warn!(pool = %name, error = %err, "Cannot publish event");
                    }
                }
            } else {
                warned.remove(&name);
            }
            let want = desired_status(&pool, stats.get(&name).copied(), validity);
            if !differs(&pool, &want) {
                continue;
            }
            let patch = serde_json::json!({ "status": want });
            if let Err(e) = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                warn!(pool = %name, error = %e, "Cannot update IPAddressPool status");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pools::crd::IPAddressPoolSpec;

    fn pool() -> IPAddressPool {
        IPAddressPool::new(
            "default",
            IPAddressPoolSpec {
                addresses: vec!["198.51.100.0/30".into()],
                auto_assign: true,
                avoid_buggy_ips: false,
                service_allocation: None,
            },
        )
    }

    #[test]
    fn status_is_rewritten_only_when_it_changes() {
        let mut p = pool();
        let stats = PoolStats {
            assigned_ipv4: 1,
            available_ipv4: 3,
            ..Default::default()
        };
        let want = desired_status(&p, Some(stats), Ok(()));
        assert_eq!((want.assigned, want.available), (1, 3));
        assert!(differs(&p, &want));
        p.status = Some(want);
        let again = desired_status(&p, Some(stats), Ok(()));
        assert!(!differs(&p, &again));
        let bad = desired_status(&p, None, Err("spec.addresses[0]: nope".into()));
        assert!(differs(&p, &bad));
        assert_eq!(bad.conditions[0].status, "False");
        assert_eq!(bad.conditions[0].message, "spec.addresses[0]: nope");
        assert_eq!(bad.assigned, 0);
    }
}
