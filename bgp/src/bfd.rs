//! BFD, single-hop asynchronous mode (RFC 5880, RFC 5881), without authentication or echo.
//!
//! [`Packet`] parses and writes control packets with the checks of RFC 5880 6.8.6;
//! [`Session`] is the state machine with time passed in (so it is tested without sockets);
//! [`run`] drives one session over UDP: control packets go out from a source port in
//! 49152-65535 with TTL/hop limit 255, and the receiving socket on port 3784 has
//! `IP_MINTTL`/`IPV6_MINHOPCOUNT` 255 so the kernel drops anything that crossed a router
//! (the GTSM check of RFC 5881 section 5).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// UDP port for single-hop control packets.
pub const CONTROL_PORT: u16 = 3784;
/// Length of a control packet without authentication.
pub const PACKET_LEN: usize = 24;

/// BFD session state (RFC 5880 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum State {
    AdminDown = 0,
    Down = 1,
    Init = 2,
    Up = 3,
}

impl State {
    fn from_bits(b: u8) -> State {
        match b & 3 {
            0 => State::AdminDown,
            1 => State::Down,
            2 => State::Init,
            _ => State::Up,
        }
    }
}

/// Diagnostic codes we use.
pub mod diag {
    pub const NONE: u8 = 0;
    pub const DETECT_EXPIRED: u8 = 1;
    pub const NEIGHBOR_DOWN: u8 = 3;
    pub const ADMIN_DOWN: u8 = 7;
}

/// A BFD control packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub diag: u8,
    pub state: State,
    pub poll: bool,
    pub final_: bool,
    pub detect_mult: u8,
    pub my_disc: u32,
    pub your_disc: u32,
    /// Microseconds.
    pub desired_min_tx: u32,
    /// Microseconds.
    pub required_min_rx: u32,
    /// Microseconds; always 0 from us (no echo).
    pub required_min_echo_rx: u32,
}

/// Why a received packet was discarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("packet shorter than 24 bytes")]
    Short,
    #[error("unsupported BFD version {0}")]
    Version(u8),
    #[error("bad length field {0}")]
    Length(u8),
    #[error("detect multiplier is zero")]
    ZeroDetectMult,
    #[error("multipoint bit set")]
    Multipoint,
    #[error("my discriminator is zero")]
    ZeroMyDisc,
    #[error("your discriminator is zero in state {0:?}")]
    ZeroYourDisc(State),
    #[error("authentication is not supported")]
    Auth,
    #[error("poll and final both set")]
    PollAndFinal,
}

impl Packet {
    /// Parses and validates a datagram (RFC 5880 6.8.6, up to the discriminator lookup).
    pub fn parse(buf: &[u8]) -> Result<Packet, PacketError> {
        if buf.len() < PACKET_LEN {
            return Err(PacketError::Short);
        }
        let version = buf[0] >> 5;
        if version != 1 {
            return Err(PacketError::Version(version));
        }
        let flags = buf[1];
        let auth = flags & 0x04 != 0;
        let len = buf[3];
        let min = if auth { 26 } else { 24 };
        if (len as usize) < min || len as usize > buf.len() {
            return Err(PacketError::Length(len));
        }
        if auth {
            return Err(PacketError::Auth);
        }
        let word = |i: usize| u32::from_be_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        let p = Packet {
            diag: buf[0] & 0x1f,
            state: State::from_bits(flags >> 6),
            poll: flags & 0x20 != 0,
            final_: flags & 0x10 != 0,
            detect_mult: buf[2],
            my_disc: word(4),
            your_disc: word(8),
            desired_min_tx: word(12),
            required_min_rx: word(16),
            required_min_echo_rx: word(20),
        };
        if p.detect_mult == 0 {
            return Err(PacketError::ZeroDetectMult);
        }
        if flags & 0x01 != 0 {
            return Err(PacketError::Multipoint);
        }
        if p.poll && p.final_ {
            return Err(PacketError::PollAndFinal);
        }
        if p.my_disc == 0 {
            return Err(PacketError::ZeroMyDisc);
        }
        if p.your_disc == 0 && !matches!(p.state, State::Down | State::AdminDown) {
            return Err(PacketError::ZeroYourDisc(p.state));
        }
        Ok(p)
    }

