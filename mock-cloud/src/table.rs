//! Server-side printing: `meta.k8s.io/v1` `Table` documents as `kubectl get` asks for them
//! (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io,...`).
//!
//! Column names, types, priorities and cell formats follow kube-apiserver's printers
//! (`pkg/printers/internalversion/printers.go`, the apiextensions table convertor for
//! custom resources, and the default convertor's `Name`/`Created At`). Names are in the
//! server's casing (`Cluster-IP`, `Port(s)`); kubectl upper-cases them. Columns with
//! `priority: 1` are only shown by `kubectl get -o wide`. Ages use kubectl's
//! `HumanDuration` format (`5s`, `3m12s`, `10m`, `4h2m`, `3d`).
//!
//! Watch: kube-apiserver sends each watch event's object as a one-row `Table`, with
//! `columnDefinitions` only on the **first** event of the stream and none afterwards
//! (kubectl reuses the previous columns). Call [`to_table`] with `include_headers: true`
//! for the first event and `false` for the rest (and `true` for every list/get).
//!
//! Known simplifications: pod init containers are not considered for READY/STATUS; a
//! custom resource column's `[*]` selects the first element (as upstream's convertor does).

use crate::registry::{PrinterColumn, ResourceInfo};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// Whether an Accept header asks for a meta.k8s.io Table (`application/json;as=Table;v=v1;g=meta.k8s.io`, also v1beta1).
pub fn wants_table(accept: &str) -> bool {
    accept.split(',').any(|media| {
        let parts: Vec<String> = media
            .split(';')
            .map(|p| p.trim().replace(' ', ""))
            .collect();
        let has = |p: &str| parts.iter().any(|x| x == p);
        parts.first().map(String::as_str) == Some("application/json")
            && has("as=Table")
            && has("g=meta.k8s.io")
            && (has("v=v1") || has("v=v1beta1"))
    })
}

/// A meta.k8s.io/v1 Table for these objects. `include_headers` false leaves the column
/// definitions empty (watch events after the first). `include_object`: `"None"`,
/// `"Metadata"` (default: a `PartialObjectMetadata` with apiVersion meta.k8s.io/v1) or
/// `"Object"` (from the `includeObject` query parameter). `list_meta` (resourceVersion,
/// continue, ...) becomes the table's `metadata`.
pub fn to_table(
    info: &ResourceInfo,
    objects: &[&Value],
    include_headers: bool,
    include_object: &str,
    list_meta: Value,
    now: DateTime<Utc>,
) -> Value {
    let printer = printer_for(info);
    let columns: Vec<Value> = if include_headers {
        printer.columns.iter().map(Col::to_value).collect()
    } else {
        Vec::new()
    };
    let rows: Vec<Value> = objects
        .iter()
        .map(|obj| {
            let mut row = json!({ "cells": (printer.cells)(info, obj, now) });
            if let Some(o) = row_object(obj, include_object) {
                row["object"] = o;
            }
            row
        })
        .collect();
    let metadata = if list_meta.is_object() {
        list_meta
    } else {
        json!({})
    };
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

/// The `object` of a row according to `includeObject`.
fn row_object(obj: &Value, include_object: &str) -> Option<Value> {
    match include_object {
        "None" => None,
        "Object" => Some(obj.clone()),
        _ => Some(json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
        })),
    }
}

/// One column definition.
struct Col {
    name: String,
    type_: String,
    format: String,
    priority: i64,
    description: String,
}

impl Col {
    fn new(name: &str, type_: &str, priority: i64, description: &str) -> Self {
        Col {
            name: name.into(),
            type_: type_.into(),
            format: String::new(),
            priority,
            description: description.into(),
        }
    }

