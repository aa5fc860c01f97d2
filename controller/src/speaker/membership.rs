//! Which speakers are alive: a small SWIM-style failure detector over UDP.
//!
//! Every probe interval each speaker pings every peer it knows (peers come from the Nodes'
//! InternalIPs at the gossip port, or from `--memberlist-peers`). A peer silent for two probe
//! intervals becomes *suspect* and is probed indirectly too: up to two other live peers are
//! asked to ping it and relay the ack (a broken path between two speakers is not a dead
//! speaker). A peer silent for the suspect timeout is *dead*. Any message from a peer carrying
//! an incarnation at least as new as the last one seen makes it alive again; a speaker's
//! incarnation is its start time in milliseconds, so a restarted speaker always supersedes the
//! previous one. On SIGTERM a speaker sends `Leave` and its peers drop it at once.
//!
//! Full-mesh direct probing costs each speaker O(peers) tiny datagrams per interval (a
//! hundred nodes at 200 ms: 500 datagrams a second) and is what lets every speaker see a
//! failure within one timeout — no dissemination round trip. Nothing here touches the
//! Kubernetes API.
//!
//! [`Swim`] is the pure state machine (time passed in, messages returned); [`run`] is the
//! thin UDP driver.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tracing::{debug, info, warn};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "camelCase")]
pub enum Msg {
    Ping {
        from: String,
        inc: u64,
        ready: bool,
        seq: u64,
    },
    Ack {
        from: String,
        inc: u64,
        ready: bool,
        seq: u64,
    },
    /// Ask the receiver to ping `target` at `addr` and relay its ack.
    PingReq {
        from: String,
        inc: u64,
        ready: bool,
        seq: u64,
        target: String,
        addr: SocketAddr,
    },
    Leave {
        from: String,
        inc: u64,
    },
}

impl Msg {
    fn from(&self) -> &str {
        match self {
            Msg::Ping { from, .. }
            | Msg::Ack { from, .. }
            | Msg::PingReq { from, .. }
            | Msg::Leave { from, .. } => from,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Alive,
    Suspect,
    Dead,
    Left,
}

#[derive(Debug, Clone)]
pub struct Member {
    pub addr: SocketAddr,
    pub inc: u64,
    pub ready: bool,
    pub state: State,
    pub last_heard: Instant,
    /// Whether the peer list (Nodes or flags) names it; learned peers are forgotten once
    /// long dead.
    pub listed: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub probe_interval: Duration,
    /// Silence after which a peer is dead.
    pub suspect_timeout: Duration,
}

impl Timing {
    fn suspect_after(&self) -> Duration {
        (self.probe_interval * 2).min(self.suspect_timeout / 2)
    }
}

pub struct Swim {
    pub me: String,
    pub inc: u64,
    pub ready: bool,
    timing: Timing,
    members: BTreeMap<String, Member>,
    seq: u64,
    /// Indirect probes we run for others: our seq → (requester addr, requester seq, target).
    relays: HashMap<u64, (SocketAddr, u64, String, Instant)>,
    last_probe: Option<Instant>,
}

/// How long an unlisted dead peer is remembered.
const FORGET_AFTER: Duration = Duration::from_secs(60);
/// How many peers are asked to probe a suspect.
const INDIRECT: usize = 2;

impl Swim {
    pub fn new(me: &str, inc: u64, timing: Timing) -> Swim {
        Swim {
            me: me.into(),
            inc,
            ready: false,
            timing,
            members: BTreeMap::new(),
            seq: 0,
            relays: HashMap::new(),
            last_probe: None,
        }
    }

    pub fn members(&self) -> &BTreeMap<String, Member> {
        &self.members
    }

    /// Speakers counted in elections: this one (once ready) and every ready peer not yet
    /// declared dead.
    pub fn live(&self) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.ready && matches!(m.state, State::Alive | State::Suspect))
            .map(|(n, _)| n.clone())
            .collect();
        if self.ready {
            out.insert(self.me.clone());
        }
        out
    }

