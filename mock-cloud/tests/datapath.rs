//! The simulated cluster's data path end to end: nodes, scheduler, kubelet, EndpointSlices
//! and the userspace kube-proxy, driven through `ApiCore` and probed over real sockets.

use mock_cloud::apiserver::{DeleteOptions, WriteOptions};
use mock_cloud::{Config, MockCloud};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const DEADLINE: Duration = Duration::from_secs(10);

async fn start() -> MockCloud {
    MockCloud::start(Config {
        nodes: 3,
        ..Default::default()
    })
    .await
    .expect("mock-cloud starts")
}

fn info(mc: &MockCloud, resource: &str) -> mock_cloud::registry::ResourceInfo {
    let group = if resource == "endpointslices" {
        "discovery.k8s.io"
    } else {
        ""
    };
    mc.core.info(group, "v1", resource).expect("served")
}

fn create(mc: &MockCloud, resource: &str, obj: Value) -> Arc<Value> {
    mc.core
        .create(
            &info(mc, resource),
            "default",
            obj,
            &WriteOptions::default(),
        )
        .expect("create")
}

fn get(mc: &MockCloud, resource: &str, name: &str) -> Option<Arc<Value>> {
    mc.core.get(&info(mc, resource), "default", name).ok()
}

fn delete(mc: &MockCloud, resource: &str, name: &str) {
    mc.core
        .delete(
            &info(mc, resource),
            "default",
            name,
            &DeleteOptions::default(),
        )
        .expect("delete");
}

fn pod(name: &str, app: &str, node: Option<&str>) -> Value {
    let mut p = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"containers": [{"name": "echo", "image": "mock/echo:1", "ports": [
            {"name": "web", "containerPort": 8080},
            {"name": "dns", "containerPort": 5353, "protocol": "UDP"},
        ]}]},
    });
    if let Some(n) = node {
        p["spec"]["nodeName"] = json!(n);
    }
    p
}

fn node_ports(svc: &Value) -> (u16, u16) {
    let port = |i: usize| {
        svc["spec"]["ports"][i]["nodePort"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .expect("nodePort allocated")
    };
    (port(0), port(1))
}

/// A NodePort Service: TCP 80 → named port `web` (8080), UDP 53 → 5353.
fn echo_service(name: &str, app: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {"type": "NodePort", "selector": {"app": app}, "ports": [
            {"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"},
            {"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP"},
        ]},
    })
}

async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if f().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Connects, sends nothing, reads the answer (None: refused, closed or empty).
async fn tcp_ask(ip: Ipv4Addr, port: u16) -> Option<String> {
    let addr = SocketAddrV4::new(ip, port);
    tokio::time::timeout(Duration::from_secs(2), async move {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.ok()?;
        let out = out.trim().to_string();
        (!out.is_empty()).then_some(out)
    })
    .await
    .ok()
    .flatten()
}

/// An HTTP GET: (status code, body).
async fn http_get(ip: Ipv4Addr, port: u16, path: &str) -> Option<(u16, String)> {
    let addr = SocketAddrV4::new(ip, port);
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: test\r\n\r\n");
    tokio::time::timeout(Duration::from_secs(2), async move {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(req.as_bytes()).await.ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.ok()?;
        let (head, body) = out.split_once("\r\n\r\n")?;
        let code = head.split(' ').nth(1)?.parse().ok()?;
        Some((code, body.to_string()))
    })
    .await
    .ok()
    .flatten()
}

async fn udp_ask(ip: Ipv4Addr, port: u16) -> Option<String> {
    let s = UdpSocket::bind("127.0.0.1:0").await.ok()?;
    s.connect(SocketAddrV4::new(ip, port)).await.ok()?;
    s.send(b"who are you?").await.ok()?;
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_millis(500), s.recv(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).trim().to_string())
}

fn condition(obj: &Value, type_: &str) -> Option<String> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .and_then(|c| c["status"].as_str())
        .map(str::to_string)
}

fn pod_is_ready(mc: &MockCloud, name: &str) -> bool {
    get(mc, "pods", name).is_some_and(|p| {
        p["status"]["phase"] == "Running" && condition(&p, "Ready").as_deref() == Some("True")
    })
}

