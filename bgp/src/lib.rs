//! berth-bgp: an announce-only BGP speaker (RFC 4271) with BFD (RFC 5880/5881), used to
//! announce service VIPs from every eligible node to upstream routers.
//!
//! # Wire format
//! Messages are parsed and written by [`netgauze_bgp_pkt`] (NetGauze project). We picked it
//! because it is maintained, covers every message and attribute we need (OPEN with
//! capabilities, UPDATE with MP_REACH/MP_UNREACH, communities and large communities,
//! NOTIFICATION, ROUTE-REFRESH), keeps parsing separate from I/O (so our own framing with a
//! 4096-byte cap sits in front of it) and has fuzzing support upstream. zettabgp was the
//! other candidate: it is lighter, but its message set stops at OPEN, UPDATE, NOTIFICATION
//! and KEEPALIVE (no ROUTE-REFRESH, which we must receive), and its messages are written into
//! caller-sized byte buffers with session parameters passed to every call, so we would have
//! written part of the wire handling ourselves. Framing, the FSM, timers and BFD are ours.
//!
//! # What the speaker does
//! - One task per peer runs the RFC 4271 FSM (Idle, Connect, Active, OpenSent, OpenConfirm,
//!   Established) with hold, keepalive and connect-retry timers; the retry timer backs off
//!   exponentially between [`PeerConfig::connect_retry_min`] and `connect_retry_max`.
//! - Hold time is the smaller of ours and the peer's; keepalives every third of it unless
//!   configured lower.
//! - 4-octet AS numbers (AS_TRANS 23456 in the OPEN's 2-byte field when needed), MP-BGP IPv4
//!   and IPv6 unicast, route refresh (all routes of the family are sent again).
//! - Received routes are parsed and validated, then ignored.
//! - Errors send the NOTIFICATION of RFC 4271 section 6 (bad peer AS is 2/2, unsupported
//!   version 2/1, hold timer expiry 4/0, malformed messages 1/x or 3/1, Cease 6/2 on
//!   shutdown, 6/3 when a peer is removed, 6/10 when BFD went down).
//! - Active and passive connections: [`Speaker::listen`] accepts connections from configured
//!   peers only. Connection collisions (RFC 4271 6.8): an incoming connection while ours is in
//!   OpenConfirm keeps the connection opened by the speaker with the higher BGP identifier; in
//!   OpenSent the peer's identifier is known only from an earlier session (it is remembered),
//!   otherwise the existing connection is kept; in Established the new one is closed.
//! - TCP MD5 (RFC 2385) on outgoing sockets and on listeners when a password is set.
//! - BFD per peer when configured: once the session is Established a BFD session runs to the
//!   same address; when it goes from Up to Down the BGP session is closed at once (Cease/BFD
//!   down), so the router drops our routes within the BFD detection time.
//! - [`Speaker::shutdown`] withdraws every route, sends Cease/Administrative Shutdown and
//!   closes each session.

pub mod bfd;
mod session;
pub mod sockopt;
pub mod wire;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

pub use bfd::BfdConfig;

/// A route to announce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Any length, so aggregates work as well as /32 and /128.
    pub prefix: IpNet,
    /// `None`: the local address of each session (when of the prefix's family).
    #[serde(default)]
    pub next_hop: Option<IpAddr>,
    /// Sent to internal peers only (default 100 there).
    #[serde(default)]
    pub local_pref: Option<u32>,
    /// Standard communities, `(asn << 16) | value`.
    #[serde(default)]
    pub communities: Vec<u32>,
    /// Large communities (global administrator, local data 1, local data 2).
    #[serde(default)]
    pub large_communities: Vec<(u32, u32, u32)>,
}

impl Route {
    /// A route for `prefix` with the session's local address as next hop.
    pub fn new(prefix: IpNet) -> Self {
        Self {
            prefix: prefix.trunc(),
            next_hop: None,
            local_pref: None,
            communities: vec![],
            large_communities: vec![],
        }
    }
}

