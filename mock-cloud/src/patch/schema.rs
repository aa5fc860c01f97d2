//! Just enough schema knowledge for strategic merge patch and server-side apply:
//! which lists are merged by key, which are sets of primitives, which are atomic.
//!
//! Paths are the field names from the object root; list items do not add a segment
//! (so a container's ports live at `["spec", "containers", "ports"]`).

use serde_json::{Map, Value};

use super::PatchError;

/// One field of a list-map key, with the value assumed when the field is absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyField {
    pub name: &'static str,
    pub default: Option<&'static str>,
}

const fn key(name: &'static str) -> KeyField {
    KeyField {
        name,
        default: None,
    }
}

const fn key_or(name: &'static str, default: &'static str) -> KeyField {
    KeyField {
        name,
        default: Some(default),
    }
}

const NAME: &[KeyField] = &[key("name")];
const TYPE: &[KeyField] = &[key("type")];
const UID: &[KeyField] = &[key("uid")];
const IP: &[KeyField] = &[key("ip")];
const MOUNT_PATH: &[KeyField] = &[key("mountPath")];
const DEVICE_PATH: &[KeyField] = &[key("devicePath")];
const SERVICE_PORT: &[KeyField] = &[key("port"), key_or("protocol", "TCP")];
const CONTAINER_PORT: &[KeyField] = &[key("containerPort"), key_or("protocol", "TCP")];
const TOPOLOGY_SPREAD: &[KeyField] = &[key("topologyKey"), key("whenUnsatisfiable")];

/// How a list is merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListKind {
    /// Replaced as a whole.
    Atomic,
    /// A set of primitives, merged by union.
    Set,
    /// A list of objects identified by the given key fields (first one mandatory).
    Map(&'static [KeyField]),
}

/// API groups served with built-in (strategic-merge capable) schemas.
const BUILTIN_GROUPS: &[&str] = &[
    "",
    "apps",
    "policy",
    "discovery.k8s.io",
    "events.k8s.io",
    "coordination.k8s.io",
    "apiextensions.k8s.io",
    "rbac.authorization.k8s.io",
];

/// The schema of one kind, as far as patching cares.
#[derive(Debug, Clone)]
pub(crate) struct Schema {
    kind: String,
    builtin: bool,
}

impl Schema {
    /// Schema for `group`/`kind`; groups outside [`BUILTIN_GROUPS`] are custom resources.
    pub fn new(group: &str, kind: &str) -> Self {
        Self {
            kind: kind.to_owned(),
            builtin: BUILTIN_GROUPS.contains(&group),
        }
    }

    /// Schema for an object's `apiVersion` (`group/version` or `version`) and kind.
    pub fn from_api_version(api_version: &str, kind: &str) -> Self {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        Self::new(group, kind)
    }

    /// Whether the kind has strategic-merge information (built-in kinds only).
    pub fn is_builtin(&self) -> bool {
        self.builtin
    }

    /// How the list at `path` merges.
    pub fn list_kind<S: AsRef<str>>(&self, path: &[S]) -> ListKind {
        let path: Vec<&str> = path.iter().map(AsRef::as_ref).collect();
        match path.as_slice() {
            [.., "metadata", "finalizers"] => return ListKind::Set,
            [.., "metadata", "ownerReferences"] => return ListKind::Map(UID),
            _ => {}
        }
        if !self.builtin {
            return ListKind::Atomic;
        }
        if let Some(rel) = pod_spec_relative(&self.kind, &path) {
            return pod_spec_list(rel);
        }
        match (self.kind.as_str(), path.as_slice()) {
            (_, ["status", "conditions"]) => ListKind::Map(TYPE),
            ("Service", ["spec", "ports"]) => ListKind::Map(SERVICE_PORT),
            ("Node", ["status", "addresses"]) => ListKind::Map(TYPE),
            ("Node", ["spec", "podCIDRs"]) => ListKind::Set,
            ("Pod", ["status", "podIPs" | "hostIPs"]) => ListKind::Map(IP),
            _ => ListKind::Atomic,
        }
    }

