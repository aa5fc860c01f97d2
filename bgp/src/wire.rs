//! BGP messages on the wire: framing with a capped length, and building/reading the messages
//! the speaker sends and receives, on top of `netgauze-bgp-pkt`.
//!
//! Framing is done here (so the length cap and the header checks of RFC 4271 section 6.1 are
//! ours and testable); everything inside a frame is parsed and serialised by netgauze.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use netgauze_bgp_pkt::BgpMessage;
use netgauze_bgp_pkt::capabilities::{
    BgpCapability, FourOctetAsCapability, MultiProtocolExtensionsCapability,
};
use netgauze_bgp_pkt::community::{Community, LargeCommunity};
use netgauze_bgp_pkt::nlri::{Ipv4Unicast, Ipv4UnicastAddress, Ipv6Unicast, Ipv6UnicastAddress};
use netgauze_bgp_pkt::notification::{
    BgpNotificationMessage, CeaseError, FiniteStateMachineError, HoldTimerExpiredError,
    MessageHeaderError, OpenMessageError, RouteRefreshError, UpdateMessageError,
};
use netgauze_bgp_pkt::open::{BgpOpenMessage, BgpOpenMessageParameter};
use netgauze_bgp_pkt::path_attribute::{
    As2PathSegment, As4Path, As4PathSegment, AsPath, AsPathSegmentType, Communities,
    LargeCommunities, LocalPreference, MpReach, MpUnreach, NextHop, Origin, PathAttribute,
    PathAttributeValue,
};
use netgauze_bgp_pkt::update::BgpUpdateMessage;
use netgauze_bgp_pkt::wire::deserializer::{BgpMessageParsingError, BgpParsingContext};
use netgauze_iana::address_family::AddressType;
use netgauze_parse_utils::WritablePdu;
use netgauze_parse_utils::reader::SliceReader;
use netgauze_parse_utils::traits::ParseFromWithOneInput;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::Route;

/// Largest BGP message (RFC 4271 section 4.1; extended messages are not negotiated).
pub const MAX_MESSAGE_LEN: usize = 4096;
/// Fixed header: 16-byte marker, 2-byte length, 1-byte type.
pub const HEADER_LEN: usize = 19;
/// AS number put in the OPEN's 2-byte field when ours does not fit (RFC 6793).
pub const AS_TRANS: u16 = 23456;

/// An error to report to the peer in a NOTIFICATION: code, subcode and data (RFC 4271 4.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
    /// Human readable reason, for logs and the peer status.
    pub reason: String,
}

impl Notify {
    pub fn new(code: u8, subcode: u8, data: Vec<u8>, reason: impl Into<String>) -> Self {
        Self {
            code,
            subcode,
            data,
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for Notify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (NOTIFICATION {}/{})",
            self.reason, self.code, self.subcode
        )
    }
}

/// Why reading a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("connection closed by peer")]
    Closed,
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Header(Notify),
}

/// Checks a message header (the first 19 bytes). Returns the total message length.
pub fn check_header(header: &[u8]) -> Result<usize, Notify> {
    if header.len() < HEADER_LEN {
        return Err(Notify::new(1, 2, vec![], "short header"));
    }
    if header[..16].iter().any(|b| *b != 0xff) {
        return Err(Notify::new(
            1,
            1,
            vec![],
            "connection not synchronised (bad marker)",
        ));
    }
    let len = u16::from_be_bytes([header[16], header[17]]) as usize;
    if !(HEADER_LEN..=MAX_MESSAGE_LEN).contains(&len) {
        return Err(Notify::new(
            1,
            2,
            header[16..18].to_vec(),
            format!("bad message length {len}"),
        ));
    }
    let ty = header[18];
    if !(1..=5).contains(&ty) {
        return Err(Notify::new(
            1,
            3,
            vec![ty],
            format!("bad message type {ty}"),
        ));
    }
    Ok(len)
}

/// Splits the first complete frame off `buf`: `Ok(None)` when more bytes are needed.
pub fn split_frame(buf: &[u8]) -> Result<Option<usize>, Notify> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = check_header(&buf[..HEADER_LEN])?;
    Ok((buf.len() >= len).then_some(len))
}