/// The ready flags of a Service's slice endpoints, by pod name.
fn slice_readiness(mc: &MockCloud, svc: &str) -> Vec<(String, bool)> {
    let (slices, _) = mc.core.store.list(
        &("discovery.k8s.io".to_string(), "endpointslices".to_string()),
        Some("default"),
    );
    let mut out: Vec<(String, bool)> = slices
        .iter()
        .filter(|s| s["metadata"]["labels"]["kubernetes.io/service-name"] == svc)
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .map(|e| {
            (
                e["targetRef"]["name"].as_str().unwrap_or("").to_string(),
                e["conditions"]["ready"] == true,
            )
        })
        .collect();
    out.sort();
    out
}

fn node_ip(mc: &MockCloud, name: &str) -> Ipv4Addr {
    mc.cluster.node_ip(name).expect("node has an InternalIP")
}

#[tokio::test]
async fn nodeport_answers_over_tcp_and_udp_on_every_node() {
    let mc = start().await;
    let nodes = mc.cluster.node_ips();
    assert_eq!(nodes.len(), 3);
    for (i, (name, ip)) in nodes.iter().enumerate() {
        assert_eq!(name, &format!("node-{}", i + 1));
        assert_eq!(*ip, Ipv4Addr::new(127, mc.ip_block, 1, i as u8 + 1));
    }
    let node1 = get(&mc, "nodes", "node-1").map(|_| ()).is_some();
    assert!(node1);
    let n1 = mc
        .core
        .get(&info(&mc, "nodes"), "", "node-1")
        .expect("node-1");
    assert_eq!(n1["spec"]["providerID"], "mock-cloud://node-1");
    assert_eq!(condition(&n1, "Ready").as_deref(), Some("True"));
    assert_eq!(
        n1["metadata"]["labels"]["topology.kubernetes.io/zone"],
        "zone-a"
    );

    create(&mc, "pods", pod("echo-a", "echo", None));
    create(&mc, "pods", pod("echo-b", "echo", None));
    let svc = create(&mc, "services", echo_service("echo", "echo"));
    let (tcp_port, udp_port) = node_ports(&svc);

    eventually("pods ready", async || {
        pod_is_ready(&mc, "echo-a") && pod_is_ready(&mc, "echo-b")
    })
    .await;
    let a = get(&mc, "pods", "echo-a").expect("pod");
    let b = get(&mc, "pods", "echo-b").expect("pod");
    assert_ne!(
        a["spec"]["nodeName"], b["spec"]["nodeName"],
        "the scheduler spreads pods"
    );
    let pod_ip: Ipv4Addr = a["status"]["podIP"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("pod IP");
    assert_eq!(pod_ip.octets()[..2], [127, mc.ip_block]);
    assert_eq!(a["status"]["containerStatuses"][0]["ready"], true);
    eventually("two ready endpoints", async || {
        slice_readiness(&mc, "echo")
            == vec![("echo-a".to_string(), true), ("echo-b".to_string(), true)]
    })
    .await;

    // The pod itself answers with its name, plain and over HTTP.
    assert_eq!(tcp_ask(pod_ip, 8080).await.as_deref(), Some("echo-a"));
    assert_eq!(
        http_get(pod_ip, 8080, "/").await,
        Some((200, "echo-a\n".to_string()))
    );
    assert_eq!(udp_ask(pod_ip, 5353).await.as_deref(), Some("echo-a"));

    let names: BTreeSet<String> = ["echo-a", "echo-b"].iter().map(|s| s.to_string()).collect();
    for (node, ip) in &nodes {
        eventually(&format!("TCP NodePort on {node}"), async || {
            tcp_ask(*ip, tcp_port)
                .await
                .is_some_and(|n| names.contains(&n))
        })
        .await;
        eventually(&format!("UDP NodePort on {node}"), async || {
            udp_ask(*ip, udp_port)
                .await
                .is_some_and(|n| names.contains(&n))
        })
        .await;
        let (code, body) = http_get(*ip, tcp_port, "/").await.expect("HTTP answer");
        assert_eq!(code, 200);
        assert!(names.contains(body.trim()), "{body}");
    }
    // Both pods get traffic.
    let mut seen = BTreeSet::new();
    eventually("both pods answering through one node", async || {
        if let Some(n) = tcp_ask(nodes[2].1, tcp_port).await {
            seen.insert(n);
        }
        if let Some(n) = udp_ask(nodes[2].1, udp_port).await {
            seen.insert(n);
        }
        seen == names
    })
    .await;

    // Turning the Service into a ClusterIP one closes its NodePorts; deleting it removes
    // its EndpointSlice.
    let mut cip = (*get(&mc, "services", "echo").expect("service")).clone();
    cip["spec"]["type"] = json!("ClusterIP");
    for p in cip["spec"]["ports"].as_array_mut().expect("ports") {
        if let Some(p) = p.as_object_mut() {
            p.remove("nodePort");
        }
    }
    mc.core
        .update(
            &info(&mc, "services"),
            "default",
            "echo",
            cip,
            false,
            &WriteOptions::default(),
        )
        .expect("update service");
    eventually("NodePorts closed", async || {
        tcp_ask(nodes[0].1, tcp_port).await.is_none()
            && udp_ask(nodes[0].1, udp_port).await.is_none()
    })
    .await;
    assert_eq!(slice_readiness(&mc, "echo").len(), 2);
    delete(&mc, "services", "echo");
    eventually("EndpointSlice deleted", async || {
        slice_readiness(&mc, "echo").is_empty()
            && mc
                .core
                .store
                .list(
                    &("discovery.k8s.io".to_string(), "endpointslices".to_string()),
                    Some("default"),
                )
                .0
                .is_empty()
    })
    .await;
    mc.shutdown().await;
}

#[tokio::test]
async fn local_traffic_policy_follows_the_pods() {
    let mc = start().await;
    let ip = |n: &str| node_ip(&mc, n);
    create(&mc, "pods", pod("local-a", "local", Some("node-1")));
    create(&mc, "pods", pod("local-b", "local", Some("node-2")));
    let svc = create(
        &mc,
        "services",
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "local"},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                     "selector": {"app": "local"},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
        }),
    );
    let port = svc["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .expect("nodePort");
    let hc = svc["spec"]["healthCheckNodePort"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .expect("healthCheckNodePort");

    eventually("node-1 answers with its local pod", async || {
        tcp_ask(ip("node-1"), port).await.as_deref() == Some("local-a")
    })
    .await;
    eventually("node-2 answers with its local pod", async || {
        tcp_ask(ip("node-2"), port).await.as_deref() == Some("local-b")
    })
    .await;
    for _ in 0..5 {
        assert_eq!(
            tcp_ask(ip("node-1"), port).await.as_deref(),
            Some("local-a")
        );
        assert_eq!(
            tcp_ask(ip("node-2"), port).await.as_deref(),
            Some("local-b")
        );
    }
    assert_eq!(tcp_ask(ip("node-3"), port).await, None);

    eventually("health checks", async || {
        let h1 = http_get(ip("node-1"), hc, "/healthz").await;
        let h3 = http_get(ip("node-3"), hc, "/healthz").await;
        h1.is_some_and(|(c, _)| c == 200) && h3.is_some_and(|(c, _)| c == 503)
    })
    .await;
    let (_, body) = http_get(ip("node-1"), hc, "/healthz")
        .await
        .expect("health");
    let v: Value = serde_json::from_str(&body).expect("JSON body");
    assert_eq!(
        v["service"],
        json!({"namespace": "default", "name": "local"})
    );
    assert_eq!(v["localEndpoints"], 1);
    let (_, body) = http_get(ip("node-3"), hc, "/healthz")
        .await
        .expect("health");
    let v: Value = serde_json::from_str(&body).expect("JSON body");
    assert_eq!(v["localEndpoints"], 0);

    // Move the pod from node-1 to node-3.
    let old_ip: Ipv4Addr = get(&mc, "pods", "local-a")
        .and_then(|p| p["status"]["podIP"].as_str()?.parse().ok())
        .expect("pod IP");
    delete(&mc, "pods", "local-a");
    create(&mc, "pods", pod("local-c", "local", Some("node-3")));
    eventually("node-3 answers with its new local pod", async || {
        tcp_ask(ip("node-3"), port).await.as_deref() == Some("local-c")
    })
    .await;
    eventually("node-1 stops answering", async || {
        tcp_ask(ip("node-1"), port).await.is_none()
    })
    .await;
    eventually("health checks follow", async || {
        let h1 = http_get(ip("node-1"), hc, "/healthz").await;
        let h3 = http_get(ip("node-3"), hc, "/healthz").await;
        h1.is_some_and(|(c, _)| c == 503) && h3.is_some_and(|(c, _)| c == 200)
    })
    .await;
    // The deleted pod's server is gone.
    eventually("deleted pod's server stops", async || {
        tcp_ask(old_ip, 8080).await.is_none()
    })
    .await;
    mc.shutdown().await;
}

#[tokio::test]
async fn added_nodes_serve_node_ports_and_deleted_nodes_stop() {
    let mc = start().await;
    create(&mc, "pods", pod("lc-a", "lc", None));
    let svc = create(&mc, "services", echo_service("lc", "lc"));
    let (tcp_port, udp_port) = node_ports(&svc);

    let n4 = mc.cluster.add_node("node-4").expect("add node");
    assert_eq!(n4["metadata"]["labels"]["kubernetes.io/hostname"], "node-4");
    let ip4 = node_ip(&mc, "node-4");
    assert_eq!(ip4, Ipv4Addr::new(127, mc.ip_block, 1, 4));
    eventually("node-4 serves the NodePort", async || {
        tcp_ask(ip4, tcp_port).await.as_deref() == Some("lc-a")
            && udp_ask(ip4, udp_port).await.as_deref() == Some("lc-a")
    })
    .await;

    // A Node created through the API (as `kubectl apply` would) becomes a simulated node too.
    mc.core
        .create(
            &info(&mc, "nodes"),
            "",
            json!({"apiVersion": "v1", "kind": "Node",
                   "metadata": {"name": "edge", "labels": {"role": "edge"}},
                   "spec": {"providerID": "aws:///us-east-1a/i-0123456789"}}),
            &WriteOptions::default(),
        )
        .expect("create node");
    eventually("edge node completed", async || {
        mc.core.get(&info(&mc, "nodes"), "", "edge").is_ok_and(|n| {
            condition(&n, "Ready").as_deref() == Some("True")
                && n["spec"]["podCIDR"].is_string()
                && n["metadata"]["labels"]["kubernetes.io/hostname"] == "edge"
        }) && mc.cluster.node_ip("edge").is_some()
    })
    .await;
    let edge = mc
        .core
        .get(&info(&mc, "nodes"), "", "edge")
        .expect("edge node");
    assert_eq!(edge["spec"]["providerID"], "aws:///us-east-1a/i-0123456789");
    let edge_ip = node_ip(&mc, "edge");
    eventually("edge serves the NodePort", async || {
        tcp_ask(edge_ip, tcp_port).await.as_deref() == Some("lc-a")
    })
    .await;

    // A pod on node-4 dies with it; node-4's NodePort stops.
    create(&mc, "pods", pod("lc-pinned", "other", Some("node-4")));
    eventually("pinned pod ready", async || pod_is_ready(&mc, "lc-pinned")).await;
    mc.cluster.delete_node("node-4").expect("delete node");
    assert_eq!(mc.cluster.node_ip("node-4"), None);
    eventually("node-4 stops serving", async || {
        tcp_ask(ip4, tcp_port).await.is_none() && udp_ask(ip4, udp_port).await.is_none()
    })
    .await;
    eventually("node-4's pod deleted", async || {
        get(&mc, "pods", "lc-pinned").is_none()
    })
    .await;
    // Other nodes keep serving.
    assert_eq!(
        tcp_ask(node_ip(&mc, "node-1"), tcp_port).await.as_deref(),
        Some("lc-a")
    );
    mc.shutdown().await;
}

#[tokio::test]
async fn not_ready_nodes_pods_drop_out_of_endpoints() {
    let mc = start().await;
    create(&mc, "pods", pod("nr-a", "nr", Some("node-1")));
    create(&mc, "pods", pod("nr-b", "nr", Some("node-2")));
    let svc = create(&mc, "services", echo_service("nr", "nr"));
    let (tcp_port, _) = node_ports(&svc);
    let via = node_ip(&mc, "node-3");
    eventually("both endpoints ready", async || {
        slice_readiness(&mc, "nr") == vec![("nr-a".to_string(), true), ("nr-b".to_string(), true)]
    })
    .await;

    mc.cluster
        .set_node_ready("node-1", false)
        .expect("not ready");
    eventually("nr-a drops out", async || {
        slice_readiness(&mc, "nr") == vec![("nr-a".to_string(), false), ("nr-b".to_string(), true)]
    })
    .await;
    let a = get(&mc, "pods", "nr-a").expect("pod");
    assert_eq!(condition(&a, "Ready").as_deref(), Some("False"));
    assert_eq!(a["status"]["phase"], "Running");
    eventually("only nr-b answers", async || {
        for _ in 0..6 {
            if tcp_ask(via, tcp_port).await.as_deref() != Some("nr-b") {
                return false;
            }
        }
        true
    })
    .await;
    // Not-ready nodes get no new pods.
    create(
        &mc,
        "pods",
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "nr-pick"},
               "spec": {"nodeSelector": {"kubernetes.io/hostname": "node-1"},
                        "containers": [{"name": "c", "image": "x"}]}}),
    );
    eventually("nr-pick unschedulable", async || {
        get(&mc, "pods", "nr-pick").is_some_and(|p| {
            condition(&p, "PodScheduled").as_deref() == Some("False")
                && p["spec"]["nodeName"].is_null()
        })
    })
    .await;

    mc.cluster.set_node_ready("node-1", true).expect("ready");
    eventually("nr-a back", async || {
        slice_readiness(&mc, "nr") == vec![("nr-a".to_string(), true), ("nr-b".to_string(), true)]
    })
    .await;
    let mut seen = BTreeSet::new();
    eventually("nr-a answers again", async || {
        if let Some(n) = tcp_ask(via, tcp_port).await {
            seen.insert(n);
        }
        seen.contains("nr-a")
    })
    .await;
    eventually("nr-pick scheduled once node-1 is ready", async || {
        pod_is_ready(&mc, "nr-pick")
            && get(&mc, "pods", "nr-pick").is_some_and(|p| p["spec"]["nodeName"] == "node-1")
    })
    .await;
    mc.shutdown().await;
}

