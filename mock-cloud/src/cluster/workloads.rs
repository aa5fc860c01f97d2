//! apps/v1 controllers as kube-controller-manager runs them, scoped to what users see:
//!
//! * [`ReplicaSetController`]: keeps `spec.replicas` pods of each ReplicaSet (owned through a
//!   controller ownerReference, named `<rs>-<random>`), deletes extras (not ready and newest
//!   first), and reports `replicas`, `fullyLabeledReplicas`, `readyReplicas`,
//!   `availableReplicas`, `observedGeneration`.
//! * [`DeploymentController`]: one ReplicaSet per pod-template hash (`<deploy>-<hash>`, with
//!   the `pod-template-hash` label and the `deployment.kubernetes.io/revision` annotation),
//!   scaling, RollingUpdate (maxSurge/maxUnavailable) and Recreate rollouts, old ReplicaSets
//!   scaled to 0 and pruned beyond `revisionHistoryLimit`, and the status `kubectl get deploy`
//!   and `kubectl rollout status` read (replicas, updated, ready, available, unavailable,
//!   observedGeneration, Available and Progressing conditions).

use super::rollout::{
    RsState, condition, deadline, merge_condition, normalize, progressed, rolling_step,
    rollout_condition, surge_and_unavailable, template_hash,
};
use super::{
    Controller, Kind, Shared, array, is_deleting, list, modify, name_of, namespace_of, str_at,
    uid_of,
};
use crate::apiserver::{DeleteOptions, WriteOptions};
use crate::selector::LabelSelector;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

pub const HASH_LABEL: &str = "pod-template-hash";
pub const REVISION: &str = "deployment.kubernetes.io/revision";
const DESIRED: &str = "deployment.kubernetes.io/desired-replicas";
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

fn i(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

/// `spec.replicas`, defaulting to 1.
pub fn spec_replicas(obj: &Value) -> i64 {
    obj.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

/// The uid of the object's controller owner, if any.
pub fn controller_uid(obj: &Value) -> Option<&str> {
    array(obj, "/metadata/ownerReferences")
        .iter()
        .find(|r| r["controller"] == json!(true))
        .and_then(|r| r["uid"].as_str())
}

fn owner_ref(owner: &Value, kind: &str) -> Value {
    json!([{
        "apiVersion": "apps/v1", "kind": kind, "name": name_of(owner), "uid": uid_of(owner),
        "controller": true, "blockOwnerDeletion": true,
    }])
}

fn pod_ready_since(pod: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    array(pod, "/status/conditions")
        .iter()
        .find(|c| c["type"] == "Ready" && c["status"] == "True")
        .map(|c| {
            c["lastTransitionTime"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&chrono::Utc))
                .unwrap_or_default()
        })
}

/// Ready for at least `min_ready` seconds.
fn pod_available(pod: &Value, min_ready: i64, now: chrono::DateTime<chrono::Utc>) -> bool {
    pod_ready_since(pod)
        .is_some_and(|since| min_ready <= 0 || since + chrono::TimeDelta::seconds(min_ready) <= now)
}

/// Pods by their controller's uid (pods being deleted excluded).
fn pods_by_owner(shared: &Shared) -> HashMap<String, Vec<Arc<Value>>> {
    let mut out: HashMap<String, Vec<Arc<Value>>> = HashMap::new();
    for p in list(shared, Kind::Pods) {
        if is_deleting(&p) {
            continue;
        }
        if let Some(uid) = controller_uid(&p) {
            out.entry(uid.to_string()).or_default().push(p.clone());
        }
    }
    out
}

/// The ReplicaSet controller.
pub(crate) struct ReplicaSetController;

impl ReplicaSetController {
    fn new_pod(rs: &Value) -> Value {
        let mut meta = rs
            .pointer("/spec/template/metadata")
            .cloned()
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}));
        meta["generateName"] = json!(format!("{}-", name_of(rs)));
        meta["namespace"] = json!(namespace_of(rs));
        meta["ownerReferences"] = owner_ref(rs, "ReplicaSet");
        if let Some(m) = meta.as_object_mut() {
            m.remove("name");
        }
        json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": rs.pointer("/spec/template/spec").cloned().unwrap_or_else(|| json!({})),
        })
    }

    fn sync(shared: &Shared, rs: &Value, pods: &[Arc<Value>]) {
        let ns = namespace_of(rs);
        let want = spec_replicas(rs);
        let have = pods.len() as i64;
        let opts = WriteOptions::default();
        if have < want && !is_deleting(rs) {
            for _ in have..want {
                if let Err(e) = shared
                    .core
                    .create(&shared.infos.pods, ns, Self::new_pod(rs), &opts)
                {
                    tracing::warn!(rs = %name_of(rs), error = %e, "creating pod");
                    break;
                }
            }
        } else if have > want {
            let mut victims: Vec<&Arc<Value>> = pods.iter().collect();
            // Not ready first, then the newest.
            victims.sort_by_key(|p| {
                (
                    pod_ready_since(p).is_some(),
                    std::cmp::Reverse(str_at(p, "/metadata/creationTimestamp").unwrap_or("")),
                    std::cmp::Reverse(name_of(p)),
                )
            });
            for p in victims.into_iter().take((have - want) as usize) {
                let r = shared.core.delete(
                    &shared.infos.pods,
                    ns,
                    name_of(p),
                    &DeleteOptions::default(),
                );
                if let Err(e) = r
                    && e.code != 404
                {
                    tracing::warn!(pod = %name_of(p), error = %e, "deleting pod");
                }
            }
        }
    }

    fn status(rs: &Value, pods: &[Arc<Value>]) -> Value {
        let now = chrono::Utc::now();
        let min_ready = i(rs, "/spec/minReadySeconds");
        let template_labels = LabelSelector::from_object(
            &json!({"matchLabels": rs.pointer("/spec/template/metadata/labels").cloned().unwrap_or(json!({}))}),
        )
        .unwrap_or_default();
        let ready = pods.iter().filter(|p| pod_ready_since(p).is_some()).count();
        let available = pods
            .iter()
            .filter(|p| pod_available(p, min_ready, now))
            .count();
        let labeled = pods.iter().filter(|p| template_labels.matches(p)).count();
        let mut st = json!({
            "replicas": pods.len(),
            "fullyLabeledReplicas": labeled,
            "observedGeneration": i(rs, "/metadata/generation").max(1),
        });
        if ready > 0 {
            st["readyReplicas"] = json!(ready);
        }
        if available > 0 {
            st["availableReplicas"] = json!(available);
        }
        st
    }
}

