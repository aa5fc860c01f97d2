//! Defaulting (`SetDefaults_Service`), normalisation (strategy / storage) and
//! writing the typed view back into the JSON object.

use super::*;

/// Upstream `SetDefaults_Service` for the v1 API.
pub(super) fn set_defaults(svc: &mut Svc) {
    if svc.affinity.is_empty() {
        svc.affinity = NONE.into();
    }
    if svc.affinity == NONE {
        svc.affinity_config = false;
        svc.affinity_timeout = None;
    }
    if svc.affinity == "ClientIP" && svc.affinity_timeout.is_none() {
        svc.affinity_config = true;
        svc.affinity_timeout = Some(DEFAULT_AFFINITY_TIMEOUT);
    }
    if svc.ty.is_empty() {
        svc.ty = TYPE_CLUSTER_IP.into();
    }
    for p in &mut svc.ports {
        if p.protocol.is_empty() {
            p.protocol = "TCP".into();
        }
        if p.target == TargetPort::Int(0) || p.target == TargetPort::Str(String::new()) {
            p.target = TargetPort::Int(p.port);
        }
    }
    if svc.externally_accessible() && svc.etp.is_empty() {
        svc.etp = CLUSTER.into();
    }
    if svc.itp.is_none() && (svc.needs_node_port() || svc.is(TYPE_CLUSTER_IP)) {
        svc.itp = Some(CLUSTER.into());
    }
    if svc.is(TYPE_LOAD_BALANCER) && svc.alloc_lb_node_ports.is_none() {
        svc.alloc_lb_node_ports = Some(true);
    }
}

/// Keeps `clusterIP` and `clusterIPs` in sync (upstream `normalizeClusterIPs`).
pub(super) fn normalize_cluster_ips(new: &mut Svc, old: Option<&Svc>) {
    let Some(old) = old else {
        if !new.cluster_ip.is_empty() && new.cluster_ips.is_empty() {
            new.cluster_ips = vec![new.cluster_ip.clone()];
        }
        return;
    };
    if !old.cluster_ips.is_empty() && new.cluster_ips.is_empty() && old.cluster_ip == new.cluster_ip
    {
        new.cluster_ips = old.cluster_ips.clone();
    }
    if old.cluster_ip != new.cluster_ip {
        let same_plural = old.cluster_ips == new.cluster_ips;
        if !old.cluster_ip.is_empty() && new.cluster_ip.is_empty() {
            if same_plural {
                new.cluster_ips.clear();
            }
        } else if same_plural {
            new.cluster_ips = vec![new.cluster_ip.clone()];
        }
    }
}

/// Upstream `patchAllocatedValues`: a re-submitted manifest keeps what was allocated.
pub(super) fn patch_allocated_values(new: &mut Svc, old: &Svc) {
    if old.needs_cluster_ip() && new.needs_cluster_ip() {
        if new.cluster_ip.is_empty() {
            new.cluster_ip = old.cluster_ip.clone();
        }
        if new.cluster_ips.is_empty() && !old.cluster_ips.is_empty() {
            new.cluster_ips = old.cluster_ips.clone();
        }
    }
    if old.needs_node_port() && new.needs_node_port() {
        let new_used: HashSet<i64> = new.node_port_numbers().into_iter().collect();
        let used: HashSet<i64> = old
            .node_port_numbers()
            .into_iter()
            .filter(|n| new_used.contains(n))
            .collect();
        let by_name: HashMap<&str, i64> = old
            .ports
            .iter()
            .map(|p| (p.name.as_str(), p.node_port))
            .collect();
        for p in new.ports.iter_mut().filter(|p| p.node_port == 0) {
            let old_val = by_name.get(p.name.as_str()).copied().unwrap_or(0);
            if !used.contains(&old_val) {
                p.node_port = old_val;
            }
        }
    }
    if old.needs_health_check() && new.needs_health_check() && new.hc_node_port == 0 {
        new.hc_node_port = old.hc_node_port;
    }
}