#[tokio::test]
async fn unschedulable_pods_wait_for_a_fitting_node() {
    let mc = start().await;
    create(
        &mc,
        "pods",
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "ssd-pod"},
               "spec": {"nodeSelector": {"disk": "ssd"},
                        "containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 8080}]}]}}),
    );
    eventually("pod unschedulable", async || {
        get(&mc, "pods", "ssd-pod").is_some_and(|p| {
            p["status"]["phase"] == "Pending"
                && p["status"]["conditions"][0]["reason"] == "Unschedulable"
        })
    })
    .await;
    mc.cluster
        .taint_node("node-2", "dedicated", Some("db"), "NoSchedule")
        .expect("taint");
    mc.cluster
        .label_node("node-2", "disk", Some("ssd"))
        .expect("label");
    mc.cluster
        .label_node("node-3", "disk", Some("ssd"))
        .expect("label");
    eventually("pod scheduled onto the untainted ssd node", async || {
        pod_is_ready(&mc, "ssd-pod")
            && get(&mc, "pods", "ssd-pod").is_some_and(|p| p["spec"]["nodeName"] == "node-3")
    })
    .await;
    let ip = mc.cluster.pod_ip("default", "ssd-pod").expect("pod IP");
    assert_eq!(tcp_ask(ip, 8080).await.as_deref(), Some("ssd-pod"));
    mc.shutdown().await;
}

