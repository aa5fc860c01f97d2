//! The ignored-annotation Warning events berth publishes on Services (`UnsupportedAnnotation`,
//! `UnknownAnnotation`), counted as a user sees them with `kubectl get events`, and a
//! controller's reconcile count, to tell that resyncs happened.

use crate::*;
use std::collections::BTreeMap;

pub const UNSUPPORTED_ANNOTATION: &str = "UnsupportedAnnotation";
pub const UNKNOWN_ANNOTATION: &str = "UnknownAnnotation";

/// The annotation warnings about Service `name`: (reason, note, times published).
pub fn annotation_warnings(cloud: &Cloud, name: &str) -> Vec<(String, String, u64)> {
    cloud
        .events(name)
        .iter()
        .filter(|e| e["type"] == "Warning")
        .filter(|e| e["reason"] == UNSUPPORTED_ANNOTATION || e["reason"] == UNKNOWN_ANNOTATION)
        .map(|e| {
            let count = e["series"]["count"]
                .as_u64()
                .or(e["count"].as_u64())
                .unwrap_or(1);
            let note = e["message"].as_str().or(e["note"].as_str());
            (
                e["reason"].as_str().unwrap_or_default().to_string(),
                note.unwrap_or_default().to_string(),
                count,
            )
        })
        .collect()
}

/// Ok when the annotation warnings about `name` are exactly one per key of `expected`, with
/// its reason, each published once; Err says what differs.
pub fn annotation_warnings_once(
    cloud: &Cloud,
    name: &str,
    expected: &BTreeMap<&str, &str>,
) -> Result<(), String> {
    let got = annotation_warnings(cloud, name);
    if got.len() != expected.len() {
        return Err(format!(
            "{name}: {} annotation warnings, want {}: {got:#?}",
            got.len(),
            expected.len()
        ));
    }
    for (key, reason) in expected {
        let naming: Vec<_> = got
            .iter()
            .filter(|(_, n, _)| n.contains(&format!("Annotation {key} ")))
            .collect();
        match naming.as_slice() {
            [(r, _, 1)] if r == reason => {}
            other => return Err(format!("{name}: {key}: want one {reason}: {other:?}")),
        }
    }
    Ok(())
}

/// Reconciles so far (`berth_reconciles_total`, summed over labels) from a controller's
/// /metrics at `admin`; 0 when it does not answer.
pub fn reconciles(admin: &str) -> u64 {
    let Ok((200, text)) = http(admin, "GET", "/metrics", None) else {
        return 0;
    };
    text.lines()
        .filter(|l| l.starts_with("berth_reconciles_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Waits until each controller (by /metrics address) has reconciled `n` more times than now.
pub fn wait_reconciles(admins: &[&str], n: u64) {
    let start: Vec<u64> = admins.iter().map(|a| reconciles(a)).collect();
    wait_for(
        &format!("{n} more reconciles from each controller"),
        Duration::from_secs(60),
        || {
            admins
                .iter()
                .zip(&start)
                .all(|(a, s)| reconciles(a) >= s + n)
                .then_some(())
        },
    );
}

/// Waits until [`annotation_warnings_once`] holds for `name`; panics with what differs.
pub fn wait_annotation_warnings(cloud: &Cloud, name: &str, expected: &BTreeMap<&str, &str>) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match annotation_warnings_once(cloud, name, expected) {
            Ok(()) => return,
            Err(e) if Instant::now() >= deadline => {
                panic!("{name}'s annotation warnings, after {DEADLINE:?}: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}
