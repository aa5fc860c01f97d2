//! The contract's `LoadBalancerSpec`: parsing with field-precise validation errors, defaults,
//! and the ETag.

use super::cidr;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

/// A 422: which field of the spec is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Protocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum CheckProtocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "HTTP")]
    Http,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AffinityType {
    None,
    #[serde(rename = "ClientIP")]
    ClientIp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub port: u16,
    pub protocol: Protocol,
    pub target_port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Target {
    pub name: String,
    /// As the client wrote it (echoed back unchanged); parsed in [`Target::ip`].
    pub address: String,
}

impl Target {
    pub fn ip(&self) -> Option<IpAddr> {
        self.address.parse().ok()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    pub protocol: CheckProtocol,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthy_threshold: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unhealthy_threshold: Option<u32>,
}

/// A health check with the contract's defaults applied and the time scale folded in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CheckParams {
    pub protocol: CheckProtocol,
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

fn scaled(secs: u32, scale: f64) -> Duration {
    let scale = if scale.is_finite() && scale > 0.0 {
        scale
    } else {
        1.0
    };
    Duration::from_secs_f64(f64::from(secs) * scale).max(Duration::from_millis(10))
}

impl HealthCheck {
    pub fn params(&self, scale: f64) -> CheckParams {
        CheckParams {
            protocol: self.protocol,
            path: self.path.clone().unwrap_or_else(|| "/".into()),
            interval: scaled(self.interval_seconds.unwrap_or(5), scale),
            timeout: scaled(self.timeout_seconds.unwrap_or(2), scale),
            healthy_threshold: self.healthy_threshold.unwrap_or(2),
            unhealthy_threshold: self.unhealthy_threshold.unwrap_or(2),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionAffinity {
    #[serde(rename = "type")]
    pub kind: AffinityType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
}

/// The whole desired state of one load balancer, as the client sent it (unknown fields
/// dropped). Two specs are "identical" for idempotency exactly when they are `==`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    pub listeners: Vec<Listener>,
    /// Shared: load balancers with identical target lists (the common case: every node)
    /// hold one copy between them.
    pub targets: Arc<[Target]>,
    pub health_check: HealthCheck,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_ranges: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<SessionAffinity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_families: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_addresses: Option<Vec<String>>,
}

/// The `berth.io/cluster` label `GET /v1/loadbalancers?cluster=` filters on.
pub const CLUSTER_LABEL: &str = "berth.io/cluster";

impl Spec {
    pub fn cluster(&self) -> Option<&str> {
        self.labels
            .as_ref()
            .and_then(|l| l.get(CLUSTER_LABEL))
            .map(String::as_str)
    }

    /// The parsed source ranges (validated at parse time, so none are dropped).
    pub fn cidrs(&self) -> Vec<IpNet> {
        self.source_ranges
            .iter()
            .flatten()
            .filter_map(|s| cidr::parse(s).ok())
            .collect()
    }

    /// The ClientIP affinity timeout, if affinity is on.
    pub fn affinity_timeout(&self) -> Option<Duration> {
        match &self.session_affinity {
            Some(SessionAffinity {
                kind: AffinityType::ClientIp,
                timeout_seconds,
            }) => Some(Duration::from_secs(u64::from(
                timeout_seconds.unwrap_or(10_800),
            ))),
            _ => None,
        }
    }

    /// The requested IPv4 address, checked against the pool `127.{block}.200.1..=254`
    /// (whether it is free is the caller's business). `Err` carries the field.
    pub fn requested_vip(&self, block: u8) -> Result<Option<(Ipv4Addr, String)>, Invalid> {
        let mut found: Option<(Ipv4Addr, String)> = None;
        for (i, a) in self.requested_addresses.iter().flatten().enumerate() {
            let field = format!("requestedAddresses[{i}]");
            let ip = match a.parse::<IpAddr>() {
                Ok(IpAddr::V4(ip)) => ip,
                Ok(IpAddr::V6(_)) => {
                    return Err(invalid(
                        field,
                        format!("{a}: only IPv4 addresses can be served"),
                    ));
                }
                Err(_) => return Err(invalid(field, format!("{a:?} is not an IP address"))),
            };
            let o = ip.octets();
            if !super::vip::in_range(block, std::net::Ipv4Addr::from(o)) {
                return Err(invalid(
                    field,
                    format!(
                        "{a} is outside this load balancer pool (127.{block}.200.1-127.{block}.254.254)"
                    ),
                ));
            }
            if let Some((prev, _)) = &found
                && *prev != ip
            {
                return Err(invalid(
                    field,
                    "at most one IPv4 address can be requested".to_string(),
                ));
            }
            found = Some((ip, field));
        }
        Ok(found)
    }
}

/// The offset basis of the 64-bit FNV-1a hash (stable across runs, unlike std's hasher).
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a continued from `h` over `bytes`.
fn fnv1a_from(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The ETag of `spec` at `generation`: `"g<generation>-<hash of the spec>"`.
pub fn etag(generation: u64, spec: &Spec) -> String {
    /// FNV-1a over what is written to it: the spec's JSON, hashed without being kept.
    struct Fnv(u64);
    impl std::io::Write for Fnv {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 = fnv1a_from(self.0, buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut h = Fnv(FNV_OFFSET);
    let _ = serde_json::to_writer(&mut h, spec);
    format!("\"g{generation}-{:016x}\"", h.0)
}

/// Whether an `If-Match` / `If-None-Match` header value matches `current` (a `*`, or any of
/// a comma-separated list, weak or strong).
pub fn etag_matches(header: &str, current: &str) -> bool {
    header.split(',').map(str::trim).any(|t| {
        t == "*"
            || t.strip_prefix("W/").unwrap_or(t) == current.strip_prefix("W/").unwrap_or(current)
    })
}

// ---- parsing -------------------------------------------------------------------------------

fn get<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    m.get(key).filter(|v| !v.is_null())
}

fn as_obj<'a>(v: &'a Value, field: &str) -> Result<&'a Map<String, Value>, Invalid> {
    v.as_object()
        .ok_or_else(|| invalid(field, "must be an object"))
}

fn as_arr<'a>(v: &'a Value, field: &str) -> Result<&'a Vec<Value>, Invalid> {
    v.as_array()
        .ok_or_else(|| invalid(field, "must be an array"))
}

fn as_str<'a>(v: &'a Value, field: &str) -> Result<&'a str, Invalid> {
    v.as_str().ok_or_else(|| invalid(field, "must be a string"))
}

