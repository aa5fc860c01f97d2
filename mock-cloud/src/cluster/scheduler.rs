//! The scheduler: binds pods without `spec.nodeName` to a Ready node that fits (taints and
//! tolerations, `nodeSelector`, required node affinity, `spec.unschedulable`, pod capacity),
//! fewest pods first. Pods nothing fits stay Pending with `PodScheduled=False`
//! (`Unschedulable`) and are retried whenever nodes or pods change.

use super::{Controller, Kind, Shared, array, is_deleting, label, list, modify, name_of, str_at};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

const SCHEDULER_NAME: &str = "default-scheduler";

/// Whether a pod counts against its node (not finished).
pub fn is_active(pod: &Value) -> bool {
    !matches!(
        str_at(pod, "/status/phase"),
        Some("Succeeded") | Some("Failed")
    )
}

fn tolerates(tol: &Value, taint: &Value) -> bool {
    let effect = tol["effect"].as_str().unwrap_or("");
    if !effect.is_empty() && Some(effect) != taint["effect"].as_str() {
        return false;
    }
    let key = tol["key"].as_str().unwrap_or("");
    let op = tol["operator"].as_str().unwrap_or("Equal");
    if key.is_empty() {
        return op == "Exists";
    }
    if Some(key) != taint["key"].as_str() {
        return false;
    }
    match op {
        "Exists" => true,
        _ => tol["value"].as_str().unwrap_or("") == taint["value"].as_str().unwrap_or(""),
    }
}

/// The first NoSchedule/NoExecute taint of the node the pod does not tolerate.
fn untolerated_taint<'a>(pod: &Value, node: &'a Value) -> Option<&'a Value> {
    let tols = array(pod, "/spec/tolerations");
    array(node, "/spec/taints").iter().find(|t| {
        matches!(t["effect"].as_str(), Some("NoSchedule") | Some("NoExecute"))
            && !tols.iter().any(|tol| tolerates(tol, t))
    })
}

fn expression_matches(expr: &Value, node: &Value) -> bool {
    let Some(key) = expr["key"].as_str() else {
        return false;
    };
    let values: Vec<&str> = array(expr, "/values")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let got = label(node, key);
    let num = |s: Option<&str>| s.and_then(|s| s.parse::<i64>().ok());
    match expr["operator"].as_str() {
        Some("In") => got.is_some_and(|g| values.contains(&g)),
        Some("NotIn") => got.is_none_or(|g| !values.contains(&g)),
        Some("Exists") => got.is_some(),
        Some("DoesNotExist") => got.is_none(),
        Some("Gt") => {
            matches!((num(got), num(values.first().copied())), (Some(a), Some(b)) if a > b)
        }
        Some("Lt") => {
            matches!((num(got), num(values.first().copied())), (Some(a), Some(b)) if a < b)
        }
        _ => false,
    }
}

/// `nodeSelector` and required node affinity.
fn selector_matches(pod: &Value, node: &Value) -> bool {
    if let Some(sel) = pod.pointer("/spec/nodeSelector").and_then(Value::as_object)
        && !sel.iter().all(|(k, v)| label(node, k) == v.as_str())
    {
        return false;
    }
    let terms = array(
        pod,
        "/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms",
    );
    if terms.is_empty() {
        return true;
    }
    terms.iter().any(|term| {
        let exprs = array(term, "/matchExpressions");
        let fields = array(term, "/matchFields");
        (!exprs.is_empty() || !fields.is_empty())
            && exprs.iter().all(|e| expression_matches(e, node))
            && fields.iter().all(|f| {
                f["key"] == "metadata.name"
                    && match f["operator"].as_str() {
                        Some("In") => array(f, "/values")
                            .iter()
                            .any(|v| v == node["metadata"]["name"].as_str().unwrap_or("")),
                        Some("NotIn") => !array(f, "/values")
                            .iter()
                            .any(|v| v == node["metadata"]["name"].as_str().unwrap_or("")),
                        _ => false,
                    }
            })
    })
}

fn pod_capacity(node: &Value) -> usize {
    str_at(node, "/status/allocatable/pods")
        .and_then(|s| s.parse().ok())
        .unwrap_or(110)
}

