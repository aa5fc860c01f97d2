//! The JSON of berth's load balancer API (`docs/http-provider.openapi.yaml`), and the mapping
//! from a [`DesiredLoadBalancer`] to it.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};

use crate::{
    Cidr, DesiredLoadBalancer, HealthCheck, HealthProtocol, Ingress, IpFamily, IpMode,
    LABEL_VERSION, LoadBalancerStatus, NodeTarget, Protocol, ProviderError, SessionAffinity,
};

/// `LoadBalancerSpec`: the whole desired state, as `PUT` sends it.
///
/// Deserialising fills the contract's defaults, so a server that omits them still compares
/// equal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Spec {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub listeners: Vec<WireListener>,
    pub targets: TargetList,
    pub health_check: HealthCheck,
    #[serde(default)]
    pub source_ranges: Vec<Cidr>,
    #[serde(default)]
    pub session_affinity: SessionAffinity,
    #[serde(default)]
    pub ip_families: Vec<IpFamily>,
    #[serde(default)]
    pub requested_addresses: Vec<IpAddr>,
}

/// See [`Spec::digest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SpecDigest([u8; 32]);

/// `Listener`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireListener {
    #[serde(default)]
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
    pub target_port: u16,
}

/// `Target`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Target {
    pub name: String,
    pub address: IpAddr,
}

/// A spec's `targets`, sorted by name, with their JSON and its digest worked out once. Every
/// load balancer of a cluster targets the same nodes, so one list serves them all: a write
/// copies the rendered JSON instead of cloning, sorting, serialising and hashing a
/// thousand targets per load balancer.
#[derive(Clone)]
pub(crate) struct TargetList(Arc<Rendered>);

struct Rendered {
    items: Vec<Target>,
    json: Box<RawValue>,
    digest: [u8; 32],
}

impl TargetList {
    pub fn new(mut items: Vec<Target>) -> Self {
        use sha2::Digest;
        items.sort_by(|a, b| a.name.cmp(&b.name));
        let json = serde_json::value::to_raw_value(&items)
            .unwrap_or_else(|_| RawValue::from_string("[]".into()).expect("valid JSON"));
        let digest = sha2::Sha256::digest(json.get().as_bytes()).into();
        TargetList(Arc::new(Rendered {
            items,
            json,
            digest,
        }))
    }
}

impl Default for TargetList {
    fn default() -> Self {
        TargetList::new(Vec::new())
    }
}

impl PartialEq for TargetList {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.items == other.0.items
    }
}

impl Eq for TargetList {}

impl std::fmt::Debug for TargetList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.0.items).finish()
    }
}

impl Serialize for TargetList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.json.serialize(s)
    }
}

impl<'de> Deserialize<'de> for TargetList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<Target>::deserialize(d).map(TargetList::new)
    }
}

/// The [`TargetList`] of the node set last seen, keyed by the identity of the controller's
/// shared list (a new node set is a new allocation).
#[derive(Default)]
pub(crate) struct TargetCache(Mutex<Option<(Weak<[NodeTarget]>, TargetList)>>);

impl TargetCache {
    fn get(&self, nodes: &Arc<[NodeTarget]>) -> Option<TargetList> {
        let cached = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // The weak reference keeps the allocation, so an equal address is the same list.
        cached
            .as_ref()
            .filter(|(w, _)| std::ptr::eq(w.as_ptr(), Arc::as_ptr(nodes)))
            .map(|(_, list)| list.clone())
    }

    fn put(&self, nodes: &Arc<[NodeTarget]>, list: &TargetList) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Arc::downgrade(nodes), list.clone()));
    }
}

/// `LoadBalancer`, as `GET` and `PUT` return it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct LoadBalancer {
    pub spec: Spec,
    #[serde(default)]
    pub status: Status,
    /// The body's copy of the ETag; the header wins when both are present.
    #[serde(default)]
    pub etag: Option<String>,
}

