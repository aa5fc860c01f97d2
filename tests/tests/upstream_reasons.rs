//! The events a Service's owner greps for carry upstream's reasons and constant messages:
//! `UpdateLoadBalancerFailed` when new hosts cannot be written, `DeleteLoadBalancerFailed`
//! when the load balancer cannot be deleted, and an `UpdatedLoadBalancer` note that does not
//! change with the node count (an event series only counts repeats of the same message).

use berth_tests::*;
use serde_json::{Value, json};
use std::time::Duration;

fn notes(cloud: &Cloud, name: &str, reason: &str) -> Vec<String> {
    cloud
        .events(name)
        .iter()
        .filter(|e| e["reason"] == reason)
        .map(|e| {
            e["note"]
                .as_str()
                .or(e["message"].as_str())
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

fn count(e: &Value) -> u64 {
    e["series"]["count"]
        .as_u64()
        .or(e["count"].as_u64())
        .unwrap_or(1)
}

#[test]
fn failed_updates_and_deletes_use_upstream_reasons_and_updates_a_constant_note() {
    let cloud = Cloud::start("reasons");
    let _berth = Controller::start(
        &cloud,
        "e2e-reasons",
        "berth-reasons",
        &[
            "--default-class",
            "--retry-min",
            "200ms",
            "--retry-max",
            "2s",
        ],
    );
    cloud.apply(&[
        pod("web-1", "web", Some("node-1")),
        lb_service("web", "web"),
    ]);
    cloud.wait_address("web");
    let id = cloud.wait_lb_for("web");

    // New hosts cannot be written: UpdateLoadBalancerFailed, and the targets stay.
    cloud.set_lb_faults(json!({"errorRate": 1.0, "verbs": ["update"]}));
    cloud.apply(&[json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-4"}})]);
    wait_for("an UpdateLoadBalancerFailed warning", DEADLINE, || {
        let n = notes(&cloud, "web", "UpdateLoadBalancerFailed");
        n.first()
            .filter(|n| n.starts_with("Error updating load balancer with new hosts"))
            .cloned()
    });
    assert!(
        !notes(&cloud, "web", "SyncLoadBalancerFailed")
            .iter()
            .any(|n| n.contains("hosts")),
        "a host update failure is not reported as a sync failure"
    );
    cloud.set_lb_faults(json!({}));
    wait_for("node-4 behind the load balancer", DEADLINE, || {
        lb_targets(&cloud.lb(&id)?)
            .contains(&"node-4".to_string())
            .then_some(())
    });
    cloud.apply(&[json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-5"}})]);
    wait_for("node-5 behind the load balancer", DEADLINE, || {
        lb_targets(&cloud.lb(&id)?)
            .contains(&"node-5".to_string())
            .then_some(())
    });
    // Two host updates with different node counts: one constant note, counted as a series.
    let updated = wait_for("two UpdatedLoadBalancer occurrences", DEADLINE, || {
        let evs: Vec<Value> = cloud
            .events("web")
            .into_iter()
            .filter(|e| e["reason"] == "UpdatedLoadBalancer")
            .collect();
        (evs.iter().map(count).sum::<u64>() >= 2).then_some(evs)
    });
    for e in &updated {
        let note = e["note"].as_str().or(e["message"].as_str()).unwrap_or("");
        assert_eq!(note, "Updated load balancer with new hosts", "{e}");
    }

    // The load balancer cannot be deleted: DeleteLoadBalancerFailed, the Service waits.
    cloud.set_lb_faults(json!({"errorRate": 1.0, "verbs": ["delete"]}));
    cloud.kubectl_ok(&["delete", "service", "web", "--wait=false"]);
    wait_for("a DeleteLoadBalancerFailed warning", DEADLINE, || {
        let n = notes(&cloud, "web", "DeleteLoadBalancerFailed");
        n.first()
            .filter(|n| n.starts_with("Error deleting load balancer"))
            .cloned()
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        cloud.service("web").is_some(),
        "the finalizer holds the Service"
    );
    assert!(cloud.lb(&id).is_some());
    cloud.set_lb_faults(json!({}));
    wait_for("the Service and its load balancer to go", DEADLINE, || {
        (cloud.service("web").is_none() && cloud.lb(&id).is_none()).then_some(())
    });
}
