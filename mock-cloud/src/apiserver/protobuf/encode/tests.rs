use super::*;
use serde_json::json;

/// The message inside an encoded body, and the type its envelope names.
fn open<M: Message + Default>(body: &[u8]) -> (M, String, String) {
    let raw = body.strip_prefix(MAGIC).expect("k8s\\0 magic");
    let u = Unknown::decode(raw).expect("runtime.Unknown");
    let tm = u.type_meta.unwrap_or_default();
    let m = M::decode(&u.raw.unwrap_or_default()[..]).expect("message");
    (
        m,
        tm.api_version.unwrap_or_default(),
        tm.kind.unwrap_or_default(),
    )
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "uid": "u-1", "resourceVersion": "42",
                     "generation": 3, "creationTimestamp": "2024-05-01T10:00:00Z",
                     "labels": {"app": "web"}, "annotations": {"deployment.kubernetes.io/revision": "2"},
                     "managedFields": [{"manager": "kubectl", "operation": "Update", "apiVersion": "apps/v1",
                                        "time": "2024-05-01T10:00:00Z", "fieldsType": "FieldsV1",
                                        "fieldsV1": {"f:spec": {"f:replicas": {}}}}]},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "example/web:1",
                                         "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                                         "resources": {"limits": {"cpu": "500m"}}}]}
            },
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600
        },
        "status": {
            "observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2,
            "availableReplicas": 2,
            "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                            "message": "Deployment has minimum availability.",
                            "lastUpdateTime": "2024-05-01T10:00:05Z",
                            "lastTransitionTime": "2024-05-01T10:00:05Z"}]
        }
    })
}

#[test]
fn a_deployment_reads_back_as_kubectl_sees_it() {
    let body = encode(&deployment()).unwrap();
    let (d, av, kind): (apps::Deployment, _, _) = open(&body);
    assert_eq!((av.as_str(), kind.as_str()), ("apps/v1", "Deployment"));
    let m = d.metadata.unwrap();
    assert_eq!(m.name.as_deref(), Some("web"));
    assert_eq!(m.generation, Some(3));
    assert_eq!(m.creation_timestamp.unwrap().seconds, Some(1_714_557_600));
    let raw = m.managed_fields[0].fields_v1.clone().unwrap().raw.unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&raw).unwrap(),
        json!({"f:spec": {"f:replicas": {}}})
    );
    let spec = d.spec.unwrap();
    let ru = spec.strategy.unwrap().rolling_update.unwrap();
    assert_eq!(ru.max_surge.unwrap().str_val.as_deref(), Some("25%"));
    assert_eq!(ru.max_unavailable.unwrap().int_val, Some(1));
    let c = &spec.template.unwrap().spec.unwrap().containers[0];
    assert_eq!(c.ports[0].container_port, Some(8080));
    let cpu = &c.resources.as_ref().unwrap().limits["cpu"];
    assert_eq!(cpu.string.as_deref(), Some("500m"));
    let st = d.status.unwrap();
    assert_eq!((st.replicas, st.available_replicas), (Some(2), Some(2)));
    assert_eq!(
        st.conditions[0].reason.as_deref(),
        Some("MinimumReplicasAvailable")
    );
}

