//! The node set every load balancer targets, computed once per change of the Nodes (not once
//! per reconcile), and the trigger that brings every Service back when it changes —
//! coalesced, so a burst of node events (an autoscaler adding 200 nodes) rewrites each load
//! balancer once or twice, not once per node.
//!
//! A change is published after the Nodes have been quiet for `quiet`, or `max_delay` after
//! the first change of a burst that never quiets down, whichever comes first. Until then the
//! reconciler keeps using the last published set, so one pass over the load balancers writes
//! them all with the same targets. A burst that ends where it started triggers nothing.

use crate::endpoints::Endpoints;
use crate::nodes;
use berth_providers::{NodeTarget, Provider, Targets};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, warn};

/// How node changes are coalesced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeSyncSettings {
    /// Publish once the Nodes have not changed for this long.
    pub quiet: Duration,
    /// ... or this long after the first unpublished change, whichever is first.
    pub max_delay: Duration,
}

impl Default for NodeSyncSettings {
    fn default() -> Self {
        NodeSyncSettings {
            quiet: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
        }
    }
}

/// The published targets, for the reconciler: cheap to read (one `Arc` clone). With a
/// provider that sends traffic to pods, it also holds the EndpointSlice cache those load
/// balancers' targets come from ([`NodeTargets::endpoints`]).
#[derive(Clone)]
pub struct NodeTargets(watch::Receiver<Option<Targets>>, Endpoints);

impl NodeTargets {
    /// The same targets, with the endpoints of load balancers that target pods read from
    /// `endpoints`.
    pub fn with_endpoints(self, endpoints: Endpoints) -> Self {
        NodeTargets(self.0, endpoints)
    }

    /// The EndpointSlice cache (empty unless [`NodeTargets::with_endpoints`] gave one).
    pub fn endpoints(&self) -> &Endpoints {
        &self.1
    }

    /// The targets last published (none before the Node cache first synced).
    pub fn get(&self) -> Targets {
        self.0.borrow().clone().unwrap_or_default()
    }

    /// Waits until the Node cache has synced once; false if the tracker stopped first.
    pub async fn wait_ready(&mut self) -> bool {
        self.0.wait_for(Option::is_some).await.is_ok()
    }
}

