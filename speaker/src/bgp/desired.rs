//! What this node's speaker peers with and announces: a pure function of the BGPPeers,
//! BGPAdvertisements, BFDProfiles, pools, VIPs and this node.
//!
//! * A peer applies when its `nodeSelectors` select this node. Its session config comes from
//!   the spec; anything unusable (an address that does not parse, AS 0, a bad duration, a
//!   missing BFDProfile or Secret) is an error for that peer only.
//! * A VIP is announced to a peer when an advertisement selects this node, lists the peer
//!   (or no peer) and covers the pool the VIP lies in (by name or label; neither: every
//!   VIP), and — for a Service with `externalTrafficPolicy: Local` — this node has a ready
//!   endpoint. An excluded node (label, autoscaler or karpenter taint) announces nothing.
//! * Routes are the VIP's /32 or /128, or the covering prefix of the advertisement's
//!   aggregation length; the next hop is the session's local address. Two advertisements
//!   announcing the same prefix merge: the highest LOCAL_PREF, the union of communities.

use crate::election::ServiceView;
use berth_api::bgp::{BFDProfileSpec, BGPAdvertisement, BGPPeer, Community, parse_community};
use berth_api::duration::parse_duration;
use berth_bgp::{BfdConfig, IpNet, PeerConfig, Route};
use kube::ResourceExt;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// This node as BGP mode sees it.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Not excluded from load balancers (label, autoscaler/karpenter taints, deletion).
    pub eligible: bool,
    pub router_id: Option<Ipv4Addr>,
}

/// Everything [`desired`] depends on.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub node: NodeInfo,
    pub peers: Vec<BGPPeer>,
    pub advertisements: Vec<BGPAdvertisement>,
    /// BFDProfiles by name.
    pub profiles: BTreeMap<String, BFDProfileSpec>,
    /// IPAddressPool labels by pool name.
    pub pool_labels: BTreeMap<String, BTreeMap<String, String>>,
    /// Every VIP of our class and the Services holding it.
    pub vips: BTreeMap<IpAddr, Vec<ServiceView>>,
    /// The pool each VIP lies in (absent: none known).
    pub vip_pools: BTreeMap<IpAddr, String>,
    /// The password of each peer with a `passwordSecret`, by peer name, or why there is none.
    pub passwords: BTreeMap<String, Result<String, String>>,
}

/// What to do with one BGPPeer on this node.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerPlan {
    /// The session config, or why the peer cannot be used.
    pub config: Result<PeerConfig, String>,
    /// Routes to announce to it, sorted by prefix.
    pub routes: Vec<Route>,
}

/// The result: plans for the peers selecting this node (by BGPPeer name), and problems with
/// advertisements (logged; the advertisement announces nothing).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Desired {
    pub peers: BTreeMap<String, PeerPlan>,
    pub problems: Vec<String>,
}

fn selected(sels: &[berth_api::crd::LabelSelector], labels: &BTreeMap<String, String>) -> bool {
    sels.is_empty() || sels.iter().any(|s| s.matches(labels))
}

/// A stable router id for a node without an IPv4 address.
pub fn router_id_from_name(name: &str) -> Ipv4Addr {
    use sha2::Digest;
    let d = sha2::Sha256::digest(name.as_bytes());
    // 10.x.y.z: never 0.0.0.0.
    Ipv4Addr::new(10, d[0], d[1], d[2].max(1))
}

fn secs(field: &str, v: &Option<String>) -> Result<Option<u16>, String> {
    let Some(s) = v else { return Ok(None) };
    let d = parse_duration(s).map_err(|e| format!("{field}: {e}"))?;
    if d.subsec_nanos() != 0 || d > Duration::from_secs(65535) {
        return Err(format!("{field} {s:?}: whole seconds up to 65535s"));
    }
    Ok(Some(d.as_secs() as u16))
}

