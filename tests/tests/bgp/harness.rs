//! The BGP end-to-end test's world: network namespaces (client, router, bridge, nodes), FRR in the router namespace, and mock-cloud with the l2 controller and one speaker per node.

// Shared by several test binaries, each using part of it.
#![allow(dead_code)]

use crate::routers::*;
use berth_tests::{Proc, binary, kubectl_path, scratch_dir, wait_for};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub(crate) const CLASS: &str = "berth.io/l2";
pub(crate) const AS: u32 = 64512;
pub(crate) const PORT: u16 = 8080;
pub(crate) const CLIENT: &str = "10.98.0.2";
pub(crate) const ROUTER: &str = "10.97.0.1";
pub(crate) const ROUTER6: &str = "fd97::1";
pub(crate) const POOL: [&str; 2] = [
    "198.51.100.10-198.51.100.50",
    "2001:db8:100::10-2001:db8:100::50",
];
pub(crate) const KEY: &str = "bgp-e2e-membership-key-0123456789abcdef";
pub(crate) const MD5: &str = "s3cret-md5";

/// Not a test: with `BERTH_BGP_SERVER=NAME` this process is a node's workload, answering
/// every TCP connection on 8080 (IPv4 and IPv6) with the node's name.
#[test]
fn helper_bgp_node_server() {
    let Ok(name) = std::env::var("BERTH_BGP_SERVER") else {
        return;
    };
    let l = std::net::TcpListener::bind(("::", PORT)).expect("bind server");
    for c in l.incoming().flatten() {
        let mut c = c;
        let _ = std::io::Write::write_all(&mut c, format!("{name}\n").as_bytes());
    }
}

pub(crate) fn node_ip(i: usize) -> String {
    format!("10.97.0.{}", 11 + i)
}

pub(crate) fn node_ip6(i: usize) -> String {
    format!("fd97::{:x}", 0x11 + i)
}

pub(crate) fn run(args: &[&str]) -> String {
    try_run(args).unwrap_or_else(|e| panic!("{args:?} failed: {e}"))
}

pub(crate) fn try_run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", args[0]))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

pub(crate) fn in_ns(ns: &str, args: &[&str]) -> String {
    let mut a = vec!["ip", "netns", "exec", ns];
    a.extend_from_slice(args);
    run(&a)
}

pub(crate) fn require_root_and_frr() {
    assert_eq!(
        run(&["id", "-u"]).trim(),
        "0",
        "the BGP end-to-end test needs root (network namespaces); run it as root as CI does"
    );
    for f in [
        "/usr/lib/frr/zebra",
        "/usr/lib/frr/bgpd",
        "/usr/lib/frr/bfdd",
        "/usr/bin/vtysh",
    ] {
        assert!(
            Path::new(f).exists(),
            "{f} is missing: install FRR (apt-get install -y frr; ./scripts/test does when root)"
        );
    }
}

/// The namespaces; deleted on drop, panics included.
pub(crate) struct Net {
    pub(crate) router: String,
    pub(crate) client: String,
    pub(crate) nodes: Vec<String>,
}

