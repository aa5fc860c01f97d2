//! The `http` provider: drives any external load balancer that implements berth's REST
//! contract (`docs/http-provider.openapi.yaml`).
//!
//! `ensure` reads the load balancer and writes only when its spec differs, with `If-Match`
//! (or `If-None-Match: *` to create), re-reading when someone else wrote in between. A
//! change to a load balancer this provider has already read or written skips the read: it is
//! written at once with `If-Match` of the ETag it knows, and only a `412` (changed or
//! deleted behind berth's back) falls back to reading first. An unchanged spec is always read
//! back, so periodic re-ensures still find and repair drift.

mod client;
mod retry;
mod wire;

use async_trait::async_trait;
use reqwest::header::{HeaderValue, IF_MATCH, IF_NONE_MATCH};
use reqwest::{Method, Response, StatusCode, Url};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{debug, info, instrument, warn};

use crate::bounds::{self, BodyError, MAX_RESPONSE_BYTES, redact_endpoint, redact_url};
use crate::{
    DesiredLoadBalancer, LABEL_CLUSTER, LABEL_SERVICE_UID, LoadBalancerRef, LoadBalancerStatus,
    NodeTarget, OwnedLoadBalancer, Provider, ProviderError,
};
use client::{Api, Request};
use wire::{Spec, SpecDigest};

/// Called once per HTTP attempt with the operation (`get`, `put`, `delete`, `list`), the
/// outcome (`success`, `not_found`, `precondition_failed`, `conflict`, `invalid`,
/// `throttled`, `unavailable`, `unauthorized`, `client_error`, `server_error`, `timeout`,
/// `network_error`, `unexpected`) and how long the attempt took.
pub type MetricsHook = Arc<dyn Fn(&'static str, &'static str, Duration) + Send + Sync>;

/// How many times `ensure` re-reads after a `412` (someone else wrote in between).
const MAX_PRECONDITION_RETRIES: u32 = 5;

/// The most berth reads of a load balancer list. It asks for ids and labels only (about
/// 300 bytes a load balancer: 50,000 fit); a server that answers whole load balancers
/// anyway is read up to this much.
const MAX_LIST_BYTES: usize = 16 << 20;

/// Where and how to reach the load balancer API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpProviderConfig {
    /// The API's base URL, e.g. `https://lb-api.example.internal` (paths start with `/v1`).
    pub endpoint: String,
    /// A file holding the bearer token, read on every request so rotated tokens work.
    pub token_file: Option<PathBuf>,
    /// PEM certificates trusted in addition to the system's roots.
    pub ca_bundle: Option<PathBuf>,
    /// The limit on each HTTP attempt, connect to last byte.
    pub timeout: Duration,
    /// Retries after the first attempt, for throttling, 5xx and connection failures.
    pub max_retries: u32,
}

impl HttpProviderConfig {
    /// A configuration for `endpoint` with no token, system roots, a 10 s timeout and 5
    /// retries.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            token_file: None,
            ca_bundle: None,
            timeout: Duration::from_secs(10),
            max_retries: 5,
        }
    }
}

/// The `http` provider.
pub struct HttpProvider {
    api: Api,
    base: Url,
    /// The digest of the spec and the ETag last read or written, per load balancer id.
    known: Mutex<HashMap<String, (SpecDigest, String)>>,
    /// Load balancers last seen absent whose creation then failed: the next attempt creates
    /// straight away (`If-None-Match: *`, so one that appeared meanwhile is read instead),
    /// halving the calls a Service whose creation keeps being refused costs.
    absent: Mutex<std::collections::HashSet<String>>,
    /// The node set's target list, rendered once for every load balancer.
    targets: wire::TargetCache,
}

/// A load balancer as read, with the ETag to write it back.
struct Current {
    lb: wire::LoadBalancer,
    etag: Option<String>,
}

/// The condition a `PUT` is sent with.
enum Precondition {
    /// Create only: `If-None-Match: *`.
    Absent,
    /// Update only what was read: `If-Match`, when the server gave an ETag.
    Matches(Option<String>),
}

