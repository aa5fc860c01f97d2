//! moto in server mode, for the aws provider's end-to-end tests and benchmark: started on a
//! free loopback port from the virtualenv `scripts/moto-venv` makes, stopped by PID on drop,
//! and read through boto3 (`tests/aws/moto_ctl.py`), independently of berth's code.
//! A missing moto fails loudly; it never skips.

use serde_json::Value;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The workspace root (every crate that includes this file sits one level below it).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// `$BERTH_VENV`, else `$CARGO_TARGET_DIR/../berth-venv`, else `<workspace>/.venv`; panics
/// with the fix when moto is not installed there.
pub fn venv() -> PathBuf {
    let dir = std::env::var_os("BERTH_VENV")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(|t| PathBuf::from(t).join("..").join("berth-venv"))
                .filter(|d| d.join("bin/moto_server").exists())
        })
        .unwrap_or_else(|| workspace().join(".venv"));
    assert!(
        dir.join("bin/moto_server").exists() && dir.join("bin/python").exists(),
        "moto is required by the aws tests and was not found in {} (BERTH_VENV); \
         run ./scripts/moto-venv to create it (pip install 'moto[server]' boto3)",
        dir.display()
    );
    dir
}

/// The instances `moto_ctl.py setup` made, as (id, availability zone).
pub fn instances(setup: &Value) -> Vec<(String, String)> {
    setup["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_string(),
                i["zone"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A running `moto_server`.
pub struct Moto {
    child: Child,
    pub endpoint: String,
    venv: PathBuf,
}

impl Moto {
    /// `moto_server -H 127.0.0.1 -p <free port>`, waiting until it accepts connections.
    pub fn start(log: &Path) -> Moto {
        let venv = venv();
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let out = std::fs::File::create(log).expect("moto log");
        // moto_server with ELBv2's documented tag quota (tests/aws/moto_server.py).
        let mut child = Command::new(venv.join("bin/python"))
            .arg(workspace().join("tests/aws/moto_server.py"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("start moto_server");
        // Ready when this moto says it listens and the port answers: a connection alone may
        // reach another process that took the port between our probe and moto's bind.
        let ready = format!("Running on http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !(std::fs::read_to_string(log).is_ok_and(|l| l.contains(&ready))
            && TcpStream::connect(("127.0.0.1", port)).is_ok())
        {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "moto_server exited ({status}) before listening on port {port}; see {}",
                    log.display()
                );
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not start listening on port {port}; see {}",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            venv,
        }
    }

    /// `moto_ctl.py ENDPOINT ARGS...` → its JSON answer.
    pub fn ctl(&self, args: &[&str]) -> Value {
        let script = workspace().join("tests/aws/moto_ctl.py");
        let out = Command::new(self.venv.join("bin/python"))
            .arg(&script)
            .arg(&self.endpoint)
            .args(args)
            .output()
            .expect("run moto_ctl.py");
        assert!(
            out.status.success(),
            "moto_ctl.py {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("moto_ctl.py JSON")
    }

    /// Every load balancer, listener, target group and target.
    pub fn state(&self) -> State {
        State(self.ctl(&["state"]))
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // Our own child, by PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// moto's state as `moto_ctl.py state` reads it.
#[derive(Debug, Clone)]
pub struct State(pub Value);

impl State {
    pub fn lbs(&self) -> Vec<Value> {
        self.0["loadBalancers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
    pub fn tgs(&self) -> Vec<Value> {
        self.0["targetGroups"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
    /// Load balancers tagged for the Service with this uid.
    pub fn lbs_of(&self, uid: &str) -> Vec<Value> {
        self.lbs()
            .into_iter()
            .filter(|l| l["tags"]["berth.io/service-uid"] == uid)
            .collect()
    }
    /// Target groups tagged for the Service with this uid.
    pub fn tgs_of(&self, uid: &str) -> Vec<Value> {
        self.tgs()
            .into_iter()
            .filter(|t| t["tags"]["berth.io/service-uid"] == uid)
            .collect()
    }
    /// Everything tagged for the Service with this uid.
    pub fn count_of(&self, uid: &str) -> usize {
        self.lbs_of(uid).len() + self.tgs_of(uid).len()
    }
}
