//! A userspace kube-proxy on every node: for each NodePort/LoadBalancer Service port with a
//! `nodePort`, a TCP or UDP listener on `nodeIP:nodePort` forwarding (round-robin) to the
//! Service's ready endpoints; with `externalTrafficPolicy: Local` only to endpoints on this
//! node (none: TCP connections are closed at once, UDP datagrams dropped). For LoadBalancer
//! Services with `externalTrafficPolicy: Local`, `http://nodeIP:healthCheckNodePort/healthz`
//! answers 200 with the number of local endpoints, or 503 when there are none.
//!
//! Listeners follow every change; when only the endpoints change, the listener stays and
//! just forwards elsewhere.

use super::endpoints::ready_backends;
use super::kubelet::Proto;
use super::{
    Controller, Kind, Shared, Stoppable, array, is_deleting, list, name_of, namespace_of, str_at,
};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// How long a UDP session (client ↔ backend) lives without a reply from the backend.
const UDP_IDLE: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What one node port does.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// Forward to these backends ("ns/name:port" for logs).
    Forward {
        service: String,
        backends: Vec<SocketAddrV4>,
    },
    /// Serve the health check of an `externalTrafficPolicy: Local` Service.
    Health {
        namespace: String,
        name: String,
        local_endpoints: usize,
    },
}

impl Rule {
    fn same_kind(&self, other: &Rule) -> bool {
        matches!(
            (self, other),
            (Rule::Forward { .. }, Rule::Forward { .. })
                | (Rule::Health { .. }, Rule::Health { .. })
        )
    }
}

fn port_u16(v: &Value) -> Option<u16> {
    v.as_u64()
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| *n > 0)
}

/// The rules of one node: (protocol, node port) → what it does.
pub fn node_rules(
    node: &str,
    services: &[Arc<Value>],
    slices: &[Arc<Value>],
) -> BTreeMap<(Proto, u16), Rule> {
    let mut out = BTreeMap::new();
    for svc in services {
        let ty = str_at(svc, "/spec/type").unwrap_or("ClusterIP");
        if !(ty == "NodePort" || ty == "LoadBalancer") || is_deleting(svc) {
            continue;
        }
        let local = str_at(svc, "/spec/externalTrafficPolicy") == Some("Local");
        let key = format!("{}/{}", namespace_of(svc), name_of(svc));
        for sp in array(svc, "/spec/ports") {
            let (Some(proto), Some(node_port)) = (Proto::of(sp), port_u16(&sp["nodePort"])) else {
                continue;
            };
            let backends: Vec<SocketAddrV4> = ready_backends(svc, sp, slices)
                .into_iter()
                .filter(|(_, _, n)| !local || n.as_deref() == Some(node))
                .map(|(ip, port, _)| SocketAddrV4::new(ip, port))
                .collect();
            out.entry((proto, node_port)).or_insert(Rule::Forward {
                service: format!("{key}:{}", sp["port"]),
                backends,
            });
        }
        if ty == "LoadBalancer"
            && local
            && let Some(hc) = svc.pointer("/spec/healthCheckNodePort").and_then(port_u16)
        {
            let mut local_eps: Vec<Ipv4Addr> = array(svc, "/spec/ports")
                .iter()
                .flat_map(|sp| ready_backends(svc, sp, slices))
                .filter(|(_, _, n)| n.as_deref() == Some(node))
                .map(|(ip, _, _)| ip)
                .collect();
            local_eps.sort();
            local_eps.dedup();
            out.entry((Proto::Tcp, hc)).or_insert(Rule::Health {
                namespace: namespace_of(svc).to_string(),
                name: name_of(svc).to_string(),
                local_endpoints: local_eps.len(),
            });
        }
    }
    out
}