impl HttpProvider {
    /// A provider for `cfg`. Reads the CA bundle once; fails on an unusable endpoint or
    /// bundle, or when no rustls crypto provider is installed. Warns when a bearer token
    /// would be sent over plain `http://`.
    pub fn new(cfg: HttpProviderConfig) -> Result<Self, ProviderError> {
        let base = Url::parse(&cfg.endpoint)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && !u.cannot_be_a_base())
            .ok_or_else(|| {
                ProviderError::Permanent(format!(
                    "Invalid http provider endpoint {:?}: expected an http:// or https:// URL",
                    redact_endpoint(&cfg.endpoint)
                ))
            })?;
        if cfg.token_file.is_some() && base.scheme() == "http" {
            warn!(
                endpoint = %redact_url(&base),
                "The bearer token from --http-token-file is sent over plain http://, readable \
                 by anyone on the path; use an https:// endpoint"
            );
        }
        Ok(Self {
            api: Api::new(&cfg, &base)?,
            base,
            known: Mutex::default(),
            absent: Mutex::default(),
            targets: Default::default(),
        })
    }

    /// Reports every HTTP attempt to `hook` (for Prometheus counters and histograms).
    pub fn with_metrics(mut self, hook: MetricsHook) -> Self {
        self.api.metrics = Some(hook);
        self
    }

    /// The API's base URL, as configured: it may carry credentials, so print
    /// [`bounds::redact_url`] of it, never the URL itself.
    pub fn endpoint(&self) -> &Url {
        &self.base
    }

    /// `<endpoint>/v1/loadbalancers[/<id>]`.
    fn url(&self, id: Option<&str>) -> Url {
        let mut url = self.base.clone();
        {
            // `new` checked the URL can be a base, so this cannot fail.
            let mut segments = url
                .path_segments_mut()
                .expect("checked in HttpProvider::new");
            segments.pop_if_empty().extend(["v1", "loadbalancers"]);
            if let Some(id) = id {
                segments.push(id);
            }
        }
        url.set_query(None);
        url
    }

    fn known(&self, id: &str) -> Option<(SpecDigest, String)> {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Remembers what `id` looks like now (or forgets it when the ETag is unknown).
    fn remember(&self, id: &str, spec: &Spec, etag: Option<String>) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        match etag {
            Some(etag) => {
                known.insert(id.to_string(), (spec.digest(), etag));
            }
            None => {
                known.remove(id);
            }
        }
    }

    fn forget(&self, id: &str) {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        self.set_absent(id, false);
    }

    fn set_absent(&self, id: &str, absent: bool) {
        let mut a = self.absent.lock().unwrap_or_else(|e| e.into_inner());
        if absent {
            a.insert(id.to_string());
        } else {
            a.remove(id);
        }
    }

    fn was_absent(&self, id: &str) -> bool {
        self.absent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id)
    }

    async fn get(&self, id: &str) -> Result<Option<Current>, ProviderError> {
        let resp = self
            .api
            .send(Request {
                op: "get",
                method: Method::GET,
                url: self.url(Some(id)),
                header: None,
                body: None,
            })
            .await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::OK => {
                let header_etag = etag(&resp);
                let lb: wire::LoadBalancer =
                    read_json(resp, "load balancer", MAX_RESPONSE_BYTES).await?;
                let etag = header_etag.or_else(|| lb.etag.clone());
                Ok(Some(Current { lb, etag }))
            }
            other => Err(unexpected("GET", other)),
        }
    }

    /// `PUT`s `spec`; `None` when the precondition failed (`412`).
    async fn put(
        &self,
        id: &str,
        spec: &Spec,
        precondition: Precondition,
    ) -> Result<Option<wire::Written>, ProviderError> {
        let header = match precondition {
            Precondition::Absent => Some((IF_NONE_MATCH, HeaderValue::from_static("*"))),
            Precondition::Matches(Some(etag)) => HeaderValue::from_str(&etag)
                .ok()
                .map(|value| (IF_MATCH, value)),
            Precondition::Matches(None) => None,
        };
        let body = serde_json::to_vec(spec).map_err(|e| {
            ProviderError::Permanent(format!("Cannot encode load balancer {id}: {e}"))
        })?;
        let resp = self
            .api
            .send(Request {
                op: "put",
                method: Method::PUT,
                url: self.url(Some(id)),
                header,
                body: Some(body.into()),
            })
            .await?;
        match resp.status() {
            StatusCode::PRECONDITION_FAILED => Ok(None),
            StatusCode::OK | StatusCode::CREATED => Ok(Some(
                read_json(resp, "load balancer", MAX_RESPONSE_BYTES).await?,
            )),
            other => Err(unexpected("PUT", other)),
        }
    }
}

