//! The `service.beta.kubernetes.io/aws-load-balancer-*` annotations berth honours, parsed
//! strictly: a value that does not parse is [`ProviderError::Invalid`] naming the annotation
//! and the accepted values. Pure; no I/O.

use std::collections::BTreeMap;

use crate::bounds::{check_health_check_path, quote};
use crate::{HealthCheck, HealthProtocol, ProviderError};

const PREFIX: &str = "service.beta.kubernetes.io/aws-load-balancer-";

/// `internal` (default) or `internet-facing`.
pub const SCHEME: &str = "service.beta.kubernetes.io/aws-load-balancer-scheme";
/// Comma-separated subnet ids or `Name` tags.
pub const SUBNETS: &str = "service.beta.kubernetes.io/aws-load-balancer-subnets";
/// `instance` (default) or `ip`.
pub const TARGET_TYPE: &str = "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type";
/// `TCP`, `HTTP` or `HTTPS`.
pub const HC_PROTOCOL: &str = "service.beta.kubernetes.io/aws-load-balancer-healthcheck-protocol";
/// `traffic-port` or a port number.
pub const HC_PORT: &str = "service.beta.kubernetes.io/aws-load-balancer-healthcheck-port";
/// An HTTP path starting with `/`.
pub const HC_PATH: &str = "service.beta.kubernetes.io/aws-load-balancer-healthcheck-path";
/// Seconds, 5–300.
pub const HC_INTERVAL: &str = "service.beta.kubernetes.io/aws-load-balancer-healthcheck-interval";
/// Seconds, 2–120.
pub const HC_TIMEOUT: &str = "service.beta.kubernetes.io/aws-load-balancer-healthcheck-timeout";
/// 2–10.
pub const HC_HEALTHY: &str =
    "service.beta.kubernetes.io/aws-load-balancer-healthcheck-healthy-threshold";
/// 2–10.
pub const HC_UNHEALTHY: &str =
    "service.beta.kubernetes.io/aws-load-balancer-healthcheck-unhealthy-threshold";
/// `k=v,k2=v2`: tags added to every resource.
pub const EXTRA_TAGS: &str =
    "service.beta.kubernetes.io/aws-load-balancer-additional-resource-tags";
/// `k=v,...`: target group attributes.
pub const TG_ATTRIBUTES: &str =
    "service.beta.kubernetes.io/aws-load-balancer-target-group-attributes";
/// `k=v,...`: load balancer attributes.
pub const LB_ATTRIBUTES: &str = "service.beta.kubernetes.io/aws-load-balancer-attributes";

/// Comma-separated security group ids or names, attached instead of berth's own group.
pub const SECURITY_GROUPS: &str = "service.beta.kubernetes.io/aws-load-balancer-security-groups";
/// `true` (default) or `false`: whether berth lets its NLBs reach the nodes.
pub const MANAGE_BACKEND_RULES: &str =
    "service.beta.kubernetes.io/aws-load-balancer-manage-backend-security-group-rules";
/// Comma-separated ACM (or IAM) certificate ARNs; the first is the default certificate.
pub const SSL_CERT: &str = "service.beta.kubernetes.io/aws-load-balancer-ssl-cert";
/// Comma-separated port names or numbers that get TLS listeners (default: every TCP port).
pub const SSL_PORTS: &str = "service.beta.kubernetes.io/aws-load-balancer-ssl-ports";
/// The ELBv2 security policy of the TLS listeners.
pub const SSL_POLICY: &str = "service.beta.kubernetes.io/aws-load-balancer-ssl-negotiation-policy";
/// `HTTP1Only`, `HTTP2Only`, `HTTP2Optional`, `HTTP2Preferred` or `None`.
pub const ALPN_POLICY: &str = "service.beta.kubernetes.io/aws-load-balancer-alpn-policy";
/// berth's own: Services naming the same group share one NLB (see `group.rs`).
pub const GROUP: &str = "berth.io/aws-load-balancer-group";

