//! The HTTP face of the API server: routing, content negotiation, request decoding, and
//! watch streams. Semantics live in [`super::core`].

use super::convert::from_storage;
use super::core::{ApiCore, DeleteOptions, ListOptions, Propagation, WriteOptions};
use super::error::{ApiError, success_status};
use super::negotiate::{self, Wire, json_response, reply};
use super::route::{ResourcePath, Route, not_found_path, parse_route};
use super::watches::watch;
use crate::faults::{Faults, Injected};
use crate::patch::PatchType;
use crate::registry::ResourceInfo;
use crate::selector::{FieldSelector, LabelSelector, supported_fields};
use crate::{discovery, openapi, table};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// Largest request body accepted, as kube-apiserver (3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Shared state of one API server.
pub struct ApiServer {
    pub core: Arc<ApiCore>,
    pub faults: Arc<Faults>,
    /// Address clients reach us at, for `/api`.
    pub address: String,
    /// Interval between watch bookmarks when a client allows them.
    pub bookmark_interval: Duration,
    /// Flips to true when the server shuts down; open watches end.
    pub shutdown: watch::Receiver<bool>,
    pub requests: AtomicU64,
    pub open_watches: AtomicU64,
    /// Requests by verb (`list`, `watch`, `create`, ...), for tests and benchmarks.
    pub verbs: std::sync::Mutex<HashMap<&'static str, u64>>,
    /// Authentication and RBAC authorization (`mock-cloud serve --rbac`); None: open.
    pub rbac: Option<Arc<super::rbac::Rbac>>,
    /// Every write request with its bearer token (`GET /mock-cloud/v1/audit`).
    pub audit: crate::audit::Audit,
    /// Objects of recent watch events, encoded once for all watchers.
    pub(crate) encodings: super::shared_encodings::SharedEncodings,
}

impl ApiServer {
    /// How many requests of this verb were served.
    pub fn verb_count(&self, verb: &str) -> u64 {
        self.verbs
            .lock()
            .map(|m| m.get(verb).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

pub fn router(state: Arc<ApiServer>) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(state)
}

fn aggregated_response(doc: Value) -> Response {
    let mut r = json_response(200, &doc);
    if let Ok(v) = discovery::AGGREGATED_CONTENT_TYPE.parse() {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

fn query_map(query: Option<&str>) -> HashMap<String, String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query.unwrap_or(""))
        .unwrap_or_default()
        .into_iter()
        .collect()
}

pub(super) fn truthy(q: &HashMap<String, String>, key: &str) -> bool {
    q.get(key)
        .is_some_and(|v| v == "true" || v == "1" || v.is_empty())
}

async fn handle(State(srv): State<Arc<ApiServer>>, req: Request) -> Response {
    srv.requests.fetch_add(1, Ordering::Relaxed);
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = query_map(req.uri().query());
    let headers = req.headers().clone();
    let route = match parse_route(&srv.core, &path) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if let Some(rbac) = &srv.rbac
        && let Err(e) = check_rbac(&srv, rbac, &route, &method, &query, &headers)
    {
        return e.into_response();
    }
    let body = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::too_large(format!(
                "the request body exceeds the limit of {MAX_BODY} bytes"
            ))
            .into_response();
        }
    };
    let mut audited = None;
    if let Route::Resource(rp) = &route {
        let verb = verb_of(&method, rp, &query);
        if let Ok(mut m) = srv.verbs.lock() {
            *m.entry(verb).or_default() += 1;
        }
        if is_write(verb) {
            let auth = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            let seq = srv.audit.begin(verb, &path, crate::audit::bearer(auth));
            audited = Some(seq);
        }
    }
    let response = dispatch(&srv, route, &method, &path, &query, &headers, body).await;
    if let Some(seq) = audited {
        srv.audit.finish(seq, response.status().as_u16());
    }
    response
}

fn is_write(verb: &str) -> bool {
    matches!(
        verb,
        "create" | "update" | "patch" | "delete" | "deletecollection"
    )
}

