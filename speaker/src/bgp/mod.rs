//! BGP mode: this node's speaker peers with the routers of the BGPPeers that select it and
//! announces the VIPs of the pools that BGPAdvertisements cover, with itself as next hop,
//! so a router spreads a VIP's traffic over every eligible node (ECMP) and routes around a
//! failed one. The BGP sessions are [`berth_bgp`]'s.
//!
//! * [`desired`]: the pure part — which peers, with which session config, get which routes.
//! * This file: watches of BGPPeers, BGPAdvertisements, BFDProfiles and IPAddressPools
//!   (a cluster without the CRDs has BGP off; the speaker's Node, Service and EndpointSlice
//!   caches are shared with l2 mode), password Secrets read by name, one [`berth_bgp::Speaker`]
//!   per BGPPeer (routes differ per peer; all share one BFD socket per local address),
//!   Warning events for unusable BGPPeers, metrics, and graceful shutdown: every route is
//!   withdrawn and every session closed with Cease before the process exits.
//! * [`status`]: the per-node [`BGPSessionStatus`] objects.
//!
//! Changes to the shared caches are noticed by polling a fingerprint of their resource
//! versions every 200 ms (the l2 loop owns their change notification).
//!
//! [`BGPSessionStatus`]: berth_api::bgp::BGPSessionStatus

pub mod desired;
pub mod status;

use berth_api::bgp::{BFDProfile, BGPAdvertisement, BGPPeer, BGPSessionStatusStatus};
use berth_api::crd::IPAddressPool;
use berth_bgp::{PeerConfig, PeerStatus, SessionState};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

/// The event reason on a BGPPeer this node cannot use as written.
pub const BGP_PEER_INVALID: &str = "BGPPeerInvalid";

/// BGP mode's flags (part of `berth speaker`).
#[derive(clap::Args, Debug, Clone)]
pub struct BgpArgs {
    /// The namespace of BGPPeer password Secrets that name none: the speaker's own (its RBAC
    /// Role allows reading Secrets there only).
    #[arg(long, default_value = "berth-system")]
    pub bgp_secret_namespace: String,
}

/// The caches the l2 speaker keeps, shared with BGP mode.
#[derive(Clone)]
pub struct Caches {
    pub nodes: Store<Node>,
    pub services: Store<Service>,
    pub slices: Store<EndpointSlice>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub peer: String,
}

/// `berth_speaker_bgp_*`.
#[derive(Default)]
pub struct Metrics {
    pub session_up: Family<PeerLabels, Gauge>,
    pub prefixes: Family<PeerLabels, Gauge>,
    pub updates: Family<PeerLabels, Counter>,
    pub bfd_changes: Family<PeerLabels, Counter>,
    /// Last seen totals per peer (the session's own counters restart with it).
    seen: Mutex<BTreeMap<String, (u64, u64)>>,
}

impl Metrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "bgp_session_up",
            "1 when the BGP session with the peer is Established",
            self.session_up.clone(),
        );
        r.register(
            "bgp_prefixes_advertised",
            "Prefixes announced to the peer now",
            self.prefixes.clone(),
        );
        r.register(
            "bgp_updates_sent",
            "BGP UPDATE messages sent to the peer",
            self.updates.clone(),
        );
        r.register(
            "bgp_bfd_state_changes",
            "BFD session state changes with the peer",
            self.bfd_changes.clone(),
        );
    }

    fn observe(&self, peer: &str, st: Option<&PeerStatus>) {
        let l = PeerLabels { peer: peer.into() };
        let up = st.is_some_and(|s| s.state == SessionState::Established);
        self.session_up.get_or_create(&l).set(i64::from(up));
        self.prefixes
            .get_or_create(&l)
            .set(st.map_or(0, |s| s.prefixes_advertised as i64));
        let (upd, bfd) = st.map_or((0, 0), |s| (s.updates_sent, s.bfd_state_changes));
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let last = seen.entry(peer.to_string()).or_insert((0, 0));
        let delta = |new: u64, old: u64| if new >= old { new - old } else { new };
        self.updates.get_or_create(&l).inc_by(delta(upd, last.0));
        self.bfd_changes
            .get_or_create(&l)
            .inc_by(delta(bfd, last.1));
        *last = (upd, bfd);
    }

    fn forget(&self, peer: &str) {
        let l = PeerLabels { peer: peer.into() };
        self.session_up.remove(&l);
        self.prefixes.remove(&l);
        self.updates.remove(&l);
        self.bfd_changes.remove(&l);
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(peer);
    }
}

