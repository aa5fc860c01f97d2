//! What a Service's owner sees: `status.loadBalancer.ingress` and berth's condition.

use berth_providers::{IpMode, LoadBalancerStatus};
use k8s_openapi::api::core::v1::Service;
use serde_json::{Value, json};

/// The condition type `kubectl wait --for=condition=berth.io/LoadBalancerReady` waits for.
pub use berth_api::names::LOAD_BALANCER_READY as CONDITION;

/// The ingress entries for a provider's status, with the Service's ports.
pub fn ingress(status: &LoadBalancerStatus, svc: &Service) -> Vec<Value> {
    let ports: Vec<Value> = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .map(|ps| {
            ps.iter()
                .map(
                    |p| json!({"port": p.port, "protocol": p.protocol.as_deref().unwrap_or("TCP")}),
                )
                .collect()
        })
        .unwrap_or_default();
    status
        .ingress
        .iter()
        .map(|i| {
            let mut v = json!({
                "ipMode": match i.ip_mode { IpMode::Vip => "VIP", IpMode::Proxy => "Proxy" },
                "ports": ports,
            });
            if let Some(ip) = i.ip {
                v["ip"] = json!(ip.to_string());
            }
            if let Some(h) = &i.hostname {
                v["hostname"] = json!(h);
            }
            v
        })
        .collect()
}

/// The Service's current `status.loadBalancer.ingress`, as JSON.
pub fn current_ingress(svc: &Service) -> Vec<Value> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|is| {
            is.iter()
                .map(|i| serde_json::to_value(i).unwrap_or_default())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the Service already shows a load balancer berth ensured for its current
/// generation: an address, and berth's condition True with reason `Ensured` observed at
/// `metadata.generation`. A spec change since (a new generation) or a failure shown makes it
/// false.
pub fn shows_ensured(svc: &Service) -> bool {
    let generation = svc.metadata.generation.unwrap_or(0);
    !current_ingress(svc).is_empty()
        && svc
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.type_ == CONDITION
                        && c.status == "True"
                        && c.reason == berth_api::names::condition_reasons::ENSURED
                        && c.observed_generation.unwrap_or(0) == generation
                })
            })
}

/// The Service's conditions with berth's set to (status, reason, message); the transition
/// time moves only when the status does. None when nothing would change.
pub fn conditions_with(
    svc: &Service,
    status: bool,
    reason: &str,
    message: &str,
) -> Option<Vec<Value>> {
    let existing: Vec<Value> = svc
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|cs| {
            cs.iter()
                .map(|c| serde_json::to_value(c).unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    let want_status = if status { "True" } else { "False" };
    let generation = svc.metadata.generation.unwrap_or(0);
    let mine = existing.iter().find(|c| c["type"] == CONDITION);
    if let Some(c) = mine
        && c["status"] == want_status
        && c["reason"] == reason
        && c["message"] == message
        && c["observedGeneration"].as_i64().unwrap_or(0) == generation
    {
        return None;
    }
    let transition = match mine {
        Some(c) if c["status"] == want_status => c["lastTransitionTime"].clone(),
        _ => json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
    };
    let mut out: Vec<Value> = existing
        .into_iter()
        .filter(|c| c["type"] != CONDITION)
        .collect();
    out.push(json!({
        "type": CONDITION,
        "status": want_status,
        "reason": reason,
        "message": truncate(message, 32_000),
        "observedGeneration": generation,
        "lastTransitionTime": transition,
    }));
    Some(out)
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Builds a status merge patch, or None when both parts are already as wanted.
pub fn status_patch(
    svc: &Service,
    ingress: Option<Vec<Value>>,
    conditions: Option<Vec<Value>>,
) -> Option<Value> {
    let ingress = ingress.filter(|i| *i != current_ingress(svc));
    if ingress.is_none() && conditions.is_none() {
        return None;
    }
    let mut status = json!({});
    if let Some(i) = ingress {
        status["loadBalancer"] = if i.is_empty() {
            json!({"ingress": null})
        } else {
            json!({"ingress": i})
        };
    }
    if let Some(c) = conditions {
        status["conditions"] = json!(c);
    }
    Some(json!({"status": status}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::tests::SvcB;
    use berth_providers::Ingress;

    #[test]
    fn ingress_carries_ip_mode_and_ports_and_skips_no_op_patches() {
        let mut svc = SvcB::lb("web")
            .port(80, "TCP", 30080)
            .port(53, "UDP", 30080)
            .svc();
        let st = LoadBalancerStatus {
            ingress: vec![Ingress {
                ip: Some("127.1.200.1".parse().unwrap()),
                hostname: None,
                ip_mode: IpMode::Proxy,
            }],
        };
        let ing = ingress(&st, &svc);
        assert_eq!(
            ing,
            vec![json!({"ip": "127.1.200.1", "ipMode": "Proxy",
                "ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]})]
        );
        let conds = conditions_with(&svc, true, "Ensured", "ok").unwrap();
        let patch = status_patch(&svc, Some(ing.clone()), Some(conds.clone())).unwrap();
        // Apply it to the object and check that the same patch is then a no-op.
        let mut v = serde_json::to_value(&svc).unwrap();
        v["status"] = patch["status"].clone();
        svc = serde_json::from_value(v).unwrap();
        assert!(conditions_with(&svc, true, "Ensured", "ok").is_none());
        assert!(status_patch(&svc, Some(ing), None).is_none());
        // What a restarted controller finds: shown as ensured, until the spec moves on.
        assert!(shows_ensured(&svc));
        svc.metadata.generation = Some(svc.metadata.generation.unwrap_or(0) + 1);
        assert!(
            !shows_ensured(&svc),
            "a newer generation is not shown ensured"
        );
        svc.metadata.generation = Some(svc.metadata.generation.unwrap() - 1);
        let mut bare = svc.clone();
        bare.status.as_mut().unwrap().load_balancer = None;
        assert!(!shows_ensured(&bare), "no address, not ensured");
        let failing = conditions_with(&svc, false, "SyncFailed", "boom").unwrap();
        let mut v = serde_json::to_value(&svc).unwrap();
        v["status"]["conditions"] = json!(failing);
        assert!(!shows_ensured(&serde_json::from_value(v).unwrap()));
        let flipped = conditions_with(&svc, false, "SyncFailed", "boom").unwrap();
        assert_eq!(flipped.len(), 1);
        assert_eq!(flipped[0]["status"], "False");
    }
}
