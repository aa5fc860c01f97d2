//! `deploy/monitoring` and `/metrics`, checked with Prometheus' own tools:
//!
//! * the ServiceMonitor and PodMonitor select the objects the overlays ship, on ports they have;
//! * the PrometheusRule's groups pass `promtool check rules`, and `promtool test rules` shows
//!   each alert firing on the series that should trigger it and silent on healthy ones;
//! * `/metrics` answers the Prometheus text format 0.0.4 to a scraper asking for it and
//!   OpenMetrics to one asking for that; both bodies parse with `promtool check metrics` and
//!   the Python `prometheus_client` parsers.

use berth_tests::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// The virtualenv of `scripts/moto-venv` (with PyYAML and prometheus_client).
fn python() -> PathBuf {
    let dir = std::env::var_os("BERTH_VENV")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR").map(|t| PathBuf::from(t).join("../berth-venv"))
        })
        .unwrap_or_else(|| root().join(".venv"));
    let py = dir.join("bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import yaml, prometheus_client"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "PyYAML and prometheus_client are required and were not found in {} (BERTH_VENV); run ./scripts/moto-venv",
        dir.display()
    );
    py
}

fn promtool() -> PathBuf {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join("promtool"))
        .find(|p| p.is_file());
    found.expect("promtool is required (Debian package prometheus; ./scripts/test installs it)")
}