/// Reads one whole message (header included) from `r`, never more than [`MAX_MESSAGE_LEN`].
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, ReadError> {
    let mut frame = vec![0u8; HEADER_LEN];
    match r.read_exact(&mut frame).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(ReadError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = check_header(&frame).map_err(ReadError::Header)?;
    frame.resize(len, 0);
    match r.read_exact(&mut frame[HEADER_LEN..]).await {
        Ok(_) => Ok(frame),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(ReadError::Closed),
        Err(e) => Err(e.into()),
    }
}

/// Parses a whole frame. `asn4` tells whether 4-octet AS numbers were negotiated.
/// A parse error comes back as the NOTIFICATION to send (RFC 4271 6.1-6.3).
pub fn decode(frame: &[u8], asn4: bool) -> Result<BgpMessage, Notify> {
    if frame.len() > MAX_MESSAGE_LEN {
        return Err(Notify::new(1, 2, vec![], "message too long"));
    }
    let mut ctx = BgpParsingContext::new(
        asn4,
        Default::default(),
        Default::default(),
        true,
        true,
        false,
        true,
    );
    let mut reader = SliceReader::new(frame);
    BgpMessage::parse(&mut reader, &mut ctx).map_err(parse_error_to_notify)
}

/// Like [`decode`], but malformed path attributes in an UPDATE are handled as RFC 7606
/// says (attribute discard / treat-as-withdraw, done by netgauze) instead of resetting the
/// session. Returns the message and the ignored attribute errors. Since the speaker ignores
/// received routes, "treat-as-withdraw" only means the UPDATE is dropped with a log line.
/// Errors that RFC 7606 still treats as fatal (e.g. an unparseable attribute length or NLRI)
/// stay errors.
pub fn decode_lenient(frame: &[u8], asn4: bool) -> Result<(BgpMessage, Vec<String>), Notify> {
    if frame.len() > MAX_MESSAGE_LEN {
        return Err(Notify::new(1, 2, vec![], "message too long"));
    }
    let mut ctx = BgpParsingContext::new(
        asn4,
        Default::default(),
        Default::default(),
        false,
        false,
        false,
        false,
    );
    let mut reader = SliceReader::new(frame);
    let msg = BgpMessage::parse(&mut reader, &mut ctx).map_err(parse_error_to_notify)?;
    let ignored = ctx
        .reset_parsing_errors()
        .path_attr_errors()
        .iter()
        .map(|e| e.to_string())
        .collect();
    Ok((msg, ignored))
}

fn parse_error_to_notify(e: BgpMessageParsingError) -> Notify {
    use netgauze_bgp_pkt::wire::deserializer::open::BgpOpenMessageParsingError as O;
    let reason = e.to_string();
    match e {
        BgpMessageParsingError::ConnectionNotSynchronized { .. } => {
            Notify::new(1, 1, vec![], reason)
        }
        BgpMessageParsingError::UndefinedBgpMessageType { code, .. } => {
            Notify::new(1, 3, vec![code], reason)
        }
        BgpMessageParsingError::BadMessageLength { length, .. } => {
            Notify::new(1, 2, length.to_be_bytes().to_vec(), reason)
        }
        BgpMessageParsingError::UnparseableBytes { length, .. } => {
            Notify::new(1, 2, length.to_be_bytes().to_vec(), reason)
        }
        BgpMessageParsingError::Parse(_) => Notify::new(1, 0, vec![], reason),
        BgpMessageParsingError::BgpOpenMessageParsingError(o) => match o {
            // Data: the largest version we support, as two octets (RFC 4271 6.2).
            O::UnsupportedVersionNumber { .. } => Notify::new(2, 1, vec![0, 4], reason),
            O::UnacceptableHoldTime { .. } => Notify::new(2, 6, vec![], reason),
            O::InvalidBgpId { .. } => Notify::new(2, 3, vec![], reason),
            _ => Notify::new(2, 0, vec![], reason),
        },
        BgpMessageParsingError::BgpUpdateMessageParsingError(_) => {
            Notify::new(3, 1, vec![], reason)
        }
        BgpMessageParsingError::BgpNotificationMessageParsingError(_) => {
            Notify::new(1, 0, vec![], reason)
        }
        BgpMessageParsingError::BgpRouteRefreshMessageParsingError(_) => {
            Notify::new(7, 1, vec![], reason)
        }
    }
}

/// Serialises a message (header included).
pub fn encode(msg: &BgpMessage) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(64);
    msg.write(&mut out).map_err(|e| format!("{e:?}"))?;
    if out.len() > MAX_MESSAGE_LEN {
        return Err(format!("message of {} bytes exceeds 4096", out.len()));
    }
    Ok(out)
}

