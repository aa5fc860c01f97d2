//! Wiring: leader election, the Node and Service caches, the reconciler, garbage collection
//! and the admin endpoints, for one provider.

use crate::admin::{self, Health};
use crate::gc;
use crate::leader::{LeaderElector, LeaseSettings};
use crate::metrics::Metrics;
use crate::nodes;
use crate::reconcile::{self, Context, ServiceHook, Settings};
use berth_providers::{NodeTarget, Provider};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::{Node, Service};
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

/// Everything `berth controller` runs with.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    pub settings: Settings,
    /// Reconciles running at once.
    pub workers: u16,
    pub gc_interval: Duration,
    /// None: no leader election (a single replica).
    pub leader: Option<LeaseSettings>,
    pub metrics_listen: Option<SocketAddr>,
    pub identity: String,
}

/// A running controller, for callers that embed it (the demo, tests, benchmarks).
pub struct Running {
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub admin_addr: Option<SocketAddr>,
}

/// Watches Nodes; sends a trigger whenever the set of eligible targets changes (never for
/// changes that cannot move a target, such as heartbeats).
fn spawn_node_tracker(
    client: Client,
) -> (Store<Node>, mpsc::Receiver<()>, tokio::task::JoinHandle<()>) {
    let (reader, writer) = reflector::store();
    let events = watcher(Api::<Node>::all(client), watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    let (tx, rx) = mpsc::channel::<()>(1);
    let r = reader.clone();
    let task = tokio::spawn(async move {
        let mut last: Option<BTreeMap<String, NodeTarget>> = None;
        let mut events = std::pin::pin!(events);
        while let Some(ev) = events.next().await {
            match ev {
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => continue,
                Ok(_) => {}
                Err(e) => {
                    warn!(error = %e, "Node watch failed; retrying");
                    continue;
                }
            }
            let now: BTreeMap<String, NodeTarget> = r
                .state()
                .iter()
                .filter_map(|n| nodes::fingerprint(n).map(|t| (t.name.clone(), t)))
                .collect();
            if last.as_ref() != Some(&now) {
                if last.is_some() {
                    // A full channel already holds a pending trigger: coalesce.
                    let _ = tx.try_send(());
                }
                last = Some(now);
            }
        }
    });
    (reader, rx, task)
}

/// Provider-specific wiring inside the controller (the l2 provider's IP pools).
pub trait Extension: Send + Sync + 'static {
    /// Facts to hand the provider before each Service's reconcile (see [`ServiceHook`]).
    fn service_hook(&self) -> Option<ServiceHook> {
        None
    }

    /// Runs once this replica leads, before any Service is reconciled (e.g. restores IP
    /// assignments). Each item of the returned stream makes every Service reconcile again.
    fn start(
        &self,
        ctx: Arc<Context>,
        shutdown: watch::Receiver<bool>,
    ) -> BoxFuture<'static, anyhow::Result<BoxStream<'static, ()>>>;
}

/// Runs the controller until `shutdown` flips to true (Ok) or leadership is lost (Err).
pub async fn run(
    client: Client,
    provider: Arc<dyn Provider>,
    opts: ControllerOptions,
    shutdown: watch::Receiver<bool>,
    started: Option<tokio::sync::oneshot::Sender<Running>>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    run_with(client, provider, opts, shutdown, started, metrics, None).await
}

