//! How long to wait between attempts.

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use rand::Rng;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use std::time::Duration;

/// Exponential backoff with jitter for errors that carry no `Retry-After`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    /// The first delay's upper bound.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// The waits before each of at most `retries` retries: retry `n` (0-based) waits
    /// between half of `initial * 2^n` (capped at `max`) and all of it ("equal jitter"), so
    /// clients that failed together spread out.
    pub fn build(&self, retries: u32) -> ExponentialBackoff {
        // backon adds a random part of each delay to it (a delay `d` becomes `d..2d`), so
        // its delays are the halves of ours.
        ExponentialBuilder::new()
            .with_min_delay(self.initial / 2)
            .with_max_delay(self.max / 2)
            .with_factor(2.0)
            .with_jitter()
            .with_max_times(retries as usize)
            .build()
    }
}

/// A `Retry-After` in seconds (the contract's form). HTTP dates are not used by the
/// contract and count as absent.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// `wait` plus up to a tenth of it (at most a second), so throttled clients do not all
/// come back at the same instant; never less than `wait`.
pub(crate) fn after_at_least(wait: Duration) -> Duration {
    let spread = (wait / 10).min(Duration::from_secs(1));
    wait + rand::rng().random_range(Duration::ZERO..=spread)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn backoff_grows_then_caps() {
        let b = Backoff::default();
        for _ in 0..50 {
            let delays: Vec<Duration> = b.build(41).collect();
            assert_eq!(delays.len(), 41);
            for (retry, ceiling_ms) in [
                (0, 100),
                (1, 200),
                (2, 400),
                (5, 3200),
                (6, 5000),
                (40, 5000),
            ] {
                let d = delays[retry].as_millis();
                assert!(
                    d >= ceiling_ms / 2 && d <= ceiling_ms,
                    "retry {retry}: {d} ms"
                );
            }
        }
    }

    #[test]
    fn backoff_is_bounded() {
        assert_eq!(Backoff::default().build(0).count(), 0);
        assert_eq!(Backoff::default().build(3).count(), 3);
    }

    #[test]
    fn retry_after_seconds() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static(" 3 "));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
        let w = after_at_least(Duration::from_secs(1));
        assert!(w >= Duration::from_secs(1) && w <= Duration::from_millis(1100));
    }
}
