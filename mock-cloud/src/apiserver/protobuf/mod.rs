//! Protobuf request bodies (`application/vnd.kubernetes.protobuf`), as kubectl's typed
//! generators (`create deployment|service|configmap|secret|namespace|serviceaccount|role|
//! rolebinding|clusterrole|clusterrolebinding|poddisruptionbudget`, `expose`, `run`) send
//! them: the `k8s\0` magic, then a `runtime.Unknown` whose `raw` holds the object. Protobuf
//! answers are [`encode`]d.
//!
//! Messages are decoded with the `k8s-pb` types (generated from the upstream protos) and
//! turned into the JSON the rest of the server stores. Each conversion destructures its
//! message completely, so a field added upstream fails to compile instead of vanishing;
//! fields mock-cloud does not convert (probes, volumes, affinity, ...) make the request fail
//! with 415 naming the field, never get dropped silently.
//!
//! `status` is dropped: writes to the main resource never change it (protobuf status writes
//! are refused by the HTTP layer).
//!
//! Proto2 cannot tell an unset scalar from its zero value, and Go encodes every non-pointer
//! field; so empty strings, and zeros / `false` of non-pointer fields, are omitted as Go's
//! JSON encoder omits them (`omitempty`).

use base64::Engine;
use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::core::v1 as core;
use k8s_pb::api::policy::v1 as policy;
use k8s_pb::api::rbac::v1 as rbac;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// The protobuf media type.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
/// Every protobuf-encoded object starts with these bytes.
const MAGIC: &[u8; 4] = b"k8s\0";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PbError {
    #[error("Missing the k8s protobuf envelope")]
    NoEnvelope,
    #[error("Invalid protobuf: {0}")]
    Decode(String),
    /// A kind mock-cloud does not decode from protobuf.
    #[error("No protobuf decoding for {api_version}, Kind={kind}")]
    UnknownKind { api_version: String, kind: String },
    /// A field whose conversion is not implemented.
    #[error("Field {0} is not supported in protobuf bodies; send JSON")]
    Unsupported(String),
}

type R = Result<Value, PbError>;

/// Decodes a protobuf body into the object's JSON form (with apiVersion and kind).
pub fn decode(body: &[u8]) -> R {
    let raw = body.strip_prefix(MAGIC).ok_or(PbError::NoEnvelope)?;
    let unknown = Unknown::decode(raw).map_err(|e| PbError::Decode(e.to_string()))?;
    let tm = unknown.type_meta.unwrap_or_default();
    let api_version = tm.api_version.unwrap_or_default();
    let kind = tm.kind.unwrap_or_default();
    let raw = unknown.raw.unwrap_or_default();
    let enc = unknown.content_encoding.unwrap_or_default();
    if !enc.is_empty() {
        return Err(PbError::Decode(format!("content encoding {enc:?}")));
    }
    fn dec<M: Message + Default>(raw: &[u8]) -> Result<M, PbError> {
        M::decode(raw).map_err(|e| PbError::Decode(e.to_string()))
    }
    let mut obj = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Service") => dec::<core::Service>(&raw)?.j("")?,
        ("v1", "ConfigMap") => dec::<core::ConfigMap>(&raw)?.j("")?,
        ("v1", "Secret") => dec::<core::Secret>(&raw)?.j("")?,
        ("v1", "Namespace") => dec::<core::Namespace>(&raw)?.j("")?,
        ("v1", "Pod") => dec::<core::Pod>(&raw)?.j("")?,
        ("apps/v1", "Deployment") => dec::<apps::Deployment>(&raw)?.j("")?,
        ("apps/v1", "ReplicaSet") => dec::<apps::ReplicaSet>(&raw)?.j("")?,
        ("v1", "ServiceAccount") => dec::<core::ServiceAccount>(&raw)?.j("")?,
        ("rbac.authorization.k8s.io/v1", "Role") => dec::<rbac::Role>(&raw)?.j("")?,
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => dec::<rbac::RoleBinding>(&raw)?.j("")?,
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => dec::<rbac::ClusterRole>(&raw)?.j("")?,
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            dec::<rbac::ClusterRoleBinding>(&raw)?.j("")?
        }
        ("policy/v1", "PodDisruptionBudget") => dec::<policy::PodDisruptionBudget>(&raw)?.j("")?,
        _ => return Err(PbError::UnknownKind { api_version, kind }),
    };
    if !obj.is_object() {
        obj = json!({});
    }
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