    fn to_value(&self) -> Value {
        json!({
            "name": self.name,
            "type": self.type_,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }
}

type CellFn = fn(&ResourceInfo, &Value, DateTime<Utc>) -> Vec<Value>;

/// Columns plus the function computing one row's cells.
struct Printer {
    columns: Vec<Col>,
    cells: CellFn,
}

const NAME_DESC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically.";
const AGE_DESC: &str =
    "CreationTimestamp is a timestamp representing the server time when this object was created.";

fn name_col() -> Col {
    let mut c = Col::new("Name", "string", 0, NAME_DESC);
    c.format = "name".into();
    c
}

fn age_col() -> Col {
    Col::new("Age", "string", 0, AGE_DESC)
}

/// Builds a column list: `(name, type, priority)` specs between Name and Age handling.
fn cols(specs: &[(&str, &str, i64)]) -> Vec<Col> {
    specs
        .iter()
        .map(|(n, t, p)| match *n {
            "Name" => Col {
                priority: *p,
                ..name_col()
            },
            "Age" => age_col(),
            _ => Col::new(n, t, *p, n),
        })
        .collect()
}

/// The printer for a resource.
fn printer_for(info: &ResourceInfo) -> Printer {
    if info.crd_name.is_some() {
        return custom_resource_printer(info);
    }
    let p = |specs: &[(&str, &str, i64)], cells: CellFn| Printer {
        columns: cols(specs),
        cells,
    };
    match (info.group.as_str(), info.kind.as_str()) {
        ("", "Service") => p(
            &[
                ("Name", "", 0),
                ("Type", "string", 0),
                ("Cluster-IP", "string", 0),
                ("External-IP", "string", 0),
                ("Port(s)", "string", 0),
                ("Age", "", 0),
                ("Selector", "string", 1),
            ],
            service_cells,
        ),
        ("", "Node") => p(
            &[
                ("Name", "", 0),
                ("Status", "string", 0),
                ("Roles", "string", 0),
                ("Age", "", 0),
                ("Version", "string", 0),
                ("Internal-IP", "string", 1),
                ("External-IP", "string", 1),
                ("OS-Image", "string", 1),
                ("Kernel-Version", "string", 1),
                ("Container-Runtime", "string", 1),
            ],
            node_cells,
        ),
        ("", "Pod") => p(
            &[
                ("Name", "", 0),
                ("Ready", "string", 0),
                ("Status", "string", 0),
                ("Restarts", "string", 0),
                ("Age", "", 0),
                ("IP", "string", 1),
                ("Node", "string", 1),
                ("Nominated Node", "string", 1),
                ("Readiness Gates", "string", 1),
            ],
            pod_cells,
        ),
        ("", "Namespace") => p(
            &[("Name", "", 0), ("Status", "string", 0), ("Age", "", 0)],
            namespace_cells,
        ),
        ("", "Event") | ("events.k8s.io", "Event") => p(
            &[
                ("Last Seen", "string", 0),
                ("Type", "string", 0),
                ("Reason", "string", 0),
                ("Object", "string", 0),
                ("Subobject", "string", 1),
                ("Source", "string", 1),
                ("Message", "string", 0),
                ("First Seen", "string", 1),
                ("Count", "string", 1),
                ("Name", "", 1),
            ],
            event_cells,
        ),
        ("", "ConfigMap") => p(
            &[("Name", "", 0), ("Data", "string", 0), ("Age", "", 0)],
            configmap_cells,
        ),
        ("", "Secret") => p(
            &[
                ("Name", "", 0),
                ("Type", "string", 0),
                ("Data", "string", 0),
                ("Age", "", 0),
            ],
            secret_cells,
        ),
        ("", "ServiceAccount") => p(
            &[("Name", "", 0), ("Secrets", "string", 0), ("Age", "", 0)],
            serviceaccount_cells,
        ),
        ("", "Endpoints") => p(
            &[("Name", "", 0), ("Endpoints", "string", 0), ("Age", "", 0)],
            endpoints_cells,
        ),
        ("discovery.k8s.io", "EndpointSlice") => p(
            &[
                ("Name", "", 0),
                ("AddressType", "string", 0),
                ("Ports", "string", 0),
                ("Endpoints", "string", 0),
                ("Age", "", 0),
            ],
            endpointslice_cells,
        ),
        ("coordination.k8s.io", "Lease") => p(
            &[("Name", "", 0), ("Holder", "string", 0), ("Age", "", 0)],
            lease_cells,
        ),
        ("apps", "Deployment") => p(
            &[
                ("Name", "", 0),
                ("Ready", "string", 0),
                ("Up-to-date", "integer", 0),
                ("Available", "integer", 0),
                ("Age", "", 0),
                ("Containers", "string", 1),
                ("Images", "string", 1),
                ("Selector", "string", 1),
            ],
            deployment_cells,
        ),
        ("apps", "ReplicaSet") => p(
            &[
                ("Name", "", 0),
                ("Desired", "integer", 0),
                ("Current", "integer", 0),
                ("Ready", "integer", 0),
                ("Age", "", 0),
                ("Containers", "string", 1),
                ("Images", "string", 1),
                ("Selector", "string", 1),
            ],
            replicaset_cells,
        ),
        ("apps", "DaemonSet") => p(
            &[
                ("Name", "", 0),
                ("Desired", "integer", 0),
                ("Current", "integer", 0),
                ("Ready", "integer", 0),
                ("Up-to-date", "integer", 0),
                ("Available", "integer", 0),
                ("Node Selector", "string", 0),
                ("Age", "", 0),
                ("Containers", "string", 1),
                ("Images", "string", 1),
                ("Selector", "string", 1),
            ],
            daemonset_cells,
        ),
        ("policy", "PodDisruptionBudget") => p(
            &[
                ("Name", "", 0),
                ("Min Available", "string", 0),
                ("Max Unavailable", "string", 0),
                ("Allowed Disruptions", "integer", 0),
                ("Age", "", 0),
            ],
            pdb_cells,
        ),
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => p(
            &[
                ("Name", "", 0),
                ("Role", "string", 0),
                ("Age", "", 0),
                ("Users", "string", 1),
                ("Groups", "string", 1),
                ("ServiceAccounts", "string", 1),
            ],
            binding_cells,
        ),
        ("rbac.authorization.k8s.io", "Role" | "ClusterRole")
        | ("apiextensions.k8s.io", "CustomResourceDefinition") => p(
            &[("Name", "", 0), ("Created At", "date", 0)],
            created_at_cells,
        ),
        _ => p(&[("Name", "", 0), ("Age", "", 0)], name_age_cells),
    }
}

// ---------------------------------------------------------------- helpers

/// String at a JSON pointer, or "".
fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

/// Integer at a JSON pointer, or 0.
fn i(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or_default()
}

/// Array at a JSON pointer, or empty.
fn arr<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Number of entries of the object at a JSON pointer.
fn len_of(v: &Value, ptr: &str) -> i64 {
    let n = match v.pointer(ptr) {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    };
    n as i64
}

/// `s` or `<none>` when empty.
fn or_none(s: &str) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s.into()
    }
}

fn name(obj: &Value) -> Value {
    json!(s(obj, "/metadata/name"))
}

