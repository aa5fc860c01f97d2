//! `berth speaker`: one node answers ARP (IPv4) and NDP (IPv6) for each VIP of the `l2`
//! provider, and another takes over within about a second when it fails.
//!
//! * [`membership`]: SWIM among speakers over authenticated UDP ([`wire`]) — no Lease per
//!   Service, so API load does not grow with Services; every live speaker converges on one
//!   member list, so every speaker elects the same owner.
//! * [`election`]: rendezvous hashing per VIP among live speakers on usable nodes (ETP=Local:
//!   nodes with a ready endpoint; L2Advertisement node selectors and interfaces honoured).
//! * [`frames`]: pure ARP/NDP frame code; [`packet`]: the AF_PACKET shell.
//! * [`bgp`]: BGP mode (announces VIPs to routers: BGPPeer, BGPAdvertisement, BFDProfile).
//! * This file: the watches (Services, Nodes, EndpointSlices, L2Advertisements,
//!   IPAddressPools — the pool a VIP lies in decides which advertisements apply; one each),
//!   the announce loop (gratuitous ARP / unsolicited NA on takeover, stop at once on loss),
//!   and what users see: a `NodeAssigned` event, metrics, and a [`ServiceL2Status`] per
//!   Service announced ([`report`]; the l2 controller mirrors it into the
//!   `berth.io/announcing-node` annotation — the speaker never writes Services).
//!
//! [`ServiceL2Status`]: berth_api::crd::ServiceL2Status

pub mod bgp;
pub mod election;
pub mod frames;
pub mod iface;
pub mod membership;
pub mod metrics;
pub mod packet;
pub mod report;
mod sys;
pub mod view;
pub mod wire;

use anyhow::Context;
use berth_api::crd::IPAddressPool;
use berth_api::duration::parse_duration;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use metrics::SpeakerMetrics;
use packet::Link;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc, watch};
use tracing::{info, warn};

pub use berth_api::names::{ANNOUNCING_ANNOTATION, NODE_ASSIGNED};

#[derive(clap::Args, Debug, Clone)]
pub struct SpeakerArgs {
    /// Kubeconfig file (default: in-cluster, then $KUBECONFIG).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// This node's name (as in the Node object); in a DaemonSet, from spec.nodeName.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// Interfaces to announce on, comma-separated (default: every interface except lo,
    /// veth*, docker*, cni*, flannel*, bridge ports and bond slaves).
    #[arg(long, value_delimiter = ',')]
    pub interfaces: Vec<String>,
    /// This node's address for the failure detector, `ADDR` or `ADDR:PORT` (IPv6 in
    /// brackets with a port; port 7946 if none); peers are expected at the same port. In a
    /// DaemonSet, the node's address from status.hostIP.
    #[arg(long, value_parser = parse_bind)]
    pub memberlist_bind: SocketAddr,
    /// The shared keys authenticating membership datagrams: one per line, at least 32
    /// characters each, used as written; the first signs, every one verifies. Re-read when
    /// it changes (add the new key as the first line everywhere, then remove the old one).
    #[arg(long)]
    pub membership_key_file: Option<PathBuf>,
    /// Run membership unauthenticated (anyone who can send UDP to the port steers VIPs).
    #[arg(long)]
    pub membership_insecure: bool,
    /// Peers as NODE=ADDR:PORT, comma-separated (default: every Node's InternalIP at the
    /// --memberlist-bind port).
    #[arg(long, value_delimiter = ',')]
    pub memberlist_peers: Vec<String>,
    /// How often a speaker probes one (random) peer.
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    pub probe_interval: Duration,
    /// How long a suspected peer has to refute before it is dead and its VIPs move.
    #[arg(long, default_value = "400ms", value_parser = parse_duration)]
    pub suspect_timeout: Duration,
    /// Rounds of gratuitous ARP / unsolicited NA on takeover (~1.1 s apart: Linux ignores
    /// neighbour updates within its 1 s locktime).
    #[arg(long, default_value_t = 3)]
    pub gratuitous_rounds: u32,
    /// Also send gratuitous ARP / unsolicited NA for every announced VIP at this interval.
    #[arg(long, value_parser = parse_duration)]
    pub periodic_garp: Option<Duration>,
    /// Answer ARP requests only from senders in the interface's connected subnets.
    #[arg(long)]
    pub arp_same_subnet_only: bool,
    /// The loadBalancerClass whose VIPs are announced.
    #[arg(long, default_value = "berth.io/l2")]
    pub load_balancer_class: String,
    /// Serve /metrics, /healthz and /readyz here (port 0 picks a free one).
    #[arg(long, default_value = "0.0.0.0:7473")]
    pub metrics_listen: SocketAddr,
    #[command(flatten)]
    pub bgp: bgp::BgpArgs,
}

