//! One peer's FSM task.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use netgauze_bgp_pkt::BgpMessage;
use netgauze_iana::address_family::AddressType;
use rand::Rng;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};

use crate::wire::{self, Notify, ReadError};
use crate::{Command, IpNet, PeerConfig, PeerStatus, Route, RouteTable, SessionState, bfd};

/// Hold time while waiting for the peer's OPEN (RFC 4271 suggests 4 minutes).
const OPEN_HOLD: Duration = Duration::from_secs(240);
/// How long one TCP connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one write may block before the session is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

enum Outcome {
    /// Session ended; retry after the backoff.
    Failed(String),
    /// Configuration changed: reconnect at once with it.
    Restart(Box<PeerConfig>),
    /// An incoming connection won the collision: run it now.
    Replace(TcpStream),
    /// Stopped by the speaker.
    Stopped,
}

struct Peer {
    cfg: PeerConfig,
    commands: mpsc::Receiver<Command>,
    status: watch::Sender<PeerStatus>,
    routes: watch::Receiver<RouteTable>,
    mux: bfd::Mux,
    /// The peer's BGP identifier from an earlier OPEN (for collision resolution).
    remote_id: Option<Ipv4Addr>,
}

pub(crate) async fn run_peer(
    cfg: PeerConfig,
    commands: mpsc::Receiver<Command>,
    status: watch::Sender<PeerStatus>,
    routes: watch::Receiver<RouteTable>,
    mux: bfd::Mux,
) {
    let mut p = Peer {
        cfg,
        commands,
        status,
        routes,
        mux,
        remote_id: None,
    };
    p.run().await;
    p.set_state(SessionState::Idle);
}

impl Peer {
    fn set_state(&self, s: SessionState) {
        self.status.send_if_modified(|st| {
            let changed = st.state != s;
            st.state = s;
            if s != SessionState::Established {
                st.established_at = None;
                st.prefixes_advertised = 0;
            }
            changed
        });
    }

