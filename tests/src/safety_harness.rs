//! Helpers for the ownership, cluster-identity and fencing tests (`tests/tests/safety.rs`).
//!
//! Every write is attributed from outside berth: each replica gets its own kubeconfig (its
//! own bearer token) and its own `--http-token-file`, and mock-cloud's audit logs
//! (`GET /mock-cloud/v1/audit` on the API server and on the load balancer API) record the
//! token of every write with the time it arrived.

use crate::{Cloud, Controller, Proc, binary, http_json, tcp_service};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use crate::LEGACY_FINALIZER;

/// Milliseconds since the Unix epoch (mock-cloud's audit clock; same machine).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One audited write request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub seq: u64,
    /// API server: `create`, `update`, `patch`, `delete`, ...; LB API: `put`, `delete`.
    pub verb: String,
    pub path: String,
    pub token: String,
    pub received_ms: u64,
    pub completed_ms: Option<u64>,
    pub code: Option<u16>,
}

impl Write {
    fn parse(v: &Value) -> Write {
        Write {
            seq: v["seq"].as_u64().unwrap_or(0),
            verb: v["verb"].as_str().unwrap_or_default().into(),
            path: v["path"].as_str().unwrap_or_default().into(),
            token: v["token"].as_str().unwrap_or_default().into(),
            received_ms: v["receivedMs"].as_u64().unwrap_or(0),
            completed_ms: v["completedMs"].as_u64(),
            code: v["code"].as_u64().map(|c| c as u16),
        }
    }

    /// Answered with a 2xx.
    pub fn succeeded(&self) -> bool {
        self.code.is_some_and(|c| (200..300).contains(&c))
    }

    /// A write to a Lease.
    pub fn is_lease(&self) -> bool {
        self.path.contains("/leases/") || self.path.ends_with("/leases")
    }
}

impl std::fmt::Display for Write {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} by {:?} at {} → {}",
            self.verb,
            self.path,
            self.token,
            self.received_ms,
            self.code.map_or("in flight".into(), |c| c.to_string())
        )
    }
}

fn audit(addr: &str) -> Vec<Write> {
    let v = http_json(addr, "GET", "/mock-cloud/v1/audit", None);
    assert_eq!(
        v["dropped"].as_u64().unwrap_or(0),
        0,
        "the audit log of {addr} overflowed"
    );
    v["items"]
        .as_array()
        .map(|a| a.iter().map(Write::parse).collect())
        .unwrap_or_default()
}

/// Every write the Kubernetes API server received, oldest first.
pub fn api_writes(cloud: &Cloud) -> Vec<Write> {
    audit(&cloud.api)
}

/// Every PUT and DELETE the load balancer API at `lb` (`host:port`) received, oldest first.
pub fn lb_api_writes(lb: &str) -> Vec<Write> {
    audit(lb)
}

