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

// ---------------------------------------------------------------------------
// Parsing (never panics: wrong types become FieldErrors).
// ---------------------------------------------------------------------------

struct Parser {
    errs: Vec<FieldError>,
}

impl Parser {
    fn get<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
        obj.get(key).filter(|v| !v.is_null())
    }

    fn string(&mut self, obj: &Map<String, Value>, key: &str, path: &str) -> Option<String> {
        match Self::get(obj, key)? {
            Value::String(s) => Some(s.clone()),
            other => {
                self.errs
                    .push(FieldError::type_invalid(path, other, "string"));
                None
            }
        }
    }

    fn int(&mut self, obj: &Map<String, Value>, key: &str, path: &str) -> Option<i64> {
        let v = Self::get(obj, key)?;
        // Go int32 fields: anything else fails decoding upstream.
        match v.as_i64().filter(|n| i32::try_from(*n).is_ok()) {
            Some(n) => Some(n),
            None => {
                self.errs.push(FieldError::type_invalid(path, v, "integer"));
                None
            }
        }
    }

    fn boolean(&mut self, obj: &Map<String, Value>, key: &str, path: &str) -> Option<bool> {
        let v = Self::get(obj, key)?;
        match v.as_bool() {
            Some(b) => Some(b),
            None => {
                self.errs.push(FieldError::type_invalid(path, v, "boolean"));
                None
            }
        }
    }

    fn object<'a>(
        &mut self,
        obj: &'a Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Option<&'a Map<String, Value>> {
        let v = Self::get(obj, key)?;
        match v.as_object() {
            Some(m) => Some(m),
            None => {
                self.errs.push(FieldError::type_invalid(path, v, "object"));
                None
            }
        }
    }

    fn array<'a>(&mut self, obj: &'a Map<String, Value>, key: &str, path: &str) -> &'a [Value] {
        match Self::get(obj, key) {
            None => &[],
            Some(Value::Array(a)) => a,
            Some(other) => {
                self.errs
                    .push(FieldError::type_invalid(path, other, "array"));
                &[]
            }
        }
    }

    fn strings(&mut self, obj: &Map<String, Value>, key: &str, path: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (i, v) in self.array(obj, key, path).iter().enumerate() {
            match v.as_str() {
                Some(s) => out.push(s.to_string()),
                None => self.errs.push(FieldError::type_invalid(
                    format!("{path}[{i}]"),
                    v,
                    "string",
                )),
            }
        }
        out
    }

    fn string_map(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Option<BTreeMap<String, String>> {
        let m = self.object(obj, key, path)?;
        let mut out = BTreeMap::new();
        for (k, v) in m {
            match v.as_str() {
                Some(s) => {
                    out.insert(k.clone(), s.to_string());
                }
                None if v.is_null() => {}
                None => self.errs.push(FieldError::type_invalid(
                    format!("{path}[{k}]"),
                    v,
                    "string",
                )),
            }
        }
        Some(out)
    }

    fn port(&mut self, v: &Value, path: &str) -> Option<Port> {
        let Some(obj) = v.as_object() else {
            self.errs.push(FieldError::type_invalid(path, v, "object"));
            return None;
        };
        let target = match Self::get(obj, "targetPort") {
            None => TargetPort::Int(0),
            Some(Value::String(s)) => TargetPort::Str(s.clone()),
            Some(t) => match t.as_i64().filter(|n| i32::try_from(*n).is_ok()) {
                Some(n) => TargetPort::Int(n),
                None => {
                    let p = format!("{path}.targetPort");
                    self.errs
                        .push(FieldError::type_invalid(p, t, "integer or string"));
                    TargetPort::Int(0)
                }
            },
        };
        Some(Port {
            name: self
                .string(obj, "name", &format!("{path}.name"))
                .unwrap_or_default(),
            protocol: self
                .string(obj, "protocol", &format!("{path}.protocol"))
                .unwrap_or_default(),
            port: self.int(obj, "port", &format!("{path}.port")).unwrap_or(0),
            target,
            node_port: self
                .int(obj, "nodePort", &format!("{path}.nodePort"))
                .unwrap_or(0),
            app_protocol: self.string(obj, "appProtocol", &format!("{path}.appProtocol")),
        })
    }

    fn metadata(&mut self, root: &Map<String, Value>, svc: &mut Svc) {
        let Some(meta) = self.object(root, "metadata", "metadata") else {
            return;
        };
        svc.name = self
            .string(meta, "name", "metadata.name")
            .unwrap_or_default();
        svc.namespace = self
            .string(meta, "namespace", "metadata.namespace")
            .unwrap_or_default();
        if let Some(ann) = self.object(meta, "annotations", "metadata.annotations") {
            let path = format!("metadata.annotations[{SOURCE_RANGES_ANNOTATION}]");
            svc.source_ranges_annotation = self.string(ann, SOURCE_RANGES_ANNOTATION, &path);
        }
    }

    fn spec(&mut self, spec: &Map<String, Value>, svc: &mut Svc) {
        svc.ty = self.string(spec, "type", "spec.type").unwrap_or_default();
        svc.cluster_ip = self
            .string(spec, "clusterIP", "spec.clusterIP")
            .unwrap_or_default();
        svc.cluster_ips = self.strings(spec, "clusterIPs", "spec.clusterIPs");
        svc.families = self.strings(spec, "ipFamilies", "spec.ipFamilies");
        svc.policy = self.string(spec, "ipFamilyPolicy", "spec.ipFamilyPolicy");
        for (i, p) in self.array(spec, "ports", "spec.ports").iter().enumerate() {
            if let Some(port) = self.port(p, &format!("spec.ports[{i}]")) {
                svc.ports.push(port);
            }
        }
        svc.selector = self.string_map(spec, "selector", "spec.selector");
        svc.affinity = self
            .string(spec, "sessionAffinity", "spec.sessionAffinity")
            .unwrap_or_default();
        self.affinity_config(spec, svc);
        svc.external_ips = self.strings(spec, "externalIPs", "spec.externalIPs");
        svc.source_ranges = self.strings(
            spec,
            "loadBalancerSourceRanges",
            "spec.loadBalancerSourceRanges",
        );
        let path = "spec.allocateLoadBalancerNodePorts";
        svc.alloc_lb_node_ports = self.boolean(spec, "allocateLoadBalancerNodePorts", path);
        svc.lb_class = self.string(spec, "loadBalancerClass", "spec.loadBalancerClass");
        svc.etp = self
            .string(spec, "externalTrafficPolicy", "spec.externalTrafficPolicy")
            .unwrap_or_default();
        svc.itp = self.string(spec, "internalTrafficPolicy", "spec.internalTrafficPolicy");
        svc.hc_node_port = self
            .int(spec, "healthCheckNodePort", "spec.healthCheckNodePort")
            .unwrap_or(0);
        svc.external_name = self
            .string(spec, "externalName", "spec.externalName")
            .unwrap_or_default();
    }

    fn affinity_config(&mut self, spec: &Map<String, Value>, svc: &mut Svc) {
        let Some(cfg) = self.object(spec, "sessionAffinityConfig", "spec.sessionAffinityConfig")
        else {
            return;
        };
        svc.affinity_config = true;
        let path = "spec.sessionAffinityConfig.clientIP";
        if let Some(client) = self.object(cfg, "clientIP", path) {
            svc.affinity_timeout =
                self.int(client, "timeoutSeconds", &format!("{path}.timeoutSeconds"));
        }
    }
}

/// Parses the fields of a Service object this module manages.
fn parse(svc: &Value) -> Result<Svc, Vec<FieldError>> {
    let mut p = Parser { errs: Vec::new() };
    let mut out = Svc::default();
    let Some(root) = svc.as_object() else {
        return Err(vec![FieldError::type_invalid("", svc, "object")]);
    };
    p.metadata(root, &mut out);
    if let Some(spec) = p.object(root, "spec", "spec") {
        p.spec(spec, &mut out);
    }
    if p.errs.is_empty() {
        Ok(out)
    } else {
        Err(p.errs)
    }
}

// ---------------------------------------------------------------------------
// Defaulting (SetDefaults_Service) and normalisation (strategy / storage).
// ---------------------------------------------------------------------------

