//! Conversions of the ServiceAccount, `rbac.authorization.k8s.io/v1` and `policy/v1`
//! messages kubectl's typed generators send (`create serviceaccount|role|rolebinding|
//! clusterrole|clusterrolebinding|poddisruptionbudget`).

use super::*;

impl J for core::ServiceAccount {
    fn j(self, p: &str) -> R {
        let core::ServiceAccount {
            metadata,
            secrets,
            image_pull_secrets,
            automount_service_account_token,
        } = self;
        obj!(p;
            "metadata" => metadata,
            "secrets" => secrets,
            "imagePullSecrets" => image_pull_secrets,
            "automountServiceAccountToken" => automount_service_account_token,
        )
    }
}

impl J for core::ObjectReference {
    fn j(self, p: &str) -> R {
        let core::ObjectReference {
            kind,
            namespace,
            name,
            uid,
            api_version,
            resource_version,
            field_path,
        } = self;
        obj!(p;
            "kind" => kind,
            "namespace" => namespace,
            "name" => name,
            "uid" => uid,
            "apiVersion" => api_version,
            "resourceVersion" => resource_version,
            "fieldPath" => field_path,
        )
    }
}

impl J for core::LocalObjectReference {
    fn j(self, p: &str) -> R {
        let core::LocalObjectReference { name } = self;
        obj!(p; "name" => name)
    }
}

impl J for rbac::Role {
    fn j(self, p: &str) -> R {
        let rbac::Role { metadata, rules } = self;
        obj!(p; "metadata" => metadata, "rules" => rules)
    }
}

impl J for rbac::ClusterRole {
    fn j(self, p: &str) -> R {
        let rbac::ClusterRole {
            metadata,
            rules,
            aggregation_rule,
        } = self;
        obj!(p; "metadata" => metadata, "rules" => rules, "aggregationRule" => aggregation_rule)
    }
}

impl J for rbac::AggregationRule {
    fn j(self, p: &str) -> R {
        let rbac::AggregationRule {
            cluster_role_selectors,
        } = self;
        obj!(p; "clusterRoleSelectors" => cluster_role_selectors)
    }
}

impl J for rbac::PolicyRule {
    fn j(self, p: &str) -> R {
        let rbac::PolicyRule {
            verbs,
            api_groups,
            resources,
            resource_names,
            non_resource_ur_ls,
        } = self;
        // `apiGroups: [""]` (the core group) keeps its empty string.
        let api_groups = (!api_groups.is_empty()).then(|| json!(api_groups));
        let rule: R = obj!(p;
            "verbs" => verbs,
            "resources" => resources,
            "resourceNames" => resource_names,
            "nonResourceURLs" => non_resource_ur_ls,
        );
        let mut rule = rule?;
        if let Some(g) = api_groups {
            if rule.is_null() {
                rule = json!({});
            }
            rule["apiGroups"] = g;
        }
        Ok(rule)
    }
}

impl J for rbac::RoleBinding {
    fn j(self, p: &str) -> R {
        let rbac::RoleBinding {
            metadata,
            subjects,
            role_ref,
        } = self;
        obj!(p; "metadata" => metadata, "subjects" => subjects, "roleRef" => role_ref)
    }
}

impl J for rbac::ClusterRoleBinding {
    fn j(self, p: &str) -> R {
        let rbac::ClusterRoleBinding {
            metadata,
            subjects,
            role_ref,
        } = self;
        obj!(p; "metadata" => metadata, "subjects" => subjects, "roleRef" => role_ref)
    }
}

impl J for rbac::Subject {
    fn j(self, p: &str) -> R {
        let rbac::Subject {
            kind,
            api_group,
            name,
            namespace,
        } = self;
        obj!(p; "kind" => kind, "apiGroup" => api_group, "name" => name, "namespace" => namespace)
    }
}

impl J for rbac::RoleRef {
    fn j(self, p: &str) -> R {
        let rbac::RoleRef {
            api_group,
            kind,
            name,
        } = self;
        // `apiGroup` is required even when empty.
        let v: R = obj!(p; "kind" => kind, "name" => name);
        let mut v = v?;
        if v.is_null() {
            v = json!({});
        }
        v["apiGroup"] = json!(api_group.unwrap_or_default());
        Ok(v)
    }
}

impl J for policy::PodDisruptionBudget {
    fn j(self, p: &str) -> R {
        let policy::PodDisruptionBudget {
            metadata,
            spec,
            status,
        } = self;
        // Status is not written through the main resource; kubectl sends it empty.
        let _ = status;
        obj!(p; "metadata" => metadata, "spec" => spec)
    }
}

impl J for policy::PodDisruptionBudgetSpec {
    fn j(self, p: &str) -> R {
        let policy::PodDisruptionBudgetSpec {
            min_available,
            selector,
            max_unavailable,
            unhealthy_pod_eviction_policy,
        } = self;
        obj!(p;
            "minAvailable" => min_available,
            "selector" => selector,
            "maxUnavailable" => max_unavailable,
            "unhealthyPodEvictionPolicy" => unhealthy_pod_eviction_policy,
        )
    }
}
