//! RBAC for the API server (`mock-cloud serve --rbac`): bearer-token authentication and
//! authorization with the Role, ClusterRole, RoleBinding and ClusterRoleBinding objects in
//! the store, as kube-apiserver's RBAC authorizer decides.
//!
//! * The admin token (`mock-cloud-admin`, in the kubeconfig mock-cloud writes) is a
//!   superuser (`system:masters`). So is a request with no `Authorization` header at all:
//!   kubectl (client-go) never sends credentials to a plain-http server, and mock-cloud
//!   serves plain http, so its kubeconfig's token only reaches it from kube-rs.
//! * ServiceAccount tokens are issued by `POST /mock-cloud/v1/token`
//!   `{"namespace": NS, "serviceAccount": NAME}`; they authenticate as
//!   `system:serviceaccount:NS:NAME` with the groups `system:serviceaccounts`,
//!   `system:serviceaccounts:NS` and `system:authenticated`.
//! * Non-resource paths (discovery, OpenAPI, `/version`, health) are open to every
//!   authenticated user, as the default `system:discovery` / `system:public-info-viewer`
//!   roles make them in a real cluster. mock-cloud's own `/mock-cloud/...` admin endpoints
//!   need no token.
//! * A denied request gets kube-apiserver's `403 Forbidden` Status and is recorded (see
//!   [`Rbac::denials`]) so tests can tell exactly which permission was missing.

use super::error::ApiError;
use crate::store::Store;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Mutex;

/// The token of the kubeconfig mock-cloud writes: a superuser.
pub const ADMIN_TOKEN: &str = "mock-cloud-admin";
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    fn is_superuser(&self) -> bool {
        self.groups.iter().any(|g| g == "system:masters")
    }

    /// The user a ServiceAccount's token authenticates as.
    pub fn service_account(namespace: &str, name: &str) -> UserInfo {
        UserInfo {
            name: format!("system:serviceaccount:{namespace}:{name}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
        }
    }
}

/// What a resource request asks to do, in RBAC's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: String,
    pub group: String,
    /// Plural resource, e.g. `services`.
    pub resource: String,
    /// e.g. `status`.
    pub subresource: Option<String>,
    /// None for cluster-scoped resources and all-namespace requests.
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl Attributes {
    /// `services` or `services/status`.
    fn resource_path(&self) -> String {
        match &self.subresource {
            Some(s) => format!("{}/{s}", self.resource),
            None => self.resource.clone(),
        }
    }

    /// kube-apiserver's 403 for these attributes.
    pub fn forbidden(&self, user: &UserInfo) -> ApiError {
        let why = match &self.namespace {
            Some(ns) => format!(
                "User {:?} cannot {} resource {:?} in API group {:?} in the namespace {:?}",
                user.name,
                self.verb,
                self.resource_path(),
                self.group,
                ns
            ),
            None => format!(
                "User {:?} cannot {} resource {:?} in API group {:?} at the cluster scope",
                user.name,
                self.verb,
                self.resource_path(),
                self.group
            ),
        };
        let qualified = if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        };
        let mut e = match &self.name {
            Some(n) => ApiError::forbidden(format!("{qualified} {n:?} is forbidden: {why}")),
            None => ApiError::forbidden(format!("{qualified} is forbidden: {why}")),
        };
        let mut d = json!({"kind": self.resource, "name": self.name.clone().unwrap_or_default()});
        if !self.group.is_empty() {
            d["group"] = json!(self.group);
        }
        e.details = Some(d);
        e
    }
}

/// One `rules[]` entry of a Role or ClusterRole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyRule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

impl PolicyRule {
    fn from_json(v: &Value) -> PolicyRule {
        PolicyRule {
            verbs: strings(&v["verbs"]),
            api_groups: strings(&v["apiGroups"]),
            resources: strings(&v["resources"]),
            resource_names: strings(&v["resourceNames"]),
        }
    }

    /// Whether this rule allows the request, as RBAC's `RuleAllows`.
    pub fn allows(&self, a: &Attributes) -> bool {
        let verb = self.verbs.iter().any(|v| v == "*" || *v == a.verb);
        let group = self.api_groups.iter().any(|g| g == "*" || *g == a.group);
        let combined = a.resource_path();
        let resource = self.resources.iter().any(|r| {
            r == "*"
                || *r == combined
                || (a.subresource.is_some() && r.strip_prefix("*/") == a.subresource.as_deref())
        });
        let name = self.resource_names.is_empty()
            || a.name
                .as_ref()
                .is_some_and(|n| self.resource_names.contains(n));
        verb && group && resource && name
    }
}