/// One BGP neighbour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerConfig {
    pub address: IpAddr,
    #[serde(default = "default_port")]
    pub port: u16,
    pub peer_as: u32,
    pub my_as: u32,
    pub router_id: Ipv4Addr,
    /// Seconds; 0 or at least 3.
    #[serde(default = "default_hold")]
    pub hold_time: u16,
    /// Seconds; default a third of the negotiated hold time.
    #[serde(default)]
    pub keepalive: Option<u16>,
    /// Local address to connect from.
    #[serde(default)]
    pub source_address: Option<IpAddr>,
    /// TCP MD5 password (RFC 2385).
    #[serde(default)]
    pub password: Option<String>,
    /// Do not connect; only accept the peer's connection.
    #[serde(default)]
    pub passive: bool,
    /// eBGP peer more than one hop away (TTL 255 instead of 1).
    #[serde(default)]
    pub ebgp_multihop: bool,
    #[serde(default, with = "bfd_serde")]
    pub bfd: Option<BfdConfig>,
    #[serde(default = "default_retry_min")]
    pub connect_retry_min: Duration,
    #[serde(default = "default_retry_max")]
    pub connect_retry_max: Duration,
}

fn default_port() -> u16 {
    179
}
fn default_hold() -> u16 {
    90
}
fn default_retry_min() -> Duration {
    Duration::from_secs(1)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(30)
}

mod bfd_serde {
    use super::BfdConfig;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::time::Duration;

    #[derive(Serialize, Deserialize)]
    struct Ms {
        min_tx_ms: u64,
        min_rx_ms: u64,
        detect_mult: u8,
    }

    pub fn serialize<S: Serializer>(v: &Option<BfdConfig>, s: S) -> Result<S::Ok, S::Error> {
        v.map(|c| Ms {
            min_tx_ms: c.min_tx.as_millis() as u64,
            min_rx_ms: c.min_rx.as_millis() as u64,
            detect_mult: c.detect_mult,
        })
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<BfdConfig>, D::Error> {
        let v: Option<Ms> = Option::deserialize(d)?;
        Ok(v.map(|m| BfdConfig {
            min_tx: Duration::from_millis(m.min_tx_ms.max(1)),
            min_rx: Duration::from_millis(m.min_rx_ms.max(1)),
            detect_mult: m.detect_mult.max(1),
        }))
    }
}

impl PeerConfig {
    /// A config with defaults for everything but addresses and AS numbers.
    pub fn new(address: IpAddr, peer_as: u32, my_as: u32, router_id: Ipv4Addr) -> Self {
        Self {
            address,
            port: default_port(),
            peer_as,
            my_as,
            router_id,
            hold_time: default_hold(),
            keepalive: None,
            source_address: None,
            password: None,
            passive: false,
            ebgp_multihop: false,
            bfd: None,
            connect_retry_min: default_retry_min(),
            connect_retry_max: default_retry_max(),
        }
    }

    fn validate(&self) -> Result<(), Error> {
        if self.hold_time != 0 && self.hold_time < 3 {
            return Err(Error::Config(format!(
                "hold time {} must be 0 or at least 3",
                self.hold_time
            )));
        }
        if self.peer_as == 0 || self.my_as == 0 {
            return Err(Error::Config("AS number 0 is reserved".into()));
        }
        if self.router_id.is_unspecified() {
            return Err(Error::Config("router id 0.0.0.0 is not allowed".into()));
        }
        if let Some(p) = &self.password
            && p.len() > sockopt::MD5_MAX_KEY_LEN
        {
            return Err(Error::Config(
                "TCP MD5 password longer than 80 bytes".into(),
            ));
        }
        if self.connect_retry_min.is_zero() || self.connect_retry_max < self.connect_retry_min {
            return Err(Error::Config("bad connect retry bounds".into()));
        }
        Ok(())
    }
}

/// FSM state of a session (RFC 4271 section 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SessionState {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

/// What a peer's status channel carries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerStatus {
    pub state: SessionState,
    pub last_error: Option<String>,
    pub prefixes_advertised: usize,
    pub updates_sent: u64,
    /// Since when the session is Established (`None` when it is not).
    #[serde(skip)]
    pub established_at: Option<std::time::Instant>,
    /// Times the session reached Established.
    pub established_count: u64,
    pub bfd_state: Option<bfd::State>,
    pub bfd_state_changes: u64,
}