/// Every annotation this module reads; others with the prefix are ignored (they belong to
/// features berth does not implement).
pub const ALL: [&str; 20] = [
    SCHEME,
    SUBNETS,
    TARGET_TYPE,
    HC_PROTOCOL,
    HC_PORT,
    HC_PATH,
    HC_INTERVAL,
    HC_TIMEOUT,
    HC_HEALTHY,
    HC_UNHEALTHY,
    EXTRA_TAGS,
    TG_ATTRIBUTES,
    LB_ATTRIBUTES,
    SECURITY_GROUPS,
    MANAGE_BACKEND_RULES,
    SSL_CERT,
    SSL_PORTS,
    SSL_POLICY,
    ALPN_POLICY,
    GROUP,
];

/// Whether the load balancer gets public addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Private addresses only (the AWS Load Balancer Controller's default).
    Internal,
    /// Public addresses.
    InternetFacing,
}

impl Scheme {
    /// ELBv2's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Internal => "internal",
            Scheme::InternetFacing => "internet-facing",
        }
    }

    /// The subnet role tag discovery looks for.
    pub fn role_tag(self) -> &'static str {
        match self {
            Scheme::Internal => "kubernetes.io/role/internal-elb",
            Scheme::InternetFacing => "kubernetes.io/role/elb",
        }
    }
}

/// What a target group's targets are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetType {
    /// EC2 instance ids from the nodes' `spec.providerID`.
    Instance,
    /// The nodes' InternalIPs.
    Ip,
}

impl TargetType {
    /// ELBv2's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetType::Instance => "instance",
            TargetType::Ip => "ip",
        }
    }
}

/// A target group health check as ELBv2 models it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TgHealth {
    /// `TCP`, `HTTP` or `HTTPS`.
    pub protocol: &'static str,
    /// `None`: the traffic port.
    pub port: Option<u16>,
    /// For HTTP(S).
    pub path: Option<String>,
    /// Seconds between checks.
    pub interval: u32,
    /// Seconds before a check fails.
    pub timeout: u32,
    /// Successes before healthy.
    pub healthy: u32,
    /// Failures before unhealthy.
    pub unhealthy: u32,
}

impl TgHealth {
    /// The port as ELBv2 spells it.
    pub fn port_str(&self) -> String {
        self.port
            .map_or_else(|| "traffic-port".to_string(), |p| p.to_string())
    }
}

/// Everything the annotations configure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub scheme: Scheme,
    /// Subnet ids or `Name` tags; `None`: discover by tags.
    pub subnets: Option<Vec<String>>,
    pub target_type: TargetType,
    pub health: TgHealth,
    /// Extra tags for every resource.
    pub extra_tags: BTreeMap<String, String>,
    /// Target group attributes to set (only these keys are managed).
    pub tg_attributes: BTreeMap<String, String>,
    /// Load balancer attributes to set (only these keys are managed).
    pub lb_attributes: BTreeMap<String, String>,
    /// Security groups.
    pub security: super::security_groups::SgSettings,
    /// TLS listeners.
    pub tls: super::tls::TlsSettings,
    /// The shared NLB's group, if the Service is a member of one.
    pub group: Option<String>,
}

fn field(key: &str) -> String {
    format!("metadata.annotations[{key}]")
}

fn bad(key: &str, raw: &str, accepted: &str) -> ProviderError {
    ProviderError::invalid(
        field(key),
        format!("invalid value {}: {accepted}", quote(raw)),
    )
}

fn number(
    ann: &BTreeMap<String, String>,
    key: &str,
    range: std::ops::RangeInclusive<u32>,
) -> Result<Option<u32>, ProviderError> {
    let Some(raw) = ann.get(key) else {
        return Ok(None);
    };
    match raw.trim().parse::<u32>() {
        Ok(v) if range.contains(&v) => Ok(Some(v)),
        _ => Err(bad(
            key,
            raw,
            &format!(
                "accepted values are integers from {} to {}",
                range.start(),
                range.end()
            ),
        )),
    }
}

