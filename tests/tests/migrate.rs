//! `berth migrate metallb` on MetalLB manifests written the way MetalLB's documentation
//! shows them (tests/tests/migrate/*.yaml): the output is accepted by `kubectl apply` on
//! mock-cloud with berth's CRDs, and `berth controller --provider l2` allocates from the
//! migrated pools the addresses MetalLB would (lowest free address first, `.0`/`.255` skipped
//! with avoidBuggyIPs, autoAssign honoured).

use berth_tests::{Cloud, DEADLINE, binary, install_berth_crds, start_l2_controller, wait_for};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/migrate");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

fn migrate(file: &Path) -> String {
    let out = Command::new(binary("berth"))
        .args(["migrate", "metallb", "-f"])
        .arg(file)
        .env_remove("RUST_LOG")
        .output()
        .expect("berth migrate");
    assert!(
        out.status.success(),
        "berth migrate metallb -f {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn service(name: &str, pool: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels, "annotations": {"berth.io/address-pool": pool}},
        "spec": {
            "type": "LoadBalancer",
            "loadBalancerClass": "berth.io/l2",
            "selector": {"app": name},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
        },
    })
}

#[test]
fn migrated_metallb_manifests_apply_and_allocate_the_same_addresses() {
    let files = fixtures();
    assert!(files.len() >= 6, "documentation-style fixtures: {files:?}");
    let cloud = Cloud::start("migrate");
    install_berth_crds(&cloud);

    for f in &files {
        let out = migrate(f);
        assert!(!out.contains("metallb.io/"), "{}: {out}", f.display());
        let path = cloud.dir.join(f.file_name().expect("name"));
        std::fs::write(&path, &out).expect("write");
        if out.contains("\nkind: ") || out.starts_with("kind: ") {
            let applied = cloud
                .try_kubectl(&["apply", "-f", path.to_str().expect("utf-8")])
                .unwrap_or_else(|e| {
                    panic!("kubectl apply of {}'s migration: {e}\n{out}", f.display())
                });
            assert!(applied.contains("created"), "{applied}");
        }
        // Whatever berth cannot carry is said, not dropped.
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with("6-") {
            for kind in ["BGPPeer", "BFDProfile", "BGPAdvertisement"] {
                assert!(
                    out.contains(&format!("kind: {kind}\n")),
                    "{kind} not carried: {out}"
                );
            }
            assert!(out.contains("# Community communities: "), "{out}");
            assert!(out.contains("65535:65281"), "alias resolved: {out}");
        }
        if name.starts_with("3-") {
            assert!(
                out.contains("ipAddressPools:\n  - rack-a")
                    || out.contains("ipAddressPools:\n    - rack-a"),
                "{out}"
            );
        }
    }
    let pools = cloud.kubectl_ok(&["get", "ipaddresspools", "-o", "name"]);
    for p in [
        "first-pool",
        "production",
        "development",
        "rack-a",
        "team-pool",
        "no-buggy",
        "bgp-pool",
    ] {
        assert!(
            pools.contains(&format!("/{p}\n")),
            "pool {p} missing: {pools}"
        );
    }
    let bgp = cloud.kubectl_ok(&[
        "get",
        "bgppeers,bgpadvertisements,bfdprofiles",
        "-o",
        "name",
    ]);
    for o in [
        "bgppeer.berth.io/router",
        "bgpadvertisement.berth.io/bgp",
        "bfdprofile.berth.io/fast",
    ] {
        assert!(bgp.contains(o), "{o} missing: {bgp}");
    }
    let ads = cloud.kubectl_ok(&["get", "l2advertisements", "-o", "name"]);
    assert!(ads.contains("/example") && ads.contains("/rack-a"), "{ads}");

    let (_l2, admin) = start_l2_controller(&cloud, "migrate");
    let cases = [
        ("first", "first-pool", json!({}), "192.168.1.240"),
        ("dev", "development", json!({}), "192.168.9.1"),
        ("buggy", "no-buggy", json!({}), "172.22.0.1"),
        ("blue", "team-pool", json!({"team": "blue"}), "172.21.0.0"),
        ("rack", "rack-a", json!({}), "172.20.0.16"),
        ("prod", "production", json!({}), "192.168.10.0"),
    ];
    let svcs: Vec<Value> = cases
        .iter()
        .map(|(n, p, l, _)| service(n, p, l.clone()))
        .collect();
    cloud.apply(&svcs);
    for (name, pool, _, want) in cases {
        let got = wait_for(
            &format!("Service {name} to get an address from {pool}"),
            DEADLINE,
            || {
                let s = cloud.service(name)?;
                s["status"]["loadBalancer"]["ingress"][0]["ip"]
                    .as_str()
                    .map(str::to_string)
            },
        );
        assert_eq!(got, want, "Service {name} in pool {pool}");
    }
    // Pool usage metrics: first-pool holds 11 addresses, one in use; no IPv6 series for an
    // IPv4-only pool; production is dual-stack (256 + 16).
    let metric = |text: &str, name: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
    };
    let text = wait_for("pool metrics", DEADLINE, || {
        let (code, body) = berth_tests::http(&admin, "GET", "/metrics", None).ok()?;
        (code == 200
            && body.contains("berth_pool_addresses_in_use{pool=\"first-pool\",family=\"ipv4\"} 1"))
        .then_some(body)
    });
    let first = "{pool=\"first-pool\",family=\"ipv4\"}";
    assert_eq!(
        metric(&text, &format!("berth_pool_addresses_capacity{first}")),
        Some(11.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, &format!("berth_pool_addresses_available{first}")),
        Some(10.0)
    );
    assert!(
        !text.contains("pool=\"first-pool\",family=\"ipv6\""),
        "{text}"
    );
    let prod6 = "{pool=\"production\",family=\"ipv6\"}";
    assert_eq!(
        metric(&text, &format!("berth_pool_addresses_capacity{prod6}")),
        Some(16.0),
        "{text}"
    );

    // A Service the migrated serviceAllocation excludes gets nothing from that pool.
    cloud.apply(&[service("red", "team-pool", json!({"team": "red"}))]);
    wait_for("a Warning for the excluded Service", DEADLINE, || {
        cloud
            .events("red")
            .into_iter()
            .find(|e| e["type"] == "Warning")
    });
    let red = cloud.service("red").expect("red");
    assert!(red["status"]["loadBalancer"]["ingress"].is_null(), "{red}");
}
