//! The l2 controller's side of announcing: mirrors the speakers' [`ServiceL2Status`]
//! objects into the Service annotation `berth.io/announcing-node` (users and tools read it;
//! speakers may not write Services) and creates the Secret holding the speakers' membership
//! key when it is absent. Status objects of a deleted Service (or of an earlier Service of
//! the same name) do not count; the garbage collector removes them (owner references).

use super::crd::ServiceL2Status;
use berth_api::names::annotations::ANNOUNCING_NODE as ANNOUNCING_ANNOTATION;
use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// The Secret (in the controller's namespace) the speaker DaemonSet mounts, and its key
/// holding the key file.
pub use berth_api::names::{MEMBERSHIP_SECRET, MEMBERSHIP_SECRET_KEY};

/// Creates the membership-key Secret with a random key unless it exists. A Secret that
/// exists is never read or changed (rotation is the operator's: see the README).
pub async fn ensure_membership_secret(client: Client, namespace: &str) -> anyhow::Result<bool> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let key: String = {
        use rand::Rng;
        let mut rng = rand::rng();
        (0..32)
            .map(|_| format!("{:02x}", rng.random::<u8>()))
            .collect()
    };
    let s = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(MEMBERSHIP_SECRET.into()),
            namespace: Some(namespace.into()),
            labels: Some([("app.kubernetes.io/part-of".to_string(), "berth".to_string())].into()),
            ..Default::default()
        },
        data: Some(
            [(
                MEMBERSHIP_SECRET_KEY.to_string(),
                ByteString(format!("{key}\n").into_bytes()),
            )]
            .into(),
        ),
        type_: Some("Opaque".into()),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &s).await {
        Ok(_) => {
            info!(secret = %format!("{namespace}/{MEMBERSHIP_SECRET}"), "Created the speakers' membership key");
            Ok(true)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(anyhow::anyhow!(
            "Cannot create the membership key Secret {namespace}/{MEMBERSHIP_SECRET}: {e}"
        )),
    }
}