impl Net {
    pub(crate) fn new(n: usize) -> Net {
        require_root_and_frr();
        let tag = format!("e{}", std::process::id() % 100_000);
        let net = Net {
            router: format!("{tag}-r"),
            client: format!("{tag}-c"),
            nodes: (0..n).map(|i| format!("{tag}-n{}", i + 1)).collect(),
        };
        for ns in net.all() {
            let _ = try_run(&["ip", "netns", "del", ns]);
            run(&["ip", "netns", "add", ns]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        let r = net.router.as_str();
        in_ns(
            r,
            &[
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
                "net.ipv6.conf.all.forwarding=1",
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
                // ECMP by L4 hash: connections, not just addresses, spread over next hops.
                "net.ipv4.fib_multipath_hash_policy=1",
                "net.ipv6.fib_multipath_hash_policy=1",
            ],
        );
        // Client link.
        run(&[
            "ip",
            "-n",
            r,
            "link",
            "add",
            "rc",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &net.client,
        ]);
        run(&["ip", "-n", r, "addr", "add", "10.98.0.1/24", "dev", "rc"]);
        run(&[
            "ip",
            "-n",
            r,
            "addr",
            "add",
            "fd98::1/64",
            "dev",
            "rc",
            "nodad",
        ]);
        run(&["ip", "-n", r, "link", "set", "rc", "up"]);
        let c = net.client.as_str();
        run(&[
            "ip",
            "-n",
            c,
            "addr",
            "add",
            &format!("{CLIENT}/24"),
            "dev",
            "eth0",
        ]);
        run(&[
            "ip",
            "-n",
            c,
            "addr",
            "add",
            "fd98::2/64",
            "dev",
            "eth0",
            "nodad",
        ]);
        run(&["ip", "-n", c, "link", "set", "eth0", "up"]);
        run(&["ip", "-n", c, "route", "add", "default", "via", "10.98.0.1"]);
        run(&[
            "ip", "-n", c, "-6", "route", "add", "default", "via", "fd98::1",
        ]);
        // Node bridge.
        run(&["ip", "-n", r, "link", "add", "br0", "type", "bridge"]);
        run(&[
            "ip",
            "-n",
            r,
            "addr",
            "add",
            &format!("{ROUTER}/24"),
            "dev",
            "br0",
        ]);
        run(&[
            "ip",
            "-n",
            r,
            "addr",
            "add",
            &format!("{ROUTER6}/64"),
            "dev",
            "br0",
            "nodad",
        ]);
        run(&["ip", "-n", r, "link", "set", "br0", "up"]);
        for (i, n) in net.nodes.iter().enumerate() {
            let port = format!("p{}", i + 1);
            run(&[
                "ip", "-n", r, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", n,
            ]);
            run(&["ip", "-n", r, "link", "set", &port, "master", "br0", "up"]);
            run(&[
                "ip",
                "-n",
                n,
                "addr",
                "add",
                &format!("{}/24", node_ip(i)),
                "dev",
                "eth0",
            ]);
            run(&[
                "ip",
                "-n",
                n,
                "addr",
                "add",
                &format!("{}/64", node_ip6(i)),
                "dev",
                "eth0",
                "nodad",
            ]);
            run(&["ip", "-n", n, "link", "set", "eth0", "up"]);
            run(&["ip", "-n", n, "route", "add", "default", "via", ROUTER]);
            run(&[
                "ip", "-n", n, "-6", "route", "add", "default", "via", ROUTER6,
            ]);
        }
        net
    }

    pub(crate) fn all(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.router)
            .chain(std::iter::once(&self.client))
            .chain(self.nodes.iter())
    }

    /// Makes `vip` local on every node (on lo), as kube-proxy would.
    pub(crate) fn add_vip_everywhere(&self, vip: &str) {
        let cidr = if vip.contains(':') {
            format!("{vip}/128")
        } else {
            format!("{vip}/32")
        };
        for n in &self.nodes {
            run(&["ip", "-n", n, "addr", "add", &cidr, "dev", "lo"]);
        }
    }

    /// Next hops of the router's kernel route to `ip`.
    pub(crate) fn kernel_next_hops(&self, ip: &str) -> Vec<String> {
        let fam = if ip.contains(':') { "-6" } else { "-4" };
        let out =
            try_run(&["ip", fam, "-n", &self.router, "route", "show", ip]).unwrap_or_default();
        let words: Vec<&str> = out.split_whitespace().collect();
        let mut v: Vec<String> = words
            .windows(2)
            .filter(|w| w[0] == "via")
            .map(|w| w[1].to_string())
            .collect();
        v.sort();
        v
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.all() {
            let _ = try_run(&["ip", "netns", "del", ns]);
        }
    }
}

/// Which routing daemon runs in the router namespace.
pub(crate) enum Router {
    /// FRR; with BFD profile `fast` on the IPv4 neighbours when true.
    Frr(bool),
    Bird,
}

pub(crate) enum Daemon {
    Frr(Frr),
    Bird(Bird),
}

pub(crate) struct Cluster {
    pub(crate) net: Net,
    pub(crate) dir: PathBuf,
    pub(crate) kubeconfig: PathBuf,
    pub(crate) daemon: Daemon,
    pub(crate) _cloud: Proc,
    pub(crate) _servers: Vec<Proc>,
    pub(crate) _controller: Option<Proc>,
    pub(crate) speakers: Vec<Option<Proc>>,
    pub(crate) starts: usize,
}

impl Cluster {
    pub(crate) fn start() -> Cluster {
        Cluster::start_with("bgp-speaker", Router::Frr(false))
    }

    pub(crate) fn frr(&self) -> &Frr {
        match &self.daemon {
            Daemon::Frr(f) => f,
            Daemon::Bird(_) => panic!("this cluster's router runs BIRD, not FRR"),
        }
    }

    pub(crate) fn bird(&self) -> &Bird {
        match &self.daemon {
            Daemon::Bird(b) => b,
            Daemon::Frr(_) => panic!("this cluster's router runs FRR, not BIRD"),
        }
    }

