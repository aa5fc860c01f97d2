//! `berth speaker` end to end, in network namespaces (root required; a missing tool or
//! missing root fails the test, never skips it): a bridge, a client and three "nodes" each
//! running `berth speaker`, with mock-cloud's API server and `berth controller --provider l2`
//! in the client namespace. The controller allocates the VIPs from IPAddressPools in the
//! bridge's subnet; one L2Advertisement announces the `bridge` and `bulk` pools (not `dark`).

#[path = "l2/hmac.rs"]
mod hmac;
#[path = "l2/net.rs"]
mod net;

use berth_tests::{Proc, binary, kubectl_path, scratch_dir, wait_for};
use net::{Host, Topology, arping_macs, ndisc6_macs, neigh, tcp_ask};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const CLASS: &str = "berth.io/l2";
const API_PORT: u16 = 6443;
const GOSSIP_PORT: u16 = 7946;
/// Membership keys (at least 32 characters).
const KEY_1: &str = "first-membership-key-0123456789abcdef";
const PORT: u16 = 8080;
/// The pools: `bridge` (auto-assigned, both families) and `bulk` are advertised, `dark` is not.
const BRIDGE_POOL: [&str; 2] = ["10.99.0.200-10.99.0.250", "fd99::200-fd99::250"];
const BULK_POOL: &str = "10.99.1.1-10.99.4.254";
const DARK_POOL: &str = "10.99.0.150-10.99.0.160";

