//! The state machine in a simulated network, and the driver over loopback UDP.

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
        SocketAddr::V4(v) => v.ip().octets()[2] as usize * 250 + v.ip().octets()[3] as usize - 1,
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
    let peers: BTreeMap<String, SocketAddr> = (0..n).map(|i| (format!("m{i}"), addr(i))).collect();
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
