//! The resource types the API server serves: the built-in ones and those of installed CRDs.

use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::RwLock;

/// One served resource: everything discovery, routing and storage need to know about it.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceInfo {
    /// API group; empty for the core group.
    pub group: String,
    /// Served version, e.g. `v1`.
    pub version: String,
    /// Plural lower-case name used in paths, e.g. `services`.
    pub resource: String,
    /// Singular lower-case name, e.g. `service`.
    pub singular: String,
    /// Kind, e.g. `Service`.
    pub kind: String,
    /// List kind, e.g. `ServiceList`.
    pub list_kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    /// Whether a `status` subresource is served.
    pub has_status: bool,
    /// Extra printer columns (from a CRD's `additionalPrinterColumns`).
    pub printer_columns: Vec<PrinterColumn>,
    /// OpenAPI v3 schema of the kind, when known (CRDs carry one).
    pub schema: Option<Value>,
    /// Categories, e.g. `all`.
    pub categories: Vec<String>,
    /// The CRD that defines this resource, if any.
    pub crd_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PrinterColumn {
    pub name: String,
    pub type_: String,
    pub json_path: String,
    pub description: String,
    pub priority: i64,
    pub format: String,
}

impl ResourceInfo {
    /// `v1` for the core group, `group/version` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The path prefix of this resource's group version: `/api/v1` or `/apis/g/v`.
    pub fn group_version_path(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }

    /// Whether a `scale` subresource (autoscaling/v1 Scale) is served.
    pub fn has_scale(&self) -> bool {
        self.group == "apps" && matches!(self.resource.as_str(), "deployments" | "replicasets")
    }

