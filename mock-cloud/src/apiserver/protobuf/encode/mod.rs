//! Protobuf response bodies: the stored JSON of a built-in kind turned into its `k8s-pb`
//! message and wrapped as kube-apiserver does (`k8s\0`, then a `runtime.Unknown` naming
//! apiVersion and kind). Watch events are `meta.v1.WatchEvent`s, each framed by its length.
//!
//! Each message's conversion names every field of the generated struct (a field added
//! upstream fails to compile), and finds the JSON key whose spelling matches the field's
//! once case and underscores are ignored (`clusterIP` ~ `cluster_ip`, `podIPs` ~
//! `pod_i_ps`): the upstream protos use the JSON names. A JSON key no field takes, or a value
//! of the wrong shape, is an error, never dropped: the caller answers in JSON instead.
//!
//! Kinds without a conversion here (custom resources, CRDs) have no protobuf form, as in
//! kube-apiserver, where custom resources are JSON only.

use super::MAGIC;
use base64::Engine;
use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::autoscaling::v1 as autoscaling;
use k8s_pb::api::coordination::v1 as coordination;
use k8s_pb::api::core::v1 as core;
use k8s_pb::api::discovery::v1 as discovery;
use k8s_pb::api::events::v1 as events;
use k8s_pb::api::policy::v1 as policy;
use k8s_pb::api::rbac::v1 as rbac;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{RawExtension, TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Why an object has no protobuf form.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncodeError {
    #[error("no protobuf encoding for {0}")]
    Kind(String),
    #[error("{path}: {what}")]
    Field { path: String, what: String },
}

type Res<T> = Result<T, EncodeError>;

fn bad(path: &str, what: impl Into<String>) -> EncodeError {
    EncodeError::Field {
        path: path.to_string(),
        what: what.into(),
    }
}

fn sub(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// A message built from one JSON object's keys.
trait Msg: Sized {
    /// The generated struct's field names.
    const NAMES: &'static [&'static str];
    fn from_map(m: &Map<String, Value>, path: &str) -> Res<Self>;
}

/// A value built from one (non-null) JSON value.
trait Pb: Sized {
    fn pb(v: &Value, path: &str) -> Res<Self>;
}

/// A struct field built from the JSON value of its key, if any.
trait Field: Sized {
    fn field(v: Option<&Value>, path: &str) -> Res<Self>;
}

/// Whether a JSON key spells a field name, ignoring case, underscores and `r#`. A plain
/// loop: this runs for every field of every object answered in protobuf.
fn same_name(json: &str, field: &str) -> bool {
    let (j, f) = (
        json.as_bytes(),
        field.strip_prefix("r#").unwrap_or(field).as_bytes(),
    );
    let (mut a, mut b) = (0, 0);
    loop {
        while a < j.len() && j[a] == b'_' {
            a += 1;
        }
        while b < f.len() && f[b] == b'_' {
            b += 1;
        }
        match (j.get(a), f.get(b)) {
            (None, None) => return true,
            (Some(x), Some(y)) if x.eq_ignore_ascii_case(y) => {
                a += 1;
                b += 1;
            }
            _ => return false,
        }
    }
}

fn object<'a>(v: &'a Value, path: &str) -> Res<&'a Map<String, Value>> {
    v.as_object().ok_or_else(|| bad(path, "expected an object"))
}

/// Every non-null key must be one of `names`' fields; `apiVersion` and `kind` of a message
/// without such fields are the type, which the envelope carries.
fn check_keys(m: &Map<String, Value>, path: &str, names: &[&[&str]]) -> Res<()> {
    for (k, v) in m {
        let known = names.iter().any(|ns| ns.iter().any(|n| same_name(k, n)));
        if !known && !v.is_null() && k != "apiVersion" && k != "kind" {
            return Err(bad(&sub(path, k), "no such field in the protobuf message"));
        }
    }
    Ok(())
}

fn field<T: Field>(m: &Map<String, Value>, name: &str, path: &str) -> Res<T> {
    let found = m.iter().find(|(k, _)| same_name(k, name));
    match found {
        Some((k, v)) => T::field(Some(v), &sub(path, k)),
        None => T::field(None, path),
    }
}

impl<T: Msg> Pb for T {
    fn pb(v: &Value, path: &str) -> Res<Self> {
        let m = object(v, path)?;
        check_keys(m, path, &[T::NAMES])?;
        T::from_map(m, path)
    }
}

impl<T: Pb> Field for Option<T> {
    fn field(v: Option<&Value>, path: &str) -> Res<Self> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(v) => T::pb(v, path).map(Some),
        }
    }
}

impl<T: Pb> Field for Vec<T> {
    fn field(v: Option<&Value>, path: &str) -> Res<Self> {
        match v {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, x)| T::pb(x, &format!("{path}[{i}]")))
                .collect(),
            Some(_) => Err(bad(path, "expected a list")),
        }
    }
}

impl<T: Pb> Field for BTreeMap<String, T> {
    fn field(v: Option<&Value>, path: &str) -> Res<Self> {
        match v {
            None | Some(Value::Null) => Ok(BTreeMap::new()),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, x)| Ok((k.clone(), T::pb(x, &format!("{path}[{k}]"))?)))
                .collect(),
            Some(_) => Err(bad(path, "expected a map")),
        }
    }
}