/// DELETE requests the load balancer API at `lb` received, per load balancer id.
pub fn lb_deletes(lb: &str) -> Vec<(String, u64)> {
    let s = http_json(lb, "GET", "/mock-cloud/v1/stats", None);
    s["deletesById"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

/// Every load balancer at the load balancer API `lb`.
pub fn lbs_at(lb: &str) -> Vec<Value> {
    http_json(lb, "GET", "/v1/loadbalancers", None)["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The load balancer for Service `name` at `lb`, by berth's ownership label.
pub fn lb_of(lb: &str, name: &str) -> Option<Value> {
    lbs_at(lb)
        .into_iter()
        .find(|l| l["spec"]["labels"]["berth.io/service-name"] == name)
}

/// A label of a load balancer.
pub fn lb_label(lb: &Value, key: &str) -> Option<String> {
    lb["spec"]["labels"][key].as_str().map(str::to_string)
}

/// The Leases in `default` as (name, holder).
pub fn leases(cloud: &Cloud) -> Vec<(String, String)> {
    let Ok(s) = cloud.try_kubectl(&["get", "leases", "-n", "default", "-o", "json"]) else {
        return Vec::new();
    };
    let v: Value = serde_json::from_str(&s).unwrap_or_default();
    v["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|l| {
                    (
                        l["metadata"]["name"].as_str().unwrap_or_default().into(),
                        l["spec"]["holderIdentity"]
                            .as_str()
                            .unwrap_or_default()
                            .into(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The holder of Lease `name` in `default`, if held.
pub fn holder_of(cloud: &Cloud, name: &str) -> Option<String> {
    leases(cloud)
        .into_iter()
        .find(|(n, h)| n == name && !h.is_empty())
        .map(|(_, h)| h)
}

/// berth's finalizers on an object (`berth.io/...`).
pub fn berth_finalizers(obj: &Value) -> Vec<String> {
    crate::finalizers(obj)
        .into_iter()
        .filter(|f| f.starts_with("berth.io/"))
        .collect()
}

/// The uid of the `kube-system` Namespace.
pub fn kube_system_uid(cloud: &Cloud) -> String {
    let ns = cloud
        .get("namespace", "kube-system")
        .expect("mock-cloud creates kube-system");
    crate::uid_of(&ns)
}

/// A one-port LoadBalancer Service with `spec.loadBalancerClass: class` (None: no class).
pub fn class_service(name: &str, class: Option<&str>) -> Value {
    let mut s = tcp_service(name, name, 80);
    if let Some(c) = class {
        s["spec"]["loadBalancerClass"] = json!(c);
    }
    s
}

/// The `metadata.resourceVersion` of a Service (None if it is gone).
pub fn service_rv(cloud: &Cloud, name: &str) -> Option<String> {
    let s = cloud.try_get("service", name).ok().flatten()?;
    s["metadata"]["resourceVersion"]
        .as_str()
        .map(str::to_string)
}

/// Writes `contents` to `dir/name`; returns the path.
pub fn write_file(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    p
}

/// A copy of the cloud's kubeconfig whose user sends `token` (mock-cloud without `--rbac`
/// accepts any token and records it in its audit log).
pub fn kubeconfig_with_token(cloud: &Cloud, token: &str) -> PathBuf {
    let text = std::fs::read_to_string(&cloud.kubeconfig).expect("read kubeconfig");
    let mut v: Value = serde_json::from_str(&text).expect("mock-cloud writes JSON kubeconfigs");
    v["users"][0]["user"]["token"] = json!(token);
    write_file(
        &cloud.dir,
        &format!("kubeconfig-{token}"),
        &serde_json::to_string_pretty(&v).expect("json"),
    )
}

/// A `berth controller` replica that writes with its own tokens: `--identity`, the
/// kubeconfig token and the http provider's bearer token are all `token`.
pub struct Replica {
    token: String,
    kubeconfig: PathBuf,
    lease_namespace: String,
    args: Vec<String>,
}

/// Lease timings of the fencing test: lease 4 s, renew deadline 3 s, retry 1 s.
pub const SHORT_LEASE: [&str; 6] = [
    "--leader-elect-lease-duration",
    "4s",
    "--leader-elect-renew-deadline",
    "3s",
    "--leader-elect-retry-period",
    "1s",
];

impl Replica {
    /// `berth controller --kubeconfig K(token) --identity TOKEN --metrics-listen 127.0.0.1:0
    /// --leader-elect-namespace default`, nothing else.
    pub fn bare(cloud: &Cloud, token: &str) -> Replica {
        let kubeconfig = kubeconfig_with_token(cloud, token);
        Replica {
            token: token.into(),
            kubeconfig,
            lease_namespace: "default".into(),
            args: Vec::new(),
        }
        .args(&["--identity", token, "--metrics-listen", "127.0.0.1:0"])
    }

    /// `--leader-elect-namespace NS` instead of `default`.
    pub fn lease_namespace(mut self, ns: &str) -> Replica {
        self.lease_namespace = ns.into();
        self
    }

    /// [`Replica::bare`] plus `--provider http --http-endpoint URL --http-token-file F`
    /// (F holds `token`).
    pub fn http(cloud: &Cloud, token: &str, endpoint: &str) -> Replica {
        let token_file = write_file(&cloud.dir, &format!("lb-token-{token}"), token);
        Replica::bare(cloud, token)
            .args(&["--provider", "http", "--http-endpoint", endpoint])
            .arg("--http-token-file")
            .arg(&token_file.to_string_lossy())
    }

    pub fn arg(mut self, a: &str) -> Replica {
        self.args.push(a.into());
        self
    }

    pub fn args(mut self, a: &[&str]) -> Replica {
        self.args.extend(a.iter().map(|s| s.to_string()));
        self
    }

    /// Starts it and waits until it serves /metrics (panics with its log if it exits).
    pub fn start(self, cloud: &Cloud) -> Controller {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let mut cmd = Command::new(binary("berth"));
        cmd.arg("controller")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(&self.args)
            .args(["--leader-elect-namespace", &self.lease_namespace])
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG");
        let mut proc = Proc::spawn(
            &format!("berth[{}]", self.token),
            cmd,
            cloud.dir.join(format!("berth-{}-{n}.log", self.token)),
        );
        let line = proc.wait_for_line("Serving /metrics", Duration::from_secs(30));
        let admin = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("address="))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        Controller {
            proc,
            identity: self.token,
            admin,
        }
    }
}

/// Problems found by a test, reported together so one run shows every defect.
#[derive(Default)]
pub struct Findings(Vec<String>);

impl Findings {
    pub fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            let w = what();
            eprintln!("FINDING: {w}");
            self.0.push(w);
        }
    }

    pub fn add(&mut self, what: String) {
        eprintln!("FINDING: {what}");
        self.0.push(what);
    }

    /// Panics listing every finding, if any.
    pub fn assert_none(&self, test: &str) {
        assert!(
            self.0.is_empty(),
            "{test}: {} problem(s):\n  - {}",
            self.0.len(),
            self.0.join("\n  - ")
        );
    }
}

/// The id of the load balancer for Service `name` at `lb`, if any.
pub fn lb_id(lb: &str, name: &str) -> Option<String> {
    lb_of(lb, name).and_then(|l| l["id"].as_str().map(str::to_string))
}

/// The token of the first successful PUT that wrote load balancer `id`.
pub fn creator(lb: &str, id: &str) -> Option<String> {
    let path = format!("/v1/loadbalancers/{id}");
    lb_api_writes(lb)
        .into_iter()
        .find(|w| w.verb == "put" && w.path == path && w.succeeded())
        .map(|w| w.token)
}

pub fn total_deletes(lb: &str) -> u64 {
    lb_deletes(lb).iter().map(|(_, n)| n).sum()
}
