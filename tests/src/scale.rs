//! The scale scenario: one `berth controller --provider http` process against an in-process
//! mock-cloud in API-only mode (no data plane) with latency injected into every load
//! balancer API call, through the phases of a large cluster's life — cold start, restart,
//! one node added and removed, a node storm each way, a mass deletion — measuring each.
//!
//! The scenario drives mock-cloud in process (creating Services and Nodes through its core,
//! reading the load balancers from its state), so every API server request it counts is the
//! controller's own. `berth/benches/scale.rs` prints it; `tests/tests/scale.rs` asserts its
//! counts.

use mock_cloud::apiserver::{DeleteOptions, ListOptions, WriteOptions};
use mock_cloud::lbapi::{LbApi, LbStats};
use mock_cloud::{Config, MockCloud};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The size and shape of one run.
#[derive(Debug, Clone)]
pub struct ScaleConfig {
    pub services: usize,
    pub nodes: usize,
    /// Added to every load balancer API call.
    pub latency_ms: u64,
    pub workers: u16,
    /// Nodes added (then removed) in each storm.
    pub storm_nodes: usize,
    /// The time over which a storm's nodes are added (or removed), evenly.
    pub storm_window: Duration,
    /// Services deleted at once in the last phase.
    pub delete_services: usize,
    /// How long the load balancer API must stay idle before a phase counts as settled.
    pub quiet: Duration,
    /// The longest a phase may take before the run fails.
    pub phase_timeout: Duration,
    /// More `berth controller` flags.
    pub extra_args: Vec<String>,
}

impl Default for ScaleConfig {
    fn default() -> Self {
        ScaleConfig {
            services: 10_000,
            nodes: 1_000,
            latency_ms: 20,
            workers: 16,
            storm_nodes: 200,
            storm_window: Duration::from_secs(10),
            delete_services: 1_000,
            quiet: Duration::from_secs(3),
            phase_timeout: Duration::from_secs(1800),
            extra_args: Vec::new(),
        }
    }
}

/// What one phase measured.
#[derive(Debug, Clone, Default)]
pub struct Phase {
    pub name: &'static str,
    /// Until the phase's goal was reached (every Service addressed, every load balancer
    /// with the right targets, ...).
    pub took: Duration,
    /// Restart only: until the controller's /readyz answered 200.
    pub ready: Option<Duration>,
    /// Load balancer API calls over the phase, until it settled.
    pub lb_reads: u64,
    pub lb_puts: u64,
    /// PUTs that changed or created a load balancer.
    pub lb_writes: u64,
    pub lb_deletes: u64,
    /// The most writes any one load balancer received in this phase.
    pub max_writes_per_lb: u64,
    /// Load balancers written at least once.
    pub lbs_written: usize,
    /// API server requests by the controller (every one: the scenario itself uses none).
    pub api_requests: u64,
    /// Of those, writes (create, update, patch, delete).
    pub api_writes: u64,
    /// The controller's peak RSS during the phase, in KiB.
    pub controller_rss_kib: u64,
    /// This process's (mock-cloud's, mostly) peak RSS so far, in KiB.
    pub harness_rss_kib: u64,
    /// Load balancers existing at the end of the phase.
    pub load_balancers: usize,
}

impl Phase {
    /// The phase as one line of the report.
    pub fn line(&self) -> String {
        let ready = self
            .ready
            .map(|r| format!(" (ready {:.2} s)", r.as_secs_f64()))
            .unwrap_or_default();
        format!(
            "{:<22} {:>8.2} s{ready}  LB reads {:>6} puts {:>6} writes {:>6} deletes {:>5} (max {} writes/LB, {} LBs written)  API requests {:>6} (writes {:>6})  controller peak RSS {:>6.1} MiB",
            self.name,
            self.took.as_secs_f64(),
            self.lb_reads,
            self.lb_puts,
            self.lb_writes,
            self.lb_deletes,
            self.max_writes_per_lb,
            self.lbs_written,
            self.api_requests,
            self.api_writes,
            self.controller_rss_kib as f64 / 1024.0,
        )
    }
}

/// A `berth controller` child process.
struct ControllerProc {
    child: Child,
    admin: String,
}

