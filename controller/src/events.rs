//! Events, written off the reconcile path and aggregated.
//!
//! [`EventSink::publish`] queues an event and returns at once, so a reconcile never waits on
//! an event write (nor on the client's write rate limit for one). A background task writes
//! the queue, a few at a time. An event identical to one still queued (same object, type,
//! reason, note) is folded into it; one identical to an event written in the last six minutes
//! becomes a `series.count` update of that event (a PATCH), as kube-runtime's `Recorder`
//! does — but with a constant-time lookup instead of a scan of every event per write, which
//! at 10,000 Services was the controller's hottest loop. When more than [`QUEUE_LIMIT`]
//! distinct events wait, new ones are dropped and counted (events are best effort in
//! Kubernetes as well: kube-apiserver and client-go's recorder drop them under load).

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};
use serde_json::json;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tracing::warn;

/// Distinct events waiting to be written at most.
pub const QUEUE_LIMIT: usize = 20_000;
/// Queued events above which a superseded progress event is not written
/// ([`EventSink::supersede`]).
pub const BACKLOG: usize = 1_000;
/// Events written at once.
const CONCURRENCY: usize = 8;
/// How long a written event can still be counted up instead of written anew.
const SERIES_TTL: Duration = Duration::from_secs(360);

/// What makes two events the same: object (namespace, name, uid), type, reason and note.
/// Only its digest is kept ([`Shared::digest`]): at 10,000 Services a cold start queues and
/// then remembers 20,000 events, and three copies of six strings each (the queue's order, the
/// queue, the written series) were about 18 MB of the controller's peak. Two different
/// events sharing a 64-bit digest (about one chance in 10^10 among 20,000) would at worst
/// count one as the other.
#[derive(Hash)]
struct Key<'a> {
    namespace: &'a str,
    name: &'a str,
    uid: &'a str,
    warning: bool,
    reason: &'a str,
    note: &'a str,
}

type Digest = u64;

/// What is kept of a queued [`Event`] (which is not `Clone`).
struct Occurrence {
    warning: bool,
    reason: String,
    note: Option<String>,
    action: String,
    secondary: Option<Box<ObjectReference>>,
}

struct Queued {
    event: Occurrence,
    reference: ObjectReference,
    /// Occurrences folded into this one.
    count: i32,
    first_seen: Timestamp,
}

struct Written {
    /// The Event object's name.
    name: String,
    count: i32,
    at: Instant,
}

#[derive(Default)]
struct State {
    order: VecDeque<Digest>,
    /// Boxed: the table keeps a pointer per slot, not a whole entry (it is at most half full
    /// after growing, and 20,000 entries may wait).
    queued: HashMap<Digest, Box<Queued>>,
    written: HashMap<Digest, Written>,
    writes_since_prune: usize,
}

struct Shared {
    client: kube::Client,
    reporter: Reporter,
    state: Mutex<State>,
    wake: Notify,
    dropped: AtomicU64,
    /// Keyed per process, so nobody outside can aim two events at one digest.
    hasher: std::collections::hash_map::RandomState,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn digest(&self, key: &Key<'_>) -> Digest {
        use std::hash::BuildHasher;
        self.hasher.hash_one(key)
    }
}

/// Queues events and writes them in the background; see the module docs.
pub struct EventSink {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EventSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EventSink {
    /// A sink writing through `client` (which the caller fences and rate-limits) as
    /// `reporter`. Needs a Tokio runtime.
    pub fn new(client: kube::Client, reporter: Reporter) -> EventSink {
        let shared = Arc::new(Shared {
            client,
            reporter,
            state: Mutex::default(),
            wake: Notify::new(),
            dropped: AtomicU64::new(0),
            hasher: Default::default(),
        });
        let task = tokio::spawn(drain(shared.clone()));
        EventSink { shared, task }
    }

    /// Queues `ev` about `reference`; never waits. Err only never: the signature matches
    /// kube-runtime's `Recorder::publish` for its callers.
    pub async fn publish(
        &self,
        ev: &Event,
        reference: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let key = self.shared.digest(&Key {
            namespace: reference.namespace.as_deref().unwrap_or_default(),
            name: reference.name.as_deref().unwrap_or_default(),
            uid: reference.uid.as_deref().unwrap_or_default(),
            warning: matches!(ev.type_, EventType::Warning),
            reason: &ev.reason,
            note: ev.note.as_deref().unwrap_or_default(),
        });
        {
            let mut st = self.shared.lock();
            if let Some(q) = st.queued.get_mut(&key) {
                q.count = q.count.saturating_add(1);
            } else if st.queued.len() >= QUEUE_LIMIT {
                let n = self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                if n.is_power_of_two() {
                    warn!(
                        dropped = n + 1,
                        limit = QUEUE_LIMIT,
                        "Too many events waiting to be written; dropping new ones"
                    );
                }
                return Ok(());
            } else {
                st.order.push_back(key);
                st.queued.insert(
                    key,
                    Box::new(Queued {
                        event: Occurrence {
                            warning: matches!(ev.type_, EventType::Warning),
                            reason: ev.reason.clone(),
                            note: ev.note.clone(),
                            action: ev.action.clone(),
                            secondary: ev.secondary.clone().map(Box::new),
                        },
                        reference: reference.clone(),
                        count: 1,
                        first_seen: Timestamp::now(),
                    }),
                );
            }
        }
        self.shared.wake.notify_one();
        Ok(())
    }

