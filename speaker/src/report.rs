//! What this speaker announces, reported in [`ServiceL2Status`] objects (one per Service per
//! node, owned by the Service) — the speaker never writes Services. The l2 controller
//! mirrors them into `berth.io/announcing-node`.
//!
//! Level-triggered: the announce loop publishes the wanted reports; this task makes this
//! node's objects match (create; a changed one is deleted and created again, so the speaker
//! needs no update rights) and deletes other nodes' objects for the Services this node
//! announces now (their speaker died or lost the VIP). Objects of deleted Services go with
//! them (owner references). Failures are retried with backoff.

use berth_api::crd::{
    STATUS_NODE_LABEL, STATUS_SERVICE_LABEL, ServiceL2Status, ServiceL2StatusSpec, label_value,
    status_name,
};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{debug, warn};

/// One Service this node announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub vips: Vec<String>,
    pub interfaces: Vec<String>,
}

/// `namespace/name` → report.
pub type Reports = BTreeMap<String, Report>;

fn spec(me: &str, r: &Report) -> ServiceL2StatusSpec {
    ServiceL2StatusSpec {
        service_name: r.name.clone(),
        node: me.to_string(),
        vips: r.vips.clone(),
        interfaces: r.interfaces.clone(),
    }
}

fn object(me: &str, r: &Report) -> ServiceL2Status {
    let mut o = ServiceL2Status::new(&status_name(&r.name, me), spec(me, r));
    o.metadata.namespace = Some(r.namespace.clone());
    o.metadata.labels = Some(
        [
            (STATUS_SERVICE_LABEL.to_string(), label_value(&r.name)),
            (STATUS_NODE_LABEL.to_string(), label_value(me)),
        ]
        .into(),
    );
    o.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: r.name.clone(),
        uid: r.uid.clone(),
        ..Default::default()
    }]);
    o
}

/// What to do to bring the objects in line with `want`.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    Create(String),
    /// Delete and create again (the report changed).
    Replace(String),
    /// (namespace, name)
    Delete(String, String),
}

fn plan(me: &str, want: &Reports, have: &[std::sync::Arc<ServiceL2Status>]) -> Vec<Action> {
    let mut out = Vec::new();
    let mut mine: BTreeMap<String, &ServiceL2Status> = BTreeMap::new();
    for o in have {
        let ns = o.namespace().unwrap_or_default();
        let key = format!("{ns}/{}", o.spec.service_name);
        if o.spec.node == me && o.name_any() == status_name(&o.spec.service_name, me) {
            mine.insert(key.clone(), o);
            if !want.contains_key(&key) {
                out.push(Action::Delete(ns, o.name_any()));
            }
        } else if o.spec.node == me || want.contains_key(&key) {
            // A stray object of ours, or another node's claim on a Service we announce.
            out.push(Action::Delete(ns, o.name_any()));
        }
    }
    for (key, r) in want {
        match mine.get(key) {
            None => out.push(Action::Create(key.clone())),
            Some(o) => {
                let owner_ok = o
                    .metadata
                    .owner_references
                    .as_ref()
                    .is_some_and(|v| v.iter().any(|x| x.uid == r.uid));
                if o.spec != spec(me, r) || !owner_ok {
                    out.push(Action::Replace(key.clone()));
                }
            }
        }
    }
    // Our own claims first, then removals.
    out.sort_by_key(|a| match a {
        Action::Create(_) | Action::Replace(_) => 0,
        Action::Delete(..) => 1,
    });
    out
}