/// When a burst of changes is published (pure; see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct Coalescer {
    settings: NodeSyncSettings,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Coalescer {
    pub fn new(settings: NodeSyncSettings) -> Self {
        Coalescer {
            settings,
            first: None,
            last: None,
        }
    }

    /// The node set changed at `now` (and differs from what is published).
    pub fn changed(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// Nothing is pending any more (published, or back to what was published).
    pub fn clear(&mut self) {
        self.first = None;
        self.last = None;
    }

    /// When to publish what is pending; None: nothing is.
    pub fn deadline(&self) -> Option<Instant> {
        let (first, last) = (self.first?, self.last?);
        Some((last + self.settings.quiet).min(first + self.settings.max_delay))
    }
}

/// Keeps of a Node only what berth reads (name, labels, deletion, taints, providerID,
/// addresses): the cache of a 1,000-node cluster stays small.
pub fn prune_node(node: &mut Node) {
    let m = &mut node.metadata;
    m.managed_fields = None;
    m.annotations = None;
    m.owner_references = None;
    if let Some(spec) = node.spec.take() {
        node.spec = Some(NodeSpec {
            provider_id: spec.provider_id,
            taints: spec.taints,
            unschedulable: spec.unschedulable,
            ..Default::default()
        });
    }
    if let Some(status) = node.status.take() {
        node.status = Some(NodeStatus {
            addresses: status.addresses,
            ..Default::default()
        });
    }
}

fn eligible(store: &Store<Node>, provider: &dyn Provider) -> Vec<NodeTarget> {
    let mut t = nodes::eligible_targets(store.state().iter().map(|n| n.as_ref()));
    t.retain(|n| provider.can_target(n));
    t
}

/// Watches Nodes and publishes the targets; sends a trigger whenever the published set
/// changes (never for changes that cannot move a target, such as heartbeats).
pub fn spawn(
    client: Client,
    provider: Arc<dyn Provider>,
    settings: NodeSyncSettings,
) -> (NodeTargets, mpsc::Receiver<()>, tokio::task::JoinHandle<()>) {
    let (reader, writer) = reflector::store();
    let events = watcher(Api::<Node>::all(client), watcher::Config::default())
        .default_backoff()
        .modify(prune_node)
        .reflect(writer);
    let (tx, rx) = mpsc::channel::<()>(1);
    let (targets_tx, targets_rx) = watch::channel::<Option<Targets>>(None);
    let task = tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        let mut coalescer = Coalescer::new(settings);
        let mut latest: Option<Vec<NodeTarget>> = None;
        loop {
            let deadline = coalescer.deadline();
            let publish_due = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => futures::future::pending().await,
                }
            };
            tokio::select! {
                ev = events.next() => {
                    match ev {
                        None => break,
                        Some(Ok(watcher::Event::Init | watcher::Event::InitApply(_))) => continue,
                        Some(Ok(_)) => {}
                        Some(Err(e)) => {
                            warn!(error = %crate::kube_util::describe(&e), "Node watch failed; retrying");
                            continue;
                        }
                    }
                    let now = eligible(&reader, provider.as_ref());
                    let published = targets_tx.borrow().clone();
                    match published {
                        None => {
                            // The first sync: the reconciler waits for it, publish at once.
                            targets_tx.send_replace(Some(now.clone().into()));
                            coalescer.clear();
                        }
                        Some(p) if p[..] == now[..] => coalescer.clear(),
                        Some(_) if latest.as_ref() != Some(&now) => coalescer.changed(Instant::now()),
                        Some(_) => {}
                    }
                    latest = Some(now);
                }
                _ = publish_due => {
                    coalescer.clear();
                    if let Some(now) = latest.clone() {
                        debug!(targets = now.len(), "Node targets changed; reconciling every Service");
                        targets_tx.send_replace(Some(now.into()));
                        // A full channel already holds a pending trigger.
                        let _ = tx.try_send(());
                    }
                }
            }
        }
    });
    (NodeTargets(targets_rx, Endpoints::default()), rx, task)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodes::tests::NodeB;

    fn fires(settings: NodeSyncSettings, events: &[Duration]) -> Vec<Duration> {
        // Replays change times through the coalescer the way the tracker's loop does.
        let t0 = Instant::now();
        let mut c = Coalescer::new(settings);
        let mut out = Vec::new();
        let mut i = 0;
        loop {
            let next_event = events.get(i).map(|d| t0 + *d);
            match (c.deadline(), next_event) {
                (Some(d), Some(e)) if d <= e => {
                    out.push(d - t0);
                    c.clear();
                }
                (_, Some(e)) => {
                    c.changed(e);
                    i += 1;
                }
                (Some(d), None) => {
                    out.push(d - t0);
                    c.clear();
                }
                (None, None) => return out,
            }
        }
    }

    #[test]
    fn one_change_is_published_after_the_quiet_period() {
        let s = NodeSyncSettings::default();
        assert_eq!(fires(s, &[Duration::ZERO]), [Duration::from_millis(500)]);
    }

    #[test]
    fn a_storm_of_200_nodes_in_10_s_is_published_at_most_twice() {
        let s = NodeSyncSettings::default();
        let storm: Vec<Duration> = (0..200).map(|i| Duration::from_millis(50 * i)).collect();
        let f = fires(s, &storm);
        // The last node arrives at 9.95 s; max_delay publishes everything at 10 s.
        assert_eq!(f, [Duration::from_secs(10)]);
    }

    #[test]
    fn a_change_that_never_quiets_down_is_still_published_every_max_delay() {
        let s = NodeSyncSettings {
            quiet: Duration::from_secs(1),
            max_delay: Duration::from_secs(5),
        };
        let endless: Vec<Duration> = (0..300).map(|i| Duration::from_millis(100 * i)).collect();
        let f = fires(s, &endless);
        assert_eq!(f[0], Duration::from_secs(5));
        let want: Vec<Duration> = (1..=6).map(|i| Duration::from_secs(5 * i)).collect();
        assert_eq!(f, want);
    }

    #[test]
    fn pruning_keeps_what_eligibility_and_targets_read() {
        let mut n = NodeB::new("a", "10.0.0.1")
            .label(nodes::EXCLUDE_LABEL, "true")
            .taint(nodes::AUTOSCALER_TAINT)
            .deleting()
            .0;
        n.metadata.annotations = Some([("big".to_string(), "x".repeat(10_000))].into());
        n.status.as_mut().unwrap().images = Some(vec![Default::default(); 50]);
        let before = (nodes::is_eligible(&n), nodes::target_of(&n));
        prune_node(&mut n);
        assert_eq!((nodes::is_eligible(&n), nodes::target_of(&n)), before);
        assert!(n.metadata.annotations.is_none());
        assert!(n.status.unwrap().images.is_none());
        let mut ok = NodeB::new("b", "10.0.0.2")
            .label("topology.kubernetes.io/zone", "z")
            .0;
        let before = (nodes::is_eligible(&ok), nodes::target_of(&ok));
        prune_node(&mut ok);
        assert_eq!((nodes::is_eligible(&ok), nodes::target_of(&ok)), before);
    }
}
