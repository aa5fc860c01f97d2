//! BGP mode end to end, in network namespaces with a real router (root and FRR required; a
//! missing one fails the test, never skips it).
//!
//! ```text
//!  client 10.98.0.2 ── router 10.98.0.1 │ br0 10.97.0.1, fd97::1 ── node-1..3 10.97.0.11-13
//!  mock-cloud, berth controller          FRR: zebra, bgpd, bfdd     berth speaker on each
//! ```
//!
//! `berth controller --provider l2` allocates VIPs from an IPAddressPool; each node's
//! `berth speaker` peers with FRR (BGPPeer) and announces the VIPs (BGPAdvertisement, no
//! L2Advertisement); a listener on every node stands in for kube-proxy. Shown: sessions
//! Established, three next hops in FRR's RIB and a multipath kernel route, 300 connections
//! spread over the nodes, local-pref and communities at FRR, ETP=Local, withdrawal on
//! Service deletion and on SIGTERM (timed), BGPSessionStatus objects, bad BGPPeers and a
//! missing Secret reported without harming the good peer, TCP MD5 and an IPv6 VIP.

#[path = "bgp/harness.rs"]
mod harness;
#[path = "bgp/routers.rs"]
mod routers;
use harness::*;

use berth_tests::wait_for;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

#[test]
fn bgp_speaker_end_to_end() {
    let mut c = Cluster::start();
    const LONG: Duration = Duration::from_secs(40);
    let all: Vec<String> = (0..3).map(node_ip).collect();

    // 1. Sessions Established with FRR; a VIP with three next hops, multipath in the kernel.
    for ip in &all {
        wait_for(&format!("{ip} Established at FRR"), LONG, || {
            (c.frr().state(ip) == "Established").then_some(())
        });
    }
    println!("bgp: 3 sessions Established at FRR");
    let web = c.service("web", json!({}));
    let prefix = format!("{web}/32");
    wait_for("3 next hops in FRR's RIB", LONG, || {
        (c.frr().rib_next_hops(&prefix) == all).then_some(())
    });
    wait_for("a multipath kernel route at the router", LONG, || {
        (c.net.kernel_next_hops(&web) == all).then_some(())
    });
    println!(
        "bgp: router kernel route: {}",
        run(&["ip", "-n", &c.net.router, "route", "show", &web]).trim()
    );
    let v = c
        .frr()
        .json(&format!("show bgp ipv4 unicast {prefix} json"));
    let path = &v["paths"][0];
    assert_eq!(path["locPrf"], 150, "{v}");
    assert_eq!(path["community"]["string"], "64512:100", "{v}");
    assert_eq!(path["largeCommunity"]["string"], "64512:1:2", "{v}");
    for i in 0..3 {
        let node = format!("node-{}", i + 1);
        wait_for(&format!("BGPSessionStatus router-{node}"), LONG, || {
            let (state, routes, _) = c.session("router", &node)?;
            (state == "Established" && routes == 1).then_some(())
        });
    }
    println!(
        "bgp: kubectl get bgpsessionstatuses:\n{}",
        c.kubectl(&["get", "bgpsessionstatuses"]).unwrap()
    );

    // 2. Traffic: 300 connections through the router land on every node.
    let counts = spread(&c.net, &web, 300);
    println!("bgp: 300 connections to {web}:{PORT}: {counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 300, "{counts:?}");
    for i in 1..=3 {
        let got = counts.get(&format!("node-{i}")).copied().unwrap_or(0);
        assert!(got >= 45, "node-{i} got {got} of 300 (< 15%): {counts:?}");
    }

    // 3. ETP=Local: only the node with the ready pod is a next hop, and it follows the pod.
    let local = c.service("local", json!({"spec": {"externalTrafficPolicy": "Local"}}));
    let lprefix = format!("{local}/32");
    for (pod, node) in [("local-a", 1usize), ("local-b", 2)] {
        let _ = c.kubectl(&["delete", "pod", "-l", "app=local", "--wait=false"]);
        c.apply(&[json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": pod, "namespace": "default", "labels": {"app": "local"}},
               "spec": {"nodeName": format!("node-{}", node + 1),
                        "containers": [{"name": "c", "image": "x", "ports": [{"containerPort": PORT}]}]}})]);
        wait_for(
            &format!("only node-{} next hop for {local}", node + 1),
            LONG,
            || (c.frr().rib_next_hops(&lprefix) == vec![node_ip(node)]).then_some(()),
        );
        println!(
            "bgp: ETP=Local VIP {local} next hop follows the pod to node-{}",
            node + 1
        );
    }

    // 4. Bad BGPPeers. Malformed ones are refused at apply time by the CRD's rules; those
    // only the speaker can judge (a hold time BGP forbids, a missing BFDProfile) get status
    // and a Warning event; the good peer is unaffected.
    for (peer, spec, want) in [
        (
            "bad-asn",
            json!({"peerAddress": "10.97.0.250", "peerASN": 0, "myASN": AS}),
            "spec.peerASN",
        ),
        (
            "bad-addr",
            json!({"peerAddress": "nope", "peerASN": AS, "myASN": AS}),
            "must be an IPv4 or IPv6 address",
        ),
    ] {
        let f = c.dir.join(format!("{peer}.json"));
        let obj = json!({"apiVersion": "berth.io/v1alpha1", "kind": "BGPPeer",
                         "metadata": {"name": peer}, "spec": spec});
        std::fs::write(&f, obj.to_string()).expect("write manifest");
        let err = c
            .kubectl(&["apply", "-f", f.to_str().unwrap()])
            .expect_err("a malformed BGPPeer is refused");
        assert!(err.contains(want), "{peer}: {err}");
    }
    c.apply(&[
        json!({"apiVersion": "berth.io/v1alpha1", "kind": "BGPPeer", "metadata": {"name": "bad-hold"},
               "spec": {"peerAddress": "10.97.0.250", "peerASN": AS, "myASN": AS, "holdTime": "1s"}}),
        json!({"apiVersion": "berth.io/v1alpha1", "kind": "BGPPeer", "metadata": {"name": "bad-bfd"},
               "spec": {"peerAddress": "10.97.0.251", "peerASN": AS, "myASN": AS, "bfdProfile": "missing"}}),
    ]);
    for (peer, want) in [
        ("bad-hold", "must be 0 or at least 3s"),
        ("bad-bfd", "\"missing\" does not exist"),
    ] {
        let (state, _, err) = wait_for(&format!("{peer} status"), LONG, || {
            c.session(peer, "node-1").filter(|s| !s.2.is_empty())
        });
        assert_eq!(state, "Invalid");
        assert!(err.contains(want), "{peer}: {err}");
        wait_for(&format!("a Warning event on {peer}"), LONG, || {
            let ev = c.warnings_about(peer);
            (ev.contains("Warning") && ev.contains("BGPPeerInvalid")).then_some(())
        });
        println!("bgp: {peer}: {err}");
    }
    assert_eq!(
        c.frr().rib_next_hops(&prefix),
        all,
        "the good peer is unaffected"
    );
    for i in 0..3 {
        assert_eq!(c.frr().state(&node_ip(i)), "Established");
        assert!(
            c.speakers[i].as_mut().unwrap().try_exit().is_none(),
            "speaker {i} exited"
        );
    }

    // 5. TCP MD5 and an IPv6 VIP over MP-BGP: a peer over IPv6 whose password Secret is
    // missing, then wrong, then right.
    let v6 = c.service(
        "web6",
        json!({"spec": {"ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack"}}),
    );
    c.apply(
        &[json!({"apiVersion": "berth.io/v1alpha1", "kind": "BGPPeer",
                     "metadata": {"name": "router6"},
                     "spec": {"peerAddress": ROUTER6, "peerASN": AS, "myASN": AS, "holdTime": "9s",
                              "passwordSecret": {"name": "bgp-md5"}}})],
    );
    let (_, _, err) = wait_for("router6: the missing Secret reported", LONG, || {
        c.session("router6", "node-1")
            .filter(|s| s.2.contains("not found"))
    });
    println!("bgp: router6 without its Secret: {err}");
    wait_for("a Warning event on router6", LONG, || {
        c.warnings_about("router6")
            .contains("BGPPeerInvalid")
            .then_some(())
    });
    // Encoded by kubectl, as `data` (what the API server keeps).
    let secret = |pw: &str| -> Value {
        let out = c
            .kubectl(&[
                "create",
                "secret",
                "generic",
                "bgp-md5",
                "-n",
                "berth-system",
                &format!("--from-literal=password={pw}"),
                "--dry-run=client",
                "-o",
                "json",
            ])
            .expect("kubectl create secret --dry-run");
        serde_json::from_str(&out).expect("secret json")
    };
    c.apply(&[secret("wrong-password")]);
    let (state, _, err) = wait_for("router6: the wrong password reported", LONG, || {
        c.session("router6", "node-1")
            .filter(|s| s.2.contains("MD5"))
    });
    assert_ne!(state, "Established");
    assert_ne!(c.frr().state(&node_ip6(0)), "Established");
    println!("bgp: router6 with a wrong password: {state}: {err}");
    c.apply(&[secret(MD5)]);
    let all6: Vec<String> = (0..3).map(node_ip6).collect();
    for ip in &all6 {
        wait_for(
            &format!("{ip} Established at FRR (MD5)"),
            Duration::from_secs(60),
            || (c.frr().state(ip) == "Established").then_some(()),
        );
    }
    let prefix6 = format!("{v6}/128");
    wait_for("3 IPv6 next hops in FRR's RIB", LONG, || {
        (c.frr().rib_next_hops(&prefix6) == all6).then_some(())
    });
    let v = c
        .frr()
        .json(&format!("show bgp ipv6 unicast {prefix6} json"));
    assert_eq!(v["paths"][0]["locPrf"], 150, "{v}");
    println!("bgp: TCP MD5 sessions Established; IPv6 VIP {v6} via {all6:?}");

    // 6. SIGTERM on node-3's speaker: its next hop goes (graceful withdraw + Cease).
    let t0 = Instant::now();
    let mut p = c.speakers[2].take().unwrap();
    p.signal("TERM");
    let want: Vec<String> = all[..2].to_vec();
    let took = time_until("node-3's next hop gone after SIGTERM", LONG, || {
        c.net.kernel_next_hops(&web) == want
    });
    let status = p.wait_exit(Duration::from_secs(10)).expect("speaker exits");
    assert!(status.success(), "speaker exited with {status}");
    println!(
        "bgp: SIGTERM -> node-3's next hop gone from the router's kernel route in {took:?} (exit after {:?})",
        t0.elapsed()
    );
    let nb = c
        .frr()
        .json(&format!("show bgp neighbor {} json", node_ip(2)));
    println!(
        "bgp: FRR's last notification from node-3: {}",
        nb[node_ip(2)]["lastNotificationReason"]
    );
    // Its last word in its BGPSessionStatus.
    assert_eq!(
        c.session("router", "node-3"),
        Some(("Idle".into(), 0, "speaker stopped".into()))
    );
    c.start_speaker(2);
    wait_for("node-3 back", LONG, || {
        (c.net.kernel_next_hops(&web) == all).then_some(())
    });

    // 7. Service deleted: its route goes.
    let t0 = Instant::now();
    c.kubectl(&["delete", "service", "web", "--wait=false"])
        .expect("delete web");
    let took = time_until("web's route gone after deletion", LONG, || {
        c.net.kernel_next_hops(&web).is_empty()
    });
    assert!(c.frr().rib_next_hops(&prefix).is_empty());
    println!(
        "bgp: Service deleted -> route gone from the router's kernel in {took:?} (kubectl included: {:?})",
        t0.elapsed()
    );
}
