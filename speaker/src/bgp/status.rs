//! This node's [`BGPSessionStatus`] objects, one per BGPPeer that selects the node, named
//! `<peer>-<node>` and owned by the BGPPeer (deleted with it).
//!
//! Level-triggered and rate-bounded: the BGP loop publishes the wanted statuses; this task
//! makes the objects match at most once a second (create when missing, patch the status
//! subresource when it changed, delete the objects of peers that no longer select the node,
//! including this node's leftovers from an earlier run, looked for once BGP mode is in use)
//! and backs off up to 30 s while the API server fails. When the sender goes away (the
//! speaker stops) it makes one last pass, bounded by the caller.

use berth_api::bgp::{
    BGPSessionStatus, BGPSessionStatusSpec, BGPSessionStatusStatus, SESSION_NODE_LABEL,
    SESSION_PEER_LABEL, session_status_name,
};
use berth_api::crd::label_value;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{debug, warn};

/// What this node reports for one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The BGPPeer's uid (the owner reference).
    pub peer_uid: String,
    pub status: BGPSessionStatusStatus,
}

/// BGPPeer name → report.
pub type Reports = BTreeMap<String, Report>;

fn object(me: &str, peer: &str, r: &Report) -> BGPSessionStatus {
    let mut o = BGPSessionStatus::new(
        &session_status_name(peer, me),
        BGPSessionStatusSpec {
            peer: peer.to_string(),
            node: me.to_string(),
        },
    );
    o.metadata.labels = Some(
        [
            (SESSION_NODE_LABEL.to_string(), label_value(me)),
            (SESSION_PEER_LABEL.to_string(), label_value(peer)),
        ]
        .into(),
    );
    o.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "berth.io/v1alpha1".into(),
        kind: "BGPPeer".into(),
        name: peer.to_string(),
        uid: r.peer_uid.clone(),
        ..Default::default()
    }]);
    o
}

struct Writer {
    api: Api<BGPSessionStatus>,
    me: String,
    /// Objects known to exist (peer → the status last written, None: not written yet).
    have: BTreeMap<String, Option<BGPSessionStatusStatus>>,
    /// Whether this node's leftovers from an earlier run were looked for.
    swept: bool,
    /// An object vanished while being written: write again without waiting for a change.
    again: bool,
}

impl Writer {
    /// Deletes this node's objects of peers it no longer has (from an earlier run too).
    async fn sweep(&mut self, want: &Reports) -> Result<(), kube::Error> {
        let lp = ListParams::default()
            .labels(&format!("{SESSION_NODE_LABEL}={}", label_value(&self.me)));
        let list = self.api.list(&lp).await?;
        for o in list.items {
            if o.spec.node != self.me {
                continue;
            }
            if want.contains_key(&o.spec.peer) {
                self.have.entry(o.spec.peer.clone()).or_insert(None);
            } else {
                self.delete(&o.name_any()).await?;
            }
        }
        self.swept = true;
        Ok(())
    }

    async fn delete(&self, name: &str) -> Result<(), kube::Error> {
        match self.api.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn sync(&mut self, want: &Reports) -> Result<(), kube::Error> {
        // A node that never had a BGPPeer makes no API call at all.
        if want.is_empty() && self.have.is_empty() && !self.swept {
            return Ok(());
        }
        if !self.swept {
            self.sweep(want).await?;
        }
        let gone: Vec<String> = self
            .have
            .keys()
            .filter(|p| !want.contains_key(*p))
            .cloned()
            .collect();
        for peer in gone {
            self.delete(&session_status_name(&peer, &self.me)).await?;
            self.have.remove(&peer);
        }
        for (peer, r) in want {
            let name = session_status_name(peer, &self.me);
            if !self.have.contains_key(peer) {
                match self
                    .api
                    .create(&PostParams::default(), &object(&self.me, peer, r))
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => return Err(e),
                }
                self.have.insert(peer.clone(), None);
            }
            if self.have.get(peer) == Some(&Some(r.status.clone())) {
                continue;
            }
            let patch = serde_json::json!({"status": r.status});
            match self
                .api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    debug!(peer, state = %r.status.state, "BGPSessionStatus written");
                    self.have.insert(peer.clone(), Some(r.status.clone()));
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    // Deleted behind our back (or with its BGPPeer): create it again.
                    self.have.remove(peer);
                    self.again = true;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Keeps this node's BGPSessionStatus objects matching `want` until the sender is dropped;
/// `shutdown` only cuts the pause between writes short, so the last reports go out at once.
pub async fn run(
    client: Client,
    me: String,
    mut want: watch::Receiver<Reports>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut w = Writer {
        api: Api::all(client),
        me,
        have: BTreeMap::new(),
        swept: false,
        again: false,
    };
    let mut failures = 0u32;
    loop {
        let wanted = want.borrow_and_update().clone();
        w.again = false;
        match w.sync(&wanted).await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                warn!(error = %e, "Cannot write BGPSessionStatus; retrying");
            }
        }
        let pause = if failures == 0 {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(1u64 << failures.min(5)).min(Duration::from_secs(30))
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            // Not while failing: the retry backoff stays.
            _ = shutdown.wait_for(|s| *s), if failures == 0 => {}
        }
        if failures == 0 && !w.again && want.changed().await.is_err() {
            // The speaker stops: one last pass with what it published last.
            let last = want.borrow().clone();
            if let Err(e) = w.sync(&last).await {
                warn!(error = %e, "Cannot write the final BGPSessionStatus");
            }
            return;
        }
        if (failures > 0 || w.again) && want.has_changed().is_err() {
            return;
        }
    }
}