const ROUND_GAP: Duration = Duration::from_millis(1100);
/// The failure detector's port when `--memberlist-bind` names none.
pub const MEMBERLIST_PORT: u16 = 7946;

fn parse_bind(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, MEMBERLIST_PORT))
        .map_err(|_| format!("{s:?} is not ADDR or ADDR:PORT"))
}

fn parse_peers(v: &[String]) -> anyhow::Result<BTreeMap<String, SocketAddr>> {
    v.iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            let (n, a) = s
                .split_once('=')
                .with_context(|| format!("--memberlist-peers {s:?}: expected NODE=ADDR:PORT"))?;
            let a: SocketAddr = a
                .trim()
                .parse()
                .with_context(|| format!("--memberlist-peers {s:?}: bad address"))?;
            Ok((n.trim().to_string(), a))
        })
        .collect()
}

/// What a watch of one of berth's own resources knows: nothing yet, that the resource is not
/// served (its CRD is not installed), or its objects by `namespace/name`.
#[derive(Debug, Clone)]
enum CrdState<T> {
    Unknown,
    NotServed,
    Objects(BTreeMap<String, T>),
}

impl<T> CrdState<T> {
    fn is_unknown(&self) -> bool {
        matches!(self, CrdState::Unknown)
    }

    fn objects(&self) -> Option<&BTreeMap<String, T>> {
        match self {
            CrdState::Objects(m) => Some(m),
            _ => None,
        }
    }
}

/// A [`CrdState`] kept up to date by a watch.
type Watched<T> = Arc<Mutex<CrdState<T>>>;

/// What the packet threads consult: interface → addresses announced there now.
type Announced = Arc<RwLock<HashMap<String, HashSet<IpAddr>>>>;

struct Watches {
    nodes: Store<Node>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    advertisements: Watched<election::Advertisement>,
    pools: Watched<IPAddressPool>,
}

fn spawn_watch<K>(api: Api<K>, changed: Arc<Notify>) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Ok(_) => changed.notify_one(),
                Err(e) => warn!(kind = %K::kind(&()), error = %e, "Watch failed; retrying"),
            }
        }
    });
    reader
}

/// Watches one of berth's optional resources (L2Advertisements, IPAddressPools) into an
/// [`Watched`] `read(object)`: a cluster without the CRD is a state, not an error.
fn spawn_optional_watch<K, T>(
    api: Api<K>,
    kind: &'static str,
    if_absent: &'static str,
    read: fn(&K) -> T,
    changed: Arc<Notify>,
) -> Watched<T>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    T: Clone + Send + 'static,
{
    let state: Watched<T> = Arc::new(Mutex::new(CrdState::Unknown));
    let st = state.clone();
    tokio::spawn(async move {
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut building: BTreeMap<String, T> = BTreeMap::new();
        let set = |v: CrdState<T>| {
            *st.lock().unwrap_or_else(|e| e.into_inner()) = v;
            changed.notify_one();
        };
        let name = |o: &K| format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any());
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(watcher::Event::Init) => building.clear(),
                Ok(watcher::Event::InitApply(o)) => {
                    building.insert(name(&o), read(&o));
                }
                Ok(watcher::Event::InitDone) => set(CrdState::Objects(building.clone())),
                Ok(watcher::Event::Apply(o)) => {
                    building.insert(name(&o), read(&o));
                    set(CrdState::Objects(building.clone()));
                }
                Ok(watcher::Event::Delete(o)) => {
                    building.remove(&name(&o));
                    set(CrdState::Objects(building.clone()));
                }
                Err(e) => {
                    let msg = e.to_string();
                    if not_served(&e) {
                        let known_absent = matches!(
                            *st.lock().unwrap_or_else(|e| e.into_inner()),
                            CrdState::NotServed
                        );
                        if !known_absent {
                            info!("No {kind} resource is served; {if_absent}");
                            set(CrdState::NotServed);
                        }
                    } else {
                        warn!(error = %msg, "{kind} watch failed; retrying");
                    }
                }
            }
        }
    });
    state
}