/// Upstream `dropTypeDependentFields`: wipe fields the user did not change when the
/// type no longer uses them (they are released by the allocator).
pub(super) fn drop_type_dependent_fields(new: &mut Svc, old: &Svc) {
    if old.needs_cluster_ip() && !new.needs_cluster_ip() {
        if old.cluster_ip == new.cluster_ip && old.cluster_ips == new.cluster_ips {
            new.cluster_ip.clear();
            new.cluster_ips.clear();
        }
        if old.families == new.families {
            new.families.clear();
        }
        if old.policy == new.policy {
            new.policy = None;
        }
    }
    let old_ports: HashSet<i64> = old.node_port_numbers().into_iter().collect();
    let same_node_ports = new
        .node_port_numbers()
        .iter()
        .all(|n| old_ports.contains(n));
    if old.needs_node_port() && !new.needs_node_port() && same_node_ports {
        new.ports.iter_mut().for_each(|p| p.node_port = 0);
    }
    if old.needs_health_check() && !new.needs_health_check() && old.hc_node_port == new.hc_node_port
    {
        new.hc_node_port = 0;
    }
    if old.is(TYPE_LOAD_BALANCER) && !new.is(TYPE_LOAD_BALANCER) {
        if old.alloc_lb_node_ports.is_some() && old.alloc_lb_node_ports == new.alloc_lb_node_ports {
            new.alloc_lb_node_ports = None;
        }
        if old.lb_class == new.lb_class {
            new.lb_class = None;
        }
        new.clear_lb_status = true;
    }
    if old.externally_accessible() && !new.externally_accessible() && old.etp == new.etp {
        new.etp.clear();
    }
}

/// Upstream `trimFieldsForDualStackDowngrade`.
pub(super) fn trim_for_dual_stack_downgrade(new: &mut Svc, old: &Svc) {
    let old_dual = matches!(old.policy.as_deref(), Some(PREFER_DUAL | REQUIRE_DUAL));
    if old_dual && new.policy.as_deref() == Some(SINGLE_STACK) {
        new.cluster_ips.truncate(1);
        new.families.truncate(1);
    }
}

// ---------------------------------------------------------------------------
// Write-back.
// ---------------------------------------------------------------------------

pub(super) fn set_or_remove(obj: &mut Map<String, Value>, key: &str, v: Option<Value>) {
    match v {
        Some(v) => {
            obj.insert(key.to_string(), v);
        }
        None => {
            obj.remove(key);
        }
    }
}

pub(super) fn non_empty_str(s: &str) -> Option<Value> {
    (!s.is_empty()).then(|| Value::String(s.to_string()))
}

pub(super) fn non_empty_list(v: &[String]) -> Option<Value> {
    (!v.is_empty()).then(|| json!(v))
}

/// Writes the managed (defaulted / allocated) fields back into the object.
pub(super) fn write_back(obj: &mut Value, svc: &Svc) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    let spec = root.entry("spec").or_insert_with(|| json!({}));
    if let Some(spec) = spec.as_object_mut() {
        write_spec(spec, svc);
    }
    if svc.clear_lb_status
        && let Some(status) = root.get_mut("status").and_then(Value::as_object_mut)
    {
        status.insert("loadBalancer".into(), json!({}));
    }
}

pub(super) fn write_spec(spec: &mut Map<String, Value>, svc: &Svc) {
    spec.insert("type".into(), json!(svc.ty));
    spec.insert("sessionAffinity".into(), json!(svc.affinity));
    if !svc.affinity_config {
        spec.remove("sessionAffinityConfig");
    } else if let Some(t) = svc.affinity_timeout {
        let cfg = spec
            .entry("sessionAffinityConfig")
            .or_insert_with(|| json!({}));
        if let Some(cfg) = cfg.as_object_mut() {
            cfg.insert("clientIP".into(), json!({ "timeoutSeconds": t }));
        }
    }
    set_or_remove(spec, "clusterIP", non_empty_str(&svc.cluster_ip));
    set_or_remove(spec, "clusterIPs", non_empty_list(&svc.cluster_ips));
    set_or_remove(spec, "ipFamilies", non_empty_list(&svc.families));
    set_or_remove(
        spec,
        "ipFamilyPolicy",
        svc.policy.as_ref().map(|p| json!(p)),
    );
    set_or_remove(spec, "externalTrafficPolicy", non_empty_str(&svc.etp));
    set_or_remove(
        spec,
        "internalTrafficPolicy",
        svc.itp.as_ref().map(|p| json!(p)),
    );
    set_or_remove(
        spec,
        "allocateLoadBalancerNodePorts",
        svc.alloc_lb_node_ports.map(Value::Bool),
    );
    set_or_remove(
        spec,
        "loadBalancerClass",
        svc.lb_class.as_ref().map(|c| json!(c)),
    );
    set_or_remove(
        spec,
        "healthCheckNodePort",
        (svc.hc_node_port != 0).then(|| json!(svc.hc_node_port)),
    );
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for (pv, p) in ports.iter_mut().zip(&svc.ports) {
            if let Some(po) = pv.as_object_mut() {
                write_port(po, p);
            }
        }
    }
}

pub(super) fn write_port(po: &mut Map<String, Value>, p: &Port) {
    po.insert("protocol".into(), json!(p.protocol));
    let target = match &p.target {
        TargetPort::Int(n) => json!(n),
        TargetPort::Str(s) => json!(s),
    };
    po.insert("targetPort".into(), target);
    set_or_remove(
        po,
        "nodePort",
        (p.node_port != 0).then(|| json!(p.node_port)),
    );
}