/// Our OPEN: MP-BGP IPv4 and IPv6 unicast, route refresh, 4-octet AS (AS_TRANS in the 2-byte
/// field when the AS does not fit).
pub fn open(my_as: u32, hold_time: u16, router_id: Ipv4Addr) -> BgpMessage {
    let as2 = u16::try_from(my_as).unwrap_or(AS_TRANS);
    let caps = vec![
        BgpCapability::MultiProtocolExtensions(MultiProtocolExtensionsCapability::new(
            AddressType::Ipv4Unicast,
        )),
        BgpCapability::MultiProtocolExtensions(MultiProtocolExtensionsCapability::new(
            AddressType::Ipv6Unicast,
        )),
        BgpCapability::RouteRefresh,
        BgpCapability::FourOctetAs(FourOctetAsCapability::new(my_as)),
    ];
    BgpMessage::Open(BgpOpenMessage::new(
        as2,
        hold_time,
        router_id,
        vec![BgpOpenMessageParameter::new_capabilities(caps)],
    ))
}

/// What we learnt from the peer's OPEN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerOpen {
    pub asn: u32,
    pub hold_time: u16,
    pub router_id: Ipv4Addr,
    pub asn4: bool,
    pub route_refresh: bool,
    pub ipv4_unicast: bool,
    pub ipv6_unicast: bool,
}

/// Reads the interesting parts of a peer OPEN.
pub fn peer_open(open: &BgpOpenMessage) -> PeerOpen {
    let caps = open.capabilities();
    let no_mp = !caps
        .iter()
        .any(|c| matches!(c, BgpCapability::MultiProtocolExtensions(_)));
    let mp = |t: AddressType| {
        caps.iter().any(
            |c| matches!(c, BgpCapability::MultiProtocolExtensions(m) if m.address_type() == t),
        )
    };
    PeerOpen {
        asn: open.my_asn4(),
        hold_time: open.hold_time(),
        router_id: open.bgp_id(),
        asn4: caps
            .iter()
            .any(|c| matches!(c, BgpCapability::FourOctetAs(_))),
        route_refresh: caps.iter().any(|c| {
            matches!(
                c,
                BgpCapability::RouteRefresh
                    | BgpCapability::CiscoRouteRefresh
                    | BgpCapability::EnhancedRouteRefresh
            )
        }),
        // Without any MP capability a peer speaks IPv4 unicast only (RFC 4760).
        ipv4_unicast: no_mp || mp(AddressType::Ipv4Unicast),
        ipv6_unicast: mp(AddressType::Ipv6Unicast),
    }
}

/// How to build UPDATEs for one session.
#[derive(Debug, Clone, Copy)]
pub struct UpdateCtx {
    pub my_as: u32,
    pub ibgp: bool,
    pub asn4: bool,
}

fn attr(optional: bool, transitive: bool, value: PathAttributeValue) -> Option<PathAttribute> {
    PathAttribute::from(optional, transitive, false, false, value).ok()
}