/// What the http provider honours: berth's health check and requested addresses, which it
/// sends to the load balancer API; no annotation of its own.
pub const ANNOTATIONS: crate::AnnotationSupport = crate::AnnotationSupport {
    keys: &[],
    health_check: true,
    requested_addresses: true,
    otherwise: "it is not sent to the load balancer API",
};

#[async_trait]
impl Provider for HttpProvider {
    fn name(&self) -> &'static str {
        "http"
    }

    fn needs_node_ports(&self) -> bool {
        true
    }

    fn annotations(&self) -> crate::AnnotationSupport {
        ANNOTATIONS
    }

    /// Traffic goes to `address:NodePort`: a node without an address cannot be a target yet.
    fn can_target(&self, target: &NodeTarget) -> bool {
        target.internal_ip.is_some()
    }

    fn validate(&self, lb: &DesiredLoadBalancer) -> Result<(), ProviderError> {
        Spec::from_desired_cached(lb, &self.targets).map(|_| ())
    }

    #[instrument(skip_all, fields(id = %lb.id, service = %format_args!("{}/{}", lb.service.namespace, lb.service.name)))]
    async fn ensure(&self, lb: &DesiredLoadBalancer) -> Result<LoadBalancerStatus, ProviderError> {
        let spec = Spec::from_desired_cached(lb, &self.targets)?;
        if let Some((known, etag)) = self.known(&lb.id)
            && spec.digest() != known
        {
            match self
                .put(&lb.id, &spec, Precondition::Matches(Some(etag)))
                .await?
            {
                Some(written) => {
                    info!("Updated load balancer");
                    self.remember(&lb.id, &spec, written.etag.clone());
                    return written.status.to_status();
                }
                None => debug!("Load balancer changed behind berth's back; reading it"),
            }
        }
        if self.was_absent(&lb.id) {
            match self.put(&lb.id, &spec, Precondition::Absent).await? {
                Some(written) => {
                    info!("Created load balancer");
                    self.set_absent(&lb.id, false);
                    self.remember(&lb.id, &spec, written.etag.clone());
                    return written.status.to_status();
                }
                None => {
                    self.set_absent(&lb.id, false);
                    debug!("Load balancer appeared since berth last looked; reading it");
                }
            }
        }
        for _ in 0..=MAX_PRECONDITION_RETRIES {
            let precondition = match self.get(&lb.id).await? {
                None => Precondition::Absent,
                Some(current) => {
                    check_owner(lb, &current.lb.spec)?;
                    if spec.same_as(&current.lb.spec) {
                        debug!("Load balancer is up to date");
                        self.remember(&lb.id, &current.lb.spec, current.etag.clone());
                        return current.lb.status.to_status();
                    }
                    Precondition::Matches(current.etag)
                }
            };
            let creating = matches!(precondition, Precondition::Absent);
            let put = self.put(&lb.id, &spec, precondition).await;
            if creating {
                self.set_absent(&lb.id, put.is_err());
            }
            match put? {
                Some(written) => {
                    if creating {
                        info!("Created load balancer");
                    } else {
                        info!("Updated load balancer");
                    }
                    self.remember(&lb.id, &spec, written.etag.clone());
                    return written.status.to_status();
                }
                None => debug!("Load balancer changed since it was read; reading again"),
            }
        }
        self.forget(&lb.id);
        Err(ProviderError::Conflict(format!(
            "Load balancer {} kept changing while berth updated it",
            lb.id
        )))
    }

    #[instrument(skip_all, fields(id = %lb.id))]
    async fn delete(&self, lb: &LoadBalancerRef) -> Result<(), ProviderError> {
        self.forget(&lb.id);
        let resp = self
            .api
            .send(Request {
                op: "delete",
                method: Method::DELETE,
                url: self.url(Some(&lb.id)),
                header: None,
                body: None,
            })
            .await?;
        match resp.status() {
            StatusCode::NOT_FOUND => {
                debug!("Load balancer already absent");
                Ok(())
            }
            s if s.is_success() => {
                info!("Deleted load balancer");
                Ok(())
            }
            other => Err(unexpected("DELETE", other)),
        }
    }

    #[instrument(skip(self))]
    async fn list_owned(&self, cluster: &str) -> Result<Vec<OwnedLoadBalancer>, ProviderError> {
        let mut url = self.url(None);
        // Only ids and labels (a server that ignores `view` answers whole load balancers,
        // read up to MAX_LIST_BYTES).
        url.query_pairs_mut()
            .append_pair("cluster", cluster)
            .append_pair("view", "labels");
        let resp = self
            .api
            .send(Request {
                op: "list",
                method: Method::GET,
                url,
                header: None,
                body: None,
            })
            .await?;
        if resp.status() != StatusCode::OK {
            return Err(unexpected("GET /v1/loadbalancers", resp.status()));
        }
        let list: wire::List = read_json(resp, "load balancer list", MAX_LIST_BYTES).await?;
        Ok(list
            .items
            .into_iter()
            // berth's ids are DNS labels: anything else is not berth's (and is not logged).
            .filter(|item| wire::is_valid_id(&item.id))
            .filter_map(|item| OwnedLoadBalancer::from_labels(item.id, item.spec.labels))
            // The server filters too; a server that ignores the query must not make berth
            // collect another cluster's load balancers.
            .filter(|owned| owned.cluster == cluster)
            .collect())
    }
}