/// Upstream `SetDefaults_Service` for the v1 API.
fn set_defaults(svc: &mut Svc) {
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
fn normalize_cluster_ips(new: &mut Svc, old: Option<&Svc>) {
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
fn patch_allocated_values(new: &mut Svc, old: &Svc) {
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
fn drop_type_dependent_fields(new: &mut Svc, old: &Svc) {
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
fn trim_for_dual_stack_downgrade(new: &mut Svc, old: &Svc) {
    let old_dual = matches!(old.policy.as_deref(), Some(PREFER_DUAL | REQUIRE_DUAL));
    if old_dual && new.policy.as_deref() == Some(SINGLE_STACK) {
        new.cluster_ips.truncate(1);
        new.families.truncate(1);
    }
}

// ---------------------------------------------------------------------------
// Write-back.
// ---------------------------------------------------------------------------

fn set_or_remove(obj: &mut Map<String, Value>, key: &str, v: Option<Value>) {
    match v {
        Some(v) => {
            obj.insert(key.to_string(), v);
        }
        None => {
            obj.remove(key);
        }
    }
}

fn non_empty_str(s: &str) -> Option<Value> {
    (!s.is_empty()).then(|| Value::String(s.to_string()))
}

fn non_empty_list(v: &[String]) -> Option<Value> {
    (!v.is_empty()).then(|| json!(v))
}

/// Writes the managed (defaulted / allocated) fields back into the object.
fn write_back(obj: &mut Value, svc: &Svc) {
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

fn write_spec(spec: &mut Map<String, Value>, svc: &Svc) {
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

fn write_port(po: &mut Map<String, Value>, p: &Port) {
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

// ---------------------------------------------------------------------------
// Allocators: a bitmap with upstream's static/dynamic band split.
// ---------------------------------------------------------------------------

/// Offsets `0..max` of a range; dynamic allocation tries the upper band
/// `[offset, max)` first, then the lower band (KEP-3070 / KEP-3668).
#[derive(Debug, Clone)]
struct Bitmap {
    max: u64,
    offset: u64,
    /// Offsets below this are never handed out dynamically (the `kubernetes` ClusterIP).
    min_dynamic: u64,
    used: BTreeSet<u64>,
}

impl Bitmap {
    fn take(&mut self, off: u64) -> bool {
        off < self.max && self.used.insert(off)
    }

    fn release(&mut self, off: u64) {
        self.used.remove(&off);
    }

    fn next_free(&mut self) -> Option<u64> {
        let upper = self.offset.max(self.min_dynamic)..self.max;
        let lower = self.min_dynamic..self.offset.min(self.max);
        let found = self.scan_band(upper).or_else(|| self.scan_band(lower))?;
        self.used.insert(found);
        Some(found)
    }

    /// Random start, then a circular scan of the band.
    fn scan_band(&self, band: std::ops::Range<u64>) -> Option<u64> {
        if band.is_empty() {
            return None;
        }
        let start = rand::rng().random_range(band.clone());
        (start..band.end)
            .chain(band.start..start)
            .find(|o| !self.used.contains(o))
    }
}

/// `min(max(16, size/step), cap)`, 0 for ranges of at most 16 (upstream `calculateRangeOffset`).
fn range_offset(size: u128, step: u128, cap: u128) -> u64 {
    if size <= 16 {
        return 0;
    }
    u64::try_from((size / step).clamp(16, cap)).unwrap_or(0)
}

#[derive(Debug, Clone)]
enum AllocError {
    Allocated,
    NotInRange(String),
    Full,
}

#[derive(Debug, Clone)]
struct PortAllocator {
    base: u16,
    last: u16,
    bits: Bitmap,
}

impl PortAllocator {
    fn new(range: &RangeInclusive<u16>) -> Result<Self, String> {
        let (base, last) = (*range.start(), *range.end());
        if base > last || base == 0 {
            return Err(format!("invalid node port range {base}-{last}"));
        }
        let size = u128::from(last - base) + 1;
        let bits = Bitmap {
            max: size as u64,
            offset: range_offset(size, 32, 128),
            min_dynamic: 0,
            used: BTreeSet::new(),
        };
        Ok(Self { base, last, bits })
    }

    fn range_text(&self) -> String {
        format!("{}-{}", self.base, self.last)
    }

    fn offset_of(&self, port: i64) -> Option<u64> {
        (i64::from(self.base)..=i64::from(self.last))
            .contains(&port)
            .then(|| (port - i64::from(self.base)) as u64)
    }

    fn allocate(&mut self, port: i64) -> Result<(), AllocError> {
        let off = self
            .offset_of(port)
            .ok_or_else(|| AllocError::NotInRange(self.range_text()))?;
        if self.bits.take(off) {
            Ok(())
        } else {
            Err(AllocError::Allocated)
        }
    }

    fn allocate_next(&mut self) -> Result<i64, AllocError> {
        let off = self.bits.next_free().ok_or(AllocError::Full)?;
        Ok(i64::from(self.base) + off as i64)
    }

    fn release(&mut self, port: i64) {
        if let Some(off) = self.offset_of(port) {
            self.bits.release(off);
        }
    }

    fn port_error_text(&self, e: &AllocError) -> String {
        match e {
            AllocError::Allocated => "provided port is already allocated".into(),
            AllocError::NotInRange(r) => {
                format!("provided port is not in the valid range. The range of valid ports is {r}")
            }
            AllocError::Full => "range is full".into(),
        }
    }
}

#[derive(Debug, Clone)]
struct IpRange {
    family: &'static str,
    network: u128,
    prefix: u8,
    /// First usable address (network + 1); offset 0 is reserved for the `kubernetes` Service.
    base: u128,
    bits: Bitmap,
}

fn ip_to_u128(ip: IpAddr) -> (bool, u128) {
    match ip {
        IpAddr::V4(a) => (false, u128::from(u32::from(a))),
        IpAddr::V6(a) => (true, u128::from(a)),
    }
}

fn u128_to_ip(v6: bool, n: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(n.into())
    } else {
        IpAddr::V4(u32::try_from(n).unwrap_or(0).into())
    }
}

/// Parses `a.b.c.d/n` or `x::/n` into (address, prefix length).
fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, len) = s.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) || len.len() > 3 {
        return None;
    }
    let len: u8 = len.parse().ok()?;
    let bits = if ip.is_ipv4() { 32 } else { 128 };
    (len <= bits).then_some((ip, len))
}

fn mask(bits: u32, prefix: u8) -> u128 {
    let host = bits - u32::from(prefix);
    let all = if bits == 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    };
    if host >= 128 {
        0
    } else {
        all & !((1u128 << host) - 1)
    }
}

impl IpRange {
    fn new(cidr: &str) -> Result<Self, String> {
        let (ip, prefix) =
            parse_cidr(cidr).ok_or_else(|| format!("invalid service CIDR {cidr:?}"))?;
        let (v6, n) = ip_to_u128(ip);
        let bits = if v6 { 128 } else { 32 };
        let network = n & mask(bits, prefix);
        let host_bits = bits - u32::from(prefix);
        let size: u128 = if host_bits >= 127 {
            u128::MAX
        } else {
            1u128 << host_bits
        };
        // IPv6 ranges are capped at 65536 (upstream keeps a bitmap); IPv4 loses the broadcast address.
        let mut max = if v6 {
            size.min(65536)
        } else {
            size.saturating_sub(1)
        };
        max = max.saturating_sub(1); // the network address
        let max = u64::try_from(max).unwrap_or(u64::MAX);
        let bits = Bitmap {
            max,
            offset: range_offset(size, 16, 256),
            min_dynamic: 1,
            used: BTreeSet::new(),
        };
        let family = if v6 { IPV6 } else { IPV4 };
        Ok(Self {
            family,
            network,
            prefix,
            base: network + 1,
            bits,
        })
    }

    fn cidr_text(&self) -> String {
        format!(
            "{}/{}",
            u128_to_ip(self.family == IPV6, self.network),
            self.prefix
        )
    }

    fn offset_of(&self, ip: &str) -> Option<u64> {
        let (v6, n) = ip_to_u128(ip.parse().ok()?);
        let bits = if v6 { 128 } else { 32 };
        if v6 != (self.family == IPV6)
            || n & mask(bits, self.prefix) != self.network
            || n < self.base
        {
            return None;
        }
        u64::try_from(n - self.base)
            .ok()
            .filter(|&o| o < self.bits.max)
    }

    fn allocate(&mut self, ip: &str) -> Result<(), AllocError> {
        let off = self
            .offset_of(ip)
            .ok_or_else(|| AllocError::NotInRange(ip.to_string()))?;
        if self.bits.take(off) {
            Ok(())
        } else {
            Err(AllocError::Allocated)
        }
    }

    fn allocate_next(&mut self, wants_reserved: bool) -> Result<String, AllocError> {
        let off = if wants_reserved && self.bits.take(0) {
            Some(0)
        } else {
            self.bits.next_free()
        };
        let off = off.ok_or(AllocError::Full)?;
        Ok(u128_to_ip(self.family == IPV6, self.base + u128::from(off)).to_string())
    }

    fn release(&mut self, ip: &str) {
        if let Some(off) = self.offset_of(ip) {
            self.bits.release(off);
        }
    }
}

fn ip_error_text(e: &AllocError) -> String {
    match e {
        AllocError::Allocated => "provided IP is already allocated".into(),
        AllocError::NotInRange(ip) => format!("provided IP {ip} is not in the valid range"),
        AllocError::Full => "range is full".into(),
    }
}

fn family_of(ip: &str) -> Option<&'static str> {
    match ip.parse::<IpAddr>().ok()? {
        IpAddr::V4(_) => Some(IPV4),
        IpAddr::V6(_) => Some(IPV6),
    }
}

fn other_family(f: &str) -> &'static str {
    if f == IPV4 { IPV6 } else { IPV4 }
}

// ---------------------------------------------------------------------------
// The allocator set.
// ---------------------------------------------------------------------------

/// Cluster configuration for Service allocation.
pub struct ServiceIpamConfig {
    /// Service CIDRs, primary first, e.g. `["10.96.0.0/12"]` or `["10.96.0.0/12", "fd00:10:96::/112"]`.
    pub cluster_ip_cidrs: Vec<String>,
    /// NodePort range, default `30000..=32767`.
    pub node_port_range: RangeInclusive<u16>,
}

impl Default for ServiceIpamConfig {
    fn default() -> Self {
        Self {
            cluster_ip_cidrs: vec!["10.96.0.0/12".into()],
            node_port_range: 30000..=32767,
        }
    }
}

#[derive(Debug, Clone)]
struct State {
    ips: Vec<IpRange>,
    ports: PortAllocator,
}

/// Releases that only happen if the whole operation succeeds.
#[derive(Default)]
struct Deferred {
    ports: Vec<i64>,
    ips: Vec<String>,
}

/// ClusterIP and NodePort allocators plus the Service create/update/delete logic.
#[derive(Debug, Clone)]
pub struct ServiceIpam {
    state: State,
}

impl ServiceIpam {
    /// Builds the allocators; fails on malformed CIDRs, two CIDRs of one family, or an empty port range.
    pub fn new(cfg: ServiceIpamConfig) -> Result<Self, String> {
        if cfg.cluster_ip_cidrs.is_empty() || cfg.cluster_ip_cidrs.len() > 2 {
            return Err("expected one or two service CIDRs".into());
        }
        let ips = cfg
            .cluster_ip_cidrs
            .iter()
            .map(|c| IpRange::new(c))
            .collect::<Result<Vec<_>, _>>()?;
        if ips.len() == 2 && ips[0].family == ips[1].family {
            return Err("the two service CIDRs must be of different IP families".into());
        }
        let ports = PortAllocator::new(&cfg.node_port_range)?;
        Ok(Self {
            state: State { ips, ports },
        })
    }

    /// Defaults, validates and allocates for a Service being created (the whole object; `metadata.name` is set).
    /// On error nothing stays allocated and `svc` is left untouched.
    pub fn create(&mut self, svc: &mut Value) -> Result<(), Vec<FieldError>> {
        let mut s = parse(svc)?;
        set_defaults(&mut s);
        normalize_cluster_ips(&mut s, None);
        let saved = self.state.clone();
        let result = self
            .allocate_create(&mut s)
            .and_then(|()| errs_to_result(validate_service(&s)));
        if result.is_err() {
            self.state = saved;
        } else {
            write_back(svc, &s);
        }
        result
    }

    /// For an update/patch: `old` is the stored Service, `new` the desired one. Carries allocations over,
    /// allocates what is newly needed, releases what is no longer needed — all or nothing.
    pub fn update(&mut self, old: &Value, new: &mut Value) -> Result<(), Vec<FieldError>> {
        let mut o = parse(old)?;
        set_defaults(&mut o);
        let mut n = parse(new)?;
        set_defaults(&mut n);
        patch_allocated_values(&mut n, &o);
        normalize_cluster_ips(&mut n, Some(&o));
        let saved = self.state.clone();
        let mut deferred = Deferred::default();
        let result = self
            .allocate_update(&mut n, &o, &mut deferred)
            .and_then(|()| {
                normalize_cluster_ips(&mut n, Some(&o));
                drop_type_dependent_fields(&mut n, &o);
                trim_for_dual_stack_downgrade(&mut n, &o);
                errs_to_result(validate_service_update(&n, &o))
            });
        match result {
            Ok(()) => {
                self.apply_deferred(deferred);
                write_back(new, &n);
                Ok(())
            }
            Err(e) => {
                self.state = saved;
                Err(e)
            }
        }
    }

