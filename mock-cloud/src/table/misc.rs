//! Printers of the small kinds: namespaces, events, config maps, secrets, service
//! accounts, leases, and the default `Name`/`Age` and `Name`/`Created At` rows.

use super::format::{age, i, len_of, name, parse_time, s, since};
use super::*;

pub(super) fn name_age_cells(_: &ResourceInfo, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![name(obj), age(obj, now)]
}

/// `Name`, `Created At` (RFC 3339, UTC), as the default table convertor prints.
pub(super) fn created_at_cells(_: &ResourceInfo, obj: &Value, _: DateTime<Utc>) -> Vec<Value> {
    let created = parse_time(s(obj, "/metadata/creationTimestamp"))
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".into());
    vec![name(obj), json!(created)]
}

pub(super) fn namespace_cells(_: &ResourceInfo, ns: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let phase = match s(ns, "/status/phase") {
        "" => "Active",
        p => p,
    };
    vec![name(ns), json!(phase), age(ns, now)]
}

/// First non-empty string among several JSON pointers.
pub(super) fn first_of<'a>(v: &'a Value, ptrs: &[&str]) -> &'a str {
    ptrs.iter()
        .map(|p| s(v, p))
        .find(|x| !x.is_empty())
        .unwrap_or_default()
}

/// Core and events.k8s.io events (the latter's field names are mapped as the server's
/// conversion to the internal type does).
pub(super) fn event_cells(_: &ResourceInfo, ev: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let first_ts = first_of(ev, &["/firstTimestamp", "/deprecatedFirstTimestamp"]);
    let first = if first_ts.is_empty() {
        since(s(ev, "/eventTime"), now)
    } else {
        since(first_ts, now)
    };
    let last_ts = first_of(ev, &["/lastTimestamp", "/deprecatedLastTimestamp"]);
    let mut last = if last_ts.is_empty() {
        first.clone()
    } else {
        since(last_ts, now)
    };
    let mut count = ev
        .get("count")
        .or_else(|| ev.get("deprecatedCount"))
        .and_then(Value::as_i64)
        .unwrap_or_default();
    if let Some(series) = ev.get("series").filter(|v| v.is_object()) {
        last = since(s(series, "/lastObservedTime"), now);
        count = i(series, "/count");
    } else if count == 0 {
        count = 1;
    }
    let regarding = ev
        .get("involvedObject")
        .or_else(|| ev.get("regarding"))
        .cloned()
        .unwrap_or_default();
    let kind = s(&regarding, "/kind").to_lowercase();
    let target = match s(&regarding, "/name") {
        "" => kind,
        n => format!("{kind}/{n}"),
    };
    let component = first_of(
        ev,
        &[
            "/source/component",
            "/deprecatedSource/component",
            "/reportingController",
        ],
    );
    let host = first_of(
        ev,
        &[
            "/source/host",
            "/deprecatedSource/host",
            "/reportingInstance",
        ],
    );
    let source = if host.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {host}")
    };
    let message = first_of(ev, &["/message", "/note"]).trim();
    vec![
        json!(last),
        json!(s(ev, "/type")),
        json!(s(ev, "/reason")),
        json!(target),
        json!(s(&regarding, "/fieldPath")),
        json!(source),
        json!(message),
        json!(first),
        json!(count),
        name(ev),
    ]
}

pub(super) fn configmap_cells(_: &ResourceInfo, cm: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let data = len_of(cm, "/data") + len_of(cm, "/binaryData");
    vec![name(cm), json!(data), age(cm, now)]
}

pub(super) fn secret_cells(_: &ResourceInfo, sec: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let type_ = match s(sec, "/type") {
        "" => "Opaque",
        t => t,
    };
    vec![
        name(sec),
        json!(type_),
        json!(len_of(sec, "/data")),
        age(sec, now),
    ]
}

pub(super) fn serviceaccount_cells(_: &ResourceInfo, sa: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![name(sa), json!(len_of(sa, "/secrets")), age(sa, now)]
}

pub(super) fn lease_cells(_: &ResourceInfo, lease: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(lease),
        json!(s(lease, "/spec/holderIdentity")),
        age(lease, now),
    ]
}
