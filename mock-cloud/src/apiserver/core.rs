//! The API semantics shared by the HTTP layer and mock-cloud's in-process controllers:
//! create, update, patch, delete with finalizers, status subresources, Service IP and port
//! allocation, CRD installation, namespaces.
//!
//! Every write goes through one lock, so a read-modify-write here never races another.

use super::convert::{from_storage, to_storage};
use super::error::{ApiError, Cause};
use crate::patch::{self, PatchError, PatchType};
use crate::registry::{Registry, ResourceInfo};
use crate::selector::{FieldSelector, LabelSelector};
use crate::services::{ServiceIpam, ServiceIpamConfig};
use crate::store::{GroupResource, Store, StoreError, rv_of};
use base64::Engine;
use rand::Rng;
use serde_json::{Map, Value, json};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Options of a write request.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub dry_run: bool,
    pub field_manager: Option<String>,
    pub force: bool,
}

/// Options of a delete request.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub dry_run: bool,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    /// What happens to dependents (see `cluster::gc`); None: background.
    pub propagation: Option<Propagation>,
}

/// `propagationPolicy` of a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Orphan,
    Background,
    Foreground,
}

impl Propagation {
    pub fn parse(s: &str) -> Option<Propagation> {
        match s {
            "Orphan" => Some(Propagation::Orphan),
            "Background" => Some(Propagation::Background),
            "Foreground" => Some(Propagation::Foreground),
            _ => None,
        }
    }

    /// The finalizer that holds the owner while the garbage collector works.
    fn finalizer(self) -> Option<&'static str> {
        match self {
            Propagation::Orphan => Some("orphan"),
            Propagation::Foreground => Some("foregroundDeletion"),
            Propagation::Background => None,
        }
    }
}

/// Options of a list request.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
}

pub struct ListResult {
    pub items: Vec<Arc<Value>>,
    pub rv: u64,
    pub continue_token: Option<String>,
    pub remaining: Option<u64>,
}

/// Result of a delete: the object, and whether it is gone (false: waiting on finalizers).
pub struct Deleted {
    pub object: Arc<Value>,
    pub gone: bool,
}

/// Configuration of the API semantics.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub cluster_ip_cidrs: Vec<String>,
    pub node_port_range: std::ops::RangeInclusive<u16>,
    /// Events kept for watches to resume from.
    pub watch_history: usize,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            cluster_ip_cidrs: vec!["10.96.0.0/12".into()],
            node_port_range: 30000..=32767,
            watch_history: 100_000,
        }
    }
}

/// What writes change besides the store, reachable only through the write lock.
struct WriteState {
    ipam: ServiceIpam,
}

pub struct ApiCore {
    pub store: Store,
    pub registry: Registry,
    /// Every write holds this for its whole read-check-write sequence.
    write: Mutex<WriteState>,
    /// Writes that reached the store, for tests and benchmarks.
    pub writes: AtomicU64,
    /// What the simulated pods answered (`kubectl logs`).
    pub pod_logs: crate::podlogs::PodLogs,
}

/// Where a resource's objects are stored (events.k8s.io events share core events' storage).
pub fn storage_gr(info: &ResourceInfo) -> GroupResource {
    if info.group == "events.k8s.io" && info.resource == "events" {
        (String::new(), "events".into())
    } else {
        (info.group.clone(), info.resource.clone())
    }
}

