//! The reconciler: one Service at a time, idempotent, tolerant of any earlier crash.
//!
//! The finalizer decides the branch: a Service that wants a load balancer gets the finalizer
//! first and then its load balancer; one that no longer does (deleted, type or class changed)
//! and still carries the finalizer gets its load balancer deleted, its status cleared and the
//! finalizer removed. Services berth never touched are left alone.

use crate::desired::{InvalidField, desired_load_balancer};
use crate::metrics::Metrics;
use crate::service::{ClassFilter, FINALIZER, has_finalizer, key, uid};
use crate::{nodeports, nodes, status};
use berth_providers::{
    DesiredLoadBalancer, LoadBalancerRef, LoadBalancerStatus, Provider, ProviderError, ServiceRef,
    naming,
};
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{info, warn};

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
}

#[derive(thiserror::Error, Debug)]
pub enum Error {
    #[error("Kubernetes API request failed")]
    Kube(#[source] kube::Error),
    #[error("Load balancer provider failed")]
    Provider(#[source] ProviderError),
    #[error("NodePort allocation failed: {0}")]
    NodePorts(String),
}

impl Error {
    /// A short stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Provider(e) => e.metric_label(),
            Error::NodePorts(_) => "node_ports",
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Provider(ProviderError::Transient { retry_after, .. }) => *retry_after,
            _ => None,
        }
    }
}

/// What berth last made a load balancer look like.
#[derive(Debug, Clone)]
struct Ensured {
    desired: DesiredLoadBalancer,
    status: LoadBalancerStatus,
    at: Instant,
}

/// Tells a provider facts about a Service that its desired state does not carry (the l2
/// allocator's labels and traffic policy); returns true when they changed since last time,
/// so the provider must be called again even if the desired state did not change.
pub type ServiceHook = Arc<dyn Fn(&Service) -> bool + Send + Sync>;

pub struct Context {
    pub client: Client,
    pub provider: Arc<dyn Provider>,
    pub settings: Settings,
    pub nodes: Store<Node>,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    ensured: Mutex<HashMap<String, Ensured>>,
    /// The last warning published per Service uid, so a broken Service is reported once.
    warned: Mutex<HashMap<String, String>>,
    failures: Mutex<HashMap<String, u32>>,
    service_hook: Option<ServiceHook>,
}

impl Context {
    pub fn new(
        client: Client,
        provider: Arc<dyn Provider>,
        settings: Settings,
        nodes: Store<Node>,
        recorder: Recorder,
        metrics: Arc<Metrics>,
    ) -> Self {
        Context {
            client,
            provider,
            settings,
            nodes,
            recorder,
            metrics,
            ensured: Mutex::default(),
            warned: Mutex::default(),
            failures: Mutex::default(),
            service_hook: None,
        }
    }

    /// Calls `hook` before deciding whether a Service's load balancer is up to date.
    pub fn with_service_hook(mut self, hook: ServiceHook) -> Self {
        self.service_hook = Some(hook);
        self
    }

    /// Forgets what berth last ensured for the Service `uid`, so its next reconcile calls
    /// the provider again (e.g. its address left every pool).
    pub fn forget(&self, uid: &str) {
        self.lock_ensured().remove(uid);
    }

    /// The targets every load balancer should have now: eligible nodes the provider can
    /// send traffic to (a node joins once its kubelet reports what the provider needs).
    pub fn targets(&self) -> Vec<berth_providers::NodeTarget> {
        let mut t = nodes::eligible_targets(self.nodes.state().iter().map(|n| n.as_ref()));
        t.retain(|n| self.provider.can_target(n));
        t
    }

    /// Whether `svc`'s load balancer already matches what it should be.
    pub fn is_converged(&self, svc: &Service, targets: &[berth_providers::NodeTarget]) -> bool {
        let Ok(d) = desired_load_balancer(
            svc,
            targets,
            &self.settings.cluster,
            self.provider.needs_node_ports(),
        ) else {
            return true; // invalid: nothing to converge until the user fixes it
        };
        self.lock_ensured()
            .get(&uid(svc))
            .is_some_and(|e| e.desired == d)
    }

    fn lock_ensured(&self) -> std::sync::MutexGuard<'_, HashMap<String, Ensured>> {
        self.ensured.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn tracked_load_balancers(&self) -> usize {
        self.lock_ensured().len()
    }

