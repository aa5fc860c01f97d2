use super::*;
use k8s_pb::apimachinery::pkg::runtime::TypeMeta;

fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let u = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = MAGIC.to_vec();
    out.extend(u.encode_to_vec());
    out
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

#[test]
fn deployment_as_kubectl_create_sends_it() {
    let d = apps::Deployment {
        metadata: Some(meta::ObjectMeta {
            name: s("web"),
            generate_name: s(""),
            labels: [("app".to_string(), "web".to_string())].into(),
            creation_timestamp: Some(meta::Time {
                seconds: Some(-62_135_596_800),
                nanos: Some(0),
            }),
            ..Default::default()
        }),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(2),
            selector: Some(meta::LabelSelector {
                match_labels: [("app".to_string(), "web".to_string())].into(),
                ..Default::default()
            }),
            template: Some(core::PodTemplateSpec {
                metadata: Some(meta::ObjectMeta {
                    labels: [("app".to_string(), "web".to_string())].into(),
                    ..Default::default()
                }),
                spec: Some(core::PodSpec {
                    containers: vec![core::Container {
                        name: s("nginx"),
                        image: s("nginx"),
                        ports: vec![core::ContainerPort {
                            container_port: Some(8080),
                            host_port: Some(0),
                            ..Default::default()
                        }],
                        stdin: Some(false),
                        resources: Some(Default::default()),
                        ..Default::default()
                    }],
                    host_network: Some(false),
                    ..Default::default()
                }),
            }),
            strategy: Some(Default::default()),
            min_ready_seconds: Some(0),
            ..Default::default()
        }),
        status: Some(Default::default()),
    };
    let got = decode(&envelope("apps/v1", "Deployment", d.encode_to_vec())).unwrap();
    assert_eq!(
        got,
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "nginx", "image": "nginx", "ports": [{"containerPort": 8080}]}]}
                }
            }
        })
    );
}

#[test]
fn service_ports_secret_bytes_and_zero_replicas() {
    let svc = core::Service {
        metadata: Some(meta::ObjectMeta {
            name: s("foo"),
            ..Default::default()
        }),
        spec: Some(core::ServiceSpec {
            r#type: s("LoadBalancer"),
            ports: vec![core::ServicePort {
                name: s("80-8080"),
                protocol: s("TCP"),
                port: Some(80),
                target_port: Some(IntOrString {
                    r#type: Some(0),
                    int_val: Some(8080),
                    str_val: s(""),
                }),
                node_port: Some(0),
                ..Default::default()
            }],
            selector: [("app".to_string(), "foo".to_string())].into(),
            ..Default::default()
        }),
        status: Some(Default::default()),
    };
    let got = decode(&envelope("v1", "Service", svc.encode_to_vec())).unwrap();
    assert_eq!(
        got["spec"],
        json!({"type": "LoadBalancer", "selector": {"app": "foo"},
                   "ports": [{"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080}]})
    );
    let sec = core::Secret {
        metadata: Some(meta::ObjectMeta {
            name: s("pw"),
            ..Default::default()
        }),
        data: [("k".to_string(), b"hi".to_vec())].into(),
        ..Default::default()
    };
    let got = decode(&envelope("v1", "Secret", sec.encode_to_vec())).unwrap();
    assert_eq!(got["data"], json!({"k": "aGk="}));
    let rs = apps::ReplicaSet {
        spec: Some(apps::ReplicaSetSpec {
            replicas: Some(0),
            ..Default::default()
        }),
        ..Default::default()
    };
    let got = decode(&envelope("apps/v1", "ReplicaSet", rs.encode_to_vec())).unwrap();
    assert_eq!(
        got["spec"]["replicas"],
        json!(0),
        "a set pointer keeps zero"
    );
}

#[test]
fn unknown_kinds_and_unconverted_fields_are_refused() {
    let e = decode(&envelope("batch/v1", "Job", Vec::new())).unwrap_err();
    assert!(matches!(e, PbError::UnknownKind { .. }), "{e}");
    assert_eq!(decode(b"{}").unwrap_err(), PbError::NoEnvelope);
    let pod = core::Pod {
        spec: Some(core::PodSpec {
            containers: vec![core::Container {
                name: s("c"),
                liveness_probe: Some(core::Probe {
                    period_seconds: Some(3),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let e = decode(&envelope("v1", "Pod", pod.encode_to_vec())).unwrap_err();
    assert_eq!(
        e,
        PbError::Unsupported("spec.containers[0].livenessProbe".into())
    );
}
