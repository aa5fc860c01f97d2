//! A thin shell over the ELBv2 client: bounded concurrency, the API budget (a shared token
//! bucket and bounded, jittered retries of throttling and transient failures, see
//! [`crate::aws::budget`]), call counting, error classification and conversion of SDK types
//! into plain ones. The calls
//! live by resource: [`load_balancers`] (with their listeners and tags) and
//! [`target_groups`] (with their targets).

mod listener_certificates;
mod load_balancers;
mod target_groups;

pub use target_groups::health_differs;

use aws_sdk_elasticloadbalancingv2 as elb;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use elb::error::{ProvideErrorMetadata, SdkError};
use elb::types::{Action, ActionTypeEnum, Tag};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

use super::annotations::TgHealth;
use super::budget::{Bucket, Budget, ELB_BURST, ELB_RATE, Verdict};
use crate::ProviderError;

/// DescribeTags takes at most 20 ARNs.
const TAG_CHUNK: usize = 20;
/// Register/DeregisterTargets chunk size.
pub const TARGET_CHUNK: usize = 100;
/// Attempts of one call unless a budget says otherwise.
const DEFAULT_ATTEMPTS: u32 = 5;

/// A failed ELBv2 call, classified.
#[derive(Debug, Clone, thiserror::Error)]
#[error("ELBv2 {op} failed: {message}")]
pub struct ApiError {
    pub op: &'static str,
    pub code: Option<String>,
    pub message: String,
    pub throttled: bool,
    pub transient: bool,
}

impl ApiError {
    pub fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    pub fn not_found(&self) -> bool {
        matches!(
            self.code.as_deref(),
            Some(
                "LoadBalancerNotFound"
                    | "TargetGroupNotFound"
                    | "ListenerNotFound"
                    | "TargetGroupNotFoundException"
                    | "LoadBalancerNotFoundException"
            )
        )
    }
}

/// How the budget labels a failed attempt and whether it retries it.
fn verdict(e: &ApiError) -> Verdict {
    Verdict {
        outcome: if e.throttled {
            "throttled"
        } else if e.transient {
            "transient"
        } else {
            "client_error"
        },
        retry: e.transient,
    }
}

impl From<ApiError> for ProviderError {
    fn from(e: ApiError) -> Self {
        if e.throttled {
            ProviderError::Transient {
                message: e.to_string(),
                retry_after: Some(Duration::from_secs(2)),
            }
        } else if e.transient || e.is("ResourceInUse") {
            ProviderError::transient(e.to_string())
        } else {
            ProviderError::Permanent(e.to_string())
        }
    }
}

fn classify<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    op: &'static str,
    err: SdkError<E, HttpResponse>,
) -> ApiError {
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().map(str::to_string);
    let throttled = matches!(
        code.as_deref(),
        Some(
            "Throttling"
                | "ThrottlingException"
                | "RequestLimitExceeded"
                | "TooManyRequestsException"
        )
    ) || status == Some(429);
    // 503 (SlowDown, ServiceUnavailable) and other 5xx are transient below.
    let transient = throttled
        || status.is_some_and(|s| s >= 500)
        || matches!(
            err,
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_)
        );
    let message = match (&code, err.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.clone(),
        _ => {
            let mut m = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(s) = source {
                m.push_str(": ");
                m.push_str(&s.to_string());
                source = s.source();
            }
            m
        }
    };
    ApiError {
        op,
        code,
        message,
        throttled,
        transient,
    }
}

/// A load balancer as read.
#[derive(Debug, Clone)]
pub struct CurrentLb {
    pub arn: String,
    pub dns_name: String,
    pub scheme: String,
    /// `network`, `application` or `gateway`.
    pub kind: String,
    pub vpc_id: String,
    pub subnets: BTreeSet<String>,
    pub security_groups: BTreeSet<String>,
    pub created: Option<i64>,
    pub tags: BTreeMap<String, String>,
}

/// A target group as read.
#[derive(Debug, Clone)]
pub struct CurrentTg {
    pub arn: String,
    pub name: String,
    pub health: TgHealth,
    pub tags: BTreeMap<String, String>,
}

/// The ELBv2 client with berth's policies.
pub struct Elb {
    client: elb::Client,
    limit: Semaphore,
    budget: Arc<Budget>,
    calls: Mutex<BTreeMap<&'static str, u64>>,
}

impl Elb {
    pub fn new(client: elb::Client, concurrency: usize) -> Self {
        let bucket = Bucket::new("elbv2", ELB_RATE, ELB_BURST).expect("valid defaults");
        Self {
            client,
            limit: Semaphore::new(concurrency.max(1)),
            budget: Arc::new(Budget::new(bucket, DEFAULT_ATTEMPTS)),
            calls: Mutex::new(BTreeMap::new()),
        }
    }

    /// Paces and retries every call through `budget` (shared with other clients of the
    /// same API).
    pub fn with_budget(mut self, budget: Arc<Budget>) -> Self {
        self.budget = budget;
        self
    }

    /// Attempts sent so far, by operation.
    pub fn calls(&self) -> BTreeMap<&'static str, u64> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// One call: each attempt takes a token from the budget and a concurrency slot, is
    /// counted, and is retried (bounded, jittered) while throttled or transiently failing.
    async fn call<T, E, Fut>(
        &self,
        op: &'static str,
        f: impl Fn(&elb::Client) -> Fut,
    ) -> Result<T, ApiError>
    where
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        self.budget
            .run(
                op,
                || {
                    let sent = f(&self.client);
                    async move {
                        let _permit = self.limit.acquire().await.expect("never closed");
                        if let Ok(mut c) = self.calls.lock() {
                            *c.entry(op).or_default() += 1;
                        }
                        sent.await.map_err(|e| classify(op, e))
                    }
                },
                verdict,
            )
            .await
    }
}

fn forward(tg_arn: &str) -> Action {
    Action::builder()
        .r#type(ActionTypeEnum::Forward)
        .target_group_arn(tg_arn)
        .build()
}

fn sdk_tags(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_is_transient_with_a_wait() {
        let e = ApiError {
            op: "RegisterTargets",
            code: Some("Throttling".into()),
            message: "Throttling: Rate exceeded".into(),
            throttled: true,
            transient: true,
        };
        let p: ProviderError = e.into();
        assert!(p.is_retryable());
        assert!(p.retry_after().is_some());
        let e = ApiError {
            op: "CreateLoadBalancer",
            code: Some("ValidationError".into()),
            message: "bad".into(),
            throttled: false,
            transient: false,
        };
        assert_eq!(verdict(&e).outcome, "client_error");
        assert!(!verdict(&e).retry);
        assert!(!ProviderError::from(e).is_retryable());
    }

    #[test]
    fn budget_verdicts() {
        let mut e = ApiError {
            op: "DescribeTags",
            code: Some("Throttling".into()),
            message: "Throttling: Rate exceeded".into(),
            throttled: true,
            transient: true,
        };
        assert_eq!(
            verdict(&e),
            Verdict {
                outcome: "throttled",
                retry: true
            }
        );
        e.throttled = false;
        e.code = None;
        assert_eq!(
            verdict(&e),
            Verdict {
                outcome: "transient",
                retry: true
            }
        );
    }
}
