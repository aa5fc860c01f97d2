//! berth at 1,000 Services × 100 nodes (the scale bench's small configuration): the counts of
//! every phase are asserted exactly, the times only reported (this machine is too noisy to
//! assert them; `cargo bench -p berth --bench scale` measures them).

use berth_tests::binary;
use berth_tests::scale::{ScaleConfig, Scenario};
use std::time::Duration;

const SERVICES: usize = 1_000;
const NODES: usize = 100;
const STORM: usize = 20;
const DELETE: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_services_through_restart_node_changes_storms_and_a_mass_deletion() {
    let cfg = ScaleConfig {
        services: SERVICES,
        nodes: NODES,
        latency_ms: 20,
        workers: 16,
        storm_nodes: STORM,
        storm_window: Duration::from_secs(2),
        delete_services: DELETE,
        quiet: Duration::from_secs(2),
        phase_timeout: Duration::from_secs(300),
        extra_args: Vec::new(),
    };
    let mut s = Scenario::start(cfg, binary("berth"))
        .await
        .expect("mock-cloud with 1,000 Services");
    let n = SERVICES as u64;

    let p = s.cold_start().await.expect("cold start").clone();
    eprintln!("{}", p.line());
    assert_eq!(p.lb_writes, n, "cold start: one create per load balancer");
    assert_eq!(p.max_writes_per_lb, 1, "cold start");
    assert_eq!(p.lbs_written, SERVICES, "cold start");

    let p = s.restart().await.expect("restart").clone();
    eprintln!("{}", p.line());
    assert_eq!(p.lb_puts, 0, "restart: no load balancer may be written");
    assert_eq!(p.lb_deletes, 0, "restart");
    assert_eq!(
        p.api_writes, 0,
        "restart: every Service already shows its load balancer, so no status patch and no \
         Ensuring/Ensured event is written"
    );
    assert!(p.ready.is_some());

    let p = s.node_added().await.expect("one node added").clone();
    eprintln!("{}", p.line());
    assert_eq!(
        p.lb_writes, n,
        "one node added: exactly one write per load balancer"
    );
    assert_eq!(p.lb_puts, n, "one node added: no retried or idle PUT");
    assert_eq!(p.max_writes_per_lb, 1, "one node added");

    let p = s.node_removed().await.expect("one node removed").clone();
    eprintln!("{}", p.line());
    assert_eq!(
        p.lb_writes, n,
        "one node removed: exactly one write per load balancer"
    );
    assert_eq!(p.max_writes_per_lb, 1, "one node removed");

    for phase in ["storm: nodes added", "storm: nodes removed"] {
        let p = if phase.ends_with("added") {
            s.storm_added().await
        } else {
            s.storm_removed().await
        }
        .expect(phase)
        .clone();
        eprintln!("{}", p.line());
        assert_eq!(
            p.lbs_written, SERVICES,
            "{phase}: every load balancer updated"
        );
        assert!(
            p.max_writes_per_lb <= 2,
            "{phase}: a load balancer was written {} times for one storm of {STORM} nodes",
            p.max_writes_per_lb
        );
    }

    let p = s.mass_delete().await.expect("mass deletion").clone();
    eprintln!("{}", p.line());
    assert_eq!(
        p.lb_deletes, DELETE as u64,
        "one DELETE per deleted Service"
    );
    assert_eq!(p.lb_writes, 0, "deletion writes no load balancer");
    assert_eq!(p.load_balancers, SERVICES - DELETE);

    s.stop().await;
}