impl Controller for ReplicaSetController {
    const NAME: &'static str = "replicaset-controller";

    fn watches(&self) -> &'static [Kind] {
        &[Kind::ReplicaSets, Kind::Pods]
    }

    async fn reconcile(&mut self, shared: &Arc<Shared>, _resync: bool) {
        let by_owner = pods_by_owner(shared);
        for rs in list(shared, Kind::ReplicaSets) {
            let pods = by_owner.get(uid_of(&rs)).cloned().unwrap_or_default();
            Self::sync(shared, &rs, &pods);
            // Report what exists after this pass's creates and deletes.
            let pods = pods_by_owner(shared)
                .remove(uid_of(&rs))
                .unwrap_or_default();
            let want = Self::status(&rs, &pods);
            if rs.get("status") == Some(&want) {
                continue;
            }
            let uid = uid_of(&rs).to_string();
            let r = modify(
                shared,
                Kind::ReplicaSets,
                namespace_of(&rs),
                name_of(&rs),
                true,
                |o| {
                    if uid_of(o) != uid || o.get("status") == Some(&want) {
                        return false;
                    }
                    o["status"] = want.clone();
                    true
                },
            );
            if let Err(e) = r
                && e.code != 404
            {
                tracing::warn!(rs = %name_of(&rs), error = %e, "updating ReplicaSet status");
            }
        }
    }
}

/// The Deployment controller.
pub(crate) struct DeploymentController;

/// A pod template without the `pod-template-hash` label, to compare a ReplicaSet's
/// template with its Deployment's.
fn template_without_hash(t: Option<&Value>) -> Value {
    let mut t = normalize(t.unwrap_or(&json!({})));
    if let Some(labels) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(HASH_LABEL);
        if labels.is_empty()
            && let Some(m) = t.pointer_mut("/metadata").and_then(Value::as_object_mut)
        {
            m.remove("labels");
        }
    }
    if t.pointer("/metadata").is_some_and(|m| m == &json!({}))
        && let Some(m) = t.as_object_mut()
    {
        m.remove("metadata");
    }
    normalize(&t)
}