    pub(crate) fn start_with(name: &str, router: Router) -> Cluster {
        kubectl_path();
        let net = Net::new(3);
        let dir = scratch_dir(name);
        let daemon = match router {
            Router::Frr(bfd) => Daemon::Frr(Frr::start(&net, &dir, bfd)),
            Router::Bird => Daemon::Bird(Bird::start(&net, &dir)),
        };
        let kubeconfig = dir.join("kubeconfig");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &net.client])
            .arg(binary("mock-cloud"))
            .args(["serve", "--nodes", "0"])
            .args(["--listen", &format!("{CLIENT}:6443")])
            .args([
                "--service-cluster-ip-range",
                "10.96.0.0/12,fd00:10:96::/112",
            ])
            .arg("--kubeconfig")
            .arg(&kubeconfig);
        let mut cloud = Proc::spawn("mock-cloud[bgp]", cmd, dir.join("mock-cloud.log"));
        cloud.wait_for_line("mock-cloud: fault injection at", Duration::from_secs(30));
        let servers = net
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", n])
                    .arg(std::env::current_exe().expect("test exe"))
                    .args(["--exact", "harness::helper_bgp_node_server", "--nocapture"])
                    .env("BERTH_BGP_SERVER", format!("node-{}", i + 1));
                Proc::spawn(
                    &format!("server[node-{}]", i + 1),
                    c,
                    dir.join(format!("server-{}.log", i + 1)),
                )
            })
            .collect();
        let mut c = Cluster {
            net,
            dir,
            kubeconfig,
            daemon,
            _cloud: cloud,
            _servers: servers,
            _controller: None,
            speakers: vec![],
            starts: 0,
        };
        let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds/berth.io_crds.yaml");
        c.kubectl(&["apply", "-f", crds.to_str().unwrap()])
            .unwrap_or_else(|e| panic!("install the CRDs: {e}"));
        wait_for(
            "the BGP resources to be served",
            Duration::from_secs(20),
            || {
                c.kubectl(&[
                    "get",
                    "bgppeers,bgpadvertisements,bfdprofiles,bgpsessionstatuses",
                ])
                .ok()
            },
        );
        let nodes: Vec<Value> = (0..3)
            .map(|i| {
                json!({"apiVersion": "v1", "kind": "Node",
                       "metadata": {"name": format!("node-{}", i + 1)},
                       "status": {"addresses": [{"type": "InternalIP", "address": node_ip(i)}],
                                  "conditions": [{"type": "Ready", "status": "True"}]}})
            })
            .collect();
        c.apply(&nodes);
        for i in 0..3 {
            let name = format!("node-{}", i + 1);
            let n = c.get("node", &name).expect("node exists");
            if n["status"]["addresses"][0]["address"] != node_ip(i).as_str() {
                c.kubectl(&[
                    "patch", "node", &name, "--subresource=status", "--type=merge", "-p",
                    &json!({"status": {"addresses": [{"type": "InternalIP", "address": node_ip(i)}]}})
                        .to_string(),
                ])
                .expect("patch node address");
            }
        }
        c.apply(&[
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "berth-system"}}),
            json!({"apiVersion": "berth.io/v1alpha1", "kind": "IPAddressPool",
                   "metadata": {"name": "bgp"}, "spec": {"addresses": POOL}}),
            json!({"apiVersion": "berth.io/v1alpha1", "kind": "BGPPeer",
                   "metadata": {"name": "router"},
                   "spec": {"peerAddress": ROUTER, "peerASN": AS, "myASN": AS, "holdTime": "9s"}}),
            json!({"apiVersion": "berth.io/v1alpha1", "kind": "BGPAdvertisement",
                   "metadata": {"name": "bgp"},
                   "spec": {"ipAddressPools": ["bgp"], "localPref": 150,
                            "communities": ["64512:100", "64512:1:2"]}}),
        ]);
        std::fs::write(c.dir.join("membership-key"), format!("{KEY}\n")).unwrap();
        for i in 0..3 {
            c.speakers.push(None);
            c.start_speaker(i);
        }
        let mut ctl = Command::new("ip");
        ctl.args(["netns", "exec", &c.net.client])
            .arg(binary("berth"))
            .arg("controller")
            .arg("--kubeconfig")
            .arg(&c.kubeconfig)
            .args(["--provider", "l2", "--cluster-name", "bgp-e2e"])
            .args(["--leader-elect", "false", "--metrics-listen", "off"])
            .env("RUST_LOG", "info,kube_client=warn,kube_runtime=warn")
            .env("NO_COLOR", "1");
        let mut p = Proc::spawn("berth[controller]", ctl, c.dir.join("controller.log"));
        p.wait_for_line("Caches synced; reconciling", Duration::from_secs(30));
        c._controller = Some(p);
        c
    }

    pub(crate) fn start_speaker(&mut self, i: usize) {
        self.starts += 1;
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.net.nodes[i]])
            .arg(binary("berth"))
            .arg("speaker")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--node-name", &format!("node-{}", i + 1)])
            .args(["--memberlist-bind", &node_ip(i)])
            .arg("--membership-key-file")
            .arg(self.dir.join("membership-key"))
            .args(["--metrics-listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info,kube_client=warn,kube_runtime=warn")
            .env("NO_COLOR", "1");
        let mut p = Proc::spawn(
            &format!("speaker[node-{}]", i + 1),
            c,
            self.dir
                .join(format!("speaker-{}-{}.log", i + 1, self.starts)),
        );
        p.wait_for_line("BGP session starting", Duration::from_secs(30));
        self.speakers[i] = Some(p);
    }

    pub(crate) fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.net.client])
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

    pub(crate) fn apply(&self, objs: &[Value]) {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let f = self.dir.join(format!("manifest-{n}.json"));
        let list = json!({"apiVersion": "v1", "kind": "List", "items": objs});
        std::fs::write(&f, list.to_string()).expect("write manifest");
        self.kubectl(&["apply", "-f", f.to_str().unwrap()])
            .unwrap_or_else(|e| panic!("kubectl apply: {e}"));
    }

    pub(crate) fn get(&self, kind: &str, name: &str) -> Option<Value> {
        self.kubectl(&["get", kind, name, "-o", "json"])
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
    }

    /// A LoadBalancer Service of our class; returns its VIP, made local on every node.
    pub(crate) fn service(&self, name: &str, extra: Value) -> String {
        let mut svc = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": CLASS,
                     "selector": {"app": name},
                     "ports": [{"port": PORT, "targetPort": PORT, "protocol": "TCP"}]}
        });
        merge(&mut svc, &extra);
        self.apply(&[svc]);
        let vip = wait_for(
            &format!("the controller to give {name} a VIP"),
            Duration::from_secs(30),
            || {
                let s = self.get("service", name)?;
                s["status"]["loadBalancer"]["ingress"][0]["ip"]
                    .as_str()
                    .map(str::to_string)
            },
        );
        self.net.add_vip_everywhere(&vip);
        println!("bgp: the controller gave {name} {vip}");
        vip
    }

    /// `(state, routesAdvertised, lastError)` of a BGPSessionStatus.
    pub(crate) fn session(&self, peer: &str, node: &str) -> Option<(String, i64, String)> {
        let o = self.get("bgpsessionstatus", &format!("{peer}-{node}"))?;
        let s = &o["status"];
        Some((
            s["state"].as_str().unwrap_or("").to_string(),
            s["routesAdvertised"].as_i64().unwrap_or(-1),
            s["lastError"].as_str().unwrap_or("").to_string(),
        ))
    }

    pub(crate) fn warnings_about(&self, peer: &str) -> String {
        self.kubectl(&[
            "get",
            "events",
            "-A",
            "--field-selector",
            &format!("involvedObject.name={peer}"),
            "-o",
            "json",
        ])
        .unwrap_or_default()
    }
}

pub(crate) fn merge(a: &mut Value, b: &Value) {
    if let (Some(a), Some(b)) = (a.as_object_mut(), b.as_object()) {
        for (k, v) in b {
            match a.get_mut(k) {
                Some(x) if x.is_object() && v.is_object() => merge(x, v),
                _ => {
                    a.insert(k.clone(), v.clone());
                }
            }
        }
    }
}

/// Polls `f` every 10 ms until true; the time it took (panics after `limit`).
pub(crate) fn time_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    t0.elapsed()
}

/// `n` TCP connections from the client to `vip:PORT`: answers per node.
pub(crate) fn spread(net: &Net, vip: &str, n: usize) -> BTreeMap<String, usize> {
    let script = format!(
        "for i in $(seq {n}); do exec 3<>/dev/tcp/{vip}/{PORT} && head -n1 <&3; exec 3<&-; done"
    );
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &net.client,
            "timeout",
            "120",
            "bash",
            "-c",
            &script,
        ])
        .output()
        .expect("run bash in the client");
    let mut counts = BTreeMap::new();
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        *counts.entry(l.trim().to_string()).or_insert(0) += 1;
    }
    counts
}