fn common_attrs(ctx: UpdateCtx, route: &Route) -> Vec<PathAttribute> {
    let mut attrs = Vec::new();
    attrs.extend(attr(false, true, PathAttributeValue::Origin(Origin::IGP)));
    let path = if ctx.ibgp {
        if ctx.asn4 {
            AsPath::As4PathSegments(Box::new([]))
        } else {
            AsPath::As2PathSegments(Box::new([]))
        }
    } else if ctx.asn4 {
        AsPath::As4PathSegments(Box::new([As4PathSegment::new(
            AsPathSegmentType::AsSequence,
            vec![ctx.my_as],
        )]))
    } else {
        AsPath::As2PathSegments(Box::new([As2PathSegment::new(
            AsPathSegmentType::AsSequence,
            vec![u16::try_from(ctx.my_as).unwrap_or(AS_TRANS)],
        )]))
    };
    attrs.extend(attr(false, true, PathAttributeValue::AsPath(path)));
    if !ctx.ibgp && !ctx.asn4 && ctx.my_as > u32::from(u16::MAX) {
        // A 2-octet-only peer sees AS_TRANS in AS_PATH; the real AS goes in AS4_PATH
        // (optional transitive, RFC 6793 section 4.2.2).
        attrs.extend(attr(
            true,
            true,
            PathAttributeValue::As4Path(As4Path::new(vec![As4PathSegment::new(
                AsPathSegmentType::AsSequence,
                vec![ctx.my_as],
            )])),
        ));
    }
    if ctx.ibgp {
        // LOCAL_PREF goes to internal peers only (RFC 4271 5.1.5).
        let lp = route.local_pref.unwrap_or(100);
        attrs.extend(attr(
            false,
            true,
            PathAttributeValue::LocalPreference(LocalPreference::new(lp)),
        ));
    }
    if !route.communities.is_empty() {
        let c: Vec<Community> = route
            .communities
            .iter()
            .map(|c| Community::new(*c))
            .collect();
        attrs.extend(attr(
            true,
            true,
            PathAttributeValue::Communities(Communities::new(c)),
        ));
    }
    if !route.large_communities.is_empty() {
        let c: Vec<LargeCommunity> = route
            .large_communities
            .iter()
            .map(|(a, b, c)| LargeCommunity::new(*a, *b, *c))
            .collect();
        attrs.extend(attr(
            true,
            true,
            PathAttributeValue::LargeCommunities(LargeCommunities::new(c)),
        ));
    }
    attrs
}

/// An UPDATE announcing `route` with `next_hop`. `None` when prefix and next hop families
/// differ or the prefix is not unicast.
pub fn announce(ctx: UpdateCtx, route: &Route, next_hop: IpAddr) -> Option<BgpMessage> {
    let mut attrs = common_attrs(ctx, route);
    match (route.prefix, next_hop) {
        (IpNet::V4(net), IpAddr::V4(nh)) => {
            let nlri = Ipv4UnicastAddress::new_no_path_id(Ipv4Unicast::from_net(net).ok()?);
            attrs.extend(attr(
                false,
                true,
                PathAttributeValue::NextHop(NextHop::new(nh)),
            ));
            Some(BgpMessage::Update(BgpUpdateMessage::new(
                vec![],
                attrs,
                vec![nlri],
            )))
        }
        (IpNet::V6(net), IpAddr::V6(nh)) => {
            let nlri = Ipv6UnicastAddress::new(None, Ipv6Unicast::from_net(net).ok()?);
            attrs.push(
                PathAttribute::from(
                    true,
                    false,
                    false,
                    true,
                    PathAttributeValue::MpReach(MpReach::Ipv6Unicast {
                        next_hop_global: nh,
                        next_hop_local: None,
                        nlri: Box::new([nlri]),
                    }),
                )
                .ok()?,
            );
            Some(BgpMessage::Update(BgpUpdateMessage::new(
                vec![],
                attrs,
                vec![],
            )))
        }
        _ => None,
    }
}