/// The HTTP response of a health check NodePort for this rule.
pub fn health_response(rule: &Rule) -> Vec<u8> {
    let (code, body) = match rule {
        Rule::Health {
            namespace,
            name,
            local_endpoints,
        } => {
            let body = json!({
                "service": {"namespace": namespace, "name": name},
                "localEndpoints": local_endpoints,
                "serviceProxyHealthy": true,
            })
            .to_string();
            let code = if *local_endpoints > 0 {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            (code, body)
        }
        Rule::Forward { .. } => ("503 Service Unavailable", "{}".to_string()),
    };
    format!(
        "HTTP/1.1 {code}\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn backends(rules: &watch::Receiver<Rule>) -> Vec<SocketAddrV4> {
    match &*rules.borrow() {
        Rule::Forward { backends, .. } => backends.clone(),
        Rule::Health { .. } => Vec::new(),
    }
}

async fn connect_from(node_ip: Ipv4Addr, to: SocketAddrV4) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::V4(SocketAddrV4::new(node_ip, 0)))?;
    s.connect(SocketAddr::V4(to)).await
}

async fn forward_tcp(
    mut client: TcpStream,
    node_ip: Ipv4Addr,
    backends: Vec<SocketAddrV4>,
    start: usize,
) {
    for i in 0..backends.len() {
        let b = backends[(start + i) % backends.len()];
        match tokio::time::timeout(CONNECT_TIMEOUT, connect_from(node_ip, b)).await {
            Ok(Ok(mut up)) => {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
                return;
            }
            Ok(Err(e)) => tracing::debug!(backend = %b, error = %e, "backend refused"),
            Err(_) => tracing::debug!(backend = %b, "backend connect timed out"),
        }
    }
}

