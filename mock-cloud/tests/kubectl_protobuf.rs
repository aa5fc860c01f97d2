//! Protobuf answers (what client-go's typed clients ask for), `kubectl logs -f`, and a
//! Deployment's progress deadline, against `mock-cloud serve` with the real kubectl.

mod common;

use common::{Served, wait_for};
use k8s_pb::api::apps::v1 as apps;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use mock_cloud::testing::{Answer, Request, http_bytes};
use prost::Message;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::mpsc;
use std::time::Duration;

const PB: &str = "application/vnd.kubernetes.protobuf";

/// Answers kubectl logged (`-v=8`) with a protobuf Content-Type. The response headers
/// follow a `"Response" status=` line (kubectl 1.33) or a `Response Headers:` line (1.32),
/// up to the body or the next request.
fn protobuf_answers(stderr: &str) -> usize {
    let mut in_response = false;
    let mut n = 0;
    for l in stderr.lines() {
        if l.contains("\"Response\" status=") || l.contains("Response Headers:") {
            in_response = true;
        } else if l.contains("Request")
            || l.contains("Response Body")
            || l.trim_start().starts_with('>')
        {
            in_response = false;
        } else if in_response && l.trim_end().ends_with(&format!("Content-Type: {PB}")) {
            n += 1;
        }
    }
    n
}

/// Runs kubectl at `-v=8`; its stdout, and how many answers were protobuf.
fn kubectl_v8(s: &Served, args: &[&str]) -> (String, usize) {
    let mut a = args.to_vec();
    a.push("-v=8");
    let out = s.kubectl(&a);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "kubectl {args:?} failed: {stderr}");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        protobuf_answers(&stderr),
    )
}

/// The lines a reader yields, read on a thread so a test can wait with a deadline.
fn lines_of(r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    rx
}

/// The next line, failing the test after 30 s without one.
fn next_line(rx: &mpsc::Receiver<String>, what: &str) -> String {
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("no line {what}: {e}"))
}

