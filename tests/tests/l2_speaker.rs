//! `berth speaker` end to end, in network namespaces (root required; a missing tool or
//! missing root fails the test, never skips it): a bridge, a client and three "nodes" each
//! running `berth speaker`, with mock-cloud's API server and `berth controller --provider l2`
//! in the client namespace. The controller allocates the VIPs from IPAddressPools in the
//! bridge's subnet; one L2Advertisement announces the `bridge` and `bulk` pools (not `dark`).

#[path = "l2/cluster.rs"]
mod cluster;
#[path = "l2/hmac.rs"]
mod hmac;
#[path = "l2/net.rs"]
mod net;
#[path = "l2/support.rs"]
mod support;

use cluster::*;
use support::*;

use berth_tests::{Proc, binary, kubectl_path, scratch_dir, wait_for};
use net::{Host, Topology, arping_macs, ndisc6_macs, neigh, tcp_ask};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const CLASS: &str = "berth.io/l2";
const API_PORT: u16 = 6443;
const GOSSIP_PORT: u16 = 7946;
/// Membership keys (at least 32 characters).
const KEY_1: &str = "first-membership-key-0123456789abcdef";
const PORT: u16 = 8080;
/// The pools: `bridge` (auto-assigned, both families) and `bulk` are advertised, `dark` is not.
const BRIDGE_POOL: [&str; 2] = ["10.99.0.200-10.99.0.250", "fd99::200-fd99::250"];
const BULK_POOL: &str = "10.99.1.1-10.99.4.254";
const DARK_POOL: &str = "10.99.0.150-10.99.0.160";

