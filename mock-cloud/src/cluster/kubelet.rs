//! The kubelet of every simulated node: gives each pod bound to an existing node an IP in the
//! node's pod CIDR (`hostNetwork` pods use the node's IP), serves every declared
//! `containerPort` on it and reports the pod Running and Ready.
//!
//! The servers answer with the pod's name: TCP clients that send an HTTP request get
//! `HTTP/1.1 200 OK` with body `<pod-name>\n`; TCP clients that send nothing within ~100 ms (or
//! send something else) get `<pod-name>\n`; UDP datagrams are answered with `<pod-name>\n`.
//!
//! A pod whose node is not Ready has its Ready condition False (as the node lifecycle
//! controller does). A declared port that cannot be bound (another process holds the address,
//! or 0.0.0.0, on that port) leaves its container not ready and the pod Ready=False
//! (`ContainersNotReady`), with a `FailedToBindPort` Warning event; the kubelet retries with
//! backoff. Deleted pods (or pods being deleted) have their servers stopped at once.

use super::pod_status::{Running, running_status};
use super::{
    Controller, Kind, Shared, Stoppable, array, is_deleting, list, modify, name_of, namespace_of,
    str_at, uid_of,
};
use crate::podlogs::PodLog;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinSet;

/// How long a TCP server waits for the client to speak before answering anyway.
const QUIET_WAIT: Duration = Duration::from_millis(100);
/// How long a TCP server waits for the rest of an HTTP request's head.
const HEAD_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// The protocol of a port spec (`TCP` when absent); None for unsupported ones (SCTP).
    pub fn of(port: &Value) -> Option<Proto> {
        match port["protocol"].as_str() {
            None | Some("TCP") => Some(Proto::Tcp),
            Some("UDP") => Some(Proto::Udp),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
        }
    }
}