fn get(s: &Served, path: &str, accept: &str) -> Answer {
    let req = Request {
        accept,
        ..Request::json("GET", path, b"")
    };
    http_bytes(&s.addr, &req).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// The message in a `k8s\0` + runtime.Unknown body, and the kind its envelope names.
fn open<M: Message + Default>(body: &[u8]) -> (M, String) {
    let raw = body
        .strip_prefix(b"k8s\0")
        .unwrap_or_else(|| panic!("no k8s protobuf magic: {body:?}"));
    let u = Unknown::decode(raw).expect("runtime.Unknown");
    let kind = u.type_meta.unwrap_or_default().kind.unwrap_or_default();
    (
        M::decode(&u.raw.unwrap_or_default()[..]).expect("message"),
        kind,
    )
}

#[test]
fn typed_kubectl_commands_get_protobuf_answers() {
    let s = Served::start(2, &[]);
    let (out, pb) = kubectl_v8(
        &s,
        &[
            "create",
            "deployment",
            "web",
            "--image=example/web:1",
            "--replicas=2",
            "--port=8080",
        ],
    );
    assert!(out.contains("deployment.apps/web created"), "{out}");
    assert!(pb >= 1, "create's answer was not protobuf");
    s.kubectl_ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    let (out, pb) = kubectl_v8(&s, &["describe", "deployment", "web"]);
    assert!(
        out.contains("Replicas:") && out.contains("2 desired"),
        "{out}"
    );
    assert!(out.contains("NewReplicaSet:"), "{out}");
    assert!(pb >= 2, "describe read {pb} protobuf answers");
    let (out, pb) = kubectl_v8(&s, &["describe", "pods", "-l", "app=web"]);
    assert!(out.contains("Status:") && out.contains("Running"), "{out}");
    assert!(out.contains("IP:"), "{out}");
    assert!(pb >= 1);
    let (out, pb) = kubectl_v8(&s, &["create", "configmap", "cfg", "--from-literal=a=b"]);
    assert!(out.contains("configmap/cfg created"), "{out}");
    assert!(pb >= 1);
    let out = s.kubectl_ok(&["set", "image", "deployment/web", "*=example/web:2"]);
    assert!(out.contains("image updated"), "{out}");
    s.kubectl_ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    let (out, pb) = kubectl_v8(&s, &["rollout", "history", "deployment/web"]);
    assert!(out.contains("REVISION") && out.contains('2'), "{out}");
    assert!(pb >= 1, "rollout history read ReplicaSets in protobuf");
    let (out, pb) = kubectl_v8(&s, &["rollout", "undo", "deployment/web"]);
    assert!(out.contains("rolled back"), "{out}");
    assert!(pb >= 1);
    s.kubectl_ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    let image = s.kubectl_ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ]);
    assert_eq!(image, "example/web:1");
    // `kubectl events -w` watches in protobuf (length-prefixed WatchEvent frames).
    let mut w = s.kubectl_spawn(&["events", "-w", "-v=8"]);
    let event = s.manifest(
        "event.yaml",
        "apiVersion: v1\nkind: Event\nmetadata: {name: web.1, namespace: default}\ninvolvedObject: {kind: Deployment, name: web, namespace: default, apiVersion: apps/v1}\nreason: Testing\nmessage: sent through a protobuf watch\ntype: Normal\ncount: 1\nsource: {component: tester}\n",
    );
    let lines = lines_of(w.stdout.take().unwrap());
    let log = lines_of(w.stderr.take().unwrap());
    s.kubectl_ok(&["apply", "-f", &event]);
    let line = loop {
        let l = next_line(&lines, "from kubectl events -w");
        if l.contains("sent through a protobuf watch") {
            break l;
        }
    };
    assert!(
        line.contains("Testing") && line.contains("Deployment/web"),
        "{line}"
    );
    let _ = w.kill();
    let _ = w.wait();
    let stderr: Vec<String> = log.iter().collect();
    assert!(
        stderr
            .iter()
            .any(|l| l.trim() == format!("Content-Type: {PB};stream=watch")),
        "{stderr:?}"
    );
    // An error Status in protobuf: kubectl still prints the server's message.
    let out = s.kubectl(&["describe", "deployment", "nope", "-v=8"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("deployments.apps \"nope\" not found"),
        "{stderr}"
    );
}

#[test]
fn raw_protobuf_answers_lists_errors_watches_and_json_fallbacks() {
    let s = Served::start(1, &[]);
    s.kubectl_ok(&["create", "deployment", "web", "--image=example/web:1"]);
    let accept = format!("{PB},application/json");
    let a = get(
        &s,
        "/apis/apps/v1/namespaces/default/deployments/web",
        &accept,
    );
    assert_eq!((a.code, a.content_type.as_str()), (200, PB));
    let (d, kind): (apps::Deployment, _) = open(&a.body);
    assert_eq!(kind, "Deployment");
    assert_eq!(d.metadata.unwrap().name.as_deref(), Some("web"));
    let spec = d.spec.unwrap();
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(spec.progress_deadline_seconds, Some(600), "defaulted");
    // Lists: the RS the controller made, with its status.
    let rs = wait_for("a ready ReplicaSet", Duration::from_secs(30), || {
        let a = get(&s, "/apis/apps/v1/namespaces/default/replicasets", PB);
        assert_eq!((a.code, a.content_type.as_str()), (200, PB));
        let (l, kind): (apps::ReplicaSetList, _) = open(&a.body);
        assert_eq!(kind, "ReplicaSetList");
        l.items
            .into_iter()
            .find(|r| r.status.as_ref().and_then(|s| s.ready_replicas) == Some(1))
    });
    let owner = &rs.metadata.unwrap().owner_references[0];
    assert_eq!(owner.kind.as_deref(), Some("Deployment"));
    // Errors are Status messages.
    let a = get(&s, "/apis/apps/v1/namespaces/default/deployments/nope", PB);
    assert_eq!((a.code, a.content_type.as_str()), (404, PB));
    let (st, kind): (meta::Status, _) = open(&a.body);
    assert_eq!(kind, "Status");
    assert_eq!(
        (st.code, st.reason.as_deref()),
        (Some(404), Some("NotFound"))
    );
    // JSON-first clients keep JSON.
    let a = get(&s, "/api/v1/namespaces", &format!("application/json,{PB}"));
    assert_eq!(a.content_type, "application/json");
    serde_json::from_slice::<Value>(&a.body).expect("JSON");
    // Custom resources have no protobuf form: JSON when acceptable, else 406.
    let crd = s.manifest(
        "crd.yaml",
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.example.com\nspec:\n  group: example.com\n  scope: Namespaced\n  names: {plural: widgets, singular: widget, kind: Widget}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}\n",
    );
    s.kubectl_ok(&["apply", "-f", &crd]);
    let path = "/apis/example.com/v1/namespaces/default/widgets";
    let a = wait_for("widgets served", Duration::from_secs(10), || {
        let a = get(&s, path, &accept);
        (a.code == 200).then_some(a)
    });
    assert_eq!(a.content_type, "application/json");
    let a = get(&s, path, PB);
    assert_eq!(a.code, 406, "{}", String::from_utf8_lossy(&a.body));
    // A protobuf watch: length-prefixed WatchEvents, each object in its envelope.
    let a = get(
        &s,
        "/apis/apps/v1/namespaces/default/deployments?watch=true&timeoutSeconds=1",
        PB,
    );
    assert_eq!(a.code, 200);
    assert_eq!(a.content_type, format!("{PB};stream=watch"));
    let len = u32::from_be_bytes(a.body[..4].try_into().unwrap()) as usize;
    let ev = meta::WatchEvent::decode(&a.body[4..4 + len]).expect("WatchEvent");
    assert_eq!(ev.r#type.as_deref(), Some("ADDED"));
    let (d, kind): (apps::Deployment, _) = open(&ev.object.unwrap().raw.unwrap());
    assert_eq!(kind, "Deployment");
    assert_eq!(d.metadata.unwrap().name.as_deref(), Some("web"));
}

