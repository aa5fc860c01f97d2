//! OpenAPI documents: the v3 root (`/openapi/v3`), one v3 document per group version
//! (`/openapi/v3/api/v1`, `/openapi/v3/apis/{g}/{v}`) and a stand-in for `/openapi/v2`.
//!
//! # What kubectl 1.32 does with them
//! * **Validation** (`apply`, `create`, `replace`, `edit`; `--validate` defaults to
//!   `strict`): kubectl first asks a query-parameter verifier whether the server supports
//!   `fieldValidation` for the object's GVK. The primary verifier reads `/openapi/v3`,
//!   fetches the group version's `serverRelativeURL`, and looks for a `patch` operation
//!   whose `x-kubernetes-group-version-kind` is that GVK and whose parameters include
//!   `fieldValidation`. If found, client-side schema validation is skipped entirely and
//!   kubectl sends `?fieldValidation=Strict` (the server must honour it). Only when the
//!   parameter is reported unsupported (always the case for a `kind: List` document) does
//!   kubectl download `/openapi/v2` as protobuf to validate on the client; a missing or
//!   broken v2 then fails with "error validating data: failed to download openapi".
//! * **Client-side `apply` patch computation** (`kubectl/pkg/cmd/apply/patcher.go`):
//!   kubectl uses the v3 document for a strategic merge patch only if the kind's `patch`
//!   operation lists `application/strategic-merge-patch+json` in its request body and a
//!   schema with the GVK exists. Our built-in schemas are permissive (no
//!   `x-kubernetes-patch-merge-key`), which would make kubectl treat every list as atomic,
//!   so the built-in kinds' `patch` operations deliberately **omit** the strategic content
//!   type. kubectl then tries `/openapi/v2` and finally falls back to its compiled-in Go
//!   types (`scheme.Scheme`), which carry the real merge keys: Services, Pods, ... get a
//!   correct `application/strategic-merge-patch+json` patch. Custom resources are not in
//!   kubectl's scheme and get a JSON merge patch (`application/merge-patch+json`), exactly
//!   as against a real cluster (CRDs never advertise strategic merge).
//! * **`/openapi/v2`** is requested with `Accept:
//!   application/com.github.proto-openapi.spec.v2@v1.0+protobuf`. An empty body is a valid
//!   encoding of an empty `openapi_v2.Document`, so answer 200 with [`v2_protobuf`] and
//!   `Content-Type: `[`V2_PROTOBUF_CONTENT_TYPE`]: client validation then finds no schema
//!   and passes (this makes `kind: List` files work), and the apply patcher finds no patch
//!   types and falls back to its compiled-in types. For an `application/json` request,
//!   answer [`v2`]. A 404 also works for everything except `kind: List` documents.

use crate::registry::{Registry, ResourceInfo};
use serde_json::{Map, Value, json};

/// `Content-Type` for the `/openapi/v2` protobuf answer.
/// (kube-apiserver answers with this `.v1.0` spelling: Go's `mime.ParseMediaType`, which
/// client-go applies to every response, rejects the `@v1.0` form kubectl puts in `Accept`.)
pub const V2_PROTOBUF_CONTENT_TYPE: &str =
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1";

/// Patch media types every resource accepts.
const PATCH_TYPES: [&str; 3] = [
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
];

/// `GET /openapi/v3`: every served group version with its document URL. The `hash` query
/// parameter changes whenever the document does (CRD installed, schema changed).
pub fn v3_root(reg: &Registry) -> Value {
    let mut paths = Map::new();
    for (group, versions) in reg.group_versions() {
        for version in versions {
            let key = gv_key(&group, &version);
            if let Some(doc) = v3_group_version(reg, &key) {
                let url = format!("/openapi/v3/{key}?hash={}", doc_hash(&doc));
                paths.insert(key, json!({ "serverRelativeURL": url }));
            }
        }
    }
    json!({ "paths": paths })
}