#[test]
fn spec_and_metadata_survive_a_round_trip_through_the_request_decoder() {
    let mut want = deployment();
    // The request decoder refuses managedFields (clients never send them).
    want["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("managedFields");
    let body = encode(&want).unwrap();
    let got = super::super::decode(&body).unwrap();
    want.as_object_mut().unwrap().remove("status");
    assert_eq!(got, want);
}

#[test]
fn lists_statuses_and_pods_with_status() {
    let list = json!({"apiVersion": "v1", "kind": "PodList",
        "metadata": {"resourceVersion": "9", "continue": "abc"},
        "items": [{"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]},
                   "status": {"phase": "Running", "podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}],
                              "hostIPs": [{"ip": "192.0.2.1"}], "startTime": "2024-05-01T10:00:00Z",
                              "conditions": [{"type": "Ready", "status": "True", "lastProbeTime": null,
                                              "lastTransitionTime": "2024-05-01T10:00:01Z"}],
                              "containerStatuses": [{"name": "c", "ready": true, "restartCount": 0,
                                  "image": "i", "imageID": "mock://x", "containerID": "mock://y",
                                  "started": true, "lastState": {},
                                  "state": {"running": {"startedAt": "2024-05-01T10:00:00Z"}}}]}}]});
    let (l, _, kind): (core::PodList, _, _) = open(&encode(&list).unwrap());
    assert_eq!(kind, "PodList");
    assert_eq!(l.metadata.unwrap().r#continue.as_deref(), Some("abc"));
    let st = l.items[0].status.clone().unwrap();
    assert_eq!(st.pod_ips[0].ip.as_deref(), Some("10.0.0.5"));
    assert_eq!(st.host_ips[0].ip.as_deref(), Some("192.0.2.1"));
    let cs = &st.container_statuses[0];
    assert_eq!(cs.image_id.as_deref(), Some("mock://x"));
    assert!(cs.state.clone().unwrap().running.is_some());

    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "deployments.apps \"x\" not found", "reason": "NotFound", "code": 404,
        "details": {"name": "x", "group": "apps", "kind": "deployments",
                    "causes": [{"reason": "FieldValueInvalid", "field": "spec.replicas", "message": "m"}]}});
    let (s, _, kind): (meta::Status, _, _) = open(&encode(&status).unwrap());
    assert_eq!(kind, "Status");
    assert_eq!((s.code, s.reason.as_deref()), (Some(404), Some("NotFound")));
    let d = s.details.unwrap();
    assert_eq!(d.causes[0].field.as_deref(), Some("spec.replicas"));
}

#[test]
fn what_has_no_protobuf_form_is_an_error_never_dropped() {
    let cr = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}});
    assert!(matches!(encode(&cr), Err(EncodeError::Kind(_))));
    assert!(!has_encoding("example.com/v1", "Widget"));
    assert!(has_encoding("apps/v1", "ReplicaSetList"));
    let mut d = deployment();
    d["spec"]["template"]["spec"]["containers"][0]["madeUp"] = json!(1);
    assert_eq!(
        encode(&d).unwrap_err(),
        bad(
            "spec.template.spec.containers[0].madeUp",
            "no such field in the protobuf message"
        )
    );
    let mut d = deployment();
    d["spec"]["replicas"] = json!("two");
    assert!(matches!(encode(&d), Err(EncodeError::Field { path, .. }) if path == "spec.replicas"));
}

#[test]
fn inlined_messages_take_their_keys_from_the_outer_object() {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"volumes": [{"name": "v", "emptyDir": {}}],
                 "containers": [{"name": "c", "readinessProbe": {"periodSeconds": 3,
                                 "tcpSocket": {"port": "http"}}}]}});
    let (p, _, _): (core::Pod, _, _) = open(&encode(&pod).unwrap());
    let spec = p.spec.unwrap();
    assert!(
        spec.volumes[0]
            .volume_source
            .as_ref()
            .unwrap()
            .empty_dir
            .is_some()
    );
    let probe = spec.containers[0].readiness_probe.clone().unwrap();
    assert_eq!(probe.period_seconds, Some(3));
    let port = probe.handler.unwrap().tcp_socket.unwrap().port.unwrap();
    assert_eq!(port.str_val.as_deref(), Some("http"));
}

#[test]
fn watch_frames_are_length_prefixed_watch_events() {
    let ev = json!({"type": "ADDED", "object": {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}}});
    let frame = watch_frame(&ev).unwrap();
    let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
    assert_eq!(len, frame.len() - 4);
    let we = meta::WatchEvent::decode(&frame[4..]).unwrap();
    assert_eq!(we.r#type.as_deref(), Some("ADDED"));
    let (ns, _, kind): (core::Namespace, _, _) = open(&we.object.unwrap().raw.unwrap());
    assert_eq!(kind, "Namespace");
    assert_eq!(ns.metadata.unwrap().name.as_deref(), Some("n"));
}

#[test]
fn json_keys_match_field_names_ignoring_case_and_underscores() {
    assert!(same_name("clusterIP", "cluster_ip"));
    assert!(same_name("podIPs", "pod_i_ps"));
    assert!(same_name("nonResourceURLs", "non_resource_ur_ls"));
    assert!(same_name("type", "r#type"));
    assert!(same_name("Port", "port"));
    assert!(!same_name("podIP", "pod_i_ps"));
    assert!(!same_name("ports", "port"));
    assert!(!same_name("", "port"));
}