/// What berth reads of the `LoadBalancer` a `PUT` returns: the status and the ETag. The spec
/// it echoes is skipped unparsed (at 1,000 nodes it is 1,000 targets, parsed and dropped on
/// every write before).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Written {
    #[serde(default)]
    pub status: Status,
    #[serde(default)]
    pub etag: Option<String>,
}

/// `LoadBalancerStatus`.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Status {
    #[serde(default)]
    pub addresses: Vec<Address>,
}

/// One of `LoadBalancerStatus.addresses`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Address {
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub hostname: Option<String>,
}

/// `LoadBalancerList`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct List {
    pub items: Vec<ListItem>,
}

/// An item of `LoadBalancerList`: only what garbage collection reads, so one malformed
/// spec does not hide every other load balancer.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ListItem {
    pub id: String,
    #[serde(default)]
    pub spec: LabelsOnly,
}

/// The labels of a `LoadBalancerSpec`.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct LabelsOnly {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The contract's `Error` body.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ErrorBody {
    pub error: ErrorDetail,
}

/// The contract's `Error.error`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ErrorDetail {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub field: Option<String>,
}

impl Spec {
    /// The spec `lb` asks for, or [`ProviderError::Invalid`] for what this API cannot serve.
    #[cfg(test)]
    pub fn from_desired(lb: &DesiredLoadBalancer) -> Result<Self, ProviderError> {
        Self::from_desired_cached(lb, &TargetCache::default())
    }

    /// The spec `lb` asks for, or [`ProviderError::Invalid`] for what this API cannot serve,
    /// taking the target list from `cache` when `lb` targets the
    /// node set it was built for.
    pub fn from_desired_cached(
        lb: &DesiredLoadBalancer,
        cache: &TargetCache,
    ) -> Result<Self, ProviderError> {
        if !is_valid_id(&lb.id) {
            return Err(ProviderError::invalid(
                "id",
                format!("{:?} is not a DNS label of at most 63 characters", lb.id),
            ));
        }
        if lb.listeners.is_empty() {
            return Err(ProviderError::invalid(
                "spec.ports",
                "At least one port is required",
            ));
        }
        let mut seen = HashSet::new();
        let mut listeners = Vec::with_capacity(lb.listeners.len());
        for (i, l) in lb.listeners.iter().enumerate() {
            if l.protocol == Protocol::Sctp {
                return Err(ProviderError::invalid(
                    format!("spec.ports[{i}].protocol"),
                    "SCTP is not supported by the http provider; accepted values: \"TCP\", \"UDP\"",
                ));
            }
            if l.port == 0 {
                return Err(ProviderError::invalid(
                    format!("spec.ports[{i}].port"),
                    "Must be from 1 to 65535",
                ));
            }
            let target_port = l.node_port.filter(|p| *p != 0).ok_or_else(|| {
                ProviderError::invalid(
                    format!("spec.ports[{i}].nodePort"),
                    "Required: the http provider sends traffic to NodePorts; \
                     do not set spec.allocateLoadBalancerNodePorts to false",
                )
            })?;
            if !seen.insert((l.port, l.protocol)) {
                return Err(ProviderError::invalid(
                    format!("spec.ports[{i}]"),
                    format!(
                        "Port {}/{} appears twice; each (port, protocol) must be unique",
                        l.port, l.protocol
                    ),
                ));
            }
            listeners.push(WireListener {
                name: l.name.clone(),
                port: l.port,
                protocol: l.protocol,
                target_port,
            });
        }
        let targets = match cache.get(&lb.targets) {
            Some(list) => list,
            None => {
                let list = TargetList::new(
                    lb.targets
                        .iter()
                        .map(|t| {
                            let address = t.internal_ip.ok_or_else(|| {
                                ProviderError::invalid(
                                    format!("node {}", t.name),
                                    "The node has no InternalIP or ExternalIP address to send traffic to",
                                )
                            })?;
                            Ok(Target {
                                name: t.name.clone(),
                                address,
                            })
                        })
                        .collect::<Result<_, ProviderError>>()?,
                );
                cache.put(&lb.targets, &list);
                list
            }
        };
        let hc = &lb.health_check;
        if hc.protocol == HealthProtocol::Http && hc.path.as_deref().is_none_or(str::is_empty) {
            return Err(ProviderError::invalid(
                "healthCheck.path",
                "Required for an HTTP health check, e.g. \"/healthz\"",
            ));
        }
        if let Some(path) = hc
            .path
            .as_deref()
            .filter(|_| hc.protocol == HealthProtocol::Http)
        {
            crate::bounds::check_health_check_path(path)
                .map_err(|m| ProviderError::invalid("healthCheck.path", m))?;
        }
        if hc.port == Some(0) {
            return Err(ProviderError::invalid(
                "healthCheck.port",
                "Must be from 1 to 65535, or unset for the traffic port",
            ));
        }
        for (field, value) in [
            ("intervalSeconds", hc.interval_seconds),
            ("timeoutSeconds", hc.timeout_seconds),
            ("healthyThreshold", hc.healthy_threshold),
            ("unhealthyThreshold", hc.unhealthy_threshold),
        ] {
            if value == 0 {
                return Err(ProviderError::invalid(
                    format!("healthCheck.{field}"),
                    "Must be at least 1",
                ));
            }
        }
        if let SessionAffinity::ClientIp { timeout_seconds: 0 } = lb.session_affinity {
            return Err(ProviderError::invalid(
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                "Must be at least 1",
            ));
        }
        Ok(Self {
            labels: lb.labels.clone(),
            listeners,
            targets,
            health_check: lb.health_check.clone(),
            source_ranges: lb.source_ranges.clone(),
            session_affinity: lb.session_affinity,
            ip_families: lb.ip_families.clone(),
            requested_addresses: lb.requested_addresses.clone(),
        }
        .normalized())
    }