/// Not a test: when `BERTH_L2_SERVER` is set this process is a node's "workload", answering
/// every TCP connection on 8080 and 8081 (IPv4 and IPv6) with the node name.
#[test]
fn helper_node_server() {
    let Ok(name) = std::env::var("BERTH_L2_SERVER") else {
        return;
    };
    let mut threads = vec![];
    for port in [8080u16, 8081] {
        let l = std::net::TcpListener::bind(("::", port)).expect("bind server");
        let name = name.clone();
        threads.push(std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let mut c = c;
                let _ = std::io::Write::write_all(&mut c, format!("{name}\n").as_bytes());
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
}

struct Cluster {
    topo: Topology,
    dir: PathBuf,
    kubeconfig: PathBuf,
    _cloud: Proc,
    _servers: Vec<Proc>,
    controller: Option<Proc>,
    speakers: Vec<Option<Proc>>,
    restarts: usize,
    /// VIPs made local on every node so far.
    local_vips: BTreeSet<String>,
}

impl Cluster {
    /// The topology, mock-cloud (dual-stack Service ranges), the CRDs, pools and
    /// advertisement, three nodes with their speakers, and — with `controller` — the l2
    /// controller.
    fn start(controller: bool) -> Cluster {
        kubectl_path();
        let topo = Topology::new(3);
        let dir = scratch_dir("l2-speaker");
        let kubeconfig = dir.join("kubeconfig");
        let mut cmd = topo.client.cmd(&[]);
        cmd.arg(binary("mock-cloud"))
            .args(["serve", "--nodes", "0"])
            .args(["--listen", &format!("{}:{API_PORT}", topo.client.ip4)])
            .args([
                "--service-cluster-ip-range",
                "10.96.0.0/12,fd00:10:96::/112",
            ])
            .arg("--kubeconfig")
            .arg(&kubeconfig);
        let mut cloud = Proc::spawn("mock-cloud[l2]", cmd, dir.join("mock-cloud.log"));
        cloud.wait_for_line("mock-cloud: fault injection at", Duration::from_secs(30));
        let mut servers = vec![];
        for (i, h) in topo.nodes.iter().enumerate() {
            let mut c = h.cmd(&[]);
            c.arg(std::env::current_exe().expect("test exe"))
                .args(["--exact", "helper_node_server", "--nocapture"])
                .env("BERTH_L2_SERVER", format!("node-{}", i + 1));
            servers.push(Proc::spawn(
                &format!("server[node-{}]", i + 1),
                c,
                dir.join(format!("server-{}.log", i + 1)),
            ));
        }
        let mut c = Cluster {
            topo,
            dir,
            kubeconfig,
            _cloud: cloud,
            _servers: servers,
            controller: None,
            speakers: vec![],
            restarts: 0,
            local_vips: BTreeSet::new(),
        };
        c.install_pools();
        let nodes: Vec<Value> = c
            .topo
            .nodes
            .iter()
            .enumerate()
            .map(|(i, h)| {
                json!({
                    "apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": format!("node-{}", i + 1)},
                    "status": {
                        "addresses": [{"type": "InternalIP", "address": h.ip4}],
                        "conditions": [{"type": "Ready", "status": "True"}]
                    }
                })
            })
            .collect();
        c.apply(&nodes);
        for (i, h) in c.topo.nodes.clone().iter().enumerate() {
            let name = format!("node-{}", i + 1);
            let n = c.get("node", &name).expect("node exists");
            if n["status"]["addresses"][0]["address"] != h.ip4.as_str() {
                c.kubectl(&[
                    "patch",
                    "node",
                    &name,
                    "--subresource=status",
                    "--type=merge",
                    "-p",
                    &json!({"status": {"addresses": [{"type": "InternalIP", "address": h.ip4}]}})
                        .to_string(),
                ])
                .expect("patch node address");
            }
        }
        for i in 0..3 {
            c.speakers.push(None);
            c.start_speaker(i);
        }
        if controller {
            c.start_controller();
        }
        c
    }

    /// The CRDs from deploy/, the pools, and one L2Advertisement for `bridge` and `bulk`.
    fn install_pools(&self) {
        let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds/berth.io_crds.yaml");
        self.kubectl(&["apply", "-f", crds.to_str().expect("utf-8 path")])
            .unwrap_or_else(|e| panic!("install the CRDs: {e}"));
        wait_for(
            "the berth.io resources to be served",
            Duration::from_secs(20),
            || {
                self.kubectl(&["get", "ipaddresspools,l2advertisements"])
                    .ok()
            },
        );
        let pool = |name: &str, addresses: &[&str], auto_assign: bool| {
            json!({"apiVersion": "berth.io/v1alpha1", "kind": "IPAddressPool",
                   "metadata": {"name": name},
                   "spec": {"addresses": addresses, "autoAssign": auto_assign}})
        };
        self.apply(&[
            pool("bridge", &BRIDGE_POOL, true),
            pool("bulk", &[BULK_POOL], false),
            pool("dark", &[DARK_POOL], false),
            json!({"apiVersion": "berth.io/v1alpha1", "kind": "L2Advertisement",
                   "metadata": {"name": "bridge"},
                   "spec": {"ipAddressPools": ["bridge", "bulk"]}}),
        ]);
    }

    /// `berth controller --provider l2`, in the client namespace.
    fn start_controller(&mut self) {
        let mut c = self.topo.client.cmd(&[]);
        c.arg(binary("berth"))
            .arg("controller")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--provider", "l2", "--cluster-name", "l2-speaker"])
            .args(["--leader-elect", "false", "--metrics-listen", "off"])
            .env("RUST_LOG", "info,kube_client=warn,kube_runtime=warn")
            .env("NO_COLOR", "1");
        self.restarts += 1;
        let mut p = Proc::spawn(
            "berth[l2 controller]",
            c,
            self.dir.join(format!("controller-{}.log", self.restarts)),
        );
        p.wait_for_line("Caches synced; reconciling", Duration::from_secs(30));
        self.controller = Some(p);
    }

    fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.topo.client.ns])
            .arg(kubectl_path())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn apply(&self, objs: &[Value]) {
        let f = self.dir.join(format!("m-{}.json", rand_name()));
        let list = json!({"apiVersion": "v1", "kind": "List", "items": objs});
        std::fs::write(&f, list.to_string()).expect("write manifest");
        self.kubectl(&["apply", "-f", f.to_str().expect("utf8")])
            .unwrap_or_else(|e| panic!("kubectl apply: {e}"));
    }

    fn get(&self, kind: &str, name: &str) -> Option<Value> {
        self.kubectl(&["get", kind, name, "-o", "json"])
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
    }

    fn start_speaker(&mut self, i: usize) {
        let h = &self.topo.nodes[i];
        let mut c = h.cmd(&[]);
        c.arg(binary("berth"))
            .arg("speaker")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--node-name", &format!("node-{}", i + 1)])
            .args(["--memberlist-bind", &h.ip4])
            .arg("--membership-key-file")
            .arg(self.key_file())
            .args(["--metrics-listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info,kube_client=warn,kube_runtime=warn")
            .env("NO_COLOR", "1");
        self.restarts += 1;
        let mut p = Proc::spawn(
            &format!("speaker[node-{}]", i + 1),
            c,
            self.dir
                .join(format!("speaker-{}-{}.log", i + 1, self.restarts)),
        );
        p.wait_for_line("taking part in elections", Duration::from_secs(30));
        self.speakers[i] = Some(p);
    }

    /// A LoadBalancer Service of our class: returns the VIP the controller gives it, made
    /// local on every node (the listener stands in for kube-proxy).
    fn service(&mut self, name: &str, port: u16, extra: Value) -> String {
        let mut svc = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": CLASS,
                     "selector": {"app": name},
                     "ports": [{"port": port, "targetPort": port, "protocol": "TCP"}]}
        });
        json_merge(&mut svc, &extra);
        self.apply(&[svc]);
        let vip = wait_for(
            &format!("the controller to give {name} a VIP"),
            Duration::from_secs(20),
            || {
                let s = self.get("service", name)?;
                let ing = &s["status"]["loadBalancer"]["ingress"][0];
                assert!(
                    ing.is_null() || ing["ipMode"] == "VIP",
                    "{name}: ingress {ing}"
                );
                ing["ip"].as_str().map(str::to_string)
            },
        );
        if self.local_vips.insert(vip.clone()) {
            self.topo.add_vip_everywhere(&vip);
        }
        println!("l2: the controller gave {name} {vip}");
        vip
    }

    fn announcing(&self, svc: &str) -> Option<String> {
        let s = self.get("service", svc)?;
        s["metadata"]["annotations"]["berth.io/announcing-node"]
            .as_str()
            .map(str::to_string)
    }

    /// The membership key file every speaker reads (written with [`KEY_1`] at first).
    fn key_file(&self) -> PathBuf {
        let f = self.dir.join("membership-key");
        if !f.exists() {
            std::fs::write(&f, format!("{KEY_1}\n")).expect("write the key file");
        }
        f
    }

    fn node_index(name: &str) -> usize {
        name.trim_start_matches("node-")
            .parse::<usize>()
            .expect("node-N")
            - 1
    }
}

