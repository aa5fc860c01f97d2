//! The speakers' membership protocol alone, at scale: N members in one process, each on its
//! own loopback address (127.77.x.y:7946) with real UDP sockets, HMAC-signed datagrams and the
//! speaker's own driver (`berth_speaker::membership::run`).
//!
//! `cargo bench -p berth-speaker --bench membership [-- --sizes 3,30,300 --kills N --window-s N
//! --settle-s N --stagger-ms N]`
//!
//! For each size: members start `--stagger-ms` apart (0: at once, the hardest case); once
//! every member has counted every member for 3 s on end, and `--settle-s`
//! more, datagrams sent per member per second in a quiet window, then `--kills`
//! times one random member is killed (its task aborted, as SIGKILL: no goodbye) and the time
//! until every other member has it out of its live set is measured (median and p99 over the
//! kills, and over every member's own detection); the member restarts (new epoch) and the
//! next kill waits until everyone counts it again. The process's CPU time is printed too: all
//! members share this process, so a build without optimisations runs out of CPU long before
//! the protocol does (300 members need more than two cores of a debug build; see README).

use berth_speaker::membership::{self, Control, Metrics, ReasonLabels, Swim, Timing};
use berth_speaker::wire::{self, Auth, Keyring};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

struct Args {
    sizes: Vec<usize>,
    kills: usize,
    window: Duration,
    settle: Duration,
    stagger: Duration,
}

fn args() -> Args {
    let mut a = Args {
        sizes: vec![3, 30, 300],
        kills: 10,
        window: Duration::from_secs(10),
        settle: Duration::from_secs(10),
        stagger: Duration::ZERO,
    };
    let v: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < v.len() {
        let next = v.get(i + 1).cloned().unwrap_or_default();
        match v[i].as_str() {
            "--sizes" => {
                a.sizes = next
                    .split(',')
                    .map(|s| s.parse().expect("--sizes N,N"))
                    .collect();
                i += 1;
            }
            "--kills" => {
                a.kills = next.parse().expect("--kills N");
                i += 1;
            }
            "--stagger-ms" => {
                a.stagger = Duration::from_millis(next.parse().expect("--stagger-ms N"));
                i += 1;
            }
            "--settle-s" => {
                a.settle = Duration::from_secs(next.parse().expect("--settle-s N"));
                i += 1;
            }
            "--window-s" => {
                a.window = Duration::from_secs(next.parse().expect("--window-s N"));
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    a
}

const TIMING: Timing = Timing {
    probe_interval: Duration::from_millis(200),
    suspect_timeout: Duration::from_millis(400),
};

fn addr(i: usize) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(127, 77, (i / 250) as u8, (i % 250) as u8 + 1)),
        7946,
    )
}

struct Member {
    task: tokio::task::JoinHandle<()>,
    live: watch::Receiver<BTreeSet<String>>,
    metrics: Arc<Metrics>,
    _stop: watch::Sender<bool>,
}