/// Retries [`ensure_membership_secret`] with backoff until it succeeds or `shutdown`.
pub async fn keep_membership_secret(
    client: Client,
    namespace: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        match ensure_membership_secret(client.clone(), &namespace).await {
            Ok(_) => return,
            Err(e) => warn!(error = %e, "Retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
}

/// The annotation patches to make: `namespace/name` → node, or None to remove it.
fn plan(
    services: &[Arc<Service>],
    statuses: &[Arc<ServiceL2Status>],
) -> BTreeMap<String, Option<String>> {
    let mut out = BTreeMap::new();
    let by_key: BTreeMap<String, &Service> = services
        .iter()
        .map(|s| {
            (
                format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any()),
                s.as_ref(),
            )
        })
        .collect();
    // The newest claim per Service wins (a new owner creates its object before it deletes
    // the previous owner's).
    let mut owner: BTreeMap<String, &ServiceL2Status> = BTreeMap::new();
    for st in statuses {
        let ns = st.namespace().unwrap_or_default();
        let key = format!("{ns}/{}", st.spec.service_name);
        let live = by_key.get(&key).is_some_and(|svc| {
            st.metadata
                .owner_references
                .as_ref()
                .is_none_or(|o| o.iter().any(|r| Some(&r.uid) == svc.metadata.uid.as_ref()))
        });
        if !live {
            continue;
        }
        let newer = owner.get(&key).is_none_or(|cur| {
            (st.creation_timestamp().map(|t| t.0), st.name_any())
                > (cur.creation_timestamp().map(|t| t.0), cur.name_any())
        });
        if newer {
            owner.insert(key, st);
        }
    }
    for (key, svc) in &by_key {
        let want = owner.get(key).map(|s| s.spec.node.clone());
        let have = svc.annotations().get(ANNOUNCING_ANNOTATION).cloned();
        if want != have && (want.is_some() || have.is_some()) {
            out.insert(key.clone(), want);
        }
    }
    out
}

/// Mirrors status objects into the annotation until `shutdown`.
pub async fn mirror(client: Client, mut shutdown: watch::Receiver<bool>) {
    let (svc_store, svc_writer) = reflector::store::<Service>();
    let (st_store, st_writer) = reflector::store::<ServiceL2Status>();
    let (tx, mut changed) = watch::channel(());
    let svc_events = watcher(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(svc_writer);
    let st_events = watcher(
        Api::<ServiceL2Status>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(st_writer);
    let tx2 = tx.clone();
    let watches = tokio::spawn(async move {
        let a = svc_events.for_each(|ev| {
            if let Err(e) = ev {
                warn!(error = %e, "Service watch failed; retrying");
            }
            let _ = tx.send(());
            async {}
        });
        let b = st_events.for_each(|ev| {
            if let Err(e) = ev {
                debug!(error = %e, "ServiceL2Status watch failed; retrying");
            }
            let _ = tx2.send(());
            async {}
        });
        futures::join!(a, b);
    });
    tokio::select! {
        _ = async {
            let _ = svc_store.wait_until_ready().await;
            let _ = st_store.wait_until_ready().await;
        } => {}
        _ = shutdown.wait_for(|s| *s) => { watches.abort(); return }
    }
    info!("Mirroring ServiceL2Status into berth.io/announcing-node");
    // Writes that failed are retried on the next change or after a pause.
    let mut failed: HashSet<String> = HashSet::new();
    loop {
        let p = plan(&svc_store.state(), &st_store.state());
        failed.clear();
        for (key, node) in &p {
            let (ns, name) = key.split_once('/').expect("namespace/name");
            let api: Api<Service> = Api::namespaced(client.clone(), ns);
            let patch =
                serde_json::json!({"metadata": {"annotations": {ANNOUNCING_ANNOTATION: node}}});
            match api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => debug!(service = %key, node = ?node, "Announcing node mirrored"),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    warn!(service = %key, error = %e, "Cannot annotate the Service");
                    failed.insert(key.clone());
                }
            }
        }
        let pause = if failed.is_empty() {
            Duration::MAX
        } else {
            Duration::from_secs(2)
        };
        tokio::select! {
            r = changed.changed() => if r.is_err() { break },
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watches.abort();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pools::crd::ServiceL2StatusSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};

    fn svc(name: &str, uid: &str, announcing: Option<&str>) -> Arc<Service> {
        let mut m = Service::default();
        m.metadata.name = Some(name.into());
        m.metadata.namespace = Some("default".into());
        m.metadata.uid = Some(uid.into());
        if let Some(a) = announcing {
            m.metadata.annotations =
                Some([(ANNOUNCING_ANNOTATION.to_string(), a.to_string())].into());
        }
        Arc::new(m)
    }

    fn status(svc: &str, uid: &str, node: &str, age_s: i64) -> Arc<ServiceL2Status> {
        let mut o = ServiceL2Status::new(
            &format!("{svc}-{node}"),
            ServiceL2StatusSpec {
                service_name: svc.into(),
                node: node.into(),
                vips: vec!["10.0.0.1".into()],
                interfaces: vec![],
            },
        );
        o.metadata.namespace = Some("default".into());
        o.metadata.creation_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 - age_s).unwrap(),
        ));
        o.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "v1".into(),
            kind: "Service".into(),
            name: svc.into(),
            uid: uid.into(),
            ..Default::default()
        }]);
        Arc::new(o)
    }

    #[test]
    fn the_newest_claim_is_mirrored_and_orphans_do_not_count() {
        let services = vec![
            svc("a", "ua", None),
            svc("b", "ub", Some("n1")),
            svc("c", "uc", Some("n2")),
            svc("d", "ud", Some("n3")),
        ];
        let statuses = vec![
            status("a", "ua", "n1", 10),
            status("b", "ub", "n1", 10),
            status("b", "ub", "n2", 1), // took over: newer
            status("d", "ud", "n3", 5),
            status("gone", "ug", "n1", 5),   // its Service is gone
            status("d", "old-uid", "n2", 1), // of an earlier Service of that name
        ];
        let p = plan(&services, &statuses);
        let want: BTreeMap<String, Option<String>> = [
            ("default/a".to_string(), Some("n1".to_string())),
            ("default/b".to_string(), Some("n2".to_string())),
            ("default/c".to_string(), None),
        ]
        .into();
        assert_eq!(p, want);
    }
}
