//! [`ThrottleProxy`]: an HTTP proxy in front of moto that answers a configurable share of
//! AWS Query API calls with the error real AWS sends when an account's bucket is empty —
//! ELBv2's `Throttling` (`400`, `<ErrorResponse>`) and EC2's `RequestLimitExceeded` (`503`,
//! `<Response><Errors>`) — and forwards the rest. Which calls are throttled is a pure
//! function of the seed, the action and how many calls of that action came before, so a
//! run is reproducible. Calls are counted by action, forwarded and throttled apart.
//!
//! Plain std threads, one per connection, `Connection: close` on every answer; requests
//! over 1 MiB are refused. Self-contained (std only) so benchmarks can include it by path.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The most the proxy reads of a request head or body, or of moto's answer.
const MAX_REQUEST_BYTES: usize = 1024 * 1024;
const MAX_ANSWER_BYTES: u64 = 64 * 1024 * 1024;

/// Calls of one action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Sent on to moto.
    pub forwarded: u64,
    /// Answered with a throttling error.
    pub throttled: u64,
    /// Of the forwarded, those moto itself answered with a server error (5xx). A client
    /// retries these, as it must, so they are not duplicates.
    pub server_errors: u64,
}

struct State {
    upstream: SocketAddr,
    seed: u64,
    /// Share of calls throttled, in parts per million.
    share_ppm: AtomicU32,
    /// Action → calls so far.
    counts: Mutex<BTreeMap<String, Counts>>,
    request_ids: AtomicU64,
    stop: AtomicBool,
}

/// The proxy; stops accepting when dropped.
pub struct ThrottleProxy {
    state: Arc<State>,
    addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
}

/// splitmix64: a well-mixed 64-bit hash of `x`.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Whether call number `n` (0-based) of `action` is throttled at `share_ppm`.
pub fn throttles(seed: u64, action: &str, n: u64, share_ppm: u32) -> bool {
    let h = action.bytes().fold(mix(seed), |h, b| mix(h ^ u64::from(b)));
    mix(h ^ n) % 1_000_000 < u64::from(share_ppm)
}

fn ppm(share: f64) -> u32 {
    assert!(
        (0.0..=1.0).contains(&share),
        "the throttled share is in [0, 1], not {share}"
    );
    (share * 1_000_000.0).round() as u32
}

impl ThrottleProxy {
    /// Listens on 127.0.0.1 (a port the kernel picks) in front of `upstream`
    /// (`http://127.0.0.1:PORT`), throttling `share` (0 to 1) of the calls.
    pub fn start(upstream: &str, share: f64, seed: u64) -> ThrottleProxy {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap_or_else(|e| panic!("upstream {upstream:?} is not http://IP:PORT: {e}"));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the throttle proxy");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State {
            upstream,
            seed,
            share_ppm: AtomicU32::new(ppm(share)),
            counts: Mutex::default(),
            request_ids: AtomicU64::new(0),
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
                std::thread::spawn(move || {
                    let _ = serve(&st, conn);
                });
            }
        });
        ThrottleProxy {
            state,
            addr,
            acceptor: Some(acceptor),
        }
    }

    /// `http://127.0.0.1:PORT`, for `--aws-endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes the throttled share from now on.
    pub fn set_share(&self, share: f64) {
        self.state.share_ppm.store(ppm(share), Ordering::SeqCst);
    }

    /// Calls so far, by action.
    pub fn counts(&self) -> BTreeMap<String, Counts> {
        self.state.counts.lock().unwrap().clone()
    }

    /// Calls so far, all actions together.
    pub fn total(&self) -> Counts {
        self.counts()
            .values()
            .fold(Counts::default(), |a, c| Counts {
                forwarded: a.forwarded + c.forwarded,
                throttled: a.throttled + c.throttled,
                server_errors: a.server_errors + c.server_errors,
            })
    }

    /// Forgets the counts (the throttling pattern goes on where it was).
    pub fn reset_counts(&self) {
        self.state.counts.lock().unwrap().clear();
    }
}