    async fn event(&self, svc: &Service, type_: EventType, reason: &str, note: String) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        match self.recorder.publish(&ev, &svc.object_ref(&())).await {
            Ok(()) => {
                self.metrics.events.inc();
            }
            Err(e) => warn!(service = %key(svc), error = %e, "Cannot publish event"),
        };
    }

    /// Publishes a warning unless the same one was already published for this Service.
    async fn warn_once(&self, svc: &Service, reason: &str, note: String) {
        let id = uid(svc);
        let fresh = {
            let mut w = self.warned.lock().unwrap_or_else(|e| e.into_inner());
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
        self.warned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&uid(svc));
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
            .await
            .map_err(Error::Kube)?;
        Ok(())
    }

    async fn call<T>(
        &self,
        op: &'static str,
        f: impl std::future::Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        let started = Instant::now();
        let res = f.await;
        let outcome = match &res {
            Ok(_) => "success",
            Err(e) => e.metric_label(),
        };
        self.metrics
            .provider_call(self.provider.name(), op, outcome, started.elapsed());
        res
    }
}

/// Reconciles one Service.
pub async fn reconcile(svc: Arc<Service>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    ctx.metrics.in_flight.inc();
    let res = if ctx.settings.classes.wants_load_balancer(&svc) {
        apply(&svc, &ctx).await
    } else if has_finalizer(&svc) {
        cleanup(&svc, &ctx).await
    } else {
        Ok(Action::await_change())
    };
    ctx.metrics.in_flight.dec();
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    match &res {
        Ok(_) => {
            ctx.metrics.reconciled("success");
            ctx.failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&uid(&svc));
        }
        Err(e) => {
            ctx.metrics.reconciled("error");
            ctx.metrics.error(e.metric_label());
        }
    }
    ctx.metrics
        .load_balancers
        .set(ctx.tracked_load_balancers() as i64);
    res
}

/// Backs off per Service: retry_min doubling to retry_max, with jitter, and never sooner
/// than a provider's Retry-After.
pub fn error_policy(svc: Arc<Service>, err: &Error, ctx: Arc<Context>) -> Action {
    let n = {
        let mut f = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = f.entry(uid(&svc)).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let base = ctx
        .settings
        .retry_min
        .saturating_mul(1u32 << (n - 1).min(16))
        .min(ctx.settings.retry_max);
    let jitter = rand::random_range(0.8..1.2);
    let mut delay = base.mul_f64(jitter);
    if let Some(ra) = err.retry_after() {
        delay = delay.max(ra);
    }
    warn!(service = %key(&svc), attempt = n, retry_in = ?delay, error = %error_chain(err), "Reconcile failed");
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

async fn add_finalizer(svc: &Service, ctx: &Context) -> Result<Service, Error> {
    let rv = svc.resource_version();
    let patch = if svc.metadata.finalizers.is_none() {
        json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
        ])
    } else {
        json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
            {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER},
        ])
    };
    let patch: json_patch_shim::Patch =
        serde_json::from_value(patch).map_err(|e| Error::Kube(kube::Error::SerdeError(e)))?;
    ctx.api(svc)
        .patch(
            &svc.name_any(),
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        )
        .await
        .map_err(Error::Kube)
}

