//! The load balancer API (`mock_cloud::lbapi`) on its own: the REST contract, and real
//! TCP/UDP traffic through the VIPs to tiny "node" servers that answer with their names.
//!
//! Each test uses its own 127.B.0.0/16 block with B ≥ 240 (mock-cloud's `claim_block` only
//! picks 20..=219) and holds the block's marker port like `claim_block` does.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::HeaderMap;
use hyper_util::rt::TokioIo;
use mock_cloud::lbapi::{LbApi, LbApiConfig};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_secs(15);

/// Claims block `b` the way mock-cloud does, so nothing else uses it meanwhile.
fn claim_block(b: u8) -> StdTcpListener {
    StdTcpListener::bind((Ipv4Addr::new(127, b, 255, 254), 29_999))
        .unwrap_or_else(|e| panic!("IP block 127.{b}.0.0/16 is in use: {e}"))
}

struct Harness {
    api: LbApi,
    _stop: watch::Sender<bool>,
    _block: StdTcpListener,
    block: u8,
}

async fn start(block: u8, token: Option<&str>) -> Harness {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let lock = claim_block(block);
    let (stop, rx) = watch::channel(false);
    let api = LbApi::start(
        LbApiConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            ip_block: block,
            token: token.map(str::to_string),
            health_check_scale: 0.2,
            dataplane: true,
        },
        rx,
    )
    .await
    .expect("start the load balancer API");
    Harness {
        api,
        _stop: stop,
        _block: lock,
        block,
    }
}

fn node_ip(block: u8, n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, block, 1, n)
}

// ---- nodes -----------------------------------------------------------------------------------

