//! Kind-specific behaviour: namespace lifecycle, Service allocation, pod and workload
//! defaults, CustomResourceDefinitions, status validation.

use super::core::{ApiCore, DeleteOptions, WriteOptions, WriteState, qualified, storage_gr};
use super::error::{ApiError, Cause};
use super::objmeta::{meta, meta_str, now};
use crate::registry::ResourceInfo;
use serde_json::{Map, Value, json};

impl ApiCore {
    pub(super) fn check_namespace(
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

    pub(super) fn namespace_terminating(&self, ns: &str) -> bool {
        let ns_gr = (String::new(), "namespaces".to_string());
        self.store
            .get(&ns_gr, "", ns)
            .is_some_and(|n| meta(&n).is_some_and(|m| m.contains_key("deletionTimestamp")))
    }

    pub(super) fn namespace_is_empty(&self, ns: &str) -> bool {
        self.registry
            .all()
            .iter()
            .filter(|i| i.namespaced)
            .all(|i| self.store.list(&storage_gr(i), Some(ns)).0.is_empty())
    }

    /// Deletes everything in a terminating namespace (objects with finalizers linger).
    pub(super) fn empty_namespace(&self, w: &mut WriteState, ns: &str) {
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

    pub(super) fn on_create(
        &self,
        w: &mut WriteState,
        info: &ResourceInfo,
        obj: &mut Value,
        opts: &WriteOptions,
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
                crate::schema::check_crd_rules(obj).map_err(|m| crd_invalid(&name, &m))?;
                obj["status"] = crd_status(obj);
            }
            _ => crate::schema::admit(info, obj, None, opts.strict_fields)?,
        }
        Ok(())
    }

    /// Undoes `on_create`'s allocations for a dry run.
    pub(super) fn on_create_rollback(&self, w: &mut WriteState, info: &ResourceInfo, obj: &Value) {
        if info.group.is_empty() && info.resource == "services" {
            w.ipam.release(obj);
        }
    }

    pub(super) fn on_update(
        &self,
        w: &mut WriteState,
        info: &ResourceInfo,
        old: &Value,
        new: &mut Value,
        opts: &WriteOptions,
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
                crate::schema::check_crd_rules(new).map_err(|m| crd_invalid(&name, &m))?;
                new["status"] = crd_status(new);
            }
            ("apps", "deployments" | "replicasets") => {
                validate_workload(info, &name, new)?;
                default_workload(info, new);
            }
            ("", "namespaces") if new.get("spec") != old.get("spec") => {
                new["spec"] = old.get("spec").cloned().unwrap_or(json!({}));
            }
            _ => crate::schema::admit(info, new, Some(old), opts.strict_fields)?,
        }
        Ok(())
    }

    /// Undoes `on_update`'s allocations for a dry run.
    pub(super) fn on_update_rollback(
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

    pub(super) fn validate_status(&self, info: &ResourceInfo, obj: &Value) -> Result<(), ApiError> {
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

    pub(super) fn after_create(&self, info: &ResourceInfo, obj: &Value) {
        if info.group == "apiextensions.k8s.io" && info.resource == "customresourcedefinitions" {
            let _ = self.registry.install_crd(obj);
        }
    }

    pub(super) fn after_update(&self, info: &ResourceInfo, obj: &Value) {
        self.after_create(info, obj);
    }

    pub(super) fn after_remove(&self, w: &mut WriteState, info: &ResourceInfo, obj: &Value) {
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
pub(super) fn default_pod(obj: &mut Value) {
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
pub(super) fn default_workload(info: &ResourceInfo, obj: &mut Value) {
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
pub(super) fn validate_workload(
    info: &ResourceInfo,
    name: &str,
    obj: &Value,
) -> Result<(), ApiError> {
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

pub(super) fn labels_mut(obj: &mut Value) -> &mut Map<String, Value> {
    let meta = obj["metadata"]
        .as_object_mut()
        .expect("metadata is an object");
    let labels = meta.entry("labels").or_insert_with(|| json!({}));
    if !labels.is_object() {
        *labels = json!({});
    }
    labels.as_object_mut().expect("labels is an object")
}

pub(super) fn crd_status(crd: &Value) -> Value {
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

pub(super) fn crd_invalid(name: &str, message: &str) -> ApiError {
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

pub(super) fn service_invalid(name: &str, errs: Vec<crate::services::FieldError>) -> ApiError {
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