fn json_merge(a: &mut Value, b: &Value) {
    if let (Some(a), Some(b)) = (a.as_object_mut(), b.as_object()) {
        for (k, v) in b {
            match a.get_mut(k) {
                Some(x) if x.is_object() && v.is_object() => json_merge(x, v),
                _ => {
                    a.insert(k.clone(), v.clone());
                }
            }
        }
    }
}

/// Whether `ip` lies in `range` (`FIRST-LAST`).
fn in_range(ip: &str, range: &str) -> bool {
    let (a, b) = range.split_once('-').expect("FIRST-LAST");
    let p = |s: &str| s.parse::<std::net::IpAddr>().expect("an address");
    (p(a)..=p(b)).contains(&p(ip))
}

fn rand_name() -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

/// The one MAC answering `vip` (ARP or NDP) once things settle; panics on two.
fn single_owner(c: &Cluster, vip: &str) -> String {
    wait_for(
        &format!("exactly one MAC answering {vip}"),
        Duration::from_secs(20),
        || {
            let macs = if vip.contains(':') {
                ndisc6_macs(&c.topo.client, vip)
            } else {
                arping_macs(&c.topo.client, vip, "1")
            };
            assert!(macs.len() <= 1, "two MACs answer {vip}: {macs:?}");
            macs.into_iter().next()
        },
    )
}