/// Refuses to overwrite a load balancer this Service does not own: same id but another
/// cluster or Service uid (or none), i.e. not created by berth for it.
fn check_owner(lb: &DesiredLoadBalancer, current: &Spec) -> Result<(), ProviderError> {
    let label = |k: &str| current.labels.get(k).map(String::as_str);
    if label(LABEL_CLUSTER) == Some(lb.cluster.as_str())
        && label(LABEL_SERVICE_UID) == Some(lb.service.uid.as_str())
    {
        return Ok(());
    }
    Err(ProviderError::Permanent(format!(
        "Load balancer {} exists but berth did not create it for this Service \
         (its {LABEL_CLUSTER} and {LABEL_SERVICE_UID} labels differ); berth will not change it",
        lb.id
    )))
}

fn etag(resp: &Response) -> Option<String> {
    resp.headers()
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Reads and parses a response body of at most `max` bytes ([`MAX_RESPONSE_BYTES`], or
/// [`MAX_LIST_BYTES`] for a list); a larger one is an error as soon as it is known to be
/// larger.
async fn read_json<T: DeserializeOwned>(
    resp: Response,
    what: &str,
    max: usize,
) -> Result<T, ProviderError> {
    let body = bounds::read_body(resp, max).await.map_err(|e| match e {
        BodyError::TooLarge => ProviderError::Permanent(format!(
            "Load balancer API response ({what}) was larger than {} MiB; berth stopped reading it",
            max >> 20
        )),
        BodyError::Read(e) => ProviderError::transient(format!(
            "Cannot read the {what} from the load balancer API: {}",
            bounds::describe(&e)
        )),
    })?;
    serde_json::from_slice(&body).map_err(|e| {
        ProviderError::Permanent(format!(
            "Load balancer API returned an unreadable {what}: {}",
            bounds::server_message(&e.to_string())
        ))
    })
}

fn unexpected(request: &str, status: StatusCode) -> ProviderError {
    ProviderError::Permanent(format!(
        "Load balancer API answered {request} with unexpected status {status}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_the_endpoint_path() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        for (endpoint, want) in [
            (
                "http://lb.example:8080",
                "http://lb.example:8080/v1/loadbalancers/b-x",
            ),
            (
                "http://lb.example/api/",
                "http://lb.example/api/v1/loadbalancers/b-x",
            ),
            (
                "https://lb.example/api?x=1",
                "https://lb.example/api/v1/loadbalancers/b-x",
            ),
        ] {
            let p = HttpProvider::new(HttpProviderConfig::new(endpoint)).unwrap();
            assert_eq!(p.url(Some("b-x")).as_str(), want);
        }
    }

    #[test]
    fn rejects_unusable_endpoints() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        for endpoint in ["", "lb.example", "ftp://lb.example", "mailto:x@y"] {
            match HttpProvider::new(HttpProviderConfig::new(endpoint)) {
                Err(ProviderError::Permanent(m)) => {
                    assert!(m.contains("Invalid http provider endpoint"), "{m}")
                }
                Err(e) => panic!("{endpoint}: {e:?}"),
                Ok(_) => panic!("{endpoint}: accepted"),
            }
        }
    }
}
