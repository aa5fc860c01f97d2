//! End-to-end harness for berth: real processes as a user runs them.
//!
//! * [`Cloud`]: a `mock-cloud serve` process (API server, simulated nodes and pods, the http
//!   provider's load balancer API), each with its own scratch directory and 127.X block.
//! * [`Controller`]: a `berth controller --provider http` process pointed at a [`Cloud`].
//! * the real `kubectl` (required: a missing one fails the test, never skips it),
//! * raw HTTP to the admin endpoints, TCP/UDP "who answers on the VIP" probes,
//!   and [`wait_for`] polling with deadlines.
//!
//! Every process is stopped (SIGTERM, then SIGKILL) and reaped when its handle drops; when a
//! test panics the tail of every process's log is printed to help diagnose it.

pub mod fake_lb;
pub mod scale;
pub mod throttle_proxy;

mod cloud;
mod controller;
pub mod warnings;
pub use cloud::*;
pub use controller::*;

use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The finalizer of berth's default http class (`berth.io/http`).
pub const FINALIZER: &str = "berth.io/cleanup.berth.io.http";
/// The finalizer every class shared before finalizers were per class.
pub const LEGACY_FINALIZER: &str = "berth.io/load-balancer-cleanup";
/// berth's condition type on a Service.
pub const CONDITION: &str = "berth.io/LoadBalancerReady";
/// The default deadline for things that should happen "soon".
pub const DEADLINE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// Binaries
// ---------------------------------------------------------------------------------------

/// `<target>/debug`: the test executable lives in `<target>/debug/deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test executable has a directory");
    if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("deps has a parent").to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf()
}

/// Builds `berth` and `mock-cloud` once per test process (only when one is missing).
fn build_binaries_once() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let res = BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        eprintln!(
            "berth-tests: building berth and mock-cloud (cargo build -p berth -p mock-cloud)"
        );
        let status = Command::new(&cargo)
            .args(["build", "-p", "berth", "-p", "mock-cloud"])
            .current_dir(workspace_root())
            .status()
            .map_err(|e| format!("cannot run {cargo}: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "cargo build -p berth -p mock-cloud failed: {status}"
            ))
        }
    });
    if let Err(e) = res {
        panic!("{e}; run `cargo build --workspace` before these tests");
    }
}

/// The path of a workspace binary (`berth`, `mock-cloud`) next to the test executable.
pub fn binary(name: &str) -> PathBuf {
    let p = profile_dir().join(name);
    if !p.exists() {
        build_binaries_once();
    }
    assert!(
        p.exists(),
        "{} not found; run `cargo build --workspace` (with the same CARGO_TARGET_DIR) first",
        p.display()
    );
    p
}

/// `kubectl` must be installed: a missing one fails the test loudly rather than skipping.
pub fn kubectl_path() -> PathBuf {
    static PATH: OnceLock<Option<PathBuf>> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("kubectl"))
                .find(|p| p.is_file())
        })
    })
    .clone()
    .expect("kubectl is required by the berth end-to-end tests and was not found on PATH")
}

// ---------------------------------------------------------------------------------------
// Scratch directories, polling
// ---------------------------------------------------------------------------------------

