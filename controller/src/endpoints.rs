//! A Service's ready endpoints, for providers that send traffic to pods rather than nodes
//! (the aws provider's `ip` targets): a cache of EndpointSlices, the pure conversion of a
//! Service's slices into [`PortEndpoints`], and the trigger that brings a Service back when
//! its slices change.
//!
//! Only Services whose provider [`Provider::needs_endpoints`] carry endpoints in their
//! desired state, and only their slices' changes wake the reconciler: a pod moving behind
//! any other Service costs nothing but the cache update.

use crate::desired::desired_load_balancer;
use crate::service::ClassFilter;
use berth_providers::{DesiredLoadBalancer, EndpointAddress, PortEndpoints, Protocol, Provider};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use std::net::IpAddr;
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::warn;

/// The label that names an EndpointSlice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Keeps of an EndpointSlice what berth reads (its Service label, addresses, readiness and
/// ports): drops managedFields, annotations, owners, and each endpoint's topology, hints and
/// pod reference.
pub fn prune_slice(slice: &mut EndpointSlice) {
    let m = &mut slice.metadata;
    m.managed_fields = None;
    m.annotations = None;
    m.owner_references = None;
    for e in &mut slice.endpoints {
        e.deprecated_topology = None;
        e.hints = None;
        e.target_ref = None;
        e.zone = None;
        e.node_name = None;
    }
}

/// Whether an endpoint may take traffic: Kubernetes reads an unknown readiness as ready.
fn ready(e: &Endpoint) -> bool {
    e.conditions.as_ref().and_then(|c| c.ready) != Some(false)
}

/// The ready endpoints behind each of `svc`'s ports, from its `slices` (any order, any
/// mix; slices of other Services are ignored). A Service port's endpoints are those of
/// the slice port with its name and protocol, at that slice port's number (a named
/// `targetPort` may resolve to different numbers in different pods). FQDN slices and
/// unparsable addresses are skipped.
pub fn service_endpoints<'a>(
    svc: &Service,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> Vec<PortEndpoints> {
    let name = svc.metadata.name.as_deref().unwrap_or_default();
    let namespace = svc.metadata.namespace.as_deref().unwrap_or("default");
    let ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default();
    let mut out: Vec<PortEndpoints> = ports
        .iter()
        .filter_map(|p| {
            Some(PortEndpoints {
                name: p.name.clone().unwrap_or_default(),
                port: u16::try_from(p.port).ok()?,
                protocol: protocol(p.protocol.as_deref())?,
                addresses: Vec::new(),
            })
        })
        .collect();
    for slice in slices {
        if !of_service(slice, namespace, name)
            || !matches!(slice.address_type.as_str(), "IPv4" | "IPv6")
        {
            continue;
        }
        let addresses: Vec<IpAddr> = slice
            .endpoints
            .iter()
            .filter(|e| ready(e))
            .flat_map(|e| &e.addresses)
            .filter_map(|a| a.parse().ok())
            .collect();
        for sp in slice.ports.iter().flatten() {
            let Some(port) = sp.port.and_then(|p| u16::try_from(p).ok()) else {
                continue;
            };
            let (sp_name, sp_protocol) = (
                sp.name.as_deref().unwrap_or_default(),
                protocol(sp.protocol.as_deref()),
            );
            for pe in out
                .iter_mut()
                .filter(|pe| pe.name == sp_name && Some(pe.protocol) == sp_protocol)
            {
                pe.addresses
                    .extend(addresses.iter().map(|&ip| EndpointAddress { ip, port }));
            }
        }
    }
    for pe in &mut out {
        pe.addresses.sort();
        pe.addresses.dedup();
    }
    out
}

fn protocol(p: Option<&str>) -> Option<Protocol> {
    match p.unwrap_or("TCP") {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        "SCTP" => Some(Protocol::Sctp),
        _ => None,
    }
}

fn of_service(slice: &EndpointSlice, namespace: &str, name: &str) -> bool {
    slice.metadata.namespace.as_deref().unwrap_or("default") == namespace
        && service_of(slice).is_some_and(|s| s == name)
}

/// The name of the Service a slice belongs to.
fn service_of(slice: &EndpointSlice) -> Option<&str> {
    slice
        .metadata
        .labels
        .as_ref()?
        .get(SERVICE_NAME_LABEL)
        .map(String::as_str)
        .filter(|n| !n.is_empty())
}

/// The EndpointSlice cache the reconciler reads endpoints from. Empty (and never filled)
/// when the provider needs no endpoints.
#[derive(Clone)]
pub struct Endpoints(Store<EndpointSlice>);

