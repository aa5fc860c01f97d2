//! Sending one request to the load balancer API: the bearer token, retries, error
//! classification and per-attempt metrics.

use backon::Retryable;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue};

/// RFC 7240's request header.
const PREFER: &str = "prefer";
use reqwest::{Method, Response, StatusCode, Url};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tracing::debug;

use super::retry::{Backoff, after_at_least, retry_after};
use super::wire::ErrorBody;
use super::{HttpProviderConfig, MetricsHook};
use crate::ProviderError;
use crate::bounds::{self, MAX_ERROR_BODY_BYTES, describe, redact_url, server_message};

/// The longest `Retry-After` waited for inside one call. A longer one ends the call with
/// [`ProviderError::Transient`] carrying it, so the controller requeues instead of holding
/// a worker.
const MAX_INLINE_RETRY_AFTER: Duration = Duration::from_secs(30);

/// One request, to be sent (and re-sent) as is.
pub(super) struct Request {
    /// The operation, for metrics and logs: `get`, `put`, `delete`, `list`.
    pub op: &'static str,
    pub method: Method,
    pub url: Url,
    pub header: Option<(HeaderName, HeaderValue)>,
    /// A `LoadBalancerSpec`'s JSON, encoded once for every attempt.
    pub body: Option<bytes::Bytes>,
}

/// The transport to the load balancer API.
pub(super) struct Api {
    client: reqwest::Client,
    token_file: Option<PathBuf>,
    backoff: Backoff,
    max_retries: u32,
    pub(super) metrics: Option<MetricsHook>,
}

/// Why an attempt failed, and whether another may succeed.
struct Failure {
    error: ProviderError,
    retryable: bool,
    /// The server's `Retry-After`, waited for instead of the backoff.
    retry_after: Option<Duration>,
}

impl Failure {
    /// Worth another attempt, after the backoff.
    fn retry(error: ProviderError) -> Self {
        Self {
            error,
            retryable: true,
            retry_after: None,
        }
    }

    /// Final.
    fn last(error: ProviderError) -> Self {
        Self {
            error,
            retryable: false,
            retry_after: None,
        }
    }
}

/// What to do with a response.
enum Verdict {
    /// The caller interprets it (2xx, 404, 412).
    Done,
    /// Retry after `Retry-After`, or with backoff when absent (429, 503).
    Throttled,
    /// Retry with backoff (other 5xx).
    Retry,
    /// Fail without retrying.
    Fail,
}

impl Api {
    pub fn new(cfg: &HttpProviderConfig, base: &Url) -> Result<Self, ProviderError> {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            return Err(ProviderError::Permanent(
                "No rustls crypto provider is installed; call \
                 rustls::crypto::ring::default_provider().install_default() at start-up"
                    .into(),
            ));
        }
        let mut builder = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &cfg.ca_bundle {
            let pem = std::fs::read(path).map_err(|e| {
                ProviderError::Permanent(format!("Cannot read CA bundle {}: {e}", path.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                ProviderError::Permanent(format!("Invalid CA bundle {}: {e}", path.display()))
            })?;
            if certs.is_empty() {
                return Err(ProviderError::Permanent(format!(
                    "CA bundle {} holds no PEM certificates",
                    path.display()
                )));
            }
            // The system's roots plus the bundle.
            builder = builder.tls_certs_merge(certs);
        } else if base.scheme() == "http" {
            // No TLS will ever be used: do not require system roots (a minimal image may
            // have none, and loading them would fail).
            builder = builder.tls_certs_only([]);
        }
        let client = builder.build().map_err(|e| {
            ProviderError::Permanent(format!("Cannot build the HTTP client: {}", describe(&e)))
        })?;
        Ok(Self {
            client,
            token_file: cfg.token_file.clone(),
            backoff: Backoff::default(),
            max_retries: cfg.max_retries,
            metrics: None,
        })
    }

    /// Sends `req`, retrying throttling, 5xx and connection failures up to `max_retries`
    /// times. Returns the response for 2xx, 404 and 412; maps every other status to an
    /// error.
    pub async fn send(&self, req: Request) -> Result<Response, ProviderError> {
        let mut retry = 0u32;
        (|| self.attempt(&req))
            .retry(self.backoff.build(self.max_retries))
            .sleep(tokio::time::sleep)
            .when(|f: &Failure| f.retryable)
            // Backoff unless the server said how long to wait; `None` (no retries left)
            // ends the call either way.
            .adjust(|f, backoff| backoff.map(|b| f.retry_after.map_or(b, after_at_least)))
            .notify(|f, wait| {
                debug!(op = req.op, retry, ?wait, error = %f.error, "Retrying the load balancer API");
                retry += 1;
            })
            .await
            .map_err(|f| f.error)
    }

    /// One attempt at `req`.
    async fn attempt(&self, req: &Request) -> Result<Response, Failure> {
        // Read on every attempt, so a rotated token is picked up.
        let auth = self.authorization().map_err(Failure::last)?;
        let mut builder = self.client.request(req.method.clone(), req.url.clone());
        if let Some(auth) = auth {
            builder = builder.header(AUTHORIZATION, auth);
        }
        if let Some((name, value)) = &req.header {
            builder = builder.header(name, value);
        }
        if let Some(body) = &req.body {
            // Every body is a load balancer being written: berth reads only the status and
            // ETag of the answer, so it asks the server not to echo the spec back (RFC 7240;
            // a server that ignores the preference answers in full).
            builder = builder
                .header(CONTENT_TYPE, "application/json")
                .header(PREFER, "return=minimal")
                .body(body.clone());
        }
        let started = Instant::now();
        let result = builder.send().await;
        let elapsed = started.elapsed();

        let resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                self.record(
                    req.op,
                    if e.is_timeout() {
                        "timeout"
                    } else {
                        "network_error"
                    },
                    elapsed,
                );
                if e.is_builder() {
                    return Err(Failure::last(ProviderError::Permanent(format!(
                        "Cannot build the {} request: {}",
                        req.op,
                        describe(&e)
                    ))));
                }
                let message = format!(
                    "Cannot reach the load balancer API ({} {}): {}",
                    req.method,
                    redact_url(&req.url),
                    describe(&e)
                );
                return Err(Failure::retry(ProviderError::transient(message)));
            }
        };
        let status = resp.status();
        self.record(req.op, outcome(status), elapsed);
        debug!(op = req.op, url = %redact_url(&req.url), %status, ?elapsed, "Load balancer API answered");
        match verdict(status) {
            Verdict::Done => Ok(resp),
            Verdict::Fail => Err(Failure::last(error_of(resp).await)),
            Verdict::Retry => Err(Failure::retry(ProviderError::transient(
                message_of(resp).await,
            ))),
            Verdict::Throttled => {
                let asked = retry_after(resp.headers());
                let error = ProviderError::Transient {
                    message: message_of(resp).await,
                    retry_after: asked,
                };
                match asked {
                    Some(asked) if asked > MAX_INLINE_RETRY_AFTER => Err(Failure::last(error)),
                    Some(asked) => Err(Failure {
                        retry_after: Some(asked),
                        ..Failure::retry(error)
                    }),
                    None => Err(Failure::retry(error)),
                }
            }
        }
    }

    /// The `Authorization` header, from the token file as it is now.
    fn authorization(&self) -> Result<Option<HeaderValue>, ProviderError> {
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        // Transient, not Permanent: the fix is in the file (a Secret being mounted or
        // rotated), not in the Service, so the controller must keep retrying.
        let token = std::fs::read_to_string(path).map_err(|e| {
            ProviderError::transient(format!("Cannot read token file {}: {e}", path.display()))
        })?;
        let token = token.trim();
        if token.is_empty() {
            return Err(ProviderError::transient(format!(
                "Token file {} is empty",
                path.display()
            )));
        }
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            ProviderError::transient(format!(
                "Token file {} holds characters not allowed in an HTTP header",
                path.display()
            ))
        })?;
        value.set_sensitive(true);
        Ok(Some(value))
    }

    fn record(&self, op: &'static str, outcome: &'static str, elapsed: Duration) {
        if let Some(hook) = &self.metrics {
            hook(op, outcome, elapsed);
        }
    }
}