/// What a watch of one of the BGP resources knows.
#[derive(Debug, Clone)]
enum Seen<K> {
    Unknown,
    NotServed,
    Objects(BTreeMap<String, K>),
}

type Watched<K> = Arc<Mutex<Seen<K>>>;

fn not_served(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code == 404,
        watcher::Error::WatchError(s) => s.code == 404,
        _ => false,
    }
}

/// Watches a cluster-scoped berth resource whose CRD may not be installed.
fn watch_optional<K>(api: Api<K>, changed: Arc<Notify>) -> Watched<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + 'static,
{
    let state: Watched<K> = Arc::new(Mutex::new(Seen::Unknown));
    let st = state.clone();
    tokio::spawn(async move {
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut building: BTreeMap<String, K> = BTreeMap::new();
        let set = |v: Seen<K>| {
            *st.lock().unwrap_or_else(|e| e.into_inner()) = v;
            changed.notify_one();
        };
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(watcher::Event::Init) => building.clear(),
                Ok(watcher::Event::InitApply(o)) => {
                    building.insert(o.name_any(), o);
                }
                Ok(watcher::Event::InitDone) => {
                    let first =
                        matches!(*st.lock().unwrap_or_else(|e| e.into_inner()), Seen::Unknown);
                    if first {
                        info!(kind = %K::kind(&()), objects = building.len(), "Listed");
                    }
                    set(Seen::Objects(building.clone()));
                }
                Ok(watcher::Event::Apply(o)) => {
                    building.insert(o.name_any(), o);
                    set(Seen::Objects(building.clone()));
                }
                Ok(watcher::Event::Delete(o)) => {
                    building.remove(&o.name_any());
                    set(Seen::Objects(building.clone()));
                }
                Err(e) if not_served(&e) => {
                    let known = matches!(
                        *st.lock().unwrap_or_else(|e| e.into_inner()),
                        Seen::NotServed
                    );
                    if !known {
                        info!(kind = %K::kind(&()), "Not served; BGP mode ignores it");
                        set(Seen::NotServed);
                    }
                }
                Err(e) => warn!(kind = %K::kind(&()), error = %e, "Watch failed; retrying"),
            }
        }
    });
    state
}

fn objects<K: Clone>(w: &Watched<K>) -> Vec<K> {
    match &*w.lock().unwrap_or_else(|e| e.into_inner()) {
        Seen::Objects(m) => m.values().cloned().collect(),
        _ => vec![],
    }
}

/// A hash of the shared caches' resource versions: changes when any object does.
fn fingerprint(c: &Caches) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    fn add<K: Resource>(h: &mut impl Hasher, objs: Vec<Arc<K>>) {
        objs.len().hash(h);
        for o in objs {
            o.meta().uid.hash(h);
            o.meta().resource_version.hash(h);
        }
    }
    add(&mut h, c.nodes.state());
    add(&mut h, c.services.state());
    add(&mut h, c.slices.state());
    h.finish()
}

/// Passwords read from Secrets (by name: the speaker cannot list or watch Secrets), by peer:
/// read again after 15 s, retried after 5 s when they could not be read.
#[derive(Default)]
struct Secrets {
    cache: BTreeMap<String, (SecretKey, Result<String, String>, Instant)>,
}

/// (namespace, name, key) of a password.
type SecretKey = (String, String, String);

impl Secrets {
    fn due(&self) -> bool {
        self.cache.values().any(|(_, r, at)| {
            at.elapsed()
                > if r.is_ok() {
                    Self::KEEP_OK
                } else {
                    Duration::from_secs(5)
                }
        })
    }

    /// How long a read is kept: a changed password is picked up within this.
    const KEEP_OK: Duration = Duration::from_secs(15);

    async fn read(
        client: &Client,
        (ns, name, key): &(String, String, String),
    ) -> Result<String, String> {
        let api: Api<Secret> = Api::namespaced(client.clone(), ns);
        let got = tokio::time::timeout(Duration::from_secs(5), api.get_opt(name))
            .await
            .map_err(|_| format!("reading Secret {ns}/{name} timed out"))?;
        let s = match got {
            Ok(Some(s)) => s,
            Ok(None) => return Err(format!("Secret {ns}/{name} not found")),
            Err(kube::Error::Api(e)) if e.code == 403 => {
                return Err(format!(
                    "cannot read Secret {ns}/{name}: forbidden (the speaker may read Secrets in its own namespace only)"
                ));
            }
            Err(e) => return Err(format!("cannot read Secret {ns}/{name}: {e}")),
        };
        let v = s
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .ok_or_else(|| format!("Secret {ns}/{name} has no key {key:?}"))?;
        if v.0.is_empty() || v.0.len() > 80 {
            return Err(format!(
                "Secret {ns}/{name} key {key:?}: a TCP MD5 password is 1 to 80 bytes"
            ));
        }
        String::from_utf8(v.0.clone())
            .map_err(|_| format!("Secret {ns}/{name} key {key:?} is not UTF-8"))
    }

