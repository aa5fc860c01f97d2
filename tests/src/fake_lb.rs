//! A small, switchable implementation of berth's load balancer API
//! (`docs/http-provider.openapi.yaml`) for adversarial end-to-end tests.
//!
//! [`FakeLb`] is an HTTP/1.1 server on 127.0.0.1 (plain std threads, one per connection,
//! `Connection: close` on every answer) that speaks enough of the contract for
//! `berth controller --provider http` to work, and misbehaves on demand ([`Mode`]): it
//! rejects every write with a message that changes each time, never assigns an address,
//! answers with a 200 MiB body (streamed, never built in memory), answers with a huge error
//! message, or hangs up. It counts every request by method and path so a test can assert
//! how often berth called.

use crate::{Cloud, Controller};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The size of a [`Mode::HugeBody`] answer.
pub const HUGE_BODY_BYTES: u64 = 200 * 1024 * 1024;
/// The most the server reads of a request head or body.
const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// How the fake API answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// As the contract says: PUT stores and returns the load balancer with an address.
    Normal,
    /// Every PUT answers `400` with a message holding a fresh random request id.
    RejectWrites,
    /// Load balancers are accepted but never get an address.
    Pending,
    /// Every response is `200` with a chunked body of [`HUGE_BODY_BYTES`].
    HugeBody,
    /// Every PUT answers `400` with a contract error whose message is this many bytes.
    HugeError(usize),
    /// Every request is read and the connection closed without an answer.
    HangUp,
}

struct Stored {
    spec: Value,
    generation: u64,
    address: String,
}

struct State {
    mode: Mutex<Mode>,
    lbs: Mutex<BTreeMap<String, Stored>>,
    /// `(method, path without query)` → requests.
    counts: Mutex<HashMap<(String, String), u64>>,
    /// Request ids handed out by [`Mode::RejectWrites`].
    ids: AtomicU64,
    addresses: AtomicUsize,
    stop: AtomicBool,
}

/// The fake load balancer API; stops its listener when dropped.
pub struct FakeLb {
    state: Arc<State>,
    addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
}

/// One parsed request.
struct Request {
    method: String,
    path: String,
    query: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl FakeLb {
    /// Listens on 127.0.0.1 (a port the kernel picks) in `mode`.
    pub fn start(mode: Mode) -> FakeLb {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake LB API");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State {
            mode: Mutex::new(mode),
            lbs: Mutex::default(),
            counts: Mutex::default(),
            ids: AtomicU64::new(0),
            addresses: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let st = state.clone();
        let acceptor = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || serve(&st, conn));
            }
        });
        FakeLb {
            state,
            addr,
            acceptor: Some(acceptor),
        }
    }

    /// `host:port`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Switches how the server answers from the next request on.
    pub fn set_mode(&self, mode: Mode) {
        *lock(&self.state.mode) = mode;
    }

    /// Requests seen with `method` (any when `None`) whose path starts with `path_prefix`.
    pub fn count(&self, method: Option<&str>, path_prefix: &str) -> u64 {
        lock(&self.state.counts)
            .iter()
            .filter(|((m, p), _)| method.is_none_or(|want| m == want) && p.starts_with(path_prefix))
            .map(|(_, n)| n)
            .sum()
    }

    /// Every request so far, by `METHOD path`.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        lock(&self.state.counts)
            .iter()
            .map(|((m, p), n)| (format!("{m} {p}"), *n))
            .collect()
    }

    /// Requests to one load balancer (`GET`, `PUT`, `DELETE` of `/v1/loadbalancers/{id}`).
    pub fn calls_to_load_balancers(&self) -> u64 {
        self.count(None, "/v1/loadbalancers/")
    }

    /// Forgets the counts so far.
    pub fn reset_counts(&self) {
        lock(&self.state.counts).clear();
    }

    /// How many load balancers are stored.
    pub fn stored(&self) -> usize {
        lock(&self.state.lbs).len()
    }
}

impl Drop for FakeLb {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A value no two calls share (for request ids).
fn random_hex(seq: u64) -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(seq);
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    format!("{:016x}", h.finish())
}

fn serve(st: &State, conn: TcpStream) {
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
    conn.set_write_timeout(Some(Duration::from_secs(10))).ok();
    let Some(req) = read_request(&conn) else {
        return;
    };
    if st.stop.load(Ordering::SeqCst) {
        return;
    }
    *lock(&st.counts)
        .entry((req.method.clone(), req.path.clone()))
        .or_insert(0) += 1;
    let mode = lock(&st.mode).clone();
    let mut out = conn;
    // A client that went away mid-answer is not an error here.
    let _ = match mode {
        Mode::HangUp => Ok(()),
        Mode::HugeBody => huge_body(&mut out),
        Mode::HugeError(size) if req.method == "PUT" => huge_error(&mut out, size),
        Mode::RejectWrites if req.method == "PUT" => {
            let n = st.ids.fetch_add(1, Ordering::Relaxed);
            let message = format!(
                "Listener configuration rejected by the appliance (request id {})",
                random_hex(n)
            );
            let body = json!({"error": {"code": "BadRequest", "message": message}});
            respond(&mut out, 400, &[], &body)
        }
        _ => contract(st, &req, mode == Mode::Pending, &mut out),
    };
}