/// Injects faults, then serves the request.
async fn dispatch(
    srv: &Arc<ApiServer>,
    route: Route,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    if let Route::Resource(rp) = &route {
        let verb = verb_of(method, rp, query);
        if let Some(Injected::Error { code, retry_after }) =
            srv.faults.apply(path, verb, &body).await
        {
            let mut e = if code == 429 {
                ApiError::too_many_requests(retry_after)
            } else {
                let mut e = ApiError::internal("injected fault: internal error");
                if code == 503 {
                    e.code = 503;
                    e.reason = "ServiceUnavailable";
                    e.retry_after = Some(retry_after);
                }
                e
            };
            e.message = format!("{} (injected)", e.message);
            return e.into_response();
        }
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    match route {
        Route::Version => json_response(200, &discovery::version()),
        Route::Health => Response::new(Body::from("ok")),
        Route::Api if discovery::wants_aggregated(&accept) => {
            aggregated_response(discovery::aggregated(&srv.core.registry, true))
        }
        Route::Apis if discovery::wants_aggregated(&accept) => {
            aggregated_response(discovery::aggregated(&srv.core.registry, false))
        }
        Route::Api => json_response(200, &discovery::api_versions(&srv.address)),
        Route::Apis => json_response(200, &discovery::api_group_list(&srv.core.registry)),
        Route::Group(g) => match discovery::api_group(&srv.core.registry, &g) {
            Some(v) => json_response(200, &v),
            None => not_found_path().into_response(),
        },
        Route::GroupVersion(g, v) => {
            match discovery::api_resource_list(&srv.core.registry, &g, &v) {
                Some(doc) => json_response(200, &doc),
                None => not_found_path().into_response(),
            }
        }
        Route::OpenApiV3Root => json_response(200, &openapi::v3_root(&srv.core.registry)),
        Route::OpenApiV3(p) => match openapi::v3_group_version(&srv.core.registry, &p) {
            Some(doc) => json_response(200, &doc),
            None => not_found_path().into_response(),
        },
        Route::OpenApiV2 if accept.contains("protobuf") => Response::builder()
            .status(200)
            .header(header::CONTENT_TYPE, openapi::V2_PROTOBUF_CONTENT_TYPE)
            .body(Body::from(openapi::v2_protobuf()))
            .expect("valid response"),
        Route::OpenApiV2 => match openapi::v2(&srv.core.registry) {
            Some(doc) => json_response(200, &doc),
            None => not_found_path().into_response(),
        },
        Route::Admin(rest) => admin(srv, method, &rest, query, &body),
        Route::Resource(rp) => {
            let wire = match negotiate::choose(&accept) {
                Ok(w) => w,
                Err(e) => return e.into_response(),
            };
            match resource(srv, method, *rp, query, headers, wire, body).await {
                Ok(r) => r,
                Err(e) => negotiate::error(wire, e),
            }
        }
    }
}

/// Authenticates every request except mock-cloud's own admin endpoints, and authorizes
/// resource requests with RBAC (see [`super::rbac`]).
fn check_rbac(
    srv: &ApiServer,
    rbac: &super::rbac::Rbac,
    route: &Route,
    method: &Method,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    if matches!(route, Route::Admin(_)) {
        return Ok(());
    }
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let user = rbac.authenticate(auth)?;
    let Route::Resource(rp) = route else {
        return Ok(());
    };
    let name = rp.name.clone().or_else(|| {
        query
            .get("fieldSelector")
            .and_then(|f| f.strip_prefix("metadata.name="))
            .filter(|n| !n.contains(','))
            .map(str::to_string)
    });
    let attrs = super::rbac::Attributes {
        verb: verb_of(method, rp, query).to_string(),
        group: rp.info.group.clone(),
        resource: rp.info.resource.clone(),
        subresource: rp.sub.clone(),
        namespace: rp.namespace.clone(),
        name,
    };
    rbac.authorize(&srv.core.store, &user, &attrs)
}

fn verb_of(method: &Method, rp: &ResourcePath, q: &HashMap<String, String>) -> &'static str {
    match *method {
        Method::GET if rp.legacy_watch || truthy(q, "watch") => "watch",
        Method::GET if rp.name.is_none() => "list",
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if rp.name.is_none() => "deletecollection",
        Method::DELETE => "delete",
        _ => "other",
    }
}

