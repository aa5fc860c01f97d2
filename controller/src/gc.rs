//! Garbage collection: a load balancer tagged with this cluster whose Service (by uid) no
//! longer wants one from berth is an orphan, and is deleted. Nothing without berth's
//! ownership labels is ever listed, so nothing else is ever touched.

use crate::metrics::Metrics;
use crate::service::{ClassFilter, has_finalizer};
use berth_providers::{LoadBalancerRef, OwnedLoadBalancer, Provider};
use k8s_openapi::api::core::v1::Service;
use kube::runtime::reflector::Store;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// The orphans among `owned`: those of `cluster` whose Service uid is not live.
pub fn orphans<'a>(
    owned: &'a [OwnedLoadBalancer],
    cluster: &str,
    live_uids: &HashSet<String>,
) -> Vec<&'a OwnedLoadBalancer> {
    owned
        .iter()
        .filter(|o| o.cluster == cluster)
        .filter(|o| !o.service.uid.is_empty() && !live_uids.contains(&o.service.uid))
        .collect()
}

/// Uids of Services that own a load balancer now or are being cleaned up.
pub fn live_uids(services: &Store<Service>, classes: &ClassFilter) -> HashSet<String> {
    services
        .state()
        .iter()
        .filter(|s| classes.wants_load_balancer(s) || has_finalizer(s))
        .filter_map(|s| s.metadata.uid.clone())
        .collect()
}

/// One pass: deletes every orphan. Returns how many were deleted.
pub async fn collect_once(
    provider: &dyn Provider,
    services: &Store<Service>,
    classes: &ClassFilter,
    cluster: &str,
    metrics: &Metrics,
) -> Result<usize, berth_providers::ProviderError> {
    let owned = provider.list_owned(cluster).await?;
    let live = live_uids(services, classes);
    let mut deleted = 0;
    for o in orphans(&owned, cluster, &live) {
        let lb = LoadBalancerRef {
            id: o.id.clone(),
            cluster: o.cluster.clone(),
            service: o.service.clone(),
        };
        match provider.delete(&lb).await {
            Ok(()) => {
                deleted += 1;
                metrics.gc_deleted.inc();
                info!(id = %o.id, service = %format!("{}/{}", o.service.namespace, o.service.name), uid = %o.service.uid, "Deleted orphaned load balancer");
            }
            Err(e) => warn!(id = %o.id, error = %e, "Cannot delete orphaned load balancer"),
        }
    }
    Ok(deleted)
}

/// Runs garbage collection every `interval`, starting once the Service cache is complete.
pub async fn run(
    provider: Arc<dyn Provider>,
    services: Store<Service>,
    classes: ClassFilter,
    cluster: String,
    interval: Duration,
    metrics: Arc<Metrics>,
) {
    if !crate::run::store_ready(&services).await {
        return;
    }
    loop {
        if let Err(e) =
            collect_once(provider.as_ref(), &services, &classes, &cluster, &metrics).await
        {
            warn!(error = %e, "Garbage collection failed; will retry");
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_providers::ServiceRef;

    fn owned(cluster: &str, uid: &str) -> OwnedLoadBalancer {
        OwnedLoadBalancer {
            id: format!("lb-{uid}"),
            cluster: cluster.into(),
            service: ServiceRef {
                namespace: "default".into(),
                name: "s".into(),
                uid: uid.into(),
            },
            labels: Default::default(),
        }
    }

    #[test]
    fn only_this_clusters_load_balancers_of_gone_services_are_orphans() {
        let all = vec![
            owned("c1", "live"),
            owned("c1", "gone"),
            owned("c2", "gone"),
            owned("c1", ""),
        ];
        let live: HashSet<String> = ["live".to_string()].into();
        let o: Vec<&str> = orphans(&all, "c1", &live)
            .iter()
            .map(|o| o.id.as_str())
            .collect();
        assert_eq!(o, ["lb-gone"]);
    }
}
