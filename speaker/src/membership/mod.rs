//! Which speakers are alive: SWIM with dissemination, suspicion and refutation, over
//! authenticated UDP ([`super::wire`]).
//!
//! * **Probing.** Each probe interval a speaker pings *one* member, taken from a shuffled
//!   round-robin of the members it believes alive or suspect. No ack within the probe
//!   timeout: [`INDIRECT`] other members are asked to ping it and relay the ack (a broken
//!   path between two speakers is not a dead speaker: with 1 ↮ 2 and both ↔ 3, 3 relays and
//!   nobody is suspected). No ack by the end of the interval: the member is *suspect*.
//! * **Suspicion and refutation.** A suspect stays in elections. After the suspect timeout
//!   (counted by each speaker from when it learnt the suspicion) it is *dead*. A speaker that
//!   hears it is suspected or dead refutes by bumping its incarnation; an update is newer
//!   when its (epoch, incarnation) is, and at equal ones dead beats suspect beats alive. The
//!   epoch is the process's start time, so a restart supersedes whatever was said before.
//! * **Dissemination.** Alive/suspect/dead/left news is piggybacked on every probe message
//!   (the freshest first, each retransmitted `4·⌈log10(n+1)⌉` times), and pushed to
//!   [`FANOUT`] random members at once when a suspicion or death is declared (then every half
//!   interval while such news is pending). Every live speaker converges on the same member list, so
//!   ownership — the rendezvous-hash winner among the live set — is the same everywhere.
//!   A joining speaker learns from the first members it talks to which members are not alive
//!   and ready (what it presumes of all of them).
//! * **Cost per speaker** is flat in the cluster size: one probe and one ack per interval
//!   each way, one probe of a random dead member per second (how a healed partition finds
//!   its way back), news only while there is news — pushed at once only when it is a
//!   suspicion, a death, a departure or a refutation; a speaker starting is spread on probes.
//!   CPU is flat too: the driver wakes when a timer is due ([`Swim::next_wake`]), not on a
//!   fixed tick, and nothing per datagram walks the member list (the live set is rebuilt only
//!   when it can have changed).
//! * **Local health** (a Lifeguard idea). A speaker with at least two peers that hears from
//!   nobody for `probe interval + suspect timeout / 2` is *isolated*: it leaves the live set
//!   at once (so it stops announcing before the others can declare it dead), declares
//!   nobody dead for [`ISOLATION_GIVE_UP`], and when it hears from a peer again it revives
//!   whom it suspected meanwhile instead of spreading false deaths. A speaker told that it is
//!   dead also stays out of the live set for a while after refuting.
//! * **Who may speak.** Only names that are Nodes of the cluster (or `--memberlist-peers`)
//!   are accepted, as senders and in news; addresses come from the Nodes, never from
//!   gossip. Incarnations are bounded ([`super::wire::MAX_INC`]).
//!
//! Why not `foca` (a good SWIM library with no I/O of its own): it identifies a member by
//! one opaque identity that also carries its address and must be "renewed" to rejoin after
//! being declared down, while here the member set and addresses come from the Node objects,
//! readiness has to ride along, every datagram must be bound to its sender for the MAC and
//! the replay window before anything is decoded, and an isolated speaker must withdraw
//! before anyone declares it dead — which means owning the timers. The protocol is small
//! enough that owning it costs less than adapting those.
//!
//! [`Swim`] is the pure state machine (time passed in, envelopes returned); [`run`] is the UDP
//! driver with authentication, replay checks and metrics.

use super::wire::{self, Auth, Envelope, MAX_INC, Reject, ReplayGuard};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand::seq::{IndexedRandom, SliceRandom};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// What a datagram asks or answers (membership news rides in the envelope).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "camelCase")]
pub enum Msg {
    Ping {
        probe: u64,
    },
    Ack {
        probe: u64,
    },
    /// Ping `target` and relay its ack.
    PingReq {
        probe: u64,
        target: String,
    },
    /// `target` answered the ping asked for with `probe`.
    IndirectAck {
        probe: u64,
        target: String,
    },
    /// News only.
    Gossip,
    /// Part of the member list, for a speaker that just started (see `Swim::sync_to`).
    Sync,
    /// The sender shuts down.
    Leave,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum State {
    #[serde(rename = "a")]
    Alive,
    #[serde(rename = "s")]
    Suspect,
    #[serde(rename = "d")]
    Dead,
    #[serde(rename = "l")]
    Left,
}

/// One piece of membership news.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    #[serde(rename = "n")]
    pub name: String,
    #[serde(rename = "e")]
    pub epoch: u64,
    #[serde(rename = "i")]
    pub inc: u64,
    #[serde(rename = "s")]
    pub state: State,
    #[serde(rename = "r")]
    pub ready: bool,
}

#[derive(Debug, Clone)]
pub struct Member {
    pub addr: SocketAddr,
    /// 0 until heard of: presumed alive (so a starting speaker does not claim every VIP
    /// before it knows who is there), it must answer like anyone else.
    pub epoch: u64,
    pub inc: u64,
    pub ready: bool,
    pub state: State,
    pub changed: Instant,
    /// When a suspect becomes dead.
    deadline: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub probe_interval: Duration,
    /// How long a suspect has to refute before it is dead.
    pub suspect_timeout: Duration,
}

impl Timing {
    fn probe_timeout(&self) -> Duration {
        self.probe_interval * 2 / 5
    }
    fn gossip_interval(&self) -> Duration {
        self.probe_interval / 2
    }
    fn isolation_after(&self) -> Duration {
        self.probe_interval + self.suspect_timeout / 2
    }
    /// How long a speaker told it is dead stays out of elections after refuting.
    fn dead_hold(&self) -> Duration {
        self.suspect_timeout + self.probe_interval * 2
    }
}

/// Members asked to probe a silent one.
pub const INDIRECT: usize = 3;
/// Members news is pushed to at once.
pub const FANOUT: usize = 3;
const RETRANSMIT_MULT: u32 = 4;
/// How often one random dead member is probed.
const DEAD_PROBE_EVERY: Duration = Duration::from_secs(1);
/// After this long isolated, a speaker accepts it may be the only one left.
pub const ISOLATION_GIVE_UP: Duration = Duration::from_secs(5);
/// Bytes of news per datagram.
const NEWS_BUDGET: usize = 900;
/// A starting speaker's first datagrams ask for the member list (see [`Msg::Sync`]).
const SYNC_BELOW_SEQ: u64 = 4;

