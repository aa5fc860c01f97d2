//! The speaker against FRR (zebra + bgpd + bfdd) in network namespaces.
//! Needs root and the frr package; fails (never skips) without them.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const VIP: &str = "10.200.0.1/32";
const VIP_ADDR: &str = "10.200.0.1";
const VIP6: &str = "fd00:200::1/128";
const LONG: Duration = Duration::from_secs(30);
const STEP: Duration = Duration::from_millis(50);

fn vip_route() -> Value {
    json!({"prefix": VIP, "local_pref": 150,
           "communities": [(64512u32 << 16) | 10], "large_communities": [[64512, 1, 2]]})
}

fn established(frr: &Frr, i: usize) -> bool {
    frr.peer_state(node_ip(i)) == "Established"
}

#[test]
fn ecmp_ipv6_attributes_withdraw_and_sigterm() {
    require(&["ip"]);
    let mut t = Topology::new(3);
    let neighbors: Vec<FrrNeighbor> = (0..3)
        .map(|i| FrrNeighbor {
            addr: node_ip(i).into(),
            timers: Some((3, 9)),
            ..Default::default()
        })
        .collect();
    let frr = Frr::start(&mut t, &neighbors);
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| {
            let mut routes = vec![vip_route()];
            if i == 0 {
                routes.push(json!({"prefix": VIP6, "next_hop": node_ip6(0).to_string(),
                                   "local_pref": 120, "communities": [(64512u32 << 16) | 6]}));
            }
            Node::start(
                &t,
                i,
                &node_config(i, ROUTER_AS, 9, false, None, json!(routes)),
            )
        })
        .collect();

    for i in 0..3 {
        assert!(
            wait_until(LONG, STEP, || established(&frr, i)),
            "node {i} not Established at FRR: {}",
            frr.try_vtysh("show bgp summary").unwrap_or_default()
        );
    }
    // The node's own status agrees.
    assert!(wait_until(LONG, STEP, || nodes[0].last_status()["state"]
        == "Established"));

    // ECMP: three next hops in FRR's RIB and a multipath kernel route.
    let want: Vec<String> = (0..3).map(|i| node_ip(i).to_string()).collect();
    assert!(
        wait_until(LONG, STEP, || frr.rib_next_hops(VIP, false) == want),
        "RIB next hops: {:?}",
        frr.rib_next_hops(VIP, false)
    );
    assert!(
        wait_until(LONG, STEP, || t.kernel_next_hops(VIP_ADDR, false).len()
            == 3),
        "kernel route: {}",
        t.kernel_route(VIP_ADDR, false)
    );
    assert!(t.kernel_route(VIP_ADDR, false).contains("nexthop via"));

    // Local preference and communities as sent.
    let v = frr.json(&format!("show bgp ipv4 unicast {VIP} json"));
    let path = &v["paths"][0];
    assert_eq!(path["locPrf"], 150, "{v}");
    assert_eq!(path["community"]["string"], "64512:10", "{v}");
    assert_eq!(path["largeCommunity"]["string"], "64512:1:2", "{v}");

    // IPv6 /128 over MP-BGP, with its attributes.
    assert!(
        wait_until(LONG, STEP, || frr.rib_next_hops(VIP6, true)
            == vec![node_ip6(0).to_string()]),
        "v6 RIB: {}",
        frr.try_vtysh(&format!("show ipv6 route {VIP6}"))
            .unwrap_or_default()
    );
    let v6 = frr.json(&format!("show bgp ipv6 unicast {VIP6} json"));
    assert_eq!(v6["paths"][0]["locPrf"], 120, "{v6}");
    assert_eq!(v6["paths"][0]["community"]["string"], "64512:6", "{v6}");
    assert_eq!(
        t.kernel_next_hops("fd00:200::1", true),
        vec![IpAddr::V6(node_ip6(0))]
    );

    // Withdraw the IPv6 route: gone at FRR and in the kernel.
    nodes[0].command(json!({"withdraw": VIP6}));
    assert!(wait_until(LONG, STEP, || frr
        .rib_next_hops(VIP6, true)
        .is_empty()));
    assert!(wait_until(LONG, STEP, || t
        .kernel_next_hops("fd00:200::1", true)
        .is_empty()));

    // Withdraw the VIP on node 1 only: two next hops left.
    nodes[1].command(json!({"withdraw": VIP}));
    assert!(
        wait_until(LONG, STEP, || frr.rib_next_hops(VIP, false)
            == vec![node_ip(0).to_string(), node_ip(2).to_string()]),
        "{:?}",
        frr.rib_next_hops(VIP, false)
    );
    assert!(wait_until(LONG, STEP, || {
        t.kernel_next_hops(VIP_ADDR, false).len() == 2
    }));

    // SIGTERM on node 2: graceful shutdown, its next hop goes, the session closes.
    let status = nodes[2].sigterm();
    assert!(status.success(), "node exited with {status}");
    assert!(
        wait_until(LONG, STEP, || frr.rib_next_hops(VIP, false)
            == vec![node_ip(0).to_string()]),
        "{:?}",
        frr.rib_next_hops(VIP, false)
    );
    assert!(wait_until(LONG, STEP, || t
        .kernel_next_hops(VIP_ADDR, false)
        == vec![IpAddr::V4(node_ip(0))]));
    assert!(wait_until(LONG, STEP, || !established(&frr, 2)));
    let nb = frr.json(&format!("show bgp neighbor {} json", node_ip(2)));
    let last = nb[node_ip(2).to_string()]["lastNotificationReason"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        last.contains("Cease") && last.contains("Administrative Shutdown"),
        "FRR's last notification: {last:?} in {nb}"
    );
}

