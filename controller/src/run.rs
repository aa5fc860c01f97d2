//! Wiring: per class, leader election, the Node and Service caches, the reconciler and
//! garbage collection; per process, the admin endpoints. One process may serve several
//! classes ([`serve`]); each has its own lease, finalizer, workers, GC and metrics labels.

use crate::admin::{self, Health};
use crate::endpoints;
use crate::events::EventSink;
use crate::gc::Collector;
use crate::kube_util::fenced_client;
use crate::kube_util::{stopped, store_ready};
use crate::leader::{Fence, LeaderElector, LeaseSettings};
use crate::metrics::{ClassMetrics, Metrics};
use crate::node_sync::{self, NodeSyncSettings};
use crate::ratelimit::rate_limited_client;
use crate::reconcile::{self, Context, Settings};
use berth_providers::Provider;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::Service;
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;
use tracing::info;

/// Everything one class's controller runs with.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    pub settings: Settings,
    /// Reconciles running at once.
    pub workers: u16,
    pub gc_interval: Duration,
    /// At most this many orphans are deleted per garbage-collection pass.
    pub gc_max_deletes: usize,
    /// None: no leader election (a single replica).
    pub leader: Option<LeaseSettings>,
    /// Where the single-class [`run`] serves the admin endpoints (see [`serve`] for several).
    pub metrics_listen: Option<SocketAddr>,
    pub identity: String,
    /// Bound on every non-watch Kubernetes API request.
    pub request_timeout: Duration,
    /// How node changes are coalesced before every load balancer is updated.
    pub node_sync: NodeSyncSettings,
    /// Writes per second to the API server after a burst (0: no limit).
    pub kube_api_qps: f64,
    pub kube_api_burst: u32,
}

/// A running controller, for callers that embed it (the demo, tests, benchmarks).
pub struct Running {
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub admin_addr: Option<SocketAddr>,
}

/// One class to serve: its provider, options and any provider wiring.
pub struct ClassController {
    /// An unfenced client: leader election uses it as is, everything else through a
    /// client fenced by this class's lease.
    pub client: Client,
    pub provider: Arc<dyn Provider>,
    pub opts: ControllerOptions,
    pub extension: Option<Arc<dyn Extension>>,
}

/// Provider-specific wiring inside the controller (the l2 provider's IP pools).
pub trait Extension: Send + Sync + 'static {
    /// Runs once this replica leads, before any Service is reconciled (e.g. restores IP
    /// assignments). Each item of the returned stream makes every Service reconcile again.
    fn start(
        &self,
        ctx: Arc<Context>,
        shutdown: watch::Receiver<bool>,
    ) -> BoxFuture<'static, anyhow::Result<BoxStream<'static, ()>>>;
}

/// Where a running class publishes its context and Service cache for the admin endpoints.
type Cell = Arc<Mutex<Option<(Arc<Context>, Store<Service>)>>>;

