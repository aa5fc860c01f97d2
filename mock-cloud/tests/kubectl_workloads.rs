//! The kubectl people actually type, against `mock-cloud serve` (and `berth controller` for
//! load balancer addresses): typed generators (protobuf bodies), Deployments and ReplicaSets,
//! scale, rollouts, logs, and garbage collection.

mod common;

use common::{Served, wait_for};
use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use prost::Message;
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `berth` next to this test's binaries, built when missing.
fn berth_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let berth = dir.join("berth");
    if !berth.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "-p", "berth"])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status()
            .expect("run cargo build -p berth")
            .success();
        assert!(ok, "cargo build -p berth failed");
    }
    berth
}

/// A `berth controller` with the http provider serving Services without a class.
struct Berth(Child);

impl Berth {
    fn start(s: &Served) -> Berth {
        let log = std::fs::File::create(s.dir.join("berth.log")).expect("log file");
        let child = Command::new(berth_binary())
            .arg("controller")
            .arg("--kubeconfig")
            .arg(&s.kubeconfig)
            .args(["--provider", "http", "--http-endpoint"])
            .arg(s.lb_url.as_deref().expect("started with --lb-api-listen"))
            .args(["--cluster-name", "workloads", "--default-class"])
            .args(["--leader-elect", "false", "--metrics-listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start berth controller");
        Berth(child)
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP GET; the answering pod's name.
fn http_get(addr: &str) -> Option<String> {
    let mut s =
        std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let body = buf.split("\r\n\r\n").nth(1)?.trim().to_string();
    (!body.is_empty()).then_some(body)
}

fn pod_names(s: &Served, selector: &str) -> BTreeSet<String> {
    s.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        selector,
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ])
    .split_whitespace()
    .map(str::to_string)
    .collect()
}

/// Sends requests until every pod in `want` has answered (bounded), returning who answered.
fn answers_from_all(addr: &str, want: &BTreeSet<String>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    wait_for(
        &format!("answers from {want:?} through {addr}"),
        Duration::from_secs(60),
        || {
            for _ in 0..20 {
                if let Some(name) = http_get(addr) {
                    seen.insert(name);
                }
            }
            want.is_subset(&seen).then_some(())
        },
    );
    seen
}

fn json(s: &Served, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    serde_json::from_str(&s.kubectl_ok(&a)).expect("kubectl printed JSON")
}

#[test]
fn deployment_flow_through_a_load_balancer() {
    let s = Served::start(3, &["--lb-api-listen", "127.0.0.1:0"]);
    let _berth = Berth::start(&s);
    s.kubectl_ok(&[
        "create",
        "deployment",
        "web",
        "--image=example/web:1",
        "--replicas=2",
        "--port=8080",
    ]);
    s.kubectl_ok(&[
        "expose",
        "deployment",
        "web",
        "--type=LoadBalancer",
        "--port=80",
        "--target-port=8080",
    ]);
    let ip = wait_for("an EXTERNAL-IP", Duration::from_secs(30), || {
        let ip = s.kubectl_ok(&[
            "get",
            "svc",
            "web",
            "-o",
            "jsonpath={.status.loadBalancer.ingress[0].ip}",
        ]);
        (!ip.trim().is_empty()).then(|| ip.trim().to_string())
    });
    let addr = format!("{ip}:80");
    s.kubectl_ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    let two = pod_names(&s, "app=web");
    assert_eq!(two.len(), 2, "{two:?}");
    answers_from_all(&addr, &two);

    let out = s.kubectl_ok(&["scale", "deployment", "web", "--replicas=4"]);
    assert!(out.contains("deployment.apps/web scaled"), "{out}");
    s.kubectl_ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    let four = pod_names(&s, "app=web");
    assert_eq!(four.len(), 4, "{four:?}");
    assert!(two.is_subset(&four), "scaling up keeps the running pods");
    answers_from_all(&addr, &four);

    s.kubectl_ok(&["set", "image", "deployment/web", "*=example/web:2"]);
    let out = s.kubectl_ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let rolled = pod_names(&s, "app=web");
    assert_eq!(rolled.len(), 4, "{rolled:?}");
    assert!(rolled.is_disjoint(&four), "every pod replaced: {rolled:?}");
    answers_from_all(&addr, &rolled);
    let rs = json(&s, &["get", "rs", "-l", "app=web"]);
    let replicas: BTreeSet<(String, i64)> = rs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["spec"]["template"]["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                r["spec"]["replicas"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        replicas,
        BTreeSet::from([("example/web:1".into(), 0), ("example/web:2".into(), 4)]),
        "the old ReplicaSet is scaled to 0"
    );

    let out = s.kubectl_ok(&["rollout", "undo", "deployment/web"]);
    assert!(out.contains("rolled back"), "{out}");
    s.kubectl_ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    let rs = json(&s, &["get", "rs", "-l", "app=web"]);
    let items = rs["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "undo reuses the previous ReplicaSet");
    for r in items {
        let image = r["spec"]["template"]["spec"]["containers"][0]["image"].clone();
        let want = if image == "example/web:1" { 4 } else { 0 };
        assert_eq!(r["spec"]["replicas"], want, "{r}");
    }
    let image = s.kubectl_ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image} {.metadata.annotations.deployment\\.kubernetes\\.io/revision}",
    ]);
    assert_eq!(image, "example/web:1 3");
    let back = pod_names(&s, "app=web");
    answers_from_all(&addr, &back);

    // A restart replaces every pod with the same image: a new ReplicaSet (the template
    // gains kubectl's restartedAt annotation), revision 4, the others scaled to 0.
    let out = s.kubectl_ok(&["rollout", "restart", "deployment/web"]);
    assert!(out.contains("restarted"), "{out}");
    let out = s.kubectl_ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let restarted = pod_names(&s, "app=web");
    assert_eq!(restarted.len(), 4, "{restarted:?}");
    assert!(
        restarted.is_disjoint(&back),
        "every pod replaced: {restarted:?}"
    );
    answers_from_all(&addr, &restarted);
    let rs = json(&s, &["get", "rs", "-l", "app=web"]);
    let mut sizes: Vec<(bool, i64)> = rs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["spec"]["template"]["metadata"]["annotations"]
                    ["kubectl.kubernetes.io/restartedAt"]
                    .is_string(),
                r["spec"]["replicas"].as_i64().unwrap(),
            )
        })
        .collect();
    sizes.sort();
    assert_eq!(sizes, vec![(false, 0), (false, 0), (true, 4)], "{rs}");
    let revision = s.kubectl_ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.metadata.annotations.deployment\\.kubernetes\\.io/revision}",
    ]);
    assert_eq!(revision, "4");

    let out = s.kubectl_ok(&["delete", "deployment", "web"]);
    assert!(out.contains("deleted"), "{out}");
    wait_for(
        "ReplicaSets and pods to be garbage collected",
        Duration::from_secs(30),
        || {
            let rs = s.kubectl_ok(&["get", "rs", "-o", "name"]);
            let pods = s.kubectl_ok(&["get", "pods", "-o", "name"]);
            (rs.trim().is_empty() && pods.trim().is_empty()).then_some(())
        },
    );
}

