//! The provider trait, the plain desired-state types it takes, and its implementations.
//!
//! Providers never see Kubernetes objects: the controller turns a Service and the eligible
//! nodes into a [`DesiredLoadBalancer`] and hands it to a [`Provider`], which makes the
//! outside world match it and reports the addresses to publish.

pub mod adopt;
pub mod annotations;
pub mod aws;
pub mod bounds;
mod cidr;
mod error;
pub mod http;
pub mod l2;
pub mod naming;
pub mod types;

pub use annotations::AnnotationSupport;
pub use error::ProviderError;
pub use types::*;

use async_trait::async_trait;

/// One kind of load balancer berth can program. Object-safe: the controller holds an
/// `Arc<dyn Provider>`.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// The provider's name: `"http"`, `"aws"`, `"l2"`.
    fn name(&self) -> &'static str;

    /// Whether traffic reaches nodes at their NodePorts (so listeners need `node_port`).
    fn needs_node_ports(&self) -> bool;

    /// Whether this provider can send traffic to `target` as it is now (e.g. it needs an
    /// address the kubelet has not reported yet). Targets it cannot use are left out of the
    /// desired state until they can be used, instead of failing every load balancer.
    fn can_target(&self, _target: &NodeTarget) -> bool {
        true
    }

    /// Whether `ensure` reads the Service's own facts in the desired state
    /// ([`DesiredLoadBalancer::service_labels`], `selector`, `external_traffic_policy`).
    /// When false, a change of those alone does not call `ensure` again.
    fn reads_service_facts(&self) -> bool {
        false
    }

    /// Whether `ensure` needs the Service's ready endpoints in
    /// [`DesiredLoadBalancer::endpoints`] (it sends traffic to pods, not nodes). The
    /// controller watches EndpointSlices and fills them only for load balancers for which
    /// this is true, and only their changes bring such a Service back.
    fn needs_endpoints(&self, _lb: &DesiredLoadBalancer) -> bool {
        false
    }

    /// Whether [`Provider::needs_endpoints`] can be true for any load balancer; when false,
    /// the controller does not watch EndpointSlices at all (and needs no RBAC for them).
    fn may_need_endpoints(&self) -> bool {
        false
    }

    /// The Service annotations this provider honours (its own keys, and whether it uses the
    /// health check and requested addresses berth's own annotations set). The controller warns
    /// about annotations of known families that are not among them.
    fn annotations(&self) -> AnnotationSupport;

    /// Checks what this provider can serve; bad input is [`ProviderError::Invalid`] naming
    /// the field and the accepted values. No I/O.
    fn validate(&self, lb: &DesiredLoadBalancer) -> Result<(), ProviderError>;

    /// Creates or updates the load balancer to match `lb`; idempotent; returns the status to
    /// publish. Must not write when nothing changed.
    async fn ensure(&self, lb: &DesiredLoadBalancer) -> Result<LoadBalancerStatus, ProviderError>;

    /// Deletes the load balancer; absent is success.
    async fn delete(&self, lb: &LoadBalancerRef) -> Result<(), ProviderError>;

    /// Everything this provider created for `cluster` (for orphan garbage collection).
    async fn list_owned(&self, cluster: &str) -> Result<Vec<OwnedLoadBalancer>, ProviderError>;

    /// Deletes what this provider made for the whole of `cluster` (not for one load
    /// balancer) once no load balancer of the cluster uses it any more; returns how many
    /// such resources went. Called by garbage collection after [`Provider::list_owned`].
    async fn collect_shared(&self, _cluster: &str) -> Result<usize, ProviderError> {
        Ok(0)
    }

    /// Whether the load balancer `from` made for this Service can be taken over, and what
    /// that would change. Read-only: never writes. Providers that cannot adopt refuse.
    async fn plan_adoption(
        &self,
        _lb: &DesiredLoadBalancer,
        from: adopt::AdoptFrom,
    ) -> Result<adopt::Adoption, ProviderError> {
        Ok(adopt::Adoption::Refused(format!(
            "the {} provider cannot take over load balancers made by {from}",
            self.name()
        )))
    }

    /// Keeps `ips`, the addresses another controller published for this Service, when they
    /// are free and this provider can serve them (a Service berth already gave addresses
    /// keeps those). Providers without addresses of their own keep nothing.
    fn keep_addresses(
        &self,
        _lb: &DesiredLoadBalancer,
        _ips: &[std::net::IpAddr],
    ) -> Result<bool, ProviderError> {
        Ok(false)
    }
}
