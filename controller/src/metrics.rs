//! Prometheus metrics, served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub provider: String,
    pub operation: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub provider: String,
    pub operation: String,
}

pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Family<ResultLabel, Counter>,
    pub reconcile_errors: Family<ReasonLabel, Counter>,
    pub reconcile_duration: Histogram,
    pub provider_calls: Family<CallLabels, Counter>,
    pub provider_call_duration: Family<OpLabels, Histogram>,
    /// Wire-level requests a provider made (retries included), by operation and outcome.
    pub provider_requests: Family<CallLabels, Counter>,
    pub in_flight: Gauge,
    pub queue_depth: Gauge,
    pub load_balancers: Gauge,
    pub gc_deleted: Counter,
    pub leader: Gauge,
    pub events: Counter<u64, AtomicU64>,
}

fn buckets() -> impl Iterator<Item = f64> {
    [
        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ]
    .into_iter()
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("berth");
        let reconciles = Family::<ResultLabel, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by result (success, error, invalid)",
            reconciles.clone(),
        );
        let reconcile_errors = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Failed reconciles by reason",
            reconcile_errors.clone(),
        );
        let reconcile_duration = Histogram::new(buckets());
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            reconcile_duration.clone(),
        );
        let provider_calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "provider_calls",
            "Provider calls by provider, operation and outcome",
            provider_calls.clone(),
        );
        let provider_call_duration =
            Family::<OpLabels, Histogram>::new_with_constructor(|| Histogram::new(buckets()));
        registry.register(
            "provider_call_duration_seconds",
            "Provider call latency",
            provider_call_duration.clone(),
        );
        let provider_requests = Family::<CallLabels, Counter>::default();
        registry.register(
            "provider_requests",
            "Requests a provider sent to its cloud or API (retries included), by operation and outcome",
            provider_requests.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "reconciles_in_flight",
            "Reconciles running now",
            in_flight.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Services whose load balancer is waiting to converge (queued, running or backing off)",
            queue_depth.clone(),
        );
        let load_balancers = Gauge::default();
        registry.register(
            "load_balancers",
            "Load balancers berth has ensured and tracks",
            load_balancers.clone(),
        );
        let gc_deleted = Counter::default();
        registry.register(
            "gc_deleted_load_balancers",
            "Orphaned load balancers deleted by garbage collection",
            gc_deleted.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        let events = Counter::default();
        registry.register("events", "Kubernetes events published", events.clone());
        Metrics {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            provider_calls,
            provider_call_duration,
            provider_requests,
            in_flight,
            queue_depth,
            load_balancers,
            gc_deleted,
            leader,
            events,
        }
    }
}

impl Metrics {
    pub fn provider_call(&self, provider: &str, operation: &str, outcome: &str, took: Duration) {
        self.provider_calls
            .get_or_create(&CallLabels {
                provider: provider.into(),
                operation: operation.into(),
                outcome: outcome.into(),
            })
            .inc();
        self.provider_call_duration
            .get_or_create(&OpLabels {
                provider: provider.into(),
                operation: operation.into(),
            })
            .observe(took.as_secs_f64());
    }

    /// Counts one wire-level provider request.
    pub fn provider_request(&self, provider: &str, operation: &str, outcome: &str) {
        self.provider_requests
            .get_or_create(&CallLabels {
                provider: provider.into(),
                operation: operation.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    pub fn reconciled(&self, result: &str) {
        self.reconciles
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    pub fn error(&self, reason: &str) {
        self.reconcile_errors
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