struct Probe {
    target: String,
    id: u64,
    sent: Instant,
    indirect: bool,
    acked: bool,
}

struct Queued {
    update: Update,
    left: u32,
}

/// What a [`Swim`] says about itself for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub alive: usize,
    pub suspect: usize,
    pub dead: usize,
}

pub struct Swim {
    pub me: String,
    pub epoch: u64,
    pub inc: u64,
    ready: bool,
    timing: Timing,
    members: BTreeMap<String, Member>,
    seq: u64,
    probe_ids: u64,
    order: Vec<String>,
    probe: Option<Probe>,
    next_probe: Option<Instant>,
    next_dead_probe: Option<Instant>,
    /// Probes run for others: our probe id → (requester, its probe id, target, since).
    relays: HashMap<u64, (String, u64, String, Instant)>,
    queue: Vec<Queued>,
    gossip_now: bool,
    next_gossip: Option<Instant>,
    started: Instant,
    last_heard: Option<Instant>,
    isolated_since: Option<Instant>,
    told_dead: Option<Instant>,
    rng: SmallRng,
    /// Wall clock (ms) as of the last call; stamps envelopes.
    pub wall_ms: u64,
    /// Direct probe round trips since the last [`Swim::take_rtts`].
    rtts: Vec<Duration>,
    /// Something [`Swim::live`] depends on changed since the last [`Swim::take_changed`].
    changed: bool,
    /// The earliest a suspect may become dead (None: no suspect).
    next_deadline: Option<Instant>,
}

impl Swim {
    pub fn new(me: &str, epoch: u64, timing: Timing, now: Instant) -> Swim {
        let seed = epoch ^ super::election::score(me, std::net::IpAddr::from([0, 0, 0, 0]));
        Swim {
            me: me.into(),
            epoch,
            inc: 0,
            ready: false,
            timing,
            members: BTreeMap::new(),
            seq: 0,
            probe_ids: 0,
            order: Vec::new(),
            probe: None,
            next_probe: None,
            next_dead_probe: None,
            relays: HashMap::new(),
            queue: Vec::new(),
            gossip_now: false,
            next_gossip: None,
            started: now,
            last_heard: None,
            isolated_since: None,
            told_dead: None,
            rng: SmallRng::seed_from_u64(seed),
            wall_ms: epoch,
            rtts: Vec::new(),
            changed: true,
            next_deadline: None,
        }
    }

    pub fn members(&self) -> &BTreeMap<String, Member> {
        &self.members
    }

    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Takes part in elections (or stops): an incarnation bump, spread like any news.
    pub fn set_ready(&mut self, ready: bool) {
        if ready != self.ready {
            self.ready = ready;
            self.changed = true;
            self.bump();
        }
    }

    fn bump(&mut self) {
        if self.inc < MAX_INC {
            self.inc += 1;
        }
        let u = self.about_me();
        self.enqueue(u);
        self.gossip_now = true;
    }

    fn about_me(&self) -> Update {
        Update {
            name: self.me.clone(),
            epoch: self.epoch,
            inc: self.inc,
            state: State::Alive,
            ready: self.ready,
        }
    }

    pub fn is_isolated(&self) -> bool {
        self.isolated_since.is_some()
    }

