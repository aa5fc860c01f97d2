//! The session FSM against a scripted peer over loopback TCP.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use berth_bgp::wire;
use berth_bgp::{PeerConfig, PeerStatus, Route, SessionState, Speaker};
use netgauze_bgp_pkt::BgpMessage;
use netgauze_bgp_pkt::iana::RouteRefreshSubcode;
use netgauze_bgp_pkt::route_refresh::BgpRouteRefreshMessage;
use netgauze_iana::address_family::AddressType;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::timeout;

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const T: Duration = Duration::from_secs(10);

struct Scripted {
    s: TcpStream,
    asn4: bool,
}

impl Scripted {
    async fn send(&mut self, m: &BgpMessage) {
        self.s.write_all(&wire::encode(m).unwrap()).await.unwrap();
    }
    async fn recv(&mut self) -> BgpMessage {
        let f = timeout(T, wire::read_frame(&mut self.s))
            .await
            .expect("no message in time")
            .expect("read");
        wire::decode(&f, self.asn4).expect("decode")
    }
    /// Next message that is not a KEEPALIVE.
    async fn recv_non_keepalive(&mut self) -> BgpMessage {
        loop {
            let m = self.recv().await;
            if m != BgpMessage::KeepAlive {
                return m;
            }
        }
    }
    async fn expect_notification(&mut self) -> (u8, u8) {
        match self.recv_non_keepalive().await {
            BgpMessage::Notification(n) => wire::notification_codes(&n),
            other => panic!("expected a NOTIFICATION, got {other:?}"),
        }
    }
    /// OPEN exchange up to Established from the peer's side.
    async fn establish(&mut self, asn: u32, hold: u16) {
        let BgpMessage::Open(o) = self.recv().await else {
            panic!("first message is not an OPEN")
        };
        let p = wire::peer_open(&o);
        assert!(p.asn4 && p.route_refresh && p.ipv4_unicast && p.ipv6_unicast);
        self.send(&wire::open(asn, hold, Ipv4Addr::new(10, 255, 0, 1)))
            .await;
        assert_eq!(self.recv().await, BgpMessage::KeepAlive);
        self.asn4 = true;
        self.send(&BgpMessage::KeepAlive).await;
    }
}

async fn scripted_peer(speaker_as: u32) -> (Speaker, TcpListener, PeerConfig) {
    let l = TcpListener::bind((LO, 0)).await.unwrap();
    let mut cfg = PeerConfig::new(LO, 65000, speaker_as, Ipv4Addr::new(10, 0, 0, 7));
    cfg.port = l.local_addr().unwrap().port();
    cfg.connect_retry_min = Duration::from_millis(100);
    cfg.connect_retry_max = Duration::from_millis(400);
    cfg.ebgp_multihop = true;
    (Speaker::new(), l, cfg)
}

async fn accept(l: &TcpListener) -> Scripted {
    let (s, _) = timeout(T, l.accept()).await.expect("no connect").unwrap();
    Scripted { s, asn4: false }
}

async fn wait_state(rx: &mut watch::Receiver<PeerStatus>, want: SessionState) -> PeerStatus {
    let r = timeout(T, rx.wait_for(|s| s.state == want))
        .await
        .map(|r| r.unwrap().clone());
    r.unwrap_or_else(|_| panic!("never reached {want:?}: {:?}", rx.borrow()))
}

fn nlri_of(m: &BgpMessage) -> Vec<String> {
    let BgpMessage::Update(u) = m else {
        panic!("not an update: {m:?}")
    };
    u.nlri()
        .iter()
        .map(|n| n.network().address().to_string())
        .collect()
}

