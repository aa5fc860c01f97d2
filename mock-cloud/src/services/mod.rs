//! Service defaulting, validation and ClusterIP / NodePort / healthCheckNodePort
//! allocation, modelled on kube-apiserver (`SetDefaults_Service`, `ValidateService`,
//! the Service REST allocators and `dropTypeDependentFields`).
//!
//! Pure and synchronous: the HTTP layer owns one [`ServiceIpam`] per cluster and calls
//! [`ServiceIpam::create`], [`ServiceIpam::update`] and [`ServiceIpam::release`] around
//! its store writes. Every error is a list of [`FieldError`]s; those with
//! [`REASON_INTERNAL`] must be rendered as a 500 `InternalError` Status (that is what
//! kube-apiserver does for exhausted ranges), all others as a 422 `Invalid` Status.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::ops::RangeInclusive;

use rand::Rng;
use serde_json::{Map, Value, json};

/// Cause reason for a malformed value.
pub const REASON_INVALID: &str = "FieldValueInvalid";
/// Cause reason for a missing value.
pub const REASON_REQUIRED: &str = "FieldValueRequired";
/// Cause reason for a value that must be unique.
pub const REASON_DUPLICATE: &str = "FieldValueDuplicate";
/// Cause reason for a value outside an enumeration.
pub const REASON_NOT_SUPPORTED: &str = "FieldValueNotSupported";
/// Cause reason for a value not allowed in this context.
pub const REASON_FORBIDDEN: &str = "FieldValueForbidden";
/// Cause reason for a JSON value of the wrong type (upstream rejects these while decoding).
pub const REASON_TYPE_INVALID: &str = "FieldValueTypeInvalid";
/// Not a field problem: kube-apiserver answers 500 `InternalError` with
/// `"Internal error occurred: <message>"` (e.g. `failed to allocate a nodePort: range is full`).
pub const REASON_INTERNAL: &str = "InternalError";

/// One field error; the API layer renders a 422 `Invalid` Status from these
/// (message `Service "name" is invalid: <field>: <detail>`, `details.causes[{reason, message, field}]`).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// JSON path of the offending field, e.g. `spec.ports[1].nodePort` (empty for internal errors).
    pub field: String,
    /// One of the `REASON_*` constants.
    pub reason: &'static str,
    /// The upstream error body, e.g. `Invalid value: 30080: provided port is already allocated`.
    pub message: String,
}

impl FieldError {
    fn new(field: impl Into<String>, reason: &'static str, message: String) -> Self {
        Self {
            field: field.into(),
            reason,
            message,
        }
    }

    fn invalid(field: impl Into<String>, value: String, detail: &str) -> Self {
        Self::new(
            field,
            REASON_INVALID,
            with_detail(format!("Invalid value: {value}"), detail),
        )
    }

    fn required(field: impl Into<String>, detail: &str) -> Self {
        Self::new(
            field,
            REASON_REQUIRED,
            with_detail("Required value".into(), detail),
        )
    }

    fn duplicate(field: impl Into<String>, value: String) -> Self {
        Self::new(field, REASON_DUPLICATE, format!("Duplicate value: {value}"))
    }

    fn not_supported(field: impl Into<String>, value: String, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| q(s)).collect();
        let msg = format!(
            "Unsupported value: {value}: supported values: {}",
            list.join(", ")
        );
        Self::new(field, REASON_NOT_SUPPORTED, msg)
    }

    fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        Self::new(field, REASON_FORBIDDEN, format!("Forbidden: {detail}"))
    }

    fn type_invalid(field: impl Into<String>, value: &Value, expected: &str) -> Self {
        let msg = format!("Invalid value: {value}: expected {expected}");
        Self::new(field, REASON_TYPE_INVALID, msg)
    }

    fn internal(detail: String) -> Self {
        Self::new("", REASON_INTERNAL, detail)
    }

    /// True when this error is a 500 `InternalError` rather than a 422 cause.
    pub fn is_internal(&self) -> bool {
        self.reason == REASON_INTERNAL
    }

    /// `field: message`, the text upstream joins into the Status message.
    pub fn to_status_text(&self) -> String {
        if self.field.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.field, self.message)
        }
    }
}

fn with_detail(mut s: String, detail: &str) -> String {
    if !detail.is_empty() {
        s.push_str(": ");
        s.push_str(detail);
    }
    s
}