impl PeerStatus {
    /// How long the session has been Established.
    pub fn uptime(&self) -> Option<Duration> {
        self.established_at.map(|t| t.elapsed())
    }
}

impl Default for PeerStatus {
    fn default() -> Self {
        Self {
            state: SessionState::Idle,
            last_error: None,
            prefixes_advertised: 0,
            updates_sent: 0,
            established_at: None,
            established_count: 0,
            bfd_state: None,
            bfd_state_changes: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid peer config: {0}")]
    Config(String),
    #[error("peer {0} is already configured")]
    Duplicate(IpAddr),
    #[error("peer {0} is not configured")]
    UnknownPeer(IpAddr),
    #[error("listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("the speaker is shut down")]
    Shutdown,
}

pub(crate) enum Command {
    Incoming(tokio::net::TcpStream),
    Update(Box<PeerConfig>),
    Stop(wire::Notify, oneshot::Sender<()>),
}

struct PeerHandle {
    config: PeerConfig,
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<PeerStatus>,
}

pub(crate) type RouteTable = Arc<BTreeMap<IpNet, Route>>;

struct Inner {
    routes: watch::Sender<RouteTable>,
    peers: Mutex<HashMap<IpAddr, PeerHandle>>,
    listeners: Mutex<Vec<Arc<TcpListener>>>,
    bfd: bfd::Mux,
    shut: Mutex<bool>,
}

/// The BGP speaker. Cheap to clone.
#[derive(Clone)]
pub struct Speaker {
    inner: Arc<Inner>,
}

impl Default for Speaker {
    fn default() -> Self {
        Self::new()
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

impl Speaker {
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                routes: watch::Sender::new(Arc::default()),
                peers: Mutex::default(),
                listeners: Mutex::default(),
                bfd: bfd::Mux::default(),
                shut: Mutex::new(false),
            }),
        }
    }

