//! The status the kubelet reports for a running pod: phase, addresses, conditions and
//! container statuses, with readiness following the node and the container ports that
//! could be bound.

use super::kubelet::Proto;
use super::{array, uid_of};
use serde_json::{Map, Value, json};
use std::net::Ipv4Addr;

/// What the kubelet knows about a running pod besides the pod object itself.
#[derive(Debug, Clone, Copy)]
pub struct Running<'a> {
    pub pod_ip: Ipv4Addr,
    pub host_ip: Ipv4Addr,
    pub node_ready: bool,
    /// Declared container ports that could not be bound: their containers are not ready.
    pub unbound: &'a [(Proto, u16)],
}

fn set_condition(
    conds: &mut Vec<Value>,
    type_: &str,
    ok: bool,
    why: Option<(&str, &str)>,
    now: &str,
) {
    let status = if ok { "True" } else { "False" };
    let since = conds
        .iter()
        .find(|c| c["type"] == type_ && c["status"] == status)
        .and_then(|c| c["lastTransitionTime"].as_str())
        .unwrap_or(now)
        .to_string();
    let mut c = json!({"type": type_, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
    if let Some((reason, message)) = why {
        c["reason"] = json!(reason);
        if !message.is_empty() {
            c["message"] = json!(message);
        }
    }
    match conds.iter_mut().find(|c| c["type"] == type_) {
        Some(old) => *old = c,
        None => conds.push(c),
    }
}

fn hash_hex(s: &str) -> String {
    // FNV-1a, twice with different seeds: a stable, plausible-looking digest.
    let fnv = |seed: u64| {
        s.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    };
    format!(
        "{:016x}{:016x}{:016x}{:016x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x8422_2325_cbf2_9ce4),
        fnv(0x1234_5678_9abc_def0),
        fnv(0x0fed_cba9_8765_4321)
    )
}

/// Whether a container declares one of `ports`.
pub fn declares_any(container: &Value, ports: &[(Proto, u16)]) -> bool {
    array(container, "/ports").iter().any(|p| {
        let port = p["containerPort"]
            .as_u64()
            .and_then(|n| u16::try_from(n).ok());
        match (Proto::of(p), port) {
            (Some(proto), Some(port)) => ports.contains(&(proto, port)),
            _ => false,
        }
    })
}

/// The names of the pod's containers that are not ready.
pub fn unready_containers(pod: &Value, unbound: &[(Proto, u16)]) -> Vec<String> {
    array(pod, "/spec/containers")
        .iter()
        .filter(|c| declares_any(c, unbound))
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect()
}

fn container_statuses(
    pod: &Value,
    spec_path: &str,
    status_key: &str,
    init: bool,
    unready: &[String],
    now: &str,
) -> Vec<Value> {
    let old = array(pod, &format!("/status/{status_key}"));
    let uid = uid_of(pod);
    array(pod, spec_path)
        .iter()
        .map(|c| {
            let name = c["name"].as_str().unwrap_or("");
            let image = c["image"].as_str().unwrap_or("");
            let prev = old.iter().find(|o| o["name"] == name);
            let started = prev
                .and_then(|p| {
                    p.pointer("/state/running/startedAt")
                        .or_else(|| p.pointer("/state/terminated/startedAt"))
                })
                .and_then(Value::as_str)
                .unwrap_or(now)
                .to_string();
            let state = if init {
                json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": started, "finishedAt": started, "containerID": format!("mock://{}", hash_hex(&format!("{uid}/{name}")))}})
            } else {
                json!({"running": {"startedAt": started}})
            };
            json!({
                "name": name,
                "image": image,
                "imageID": format!("mock://sha256:{}", hash_hex(image)),
                "containerID": format!("mock://{}", hash_hex(&format!("{uid}/{name}"))),
                "ready": init || !unready.iter().any(|u| u == name),
                "started": !init,
                "restartCount": 0,
                "state": state,
                "lastState": {},
            })
        })
        .collect()
}

/// The status the kubelet reports for a running pod (timestamps kept from `pod`'s current
/// status where nothing changed).
pub fn running_status(pod: &Value, r: Running<'_>, now: &str) -> Value {
    let mut status: Map<String, Value> = pod
        .get("status")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    status.insert("phase".into(), json!("Running"));
    status.remove("reason");
    status.remove("message");
    status.remove("nominatedNodeName");
    let (pod_ip, host_ip) = (r.pod_ip.to_string(), r.host_ip.to_string());
    status.insert("hostIP".into(), json!(host_ip));
    status.insert("hostIPs".into(), json!([{"ip": host_ip}]));
    status.insert("podIP".into(), json!(pod_ip));
    status.insert("podIPs".into(), json!([{"ip": pod_ip}]));
    if status.get("startTime").and_then(Value::as_str).is_none() {
        status.insert("startTime".into(), json!(now));
    }
    status
        .entry("qosClass")
        .or_insert_with(|| json!("BestEffort"));
    let mut conds: Vec<Value> = status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let unready = unready_containers(pod, r.unbound);
    let not_ready_msg = format!("containers with unready status: [{}]", unready.join(" "));
    let containers_why = (!unready.is_empty()).then_some(("ContainersNotReady", &*not_ready_msg));
    let ready_why = if !r.node_ready {
        Some(("NodeNotReady", ""))
    } else {
        containers_why
    };
    set_condition(&mut conds, "PodReadyToStartContainers", true, None, now);
    set_condition(&mut conds, "Initialized", true, None, now);
    set_condition(&mut conds, "Ready", ready_why.is_none(), ready_why, now);
    set_condition(
        &mut conds,
        "ContainersReady",
        unready.is_empty(),
        containers_why,
        now,
    );
    set_condition(&mut conds, "PodScheduled", true, None, now);
    let order = [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    ];
    conds.sort_by_key(|c| {
        order
            .iter()
            .position(|o| c["type"] == *o)
            .unwrap_or(order.len())
    });
    status.insert("conditions".into(), Value::Array(conds));
    status.insert(
        "containerStatuses".into(),
        Value::Array(container_statuses(
            pod,
            "/spec/containers",
            "containerStatuses",
            false,
            &unready,
            now,
        )),
    );
    if !array(pod, "/spec/initContainers").is_empty() {
        status.insert(
            "initContainerStatuses".into(),
            Value::Array(container_statuses(
                pod,
                "/spec/initContainers",
                "initContainerStatuses",
                true,
                &[],
                now,
            )),
        );
    }
    Value::Object(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Value {
        json!({
            "metadata": {"name": "web-1", "namespace": "default", "uid": "u1"},
            "spec": {
                "nodeName": "node-1",
                "containers": [
                    {"name": "c", "image": "nginx", "ports": [
                        {"name": "http", "containerPort": 8080},
                        {"name": "dns", "containerPort": 5353, "protocol": "UDP"},
                    ]},
                    {"name": "side", "image": "busybox", "ports": [{"containerPort": 9090, "protocol": "TCP"}]},
                ],
            },
            "status": {"phase": "Pending", "qosClass": "BestEffort"},
        })
    }

    fn run(node_ready: bool, unbound: &[(Proto, u16)]) -> Running<'_> {
        Running {
            pod_ip: Ipv4Addr::new(127, 4, 16, 1),
            host_ip: Ipv4Addr::new(127, 4, 1, 1),
            node_ready,
            unbound,
        }
    }

    fn condition(status: &Value, type_: &str) -> Value {
        status["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == type_).cloned())
            .unwrap_or_default()
    }

    #[test]
    fn running_status_is_complete_and_stable() {
        let s1 = running_status(&pod(), run(true, &[]), "t1");
        assert_eq!(s1["phase"], "Running");
        assert_eq!(s1["podIP"], "127.4.16.1");
        assert_eq!(s1["hostIPs"][0]["ip"], "127.4.1.1");
        assert_eq!(s1["startTime"], "t1");
        let conds = s1["conditions"].as_array().cloned().unwrap_or_default();
        assert_eq!(conds.len(), 5);
        assert!(conds.iter().all(|c| c["status"] == "True"));
        let cs = s1["containerStatuses"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0]["ready"], true);
        assert!(
            cs[0]["containerID"]
                .as_str()
                .is_some_and(|s| s.starts_with("mock://"))
        );
        assert!(cs[0]["state"]["running"]["startedAt"] == "t1");

        // Recomputing later changes nothing.
        let mut p = pod();
        p["status"] = s1.clone();
        assert_eq!(running_status(&p, run(true, &[]), "t2"), s1);

        // Node not ready: Ready goes False (with a new transition time), the rest stays.
        let s2 = running_status(&p, run(false, &[]), "t3");
        let ready = condition(&s2, "Ready");
        assert_eq!(ready["status"], "False");
        assert_eq!(ready["reason"], "NodeNotReady");
        assert_eq!(ready["lastTransitionTime"], "t3");
        assert_eq!(condition(&s2, "ContainersReady")["status"], "True");
        assert_eq!(s2["startTime"], "t1");
    }

    #[test]
    fn an_unbound_port_makes_its_container_and_the_pod_unready() {
        let mut p = pod();
        p["status"] = running_status(&p, run(true, &[]), "t1");
        let s = running_status(&p, run(true, &[(Proto::Tcp, 9090)]), "t2");
        for type_ in ["Ready", "ContainersReady"] {
            let c = condition(&s, type_);
            assert_eq!(c["status"], "False", "{type_}");
            assert_eq!(c["reason"], "ContainersNotReady", "{type_}");
            assert_eq!(c["message"], "containers with unready status: [side]");
            assert_eq!(c["lastTransitionTime"], "t2");
        }
        let ready: Vec<(Value, Value)> = s["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| (c["name"].clone(), c["ready"].clone()))
            .collect();
        assert_eq!(
            ready,
            vec![(json!("c"), json!(true)), (json!("side"), json!(false))]
        );
        // The same port number over UDP is another port: nothing declares it.
        let s = running_status(&p, run(true, &[(Proto::Udp, 9090)]), "t2");
        assert_eq!(condition(&s, "Ready")["status"], "True");
        // Once bound, Ready again; a node that is not ready wins the reason.
        let s = running_status(&p, run(false, &[(Proto::Udp, 5353)]), "t3");
        assert_eq!(condition(&s, "Ready")["reason"], "NodeNotReady");
        assert_eq!(
            condition(&s, "ContainersReady")["reason"],
            "ContainersNotReady"
        );
    }
}
