//! The `l2` provider: nothing outside the cluster to program. berth allocates a VIP from an
//! IP pool and the speaker (`berth speaker`) makes one node answer ARP/NDP for it; traffic
//! arrives at `VIP:port` on that node and kube-proxy takes it from there, so no NodePorts.
//!
//! State lives in memory behind a mutex and is rebuilt at start-up: the controller feeds
//! the pools ([`L2Provider::set_pools`]), namespace labels and each Service's published
//! addresses ([`L2Provider::restore`]) before it reconciles anything. What the allocator
//! needs to know about a Service (its labels, selector and traffic policy) comes in its
//! [`DesiredLoadBalancer`] like everything else.

pub mod alloc;
pub mod pool;

pub use alloc::{
    AllocRequest, Allocator, Assignment, POOL_ANNOTATION, PoolResult, PoolStats, SHARING_ANNOTATION,
};
pub use pool::{LabelSelector, PoolSpec, SelectorRequirement, ServiceAllocation};

use crate::types::{
    DesiredLoadBalancer, Ingress, IpMode, LoadBalancerRef, LoadBalancerStatus, OwnedLoadBalancer,
    ServiceRef, TrafficPolicy, ownership_labels,
};
use crate::{Provider, ProviderError};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use tokio::sync::mpsc;

/// The annotation holding requested addresses (parsed by the controller).
pub const LB_IPS_ANNOTATION: &str = "berth.io/load-balancer-ips";

/// What happened to a Service's addresses, for events and pool status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllocEvent {
    /// The Service got new addresses.
    Allocated {
        service: ServiceRef,
        ips: Vec<IpAddr>,
        pool: String,
    },
    /// Allocation failed (reported once per distinct message).
    Failed {
        service: ServiceRef,
        message: String,
    },
    /// The Service's addresses were released.
    Released { service: ServiceRef },
}

#[derive(Debug, Default)]
struct State {
    alloc: Allocator,
    namespaces: HashMap<String, BTreeMap<String, String>>,
    owners: HashMap<String, (String, String, ServiceRef)>,
    failed: HashMap<String, String>,
    pool_results: Vec<PoolResult>,
}

/// The l2 provider.
#[derive(Debug, Default)]
pub struct L2Provider {
    state: Mutex<State>,
    events: Mutex<Option<mpsc::UnboundedSender<AllocEvent>>>,
}

impl L2Provider {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(&self, ev: AllocEvent) {
        if let Some(tx) = self
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let _ = tx.send(ev);
        }
    }

    /// A stream of allocation events (one subscriber; a new one replaces the old).
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<AllocEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.events.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        rx
    }

    /// Replaces the pools (oldest first). Returns one result per pool and the uids whose
    /// addresses are no longer valid (re-ensure them).
    pub fn set_pools(&self, specs: &[PoolSpec]) -> (Vec<PoolResult>, Vec<String>) {
        let mut st = self.lock();
        let (results, broken) = st.alloc.set_pools(specs);
        st.pool_results = results.clone();
        (results, broken)
    }

    /// The outcome of the last [`set_pools`](Self::set_pools), per pool.
    pub fn pool_results(&self) -> Vec<PoolResult> {
        self.lock().pool_results.clone()
    }

    /// Sets a namespace's labels; returns the uids whose addresses are no longer valid.
    pub fn set_namespace_labels(
        &self,
        namespace: &str,
        labels: BTreeMap<String, String>,
    ) -> Vec<String> {
        let mut st = self.lock();
        let broken = st.alloc.set_namespace_labels(namespace, &labels);
        st.namespaces.insert(namespace.to_string(), labels);
        broken
    }

    /// Takes a Service's published addresses back at start-up.
    pub fn restore(&self, lb: &DesiredLoadBalancer, ips: &[IpAddr]) -> Result<(), ProviderError> {
        let mut st = self.lock();
        let req = request(&st, lb);
        st.alloc.restore(&req, ips)?;
        st.owners.insert(
            lb.service.uid.clone(),
            (lb.id.clone(), lb.cluster.clone(), lb.service.clone()),
        );
        Ok(())
    }

    /// Counts per valid pool.
    pub fn pool_stats(&self) -> BTreeMap<String, PoolStats> {
        self.lock().alloc.stats()
    }

    /// Whether some Service is waiting for an address (retry it when one frees up).
    pub fn has_failures(&self) -> bool {
        !self.lock().failed.is_empty()
    }

    /// The addresses assigned to the Service `uid`.
    pub fn addresses(&self, uid: &str) -> Option<Vec<IpAddr>> {
        self.lock().alloc.assignment(uid).map(|a| a.ips.clone())
    }
}