    fn set_error(&self, e: &str) {
        tracing::warn!(peer = %self.cfg.address, error = e, "bgp session");
        self.status
            .send_modify(|st| st.last_error = Some(e.to_string()));
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .cfg
            .connect_retry_min
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.cfg.connect_retry_max);
        // Up to 25% jitter so both ends do not retry in lock step.
        base.mul_f64(rand::rng().random_range(0.75..=1.0))
    }

    async fn run(&mut self) {
        let mut attempt = 0u32;
        let mut pending: Option<TcpStream> = None;
        loop {
            let stream = match pending.take() {
                Some(s) => Some(s),
                None if !self.cfg.passive => {
                    self.set_state(SessionState::Connect);
                    match self.connect_or_incoming().await {
                        Ok(Some(s)) => Some(s),
                        Ok(None) => return,
                        Err(e) => {
                            self.set_error(&e);
                            None
                        }
                    }
                }
                None => None,
            };
            let stream = match stream {
                Some(s) => s,
                None => {
                    // Active: wait for the retry timer or the peer's connection.
                    self.set_state(SessionState::Active);
                    let deadline = if self.cfg.passive {
                        None
                    } else {
                        Some(Instant::now() + self.backoff(attempt))
                    };
                    attempt = attempt.saturating_add(1);
                    match self.wait_incoming(deadline).await {
                        Wait::Stream(s) => s,
                        Wait::Timeout => continue,
                        Wait::Stop => return,
                    }
                }
            };
            let was = self.status.borrow().established_count;
            let outcome = self.run_connection(stream).await;
            if self.status.borrow().established_count > was {
                attempt = 0;
            }
            match outcome {
                Outcome::Stopped => return,
                Outcome::Replace(s) => pending = Some(s),
                Outcome::Restart(cfg) => {
                    self.cfg = *cfg;
                    attempt = 0;
                }
                Outcome::Failed(e) => {
                    self.set_error(&e);
                    self.set_state(SessionState::Active);
                    let deadline = Instant::now() + self.backoff(attempt);
                    attempt = attempt.saturating_add(1);
                    match self.wait_incoming(Some(deadline)).await {
                        Wait::Stream(s) => pending = Some(s),
                        Wait::Timeout => {}
                        Wait::Stop => return,
                    }
                }
            }
        }
    }

    /// Handles commands while no connection is up. `Stop` answers at once.
    fn idle_command(&mut self, c: Command) -> Wait {
        match c {
            Command::Incoming(s) => Wait::Stream(s),
            Command::Update(cfg) => {
                self.cfg = *cfg;
                Wait::Timeout
            }
            Command::Stop(_, done) => {
                let _ = done.send(());
                Wait::Stop
            }
        }
    }

    async fn wait_incoming(&mut self, deadline: Option<Instant>) -> Wait {
        loop {
            let sleep = async {
                match deadline {
                    Some(d) => sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                c = self.commands.recv() => match c {
                    None => return Wait::Stop,
                    Some(c) => match self.idle_command(c) {
                        Wait::Timeout => continue,
                        w => return w,
                    },
                },
                _ = sleep => return Wait::Timeout,
            }
        }
    }

    /// Connect state: our connection attempt races the peer's.
    /// `Ok(None)`: stopped.
    async fn connect_or_incoming(&mut self) -> Result<Option<TcpStream>, String> {
        let cfg = self.cfg.clone();
        let connect = connect(&cfg);
        tokio::pin!(connect);
        tokio::select! {
            r = &mut connect => r.map(Some),
            c = self.commands.recv() => match c {
                None => Ok(None),
                Some(c) => match self.idle_command(c) {
                    Wait::Stream(s) => Ok(Some(s)),
                    Wait::Stop => Ok(None),
                    // The config changed: the next attempt uses it.
                    Wait::Timeout => Err("configuration changed while connecting".into()),
                },
            },
        }
    }

    async fn run_connection(&mut self, stream: TcpStream) -> Outcome {
        let cfg = self.cfg.clone();
        let ibgp = cfg.peer_as == cfg.my_as;
        // Directly connected eBGP peers get TTL 1 (RFC 4271 5.1.3 practice), multihop ones 255.
        if !ibgp {
            let _ = stream.set_ttl(if cfg.ebgp_multihop { 255 } else { 1 });
        }
        let _ = stream.set_nodelay(true);
        let local = match stream.local_addr() {
            Ok(a) => a,
            Err(e) => return Outcome::Failed(format!("socket: {e}")),
        };
        let (read, write) = stream.into_split();
        let mut conn = Conn {
            write,
            status: self.status.clone(),
        };
        let (frames_tx, mut frames) = mpsc::channel::<Result<Vec<u8>, ReadError>>(16);
        let reader = tokio::spawn(async move {
            let mut read = read;
            loop {
                let r = wire::read_frame(&mut read).await;
                let end = r.is_err();
                if frames_tx.send(r).await.is_err() || end {
                    return;
                }
            }
        });
        let _reader = AbortOnDrop(reader);

        if let Err(e) = conn
            .send(&wire::open(cfg.my_as, cfg.hold_time, cfg.router_id))
            .await
        {
            return Outcome::Failed(e);
        }
        self.set_state(SessionState::OpenSent);
        let mut state = SessionState::OpenSent;
        let mut hold = Some(OPEN_HOLD);
        let mut hold_deadline = Instant::now() + OPEN_HOLD;
        let mut keepalive: Option<Duration> = None;
        let mut next_keepalive = Instant::now();
        let mut peer: Option<wire::PeerOpen> = None;
        let mut adj_out: BTreeMap<IpNet, (Route, IpAddr)> = BTreeMap::new();
        let mut bfd: Option<BfdRun> = None;
        let far = Instant::now() + Duration::from_secs(86400 * 365);

        let outcome = loop {
            let ka_at = if keepalive.is_some() && state != SessionState::OpenSent {
                next_keepalive
            } else {
                far
            };
            let hold_at = if hold.is_some() { hold_deadline } else { far };
            let bfd_changed = async {
                match bfd.as_mut() {
                    Some(b) => b.report.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            let established = state == SessionState::Established;
            tokio::select! {
                f = frames.recv() => {
                    let frame = match f {
                        None => break Outcome::Failed("reader stopped".into()),
                        Some(Err(ReadError::Header(n))) => {
                            conn.notify(&n).await;
                            break Outcome::Failed(format!("received a bad message: {n}"));
                        }
                        Some(Err(e)) => break Outcome::Failed(e.to_string()),
                        Some(Ok(f)) => f,
                    };
                    let asn4 = peer.as_ref().is_some_and(|p| p.asn4);
                    let msg = match wire::decode_lenient(&frame, asn4) {
                        Ok((m, ignored)) => {
                            if !ignored.is_empty() {
                                tracing::warn!(peer = %cfg.address, errors = ?ignored,
                                    "malformed attributes in a received UPDATE: treated as withdraw (RFC 7606)");
                            }
                            m
                        }
                        Err(n) => {
                            if frame.get(18) != Some(&3) {
                                conn.notify(&n).await;
                            }
                            break Outcome::Failed(format!("received a malformed message: {n}"));
                        }
                    };
                    if let Some(h) = hold {
                        hold_deadline = Instant::now() + h;
                    }
                    match (state, msg) {
                        (_, BgpMessage::Notification(n)) => {
                            let (c, s) = wire::notification_codes(&n);
                            break Outcome::Failed(format!("peer sent NOTIFICATION {c}/{s}"));
                        }
                        (SessionState::OpenSent, BgpMessage::Open(open)) => {
                            let p = wire::peer_open(&open);
                            if let Err(n) = check_open(&cfg, &p) {
                                conn.notify(&n).await;
                                break Outcome::Failed(n.to_string());
                            }
                            self.remote_id = Some(p.router_id);
                            let h = cfg.hold_time.min(p.hold_time);
                            if h == 0 {
                                hold = None;
                                keepalive = None;
                            } else {
                                hold = Some(Duration::from_secs(h.into()));
                                hold_deadline = Instant::now() + Duration::from_secs(h.into());
                                let ka = cfg.keepalive.map_or(h / 3, |k| k.min(h / 3)).max(1);
                                keepalive = Some(Duration::from_secs(ka.into()));
                            }
                            peer = Some(p);
                            if let Err(e) = conn.send(&BgpMessage::KeepAlive).await {
                                break Outcome::Failed(e);
                            }
                            next_keepalive = Instant::now() + keepalive.unwrap_or_default();
                            state = SessionState::OpenConfirm;
                            self.set_state(state);
                        }
                        (SessionState::OpenConfirm, BgpMessage::KeepAlive) => {
                            state = SessionState::Established;
                            self.status.send_modify(|st| {
                                st.state = SessionState::Established;
                                st.established_at = Some(std::time::Instant::now());
                                st.established_count += 1;
                                st.last_error = None;
                            });
                            tracing::info!(peer = %cfg.address, "bgp session established");
                            let Some(p) = peer.as_ref() else { break Outcome::Failed("no OPEN".into()) };
                            let table = self.routes.borrow_and_update().clone();
                            if let Err(e) = sync_routes(&mut conn, &cfg, p, local, &table, &mut adj_out, None).await {
                                break Outcome::Failed(e);
                            }
                            if let Some(bc) = cfg.bfd {
                                let base = self.status.borrow().bfd_state_changes;
                                bfd = Some(BfdRun::start(bc, local.ip(), cfg.address, self.mux.clone(), base));
                            }
                        }
                        (SessionState::Established, BgpMessage::KeepAlive | BgpMessage::Update(_)) => {}
                        (SessionState::Established, BgpMessage::RouteRefresh(rr)) => {
                            let Some(p) = peer.as_ref() else { continue };
                            let family = match rr.address_type() {
                                AddressType::Ipv4Unicast => Some(false),
                                AddressType::Ipv6Unicast => Some(true),
                                _ => None,
                            };
                            if let Some(v6) = family {
                                let table = self.routes.borrow().clone();
                                if let Err(e) = sync_routes(&mut conn, &cfg, p, local, &table, &mut adj_out, Some(v6)).await {
                                    break Outcome::Failed(e);
                                }
                            }
                        }
                        (s, m) => {
                            let sub = match s {
                                SessionState::OpenSent => 1,
                                SessionState::OpenConfirm => 2,
                                _ => 3,
                            };
                            let n = Notify::new(5, sub, vec![], format!("unexpected {:?} in {s:?}", m.get_type()));
                            conn.notify(&n).await;
                            break Outcome::Failed(n.to_string());
                        }
                    }
                }
                _ = sleep_until(hold_at) => {
                    let n = Notify::new(4, 0, vec![], "hold timer expired");
                    conn.notify(&n).await;
                    break Outcome::Failed(n.to_string());
                }
                _ = sleep_until(ka_at) => {
                    if let Err(e) = conn.send(&BgpMessage::KeepAlive).await {
                        break Outcome::Failed(e);
                    }
                    next_keepalive = Instant::now() + keepalive.unwrap_or(Duration::from_secs(30));
                }
                r = self.routes.changed(), if established => {
                    if r.is_err() {
                        // The speaker is gone.
                        break Outcome::Stopped;
                    }
                    let Some(p) = peer.as_ref() else { continue };
                    let table = self.routes.borrow_and_update().clone();
                    if let Err(e) = sync_routes(&mut conn, &cfg, p, local, &table, &mut adj_out, None).await {
                        break Outcome::Failed(e);
                    }
                }
                ok = bfd_changed => {
                    let Some(b) = bfd.as_mut() else { continue };
                    if !ok {
                        bfd = None;
                        continue;
                    }
                    let rep = *b.report.borrow_and_update();
                    let was_up = b.last == Some(bfd::State::Up);
                    b.last = Some(rep.state);
                    self.status.send_modify(|st| {
                        st.bfd_state = Some(rep.state);
                        st.bfd_state_changes = b.base + rep.changes;
                    });
                    if was_up && rep.state == bfd::State::Down && !rep.peer_admin_down {
                        let n = Notify::new(6, 10, vec![], "BFD session went down");
                        conn.notify(&n).await;
                        break Outcome::Failed(n.to_string());
                    }
                }
                c = self.commands.recv() => match c {
                    None => break Outcome::Stopped,
                    Some(Command::Stop(n, done)) => {
                        if established {
                            let prefixes: Vec<IpNet> = adj_out.keys().copied().collect();
                            for m in wire::withdraw(&prefixes) {
                                if conn.send(&m).await.is_err() {
                                    break;
                                }
                            }
                        }
                        conn.notify(&n).await;
                        let _ = conn.write.shutdown().await;
                        let _ = done.send(());
                        break Outcome::Stopped;
                    }
                    Some(Command::Update(new)) => {
                        if session_settings_differ(&cfg, &new) {
                            let n = Notify::new(6, 6, vec![], "configuration changed");
                            conn.notify(&n).await;
                            break Outcome::Restart(new);
                        }
                        self.cfg = *new;
                    }
                    Some(Command::Incoming(s)) => {
                        if let Some(o) = self.collision(state, s, &mut conn).await {
                            break o;
                        }
                    }
                },
            }
        };
        if let Some(b) = bfd {
            let _ = b.stop.send(true);
        }
        self.status.send_modify(|st| {
            st.bfd_state = None;
        });
        outcome
    }

    /// RFC 4271 6.8. Returns an outcome when the existing connection must go.
    async fn collision(
        &mut self,
        state: SessionState,
        incoming: TcpStream,
        conn: &mut Conn,
    ) -> Option<Outcome> {
        let keep_ours = match (state, self.remote_id) {
            (SessionState::Established, _) => true,
            (_, Some(remote)) => u32::from(self.cfg.router_id) > u32::from(remote),
            (_, None) => true,
        };
        if keep_ours {
            tracing::info!(peer = %self.cfg.address, "connection collision: incoming connection closed");
            drop(incoming);
            None
        } else {
            tracing::info!(peer = %self.cfg.address, "connection collision: switching to the peer's connection");
            conn.notify(&Notify::new(
                6,
                7,
                vec![],
                "connection collision resolution",
            ))
            .await;
            Some(Outcome::Replace(incoming))
        }
    }
}

enum Wait {
    Stream(TcpStream),
    Timeout,
    Stop,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct BfdRun {
    report: watch::Receiver<bfd::Report>,
    stop: watch::Sender<bool>,
    last: Option<bfd::State>,
    /// State changes counted by earlier BFD sessions of this peer (the counter is cumulative).
    base: u64,
}

impl BfdRun {
    fn start(cfg: bfd::BfdConfig, local: IpAddr, peer: IpAddr, mux: bfd::Mux, base: u64) -> Self {
        let (report_tx, report) = watch::channel(bfd::Report {
            state: bfd::State::Down,
            changes: 0,
            peer_admin_down: false,
        });
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            if let Err(e) = bfd::run(cfg, local, peer, mux, report_tx, stop_rx).await {
                tracing::warn!(%peer, error = %e, "bfd session failed");
            }
        });
        Self {
            report,
            stop,
            last: None,
            base,
        }
    }
}

struct Conn {
    write: OwnedWriteHalf,
    status: watch::Sender<PeerStatus>,
}

impl Conn {
    async fn send(&mut self, msg: &BgpMessage) -> Result<(), String> {
        let bytes = wire::encode(msg)?;
        match tokio::time::timeout(WRITE_TIMEOUT, self.write.write_all(&bytes)).await {
            Ok(Ok(())) => {
                if matches!(msg, BgpMessage::Update(_)) {
                    self.status.send_modify(|s| s.updates_sent += 1);
                }
                Ok(())
            }
            Ok(Err(e)) => Err(format!("write failed: {e}")),
            Err(_) => Err("write timed out".into()),
        }
    }

    /// Sends a NOTIFICATION (best effort: the connection closes right after).
    async fn notify(&mut self, n: &Notify) {
        tracing::info!(code = n.code, subcode = n.subcode, reason = %n.reason, "sending NOTIFICATION");
        let _ = self
            .send(&BgpMessage::Notification(wire::notification(n)))
            .await;
    }
}

fn check_open(cfg: &PeerConfig, p: &wire::PeerOpen) -> Result<(), Notify> {
    if p.asn != cfg.peer_as {
        let data = u16::try_from(p.asn)
            .unwrap_or(wire::AS_TRANS)
            .to_be_bytes()
            .to_vec();
        return Err(Notify::new(
            2,
            2,
            data,
            format!("bad peer AS {} (expected {})", p.asn, cfg.peer_as),
        ));
    }
    if p.router_id.is_unspecified() || (cfg.peer_as == cfg.my_as && p.router_id == cfg.router_id) {
        return Err(Notify::new(
            2,
            3,
            vec![],
            format!("bad BGP identifier {}", p.router_id),
        ));
    }
    Ok(())
}

fn session_settings_differ(a: &PeerConfig, b: &PeerConfig) -> bool {
    a.peer_as != b.peer_as
        || a.my_as != b.my_as
        || a.router_id != b.router_id
        || a.hold_time != b.hold_time
        || a.keepalive != b.keepalive
        || a.port != b.port
        || a.source_address != b.source_address
        || a.password != b.password
        || a.ebgp_multihop != b.ebgp_multihop
        || a.bfd != b.bfd
}

/// Sends what changed between `adj_out` and `table`. With `refresh`, every route of that
/// family (true: IPv6) is sent again.
async fn sync_routes(
    conn: &mut Conn,
    cfg: &PeerConfig,
    peer: &wire::PeerOpen,
    local: SocketAddr,
    table: &RouteTable,
    adj_out: &mut BTreeMap<IpNet, (Route, IpAddr)>,
    refresh: Option<bool>,
) -> Result<(), String> {
    let ctx = wire::UpdateCtx {
        my_as: cfg.my_as,
        ibgp: cfg.peer_as == cfg.my_as,
        asn4: peer.asn4,
    };
    let mut want: BTreeMap<IpNet, (Route, IpAddr)> = BTreeMap::new();
    for (prefix, route) in table.iter() {
        let v6 = wire::is_v6(prefix);
        if (v6 && !peer.ipv6_unicast) || (!v6 && !peer.ipv4_unicast) {
            continue;
        }
        let nh = match route.next_hop {
            Some(nh) => nh,
            None => match (v6, local.ip()) {
                (false, IpAddr::V4(a)) => IpAddr::V4(a),
                (true, IpAddr::V6(a)) => IpAddr::V6(a),
                _ => continue,
            },
        };
        if v6 != nh.is_ipv6() || !wire::usable_next_hop(nh) {
            continue;
        }
        want.insert(*prefix, (route.clone(), nh));
    }
    let gone: Vec<IpNet> = adj_out
        .keys()
        .filter(|p| !want.contains_key(p))
        .copied()
        .collect();
    for m in wire::withdraw(&gone) {
        conn.send(&m).await?;
    }
    for p in &gone {
        adj_out.remove(p);
    }
    for (prefix, entry) in &want {
        let resend = refresh.is_some_and(|v6| v6 == wire::is_v6(prefix));
        if !resend && adj_out.get(prefix) == Some(entry) {
            continue;
        }
        if let Some(m) = wire::announce(ctx, &entry.0, entry.1) {
            conn.send(&m).await?;
            adj_out.insert(*prefix, entry.clone());
        }
    }
    let n = adj_out.len();
    conn.status.send_modify(|s| s.prefixes_advertised = n);
    Ok(())
}

async fn connect(cfg: &PeerConfig) -> Result<TcpStream, String> {
    let dest = SocketAddr::new(cfg.address, cfg.port);
    let sock = match dest {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(|e| format!("socket: {e}"))?;
    if let Some(pw) = &cfg.password {
        crate::sockopt::set_md5(&sock, cfg.address, pw.as_bytes())
            .map_err(|e| format!("cannot set TCP MD5 password: {e}"))?;
    }
    if let Some(src) = cfg.source_address {
        sock.bind(SocketAddr::new(src, 0))
            .map_err(|e| format!("bind {src}: {e}"))?;
    }
    match tokio::time::timeout(CONNECT_TIMEOUT, sock.connect(dest)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(format!("connect to {dest}: {e}")),
        Err(_) if cfg.password.is_some() => Err(format!(
            "connect to {dest} timed out; TCP MD5 is enabled and a peer with a different \
             MD5 password (or none) drops our segments silently: check the password"
        )),
        Err(_) => Err(format!("connect to {dest} timed out")),
    }
}
