//! Validation (`ValidateService` / `ValidateServiceUpdate`).

use super::alloc::family_of;
use super::defaults::{normalize_cluster_ips, set_defaults};
use super::names::{
    dns1035_label_errors, dns1123_label_errors, dns1123_subdomain_errors, port_name_errors,
    qualified_name_errors, validate_labels,
};
use super::parse::parse;
use super::*;

/// Validation alone (also usable for dry runs), no allocation: defaults a copy of the
/// object, then runs the checks of upstream `ValidateService`. Allocation-time errors
/// (conflicts, ranges, cluster IP families) need [`ServiceIpam::dry_run_create`].
pub fn validate(svc: &Value) -> Vec<FieldError> {
    match parse(svc) {
        Ok(mut s) => {
            set_defaults(&mut s);
            normalize_cluster_ips(&mut s, None);
            validate_service(&s)
        }
        Err(e) => e,
    }
}

pub(super) fn validate_service(s: &Svc) -> Vec<FieldError> {
    let mut e = Vec::new();
    validate_name(s, &mut e);
    if s.ports.is_empty() && !s.is_headless() && !s.is(TYPE_EXTERNAL_NAME) {
        e.push(FieldError::required("spec.ports", ""));
    }
    validate_type_specific(s, &mut e);
    let mut names = HashSet::new();
    for (i, p) in s.ports.iter().enumerate() {
        validate_port(
            p,
            s.ports.len() > 1,
            &mut names,
            &format!("spec.ports[{i}]"),
            &mut e,
        );
    }
    if let Some(sel) = &s.selector {
        validate_labels(sel, "spec.selector", &mut e);
    }
    validate_affinity(s, &mut e);
    e.extend(validate_cluster_ips_related(s));
    validate_external_ips(s, &mut e);
    validate_type_value(s, &mut e);
    validate_node_port_rules(s, &mut e);
    validate_source_ranges(s, &mut e);
    validate_lb_fields(s, &mut e);
    validate_traffic_policies(s, &mut e);
    e
}

pub(super) fn validate_service_update(n: &Svc, o: &Svc) -> Vec<FieldError> {
    let mut e = upgrade_downgrade_cluster_ips(o, n);
    e.extend(upgrade_downgrade_families(o, n));
    if o.is(TYPE_LOAD_BALANCER) && n.is(TYPE_LOAD_BALANCER) && o.lb_class != n.lb_class {
        e.push(FieldError::invalid(
            "spec.loadBalancerClass",
            qopt(&n.lb_class),
            "may not change once set",
        ));
    }
    if o.needs_health_check() && n.needs_health_check() && o.hc_node_port != n.hc_node_port {
        e.push(FieldError::forbidden(
            "spec.healthCheckNodePort",
            "field is immutable",
        ));
    }
    e.extend(validate_service(n));
    e
}

pub(super) fn validate_name(s: &Svc, e: &mut Vec<FieldError>) {
    if s.name.is_empty() {
        e.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
        return;
    }
    for msg in dns1035_label_errors(&s.name) {
        e.push(FieldError::invalid("metadata.name", q(&s.name), &msg));
    }
}

pub(super) fn validate_type_specific(s: &Svc, e: &mut Vec<FieldError>) {
    let headless_msg = |ty: &str| format!("may not be set to 'None' for {ty} services");
    match s.ty.as_str() {
        TYPE_LOAD_BALANCER | TYPE_NODE_PORT if s.is_headless() => {
            e.push(FieldError::invalid(
                "spec.clusterIPs[0]",
                q(NONE),
                &headless_msg(&s.ty),
            ));
        }
        TYPE_EXTERNAL_NAME => {
            let msg = "may not be set for ExternalName services";
            if !s.cluster_ips.is_empty() {
                e.push(FieldError::forbidden("spec.clusterIPs", msg));
            }
            if !s.families.is_empty() {
                e.push(FieldError::forbidden("spec.ipFamilies", msg));
            }
            if s.policy.is_some() {
                e.push(FieldError::forbidden("spec.ipFamilyPolicy", msg));
            }
            let cname = s
                .external_name
                .strip_suffix('.')
                .unwrap_or(&s.external_name);
            if cname.is_empty() {
                e.push(FieldError::required("spec.externalName", ""));
            } else {
                for msg in dns1123_subdomain_errors(cname) {
                    e.push(FieldError::invalid("spec.externalName", q(cname), &msg));
                }
            }
        }
        _ => {}
    }
}

