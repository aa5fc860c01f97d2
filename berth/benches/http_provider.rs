//! berth with the http provider at scale, against mock-cloud (API-only mode: no data plane).
//!
//! `cargo bench -p berth --bench http_provider [-- --services N --nodes N --runs N --latency-ms N]`
//!
//! For 16 workers (berth's default) and 1 worker (the upstream service controller's default),
//! in the same run: time until every Service has an address (median of runs), LB API calls,
//! the controller's peak RSS; then one node added: time until every load balancer includes it
//! and the number of LB API writes (must equal the number of load balancers).

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::{ListParams, PostParams};
use mock_cloud::{Config, MockCloud};
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Args {
    services: usize,
    nodes: usize,
    runs: usize,
    latency_ms: u64,
}

fn args() -> Args {
    let mut a = Args {
        services: 1000,
        nodes: 50,
        runs: 3,
        latency_ms: 20,
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        let v = argv.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        match (argv[i].as_str(), v) {
            ("--services", Some(v)) => a.services = v as usize,
            ("--nodes", Some(v)) => a.nodes = v as usize,
            ("--runs", Some(v)) => a.runs = v.max(1) as usize,
            ("--latency-ms", Some(v)) => a.latency_ms = v,
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

struct Controller(Child);

impl Controller {
    fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.0.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct RunResult {
    converge: Duration,
    calls: u64,
    rss_kib: u64,
    node_converge: Duration,
    node_writes: u64,
}

fn svc(i: usize) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": format!("lb-{i}")},
        "spec": {"type": "LoadBalancer", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
    }))
    .expect("valid service")
}

async fn one_run(a: &Args, workers: u16) -> anyhow::Result<RunResult> {
    let dir = std::env::temp_dir().join(format!("berth-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let kubeconfig = dir.join(format!("kubeconfig-{workers}"));
    let mut cfg = Config {
        nodes: a.nodes,
        kubeconfig: Some(kubeconfig.clone()),
        lb_api_listen: Some("127.0.0.1:0".parse()?),
        dataplane: false,
        ..Default::default()
    };
    cfg.core.watch_history = 200_000;
    let mc = MockCloud::start(cfg).await?;
    let lb = mc.lb_api.as_ref().expect("LB API");
    lb.faults
        .set(mock_cloud::faults::FaultConfig {
            latency_ms: a.latency_ms,
            path_prefixes: vec!["/v1/".into()],
            ..Default::default()
        })
        .map_err(anyhow::Error::msg)?;
    let child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["controller", "--provider", "http", "--default-class"])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--http-endpoint", &lb.url()])
        .args(["--leader-elect", "false", "--metrics-listen", "off"])
        .args(["--resync", "30m", "--gc-interval", "30m"])
        .args(["--workers", &workers.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let ctl = Controller(child);
    let client = kube::Client::try_from(kube::Config::new(mc.url().parse()?))?;
    let api: Api<Service> = Api::namespaced(client.clone(), "default");

    let t0 = Instant::now();
    let creates = futures::stream::iter(0..a.services)
        .map(|i| {
            let api = api.clone();
            async move { api.create(&PostParams::default(), &svc(i)).await }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    for c in creates {
        c?;
    }
    loop {
        let list = api.list(&ListParams::default()).await?;
        let done = list
            .items
            .iter()
            .filter(|s| {
                s.status
                    .as_ref()
                    .and_then(|st| st.load_balancer.as_ref())
                    .and_then(|lb| lb.ingress.as_ref())
                    .is_some_and(|i| !i.is_empty())
            })
            .count();
        if done >= a.services {
            break;
        }
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(900),
            "no convergence in 15 min ({done} done)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let converge = t0.elapsed();
    let st = lb.stats();
    let calls = st.gets + st.puts + st.deletes + st.lists;
    let rss_kib = ctl.rss_kib();

    let writes_before = lb.stats().writes;
    let name = format!("node-{}", a.nodes + 1);
    let t1 = Instant::now();
    mc.cluster.add_node(&name)?;
    loop {
        let with = lb
            .load_balancers()
            .iter()
            .filter(|l| {
                l["spec"]["targets"]
                    .as_array()
                    .is_some_and(|ts| ts.iter().any(|t| t["name"] == name.as_str()))
            })
            .count();
        if with >= a.services {
            break;
        }
        anyhow::ensure!(
            t1.elapsed() < Duration::from_secs(900),
            "node not added in 15 min"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let node_converge = t1.elapsed();
    // Let stragglers finish so extra writes would be counted.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let node_writes = lb.stats().writes - writes_before;
    drop(ctl);
    mc.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(RunResult {
        converge,
        calls,
        rss_kib,
        node_converge,
        node_writes,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args();
    println!(
        "berth http provider bench: {} LoadBalancer Services, {} nodes, LB API +{} ms per call, median of {} runs",
        a.services, a.nodes, a.latency_ms, a.runs
    );
    let mut summary = Vec::new();
    for workers in [16u16, 1] {
        let mut rs = Vec::new();
        for run in 0..a.runs {
            let r = one_run(&a, workers).await?;
            println!(
                "  workers={workers:>2} run {}: all addressed in {:.2} s, {} LB API calls, controller peak RSS {:.1} MiB; +1 node: {:.2} s, {} writes",
                run + 1,
                r.converge.as_secs_f64(),
                r.calls,
                r.rss_kib as f64 / 1024.0,
                r.node_converge.as_secs_f64(),
                r.node_writes
            );
            rs.push(r);
        }
        let conv = median(rs.iter().map(|r| r.converge.as_secs_f64()).collect());
        let node = median(rs.iter().map(|r| r.node_converge.as_secs_f64()).collect());
        let calls = median(rs.iter().map(|r| r.calls as f64).collect());
        let rss = rs.iter().map(|r| r.rss_kib).max().unwrap_or(0) as f64 / 1024.0;
        let writes = median(rs.iter().map(|r| r.node_writes as f64).collect());
        println!(
            "workers={workers:>2}: median {conv:.2} s until all {} have an address ({calls:.0} LB API calls, {:.2} per Service), peak RSS {rss:.1} MiB; add a node: median {node:.2} s, {writes:.0} writes for {} load balancers",
            a.services,
            calls / a.services as f64,
            a.services
        );
        summary.push((conv, node));
    }
    println!(
        "ratio 1 worker / 16 workers: provisioning {:.1}x, node add {:.1}x",
        summary[1].0 / summary[0].0,
        summary[1].1 / summary[0].1
    );
    Ok(())
}
