//! Which interfaces a speaker announces on, and what it needs to know of them (index, MAC,
//! IPv4 subnets), read from `/sys/class/net` and `/proc/net/route` without any syscall
//! beyond file reads.

use super::frames::{Mac, parse_mac};
use std::net::Ipv4Addr;
use std::path::Path;

/// One interface the speaker may announce on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    pub mac: Mac,
}

/// Names skipped by default: loopback, container and CNI plumbing, traffic-shaping and
/// kube-proxy devices.
const SKIP_PREFIXES: [&str; 7] = [
    "veth",
    "docker",
    "cni",
    "flannel",
    "ifb",
    "kube-ipvs",
    "nodelocaldns",
];

/// `ARPHRD_ETHER` in `/sys/class/net/X/type`: ARP and NDP answers only make sense there.
const ARPHRD_ETHER: u32 = 1;
/// `IFF_UP` in `/sys/class/net/X/flags`.
const IFF_UP: u32 = 0x1;

/// Whether an interface is a default announcing interface: an Ethernet interface that is up,
/// not loopback, not veth/docker/cni/ifb plumbing, not a bridge port, not a bond slave. `sys` is
/// `/sys/class/net`.
pub fn is_default_candidate(sys: &Path, name: &str) -> bool {
    if name == "lo" || SKIP_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return false;
    }
    let dir = sys.join(name);
    if read(&dir.join("type")).and_then(|t| t.parse::<u32>().ok()) != Some(ARPHRD_ETHER) {
        return false;
    }
    let flags = read(&dir.join("flags"))
        .and_then(|f| u32::from_str_radix(f.trim_start_matches("0x"), 16).ok())
        .unwrap_or(0);
    if flags & IFF_UP == 0 || read(&dir.join("operstate")).as_deref() == Some("down") {
        return false;
    }
    if dir.join("brport").exists() {
        return false;
    }
    if let Ok(master) = std::fs::read_link(dir.join("master"))
        && master
            .file_name()
            .map(|m| sys.join(m).join("bonding").exists())
            .unwrap_or(false)
    {
        return false;
    }
    true
}

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Reads one interface from `sys`.
pub fn read_interface(sys: &Path, name: &str) -> Option<Interface> {
    let dir = sys.join(name);
    let index = read(&dir.join("ifindex"))?.parse().ok()?;
    let mac = parse_mac(&read(&dir.join("address"))?)?;
    (mac != [0; 6]).then(|| Interface {
        name: name.into(),
        index,
        mac,
    })
}

/// The interfaces to announce on: `wanted` (by name) when given, else every default
/// candidate under `sys`.
pub fn select(sys: &Path, wanted: &[String]) -> Vec<Interface> {
    let names: Vec<String> = if wanted.is_empty() {
        let mut v: Vec<String> = std::fs::read_dir(sys)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| is_default_candidate(sys, n))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    } else {
        wanted.to_vec()
    };
    names
        .iter()
        .filter_map(|n| read_interface(sys, n))
        .collect()
}

/// Connected IPv4 subnets per interface, from `/proc/net/route` text (routes without a
/// gateway).
pub fn connected_subnets(route_table: &str, iface: &str) -> Vec<(Ipv4Addr, Ipv4Addr)> {
    let hex = |s: &str| {
        u32::from_str_radix(s, 16)
            .ok()
            .map(|v| Ipv4Addr::from(v.to_ne_bytes()))
    };
    route_table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 8 || f[0] != iface {
                return None;
            }
            let (dest, gw, mask) = (hex(f[1])?, hex(f[2])?, hex(f[7])?);
            (gw.is_unspecified() && !mask.is_unspecified()).then_some((dest, mask))
        })
        .collect()
}

/// Whether `ip` is in one of `subnets`.
pub fn in_subnets(ip: Ipv4Addr, subnets: &[(Ipv4Addr, Ipv4Addr)]) -> bool {
    subnets
        .iter()
        .any(|(net, mask)| u32::from(ip) & u32::from(*mask) == u32::from(*net) & u32::from(*mask))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_candidates_skip_plumbing_bridge_ports_and_bond_slaves() {
        let dir = std::env::temp_dir().join(format!("berth-iface-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // (name, MAC, type, flags, operstate) as the kernel shows them.
        for (name, mac, ty, flags, oper) in [
            ("eth0", "02:00:00:00:00:01", "1", "0x1003", "up"),
            ("eth1", "02:00:00:00:00:02", "1", "0x1003", "up"),
            ("eth2", "02:00:00:00:00:03", "1", "0x1803", "up"),
            ("bond0", "02:00:00:00:00:04", "1", "0x1403", "up"),
            ("br0", "02:00:00:00:00:05", "1", "0x1003", "unknown"),
            ("lo", "00:00:00:00:00:00", "772", "0x9", "unknown"),
            ("veth12", "02:00:00:00:00:06", "1", "0x1003", "up"),
            ("cni0", "02:00:00:00:00:07", "1", "0x1003", "up"),
            // Down: an administratively down NIC, and a traffic-shaping ifb device.
            ("eth3", "02:00:00:00:00:08", "1", "0x1002", "down"),
            ("ifb0", "02:00:00:00:00:09", "1", "0x82", "down"),
            // Up, but no Ethernet: an IPIP tunnel.
            ("tunl0", "00:00:00:00:00:0a", "768", "0xc1", "unknown"),
            // Flags up, carrier gone.
            ("eth4", "02:00:00:00:00:0b", "1", "0x1003", "down"),
        ] {
            let d = dir.join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("address"), format!("{mac}\n")).unwrap();
            std::fs::write(d.join("ifindex"), "7\n").unwrap();
            std::fs::write(d.join("type"), format!("{ty}\n")).unwrap();
            std::fs::write(d.join("flags"), format!("{flags}\n")).unwrap();
            std::fs::write(d.join("operstate"), format!("{oper}\n")).unwrap();
        }
        std::fs::create_dir_all(dir.join("bond0/bonding")).unwrap();
        std::fs::create_dir_all(dir.join("eth1/brport")).unwrap();
        std::os::unix::fs::symlink("../bond0", dir.join("eth2/master")).unwrap();
        let got: Vec<String> = select(&dir, &[]).into_iter().map(|i| i.name).collect();
        assert_eq!(got, ["bond0", "br0", "eth0"]);
        let want = select(&dir, &["veth12".into()]);
        assert_eq!(want[0].index, 7);
        assert_eq!(want[0].mac, [2, 0, 0, 0, 0, 6]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn subnets_come_from_gatewayless_routes() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth0\t00000000\t0100630A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
            eth0\t0000630A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
            eth1\t0000640A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let s = connected_subnets(table, "eth0");
        assert_eq!(
            s,
            [(Ipv4Addr::new(10, 99, 0, 0), Ipv4Addr::new(255, 255, 255, 0))]
        );
        assert!(in_subnets(Ipv4Addr::new(10, 99, 0, 7), &s));
        assert!(!in_subnets(Ipv4Addr::new(10, 100, 0, 7), &s));
    }
}