async fn remove_finalizer(svc: &Service, ctx: &Context) -> Result<(), Error> {
    let Some(idx) = svc
        .metadata
        .finalizers
        .as_ref()
        .and_then(|f| f.iter().position(|x| x == FINALIZER))
    else {
        return Ok(());
    };
    let patch = json!([
        {"op": "test", "path": format!("/metadata/finalizers/{idx}"), "value": FINALIZER},
        {"op": "remove", "path": format!("/metadata/finalizers/{idx}")},
    ]);
    let patch: json_patch_shim::Patch =
        serde_json::from_value(patch).map_err(|e| Error::Kube(kube::Error::SerdeError(e)))?;
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

/// The JSON patch type kube's `Patch::Json` takes.
mod json_patch_shim {
    pub use json_patch::Patch;
}

async fn apply(svc: &Service, ctx: &Context) -> Result<Action, Error> {
    let mut svc = svc.clone();
    if !has_finalizer(&svc) {
        svc = add_finalizer(&svc, ctx).await?;
    }
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
    let desired = match desired_load_balancer(
        &svc,
        &targets,
        &ctx.settings.cluster,
        ctx.provider.needs_node_ports(),
    ) {
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
    let facts_changed = ctx.service_hook.as_ref().is_some_and(|h| h(&svc));
    let previous = ctx.lock_ensured().get(&id).cloned();
    let fresh = !facts_changed
        && previous
            .as_ref()
            .is_some_and(|p| p.desired == desired && p.at.elapsed() < ctx.settings.resync);
    let lb_status = if let Some(p) = previous.as_ref().filter(|_| fresh) {
        p.status.clone()
    } else {
        let only_targets = previous.as_ref().is_some_and(|p| {
            let mut a = p.desired.clone();
            a.targets = desired.targets.clone();
            a == desired && p.desired.targets != desired.targets
        });
        let changed = previous.as_ref().is_none_or(|p| p.desired != desired);
        if targets.is_empty() {
            ctx.warn_once(
                &svc,
                "UnAvailableLoadBalancer",
                "There are no available nodes for LoadBalancer".into(),
            )
            .await;
        }
        if changed && !only_targets {
            ctx.event(
                &svc,
                EventType::Normal,
                "EnsuringLoadBalancer",
                "Ensuring load balancer".into(),
            )
            .await;
        }
        let st = match ctx.call("ensure", ctx.provider.ensure(&desired)).await {
            Ok(st) => st,
            Err(ProviderError::Invalid { field, message }) => {
                return invalid_input(&svc, ctx, InvalidField { field, message }).await;
            }
            Err(e) => {
                let msg = format!(
                    "Error syncing load balancer: failed to ensure load balancer: {}",
                    error_chain(&e)
                );
                ctx.event(
                    &svc,
                    EventType::Warning,
                    "SyncLoadBalancerFailed",
                    msg.clone(),
                )
                .await;
                if let Some(conds) = status::conditions_with(&svc, false, "SyncFailed", &msg)
                    && let Some(p) = status::status_patch(&svc, None, Some(conds))
                {
                    let _ = ctx.patch_status(&svc, p).await;
                }
                return Err(Error::Provider(e));
            }
        };
        if only_targets {
            ctx.event(
                &svc,
                EventType::Normal,
                "UpdatedLoadBalancer",
                format!(
                    "Updated load balancer with new hosts ({} nodes)",
                    desired.targets.len()
                ),
            )
            .await;
        } else if changed {
            ctx.event(
                &svc,
                EventType::Normal,
                "EnsuredLoadBalancer",
                "Ensured load balancer".into(),
            )
            .await;
            info!(service = %key(&svc), id = %desired.id, "Ensured load balancer");
        }
        ctx.lock_ensured().insert(
            id.clone(),
            Ensured {
                desired: desired.clone(),
                status: st.clone(),
                at: Instant::now(),
            },
        );
        st
    };
    ctx.clear_warning(&svc);
    let ingress = status::ingress(&lb_status, &svc);
    let address = ingress
        .iter()
        .filter_map(|i| i["ip"].as_str().or(i["hostname"].as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    let conds = status::conditions_with(
        &svc,
        true,
        "Ensured",
        &format!("Load balancer {} serves {address}", desired.id),
    );
    if let Some(p) = status::status_patch(&svc, Some(ingress), conds) {
        ctx.patch_status(&svc, p).await?;
    }
    if lb_status.ingress.is_empty() {
        // The provider is still allocating an address: look again soon.
        ctx.lock_ensured().remove(&id);
        return Ok(Action::requeue(
            ctx.settings.retry_min.max(Duration::from_secs(1)),
        ));
    }
    Ok(Action::requeue(ctx.settings.resync))
}

/// Bad input: one Warning event naming the field, a False condition, nothing created or
/// changed, and no retry until the Service changes.
async fn invalid_input(svc: &Service, ctx: &Context, inv: InvalidField) -> Result<Action, Error> {
    ctx.metrics.reconciled("invalid");
    let msg = format!(
        "Error syncing load balancer: invalid {}: {}",
        inv.field, inv.message
    );
    ctx.warn_once(svc, "SyncLoadBalancerFailed", msg.clone())
        .await;
    if let Some(conds) = status::conditions_with(svc, false, "InvalidConfiguration", &msg)
        && let Some(p) = status::status_patch(svc, None, Some(conds))
    {
        ctx.patch_status(svc, p).await?;
    }
    Ok(Action::await_change())
}

async fn cleanup(svc: &Service, ctx: &Context) -> Result<Action, Error> {
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
        "DeletingLoadBalancer",
        "Deleting load balancer".into(),
    )
    .await;
    if let Err(e) = ctx.call("delete", ctx.provider.delete(&lb)).await {
        let msg = format!("Error deleting load balancer: {}", error_chain(&e));
        ctx.event(svc, EventType::Warning, "SyncLoadBalancerFailed", msg)
            .await;
        return Err(Error::Provider(e));
    }
    ctx.lock_ensured().remove(&id);
    ctx.clear_warning(svc);
    if svc.metadata.deletion_timestamp.is_none() {
        // Still a Service (type or class changed): clear what berth published.
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
    remove_finalizer(svc, ctx).await?;
    ctx.event(
        svc,
        EventType::Normal,
        "DeletedLoadBalancer",
        "Deleted load balancer".into(),
    )
    .await;
    info!(service = %key(svc), id = %lb.id, "Deleted load balancer");
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_prints_every_cause_once() {
        let e = Error::Provider(ProviderError::Permanent("boom".into()));
        assert_eq!(error_chain(&e), "Load balancer provider failed: boom");
    }
}
