//! The pure heart of berth: what a Service's load balancer should look like, computed from
//! the Service, the eligible nodes and the cluster name. No I/O; table-tested.

use berth_providers::bounds::{check_health_check_path, quote};
use berth_providers::{
    Cidr, DesiredLoadBalancer, HealthCheck, HealthProtocol, IpFamily, Listener, Protocol,
    ServiceRef, SessionAffinity, TrafficPolicy, naming, ownership_labels,
};
use k8s_openapi::api::core::v1::Service;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// berth's annotations, and the upstream ones it honours.
pub use berth_api::names::annotations;

/// A field of the Service berth cannot use, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidField {
    pub field: String,
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> InvalidField {
    InvalidField {
        field: field.into(),
        message: message.into(),
    }
}

pub(crate) fn annotation_field(key: &str) -> String {
    format!("metadata.annotations[{key}]")
}

fn parse_u32(
    ann: &BTreeMap<String, String>,
    key: &str,
    range: std::ops::RangeInclusive<u32>,
) -> Result<Option<u32>, InvalidField> {
    let Some(raw) = ann.get(key) else {
        return Ok(None);
    };
    match raw.trim().parse::<u32>() {
        Ok(v) if range.contains(&v) => Ok(Some(v)),
        _ => Err(invalid(
            annotation_field(key),
            format!(
                "invalid value {}: must be an integer from {} to {}",
                quote(raw),
                range.start(),
                range.end()
            ),
        )),
    }
}

/// The health check: HTTP `/healthz` on `healthCheckNodePort` for `externalTrafficPolicy:
/// Local`, else TCP on each listener's traffic port; berth's annotations override.
fn health_check(
    svc: &Service,
    ann: &BTreeMap<String, String>,
) -> Result<HealthCheck, InvalidField> {
    let spec = svc.spec.as_ref();
    let local = spec.and_then(|s| s.external_traffic_policy.as_deref()) == Some("Local");
    let mut hc = if local {
        let port = spec
            .and_then(|s| s.health_check_node_port)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                invalid(
                    "spec.healthCheckNodePort",
                    "required for externalTrafficPolicy: Local but not allocated",
                )
            })?;
        HealthCheck::http_healthz(port)
    } else {
        HealthCheck::tcp_traffic_port()
    };
    use annotations::*;
    if let Some(p) = ann.get(HC_PROTOCOL) {
        hc.protocol = match p.trim().to_ascii_uppercase().as_str() {
            "TCP" => HealthProtocol::Tcp,
            "HTTP" => HealthProtocol::Http,
            _ => {
                return Err(invalid(
                    annotation_field(HC_PROTOCOL),
                    format!(
                        "unsupported value {}: supported values: \"TCP\", \"HTTP\"",
                        quote(p)
                    ),
                ));
            }
        };
        if hc.protocol == HealthProtocol::Http && hc.path.is_none() {
            hc.path = Some("/healthz".into());
        }
        if hc.protocol == HealthProtocol::Tcp {
            hc.path = None;
        }
    }
    if let Some(raw) = ann.get(HC_PORT) {
        hc.port = if raw.trim() == "traffic-port" {
            None
        } else {
            match raw.trim().parse::<u16>() {
                Ok(p) if p > 0 => Some(p),
                _ => {
                    return Err(invalid(
                        annotation_field(HC_PORT),
                        format!(
                            "invalid value {}: must be \"traffic-port\" or a port from 1 to 65535",
                            quote(raw)
                        ),
                    ));
                }
            }
        };
    }
    if let Some(path) = ann.get(HC_PATH) {
        check_health_check_path(path).map_err(|m| invalid(annotation_field(HC_PATH), m))?;
        if hc.protocol != HealthProtocol::Http {
            return Err(invalid(
                annotation_field(HC_PATH),
                "only valid with the HTTP health-check protocol",
            ));
        }
        hc.path = Some(path.clone());
    }
    if let Some(v) = parse_u32(ann, HC_INTERVAL, 1..=300)? {
        hc.interval_seconds = v;
    }
    if let Some(v) = parse_u32(ann, HC_TIMEOUT, 1..=120)? {
        hc.timeout_seconds = v;
    }
    if let Some(v) = parse_u32(ann, HC_HEALTHY, 1..=10)? {
        hc.healthy_threshold = v;
    }
    if let Some(v) = parse_u32(ann, HC_UNHEALTHY, 1..=10)? {
        hc.unhealthy_threshold = v;
    }
    if hc.timeout_seconds > hc.interval_seconds {
        return Err(invalid(
            annotation_field(HC_TIMEOUT),
            format!(
                "timeout {}s must not exceed the interval {}s",
                hc.timeout_seconds, hc.interval_seconds
            ),
        ));
    }
    Ok(hc)
}

