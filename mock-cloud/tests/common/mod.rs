//! Shared helpers for mock-cloud's end-to-end tests: start `mock-cloud serve` as a user
//! would, run the real kubectl against it, and poll with deadlines.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh scratch directory for one test.
pub fn scratch_dir(tag: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("mock-cloud-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// `kubectl` must be installed: a missing one fails the test loudly rather than skipping.
pub fn kubectl_path() -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", "command -v kubectl"])
        .output()
        .expect("run sh");
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        !p.is_empty(),
        "kubectl is required for this test and was not found on PATH"
    );
    PathBuf::from(p)
}

/// A `mock-cloud serve` process.
pub struct Served {
    child: Child,
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub url: String,
    pub addr: String,
    /// The load balancer API's URL, when started with `--lb-api-listen`.
    pub lb_url: Option<String>,
}

impl Served {
    pub fn start(nodes: usize, extra: &[&str]) -> Served {
        let dir = scratch_dir("serve");
        let kubeconfig = dir.join("kubeconfig");
        let mut child = Command::new(env!("CARGO_BIN_EXE_mock-cloud"))
            .args([
                "serve",
                "--nodes",
                &nodes.to_string(),
                "--listen",
                "127.0.0.1:0",
            ])
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start mock-cloud serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut url = None;
        let mut lb_url = None;
        for line in lines.by_ref() {
            let line = line.expect("read mock-cloud output");
            if let Some(u) = line.strip_prefix("mock-cloud: API server listening on ") {
                url = Some(u.trim().to_string());
            }
            if let Some(u) = line.strip_prefix("mock-cloud: load balancer API listening on ") {
                lb_url = Some(u.trim().to_string());
            }
            if line.contains("fault injection at") {
                break;
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let url = url.expect("mock-cloud printed its address");
        let addr = url.trim_start_matches("http://").to_string();
        Served {
            child,
            dir,
            kubeconfig,
            url,
            addr,
            lb_url,
        }
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(kubectl_path())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl")
    }

    /// Runs kubectl and returns stdout, failing the test (with stderr) on a non-zero exit.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {:?} failed: {}{}",
            args,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn kubectl_spawn(&self, args: &[&str]) -> Child {
        Command::new(kubectl_path())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kubectl")
    }

    /// Writes a manifest into the scratch dir and returns its path.
    pub fn manifest(&self, name: &str, yaml: &str) -> String {
        let p = self.dir.join(name);
        std::fs::write(&p, yaml).expect("write manifest");
        p.to_string_lossy().into_owned()
    }

    /// A raw HTTP/1.1 request to the API server: (status code, body).
    pub fn raw(&self, method: &str, path: &str, content_type: &str, body: &[u8]) -> (u16, String) {
        raw_http(&self.addr, method, path, content_type, body)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_dir_all(&self.dir);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw HTTP/1.1 request: (status code, body); a transport failure fails the test.
pub fn raw_http(
    addr: &str,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> (u16, String) {
    let req = mock_cloud::testing::Request {
        content_type,
        ..mock_cloud::testing::Request::json(method, path, body)
    };
    mock_cloud::testing::http(addr, &req).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Polls `f` until it returns Some, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