#[tokio::test]
async fn open_negotiation_routes_and_route_refresh() {
    let (sp, l, cfg) = scripted_peer(4_200_000_001).await;
    let mut st = sp.add_peer(cfg).unwrap();
    let mut peer = accept(&l).await;
    // 4-octet AS: the OPEN carries AS_TRANS, the capability the real AS.
    peer.establish(65000, 9).await;
    wait_state(&mut st, SessionState::Established).await;

    let mut r = Route::new("10.9.0.1/32".parse().unwrap());
    r.communities = vec![(65000 << 16) | 7];
    sp.announce(r);
    let m = peer.recv_non_keepalive().await;
    assert_eq!(nlri_of(&m), vec!["10.9.0.1/32"]);
    let BgpMessage::Update(u) = &m else { panic!() };
    // eBGP: AS_PATH is our 4-octet AS; next hop is the session's local address.
    let dbg = format!("{:?}", u.path_attributes());
    assert!(dbg.contains("4200000001"), "{dbg}");
    assert!(dbg.contains("127.0.0.1"), "{dbg}");
    assert!(
        !dbg.contains("LocalPreference"),
        "no LOCAL_PREF to eBGP: {dbg}"
    );

    let st_now = timeout(T, st.wait_for(|s| s.prefixes_advertised == 1))
        .await
        .unwrap()
        .unwrap()
        .clone();
    assert!(st_now.updates_sent >= 1);
    assert!(st_now.uptime().is_some());

    // ROUTE-REFRESH: the route is sent again.
    peer.send(&BgpMessage::RouteRefresh(BgpRouteRefreshMessage::new(
        AddressType::Ipv4Unicast,
        RouteRefreshSubcode::NormalRequest,
    )))
    .await;
    assert_eq!(
        nlri_of(&peer.recv_non_keepalive().await),
        vec!["10.9.0.1/32"]
    );

    // Withdraw.
    assert!(sp.withdraw("10.9.0.1/32".parse().unwrap()));
    let BgpMessage::Update(u) = peer.recv_non_keepalive().await else {
        panic!()
    };
    assert_eq!(u.withdraw_routes().len(), 1);

    // set_routes is diffed: only the new route goes out.
    sp.set_routes(vec![Route::new("10.9.0.2/32".parse().unwrap())]);
    assert_eq!(
        nlri_of(&peer.recv_non_keepalive().await),
        vec!["10.9.0.2/32"]
    );
    sp.set_routes(vec![
        Route::new("10.9.0.2/32".parse().unwrap()),
        Route::new("10.9.0.3/32".parse().unwrap()),
    ]);
    assert_eq!(
        nlri_of(&peer.recv_non_keepalive().await),
        vec!["10.9.0.3/32"]
    );

    // Graceful shutdown: withdraw everything, then Cease/Administrative Shutdown.
    let sp2 = sp.clone();
    let shut = tokio::spawn(async move { sp2.shutdown().await });
    let BgpMessage::Update(u) = peer.recv_non_keepalive().await else {
        panic!()
    };
    assert_eq!(u.withdraw_routes().len(), 2);
    assert_eq!(peer.expect_notification().await, (6, 2));
    timeout(T, shut).await.unwrap().unwrap();
}

#[tokio::test]
async fn hold_timer_expiry_sends_notification() {
    let (sp, l, cfg) = scripted_peer(65001).await;
    let mut st = sp.add_peer(cfg).unwrap();
    let mut peer = accept(&l).await;
    peer.establish(65000, 3).await;
    wait_state(&mut st, SessionState::Established).await;
    // We stay silent: the speaker's 3 s hold timer fires.
    let start = tokio::time::Instant::now();
    assert_eq!(peer.expect_notification().await, (4, 0));
    assert!(start.elapsed() >= Duration::from_secs(2));
    let s = timeout(T, st.wait_for(|s| s.state != SessionState::Established))
        .await
        .unwrap()
        .unwrap()
        .clone();
    assert!(
        s.last_error.unwrap_or_default().contains("hold timer"),
        "{:?}",
        st.borrow()
    );
}