/// A Deployment's pod template, normalized for comparison.
fn deployment_template(d: &Value) -> Value {
    normalize(d.pointer("/spec/template").unwrap_or(&json!({})))
}

fn revision(obj: &Value) -> i64 {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION))
        .and_then(Value::as_str)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

impl DeploymentController {
    /// Sets `spec.replicas` (and the desired/max annotations) of a ReplicaSet.
    fn scale(shared: &Shared, rs: &Value, replicas: i64, desired: i64, max: i64) {
        let uid = uid_of(rs).to_string();
        let r = modify(
            shared,
            Kind::ReplicaSets,
            namespace_of(rs),
            name_of(rs),
            false,
            |o| {
                if uid_of(o) != uid {
                    return false;
                }
                let ann = json!({DESIRED: desired.to_string(), MAX_REPLICAS: max.to_string()});
                let same = spec_replicas(o) == replicas
                    && o.pointer(&format!(
                        "/metadata/annotations/{}",
                        DESIRED.replace('/', "~1")
                    )) == Some(&ann[DESIRED]);
                if same {
                    return false;
                }
                o["spec"]["replicas"] = json!(replicas);
                let meta = &mut o["metadata"];
                if !meta["annotations"].is_object() {
                    meta["annotations"] = json!({});
                }
                meta["annotations"][DESIRED] = ann[DESIRED].clone();
                meta["annotations"][MAX_REPLICAS] = ann[MAX_REPLICAS].clone();
                true
            },
        );
        if let Err(e) = r
            && e.code != 404
        {
            tracing::warn!(rs = %name_of(rs), error = %e, "scaling ReplicaSet");
        }
    }

    fn set_revision(shared: &Shared, kind: Kind, obj: &Value, rev: i64) {
        let uid = uid_of(obj).to_string();
        let rev = rev.to_string();
        let _ = modify(shared, kind, namespace_of(obj), name_of(obj), false, |o| {
            if uid_of(o) != uid
                || o.pointer("/metadata/annotations")
                    .and_then(|a| a.get(REVISION))
                    .and_then(Value::as_str)
                    == Some(rev.as_str())
            {
                return false;
            }
            let meta = &mut o["metadata"];
            if !meta["annotations"].is_object() {
                meta["annotations"] = json!({});
            }
            meta["annotations"][REVISION] = json!(rev);
            true
        });
    }