    /// The spec with order-insensitive lists sorted, so two specs meaning the same compare
    /// equal.
    pub fn normalized(mut self) -> Self {
        self.listeners
            .sort_by(|a, b| (a.port, a.protocol, &a.name).cmp(&(b.port, b.protocol, &b.name)));
        // `targets` are sorted when built.
        self.source_ranges.sort();
        self.source_ranges.dedup();
        self
    }

    /// Whether the load balancer already serves this spec. The version label is ignored:
    /// upgrading berth must not rewrite every load balancer.
    pub fn same_as(&self, current: &Spec) -> bool {
        self.comparable() == current.comparable()
    }

    fn comparable(&self) -> Spec {
        let mut spec = self.clone().normalized();
        spec.labels.remove(LABEL_VERSION);
        spec
    }

    /// A digest of what [`Spec::same_as`] compares: equal digests mean the same spec. Kept
    /// per load balancer instead of the spec itself, whose target list is the size of the
    /// cluster.
    pub fn digest(&self) -> SpecDigest {
        use sha2::Digest;
        // The target list's own digest stands in for its JSON, hashed once per list.
        let mut rest = self.comparable();
        let targets = std::mem::replace(&mut rest.targets, TargetList::new(Vec::new()));
        let json = serde_json::to_vec(&rest).unwrap_or_default();
        let mut h = sha2::Sha256::new();
        h.update(&json);
        h.update(targets.0.digest);
        SpecDigest(h.finalize().into())
    }
}

