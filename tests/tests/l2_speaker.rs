//! `berth speaker` end to end, in network namespaces (root required; a missing tool or
//! missing root fails the test, never skips it): a bridge, a client and three "nodes" each
//! running `berth speaker`, with mock-cloud's API server and `berth controller --provider l2`
//! in the client namespace. The controller allocates the VIPs from IPAddressPools in the
//! bridge's subnet; one L2Advertisement announces the `bridge` and `bulk` pools (not `dark`).

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

/// Kills (or cuts off) the node announcing `vip`; returns the time until the client reaches
/// the VIP through the new node's MAC.
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
    let took = wait_for(
        "the VIP to move to another node",
        Duration::from_secs(15),
        || {
            let mac = neigh(&c.topo.client, vip)?;
            let new = c.topo.node_by_mac(&mac)?;
            if new == owner {
                return None;
            }
            let who = tcp_ask(&c.topo.client, vip, PORT, "0.3")?;
            (who == format!("node-{}", new + 1)).then(|| t0.elapsed())
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
    let i6 = Cluster::node_index(&owner6);
    let t0 = Instant::now();
    c.speakers[i6].as_mut().expect("speaker").kill();
    let took6 = wait_for("the IPv6 VIP to move", Duration::from_secs(15), || {
        let mac = neigh(&c.topo.client, &v6)?;
        let new = c.topo.node_by_mac(&mac)?;
        (new != i6 && tcp_ask(&c.topo.client, &v6, PORT, "0.3")? == format!("node-{}", new + 1))
            .then(|| t0.elapsed())
    });
    println!("l2: IPv6 failover (SIGKILL, unsolicited NA) took {took6:?}");
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
