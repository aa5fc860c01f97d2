//! What the l2 speaker tests use to drive the speakers from outside: raw API requests,
//! forged membership datagrams, metrics scrapes.

use super::*;

/// A raw HTTP/1.0 request (inside a namespace helper): (status, body).
pub(crate) fn raw_http(
    addr: &str,
    method: &str,
    path: &str,
    ctype: &str,
    body: &str,
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the API server");
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
    (code, body.unwrap_or_default())
}

impl Cluster {
    pub(crate) fn api(&self) -> String {
        format!("{}:{API_PORT}", self.topo.client.ip4)
    }

    pub(crate) fn helper(&self, env: (&str, String)) -> String {
        let out = self
            .topo
            .client
            .cmd(&[])
            .arg(std::env::current_exe().expect("test exe"))
            .args(["--exact", "helper_api", "--nocapture"])
            .env(env.0, env.1)
            .output()
            .expect("run helper");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "helper failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }

    pub(crate) fn api_stats(&self) -> Value {
        let text = self.helper(("BERTH_L2_STATS", self.api()));
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("STATS:"))
            .expect("stats line");
        serde_json::from_str(line).expect("stats JSON")
    }
}

/// Speakers' API requests per minute by verb between two stats snapshots.
pub(crate) fn per_minute(a: &Value, b: &Value, secs: f64) -> (f64, Value) {
    let mut verbs = serde_json::Map::new();
    let mut total = 0.0;
    if let Some(m) = b["verbs"].as_object() {
        for (k, v) in m {
            let d = v.as_f64().unwrap_or(0.0) - a["verbs"][k].as_f64().unwrap_or(0.0);
            let pm = d * 60.0 / secs;
            total += pm;
            verbs.insert(k.clone(), json!(pm.round()));
        }
    }
    (total, Value::Object(verbs))
}

/// A membership datagram as a speaker would build it: `k ‖ k MACs ‖ JSON envelope`.
pub(crate) fn datagram(keys: &[&str], envelope: &Value) -> Vec<u8> {
    let payload = envelope.to_string().into_bytes();
    let mut out = vec![keys.len() as u8];
    for k in keys {
        out.extend(hmac::hmac_sha256(k.as_bytes(), &payload));
    }
    out.extend(payload);
    out
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

pub(crate) fn envelope(from: &str, epoch: u64, inc: u64, seq: u64, ts: u64, msg: Value) -> Value {
    json!({"from": from, "epoch": epoch, "inc": inc, "ready": true, "seq": seq, "ts": ts,
           "msg": msg, "updates": []})
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Cluster {
    /// A speaker's /metrics, fetched inside its node's namespace.
    pub(crate) fn scrape(&self, i: usize) -> String {
        let p = self.speakers[i].as_ref().expect("speaker running");
        let line = p
            .output()
            .lines()
            .find(|l| l.contains("Serving /metrics and /healthz"))
            .expect("metrics line")
            .to_string();
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("address="))
            .expect("address")
            .to_string();
        let (host, port) = addr.rsplit_once(':').expect("host:port");
        let script = format!(
            "exec 3<>/dev/tcp/{host}/{port} && printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3"
        );
        self.topo.nodes[i].run(&["timeout", "5", "bash", "-c", &script])
    }

    /// The sum of a metric (every label set) over the running speakers.
    pub(crate) fn metric_sum(&self, name: &str) -> f64 {
        (0..self.speakers.len())
            .filter(|i| self.speakers[*i].is_some())
            .map(|i| metric_value(&self.scrape(i), name))
            .sum()
    }

    /// A speaker's membership epoch, from its log.
    pub(crate) fn epoch(&self, i: usize) -> u64 {
        let out = self.speakers[i].as_ref().expect("speaker").output();
        out.lines()
            .rev()
            .find(|l| l.contains("Membership epoch"))
            .and_then(|l| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix("epoch="))
                    .and_then(|e| e.parse().ok())
            })
            .expect("epoch in the log")
    }
}

/// The sum of every sample of `name` (any labels) in a Prometheus text page.
pub(crate) fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
        .sum()
}