fn bfd_config(name: &str, p: &BFDProfileSpec) -> Result<BfdConfig, String> {
    if p.echo_mode {
        return Err(format!("BFDProfile {name}: echoMode is not supported"));
    }
    let ms = |field: &str, v: Option<u32>| -> Result<Duration, String> {
        let v = v.unwrap_or(300);
        if !(10..=60_000).contains(&v) {
            return Err(format!(
                "BFDProfile {name}: {field} {v} must be 10 to 60000 ms"
            ));
        }
        Ok(Duration::from_millis(v.into()))
    };
    let mult = p.detect_multiplier.unwrap_or(3);
    if !(2..=255).contains(&mult) {
        return Err(format!(
            "BFDProfile {name}: detectMultiplier {mult} must be 2 to 255"
        ));
    }
    Ok(BfdConfig {
        min_tx: ms("transmitInterval", p.transmit_interval)?,
        min_rx: ms("receiveInterval", p.receive_interval)?,
        detect_mult: mult as u8,
    })
}

/// The session config of `peer`, or why there is none.
pub fn peer_config(inp: &Inputs, peer: &BGPPeer) -> Result<PeerConfig, String> {
    let s = &peer.spec;
    let address: IpAddr = s.peer_address.trim().parse().map_err(|_| {
        format!(
            "peerAddress {:?} is not an IPv4 or IPv6 address",
            s.peer_address
        )
    })?;
    if s.peer_asn == 0 || s.my_asn == 0 {
        return Err(format!(
            "AS number 0 is reserved (peerASN {}, myASN {})",
            s.peer_asn, s.my_asn
        ));
    }
    let router_id = inp
        .node
        .router_id
        .unwrap_or_else(|| router_id_from_name(&inp.node.name));
    let mut cfg = PeerConfig::new(address, s.peer_asn, s.my_asn, router_id);
    cfg.port = s.peer_port.unwrap_or(179);
    if cfg.port == 0 {
        return Err("peerPort 0 is not a port".into());
    }
    if let Some(h) = secs("holdTime", &s.hold_time)? {
        if h != 0 && h < 3 {
            return Err(format!("holdTime {h}s must be 0 or at least 3s"));
        }
        cfg.hold_time = h;
    }
    if let Some(k) = secs("keepaliveTime", &s.keepalive_time)? {
        if k == 0 {
            return Err("keepaliveTime must be at least 1s".into());
        }
        cfg.keepalive = Some(k);
    }
    if let Some(src) = &s.source_address {
        let ip: IpAddr = src
            .trim()
            .parse()
            .map_err(|_| format!("sourceAddress {src:?} is not an IP address"))?;
        cfg.source_address = Some(ip);
    }
    cfg.ebgp_multihop = s.ebgp_multi_hop;
    if s.password_secret.is_some() {
        let name = peer.name_any();
        match inp.passwords.get(&name) {
            Some(Ok(p)) => cfg.password = Some(p.clone()),
            Some(Err(e)) => return Err(e.clone()),
            None => return Err("the password Secret has not been read yet".into()),
        }
    }
    if let Some(prof) = &s.bfd_profile {
        let p = inp
            .profiles
            .get(prof)
            .ok_or_else(|| format!("BFDProfile {prof:?} does not exist"))?;
        cfg.bfd = Some(bfd_config(prof, p)?);
    }
    Ok(cfg)
}

/// One advertisement, checked: its communities parsed and aggregation lengths valid.
struct Adv<'a> {
    a: &'a BGPAdvertisement,
    len4: u8,
    len6: u8,
    communities: Vec<u32>,
    large: Vec<(u32, u32, u32)>,
}

fn check_adv(a: &BGPAdvertisement) -> Result<Adv<'_>, String> {
    let name = a.name_any();
    let len4 = a.spec.aggregation_length.unwrap_or(32);
    let len6 = a.spec.aggregation_length_v6.unwrap_or(128);
    if len4 > 32 {
        return Err(format!(
            "BGPAdvertisement {name}: aggregationLength {len4} exceeds 32"
        ));
    }
    if len6 > 128 {
        return Err(format!(
            "BGPAdvertisement {name}: aggregationLengthV6 {len6} exceeds 128"
        ));
    }
    let mut communities = vec![];
    let mut large = vec![];
    for c in &a.spec.communities {
        match parse_community(c).map_err(|e| format!("BGPAdvertisement {name}: {e}"))? {
            Community::Standard(v) => communities.push(v),
            Community::Large(g, a, b) => large.push((g, a, b)),
        }
    }
    Ok(Adv {
        a,
        len4,
        len6,
        communities,
        large,
    })
}