/// Parses an RFC 3339 timestamp.
fn parse_time(ts: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(ts)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// `translateTimestampSince`: `<unknown>` for a missing timestamp.
fn since(ts: &str, now: DateTime<Utc>) -> String {
    match parse_time(ts) {
        Some(t) => human_duration(now.signed_duration_since(t)),
        None => "<unknown>".into(),
    }
}

fn age(obj: &Value, now: DateTime<Utc>) -> Value {
    json!(since(s(obj, "/metadata/creationTimestamp"), now))
}

/// kubectl's `duration.HumanDuration`.
pub fn human_duration(d: chrono::TimeDelta) -> String {
    let secs = d.num_seconds();
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// `labels.FormatLabels`: sorted `k=v` pairs joined by commas, `<none>` when empty.
fn format_labels(v: Option<&Value>) -> String {
    let map: BTreeMap<&str, &str> = v
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    let pairs: Vec<String> = map.iter().map(|(k, v)| format!("{k}={v}")).collect();
    or_none(&pairs.join(","))
}

/// A `metav1.LabelSelector` as a selector string (`a=b,c in (d,e)`), `<none>` if empty.
fn format_selector(sel: Option<&Value>) -> String {
    let Some(sel) = sel else {
        return "<none>".into();
    };
    let mut parts: Vec<String> = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        let sorted: BTreeMap<&String, &Value> = m.iter().collect();
        for (k, v) in sorted {
            parts.push(format!("{k}={}", v.as_str().unwrap_or_default()));
        }
    }
    for e in arr(sel, "/matchExpressions") {
        let key = s(e, "/key");
        let mut vals: Vec<&str> = arr(e, "/values").iter().filter_map(Value::as_str).collect();
        vals.sort_unstable();
        parts.push(match s(e, "/operator") {
            "In" => format!("{key} in ({})", vals.join(",")),
            "NotIn" => format!("{key} notin ({})", vals.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            op => format!("{key} {op}"),
        });
    }
    or_none(&parts.join(","))
}

/// Joins a string field of every element of an array.
fn join_field(items: &[Value], ptr: &str, sep: &str) -> String {
    items
        .iter()
        .map(|c| s(c, ptr))
        .filter(|x| !x.is_empty())
        .collect::<Vec<_>>()
        .join(sep)
}

/// `host:port`, bracketing IPv6 hosts.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Up to three items, then ` + N more...`; `<unset>` when empty.
fn list_with_more(all: Vec<String>) -> String {
    const MAX: usize = 3;
    if all.len() > MAX {
        return format!("{} + {} more...", all[..MAX].join(","), all.len() - MAX);
    }
    if all.is_empty() {
        return "<unset>".into();
    }
    all.join(",")
}

// ---------------------------------------------------------------- printers

fn name_age_cells(_: &ResourceInfo, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![name(obj), age(obj, now)]
}

/// `Name`, `Created At` (RFC 3339, UTC), as the default table convertor prints.
fn created_at_cells(_: &ResourceInfo, obj: &Value, _: DateTime<Utc>) -> Vec<Value> {
    let created = parse_time(s(obj, "/metadata/creationTimestamp"))
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".into());
    vec![name(obj), json!(created)]
}

/// EXTERNAL-IP of a Service.
fn service_external_ip(svc: &Value) -> String {
    let external: Vec<&str> = arr(svc, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match s(svc, "/spec/type") {
        "" | "ClusterIP" | "NodePort" => or_none(&external.join(",")),
        "LoadBalancer" => {
            let mut all: Vec<String> = arr(svc, "/status/loadBalancer/ingress")
                .iter()
                .map(|ing| {
                    let ip = s(ing, "/ip");
                    if ip.is_empty() {
                        s(ing, "/hostname")
                    } else {
                        ip
                    }
                    .to_string()
                })
                .filter(|x| !x.is_empty())
                .collect();
            all.extend(external.iter().map(|x| x.to_string()));
            if all.is_empty() {
                "<pending>".into()
            } else {
                all.join(",")
            }
        }
        "ExternalName" => s(svc, "/spec/externalName").into(),
        _ => "<unknown>".into(),
    }
}

/// PORT(S) of a Service: `80:31234/TCP,53/UDP`.
fn service_ports(svc: &Value) -> String {
    let pieces: Vec<String> = arr(svc, "/spec/ports")
        .iter()
        .map(|p| {
            let proto = match s(p, "/protocol") {
                "" => "TCP",
                x => x,
            };
            let port = i(p, "/port");
            match i(p, "/nodePort") {
                np if np > 0 => format!("{port}:{np}/{proto}"),
                _ => format!("{port}/{proto}"),
            }
        })
        .collect();
    or_none(&pieces.join(","))
}

fn service_cells(_: &ResourceInfo, svc: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let type_ = match s(svc, "/spec/type") {
        "" => "ClusterIP",
        t => t,
    };
    let cluster_ip = arr(svc, "/spec/clusterIPs")
        .first()
        .and_then(Value::as_str)
        .unwrap_or_else(|| s(svc, "/spec/clusterIP"));
    vec![
        name(svc),
        json!(type_),
        json!(or_none(cluster_ip)),
        json!(service_external_ip(svc)),
        json!(service_ports(svc)),
        age(svc, now),
        json!(format_labels(svc.pointer("/spec/selector"))),
    ]
}

/// Node STATUS: `Ready`, `NotReady`, `Unknown`, plus `,SchedulingDisabled`.
fn node_status(node: &Value) -> String {
    let ready = arr(node, "/status/conditions")
        .iter()
        .find(|c| s(c, "/type") == "Ready");
    let mut status = match ready {
        Some(c) if s(c, "/status") == "True" => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    status
}

/// Node ROLES from `node-role.kubernetes.io/<role>` and `kubernetes.io/role` labels.
fn node_roles(node: &Value) -> String {
    let mut roles: Vec<String> = Vec::new();
    if let Some(labels) = node.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.push(role.to_string());
                }
            } else if let Some(v) = v
                .as_str()
                .filter(|v| k == "kubernetes.io/role" && !v.is_empty())
            {
                roles.push(v.to_string());
            }
        }
    }
    roles.sort();
    roles.dedup();
    or_none(&roles.join(","))
}

/// First node address of a type, or `<none>`.
fn node_address(node: &Value, type_: &str) -> String {
    let addr = arr(node, "/status/addresses")
        .iter()
        .find(|a| s(a, "/type") == type_)
        .map(|a| s(a, "/address"))
        .unwrap_or_default();
    or_none(addr)
}

fn node_cells(_: &ResourceInfo, node: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let info = |f: &str| {
        let v = s(node, &format!("/status/nodeInfo/{f}"));
        json!(if v.is_empty() { "<unknown>" } else { v })
    };
    vec![
        name(node),
        json!(node_status(node)),
        json!(node_roles(node)),
        age(node, now),
        json!(s(node, "/status/nodeInfo/kubeletVersion")),
        json!(node_address(node, "InternalIP")),
        json!(node_address(node, "ExternalIP")),
        info("osImage"),
        info("kernelVersion"),
        info("containerRuntimeVersion"),
    ]
}

