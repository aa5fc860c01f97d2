//! The speaker against BIRD 2 in network namespaces (eBGP, one session with TCP MD5).
//! Needs root and the bird2 package; fails (never skips) without them.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const LONG: Duration = Duration::from_secs(30);
const STEP: Duration = Duration::from_millis(100);

fn bird_config() -> String {
    let mut c = format!(
        "router id {ROUTER};\nprotocol device {{}}\n\
         protocol kernel k4 {{ ipv4 {{ export all; }}; merge paths on; }}\n\
         protocol kernel k6 {{ ipv6 {{ export all; }}; merge paths on; }}\n"
    );
    for i in 0..2 {
        let password = if i == 1 { "password \"birdpw\";" } else { "" };
        c += &format!(
            "protocol bgp node{i} {{\n  local {ROUTER} as {ROUTER_AS};\n  neighbor {} as {};\n  \
             hold time 9;\n  connect retry time 1;\n  {password}\n  \
             ipv4 {{ import all; export none; }};\n  ipv6 {{ import all; export none; }};\n}}\n",
            node_ip(i),
            64601 + i
        );
    }
    c
}

#[test]
fn established_with_bird_and_routes_present() {
    require(&["ip"]);
    let mut t = Topology::new(2);
    let bird = Bird::start(&mut t, &bird_config());
    let mut nodes = vec![];
    for i in 0..2 {
        let routes = json!([
            {"prefix": "10.200.0.1/32", "communities": [(64512u32 << 16) | 10]},
            {"prefix": "fd00:200::1/128", "next_hop": node_ip6(i).to_string()},
        ]);
        let password = (i == 1).then_some("birdpw");
        nodes.push(Node::start(
            &t,
            i,
            &node_config(i, 64601 + i as u32, 9, false, password, routes),
        ));
    }
    for i in 0..2 {
        assert!(
            wait_until(LONG, STEP, || bird
                .birdc(&format!("show protocols node{i}"))
                .contains("Established")),
            "node{i}: {}",
            bird.birdc("show protocols all")
        );
    }
    // The VIP with both nodes as next hops (eBGP multipath in the kernel table).
    assert!(
        wait_until(LONG, STEP, || {
            let r = bird.birdc("show route 10.200.0.1/32 all");
            r.contains(&format!("via {}", node_ip(0))) && r.contains(&format!("via {}", node_ip(1)))
        }),
        "{}",
        bird.birdc("show route all")
    );
    let r = bird.birdc("show route 10.200.0.1/32 all");
    assert!(r.contains("(64512,10)"), "community: {r}");
    assert!(r.contains("BGP.as_path: 64601"), "as path: {r}");
    assert!(
        wait_until(LONG, STEP, || bird
            .birdc("show route fd00:200::1/128")
            .contains(&format!("via {}", node_ip6(0)))),
        "{}",
        bird.birdc("show route all")
    );
    assert!(
        wait_until(LONG, STEP, || t.kernel_next_hops("10.200.0.1", false).len()
            == 2),
        "kernel: {}",
        t.kernel_route("10.200.0.1", false)
    );

    // Graceful shutdown of node 0: its next hop goes.
    assert!(nodes[0].sigterm().success());
    assert!(
        wait_until(LONG, STEP, || {
            let r = bird.birdc("show route 10.200.0.1/32");
            !r.contains(&format!("via {}", node_ip(0)))
                && r.contains(&format!("via {}", node_ip(1)))
        }),
        "{}",
        bird.birdc("show route all")
    );
}