impl Adv<'_> {
    fn covers(
        &self,
        pool: Option<&String>,
        pool_labels: &BTreeMap<String, BTreeMap<String, String>>,
    ) -> bool {
        let s = &self.a.spec;
        if s.ip_address_pools.is_empty() && s.ip_address_pool_selectors.is_empty() {
            return true;
        }
        let Some(pool) = pool else { return false };
        s.ip_address_pools.contains(pool)
            || pool_labels
                .get(pool)
                .is_some_and(|l| s.ip_address_pool_selectors.iter().any(|sel| sel.matches(l)))
    }

    fn to_peer(&self, peer: &str) -> bool {
        self.a.spec.peers.is_empty() || self.a.spec.peers.iter().any(|p| p == peer)
    }
}

/// Whether this node may announce a VIP held by `svcs` (ETP=Local needs a local endpoint).
fn vip_allowed(node: &str, svcs: &[ServiceView]) -> bool {
    svcs.iter()
        .filter(|s| s.local)
        .all(|s| s.endpoint_nodes.contains(node))
}

/// The plans for this node.
pub fn desired(inp: &Inputs) -> Desired {
    let mut out = Desired::default();
    let mut advs = vec![];
    let mut sorted: Vec<&BGPAdvertisement> = inp.advertisements.iter().collect();
    sorted.sort_by_key(|a| a.name_any());
    for a in sorted {
        match check_adv(a) {
            Ok(c) => advs.push(c),
            Err(e) => out.problems.push(e),
        }
    }
    let advs: Vec<Adv> = advs
        .into_iter()
        .filter(|a| selected(&a.a.spec.node_selectors, &inp.node.labels))
        .collect();
    // VIPs this node may announce, with the advertisements covering each.
    let mut vips: Vec<(IpAddr, Vec<&Adv>)> = vec![];
    if inp.node.eligible {
        for (ip, svcs) in &inp.vips {
            if !vip_allowed(&inp.node.name, svcs) {
                continue;
            }
            let covering: Vec<&Adv> = advs
                .iter()
                .filter(|a| a.covers(inp.vip_pools.get(ip), &inp.pool_labels))
                .collect();
            if !covering.is_empty() {
                vips.push((*ip, covering));
            }
        }
    }
    let mut peers: Vec<&BGPPeer> = inp
        .peers
        .iter()
        .filter(|p| selected(&p.spec.node_selectors, &inp.node.labels))
        .collect();
    peers.sort_by_key(|p| p.name_any());
    let mut addresses: BTreeMap<(IpAddr, u16), String> = BTreeMap::new();
    for p in peers {
        let name = p.name_any();
        let mut config = peer_config(inp, p);
        if let Ok(c) = &config {
            if let Some(other) = addresses.get(&(c.address, c.port)) {
                config = Err(format!(
                    "BGPPeer {other} already peers with {} port {}",
                    c.address, c.port
                ));
            } else {
                addresses.insert((c.address, c.port), name.clone());
            }
        }
        let mut routes: BTreeMap<IpNet, Route> = BTreeMap::new();
        for (ip, covering) in &vips {
            for a in covering.iter().filter(|a| a.to_peer(&name)) {
                let len = if ip.is_ipv4() { a.len4 } else { a.len6 };
                let Ok(prefix) = IpNet::new(*ip, len) else {
                    continue;
                };
                let r = routes
                    .entry(prefix.trunc())
                    .or_insert_with(|| Route::new(prefix));
                r.local_pref = match (r.local_pref, a.a.spec.local_pref) {
                    (Some(x), Some(y)) => Some(x.max(y)),
                    (x, y) => x.or(y),
                };
                r.communities.extend(&a.communities);
                r.large_communities.extend(&a.large);
            }
        }
        let routes = routes
            .into_values()
            .map(|mut r| {
                let c: BTreeSet<u32> = r.communities.drain(..).collect();
                r.communities = c.into_iter().collect();
                let l: BTreeSet<(u32, u32, u32)> = r.large_communities.drain(..).collect();
                r.large_communities = l.into_iter().collect();
                r
            })
            .collect();
        out.peers.insert(name, PeerPlan { config, routes });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn peer(name: &str, spec: Value) -> BGPPeer {
        serde_json::from_value(json!({
            "apiVersion": "berth.io/v1alpha1", "kind": "BGPPeer",
            "metadata": {"name": name}, "spec": spec
        }))
        .unwrap()
    }

    fn adv(name: &str, spec: Value) -> BGPAdvertisement {
        serde_json::from_value(json!({
            "apiVersion": "berth.io/v1alpha1", "kind": "BGPAdvertisement",
            "metadata": {"name": name}, "spec": spec
        }))
        .unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn svc(key: &str, local: bool, eps: &[&str]) -> ServiceView {
        ServiceView {
            key: key.into(),
            local,
            endpoint_nodes: eps.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// node-1 (rack a), two peers, VIPs in pools `web` (labelled tier=front) and `db`.
    fn base() -> Inputs {
        Inputs {
            node: NodeInfo {
                name: "node-1".into(),
                labels: [("rack".to_string(), "a".to_string())].into(),
                eligible: true,
                router_id: Some(Ipv4Addr::new(10, 0, 0, 11)),
            },
            peers: vec![
                peer(
                    "tor-a",
                    json!({"peerAddress": "10.0.0.1", "peerASN": 64512, "myASN": 64512}),
                ),
                peer(
                    "tor-b",
                    json!({"peerAddress": "fd00::1", "peerASN": 65001, "myASN": 64512,
                           "holdTime": "9s", "keepaliveTime": "3s"}),
                ),
            ],
            advertisements: vec![],
            profiles: BTreeMap::new(),
            pool_labels: [
                (
                    "web".to_string(),
                    [("tier".to_string(), "front".to_string())].into(),
                ),
                ("db".to_string(), BTreeMap::new()),
            ]
            .into(),
            vips: [
                (ip("198.51.100.10"), vec![svc("default/web", false, &[])]),
                (ip("198.51.100.11"), vec![svc("default/web2", false, &[])]),
                (ip("2001:db8::10"), vec![svc("default/web6", false, &[])]),
                (ip("203.0.113.5"), vec![svc("default/db", false, &[])]),
            ]
            .into(),
            vip_pools: [
                (ip("198.51.100.10"), "web".to_string()),
                (ip("198.51.100.11"), "web".to_string()),
                (ip("2001:db8::10"), "web".to_string()),
                (ip("203.0.113.5"), "db".to_string()),
            ]
            .into(),
            passwords: BTreeMap::new(),
        }
    }

    fn prefixes(d: &Desired, peer: &str) -> Vec<String> {
        d.peers[peer]
            .routes
            .iter()
            .map(|r| r.prefix.to_string())
            .collect()
    }

    #[test]
    fn table() {
        struct Case {
            name: &'static str,
            change: fn(&mut Inputs),
            /// peer → prefixes
            want: &'static [(&'static str, &'static [&'static str])],
        }
        let cases = [
            Case {
                name: "no advertisement: peers, no routes",
                change: |_| {},
                want: &[("tor-a", &[]), ("tor-b", &[])],
            },
            Case {
                name: "advertisement with no pool: every VIP to every peer",
                change: |i| i.advertisements = vec![adv("all", json!({}))],
                want: &[
                    (
                        "tor-a",
                        &[
                            "198.51.100.10/32",
                            "198.51.100.11/32",
                            "203.0.113.5/32",
                            "2001:db8::10/128",
                        ],
                    ),
                    (
                        "tor-b",
                        &[
                            "198.51.100.10/32",
                            "198.51.100.11/32",
                            "203.0.113.5/32",
                            "2001:db8::10/128",
                        ],
                    ),
                ],
            },
            Case {
                name: "pool by name, one peer",
                change: |i| {
                    i.advertisements = vec![adv(
                        "db",
                        json!({"ipAddressPools": ["db"], "peers": ["tor-b"]}),
                    )]
                },
                want: &[("tor-a", &[]), ("tor-b", &["203.0.113.5/32"])],
            },
            Case {
                name: "pool by label, aggregated",
                change: |i| {
                    i.advertisements = vec![adv(
                        "web",
                        json!({"ipAddressPoolSelectors": [{"matchLabels": {"tier": "front"}}],
                               "aggregationLength": 24, "aggregationLengthV6": 64}),
                    )]
                },
                want: &[
                    ("tor-a", &["198.51.100.0/24", "2001:db8::/64"]),
                    ("tor-b", &["198.51.100.0/24", "2001:db8::/64"]),
                ],
            },
            Case {
                name: "advertisement for another rack: nothing",
                change: |i| {
                    i.advertisements = vec![adv(
                        "b",
                        json!({"nodeSelectors": [{"matchLabels": {"rack": "b"}}]}),
                    )]
                },
                want: &[("tor-a", &[]), ("tor-b", &[])],
            },
            Case {
                name: "excluded node: sessions, no routes",
                change: |i| {
                    i.advertisements = vec![adv("all", json!({}))];
                    i.node.eligible = false;
                },
                want: &[("tor-a", &[]), ("tor-b", &[])],
            },
            Case {
                name: "peer for another rack is not peered with",
                change: |i| {
                    i.peers[1].spec.node_selectors = vec![
                        serde_json::from_value(json!({"matchLabels": {"rack": "b"}})).unwrap(),
                    ];
                    i.advertisements = vec![adv("db", json!({"ipAddressPools": ["db"]}))];
                },
                want: &[("tor-a", &["203.0.113.5/32"])],
            },
            Case {
                name: "ETP Local: only with a ready local endpoint",
                change: |i| {
                    i.advertisements = vec![adv("web", json!({"ipAddressPools": ["web"]}))];
                    i.vips.insert(
                        ip("198.51.100.10"),
                        vec![svc("default/web", true, &["node-2"])],
                    );
                    i.vips.insert(
                        ip("198.51.100.11"),
                        vec![svc("default/web2", true, &["node-1", "node-3"])],
                    );
                },
                want: &[
                    ("tor-a", &["198.51.100.11/32", "2001:db8::10/128"]),
                    ("tor-b", &["198.51.100.11/32", "2001:db8::10/128"]),
                ],
            },
            Case {
                name: "a VIP in no known pool is announced only by pool-less advertisements",
                change: |i| {
                    i.vip_pools.clear();
                    i.advertisements = vec![
                        adv(
                            "web",
                            json!({"ipAddressPools": ["web"], "peers": ["tor-a"]}),
                        ),
                        adv("any", json!({"peers": ["tor-b"]})),
                    ];
                },
                want: &[
                    ("tor-a", &[]),
                    (
                        "tor-b",
                        &[
                            "198.51.100.10/32",
                            "198.51.100.11/32",
                            "203.0.113.5/32",
                            "2001:db8::10/128",
                        ],
                    ),
                ],
            },
            Case {
                name: "bad advertisement announces nothing, good one still does",
                change: |i| {
                    i.advertisements = vec![
                        adv("bad", json!({"communities": ["banana"]})),
                        adv("db", json!({"ipAddressPools": ["db"]})),
                    ];
                },
                want: &[
                    ("tor-a", &["203.0.113.5/32"]),
                    ("tor-b", &["203.0.113.5/32"]),
                ],
            },
        ];
        for c in cases {
            let mut inp = base();
            (c.change)(&mut inp);
            let d = desired(&inp);
            let got: Vec<(String, Vec<String>)> = d
                .peers
                .keys()
                .map(|p| (p.clone(), prefixes(&d, p)))
                .collect();
            let want: Vec<(String, Vec<String>)> = c
                .want
                .iter()
                .map(|(p, v)| (p.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect();
            assert_eq!(got, want, "{}", c.name);
            for plan in d.peers.values() {
                assert!(plan.config.is_ok(), "{}: {:?}", c.name, plan.config);
            }
        }
    }

    #[test]
    fn attributes_merge_and_configs_follow_the_spec() {
        let mut inp = base();
        inp.advertisements = vec![
            adv(
                "a",
                json!({"ipAddressPools": ["db"], "localPref": 100, "communities": ["65000:100"]}),
            ),
            adv(
                "b",
                json!({"ipAddressPools": ["db"], "localPref": 150,
                       "communities": ["65000:100", "65000:200", "65000:1:2"]}),
            ),
        ];
        let d = desired(&inp);
        let r = &d.peers["tor-a"].routes[0];
        assert_eq!(r.local_pref, Some(150));
        assert_eq!(
            r.communities,
            vec![(65000 << 16) | 100, (65000 << 16) | 200]
        );
        assert_eq!(r.large_communities, vec![(65000, 1, 2)]);
        assert_eq!(r.next_hop, None, "the session's local address");
        let b = d.peers["tor-b"].config.as_ref().unwrap();
        assert_eq!(b.address, ip("fd00::1"));
        assert_eq!((b.peer_as, b.my_as), (65001, 64512));
        assert_eq!((b.hold_time, b.keepalive), (9, Some(3)));
        assert_eq!(b.router_id, Ipv4Addr::new(10, 0, 0, 11));
        assert_eq!(b.port, 179);
        assert!(b.bfd.is_none() && b.password.is_none());
    }

    #[test]
    fn bad_peers_are_errors_for_themselves_only() {
        let cases: &[(Value, Option<&str>, &str)] = &[
            (
                json!({"peerAddress": "nope", "peerASN": 64512, "myASN": 64512}),
                None,
                "peerAddress \"nope\" is not",
            ),
            (
                json!({"peerAddress": "10.0.0.9", "peerASN": 0, "myASN": 64512}),
                None,
                "AS number 0",
            ),
            (
                json!({"peerAddress": "10.0.0.9", "peerASN": 1, "myASN": 1, "holdTime": "2s"}),
                None,
                "holdTime 2s",
            ),
            (
                json!({"peerAddress": "10.0.0.9", "peerASN": 1, "myASN": 1, "holdTime": "soon"}),
                None,
                "holdTime: invalid duration",
            ),
            (
                json!({"peerAddress": "10.0.0.9", "peerASN": 1, "myASN": 1, "bfdProfile": "none"}),
                None,
                "BFDProfile \"none\" does not exist",
            ),
            (
                json!({"peerAddress": "10.0.0.9", "peerASN": 1, "myASN": 1, "bfdProfile": "echo"}),
                None,
                "echoMode is not supported",
            ),
            (
                json!({"peerAddress": "10.0.0.9", "peerASN": 1, "myASN": 1,
                       "passwordSecret": {"name": "gone"}}),
                Some("Secret berth-system/gone not found"),
                "Secret berth-system/gone not found",
            ),
            (
                json!({"peerAddress": "10.0.0.1", "peerASN": 1, "myASN": 1}),
                None,
                "BGPPeer tor-a already peers with 10.0.0.1",
            ),
        ];
        for (spec, pw, want) in cases {
            let mut inp = base();
            inp.profiles.insert(
                "echo".into(),
                BFDProfileSpec {
                    echo_mode: true,
                    ..Default::default()
                },
            );
            inp.peers.push(peer("zz-bad", spec.clone()));
            if let Some(e) = pw {
                inp.passwords.insert("zz-bad".into(), Err(e.to_string()));
            }
            inp.advertisements = vec![adv("all", json!({}))];
            let d = desired(&inp);
            let err = d.peers["zz-bad"].config.clone().unwrap_err();
            assert!(err.contains(want), "{spec}: {err}");
            assert!(d.peers["tor-a"].config.is_ok() && d.peers["tor-b"].config.is_ok());
            assert_eq!(d.peers["tor-a"].routes.len(), 4);
        }
    }

    #[test]
    fn password_and_bfd_profile_reach_the_config() {
        let mut inp = base();
        inp.peers[0].spec.password_secret = Some(berth_api::bgp::SecretKeyRef {
            name: "pw".into(),
            ..Default::default()
        });
        inp.peers[0].spec.bfd_profile = Some("fast".into());
        inp.profiles.insert(
            "fast".into(),
            BFDProfileSpec {
                receive_interval: Some(300),
                transmit_interval: Some(200),
                detect_multiplier: Some(3),
                echo_mode: false,
            },
        );
        let d = desired(&inp);
        assert_eq!(
            d.peers["tor-a"].config,
            Err("the password Secret has not been read yet".into())
        );
        inp.passwords.insert("tor-a".into(), Ok("s3cret".into()));
        let c = desired(&inp).peers["tor-a"].config.clone().unwrap();
        assert_eq!(c.password.as_deref(), Some("s3cret"));
        let bfd = c.bfd.unwrap();
        assert_eq!(
            (bfd.min_tx, bfd.min_rx, bfd.detect_mult),
            (Duration::from_millis(200), Duration::from_millis(300), 3)
        );
        // Without an IPv4 address the router id comes from the node name, never 0.0.0.0.
        inp.node.router_id = None;
        let c = desired(&inp).peers["tor-a"].config.clone().unwrap();
        assert_eq!(c.router_id, router_id_from_name("node-1"));
        assert!(!c.router_id.is_unspecified());
    }
}