pub(super) fn validate_port(
    p: &Port,
    require_name: bool,
    names: &mut HashSet<String>,
    path: &str,
    e: &mut Vec<FieldError>,
) {
    if require_name && p.name.is_empty() {
        e.push(FieldError::required(format!("{path}.name"), ""));
    } else if !p.name.is_empty() {
        for msg in dns1123_label_errors(&p.name) {
            e.push(FieldError::invalid(
                format!("{path}.name"),
                q(&p.name),
                &msg,
            ));
        }
        if !names.insert(p.name.clone()) {
            e.push(FieldError::duplicate(format!("{path}.name"), q(&p.name)));
        }
    }
    if !(1..=65535).contains(&p.port) {
        e.push(FieldError::invalid(
            format!("{path}.port"),
            p.port.to_string(),
            PORT_RANGE_MSG,
        ));
    }
    if p.protocol.is_empty() {
        e.push(FieldError::required(format!("{path}.protocol"), ""));
    } else if !["SCTP", "TCP", "UDP"].contains(&p.protocol.as_str()) {
        e.push(FieldError::not_supported(
            format!("{path}.protocol"),
            q(&p.protocol),
            &["SCTP", "TCP", "UDP"],
        ));
    }
    match &p.target {
        TargetPort::Int(n) if !(1..=65535).contains(n) => {
            e.push(FieldError::invalid(
                format!("{path}.targetPort"),
                n.to_string(),
                PORT_RANGE_MSG,
            ));
        }
        TargetPort::Str(name) => {
            for msg in port_name_errors(name) {
                e.push(FieldError::invalid(
                    format!("{path}.targetPort"),
                    q(name),
                    &msg,
                ));
            }
        }
        TargetPort::Int(_) => {}
    }
    if let Some(app) = &p.app_protocol {
        for msg in qualified_name_errors(app) {
            e.push(FieldError::invalid(
                format!("{path}.appProtocol"),
                q(app),
                &msg,
            ));
        }
    }
}

pub(super) const PORT_RANGE_MSG: &str = "must be between 1 and 65535, inclusive";

pub(super) fn validate_affinity(s: &Svc, e: &mut Vec<FieldError>) {
    if s.affinity.is_empty() {
        e.push(FieldError::required("spec.sessionAffinity", ""));
    } else if s.affinity != "ClientIP" && s.affinity != NONE {
        e.push(FieldError::not_supported(
            "spec.sessionAffinity",
            q(&s.affinity),
            &["ClientIP", NONE],
        ));
    }
    if s.affinity == "ClientIP" {
        let t = s.affinity_timeout.unwrap_or(0);
        if !(1..=86400).contains(&t) {
            let path = "spec.sessionAffinityConfig.clientIP.timeoutSeconds";
            e.push(FieldError::invalid(
                path,
                t.to_string(),
                "must be greater than 0 and less than 86400",
            ));
        }
    } else if s.affinity == NONE && s.affinity_config {
        e.push(FieldError::forbidden(
            "spec.sessionAffinityConfig",
            "must not be set when session affinity is None",
        ));
    }
}

