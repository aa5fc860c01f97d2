//! Operations conventions, from outside the process: JSON logs that a log pipeline (`jq`)
//! reads line by line, `--log-level`, and every flag settable from its `BERTH_*` variable.

use berth_tests::*;
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::Duration;

/// `berth controller` configured only through the environment (no flag but the subcommand).
fn controller_from_env(cloud: &Cloud, identity: &str, extra: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(binary("berth"));
    cmd.arg("controller")
        .env("BERTH_KUBECONFIG", &cloud.kubeconfig)
        .env("BERTH_PROVIDER", "http")
        .env("BERTH_HTTP_ENDPOINT", cloud.lb_url())
        .env("BERTH_CLUSTER_NAME", "ops")
        .env("BERTH_IDENTITY", identity)
        .env("BERTH_METRICS_LISTEN", "127.0.0.1:0")
        .env("BERTH_LEADER_ELECT_NAMESPACE", "default")
        .env("BERTH_RESYNC", "5s")
        .env("BERTH_DEFAULT_CLASS", "true")
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd
}

#[test]
fn json_logs_and_flags_from_the_environment() {
    let cloud = Cloud::start("ops-json");
    let cmd = controller_from_env(
        &cloud,
        "ops-a",
        &[
            ("BERTH_LOG_FORMAT", "json"),
            ("BERTH_LOG_LEVEL", "info,berth=debug"),
        ],
    );
    let mut proc = Proc::spawn("berth[ops-a]", cmd, cloud.dir.join("berth-ops-a.log"));
    let line = proc.wait_for_line("Serving /metrics", Duration::from_secs(30));
    let serving: Value = serde_json::from_str(line.trim())
        .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
    assert_eq!(serving["level"], "INFO", "{serving}");
    let admin = serving["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no address field: {serving}"))
        .to_string();
    assert!(
        admin.starts_with("127.0.0.1:"),
        "BERTH_METRICS_LISTEN honoured: {admin}"
    );

    // The provider and its endpoint came from the environment: a Service gets its address.
    cloud.apply(&[tcp_service("web", "web", 80)]);
    cloud.wait_address("web");
    wait_for(
        "a debug line (BERTH_LOG_LEVEL)",
        Duration::from_secs(20),
        || proc.output().contains("\"level\":\"DEBUG\"").then_some(()),
    );
    proc.stop(Duration::from_secs(15));

    let out = proc.output();
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "{out}");
    for l in &lines {
        let v: Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"));
        for field in ["timestamp", "level", "target"] {
            assert!(v.get(field).is_some(), "no {field}: {l}");
        }
    }
    // jq, as a log pipeline reads them: one object per line, every line.
    let mut jq = Command::new("jq")
        .args(["-c", "select(.level != null) | .level"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("jq is required (./scripts/test installs it)");
    use std::io::Write;
    jq.stdin
        .take()
        .expect("stdin")
        .write_all(out.as_bytes())
        .expect("write");
    let r = jq.wait_with_output().expect("jq");
    assert!(
        r.status.success(),
        "jq: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&r.stdout).lines().count(),
        lines.len(),
        "jq read every line"
    );
}

#[test]
fn a_flag_wins_over_its_variable() {
    let cloud = Cloud::start("ops-precedence");
    let mut cmd = controller_from_env(&cloud, "ops-b", &[("BERTH_LOG_FORMAT", "json")]);
    // `--log-format` is global: given after the subcommand as users type it.
    cmd.args(["--log-format", "text"]);
    let mut proc = Proc::spawn("berth[ops-b]", cmd, cloud.dir.join("berth-ops-b.log"));
    let line = proc.wait_for_line("Serving /metrics", Duration::from_secs(30));
    assert!(
        serde_json::from_str::<Value>(line.trim()).is_err() && line.contains(" INFO "),
        "text, not JSON: {line}"
    );
    proc.stop(Duration::from_secs(15));
}

#[test]
fn bad_log_settings_are_refused_with_the_reason() {
    for (args, env, needle) in [
        (
            vec!["--log-level", "info,=====", "crds"],
            None,
            "invalid --log-level",
        ),
        (vec!["crds"], Some(("BERTH_LOG_FORMAT", "xml")), "xml"),
    ] {
        let mut cmd = Command::new(binary("berth"));
        cmd.args(&args).env_remove("RUST_LOG");
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("berth");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing printed on stdout");
    }
}

#[test]
fn an_unreachable_api_server_is_named_with_the_reason_once_per_attempt() {
    let dir = scratch_dir("ops-dead-apiserver");
    let kubeconfig = dir.join("kubeconfig");
    // Port 1 on loopback: nothing listens there, so every connect is refused at once.
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster: {server: \"https://127.0.0.1:1\"}\n  name: dead\ncontexts:\n- context: {cluster: dead, user: u}\n  name: dead\ncurrent-context: dead\nusers:\n- name: u\n  user: {token: t}\n",
    )
    .expect("write kubeconfig");
    let out = Command::new(binary("berth"))
        .args([
            "controller",
            "--provider",
            "http",
            "--http-endpoint",
            "http://127.0.0.1:9",
        ])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .output()
        .expect("berth");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("https://127.0.0.1:1"),
        "the server is named: {err}"
    );
    let bare = err
        .lines()
        .filter(|l| l.contains("client error (Connect)") && !l.contains("Connection refused"))
        .count();
    assert_eq!(bare, 0, "every failure says why: {err}");
    let attempts = err
        .lines()
        .filter(|l| l.contains("Connection refused"))
        .count();
    assert!(
        (2..=8).contains(&attempts),
        "bounded retries, one line each: {err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
