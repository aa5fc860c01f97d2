//! Garbage collection: a load balancer tagged with this cluster and this class whose Service
//! (by uid) no longer wants one from this class is an orphan, and is deleted.
//!
//! Guards, each against a way of deleting something that is not ours:
//! - only load balancers labelled with this cluster are listed (the cluster id is unique by
//!   default: the `kube-system` namespace's uid);
//! - another class's load balancers are never touched; unlabelled ones (from before class
//!   labels) only once their Service wants no load balancer from anybody;
//! - the cache's verdict is confirmed with a live GET of the Service before deleting;
//! - nothing runs before the Service cache is complete, nothing after leadership is lost,
//!   and at most `max_deletes` load balancers go per pass.

use crate::leader::Fence;
use crate::metrics::ClassMetrics;
use crate::service::{ClassFilter, has_any_berth_finalizer};
use berth_providers::{LABEL_CLASS, LoadBalancerRef, OwnedLoadBalancer, Provider};
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::runtime::reflector::Store;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// Whether a Service wants a load balancer from any class at all.
fn wants_any(svc: &Service) -> bool {
    svc.metadata.deletion_timestamp.is_none()
        && svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
}

/// Whether `lb` (labelled with `lb_class`, None for a load balancer from before class
/// labels) is an orphan this controller may delete, given its Service (same uid; None when
/// no Service with that uid exists).
pub fn is_orphan(lb_class: Option<&str>, classes: &ClassFilter, svc: Option<&Service>) -> bool {
    if !classes.may_collect(lb_class) {
        return false;
    }
    let Some(svc) = svc else {
        return true;
    };
    if lb_class.is_some() {
        !(classes.wants_load_balancer(svc) || classes.claims(svc))
    } else {
        !(wants_any(svc) || has_any_berth_finalizer(svc))
    }
}

/// Garbage collection for one class.
pub struct Collector {
    pub provider: Arc<dyn Provider>,
    pub services: Store<Service>,
    /// Fenced: reads only, but kept on the leader's client.
    pub client: kube::Client,
    pub classes: ClassFilter,
    pub cluster: String,
    pub interval: Duration,
    pub max_deletes: usize,
    pub metrics: ClassMetrics,
    pub fence: Fence,
}

/// Runs `work` within `left`, what is left of the lease (`None`: no limit); `None` if the
/// lease ran out first.
async fn within<T>(
    left: Option<Duration>,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    match left {
        None => Some(work.await),
        Some(left) => tokio::time::timeout(left, work).await.ok(),
    }
}

