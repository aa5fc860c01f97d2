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

use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
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
// mock-cloud
// ---------------------------------------------------------------------------------------

/// A `mock-cloud serve` process with its API server, nodes and load balancer API.
pub struct Cloud {
    pub proc: Proc,
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    /// API server `host:port`.
    pub api: String,
    /// Load balancer API `host:port`.
    pub lb: String,
    /// The X of the 127.X.0.0/16 block.
    pub ip_block: u8,
}

impl Cloud {
    /// `mock-cloud serve --nodes 3 --listen 127.0.0.1:0 --lb-api-listen 127.0.0.1:0 --kubeconfig K`.
    pub fn start(tag: &str) -> Cloud {
        kubectl_path();
        let dir = scratch_dir(tag);
        let kubeconfig = dir.join("kubeconfig");
        let mut cmd = Command::new(binary("mock-cloud"));
        cmd.args(["serve", "--nodes", "3", "--listen", "127.0.0.1:0"])
            .args(["--lb-api-listen", "127.0.0.1:0"])
            .arg("--kubeconfig")
            .arg(&kubeconfig);
        let mut proc = Proc::spawn(
            &format!("mock-cloud[{tag}]"),
            cmd,
            dir.join("mock-cloud.log"),
        );
        let startup = Duration::from_secs(30);
        proc.wait_for_line("mock-cloud: fault injection at", startup);
        let text = proc.output();
        let after = |prefix: &str| -> String {
            text.lines()
                .find_map(|l| l.strip_prefix(prefix))
                .unwrap_or_else(|| panic!("mock-cloud did not print {prefix:?}:\n{text}"))
                .trim()
                .trim_start_matches("http://")
                .to_string()
        };
        let api = after("mock-cloud: API server listening on ");
        let lb = after("mock-cloud: load balancer API listening on ");
        let block = after("mock-cloud: nodes, pods and load balancers live in 127.");
        let ip_block = block
            .split('.')
            .next()
            .and_then(|b| b.parse().ok())
            .expect("block number");
        Cloud {
            proc,
            dir,
            kubeconfig,
            api,
            lb,
            ip_block,
        }
    }

    pub fn lb_url(&self) -> String {
        format!("http://{}", self.lb)
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(kubectl_path())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl")
    }

    /// Runs kubectl; stdout on success, Err(stderr) otherwise.
    pub fn try_kubectl(&self, args: &[&str]) -> Result<String, String> {
        let out = self.kubectl(args);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Runs kubectl, failing the test (with its output) on a non-zero exit.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        self.try_kubectl(args)
            .unwrap_or_else(|e| panic!("kubectl {args:?} failed: {e}"))
    }

