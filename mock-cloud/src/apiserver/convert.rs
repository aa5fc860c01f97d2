//! Conversion between a resource's served form and its stored form.
//!
//! Almost everything is stored as served. Events are the exception: `events.k8s.io/v1` and
//! core `v1` Events are one resource in two shapes (as in kube-apiserver), stored as core v1,
//! so `kubectl get events` and `kubectl describe` see what a controller recorded through either.

use crate::registry::ResourceInfo;
use serde_json::{Map, Value, json};

fn is_events_v1(info: &ResourceInfo) -> bool {
    info.group == "events.k8s.io" && info.resource == "events"
}

/// The stored form of an object sent to `info`.
pub fn to_storage(info: &ResourceInfo, obj: Value) -> Value {
    if !is_events_v1(info) {
        return obj;
    }
    let Value::Object(src) = obj else { return obj };
    let mut out = Map::new();
    out.insert("apiVersion".into(), json!("v1"));
    out.insert("kind".into(), json!("Event"));
    let renames = [
        ("metadata", "metadata"),
        ("regarding", "involvedObject"),
        ("related", "related"),
        ("note", "message"),
        ("reason", "reason"),
        ("type", "type"),
        ("action", "action"),
        ("eventTime", "eventTime"),
        ("reportingController", "reportingComponent"),
        ("reportingInstance", "reportingInstance"),
        ("deprecatedFirstTimestamp", "firstTimestamp"),
        ("deprecatedLastTimestamp", "lastTimestamp"),
        ("deprecatedCount", "count"),
        ("deprecatedSource", "source"),
    ];
    for (from, to) in renames {
        if let Some(v) = src.get(from) {
            out.insert(to.into(), v.clone());
        }
    }
    if let Some(series) = src.get("series") {
        out.insert("series".into(), series.clone());
        if let Some(c) = series.get("count") {
            out.insert("count".into(), c.clone());
        }
        if let Some(t) = series.get("lastObservedTime") {
            out.insert("lastTimestamp".into(), json!(truncate_micro(t)));
        }
    }
    if !out.contains_key("source")
        && let Some(c) = src.get("reportingController")
    {
        let mut source = json!({"component": c});
        if let Some(i) = src.get("reportingInstance") {
            source["host"] = i.clone();
        }
        out.insert("source".into(), source);
    }
    if !out.contains_key("firstTimestamp")
        && let Some(t) = src.get("eventTime")
    {
        out.insert("firstTimestamp".into(), json!(truncate_micro(t)));
    }
    if !out.contains_key("lastTimestamp")
        && let Some(t) = src.get("eventTime")
    {
        out.insert("lastTimestamp".into(), json!(truncate_micro(t)));
    }
    if !out.contains_key("count") {
        out.insert("count".into(), json!(1));
    }
    Value::Object(out)
}

/// The served form of a stored object, for `info`.
pub fn from_storage(info: &ResourceInfo, obj: &Value) -> Value {
    if !is_events_v1(info) {
        let mut o = obj.clone();
        let av = info.api_version();
        if o.get("apiVersion").and_then(Value::as_str) != Some(av.as_str()) {
            o["apiVersion"] = json!(av);
        }
        return o;
    }
    let Some(src) = obj.as_object() else {
        return obj.clone();
    };
    let mut out = Map::new();
    out.insert("apiVersion".into(), json!("events.k8s.io/v1"));
    out.insert("kind".into(), json!("Event"));
    let renames = [
        ("metadata", "metadata"),
        ("involvedObject", "regarding"),
        ("related", "related"),
        ("message", "note"),
        ("reason", "reason"),
        ("type", "type"),
        ("action", "action"),
        ("reportingComponent", "reportingController"),
        ("reportingInstance", "reportingInstance"),
        ("series", "series"),
        ("firstTimestamp", "deprecatedFirstTimestamp"),
        ("lastTimestamp", "deprecatedLastTimestamp"),
        ("count", "deprecatedCount"),
        ("source", "deprecatedSource"),
    ];
    for (from, to) in renames {
        if let Some(v) = src.get(from) {
            out.insert(to.into(), v.clone());
        }
    }
    let event_time = src
        .get("eventTime")
        .filter(|t| !t.is_null())
        .cloned()
        .or_else(|| src.get("firstTimestamp").map(to_micro));
    if let Some(t) = event_time {
        out.insert("eventTime".into(), t);
    }
    Value::Object(out)
}

fn truncate_micro(t: &Value) -> String {
    let s = t.as_str().unwrap_or_default();
    match chrono::DateTime::parse_from_rfc3339(s) {
        Ok(dt) => dt
            .with_timezone(&chrono::Utc)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        Err(_) => s.to_string(),
    }
}

fn to_micro(t: &Value) -> Value {
    let s = t.as_str().unwrap_or_default();
    match chrono::DateTime::parse_from_rfc3339(s) {
        Ok(dt) => json!(
            dt.with_timezone(&chrono::Utc)
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        ),
        Err(_) => t.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    #[test]
    fn events_v1_round_trip_through_core_storage() {
        let reg = Registry::with_builtins();
        let info = reg.get("events.k8s.io", "v1", "events").unwrap();
        let ev = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e1", "namespace": "default"},
            "regarding": {"kind": "Service", "name": "web", "namespace": "default"},
            "note": "Ensuring load balancer", "reason": "EnsuringLoadBalancer", "type": "Normal",
            "action": "Ensure", "reportingController": "berth", "reportingInstance": "berth-0",
            "eventTime": "2026-01-01T00:00:00.000000Z"
        });
        let stored = to_storage(&info, ev.clone());
        assert_eq!(stored["involvedObject"]["name"], "web");
        assert_eq!(stored["message"], "Ensuring load balancer");
        assert_eq!(stored["source"]["component"], "berth");
        assert_eq!(stored["firstTimestamp"], "2026-01-01T00:00:00Z");
        assert_eq!(stored["count"], 1);
        let back = from_storage(&info, &stored);
        for key in ["regarding", "note", "reason", "type", "action", "eventTime"] {
            assert_eq!(back[key], ev[key], "{key}");
        }
    }
}
