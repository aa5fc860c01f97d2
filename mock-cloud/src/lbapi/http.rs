//! The HTTP surface: routing, authentication, fault injection, and the contract's errors.

use super::{Failure, Inner};
use crate::faults::Injected;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// Largest request body accepted.
const MAX_BODY: usize = 1 << 20;

pub(super) fn router(inner: Arc<Inner>) -> Router {
    Router::new().fallback(handle).with_state(inner)
}

fn json_response(status: StatusCode, body: &Value, etag: Option<&str>) -> Response {
    bytes_response(status, serde_json::to_vec(body).unwrap_or_default(), etag)
}

/// A JSON response whose body is already rendered.
fn bytes_response(status: StatusCode, body: Vec<u8>, etag: Option<&str>) -> Response {
    let mut r = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(e) = etag.and_then(|e| HeaderValue::from_str(e).ok()) {
        r = r.header(header::ETAG, e);
    }
    r.body(Body::from(body))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// Whether the request's `Prefer` headers (RFC 7240) ask for `return=minimal`.
fn prefers_minimal(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| {
            p.split(';')
                .next()
                .is_some_and(|p| p.trim().eq_ignore_ascii_case("return=minimal"))
        })
}

/// The contract's `Error` body; `Retry-After` on 429 and 503.
fn error(
    status: StatusCode,
    code: &str,
    message: impl Into<String>,
    field: Option<&str>,
    retry_after: Option<u64>,
) -> Response {
    let mut e = json!({"code": code, "message": message.into()});
    if let Some(f) = field {
        e["field"] = json!(f);
    }
    let mut r = json_response(status, &json!({ "error": e }), None);
    let retry_after = retry_after.or((status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::SERVICE_UNAVAILABLE)
        .then_some(1));
    if let Some(secs) = retry_after {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

fn not_found(message: impl Into<String>) -> Response {
    error(StatusCode::NOT_FOUND, "NotFound", message, None, None)
}

fn failure(f: Failure) -> Response {
    match f {
        Failure::NotFound(m) => not_found(m),
        Failure::Precondition(m) => error(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailed",
            m,
            None,
            None,
        ),
        Failure::Invalid(i) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!("{}: {}", i.field, i.message),
            Some(&i.field),
            None,
        ),
        Failure::Unavailable(m) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            m,
            None,
            Some(1),
        ),
    }
}

fn method_not_allowed(allow: &'static str) -> Response {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("method not allowed; allowed: {allow}"),
        None,
        None,
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn authorized(inner: &Inner, headers: &HeaderMap) -> bool {
    let Some(token) = &inner.token else {
        return true;
    };
    header_str(headers, header::AUTHORIZATION)
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .is_some_and(|t| t.trim() == token)
}

async fn handle(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segs.as_slice() {
        ["mock-cloud", "v1", rest @ ..] => {
            let rest: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
            admin(&inner, req, &rest).await
        }
        ["v1", "loadbalancers"] | ["v1", "loadbalancers", ""] => api(&inner, req, None).await,
        ["v1", "loadbalancers", id] => {
            let id = id.to_string();
            api(&inner, req, Some(id)).await
        }
        _ => not_found(format!("no such path: {path}")),
    }
}

async fn admin(inner: &Inner, req: Request, rest: &[String]) -> Response {
    let method = req.method().clone();
    let r: Vec<&str> = rest.iter().map(String::as_str).collect();
    match (method, r.as_slice()) {
        (Method::GET, ["faults"]) => json_response(
            StatusCode::OK,
            &serde_json::to_value(inner.faults.get()).unwrap_or_default(),
            None,
        ),
        (Method::PUT, ["faults"]) => {
            let body = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
                Ok(b) => b,
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        e.to_string(),
                        None,
                        None,
                    );
                }
            };
            match serde_json::from_slice(&body)
                .map_err(|e| e.to_string())
                .and_then(|cfg| inner.faults.set(cfg))
            {
                Ok(()) => json_response(
                    StatusCode::OK,
                    &serde_json::to_value(inner.faults.get()).unwrap_or_default(),
                    None,
                ),
                Err(e) => error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    format!("invalid fault config: {e}"),
                    None,
                    None,
                ),
            }
        }
        (_, ["faults"]) => method_not_allowed("GET, PUT"),
        (Method::GET, ["stats"]) => {
            let mut s = inner.stats().clone();
            s.injected_errors = inner.faults.injected_errors();
            let mut v = serde_json::to_value(&s).unwrap_or_default();
            v["loadBalancers"] = json!(inner.state().lbs.len());
            json_response(StatusCode::OK, &v, None)
        }
        (_, ["stats"]) => method_not_allowed("GET"),
        (Method::GET, ["audit"]) => {
            let after = req
                .uri()
                .query()
                .and_then(|q| serde_urlencoded::from_str::<HashMap<String, String>>(q).ok())
                .and_then(|q| q.get("after").and_then(|a| a.parse().ok()))
                .unwrap_or(0);
            json_response(
                StatusCode::OK,
                &serde_json::to_value(inner.audit.since(after)).unwrap_or_default(),
                None,
            )
        }
        (_, ["audit"]) => method_not_allowed("GET"),
        _ => not_found("no such admin path"),
    }
}

