//! Publishes [`crate::annotation_check`]'s findings as Warning events, each once.
//!
//! The reconciler remembers, per Service uid, the findings it has published. A finding is
//! published when it is not among them, so a Service is warned once per annotation while the
//! annotation stands: resyncs, status updates and changes to other annotations publish
//! nothing new, while a changed finding (the annotation removed and added back, the key
//! corrected to another unknown one) is published again. The memory lives in the process:
//! a restarted controller or a new leader publishes the standing findings once more. A
//! finding whose event could not be published is tried again on the next reconcile.

use super::{Context, locked};
use crate::annotation_check::check;
use crate::service::{key, uid};
use k8s_openapi::api::core::v1::Service;
use kube::runtime::events::EventType;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use tracing::warn;

/// The longest event action the API server accepts.
const MAX_ACTION: usize = 128;

/// The event action for an ignored `key`: one per key, so the warnings about two annotations
/// are two events rather than one series (the recorder tells events apart by type, reason
/// and action, not by note). A long key is cut and told apart by a hash of the whole.
fn action(key: &str) -> String {
    let full = format!("Ignore {key}");
    if full.len() <= MAX_ACTION {
        return full;
    }
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    let tail = format!("… {:016x}", h.finish());
    let mut end = MAX_ACTION - tail.len();
    while !full.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{tail}", &full[..end])
}

/// Warns about `svc`'s annotations that berth ignores; never blocks the load balancer.
pub(super) async fn warn_ignored_annotations(svc: &Service, ctx: &Context) {
    let empty = BTreeMap::new();
    let ann = svc.metadata.annotations.as_ref().unwrap_or(&empty);
    let findings = check(ann, ctx.provider.name(), &ctx.provider.annotations());
    let id = uid(svc);
    let before = locked(&ctx.annotation_findings)
        .get(&id)
        .cloned()
        .unwrap_or_default();
    let mut now = BTreeSet::new();
    for f in findings {
        if before.contains(&f.message) {
            now.insert(f.message);
            continue;
        }
        warn!(service = %key(svc), annotation = %f.key, reason = f.reason, "{}", f.message);
        if ctx
            .publish(
                svc,
                EventType::Warning,
                f.reason,
                &action(&f.key),
                f.message.clone(),
            )
            .await
        {
            now.insert(f.message);
        }
    }
    let mut all = locked(&ctx.annotation_findings);
    if now.is_empty() {
        all.remove(&id);
    } else {
        all.insert(id, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_per_key_and_fit_the_api_server() {
        assert_eq!(action("metallb.io/x"), "Ignore metallb.io/x");
        let a = format!("example.io/{}", "a".repeat(300));
        let b = format!("example.io/{}b", "a".repeat(299));
        for k in [&a, &b] {
            assert!(action(k).len() <= MAX_ACTION, "{}", action(k));
            assert_eq!(action(k), action(k));
        }
        assert_ne!(action(&a), action(&b));
        let wide = "é".repeat(100);
        assert!(action(&wide).len() <= MAX_ACTION);
    }
}