fn as_int(v: &Value, field: &str, min: i64, max: i64) -> Result<i64, Invalid> {
    let n = v
        .as_i64()
        .ok_or_else(|| invalid(field, "must be an integer"))?;
    if n < min || n > max {
        return Err(invalid(
            field,
            format!("{n} is out of range (must be {min}-{max})"),
        ));
    }
    Ok(n)
}

fn port(v: &Value, field: &str) -> Result<u16, Invalid> {
    Ok(as_int(v, field, 1, 65_535)? as u16)
}

fn seconds(
    m: &Map<String, Value>,
    key: &str,
    prefix: &str,
    max: i64,
) -> Result<Option<u32>, Invalid> {
    get(m, key)
        .map(|v| as_int(v, &format!("{prefix}.{key}"), 1, max).map(|n| n as u32))
        .transpose()
}

fn string_list(m: &Map<String, Value>, key: &str) -> Result<Option<Vec<String>>, Invalid> {
    let Some(v) = get(m, key) else {
        return Ok(None);
    };
    let items = as_arr(v, key)?;
    items
        .iter()
        .enumerate()
        .map(|(i, v)| as_str(v, &format!("{key}[{i}]")).map(str::to_string))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn require<'a>(m: &'a Map<String, Value>, key: &str, field: &str) -> Result<&'a Value, Invalid> {
    get(m, key).ok_or_else(|| invalid(field, "is required"))
}

/// Parses and validates a spec from JSON (already known to be well-formed JSON).
pub fn parse(v: &Value) -> Result<Spec, Invalid> {
    let m = v
        .as_object()
        .ok_or_else(|| invalid("", "the body must be a LoadBalancerSpec object"))?;
    parse_map(m, None)
}

/// A target as the fast path reads it: the strings borrowed from the body where they need no
/// unescaping.
#[derive(Debug, Deserialize)]
pub struct BodyTarget<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(borrow)]
    pub address: Cow<'a, str>,
}

