//! The kubelet of every simulated node: gives each pod bound to an existing node an IP in the
//! node's pod CIDR (`hostNetwork` pods use the node's IP), serves every declared
//! `containerPort` on it and reports the pod Running and Ready.
//!
//! The servers answer with the pod's name: TCP clients that send an HTTP request get
//! `HTTP/1.1 200 OK` with body `<pod-name>\n`; TCP clients that send nothing within ~100 ms (or
//! send something else) get `<pod-name>\n`; UDP datagrams are answered with `<pod-name>\n`.
//!
//! A pod whose node is not Ready has its Ready condition False (as the node lifecycle
//! controller does); deleted pods (or pods being deleted) have their servers stopped at once.

use super::{
    Controller, Kind, Shared, Stoppable, array, is_deleting, list, modify, name_of, namespace_of,
    str_at, uid_of,
};
use crate::podlogs::PodLog;
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;
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

/// Binds and starts the pod's servers. Bind failures are logged and skipped.
async fn start_servers(
    shared: &Shared,
    pod_key: &str,
    name: &str,
    ip: Ipv4Addr,
    ports: &[(Proto, u16)],
    log: PodLog,
) -> Vec<Stoppable> {
    let name: Arc<str> = Arc::from(name);
    let mut out = Vec::new();
    for &(proto, port) in ports {
        let addr = SocketAddrV4::new(ip, port);
        let task = match proto {
            Proto::Tcp => match TcpListener::bind(addr).await {
                Ok(l) => shared.spawn(serve_tcp(l, name.clone(), log.clone())),
                Err(e) => {
                    tracing::warn!(pod = %pod_key, %addr, error = %e, "cannot bind TCP container port");
                    None
                }
            },
            Proto::Udp => match UdpSocket::bind(addr).await {
                Ok(s) => shared.spawn(serve_udp(s, name.clone(), log.clone())),
                Err(e) => {
                    tracing::warn!(pod = %pod_key, %addr, error = %e, "cannot bind UDP container port");
                    None
                }
            },
        };
        out.extend(task);
    }
    out
}

