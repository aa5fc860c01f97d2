//! The API budget: one token bucket per AWS API (ELBv2, EC2), shared by every worker of the
//! provider, paces every attempt of every call, and one bounded retry policy (exponential
//! backoff with full jitter) for throttling, 5xx and network failures.
//!
//! AWS meters each account and region with token buckets: ELBv2 allows bursts of 40
//! `Describe*` calls refilled at 10 per second (the *Request throttling for the Elastic Load
//! Balancing API* page of the ELB user guide), EC2 bursts of 100 non-mutating calls such as
//! `DescribeSubnets` refilled at 20 per second (*Request throttling for the Amazon EC2 API*,
//! EC2 developer guide). berth's defaults are those figures; mutating calls have smaller
//! buckets on AWS's side, which the retry policy absorbs.
//!
//! The SDK's own retries are disabled (see `AwsProvider::clients`): every attempt goes
//! through this bucket and is counted, and retries never multiply.

use rand::Rng;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tracing::debug;

/// ELBv2's documented bucket for non-mutating calls: 40 tokens, 10 per second.
pub const ELB_BURST: u32 = 40;
pub const ELB_RATE: f64 = 10.0;
/// EC2's documented bucket for non-mutating calls (DescribeSubnets): 100 tokens, 20 per second.
pub const EC2_BURST: u32 = 100;
pub const EC2_RATE: f64 = 20.0;
/// First backoff ceiling; doubled per attempt up to [`BACKOFF_CAP`].
const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(20);

/// What the provider reports for metrics (no Prometheus here: the controller maps these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiEvent {
    /// One attempt sent: the API (`elbv2`, `ec2`), the operation and its outcome (`success`,
    /// `throttled`, `server_error`, `network_error`, `client_error`).
    Request {
        api: &'static str,
        op: &'static str,
        outcome: &'static str,
    },
    /// Time one call spent waiting before an attempt: for a token (`budget`) or after a
    /// failure (`backoff`).
    Wait {
        api: &'static str,
        reason: &'static str,
        took: Duration,
    },
}

/// Receives [`ApiEvent`]s.
pub type ApiMetricsHook = Arc<dyn Fn(ApiEvent) + Send + Sync>;

/// A token bucket: `burst` tokens, refilled at `rate` per second. A caller takes a token
/// and, when the bucket is empty, sleeps until its token would have arrived (reservations
/// go below zero, so waiters are served in the order they came, each sleeping once).
pub struct Bucket {
    pub api: &'static str,
    burst: f64,
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    /// Fails on a rate that is not a positive number or a burst of 0.
    pub fn new(api: &'static str, rate: f64, burst: u32) -> Result<Self, String> {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(format!(
                "the {api} API budget's rate must be a positive number of calls per second, not {rate}"
            ));
        }
        if burst == 0 {
            return Err(format!("the {api} API budget's burst must be at least 1"));
        }
        Ok(Self {
            api,
            burst: f64::from(burst),
            rate,
            state: Mutex::new((f64::from(burst), Instant::now())),
        })
    }

    /// Reserves one token at `now`; returns how long to wait for it.
    fn reserve(&self, now: Instant) -> Duration {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(s.1).as_secs_f64();
        s.0 = (s.0 + elapsed * self.rate).min(self.burst) - 1.0;
        s.1 = now.max(s.1);
        if s.0 >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-s.0 / self.rate)
        }
    }

    /// Takes one token, waiting for it if needed; returns the wait.
    pub async fn take(&self) -> Duration {
        let wait = self.reserve(Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        wait
    }
}

/// The wait before retry number `attempt` (1-based): uniform in [0, min(cap, base·2^attempt)]
/// ("full jitter"), so workers throttled together do not come back together.
pub fn backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1u32 << attempt.min(16))
        .min(BACKOFF_CAP);
    let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::rng().random_range(0..=ms))
}

/// How one failed attempt is labelled and whether it is worth another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub outcome: &'static str,
    pub retry: bool,
}

/// The budget of one API: its bucket, the attempts allowed per call and the metrics hook.
pub struct Budget {
    pub bucket: Bucket,
    pub max_attempts: u32,
    hook: OnceLock<ApiMetricsHook>,
}

impl Budget {
    pub fn new(bucket: Bucket, max_attempts: u32) -> Self {
        Self {
            bucket,
            max_attempts: max_attempts.max(1),
            hook: OnceLock::new(),
        }
    }

    /// Sends this budget's events to `hook` (the first hook set stays).
    pub fn set_hook(&self, hook: ApiMetricsHook) {
        let _ = self.hook.set(hook);
    }