/// `services` or `leases.coordination.k8s.io`, as error messages name resources.
pub fn qualified(info: &ResourceInfo) -> String {
    if info.group.is_empty() {
        info.resource.clone()
    } else {
        format!("{}.{}", info.resource, info.group)
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    meta(obj)?.get(field)?.as_str()
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Checks a name against RFC 1123 subdomain (or label, when `label`) rules.
fn name_error(name: &str, label: bool) -> Option<String> {
    let max = if label { 63 } else { 253 };
    let chars_ok = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (!label && c == '.'));
    let ends_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if name.len() <= max && chars_ok && ends_ok {
        return None;
    }
    Some(if label {
        format!(
            "Invalid value: \"{name}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
        )
    } else {
        format!(
            "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        )
    })
}

/// Kinds whose names must be DNS labels rather than subdomains.
fn label_named(info: &ResourceInfo) -> bool {
    info.group.is_empty() && matches!(info.resource.as_str(), "services" | "namespaces")
}

/// Kinds whose create keeps a client-provided status.
fn keeps_status_on_create(info: &ResourceInfo) -> bool {
    info.group.is_empty() && info.resource == "nodes"
}

impl ApiCore {
    pub fn new(cfg: CoreConfig) -> Result<Self, String> {
        let ipam = ServiceIpam::new(ServiceIpamConfig {
            cluster_ip_cidrs: cfg.cluster_ip_cidrs.clone(),
            node_port_range: cfg.node_port_range.clone(),
        })?;
        let core = ApiCore {
            store: Store::new(cfg.watch_history),
            registry: Registry::with_builtins(),
            write: Mutex::new(WriteState { ipam }),
            writes: AtomicU64::new(0),
            pod_logs: Default::default(),
        };
        core.bootstrap();
        Ok(core)
    }

    /// The namespaces and the `kubernetes` Service every cluster starts with.
    fn bootstrap(&self) {
        let ns = self.info("", "v1", "namespaces").expect("builtin");
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            self.create(&ns, "", obj, &WriteOptions::default())
                .expect("bootstrap namespace");
        }
        let svc = self.info("", "v1", "services").expect("builtin");
        let kubernetes = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default",
                         "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}
        });
        self.create(&svc, "default", kubernetes, &WriteOptions::default())
            .expect("bootstrap kubernetes service");
    }

    /// Looks up a served resource.
    pub fn info(&self, group: &str, version: &str, resource: &str) -> Option<ResourceInfo> {
        self.registry.get(group, version, resource)
    }

    fn lock(&self) -> MutexGuard<'_, WriteState> {
        self.write.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, info: &ResourceInfo, ns: &str, name: &str) -> Result<Arc<Value>, ApiError> {
        let ns = if info.namespaced { ns } else { "" };
        self.store
            .get(&storage_gr(info), ns, name)
            .ok_or_else(|| ApiError::not_found(&qualified(info), name))
    }

    pub fn list(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<ListResult, ApiError> {
        let ns = if info.namespaced { ns } else { None };
        let (all, rv) = self.store.list(&storage_gr(info), ns);
        let start_after = match &opts.continue_token {
            None => None,
            Some(tok) => Some(decode_continue(tok)?),
        };
        let mut matched = all
            .into_iter()
            .filter(|o| opts.labels.matches(o) && opts.fields.matches(o) && kind_matches(info, o));
        if let Some((sns, sname)) = &start_after {
            // Objects are ordered by (namespace, name); resume after the last one sent.
            let mut rest: Vec<Arc<Value>> = Vec::new();
            for o in matched.by_ref() {
                let key = (
                    meta_str(&o, "namespace").unwrap_or("").to_string(),
                    meta_str(&o, "name").unwrap_or("").to_string(),
                );
                if key > (sns.clone(), sname.clone()) {
                    rest.push(o);
                    break;
                }
            }
            let items: Vec<Arc<Value>> = rest.into_iter().chain(matched).collect();
            return Ok(paginate(items, rv, opts.limit));
        }
        Ok(paginate(matched.collect(), rv, opts.limit))
    }

    /// Creates an object in namespace `ns` (ignored for cluster-scoped resources).
    pub fn create(
        &self,
        info: &ResourceInfo,
        ns: &str,
        obj: Value,
        opts: &WriteOptions,
    ) -> Result<Arc<Value>, ApiError> {
        let mut w = self.lock();
        self.create_with(&mut w, info, ns, obj, opts)
    }

    fn create_with(
        &self,
        w: &mut WriteState,
        info: &ResourceInfo,
        ns: &str,
        mut obj: Value,
        opts: &WriteOptions,
    ) -> Result<Arc<Value>, ApiError> {
        check_type_meta(info, &mut obj)?;
        let obj = to_storage(info, obj);
        let generate_name = meta_str(&obj, "generateName").map(str::to_string);
        let given_name = meta_str(&obj, "name")
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        if given_name.is_none() && generate_name.is_none() {
            return Err(ApiError::invalid_field(
                &info.kind,
                &info.group,
                "",
                "metadata.name",
                "FieldValueRequired",
                "Required value: name or generateName is required",
            ));
        }
        let ns = self.check_namespace(info, ns, &obj)?;
        let gr = storage_gr(info);
        for attempt in 0..8 {
            let name = match (&given_name, &generate_name) {
                (Some(n), _) => n.clone(),
                (None, Some(prefix)) => format!("{prefix}{}", random_suffix()),
                (None, None) => unreachable!("checked above"),
            };
            if let Some(msg) = name_error(&name, label_named(info)) {
                return Err(ApiError::invalid_field(
                    &info.kind,
                    &info.group,
                    &name,
                    "metadata.name",
                    "FieldValueInvalid",
                    &msg,
                ));
            }
            if self.store.get(&gr, &ns, &name).is_some() {
                if given_name.is_none() && attempt < 7 {
                    continue;
                }
                return Err(ApiError::already_exists(&qualified(info), &name));
            }
            let mut candidate = obj.clone();
            prepare_create_meta(info, &mut candidate, &ns, &name);
            self.on_create(w, info, &mut candidate, opts)?;
            if let Some(manager) = &opts.field_manager {
                candidate =
                    patch::record_update(&info.api_version(), None, candidate, manager, &now());
            }
            if opts.dry_run {
                self.on_create_rollback(w, info, &candidate);
                return Ok(Arc::new(candidate));
            }
            let stored = self
                .store
                .create(&gr, &ns, &name, candidate)
                .map_err(|e| store_error(info, &name, e))?;
            self.writes.fetch_add(1, Ordering::Relaxed);
            self.after_create(info, &stored);
            return Ok(stored);
        }
        Err(ApiError::internal("could not generate a unique name"))
    }

    /// Replaces an object (or its status when `status` is true).
    pub fn update(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        obj: Value,
        status: bool,
        opts: &WriteOptions,
    ) -> Result<Arc<Value>, ApiError> {
        let mut w = self.lock();
        let ns = if info.namespaced { ns } else { "" };
        let mut obj = obj;
        check_type_meta(info, &mut obj)?;
        if let Some(body_name) = meta_str(&obj, "name")
            && body_name != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let old = self.get(info, ns, name)?;
        if let Some(rv) = meta_str(&obj, "resourceVersion")
            && !rv.is_empty()
            && Some(rv) != meta_str(&old, "resourceVersion")
        {
            return Err(ApiError::conflict(
                &qualified(info),
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        let obj = to_storage(info, obj);
        self.update_with(&mut w, info, ns, &old, obj, status, opts)
    }

    /// Patches an object (or its status when `status` is true). Server-side apply creates
    /// the object when it does not exist.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        pt: PatchType,
        body: &[u8],
        status: bool,
        opts: &WriteOptions,
    ) -> Result<Arc<Value>, ApiError> {
        let mut w = self.lock();
        let ns_eff = if info.namespaced { ns } else { "" };
        let old = self.store.get(&storage_gr(info), ns_eff, name);
        let old_served = old.as_ref().map(|o| from_storage(info, o));
        let kind_err = |e: PatchError| match e {
            PatchError::BadRequest(m) if e_is_422(&m) => ApiError::unprocessable(m),
            PatchError::BadRequest(m) => ApiError::bad_request(m),
            PatchError::UnsupportedMediaType(m) => ApiError::unsupported_media_type(m),
            PatchError::Conflict(m) => ApiError::conflict_message(m),
        };
        if pt == PatchType::Apply {
            let manager = opts.field_manager.clone().ok_or_else(|| {
                ApiError::bad_request(
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                )
            })?;
            let applied = patch::server_side_apply(
                &info.group,
                &info.kind,
                &info.api_version(),
                old_served.as_ref(),
                body,
                &manager,
                opts.force,
                &now(),
            )
            .map_err(kind_err)?;
            let mut applied = to_storage(info, applied);
            return match old {
                None => {
                    if status {
                        return Err(ApiError::not_found(&qualified(info), name));
                    }
                    if let Some(m) = applied.get_mut("metadata").and_then(Value::as_object_mut) {
                        m.insert("name".into(), json!(name));
                    }
                    let opts = WriteOptions {
                        field_manager: None,
                        ..opts.clone()
                    };
                    self.create_with(&mut w, info, ns, applied, &opts)
                }
                Some(old) => {
                    check_patched_identity(info, &old, &applied, name)?;
                    let opts = WriteOptions {
                        field_manager: None,
                        ..opts.clone()
                    };
                    self.update_with(&mut w, info, ns_eff, &old, applied, status, &opts)
                }
            };
        }
        let old = old.ok_or_else(|| ApiError::not_found(&qualified(info), name))?;
        let served = old_served.unwrap_or_default();
        let patched =
            patch::apply_patch(pt, &info.group, &info.kind, &served, body).map_err(kind_err)?;
        check_patched_identity(info, &old, &patched, name)?;
        let patched = to_storage(info, patched);
        self.update_with(&mut w, info, ns_eff, &old, patched, status, opts)
    }

    #[allow(clippy::too_many_arguments)]
    fn update_with(
        &self,
        w: &mut WriteState,
        info: &ResourceInfo,
        ns: &str,
        old: &Arc<Value>,
        obj: Value,
        status: bool,
        opts: &WriteOptions,
    ) -> Result<Arc<Value>, ApiError> {
        let name = meta_str(old, "name").unwrap_or_default().to_string();
        if !obj.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        let mut new = if status {
            // A status write changes status only.
            let mut n = (**old).clone();
            match obj.get("status") {
                Some(s) => n["status"] = s.clone(),
                None => {
                    if let Some(m) = n.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            n
        } else {
            let mut n = obj;
            if info.has_status {
                match old.get("status") {
                    Some(s) => n["status"] = s.clone(),
                    None => {
                        if let Some(m) = n.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            n
        };
        carry_over_meta(info, old, &mut new)?;
        let old_finalizers = finalizers(old);
        if meta(old).is_some_and(|m| m.contains_key("deletionTimestamp")) {
            let added: Vec<String> = finalizers(&new)
                .into_iter()
                .filter(|f| !old_finalizers.contains(f))
                .collect();
            if !added.is_empty() {
                return Err(ApiError::invalid_field(
                    &info.kind,
                    &info.group,
                    &name,
                    "metadata.finalizers",
                    "FieldValueForbidden",
                    &format!(
                        "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                        added
                            .iter()
                            .map(|f| format!("\"{f}\""))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
        if !status {
            self.on_update(w, info, old, &mut new, opts)?;
            if old.get("spec") != new.get("spec")
                && meta(old).is_some_and(|m| m.contains_key("generation"))
            {
                let g = old
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(1);
                new["metadata"]["generation"] = json!(g + 1);
            }
        } else {
            self.validate_status(info, &new)?;
        }
        if let Some(manager) = &opts.field_manager {
            new = patch::record_update(&info.api_version(), Some(old), new, manager, &now());
        }
        let unchanged = strip_rv(old) == strip_rv(&new);
        if opts.dry_run {
            if !status {
                self.on_update_rollback(w, info, old, &new);
            }
            return Ok(Arc::new(new));
        }
        if unchanged {
            return Ok(old.clone());
        }
        let deleting = meta(&new).is_some_and(|m| m.contains_key("deletionTimestamp"));
        if deleting && finalizers(&new).is_empty() {
            let gone = self.remove_with(w, info, ns, &name)?;
            return Ok(gone);
        }
        let stored = self
            .store
            .update(&storage_gr(info), ns, &name, rv_of(old), new)
            .map_err(|e| store_error(info, &name, e))?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.after_update(info, &stored);
        Ok(stored)
    }

    /// Deletes an object: at once, or by setting deletionTimestamp while finalizers remain.
    pub fn delete(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Deleted, ApiError> {
        let mut w = self.lock();
        self.delete_with(&mut w, info, ns, name, opts)
    }

    fn delete_with(
        &self,
        w: &mut WriteState,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Deleted, ApiError> {
        let ns = if info.namespaced { ns } else { "" };
        let old = self.get(info, ns, name)?;
        if let Some(uid) = &opts.precondition_uid {
            let actual = meta_str(&old, "uid").unwrap_or("");
            if uid != actual {
                return Err(ApiError::conflict(
                    &qualified(info),
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                    ),
                ));
            }
        }
        if let Some(rv) = &opts.precondition_rv {
            let actual = meta_str(&old, "resourceVersion").unwrap_or("");
            if rv != actual {
                return Err(ApiError::conflict(
                    &qualified(info),
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual}"
                    ),
                ));
            }
        }
        if opts.dry_run {
            return Ok(Deleted {
                object: old,
                gone: false,
            });
        }
        let is_namespace = info.group.is_empty() && info.resource == "namespaces";
        if meta(&old).is_some_and(|m| m.contains_key("deletionTimestamp")) {
            return Ok(Deleted {
                object: old,
                gone: false,
            });
        }
        let gc_finalizer = opts
            .propagation
            .and_then(Propagation::finalizer)
            .filter(|_| !is_namespace);
        if !finalizers(&old).is_empty() || is_namespace || gc_finalizer.is_some() {
            let mut new = (*old).clone();
            if let Some(f) = gc_finalizer
                && !finalizers(&new).iter().any(|x| x == f)
            {
                let mut fs = finalizers(&new);
                fs.push(f.to_string());
                new["metadata"]["finalizers"] = json!(fs);
            }
            new["metadata"]["deletionTimestamp"] = json!(now());
            new["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            if is_namespace {
                new["status"] = json!({"phase": "Terminating"});
            }
            let stored = self
                .store
                .update(&storage_gr(info), ns, name, rv_of(&old), new)
                .map_err(|e| store_error(info, name, e))?;
            self.writes.fetch_add(1, Ordering::Relaxed);
            if is_namespace {
                self.empty_namespace(w, name);
                if self.namespace_is_empty(name) {
                    let gone = self.remove_with(w, info, "", name)?;
                    return Ok(Deleted {
                        object: gone,
                        gone: true,
                    });
                }
            }
            return Ok(Deleted {
                object: stored,
                gone: false,
            });
        }
        let gone = self.remove_with(w, info, ns, name)?;
        Ok(Deleted {
            object: gone,
            gone: true,
        })
    }

    /// Deletes every matching object of a resource in a namespace (or cluster-wide).
    pub fn delete_collection(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        list: &ListOptions,
        opts: &DeleteOptions,
    ) -> Result<Vec<Arc<Value>>, ApiError> {
        let items = self.list(info, ns, list)?.items;
        let mut w = self.lock();
        let mut out = Vec::new();
        for item in items {
            let ns = meta_str(&item, "namespace").unwrap_or("").to_string();
            let name = meta_str(&item, "name").unwrap_or("").to_string();
            match self.delete_with(&mut w, info, &ns, &name, opts) {
                Ok(d) => out.push(d.object),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Removes an object from storage for good and runs the kind's clean-up.
    fn remove_with(
        &self,
        w: &mut WriteState,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
    ) -> Result<Arc<Value>, ApiError> {
        let gone = self
            .store
            .delete(&storage_gr(info), ns, name, None)
            .map_err(|e| store_error(info, name, e))?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.after_remove(w, info, &gone);
        if info.namespaced && self.namespace_terminating(ns) && self.namespace_is_empty(ns) {
            let ns_info = self.info("", "v1", "namespaces").expect("builtin");
            let _ = self.remove_with(w, &ns_info, "", ns);
        }
        Ok(gone)
    }

    fn check_namespace(
        &self,
        info: &ResourceInfo,
        ns: &str,
        obj: &Value,
    ) -> Result<String, ApiError> {
        if !info.namespaced {
            return Ok(String::new());
        }
        let body_ns = meta_str(obj, "namespace").filter(|n| !n.is_empty());
        let ns = match (ns, body_ns) {
            ("", Some(b)) => b.to_string(),
            ("", None) => "default".to_string(),
            (p, Some(b)) if p != b => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            (p, _) => p.to_string(),
        };
        let ns_gr = (String::new(), "namespaces".to_string());
        match self.store.get(&ns_gr, "", &ns) {
            None => Err(ApiError::not_found("namespaces", &ns)),
            Some(n) if meta(&n).is_some_and(|m| m.contains_key("deletionTimestamp")) => {
                Err(ApiError::forbidden(format!(
                    "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    qualified(info),
                    meta_str(obj, "name").unwrap_or("")
                )))
            }
            Some(_) => Ok(ns),
        }
    }

    fn namespace_terminating(&self, ns: &str) -> bool {
        let ns_gr = (String::new(), "namespaces".to_string());
        self.store
            .get(&ns_gr, "", ns)
            .is_some_and(|n| meta(&n).is_some_and(|m| m.contains_key("deletionTimestamp")))
    }

    fn namespace_is_empty(&self, ns: &str) -> bool {
        self.registry
            .all()
            .iter()
            .filter(|i| i.namespaced)
            .all(|i| self.store.list(&storage_gr(i), Some(ns)).0.is_empty())
    }

    /// Deletes everything in a terminating namespace (objects with finalizers linger).
    fn empty_namespace(&self, w: &mut WriteState, ns: &str) {
        let mut seen = std::collections::HashSet::new();
        for info in self.registry.all().iter().filter(|i| i.namespaced) {
            if !seen.insert(storage_gr(info)) {
                continue;
            }
            let (items, _) = self.store.list(&storage_gr(info), Some(ns));
            for item in items {
                let name = meta_str(&item, "name").unwrap_or("").to_string();
                let _ = self.delete_with(w, info, ns, &name, &DeleteOptions::default());
            }
        }
    }

    // ---- kind-specific behaviour ----

    fn on_create(
        &self,
        w: &mut WriteState,
        info: &ResourceInfo,
        obj: &mut Value,
        _opts: &WriteOptions,
    ) -> Result<(), ApiError> {
        let name = meta_str(obj, "name").unwrap_or("").to_string();
        match (info.group.as_str(), info.resource.as_str()) {
            ("", "services") => {
                w.ipam
                    .create(obj)
                    .map_err(|errs| service_invalid(&name, errs))?;
            }
            ("", "namespaces") => {
                obj["spec"] = json!({"finalizers": ["kubernetes"]});
                obj["status"] = json!({"phase": "Active"});
                labels_mut(obj).insert("kubernetes.io/metadata.name".into(), json!(name));
            }
            ("", "pods") => {
                default_pod(obj);
                obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
            }
            ("apps", "deployments" | "replicasets") => {
                validate_workload(info, &name, obj)?;
                default_workload(info, obj);
            }
            ("apiextensions.k8s.io", "customresourcedefinitions") => {
                ResourceInfo::from_crd(obj).map_err(|m| crd_invalid(&name, &m))?;
                obj["status"] = crd_status(obj);
            }
            _ => {}
        }
        Ok(())
    }

    /// Undoes `on_create`'s allocations for a dry run.
    fn on_create_rollback(&self, w: &mut WriteState, info: &ResourceInfo, obj: &Value) {
        if info.group.is_empty() && info.resource == "services" {
            w.ipam.release(obj);
        }
    }

    fn on_update(
        &self,
        w: &mut WriteState,
        info: &ResourceInfo,
        old: &Value,
        new: &mut Value,
        _opts: &WriteOptions,
    ) -> Result<(), ApiError> {
        let name = meta_str(old, "name").unwrap_or("").to_string();
        match (info.group.as_str(), info.resource.as_str()) {
            ("", "services") => {
                w.ipam
                    .update(old, new)
                    .map_err(|errs| service_invalid(&name, errs))?;
            }
            ("apiextensions.k8s.io", "customresourcedefinitions") => {
                ResourceInfo::from_crd(new).map_err(|m| crd_invalid(&name, &m))?;
                new["status"] = crd_status(new);
            }
            ("apps", "deployments" | "replicasets") => {
                validate_workload(info, &name, new)?;
                default_workload(info, new);
            }
            ("", "namespaces") if new.get("spec") != old.get("spec") => {
                new["spec"] = old.get("spec").cloned().unwrap_or(json!({}));
            }
            _ => {}
        }
        Ok(())
    }

    /// Undoes `on_update`'s allocations for a dry run.
    fn on_update_rollback(
        &self,
        w: &mut WriteState,
        info: &ResourceInfo,
        old: &Value,
        new: &Value,
    ) {
        if info.group.is_empty() && info.resource == "services" {
            let mut back = old.clone();
            let _ = w.ipam.update(new, &mut back);
        }
    }

    fn validate_status(&self, info: &ResourceInfo, obj: &Value) -> Result<(), ApiError> {
        if info.group.is_empty() && info.resource == "services" {
            let name = meta_str(obj, "name").unwrap_or("");
            if let Some(ingress) = obj
                .pointer("/status/loadBalancer/ingress")
                .and_then(Value::as_array)
            {
                let mut causes = Vec::new();
                for (i, ing) in ingress.iter().enumerate() {
                    if let Some(ip) = ing.get("ip").and_then(Value::as_str)
                        && ip.parse::<std::net::IpAddr>().is_err()
                    {
                        causes.push(Cause {
                            field: format!("status.loadBalancer.ingress[{i}].ip"),
                            reason: "FieldValueInvalid".into(),
                            message: format!("Invalid value: \"{ip}\": must be a valid IP address"),
                        });
                    }
                    if let Some(mode) = ing.get("ipMode").and_then(Value::as_str)
                        && mode != "VIP"
                        && mode != "Proxy"
                    {
                        causes.push(Cause {
                            field: format!("status.loadBalancer.ingress[{i}].ipMode"),
                            reason: "FieldValueNotSupported".into(),
                            message: format!(
                                "Unsupported value: \"{mode}\": supported values: \"Proxy\", \"VIP\""
                            ),
                        });
                    }
                }
                if !causes.is_empty() {
                    return Err(ApiError::invalid(&info.kind, &info.group, name, causes));
                }
            }
        }
        Ok(())
    }

    fn after_create(&self, info: &ResourceInfo, obj: &Value) {
        if info.group == "apiextensions.k8s.io" && info.resource == "customresourcedefinitions" {
            let _ = self.registry.install_crd(obj);
        }
    }

    fn after_update(&self, info: &ResourceInfo, obj: &Value) {
        self.after_create(info, obj);
    }

    fn after_remove(&self, w: &mut WriteState, info: &ResourceInfo, obj: &Value) {
        match (info.group.as_str(), info.resource.as_str()) {
            ("", "services") => {
                w.ipam.release(obj);
            }
            ("apiextensions.k8s.io", "customresourcedefinitions") => {
                let name = meta_str(obj, "name").unwrap_or("");
                let removed = self.registry.remove_crd(name);
                if let Some(first) = removed.first() {
                    let gr = storage_gr(first);
                    let (items, _) = self.store.list(&gr, None);
                    for item in items {
                        let ns = meta_str(&item, "namespace").unwrap_or("").to_string();
                        let n = meta_str(&item, "name").unwrap_or("").to_string();
                        let _ = self.store.delete(&gr, &ns, &n, None);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Pod defaults kube-apiserver applies that clients print (container port protocols,
/// restart and DNS policy).
fn default_pod(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    spec.entry("restartPolicy").or_insert(json!("Always"));
    spec.entry("dnsPolicy").or_insert(json!("ClusterFirst"));
    spec.entry("schedulerName")
        .or_insert(json!("default-scheduler"));
    spec.entry("terminationGracePeriodSeconds")
        .or_insert(json!(30));
    for key in ["initContainers", "containers"] {
        if let Some(cs) = spec.get_mut(key).and_then(Value::as_array_mut) {
            for c in cs.iter_mut() {
                if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        p.entry("protocol").or_insert(json!("TCP"));
                    }
                }
                if let Some(c) = c.as_object_mut() {
                    c.entry("imagePullPolicy").or_insert(json!("IfNotPresent"));
                    c.entry("terminationMessagePath")
                        .or_insert(json!("/dev/termination-log"));
                }
            }
        }
    }
}

/// Defaults kube-apiserver gives Deployments and ReplicaSets (and their pod templates).
fn default_workload(info: &ResourceInfo, obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    spec.entry("replicas").or_insert(json!(1));
    if info.resource == "deployments" {
        spec.entry("revisionHistoryLimit").or_insert(json!(10));
        spec.entry("progressDeadlineSeconds").or_insert(json!(600));
        let strategy = spec.entry("strategy").or_insert_with(|| json!({}));
        if strategy.get("type").is_none() {
            strategy["type"] = json!("RollingUpdate");
        }
        if strategy["type"] == "RollingUpdate" {
            if !strategy["rollingUpdate"].is_object() {
                strategy["rollingUpdate"] = json!({});
            }
            let ru = strategy["rollingUpdate"].as_object_mut().expect("object");
            ru.entry("maxSurge").or_insert(json!("25%"));
            ru.entry("maxUnavailable").or_insert(json!("25%"));
        }
    }
    if let Some(t) = spec.get_mut("template") {
        default_pod(t);
    }
}

/// A workload needs a selector that selects its own pod template.
fn validate_workload(info: &ResourceInfo, name: &str, obj: &Value) -> Result<(), ApiError> {
    let invalid = |field: &str, reason: &str, msg: &str| {
        ApiError::invalid_field(&info.kind, &info.group, name, field, reason, msg)
    };
    let sel = obj
        .pointer("/spec/selector")
        .ok_or_else(|| invalid("spec.selector", "FieldValueRequired", "Required value"))?;
    let sel = crate::selector::LabelSelector::from_object(sel)
        .map_err(|e| invalid("spec.selector", "FieldValueInvalid", &e))?;
    if sel.is_empty() {
        return Err(invalid(
            "spec.selector",
            "FieldValueInvalid",
            "Invalid value: \"{}\": empty selector is invalid for deployment",
        ));
    }
    let template = json!({"metadata": {"labels": obj.pointer("/spec/template/metadata/labels").cloned().unwrap_or(json!({}))}});
    if !sel.matches(&template) {
        return Err(invalid(
            "spec.template.metadata.labels",
            "FieldValueInvalid",
            "Invalid value: `selector` does not match template `labels`",
        ));
    }
    Ok(())
}

fn e_is_422(message: &str) -> bool {
    message.starts_with(patch::JSON_PATCH_FAILED)
}

fn labels_mut(obj: &mut Value) -> &mut Map<String, Value> {
    let meta = obj["metadata"]
        .as_object_mut()
        .expect("metadata is an object");
    let labels = meta.entry("labels").or_insert_with(|| json!({}));
    if !labels.is_object() {
        *labels = json!({});
    }
    labels.as_object_mut().expect("labels is an object")
}

fn crd_status(crd: &Value) -> Value {
    let t = now();
    json!({
        "acceptedNames": crd.pointer("/spec/names").cloned().unwrap_or(json!({})),
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": t},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": t},
        ],
        "storedVersions": crd.pointer("/spec/versions").and_then(Value::as_array)
            .map(|vs| vs.iter().filter(|v| v["storage"].as_bool() == Some(true))
                 .filter_map(|v| v["name"].as_str()).map(|s| json!(s)).collect::<Vec<_>>())
            .unwrap_or_default(),
    })
}

fn crd_invalid(name: &str, message: &str) -> ApiError {
    let (field, msg) = message.split_once(": ").unwrap_or(("", message));
    ApiError::invalid_field(
        "CustomResourceDefinition",
        "apiextensions.k8s.io",
        name,
        field,
        "FieldValueInvalid",
        msg,
    )
}

fn service_invalid(name: &str, errs: Vec<crate::services::FieldError>) -> ApiError {
    if let Some(e) = errs.iter().find(|e| e.is_internal()) {
        return ApiError::internal(format!("Internal error occurred: {}", e.message));
    }
    ApiError::invalid(
        "Service",
        "",
        name,
        errs.into_iter()
            .map(|e| Cause {
                field: e.field,
                reason: e.reason.to_string(),
                message: e.message,
            })
            .collect(),
    )
}

/// apiVersion/kind in a body must match the resource they are sent to; fills them in when absent.
fn check_type_meta(info: &ResourceInfo, obj: &mut Value) -> Result<(), ApiError> {
    let Some(map) = obj.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the body of the request could not be decoded: expected a JSON object",
        ));
    };
    let want_av = info.api_version();
    match map.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("apiVersion".into(), json!(want_av));
        }
        Some(av) if av != want_av => {
            // Another served version of the same group is fine (CRDs with several versions).
            let same_group = match av.split_once('/') {
                Some((g, _)) => g == info.group,
                None => info.group.is_empty(),
            };
            if !same_group {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({av}) does not match the expected API version ({want_av})"
                )));
            }
            map.insert("apiVersion".into(), json!(want_av));
        }
        Some(_) => {}
    }
    match map.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("kind".into(), json!(info.kind));
        }
        Some(k) if k != info.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                info.kind
            )));
        }
        Some(_) => {}
    }
    match map.get("metadata") {
        None => {
            map.insert("metadata".into(), json!({}));
        }
        Some(Value::Object(_)) => {}
        Some(_) => {
            return Err(ApiError::bad_request(
                "the body of the request could not be decoded: metadata must be an object",
            ));
        }
    }
    Ok(())
}

fn prepare_create_meta(info: &ResourceInfo, obj: &mut Value, ns: &str, name: &str) {
    let has_spec = obj.get("spec").is_some();
    if info.has_status
        && !keeps_status_on_create(info)
        && let Some(m) = obj.as_object_mut()
    {
        m.remove("status");
    }
    let meta = obj["metadata"].as_object_mut().expect("checked object");
    meta.insert("name".into(), json!(name));
    if info.namespaced {
        meta.insert("namespace".into(), json!(ns));
    } else {
        meta.remove("namespace");
    }
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(now()));
    meta.remove("deletionTimestamp");
    meta.remove("deletionGracePeriodSeconds");
    meta.remove("resourceVersion");
    meta.remove("selfLink");
    if has_spec || info.crd_name.is_some() {
        meta.insert("generation".into(), json!(1));
    } else {
        meta.remove("generation");
    }
}

/// Keeps what a client may not change: identity, timestamps, deletion state.
fn carry_over_meta(info: &ResourceInfo, old: &Value, new: &mut Value) -> Result<(), ApiError> {
    let old_meta = meta(old).cloned().unwrap_or_default();
    if !new.get("metadata").is_some_and(Value::is_object) {
        new["metadata"] = json!({});
    }
    let m = new["metadata"].as_object_mut().expect("object");
    for key in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "resourceVersion",
    ] {
        match old_meta.get(key) {
            Some(v) => {
                m.insert(key.into(), v.clone());
            }
            None => {
                m.remove(key);
            }
        }
    }
    if !info.namespaced {
        m.remove("namespace");
    }
    if new.get("apiVersion").is_none() {
        new["apiVersion"] = old
            .get("apiVersion")
            .cloned()
            .unwrap_or(json!(info.api_version()));
    }
    if new.get("kind").is_none() {
        new["kind"] = json!(info.kind);
    }
    Ok(())
}

/// A patch may not rename or move an object.
fn check_patched_identity(
    info: &ResourceInfo,
    old: &Value,
    new: &Value,
    name: &str,
) -> Result<(), ApiError> {
    if let Some(n) = meta_str(new, "name")
        && n != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        )));
    }
    if let Some(rv) = meta_str(new, "resourceVersion")
        && !rv.is_empty()
        && Some(rv) != meta_str(old, "resourceVersion")
    {
        return Err(ApiError::conflict(
            &qualified(info),
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        ));
    }
    Ok(())
}