/// The body as the fast path reads it: `targets` typed, everything else (a few hundred bytes)
/// as JSON values for [`parse_map`].
#[derive(Deserialize)]
struct FastBody<'a> {
    #[serde(borrow)]
    targets: Vec<BodyTarget<'a>>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

/// Parses a PUT body without building a JSON value per target: at 1,000 targets the general
/// path ([`parse`] over a [`Value`]) allocates several maps and strings per target, and most
/// of a write's cost was there. `share` turns the checked targets into the stored list (an
/// equal list already held is shared instead of allocated again); its first argument is their
/// [`list_digest`].
///
/// `None` when the fast path cannot decide: the body is not an object with a well-typed
/// `targets` array, or some target is invalid. The caller then parses with [`parse`], whose
/// errors name the field; for every body the fast path decides, `parse` gives the same answer.
pub fn parse_fast(
    body: &[u8],
    share: impl FnOnce(u64, &[BodyTarget<'_>]) -> Arc<[Target]>,
) -> Option<Result<Spec, Invalid>> {
    let fast: FastBody<'_> = serde_json::from_slice(body).ok()?;
    let mut names = HashSet::with_capacity(fast.targets.len());
    let valid = fast.targets.iter().all(|t| {
        !t.name.is_empty() && names.insert(&*t.name) && t.address.parse::<IpAddr>().is_ok()
    });
    if !valid {
        return None;
    }
    let digest = list_digest(fast.targets.iter().map(|t| (&*t.name, &*t.address)));
    let targets = share(digest, &fast.targets);
    Some(parse_map(&fast.rest, Some(targets)))
}

/// A digest of a target list, order and addresses included: equal lists give equal digests
/// (for sharing one stored copy between load balancers).
pub fn list_digest<'a>(targets: impl ExactSizeIterator<Item = (&'a str, &'a str)>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    targets.len().hash(&mut h);
    for (name, address) in targets {
        name.hash(&mut h);
        address.hash(&mut h);
    }
    h.finish()
}

/// [`parse`] over the body's object; `targets`, when given, were read and checked already.
fn parse_map(m: &Map<String, Value>, checked: Option<Arc<[Target]>>) -> Result<Spec, Invalid> {
    let labels = match get(m, "labels") {
        None => None,
        Some(v) => {
            let o = as_obj(v, "labels")?;
            let mut out = BTreeMap::new();
            for (k, v) in o {
                let s = as_str(v, &format!("labels.{k}"))?;
                out.insert(k.clone(), s.to_string());
            }
            Some(out)
        }
    };

    let mut listeners = Vec::new();
    let mut seen = HashSet::new();
    for (i, l) in as_arr(require(m, "listeners", "listeners")?, "listeners")?
        .iter()
        .enumerate()
    {
        let f = format!("listeners[{i}]");
        let o = as_obj(l, &f)?;
        let name = get(o, "name")
            .map(|v| as_str(v, &format!("{f}.name")).map(str::to_string))
            .transpose()?;
        let port_ = port(
            require(o, "port", &format!("{f}.port"))?,
            &format!("{f}.port"),
        )?;
        let pf = format!("{f}.protocol");
        let protocol = match as_str(require(o, "protocol", &pf)?, &pf)? {
            "TCP" => Protocol::Tcp,
            "UDP" => Protocol::Udp,
            other => {
                return Err(invalid(
                    pf,
                    format!("unsupported protocol {other:?}: supported values: \"TCP\", \"UDP\""),
                ));
            }
        };
        let tf = format!("{f}.targetPort");
        let target_port = port(require(o, "targetPort", &tf)?, &tf)?;
        if !seen.insert((port_, protocol)) {
            return Err(invalid(
                f,
                format!(
                    "duplicate listener for port {port_}/{}",
                    if protocol == Protocol::Tcp {
                        "TCP"
                    } else {
                        "UDP"
                    }
                ),
            ));
        }
        listeners.push(Listener {
            name,
            port: port_,
            protocol,
            target_port,
        });
    }

    let targets = match checked {
        Some(t) => t,
        None => parse_targets(m)?,
    };

    let hc = as_obj(require(m, "healthCheck", "healthCheck")?, "healthCheck")?;
    let health_check = HealthCheck {
        protocol: match as_str(
            require(hc, "protocol", "healthCheck.protocol")?,
            "healthCheck.protocol",
        )? {
            "TCP" => CheckProtocol::Tcp,
            "HTTP" => CheckProtocol::Http,
            other => {
                return Err(invalid(
                    "healthCheck.protocol",
                    format!("unsupported protocol {other:?}: supported values: \"TCP\", \"HTTP\""),
                ));
            }
        },
        port: get(hc, "port")
            .map(|v| port(v, "healthCheck.port"))
            .transpose()?,
        path: match get(hc, "path") {
            None => None,
            Some(v) => {
                let p = as_str(v, "healthCheck.path")?;
                if !p.starts_with('/') || p.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(invalid(
                        "healthCheck.path",
                        format!("{p:?} must be an absolute path without spaces"),
                    ));
                }
                Some(p.to_string())
            }
        },
        interval_seconds: seconds(hc, "intervalSeconds", "healthCheck", 3600)?,
        timeout_seconds: seconds(hc, "timeoutSeconds", "healthCheck", 3600)?,
        healthy_threshold: seconds(hc, "healthyThreshold", "healthCheck", 100)?,
        unhealthy_threshold: seconds(hc, "unhealthyThreshold", "healthCheck", 100)?,
    };

    let source_ranges = string_list(m, "sourceRanges")?;
    for (i, r) in source_ranges.iter().flatten().enumerate() {
        cidr::parse(r).map_err(|e| invalid(format!("sourceRanges[{i}]"), e))?;
    }

    let session_affinity = match get(m, "sessionAffinity") {
        None => None,
        Some(v) => {
            let o = as_obj(v, "sessionAffinity")?;
            let kind = match as_str(
                require(o, "type", "sessionAffinity.type")?,
                "sessionAffinity.type",
            )? {
                "None" => AffinityType::None,
                "ClientIP" => AffinityType::ClientIp,
                other => {
                    return Err(invalid(
                        "sessionAffinity.type",
                        format!(
                            "unsupported value {other:?}: supported values: \"None\", \"ClientIP\""
                        ),
                    ));
                }
            };
            Some(SessionAffinity {
                kind,
                timeout_seconds: seconds(o, "timeoutSeconds", "sessionAffinity", 86_400)?,
            })
        }
    };

    let ip_families = string_list(m, "ipFamilies")?;
    if let Some(fams) = &ip_families {
        for (i, f) in fams.iter().enumerate() {
            if f != "IPv4" && f != "IPv6" {
                return Err(invalid(
                    format!("ipFamilies[{i}]"),
                    format!("unsupported value {f:?}: supported values: \"IPv4\", \"IPv6\""),
                ));
            }
        }
        if !fams.is_empty() && !fams.iter().any(|f| f == "IPv4") {
            return Err(invalid(
                "ipFamilies",
                "this load balancer only serves IPv4; IPv4 must be one of the families",
            ));
        }
    }

    let requested_addresses = string_list(m, "requestedAddresses")?;

    Ok(Spec {
        labels,
        listeners,
        targets,
        health_check,
        source_ranges,
        session_affinity,
        ip_families,
        requested_addresses,
    })
}

