//! The `berth` binary: `berth controller`, `berth speaker`, `berth crds` and, when built
//! with the default feature `demo`, `berth demo`.

use anyhow::Context;
use berth_controller::cli::ControllerArgs;
use berth_controller::factory::{self, ProviderKind};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

mod adopt;
#[cfg(feature = "demo")]
mod demo;
mod migrate;

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Real load balancers for Kubernetes LoadBalancer Services"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format: `text` for people, `json` for log pipelines (one object per line).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log level (`error`, `warn`, `info`, `debug`, `trace`) or tracing filter directives
    /// (`info,berth=debug`). Overrides RUST_LOG. Default: info (the demo: warn).
    #[arg(long, global = true)]
    log_level: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// The environment variable that sets flag `--long` (every flag has one): `BERTH_` and the
/// flag's name in upper case with `_` for `-`, e.g. `--metrics-listen` → `BERTH_METRICS_LISTEN`.
fn env_name(long: &str) -> String {
    format!("BERTH_{}", long.to_ascii_uppercase().replace('-', "_"))
}

/// berth's command line, with every flag of every subcommand also read from its `BERTH_*`
/// environment variable (a flag on the command line wins over the variable).
fn cli_command() -> clap::Command {
    fn with_env(cmd: clap::Command) -> clap::Command {
        cmd.mut_args(|a| match a.get_long() {
            Some(long) if !matches!(long, "help" | "version") && a.get_env().is_none() => {
                // clap keeps names as `&'static str`; built once per process.
                let name: &'static str = Box::leak(env_name(long).into_boxed_str());
                a.env(name)
            }
            _ => a,
        })
        .mut_subcommands(with_env)
    }
    with_env(Cli::command())
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller.
    Controller(Box<ControllerArgs>),
    /// Start mock-cloud, the controller and a LoadBalancer Service you can reach; run until Ctrl-C.
    #[cfg(feature = "demo")]
    Demo(demo::DemoArgs),
    /// Print berth's CustomResourceDefinitions (IPAddressPool, L2Advertisement, BGPPeer, ...) as YAML.
    Crds,
    /// Announce the l2 provider's VIPs from this node: ARP/NDP (failover in about a second) and BGP.
    Speaker(Box<berth_speaker::SpeakerArgs>),
    /// Print berth manifests equivalent to another load balancer's (`berth migrate metallb -f FILE`).
    Migrate(migrate::MigrateArgs),
    /// Take over another controller's load balancers: `berth adopt plan` prints what
    /// `berth controller --adopt` would do, touching nothing.
    Adopt(adopt::AdoptArgs),
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
    tracing::info!(server = %config.cluster_url, "Kubernetes API server");
    kube::Client::try_from(config).context("Cannot build a Kubernetes client")
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
        let built = factory::build(spec, metrics.for_class(&spec.class))?;
        classes.push(berth_controller::run::ClassController {
            client: client.clone(),
            provider: built.provider,
            opts,
            extension: built.extension,
        });
    }
    if specs
        .iter()
        .filter(|s| s.provider == ProviderKind::L2)
        .count()
        > 1
    {
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

/// An error and its causes on one line, leaving out a cause whose text the line already
/// holds (libraries often repeat their source's message in their own).
fn error_chain(e: &anyhow::Error) -> String {
    berth_controller::kube_util::describe(e.as_ref())
}

/// berth allocates through mimalloc rather than the C library's allocator. A controller's
/// heap is many small long-lived objects (cached Services, digests, queued events) among
/// short-lived request buffers; glibc's allocator kept the holes those buffers left, and its
/// resident memory ran at two to three times the live heap. See [`tune_allocator`] for the
/// figures.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Makes mimalloc hand freed memory back to the OS at once, unless the environment already
/// sets the same options (`MIMALLOC_ARENA_EAGER_COMMIT`, `MIMALLOC_PURGE_DELAY`): by default
/// it commits its arenas up front and purges freed pages after a delay, which keeps them
/// resident through a burst of work. It runs from the executable's initialisers, before the
/// first allocation: mimalloc reserves its first arena then, and `main` is too late for it.
///
/// Measured in the scale bench at 10,000 Services × 1,000 nodes (docs/scaling.md), peak RSS
/// of cold start / restart / one node added: glibc (two arenas, a fixed 64 KiB mmap
/// threshold) 120 / 77 / 78 MiB; mimalloc with its defaults 85 / 89 / 88 MiB; with these
/// options set in `main` 82 / 78 / 81 MiB, and from the initialisers (or the environment)
/// 71 / 70 / 71 MiB, at the same speed.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
extern "C" fn tune_allocator() {
    // Option numbers of mimalloc 2.x (`mi_option_e` in mimalloc.h).
    const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    for (option, variable) in [
        (ARENA_EAGER_COMMIT, c"MIMALLOC_ARENA_EAGER_COMMIT"),
        (PURGE_DELAY, c"MIMALLOC_PURGE_DELAY"),
    ] {
        // SAFETY: getenv reads the environment without allocating (nothing else runs yet);
        // mi_option_set sets one of mimalloc's options to 0, a value both accept.
        unsafe {
            if libc::getenv(variable.as_ptr()).is_null() {
                libmimalloc_sys::mi_option_set(option, 0);
            }
        }
    }
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
#[used]
#[unsafe(link_section = ".init_array")]
static TUNE_ALLOCATOR: extern "C" fn() = tune_allocator;

fn main() {
    berth_controller::install_crypto_provider();
    let cli = match Cli::from_arg_matches(&cli_command().get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let default_filter = match cli.command {
        // The demo prints its own summary; keep the log to what goes wrong.
        #[cfg(feature = "demo")]
        Command::Demo(_) => "warn,kube_client=error,kube_client::client::builder=off",
        // kube's own request log says `client error (Connect)` without the server or the
        // reason; berth logs both where it retries.
        _ => "info,kube_runtime=warn,kube_client=warn,kube_client::client::builder=off",
    };
    let filter = match &cli.log_level {
        Some(level) => match tracing_subscriber::EnvFilter::try_new(level) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("berth: error: invalid --log-level {level:?}: {e}");
                std::process::exit(2);
            }
        },
        None => tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| default_filter.into()),
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
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
            Command::Migrate(a) => migrate::run(a),
            Command::Adopt(a) => adopt::run(a).await,
        }
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    if let Err(e) = res {
        eprintln!("berth: error: {}", error_chain(&e));
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The initialiser ran before the test harness allocated, and set both options (unless
    /// the environment chose them).
    #[test]
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    fn mimalloc_returns_freed_memory_at_once() {
        for (option, variable) in [
            (4, "MIMALLOC_ARENA_EAGER_COMMIT"),
            (15, "MIMALLOC_PURGE_DELAY"),
        ] {
            if std::env::var_os(variable).is_none() {
                // SAFETY: reads one of mimalloc's options.
                let value = unsafe { libmimalloc_sys::mi_option_get(option) };
                assert_eq!(value, 0, "{variable}");
            }
        }
    }

    #[test]
    fn an_error_chain_says_each_thing_once() {
        let os = std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "No such file or directory (os error 2)",
        );
        let e = anyhow::Error::new(os)
            .context("failed to read /x/kubeconfig: No such file or directory (os error 2)")
            .context("Cannot read kubeconfig /x/kubeconfig");
        assert_eq!(
            error_chain(&e),
            "Cannot read kubeconfig /x/kubeconfig: failed to read /x/kubeconfig: No such file or directory (os error 2)"
        );
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_chain(&e), "outer: inner");
    }

    /// Every flag of every subcommand has its `BERTH_*` variable, and the names are unique.
    #[test]
    fn every_flag_reads_its_environment_variable() {
        fn walk(cmd: &clap::Command, seen: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let Some(long) = a.get_long() else { continue };
                if matches!(long, "help" | "version") {
                    continue;
                }
                let env = a.get_env().map(|e| e.to_string_lossy().into_owned());
                // A flag that names its own conventional variable keeps it (the speaker's
                // NODE_NAME from the downward API, KUBECONFIG).
                let env =
                    env.unwrap_or_else(|| panic!("{} --{long} has no variable", cmd.get_name()));
                assert!(
                    env == env_name(long) || matches!(env.as_str(), "NODE_NAME" | "KUBECONFIG"),
                    "{} --{long}: {env}",
                    cmd.get_name()
                );
                seen.push(format!("{} {env}", cmd.get_name()));
            }
            for sub in cmd.get_subcommands() {
                walk(sub, seen);
            }
        }
        let cmd = cli_command();
        cmd.clone().debug_assert();
        let mut seen = Vec::new();
        walk(&cmd, &mut seen);
        for want in [
            "controller BERTH_METRICS_LISTEN",
            "controller BERTH_PROVIDER",
            "speaker NODE_NAME",
            "speaker BERTH_MEMBERSHIP_KEY_FILE",
            "berth BERTH_LOG_FORMAT",
            "berth BERTH_LOG_LEVEL",
        ] {
            assert!(
                seen.iter().any(|s| s == want),
                "{want} missing from {seen:?}"
            );
        }
        assert_eq!(env_name("gc-max-deletes"), "BERTH_GC_MAX_DELETES");
    }

    #[test]
    fn command_line_wins_over_the_environment() {
        // Values through clap's own resolution: a flag beats the variable, which beats the
        // default. (Setting the process environment in a test is unsafe; the end-to-end test
        // tests/tests/ops.rs runs the binary with the variables set.)
        let m = cli_command()
            .try_get_matches_from(["berth", "--log-format", "json", "crds"])
            .expect("parses");
        let cli = Cli::from_arg_matches(&m).expect("cli");
        assert!(cli.log_format == LogFormat::Json);
        let err = cli_command()
            .try_get_matches_from(["berth", "--log-format", "xml", "crds"])
            .expect_err("xml is refused");
        assert!(err.to_string().contains("xml"), "{err}");
    }
}