    /// When the queue is backlogged (more than [`BACKLOG`] events wait: the write budget is
    /// busy with what owners wait for), forgets a queued, unwritten Normal event about
    /// `reference` with `reason` and `note`: a progress event (`EnsuringLoadBalancer`) whose
    /// outcome is about to be queued would only reach the API server after it. Says whether
    /// one was forgotten.
    pub fn supersede(&self, reference: &ObjectReference, reason: &str, note: &str) -> bool {
        let key = self.shared.digest(&Key {
            namespace: reference.namespace.as_deref().unwrap_or_default(),
            name: reference.name.as_deref().unwrap_or_default(),
            uid: reference.uid.as_deref().unwrap_or_default(),
            warning: false,
            reason,
            note,
        });
        let mut st = self.shared.lock();
        // The queue's order keeps the digest; the writer skips digests no longer queued.
        st.queued.len() > BACKLOG && st.queued.remove(&key).is_some()
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Distinct events waiting to be written.
    pub fn queued(&self) -> usize {
        self.shared.lock().queued.len()
    }
}

/// What to write for one queued event: a new Event, or a count update of one written
/// recently.
enum Write {
    Create(Box<K8sEvent>, Digest, i32),
    Count {
        key: Digest,
        namespace: String,
        name: String,
        count: i32,
    },
}

fn next_write(shared: &Shared) -> Option<Write> {
    let mut st = shared.lock();
    let (key, q) = loop {
        let key = st.order.pop_front()?;
        if let Some(q) = st.queued.remove(&key) {
            break (key, q);
        }
    };
    st.writes_since_prune += 1;
    if st.writes_since_prune >= 1000 {
        st.writes_since_prune = 0;
        st.written.retain(|_, w| w.at.elapsed() < SERIES_TTL);
    }
    let namespace = q.reference.namespace.clone().unwrap_or_default();
    if let Some(w) = st.written.get(&key).filter(|w| w.at.elapsed() < SERIES_TTL) {
        return Some(Write::Count {
            namespace,
            name: w.name.clone(),
            count: w.count.saturating_add(q.count),
            key,
        });
    }
    let ev = event_object(&shared.reporter, &q);
    Some(Write::Create(Box::new(ev), key, q.count))
}

fn event_object(reporter: &Reporter, q: &Queued) -> K8sEvent {
    let name = format!(
        "{}.{:x}",
        q.reference.name.as_deref().unwrap_or(&reporter.controller),
        q.first_seen.as_nanosecond() as u64 ^ rand::random::<u32>() as u64
    );
    K8sEvent {
        action: Some(q.event.action.clone()),
        reason: Some(q.event.reason.clone()),
        event_time: Some(MicroTime(q.first_seen)),
        regarding: Some(q.reference.clone()),
        note: q.event.note.clone(),
        metadata: ObjectMeta {
            namespace: q.reference.namespace.clone(),
            name: Some(name),
            ..Default::default()
        },
        reporting_controller: Some(reporter.controller.clone()),
        reporting_instance: Some(
            reporter
                .instance
                .clone()
                .unwrap_or_else(|| reporter.controller.clone()),
        ),
        series: (q.count > 1).then(|| EventSeries {
            count: q.count,
            last_observed_time: MicroTime(Timestamp::now()),
        }),
        type_: Some(if q.event.warning { "Warning" } else { "Normal" }.into()),
        related: q.event.secondary.as_deref().cloned(),
        ..Default::default()
    }
}

async fn write(shared: &Shared, w: Write) {
    let (key, name, count, res, (event, reason)) = match w {
        Write::Create(ev, key, count) => {
            let api: Api<K8sEvent> = Api::namespaced(
                shared.client.clone(),
                ev.metadata.namespace.as_deref().unwrap_or("default"),
            );
            let name = ev.metadata.name.clone().unwrap_or_default();
            let res = api.create(&PostParams::default(), &ev).await.map(|_| ());
            let what = (name.clone(), ev.reason.clone().unwrap_or_default());
            (key, name, count, res, what)
        }
        Write::Count {
            key,
            namespace,
            name,
            count,
        } => {
            let api: Api<K8sEvent> = Api::namespaced(shared.client.clone(), &namespace);
            let patch = json!({"series": {
                "count": count,
                "lastObservedTime": MicroTime(Timestamp::now()),
            }});
            let res = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ());
            let what = (name.clone(), "series count".to_string());
            (key, name, count, res, what)
        }
    };
    let mut st = shared.lock();
    match res {
        Ok(()) => {
            st.written.insert(
                key,
                Written {
                    name,
                    count,
                    at: Instant::now(),
                },
            );
        }
        Err(e) => {
            // Written anew next time (e.g. the counted event expired on the server).
            st.written.remove(&key);
            if !crate::kube_util::is_fenced(&e) {
                warn!(%event, %reason, error = %crate::kube_util::describe(&e), "Cannot publish event");
            }
        }
    }
}

async fn drain(shared: Arc<Shared>) {
    loop {
        shared.wake.notified().await;
        let batch = futures::stream::iter(std::iter::from_fn(|| next_write(&shared)))
            .map(|w| write(&shared, w))
            .buffer_unordered(CONCURRENCY);
        batch.for_each(|()| async {}).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(name: &str) -> ObjectReference {
        ObjectReference {
            namespace: Some("default".into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        }
    }

    fn event(reason: &str) -> Event {
        Event {
            type_: EventType::Normal,
            reason: reason.into(),
            note: Some("n".into()),
            action: reason.into(),
            secondary: None,
        }
    }

    fn sink() -> EventSink {
        // A client that is never reached: the drain task is stopped before it writes.
        let cfg = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = kube::Client::try_from(cfg).unwrap();
        let s = EventSink::new(
            client,
            Reporter {
                controller: "berth".into(),
                instance: None,
            },
        );
        s.task.abort();
        s
    }

    #[tokio::test]
    async fn a_progress_event_is_superseded_only_in_a_backlog_and_only_while_unwritten() {
        let s = sink();
        s.publish(&event("EnsuringLoadBalancer"), &reference("a"))
            .await
            .unwrap();
        assert!(
            !s.supersede(&reference("a"), "EnsuringLoadBalancer", "n"),
            "no backlog: both events are written"
        );
        for i in 0..BACKLOG {
            s.publish(&event("EnsuringLoadBalancer"), &reference(&format!("s{i}")))
                .await
                .unwrap();
        }
        assert!(!s.supersede(&reference("a"), "EnsuringLoadBalancer", "other note"));
        assert!(!s.supersede(&reference("b"), "EnsuringLoadBalancer", "n"));
        assert!(s.supersede(&reference("a"), "EnsuringLoadBalancer", "n"));
        assert_eq!(s.queued(), BACKLOG);
        // The writer skips the forgotten event and goes on with the next.
        let Some(Write::Create(ev, _, 1)) = next_write(&s.shared) else {
            panic!("a write");
        };
        assert_eq!(ev.regarding.and_then(|r| r.name).as_deref(), Some("s0"));
        // Written events are not taken back.
        assert!(!s.supersede(&reference("s0"), "EnsuringLoadBalancer", "n"));
    }

    #[tokio::test]
    async fn identical_queued_events_fold_into_one_write_with_a_count() {
        let s = sink();
        for _ in 0..3 {
            s.publish(&event("UpdatedLoadBalancer"), &reference("a"))
                .await
                .unwrap();
        }
        s.publish(&event("UpdatedLoadBalancer"), &reference("b"))
            .await
            .unwrap();
        s.publish(&event("EnsuredLoadBalancer"), &reference("a"))
            .await
            .unwrap();
        assert_eq!(s.queued(), 3);
        let Some(Write::Create(ev, _, 3)) = next_write(&s.shared) else {
            panic!("the first write is a's three UpdatedLoadBalancer as one");
        };
        assert_eq!(ev.series.as_ref().map(|x| x.count), Some(3));
        assert_eq!(ev.reason.as_deref(), Some("UpdatedLoadBalancer"));
        assert!(matches!(
            next_write(&s.shared),
            Some(Write::Create(_, _, 1))
        ));
        assert!(matches!(
            next_write(&s.shared),
            Some(Write::Create(_, _, 1))
        ));
        assert!(next_write(&s.shared).is_none());
    }

    #[tokio::test]
    async fn a_recent_identical_event_is_counted_up_not_written_anew() {
        let s = sink();
        s.publish(&event("UpdatedLoadBalancer"), &reference("a"))
            .await
            .unwrap();
        let Some(Write::Create(ev, key, _)) = next_write(&s.shared) else {
            panic!("first: create");
        };
        s.shared.lock().written.insert(
            key,
            Written {
                name: ev.metadata.name.clone().unwrap(),
                count: 1,
                at: Instant::now(),
            },
        );
        s.publish(&event("UpdatedLoadBalancer"), &reference("a"))
            .await
            .unwrap();
        match next_write(&s.shared) {
            Some(Write::Count { name, count, .. }) => {
                assert_eq!(Some(name), ev.metadata.name);
                assert_eq!(count, 2);
            }
            _ => panic!("second: a count update"),
        }
    }

    #[tokio::test]
    async fn a_full_queue_drops_new_events_and_counts_them() {
        let s = sink();
        for i in 0..QUEUE_LIMIT + 5 {
            s.publish(&event("EnsuredLoadBalancer"), &reference(&format!("s{i}")))
                .await
                .unwrap();
        }
        assert_eq!(s.queued(), QUEUE_LIMIT);
        assert_eq!(s.dropped(), 5);
    }
}
