//! The garbage collector, for the ownership chains mock-cloud's controllers build
//! (Deployment → ReplicaSet → Pod):
//!
//! * Background deletion: a dependent whose owners are all gone is deleted.
//! * Foreground deletion (`foregroundDeletion` finalizer on the owner): dependents are deleted
//!   (in foreground too), then the finalizer is removed and the owner goes.
//! * Orphan deletion (`orphan` finalizer): dependents lose their ownerReference to the owner,
//!   then the finalizer is removed.
//!
//! Only owners of the kinds listed in [`OWNER_KINDS`] are tracked; references to other kinds
//! are left alone.

use super::{Controller, Kind, Shared, array, list, modify, name_of, namespace_of, uid_of};
use crate::apiserver::{DeleteOptions, core::Propagation};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

pub const FOREGROUND: &str = "foregroundDeletion";
pub const ORPHAN: &str = "orphan";

/// Kinds whose objects can own, with the kinds that can depend on them.
const OWNER_KINDS: &[(&str, Kind)] = &[
    ("Deployment", Kind::Deployments),
    ("ReplicaSet", Kind::ReplicaSets),
];
const DEPENDENT_KINDS: &[Kind] = &[Kind::ReplicaSets, Kind::Pods];

fn has_finalizer(obj: &Value, f: &str) -> bool {
    array(obj, "/metadata/finalizers")
        .iter()
        .any(|x| x.as_str() == Some(f))
}

fn tracked_refs(obj: &Value) -> Vec<(String, String)> {
    array(obj, "/metadata/ownerReferences")
        .iter()
        .filter(|r| r["apiVersion"] == "apps/v1")
        .filter(|r| OWNER_KINDS.iter().any(|(k, _)| r["kind"] == *k))
        .filter_map(|r| {
            Some((
                r["kind"].as_str()?.to_string(),
                r["uid"].as_str()?.to_string(),
            ))
        })
        .collect()
}

pub(crate) struct GarbageCollector;

impl GarbageCollector {
    fn delete(shared: &Shared, kind: Kind, obj: &Value, propagation: Option<Propagation>) {
        let opts = DeleteOptions {
            propagation,
            ..Default::default()
        };
        let r = shared.core.delete(
            kind.info(&shared.infos),
            namespace_of(obj),
            name_of(obj),
            &opts,
        );
        if let Err(e) = r
            && e.code != 404
        {
            tracing::warn!(object = %name_of(obj), error = %e, "garbage collecting");
        }
    }

    fn drop_finalizer(shared: &Shared, kind: Kind, obj: &Value, f: &str) {
        let uid = uid_of(obj).to_string();
        let _ = modify(shared, kind, namespace_of(obj), name_of(obj), false, |o| {
            if uid_of(o) != uid || !has_finalizer(o, f) {
                return false;
            }
            if let Some(a) = o["metadata"]["finalizers"].as_array_mut() {
                a.retain(|x| x.as_str() != Some(f));
            }
            true
        });
    }

    fn drop_owner_ref(shared: &Shared, kind: Kind, obj: &Value, owner_uid: &str) {
        let uid = uid_of(obj).to_string();
        let _ = modify(shared, kind, namespace_of(obj), name_of(obj), false, |o| {
            if uid_of(o) != uid {
                return false;
            }
            let Some(refs) = o["metadata"]["ownerReferences"].as_array_mut() else {
                return false;
            };
            let before = refs.len();
            refs.retain(|r| r["uid"].as_str() != Some(owner_uid));
            if refs.is_empty()
                && let Some(m) = o["metadata"].as_object_mut()
            {
                m.remove("ownerReferences");
                return true;
            }
            before
                != o["metadata"]["ownerReferences"]
                    .as_array()
                    .map_or(0, Vec::len)
        });
    }
}

impl Controller for GarbageCollector {
    const NAME: &'static str = "garbage-collector";

    fn watches(&self) -> &'static [Kind] {
        &[Kind::Deployments, Kind::ReplicaSets, Kind::Pods]
    }

    async fn reconcile(&mut self, shared: &Arc<Shared>, _resync: bool) {
        // Owners by uid, read before dependents so an owner created after its dependent's
        // listing is never mistaken for gone.
        let mut owners: HashMap<String, (Kind, Arc<Value>)> = HashMap::new();
        for (_, kind) in OWNER_KINDS {
            for o in list(shared, *kind) {
                owners.insert(uid_of(&o).to_string(), (*kind, o));
            }
        }
        let mut dependents: HashMap<String, Vec<(Kind, Arc<Value>)>> = HashMap::new();
        for kind in DEPENDENT_KINDS {
            for obj in list(shared, *kind) {
                let refs = tracked_refs(&obj);
                if refs.is_empty() {
                    continue;
                }
                let live: Vec<&(String, String)> = refs
                    .iter()
                    .filter(|(_, u)| owners.contains_key(u))
                    .collect();
                if live.is_empty() {
                    Self::delete(shared, *kind, &obj, None);
                    continue;
                }
                for (_, u) in live {
                    dependents
                        .entry(u.clone())
                        .or_default()
                        .push((*kind, obj.clone()));
                }
            }
        }
        // Every object being deleted with a GC finalizer; pods own nothing, so theirs go at
        // once.
        let mut deleting: Vec<(String, Kind, Arc<Value>)> = owners
            .iter()
            .map(|(u, (k, o))| (u.clone(), *k, o.clone()))
            .collect();
        deleting.extend(
            list(shared, Kind::Pods)
                .into_iter()
                .map(|p| (uid_of(&p).to_string(), Kind::Pods, p)),
        );
        for (uid, kind, owner) in &deleting {
            if !super::is_deleting(owner) {
                continue;
            }
            let deps = dependents.get(uid).map(Vec::as_slice).unwrap_or(&[]);
            if has_finalizer(owner, ORPHAN) {
                for (k, d) in deps {
                    Self::drop_owner_ref(shared, *k, d, uid);
                }
                Self::drop_finalizer(shared, *kind, owner, ORPHAN);
                if has_finalizer(owner, FOREGROUND) {
                    Self::drop_finalizer(shared, *kind, owner, FOREGROUND);
                }
            } else if has_finalizer(owner, FOREGROUND) {
                if deps.is_empty() {
                    Self::drop_finalizer(shared, *kind, owner, FOREGROUND);
                }
                for (k, d) in deps {
                    if !super::is_deleting(d) {
                        let owns = OWNER_KINDS.iter().any(|(_, o)| o == k);
                        let p = owns.then_some(Propagation::Foreground);
                        Self::delete(shared, *k, d, p);
                    }
                }
            }
        }
    }
}
