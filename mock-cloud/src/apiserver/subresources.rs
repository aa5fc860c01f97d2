//! The `scale` subresource of Deployments and ReplicaSets (autoscaling/v1 Scale, what
//! `kubectl scale` reads and patches).

use super::core::{ApiCore, WriteOptions};
use super::error::ApiError;
use crate::patch::{self, PatchType};
use crate::registry::ResourceInfo;
use serde_json::{Value, json};

/// The label selector of a workload as a string (`app=web,tier in (a,b)`).
fn selector_string(obj: &Value) -> String {
    let mut parts: Vec<String> = obj
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    for e in obj
        .pointer("/spec/selector/matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e["key"].as_str().unwrap_or("");
        let values: Vec<&str> = e["values"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        parts.push(match e["operator"].as_str() {
            Some("In") => format!("{key} in ({})", values.join(",")),
            Some("NotIn") => format!("{key} notin ({})", values.join(",")),
            Some("DoesNotExist") => format!("!{key}"),
            _ => key.to_string(),
        });
    }
    parts.join(",")
}

/// The Scale view of a Deployment or ReplicaSet.
pub fn scale_of(obj: &Value) -> Value {
    let m = &obj["metadata"];
    let mut meta = json!({});
    for k in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = m.get(k) {
            meta[k] = v.clone();
        }
    }
    json!({
        "apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": meta,
        "spec": {"replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)},
        "status": {
            "replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": selector_string(obj),
        },
    })
}

/// A scale request: GET (`body` None), PUT of a Scale, or PATCH of one.
pub fn scale(
    core: &ApiCore,
    info: &ResourceInfo,
    ns: &str,
    name: &str,
    write: Option<(Option<PatchType>, &[u8])>,
    opts: &WriteOptions,
) -> Result<Value, ApiError> {
    let cur = core.get(info, ns, name)?;
    let Some((pt, body)) = write else {
        return Ok(scale_of(&cur));
    };
    let current = scale_of(&cur);
    let wanted: Value = match pt {
        None => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("the body of the request could not be decoded: {e}"))
        })?,
        Some(pt) => patch::apply_patch(pt, "autoscaling", "Scale", &current, body)
            .map_err(|e| ApiError::bad_request(format!("{e:?}")))?,
    };
    if let Some(rv) = wanted
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|rv| !rv.is_empty())
        && Some(rv)
            != cur
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
    {
        return Err(ApiError::conflict(
            &format!("{}.{}", info.resource, info.group),
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        ));
    }
    let replicas = wanted
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if replicas < 0 {
        return Err(ApiError::invalid_field(
            "Scale",
            "autoscaling",
            name,
            "spec.replicas",
            "FieldValueInvalid",
            &format!("Invalid value: {replicas}: must be greater than or equal to 0"),
        ));
    }
    let mut obj = (*cur).clone();
    obj["spec"]["replicas"] = json!(replicas);
    let updated = core.update(info, ns, name, obj, false, opts)?;
    Ok(scale_of(&updated))
}

/// `kubectl logs`: the pod's request log as plain text.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_shows_replicas_and_the_selector() {
        let d = json!({
            "metadata": {"name": "web", "namespace": "default", "resourceVersion": "7", "labels": {"x": "y"}},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}},
            "status": {"replicas": 2},
        });
        assert_eq!(
            scale_of(&d),
            json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                   "metadata": {"name": "web", "namespace": "default", "resourceVersion": "7"},
                   "spec": {"replicas": 3},
                   "status": {"replicas": 2, "selector": "app=web,tier in (a,b)"}})
        );
    }
}