fn read_request(conn: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(conn.take(MAX_REQUEST_BYTES as u64 * 2));
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = HashMap::new();
    let mut head_bytes = line.len();
    loop {
        let mut h = String::new();
        let n = reader.read_line(&mut h).ok()?;
        head_bytes += n;
        if n == 0 || head_bytes > MAX_REQUEST_BYTES {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if len > MAX_REQUEST_BYTES {
        return None;
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target, String::new()),
    };
    Some(Request {
        method,
        path,
        query,
        headers,
        body,
    })
}

fn respond(
    out: &mut TcpStream,
    status: u16,
    headers: &[(&str, String)],
    body: &Value,
) -> std::io::Result<()> {
    let body = body.to_string();
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        reason(status),
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    out.write_all(body.as_bytes())?;
    out.flush()
}

fn no_content(out: &mut TcpStream) -> std::io::Result<()> {
    out.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")?;
    out.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        412 => "Precondition Failed",
        _ => "Status",
    }
}

/// `200` with a chunked JSON-looking body of [`HUGE_BODY_BYTES`], written 64 KiB at a time.
fn huge_body(out: &mut TcpStream) -> std::io::Result<()> {
    out.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    )?;
    let chunk = vec![b'a'; 64 * 1024];
    let head = format!("{:x}\r\n", chunk.len());
    let mut sent = 0u64;
    out.write_all(b"9\r\n{\"id\": \"a\r\n")?;
    while sent < HUGE_BODY_BYTES {
        out.write_all(head.as_bytes())?;
        out.write_all(&chunk)?;
        out.write_all(b"\r\n")?;
        sent += chunk.len() as u64;
    }
    out.write_all(b"0\r\n\r\n")?;
    out.flush()
}

/// `400` with a contract error whose message is `size` bytes, streamed.
fn huge_error(out: &mut TcpStream, size: usize) -> std::io::Result<()> {
    let prefix = br#"{"error": {"code": "BadRequest", "message": ""#;
    let suffix = br#""}}"#;
    let len = prefix.len() + size + suffix.len();
    let head = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    out.write_all(head.as_bytes())?;
    out.write_all(prefix)?;
    let chunk = vec![b'e'; 64 * 1024];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len());
        out.write_all(&chunk[..n])?;
        left -= n;
    }
    out.write_all(suffix)?;
    out.flush()
}

fn etag(generation: u64) -> String {
    format!("\"g{generation}\"")
}

fn lb_json(id: &str, lb: &Stored, pending: bool) -> Value {
    let addresses = if pending {
        json!([])
    } else {
        json!([{"ip": lb.address}])
    };
    json!({
        "id": id,
        "spec": lb.spec,
        "status": {"addresses": addresses, "targets": []},
        "etag": etag(lb.generation),
        "generation": lb.generation,
    })
}

fn error_body(code: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message}})
}

/// The contract's behaviour (`pending`: no load balancer ever gets an address).
fn contract(st: &State, req: &Request, pending: bool, out: &mut TcpStream) -> std::io::Result<()> {
    let Some(rest) = req.path.strip_prefix("/v1/loadbalancers") else {
        return respond(out, 404, &[], &error_body("NotFound", "No such path"));
    };
    let id = rest.trim_start_matches('/');
    if id.is_empty() {
        if req.method != "GET" {
            return respond(out, 405, &[], &error_body("BadRequest", "Use GET"));
        }
        let cluster = req
            .query
            .split('&')
            .find_map(|kv| kv.strip_prefix("cluster="))
            .map(str::to_string);
        let lbs = lock(&st.lbs);
        let items: Vec<Value> = lbs
            .iter()
            .filter(|(_, lb)| {
                cluster
                    .as_deref()
                    .is_none_or(|c| lb.spec["labels"]["berth.io/cluster"].as_str() == Some(c))
            })
            .map(|(id, lb)| lb_json(id, lb, pending))
            .collect();
        return respond(out, 200, &[], &json!({"items": items}));
    }
    let mut lbs = lock(&st.lbs);
    let current_etag = lbs.get(id).map(|lb| etag(lb.generation));
    let if_match = req.headers.get("if-match");
    let if_none_match = req.headers.get("if-none-match");
    let failed_precondition = (if_none_match.is_some() && current_etag.is_some())
        || if_match.is_some_and(|m| current_etag.as_ref() != Some(m));
    match req.method.as_str() {
        "GET" => match lbs.get(id) {
            Some(lb) => respond(
                out,
                200,
                &[("ETag", etag(lb.generation))],
                &lb_json(id, lb, pending),
            ),
            None => respond(
                out,
                404,
                &[],
                &error_body("NotFound", "No such load balancer"),
            ),
        },
        "PUT" => {
            if failed_precondition {
                return respond(
                    out,
                    412,
                    &[],
                    &error_body("PreconditionFailed", "ETag mismatch"),
                );
            }
            let Ok(spec) = serde_json::from_slice::<Value>(&req.body) else {
                return respond(out, 400, &[], &error_body("BadRequest", "Not JSON"));
            };
            let created = !lbs.contains_key(id);
            let n = st.addresses.fetch_add(1, Ordering::Relaxed);
            let lb = lbs.entry(id.to_string()).or_insert_with(|| Stored {
                spec: Value::Null,
                generation: 0,
                address: format!("192.0.2.{}", 1 + n % 250),
            });
            if lb.spec != spec {
                lb.spec = spec;
                lb.generation += 1;
            }
            let body = lb_json(id, lb, pending);
            respond(
                out,
                if created { 201 } else { 200 },
                &[("ETag", etag(lb.generation))],
                &body,
            )
        }
        "DELETE" => {
            if failed_precondition && if_match.is_some() {
                return respond(
                    out,
                    412,
                    &[],
                    &error_body("PreconditionFailed", "ETag mismatch"),
                );
            }
            match lbs.remove(id) {
                Some(_) => no_content(out),
                None => respond(
                    out,
                    404,
                    &[],
                    &error_body("NotFound", "No such load balancer"),
                ),
            }
        }
        _ => respond(
            out,
            405,
            &[],
            &error_body("BadRequest", "Unsupported method"),
        ),
    }
}