/// `GET /openapi/v3/api/v1` or `/openapi/v3/apis/{g}/{v}`: `gv_path` is `api/v1` or
/// `apis/{g}/{v}` (a leading `/` or `/openapi/v3/` and any `?query` are ignored).
/// `None` if no resource is served in that group version.
pub fn v3_group_version(reg: &Registry, gv_path: &str) -> Option<Value> {
    let (group, version) = parse_gv_path(gv_path)?;
    let infos = reg.resources_in(&group, &version);
    if infos.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    let mut schemas = shared_schemas();
    for info in &infos {
        add_resource_paths(&mut paths, info);
        schemas.insert(definition_name(info), kind_schema(info));
        schemas.insert(list_definition_name(info), list_schema(info));
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": crate::discovery::GIT_VERSION },
        "paths": paths,
        "components": { "schemas": schemas },
    }))
}

/// `GET /openapi/v2` when JSON is asked for: a minimal Swagger 2.0 document without
/// definitions (kubectl never asks for JSON; it asks for protobuf, see [`v2_protobuf`]).
pub fn v2(_reg: &Registry) -> Option<Value> {
    Some(json!({
        "swagger": "2.0",
        "info": { "title": "Kubernetes", "version": crate::discovery::GIT_VERSION },
        "paths": {},
        "definitions": {},
    }))
}

/// `GET /openapi/v2` when protobuf is asked for: an empty (valid) `openapi_v2.Document`.
pub fn v2_protobuf() -> Vec<u8> {
    Vec::new()
}

/// `api/v1` or `apis/{group}/{version}`.
fn gv_key(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// Inverse of [`gv_key`], tolerant of a leading `/openapi/v3/` or `/` and a query.
fn parse_gv_path(path: &str) -> Option<(String, String)> {
    let path = path.split('?').next()?;
    let path = path.strip_prefix("/openapi/v3").unwrap_or(path);
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", v] if !v.is_empty() => Some((String::new(), v.to_string())),
        ["apis", g, v] if !g.is_empty() && !v.is_empty() => Some((g.to_string(), v.to_string())),
        _ => None,
    }
}

/// FNV-1a (64 bit) of the serialized document, as 16 upper-case hex digits.
fn doc_hash(doc: &Value) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in doc.to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016X}")
}

/// Capitalizes the first letter.
fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The operation-id token of a group version: `CoreV1`, `AppsV1`, `RbacAuthorizationV1`,
/// `ExampleComV1`.
fn op_prefix(info: &ResourceInfo) -> String {
    let group = if info.group.is_empty() {
        "core".to_string()
    } else {
        info.group
            .strip_suffix(".k8s.io")
            .unwrap_or(&info.group)
            .to_string()
    };
    let g: String = group.split(['.', '-']).map(capitalize).collect();
    format!("{g}{}", capitalize(&info.version))
}

/// The schema name of a kind, as upstream names it: `io.k8s.api.core.v1.Service`,
/// `com.example.v1.Widget` for custom resources.
fn definition_name(info: &ResourceInfo) -> String {
    let package = if info.crd_name.is_some() {
        let mut segs: Vec<&str> = info.group.split('.').collect();
        segs.reverse();
        format!("{}.{}", segs.join("."), info.version)
    } else if info.group.is_empty() {
        format!("io.k8s.api.core.{}", info.version)
    } else if info.group == "apiextensions.k8s.io" {
        format!(
            "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.{}",
            info.version
        )
    } else {
        let first = info.group.split('.').next().unwrap_or_default();
        format!("io.k8s.api.{first}.{}", info.version)
    };
    format!("{package}.{}", info.kind)
}

/// The schema name of the list kind.
fn list_definition_name(info: &ResourceInfo) -> String {
    let name = definition_name(info);
    let package = name.rsplit_once('.').map(|(p, _)| p).unwrap_or_default();
    format!("{package}.{}", info.list_kind)
}

/// A `$ref` to a component schema.
fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// An inline query parameter.
fn query_param(name: &str, type_: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": "query",
        "description": description,
        "schema": { "type": type_, "uniqueItems": true },
    })
}