/// Conversion of one decoded value to JSON; `Null` means "omit". `path` names the field in
/// error messages.
trait J {
    fn j(self, path: &str) -> R;
}

fn sub(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// Builds an object from `(json name, value)` pairs, omitting nulls.
macro_rules! obj {
    ($path:expr; $($key:literal => $val:expr),* $(,)?) => {{
        let mut m = Map::new();
        $(
            let v = J::j($val, &sub($path, $key))?;
            if !v.is_null() {
                m.insert($key.to_string(), v);
            }
        )*
        Ok(if m.is_empty() { Value::Null } else { Value::Object(m) })
    }};
}

/// Fields mock-cloud does not convert: fine when absent (or empty), 415 when set.
macro_rules! unsupported {
    ($($t:ty),* $(,)?) => {$(
        impl J for $t {
            fn j(self, path: &str) -> R {
                if self == <$t>::default() {
                    Ok(Value::Null)
                } else {
                    Err(PbError::Unsupported(path.to_string()))
                }
            }
        }
    )*};
}

unsupported!(
    core::Volume,
    core::EphemeralContainer,
    core::PodSecurityContext,
    core::Affinity,
    core::Toleration,
    core::HostAlias,
    core::PodDnsConfig,
    core::PodReadinessGate,
    core::TopologySpreadConstraint,
    core::PodOs,
    core::PodSchedulingGate,
    core::PodResourceClaim,
    core::EnvFromSource,
    core::EnvVarSource,
    core::ContainerResizePolicy,
    core::VolumeMount,
    core::VolumeDevice,
    core::Probe,
    core::Lifecycle,
    core::SecurityContext,
    core::ResourceClaim,
    core::SessionAffinityConfig,
    meta::ManagedFieldsEntry,
);

impl J for String {
    fn j(self, _: &str) -> R {
        Ok(if self.is_empty() {
            Value::Null
        } else {
            Value::String(self)
        })
    }
}

impl J for bool {
    fn j(self, _: &str) -> R {
        Ok(json!(self))
    }
}

impl J for i32 {
    fn j(self, _: &str) -> R {
        Ok(json!(self))
    }
}

impl J for i64 {
    fn j(self, _: &str) -> R {
        Ok(json!(self))
    }
}

impl<T: J> J for Option<T> {
    fn j(self, path: &str) -> R {
        match self {
            Some(v) => v.j(path),
            None => Ok(Value::Null),
        }
    }
}

impl<T: J> J for Vec<T> {
    fn j(self, path: &str) -> R {
        if self.is_empty() {
            return Ok(Value::Null);
        }
        let mut out = Vec::with_capacity(self.len());
        for (i, v) in self.into_iter().enumerate() {
            let v = v.j(&format!("{path}[{i}]"))?;
            out.push(if v.is_null() { json!({}) } else { v });
        }
        Ok(Value::Array(out))
    }
}

impl<T: J> J for BTreeMap<String, T> {
    fn j(self, path: &str) -> R {
        if self.is_empty() {
            return Ok(Value::Null);
        }
        let mut m = Map::new();
        for (k, v) in self {
            let p = format!("{path}[{k}]");
            // Map values keep empty strings: `data: {a: ""}` is meaningful.
            let v = match v.j(&p)? {
                Value::Null => json!(""),
                v => v,
            };
            m.insert(k, v);
        }
        Ok(Value::Object(m))
    }
}

/// A `[]byte` map (Secret data, ConfigMap binaryData): base64 strings, as in JSON.
struct Bytes(BTreeMap<String, Vec<u8>>);

impl J for Bytes {
    fn j(self, _: &str) -> R {
        if self.0.is_empty() {
            return Ok(Value::Null);
        }
        let e = base64::engine::general_purpose::STANDARD;
        Ok(Value::Object(
            self.0
                .into_iter()
                .map(|(k, v)| (k, json!(e.encode(v))))
                .collect(),
        ))
    }
}

/// A non-pointer integer: omitted when zero.
fn nz<T: PartialEq + Default>(v: Option<T>) -> Option<T> {
    v.filter(|x| *x != T::default())
}

impl J for meta::Time {
    fn j(self, _: &str) -> R {
        let meta::Time { seconds, nanos: _ } = self;
        // Go's zero time (year 1) means unset.
        match seconds.filter(|s| *s > -62_135_596_800) {
            None => Ok(Value::Null),
            Some(s) => Ok(chrono::DateTime::from_timestamp(s, 0)
                .map(|t| json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
                .unwrap_or(Value::Null)),
        }
    }
}

impl J for Quantity {
    fn j(self, p: &str) -> R {
        let Quantity { string } = self;
        string.j(p)
    }
}

impl J for IntOrString {
    fn j(self, _: &str) -> R {
        let IntOrString {
            r#type,
            int_val,
            str_val,
        } = self;
        Ok(match r#type {
            Some(1) => json!(str_val.unwrap_or_default()),
            _ => json!(int_val.unwrap_or(0)),
        })
    }
}

impl J for meta::ObjectMeta {
    fn j(self, p: &str) -> R {
        let meta::ObjectMeta {
            name,
            generate_name,
            namespace,
            self_link,
            uid,
            resource_version,
            generation,
            creation_timestamp,
            deletion_timestamp,
            deletion_grace_period_seconds,
            labels,
            annotations,
            owner_references,
            finalizers,
            managed_fields,
        } = self;
        obj!(p;
            "name" => name,
            "generateName" => generate_name,
            "namespace" => namespace,
            "selfLink" => self_link,
            "uid" => uid,
            "resourceVersion" => resource_version,
            "generation" => nz(generation),
            "creationTimestamp" => creation_timestamp,
            "deletionTimestamp" => deletion_timestamp,
            "deletionGracePeriodSeconds" => deletion_grace_period_seconds,
            "labels" => labels,
            "annotations" => annotations,
            "ownerReferences" => owner_references,
            "finalizers" => finalizers,
            "managedFields" => managed_fields,
        )
    }
}

impl J for meta::OwnerReference {
    fn j(self, p: &str) -> R {
        let meta::OwnerReference {
            api_version,
            kind,
            name,
            uid,
            controller,
            block_owner_deletion,
        } = self;
        obj!(p;
            "apiVersion" => api_version,
            "kind" => kind,
            "name" => name,
            "uid" => uid,
            "controller" => controller,
            "blockOwnerDeletion" => block_owner_deletion,
        )
    }
}

impl J for meta::LabelSelector {
    fn j(self, p: &str) -> R {
        let meta::LabelSelector {
            match_labels,
            match_expressions,
        } = self;
        let v: R = obj!(p;
            "matchLabels" => match_labels,
            "matchExpressions" => match_expressions,
        );
        // An empty selector is `{}` (selects everything), not absent.
        v.map(|v| if v.is_null() { json!({}) } else { v })
    }
}

impl J for meta::LabelSelectorRequirement {
    fn j(self, p: &str) -> R {
        let meta::LabelSelectorRequirement {
            key,
            operator,
            values,
        } = self;
        obj!(p; "key" => key, "operator" => operator, "values" => values)
    }
}

mod apps_v1;
mod core_v1;
pub mod encode;
mod rbac_policy_v1;
#[cfg(test)]
mod tests;