/// Whether `h` can be a Service's `status.loadBalancer.ingress[].hostname`: a DNS name of
/// at most 253 characters.
fn is_dns_name(h: &str) -> bool {
    h.len() <= 253
        && h.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

impl Status {
    /// The Service status to publish: every address, `ipMode: Proxy`.
    pub fn to_status(&self) -> Result<LoadBalancerStatus, ProviderError> {
        let ingress = self
            .addresses
            .iter()
            .filter(|a| a.ip.is_some() || a.hostname.is_some())
            .map(|a| {
                let ip =
                    a.ip.as_deref()
                        .map(|ip| {
                            ip.parse::<IpAddr>().map_err(|_| {
                                ProviderError::Permanent(format!(
                                    "Load balancer API returned an invalid address: {}",
                                    crate::bounds::quote(ip)
                                ))
                            })
                        })
                        .transpose()?;
                let hostname = a.hostname.clone().filter(|h| !h.is_empty());
                if let Some(h) = &hostname
                    && !is_dns_name(h)
                {
                    return Err(ProviderError::Permanent(format!(
                        "Load balancer API returned an invalid hostname: {}",
                        crate::bounds::quote(h)
                    )));
                }
                Ok(Ingress {
                    ip,
                    hostname,
                    ip_mode: IpMode::Proxy,
                })
            })
            .collect::<Result<_, ProviderError>>()?;
        Ok(LoadBalancerStatus { ingress })
    }
}

/// The contract's id pattern: `^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`.
pub(crate) fn is_valid_id(id: &str) -> bool {
    (1..=63).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-')
        && !id.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NodeTarget, ServiceRef};
    use serde_json::json;

    fn desired() -> DesiredLoadBalancer {
        let service = ServiceRef {
            namespace: "shop".into(),
            name: "web".into(),
            uid: "6f1c7c2e-1d2b-4e8a-9a57-0c1f1b1e2d3c".into(),
        };
        DesiredLoadBalancer::builder("prod", service)
            .listener("https", 443, Protocol::Tcp, Some(30443))
            .listener("dns", 53, Protocol::Udp, Some(30053))
            .target(NodeTarget::new("node-b", Some("fd00::b".parse().unwrap())))
            .target(NodeTarget {
                provider_id: Some("aws:///us-east-1a/i-0123".into()),
                zone: Some("us-east-1a".into()),
                ..NodeTarget::new("node-a", Some("10.0.0.1".parse().unwrap()))
            })
            .health_check(HealthCheck::http_healthz(31000))
            .source_range("192.168.7.9/16".parse().unwrap())
            .source_range("10.0.0.0/8".parse().unwrap())
            .session_affinity(SessionAffinity::ClientIp {
                timeout_seconds: 600,
            })
            .ip_families([IpFamily::IPv4, IpFamily::IPv6])
            .requested_address("192.0.2.10".parse().unwrap())
            .annotation("example.com/ignored", "x")
            .build()
    }

    #[test]
    fn full_desired_state_maps_to_the_contract() {
        let spec = Spec::from_desired(&desired()).unwrap();
        let want = json!({
            "labels": {
                "berth.io/cluster": "prod",
                "berth.io/service-name": "web",
                "berth.io/service-namespace": "shop",
                "berth.io/service-uid": "6f1c7c2e-1d2b-4e8a-9a57-0c1f1b1e2d3c",
                "berth.io/version": crate::BERTH_VERSION,
            },
            "listeners": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 30053},
                {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 30443},
            ],
            "targets": [
                {"name": "node-a", "address": "10.0.0.1"},
                {"name": "node-b", "address": "fd00::b"},
            ],
            "healthCheck": {
                "protocol": "HTTP",
                "port": 31000,
                "path": "/healthz",
                "intervalSeconds": 5,
                "timeoutSeconds": 2,
                "healthyThreshold": 2,
                "unhealthyThreshold": 2,
            },
            "sourceRanges": ["10.0.0.0/8", "192.168.0.0/16"],
            "sessionAffinity": {"type": "ClientIP", "timeoutSeconds": 600},
            "ipFamilies": ["IPv4", "IPv6"],
            "requestedAddresses": ["192.0.2.10"],
        });
        assert_eq!(serde_json::to_value(&spec).unwrap(), want);
    }

    #[test]
    fn minimal_desired_state_maps_to_the_contract() {
        let mut lb = desired();
        lb.listeners.truncate(1);
        lb.targets = Default::default();
        lb.health_check = HealthCheck::tcp_traffic_port();
        lb.source_ranges.clear();
        lb.session_affinity = SessionAffinity::None;
        lb.ip_families.clear();
        lb.requested_addresses.clear();
        lb.labels.clear();
        let spec = Spec::from_desired(&lb).unwrap();
        let want = json!({
            "labels": {},
            "listeners": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 30443}],
            "targets": [],
            "healthCheck": {
                "protocol": "TCP",
                "intervalSeconds": 5,
                "timeoutSeconds": 2,
                "healthyThreshold": 2,
                "unhealthyThreshold": 2,
            },
            "sourceRanges": [],
            "sessionAffinity": {"type": "None"},
            "ipFamilies": [],
            "requestedAddresses": [],
        });
        assert_eq!(serde_json::to_value(&spec).unwrap(), want);
    }

    #[test]
    fn a_server_copy_with_defaults_omitted_is_the_same() {
        let mut lb = desired();
        lb.health_check = HealthCheck::tcp_traffic_port();
        lb.source_ranges.clear();
        lb.session_affinity = SessionAffinity::None;
        lb.ip_families.clear();
        lb.requested_addresses.clear();
        let ours = Spec::from_desired(&lb).unwrap();
        let mut labels = lb.labels.clone();
        labels.insert(LABEL_VERSION.into(), "0.0.1-older".into());
        let theirs: Spec = serde_json::from_value(json!({
            "labels": labels,
            "listeners": [
                {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 30443},
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 30053},
            ],
            "targets": [
                {"name": "node-b", "address": "fd00:0::b"},
                {"name": "node-a", "address": "10.0.0.1"},
            ],
            "healthCheck": {"protocol": "TCP"},
        }))
        .unwrap();
        assert!(ours.same_as(&theirs));
        let mut moved = theirs.clone();
        moved.listeners[0].target_port = 30444;
        assert!(!ours.same_as(&moved));
        let mut relabelled = theirs;
        relabelled
            .labels
            .insert("berth.io/service-uid".into(), "other".into());
        assert!(!ours.same_as(&relabelled));
    }

    #[test]
    fn one_target_list_serves_every_load_balancer_of_a_node_set() {
        let cache = TargetCache::default();
        let a = desired();
        let mut b = desired();
        b.id = "other".into();
        b.targets = a.targets.clone();
        let sa = Spec::from_desired_cached(&a, &cache).unwrap();
        let sb = Spec::from_desired_cached(&b, &cache).unwrap();
        assert!(Arc::ptr_eq(&sa.targets.0, &sb.targets.0), "rendered once");
        // Equal to what is built afresh, in JSON and in digest.
        let fresh = Spec::from_desired(&a).unwrap();
        assert!(!Arc::ptr_eq(&sa.targets.0, &fresh.targets.0));
        assert_eq!(sa, fresh);
        assert_eq!(sa.digest(), fresh.digest());
        assert_eq!(
            serde_json::to_value(&sa).unwrap(),
            serde_json::to_value(&fresh).unwrap()
        );
        // A new node set (a new list, even with equal contents) is rendered again; a
        // changed address changes the digest.
        let mut c = desired();
        let mut t = c.targets.to_vec();
        t[0].internal_ip = Some("fd00::c".parse().unwrap());
        c.targets = t.into();
        let sc = Spec::from_desired_cached(&c, &cache).unwrap();
        assert!(!Arc::ptr_eq(&sa.targets.0, &sc.targets.0));
        assert_ne!(sa.digest(), sc.digest());
        assert!(!sa.same_as(&sc));
        // Read back from JSON, the list compares and digests as the one written.
        let back: Spec = serde_json::from_slice(&serde_json::to_vec(&sc).unwrap()).unwrap();
        assert_eq!(back, sc);
        assert_eq!(back.digest(), sc.digest());
    }

    #[test]
    fn rejects_what_the_api_cannot_serve() {
        type Mutation = fn(&mut DesiredLoadBalancer);
        let cases: [(Mutation, &str, &str); 10] = [
            (
                |lb| lb.listeners[1].protocol = Protocol::Sctp,
                "spec.ports[1].protocol",
                "accepted values: \"TCP\", \"UDP\"",
            ),
            (
                |lb| lb.listeners[0].node_port = None,
                "spec.ports[0].nodePort",
                "NodePorts",
            ),
            (
                |lb| lb.listeners[0].port = 0,
                "spec.ports[0].port",
                "1 to 65535",
            ),
            (|lb| lb.listeners.clear(), "spec.ports", "At least one port"),
            (
                |lb| lb.listeners[1] = lb.listeners[0].clone(),
                "spec.ports[1]",
                "443/TCP appears twice",
            ),
            (
                |lb| {
                    let mut t = lb.targets.to_vec();
                    t[1].internal_ip = None;
                    lb.targets = t.into();
                },
                "node node-a",
                "no InternalIP",
            ),
            (
                |lb| lb.health_check.path = None,
                "healthCheck.path",
                "\"/healthz\"",
            ),
            (
                |lb| lb.health_check.path = Some("/a b".into()),
                "healthCheck.path",
                "starting with \"/\"",
            ),
            (
                |lb| lb.health_check.path = Some(format!("/{}", "p".repeat(5000))),
                "healthCheck.path",
                "(5001 bytes)",
            ),
            (|lb| lb.id = "Not_A_Label".into(), "id", "DNS label"),
        ];
        for (mutate, field, message) in cases {
            let mut lb = desired();
            mutate(&mut lb);
            match Spec::from_desired(&lb) {
                Err(ProviderError::Invalid {
                    field: f,
                    message: m,
                }) => {
                    assert_eq!(f, field);
                    assert!(m.contains(message), "{field}: {m}");
                }
                other => panic!("{field}: {other:?}"),
            }
        }
        // Same port, other protocol: fine (TCP and UDP DNS).
        let mut lb = desired();
        lb.listeners[1].port = 443;
        assert!(Spec::from_desired(&lb).is_ok());
    }

    #[test]
    fn status_maps_addresses_as_proxy() {
        let status: Status = serde_json::from_value(json!({
            "addresses": [{"ip": "192.0.2.10"}, {"hostname": "lb.example.com"}, {}],
            "targets": [{"name": "node-a", "healthy": true}],
        }))
        .unwrap();
        let status = status.to_status().unwrap();
        assert_eq!(
            status.ingress,
            vec![
                Ingress {
                    ip: Some("192.0.2.10".parse().unwrap()),
                    hostname: None,
                    ip_mode: IpMode::Proxy
                },
                Ingress {
                    ip: None,
                    hostname: Some("lb.example.com".into()),
                    ip_mode: IpMode::Proxy
                },
            ]
        );
        let bad: Status = serde_json::from_value(json!({"addresses": [{"ip": "nope"}]})).unwrap();
        assert!(matches!(bad.to_status(), Err(ProviderError::Permanent(_))));
        // Server-provided text is checked and quoted in part, never published whole.
        for address in [
            json!({"ip": "x".repeat(100_000)}),
            json!({"hostname": "h".repeat(100_000)}),
            json!({"hostname": "bad host"}),
            json!({"hostname": "-a.example"}),
        ] {
            let bad: Status = serde_json::from_value(json!({"addresses": [address]})).unwrap();
            match bad.to_status() {
                Err(e @ ProviderError::Permanent(_)) => {
                    assert!(e.to_string().len() < 200, "{e}");
                    assert!(
                        e.summary()
                            .starts_with("Load balancer API returned an invalid")
                    );
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