impl ControllerProc {
    fn start(berth: &Path, kubeconfig: &Path, lb_url: &str, cfg: &ScaleConfig, log: &Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let admin = format!("127.0.0.1:{port}");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("controller log file");
        let child = Command::new(berth)
            .args(["controller", "--provider", "http", "--default-class"])
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--http-endpoint", lb_url, "--cluster-name", "scale"])
            .args(["--leader-elect", "false", "--metrics-listen", &admin])
            .args(["--resync", "30m", "--gc-interval", "30m"])
            .args(["--workers", &cfg.workers.to_string()])
            .args(&cfg.extra_args)
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting berth controller");
        ControllerProc { child, admin }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak RSS since the last [`ControllerProc::reset_peak`], in KiB.
    fn peak_rss_kib(&self) -> u64 {
        peak_rss_kib(&format!("/proc/{}/status", self.pid()))
    }

    /// Restarts the peak RSS count (`/proc/PID/clear_refs`), so each phase has its own.
    fn reset_peak(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5");
    }

    fn ready(&self) -> bool {
        crate::http(&self.admin, "GET", "/readyz", None).is_ok_and(|(code, _)| code == 200)
    }

    /// SIGTERM, then wait (SIGKILL after 10 s).
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ControllerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn peak_rss_kib(status_path: &str) -> u64 {
    std::fs::read_to_string(status_path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Counters at one instant, to diff over a phase.
struct Snapshot {
    lb: LbStats,
    api_requests: u64,
    api_writes: u64,
}

fn api_writes(mc: &MockCloud) -> u64 {
    ["create", "update", "patch", "delete", "deletecollection"]
        .iter()
        .map(|v| mc.server.verb_count(v))
        .sum()
}

fn snapshot(mc: &MockCloud, lb: &LbApi) -> Snapshot {
    Snapshot {
        lb: lb.stats(),
        api_requests: mc
            .server
            .requests
            .load(std::sync::atomic::Ordering::Relaxed),
        api_writes: api_writes(mc),
    }
}

/// A LoadBalancer Service of no class (berth serves it as the default class).
fn service(i: usize) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": format!("lb-{i}"), "namespace": "default"},
        "spec": {"type": "LoadBalancer", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
    })
}

/// One scale run: mock-cloud, the controller, and the phases in order.
pub struct Scenario {
    cfg: ScaleConfig,
    berth: PathBuf,
    dir: PathBuf,
    mc: MockCloud,
    ctl: Option<ControllerProc>,
    /// The nodes every load balancer should target.
    nodes: BTreeSet<String>,
    next_node: usize,
    pub phases: Vec<Phase>,
}

impl Scenario {
    /// Starts mock-cloud with `cfg.nodes` nodes and `cfg.services` Services (no controller
    /// yet). `berth` is the `berth` binary.
    pub async fn start(cfg: ScaleConfig, berth: PathBuf) -> anyhow::Result<Scenario> {
        let dir = crate::scratch_dir("scale");
        let kubeconfig = dir.join("kubeconfig");
        let mut mc_cfg = Config {
            nodes: cfg.nodes,
            kubeconfig: Some(kubeconfig),
            lb_api_listen: Some("127.0.0.1:0".parse()?),
            dataplane: false,
            ..Default::default()
        };
        mc_cfg.core.watch_history = 200_000;
        // kube-apiserver's default NodePort range holds 2,768 ports: a cluster with more
        // LoadBalancer Services than that widens it (--service-node-port-range), as here.
        if cfg.services > 2_700 {
            mc_cfg.core.node_port_range = 20000..=32767;
        }
        let mc = MockCloud::start(mc_cfg).await?;
        let lb = mc.lb_api.as_ref().expect("LB API");
        lb.faults
            .set(mock_cloud::faults::FaultConfig {
                latency_ms: cfg.latency_ms,
                path_prefixes: vec!["/v1/".into()],
                ..Default::default()
            })
            .map_err(anyhow::Error::msg)?;
        let info = mc
            .core
            .info("", "v1", "services")
            .ok_or_else(|| anyhow::anyhow!("services are not served"))?;
        for i in 0..cfg.services {
            mc.core
                .create(&info, "default", service(i), &WriteOptions::default())
                .map_err(|e| anyhow::anyhow!("creating lb-{i}: {e:?}"))?;
        }
        let nodes = (1..=cfg.nodes).map(|i| format!("node-{i}")).collect();
        Ok(Scenario {
            next_node: cfg.nodes + 1,
            cfg,
            berth,
            dir,
            mc,
            ctl: None,
            nodes,
            phases: Vec::new(),
        })
    }

    fn lb(&self) -> &LbApi {
        self.mc.lb_api.as_ref().expect("LB API")
    }

    fn start_controller(&mut self) {
        let kubeconfig = self.mc.kubeconfig.clone().expect("kubeconfig written");
        self.ctl = Some(ControllerProc::start(
            &self.berth,
            &kubeconfig,
            &self.lb().url(),
            &self.cfg,
            &self.dir.join("berth.log"),
        ));
    }

    /// The scenario's Services (`lb-N`) with an address, and in all.
    fn addressed(&self) -> (usize, usize) {
        let Some(info) = self.mc.core.info("", "v1", "services") else {
            return (0, 0);
        };
        let Ok(list) = self
            .mc
            .core
            .list(&info, Some("default"), &ListOptions::default())
        else {
            return (0, 0);
        };
        let ours: Vec<_> = list
            .items
            .iter()
            .filter(|s| {
                s["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("lb-"))
            })
            .collect();
        let done = ours
            .iter()
            .filter(|s| {
                s["status"]["loadBalancer"]["ingress"]
                    .as_array()
                    .is_some_and(|i| !i.is_empty())
            })
            .count();
        (done, ours.len())
    }

    /// Polls `done` until it holds, then waits until the load balancer API has been idle for
    /// `cfg.quiet` (so late and extra calls are counted); returns when `done` first held.
    async fn until(
        &self,
        what: &str,
        started: Instant,
        mut done: impl FnMut(&Scenario) -> bool,
    ) -> anyhow::Result<Duration> {
        let took = loop {
            if done(self) {
                break started.elapsed();
            }
            if let Some(ctl) = &self.ctl {
                // A controller that died would never finish the phase.
                anyhow::ensure!(
                    std::path::Path::new(&format!("/proc/{}", ctl.pid())).exists(),
                    "the controller exited during {what}; see {}",
                    self.dir.join("berth.log").display()
                );
            }
            anyhow::ensure!(
                started.elapsed() < self.cfg.phase_timeout,
                "{what}: not done after {:?}: {} of {} Services addressed; {} load balancers, {} with the {} nodes expected",
                self.cfg.phase_timeout,
                self.addressed().0,
                self.addressed().1,
                self.lb().count_targeting(&self.nodes).0,
                self.lb().count_targeting(&self.nodes).1,
                self.nodes.len()
            );
            // Each look walks every load balancer under the LB API's lock: not too often.
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        self.settle().await;
        Ok(took)
    }

    /// Waits until no load balancer API call arrived for `cfg.quiet`.
    async fn settle(&self) {
        let calls = |s: &LbStats| s.gets + s.puts + s.deletes + s.lists;
        let mut last = calls(&self.lb().stats());
        let mut since = Instant::now();
        while since.elapsed() < self.cfg.quiet {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = calls(&self.lb().stats());
            if now != last {
                last = now;
                since = Instant::now();
            }
        }
    }

    fn begin(&self) -> Snapshot {
        if let Some(ctl) = &self.ctl {
            ctl.reset_peak();
        }
        snapshot(&self.mc, self.lb())
    }

    fn finish(&mut self, name: &'static str, before: Snapshot, took: Duration) -> &Phase {
        let after = snapshot(&self.mc, self.lb());
        let (b, a) = (&before.lb, &after.lb);
        let per_lb: BTreeMap<&String, u64> = a
            .writes_by_id
            .iter()
            .map(|(id, n)| (id, n - b.writes_by_id.get(id).copied().unwrap_or(0)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let phase = Phase {
            name,
            took,
            ready: None,
            lb_reads: (a.gets - b.gets) + (a.lists - b.lists),
            lb_puts: a.puts - b.puts,
            lb_writes: a.writes - b.writes,
            lb_deletes: a.deletes - b.deletes,
            max_writes_per_lb: per_lb.values().copied().max().unwrap_or(0),
            lbs_written: per_lb.len(),
            api_requests: after.api_requests - before.api_requests,
            api_writes: after.api_writes - before.api_writes,
            controller_rss_kib: self.ctl.as_ref().map_or(0, |c| c.peak_rss_kib()),
            harness_rss_kib: peak_rss_kib("/proc/self/status"),
            load_balancers: self.lb().count_targeting(&self.nodes).0,
        };
        self.phases.push(phase);
        self.phases.last().expect("just pushed")
    }

    fn every_lb_right(&self, want: usize) -> bool {
        self.lb().count_targeting(&self.nodes) == (want, want)
    }

    /// Phase 1: the controller starts with every Service waiting; until all have an address.
    pub async fn cold_start(&mut self) -> anyhow::Result<&Phase> {
        let before = snapshot(&self.mc, self.lb());
        let t0 = Instant::now();
        self.start_controller();
        let n = self.cfg.services;
        let took = self
            .until("cold start", t0, |s| {
                s.addressed() == (n, n) && s.every_lb_right(n)
            })
            .await?;
        Ok(self.finish("cold start", before, took))
    }

    /// Phase 2: the controller restarts with every load balancer in place: until it is
    /// ready and has looked at every load balancer (and settled).
    pub async fn restart(&mut self) -> anyhow::Result<&Phase> {
        if let Some(ctl) = self.ctl.take() {
            ctl.stop();
        }
        let before = snapshot(&self.mc, self.lb());
        let t0 = Instant::now();
        self.start_controller();
        let ctl = self.ctl.as_ref().expect("started");
        let ready = loop {
            if ctl.ready() {
                break t0.elapsed();
            }
            anyhow::ensure!(
                t0.elapsed() < self.cfg.phase_timeout,
                "restart: not ready after {:?}",
                self.cfg.phase_timeout
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        self.settle().await;
        let took = t0.elapsed().saturating_sub(self.cfg.quiet);
        let took = took.max(ready);
        let phase = self.finish("restart", before, took);
        let mut p = phase.clone();
        p.ready = Some(ready);
        *self.phases.last_mut().expect("pushed") = p;
        Ok(self.phases.last().expect("pushed"))
    }

    fn add_node(&mut self) -> anyhow::Result<()> {
        let name = format!("node-{}", self.next_node);
        self.next_node += 1;
        self.mc.cluster.add_node(&name)?;
        self.nodes.insert(name);
        Ok(())
    }

    fn remove_node(&mut self) -> anyhow::Result<()> {
        let name = self
            .nodes
            .iter()
            .next_back()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no node left to remove"))?;
        self.mc.cluster.delete_node(&name)?;
        self.nodes.remove(&name);
        Ok(())
    }

    async fn node_phase(
        &mut self,
        name: &'static str,
        count: usize,
        add: bool,
    ) -> anyhow::Result<&Phase> {
        let before = self.begin();
        let t0 = Instant::now();
        let gap = if count > 1 {
            self.cfg.storm_window / count as u32
        } else {
            Duration::ZERO
        };
        for i in 0..count {
            if add {
                self.add_node()?;
            } else {
                self.remove_node()?;
            }
            if i + 1 < count {
                tokio::time::sleep(gap).await;
            }
        }
        let n = self.lb().count_targeting(&self.nodes).0;
        let took = self.until(name, t0, |s| s.every_lb_right(n)).await?;
        Ok(self.finish(name, before, took))
    }

    /// Phase 3: one node added.
    pub async fn node_added(&mut self) -> anyhow::Result<&Phase> {
        self.node_phase("one node added", 1, true).await
    }

    /// Phase 4: one node removed.
    pub async fn node_removed(&mut self) -> anyhow::Result<&Phase> {
        self.node_phase("one node removed", 1, false).await
    }

    /// Phase 5: `cfg.storm_nodes` nodes added over `cfg.storm_window`.
    pub async fn storm_added(&mut self) -> anyhow::Result<&Phase> {
        let n = self.cfg.storm_nodes;
        self.node_phase("storm: nodes added", n, true).await
    }

    /// Phase 6: as many nodes removed over `cfg.storm_window`.
    pub async fn storm_removed(&mut self) -> anyhow::Result<&Phase> {
        let n = self.cfg.storm_nodes;
        self.node_phase("storm: nodes removed", n, false).await
    }

    /// Phase 7: `cfg.delete_services` Services deleted at once; until their load balancers
    /// and the Services themselves are gone.
    pub async fn mass_delete(&mut self) -> anyhow::Result<&Phase> {
        let before = self.begin();
        let info = self
            .mc
            .core
            .info("", "v1", "services")
            .ok_or_else(|| anyhow::anyhow!("services are not served"))?;
        let t0 = Instant::now();
        let k = self.cfg.delete_services.min(self.cfg.services);
        for i in 0..k {
            self.mc
                .core
                .delete(
                    &info,
                    "default",
                    &format!("lb-{i}"),
                    &DeleteOptions::default(),
                )
                .map_err(|e| anyhow::anyhow!("deleting lb-{i}: {e:?}"))?;
        }
        let left = self.cfg.services - k;
        let took = self
            .until("mass deletion", t0, |s| {
                s.lb().count_targeting(&s.nodes).0 == left && s.addressed().1 == left
            })
            .await?;
        Ok(self.finish("services deleted", before, took))
    }

    /// Every phase in order.
    pub async fn run_all(&mut self) -> anyhow::Result<()> {
        self.cold_start().await?;
        self.restart().await?;
        self.node_added().await?;
        self.node_removed().await?;
        self.storm_added().await?;
        self.storm_removed().await?;
        self.mass_delete().await?;
        Ok(())
    }

    /// Stops the controller and mock-cloud, and removes the scratch directory.
    pub async fn stop(mut self) {
        if let Some(ctl) = self.ctl.take() {
            ctl.stop();
        }
        self.mc.shutdown().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