/// Parses `k=v,k2=v2` (spaces around items ignored; empty means none). Keys are unique and
/// non-empty; `check` vets each pair.
fn pairs(
    ann: &BTreeMap<String, String>,
    key: &str,
    what: &str,
    check: impl Fn(&str, &str) -> Result<(), String>,
) -> Result<BTreeMap<String, String>, ProviderError> {
    let Some(raw) = ann.get(key) else {
        return Ok(BTreeMap::new());
    };
    let mut out = BTreeMap::new();
    if raw.trim().is_empty() {
        return Ok(out);
    }
    for item in raw.split(',') {
        let item = item.trim();
        let accepted = format!("accepted values are comma-separated {what} as key=value");
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| bad(key, raw, &format!("{} has no '='; {accepted}", quote(item))))?;
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() {
            return Err(bad(
                key,
                raw,
                &format!("{} has an empty key; {accepted}", quote(item)),
            ));
        }
        check(k, v).map_err(|m| bad(key, raw, &format!("{m}; {accepted}")))?;
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(bad(
                key,
                raw,
                &format!("key {} appears twice; {accepted}", quote(k)),
            ));
        }
    }
    Ok(out)
}

fn check_tag(k: &str, v: &str) -> Result<(), String> {
    if k.len() > 128 || v.len() > 256 {
        return Err(format!(
            "tag {} is too long (keys up to 128, values up to 256 characters)",
            quote(k)
        ));
    }
    if k.to_ascii_lowercase().starts_with("aws:") {
        return Err(format!("tag {} uses the reserved prefix aws:", quote(k)));
    }
    if k.starts_with("berth.io/") {
        return Err(format!(
            "tag {} uses berth's own prefix berth.io/",
            quote(k)
        ));
    }
    Ok(())
}

fn check_attribute(k: &str, v: &str) -> Result<(), String> {
    if !k
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(format!(
            "attribute {} may contain only letters, digits, '.', '_' and '-'",
            quote(k)
        ));
    }
    if v.is_empty() {
        return Err(format!("attribute {} has an empty value", quote(k)));
    }
    Ok(())
}

/// The target type `ann` asks for: instance when it says nothing; None when the value is
/// not one of the accepted ones.
pub fn target_type_of(ann: &BTreeMap<String, String>) -> Option<TargetType> {
    match ann.get(TARGET_TYPE).map(|s| s.trim()) {
        None | Some("instance") => Some(TargetType::Instance),
        Some("ip") => Some(TargetType::Ip),
        Some(_) => None,
    }
}

