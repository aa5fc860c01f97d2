//! The routers of the BGP end-to-end tests: FRR (zebra, bgpd, bfdd) or BIRD 2 in the router
//! namespace, configured for the three nodes, and what the tests read from them.

#![allow(dead_code)]

use crate::harness::*;
use berth_tests::{Proc, wait_for};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// FRR (zebra, bfdd, bgpd) in the router namespace, with its config and sockets in `dir`.
pub(crate) struct Frr {
    pub(crate) dir: PathBuf,
    pub(crate) ns: String,
    pub(crate) _procs: Vec<Proc>,
}

impl Frr {
    /// With `bfd`, bfdd has the profile `fast` (300 ms x 3) and the IPv4 neighbours use it.
    pub(crate) fn start(net: &Net, dir: &Path, bfd: bool) -> Frr {
        let dir = dir.join("frr");
        std::fs::create_dir_all(&dir).expect("frr dir");
        // FRR drops privileges to user frr.
        run(&[
            "chmod",
            "0777",
            dir.parent().unwrap().to_str().unwrap(),
            dir.to_str().unwrap(),
        ]);
        std::fs::write(dir.join("zebra.conf"), "hostname router\n").unwrap();
        let profile = if bfd {
            " profile fast\n  detect-multiplier 3\n  receive-interval 300\n  transmit-interval 300\n !\n"
        } else {
            ""
        };
        std::fs::write(
            dir.join("bfdd.conf"),
            format!("hostname router\nbfd\n{profile}!\n"),
        )
        .unwrap();
        let mut bgp = format!(
            "hostname router\nrouter bgp {AS}\n bgp router-id {ROUTER}\n no bgp ebgp-requires-policy\n no bgp default ipv4-unicast\n"
        );
        for i in 0..net.nodes.len() {
            bgp += &format!(" neighbor {} remote-as {AS}\n", node_ip(i));
            bgp += &format!(" neighbor {} timers connect 1\n", node_ip(i));
            if bfd {
                bgp += &format!(" neighbor {} bfd profile fast\n", node_ip(i));
            }
            bgp += &format!(" neighbor {} remote-as {AS}\n", node_ip6(i));
            bgp += &format!(" neighbor {} password {MD5}\n", node_ip6(i));
            bgp += &format!(" neighbor {} timers connect 1\n", node_ip6(i));
        }
        for (af, ip) in [("ipv4", node_ip as fn(usize) -> String), ("ipv6", node_ip6)] {
            bgp += &format!(" address-family {af} unicast\n  maximum-paths ibgp 8\n");
            for i in 0..net.nodes.len() {
                bgp += &format!("  neighbor {} activate\n", ip(i));
            }
            bgp += " exit-address-family\n";
        }
        bgp += "!\n";
        std::fs::write(dir.join("bgpd.conf"), bgp).unwrap();
        let d = dir.to_str().unwrap().to_string();
        let daemon = |name: &str, extra: &[&str]| -> Proc {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &net.router])
                .arg(format!("/usr/lib/frr/{name}"))
                .args(["-f", &format!("{d}/{name}.conf")])
                .args(["-i", &format!("{d}/{name}.pid")])
                .args(["-z", &format!("{d}/zserv.api")])
                .args(["--vty_socket", &d, "-P", "0"])
                .args(extra);
            Proc::spawn(&format!("frr {name}"), c, dir.join(format!("{name}.log")))
        };
        let mut procs = vec![daemon("zebra", &[])];
        wait_for("zebra to start", Duration::from_secs(10), || {
            dir.join("zserv.api").exists().then_some(())
        });
        procs.push(daemon("bfdd", &["--bfdctl", &format!("{d}/bfdd.sock")]));
        procs.push(daemon("bgpd", &["-l", ROUTER, "-l", ROUTER6]));
        let frr = Frr {
            dir,
            ns: net.router.clone(),
            _procs: procs,
        };
        wait_for("bgpd to answer vtysh", Duration::from_secs(15), || {
            frr.vtysh("show bgp summary json")
        });
        frr
    }

    pub(crate) fn vtysh(&self, cmd: &str) -> Option<String> {
        self.vtysh_all(&[cmd])
    }

    /// Several commands in one vtysh session (`configure terminal` and what follows).
    pub(crate) fn vtysh_all(&self, cmds: &[&str]) -> Option<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "vtysh", "--vty_socket"])
            .arg(&self.dir)
            .args(cmds.iter().flat_map(|c| ["-c", c]))
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub(crate) fn json(&self, cmd: &str) -> Value {
        self.vtysh(cmd)
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(Value::Null)
    }

    pub(crate) fn state(&self, peer: &str) -> String {
        let af = if peer.contains(':') {
            "ipv6Unicast"
        } else {
            "ipv4Unicast"
        };
        self.json("show bgp summary json")[af]["peers"][peer]["state"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Active next hops of the selected route to `prefix` in zebra's RIB.
    pub(crate) fn rib_next_hops(&self, prefix: &str) -> Vec<String> {
        let cmd = if prefix.contains(':') {
            format!("show ipv6 route {prefix} json")
        } else {
            format!("show ip route {prefix} json")
        };
        let v = self.json(&cmd);
        let mut out: Vec<String> = v[prefix]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["selected"] == true)
            .flat_map(|r| r["nexthops"].as_array().cloned().unwrap_or_default())
            .filter(|nh| nh["active"] == true)
            .filter_map(|nh| nh["ip"].as_str().map(str::to_string))
            .collect();
        out.sort();
        out
    }
}

