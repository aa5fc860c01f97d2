//! End to end: `berth controller --provider l2 --default-class --adopt metallb` keeps the
//! addresses MetalLB published for Services when they lie free in a berth pool, and says why
//! when it cannot; `berth adopt plan --provider l2` reports the same and writes nothing.

use berth_tests::{Cloud, DEADLINE, Proc, binary, finalizers, http_json, wait_for};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const POOL: &str = "192.0.2.10-192.0.2.20";

fn flags(cloud: &Cloud, cmd: &mut Command) {
    cmd.arg("--kubeconfig")
        .arg(&cloud.kubeconfig)
        .args([
            "--provider",
            "l2",
            "--cluster-name",
            "l2adopt",
            "--default-class",
        ])
        .args(["--adopt", "metallb"])
        .env("NO_COLOR", "1");
}

fn start(cloud: &Cloud) -> Proc {
    let mut cmd = Command::new(binary("berth"));
    cmd.arg("controller");
    flags(cloud, &mut cmd);
    cmd.args(["--identity", "adopt", "--metrics-listen", "127.0.0.1:0"])
        .args(["--leader-elect", "false", "--resync", "5s"]);
    let mut p = Proc::spawn("berth[l2-adopt]", cmd, cloud.dir.join("berth.log"));
    p.wait_for_line("Serving /metrics", Duration::from_secs(60));
    p
}

/// A Service without a class whose status shows `ip`, as MetalLB left it.
fn metallb_service(cloud: &Cloud, name: &str, ip: &str) {
    cloud.apply(&[json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "annotations": {}},
        "spec": {"type": "LoadBalancer", "selector": {"app": name},
                 "ports": [{"name": "web", "port": 80, "protocol": "TCP"}]}
    })]);
    let patch = json!({"status": {"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]}}});
    cloud.kubectl_ok(&[
        "patch",
        "service",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch.to_string(),
    ]);
}

fn ip(cloud: &Cloud, name: &str) -> Option<String> {
    cloud
        .service(name)?
        .pointer("/status/loadBalancer/ingress/0/ip")?
        .as_str()
        .map(str::to_string)
}

fn has_berth_finalizer(svc: &Value) -> bool {
    finalizers(svc)
        .iter()
        .any(|f| f.starts_with("berth.io/cleanup."))
}

fn in_pool(ip: &str) -> bool {
    ip.strip_prefix("192.0.2.")
        .and_then(|n| n.parse::<u8>().ok())
        .is_some_and(|n| (10..=20).contains(&n))
}

#[test]
fn l2_adopt_keeps_metallb_addresses_that_lie_free_in_a_pool() {
    let cloud = Cloud::start("l2-adopt");
    let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds/berth.io_crds.yaml");
    cloud.kubectl_ok(&["apply", "-f", crds.to_str().unwrap()]);
    wait_for("the IPAddressPool resource", DEADLINE, || {
        cloud.try_kubectl(&["get", "ipaddresspools"]).ok()
    });
    cloud.apply(&[json!({
        "apiVersion": "berth.io/v1alpha1", "kind": "IPAddressPool",
        "metadata": {"name": "main"}, "spec": {"addresses": [POOL]}
    })]);
    // As MetalLB left them: one address in berth's pool, one outside it, and two Services
    // showing the same address (only one can keep it).
    metallb_service(&cloud, "kept", "192.0.2.17");
    metallb_service(&cloud, "outside", "198.51.100.7");
    metallb_service(&cloud, "twin-a", "192.0.2.12");
    metallb_service(&cloud, "twin-b", "192.0.2.12");

    // The plan first: it reports and writes nothing.
    let writes = |c: &Cloud| {
        http_json(&c.api, "GET", "/mock-cloud/v1/audit", None)["items"]
            .as_array()
            .map_or(0, Vec::len)
    };
    let before = writes(&cloud);
    let mut cmd = Command::new(binary("berth"));
    cmd.args(["adopt", "plan"]);
    flags(&cloud, &mut cmd);
    let out = cmd.output().expect("berth adopt plan");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        writes(&cloud),
        before,
        "berth adopt plan wrote to the API server"
    );
    assert!(
        plan.contains("default/kept: adopt from metallb: 192.0.2.17"),
        "{plan}"
    );
    assert!(
        plan.contains("default/outside: not adopted") && plan.contains("198.51.100.7"),
        "{plan}"
    );
    let twins = plan
        .lines()
        .filter(|l| l.starts_with("default/twin-") && l.contains("adopt from metallb"))
        .count();
    assert_eq!(twins, 1, "one twin keeps 192.0.2.12:\n{plan}");

    let mut berth = start(&cloud);
    for name in ["kept", "outside", "twin-a", "twin-b"] {
        wait_for(&format!("{name} served by berth"), DEADLINE, || {
            let s = cloud.service(name)?;
            (has_berth_finalizer(&s) && ip(&cloud, name).is_some_and(|i| in_pool(&i))).then_some(())
        });
    }
    assert_eq!(ip(&cloud, "kept").as_deref(), Some("192.0.2.17"));
    let twin_ips = [ip(&cloud, "twin-a").unwrap(), ip(&cloud, "twin-b").unwrap()];
    assert!(
        twin_ips.contains(&"192.0.2.12".to_string()) && twin_ips[0] != twin_ips[1],
        "{twin_ips:?}"
    );
    let moved = ip(&cloud, "outside").unwrap();
    assert_ne!(moved, "192.0.2.17");
    let why = wait_for("outside's Warning", DEADLINE, || {
        cloud.events("outside").into_iter().find_map(|e| {
            (e["reason"] == "AdoptAddressFailed")
                .then(|| e["message"].as_str().unwrap_or("").to_string())
        })
    });
    assert!(why.contains("198.51.100.7"), "{why}");
    berth.stop(Duration::from_secs(10));
}
