//! The reconciler: one Service at a time, idempotent, tolerant of any earlier crash.
//!
//! The finalizer decides the branch: a Service that wants a load balancer from this class
//! gets the class's finalizer first and then its load balancer; one that no longer does
//! (deleted, type changed) and carries this class's finalizer (or the legacy shared one,
//! when no other class can own it: see [`crate::service::ClassFilter::claims`]) gets its
//! load balancer deleted, its status cleared and the finalizer removed. Services of other
//! classes, and Services berth never touched, are left alone.
//!
//! Every write (to the API server through the fenced client, to the provider through
//! [`Context::call`]) happens only while this replica leads; a reconcile in flight when
//! leadership is lost is cancelled.
//!
//! The pure decisions (which branch, whether to call the provider) are in `decide.rs`; this
//! file performs them (`apply`, `cleanup`) and publishes what the owner sees (status,
//! condition, events) through [`Context`]; `annotations.rs` warns about annotations the
//! provider ignores.

use crate::desired::{InvalidField, desired_load_balancer};
use crate::leader::Fence;
use crate::metrics::ClassMetrics;
use crate::service::{ClassFilter, LEGACY_FINALIZER, key, uid};
use crate::text::{bounded, redact};
use crate::{nodeports, status};
use berth_api::names::{condition_reasons, reasons};
use berth_providers::{
    DesiredLoadBalancer, LABEL_CLASS, LoadBalancerRef, LoadBalancerStatus, Provider, ProviderError,
    ServiceRef, naming,
};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{info, warn};

pub mod adopt;
mod annotations;
mod decide;
#[cfg(test)]
mod tests;

pub use decide::{Branch, Change, Digests, EnsurePlan, branch, plan_ensure};

/// The longest event note the API server accepts.
pub const MAX_EVENT_NOTE: usize = 1024;
/// The longest condition message berth writes.
pub const MAX_CONDITION_MESSAGE: usize = 1024;

/// Settings the reconciler needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub cluster: String,
    pub classes: ClassFilter,
    /// Re-check every load balancer against the cloud this often (drift repair).
    pub resync: Duration,
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub node_port_range: std::ops::RangeInclusive<u16>,
    /// Controllers whose load balancers are taken over (`--adopt`).
    pub adopt: Vec<berth_providers::adopt::AdoptFrom>,
}

#[derive(thiserror::Error, Debug)]
pub enum Error {
    #[error("Kubernetes API request failed")]
    Kube(#[source] kube::Error),
    #[error("Load balancer provider failed")]
    Provider(#[source] ProviderError),
    #[error("Not the leader any more; the reconcile was stopped")]
    Fenced,
}

impl Error {
    /// A short stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            _ if self.is_fenced() => "fenced",
            Error::Kube(_) => "kube",
            Error::Provider(e) => e.metric_label(),
            Error::Fenced => "fenced",
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Provider(e) => e.retry_after(),
            _ => None,
        }
    }

    fn is_fenced(&self) -> bool {
        match self {
            Error::Fenced => true,
            Error::Kube(e) => crate::kube_util::is_fenced(e),
            Error::Provider(_) => false,
        }
    }
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Kube(e)
    }
}

/// What berth last made a load balancer look like.
#[derive(Debug, Clone)]
struct Ensured {
    desired: Digests,
    status: LoadBalancerStatus,
    at: Instant,
}

pub struct Context {
    pub client: Client,
    pub provider: Arc<dyn Provider>,
    pub settings: Settings,
    /// The node targets, as last published by [`crate::node_sync`].
    pub nodes: crate::node_sync::NodeTargets,
    /// Events, written in the background and aggregated ([`crate::events`]).
    pub recorder: crate::events::EventSink,
    pub metrics: ClassMetrics,
    /// Open while this replica may write.
    pub fence: Fence,
    ensured: Mutex<HashMap<String, Ensured>>,
    /// The last node list digested, and its digest (every Service shares the list).
    targets_digest: Mutex<Option<(berth_providers::Targets, u64)>>,
    /// The last warning published per Service uid, so a broken Service is reported once.
    warned: Mutex<HashMap<String, String>>,
    /// The ignored-annotation findings published per Service uid (see `annotations.rs`).
    annotation_findings: Mutex<HashMap<String, BTreeSet<String>>>,
    /// Consecutive failures per Service uid (the backoff exponent).
    failures: Mutex<HashMap<String, u32>>,
    /// Consecutive looks at a load balancer that has no address yet, per Service uid.
    pending: Mutex<HashMap<String, u32>>,
}