#[test]
fn typed_generators_work() {
    let s = Served::start(1, &[]);
    let ok = |args: &[&str], want: &str| {
        let out = s.kubectl_ok(args);
        assert!(out.contains(want), "{args:?}: {out}");
    };
    ok(
        &[
            "create",
            "deployment",
            "web",
            "--image=nginx",
            "--port=8080",
        ],
        "deployment.apps/web created",
    );
    ok(
        &["create", "service", "loadbalancer", "foo", "--tcp=80:8080"],
        "service/foo created",
    );
    ok(
        &["create", "service", "clusterip", "bar", "--tcp=5678:8080"],
        "service/bar created",
    );
    ok(
        &["create", "configmap", "conf", "--from-literal=a=1"],
        "configmap/conf created",
    );
    ok(
        &["create", "secret", "generic", "pw", "--from-literal=k=hi"],
        "secret/pw created",
    );
    ok(&["create", "namespace", "team"], "namespace/team created");
    ok(
        &[
            "expose",
            "deployment",
            "web",
            "--port=80",
            "--target-port=8080",
        ],
        "service/web exposed",
    );
    ok(
        &["scale", "deployment", "web", "--replicas=3"],
        "deployment.apps/web scaled",
    );
    ok(
        &["label", "deployment", "web", "tier=front"],
        "deployment.apps/web labeled",
    );
    ok(
        &["annotate", "deployment", "web", "note=hello"],
        "deployment.apps/web annotated",
    );

    let foo = json(&s, &["get", "svc", "foo"]);
    assert_eq!(foo["spec"]["type"], "LoadBalancer");
    assert_eq!(foo["spec"]["ports"][0]["port"], 80);
    assert_eq!(foo["spec"]["ports"][0]["targetPort"], 8080);
    assert_eq!(foo["spec"]["selector"]["app"], "foo");
    let web = json(&s, &["get", "svc", "web"]);
    assert_eq!(web["spec"]["selector"]["app"], "web");
    assert_eq!(web["spec"]["ports"][0]["targetPort"], 8080);
    assert_eq!(
        s.kubectl_ok(&["get", "cm", "conf", "-o", "jsonpath={.data.a}"]),
        "1"
    );
    assert_eq!(
        s.kubectl_ok(&["get", "secret", "pw", "-o", "jsonpath={.data.k}"]),
        "aGk="
    );
    let d = json(&s, &["get", "deploy", "web"]);
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["metadata"]["labels"]["tier"], "front");
    assert_eq!(d["metadata"]["annotations"]["note"], "hello");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"],
        8080
    );
    s.kubectl_ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    assert_eq!(pod_names(&s, "app=web").len(), 3);
}

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
    let mut out = b"k8s\0".to_vec();
    out.extend(u.encode_to_vec());
    out
}