/// The allocator's view of a desired load balancer.
fn request(st: &State, lb: &DesiredLoadBalancer) -> AllocRequest {
    let ann = |k: &str| {
        lb.annotations
            .get(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    AllocRequest {
        uid: lb.service.uid.clone(),
        namespace: lb.service.namespace.clone(),
        name: lb.service.name.clone(),
        service_labels: lb.service_labels.clone(),
        namespace_labels: st
            .namespaces
            .get(&lb.service.namespace)
            .cloned()
            .unwrap_or_default(),
        requested: lb.requested_addresses.clone(),
        requested_field: if lb.annotations.contains_key(LB_IPS_ANNOTATION) {
            format!("metadata.annotations[{LB_IPS_ANNOTATION}]")
        } else {
            "spec.loadBalancerIP".into()
        },
        pool: ann(POOL_ANNOTATION),
        sharing_key: ann(SHARING_ANNOTATION),
        ports: lb.listeners.iter().map(|l| (l.port, l.protocol)).collect(),
        families: lb.ip_families.clone(),
        local_selector: (lb.external_traffic_policy == TrafficPolicy::Local)
            .then(|| lb.selector.clone()),
    }
}

/// What the l2 provider honours: the pool and sharing annotations and requested addresses;
/// not the health check (kube-proxy on the announcing node picks ready endpoints).
pub const ANNOTATIONS: crate::AnnotationSupport = crate::AnnotationSupport {
    keys: &[POOL_ANNOTATION, SHARING_ANNOTATION],
    health_check: false,
    requested_addresses: true,
    otherwise: "the address comes from an IPAddressPool and one node announces it, without that setting",
};

#[async_trait]
impl Provider for L2Provider {
    fn name(&self) -> &'static str {
        "l2"
    }

    fn needs_node_ports(&self) -> bool {
        false
    }

    fn annotations(&self) -> crate::AnnotationSupport {
        ANNOTATIONS
    }

    /// Pools select Services by label, and Services sharing an address must agree on their
    /// traffic policy and selector.
    fn reads_service_facts(&self) -> bool {
        true
    }

    fn keep_addresses(
        &self,
        lb: &DesiredLoadBalancer,
        ips: &[IpAddr],
    ) -> Result<bool, ProviderError> {
        if self.lock().alloc.assignment(&lb.service.uid).is_some() {
            return Ok(false);
        }
        self.restore(lb, ips).map(|()| true)
    }

    fn validate(&self, _lb: &DesiredLoadBalancer) -> Result<(), ProviderError> {
        Ok(())
    }

    async fn ensure(&self, lb: &DesiredLoadBalancer) -> Result<LoadBalancerStatus, ProviderError> {
        let uid = &lb.service.uid;
        let (res, event) = {
            let mut st = self.lock();
            let req = request(&st, lb);
            let before = st.alloc.assignment(uid).map(|a| a.ips.clone());
            match st.alloc.assign(&req) {
                Ok(a) => {
                    st.failed.remove(uid);
                    st.owners.insert(
                        uid.clone(),
                        (lb.id.clone(), lb.cluster.clone(), lb.service.clone()),
                    );
                    let ev = (before.as_ref() != Some(&a.ips)).then(|| AllocEvent::Allocated {
                        service: lb.service.clone(),
                        ips: a.ips.clone(),
                        pool: a.pool.clone(),
                    });
                    (Ok(a.ips), ev)
                }
                Err(e) => {
                    let msg = e.to_string();
                    let fresh = st.failed.get(uid) != Some(&msg);
                    st.failed.insert(uid.clone(), msg.clone());
                    let ev = fresh.then(|| AllocEvent::Failed {
                        service: lb.service.clone(),
                        message: msg,
                    });
                    (Err(e), ev)
                }
            }
        };
        if let Some(ev) = event {
            self.emit(ev);
        }
        let ips = res?;
        Ok(LoadBalancerStatus {
            ingress: ips
                .into_iter()
                .map(|ip| Ingress {
                    ip: Some(ip),
                    hostname: None,
                    ip_mode: IpMode::Vip,
                })
                .collect(),
        })
    }

    async fn delete(&self, lb: &LoadBalancerRef) -> Result<(), ProviderError> {
        let released = {
            let mut st = self.lock();
            let uid = &lb.service.uid;
            st.failed.remove(uid);
            st.owners.remove(uid);
            st.alloc.release(uid).is_some()
        };
        if released {
            self.emit(AllocEvent::Released {
                service: lb.service.clone(),
            });
        }
        Ok(())
    }

    async fn list_owned(&self, cluster: &str) -> Result<Vec<OwnedLoadBalancer>, ProviderError> {
        let st = self.lock();
        let mut out: Vec<OwnedLoadBalancer> = st
            .owners
            .values()
            .filter(|(_, c, _)| c == cluster)
            .map(|(id, c, svc)| OwnedLoadBalancer {
                id: id.clone(),
                cluster: c.clone(),
                service: svc.clone(),
                labels: ownership_labels(c, svc),
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