    /// The 24-byte wire form.
    pub fn to_bytes(&self) -> [u8; PACKET_LEN] {
        let mut b = [0u8; PACKET_LEN];
        b[0] = (1 << 5) | (self.diag & 0x1f);
        b[1] = ((self.state as u8) << 6)
            | if self.poll { 0x20 } else { 0 }
            | if self.final_ { 0x10 } else { 0 };
        b[2] = self.detect_mult;
        b[3] = PACKET_LEN as u8;
        b[4..8].copy_from_slice(&self.my_disc.to_be_bytes());
        b[8..12].copy_from_slice(&self.your_disc.to_be_bytes());
        b[12..16].copy_from_slice(&self.desired_min_tx.to_be_bytes());
        b[16..20].copy_from_slice(&self.required_min_rx.to_be_bytes());
        b[20..24].copy_from_slice(&self.required_min_echo_rx.to_be_bytes());
        b
    }
}

/// Timers of a BFD session (a MetalLB-style profile).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BfdConfig {
    pub min_tx: Duration,
    pub min_rx: Duration,
    pub detect_mult: u8,
}

impl Default for BfdConfig {
    fn default() -> Self {
        Self {
            min_tx: Duration::from_millis(300),
            min_rx: Duration::from_millis(300),
            detect_mult: 3,
        }
    }
}

/// Slow transmit interval while the session is not Up (RFC 5880 6.8.3).
const SLOW_TX: Duration = Duration::from_secs(1);