    /// The passwords of `peers` with a `passwordSecret`, reading what is missing or stale.
    async fn passwords(
        &mut self,
        client: &Client,
        default_ns: &str,
        peers: &[BGPPeer],
    ) -> BTreeMap<String, Result<String, String>> {
        let mut wanted = BTreeMap::new();
        for p in peers {
            if let Some(r) = &p.spec.password_secret {
                let ns = r
                    .namespace
                    .clone()
                    .unwrap_or_else(|| default_ns.to_string());
                let key = r.key.clone().unwrap_or_else(|| "password".into());
                wanted.insert(p.name_any(), (ns, r.name.clone(), key));
            }
        }
        self.cache.retain(|peer, _| wanted.contains_key(peer));
        let stale: Vec<(String, SecretKey)> = wanted
            .iter()
            .filter(|(peer, k)| match self.cache.get(*peer) {
                Some((ck, r, at)) => {
                    ck != *k
                        || at.elapsed()
                            > if r.is_ok() {
                                Self::KEEP_OK
                            } else {
                                Duration::from_secs(5)
                            }
                }
                None => true,
            })
            .map(|(p, k)| (p.clone(), k.clone()))
            .collect();
        let reads =
            futures::future::join_all(stale.iter().map(|(_, k)| Self::read(client, k))).await;
        for ((peer, k), r) in stale.into_iter().zip(reads) {
            self.cache.insert(peer, (k, r, Instant::now()));
        }
        self.cache
            .iter()
            .map(|(p, (_, r, _))| (p.clone(), r.clone()))
            .collect()
    }
}

struct Session {
    speaker: berth_bgp::Speaker,
    config: PeerConfig,
    status: watch::Receiver<PeerStatus>,
}