/// UPDATEs withdrawing `prefixes` (chunked so each stays well under 4096 bytes).
pub fn withdraw(prefixes: &[IpNet]) -> Vec<BgpMessage> {
    let v4: Vec<Ipv4UnicastAddress> = prefixes
        .iter()
        .filter_map(|p| match p {
            IpNet::V4(n) => Ipv4Unicast::from_net(*n)
                .ok()
                .map(Ipv4UnicastAddress::new_no_path_id),
            IpNet::V6(_) => None,
        })
        .collect();
    let v6: Vec<Ipv6UnicastAddress> = prefixes
        .iter()
        .filter_map(|p| match p {
            IpNet::V6(n) => Ipv6Unicast::from_net(*n)
                .ok()
                .map(|n| Ipv6UnicastAddress::new(None, n)),
            IpNet::V4(_) => None,
        })
        .collect();
    let mut out = Vec::new();
    for chunk in v4.chunks(500) {
        out.push(BgpMessage::Update(BgpUpdateMessage::new(
            chunk.to_vec(),
            vec![],
            vec![],
        )));
    }
    for chunk in v6.chunks(150) {
        if let Ok(a) = PathAttribute::from(
            true,
            false,
            false,
            true,
            PathAttributeValue::MpUnreach(MpUnreach::Ipv6Unicast {
                nlri: chunk.to_vec().into(),
            }),
        ) {
            out.push(BgpMessage::Update(BgpUpdateMessage::new(
                vec![],
                vec![a],
                vec![],
            )));
        }
    }
    out
}

/// The netgauze NOTIFICATION for a code/subcode/data triple; unknown codes map to the
/// closest "unspecific" subcode of their class.
pub fn notification(n: &Notify) -> BgpNotificationMessage {
    let value: Box<[u8]> = n.data.clone().into();
    match (n.code, n.subcode) {
        (1, 1) => BgpNotificationMessage::MessageHeaderError(
            MessageHeaderError::ConnectionNotSynchronized { value },
        ),
        (1, 2) => {
            BgpNotificationMessage::MessageHeaderError(MessageHeaderError::BadMessageLength {
                value,
            })
        }
        (1, 3) => {
            BgpNotificationMessage::MessageHeaderError(MessageHeaderError::BadMessageType { value })
        }
        (1, _) => {
            BgpNotificationMessage::MessageHeaderError(MessageHeaderError::Unspecific { value })
        }
        (2, 1) => {
            BgpNotificationMessage::OpenMessageError(OpenMessageError::UnsupportedVersionNumber {
                value,
            })
        }
        (2, 2) => BgpNotificationMessage::OpenMessageError(OpenMessageError::BadPeerAs { value }),
        (2, 3) => {
            BgpNotificationMessage::OpenMessageError(OpenMessageError::BadBgpIdentifier { value })
        }
        (2, 4) => BgpNotificationMessage::OpenMessageError(
            OpenMessageError::UnsupportedOptionalParameter { value },
        ),
        (2, 6) => {
            BgpNotificationMessage::OpenMessageError(OpenMessageError::UnacceptableHoldTime {
                value,
            })
        }
        (2, 7) => {
            BgpNotificationMessage::OpenMessageError(OpenMessageError::UnsupportedCapability {
                value,
            })
        }
        (2, _) => BgpNotificationMessage::OpenMessageError(OpenMessageError::Unspecific { value }),
        (3, 1) => {
            BgpNotificationMessage::UpdateMessageError(UpdateMessageError::MalformedAttributeList {
                value,
            })
        }
        (3, _) => {
            BgpNotificationMessage::UpdateMessageError(UpdateMessageError::Unspecific { value })
        }
        (4, sub) => {
            BgpNotificationMessage::HoldTimerExpiredError(HoldTimerExpiredError::Unspecific {
                sub_code: sub,
                value,
            })
        }
        (5, 1) => BgpNotificationMessage::FiniteStateMachineError(
            FiniteStateMachineError::ReceiveUnexpectedMessageInOpenSentState { value },
        ),
        (5, 2) => BgpNotificationMessage::FiniteStateMachineError(
            FiniteStateMachineError::ReceiveUnexpectedMessageInOpenConfirmState { value },
        ),
        (5, 3) => BgpNotificationMessage::FiniteStateMachineError(
            FiniteStateMachineError::ReceiveUnexpectedMessageInEstablishedState { value },
        ),
        (5, _) => {
            BgpNotificationMessage::FiniteStateMachineError(FiniteStateMachineError::Unspecific {
                value,
            })
        }
        (6, 3) => BgpNotificationMessage::CeaseError(CeaseError::PeerDeConfigured { value }),
        (6, 4) => BgpNotificationMessage::CeaseError(CeaseError::AdministrativeReset { value }),
        (6, 5) => BgpNotificationMessage::CeaseError(CeaseError::ConnectionRejected { value }),
        (6, 6) => {
            BgpNotificationMessage::CeaseError(CeaseError::OtherConfigurationChange { value })
        }
        (6, 7) => {
            BgpNotificationMessage::CeaseError(CeaseError::ConnectionCollisionResolution { value })
        }
        (6, 10) => BgpNotificationMessage::CeaseError(CeaseError::BfdDown { value }),
        (6, _) => BgpNotificationMessage::CeaseError(CeaseError::AdministrativeShutdown { value }),
        (7, _) => {
            BgpNotificationMessage::RouteRefreshError(RouteRefreshError::InvalidMessageLength {
                value,
            })
        }
        _ => BgpNotificationMessage::CeaseError(CeaseError::AdministrativeShutdown { value }),
    }
}

