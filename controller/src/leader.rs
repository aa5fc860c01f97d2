//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go does it: one holder at
//! a time; others take over once the holder has not renewed for the lease duration. Expiry
//! is judged by the local clock from when this replica last saw the record change, so clock
//! skew between replicas does not matter.
//!
//! Leadership is fenced: a [`Fence`] is valid until the renew deadline after the *sending*
//! of the last successful renewal. Every write berth makes checks it first (see
//! [`crate::kube_util::fenced_client`] and the provider calls in the reconciler), so a
//! replica whose renewals hang stops writing before any standby can take over: a standby
//! waits the whole lease duration after it last saw the record change, which is later than
//! the renew deadline after the renewal was sent.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
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
    /// A holder that cannot renew for this long gives up leadership and stops writing.
    pub renew_deadline: Duration,
}

impl LeaseSettings {
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        LeaseSettings {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            retry_period: Duration::from_secs(2),
            renew_deadline: Duration::from_secs(10),
        }
    }
}

/// A write refused because this replica does not (or no longer) hold its lease.
#[derive(Debug, thiserror::Error)]
#[error("Not the leader: the lease was lost or its renew deadline passed")]
pub struct Fenced;

/// Whether this replica may write, and until when. Cheap to clone; every clone sees the same
/// state.
#[derive(Clone, Debug)]
pub struct Fence {
    inner: Arc<FenceInner>,
}

#[derive(Debug)]
struct FenceInner {
    /// None: not fenced (no leader election, a single replica).
    valid_until: Mutex<Option<Instant>>,
    fenced: bool,
    lost: watch::Sender<bool>,
}

impl Fence {
    /// A fence that never closes, for a single replica without leader election.
    pub fn open() -> Self {
        Fence {
            inner: Arc::new(FenceInner {
                valid_until: Mutex::new(None),
                fenced: false,
                lost: watch::channel(false).0,
            }),
        }
    }

    /// A closed fence, opened by [`Fence::extend`] once the lease is held.
    pub fn closed() -> Self {
        Fence {
            inner: Arc::new(FenceInner {
                valid_until: Mutex::new(Some(Instant::now())),
                fenced: true,
                lost: watch::channel(false).0,
            }),
        }
    }

    fn until(&self) -> Option<Instant> {
        *self
            .inner
            .valid_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// How long writes are still allowed, or [`Fenced`].
    pub fn check(&self) -> Result<Option<Duration>, Fenced> {
        if *self.inner.lost.borrow() {
            return Err(Fenced);
        }
        if !self.inner.fenced {
            return Ok(None);
        }
        match self.until() {
            Some(t) => {
                let left = t.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    Err(Fenced)
                } else {
                    Ok(Some(left))
                }
            }
            None => Err(Fenced),
        }
    }

    /// Allows writes until `until` (never shortens the current validity).
    pub fn extend(&self, until: Instant) {
        if *self.inner.lost.borrow() {
            return;
        }
        let mut v = self
            .inner
            .valid_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if v.is_none_or(|cur| until > cur) {
            *v = Some(until);
        }
    }

    /// Closes the fence for good: every later [`Fence::check`] fails and [`Fence::lost`]
    /// resolves.
    pub fn revoke(&self) {
        *self
            .inner
            .valid_until
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        self.inner.lost.send_replace(true);
    }

    pub fn is_revoked(&self) -> bool {
        *self.inner.lost.borrow()
    }

    /// Resolves once the fence is revoked or its validity has run out.
    pub async fn lost(&self) {
        let mut rx = self.inner.lost.subscribe();
        loop {
            if *rx.borrow_and_update() {
                return;
            }
            let until = if self.inner.fenced {
                self.until()
            } else {
                None
            };
            match until {
                Some(t) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(t.into()) => {
                            if self.until().is_some_and(|u| u <= Instant::now()) {
                                return;
                            }
                        }
                        r = rx.changed() => if r.is_err() { return },
                    }
                }
                None => {
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// The part of a Lease that tells whether its holder is still renewing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub holder: String,
    pub renew_time: Option<String>,
    pub lease_duration: Option<Duration>,
    pub transitions: i32,
}

impl Record {
    pub fn of(lease: &Lease) -> Record {
        let spec = lease.spec.as_ref();
        Record {
            holder: spec
                .and_then(|s| s.holder_identity.clone())
                .unwrap_or_default(),
            renew_time: spec
                .and_then(|s| s.renew_time.as_ref())
                .map(|t| t.0.to_string()),
            lease_duration: spec
                .and_then(|s| s.lease_duration_seconds)
                .map(|d| Duration::from_secs(d.max(1) as u64)),
            transitions: spec.and_then(|s| s.lease_transitions).unwrap_or(0),
        }
    }

    /// The identity fields: a change in them means the holder renewed (or changed).
    fn key(&self) -> (&str, Option<&str>) {
        (&self.holder, self.renew_time.as_deref())
    }
}

/// What one acquire-or-renew attempt must do, given the current record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// No Lease yet: create it holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it over (the transition count goes up).
    TakeOver { previous: String },
    /// Someone else holds it and is renewing: wait.
    Wait,
}

/// The pure decision of one attempt. `unchanged_for` is how long this replica has seen the
/// same record (holder and renew time); a holder is expired once that exceeds its lease
/// duration.
pub fn decide(
    current: Option<&Record>,
    me: &str,
    unchanged_for: Duration,
    default_duration: Duration,
) -> Step {
    let Some(r) = current else {
        return Step::Create;
    };
    if r.holder == me {
        return Step::Renew;
    }
    let duration = r.lease_duration.unwrap_or(default_duration);
    if r.holder.is_empty() || unchanged_for > duration {
        Step::TakeOver {
            previous: r.holder.clone(),
        }
    } else {
        Step::Wait
    }
}

/// Why leadership ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lost {
    /// Another replica holds the lease now.
    TakenOver,
    /// No renewal succeeded within the renew deadline.
    DeadlinePassed,
}