    /// As [`ServiceIpam::create`] without keeping any allocation (for `dryRun=All`).
    pub fn dry_run_create(&self, svc: &mut Value) -> Result<(), Vec<FieldError>> {
        self.clone().create(svc)
    }

    /// As [`ServiceIpam::update`] without changing any allocation (for `dryRun=All`).
    pub fn dry_run_update(&self, old: &Value, new: &mut Value) -> Result<(), Vec<FieldError>> {
        self.clone().update(old, new)
    }

    /// The Service was deleted: release everything it held. Tolerates malformed objects.
    pub fn release(&mut self, svc: &Value) {
        let s = parse_lenient(svc);
        if s.needs_cluster_ip() && s.cluster_ips.first().is_none_or(|ip| ip != NONE) {
            for ip in &s.cluster_ips {
                self.release_ip(ip);
            }
        }
        for n in s.node_port_numbers() {
            self.state.ports.release(n);
        }
        if s.needs_health_check() && s.hc_node_port > 0 {
            self.state.ports.release(s.hc_node_port);
        }
    }

    /// Number of NodePorts (including healthCheckNodePorts) currently allocated.
    pub fn node_ports_in_use(&self) -> usize {
        self.state.ports.bits.used.len()
    }

    /// Number of NodePorts still free.
    pub fn node_ports_free(&self) -> usize {
        (self.state.ports.bits.max as usize).saturating_sub(self.node_ports_in_use())
    }

    /// Number of ClusterIPs allocated across all configured families.
    pub fn cluster_ips_in_use(&self) -> usize {
        self.state.ips.iter().map(|r| r.bits.used.len()).sum()
    }

    /// True if `port` is currently allocated.
    pub fn is_node_port_allocated(&self, port: u16) -> bool {
        self.state
            .ports
            .offset_of(i64::from(port))
            .is_some_and(|o| self.state.ports.bits.used.contains(&o))
    }

    /// True if the ClusterIP `ip` is currently allocated.
    pub fn is_cluster_ip_allocated(&self, ip: &str) -> bool {
        self.state
            .ips
            .iter()
            .any(|r| r.offset_of(ip).is_some_and(|o| r.bits.used.contains(&o)))
    }

    /// The configured service CIDRs, primary first.
    pub fn service_cidrs(&self) -> Vec<String> {
        self.state.ips.iter().map(IpRange::cidr_text).collect()
    }

    fn primary_family(&self) -> &'static str {
        self.state.ips[0].family
    }

    fn has_family(&self, fam: &str) -> bool {
        self.state.ips.iter().any(|r| r.family == fam)
    }

    fn range_mut(&mut self, fam: &str) -> Option<&mut IpRange> {
        self.state.ips.iter_mut().find(|r| r.family == fam)
    }

    fn release_ip(&mut self, ip: &str) {
        if let Some(r) = family_of(ip).and_then(|f| self.range_mut(f)) {
            r.release(ip);
        }
    }

    fn apply_deferred(&mut self, d: Deferred) {
        for p in d.ports {
            self.state.ports.release(p);
        }
        for ip in d.ips {
            self.release_ip(&ip);
        }
    }

    // --- create -----------------------------------------------------------

    fn allocate_create(&mut self, s: &mut Svc) -> Result<(), Vec<FieldError>> {
        self.init_ip_family_fields(s, None)?;
        self.alloc_cluster_ips(s)?;
        if s.needs_node_port() {
            self.init_node_ports(s)?;
        }
        if s.needs_health_check() {
            self.alloc_health_check_node_port(s)?;
        }
        Ok(())
    }

    /// Upstream `initIPFamilyFields`: default ipFamilyPolicy / ipFamilies against the cluster config.
    fn init_ip_family_fields(&self, s: &mut Svc, old: Option<&Svc>) -> Result<(), Vec<FieldError>> {
        if s.is(TYPE_EXTERNAL_NAME) || old.is_some_and(|o| matching_prefer_dual_stack(s, o)) {
            return Ok(());
        }
        if s.policy.is_none() {
            s.policy = match old.and_then(|o| o.policy.clone()) {
                Some(p) => Some(p),
                None if s.cluster_ip == NONE && s.selector_empty() => Some(REQUIRE_DUAL.into()),
                None => Some(SINGLE_STACK.into()),
            };
        }
        errs_to_result(validate_cluster_ips_related(s))?;
        let mut errs = Vec::new();
        if let Some(old) = old {
            prepare_family_update(s, old, &mut errs);
        }
        self.check_single_stack_and_infer(s, &mut errs);
        errs_to_result(errs)?;
        if s.cluster_ip == NONE && s.selector_empty() {
            if s.families.is_empty() {
                s.families.push(self.primary_family().into());
            }
            if s.families.len() < 2 && s.policy.as_deref() != Some(SINGLE_STACK) {
                let other = other_family(&s.families[0]);
                s.families.push(other.into());
            }
            return Ok(());
        }
        self.check_families_configured(s)?;
        if s.families.is_empty() {
            s.families.push(self.primary_family().into());
        }
        if s.policy.as_deref() != Some(SINGLE_STACK)
            && s.families.len() == 1
            && self.state.ips.len() == 2
        {
            let other = other_family(&s.families[0]);
            s.families.push(other.into());
        }
        Ok(())
    }

    fn check_single_stack_and_infer(&self, s: &mut Svc, errs: &mut Vec<FieldError>) {
        if s.policy.as_deref() == Some(SINGLE_STACK) {
            let detail = "must be 'RequireDualStack' or 'PreferDualStack' when multiple";
            if s.cluster_ips.len() == 2 {
                let msg = format!("{detail} cluster IPs are specified");
                errs.push(FieldError::invalid(
                    "spec.ipFamilyPolicy",
                    qopt(&s.policy),
                    &msg,
                ));
            }
            if s.families.len() == 2 {
                let msg = format!("{detail} IP families are specified");
                errs.push(FieldError::invalid(
                    "spec.ipFamilyPolicy",
                    qopt(&s.policy),
                    &msg,
                ));
            }
        }
        for i in 0..s.cluster_ips.len() {
            let ip = &s.cluster_ips[i];
            if ip == NONE {
                break;
            }
            let Some(fam) = family_of(ip) else { continue };
            if i >= s.families.len() {
                if self.has_family(fam) {
                    s.families.push(fam.into());
                } else {
                    let msg = format!("{fam} is not configured on this cluster");
                    errs.push(FieldError::invalid(
                        format!("spec.clusterIPs[{i}]"),
                        qlist(&s.cluster_ips),
                        &msg,
                    ));
                }
            }
        }
    }

    fn check_families_configured(&self, s: &Svc) -> Result<(), Vec<FieldError>> {
        let mut errs = Vec::new();
        if s.policy.as_deref() == Some(REQUIRE_DUAL) && self.state.ips.len() < 2 {
            let msg = "this cluster is not configured for dual-stack services";
            errs.push(FieldError::invalid(
                "spec.ipFamilyPolicy",
                qopt(&s.policy),
                msg,
            ));
        }
        for (i, fam) in s.families.iter().enumerate() {
            if !self.has_family(fam) {
                errs.push(FieldError::invalid(
                    format!("spec.ipFamilies[{i}]"),
                    q(fam),
                    "not configured on this cluster",
                ));
            }
        }
        errs_to_result(errs)
    }

    /// Upstream `allocClusterIPs`: one IP per requested family, explicit ones honoured.
    fn alloc_cluster_ips(&mut self, s: &mut Svc) -> Result<(), Vec<FieldError>> {
        if s.is(TYPE_EXTERNAL_NAME) || s.cluster_ips.first().is_some_and(|ip| ip == NONE) {
            return Ok(());
        }
        while s.cluster_ips.len() < s.families.len() {
            s.cluster_ips.push(String::new());
        }
        for i in 0..s.families.len() {
            self.alloc_ip_at(s, i)?;
        }
        if let Some(first) = s.cluster_ips.first() {
            s.cluster_ip = first.clone();
        }
        Ok(())
    }

    fn alloc_ip_at(&mut self, s: &mut Svc, i: usize) -> Result<(), Vec<FieldError>> {
        let wants_reserved = s.name == "kubernetes" && s.namespace == "default";
        let requested = s.cluster_ips[i].clone();
        let listed = qlist(&s.cluster_ips);
        let fam = s.families[i].clone();
        let Some(range) = self.range_mut(&fam) else {
            return Err(vec![FieldError::internal(format!(
                "no allocator for IP family {fam}"
            ))]);
        };
        if requested.is_empty() {
            let ip = range.allocate_next(wants_reserved).map_err(|e| {
                vec![FieldError::internal(format!(
                    "failed to allocate a serviceIP: {}",
                    ip_error_text(&e)
                ))]
            })?;
            s.cluster_ips[i] = ip;
            return Ok(());
        }
        range.allocate(&requested).map_err(|e| {
            let detail = format!("failed to allocate IP {requested}: {}", ip_error_text(&e));
            vec![FieldError::invalid("spec.clusterIPs", listed, &detail)]
        })
    }

    /// Upstream `initNodePorts`: the same port number shares one NodePort across protocols.
    fn init_node_ports(&mut self, s: &mut Svc) -> Result<(), Vec<FieldError>> {
        let allocate_new = s.should_allocate_node_ports();
        let mut by_port: HashMap<i64, i64> = HashMap::new();
        for i in 0..s.ports.len() {
            let (port, node_port) = (s.ports[i].port, s.ports[i].node_port);
            if node_port == 0 && !allocate_new {
                continue;
            }
            match by_port.get(&port).copied() {
                None => {
                    let requested = s
                        .ports
                        .iter()
                        .find(|p| p.port == port && p.node_port != 0)
                        .map(|p| p.node_port);
                    let np = match requested {
                        Some(np) => {
                            self.allocate_port(np, i)?;
                            np
                        }
                        None => self.next_port("failed to allocate a nodePort")?,
                    };
                    s.ports[i].node_port = np;
                    by_port.insert(port, np);
                }
                Some(shared) if node_port == 0 => s.ports[i].node_port = shared,
                Some(shared) if node_port != shared => self.allocate_port(node_port, i)?,
                Some(_) => {}
            }
        }
        Ok(())
    }

    fn allocate_port(&mut self, np: i64, i: usize) -> Result<(), Vec<FieldError>> {
        self.state.ports.allocate(np).map_err(|e| {
            let detail = self.state.ports.port_error_text(&e);
            vec![FieldError::invalid(
                format!("spec.ports[{i}].nodePort"),
                np.to_string(),
                &detail,
            )]
        })
    }

    fn next_port(&mut self, what: &str) -> Result<i64, Vec<FieldError>> {
        self.state.ports.allocate_next().map_err(|e| {
            vec![FieldError::internal(format!(
                "{what}: {}",
                self.state.ports.port_error_text(&e)
            ))]
        })
    }

    /// Upstream `allocHealthCheckNodePort` (failures are 500s upstream, even for explicit values).
    fn alloc_health_check_node_port(&mut self, s: &mut Svc) -> Result<(), Vec<FieldError>> {
        if s.hc_node_port != 0 {
            let hc = s.hc_node_port;
            return self.state.ports.allocate(hc).map_err(|e| {
                let text = self.state.ports.port_error_text(&e);
                vec![FieldError::internal(format!(
                    "failed to allocate requested HealthCheck NodePort {hc}: {text}"
                ))]
            });
        }
        s.hc_node_port = self.next_port("failed to allocate a HealthCheck NodePort 0")?;
        Ok(())
    }

    // --- update -----------------------------------------------------------

    fn allocate_update(
        &mut self,
        n: &mut Svc,
        o: &Svc,
        d: &mut Deferred,
    ) -> Result<(), Vec<FieldError>> {
        self.init_ip_family_fields(n, Some(o))?;
        self.update_cluster_ips(n, o, d)?;
        if o.needs_node_port() && !n.needs_node_port() {
            d.ports.extend(o.node_port_numbers());
        }
        if n.needs_node_port() {
            self.update_node_ports(n, o, d)?;
        }
        match (o.needs_health_check(), n.needs_health_check()) {
            (false, true) => self.alloc_health_check_node_port(n)?,
            (true, false) => d.ports.push(o.hc_node_port),
            _ => {}
        }
        Ok(())
    }

    /// Upstream `updateClusterIPs`: type changes to/from ExternalName and dual-stack up/downgrades.
    fn update_cluster_ips(
        &mut self,
        n: &mut Svc,
        o: &Svc,
        d: &mut Deferred,
    ) -> Result<(), Vec<FieldError>> {
        if matching_prefer_dual_stack(n, o) {
            return Ok(());
        }
        if o.is(TYPE_EXTERNAL_NAME) && !n.is(TYPE_EXTERNAL_NAME) {
            return self.alloc_cluster_ips(n);
        }
        if o.cluster_ips.first().is_some_and(|ip| ip == NONE) {
            return Ok(());
        }
        if !o.is(TYPE_EXTERNAL_NAME) && n.is(TYPE_EXTERNAL_NAME) {
            d.ips.extend(o.cluster_ips.iter().cloned());
            return Ok(());
        }
        if o.families.len() == 1 && n.families.len() == 2 {
            if n.cluster_ips.len() < 2 {
                n.cluster_ips.push(String::new());
            }
            return self.alloc_ip_at(n, 1);
        }
        if o.families.len() == 2 && n.families.len() == 1 {
            d.ips.extend(o.cluster_ips.get(1).cloned());
        }
        Ok(())
    }

    /// Upstream `updateNodePorts`: keep what the old object held, allocate the rest, release the gone.
    fn update_node_ports(
        &mut self,
        n: &mut Svc,
        o: &Svc,
        d: &mut Deferred,
    ) -> Result<(), Vec<FieldError>> {
        let old_numbers = o.node_port_numbers();
        let allocate_new = n.should_allocate_node_ports();
        let mut taken: HashSet<i64> = HashSet::new();
        let mut seen: Vec<(String, i64)> = Vec::new();
        for i in 0..n.ports.len() {
            let np = n.ports[i].node_port;
            if np == 0 && !allocate_new {
                continue;
            }
            if np != 0 {
                if !old_numbers.contains(&np) && !taken.contains(&np) {
                    self.allocate_port(np, i)?;
                    taken.insert(np);
                }
            } else {
                n.ports[i].node_port = self.next_port("failed to allocate a nodePort")?;
            }
            let key = (n.ports[i].protocol.clone(), n.ports[i].node_port);
            if seen.contains(&key) {
                return Err(vec![FieldError::internal(format!(
                    "duplicate nodePort: {{{} {}}}",
                    key.0, key.1
                ))]);
            }
            seen.push(key);
        }
        let new_numbers = n.node_port_numbers();
        d.ports
            .extend(old_numbers.into_iter().filter(|p| !new_numbers.contains(p)));
        Ok(())
    }
}