/// The `targets` of a body, each checked, with errors naming the field.
fn parse_targets(m: &Map<String, Value>) -> Result<Arc<[Target]>, Invalid> {
    let mut targets = Vec::new();
    let mut names = HashSet::new();
    for (i, t) in as_arr(require(m, "targets", "targets")?, "targets")?
        .iter()
        .enumerate()
    {
        let f = format!("targets[{i}]");
        let o = as_obj(t, &f)?;
        let nf = format!("{f}.name");
        let name = as_str(require(o, "name", &nf)?, &nf)?;
        if name.is_empty() {
            return Err(invalid(nf, "must not be empty"));
        }
        if !names.insert(name.to_string()) {
            return Err(invalid(nf, format!("duplicate target name {name:?}")));
        }
        let af = format!("{f}.address");
        let address = as_str(require(o, "address", &af)?, &af)?;
        if address.parse::<IpAddr>().is_err() {
            return Err(invalid(af, format!("{address:?} is not an IP address")));
        }
        targets.push(Target {
            name: name.to_string(),
            address: address.to_string(),
        });
    }
    Ok(targets.into())
}

/// Whether `id` matches the contract's pattern `^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`.
pub fn valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    let ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= 63
        && b.first().is_some_and(ok)
        && b.last().is_some_and(ok)
        && b.iter().all(|c| ok(c) || *c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "labels": {"berth.io/cluster": "c1"},
            "listeners": [
                {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 30080},
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 30053}
            ],
            "targets": [{"name": "n1", "address": "127.20.1.1"}],
            "healthCheck": {"protocol": "HTTP", "port": 10256, "path": "/healthz"},
            "sourceRanges": ["10.0.0.0/8"],
            "sessionAffinity": {"type": "ClientIP", "timeoutSeconds": 60}
        })
    }

    fn field_of(v: Value) -> String {
        parse(&v).expect_err("should be invalid").field
    }

    /// The fast path's answer for `v`, with targets shared by building them afresh.
    fn fast(v: &Value) -> Option<Result<Spec, Invalid>> {
        let body = serde_json::to_vec(v).expect("serialisable");
        parse_fast(&body, |digest, targets| {
            let list: Vec<Target> = targets
                .iter()
                .map(|t| Target {
                    name: t.name.to_string(),
                    address: t.address.to_string(),
                })
                .collect();
            assert_eq!(
                digest,
                list_digest(list.iter().map(|t| (t.name.as_str(), t.address.as_str())))
            );
            list.into()
        })
    }

    #[test]
    fn the_fast_path_decides_as_the_general_one_or_not_at_all() {
        let mut cases = vec![base()];
        let mut edit = |f: &dyn Fn(&mut Value)| {
            let mut v = base();
            f(&mut v);
            cases.push(v);
        };
        // Valid variations.
        edit(&|v| v["targets"] = json!([]));
        edit(&|v| v["targets"][0]["extra"] = json!(1));
        edit(&|v| v["targets"][0]["name"] = json!("n\"1\u{e9}"));
        edit(&|v| {
            v["targets"] =
                json!([{"name": "b", "address": "::1"}, {"name": "a", "address": "10.0.0.1"}])
        });
        edit(&|v| v["labels"] = Value::Null);
        edit(&|v| v["unknown"] = json!({"x": [1, 2]}));
        // Invalid targets: the fast path must step aside.
        edit(&|v| v["targets"][0]["address"] = json!("node-1"));
        edit(&|v| v["targets"][0]["name"] = json!(""));
        edit(&|v| v["targets"][0]["name"] = json!(7));
        edit(&|v| v["targets"][0]["name"] = Value::Null);
        edit(&|v| v["targets"] = Value::Null);
        edit(&|v| v["targets"] = json!({"name": "n1"}));
        edit(&|v| {
            v["targets"] =
                json!([{"name": "a", "address": "10.0.0.1"}, {"name": "a", "address": "10.0.0.2"}])
        });
        edit(&|v| {
            v.as_object_mut().expect("object").remove("targets");
        });
        // Valid targets, something else wrong: both answer the same error.
        edit(&|v| v["listeners"][1]["protocol"] = json!("SCTP"));
        edit(&|v| v["healthCheck"]["intervalSeconds"] = json!(0));
        edit(&|v| v["labels"] = json!({"a": 1}));
        edit(&|v| {
            v.as_object_mut().expect("object").remove("healthCheck");
        });
        let mut decided = 0;
        for v in &cases {
            let general = parse(v);
            match fast(v) {
                Some(f) => {
                    decided += 1;
                    assert_eq!(f, general, "{v}");
                }
                None => assert!(general.is_err(), "the fast path refused a valid body: {v}"),
            }
        }
        assert_eq!(
            decided, 11,
            "the fast path decides every body with valid targets"
        );
        assert!(fast(&json!([1])).is_none());
        assert!(parse_fast(b"{\"targets\": [", |_, _| unreachable!()).is_none());
    }

    #[test]
    fn parses_a_full_spec_and_echoes_it() {
        let s = parse(&base()).expect("valid");
        assert_eq!(s.cluster(), Some("c1"));
        assert_eq!(s.listeners[1].protocol, Protocol::Udp);
        assert_eq!(s.affinity_timeout(), Some(Duration::from_secs(60)));
        assert_eq!(serde_json::to_value(&s).expect("serialisable"), base());
        let p = s.health_check.params(0.2);
        assert_eq!(p.interval, Duration::from_secs(1));
        assert_eq!(p.healthy_threshold, 2);
    }

    #[test]
    fn field_precise_errors() {
        let mut v = base();
        v["listeners"][1]["protocol"] = json!("SCTP");
        assert_eq!(field_of(v), "listeners[1].protocol");

        let mut v = base();
        v["listeners"][0]["port"] = json!(0);
        assert_eq!(field_of(v), "listeners[0].port");

        let mut v = base();
        v["listeners"][0]["targetPort"] = json!(70000);
        assert_eq!(field_of(v), "listeners[0].targetPort");

        let mut v = base();
        v["listeners"][1] = json!({"port": 80, "protocol": "TCP", "targetPort": 1});
        assert_eq!(field_of(v), "listeners[1]");

        let mut v = base();
        v["listeners"][1]["port"] = json!(80); // same port, other protocol: fine
        assert!(parse(&v).is_ok());

        let mut v = base();
        v["sourceRanges"] = json!(["10.0.0.0/8", "banana"]);
        assert_eq!(field_of(v), "sourceRanges[1]");

        let mut v = base();
        v["sourceRanges"] = json!(["10.0.0.1"]);
        assert_eq!(field_of(v), "sourceRanges[0]");

        let mut v = base();
        v["targets"][0]["address"] = json!("node-1");
        assert_eq!(field_of(v), "targets[0].address");

        let mut v = base();
        v.as_object_mut().expect("object").remove("healthCheck");
        assert_eq!(field_of(v), "healthCheck");

        let mut v = base();
        v["healthCheck"]["intervalSeconds"] = json!(0);
        assert_eq!(field_of(v), "healthCheck.intervalSeconds");

        let mut v = base();
        v["sessionAffinity"]["type"] = json!("Cookie");
        assert_eq!(field_of(v), "sessionAffinity.type");

        let mut v = base();
        v["ipFamilies"] = json!(["IPv6"]);
        assert_eq!(field_of(v), "ipFamilies");
    }

    #[test]
    fn requested_addresses_must_be_in_the_pool() {
        let mut v = base();
        v["requestedAddresses"] = json!(["127.251.200.7"]);
        let s = parse(&v).expect("valid");
        assert_eq!(
            s.requested_vip(251).expect("in pool").map(|(ip, _)| ip),
            Some(Ipv4Addr::new(127, 251, 200, 7))
        );
        let e = s.requested_vip(250).expect_err("outside");
        assert_eq!(e.field, "requestedAddresses[0]");
        v["requestedAddresses"] = json!(["127.251.200.255"]);
        assert!(parse(&v).expect("valid").requested_vip(251).is_err());
        v["requestedAddresses"] = json!(["nope"]);
        assert!(parse(&v).expect("valid").requested_vip(251).is_err());
        assert_eq!(parse(&base()).expect("valid").requested_vip(251), Ok(None));
    }

    #[test]
    fn etag_depends_on_generation_and_spec_only() {
        let a = parse(&base()).expect("valid");
        let b = parse(&base()).expect("valid");
        assert_eq!(etag(1, &a), etag(1, &b));
        assert_ne!(etag(1, &a), etag(2, &a));
        let mut v = base();
        v["targets"][0]["address"] = json!("127.20.1.2");
        let c = parse(&v).expect("valid");
        assert_ne!(a, c);
        assert_ne!(etag(1, &a), etag(1, &c));
        let e = etag(3, &a);
        assert!(e.starts_with("\"g3-") && e.ends_with('"'));
        assert!(etag_matches(&e, &e));
        assert!(etag_matches(&format!("W/{e}"), &e));
        assert!(etag_matches(&format!("\"x\", {e}"), &e));
        assert!(etag_matches("*", &e));
        assert!(!etag_matches(&etag(2, &a), &e));
    }

    #[test]
    fn ids_follow_the_pattern() {
        assert!(valid_id("a"));
        assert!(valid_id("c1-default-web-1234"));
        assert!(!valid_id("-a"));
        assert!(!valid_id("a-"));
        assert!(!valid_id("A"));
        assert!(!valid_id(&"a".repeat(64)));
        assert!(!valid_id(""));
    }
}
