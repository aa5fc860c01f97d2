//! ARP and NDP frames, built and parsed without any socket: everything here is pure and
//! tested byte by byte against hand-written frames.
//!
//! * IPv4: Ethernet + ARP requests in, ARP replies and gratuitous ARP (request and reply form,
//!   RFC 5227 / RFC 5944 §4.6) out.
//! * IPv6: Ethernet + IPv6 + ICMPv6 Neighbor Solicitations in (checksum verified), Neighbor
//!   Advertisements out (solicited, and unsolicited with Override=1), RFC 4861.

use std::net::{Ipv4Addr, Ipv6Addr};

pub type Mac = [u8; 6];

pub const BROADCAST: Mac = [0xff; 6];
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
const ETH_HDR: usize = 14;
const ARP_LEN: usize = 28;
const IPV6_HDR: usize = 40;
const ICMPV6: u8 = 58;
const NS: u8 = 135;
const NA: u8 = 136;
const OPT_SOURCE_LLADDR: u8 = 1;
const OPT_TARGET_LLADDR: u8 = 2;

/// All-nodes multicast (ff02::1) and its Ethernet address.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// A MAC as `aa:bb:cc:dd:ee:ff`.
pub fn mac_string(m: &Mac) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut out = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

fn ethernet(dst: Mac, src: Mac, ethertype: u16, out: &mut Vec<u8>) {
    out.extend_from_slice(&dst);
    out.extend_from_slice(&src);
    out.extend_from_slice(&ethertype.to_be_bytes());
}

fn mac_at(b: &[u8], at: usize) -> Mac {
    let mut m = [0u8; 6];
    m.copy_from_slice(&b[at..at + 6]);
    m
}

fn v4_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

fn v6_at(b: &[u8], at: usize) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    Ipv6Addr::from(a)
}

// ---------------------------------------------------------------------------------------
// ARP
// ---------------------------------------------------------------------------------------

/// An ARP request (Ethernet, IPv4) as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArpRequest {
    pub eth_dst: Mac,
    pub eth_src: Mac,
    pub sender_mac: Mac,
    pub sender_ip: Ipv4Addr,
    pub target_ip: Ipv4Addr,
}

/// Parses an Ethernet frame holding an ARP request for IPv4 over Ethernet; None otherwise.
pub fn parse_arp_request(frame: &[u8]) -> Option<ArpRequest> {
    if frame.len() < ETH_HDR + ARP_LEN {
        return None;
    }
    if u16::from_be_bytes([frame[12], frame[13]]) != ETH_P_ARP {
        return None;
    }
    let a = &frame[ETH_HDR..];
    // htype 1 (Ethernet), ptype 0x0800 (IPv4), hlen 6, plen 4, oper 1 (request).
    if a[0..8] != [0, 1, 0x08, 0x00, 6, 4, 0, 1] {
        return None;
    }
    Some(ArpRequest {
        eth_dst: mac_at(frame, 0),
        eth_src: mac_at(frame, 6),
        sender_mac: mac_at(a, 8),
        sender_ip: v4_at(a, 14),
        target_ip: v4_at(a, 24),
    })
}

#[allow(clippy::too_many_arguments)]
fn arp(
    eth_dst: Mac,
    eth_src: Mac,
    oper: u16,
    sha: Mac,
    spa: Ipv4Addr,
    tha: Mac,
    tpa: Ipv4Addr,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(ETH_HDR + ARP_LEN);
    ethernet(eth_dst, eth_src, ETH_P_ARP, &mut out);
    out.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
    out.extend_from_slice(&oper.to_be_bytes());
    out.extend_from_slice(&sha);
    out.extend_from_slice(&spa.octets());
    out.extend_from_slice(&tha);
    out.extend_from_slice(&tpa.octets());
    out
}

/// The reply to `req` saying `req.target_ip` is at `mac`, sent to the requester.
pub fn arp_reply(req: &ArpRequest, mac: Mac) -> Vec<u8> {
    arp(
        req.sender_mac,
        mac,
        2,
        mac,
        req.target_ip,
        req.sender_mac,
        req.sender_ip,
    )
}

/// Gratuitous ARP, request form: broadcast, sender = target = `ip`, target MAC zero.
pub fn garp_request(ip: Ipv4Addr, mac: Mac) -> Vec<u8> {
    arp(BROADCAST, mac, 1, mac, ip, [0; 6], ip)
}