fn set_condition(conds: &mut Vec<Value>, type_: &str, ok: bool, reason: Option<&str>, now: &str) {
    let status = if ok { "True" } else { "False" };
    let since = conds
        .iter()
        .find(|c| c["type"] == type_ && c["status"] == status)
        .and_then(|c| c["lastTransitionTime"].as_str())
        .unwrap_or(now)
        .to_string();
    let mut c = json!({"type": type_, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    match conds.iter_mut().find(|c| c["type"] == type_) {
        Some(old) => *old = c,
        None => conds.push(c),
    }
}

fn hash_hex(s: &str) -> String {
    // FNV-1a, twice with different seeds: a stable, plausible-looking digest.
    let fnv = |seed: u64| {
        s.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    };
    format!(
        "{:016x}{:016x}{:016x}{:016x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x8422_2325_cbf2_9ce4),
        fnv(0x1234_5678_9abc_def0),
        fnv(0x0fed_cba9_8765_4321)
    )
}

fn container_statuses(
    pod: &Value,
    spec_path: &str,
    status_key: &str,
    init: bool,
    now: &str,
) -> Vec<Value> {
    let old = array(pod, &format!("/status/{status_key}"));
    let uid = uid_of(pod);
    array(pod, spec_path)
        .iter()
        .map(|c| {
            let name = c["name"].as_str().unwrap_or("");
            let image = c["image"].as_str().unwrap_or("");
            let prev = old.iter().find(|o| o["name"] == name);
            let started = prev
                .and_then(|p| {
                    p.pointer("/state/running/startedAt")
                        .or_else(|| p.pointer("/state/terminated/startedAt"))
                })
                .and_then(Value::as_str)
                .unwrap_or(now)
                .to_string();
            let state = if init {
                json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": started, "finishedAt": started, "containerID": format!("mock://{}", hash_hex(&format!("{uid}/{name}")))}})
            } else {
                json!({"running": {"startedAt": started}})
            };
            json!({
                "name": name,
                "image": image,
                "imageID": format!("mock://sha256:{}", hash_hex(image)),
                "containerID": format!("mock://{}", hash_hex(&format!("{uid}/{name}"))),
                "ready": true,
                "started": !init,
                "restartCount": 0,
                "state": state,
                "lastState": {},
            })
        })
        .collect()
}

/// The status the kubelet reports for a running pod (timestamps kept from `pod`'s current
/// status where nothing changed).
pub fn running_status(
    pod: &Value,
    pod_ip: Ipv4Addr,
    host_ip: Ipv4Addr,
    node_ready: bool,
    now: &str,
) -> Value {
    let mut status: Map<String, Value> = pod
        .get("status")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    status.insert("phase".into(), json!("Running"));
    status.remove("reason");
    status.remove("message");
    status.remove("nominatedNodeName");
    status.insert("hostIP".into(), json!(host_ip.to_string()));
    status.insert("hostIPs".into(), json!([{"ip": host_ip.to_string()}]));
    status.insert("podIP".into(), json!(pod_ip.to_string()));
    status.insert("podIPs".into(), json!([{"ip": pod_ip.to_string()}]));
    if status.get("startTime").and_then(Value::as_str).is_none() {
        status.insert("startTime".into(), json!(now));
    }
    status
        .entry("qosClass")
        .or_insert_with(|| json!("BestEffort"));
    let mut conds: Vec<Value> = status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    set_condition(&mut conds, "PodReadyToStartContainers", true, None, now);
    set_condition(&mut conds, "Initialized", true, None, now);
    set_condition(
        &mut conds,
        "Ready",
        node_ready,
        (!node_ready).then_some("NodeNotReady"),
        now,
    );
    set_condition(&mut conds, "ContainersReady", true, None, now);
    set_condition(&mut conds, "PodScheduled", true, None, now);
    let order = [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    ];
    conds.sort_by_key(|c| {
        order
            .iter()
            .position(|o| c["type"] == *o)
            .unwrap_or(order.len())
    });
    status.insert("conditions".into(), Value::Array(conds));
    status.insert(
        "containerStatuses".into(),
        Value::Array(container_statuses(
            pod,
            "/spec/containers",
            "containerStatuses",
            false,
            now,
        )),
    );
    if !array(pod, "/spec/initContainers").is_empty() {
        status.insert(
            "initContainerStatuses".into(),
            Value::Array(container_statuses(
                pod,
                "/spec/initContainers",
                "initContainerStatuses",
                true,
                now,
            )),
        );
    }
    Value::Object(status)
}

struct PodRuntime {
    node: String,
    servers: Vec<Stoppable>,
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
            let pod_ip = if host_network {
                Some(host_ip)
            } else {
                let wanted = str_at(pod, "/status/podIP").and_then(|s| s.parse().ok());
                shared.pod_ip(&uid, node_name, wanted)
            };
            let Some(pod_ip) = pod_ip else {
                tracing::warn!(pod = %key, node = %node_name, "no free pod IP on node");
                continue;
            };
            live.insert(uid.clone());
            if !self.running.contains_key(&uid) {
                let log = shared.core.pod_logs.log(&uid);
                let servers = start_servers(
                    shared,
                    &key,
                    name_of(pod),
                    pod_ip,
                    &container_ports(pod),
                    log,
                )
                .await;
                tracing::debug!(pod = %key, node = %node_name, ip = %pod_ip, "pod started");
                self.running.insert(
                    uid.clone(),
                    PodRuntime {
                        node: node_name.to_string(),
                        servers,
                    },
                );
            }
            let ready = super::nodes::is_ready(node);
            let t = super::now();
            let want = running_status(pod, pod_ip, host_ip, ready, &t);
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
                        let want = running_status(p, pod_ip, host_ip, ready, &t);
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

    #[test]
    fn running_status_is_complete_and_stable() {
        let ip = Ipv4Addr::new(127, 4, 16, 1);
        let host = Ipv4Addr::new(127, 4, 1, 1);
        let s1 = running_status(&pod(), ip, host, true, "t1");
        assert_eq!(s1["phase"], "Running");
        assert_eq!(s1["podIP"], "127.4.16.1");
        assert_eq!(s1["hostIPs"][0]["ip"], "127.4.1.1");
        assert_eq!(s1["startTime"], "t1");
        let conds = s1["conditions"].as_array().cloned().unwrap_or_default();
        assert_eq!(conds.len(), 5);
        assert!(conds.iter().all(|c| c["status"] == "True"));
        let cs = s1["containerStatuses"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0]["ready"], true);
        assert!(
            cs[0]["containerID"]
                .as_str()
                .is_some_and(|s| s.starts_with("mock://"))
        );
        assert!(cs[0]["state"]["running"]["startedAt"] == "t1");

        // Recomputing later changes nothing.
        let mut p = pod();
        p["status"] = s1.clone();
        assert_eq!(running_status(&p, ip, host, true, "t2"), s1);

        // Node not ready: Ready goes False (with a new transition time), the rest stays.
        let s2 = running_status(&p, ip, host, false, "t3");
        let ready = s2["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready").cloned())
            .unwrap_or_default();
        assert_eq!(ready["status"], "False");
        assert_eq!(ready["lastTransitionTime"], "t3");
        assert_eq!(s2["startTime"], "t1");
    }
}