    /// Sets the listed peers. New ones start alive (so a starting speaker does not claim
    /// every VIP before it has heard from anyone) and must answer within the timeout.
    pub fn set_peers(&mut self, now: Instant, peers: &BTreeMap<String, SocketAddr>) {
        for (name, addr) in peers {
            if *name == self.me {
                continue;
            }
            match self.members.get_mut(name) {
                Some(m) => {
                    m.addr = *addr;
                    m.listed = true;
                }
                None => {
                    self.members.insert(
                        name.clone(),
                        Member {
                            addr: *addr,
                            inc: 0,
                            ready: true,
                            state: State::Alive,
                            last_heard: now,
                            listed: true,
                        },
                    );
                }
            }
        }
        for (name, m) in self.members.iter_mut() {
            if !peers.contains_key(name) {
                m.listed = false;
            }
        }
        self.members.retain(|_, m| {
            m.listed
                || matches!(m.state, State::Alive | State::Suspect)
                || now.duration_since(m.last_heard) < FORGET_AFTER
        });
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn ping(&mut self) -> Msg {
        Msg::Ping {
            from: self.me.clone(),
            inc: self.inc,
            ready: self.ready,
            seq: self.next_seq(),
        }
    }

    /// Advances time: probes (once per interval) and state changes. Returns what to send.
    pub fn tick(&mut self, now: Instant) -> Vec<(SocketAddr, Msg)> {
        let mut out = Vec::new();
        let due = self
            .last_probe
            .is_none_or(|t| now.duration_since(t) >= self.timing.probe_interval);
        let suspect_after = self.timing.suspect_after();
        let mut suspects = Vec::new();
        for (name, m) in self.members.iter_mut() {
            let silence = now.duration_since(m.last_heard);
            match m.state {
                State::Alive if silence >= suspect_after => {
                    debug!(peer = %name, ?silence, "Speaker suspect");
                    m.state = State::Suspect;
                }
                State::Suspect if silence >= self.timing.suspect_timeout => {
                    info!(peer = %name, ?silence, "Speaker dead");
                    m.state = State::Dead;
                }
                _ => {}
            }
            if m.state == State::Suspect {
                suspects.push((name.clone(), m.addr));
            }
        }
        if due {
            self.last_probe = Some(now);
            let targets: Vec<SocketAddr> = self
                .members
                .values()
                .filter(|m| m.state != State::Left)
                .map(|m| m.addr)
                .collect();
            for addr in targets {
                let p = self.ping();
                out.push((addr, p));
            }
            for (target, addr) in suspects {
                let helpers: Vec<SocketAddr> = self
                    .members
                    .iter()
                    .filter(|(n, m)| **n != target && m.state == State::Alive)
                    .map(|(_, m)| m.addr)
                    .take(INDIRECT)
                    .collect();
                for h in helpers {
                    let seq = self.next_seq();
                    out.push((
                        h,
                        Msg::PingReq {
                            from: self.me.clone(),
                            inc: self.inc,
                            ready: self.ready,
                            seq,
                            target: target.clone(),
                            addr,
                        },
                    ));
                }
            }
            self.relays
                .retain(|_, r| now.duration_since(r.3) < self.timing.suspect_timeout);
        }
        out
    }

    /// Records that `name` spoke (directly, or through a relayed ack).
    fn heard(&mut self, now: Instant, name: &str, addr: Option<SocketAddr>, inc: u64, ready: bool) {
        if name == self.me {
            return;
        }
        match self.members.get_mut(name) {
            Some(m) => {
                if inc < m.inc {
                    return; // a stale incarnation (an old process)
                }
                if m.state == State::Left && inc == m.inc {
                    return; // it said goodbye
                }
                if matches!(m.state, State::Dead | State::Left) {
                    info!(peer = %name, "Speaker alive");
                }
                m.inc = inc;
                m.ready = ready;
                m.state = State::Alive;
                m.last_heard = now;
                if let Some(a) = addr {
                    m.addr = a;
                }
            }
            None => {
                let Some(addr) = addr else { return };
                info!(peer = %name, %addr, "Speaker joined");
                self.members.insert(
                    name.to_string(),
                    Member {
                        addr,
                        inc,
                        ready,
                        state: State::Alive,
                        last_heard: now,
                        listed: false,
                    },
                );
            }
        }
    }

    /// Handles one datagram from `src`. Returns what to send.
    pub fn handle(&mut self, now: Instant, src: SocketAddr, msg: Msg) -> Vec<(SocketAddr, Msg)> {
        if msg.from() == self.me {
            return vec![];
        }
        match msg {
            Msg::Ping {
                from,
                inc,
                ready,
                seq,
            } => {
                self.heard(now, &from, Some(src), inc, ready);
                vec![(
                    src,
                    Msg::Ack {
                        from: self.me.clone(),
                        inc: self.inc,
                        ready: self.ready,
                        seq,
                    },
                )]
            }
            Msg::Ack {
                from,
                inc,
                ready,
                seq,
            } => {
                if let Some((req, req_seq, target, _)) = self.relays.remove(&seq) {
                    // An indirect probe we ran: relay the target's ack to the requester.
                    if target == from {
                        self.heard(now, &from, Some(src), inc, ready);
                        return vec![(
                            req,
                            Msg::Ack {
                                from,
                                inc,
                                ready,
                                seq: req_seq,
                            },
                        )];
                    }
                }
                // Direct or relayed: either way `from` is alive. The address is only trusted
                // when the datagram came from it.
                let direct = self.members.get(&from).is_none_or(|m| m.addr == src);
                self.heard(now, &from, direct.then_some(src), inc, ready);
                vec![]
            }
            Msg::PingReq {
                from,
                inc,
                ready,
                seq,
                target,
                addr,
            } => {
                self.heard(now, &from, Some(src), inc, ready);
                let my_seq = self.next_seq();
                self.relays.insert(my_seq, (src, seq, target, now));
                vec![(
                    addr,
                    Msg::Ping {
                        from: self.me.clone(),
                        inc: self.inc,
                        ready: self.ready,
                        seq: my_seq,
                    },
                )]
            }
            Msg::Leave { from, inc } => {
                if let Some(m) = self.members.get_mut(&from)
                    && inc >= m.inc
                {
                    info!(peer = %from, "Speaker left");
                    m.inc = inc;
                    m.state = State::Left;
                }
                vec![]
            }
        }
    }

    /// After this speaker's own link was down: every peer counts as alive again until it
    /// fails to answer, as at start-up (peers declared dead while *we* were cut off are not).
    pub fn rejoin(&mut self, now: Instant) {
        for m in self.members.values_mut() {
            if m.state != State::Left {
                m.state = State::Alive;
                m.last_heard = now;
            }
        }
    }

    /// The goodbye sent to every peer on shutdown.
    pub fn leave(&self) -> Vec<(SocketAddr, Msg)> {
        self.members
            .values()
            .filter(|m| matches!(m.state, State::Alive | State::Suspect))
            .map(|m| {
                (
                    m.addr,
                    Msg::Leave {
                        from: self.me.clone(),
                        inc: self.inc,
                    },
                )
            })
            .collect()
    }
}

/// Inputs to the UDP driver.
pub enum Control {
    Peers(BTreeMap<String, SocketAddr>),
    Ready(bool),
    Rejoin,
}

/// Runs the detector on `sock` until `shutdown`; publishes the live set on `live`.
pub async fn run(
    sock: UdpSocket,
    mut swim: Swim,
    mut control: tokio::sync::mpsc::UnboundedReceiver<Control>,
    live: watch::Sender<BTreeSet<String>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let step = (swim.timing.probe_interval / 4)
        .clamp(Duration::from_millis(10), Duration::from_millis(50));
    let mut ticker = tokio::time::interval(step);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; 2048];
    let send = |sock: &UdpSocket, out: Vec<(SocketAddr, Msg)>| {
        for (to, m) in out {
            if let Ok(b) = serde_json::to_vec(&m)
                && let Err(e) = sock.try_send_to(&b, to)
            {
                debug!(%to, error = %e, "Cannot send to speaker");
            }
        }
    };
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let out = swim.tick(Instant::now());
                send(&sock, out);
            }
            r = sock.recv_from(&mut buf) => match r {
                Ok((n, src)) => match serde_json::from_slice::<Msg>(&buf[..n]) {
                    Ok(m) => {
                        let out = swim.handle(Instant::now(), src, m);
                        send(&sock, out);
                    }
                    Err(e) => debug!(%src, error = %e, "Ignoring a malformed datagram"),
                },
                Err(e) => warn!(error = %e, "Memberlist socket error"),
            },
            c = control.recv() => match c {
                Some(Control::Peers(p)) => swim.set_peers(Instant::now(), &p),
                Some(Control::Ready(r)) => swim.ready = r,
                Some(Control::Rejoin) => swim.rejoin(Instant::now()),
                None => {}
            },
            _ = shutdown.changed() => {
                let bye = swim.leave();
                send(&sock, bye.clone());
                send(&sock, bye);
                swim.ready = false;
                live.send_replace(BTreeSet::new());
                return;
            }
        }
        let now_live = swim.live();
        live.send_if_modified(|cur| {
            if *cur != now_live {
                *cur = now_live;
                true
            } else {
                false
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timing = Timing {
        probe_interval: Duration::from_millis(200),
        suspect_timeout: Duration::from_millis(700),
    };

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([10, 99, 0, i], 7946))
    }

    /// Three speakers on a simulated network where `cut` pairs cannot talk.
    struct Net {
        nodes: Vec<Swim>,
        down: BTreeSet<usize>,
        cut: BTreeSet<(usize, usize)>,
        now: Instant,
    }

    impl Net {
        fn new(n: usize) -> Net {
            let now = Instant::now();
            let mut nodes: Vec<Swim> = (0..n).map(|i| Swim::new(&format!("n{i}"), 1, T)).collect();
            let peers: BTreeMap<String, SocketAddr> = (0..n)
                .map(|i| (format!("n{i}"), addr(i as u8 + 1)))
                .collect();
            for s in &mut nodes {
                s.ready = true;
                s.set_peers(now, &peers);
            }
            Net {
                nodes,
                down: BTreeSet::new(),
                cut: BTreeSet::new(),
                now,
            }
        }

        fn index(a: SocketAddr) -> usize {
            match a {
                SocketAddr::V4(v) => v.ip().octets()[3] as usize - 1,
                SocketAddr::V6(_) => unreachable!(),
            }
        }

        fn deliver(&mut self, from: usize, out: Vec<(SocketAddr, Msg)>) {
            let mut queue: Vec<(usize, SocketAddr, Msg)> =
                out.into_iter().map(|(a, m)| (from, a, m)).collect();
            while let Some((src, to, m)) = queue.pop() {
                let dst = Self::index(to);
                if self.down.contains(&dst)
                    || self.down.contains(&src)
                    || self.cut.contains(&(src.min(dst), src.max(dst)))
                {
                    continue;
                }
                let now = self.now;
                let replies = self.nodes[dst].handle(now, addr(src as u8 + 1), m);
                queue.extend(replies.into_iter().map(|(a, m)| (dst, a, m)));
            }
        }

        fn run_for(&mut self, d: Duration) {
            let end = self.now + d;
            while self.now < end {
                self.now += Duration::from_millis(50);
                for i in 0..self.nodes.len() {
                    if self.down.contains(&i) {
                        continue;
                    }
                    let now = self.now;
                    let out = self.nodes[i].tick(now);
                    self.deliver(i, out);
                }
            }
        }

        fn live(&self, i: usize) -> Vec<String> {
            self.nodes[i].live().into_iter().collect()
        }
    }

    #[test]
    fn everyone_sees_everyone() {
        let mut net = Net::new(3);
        net.run_for(Duration::from_secs(2));
        for i in 0..3 {
            assert_eq!(net.live(i), ["n0", "n1", "n2"]);
        }
    }

    #[test]
    fn a_silent_speaker_is_dead_within_the_timeout_plus_a_probe() {
        let mut net = Net::new(3);
        net.run_for(Duration::from_secs(1));
        net.down.insert(2);
        net.run_for(Duration::from_millis(500));
        assert_eq!(
            net.live(0),
            ["n0", "n1", "n2"],
            "not dead before the timeout"
        );
        net.run_for(Duration::from_millis(400));
        assert_eq!(net.live(0), ["n0", "n1"]);
        assert_eq!(net.live(1), ["n0", "n1"]);
        // It comes back (same process): alive again as soon as it speaks.
        net.down.remove(&2);
        net.run_for(Duration::from_millis(300));
        assert_eq!(net.live(0), ["n0", "n1", "n2"]);
    }

    #[test]
    fn a_broken_path_is_bridged_by_indirect_probes() {
        let mut net = Net::new(3);
        net.run_for(Duration::from_secs(1));
        net.cut.insert((0, 2));
        net.run_for(Duration::from_secs(3));
        assert_eq!(net.live(0), ["n0", "n1", "n2"]);
        assert_eq!(net.live(2), ["n0", "n1", "n2"]);
    }

    #[test]
    fn leave_is_immediate_and_a_restart_supersedes_it() {
        let mut net = Net::new(3);
        net.run_for(Duration::from_secs(1));
        let bye = net.nodes[2].leave();
        net.deliver(2, bye);
        assert_eq!(net.live(0), ["n0", "n1"]);
        // The old process keeps pinging with its old incarnation: still gone.
        net.run_for(Duration::from_millis(400));
        assert_eq!(net.live(0), ["n0", "n1"]);
        // A restart has a newer incarnation.
        net.nodes[2].inc = 2;
        net.run_for(Duration::from_millis(300));
        assert_eq!(net.live(0), ["n0", "n1", "n2"]);
    }

    #[test]
    fn a_speaker_that_is_not_ready_does_not_count() {
        let mut net = Net::new(2);
        net.nodes[1].ready = false;
        net.run_for(Duration::from_millis(500));
        assert_eq!(net.live(0), ["n0"]);
        assert_eq!(net.live(1), ["n0"]);
    }

    #[test]
    fn messages_round_trip_as_json() {
        let m = Msg::PingReq {
            from: "a".into(),
            inc: 3,
            ready: true,
            seq: 9,
            target: "b".into(),
            addr: addr(2),
        };
        let s = serde_json::to_string(&m).unwrap();
        assert!(s.contains("\"t\":\"pingReq\""), "{s}");
        assert_eq!(serde_json::from_str::<Msg>(&s).unwrap(), m);
    }
}