    /// Whether the map at `path` is atomic for server-side apply
    /// (label selectors and node selectors).
    pub fn is_atomic_map<S: AsRef<str>>(&self, path: &[S]) -> bool {
        if !self.builtin {
            return false;
        }
        let path: Vec<&str> = path.iter().map(AsRef::as_ref).collect();
        if path == ["spec", "selector"] {
            return true;
        }
        pod_spec_relative(&self.kind, &path).is_some_and(|rel| rel == ["nodeSelector"])
    }
}

/// The part of `path` below a pod spec, for kinds that embed one.
fn pod_spec_relative<'a>(kind: &str, path: &'a [&'a str]) -> Option<&'a [&'a str]> {
    let prefix: &[&str] = match kind {
        "Pod" => &["spec"],
        "PodTemplate" => &["template", "spec"],
        "Deployment"
        | "DaemonSet"
        | "StatefulSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job" => &["spec", "template", "spec"],
        "CronJob" => &["spec", "jobTemplate", "spec", "template", "spec"],
        _ => return None,
    };
    path.strip_prefix(prefix)
}

/// List kinds inside a pod spec (upstream `patchMergeKey` / `listMapKey` tags).
fn pod_spec_list(rel: &[&str]) -> ListKind {
    const CONTAINERS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];
    match rel {
        [c] if CONTAINERS.contains(c) => ListKind::Map(NAME),
        [c, field] if CONTAINERS.contains(c) => match *field {
            "ports" => ListKind::Map(CONTAINER_PORT),
            "env" => ListKind::Map(NAME),
            "volumeMounts" => ListKind::Map(MOUNT_PATH),
            "volumeDevices" => ListKind::Map(DEVICE_PATH),
            _ => ListKind::Atomic,
        },
        ["volumes" | "imagePullSecrets" | "resourceClaims" | "schedulingGates"] => {
            ListKind::Map(NAME)
        }
        ["hostAliases"] => ListKind::Map(IP),
        ["topologySpreadConstraints"] => ListKind::Map(TOPOLOGY_SPREAD),
        _ => ListKind::Atomic,
    }
}

/// The value of key field `f` in `item`, falling back to its default.
fn key_value(item: &Map<String, Value>, f: &KeyField) -> Option<Value> {
    item.get(f.name)
        .filter(|v| !v.is_null())
        .cloned()
        .or_else(|| f.default.map(|d| Value::String(d.to_owned())))
}

/// Checks that `item` carries the mandatory (first) key field.
pub(crate) fn require_key(item: &Map<String, Value>, keys: &[KeyField]) -> Result<(), PatchError> {
    match keys.first() {
        Some(f) if key_value(item, f).is_none() => Err(PatchError::BadRequest(format!(
            "List item does not contain declared merge key {:?}",
            f.name
        ))),
        _ => Ok(()),
    }
}

/// The FieldsV1 key element (`k:{"port":80,"protocol":"TCP"}`) identifying `item`.
pub(crate) fn key_element(
    item: &Map<String, Value>,
    keys: &[KeyField],
) -> Result<String, PatchError> {
    require_key(item, keys)?;
    let mut fields: Vec<(&str, Value)> = keys
        .iter()
        .filter_map(|f| key_value(item, f).map(|v| (f.name, v)))
        .collect();
    fields.sort_by(|a, b| a.0.cmp(b.0));
    let parts: Vec<String> = fields
        .iter()
        .map(|(name, v)| format!("{}:{v}", Value::String((*name).to_owned())))
        .collect();
    Ok(format!("k:{{{}}}", parts.join(",")))
}

/// Index of the list item identified by `item`'s key fields.
///
/// Items match exactly (after defaulting) first; failing that, an item agreeing on
/// every key field `item` spells out matches (so `{"port": 53}` finds a lone UDP 53).
pub(crate) fn find_item(
    list: &[Value],
    item: &Map<String, Value>,
    keys: &[KeyField],
) -> Option<usize> {
    let agrees = |v: &Value, f: &KeyField| {
        v.as_object()
            .is_some_and(|c| key_value(c, f) == key_value(item, f))
    };
    let spelled = |f: &&KeyField| item.get(f.name).is_some_and(|x| !x.is_null());
    list.iter()
        .position(|v| keys.iter().all(|f| agrees(v, f)))
        .or_else(|| {
            list.iter()
                .position(|v| keys.iter().filter(spelled).all(|f| agrees(v, f)))
        })
}