impl Pb for String {
    fn pb(v: &Value, path: &str) -> Res<Self> {
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| bad(path, "expected a string"))
    }
}

impl Pb for bool {
    fn pb(v: &Value, path: &str) -> Res<Self> {
        v.as_bool().ok_or_else(|| bad(path, "expected a boolean"))
    }
}

impl Pb for i64 {
    fn pb(v: &Value, path: &str) -> Res<Self> {
        v.as_i64().ok_or_else(|| bad(path, "expected an integer"))
    }
}

impl Pb for i32 {
    fn pb(v: &Value, path: &str) -> Res<Self> {
        i64::pb(v, path)?
            .try_into()
            .map_err(|_| bad(path, "out of range for int32"))
    }
}

/// `[]byte`: base64 in JSON.
impl Pb for Vec<u8> {
    fn pb(v: &Value, path: &str) -> Res<Self> {
        base64::engine::general_purpose::STANDARD
            .decode(String::pb(v, path)?)
            .map_err(|e| bad(path, format!("invalid base64: {e}")))
    }
}

fn timestamp(v: &Value, path: &str) -> Res<(i64, i32)> {
    let s = String::pb(v, path)?;
    let t = chrono::DateTime::parse_from_rfc3339(&s)
        .map_err(|e| bad(path, format!("invalid time {s:?}: {e}")))?;
    Ok((t.timestamp(), t.timestamp_subsec_nanos() as i32))
}

impl Pb for meta::Time {
    fn pb(v: &Value, path: &str) -> Res<Self> {
        let (s, _) = timestamp(v, path)?;
        // Time has whole seconds on the wire.
        Ok(meta::Time {
            seconds: Some(s),
            nanos: Some(0),
        })
    }
}

impl Pb for meta::MicroTime {
    fn pb(v: &Value, path: &str) -> Res<Self> {
        let (s, n) = timestamp(v, path)?;
        Ok(meta::MicroTime {
            seconds: Some(s),
            nanos: Some(n / 1000 * 1000),
        })
    }
}

impl Pb for Quantity {
    fn pb(v: &Value, path: &str) -> Res<Self> {
        let string = match v {
            Value::Number(n) => n.to_string(),
            v => String::pb(v, path)?,
        };
        Ok(Quantity {
            string: Some(string),
        })
    }
}

impl Pb for IntOrString {
    fn pb(v: &Value, path: &str) -> Res<Self> {
        Ok(match v {
            Value::String(s) => IntOrString {
                r#type: Some(1),
                int_val: Some(0),
                str_val: Some(s.clone()),
            },
            v => IntOrString {
                r#type: Some(0),
                int_val: Some(i32::pb(v, path)?),
                str_val: Some(String::new()),
            },
        })
    }
}

/// `fieldsV1` of managedFields: the JSON document itself.
impl Pb for meta::FieldsV1 {
    fn pb(v: &Value, _: &str) -> Res<Self> {
        Ok(meta::FieldsV1 {
            raw: Some(serde_json::to_vec(v).unwrap_or_default()),
        })
    }
}

/// Builds [`Msg`] impls: `Type { field, ... }` lists every field of the generated struct.
macro_rules! msg {
    ($($t:ty { $($f:ident),* $(,)? })*) => {$(
        impl Msg for $t {
            const NAMES: &'static [&'static str] = &[$(stringify!($f)),*];
            fn from_map(m: &Map<String, Value>, path: &str) -> Res<Self> {
                Ok(Self { $($f: field(m, stringify!($f), path)?),* })
            }
        }
    )*};
}

/// A message whose JSON form inlines another message's fields (`json:",inline"`), as
/// Volume inlines VolumeSource and Probe its handler.
macro_rules! inline {
    ($($t:ty { $($f:ident),* ; $inner:ident: $it:ty })*) => {$(
        impl Pb for $t {
            fn pb(v: &Value, path: &str) -> Res<Self> {
                let m = object(v, path)?;
                check_keys(m, path, &[&[$(stringify!($f)),*], <$it as Msg>::NAMES])?;
                Ok(Self {
                    $($f: field(m, stringify!($f), path)?,)*
                    $inner: Some(<$it as Msg>::from_map(m, path)?),
                })
            }
        }
    )*};
}

inline! {
    core::Volume { name; volume_source: core::VolumeSource }
    core::Probe {
        initial_delay_seconds, timeout_seconds, period_seconds, success_threshold,
        failure_threshold, termination_grace_period_seconds; handler: core::ProbeHandler
    }
    core::EphemeralContainer {
        target_container_name; ephemeral_container_common: core::EphemeralContainerCommon
    }
}

/// The message of each (apiVersion, kind) with a protobuf form.
macro_rules! kinds {
    ($(($av:literal, $kind:literal) => $t:ty,)*) => {
        fn raw(api_version: &str, kind: &str, v: &Value) -> Option<Res<Vec<u8>>> {
            match (api_version, kind) {
                $(($av, $kind) => Some(<$t as Pb>::pb(v, "").map(|m| m.encode_to_vec())),)*
                _ => None,
            }
        }
    };
}

