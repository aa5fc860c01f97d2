//! The desired state the controller computes for a Service, and what providers report back.
//!
//! Plain data: no Kubernetes types. Enums serialise with the spelling Kubernetes and the
//! `http` provider's contract use (`TCP`, `ClientIP`, `IPv4`, …), structs in camelCase.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

pub use crate::cidr::{Cidr, CidrError};

/// Label: the name of the cluster that owns a load balancer.
pub const LABEL_CLUSTER: &str = "berth.io/cluster";
/// Label: the owning Service's namespace.
pub const LABEL_SERVICE_NAMESPACE: &str = "berth.io/service-namespace";
/// Label: the owning Service's name.
pub const LABEL_SERVICE_NAME: &str = "berth.io/service-name";
/// Label: the owning Service's uid (a Service recreated with the same name is another owner).
pub const LABEL_SERVICE_UID: &str = "berth.io/service-uid";
/// Label: the `loadBalancerClass` whose controller created the load balancer. A controller's
/// garbage collection never touches another class's load balancers.
pub const LABEL_CLASS: &str = "berth.io/class";
/// Label: the berth version that last wrote the load balancer.
pub const LABEL_VERSION: &str = "berth.io/version";

/// The version written to [`LABEL_VERSION`].
pub const BERTH_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The ownership labels every load balancer berth creates for `service` carries.
pub fn ownership_labels(cluster: &str, service: &ServiceRef) -> BTreeMap<String, String> {
    [
        (LABEL_CLUSTER, cluster),
        (LABEL_SERVICE_NAMESPACE, &service.namespace),
        (LABEL_SERVICE_NAME, &service.name),
        (LABEL_SERVICE_UID, &service.uid),
        (LABEL_VERSION, BERTH_VERSION),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The Service a load balancer belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceRef {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
}

/// Enough to find and delete a load balancer without its desired state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LoadBalancerRef {
    /// The provider-side id, from [`crate::naming::load_balancer_id`].
    pub id: String,
    /// The owning cluster's name.
    pub cluster: String,
    /// The owning Service.
    pub service: ServiceRef,
}

/// Everything a provider needs to build one Service's load balancer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredLoadBalancer {
    /// The provider-side id, from [`crate::naming::load_balancer_id`].
    pub id: String,
    /// The owning cluster's name.
    pub cluster: String,
    /// The owning Service.
    pub service: ServiceRef,
    /// One per Service port, in the Service's order.
    pub listeners: Vec<Listener>,
    /// The eligible nodes, sorted by name. Shared: every load balancer of one node set holds
    /// the same list, so 10,000 load balancers of 1,000 nodes keep 1,000 targets in memory,
    /// not ten million, and comparing two desired states with the same list is a pointer
    /// comparison.
    #[serde(with = "shared_targets")]
    pub targets: Targets,
    /// How the load balancer decides a target may take traffic.
    pub health_check: HealthCheck,
    /// Clients allowed to connect; empty means everyone.
    pub source_ranges: Vec<Cidr>,
    /// Whether a client sticks to one target.
    pub session_affinity: SessionAffinity,
    /// The Service's `spec.ipFamilies`, primary first.
    pub ip_families: Vec<IpFamily>,
    /// Addresses the Service asked for (`spec.loadBalancerIP` or an annotation).
    pub requested_addresses: Vec<IpAddr>,
    /// Ownership labels ([`ownership_labels`]); providers store them as labels or tags.
    pub labels: BTreeMap<String, String>,
    /// The Service's annotations, for provider-specific settings.
    pub annotations: BTreeMap<String, String>,
    /// The Service's own `metadata.labels` (the l2 provider's pools select Services by
    /// them). Only providers whose [`Provider::reads_service_facts`] is true look at this
    /// and the next two fields.
    ///
    /// [`Provider::reads_service_facts`]: crate::Provider::reads_service_facts
    #[serde(default)]
    pub service_labels: BTreeMap<String, String>,
    /// The Service's `spec.selector` (its pods).
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    /// The Service's `spec.externalTrafficPolicy`.
    #[serde(default)]
    pub external_traffic_policy: TrafficPolicy,
    /// The Service's ready endpoints per Service port, from its EndpointSlices. Filled only
    /// for providers whose [`Provider::needs_endpoints`] is true for this load balancer
    /// (the aws provider's `ip` targets); empty, and left out of the JSON, for every other.
    ///
    /// [`Provider::needs_endpoints`]: crate::Provider::needs_endpoints
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<PortEndpoints>,
}

