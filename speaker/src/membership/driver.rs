//! The UDP driver of [`Swim`]: authentication, replay checks, timers and metrics.

use super::*;

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