kinds! {
    ("v1", "Status") => meta::Status,
    ("v1", "Namespace") => core::Namespace,
    ("v1", "NamespaceList") => core::NamespaceList,
    ("v1", "Service") => core::Service,
    ("v1", "ServiceList") => core::ServiceList,
    ("v1", "Node") => core::Node,
    ("v1", "NodeList") => core::NodeList,
    ("v1", "Pod") => core::Pod,
    ("v1", "PodList") => core::PodList,
    ("v1", "Event") => core::Event,
    ("v1", "EventList") => core::EventList,
    ("v1", "ConfigMap") => core::ConfigMap,
    ("v1", "ConfigMapList") => core::ConfigMapList,
    ("v1", "Secret") => core::Secret,
    ("v1", "SecretList") => core::SecretList,
    ("v1", "ServiceAccount") => core::ServiceAccount,
    ("v1", "ServiceAccountList") => core::ServiceAccountList,
    ("v1", "Endpoints") => core::Endpoints,
    ("v1", "EndpointsList") => core::EndpointsList,
    ("discovery.k8s.io/v1", "EndpointSlice") => discovery::EndpointSlice,
    ("discovery.k8s.io/v1", "EndpointSliceList") => discovery::EndpointSliceList,
    ("events.k8s.io/v1", "Event") => events::Event,
    ("events.k8s.io/v1", "EventList") => events::EventList,
    ("coordination.k8s.io/v1", "Lease") => coordination::Lease,
    ("coordination.k8s.io/v1", "LeaseList") => coordination::LeaseList,
    ("rbac.authorization.k8s.io/v1", "Role") => rbac::Role,
    ("rbac.authorization.k8s.io/v1", "RoleList") => rbac::RoleList,
    ("rbac.authorization.k8s.io/v1", "RoleBinding") => rbac::RoleBinding,
    ("rbac.authorization.k8s.io/v1", "RoleBindingList") => rbac::RoleBindingList,
    ("rbac.authorization.k8s.io/v1", "ClusterRole") => rbac::ClusterRole,
    ("rbac.authorization.k8s.io/v1", "ClusterRoleList") => rbac::ClusterRoleList,
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => rbac::ClusterRoleBinding,
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBindingList") => rbac::ClusterRoleBindingList,
    ("apps/v1", "Deployment") => apps::Deployment,
    ("apps/v1", "DeploymentList") => apps::DeploymentList,
    ("apps/v1", "ReplicaSet") => apps::ReplicaSet,
    ("apps/v1", "ReplicaSetList") => apps::ReplicaSetList,
    ("apps/v1", "DaemonSet") => apps::DaemonSet,
    ("apps/v1", "DaemonSetList") => apps::DaemonSetList,
    ("policy/v1", "PodDisruptionBudget") => policy::PodDisruptionBudget,
    ("policy/v1", "PodDisruptionBudgetList") => policy::PodDisruptionBudgetList,
    ("autoscaling/v1", "Scale") => autoscaling::Scale,
}

fn type_of(obj: &Value) -> (&str, &str) {
    let s = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or("");
    (s("apiVersion"), s("kind"))
}

/// Whether objects of this apiVersion and kind have a protobuf form.
pub fn has_encoding(api_version: &str, kind: &str) -> bool {
    raw(api_version, kind, &Value::Object(Map::new())).is_some()
}

/// The body kube-apiserver sends for `obj` (which names its apiVersion and kind).
pub fn encode(obj: &Value) -> Res<Vec<u8>> {
    let (api_version, kind) = type_of(obj);
    let raw = raw(api_version, kind, obj)
        .ok_or_else(|| EncodeError::Kind(format!("{api_version}, Kind={kind}")))??;
    let u = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.to_string()),
            kind: Some(kind.to_string()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = MAGIC.to_vec();
    out.extend(u.encode_to_vec());
    Ok(out)
}

/// One watch event (`{"type": T, "object": O}`) as a frame of a protobuf watch stream: a
/// big-endian u32 length, then a `WatchEvent` whose object is [`encode`]d.
pub fn watch_frame(event: &Value) -> Res<Vec<u8>> {
    let type_ = event.get("type").and_then(Value::as_str).unwrap_or("");
    let object = encode(event.get("object").unwrap_or(&Value::Null))?;
    watch_frame_of(type_, object)
}

/// A watch frame of an event type and an object already [`encode`]d.
pub fn watch_frame_of(type_: &str, object: Vec<u8>) -> Res<Vec<u8>> {
    let ev = meta::WatchEvent {
        r#type: Some(type_.to_string()),
        object: Some(RawExtension { raw: Some(object) }),
    }
    .encode_to_vec();
    let len = u32::try_from(ev.len()).map_err(|_| bad("", "watch event over 4 GiB"))?;
    let mut out = len.to_be_bytes().to_vec();
    out.extend(ev);
    Ok(out)
}

mod core_v1;
mod other;
#[cfg(test)]
mod tests;