fn us(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// One BFD session's state machine.
#[derive(Debug, Clone)]
pub struct Session {
    pub cfg: BfdConfig,
    pub state: State,
    pub local_disc: u32,
    pub remote_disc: u32,
    pub remote_state: State,
    pub local_diag: u8,
    remote_min_rx: u32,
    remote_desired_tx: u32,
    remote_detect_mult: u8,
    /// A poll sequence is running (our timers changed).
    polling: bool,
    /// Answer the next packet with Final set.
    send_final: bool,
    /// The intervals we advertise right now (1 s while not Up, configured once Up).
    adv_tx: u32,
    detect_deadline: Option<Instant>,
}

impl Session {
    pub fn new(cfg: BfdConfig, local_disc: u32) -> Self {
        Self {
            cfg,
            state: State::Down,
            local_disc: local_disc.max(1),
            remote_disc: 0,
            remote_state: State::Down,
            local_diag: diag::NONE,
            remote_min_rx: 1,
            remote_desired_tx: 0,
            remote_detect_mult: 0,
            polling: false,
            send_final: false,
            adv_tx: us(SLOW_TX.max(cfg.min_tx)),
            detect_deadline: None,
        }
    }

    /// The packet to send now (clears a pending Final).
    pub fn packet(&mut self) -> Packet {
        let final_ = std::mem::take(&mut self.send_final);
        Packet {
            diag: self.local_diag,
            state: self.state,
            poll: self.polling && !final_,
            final_,
            detect_mult: self.cfg.detect_mult,
            my_disc: self.local_disc,
            your_disc: self.remote_disc,
            desired_min_tx: self.adv_tx,
            required_min_rx: us(self.cfg.min_rx),
            required_min_echo_rx: 0,
        }
    }

    /// Whether a reply must go out right away (a Final answering a Poll).
    pub fn final_pending(&self) -> bool {
        self.send_final
    }

    /// Interval between our packets, before jitter.
    pub fn tx_interval(&self) -> Duration {
        let remote_rx = self.remote_min_rx.max(1);
        Duration::from_micros(u64::from(self.adv_tx.max(remote_rx)))
    }

    /// Detection time (RFC 5880 6.8.4, asynchronous mode).
    pub fn detect_time(&self) -> Duration {
        let rx = us(self.cfg.min_rx).max(self.remote_desired_tx);
        Duration::from_micros(u64::from(rx) * u64::from(self.remote_detect_mult.max(1)))
    }

    pub fn detect_deadline(&self) -> Option<Instant> {
        self.detect_deadline
    }

    fn set_state(&mut self, s: State) {
        if self.state == s {
            return;
        }
        self.state = s;
        let want = if s == State::Up {
            us(self.cfg.min_tx)
        } else {
            us(SLOW_TX.max(self.cfg.min_tx))
        };
        if want != self.adv_tx {
            self.adv_tx = want;
            // Changing our advertised timers starts a poll sequence (RFC 5880 6.8.3).
            self.polling = true;
        }
        if s == State::Down {
            self.remote_disc = 0;
            self.detect_deadline = None;
        }
    }

    /// Handles a validated packet (RFC 5880 6.8.6 from the discriminator checks on).
    /// Returns the new state when it changed.
    pub fn receive(&mut self, p: &Packet, now: Instant) -> Option<State> {
        if p.your_disc != 0 && p.your_disc != self.local_disc {
            return None;
        }
        let before = self.state;
        self.remote_disc = p.my_disc;
        self.remote_state = p.state;
        self.remote_desired_tx = p.desired_min_tx;
        self.remote_min_rx = p.required_min_rx;
        self.remote_detect_mult = p.detect_mult;
        if p.final_ {
            self.polling = false;
        }
        if p.poll {
            self.send_final = true;
        }
        if self.state == State::AdminDown {
            return None;
        }
        if p.state == State::AdminDown {
            if self.state != State::Down {
                self.local_diag = diag::NEIGHBOR_DOWN;
                self.set_state(State::Down);
            }
        } else {
            match self.state {
                State::Down => match p.state {
                    State::Down => self.set_state(State::Init),
                    State::Init => self.set_state(State::Up),
                    _ => {}
                },
                State::Init => {
                    if matches!(p.state, State::Init | State::Up) {
                        self.set_state(State::Up);
                    }
                }
                State::Up => {
                    if p.state == State::Down {
                        self.local_diag = diag::NEIGHBOR_DOWN;
                        self.set_state(State::Down);
                    }
                }
                State::AdminDown => {}
            }
        }
        if self.state != State::Down {
            self.detect_deadline = Some(now + self.detect_time());
        } else {
            self.detect_deadline = None;
        }
        (self.state != before).then_some(self.state)
    }

    /// Checks the detection timer. Returns `Some(Down)` when it fired.
    pub fn poll_timer(&mut self, now: Instant) -> Option<State> {
        match self.detect_deadline {
            Some(d) if now >= d && matches!(self.state, State::Init | State::Up) => {
                self.local_diag = diag::DETECT_EXPIRED;
                self.set_state(State::Down);
                Some(State::Down)
            }
            _ => None,
        }
    }

    /// Goes to AdminDown (sent before stopping so the peer does not report a failure).
    pub fn admin_down(&mut self) {
        self.local_diag = diag::ADMIN_DOWN;
        self.set_state(State::AdminDown);
    }
}

type Routes = HashMap<IpAddr, mpsc::Sender<Packet>>;

/// Receives BFD control packets on port 3784 of local addresses and hands them to the
/// session of their source address.
#[derive(Default, Clone)]
pub struct Mux {
    inner: Arc<Mutex<HashMap<IpAddr, Arc<Mutex<Routes>>>>>,
}

impl Mux {
    /// Whether `self` and `other` are the same receiver (clones of one another).
    #[cfg(test)]
    pub(crate) fn same(&self, other: &Mux) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Registers a session for `peer` reached from `local`; starts the receiver of `local`
    /// the first time.
    pub fn register(&self, local: IpAddr, peer: IpAddr) -> std::io::Result<mpsc::Receiver<Packet>> {
        let routes = {
            let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            match map.get(&local) {
                Some(r) => r.clone(),
                None => {
                    let sock = rx_socket(local)?;
                    let r: Arc<Mutex<Routes>> = Arc::default();
                    tokio::spawn(receive_loop(sock, r.clone()));
                    map.insert(local, r.clone());
                    r
                }
            }
        };
        let (tx, rx) = mpsc::channel(16);
        routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(peer, tx);
        Ok(rx)
    }
}

async fn receive_loop(sock: UdpSocket, routes: Arc<Mutex<Routes>>) {
    let mut buf = [0u8; 128];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "bfd receive failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let packet = match Packet::parse(&buf[..n]) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(%from, error = %e, "bfd packet discarded");
                continue;
            }
        };
        let tx = routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&canonical(from.ip()))
            .cloned();
        if let Some(tx) = tx {
            let _ = tx.try_send(packet);
        }
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

