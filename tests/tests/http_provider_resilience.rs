//! `berth controller --provider http` when things go wrong, end to end against
//! `mock-cloud serve`: a crash in the middle of provisioning, changes made while the
//! controller is down, injected API faults, and leader failover after SIGKILL.

use berth_tests::*;
use serde_json::json;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// The crash test's replicas: a short lease, so a restarted replica does not wait out the
/// default 15 s lease the SIGKILLed one still holds.
const CRASH_FLAGS: &[&str] = &[
    "--default-class",
    "--leader-elect-lease-duration",
    "4s",
    "--leader-elect-renew-deadline",
    "3s",
    "--leader-elect-retry-period",
    "1s",
];

/// Test 7: Crash safety: SIGKILL mid-provisioning, changes while berth is down.
#[test]
fn crash_mid_provisioning_and_changes_while_down_converge_exactly_once() {
    let cloud = Cloud::start("crash");
    // Slow the LB API down so the kill lands mid-provisioning.
    cloud.set_lb_faults(json!({"latencyMs": 300}));
    let mut berth = Controller::start(&cloud, "e2e-crash", "berth-crash-1", CRASH_FLAGS);
    let names: Vec<String> = (0..20).map(|i| format!("s-{i:02}")).collect();
    let mut objects = vec![pod("web-1", "crash", None)];
    objects.extend(names.iter().map(|n| tcp_service(n, "crash", 80)));
    cloud.apply(&objects);
    let at_kill = wait_for("the first load balancer to be written", DEADLINE, || {
        let n = cloud.lb_stats()["writes"].as_u64().unwrap_or(0);
        (n >= 1).then_some(n)
    });
    berth.crash();
    let exist_at_kill = cloud.lbs().len();
    println!("SIGKILLed berth after {at_kill} writes; {exist_at_kill} load balancers exist");
    assert!(exist_at_kill < 20, "the kill landed mid-provisioning");
    cloud.set_lb_faults(json!({}));

    let restarted = Instant::now();
    let mut berth = Controller::start(&cloud, "e2e-crash", "berth-crash-2", CRASH_FLAGS);
    let services = wait_for(
        "all 20 Services to get an address",
        Duration::from_secs(60),
        || {
            let items = cloud.list("service", "e2e=berth").ok()?;
            (items.len() == 20 && items.iter().all(|s| ingress_ip(s).is_some())).then_some(items)
        },
    );
    println!(
        "after the restart all 20 Services had addresses in {:.1}s",
        restarted.elapsed().as_secs_f64()
    );
    let lbs = cloud.lbs();
    assert_eq!(lbs.len(), 20, "exactly one load balancer per Service");
    let owners: BTreeSet<String> = lbs
        .iter()
        .filter_map(|l| l["spec"]["labels"]["berth.io/service-uid"].as_str())
        .map(str::to_string)
        .collect();
    let uids: BTreeSet<String> = services.iter().map(uid_of).collect();
    assert_eq!(
        owners, uids,
        "each load balancer belongs to one live Service"
    );
    let vips: BTreeSet<_> = services.iter().filter_map(ingress_ip).collect();
    assert_eq!(vips.len(), 20, "20 distinct addresses");
    assert_eq!(
        wait_answer(Proto::Tcp, ingress_ip(&services[7]).unwrap(), 80),
        "web-1"
    );

    // While berth is down: one LB deleted behind its back, one Service deleted without it.
    assert!(berth.stop().success());
    let lb0 = cloud.lb_for("s-00").expect("lb of s-00")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let lb1 = cloud.lb_for("s-01").expect("lb of s-01")["id"]
        .as_str()
        .unwrap()
        .to_string();
    cloud.lb_delete(&lb0);
    let s1 = cloud.service("s-01").expect("s-01");
    assert_eq!(finalizers(&s1), [FINALIZER]);
    cloud.kubectl_ok(&[
        "patch",
        "service",
        "s-01",
        "--type=json",
        "-p",
        &json!([
            {"op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER},
            {"op": "remove", "path": "/metadata/finalizers/0"},
        ])
        .to_string(),
    ]);
    cloud.kubectl_ok(&["delete", "service", "s-01", "--timeout=30s"]);
    assert!(cloud.service("s-01").is_none());

    let _berth = Controller::start(&cloud, "e2e-crash", "berth-crash-3", CRASH_FLAGS);
    let recreated = wait_for("s-00's load balancer to be recreated", DEADLINE, || {
        cloud.lb(&lb0)
    });
    let vip = recreated["status"]["addresses"][0]["ip"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for(
        "s-00's status to carry the recreated address",
        DEADLINE,
        || (ingress_ip(&cloud.service("s-00")?)?.to_string() == vip).then_some(()),
    );
    assert_eq!(wait_answer(Proto::Tcp, vip.parse().unwrap(), 80), "web-1");
    wait_for(
        "the orphan of s-01 to be garbage-collected",
        DEADLINE,
        || cloud.lb(&lb1).is_none().then_some(()),
    );
    assert_eq!(cloud.lbs().len(), 19);

    // Drift while berth runs: the periodic resync repairs it.
    let lb2 = cloud.lb_for("s-02").expect("lb of s-02")["id"]
        .as_str()
        .unwrap()
        .to_string();
    cloud.lb_delete(&lb2);
    let t = Instant::now();
    wait_for(
        "s-02's load balancer to be recreated by resync",
        DEADLINE,
        || cloud.lb(&lb2),
    );
    println!(
        "drift repaired in {:.1}s (resync 5s)",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(cloud.lbs().len(), 19);
}

/// Test 8: 30% errors and 200 ms latency on the API server and the LB API: convergence, no leaks.
#[test]
fn twenty_services_converge_and_clean_up_under_injected_faults() {
    let cloud = Cloud::start("faults");
    let names: Vec<String> = (0..20).map(|i| format!("f-{i:02}")).collect();
    let mut objects = vec![pod("web-1", "faulty", None)];
    objects.extend(names.iter().map(|n| tcp_service(n, "faulty", 80)));
    cloud.apply(&objects);
    // Core API (Services, Nodes, Pods) and events; the leader Lease is spared so the single
    // replica does not exit on a lost lease (that path is test 9's business).
    cloud.set_api_faults(json!({
        "latencyMs": 200,
        "errorRate": 0.3,
        "verbs": ["create", "update", "patch", "get", "list"],
        "pathPrefixes": ["/api/", "/apis/events.k8s.io/"],
    }));
    cloud.set_lb_faults(json!({"latencyMs": 200, "errorRate": 0.3}));
    let started = Instant::now();
    let _berth = Controller::start(
        &cloud,
        "e2e-faults",
        "berth-faults",
        &["--default-class", "--retry-max", "5s"],
    );
    let services = wait_for(
        "all 20 Services to converge under faults",
        Duration::from_secs(150),
        || {
            let items = cloud.list("service", "e2e=berth").ok()?;
            (items.len() == 20 && items.iter().all(|s| ingress_ip(s).is_some())).then_some(items)
        },
    );
    let converged = started.elapsed();
    for s in &services {
        let ip = ingress_ip(s).unwrap();
        assert_eq!(wait_answer(Proto::Tcp, ip, 80), "web-1");
    }
    let lbs = cloud.lbs();
    assert_eq!(lbs.len(), 20, "one load balancer per Service");
    let api = cloud.api_stats();
    let lb = cloud.lb_stats();
    let api_err = api["injectedErrors"].as_u64().unwrap_or(0);
    let lb_err = lb["injectedErrors"].as_u64().unwrap_or(0);
    println!(
        "20 Services converged under faults in {:.1}s (injected errors: API server {api_err}, LB API {lb_err})",
        converged.as_secs_f64()
    );
    assert!(api_err > 0 && lb_err > 0, "faults were injected");

    // Delete them all, faults still on: nothing leaks.
    let started = Instant::now();
    wait_for("kubectl delete to succeed", Duration::from_secs(60), || {
        cloud
            .try_kubectl(&["delete", "service", "-l", "e2e=berth", "--wait=false"])
            .ok()
    });
    wait_for(
        "every Service and load balancer to be gone",
        Duration::from_secs(150),
        || {
            let left = cloud.list("service", "e2e=berth").ok()?;
            if !left.is_empty() {
                // kubectl may have missed some while the API server failed its requests.
                let _ =
                    cloud.try_kubectl(&["delete", "service", "-l", "e2e=berth", "--wait=false"]);
                return None;
            }
            cloud.lbs().is_empty().then_some(())
        },
    );
    println!(
        "deleted under faults in {:.1}s; LB API stats {}",
        started.elapsed().as_secs_f64(),
        cloud.lb_stats()
    );
    cloud.set_api_faults(json!({}));
    cloud.set_lb_faults(json!({}));
    assert!(cloud.lbs().is_empty(), "no load balancer leaked");
    assert!(cloud.list("service", "e2e=berth").unwrap().is_empty());
}

/// Test 9: Two replicas with leader election: one writer; SIGKILL it and the other takes over.
#[test]
fn leader_election_fails_over_after_sigkill() {
    let cloud = Cloud::start("leader");
    let lease = [
        "--default-class",
        "--leader-elect-lease-duration",
        "4s",
        "--leader-elect-renew-deadline",
        "3s",
        "--leader-elect-retry-period",
        "1s",
    ];
    let mut a = Controller::start(&cloud, "e2e-leader", "replica-a", &lease);
    let mut b = Controller::start(&cloud, "e2e-leader", "replica-b", &lease);
    let holder = wait_for("a leader", DEADLINE, || lease_holder(&cloud));
    let (leader, standby) = if holder == a.identity {
        (&mut a, &mut b)
    } else {
        assert_eq!(holder, b.identity);
        (&mut b, &mut a)
    };
    wait_for("berth_leader 1 on the leader only", DEADLINE, || {
        (leader.metric("berth_leader") == Some(1.0) && standby.metric("berth_leader") == Some(0.0))
            .then_some(())
    });

    cloud.apply(&[pod("web-1", "web", None), tcp_service("first", "web", 80)]);
    let ip = cloud.wait_address("first");
    assert_eq!(wait_answer(Proto::Tcp, ip, 80), "web-1");
    let events = wait_for("events on first", DEADLINE, || {
        let e = cloud.events("first");
        (!e.is_empty()).then_some(e)
    });
    for e in &events {
        assert_eq!(
            e["reportingInstance"], leader.identity,
            "only the leader writes: {e}"
        );
    }
    let standby_metrics = standby.metrics().unwrap_or_default();
    assert!(
        !standby_metrics
            .lines()
            .any(|l| l.starts_with("berth_provider_calls_total{")),
        "the standby made no provider calls:\n{standby_metrics}"
    );

    // Kill the leader; a Service created right after must still get its address.
    let killed = Instant::now();
    leader.crash();
    cloud.apply(&[tcp_service("second", "web", 80)]);
    wait_for("the standby to lead", Duration::from_secs(20), || {
        (standby.metric("berth_leader") == Some(1.0)).then_some(())
    });
    let handover = killed.elapsed();
    assert_eq!(
        lease_holder(&cloud).as_deref(),
        Some(standby.identity.as_str())
    );
    println!(
        "leader handover after SIGKILL: {:.2}s (lease 4s, retry 1s)",
        handover.as_secs_f64()
    );
    assert!(
        handover <= Duration::from_secs(4 + 2 + 1),
        "handover took {handover:?}; lease 4s + retry slack"
    );
    let ip2 = cloud.wait_address("second");
    assert_eq!(wait_answer(Proto::Tcp, ip2, 80), "web-1");
    let served = killed.elapsed();
    println!(
        "Service created after the kill served in {:.2}s",
        served.as_secs_f64()
    );
    for e in cloud.events("second") {
        assert_eq!(e["reportingInstance"], standby.identity, "{e}");
    }
}