#[tokio::test]
async fn shutdown_releases_every_socket() {
    let mc = start().await;
    create(&mc, "pods", pod("sd-a", "sd", Some("node-1")));
    let svc = create(&mc, "services", echo_service("sd", "sd"));
    let (tcp_port, udp_port) = node_ports(&svc);
    let n1 = node_ip(&mc, "node-1");
    eventually("serving", async || {
        tcp_ask(n1, tcp_port).await.as_deref() == Some("sd-a")
    })
    .await;
    let pod_ip = mc.cluster.pod_ip("default", "sd-a").expect("pod IP");
    mc.shutdown().await;
    std::net::TcpListener::bind((n1, tcp_port)).expect("NodePort released");
    std::net::UdpSocket::bind((n1, udp_port)).expect("UDP NodePort released");
    std::net::TcpListener::bind((pod_ip, 8080)).expect("pod port released");
    std::net::UdpSocket::bind((pod_ip, 5353)).expect("pod UDP port released");
}

#[tokio::test]
async fn busy_node_ports_are_skipped_and_retried() {
    let mc = start().await;
    let n1 = node_ip(&mc, "node-1");
    let n2 = node_ip(&mc, "node-2");
    let blocker = std::net::TcpListener::bind((n1, 30999)).expect("bind blocker");
    create(&mc, "pods", pod("busy-a", "busy", None));
    let mut svc = echo_service("busy", "busy");
    svc["spec"]["ports"][0]["nodePort"] = json!(30999);
    create(&mc, "services", svc);
    eventually(
        "node-2 serves despite node-1's port being taken",
        async || tcp_ask(n2, 30999).await.as_deref() == Some("busy-a"),
    )
    .await;
    drop(blocker);
    eventually("node-1 binds the port once it is free", async || {
        tcp_ask(n1, 30999).await.as_deref() == Some("busy-a")
    })
    .await;
    mc.shutdown().await;
}