    fn new_replica_set(d: &Value, hash: &str, replicas: i64, rev: i64) -> Value {
        let mut template = d
            .pointer("/spec/template")
            .cloned()
            .unwrap_or_else(|| json!({}));
        if !template["metadata"].is_object() {
            template["metadata"] = json!({});
        }
        if !template["metadata"]["labels"].is_object() {
            template["metadata"]["labels"] = json!({});
        }
        template["metadata"]["labels"][HASH_LABEL] = json!(hash);
        let mut selector = d
            .pointer("/spec/selector")
            .cloned()
            .unwrap_or_else(|| json!({}));
        if !selector["matchLabels"].is_object() {
            selector["matchLabels"] = json!({});
        }
        selector["matchLabels"][HASH_LABEL] = json!(hash);
        let mut labels = template["metadata"]["labels"].clone();
        labels[HASH_LABEL] = json!(hash);
        let desired = spec_replicas(d);
        json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {
                "name": format!("{}-{hash}", name_of(d)),
                "namespace": namespace_of(d),
                "labels": labels,
                "annotations": {REVISION: rev.to_string(), DESIRED: desired.to_string(),
                                MAX_REPLICAS: desired.to_string()},
                "ownerReferences": owner_ref(d, "Deployment"),
            },
            "spec": {
                "replicas": replicas,
                "minReadySeconds": i(d, "/spec/minReadySeconds"),
                "selector": selector,
                "template": template,
            },
        })
    }

    fn sync(shared: &Shared, d: &Value, mut owned: Vec<Arc<Value>>) {
        let replicas = spec_replicas(d);
        let template = deployment_template(d);
        let strategy = str_at(d, "/spec/strategy/type").unwrap_or("RollingUpdate");
        let (surge, max_unavailable) = if strategy == "Recreate" {
            (0, replicas)
        } else {
            surge_and_unavailable(d.pointer("/spec/strategy/rollingUpdate"), replicas)
        };
        owned.sort_by_key(|r| {
            (
                str_at(r, "/metadata/creationTimestamp")
                    .unwrap_or("")
                    .to_string(),
                name_of(r).to_string(),
            )
        });
        let max_rev = owned.iter().map(|r| revision(r)).max().unwrap_or(0);
        let new_rs = owned
            .iter()
            .find(|r| template_without_hash(r.pointer("/spec/template")) == template)
            .cloned();
        let paused = d.pointer("/spec/paused") == Some(&json!(true));
        let old: Vec<Arc<Value>> = owned
            .iter()
            .filter(|r| Some(uid_of(r)) != new_rs.as_ref().map(|n| uid_of(n)))
            .cloned()
            .collect();
        let new_rs = match new_rs {
            Some(rs) => {
                if revision(&rs) < max_rev && !paused {
                    // Rolled back to an older template: it becomes the newest revision.
                    Self::set_revision(shared, Kind::ReplicaSets, &rs, max_rev + 1);
                }
                rs
            }
            None if paused => return,
            None => {
                let old_total: i64 = old.iter().map(|r| spec_replicas(r)).sum();
                let initial = if old_total == 0 {
                    if strategy == "Recreate" { 0 } else { replicas }
                } else if strategy == "Recreate" {
                    0
                } else {
                    (replicas + surge - old_total).clamp(0, replicas)
                };
                let collisions = i(d, "/status/collisionCount");
                let hash = template_hash(&template, collisions);
                let rs = Self::new_replica_set(d, &hash, initial, max_rev + 1);
                match shared.core.create(
                    &shared.infos.replicasets,
                    namespace_of(d),
                    rs,
                    &WriteOptions::default(),
                ) {
                    Ok(rs) => rs,
                    Err(e) => {
                        tracing::warn!(deployment = %name_of(d), error = %e, "creating ReplicaSet");
                        return;
                    }
                }
            }
        };
        let state = |r: &Value| RsState {
            name: name_of(r).to_string(),
            replicas: spec_replicas(r),
            available: i(r, "/status/availableReplicas"),
        };
        let olds: Vec<RsState> = old.iter().map(|r| state(r)).collect();
        let (new_target, old_targets) = if strategy == "Recreate" {
            let old_pods: i64 = old.iter().map(|r| i(r, "/status/replicas")).sum();
            let olds_total: i64 = olds.iter().map(|r| r.replicas).sum();
            let new_target = if old_pods == 0 && olds_total == 0 {
                replicas
            } else {
                spec_replicas(&new_rs)
            };
            (new_target, vec![0; olds.len()])
        } else if paused {
            (
                spec_replicas(&new_rs),
                olds.iter().map(|r| r.replicas).collect(),
            )
        } else {
            rolling_step(replicas, surge, max_unavailable, &state(&new_rs), &olds)
        };
        let max = replicas + surge;
        Self::scale(shared, &new_rs, new_target, replicas, max);
        for (rs, target) in old.iter().zip(old_targets) {
            if target != spec_replicas(rs) {
                Self::scale(shared, rs, target, replicas, max);
            }
        }
        // Prune old, empty ReplicaSets beyond the history limit (oldest first).
        let limit = d
            .pointer("/spec/revisionHistoryLimit")
            .and_then(Value::as_i64)
            .unwrap_or(10)
            .max(0) as usize;
        let empty: Vec<&Arc<Value>> = old
            .iter()
            .filter(|r| spec_replicas(r) == 0 && i(r, "/status/replicas") == 0)
            .collect();
        if empty.len() > limit {
            let mut by_rev = empty;
            by_rev.sort_by_key(|r| revision(r));
            for r in by_rev.iter().take(by_rev.len() - limit) {
                let _ = shared.core.delete(
                    &shared.infos.replicasets,
                    namespace_of(r),
                    name_of(r),
                    &DeleteOptions::default(),
                );
            }
        }
        let new_rev = revision(&new_rs).max(max_rev);
        if revision(d) != new_rev && new_rev > 0 {
            Self::set_revision(shared, Kind::Deployments, d, new_rev);
        }
    }

    fn status(d: &Value, owned: &[Arc<Value>], now: &str) -> Value {
        let replicas = spec_replicas(d);
        let template = deployment_template(d);
        let new_rs = owned
            .iter()
            .find(|r| template_without_hash(r.pointer("/spec/template")) == template);
        let sum = |ptr: &str| owned.iter().map(|r| i(r, ptr)).sum::<i64>();
        let total = sum("/status/replicas");
        let ready = sum("/status/readyReplicas");
        let available = sum("/status/availableReplicas");
        let updated = new_rs.map(|r| i(r, "/status/replicas")).unwrap_or(0);
        let (_, max_unavailable) = if str_at(d, "/spec/strategy/type") == Some("Recreate") {
            (0, replicas)
        } else {
            surge_and_unavailable(d.pointer("/spec/strategy/rollingUpdate"), replicas)
        };
        let old_cond = |t: &str| {
            array(d, "/status/conditions")
                .iter()
                .find(|c| c["type"] == t)
                .cloned()
        };
        let available_cond = if available >= replicas - max_unavailable {
            condition(
                "Available",
                true,
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
                now,
            )
        } else {
            condition(
                "Available",
                false,
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
                now,
            )
        };
        let complete = new_rs.is_some()
            && updated == replicas
            && total == replicas
            && available >= replicas
            && new_rs.is_some_and(|r| spec_replicas(r) == replicas);
        let old_prog = old_cond("Progressing");
        let progressing_cond = match new_rs {
            None => merge_condition(
                old_prog.as_ref(),
                condition(
                    "Progressing",
                    true,
                    "ReplicaSetUpdated",
                    "Waiting for the new ReplicaSet.",
                    now,
                ),
            ),
            Some(rs) if complete => merge_condition(
                old_prog.as_ref(),
                condition(
                    "Progressing",
                    true,
                    "NewReplicaSetAvailable",
                    &format!(
                        "ReplicaSet \"{}\" has successfully progressed.",
                        name_of(rs)
                    ),
                    now,
                ),
            ),
            Some(rs) => {
                let counts = [updated, total, ready, available];
                let moved = progressed(d.get("status"), counts);
                rollout_condition(old_prog.as_ref(), name_of(rs), moved, deadline(d), now)
            }
        };
        let mut st = json!({
            "observedGeneration": i(d, "/metadata/generation").max(1),
            "conditions": [
                merge_condition(old_cond("Available").as_ref(), available_cond),
                progressing_cond,
            ],
        });
        for (k, v) in [
            ("replicas", total),
            ("updatedReplicas", updated),
            ("readyReplicas", ready),
            ("availableReplicas", available),
            ("unavailableReplicas", (replicas - available).max(0)),
        ] {
            if v > 0 {
                st[k] = json!(v);
            }
        }
        if let Some(c) = d.pointer("/status/collisionCount") {
            st["collisionCount"] = c.clone();
        }
        st
    }
}

