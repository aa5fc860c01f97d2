//! Printers of workloads (Deployments, ReplicaSets, DaemonSets), PodDisruptionBudgets
//! and RBAC bindings.

use super::format::{age, arr, format_labels, format_selector, i, join_field, name, s};
use super::*;

/// Containers, Images and Selector of a workload.
pub(super) fn workload_wide(obj: &Value) -> Vec<Value> {
    let containers = arr(obj, "/spec/template/spec/containers");
    vec![
        json!(join_field(containers, "/name", ",")),
        json!(join_field(containers, "/image", ",")),
        json!(format_selector(obj.pointer("/spec/selector"))),
    ]
}

pub(super) fn deployment_cells(_: &ResourceInfo, d: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let desired = d
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let mut cells = vec![
        name(d),
        json!(format!("{}/{desired}", i(d, "/status/readyReplicas"))),
        json!(i(d, "/status/updatedReplicas")),
        json!(i(d, "/status/availableReplicas")),
        age(d, now),
    ];
    cells.extend(workload_wide(d));
    cells
}

pub(super) fn replicaset_cells(_: &ResourceInfo, rs: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let desired = rs
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let mut cells = vec![
        name(rs),
        json!(desired),
        json!(i(rs, "/status/replicas")),
        json!(i(rs, "/status/readyReplicas")),
        age(rs, now),
    ];
    cells.extend(workload_wide(rs));
    cells
}

pub(super) fn daemonset_cells(_: &ResourceInfo, ds: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let mut cells = vec![name(ds)];
    for f in [
        "desiredNumberScheduled",
        "currentNumberScheduled",
        "numberReady",
        "updatedNumberScheduled",
        "numberAvailable",
    ] {
        cells.push(json!(i(ds, &format!("/status/{f}"))));
    }
    cells.push(json!(format_labels(
        ds.pointer("/spec/template/spec/nodeSelector")
    )));
    cells.push(age(ds, now));
    cells.extend(workload_wide(ds));
    cells
}

/// An int-or-string field as text, `N/A` when unset.
pub(super) fn int_or_string(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "N/A".into(),
    }
}

pub(super) fn pdb_cells(_: &ResourceInfo, pdb: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(pdb),
        json!(int_or_string(pdb.pointer("/spec/minAvailable"))),
        json!(int_or_string(pdb.pointer("/spec/maxUnavailable"))),
        json!(i(pdb, "/status/disruptionsAllowed")),
        age(pdb, now),
    ]
}

pub(super) fn binding_cells(_: &ResourceInfo, b: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let role = format!("{}/{}", s(b, "/roleRef/kind"), s(b, "/roleRef/name"));
    let subjects = arr(b, "/subjects");
    let of_kind = |kind: &str| -> String {
        subjects
            .iter()
            .filter(|x| s(x, "/kind") == kind)
            .map(|x| match kind {
                "ServiceAccount" => format!("{}/{}", s(x, "/namespace"), s(x, "/name")),
                _ => s(x, "/name").to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    vec![
        name(b),
        json!(role),
        age(b, now),
        json!(of_kind("User")),
        json!(of_kind("Group")),
        json!(of_kind("ServiceAccount")),
    ]
}