impl Default for Endpoints {
    fn default() -> Self {
        Endpoints(reflector::store().0)
    }
}

impl Endpoints {
    /// `svc`'s ready endpoints per port, from the cache.
    pub fn of(&self, svc: &Service) -> Vec<PortEndpoints> {
        let slices = self.0.state();
        service_endpoints(svc, slices.iter().map(Arc::as_ref))
    }

    /// Fills `d.endpoints` for `svc` when `provider` needs them for this load balancer;
    /// leaves them empty otherwise.
    pub fn fill(&self, d: &mut DesiredLoadBalancer, svc: &Service, provider: &dyn Provider) {
        if provider.needs_endpoints(d) {
            d.endpoints = self.of(svc);
        }
    }

    /// Waits until the cache has listed every slice once; false if its watch ended first.
    pub async fn wait_ready(&self) -> bool {
        self.0.wait_until_ready().await.is_ok()
    }
}

/// Whether a change of `svc`'s slices can change what `provider` does with it: it wants a
/// load balancer of `classes` whose provider needs its endpoints.
pub fn wants_endpoints(
    svc: &Service,
    classes: &ClassFilter,
    provider: &dyn Provider,
    cluster: &str,
) -> bool {
    classes.wants_load_balancer(svc)
        && desired_load_balancer(svc, &Default::default(), cluster, false)
            .is_ok_and(|d| provider.needs_endpoints(&d))
}

