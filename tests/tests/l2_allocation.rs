//! The l2 provider's allocation side end to end: `mock-cloud serve`, `berth controller
//! --provider l2`, the CRDs from deploy/ and the real kubectl. No traffic is sent to the
//! VIPs (they come from documentation ranges); the speaker has its own tests.

use berth_tests::{Cloud, DEADLINE, Proc, binary, condition, holds_for, wait_for};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const CLASS: &str = "berth.io/l2";

/// `berth controller --provider l2` against `cloud`.
fn start_l2(cloud: &Cloud, identity: &str) -> Proc {
    let mut cmd = Command::new(binary("berth"));
    cmd.arg("controller")
        .arg("--kubeconfig")
        .arg(&cloud.kubeconfig)
        .args(["--provider", "l2", "--cluster-name", "l2e2e"])
        .args(["--identity", identity, "--metrics-listen", "127.0.0.1:0"])
        .args(["--leader-elect", "false"])
        .args([
            "--resync",
            "5s",
            "--gc-interval",
            "2s",
            "--retry-min",
            "200ms",
        ])
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG");
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let mut proc = Proc::spawn(
        &format!("berth[{identity}]"),
        cmd,
        cloud.dir.join(format!("berth-l2-{identity}-{n}.log")),
    );
    proc.wait_for_line("Serving /metrics", Duration::from_secs(60));
    proc
}

fn install_crds(cloud: &Cloud) {
    let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds/berth.io_crds.yaml");
    cloud.kubectl_ok(&["apply", "-f", crds.to_str().expect("utf-8 path")]);
    wait_for("the IPAddressPool resource to be served", DEADLINE, || {
        cloud.try_kubectl(&["get", "ipaddresspools"]).ok()
    });
}

fn pool(name: &str, addresses: &[&str], auto_assign: bool) -> Value {
    json!({
        "apiVersion": "berth.io/v1alpha1",
        "kind": "IPAddressPool",
        "metadata": {"name": name},
        "spec": {"addresses": addresses, "autoAssign": auto_assign},
    })
}

/// A Service of the l2 class with the given (port, protocol) pairs.
fn svc(name: &str, ports: &[(u16, &str)]) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .enumerate()
        .map(|(i, (p, proto))| json!({"name": format!("p{i}"), "port": p, "targetPort": 8080, "protocol": proto}))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "annotations": {}},
        "spec": {
            "type": "LoadBalancer",
            "loadBalancerClass": CLASS,
            "selector": {"app": name},
            "ports": ports,
        },
    })
}

fn with_ann(mut s: Value, k: &str, v: &str) -> Value {
    s["metadata"]["annotations"][k] = json!(v);
    s
}