/// `?after=SEQ` of `GET /mock-cloud/v1/audit` (default 0: everything kept).
fn audit_after(query: &HashMap<String, String>) -> u64 {
    query.get("after").and_then(|a| a.parse().ok()).unwrap_or(0)
}

fn admin(
    srv: &ApiServer,
    method: &Method,
    rest: &[String],
    query: &HashMap<String, String>,
    body: &Bytes,
) -> Response {
    let r: Vec<&str> = rest.iter().map(String::as_str).collect();
    match (method.clone(), r.as_slice()) {
        (Method::GET, ["v1", "faults"]) => json_response(
            200,
            &serde_json::to_value(srv.faults.get()).unwrap_or_default(),
        ),
        (Method::PUT, ["v1", "faults"]) => {
            match serde_json::from_slice(body)
                .map_err(|e| e.to_string())
                .and_then(|cfg| srv.faults.set(cfg))
            {
                Ok(()) => json_response(
                    200,
                    &serde_json::to_value(srv.faults.get()).unwrap_or_default(),
                ),
                Err(e) => {
                    ApiError::bad_request(format!("invalid fault config: {e}")).into_response()
                }
            }
        }
        (Method::POST, ["v1", "faults", "drop-watches"]) => {
            srv.faults.drop_watches();
            json_response(200, &json!({"dropped": true}))
        }
        (Method::POST, ["v1", "compact"]) => {
            srv.core.store.compact();
            json_response(
                200,
                &json!({"compactedTo": srv.core.store.current_rv().to_string()}),
            )
        }
        (Method::POST, ["v1", "token"]) if srv.rbac.is_some() => {
            let v: Value = serde_json::from_slice(body).unwrap_or_default();
            match (v["namespace"].as_str(), v["serviceAccount"].as_str()) {
                (Some(ns), Some(sa)) if !ns.is_empty() && !sa.is_empty() => {
                    let rbac = srv.rbac.as_ref().expect("checked");
                    let token = rbac.issue_token(ns, sa);
                    json_response(
                        200,
                        &json!({"token": token, "user": format!("system:serviceaccount:{ns}:{sa}")}),
                    )
                }
                _ => {
                    ApiError::bad_request("expected {\"namespace\": NS, \"serviceAccount\": NAME}")
                        .into_response()
                }
            }
        }
        (Method::GET, ["v1", "denials"]) if srv.rbac.is_some() => json_response(
            200,
            &json!({
                "items": srv.rbac.as_ref().map(|r| r.denials()).unwrap_or_default(),
                "requestsByUser": srv.rbac.as_ref().map(|r| r.requests_by_user()).unwrap_or_default(),
            }),
        ),
        (Method::DELETE, ["v1", "denials"]) if srv.rbac.is_some() => {
            if let Some(r) = &srv.rbac {
                r.clear_denials();
            }
            json_response(200, &json!({"items": []}))
        }
        (Method::GET, ["v1", "audit"]) => {
            json_response(200, &json!(srv.audit.since(audit_after(query))))
        }
        (Method::GET, ["v1", "stats"]) => json_response(
            200,
            &json!({
                "requests": srv.requests.load(Ordering::Relaxed),
                "writes": srv.core.writes.load(Ordering::Relaxed),
                "openWatches": srv.open_watches.load(Ordering::Relaxed),
                "verbs": srv.verbs.lock().map(|m| json!(*m)).unwrap_or_default(),
                "injectedErrors": srv.faults.injected_errors(),
                "resourceVersion": srv.core.store.current_rv().to_string(),
            }),
        ),
        _ => not_found_path().into_response(),
    }
}