    /// Writes `objects` as a List into the scratch dir and returns the file.
    pub fn manifest(&self, objects: &[Value]) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = self.dir.join(format!("manifest-{n}.json"));
        let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
        std::fs::write(&p, serde_json::to_vec_pretty(&list).expect("json")).expect("write");
        p.to_string_lossy().into_owned()
    }

    /// `kubectl apply -f` of these objects.
    pub fn apply(&self, objects: &[Value]) {
        let f = self.manifest(objects);
        self.kubectl_ok(&["apply", "-f", &f]);
    }

    /// `kubectl apply -f`, retried until it succeeds (for use while faults are injected).
    pub fn apply_retrying(&self, objects: &[Value]) {
        let f = self.manifest(objects);
        wait_for("kubectl apply to succeed", Duration::from_secs(60), || {
            self.try_kubectl(&["apply", "-f", &f]).ok()
        });
    }

    /// `kubectl get KIND NAME -o json`: Ok(None) when NotFound.
    pub fn try_get(&self, kind: &str, name: &str) -> Result<Option<Value>, String> {
        match self.try_kubectl(&["get", kind, name, "-o", "json"]) {
            Ok(s) => serde_json::from_str(&s)
                .map(Some)
                .map_err(|e| e.to_string()),
            Err(e) if e.contains("NotFound") || e.contains("not found") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `kubectl get KIND NAME -o json`; None when NotFound, panics on other errors.
    pub fn get(&self, kind: &str, name: &str) -> Option<Value> {
        self.try_get(kind, name)
            .unwrap_or_else(|e| panic!("kubectl get {kind} {name}: {e}"))
    }

    pub fn service(&self, name: &str) -> Option<Value> {
        self.get("service", name)
    }

    /// `kubectl get KIND -l SELECTOR -o json` items.
    pub fn list(&self, kind: &str, selector: &str) -> Result<Vec<Value>, String> {
        let s = self.try_kubectl(&["get", kind, "-l", selector, "-o", "json"])?;
        let v: Value = serde_json::from_str(&s).map_err(|e| e.to_string())?;
        Ok(v["items"].as_array().cloned().unwrap_or_default())
    }

    /// Events about the object `name`
    /// (`kubectl get events --field-selector involvedObject.name=NAME -o json`).
    pub fn events(&self, name: &str) -> Vec<Value> {
        let sel = format!("involvedObject.name={name}");
        let s = self.kubectl_ok(&["get", "events", "--field-selector", &sel, "-o", "json"]);
        let v: Value = serde_json::from_str(&s).expect("events JSON");
        v["items"].as_array().cloned().unwrap_or_default()
    }

    /// The reasons of the events about `name`.
    pub fn event_reasons(&self, name: &str) -> Vec<String> {
        self.events(name)
            .iter()
            .filter_map(|e| e["reason"].as_str().map(str::to_string))
            .collect()
    }

    /// Waits until the Service has an ingress IP; returns it.
    pub fn wait_address(&self, name: &str) -> Ipv4Addr {
        wait_for(
            &format!("Service {name} to get a load balancer address"),
            DEADLINE,
            || {
                self.try_get("service", name)
                    .ok()
                    .flatten()
                    .as_ref()
                    .and_then(ingress_ip)
            },
        )
    }

    /// Waits until the Pod is Running and Ready.
    pub fn wait_pod_ready(&self, name: &str) {
        wait_for(&format!("pod {name} to be ready"), DEADLINE, || {
            let p = self.try_get("pod", name).ok().flatten()?;
            let ready = p["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            ready.then_some(())
        });
    }

    // --- the load balancer API -----------------------------------------------------

    /// A request to the load balancer API, retried on injected faults (429/5xx).
    fn lb_call(&self, method: &str, path: &str) -> (u16, String) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match http(&self.lb, method, path, None) {
                Ok((c, b)) if c != 429 && c < 500 => return (c, b),
                other => assert!(
                    Instant::now() < deadline,
                    "{method} {path} on the LB API keeps failing: {other:?}"
                ),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `GET /v1/loadbalancers`: every load balancer.
    pub fn lbs(&self) -> Vec<Value> {
        let (c, b) = self.lb_call("GET", "/v1/loadbalancers");
        assert_eq!(c, 200, "list load balancers: {b}");
        let v: Value = serde_json::from_str(&b).expect("LB list JSON");
        v["items"].as_array().cloned().unwrap_or_default()
    }

    /// `GET /v1/loadbalancers/{id}`: None on 404.
    pub fn lb(&self, id: &str) -> Option<Value> {
        let (c, b) = self.lb_call("GET", &format!("/v1/loadbalancers/{id}"));
        match c {
            200 => Some(serde_json::from_str(&b).expect("LB JSON")),
            404 => None,
            _ => panic!("GET load balancer {id}: {c} {b}"),
        }
    }

    /// The load balancer berth made for Service `name` (by its ownership labels).
    pub fn lb_for(&self, name: &str) -> Option<Value> {
        self.lbs()
            .into_iter()
            .find(|l| l["spec"]["labels"]["berth.io/service-name"] == name)
    }

    /// Waits for the load balancer of Service `name`; returns its id.
    pub fn wait_lb_for(&self, name: &str) -> String {
        let lb = wait_for(
            &format!("a load balancer for Service {name}"),
            DEADLINE,
            || self.lb_for(name),
        );
        lb["id"].as_str().expect("id").to_string()
    }

    /// `DELETE /v1/loadbalancers/{id}` behind berth's back.
    pub fn lb_delete(&self, id: &str) {
        let (c, b) = self.lb_call("DELETE", &format!("/v1/loadbalancers/{id}"));
        assert!(c == 200 || c == 204, "DELETE load balancer {id}: {c} {b}");
    }

    /// The LB API's counters (`puts`, `writes`, `writesById`, ...).
    pub fn lb_stats(&self) -> Value {
        http_json(&self.lb, "GET", "/mock-cloud/v1/stats", None)
    }

    /// Writes to one load balancer so far.
    pub fn lb_writes(&self, id: &str) -> u64 {
        self.lb_stats()["writesById"][id].as_u64().unwrap_or(0)
    }

    /// The API server's counters (`requests`, `writes`, `verbs`, ...).
    pub fn api_stats(&self) -> Value {
        http_json(&self.api, "GET", "/mock-cloud/v1/stats", None)
    }

    /// Sets the API server's faults (a FaultConfig; `{}` clears).
    pub fn set_api_faults(&self, cfg: Value) {
        http_json(&self.api, "PUT", "/mock-cloud/v1/faults", Some(&cfg));
    }

    /// Sets the load balancer API's faults (a FaultConfig; `{}` clears).
    pub fn set_lb_faults(&self, cfg: Value) {
        http_json(&self.lb, "PUT", "/mock-cloud/v1/faults", Some(&cfg));
    }
}

impl Drop for Cloud {
    /// Stops mock-cloud; keeps the scratch directory (logs, manifests) only when the test
    /// failed.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("scratch directory kept: {}", self.dir.display());
            return;
        }
        self.proc.stop(Duration::from_secs(10));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Target names of a load balancer as berth wrote them (`spec.targets[].name`), sorted.
pub fn lb_targets(lb: &Value) -> Vec<String> {
    let mut v: Vec<String> = lb["spec"]["targets"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Targets the load balancer's health checks consider healthy, sorted.
pub fn lb_healthy_targets(lb: &Value) -> Vec<String> {
    let mut v: Vec<String> = lb["status"]["targets"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|t| t["healthy"] == true)
                .filter_map(|t| t["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------
// berth controller
// ---------------------------------------------------------------------------------------

/// A `berth controller --provider http` process.
pub struct Controller {
    pub proc: Proc,
    pub identity: String,
    /// `host:port` of /metrics, /healthz, /readyz.
    pub admin: String,
}

impl Controller {
    /// `berth controller --kubeconfig K --provider http --http-endpoint URL --cluster-name
    /// CLUSTER --identity ID --metrics-listen 127.0.0.1:0 --leader-elect-namespace default
    /// --resync 5s --gc-interval 2s EXTRA...`
    pub fn start(cloud: &Cloud, cluster: &str, identity: &str, extra: &[&str]) -> Controller {
        Controller::start_with_endpoint(cloud, &cloud.lb_url(), cluster, identity, extra)
    }

    /// [`Controller::start`] with another load balancer API than `cloud`'s.
    pub fn start_with_endpoint(
        cloud: &Cloud,
        endpoint: &str,
        cluster: &str,
        identity: &str,
        extra: &[&str],
    ) -> Controller {
        let mut cmd = Command::new(binary("berth"));
        cmd.arg("controller")
            .arg("--kubeconfig")
            .arg(&cloud.kubeconfig)
            .args(["--provider", "http", "--http-endpoint", endpoint])
            .args(["--cluster-name", cluster, "--identity", identity])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .args(["--leader-elect-namespace", "default"])
            .args(["--resync", "5s", "--gc-interval", "2s"])
            .args(extra)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG");
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let mut proc = Proc::spawn(
            &format!("berth[{identity}]"),
            cmd,
            cloud.dir.join(format!("berth-{identity}-{n}.log")),
        );
        let line = proc.wait_for_line("Serving /metrics", Duration::from_secs(30));
        let admin = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("address="))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        Controller {
            proc,
            identity: identity.into(),
            admin,
        }
    }

    /// The /metrics text.
    pub fn metrics(&self) -> Option<String> {
        match http(&self.admin, "GET", "/metrics", None) {
            Ok((200, b)) => Some(b),
            _ => None,
        }
    }

    /// One unlabelled sample from /metrics.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let text = self.metrics()?;
        text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == name).then(|| v.trim().parse().ok()).flatten()
        })
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// SIGKILL (a crash): no chance to release the lease or finish anything.
    pub fn crash(&mut self) {
        self.proc.kill();
    }

    /// SIGTERM and wait (a clean shutdown); returns the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.proc.stop(Duration::from_secs(15))
    }
}

/// The holder of the leader Lease of berth's default http class (`berth.io/http`) in
/// `default`, if any.
pub fn lease_holder(cloud: &Cloud) -> Option<String> {
    let l = cloud
        .try_get("lease", "berth-berth.io.http")
        .ok()
        .flatten()?;
    l["spec"]["holderIdentity"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

// ---------------------------------------------------------------------------------------
// Ownership, cluster identity and fencing (issue 9): see `safety_harness`
// ---------------------------------------------------------------------------------------

pub mod safety_harness;