    /// A speaker with its own peers and routes that shares this one's BFD receive sockets
    /// (one per local address on UDP 3784), so peers that must get different route sets can
    /// each have a speaker and still all run BFD from the same address.
    pub fn sibling(&self) -> Self {
        Self {
            inner: Arc::new(Inner {
                routes: watch::Sender::new(Arc::default()),
                peers: Mutex::default(),
                listeners: Mutex::default(),
                bfd: self.inner.bfd.clone(),
                shut: Mutex::new(false),
            }),
        }
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_shut(&self) -> bool {
        *Self::lock(&self.inner.shut)
    }

    /// Accepts BGP connections on `addr` (port 179 normally) from configured peers.
    /// Returns the bound address.
    pub async fn listen(&self, addr: SocketAddr) -> Result<SocketAddr, Error> {
        let sock = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }
        .map_err(|e| Error::Listen(addr, e))?;
        sock.set_reuseaddr(true)
            .map_err(|e| Error::Listen(addr, e))?;
        sock.bind(addr).map_err(|e| Error::Listen(addr, e))?;
        let listener = Arc::new(sock.listen(64).map_err(|e| Error::Listen(addr, e))?);
        let local = listener.local_addr().map_err(|e| Error::Listen(addr, e))?;
        for p in Self::lock(&self.inner.peers).values() {
            if let Some(pw) = &p.config.password
                && p.config.address.is_ipv4() == local.is_ipv4()
                && let Err(e) = sockopt::set_md5(&*listener, p.config.address, pw.as_bytes())
            {
                tracing::warn!(peer = %p.config.address, error = %e, "cannot set TCP MD5 key on listener");
            }
        }
        Self::lock(&self.inner.listeners).push(listener.clone());
        let me = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                let (stream, from) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                let Some(inner) = me.upgrade() else { return };
                let tx = Self::lock(&inner.peers)
                    .get(&canonical(from.ip()))
                    .map(|p| p.commands.clone());
                match tx {
                    Some(tx) => {
                        let _ = tx.send(Command::Incoming(stream)).await;
                    }
                    None => tracing::info!(%from, "connection from an unconfigured peer closed"),
                }
            }
        });
        Ok(local)
    }

    fn set_listener_keys(&self, peer: IpAddr, password: Option<&str>) {
        for l in Self::lock(&self.inner.listeners).iter() {
            let Ok(local) = l.local_addr() else { continue };
            if local.is_ipv4() != peer.is_ipv4() {
                continue;
            }
            let key = password.unwrap_or("").as_bytes();
            if let Err(e) = sockopt::set_md5(&**l, peer, key)
                && !key.is_empty()
            {
                tracing::warn!(%peer, error = %e, "cannot set TCP MD5 key on listener");
            }
        }
    }

    /// Adds a peer and starts its session. The receiver follows the session's status.
    pub fn add_peer(&self, config: PeerConfig) -> Result<watch::Receiver<PeerStatus>, Error> {
        if self.is_shut() {
            return Err(Error::Shutdown);
        }
        config.validate()?;
        let mut peers = Self::lock(&self.inner.peers);
        if peers.contains_key(&config.address) {
            return Err(Error::Duplicate(config.address));
        }
        if config.password.is_some() {
            self.set_listener_keys(config.address, config.password.as_deref());
        }
        let (status_tx, status_rx) = watch::channel(PeerStatus::default());
        let (cmd_tx, cmd_rx) = mpsc::channel(8);
        tokio::spawn(session::run_peer(
            config.clone(),
            cmd_rx,
            status_tx,
            self.inner.routes.subscribe(),
            self.inner.bfd.clone(),
        ));
        peers.insert(
            config.address,
            PeerHandle {
                config,
                commands: cmd_tx,
                status: status_rx.clone(),
            },
        );
        Ok(status_rx)
    }

    /// Changes a peer's configuration; the session restarts (Cease/Other Configuration
    /// Change) only when a setting it negotiated changed.
    pub async fn update_peer(&self, config: PeerConfig) -> Result<(), Error> {
        config.validate()?;
        let tx = {
            let mut peers = Self::lock(&self.inner.peers);
            let p = peers
                .get_mut(&config.address)
                .ok_or(Error::UnknownPeer(config.address))?;
            if p.config.password != config.password {
                self.set_listener_keys(config.address, config.password.as_deref());
            }
            p.config = config.clone();
            p.commands.clone()
        };
        tx.send(Command::Update(Box::new(config)))
            .await
            .map_err(|_| Error::Shutdown)
    }

    /// Withdraws our routes from the peer, sends Cease/Peer De-configured and forgets it.
    pub async fn remove_peer(&self, address: IpAddr) -> Result<(), Error> {
        let handle = Self::lock(&self.inner.peers)
            .remove(&address)
            .ok_or(Error::UnknownPeer(address))?;
        if handle.config.password.is_some() {
            self.set_listener_keys(address, None);
        }
        stop_peer(
            handle,
            wire::Notify::new(6, 3, vec![], "peer removed from configuration"),
        )
        .await;
        Ok(())
    }

    /// The status receiver of a peer.
    pub fn peer_status(&self, address: IpAddr) -> Option<watch::Receiver<PeerStatus>> {
        Self::lock(&self.inner.peers)
            .get(&address)
            .map(|p| p.status.clone())
    }

    /// Current status of every peer (for metrics).
    pub fn statuses(&self) -> Vec<(IpAddr, PeerStatus)> {
        Self::lock(&self.inner.peers)
            .iter()
            .map(|(a, p)| (*a, p.status.borrow().clone()))
            .collect()
    }

    /// Announces (or replaces) a route.
    pub fn announce(&self, route: Route) {
        let mut route = route;
        route.prefix = route.prefix.trunc();
        self.inner.routes.send_modify(|t| {
            Arc::make_mut(t).insert(route.prefix, route);
        });
    }

    /// Withdraws the route for `prefix`. Returns whether there was one.
    pub fn withdraw(&self, prefix: IpNet) -> bool {
        let mut had = false;
        self.inner.routes.send_if_modified(|t| {
            had = t.contains_key(&prefix.trunc());
            if had {
                Arc::make_mut(t).remove(&prefix.trunc());
            }
            had
        });
        had
    }

    /// Replaces the whole route set; sessions send only the difference.
    pub fn set_routes(&self, routes: Vec<Route>) {
        let table: BTreeMap<IpNet, Route> = routes
            .into_iter()
            .map(|mut r| {
                r.prefix = r.prefix.trunc();
                (r.prefix, r)
            })
            .collect();
        self.inner.routes.send_if_modified(|t| {
            if **t == table {
                false
            } else {
                *t = Arc::new(table);
                true
            }
        });
    }

    /// The routes currently announced.
    pub fn routes(&self) -> Vec<Route> {
        self.inner.routes.borrow().values().cloned().collect()
    }

    /// Withdraws every route from every peer, sends Cease/Administrative Shutdown and closes
    /// the sessions. Later calls to `add_peer` fail.
    pub async fn shutdown(&self) {
        *Self::lock(&self.inner.shut) = true;
        let peers: Vec<PeerHandle> = Self::lock(&self.inner.peers)
            .drain()
            .map(|(_, p)| p)
            .collect();
        let mut waits = Vec::new();
        for p in peers {
            waits.push(tokio::spawn(stop_peer(
                p,
                wire::Notify::new(6, 2, vec![], "administrative shutdown"),
            )));
        }
        for w in waits {
            let _ = w.await;
        }
    }
}