/// ARP samples for `vip` until stopped: (when, MACs).
pub(crate) fn recorder(
    client: Host,
    vip: String,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<(Instant, Vec<String>)>> {
    std::thread::spawn(move || {
        let mut out = vec![];
        while !stop.load(Ordering::Relaxed) {
            let m = arping_macs(&client, &vip, "1");
            out.push((Instant::now(), m));
        }
        out
    })
}

/// Checks a recording: never two MACs, never unanswered longer than `gap`. Returns
/// (samples, longest unanswered stretch).
pub(crate) fn check_recording(
    what: &str,
    rec: &[(Instant, Vec<String>)],
    gap: Duration,
) -> (usize, Duration) {
    let two: Vec<&Vec<String>> = rec.iter().map(|r| &r.1).filter(|m| m.len() > 1).collect();
    assert!(
        two.is_empty(),
        "{what}: two MACs answered one request: {two:?}"
    );
    let mut longest = Duration::ZERO;
    let mut last_answer = rec.first().map(|r| r.0);
    for (t, m) in rec {
        if !m.is_empty() {
            if let Some(l) = last_answer {
                longest = longest.max(t.duration_since(l));
            }
            last_answer = Some(*t);
        }
    }
    if let (Some(l), Some(end)) = (last_answer, rec.last().map(|r| r.0)) {
        longest = longest.max(end.duration_since(l));
    }
    assert!(
        longest <= gap,
        "{what}: the VIP went unanswered for {longest:?}"
    );
    (rec.len(), longest)
}

#[test]
pub(crate) fn l2_speaker_refuses_to_start_without_a_membership_key() {
    let dir = scratch_dir("l2-nokey");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'http://127.0.0.1:9'}\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\ncurrent-context: c\nusers:\n- name: u\n  user: {}\n",
    )
    .expect("write kubeconfig");
    let short = dir.join("short-key");
    std::fs::write(&short, "too-short\n").expect("write key");
    let run = |extra: &[&str]| {
        Command::new(binary("berth"))
            .arg("speaker")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--node-name", "node-1", "--memberlist-bind", "127.0.0.1:0"])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .args(extra)
            .env("NO_COLOR", "1")
            .output()
            .expect("run berth speaker")
    };
    let out = run(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started without a key: {err}");
    assert!(
        err.contains("--membership-key-file") && err.contains("--membership-insecure"),
        "the error names the flags: {err}"
    );
    let out = run(&["--membership-key-file", short.to_str().expect("utf-8")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started with a short key: {err}");
    assert!(err.contains("shorter than 32"), "{err}");
    println!("l2: without a key: {}", err.trim());
}

#[test]
pub(crate) fn l2_speaker_membership_is_authenticated_agrees_under_partition_and_rotates_keys() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = Cluster::start(true);
    let web = c.service("web", PORT, json!({}));
    let owner = wait_for("web announced", Duration::from_secs(20), || {
        c.announcing("web")
    });
    let mac = single_owner(&c, &web);
    let oi = Cluster::node_index(&owner);
    assert_eq!(mac, c.topo.nodes[oi].mac);
    // Every speaker reports in its own ServiceL2Status; the controller mirrors the owner.
    let statuses = c
        .kubectl(&["get", "servicel2statuses", "-o", "json"])
        .expect("kubectl get servicel2statuses");
    let statuses: Value = serde_json::from_str(&statuses).expect("json");
    let items = statuses["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "one report for web: {statuses}");
    assert_eq!(items[0]["spec"]["node"], owner.as_str());
    assert_eq!(items[0]["spec"]["vips"][0], web.as_str());
    println!(
        "l2: web {web} -> {owner}, reported in ServiceL2Status {}",
        items[0]["metadata"]["name"]
    );

    // 1. Forgeries and replays for 12 s: no effect at all.
    let victim = (oi + 1) % 3;
    let vname = format!("node-{}", victim + 1);
    let vepoch = c.epoch(victim);
    let targets: Vec<String> = c
        .topo
        .nodes
        .iter()
        .map(|h| format!("{}:{GOSSIP_PORT}", h.ip4))
        .collect();
    let ts = now_ms();
    let leave = |from: &str, epoch: u64, inc: u64, seq: u64, ts: u64| {
        envelope(from, epoch, inc, seq, ts, json!({"t": "leave"}))
    };
    let mut lines = vec![];
    for (i, t) in targets.iter().enumerate() {
        if i == victim {
            continue;
        }
        let mut add = |d: Vec<u8>| lines.push(format!("{t} {}", hex(&d)));
        // The old plain-JSON Leave with incarnation u64::MAX, for the owner and the victim.
        for n in [&owner, &vname] {
            add(format!(r#"{{"t":"leave","from":"{n}","inc":18446744073709551615}}"#).into_bytes());
        }
        // Unsigned, and under a wrong key, in the current format.
        let forged = leave(&owner, ts, u64::MAX, u64::MAX, ts);
        add(datagram(&[], &forged));
        add(datagram(&[WRONG_KEY], &leave(&vname, ts, 5, 1 << 40, ts)));
        // Replays under the real key: the victim's own epoch with sequence numbers long used,
        // an epoch before it, and a datagram minutes old.
        for seq in 1..4 {
            add(datagram(&[KEY_1], &leave(&vname, vepoch, 0, seq, ts)));
        }
        add(datagram(
            &[KEY_1],
            &leave(&vname, vepoch - 60_000, 0, 1, ts),
        ));
        add(datagram(
            &[KEY_1],
            &leave(&vname, vepoch, 0, 1 << 40, ts - 300_000),
        ));
        // A name that is no Node, under the real key.
        let ping = envelope("intruder", ts, 0, 1, ts, json!({"t": "ping", "probe": 1}));
        add(datagram(&[KEY_1], &ping));
        // 2,000 pings from invented names, unsigned.
        for k in 0..2000 {
            let p = envelope(
                &format!("ghost-{k}"),
                ts,
                0,
                1,
                ts,
                json!({"t": "ping", "probe": 1}),
            );
            add(datagram(&[], &p));
        }
    }
    let file = c.dir.join("forged.txt");
    std::fs::write(&file, lines.join("\n")).expect("write forged datagrams");
    let sent0 = c.metric_sum("berth_speaker_membership_datagrams_sent_total");
    let failovers0 = c.metric_sum("berth_speaker_failovers_total");
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let rec = recorder(c.topo.client.clone(), web.clone(), stop.clone());
    let forged = c
        .topo
        .client
        .cmd(&[])
        .arg(std::env::current_exe().expect("test exe"))
        .args(["--exact", "helper_forger", "--nocapture"])
        .env("BERTH_L2_FORGE", format!("{},12", file.display()))
        .output()
        .expect("run the forger");
    let forged_n = String::from_utf8_lossy(&forged.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("FORGED:").map(str::to_string))
        .expect("the forger reports");
    let secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let rec = rec.join().expect("recorder");
    let sent = c.metric_sum("berth_speaker_membership_datagrams_sent_total") - sent0;
    let rate = sent / secs;
    let page: Vec<String> = (0..3).map(|i| c.scrape(i)).collect();
    let rejected = |reason: &str| -> f64 {
        page.iter()
            .map(|p| {
                metric_value(
                    &p.lines()
                        .filter(|l| l.contains(&format!("reason=\"{reason}\"")))
                        .collect::<Vec<_>>()
                        .join("\n"),
                    "berth_speaker_membership_datagrams_rejected_total",
                )
            })
            .sum()
    };
    let reasons: Vec<(&str, f64)> = ["malformed", "mac", "replay", "stale", "unknown_sender"]
        .into_iter()
        .map(|r| (r, rejected(r)))
        .collect();
    let (n, gap) = check_recording("under forgery", &rec, Duration::from_secs(2));
    println!(
        "l2 forgery: {forged_n} forged datagrams in {secs:.1} s; speakers sent {rate:.0} datagrams/s in all; rejected {reasons:?}; {n} ARP samples, 0 with two MACs, longest unanswered {gap:?}"
    );
    for (r, v) in &reasons {
        assert!(*v > 0.0, "no datagram was rejected as {r}: {reasons:?}");
    }
    assert!(
        rate < 200.0,
        "speaker traffic {rate:.0} datagrams/s under forgery"
    );
    assert_eq!(
        c.metric_sum("berth_speaker_failovers_total"),
        failovers0,
        "forgeries moved a VIP"
    );
    assert_eq!(single_owner(&c, &web), mac, "the owner changed");
    for i in 0..3 {
        let p = c.scrape(i);
        assert_eq!(
            metric_value(&p, "berth_speaker_members_alive"),
            3.0,
            "node-{}: {p}",
            i + 1
        );
    }

    // 2. Partial partition for 15 s between the owner and another node (both still reach
    // the third): nobody is declared dead, never two MACs; healed, the owner is unchanged.
    let other = (oi + 1) % 3;
    let (a, b) = (c.topo.nodes[oi].clone(), c.topo.nodes[other].clone());
    for (h, peer) in [(&a, &b), (&b, &a)] {
        h.run(&["nft", "add", "table", "inet", "berth_test"]);
        h.run(&[
            "nft",
            "add",
            "chain",
            "inet",
            "berth_test",
            "input",
            "{ type filter hook input priority 0 ; }",
        ]);
        h.run(&[
            "nft",
            "add",
            "rule",
            "inet",
            "berth_test",
            "input",
            "ip",
            "saddr",
            &peer.ip4,
            "udp",
            "dport",
            &GOSSIP_PORT.to_string(),
            "drop",
        ]);
    }
    let dead0 = c.metric_sum("berth_speaker_members_dead");
    let stop = Arc::new(AtomicBool::new(false));
    let rec = recorder(c.topo.client.clone(), web.clone(), stop.clone());
    std::thread::sleep(Duration::from_secs(15));
    let during: Vec<f64> = (0..3)
        .map(|i| metric_value(&c.scrape(i), "berth_speaker_members_alive"))
        .collect();
    for h in [&a, &b] {
        h.run(&["nft", "delete", "table", "inet", "berth_test"]);
    }
    stop.store(true, Ordering::Relaxed);
    let rec = rec.join().expect("recorder");
    let (n, gap) = check_recording("partial partition", &rec, Duration::from_secs(2));
    println!(
        "l2 partial partition node-{} <-/-> node-{} for 15 s: {n} ARP samples, 0 with two MACs, longest unanswered {gap:?}; members alive per speaker {during:?}",
        oi + 1,
        other + 1
    );
    assert_eq!(
        during,
        [3.0, 3.0, 3.0],
        "a partial partition killed a member"
    );
    assert_eq!(c.metric_sum("berth_speaker_members_dead"), dead0);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        single_owner(&c, &web),
        mac,
        "ownership is the hash winner's again"
    );
    assert_eq!(c.announcing("web").as_deref(), Some(owner.as_str()));

    // 3. Key rotation: the new key first everywhere, then the old one removed. Nothing moves.
    let failovers0 = c.metric_sum("berth_speaker_failovers_total");
    let mac_rejects0 = c.metric_sum("berth_speaker_membership_datagrams_rejected_total");
    let stop = Arc::new(AtomicBool::new(false));
    let rec = recorder(c.topo.client.clone(), web.clone(), stop.clone());
    let key_file = c.key_file();
    std::fs::write(&key_file, format!("{KEY_2}\n{KEY_1}\n")).expect("rotate: add");
    std::thread::sleep(Duration::from_secs(4));
    std::fs::write(&key_file, format!("\n{KEY_2}\n")).expect("rotate: remove the old key");
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    let rec = rec.join().expect("recorder");
    let (n, gap) = check_recording("key rotation", &rec, Duration::from_secs(2));
    for i in 0..3 {
        let out = c.speakers[i].as_ref().expect("speaker").output();
        assert_eq!(
            out.matches("Membership keys reloaded").count(),
            2,
            "node-{} reloaded its keys twice",
            i + 1
        );
    }
    let failovers = c.metric_sum("berth_speaker_failovers_total") - failovers0;
    let rejects = c.metric_sum("berth_speaker_membership_datagrams_rejected_total") - mac_rejects0;
    println!(
        "l2 key rotation: {failovers} failovers, {rejects} datagrams rejected, {n} ARP samples, longest unanswered {gap:?}"
    );
    assert_eq!(failovers, 0.0, "the rotation moved a VIP");
    assert_eq!(rejects, 0.0, "speakers stopped understanding each other");
    assert_eq!(single_owner(&c, &web), mac);
}