/// Reads the annotations over `base` (the health check the controller computed).
pub fn parse(
    ann: &BTreeMap<String, String>,
    base: &HealthCheck,
) -> Result<Settings, ProviderError> {
    let scheme = match ann.get(SCHEME).map(|s| s.trim()) {
        None | Some("internal") => Scheme::Internal,
        Some("internet-facing") => Scheme::InternetFacing,
        Some(_) => {
            return Err(bad(
                SCHEME,
                &ann[SCHEME],
                "accepted values are \"internal\" and \"internet-facing\"",
            ));
        }
    };
    let subnets = match ann.get(SUBNETS) {
        None => None,
        Some(raw) => {
            let list: Vec<String> = raw.split(',').map(str::trim).map(str::to_string).collect();
            if list.iter().any(|s| s.is_empty()) {
                return Err(bad(
                    SUBNETS,
                    raw,
                    "accepted values are comma-separated subnet ids (subnet-…) or Name tags",
                ));
            }
            Some(list)
        }
    };
    let target_type = match target_type_of(ann) {
        Some(t) => t,
        None => {
            return Err(bad(
                TARGET_TYPE,
                &ann[TARGET_TYPE],
                "accepted values are \"instance\" and \"ip\"",
            ));
        }
    };
    let mut health = TgHealth {
        protocol: match base.protocol {
            HealthProtocol::Tcp => "TCP",
            HealthProtocol::Http => "HTTP",
        },
        port: base.port,
        path: base.path.clone(),
        interval: base.interval_seconds,
        timeout: base.timeout_seconds,
        healthy: base.healthy_threshold,
        unhealthy: base.unhealthy_threshold,
    };
    if let Some(raw) = ann.get(HC_PROTOCOL) {
        health.protocol = match raw.trim().to_ascii_uppercase().as_str() {
            "TCP" => "TCP",
            "HTTP" => "HTTP",
            "HTTPS" => "HTTPS",
            _ => {
                return Err(bad(
                    HC_PROTOCOL,
                    raw,
                    "accepted values are \"TCP\", \"HTTP\" and \"HTTPS\"",
                ));
            }
        };
    }
    if let Some(raw) = ann.get(HC_PORT) {
        health.port = match raw.trim() {
            "traffic-port" => None,
            p => match p.parse::<u16>() {
                Ok(p) if p > 0 => Some(p),
                _ => {
                    return Err(bad(
                        HC_PORT,
                        raw,
                        "accepted values are \"traffic-port\" and port numbers from 1 to 65535",
                    ));
                }
            },
        };
    }
    if let Some(raw) = ann.get(HC_PATH) {
        let p = raw.trim();
        check_health_check_path(p)
            .map_err(|message| ProviderError::invalid(field(HC_PATH), message))?;
        health.path = Some(p.to_string());
    }
    if let Some(v) = number(ann, HC_INTERVAL, 5..=300)? {
        health.interval = v;
    }
    if let Some(v) = number(ann, HC_TIMEOUT, 2..=120)? {
        health.timeout = v;
    }
    if let Some(v) = number(ann, HC_HEALTHY, 2..=10)? {
        health.healthy = v;
    }
    if let Some(v) = number(ann, HC_UNHEALTHY, 2..=10)? {
        health.unhealthy = v;
    }
    if health.protocol == "TCP" {
        health.path = None;
    } else if health.path.is_none() {
        health.path = Some("/".to_string());
    }
    // ELBv2 bounds whatever the source (berth's own annotations feed `base`).
    health.interval = health.interval.clamp(5, 300);
    health.timeout = health.timeout.clamp(2, 120);
    health.healthy = health.healthy.clamp(2, 10);
    health.unhealthy = health.unhealthy.clamp(2, 10);
    Ok(Settings {
        scheme,
        subnets,
        target_type,
        health,
        extra_tags: pairs(ann, EXTRA_TAGS, "tags", check_tag)?,
        tg_attributes: pairs(ann, TG_ATTRIBUTES, "attributes", check_attribute)?,
        lb_attributes: pairs(ann, LB_ATTRIBUTES, "attributes", check_attribute)?,
        security: super::security_groups::parse(ann)?,
        tls: super::tls::parse(ann)?,
        group: group(ann)?,
    })
}

/// The longest group name: it is a tag value and part of the NLB's readable name.
pub const MAX_GROUP_LEN: usize = 63;

/// The `berth.io/aws-load-balancer-group` annotation: a DNS label.
fn group(ann: &BTreeMap<String, String>) -> Result<Option<String>, ProviderError> {
    let Some(raw) = ann.get(GROUP) else {
        return Ok(None);
    };
    let name = raw.trim();
    let ok = !name.is_empty()
        && name.len() <= MAX_GROUP_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        return Err(bad(
            GROUP,
            raw,
            "accepted values are 1 to 63 lowercase letters, digits and inner hyphens",
        ));
    }
    Ok(Some(name.to_string()))
}

