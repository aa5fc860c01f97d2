//! The `l2` provider's controller side: IP pools and allocation.
//!
//! Before the Service controller reconciles anything, [`L2Pools::start`] loads the pools
//! and namespace labels into the provider and restores every address already published in
//! a Service's `status.loadBalancer.ingress` (stable across restarts). Then it keeps
//! watching pools and namespaces, publishes `IPAllocated` / `AllocationFailed` events,
//! writes each pool's status (counts and a `Valid` condition) only when it changes, and
//! asks for every Service to be reconciled again when pools change or an address frees up
//! while some Service waits for one.
//!
//! It also mirrors the speakers' `ServiceL2Status` reports into the Service annotation
//! `berth.io/announcing-node` and creates the speakers' membership-key Secret in its own
//! namespace (`$POD_NAMESPACE`) when absent ([`announce`]).

pub mod announce;
pub use berth_api::crd;
mod status;

use crate::desired::desired_load_balancer;
use crate::kube_util::stopped;
use crate::reconcile::Context;
use crate::run::Extension;
use berth_providers::l2::{AllocEvent, L2Provider, PoolSpec};
use crd::IPAddressPool;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, ObjectReference, Service};
use kube::api::ListParams;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

/// The addresses a Service publishes now.
pub fn published_ips(svc: &Service) -> Vec<IpAddr> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|is| {
            is.iter()
                .filter_map(|i| i.ip.as_deref().and_then(|ip| ip.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// Pools in precedence order: oldest first, then by name (an older pool wins an overlap).
fn pool_specs(pools: &[Arc<IPAddressPool>]) -> Vec<PoolSpec> {
    crd::pool_specs(pools.iter().map(AsRef::as_ref))
}

fn service_ref(s: &berth_providers::ServiceRef) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Service".into()),
        namespace: Some(s.namespace.clone()),
        name: Some(s.name.clone()),
        uid: Some(s.uid.clone()),
        ..Default::default()
    }
}

/// The l2 wiring, plugged into [`crate::run::run_with`].
pub struct L2Pools {
    provider: Arc<L2Provider>,
}

impl L2Pools {
    pub fn new(provider: Arc<L2Provider>) -> Self {
        Self { provider }
    }
}

impl Extension for L2Pools {
    fn start(
        &self,
        ctx: Arc<Context>,
        shutdown: watch::Receiver<bool>,
    ) -> BoxFuture<'static, anyhow::Result<BoxStream<'static, ()>>> {
        let provider = self.provider.clone();
        async move { start(provider, ctx, shutdown).await }.boxed()
    }
}

/// Loads pools, namespaces and published addresses, then spawns the watchers.
async fn start(
    provider: Arc<L2Provider>,
    ctx: Arc<Context>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<BoxStream<'static, ()>> {
    let client = ctx.client.clone();
    let pools_api = Api::<IPAddressPool>::all(client.clone());
    let (trigger_tx, mut trigger_rx) = mpsc::channel::<()>(1);
    let events = provider.subscribe();

    // 1. Pools (a missing CRD is not fatal: the watcher picks pools up once it exists).
    let initial: Vec<Arc<IPAddressPool>> = match pools_api.list(&ListParams::default()).await {
        Ok(l) => l.items.into_iter().map(Arc::new).collect(),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            warn!(
                "The IPAddressPool CRD is not installed; no Service gets an address until it is (berth crds | kubectl apply -f -)"
            );
            Vec::new()
        }
        Err(e) => return Err(anyhow::anyhow!("Cannot list IPAddressPools: {e}")),
    };
    let specs = pool_specs(&initial);
    let (results, _) = provider.set_pools(&specs);
    for r in &results {
        if let Err(e) = &r.result {
            warn!(pool = %r.name, error = %e, "Invalid IPAddressPool");
        }
    }

    // 2. Namespace labels.
    let namespaces = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| anyhow::anyhow!("Cannot list namespaces: {e}"))?;
    for ns in namespaces.items {
        provider.set_namespace_labels(&ns.name_any(), ns.metadata.labels.unwrap_or_default());
    }

    // 3. Published addresses, before anything new is allocated.
    let services = Api::<Service>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| anyhow::anyhow!("Cannot list Services: {e}"))?;
    let (mut restored, mut failed) = (0usize, 0usize);
    for svc in services.items.iter() {
        if !ctx.settings.classes.wants_load_balancer(svc) {
            continue;
        }
        let ips = published_ips(svc);
        if ips.is_empty() {
            continue;
        }
        let Ok(d) = desired_load_balancer(svc, &Default::default(), &ctx.settings.cluster, false)
        else {
            continue;
        };
        match provider.restore(&d, &ips) {
            Ok(()) => restored += 1,
            Err(e) => {
                failed += 1;
                warn!(service = %crate::service::key(svc), error = %e, "Cannot keep the published address; the Service gets a new one");
            }
        }
    }
    info!(
        pools = results.iter().filter(|r| r.result.is_ok()).count(),
        restored, failed, "IP pools loaded; published addresses restored"
    );

    // 4. Watchers.
    let (status_tx, status_rx) = watch::channel(());
    let (pool_store, pool_writer) = reflector::store::<IPAddressPool>();
    let pool_events = watcher(pools_api.clone(), watcher::Config::default())
        .default_backoff()
        .reflect(pool_writer);
    let tasks = vec![
        tokio::spawn(watch_pools(
            provider.clone(),
            ctx.clone(),
            pool_store.clone(),
            pool_events.boxed(),
            specs,
            trigger_tx.clone(),
            status_tx.clone(),
        )),
        tokio::spawn(watch_namespaces(
            provider.clone(),
            ctx.clone(),
            trigger_tx.clone(),
        )),
        tokio::spawn(relay_events(
            provider.clone(),
            ctx.clone(),
            events,
            trigger_tx.clone(),
            status_tx.clone(),
        )),
        tokio::spawn(status::write_loop(
            provider.clone(),
            ctx.clone(),
            pool_store,
            status_rx,
        )),
        tokio::spawn(announce::mirror(client.clone(), shutdown.clone())),
    ];
    let mut tasks = tasks;
    match std::env::var("POD_NAMESPACE") {
        Ok(ns) if !ns.is_empty() => tasks.push(tokio::spawn(announce::keep_membership_secret(
            client.clone(),
            ns,
            shutdown.clone(),
        ))),
        _ => info!("POD_NAMESPACE is not set; not creating the speakers' membership key Secret"),
    }
    let mut stop = shutdown;
    tokio::spawn(async move {
        stopped(&mut stop).await;
        for t in tasks {
            t.abort();
        }
    });
    Ok(futures::stream::poll_fn(move |cx| trigger_rx.poll_recv(cx)).boxed())
}