    /// Speakers counted in elections: every ready member alive or suspect, and this one
    /// while ready, not isolated and not recently declared dead.
    pub fn live(&self, now: Instant) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.ready && matches!(m.state, State::Alive | State::Suspect))
            .map(|(n, _)| n.clone())
            .collect();
        if self.ready && !self.is_isolated() && !self.held(now) {
            out.insert(self.me.clone());
        }
        out
    }

    /// Told it was dead a moment ago: out of elections for a while.
    pub fn held(&self, now: Instant) -> bool {
        self.told_dead
            .is_some_and(|t| now.duration_since(t) < self.timing.dead_hold())
    }

    /// Whether [`Swim::live`] may have changed since the last call (apart from [`Swim::held`]
    /// running out, which depends on time alone). Recomputing it is O(members), so the driver
    /// does it only then (and [`Swim::counts`] once a second).
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    pub fn counts(&self) -> Counts {
        let mut c = Counts {
            alive: 1,
            ..Default::default()
        };
        for m in self.members.values() {
            match m.state {
                State::Alive => c.alive += 1,
                State::Suspect => c.suspect += 1,
                State::Dead | State::Left => c.dead += 1,
            }
        }
        c
    }

    pub fn take_rtts(&mut self) -> Vec<Duration> {
        std::mem::take(&mut self.rtts)
    }

    /// Whether `name` may speak: a Node (or listed peer) other than us.
    pub fn knows(&self, name: &str) -> bool {
        self.members.contains_key(name)
    }

    /// Sets the members: the Nodes (or `--memberlist-peers`) at their addresses. New ones
    /// are presumed alive until probed.
    pub fn set_peers(&mut self, now: Instant, peers: &BTreeMap<String, SocketAddr>) {
        self.changed = true;
        for (name, addr) in peers {
            if *name == self.me {
                continue;
            }
            self.members
                .entry(name.clone())
                .and_modify(|m| m.addr = *addr)
                .or_insert_with(|| Member {
                    addr: *addr,
                    epoch: 0,
                    inc: 0,
                    ready: true,
                    state: State::Alive,
                    changed: now,
                    deadline: None,
                });
        }
        self.members.retain(|n, _| peers.contains_key(n));
        self.queue
            .retain(|q| q.update.name == self.me || peers.contains_key(&q.update.name));
        self.order.retain(|n| peers.contains_key(n));
    }

    fn enqueue(&mut self, update: Update) {
        let n = self.members.len() as f64 + 1.0;
        let left = RETRANSMIT_MULT * ((n + 1.0).log10().ceil().max(1.0) as u32);
        self.queue.retain(|q| q.update.name != update.name);
        self.queue.push(Queued { update, left });
    }

    fn state_of(&self, name: &str) -> Option<Update> {
        let m = self.members.get(name)?;
        Some(Update {
            name: name.into(),
            epoch: m.epoch,
            inc: m.inc,
            state: m.state,
            ready: m.ready,
        })
    }

    /// An envelope for `to` carrying `msg` and as much news as fits, freshest first. News
    /// about the recipient itself goes first when we do not think it alive, so it can refute.
    fn envelope(&mut self, to: &str, msg: Msg) -> Envelope {
        self.seq += 1;
        let mut updates = Vec::new();
        let mut budget = NEWS_BUDGET;
        if let Some(u) = self.state_of(to)
            && u.state != State::Alive
        {
            budget = budget.saturating_sub(u.name.len() + 60);
            updates.push(u);
        }
        self.queue.sort_by_key(|q| std::cmp::Reverse(q.left));
        for q in self.queue.iter_mut() {
            let cost = q.update.name.len() + 60;
            if cost > budget {
                break;
            }
            if updates.iter().any(|u: &Update| u.name == q.update.name) {
                continue;
            }
            budget -= cost;
            q.left = q.left.saturating_sub(1);
            updates.push(q.update.clone());
        }
        self.queue.retain(|q| q.left > 0);
        Envelope {
            from: self.me.clone(),
            epoch: self.epoch,
            inc: self.inc,
            ready: self.ready,
            seq: self.seq,
            ts: self.wall_ms,
            msg,
            updates,
        }
    }

    fn send(&mut self, out: &mut Vec<(SocketAddr, Envelope)>, to: &str, msg: Msg) {
        let Some(addr) = self.members.get(to).map(|m| m.addr) else {
            return;
        };
        let e = self.envelope(to, msg);
        out.push((addr, e));
    }

    fn random_alive(&mut self, k: usize, except: &str) -> Vec<String> {
        let cands: Vec<&String> = self
            .members
            .iter()
            .filter(|(n, m)| *n != except && m.state == State::Alive)
            .map(|(n, _)| n)
            .collect();
        cands
            .choose_multiple(&mut self.rng, k)
            .map(|n| (*n).clone())
            .collect()
    }

    fn probeable(&self) -> usize {
        self.members
            .values()
            .filter(|m| matches!(m.state, State::Alive | State::Suspect))
            .count()
    }

    /// Advances time. Returns what to send.
    pub fn tick(&mut self, now: Instant) -> Vec<(SocketAddr, Envelope)> {
        let mut out = Vec::new();
        self.check_isolation(now);
        let t = self.timing;
        // The probe in flight: indirect at the timeout, suspicion at the interval's end.
        if let Some(p) = &mut self.probe
            && !p.acked
            && !p.indirect
            && now.duration_since(p.sent) >= t.probe_timeout()
        {
            p.indirect = true;
            let (target, id) = (p.target.clone(), p.id);
            for h in self.random_alive(INDIRECT, &target) {
                self.send(
                    &mut out,
                    &h,
                    Msg::PingReq {
                        probe: id,
                        target: target.clone(),
                    },
                );
            }
        }
        if let Some(p) = &self.probe
            && now.duration_since(p.sent) >= t.probe_interval
        {
            let p = self.probe.take().expect("a probe");
            if !p.acked && !self.is_isolated() {
                self.suspect(now, &p.target);
            }
        }
        if self.probe.is_none() && self.next_probe.is_none_or(|at| now >= at) {
            self.next_probe = Some(now + t.probe_interval);
            if let Some(target) = self.next_target() {
                self.probe_ids += 1;
                let id = self.probe_ids;
                self.probe = Some(Probe {
                    target: target.clone(),
                    id,
                    sent: now,
                    indirect: false,
                    acked: false,
                });
                self.send(&mut out, &target, Msg::Ping { probe: id });
            }
        }
        // A random dead member, now and then: a healed partition finds its way back.
        if self.next_dead_probe.is_none_or(|at| now >= at) {
            self.next_dead_probe = Some(now + DEAD_PROBE_EVERY);
            let dead: Vec<String> = self
                .members
                .iter()
                .filter(|(_, m)| m.state == State::Dead)
                .map(|(n, _)| n.clone())
                .collect();
            if let Some(n) = dead.choose(&mut self.rng).cloned() {
                self.probe_ids += 1;
                let id = self.probe_ids;
                self.send(&mut out, &n, Msg::Ping { probe: id });
            }
        }
        // Suspects whose time is up.
        let give_up = self
            .isolated_since
            .is_none_or(|s| now.duration_since(s) >= ISOLATION_GIVE_UP);
        if give_up && self.next_deadline.is_some_and(|d| now >= d) {
            let due: Vec<String> = self
                .members
                .iter()
                .filter(|(_, m)| m.state == State::Suspect && m.deadline.is_some_and(|d| now >= d))
                .map(|(n, _)| n.clone())
                .collect();
            for n in due {
                let m = self.members.get_mut(&n).expect("a member");
                info!(peer = %n, "Speaker dead");
                m.state = State::Dead;
                m.changed = now;
                m.deadline = None;
                let u = self.state_of(&n).expect("a member");
                self.enqueue(u);
                self.gossip_now = true;
                self.changed = true;
            }
            self.next_deadline = self.members.values().filter_map(|m| m.deadline).min();
        }
        // News.
        let periodic = self.next_gossip.is_some_and(|g| now >= g);
        if periodic && !self.gossip_now && !self.urgent() {
            self.next_gossip = None;
        } else if self.gossip_now || periodic {
            self.gossip_now = false;
            self.next_gossip = Some(now + t.gossip_interval());
            for n in self.random_alive(FANOUT, "") {
                if self.queue.is_empty() {
                    break;
                }
                self.send(&mut out, &n, Msg::Gossip);
            }
            if self.queue.is_empty() {
                self.next_gossip = None;
            }
        }
        self.relays
            .retain(|_, r| now.duration_since(r.3) < t.probe_interval * 2);
        out
    }

    /// News worth pushing instead of waiting for the next probe: a suspicion, a death, a
    /// departure, or this speaker's own refutation. Plain "alive" news (a speaker starting,
    /// say) rides on probes only, so a cluster starting at once is not flooded.
    fn urgent(&self) -> bool {
        self.queue
            .iter()
            .any(|q| q.update.state != State::Alive || q.update.name == self.me)
    }

    /// When [`Swim::tick`] next has something to do (O(1): no member is looked at). Waking
    /// only then, instead of every few milliseconds, is most of what a quiet speaker costs.
    pub fn next_wake(&self, now: Instant) -> Instant {
        let t = self.timing;
        let mut at = now + t.probe_interval;
        let mut at_most = |i: Instant| at = at.min(i);
        if self.gossip_now {
            at_most(now);
        }
        match &self.probe {
            Some(p) => {
                if !p.acked && !p.indirect {
                    at_most(p.sent + t.probe_timeout());
                }
                at_most(p.sent + t.probe_interval);
            }
            None => at_most(self.next_probe.unwrap_or(now)),
        }
        at_most(self.next_dead_probe.unwrap_or(now));
        if let Some(g) = self.next_gossip {
            at_most(g);
        }
        // Suspects die only once isolation is given up; isolation starts after a silence.
        let give_up = self.isolated_since.map(|s| s + ISOLATION_GIVE_UP);
        if give_up.is_none_or(|g| now >= g)
            && let Some(d) = self.next_deadline
        {
            at_most(d);
        }
        let silence = self.last_heard.unwrap_or(self.started) + t.isolation_after();
        for i in [give_up, Some(silence)].into_iter().flatten() {
            if i > now {
                at_most(i);
            }
        }
        if let Some(told) = self.told_dead
            && now < told + t.dead_hold()
        {
            at_most(told + t.dead_hold());
        }
        // Never a busy loop, whatever is overdue.
        at.max(now + Duration::from_millis(2))
    }

    fn next_target(&mut self) -> Option<String> {
        loop {
            if self.order.is_empty() {
                self.order = self
                    .members
                    .iter()
                    .filter(|(_, m)| matches!(m.state, State::Alive | State::Suspect))
                    .map(|(n, _)| n.clone())
                    .collect();
                if self.order.is_empty() {
                    return None;
                }
                self.order.shuffle(&mut self.rng);
            }
            let n = self.order.pop()?;
            if self
                .members
                .get(&n)
                .is_some_and(|m| matches!(m.state, State::Alive | State::Suspect))
            {
                return Some(n);
            }
        }
    }

    fn check_isolation(&mut self, now: Instant) {
        let heard = self.last_heard.unwrap_or(self.started);
        let silent = now.duration_since(heard) >= self.timing.isolation_after();
        // probeable() is O(members): only asked when silent.
        if silent && self.probeable() >= 2 {
            if self.isolated_since.is_none() {
                warn!("Heard from no other speaker; not announcing until one answers");
                self.isolated_since = Some(now);
                self.changed = true;
            }
        } else if let Some(since) = self.isolated_since.take() {
            self.changed = true;
            if silent {
                // Nobody left to hear from: we are the survivor, not cut off.
                info!("No other live speaker; announcing alone");
            } else {
                info!("Hearing from other speakers again");
                self.revive_since(now, since);
            }
        }
    }

    /// Makes every member that became suspect or dead since `since` alive again (what we
    /// concluded while cut off is not news), and forgets such news we had queued.
    fn revive_since(&mut self, now: Instant, since: Instant) {
        let mut revived = Vec::new();
        for (n, m) in self.members.iter_mut() {
            if matches!(m.state, State::Suspect | State::Dead) && m.changed >= since {
                m.state = State::Alive;
                m.deadline = None;
                m.changed = now;
                revived.push(n.clone());
                self.changed = true;
            }
        }
        self.queue.retain(|q| !revived.contains(&q.update.name));
        if !revived.is_empty() {
            debug!(?revived, "Revived what was concluded while isolated");
        }
    }

    /// After this speaker's own link was down: every peer counts as alive again until it
    /// fails to answer, and we say we are here.
    pub fn rejoin(&mut self, now: Instant) {
        self.revive_since(now, self.started);
        self.last_heard = Some(now);
        self.isolated_since = None;
        self.changed = true;
        self.bump();
    }

    fn suspect(&mut self, now: Instant, name: &str) {
        let Some(m) = self.members.get_mut(name) else {
            return;
        };
        if m.state != State::Alive {
            return;
        }
        debug!(peer = %name, "Speaker suspect");
        m.state = State::Suspect;
        m.changed = now;
        let deadline = now + self.timing.suspect_timeout;
        m.deadline = Some(deadline);
        self.next_deadline = Some(self.next_deadline.map_or(deadline, |d| d.min(deadline)));
        let u = self.state_of(name).expect("a member");
        self.enqueue(u);
        self.gossip_now = true;
    }

    /// Merges one piece of news. Returns whether it changed our view.
    fn merge(&mut self, now: Instant, u: &Update) -> bool {
        if u.inc > MAX_INC || u.epoch > self.wall_ms + wire::MAX_SKEW.as_millis() as u64 {
            return false;
        }
        if u.name == self.me {
            if u.epoch == self.epoch && u.state != State::Alive && u.inc >= self.inc {
                if u.inc >= MAX_INC {
                    return false;
                }
                if matches!(u.state, State::Dead | State::Left) {
                    warn!("Declared dead by another speaker; refuting");
                    self.told_dead = Some(now);
                    self.changed = true;
                } else {
                    debug!("Suspected; refuting");
                }
                self.inc = u.inc;
                self.bump();
            } else if u.epoch < self.epoch && u.state != State::Alive {
                // Said of an earlier life of ours, or by someone who never heard from us
                // (epoch 0): our epoch supersedes it, it only has to reach them.
                if matches!(u.state, State::Dead | State::Left) {
                    self.told_dead = Some(now);
                    self.changed = true;
                }
                if !self.queue.iter().any(|q| q.update.name == self.me) {
                    let me = self.about_me();
                    self.enqueue(me);
                    self.gossip_now = true;
                }
            }
            return false;
        }
        let suspect_timeout = self.timing.suspect_timeout;
        let Some(m) = self.members.get_mut(&u.name) else {
            return false;
        };
        let newer = match u.epoch.cmp(&m.epoch) {
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Equal => match u.state {
                State::Alive => u.inc > m.inc,
                State::Suspect => u.inc > m.inc || (u.inc == m.inc && m.state == State::Alive),
                State::Dead | State::Left => {
                    u.inc > m.inc
                        || (u.inc == m.inc && matches!(m.state, State::Alive | State::Suspect))
                }
            },
        };
        if !newer {
            return false;
        }
        let was = m.state;
        let counted =
            |state: State, ready: bool| ready && matches!(state, State::Alive | State::Suspect);
        if counted(was, m.ready) != counted(u.state, u.ready) {
            self.changed = true;
        }
        let restarted = u.epoch != m.epoch && m.epoch != 0;
        m.epoch = u.epoch;
        m.inc = u.inc;
        m.ready = u.ready;
        m.state = u.state;
        m.changed = now;
        m.deadline = (u.state == State::Suspect).then(|| now + suspect_timeout);
        if let Some(d) = m.deadline {
            self.next_deadline = Some(self.next_deadline.map_or(d, |n| n.min(d)));
        }
        match (was, u.state) {
            (State::Dead | State::Left, State::Alive) => info!(peer = %u.name, "Speaker alive"),
            (_, State::Dead) if was != State::Dead => info!(peer = %u.name, "Speaker dead"),
            (_, State::Left) if was != State::Left => info!(peer = %u.name, "Speaker left"),
            _ if restarted => info!(peer = %u.name, "Speaker restarted"),
            _ => {}
        }
        if matches!(u.state, State::Dead | State::Left) {
            self.gossip_now = true;
        }
        self.enqueue(u.clone());
        true
    }

    /// Handles one authenticated envelope from a known sender at `src`. Returns what to send.
    pub fn handle(
        &mut self,
        now: Instant,
        src: SocketAddr,
        env: Envelope,
    ) -> Vec<(SocketAddr, Envelope)> {
        let mut out = Vec::new();
        if env.from == self.me || !self.knows(&env.from) {
            return out;
        }
        self.last_heard = Some(now);
        self.check_isolation(now);
        let first_contact = self
            .members
            .get(&env.from)
            .is_some_and(|m| m.epoch != env.epoch);
        // What the envelope says about its sender, first hand.
        let state = if env.msg == Msg::Leave {
            State::Left
        } else {
            State::Alive
        };
        self.merge(
            now,
            &Update {
                name: env.from.clone(),
                epoch: env.epoch,
                inc: env.inc,
                state,
                ready: env.ready,
            },
        );
        for u in &env.updates {
            if u.name == self.me || self.knows(&u.name) {
                self.merge(now, u);
            }
        }
        // A speaker that just started gets the member list.
        if first_contact && env.seq < SYNC_BELOW_SEQ && env.msg != Msg::Leave {
            self.sync_to(&mut out, &env.from, src);
        }
        match env.msg {
            Msg::Ping { probe } => {
                let e = self.envelope(&env.from, Msg::Ack { probe });
                out.push((src, e));
            }
            Msg::Ack { probe } => {
                if let Some(p) = &mut self.probe
                    && p.id == probe
                    && p.target == env.from
                {
                    if !p.acked && !p.indirect {
                        self.rtts.push(now.duration_since(p.sent));
                    }
                    p.acked = true;
                } else if let Some((req, req_probe, target, _)) = self.relays.remove(&probe)
                    && target == env.from
                {
                    self.send(
                        &mut out,
                        &req,
                        Msg::IndirectAck {
                            probe: req_probe,
                            target,
                        },
                    );
                }
            }
            Msg::PingReq { probe, target } => {
                if self.knows(&target) {
                    self.probe_ids += 1;
                    let id = self.probe_ids;
                    self.relays
                        .insert(id, (env.from.clone(), probe, target.clone(), now));
                    self.send(&mut out, &target, Msg::Ping { probe: id });
                }
            }
            Msg::IndirectAck { probe, target } => {
                if let Some(p) = &mut self.probe
                    && p.id == probe
                    && p.target == target
                {
                    p.acked = true;
                }
            }
            Msg::Gossip | Msg::Sync | Msg::Leave => {}
        }
        out
    }

    /// What a starting speaker cannot presume about the members, to `to`, in as many datagrams
    /// as it takes.
    ///
    /// A starting speaker presumes every member alive and ready, so only the others need
    /// saying: the suspect, dead, departed and not ready. In a healthy cluster that is one
    /// small datagram, however large the cluster; a whole cluster starting at once would
    /// otherwise send every member the whole list several times over.
    fn sync_to(&mut self, out: &mut Vec<(SocketAddr, Envelope)>, to: &str, addr: SocketAddr) {
        let mut all: Vec<Update> = self
            .members
            .iter()
            .filter(|(n, m)| *n != to && !(m.state == State::Alive && m.ready))
            .filter_map(|(n, _)| self.state_of(n))
            .collect();
        all.push(self.about_me());
        let mut chunk = Vec::new();
        let mut size = 0;
        for u in all {
            let cost = u.name.len() + 60;
            if size + cost > NEWS_BUDGET && !chunk.is_empty() {
                out.push((addr, self.sync_envelope(std::mem::take(&mut chunk))));
                size = 0;
            }
            size += cost;
            chunk.push(u);
        }
        if !chunk.is_empty() {
            out.push((addr, self.sync_envelope(chunk)));
        }
    }

    fn sync_envelope(&mut self, updates: Vec<Update>) -> Envelope {
        self.seq += 1;
        Envelope {
            from: self.me.clone(),
            epoch: self.epoch,
            inc: self.inc,
            ready: self.ready,
            seq: self.seq,
            ts: self.wall_ms,
            msg: Msg::Sync,
            updates,
        }
    }

    /// The goodbye: to a few members, who spread it.
    pub fn leave(&mut self) -> Vec<(SocketAddr, Envelope)> {
        let mut out = Vec::new();
        let to = self.random_alive(FANOUT * 2, "");
        for n in to {
            self.send(&mut out, &n, Msg::Leave);
        }
        out
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// The failure detector's metrics (registered by the speaker).
#[derive(Clone)]
pub struct Metrics {
    pub alive: Gauge,
    pub suspect: Gauge,
    pub dead: Gauge,
    pub sent: Counter,
    pub received: Counter,
    pub rejected: Family<ReasonLabels, Counter>,
    pub rtt: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            alive: Gauge::default(),
            suspect: Gauge::default(),
            dead: Gauge::default(),
            sent: Counter::default(),
            received: Counter::default(),
            rejected: Family::default(),
            rtt: Histogram::new([
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
            ]),
        }
    }
}

