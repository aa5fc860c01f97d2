//! mock-cloud: a simulated Kubernetes cluster and cloud in one process, all on loopback.
//!
//! [`MockCloud::start`] brings up a Kubernetes API server that kube-rs and the real `kubectl`
//! talk to, simulated nodes (each with its own loopback address and a userspace kube-proxy),
//! pods that answer with their own name, and an EndpointSlice controller.

pub mod apiserver;
pub mod audit;
pub mod cluster;
pub mod discovery;
pub mod faults;
pub mod lbapi;
pub mod openapi;
pub mod patch;
pub mod podlogs;
pub mod registry;
pub mod schema;
pub mod selector;
pub mod services;
pub mod store;
pub mod table;
pub mod testing;

use anyhow::Context;
use apiserver::{ApiCore, CoreConfig};
use cluster::{Cluster, ClusterConfig};
use faults::Faults;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How to start a mock-cloud.
#[derive(Debug, Clone)]
pub struct Config {
    /// API server address; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Simulated nodes created at start.
    pub nodes: usize,
    /// Where to write a kubeconfig, if anywhere.
    pub kubeconfig: Option<PathBuf>,
    /// Second octet of the 127.X.0.0/16 block nodes, pods and load balancers live in;
    /// None picks a free one.
    pub ip_block: Option<u8>,
    pub core: CoreConfig,
    pub bookmark_interval: Duration,
    /// Where to serve the http provider's load balancer API; None: not served.
    pub lb_api_listen: Option<SocketAddr>,
    /// Bearer token the load balancer API requires, if any.
    pub lb_api_token: Option<String>,
    /// Multiplies the load balancers' health-check intervals (tests use < 1).
    pub health_check_scale: f64,
    /// Serve traffic: kube-proxy on every node, the load balancers' data plane and health
    /// checks. False keeps only the APIs, for scale benchmarks.
    pub dataplane: bool,
    /// Authenticate bearer tokens and authorize with RBAC objects (see
    /// [`apiserver::rbac`]); false: every request is allowed.
    pub rbac: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:0".parse().expect("valid"),
            nodes: 3,
            kubeconfig: None,
            ip_block: None,
            core: CoreConfig::default(),
            bookmark_interval: Duration::from_secs(5),
            lb_api_listen: None,
            lb_api_token: None,
            health_check_scale: 1.0,
            dataplane: true,
            rbac: false,
        }
    }
}

/// A running mock-cloud.
pub struct MockCloud {
    pub core: Arc<ApiCore>,
    pub server: Arc<apiserver::http::ApiServer>,
    pub faults: Arc<Faults>,
    pub api_addr: SocketAddr,
    pub cluster: Cluster,
    /// The http provider's load balancer API, when started.
    pub lb_api: Option<lbapi::LbApi>,
    pub ip_block: u8,
    pub kubeconfig: Option<PathBuf>,
    shutdown_tx: watch::Sender<bool>,
    api_task: JoinHandle<()>,
    /// Declared after `cluster`, so the cluster's tasks are aborted before it goes.
    _cluster_runtime: ClusterRuntime,
    _block_lock: StdTcpListener,
}

/// The runtime the simulated cluster's controllers, kubelets and proxies run on, apart from
/// the API server's. Its controllers re-read whole collections without yielding (hundreds of
/// milliseconds at 10,000 Services); on the API server's runtime, requests and watch streams
/// queued behind them. On threads of their own the OS preempts them, as it would separate
/// controller processes.
struct ClusterRuntime(Option<tokio::runtime::Runtime>);

impl ClusterRuntime {
    fn new() -> anyhow::Result<ClusterRuntime> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .thread_name("mock-cloud-cluster")
            .enable_all()
            .build()
            .context("starting the cluster's runtime")?;
        Ok(ClusterRuntime(Some(rt)))
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.0
            .as_ref()
            .expect("runtime present until drop")
            .handle()
    }
}

