use serde_json::{Value, json};

use super::*;

const NOW: &str = "2024-05-01T10:00:00Z";
const LATER: &str = "2024-05-01T11:00:00Z";

fn smp(group: &str, kind: &str, live: Value, patch: Value) -> Result<Value, PatchError> {
    apply_patch(
        PatchType::StrategicMerge,
        group,
        kind,
        &live,
        patch.to_string().as_bytes(),
    )
}

fn svc(ports: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "dns"}, "spec": {"ports": ports}})
}

fn ssa(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    now: &str,
) -> Result<Value, PatchError> {
    server_side_apply(
        "",
        "ConfigMap",
        "v1",
        live,
        applied.to_string().as_bytes(),
        manager,
        force,
        now,
    )
}

fn cm(data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "ns"}, "data": data})
}

fn entry(manager: &str, op: &str, time: &str, fields: Value) -> Value {
    json!({"manager": manager, "operation": op, "apiVersion": "v1", "time": time,
           "fieldsType": "FieldsV1", "fieldsV1": fields})
}

fn managed(obj: &Value) -> Value {
    obj["metadata"]["managedFields"].clone()
}

fn strip_managed(mut obj: Value) -> Value {
    if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("managedFields");
    }
    obj
}

#[test]
fn content_types() {
    let table = [
        ("application/json-patch+json", Some(PatchType::Json)),
        (
            "application/merge-patch+json; charset=utf-8",
            Some(PatchType::Merge),
        ),
        (
            "application/strategic-merge-patch+json",
            Some(PatchType::StrategicMerge),
        ),
        ("application/apply-patch+yaml", Some(PatchType::Apply)),
        ("application/apply-patch+json", Some(PatchType::Apply)),
        ("application/apply-patch+cbor", None),
        ("application/json", None),
    ];
    for (ct, want) in table {
        assert_eq!(PatchType::from_content_type(ct), want, "{ct}");
    }
}

#[test]
fn merge_patch_null_deletes_and_arrays_replace() {
    let live = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"list": [1, 2, 3]}});
    let patch = json!({"metadata": {"labels": {"a": null, "c": "3"}}, "spec": {"list": [9], "new": {"x": null, "y": 1}}});
    let got = apply_patch(
        PatchType::Merge,
        "",
        "ConfigMap",
        &live,
        patch.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(
        got,
        json!({"metadata": {"labels": {"b": "2", "c": "3"}}, "spec": {"list": [9], "new": {"y": 1}}})
    );
}