fn source_ranges(svc: &Service, ann: &BTreeMap<String, String>) -> Result<Vec<Cidr>, InvalidField> {
    let from_spec = svc
        .spec
        .as_ref()
        .and_then(|s| s.load_balancer_source_ranges.clone())
        .unwrap_or_default();
    let (raw, field): (Vec<String>, Box<dyn Fn(usize) -> String>) = if !from_spec.is_empty() {
        (
            from_spec,
            Box::new(|i| format!("spec.loadBalancerSourceRanges[{i}]")),
        )
    } else if let Some(a) = ann.get(annotations::SOURCE_RANGES) {
        (
            a.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            Box::new(|_| annotation_field(annotations::SOURCE_RANGES)),
        )
    } else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let c: Cidr = r.parse().map_err(|_| {
            invalid(
                field(i),
                format!(
                    "invalid value {}: must be a CIDR such as 10.0.0.0/8 or 2001:db8::/32",
                    quote(r)
                ),
            )
        })?;
        out.push(c);
    }
    out.sort_by_key(|c| c.to_string());
    out.dedup();
    Ok(out)
}

fn requested_addresses(
    svc: &Service,
    ann: &BTreeMap<String, String>,
) -> Result<Vec<IpAddr>, InvalidField> {
    let mut out = Vec::new();
    if let Some(raw) = ann.get(annotations::LB_IPS) {
        for part in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            out.push(part.parse::<IpAddr>().map_err(|_| {
                invalid(
                    annotation_field(annotations::LB_IPS),
                    format!(
                        "invalid value {}: must be a comma-separated list of IP addresses",
                        quote(part)
                    ),
                )
            })?);
        }
    } else if let Some(ip) = svc
        .spec
        .as_ref()
        .and_then(|s| s.load_balancer_ip.as_deref())
        .filter(|s| !s.is_empty())
    {
        out.push(ip.parse::<IpAddr>().map_err(|_| {
            invalid(
                "spec.loadBalancerIP",
                format!("invalid value {}: must be an IP address", quote(ip)),
            )
        })?);
    }
    Ok(out)
}