/// The ready endpoints behind one Service port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortEndpoints {
    /// The Service port's name (empty for a single unnamed port).
    pub name: String,
    /// The Service port (the listener's port).
    pub port: u16,
    /// The Service port's protocol.
    pub protocol: Protocol,
    /// Each ready endpoint's address and the port it serves this Service port on (the
    /// EndpointSlice port of the same name), sorted, without duplicates.
    pub addresses: Vec<EndpointAddress>,
}

/// One ready endpoint of a Service port: a pod's address and its port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EndpointAddress {
    /// The pod's IP.
    pub ip: IpAddr,
    /// The pod's port for this Service port.
    pub port: u16,
}

impl DesiredLoadBalancer {
    /// The reference that finds this load balancer again.
    pub fn reference(&self) -> LoadBalancerRef {
        LoadBalancerRef {
            id: self.id.clone(),
            cluster: self.cluster.clone(),
            service: self.service.clone(),
        }
    }

    /// A load balancer for `service` in `cluster`, its id and ownership labels derived from
    /// them; no listeners, targets, source ranges, families, requested addresses or
    /// annotations; a TCP health check on the traffic port and no session affinity. The
    /// builder's methods set the rest.
    pub fn builder(cluster: &str, service: ServiceRef) -> DesiredLoadBalancerBuilder {
        DesiredLoadBalancerBuilder(DesiredLoadBalancer {
            id: crate::naming::load_balancer_id(
                cluster,
                &service.namespace,
                &service.name,
                &service.uid,
            ),
            cluster: cluster.to_string(),
            labels: ownership_labels(cluster, &service),
            service,
            listeners: Vec::new(),
            targets: Targets::default(),
            health_check: HealthCheck::tcp_traffic_port(),
            source_ranges: Vec::new(),
            session_affinity: SessionAffinity::None,
            ip_families: Vec::new(),
            requested_addresses: Vec::new(),
            annotations: BTreeMap::new(),
            service_labels: BTreeMap::new(),
            selector: BTreeMap::new(),
            external_traffic_policy: TrafficPolicy::Cluster,
            endpoints: Vec::new(),
        })
    }

    /// Whether the Service's own facts (labels, selector, traffic policy) are the same in
    /// `other`.
    pub fn same_service_facts(&self, other: &Self) -> bool {
        self.service_labels == other.service_labels
            && self.selector == other.selector
            && self.external_traffic_policy == other.external_traffic_policy
    }

    /// `self` with the Service's own facts of `other`.
    pub fn with_service_facts_of(mut self, other: &Self) -> Self {
        self.service_labels = other.service_labels.clone();
        self.selector = other.selector.clone();
        self.external_traffic_policy = other.external_traffic_policy;
        self
    }
}

/// A Service's `spec.externalTrafficPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum TrafficPolicy {
    /// Any node may take the traffic and forward it (the default).
    #[default]
    Cluster,
    /// Only nodes running one of the Service's pods take traffic (the client address is
    /// kept).
    Local,
}

/// Builds a [`DesiredLoadBalancer`]; from [`DesiredLoadBalancer::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct DesiredLoadBalancerBuilder(DesiredLoadBalancer);

impl DesiredLoadBalancerBuilder {
    /// Adds a listener on `port` (after those added before).
    pub fn listener(
        mut self,
        name: &str,
        port: u16,
        protocol: Protocol,
        node_port: Option<u16>,
    ) -> Self {
        self.0.listeners.push(Listener {
            name: name.to_string(),
            port,
            protocol,
            node_port,
        });
        self
    }

    /// Adds a target (after those added before).
    pub fn target(self, target: NodeTarget) -> Self {
        self.targets([target])
    }

