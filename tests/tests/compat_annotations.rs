//! Services written for MetalLB, kube-vip or Cilium LB-IPAM keep what they asked for under
//! berth: every honoured annotation allocates the requested address, pool or sharing through
//! `berth controller --provider l2`, applied with the real kubectl; two annotations of one
//! meaning that disagree get a Warning naming both and no address.

use berth_tests::{Cloud, DEADLINE, install_berth_crds, start_l2_controller, wait_for};
use serde_json::{Value, json};

fn pool(name: &str, range: &str, auto_assign: bool) -> Value {
    json!({
        "apiVersion": "berth.io/v1alpha1",
        "kind": "IPAddressPool",
        "metadata": {"name": name},
        "spec": {"addresses": [range], "autoAssign": auto_assign},
    })
}

fn service(name: &str, port: u16, annotations: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "type": "LoadBalancer",
            "loadBalancerClass": "berth.io/l2",
            "selector": {"app": name},
            "ports": [{"name": "p", "port": port, "targetPort": 8080, "protocol": "TCP"}],
        },
    })
}

fn address(cloud: &Cloud, name: &str) -> String {
    wait_for(&format!("Service {name}'s address"), DEADLINE, || {
        cloud.service(name)?["status"]["loadBalancer"]["ingress"][0]["ip"]
            .as_str()
            .map(str::to_string)
    })
}

#[test]
fn other_load_balancers_annotations_allocate_what_they_ask_for() {
    let cloud = Cloud::start("compat");
    install_berth_crds(&cloud);
    cloud.apply(&[
        pool("general", "192.0.2.10-192.0.2.30", true),
        pool("reserved", "198.51.100.10-198.51.100.20", false),
    ]);
    let (_l2, _admin) = start_l2_controller(&cloud, "compat");

    // Requested addresses, each project's spelling.
    let requests = [
        ("mlb", "metallb.io/loadBalancerIPs", "192.0.2.21"),
        (
            "mlb-old",
            "metallb.universe.tf/loadBalancerIPs",
            "192.0.2.22",
        ),
        ("kvip", "kube-vip.io/loadbalancerIPs", "192.0.2.23"),
        ("cilium", "lbipam.cilium.io/ips", "192.0.2.24"),
    ];
    // Pools that hand out addresses only when asked for by name.
    let pools = [
        ("mlb-pool", "metallb.io/address-pool"),
        ("mlb-old-pool", "metallb.universe.tf/address-pool"),
    ];
    let mut svcs: Vec<Value> = requests
        .iter()
        .map(|(n, k, ip)| service(n, 80, json!({ *k: ip })))
        .collect();
    svcs.extend(
        pools
            .iter()
            .map(|(n, k)| service(n, 80, json!({ *k: "reserved" }))),
    );
    // Sharing: two Services on different ports share one address, each project's key.
    for (i, (a, b, key)) in [
        ("share-a", "share-b", "metallb.io/allow-shared-ip"),
        ("share-c", "share-d", "metallb.universe.tf/allow-shared-ip"),
        ("share-e", "share-f", "lbipam.cilium.io/sharing-key"),
    ]
    .iter()
    .enumerate()
    {
        let ip = format!("192.0.2.{}", 25 + i);
        svcs.push(service(
            a,
            80,
            json!({ *key: "web", "metallb.io/loadBalancerIPs": ip }),
        ));
        svcs.push(service(
            b,
            443,
            json!({ *key: "web", "metallb.io/loadBalancerIPs": ip }),
        ));
    }
    // Agreeing spellings are fine.
    svcs.push(service(
        "agree",
        80,
        json!({"berth.io/load-balancer-ips": "192.0.2.29", "metallb.io/loadBalancerIPs": "192.0.2.29"}),
    ));
    // Disagreeing spellings: a Warning naming both, nothing allocated.
    svcs.push(service(
        "clash",
        80,
        json!({"berth.io/load-balancer-ips": "192.0.2.30", "metallb.io/loadBalancerIPs": "192.0.2.19"}),
    ));
    cloud.apply(&svcs);

    for (name, key, ip) in requests {
        assert_eq!(address(&cloud, name), ip, "{key}");
    }
    let mut reserved = std::collections::BTreeSet::new();
    for (name, key) in pools {
        let ip = address(&cloud, name);
        assert!(
            ip.starts_with("198.51.100."),
            "{key} named the reserved pool: {ip}"
        );
        assert!(reserved.insert(ip), "two Services got one reserved address");
    }
    for (a, b, ip) in [
        ("share-a", "share-b", "192.0.2.25"),
        ("share-c", "share-d", "192.0.2.26"),
        ("share-e", "share-f", "192.0.2.27"),
    ] {
        assert_eq!(address(&cloud, a), ip, "{a}");
        assert_eq!(address(&cloud, b), ip, "{b} shares {a}'s address");
    }
    assert_eq!(address(&cloud, "agree"), "192.0.2.29");

    let warning = wait_for("a Warning for the clash", DEADLINE, || {
        cloud
            .events("clash")
            .into_iter()
            .find(|e| e["type"] == "Warning")
    });
    let note = warning["note"]
        .as_str()
        .or(warning["message"].as_str())
        .unwrap_or_default()
        .to_string();
    assert!(
        note.contains("metallb.io/loadBalancerIPs") && note.contains("berth.io/load-balancer-ips"),
        "the Warning names both annotations: {warning}"
    );
    let clash = cloud.service("clash").expect("clash");
    assert!(
        clash["status"]["loadBalancer"]["ingress"].is_null(),
        "nothing allocated: {clash}"
    );
}