fn http_get(addr: &str) {
    let mut c = std::net::TcpStream::connect(addr).expect("connect to the pod");
    c.set_read_timeout(Some(Duration::from_secs(5))).ok();
    c.write_all(b"GET /hello HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut sink = Vec::new();
    let _ = c.read_to_end(&mut sink);
}

#[test]
fn kubectl_logs_follow_streams_new_requests_and_ends_with_the_pod() {
    let s = Served::start(1, &[]);
    s.kubectl_ok(&[
        "run",
        "echo",
        "--image=example/echo",
        "--port=8080",
        "--restart=Never",
    ]);
    let ip = wait_for("a pod IP", Duration::from_secs(30), || {
        let ip = s.kubectl_ok(&["get", "pod", "echo", "-o", "jsonpath={.status.podIP}"]);
        (!ip.is_empty()).then_some(ip)
    });
    let addr = format!("{ip}:8080");
    s.kubectl_ok(&["wait", "--for=condition=Ready", "pod/echo", "--timeout=60s"]);
    http_get(&addr);
    http_get(&addr);
    wait_for("two log lines", Duration::from_secs(10), || {
        (s.kubectl_ok(&["logs", "echo"]).lines().count() == 2).then_some(())
    });
    let tail = s.kubectl_ok(&["logs", "echo", "--tail=1"]);
    assert_eq!(tail.lines().count(), 1, "{tail}");
    let since = s.kubectl_ok(&["logs", "echo", "--since=1h"]);
    assert_eq!(since.lines().count(), 2, "{since}");
    let mut f = s.kubectl_spawn(&["logs", "-f", "echo", "--tail=1"]);
    let lines = lines_of(f.stdout.take().unwrap());
    let first = next_line(&lines, "from kubectl logs -f");
    assert!(first.contains("\"GET /hello HTTP/1.1\""), "{first}");
    http_get(&addr);
    let second = next_line(&lines, "followed");
    assert!(second.contains("GET /hello"), "{second}");
    assert_ne!(first, second);
    s.kubectl_ok(&["delete", "pod", "echo", "--wait=false"]);
    // The stream ends with the pod: kubectl exits 0 with nothing more.
    match lines.recv_timeout(Duration::from_secs(30)) {
        Err(mpsc::RecvTimeoutError::Disconnected) => {}
        other => panic!("kubectl logs -f went on after the pod was deleted: {other:?}"),
    }
    let status = wait_for("kubectl logs -f to exit", Duration::from_secs(20), || {
        f.try_wait().expect("wait")
    });
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_rollout_that_cannot_progress_exceeds_its_deadline() {
    let s = Served::start(2, &[]);
    s.kubectl_ok(&[
        "create",
        "deployment",
        "web",
        "--image=example/web:1",
        "--replicas=2",
    ]);
    s.kubectl_ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    // New pods that no node can take: the rollout stalls.
    s.kubectl_ok(&[
        "patch",
        "deployment",
        "web",
        "-p",
        r#"{"spec": {"progressDeadlineSeconds": 3, "template": {"spec": {"nodeSelector": {"disk": "none"}}}}}"#,
    ]);
    let out = s.kubectl(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "rollout status succeeded: {stderr}");
    assert!(
        stderr.contains("error: deployment \"web\" exceeded its progress deadline"),
        "{stderr}"
    );
    let conds: Value = serde_json::from_str(&s.kubectl_ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.status.conditions}",
    ]))
    .unwrap();
    let p = conds
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .unwrap();
    assert_eq!(p["status"], "False");
    assert_eq!(p["reason"], "ProgressDeadlineExceeded");
    assert!(
        p["message"]
            .as_str()
            .unwrap()
            .ends_with("has timed out progressing."),
        "{p}"
    );
    // The old pods still serve; undoing the change completes again.
    s.kubectl_ok(&["rollout", "undo", "deployment/web"]);
    let out = s.kubectl_ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
}

