//! The raw-socket shell: one AF_PACKET socket per interface and family, a thread per socket
//! reading frames, and [`respond`] (pure) deciding the answer through a callback that says
//! whether this speaker announces an address on that interface now — the seam MetalLB's ARP
//! responder has (`announceFunc`).

use super::frames::{self, ETH_P_ARP, ETH_P_IPV6};
use super::iface::{Interface, in_subnets};
use socket2::{Domain, Protocol, SockFilter, Socket, Type};
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// What a frame asked for and the answer to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub ip: IpAddr,
    pub frame: Vec<u8>,
}

/// How a responder decides.
pub struct Policy<'a> {
    pub iface: &'a Interface,
    /// When Some, only ARP requests from senders in these subnets are answered.
    pub subnets: Option<&'a [(Ipv4Addr, Ipv4Addr)]>,
}

/// The answer to `frame` received on `p.iface`, if `announced(ip)` says this speaker owns
/// the address asked for.
pub fn respond(frame: &[u8], p: &Policy<'_>, announced: impl Fn(IpAddr) -> bool) -> Option<Answer> {
    // Our own frames (a packet socket sees outgoing ones too, gratuitous ARP included).
    if frame.get(6..12) == Some(&p.iface.mac[..]) {
        return None;
    }
    if let Some(req) = frames::parse_arp_request(frame) {
        if req.eth_dst != frames::BROADCAST && req.eth_dst != p.iface.mac {
            return None;
        }
        if let Some(s) = p.subnets
            && !req.sender_ip.is_unspecified()
            && !in_subnets(req.sender_ip, s)
        {
            return None;
        }
        let ip = IpAddr::V4(req.target_ip);
        return announced(ip).then(|| Answer {
            ip,
            frame: frames::arp_reply(&req, p.iface.mac),
        });
    }
    if let Some(ns) = frames::parse_neighbor_solicitation(frame) {
        let ip = IpAddr::V6(ns.target);
        return announced(ip).then(|| Answer {
            ip,
            frame: frames::neighbor_advertisement_reply(&ns, p.iface.mac),
        });
    }
    None
}

/// Classic BPF: IPv6 whose next header is ICMPv6 (58) and whose ICMPv6 type is NS (135).
fn ns_filter() -> [SockFilter; 6] {
    [
        SockFilter::new(0x30, 0, 0, 20),          // ldb [20]  next header
        SockFilter::new(0x15, 0, 3, 58),          // jeq #58
        SockFilter::new(0x30, 0, 0, 54),          // ldb [54]  ICMPv6 type
        SockFilter::new(0x15, 0, 1, 135),         // jeq #135
        SockFilter::new(0x06, 0, 0, 0x0004_0000), // ret all
        SockFilter::new(0x06, 0, 0, 0),           // ret 0
    ]
}

/// An AF_PACKET socket bound to `iface` receiving `ethertype` frames.
pub fn open(iface: &Interface, ethertype: u16) -> std::io::Result<Socket> {
    let proto = Protocol::from(i32::from(ethertype.to_be()));
    let s = Socket::new(Domain::PACKET, Type::RAW, Some(proto))?;
    if ethertype == ETH_P_IPV6 {
        s.attach_filter(&ns_filter())?;
    }
    s.bind(&super::sys::packet_addr(iface.index, ethertype))?;
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    Ok(s)
}

/// The sockets of one interface.
pub struct Link {
    pub iface: Interface,
    pub arp: Arc<Socket>,
    pub ipv6: Arc<Socket>,
    /// Holds IPv6 multicast memberships (solicited-node groups of announced VIPs).
    pub mcast: std::net::UdpSocket,
}

impl Link {
    pub fn open(iface: Interface) -> std::io::Result<Link> {
        let arp = Arc::new(open(&iface, ETH_P_ARP)?);
        let ipv6 = Arc::new(open(&iface, ETH_P_IPV6)?);
        let mcast = std::net::UdpSocket::bind("[::]:0")
            .or_else(|_| std::net::UdpSocket::bind("0.0.0.0:0"))?;
        Ok(Link {
            iface,
            arp,
            ipv6,
            mcast,
        })
    }

    /// Sends one frame out of this interface.
    pub fn send(&self, frame: &[u8]) -> std::io::Result<usize> {
        if frame.get(12..14) == Some(&ETH_P_IPV6.to_be_bytes()[..]) {
            self.ipv6.send(frame)
        } else {
            self.arp.send(frame)
        }
    }

    /// Joins or leaves the solicited-node group of `ip` on this interface.
    pub fn multicast(&self, ip: std::net::Ipv6Addr, join: bool) -> std::io::Result<()> {
        let g = frames::solicited_node(ip);
        if join {
            self.mcast.join_multicast_v6(&g, self.iface.index)
        } else {
            self.mcast.leave_multicast_v6(&g, self.iface.index)
        }
    }
}