impl Collector {
    /// The Service named by `o` if it still has `o`'s uid, read live from the API server.
    async fn live_service(&self, o: &OwnedLoadBalancer) -> Result<Option<Service>, kube::Error> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), &o.service.namespace);
        Ok(api
            .get_opt(&o.service.name)
            .await?
            .filter(|s| s.metadata.uid.as_deref() == Some(o.service.uid.as_str())))
    }

    /// One pass. Returns how many load balancers were deleted.
    pub async fn collect_once(&self) -> Result<usize, berth_providers::ProviderError> {
        if self.fence.check().is_err() {
            return Ok(0);
        }
        let owned = self.provider.list_owned(&self.cluster).await?;
        let cached: HashMap<String, Arc<Service>> = self
            .services
            .state()
            .into_iter()
            .filter_map(|s| s.metadata.uid.clone().map(|u| (u, s)))
            .collect();
        let mut deleted = 0;
        for o in owned
            .iter()
            .filter(|o| o.cluster == self.cluster && !o.service.uid.is_empty())
        {
            if deleted >= self.max_deletes {
                info!(
                    max = self.max_deletes,
                    "Garbage collection deleted its maximum for this pass; the rest waits for the next"
                );
                break;
            }
            let lb_class = o.labels.get(LABEL_CLASS).map(String::as_str);
            let in_cache = cached.get(&o.service.uid).map(|s| s.as_ref());
            if !is_orphan(lb_class, &self.classes, in_cache) {
                continue;
            }
            // The cache can lag: confirm with the API server before deleting anything.
            let live = match self.live_service(o).await {
                Ok(s) => s,
                Err(e) => {
                    warn!(id = %o.id, error = %e, "Cannot confirm that a load balancer is orphaned; keeping it");
                    continue;
                }
            };
            if !is_orphan(lb_class, &self.classes, live.as_ref()) {
                continue;
            }
            let Ok(left) = self.fence.check() else {
                return Ok(deleted);
            };
            let lb = LoadBalancerRef {
                id: o.id.clone(),
                cluster: o.cluster.clone(),
                service: o.service.clone(),
            };
            let Some(res) = within(left, self.provider.delete(&lb)).await else {
                return Ok(deleted);
            };
            match res {
                Ok(()) => {
                    deleted += 1;
                    self.metrics.gc_deleted();
                    info!(id = %o.id, service = %format!("{}/{}", o.service.namespace, o.service.name), uid = %o.service.uid, "Deleted orphaned load balancer");
                }
                Err(e) => warn!(id = %o.id, error = %e, "Cannot delete orphaned load balancer"),
            }
        }
        // What the cluster's load balancers share goes once none is left.
        let Ok(left) = self.fence.check() else {
            return Ok(deleted);
        };
        let Some(shared) = within(left, self.provider.collect_shared(&self.cluster)).await else {
            return Ok(deleted);
        };
        match shared {
            Ok(0) => {}
            Ok(n) => info!(
                resources = n,
                "Deleted resources the cluster's load balancers shared; none is left"
            ),
            Err(e) => {
                warn!(error = %e, "Cannot delete resources the cluster's load balancers shared; will retry")
            }
        }
        Ok(deleted)
    }

    /// Runs every `interval`, starting once the Service cache is complete, until the fence
    /// closes.
    pub async fn run(self) {
        if !crate::kube_util::store_ready(&self.services).await {
            return;
        }
        loop {
            if self.fence.is_revoked() {
                return;
            }
            if let Err(e) = self.collect_once().await {
                warn!(error = %crate::text::bounded(&crate::text::redact(&e.to_string()), 2048), "Garbage collection failed; will retry");
            }
            tokio::time::sleep(self.interval).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::LEGACY_FINALIZER;
    use crate::service::tests::SvcB;

    fn with_finalizer(mut s: Service, f: &str) -> Service {
        s.metadata
            .finalizers
            .get_or_insert_with(Vec::new)
            .push(f.into());
        s
    }

    #[test]
    fn gone_services_orphan_their_load_balancers_of_this_class_only() {
        let a = ClassFilter::new("berth.io/http", false);
        assert!(is_orphan(Some("berth.io/http"), &a, None));
        assert!(
            is_orphan(None, &a, None),
            "a legacy load balancer of a gone Service"
        );
        assert!(
            !is_orphan(Some("example.com/b"), &a, None),
            "another class's"
        );
    }

    #[test]
    fn a_live_service_of_another_class_keeps_every_load_balancer() {
        let a = ClassFilter::new("berth.io/http", false);
        let b_svc = with_finalizer(
            SvcB::lb("b").class("example.com/b").svc(),
            &crate::service::finalizer_for("example.com/b"),
        );
        assert!(!is_orphan(Some("example.com/b"), &a, Some(&b_svc)));
        assert!(
            !is_orphan(None, &a, Some(&b_svc)),
            "it still wants a load balancer"
        );
        let legacy_b = with_finalizer(SvcB::lb("b").class("example.com/b").svc(), LEGACY_FINALIZER);
        assert!(!is_orphan(None, &a, Some(&legacy_b)));
    }

    #[test]
    fn our_load_balancer_is_kept_while_the_service_wants_it_or_carries_our_finalizer() {
        let a = ClassFilter::new("berth.io/http", false);
        let mine = SvcB::lb("a").class("berth.io/http").svc();
        assert!(!is_orphan(Some("berth.io/http"), &a, Some(&mine)));
        let cluster_ip = SvcB::lb("a").type_("ClusterIP").svc();
        assert!(is_orphan(Some("berth.io/http"), &a, Some(&cluster_ip)));
        let cleaning = with_finalizer(cluster_ip.clone(), &a.finalizer);
        assert!(
            !is_orphan(Some("berth.io/http"), &a, Some(&cleaning)),
            "cleanup owns it"
        );
        assert!(
            is_orphan(None, &a, Some(&cluster_ip)),
            "legacy, nobody wants one"
        );
        let legacy_cleaning = with_finalizer(cluster_ip, LEGACY_FINALIZER);
        assert!(!is_orphan(None, &a, Some(&legacy_cleaning)));
    }
}