/// The desired load balancer of `svc` behind `targets` (shared, not copied).
pub fn desired_load_balancer(
    svc: &Service,
    targets: &berth_providers::Targets,
    cluster: &str,
    needs_node_ports: bool,
) -> Result<DesiredLoadBalancer, InvalidField> {
    let meta = &svc.metadata;
    let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
    let name = meta.name.clone().unwrap_or_default();
    let uid = meta.uid.clone().unwrap_or_default();
    // Other load balancers' annotations of the same meaning fold into berth's.
    let ann = crate::compat::fold_aliases(&meta.annotations.clone().unwrap_or_default())?;
    let spec = svc
        .spec
        .as_ref()
        .ok_or_else(|| invalid("spec", "required"))?;
    let ports = spec.ports.as_deref().unwrap_or_default();
    if ports.is_empty() {
        return Err(invalid(
            "spec.ports",
            "a LoadBalancer Service needs at least one port",
        ));
    }
    let mut listeners = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let protocol = match p.protocol.as_deref().unwrap_or("TCP") {
            "TCP" => Protocol::Tcp,
            "UDP" => Protocol::Udp,
            "SCTP" => Protocol::Sctp,
            other => {
                return Err(invalid(
                    format!("spec.ports[{i}].protocol"),
                    format!(
                        "unsupported value {}: supported values: \"TCP\", \"UDP\", \"SCTP\"",
                        quote(other)
                    ),
                ));
            }
        };
        let port = u16::try_from(p.port)
            .map_err(|_| invalid(format!("spec.ports[{i}].port"), "must be from 1 to 65535"))?;
        let node_port = p
            .node_port
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n > 0);
        if needs_node_ports && node_port.is_none() {
            return Err(invalid(
                format!("spec.ports[{i}].nodePort"),
                "not allocated; this provider sends traffic to NodePorts",
            ));
        }
        listeners.push(Listener {
            name: p.name.clone().unwrap_or_default(),
            port,
            protocol,
            node_port,
        });
    }
    let session_affinity = match spec.session_affinity.as_deref() {
        Some("ClientIP") => SessionAffinity::ClientIp {
            timeout_seconds: spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                .unwrap_or(10_800),
        },
        _ => SessionAffinity::None,
    };
    let ip_families = spec
        .ip_families
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter_map(|f| match f.as_str() {
            "IPv4" => Some(IpFamily::IPv4),
            "IPv6" => Some(IpFamily::IPv6),
            _ => None,
        })
        .collect();
    let service = ServiceRef {
        namespace: namespace.clone(),
        name: name.clone(),
        uid: uid.clone(),
    };
    let external_traffic_policy = match spec.external_traffic_policy.as_deref() {
        Some("Local") => TrafficPolicy::Local,
        _ => TrafficPolicy::Cluster,
    };
    Ok(DesiredLoadBalancer {
        id: naming::load_balancer_id(cluster, &namespace, &name, &uid),
        cluster: cluster.to_string(),
        labels: ownership_labels(cluster, &service),
        service,
        listeners,
        targets: targets.clone(),
        health_check: health_check(svc, &ann)?,
        source_ranges: source_ranges(svc, &ann)?,
        session_affinity,
        ip_families,
        requested_addresses: requested_addresses(svc, &ann)?,
        annotations: ann,
        service_labels: svc.metadata.labels.clone().unwrap_or_default(),
        selector: spec.selector.clone().unwrap_or_default(),
        external_traffic_policy,
        // Only for providers that need them: see `crate::endpoints::Endpoints::fill`.
        endpoints: Vec::new(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::service::tests::SvcB;
    use berth_providers::NodeTarget;

    fn targets() -> berth_providers::Targets {
        [NodeTarget {
            name: "node-1".into(),
            internal_ip: Some("10.0.0.1".parse().unwrap()),
            provider_id: None,
            zone: None,
        }]
        .into()
    }

    #[test]
    fn service_facts_follow_the_service() {
        let mut svc = SvcB::lb("web").port(80, "TCP", 30080).svc();
        svc.metadata.labels = Some(BTreeMap::from([("tier".into(), "web".into())]));
        svc.spec.as_mut().unwrap().selector = Some(BTreeMap::from([("app".into(), "x".into())]));
        let d = desired_load_balancer(&svc, &targets(), "c1", true).unwrap();
        assert_eq!(d.service_labels["tier"], "web");
        assert_eq!(d.selector["app"], "x");
        assert_eq!(d.external_traffic_policy, TrafficPolicy::Cluster);
        let mut svc = SvcB(svc).local(31000).svc();
        let d = desired_load_balancer(&svc, &targets(), "c1", true).unwrap();
        assert_eq!(d.external_traffic_policy, TrafficPolicy::Local);
        assert_eq!(d.selector, BTreeMap::from([("app".into(), "x".into())]));
        // Ownership labels are not the Service's labels.
        assert!(!d.service_labels.contains_key("berth.io/cluster"));
        svc.metadata.labels = None;
        svc.spec.as_mut().unwrap().selector = None;
        let d = desired_load_balancer(&svc, &targets(), "c1", true).unwrap();
        assert!(d.service_labels.is_empty() && d.selector.is_empty());
    }

    #[test]
    fn listeners_health_checks_and_affinity_follow_the_service() {
        let svc = SvcB::lb("web")
            .port(80, "TCP", 30080)
            .port(53, "UDP", 30080)
            .svc();
        let d = desired_load_balancer(&svc, &targets(), "c1", true).unwrap();
        assert_eq!(d.listeners.len(), 2);
        assert_eq!(d.listeners[1].protocol, Protocol::Udp);
        assert_eq!(d.listeners[1].node_port, Some(30080));
        assert_eq!(d.health_check, HealthCheck::tcp_traffic_port());
        assert_eq!(d.session_affinity, SessionAffinity::None);
        assert_eq!(d.targets, targets());
        assert_eq!(
            d.labels.get("berth.io/cluster").map(String::as_str),
            Some("c1")
        );
        assert_eq!(
            d.id,
            naming::load_balancer_id("c1", "default", "web", "uid-web")
        );

        let local = SvcB::lb("web")
            .port(80, "TCP", 30080)
            .local(31000)
            .affinity(60)
            .svc();
        let d = desired_load_balancer(&local, &targets(), "c1", true).unwrap();
        assert_eq!(d.health_check, HealthCheck::http_healthz(31000));
        assert_eq!(
            d.session_affinity,
            SessionAffinity::ClientIp {
                timeout_seconds: 60
            }
        );
    }

    #[test]
    fn annotations_override_health_checks() {
        let svc = SvcB::lb("web")
            .port(80, "TCP", 30080)
            .ann(annotations::HC_PROTOCOL, "http")
            .ann(annotations::HC_PATH, "/ready")
            .ann(annotations::HC_PORT, "8080")
            .ann(annotations::HC_INTERVAL, "10")
            .ann(annotations::HC_HEALTHY, "3")
            .svc();
        let hc = desired_load_balancer(&svc, &targets(), "c", true)
            .unwrap()
            .health_check;
        assert_eq!(hc.protocol, HealthProtocol::Http);
        assert_eq!(hc.path.as_deref(), Some("/ready"));
        assert_eq!(hc.port, Some(8080));
        assert_eq!(hc.interval_seconds, 10);
        assert_eq!(hc.healthy_threshold, 3);
    }

    #[test]
    fn bad_input_names_the_field_and_accepted_values() {
        let base = || SvcB::lb("web").port(80, "TCP", 30080);
        let cases: Vec<(Service, &str, &str)> = vec![
            (
                base().ann(annotations::HC_INTERVAL, "often").svc(),
                "metadata.annotations[berth.io/health-check-interval-seconds]",
                "from 1 to 300",
            ),
            (
                base().ann(annotations::HC_PROTOCOL, "ICMP").svc(),
                "metadata.annotations[berth.io/health-check-protocol]",
                "\"TCP\", \"HTTP\"",
            ),
            (
                base()
                    .ann(annotations::SOURCE_RANGES, "10.0.0.0/8, not-a-cidr")
                    .svc(),
                "metadata.annotations[service.beta.kubernetes.io/load-balancer-source-ranges]",
                "must be a CIDR",
            ),
            (
                base().ann(annotations::LB_IPS, "1.2.3").svc(),
                "metadata.annotations[berth.io/load-balancer-ips]",
                "IP addresses",
            ),
            (
                SvcB::lb("web").port(80, "ICMP", 30080).svc(),
                "spec.ports[0].protocol",
                "\"TCP\", \"UDP\", \"SCTP\"",
            ),
            (
                SvcB::lb("web").port(80, "TCP", 0).svc(),
                "spec.ports[0].nodePort",
                "not allocated",
            ),
            (SvcB::lb("web").svc(), "spec.ports", "at least one port"),
            (
                base()
                    .ann(annotations::HC_TIMEOUT, "20")
                    .ann(annotations::HC_INTERVAL, "5")
                    .svc(),
                "metadata.annotations[berth.io/health-check-timeout-seconds]",
                "must not exceed",
            ),
        ];
        for (svc, field, msg) in cases {
            let e = desired_load_balancer(&svc, &targets(), "c", true).unwrap_err();
            assert_eq!(e.field, field);
            assert!(e.message.contains(msg), "{e}");
        }
    }

    #[test]
    fn long_values_are_quoted_in_part() {
        let huge = "v".repeat(10 * 1024);
        let base = || SvcB::lb("web").port(80, "TCP", 30080);
        for key in [
            annotations::HC_PROTOCOL,
            annotations::HC_PORT,
            annotations::HC_PATH,
            annotations::HC_INTERVAL,
            annotations::LB_IPS,
            annotations::SOURCE_RANGES,
        ] {
            let svc = base()
                .ann(annotations::HC_PROTOCOL, "HTTP")
                .ann(key, &huge)
                .svc();
            let e = desired_load_balancer(&svc, &targets(), "c", true).unwrap_err();
            assert_eq!(e.field, annotation_field(key));
            assert!(e.message.len() < 400, "{key}: {} bytes", e.message.len());
            assert!(e.message.contains("…(10240 bytes)"), "{key}: {}", e.message);
        }
    }

    #[test]
    fn health_check_paths_are_bounded_and_clean() {
        let base = || {
            SvcB::lb("web")
                .port(80, "TCP", 30080)
                .ann(annotations::HC_PROTOCOL, "HTTP")
        };
        for bad in [
            "ready",
            "/a b",
            "/a\u{0}b",
            &format!("/{}", "p".repeat(1024)),
        ] {
            let svc = base().ann(annotations::HC_PATH, bad).svc();
            let e = desired_load_balancer(&svc, &targets(), "c", true).unwrap_err();
            assert_eq!(e.field, annotation_field(annotations::HC_PATH));
            assert!(e.message.contains("starting with \"/\""), "{}", e.message);
            assert!(
                e.message.contains("at most 1024 characters"),
                "{}",
                e.message
            );
        }
        let ok = format!("/{}", "p".repeat(1023));
        let svc = base().ann(annotations::HC_PATH, &ok).svc();
        let d = desired_load_balancer(&svc, &targets(), "c", true).unwrap();
        assert_eq!(d.health_check.path, Some(ok));
    }

    #[test]
    fn source_ranges_come_from_spec_first_then_the_annotation() {
        let svc = SvcB::lb("web")
            .port(80, "TCP", 30080)
            .ann(annotations::SOURCE_RANGES, "192.168.0.0/16")
            .svc();
        let d = desired_load_balancer(&svc, &targets(), "c", true).unwrap();
        assert_eq!(
            d.source_ranges
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>(),
            ["192.168.0.0/16"]
        );
        let mut svc2 = svc.clone();
        svc2.spec.as_mut().unwrap().load_balancer_source_ranges = Some(vec!["10.0.0.0/8".into()]);
        let d = desired_load_balancer(&svc2, &targets(), "c", true).unwrap();
        assert_eq!(
            d.source_ranges
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>(),
            ["10.0.0.0/8"]
        );
    }
}