impl Controller for DeploymentController {
    const NAME: &'static str = "deployment-controller";

    fn watches(&self) -> &'static [Kind] {
        &[Kind::Deployments, Kind::ReplicaSets]
    }

    async fn reconcile(&mut self, shared: &Arc<Shared>, _resync: bool) {
        let rs_by_owner = |shared: &Shared| {
            let mut m: HashMap<String, Vec<Arc<Value>>> = HashMap::new();
            for rs in list(shared, Kind::ReplicaSets) {
                if let Some(uid) = controller_uid(&rs) {
                    m.entry(uid.to_string()).or_default().push(rs.clone());
                }
            }
            m
        };
        let before = rs_by_owner(shared);
        for d in list(shared, Kind::Deployments) {
            if is_deleting(&d) {
                continue;
            }
            let owned = before.get(uid_of(&d)).cloned().unwrap_or_default();
            Self::sync(shared, &d, owned);
        }
        let after = rs_by_owner(shared);
        let now = super::now();
        for d in list(shared, Kind::Deployments) {
            let owned = after.get(uid_of(&d)).cloned().unwrap_or_default();
            let want = Self::status(&d, &owned, &now);
            if d.get("status") == Some(&want) {
                continue;
            }
            let uid = uid_of(&d).to_string();
            let r = modify(
                shared,
                Kind::Deployments,
                namespace_of(&d),
                name_of(&d),
                true,
                |o| {
                    if uid_of(o) != uid {
                        return false;
                    }
                    let want = Self::status(o, &owned, &now);
                    if o.get("status") == Some(&want) {
                        return false;
                    }
                    o["status"] = want;
                    true
                },
            );
            if let Err(e) = r
                && e.code != 404
            {
                tracing::warn!(deployment = %name_of(&d), error = %e, "updating Deployment status");
            }
        }
    }
}
