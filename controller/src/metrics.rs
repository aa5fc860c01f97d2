//! Prometheus metrics, served at `/metrics`. One registry per process; every family about a
//! class's work carries a `class` label, so one process serving several classes reports
//! each apart. [`ClassMetrics`] is the handle one class's controller records through.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabel {
    pub class: String,
}

/// One IP address pool of the l2 provider, one address family.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub pool: String,
    pub family: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub class: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub class: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub class: String,
    pub provider: String,
    pub operation: String,
    pub outcome: String,
}

/// Why a provider's call waited before an attempt: `budget` (its API's token bucket) or
/// `backoff` (after a throttled or failed attempt).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WaitLabels {
    pub class: String,
    pub provider: String,
    pub api: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub class: String,
    pub provider: String,
    pub operation: String,
}

pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Family<ResultLabel, Counter>,
    pub reconcile_errors: Family<ReasonLabel, Counter>,
    pub reconcile_duration: Family<ClassLabel, Histogram>,
    pub provider_calls: Family<CallLabels, Counter>,
    pub provider_call_duration: Family<OpLabels, Histogram>,
    /// Wire-level requests a provider made (retries included), by operation and outcome.
    pub provider_requests: Family<CallLabels, Counter>,
    /// Seconds provider calls waited for their API budget or a backoff, and how often.
    pub provider_wait_seconds: Family<WaitLabels, Counter<f64, AtomicU64>>,
    pub provider_waits: Family<WaitLabels, Counter>,
    pub in_flight: Family<ClassLabel, Gauge>,
    pub queue_depth: Family<ClassLabel, Gauge>,
    pub load_balancers: Family<ClassLabel, Gauge>,
    pub gc_deleted: Family<ClassLabel, Counter>,
    /// 1 per class whose lease this replica holds.
    pub class_leader: Family<ClassLabel, Gauge>,
    /// How many classes this replica leads (1/0 for a single class).
    pub leader: Gauge,
    pub events: Counter<u64, AtomicU64>,
    /// Addresses of each IP pool, by family (an IPv6 /64 is 1.8e19: floats).
    pub pool_capacity: Family<PoolLabels, Gauge<f64, AtomicU64>>,
    pub pool_in_use: Family<PoolLabels, Gauge<f64, AtomicU64>>,
    pub pool_available: Family<PoolLabels, Gauge<f64, AtomicU64>>,
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
            "Reconciles by class and result (success, error, invalid)",
            reconciles.clone(),
        );
        let reconcile_errors = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Failed reconciles by class and reason",
            reconcile_errors.clone(),
        );
        let reconcile_duration =
            Family::<ClassLabel, Histogram>::new_with_constructor(|| Histogram::new(buckets()));
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            reconcile_duration.clone(),
        );
        let provider_calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "provider_calls",
            "Provider calls by class, provider, operation and outcome",
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
        let provider_wait_seconds = Family::<WaitLabels, Counter<f64, AtomicU64>>::default();
        registry.register(
            "provider_wait_seconds",
            "Seconds provider calls waited before an attempt: for the API budget (reason budget) or after throttling or a failure (reason backoff)",
            provider_wait_seconds.clone(),
        );
        let provider_waits = Family::<WaitLabels, Counter>::default();
        registry.register(
            "provider_waits",
            "Waits of provider calls before an attempt, by API and reason",
            provider_waits.clone(),
        );
        let in_flight = Family::<ClassLabel, Gauge>::default();
        registry.register(
            "reconciles_in_flight",
            "Reconciles running now",
            in_flight.clone(),
        );
        let queue_depth = Family::<ClassLabel, Gauge>::default();
        registry.register(
            "queue_depth",
            "Services whose load balancer is waiting to converge (queued, running or backing off)",
            queue_depth.clone(),
        );
        let load_balancers = Family::<ClassLabel, Gauge>::default();
        registry.register(
            "load_balancers",
            "Load balancers berth has ensured and tracks",
            load_balancers.clone(),
        );
        let gc_deleted = Family::<ClassLabel, Counter>::default();
        registry.register(
            "gc_deleted_load_balancers",
            "Orphaned load balancers deleted by garbage collection",
            gc_deleted.clone(),
        );
        let class_leader = Family::<ClassLabel, Gauge>::default();
        registry.register(
            "class_leader",
            "1 while this replica holds the class's leader lease",
            class_leader.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "How many classes' leader leases this replica holds",
            leader.clone(),
        );
        let events = Counter::default();
        registry.register("events", "Kubernetes events published", events.clone());
        let pool_capacity = Family::<PoolLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "pool_addresses_capacity",
            "Addresses an IPAddressPool holds, by pool and family (l2 provider)",
            pool_capacity.clone(),
        );
        let pool_in_use = Family::<PoolLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "pool_addresses_in_use",
            "Addresses of an IPAddressPool assigned to Services, by pool and family",
            pool_in_use.clone(),
        );
        let pool_available = Family::<PoolLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "pool_addresses_available",
            "Addresses of an IPAddressPool still free, by pool and family",
            pool_available.clone(),
        );
        Metrics {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            provider_calls,
            provider_call_duration,
            provider_requests,
            provider_wait_seconds,
            provider_waits,
            in_flight,
            queue_depth,
            load_balancers,
            gc_deleted,
            class_leader,
            leader,
            events,
            pool_capacity,
            pool_in_use,
            pool_available,
        }
    }
}

