//! The arithmetic of a Deployment rollout, as kube-controller-manager's deployment
//! controller does it, without any API access: how many replicas each ReplicaSet should have
//! next, the pod-template hash, and the Deployment's status conditions.

use serde_json::{Value, json};

/// One ReplicaSet of a Deployment, as the rollout sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsState {
    pub name: String,
    /// `spec.replicas`.
    pub replicas: i64,
    /// `status.availableReplicas`.
    pub available: i64,
}

/// Resolves an int-or-percent (`maxSurge`, `maxUnavailable`) against `total`; percentages
/// round up for surge and down for unavailability, as upstream.
pub fn resolve(v: Option<&Value>, default_percent: i64, total: i64, round_up: bool) -> i64 {
    let percent = |p: i64| {
        let x = p * total;
        if round_up { (x + 99) / 100 } else { x / 100 }
    };
    match v {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0).max(0),
        Some(Value::String(s)) => match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
            Some(p) => percent(p.max(0)),
            None => s.parse().unwrap_or(0),
        },
        _ => percent(default_percent),
    }
}

/// maxSurge and maxUnavailable of a rolling update; both zero becomes unavailable = 1.
pub fn surge_and_unavailable(rolling: Option<&Value>, replicas: i64) -> (i64, i64) {
    let surge = resolve(rolling.and_then(|r| r.get("maxSurge")), 25, replicas, true);
    let unavailable = resolve(
        rolling.and_then(|r| r.get("maxUnavailable")),
        25,
        replicas,
        false,
    )
    .min(replicas);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

/// The next `spec.replicas` of the new ReplicaSet and of each old one (oldest first) for a
/// RollingUpdate step.
pub fn rolling_step(
    replicas: i64,
    surge: i64,
    max_unavailable: i64,
    new: &RsState,
    old: &[RsState],
) -> (i64, Vec<i64>) {
    let old_total: i64 = old.iter().map(|r| r.replicas).sum();
    // Scale up the new ReplicaSet within the surge budget.
    let mut new_replicas = new.replicas;
    if old_total == 0 || new.replicas > replicas {
        new_replicas = replicas;
    } else {
        let all = old_total + new.replicas;
        let max_total = replicas + surge;
        if all < max_total {
            new_replicas = (new.replicas + (max_total - all)).min(replicas);
        }
    }
    // Scale down old ReplicaSets within the availability budget.
    let mut olds: Vec<i64> = old.iter().map(|r| r.replicas).collect();
    if old_total > 0 {
        let min_available = replicas - max_unavailable;
        let all = old_total + new_replicas;
        let new_unavailable = (new_replicas - new.available).max(0);
        let mut budget = all - min_available - new_unavailable;
        // First the old replicas that are not available anyway.
        for (i, r) in old.iter().enumerate() {
            if budget <= 0 {
                break;
            }
            let unhealthy = (olds[i] - r.available).max(0).min(budget);
            olds[i] -= unhealthy;
            budget -= unhealthy;
        }
        // Then available ones, as long as enough stay available.
        let available: i64 = new.available
            + old
                .iter()
                .zip(&olds)
                .map(|(r, n)| r.available.min(*n))
                .sum::<i64>();
        let mut down = (available - min_available).max(0).min(budget.max(0));
        for n in olds.iter_mut() {
            if down <= 0 {
                break;
            }
            let d = (*n).min(down);
            *n -= d;
            down -= d;
        }
    }
    (new_replicas, olds)
}

/// A template as typed clients and kube-apiserver see it: nulls, empty objects and empty
/// lists carry nothing (kubectl sends `creationTimestamp: null`, `resources: {}`), so two
/// templates that differ only in them are the same template.
pub fn normalize(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), normalize(v)))
                .filter(|(_, v)| match v {
                    Value::Null => false,
                    Value::Object(o) => !o.is_empty(),
                    Value::Array(a) => !a.is_empty(),
                    _ => true,
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(normalize).collect()),
        v => v.clone(),
    }
}