/// Whether a watch failed because its resource is not served (its CRD is not installed):
/// the API server answered 404.
fn not_served(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code == 404,
        watcher::Error::WatchError(s) => s.code == 404,
        _ => false,
    }
}

fn spawn_advertisement_watch(
    client: Client,
    changed: Arc<Notify>,
) -> Watched<election::Advertisement> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("berth.io", "v1alpha1", "L2Advertisement"),
        "l2advertisements",
    );
    spawn_optional_watch(
        Api::<DynamicObject>::all_with(client, &ar),
        "L2Advertisement",
        "announcing every VIP",
        view::advertisement,
        changed,
    )
}

fn spawn_pool_watch(client: Client, changed: Arc<Notify>) -> Watched<IPAddressPool> {
    spawn_optional_watch(
        Api::<IPAddressPool>::all(client),
        "IPAddressPool",
        "L2Advertisements listing pools announce no VIP",
        IPAddressPool::clone,
        changed,
    )
}

/// Serves /metrics, /healthz and /readyz (200 once the speaker takes part in elections).
async fn serve_metrics(
    listen: SocketAddr,
    m: Arc<SpeakerMetrics>,
    ready: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<SocketAddr> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move |headers: axum::http::HeaderMap| {
                let m = m.clone();
                async move {
                    let accept = headers
                        .get(axum::http::header::ACCEPT)
                        .and_then(|v| v.to_str().ok());
                    let format = berth_api::exposition::negotiate(accept);
                    (
                        [(axum::http::header::CONTENT_TYPE, format.content_type())],
                        berth_api::exposition::render(&m.encode(), format),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.load(Ordering::Relaxed);
                async move {
                    if ready {
                        (axum::http::StatusCode::OK, "ok\n")
                    } else {
                        (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            "not taking part in elections yet\n",
                        )
                    }
                }
            }),
        );
    let l = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("Cannot listen on {listen} for metrics"))?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(l, app)
            .with_graceful_shutdown(async move {
                let _ = shutdown.wait_for(|s| *s).await;
            })
            .await;
    });
    Ok(addr)
}

/// One gratuitous round for `ip` on `link`: ARP request and reply form, or an unsolicited NA.
fn gratuitous(link: &Link, ip: IpAddr, m: &SpeakerMetrics) {
    let frames: Vec<Vec<u8>> = match ip {
        IpAddr::V4(v4) => vec![
            frames::garp_request(v4, link.iface.mac),
            frames::garp_reply(v4, link.iface.mac),
        ],
        IpAddr::V6(v6) => vec![frames::unsolicited_neighbor_advertisement(
            v6,
            link.iface.mac,
        )],
    };
    let proto = if ip.is_ipv4() { "arp" } else { "ndp" };
    for f in frames {
        match link.send(&f) {
            Ok(_) => {
                m.gratuitous
                    .get_or_create(&SpeakerMetrics::label(proto, &link.iface.name))
                    .inc();
            }
            Err(e) => {
                warn!(interface = %link.iface.name, %ip, error = %e, "Cannot send gratuitous frame")
            }
        }
    }
}