async fn api(inner: &Inner, req: Request, id: Option<String>) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query: HashMap<String, String> =
        serde_urlencoded::from_str::<Vec<(String, String)>>(req.uri().query().unwrap_or(""))
            .unwrap_or_default()
            .into_iter()
            .collect();
    let headers = req.headers().clone();

    if !authorized(inner, &headers) {
        inner.stats().unauthorized += 1;
        return error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "a valid bearer token is required",
            None,
            None,
        );
    }

    let verb = match (&method, &id) {
        (&Method::GET, None) => "list",
        (&Method::GET, Some(_)) => "get",
        (&Method::PUT, Some(id)) if inner.exists(id) => "update",
        (&Method::PUT, Some(_)) => "create",
        (&Method::DELETE, Some(_)) => "delete",
        (_, None) => return method_not_allowed("GET"),
        (_, Some(_)) => return method_not_allowed("GET, PUT, DELETE"),
    };
    let body = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            if method == Method::PUT {
                inner.stats().puts += 1;
            }
            return error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("the request body is unreadable or larger than {MAX_BODY} bytes"),
                None,
                None,
            );
        }
    };
    let audited = matches!(method, Method::PUT | Method::DELETE).then(|| {
        let verb = if method == Method::PUT {
            "put"
        } else {
            "delete"
        };
        let token = crate::audit::bearer(header_str(&headers, header::AUTHORIZATION));
        inner.audit.begin(verb, &path, token)
    });
    let response = serve(inner, method, id, &path, &query, &headers, verb, body).await;
    if let Some(seq) = audited {
        inner.audit.finish(seq, response.status().as_u16());
    }
    response
}

/// Injects faults, then serves an authorized request.
#[allow(clippy::too_many_arguments)]
async fn serve(
    inner: &Inner,
    method: Method,
    id: Option<String>,
    path: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    verb: &str,
    body: bytes::Bytes,
) -> Response {
    if let Some(Injected::Error { code, retry_after }) = inner.faults.apply(path, verb, &body).await
    {
        return match code {
            429 => error(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "too many requests (injected)",
                None,
                Some(retry_after),
            ),
            503 => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                "service unavailable (injected)",
                None,
                Some(retry_after),
            ),
            _ => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "internal error (injected)",
                None,
                None,
            ),
        };
    }

    match (method, id) {
        (Method::GET, None) => {
            let body = inner.list(
                query.get("cluster").map(String::as_str),
                query.get("view").map(String::as_str) == Some("labels"),
            );
            json_response(StatusCode::OK, &body, None)
        }
        (Method::GET, Some(id)) => match inner.get(&id) {
            Ok((body, etag)) => bytes_response(StatusCode::OK, body, Some(&etag)),
            Err(f) => failure(f),
        },
        (Method::DELETE, Some(id)) => {
            match inner
                .delete(&id, header_str(headers, header::IF_MATCH))
                .await
            {
                Ok(()) => Response::builder()
                    .status(StatusCode::NO_CONTENT)
                    .body(Body::empty())
                    .unwrap_or_else(|_| Response::new(Body::empty())),
                Err(f) => failure(f),
            }
        }
        (Method::PUT, Some(id)) => put(inner, &body, &id, headers).await,
        _ => method_not_allowed("GET, PUT, DELETE"),
    }
}

async fn put(inner: &Inner, body: &[u8], id: &str, headers: &HeaderMap) -> Response {
    if !super::spec::valid_id(id) {
        inner.stats().puts += 1;
        return failure(Failure::Invalid(super::spec::Invalid {
            field: "id".into(),
            message: format!(
                "{id:?} must be 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit"
            ),
        }));
    }
    let parsed = match super::spec::parse_fast(body, |digest, targets| {
        inner.share_body_targets(digest, targets)
    }) {
        Some(p) => p,
        // The general path, whose errors name the field.
        None => {
            let value: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => {
                    inner.stats().puts += 1;
                    return error(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        format!("malformed JSON: {e}"),
                        None,
                        None,
                    );
                }
            };
            if !value.is_object() {
                inner.stats().puts += 1;
                return error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "the body must be a JSON object (a LoadBalancerSpec)",
                    None,
                    None,
                );
            }
            // Shared as the fast path shares: equal lists are stored once and compare by
            // pointer.
            super::spec::parse(&value).map(|mut spec| {
                spec.targets = inner.share_targets(spec.targets);
                spec
            })
        }
    };
    let spec = match parsed {
        Ok(s) => s,
        Err(i) => {
            inner.stats().puts += 1;
            return failure(Failure::Invalid(i));
        }
    };
    let minimal = prefers_minimal(headers);
    match inner
        .put(
            id,
            spec,
            header_str(headers, header::IF_MATCH),
            header_str(headers, header::IF_NONE_MATCH),
            minimal,
        )
        .await
    {
        Ok(o) => {
            let status = if o.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let mut r = bytes_response(status, o.body, Some(&o.etag));
            if minimal {
                r.headers_mut().insert(
                    "preference-applied",
                    HeaderValue::from_static("return=minimal"),
                );
            }
            r
        }
        Err(f) => failure(f),
    }
}