/// An inline, required path parameter.
fn path_param(name: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": "path",
        "description": description,
        "required": true,
        "schema": { "type": "string", "uniqueItems": true },
    })
}

fn dry_run() -> Value {
    query_param(
        "dryRun",
        "string",
        "When present, indicates that modifications should not be persisted. Valid values are: - All: all dry run stages will be processed",
    )
}

fn field_manager() -> Value {
    query_param(
        "fieldManager",
        "string",
        "fieldManager is a name associated with the actor or entity that is making these changes.",
    )
}

fn field_validation() -> Value {
    query_param(
        "fieldValidation",
        "string",
        "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore - Warn - Strict",
    )
}

/// Parameters of `list`/`watch` operations.
fn list_params() -> Vec<Value> {
    [
        ("allowWatchBookmarks", "boolean"),
        ("continue", "string"),
        ("fieldSelector", "string"),
        ("labelSelector", "string"),
        ("limit", "integer"),
        ("resourceVersion", "string"),
        ("resourceVersionMatch", "string"),
        ("sendInitialEvents", "boolean"),
        ("timeoutSeconds", "integer"),
        ("watch", "boolean"),
    ]
    .iter()
    .map(|(n, t)| query_param(n, t, n))
    .collect()
}

/// Parameters of `delete`/`deletecollection` operations.
fn delete_params() -> Vec<Value> {
    let mut p = vec![dry_run()];
    p.extend(
        [
            ("gracePeriodSeconds", "integer"),
            ("orphanDependents", "boolean"),
            ("propagationPolicy", "string"),
        ]
        .iter()
        .map(|(n, t)| query_param(n, t, n)),
    );
    p
}

/// A `200`-style response whose body is the given schema.
fn responses(codes: &[(&str, &str)], schema: &str) -> Value {
    let mut r = Map::new();
    for (code, desc) in codes {
        r.insert(
            code.to_string(),
            json!({
                "description": desc,
                "content": { "application/json": { "schema": schema_ref(schema) } },
            }),
        );
    }
    r.insert("401".into(), json!({ "description": "Unauthorized" }));
    Value::Object(r)
}

/// A request body of the given schema, accepted as the given media types.
fn request_body(types: &[&str], schema: &str) -> Value {
    let content: Map<String, Value> = types
        .iter()
        .map(|t| (t.to_string(), json!({ "schema": schema_ref(schema) })))
        .collect();
    json!({ "content": content, "required": true })
}

/// One operation.
struct Op<'a> {
    info: &'a ResourceInfo,
    action: &'a str,
    id: String,
    params: Vec<Value>,
    body: Option<Value>,
    responses: Value,
}

impl Op<'_> {
    fn into_value(self) -> Value {
        let gvk = json!({
            "group": self.info.group,
            "version": self.info.version,
            "kind": self.info.kind,
        });
        let mut op = json!({
            "tags": [op_prefix(self.info).to_lowercase()],
            "description": format!("{} {}", self.action, self.info.kind),
            "operationId": self.id,
            "responses": self.responses,
            "x-kubernetes-action": self.action,
            "x-kubernetes-group-version-kind": gvk,
        });
        let obj = op.as_object_mut().expect("object literal");
        if !self.params.is_empty() {
            obj.insert("parameters".into(), Value::Array(self.params));
        }
        if let Some(body) = self.body {
            obj.insert("requestBody".into(), body);
        }
        op
    }
}

/// Adds the collection, item and status paths of one resource.
fn add_resource_paths(paths: &mut Map<String, Value>, info: &ResourceInfo) {
    let base = info.group_version_path();
    let ns = if info.namespaced {
        "/namespaces/{namespace}"
    } else {
        ""
    };
    let collection = format!("{base}{ns}/{}", info.resource);
    let item = format!("{collection}/{{name}}");
    paths.insert(collection.clone(), collection_path(info));
    paths.insert(item.clone(), item_path(info, ""));
    if info.has_status {
        paths.insert(format!("{item}/status"), item_path(info, "Status"));
    }
    if info.namespaced {
        let all = format!("{base}/{}", info.resource);
        paths.insert(all, all_namespaces_path(info));
    }
}