/// Runs BGP mode until `shutdown`; then withdraws every route and closes every session.
/// `caches` must be ready (synced) already.
pub async fn run(
    client: Client,
    me: String,
    class: String,
    args: BgpArgs,
    caches: Caches,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let changed = Arc::new(Notify::new());
    let peers_w = watch_optional(Api::<BGPPeer>::all(client.clone()), changed.clone());
    let advs_w = watch_optional(
        Api::<BGPAdvertisement>::all(client.clone()),
        changed.clone(),
    );
    let profiles_w = watch_optional(Api::<BFDProfile>::all(client.clone()), changed.clone());
    let pools_w = watch_optional(Api::<IPAddressPool>::all(client.clone()), changed.clone());
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "berth-speaker".into(),
            instance: Some(me.clone()),
        },
    );
    // Owns the BFD sockets every per-peer speaker shares; never has peers itself.
    let base = berth_bgp::Speaker::new();
    let mut sessions: BTreeMap<String, Session> = BTreeMap::new();
    // Peers this node cannot use: the reason; and the reason last told in an event.
    let mut errors: BTreeMap<String, String> = BTreeMap::new();
    let mut told: BTreeMap<String, String> = BTreeMap::new();
    let mut uids: BTreeMap<String, String> = BTreeMap::new();
    let mut secrets = Secrets::default();
    let mut pools = crate::view::PoolIndex::default();
    let (reports_tx, reports_rx) = watch::channel(status::Reports::new());
    let writer = tokio::spawn(status::run(
        client.clone(),
        me.clone(),
        reports_rx,
        shutdown.clone(),
    ));
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_fp = None;
    let mut last_problems: Vec<String> = vec![];
    let mut dirty = true;
    let mut on = false;
    loop {
        tokio::select! {
            _ = changed.notified() => dirty = true,
            _ = tick.tick() => {},
            _ = shutdown.wait_for(|s| *s) => break,
        }
        let fp = fingerprint(&caches);
        if last_fp != Some(fp) {
            last_fp = Some(fp);
            dirty = true;
        }
        if secrets.due() {
            dirty = true;
        }
        if dirty {
            dirty = false;
            let peers = objects(&peers_w);
            if peers.is_empty() && sessions.is_empty() && errors.is_empty() {
                if on {
                    info!("No BGPPeer: BGP mode idle");
                    on = false;
                }
            } else {
                if !on {
                    info!(peers = peers.len(), "BGP mode active");
                    on = true;
                }
                uids = peers
                    .iter()
                    .map(|p| (p.name_any(), p.uid().unwrap_or_default()))
                    .collect();
                let inp = inputs(
                    &me,
                    &class,
                    &caches,
                    peers,
                    objects(&advs_w),
                    objects(&profiles_w),
                    objects(&pools_w),
                    &mut pools,
                    &mut secrets,
                    &client,
                    &args.bgp_secret_namespace,
                )
                .await;
                let d = desired::desired(&inp);
                if d.problems != last_problems {
                    for p in &d.problems {
                        warn!(problem = %p, "BGPAdvertisement ignored");
                    }
                    last_problems = d.problems.clone();
                }
                apply(&base, &mut sessions, &mut errors, d);
                for (name, e) in &errors {
                    if told.get(name) != Some(e) {
                        warn!(peer = %name, error = %e, "BGPPeer cannot be used");
                        told.insert(name.clone(), e.clone());
                        if let Some(p) = objects(&peers_w)
                            .into_iter()
                            .find(|p| &p.name_any() == name)
                        {
                            let rec = recorder.clone();
                            let note = format!("node {me}: {e}");
                            tokio::spawn(async move {
                                let ev = Event {
                                    type_: EventType::Warning,
                                    reason: BGP_PEER_INVALID.into(),
                                    note: Some(note),
                                    action: "Peer".into(),
                                    secondary: None,
                                };
                                if let Err(e) = rec.publish(&ev, &p.object_ref(&())).await {
                                    warn!(error = %e, "Cannot publish event");
                                }
                            });
                        }
                    }
                }
                told.retain(|n, _| errors.contains_key(n));
            }
        }
        // Statuses and metrics follow the sessions (cheap: no API calls here).
        let mut reports = status::Reports::new();
        for (name, e) in &errors {
            reports.insert(
                name.clone(),
                status::Report {
                    peer_uid: uids.get(name).cloned().unwrap_or_default(),
                    status: BGPSessionStatusStatus {
                        state: "Invalid".into(),
                        routes_advertised: 0,
                        bfd_state: None,
                        last_error: Some(e.clone()),
                    },
                },
            );
            metrics.observe(name, None);
        }
        for (name, s) in &sessions {
            let st = s.status.borrow().clone();
            metrics.observe(name, Some(&st));
            reports.insert(
                name.clone(),
                status::Report {
                    peer_uid: uids.get(name).cloned().unwrap_or_default(),
                    status: session_status(&st),
                },
            );
        }
        let gone: Vec<String> = metrics
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .filter(|k| !reports.contains_key(*k))
            .cloned()
            .collect();
        for g in gone {
            metrics.forget(&g);
        }
        reports_tx.send_if_modified(|cur| {
            if *cur != reports {
                *cur = reports;
                true
            } else {
                false
            }
        });
    }
    // Withdraw everything and close every session with Cease (bounded per peer).
    let t0 = Instant::now();
    futures::future::join_all(sessions.values().map(|s| s.speaker.shutdown())).await;
    if !sessions.is_empty() {
        info!(peers = sessions.len(), elapsed = ?t0.elapsed(), "BGP sessions closed");
    }
    reports_tx.send_modify(|r| {
        for rep in r.values_mut() {
            rep.status = BGPSessionStatusStatus {
                state: "Idle".into(),
                routes_advertised: 0,
                bfd_state: None,
                last_error: Some("speaker stopped".into()),
            };
        }
    });
    drop(reports_tx);
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
}

fn session_status(st: &PeerStatus) -> BGPSessionStatusStatus {
    BGPSessionStatusStatus {
        state: format!("{:?}", st.state),
        routes_advertised: st.prefixes_advertised as i64,
        bfd_state: st.bfd_state.map(|b| format!("{b:?}")),
        last_error: st.last_error.clone(),
    }
}

