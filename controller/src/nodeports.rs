//! NodePorts for Services that set `allocateLoadBalancerNodePorts: false` while their
//! provider sends traffic to NodePorts.
//!
//! berth picks free ports from its view of every Service and writes them with a
//! resourceVersion precondition; the API server rejects a port someone else took meanwhile
//! (422), and berth tries again with a fresh view. Choosing is pure and tested here.

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::ops::RangeInclusive;

#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    #[error("{0}")]
    Exhausted(String),
    #[error("Kubernetes API request failed")]
    Kube(#[source] kube::Error),
}

/// Whether berth must allocate NodePorts for this Service itself.
pub fn needs_allocation(svc: &Service) -> bool {
    let Some(spec) = svc.spec.as_ref() else {
        return false;
    };
    spec.allocate_load_balancer_node_ports == Some(false)
        && spec
            .ports
            .as_ref()
            .is_some_and(|ps| ps.iter().any(|p| p.node_port.unwrap_or(0) == 0))
}

/// Every NodePort (and health-check NodePort) in use by any Service.
pub fn used_ports<'a>(services: impl IntoIterator<Item = &'a Service>) -> HashSet<u16> {
    let mut used = HashSet::new();
    for s in services {
        let Some(spec) = s.spec.as_ref() else {
            continue;
        };
        for p in spec.ports.iter().flatten() {
            if let Some(n) = p.node_port.and_then(|n| u16::try_from(n).ok()) {
                used.insert(n);
            }
        }
        if let Some(n) = spec
            .health_check_node_port
            .and_then(|n| u16::try_from(n).ok())
        {
            used.insert(n);
        }
    }
    used
}

/// Picks a NodePort for each port index lacking one; ports with the same number share one
/// NodePort across protocols, as the API server does. Err when the range is full.
pub fn choose(
    svc: &Service,
    used: &HashSet<u16>,
    range: &RangeInclusive<u16>,
) -> Result<BTreeMap<usize, u16>, String> {
    let ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let mut by_number: BTreeMap<i32, u16> = ports
        .iter()
        .filter_map(|p| {
            p.node_port
                .filter(|n| *n > 0)
                .and_then(|n| u16::try_from(n).ok())
                .map(|n| (p.port, n))
        })
        .collect();
    let mut taken: HashSet<u16> = used.clone();
    let mut out = BTreeMap::new();
    let mut candidates = range.clone();
    for (i, p) in ports.iter().enumerate() {
        if p.node_port.unwrap_or(0) > 0 {
            continue;
        }
        if let Some(n) = by_number.get(&p.port) {
            out.insert(i, *n);
            continue;
        }
        let n = candidates.find(|c| !taken.contains(c)).ok_or_else(|| {
            format!(
                "allocateLoadBalancerNodePorts is false and no NodePort is free in {}-{}; set spec.ports[{i}].nodePort or free one",
                range.start(),
                range.end()
            )
        })?;
        taken.insert(n);
        by_number.insert(p.port, n);
        out.insert(i, n);
    }
    Ok(out)
}

/// Allocates missing NodePorts when needed; returns the updated Service, or None when
/// nothing was needed.
pub async fn ensure_node_ports(
    client: &Client,
    svc: &Service,
    range: &RangeInclusive<u16>,
) -> Result<Option<Service>, AllocError> {
    if !needs_allocation(svc) {
        return Ok(None);
    }
    let all: Api<Service> = Api::all(client.clone());
    let ns = svc.namespace().unwrap_or_else(|| "default".into());
    let api: Api<Service> = Api::namespaced(client.clone(), &ns);
    let mut current = svc.clone();
    for _ in 0..5 {
        let list = all
            .list(&ListParams::default())
            .await
            .map_err(AllocError::Kube)?;
        let used = used_ports(list.items.iter());
        let picks = choose(&current, &used, range).map_err(AllocError::Exhausted)?;
        let mut ops = vec![
            json!({"op": "test", "path": "/metadata/resourceVersion", "value": current.resource_version()}),
        ];
        for (i, n) in &picks {
            ops.push(json!({"op": "add", "path": format!("/spec/ports/{i}/nodePort"), "value": n}));
        }
        let patch: json_patch::Patch = serde_json::from_value(json!(ops))
            .map_err(|e| AllocError::Kube(kube::Error::SerdeError(e)))?;
        match api
            .patch(
                &current.name_any(),
                &PatchParams::default(),
                &Patch::Json::<()>(patch),
            )
            .await
        {
            Ok(updated) => {
                tracing::info!(service = %format!("{ns}/{}", current.name_any()), ports = ?picks, "Allocated NodePorts");
                return Ok(Some(updated));
            }
            // Someone took one of the ports meanwhile: look again.
            Err(kube::Error::Api(s)) if s.code == 422 => {
                current = api
                    .get(&current.name_any())
                    .await
                    .map_err(AllocError::Kube)?;
                if !needs_allocation(&current) {
                    return Ok(Some(current));
                }
            }
            Err(e) => return Err(AllocError::Kube(e)),
        }
    }
    Err(AllocError::Exhausted(
        "NodePorts kept being taken by other Services; will retry".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::tests::SvcB;

    fn no_alloc(b: SvcB) -> Service {
        let mut s = b.svc();
        s.spec.as_mut().unwrap().allocate_load_balancer_node_ports = Some(false);
        s
    }

    #[test]
    fn picks_free_ports_sharing_one_per_port_number() {
        let svc = no_alloc(
            SvcB::lb("a")
                .port(53, "TCP", 0)
                .port(53, "UDP", 0)
                .port(80, "TCP", 0),
        );
        assert!(needs_allocation(&svc));
        let other = SvcB::lb("b").port(80, "TCP", 30000).svc();
        let used = used_ports([&other]);
        let picks = choose(&svc, &used, &(30000..=30010)).unwrap();
        assert_eq!(picks, BTreeMap::from([(0, 30001), (1, 30001), (2, 30002)]));
    }

    #[test]
    fn keeps_existing_and_reports_exhaustion() {
        let svc = no_alloc(SvcB::lb("a").port(53, "TCP", 30005).port(53, "UDP", 0));
        let picks = choose(&svc, &HashSet::new(), &(30000..=30010)).unwrap();
        assert_eq!(picks, BTreeMap::from([(1, 30005)]));
        let full = no_alloc(SvcB::lb("a").port(80, "TCP", 0));
        let used: HashSet<u16> = (30000..=30002).collect();
        let err = choose(&full, &used, &(30000..=30002)).unwrap_err();
        assert!(err.contains("no NodePort is free in 30000-30002"), "{err}");
        assert!(!needs_allocation(&SvcB::lb("a").port(80, "TCP", 0).svc()));
    }
}