/// Path-level parameters (`namespace`, `name`, `pretty`).
fn path_level_params(info: &ResourceInfo, with_name: bool) -> Vec<Value> {
    let mut p = Vec::new();
    if with_name {
        p.push(path_param("name", &format!("name of the {}", info.kind)));
    }
    if info.namespaced {
        p.push(path_param(
            "namespace",
            "object name and auth scope, such as for teams and projects",
        ));
    }
    p.push(query_param(
        "pretty",
        "string",
        "If 'true', then the output is pretty printed.",
    ));
    p
}

/// The scope word in operation ids: `Namespaced` or nothing.
fn scope_word(info: &ResourceInfo) -> &'static str {
    if info.namespaced { "Namespaced" } else { "" }
}

/// `list`, `create` and `deletecollection` on the collection.
fn collection_path(info: &ResourceInfo) -> Value {
    let prefix = op_prefix(info);
    let scope = scope_word(info);
    let def = definition_name(info);
    let kind = &info.kind;
    let list = Op {
        info,
        action: "list",
        id: format!("list{prefix}{scope}{kind}"),
        params: list_params(),
        body: None,
        responses: responses(&[("200", "OK")], &list_definition_name(info)),
    };
    let create = Op {
        info,
        action: "post",
        id: format!("create{prefix}{scope}{kind}"),
        params: vec![dry_run(), field_manager(), field_validation()],
        body: Some(request_body(&["*/*"], &def)),
        responses: responses(
            &[("200", "OK"), ("201", "Created"), ("202", "Accepted")],
            &def,
        ),
    };
    let mut del_params = list_params();
    del_params.extend(delete_params());
    let delete = Op {
        info,
        action: "deletecollection",
        id: format!("delete{prefix}Collection{scope}{kind}"),
        params: del_params,
        body: Some(request_body(&["*/*"], &format!("{META}.DeleteOptions"))),
        responses: responses(&[("200", "OK")], &format!("{META}.Status")),
    };
    json!({
        "get": list.into_value(),
        "post": create.into_value(),
        "delete": delete.into_value(),
        "parameters": path_level_params(info, false),
    })
}

/// `get`, `put`, `patch` (and `delete` unless a subresource) on one object; `sub` is ""
/// for the object itself or `Status` for its status subresource.
fn item_path(info: &ResourceInfo, sub: &str) -> Value {
    let prefix = op_prefix(info);
    let scope = scope_word(info);
    let def = definition_name(info);
    let kind = &info.kind;
    let get = Op {
        info,
        action: "get",
        id: format!("read{prefix}{scope}{kind}{sub}"),
        params: Vec::new(),
        body: None,
        responses: responses(&[("200", "OK")], &def),
    };
    let put = Op {
        info,
        action: "put",
        id: format!("replace{prefix}{scope}{kind}{sub}"),
        params: vec![dry_run(), field_manager(), field_validation()],
        body: Some(request_body(&["*/*"], &def)),
        responses: responses(&[("200", "OK"), ("201", "Created")], &def),
    };
    let mut patch_params = vec![dry_run(), field_manager(), field_validation()];
    patch_params.push(query_param(
        "force",
        "boolean",
        "Force is going to \"force\" Apply requests. It must be unset for non-apply patch requests.",
    ));
    let patch = Op {
        info,
        action: "patch",
        id: format!("patch{prefix}{scope}{kind}{sub}"),
        params: patch_params,
        body: Some(request_body(&PATCH_TYPES, &format!("{META}.Patch"))),
        responses: responses(&[("200", "OK"), ("201", "Created")], &def),
    };
    let mut path = json!({
        "get": get.into_value(),
        "put": put.into_value(),
        "patch": patch.into_value(),
        "parameters": path_level_params(info, true),
    });
    if sub.is_empty() {
        let delete = Op {
            info,
            action: "delete",
            id: format!("delete{prefix}{scope}{kind}"),
            params: delete_params(),
            body: Some(request_body(&["*/*"], &format!("{META}.DeleteOptions"))),
            responses: responses(
                &[("200", "OK"), ("202", "Accepted")],
                &format!("{META}.Status"),
            ),
        };
        path["delete"] = delete.into_value();
    }
    path
}

