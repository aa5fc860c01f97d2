//! Content negotiation of resource responses: JSON, or protobuf for the built-in kinds
//! (`Accept: application/vnd.kubernetes.protobuf`, as client-go's typed clients ask for it
//! with `application/json` as the fallback).

use super::error::ApiError;
use super::protobuf::MEDIA_TYPE;
use super::protobuf::encode::{encode, has_encoding};
use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// The answer format a request's Accept header chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wire {
    Json,
    /// Protobuf first; `json_ok`: JSON is acceptable when an object has no protobuf form.
    Protobuf {
        json_ok: bool,
    },
}

fn is_json(base: &str) -> bool {
    matches!(base, "application/json" | "*/*" | "application/*" | "")
}

/// Chooses by the client's order of preference; a protobuf Table (`;as=Table`) is not
/// served, so that entry is passed over. None of the entries served → 406.
pub(super) fn choose(accept: &str) -> Result<Wire, ApiError> {
    let entries: Vec<(&str, bool)> = accept
        .split(',')
        .map(|a| {
            let mut parts = a.split(';').map(str::trim);
            let base = parts.next().unwrap_or("");
            let as_other = parts.any(|p| p.starts_with("as="));
            (base, as_other)
        })
        .collect();
    for (i, (base, as_other)) in entries.iter().enumerate() {
        if is_json(base) {
            return Ok(Wire::Json);
        }
        if *base == MEDIA_TYPE && !as_other {
            let json_ok = entries[i + 1..].iter().any(|(b, _)| is_json(b));
            return Ok(Wire::Protobuf { json_ok });
        }
    }
    Err(ApiError::not_acceptable(format!(
        "only the following media types are accepted: application/json, {MEDIA_TYPE}"
    )))
}

impl Wire {
    /// Whether a watch of this kind streams protobuf.
    pub(super) fn streams_protobuf(self, api_version: &str, kind: &str) -> Result<bool, ApiError> {
        match self {
            Wire::Json => Ok(false),
            Wire::Protobuf { json_ok } => {
                if has_encoding(api_version, kind) {
                    Ok(true)
                } else if json_ok {
                    Ok(false)
                } else {
                    Err(not_acceptable(api_version, kind))
                }
            }
        }
    }
}

fn not_acceptable(api_version: &str, kind: &str) -> ApiError {
    ApiError::not_acceptable(format!(
        "only the following media types are accepted: application/json (no protobuf form for {api_version}, Kind={kind})"
    ))
}

pub(super) fn json_response(code: u16, v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::OK))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("valid response")
}

/// `v` (which names its apiVersion and kind) in the chosen format. An object without a
/// protobuf form goes out as JSON when the client accepts it, else 406.
pub(super) fn reply(wire: Wire, code: u16, v: &Value) -> Response {
    let Wire::Protobuf { json_ok } = wire else {
        return json_response(code, v);
    };
    match encode(v) {
        Ok(body) => Response::builder()
            .status(StatusCode::from_u16(code).unwrap_or(StatusCode::OK))
            .header(header::CONTENT_TYPE, MEDIA_TYPE)
            .body(Body::from(body))
            .expect("valid response"),
        Err(e) if json_ok => {
            tracing::debug!("answering in JSON: {e}");
            json_response(code, v)
        }
        Err(e) => {
            let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            tracing::debug!("no protobuf answer: {e}");
            error(Wire::Json, not_acceptable(&s("apiVersion"), &s("kind")))
        }
    }
}

/// An error's Status in the chosen format, with its Retry-After.
pub(super) fn error(wire: Wire, e: ApiError) -> Response {
    let mut r = reply(wire, e.code, &e.status());
    if let Some(secs) = e.retry_after
        && let Ok(v) = secs.to_string().parse()
    {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(Wire::Json, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clients_order_of_preference_wins() {
        let pb = "application/vnd.kubernetes.protobuf";
        assert_eq!(
            choose(&format!("{pb},application/json")).unwrap(),
            Wire::Protobuf { json_ok: true }
        );
        assert_eq!(choose(pb).unwrap(), Wire::Protobuf { json_ok: false });
        assert_eq!(
            choose(&format!("application/json,{pb}")).unwrap(),
            Wire::Json
        );
        assert_eq!(choose("").unwrap(), Wire::Json);
        let table = format!("{pb};as=Table;v=v1;g=meta.k8s.io,application/json");
        assert_eq!(choose(&table).unwrap(), Wire::Json);
        assert_eq!(
            choose("application/json;as=Table;v=v1;g=meta.k8s.io").unwrap(),
            Wire::Json
        );
        assert_eq!(choose("text/html").unwrap_err().code, 406);
    }
}
