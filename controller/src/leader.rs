//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go does it: one holder at
//! a time; others take over once the holder has not renewed for the lease duration. Expiry
//! is judged by the local clock from when this replica last saw the record change, so clock
//! skew between replicas does not matter.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use std::time::{Duration, Instant};
use tracing::{info, warn};

#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    /// How long a holder's lease lasts without renewal.
    pub lease_duration: Duration,
    /// How often the holder renews (and others retry).
    pub retry_period: Duration,
    /// A holder that cannot renew for this long gives up leadership.
    pub renew_deadline: Duration,
}

impl LeaseSettings {
    pub fn new(namespace: &str, identity: &str) -> Self {
        LeaseSettings {
            namespace: namespace.into(),
            name: "berth-controller".into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            retry_period: Duration::from_secs(2),
            renew_deadline: Duration::from_secs(10),
        }
    }
}

pub struct LeaderElector {
    api: Api<Lease>,
    s: LeaseSettings,
    observed: Option<(String, Option<String>)>,
    observed_at: Instant,
}

fn record(lease: &Lease) -> (String, Option<String>) {
    let spec = lease.spec.as_ref();
    (
        spec.and_then(|s| s.holder_identity.clone())
            .unwrap_or_default(),
        spec.and_then(|s| s.renew_time.as_ref())
            .map(|t| t.0.to_string()),
    )
}

impl LeaderElector {
    pub fn new(client: Client, s: LeaseSettings) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &s.namespace),
            s,
            observed: None,
            observed_at: Instant::now(),
        }
    }

    pub fn settings(&self) -> &LeaseSettings {
        &self.s
    }

    fn lease_body(&self, transitions: i32, acquire: bool, existing: Option<&Lease>) -> Lease {
        let now = MicroTime(Timestamp::now());
        let mut lease = existing.cloned().unwrap_or_default();
        lease.metadata.name = Some(self.s.name.clone());
        lease.metadata.namespace = Some(self.s.namespace.clone());
        let spec = lease.spec.get_or_insert_with(Default::default);
        spec.holder_identity = Some(self.s.identity.clone());
        spec.lease_duration_seconds = Some(self.s.lease_duration.as_secs().max(1) as i32);
        spec.renew_time = Some(now.clone());
        if acquire {
            spec.acquire_time = Some(now);
            spec.lease_transitions = Some(transitions);
        }
        lease
    }

    /// One attempt to acquire or renew. Ok(true) while this replica is the leader.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let current = match self.api.get_opt(&self.s.name).await? {
            None => {
                let body = self.lease_body(0, true, None);
                return match self.api.create(&PostParams::default(), &body).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(e) => Err(e),
                };
            }
            Some(l) => l,
        };
        let rec = record(&current);
        if self.observed.as_ref() != Some(&rec) {
            self.observed = Some(rec.clone());
            self.observed_at = Instant::now();
        }
        let holder = rec.0.clone();
        let mine = holder == self.s.identity;
        let duration = current
            .spec
            .as_ref()
            .and_then(|s| s.lease_duration_seconds)
            .map(|d| Duration::from_secs(d.max(1) as u64))
            .unwrap_or(self.s.lease_duration);
        let expired = holder.is_empty() || self.observed_at.elapsed() > duration;
        if !mine && !expired {
            return Ok(false);
        }
        let transitions = current
            .spec
            .as_ref()
            .and_then(|s| s.lease_transitions)
            .unwrap_or(0);
        let body = if mine {
            self.lease_body(transitions, false, Some(&current))
        } else {
            self.lease_body(transitions + 1, true, Some(&current))
        };
        match self
            .api
            .replace(&self.s.name, &PostParams::default(), &body)
            .await
        {
            Ok(l) => {
                self.observed = Some(record(&l));
                self.observed_at = Instant::now();
                if !mine {
                    info!(identity = %self.s.identity, previous = %holder, "Took over the leader lease");
                }
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica holds the lease.
    pub async fn acquire(&mut self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    info!(identity = %self.s.identity, lease = %self.s.name, "Became leader");
                    return;
                }
                Ok(false) => {}
                Err(e) => warn!(error = %e, "Cannot read the leader lease"),
            }
            tokio::time::sleep(self.s.retry_period).await;
        }
    }

    /// Renews until renewal fails for longer than the renew deadline; returns then.
    pub async fn hold(&mut self) {
        let mut last_ok = Instant::now();
        loop {
            tokio::time::sleep(self.s.retry_period).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_ok = Instant::now(),
                Ok(false) => {
                    warn!(identity = %self.s.identity, "Lost the leader lease to another replica");
                    return;
                }
                Err(e) => {
                    warn!(error = %e, "Cannot renew the leader lease");
                    if last_ok.elapsed() > self.s.renew_deadline {
                        return;
                    }
                }
            }
        }
    }

    /// Gives the lease up so another replica takes over at once (on clean shutdown).
    pub async fn release(&mut self) {
        let Ok(Some(current)) = self.api.get_opt(&self.s.name).await else {
            return;
        };
        if record(&current).0 != self.s.identity {
            return;
        }
        let patch =
            json!({"spec": {"holderIdentity": null, "renewTime": null, "acquireTime": null}});
        let _ = self
            .api
            .patch(
                &current.name_any(),
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await;
        info!(identity = %self.s.identity, "Released the leader lease");
    }
}