fn errs_to_result(errs: Vec<FieldError>) -> Result<(), Vec<FieldError>> {
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}

/// Upstream `isMatchingPreferDualStackClusterIPFields`: a PreferDualStack Service whose
/// IP fields did not change is left alone even if the cluster's dual-stackness changed.
fn matching_prefer_dual_stack(n: &Svc, o: &Svc) -> bool {
    n.policy.is_some()
        && o.ty == n.ty
        && n.needs_cluster_ip()
        && n.policy.as_deref() == Some(PREFER_DUAL)
        && o.policy.as_deref().is_none_or(|p| p == PREFER_DUAL)
        && o.cluster_ips == n.cluster_ips
        && o.families == n.families
}

/// Update-only part of `initIPFamilyFields`: SingleStack trims, other policies may not shrink.
fn prepare_family_update(s: &mut Svc, old: &Svc, errs: &mut Vec<FieldError>) {
    if s.policy.as_deref() == Some(SINGLE_STACK) {
        if old.cluster_ips == s.cluster_ips {
            s.cluster_ips.truncate(1);
        }
        if old.families == s.families {
            s.families.truncate(1);
        }
        return;
    }
    if !s.cluster_ips.is_empty() && s.cluster_ips.len() < old.cluster_ips.len() {
        let msg = "must be 'SingleStack' to release the secondary cluster IP";
        errs.push(FieldError::invalid(
            "spec.ipFamilyPolicy",
            qopt(&s.policy),
            msg,
        ));
    }
    if !s.families.is_empty() && s.families.len() < old.families.len() {
        let msg = "must be 'SingleStack' to release the secondary IP family";
        errs.push(FieldError::invalid(
            "spec.ipFamilyPolicy",
            qopt(&s.policy),
            msg,
        ));
    }
}