async fn start(i: usize, peers: &BTreeMap<String, SocketAddr>, auth: &Auth) -> Member {
    let name = format!("m{i}");
    let sock = tokio::net::UdpSocket::bind(addr(i))
        .await
        .expect("bind a loopback address");
    let mut swim = Swim::new(&name, wire::wall_ms(), TIMING, Instant::now());
    swim.set_peers(Instant::now(), peers);
    swim.set_ready(true);
    let (_, auth_rx) = watch::channel(auth.clone());
    let (_, ctl_rx) = mpsc::unbounded_channel::<Control>();
    let (live_tx, live) = watch::channel(BTreeSet::new());
    let metrics = Arc::new(Metrics::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(membership::run(
        sock,
        swim,
        auth_rx,
        ctl_rx,
        live_tx,
        metrics.clone(),
        stop_rx,
    ));
    Member {
        task,
        live,
        metrics,
        _stop: stop_tx,
    }
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

/// CPU time (user + system) this process has used, from /proc (USER_HZ is 100 on Linux).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which ends with ')'): utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Waits until `f` holds for every running member; says every 5 s how far it got.
async fn wait_all(
    members: &[Option<Member>],
    what: &str,
    f: impl Fn(&BTreeSet<String>) -> bool,
) -> Duration {
    let t0 = Instant::now();
    let c0 = cpu_time();
    let mut said = Instant::now();
    loop {
        let done = members
            .iter()
            .flatten()
            .filter(|m| f(&m.live.borrow()))
            .count();
        let running = members.iter().flatten().count();
        if done == running {
            return t0.elapsed();
        }
        if said.elapsed() >= Duration::from_secs(5) {
            said = Instant::now();
            let sizes: Vec<usize> = members
                .iter()
                .flatten()
                .map(|m| m.live.borrow().len())
                .collect();
            let ms: Vec<&Member> = members.iter().flatten().collect();
            let suspect: i64 = ms.iter().map(|m| m.metrics.suspect.get()).sum();
            let dead: i64 = ms.iter().map(|m| m.metrics.dead.get()).sum();
            let sent: u64 = ms.iter().map(|m| m.metrics.sent.get()).sum();
            let recv: u64 = ms.iter().map(|m| m.metrics.received.get()).sum();
            let mut rejected = BTreeMap::<String, u64>::new();
            for m in &ms {
                for r in [
                    "size",
                    "mac",
                    "malformed",
                    "unknown_sender",
                    "stale",
                    "replay",
                    "bounds",
                ] {
                    let l = ReasonLabels { reason: r.into() };
                    let c = m.metrics.rejected.get_or_create(&l).get();
                    if c > 0 {
                        *rejected.entry(r.into()).or_default() += c;
                    }
                }
            }
            eprintln!(
                "  waiting for {what}: {done}/{running} after {:.1?}, live-set sizes {}..{}, suspect {suspect}, dead {dead}, sent {sent}, received {recv}, rejected {rejected:?}, CPU {:.0}%",
                t0.elapsed(),
                sizes.iter().min().unwrap_or(&0),
                sizes.iter().max().unwrap_or(&0),
                (cpu_time() - c0).as_secs_f64() / t0.elapsed().as_secs_f64() * 100.0
            );
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn run_size(n: usize, a: &Args, auth: &Auth) {
    let peers: BTreeMap<String, SocketAddr> = (0..n).map(|i| (format!("m{i}"), addr(i))).collect();
    let mut members: Vec<Option<Member>> = Vec::new();
    for i in 0..n {
        members.push(Some(start(i, &peers, auth).await));
        tokio::time::sleep(a.stagger).await;
    }
    let all: BTreeSet<String> = peers.keys().cloned().collect();
    // Members presume every peer alive until it fails a probe, so "every live set is
    // everyone" holds at the start: converged is when it has held for 3 s on end.
    let t_start = Instant::now();
    loop {
        wait_all(&members, "every member to see every member", |l| *l == all).await;
        let since = Instant::now();
        let mut broke = false;
        while since.elapsed() < Duration::from_secs(3) {
            if members.iter().flatten().any(|m| *m.live.borrow() != all) {
                broke = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !broke {
            break;
        }
        assert!(
            t_start.elapsed() < Duration::from_secs(120),
            "members never agreed for 3 s on end"
        );
    }
    eprintln!("  n={n}: stable after {:.1?}", t_start.elapsed());
    // Start-up news takes a few seconds more to be spread and forgotten: then a quiet window.
    tokio::time::sleep(a.settle).await;
    let sent =
        |ms: &[Option<Member>]| -> u64 { ms.iter().flatten().map(|m| m.metrics.sent.get()).sum() };
    let s0 = sent(&members);
    let c0 = cpu_time();
    let t0 = Instant::now();
    tokio::time::sleep(a.window).await;
    let rate = (sent(&members) - s0) as f64 / t0.elapsed().as_secs_f64() / n as f64;
    let cpu = (cpu_time() - c0).as_secs_f64() / t0.elapsed().as_secs_f64() * 100.0;
    // Kills.
    let mut agreed = Vec::new();
    let mut each = Vec::new();
    let mut first = Vec::new();
    for k in 0..a.kills {
        let victim = (k * 7919 + 13) % n;
        let vname = format!("m{victim}");
        let m = members[victim].take().expect("running");
        m.task.abort();
        let t0 = Instant::now();
        let _ = m.task.await;
        // Each member's moment is taken when its live set changes, not by polling.
        let mut watchers = tokio::task::JoinSet::new();
        for m in members.iter().flatten() {
            let mut rx = m.live.clone();
            let v = vname.clone();
            watchers.spawn(async move {
                loop {
                    if !rx.borrow_and_update().contains(&v) {
                        return Some(t0.elapsed());
                    }
                    if rx.changed().await.is_err() {
                        return None;
                    }
                }
            });
        }
        let times: Vec<Duration> =
            tokio::time::timeout(Duration::from_secs(60), watchers.join_all())
                .await
                .expect("every member agrees within 60 s")
                .into_iter()
                .map(|t| t.expect("a member stopped"))
                .collect();
        agreed.push(*times.iter().max().expect("members"));
        first.push(*times.iter().min().expect("members"));
        each.extend(times);
        members[victim] = Some(start(victim, &peers, auth).await);
        wait_all(&members, "the restarted member to be counted", |l| {
            *l == all
        })
        .await;
    }
    let (agreed_med, agreed_p99) = (pct(&mut agreed, 0.5), pct(&mut agreed, 0.99));
    let (each_med, each_p99) = (pct(&mut each, 0.5), pct(&mut each, 0.99));
    let first_med = pct(&mut first, 0.5);
    println!(
        "membership n={n}: {rate:.1} datagrams/s sent per member (quiet, {:?}, CPU {cpu:.0}% of one core); kill → every member agrees it is dead: median {agreed_med:?}, p99 {agreed_p99:?} ({} kills); per member: median {each_med:?}, p99 {each_p99:?}; first to declare: median {first_med:?}",
        a.window, a.kills
    );
    for m in members.into_iter().flatten() {
        m.task.abort();
    }
}

fn main() {
    let a = args();
    let auth = Auth::Keys(
        Keyring::parse("bench-membership-key-0123456789abcdef", "bench").expect("a key"),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        for n in &a.sizes {
            run_size(*n, &a, &auth).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}