/// The note of `EnsuringLoadBalancer` (constant, as upstream's).
const ENSURING_NOTE: &str = "Ensuring load balancer";

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `base` doubled per earlier attempt (`n` counts this one), capped, with ±20 % jitter.
pub fn backoff(n: u32, min: Duration, max: Duration) -> Duration {
    let base = min
        .saturating_mul(1u32 << n.saturating_sub(1).min(16))
        .min(max);
    base.mul_f64(rand::random_range(0.8..1.2))
}

impl Context {
    /// Counts one more consecutive failure of `svc`; returns the count.
    fn failed_again(&self, svc: &Service) -> u32 {
        let mut f = locked(&self.failures);
        let n = f.entry(uid(svc)).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    /// The wait before looking again at a Service whose attempt failed once more.
    fn next_backoff(&self, svc: &Service) -> Duration {
        let n = self.failed_again(svc);
        backoff(n, self.settings.retry_min, self.settings.retry_max)
    }

    pub fn new(
        client: Client,
        provider: Arc<dyn Provider>,
        settings: Settings,
        nodes: crate::node_sync::NodeTargets,
        recorder: crate::events::EventSink,
        metrics: ClassMetrics,
    ) -> Self {
        Context {
            client,
            provider,
            settings,
            nodes,
            recorder,
            metrics,
            fence: Fence::open(),
            ensured: Mutex::default(),
            targets_digest: Mutex::default(),
            warned: Mutex::default(),
            annotation_findings: Mutex::default(),
            failures: Mutex::default(),
            pending: Mutex::default(),
        }
    }

    /// Gates every write on `fence`.
    pub fn with_fence(mut self, fence: Fence) -> Self {
        self.fence = fence;
        self
    }

    /// Forgets what berth last ensured for the Service `uid`, so its next reconcile calls
    /// the provider again (e.g. its address left every pool).
    pub fn forget(&self, uid: &str) {
        self.lock_ensured().remove(uid);
    }

    /// The targets every load balancer should have now: eligible nodes the provider can
    /// send traffic to (a node joins once its kubelet reports what the provider needs).
    /// Computed once per node change and shared, never per reconcile.
    pub fn targets(&self) -> berth_providers::Targets {
        self.nodes.get()
    }

    /// The load balancer `svc` should have, labelled with this class.
    pub fn desired(
        &self,
        svc: &Service,
        targets: &berth_providers::Targets,
    ) -> Result<DesiredLoadBalancer, InvalidField> {
        let mut d = desired_load_balancer(
            svc,
            targets,
            &self.settings.cluster,
            self.provider.needs_node_ports(),
        )?;
        d.labels
            .insert(LABEL_CLASS.into(), self.settings.classes.class.clone());
        self.nodes
            .endpoints()
            .fill(&mut d, svc, self.provider.as_ref());
        Ok(d)
    }

    /// Whether `svc`'s load balancer already matches what it should be.
    pub fn is_converged(&self, svc: &Service, targets: &berth_providers::Targets) -> bool {
        let Ok(d) = self.desired(svc, targets) else {
            return true; // invalid: nothing to converge until the user fixes it
        };
        let digests = self.digests(&d);
        self.lock_ensured()
            .get(&uid(svc))
            .is_some_and(|e| e.desired == digests && !e.status.ingress.is_empty())
    }

    /// `d`'s digests; the shared node list is digested once per list. The cache holds the
    /// list itself, so its address cannot be reused by another list while it is compared.
    fn digests(&self, d: &DesiredLoadBalancer) -> Digests {
        let targets = {
            let mut cache = locked(&self.targets_digest);
            match &*cache {
                Some((list, digest)) if Arc::ptr_eq(list, &d.targets) => *digest,
                _ => {
                    let digest = decide::targets_digest(&d.targets);
                    *cache = Some((d.targets.clone(), digest));
                    digest
                }
            }
        };
        Digests::of(d, targets)
    }

    fn lock_ensured(&self) -> std::sync::MutexGuard<'_, HashMap<String, Ensured>> {
        locked(&self.ensured)
    }

    pub fn tracked_load_balancers(&self) -> usize {
        self.lock_ensured().len()
    }

    /// Publishes an event; the note is cut to what the API server accepts and stripped of
    /// credentials.
    async fn event(&self, svc: &Service, type_: EventType, reason: &str, note: String) {
        self.publish(svc, type_, reason, reason, note).await;
    }

