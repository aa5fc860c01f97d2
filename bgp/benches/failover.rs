//! How fast a node's next hop leaves the router (FRR) in four failure modes, 5 runs each:
//! link down with BFD 300 ms x 3, link down without BFD (hold time 9 s), withdraw, SIGTERM.
//! "Gone" is read from the kernel route FRR installed in the router namespace, polled every
//! 10 ms. Needs root and frr. Prints median and max. Run: `cargo bench -p berth-bgp --bench failover`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const VIP: &str = "10.200.0.1";
const RUNS: usize = 5;
const POLL: Duration = Duration::from_millis(10);

fn vip() -> Value {
    json!({"prefix": format!("{VIP}/32")})
}

fn has(t: &Topology, i: usize) -> bool {
    t.kernel_next_hops(VIP, false)
        .contains(&IpAddr::V4(node_ip(i)))
}

fn wait_present(t: &Topology, i: usize) {
    assert!(
        wait_until(Duration::from_secs(90), Duration::from_millis(50), || has(
            t, i
        )),
        "next hop {} did not come (back): {}",
        node_ip(i),
        t.kernel_route(VIP, false)
    );
}

/// Time from `act` until node `i`'s next hop is gone.
fn measure(t: &Topology, i: usize, act: impl FnOnce()) -> Duration {
    let start = Instant::now();
    act();
    assert!(
        wait_until(Duration::from_secs(60), POLL, || !has(t, i)),
        "next hop {} never went",
        node_ip(i)
    );
    start.elapsed()
}

fn report(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let all: Vec<String> = v.iter().map(|d| format!("{:.0}", ms(*d))).collect();
    println!(
        "{name:<40} median {:>7.0} ms   max {:>7.0} ms   runs [{}]",
        ms(v[v.len() / 2]),
        ms(*v.last().unwrap()),
        all.join(", ")
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would too: only run when benching.
    if !std::env::args().any(|a| a == "--bench") {
        println!("failover: run with `cargo bench -p berth-bgp --bench failover`");
        return;
    }
    require(&["ip"]);
    let mut t = Topology::new(3);
    let neighbors = vec![
        FrrNeighbor {
            addr: node_ip(0).into(),
            bfd: true,
            timers: Some((30, 90)),
            ..Default::default()
        },
        FrrNeighbor {
            addr: node_ip(1).into(),
            timers: Some((3, 9)),
            ..Default::default()
        },
        FrrNeighbor {
            addr: node_ip(2).into(),
            timers: Some((3, 9)),
            ..Default::default()
        },
    ];
    let _frr = Frr::start(&mut t, &neighbors);
    let _n0 = Node::start(
        &t,
        0,
        &node_config(0, ROUTER_AS, 90, true, None, json!([vip()])),
    );
    let _n1 = Node::start(
        &t,
        1,
        &node_config(1, ROUTER_AS, 9, false, None, json!([vip()])),
    );
    let cfg2 = node_config(2, ROUTER_AS, 9, false, None, json!([vip()]));
    let mut n2 = Node::start(&t, 2, &cfg2);
    for i in 0..3 {
        wait_present(&t, i);
    }

    let mut bfd = vec![];
    for _ in 0..RUNS {
        wait_present(&t, 0);
        // Let BFD reach Up with fast timers after (re)establishment.
        std::thread::sleep(Duration::from_secs(3));
        bfd.push(measure(&t, 0, || t.link(0, false)));
        t.link(0, true);
    }
    report("BFD 300ms x3, link down", bfd);

    let mut hold = vec![];
    for _ in 0..RUNS {
        wait_present(&t, 1);
        hold.push(measure(&t, 1, || t.link(1, false)));
        t.link(1, true);
    }
    report("no BFD (hold 9 s), link down", hold);

    let mut wd = vec![];
    for _ in 0..RUNS {
        wait_present(&t, 2);
        wd.push(measure(&t, 2, || {
            n2.command(json!({"withdraw": format!("{VIP}/32")}))
        }));
        n2.command(json!({"announce": vip()}));
    }
    report("withdraw", wd);

    let mut term = vec![];
    for _ in 0..RUNS {
        wait_present(&t, 2);
        term.push(measure(&t, 2, || n2.send_sigterm()));
        assert!(n2.wait_exit().success());
        n2 = Node::start(&t, 2, &cfg2);
    }
    report("SIGTERM (graceful shutdown)", term);
}
