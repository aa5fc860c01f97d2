//! BGP mode end to end against BIRD 2, in the world of `bgp_speaker.rs` with BIRD instead of
//! FRR in the router namespace (root and bird2 required; a missing one fails the test).
//!
//! BIRD peers over iBGP with the three nodes' speakers and exports to the kernel with
//! `merge paths on`. Shown: `birdc show protocols` with three sessions Established, the VIP in
//! BIRD's table from all three nodes and a multipath kernel route in the router namespace,
//! traffic through the router on every node, and the route gone when the Service is deleted.

#[path = "bgp/harness.rs"]
mod harness;
#[path = "bgp/routers.rs"]
mod routers;
use harness::*;

use berth_tests::wait_for;
use serde_json::json;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(40);

#[test]
fn bgp_speaker_with_bird_end_to_end() {
    let c = Cluster::start_with("bgp-bird", Router::Bird);
    let bird = c.bird();
    let all: Vec<String> = (0..3).map(node_ip).collect();

    // Sessions Established with BIRD.
    let protocols = wait_for("3 BGP sessions Established at BIRD", LONG, || {
        let out = bird.birdc("show protocols")?;
        let est = out
            .lines()
            .filter(|l| l.starts_with("node") && l.contains("Established"))
            .count();
        (est == 3).then_some(out)
    });
    println!("bird: birdc show protocols:\n{}", protocols.trim());

    // A VIP from all three nodes; the kernel route is multipath.
    let web = c.service("web", json!({}));
    let routes = wait_for("the VIP from 3 nodes in BIRD's table", LONG, || {
        let out = bird.birdc(&format!("show route for {web} all"))?;
        let mut via: Vec<String> = out
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0] == "via")
            .map(|w| w[1].to_string())
            .collect();
        via.sort();
        via.dedup();
        (via == all).then_some(out)
    });
    println!("bird: birdc show route for {web} all:\n{}", routes.trim());
    assert!(routes.contains(&format!("{web}/32")), "{routes}");
    assert!(routes.contains("BGP.local_pref: 150"), "{routes}");
    assert!(routes.contains("BGP.community: (64512,100)"), "{routes}");
    assert!(
        routes.contains("BGP.large_community: (64512, 1, 2)"),
        "{routes}"
    );
    wait_for("a multipath kernel route at the router", LONG, || {
        (c.net.kernel_next_hops(&web) == all).then_some(())
    });
    println!(
        "bird: router kernel route: {}",
        run(&["ip", "-n", &c.net.router, "route", "show", &web]).trim()
    );

    // Traffic through the router lands on every node.
    let counts = spread(&c.net, &web, 150);
    println!("bird: 150 connections to {web}:{PORT}: {counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 150, "{counts:?}");
    for i in 1..=3 {
        let got = counts.get(&format!("node-{i}")).copied().unwrap_or(0);
        assert!(got >= 22, "node-{i} got {got} of 150 (< 15%): {counts:?}");
    }

    // Service deleted: the route goes from BIRD and from the kernel.
    let t0 = Instant::now();
    c.kubectl(&["delete", "service", "web", "--wait=false"])
        .expect("delete web");
    let took = time_until("web's route gone after deletion", LONG, || {
        c.net.kernel_next_hops(&web).is_empty()
    });
    wait_for("web's route gone from BIRD", LONG, || {
        let out = bird.birdc("show route")?;
        (!out.contains(&format!("{web}/32"))).then_some(())
    });
    println!(
        "bird: Service deleted -> route gone from the router's kernel in {took:?} (kubectl included: {:?})",
        t0.elapsed()
    );
}