/// Code and subcode of a NOTIFICATION (for messages we receive).
pub fn notification_codes(n: &BgpNotificationMessage) -> (u8, u8) {
    let frame = encode(&BgpMessage::Notification(n.clone())).unwrap_or_default();
    match frame.get(HEADER_LEN..HEADER_LEN + 2) {
        Some(c) => (c[0], c[1]),
        None => (0, 0),
    }
}

/// Whether a prefix is IPv6 (route refresh and family filtering).
pub fn is_v6(p: &IpNet) -> bool {
    matches!(p, IpNet::V6(_))
}

/// Whether an address can be a next hop (not unspecified, multicast, broadcast or loopback ::1).
pub fn usable_next_hop(nh: IpAddr) -> bool {
    match nh {
        IpAddr::V4(a) => !a.is_unspecified() && !a.is_multicast() && !a.is_broadcast(),
        IpAddr::V6(a) => !a.is_unspecified() && !a.is_multicast() && a != Ipv6Addr::LOCALHOST,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn route(p: &str) -> Route {
        Route {
            prefix: p.parse().unwrap(),
            next_hop: None,
            local_pref: Some(200),
            communities: vec![(64512 << 16) | 10],
            large_communities: vec![(64512, 1, 2)],
        }
    }

    #[test]
    fn open_round_trip_with_as_trans() {
        let frame = encode(&open(4_200_000_000, 90, Ipv4Addr::new(10, 0, 0, 1))).unwrap();
        assert_eq!(u16::from_be_bytes([frame[20], frame[21]]), AS_TRANS);
        let BgpMessage::Open(o) = decode(&frame, false).unwrap() else {
            panic!("not an open")
        };
        let p = peer_open(&o);
        assert_eq!(p.asn, 4_200_000_000);
        assert!(p.asn4 && p.route_refresh && p.ipv4_unicast && p.ipv6_unicast);
        assert_eq!(p.hold_time, 90);
    }

    #[test]
    fn update_round_trips_v4_and_v6() {
        let ctx = UpdateCtx {
            my_as: 64512,
            ibgp: true,
            asn4: true,
        };
        for (p, nh) in [("10.1.0.7/32", "10.0.0.2"), ("fd00:1::7/128", "fd00::2")] {
            let msg = announce(ctx, &route(p), nh.parse().unwrap()).unwrap();
            let frame = encode(&msg).unwrap();
            assert_eq!(decode(&frame, true).unwrap(), msg);
        }
        for msg in withdraw(&["10.1.0.7/32".parse().unwrap(), "fd00::/64".parse().unwrap()]) {
            let frame = encode(&msg).unwrap();
            assert_eq!(decode(&frame, true).unwrap(), msg);
        }
    }

    #[test]
    fn two_octet_peer_gets_as_trans_and_as4_path() {
        let ctx = UpdateCtx {
            my_as: 4_200_000_000,
            ibgp: false,
            asn4: false,
        };
        let msg = announce(ctx, &route("10.1.0.7/32"), "10.0.0.2".parse().unwrap()).unwrap();
        let frame = encode(&msg).unwrap();
        let BgpMessage::Update(u) = decode(&frame, false).unwrap() else {
            panic!()
        };
        let dbg = format!("{:?}", u.path_attributes());
        assert!(dbg.contains("[23456]"), "{dbg}");
        assert!(
            dbg.contains("As4Path") && dbg.contains("4200000000"),
            "{dbg}"
        );
    }

    #[test]
    fn header_errors_have_rfc_codes() {
        let mut h = vec![0xffu8; 16];
        h.extend([0, 18, 4]);
        assert_eq!(check_header(&h).unwrap_err().subcode, 2);
        h[17] = 19;
        h[18] = 9;
        assert_eq!(check_header(&h).unwrap_err().subcode, 3);
        h[0] = 0;
        assert_eq!(check_header(&h).unwrap_err().subcode, 1);
    }

    #[test]
    fn notification_codes_round_trip() {
        for (c, s) in [(2u8, 2u8), (4, 0), (6, 2), (6, 3), (6, 10), (1, 1), (3, 1)] {
            let n = notification(&Notify::new(c, s, vec![], "x"));
            assert_eq!(notification_codes(&n), (c, s));
        }
    }

    #[test]
    fn version_3_open_is_unsupported_version() {
        let mut frame = encode(&open(65001, 90, Ipv4Addr::new(1, 1, 1, 1))).unwrap();
        frame[19] = 3;
        let n = decode(&frame, false).unwrap_err();
        assert_eq!((n.code, n.subcode), (2, 1));
    }

    #[test]
    fn malformed_origin_is_treated_as_withdraw_not_fatal() {
        let ctx = UpdateCtx {
            my_as: 65000,
            ibgp: false,
            asn4: true,
        };
        let mut r = route("10.1.0.7/32");
        r.large_communities = vec![];
        r.communities = vec![7];
        let mut frame = encode(&announce(ctx, &r, "10.0.0.2".parse().unwrap()).unwrap()).unwrap();
        // ORIGIN (flags 0x40, type 1, length 1) with the undefined value 7: RFC 7606 says
        // treat-as-withdraw rather than a session reset.
        let at = frame
            .windows(4)
            .position(|w| w == [0x40, 1, 1, 0])
            .expect("origin attribute");
        frame[at + 3] = 7;
        assert!(decode(&frame, true).is_err());
        let (msg, ignored) = decode_lenient(&frame, true).expect("kept the session");
        assert!(matches!(msg, BgpMessage::Update(_)));
        assert_eq!(ignored.len(), 1, "{ignored:?}");
    }

    proptest! {
        #[test]
        fn frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = split_frame(&bytes);
            let _ = decode(&bytes, true);
            let _ = decode(&bytes, false);
            let _ = decode_lenient(&bytes, true);
        }

        #[test]
        fn marker_prefixed_bytes_never_panic(ty in 1u8..=5, body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut frame = vec![0xffu8; 16];
            frame.extend(((HEADER_LEN + body.len()) as u16).to_be_bytes());
            frame.push(ty);
            frame.extend(body);
            prop_assert_eq!(split_frame(&frame).unwrap(), Some(frame.len()));
            let _ = decode(&frame, true);
            let _ = decode(&frame, false);
            let _ = decode_lenient(&frame, true);
        }

        #[test]
        fn our_updates_round_trip(a in any::<u32>(), len in 0u8..=32, lp in any::<u32>(),
                                  comms in proptest::collection::vec(any::<u32>(), 0..5)) {
            let net = ipnet::Ipv4Net::new(Ipv4Addr::from(a), len).unwrap().trunc();
            let r = Route { prefix: IpNet::V4(net), next_hop: None, local_pref: Some(lp),
                            communities: comms, large_communities: vec![(1, 2, 3)] };
            let ctx = UpdateCtx { my_as: 65000, ibgp: false, asn4: true };
            if let Some(msg) = announce(ctx, &r, "10.0.0.1".parse().unwrap()) {
                let frame = encode(&msg).unwrap();
                prop_assert_eq!(decode(&frame, true).unwrap(), msg);
            }
        }
    }
}
