//! [`Controller`]: a `berth controller --provider http` process pointed at a [`Cloud`].

use crate::*;
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

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

/// `berth controller --provider l2` against `cloud` (no leader election, 5 s resync): the
/// process and its /metrics address.
pub fn start_l2_controller(cloud: &Cloud, identity: &str) -> (Proc, String) {
    let mut cmd = Command::new(binary("berth"));
    cmd.arg("controller")
        .arg("--kubeconfig")
        .arg(&cloud.kubeconfig)
        .args(["--provider", "l2", "--cluster-name", identity])
        .args(["--identity", identity, "--metrics-listen", "127.0.0.1:0"])
        .args(["--leader-elect", "false", "--resync", "5s"])
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG");
    let mut proc = Proc::spawn(
        &format!("berth[{identity}]"),
        cmd,
        cloud.dir.join(format!("berth-{identity}.log")),
    );
    let line = proc.wait_for_line("Serving /metrics", Duration::from_secs(60));
    let admin = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("address="))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    (proc, admin)
}

/// Applies berth's CRDs from deploy/ and waits until IPAddressPools are served.
pub fn install_berth_crds(cloud: &Cloud) {
    let crds =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds/berth.io_crds.yaml");
    cloud.kubectl_ok(&["apply", "-f", crds.to_str().expect("utf-8 path")]);
    wait_for("the IPAddressPool resource to be served", DEADLINE, || {
        cloud.try_kubectl(&["get", "ipaddresspools"]).ok()
    });
}
