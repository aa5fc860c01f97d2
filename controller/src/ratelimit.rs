//! A client-side limit on the controller's writes to the API server (`--kube-api-qps`,
//! `--kube-api-burst`), as client-go's token bucket: up to `burst` writes at once, then
//! `qps` per second. Reads and watches are not limited: they come from the watch caches and
//! are few. The leader election client is never limited, so renewing the lease never waits
//! behind a queue of status writes.

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
    state: Mutex<(f64, Instant)>,
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
            state: Mutex::new((burst, Instant::now())),
        })
    }

    /// Reserves one token at `now`; returns how long to wait before using it.
    pub fn reserve_at(&self, now: Instant) -> Duration {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = *st;
        let elapsed = now.saturating_duration_since(last).as_secs_f64();
        let tokens = (tokens + elapsed * self.qps).min(self.burst) - 1.0;
        *st = (tokens, now.max(last));
        if tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-tokens / self.qps)
        }
    }

    /// Waits for a token.
    pub async fn acquire(&self) {
        let wait = self.reserve_at(Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
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
                bucket.acquire().await;
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
    fn zero_qps_means_no_limit() {
        assert!(TokenBucket::new(0.0, 10).is_none());
        assert!(TokenBucket::new(-1.0, 10).is_none());
        assert!(TokenBucket::new(f64::NAN, 10).is_none());
    }
}