fn write_options(q: &HashMap<String, String>) -> Result<WriteOptions, ApiError> {
    let dry_run = match q.get("dryRun").map(String::as_str) {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "dryRun: Unsupported value: \"{other}\": supported values: \"All\""
            )));
        }
    };
    if let Some(v) = q.get("fieldValidation")
        && !["", "Ignore", "Warn", "Strict"].contains(&v.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "fieldValidation: Unsupported value: \"{v}\": supported values: \"Ignore\", \"Strict\", \"Warn\""
        )));
    }
    Ok(WriteOptions {
        dry_run,
        field_manager: q.get("fieldManager").filter(|m| !m.is_empty()).cloned(),
        force: truthy(q, "force"),
        strict_fields: q.get("fieldValidation").map(String::as_str) == Some("Strict"),
    })
}

pub(super) fn list_options(
    info: &ResourceInfo,
    q: &HashMap<String, String>,
) -> Result<ListOptions, ApiError> {
    let labels = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(
        q.get("fieldSelector").map(String::as_str).unwrap_or(""),
        supported_fields(&info.resource),
    )
    .map_err(|e| {
        ApiError::bad_request(format!(
            "Unable to find {:?} that match label selector \"\", field selector {:?}: {e}",
            info.resource,
            q.get("fieldSelector").cloned().unwrap_or_default()
        ))
    })?;
    let limit = match q.get("limit") {
        None => None,
        Some(l) if l.is_empty() => None,
        Some(l) => Some(
            l.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("limit: invalid value {l:?}")))?
                .max(0) as usize,
        ),
    };
    Ok(ListOptions {
        labels,
        fields,
        limit,
        continue_token: q.get("continue").filter(|c| !c.is_empty()).cloned(),
    })
}

fn content_base(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.split(';').next())
        .unwrap_or("")
        .trim()
}

fn decode_body(headers: &HeaderMap, body: &Bytes) -> Result<Value, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let base = ct.split(';').next().unwrap_or("").trim();
    if base == super::protobuf::MEDIA_TYPE {
        return decode_protobuf(body);
    }
    if base != "application/json" && base != "*/*" && !base.is_empty() {
        return Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {base})"
        )));
    }
    if body.is_empty() {
        return Err(ApiError::bad_request("the body of the request was empty"));
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body of the request could not be decoded as JSON: {e}"
        ))
    })?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request could not be decoded: expected a JSON object",
        ));
    }
    Ok(v)
}

/// A protobuf body of a kind mock-cloud decodes; other kinds get the 415 a JSON-only server
/// gives, so nothing is written.
fn decode_protobuf(body: &Bytes) -> Result<Value, ApiError> {
    use super::protobuf::{MEDIA_TYPE, PbError, decode};
    match decode(body) {
        Ok(v) => Ok(v),
        Err(PbError::UnknownKind { .. } | PbError::NoEnvelope) => {
            Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {MEDIA_TYPE})"
            )))
        }
        Err(e @ PbError::Unsupported(_)) => Err(ApiError::unsupported_media_type(e.to_string())),
        Err(e) => Err(ApiError::bad_request(format!(
            "the body of the request could not be decoded: {e}"
        ))),
    }
}

pub(super) fn render(info: &ResourceInfo, obj: &Value) -> Value {
    from_storage(info, obj)
}