#[test]
fn rbac_service_account_and_pdb_generators_send_protobuf_and_work() {
    let s = Served::start(1, &[]);
    for args in [
        &["create", "serviceaccount", "robot"][..],
        &[
            "create",
            "role",
            "r1",
            "--verb=get,list",
            "--resource=pods,services",
        ],
        &[
            "create",
            "rolebinding",
            "rb1",
            "--role=r1",
            "--serviceaccount=default:robot",
        ],
        &[
            "create",
            "clusterrole",
            "cr1",
            "--verb=get",
            "--non-resource-url=/healthz",
        ],
        &[
            "create",
            "clusterrolebinding",
            "crb1",
            "--clusterrole=cr1",
            "--user=bob",
        ],
        &[
            "create",
            "poddisruptionbudget",
            "p1",
            "--selector=app=web",
            "--min-available=50%",
        ],
    ] {
        let (out, pb) = kubectl_v8(&s, args);
        assert!(out.contains("created"), "{args:?}: {out}");
        assert!(pb >= 1, "{args:?}: the answer was not protobuf");
    }
    let j = |args: &[&str]| -> Value {
        serde_json::from_str(&s.kubectl_ok(args)).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    };
    assert_eq!(
        j(&["get", "role", "r1", "-o", "jsonpath={.rules}"]),
        serde_json::json!([{"apiGroups": [""], "resources": ["pods", "services"], "verbs": ["get", "list"]}])
    );
    assert_eq!(
        j(&["get", "rolebinding", "rb1", "-o", "jsonpath={.roleRef}"]),
        serde_json::json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r1"})
    );
    assert_eq!(
        j(&["get", "rolebinding", "rb1", "-o", "jsonpath={.subjects}"]),
        serde_json::json!([{"kind": "ServiceAccount", "name": "robot", "namespace": "default"}])
    );
    assert_eq!(
        j(&["get", "clusterrole", "cr1", "-o", "jsonpath={.rules}"]),
        serde_json::json!([{"nonResourceURLs": ["/healthz"], "verbs": ["get"]}])
    );
    assert_eq!(
        j(&[
            "get",
            "clusterrolebinding",
            "crb1",
            "-o",
            "jsonpath={.subjects}"
        ]),
        serde_json::json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bob"}])
    );
    assert_eq!(
        j(&["get", "pdb", "p1", "-o", "jsonpath={.spec}"]),
        serde_json::json!({"minAvailable": "50%", "selector": {"matchLabels": {"app": "web"}}})
    );
}