impl Metrics {
    pub fn register(&self, r: &mut prometheus_client::registry::Registry) {
        r.register(
            "members_alive",
            "Speakers the failure detector considers alive, this one included",
            self.alive.clone(),
        );
        r.register(
            "members_suspect",
            "Speakers suspected of having failed",
            self.suspect.clone(),
        );
        r.register(
            "members_dead",
            "Speakers declared dead or gone (Nodes without a live speaker)",
            self.dead.clone(),
        );
        r.register(
            "membership_datagrams_sent",
            "Membership datagrams sent",
            self.sent.clone(),
        );
        r.register(
            "membership_datagrams_received",
            "Membership datagrams accepted",
            self.received.clone(),
        );
        r.register(
            "membership_datagrams_rejected",
            "Membership datagrams dropped, by reason",
            self.rejected.clone(),
        );
        r.register(
            "membership_probe_rtt_seconds",
            "Round trip of direct probes",
            self.rtt.clone(),
        );
    }

    fn reject(&self, r: Reject) {
        self.rejected
            .get_or_create(&ReasonLabels {
                reason: r.as_str().into(),
            })
            .inc();
    }
}

/// Inputs to the UDP driver.
pub enum Control {
    Peers(BTreeMap<String, SocketAddr>),
    Ready(bool),
    Rejoin,
}

