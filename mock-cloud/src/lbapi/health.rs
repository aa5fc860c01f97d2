//! Health checks: one task per (target address, port, check parameters).
//!
//! A new target is unhealthy until its first check passes, then healthy at once (so a fresh
//! load balancer serves quickly); after that it takes `unhealthyThreshold` consecutive
//! failures to mark it down and `healthyThreshold` consecutive passes to bring it back.

use super::spec::{CheckParams, CheckProtocol};
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The live verdict of one check, shared with the data plane.
#[derive(Debug)]
pub struct HealthCell {
    healthy: AtomicBool,
    /// Flips to true once the first check has finished.
    checked: watch::Sender<bool>,
}

impl HealthCell {
    fn new() -> HealthCell {
        HealthCell {
            healthy: AtomicBool::new(false),
            checked: watch::channel(false).0,
        }
    }

    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Resolves once the first check has finished.
    pub async fn first_checked(&self) {
        let mut rx = self.checked.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }
}

/// The threshold logic, separate from the probing so it can be tested alone.
#[derive(Debug, Default)]
pub struct Verdict {
    healthy: bool,
    ever_passed: bool,
    passes: u32,
    failures: u32,
}

impl Verdict {
    /// Records one probe result and returns the new health.
    pub fn record(&mut self, ok: bool, healthy_threshold: u32, unhealthy_threshold: u32) -> bool {
        if ok {
            self.passes = self.passes.saturating_add(1);
            self.failures = 0;
            if !self.ever_passed || self.passes >= healthy_threshold {
                self.healthy = true;
                self.ever_passed = true;
            }
        } else {
            self.failures = self.failures.saturating_add(1);
            self.passes = 0;
            if self.failures >= unhealthy_threshold {
                self.healthy = false;
            }
        }
        self.healthy
    }
}

/// Starts checking `addr` now; the first probe runs immediately. `healthy` seeds the verdict
/// (true when a check of the same address is being replaced by one with new parameters).
pub fn spawn(
    addr: SocketAddr,
    params: CheckParams,
    healthy: bool,
) -> (Arc<HealthCell>, JoinHandle<()>) {
    let cell = Arc::new(HealthCell::new());
    cell.healthy.store(healthy, Ordering::Relaxed);
    let verdict = Verdict {
        healthy,
        ever_passed: healthy,
        ..Verdict::default()
    };
    let task = tokio::spawn(run(cell.clone(), addr, params, verdict));
    (cell, task)
}

async fn run(cell: Arc<HealthCell>, addr: SocketAddr, params: CheckParams, mut verdict: Verdict) {
    let mut ticker = tokio::time::interval(params.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let ok = probe(addr, &params).await;
        let was = cell.healthy();
        let now = verdict.record(ok, params.healthy_threshold, params.unhealthy_threshold);
        cell.healthy.store(now, Ordering::Relaxed);
        if was != now {
            tracing::info!(target = %addr, healthy = now, "load balancer target health changed");
        }
        cell.checked.send_replace(true);
    }
}

async fn probe(addr: SocketAddr, params: &CheckParams) -> bool {
    let attempt = async {
        match params.protocol {
            CheckProtocol::Tcp => TcpStream::connect(addr).await.is_ok(),
            CheckProtocol::Http => match http_get(addr, &params.path).await {
                Ok(status) => status.is_success(),
                Err(e) => {
                    tracing::debug!(target = %addr, error = %e, "HTTP health check failed");
                    false
                }
            },
        }
    };
    tokio::time::timeout(params.timeout, attempt)
        .await
        .unwrap_or(false)
}

async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<hyper::StatusCode> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::USER_AGENT, "mock-cloud-lb-health-check")
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())?;
    let mut conn = std::pin::pin!(conn);
    let mut resp = std::pin::pin!(sender.send_request(req));
    tokio::select! {
        biased;
        r = &mut resp => Ok(r?.status()),
        // With `Connection: close` the connection may finish first, having already
        // handed the response over.
        end = &mut conn => {
            end?;
            Ok(resp.await?.status())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_target_is_healthy_after_first_pass() {
        let mut v = Verdict::default();
        assert!(!v.record(false, 2, 2));
        assert!(v.record(true, 3, 2), "first pass ever: healthy at once");
    }

    #[test]
    fn thresholds_apply_after_the_first_pass() {
        let mut v = Verdict::default();
        assert!(v.record(true, 3, 2));
        assert!(v.record(false, 3, 2), "one failure is tolerated");
        assert!(!v.record(false, 3, 2), "two failures: down");
        assert!(!v.record(true, 3, 2));
        assert!(!v.record(true, 3, 2));
        assert!(!v.record(false, 3, 2), "a failure resets the pass streak");
        assert!(!v.record(true, 3, 2));
        assert!(!v.record(true, 3, 2));
        assert!(v.record(true, 3, 2), "three passes: back up");
    }
}