async fn resource(
    srv: &Arc<ApiServer>,
    method: &Method,
    rp: ResourcePath,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    wire: Wire,
    body: Bytes,
) -> Result<Response, ApiError> {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let core = &srv.core;
    let info = &rp.info;
    let ns = rp.namespace.clone().unwrap_or_default();
    if let Some(r) = subresource(srv, method, &rp, q, headers, wire, &body)? {
        return Ok(r);
    }
    let status = match rp.sub.as_deref() {
        None => false,
        Some("status") if info.has_status => true,
        Some(sub) => {
            return Err(ApiError::not_found(
                &format!("{}/{sub}", info.resource),
                rp.name.as_deref().unwrap_or(""),
            ));
        }
    };
    let as_table = table::wants_table(accept);
    match (method.clone(), rp.name.as_deref()) {
        (Method::GET, None) if rp.legacy_watch || truthy(q, "watch") => {
            watch(srv, &rp, q, as_table, wire)
        }
        (Method::GET, Some(name)) if rp.legacy_watch || truthy(q, "watch") => {
            let mut q = q.clone();
            let sel = format!("metadata.name={name}");
            q.insert("fieldSelector".into(), sel);
            let rp = ResourcePath { name: None, ..rp };
            watch(srv, &rp, &q, as_table, wire)
        }
        (Method::GET, None) => {
            let opts = list_options(info, q)?;
            let ns_opt = rp.namespace.as_deref();
            let res = core.list(info, ns_opt, &opts)?;
            let mut meta = json!({"resourceVersion": res.rv.to_string()});
            if let Some(c) = &res.continue_token {
                meta["continue"] = json!(c);
            }
            if let Some(r) = res.remaining {
                meta["remainingItemCount"] = json!(r);
            }
            if as_table {
                let objs: Vec<Value> = res.items.iter().map(|o| render(info, o)).collect();
                let refs: Vec<&Value> = objs.iter().collect();
                let include = q
                    .get("includeObject")
                    .map(String::as_str)
                    .unwrap_or("Metadata");
                return Ok(json_response(
                    200,
                    &table::to_table(info, &refs, true, include, meta, chrono::Utc::now()),
                ));
            }
            let items: Vec<Value> = res.items.iter().map(|o| render(info, o)).collect();
            Ok(reply(
                wire,
                200,
                &json!({"kind": info.list_kind, "apiVersion": info.api_version(), "metadata": meta, "items": items}),
            ))
        }
        (Method::GET, Some(name)) => {
            let stored = core.get(info, &ns, name)?;
            let obj = render(info, &stored);
            if as_table {
                let include = q
                    .get("includeObject")
                    .map(String::as_str)
                    .unwrap_or("Metadata");
                let meta = json!({"resourceVersion": obj.pointer("/metadata/resourceVersion").cloned().unwrap_or(json!(""))});
                return Ok(json_response(
                    200,
                    &table::to_table(info, &[&obj], true, include, meta, chrono::Utc::now()),
                ));
            }
            Ok(reply(wire, 200, &obj))
        }
        (Method::POST, None) => {
            let obj = decode_body(headers, &body)?;
            let opts = write_options(q)?;
            let created = core.create(info, &ns, obj, &opts)?;
            Ok(reply(wire, 201, &render(info, &created)))
        }
        (Method::PUT, Some(name)) => {
            if status && content_base(headers) == super::protobuf::MEDIA_TYPE {
                return Err(ApiError::unsupported_media_type(format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {})",
                    super::protobuf::MEDIA_TYPE
                )));
            }
            let obj = decode_body(headers, &body)?;
            let opts = write_options(q)?;
            let updated = core.update(info, &ns, name, obj, status, &opts)?;
            Ok(reply(wire, 200, &render(info, &updated)))
        }
        (Method::PATCH, Some(name)) => {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let pt = PatchType::from_content_type(ct).ok_or_else(|| {
                ApiError::unsupported_media_type(format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct:?})"
                ))
            })?;
            if body.is_empty() {
                return Err(ApiError::bad_request("the body of the request was empty"));
            }
            let opts = write_options(q)?;
            if pt != PatchType::Apply && opts.force {
                return Err(ApiError::bad_request(
                    "force: Forbidden: may not be specified for non-apply patch",
                ));
            }
            let patched = core.patch(info, &ns, name, pt, &body, status, &opts)?;
            Ok(reply(wire, 200, &render(info, &patched)))
        }
        (Method::DELETE, Some(name)) => {
            let opts = delete_options(q, &body)?;
            let d = core.delete(info, &ns, name, &opts)?;
            if d.gone && info.group.is_empty() && info.resource == "namespaces" {
                let uid = d
                    .object
                    .pointer("/metadata/uid")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                return Ok(reply(wire, 200, &success_status(&info.resource, name, uid)));
            }
            Ok(reply(wire, 200, &render(info, &d.object)))
        }
        (Method::DELETE, None) => {
            let list = list_options(info, q)?;
            let opts = delete_options(q, &body)?;
            let gone = core.delete_collection(info, rp.namespace.as_deref(), &list, &opts)?;
            let items: Vec<Value> = gone.iter().map(|o| render(info, o)).collect();
            Ok(reply(
                wire,
                200,
                &json!({"kind": info.list_kind, "apiVersion": info.api_version(), "metadata": {}, "items": items}),
            ))
        }
        (m, _) => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({m})"
        ))),
    }
}

