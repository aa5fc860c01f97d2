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

mod driver;
mod probe;
#[cfg(test)]
mod tests;

pub use driver::{Control, Metrics, ReasonLabels, run};

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