/// Runs the speaker until `shutdown` flips to true.
pub async fn run(
    client: Client,
    args: SpeakerArgs,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let me = args.node_name.clone();
    anyhow::ensure!(!me.is_empty(), "--node-name is required");
    let auth = match (&args.membership_key_file, args.membership_insecure) {
        (Some(path), _) => wire::Auth::Keys(wire::Keyring::load(path)?),
        (None, true) => {
            warn!("--membership-insecure: membership datagrams are not authenticated");
            wire::Auth::Insecure
        }
        (None, false) => anyhow::bail!(
            "--membership-key-file is required: membership datagrams must be authenticated (--membership-insecure runs without)"
        ),
    };
    let static_peers = parse_peers(&args.memberlist_peers)?;
    let sys = std::path::Path::new("/sys/class/net");
    let ifaces = iface::select(sys, &args.interfaces);
    anyhow::ensure!(
        !ifaces.is_empty(),
        "No interface to announce on (asked for {:?}; found none usable under /sys/class/net)",
        args.interfaces
    );
    let mut links: BTreeMap<String, Arc<Link>> = BTreeMap::new();
    for i in ifaces {
        let name = i.name.clone();
        let l = Link::open(i).with_context(|| {
            format!("Cannot open a raw socket on {name} (the speaker needs CAP_NET_RAW)")
        })?;
        links.insert(name, Arc::new(l));
    }
    info!(node = %me, interfaces = ?links.keys().collect::<Vec<_>>(), "Speaker starting");

    let m = Arc::new(SpeakerMetrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let addr = serve_metrics(
        args.metrics_listen,
        m.clone(),
        ready.clone(),
        shutdown.clone(),
    )
    .await?;
    info!(address = %addr, "Serving /metrics and /healthz");

    // Packet threads: answer for what `announced` holds, nothing else.
    let announced: Announced = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for link in links.values() {
        for (sock, proto) in [(link.arp.clone(), "arp"), (link.ipv6.clone(), "ndp")] {
            let (a, m2, stop2, iface) = (
                announced.clone(),
                m.clone(),
                stop.clone(),
                link.iface.clone(),
            );
            let check = args.arp_same_subnet_only;
            threads.push(std::thread::spawn(move || {
                packet::serve(
                    sock,
                    iface,
                    check,
                    |ifn, ip| {
                        a.read()
                            .unwrap_or_else(|e| e.into_inner())
                            .get(ifn)
                            .is_some_and(|s| s.contains(&ip))
                    },
                    |ifn, _ip| {
                        m2.answered
                            .get_or_create(&SpeakerMetrics::label(proto, ifn))
                            .inc();
                    },
                    stop2,
                )
            }));
        }
    }

    // Membership.
    let sock = tokio::net::UdpSocket::bind(args.memberlist_bind)
        .await
        .with_context(|| format!("Cannot bind the memberlist socket {}", args.memberlist_bind))?;
    info!(address = %args.memberlist_bind, keys = ?match &auth {
        wire::Auth::Keys(k) => k.fingerprints.clone(),
        wire::Auth::Insecure => vec![],
    }, "Membership listening");
    let (auth_tx, auth_rx) = watch::channel(auth);
    if let Some(path) = args.membership_key_file.clone() {
        tokio::spawn(reload_keys(path, auth_tx, shutdown.clone()));
    }
    // The epoch: a new one at every start, so a restarted speaker is never taken for a
    // replay of its previous life.
    let epoch = wire::wall_ms().max(1);
    info!(epoch, "Membership epoch");
    let swim = membership::Swim::new(
        &me,
        epoch,
        membership::Timing {
            probe_interval: args.probe_interval,
            suspect_timeout: args.suspect_timeout,
        },
        Instant::now(),
    );
    let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
    let (live_tx, mut live_rx) = watch::channel(BTreeSet::new());
    let member_task = tokio::spawn(membership::run(
        sock,
        swim,
        auth_rx,
        ctl_rx,
        live_tx,
        m.membership.clone(),
        shutdown.clone(),
    ));
    if !static_peers.is_empty() {
        let _ = ctl_tx.send(membership::Control::Peers(static_peers.clone()));
    }

    // Watches: one each.
    let changed = Arc::new(Notify::new());
    let w = Watches {
        nodes: spawn_watch(Api::<Node>::all(client.clone()), changed.clone()),
        services: spawn_watch(Api::<Service>::all(client.clone()), changed.clone()),
        slices: spawn_watch(Api::<EndpointSlice>::all(client.clone()), changed.clone()),
        advertisements: spawn_advertisement_watch(client.clone(), changed.clone()),
        pools: spawn_pool_watch(client.clone(), changed.clone()),
    };
    tokio::select! {
        r = async {
            w.nodes.wait_until_ready().await?;
            w.services.wait_until_ready().await?;
            w.slices.wait_until_ready().await
        } => r.context("Caches failed")?,
        _ = shutdown.wait_for(|s| *s) => return Ok(()),
    }
    // BGP mode shares the caches (spawned only now: a Store wakes one waiter only).
    let bgp_task = tokio::spawn(bgp::run(
        client.clone(),
        me.clone(),
        args.load_balancer_class.clone(),
        args.bgp.clone(),
        bgp::Caches {
            nodes: w.nodes.clone(),
            services: w.services.clone(),
            slices: w.slices.clone(),
        },
        m.bgp.clone(),
        shutdown.clone(),
    ));
    // Wait briefly for the advertisement and pool watches to settle either way.
    let t0 = Instant::now();
    while (w
        .advertisements
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .is_unknown()
        || w.pools
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_unknown())
        && t0.elapsed() < Duration::from_secs(10)
    {
        if *shutdown.borrow() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = ctl_tx.send(membership::Control::Ready(true));
    info!("Caches synced; taking part in elections");
    let (reports_tx, reports_rx) = watch::channel(report::Reports::new());
    let reporter = tokio::spawn(report::run(
        client.clone(),
        me.clone(),
        reports_rx,
        shutdown.clone(),
    ));

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "berth-speaker".into(),
            instance: Some(me.clone()),
        },
    );
    let mut state = Announcer {
        me: me.clone(),
        links,
        announced: announced.clone(),
        current: BTreeMap::new(),
        rounds: BTreeMap::new(),
        periodic_at: Instant::now(),
        told: HashSet::new(),
        reports: reports_tx,
        peers: BTreeMap::new(),
        prev: None,
        holding: BTreeMap::new(),
        link_up: BTreeMap::new(),
        m: m.clone(),
        recorder,
        args: args.clone(),
    };
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dirty = true;
    let mut pools = view::PoolIndex::default();
    loop {
        tokio::select! {
            _ = changed.notified() => dirty = true,
            r = live_rx.changed() => { if r.is_ok() { dirty = true } },
            _ = tick.tick() => {},
            _ = shutdown.wait_for(|s| *s) => break,
        }
        if state.links_recovered() {
            // Our own link came back: peers we declared dead may be alive and announcing.
            info!("Link up again; re-joining before announcing");
            let _ = ctl_tx.send(membership::Control::Rejoin);
            state.release_all();
            state.prev = None;
            dirty = true;
        }
        if !state.holding.is_empty() {
            dirty = true;
        }
        if dirty {
            dirty = false;
            let live = live_rx.borrow().clone();
            ready.store(live.contains(&me), Ordering::Relaxed);
            if static_peers.is_empty() {
                let peers = discovered_peers(&w.nodes, args.memberlist_bind.port());
                if peers != state.peers {
                    state.peers = peers.clone();
                    let _ = ctl_tx.send(membership::Control::Peers(peers));
                }
            }
            if !live.contains(&me) {
                // Not taking part (not ready, cut off from the other speakers, or just told
                // it was declared dead): answer for nothing, and when back, wait for a
                // handover as at start-up.
                if !state.current.is_empty() {
                    info!("Out of the live set; not announcing");
                    state.release_all();
                }
                state.prev = None;
                state.holding.clear();
                dirty = true;
                state.gratuitous_due();
                continue;
            }
            let advs = w
                .advertisements
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .objects()
                .map(|m| m.values().cloned().collect());
            let specs = w
                .pools
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .objects()
                .map(|p| view::pool_specs(p.values()))
                .unwrap_or_default();
            pools.set(specs);
            let nodes = w.nodes.state();
            let services = w.services.state();
            let slices = w.slices.state();
            let inputs = view::inputs(
                &args.load_balancer_class,
                nodes.iter().map(|n| n.as_ref()),
                services.iter().map(|s| s.as_ref()),
                slices.iter().map(|s| s.as_ref()),
                &mut pools,
                advs,
                live,
            );
            let won = election::elect(&inputs);
            state.apply(&won, &services, &inputs.live);
        }
        state.gratuitous_due();
    }
    // Stop answering at once, then say goodbye (the membership task sends Leave).
    state.release_all();
    ready.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let _ = member_task.await;
    let _ = reporter.await;
    let _ = bgp_task.await;
    for t in threads {
        let _ = t.join();
    }
    info!("Speaker stopped");
    Ok(())
}

