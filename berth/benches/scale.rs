//! berth at scale: one controller, the http provider, mock-cloud in API-only mode, +20 ms per
//! load balancer API call, through a large cluster's life (see `berth_tests::scale`).
//!
//! `cargo bench -p berth --bench scale [-- --services N --nodes N --latency-ms N --workers N
//!  --storm N --storm-secs N --delete N --runs N --extra "FLAGS"]`
//!
//! The same settings may come from the environment: `BERTH_SCALE_SERVICES`,
//! `BERTH_SCALE_NODES`, `BERTH_SCALE_LATENCY_MS`, `BERTH_SCALE_WORKERS`, `BERTH_SCALE_STORM`,
//! `BERTH_SCALE_STORM_SECS`, `BERTH_SCALE_DELETE`, `BERTH_SCALE_RUNS`, `BERTH_SCALE_EXTRA`
//! (a flag wins). Defaults: 10,000 Services × 1,000 nodes, a 200-node storm over 10 s,
//! 1,000 Services deleted, 1 run. `--services 1000 --nodes 100 --storm 20 --delete 100`
//! runs in about a minute.
//!
//! Prints every phase of every run, then per phase the median time and the cloud-bound lower
//! bound for the worker count (each load balancer call costs the injected latency, and
//! `workers` calls run at once).

use berth_tests::scale::{Phase, ScaleConfig, Scenario};
use std::time::Duration;

/// The harness (mock-cloud in this process) allocates as the controller does; with the C
/// library's allocator it spent about half its CPU in malloc and free.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    cfg: ScaleConfig,
    runs: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut cfg = ScaleConfig::default();
    let mut runs = 1usize;
    let mut set = |key: &str, value: &str| -> anyhow::Result<bool> {
        let num = || -> anyhow::Result<u64> {
            value
                .parse()
                .map_err(|_| anyhow::anyhow!("{key}: expected a number, got {value:?}"))
        };
        match key {
            "services" => cfg.services = num()? as usize,
            "nodes" => cfg.nodes = num()? as usize,
            "latency-ms" => cfg.latency_ms = num()?,
            "workers" => cfg.workers = num()?.clamp(1, u16::MAX as u64) as u16,
            "storm" => cfg.storm_nodes = num()? as usize,
            "storm-secs" => cfg.storm_window = Duration::from_secs(num()?),
            "delete" => cfg.delete_services = num()? as usize,
            "runs" => runs = num()?.max(1) as usize,
            "extra" => cfg.extra_args = value.split_whitespace().map(String::from).collect(),
            _ => return Ok(false),
        }
        Ok(true)
    };
    for key in [
        "services",
        "nodes",
        "latency-ms",
        "workers",
        "storm",
        "storm-secs",
        "delete",
        "runs",
        "extra",
    ] {
        let var = format!("BERTH_SCALE_{}", key.to_uppercase().replace('-', "_"));
        if let Ok(v) = std::env::var(&var) {
            set(key, &v)?;
        }
    }
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        // `cargo bench` passes `--bench`; anything unknown is skipped.
        match (argv[i].strip_prefix("--"), argv.get(i + 1)) {
            (Some(k), Some(v)) if set(k, v)? => i += 2,
            _ => i += 1,
        }
    }
    Ok(Args { cfg, runs })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The cloud-bound lower bound of a phase: its load balancer calls, `workers` at a time,
/// each costing the injected latency. A storm's last node arrives near the end of its
/// window, and every load balancer needs a write after that: the window's last arrival
/// plus one write per load balancer.
fn bound(name: &str, calls: u64, cfg: &ScaleConfig) -> f64 {
    let per_call = cfg.latency_ms as f64 / 1000.0;
    let batches = |n: u64| (n as f64 / cfg.workers as f64).ceil();
    if name.starts_with("storm") && cfg.storm_nodes > 0 {
        let last =
            cfg.storm_window.as_secs_f64() * (cfg.storm_nodes - 1) as f64 / cfg.storm_nodes as f64;
        last + batches(cfg.services as u64) * per_call
    } else {
        batches(calls) * per_call
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Args { cfg, runs } = args()?;
    println!(
        "berth scale bench: {} Services × {} nodes, +{} ms per LB API call, {} workers, storm {} nodes over {:?}, {} Services deleted, {} run(s)",
        cfg.services,
        cfg.nodes,
        cfg.latency_ms,
        cfg.workers,
        cfg.storm_nodes,
        cfg.storm_window,
        cfg.delete_services,
        runs
    );
    let mut all: Vec<Vec<Phase>> = Vec::new();
    for run in 1..=runs {
        println!("run {run}:");
        let mut s = Scenario::start(cfg.clone(), env!("CARGO_BIN_EXE_berth").into()).await?;
        let res = async {
            println!("  {}", s.cold_start().await?.line());
            println!("  {}", s.restart().await?.line());
            println!("  {}", s.node_added().await?.line());
            println!("  {}", s.node_removed().await?.line());
            println!("  {}", s.storm_added().await?.line());
            println!("  {}", s.storm_removed().await?.line());
            println!("  {}", s.mass_delete().await?.line());
            anyhow::Ok(())
        }
        .await;
        let phases = s.phases.clone();
        let harness = phases.iter().map(|p| p.harness_rss_kib).max().unwrap_or(0);
        s.stop().await;
        res?;
        println!(
            "  bench process (mock-cloud) peak RSS {:.1} MiB",
            harness as f64 / 1024.0
        );
        all.push(phases);
    }
    println!(
        "medians of {runs} run(s) ({} Services × {} nodes, {} workers):",
        cfg.services, cfg.nodes, cfg.workers
    );
    println!(
        "| phase | time (s) | cloud-bound lower bound (s) | LB reads | LB writes | max writes per LB | API requests | API requests per Service | controller peak RSS (MiB) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (i, first) in all[0].iter().enumerate() {
        let col = |f: &dyn Fn(&Phase) -> f64| median(all.iter().map(|r| f(&r[i])).collect());
        let took = col(&|p| p.took.as_secs_f64());
        let calls = col(&|p| (p.lb_reads + p.lb_puts + p.lb_deletes) as f64) as u64;
        let ready = first
            .ready
            .map(|_| {
                format!(
                    " (ready {:.2})",
                    col(&|p| p.ready.unwrap_or_default().as_secs_f64())
                )
            })
            .unwrap_or_default();
        println!(
            "| {} | {took:.2}{ready} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {:.1} |",
            first.name,
            bound(first.name, calls, &cfg),
            col(&|p| p.lb_reads as f64),
            col(&|p| p.lb_writes as f64),
            col(&|p| p.max_writes_per_lb as f64),
            col(&|p| p.api_requests as f64),
            col(&|p| p.api_requests as f64) / cfg.services.max(1) as f64,
            col(&|p| p.controller_rss_kib as f64) / 1024.0,
        );
    }
    Ok(())
}