    /// [`Context::event`] with its `action`, telling whether the event was published. Events
    /// of one Service with the same type, reason and action are one series (the recorder
    /// counts them and keeps the first note).
    async fn publish(
        &self,
        svc: &Service,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) -> bool {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(bounded(&redact(&note), MAX_EVENT_NOTE)),
            action: action.into(),
            secondary: None,
        };
        match self.recorder.publish(&ev, &svc.object_ref(&())).await {
            Ok(()) => {
                self.metrics.event();
                true
            }
            Err(e) if crate::kube_util::is_fenced(&e) => false,
            Err(e) => {
                warn!(service = %key(svc), error = %e, "Cannot publish event");
                false
            }
        }
    }

    /// Publishes a warning unless the same one was already published for this Service.
    async fn warn_once(&self, svc: &Service, reason: &str, note: String) {
        let id = uid(svc);
        let fresh = {
            let mut w = locked(&self.warned);
            let k = format!("{reason}: {note}");
            if w.get(&id) == Some(&k) {
                false
            } else {
                w.insert(id, k);
                true
            }
        };
        if fresh {
            self.event(svc, EventType::Warning, reason, note).await;
        }
    }

    fn clear_warning(&self, svc: &Service) {
        locked(&self.warned).remove(&uid(svc));
    }

    fn api(&self, svc: &Service) -> Api<Service> {
        Api::namespaced(
            self.client.clone(),
            svc.metadata.namespace.as_deref().unwrap_or("default"),
        )
    }

    async fn patch_status(&self, svc: &Service, patch: serde_json::Value) -> Result<(), Error> {
        self.api(svc)
            .patch_status(
                &svc.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        Ok(())
    }

    /// Sets berth's condition (when it changes), with a bounded, credential-free message.
    async fn set_condition(
        &self,
        svc: &Service,
        ok: bool,
        reason: &str,
        message: &str,
        ingress: Option<Vec<serde_json::Value>>,
    ) -> Result<(), Error> {
        let message = bounded(&redact(message), MAX_CONDITION_MESSAGE);
        let conds = status::conditions_with(svc, ok, reason, &message);
        if let Some(p) = status::status_patch(svc, ingress, conds) {
            self.patch_status(svc, p).await?;
        }
        Ok(())
    }

    /// One provider call: only while leading, cut off when leadership's deadline passes, and
    /// measured.
    pub async fn call<T>(
        &self,
        op: &'static str,
        f: impl std::future::Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, Error> {
        let left = self.fence.check().map_err(|_| Error::Fenced)?;
        let started = Instant::now();
        let res = match left {
            None => f.await.map_err(Error::Provider),
            Some(left) => match tokio::time::timeout(left, f).await {
                Ok(r) => r.map_err(Error::Provider),
                Err(_) => Err(Error::Fenced),
            },
        };
        let outcome = match &res {
            Ok(_) => "success",
            Err(e) => e.metric_label(),
        };
        self.metrics
            .provider_call(self.provider.name(), op, outcome, started.elapsed());
        res
    }
}

/// How a reconcile ended, for the metrics.
struct Done {
    action: Action,
    result: &'static str,
    /// The Service's failure count carries on (a refusal retried with backoff).
    keep_backoff: bool,
}

impl Done {
    fn ok(action: Action) -> Result<Done, Error> {
        Ok(Done::new(action, "success"))
    }

    fn new(action: Action, result: &'static str) -> Done {
        Done {
            action,
            result,
            keep_backoff: false,
        }
    }
}

/// Reconciles one Service.
pub async fn reconcile(svc: Arc<Service>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    ctx.metrics.in_flight(1);
    let work = async {
        ctx.fence.check().map_err(|_| Error::Fenced)?;
        match branch(&ctx.settings.classes, &svc) {
            Branch::AddFinalizer => {
                if let Some(done) = adopt::gate(&svc, &ctx).await? {
                    return Ok(done);
                }
                add_finalizer(&svc, &ctx).await?;
                // The finalizer's own watch event brings the Service back at once; carrying
                // on here as well would call the provider twice for every new Service (and
                // for a failing one, twice before any backoff).
                Done::ok(Action::requeue(Duration::from_secs(1)))
            }
            Branch::Apply => {
                let done = apply(&svc, &ctx).await?;
                adopt::release(&svc, &ctx).await?;
                Ok(done)
            }
            Branch::CleanUp => cleanup(&svc, &ctx).await,
            Branch::Ignore => {
                forget_service(&ctx, &uid(&svc));
                Done::ok(Action::await_change())
            }
        }
    };
    // Leadership lost mid-way: drop the reconcile (and its in-flight requests) at once.
    let res = tokio::select! {
        r = work => r,
        _ = ctx.fence.lost() => Err(Error::Fenced),
    };
    ctx.metrics.in_flight(-1);
    ctx.metrics.reconcile_took(started.elapsed());
    let res = match res {
        Ok(done) => {
            ctx.metrics.reconciled(done.result);
            if !done.keep_backoff {
                locked(&ctx.failures).remove(&uid(&svc));
            }
            Ok(done.action)
        }
        Err(e) => {
            ctx.metrics.reconciled("error");
            ctx.metrics.error(e.metric_label());
            Err(e)
        }
    };
    ctx.metrics
        .set_load_balancers(ctx.tracked_load_balancers() as i64);
    res
}

/// Drops what the reconciler remembers about a Service it no longer serves.
fn forget_service(ctx: &Context, id: &str) {
    ctx.lock_ensured().remove(id);
    locked(&ctx.pending).remove(id);
    locked(&ctx.warned).remove(id);
    locked(&ctx.annotation_findings).remove(id);
}

/// Backs off per Service: retry_min doubling to retry_max, with jitter, and never sooner
/// than a provider's Retry-After.
pub fn error_policy(svc: Arc<Service>, err: &Error, ctx: Arc<Context>) -> Action {
    if err.is_fenced() {
        // This replica is stepping down; the next leader starts afresh.
        return Action::await_change();
    }
    let n = ctx.failed_again(&svc);
    let mut delay = backoff(n, ctx.settings.retry_min, ctx.settings.retry_max);
    if let Some(ra) = err.retry_after() {
        delay = delay.max(ra.min(ctx.settings.retry_max));
    }
    warn!(service = %key(&svc), attempt = n, retry_in = ?delay, error = %bounded(&redact(&error_chain(err)), 2048), "Reconcile failed");
    Action::requeue(delay)
}

/// `error: cause: cause` on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// What a provider failure says in events and conditions: bounded and free of credentials.
fn provider_message(e: &ProviderError) -> String {
    bounded(&redact(&error_chain(e)), 512)
}

async fn add_finalizer(svc: &Service, ctx: &Context) -> Result<(), Error> {
    let rv = svc.resource_version();
    let finalizer = &ctx.settings.classes.finalizer;
    let patch = if svc.metadata.finalizers.is_none() {
        json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
            {"op": "add", "path": "/metadata/finalizers", "value": [finalizer]},
        ])
    } else {
        json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
            {"op": "add", "path": "/metadata/finalizers/-", "value": finalizer},
        ])
    };
    let patch: json_patch::Patch =
        serde_json::from_value(patch).map_err(|e| Error::Kube(kube::Error::SerdeError(e)))?;
    ctx.api(svc)
        .patch(
            &svc.name_any(),
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        )
        .await?;
    Ok(())
}