fn discovered_peers(nodes: &Store<Node>, port: u16) -> BTreeMap<String, SocketAddr> {
    nodes
        .state()
        .iter()
        .filter_map(|n| {
            Some((
                n.name_any(),
                SocketAddr::new(berth_api::nodes::node_address(n)?, port),
            ))
        })
        .collect()
}

struct Announcer {
    me: String,
    links: BTreeMap<String, Arc<Link>>,
    announced: Announced,
    /// VIP → interfaces announced on now.
    current: BTreeMap<IpAddr, BTreeSet<String>>,
    /// (VIP, interface) → (rounds left, next round at).
    rounds: BTreeMap<(IpAddr, String), (u32, Instant)>,
    periodic_at: Instant,
    /// (Service, VIP) whose `NodeAssigned` event was published since we took the VIP.
    told: HashSet<(String, String)>,
    /// What we announce, per Service, for [`report`].
    reports: watch::Sender<report::Reports>,
    peers: BTreeMap<String, SocketAddr>,
    /// The previous election's winners; None before the first one (or after a link flap).
    prev: Option<BTreeMap<IpAddr, String>>,
    /// VIPs won from a winner that may still be announcing: since when.
    holding: BTreeMap<IpAddr, Instant>,
    /// Carrier of each link at the last look.
    link_up: BTreeMap<String, bool>,
    m: Arc<SpeakerMetrics>,
    recorder: Recorder,
    args: SpeakerArgs,
}

