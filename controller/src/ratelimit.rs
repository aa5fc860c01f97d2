//! A client-side limit on the controller's writes to the API server (`--kube-api-qps`,
//! `--kube-api-burst`), as client-go's token bucket: up to `burst` writes at once, then
//! `qps` per second. Reads and watches are not limited: they come from the watch caches and
//! are few. The leader election client is never limited, so renewing the lease never waits
//! behind a queue of status writes.
//!
//! Event writes take only spare tokens: one is written when a token is there and no other
//! write is waiting for one. A burst of reconciles (a cold start of 10,000 Services writes a
//! finalizer and a status per Service, and two events) therefore spends the whole budget on
//! what its owners wait for, and the events follow when the writes quieten. Events are best
//! effort in Kubernetes; the event queue bounds what waits (see `events.rs`).

use futures::future::BoxFuture;
use http::{Method, Request, Response};
use kube::client::Body;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// A token bucket: `burst` tokens, refilled at `qps` per second. Each caller reserves a
/// token and is told how long to wait for it, so waiting callers are served in order.
#[derive(Debug)]
pub struct TokenBucket {
    qps: f64,
    burst: f64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Tokens left; below zero, tokens reserved by waiting writes.
    tokens: f64,
    last: Instant,
    /// Writes waiting for a token they reserved.
    waiting: usize,
}

/// Counts a waiting write for as long as it lives (a dropped request stops counting).
struct Waiting<'a>(&'a TokenBucket);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.waiting = st.waiting.saturating_sub(1);
    }
}