/// Keeps this node's [`ServiceL2Status`] objects matching `want` until `shutdown`; then
/// deletes them (the VIPs are no longer announced).
pub async fn run(
    client: Client,
    me: String,
    mut want: watch::Receiver<Reports>,
    mut shutdown: watch::Receiver<bool>,
) {
    let all: Api<ServiceL2Status> = Api::all(client.clone());
    let (store, writer) = reflector::store();
    let stream = watcher(all, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    let (changed_tx, mut changed) = watch::channel(());
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Ok(_) => {
                    let _ = changed_tx.send(());
                }
                Err(e) => warn!(error = %e, "ServiceL2Status watch failed; retrying"),
            }
        }
    });
    tokio::select! {
        r = store.wait_until_ready() => if r.is_err() { return },
        _ = shutdown.wait_for(|s| *s) => return,
    }
    let mut backoff = Duration::from_millis(200);
    loop {
        let w = want.borrow_and_update().clone();
        let ok = tokio::select! {
            ok = apply(&client, &me, &w, &store) => ok,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let retry = if ok {
            backoff = Duration::from_millis(200);
            None
        } else {
            let b = backoff;
            backoff = (backoff * 2).min(Duration::from_secs(10));
            Some(b)
        };
        tokio::select! {
            r = want.changed() => if r.is_err() { break },
            r = changed.changed() => if r.is_err() { break },
            _ = async { tokio::time::sleep(retry.unwrap_or(Duration::MAX)).await }, if retry.is_some() => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
        // Let a burst of changes settle.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Shutting down: nothing is announced any more.
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        apply(&client, &me, &Reports::new(), &store),
    )
    .await;
}

async fn apply(client: &Client, me: &str, want: &Reports, store: &Store<ServiceL2Status>) -> bool {
    let mut ok = true;
    for a in plan(me, want, &store.state()) {
        let r = match &a {
            Action::Create(k) | Action::Replace(k) => {
                let r = &want[k];
                let api: Api<ServiceL2Status> = Api::namespaced(client.clone(), &r.namespace);
                let o = object(me, r);
                let gone = if matches!(a, Action::Replace(_)) {
                    match api.delete(&o.name_any(), &DeleteParams::default()).await {
                        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                        r => r.map(|_| ()),
                    }
                } else {
                    Ok(())
                };
                match gone {
                    Ok(()) => api.create(&PostParams::default(), &o).await.map(|_| ()),
                    Err(e) => Err(e),
                }
            }
            Action::Delete(ns, name) => {
                let api: Api<ServiceL2Status> = Api::namespaced(client.clone(), ns);
                match api.delete(name, &DeleteParams::default()).await {
                    Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                    r => r.map(|_| ()),
                }
            }
        };
        match r {
            Ok(()) => debug!(action = ?a, "ServiceL2Status written"),
            Err(e) => {
                warn!(action = ?a, error = %e, "Cannot write ServiceL2Status");
                ok = false;
            }
        }
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn report(name: &str) -> Report {
        Report {
            namespace: "default".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            vips: vec!["10.0.0.1".into()],
            interfaces: vec!["eth0".into()],
        }
    }

    fn have(name: &str, node: &str, vip: &str) -> Arc<ServiceL2Status> {
        let mut r = report(name);
        r.vips = vec![vip.into()];
        Arc::new(object(node, &r))
    }

    #[test]
    fn plans_creates_patches_and_deletes() {
        let want: Reports = [("default/a", report("a")), ("default/b", report("b"))]
            .map(|(k, v)| (k.to_string(), v))
            .into();
        let objs = vec![
            have("a", "n1", "10.0.0.1"), // up to date
            have("b", "n1", "10.0.0.9"), // stale VIP
            have("c", "n1", "10.0.0.1"), // not announced any more
            have("a", "n2", "10.0.0.1"), // another node's claim on a Service we announce
            have("d", "n2", "10.0.0.1"), // another node's own business
        ];
        assert_eq!(
            plan("n1", &want, &objs),
            vec![
                Action::Replace("default/b".into()),
                Action::Delete("default".into(), "c-n1".into()),
                Action::Delete("default".into(), "a-n2".into()),
            ]
        );
        assert_eq!(
            plan("n1", &Reports::new(), &objs[..1]),
            vec![Action::Delete("default".into(), "a-n1".into())]
        );
        assert_eq!(
            plan("n3", &want, &[]),
            vec![
                Action::Create("default/a".into()),
                Action::Create("default/b".into())
            ]
        );
    }
}