#[test]
fn json_patch_all_ops() {
    let live = json!({"a": 1, "b": {"c": [1, 2]}, "d": "x"});
    let ops = json!([
        {"op": "test", "path": "/a", "value": 1},
        {"op": "add", "path": "/b/c/-", "value": 3},
        {"op": "replace", "path": "/a", "value": 2},
        {"op": "remove", "path": "/d"},
        {"op": "copy", "from": "/b/c", "path": "/e"},
        {"op": "move", "from": "/a", "path": "/f"}
    ]);
    let got = apply_patch(
        PatchType::Json,
        "",
        "ConfigMap",
        &live,
        ops.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(got, json!({"b": {"c": [1, 2, 3]}, "e": [1, 2, 3], "f": 2}));
}

#[test]
fn json_patch_failures() {
    let live = json!({"a": 1});
    let table = [
        (json!([{"op": "test", "path": "/a", "value": 2}]), 422),
        (json!([{"op": "remove", "path": "/missing"}]), 422),
        (json!([{"op": "frobnicate", "path": "/a"}]), 400),
        (json!({"op": "add"}), 400),
        (json!([{"op": "replace", "path": "", "value": 5}]), 400),
    ];
    for (ops, status) in table {
        let err = apply_patch(
            PatchType::Json,
            "",
            "ConfigMap",
            &live,
            ops.to_string().as_bytes(),
        )
        .unwrap_err();
        assert!(matches!(err, PatchError::BadRequest(_)), "{ops}");
        assert_eq!(err.status_code(), status, "{ops}: {err}");
    }
}

#[test]
fn smp_service_ports_keyed_by_port_and_protocol() {
    let live = svc(json!([
        {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
        {"name": "http", "port": 80, "protocol": "TCP"}
    ]));
    let patch = json!({"spec": {"ports": [
        {"name": "dns-udp", "port": 53, "protocol": "UDP", "targetPort": 53},
        {"port": 53, "protocol": "TCP", "targetPort": 5353},
        {"port": 80, "name": "web"}
    ]}});
    let got = smp("", "Service", live, patch).unwrap();
    assert_eq!(
        got,
        svc(json!([
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 5353},
            {"name": "web", "port": 80, "protocol": "TCP"},
            {"name": "dns-udp", "port": 53, "protocol": "UDP", "targetPort": 53}
        ]))
    );
}

#[test]
fn smp_patch_delete_on_list_item() {
    let live = svc(json!([
        {"port": 53, "protocol": "TCP"},
        {"port": 53, "protocol": "UDP"}
    ]));
    let patch = json!({"spec": {"ports": [{"$patch": "delete", "port": 53, "protocol": "UDP"}]}});
    let got = smp("", "Service", live, patch).unwrap();
    assert_eq!(got, svc(json!([{"port": 53, "protocol": "TCP"}])));
}

#[test]
fn smp_patch_replace_and_delete_on_maps() {
    let live = json!({"metadata": {"labels": {"a": "1"}, "annotations": {"x": "1"}}, "spec": {"selector": {"a": "1", "b": "2"}}});
    let patch = json!({"metadata": {"annotations": {"$patch": "delete"}},
                       "spec": {"selector": {"$patch": "replace", "c": "3"}}});
    let got = smp("", "Service", live, patch).unwrap();
    assert_eq!(
        got,
        json!({"metadata": {"labels": {"a": "1"}}, "spec": {"selector": {"c": "3"}}})
    );
}

#[test]
fn smp_list_replace_marker() {
    let live = svc(json!([{"port": 1}, {"port": 2}]));
    let patch = json!({"spec": {"ports": [{"$patch": "replace"}, {"port": 3}]}});
    assert_eq!(
        smp("", "Service", live, patch).unwrap(),
        svc(json!([{"port": 3}]))
    );
}

#[test]
fn smp_delete_from_primitive_list_finalizers() {
    let live = json!({"metadata": {"finalizers": ["a", "b", "c"]}});
    let patch =
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"], "finalizers": ["d"]}});
    let got = smp("", "Service", live, patch).unwrap();
    assert_eq!(got, json!({"metadata": {"finalizers": ["a", "c", "d"]}}));
}

#[test]
fn smp_finalizers_merge_as_set() {
    let live = json!({"metadata": {"finalizers": ["a", "b"]}});
    let patch = json!({"metadata": {"finalizers": ["b", "c"]}});
    let got = smp("", "ConfigMap", live, patch).unwrap();
    assert_eq!(got, json!({"metadata": {"finalizers": ["a", "b", "c"]}}));
}

#[test]
fn smp_set_element_order_honoured_and_stripped() {
    let live = json!({"kind": "Pod", "spec": {"containers": [
        {"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}, {"name": "c", "image": "c:1"}
    ]}});
    let patch = json!({"spec": {
        "$setElementOrder/containers": [{"name": "c"}, {"name": "a"}],
        "containers": [{"name": "c", "image": "c:2"}]
    }});
    let got = smp("", "Pod", live, patch).unwrap();
    assert_eq!(
        got,
        json!({"kind": "Pod", "spec": {"containers": [
            {"name": "c", "image": "c:2"}, {"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}
        ]}})
    );
    // A directive for a list that does not exist yet must not leak into the object.
    let patch = json!({"metadata": {"$setElementOrder/finalizers": ["x"], "finalizers": ["x"]}});
    let got = smp("", "Pod", json!({}), patch).unwrap();
    assert_eq!(got, json!({"metadata": {"finalizers": ["x"]}}));
}

#[test]
fn smp_retain_keys() {
    let live = json!({"kind": "Deployment", "spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
    let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
    let got = smp("apps", "Deployment", live, patch).unwrap();
    assert_eq!(
        got,
        json!({"kind": "Deployment", "spec": {"strategy": {"type": "Recreate"}}})
    );
}

#[test]
fn smp_conditions_merge_by_type() {
    let live = json!({"status": {"conditions": [
        {"type": "Ready", "status": "False"}, {"type": "Scheduled", "status": "True"}
    ]}});
    let patch = json!({"status": {"conditions": [
        {"type": "Ready", "status": "True", "reason": "Up"}, {"type": "Initialized", "status": "True"}
    ]}});
    let got = smp("", "Node", live, patch).unwrap();
    assert_eq!(
        got,
        json!({"status": {"conditions": [
            {"type": "Ready", "status": "True", "reason": "Up"},
            {"type": "Scheduled", "status": "True"},
            {"type": "Initialized", "status": "True"}
        ]}})
    );
}

#[test]
fn smp_deployment_template_follows_pod_rules() {
    let live = json!({"spec": {"template": {"spec": {
        "containers": [{"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}]}],
        "tolerations": [{"key": "x"}]
    }}}});
    let patch = json!({"spec": {"template": {"spec": {
        "containers": [{"name": "app", "env": [{"name": "B", "value": "2"}, {"name": "A", "$patch": "delete"}]}],
        "tolerations": [{"key": "y"}]
    }}}});
    let got = smp("apps", "Deployment", live, patch).unwrap();
    assert_eq!(
        got,
        json!({"spec": {"template": {"spec": {
            "containers": [{"name": "app", "image": "app:1", "env": [{"name": "B", "value": "2"}]}],
            "tolerations": [{"key": "y"}]
        }}}})
    );
}

#[test]
fn smp_missing_merge_key_is_bad_request() {
    let err = smp(
        "",
        "Service",
        svc(json!([])),
        json!({"spec": {"ports": [{"name": "x"}]}}),
    )
    .unwrap_err();
    assert!(matches!(err, PatchError::BadRequest(_)), "{err}");
}

#[test]
fn smp_custom_resource_is_unsupported() {
    let err = smp("example.com", "Widget", json!({}), json!({"spec": {}})).unwrap_err();
    assert!(matches!(err, PatchError::UnsupportedMediaType(_)), "{err}");
    assert_eq!(err.status_code(), 415);
}

#[test]
fn ssa_create_records_managed_fields() {
    let applied = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "dns", "labels": {"app": "dns"}, "finalizers": ["f"]},
        "spec": {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53}]}});
    let got = server_side_apply(
        "",
        "Service",
        "v1",
        None,
        applied.to_string().as_bytes(),
        "mgr",
        false,
        NOW,
    )
    .unwrap();
    assert_eq!(
        managed(&got),
        json!([entry(
            "mgr",
            "Apply",
            NOW,
            json!({
                "f:metadata": {"f:finalizers": {"v:\"f\"": {}}, "f:labels": {"f:app": {}}},
                "f:spec": {"f:ports": {
                    "k:{\"port\":53,\"protocol\":\"TCP\"}": {".": {}, "f:port": {}},
                    "k:{\"port\":53,\"protocol\":\"UDP\"}": {".": {}, "f:port": {}, "f:protocol": {}}
                }}
            })
        )])
    );
    assert_eq!(strip_managed(got), applied);
}

#[test]
fn ssa_reapply_removes_dropped_fields() {
    let first = ssa(None, &cm(json!({"a": "1", "b": "2"})), "mgr", false, NOW).unwrap();
    let second = ssa(Some(&first), &cm(json!({"a": "1"})), "mgr", false, LATER).unwrap();
    assert_eq!(strip_managed(second.clone()), cm(json!({"a": "1"})));
    assert_eq!(
        managed(&second),
        json!([entry("mgr", "Apply", LATER, json!({"f:data": {"f:a": {}}}))])
    );
}

#[test]
fn ssa_shared_field_survives_one_owner_dropping_it() {
    let one = ssa(
        None,
        &cm(json!({"a": "1", "shared": "s"})),
        "one",
        false,
        NOW,
    )
    .unwrap();
    let two = ssa(Some(&one), &cm(json!({"shared": "s"})), "two", false, NOW).unwrap();
    let dropped = ssa(Some(&two), &cm(json!({"a": "1"})), "one", false, LATER).unwrap();
    assert_eq!(
        strip_managed(dropped.clone()),
        cm(json!({"a": "1", "shared": "s"}))
    );
    assert_eq!(
        managed(&dropped),
        json!([
            entry("one", "Apply", LATER, json!({"f:data": {"f:a": {}}})),
            entry("two", "Apply", NOW, json!({"f:data": {"f:shared": {}}}))
        ])
    );
}

#[test]
fn ssa_conflict_without_force() {
    let one = ssa(None, &cm(json!({"x": "1", "y": "1"})), "one", false, NOW).unwrap();
    let err = ssa(Some(&one), &cm(json!({"x": "2"})), "other", false, NOW).unwrap_err();
    let PatchError::Conflict(msg) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        msg,
        "Apply failed with 1 conflict: conflict with \"one\": .data.x"
    );
    let err = ssa(
        Some(&one),
        &cm(json!({"x": "2", "y": "2"})),
        "other",
        false,
        NOW,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Apply failed with 2 conflicts: conflicts with \"one\":\n- .data.x\n- .data.y"
    );
    // Same value is no conflict: ownership is shared.
    assert!(ssa(Some(&one), &cm(json!({"x": "1"})), "other", false, NOW).is_ok());
}

#[test]
fn ssa_force_takes_ownership() {
    let one = ssa(None, &cm(json!({"x": "1", "y": "1"})), "one", false, NOW).unwrap();
    let forced = ssa(Some(&one), &cm(json!({"x": "2"})), "other", true, LATER).unwrap();
    assert_eq!(
        strip_managed(forced.clone()),
        cm(json!({"x": "2", "y": "1"}))
    );
    assert_eq!(
        managed(&forced),
        json!([
            entry("one", "Apply", NOW, json!({"f:data": {"f:y": {}}})),
            entry("other", "Apply", LATER, json!({"f:data": {"f:x": {}}}))
        ])
    );
}

#[test]
fn ssa_keyed_lists_merge_and_drop_items() {
    let applied = |ports: Value| json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": ports}});
    let apply = |live: Option<&Value>, cfg: Value, m: &str| {
        server_side_apply(
            "",
            "Service",
            "v1",
            live,
            cfg.to_string().as_bytes(),
            m,
            false,
            NOW,
        )
        .unwrap()
    };
    let a = apply(
        None,
        applied(json!([{"port": 80, "name": "http"}, {"port": 443}])),
        "a",
    );
    let b = apply(
        Some(&a),
        applied(json!([{"port": 53, "protocol": "UDP"}])),
        "b",
    );
    let a2 = apply(
        Some(&b),
        applied(json!([{"port": 80, "name": "http"}])),
        "a",
    );
    assert_eq!(
        strip_managed(a2),
        applied(json!([{"port": 80, "name": "http"}, {"port": 53, "protocol": "UDP"}]))
    );
}

#[test]
fn ssa_rejects_wrong_kind_and_non_json() {
    let wrong = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "c"}});
    assert!(matches!(
        ssa(None, &wrong, "m", false, NOW),
        Err(PatchError::BadRequest(_))
    ));
    let yaml = b"apiVersion: v1\nkind: ConfigMap\n";
    let err = server_side_apply("", "ConfigMap", "v1", None, yaml, "m", false, NOW).unwrap_err();
    assert!(matches!(err, PatchError::BadRequest(_)));
}