/// The Service's ingress IPs and ipModes.
fn ingress(cloud: &Cloud, name: &str) -> Vec<(String, String)> {
    cloud
        .try_get("service", name)
        .ok()
        .flatten()
        .and_then(|s| s.pointer("/status/loadBalancer/ingress").cloned())
        .and_then(|i| i.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|i| {
            (
                i["ip"].as_str().unwrap_or_default().to_string(),
                i["ipMode"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn wait_ip(cloud: &Cloud, name: &str) -> String {
    let (ip, mode) = wait_for(&format!("Service {name} to get an IP"), DEADLINE, || {
        ingress(cloud, name).into_iter().next()
    });
    assert_eq!(mode, "VIP", "{name}: ipMode");
    ip
}

/// Waits for an event about `name` with `reason` whose message contains `needle`.
fn wait_event(cloud: &Cloud, name: &str, reason: &str, needle: &str) -> String {
    wait_for(
        &format!("a {reason} event on {name} containing {needle:?}"),
        DEADLINE,
        || {
            cloud.events(name).into_iter().find_map(|e| {
                let msg = e["message"].as_str().unwrap_or_default();
                (e["reason"] == reason && msg.contains(needle)).then(|| msg.to_string())
            })
        },
    )
}

fn pool_condition(cloud: &Cloud, name: &str) -> Option<Value> {
    let p = cloud.try_get("ipaddresspool", name).ok().flatten()?;
    p.pointer("/status/conditions/0").cloned()
}

fn in_range(ip: &str, prefix: &str, from: u8, to: u8) -> bool {
    ip.strip_prefix(prefix)
        .and_then(|last| last.parse::<u8>().ok())
        .is_some_and(|n| (from..=to).contains(&n))
}

#[test]
fn pools_allocate_honour_requests_share_exhaust_and_survive_restarts() {
    let cloud = Cloud::start("l2-alloc");
    install_crds(&cloud);
    // Order matters: "overlap" is created after "default" and loses the overlap.
    cloud.apply(&[pool("default", &["198.51.100.0/30"], true)]);
    cloud.apply(&[pool("reserved", &["203.0.113.10-203.0.113.12"], false)]);
    // A malformed pool never gets in: the CRD's rules refuse it at apply time.
    let broken = cloud.manifest(&[pool("broken", &["10.0.0.0/33"], true)]);
    let err = cloud
        .try_kubectl(&["apply", "-f", &broken])
        .expect_err("a /33 pool is refused");
    assert!(
        err.contains("spec.addresses[0]") && err.contains("must be a CIDR"),
        "{err}"
    );
    cloud.apply(&[pool("overlap", &["198.51.100.2-198.51.100.9"], true)]);
    let mut ctl = start_l2(&cloud, "l2-a");

    // An ordinary Service: an address from the auto-assign pool, ipMode VIP, an event.
    cloud.apply(&[svc("web", &[(80, "TCP")])]);
    let web = wait_ip(&cloud, "web");
    assert!(in_range(&web, "198.51.100.", 0, 3), "{web}");
    let msg = wait_event(&cloud, "web", "IPAllocated", &web);
    assert_eq!(msg, format!("Assigned IP {web} from pool default"));
    wait_for("web's condition to be True", DEADLINE, || {
        let s = cloud.service("web")?;
        (condition(&s)?["status"] == "True").then_some(())
    });

    // A requested address in a manual pool is honoured.
    cloud.apply(&[with_ann(
        svc("pinned", &[(80, "TCP")]),
        "berth.io/load-balancer-ips",
        "203.0.113.11",
    )]);
    assert_eq!(wait_ip(&cloud, "pinned"), "203.0.113.11");

    // A requested address in no pool: a Warning naming the field, no address, others fine.
    let mut lost = svc("lost", &[(80, "TCP")]);
    lost["spec"]["loadBalancerIP"] = json!("192.0.2.1");
    cloud.apply(&[lost]);
    let msg = wait_event(
        &cloud,
        "lost",
        "SyncLoadBalancerFailed",
        "spec.loadBalancerIP",
    );
    assert!(msg.contains("192.0.2.1 is not in any pool"), "{msg}");
    wait_event(
        &cloud,
        "lost",
        "AllocationFailed",
        "192.0.2.1 is not in any pool",
    );
    let c = condition(&cloud.service("lost").expect("lost")).expect("condition");
    assert_eq!(c["status"], "False");
    assert!(ingress(&cloud, "lost").is_empty());
    assert_eq!(wait_ip(&cloud, "web"), web);

    // Two Services with one sharing key and disjoint ports share an address.
    let key = "berth.io/allow-shared-ip";
    cloud.apply(&[with_ann(svc("share-a", &[(80, "TCP")]), key, "k")]);
    let shared = wait_ip(&cloud, "share-a");
    cloud.apply(&[with_ann(
        svc("share-b", &[(53, "UDP"), (53, "TCP")]),
        key,
        "k",
    )]);
    assert_eq!(wait_ip(&cloud, "share-b"), shared);
    // The same ports under the same key get their own address.
    cloud.apply(&[with_ann(svc("share-c", &[(80, "TCP")]), key, "k")]);
    let c_ip = wait_ip(&cloud, "share-c");
    assert_ne!(c_ip, shared);

    // An overlapping pool (a problem across objects, which no schema rule can see): a clear
    // error on the pool and a Warning; the others keep working.
    let c = wait_for("overlap's Valid=False condition", DEADLINE, || {
        pool_condition(&cloud, "overlap").filter(|c| c["status"] == "False")
    });
    let m = c["message"].as_str().unwrap_or_default();
    assert!(m.contains("overlaps") && m.contains("pool default"), "{m}");
    wait_event(&cloud, "overlap", "InvalidPool", "overlaps");
    wait_for("default's Valid=True condition", DEADLINE, || {
        pool_condition(&cloud, "default").filter(|c| c["status"] == "True")
    });

    // default (4 addresses) holds web, the shared one and share-c: one left, then none.
    cloud.apply(&[svc("fill", &[(80, "TCP")])]);
    let fill = wait_ip(&cloud, "fill");
    cloud.apply(&[svc("extra", &[(80, "TCP")])]);
    let msg = wait_event(
        &cloud,
        "extra",
        "SyncLoadBalancerFailed",
        "IPAddressPool/default",
    );
    assert!(
        msg.contains("no free IPv4 address left (4 of 4 assigned)"),
        "{msg}"
    );
    // kubectl shows the counts.
    let table = wait_for("the pool table to show 4 assigned", DEADLINE, || {
        let t = cloud.try_kubectl(&["get", "ipaddresspools"]).ok()?;
        t.lines()
            .any(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.first() == Some(&"default") && w.get(1..4) == Some(&["true", "4", "0"][..])
            })
            .then_some(t)
    });
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "AUTO",
            "ASSIGN",
            "ASSIGNED",
            "AVAILABLE",
            "VALID",
            "AGE"
        ],
        "{table}"
    );
    let valid_col = |name: &str| -> Option<String> {
        table.lines().find_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.first() == Some(&name)).then(|| w.get(4).map(|s| s.to_string()))?
        })
    };
    assert_eq!(valid_col("default").as_deref(), Some("True"), "{table}");
    assert_eq!(valid_col("overlap").as_deref(), Some("False"), "{table}");
    let reserved: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("reserved"))
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        reserved.get(1..4),
        Some(&["false", "1", "2"][..]),
        "{table}"
    );
    // Freeing an address lets the waiting Service have it.
    cloud.kubectl_ok(&["delete", "service", "fill"]);
    assert_eq!(wait_ip(&cloud, "extra"), fill);

    // A restart: every Service keeps its address, including one created while it was down.
    let before: Vec<(String, String)> = ["web", "pinned", "share-a", "share-b", "share-c", "extra"]
        .iter()
        .map(|n| (n.to_string(), wait_ip(&cloud, n)))
        .collect();
    ctl.stop(Duration::from_secs(15));
    cloud.kubectl_ok(&["delete", "service", "share-c", "--wait=false"]);
    cloud.apply(&[svc("late", &[(80, "TCP")])]);
    let _ctl = start_l2(&cloud, "l2-b");
    // share-c's address is free again: "late" gets it, and nobody else moves.
    assert_eq!(wait_ip(&cloud, "late"), c_ip);
    holds_for(
        "addresses to stay put after the restart",
        Duration::from_secs(3),
        || {
            for (n, ip) in &before {
                if n == "share-c" {
                    continue;
                }
                let now = ingress(&cloud, n);
                if now.first().map(|x| &x.0) != Some(ip) {
                    return Err(format!("{n} moved from {ip} to {now:?}"));
                }
            }
            Ok(())
        },
    );
    // The new controller did not allocate anew for the restored Services.
    let log = std::fs::read_to_string(&_ctl.log).unwrap_or_default();
    assert!(log.contains("restored=5"), "{log}");
    assert_eq!(log.matches("Assigned IP").count(), 1, "{log}");
}
