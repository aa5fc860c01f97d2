//! Printers of Nodes and Pods.

use super::format::{age, arr, i, name, or_none, parse_time, s};
use super::*;

/// Node STATUS: `Ready`, `NotReady`, `Unknown`, plus `,SchedulingDisabled`.
pub(super) fn node_status(node: &Value) -> String {
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
pub(super) fn node_roles(node: &Value) -> String {
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
pub(super) fn node_address(node: &Value, type_: &str) -> String {
    let addr = arr(node, "/status/addresses")
        .iter()
        .find(|a| s(a, "/type") == type_)
        .map(|a| s(a, "/address"))
        .unwrap_or_default();
    or_none(addr)
}

pub(super) fn node_cells(_: &ResourceInfo, node: &Value, now: DateTime<Utc>) -> Vec<Value> {
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
pub(super) fn pod_state(pod: &Value, now: DateTime<Utc>) -> (String, String, String) {
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
pub(super) fn pod_readiness_gates(pod: &Value) -> String {
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

pub(super) fn pod_cells(_: &ResourceInfo, pod: &Value, now: DateTime<Utc>) -> Vec<Value> {
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