/// Whether `key` is an AWS load balancer annotation berth does not implement (logged, not
/// an error: the AWS controllers accept many more).
pub fn is_unsupported(key: &str) -> bool {
    key.starts_with(PREFIX) && !ALL.contains(&key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse_one(key: &str, value: &str) -> Result<Settings, ProviderError> {
        parse(&ann(&[(key, value)]), &HealthCheck::tcp_traffic_port())
    }

    #[test]
    fn defaults() {
        let s = parse(&BTreeMap::new(), &HealthCheck::tcp_traffic_port()).unwrap();
        assert_eq!(s.scheme, Scheme::Internal);
        assert_eq!(s.subnets, None);
        assert_eq!(s.target_type, TargetType::Instance);
        assert_eq!(s.health.protocol, "TCP");
        assert_eq!(s.health.port, None);
        assert_eq!(s.health.path, None);
        assert!(s.extra_tags.is_empty() && s.tg_attributes.is_empty());
        let local = parse(&BTreeMap::new(), &HealthCheck::http_healthz(32_100)).unwrap();
        assert_eq!(local.health.protocol, "HTTP");
        assert_eq!(local.health.port, Some(32_100));
        assert_eq!(local.health.path.as_deref(), Some("/healthz"));
    }

    #[test]
    fn good_values() {
        let s = parse_one(SCHEME, "internet-facing").unwrap();
        assert_eq!(s.scheme, Scheme::InternetFacing);
        assert_eq!(
            parse_one(SCHEME, "internal").unwrap().scheme,
            Scheme::Internal
        );
        let s = parse_one(SUBNETS, "subnet-1, my-subnet").unwrap();
        assert_eq!(
            s.subnets,
            Some(vec!["subnet-1".to_string(), "my-subnet".to_string()])
        );
        assert_eq!(
            parse_one(TARGET_TYPE, "ip").unwrap().target_type,
            TargetType::Ip
        );
        assert_eq!(
            parse_one(TARGET_TYPE, "instance").unwrap().target_type,
            TargetType::Instance
        );
        let s = parse_one(HC_PROTOCOL, "http").unwrap();
        assert_eq!(
            (s.health.protocol, s.health.path.as_deref()),
            ("HTTP", Some("/"))
        );
        assert_eq!(
            parse_one(HC_PROTOCOL, "HTTPS").unwrap().health.protocol,
            "HTTPS"
        );
        assert_eq!(parse_one(HC_PORT, "8080").unwrap().health.port, Some(8080));
        assert_eq!(
            parse_one(HC_PORT, "traffic-port").unwrap().health.port,
            None
        );
        let s = parse(
            &ann(&[(HC_PROTOCOL, "HTTP"), (HC_PATH, "/ready")]),
            &HealthCheck::tcp_traffic_port(),
        )
        .unwrap();
        assert_eq!(s.health.path.as_deref(), Some("/ready"));
        // A path without HTTP is dropped: TCP checks have none.
        assert_eq!(parse_one(HC_PATH, "/x").unwrap().health.path, None);
        assert_eq!(parse_one(HC_INTERVAL, "30").unwrap().health.interval, 30);
        assert_eq!(parse_one(HC_TIMEOUT, "10").unwrap().health.timeout, 10);
        assert_eq!(parse_one(HC_HEALTHY, "3").unwrap().health.healthy, 3);
        assert_eq!(parse_one(HC_UNHEALTHY, "10").unwrap().health.unhealthy, 10);
        let s = parse_one(EXTRA_TAGS, "team=web, cost-center = 42,empty=").unwrap();
        assert_eq!(s.extra_tags.len(), 3);
        assert_eq!(s.extra_tags["cost-center"], "42");
        assert_eq!(s.extra_tags["empty"], "");
        assert!(parse_one(EXTRA_TAGS, "").unwrap().extra_tags.is_empty());
        let s = parse_one(
            TG_ATTRIBUTES,
            "deregistration_delay.timeout_seconds=120,preserve_client_ip.enabled=true",
        )
        .unwrap();
        assert_eq!(
            s.tg_attributes["deregistration_delay.timeout_seconds"],
            "120"
        );
        let s = parse_one(LB_ATTRIBUTES, "load_balancing.cross_zone.enabled=true").unwrap();
        assert_eq!(s.lb_attributes["load_balancing.cross_zone.enabled"], "true");
    }

    #[test]
    fn bad_values_name_the_annotation_and_the_accepted_values() {
        let cases = [
            (SCHEME, "public", "\"internal\" and \"internet-facing\""),
            (SCHEME, "", "\"internal\""),
            (SUBNETS, "subnet-1,,subnet-2", "subnet ids"),
            (SUBNETS, "", "subnet ids"),
            (TARGET_TYPE, "pod", "\"instance\" and \"ip\""),
            (HC_PROTOCOL, "UDP", "\"TCP\", \"HTTP\" and \"HTTPS\""),
            (HC_PORT, "0", "traffic-port"),
            (HC_PORT, "70000", "traffic-port"),
            (HC_PORT, "http", "traffic-port"),
            (HC_PATH, "healthz", "starting with \"/\""),
            (HC_PATH, "/a b", "starting with \"/\""),
            (HC_PATH, "/a\u{1}b", "control characters"),
            (
                HC_PATH,
                &format!("/{}", "x".repeat(1024)),
                "at most 1024 characters",
            ),
            (HC_INTERVAL, "4", "from 5 to 300"),
            (HC_INTERVAL, "10s", "from 5 to 300"),
            (HC_TIMEOUT, "121", "from 2 to 120"),
            (HC_HEALTHY, "1", "from 2 to 10"),
            (HC_UNHEALTHY, "11", "from 2 to 10"),
            (HC_UNHEALTHY, "-3", "from 2 to 10"),
            (EXTRA_TAGS, "team", "key=value"),
            (EXTRA_TAGS, "=x", "empty key"),
            (EXTRA_TAGS, "a=1,a=2", "appears twice"),
            (EXTRA_TAGS, "aws:x=1", "reserved prefix"),
            (EXTRA_TAGS, "berth.io/cluster=x", "berth's own prefix"),
            (TG_ATTRIBUTES, "stickiness.enabled", "key=value"),
            (TG_ATTRIBUTES, "a b=1", "letters, digits"),
            (TG_ATTRIBUTES, "x=", "empty value"),
            (LB_ATTRIBUTES, "deletion_protection.enabled", "key=value"),
        ];
        for (key, value, want) in cases {
            match parse_one(key, value) {
                Err(ProviderError::Invalid { field, message }) => {
                    assert_eq!(field, format!("metadata.annotations[{key}]"));
                    assert!(message.contains(want), "{key}={value:?}: {message}");
                    assert!(message.contains("accepted values"), "{message}");
                }
                other => panic!("{key}={value:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn long_values_are_quoted_in_part() {
        let huge = "x".repeat(10 * 1024);
        for (key, value) in [
            (SCHEME, huge.clone()),
            (HC_PATH, huge.clone()),
            (HC_INTERVAL, huge.clone()),
            (EXTRA_TAGS, format!("{huge}=1")),
            (TG_ATTRIBUTES, huge.clone()),
        ] {
            let e = parse_one(key, &value).unwrap_err();
            let text = e.to_string();
            assert!(text.len() < 700, "{key}: {} bytes: {text}", text.len());
            assert!(text.contains("bytes)"), "{key}: {text}");
            assert!(text.contains("accepted values"), "{key}: {text}");
        }
    }

    #[test]
    fn unsupported_annotations_are_recognised() {
        assert!(is_unsupported(
            "service.beta.kubernetes.io/aws-load-balancer-eip-allocations"
        ));
        assert!(!is_unsupported(SECURITY_GROUPS));
        assert!(!is_unsupported(SCHEME));
        assert!(!is_unsupported("berth.io/health-check-port"));
    }
}