fn strip_rv(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        if let Some(Value::Array(mf)) = m.get_mut("managedFields") {
            for e in mf.iter_mut() {
                if let Some(em) = e.as_object_mut() {
                    em.remove("time");
                }
            }
        }
    }
    o
}

fn kind_matches(_info: &ResourceInfo, _obj: &Value) -> bool {
    true
}

fn paginate(items: Vec<Arc<Value>>, rv: u64, limit: Option<usize>) -> ListResult {
    match limit {
        Some(limit) if limit > 0 && items.len() > limit => {
            let remaining = (items.len() - limit) as u64;
            let mut items = items;
            items.truncate(limit);
            let last = items.last().expect("limit > 0");
            let token = encode_continue(
                meta_str(last, "namespace").unwrap_or(""),
                meta_str(last, "name").unwrap_or(""),
                rv,
            );
            ListResult {
                items,
                rv,
                continue_token: Some(token),
                remaining: Some(remaining),
            }
        }
        _ => ListResult {
            items,
            rv,
            continue_token: None,
            remaining: None,
        },
    }
}

fn encode_continue(ns: &str, name: &str, rv: u64) -> String {
    let raw = json!({"v": "mock-cloud/v1", "rv": rv, "ns": ns, "name": name}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_continue(tok: &str) -> Result<(String, String), ApiError> {
    let bad = || ApiError::bad_request(format!("continue key is not valid: {tok}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(tok)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    Ok((
        v["ns"].as_str().ok_or_else(bad)?.to_string(),
        v["name"].as_str().ok_or_else(bad)?.to_string(),
    ))
}

fn store_error(info: &ResourceInfo, name: &str, e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::not_found(&qualified(info), name),
        StoreError::AlreadyExists => ApiError::already_exists(&qualified(info), name),
        StoreError::Conflict => ApiError::conflict(
            &qualified(info),
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        ),
        StoreError::Expired { .. } => ApiError::gone(e.to_string()),
    }
}
