//! Test topology: a router namespace with a bridge (10.77.0.1/24, fd00:77::1/64) and node
//! namespaces on it (10.77.0.1N, fd00:77::1N), each node running `berth-bgp-node`; the router
//! runs FRR (zebra, bgpd, bfdd) or BIRD 2. Everything is torn down on drop, panics included.
//! Missing tools make the tests fail, never skip.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const ROUTER_AS: u32 = 64512;
pub const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const ROUTER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 1);

pub fn node_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, 11 + i as u8)
}

pub fn node_ip6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 0x11 + i as u16)
}

pub fn run(cmd: &[&str]) -> String {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is it installed?)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run_quiet(cmd: &[&str]) {
    let _ = Command::new(cmd[0])
        .args(&cmd[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Fails loudly when a prerequisite is missing.
pub fn require(tools: &[&str]) {
    assert!(
        nix_is_root(),
        "these tests need root (network namespaces); run them as root as CI does"
    );
    for t in tools {
        let found = Path::new(t).is_absolute() && Path::new(t).exists()
            || Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .stdout(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
        assert!(
            found,
            "{t} is missing: install frr and bird2 (./scripts/test does so when root)"
        );
    }
}

fn nix_is_root() -> bool {
    run(&["id", "-u"]).trim() == "0"
}

pub fn wait_until(timeout: Duration, step: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(step);
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Namespaces, a temp dir and the processes started in them.
pub struct Topology {
    pub router: String,
    pub nodes: Vec<String>,
    pub dir: PathBuf,
    children: Vec<Child>,
}

impl Topology {
    pub fn new(n_nodes: usize) -> Self {
        let tag = format!(
            "bb{}x{}",
            std::process::id() % 100_000,
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let dir = std::env::temp_dir().join(format!("berth-bgp-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let t = Topology {
            router: format!("{tag}-r"),
            nodes: (0..n_nodes).map(|i| format!("{tag}-n{i}")).collect(),
            dir,
            children: vec![],
        };
        let r = t.router.clone();
        run(&["ip", "netns", "add", &r]);
        run(&["ip", "-n", &r, "link", "set", "lo", "up"]);
        run(&["ip", "-n", &r, "link", "add", "br0", "type", "bridge"]);
        run(&["ip", "-n", &r, "link", "set", "br0", "up"]);
        run(&["ip", "-n", &r, "addr", "add", "10.77.0.1/24", "dev", "br0"]);
        run(&[
            "ip",
            "-n",
            &r,
            "addr",
            "add",
            "fd00:77::1/64",
            "dev",
            "br0",
            "nodad",
        ]);
        for (i, n) in t.nodes.clone().iter().enumerate() {
            run(&["ip", "netns", "add", n]);
            run(&["ip", "-n", n, "link", "set", "lo", "up"]);
            run(&[
                "ip",
                "netns",
                "exec",
                n,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.keep_addr_on_down=1",
            ]);
            let port = format!("p{i}");
            run(&[
                "ip", "-n", &r, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", n,
            ]);
            run(&["ip", "-n", &r, "link", "set", &port, "master", "br0", "up"]);
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
        }
        t
    }

    /// Spawns `cmd` inside namespace `ns`; killed on drop.
    pub fn spawn(&mut self, ns: &str, cmd: &[&str], log: &str) {
        let logf = std::fs::File::create(self.dir.join(log)).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(cmd)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        self.children.push(child);
    }

    pub fn link(&self, node: usize, up: bool) {
        run(&[
            "ip",
            "-n",
            &self.nodes[node],
            "link",
            "set",
            "eth0",
            if up { "up" } else { "down" },
        ]);
    }

    /// `ip route show PREFIX` in the router namespace.
    pub fn kernel_route(&self, prefix: &str, v6: bool) -> String {
        let fam = if v6 { "-6" } else { "-4" };
        run(&["ip", fam, "-n", &self.router, "route", "show", prefix])
    }

    /// Next hops of the kernel route for `prefix` in the router namespace.
    pub fn kernel_next_hops(&self, prefix: &str, v6: bool) -> Vec<IpAddr> {
        let out = self.kernel_route(prefix, v6);
        let words: Vec<&str> = out.split_whitespace().collect();
        words
            .windows(2)
            .filter(|w| w[0] == "via")
            .filter_map(|w| w[1].parse().ok())
            .collect()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // FRR daemons stay in the foreground as our children; BIRD too. Delete namespaces.
        for n in &self.nodes {
            run_quiet(&["ip", "netns", "del", n]);
        }
        run_quiet(&["ip", "netns", "del", &self.router]);
        if std::env::var_os("BERTH_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// FRR neighbour settings for one node.
#[derive(Clone)]
pub struct FrrNeighbor {
    pub addr: IpAddr,
    pub password: Option<String>,
    pub bfd: bool,
    /// (keepalive, hold)
    pub timers: Option<(u16, u16)>,
}

impl Default for FrrNeighbor {
    fn default() -> Self {
        Self {
            addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            password: None,
            bfd: false,
            timers: None,
        }
    }
}

/// zebra + bfdd + bgpd in the router namespace, foreground, config and sockets in the
/// topology's temp dir (chmod 0777: FRR drops privileges to user frr).
pub struct Frr {
    pub dir: PathBuf,
    pub ns: String,
}

pub const FRR_DAEMONS: &str = "/usr/lib/frr";

impl Frr {
    pub fn start(t: &mut Topology, neighbors: &[FrrNeighbor]) -> Frr {
        require(&[
            "/usr/lib/frr/zebra",
            "/usr/lib/frr/bgpd",
            "/usr/lib/frr/bfdd",
            "vtysh",
        ]);
        let dir = t.dir.join("frr");
        std::fs::create_dir_all(&dir).unwrap();
        run(&[
            "chmod",
            "0777",
            t.dir.to_str().unwrap(),
            dir.to_str().unwrap(),
        ]);
        std::fs::write(
            dir.join("zebra.conf"),
            "hostname router\nlog stdout informational\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("bfdd.conf"),
            "hostname router\nbfd\n profile fast\n  detect-multiplier 3\n  receive-interval 300\n  transmit-interval 300\n !\n!\n",
        )
        .unwrap();
        let mut bgp = format!(
            "hostname router\nrouter bgp {ROUTER_AS}\n bgp router-id {ROUTER}\n no bgp ebgp-requires-policy\n no bgp default ipv4-unicast\n"
        );
        for n in neighbors {
            bgp += &format!(" neighbor {} remote-as {ROUTER_AS}\n", n.addr);
            if let Some(p) = &n.password {
                bgp += &format!(" neighbor {} password {p}\n", n.addr);
            }
            if n.bfd {
                bgp += &format!(" neighbor {} bfd profile fast\n", n.addr);
            }
            if let Some((k, h)) = n.timers {
                bgp += &format!(" neighbor {} timers {k} {h}\n", n.addr);
            }
            bgp += &format!(" neighbor {} timers connect 1\n", n.addr);
        }
        for af in ["ipv4", "ipv6"] {
            bgp += &format!(" address-family {af} unicast\n  maximum-paths ibgp 8\n");
            for n in neighbors {
                bgp += &format!("  neighbor {} activate\n", n.addr);
            }
            bgp += " exit-address-family\n";
        }
        bgp += "!\n";
        std::fs::write(dir.join("bgpd.conf"), bgp).unwrap();
        let d = dir.to_str().unwrap().to_string();
        let z = format!("{d}/zserv.api");
        let common = |name: &str| -> Vec<String> {
            vec![
                format!("{FRR_DAEMONS}/{name}"),
                "-f".into(),
                format!("{d}/{name}.conf"),
                "-i".into(),
                format!("{d}/{name}.pid"),
                "-z".into(),
                z.clone(),
                "--vty_socket".into(),
                d.clone(),
                "-P".into(),
                "0".into(),
            ]
        };
        let ns = t.router.clone();
        let zebra = common("zebra");
        t.spawn(
            &ns,
            &zebra.iter().map(String::as_str).collect::<Vec<_>>(),
            "zebra.log",
        );
        assert!(
            wait_until(Duration::from_secs(10), Duration::from_millis(50), || dir
                .join("zserv.api")
                .exists()),
            "zebra did not start"
        );
        let mut bfdd = common("bfdd");
        bfdd.extend(["--bfdctl".into(), format!("{d}/bfdd.sock")]);
        t.spawn(
            &ns,
            &bfdd.iter().map(String::as_str).collect::<Vec<_>>(),
            "bfdd.log",
        );
        let mut bgpd = common("bgpd");
        bgpd.extend([
            "-l".into(),
            ROUTER.to_string(),
            "-l".into(),
            ROUTER6.to_string(),
        ]);
        t.spawn(
            &ns,
            &bgpd.iter().map(String::as_str).collect::<Vec<_>>(),
            "bgpd.log",
        );
        let frr = Frr { dir, ns };
        assert!(
            wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
                frr.try_vtysh("show bgp summary json").is_some()
            }),
            "bgpd did not start; see {}",
            t.dir.display()
        );
        frr
    }

    pub fn try_vtysh(&self, cmd: &str) -> Option<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "vtysh", "--vty_socket"])
            .arg(&self.dir)
            .args(["-c", cmd])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn json(&self, cmd: &str) -> Value {
        let s = self
            .try_vtysh(cmd)
            .unwrap_or_else(|| panic!("vtysh -c '{cmd}' failed"));
        serde_json::from_str(&s).unwrap_or(Value::Null)
    }

    /// BGP session state of a neighbour ("Established", "Active", ...).
    pub fn peer_state(&self, addr: impl Into<IpAddr>) -> String {
        let addr: IpAddr = addr.into();
        let af = if addr.is_ipv4() {
            "ipv4Unicast"
        } else {
            "ipv6Unicast"
        };
        let v = self.json("show bgp summary json");
        v[af]["peers"][addr.to_string()]["state"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Next hops of `prefix` installed in zebra's RIB (selected route, FIB-installed).
    pub fn rib_next_hops(&self, prefix: &str, v6: bool) -> Vec<String> {
        let cmd = if v6 {
            format!("show ipv6 route {prefix} json")
        } else {
            format!("show ip route {prefix} json")
        };
        let v = self.json(&cmd);
        let mut out = vec![];
        if let Some(routes) = v[prefix].as_array() {
            for r in routes {
                if r["selected"].as_bool() != Some(true) {
                    continue;
                }
                for nh in r["nexthops"].as_array().into_iter().flatten() {
                    if nh["active"].as_bool() == Some(true)
                        && let Some(ip) = nh["ip"].as_str()
                    {
                        out.push(ip.to_string());
                    }
                }
            }
        }
        out.sort();
        out
    }
}

/// A `berth-bgp-node` process in a node namespace.
pub struct Node {
    pub pid: u32,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    pub statuses: Arc<Mutex<Vec<Value>>>,
}

pub fn node_bin() -> &'static str {
    env!("CARGO_BIN_EXE_berth-bgp-node")
}

/// A node config peering with the router: iBGP, hold `hold`, optional BFD and password.
pub fn node_config(
    i: usize,
    my_as: u32,
    hold: u16,
    bfd: bool,
    password: Option<&str>,
    routes: Value,
) -> Value {
    let mut peer = json!({
        "address": ROUTER.to_string(),
        "peer_as": ROUTER_AS,
        "my_as": my_as,
        "router_id": node_ip(i).to_string(),
        "hold_time": hold,
        "connect_retry_min": {"secs": 0, "nanos": 200_000_000},
        "connect_retry_max": {"secs": 2, "nanos": 0},
    });
    if bfd {
        peer["bfd"] = json!({"min_tx_ms": 300, "min_rx_ms": 300, "detect_mult": 3});
    }
    if let Some(p) = password {
        peer["password"] = json!(p);
    }
    json!({
        "listen": format!("{}:179", node_ip(i)),
        "peers": [peer],
        "routes": routes,
    })
}

impl Node {
    pub fn start(t: &Topology, i: usize, config: &Value) -> Node {
        let path = t.dir.join(format!("node{i}.json"));
        std::fs::write(&path, config.to_string()).unwrap();
        let log = std::fs::File::create(t.dir.join(format!("node{i}.log"))).unwrap();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &t.nodes[i], node_bin()])
            .arg(&path)
            .env(
                "RUST_LOG",
                std::env::var("BERTH_NODE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn berth-bgp-node");
        let stdout = child.stdout.take().unwrap();
        let statuses: Arc<Mutex<Vec<Value>>> = Arc::default();
        let s2 = statuses.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    s2.lock().unwrap().push(v);
                }
            }
        });
        Node {
            pid: child.id(),
            stdin: child.stdin.take(),
            child: Some(child),
            statuses,
        }
    }

    pub fn command(&mut self, cmd: Value) {
        let stdin = self.stdin.as_mut().expect("node stdin");
        writeln!(stdin, "{cmd}").unwrap();
        stdin.flush().unwrap();
    }

    pub fn last_status(&self) -> Value {
        self.statuses
            .lock()
            .unwrap()
            .last()
            .map(|v| v["status"].clone())
            .unwrap_or(Value::Null)
    }

    /// SIGTERM (graceful shutdown) and wait for the exit.
    pub fn sigterm(&mut self) -> std::process::ExitStatus {
        self.send_sigterm();
        self.wait_exit()
    }

    /// SIGTERM without waiting. `ip netns exec` execs the binary, so the child's pid is the
    /// speaker's.
    pub fn send_sigterm(&self) {
        run(&["kill", "-TERM", &self.pid.to_string()]);
    }

    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().unwrap();
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < end, "node did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// BIRD 2 in the router namespace.
pub struct Bird {
    pub sock: PathBuf,
    pub ns: String,
}

impl Bird {
    pub fn start(t: &mut Topology, config: &str) -> Bird {
        require(&["bird", "birdc"]);
        let conf = t.dir.join("bird.conf");
        std::fs::write(&conf, config).unwrap();
        let sock = t.dir.join("bird.ctl");
        let ns = t.router.clone();
        t.spawn(
            &ns,
            &[
                "bird",
                "-f",
                "-c",
                conf.to_str().unwrap(),
                "-s",
                sock.to_str().unwrap(),
                "-P",
                t.dir.join("bird.pid").to_str().unwrap(),
            ],
            "bird.log",
        );
        let b = Bird { sock, ns };
        assert!(
            wait_until(Duration::from_secs(10), Duration::from_millis(100), || b
                .try_birdc("show status")
                .is_some()),
            "bird did not start; see {}",
            t.dir.display()
        );
        b
    }

    pub fn try_birdc(&self, cmd: &str) -> Option<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "birdc", "-s"])
            .arg(&self.sock)
            .args(cmd.split_whitespace())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn birdc(&self, cmd: &str) -> String {
        self.try_birdc(cmd)
            .unwrap_or_else(|| panic!("birdc {cmd} failed"))
    }
}
