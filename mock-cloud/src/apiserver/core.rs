//! The API semantics shared by the HTTP layer and mock-cloud's in-process controllers:
//! create, update, patch, delete with finalizers, status subresources, Service IP and port
//! allocation, CRD installation, namespaces.
//!
//! Every write goes through one lock, so a read-modify-write here never races another.

use super::convert::{from_storage, to_storage};
use super::error::ApiError;
use super::objmeta::{
    carry_over_meta, check_patched_identity, check_type_meta, drop_empty_meta, finalizers,
    label_named, meta, meta_str, name_error, now, prepare_create_meta, random_suffix, strip_rv,
};
use crate::patch::{self, PatchError, PatchType};
use crate::registry::{Registry, ResourceInfo};
use crate::selector::{FieldSelector, LabelSelector};
use crate::services::{ServiceIpam, ServiceIpamConfig};
use crate::store::{GroupResource, Store, StoreError, rv_of};
use base64::Engine;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Options of a write request.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub dry_run: bool,
    pub field_manager: Option<String>,
    pub force: bool,
    /// `fieldValidation=Strict`: a custom resource's unknown fields are an error.
    pub strict_fields: bool,
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
pub(super) struct WriteState {
    pub(super) ipam: ServiceIpam,
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
        let token = match &opts.continue_token {
            None => None,
            Some(tok) => Some(ContinueToken::decode(tok)?),
        };
        if let (Some(t), Some(ns)) = (&token, ns)
            && t.ns != ns
        {
            return Err(ApiError::bad_request(
                "continue key is not valid: it continues a list of another namespace",
            ));
        }
        if let Some(t) = &token
            && t.rv.is_some_and(|rv| rv < self.store.oldest_rv())
        {
            // As kube-apiserver after an etcd compaction: 410, with a token that goes on
            // from the same key at the latest version.
            let latest = ContinueToken {
                rv: None,
                ..t.clone()
            };
            return Err(ApiError::continue_expired(latest.encode()));
        }
        let page = self.store.list_page(
            &storage_gr(info),
            ns,
            token.as_ref().map(|t| (t.ns.as_str(), t.name.as_str())),
            opts.limit.filter(|&l| l > 0),
            |o| opts.labels.matches(o) && opts.fields.matches(o),
        );
        // Every page of one list reports the version its first page was read at, so a watch
        // started from it misses nothing that changed while the pages were read.
        let rv = token.as_ref().and_then(|t| t.rv).unwrap_or(page.rv);
        let returned = token.as_ref().map_or(0, |t| t.returned) + page.items.len() as u64;
        let Some(last) = page.items.last().filter(|_| page.more) else {
            return Ok(ListResult {
                items: page.items,
                rv,
                continue_token: None,
                remaining: None,
            });
        };
        let next = ContinueToken {
            rv: Some(rv),
            ns: meta_str(last, "namespace").unwrap_or("").to_string(),
            name: meta_str(last, "name").unwrap_or("").to_string(),
            returned,
        };
        // As kube-apiserver: only without selectors is the rest known (an estimate when
        // objects come and go between pages).
        let selecting = !opts.labels.is_empty() || !opts.fields.is_empty();
        let remaining = (!selecting).then(|| (page.total as u64).saturating_sub(returned));
        Ok(ListResult {
            items: page.items,
            rv,
            continue_token: Some(next.encode()),
            remaining,
        })
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
            drop_empty_meta(&mut candidate);
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
            crate::schema::admit(info, &mut new, Some(old), opts.strict_fields)?;
        }
        if let Some(manager) = &opts.field_manager {
            new = patch::record_update(&info.api_version(), Some(old), new, manager, &now());
        }
        drop_empty_meta(&mut new);
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

    pub(super) fn delete_with(
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
}

fn e_is_422(message: &str) -> bool {
    message.starts_with(patch::JSON_PATCH_FAILED)
}

/// Where a paginated list goes on: after the object (`ns`, `name`), at version `rv` (None:
/// the latest, after the list's own version was compacted away), `returned` objects in.
#[derive(Debug, Clone, PartialEq)]
struct ContinueToken {
    rv: Option<u64>,
    ns: String,
    name: String,
    returned: u64,
}

const CONTINUE_VERSION: &str = "mock-cloud/v1";

impl ContinueToken {
    fn encode(&self) -> String {
        let rv = self.rv.map_or(-1, |rv| rv as i64);
        let raw = json!({"v": CONTINUE_VERSION, "rv": rv, "ns": self.ns, "name": self.name,
            "n": self.returned})
        .to_string();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    /// A token this server handed out, or 400 as kube-apiserver answers.
    fn decode(tok: &str) -> Result<ContinueToken, ApiError> {
        let bad = |why: &str| ApiError::bad_request(format!("continue key is not valid: {why}"));
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(tok)
            .map_err(|e| bad(&e.to_string()))?;
        let v: Value = serde_json::from_slice(&raw).map_err(|e| bad(&e.to_string()))?;
        if v["v"] != CONTINUE_VERSION {
            return Err(bad("unknown version"));
        }
        let rv = match v["rv"].as_i64() {
            Some(-1) => None,
            Some(rv) if rv > 0 => Some(rv as u64),
            _ => return Err(bad("incorrect encoded start resourceVersion")),
        };
        let text = |k: &str| v[k].as_str().map(str::to_string);
        let (Some(ns), Some(name)) = (text("ns"), text("name")) else {
            return Err(bad("encoded start key missing"));
        };
        if name.is_empty() {
            return Err(bad("encoded start key empty"));
        }
        let returned = v["n"]
            .as_u64()
            .ok_or_else(|| bad("encoded count missing"))?;
        Ok(ContinueToken {
            rv,
            ns,
            name,
            returned,
        })
    }
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