fn subject_matches(s: &Value, user: &UserInfo, binding_ns: &str) -> bool {
    let name = s["name"].as_str().unwrap_or("");
    match s["kind"].as_str().unwrap_or("") {
        "User" => name == user.name,
        "Group" => user.groups.iter().any(|g| g == name),
        "ServiceAccount" => {
            let ns = s["namespace"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_ns);
            user.name == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

/// Authentication state and the record of denied requests.
#[derive(Default)]
pub struct Rbac {
    tokens: Mutex<HashMap<String, UserInfo>>,
    denials: Mutex<Vec<Value>>,
    /// Requests authenticated per user (the admin excluded).
    requests: Mutex<HashMap<String, u64>>,
}

impl Rbac {
    /// Issues a token for a ServiceAccount (the ServiceAccount need not exist yet).
    pub fn issue_token(&self, namespace: &str, service_account: &str) -> String {
        let token = format!(
            "mock-sa.{namespace}.{service_account}.{}",
            uuid::Uuid::new_v4().simple()
        );
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                token.clone(),
                UserInfo::service_account(namespace, service_account),
            );
        token
    }

    /// The user behind an `Authorization` header; 401 for an unknown bearer token.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<UserInfo, ApiError> {
        let admin = || UserInfo {
            name: "mock-cloud-admin".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
        };
        let Some(authorization) = authorization else {
            return Ok(admin());
        };
        let unauthorized = || ApiError {
            code: 401,
            reason: "Unauthorized",
            message: "Unauthorized".into(),
            details: None,
            retry_after: None,
            continue_token: None,
        };
        let token = Some(authorization)
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(unauthorized)?;
        if token == ADMIN_TOKEN {
            return Ok(admin());
        }
        let user = self
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
            .ok_or_else(unauthorized)?;
        *self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(user.name.clone())
            .or_default() += 1;
        Ok(user)
    }

    /// Requests each token-authenticated user made (the admin excluded).
    pub fn requests_by_user(&self) -> HashMap<String, u64> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Allows the request or returns its 403 (and records the denial).
    pub fn authorize(
        &self,
        store: &Store,
        user: &UserInfo,
        a: &Attributes,
    ) -> Result<(), ApiError> {
        if user.is_superuser() || allowed(store, user, a) {
            return Ok(());
        }
        let err = a.forbidden(user);
        self.denials
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(json!({
                "user": user.name,
                "verb": a.verb,
                "apiGroup": a.group,
                "resource": a.resource_path(),
                "namespace": a.namespace,
                "name": a.name,
                "message": err.message,
            }));
        Err(err)
    }

    /// Every denied request so far: `{user, verb, apiGroup, resource, namespace, name, message}`.
    pub fn denials(&self) -> Vec<Value> {
        self.denials
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Forgets the recorded denials.
    pub fn clear_denials(&self) {
        self.denials
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

fn rbac_objects(store: &Store, resource: &str, ns: Option<&str>) -> Vec<std::sync::Arc<Value>> {
    store
        .list(&(RBAC_GROUP.to_string(), resource.to_string()), ns)
        .0
}

/// The rules a binding's roleRef grants (a missing role grants nothing).
fn role_rules(store: &Store, binding: &Value, binding_ns: Option<&str>) -> Vec<PolicyRule> {
    let r = &binding["roleRef"];
    let name = r["name"].as_str().unwrap_or("");
    let role = match (r["kind"].as_str(), binding_ns) {
        (Some("ClusterRole"), _) => {
            store.get(&(RBAC_GROUP.into(), "clusterroles".into()), "", name)
        }
        (Some("Role"), Some(ns)) => store.get(&(RBAC_GROUP.into(), "roles".into()), ns, name),
        _ => None,
    };
    role.map(|r| {
        r["rules"]
            .as_array()
            .map(|a| a.iter().map(PolicyRule::from_json).collect())
            .unwrap_or_default()
    })
    .unwrap_or_default()
}

/// Whether RBAC objects in `store` allow `user` the request `a`.
pub fn allowed(store: &Store, user: &UserInfo, a: &Attributes) -> bool {
    let grants = |binding: &Value, ns: Option<&str>| {
        let binding_ns = ns.unwrap_or("");
        binding["subjects"]
            .as_array()
            .is_some_and(|ss| ss.iter().any(|s| subject_matches(s, user, binding_ns)))
            && role_rules(store, binding, ns).iter().any(|r| r.allows(a))
    };
    if rbac_objects(store, "clusterrolebindings", None)
        .iter()
        .any(|b| grants(b, None))
    {
        return true;
    }
    match a.namespace.as_deref() {
        Some(ns) => rbac_objects(store, "rolebindings", Some(ns))
            .iter()
            .any(|b| grants(b, Some(ns))),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(store: &Store, resource: &str, ns: &str, obj: Value) {
        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
        store
            .create(&(RBAC_GROUP.into(), resource.into()), ns, &name, obj)
            .unwrap();
    }

    fn attrs(verb: &str, group: &str, resource: &str, ns: Option<&str>) -> Attributes {
        let (resource, sub) = match resource.split_once('/') {
            Some((r, s)) => (r.to_string(), Some(s.to_string())),
            None => (resource.to_string(), None),
        };
        Attributes {
            verb: verb.into(),
            group: group.into(),
            resource,
            subresource: sub,
            namespace: ns.map(str::to_string),
            name: None,
        }
    }

    fn sa_subject() -> Value {
        json!([{"kind": "ServiceAccount", "name": "berth-controller", "namespace": "berth-system"}])
    }

    fn store_with_roles() -> Store {
        let store = Store::default();
        put(
            &store,
            "clusterroles",
            "",
            json!({"metadata": {"name": "berth"}, "rules": [
                {"apiGroups": [""], "resources": ["services"], "verbs": ["list", "watch", "patch"]},
                {"apiGroups": [""], "resources": ["services/status"], "verbs": ["patch"]},
            ]}),
        );
        put(
            &store,
            "clusterrolebindings",
            "",
            json!({"metadata": {"name": "berth"},
                   "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": "berth"},
                   "subjects": sa_subject()}),
        );
        put(
            &store,
            "roles",
            "berth-system",
            json!({"metadata": {"name": "leader", "namespace": "berth-system"}, "rules": [
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "update"],
                 "resourceNames": ["berth-controller"]},
            ]}),
        );
        put(
            &store,
            "rolebindings",
            "berth-system",
            json!({"metadata": {"name": "leader", "namespace": "berth-system"},
                   "roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": "leader"},
                   "subjects": sa_subject()}),
        );
        store
    }

    fn sa() -> UserInfo {
        UserInfo::service_account("berth-system", "berth-controller")
    }

    #[test]
    fn rbac_cluster_role_binding_grants_exactly_its_rules() {
        let store = store_with_roles();
        let u = sa();
        assert!(allowed(&store, &u, &attrs("list", "", "services", None)));
        assert!(allowed(
            &store,
            &u,
            &attrs("patch", "", "services", Some("default"))
        ));
        assert!(allowed(
            &store,
            &u,
            &attrs("patch", "", "services/status", Some("x"))
        ));
        // Not the subresource through its parent, nor the parent through the subresource.
        assert!(!allowed(
            &store,
            &u,
            &attrs("update", "", "services/status", Some("x"))
        ));
        assert!(!allowed(&store, &u, &attrs("get", "", "services", None)));
        assert!(!allowed(&store, &u, &attrs("list", "", "nodes", None)));
        assert!(!allowed(
            &store,
            &u,
            &attrs("list", "apps", "services", None)
        ));
        // Another ServiceAccount, or the same name in another namespace: nothing.
        let other = UserInfo::service_account("default", "berth-controller");
        assert!(!allowed(
            &store,
            &other,
            &attrs("list", "", "services", None)
        ));
    }

    #[test]
    fn rbac_role_binding_is_namespaced_and_honours_resource_names() {
        let store = store_with_roles();
        let u = sa();
        let mut a = attrs("get", "coordination.k8s.io", "leases", Some("berth-system"));
        assert!(
            !allowed(&store, &u, &a),
            "no name: resourceNames must not match"
        );
        a.name = Some("berth-controller".into());
        assert!(allowed(&store, &u, &a));
        a.name = Some("someone-else".into());
        assert!(!allowed(&store, &u, &a));
        a.name = Some("berth-controller".into());
        a.namespace = Some("kube-system".into());
        assert!(
            !allowed(&store, &u, &a),
            "a Role grants only in its namespace"
        );
        let create = attrs(
            "create",
            "coordination.k8s.io",
            "leases",
            Some("berth-system"),
        );
        assert!(allowed(&store, &u, &create));
        let all_ns = attrs("create", "coordination.k8s.io", "leases", None);
        assert!(!allowed(&store, &u, &all_ns));
    }

    #[test]
    fn rbac_wildcards_groups_and_users() {
        let store = Store::default();
        put(
            &store,
            "clusterroles",
            "",
            json!({"metadata": {"name": "viewer"}, "rules": [
                {"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list"]},
                {"apiGroups": [""], "resources": ["*/status"], "verbs": ["*"]},
            ]}),
        );
        put(
            &store,
            "rolebindings",
            "team",
            json!({"metadata": {"name": "v", "namespace": "team"},
                   "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": "viewer"},
                   "subjects": [{"kind": "Group", "name": "system:serviceaccounts:ci"},
                                {"kind": "User", "name": "alice"}]}),
        );
        let ci = UserInfo::service_account("ci", "runner");
        assert!(allowed(
            &store,
            &ci,
            &attrs("get", "apps", "deployments", Some("team"))
        ));
        assert!(!allowed(
            &store,
            &ci,
            &attrs("get", "apps", "deployments", Some("ci"))
        ));
        assert!(!allowed(
            &store,
            &ci,
            &attrs("delete", "", "pods", Some("team"))
        ));
        assert!(allowed(
            &store,
            &ci,
            &attrs("update", "", "pods/status", Some("team"))
        ));
        let alice = UserInfo {
            name: "alice".into(),
            groups: vec![],
        };
        assert!(allowed(
            &store,
            &alice,
            &attrs("list", "", "secrets", Some("team"))
        ));
    }

    #[test]
    fn rbac_tokens_and_forbidden_status() {
        let rbac = Rbac::default();
        let store = Store::default();
        let t = rbac.issue_token("berth-system", "berth-controller");
        let u = rbac.authenticate(Some(&format!("Bearer {t}"))).unwrap();
        assert_eq!(u, sa());
        assert_eq!(
            rbac.authenticate(Some("Bearer nope")).unwrap_err().code,
            401
        );
        assert_eq!(rbac.authenticate(Some("Basic x")).unwrap_err().code, 401);
        // kubectl sends no credentials to a plain-http server: the admin.
        assert!(rbac.authenticate(None).unwrap().is_superuser());
        assert_eq!(
            rbac.requests_by_user()
                .get("system:serviceaccount:berth-system:berth-controller"),
            Some(&1)
        );
        let admin = rbac.authenticate(Some("Bearer mock-cloud-admin")).unwrap();
        assert!(
            rbac.authorize(&store, &admin, &attrs("delete", "", "nodes", None))
                .is_ok()
        );
        let e = rbac
            .authorize(&store, &u, &attrs("list", "", "services", None))
            .unwrap_err();
        assert_eq!(e.code, 403);
        assert_eq!(e.reason, "Forbidden");
        assert_eq!(
            e.message,
            "services is forbidden: User \"system:serviceaccount:berth-system:berth-controller\" cannot list resource \"services\" in API group \"\" at the cluster scope"
        );
        let mut a = attrs("get", "coordination.k8s.io", "leases", Some("berth-system"));
        a.name = Some("berth-controller".into());
        let e = rbac.authorize(&store, &u, &a).unwrap_err();
        assert_eq!(
            e.message,
            "leases.coordination.k8s.io \"berth-controller\" is forbidden: User \"system:serviceaccount:berth-system:berth-controller\" cannot get resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"berth-system\""
        );
        let d = rbac.denials();
        assert_eq!(d.len(), 2);
        assert_eq!(d[1]["resource"], "leases");
        assert_eq!(d[1]["apiGroup"], "coordination.k8s.io");
        rbac.clear_denials();
        assert!(rbac.denials().is_empty());
    }
}
