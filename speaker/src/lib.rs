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
//! * `watches`: Services, Nodes, EndpointSlices, L2Advertisements, IPAddressPools (the pool a
//!   VIP lies in decides which advertisements apply; one watch each).
//! * `announce`: gratuitous ARP / unsolicited NA on takeover, stop at once on loss, and what
//!   users see: a `NodeAssigned` event, metrics, and a [`ServiceL2Status`] per Service
//!   announced ([`report`]; the l2 controller mirrors it into the `berth.io/announcing-node`
//!   annotation — the speaker never writes Services).
//! * This file: the flags and [`run`], which wires them together and runs the election loop.
//!
//! [`ServiceL2Status`]: berth_api::crd::ServiceL2Status

mod admin;
mod announce;
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
mod watches;
pub mod wire;

use admin::serve_metrics;
use announce::{Announced, Announcer};
use anyhow::Context;
use berth_api::duration::parse_duration;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use metrics::SpeakerMetrics;
use packet::Link;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc, watch};
use tracing::{info, warn};
use watches::{Watches, spawn_advertisement_watch, spawn_pool_watch, spawn_watch};

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
