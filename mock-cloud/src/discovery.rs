//! API discovery documents: `/version`, `/api`, `/apis`, `/apis/{group}`, the per
//! group-version `APIResourceList`s, and the aggregated (`apidiscovery.k8s.io/v2`) form.
//!
//! # Legacy versus aggregated discovery
//! client-go (kubectl 1.32, and kube-rs' legacy path) sends `/api` and `/apis` with
//! `Accept: application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,
//! application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json`
//! and decides how to decode the body **only from the response `Content-Type`**
//! (`ContentTypeIsGVK`): a plain `application/json` answer is decoded as the legacy
//! `APIVersions` / `APIGroupList`, after which it fetches every `/api/v1` and
//! `/apis/{g}/{v}` resource list. So legacy alone is sufficient.
//!
//! Aggregated discovery saves those per-group requests. To serve it, answer `/api` with
//! [`aggregated`]`(reg, true)` and `/apis` with [`aggregated`]`(reg, false)` whenever
//! [`wants_aggregated`] is true for the request's `Accept`, with the response header
//! `Content-Type: `[`AGGREGATED_CONTENT_TYPE`] (and `Vary: Accept`). Otherwise serve the
//! legacy document with `Content-Type: application/json`.

use crate::registry::{Registry, ResourceInfo};
use serde_json::{Map, Value, json};
use std::cmp::Ordering;

/// The Kubernetes version the mock server claims to be.
pub const GIT_VERSION: &str = "v1.33.0-mock-cloud";

/// `Content-Type` to send with an [`aggregated`] document.
pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Verbs served on a `status` subresource.
const STATUS_VERBS: [&str; 3] = ["get", "patch", "update"];

/// `GET /version`: a `version.Info` document.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "emulationMajor": "1",
        "emulationMinor": "33",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "32",
        "gitVersion": GIT_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `GET /api`: the legacy `APIVersions` document of the core group.
pub fn api_versions(server_addr: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_addr}
        ],
    })
}