#[allow(clippy::too_many_arguments)]
async fn inputs(
    me: &str,
    class: &str,
    caches: &Caches,
    peers: Vec<BGPPeer>,
    advertisements: Vec<BGPAdvertisement>,
    profiles: Vec<BFDProfile>,
    pool_objs: Vec<IPAddressPool>,
    pools: &mut crate::view::PoolIndex,
    secrets: &mut Secrets,
    client: &Client,
    secret_ns: &str,
) -> desired::Inputs {
    let node = caches
        .nodes
        .state()
        .into_iter()
        .find(|n| n.name_any() == me);
    let node = match node {
        Some(n) => {
            let router_id = n
                .status
                .as_ref()
                .and_then(|s| s.addresses.as_ref())
                .into_iter()
                .flatten()
                .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
                .find_map(|a| a.address.parse::<std::net::Ipv4Addr>().ok());
            desired::NodeInfo {
                name: me.to_string(),
                labels: n.labels().clone(),
                eligible: berth_api::nodes::is_eligible(&n),
                router_id,
            }
        }
        // Unknown node: peer (its selectors see no labels), announce nothing.
        None => desired::NodeInfo {
            name: me.to_string(),
            ..Default::default()
        },
    };
    pools.set(crate::view::pool_specs(pool_objs.iter()));
    let services = caches.services.state();
    let eps = crate::view::endpoint_nodes(caches.slices.state().iter().map(|s| s.as_ref()));
    let mut vips: BTreeMap<IpAddr, Vec<crate::election::ServiceView>> = BTreeMap::new();
    for s in &services {
        let ips = crate::view::vips(s, class);
        if ips.is_empty() {
            continue;
        }
        let k = crate::view::key(s);
        let view = crate::election::ServiceView {
            local: s
                .spec
                .as_ref()
                .and_then(|sp| sp.external_traffic_policy.as_deref())
                == Some("Local"),
            endpoint_nodes: eps.get(&k).cloned().unwrap_or_default(),
            key: k,
        };
        for ip in ips {
            vips.entry(ip).or_default().push(view.clone());
        }
    }
    let vip_pools = vips
        .keys()
        .filter_map(|ip| Some((*ip, pools.pool_of(*ip)?)))
        .collect();
    let mine: Vec<BGPPeer> = peers
        .iter()
        .filter(|p| {
            p.spec.node_selectors.is_empty()
                || p.spec
                    .node_selectors
                    .iter()
                    .any(|s| s.matches(&node.labels))
        })
        .cloned()
        .collect();
    let passwords = secrets.passwords(client, secret_ns, &mine).await;
    desired::Inputs {
        node,
        peers,
        advertisements,
        profiles: profiles
            .into_iter()
            .map(|p| (p.name_any(), p.spec))
            .collect(),
        pool_labels: pool_objs
            .iter()
            .map(|p| (p.name_any(), p.labels().clone()))
            .collect(),
        vips,
        vip_pools,
        passwords,
    }
}

/// Brings the sessions in line with `d`: new peers get a speaker, changed ones are updated
/// (restarted only when a negotiated setting changed), unusable or gone ones are closed.
fn apply(
    base: &berth_bgp::Speaker,
    sessions: &mut BTreeMap<String, Session>,
    errors: &mut BTreeMap<String, String>,
    d: desired::Desired,
) {
    let close = |s: Session| {
        tokio::spawn(async move {
            let _ = s.speaker.remove_peer(s.config.address).await;
        });
    };
    let gone: Vec<String> = sessions
        .keys()
        .filter(|k| !d.peers.contains_key(*k))
        .cloned()
        .collect();
    for g in gone {
        if let Some(s) = sessions.remove(&g) {
            info!(peer = %g, "BGPPeer no longer applies to this node; closing the session");
            close(s);
        }
    }
    errors.retain(|k, _| d.peers.contains_key(k));
    for (name, plan) in d.peers {
        let cfg = match plan.config {
            Err(e) => {
                if let Some(s) = sessions.remove(&name) {
                    close(s);
                }
                errors.insert(name, e);
                continue;
            }
            Ok(c) => c,
        };
        match sessions.get_mut(&name) {
            Some(s) if s.config == cfg => {}
            Some(s) if s.config.address == cfg.address => {
                let (sp, c) = (s.speaker.clone(), cfg.clone());
                tokio::spawn(async move {
                    if let Err(e) = sp.update_peer(c).await {
                        warn!(error = %e, "Cannot update the BGP session");
                    }
                });
                s.config = cfg.clone();
            }
            _ => {
                if let Some(old) = sessions.remove(&name) {
                    close(old);
                }
                let speaker = base.sibling();
                match speaker.add_peer(cfg.clone()) {
                    Ok(status) => {
                        info!(peer = %name, address = %cfg.address, "BGP session starting");
                        sessions.insert(
                            name.clone(),
                            Session {
                                speaker,
                                config: cfg,
                                status,
                            },
                        );
                    }
                    Err(e) => {
                        errors.insert(name, e.to_string());
                        continue;
                    }
                }
            }
        }
        errors.remove(&name);
        if let Some(s) = sessions.get(&name) {
            s.speaker.set_routes(plan.routes);
        }
    }
}