/// `list` across all namespaces (`/api/v1/services`).
fn all_namespaces_path(info: &ResourceInfo) -> Value {
    let list = Op {
        info,
        action: "list",
        id: format!("list{}{}ForAllNamespaces", op_prefix(info), info.kind),
        params: list_params(),
        body: None,
        responses: responses(&[("200", "OK")], &list_definition_name(info)),
    };
    json!({
        "get": list.into_value(),
        "parameters": [query_param("pretty", "string", "If 'true', then the output is pretty printed.")],
    })
}

/// The `x-kubernetes-group-version-kind` extension of a schema (an array upstream).
fn gvk_extension(info: &ResourceInfo, kind: &str) -> Value {
    json!([{ "group": info.group, "version": info.version, "kind": kind }])
}

/// The schema of a kind: the CRD's own schema, or a permissive object schema.
fn kind_schema(info: &ResourceInfo) -> Value {
    let mut schema = match &info.schema {
        Some(s) if s.is_object() => s.clone(),
        _ => json!({
            "description": format!("{} (mock-cloud: fields are not described)", info.kind),
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true,
        }),
    };
    let obj = schema.as_object_mut().expect("checked object");
    obj.entry("type").or_insert_with(|| json!("object"));
    let props = obj
        .entry("properties")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    if let Some(props) = props {
        props
            .entry("apiVersion")
            .or_insert_with(|| json!({ "type": "string" }));
        props
            .entry("kind")
            .or_insert_with(|| json!({ "type": "string" }));
        props.entry("metadata").or_insert_with(
            || json!({ "allOf": [schema_ref(&format!("{META}.ObjectMeta"))], "default": {} }),
        );
    }
    obj.insert(
        "x-kubernetes-group-version-kind".into(),
        gvk_extension(info, &info.kind),
    );
    schema
}

/// The schema of the list kind.
fn list_schema(info: &ResourceInfo) -> Value {
    json!({
        "description": format!("{} is a list of {}", info.list_kind, info.kind),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": { "type": "string" },
            "kind": { "type": "string" },
            "items": {
                "type": "array",
                "items": { "allOf": [schema_ref(&definition_name(info))], "default": {} },
            },
            "metadata": { "allOf": [schema_ref(&format!("{META}.ListMeta"))], "default": {} },
        },
        "x-kubernetes-group-version-kind": gvk_extension(info, &info.list_kind),
    })
}