/// Samples ARP for a VIP until stopped; returns (samples, samples with two MACs).
fn sampler(
    client: Host,
    vip: String,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(u32, Vec<Vec<String>>)> {
    std::thread::spawn(move || {
        let (mut n, mut bad) = (0, vec![]);
        while !stop.load(Ordering::Relaxed) {
            let m = arping_macs(&client, &vip, "1");
            n += 1;
            if m.len() > 1 {
                bad.push(m);
            }
        }
        (n, bad)
    })
}

fn stats(v: &[Duration]) -> (Duration, Duration) {
    let mut s = v.to_vec();
    s.sort();
    (s[s.len() / 2], *s.last().expect("runs"))
}

/// Kills (or cuts off) the node announcing `vip`; returns the time until the client's
/// neighbour entry for the VIP names another node (whose server TCP must then reach).
fn failover_once(c: &mut Cluster, vip: &str, cut_link: bool) -> Duration {
    let owner_mac = single_owner(c, vip);
    let owner = c.topo.node_by_mac(&owner_mac).expect("owner is a node");
    // The client talks to the VIP: its neighbour entry holds the owner's MAC.
    let who = wait_for(
        "the VIP to answer over TCP",
        Duration::from_secs(10),
        || tcp_ask(&c.topo.client, vip, PORT, "1"),
    );
    assert_eq!(who, format!("node-{}", owner + 1));
    assert_eq!(
        neigh(&c.topo.client, vip).as_deref(),
        Some(owner_mac.as_str())
    );
    let t0 = Instant::now();
    if cut_link {
        c.topo.set_port(&c.topo.nodes[owner].clone(), false);
    } else if let Some(p) = c.speakers[owner].as_mut() {
        p.kill();
    }
    // The figure is the moment the client's neighbour entry names another node, polled as
    // fast as `ip neigh` answers (a 100 ms poll would add up to 100 ms); then TCP must reach
    // that node through the VIP (not counted).
    let (took, new) = loop {
        if let Some(new) = neigh(&c.topo.client, vip)
            .and_then(|mac| c.topo.node_by_mac(&mac))
            .filter(|n| *n != owner)
        {
            break (t0.elapsed(), new);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "the VIP never moved from node-{}",
            owner + 1
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    wait_for(
        "TCP through the VIP to reach the new node",
        Duration::from_secs(10),
        || {
            let who = tcp_ask(&c.topo.client, vip, PORT, "0.5")?;
            (who == format!("node-{}", new + 1)).then_some(())
        },
    );
    if cut_link {
        c.topo.set_port(&c.topo.nodes[owner].clone(), true);
    } else {
        c.speakers[owner] = None;
        c.start_speaker(owner);
    }
    // Let the returning node rejoin (the VIP may move back to it, by handover).
    std::thread::sleep(Duration::from_secs(3));
    took
}

#[test]
fn l2_speaker_end_to_end() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = Cluster::start(true);

    // 1. A Service gets a VIP from the controller (auto-assigned from `bridge`): exactly one
    // MAC answers, the node berth names; TCP reaches it.
    let web = c.service("web", PORT, json!({}));
    assert!(in_range(&web, BRIDGE_POOL[0]), "web got {web}");
    let owner = wait_for(
        "berth.io/announcing-node on web",
        Duration::from_secs(20),
        || c.announcing("web"),
    );
    let mac = single_owner(&c, &web);
    assert_eq!(
        mac,
        c.topo.nodes[Cluster::node_index(&owner)].mac,
        "the MAC of {owner}"
    );
    let who = wait_for("TCP through the VIP", Duration::from_secs(10), || {
        tcp_ask(&c.topo.client, &web, PORT, "1")
    });
    assert_eq!(who, owner);
    let events = c
        .kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=web",
            "-o",
            "json",
        ])
        .expect("events");
    assert!(
        events.contains("NodeAssigned"),
        "no NodeAssigned event: {events}"
    );
    println!("l2: web {web} -> {owner} ({mac})");

    // 2./3. Failover, with ARP sampled all along: never two MACs in one sample.
    let stop = Arc::new(AtomicBool::new(false));
    let s = sampler(c.topo.client.clone(), web.clone(), stop.clone());
    let mut kills = vec![];
    for _ in 0..5 {
        kills.push(failover_once(&mut c, &web, false));
    }
    let mut cuts = vec![];
    for _ in 0..2 {
        cuts.push(failover_once(&mut c, &web, true));
    }
    stop.store(true, Ordering::Relaxed);
    let (samples, bad) = s.join().expect("sampler");
    let (kmed, kmax) = stats(&kills);
    let (cmed, cmax) = stats(&cuts);
    println!("l2 failover (SIGKILL speaker, 5 runs): median {kmed:?}, max {kmax:?}; all {kills:?}");
    println!("l2 failover (link down, 2 runs): median {cmed:?}, max {cmax:?}; all {cuts:?}");
    println!(
        "l2 ARP samples during failovers: {samples}, with two MACs: {}",
        bad.len()
    );
    assert!(bad.is_empty(), "two MACs answered one request: {bad:?}");
    assert!(
        kmed <= Duration::from_millis(1500),
        "failover median {kmed:?} is too slow"
    );

    // 4. ETP=Local, with a fixed VIP (berth.io/load-balancer-ips): the VIP follows the pods.
    let pod = |name: &str, node: &str| {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": "default", "labels": {"app": "local"}},
               "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x",
                        "ports": [{"containerPort": PORT}]}]}})
    };
    let local = c.service(
        "local",
        PORT,
        json!({"metadata": {"annotations": {"berth.io/load-balancer-ips": "10.99.0.240"}},
               "spec": {"externalTrafficPolicy": "Local"}}),
    );
    assert_eq!(local, "10.99.0.240");
    for (podname, node) in [("local-a", "node-3"), ("local-b", "node-1")] {
        let _ = c.kubectl(&["delete", "pod", "-l", "app=local", "--wait=false"]);
        c.apply(&[pod(podname, node)]);
        let want = c.topo.nodes[Cluster::node_index(node)].mac.clone();
        wait_for(
            &format!("the Local VIP on {node}"),
            Duration::from_secs(20),
            || {
                let m = arping_macs(&c.topo.client, &local, "1");
                assert!(m.len() <= 1, "two MACs: {m:?}");
                (m == [want.clone()] && c.announcing("local").as_deref() == Some(node))
                    .then_some(())
            },
        );
        println!("l2: ETP=Local VIP follows its pod to {node}");
    }

    // 5. Shared IP: two Services with one key and disjoint ports get one VIP from the
    // controller and land on one node.
    let shared = json!({"metadata": {"annotations": {"berth.io/allow-shared-ip": "k1"}}});
    let sip = c.service("shared-a", 8080, shared.clone());
    assert_eq!(
        c.service("shared-b", 8081, shared),
        sip,
        "shared-IP Services got different VIPs"
    );
    assert!(sip != web && sip != local, "{sip} is already in use");
    let (a, b) = wait_for(
        "both shared Services announced",
        Duration::from_secs(20),
        || Some((c.announcing("shared-a")?, c.announcing("shared-b")?)),
    );
    assert_eq!(a, b, "shared-IP Services on different nodes");
    let m = single_owner(&c, &sip);
    assert_eq!(m, c.topo.nodes[Cluster::node_index(&a)].mac);
    println!("l2: shared IP {sip} -> {a} for both Services");

    // 6. A VIP from a pool no L2Advertisement lists is never announced, though the Service
    // names no pool: the speaker maps the address to its pool (`dark`), not the annotation.
    let dark = c.service(
        "dark",
        PORT,
        json!({"metadata": {"annotations": {"berth.io/load-balancer-ips": "10.99.0.150"}}}),
    );
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        let m = arping_macs(&c.topo.client, &dark, "1");
        assert!(
            m.is_empty(),
            "{dark} of the unadvertised pool answered by {m:?}"
        );
        assert_eq!(c.announcing("dark"), None, "dark was announced");
    }
    println!("l2: {dark} (pool dark, not advertised) is not announced");

    // 7. IPv6: NDP answers from one node; failover moves it.
    let v6 = c.service(
        "web6",
        PORT,
        json!({"spec": {"ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack"}}),
    );
    assert!(in_range(&v6, BRIDGE_POOL[1]), "web6 got {v6}");
    let owner6 = wait_for("web6 announced", Duration::from_secs(20), || {
        c.announcing("web6")
    });
    let mac6 = single_owner(&c, &v6);
    assert_eq!(mac6, c.topo.nodes[Cluster::node_index(&owner6)].mac);
    let who = wait_for(
        "TCP over IPv6 through the VIP",
        Duration::from_secs(10),
        || tcp_ask(&c.topo.client, &v6, PORT, "1"),
    );
    assert_eq!(who, owner6);
    let mut kills6 = vec![];
    for _ in 0..5 {
        kills6.push(failover_once(&mut c, &v6, false));
    }
    let (med6, max6) = stats(&kills6);
    println!(
        "l2 IPv6 failover (SIGKILL speaker, unsolicited NA, 5 runs): median {med6:?}, max {max6:?}; all {kills6:?}"
    );
    assert!(
        med6 <= Duration::from_millis(1500),
        "IPv6 failover median {med6:?} is too slow"
    );
    let macs6 = ndisc6_macs(&c.topo.client, &v6);
    assert_eq!(
        macs6.len(),
        1,
        "one MAC answers NDP after failover: {macs6:?}"
    );
}

