//! The `berth` binary: `berth controller`, `berth speaker`, `berth crds` and, when built
//! with the default feature `demo`, `berth demo`.

use anyhow::Context;
use berth_controller::cli::ControllerArgs;
use berth_providers::Provider;
use berth_providers::http::{HttpProvider, HttpProviderConfig};
use clap::{Parser, Subcommand};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[cfg(feature = "demo")]
mod demo;

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Real load balancers for Kubernetes LoadBalancer Services"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller.
    Controller(Box<ControllerArgs>),
    /// Start mock-cloud, the controller and a LoadBalancer Service you can reach; run until Ctrl-C.
    #[cfg(feature = "demo")]
    Demo(demo::DemoArgs),
    /// Print berth's CustomResourceDefinitions (IPAddressPool, L2Advertisement) as YAML.
    Crds,
    /// Announce the l2 provider's VIPs from this node (ARP/NDP), with failover in about a second.
    Speaker(Box<berth_speaker::SpeakerArgs>),
}

/// A kube client from a kubeconfig file, or inferred (in-cluster, then $KUBECONFIG).
pub async fn kube_client(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p)
                .with_context(|| format!("Cannot read kubeconfig {}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("Invalid kubeconfig {}", p.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("No kubeconfig given and no in-cluster configuration found")?,
    };
    kube::Client::try_from(config).context("Cannot build a Kubernetes client")
}

/// The provider of one class, reporting its requests to `metrics`.
pub fn build_provider(
    spec: &berth_controller::cli::ClassSpec,
    metrics: berth_controller::metrics::ClassMetrics,
) -> anyhow::Result<Arc<dyn Provider>> {
    match spec.provider.as_str() {
        "http" => {
            let endpoint = spec.http_endpoint.clone().with_context(|| {
                format!(
                    "--http-endpoint (httpEndpoint) is required for class {} with provider http",
                    spec.class
                )
            })?;
            let mut cfg = HttpProviderConfig::new(endpoint);
            cfg.token_file = spec.http_token_file.clone();
            cfg.ca_bundle = spec.http_ca_bundle.clone();
            if let Some(t) = spec.http_timeout {
                cfg.timeout = t;
            }
            let hook: berth_providers::http::MetricsHook = Arc::new(move |op, outcome, _took| {
                metrics.provider_request("http", op, outcome);
            });
            Ok(Arc::new(
                HttpProvider::new(cfg)
                    .context("Cannot set up the http provider")?
                    .with_metrics(hook),
            ))
        }
        "aws" => {
            let region = spec
                .aws_region
                .clone()
                .or_else(|| std::env::var("AWS_REGION").ok())
                .with_context(|| {
                    format!(
                        "--aws-region (awsRegion) is required for class {} with provider aws",
                        spec.class
                    )
                })?;
            let mut cfg = berth_providers::aws::AwsProviderConfig::new(region);
            cfg.endpoint = spec.aws_endpoint.clone();
            Ok(Arc::new(
                berth_providers::aws::AwsProvider::new(cfg)
                    .context("Cannot set up the aws provider")?,
            ))
        }
        // Without its pools wiring (see `controller`), every allocation fails.
        "l2" => Ok(Arc::new(berth_providers::l2::L2Provider::new())),
        other => anyhow::bail!("--provider {other:?} is not supported"),
    }
}

/// Flips the returned channel to true on SIGINT or SIGTERM.
pub fn shutdown_on_signals() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        let _ = tx.send(true);
    });
    rx
}

async fn controller(args: ControllerArgs) -> anyhow::Result<()> {
    let args = args.merge_file()?;
    let specs = args.class_specs()?;
    let listen = args.metrics_listen()?;
    let metrics = Arc::new(berth_controller::metrics::Metrics::default());
    let client = kube_client(args.kubeconfig.as_deref()).await?;
    let mut classes = Vec::new();
    for spec in &specs {
        let mut opts = args.options_for(spec)?;
        opts.metrics_listen = None;
        let (provider, extension) = if spec.provider == "l2" {
            let l2 = Arc::new(berth_providers::l2::L2Provider::new());
            let ext: Arc<dyn berth_controller::run::Extension> =
                Arc::new(berth_controller::pools::L2Pools::new(l2.clone()));
            (l2 as Arc<dyn Provider>, Some(ext))
        } else {
            (build_provider(spec, metrics.for_class(&spec.class))?, None)
        };
        classes.push(berth_controller::run::ClassController {
            client: client.clone(),
            provider,
            opts,
            extension,
        });
    }
    if specs.iter().filter(|s| s.provider == "l2").count() > 1 {
        anyhow::bail!("Only one class can use the l2 provider (its IP pools are cluster-wide)");
    }
    let shutdown = shutdown_on_signals();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        if let Ok(r) = rx.await {
            let r: berth_controller::run::Running = r;
            if let Some(a) = r.admin_addr {
                tracing::info!(address = %a, "Serving /metrics, /healthz and /readyz");
            }
        }
    });
    berth_controller::run::serve(classes, listen, shutdown, Some(tx), metrics).await
}

async fn speaker(args: berth_speaker::SpeakerArgs) -> anyhow::Result<()> {
    let client = kube_client(args.kubeconfig.as_deref()).await?;
    berth_speaker::run(client, args, shutdown_on_signals()).await
}

fn main() {
    berth_controller::install_crypto_provider();
    let cli = Cli::parse();
    let default_filter = match cli.command {
        // The demo prints its own summary; keep the log to what goes wrong.
        #[cfg(feature = "demo")]
        Command::Demo(_) => "warn,kube_client=error",
        _ => "info,kube_runtime=warn,kube_client=warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth: error: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let res = rt.block_on(async {
        match cli.command {
            Command::Controller(a) => controller(*a).await,
            #[cfg(feature = "demo")]
            Command::Demo(a) => demo::run(a).await,
            Command::Crds => {
                print!("{}", berth_api::crd::crds_yaml());
                Ok(())
            }
            Command::Speaker(a) => speaker(*a).await,
        }
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    if let Err(e) = res {
        eprintln!("berth: error: {e:#}");
        std::process::exit(1);
    }
}