/// Upstream `ValidateServiceClusterIPsRelatedFields`.
pub(super) fn validate_cluster_ips_related(s: &Svc) -> Vec<FieldError> {
    let mut e = Vec::new();
    if s.is(TYPE_EXTERNAL_NAME) {
        return e;
    }
    let ips = &s.cluster_ips;
    if !s.cluster_ip.is_empty() {
        if ips.is_empty() {
            e.push(FieldError::required("spec.clusterIPs", ""));
        } else if ips[0] != s.cluster_ip {
            e.push(FieldError::invalid(
                "spec.clusterIPs",
                qlist(ips),
                "first value must match `clusterIP`",
            ));
        }
    } else if !ips.is_empty() {
        e.push(FieldError::invalid(
            "spec.clusterIPs",
            qlist(ips),
            "must be empty when `clusterIP` is not specified",
        ));
    }
    let mut seen = HashSet::new();
    for (i, fam) in s.families.iter().enumerate() {
        if fam != IPV4 && fam != IPV6 {
            e.push(FieldError::not_supported(
                format!("spec.ipFamilies[{i}]"),
                q(fam),
                &[IPV4, IPV6],
            ));
        }
        if !seen.insert(fam) {
            e.push(FieldError::duplicate(
                format!("spec.ipFamilies[{i}]"),
                q(fam),
            ));
        }
    }
    if let Some(p) = &s.policy
        && ![PREFER_DUAL, REQUIRE_DUAL, SINGLE_STACK].contains(&p.as_str())
    {
        e.push(FieldError::not_supported(
            "spec.ipFamilyPolicy",
            q(p),
            &[PREFER_DUAL, REQUIRE_DUAL, SINGLE_STACK],
        ));
    }
    let mut bad_ips = false;
    for (i, ip) in ips.iter().enumerate() {
        if i == 0 && ip == NONE {
            if ips.len() > 1 {
                bad_ips = true;
                e.push(FieldError::invalid(
                    "spec.clusterIPs",
                    qlist(ips),
                    "'None' must be the first and only value",
                ));
            }
            continue;
        }
        if family_of(ip).is_none() {
            bad_ips = true;
            e.push(FieldError::invalid(
                format!("spec.clusterIPs[{i}]"),
                q(ip),
                IP_MSG,
            ));
        }
    }
    if ips.len() > 2 {
        e.push(FieldError::invalid(
            "spec.clusterIPs",
            qlist(ips),
            "may only hold up to 2 values",
        ));
    }
    if bad_ips {
        return e;
    }
    if ips.len() == 2 && family_of(&ips[0]) == family_of(&ips[1]) {
        let msg = "may specify no more than one IP for each IP family";
        e.push(FieldError::invalid("spec.clusterIPs", qlist(ips), msg));
    }
    if !s.is_headless() {
        for (i, (ip, fam)) in ips.iter().zip(&s.families).enumerate() {
            let want = if fam == IPV4 { "IPv4" } else { "IPv6" };
            if (fam == IPV4 || fam == IPV6) && family_of(ip) != Some(want) {
                let msg = format!("expected an {want} value as indicated by `ipFamilies[{i}]`");
                e.push(FieldError::invalid(
                    format!("spec.clusterIPs[{i}]"),
                    q(ip),
                    &msg,
                ));
            }
        }
    }
    e
}

pub(super) const IP_MSG: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";

pub(super) fn validate_external_ips(s: &Svc, e: &mut Vec<FieldError>) {
    for (i, ip) in s.external_ips.iter().enumerate() {
        let path = format!("spec.externalIPs[{i}]");
        match ip.parse::<IpAddr>() {
            Err(_) => e.push(FieldError::invalid(path, q(ip), IP_MSG)),
            Ok(addr) => {
                if let Some(msg) = special_ip_error(addr) {
                    e.push(FieldError::invalid(path, q(ip), msg));
                }
            }
        }
    }
}