/// The meta.k8s.io schemas every document refers to.
fn shared_schemas() -> Map<String, Value> {
    let open = |desc: &str| {
        json!({
            "description": desc,
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true,
        })
    };
    let mut m = Map::new();
    m.insert(
        format!("{META}.ObjectMeta"),
        open("Standard object metadata."),
    );
    m.insert(format!("{META}.ListMeta"), open("Standard list metadata."));
    m.insert(
        format!("{META}.Patch"),
        json!({
            "description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.",
            "type": "object",
        }),
    );
    let mut status = open("Status is a return value for calls that don't return other objects.");
    status["x-kubernetes-group-version-kind"] =
        json!([{ "group": "", "version": "v1", "kind": "Status" }]);
    m.insert(format!("{META}.Status"), status);
    m.insert(
        format!("{META}.DeleteOptions"),
        open("DeleteOptions may be provided when deleting an API object."),
    );
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn widget_crd() -> Value {
        json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "scope": "Cluster",
                "names": {"plural": "widgets", "kind": "Widget"},
                "versions": [{
                    "name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {
                        "type": "object",
                        "properties": {"spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}
                    }}
                }]
            }
        })
    }

    fn ops_with_gvk<'a>(doc: &'a Value, method: &str, kind: &str) -> Vec<(&'a String, &'a Value)> {
        doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .filter_map(|(p, item)| item.get(method).map(|op| (p, op)))
            .filter(|(_, op)| op["x-kubernetes-group-version-kind"]["kind"] == kind)
            .collect()
    }

    fn param_names(op: &Value) -> Vec<&str> {
        op["parameters"]
            .as_array()
            .map(|a| a.iter().map(|p| p["name"].as_str().unwrap()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn root_lists_every_group_version_with_hash() {
        let reg = Registry::with_builtins();
        let root = v3_root(&reg);
        let paths = root["paths"].as_object().unwrap();
        let core = paths["api/v1"]["serverRelativeURL"].as_str().unwrap();
        assert!(core.starts_with("/openapi/v3/api/v1?hash="));
        assert!(paths.contains_key("apis/discovery.k8s.io/v1"));
        assert!(paths.contains_key("apis/apps/v1"));
        assert!(!paths.contains_key("apis/example.com/v1"));

        reg.install_crd(&widget_crd()).unwrap();
        let root2 = v3_root(&reg);
        assert!(
            root2["paths"]["apis/example.com/v1"]["serverRelativeURL"]
                .as_str()
                .unwrap()
                .starts_with("/openapi/v3/apis/example.com/v1?hash=")
        );
        assert_eq!(root2["paths"]["api/v1"], root["paths"]["api/v1"]);
    }

    #[test]
    fn gv_path_forms() {
        let reg = Registry::with_builtins();
        for p in ["api/v1", "/api/v1", "/openapi/v3/api/v1?hash=AB"] {
            assert!(v3_group_version(&reg, p).is_some(), "{p}");
        }
        assert!(v3_group_version(&reg, "apis/apps/v1").is_some());
        assert!(v3_group_version(&reg, "apis/apps/v9").is_none());
        assert!(v3_group_version(&reg, "apis/apps").is_none());
        assert!(v3_group_version(&reg, "version").is_none());
    }

    #[test]
    fn namespaced_paths_and_field_validation() {
        let reg = Registry::with_builtins();
        let doc = v3_group_version(&reg, "api/v1").unwrap();
        assert_eq!(doc["openapi"], "3.0.0");
        let paths = doc["paths"].as_object().unwrap();
        let coll = &paths["/api/v1/namespaces/{namespace}/services"];
        let item = &paths["/api/v1/namespaces/{namespace}/services/{name}"];
        let status = &paths["/api/v1/namespaces/{namespace}/services/{name}/status"];
        assert!(paths.contains_key("/api/v1/services"));
        assert_eq!(coll["get"]["x-kubernetes-action"], "list");
        assert_eq!(coll["delete"]["x-kubernetes-action"], "deletecollection");
        assert_eq!(coll["post"]["operationId"], "createCoreV1NamespacedService");
        assert_eq!(item["patch"]["operationId"], "patchCoreV1NamespacedService");
        assert_eq!(
            status["put"]["operationId"],
            "replaceCoreV1NamespacedServiceStatus"
        );
        assert!(status.get("delete").is_none());
        for op in [
            &coll["post"],
            &item["put"],
            &item["patch"],
            &status["patch"],
        ] {
            assert!(param_names(op).contains(&"fieldValidation"), "{op}");
            assert!(param_names(op).contains(&"fieldManager"));
            assert!(param_names(op).contains(&"dryRun"));
        }
        assert!(!param_names(&item["get"]).contains(&"fieldValidation"));
        assert_eq!(
            item["patch"]["x-kubernetes-group-version-kind"],
            json!({"group": "", "version": "v1", "kind": "Service"})
        );
        let path_params = param_names(item);
        assert!(path_params.contains(&"name") && path_params.contains(&"namespace"));
        // No strategic merge content type: kubectl falls back to its compiled-in types.
        let content = item["patch"]["requestBody"]["content"].as_object().unwrap();
        assert!(content.contains_key("application/merge-patch+json"));
        assert!(content.contains_key("application/apply-patch+yaml"));
        assert!(!content.contains_key("application/strategic-merge-patch+json"));
    }

    #[test]
    fn every_patch_op_supports_field_validation() {
        let reg = Registry::with_builtins();
        reg.install_crd(&widget_crd()).unwrap();
        for info in reg.all() {
            let key = gv_key(&info.group, &info.version);
            let doc = v3_group_version(&reg, &key).unwrap();
            let patches = ops_with_gvk(&doc, "patch", &info.kind);
            assert!(!patches.is_empty(), "{}", info.kind);
            for (_, op) in patches {
                assert!(param_names(op).contains(&"fieldValidation"));
            }
        }
    }

    #[test]
    fn cluster_scoped_paths() {
        let reg = Registry::with_builtins();
        let doc = v3_group_version(&reg, "api/v1").unwrap();
        let paths = doc["paths"].as_object().unwrap();
        assert!(paths.contains_key("/api/v1/nodes"));
        assert!(paths.contains_key("/api/v1/nodes/{name}"));
        assert!(paths.contains_key("/api/v1/nodes/{name}/status"));
        assert!(!paths.contains_key("/api/v1/namespaces/{namespace}/nodes"));
        assert_eq!(
            paths["/api/v1/nodes"]["get"]["operationId"],
            "listCoreV1Node"
        );
        assert_eq!(
            param_names(&paths["/api/v1/nodes/{name}"]),
            ["name", "pretty"]
        );
    }

    #[test]
    fn schemas_carry_gvk() {
        let reg = Registry::with_builtins();
        let doc = v3_group_version(&reg, "apis/discovery.k8s.io/v1").unwrap();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let es = &schemas["io.k8s.api.discovery.v1.EndpointSlice"];
        assert_eq!(
            es["x-kubernetes-group-version-kind"],
            json!([{"group": "discovery.k8s.io", "version": "v1", "kind": "EndpointSlice"}])
        );
        assert_eq!(es["type"], "object");
        assert!(schemas.contains_key("io.k8s.api.discovery.v1.EndpointSliceList"));
        // Every $ref resolves.
        let text = doc.to_string();
        for part in text.split("#/components/schemas/").skip(1) {
            let name = part.split('"').next().unwrap();
            assert!(schemas.contains_key(name), "dangling $ref {name}");
        }
        let rbac = v3_group_version(&reg, "apis/rbac.authorization.k8s.io/v1").unwrap();
        assert!(
            rbac["components"]["schemas"]
                .as_object()
                .unwrap()
                .contains_key("io.k8s.api.rbac.v1.ClusterRole")
        );
        let op = &rbac["paths"]["/apis/rbac.authorization.k8s.io/v1/clusterroles"]["post"];
        assert_eq!(op["operationId"], "createRbacAuthorizationV1ClusterRole");
    }

    #[test]
    fn crd_schema_used() {
        let reg = Registry::with_builtins();
        reg.install_crd(&widget_crd()).unwrap();
        let doc = v3_group_version(&reg, "apis/example.com/v1").unwrap();
        let s = &doc["components"]["schemas"]["com.example.v1.Widget"];
        assert_eq!(
            s["properties"]["spec"]["properties"]["size"]["type"],
            "integer"
        );
        assert_eq!(s["properties"]["kind"]["type"], "string");
        assert_eq!(s["x-kubernetes-group-version-kind"][0]["kind"], "Widget");
        assert!(
            doc["paths"]
                .as_object()
                .unwrap()
                .contains_key("/apis/example.com/v1/widgets/{name}")
        );
    }

    #[test]
    fn v2_stand_ins() {
        let reg = Registry::with_builtins();
        assert_eq!(v2(&reg).unwrap()["swagger"], "2.0");
        assert!(v2_protobuf().is_empty());
    }
}