/// Removes this class's finalizer and the legacy shared one (when present) in one patch that
/// fails if the list changed meanwhile.
async fn remove_finalizers(svc: &Service, ctx: &Context) -> Result<(), Error> {
    let ours = [ctx.settings.classes.finalizer.as_str(), LEGACY_FINALIZER];
    let mut idx: Vec<(usize, String)> = svc
        .metadata
        .finalizers
        .iter()
        .flatten()
        .enumerate()
        .filter(|(_, f)| ours.contains(&f.as_str()))
        .map(|(i, f)| (i, f.clone()))
        .collect();
    if idx.is_empty() {
        return Ok(());
    }
    idx.reverse(); // remove from the end so earlier indexes stay valid
    let mut ops = Vec::new();
    for (i, f) in &idx {
        ops.push(json!({"op": "test", "path": format!("/metadata/finalizers/{i}"), "value": f}));
        ops.push(json!({"op": "remove", "path": format!("/metadata/finalizers/{i}")}));
    }
    let patch: json_patch::Patch = serde_json::from_value(serde_json::Value::Array(ops))
        .map_err(|e| Error::Kube(kube::Error::SerdeError(e)))?;
    match ctx
        .api(svc)
        .patch(
            &svc.name_any(),
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(Error::Kube(e)),
    }
}