/// FNV-1a, 32 bits.
fn fnv32a(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in data {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The `pod-template-hash` of a pod template: FNV-1a of its canonical JSON (and the
/// collision count), spelled with the consonants and digits upstream uses.
pub fn template_hash(template: &Value, collision_count: i64) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut data = serde_json::to_vec(&normalize(template)).unwrap_or_default();
    if collision_count > 0 {
        data.extend(collision_count.to_string().bytes());
    }
    fnv32a(&data)
        .to_string()
        .bytes()
        .map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char)
        .collect()
}

/// The Progressing reason of a rollout past its `progressDeadlineSeconds`.
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";

pub fn condition(type_: &str, ok: bool, reason: &str, message: &str, now: &str) -> Value {
    json!({
        "type": type_, "status": if ok { "True" } else { "False" }, "reason": reason,
        "message": message, "lastUpdateTime": now, "lastTransitionTime": now,
    })
}

/// Keeps a condition's lastTransitionTime (and lastUpdateTime when nothing changed).
pub fn merge_condition(old: Option<&Value>, mut new: Value) -> Value {
    if let Some(old) = old
        && old["status"] == new["status"]
    {
        new["lastTransitionTime"] = old["lastTransitionTime"].clone();
        if old["reason"] == new["reason"] && old["message"] == new["message"] {
            new["lastUpdateTime"] = old["lastUpdateTime"].clone();
        }
    }
    new
}

/// `spec.progressDeadlineSeconds`; None (or the "never" value, MaxInt32) means no deadline,
/// and a paused Deployment has none.
pub fn deadline(d: &Value) -> Option<i64> {
    if d.pointer("/spec/paused") == Some(&json!(true)) {
        return None;
    }
    d.pointer("/spec/progressDeadlineSeconds")
        .and_then(Value::as_i64)
        .filter(|s| *s < i64::from(i32::MAX))
}

/// Whether a rollout moved since the last status, as upstream judges it: more updated,
/// ready or available replicas, or fewer old ones. `counts`: updated, total, ready, available.
pub fn progressed(old: Option<&Value>, counts: [i64; 4]) -> bool {
    let [updated, total, ready, available] = counts;
    let o = |k: &str| {
        old.and_then(|s| s.get(k))
            .and_then(Value::as_i64)
            .unwrap_or(0)
    };
    updated > o("updatedReplicas")
        || total - updated < o("replicas") - o("updatedReplicas")
        || ready > o("readyReplicas")
        || available > o("availableReplicas")
}

/// The Progressing condition of an unfinished rollout: refreshed (lastUpdateTime now) on
/// progress; False with `ProgressDeadlineExceeded` once the deadline passes without any
/// (and so until the rollout moves again).
pub fn rollout_condition(
    old: Option<&Value>,
    rs: &str,
    moved: bool,
    deadline: Option<i64>,
    now: &str,
) -> Value {
    let updating = condition(
        "Progressing",
        true,
        "ReplicaSetUpdated",
        &format!("ReplicaSet \"{rs}\" is progressing."),
        now,
    );
    let Some(old) = old.filter(|_| !moved) else {
        // Progress: a fresh lastUpdateTime, the transition time kept while still True.
        let mut c = updating;
        if let Some(o) = old.filter(|o| o["status"] == "True") {
            c["lastTransitionTime"] = o["lastTransitionTime"].clone();
        }
        return c;
    };
    if old["reason"] == TIMED_OUT {
        return old.clone();
    }
    let since = old["lastUpdateTime"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    let at = chrono::DateTime::parse_from_rfc3339(now).ok();
    let expired = match (deadline, since, at) {
        (Some(secs), Some(since), Some(at)) => (at - since).num_seconds() > secs,
        _ => false,
    };
    if old["reason"] == "ReplicaSetUpdated" && expired {
        let message = format!("ReplicaSet \"{rs}\" has timed out progressing.");
        return merge_condition(
            Some(old),
            condition("Progressing", false, TIMED_OUT, &message, now),
        );
    }
    merge_condition(Some(old), updating)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(replicas: i64, available: i64) -> RsState {
        RsState {
            name: String::new(),
            replicas,
            available,
        }
    }

    #[test]
    fn surge_and_unavailable_follow_upstream_rounding() {
        assert_eq!(surge_and_unavailable(None, 4), (1, 1));
        assert_eq!(surge_and_unavailable(None, 2), (1, 0));
        assert_eq!(surge_and_unavailable(None, 1), (1, 0));
        let r = json!({"maxSurge": 0, "maxUnavailable": "0%"});
        assert_eq!(surge_and_unavailable(Some(&r), 3), (0, 1));
        let r = json!({"maxSurge": "50%", "maxUnavailable": 2});
        assert_eq!(surge_and_unavailable(Some(&r), 3), (2, 2));
    }

    #[test]
    fn a_rollout_of_four_never_drops_below_three_available_nor_exceeds_five() {
        let (surge, unavail) = surge_and_unavailable(None, 4);
        let mut new = rs(0, 0);
        let mut old = vec![rs(4, 4)];
        let mut steps = 0;
        while !(new.replicas == 4 && new.available == 4 && old[0].replicas == 0) {
            let (n, o) = rolling_step(4, surge, unavail, &new, &old);
            assert!(n + o[0] <= 4 + surge, "surge honoured: {n}+{o:?}");
            // Pods become available one step later; old ones go at once.
            let avail_old = old[0].available.min(o[0]);
            assert!(
                avail_old + new.available >= 4 - unavail,
                "availability honoured"
            );
            new = rs(n, new.replicas.min(n));
            old = vec![rs(o[0], avail_old)];
            steps += 1;
            assert!(steps < 20, "rollout converges");
        }
    }

    #[test]
    fn steady_state_scaling_goes_straight_to_the_target() {
        assert_eq!(rolling_step(4, 1, 1, &rs(2, 2), &[]), (4, vec![]));
        assert_eq!(rolling_step(1, 1, 0, &rs(4, 4), &[]), (1, vec![]));
    }

    #[test]
    fn template_hash_is_stable_and_changes_with_the_template() {
        let a = json!({"spec": {"containers": [{"name": "c", "image": "a"}]}});
        let b = json!({"spec": {"containers": [{"name": "c", "image": "b"}]}});
        assert_eq!(template_hash(&a, 0), template_hash(&a.clone(), 0));
        assert_ne!(template_hash(&a, 0), template_hash(&b, 0));
        assert_ne!(template_hash(&a, 0), template_hash(&a, 1));
        let sent = json!({"metadata": {"creationTimestamp": null},
                          "spec": {"containers": [{"name": "c", "image": "a", "resources": {}}]}});
        assert_eq!(template_hash(&sent, 0), template_hash(&a, 0));
        assert!(
            template_hash(&a, 0)
                .chars()
                .all(|c| c.is_ascii_alphanumeric())
        );
    }

    fn at(secs: u32) -> String {
        format!("2024-05-01T10:{:02}:{:02}Z", secs / 60, secs % 60)
    }

    #[test]
    fn a_rollout_that_stops_moving_times_out_after_its_deadline_and_recovers_on_progress() {
        let start = rollout_condition(None, "web-1", false, Some(10), &at(0));
        assert_eq!(
            (&start["status"], &start["reason"]),
            (&json!("True"), &json!("ReplicaSetUpdated"))
        );
        // No progress within the deadline: unchanged, the clock still at the last progress.
        let c = rollout_condition(Some(&start), "web-1", false, Some(10), &at(10));
        assert_eq!(c, start);
        let out = rollout_condition(Some(&c), "web-1", false, Some(10), &at(11));
        assert_eq!(out["status"], "False");
        assert_eq!(out["reason"], TIMED_OUT);
        assert_eq!(
            out["message"],
            "ReplicaSet \"web-1\" has timed out progressing."
        );
        assert_eq!(out["lastTransitionTime"], json!(at(11)));
        // It stays timed out until the rollout moves.
        assert_eq!(
            rollout_condition(Some(&out), "web-1", false, Some(10), &at(30)),
            out
        );
        let back = rollout_condition(Some(&out), "web-1", true, Some(10), &at(31));
        assert_eq!(
            (&back["status"], &back["reason"]),
            (&json!("True"), &json!("ReplicaSetUpdated"))
        );
        assert_eq!(back["lastTransitionTime"], json!(at(31)));
        // Progress refreshes lastUpdateTime and keeps the transition time; no deadline never expires.
        let moved = rollout_condition(Some(&start), "web-1", true, None, &at(50));
        assert_eq!(moved["lastUpdateTime"], json!(at(50)));
        assert_eq!(moved["lastTransitionTime"], json!(at(0)));
        let never = rollout_condition(Some(&start), "web-1", false, None, &at(3000));
        assert_eq!(never["status"], "True");
    }

    #[test]
    fn progress_is_more_updated_ready_or_available_replicas_or_fewer_old_ones() {
        let old = json!({"replicas": 3, "updatedReplicas": 1, "readyReplicas": 2, "availableReplicas": 2});
        assert!(!progressed(Some(&old), [1, 3, 2, 2]));
        assert!(progressed(Some(&old), [2, 3, 2, 2]));
        assert!(progressed(Some(&old), [1, 2, 2, 2]), "an old replica gone");
        assert!(progressed(Some(&old), [1, 3, 3, 2]));
        assert!(progressed(Some(&old), [1, 3, 2, 3]));
        assert_eq!(
            deadline(&json!({"spec": {"progressDeadlineSeconds": 2147483647}})),
            None
        );
        assert_eq!(
            deadline(&json!({"spec": {"progressDeadlineSeconds": 5}})),
            Some(5)
        );
    }
}