    /// The verbs served for the main resource.
    pub fn verbs(&self) -> Vec<&'static str> {
        vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }

    fn builtin(
        group: &str,
        version: &str,
        resource: &str,
        kind: &str,
        namespaced: bool,
        short_names: &[&str],
        has_status: bool,
    ) -> Self {
        ResourceInfo {
            group: group.into(),
            version: version.into(),
            resource: resource.into(),
            singular: kind.to_ascii_lowercase(),
            kind: kind.into(),
            list_kind: format!("{kind}List"),
            namespaced,
            short_names: short_names.iter().map(|s| s.to_string()).collect(),
            has_status,
            printer_columns: Vec::new(),
            schema: None,
            categories: if [
                "services",
                "pods",
                "deployments",
                "replicasets",
                "daemonsets",
            ]
            .contains(&resource)
            {
                vec!["all".into()]
            } else {
                Vec::new()
            },
            crd_name: None,
        }
    }

    /// Builds the resources a CRD object declares (one per served version).
    pub fn from_crd(crd: &Value) -> Result<Vec<ResourceInfo>, String> {
        let name = crd
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .ok_or("metadata.name: Required value")?;
        let spec = crd.get("spec").ok_or("spec: Required value")?;
        let group = spec
            .get("group")
            .and_then(Value::as_str)
            .ok_or("spec.group: Required value")?;
        let names = spec.get("names").ok_or("spec.names: Required value")?;
        let plural = names
            .get("plural")
            .and_then(Value::as_str)
            .ok_or("spec.names.plural: Required value")?;
        let kind = names
            .get("kind")
            .and_then(Value::as_str)
            .ok_or("spec.names.kind: Required value")?;
        if name != format!("{plural}.{group}") {
            return Err(format!(
                "metadata.name: Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"
            ));
        }
        let singular = names
            .get("singular")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| kind.to_ascii_lowercase());
        let list_kind = names
            .get("listKind")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("{kind}List"));
        let strings = |v: Option<&Value>| -> Vec<String> {
            v.and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        let short_names = strings(names.get("shortNames"));
        let categories = strings(names.get("categories"));
        let namespaced = match spec.get("scope").and_then(Value::as_str) {
            Some("Namespaced") => true,
            Some("Cluster") => false,
            other => {
                return Err(format!(
                    "spec.scope: Unsupported value: {other:?}: supported values: \"Cluster\", \"Namespaced\""
                ));
            }
        };
        let versions = spec
            .get("versions")
            .and_then(Value::as_array)
            .filter(|v| !v.is_empty())
            .ok_or("spec.versions: Invalid value: must have exactly one version marked as storage version")?;
        let mut out = Vec::new();
        for v in versions {
            let vname = v
                .get("name")
                .and_then(Value::as_str)
                .ok_or("spec.versions[].name: Required value")?;
            if v.get("served").and_then(Value::as_bool) == Some(false) {
                continue;
            }
            let has_status = v.pointer("/subresources/status").is_some();
            let printer_columns = v
                .get("additionalPrinterColumns")
                .and_then(Value::as_array)
                .map(|cols| {
                    cols.iter()
                        .map(|c| PrinterColumn {
                            name: c["name"].as_str().unwrap_or_default().to_string(),
                            type_: c["type"].as_str().unwrap_or("string").to_string(),
                            json_path: c["jsonPath"].as_str().unwrap_or_default().to_string(),
                            description: c["description"].as_str().unwrap_or_default().to_string(),
                            priority: c["priority"].as_i64().unwrap_or(0),
                            format: c["format"].as_str().unwrap_or_default().to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(ResourceInfo {
                group: group.to_string(),
                version: vname.to_string(),
                resource: plural.to_string(),
                singular: singular.clone(),
                kind: kind.to_string(),
                list_kind: list_kind.clone(),
                namespaced,
                short_names: short_names.clone(),
                has_status,
                printer_columns,
                schema: v.pointer("/schema/openAPIV3Schema").cloned(),
                categories: categories.clone(),
                crd_name: Some(name.to_string()),
            });
        }
        Ok(out)
    }
}

/// The built-in resources mock-cloud serves.
pub fn builtin_resources() -> Vec<ResourceInfo> {
    let b = ResourceInfo::builtin;
    vec![
        b("", "v1", "namespaces", "Namespace", false, &["ns"], true),
        b("", "v1", "services", "Service", true, &["svc"], true),
        b("", "v1", "nodes", "Node", false, &["no"], true),
        b("", "v1", "pods", "Pod", true, &["po"], true),
        b("", "v1", "events", "Event", true, &["ev"], false),
        b("", "v1", "configmaps", "ConfigMap", true, &["cm"], false),
        b("", "v1", "secrets", "Secret", true, &[], false),
        b(
            "",
            "v1",
            "serviceaccounts",
            "ServiceAccount",
            true,
            &["sa"],
            false,
        ),
        b("", "v1", "endpoints", "Endpoints", true, &["ep"], false),
        b(
            "discovery.k8s.io",
            "v1",
            "endpointslices",
            "EndpointSlice",
            true,
            &[],
            false,
        ),
        b(
            "events.k8s.io",
            "v1",
            "events",
            "Event",
            true,
            &["ev"],
            false,
        ),
        b(
            "coordination.k8s.io",
            "v1",
            "leases",
            "Lease",
            true,
            &[],
            false,
        ),
        b(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            &["crd", "crds"],
            true,
        ),
        b(
            "rbac.authorization.k8s.io",
            "v1",
            "roles",
            "Role",
            true,
            &[],
            false,
        ),
        b(
            "rbac.authorization.k8s.io",
            "v1",
            "rolebindings",
            "RoleBinding",
            true,
            &[],
            false,
        ),
        b(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterroles",
            "ClusterRole",
            false,
            &[],
            false,
        ),
        b(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterrolebindings",
            "ClusterRoleBinding",
            false,
            &[],
            false,
        ),
        b(
            "apps",
            "v1",
            "deployments",
            "Deployment",
            true,
            &["deploy"],
            true,
        ),
        b(
            "apps",
            "v1",
            "replicasets",
            "ReplicaSet",
            true,
            &["rs"],
            true,
        ),
        b("apps", "v1", "daemonsets", "DaemonSet", true, &["ds"], true),
        b(
            "policy",
            "v1",
            "poddisruptionbudgets",
            "PodDisruptionBudget",
            true,
            &["pdb"],
            true,
        ),
    ]
}

/// All served resources, keyed by (group, version, plural). CRDs come and go at run time.
#[derive(Debug, Default)]
pub struct Registry {
    inner: RwLock<BTreeMap<(String, String, String), ResourceInfo>>,
}

impl Registry {
    pub fn with_builtins() -> Self {
        let r = Registry::default();
        {
            let mut m = r.inner.write().unwrap();
            for info in builtin_resources() {
                m.insert(
                    (
                        info.group.clone(),
                        info.version.clone(),
                        info.resource.clone(),
                    ),
                    info,
                );
            }
        }
        r
    }

    pub fn get(&self, group: &str, version: &str, resource: &str) -> Option<ResourceInfo> {
        self.inner
            .read()
            .unwrap()
            .get(&(group.to_string(), version.to_string(), resource.to_string()))
            .cloned()
    }

    /// The resource with this kind in this group (any served version).
    pub fn by_kind(&self, group: &str, kind: &str) -> Option<ResourceInfo> {
        self.inner
            .read()
            .unwrap()
            .values()
            .find(|i| i.group == group && i.kind == kind)
            .cloned()
    }

    pub fn all(&self) -> Vec<ResourceInfo> {
        self.inner.read().unwrap().values().cloned().collect()
    }

    /// Group versions in discovery order: core first, then groups by name.
    pub fn group_versions(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for info in self.inner.read().unwrap().values() {
            let vs = groups.entry(info.group.clone()).or_default();
            if !vs.contains(&info.version) {
                vs.push(info.version.clone());
            }
        }
        groups.into_iter().collect()
    }

    pub fn resources_in(&self, group: &str, version: &str) -> Vec<ResourceInfo> {
        self.inner
            .read()
            .unwrap()
            .values()
            .filter(|i| i.group == group && i.version == version)
            .cloned()
            .collect()
    }

    /// Installs (or replaces) the resources a CRD defines.
    pub fn install_crd(&self, crd: &Value) -> Result<Vec<ResourceInfo>, String> {
        let infos = ResourceInfo::from_crd(crd)?;
        let name = infos.first().and_then(|i| i.crd_name.clone());
        let mut m = self.inner.write().unwrap();
        if let Some(name) = name {
            m.retain(|_, i| i.crd_name.as_deref() != Some(name.as_str()));
        }
        for info in &infos {
            m.insert(
                (
                    info.group.clone(),
                    info.version.clone(),
                    info.resource.clone(),
                ),
                info.clone(),
            );
        }
        Ok(infos)
    }

    /// Removes the resources a CRD defined; returns them.
    pub fn remove_crd(&self, crd_name: &str) -> Vec<ResourceInfo> {
        let mut m = self.inner.write().unwrap();
        let gone: Vec<ResourceInfo> = m
            .values()
            .filter(|i| i.crd_name.as_deref() == Some(crd_name))
            .cloned()
            .collect();
        m.retain(|_, i| i.crd_name.as_deref() != Some(crd_name));
        gone
    }
}
