//! The `mock-cloud` binary: `mock-cloud serve` runs a simulated cluster until SIGINT/SIGTERM;
//! `mock-cloud bench` measures the API server.

use anyhow::Context;
use clap::{Parser, Subcommand};
use mock_cloud::{Config, MockCloud};
use std::net::SocketAddr;
use std::path::PathBuf;

/// mimalloc rather than the C library's allocator: an API server allocates and frees a JSON
/// tree per request. `mock-cloud bench` (10,000 Services, 10 watchers), two runs each of one
/// glibc build, alternated, with Debian's mimalloc preloaded in the second of each pair:
/// creates 2,969 and 3,470/s with glibc, 4,720 and 4,518/s with mimalloc; watch-event p99
/// 20.0 and 13.5 ms, 14.0 and 12.1 ms.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;

#[derive(Parser)]
#[command(
    name = "mock-cloud",
    version,
    about = "A simulated Kubernetes cluster and cloud on loopback"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the API server and simulated nodes; run until SIGINT/SIGTERM.
    Serve(ServeArgs),
    /// Measure the API server: create, list and watch latency, peak memory.
    Bench(bench::BenchArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Number of simulated nodes to start with.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Where to write a kubeconfig for kubectl and kube-rs.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// API server address (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// ClusterIP range(s), comma-separated (primary first).
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cluster_ip_range: String,
    /// NodePort range, as kube-apiserver's --service-node-port-range.
    #[arg(long, default_value = "30000-32767")]
    service_node_port_range: String,
    /// Second octet of the 127.X.0.0/16 block for nodes, pods and VIPs (default: a free one).
    #[arg(long)]
    ip_block: Option<u8>,
    /// Serve the http provider's load balancer API here (e.g. 127.0.0.1:8081).
    #[arg(long)]
    lb_api_listen: Option<SocketAddr>,
    /// File holding the bearer token the load balancer API requires.
    #[arg(long)]
    lb_api_token_file: Option<PathBuf>,
    /// Enforce RBAC: bearer tokens (the kubeconfig's admin token, or ServiceAccount tokens
    /// from POST /mock-cloud/v1/token) and Role/ClusterRole bindings.
    #[arg(long)]
    rbac: bool,
}

fn parse_range(s: &str) -> anyhow::Result<std::ops::RangeInclusive<u16>> {
    let (a, b) = s
        .split_once('-')
        .with_context(|| format!("--service-node-port-range {s:?}: expected FROM-TO"))?;
    let (a, b): (u16, u16) = (
        a.trim()
            .parse()
            .with_context(|| format!("--service-node-port-range {s:?}"))?,
        b.trim()
            .parse()
            .with_context(|| format!("--service-node-port-range {s:?}"))?,
    );
    anyhow::ensure!(
        a <= b && a > 0,
        "--service-node-port-range {s:?}: FROM must be 1..=TO"
    );
    Ok(a..=b)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut cfg = Config {
        listen: args.listen,
        nodes: args.nodes,
        kubeconfig: args.kubeconfig.clone(),
        ip_block: args.ip_block,
        lb_api_listen: args.lb_api_listen,
        rbac: args.rbac,
        ..Default::default()
    };
    if let Some(f) = &args.lb_api_token_file {
        let token = std::fs::read_to_string(f)
            .with_context(|| format!("--lb-api-token-file {}", f.display()))?;
        cfg.lb_api_token = Some(token.trim().to_string());
    }
    cfg.core.cluster_ip_cidrs = args
        .service_cluster_ip_range
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    cfg.core.node_port_range = parse_range(&args.service_node_port_range)?;
    let mc = MockCloud::start(cfg).await?;
    println!("mock-cloud: API server listening on {}", mc.url());
    if let Some(k) = &mc.kubeconfig {
        println!("mock-cloud: kubeconfig written to {}", k.display());
        println!(
            "mock-cloud:   kubectl --kubeconfig {} get nodes",
            k.display()
        );
    }
    if let Some(u) = mc.lb_api_url() {
        println!("mock-cloud: load balancer API listening on {u}");
    }
    println!(
        "mock-cloud: nodes, pods and load balancers live in 127.{}.0.0/16",
        mc.ip_block
    );
    for line in mc.cluster.describe() {
        println!("mock-cloud: {line}");
    }
    println!(
        "mock-cloud: fault injection at {}/mock-cloud/v1/faults",
        mc.url()
    );
    wait_for_signal().await?;
    println!("mock-cloud: shutting down");
    mc.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Runtime::new()?;
    let res = rt.block_on(async {
        match cli.command {
            Command::Serve(a) => serve(a).await,
            Command::Bench(a) => bench::run(a).await,
        }
    });
    if let Err(e) = &res {
        eprintln!("mock-cloud: error: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}
