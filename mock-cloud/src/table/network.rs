//! Printers of Services, Endpoints and EndpointSlices.

use super::format::{age, arr, format_labels, i, join_host_port, list_with_more, name, or_none, s};
use super::*;

/// EXTERNAL-IP of a Service.
pub(super) fn service_external_ip(svc: &Value) -> String {
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
pub(super) fn service_ports(svc: &Value) -> String {
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

pub(super) fn service_cells(_: &ResourceInfo, svc: &Value, now: DateTime<Utc>) -> Vec<Value> {
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

/// Endpoints ENDPOINTS: `ip:port` pairs, three at most.
pub(super) fn format_endpoints(ep: &Value) -> String {
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

pub(super) fn endpoints_cells(_: &ResourceInfo, ep: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![name(ep), json!(format_endpoints(ep)), age(ep, now)]
}

pub(super) fn endpointslice_cells(_: &ResourceInfo, es: &Value, now: DateTime<Utc>) -> Vec<Value> {
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