/// `scale` of Deployments and ReplicaSets, `log` of pods; None for other requests.
fn subresource(
    srv: &Arc<ApiServer>,
    method: &Method,
    rp: &ResourcePath,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    wire: Wire,
    body: &Bytes,
) -> Result<Option<Response>, ApiError> {
    use super::subresources::scale;
    let (Some(name), Some(sub)) = (rp.name.as_deref(), rp.sub.as_deref()) else {
        return Ok(None);
    };
    let info = &rp.info;
    let ns = rp.namespace.as_deref().unwrap_or("");
    match (sub, method.clone()) {
        ("scale", m) if info.has_scale() => {
            let opts = write_options(q)?;
            let write = match m {
                Method::GET => None,
                Method::PUT => Some((None, &body[..])),
                Method::PATCH => {
                    let ct = headers
                        .get(header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    let pt = PatchType::from_content_type(ct)
                        .filter(|p| *p != PatchType::Apply)
                        .ok_or_else(|| {
                            ApiError::unsupported_media_type(format!(
                                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {ct:?})"
                            ))
                        })?;
                    Some((Some(pt), &body[..]))
                }
                m => {
                    return Err(ApiError::method_not_allowed(format!(
                        "the server does not allow this method on the requested resource ({m})"
                    )));
                }
            };
            let v = scale(&srv.core, info, ns, name, write, &opts)?;
            Ok(Some(reply(wire, 200, &v)))
        }
        ("log", Method::GET) if info.group.is_empty() && info.resource == "pods" => {
            super::logs::pod_log(srv, info, ns, name, q).map(Some)
        }
        _ => Ok(None),
    }
}

fn delete_options(q: &HashMap<String, String>, body: &Bytes) -> Result<DeleteOptions, ApiError> {
    let policy = |p: &str| {
        Propagation::parse(p).ok_or_else(|| {
            ApiError::bad_request(format!(
                "propagationPolicy: Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
            ))
        })
    };
    let mut opts = DeleteOptions {
        dry_run: q.get("dryRun").is_some_and(|v| v == "All"),
        propagation: q
            .get("propagationPolicy")
            .filter(|p| !p.is_empty())
            .map(|p| policy(p))
            .transpose()?,
        ..Default::default()
    };
    if !body.is_empty() {
        let v: Value = serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body of the request could not be decoded as DeleteOptions: {e}"
            ))
        })?;
        if let Some(p) = v.get("preconditions") {
            opts.precondition_uid = p.get("uid").and_then(Value::as_str).map(str::to_string);
            opts.precondition_rv = p
                .get("resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_string);
        }
        if let Some(p) = v.get("propagationPolicy").and_then(Value::as_str) {
            opts.propagation = Some(policy(p)?);
        } else if let Some(o) = v.get("orphanDependents").and_then(Value::as_bool) {
            opts.propagation = Some(if o {
                Propagation::Orphan
            } else {
                Propagation::Background
            });
        }
        if v.get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|x| x == "All"))
        {
            opts.dry_run = true;
        }
    }
    Ok(opts)
}