/// Go `%q`-style rendering of a string (JSON escaping is the same for printable text).
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// JSON rendering of a string list, as upstream renders `[]string` bad values.
fn qlist(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// Renders an optional string the way upstream renders a `*string` bad value.
fn qopt(v: &Option<String>) -> String {
    v.as_deref().map_or_else(|| "null".to_string(), q)
}

// ---------------------------------------------------------------------------
// Typed view of the fields this module cares about.
// ---------------------------------------------------------------------------

const TYPE_CLUSTER_IP: &str = "ClusterIP";
const TYPE_NODE_PORT: &str = "NodePort";
const TYPE_LOAD_BALANCER: &str = "LoadBalancer";
const TYPE_EXTERNAL_NAME: &str = "ExternalName";
const NONE: &str = "None";
const IPV4: &str = "IPv4";
const IPV6: &str = "IPv6";
const SINGLE_STACK: &str = "SingleStack";
const PREFER_DUAL: &str = "PreferDualStack";
const REQUIRE_DUAL: &str = "RequireDualStack";
const LOCAL: &str = "Local";
const CLUSTER: &str = "Cluster";
const SOURCE_RANGES_ANNOTATION: &str = "service.beta.kubernetes.io/load-balancer-source-ranges";
const DEFAULT_AFFINITY_TIMEOUT: i64 = 10800;

#[derive(Debug, Clone, PartialEq)]
enum TargetPort {
    Int(i64),
    Str(String),
}

#[derive(Debug, Clone)]
struct Port {
    name: String,
    protocol: String,
    port: i64,
    target: TargetPort,
    node_port: i64,
    app_protocol: Option<String>,
}

#[derive(Debug, Clone, Default)]
struct Svc {
    name: String,
    namespace: String,
    source_ranges_annotation: Option<String>,
    ty: String,
    cluster_ip: String,
    cluster_ips: Vec<String>,
    families: Vec<String>,
    policy: Option<String>,
    ports: Vec<Port>,
    selector: Option<BTreeMap<String, String>>,
    affinity: String,
    affinity_config: bool,
    affinity_timeout: Option<i64>,
    external_ips: Vec<String>,
    source_ranges: Vec<String>,
    alloc_lb_node_ports: Option<bool>,
    lb_class: Option<String>,
    etp: String,
    itp: Option<String>,
    hc_node_port: i64,
    external_name: String,
    /// Set when the type left LoadBalancer: `status.loadBalancer` must be cleared.
    clear_lb_status: bool,
}

impl Svc {
    fn is(&self, ty: &str) -> bool {
        self.ty == ty
    }
    fn needs_cluster_ip(&self) -> bool {
        !self.is(TYPE_EXTERNAL_NAME)
    }
    fn needs_node_port(&self) -> bool {
        self.is(TYPE_NODE_PORT) || self.is(TYPE_LOAD_BALANCER)
    }
    fn externally_accessible(&self) -> bool {
        self.needs_node_port() || (self.is(TYPE_CLUSTER_IP) && !self.external_ips.is_empty())
    }
    /// Upstream `NeedsHealthCheck`: LoadBalancer with externalTrafficPolicy Local.
    fn needs_health_check(&self) -> bool {
        self.is(TYPE_LOAD_BALANCER) && self.etp == LOCAL
    }
    fn is_headless(&self) -> bool {
        self.cluster_ips.len() == 1 && self.cluster_ips[0] == NONE
    }
    fn selector_empty(&self) -> bool {
        self.selector.as_ref().is_none_or(BTreeMap::is_empty)
    }
    fn should_allocate_node_ports(&self) -> bool {
        self.is(TYPE_NODE_PORT)
            || (self.is(TYPE_LOAD_BALANCER) && self.alloc_lb_node_ports != Some(false))
    }
    fn node_port_numbers(&self) -> Vec<i64> {
        self.ports
            .iter()
            .map(|p| p.node_port)
            .filter(|&n| n != 0)
            .collect()
    }
}

mod alloc;
mod defaults;
mod ipam;
mod names;
mod parse;
#[cfg(test)]
mod tests;
mod validation;

pub use ipam::{ServiceIpam, ServiceIpamConfig};
pub use validation::validate;