#[test]
fn record_update_tracks_changed_fields() {
    let applied = ssa(None, &cm(json!({"a": "1", "b": "1"})), "apply", false, NOW).unwrap();
    let mut edited = applied.clone();
    edited["data"]["a"] = json!("2");
    edited["data"]["c"] = json!("3");
    let got = record_update("v1", Some(&applied), edited, "kubectl-edit", LATER);
    assert_eq!(
        managed(&got),
        json!([
            entry("apply", "Apply", NOW, json!({"f:data": {"f:b": {}}})),
            entry(
                "kubectl-edit",
                "Update",
                LATER,
                json!({"f:data": {"f:a": {}, "f:c": {}}})
            )
        ])
    );
    // Update managers never block apply; the applier takes the field back.
    let reapplied = ssa(
        Some(&got),
        &cm(json!({"a": "1", "b": "1"})),
        "apply",
        false,
        "t3",
    )
    .unwrap();
    assert_eq!(
        strip_managed(reapplied.clone()),
        cm(json!({"a": "1", "b": "1", "c": "3"}))
    );
    assert_eq!(
        managed(&reapplied),
        json!([
            entry(
                "apply",
                "Apply",
                "t3",
                json!({"f:data": {"f:a": {}, "f:b": {}}})
            ),
            entry(
                "kubectl-edit",
                "Update",
                LATER,
                json!({"f:data": {"f:c": {}}})
            )
        ])
    );
}