#[tokio::test]
async fn bad_peer_as_gets_open_error_2_2_and_retries() {
    let (sp, l, cfg) = scripted_peer(65001).await;
    let mut st = sp.add_peer(cfg).unwrap();
    let mut peer = accept(&l).await;
    let _ = peer.recv().await;
    peer.send(&wire::open(65099, 90, Ipv4Addr::new(10, 255, 0, 1)))
        .await;
    assert_eq!(peer.expect_notification().await, (2, 2));
    timeout(T, st.wait_for(|s| s.last_error.is_some()))
        .await
        .unwrap()
        .unwrap();
    assert!(
        st.borrow()
            .last_error
            .as_deref()
            .unwrap()
            .contains("bad peer AS 65099")
    );
    // Connect retry: the speaker comes back by itself.
    let mut again = accept(&l).await;
    again.establish(65000, 90).await;
    wait_state(&mut st, SessionState::Established).await;
}

#[tokio::test]
async fn unsupported_version_gets_2_1() {
    let (sp, l, cfg) = scripted_peer(65001).await;
    let _st = sp.add_peer(cfg).unwrap();
    let mut peer = accept(&l).await;
    let _ = peer.recv().await;
    let mut open = wire::encode(&wire::open(65000, 90, Ipv4Addr::new(10, 255, 0, 1))).unwrap();
    open[19] = 3;
    peer.s.write_all(&open).await.unwrap();
    assert_eq!(peer.expect_notification().await, (2, 1));
}

#[tokio::test]
async fn garbage_gets_header_error() {
    let (sp, l, cfg) = scripted_peer(65001).await;
    let _st = sp.add_peer(cfg).unwrap();
    let mut peer = accept(&l).await;
    let _ = peer.recv().await;
    let mut bad = vec![0xffu8; 16];
    bad.extend([0x20, 0x00, 4]); // 8192 bytes: above the 4096 cap
    peer.s.write_all(&bad).await.unwrap();
    assert_eq!(peer.expect_notification().await, (1, 2));
}

#[tokio::test]
async fn passive_peer_accepted_and_removed_with_cease_3() {
    let sp = Speaker::new();
    let bound = sp.listen((LO, 0).into()).await.unwrap();
    let mut cfg = PeerConfig::new(LO, 65000, 65000, Ipv4Addr::new(10, 0, 0, 7));
    cfg.passive = true;
    let mut st = sp.add_peer(cfg).unwrap();
    wait_state(&mut st, SessionState::Active).await;
    let s = TcpStream::connect(bound).await.unwrap();
    let mut peer = Scripted { s, asn4: false };
    peer.send(&wire::open(65000, 90, Ipv4Addr::new(10, 255, 0, 1)))
        .await;
    peer.establish_after_open().await;
    wait_state(&mut st, SessionState::Established).await;
    let mut r = Route::new("fd00:9::1/128".parse().unwrap());
    r.next_hop = Some("fd00::7".parse().unwrap());
    r.local_pref = Some(300);
    sp.announce(r);
    let BgpMessage::Update(u) = peer.recv_non_keepalive().await else {
        panic!()
    };
    let dbg = format!("{:?}", u.path_attributes());
    assert!(dbg.contains("MpReach") && dbg.contains("fd00::7"), "{dbg}");
    assert!(
        dbg.contains("metric: 300"),
        "iBGP carries LOCAL_PREF: {dbg}"
    );
    sp.remove_peer(LO).await.unwrap();
    let BgpMessage::Update(u) = peer.recv_non_keepalive().await else {
        panic!()
    };
    assert!(format!("{u:?}").contains("MpUnreach"));
    assert_eq!(peer.expect_notification().await, (6, 3));
}

#[tokio::test]
async fn unknown_peer_connection_is_closed() {
    let sp = Speaker::new();
    let bound = sp.listen((LO, 0).into()).await.unwrap();
    let mut s = TcpStream::connect(bound).await.unwrap();
    let r = timeout(T, wire::read_frame(&mut s)).await.unwrap();
    assert!(matches!(r, Err(wire::ReadError::Closed)), "{r:?}");
}