fn forget_all(ctx: &Context, uids: &[String]) {
    for uid in uids {
        ctx.forget(uid);
    }
}

async fn watch_pools(
    provider: Arc<L2Provider>,
    ctx: Arc<Context>,
    store: Store<IPAddressPool>,
    mut events: BoxStream<'static, Result<watcher::Event<IPAddressPool>, watcher::Error>>,
    mut last: Vec<PoolSpec>,
    trigger: mpsc::Sender<()>,
    status: watch::Sender<()>,
) {
    let mut ready = false;
    while let Some(ev) = events.next().await {
        match ev {
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => continue,
            Ok(watcher::Event::InitDone) => ready = true,
            Ok(_) => {}
            Err(e) => {
                warn!(error = %e, "IPAddressPool watch failed; retrying");
                continue;
            }
        }
        if !ready {
            continue;
        }
        let specs = pool_specs(&store.state());
        let _ = status.send(());
        if specs == last {
            continue;
        }
        let (results, broken) = provider.set_pools(&specs);
        for r in &results {
            match &r.result {
                Ok(()) => {}
                Err(e) => warn!(pool = %r.name, error = %e, "Invalid IPAddressPool"),
            }
        }
        info!(
            pools = results.iter().filter(|r| r.result.is_ok()).count(),
            invalid = results.iter().filter(|r| r.result.is_err()).count(),
            moved = broken.len(),
            "IP pools changed"
        );
        forget_all(&ctx, &broken);
        last = specs;
        let _ = trigger.try_send(());
    }
}

async fn watch_namespaces(provider: Arc<L2Provider>, ctx: Arc<Context>, trigger: mpsc::Sender<()>) {
    let events = watcher(
        Api::<Namespace>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .touched_objects();
    let mut events = std::pin::pin!(events);
    while let Some(ev) = events.next().await {
        let ns = match ev {
            Ok(ns) => ns,
            Err(e) => {
                warn!(error = %e, "Namespace watch failed; retrying");
                continue;
            }
        };
        let broken =
            provider.set_namespace_labels(&ns.name_any(), ns.metadata.labels.unwrap_or_default());
        if !broken.is_empty() || provider.has_failures() {
            forget_all(&ctx, &broken);
            let _ = trigger.try_send(());
        }
    }
}

/// Turns allocation events into Kubernetes events; retries waiting Services when an
/// address frees up.
async fn relay_events(
    provider: Arc<L2Provider>,
    ctx: Arc<Context>,
    mut events: mpsc::UnboundedReceiver<AllocEvent>,
    trigger: mpsc::Sender<()>,
    status: watch::Sender<()>,
) {
    while let Some(ev) = events.recv().await {
        let _ = status.send(());
        let (svc, type_, reason, note) = match ev {
            AllocEvent::Allocated { service, ips, pool } => {
                let list: Vec<String> = ips.iter().map(|i| i.to_string()).collect();
                let word = if list.len() == 1 { "IP" } else { "IPs" };
                info!(service = %format!("{}/{}", service.namespace, service.name), ips = %list.join(", "), %pool, "Assigned IP");
                (
                    service,
                    EventType::Normal,
                    berth_api::names::reasons::IP_ALLOCATED,
                    format!("Assigned {word} {} from pool {pool}", list.join(", ")),
                )
            }
            AllocEvent::Failed { service, message } => (
                service,
                EventType::Warning,
                berth_api::names::reasons::ALLOCATION_FAILED,
                format!("Failed to allocate IP: {message}"),
            ),
            AllocEvent::Released { .. } => {
                if provider.has_failures() {
                    let _ = trigger.try_send(());
                }
                continue;
            }
        };
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&ev, &service_ref(&svc)).await {
            warn!(error = %e, "Cannot publish event");
        }
    }
}

/// How often pool status is brought up to date at most.
const STATUS_INTERVAL: Duration = Duration::from_millis(500);