/// Upstream `ValidateNonSpecialIP`.
pub(super) fn special_ip_error(ip: IpAddr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some(if ip.is_ipv4() {
            "may not be unspecified (0.0.0.0)"
        } else {
            "may not be unspecified (::)"
        });
    }
    if ip.is_loopback() {
        return Some("may not be in the loopback range (127.0.0.0/8, ::1/128)");
    }
    let link_local = match ip {
        IpAddr::V4(a) => a.is_link_local(),
        IpAddr::V6(a) => a.segments()[0] & 0xffc0 == 0xfe80,
    };
    if link_local {
        return Some("may not be in the link-local range (169.254.0.0/16, fe80::/10)");
    }
    let ll_multicast = match ip {
        IpAddr::V4(a) => a.octets()[..3] == [224, 0, 0],
        IpAddr::V6(a) => a.segments()[0] & 0xff0f == 0xff02,
    };
    ll_multicast.then_some("may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)")
}

pub(super) const SERVICE_TYPES: [&str; 4] = [
    TYPE_CLUSTER_IP,
    TYPE_EXTERNAL_NAME,
    TYPE_LOAD_BALANCER,
    TYPE_NODE_PORT,
];

pub(super) fn validate_type_value(s: &Svc, e: &mut Vec<FieldError>) {
    if s.ty.is_empty() {
        e.push(FieldError::required("spec.type", ""));
    } else if !SERVICE_TYPES.contains(&s.ty.as_str()) {
        e.push(FieldError::not_supported(
            "spec.type",
            q(&s.ty),
            &SERVICE_TYPES,
        ));
    }
}

pub(super) fn validate_node_port_rules(s: &Svc, e: &mut Vec<FieldError>) {
    if s.is(TYPE_CLUSTER_IP) {
        for (i, _) in s.ports.iter().enumerate().filter(|(_, p)| p.node_port != 0) {
            let msg = "may not be used when `type` is 'ClusterIP'";
            e.push(FieldError::forbidden(
                format!("spec.ports[{i}].nodePort"),
                msg,
            ));
        }
    }
    let mut node_ports = HashSet::new();
    for (i, p) in s.ports.iter().enumerate().filter(|(_, p)| p.node_port != 0) {
        if !node_ports.insert((p.protocol.as_str(), p.node_port)) {
            e.push(FieldError::duplicate(
                format!("spec.ports[{i}].nodePort"),
                p.node_port.to_string(),
            ));
        }
    }
    let mut ports = HashSet::new();
    for (i, p) in s.ports.iter().enumerate() {
        if !ports.insert((p.protocol.as_str(), p.port)) {
            let key = json!({"Name": "", "Protocol": p.protocol, "AppProtocol": null, "Port": p.port,
                "TargetPort": 0, "NodePort": 0});
            e.push(FieldError::duplicate(
                format!("spec.ports[{i}]"),
                render_go_struct(&key),
            ));
        }
    }
}

/// Renders a JSON object keeping the field order of the Go struct (serde_json sorts keys).
pub(super) fn render_go_struct(v: &Value) -> String {
    const ORDER: [&str; 6] = [
        "Name",
        "Protocol",
        "AppProtocol",
        "Port",
        "TargetPort",
        "NodePort",
    ];
    let parts: Vec<String> = ORDER
        .iter()
        .map(|k| format!("{}:{}", q(k), v.get(*k).unwrap_or(&Value::Null)))
        .collect();
    format!("{{{}}}", parts.join(","))
}

pub(super) fn validate_source_ranges(s: &Svc, e: &mut Vec<FieldError>) {
    let lb_only = "may only be used when `type` is 'LoadBalancer'";
    if !s.source_ranges.is_empty() {
        let path = "spec.LoadBalancerSourceRanges";
        if !s.is(TYPE_LOAD_BALANCER) {
            e.push(FieldError::forbidden(path, lb_only));
        }
        for (i, r) in s.source_ranges.iter().enumerate() {
            let r = r.trim();
            if let Some(msg) = cidr_error(r) {
                e.push(FieldError::invalid(format!("{path}[{i}]"), q(r), msg));
            }
        }
    } else if let Some(val) = &s.source_ranges_annotation {
        let path = format!("metadata.annotations[{SOURCE_RANGES_ANNOTATION}]");
        if !s.is(TYPE_LOAD_BALANCER) {
            e.push(FieldError::forbidden(path.clone(), lb_only));
        }
        let val = val.trim();
        for r in val.split(',').filter(|_| !val.is_empty()).map(str::trim) {
            if let Some(msg) = cidr_error(r) {
                e.push(FieldError::invalid(path.clone(), q(r), msg));
            }
        }
    }
}