impl Drop for ClusterRuntime {
    fn drop(&mut self) {
        // Dropping a runtime may block, which is not allowed inside another runtime.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Claims a 127.X.0.0/16 block by binding a marker port in it, so concurrent mock-clouds
/// (parallel tests) never share addresses.
fn claim_block(wanted: Option<u8>) -> anyhow::Result<(u8, StdTcpListener)> {
    const MARKER_PORT: u16 = 29_999;
    let try_block = |b: u8| StdTcpListener::bind((Ipv4Addr::new(127, b, 255, 254), MARKER_PORT));
    if let Some(b) = wanted {
        let l = try_block(b)
            .with_context(|| format!("IP block 127.{b}.0.0/16 is in use by another mock-cloud"))?;
        return Ok((b, l));
    }
    let start = (std::process::id() % 200) as u8;
    for i in 0..200u8 {
        let b = 20 + (start.wrapping_add(i) % 200);
        if let Ok(l) = try_block(b) {
            return Ok((b, l));
        }
    }
    anyhow::bail!("no free 127.X.0.0/16 block for mock-cloud")
}

impl MockCloud {
    pub async fn start(cfg: Config) -> anyhow::Result<MockCloud> {
        let (ip_block, block_lock) = claim_block(cfg.ip_block)?;
        let core = Arc::new(ApiCore::new(cfg.core.clone()).map_err(anyhow::Error::msg)?);
        let faults = Arc::new(Faults::default());
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("binding the API server to {}", cfg.listen))?;
        let api_addr = listener.local_addr()?;
        let server = Arc::new(apiserver::http::ApiServer {
            core: core.clone(),
            faults: faults.clone(),
            address: api_addr.to_string(),
            bookmark_interval: cfg.bookmark_interval,
            shutdown: shutdown_rx.clone(),
            requests: AtomicU64::new(0),
            open_watches: AtomicU64::new(0),
            verbs: Default::default(),
            rbac: cfg.rbac.then(|| Arc::new(apiserver::rbac::Rbac::default())),
            audit: Default::default(),
            encodings: Default::default(),
        });
        let app = apiserver::http::router(server.clone());
        let mut stop = shutdown_rx.clone();
        let api_task = tokio::spawn(async move {
            let _ = axum::serve(crate::no_delay(listener), app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
        });
        let cluster_runtime = ClusterRuntime::new()?;
        let cluster = cluster_runtime
            .handle()
            .spawn(Cluster::start(
                core.clone(),
                ClusterConfig {
                    ip_block,
                    initial_nodes: cfg.nodes,
                    proxy: cfg.dataplane,
                },
                shutdown_rx.clone(),
            ))
            .await
            .context("starting the cluster")??;
        let lb_api = match cfg.lb_api_listen {
            None => None,
            Some(listen) => Some(
                lbapi::LbApi::start(
                    lbapi::LbApiConfig {
                        listen,
                        ip_block,
                        token: cfg.lb_api_token.clone(),
                        health_check_scale: cfg.health_check_scale,
                        dataplane: cfg.dataplane,
                    },
                    shutdown_rx,
                )
                .await?,
            ),
        };
        let mc = MockCloud {
            core,
            server,
            faults,
            api_addr,
            cluster,
            lb_api,
            ip_block,
            kubeconfig: cfg.kubeconfig.clone(),
            shutdown_tx,
            api_task,
            _cluster_runtime: cluster_runtime,
            _block_lock: block_lock,
        };
        if let Some(path) = &cfg.kubeconfig {
            mc.write_kubeconfig(path)?;
        }
        Ok(mc)
    }

    /// The API server's URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    /// The load balancer API's URL, when it runs.
    pub fn lb_api_url(&self) -> Option<String> {
        self.lb_api.as_ref().map(|l| l.url())
    }

    /// A kubeconfig (JSON, which is valid YAML) for kubectl and kube-rs.
    pub fn kubeconfig_contents(&self) -> String {
        let v = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "mock-cloud", "cluster": {"server": self.url()}}],
            "users": [{"name": "mock-cloud-admin", "user": {"token": "mock-cloud-admin"}}],
            "contexts": [{"name": "mock-cloud", "context": {"cluster": "mock-cloud", "user": "mock-cloud-admin", "namespace": "default"}}],
            "current-context": "mock-cloud",
            "preferences": {},
        });
        serde_json::to_string_pretty(&v).expect("serialisable")
    }

    pub fn write_kubeconfig(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, self.kubeconfig_contents())
            .with_context(|| format!("writing kubeconfig to {}", path.display()))
    }

    /// Stops every listener and task this mock-cloud started.
    pub async fn shutdown(self) {
        let _ = self.shutdown_tx.send(true);
        if let Some(lb) = self.lb_api {
            lb.shutdown().await;
        }
        self.cluster.shutdown().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.api_task).await;
    }
}

/// `listener` with `TCP_NODELAY` on every accepted connection. axum does not set it, and a
/// watch stream writes one small chunk per event: with Nagle's algorithm a chunk that follows
/// one not yet acknowledged waits for the client's delayed ACK, up to 40 ms on Linux. (Go's
/// net package, and so kube-apiserver, sets it on every TCP connection.)
pub fn no_delay(
    listener: tokio::net::TcpListener,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = std::net::SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    })
}