/// Runs `cmd` with `input` on stdin; (success, stdout + stderr).
fn run_with_input(cmd: &mut Command, input: &str) -> (bool, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Every object of a multi-document YAML text, as JSON.
fn yaml_objects(yaml: &str) -> Vec<Value> {
    let (ok, out) = run_with_input(
        Command::new(python()).args([
            "-c",
            "import sys, json, yaml\nprint(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))",
        ]),
        yaml,
    );
    assert!(ok, "YAML does not parse: {out}");
    serde_json::from_str::<Vec<Value>>(&out).expect("json")
}

fn kustomize(dir: &str) -> Vec<Value> {
    let out = Command::new(kubectl_path())
        .current_dir(root())
        .args(["kustomize", dir])
        .output()
        .expect("kubectl kustomize");
    assert!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    yaml_objects(&String::from_utf8_lossy(&out.stdout))
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// Whether `labels` has every `matchLabels` pair of `selector` (the monitors use no
/// expressions; one would fail this check rather than pass unexamined).
fn selects(selector: &Value, labels: &Value) -> bool {
    assert!(
        selector.get("matchExpressions").is_none(),
        "matchExpressions are not examined: {selector}"
    );
    let want = selector["matchLabels"].as_object().expect("matchLabels");
    !want.is_empty() && want.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[test]
fn monitors_select_what_the_overlays_ship() {
    let monitoring = kustomize("deploy/monitoring");
    let sm = of_kind(&monitoring, "ServiceMonitor");
    let pm = of_kind(&monitoring, "PodMonitor");
    assert_eq!(
        (sm.len(), pm.len()),
        (1, 1),
        "one ServiceMonitor, one PodMonitor"
    );
    assert_eq!(of_kind(&monitoring, "PrometheusRule").len(), 1);
    for o in &monitoring {
        assert_eq!(o["metadata"]["namespace"], "berth-system", "{}", o["kind"]);
    }
    let (sm, pm) = (sm[0], pm[0]);

    for overlay in ["http", "aws", "l2"] {
        let objects = kustomize(&format!("deploy/overlays/{overlay}"));
        // The ServiceMonitor selects exactly the metrics Service, on a port it has, in its
        // namespace.
        let services: Vec<&Value> = of_kind(&objects, "Service")
            .into_iter()
            .filter(|s| selects(&sm["spec"]["selector"], &s["metadata"]["labels"]))
            .collect();
        assert_eq!(
            services.len(),
            1,
            "{overlay}: services selected: {services:?}"
        );
        let svc = services[0];
        assert_eq!(svc["metadata"]["namespace"], "berth-system");
        for ep in sm["spec"]["endpoints"].as_array().expect("endpoints") {
            let port = ep["port"].as_str().expect("port name");
            assert!(
                svc["spec"]["ports"]
                    .as_array()
                    .expect("ports")
                    .iter()
                    .any(|p| p["name"] == port),
                "{overlay}: Service has no port {port}"
            );
        }
        // The metrics Service reaches the controller's named metrics port.
        let dep = of_kind(&objects, "Deployment")[0];
        assert!(selects(
            &serde_json::json!({ "matchLabels": svc["spec"]["selector"] }),
            &dep["spec"]["template"]["metadata"]["labels"]
        ));

        // The PodMonitor selects the speakers (l2 only) on their metrics port, never the
        // controller.
        let pods: Vec<&Value> = of_kind(&objects, "DaemonSet")
            .into_iter()
            .chain(of_kind(&objects, "Deployment"))
            .filter(|w| {
                selects(
                    &pm["spec"]["selector"],
                    &w["spec"]["template"]["metadata"]["labels"],
                )
            })
            .collect();
        if overlay == "l2" {
            assert_eq!(pods.len(), 1, "l2: the speaker DaemonSet");
            assert_eq!(pods[0]["kind"], "DaemonSet");
            let containers = pods[0]["spec"]["template"]["spec"]["containers"]
                .as_array()
                .expect("containers");
            for ep in pm["spec"]["podMetricsEndpoints"].as_array().expect("eps") {
                let port = ep["port"].as_str().expect("port name");
                assert!(
                    containers.iter().any(|c| c["ports"]
                        .as_array()
                        .is_some_and(|ps| ps.iter().any(|p| p["name"] == port))),
                    "speaker has no port {port}"
                );
            }
        } else {
            assert!(pods.is_empty(), "{overlay}: PodMonitor selects {pods:?}");
        }
    }
}

#[test]
fn alert_rules_pass_promtool_and_fire_when_they_should() {
    let monitoring = kustomize("deploy/monitoring");
    let rule = of_kind(&monitoring, "PrometheusRule")[0];
    let dir = scratch_dir("monitoring-rules");
    // A JSON document is YAML: promtool reads it as a rule file.
    let rules = dir.join("rules.yaml");
    std::fs::write(
        &rules,
        serde_json::json!({ "groups": rule["spec"]["groups"] }).to_string(),
    )
    .expect("write rules");
    let alerts: Vec<String> = rule["spec"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").iter())
        .filter_map(|r| r["alert"].as_str().map(str::to_string))
        .collect();
    for want in ["BerthNoLeader", "BerthSyncFailing", "BerthPoolExhausted"] {
        assert!(
            alerts.iter().any(|a| a == want),
            "no alert {want}: {alerts:?}"
        );
    }

    let out = Command::new(promtool())
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let cases = std::fs::read_to_string(root().join("tests/tests/monitoring/alerts_test.yaml"))
        .expect("alerts_test.yaml");
    // Every alert has a case, so a new rule cannot ship untested.
    for a in &alerts {
        assert!(
            cases.contains(&format!("alertname: {a}\n")),
            "alerts_test.yaml has no case for {a}"
        );
    }
    let test_file = dir.join("alerts_test.yaml");
    std::fs::write(&test_file, cases.replace("RULES", "rules.yaml")).expect("write");
    let out = Command::new(promtool())
        .current_dir(&dir)
        .args(["test", "rules", "alerts_test.yaml"])
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "promtool test rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// GET /metrics with `accept`: (content type, body).
fn scrape(addr: &str, accept: Option<&str>) -> (String, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n"
    )
    .expect("write");
    let mut resp = Vec::new();
    s.take(16 << 20).read_to_end(&mut resp).expect("read");
    let text = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let ctype = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .expect("content-type");
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "a chunked /metrics answer: {head}"
    );
    (ctype, body.to_string())
}

/// Parses `body` with prometheus_client's parser for `format` ("text" or "openmetrics");
/// the sample names it read.
fn python_parse(body: &str, format: &str) -> Vec<String> {
    let script = match format {
        "text" => {
            "import sys\nfrom prometheus_client.parser import text_string_to_metric_families as p\n"
        }
        _ => {
            "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families as p\n"
        }
    };
    let script = format!(
        "{script}for f in p(sys.stdin.read()):\n    for s in f.samples:\n        print(f.type, s.name)\n"
    );
    let (ok, out) = run_with_input(Command::new(python()).args(["-c", &script]), body);
    assert!(
        ok,
        "prometheus_client ({format}) cannot parse /metrics: {out}"
    );
    out.lines().map(str::to_string).collect()
}

#[test]
fn metrics_speak_prometheus_text_and_openmetrics() {
    let cloud = Cloud::start("monitoring-scrape");
    let ctl = Controller::start(&cloud, "mon", "mon-a", &["--default-class"]);
    cloud.apply(&[tcp_service("web", "web", 80)]);
    wait_for("a reconcile counted", Duration::from_secs(30), || {
        ctl.metrics()
            .filter(|m| m.contains("berth_reconciles_total{"))
            .map(|_| ())
    });

    // What Prometheus sends with OpenMetrics off, and what plain clients send.
    for accept in [Some("text/plain;version=0.0.4;q=1,*/*;q=0.1"), None] {
        let (ctype, body) = scrape(&ctl.admin, accept);
        assert_eq!(
            ctype, "text/plain; version=0.0.4; charset=utf-8",
            "{accept:?}"
        );
        assert!(!body.contains("# EOF"), "{body}");
        assert!(
            body.contains("# TYPE berth_reconciles_total counter\n"),
            "{body}"
        );
        let (ok, lint) = run_with_input(Command::new(promtool()).args(["check", "metrics"]), &body);
        assert!(ok, "promtool check metrics:\n{lint}\n{body}");
        let samples = python_parse(&body, "text");
        assert!(
            samples
                .iter()
                .any(|s| s == "counter berth_reconciles_total"),
            "{samples:?}"
        );
        assert!(
            samples
                .iter()
                .any(|s| s == "histogram berth_reconcile_duration_seconds_bucket")
        );
    }

    // What Prometheus sends by default.
    let (ctype, body) = scrape(
        &ctl.admin,
        Some(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        ),
    );
    assert_eq!(
        ctype,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    let samples = python_parse(&body, "openmetrics");
    assert!(
        samples
            .iter()
            .any(|s| s == "counter berth_reconciles_total"),
        "{samples:?}"
    );
}
