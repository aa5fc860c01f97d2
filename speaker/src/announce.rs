//! Announcing VIPs: what the packet threads answer for, gratuitous ARP / unsolicited NA
//! rounds on takeover, multicast membership for NDP, the [`report`](crate::report)s and the
//! `NodeAssigned` event.

use crate::metrics::SpeakerMetrics;
use crate::packet::Link;
use crate::{SpeakerArgs, election, frames, report, view};
use berth_api::names::reasons::NODE_ASSIGNED;
use k8s_openapi::api::core::v1::Service;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{info, warn};

/// What the packet threads consult: interface → addresses announced there now.
pub(crate) type Announced = Arc<RwLock<HashMap<String, HashSet<IpAddr>>>>;

pub(crate) const ROUND_GAP: Duration = Duration::from_millis(1100);

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

pub(crate) struct Announcer {
    pub(crate) me: String,
    pub(crate) links: BTreeMap<String, Arc<Link>>,
    pub(crate) announced: Announced,
    /// VIP → interfaces announced on now.
    pub(crate) current: BTreeMap<IpAddr, BTreeSet<String>>,
    /// (VIP, interface) → (rounds left, next round at).
    pub(crate) rounds: BTreeMap<(IpAddr, String), (u32, Instant)>,
    pub(crate) periodic_at: Instant,
    /// (Service, VIP) whose `NodeAssigned` event was published since we took the VIP.
    pub(crate) told: HashSet<(String, String)>,
    /// What we announce, per Service, for [`report`].
    pub(crate) reports: watch::Sender<report::Reports>,
    pub(crate) peers: BTreeMap<String, SocketAddr>,
    /// The previous election's winners; None before the first one (or after a link flap).
    pub(crate) prev: Option<BTreeMap<IpAddr, String>>,
    /// VIPs won from a winner that may still be announcing: since when.
    pub(crate) holding: BTreeMap<IpAddr, Instant>,
    /// Carrier of each link at the last look.
    pub(crate) link_up: BTreeMap<String, bool>,
    pub(crate) m: Arc<SpeakerMetrics>,
    pub(crate) recorder: Recorder,
    pub(crate) args: SpeakerArgs,
}

impl Announcer {
    pub(crate) fn publish(&self) {
        let mut map: HashMap<String, HashSet<IpAddr>> = HashMap::new();
        for (ip, ifs) in &self.current {
            for i in ifs {
                map.entry(i.clone()).or_default().insert(*ip);
            }
        }
        *self.announced.write().unwrap_or_else(|e| e.into_inner()) = map;
        self.m.announced.set(self.current.len() as i64);
    }

    pub(crate) fn set_multicast(&self, ip: IpAddr, ifs: &BTreeSet<String>, join: bool) {
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
    pub(crate) fn links_recovered(&mut self) -> bool {
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
    pub(crate) fn handover_delay(&self) -> Duration {
        self.args.probe_interval * 3
    }

    pub(crate) fn apply(
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
    pub(crate) fn gratuitous_due(&mut self) {
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

    pub(crate) fn release_all(&mut self) {
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
pub(crate) async fn tell(recorder: Recorder, svc: Service, note: String) {
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