/// The (protocol, port) pairs a pod's containers declare.
pub fn container_ports(pod: &Value) -> Vec<(Proto, u16)> {
    let mut out: Vec<(Proto, u16)> = array(pod, "/spec/containers")
        .iter()
        .flat_map(|c| array(c, "/ports").iter())
        .filter_map(|p| {
            let port = u16::try_from(p["containerPort"].as_u64()?).ok()?;
            Some((Proto::of(p)?, port))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn is_http_request(head: &[u8]) -> bool {
    const METHODS: [&str; 9] = [
        "GET ", "HEAD ", "POST ", "PUT ", "DELETE ", "OPTIONS ", "PATCH ", "CONNECT ", "TRACE ",
    ];
    METHODS.iter().any(|m| head.starts_with(m.as_bytes()))
}

/// The reply to a TCP client that sent `received` (empty: nothing in time).
pub fn tcp_reply(name: &str, received: &[u8]) -> Vec<u8> {
    let body = format!("{name}\n");
    if is_http_request(received) {
        let head = received.starts_with(b"HEAD ");
        let mut out = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        if !head {
            out.extend_from_slice(body.as_bytes());
        }
        out
    } else {
        body.into_bytes()
    }
}

/// The log line of one answered request: time, client, and the HTTP request line or the
/// protocol.
fn log_line(peer: Option<SocketAddr>, what: &str) -> String {
    let t = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let peer = peer.map_or_else(|| "-".to_string(), |p| p.to_string());
    format!("{t} {peer} {what}")
}

/// What a log line says about a TCP request: `"GET / HTTP/1.1" 200` or `tcp`.
fn describe_tcp(received: &[u8]) -> String {
    if is_http_request(received) {
        let line = received
            .split(|b| *b == b'\r' || *b == b'\n')
            .next()
            .unwrap_or_default();
        let line = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
        format!("\"{line}\" 200")
    } else {
        "tcp".to_string()
    }
}

async fn answer_tcp(mut s: TcpStream, name: Arc<str>, log: PodLog) {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    if let Ok(Ok(n)) = tokio::time::timeout(QUIET_WAIT, s.read(&mut chunk)).await {
        buf.extend_from_slice(&chunk[..n]);
        if n > 0 && is_http_request(&buf) {
            let _ = tokio::time::timeout(HEAD_WAIT, async {
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 64 * 1024 {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            })
            .await;
        }
    }
    let _ = s.write_all(&tcp_reply(&name, &buf)).await;
    let _ = s.shutdown().await;
    crate::podlogs::push(&log, log_line(s.peer_addr().ok(), &describe_tcp(&buf)));
}

async fn serve_tcp(l: TcpListener, name: Arc<str>, log: PodLog) {
    let mut conns = JoinSet::new();
    loop {
        match l.accept().await {
            Ok((s, _)) => {
                while conns.try_join_next().is_some() {}
                conns.spawn(answer_tcp(s, name.clone(), log.clone()));
            }
            Err(e) => {
                tracing::debug!(error = %e, "pod accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn serve_udp(s: UdpSocket, name: Arc<str>, log: PodLog) {
    let reply = format!("{name}\n");
    let mut buf = vec![0u8; 65_536];
    loop {
        match s.recv_from(&mut buf).await {
            Ok((_, from)) => {
                let _ = s.send_to(reply.as_bytes(), from).await;
                crate::podlogs::push(&log, log_line(Some(from), "udp"));
            }
            Err(e) => {
                tracing::debug!(error = %e, "pod recv failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// A declared container port the kubelet could not listen on.
#[derive(Debug, Clone)]
struct BindFailure {
    proto: Proto,
    port: u16,
    error: String,
}

/// Binds and starts servers for `ports`; returns the servers and the ports that could not
/// be bound (another process on the address, or on 0.0.0.0, holds them).
async fn start_servers(
    shared: &Shared,
    name: &str,
    ip: Ipv4Addr,
    ports: &[(Proto, u16)],
    log: &PodLog,
) -> (Vec<Stoppable>, Vec<BindFailure>) {
    let name: Arc<str> = Arc::from(name);
    let mut servers = Vec::new();
    let mut failed = Vec::new();
    for &(proto, port) in ports {
        let addr = SocketAddrV4::new(ip, port);
        let task = match proto {
            Proto::Tcp => TcpListener::bind(addr)
                .await
                .map(|l| shared.spawn(serve_tcp(l, name.clone(), log.clone()))),
            Proto::Udp => UdpSocket::bind(addr)
                .await
                .map(|s| shared.spawn(serve_udp(s, name.clone(), log.clone()))),
        };
        match task {
            Ok(task) => servers.extend(task),
            Err(e) => failed.push(BindFailure {
                proto,
                port,
                error: e.to_string(),
            }),
        }
    }
    (servers, failed)
}

/// Records a Warning event about the pod, as the kubelet does.
fn warn_event(shared: &Shared, pod: &Value, node: &str, reason: &str, message: &str) {
    let Some(info) = shared.core.info("", "v1", "events") else {
        return;
    };
    let t = super::now();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let ev = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("{}.{nanos:x}", name_of(pod)), "namespace": namespace_of(pod)},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": name_of(pod),
            "namespace": namespace_of(pod), "uid": uid_of(pod),
            "resourceVersion": str_at(pod, "/metadata/resourceVersion").unwrap_or("")},
        "reason": reason, "message": message, "type": "Warning", "count": 1,
        "firstTimestamp": t, "lastTimestamp": t,
        "source": {"component": "kubelet", "host": node},
        "reportingComponent": "kubelet", "reportingInstance": node,
    });
    if let Err(e) = shared
        .core
        .create(&info, namespace_of(pod), ev, &Default::default())
    {
        tracing::debug!(error = %e, "recording a pod event");
    }
}

/// The first retry of ports that could not be bound; each further one waits twice as long.
const BIND_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between retries.
const BIND_RETRY_MAX: Duration = Duration::from_secs(30);

struct PodRuntime {
    node: String,
    ip: Ipv4Addr,
    servers: Vec<Stoppable>,
    /// Declared ports not bound yet: retried with backoff; the pod is not Ready meanwhile.
    unbound: Vec<BindFailure>,
    retry_at: Instant,
    retry_wait: Duration,
}

impl PodRuntime {
    fn unbound_ports(&self) -> Vec<(Proto, u16)> {
        self.unbound.iter().map(|f| (f.proto, f.port)).collect()
    }
}

/// The kubelets of all nodes.
#[derive(Default)]
pub(crate) struct Kubelet {
    running: HashMap<String, PodRuntime>,
}

impl Kubelet {
    async fn stop(&mut self, shared: &Shared, uid: &str) {
        if let Some(rt) = self.running.remove(uid) {
            for s in rt.servers {
                s.stop().await;
            }
            shared.release_pod(uid);
            shared.core.pod_logs.remove(uid);
        }
    }

    /// Starts the pod's servers (first sight) or retries the ports that could not be
    /// bound (when their backoff is over); a port that fails for the first time gets a
    /// `FailedToBindPort` Warning event naming it and the OS error.
    async fn run_servers(&mut self, shared: &Shared, pod: &Value, node: &str, ip: Ipv4Addr) {
        let uid = uid_of(pod).to_string();
        let (ports, known_failures) = match self.running.get(&uid) {
            None => (container_ports(pod), Vec::new()),
            Some(rt) if !rt.unbound.is_empty() && Instant::now() >= rt.retry_at => {
                (rt.unbound_ports(), rt.unbound_ports())
            }
            Some(_) => return,
        };
        let log = shared.core.pod_logs.log(&uid);
        let (servers, failed) = start_servers(shared, name_of(pod), ip, &ports, &log).await;
        let key = format!("{}/{}", namespace_of(pod), name_of(pod));
        for f in failed
            .iter()
            .filter(|f| !known_failures.contains(&(f.proto, f.port)))
        {
            let proto = f.proto.as_str();
            tracing::warn!(pod = %key, port = f.port, %proto, error = %f.error, "cannot bind container port");
            let message = format!(
                "Cannot listen on {proto} port {} at {ip}: {}; the container is not ready until it can",
                f.port, f.error
            );
            warn_event(shared, pod, node, "FailedToBindPort", &message);
        }
        let rt = self.running.entry(uid).or_insert_with(|| {
            tracing::debug!(pod = %key, node = %node, %ip, "pod started");
            PodRuntime {
                node: node.to_string(),
                ip,
                servers: Vec::new(),
                unbound: Vec::new(),
                retry_at: Instant::now(),
                retry_wait: BIND_RETRY / 2,
            }
        });
        rt.servers.extend(servers);
        if !failed.is_empty() {
            rt.retry_wait = (rt.retry_wait * 2).min(BIND_RETRY_MAX);
            rt.retry_at = Instant::now() + rt.retry_wait;
        } else if !rt.unbound.is_empty() {
            tracing::info!(pod = %key, "every container port is bound now");
        }
        rt.unbound = failed;
    }
}

impl Controller for Kubelet {
    const NAME: &'static str = "kubelet";

    fn watches(&self) -> &'static [Kind] {
        &[Kind::Nodes, Kind::Pods]
    }

    async fn reconcile(&mut self, shared: &Arc<Shared>, _resync: bool) {
        let nodes: HashMap<String, Arc<Value>> = list(shared, Kind::Nodes)
            .into_iter()
            .map(|n| (name_of(&n).to_string(), n))
            .collect();
        let pods = list(shared, Kind::Pods);
        let mut live = HashSet::new();
        for pod in &pods {
            let uid = uid_of(pod).to_string();
            let key = format!("{}/{}", namespace_of(pod), name_of(pod));
            let Some(node_name) = str_at(pod, "/spec/nodeName").filter(|n| !n.is_empty()) else {
                continue;
            };
            if is_deleting(pod) || !super::scheduler::is_active(pod) {
                continue;
            }
            let Some(node) = nodes.get(node_name) else {
                continue;
            };
            if self
                .running
                .get(&uid)
                .is_some_and(|rt| rt.node != node_name)
            {
                continue;
            }
            let Some(alloc) = shared.node_alloc(node) else {
                continue;
            };
            let host_ip = super::nodes::internal_ip(node).unwrap_or(alloc.ip);
            let host_network = pod.pointer("/spec/hostNetwork") == Some(&json!(true));
            let pod_ip = match self.running.get(&uid) {
                Some(rt) => Some(rt.ip),
                None if host_network => Some(host_ip),
                None => {
                    let wanted = str_at(pod, "/status/podIP").and_then(|s| s.parse().ok());
                    shared.pod_ip(&uid, node_name, wanted)
                }
            };
            let Some(pod_ip) = pod_ip else {
                tracing::warn!(pod = %key, node = %node_name, "no free pod IP on node");
                continue;
            };
            live.insert(uid.clone());
            self.run_servers(shared, pod, node_name, pod_ip).await;
            let unbound = self
                .running
                .get(&uid)
                .map(PodRuntime::unbound_ports)
                .unwrap_or_default();
            let run = Running {
                pod_ip,
                host_ip,
                node_ready: super::nodes::is_ready(node),
                unbound: &unbound,
            };
            let t = super::now();
            let want = running_status(pod, run, &t);
            if pod.get("status") != Some(&want) {
                let r = modify(
                    shared,
                    Kind::Pods,
                    namespace_of(pod),
                    name_of(pod),
                    true,
                    |p| {
                        if uid_of(p) != uid || is_deleting(p) {
                            return false;
                        }
                        let want = running_status(p, run, &t);
                        if p.get("status") == Some(&want) {
                            return false;
                        }
                        p["status"] = want;
                        true
                    },
                );
                if let Err(e) = r
                    && e.code != 404
                {
                    tracing::warn!(pod = %key, error = %e, "updating pod status");
                }
            }
        }
        let stale: Vec<String> = self
            .running
            .keys()
            .filter(|u| !live.contains(*u))
            .cloned()
            .collect();
        for uid in stale {
            self.stop(shared, &uid).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Value {
        json!({
            "metadata": {"name": "web-1", "namespace": "default", "uid": "u1"},
            "spec": {
                "nodeName": "node-1",
                "containers": [
                    {"name": "c", "image": "nginx", "ports": [
                        {"name": "http", "containerPort": 8080},
                        {"name": "dns", "containerPort": 5353, "protocol": "UDP"},
                        {"containerPort": 9000, "protocol": "SCTP"},
                    ]},
                    {"name": "side", "image": "busybox", "ports": [{"containerPort": 8080, "protocol": "TCP"}]},
                ],
            },
            "status": {"phase": "Pending", "qosClass": "BestEffort"},
        })
    }

    #[test]
    fn ports_by_protocol() {
        assert_eq!(
            container_ports(&pod()),
            vec![(Proto::Tcp, 8080), (Proto::Udp, 5353)]
        );
    }

    #[test]
    fn replies_are_http_only_for_http_clients() {
        let r = String::from_utf8(tcp_reply("web-1", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
            .unwrap_or_default();
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\nweb-1\n"), "{r}");
        assert!(r.contains("Content-Length: 6\r\n"), "{r}");
        assert_eq!(tcp_reply("web-1", b""), b"web-1\n");
        assert_eq!(tcp_reply("web-1", b"hello"), b"web-1\n");
        let head =
            String::from_utf8(tcp_reply("x", b"HEAD / HTTP/1.1\r\n\r\n")).unwrap_or_default();
        assert!(head.ends_with("\r\n\r\n"), "{head}");
    }
}