/// Not a test: when `BERTH_L2_SERVER` is set this process is a node's "workload", answering
/// every TCP connection on 8080 and 8081 (IPv4 and IPv6) with the node name.
#[test]
fn helper_node_server() {
    let Ok(name) = std::env::var("BERTH_L2_SERVER") else {
        return;
    };
    let mut threads = vec![];
    for port in [8080u16, 8081] {
        let l = std::net::TcpListener::bind(("::", port)).expect("bind server");
        let name = name.clone();
        threads.push(std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let mut c = c;
                let _ = std::io::Write::write_all(&mut c, format!("{name}\n").as_bytes());
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
}

#[test]
fn l2_speaker_end_to_end() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = Cluster::start(true);

    // 1. A Service gets a VIP from the controller (auto-assigned from `bridge`): exactly one
    // MAC answers, the node berth names; TCP reaches it.
    let web = c.service("web", PORT, json!({}));
    assert!(in_range(&web, BRIDGE_POOL[0]), "web got {web}");
    let owner = wait_for(
        "berth.io/announcing-node on web",
        Duration::from_secs(20),
        || c.announcing("web"),
    );
    let mac = single_owner(&c, &web);
    assert_eq!(
        mac,
        c.topo.nodes[Cluster::node_index(&owner)].mac,
        "the MAC of {owner}"
    );
    let who = wait_for("TCP through the VIP", Duration::from_secs(10), || {
        tcp_ask(&c.topo.client, &web, PORT, "1")
    });
    assert_eq!(who, owner);
    let events = c
        .kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=web",
            "-o",
            "json",
        ])
        .expect("events");
    assert!(
        events.contains("NodeAssigned"),
        "no NodeAssigned event: {events}"
    );
    println!("l2: web {web} -> {owner} ({mac})");

    // 2./3. Failover, with ARP sampled all along: never two MACs in one sample.
    let stop = Arc::new(AtomicBool::new(false));
    let s = sampler(c.topo.client.clone(), web.clone(), stop.clone());
    let mut kills = vec![];
    for _ in 0..5 {
        kills.push(failover_once(&mut c, &web, false));
    }
    let mut cuts = vec![];
    for _ in 0..2 {
        cuts.push(failover_once(&mut c, &web, true));
    }
    stop.store(true, Ordering::Relaxed);
    let (samples, bad) = s.join().expect("sampler");
    let (kmed, kmax) = stats(&kills);
    let (cmed, cmax) = stats(&cuts);
    println!("l2 failover (SIGKILL speaker, 5 runs): median {kmed:?}, max {kmax:?}; all {kills:?}");
    println!("l2 failover (link down, 2 runs): median {cmed:?}, max {cmax:?}; all {cuts:?}");
    println!(
        "l2 ARP samples during failovers: {samples}, with two MACs: {}",
        bad.len()
    );
    assert!(bad.is_empty(), "two MACs answered one request: {bad:?}");
    assert!(
        kmed <= Duration::from_millis(1500),
        "failover median {kmed:?} is too slow"
    );

    // 4. ETP=Local, with a fixed VIP (berth.io/load-balancer-ips): the VIP follows the pods.
    let pod = |name: &str, node: &str| {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": "default", "labels": {"app": "local"}},
               "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x",
                        "ports": [{"containerPort": PORT}]}]}})
    };
    let local = c.service(
        "local",
        PORT,
        json!({"metadata": {"annotations": {"berth.io/load-balancer-ips": "10.99.0.240"}},
               "spec": {"externalTrafficPolicy": "Local"}}),
    );
    assert_eq!(local, "10.99.0.240");
    for (podname, node) in [("local-a", "node-3"), ("local-b", "node-1")] {
        let _ = c.kubectl(&["delete", "pod", "-l", "app=local", "--wait=false"]);
        c.apply(&[pod(podname, node)]);
        let want = c.topo.nodes[Cluster::node_index(node)].mac.clone();
        wait_for(
            &format!("the Local VIP on {node}"),
            Duration::from_secs(20),
            || {
                let m = arping_macs(&c.topo.client, &local, "1");
                assert!(m.len() <= 1, "two MACs: {m:?}");
                (m == [want.clone()] && c.announcing("local").as_deref() == Some(node))
                    .then_some(())
            },
        );
        println!("l2: ETP=Local VIP follows its pod to {node}");
    }

    // 5. Shared IP: two Services with one key and disjoint ports get one VIP from the
    // controller and land on one node.
    let shared = json!({"metadata": {"annotations": {"berth.io/allow-shared-ip": "k1"}}});
    let sip = c.service("shared-a", 8080, shared.clone());
    assert_eq!(
        c.service("shared-b", 8081, shared),
        sip,
        "shared-IP Services got different VIPs"
    );
    assert!(sip != web && sip != local, "{sip} is already in use");
    let (a, b) = wait_for(
        "both shared Services announced",
        Duration::from_secs(20),
        || Some((c.announcing("shared-a")?, c.announcing("shared-b")?)),
    );
    assert_eq!(a, b, "shared-IP Services on different nodes");
    let m = single_owner(&c, &sip);
    assert_eq!(m, c.topo.nodes[Cluster::node_index(&a)].mac);
    println!("l2: shared IP {sip} -> {a} for both Services");

    // 6. A VIP from a pool no L2Advertisement lists is never announced, though the Service
    // names no pool: the speaker maps the address to its pool (`dark`), not the annotation.
    let dark = c.service(
        "dark",
        PORT,
        json!({"metadata": {"annotations": {"berth.io/load-balancer-ips": "10.99.0.150"}}}),
    );
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        let m = arping_macs(&c.topo.client, &dark, "1");
        assert!(
            m.is_empty(),
            "{dark} of the unadvertised pool answered by {m:?}"
        );
        assert_eq!(c.announcing("dark"), None, "dark was announced");
    }
    println!("l2: {dark} (pool dark, not advertised) is not announced");

    // 7. IPv6: NDP answers from one node; failover moves it.
    let v6 = c.service(
        "web6",
        PORT,
        json!({"spec": {"ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack"}}),
    );
    assert!(in_range(&v6, BRIDGE_POOL[1]), "web6 got {v6}");
    let owner6 = wait_for("web6 announced", Duration::from_secs(20), || {
        c.announcing("web6")
    });
    let mac6 = single_owner(&c, &v6);
    assert_eq!(mac6, c.topo.nodes[Cluster::node_index(&owner6)].mac);
    let who = wait_for(
        "TCP over IPv6 through the VIP",
        Duration::from_secs(10),
        || tcp_ask(&c.topo.client, &v6, PORT, "1"),
    );
    assert_eq!(who, owner6);
    let mut kills6 = vec![];
    for _ in 0..5 {
        kills6.push(failover_once(&mut c, &v6, false));
    }
    let (med6, max6) = stats(&kills6);
    println!(
        "l2 IPv6 failover (SIGKILL speaker, unsolicited NA, 5 runs): median {med6:?}, max {max6:?}; all {kills6:?}"
    );
    assert!(
        med6 <= Duration::from_millis(1500),
        "IPv6 failover median {med6:?} is too slow"
    );
    let macs6 = ndisc6_macs(&c.topo.client, &v6);
    assert_eq!(
        macs6.len(),
        1,
        "one MAC answers NDP after failover: {macs6:?}"
    );
}

