//! PATCH semantics of the Kubernetes API: JSON patch, JSON merge patch, strategic
//! merge patch and server-side apply (with `metadata.managedFields` tracking).
//!
//! Everything here is pure: it takes the live object and the request body and
//! returns the new object (or an error that maps onto an HTTP status, see
//! [`PatchError::status_code`]). Storage, preconditions, defaulting and
//! `resourceVersion` handling are the caller's business.

mod fields;
mod schema;
mod ssa;
mod strategic;
#[cfg(test)]
mod tests;

use serde_json::Value;

use schema::Schema;

/// The four PATCH flavours, selected by the request's `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// RFC 6902 JSON patch (`application/json-patch+json`).
    Json,
    /// RFC 7386 JSON merge patch (`application/merge-patch+json`).
    Merge,
    /// Kubernetes strategic merge patch (`application/strategic-merge-patch+json`).
    StrategicMerge,
    /// Server-side apply (`application/apply-patch+yaml`).
    Apply,
}

impl PatchType {
    /// From a request Content-Type; parameters such as `; charset=utf-8` are ignored.
    ///
    /// `application/apply-patch+yaml` and `application/apply-patch+json` select
    /// [`PatchType::Apply`]; `application/apply-patch+cbor` and anything unknown give `None`.
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        let essence = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::StrategicMerge),
            "application/apply-patch+yaml" | "application/apply-patch+json" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }
}

/// Why a patch could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The patch body does not parse or is semantically wrong -> HTTP 400.
    ///
    /// This includes JSON patch operations that fail (a `test` that does not
    /// match, a path that does not exist); kube-apiserver answers those with 422,
    /// this module folds them into `BadRequest` and prefixes the message with
    /// `JSON patch failed:` so the caller can tell them apart if it wants to.
    #[error("{0}")]
    BadRequest(String),
    /// Strategic merge requested for a kind with no strategic-merge schema
    /// (custom resources) -> HTTP 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Server-side apply conflict -> HTTP 409, message formatted like kube-apiserver's
    /// (`Apply failed with 1 conflict: conflict with "other": .spec.x`).
    #[error("{0}")]
    Conflict(String),
}

/// Prefix of [`PatchError::BadRequest`] messages for JSON patch operations that failed.
pub const JSON_PATCH_FAILED: &str = "JSON patch failed: ";

impl PatchError {
    /// The HTTP status kube-apiserver would answer with
    /// (failed JSON patch operations are 422, other bad requests 400).
    pub fn status_code(&self) -> u16 {
        match self {
            PatchError::BadRequest(m) if m.starts_with(JSON_PATCH_FAILED) => 422,
            PatchError::BadRequest(_) => 400,
            PatchError::UnsupportedMediaType(_) => 415,
            PatchError::Conflict(_) => 409,
        }
    }
}

/// Parses a JSON request body.
fn parse_json(body: &[u8]) -> Result<Value, PatchError> {
    serde_json::from_slice(body)
        .map_err(|e| PatchError::BadRequest(format!("Invalid JSON in patch body: {e}")))
}

/// Fails unless a patch result is still an object.
fn require_object(v: Value) -> Result<Value, PatchError> {
    if v.is_object() {
        Ok(v)
    } else {
        Err(PatchError::BadRequest(
            "Patched result is not a JSON object".into(),
        ))
    }
}

/// JSON patch (RFC 6902), JSON merge patch (RFC 7386) or strategic merge patch of `live`.
///
/// `group`/`kind` select strategic-merge list keys (core group is `""`); `body`
/// is the raw request body (JSON). [`PatchType::Apply`] is rejected here: use
/// [`server_side_apply`].
pub fn apply_patch(
    pt: PatchType,
    group: &str,
    kind: &str,
    live: &Value,
    body: &[u8],
) -> Result<Value, PatchError> {
    match pt {
        PatchType::Json => json_patch(live, body),
        PatchType::Merge => {
            let patch = parse_json(body)?;
            if !patch.is_object() {
                return Err(PatchError::BadRequest(
                    "Merge patch must be a JSON object".into(),
                ));
            }
            let mut doc = live.clone();
            json_patch::merge(&mut doc, &patch);
            require_object(doc)
        }
        PatchType::StrategicMerge => {
            let schema = Schema::new(group, kind);
            if !schema.is_builtin() {
                return Err(PatchError::UnsupportedMediaType(format!(
                    "The body of the request was in an unknown format - accepted media types include: \
                     application/json-patch+json, application/merge-patch+json, \
                     application/apply-patch+yaml (strategic merge patch is not supported for {kind}.{group})"
                )));
            }
            strategic::patch_object(&schema, live, parse_json(body)?)
        }
        PatchType::Apply => Err(PatchError::BadRequest(
            "Apply patches go through server-side apply".into(),
        )),
    }
}

/// RFC 6902 JSON patch via the `json-patch` crate.
fn json_patch(live: &Value, body: &[u8]) -> Result<Value, PatchError> {
    let ops: json_patch::Patch = serde_json::from_slice(body)
        .map_err(|e| PatchError::BadRequest(format!("Invalid JSON patch: {e}")))?;
    let mut doc = live.clone();
    json_patch::patch(&mut doc, &ops.0)
        .map_err(|e| PatchError::BadRequest(format!("{JSON_PATCH_FAILED}{e}")))?;
    require_object(doc)
}

/// Server-side apply of the applied configuration `body` (JSON; `kubectl apply
/// --server-side` and kube-rs both send JSON even under `application/apply-patch+yaml`,
/// so non-JSON bodies are a `BadRequest`).
///
/// `live` is `None` when the object does not exist yet (apply creates it). The
/// configuration must name this `kind` and `api_version`. Ownership is tracked
/// in `metadata.managedFields` (operation `Apply`, FieldsV1); fields this manager
/// applied before and no longer applies are removed unless another manager owns
/// them too. Without `force`, setting a field another apply manager owns to a
/// different value is a [`PatchError::Conflict`]; with `force` (and always for
/// update managers) ownership of such fields moves to `manager`.
#[allow(clippy::too_many_arguments)]
pub fn server_side_apply(
    group: &str,
    kind: &str,
    api_version: &str,
    live: Option<&Value>,
    body: &[u8],
    manager: &str,
    force: bool,
    now: &str,
) -> Result<Value, PatchError> {
    let applied = serde_json::from_slice(body).map_err(|e| {
        PatchError::BadRequest(format!(
            "Apply configuration must be JSON (YAML is not supported): {e}"
        ))
    })?;
    let schema = Schema::new(group, kind);
    ssa::apply(
        &schema,
        kind,
        api_version,
        live,
        applied,
        manager,
        force,
        now,
    )
}

/// Records a non-apply write by `manager` (operation `Update`) in `managedFields`.
///
/// The manager takes ownership of every field whose value it changed (others lose
/// them); fields that no longer exist leave every entry. The managed fields are
/// read from `new` when it carries them, else from `old`. Group and kind come from
/// `api_version` and `new.kind`.
pub fn record_update(
    api_version: &str,
    old: Option<&Value>,
    new: Value,
    manager: &str,
    now: &str,
) -> Value {
    let kind = new.get("kind").and_then(Value::as_str).unwrap_or("");
    let schema = Schema::from_api_version(api_version, kind);
    ssa::update(&schema, api_version, old, new, manager, now)
}