    /// Adds targets (after those added before).
    pub fn targets(mut self, targets: impl IntoIterator<Item = NodeTarget>) -> Self {
        let mut all = self.0.targets.to_vec();
        all.extend(targets);
        self.0.targets = all.into();
        self
    }

    /// Replaces the health check.
    pub fn health_check(mut self, health_check: HealthCheck) -> Self {
        self.0.health_check = health_check;
        self
    }

    /// Adds an allowed client range.
    pub fn source_range(mut self, range: Cidr) -> Self {
        self.0.source_ranges.push(range);
        self
    }

    /// Replaces the session affinity.
    pub fn session_affinity(mut self, affinity: SessionAffinity) -> Self {
        self.0.session_affinity = affinity;
        self
    }

    /// Replaces the IP families, primary first.
    pub fn ip_families(mut self, families: impl IntoIterator<Item = IpFamily>) -> Self {
        self.0.ip_families = families.into_iter().collect();
        self
    }

    /// Adds a requested address.
    pub fn requested_address(mut self, ip: IpAddr) -> Self {
        self.0.requested_addresses.push(ip);
        self
    }

    /// Sets an annotation.
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.0
            .annotations
            .insert(key.to_string(), value.to_string());
        self
    }

    /// Sets one of the Service's own labels.
    pub fn service_label(mut self, key: &str, value: &str) -> Self {
        self.0
            .service_labels
            .insert(key.to_string(), value.to_string());
        self
    }

    /// Sets one entry of the Service's selector.
    pub fn selector(mut self, key: &str, value: &str) -> Self {
        self.0.selector.insert(key.to_string(), value.to_string());
        self
    }

    /// Replaces the external traffic policy.
    pub fn external_traffic_policy(mut self, policy: TrafficPolicy) -> Self {
        self.0.external_traffic_policy = policy;
        self
    }

    /// Adds the ready endpoints of the Service port `port`/`protocol` named `name`.
    pub fn endpoints(
        mut self,
        name: &str,
        port: u16,
        protocol: Protocol,
        addresses: impl IntoIterator<Item = EndpointAddress>,
    ) -> Self {
        let mut addresses: Vec<EndpointAddress> = addresses.into_iter().collect();
        addresses.sort();
        addresses.dedup();
        self.0.endpoints.push(PortEndpoints {
            name: name.to_string(),
            port,
            protocol,
            addresses,
        });
        self
    }

    /// The load balancer.
    pub fn build(self) -> DesiredLoadBalancer {
        self.0
    }
}

impl NodeTarget {
    /// A node called `name` at `internal_ip`, with no provider id or zone.
    pub fn new(name: &str, internal_ip: Option<IpAddr>) -> Self {
        Self {
            name: name.to_string(),
            internal_ip,
            provider_id: None,
            zone: None,
        }
    }
}

/// The transport protocol of a Service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Protocol {
    /// `TCP`.
    #[serde(rename = "TCP")]
    Tcp,
    /// `UDP`.
    #[serde(rename = "UDP")]
    Udp,
    /// `SCTP` (few load balancers serve it).
    #[serde(rename = "SCTP")]
    Sctp,
}

impl Protocol {
    /// The Kubernetes spelling: `TCP`, `UDP`, `SCTP`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One Service port, served on the load balancer's address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    /// The Service port's name (may be empty for a single-port Service).
    pub name: String,
    /// The port on the load balancer's address.
    pub port: u16,
    /// The transport protocol.
    pub protocol: Protocol,
    /// The NodePort, when allocated; NodePort-targeting providers need it.
    pub node_port: Option<u16>,
}

/// A shared, immutable list of node targets.
pub type Targets = Arc<[NodeTarget]>;

/// Serialises [`Targets`] as a plain list.
mod shared_targets {
    use super::{NodeTarget, Targets};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(t: &Targets, s: S) -> Result<S::Ok, S::Error> {
        t[..].serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Targets, D::Error> {
        Vec::<NodeTarget>::deserialize(d).map(Targets::from)
    }
}

/// An eligible node, as a provider sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeTarget {
    /// The node's name.
    pub name: String,
    /// Its InternalIP (or ExternalIP when it has none).
    pub internal_ip: Option<IpAddr>,
    /// `spec.providerID`, e.g. `aws:///us-east-1a/i-0123`.
    pub provider_id: Option<String>,
    /// The `topology.kubernetes.io/zone` label.
    pub zone: Option<String>,
}