/// Reads frames from `sock` until `stop`, sending `respond`'s answers back out of it.
/// `answered` is called after each answer sent.
pub fn serve(
    sock: Arc<Socket>,
    iface: Interface,
    subnet_check: bool,
    announced: impl Fn(&str, IpAddr) -> bool,
    answered: impl Fn(&str, IpAddr),
    stop: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 1600];
    let mut subnets: Vec<(Ipv4Addr, Ipv4Addr)> = Vec::new();
    let mut subnets_at = std::time::Instant::now() - Duration::from_secs(60);
    while !stop.load(Ordering::Relaxed) {
        let n = match (&*sock).read(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => {
                tracing::warn!(interface = %iface.name, error = %e, "Packet socket error");
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        if subnet_check && subnets_at.elapsed() > Duration::from_secs(10) {
            let table = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
            subnets = super::iface::connected_subnets(&table, &iface.name);
            subnets_at = std::time::Instant::now();
        }
        let policy = Policy {
            iface: &iface,
            subnets: subnet_check.then_some(subnets.as_slice()),
        };
        if let Some(a) = respond(&buf[..n], &policy, |ip| announced(&iface.name, ip)) {
            match sock.send(&a.frame) {
                Ok(_) => answered(&iface.name, a.ip),
                Err(e) => {
                    tracing::warn!(interface = %iface.name, error = %e, "Cannot send an answer")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARP_REQ: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0,
        1, 2, 0, 0, 0, 0, 1, 10, 99, 0, 1, 0, 0, 0, 0, 0, 0, 10, 99, 0, 100,
    ];

    fn iface() -> Interface {
        Interface {
            name: "eth0".into(),
            index: 2,
            mac: [2, 0, 0, 0, 0, 0x0b],
        }
    }

    #[test]
    fn answers_only_announced_addresses() {
        let i = iface();
        let p = Policy {
            iface: &i,
            subnets: None,
        };
        let vip: IpAddr = "10.99.0.100".parse().unwrap();
        let a = respond(&ARP_REQ, &p, |ip| ip == vip).unwrap();
        assert_eq!(a.ip, vip);
        assert_eq!(&a.frame[..6], &[2, 0, 0, 0, 0, 1]);
        assert!(respond(&ARP_REQ, &p, |_| false).is_none());
        let garp = frames::garp_request("10.99.0.100".parse().unwrap(), i.mac);
        assert!(
            respond(&garp, &p, |_| true).is_none(),
            "our own gratuitous ARP"
        );
    }

    #[test]
    fn ignores_requests_for_other_macs_and_other_subnets() {
        let i = iface();
        let open = Policy {
            iface: &i,
            subnets: None,
        };
        let mut unicast_elsewhere = ARP_REQ;
        unicast_elsewhere[..6].copy_from_slice(&[2, 0, 0, 0, 0, 0x0c]);
        assert!(respond(&unicast_elsewhere, &open, |_| true).is_none());
        let mut unicast_to_me = ARP_REQ;
        unicast_to_me[..6].copy_from_slice(&i.mac);
        assert!(respond(&unicast_to_me, &open, |_| true).is_some());

        let other: [(Ipv4Addr, Ipv4Addr); 1] = [(
            "10.100.0.0".parse().unwrap(),
            "255.255.255.0".parse().unwrap(),
        )];
        let strict = Policy {
            iface: &i,
            subnets: Some(&other),
        };
        assert!(respond(&ARP_REQ, &strict, |_| true).is_none());
        let same: [(Ipv4Addr, Ipv4Addr); 1] = [(
            "10.99.0.0".parse().unwrap(),
            "255.255.255.0".parse().unwrap(),
        )];
        let strict = Policy {
            iface: &i,
            subnets: Some(&same),
        };
        assert!(respond(&ARP_REQ, &strict, |_| true).is_some());
    }

    #[test]
    fn answers_neighbor_solicitations() {
        let i = iface();
        let p = Policy {
            iface: &i,
            subnets: None,
        };
        let target: std::net::Ipv6Addr = "fd99::64".parse().unwrap();
        // Build an NS by hand: reuse the NA builder's layout through the frames module.
        let mut f = frames::unsolicited_neighbor_advertisement(target, [2, 0, 0, 0, 0, 1]);
        assert!(
            respond(&f, &p, |_| true).is_none(),
            "an NA is not a question"
        );
        // Turn it into an NS from fd99::1 and fix the checksum.
        f[22..38].copy_from_slice(&"fd99::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        f[54] = 135;
        f[58] = 0;
        f[78] = 1;
        let src = "fd99::1".parse().unwrap();
        let dst = frames::ALL_NODES;
        let ck = frames::icmpv6_checksum(src, dst, &f[54..]);
        f[56..58].copy_from_slice(&ck.to_be_bytes());
        let a = respond(&f, &p, |ip| ip == IpAddr::V6(target)).unwrap();
        assert_eq!(&a.frame[..6], &[2, 0, 0, 0, 0, 1]);
        assert_eq!(a.frame[54], 136);
    }
}