/// BIRD 2 in the router namespace: iBGP with the three nodes (direct, so next hops need no
/// IGP), a kernel protocol with `merge paths on` so the kernel route is multipath.
pub(crate) struct Bird {
    pub(crate) sock: PathBuf,
    pub(crate) ns: String,
    pub(crate) _proc: Proc,
}

impl Bird {
    pub(crate) fn start(net: &Net, dir: &Path) -> Bird {
        for f in ["/usr/sbin/bird", "/usr/sbin/birdc"] {
            assert!(
                Path::new(f).exists(),
                "{f} is missing: install BIRD 2 (apt-get install -y bird2; ./scripts/test does when root)"
            );
        }
        let dir = dir.join("bird");
        std::fs::create_dir_all(&dir).expect("bird dir");
        run(&[
            "chmod",
            "0777",
            dir.parent().unwrap().to_str().unwrap(),
            dir.to_str().unwrap(),
        ]);
        let mut conf = format!(
            "router id {ROUTER};\nprotocol device {{}}\n\
             protocol kernel {{ ipv4 {{ export all; }}; merge paths on; }}\n"
        );
        for i in 0..net.nodes.len() {
            conf += &format!(
                "protocol bgp node{} {{\n  local {ROUTER} as {AS};\n  neighbor {} as {AS};\n  \
                 direct;\n  hold time 9;\n  connect retry time 1;\n  \
                 ipv4 {{ gateway direct; import all; export none; }};\n}}\n",
                i + 1,
                node_ip(i)
            );
        }
        let cfg = dir.join("bird.conf");
        std::fs::write(&cfg, conf).unwrap();
        let sock = dir.join("bird.ctl");
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &net.router, "/usr/sbin/bird", "-f", "-c"])
            .arg(&cfg)
            .arg("-s")
            .arg(&sock)
            .arg("-P")
            .arg(dir.join("bird.pid"));
        let bird = Bird {
            sock,
            ns: net.router.clone(),
            _proc: Proc::spawn("bird", c, dir.join("bird.log")),
        };
        wait_for("bird to answer birdc", Duration::from_secs(15), || {
            bird.birdc("show status")
        });
        bird
    }

    pub(crate) fn birdc(&self, cmd: &str) -> Option<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "/usr/sbin/birdc", "-s"])
            .arg(&self.sock)
            .args(cmd.split_whitespace())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
