//! The data plane of one load balancer: TCP and UDP listeners on its VIP that proxy to
//! healthy targets, plus the health checkers that decide which targets are healthy.

use super::affinity::AffinityTable;
use super::cidr;
use super::health::{self, HealthCell};
use super::spec::{CheckParams, Protocol, Spec};
use ipnet::IpNet;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio::time::Instant;

/// A UDP session with no traffic either way for this long is forgotten.
pub const UDP_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Most UDP sessions one listener keeps; datagrams from further new clients are dropped.
const MAX_UDP_SESSIONS: usize = 16_384;
/// How long connecting to a target may take before another target is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How many targets one TCP connection tries.
const CONNECT_ATTEMPTS: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenerKey {
    pub port: u16,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CheckKey {
    addr: SocketAddr,
    params: CheckParams,
}

struct RouteTarget {
    name: String,
    ip: IpAddr,
    /// Health per checked port.
    checks: HashMap<u16, Arc<HealthCell>>,
}

impl RouteTarget {
    /// Healthy for traffic to `target_port`: its own port's check if it has one (or the
    /// shared `healthCheck.port`), else every check it has (UDP-only ports cannot be checked
    /// with TCP or HTTP; a target with no checks at all counts as healthy).
    fn healthy_for(&self, target_port: u16, hc_port: Option<u16>) -> bool {
        match self.checks.get(&hc_port.unwrap_or(target_port)) {
            Some(c) => c.healthy(),
            None => self.healthy(),
        }
    }

    fn healthy(&self) -> bool {
        self.checks.values().all(|c| c.healthy())
    }
}

/// What the listeners consult for every connection or new session; replaced whole on update.
#[derive(Default)]
struct Routing {
    listeners: HashMap<ListenerKey, u16>,
    targets: Vec<RouteTarget>,
    hc_port: Option<u16>,
    source_ranges: Vec<IpNet>,
    affinity: Option<Duration>,
}

/// State shared by every listener task of one load balancer.
#[derive(Default)]
struct Shared {
    routing: RwLock<Arc<Routing>>,
    affinity: Mutex<AffinityTable<(IpAddr, ListenerKey)>>,
    rr: AtomicUsize,
}

impl Shared {
    fn routing(&self) -> Arc<Routing> {
        self.routing
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn allowed(&self, ip: IpAddr) -> bool {
        cidr::allowed(&self.routing().source_ranges, ip)
    }

    /// Picks a healthy target for a client of listener `key`, skipping `exclude`d names:
    /// the client's pinned target under ClientIP affinity, else round robin.
    fn pick(
        &self,
        key: ListenerKey,
        client: IpAddr,
        exclude: &[String],
    ) -> Option<(String, SocketAddr)> {
        let r = self.routing();
        let target_port = *r.listeners.get(&key)?;
        let healthy: Vec<&RouteTarget> = r
            .targets
            .iter()
            .filter(|t| t.healthy_for(target_port, r.hc_port) && !exclude.contains(&t.name))
            .collect();
        if healthy.is_empty() {
            return None;
        }
        let chosen = match r.affinity {
            Some(ttl) => {
                let now = Instant::now();
                let mut table = self.affinity.lock().unwrap_or_else(|e| e.into_inner());
                let akey = (client.to_canonical(), key);
                let pinned = table
                    .get(&akey, now)
                    .and_then(|name| healthy.iter().find(|t| t.name == name).copied());
                let t = pinned.unwrap_or_else(|| {
                    healthy[self.rr.fetch_add(1, Ordering::Relaxed) % healthy.len()]
                });
                table.set(akey, &t.name, now, ttl);
                t
            }
            None => healthy[self.rr.fetch_add(1, Ordering::Relaxed) % healthy.len()],
        };
        Some((chosen.name.clone(), SocketAddr::new(chosen.ip, target_port)))
    }

    /// Whether an existing UDP session may keep using `target`.
    fn still_valid(&self, key: ListenerKey, name: &str, target: SocketAddr) -> bool {
        let r = self.routing();
        r.listeners.get(&key) == Some(&target.port())
            && r.targets.iter().any(|t| {
                t.name == name && t.ip == target.ip() && t.healthy_for(target.port(), r.hc_port)
            })
    }
}

struct Checker {
    cell: Arc<HealthCell>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct Tasks {
    listeners: HashMap<ListenerKey, JoinHandle<()>>,
    checkers: HashMap<CheckKey, Checker>,
    closed: bool,
}

enum Bound {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

/// One load balancer's running data plane on one VIP.
pub struct DataPlane {
    pub vip: Ipv4Addr,
    scale: f64,
    shared: Arc<Shared>,
    tasks: Mutex<Tasks>,
}

/// A target's reported health.
pub struct TargetHealth {
    pub name: String,
    pub healthy: bool,
}

impl DataPlane {
    pub fn new(vip: Ipv4Addr, health_check_scale: f64) -> DataPlane {
        DataPlane {
            vip,
            scale: health_check_scale,
            shared: Arc::new(Shared::default()),
            tasks: Mutex::new(Tasks::default()),
        }
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, Tasks> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Brings the data plane to `spec`: binds sockets for new listeners (failing without
    /// changing anything if one cannot be bound), starts checkers for new (target, port)
    /// pairs, swaps the routing, and stops what is gone. Unchanged listeners keep their
    /// sockets and connections; unchanged checkers keep their verdicts.
    ///
    /// Callers serialise `apply` and `shutdown`. Returns the checks that have not run yet.
    pub async fn apply(&self, spec: &Spec) -> anyhow::Result<Vec<Arc<HealthCell>>> {
        let wanted: HashMap<ListenerKey, u16> = spec
            .listeners
            .iter()
            .map(|l| {
                (
                    ListenerKey {
                        port: l.port,
                        protocol: l.protocol,
                    },
                    l.target_port,
                )
            })
            .collect();
        let existing: HashSet<ListenerKey> = {
            let t = self.tasks();
            anyhow::ensure!(!t.closed, "the load balancer is shutting down");
            t.listeners.keys().copied().collect()
        };
        let mut bound = Vec::new();
        for key in wanted.keys().filter(|k| !existing.contains(k)) {
            let addr = SocketAddr::new(IpAddr::V4(self.vip), key.port);
            let sock = match key.protocol {
                Protocol::Tcp => TcpListener::bind(addr).await.map(Bound::Tcp),
                Protocol::Udp => UdpSocket::bind(addr).await.map(Bound::Udp),
            };
            match sock {
                Ok(s) => bound.push((*key, s)),
                Err(e) => {
                    anyhow::bail!("cannot listen on {addr}/{:?}: {e}", key.protocol);
                }
            }
        }

        let hc = &spec.health_check;
        let params = hc.params(self.scale);
        // Ports checked on every target: the health check's own, else each TCP listener's
        // target port.
        let check_ports: Vec<u16> = match hc.port {
            Some(p) => vec![p],
            None => {
                let mut ports: Vec<u16> = spec
                    .listeners
                    .iter()
                    .filter(|l| l.protocol == Protocol::Tcp)
                    .map(|l| l.target_port)
                    .collect();
                ports.sort_unstable();
                ports.dedup();
                ports
            }
        };

        let mut stopped = Vec::new();
        let mut fresh = Vec::new();
        {
            let mut t = self.tasks();
            anyhow::ensure!(!t.closed, "the load balancer is shutting down");
            // A check whose parameters changed restarts; it inherits the old verdict so
            // traffic is not interrupted meanwhile.
            let prior: HashMap<SocketAddr, bool> = t
                .checkers
                .iter()
                .map(|(k, c)| (k.addr, c.cell.healthy()))
                .collect();
            let mut keep: HashSet<CheckKey> = HashSet::new();
            let mut targets = Vec::new();
            for target in spec.targets.iter() {
                let Some(ip) = target.ip() else { continue };
                let mut checks = HashMap::new();
                for &port in &check_ports {
                    let key = CheckKey {
                        addr: SocketAddr::new(ip, port),
                        params: params.clone(),
                    };
                    let checker = t.checkers.entry(key.clone()).or_insert_with(|| {
                        let was_healthy = prior.get(&key.addr).copied().unwrap_or(false);
                        let (cell, task) = health::spawn(key.addr, key.params.clone(), was_healthy);
                        if !was_healthy {
                            fresh.push(cell.clone());
                        }
                        Checker { cell, task }
                    });
                    checks.insert(port, checker.cell.clone());
                    keep.insert(key);
                }
                targets.push(RouteTarget {
                    name: target.name.clone(),
                    ip,
                    checks,
                });
            }
            let gone: Vec<CheckKey> = t
                .checkers
                .keys()
                .filter(|k| !keep.contains(k))
                .cloned()
                .collect();
            for k in gone {
                if let Some(c) = t.checkers.remove(&k) {
                    c.task.abort();
                    stopped.push(c.task);
                }
            }

            let routing = Routing {
                listeners: wanted.clone(),
                targets,
                hc_port: hc.port,
                source_ranges: spec.cidrs(),
                affinity: spec.affinity_timeout(),
            };
            *self
                .shared
                .routing
                .write()
                .unwrap_or_else(|e| e.into_inner()) = Arc::new(routing);

            for (key, sock) in bound {
                let shared = self.shared.clone();
                let task = match sock {
                    Bound::Tcp(l) => tokio::spawn(run_tcp(l, key, shared)),
                    Bound::Udp(s) => tokio::spawn(run_udp(Arc::new(s), key, shared)),
                };
                t.listeners.insert(key, task);
            }
            let gone: Vec<ListenerKey> = t
                .listeners
                .keys()
                .filter(|k| !wanted.contains_key(k))
                .copied()
                .collect();
            for k in gone {
                if let Some(task) = t.listeners.remove(&k) {
                    task.abort();
                    stopped.push(task);
                }
            }
        }
        // Wait until stopped listeners have really closed their sockets.
        for task in stopped {
            let _ = task.await;
        }
        Ok(fresh)
    }

    /// Each target's health, in spec order.
    pub fn target_health(&self) -> Vec<TargetHealth> {
        self.shared
            .routing()
            .targets
            .iter()
            .map(|t| TargetHealth {
                name: t.name.clone(),
                healthy: t.healthy(),
            })
            .collect()
    }

    /// Stops every listener, connection, session and checker; returns once all sockets are
    /// closed.
    pub async fn shutdown(&self) {
        let handles: Vec<JoinHandle<()>> = {
            let mut t = self.tasks();
            t.closed = true;
            let mut hs: Vec<JoinHandle<()>> = t.listeners.drain().map(|(_, h)| h).collect();
            hs.extend(t.checkers.drain().map(|(_, c)| c.task));
            hs
        };
        for h in &handles {
            h.abort();
        }
        for h in handles {
            let _ = h.await;
        }
    }
}

impl Drop for DataPlane {
    /// A data plane dropped without [`DataPlane::shutdown`] still stops its tasks.
    fn drop(&mut self) {
        let t = self.tasks.get_mut().unwrap_or_else(|e| e.into_inner());
        for h in t.listeners.values() {
            h.abort();
        }
        for c in t.checkers.values() {
            c.task.abort();
        }
    }
}

// ---- TCP -------------------------------------------------------------------------------------

async fn run_tcp(listener: TcpListener, key: ListenerKey, shared: Arc<Shared>) {
    // Connections live in this set, so aborting the listener task ends them too.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    conns.spawn(proxy_tcp(stream, peer, key, shared.clone()));
                }
                Err(e) => {
                    tracing::warn!(port = key.port, error = %e, "load balancer accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn proxy_tcp(
    mut inbound: TcpStream,
    peer: SocketAddr,
    key: ListenerKey,
    shared: Arc<Shared>,
) {
    if !shared.allowed(peer.ip()) {
        tracing::debug!(%peer, port = key.port, "refused: client outside sourceRanges");
        return;
    }
    let mut tried = Vec::new();
    for _ in 0..CONNECT_ATTEMPTS {
        let Some((name, target)) = shared.pick(key, peer.ip(), &tried) else {
            tracing::debug!(%peer, port = key.port, "refused: no healthy target");
            return;
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await {
            Ok(Ok(mut outbound)) => {
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                if let Err(e) = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await {
                    tracing::debug!(%peer, %target, error = %e, "proxied connection ended");
                }
                return;
            }
            Ok(Err(e)) => tracing::debug!(%target, error = %e, "connecting to target failed"),
            Err(_) => tracing::debug!(%target, "connecting to target timed out"),
        }
        tried.push(name);
    }
}

// ---- UDP -------------------------------------------------------------------------------------

struct Session {
    id: u64,
    upstream: Arc<UdpSocket>,
    target_name: String,
    target: SocketAddr,
    last_seen: Arc<AtomicU64>,
    abort: AbortHandle,
}

/// Milliseconds since `epoch`, for lock-free "last activity" stamps.
fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

async fn run_udp(sock: Arc<UdpSocket>, key: ListenerKey, shared: Arc<Shared>) {
    let epoch = Instant::now();
    let mut sessions: HashMap<SocketAddr, Session> = HashMap::new();
    // Reply relays; each returns (client, session id) when its session idles out.
    let mut relays: JoinSet<(SocketAddr, u64)> = JoinSet::new();
    let mut next_id = 0u64;
    let mut buf = vec![0u8; 65_536];
    loop {
        tokio::select! {
            received = sock.recv_from(&mut buf) => {
                let (n, client) = match received {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::debug!(port = key.port, error = %e, "load balancer UDP receive failed");
                        continue;
                    }
                };
                if !shared.allowed(client.ip()) {
                    continue;
                }
                let valid = sessions
                    .get(&client)
                    .is_some_and(|s| shared.still_valid(key, &s.target_name, s.target));
                if !valid {
                    if let Some(old) = sessions.remove(&client) {
                        old.abort.abort();
                    }
                    if sessions.len() >= MAX_UDP_SESSIONS {
                        continue;
                    }
                    let Some((name, target)) = shared.pick(key, client.ip(), &[]) else {
                        continue;
                    };
                    let bind: SocketAddr = if target.is_ipv4() {
                        (Ipv4Addr::UNSPECIFIED, 0).into()
                    } else {
                        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                    };
                    let upstream = match UdpSocket::bind(bind).await {
                        Ok(u) => u,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot open an upstream UDP socket");
                            continue;
                        }
                    };
                    if let Err(e) = upstream.connect(target).await {
                        tracing::debug!(%target, error = %e, "cannot reach UDP target");
                        continue;
                    }
                    next_id += 1;
                    let upstream = Arc::new(upstream);
                    let last_seen = Arc::new(AtomicU64::new(millis_since(epoch)));
                    let abort = relays.spawn(relay_replies(
                        next_id,
                        upstream.clone(),
                        sock.clone(),
                        client,
                        last_seen.clone(),
                        epoch,
                    ));
                    sessions.insert(client, Session {
                        id: next_id,
                        upstream,
                        target_name: name,
                        target,
                        last_seen,
                        abort,
                    });
                }
                if let Some(s) = sessions.get(&client) {
                    s.last_seen.store(millis_since(epoch), Ordering::Relaxed);
                    if let Err(e) = s.upstream.send(&buf[..n]).await {
                        tracing::debug!(target = %s.target, error = %e, "UDP send to target failed");
                    }
                }
            }
            Some(done) = relays.join_next(), if !relays.is_empty() => {
                if let Ok((client, id)) = done
                    && sessions.get(&client).is_some_and(|s| s.id == id)
                {
                    sessions.remove(&client);
                }
            }
        }
    }
}

/// Relays a session's replies from its target back to the client through the VIP socket,
/// until nothing has passed either way for [`UDP_IDLE_TIMEOUT`].
async fn relay_replies(
    id: u64,
    upstream: Arc<UdpSocket>,
    vip: Arc<UdpSocket>,
    client: SocketAddr,
    last_seen: Arc<AtomicU64>,
    epoch: Instant,
) -> (SocketAddr, u64) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let last = epoch + Duration::from_millis(last_seen.load(Ordering::Relaxed));
        let deadline = last + UDP_IDLE_TIMEOUT;
        match tokio::time::timeout_at(deadline, upstream.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                last_seen.store(millis_since(epoch), Ordering::Relaxed);
                if let Err(e) = vip.send_to(&buf[..n], client).await {
                    tracing::debug!(%client, error = %e, "UDP reply to client failed");
                }
            }
            // E.g. ECONNREFUSED after an ICMP port unreachable: keep the session, the
            // target may come back; idling out ends it.
            Ok(Err(e)) => {
                tracing::debug!(%client, error = %e, "UDP receive from target failed");
                if Instant::now() >= deadline {
                    return (client, id);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => {
                let last = epoch + Duration::from_millis(last_seen.load(Ordering::Relaxed));
                if Instant::now() >= last + UDP_IDLE_TIMEOUT {
                    return (client, id);
                }
            }
        }
    }
}