/// Upstream CIDR validation for legacy fields: a sloppy parse (IPv4 octets may have
/// leading zeros), then the strict rules.
pub(super) fn cidr_error(s: &str) -> Option<&'static str> {
    let Ok(net) = s.parse::<ipnet::IpNet>() else {
        return Some("must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)");
    };
    let (addr, prefix) = s.split_once('/').unwrap_or((s, ""));
    let leading_zero = |part: &str| part.len() > 1 && part.starts_with('0');
    if leading_zero(prefix) || (net.addr().is_ipv4() && addr.split('.').any(leading_zero)) {
        return Some("must not have leading 0s in IP or prefix length");
    }
    (net.addr() != net.network()).then_some("must not have bits set beyond the prefix length")
}

pub(super) fn validate_lb_fields(s: &Svc, e: &mut Vec<FieldError>) {
    let lb_only = "may only be used when `type` is 'LoadBalancer'";
    if s.alloc_lb_node_ports.is_some() && !s.is(TYPE_LOAD_BALANCER) {
        e.push(FieldError::forbidden(
            "spec.allocateLoadBalancerNodePorts",
            lb_only,
        ));
    }
    if s.is(TYPE_LOAD_BALANCER) && s.alloc_lb_node_ports.is_none() {
        // Sic: upstream reports this path without the `spec.` prefix.
        e.push(FieldError::required("allocateLoadBalancerNodePorts", ""));
    }
    match (&s.lb_class, s.is(TYPE_LOAD_BALANCER)) {
        (Some(class), true) => {
            for msg in qualified_name_errors(class) {
                e.push(FieldError::invalid(
                    "spec.loadBalancerClass",
                    q(class),
                    &msg,
                ));
            }
        }
        (Some(_), false) => e.push(FieldError::forbidden("spec.loadBalancerClass", lb_only)),
        (None, _) => {}
    }
}

pub(super) fn validate_traffic_policies(s: &Svc, e: &mut Vec<FieldError>) {
    if !s.externally_accessible() {
        if !s.etp.is_empty() {
            let msg = "may only be set for externally-accessible services";
            e.push(FieldError::invalid(
                "spec.externalTrafficPolicy",
                q(&s.etp),
                msg,
            ));
        }
    } else if s.etp.is_empty() {
        e.push(FieldError::required("spec.externalTrafficPolicy", ""));
    } else if s.etp != CLUSTER && s.etp != LOCAL {
        e.push(FieldError::not_supported(
            "spec.externalTrafficPolicy",
            q(&s.etp),
            &[CLUSTER, LOCAL],
        ));
    }
    if !s.needs_health_check() {
        if s.hc_node_port != 0 {
            let msg = "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'";
            e.push(FieldError::invalid(
                "spec.healthCheckNodePort",
                s.hc_node_port.to_string(),
                msg,
            ));
        }
    } else if s.hc_node_port == 0 {
        e.push(FieldError::required("spec.healthCheckNodePort", ""));
    } else if !(1..=65535).contains(&s.hc_node_port) {
        e.push(FieldError::invalid(
            "spec.healthCheckNodePort",
            s.hc_node_port.to_string(),
            PORT_RANGE_MSG,
        ));
    }
    match &s.itp {
        None if s.needs_node_port() || s.is(TYPE_CLUSTER_IP) => {
            e.push(FieldError::required("spec.internalTrafficPolicy", ""));
        }
        Some(p) if p != CLUSTER && p != LOCAL => {
            e.push(FieldError::not_supported(
                "spec.internalTrafficPolicy",
                q(p),
                &[CLUSTER, LOCAL],
            ));
        }
        _ => {}
    }
}