impl TokenBucket {
    /// None when `qps` is not positive (no limit).
    pub fn new(qps: f64, burst: u32) -> Option<TokenBucket> {
        if qps.is_nan() || qps <= 0.0 {
            return None;
        }
        let burst = f64::from(burst.max(1));
        Some(TokenBucket {
            qps,
            burst,
            state: Mutex::new(State {
                tokens: burst,
                last: Instant::now(),
                waiting: 0,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state with the tokens earned since it was last looked at.
    fn refilled(&self, now: Instant) -> std::sync::MutexGuard<'_, State> {
        let mut st = self.lock();
        let elapsed = now.saturating_duration_since(st.last).as_secs_f64();
        st.tokens = (st.tokens + elapsed * self.qps).min(self.burst);
        st.last = now.max(st.last);
        st
    }

    /// Reserves one token at `now`; returns how long to wait before using it.
    pub fn reserve_at(&self, now: Instant) -> Duration {
        let mut st = self.refilled(now);
        st.tokens -= 1.0;
        if st.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-st.tokens / self.qps)
        }
    }

    /// Takes a spare token at `now`: one that is there, with no write waiting. Otherwise
    /// says how long until it is worth asking again.
    pub fn take_spare_at(&self, now: Instant) -> Result<(), Duration> {
        let mut st = self.refilled(now);
        if st.waiting == 0 && st.tokens >= 1.0 {
            st.tokens -= 1.0;
            return Ok(());
        }
        let short = (1.0 - st.tokens).max(1.0) / self.qps;
        Err(Duration::from_secs_f64(short).max(Duration::from_millis(1)))
    }

    /// Waits for a token, in turn.
    pub async fn acquire(&self) {
        let wait = self.reserve_at(Instant::now());
        if !wait.is_zero() {
            self.lock().waiting += 1;
            let _waiting = Waiting(self);
            tokio::time::sleep(wait).await;
        }
    }

    /// Waits for a spare token ([`TokenBucket::take_spare_at`]).
    pub async fn acquire_spare(&self) {
        while let Err(wait) = self.take_spare_at(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Whether a request writes an Event (`events.k8s.io` or core `v1`).
fn writes_event(path: &str) -> bool {
    path.starts_with("/apis/events.k8s.io/")
        || (path.starts_with("/api/v1/") && path.split('/').nth(5) == Some("events"))
}

#[derive(Clone)]
struct Limited {
    inner: kube::Client,
    bucket: Arc<TokenBucket>,
}

impl tower::Service<Request<Body>> for Limited {
    type Response = Response<Body>;
    type Error = tower::BoxError;
    type Future = BoxFuture<'static, Result<Response<Body>, tower::BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        let bucket = self.bucket.clone();
        Box::pin(async move {
            if req.method() != Method::GET && req.method() != Method::HEAD {
                if writes_event(req.uri().path()) {
                    bucket.acquire_spare().await;
                } else {
                    bucket.acquire().await;
                }
            }
            inner.send(req).await.map_err(Into::into)
        })
    }
}

/// `client` with its writes limited to `qps` per second after a burst of `burst`; `client`
/// itself when `qps` is 0 (no limit).
pub fn rate_limited_client(client: kube::Client, qps: f64, burst: u32) -> kube::Client {
    let Some(bucket) = TokenBucket::new(qps, burst) else {
        return client;
    };
    let ns = client.default_namespace().to_string();
    kube::Client::new(
        Limited {
            inner: client,
            bucket: Arc::new(bucket),
        },
        ns,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(d: Duration) -> u64 {
        (d.as_secs_f64() * 1000.0).round() as u64
    }

    #[test]
    fn a_burst_is_free_then_writes_are_spaced_by_one_over_qps() {
        let b = TokenBucket::new(10.0, 3).unwrap();
        let t0 = Instant::now();
        let waits: Vec<u64> = (0..6).map(|_| ms(b.reserve_at(t0))).collect();
        assert_eq!(waits, [0, 0, 0, 100, 200, 300]);
    }

    #[test]
    fn tokens_refill_at_qps_up_to_the_burst() {
        let b = TokenBucket::new(10.0, 2).unwrap();
        let t0 = Instant::now();
        assert!(b.reserve_at(t0).is_zero());
        assert!(b.reserve_at(t0).is_zero());
        // An hour later only `burst` tokens are there, not 36,000.
        let later = t0 + Duration::from_secs(3600);
        assert!(b.reserve_at(later).is_zero());
        assert!(b.reserve_at(later).is_zero());
        assert_eq!(ms(b.reserve_at(later)), 100);
        // 50 ms after that, half a token came back: the next waits 150 ms.
        let t = later + Duration::from_millis(50);
        assert_eq!(ms(b.reserve_at(t)), 150);
    }

    #[test]
    fn event_writes_take_only_spare_tokens() {
        let b = TokenBucket::new(10.0, 2).unwrap();
        let t0 = Instant::now();
        // A token is there and nobody waits: an event may have it.
        assert_eq!(b.take_spare_at(t0), Ok(()));
        assert!(b.reserve_at(t0).is_zero());
        // None left: the event is told to come back when one is earned, and takes nothing.
        let wait = b.take_spare_at(t0).unwrap_err();
        assert_eq!(ms(wait), 100);
        assert_eq!(ms(b.reserve_at(t0)), 100, "the event reserved nothing");
        // Earned back, but a write still waits for it: the event yields.
        b.lock().waiting = 1;
        let later = t0 + Duration::from_millis(300);
        assert!(b.take_spare_at(later).is_err());
        b.lock().waiting = 0;
        assert_eq!(b.take_spare_at(later), Ok(()));
    }

    #[tokio::test]
    async fn a_waiting_write_is_counted_until_it_has_its_token_or_is_dropped() {
        let b = Arc::new(TokenBucket::new(10.0, 1).unwrap());
        b.acquire().await;
        assert_eq!(b.lock().waiting, 0, "a free token is no wait");
        let w = tokio::spawn({
            let b = b.clone();
            async move { b.acquire().await }
        });
        tokio::task::yield_now().await;
        assert_eq!(b.lock().waiting, 1);
        w.await.unwrap();
        assert_eq!(b.lock().waiting, 0);
        let w = tokio::spawn({
            let b = b.clone();
            async move { b.acquire().await }
        });
        tokio::task::yield_now().await;
        assert_eq!(b.lock().waiting, 1);
        w.abort();
        let _ = w.await;
        assert_eq!(b.lock().waiting, 0, "a dropped write stops counting");
    }

    #[test]
    fn event_paths_are_told_from_other_writes() {
        assert!(writes_event(
            "/apis/events.k8s.io/v1/namespaces/default/events"
        ));
        assert!(writes_event(
            "/apis/events.k8s.io/v1/namespaces/default/events/web.1"
        ));
        assert!(writes_event("/api/v1/namespaces/default/events"));
        assert!(!writes_event("/api/v1/namespaces/default/services/events"));
        assert!(!writes_event(
            "/api/v1/namespaces/events/services/web/status"
        ));
        assert!(!writes_event("/api/v1/namespaces/default/services/web"));
    }

    #[test]
    fn zero_qps_means_no_limit() {
        assert!(TokenBucket::new(0.0, 10).is_none());
        assert!(TokenBucket::new(-1.0, 10).is_none());
        assert!(TokenBucket::new(f64::NAN, 10).is_none());
    }
}