fn writes(s: &Served) -> u64 {
    let (code, body) = s.raw("GET", "/mock-cloud/v1/stats", "application/json", b"");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["writes"]
        .as_u64()
        .unwrap()
}

#[test]
fn protobuf_bodies_that_cannot_be_decoded_get_415_and_write_nothing() {
    let s = Served::start(1, &[]);
    const PB: &str = "application/vnd.kubernetes.protobuf";
    let before = writes(&s);
    // A kind mock-cloud does not decode, sent where a Deployment is expected.
    let job = envelope("batch/v1", "Job", vec![0x0a, 0x00]);
    let (code, body) = s.raw(
        "POST",
        "/apis/apps/v1/namespaces/default/deployments",
        PB,
        &job,
    );
    assert_eq!(code, 415, "{body}");
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "UnsupportedMediaType");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("accepted media types include: application/json, application/yaml"),
        "{body}"
    );
    // A field mock-cloud does not convert is refused, not dropped.
    let d = apps::Deployment {
        metadata: Some(meta::ObjectMeta {
            name: Some("probed".into()),
            ..Default::default()
        }),
        spec: Some(apps::DeploymentSpec {
            selector: Some(meta::LabelSelector {
                match_labels: [("app".to_string(), "p".to_string())].into(),
                ..Default::default()
            }),
            template: Some(core::PodTemplateSpec {
                metadata: Some(meta::ObjectMeta {
                    labels: [("app".to_string(), "p".to_string())].into(),
                    ..Default::default()
                }),
                spec: Some(core::PodSpec {
                    containers: vec![core::Container {
                        name: Some("c".into()),
                        readiness_probe: Some(core::Probe {
                            period_seconds: Some(5),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
        status: None,
    };
    let bytes = envelope("apps/v1", "Deployment", d.encode_to_vec());
    let (code, body) = s.raw(
        "POST",
        "/apis/apps/v1/namespaces/default/deployments",
        PB,
        &bytes,
    );
    assert_eq!(code, 415, "{body}");
    assert!(body.contains("readinessProbe"), "{body}");
    assert_eq!(writes(&s), before, "nothing was written");
    let out = s.kubectl(&["get", "deploy", "probed"]);
    assert!(!out.status.success());
}

#[test]
fn deployment_and_replicaset_status_and_columns_match_upstream() {
    let s = Served::start(2, &[]);
    s.kubectl_ok(&[
        "create",
        "deployment",
        "web",
        "--image=example/web:1",
        "--replicas=3",
        "--port=8080",
    ]);
    s.kubectl_ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    let d = json(&s, &["get", "deploy", "web"]);
    let st = &d["status"];
    assert_eq!(st["observedGeneration"], d["metadata"]["generation"]);
    for f in [
        "replicas",
        "updatedReplicas",
        "readyReplicas",
        "availableReplicas",
    ] {
        assert_eq!(st[f], 3, "status.{f}: {st}");
    }
    assert!(st.get("unavailableReplicas").is_none(), "{st}");
    let conds = st["conditions"].as_array().unwrap();
    let cond = |t: &str| conds.iter().find(|c| c["type"] == t).unwrap().clone();
    let available = cond("Available");
    assert_eq!(available["status"], "True");
    assert_eq!(available["reason"], "MinimumReplicasAvailable");
    assert_eq!(available["message"], "Deployment has minimum availability.");
    let progressing = cond("Progressing");
    assert_eq!(progressing["status"], "True");
    assert_eq!(progressing["reason"], "NewReplicaSetAvailable");
    for c in [&available, &progressing] {
        assert!(c["lastUpdateTime"].is_string() && c["lastTransitionTime"].is_string());
    }
    // Defaults kube-apiserver gives a Deployment.
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    assert_eq!(
        d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        "25%"
    );
    assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );

    let rs_list = json(&s, &["get", "rs"]);
    let rs = &rs_list["items"][0];
    let hash = rs["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(rs["metadata"]["name"], format!("web-{hash}"));
    assert_eq!(
        rs["spec"]["selector"]["matchLabels"]["pod-template-hash"],
        hash
    );
    let owner = &rs["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "Deployment");
    assert_eq!(owner["uid"], d["metadata"]["uid"]);
    assert_eq!(owner["controller"], true);
    assert_eq!(owner["blockOwnerDeletion"], true);
    for f in [
        "replicas",
        "fullyLabeledReplicas",
        "readyReplicas",
        "availableReplicas",
    ] {
        assert_eq!(rs["status"][f], 3, "rs status.{f}");
    }
    assert_eq!(
        rs["status"]["observedGeneration"],
        rs["metadata"]["generation"]
    );
    let pods = json(&s, &["get", "pods", "-l", "app=web"]);
    for p in pods["items"].as_array().unwrap() {
        assert_eq!(p["metadata"]["labels"]["pod-template-hash"], hash);
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "ReplicaSet");
        assert!(
            p["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with(&format!("web-{hash}-"))
        );
    }

    // The columns kubectl prints for a real cluster.
    let out = s.kubectl_ok(&["get", "deploy,rs"]);
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "{out}"
    );
    assert_eq!(
        lines[1][..4],
        ["deployment.apps/web", "3/3", "3", "3"],
        "{out}"
    );
    assert_eq!(
        lines[3],
        ["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
        "{out}"
    );
    let rs_name = format!("replicaset.apps/web-{hash}");
    assert_eq!(lines[4][..4], [rs_name.as_str(), "3", "3", "3"], "{out}");
    let wide = s.kubectl_ok(&["get", "rs", "-o", "wide"]);
    let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ]
    );
    assert!(
        wide.contains(&format!("app=web,pod-template-hash={hash}")),
        "{wide}"
    );
    let all = s.kubectl_ok(&["get", "all"]);
    for want in [
        "pod/web-",
        "service/kubernetes",
        "deployment.apps/web",
        "replicaset.apps/web-",
    ] {
        assert!(all.contains(want), "get all lacks {want}:\n{all}");
    }

    // kubectl logs: one line per answered request.
    let pod = pods["items"][0].clone();
    let name = pod["metadata"]["name"].as_str().unwrap();
    let ip = pod["status"]["podIP"].as_str().unwrap();
    for _ in 0..3 {
        assert_eq!(http_get(&format!("{ip}:8080")).as_deref(), Some(name));
    }
    let logs = s.kubectl_ok(&["logs", name]);
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines.len(), 3, "{logs}");
    assert!(
        lines.iter().all(|l| l.contains("\"GET / HTTP/1.1\" 200")),
        "{logs}"
    );

    // Foreground and orphan deletion.
    s.kubectl_ok(&["delete", "deploy", "web", "--cascade=orphan"]);
    let rs_left = s.kubectl_ok(&[
        "get",
        "rs",
        "-o",
        "jsonpath={.items[*].metadata.ownerReferences}",
    ]);
    assert_eq!(rs_left.trim(), "", "orphaned ReplicaSet has no owner");
    assert_eq!(
        pod_names(&s, "app=web").len(),
        3,
        "orphaned pods keep running"
    );
    s.kubectl_ok(&[
        "delete",
        "rs",
        "--all",
        "--cascade=foreground",
        "--timeout=30s",
    ]);
    assert!(
        pod_names(&s, "app=web").is_empty(),
        "foreground deletion waited for the pods"
    );
}