/// The protocol of a health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HealthProtocol {
    /// A TCP connect succeeds.
    #[serde(rename = "TCP")]
    Tcp,
    /// An HTTP GET of `path` answers 2xx.
    #[serde(rename = "HTTP")]
    Http,
}

/// How the load balancer decides a target may take traffic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// TCP connect or HTTP GET.
    pub protocol: HealthProtocol,
    /// The port on each target; `None` means each listener's traffic port (its NodePort).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// For HTTP: the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Seconds between checks.
    #[serde(default = "default_interval")]
    pub interval_seconds: u32,
    /// Seconds before a check counts as failed.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u32,
    /// Consecutive successes before a target takes traffic.
    #[serde(default = "default_threshold")]
    pub healthy_threshold: u32,
    /// Consecutive failures before a target stops taking traffic.
    #[serde(default = "default_threshold")]
    pub unhealthy_threshold: u32,
}

fn default_interval() -> u32 {
    5
}
fn default_timeout() -> u32 {
    2
}
fn default_threshold() -> u32 {
    2
}

impl HealthCheck {
    /// TCP on each listener's traffic port (`externalTrafficPolicy: Cluster`).
    pub fn tcp_traffic_port() -> Self {
        Self {
            protocol: HealthProtocol::Tcp,
            port: None,
            path: None,
            interval_seconds: default_interval(),
            timeout_seconds: default_timeout(),
            healthy_threshold: default_threshold(),
            unhealthy_threshold: default_threshold(),
        }
    }

    /// HTTP `GET /healthz` on the Service's `healthCheckNodePort`
    /// (`externalTrafficPolicy: Local`): only nodes with a ready local endpoint pass.
    pub fn http_healthz(port: u16) -> Self {
        Self {
            protocol: HealthProtocol::Http,
            port: Some(port),
            path: Some("/healthz".to_string()),
            ..Self::tcp_traffic_port()
        }
    }
}

/// Whether a client sticks to one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum SessionAffinity {
    /// Each connection may go to any target.
    #[default]
    None,
    /// Connections from one client IP go to the same target for `timeout_seconds`.
    #[serde(rename = "ClientIP", rename_all = "camelCase")]
    ClientIp {
        /// How long the stickiness lasts (Kubernetes' default is 10800).
        #[serde(default = "default_affinity_timeout")]
        timeout_seconds: u32,
    },
}

fn default_affinity_timeout() -> u32 {
    10_800
}

/// An IP family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum IpFamily {
    /// IPv4.
    IPv4,
    /// IPv6.
    IPv6,
}

/// What a provider reports, to publish in the Service's `status.loadBalancer`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadBalancerStatus {
    /// The addresses clients use; empty while the provider is still allocating.
    pub ingress: Vec<Ingress>,
}

/// One address of a load balancer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ingress {
    /// An IP address.
    pub ip: Option<IpAddr>,
    /// A DNS name.
    pub hostname: Option<String>,
    /// How traffic to the address reaches the node.
    pub ip_mode: IpMode,
}

/// Kubernetes' `status.loadBalancer.ingress[].ipMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IpMode {
    /// Packets arrive with the VIP as destination (kube-proxy may short-circuit it).
    #[serde(rename = "VIP")]
    Vip,
    /// The load balancer proxies: packets arrive addressed to the node.
    Proxy,
}

/// A load balancer a provider found carrying berth's ownership labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedLoadBalancer {
    /// The provider-side id.
    pub id: String,
    /// The owning cluster (the [`LABEL_CLUSTER`] label).
    pub cluster: String,
    /// The owning Service, from the labels.
    pub service: ServiceRef,
    /// All the load balancer's labels.
    pub labels: BTreeMap<String, String>,
}