/// The two end-to-end tests run one at a time: failover timing must not compete for CPU.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A raw HTTP/1.0 request (inside a namespace helper): (status, body).
fn raw_http(addr: &str, method: &str, path: &str, ctype: &str, body: &str) -> (u16, String) {
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

/// Not a test: with `BERTH_L2_BULK=ADDR,COUNT` creates COUNT Services of our class asking for
/// the `bulk` pool (the controller allocates); with `BERTH_L2_STATS=ADDR` prints the API
/// server's stats.
#[test]
fn helper_api() {
    if let Ok(spec) = std::env::var("BERTH_L2_BULK") {
        let (addr, n) = spec.split_once(',').expect("ADDR,COUNT");
        let n: usize = n.parse().expect("count");
        for i in 0..n {
            let name = format!("bulk-{i}");
            let svc = json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": "default",
                             "annotations": {"berth.io/address-pool": "bulk"}},
                "spec": {"type": "LoadBalancer", "loadBalancerClass": CLASS,
                         "allocateLoadBalancerNodePorts": false,
                         "ports": [{"port": 80, "protocol": "TCP"}]}
            });
            let (c, b) = raw_http(
                addr,
                "POST",
                "/api/v1/namespaces/default/services",
                "application/json",
                &svc.to_string(),
            );
            assert!(c == 201 || c == 200, "create {name}: {c} {b}");
        }
    }
    if let Ok(addr) = std::env::var("BERTH_L2_STATS") {
        let (_, b) = raw_http(&addr, "GET", "/mock-cloud/v1/stats", "application/json", "");
        println!("STATS:{}", b.trim());
    }
}