impl Drop for ThrottleProxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor.
        let _ = TcpStream::connect(self.addr);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

/// One request: its head as received (lines without CRLF), and its body.
struct Request {
    lines: Vec<String>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.lines.iter().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The form parameter `key` (Query API actions are short ASCII names).
    fn param(&self, key: &str) -> Option<String> {
        let body = String::from_utf8_lossy(&self.body);
        let query = self.lines[0]
            .split_whitespace()
            .nth(1)
            .and_then(|t| t.split_once('?'))
            .map(|(_, q)| q.to_string())
            .unwrap_or_default();
        body.split('&')
            .chain(query.split('&'))
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=').map(str::to_string))
    }

    /// `ec2` or `elbv2`, from the API version or the signature's credential scope.
    fn api(&self) -> &'static str {
        let version = self.param("Version").unwrap_or_default();
        let auth = self.header("authorization").unwrap_or("");
        if version == "2016-11-15" || auth.contains("/ec2/") {
            "ec2"
        } else {
            "elbv2"
        }
    }
}

fn read_request(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let mut lines = Vec::new();
    let mut head = 0usize;
    loop {
        let mut line = String::new();
        let n = r.by_ref().take(64 * 1024).read_line(&mut line)?;
        if n == 0 {
            return Ok(None);
        }
        head += n;
        if head > MAX_REQUEST_BYTES {
            return Err(std::io::Error::other("request head too large"));
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            if lines.is_empty() {
                continue;
            }
            break;
        }
        lines.push(line);
    }
    let mut req = Request {
        lines,
        body: Vec::new(),
    };
    if req
        .header("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        return Err(std::io::Error::other("chunked requests are not supported"));
    }
    let len: usize = req
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if len > MAX_REQUEST_BYTES {
        return Err(std::io::Error::other("request body too large"));
    }
    req.body = vec![0; len];
    r.read_exact(&mut req.body)?;
    Ok(Some(req))
}

fn throttled_answer(api: &str, request_id: u64) -> (u16, &'static str, String) {
    if api == "ec2" {
        (
            503,
            "Service Unavailable",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>throttle-{request_id}</RequestID></Response>"
            ),
        )
    } else {
        (
            400,
            "Bad Request",
            format!(
                "<ErrorResponse xmlns=\"http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/\">\n  <Error>\n    <Type>Sender</Type>\n    <Code>Throttling</Code>\n    <Message>Rate exceeded</Message>\n  </Error>\n  <RequestId>throttle-{request_id}</RequestId>\n</ErrorResponse>\n"
            ),
        )
    }
}