/// Pod READY, STATUS and RESTARTS.
fn pod_state(pod: &Value, now: DateTime<Utc>) -> (String, String, String) {
    let total = arr(pod, "/spec/containers").len();
    let mut reason = match s(pod, "/status/reason") {
        "" => s(pod, "/status/phase").to_string(),
        r => r.to_string(),
    };
    let mut ready = 0;
    let mut restarts = 0;
    let mut has_running = false;
    let mut last_restart: Option<DateTime<Utc>> = None;
    for c in arr(pod, "/status/containerStatuses").iter().rev() {
        restarts += i(c, "/restartCount");
        if let Some(t) = parse_time(s(c, "/lastState/terminated/finishedAt")) {
            last_restart = last_restart.max(Some(t));
        }
        let waiting = s(c, "/state/waiting/reason");
        let terminated = c.pointer("/state/terminated");
        if !waiting.is_empty() {
            reason = waiting.to_string();
        } else if let Some(t) = terminated {
            reason = match s(t, "/reason") {
                "" if i(t, "/signal") != 0 => format!("Signal:{}", i(t, "/signal")),
                "" => format!("ExitCode:{}", i(t, "/exitCode")),
                r => r.to_string(),
            };
        } else if c.get("ready").and_then(Value::as_bool) == Some(true)
            && c.pointer("/state/running").is_some()
        {
            has_running = true;
            ready += 1;
        }
    }
    if reason == "Completed" && has_running {
        let pod_ready = arr(pod, "/status/conditions")
            .iter()
            .any(|c| s(c, "/type") == "Ready" && s(c, "/status") == "True");
        reason = if pod_ready { "Running" } else { "NotReady" }.into();
    }
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        if s(pod, "/status/reason") == "NodeLost" {
            reason = "Unknown".into();
        } else if !matches!(s(pod, "/status/phase"), "Succeeded" | "Failed") {
            reason = "Terminating".into();
        }
    }
    let restarts_str = match last_restart {
        Some(t) if restarts != 0 => format!(
            "{restarts} ({} ago)",
            human_duration(now.signed_duration_since(t))
        ),
        _ => restarts.to_string(),
    };
    (format!("{ready}/{total}"), reason, restarts_str)
}

/// Pod READINESS GATES: `true/total` or `<none>`.
fn pod_readiness_gates(pod: &Value) -> String {
    let gates = arr(pod, "/spec/readinessGates");
    if gates.is_empty() {
        return "<none>".into();
    }
    let conditions = arr(pod, "/status/conditions");
    let true_count = gates
        .iter()
        .filter(|g| {
            let t = s(g, "/conditionType");
            conditions
                .iter()
                .find(|c| s(c, "/type") == t)
                .is_some_and(|c| s(c, "/status") == "True")
        })
        .count();
    format!("{true_count}/{}", gates.len())
}

fn pod_cells(_: &ResourceInfo, pod: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (ready, reason, restarts) = pod_state(pod, now);
    let ip = arr(pod, "/status/podIPs")
        .first()
        .map(|p| s(p, "/ip"))
        .unwrap_or_else(|| s(pod, "/status/podIP"));
    vec![
        name(pod),
        json!(ready),
        json!(reason),
        json!(restarts),
        age(pod, now),
        json!(or_none(ip)),
        json!(or_none(s(pod, "/spec/nodeName"))),
        json!(or_none(s(pod, "/status/nominatedNodeName"))),
        json!(pod_readiness_gates(pod)),
    ]
}

fn namespace_cells(_: &ResourceInfo, ns: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let phase = match s(ns, "/status/phase") {
        "" => "Active",
        p => p,
    };
    vec![name(ns), json!(phase), age(ns, now)]
}

/// First non-empty string among several JSON pointers.
fn first_of<'a>(v: &'a Value, ptrs: &[&str]) -> &'a str {
    ptrs.iter()
        .map(|p| s(v, p))
        .find(|x| !x.is_empty())
        .unwrap_or_default()
}