impl Cluster {
    fn api(&self) -> String {
        format!("{}:{API_PORT}", self.topo.client.ip4)
    }

    fn helper(&self, env: (&str, String)) -> String {
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

    fn api_stats(&self) -> Value {
        let text = self.helper(("BERTH_L2_STATS", self.api()));
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("STATS:"))
            .expect("stats line");
        serde_json::from_str(line).expect("stats JSON")
    }
}

/// Speakers' API requests per minute by verb between two stats snapshots.
fn per_minute(a: &Value, b: &Value, secs: f64) -> (f64, Value) {
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

#[test]
fn l2_speaker_api_load_with_1000_vips() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = Cluster::start(false);
    // A quiet baseline with no Service: the speakers' watches alone.
    std::thread::sleep(Duration::from_secs(3));
    let s0 = c.api_stats();
    std::thread::sleep(Duration::from_secs(20));
    let s1 = c.api_stats();
    let (base, base_verbs) = per_minute(&s0, &s1, 20.0);
    // 1,000 VIPs from the controller: every one gets announced (one annotation write + one
    // event each), then nothing but the watches. The controller runs only while it
    // allocates, so both windows measure the speakers alone.
    c.start_controller();
    c.helper(("BERTH_L2_BULK", format!("{},1000", c.api())));
    wait_for("1000 VIPs announced", Duration::from_secs(120), || {
        let total: f64 = c
            .speakers
            .iter()
            .flatten()
            .map(|p| p.output().matches("Announcing ip=").count() as f64)
            .sum();
        (total >= 1000.0).then_some(())
    });
    let writes_settled = wait_for(
        "annotation writes to settle",
        Duration::from_secs(120),
        || {
            let a = c.api_stats()["writes"].as_u64()?;
            std::thread::sleep(Duration::from_secs(2));
            let b = c.api_stats()["writes"].as_u64()?;
            (a == b).then_some(b)
        },
    );
    c.controller
        .take()
        .expect("the controller")
        .stop(Duration::from_secs(5));
    let t0 = Instant::now();
    let a = c.api_stats();
    std::thread::sleep(Duration::from_secs(60));
    let b = c.api_stats();
    let secs = t0.elapsed().as_secs_f64();
    let (busy, busy_verbs) = per_minute(&a, &b, secs);
    println!("l2 speaker API load, 3 speakers, no Services: {base:.0} requests/min {base_verbs}");
    println!(
        "l2 speaker API load, 3 speakers, 1000 VIPs (steady state, {secs:.0} s): {busy:.0} requests/min {busy_verbs}; writes during allocation and announce: {writes_settled}"
    );
    // Our stats reads are 2 GETs per window (the helper); everything else is the speakers'.
    assert!(
        busy <= base + 10.0,
        "API load grew with Services: {base:.0} -> {busy:.0} requests/min"
    );
}