/// Best-effort extraction for `release`: keeps whatever parses.
fn parse_lenient(v: &Value) -> Svc {
    if let Ok(s) = parse(v) {
        return s;
    }
    let spec = v.get("spec");
    let str_at = |k: &str| {
        spec.and_then(|s| s.get(k))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let ports = spec
        .and_then(|s| s.get("ports"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    Svc {
        ty: str_at("type"),
        etp: str_at("externalTrafficPolicy"),
        cluster_ips: spec
            .and_then(|s| s.get("clusterIPs"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
        hc_node_port: spec
            .and_then(|s| s.get("healthCheckNodePort"))
            .and_then(Value::as_i64)
            .unwrap_or(0),
        ports: ports
            .iter()
            .filter_map(|p| p.get("nodePort").and_then(Value::as_i64))
            .map(|np| Port {
                name: String::new(),
                protocol: String::new(),
                port: 0,
                target: TargetPort::Int(0),
                node_port: np,
                app_protocol: None,
            })
            .collect(),
        ..Svc::default()
    }
}

// ---------------------------------------------------------------------------
// Validation (ValidateService / ValidateServiceUpdate).
// ---------------------------------------------------------------------------

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

fn validate_service(s: &Svc) -> Vec<FieldError> {
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

fn validate_service_update(n: &Svc, o: &Svc) -> Vec<FieldError> {
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

fn validate_name(s: &Svc, e: &mut Vec<FieldError>) {
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

fn validate_type_specific(s: &Svc, e: &mut Vec<FieldError>) {
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

fn validate_port(
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

const PORT_RANGE_MSG: &str = "must be between 1 and 65535, inclusive";

fn validate_affinity(s: &Svc, e: &mut Vec<FieldError>) {
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
fn validate_cluster_ips_related(s: &Svc) -> Vec<FieldError> {
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

const IP_MSG: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";

fn validate_external_ips(s: &Svc, e: &mut Vec<FieldError>) {
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
fn special_ip_error(ip: IpAddr) -> Option<&'static str> {
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

const SERVICE_TYPES: [&str; 4] = [
    TYPE_CLUSTER_IP,
    TYPE_EXTERNAL_NAME,
    TYPE_LOAD_BALANCER,
    TYPE_NODE_PORT,
];

fn validate_type_value(s: &Svc, e: &mut Vec<FieldError>) {
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

fn validate_node_port_rules(s: &Svc, e: &mut Vec<FieldError>) {
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
fn render_go_struct(v: &Value) -> String {
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

fn validate_source_ranges(s: &Svc, e: &mut Vec<FieldError>) {
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

/// Upstream CIDR validation for legacy fields with strict parsing.
fn cidr_error(s: &str) -> Option<&'static str> {
    let Some((ip, prefix)) = parse_cidr(s) else {
        return Some("must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)");
    };
    if s.split_once('/')
        .is_some_and(|(_, l)| l.len() > 1 && l.starts_with('0'))
    {
        return Some("must not have leading 0s in IP or prefix length");
    }
    let (v6, n) = ip_to_u128(ip);
    let bits = if v6 { 128 } else { 32 };
    (n & !mask(bits, prefix) & if v6 { u128::MAX } else { u128::from(u32::MAX) } != 0)
        .then_some("must not have bits set beyond the prefix length")
}

fn validate_lb_fields(s: &Svc, e: &mut Vec<FieldError>) {
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

fn validate_traffic_policies(s: &Svc, e: &mut Vec<FieldError>) {
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
fn upgrade_downgrade_cluster_ips(o: &Svc, n: &Svc) -> Vec<FieldError> {
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
fn upgrade_downgrade_families(o: &Svc, n: &Svc) -> Vec<FieldError> {
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

// ---------------------------------------------------------------------------
// Name / label helpers (k8s.io/apimachinery/pkg/util/validation wording).
// ---------------------------------------------------------------------------

fn regex_error(msg: &str, re: &str, examples: &[&str]) -> String {
    let ex: Vec<String> = examples.iter().map(|e| format!("'{e}', ")).collect();
    format!(
        "{msg} (e.g. {}regex used for validation is '{re}')",
        ex.join(" or ")
    )
}

fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && is_lower_alnum(b[0])
        && is_lower_alnum(b[b.len() - 1])
        && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
}

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

fn dns1123_label_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !is_dns1123_label(s) {
        let msg = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
        errs.push(regex_error(msg, DNS1123_LABEL_FMT, &["my-name", "123-abc"]));
    }
    errs
}

fn dns1123_subdomain_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push(max_len_error(253));
    }
    if !s.split('.').all(is_dns1123_label) {
        let msg = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
        errs.push(regex_error(msg, DNS1123_SUBDOMAIN_FMT, &["example.com"]));
    }
    errs
}

fn dns1035_label_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !(is_dns1123_label(s) && s.as_bytes()[0].is_ascii_lowercase()) {
        let msg = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character";
        errs.push(regex_error(
            msg,
            "[a-z]([-a-z0-9]*[a-z0-9])?",
            &["my-name", "abc-123"],
        ));
    }
    errs
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn qualified_name_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(
                    dns1123_subdomain_errors(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            let re = regex_error(
                QUALIFIED_NAME_MSG,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"],
            );
            errs.push(format!(
                "a qualified name {re} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push(format!("name part {}", max_len_error(63)));
    }
    if !is_qualified_name_part(name) {
        let re = regex_error(
            QUALIFIED_NAME_MSG,
            QUALIFIED_NAME_FMT,
            &["MyName", "my.name", "123-abc"],
        );
        errs.push(format!("name part {re}"));
    }
    errs
}

fn label_value_errors(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if v.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !v.is_empty() && !is_qualified_name_part(v) {
        let msg = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
        errs.push(regex_error(
            msg,
            "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?",
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

fn validate_labels(labels: &BTreeMap<String, String>, path: &str, e: &mut Vec<FieldError>) {
    for (k, v) in labels {
        for msg in qualified_name_errors(k) {
            e.push(FieldError::invalid(path, q(k), &msg));
        }
        for msg in label_value_errors(v) {
            e.push(FieldError::invalid(format!("{path}[{k}]"), q(v), &msg));
        }
    }
}

/// Upstream `IsValidPortName` (IANA service names).
fn port_name_errors(p: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if p.len() > 15 {
        errs.push(max_len_error(15));
    }
    if p.is_empty() || !p.bytes().all(|c| is_lower_alnum(c) || c == b'-') {
        errs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into());
    }
    if !p.bytes().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".into());
    }
    if p.contains("--") {
        errs.push("must not contain consecutive hyphens".into());
    }
    if p.starts_with('-') || p.ends_with('-') {
        errs.push("must not begin or end with a hyphen".into());
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small builder for Service JSON.
    struct B(Value);

    fn svc(name: &str) -> B {
        B(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"selector": {"app": name}}
        }))
    }

    impl B {
        fn spec(mut self, key: &str, v: Value) -> Self {
            self.0["spec"][key] = v;
            self
        }
        fn ty(self, t: &str) -> Self {
            self.spec("type", json!(t))
        }
        fn lb(self) -> Self {
            self.ty("LoadBalancer")
        }
        fn np(self) -> Self {
            self.ty("NodePort")
        }
        fn local(self) -> Self {
            self.spec("externalTrafficPolicy", json!("Local"))
        }
        fn port(mut self, port: i64, proto: &str) -> Self {
            let ports = self.0["spec"]["ports"].as_array().map_or(0, Vec::len);
            let p = json!({"name": format!("p{ports}"), "port": port, "protocol": proto});
            match self.0["spec"]["ports"].as_array_mut() {
                Some(a) => a.push(p),
                None => self.0["spec"]["ports"] = json!([p]),
            }
            self
        }
        fn node_port(mut self, np: i64) -> Self {
            if let Some(last) = self.0["spec"]["ports"]
                .as_array_mut()
                .and_then(|a| a.last_mut())
            {
                last["nodePort"] = json!(np);
            }
            self
        }
        fn v(self) -> Value {
            self.0
        }
    }

    fn ipam() -> ServiceIpam {
        ServiceIpam::new(ServiceIpamConfig::default()).unwrap()
    }

    fn ipam_with(cidrs: &[&str], ports: RangeInclusive<u16>) -> ServiceIpam {
        let cfg = ServiceIpamConfig {
            cluster_ip_cidrs: cidrs.iter().map(|c| c.to_string()).collect(),
            node_port_range: ports,
        };
        ServiceIpam::new(cfg).unwrap()
    }

    fn texts(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(FieldError::to_status_text).collect()
    }

    fn create_err(a: &mut ServiceIpam, v: Value) -> Vec<String> {
        let mut v = v;
        texts(&a.create(&mut v).unwrap_err())
    }

    fn created(a: &mut ServiceIpam, v: Value) -> Value {
        let mut v = v;
        if let Err(e) = a.create(&mut v) {
            panic!("create failed: {:?}", texts(&e));
        }
        v
    }

    fn node_port(v: &Value, i: usize) -> i64 {
        v["spec"]["ports"][i]["nodePort"].as_i64().unwrap_or(0)
    }

    fn cluster_ip(v: &Value) -> String {
        v["spec"]["clusterIP"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn updated(a: &mut ServiceIpam, old: &Value, new: Value) -> Value {
        let mut new = new;
        if let Err(e) = a.update(old, &mut new) {
            panic!("update failed: {:?}", texts(&e));
        }
        new
    }

    // --- defaults -----------------------------------------------------------

    #[test]
    fn defaults_for_cluster_ip_service() {
        let mut a = ipam();
        let v = created(&mut a, svc("web").port(80, "").v());
        let spec = &v["spec"];
        assert_eq!(spec["type"], "ClusterIP");
        assert_eq!(spec["ports"][0]["protocol"], "TCP");
        assert_eq!(spec["ports"][0]["targetPort"], 80);
        assert_eq!(spec["sessionAffinity"], "None");
        assert_eq!(spec["internalTrafficPolicy"], "Cluster");
        assert_eq!(spec.get("externalTrafficPolicy"), None);
        assert_eq!(spec.get("allocateLoadBalancerNodePorts"), None);
        assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
        assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
        assert_eq!(spec["clusterIPs"], json!([cluster_ip(&v)]));
        assert_eq!(spec["ports"][0].get("nodePort"), None);
        assert_eq!(a.cluster_ips_in_use(), 1);
        assert_eq!(a.node_ports_in_use(), 0);
    }

    #[test]
    fn defaults_for_load_balancer_and_affinity() {
        let mut a = ipam();
        let v = created(
            &mut a,
            svc("lb")
                .lb()
                .port(443, "TCP")
                .spec("sessionAffinity", json!("ClientIP"))
                .v(),
        );
        let spec = &v["spec"];
        assert_eq!(spec["externalTrafficPolicy"], "Cluster");
        assert_eq!(spec["allocateLoadBalancerNodePorts"], true);
        assert_eq!(
            spec["sessionAffinityConfig"],
            json!({"clientIP": {"timeoutSeconds": 10800}})
        );
        assert!((30000..=32767).contains(&node_port(&v, 0)));
        assert_eq!(spec.get("healthCheckNodePort"), None);
    }

    #[test]
    fn named_target_port_is_kept_and_zero_target_defaults() {
        let mut a = ipam();
        let v = svc("t").port(80, "TCP").v();
        let mut v2 = v.clone();
        v2["spec"]["ports"][0]["targetPort"] = json!("http");
        let v2 = created(&mut a, v2);
        assert_eq!(v2["spec"]["ports"][0]["targetPort"], "http");
    }

    #[test]
    fn dual_stack_families() {
        let mut a = ipam_with(&["10.96.0.0/12", "fd00:10:96::/112"], 30000..=32767);
        let v = created(
            &mut a,
            svc("d")
                .port(80, "TCP")
                .spec("ipFamilyPolicy", json!("PreferDualStack"))
                .v(),
        );
        assert_eq!(v["spec"]["ipFamilies"], json!(["IPv4", "IPv6"]));
        let ips = v["spec"]["clusterIPs"].as_array().unwrap();
        assert_eq!(ips.len(), 2);
        assert!(ips[1].as_str().unwrap().starts_with("fd00:10:96::"));
        let single = created(&mut a, svc("s").port(80, "TCP").v());
        assert_eq!(single["spec"]["ipFamilies"], json!(["IPv4"]));
        let v6 = created(
            &mut a,
            svc("six")
                .port(80, "TCP")
                .spec("ipFamilies", json!(["IPv6"]))
                .v(),
        );
        assert!(cluster_ip(&v6).starts_with("fd00:10:96::"));
        assert_eq!(a.cluster_ips_in_use(), 4);
    }

    #[test]
    fn require_dual_stack_on_single_stack_cluster_fails() {
        let mut a = ipam();
        let v = svc("d")
            .port(80, "TCP")
            .spec("ipFamilyPolicy", json!("RequireDualStack"))
            .v();
        assert_eq!(
            create_err(&mut a, v),
            vec![
                r#"spec.ipFamilyPolicy: Invalid value: "RequireDualStack": this cluster is not configured for dual-stack services"#
            ]
        );
        let v = svc("d")
            .port(80, "TCP")
            .spec("ipFamilies", json!(["IPv6"]))
            .v();
        assert_eq!(
            create_err(&mut a, v),
            vec![r#"spec.ipFamilies[0]: Invalid value: "IPv6": not configured on this cluster"#]
        );
        assert_eq!(a.cluster_ips_in_use(), 0);
    }

    #[test]
    fn headless_and_external_name_get_no_cluster_ip() {
        let mut a = ipam();
        let mut hl = svc("hl")
            .port(80, "TCP")
            .spec("clusterIP", json!("None"))
            .v();
        hl["spec"].as_object_mut().unwrap().remove("selector");
        let hl = created(&mut a, hl);
        assert_eq!(hl["spec"]["clusterIPs"], json!(["None"]));
        assert_eq!(hl["spec"]["ipFamilyPolicy"], "RequireDualStack");
        assert_eq!(hl["spec"]["ipFamilies"], json!(["IPv4", "IPv6"]));
        let en = created(
            &mut a,
            svc("en")
                .ty("ExternalName")
                .spec("externalName", json!("example.com"))
                .v(),
        );
        assert_eq!(en["spec"].get("clusterIP"), None);
        assert_eq!(en["spec"].get("ipFamilies"), None);
        assert_eq!(en["spec"].get("ipFamilyPolicy"), None);
        assert_eq!(a.cluster_ips_in_use(), 0);
    }

    // --- ClusterIP ----------------------------------------------------------

    #[test]
    fn cluster_ip_explicit_conflict_range_release_reuse() {
        let mut a = ipam();
        let v = created(
            &mut a,
            svc("a")
                .port(80, "TCP")
                .spec("clusterIP", json!("10.96.0.10"))
                .v(),
        );
        assert_eq!(cluster_ip(&v), "10.96.0.10");
        assert_eq!(v["spec"]["clusterIPs"], json!(["10.96.0.10"]));
        assert_eq!(
            create_err(
                &mut a,
                svc("b")
                    .port(80, "TCP")
                    .spec("clusterIP", json!("10.96.0.10"))
                    .v()
            ),
            vec![
                r#"spec.clusterIPs: Invalid value: ["10.96.0.10"]: failed to allocate IP 10.96.0.10: provided IP is already allocated"#
            ]
        );
        assert_eq!(
            create_err(
                &mut a,
                svc("b")
                    .port(80, "TCP")
                    .spec("clusterIP", json!("1.2.3.4"))
                    .v()
            ),
            vec![
                r#"spec.clusterIPs: Invalid value: ["1.2.3.4"]: failed to allocate IP 1.2.3.4: provided IP 1.2.3.4 is not in the valid range"#
            ]
        );
        assert_eq!(
            create_err(
                &mut a,
                svc("b")
                    .port(80, "TCP")
                    .spec("clusterIP", json!("10.111.255.255"))
                    .v()
            ),
            vec![
                r#"spec.clusterIPs: Invalid value: ["10.111.255.255"]: failed to allocate IP 10.111.255.255: provided IP 10.111.255.255 is not in the valid range"#
            ]
        );
        assert_eq!(
            create_err(
                &mut a,
                svc("b")
                    .port(80, "TCP")
                    .spec("clusterIP", json!("nope"))
                    .v()
            ),
            vec![
                r#"spec.clusterIPs[0]: Invalid value: "nope": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"#
            ]
        );
        a.release(&v);
        assert!(!a.is_cluster_ip_allocated("10.96.0.10"));
        let again = created(
            &mut a,
            svc("b")
                .port(80, "TCP")
                .spec("clusterIP", json!("10.96.0.10"))
                .v(),
        );
        assert_eq!(cluster_ip(&again), "10.96.0.10");
        assert_eq!(a.cluster_ips_in_use(), 1);
    }

    #[test]
    fn first_ip_is_reserved_for_kubernetes_service() {
        let mut a = ipam_with(&["10.0.0.0/29"], 30000..=32767);
        let mut got: Vec<String> = (0..5)
            .map(|i| cluster_ip(&created(&mut a, svc(&format!("s{i}")).port(80, "TCP").v())))
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec!["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
        );
        let errs = a.create(&mut svc("full").port(80, "TCP").v()).unwrap_err();
        assert_eq!(
            errs,
            vec![FieldError::internal(
                "failed to allocate a serviceIP: range is full".into()
            )]
        );
        assert!(errs[0].is_internal());
        let k = created(&mut a, svc("kubernetes").port(443, "TCP").v());
        assert_eq!(cluster_ip(&k), "10.0.0.1");
    }

    #[test]
    fn dynamic_allocation_prefers_upper_bands() {
        let mut a = ipam();
        for i in 0..20 {
            let v = created(&mut a, svc(&format!("s{i}")).np().port(80, "TCP").v());
            assert!(
                node_port(&v, 0) >= 30086,
                "port {} in static band",
                node_port(&v, 0)
            );
            let ip: std::net::Ipv4Addr = cluster_ip(&v).parse().unwrap();
            assert!(
                u32::from(ip) >= u32::from(std::net::Ipv4Addr::new(10, 96, 1, 1)),
                "ip {ip} in static band"
            );
        }
    }

    #[test]
    fn cluster_ip_is_immutable_on_update() {
        let mut a = ipam();
        let old = created(
            &mut a,
            svc("a")
                .port(80, "TCP")
                .spec("clusterIP", json!("10.96.0.10"))
                .v(),
        );
        let mut new = old.clone();
        new["spec"]["clusterIP"] = json!("10.96.0.99");
        let errs = texts(&a.update(&old, &mut new).unwrap_err());
        assert_eq!(
            errs,
            vec![r#"spec.clusterIPs[0]: Invalid value: ["10.96.0.99"]: may not change once set"#]
        );
        assert!(a.is_cluster_ip_allocated("10.96.0.10"));
        assert!(!a.is_cluster_ip_allocated("10.96.0.99"));
    }

    #[test]
    fn type_change_to_and_from_external_name_moves_cluster_ip() {
        let mut a = ipam();
        let old = created(&mut a, svc("a").port(80, "TCP").v());
        let ip = cluster_ip(&old);
        let en = svc("a")
            .port(80, "TCP")
            .ty("ExternalName")
            .spec("externalName", json!("example.com"))
            .v();
        let mut en_full = en.clone();
        en_full["spec"]["clusterIP"] = old["spec"]["clusterIP"].clone();
        en_full["spec"]["clusterIPs"] = old["spec"]["clusterIPs"].clone();
        en_full["spec"]["ipFamilies"] = old["spec"]["ipFamilies"].clone();
        en_full["spec"]["ipFamilyPolicy"] = old["spec"]["ipFamilyPolicy"].clone();
        let en = updated(&mut a, &old, en_full);
        assert_eq!(en["spec"].get("clusterIP"), None);
        assert!(!a.is_cluster_ip_allocated(&ip));
        let back = updated(&mut a, &en, svc("a").port(80, "TCP").v());
        assert!(a.is_cluster_ip_allocated(&cluster_ip(&back)));
        assert_eq!(a.cluster_ips_in_use(), 1);
    }

    // --- NodePorts ------------------------------------------------------------

    #[test]
    fn node_port_explicit_conflict_and_range() {
        let mut a = ipam();
        let v = created(&mut a, svc("a").np().port(80, "TCP").node_port(30080).v());
        assert_eq!(node_port(&v, 0), 30080);
        assert!(a.is_node_port_allocated(30080));
        assert_eq!(
            create_err(&mut a, svc("b").np().port(80, "TCP").node_port(30080).v()),
            vec![
                "spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"
            ]
        );
        assert_eq!(
            create_err(
                &mut a,
                svc("b")
                    .lb()
                    .port(80, "TCP")
                    .port(81, "TCP")
                    .node_port(40000)
                    .v()
            ),
            vec![
                "spec.ports[1].nodePort: Invalid value: 40000: provided port is not in the valid range. The range of valid ports is 30000-32767"
            ]
        );
        assert_eq!(a.node_ports_in_use(), 1);
        assert_eq!(a.cluster_ips_in_use(), 1);
    }

    #[test]
    fn node_port_exhaustion_release_and_reuse() {
        let mut a = ipam_with(&["10.96.0.0/12"], 30000..=30004);
        let mut held = Vec::new();
        for i in 0..5 {
            held.push(created(
                &mut a,
                svc(&format!("s{i}")).np().port(80, "TCP").v(),
            ));
        }
        let mut ports: Vec<i64> = held.iter().map(|v| node_port(v, 0)).collect();
        ports.sort();
        assert_eq!(ports, vec![30000, 30001, 30002, 30003, 30004]);
        assert_eq!((a.node_ports_in_use(), a.node_ports_free()), (5, 0));
        let ips_before = a.cluster_ips_in_use();
        let errs = a
            .create(&mut svc("x").np().port(80, "TCP").v())
            .unwrap_err();
        assert_eq!(
            errs,
            vec![FieldError::internal(
                "failed to allocate a nodePort: range is full".into()
            )]
        );
        assert_eq!(
            a.cluster_ips_in_use(),
            ips_before,
            "ClusterIP of the failed create was released"
        );
        let freed = node_port(&held[2], 0);
        a.release(&held[2]);
        assert_eq!(a.node_ports_in_use(), 4);
        let v = created(&mut a, svc("y").np().port(80, "TCP").v());
        assert_eq!(node_port(&v, 0), freed);
    }

    #[test]
    fn same_port_number_shares_node_port_across_protocols() {
        let mut a = ipam();
        let v = created(&mut a, svc("dns").np().port(53, "TCP").port(53, "UDP").v());
        assert_eq!(node_port(&v, 0), node_port(&v, 1));
        assert_eq!(a.node_ports_in_use(), 1);
        let v2 = created(
            &mut a,
            svc("dns2")
                .np()
                .port(53, "TCP")
                .port(53, "UDP")
                .node_port(30053)
                .v(),
        );
        assert_eq!((node_port(&v2, 0), node_port(&v2, 1)), (30053, 30053));
        a.release(&v);
        a.release(&v2);
        assert_eq!(a.node_ports_in_use(), 0);
    }

    #[test]
    fn allocate_load_balancer_node_ports_false() {
        let mut a = ipam();
        let b = || {
            svc("lb")
                .lb()
                .spec("allocateLoadBalancerNodePorts", json!(false))
                .port(80, "TCP")
        };
        let v = created(&mut a, b().v());
        assert_eq!(node_port(&v, 0), 0);
        assert_eq!(a.node_ports_in_use(), 0);
        let v2 = created(
            &mut a,
            svc("lb2")
                .lb()
                .spec("allocateLoadBalancerNodePorts", json!(false))
                .port(80, "TCP")
                .node_port(31000)
                .v(),
        );
        assert_eq!(node_port(&v2, 0), 31000);
        assert_eq!(a.node_ports_in_use(), 1);
    }

    #[test]
    fn lb_to_cluster_ip_drops_and_releases() {
        let mut a = ipam();
        let old = created(
            &mut a,
            svc("a").lb().local().port(80, "TCP").port(443, "TCP").v(),
        );
        assert_eq!(a.node_ports_in_use(), 3);
        let mut new = old.clone();
        new["spec"]["type"] = json!("ClusterIP");
        let new = updated(&mut a, &old, new);
        assert_eq!(node_port(&new, 0), 0);
        assert_eq!(node_port(&new, 1), 0);
        assert_eq!(new["spec"].get("healthCheckNodePort"), None);
        assert_eq!(new["spec"].get("externalTrafficPolicy"), None);
        assert_eq!(new["spec"].get("allocateLoadBalancerNodePorts"), None);
        assert_eq!(new["spec"]["clusterIP"], old["spec"]["clusterIP"]);
        assert_eq!(a.node_ports_in_use(), 0);
    }

    #[test]
    fn lb_to_cluster_ip_with_changed_node_port_is_rejected_atomically() {
        let mut a = ipam();
        let old = created(&mut a, svc("a").lb().port(80, "TCP").v());
        let held = node_port(&old, 0);
        let mut new = old.clone();
        new["spec"]["type"] = json!("ClusterIP");
        new["spec"]["ports"][0]["nodePort"] = json!(if held == 31999 { 31998 } else { 31999 });
        let errs = texts(&a.update(&old, &mut new).unwrap_err());
        assert_eq!(
            errs,
            vec!["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"]
        );
        assert!(a.is_node_port_allocated(held as u16));
        assert_eq!(a.node_ports_in_use(), 1);
    }

    #[test]
    fn update_keeps_unchanged_ports_and_releases_removed() {
        let mut a = ipam();
        let old = created(&mut a, svc("a").np().port(80, "TCP").port(443, "TCP").v());
        let (p80, p443) = (node_port(&old, 0), node_port(&old, 1));
        // Re-submitting the original manifest (no nodePorts, no clusterIP) keeps everything.
        let same = updated(
            &mut a,
            &old,
            svc("a").np().port(80, "TCP").port(443, "TCP").v(),
        );
        assert_eq!((node_port(&same, 0), node_port(&same, 1)), (p80, p443));
        assert_eq!(same["spec"]["clusterIP"], old["spec"]["clusterIP"]);
        assert_eq!(a.node_ports_in_use(), 2);
        // Dropping port 443 releases its NodePort; adding 8080 allocates a new one.
        let mut new = same.clone();
        new["spec"]["ports"] =
            json!([same["spec"]["ports"][0].clone(), {"name": "p2", "port": 8080}]);
        let new = updated(&mut a, &same, new);
        assert_eq!(node_port(&new, 0), p80);
        assert!(!a.is_node_port_allocated(p443 as u16));
        assert!(a.is_node_port_allocated(node_port(&new, 1) as u16));
        assert_eq!(a.node_ports_in_use(), 2);
    }

    #[test]
    fn update_to_taken_node_port_conflicts() {
        let mut a = ipam();
        created(&mut a, svc("a").np().port(80, "TCP").node_port(30080).v());
        let old = created(&mut a, svc("b").np().port(80, "TCP").node_port(30081).v());
        let mut new = old.clone();
        new["spec"]["ports"][0]["nodePort"] = json!(30080);
        let errs = texts(&a.update(&old, &mut new).unwrap_err());
        assert_eq!(
            errs,
            vec![
                "spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"
            ]
        );
        assert!(a.is_node_port_allocated(30081));
        assert_eq!(a.node_ports_in_use(), 2);
    }

    // --- healthCheckNodePort --------------------------------------------------

    #[test]
    fn health_check_node_port_lifecycle() {
        let mut a = ipam();
        let v = created(&mut a, svc("a").lb().local().port(80, "TCP").v());
        let hc = v["spec"]["healthCheckNodePort"].as_i64().unwrap();
        assert!(a.is_node_port_allocated(hc as u16));
        assert_eq!(a.node_ports_in_use(), 2);
        // Immutable while still needed.
        let mut moved = v.clone();
        moved["spec"]["healthCheckNodePort"] = json!(if hc == 32000 { 32001 } else { 32000 });
        assert_eq!(
            texts(&a.update(&v, &mut moved).unwrap_err()),
            vec!["spec.healthCheckNodePort: Forbidden: field is immutable"]
        );
        assert_eq!(a.node_ports_in_use(), 2);
        // externalTrafficPolicy back to Cluster releases it.
        let mut cluster = v.clone();
        cluster["spec"]["externalTrafficPolicy"] = json!("Cluster");
        let cluster = updated(&mut a, &v, cluster);
        assert_eq!(cluster["spec"].get("healthCheckNodePort"), None);
        assert!(!a.is_node_port_allocated(hc as u16));
        assert_eq!(a.node_ports_in_use(), 1);
        // And to Local again allocates a fresh one.
        let mut local = cluster.clone();
        local["spec"]["externalTrafficPolicy"] = json!("Local");
        let local = updated(&mut a, &cluster, local);
        assert!(local["spec"]["healthCheckNodePort"].as_i64().is_some());
        assert_eq!(a.node_ports_in_use(), 2);
        a.release(&local);
        assert_eq!(a.node_ports_in_use(), 0);
    }

    #[test]
    fn health_check_node_port_explicit_and_invalid() {
        let mut a = ipam();
        let v = created(
            &mut a,
            svc("a")
                .lb()
                .local()
                .spec("healthCheckNodePort", json!(32100))
                .port(80, "TCP")
                .v(),
        );
        assert_eq!(v["spec"]["healthCheckNodePort"], 32100);
        let errs = a
            .create(
                &mut svc("b")
                    .lb()
                    .local()
                    .spec("healthCheckNodePort", json!(32100))
                    .port(80, "TCP")
                    .v(),
            )
            .unwrap_err();
        assert_eq!(
            errs,
            vec![FieldError::internal("failed to allocate requested HealthCheck NodePort 32100: provided port is already allocated".into())]
        );
        assert_eq!(
            create_err(
                &mut a,
                svc("c")
                    .np()
                    .spec("healthCheckNodePort", json!(32200))
                    .port(80, "TCP")
                    .v()
            ),
            vec![
                "spec.healthCheckNodePort: Invalid value: 32200: may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'"
            ]
        );
        assert_eq!(
            create_err(
                &mut a,
                svc("d")
                    .lb()
                    .spec("healthCheckNodePort", json!(32200))
                    .port(80, "TCP")
                    .v()
            ),
            vec![
                "spec.healthCheckNodePort: Invalid value: 32200: may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'"
            ]
        );
        assert_eq!(a.node_ports_in_use(), 2);
        assert_eq!(a.cluster_ips_in_use(), 1);
    }

    // --- validation -----------------------------------------------------------

    #[test]
    fn validation_rules() {
        let long = "a".repeat(64);
        let cases: Vec<(Value, Vec<&str>)> = vec![
            (svc("a").v(), vec!["spec.ports: Required value"]),
            (
                svc("a").port(0, "TCP").v(),
                // The defaulted targetPort (= port) fails too, as upstream.
                vec![
                    "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
                    "spec.ports[0].targetPort: Invalid value: 0: must be between 1 and 65535, inclusive",
                ],
            ),
            (
                svc("a").port(65536, "TCP").v(),
                vec![
                    "spec.ports[0].port: Invalid value: 65536: must be between 1 and 65535, inclusive",
                    "spec.ports[0].targetPort: Invalid value: 65536: must be between 1 and 65535, inclusive",
                ],
            ),
            (
                svc("a").port(80, "FOO").v(),
                vec![
                    r#"spec.ports[0].protocol: Unsupported value: "FOO": supported values: "SCTP", "TCP", "UDP""#,
                ],
            ),
            (
                svc("a").port(80, "TCP").port(80, "TCP").v(),
                vec![
                    r#"spec.ports[1]: Duplicate value: {"Name":"","Protocol":"TCP","AppProtocol":null,"Port":80,"TargetPort":0,"NodePort":0}"#,
                ],
            ),
            (svc("a").port(80, "TCP").port(80, "UDP").v(), vec![]),
            (
                svc("a")
                    .spec("ports", json!([{"port": 80}, {"port": 81}]))
                    .v(),
                vec![
                    "spec.ports[0].name: Required value",
                    "spec.ports[1].name: Required value",
                ],
            ),
            (
                svc("a")
                    .spec(
                        "ports",
                        json!([{"name": "web", "port": 80}, {"name": "web", "port": 81}]),
                    )
                    .v(),
                vec![r#"spec.ports[1].name: Duplicate value: "web""#],
            ),
            (
                svc("a")
                    .spec("ports", json!([{"name": "Web", "port": 80}]))
                    .v(),
                vec![
                    r#"spec.ports[0].name: Invalid value: "Web": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"#,
                ],
            ),
            (
                svc("a").ty("Foo").port(80, "TCP").v(),
                vec![
                    r#"spec.type: Unsupported value: "Foo": supported values: "ClusterIP", "ExternalName", "LoadBalancer", "NodePort""#,
                ],
            ),
            (
                svc("a")
                    .spec("loadBalancerClass", json!("example.com/lb"))
                    .port(80, "TCP")
                    .v(),
                vec![
                    "spec.loadBalancerClass: Forbidden: may only be used when `type` is 'LoadBalancer'",
                ],
            ),
            (
                svc("a")
                    .lb()
                    .spec("loadBalancerClass", json!("example.com/lb"))
                    .port(80, "TCP")
                    .v(),
                vec![],
            ),
            (
                svc("a")
                    .lb()
                    .spec("loadBalancerClass", json!("a/b/c"))
                    .port(80, "TCP")
                    .v(),
                vec![
                    r#"spec.loadBalancerClass: Invalid value: "a/b/c": a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"#,
                ],
            ),
            (
                svc("a")
                    .lb()
                    .spec(
                        "loadBalancerSourceRanges",
                        json!(["10.0.0.0/8", "foo", "10.0.0.1/8"]),
                    )
                    .port(80, "TCP")
                    .v(),
                vec![
                    r#"spec.LoadBalancerSourceRanges[1]: Invalid value: "foo": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"#,
                    r#"spec.LoadBalancerSourceRanges[2]: Invalid value: "10.0.0.1/8": must not have bits set beyond the prefix length"#,
                ],
            ),
            (
                svc("a")
                    .spec("loadBalancerSourceRanges", json!(["10.0.0.0/8"]))
                    .port(80, "TCP")
                    .v(),
                vec![
                    "spec.LoadBalancerSourceRanges: Forbidden: may only be used when `type` is 'LoadBalancer'",
                ],
            ),
            (
                svc("a")
                    .spec("sessionAffinity", json!("Sticky"))
                    .port(80, "TCP")
                    .v(),
                vec![
                    r#"spec.sessionAffinity: Unsupported value: "Sticky": supported values: "ClientIP", "None""#,
                ],
            ),
            (
                svc("a").local().port(80, "TCP").v(),
                vec![
                    r#"spec.externalTrafficPolicy: Invalid value: "Local": may only be set for externally-accessible services"#,
                ],
            ),
            (svc("a").np().local().port(80, "TCP").v(), vec![]),
            (
                svc("a")
                    .np()
                    .spec("externalTrafficPolicy", json!("Global"))
                    .port(80, "TCP")
                    .v(),
                vec![
                    r#"spec.externalTrafficPolicy: Unsupported value: "Global": supported values: "Cluster", "Local""#,
                ],
            ),
            (
                svc("a")
                    .np()
                    .port(80, "TCP")
                    .node_port(30080)
                    .port(81, "TCP")
                    .node_port(30080)
                    .v(),
                vec!["spec.ports[1].nodePort: Duplicate value: 30080"],
            ),
            (
                svc("a")
                    .np()
                    .port(80, "TCP")
                    .node_port(30080)
                    .port(81, "UDP")
                    .node_port(30080)
                    .v(),
                vec![],
            ),
            (
                svc("a").port(80, "TCP").node_port(30080).v(),
                vec![
                    "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'",
                ],
            ),
            (
                svc("a")
                    .spec("allocateLoadBalancerNodePorts", json!(true))
                    .port(80, "TCP")
                    .v(),
                vec![
                    "spec.allocateLoadBalancerNodePorts: Forbidden: may only be used when `type` is 'LoadBalancer'",
                ],
            ),
            (
                svc("a")
                    .spec("internalTrafficPolicy", json!("Nearby"))
                    .port(80, "TCP")
                    .v(),
                vec![
                    r#"spec.internalTrafficPolicy: Unsupported value: "Nearby": supported values: "Cluster", "Local""#,
                ],
            ),
            (
                svc("a")
                    .lb()
                    .spec("clusterIP", json!("None"))
                    .port(80, "TCP")
                    .v(),
                vec![
                    r#"spec.clusterIPs[0]: Invalid value: "None": may not be set to 'None' for LoadBalancer services"#,
                ],
            ),
            (svc("a").spec("clusterIP", json!("None")).v(), vec![]),
            (
                svc("a")
                    .ty("ExternalName")
                    .spec("externalName", json!("example.com."))
                    .v(),
                vec![],
            ),
            (
                svc("a").ty("ExternalName").v(),
                vec!["spec.externalName: Required value"],
            ),
            (
                svc("a")
                    .spec("externalIPs", json!(["127.0.0.1"]))
                    .port(80, "TCP")
                    .v(),
                vec![
                    r#"spec.externalIPs[0]: Invalid value: "127.0.0.1": may not be in the loopback range (127.0.0.0/8, ::1/128)"#,
                ],
            ),
            (
                svc(&long)
                    .spec("selector", json!({"app": "x"}))
                    .port(80, "TCP")
                    .v(),
                vec![
                    "metadata.name: Invalid value: \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\": must be no more than 63 characters",
                ],
            ),
            (
                svc("a")
                    .spec("ports", json!([{"port": 80, "targetPort": "Http"}]))
                    .v(),
                vec![
                    r#"spec.ports[0].targetPort: Invalid value: "Http": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"#,
                ],
            ),
            (
                svc("a")
                    .spec("clusterIP", json!("10.96.0.5"))
                    .spec("clusterIPs", json!(["10.96.0.6"]))
                    .port(80, "TCP")
                    .v(),
                vec![
                    r#"spec.clusterIPs: Invalid value: ["10.96.0.6"]: first value must match `clusterIP`"#,
                ],
            ),
            (
                svc("a")
                    .spec("ipFamilyPolicy", json!("Dual"))
                    .port(80, "TCP")
                    .v(),
                vec![
                    r#"spec.ipFamilyPolicy: Unsupported value: "Dual": supported values: "PreferDualStack", "RequireDualStack", "SingleStack""#,
                ],
            ),
        ];
        for (i, (v, want)) in cases.iter().enumerate() {
            assert_eq!(texts(&validate(v)), *want, "case {i}: {v}");
        }
    }

    #[test]
    fn validation_reasons() {
        let errs = validate(&svc("a").ty("Foo").port(80, "TCP").port(80, "TCP").v());
        let reasons: Vec<&str> = errs.iter().map(|e| e.reason).collect();
        assert_eq!(reasons, vec![REASON_NOT_SUPPORTED, REASON_DUPLICATE]);
        let errs = validate(&svc("a").v());
        assert_eq!(
            errs[0],
            FieldError {
                field: "spec.ports".into(),
                reason: REASON_REQUIRED,
                message: "Required value".into()
            }
        );
    }

    #[test]
    fn load_balancer_class_is_immutable() {
        let mut a = ipam();
        let old = created(
            &mut a,
            svc("a")
                .lb()
                .spec("loadBalancerClass", json!("x.io/a"))
                .port(80, "TCP")
                .v(),
        );
        let mut new = old.clone();
        new["spec"]["loadBalancerClass"] = json!("x.io/b");
        assert_eq!(
            texts(&a.update(&old, &mut new).unwrap_err()),
            vec![r#"spec.loadBalancerClass: Invalid value: "x.io/b": may not change once set"#]
        );
        // Leaving LoadBalancer drops the unchanged class.
        let mut cip = old.clone();
        cip["spec"]["type"] = json!("ClusterIP");
        let cip = updated(&mut a, &old, cip);
        assert_eq!(cip["spec"].get("loadBalancerClass"), None);
    }

    // --- atomicity and robustness -------------------------------------------------

    #[test]
    fn failing_create_leaves_allocator_unchanged() {
        let mut a = ipam();
        created(&mut a, svc("a").np().port(80, "TCP").node_port(30081).v());
        let before = (a.node_ports_in_use(), a.cluster_ips_in_use());
        // Port 0 allocates 30080, port 1 conflicts: 30080 and the ClusterIP must be rolled back.
        let errs = create_err(
            &mut a,
            svc("b")
                .np()
                .port(80, "TCP")
                .node_port(30080)
                .port(81, "TCP")
                .node_port(30081)
                .v(),
        );
        assert_eq!(
            errs,
            vec![
                "spec.ports[1].nodePort: Invalid value: 30081: provided port is already allocated"
            ]
        );
        assert_eq!((a.node_ports_in_use(), a.cluster_ips_in_use()), before);
        assert!(!a.is_node_port_allocated(30080));
        // Allocation succeeds but validation fails afterwards: also rolled back, object untouched.
        let mut v = svc("c")
            .lb()
            .local()
            .spec("sessionAffinity", json!("Sticky"))
            .port(80, "TCP")
            .v();
        let original = v.clone();
        assert!(a.create(&mut v).is_err());
        assert_eq!(v, original);
        assert_eq!((a.node_ports_in_use(), a.cluster_ips_in_use()), before);
    }

    #[test]
    fn failing_update_leaves_allocator_unchanged() {
        let mut a = ipam();
        let old = created(&mut a, svc("a").np().port(80, "TCP").v());
        let held = node_port(&old, 0);
        // Adds a port (allocates) then fails validation: the new port is returned, the old one kept.
        let mut new = old.clone();
        new["spec"]["ports"] = json!([old["spec"]["ports"][0].clone(), {"name": "p1", "port": 81, "protocol": "BOGUS"}]);
        assert!(a.update(&old, &mut new).is_err());
        assert_eq!(a.node_ports_in_use(), 1);
        assert!(a.is_node_port_allocated(held as u16));
        // Switching to ClusterIP but with an invalid field keeps the old NodePort allocated.
        let mut cip = old.clone();
        cip["spec"]["type"] = json!("ClusterIP");
        cip["spec"]["sessionAffinity"] = json!("Sticky");
        assert!(a.update(&old, &mut cip).is_err());
        assert!(a.is_node_port_allocated(held as u16));
    }

    #[test]
    fn dry_run_does_not_allocate() {
        let a = ipam();
        let mut v = svc("a").lb().local().port(80, "TCP").v();
        a.dry_run_create(&mut v).unwrap();
        assert!(node_port(&v, 0) > 0);
        assert_eq!((a.node_ports_in_use(), a.cluster_ips_in_use()), (0, 0));
    }

    #[test]
    fn wrong_types_are_field_errors_not_panics() {
        let mut a = ipam();
        let garbage = [
            json!(null),
            json!("svc"),
            json!({"metadata": "x"}),
            json!({"metadata": {"name": "a"}, "spec": []}),
            json!({"metadata": {"name": "a"}, "spec": {"ports": {}}}),
            json!({"metadata": {"name": "a"}, "spec": {"ports": [1]}}),
            json!({"metadata": {"name": 7}, "spec": {"ports": [{"port": "80"}]}}),
            json!({"metadata": {"name": "a"}, "spec": {"ports": [{"port": 80.5, "nodePort": true, "targetPort": []}]}}),
            json!({"metadata": {"name": "a"}, "spec": {"type": 3, "clusterIPs": "x", "selector": {"a": 1}}}),
            json!({"metadata": {"name": "a"}, "spec": {"ports": [{"port": 80, "nodePort": 99999999999i64}], "type": "NodePort"}}),
            json!({"metadata": {"name": "a"}, "spec": {"ports": [{"port": 80}], "clusterIP": "::1", "clusterIPs": ["::1", "::2", "1.1.1.1"]}}),
        ];
        for g in &garbage {
            let mut v = g.clone();
            assert!(a.create(&mut v).is_err(), "{g}");
            assert!(!validate(g).is_empty(), "{g}");
            a.release(g);
            let mut v = g.clone();
            let _ = a.update(g, &mut v);
        }
        // A negative nodePort passes ValidateService (as upstream) but not the allocator.
        let neg = json!({"metadata": {"name": "a"}, "spec": {"ports": [{"port": 80, "nodePort": -5}], "type": "NodePort"}});
        assert!(validate(&neg).is_empty());
        assert_eq!(
            texts(&a.create(&mut neg.clone()).unwrap_err()),
            vec![
                "spec.ports[0].nodePort: Invalid value: -5: provided port is not in the valid range. The range of valid ports is 30000-32767"
            ]
        );
        let errs =
            validate(&json!({"metadata": {"name": "a"}, "spec": {"ports": [{"port": "80"}]}}));
        assert_eq!(
            errs,
            vec![FieldError {
                field: "spec.ports[0].port".into(),
                reason: REASON_TYPE_INVALID,
                message: r#"Invalid value: "80": expected integer"#.into()
            }]
        );
        assert_eq!((a.node_ports_in_use(), a.cluster_ips_in_use()), (0, 0));
    }

    #[test]
    fn config_is_checked() {
        let bad = |cidrs: &[&str], ports: RangeInclusive<u16>| {
            ServiceIpam::new(ServiceIpamConfig {
                cluster_ip_cidrs: cidrs.iter().map(|c| c.to_string()).collect(),
                node_port_range: ports,
            })
            .is_err()
        };
        assert!(bad(&[], 30000..=32767));
        assert!(bad(&["10.96.0.0/33"], 30000..=32767));
        assert!(bad(&["10.96.0.0/12", "10.0.0.0/8"], 30000..=32767));
        #[allow(clippy::reversed_empty_ranges)]
        let empty = 30010..=30000;
        assert!(bad(&["10.96.0.0/12"], empty));
        assert_eq!(ipam().service_cidrs(), vec!["10.96.0.0/12"]);
    }
}