/// A TCP server that writes `name` to each connection and closes it.
async fn tcp_node(ip: Ipv4Addr, port: u16, name: &str) {
    let l = TcpListener::bind((ip, port)).await.expect("bind TCP node");
    let name = name.to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let name = name.clone();
            tokio::spawn(async move {
                let _ = s.write_all(name.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
}

/// A UDP server that answers every datagram with `name`.
async fn udp_node(ip: Ipv4Addr, port: u16, name: &str) {
    let s = UdpSocket::bind((ip, port)).await.expect("bind UDP node");
    let name = name.to_string();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((_, from)) = s.recv_from(&mut buf).await {
            let _ = s.send_to(name.as_bytes(), from).await;
        }
    });
}

/// An HTTP health endpoint answering 200 while `up` is true, 503 otherwise.
async fn health_node(ip: Ipv4Addr, port: u16, up: Arc<AtomicBool>) {
    let l = TcpListener::bind((ip, port))
        .await
        .expect("bind health node");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let up = up.clone();
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let status = if up.load(Ordering::SeqCst) {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
}

// ---- clients ---------------------------------------------------------------------------------

/// Connects (from `from`, if given) and reads everything: a node's name, or "" when the
/// load balancer closed the connection at once. Err when the connection was refused.
async fn tcp_ask(vip: Ipv4Addr, port: u16, from: Option<Ipv4Addr>) -> std::io::Result<String> {
    let sock = TcpSocket::new_v4()?;
    if let Some(ip) = from {
        sock.bind(SocketAddr::new(IpAddr::V4(ip), 0))?;
    }
    let mut s = sock.connect(SocketAddr::new(IpAddr::V4(vip), port)).await?;
    let mut out = String::new();
    match tokio::time::timeout(Duration::from_secs(3), s.read_to_string(&mut out)).await {
        Ok(Ok(_)) => Ok(out),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(String::new()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the load balancer neither answered nor closed",
        )),
    }
}

/// Sends one datagram from a fresh socket and waits briefly for the answer.
async fn udp_ask(vip: Ipv4Addr, port: u16) -> Option<String> {
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.ok()?;
    s.send_to(b"who?", (vip, port)).await.ok()?;
    let mut buf = [0u8; 1500];
    let (n, _) = tokio::time::timeout(Duration::from_millis(500), s.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

struct Resp {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Resp {
    fn etag(&self) -> String {
        self.headers
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }
}

async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Resp {
    let stream = TcpStream::connect(addr).await.expect("connect to the API");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP handshake");
    tokio::spawn(conn);
    let mut b = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .expect("response body")
        .to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("every response body is JSON")
    };
    Resp {
        status,
        headers,
        body,
    }
}

fn json_body(v: &Value) -> Option<Vec<u8>> {
    Some(serde_json::to_vec(v).expect("serialisable"))
}

/// Polls `f` until it yields Some, failing the test at the deadline.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn vip_of(lb: &Value) -> Ipv4Addr {
    lb["status"]["addresses"][0]["ip"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no VIP in {lb}"))
}

/// Waits until GET shows every target of `id` healthy.
async fn all_healthy(addr: SocketAddr, id: &str, auth: &[(&str, &str)]) {
    eventually(&format!("all targets of {id} healthy"), || async {
        let r = call(addr, "GET", &format!("/v1/loadbalancers/{id}"), auth, None).await;
        let ts = r.body["status"]["targets"].as_array()?.clone();
        (!ts.is_empty() && ts.iter().all(|t| t["healthy"] == json!(true))).then_some(())
    })
    .await;
}

/// Names seen over `n` TCP connections from `from`.
async fn tcp_names(vip: Ipv4Addr, port: u16, from: Option<Ipv4Addr>, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(tcp_ask(vip, port, from).await.unwrap_or_default());
    }
    out
}

fn spec(block: u8, hc_port: u16) -> Value {
    json!({
        "labels": {"berth.io/cluster": "c1", "berth.io/service-name": "web"},
        "listeners": [
            {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 30080},
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 30053}
        ],
        "targets": [
            {"name": "node-1", "address": node_ip(block, 1).to_string()},
            {"name": "node-2", "address": node_ip(block, 2).to_string()}
        ],
        "healthCheck": {"protocol": "HTTP", "port": hc_port, "path": "/healthz", "intervalSeconds": 1, "timeoutSeconds": 1}
    })
}

// ---- tests -----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_serves_tcp_and_udp_idempotently_and_delete_frees_the_vip() {
    let h = start(251, None).await;
    let addr = h.api.addr;
    for n in 1..=2 {
        let name = format!("node-{n}");
        tcp_node(node_ip(h.block, n), 30080, &name).await;
        udp_node(node_ip(h.block, n), 30053, &name).await;
        health_node(node_ip(h.block, n), 10256, Arc::new(AtomicBool::new(true))).await;
    }

    let body = spec(h.block, 10256);
    let r = call(addr, "PUT", "/v1/loadbalancers/web", &[], json_body(&body)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let etag = r.etag();
    assert!(etag.starts_with("\"g1-"), "ETag {etag}");
    assert_eq!(r.body["etag"], json!(etag));
    assert_eq!(r.body["generation"], json!(1));
    assert_eq!(r.body["spec"], body, "the spec is echoed");
    let vip = vip_of(&r.body);
    assert_eq!(vip.octets()[..3], [127, h.block, 200]);
    all_healthy(addr, "web", &[]).await;

    // TCP: round robin over both nodes.
    let seen: BTreeSet<String> = eventually("TCP traffic reaches both nodes", || async {
        let names: BTreeSet<String> = tcp_names(vip, 80, None, 6).await.into_iter().collect();
        names
            .contains("node-1")
            .then_some(names)
            .filter(|n| n.contains("node-2"))
    })
    .await;
    assert_eq!(seen.len(), 2, "{seen:?}");

    // UDP: each new client gets a session; sessions spread over both nodes.
    eventually("UDP traffic reaches both nodes", || async {
        let mut names = BTreeSet::new();
        for _ in 0..6 {
            if let Some(n) = udp_ask(vip, 53).await {
                names.insert(n);
            }
        }
        (names.len() == 2).then_some(())
    })
    .await;

    // Idempotent PUT: 200, same ETag and generation, not a write.
    let writes_before = h.api.stats().writes;
    let r = call(addr, "PUT", "/v1/loadbalancers/web", &[], json_body(&body)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.etag(), etag);
    assert_eq!(r.body["generation"], json!(1));
    let stats = h.api.stats();
    assert_eq!(stats.writes, writes_before);
    assert_eq!(stats.puts, 2);
    assert_eq!(stats.writes_by_id.get("web"), Some(&1));

    // `Prefer: return=minimal` (RFC 7240): the same answer without the spec and the
    // per-target health, and the preference acknowledged.
    let r = call(
        addr,
        "PUT",
        "/v1/loadbalancers/web",
        &[("prefer", "respond-async, return=minimal")],
        json_body(&body),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.etag(), etag);
    assert_eq!(
        r.headers
            .get("preference-applied")
            .and_then(|v| v.to_str().ok()),
        Some("return=minimal")
    );
    assert_eq!(
        r.body,
        json!({"id": "web", "status": {"addresses": [{"ip": vip.to_string()}]}, "etag": etag, "generation": 1})
    );
    assert_eq!(h.api.stats().writes, writes_before);

    // Preconditions.
    let mut changed = body.clone();
    changed["listeners"]
        .as_array_mut()
        .expect("listeners")
        .push(json!({"name": "alt", "port": 8080, "protocol": "TCP", "targetPort": 30080}));
    let r = call(
        addr,
        "PUT",
        "/v1/loadbalancers/web",
        &[("if-match", "\"g0-0000000000000000\"")],
        json_body(&changed),
    )
    .await;
    assert_eq!(r.status, 412);
    assert_eq!(r.body["error"]["code"], json!("PreconditionFailed"));
    let r = call(
        addr,
        "PUT",
        "/v1/loadbalancers/web",
        &[("if-none-match", "*")],
        json_body(&changed),
    )
    .await;
    assert_eq!(r.status, 412);

    // A real change with the current ETag: generation 2, a new listener, the old one kept.
    let r = call(
        addr,
        "PUT",
        "/v1/loadbalancers/web",
        &[("if-match", etag.as_str())],
        json_body(&changed),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["generation"], json!(2));
    assert_ne!(r.etag(), etag);
    assert_eq!(vip_of(&r.body), vip, "the VIP does not move");
    assert_eq!(h.api.stats().writes, 2);
    eventually("the new listener serves", || async {
        tcp_ask(vip, 8080, None)
            .await
            .ok()
            .filter(|n| n.starts_with("node-"))
    })
    .await;
    assert!(
        tcp_ask(vip, 80, None)
            .await
            .expect("80 still open")
            .starts_with("node-")
    );

    // GET and list by cluster.
    let r = call(addr, "GET", "/v1/loadbalancers/web", &[], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.etag(), r.body["etag"].as_str().unwrap_or_default());
    let r = call(addr, "GET", "/v1/loadbalancers?cluster=c1", &[], None).await;
    assert_eq!(r.body["items"].as_array().map(Vec::len), Some(1));
    let r = call(addr, "GET", "/v1/loadbalancers?cluster=other", &[], None).await;
    assert_eq!(r.body["items"], json!([]));
    // `view=labels`: only ids and labels, as garbage collection reads them.
    let r = call(
        addr,
        "GET",
        "/v1/loadbalancers?cluster=c1&view=labels",
        &[],
        None,
    )
    .await;
    let whole = call(addr, "GET", "/v1/loadbalancers/web", &[], None).await;
    assert_eq!(
        r.body["items"],
        json!([{"id": "web", "spec": {"labels": whole.body["spec"]["labels"]}}])
    );
    assert_eq!(h.api.load_balancers().len(), 1);

    // DELETE frees the VIP at once; a second DELETE is 404.
    let r = call(addr, "DELETE", "/v1/loadbalancers/web", &[], None).await;
    assert_eq!(r.status, 204);
    let refused = tcp_ask(vip, 80, None).await;
    assert_eq!(
        refused.as_ref().map_err(std::io::Error::kind).err(),
        Some(std::io::ErrorKind::ConnectionRefused),
        "{refused:?}"
    );
    let r = call(addr, "DELETE", "/v1/loadbalancers/web", &[], None).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error"]["code"], json!("NotFound"));
    let r = call(addr, "GET", "/v1/loadbalancers/web", &[], None).await;
    assert_eq!(r.status, 404);
    assert!(h.api.load_balancers().is_empty());

    // Shutdown releases every socket, the API's too.
    let r = call(
        addr,
        "PUT",
        "/v1/loadbalancers/again",
        &[],
        json_body(&body),
    )
    .await;
    assert_eq!(r.status, 201);
    let vip2 = vip_of(&r.body);
    h.api.shutdown().await;
    assert!(TcpStream::connect(addr).await.is_err(), "API still bound");
    assert!(
        TcpStream::connect((vip2, 80)).await.is_err(),
        "VIP still bound"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_target_stops_getting_traffic_and_comes_back() {
    let h = start(252, None).await;
    let addr = h.api.addr;
    let up1 = Arc::new(AtomicBool::new(true));
    let up2 = Arc::new(AtomicBool::new(true));
    for n in 1..=2 {
        let name = format!("node-{n}");
        tcp_node(node_ip(h.block, n), 30080, &name).await;
        udp_node(node_ip(h.block, n), 30053, &name).await;
        let up = if n == 2 { up2.clone() } else { up1.clone() };
        health_node(node_ip(h.block, n), 10256, up).await;
    }
    let r = call(
        addr,
        "PUT",
        "/v1/loadbalancers/web",
        &[],
        json_body(&spec(h.block, 10256)),
    )
    .await;
    assert_eq!(r.status, 201);
    let vip = vip_of(&r.body);
    all_healthy(addr, "web", &[]).await;

    up2.store(false, Ordering::SeqCst);
    eventually("node-2 reported unhealthy", || async {
        let r = call(addr, "GET", "/v1/loadbalancers/web", &[], None).await;
        (r.body["status"]["targets"]
            == json!([{"name": "node-1", "healthy": true}, {"name": "node-2", "healthy": false}]))
        .then_some(())
    })
    .await;
    let names = tcp_names(vip, 80, None, 10).await;
    assert!(names.iter().all(|n| n == "node-1"), "TCP: {names:?}");
    for _ in 0..6 {
        assert_eq!(udp_ask(vip, 53).await.as_deref(), Some("node-1"));
    }

    up2.store(true, Ordering::SeqCst);
    eventually("node-2 gets traffic again", || async {
        let names = tcp_names(vip, 80, None, 4).await;
        names.iter().any(|n| n == "node-2").then_some(())
    })
    .await;
    all_healthy(addr, "web", &[]).await;

    // No healthy target at all: TCP is closed at once, UDP dropped.
    up1.store(false, Ordering::SeqCst);
    up2.store(false, Ordering::SeqCst);
    eventually("both nodes reported unhealthy", || async {
        let r = call(addr, "GET", "/v1/loadbalancers/web", &[], None).await;
        let ts = r.body["status"]["targets"].as_array()?.clone();
        ts.iter()
            .all(|t| t["healthy"] == json!(false))
            .then_some(())
    })
    .await;
    assert_eq!(
        tcp_ask(vip, 80, None).await.expect("accepted, then closed"),
        ""
    );
    assert_eq!(udp_ask(vip, 53).await, None);
    h.api.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_ranges_refuse_others_and_client_ip_affinity_sticks() {
    let h = start(253, None).await;
    let addr = h.api.addr;
    for n in 1..=2 {
        let name = format!("node-{n}");
        tcp_node(node_ip(h.block, n), 30080, &name).await;
        health_node(node_ip(h.block, n), 10256, Arc::new(AtomicBool::new(true))).await;
    }
    let mut body = spec(h.block, 10256);
    body["sourceRanges"] = json!(["10.0.0.0/8"]);
    let r = call(addr, "PUT", "/v1/loadbalancers/web", &[], json_body(&body)).await;
    assert_eq!(r.status, 201);
    let vip = vip_of(&r.body);
    all_healthy(addr, "web", &[]).await;
    for _ in 0..3 {
        assert_eq!(
            tcp_ask(vip, 80, None).await.expect("accepted, then closed"),
            "",
            "a client outside sourceRanges is closed at once"
        );
    }

    body["sourceRanges"] = json!(["10.0.0.0/8", "127.0.0.0/8"]);
    let r = call(addr, "PUT", "/v1/loadbalancers/web", &[], json_body(&body)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["generation"], json!(2));
    eventually("a client inside sourceRanges is served", || async {
        tcp_ask(vip, 80, None)
            .await
            .ok()
            .filter(|n| n.starts_with("node-"))
    })
    .await;

    body["sessionAffinity"] = json!({"type": "ClientIP", "timeoutSeconds": 600});
    let r = call(addr, "PUT", "/v1/loadbalancers/web", &[], json_body(&body)).await;
    assert_eq!(r.status, 200);
    let mut pinned = BTreeSet::new();
    for c in 1..=6u8 {
        let client = Ipv4Addr::new(127, h.block, 9, c);
        let names: BTreeSet<String> = tcp_names(vip, 80, Some(client), 8)
            .await
            .into_iter()
            .collect();
        assert_eq!(
            names.len(),
            1,
            "client {client} moved between targets: {names:?}"
        );
        pinned.extend(names);
    }
    assert_eq!(
        pinned,
        BTreeSet::from(["node-1".to_string(), "node-2".to_string()]),
        "different clients are spread over the targets"
    );
    h.api.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_auth_addresses_and_injected_faults() {
    let h = start(254, Some("s3cret")).await;
    let addr = h.api.addr;
    let auth: &[(&str, &str)] = &[("authorization", "Bearer s3cret")];
    let body = spec(h.block, 10256);

    let r = call(addr, "GET", "/v1/loadbalancers", &[], None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"]["code"], json!("Unauthorized"));
    let r = call(
        addr,
        "PUT",
        "/v1/loadbalancers/web",
        &[("authorization", "Bearer wrong")],
        json_body(&body),
    )
    .await;
    assert_eq!(r.status, 401);
    let r = call(addr, "GET", "/v1/loadbalancers", auth, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, json!({"items": []}));

    let mut sctp = body.clone();
    sctp["listeners"][0]["protocol"] = json!("SCTP");
    let r = call(addr, "PUT", "/v1/loadbalancers/web", auth, json_body(&sctp)).await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["error"]["code"], json!("Invalid"));
    assert_eq!(r.body["error"]["field"], json!("listeners[0].protocol"));

    let mut bad_cidr = body.clone();
    bad_cidr["sourceRanges"] = json!(["10.0.0.0/8", "10.0.0.0/40"]);
    let r = call(
        addr,
        "PUT",
        "/v1/loadbalancers/web",
        auth,
        json_body(&bad_cidr),
    )
    .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["error"]["field"], json!("sourceRanges[1]"));

    let mut dup = body.clone();
    dup["listeners"][1] = json!({"port": 80, "protocol": "TCP", "targetPort": 30081});
    let r = call(addr, "PUT", "/v1/loadbalancers/web", auth, json_body(&dup)).await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["error"]["field"], json!("listeners[1]"));

    let r = call(
        addr,
        "PUT",
        "/v1/loadbalancers/web",
        auth,
        Some(b"{\"listeners\": [".to_vec()),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["code"], json!("BadRequest"));

    let mut outside = body.clone();
    outside["requestedAddresses"] = json!(["127.1.200.5"]);
    let r = call(
        addr,
        "PUT",
        "/v1/loadbalancers/web",
        auth,
        json_body(&outside),
    )
    .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["error"]["field"], json!("requestedAddresses[0]"));
    assert!(h.api.load_balancers().is_empty(), "nothing was created");
    assert_eq!(h.api.stats().writes, 0);

    // A requested address is honoured, and cannot be taken twice.
    let mut wanted = body.clone();
    wanted["requestedAddresses"] = json!([format!("127.{}.200.77", h.block)]);
    let r = call(
        addr,
        "PUT",
        "/v1/loadbalancers/web",
        auth,
        json_body(&wanted),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(vip_of(&r.body), Ipv4Addr::new(127, h.block, 200, 77));
    let r = call(
        addr,
        "PUT",
        "/v1/loadbalancers/other",
        auth,
        json_body(&wanted),
    )
    .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["error"]["field"], json!("requestedAddresses[0]"));

    // Injected throttling carries Retry-After; admin endpoints are never faulted.
    let r = call(
        addr,
        "PUT",
        "/mock-cloud/v1/faults",
        &[],
        json_body(&json!({"errorRate": 1.0, "errorCode": 429, "retryAfterSeconds": 7})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = call(addr, "GET", "/v1/loadbalancers/web", auth, None).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.body["error"]["code"], json!("TooManyRequests"));
    assert_eq!(
        r.headers.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("7")
    );
    let r = call(addr, "GET", "/mock-cloud/v1/stats", &[], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["injectedErrors"], json!(1));
    assert_eq!(r.body["writes"], json!(1));
    let r = call(
        addr,
        "PUT",
        "/mock-cloud/v1/faults",
        &[],
        json_body(&json!({})),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = call(addr, "GET", "/v1/loadbalancers/web", auth, None).await;
    assert_eq!(r.status, 200);
    let r = call(addr, "GET", "/v1/loadbalancers/nope", auth, None).await;
    assert_eq!(r.status, 404);
    h.api.shutdown().await;
}

/// PUTs and DELETEs are audited with their bearer token (so a test can tell which replica
/// wrote), DELETEs are counted per id, and targets from another cluster's block are accepted
/// (two clusters may share one load balancer API).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_audited_by_token_and_deletes_counted_per_id() {
    let h = start(247, None).await;
    let addr = h.api.addr;
    let mut foreign = spec(h.block, 1);
    foreign["targets"] = json!([{"name": "other-node", "address": "127.31.1.1"}]);
    let put = call(
        addr,
        "PUT",
        "/v1/loadbalancers/lb-x",
        &[("authorization", "Bearer replica-a")],
        json_body(&foreign),
    )
    .await;
    assert_eq!(put.status, 201, "{}", put.body);
    let get = call(addr, "GET", "/v1/loadbalancers/lb-x", &[], None).await;
    assert_eq!(get.status, 200);
    for _ in 0..2 {
        call(
            addr,
            "DELETE",
            "/v1/loadbalancers/lb-x",
            &[("authorization", "Bearer replica-b")],
            None,
        )
        .await;
    }
    let audit = call(addr, "GET", "/mock-cloud/v1/audit", &[], None).await;
    let seen: Vec<(String, String, u64)> = audit.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| {
            (
                e["verb"].as_str().unwrap_or_default().to_string(),
                e["token"].as_str().unwrap_or_default().to_string(),
                e["code"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let expect = |v: &str, t: &str, c: u64| (v.to_string(), t.to_string(), c);
    assert_eq!(
        seen,
        [
            expect("put", "replica-a", 201),
            expect("delete", "replica-b", 204),
            expect("delete", "replica-b", 404)
        ]
    );
    let after = audit.body["items"][1]["seq"].as_u64().expect("seq");
    let tail = call(
        addr,
        "GET",
        &format!("/mock-cloud/v1/audit?after={after}"),
        &[],
        None,
    )
    .await;
    assert_eq!(tail.body["items"].as_array().map(Vec::len), Some(1));
    let stats = call(addr, "GET", "/mock-cloud/v1/stats", &[], None).await;
    assert_eq!(stats.body["deletesById"], json!({"lb-x": 2}));

    // Equal target lists are stored once; the per-set count needs no walk over targets.
    for id in ["lb-a", "lb-b"] {
        let put = call(
            addr,
            "PUT",
            &format!("/v1/loadbalancers/{id}"),
            &[],
            json_body(&spec(h.block, 1)),
        )
        .await;
        assert_eq!(put.status, 201, "{}", put.body);
    }
    let put = call(
        addr,
        "PUT",
        "/v1/loadbalancers/lb-c",
        &[],
        json_body(&foreign),
    )
    .await;
    assert_eq!(put.status, 201, "{}", put.body);
    assert_eq!(h.api.target_lists(), 2);
    let both: std::collections::BTreeSet<String> = ["node-2", "node-1"].map(String::from).into();
    assert_eq!(h.api.count_targeting(&both), (3, 2));
    let other: std::collections::BTreeSet<String> = ["other-node".to_string()].into();
    assert_eq!(h.api.count_targeting(&other), (3, 1));
    let got = call(addr, "GET", "/v1/loadbalancers/lb-b", &[], None).await;
    assert_eq!(got.body["spec"]["targets"], spec(h.block, 1)["targets"]);
    for id in ["lb-a", "lb-c"] {
        let del = call(
            addr,
            "DELETE",
            &format!("/v1/loadbalancers/{id}"),
            &[],
            None,
        )
        .await;
        assert_eq!(del.status, 204);
    }
    assert_eq!(h.api.target_lists(), 1);
    assert_eq!(h.api.count_targeting(&both), (1, 1));
}
