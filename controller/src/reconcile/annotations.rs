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
use tracing::warn;

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
            .publish(svc, EventType::Warning, f.reason, f.message.clone())
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