/// `berth controller --provider http --http-endpoint ENDPOINT` against `cloud`'s API server,
/// with the same flags as [`Controller::start`] otherwise (`--default-class` is up to
/// `extra`).
pub fn start_controller(
    cloud: &Cloud,
    endpoint: &str,
    identity: &str,
    extra: &[&str],
) -> Controller {
    Controller::start_with_endpoint(cloud, endpoint, "e2e-bounded", identity, extra)
}

/// A process's peak resident set size in bytes (`VmHWM` of `/proc/<pid>/status`).
pub fn peak_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http;

    #[test]
    fn speaks_the_contract_and_counts() {
        let lb = FakeLb::start(Mode::Normal);
        let addr = lb.addr().to_string();
        let spec = json!({"labels": {"berth.io/cluster": "c"}, "listeners": [], "targets": [],
            "healthCheck": {"protocol": "TCP"}});
        let (code, _) = http(&addr, "GET", "/v1/loadbalancers/b-1", None).unwrap();
        assert_eq!(code, 404);
        let (code, body) = http(&addr, "PUT", "/v1/loadbalancers/b-1", Some(&spec)).unwrap();
        assert_eq!(code, 201, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(v["status"]["addresses"][0]["ip"].is_string(), "{v}");
        let (code, body) = http(&addr, "GET", "/v1/loadbalancers?cluster=c", None).unwrap();
        assert_eq!(code, 200);
        assert!(body.contains("b-1"));
        let (code, _) = http(&addr, "GET", "/v1/loadbalancers?cluster=other", None).unwrap();
        assert_eq!(code, 200);
        assert_eq!(lb.count(Some("GET"), "/v1/loadbalancers/"), 1);
        assert_eq!(lb.count(Some("PUT"), "/v1/"), 1);
        assert_eq!(lb.count(None, "/v1/loadbalancers"), 4);

        lb.set_mode(Mode::RejectWrites);
        let (c1, m1) = http(&addr, "PUT", "/v1/loadbalancers/b-1", Some(&spec)).unwrap();
        let (c2, m2) = http(&addr, "PUT", "/v1/loadbalancers/b-1", Some(&spec)).unwrap();
        assert_eq!((c1, c2), (400, 400));
        assert_ne!(m1, m2, "each rejection carries a fresh request id");

        lb.set_mode(Mode::Pending);
        let (_, body) = http(&addr, "GET", "/v1/loadbalancers/b-1", None).unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"]["addresses"], json!([]));

        lb.set_mode(Mode::HugeError(100_000));
        let (code, body) = http(&addr, "PUT", "/v1/loadbalancers/b-1", Some(&spec)).unwrap();
        assert_eq!(code, 400);
        assert!(body.len() > 100_000);
        let _: Value = serde_json::from_str(&body).expect("a contract error");
    }

    #[test]
    fn huge_body_is_streamed() {
        let lb = FakeLb::start(Mode::HugeBody);
        let mut s = TcpStream::connect(lb.addr()).unwrap();
        s.write_all(b"GET /v1/loadbalancers/x HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut buf = vec![0u8; 4 * 1024 * 1024];
        let mut got = 0;
        while got < buf.len() {
            let n = s.read(&mut buf[got..]).unwrap();
            assert!(n > 0, "the body ended early at {got} bytes");
            got += n;
        }
        let head = String::from_utf8_lossy(&buf[..200]);
        assert!(head.contains("Transfer-Encoding: chunked"), "{head}");
    }
}
