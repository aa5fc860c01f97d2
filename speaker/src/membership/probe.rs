//! Probe scheduling and failure detection: which member is probed when, indirect probes,
//! suspicion, isolation (local health), and when the driver must wake next.

use super::*;

impl Swim {
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
    pub(super) fn urgent(&self) -> bool {
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

    pub(super) fn next_target(&mut self) -> Option<String> {
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

    pub(super) fn check_isolation(&mut self, now: Instant) {
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
    pub(super) fn revive_since(&mut self, now: Instant, since: Instant) {
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

    pub(super) fn suspect(&mut self, now: Instant, name: &str) {
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
}