/// Runs the detector on `sock` until `shutdown`; publishes the live set on `live`. `auth`
/// may change (a rotated key file) while it runs.
pub async fn run(
    sock: UdpSocket,
    mut swim: Swim,
    auth: watch::Receiver<Auth>,
    mut control: tokio::sync::mpsc::UnboundedReceiver<Control>,
    live: watch::Sender<BTreeSet<String>>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut wake = Instant::now();
    let mut buf = vec![0u8; wire::MAX_RECEIVED + 1];
    let mut guard = ReplayGuard::default();
    let mut control_open = true;
    let mut was_held = false;
    let mut next_counts = Instant::now();
    let send = |sock: &UdpSocket, out: Vec<(SocketAddr, Envelope)>| {
        let a = auth.borrow().clone();
        for (to, env) in out {
            let Some(b) = wire::seal(&a, &env) else {
                debug!(%to, "Membership datagram too large; dropped");
                continue;
            };
            match sock.try_send_to(&b, to) {
                Ok(_) => {
                    metrics.sent.inc();
                }
                Err(e) => debug!(%to, error = %e, "Cannot send to speaker"),
            }
        }
    };
    loop {
        swim.wall_ms = wire::wall_ms();
        tokio::select! {
            _ = tokio::time::sleep_until(wake.into()) => {
                let out = swim.tick(Instant::now());
                send(&sock, out);
            }
            r = sock.recv_from(&mut buf) => match r {
                Ok((n, src)) => {
                    let now = Instant::now();
                    let opened = {
                        let a = auth.borrow();
                        wire::open(&a, &buf[..n])
                    };
                    let checked = opened.and_then(|env| {
                        if !swim.knows(&env.from) {
                            return Err(Reject::UnknownSender);
                        }
                        guard.check(&env, now, swim.wall_ms).map(|()| env)
                    });
                    match checked {
                        Ok(env) => {
                            metrics.received.inc();
                            let out = swim.handle(now, src, env);
                            send(&sock, out);
                        }
                        Err(r) => {
                            debug!(%src, reason = r.as_str(), "Membership datagram rejected");
                            metrics.reject(r);
                        }
                    }
                }
                Err(e) => {
                    warn!(error = %e, "Memberlist socket error");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            c = control.recv(), if control_open => match c {
                Some(Control::Peers(p)) => {
                    swim.set_peers(Instant::now(), &p);
                    guard.retain(|n| p.contains_key(n));
                }
                Some(Control::Ready(r)) => swim.set_ready(r),
                Some(Control::Rejoin) => swim.rejoin(Instant::now()),
                None => control_open = false,
            },
            _ = shutdown.changed() => {
                let bye = swim.leave();
                send(&sock, bye.clone());
                swim.set_ready(false);
                live.send_replace(BTreeSet::new());
                return;
            }
        }
        for d in swim.take_rtts() {
            metrics.rtt.observe(d.as_secs_f64());
        }
        let now = Instant::now();
        wake = swim.next_wake(now);
        if now >= next_counts {
            next_counts = now + Duration::from_secs(1);
            let c = swim.counts();
            metrics.alive.set(c.alive as i64);
            metrics.suspect.set(c.suspect as i64);
            metrics.dead.set(c.dead as i64);
        }
        let held = swim.held(now);
        if !swim.take_changed() && held == was_held {
            continue;
        }
        was_held = held;
        let now_live = swim.live(now);
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
        suspect_timeout: Duration::from_millis(500),
    };

    fn addr(i: usize) -> SocketAddr {
        SocketAddr::from(([10, 99, (i / 250) as u8, (i % 250) as u8 + 1], 7946))
    }

    fn index(a: SocketAddr) -> usize {
        match a {
            SocketAddr::V4(v) => {
                v.ip().octets()[2] as usize * 250 + v.ip().octets()[3] as usize - 1
            }
            SocketAddr::V6(_) => unreachable!(),
        }
    }

    /// Speakers on a simulated network (instant delivery) where `cut` pairs cannot talk.
    struct Net {
        nodes: Vec<Swim>,
        down: BTreeSet<usize>,
        cut: BTreeSet<(usize, usize)>,
        now: Instant,
        sent: Vec<u64>,
    }

    impl Net {
        fn new(n: usize) -> Net {
            let now = Instant::now();
            let peers: BTreeMap<String, SocketAddr> =
                (0..n).map(|i| (format!("n{i}"), addr(i))).collect();
            let nodes = (0..n)
                .map(|i| {
                    let mut s = Swim::new(&format!("n{i}"), 1000 + i as u64, T, now);
                    s.set_peers(now, &peers);
                    s.set_ready(true);
                    s
                })
                .collect();
            Net {
                nodes,
                down: BTreeSet::new(),
                cut: BTreeSet::new(),
                now,
                sent: vec![0; n],
            }
        }

        fn deliver(&mut self, from: usize, out: Vec<(SocketAddr, Envelope)>) {
            let mut queue: Vec<(usize, SocketAddr, Envelope)> =
                out.into_iter().map(|(a, m)| (from, a, m)).collect();
            while let Some((src, to, m)) = queue.pop() {
                self.sent[src] += 1;
                let dst = index(to);
                if self.down.contains(&dst)
                    || self.down.contains(&src)
                    || self.cut.contains(&(src.min(dst), src.max(dst)))
                {
                    continue;
                }
                let now = self.now;
                let replies = self.nodes[dst].handle(now, addr(src), m);
                queue.extend(replies.into_iter().map(|(a, m)| (dst, a, m)));
            }
        }

        fn step(&mut self) {
            self.now += Duration::from_millis(10);
            for i in 0..self.nodes.len() {
                if self.down.contains(&i) {
                    continue;
                }
                let now = self.now;
                let out = self.nodes[i].tick(now);
                self.deliver(i, out);
            }
        }

        fn run_for(&mut self, d: Duration) {
            let end = self.now + d;
            while self.now < end {
                self.step();
            }
        }

        fn live(&self, i: usize) -> Vec<String> {
            self.nodes[i].live(self.now).into_iter().collect()
        }

        fn names(v: &[usize]) -> Vec<String> {
            v.iter().map(|i| format!("n{i}")).collect()
        }

        /// Restarts node i as a new process (new epoch), knowing nobody's state.
        fn restart(&mut self, i: usize) {
            let n = self.nodes.len();
            let peers: BTreeMap<String, SocketAddr> =
                (0..n).map(|i| (format!("n{i}"), addr(i))).collect();
            let epoch = self.nodes[i].epoch + 10_000;
            let mut s = Swim::new(&format!("n{i}"), epoch, T, self.now);
            s.set_peers(self.now, &peers);
            s.set_ready(true);
            self.nodes[i] = s;
            self.down.remove(&i);
        }
    }

    #[test]
    fn everyone_sees_everyone() {
        let mut net = Net::new(3);
        net.run_for(Duration::from_secs(2));
        for i in 0..3 {
            assert_eq!(net.live(i), Net::names(&[0, 1, 2]));
        }
    }

    #[test]
    fn a_dead_speaker_is_agreed_dead_by_everyone_and_not_before_the_suspect_timeout() {
        let mut net = Net::new(5);
        net.run_for(Duration::from_secs(2));
        net.down.insert(2);
        let t0 = net.now;
        let mut first_dead = None;
        let mut all_dead = None;
        while net.now < t0 + Duration::from_secs(5) {
            net.step();
            let dead: Vec<bool> = (0..5)
                .filter(|i| *i != 2)
                .map(|i| !net.live(i).contains(&"n2".to_string()))
                .collect();
            if first_dead.is_none() && dead.iter().any(|d| *d) {
                first_dead = Some(net.now - t0);
            }
            if dead.iter().all(|d| *d) {
                all_dead = Some(net.now - t0);
                break;
            }
        }
        let first = first_dead.expect("someone declares n2 dead");
        let all = all_dead.expect("everyone agrees n2 is dead");
        assert!(first >= T.suspect_timeout, "dead after {first:?}");
        assert!(all < Duration::from_secs(2), "agreed after {all:?}");
        for i in [0, 1, 3, 4] {
            assert_eq!(net.live(i), Net::names(&[0, 1, 3, 4]));
        }
        // It comes back as a new process: alive everywhere again.
        net.restart(2);
        net.run_for(Duration::from_secs(2));
        for i in 0..5 {
            assert_eq!(net.live(i), Net::names(&[0, 1, 2, 3, 4]), "view of n{i}");
        }
    }

    #[test]
    fn a_partial_partition_is_bridged_and_nobody_dies() {
        let mut net = Net::new(3);
        net.run_for(Duration::from_secs(1));
        net.cut.insert((0, 1));
        for _ in 0..1500 {
            net.step();
            for i in 0..3 {
                assert_eq!(net.live(i), Net::names(&[0, 1, 2]), "view of n{i}");
            }
        }
        net.cut.clear();
        net.run_for(Duration::from_secs(1));
        for i in 0..3 {
            assert_eq!(net.live(i), Net::names(&[0, 1, 2]));
        }
    }

    #[test]
    fn a_cut_off_speaker_withdraws_before_anyone_declares_it_dead_and_comes_back_cleanly() {
        let mut net = Net::new(4);
        net.run_for(Duration::from_secs(1));
        for j in [0, 1, 2] {
            net.cut.insert((j, 3));
        }
        // Until the others declare n3 dead, n3 must have withdrawn itself.
        let t0 = net.now;
        let mut withdrew = None;
        loop {
            net.step();
            let others_see = (0..3).any(|i| net.live(i).contains(&"n3".to_string()));
            let self_in = net.live(3).contains(&"n3".to_string());
            if withdrew.is_none() && !self_in {
                withdrew = Some(net.now - t0);
            }
            if !others_see {
                assert!(!self_in, "n3 still counts itself when the others drop it");
                break;
            }
            assert!(
                net.now - t0 < Duration::from_secs(5),
                "n3 never declared dead"
            );
        }
        assert!(withdrew.is_some());
        // While isolated it declares nobody dead.
        net.run_for(Duration::from_secs(2));
        assert!(net.nodes[3].is_isolated());
        assert_eq!(net.nodes[3].counts().dead, 0);
        // Healed: one view everywhere, nobody falsely dead.
        net.cut.clear();
        net.run_for(Duration::from_secs(3));
        for i in 0..4 {
            assert_eq!(net.live(i), Net::names(&[0, 1, 2, 3]), "view of n{i}");
        }
    }

    #[test]
    fn suspicion_is_refuted_and_leave_is_immediate() {
        let mut net = Net::new(3);
        net.run_for(Duration::from_secs(1));
        // n0 alone cannot reach n2 for a moment (no relay either): n2 refutes.
        let before = net.nodes[2].inc;
        net.cut.insert((0, 2));
        net.cut.insert((1, 2));
        net.run_for(Duration::from_millis(350));
        net.cut.clear();
        net.run_for(Duration::from_secs(1));
        for i in 0..3 {
            assert_eq!(net.live(i), Net::names(&[0, 1, 2]));
        }
        assert!(net.nodes[2].inc >= before, "incarnation only grows");
        let bye = net.nodes[2].leave();
        net.deliver(2, bye);
        net.down.insert(2);
        net.run_for(Duration::from_millis(50));
        assert_eq!(net.live(0), Net::names(&[0, 1]));
        assert_eq!(net.live(1), Net::names(&[0, 1]));
    }

    #[test]
    fn a_speaker_that_is_not_ready_does_not_count_and_strangers_are_ignored() {
        let mut net = Net::new(2);
        net.nodes[1].set_ready(false);
        net.run_for(Duration::from_millis(500));
        assert_eq!(net.live(0), ["n0"]);
        assert_eq!(net.live(1), ["n0"]);
        // News about a name that is not a Node, and a datagram from one: no effect.
        let now = net.now;
        let mut e = net.nodes[1].envelope("n0", Msg::Gossip);
        e.updates.push(Update {
            name: "intruder".into(),
            epoch: 5,
            inc: 0,
            state: State::Alive,
            ready: true,
        });
        net.nodes[0].handle(now, addr(1), e.clone());
        e.from = "intruder".into();
        assert!(net.nodes[0].handle(now, addr(9), e).is_empty());
        assert!(!net.nodes[0].knows("intruder"));
    }

    /// Real UDP on loopback, signed datagrams, the real driver: five members converge, agree
    /// on a killed one, and ignore unsigned datagrams.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn members_over_loopback_udp_agree_on_a_death() {
        let key = "membership-test-key-0123456789abcdef";
        let auth = Auth::Keys(wire::Keyring::parse(key, "test").unwrap());
        let n = 5;
        let base = 20_000 + (std::process::id() % 20_000) as u16;
        let addr = |i: usize| SocketAddr::from(([127, 0, 0, 1], base + i as u16));
        let peers: BTreeMap<String, SocketAddr> =
            (0..n).map(|i| (format!("m{i}"), addr(i))).collect();
        let mut tasks = Vec::new();
        let mut lives = Vec::new();
        let mut metrics = Vec::new();
        let (stop_tx, stop_rx) = watch::channel(false);
        for i in 0..n {
            let sock = UdpSocket::bind(addr(i)).await.unwrap();
            let mut s = Swim::new(&format!("m{i}"), wire::wall_ms(), T, Instant::now());
            s.set_peers(Instant::now(), &peers);
            s.set_ready(true);
            let (_a, auth_rx) = watch::channel(auth.clone());
            let (_c, ctl_rx) = tokio::sync::mpsc::unbounded_channel();
            let (live_tx, live_rx) = watch::channel(BTreeSet::new());
            let m = Arc::new(Metrics::default());
            metrics.push(m.clone());
            lives.push(live_rx);
            tasks.push(tokio::spawn(run(
                sock,
                s,
                auth_rx,
                ctl_rx,
                live_tx,
                m,
                stop_rx.clone(),
            )));
        }
        let all: BTreeSet<String> = peers.keys().cloned().collect();
        let wait = |lives: Vec<watch::Receiver<BTreeSet<String>>>, want: BTreeSet<String>| async move {
            for _ in 0..500 {
                if lives.iter().all(|l| *l.borrow() == want) {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            false
        };
        assert!(
            wait(lives.clone(), all.clone()).await,
            "members never converged"
        );
        // Unsigned datagrams claiming m0 left: rejected, no effect.
        let forger = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut e = Swim::new("m0", wire::wall_ms(), T, Instant::now()).envelope("m1", Msg::Leave);
        e.inc = MAX_INC;
        let d = wire::seal(&Auth::Insecure, &e).unwrap();
        for i in 1..n {
            forger.send_to(&d, addr(i)).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rejected: u64 = metrics
            .iter()
            .map(|m| {
                m.rejected
                    .get_or_create(&ReasonLabels {
                        reason: "mac".into(),
                    })
                    .get()
            })
            .sum();
        assert_eq!(rejected, (n - 1) as u64);
        assert!(
            lives.iter().all(|l| *l.borrow() == all),
            "a forgery had an effect"
        );
        // m4 killed: everyone else agrees it is dead.
        tasks.pop().unwrap().abort();
        let rest: BTreeSet<String> = (0..n - 1).map(|i| format!("m{i}")).collect();
        assert!(
            wait(lives[..n - 1].to_vec(), rest).await,
            "no agreement on the dead member"
        );
        stop_tx.send_replace(true);
        for t in tasks {
            t.await.unwrap();
        }
    }

    #[test]
    fn per_member_traffic_does_not_grow_with_the_cluster() {
        let rate = |n: usize| {
            let mut net = Net::new(n);
            net.run_for(Duration::from_secs(3));
            let before: u64 = net.sent.iter().sum();
            net.run_for(Duration::from_secs(5));
            let after: u64 = net.sent.iter().sum();
            (after - before) as f64 / 5.0 / n as f64
        };
        let (small, large) = (rate(3), rate(60));
        assert!(
            large <= small * 1.5,
            "3 members: {small}/s each; 60: {large}/s"
        );
    }

    /// 300 speakers starting at once (simulated network, simulated time): every piece of
    /// start-up news is spread and forgotten, nobody is suspected, and the steady traffic
    /// per speaker is what it is at 3.
    #[test]
    fn three_hundred_speakers_starting_at_once_settle() {
        let n = 300;
        let mut net = Net::new(n);
        net.run_for(Duration::from_secs(10));
        let queued: usize = net.nodes.iter().map(|s| s.queue.len()).sum();
        assert_eq!(queued, 0, "news still queued after 10 s");
        for (i, s) in net.nodes.iter().enumerate() {
            let c = s.counts();
            assert_eq!((c.alive, c.suspect, c.dead), (n, 0, 0), "view of n{i}");
        }
        let rate = |net: &mut Net| {
            let before: u64 = net.sent.iter().sum();
            net.run_for(Duration::from_secs(2));
            (net.sent.iter().sum::<u64>() - before) as f64 / 2.0 / net.nodes.len() as f64
        };
        let mut small = Net::new(3);
        small.run_for(Duration::from_secs(2));
        let (r3, r300) = (rate(&mut small), rate(&mut net));
        assert!(r300 <= r3 * 1.5, "3 speakers: {r3}/s each; 300: {r300}/s");
    }
}