pub struct LeaderElector {
    api: Api<Lease>,
    s: LeaseSettings,
    observed: Option<Record>,
    observed_at: Instant,
    fence: Fence,
}

impl LeaderElector {
    /// `client` must not be fenced by this elector's own fence (the renewals are the writes
    /// that keep the fence open).
    pub fn new(client: Client, s: LeaseSettings) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &s.namespace),
            s,
            observed: None,
            observed_at: Instant::now(),
            fence: Fence::closed(),
        }
    }

    pub fn settings(&self) -> &LeaseSettings {
        &self.s
    }

    /// The fence that is open while this replica leads.
    pub fn fence(&self) -> Fence {
        self.fence.clone()
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

    /// One attempt to acquire or renew. Ok(true) while this replica is the leader; on
    /// success the fence stays open until the renew deadline after this attempt started.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let sent = Instant::now();
        let current = self.api.get_opt(&self.s.name).await?;
        let rec = current.as_ref().map(Record::of);
        if let Some(r) = &rec
            && self.observed.as_ref().map(Record::key) != Some(r.key())
        {
            self.observed = Some(r.clone());
            self.observed_at = Instant::now();
        }
        let step = decide(
            rec.as_ref(),
            &self.s.identity,
            self.observed_at.elapsed(),
            self.s.lease_duration,
        );
        let result = match &step {
            Step::Wait => return Ok(false),
            Step::Create => {
                let body = self.lease_body(0, true, None);
                self.api.create(&PostParams::default(), &body).await
            }
            Step::Renew => {
                let body = self.lease_body(0, false, current.as_ref());
                self.api
                    .replace(&self.s.name, &PostParams::default(), &body)
                    .await
            }
            Step::TakeOver { .. } => {
                let t = rec.as_ref().map_or(0, |r| r.transitions) + 1;
                let body = self.lease_body(t, true, current.as_ref());
                self.api
                    .replace(&self.s.name, &PostParams::default(), &body)
                    .await
            }
        };
        match result {
            Ok(l) => {
                self.observed = Some(Record::of(&l));
                self.observed_at = Instant::now();
                self.fence.extend(sent + self.s.renew_deadline);
                if let Step::TakeOver { previous } = &step
                    && !previous.is_empty()
                {
                    info!(identity = %self.s.identity, %previous, "Took over the leader lease");
                }
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica holds the lease. Each attempt is bounded by the retry
    /// period... and the renew deadline, whichever is longer, so a hanging API server
    /// cannot stall the loop.
    pub async fn acquire(&mut self) {
        let bound = self.s.renew_deadline.max(self.s.retry_period);
        loop {
            match tokio::time::timeout(bound, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => {
                    info!(identity = %self.s.identity, lease = %self.s.name, "Became leader");
                    return;
                }
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    warn!(error = %crate::kube_util::describe(&e), lease = %self.s.name, "Cannot read the leader lease")
                }
                Err(_) => warn!(lease = %self.s.name, "Leader lease request timed out"),
            }
            tokio::time::sleep(self.s.retry_period).await;
        }
    }

    /// Renews every retry period. Returns when leadership is lost: another replica holds the
    /// lease, or no renewal succeeded before the fence's deadline (each attempt is cut off
    /// at that deadline, so a hanging renewal cannot keep this replica "leading"). The fence
    /// is revoked before this returns.
    pub async fn hold(&mut self) -> Lost {
        let lost = loop {
            tokio::time::sleep(self.s.retry_period).await;
            let Ok(Some(left)) = self.fence.check() else {
                break Lost::DeadlinePassed;
            };
            match tokio::time::timeout(left, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => break Lost::TakenOver,
                Ok(Err(e)) => {
                    warn!(error = %crate::kube_util::describe(&e), lease = %self.s.name, "Cannot renew the leader lease")
                }
                Err(_) => break Lost::DeadlinePassed,
            }
        };
        self.fence.revoke();
        match lost {
            Lost::TakenOver => {
                warn!(identity = %self.s.identity, lease = %self.s.name, "Lost the leader lease to another replica; stopped writing")
            }
            Lost::DeadlinePassed => warn!(
                identity = %self.s.identity,
                lease = %self.s.name,
                renew_deadline = ?self.s.renew_deadline,
                "Lost leadership: no lease renewal succeeded within the renew deadline; stopped writing"
            ),
        }
        lost
    }

    /// Gives the lease up so another replica takes over at once (on clean shutdown). Bounded
    /// by the retry period.
    pub async fn release(&mut self) {
        self.fence.revoke();
        let attempt = async {
            let Ok(Some(current)) = self.api.get_opt(&self.s.name).await else {
                return;
            };
            if Record::of(&current).holder != self.s.identity {
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
        };
        let _ =
            tokio::time::timeout(self.s.retry_period.max(Duration::from_secs(2)), attempt).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(holder: &str, secs: Option<u64>) -> Record {
        Record {
            holder: holder.into(),
            renew_time: Some("2026-01-01T00:00:00Z".into()),
            lease_duration: secs.map(Duration::from_secs),
            transitions: 3,
        }
    }

    const D: Duration = Duration::from_secs(15);

    #[test]
    fn no_lease_is_created() {
        assert_eq!(decide(None, "a", Duration::ZERO, D), Step::Create);
    }

    #[test]
    fn own_lease_is_renewed_even_when_it_looks_old() {
        let r = rec("a", Some(4));
        assert_eq!(
            decide(Some(&r), "a", Duration::from_secs(60), D),
            Step::Renew
        );
    }

    #[test]
    fn a_renewing_holder_is_left_alone_until_its_duration_passes_unchanged() {
        let r = rec("b", Some(4));
        assert_eq!(decide(Some(&r), "a", Duration::from_secs(4), D), Step::Wait);
        assert_eq!(
            decide(Some(&r), "a", Duration::from_millis(4001), D),
            Step::TakeOver {
                previous: "b".into()
            }
        );
    }

    #[test]
    fn the_holders_own_duration_wins_over_ours_and_ours_fills_in() {
        let r = rec("b", Some(30));
        assert_eq!(
            decide(Some(&r), "a", Duration::from_secs(20), D),
            Step::Wait
        );
        let r = rec("b", None);
        assert_eq!(
            decide(Some(&r), "a", Duration::from_secs(16), D),
            Step::TakeOver {
                previous: "b".into()
            }
        );
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let r = rec("", Some(15));
        assert_eq!(
            decide(Some(&r), "a", Duration::ZERO, D),
            Step::TakeOver {
                previous: String::new()
            }
        );
    }

    #[test]
    fn an_open_fence_always_allows_writes_until_revoked() {
        let f = Fence::open();
        assert!(matches!(f.check(), Ok(None)));
        f.revoke();
        assert!(f.check().is_err());
    }

    #[test]
    fn a_closed_fence_opens_for_the_renew_deadline_and_never_shrinks() {
        let f = Fence::closed();
        assert!(f.check().is_err(), "not leading yet");
        let later = Instant::now() + Duration::from_secs(10);
        f.extend(later);
        let left = f.check().unwrap().unwrap();
        assert!(left <= Duration::from_secs(10) && left > Duration::from_secs(9));
        f.extend(Instant::now() + Duration::from_secs(1));
        assert!(f.check().unwrap().unwrap() > Duration::from_secs(9));
        f.revoke();
        assert!(f.check().is_err());
        f.extend(Instant::now() + Duration::from_secs(100));
        assert!(f.check().is_err(), "a revoked fence stays closed");
    }

    #[test]
    fn a_fence_closes_by_itself_when_its_deadline_passes() {
        let f = Fence::closed();
        f.extend(Instant::now() + Duration::from_millis(30));
        assert!(f.check().is_ok());
        std::thread::sleep(Duration::from_millis(40));
        assert!(f.check().is_err());
    }

    #[tokio::test]
    async fn lost_resolves_at_the_deadline_or_on_revoke() {
        let f = Fence::closed();
        f.extend(Instant::now() + Duration::from_millis(50));
        let t = Instant::now();
        tokio::time::timeout(Duration::from_secs(5), f.lost())
            .await
            .expect("lost resolves once the deadline passes");
        assert!(t.elapsed() >= Duration::from_millis(45));
        let g = Fence::open();
        let g2 = g.clone();
        let waiter = tokio::spawn(async move { g2.lost().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        g.revoke();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("lost resolves on revoke")
            .unwrap();
    }

    #[tokio::test]
    async fn lost_follows_extensions() {
        let f = Fence::closed();
        f.extend(Instant::now() + Duration::from_millis(40));
        let f2 = f.clone();
        let t = Instant::now();
        let waiter = tokio::spawn(async move { f2.lost().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        f.extend(Instant::now() + Duration::from_millis(100));
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(110),
            "{:?}",
            t.elapsed()
        );
    }
}