async fn serve_tcp(l: TcpListener, node_ip: Ipv4Addr, rules: watch::Receiver<Rule>) {
    let mut conns = JoinSet::new();
    let mut next = 0usize;
    loop {
        let client = match l.accept().await {
            Ok((c, _)) => c,
            Err(e) => {
                tracing::debug!(error = %e, "proxy accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        while conns.try_join_next().is_some() {}
        let bs = backends(&rules);
        if bs.is_empty() {
            // No (local) endpoint: close the connection at once.
            drop(client);
            continue;
        }
        next = next.wrapping_add(1);
        conns.spawn(forward_tcp(client, node_ip, bs, next));
    }
}

struct UdpSession {
    id: u64,
    backend: SocketAddrV4,
    upstream: Arc<UdpSocket>,
    last_used: Instant,
}

async fn udp_replies(
    upstream: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    client: SocketAddr,
    id: u64,
    ended: mpsc::UnboundedSender<(SocketAddr, u64)>,
) {
    let mut buf = vec![0u8; 65_536];
    // Ends on idle timeout, or on an ICMP error (backend gone) surfacing as a recv error.
    while let Ok(Ok(n)) = tokio::time::timeout(UDP_IDLE, upstream.recv(&mut buf)).await {
        let _ = front.send_to(&buf[..n], client).await;
    }
    let _ = ended.send((client, id));
}

async fn udp_upstream(node_ip: Ipv4Addr, backend: SocketAddrV4) -> Option<Arc<UdpSocket>> {
    let upstream = match UdpSocket::bind(SocketAddrV4::new(node_ip, 0)).await {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(error = %e, "cannot bind UDP upstream socket");
            return None;
        }
    };
    if let Err(e) = upstream.connect(backend).await {
        tracing::debug!(%backend, error = %e, "cannot connect UDP upstream socket");
        return None;
    }
    Some(Arc::new(upstream))
}

async fn serve_udp(sock: UdpSocket, node_ip: Ipv4Addr, rules: watch::Receiver<Rule>) {
    let front = Arc::new(sock);
    let mut sessions: HashMap<SocketAddr, UdpSession> = HashMap::new();
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut aborts: HashMap<u64, tokio::task::AbortHandle> = HashMap::new();
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<(SocketAddr, u64)>();
    let mut buf = vec![0u8; 65_536];
    let mut next_id = 0u64;
    let mut rr = 0usize;
    loop {
        tokio::select! {
            Some((client, id)) = ended_rx.recv() => {
                aborts.remove(&id);
                if sessions.get(&client).is_some_and(|s| s.id == id) {
                    sessions.remove(&client);
                }
                while tasks.try_join_next().is_some() {}
            }
            r = front.recv_from(&mut buf) => {
                let (n, client) = match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::debug!(error = %e, "proxy recv failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let bs = backends(&rules);
                if bs.is_empty() {
                    continue;
                }
                let stale = sessions
                    .get(&client)
                    .is_some_and(|s| !bs.contains(&s.backend) || s.last_used.elapsed() > UDP_IDLE);
                if stale && let Some(old) = sessions.remove(&client)
                    && let Some(a) = aborts.remove(&old.id)
                {
                    a.abort();
                }
                if let std::collections::hash_map::Entry::Vacant(slot) = sessions.entry(client) {
                    rr = rr.wrapping_add(1);
                    let backend = bs[rr % bs.len()];
                    let Some(upstream) = udp_upstream(node_ip, backend).await else {
                        continue;
                    };
                    next_id += 1;
                    let id = next_id;
                    let a = tasks.spawn(udp_replies(upstream.clone(), front.clone(), client, id, ended_tx.clone()));
                    aborts.insert(id, a);
                    slot.insert(UdpSession { id, backend, upstream, last_used: Instant::now() });
                }
                if let Some(s) = sessions.get_mut(&client) {
                    s.last_used = Instant::now();
                    let _ = s.upstream.send(&buf[..n]).await;
                }
            }
        }
    }
}

async fn answer_health(mut s: TcpStream, rules: watch::Receiver<Rule>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    let rule = rules.borrow().clone();
    let _ = s.write_all(&health_response(&rule)).await;
    let _ = s.shutdown().await;
}

async fn serve_health(l: TcpListener, rules: watch::Receiver<Rule>) {
    let mut conns = JoinSet::new();
    loop {
        match l.accept().await {
            Ok((s, _)) => {
                while conns.try_join_next().is_some() {}
                conns.spawn(answer_health(s, rules.clone()));
            }
            Err(e) => {
                tracing::debug!(error = %e, "health accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ListenerKey {
    node: String,
    ip: Ipv4Addr,
    proto: Proto,
    port: u16,
}

struct Listener {
    rule: watch::Sender<Rule>,
    task: Stoppable,
}

/// The kube-proxies of all nodes.
#[derive(Default)]
pub(crate) struct Proxy {
    listeners: HashMap<ListenerKey, Listener>,
    /// Binds that failed: retried on resyncs only.
    failed: HashMap<ListenerKey, u32>,
    /// `namespace/name` of the Services that have node ports: only their EndpointSlices
    /// change a rule (a cluster of 10,000 ClusterIP Services does not rerun the proxy for
    /// each of their slices).
    exposed: HashSet<String>,
}

/// Whether kube-proxy serves node ports for this Service.
fn has_node_ports(svc: &Value) -> bool {
    matches!(str_at(svc, "/spec/type"), Some("NodePort" | "LoadBalancer"))
}

fn service_key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

impl Proxy {
    async fn start(&mut self, shared: &Shared, key: &ListenerKey, rule: Rule) -> bool {
        let addr = SocketAddrV4::new(key.ip, key.port);
        let (tx, rx) = watch::channel(rule.clone());
        let bound = match (key.proto, &rule) {
            (Proto::Tcp, _) => TcpListener::bind(addr).await.map(|l| match rule {
                Rule::Forward { .. } => shared.spawn(serve_tcp(l, key.ip, rx)),
                Rule::Health { .. } => shared.spawn(serve_health(l, rx)),
            }),
            (Proto::Udp, Rule::Forward { .. }) => UdpSocket::bind(addr)
                .await
                .map(|s| shared.spawn(serve_udp(s, key.ip, rx))),
            (Proto::Udp, Rule::Health { .. }) => return false,
        };
        match bound {
            Ok(Some(task)) => {
                tracing::debug!(node = %key.node, %addr, proto = key.proto.as_str(), "proxy listening");
                self.listeners
                    .insert(key.clone(), Listener { rule: tx, task });
                self.failed.remove(key);
                true
            }
            Ok(None) => false,
            Err(e) => {
                let n = self.failed.entry(key.clone()).or_default();
                if *n == 0 {
                    tracing::warn!(node = %key.node, %addr, proto = key.proto.as_str(), error = %e, "kube-proxy cannot bind node port");
                } else {
                    tracing::debug!(node = %key.node, %addr, error = %e, "kube-proxy still cannot bind node port");
                }
                *n += 1;
                false
            }
        }
    }
}

impl Controller for Proxy {
    const NAME: &'static str = "kube-proxy";

    fn watches(&self) -> &'static [Kind] {
        &[Kind::Nodes, Kind::Services, Kind::Slices]
    }

    fn triggers(&self, ev: &crate::store::Event) -> bool {
        if ev.gr == Kind::Services.gr() {
            has_node_ports(&ev.object) || ev.prev.as_deref().is_some_and(has_node_ports)
        } else if ev.gr == Kind::Slices.gr() {
            let svc = |o: &Value| {
                str_at(o, "/metadata/labels/kubernetes.io~1service-name")
                    .is_some_and(|n| self.exposed.contains(&service_key(&ev.namespace, n)))
            };
            svc(&ev.object) || ev.prev.as_deref().is_some_and(svc)
        } else {
            true
        }
    }

    fn note(&mut self, ev: &crate::store::Event) {
        if ev.gr == Kind::Services.gr() {
            let key = service_key(&ev.namespace, &ev.name);
            if has_node_ports(&ev.object) && ev.type_ != crate::store::EventType::Deleted {
                self.exposed.insert(key);
            } else {
                self.exposed.remove(&key);
            }
        }
    }

    async fn reconcile(&mut self, shared: &Arc<Shared>, resync: bool) {
        let services = list(shared, Kind::Services);
        self.exposed = services
            .iter()
            .filter(|s| has_node_ports(s))
            .map(|s| service_key(namespace_of(s), name_of(s)))
            .collect();
        let slices = list(shared, Kind::Slices);
        let mut desired: HashMap<ListenerKey, Rule> = HashMap::new();
        for node in list(shared, Kind::Nodes) {
            let Some(ip) = super::nodes::internal_ip(&node) else {
                continue;
            };
            let name = name_of(&node);
            for ((proto, port), rule) in node_rules(name, &services, &slices) {
                let key = ListenerKey {
                    node: name.to_string(),
                    ip,
                    proto,
                    port,
                };
                desired.insert(key, rule);
            }
        }
        let remove: Vec<ListenerKey> = self
            .listeners
            .iter()
            .filter(|(k, l)| {
                desired
                    .get(*k)
                    .is_none_or(|r| !r.same_kind(&l.rule.borrow()))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in remove {
            if let Some(l) = self.listeners.remove(&k) {
                tracing::debug!(node = %k.node, port = k.port, proto = k.proto.as_str(), "proxy stops listening");
                l.task.stop().await;
            }
        }
        self.failed.retain(|k, _| desired.contains_key(k));
        for (key, rule) in desired {
            if let Some(l) = self.listeners.get(&key) {
                l.rule.send_if_modified(|r| {
                    if *r == rule {
                        false
                    } else {
                        *r = rule;
                        true
                    }
                });
                continue;
            }
            if self.failed.contains_key(&key) && !resync {
                continue;
            }
            self.start(shared, &key, rule).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(ty: &str, etp: &str) -> Arc<Value> {
        Arc::new(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "type": ty,
                "externalTrafficPolicy": etp,
                "healthCheckNodePort": 32000,
                "selector": {"app": "web"},
                "ports": [
                    {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP", "nodePort": 30080},
                    {"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP", "nodePort": 30053},
                ],
            },
        }))
    }

    fn slice() -> Arc<Value> {
        Arc::new(json!({
            "metadata": {"name": "web-abcde", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [
                {"name": "http", "port": 8080, "protocol": "TCP"},
                {"name": "dns", "port": 5353, "protocol": "UDP"},
            ],
            "endpoints": [
                {"addresses": ["127.0.16.1"], "conditions": {"ready": true}, "nodeName": "node-1"},
                {"addresses": ["127.0.17.1"], "conditions": {"ready": true}, "nodeName": "node-2"},
                {"addresses": ["127.0.18.1"], "conditions": {"ready": false}, "nodeName": "node-3"},
            ],
        }))
    }

    fn event(
        kind: Kind,
        type_: crate::store::EventType,
        object: Arc<Value>,
    ) -> crate::store::Event {
        crate::store::Event {
            rv: 1,
            type_,
            gr: kind.gr(),
            namespace: namespace_of(&object).to_string(),
            name: name_of(&object).to_string(),
            object,
            prev: None,
        }
    }

    #[test]
    fn only_services_with_node_ports_and_their_slices_wake_the_proxy() {
        use crate::store::EventType::{Added, Deleted};
        let mut p = Proxy::default();
        let cluster_ip = event(Kind::Services, Added, svc("ClusterIP", "Cluster"));
        let slice_ev = event(Kind::Slices, Added, slice());
        assert!(!p.triggers(&cluster_ip), "a ClusterIP Service");
        p.note(&cluster_ip);
        assert!(!p.triggers(&slice_ev), "a ClusterIP Service's slice");

        // It becomes a LoadBalancer: the change itself and then its slices count.
        let mut lb = event(Kind::Services, Added, svc("LoadBalancer", "Cluster"));
        lb.prev = Some(svc("ClusterIP", "Cluster"));
        assert!(p.triggers(&lb));
        p.note(&lb);
        assert!(p.triggers(&slice_ev), "a LoadBalancer Service's slice");
        // Another namespace's slice of the same name does not.
        let mut other = slice_ev.clone();
        other.namespace = "other".into();
        assert!(!p.triggers(&other));

        // Deleted: the deletion counts, later slices do not.
        let gone = event(Kind::Services, Deleted, svc("LoadBalancer", "Cluster"));
        assert!(p.triggers(&gone));
        p.note(&gone);
        assert!(!p.triggers(&slice_ev));
        assert!(p.triggers(&event(
            Kind::Nodes,
            Added,
            Arc::new(json!({"metadata": {"name": "n"}}))
        )));
    }

    fn backends_of(r: Option<&Rule>) -> Vec<SocketAddrV4> {
        match r {
            Some(Rule::Forward { backends, .. }) => backends.clone(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn cluster_policy_forwards_to_all_ready_endpoints() {
        let rules = node_rules("node-3", &[svc("NodePort", "Cluster")], &[slice()]);
        assert_eq!(rules.len(), 2);
        let tcp = backends_of(rules.get(&(Proto::Tcp, 30080)));
        assert_eq!(
            tcp,
            vec![
                "127.0.16.1:8080".parse().expect("addr"),
                "127.0.17.1:8080".parse().expect("addr")
            ]
        );
        let udp = backends_of(rules.get(&(Proto::Udp, 30053)));
        assert_eq!(udp.len(), 2);
        assert_eq!(udp[0].port(), 5353);
        // No health check for NodePort or Cluster policy.
        let lb = node_rules("node-1", &[svc("LoadBalancer", "Cluster")], &[slice()]);
        assert!(!lb.contains_key(&(Proto::Tcp, 32000)));
        assert!(node_rules("node-1", &[svc("ClusterIP", "Cluster")], &[slice()]).is_empty());
    }

    #[test]
    fn local_policy_forwards_to_local_endpoints_and_reports_health() {
        let s = svc("LoadBalancer", "Local");
        let n1 = node_rules("node-1", std::slice::from_ref(&s), &[slice()]);
        assert_eq!(
            backends_of(n1.get(&(Proto::Tcp, 30080))),
            vec!["127.0.16.1:8080".parse::<SocketAddrV4>().expect("addr")]
        );
        let h1 = n1.get(&(Proto::Tcp, 32000)).cloned().expect("health rule");
        let resp = String::from_utf8(health_response(&h1)).unwrap_or_default();
        assert!(resp.starts_with("HTTP/1.1 200 OK"), "{resp}");
        assert!(resp.contains("\"localEndpoints\":1"), "{resp}");
        assert!(resp.contains("\"name\":\"web\""), "{resp}");

        // node-3's only endpoint is not ready: nothing local.
        let n3 = node_rules("node-3", &[s], &[slice()]);
        assert!(backends_of(n3.get(&(Proto::Tcp, 30080))).is_empty());
        let h3 = n3.get(&(Proto::Tcp, 32000)).cloned().expect("health rule");
        let resp = String::from_utf8(health_response(&h3)).unwrap_or_default();
        assert!(resp.starts_with("HTTP/1.1 503"), "{resp}");
        assert!(resp.contains("\"localEndpoints\":0"), "{resp}");
    }
}