/// Gratuitous ARP, reply form: broadcast, sender = target = `ip`, target MAC = `mac`.
pub fn garp_reply(ip: Ipv4Addr, mac: Mac) -> Vec<u8> {
    arp(BROADCAST, mac, 2, mac, ip, mac, ip)
}

// ---------------------------------------------------------------------------------------
// NDP
// ---------------------------------------------------------------------------------------

/// A Neighbor Solicitation as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighborSolicitation {
    pub eth_src: Mac,
    pub src_ip: Ipv6Addr,
    pub dst_ip: Ipv6Addr,
    pub target: Ipv6Addr,
    /// The Source Link-Layer Address option, if present.
    pub source_lladdr: Option<Mac>,
}

/// The solicited-node multicast address of `ip` (ff02::1:ffXX:XXXX).
pub fn solicited_node(ip: Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
    ])
}

/// The Ethernet multicast address of an IPv6 multicast address (33:33 + low 32 bits).
pub fn multicast_mac(ip: Ipv6Addr) -> Mac {
    let o = ip.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// The ICMPv6 checksum of `msg` (its checksum field taken as zero) between `src` and `dst`.
pub fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], 0])
            };
            sum += u32::from(w);
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(msg.len() as u32).to_be_bytes());
    add(&[0, 0, 0, ICMPV6]);
    let mut m = msg.to_vec();
    if m.len() >= 4 {
        m[2] = 0;
        m[3] = 0;
    }
    add(&m);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Parses an Ethernet frame holding an ICMPv6 Neighbor Solicitation (hop limit 255, code 0,
/// valid checksum, target not multicast); None otherwise.
pub fn parse_neighbor_solicitation(frame: &[u8]) -> Option<NeighborSolicitation> {
    if frame.len() < ETH_HDR + IPV6_HDR + 24 {
        return None;
    }
    if u16::from_be_bytes([frame[12], frame[13]]) != ETH_P_IPV6 {
        return None;
    }
    let ip = &frame[ETH_HDR..];
    if ip[0] >> 4 != 6 || ip[6] != ICMPV6 || ip[7] != 255 {
        return None;
    }
    let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    let msg = ip.get(IPV6_HDR..IPV6_HDR + plen)?;
    if msg.len() < 24 || msg[0] != NS || msg[1] != 0 {
        return None;
    }
    let (src_ip, dst_ip) = (v6_at(ip, 8), v6_at(ip, 24));
    if icmpv6_checksum(src_ip, dst_ip, msg) != u16::from_be_bytes([msg[2], msg[3]]) {
        return None;
    }
    let target = v6_at(msg, 8);
    if target.is_multicast() {
        return None;
    }
    let mut source_lladdr = None;
    let mut opts = &msg[24..];
    while opts.len() >= 8 {
        let len = usize::from(opts[1]) * 8;
        if len == 0 || len > opts.len() {
            return None;
        }
        if opts[0] == OPT_SOURCE_LLADDR && len == 8 {
            source_lladdr = Some(mac_at(opts, 2));
        }
        opts = &opts[len..];
    }
    Some(NeighborSolicitation {
        eth_src: mac_at(frame, 6),
        src_ip,
        dst_ip,
        target,
        source_lladdr,
    })
}

fn neighbor_advertisement(
    eth_dst: Mac,
    mac: Mac,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    target: Ipv6Addr,
    solicited: bool,
) -> Vec<u8> {
    let mut msg = Vec::with_capacity(32);
    msg.extend_from_slice(&[NA, 0, 0, 0]);
    // R=0 (not a router), S as asked, O=1: this node now owns the address.
    let flags = if solicited { 0x40 | 0x20 } else { 0x20 };
    msg.extend_from_slice(&[flags, 0, 0, 0]);
    msg.extend_from_slice(&target.octets());
    msg.extend_from_slice(&[OPT_TARGET_LLADDR, 1]);
    msg.extend_from_slice(&mac);
    let ck = icmpv6_checksum(src, dst, &msg);
    msg[2..4].copy_from_slice(&ck.to_be_bytes());
    let mut out = Vec::with_capacity(ETH_HDR + IPV6_HDR + msg.len());
    ethernet(eth_dst, mac, ETH_P_IPV6, &mut out);
    out.extend_from_slice(&[0x60, 0, 0, 0]);
    out.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    out.extend_from_slice(&[ICMPV6, 255]);
    out.extend_from_slice(&src.octets());
    out.extend_from_slice(&dst.octets());
    out.extend_from_slice(&msg);
    out
}

/// The solicited advertisement answering `ns` with `mac` (S=1, O=1). A solicitation from the
/// unspecified address (duplicate address detection) is answered to all-nodes with S=0.
pub fn neighbor_advertisement_reply(ns: &NeighborSolicitation, mac: Mac) -> Vec<u8> {
    if ns.src_ip.is_unspecified() {
        return unsolicited_neighbor_advertisement(ns.target, mac);
    }
    let eth_dst = ns.source_lladdr.unwrap_or(ns.eth_src);
    neighbor_advertisement(eth_dst, mac, ns.target, ns.src_ip, ns.target, true)
}

/// An unsolicited advertisement of `ip` at `mac` to all-nodes, Override=1.
pub fn unsolicited_neighbor_advertisement(ip: Ipv6Addr, mac: Mac) -> Vec<u8> {
    neighbor_advertisement(multicast_mac(ALL_NODES), mac, ip, ALL_NODES, ip, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: Mac = [0x02, 0, 0, 0, 0, 0x01];
    const NODE: Mac = [0x02, 0, 0, 0, 0, 0x0b];

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    // who-has 10.99.0.100 tell 10.99.0.1, from 02:00:00:00:00:01, broadcast.
    const ARP_REQ: &str = "ffffffffffff 020000000001 0806 \
        0001 0800 06 04 0001 020000000001 0a630001 000000000000 0a630064";

    #[test]
    fn parses_an_arp_request() {
        let r = parse_arp_request(&hex(ARP_REQ)).unwrap();
        assert_eq!(
            r,
            ArpRequest {
                eth_dst: BROADCAST,
                eth_src: CLIENT,
                sender_mac: CLIENT,
                sender_ip: "10.99.0.1".parse().unwrap(),
                target_ip: "10.99.0.100".parse().unwrap(),
            }
        );
        // With Ethernet padding to 60 bytes it still parses.
        let mut padded = hex(ARP_REQ);
        padded.resize(60, 0);
        assert!(parse_arp_request(&padded).is_some());
    }

    #[test]
    fn rejects_what_is_not_an_ipv4_arp_request() {
        let good = hex(ARP_REQ);
        assert!(parse_arp_request(&good[..41]).is_none(), "short");
        let mut reply = good.clone();
        reply[21] = 2;
        assert!(parse_arp_request(&reply).is_none(), "a reply");
        let mut ipv6 = good.clone();
        ipv6[12..14].copy_from_slice(&[0x86, 0xdd]);
        assert!(parse_arp_request(&ipv6).is_none(), "not ARP");
        let mut ptype = good.clone();
        ptype[16] = 0x86;
        assert!(parse_arp_request(&ptype).is_none(), "not IPv4");
        let mut hlen = good;
        hlen[18] = 8;
        assert!(parse_arp_request(&hlen).is_none(), "not Ethernet addresses");
    }

    #[test]
    fn builds_the_arp_reply() {
        let r = parse_arp_request(&hex(ARP_REQ)).unwrap();
        let want = hex("020000000001 02000000000b 0806 \
             0001 0800 06 04 0002 02000000000b 0a630064 020000000001 0a630001");
        assert_eq!(arp_reply(&r, NODE), want);
    }

    #[test]
    fn builds_gratuitous_arp_in_both_forms() {
        let ip = "10.99.0.100".parse().unwrap();
        assert_eq!(
            garp_request(ip, NODE),
            hex("ffffffffffff 02000000000b 0806 \
                 0001 0800 06 04 0001 02000000000b 0a630064 000000000000 0a630064")
        );
        assert_eq!(
            garp_reply(ip, NODE),
            hex("ffffffffffff 02000000000b 0806 \
                 0001 0800 06 04 0002 02000000000b 0a630064 02000000000b 0a630064")
        );
    }

    // NS from fd99::1 (mac 02:..:01) for fd99::64, to ff02::1:ff00:64, with SLLA option.
    // Checksum 0x7ba1 computed by hand over the pseudo-header (see the test below).
    fn ns_frame() -> Vec<u8> {
        hex("3333ff000064 020000000001 86dd \
             6000 0000 0020 3a ff \
             fd990000000000000000000000000001 \
             ff0200000000000000000001ff000064 \
             87 00 CKSM 00000000 fd990000000000000000000000000064 \
             01 01 020000000001"
            .replace("CKSM", "7ba1")
            .as_str())
    }

    #[test]
    fn icmpv6_checksum_matches_a_hand_computed_one() {
        // Sum of 16-bit words: src fd99+1, dst ff02+1+ff00+64, length 0x20, next header 0x3a,
        // message 8700 + target fd99+64 + option 0101+0200+0000+0001.
        let words: u32 = 0xfd99
            + 0x0001
            + 0xff02
            + 0x0001
            + 0xff00
            + 0x0064
            + 0x0020
            + 0x003a
            + 0x8700
            + 0xfd99
            + 0x0064
            + 0x0101
            + 0x0200
            + 0x0001;
        let folded = (words & 0xffff) + (words >> 16);
        let folded = (folded & 0xffff) + (folded >> 16);
        assert_eq!(!(folded as u16), 0x7ba1);
        let f = ns_frame();
        let msg = &f[54..];
        assert_eq!(
            icmpv6_checksum(
                "fd99::1".parse().unwrap(),
                "ff02::1:ff00:64".parse().unwrap(),
                msg
            ),
            0x7ba1
        );
    }

    #[test]
    fn parses_a_neighbor_solicitation() {
        let ns = parse_neighbor_solicitation(&ns_frame()).unwrap();
        assert_eq!(
            ns,
            NeighborSolicitation {
                eth_src: CLIENT,
                src_ip: "fd99::1".parse().unwrap(),
                dst_ip: "ff02::1:ff00:64".parse().unwrap(),
                target: "fd99::64".parse().unwrap(),
                source_lladdr: Some(CLIENT),
            }
        );
    }

    #[test]
    fn rejects_bad_solicitations() {
        let mut bad_sum = ns_frame();
        bad_sum[57] ^= 1;
        assert!(parse_neighbor_solicitation(&bad_sum).is_none(), "checksum");
        let mut hop = ns_frame();
        hop[21] = 64;
        assert!(parse_neighbor_solicitation(&hop).is_none(), "hop limit");
        let mut na = ns_frame();
        na[54] = NA;
        assert!(parse_neighbor_solicitation(&na).is_none(), "not NS");
        let f = ns_frame();
        assert!(parse_neighbor_solicitation(&f[..70]).is_none(), "truncated");
        let mut zero_opt = ns_frame();
        zero_opt[79] = 0;
        assert!(
            parse_neighbor_solicitation(&zero_opt).is_none(),
            "zero-length option"
        );
    }

    #[test]
    fn builds_the_solicited_advertisement() {
        let ns = parse_neighbor_solicitation(&ns_frame()).unwrap();
        let got = neighbor_advertisement_reply(&ns, NODE);
        let want = hex("020000000001 02000000000b 86dd \
             6000 0000 0020 3a ff \
             fd990000000000000000000000000064 \
             fd990000000000000000000000000001 \
             88 00 CKSM 60000000 fd990000000000000000000000000064 \
             02 01 02000000000b"
            .replace("CKSM", "1a02")
            .as_str());
        assert_eq!(got, want);
        // The checksum verifies: summing the message with its checksum gives 0xffff.
        assert_eq!(
            icmpv6_checksum(ns.target, ns.src_ip, &got[54..]),
            u16::from_be_bytes([got[56], got[57]])
        );
    }

    #[test]
    fn builds_the_unsolicited_advertisement() {
        let got = unsolicited_neighbor_advertisement("fd99::64".parse().unwrap(), NODE);
        let want = hex("333300000001 02000000000b 86dd \
             6000 0000 0020 3a ff \
             fd990000000000000000000000000064 \
             ff020000000000000000000000000001 \
             88 00 CKSM 20000000 fd990000000000000000000000000064 \
             02 01 02000000000b"
            .replace("CKSM", "5899")
            .as_str());
        assert_eq!(got, want);
    }

    #[test]
    fn dad_probe_is_answered_to_all_nodes() {
        let mut ns = parse_neighbor_solicitation(&ns_frame()).unwrap();
        ns.src_ip = Ipv6Addr::UNSPECIFIED;
        let got = neighbor_advertisement_reply(&ns, NODE);
        assert_eq!(&got[..6], &[0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(got[58], 0x20, "S=0, O=1");
    }

    #[test]
    fn multicast_helpers() {
        let ip: Ipv6Addr = "fd99::12:3456".parse().unwrap();
        assert_eq!(
            solicited_node(ip),
            "ff02::1:ff12:3456".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            multicast_mac(solicited_node(ip)),
            [0x33, 0x33, 0xff, 0x12, 0x34, 0x56]
        );
        assert_eq!(parse_mac("02:00:00:00:00:0b"), Some(NODE));
        assert_eq!(mac_string(&NODE), "02:00:00:00:00:0b");
        assert_eq!(parse_mac("02:00:00"), None);
    }
}