/// Answers one request on `conn`, then closes it.
fn serve(st: &State, conn: TcpStream) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut client = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    let Some(req) = read_request(&mut r)? else {
        return Ok(());
    };
    let action = req.param("Action").unwrap_or_else(|| "(none)".into());
    let throttle = {
        let mut counts = st.counts.lock().unwrap();
        let c = counts.entry(action.clone()).or_default();
        let n = c.forwarded + c.throttled;
        let t = throttles(st.seed, &action, n, st.share_ppm.load(Ordering::SeqCst));
        if t {
            c.throttled += 1;
        } else {
            c.forwarded += 1;
        }
        t
    };
    if throttle {
        let id = st.request_ids.fetch_add(1, Ordering::SeqCst);
        let (status, reason, body) = throttled_answer(req.api(), id);
        write!(
            client,
            "HTTP/1.1 {status} {reason}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        return client.flush();
    }
    // Forward with `Connection: close`, so moto's answer ends at EOF.
    let mut up = TcpStream::connect(st.upstream)?;
    up.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut head = String::new();
    head.push_str(&req.lines[0]);
    head.push_str("\r\n");
    for l in req.lines.iter().skip(1) {
        let name = l.split(':').next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("connection") || name.eq_ignore_ascii_case("keep-alive") {
            continue;
        }
        head.push_str(l);
        head.push_str("\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    up.write_all(head.as_bytes())?;
    up.write_all(&req.body)?;
    up.flush()?;
    let mut answer = Vec::new();
    up.take(MAX_ANSWER_BYTES).read_to_end(&mut answer)?;
    // Tell the client too that the connection ends with this answer.
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("moto's answer has no head"))?;
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let server_error = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .is_some_and(|code| code >= 500);
    if server_error {
        let mut counts = st.counts.lock().unwrap();
        counts.entry(action).or_default().server_errors += 1;
    }
    let mut out = String::new();
    for l in head.split("\r\n") {
        let name = l.split(':').next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("connection") || name.eq_ignore_ascii_case("keep-alive") {
            continue;
        }
        out.push_str(l);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    client.write_all(out.as_bytes())?;
    client.write_all(&answer[split + 4..])?;
    client.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_is_seeded_and_near_the_share() {
        let n = 10_000;
        let hits = (0..n)
            .filter(|i| throttles(7, "DescribeTags", *i, 300_000))
            .count();
        assert!((2_700..3_300).contains(&hits), "{hits} of {n}");
        let a: Vec<bool> = (0..200)
            .map(|i| throttles(7, "CreateListener", i, 300_000))
            .collect();
        let b: Vec<bool> = (0..200)
            .map(|i| throttles(7, "CreateListener", i, 300_000))
            .collect();
        let c: Vec<bool> = (0..200)
            .map(|i| throttles(8, "CreateListener", i, 300_000))
            .collect();
        assert_eq!(a, b, "same seed, same pattern");
        assert_ne!(a, c, "another seed, another pattern");
        assert!((0..1000).all(|i| !throttles(7, "X", i, 0)));
        assert!((0..1000).all(|i| throttles(7, "X", i, 1_000_000)));
    }

    /// An upstream that answers every request with a fixed 200, except `Action=Fail`, which
    /// gets a 500.
    fn upstream() -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { continue };
                let mut w = c.try_clone().unwrap();
                let mut r = BufReader::new(c);
                let Some(req) = read_request(&mut r).ok().flatten() else {
                    continue;
                };
                let _ = if req.param("Action").as_deref() == Some("Fail") {
                    w.write_all(
                        b"HTTP/1.1 500 INTERNAL SERVER ERROR\r\nContent-Length: 2\r\n\r\nno",
                    )
                } else {
                    w.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok",
                    )
                };
            }
        });
        format!("http://{addr}")
    }

    fn call(proxy: &ThrottleProxy, body: &str) -> (u16, String) {
        let mut s = TcpStream::connect(proxy.addr).unwrap();
        write!(
            s,
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let status = out[9..12].parse().unwrap();
        (status, out)
    }

    #[test]
    fn throttles_with_aws_errors_and_counts_by_action() {
        let proxy = ThrottleProxy::start(&upstream(), 1.0, 1);
        let (status, out) = call(&proxy, "Action=DescribeLoadBalancers&Version=2015-12-01");
        assert_eq!(status, 400);
        assert!(out.contains("<Code>Throttling</Code>"), "{out}");
        let (status, out) = call(&proxy, "Action=DescribeSubnets&Version=2016-11-15");
        assert_eq!(status, 503);
        assert!(out.contains("<Code>RequestLimitExceeded</Code>"), "{out}");
        proxy.set_share(0.0);
        let (status, out) = call(&proxy, "Action=DescribeSubnets&Version=2016-11-15");
        assert_eq!(status, 200);
        assert!(
            out.contains("Connection: close") && out.ends_with("ok"),
            "{out}"
        );
        let counts = proxy.counts();
        assert_eq!(
            counts["DescribeSubnets"],
            Counts {
                forwarded: 1,
                throttled: 1,
                server_errors: 0,
            }
        );
        assert_eq!(counts["DescribeLoadBalancers"].throttled, 1);
        assert_eq!(proxy.total().forwarded, 1);
        // moto's own server errors are passed on and counted apart.
        let (status, _) = call(&proxy, "Action=Fail&Version=2016-11-15");
        assert_eq!(status, 500);
        assert_eq!(
            proxy.counts()["Fail"],
            Counts {
                forwarded: 1,
                throttled: 0,
                server_errors: 1,
            }
        );
    }
}