/// Why a node does not fit a pod, as the scheduler words it (None: it fits).
pub fn misfit(pod: &Value, node: &Value, pods_on_node: usize) -> Option<String> {
    if is_deleting(node) {
        return Some("node(s) were being deleted".into());
    }
    if !super::nodes::is_ready(node) {
        return Some("node(s) had untolerated taint {node.kubernetes.io/not-ready: }".into());
    }
    if node.pointer("/spec/unschedulable") == Some(&json!(true)) {
        let cordon = json!({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"});
        if !array(pod, "/spec/tolerations")
            .iter()
            .any(|t| tolerates(t, &cordon))
        {
            return Some("node(s) were unschedulable".into());
        }
    }
    if let Some(t) = untolerated_taint(pod, node) {
        return Some(format!(
            "node(s) had untolerated taint {{{}: {}}}",
            t["key"].as_str().unwrap_or(""),
            t["value"].as_str().unwrap_or("")
        ));
    }
    if !selector_matches(pod, node) {
        return Some("node(s) didn't match Pod's node affinity/selector".into());
    }
    if pods_on_node >= pod_capacity(node) {
        return Some("Too many pods".into());
    }
    None
}

/// Picks a node for the pod: the fitting one with the fewest pods (then by name), or the
/// Unschedulable message.
pub fn choose_node(
    pod: &Value,
    nodes: &[Arc<Value>],
    counts: &HashMap<String, usize>,
) -> Result<String, String> {
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut best: Option<(usize, &str)> = None;
    for node in nodes {
        let name = name_of(node);
        let n = counts.get(name).copied().unwrap_or(0);
        match misfit(pod, node, n) {
            Some(r) => *reasons.entry(r).or_default() += 1,
            None => {
                if best.is_none_or(|b| (n, name) < b) {
                    best = Some((n, name));
                }
            }
        }
    }
    if let Some((_, name)) = best {
        return Ok(name.to_string());
    }
    let mut msg = format!("0/{} nodes are available", nodes.len());
    if !reasons.is_empty() {
        let parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
        msg.push_str(": ");
        msg.push_str(&parts.join(", "));
    }
    let n = nodes.len();
    msg.push_str(&format!(
        ". preemption: 0/{n} nodes are available: {n} Preemption is not helpful for scheduling."
    ));
    Err(msg)
}

/// Sets `PodScheduled=False` (Unschedulable) with this message. Returns whether it changed.
pub fn set_unschedulable(pod: &mut Value, message: &str, now: &str) -> bool {
    if !pod["status"].is_object() {
        pod["status"] = json!({});
    }
    let status = &mut pod["status"];
    let mut changed = false;
    if status["phase"] != "Pending" {
        status["phase"] = json!("Pending");
        changed = true;
    }
    let conds = &mut status["conditions"];
    if !conds.is_array() {
        *conds = json!([]);
    }
    let Some(conds) = conds.as_array_mut() else {
        return changed;
    };
    let cond = |since: &str| {
        json!({
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": message, "lastProbeTime": null, "lastTransitionTime": since,
        })
    };
    match conds.iter_mut().find(|c| c["type"] == "PodScheduled") {
        Some(c) if c["status"] == "False" && c["reason"] == "Unschedulable" => {
            if c["message"] != message {
                let since = c["lastTransitionTime"].as_str().unwrap_or(now).to_string();
                *c = cond(&since);
                changed = true;
            }
        }
        Some(c) => {
            *c = cond(now);
            changed = true;
        }
        None => {
            conds.push(cond(now));
            changed = true;
        }
    }
    changed
}

fn wants_scheduling(pod: &Value) -> bool {
    str_at(pod, "/spec/nodeName").is_none_or(str::is_empty)
        && !is_deleting(pod)
        && is_active(pod)
        && str_at(pod, "/spec/schedulerName").is_none_or(|s| s == SCHEDULER_NAME)
}

pub(crate) struct Scheduler;

impl Controller for Scheduler {
    const NAME: &'static str = "scheduler";

    fn watches(&self) -> &'static [Kind] {
        &[Kind::Nodes, Kind::Pods]
    }

    async fn reconcile(&mut self, shared: &Arc<Shared>, _resync: bool) {
        let nodes = list(shared, Kind::Nodes);
        let mut pods = list(shared, Kind::Pods);
        let mut counts: HashMap<String, usize> = HashMap::new();
        for p in &pods {
            if let Some(n) = str_at(p, "/spec/nodeName").filter(|n| !n.is_empty())
                && is_active(p)
            {
                *counts.entry(n.to_string()).or_default() += 1;
            }
        }
        pods.retain(|p| wants_scheduling(p));
        pods.sort_by(|a, b| {
            let key = |p: &Value| {
                (
                    str_at(p, "/metadata/creationTimestamp")
                        .unwrap_or("")
                        .to_string(),
                    super::namespace_of(p).to_string(),
                    name_of(p).to_string(),
                )
            };
            key(a).cmp(&key(b))
        });
        for pod in pods {
            let ns = super::namespace_of(&pod).to_string();
            let name = name_of(&pod).to_string();
            match choose_node(&pod, &nodes, &counts) {
                Ok(node) => {
                    let r = modify(shared, Kind::Pods, &ns, &name, false, |p| {
                        if !wants_scheduling(p) {
                            return false;
                        }
                        p["spec"]["nodeName"] = json!(node);
                        true
                    });
                    match r {
                        Ok(Some(_)) => {
                            tracing::debug!(pod = %format!("{ns}/{name}"), node = %node, "bound pod");
                            *counts.entry(node).or_default() += 1;
                        }
                        Ok(None) => {}
                        Err(e) if e.code == 404 => {}
                        Err(e) => {
                            tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "binding pod")
                        }
                    }
                }
                Err(msg) => {
                    let t = super::now();
                    let r = modify(shared, Kind::Pods, &ns, &name, true, |p| {
                        wants_scheduling(p) && set_unschedulable(p, &msg, &t)
                    });
                    if let Err(e) = r
                        && e.code != 404
                    {
                        tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "marking pod unschedulable");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::NodeAlloc;
    use std::net::Ipv4Addr;

    fn node(n: u8) -> Arc<Value> {
        let a = NodeAlloc {
            ip: Ipv4Addr::new(127, 1, 1, n),
            subnet: 15 + n,
        };
        Arc::new(crate::cluster::nodes::node_object(
            &format!("node-{n}"),
            a,
            &BTreeMap::new(),
            None,
            "t",
        ))
    }

    fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "default"}, "spec": spec})
    }

    #[test]
    fn fewest_pods_first_then_name() {
        let nodes = vec![node(1), node(2), node(3)];
        let mut counts = HashMap::new();
        assert_eq!(
            choose_node(&pod(json!({})), &nodes, &counts),
            Ok("node-1".into())
        );
        counts.insert("node-1".to_string(), 2);
        counts.insert("node-2".to_string(), 1);
        assert_eq!(
            choose_node(&pod(json!({})), &nodes, &counts),
            Ok("node-3".into())
        );
    }

    #[test]
    fn honours_selector_taints_readiness_and_cordons() {
        let mut n1 = (*node(1)).clone();
        crate::cluster::nodes::add_taint(&mut n1, "dedicated", Some("db"), "NoSchedule");
        let mut n2 = (*node(2)).clone();
        crate::cluster::nodes::set_ready(&mut n2, false, "t");
        let mut n3 = (*node(3)).clone();
        n3["spec"]["unschedulable"] = json!(true);
        let nodes: Vec<Arc<Value>> = vec![Arc::new(n1), Arc::new(n2), Arc::new(n3)];
        let counts = HashMap::new();
        let err = choose_node(&pod(json!({})), &nodes, &counts).unwrap_err();
        assert!(err.starts_with("0/3 nodes are available:"), "{err}");
        assert!(err.contains("untolerated taint {dedicated: db}"), "{err}");
        assert!(err.contains("node(s) were unschedulable"), "{err}");
        let tolerant = pod(
            json!({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]}),
        );
        assert_eq!(choose_node(&tolerant, &nodes, &counts), Ok("node-1".into()));
        let all = pod(json!({"tolerations": [{"operator": "Exists"}]}));
        assert_eq!(choose_node(&all, &nodes, &counts), Ok("node-1".into()));

        let healthy = vec![node(1), node(2), node(3)];
        let sel = pod(json!({"nodeSelector": {"kubernetes.io/hostname": "node-2"}}));
        assert_eq!(choose_node(&sel, &healthy, &counts), Ok("node-2".into()));
        let zone = pod(
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["zone-c"]}]}]}}}}),
        );
        assert_eq!(choose_node(&zone, &healthy, &counts), Ok("node-3".into()));
        let none = pod(json!({"nodeSelector": {"disk": "ssd"}}));
        let err = choose_node(&none, &healthy, &counts).unwrap_err();
        assert!(
            err.contains("3 node(s) didn't match Pod's node affinity/selector"),
            "{err}"
        );
    }

    #[test]
    fn unschedulable_condition_is_written_once() {
        let mut p = pod(json!({}));
        p["status"] = json!({"phase": "Pending"});
        assert!(set_unschedulable(&mut p, "0/1 nodes are available", "t1"));
        assert!(!set_unschedulable(&mut p, "0/1 nodes are available", "t2"));
        assert!(set_unschedulable(&mut p, "0/2 nodes are available", "t3"));
        let c = &p["status"]["conditions"][0];
        assert_eq!(c["lastTransitionTime"], "t1");
        assert_eq!(c["reason"], "Unschedulable");
    }
}
