//! Fault injection, switchable at run time: added latency, an error rate (500, or 429 with
//! Retry-After), and dropping every open watch stream. Faults can be scoped by path, verb and
//! request body (e.g. only the Lease renewals one replica sends).

use rand::Rng;
use serde::{Deserialize, Serialize};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// What to inject. The default injects nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Added to every affected request before it is handled.
    pub latency_ms: u64,
    /// Fraction (0.0–1.0) of affected requests answered with `error_code`.
    pub error_rate: f64,
    /// 500 or 429 (0 means 500).
    pub error_code: u16,
    /// `Retry-After` seconds sent with 429s (0 means 1).
    pub retry_after_seconds: u64,
    /// Only requests whose path starts with one of these are affected (empty: all).
    pub path_prefixes: Vec<String>,
    /// Only these verbs (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`) are
    /// affected (empty: all).
    pub verbs: Vec<String>,
    /// Only requests whose body contains one of these strings are affected (empty: all),
    /// e.g. `"holderIdentity":"replica-a"` for one replica's Lease renewals.
    pub body_contains: Vec<String>,
}

impl FaultConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(format!(
                "errorRate: Invalid value: {}: must be between 0 and 1",
                self.error_rate
            ));
        }
        if ![0, 429, 500, 503].contains(&self.error_code) {
            return Err(format!(
                "errorCode: Unsupported value: {}: supported values: 429, 500, 503",
                self.error_code
            ));
        }
        Ok(())
    }
}

/// What a request should suffer.
#[derive(Debug, Clone, PartialEq)]
pub enum Injected {
    Error { code: u16, retry_after: u64 },
}

/// The live fault settings shared by every listener of one mock-cloud.
pub struct Faults {
    cfg: RwLock<FaultConfig>,
    drop_watches: watch::Sender<u64>,
    injected_errors: AtomicU64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            cfg: RwLock::new(FaultConfig::default()),
            drop_watches: watch::channel(0).0,
            injected_errors: AtomicU64::new(0),
        }
    }
}

impl Faults {
    pub fn get(&self) -> FaultConfig {
        self.cfg.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, cfg: FaultConfig) -> Result<(), String> {
        cfg.validate()?;
        *self.cfg.write().unwrap_or_else(|e| e.into_inner()) = cfg;
        Ok(())
    }

    /// Ends every open watch stream now.
    pub fn drop_watches(&self) {
        self.drop_watches.send_modify(|g| *g += 1);
    }

    /// A receiver that changes whenever watches are to be dropped.
    pub fn watch_drops(&self) -> watch::Receiver<u64> {
        self.drop_watches.subscribe()
    }

    pub fn injected_errors(&self) -> u64 {
        self.injected_errors.load(Ordering::Relaxed)
    }

    /// Sleeps for the configured latency and decides whether this request fails.
    pub async fn apply(&self, path: &str, verb: &str, body: &[u8]) -> Option<Injected> {
        let cfg = self.get();
        let path_ok = cfg.path_prefixes.is_empty()
            || cfg
                .path_prefixes
                .iter()
                .any(|p| path.starts_with(p.as_str()));
        let verb_ok = cfg.verbs.is_empty() || cfg.verbs.iter().any(|v| v == verb);
        let body_ok = cfg.body_contains.is_empty()
            || cfg
                .body_contains
                .iter()
                .any(|needle| contains(body, needle.as_bytes()));
        if !(path_ok && verb_ok && body_ok) {
            return None;
        }
        if cfg.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(cfg.latency_ms)).await;
        }
        if cfg.error_rate > 0.0 && rand::rng().random_bool(cfg.error_rate.min(1.0)) {
            self.injected_errors.fetch_add(1, Ordering::Relaxed);
            let code = if cfg.error_code == 0 {
                500
            } else {
                cfg.error_code
            };
            return Some(Injected::Error {
                code,
                retry_after: cfg.retry_after_seconds.max(1),
            });
        }
        None
    }
}

/// Whether `needle` occurs in `haystack` (an empty needle always does).
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn error_rate_one_always_fails_and_scopes_apply() {
        let f = Faults::default();
        f.set(FaultConfig {
            error_rate: 1.0,
            error_code: 429,
            retry_after_seconds: 3,
            verbs: vec!["create".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            f.apply("/api/v1/namespaces/default/services", "create", b"{}")
                .await,
            Some(Injected::Error {
                code: 429,
                retry_after: 3
            })
        );
        assert_eq!(f.apply("/api/v1/services", "list", b"").await, None);
        assert_eq!(f.injected_errors(), 1);
        assert!(
            f.set(FaultConfig {
                error_rate: 2.0,
                ..Default::default()
            })
            .is_err()
        );
    }

    #[tokio::test]
    async fn body_filter_delays_only_matching_requests() {
        let f = Faults::default();
        f.set(FaultConfig {
            latency_ms: 45_000,
            path_prefixes: vec!["/apis/coordination.k8s.io/".into()],
            verbs: vec!["update".into()],
            body_contains: vec![r#""holderIdentity":"replica-a""#.into()],
            ..Default::default()
        })
        .unwrap();
        let lease = "/apis/coordination.k8s.io/v1/namespaces/default/leases/l";
        let a: &[u8] = br#"{"spec":{"holderIdentity":"replica-a"}}"#;
        let b: &[u8] = br#"{"spec":{"holderIdentity":"replica-b"}}"#;
        // A matching request sleeps 45 s: it is still asleep after 200 ms.
        let hung =
            tokio::time::timeout(Duration::from_millis(200), f.apply(lease, "update", a)).await;
        assert!(hung.is_err(), "replica-a's renewal was not delayed");
        // Anything else passes at once (well within 45 s).
        for (body, verb, path) in [
            (b, "update", lease),
            (a, "get", lease),
            (b"" as &[u8], "update", lease),
            (a, "update", "/api/v1/namespaces/default/services/s"),
        ] {
            let r = tokio::time::timeout(Duration::from_secs(10), f.apply(path, verb, body)).await;
            assert_eq!(r, Ok(None), "{verb} {path} was delayed");
        }
        assert!(contains(b"abc", b""));
        assert!(!contains(b"ab", b"abc"));
    }
}
