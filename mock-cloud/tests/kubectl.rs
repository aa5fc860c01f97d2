//! The real kubectl against `mock-cloud serve`: apply (client-side and server-side), get with
//! the normal columns, get -w, wait, delete, and clear errors.

mod common;

use common::{Served, wait_for};
use std::io::{BufRead, BufReader};
use std::time::Duration;

const APP: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: web
  labels: {app: web}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080, protocol: TCP}
  - {name: dns, port: 53, targetPort: 5353, protocol: UDP}
---
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  labels: {app: web}
spec:
  containers:
  - name: app
    image: example/web:1
    ports:
    - {containerPort: 8080}
    - {containerPort: 5353, protocol: UDP}
"#;

#[test]
fn apply_get_wait_and_delete_work_with_real_kubectl() {
    let s = Served::start(3, &[]);
    let f = s.manifest("app.yaml", APP);
    let out = s.kubectl_ok(&["apply", "-f", &f]);
    assert!(out.contains("service/web created"), "{out}");
    assert!(out.contains("pod/web-1 created"), "{out}");

    // NodePorts: one number per Service for each port, in range.
    let ports = s.kubectl_ok(&[
        "get",
        "svc",
        "web",
        "-o",
        "jsonpath={.spec.ports[*].nodePort}",
    ]);
    let ports: Vec<u16> = ports
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(ports.len(), 2);
    assert!(
        ports.iter().all(|p| (30000..=32767).contains(p)),
        "{ports:?}"
    );

    s.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/web-1",
        "--timeout=30s",
    ]);

    // Re-apply a changed manifest: client-side apply computes a strategic merge patch.
    let changed = APP
        .replace(
            "labels: {app: web}\nspec:\n  type",
            "labels: {app: web, tier: front}\nspec:\n  type",
        )
        .replace(
            "  - {name: dns, port: 53, targetPort: 5353, protocol: UDP}\n",
            "",
        );
    let f2 = s.manifest("app2.yaml", &changed);
    let out = s.kubectl_ok(&["apply", "-f", &f2]);
    assert!(out.contains("service/web configured"), "{out}");
    assert!(out.contains("pod/web-1 unchanged"), "{out}");
    let got = s.kubectl_ok(&[
        "get",
        "svc",
        "web",
        "-o",
        "jsonpath={.metadata.labels.tier} {.spec.ports[*].port} {.spec.ports[0].nodePort}",
    ]);
    assert_eq!(
        got,
        format!("front 80 {}", ports[0]),
        "the kept port keeps its NodePort"
    );

    // get prints the columns a real cluster prints.
    let out = s.kubectl_ok(&["get", "svc,nodes,pods"]);
    for col in [
        "NAME",
        "TYPE",
        "CLUSTER-IP",
        "EXTERNAL-IP",
        "PORT(S)",
        "AGE",
        "STATUS",
        "ROLES",
        "VERSION",
        "READY",
        "RESTARTS",
    ] {
        assert!(out.contains(col), "missing column {col} in:\n{out}");
    }
    assert!(out.contains("service/web"), "{out}");
    assert!(out.contains("<pending>"), "{out}");
    assert!(out.contains(&format!("80:{}/TCP", ports[0])), "{out}");
    assert!(
        out.contains("node/node-1") && out.contains("Ready"),
        "{out}"
    );
    assert!(out.contains("1/1") && out.contains("Running"), "{out}");

    // delete removes it; get then fails with NotFound.
    let out = s.kubectl_ok(&["delete", "svc", "web"]);
    assert!(out.contains("service \"web\" deleted"), "{out}");
    let out = s.kubectl(&["get", "svc", "web"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NotFound"),
        "{out:?}"
    );
    s.kubectl_ok(&["delete", "pod", "web-1", "--wait=true"]);
}

#[test]
fn server_side_apply_owns_and_removes_fields() {
    let s = Served::start(1, &[]);
    let cm =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: conf\ndata:\n  a: \"1\"\n  b: \"2\"\n";
    let f = s.manifest("cm.yaml", cm);
    let out = s.kubectl_ok(&["apply", "--server-side", "-f", &f]);
    assert!(out.contains("configmap/conf serverside-applied"), "{out}");
    let f2 = s.manifest("cm2.yaml", &cm.replace("  b: \"2\"\n", "  c: \"3\"\n"));
    s.kubectl_ok(&["apply", "--server-side", "-f", &f2]);
    let data = s.kubectl_ok(&["get", "cm", "conf", "-o", "jsonpath={.data}"]);
    assert_eq!(data, r#"{"a":"1","c":"3"}"#);
    let managers = s.kubectl_ok(&[
        "get",
        "cm",
        "conf",
        "--show-managed-fields",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
    ]);
    assert_eq!(managers, "kubectl");
}

#[test]
fn get_watch_prints_later_changes() {
    let s = Served::start(1, &[]);
    let mut w = s.kubectl_spawn(&["get", "svc", "-w"]);
    let stdout = w.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    // The initial listing shows the kubernetes Service.
    wait_for("initial watch output", Duration::from_secs(15), || {
        seen.extend(rx.try_iter());
        seen.iter()
            .any(|l| l.starts_with("kubernetes"))
            .then_some(())
    });
    let later = s.manifest(
        "later.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: later\nspec:\n  type: NodePort\n  ports:\n  - {port: 8080, targetPort: 80}\n",
    );
    s.kubectl_ok(&["create", "-f", &later]);
    wait_for(
        "the new Service in kubectl get -w",
        Duration::from_secs(15),
        || {
            seen.extend(rx.try_iter());
            seen.iter()
                .any(|l| l.starts_with("later") && l.contains("NodePort"))
                .then_some(())
        },
    );
    let headers = seen.iter().filter(|l| l.starts_with("NAME")).count();
    assert_eq!(headers, 1, "headers printed once:\n{}", seen.join("\n"));
    let _ = w.kill();
    let _ = w.wait();
}

#[test]
fn errors_are_clear_and_change_nothing() {
    let s = Served::start(1, &[]);
    // A NodePort outside the range: 422 naming the field.
    let bad = "apiVersion: v1\nkind: Service\nmetadata:\n  name: bad\nspec:\n  type: NodePort\n  ports:\n  - {port: 80, nodePort: 80}\n";
    let f = s.manifest("bad.yaml", bad);
    let out = s.kubectl(&["apply", "-f", &f]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("spec.ports[0].nodePort"), "{err}");
    assert!(err.contains("Invalid value: 80"), "{err}");
    let out = s.kubectl(&["get", "svc", "bad"]);
    assert!(!out.status.success(), "nothing was created");
    // Unknown resource type.
    let out = s.kubectl(&["get", "frobnicators"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the server doesn't have a resource type")
    );
}