/// The two end-to-end tests run one at a time: failover timing must not compete for CPU.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Not a test: with `BERTH_L2_BULK=ADDR,COUNT` creates COUNT Services of our class asking for
/// the `bulk` pool (the controller allocates); with `BERTH_L2_STATS=ADDR` prints the API
/// server's stats.
#[test]
fn helper_api() {
    if let Ok(spec) = std::env::var("BERTH_L2_BULK") {
        let (addr, n) = spec.split_once(',').expect("ADDR,COUNT");
        let n: usize = n.parse().expect("count");
        for i in 0..n {
            let name = format!("bulk-{i}");
            let svc = json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": "default",
                             "annotations": {"berth.io/address-pool": "bulk"}},
                "spec": {"type": "LoadBalancer", "loadBalancerClass": CLASS,
                         "allocateLoadBalancerNodePorts": false,
                         "ports": [{"port": 80, "protocol": "TCP"}]}
            });
            let (c, b) = raw_http(
                addr,
                "POST",
                "/api/v1/namespaces/default/services",
                "application/json",
                &svc.to_string(),
            );
            assert!(c == 201 || c == 200, "create {name}: {c} {b}");
        }
    }
    if let Ok(addr) = std::env::var("BERTH_L2_STATS") {
        let (_, b) = raw_http(&addr, "GET", "/mock-cloud/v1/stats", "application/json", "");
        println!("STATS:{}", b.trim());
    }
}

#[test]
fn l2_speaker_api_load_with_1000_vips() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = Cluster::start(false);
    // A quiet baseline with no Service: the speakers' watches alone.
    std::thread::sleep(Duration::from_secs(3));
    let s0 = c.api_stats();
    std::thread::sleep(Duration::from_secs(20));
    let s1 = c.api_stats();
    let (base, base_verbs) = per_minute(&s0, &s1, 20.0);
    // 1,000 VIPs from the controller: every one gets announced (one annotation write + one
    // event each), then nothing but the watches. The controller runs only while it
    // allocates, so both windows measure the speakers alone.
    c.start_controller();
    c.helper(("BERTH_L2_BULK", format!("{},1000", c.api())));
    wait_for("1000 VIPs announced", Duration::from_secs(120), || {
        let total: f64 = c
            .speakers
            .iter()
            .flatten()
            .map(|p| p.output().matches("Announcing ip=").count() as f64)
            .sum();
        (total >= 1000.0).then_some(())
    });
    let writes_settled = wait_for(
        "annotation writes to settle",
        Duration::from_secs(120),
        || {
            let a = c.api_stats()["writes"].as_u64()?;
            std::thread::sleep(Duration::from_secs(2));
            let b = c.api_stats()["writes"].as_u64()?;
            (a == b).then_some(b)
        },
    );
    c.controller
        .take()
        .expect("the controller")
        .stop(Duration::from_secs(5));
    let t0 = Instant::now();
    let a = c.api_stats();
    std::thread::sleep(Duration::from_secs(60));
    let b = c.api_stats();
    let secs = t0.elapsed().as_secs_f64();
    let (busy, busy_verbs) = per_minute(&a, &b, secs);
    println!("l2 speaker API load, 3 speakers, no Services: {base:.0} requests/min {base_verbs}");
    println!(
        "l2 speaker API load, 3 speakers, 1000 VIPs (steady state, {secs:.0} s): {busy:.0} requests/min {busy_verbs}; writes during allocation and announce: {writes_settled}"
    );
    // Our stats reads are 2 GETs per window (the helper); everything else is the speakers'.
    assert!(
        busy <= base + 10.0,
        "API load grew with Services: {base:.0} -> {busy:.0} requests/min"
    );
}

/// Membership keys after [`KEY_1`].
const KEY_2: &str = "second-membership-key-0123456789abcdef";
/// A key no speaker has.
const WRONG_KEY: &str = "not-the-membership-key-0123456789abcdef";

/// Not a test: with `BERTH_L2_FORGE=FILE,SECS` sends every datagram of FILE (lines of
/// `ADDR HEX`) round after round for SECS seconds, from wherever it runs.
#[test]
fn helper_forger() {
    let Ok(spec) = std::env::var("BERTH_L2_FORGE") else {
        return;
    };
    let (file, secs) = spec.split_once(',').expect("FILE,SECS");
    let secs: u64 = secs.parse().expect("seconds");
    let text = std::fs::read_to_string(file).expect("datagrams");
    let dgrams: Vec<(String, Vec<u8>)> = text
        .lines()
        .filter_map(|l| {
            let (a, h) = l.split_once(' ')?;
            let b = (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&h[i..i + 2], 16).expect("hex"))
                .collect();
            Some((a.to_string(), b))
        })
        .collect();
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
    let t0 = Instant::now();
    let mut sent = 0u64;
    while t0.elapsed() < Duration::from_secs(secs) {
        for (a, d) in &dgrams {
            let _ = sock.send_to(d, a.as_str());
            sent += 1;
            if sent.is_multiple_of(200) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    println!("FORGED:{sent}");
}