async fn stop_peer(handle: PeerHandle, notify: wire::Notify) {
    let (tx, rx) = oneshot::channel();
    if handle
        .commands
        .send(Command::Stop(notify, tx))
        .await
        .is_ok()
    {
        // Bounded: a peer that does not read gets the socket closed after this.
        let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn siblings_have_their_own_routes_and_peers_but_one_bfd_mux() {
        let a = Speaker::new();
        let b = a.sibling();
        a.announce(Route::new("192.0.2.10/32".parse().unwrap()));
        b.set_routes(vec![Route::new("192.0.2.20/32".parse().unwrap())]);
        assert_eq!(a.routes()[0].prefix.to_string(), "192.0.2.10/32");
        assert_eq!(b.routes().len(), 1);
        assert_eq!(b.routes()[0].prefix.to_string(), "192.0.2.20/32");
        let peer = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
        let cfg = PeerConfig {
            passive: true,
            ..PeerConfig::new(peer, 64512, 64512, Ipv4Addr::new(10, 0, 0, 1))
        };
        a.add_peer(cfg.clone()).unwrap();
        // The same peer on a sibling is allowed (its own peer table)...
        b.add_peer(cfg).unwrap();
        assert_eq!((a.statuses().len(), b.statuses().len()), (1, 1));
        // ...and shutting one down leaves the other running.
        a.shutdown().await;
        assert!(a.statuses().is_empty());
        assert_eq!(b.statuses().len(), 1);
        assert!(a.inner.bfd.same(&b.inner.bfd));
        assert!(!a.inner.bfd.same(&Speaker::new().inner.bfd));
        b.shutdown().await;
    }
}