/// A pod on node-1 with one TCP `containerPort`, behind a ClusterIP Service.
fn single_port_pod(name: &str, port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"nodeName": "node-1", "containers": [
            {"name": "web", "image": "mock/echo:1", "ports": [{"containerPort": port}]},
        ]},
    })
}

fn condition_field(obj: &Value, type_: &str, field: &str) -> Option<String> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .and_then(|c| c[field].as_str())
        .map(str::to_string)
}

/// The messages of the events about a pod with this reason (each must be a Warning).
fn pod_events(mc: &MockCloud, pod: &str, reason: &str) -> Vec<String> {
    let (events, _) = mc
        .core
        .store
        .list(&(String::new(), "events".to_string()), Some("default"));
    events
        .iter()
        .filter(|e| e["involvedObject"]["name"] == pod && e["reason"] == reason)
        .inspect(|e| assert_eq!(e["type"], "Warning", "{e}"))
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect()
}

/// What a pod whose port is taken by another process looks like: not Ready, its container
/// not ready, one FailedToBindPort Warning naming the port and the OS error, its endpoint
/// not ready. Once the port is free, the retry binds it and the pod becomes Ready.
async fn port_conflict_case(mc: &MockCloud, name: &str, port: u16, blocker: std::net::TcpListener) {
    create(mc, "pods", single_port_pod(name, port));
    create(
        mc,
        "services",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
               "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": port}]}}),
    );
    eventually("the pod is reported not ready", async || {
        get(mc, "pods", name).is_some_and(|p| {
            p["status"]["phase"] == "Running"
                && condition_field(&p, "Ready", "reason").as_deref() == Some("ContainersNotReady")
        })
    })
    .await;
    let p = get(mc, "pods", name).expect("pod");
    assert_eq!(condition(&p, "Ready").as_deref(), Some("False"));
    assert_eq!(condition(&p, "ContainersReady").as_deref(), Some("False"));
    assert_eq!(
        condition_field(&p, "Ready", "message").as_deref(),
        Some("containers with unready status: [web]")
    );
    assert_eq!(p["status"]["containerStatuses"][0]["ready"], false, "{p}");
    let events = pod_events(mc, name, "FailedToBindPort");
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0].contains(&format!("TCP port {port}"))
            && events[0].contains("Address already in use"),
        "{}",
        events[0]
    );
    eventually("the endpoint is published, not ready", async || {
        slice_readiness(mc, name) == vec![(name.to_string(), false)]
    })
    .await;

    drop(blocker);
    eventually("the pod binds its port once it is free", async || {
        pod_is_ready(mc, name)
    })
    .await;
    let ip = mc.cluster.pod_ip("default", name).expect("pod IP");
    assert_eq!(tcp_ask(ip, port).await.as_deref(), Some(name));
    eventually("the endpoint turns ready", async || {
        slice_readiness(mc, name) == vec![(name.to_string(), true)]
    })
    .await;
    assert_eq!(pod_events(mc, name, "FailedToBindPort").len(), 1);
}

#[tokio::test]
async fn a_pod_whose_port_is_taken_on_its_address_is_not_ready() {
    let mc = start().await;
    // The first pod on node-1 gets the first address of node-1's pod /24.
    let pod_ip = Ipv4Addr::new(127, mc.ip_block, 16, 1);
    let blocker = std::net::TcpListener::bind((pod_ip, 0)).expect("bind the pod's address");
    let port = blocker.local_addr().expect("addr").port();
    port_conflict_case(&mc, "taken", port, blocker).await;
    assert_eq!(mc.cluster.pod_ip("default", "taken"), Some(pod_ip));
    mc.shutdown().await;
}

#[tokio::test]
async fn a_pod_whose_port_is_taken_on_every_address_is_not_ready() {
    let mc = start().await;
    // Another process on 0.0.0.0 (briefly, on a port the OS picked from the ephemeral
    // range): Linux refuses the pod's own address on that port too.
    let blocker = std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind 0.0.0.0");
    let port = blocker.local_addr().expect("addr").port();
    port_conflict_case(&mc, "wildcard", port, blocker).await;
    mc.shutdown().await;
}