#[test]
fn md5_right_password_establishes_wrong_does_not() {
    require(&["ip"]);
    let mut t = Topology::new(2);
    let neighbors: Vec<FrrNeighbor> = (0..2)
        .map(|i| FrrNeighbor {
            addr: node_ip(i).into(),
            password: Some("s3cret".into()),
            ..Default::default()
        })
        .collect();
    let frr = Frr::start(&mut t, &neighbors);
    let _good = Node::start(
        &t,
        0,
        &node_config(0, ROUTER_AS, 9, false, Some("s3cret"), json!([vip_route()])),
    );
    let bad = Node::start(
        &t,
        1,
        &node_config(1, ROUTER_AS, 9, false, Some("wrong"), json!([vip_route()])),
    );
    assert!(
        wait_until(LONG, STEP, || established(&frr, 0)),
        "right password: not Established: {}",
        frr.try_vtysh("show bgp summary").unwrap_or_default()
    );
    assert!(wait_until(LONG, STEP, || frr.rib_next_hops(VIP, false)
        == vec![node_ip(0).to_string()]));
    // Wrong password: segments are dropped; the status says why.
    assert!(
        wait_until(LONG, STEP, || bad.last_status()["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("MD5"))),
        "status: {}",
        bad.last_status()
    );
    assert_ne!(bad.last_status()["state"], "Established");
    assert!(!established(&frr, 1));
    assert_eq!(frr.rib_next_hops(VIP, false), vec![node_ip(0).to_string()]);
}

#[test]
fn bfd_link_down_removes_next_hop_before_hold_time() {
    require(&["ip"]);
    let mut t = Topology::new(3);
    // Hold time 90 s: only BFD can remove the next hop quickly.
    let neighbors: Vec<FrrNeighbor> = (0..3)
        .map(|i| FrrNeighbor {
            addr: node_ip(i).into(),
            bfd: true,
            timers: Some((30, 90)),
            ..Default::default()
        })
        .collect();
    let frr = Frr::start(&mut t, &neighbors);
    let nodes: Vec<Node> = (0..3)
        .map(|i| {
            Node::start(
                &t,
                i,
                &node_config(i, ROUTER_AS, 90, true, None, json!([vip_route()])),
            )
        })
        .collect();
    assert!(
        wait_until(LONG, STEP, || t.kernel_next_hops(VIP_ADDR, false).len()
            == 3),
        "kernel route: {}",
        t.kernel_route(VIP_ADDR, false)
    );
    assert!(
        wait_until(LONG, STEP, || {
            let v = frr.json("show bfd peers json");
            v.as_array()
                .is_some_and(|a| a.iter().filter(|p| p["status"] == "up").count() == 3)
        }),
        "BFD peers: {}",
        frr.try_vtysh("show bfd peers").unwrap_or_default()
    );
    assert!(wait_until(
        LONG,
        STEP,
        || nodes[0].last_status()["bfd_state"] == "Up"
    ));

    let start = std::time::Instant::now();
    t.link(0, false);
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(10), || {
            !t.kernel_next_hops(VIP_ADDR, false)
                .contains(&IpAddr::V4(node_ip(0)))
        }),
        "next hop still there: {}",
        t.kernel_route(VIP_ADDR, false)
    );
    let took = start.elapsed();
    eprintln!("BFD link down -> next hop gone in {took:?}");
    assert_eq!(t.kernel_next_hops(VIP_ADDR, false).len(), 2);

    // Link back: the session and the next hop return.
    t.link(0, true);
    assert!(
        wait_until(Duration::from_secs(60), STEP, || t
            .kernel_next_hops(VIP_ADDR, false)
            .len()
            == 3),
        "next hop did not come back: {}",
        t.kernel_route(VIP_ADDR, false)
    );
}

#[test]
fn ipv6_transport_session_and_aggregate() {
    require(&["ip"]);
    let mut t = Topology::new(1);
    let frr = Frr::start(
        &mut t,
        &[FrrNeighbor {
            addr: node_ip6(0).into(),
            ..Default::default()
        }],
    );
    // Session over IPv6; next hop defaults to the session's local address; a /64 aggregate.
    let cfg = json!({
        "listen": format!("[{}]:179", node_ip6(0)),
        "peers": [{
            "address": ROUTER6.to_string(), "peer_as": ROUTER_AS, "my_as": ROUTER_AS,
            "router_id": node_ip(0).to_string(), "hold_time": 9,
            "connect_retry_min": {"secs": 0, "nanos": 200_000_000},
            "connect_retry_max": {"secs": 2, "nanos": 0},
        }],
        "routes": [{"prefix": "fd00:201::/64"}],
    });
    let _node = Node::start(&t, 0, &cfg);
    assert!(
        wait_until(LONG, STEP, || frr.peer_state(node_ip6(0)) == "Established"),
        "{}",
        frr.try_vtysh("show bgp summary").unwrap_or_default()
    );
    assert!(
        wait_until(LONG, STEP, || frr.rib_next_hops("fd00:201::/64", true)
            == vec![node_ip6(0).to_string()]),
        "{}",
        frr.try_vtysh("show ipv6 route").unwrap_or_default()
    );
    assert_eq!(
        t.kernel_next_hops("fd00:201::/64", true),
        vec![IpAddr::V6(node_ip6(0))]
    );
}