fn rx_socket(local: IpAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(
        Domain::for_address(SocketAddr::new(local, 0)),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    sock.set_reuse_address(true)?;
    match local {
        IpAddr::V4(_) => crate::sockopt::set_int(&sock, libc::IPPROTO_IP, libc::IP_MINTTL, 255)?,
        IpAddr::V6(_) => {
            sock.set_only_v6(true)?;
            crate::sockopt::set_int(&sock, libc::IPPROTO_IPV6, libc::IPV6_MINHOPCOUNT, 255)?
        }
    }
    sock.set_nonblocking(true)?;
    sock.bind(&SocketAddr::new(local, CONTROL_PORT).into())?;
    UdpSocket::from_std(sock.into())
}

fn tx_socket(local: IpAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut last = None;
    // Source port from the range RFC 5881 section 4 requires; a few tries on collisions.
    for _ in 0..32 {
        let port = rand::rng().random_range(49152..=65535u16);
        let sock = Socket::new(
            Domain::for_address(SocketAddr::new(local, 0)),
            Type::DGRAM,
            Some(Protocol::UDP),
        )?;
        match local {
            IpAddr::V4(_) => sock.set_ttl_v4(255)?,
            IpAddr::V6(_) => sock.set_unicast_hops_v6(255)?,
        }
        sock.set_nonblocking(true)?;
        match sock.bind(&SocketAddr::new(local, port).into()) {
            Ok(()) => return UdpSocket::from_std(sock.into()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free BFD source port")))
}

/// What a running BFD session reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub state: State,
    /// Count of state changes so far.
    pub changes: u64,
    /// The last change to Down came from the peer signalling AdminDown, which is not a
    /// failure (RFC 5882 section 3.2): clients keep their sessions.
    pub peer_admin_down: bool,
}

/// Runs one session until `stop` turns true; state changes are published on `report`.
pub async fn run(
    cfg: BfdConfig,
    local: IpAddr,
    peer: IpAddr,
    mux: Mux,
    report: watch::Sender<Report>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut rx = mux.register(local, peer)?;
    let tx = tx_socket(local)?;
    let dest = SocketAddr::new(peer, CONTROL_PORT);
    let mut s = Session::new(cfg, rand::rng().random_range(1..u32::MAX));
    let mut next_tx = Instant::now();
    let mut changes = 0u64;
    let publish = |s: State, changes: u64, peer_admin_down: bool| {
        report.send_replace(Report {
            state: s,
            changes,
            peer_admin_down,
        });
    };
    publish(s.state, changes, false);
    loop {
        let deadline = match s.detect_deadline() {
            Some(d) if d < next_tx => d,
            _ => next_tx,
        };
        tokio::select! {
            r = stop.changed() => {
                // A dropped sender means the owner is gone: stop as well.
                if r.is_err() || *stop.borrow() {
                    s.admin_down();
                    let _ = tx.send_to(&s.packet().to_bytes(), dest).await;
                    return Ok(());
                }
            }
            p = rx.recv() => {
                let Some(p) = p else { return Ok(()) };
                let now = Instant::now();
                tracing::debug!(%peer, ?p, "bfd packet received");
                if let Some(new) = s.receive(&p, now) {
                    changes += 1;
                    tracing::info!(%peer, state = ?new, "bfd state changed");
                    publish(new, changes, p.state == State::AdminDown);
                    next_tx = now;
                }
                if s.final_pending() {
                    let _ = tx.send_to(&s.packet().to_bytes(), dest).await;
                }
                // The peer may have lowered its required interval (it asks for 1 s while not
                // Up): never wait longer than the current interval.
                let ival = s.tx_interval();
                if next_tx > now + ival {
                    next_tx = now + ival.mul_f64(rand::rng().random_range(0.75..1.0));
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                let now = Instant::now();
                if let Some(new) = s.poll_timer(now) {
                    changes += 1;
                    tracing::info!(%peer, state = ?new, "bfd detection time expired");
                    publish(new, changes, false);
                }
                if now >= next_tx {
                    tracing::debug!(%peer, state = ?s.state, "bfd packet sent");
                    if let Err(e) = tx.send_to(&s.packet().to_bytes(), dest).await {
                        tracing::debug!(%peer, error = %e, "bfd send failed");
                    }
                    // Jitter: 75-100% of the interval (RFC 5880 6.8.7).
                    let ival = s.tx_interval();
                    let f = rand::rng().random_range(0.75..1.0);
                    next_tx = now + ival.mul_f64(f);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pkt(state: State, my: u32, your: u32) -> Packet {
        Packet {
            diag: 0,
            state,
            poll: false,
            final_: false,
            detect_mult: 3,
            my_disc: my,
            your_disc: your,
            desired_min_tx: 300_000,
            required_min_rx: 300_000,
            required_min_echo_rx: 0,
        }
    }

    #[test]
    fn three_way_handshake_and_detection() {
        let t0 = Instant::now();
        let mut s = Session::new(BfdConfig::default(), 7);
        assert_eq!(s.packet().desired_min_tx, 1_000_000);
        assert_eq!(s.receive(&pkt(State::Down, 9, 0), t0), Some(State::Init));
        assert_eq!(s.receive(&pkt(State::Up, 9, 7), t0), Some(State::Up));
        // Timers changed on Up: a poll goes out, advertising 300 ms.
        let p = s.packet();
        assert!(p.poll);
        assert_eq!(p.desired_min_tx, 300_000);
        let mut fin = pkt(State::Up, 9, 7);
        fin.final_ = true;
        s.receive(&fin, t0);
        assert!(!s.packet().poll);
        assert_eq!(s.detect_time(), Duration::from_millis(900));
        assert_eq!(s.poll_timer(t0 + Duration::from_millis(899)), None);
        assert_eq!(
            s.poll_timer(t0 + Duration::from_millis(901)),
            Some(State::Down)
        );
        assert_eq!(s.local_diag, diag::DETECT_EXPIRED);
    }

    #[test]
    fn tx_interval_follows_the_peers_required_rx() {
        let t0 = Instant::now();
        let mut s = Session::new(BfdConfig::default(), 7);
        let mut init = pkt(State::Init, 9, 7);
        init.required_min_rx = 1_000_000;
        s.receive(&init, t0);
        assert_eq!(s.state, State::Up);
        assert_eq!(s.tx_interval(), Duration::from_secs(1));
        s.receive(&pkt(State::Up, 9, 7), t0);
        assert_eq!(s.tx_interval(), Duration::from_millis(300));
    }

    #[test]
    fn poll_is_answered_with_final() {
        let mut s = Session::new(BfdConfig::default(), 7);
        let mut p = pkt(State::Down, 9, 0);
        p.poll = true;
        s.receive(&p, Instant::now());
        assert!(s.final_pending());
        let out = s.packet();
        assert!(out.final_ && !out.poll);
    }

    #[test]
    fn peer_down_and_wrong_discriminator() {
        let t0 = Instant::now();
        let mut s = Session::new(BfdConfig::default(), 7);
        s.receive(&pkt(State::Init, 9, 7), t0);
        assert_eq!(s.state, State::Up);
        assert_eq!(s.receive(&pkt(State::Down, 9, 8), t0), None);
        assert_eq!(s.receive(&pkt(State::Down, 9, 7), t0), Some(State::Down));
        assert_eq!(s.local_diag, diag::NEIGHBOR_DOWN);
    }

    #[test]
    fn validation() {
        let good = pkt(State::Up, 1, 2).to_bytes();
        assert_eq!(Packet::parse(&good).unwrap(), pkt(State::Up, 1, 2));
        let mut b = good;
        b[0] = 2 << 5;
        assert_eq!(Packet::parse(&b), Err(PacketError::Version(2)));
        let mut b = good;
        b[2] = 0;
        assert_eq!(Packet::parse(&b), Err(PacketError::ZeroDetectMult));
        let mut b = good;
        b[1] |= 1;
        assert_eq!(Packet::parse(&b), Err(PacketError::Multipoint));
        let mut b = good;
        b[3] = 30;
        assert_eq!(Packet::parse(&b), Err(PacketError::Length(30)));
        assert_eq!(
            Packet::parse(&pkt(State::Up, 1, 0).to_bytes()),
            Err(PacketError::ZeroYourDisc(State::Up))
        );
        assert_eq!(Packet::parse(&good[..20]), Err(PacketError::Short));
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Packet::parse(&bytes);
        }

        #[test]
        fn valid_packets_round_trip(diag in 0u8..32, st in 0u8..4, my in 1u32.., your in any::<u32>(),
                                    mult in 1u8.., tx in any::<u32>(), rx in any::<u32>()) {
            let p = Packet { diag, state: State::from_bits(st), poll: false, final_: false,
                detect_mult: mult, my_disc: my, your_disc: your, desired_min_tx: tx,
                required_min_rx: rx, required_min_echo_rx: 0 };
            match Packet::parse(&p.to_bytes()) {
                Ok(q) => prop_assert_eq!(q, p),
                Err(e) => prop_assert_eq!(e, PacketError::ZeroYourDisc(p.state)),
            }
        }
    }
}
