//! Object metadata rules every kind shares: type meta, names, what create sets and
//! update carries over, identity checks.

use super::core::qualified;
use super::error::ApiError;
use crate::registry::ResourceInfo;
use rand::Rng;
use serde_json::{Map, Value, json};

pub(super) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub(super) fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

pub(super) fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    meta(obj)?.get(field)?.as_str()
}

pub(super) fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Checks a name against RFC 1123 subdomain (or label, when `label`) rules.
pub(super) fn name_error(name: &str, label: bool) -> Option<String> {
    let max = if label { 63 } else { 253 };
    let chars_ok = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (!label && c == '.'));
    let ends_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if name.len() <= max && chars_ok && ends_ok {
        return None;
    }
    Some(if label {
        format!(
            "Invalid value: \"{name}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
        )
    } else {
        format!(
            "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        )
    })
}

/// Kinds whose names must be DNS labels rather than subdomains.
pub(super) fn label_named(info: &ResourceInfo) -> bool {
    info.group.is_empty() && matches!(info.resource.as_str(), "services" | "namespaces")
}

/// Kinds whose create keeps a client-provided status.
pub(super) fn keeps_status_on_create(info: &ResourceInfo) -> bool {
    info.group.is_empty() && info.resource == "nodes"
}

/// apiVersion/kind in a body must match the resource they are sent to; fills them in when absent.
pub(super) fn check_type_meta(info: &ResourceInfo, obj: &mut Value) -> Result<(), ApiError> {
    let Some(map) = obj.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the body of the request could not be decoded: expected a JSON object",
        ));
    };
    let want_av = info.api_version();
    match map.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("apiVersion".into(), json!(want_av));
        }
        Some(av) if av != want_av => {
            // Another served version of the same group is fine (CRDs with several versions).
            let same_group = match av.split_once('/') {
                Some((g, _)) => g == info.group,
                None => info.group.is_empty(),
            };
            if !same_group {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({av}) does not match the expected API version ({want_av})"
                )));
            }
            map.insert("apiVersion".into(), json!(want_av));
        }
        Some(_) => {}
    }
    match map.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("kind".into(), json!(info.kind));
        }
        Some(k) if k != info.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                info.kind
            )));
        }
        Some(_) => {}
    }
    match map.get("metadata") {
        None => {
            map.insert("metadata".into(), json!({}));
        }
        Some(Value::Object(_)) => {}
        Some(_) => {
            return Err(ApiError::bad_request(
                "the body of the request could not be decoded: metadata must be an object",
            ));
        }
    }
    Ok(())
}

pub(super) fn prepare_create_meta(info: &ResourceInfo, obj: &mut Value, ns: &str, name: &str) {
    let has_spec = obj.get("spec").is_some();
    if info.has_status
        && !keeps_status_on_create(info)
        && let Some(m) = obj.as_object_mut()
    {
        m.remove("status");
    }
    let meta = obj["metadata"].as_object_mut().expect("checked object");
    meta.insert("name".into(), json!(name));
    if info.namespaced {
        meta.insert("namespace".into(), json!(ns));
    } else {
        meta.remove("namespace");
    }
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(now()));
    meta.remove("deletionTimestamp");
    meta.remove("deletionGracePeriodSeconds");
    meta.remove("resourceVersion");
    meta.remove("selfLink");
    if has_spec || info.crd_name.is_some() {
        meta.insert("generation".into(), json!(1));
    } else {
        meta.remove("generation");
    }
}

/// Keeps what a client may not change: identity, timestamps, deletion state.
pub(super) fn carry_over_meta(
    info: &ResourceInfo,
    old: &Value,
    new: &mut Value,
) -> Result<(), ApiError> {
    let old_meta = meta(old).cloned().unwrap_or_default();
    if !new.get("metadata").is_some_and(Value::is_object) {
        new["metadata"] = json!({});
    }
    let m = new["metadata"].as_object_mut().expect("object");
    for key in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "resourceVersion",
    ] {
        match old_meta.get(key) {
            Some(v) => {
                m.insert(key.into(), v.clone());
            }
            None => {
                m.remove(key);
            }
        }
    }
    if !info.namespaced {
        m.remove("namespace");
    }
    if new.get("apiVersion").is_none() {
        new["apiVersion"] = old
            .get("apiVersion")
            .cloned()
            .unwrap_or(json!(info.api_version()));
    }
    if new.get("kind").is_none() {
        new["kind"] = json!(info.kind);
    }
    Ok(())
}

/// A patch may not rename or move an object.
pub(super) fn check_patched_identity(
    info: &ResourceInfo,
    old: &Value,
    new: &Value,
    name: &str,
) -> Result<(), ApiError> {
    if let Some(n) = meta_str(new, "name")
        && n != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        )));
    }
    if let Some(rv) = meta_str(new, "resourceVersion")
        && !rv.is_empty()
        && Some(rv) != meta_str(old, "resourceVersion")
    {
        return Err(ApiError::conflict(
            &qualified(info),
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        ));
    }
    Ok(())
}

pub(super) fn strip_rv(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        if let Some(Value::Array(mf)) = m.get_mut("managedFields") {
            for e in mf.iter_mut() {
                if let Some(em) = e.as_object_mut() {
                    em.remove("time");
                }
            }
        }
    }
    o
}

/// Metadata fields kube-apiserver leaves out when empty (`omitempty` in `ObjectMeta`).
const OMIT_WHEN_EMPTY: [&str; 5] = [
    "labels",
    "annotations",
    "finalizers",
    "ownerReferences",
    "managedFields",
];

/// Drops empty (or null) `labels`, `annotations`, `finalizers`, `ownerReferences` and
/// `managedFields`, as kube-apiserver's serialization does: an emptied finalizer list
/// comes back absent, not `[]`.
pub(super) fn drop_empty_meta(obj: &mut Value) {
    let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    for key in OMIT_WHEN_EMPTY {
        let empty = match m.get(key) {
            Some(Value::Null) => true,
            Some(Value::Array(a)) => a.is_empty(),
            Some(Value::Object(o)) => o.is_empty(),
            _ => false,
        };
        if empty {
            m.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_meta_fields_are_dropped_others_kept() {
        let mut o = json!({"metadata": {
            "name": "a", "labels": {}, "annotations": null, "finalizers": [],
            "ownerReferences": [], "managedFields": [], "generateName": ""
        }});
        drop_empty_meta(&mut o);
        assert_eq!(o, json!({"metadata": {"name": "a", "generateName": ""}}));
        let full = json!({"metadata": {
            "labels": {"a": "b"}, "annotations": {"x": "y"}, "finalizers": ["f"],
            "ownerReferences": [{"uid": "u"}], "managedFields": [{"manager": "m"}]
        }});
        let mut o = full.clone();
        drop_empty_meta(&mut o);
        assert_eq!(o, full);
        let mut no_meta = json!({"kind": "X"});
        drop_empty_meta(&mut no_meta);
        assert_eq!(no_meta, json!({"kind": "X"}));
    }
}