/// Membership keys after [`KEY_1`].
const KEY_2: &str = "second-membership-key-0123456789abcdef";
/// A key no speaker has.
const WRONG_KEY: &str = "not-the-membership-key-0123456789abcdef";

/// A membership datagram as a speaker would build it: `k ‖ k MACs ‖ JSON envelope`.
fn datagram(keys: &[&str], envelope: &Value) -> Vec<u8> {
    let payload = envelope.to_string().into_bytes();
    let mut out = vec![keys.len() as u8];
    for k in keys {
        out.extend(hmac::hmac_sha256(k.as_bytes(), &payload));
    }
    out.extend(payload);
    out
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

fn envelope(from: &str, epoch: u64, inc: u64, seq: u64, ts: u64, msg: Value) -> Value {
    json!({"from": from, "epoch": epoch, "inc": inc, "ready": true, "seq": seq, "ts": ts,
           "msg": msg, "updates": []})
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Not a test: with `BERTH_L2_FORGE=FILE,SECS` sends every datagram of FILE (lines of
/// `ADDR HEX`) round after round for SECS seconds, from wherever it runs.
#[test]
fn helper_forger() {
    let Ok(spec) = std::env::var("BERTH_L2_FORGE") else {
        return;
    };
    let (file, secs) = spec.split_once(',').expect("FILE,SECS");
    let secs: u64 = secs.parse().expect("seconds");
    let text = std::fs::read_to_string(file).expect("datagrams");
    let dgrams: Vec<(String, Vec<u8>)> = text
        .lines()
        .filter_map(|l| {
            let (a, h) = l.split_once(' ')?;
            let b = (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&h[i..i + 2], 16).expect("hex"))
                .collect();
            Some((a.to_string(), b))
        })
        .collect();
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
    let t0 = Instant::now();
    let mut sent = 0u64;
    while t0.elapsed() < Duration::from_secs(secs) {
        for (a, d) in &dgrams {
            let _ = sock.send_to(d, a.as_str());
            sent += 1;
            if sent.is_multiple_of(200) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    println!("FORGED:{sent}");
}

impl Cluster {
    /// A speaker's /metrics, fetched inside its node's namespace.
    fn scrape(&self, i: usize) -> String {
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
    fn metric_sum(&self, name: &str) -> f64 {
        (0..self.speakers.len())
            .filter(|i| self.speakers[*i].is_some())
            .map(|i| metric_value(&self.scrape(i), name))
            .sum()
    }

    /// A speaker's membership epoch, from its log.
    fn epoch(&self, i: usize) -> u64 {
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
fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
        .sum()
}

/// ARP samples for `vip` until stopped: (when, MACs).
fn recorder(
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
fn check_recording(what: &str, rec: &[(Instant, Vec<String>)], gap: Duration) -> (usize, Duration) {
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
fn l2_speaker_refuses_to_start_without_a_membership_key() {
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
fn l2_speaker_membership_is_authenticated_agrees_under_partition_and_rotates_keys() {
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