/// Core and events.k8s.io events (the latter's field names are mapped as the server's
/// conversion to the internal type does).
fn event_cells(_: &ResourceInfo, ev: &Value, now: DateTime<Utc>) -> Vec<Value> {
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

fn configmap_cells(_: &ResourceInfo, cm: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let data = len_of(cm, "/data") + len_of(cm, "/binaryData");
    vec![name(cm), json!(data), age(cm, now)]
}

fn secret_cells(_: &ResourceInfo, sec: &Value, now: DateTime<Utc>) -> Vec<Value> {
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

fn serviceaccount_cells(_: &ResourceInfo, sa: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![name(sa), json!(len_of(sa, "/secrets")), age(sa, now)]
}

/// Endpoints ENDPOINTS: `ip:port` pairs, three at most.
fn format_endpoints(ep: &Value) -> String {
    let subsets = arr(ep, "/subsets");
    if subsets.is_empty() {
        return "<none>".into();
    }
    let mut all = Vec::new();
    for ss in subsets {
        for port in arr(ss, "/ports") {
            for addr in arr(ss, "/addresses") {
                all.push(join_host_port(s(addr, "/ip"), i(port, "/port")));
            }
        }
    }
    if all.len() > 3 {
        return format!("{} + {} more...", all[..3].join(","), all.len() - 3);
    }
    all.join(",")
}

fn endpoints_cells(_: &ResourceInfo, ep: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![name(ep), json!(format_endpoints(ep)), age(ep, now)]
}

fn endpointslice_cells(_: &ResourceInfo, es: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let ports: Vec<String> = arr(es, "/ports")
        .iter()
        .map(
            |p| match (p.get("port").and_then(Value::as_i64), p.get("name")) {
                (Some(n), _) => n.to_string(),
                (None, Some(Value::String(n))) => n.clone(),
                _ => "*".into(),
            },
        )
        .collect();
    let addrs: Vec<String> = arr(es, "/endpoints")
        .iter()
        .flat_map(|e| arr(e, "/addresses").iter().filter_map(Value::as_str))
        .map(str::to_string)
        .collect();
    vec![
        name(es),
        json!(s(es, "/addressType")),
        json!(list_with_more(ports)),
        json!(list_with_more(addrs)),
        age(es, now),
    ]
}

fn lease_cells(_: &ResourceInfo, lease: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(lease),
        json!(s(lease, "/spec/holderIdentity")),
        age(lease, now),
    ]
}

/// Containers, Images and Selector of a workload.
fn workload_wide(obj: &Value) -> Vec<Value> {
    let containers = arr(obj, "/spec/template/spec/containers");
    vec![
        json!(join_field(containers, "/name", ",")),
        json!(join_field(containers, "/image", ",")),
        json!(format_selector(obj.pointer("/spec/selector"))),
    ]
}

fn deployment_cells(_: &ResourceInfo, d: &Value, now: DateTime<Utc>) -> Vec<Value> {
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

fn replicaset_cells(_: &ResourceInfo, rs: &Value, now: DateTime<Utc>) -> Vec<Value> {
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

fn daemonset_cells(_: &ResourceInfo, ds: &Value, now: DateTime<Utc>) -> Vec<Value> {
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
fn int_or_string(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "N/A".into(),
    }
}

fn pdb_cells(_: &ResourceInfo, pdb: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(pdb),
        json!(int_or_string(pdb.pointer("/spec/minAvailable"))),
        json!(int_or_string(pdb.pointer("/spec/maxUnavailable"))),
        json!(i(pdb, "/status/disruptionsAllowed")),
        age(pdb, now),
    ]
}

fn binding_cells(_: &ResourceInfo, b: &Value, now: DateTime<Utc>) -> Vec<Value> {
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

// ---------------------------------------------------------------- custom resources

/// The printer columns of a custom resource: the CRD's, or the default `Age` column.
fn custom_columns(info: &ResourceInfo) -> Vec<PrinterColumn> {
    if !info.printer_columns.is_empty() {
        return info.printer_columns.clone();
    }
    vec![PrinterColumn {
        name: "Age".into(),
        type_: "date".into(),
        json_path: ".metadata.creationTimestamp".into(),
        description: String::new(),
        priority: 0,
        format: String::new(),
    }]
}

fn custom_resource_printer(info: &ResourceInfo) -> Printer {
    let mut columns = vec![name_col()];
    for c in custom_columns(info) {
        let description = if c.description.is_empty() {
            format!(
                "Custom resource definition column (in JSONPath format): {}",
                c.json_path
            )
        } else {
            c.description.clone()
        };
        columns.push(Col {
            name: c.name,
            type_: c.type_,
            format: c.format,
            priority: c.priority,
            description,
        });
    }
    Printer {
        columns,
        cells: custom_resource_cells,
    }
}

fn custom_resource_cells(info: &ResourceInfo, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let mut cells = vec![name(obj)];
    for c in custom_columns(info) {
        let value = eval_json_path(obj, &c.json_path);
        cells.push(value.map_or(Value::Null, |v| typed_cell(&c.type_, v, now)));
    }
    cells
}

/// A cell of a custom column: the value converted to the column's type, or null.
fn typed_cell(type_: &str, v: &Value, now: DateTime<Utc>) -> Value {
    match (type_, v) {
        (_, Value::Null) => Value::Null,
        ("string", Value::String(s)) => json!(s),
        ("string", Value::Number(_) | Value::Bool(_)) => json!(v.to_string()),
        ("string", _) => json!(v.to_string()),
        ("integer", Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .map_or(Value::Null, |x| json!(x)),
        ("number", Value::Number(n)) => n.as_f64().map_or(Value::Null, |x| json!(x)),
        ("boolean", Value::Bool(b)) => json!(b),
        ("date", Value::String(ts)) => match parse_time(ts) {
            Some(t) => json!(human_duration(now.signed_duration_since(t))),
            None => json!("<invalid>"),
        },
        _ => Value::Null,
    }
}

/// One step of a simple JSONPath.
#[derive(Debug, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    /// `[*]`: upstream keeps only the first result.
    All,
    /// `[?(@.key=="value")]`: the first element whose `key` equals `value`.
    Filter(String, String),
}

/// Parses `.a.b`, `.a[0].b`, `.a[*].b`, `.a['x.y']`, `.a[?(@.t=="Ready")].s` (an optional
/// surrounding `{}` is accepted).
fn parse_json_path(path: &str) -> Option<Vec<Step>> {
    let p = path.trim();
    let p = p
        .strip_prefix('{')
        .and_then(|x| x.strip_suffix('}'))
        .unwrap_or(p);
    let mut steps = Vec::new();
    let mut rest = p.strip_prefix('$').unwrap_or(p);
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end > 0 {
                steps.push(Step::Field(r[..end].to_string()));
            }
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let (inner, after) = split_bracket(r)?;
            steps.push(parse_bracket(inner)?);
            rest = after;
        } else {
            return None;
        }
    }
    Some(steps)
}

/// Splits `inner]rest` at the bracket's closing `]` (quotes may contain `]`).
fn split_bracket(r: &str) -> Option<(&str, &str)> {
    let mut quote: Option<char> = None;
    for (idx, ch) in r.char_indices() {
        match (quote, ch) {
            (Some(q), c) if c == q => quote = None,
            (None, '\'' | '"') => quote = Some(ch),
            (None, ']') => return Some((&r[..idx], &r[idx + 1..])),
            _ => {}
        }
    }
    None
}

/// Removes matching surrounding quotes.
fn unquote(s: &str) -> &str {
    let s = s.trim();
    for q in ['\'', '"'] {
        if let Some(x) = s.strip_prefix(q).and_then(|x| x.strip_suffix(q)) {
            return x;
        }
    }
    s
}

fn parse_bracket(inner: &str) -> Option<Step> {
    let inner = inner.trim();
    if inner == "*" {
        return Some(Step::All);
    }
    if let Ok(n) = inner.parse::<usize>() {
        return Some(Step::Index(n));
    }
    if let Some(f) = inner.strip_prefix("?(@.").and_then(|x| x.strip_suffix(')')) {
        let (k, v) = f.split_once("==")?;
        return Some(Step::Filter(k.trim().to_string(), unquote(v).to_string()));
    }
    Some(Step::Field(unquote(inner).to_string()))
}

/// Evaluates a simple JSONPath; `None` when the path is invalid or leads nowhere.
fn eval_json_path<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = obj;
    for step in parse_json_path(path)? {
        cur = match step {
            Step::Field(f) => cur
                .as_object()
                .and_then(|m: &Map<String, Value>| m.get(&f))?,
            Step::Index(n) => cur.as_array()?.get(n)?,
            Step::All => cur.as_array()?.first()?,
            Step::Filter(k, v) => cur.as_array()?.iter().find(|e| match e.get(&k) {
                Some(Value::String(x)) => *x == v,
                Some(other) => serde_json::from_str::<Value>(&v).is_ok_and(|x| x == *other),
                None => false,
            })?,
        };
    }
    Some(cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Registry, builtin_resources};

    fn now() -> DateTime<Utc> {
        parse_time("2025-01-01T12:00:00Z").unwrap()
    }

    fn info(group: &str, kind: &str) -> ResourceInfo {
        builtin_resources()
            .into_iter()
            .find(|i| i.group == group && i.kind == kind)
            .unwrap()
    }

    fn headers(t: &Value) -> Vec<(String, i64)> {
        t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_string(),
                    c["priority"].as_i64().unwrap(),
                )
            })
            .collect()
    }

    fn names(t: &Value) -> Vec<String> {
        headers(t).into_iter().map(|(n, _)| n).collect()
    }

    fn table1(group: &str, kind: &str, obj: &Value) -> Value {
        to_table(
            &info(group, kind),
            &[obj],
            true,
            "Metadata",
            json!({}),
            now(),
        )
    }

    fn cells(t: &Value) -> &Vec<Value> {
        t["rows"][0]["cells"].as_array().unwrap()
    }

    #[test]
    fn accept_detection() {
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
        ));
        assert!(wants_table(
            "application/json; as=Table; v=v1beta1; g=meta.k8s.io"
        ));
        assert!(!wants_table("application/json"));
        assert!(!wants_table(
            "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"
        ));
        assert!(!wants_table("application/json;as=Table;v=v2;g=meta.k8s.io"));
    }

    #[test]
    fn durations() {
        let d = chrono::TimeDelta::seconds;
        assert_eq!(human_duration(d(-5)), "<invalid>");
        assert_eq!(human_duration(d(-1)), "0s");
        assert_eq!(human_duration(d(5)), "5s");
        assert_eq!(human_duration(d(119)), "119s");
        assert_eq!(human_duration(d(192)), "3m12s");
        assert_eq!(human_duration(d(300)), "5m");
        assert_eq!(human_duration(d(600)), "10m");
        assert_eq!(human_duration(d(179 * 60)), "179m");
        assert_eq!(human_duration(d(4 * 3600 + 120)), "4h2m");
        assert_eq!(human_duration(d(5 * 3600)), "5h");
        assert_eq!(human_duration(d(30 * 3600)), "30h");
        assert_eq!(human_duration(d(3 * 86400)), "3d");
        assert_eq!(human_duration(d(3 * 86400 + 7200)), "3d2h");
        assert_eq!(human_duration(d(100 * 86400)), "100d");
        assert_eq!(human_duration(d(800 * 86400)), "2y70d");
        assert_eq!(human_duration(d(3650 * 86400)), "10y");
    }

    fn lb_service(ingress: Value) -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "default", "creationTimestamp": "2025-01-01T11:56:48Z", "resourceVersion": "7"},
            "spec": {
                "type": "LoadBalancer",
                "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                "selector": {"b": "2", "a": "1"},
                "ports": [
                    {"port": 80, "nodePort": 31234, "protocol": "TCP"},
                    {"port": 53, "nodePort": 31234, "protocol": "UDP"}
                ]
            },
            "status": {"loadBalancer": {"ingress": ingress}}
        })
    }

    #[test]
    fn service_columns_and_cells() {
        let t = table1("", "Service", &lb_service(json!([])));
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(
            headers(&t),
            [
                ("Name".to_string(), 0),
                ("Type".into(), 0),
                ("Cluster-IP".into(), 0),
                ("External-IP".into(), 0),
                ("Port(s)".into(), 0),
                ("Age".into(), 0),
                ("Selector".into(), 1)
            ]
        );
        assert_eq!(t["columnDefinitions"][0]["format"], "name");
        assert_eq!(
            cells(&t),
            &vec![
                json!("web"),
                json!("LoadBalancer"),
                json!("10.96.0.10"),
                json!("<pending>"),
                json!("80:31234/TCP,53:31234/UDP"),
                json!("3m12s"),
                json!("a=1,b=2"),
            ]
        );
        let obj = &t["rows"][0]["object"];
        assert_eq!(obj["kind"], "PartialObjectMetadata");
        assert_eq!(obj["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(obj["metadata"]["namespace"], "default");
        assert!(obj.get("spec").is_none());

        let t = table1(
            "",
            "Service",
            &lb_service(json!([{"ip": "192.0.2.1"}, {"hostname": "lb.example.com"}])),
        );
        assert_eq!(cells(&t)[3], "192.0.2.1,lb.example.com");
    }

    #[test]
    fn cluster_ip_service_defaults() {
        let svc = json!({"metadata": {"name": "x"}, "spec": {"clusterIP": "None"}});
        let t = table1("", "Service", &svc);
        let c = cells(&t);
        assert_eq!(c[1], "ClusterIP");
        assert_eq!(c[2], "None");
        assert_eq!(c[3], "<none>");
        assert_eq!(c[4], "<none>");
        assert_eq!(c[5], "<unknown>");
        assert_eq!(c[6], "<none>");
        let svc = json!({"metadata": {"name": "x"}, "spec": {"type": "NodePort", "ports": [{"port": 443, "nodePort": 30443}], "externalIPs": ["1.2.3.4"]}});
        let c = table1("", "Service", &svc)["rows"][0]["cells"].clone();
        assert_eq!(c[3], "1.2.3.4");
        assert_eq!(c[4], "443:30443/TCP");
    }

    #[test]
    fn node_columns_and_status() {
        let node = json!({
            "metadata": {"name": "n1", "creationTimestamp": "2024-12-29T12:00:00Z",
                "labels": {"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/worker": ""}},
            "spec": {"unschedulable": true},
            "status": {
                "conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.5"}],
                "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Mock OS"}
            }
        });
        let t = table1("", "Node", &node);
        assert_eq!(
            names(&t),
            [
                "Name",
                "Status",
                "Roles",
                "Age",
                "Version",
                "Internal-IP",
                "External-IP",
                "OS-Image",
                "Kernel-Version",
                "Container-Runtime"
            ]
        );
        assert_eq!(
            cells(&t),
            &vec![
                json!("n1"),
                json!("Ready,SchedulingDisabled"),
                json!("control-plane,worker"),
                json!("3d"),
                json!("v1.33.0"),
                json!("10.0.0.5"),
                json!("<none>"),
                json!("Mock OS"),
                json!("<unknown>"),
                json!("<unknown>"),
            ]
        );
        let nr = json!({"metadata": {"name": "n2"}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}});
        assert_eq!(cells(&table1("", "Node", &nr))[1], "NotReady");
        assert_eq!(cells(&table1("", "Node", &nr))[2], "<none>");
    }

    #[test]
    fn pod_cells_basic() {
        let pod = json!({
            "metadata": {"name": "p", "creationTimestamp": "2025-01-01T11:59:55Z"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"},
            "status": {
                "phase": "Running", "podIP": "10.244.0.3",
                "containerStatuses": [
                    {"name": "a", "ready": true, "restartCount": 1, "state": {"running": {}}},
                    {"name": "b", "ready": false, "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                     "lastState": {"terminated": {"finishedAt": "2025-01-01T11:58:00Z"}}}
                ]
            }
        });
        let t = table1("", "Pod", &pod);
        assert_eq!(
            headers(&t),
            [
                ("Name".to_string(), 0),
                ("Ready".into(), 0),
                ("Status".into(), 0),
                ("Restarts".into(), 0),
                ("Age".into(), 0),
                ("IP".into(), 1),
                ("Node".into(), 1),
                ("Nominated Node".into(), 1),
                ("Readiness Gates".into(), 1)
            ]
        );
        assert_eq!(
            cells(&t),
            &vec![
                json!("p"),
                json!("1/2"),
                json!("CrashLoopBackOff"),
                json!("3 (2m ago)"),
                json!("5s"),
                json!("10.244.0.3"),
                json!("n1"),
                json!("<none>"),
                json!("<none>"),
            ]
        );
        let pending = json!({"metadata": {"name": "q", "deletionTimestamp": "x"}, "spec": {"containers": [{}]}, "status": {"phase": "Pending"}});
        let c = table1("", "Pod", &pending)["rows"][0]["cells"].clone();
        assert_eq!(c[1], "0/1");
        assert_eq!(c[2], "Terminating");
        assert_eq!(c[3], "0");
    }

    #[test]
    fn small_kinds() {
        let ns = json!({"metadata": {"name": "default"}, "status": {"phase": "Active"}});
        let t = table1("", "Namespace", &ns);
        assert_eq!(names(&t), ["Name", "Status", "Age"]);
        assert_eq!(cells(&t)[1], "Active");

        let cm = json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": ""}});
        let t = table1("", "ConfigMap", &cm);
        assert_eq!(names(&t), ["Name", "Data", "Age"]);
        assert_eq!(cells(&t)[1], 3);

        let sec = json!({"metadata": {"name": "s"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}});
        let t = table1("", "Secret", &sec);
        assert_eq!(names(&t), ["Name", "Type", "Data", "Age"]);
        assert_eq!(cells(&t)[1], "kubernetes.io/tls");
        assert_eq!(cells(&t)[2], 2);

        let lease = json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "berth-0"}});
        let t = table1("coordination.k8s.io", "Lease", &lease);
        assert_eq!(names(&t), ["Name", "Holder", "Age"]);
        assert_eq!(cells(&t)[1], "berth-0");

        let crd = json!({"metadata": {"name": "widgets.example.com", "creationTimestamp": "2025-01-01T10:00:00Z"}});
        let t = table1("apiextensions.k8s.io", "CustomResourceDefinition", &crd);
        assert_eq!(names(&t), ["Name", "Created At"]);
        assert_eq!(t["columnDefinitions"][1]["type"], "date");
        assert_eq!(cells(&t)[1], "2025-01-01T10:00:00Z");

        let sa =
            json!({"metadata": {"name": "default", "creationTimestamp": "2025-01-01T11:00:00Z"}});
        let t = table1("", "ServiceAccount", &sa);
        assert_eq!(cells(&t), &vec![json!("default"), json!(0), json!("60m")]);
    }

    #[test]
    fn endpointslice_cells_format() {
        let es = json!({
            "metadata": {"name": "web-abc"},
            "addressType": "IPv4",
            "ports": [{"port": 80, "name": "http"}, {"name": "dns"}],
            "endpoints": [
                {"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]},
                {"addresses": ["10.0.0.3"]}, {"addresses": ["10.0.0.4", "10.0.0.5"]}
            ]
        });
        let t = table1("discovery.k8s.io", "EndpointSlice", &es);
        assert_eq!(
            names(&t),
            ["Name", "AddressType", "Ports", "Endpoints", "Age"]
        );
        let c = cells(&t);
        assert_eq!(c[1], "IPv4");
        assert_eq!(c[2], "80,dns");
        assert_eq!(c[3], "10.0.0.1,10.0.0.2,10.0.0.3 + 2 more...");
        let empty = json!({"metadata": {"name": "e"}, "addressType": "IPv4"});
        let c = table1("discovery.k8s.io", "EndpointSlice", &empty)["rows"][0]["cells"].clone();
        assert_eq!(c[2], "<unset>");
        assert_eq!(c[3], "<unset>");
    }

    #[test]
    fn endpoints_cells_format() {
        let ep = json!({"metadata": {"name": "e"}, "subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}], "ports": [{"port": 80}]}]});
        assert_eq!(
            cells(&table1("", "Endpoints", &ep))[1],
            "10.0.0.1:80,[fd00::1]:80"
        );
    }

    #[test]
    fn core_event_cells() {
        let ev = json!({
            "metadata": {"name": "web.1"},
            "involvedObject": {"kind": "Service", "name": "web"},
            "type": "Normal", "reason": "EnsuringLoadBalancer",
            "message": "Ensuring load balancer ",
            "firstTimestamp": "2025-01-01T11:50:00Z", "lastTimestamp": "2025-01-01T11:59:30Z",
            "count": 3, "source": {"component": "berth"}
        });
        let t = table1("", "Event", &ev);
        assert_eq!(
            headers(&t),
            [
                ("Last Seen".to_string(), 0),
                ("Type".into(), 0),
                ("Reason".into(), 0),
                ("Object".into(), 0),
                ("Subobject".into(), 1),
                ("Source".into(), 1),
                ("Message".into(), 0),
                ("First Seen".into(), 1),
                ("Count".into(), 1),
                ("Name".into(), 1)
            ]
        );
        assert_eq!(
            cells(&t),
            &vec![
                json!("30s"),
                json!("Normal"),
                json!("EnsuringLoadBalancer"),
                json!("service/web"),
                json!(""),
                json!("berth"),
                json!("Ensuring load balancer"),
                json!("10m"),
                json!(3),
                json!("web.1"),
            ]
        );
    }

    #[test]
    fn events_k8s_io_event_cells() {
        let ev = json!({
            "metadata": {"name": "e"},
            "regarding": {"kind": "Node", "name": "n1"},
            "type": "Warning", "reason": "R", "note": "hi",
            "eventTime": "2025-01-01T11:59:00.000000Z",
            "reportingController": "berth", "reportingInstance": "berth-0"
        });
        let t = table1("events.k8s.io", "Event", &ev);
        let c = cells(&t);
        assert_eq!(c[0], "60s");
        assert_eq!(c[3], "node/n1");
        assert_eq!(c[5], "berth, berth-0");
        assert_eq!(c[6], "hi");
        assert_eq!(c[8], 1);
    }

    #[test]
    fn workloads_and_rbac() {
        let d = json!({
            "metadata": {"name": "d"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "x"}},
                "template": {"spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
        });
        let t = table1("apps", "Deployment", &d);
        assert_eq!(
            names(&t),
            [
                "Name",
                "Ready",
                "Up-to-date",
                "Available",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        let c = cells(&t);
        assert_eq!(c[1], "2/3");
        assert_eq!(c[2], 3);
        assert_eq!(c[5], "c");
        assert_eq!(c[6], "nginx");
        assert_eq!(c[7], "app=x");

        let rb = json!({"metadata": {"name": "rb"}, "roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "ServiceAccount", "name": "berth", "namespace": "kube-system"}, {"kind": "User", "name": "alice"}]});
        let t = table1("rbac.authorization.k8s.io", "RoleBinding", &rb);
        assert_eq!(
            names(&t),
            ["Name", "Role", "Age", "Users", "Groups", "ServiceAccounts"]
        );
        let c = cells(&t);
        assert_eq!(c[1], "ClusterRole/view");
        assert_eq!(c[3], "alice");
        assert_eq!(c[5], "kube-system/berth");

        let pdb = json!({"metadata": {"name": "p"}, "spec": {"minAvailable": "50%"}, "status": {"disruptionsAllowed": 1}});
        let c = table1("policy", "PodDisruptionBudget", &pdb)["rows"][0]["cells"].clone();
        assert_eq!(c[1], "50%");
        assert_eq!(c[2], "N/A");
        assert_eq!(c[3], 1);
    }

    #[test]
    fn fallback_name_age() {
        let mut i = info("", "Service");
        i.kind = "Other".into();
        let o = json!({"metadata": {"name": "o", "creationTimestamp": "2025-01-01T11:59:00Z"}});
        let t = to_table(&i, &[&o], true, "None", json!({}), now());
        assert_eq!(names(&t), ["Name", "Age"]);
        assert_eq!(cells(&t), &vec![json!("o"), json!("60s")]);
        assert!(t["rows"][0].get("object").is_none());
    }

    fn widget_registry(columns: Value) -> ResourceInfo {
        let reg = Registry::with_builtins();
        let crd = json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget"},
                "versions": [{"name": "v1", "served": true, "storage": true, "additionalPrinterColumns": columns}]}
        });
        reg.install_crd(&crd).unwrap().remove(0)
    }

    #[test]
    fn custom_resource_columns() {
        let info = widget_registry(json!([
            {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
            {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
            {"name": "First", "type": "string", "jsonPath": ".spec.items[*].name", "priority": 1},
            {"name": "Zero", "type": "string", "jsonPath": ".spec.items[0].name"},
            {"name": "App", "type": "string", "jsonPath": ".metadata.labels['app.kubernetes.io/name']"},
            {"name": "Missing", "type": "string", "jsonPath": ".spec.nope"},
            {"name": "Created", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
        ]));
        let w = json!({
            "metadata": {"name": "w", "creationTimestamp": "2025-01-01T11:00:00Z", "labels": {"app.kubernetes.io/name": "demo"}},
            "spec": {"size": 3.0, "items": [{"name": "a"}, {"name": "b"}]},
            "status": {"conditions": [{"type": "Synced", "status": "False"}, {"type": "Ready", "status": "True"}]}
        });
        let t = to_table(
            &info,
            &[&w],
            true,
            "Object",
            json!({"resourceVersion": "9"}),
            now(),
        );
        assert_eq!(
            names(&t),
            [
                "Name", "Size", "Ready", "First", "Zero", "App", "Missing", "Created"
            ]
        );
        assert_eq!(t["columnDefinitions"][3]["priority"], 1);
        assert_eq!(
            t["columnDefinitions"][1]["description"],
            "Custom resource definition column (in JSONPath format): .spec.size"
        );
        assert_eq!(
            cells(&t),
            &vec![
                json!("w"),
                json!(3),
                json!("True"),
                json!("a"),
                json!("a"),
                json!("demo"),
                Value::Null,
                json!("60m"),
            ]
        );
        assert_eq!(t["metadata"]["resourceVersion"], "9");
        assert_eq!(t["rows"][0]["object"]["spec"]["size"], 3.0);
    }

    #[test]
    fn custom_resource_default_age() {
        let info = widget_registry(json!([]));
        let w = json!({"metadata": {"name": "w", "creationTimestamp": "2025-01-01T11:59:58Z"}});
        let t = to_table(&info, &[&w], true, "Metadata", json!({}), now());
        assert_eq!(names(&t), ["Name", "Age"]);
        assert_eq!(t["columnDefinitions"][1]["type"], "date");
        assert_eq!(cells(&t), &vec![json!("w"), json!("2s")]);
    }

    #[test]
    fn watch_event_without_headers() {
        let svc = lb_service(json!([]));
        let t = to_table(
            &info("", "Service"),
            &[&svc],
            false,
            "Metadata",
            Value::Null,
            now(),
        );
        assert_eq!(t["columnDefinitions"], json!([]));
        assert_eq!(t["metadata"], json!({}));
        assert_eq!(t["rows"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn json_path_parsing() {
        assert_eq!(
            parse_json_path("{.a[0].b}").unwrap(),
            vec![
                Step::Field("a".into()),
                Step::Index(0),
                Step::Field("b".into())
            ]
        );
        assert!(parse_json_path(".a[").is_none());
        assert!(parse_json_path("a.b").is_none());
    }
}