async fn apply(svc: &Service, ctx: &Context) -> Result<Done, Error> {
    annotations::warn_ignored_annotations(svc, ctx).await;
    let mut svc = svc.clone();
    if ctx.provider.needs_node_ports() {
        match nodeports::ensure_node_ports(&ctx.client, &svc, &ctx.settings.node_port_range).await {
            Ok(Some(updated)) => svc = updated,
            Ok(None) => {}
            Err(nodeports::AllocError::Exhausted(msg)) => {
                return invalid_input(
                    &svc,
                    ctx,
                    InvalidField {
                        field: "spec.ports[].nodePort".into(),
                        message: msg,
                    },
                )
                .await;
            }
            Err(nodeports::AllocError::Kube(e)) => return Err(Error::Kube(e)),
        }
    }
    let targets = ctx.targets();
    let desired = match ctx.desired(&svc, &targets) {
        Ok(d) => d,
        Err(inv) => return invalid_input(&svc, ctx, inv).await,
    };
    if let Err(e) = ctx.provider.validate(&desired) {
        return match e {
            ProviderError::Invalid { field, message } => {
                invalid_input(&svc, ctx, InvalidField { field, message }).await
            }
            other => Err(Error::Provider(other)),
        };
    }
    let id = uid(&svc);
    let digests = ctx.digests(&desired);
    let previous = ctx.lock_ensured().get(&id).cloned();
    let plan = plan_ensure(
        &digests,
        previous
            .as_ref()
            .map(|p| (&p.desired, !p.status.ingress.is_empty(), p.at.elapsed())),
        ctx.settings.resync,
        ctx.provider.reads_service_facts(),
        status::shows_ensured(&svc),
    );
    let lb_status = if let (EnsurePlan::UpToDate, Some(p)) = (plan, previous.as_ref()) {
        p.status.clone()
    } else {
        let change = match plan {
            EnsurePlan::Call(c) => c,
            EnsurePlan::UpToDate => Change::Recheck,
        };
        let only_targets = change == Change::Targets;
        if targets.is_empty() {
            ctx.warn_once(
                &svc,
                reasons::UNAVAILABLE_LOAD_BALANCER,
                "There are no available nodes for LoadBalancer".into(),
            )
            .await;
        }
        if change == Change::Spec {
            ctx.event(
                &svc,
                EventType::Normal,
                reasons::ENSURING_LOAD_BALANCER,
                ENSURING_NOTE.into(),
            )
            .await;
        }
        let st = match ctx.call("ensure", ctx.provider.ensure(&desired)).await {
            Ok(st) => st,
            Err(Error::Provider(ProviderError::Invalid { field, message })) => {
                // Refused against the cloud as it is now (a port of a shared load balancer
                // that another Service holds, a certificate not yet in the account): that can
                // clear with no change to this Service, so it is looked at again, backing off
                // to --retry-max, as well as on every change.
                let mut done = invalid_input(&svc, ctx, InvalidField { field, message }).await?;
                done.action = Action::requeue(ctx.next_backoff(&svc));
                done.keep_backoff = true;
                return Ok(done);
            }
            Err(Error::Provider(e)) => {
                let (reason, msg) = if only_targets {
                    (
                        reasons::UPDATE_LOAD_BALANCER_FAILED,
                        format!(
                            "Error updating load balancer with new hosts: {}",
                            provider_message(&e)
                        ),
                    )
                } else {
                    (
                        reasons::SYNC_LOAD_BALANCER_FAILED,
                        format!(
                            "Error syncing load balancer: failed to ensure load balancer: {}",
                            provider_message(&e)
                        ),
                    )
                };
                ctx.event(&svc, EventType::Warning, reason, msg.clone())
                    .await;
                // The condition carries a stable text (no request ids), so a Service that
                // keeps failing the same way is not rewritten on every attempt.
                let stable = format!(
                    "Error syncing load balancer: {}; see the Service's events for details",
                    e.summary()
                );
                let _ = ctx
                    .set_condition(&svc, false, condition_reasons::SYNC_FAILED, &stable, None)
                    .await;
                return Err(Error::Provider(e));
            }
            Err(e) => return Err(e),
        };
        if only_targets {
            ctx.event(
                &svc,
                EventType::Normal,
                reasons::UPDATED_LOAD_BALANCER,
                "Updated load balancer with new hosts".into(),
            )
            .await;
        } else if change == Change::Spec
            || (change == Change::Resume
                && status::ingress(&st, &svc) != status::current_ingress(&svc))
        {
            if change == Change::Spec {
                ctx.recorder.supersede(
                    &svc.object_ref(&()),
                    reasons::ENSURING_LOAD_BALANCER,
                    ENSURING_NOTE,
                );
            }
            ctx.event(
                &svc,
                EventType::Normal,
                reasons::ENSURED_LOAD_BALANCER,
                "Ensured load balancer".into(),
            )
            .await;
            info!(service = %key(&svc), id = %desired.id, "Ensured load balancer");
        }
        ctx.lock_ensured().insert(
            id.clone(),
            Ensured {
                desired: digests,
                status: st.clone(),
                at: Instant::now(),
            },
        );
        st
    };
    ctx.clear_warning(&svc);
    let ingress = status::ingress(&lb_status, &svc);
    if lb_status.ingress.is_empty() {
        // The provider is still allocating an address: look again later, backing off.
        let n = {
            let mut p = locked(&ctx.pending);
            let n = p.entry(id.clone()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        ctx.set_condition(
            &svc,
            false,
            condition_reasons::ADDRESS_PENDING,
            &format!(
                "Load balancer {} has no address yet; waiting for the provider",
                desired.id
            ),
            Some(ingress),
        )
        .await?;
        let delay = backoff(
            n,
            ctx.settings.retry_min.max(Duration::from_secs(1)),
            ctx.settings.retry_max,
        );
        return Done::ok(Action::requeue(delay));
    }
    locked(&ctx.pending).remove(&id);
    let address = ingress
        .iter()
        .filter_map(|i| i["ip"].as_str().or(i["hostname"].as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    ctx.set_condition(
        &svc,
        true,
        condition_reasons::ENSURED,
        &format!("Load balancer {} serves {address}", desired.id),
        Some(ingress),
    )
    .await?;
    Done::ok(Action::requeue(ctx.settings.resync))
}

/// Bad input: one Warning event naming the field, a False condition, nothing created or
/// changed, and no retry until the Service changes.
async fn invalid_input(svc: &Service, ctx: &Context, inv: InvalidField) -> Result<Done, Error> {
    let msg = format!(
        "Error syncing load balancer: invalid {}: {}",
        inv.field, inv.message
    );
    ctx.warn_once(svc, reasons::SYNC_LOAD_BALANCER_FAILED, msg.clone())
        .await;
    ctx.set_condition(
        svc,
        false,
        condition_reasons::INVALID_CONFIGURATION,
        &msg,
        None,
    )
    .await?;
    Ok(Done::new(Action::await_change(), "invalid"))
}

async fn cleanup(svc: &Service, ctx: &Context) -> Result<Done, Error> {
    let id = uid(svc);
    let lb = LoadBalancerRef {
        id: naming::load_balancer_id(
            &ctx.settings.cluster,
            svc.metadata.namespace.as_deref().unwrap_or("default"),
            &svc.name_any(),
            &id,
        ),
        cluster: ctx.settings.cluster.clone(),
        service: ServiceRef {
            namespace: svc.metadata.namespace.clone().unwrap_or_default(),
            name: svc.name_any(),
            uid: id.clone(),
        },
    };
    ctx.event(
        svc,
        EventType::Normal,
        reasons::DELETING_LOAD_BALANCER,
        "Deleting load balancer".into(),
    )
    .await;
    match ctx.call("delete", ctx.provider.delete(&lb)).await {
        Ok(()) => {}
        Err(Error::Provider(e)) => {
            let msg = format!("Error deleting load balancer: {}", provider_message(&e));
            ctx.event(
                svc,
                EventType::Warning,
                reasons::DELETE_LOAD_BALANCER_FAILED,
                msg,
            )
            .await;
            return Err(Error::Provider(e));
        }
        Err(e) => return Err(e),
    }
    forget_service(ctx, &id);
    if svc.metadata.deletion_timestamp.is_none() {
        // Still a Service (type changed): clear what berth published.
        let conds: Option<Vec<serde_json::Value>> = svc.status.as_ref().and_then(|s| {
            s.conditions.as_ref().and_then(|cs| {
                cs.iter().any(|c| c.type_ == status::CONDITION).then(|| {
                    cs.iter()
                        .filter(|c| c.type_ != status::CONDITION)
                        .map(|c| serde_json::to_value(c).unwrap_or_default())
                        .collect()
                })
            })
        });
        if let Some(p) = status::status_patch(svc, Some(Vec::new()), conds) {
            ctx.patch_status(svc, p).await?;
        }
    }
    remove_finalizers(svc, ctx).await?;
    ctx.event(
        svc,
        EventType::Normal,
        reasons::DELETED_LOAD_BALANCER,
        "Deleted load balancer".into(),
    )
    .await;
    info!(service = %key(svc), id = %lb.id, "Deleted load balancer");
    Done::ok(Action::await_change())
}