impl Announcer {
    fn publish(&self) {
        let mut map: HashMap<String, HashSet<IpAddr>> = HashMap::new();
        for (ip, ifs) in &self.current {
            for i in ifs {
                map.entry(i.clone()).or_default().insert(*ip);
            }
        }
        *self.announced.write().unwrap_or_else(|e| e.into_inner()) = map;
        self.m.announced.set(self.current.len() as i64);
    }

    fn set_multicast(&self, ip: IpAddr, ifs: &BTreeSet<String>, join: bool) {
        let IpAddr::V6(v6) = ip else { return };
        for i in ifs {
            if let Some(l) = self.links.get(i)
                && let Err(e) = l.multicast(v6, join)
                && join
            {
                warn!(interface = %i, %ip, error = %e, "Cannot join the solicited-node group");
            }
        }
    }

    /// Whether a link went from down to up since the last look.
    fn links_recovered(&mut self) -> bool {
        let mut recovered = false;
        for name in self.links.keys() {
            let state = std::fs::read_to_string(format!("/sys/class/net/{name}/operstate"))
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
            let up = state == "up" || state == "unknown";
            let was = self.link_up.insert(name.clone(), up);
            if up && was == Some(false) {
                recovered = true;
            }
        }
        recovered
    }

    /// How long a VIP won from a live (or unknown) previous winner waits before this speaker
    /// answers for it, so the previous winner hears about us and stops first: a handover
    /// never has two answering. A failover (the previous winner is dead) is immediate.
    fn handover_delay(&self) -> Duration {
        self.args.probe_interval * 3
    }

