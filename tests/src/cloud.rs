//! [`Cloud`]: a `mock-cloud serve` process with its API server, nodes and load balancer API,
//! driven with the real kubectl.

use crate::*;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

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