/// `GET /apis`: every named group (the core group is not listed here).
pub fn api_group_list(reg: &Registry) -> Value {
    let groups: Vec<Value> = named_groups(reg)
        .into_iter()
        .map(|(group, versions)| group_doc(&group, &versions))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/{group}`: one `APIGroup`, or `None` if the group is not served.
pub fn api_group(reg: &Registry, group: &str) -> Option<Value> {
    if group.is_empty() {
        return None;
    }
    let (_, versions) = named_groups(reg).into_iter().find(|(g, _)| g == group)?;
    let mut doc = group_doc(group, &versions);
    let obj = doc.as_object_mut()?;
    obj.insert("kind".into(), json!("APIGroup"));
    obj.insert("apiVersion".into(), json!("v1"));
    Some(doc)
}

/// `GET /api/v1` (group `""`) or `GET /apis/{group}/{version}`: the `APIResourceList`
/// with each resource and its `status` subresource, or `None` if nothing is served there.
pub fn api_resource_list(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let infos = reg.resources_in(group, version);
    if infos.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for info in &infos {
        resources.push(legacy_resource(info));
        if info.has_status {
            resources.push(legacy_status(info));
        }
        if info.has_scale() {
            resources.push(json!({
                "name": format!("{}/scale", info.resource),
                "singularName": "",
                "namespaced": info.namespaced,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": STATUS_VERBS,
            }));
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}

/// Whether an `Accept` header asks for aggregated discovery (`apidiscovery.k8s.io/v2`).
pub fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|media| {
        let params: Vec<&str> = media.split(';').map(str::trim).collect();
        params.first() == Some(&"application/json")
            && params.contains(&"g=apidiscovery.k8s.io")
            && params.contains(&"v=v2")
            && params.contains(&"as=APIGroupDiscoveryList")
    })
}

/// Aggregated discovery (`APIGroupDiscoveryList`, `apidiscovery.k8s.io/v2`): for `/api`
/// when `core` (one item, the unnamed core group), otherwise for `/apis` (every named group).
pub fn aggregated(reg: &Registry, core: bool) -> Value {
    let groups: Vec<(String, Vec<String>)> = if core {
        sorted_group_versions(reg)
            .into_iter()
            .filter(|(g, _)| g.is_empty())
            .collect()
    } else {
        named_groups(reg)
    };
    let items: Vec<Value> = groups
        .iter()
        .map(|(group, versions)| aggregated_group(reg, group, versions))
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

/// Groups with their versions, most preferred version first.
fn sorted_group_versions(reg: &Registry) -> Vec<(String, Vec<String>)> {
    reg.group_versions()
        .into_iter()
        .map(|(g, mut vs)| {
            vs.sort_by(|a, b| compare_versions(a, b));
            (g, vs)
        })
        .collect()
}

/// Named (non-core) groups, most preferred version first.
fn named_groups(reg: &Registry) -> Vec<(String, Vec<String>)> {
    sorted_group_versions(reg)
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .collect()
}

/// The `APIGroup` body (without kind/apiVersion) for `/apis` and `/apis/{group}`.
fn group_doc(group: &str, versions: &[String]) -> Value {
    let gv = |v: &String| json!({"groupVersion": format!("{group}/{v}"), "version": v});
    let list: Vec<Value> = versions.iter().map(gv).collect();
    let preferred = list.first().cloned().unwrap_or(Value::Null);
    json!({"name": group, "versions": list, "preferredVersion": preferred})
}

/// Parsed Kubernetes version string: `(major, stability, minor)` where stability is
/// 2 for GA, 1 for beta and 0 for alpha.
fn parse_kube_version(v: &str) -> Option<(u64, u8, u64)> {
    let rest = v.strip_prefix('v')?;
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    let major: u64 = rest[..digits].parse().ok()?;
    let tail = &rest[digits..];
    if tail.is_empty() {
        return Some((major, 2, 0));
    }
    for (prefix, stability) in [("beta", 1u8), ("alpha", 0u8)] {
        if let Some(n) = tail.strip_prefix(prefix) {
            return Some((major, stability, n.parse().ok()?));
        }
    }
    None
}

/// Kubernetes version priority: GA before beta before alpha, higher numbers first, and
/// non-Kubernetes-style versions last in alphabetical order.
fn compare_versions(a: &str, b: &str) -> Ordering {
    match (parse_kube_version(a), parse_kube_version(b)) {
        (Some((ma, sa, na)), Some((mb, sb, nb))) => sb.cmp(&sa).then(mb.cmp(&ma)).then(nb.cmp(&na)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

/// Inserts `key: [strings]` unless the list is empty.
fn insert_list(obj: &mut Map<String, Value>, key: &str, items: &[String]) {
    if !items.is_empty() {
        obj.insert(key.into(), json!(items));
    }
}

/// One legacy `APIResource` entry for the main resource.
fn legacy_resource(info: &ResourceInfo) -> Value {
    let mut r = json!({
        "name": info.resource,
        "singularName": info.singular,
        "namespaced": info.namespaced,
        "kind": info.kind,
        "verbs": info.verbs(),
    });
    let obj = r.as_object_mut().expect("object literal");
    insert_list(obj, "shortNames", &info.short_names);
    insert_list(obj, "categories", &info.categories);
    r
}

/// The legacy `APIResource` entry of a `status` subresource.
fn legacy_status(info: &ResourceInfo) -> Value {
    json!({
        "name": format!("{}/status", info.resource),
        "singularName": "",
        "namespaced": info.namespaced,
        "kind": info.kind,
        "verbs": STATUS_VERBS,
    })
}

/// One `APIGroupDiscovery` item of the aggregated document.
fn aggregated_group(reg: &Registry, group: &str, versions: &[String]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| {
            let resources: Vec<Value> = reg
                .resources_in(group, v)
                .iter()
                .map(aggregated_resource)
                .collect();
            json!({"version": v, "resources": resources, "freshness": "Current"})
        })
        .collect();
    let metadata = if group.is_empty() {
        json!({"creationTimestamp": null})
    } else {
        json!({"name": group, "creationTimestamp": null})
    };
    json!({"metadata": metadata, "versions": versions})
}

/// One `APIResourceDiscovery` entry of the aggregated document.
fn aggregated_resource(info: &ResourceInfo) -> Value {
    let kind = json!({"group": info.group, "version": info.version, "kind": info.kind});
    let mut r = json!({
        "resource": info.resource,
        "responseKind": kind,
        "scope": if info.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": info.singular,
        "verbs": info.verbs(),
    });
    let obj = r.as_object_mut().expect("object literal");
    insert_list(obj, "shortNames", &info.short_names);
    insert_list(obj, "categories", &info.categories);
    let mut subs = Vec::new();
    if info.has_status {
        subs.push(json!({"subresource": "status", "responseKind": kind, "verbs": STATUS_VERBS}));
    }
    if info.has_scale() {
        subs.push(json!({"subresource": "scale",
            "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"},
            "verbs": STATUS_VERBS}));
    }
    if !subs.is_empty() {
        obj.insert("subresources".into(), json!(subs));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd(versions: &[&str]) -> Value {
        let vs: Vec<Value> = versions
            .iter()
            .map(|v| json!({"name": v, "served": true, "storage": *v == "v1", "subresources": {"status": {}}}))
            .collect();
        json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
                "versions": vs,
            }
        })
    }

    #[test]
    fn version_document() {
        let v = version();
        assert_eq!(v["major"], "1");
        assert_eq!(v["minor"], "33");
        assert_eq!(v["gitVersion"], GIT_VERSION);
        assert_eq!(v["platform"], "linux/amd64");
    }

    #[test]
    fn api_versions_document() {
        let v = api_versions("127.0.0.1:6443");
        assert_eq!(v["kind"], "APIVersions");
        assert_eq!(v["versions"], json!(["v1"]));
        assert_eq!(
            v["serverAddressByClientCIDRs"][0]["serverAddress"],
            "127.0.0.1:6443"
        );
    }

    #[test]
    fn group_list_has_no_core_group_and_sorted_groups() {
        let reg = Registry::with_builtins();
        let v = api_group_list(&reg);
        assert_eq!(v["kind"], "APIGroupList");
        let names: Vec<&str> = v["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        assert!(!names.contains(&""));
        assert!(names.contains(&"discovery.k8s.io"));
        let apps =
            &v["groups"].as_array().unwrap()[names.iter().position(|n| *n == "apps").unwrap()];
        assert_eq!(
            apps["preferredVersion"],
            json!({"groupVersion": "apps/v1", "version": "v1"})
        );
    }

    #[test]
    fn preferred_version_follows_kube_priority() {
        let reg = Registry::with_builtins();
        reg.install_crd(&crd(&["v1alpha1", "v1beta1", "v1", "v2beta1"]))
            .unwrap();
        let g = api_group(&reg, "example.com").unwrap();
        assert_eq!(g["kind"], "APIGroup");
        assert_eq!(g["preferredVersion"]["version"], "v1");
        let order: Vec<&str> = g["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["version"].as_str().unwrap())
            .collect();
        assert_eq!(order, ["v1", "v2beta1", "v1beta1", "v1alpha1"]);
        assert!(api_group(&reg, "nope.example.com").is_none());
        assert!(api_group(&reg, "").is_none());
    }

    #[test]
    fn core_resource_list_includes_status_subresources() {
        let reg = Registry::with_builtins();
        let v = api_resource_list(&reg, "", "v1").unwrap();
        assert_eq!(v["kind"], "APIResourceList");
        assert_eq!(v["groupVersion"], "v1");
        let res = v["resources"].as_array().unwrap();
        let svc = res.iter().find(|r| r["name"] == "services").unwrap();
        assert_eq!(svc["singularName"], "service");
        assert_eq!(svc["kind"], "Service");
        assert_eq!(svc["namespaced"], true);
        assert_eq!(svc["shortNames"], json!(["svc"]));
        assert_eq!(svc["categories"], json!(["all"]));
        assert!(svc["verbs"].as_array().unwrap().contains(&json!("watch")));
        let status = res.iter().find(|r| r["name"] == "services/status").unwrap();
        assert_eq!(status["verbs"], json!(["get", "patch", "update"]));
        assert_eq!(status["kind"], "Service");
        let ns = res.iter().find(|r| r["name"] == "namespaces").unwrap();
        assert_eq!(ns["namespaced"], false);
        assert!(res.iter().all(|r| r["name"] != "configmaps/status"));
        assert!(api_resource_list(&reg, "", "v2").is_none());
    }

    #[test]
    fn group_resource_list() {
        let reg = Registry::with_builtins();
        let v = api_resource_list(&reg, "discovery.k8s.io", "v1").unwrap();
        assert_eq!(v["groupVersion"], "discovery.k8s.io/v1");
        assert_eq!(v["resources"][0]["name"], "endpointslices");
        assert!(v["resources"][0].get("shortNames").is_none());
    }

    #[test]
    fn aggregated_accept_detection() {
        let kubectl = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert!(wants_aggregated(kubectl));
        assert!(wants_aggregated(
            "application/json; as=APIGroupDiscoveryList; v=v2; g=apidiscovery.k8s.io"
        ));
        assert!(!wants_aggregated("application/json"));
        assert!(!wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
        ));
    }

    #[test]
    fn aggregated_documents() {
        let reg = Registry::with_builtins();
        reg.install_crd(&crd(&["v1"])).unwrap();
        let core = aggregated(&reg, true);
        assert_eq!(core["kind"], "APIGroupDiscoveryList");
        assert_eq!(core["apiVersion"], "apidiscovery.k8s.io/v2");
        let items = core["items"].as_array().unwrap();
        assert_eq!(items.len(), 1);
        assert!(items[0]["metadata"].get("name").is_none());
        let res = items[0]["versions"][0]["resources"].as_array().unwrap();
        let svc = res.iter().find(|r| r["resource"] == "services").unwrap();
        assert_eq!(svc["scope"], "Namespaced");
        assert_eq!(
            svc["responseKind"],
            json!({"group": "", "version": "v1", "kind": "Service"})
        );
        assert_eq!(svc["subresources"][0]["subresource"], "status");

        let apis = aggregated(&reg, false);
        let ex = apis["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["metadata"]["name"] == "example.com")
            .unwrap();
        assert_eq!(ex["versions"][0]["freshness"], "Current");
        assert_eq!(
            ex["versions"][0]["resources"][0]["shortNames"],
            json!(["wd"])
        );
    }
}