/// Watches every Service's EndpointSlices into a cache, in a task of its own, and sends the
/// Services to reconcile because their slices changed (created, updated or deleted): only
/// those that [`wants_endpoints`] says need them, looked up in `services`.
pub fn spawn(
    client: Client,
    services: Store<Service>,
    provider: Arc<dyn Provider>,
    classes: ClassFilter,
    cluster: String,
) -> (
    Endpoints,
    mpsc::Receiver<ObjectRef<Service>>,
    tokio::task::JoinHandle<()>,
) {
    let (store, writer) = reflector::store();
    let (tx, rx) = mpsc::channel(1024);
    let events = watcher(
        Api::<EndpointSlice>::all(client),
        watcher::Config::default().labels(SERVICE_NAME_LABEL),
    )
    .default_backoff()
    .modify(prune_slice)
    .reflect(writer)
    .touched_objects();
    let task = tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        while let Some(ev) = events.next().await {
            let slice = match ev {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %crate::kube_util::describe(&e), "EndpointSlice watch failed; retrying");
                    continue;
                }
            };
            let Some(name) = service_of(&slice) else {
                continue;
            };
            let key = ObjectRef::<Service>::new(name)
                .within(slice.metadata.namespace.as_deref().unwrap_or("default"));
            let wanted = services
                .get(&key)
                .is_some_and(|svc| wants_endpoints(&svc, &classes, provider.as_ref(), &cluster));
            if wanted && tx.send(key).await.is_err() {
                break;
            }
        }
    });
    (Endpoints(store), rx, task)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::tests::SvcB;
    use k8s_openapi::api::discovery::v1::{EndpointConditions, EndpointPort};

    /// A slice of Service `svc` with `ports` (name, protocol, number) and `endpoints`
    /// (addresses, ready).
    fn slice(
        svc: &str,
        family: &str,
        ports: &[(&str, &str, i32)],
        endpoints: &[(&[&str], Option<bool>)],
    ) -> EndpointSlice {
        let mut s = EndpointSlice {
            address_type: family.into(),
            ..Default::default()
        };
        s.metadata.namespace = Some("default".into());
        s.metadata.name = Some(format!("{svc}-{family}"));
        s.metadata.labels = Some([(SERVICE_NAME_LABEL.to_string(), svc.to_string())].into());
        s.ports = Some(
            ports
                .iter()
                .map(|(name, protocol, port)| EndpointPort {
                    name: Some(name.to_string()),
                    protocol: Some(protocol.to_string()),
                    port: Some(*port),
                    ..Default::default()
                })
                .collect(),
        );
        s.endpoints = endpoints
            .iter()
            .map(|(addresses, ready)| Endpoint {
                addresses: addresses.iter().map(|a| a.to_string()).collect(),
                conditions: Some(EndpointConditions {
                    ready: *ready,
                    ..Default::default()
                }),
                node_name: Some("node-1".into()),
                ..Default::default()
            })
            .collect();
        s
    }

    fn addrs(pe: &PortEndpoints) -> Vec<String> {
        pe.addresses
            .iter()
            .map(|a| format!("{}:{}", a.ip, a.port))
            .collect()
    }

    #[test]
    fn each_service_port_takes_the_slice_port_of_its_name() {
        // p0 80/TCP, p1 53/UDP, p2 53/TCP (SvcB names ports p0, p1, ...).
        let svc = SvcB::lb("web")
            .port(80, "TCP", 30080)
            .port(53, "UDP", 30053)
            .port(53, "TCP", 30053)
            .svc();
        let slices = [
            slice(
                "web",
                "IPv4",
                &[
                    ("p0", "TCP", 8080),
                    ("p1", "UDP", 5353),
                    ("p2", "TCP", 5354),
                ],
                &[(&["10.1.0.1"], Some(true)), (&["10.1.0.2"], None)],
            ),
            // The same named port resolved to another number in other pods.
            slice(
                "web",
                "IPv4",
                &[("p0", "TCP", 8081), ("p0", "UDP", 9999)],
                &[(&["10.1.0.3"], Some(true))],
            ),
            // Another Service's slice, and an FQDN slice of this one.
            slice(
                "other",
                "IPv4",
                &[("p0", "TCP", 1)],
                &[(&["10.9.0.1"], Some(true))],
            ),
            slice(
                "web",
                "FQDN",
                &[("p0", "TCP", 2)],
                &[(&["db.example"], Some(true))],
            ),
        ];
        let got = service_endpoints(&svc, &slices);
        let summary: Vec<_> = got
            .iter()
            .map(|pe| (pe.name.as_str(), pe.port, pe.protocol, addrs(pe)))
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    "p0",
                    80,
                    Protocol::Tcp,
                    vec![
                        "10.1.0.1:8080".to_string(),
                        "10.1.0.2:8080".into(),
                        "10.1.0.3:8081".into()
                    ]
                ),
                (
                    "p1",
                    53,
                    Protocol::Udp,
                    vec!["10.1.0.1:5353".to_string(), "10.1.0.2:5353".into()]
                ),
                (
                    "p2",
                    53,
                    Protocol::Tcp,
                    vec!["10.1.0.1:5354".to_string(), "10.1.0.2:5354".into()]
                ),
            ]
        );
    }

    #[test]
    fn not_ready_endpoints_are_skipped() {
        let svc = SvcB::lb("web").port(80, "TCP", 30080).svc();
        let slices = [slice(
            "web",
            "IPv4",
            &[("p0", "TCP", 8080)],
            &[
                (&["10.1.0.1"], Some(false)),
                (&["10.1.0.2", "10.1.0.2"], Some(true)),
                (&["not-an-ip"], Some(true)),
            ],
        )];
        let got = service_endpoints(&svc, &slices);
        assert_eq!(addrs(&got[0]), vec!["10.1.0.2:8080".to_string()]);
        // No slices at all (every pod gone): the port is there with no endpoints.
        let none = service_endpoints(&svc, []);
        assert_eq!((none.len(), none[0].addresses.len()), (1, 0));
    }

    #[test]
    fn unnamed_single_port_matches_the_unnamed_slice_port() {
        let mut svc = SvcB::lb("web").port(80, "TCP", 30080).svc();
        svc.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].name = None;
        let mut s = slice(
            "web",
            "IPv4",
            &[("", "TCP", 8080)],
            &[(&["10.1.0.1"], None)],
        );
        s.ports.as_mut().unwrap()[0].name = None;
        let got = service_endpoints(&svc, [&s]);
        assert_eq!(addrs(&got[0]), vec!["10.1.0.1:8080".to_string()]);
        let named = slice(
            "web",
            "IPv4",
            &[("http", "TCP", 9090)],
            &[(&["10.1.0.1"], None)],
        );
        assert!(service_endpoints(&svc, [&named])[0].addresses.is_empty());
    }

    #[test]
    fn pruned_slices_keep_what_berth_reads() {
        let svc = SvcB::lb("web").port(80, "TCP", 30080).svc();
        let mut s = slice(
            "web",
            "IPv4",
            &[("p0", "TCP", 8080)],
            &[(&["10.1.0.1"], Some(true))],
        );
        let before = service_endpoints(&svc, [&s]);
        prune_slice(&mut s);
        assert!(s.endpoints[0].node_name.is_none());
        assert_eq!(service_endpoints(&svc, [&s]), before);
        assert_eq!(service_of(&s), Some("web"));
    }
}
