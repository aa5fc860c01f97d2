//! Network namespaces for the l2 speaker tests: a bridge namespace, a client namespace and
//! node namespaces on one private subnet (10.99.0.0/24, fd99::/64) that exists only inside
//! them. Everything is deleted on drop, even when a test fails.

use std::process::{Command, Output};

/// Runs a command; panics with its output on failure.
pub fn run(args: &[&str]) -> String {
    try_run(args).unwrap_or_else(|e| panic!("{args:?} failed: {e}"))
}

pub fn try_run(args: &[&str]) -> Result<String, String> {
    let out: Output = Command::new(args[0])
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

/// Fails loudly (never skips) unless we are root with every tool the tests use.
pub fn require_root_and_tools() {
    let uid = try_run(&["id", "-u"]).unwrap_or_default();
    assert_eq!(
        uid.trim(),
        "0",
        "the l2 speaker tests need root (network namespaces, raw sockets); run ./scripts/test as root"
    );
    for (tool, pkg) in [
        ("ip", "iproute2"),
        ("arping", "iputils-arping"),
        ("ndisc6", "ndisc6"),
        ("bash", "bash"),
        ("nft", "nftables"),
    ] {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
        assert!(
            found,
            "{tool} is required by the l2 speaker tests: apt-get install -y {pkg}"
        );
    }
}

/// One namespace attached to the bridge.
#[derive(Clone)]
pub struct Host {
    pub ns: String,
    pub ip4: String,
    pub ip6: String,
    pub mac: String,
    /// The bridge-side veth.
    pub port: String,
}

impl Host {
    /// `ip netns exec NS ARGS...` as a Command.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).args(args);
        c
    }

    pub fn run(&self, args: &[&str]) -> String {
        let mut a = vec!["ip", "netns", "exec", &self.ns];
        a.extend_from_slice(args);
        run(&a)
    }

    pub fn try_run(&self, args: &[&str]) -> Result<String, String> {
        let mut a = vec!["ip", "netns", "exec", &self.ns];
        a.extend_from_slice(args);
        try_run(&a)
    }
}

/// The topology; deleted on drop.
pub struct Topology {
    #[allow(dead_code)]
    pub tag: String,
    pub bridge_ns: String,
    pub client: Host,
    pub nodes: Vec<Host>,
}