impl Metrics {
    /// Sets the address gauges of `pool`'s `family` ("ipv4" or "ipv6").
    pub fn set_pool(&self, pool: &str, family: &str, in_use: u64, available: u64) {
        let l = PoolLabels {
            pool: pool.into(),
            family: family.into(),
        };
        if in_use == 0 && available == 0 {
            // The pool has no address of this family.
            self.pool_in_use.remove(&l);
            self.pool_available.remove(&l);
            self.pool_capacity.remove(&l);
            return;
        }
        self.pool_in_use.get_or_create(&l).set(in_use as f64);
        self.pool_available.get_or_create(&l).set(available as f64);
        self.pool_capacity
            .get_or_create(&l)
            .set(in_use.saturating_add(available) as f64);
    }

    /// Forgets a pool that no longer exists.
    pub fn remove_pool(&self, pool: &str) {
        for family in ["ipv4", "ipv6"] {
            let l = PoolLabels {
                pool: pool.into(),
                family: family.into(),
            };
            self.pool_in_use.remove(&l);
            self.pool_available.remove(&l);
            self.pool_capacity.remove(&l);
        }
    }

    /// The handle one class's controller records through.
    pub fn for_class(self: &Arc<Self>, class: &str) -> ClassMetrics {
        ClassMetrics {
            m: self.clone(),
            class: ClassLabel {
                class: class.into(),
            },
        }
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

/// One class's view of [`Metrics`].
#[derive(Clone)]
pub struct ClassMetrics {
    m: Arc<Metrics>,
    class: ClassLabel,
}

impl ClassMetrics {
    pub fn class(&self) -> &str {
        &self.class.class
    }

    pub fn shared(&self) -> &Arc<Metrics> {
        &self.m
    }

    fn call_labels(&self, provider: &str, operation: &str, outcome: &str) -> CallLabels {
        CallLabels {
            class: self.class.class.clone(),
            provider: provider.into(),
            operation: operation.into(),
            outcome: outcome.into(),
        }
    }

    pub fn provider_call(&self, provider: &str, operation: &str, outcome: &str, took: Duration) {
        self.m
            .provider_calls
            .get_or_create(&self.call_labels(provider, operation, outcome))
            .inc();
        self.m
            .provider_call_duration
            .get_or_create(&OpLabels {
                class: self.class.class.clone(),
                provider: provider.into(),
                operation: operation.into(),
            })
            .observe(took.as_secs_f64());
    }

    /// Counts one wire-level provider request.
    pub fn provider_request(&self, provider: &str, operation: &str, outcome: &str) {
        self.m
            .provider_requests
            .get_or_create(&self.call_labels(provider, operation, outcome))
            .inc();
    }

    /// Records one wait of a provider call for `api` (`budget` or `backoff`).
    pub fn provider_wait(&self, provider: &str, api: &str, reason: &str, took: Duration) {
        let l = WaitLabels {
            class: self.class.class.clone(),
            provider: provider.into(),
            api: api.into(),
            reason: reason.into(),
        };
        self.m.provider_waits.get_or_create(&l).inc();
        self.m
            .provider_wait_seconds
            .get_or_create(&l)
            .inc_by(took.as_secs_f64());
    }

    pub fn reconciled(&self, result: &str) {
        self.m
            .reconciles
            .get_or_create(&ResultLabel {
                class: self.class.class.clone(),
                result: result.into(),
            })
            .inc();
    }

    pub fn error(&self, reason: &str) {
        self.m
            .reconcile_errors
            .get_or_create(&ReasonLabel {
                class: self.class.class.clone(),
                reason: reason.into(),
            })
            .inc();
    }

    pub fn reconcile_took(&self, took: Duration) {
        self.m
            .reconcile_duration
            .get_or_create(&self.class)
            .observe(took.as_secs_f64());
    }

    pub fn in_flight(&self, delta: i64) {
        self.m.in_flight.get_or_create(&self.class).inc_by(delta);
    }

    pub fn set_queue_depth(&self, n: i64) {
        self.m.queue_depth.get_or_create(&self.class).set(n);
    }

    pub fn set_load_balancers(&self, n: i64) {
        self.m.load_balancers.get_or_create(&self.class).set(n);
    }

    pub fn gc_deleted(&self) {
        self.m.gc_deleted.get_or_create(&self.class).inc();
    }

    pub fn event(&self) {
        self.m.events.inc();
    }

    /// Marks this class led (or not) by this replica.
    pub fn set_leader(&self, leading: bool) {
        let g = self.m.class_leader.get_or_create(&self.class);
        let was = g.get() == 1;
        g.set(i64::from(leading));
        if leading && !was {
            self.m.leader.inc();
        } else if !leading && was {
            self.m.leader.dec();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_classes_report_apart_and_leadership_counts_classes() {
        let m = Arc::new(Metrics::default());
        let a = m.for_class("berth.io/http");
        let b = m.for_class("example.com/b");
        a.reconciled("success");
        a.reconciled("success");
        b.reconciled("error");
        a.set_leader(true);
        b.set_leader(true);
        b.set_leader(true);
        let text = m.encode();
        assert!(
            text.contains(r#"berth_reconciles_total{class="berth.io/http",result="success"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"berth_reconciles_total{class="example.com/b",result="error"} 1"#));
        assert!(text.contains("\nberth_leader 2\n"), "{text}");
        b.set_leader(false);
        assert!(m.encode().contains("\nberth_leader 1\n"));
    }
}