impl Scripted {
    /// The peer already sent its OPEN: read ours, then KEEPALIVEs.
    async fn establish_after_open(&mut self) {
        let BgpMessage::Open(_) = self.recv().await else {
            panic!("no OPEN")
        };
        assert_eq!(self.recv().await, BgpMessage::KeepAlive);
        self.asn4 = true;
        self.send(&BgpMessage::KeepAlive).await;
    }
}

/// RFC 4271 6.8: the peer's connection arrives while ours is in OpenConfirm.
struct Collision {
    keep_ours: bool,
    a: Scripted,
    b: Scripted,
    st: watch::Receiver<PeerStatus>,
    _speaker: Speaker,
}

async fn collision(peer_id: Ipv4Addr) -> Collision {
    let (sp, l, cfg) = scripted_peer(65000).await;
    let bound = sp.listen((LO, 0).into()).await.unwrap();
    let mut st = sp.add_peer(cfg).unwrap();
    // Connection A, opened by the speaker, goes to OpenConfirm.
    let mut a = accept(&l).await;
    let BgpMessage::Open(_) = a.recv().await else {
        panic!("no OPEN")
    };
    a.send(&wire::open(65000, 90, peer_id)).await;
    assert_eq!(a.recv().await, BgpMessage::KeepAlive);
    wait_state(&mut st, SessionState::OpenConfirm).await;
    // Connection B, opened by the peer.
    let b = Scripted {
        s: TcpStream::connect(bound).await.unwrap(),
        asn4: false,
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The speaker's id is 10.0.0.7: it keeps its own connection when it is the higher one.
    let keep_ours = u32::from(Ipv4Addr::new(10, 0, 0, 7)) > u32::from(peer_id);
    Collision {
        keep_ours,
        a,
        b,
        st,
        _speaker: sp,
    }
}

#[tokio::test]
async fn collision_higher_peer_id_wins_with_its_connection() {
    let Collision {
        keep_ours,
        mut a,
        mut b,
        mut st,
        _speaker: _keep,
    } = collision(Ipv4Addr::new(10, 255, 0, 1)).await;
    assert!(!keep_ours);
    // Ours is closed with Cease/Connection Collision Resolution; the peer's goes on.
    assert_eq!(a.expect_notification().await, (6, 7));
    b.send(&wire::open(65000, 90, Ipv4Addr::new(10, 255, 0, 1)))
        .await;
    b.establish_after_open().await;
    wait_state(&mut st, SessionState::Established).await;
}

#[tokio::test]
async fn collision_lower_peer_id_loses_its_connection() {
    let Collision {
        keep_ours,
        mut a,
        mut b,
        mut st,
        _speaker: _keep,
    } = collision(Ipv4Addr::new(10, 0, 0, 1)).await;
    assert!(keep_ours);
    // The peer's connection is closed; ours reaches Established.
    let r = timeout(T, wire::read_frame(&mut b.s)).await.unwrap();
    assert!(matches!(r, Err(wire::ReadError::Closed)), "{r:?}");
    a.asn4 = true;
    a.send(&BgpMessage::KeepAlive).await;
    wait_state(&mut st, SessionState::Established).await;
}

#[tokio::test]
async fn update_peer_restarts_only_on_session_settings() {
    let (sp, l, mut cfg) = scripted_peer(65001).await;
    let mut st = sp.add_peer(cfg.clone()).unwrap();
    let mut peer = accept(&l).await;
    peer.establish(65000, 90).await;
    wait_state(&mut st, SessionState::Established).await;
    // Retry bounds are not negotiated: no reset.
    cfg.connect_retry_max = Duration::from_millis(500);
    sp.update_peer(cfg.clone()).await.unwrap();
    // The hold time is: Cease/Other Configuration Change, then a new session.
    cfg.hold_time = 30;
    sp.update_peer(cfg).await.unwrap();
    assert_eq!(peer.expect_notification().await, (6, 6));
    let mut again = accept(&l).await;
    again.establish(65000, 90).await;
    timeout(T, st.wait_for(|s| s.established_count == 2))
        .await
        .unwrap()
        .unwrap();
}