fn verdict(status: StatusCode) -> Verdict {
    match status.as_u16() {
        200..=299 | 404 | 412 => Verdict::Done,
        429 | 503 => Verdict::Throttled,
        500..=599 => Verdict::Retry,
        _ => Verdict::Fail,
    }
}

/// The metrics label of a response.
fn outcome(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200..=299 => "success",
        401 | 403 => "unauthorized",
        404 => "not_found",
        409 => "conflict",
        412 => "precondition_failed",
        422 => "invalid",
        429 => "throttled",
        503 => "unavailable",
        400..=499 => "client_error",
        500..=599 => "server_error",
        _ => "unexpected",
    }
}

/// The error a non-retryable response stands for. The stable part names the status; the
/// server's (bounded) message follows it.
async fn error_of(resp: Response) -> ProviderError {
    let status = resp.status();
    let (message, field) = detail_of(resp).await;
    let said = |what: &str| format!("Load balancer API {what}: {message}");
    match status.as_u16() {
        401 | 403 => ProviderError::Permanent(said(&format!("refused the credentials ({status})"))),
        409 => ProviderError::Conflict(said(&format!("reported a conflict ({status})"))),
        422 => ProviderError::Invalid {
            field: field.unwrap_or_else(|| "spec".into()),
            message,
        },
        _ => ProviderError::Permanent(said(&format!("answered {status}"))),
    }
}

/// A message for a retryable response.
async fn message_of(resp: Response) -> String {
    let status = resp.status();
    let (message, _) = detail_of(resp).await;
    format!("Load balancer API answered {status}: {message}")
}

/// The server's message and field from a contract `Error` body, or the start of whatever
/// else it sent; reads at most [`MAX_ERROR_BODY_BYTES`] and keeps at most
/// [`bounds::MAX_MESSAGE_CHARS`] characters.
async fn detail_of(resp: Response) -> (String, Option<String>) {
    let status = resp.status();
    let (body, cut) = bounds::read_prefix(resp, MAX_ERROR_BODY_BYTES).await;
    if !cut && let Ok(ErrorBody { error }) = serde_json::from_slice::<ErrorBody>(&body) {
        let field = error
            .field
            .filter(|f| !f.is_empty())
            .map(|f| bounds::truncate(&f, bounds::MAX_QUOTED_CHARS));
        let message = server_message(&error.message);
        if !message.is_empty() {
            return (message, field);
        }
    }
    let text = String::from_utf8_lossy(&body);
    let message = if text.trim().is_empty() {
        status
            .canonical_reason()
            .unwrap_or("no message")
            .to_string()
    } else {
        server_message(&text)
    };
    (message, None)
}