/// Upstream `validateUpgradeDowngradeClusterIPs`.
pub(super) fn upgrade_downgrade_cluster_ips(o: &Svc, n: &Svc) -> Vec<FieldError> {
    let mut e = Vec::new();
    if n.is(TYPE_EXTERNAL_NAME) || o.is(TYPE_EXTERNAL_NAME) || (o.is_headless() && n.is_headless())
    {
        return e;
    }
    let changed = "may not change once set";
    let listed = qlist(&n.cluster_ips);
    let (ol, nl) = (o.cluster_ips.len(), n.cluster_ips.len());
    if ol == nl {
        for (i, (a, b)) in o.cluster_ips.iter().zip(&n.cluster_ips).enumerate() {
            if a != b {
                e.push(FieldError::invalid(
                    format!("spec.clusterIPs[{i}]"),
                    listed.clone(),
                    changed,
                ));
            }
        }
    } else if ol > nl {
        if nl == 0 {
            e.push(FieldError::invalid(
                "spec.clusterIPs[0]",
                listed.clone(),
                "primary clusterIP can not be unset",
            ));
        } else if n.cluster_ips[0] != o.cluster_ips[0] {
            e.push(FieldError::invalid(
                "spec.clusterIPs[0]",
                listed.clone(),
                changed,
            ));
        }
        if nl == 1 && n.policy.as_deref() != Some(SINGLE_STACK) {
            let msg = "must be set to 'SingleStack' when releasing the secondary clusterIP";
            e.push(FieldError::invalid(
                "spec.ipFamilyPolicy",
                qopt(&n.policy),
                msg,
            ));
        }
    } else if ol > 0 && n.cluster_ips[0] != o.cluster_ips[0] {
        e.push(FieldError::invalid("spec.clusterIPs[0]", listed, changed));
    }
    e
}

/// Upstream `validateUpgradeDowngradeIPFamilies`.
pub(super) fn upgrade_downgrade_families(o: &Svc, n: &Svc) -> Vec<FieldError> {
    let mut e = Vec::new();
    if n.is(TYPE_EXTERNAL_NAME) || o.is(TYPE_EXTERNAL_NAME) || o.is_headless() || n.is_headless() {
        return e;
    }
    let changed = "may not change once set";
    let (ol, nl) = (o.families.len(), n.families.len());
    if ol == nl {
        if o.families != n.families {
            e.push(FieldError::invalid(
                "spec.ipFamilies[0]",
                qlist(&n.families),
                changed,
            ));
        }
    } else if ol > nl {
        if n.cluster_ips.is_empty() {
            let msg = "primary ipFamily can not be unset";
            e.push(FieldError::invalid(
                "spec.ipFamilies[0]",
                qlist(&n.families),
                msg,
            ));
        }
        if nl > 0 && n.families[0] != o.families[0] {
            e.push(FieldError::invalid(
                "spec.ipFamilies[0]",
                qlist(&n.cluster_ips),
                changed,
            ));
        }
        if nl == 1 && n.policy.as_deref() != Some(SINGLE_STACK) {
            let msg = "must be set to 'SingleStack' when releasing the secondary ipFamily";
            e.push(FieldError::invalid(
                "spec.ipFamilyPolicy",
                qopt(&n.policy),
                msg,
            ));
        }
    } else if ol > 0 && nl > 0 && n.families[0] != o.families[0] {
        e.push(FieldError::invalid(
            "spec.ipFamilies[0]",
            qlist(&n.cluster_ips),
            changed,
        ));
    }
    e
}