/// Keeps of a Service what berth reads: drops managedFields and kubectl's copy of the last
/// applied manifest (as large as the Service itself), so 10,000 Services cost little memory.
pub fn prune_service(svc: &mut Service) {
    svc.metadata.managed_fields = None;
    if let Some(a) = svc.metadata.annotations.as_mut() {
        a.remove(LAST_APPLIED);
        if a.is_empty() {
            svc.metadata.annotations = None;
        }
    }
}

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What of a Service can change what berth does with it: everything but its status (and
/// bookkeeping such as resourceVersion and managedFields). berth's own status writes then do
/// not wake the reconciler again.
pub fn service_trigger_hash(svc: &Service) -> Option<u64> {
    let m = &svc.metadata;
    let key = serde_json::to_string(&(
        &m.uid,
        &m.generation,
        &m.labels,
        &m.annotations,
        &m.finalizers,
        &m.deletion_timestamp,
        &svc.spec,
    ))
    .ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    Some(h.finish())
}

/// Runs one class's controller until `shutdown` flips to true (Ok) or leadership is lost
/// (Err), with the admin endpoints at `opts.metrics_listen`.
pub async fn run(
    client: Client,
    provider: Arc<dyn Provider>,
    opts: ControllerOptions,
    shutdown: watch::Receiver<bool>,
    started: Option<tokio::sync::oneshot::Sender<Running>>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    let listen = opts.metrics_listen;
    serve(
        vec![ClassController {
            client,
            provider,
            opts,
            extension: None,
        }],
        listen,
        shutdown,
        started,
        metrics,
    )
    .await
}

/// Serves every class in `classes` from this process, with one admin server at `listen`.
/// Returns Ok on shutdown, Err as soon as one class loses its leadership (every class then
/// stops: the process restarts and each class competes for its lease afresh).
pub async fn serve(
    classes: Vec<ClassController>,
    listen: Option<SocketAddr>,
    shutdown: watch::Receiver<bool>,
    started: Option<tokio::sync::oneshot::Sender<Running>>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    let health = Arc::new(Health::default());
    for c in &classes {
        health.set_ready(&c.opts.settings.classes.class, false);
    }
    let cells: Vec<Cell> = classes.iter().map(|_| Cell::default()).collect();
    let admin_addr = match listen {
        Some(listen) => {
            let cells = cells.clone();
            let depth = Box::new(move || {
                for cell in &cells {
                    let Some((ctx, services)) =
                        cell.lock().unwrap_or_else(|e| e.into_inner()).clone()
                    else {
                        continue;
                    };
                    let targets = ctx.targets();
                    let n = services
                        .state()
                        .iter()
                        .filter(|s| ctx.settings.classes.wants_load_balancer(s))
                        .filter(|s| !ctx.is_converged(s, &targets))
                        .count();
                    ctx.metrics.set_queue_depth(n as i64);
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
    // One class failing (leadership lost) stops the others too.
    let (abort_tx, abort_rx) = watch::channel(false);
    let runs = classes.into_iter().zip(cells).map(|(c, cell)| {
        let m = metrics.for_class(&c.opts.settings.classes.class);
        let health = health.clone();
        let mut stop = shutdown.clone();
        let mut abort = abort_rx.clone();
        let abort_tx = abort_tx.clone();
        let (merged_tx, merged_rx) = watch::channel(false);
        tokio::spawn(async move {
            tokio::select! {
                _ = stopped(&mut stop) => {}
                _ = stopped(&mut abort) => {}
            }
            let _ = merged_tx.send(true);
        });
        async move {
            let r = run_class(c, merged_rx, health, m, cell).await;
            if r.is_err() {
                let _ = abort_tx.send(true);
            }
            r
        }
    });
    let results = futures::future::join_all(runs).await;
    health
        .shutting_down
        .store(true, std::sync::atomic::Ordering::Relaxed);
    for r in results {
        r?;
    }
    Ok(())
}

async fn run_class(
    c: ClassController,
    mut shutdown: watch::Receiver<bool>,
    health: Arc<Health>,
    metrics: ClassMetrics,
    cell: Cell,
) -> anyhow::Result<()> {
    let ClassController {
        client: base,
        provider,
        mut opts,
        extension,
    } = c;
    let class = opts.settings.classes.class.clone();
    if opts.settings.cluster.is_empty() {
        let reader = fenced_client(base.clone(), Fence::open(), opts.request_timeout);
        opts.settings.cluster = tokio::select! {
            id = crate::kube_util::cluster_id(&reader) => id?,
            _ = stopped(&mut shutdown) => return Ok(()),
        };
        info!(%class, cluster = %opts.settings.cluster, "No --cluster-name given; using the kube-system namespace's uid as the cluster id");
    }

    // Leadership: only the leader writes to the cloud and to the API server.
    let mut leader_task = None;
    let fence = if let Some(ls) = opts.leader.clone() {
        let lease_client = fenced_client(base.clone(), Fence::open(), opts.request_timeout);
        let mut elector = LeaderElector::new(lease_client, ls);
        health.set_ready(&class, true); // a standby is ready
        tokio::select! {
            _ = elector.acquire() => {}
            _ = stopped(&mut shutdown) => return Ok(()),
        }
        health.set_ready(&class, false);
        let fence = elector.fence();
        let mut stop = shutdown.clone();
        leader_task = Some(tokio::spawn(async move {
            tokio::select! {
                _ = elector.hold() => {}
                _ = stopped(&mut stop) => elector.release().await,
            }
        }));
        fence
    } else {
        Fence::open()
    };
    metrics.set_leader(true);
    let client = rate_limited_client(
        fenced_client(base.clone(), fence.clone(), opts.request_timeout),
        opts.kube_api_qps,
        opts.kube_api_burst,
    );

    let (node_targets, node_triggers, node_task) =
        node_sync::spawn(client.clone(), provider.clone(), opts.node_sync);
    // The Service cache, made here so the EndpointSlice watch can look Services up in it.
    let (services, writer) = reflector::store();
    // EndpointSlices, only for a provider that may send traffic to pods.
    let mut tasks = vec![node_task];
    let (mut node_targets, endpoint_triggers) = if provider.may_need_endpoints() {
        let (endpoints, triggers, task) = endpoints::spawn(
            client.clone(),
            services.clone(),
            provider.clone(),
            opts.settings.classes.clone(),
            opts.settings.cluster.clone(),
        );
        tasks.push(task);
        (
            node_targets.with_endpoints(endpoints),
            ReceiverStream::new(triggers).boxed(),
        )
    } else {
        (node_targets, futures::stream::pending().boxed())
    };
    let ready = tokio::select! {
        r = node_targets.wait_ready() => if r { Ok(()) } else { Err(anyhow::anyhow!("Node cache failed")) },
        _ = stopped(&mut shutdown) => return finish(&metrics, leader_task, &fence, tasks, true).await,
        _ = fence.lost() => Ok(()),
    };
    ready?;
    // Load balancers that target pods are not ensured before the slices are known: an empty
    // cache would deregister every pod.
    if provider.may_need_endpoints() {
        let ready = tokio::select! {
            r = node_targets.endpoints().wait_ready() => if r { Ok(()) } else { Err(anyhow::anyhow!("EndpointSlice cache failed")) },
            _ = stopped(&mut shutdown) => return finish(&metrics, leader_task, &fence, tasks, true).await,
            _ = fence.lost() => Ok(()),
        };
        ready?;
    }
    let recorder = EventSink::new(
        client.clone(),
        Reporter {
            controller: "berth".into(),
            instance: Some(opts.identity.clone()),
        },
    );
    let ctx = Context::new(
        client.clone(),
        provider.clone(),
        opts.settings.clone(),
        node_targets,
        recorder,
        metrics.clone(),
    )
    .with_fence(fence.clone());
    let ctx = Arc::new(ctx);
    let extension_triggers: BoxStream<'static, ()> = match &extension {
        Some(ext) => tokio::select! {
            r = ext.start(ctx.clone(), shutdown.clone()) => r?,
            _ = stopped(&mut shutdown) => return finish(&metrics, leader_task, &fence, tasks, true).await,
            _ = fence.lost() => futures::stream::pending().boxed(),
        },
        None => futures::stream::pending().boxed(),
    };
    let mut stop = shutdown.clone();
    let lost = fence.clone();
    let stop_signal = async move {
        tokio::select! {
            _ = stopped(&mut stop) => {}
            _ = lost.lost() => {}
        }
    };
    // The Service cache sees every change; the reconciler is woken only by those that can
    // change what berth does (not by status writes, berth's own included).
    let triggers = watcher(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(prune_service)
    .reflect(writer)
    .applied_objects()
    .predicate_filter(service_trigger_hash, Default::default());
    let controller = Controller::for_stream(triggers, services.clone())
        .with_config(controller::Config::default().concurrency(opts.workers))
        .reconcile_all_on(futures::stream::select(
            ReceiverStream::new(node_triggers),
            extension_triggers,
        ))
        .reconcile_on(endpoint_triggers)
        .graceful_shutdown_on(stop_signal);
    *cell.lock().unwrap_or_else(|e| e.into_inner()) = Some((ctx.clone(), services.clone()));
    {
        let services = services.clone();
        let health = health.clone();
        let class = class.clone();
        tokio::spawn(async move {
            if store_ready(&services).await {
                health.set_ready(&class, true);
                info!(%class, "Caches synced; reconciling");
            }
        });
    }
    let gc_task = tokio::spawn(
        Collector {
            provider: provider.clone(),
            services: services.clone(),
            client: client.clone(),
            classes: opts.settings.classes.clone(),
            cluster: opts.settings.cluster.clone(),
            interval: opts.gc_interval,
            max_deletes: opts.gc_max_deletes,
            metrics: metrics.clone(),
            fence: fence.clone(),
        }
        .run(),
    );
    info!(
        provider = provider.name(),
        %class,
        finalizer = %opts.settings.classes.finalizer,
        default_class = opts.settings.classes.default_class,
        cluster = %opts.settings.cluster,
        workers = opts.workers,
        lease = opts.leader.as_ref().map(|l| l.name.as_str()).unwrap_or("none"),
        "Controller running"
    );
    controller
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|_| async {})
        .await;
    gc_task.abort();
    let stopping = *shutdown.borrow();
    finish(&metrics, leader_task, &fence, tasks, stopping).await
}

/// Stops a class's background work; Err when it stopped because leadership was lost.
async fn finish(
    metrics: &ClassMetrics,
    leader_task: Option<tokio::task::JoinHandle<()>>,
    fence: &Fence,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stopping: bool,
) -> anyhow::Result<()> {
    for t in tasks {
        t.abort();
    }
    metrics.set_leader(false);
    let lost = !stopping && (fence.is_revoked() || fence.check().is_err());
    // On shutdown the leader task releases the lease; wait for it, or the runtime's shutdown
    // drops it half-way and the standby waits out the whole lease duration.
    if let Some(task) = leader_task {
        if lost {
            task.abort();
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    if lost {
        anyhow::bail!(
            "Lost the leader lease of class {}; exiting so a fresh replica can take over",
            metrics.class()
        );
    }
    info!(class = %metrics.class(), "Controller stopped");
    Ok(())
}

/// The class a provider serves by default: `berth.io/<provider>`.
pub fn default_class(provider: &str) -> String {
    format!("berth.io/{provider}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::tests::SvcB;

    #[test]
    fn status_changes_do_not_trigger_but_spec_and_metadata_do() {
        let s = SvcB::lb("a").port(80, "TCP", 30080).svc();
        let h = service_trigger_hash(&s);
        let mut with_status = s.clone();
        with_status.status = Some(Default::default());
        with_status.metadata.resource_version = Some("99".into());
        assert_eq!(service_trigger_hash(&with_status), h);
        let changed = SvcB::lb("a").port(81, "TCP", 30080).svc();
        assert_ne!(service_trigger_hash(&changed), h);
        let annotated = SvcB::lb("a").port(80, "TCP", 30080).ann("k", "v").svc();
        assert_ne!(service_trigger_hash(&annotated), h);
        let mut finalized = s.clone();
        finalized.metadata.finalizers = Some(vec!["berth.io/cleanup.x".into()]);
        assert_ne!(service_trigger_hash(&finalized), h);
    }
}