    fn report(&self, e: ApiEvent) {
        if let Some(h) = self.hook.get() {
            h(e);
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, or [`Self::max_attempts`] are
    /// spent: every attempt takes a token first, every failure `judge` calls retryable is
    /// followed by a jittered backoff.
    pub async fn run<T, E, Fut>(
        &self,
        op: &'static str,
        mut attempt: impl FnMut() -> Fut,
        judge: impl Fn(&E) -> Verdict,
    ) -> Result<T, E>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        let api = self.bucket.api;
        let mut n = 0;
        loop {
            let waited = self.bucket.take().await;
            if !waited.is_zero() {
                self.report(ApiEvent::Wait {
                    api,
                    reason: "budget",
                    took: waited,
                });
            }
            n += 1;
            let result = attempt().await;
            let err = match result {
                Ok(v) => {
                    self.report(ApiEvent::Request {
                        api,
                        op,
                        outcome: "success",
                    });
                    return Ok(v);
                }
                Err(e) => e,
            };
            let v = judge(&err);
            self.report(ApiEvent::Request {
                api,
                op,
                outcome: v.outcome,
            });
            if !v.retry || n >= self.max_attempts {
                return Err(err);
            }
            let wait = backoff(n);
            debug!(
                api,
                op,
                outcome = v.outcome,
                attempt = n,
                wait_ms = wait.as_millis() as u64,
                "AWS call failed; retrying"
            );
            self.report(ApiEvent::Wait {
                api,
                reason: "backoff",
                took: wait,
            });
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn bucket_allows_its_burst_then_paces_at_its_rate() {
        // One bucket however many workers reserve from it: 4 at once, then 10 per second.
        let b = Bucket::new("elbv2", 10.0, 4).unwrap();
        let t0 = Instant::now();
        for _ in 0..4 {
            assert_eq!(b.reserve(t0), Duration::ZERO);
        }
        // Empty: the 5th waits 1/10 s, the 6th 2/10 s.
        assert_eq!(b.reserve(t0), Duration::from_millis(100));
        assert_eq!(b.reserve(t0), Duration::from_millis(200));
        // 1 s later 10 tokens have come back, 2 of them already promised.
        assert_eq!(b.reserve(t0 + Duration::from_secs(1)), Duration::ZERO);
        // Never more than the burst after a long pause.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..4 {
            assert_eq!(b.reserve(later), Duration::ZERO);
        }
        assert!(!b.reserve(later).is_zero());
    }

    #[test]
    fn bad_budgets_are_refused() {
        assert!(Bucket::new("ec2", 0.0, 1).is_err());
        assert!(Bucket::new("ec2", f64::NAN, 1).is_err());
        assert!(Bucket::new("ec2", -1.0, 1).is_err());
        assert!(Bucket::new("ec2", 1.0, 0).is_err());
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        for attempt in 1..40 {
            let ceiling = (BACKOFF_BASE * 2u32.pow(attempt.min(16))).min(BACKOFF_CAP);
            for _ in 0..50 {
                assert!(backoff(attempt) <= ceiling);
            }
        }
        let samples: std::collections::BTreeSet<_> = (0..50).map(|_| backoff(3)).collect();
        assert!(samples.len() > 10, "jittered: {samples:?}");
    }

    #[tokio::test]
    async fn retries_are_bounded_and_reported() {
        let events = Arc::new(Mutex::new(Vec::new()));
        let budget = Budget::new(Bucket::new("elbv2", 1000.0, 1000).unwrap(), 3);
        let sink = events.clone();
        budget.set_hook(Arc::new(move |e| sink.lock().unwrap().push(e)));
        let calls = AtomicU32::new(0);
        let judge = |e: &&'static str| Verdict {
            outcome: e,
            retry: *e == "throttled",
        };
        // Always throttled: 3 attempts, then the error.
        let r: Result<(), &str> = budget
            .run(
                "DescribeTags",
                || {
                    calls.fetch_add(1, Ordering::SeqCst);
                    async { Err("throttled") }
                },
                judge,
            )
            .await;
        assert_eq!(r, Err("throttled"));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // A permanent error: not retried.
        calls.store(0, Ordering::SeqCst);
        let r: Result<(), &str> = budget
            .run(
                "CreateListener",
                || {
                    calls.fetch_add(1, Ordering::SeqCst);
                    async { Err("client_error") }
                },
                judge,
            )
            .await;
        assert_eq!(r, Err("client_error"));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Throttled once, then through.
        calls.store(0, Ordering::SeqCst);
        let r = budget
            .run(
                "RegisterTargets",
                || {
                    let n = calls.fetch_add(1, Ordering::SeqCst);
                    async move { if n == 0 { Err("throttled") } else { Ok(7) } }
                },
                judge,
            )
            .await;
        assert_eq!(r, Ok(7));
        let ev = events.lock().unwrap().clone();
        let outcomes: Vec<_> = ev
            .iter()
            .filter_map(|e| match e {
                ApiEvent::Request { op, outcome, .. } => Some((*op, *outcome)),
                _ => None,
            })
            .collect();
        assert_eq!(
            outcomes,
            vec![
                ("DescribeTags", "throttled"),
                ("DescribeTags", "throttled"),
                ("DescribeTags", "throttled"),
                ("CreateListener", "client_error"),
                ("RegisterTargets", "throttled"),
                ("RegisterTargets", "success"),
            ]
        );
        let backoffs = ev
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    ApiEvent::Wait {
                        reason: "backoff",
                        ..
                    }
                )
            })
            .count();
        assert_eq!(backoffs, 3, "after each retried failure only");
    }
}