    fn apply(
        &mut self,
        won: &BTreeMap<IpAddr, election::Assignment>,
        services: &[Arc<Service>],
        live: &BTreeSet<String>,
    ) {
        let now = Instant::now();
        let prev = self
            .prev
            .replace(won.iter().map(|(ip, a)| (*ip, a.node.clone())).collect());
        let hold = self.handover_delay();
        let mut holding = BTreeMap::new();
        let mut ready: BTreeSet<IpAddr> = BTreeSet::new();
        for (ip, a) in won {
            if a.node != self.me || self.current.contains_key(ip) {
                continue;
            }
            let safe = match prev.as_ref().map(|p| p.get(ip)) {
                // Failover, a VIP nobody announced, or one we already had.
                Some(None) => true,
                Some(Some(n)) => *n == self.me || !live.contains(n),
                // Start-up or after a link flap: someone may be announcing it.
                None => false,
            };
            let ok = match self.holding.get(ip) {
                Some(since) => now.duration_since(*since) >= hold,
                None => safe,
            };
            if ok {
                ready.insert(*ip);
            } else {
                holding.insert(*ip, *self.holding.get(ip).unwrap_or(&now));
            }
        }
        self.holding = holding;
        let want: BTreeMap<IpAddr, (BTreeSet<String>, &election::Assignment)> = won
            .iter()
            .filter(|(ip, a)| {
                a.node == self.me && (self.current.contains_key(ip) || ready.contains(ip))
            })
            .map(|(ip, a)| {
                let ifs: BTreeSet<String> = match &a.interfaces {
                    None => self.links.keys().cloned().collect(),
                    Some(only) => only
                        .iter()
                        .filter(|i| self.links.contains_key(*i))
                        .cloned()
                        .collect(),
                };
                (*ip, (ifs, a))
            })
            .filter(|(_, (ifs, _))| !ifs.is_empty())
            .collect();
        // Losses first: stop answering at once.
        let lost: Vec<IpAddr> = self
            .current
            .keys()
            .filter(|ip| want.get(ip).is_none_or(|(ifs, _)| *ifs != self.current[ip]))
            .copied()
            .collect();
        for ip in &lost {
            if let Some(ifs) = self.current.remove(ip) {
                if !want.contains_key(ip) {
                    info!(%ip, "No longer announcing");
                    self.m.releases.inc();
                    self.told.retain(|(_, v)| v != &ip.to_string());
                }
                self.set_multicast(*ip, &ifs, false);
                self.rounds.retain(|(i, _), _| i != ip);
            }
        }
        if !lost.is_empty() {
            self.publish();
        }
        let mut gained = Vec::new();
        for (ip, (ifs, a)) in &want {
            if self.current.contains_key(ip) {
                continue;
            }
            info!(%ip, interfaces = ?ifs, services = ?a.services, "Announcing");
            self.current.insert(*ip, ifs.clone());
            self.set_multicast(*ip, ifs, true);
            for i in ifs {
                self.rounds
                    .insert((*ip, i.clone()), (self.args.gratuitous_rounds, now));
            }
            self.m.takeovers.inc();
            gained.push(*ip);
        }
        if !gained.is_empty() {
            self.publish();
            self.gratuitous_due();
        }
        // Visibility: a NodeAssigned event per Service of a VIP we took, and the reports.
        let by_key: HashMap<String, &Arc<Service>> =
            services.iter().map(|s| (view::key(s), s)).collect();
        let mut reports = report::Reports::new();
        for (ip, (ifs, a)) in &want {
            for k in &a.services {
                let Some(svc) = by_key.get(k) else { continue };
                let r = reports.entry(k.clone()).or_insert_with(|| report::Report {
                    namespace: svc.namespace().unwrap_or_default(),
                    name: svc.name_any(),
                    uid: svc.uid().unwrap_or_default(),
                    vips: vec![],
                    interfaces: vec![],
                });
                r.vips.push(ip.to_string());
                for i in ifs {
                    if !r.interfaces.contains(i) {
                        r.interfaces.push(i.clone());
                    }
                }
                if !self.told.insert((k.clone(), ip.to_string())) {
                    continue;
                }
                let svc = (*svc).as_ref().clone();
                let recorder = self.recorder.clone();
                let note = format!(
                    "announcing {ip} from node {} on interface {}",
                    self.me,
                    ifs.iter().cloned().collect::<Vec<_>>().join(",")
                );
                tokio::spawn(async move { tell(recorder, svc, note).await });
            }
        }
        for r in reports.values_mut() {
            r.vips.sort();
            r.interfaces.sort();
        }
        self.reports.send_if_modified(|cur| {
            if *cur != reports {
                *cur = reports;
                true
            } else {
                false
            }
        });
    }