impl OwnedLoadBalancer {
    /// Reads ownership from `labels`; `None` when any of cluster, service namespace, name or
    /// uid is missing (berth did not create it).
    pub fn from_labels(id: String, labels: BTreeMap<String, String>) -> Option<Self> {
        let get = |k: &str| labels.get(k).filter(|v| !v.is_empty()).cloned();
        Some(Self {
            id,
            cluster: get(LABEL_CLUSTER)?,
            service: ServiceRef {
                namespace: get(LABEL_SERVICE_NAMESPACE)?,
                name: get(LABEL_SERVICE_NAME)?,
                uid: get(LABEL_SERVICE_UID)?,
            },
            labels,
        })
    }

    /// The reference that deletes it.
    pub fn reference(&self) -> LoadBalancerRef {
        LoadBalancerRef {
            id: self.id.clone(),
            cluster: self.cluster.clone(),
            service: self.service.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc() -> ServiceRef {
        ServiceRef {
            namespace: "shop".into(),
            name: "web".into(),
            uid: "0f6c".into(),
        }
    }

    #[test]
    fn ownership_labels_round_trip() {
        let labels = ownership_labels("prod", &svc());
        assert_eq!(labels[LABEL_CLUSTER], "prod");
        assert_eq!(labels[LABEL_SERVICE_NAMESPACE], "shop");
        assert_eq!(labels[LABEL_SERVICE_NAME], "web");
        assert_eq!(labels[LABEL_SERVICE_UID], "0f6c");
        assert_eq!(labels[LABEL_VERSION], BERTH_VERSION);
        let owned = OwnedLoadBalancer::from_labels("b-1".into(), labels).unwrap();
        assert_eq!(owned.cluster, "prod");
        assert_eq!(owned.service, svc());
        assert_eq!(owned.reference().id, "b-1");
    }

    #[test]
    fn builder_fills_identity_and_defaults() {
        let lb = DesiredLoadBalancer::builder("prod", svc())
            .listener("http", 80, Protocol::Tcp, Some(30080))
            .listener("dns", 53, Protocol::Udp, None)
            .target(NodeTarget::new("b", None))
            .targets([NodeTarget::new("a", Some("10.0.0.1".parse().unwrap()))])
            .source_range("10.1.2.3/8".parse().unwrap())
            .requested_address("192.0.2.1".parse().unwrap())
            .ip_families([IpFamily::IPv6])
            .annotation("k", "v")
            .build();
        assert_eq!(
            lb.id,
            crate::naming::load_balancer_id("prod", "shop", "web", "0f6c")
        );
        assert_eq!(lb.cluster, "prod");
        assert_eq!(lb.labels, ownership_labels("prod", &svc()));
        assert_eq!(lb.reference().service, svc());
        let ports: Vec<_> = lb.listeners.iter().map(|l| (l.port, l.node_port)).collect();
        assert_eq!(ports, vec![(80, Some(30080)), (53, None)]);
        let names: Vec<_> = lb.targets.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, vec!["b", "a"]);
        assert_eq!(lb.source_ranges[0].to_string(), "10.0.0.0/8");
        assert_eq!(lb.ip_families, vec![IpFamily::IPv6]);
        assert_eq!(lb.annotations["k"], "v");
        assert_eq!(lb.health_check, HealthCheck::tcp_traffic_port());
        assert_eq!(lb.session_affinity, SessionAffinity::None);
        let bare = DesiredLoadBalancer::builder("prod", svc()).build();
        assert!(bare.listeners.is_empty() && bare.targets.is_empty());
        assert!(bare.source_ranges.is_empty() && bare.requested_addresses.is_empty());
        assert_eq!(bare.external_traffic_policy, TrafficPolicy::Cluster);
    }

    #[test]
    fn service_facts_compare_and_carry_over() {
        let plain = DesiredLoadBalancer::builder("prod", svc()).build();
        let local = DesiredLoadBalancer::builder("prod", svc())
            .service_label("tier", "web")
            .selector("app", "x")
            .external_traffic_policy(TrafficPolicy::Local)
            .build();
        assert!(!plain.same_service_facts(&local));
        let carried = plain.clone().with_service_facts_of(&local);
        assert_eq!(carried, local);
        assert!(carried.same_service_facts(&local));
        for one in [
            DesiredLoadBalancer::builder("prod", svc()).service_label("a", "b"),
            DesiredLoadBalancer::builder("prod", svc()).selector("a", "b"),
            DesiredLoadBalancer::builder("prod", svc())
                .external_traffic_policy(TrafficPolicy::Local),
        ] {
            assert!(!one.build().same_service_facts(&plain));
        }
        // Desired states written before these fields existed still read.
        let mut json = serde_json::to_value(&plain).unwrap();
        for k in ["serviceLabels", "selector", "externalTrafficPolicy"] {
            json.as_object_mut().unwrap().remove(k);
        }
        assert_eq!(
            serde_json::from_value::<DesiredLoadBalancer>(json).unwrap(),
            plain
        );
        assert_eq!(
            serde_json::to_value(TrafficPolicy::Local).unwrap(),
            serde_json::json!("Local")
        );
    }

    #[test]
    fn endpoints_stay_off_the_wire_unless_filled() {
        let plain = DesiredLoadBalancer::builder("prod", svc()).build();
        let json = serde_json::to_value(&plain).unwrap();
        assert!(json.get("endpoints").is_none(), "{json}");
        let ep = |ip: &str, port| EndpointAddress {
            ip: ip.parse().unwrap(),
            port,
        };
        let with = DesiredLoadBalancer::builder("prod", svc())
            .endpoints(
                "http",
                80,
                Protocol::Tcp,
                [
                    ep("10.1.0.2", 8080),
                    ep("10.1.0.1", 8080),
                    ep("10.1.0.2", 8080),
                ],
            )
            .build();
        assert_eq!(
            with.endpoints[0].addresses,
            vec![ep("10.1.0.1", 8080), ep("10.1.0.2", 8080)]
        );
        let json = serde_json::to_value(&with).unwrap();
        assert_eq!(
            json["endpoints"][0],
            serde_json::json!({"name": "http", "port": 80, "protocol": "TCP",
                "addresses": [{"ip": "10.1.0.1", "port": 8080}, {"ip": "10.1.0.2", "port": 8080}]})
        );
        assert_eq!(
            serde_json::from_value::<DesiredLoadBalancer>(json).unwrap(),
            with
        );
    }

    #[test]
    fn foreign_labels_are_not_owned() {
        let mut labels = ownership_labels("prod", &svc());
        labels.remove(LABEL_SERVICE_UID);
        assert!(OwnedLoadBalancer::from_labels("x".into(), labels).is_none());
        assert!(OwnedLoadBalancer::from_labels("x".into(), BTreeMap::new()).is_none());
    }

    #[test]
    fn health_check_constructors() {
        let tcp = HealthCheck::tcp_traffic_port();
        assert_eq!(
            (tcp.protocol, tcp.port, tcp.path.as_deref()),
            (HealthProtocol::Tcp, None, None)
        );
        let http = HealthCheck::http_healthz(31_000);
        assert_eq!(http.protocol, HealthProtocol::Http);
        assert_eq!(http.port, Some(31_000));
        assert_eq!(http.path.as_deref(), Some("/healthz"));
        assert_eq!(http.interval_seconds, tcp.interval_seconds);
    }

    #[test]
    fn session_affinity_json() {
        let none = serde_json::to_value(SessionAffinity::None).unwrap();
        assert_eq!(none, serde_json::json!({"type": "None"}));
        let sticky = SessionAffinity::ClientIp {
            timeout_seconds: 60,
        };
        let json = serde_json::to_value(sticky).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "ClientIP", "timeoutSeconds": 60})
        );
        // A server may echo defaults or extra fields.
        let back: SessionAffinity =
            serde_json::from_value(serde_json::json!({"type": "None", "timeoutSeconds": 5}))
                .unwrap();
        assert_eq!(back, SessionAffinity::None);
        let back: SessionAffinity =
            serde_json::from_value(serde_json::json!({"type": "ClientIP"})).unwrap();
        assert_eq!(
            back,
            SessionAffinity::ClientIp {
                timeout_seconds: 10_800
            }
        );
    }
}