impl Topology {
    /// A bridge, a client (10.99.0.1) and `n` nodes (10.99.0.11..).
    pub fn new(n: usize) -> Topology {
        require_root_and_tools();
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n_topo = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("b{}x{n_topo}", std::process::id() % 100_000);
        let bridge_ns = format!("{tag}-br");
        let mut t = Topology {
            tag: tag.clone(),
            bridge_ns: bridge_ns.clone(),
            client: Host {
                ns: String::new(),
                ip4: String::new(),
                ip6: String::new(),
                mac: String::new(),
                port: String::new(),
            },
            nodes: vec![],
        };
        let _ = try_run(&["ip", "netns", "del", &bridge_ns]);
        run(&["ip", "netns", "add", &bridge_ns]);
        let brx = |args: &[&str]| {
            let mut a = vec!["ip", "-n", &bridge_ns];
            a.extend_from_slice(args);
            run(&a);
        };
        brx(&[
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        brx(&["link", "set", "br0", "up"]);
        let add = |name: &str, k: u8| -> Host {
            let ns = format!("{tag}-{name}");
            let port = format!("p{k}");
            let _ = try_run(&["ip", "netns", "del", &ns]);
            run(&["ip", "netns", "add", &ns]);
            brx(&[
                "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ]);
            brx(&["link", "set", &port, "master", "br0", "up"]);
            let mac = format!("02:99:00:00:00:{k:02x}");
            let h = Host {
                ns: ns.clone(),
                ip4: format!("10.99.0.{k}"),
                ip6: format!("fd99::{k:x}"),
                mac: mac.clone(),
                port,
            };
            h.run(&["ip", "link", "set", "lo", "up"]);
            h.run(&["ip", "link", "set", "eth0", "address", &mac]);
            h.run(&["ip", "addr", "add", &format!("{}/24", h.ip4), "dev", "eth0"]);
            h.run(&[
                "ip",
                "addr",
                "add",
                &format!("{}/64", h.ip6),
                "dev",
                "eth0",
                "nodad",
            ]);
            h.run(&["ip", "link", "set", "eth0", "up"]);
            h
        };
        t.client = add("c", 1);
        for i in 0..n {
            let k = 11 + i as u8;
            let h = add(&format!("n{}", i + 1), k);
            // The VIPs are local on lo (the listener stands in for kube-proxy), but only the
            // speaker may answer ARP/NDP for them.
            h.run(&[
                "sysctl",
                "-qw",
                "net.ipv4.conf.all.arp_ignore=1",
                "net.ipv4.conf.all.arp_announce=2",
                "net.ipv4.conf.eth0.arp_ignore=1",
                "net.ipv4.conf.eth0.arp_announce=2",
            ]);
            t.nodes.push(h);
        }
        t
    }

    /// Makes `vip` local on every node (on lo).
    pub fn add_vip_everywhere(&self, vip: &str) {
        let prefix = if vip.contains(':') { "128" } else { "32" };
        for h in &self.nodes {
            let mut a = vec!["ip", "addr", "add"];
            let cidr = format!("{vip}/{prefix}");
            a.push(&cidr);
            a.extend(["dev", "lo"]);
            if vip.contains(':') {
                a.push("nodad");
            }
            h.run(&a);
        }
    }

    /// Takes a node's bridge port down (a pulled cable) or up again.
    pub fn set_port(&self, node: &Host, up: bool) {
        run(&[
            "ip",
            "-n",
            &self.bridge_ns,
            "link",
            "set",
            &node.port,
            if up { "up" } else { "down" },
        ]);
    }

    pub fn node_by_mac(&self, mac: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|h| h.mac.eq_ignore_ascii_case(mac))
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for h in self.nodes.iter().chain(std::iter::once(&self.client)) {
            if !h.ns.is_empty() {
                let _ = try_run(&["ip", "netns", "del", &h.ns]);
            }
        }
        let _ = try_run(&["ip", "netns", "del", &self.bridge_ns]);
    }
}

/// MACs that answered one `arping` request for `vip` from `client` (waits `wait_s` whole
/// seconds; one request per call).
pub fn arping_macs(client: &Host, vip: &str, wait_s: &str) -> Vec<String> {
    let out = client
        .cmd(&[
            "arping", "-I", "eth0", "-c", "2", "-i", "2", "-w", wait_s, vip,
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut macs: Vec<String> = out
        .lines()
        .filter(|l| l.contains("reply from"))
        .filter_map(|l| {
            let a = l.find('[')?;
            let b = l.find(']')?;
            Some(l[a + 1..b].to_ascii_lowercase())
        })
        .collect();
    macs.sort();
    macs.dedup();
    macs
}

/// MACs in the neighbor advertisements `ndisc6` got for `vip`.
pub fn ndisc6_macs(client: &Host, vip: &str) -> Vec<String> {
    let out = client
        .cmd(&["ndisc6", "-m", "-n", "-r", "1", "-w", "500", vip, "eth0"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut macs: Vec<String> = out
        .lines()
        .filter(|l| l.contains("Target link-layer address"))
        .filter_map(|l| {
            l.split(':')
                .skip(1)
                .collect::<Vec<_>>()
                .join(":")
                .trim()
                .to_ascii_lowercase()
                .into()
        })
        .collect();
    macs.sort();
    macs.dedup();
    macs
}

/// The client's neighbour entry for `ip` (lladdr), if any.
pub fn neigh(client: &Host, ip: &str) -> Option<String> {
    let out = client
        .try_run(&["ip", "neigh", "show", ip, "dev", "eth0"])
        .ok()?;
    let mut it = out.split_whitespace();
    while let Some(w) = it.next() {
        if w == "lladdr" {
            return it.next().map(|m| m.to_ascii_lowercase());
        }
    }
    None
}

/// What the server at `ip:port` says (its node name), over TCP from the client.
pub fn tcp_ask(client: &Host, ip: &str, port: u16, timeout: &str) -> Option<String> {
    let script = format!("exec 3<>/dev/tcp/{ip}/{port} && head -c 64 <&3");
    let out = client
        .cmd(&["timeout", timeout, "bash", "-c", &script])
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!s.is_empty()).then_some(s)
}