    /// Sends the gratuitous rounds that are due (takeover rounds, then periodic ones).
    fn gratuitous_due(&mut self) {
        let now = Instant::now();
        let mut done = Vec::new();
        for ((ip, ifn), (left, at)) in self.rounds.iter_mut() {
            if *at > now {
                continue;
            }
            if let Some(l) = self.links.get(ifn) {
                gratuitous(l, *ip, &self.m);
            }
            *left = left.saturating_sub(1);
            *at = now + ROUND_GAP;
            if *left == 0 {
                done.push((*ip, ifn.clone()));
            }
        }
        for k in done {
            self.rounds.remove(&k);
        }
        if let Some(every) = self.args.periodic_garp
            && now.duration_since(self.periodic_at) >= every
        {
            self.periodic_at = now;
            for (ip, ifs) in &self.current {
                for i in ifs {
                    if let Some(l) = self.links.get(i) {
                        gratuitous(l, *ip, &self.m);
                    }
                }
            }
        }
    }

    fn release_all(&mut self) {
        let all: Vec<(IpAddr, BTreeSet<String>)> =
            std::mem::take(&mut self.current).into_iter().collect();
        self.publish();
        self.rounds.clear();
        self.told.clear();
        self.reports.send_if_modified(|cur| {
            let changed = !cur.is_empty();
            cur.clear();
            changed
        });
        for (ip, ifs) in all {
            self.set_multicast(ip, &ifs, false);
        }
    }
}

/// Publishes `NodeAssigned` on a Service.
async fn tell(recorder: Recorder, svc: Service, note: String) {
    let ev = Event {
        type_: EventType::Normal,
        reason: NODE_ASSIGNED.into(),
        note: Some(note),
        action: "Announce".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&ev, &svc.object_ref(&())).await {
        warn!(service = %view::key(&svc), error = %e, "Cannot publish event");
    }
}

/// Re-reads the key file every second; a changed, valid file replaces the keys (an invalid
/// one is reported and the keys in use are kept).
async fn reload_keys(
    path: PathBuf,
    tx: watch::Sender<wire::Auth>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last = std::fs::read(&path).ok();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let now = std::fs::read(&path).ok();
        if now == last {
            continue;
        }
        last = now;
        match wire::Keyring::load(&path) {
            Ok(k) => {
                info!(keys = ?k.fingerprints, "Membership keys reloaded");
                tx.send_replace(wire::Auth::Keys(k));
            }
            Err(e) => warn!(error = %e, "Keeping the membership keys in use"),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_missing_resource_is_told_by_its_status_code_not_its_text() {
        let status = |code: u16, message: &str| {
            serde_json::from_value(serde_json::json!({
                "status": "Failure", "code": code, "reason": "x", "message": message,
            }))
            .unwrap()
        };
        let list = |code, m| watcher::Error::InitialListFailed(kube::Error::Api(status(code, m)));
        assert!(not_served(&list(
            404,
            "the server could not find the requested resource"
        )));
        assert!(
            !not_served(&list(500, "pool 404 not found in cache")),
            "text is not a code"
        );
        assert!(!not_served(&list(403, "NotFound? no: forbidden")));
        assert!(not_served(&watcher::Error::WatchError(status(404, ""))));
        assert!(!not_served(&watcher::Error::NoResourceVersion));
    }

    use super::*;

    #[test]
    fn peers_parse() {
        let p = parse_peers(&["a=10.0.0.1:7946".into(), "b = 10.0.0.2:1".into()]).unwrap();
        assert_eq!(p["a"], "10.0.0.1:7946".parse().unwrap());
        assert_eq!(p["b"], "10.0.0.2:1".parse().unwrap());
        assert!(parse_peers(&["10.0.0.1:7946".into()]).is_err());
    }

    #[test]
    fn bind_takes_an_address_with_or_without_a_port() {
        assert_eq!(
            parse_bind("10.0.0.1").unwrap(),
            "10.0.0.1:7946".parse().unwrap()
        );
        assert_eq!(
            parse_bind("10.0.0.1:1").unwrap(),
            "10.0.0.1:1".parse().unwrap()
        );
        assert_eq!(
            parse_bind("fd00::1").unwrap(),
            "[fd00::1]:7946".parse().unwrap()
        );
        assert_eq!(
            parse_bind("[fd00::1]:2").unwrap(),
            "[fd00::1]:2".parse().unwrap()
        );
        assert!(parse_bind("node-1").is_err());
    }
}