/// [`run`] with a provider [`Extension`].
pub async fn run_with(
    client: Client,
    provider: Arc<dyn Provider>,
    opts: ControllerOptions,
    mut shutdown: watch::Receiver<bool>,
    started: Option<tokio::sync::oneshot::Sender<Running>>,
    metrics: Arc<Metrics>,
    extension: Option<Arc<dyn Extension>>,
) -> anyhow::Result<()> {
    let health = Arc::new(Health::default());
    let ctx_cell: Arc<OnceLock<(Arc<Context>, Store<Service>)>> = Arc::new(OnceLock::new());
    let admin_addr = match opts.metrics_listen {
        Some(listen) => {
            let cell = ctx_cell.clone();
            let depth = Box::new(move || match cell.get() {
                None => 0,
                Some((ctx, services)) => {
                    let targets = ctx.targets();
                    services
                        .state()
                        .iter()
                        .filter(|s| ctx.settings.classes.wants_load_balancer(s))
                        .filter(|s| !ctx.is_converged(s, &targets))
                        .count() as i64
                }
            });
            let mut stop = shutdown.clone();
            Some(
                admin::serve(listen, metrics.clone(), health.clone(), depth, async move {
                    stopped(&mut stop).await;
                })
                .await?,
            )
        }
        None => None,
    };
    if let Some(tx) = started {
        let _ = tx.send(Running {
            metrics: metrics.clone(),
            health: health.clone(),
            admin_addr,
        });
    }

    // Leadership: only the leader writes to the cloud and to status.
    let (lost_tx, mut lost_rx) = watch::channel(false);
    let mut leader_task = None;
    if let Some(ls) = opts.leader.clone() {
        let mut elector = LeaderElector::new(client.clone(), ls);
        health.ready.store(true, Ordering::Relaxed); // standby is ready
        tokio::select! {
            _ = elector.acquire() => {}
            _ = stopped(&mut shutdown) => return Ok(()),
        }
        health.ready.store(false, Ordering::Relaxed);
        metrics.leader.set(1);
        let mut stop = shutdown.clone();
        leader_task = Some(tokio::spawn(async move {
            let stopping = tokio::select! {
                _ = elector.hold() => false,
                _ = stopped(&mut stop) => true,
            };
            if stopping {
                elector.release().await;
            } else {
                let _ = lost_tx.send(true);
            }
        }));
    } else {
        metrics.leader.set(1);
    }

    let (node_store, node_triggers, node_task) = spawn_node_tracker(client.clone());
    tokio::select! {
        r = node_store.wait_until_ready() => r.map_err(|e| anyhow::anyhow!("Node cache failed: {e}"))?,
        _ = stopped(&mut shutdown) => return Ok(()),
    }
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "berth".into(),
            instance: Some(opts.identity.clone()),
        },
    );
    let mut ctx = Context::new(
        client.clone(),
        provider.clone(),
        opts.settings.clone(),
        node_store,
        recorder,
        metrics.clone(),
    );
    if let Some(hook) = extension.as_ref().and_then(|e| e.service_hook()) {
        ctx = ctx.with_service_hook(hook);
    }
    let ctx = Arc::new(ctx);
    let extension_triggers: BoxStream<'static, ()> = match &extension {
        Some(ext) => tokio::select! {
            r = ext.start(ctx.clone(), shutdown.clone()) => r?,
            _ = stopped(&mut shutdown) => return Ok(()),
        },
        None => futures::stream::pending().boxed(),
    };
    let mut stop = shutdown.clone();
    let mut lost = lost_rx.clone();
    let stop_signal = async move {
        tokio::select! {
            _ = stopped(&mut stop) => {}
            _ = stopped(&mut lost) => {}
        }
    };
    let controller = Controller::new(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .with_config(controller::Config::default().concurrency(opts.workers))
    .reconcile_all_on(futures::stream::select(
        tokio_stream_from(node_triggers),
        extension_triggers,
    ))
    .graceful_shutdown_on(stop_signal);
    let services = controller.store();
    let _ = ctx_cell.set((ctx.clone(), services.clone()));
    {
        let services = services.clone();
        let health = health.clone();
        tokio::spawn(async move {
            if store_ready(&services).await {
                health.ready.store(true, Ordering::Relaxed);
                info!("Caches synced; reconciling");
            }
        });
    }
    let gc_task = tokio::spawn(gc::run(
        provider.clone(),
        services.clone(),
        opts.settings.classes.clone(),
        opts.settings.cluster.clone(),
        opts.gc_interval,
        metrics.clone(),
    ));
    info!(
        provider = provider.name(),
        class = %opts.settings.classes.class,
        default_class = opts.settings.classes.default_class,
        cluster = %opts.settings.cluster,
        workers = opts.workers,
        "Controller running"
    );
    controller
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|res| async move {
            if let Err(controller::Error::ObjectNotFound(_)) = &res {
                // Deleted while queued: nothing to do.
            }
        })
        .await;
    gc_task.abort();
    node_task.abort();
    health.shutting_down.store(true, Ordering::Relaxed);
    metrics.leader.set(0);
    // On shutdown the leader task releases the lease; wait for it, or the runtime's shutdown
    // drops it half-way and the standby waits out the whole lease duration.
    if let Some(task) = leader_task {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    if *lost_rx.borrow_and_update() {
        anyhow::bail!("Lost the leader lease; exiting so a fresh replica can take over");
    }
    info!("Controller stopped");
    Ok(())
}

/// Waits until `store` has its first complete list; false if its writer is gone.
///
/// `Store::wait_until_ready` keeps one waker only (a oneshot receiver behind a mutex), so
/// when several tasks wait on the same store at once (the Controller's own runner, the
/// readiness flag, garbage collection) only the last one to poll is woken and the others
/// hang forever. Re-polling on a short timer makes every waiter see the ready state.
pub async fn store_ready<K>(store: &Store<K>) -> bool
where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    loop {
        match tokio::time::timeout(Duration::from_millis(200), store.wait_until_ready()).await {
            Ok(r) => return r.is_ok(),
            Err(_) => continue,
        }
    }
}

/// Resolves once the channel holds true (or its sender is gone).
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// An mpsc receiver as a Stream.
fn tokio_stream_from(mut rx: mpsc::Receiver<()>) -> impl futures::Stream<Item = ()> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The class a provider serves by default: `berth.io/<provider>`.
pub fn default_class(provider: &str) -> String {
    format!("berth.io/{provider}")
}