/// A fresh scratch directory.
pub fn scratch_dir(tag: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("berth-e2e-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Polls `f` every 100 ms until it returns Some; panics naming `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Asserts `check` holds at every poll for the whole `window` ("nothing happens" checks).
pub fn holds_for(what: &str, window: Duration, mut check: impl FnMut() -> Result<(), String>) {
    let end = Instant::now() + window;
    loop {
        if let Err(e) = check() {
            panic!("{what}: {e}");
        }
        if Instant::now() >= end {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

// ---------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------

/// PIDs of the children this test process has running, in a file a watchdog reads: if the
/// test process dies without dropping them (killed by a timeout, say), the watchdog stops
/// them, so no mock-cloud or berth outlives its test.
struct Watchdog {
    file: PathBuf,
    pids: std::sync::Mutex<BTreeSet<u32>>,
}

fn watchdog() -> &'static Watchdog {
    static W: OnceLock<Watchdog> = OnceLock::new();
    W.get_or_init(|| {
        let me = std::process::id();
        let file = std::env::temp_dir().join(format!("berth-e2e-children-{me}"));
        let _ = std::fs::write(&file, "");
        // Polls the test process; once it is gone, SIGTERM then SIGKILL what is still listed.
        let script = r#"while kill -0 "$0" 2>/dev/null; do sleep 1; done
pids=$(cat "$1" 2>/dev/null)
if [ -n "$pids" ]; then kill -TERM $pids 2>/dev/null; sleep 3; kill -KILL $pids 2>/dev/null; fi
rm -f "$1""#;
        let spawned = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(me.to_string())
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if let Err(e) = spawned {
            eprintln!("berth-tests: cannot start the child watchdog: {e}");
        }
        Watchdog {
            file,
            pids: std::sync::Mutex::default(),
        }
    })
}

impl Watchdog {
    fn update(&self, f: impl FnOnce(&mut BTreeSet<u32>)) {
        let mut pids = self.pids.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut pids);
        let text: Vec<String> = pids.iter().map(u32::to_string).collect();
        let _ = std::fs::write(&self.file, text.join(" "));
    }
}

/// A child process with its output in a log file; stopped and reaped on drop.
pub struct Proc {
    pub name: String,
    child: Child,
    exited: Option<ExitStatus>,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Proc {
        let out = std::fs::File::create(&log).expect("create log file");
        let err = out.try_clone().expect("clone log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        let pid = child.id();
        watchdog().update(|p| {
            p.insert(pid);
        });
        Proc {
            name: name.into(),
            child,
            exited: None,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal by PID (`TERM`, `KILL`, ...) with kill(1).
    pub fn signal(&self, sig: &str) {
        if self.exited.is_some() {
            return;
        }
        let _ = Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .status();
    }

    /// The exit status if the process has ended (reaping it).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none()
            && let Ok(Some(s)) = self.child.try_wait()
        {
            self.reaped(s);
        }
        self.exited
    }

    /// Waits up to `timeout` for the process to end.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exit() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; always reaps. Returns the exit status.
    pub fn stop(&mut self, grace: Duration) -> ExitStatus {
        self.signal("TERM");
        if let Some(s) = self.wait_exit(grace) {
            return s;
        }
        eprintln!(
            "{} ignored SIGTERM for {grace:?}; sending SIGKILL",
            self.name
        );
        self.kill()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) -> ExitStatus {
        self.signal("KILL");
        match self.wait_exit(Duration::from_secs(10)) {
            Some(s) => s,
            None => {
                let s = self.child.wait().expect("reap");
                self.reaped(s);
                s
            }
        }
    }

    fn reaped(&mut self, s: ExitStatus) {
        self.exited = Some(s);
        let pid = self.pid();
        watchdog().update(|p| {
            p.remove(&pid);
        });
    }

    /// Polls the log until a line contains `needle`; returns that line. Panics (with the
    /// log) if the process exits first or nothing appears within `timeout`.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.output();
            if let Some(l) = text.lines().find(|l| l.contains(needle)) {
                return l.to_string();
            }
            if let Some(s) = self.try_exit() {
                panic!(
                    "{} exited ({s}) before printing {needle:?}; its output:\n{text}",
                    self.name
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not print {needle:?} within {timeout:?}; its output:\n{text}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn dump_tail(&self, lines: usize) {
        let text = self.output();
        let all: Vec<&str> = text.lines().collect();
        let from = all.len().saturating_sub(lines);
        eprintln!(
            "----- last {} lines of {} (pid {}, {}) -----",
            all.len() - from,
            self.name,
            self.pid(),
            self.log.display()
        );
        for l in &all[from..] {
            eprintln!("{l}");
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_tail(60);
        }
        if self.try_exit().is_none() {
            self.stop(Duration::from_secs(10));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Raw HTTP
// ---------------------------------------------------------------------------------------

/// A raw HTTP/1.1 request: Ok((status code, body)) or Err on a transport failure. The one
/// raw client of the test suites (`mock_cloud::testing`), with JSON bodies.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, String), String> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = mock_cloud::testing::Request {
        accept: "application/json, text/plain",
        ..mock_cloud::testing::Request::json(method, path, body.as_bytes())
    };
    mock_cloud::testing::http(addr, &req)
}

/// GET returning parsed JSON; panics on anything but 200.
pub fn http_json(addr: &str, method: &str, path: &str, body: Option<&Value>) -> Value {
    let (code, text) =
        http(addr, method, path, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    assert_eq!(code, 200, "{method} http://{addr}{path} → {code}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: bad JSON {e}: {text}"))
}

// ---------------------------------------------------------------------------------------
// Traffic
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

/// Connects over TCP and returns what the server says (a mock pod says its name), or None.
pub fn ask_tcp(ip: Ipv4Addr, port: u16) -> Option<String> {
    let mut s =
        TcpStream::connect_timeout(&SocketAddr::from((ip, port)), Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok();
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let out = out.trim().to_string();
    (!out.is_empty()).then_some(out)
}

/// Sends one UDP datagram and returns the reply, or None after 1 s.
pub fn ask_udp(ip: Ipv4Addr, port: u16) -> Option<String> {
    let s = UdpSocket::bind("127.0.0.1:0").ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok();
    s.connect((ip, port)).ok()?;
    s.send(b"who are you?").ok()?;
    let mut buf = [0u8; 1500];
    let n = s.recv(&mut buf).ok()?;
    let out = String::from_utf8_lossy(&buf[..n]).trim().to_string();
    (!out.is_empty()).then_some(out)
}

/// Asks `ip:port` once over `proto`: the answering pod's name.
pub fn ask(proto: Proto, ip: Ipv4Addr, port: u16) -> Option<String> {
    match proto {
        Proto::Tcp => ask_tcp(ip, port),
        Proto::Udp => ask_udp(ip, port),
    }
}

/// Waits until `ip:port` answers over `proto`; returns the answering pod.
pub fn wait_answer(proto: Proto, ip: Ipv4Addr, port: u16) -> String {
    wait_for(
        &format!("{ip}:{port}/{proto:?} to answer"),
        DEADLINE,
        || ask(proto, ip, port),
    )
}

/// `n` answers in a row (None for no answer).
pub fn sample(proto: Proto, ip: Ipv4Addr, port: u16, n: usize) -> Vec<Option<String>> {
    (0..n).map(|_| ask(proto, ip, port)).collect()
}

// ---------------------------------------------------------------------------------------
// Service JSON accessors
// ---------------------------------------------------------------------------------------

/// `status.loadBalancer.ingress[0].ip`.
pub fn ingress_ip(svc: &Value) -> Option<Ipv4Addr> {
    svc.pointer("/status/loadBalancer/ingress/0/ip")?
        .as_str()?
        .parse()
        .ok()
}

/// berth's condition on the Service, if any.
pub fn condition(svc: &Value) -> Option<Value> {
    svc.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == CONDITION)
        .cloned()
}

/// `metadata.finalizers`.
pub fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub fn uid_of(obj: &Value) -> String {
    obj["metadata"]["uid"].as_str().unwrap_or_default().into()
}

// ---------------------------------------------------------------------------------------
// Manifests
// ---------------------------------------------------------------------------------------

/// A Pod serving 8080/TCP and 5353/UDP (mock-cloud's pods answer with their name).
pub fn pod(name: &str, app: &str, node: Option<&str>) -> Value {
    let mut p = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"containers": [{
            "name": "app",
            "image": "registry.example/echo:1",
            "ports": [
                {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                {"name": "dns", "containerPort": 5353, "protocol": "UDP"},
            ],
        }]},
    });
    if let Some(n) = node {
        p["spec"]["nodeName"] = json!(n);
    }
    p
}

/// A LoadBalancer Service for pods `app=<app>`: 80/TCP → 8080 and 53/UDP → 5353.
pub fn lb_service(name: &str, app: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": {"e2e": "berth"}},
        "spec": {
            "type": "LoadBalancer",
            "selector": {"app": app},
            "ports": [
                {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
                {"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP"},
            ],
        },
    })
}

/// A LoadBalancer Service with a single TCP port → 8080.
pub fn tcp_service(name: &str, app: &str, port: u16) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": {"e2e": "berth"}},
        "spec": {
            "type": "LoadBalancer",
            "selector": {"app": app},
            "ports": [{"name": "http", "port": port, "targetPort": 8080, "protocol": "TCP"}],
        },
    })
}

// ---------------------------------------------------------------------------------------
// Ownership, cluster identity and fencing (issue 9): see `safety_harness`
// ---------------------------------------------------------------------------------------

pub mod safety_harness;
