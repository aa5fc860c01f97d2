use super::*;
use crate::l2::pool::{LabelSelector, ServiceAllocation};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn pool(name: &str, addrs: &[&str]) -> PoolSpec {
    PoolSpec {
        name: name.into(),
        addresses: addrs.iter().map(|s| s.to_string()).collect(),
        auto_assign: true,
        avoid_buggy_ips: false,
        allocation: None,
    }
}

/// A request builder: `svc("web").port(80).key("k")`.
#[derive(Clone)]
struct Svc(AllocRequest);

fn svc(name: &str) -> Svc {
    Svc(AllocRequest {
        uid: format!("uid-{name}"),
        namespace: "default".into(),
        name: name.into(),
        requested_field: "spec.loadBalancerIP".into(),
        ports: vec![(80, Protocol::Tcp)],
        families: vec![IpFamily::IPv4],
        ..Default::default()
    })
}

impl Svc {
    fn ns(mut self, ns: &str, l: &[(&str, &str)]) -> Self {
        self.0.namespace = ns.into();
        self.0.namespace_labels = labels(l);
        self
    }
    fn labels(mut self, l: &[(&str, &str)]) -> Self {
        self.0.service_labels = labels(l);
        self
    }
    fn ports(mut self, p: &[(u16, Protocol)]) -> Self {
        self.0.ports = p.to_vec();
        self
    }
    fn key(mut self, k: &str) -> Self {
        self.0.sharing_key = Some(k.into());
        self
    }
    fn want(mut self, ips: &[&str]) -> Self {
        self.0.requested = ips.iter().map(|s| ip(s)).collect();
        self.0.requested_field = "metadata.annotations[berth.io/load-balancer-ips]".into();
        self
    }
    fn pool(mut self, p: &str) -> Self {
        self.0.pool = Some(p.into());
        self
    }
    fn families(mut self, f: &[IpFamily]) -> Self {
        self.0.families = f.to_vec();
        self
    }
    fn local(mut self, sel: &[(&str, &str)]) -> Self {
        self.0.local_selector = Some(labels(sel));
        self
    }
}

fn alloc(pools: &[PoolSpec]) -> Allocator {
    let mut a = Allocator::new();
    let (res, _) = a.set_pools(pools);
    for r in res {
        r.result.unwrap_or_else(|e| panic!("pool {}: {e}", r.name));
    }
    a
}

fn ips(a: &Assignment) -> Vec<String> {
    a.ips.iter().map(|i| i.to_string()).collect()
}

fn one(a: &mut Allocator, s: &Svc) -> String {
    let got = a
        .assign(&s.0)
        .unwrap_or_else(|e| panic!("{}: {e}", s.0.name));
    assert_eq!(got.ips.len(), 1);
    got.ips[0].to_string()
}

fn invalid(e: ProviderError) -> (String, String) {
    match e {
        ProviderError::Invalid { field, message } => (field, message),
        other => panic!("not Invalid: {other:?}"),
    }
}

#[test]
fn allocates_first_fit_and_keeps_addresses() {
    let mut a = alloc(&[pool("p", &["10.0.0.0/30"])]);
    assert_eq!(one(&mut a, &svc("a")), "10.0.0.0");
    assert_eq!(one(&mut a, &svc("b")), "10.0.0.1");
    // Ensuring again keeps the address.
    assert_eq!(one(&mut a, &svc("a")), "10.0.0.0");
    assert_eq!(
        one(&mut a, &svc("a").ports(&[(443, Protocol::Tcp)])),
        "10.0.0.0"
    );
    assert_eq!(a.assignment("uid-a").unwrap().pool, "p");
}

#[test]
fn ranges_and_mixed_entries_allocate_in_order() {
    let mut a = alloc(&[pool("p", &["10.0.0.10-10.0.0.11", "10.0.1.5/32"])]);
    let got: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|n| one(&mut a, &svc(n)))
        .collect();
    assert_eq!(got, ["10.0.0.10", "10.0.0.11", "10.0.1.5"]);
    let (field, msg) = invalid(a.assign(&svc("d").0).unwrap_err());
    assert_eq!(field, "IPAddressPool/p");
    assert!(
        msg.contains("no free IPv4 address left (3 of 3 assigned)"),
        "{msg}"
    );
}

#[test]
fn invalid_pools_are_reported_and_the_others_work() {
    let mut a = Allocator::new();
    let (res, _) = a.set_pools(&[
        pool("good", &["10.0.0.0/24"]),
        pool("bad", &["10.1.0.0/33"]),
        pool("empty", &[]),
        pool("overlap", &["10.0.0.128/25"]),
        pool("reversed", &["10.2.0.9-10.2.0.1"]),
    ]);
    let r: BTreeMap<String, Result<(), String>> =
        res.into_iter().map(|r| (r.name, r.result)).collect();
    assert!(r["good"].is_ok());
    assert!(r["bad"].as_ref().unwrap_err().contains("spec.addresses[0]"));
    assert!(r["bad"].as_ref().unwrap_err().contains("from 0 to 32"));
    assert!(r["empty"].as_ref().unwrap_err().contains("empty"));
    let e = r["overlap"].as_ref().unwrap_err();
    assert!(e.contains("overlaps") && e.contains("pool good"), "{e}");
    assert!(
        r["reversed"]
            .as_ref()
            .unwrap_err()
            .contains("after the last")
    );
    assert_eq!(one(&mut a, &svc("a")), "10.0.0.0");
    assert_eq!(a.stats().keys().collect::<Vec<_>>(), ["good"]);
}

#[test]
fn avoid_buggy_ips_skips_dot_zero_and_dot_255() {
    let mut p = pool("p", &["10.0.0.254-10.0.1.1"]);
    p.avoid_buggy_ips = true;
    let mut a = alloc(&[p]);
    assert_eq!(one(&mut a, &svc("a")), "10.0.0.254");
    assert_eq!(one(&mut a, &svc("b")), "10.0.1.1");
    assert!(a.assign(&svc("c").0).is_err());
    let (field, msg) = invalid(a.assign(&svc("d").want(&["10.0.1.0"]).0).unwrap_err());
    assert_eq!(field, "metadata.annotations[berth.io/load-balancer-ips]");
    assert!(msg.contains("avoidBuggyIPs"), "{msg}");
    assert_eq!(a.stats()["p"].available_ipv4, 0);
    assert_eq!(a.stats()["p"].assigned_ipv4, 2);
}

#[test]
fn auto_assign_off_needs_a_request_or_the_pool_annotation() {
    let mut manual = pool("manual", &["10.9.0.0/30"]);
    manual.auto_assign = false;
    let mut a = alloc(&[manual.clone()]);
    let (field, msg) = invalid(a.assign(&svc("a").0).unwrap_err());
    assert_eq!(field, "spec.loadBalancerClass");
    assert!(msg.contains("no auto-assign IPAddressPool"), "{msg}");
    assert_eq!(one(&mut a, &svc("b").want(&["10.9.0.2"])), "10.9.0.2");
    assert_eq!(one(&mut a, &svc("c").pool("manual")), "10.9.0.0");
    // With an auto-assign pool next to it, that one is used.
    let mut a = alloc(&[manual, pool("auto", &["10.8.0.0/30"])]);
    assert_eq!(one(&mut a, &svc("a")), "10.8.0.0");
}

#[test]
fn priority_orders_pools_then_names() {
    let mut hi = pool("z-high", &["10.3.0.0/32"]);
    hi.allocation = Some(ServiceAllocation {
        priority: 1,
        ..Default::default()
    });
    let mut mid = pool("y-mid", &["10.2.0.0/32"]);
    mid.allocation = Some(ServiceAllocation {
        priority: 5,
        ..Default::default()
    });
    let mut a = alloc(&[
        pool("b-none", &["10.1.0.0/32"]),
        pool("a-none", &["10.0.0.0/32"]),
        mid,
        hi,
    ]);
    let got: Vec<String> = ["s1", "s2", "s3", "s4"]
        .iter()
        .map(|n| one(&mut a, &svc(n)))
        .collect();
    assert_eq!(got, ["10.3.0.0", "10.2.0.0", "10.0.0.0", "10.1.0.0"]);
    // Everything is full: the message names every pool tried.
    let (field, msg) = invalid(a.assign(&svc("s5").0).unwrap_err());
    assert_eq!(field, "IPAddressPool");
    for p in ["z-high", "y-mid", "a-none", "b-none"] {
        assert!(msg.contains(&format!("{p}: no free IPv4")), "{msg}");
    }
}

#[test]
fn namespace_and_service_selectors_restrict_pools() {
    let mut team = pool("team-a", &["10.1.0.0/30"]);
    team.allocation = Some(ServiceAllocation {
        priority: 1,
        namespaces: vec!["shop".into()],
        namespace_selectors: vec![LabelSelector {
            match_labels: labels(&[("team", "a")]),
            ..Default::default()
        }],
        ..Default::default()
    });
    let mut web = pool("web-only", &["10.2.0.0/30"]);
    web.allocation = Some(ServiceAllocation {
        priority: 2,
        service_selectors: vec![LabelSelector {
            match_labels: labels(&[("tier", "web")]),
            ..Default::default()
        }],
        ..Default::default()
    });
    let mut a = alloc(&[team, web, pool("rest", &["10.3.0.0/30"])]);
    // By namespace name, by namespace label, neither.
    assert_eq!(one(&mut a, &svc("a").ns("shop", &[])), "10.1.0.0");
    assert_eq!(one(&mut a, &svc("b").ns("x", &[("team", "a")])), "10.1.0.1");
    assert_eq!(one(&mut a, &svc("c").ns("x", &[("team", "b")])), "10.3.0.0");
    // By service label.
    assert_eq!(
        one(&mut a, &svc("d").labels(&[("tier", "web")])),
        "10.2.0.0"
    );
    // A requested address in a pool that does not serve the Service is refused.
    let (field, msg) = invalid(
        a.assign(&svc("e").ns("other", &[]).want(&["10.1.0.3"]).0)
            .unwrap_err(),
    );
    assert_eq!(field, "metadata.annotations[berth.io/load-balancer-ips]");
    assert!(msg.contains("does not serve namespace \"other\""), "{msg}");
    // So is the pool annotation.
    let (field, msg) = invalid(a.assign(&svc("f").pool("web-only").0).unwrap_err());
    assert_eq!(field, "metadata.annotations[berth.io/address-pool]");
    assert!(msg.contains("serviceSelectors"), "{msg}");
}

#[test]
fn label_changes_invalidate_assignments() {
    let mut team = pool("team", &["10.1.0.0/30"]);
    team.allocation = Some(ServiceAllocation {
        priority: 1,
        namespace_selectors: vec![LabelSelector {
            match_labels: labels(&[("team", "a")]),
            ..Default::default()
        }],
        ..Default::default()
    });
    let mut a = alloc(&[team, pool("rest", &["10.3.0.0/30"])]);
    assert_eq!(one(&mut a, &svc("a").ns("x", &[("team", "a")])), "10.1.0.0");
    assert!(
        a.set_namespace_labels("x", &labels(&[("team", "a")]))
            .is_empty()
    );
    assert_eq!(a.set_namespace_labels("x", &labels(&[])), ["uid-a"]);
    // The next ensure moves it.
    assert_eq!(one(&mut a, &svc("a").ns("x", &[])), "10.3.0.0");
}

#[test]
fn requested_addresses_inside_and_outside_pools() {
    let mut a = alloc(&[pool("p", &["10.0.0.0/24"]), pool("v6", &["2001:db8::/120"])]);
    assert_eq!(one(&mut a, &svc("a").want(&["10.0.0.77"])), "10.0.0.77");
    // spec.loadBalancerIP form.
    let mut r = svc("b");
    r.0.requested = vec![ip("10.0.0.78")];
    assert_eq!(one(&mut a, &r), "10.0.0.78");
    let mut r = svc("c");
    r.0.requested = vec![ip("192.0.2.1")];
    let (field, msg) = invalid(a.assign(&r.0).unwrap_err());
    assert_eq!(field, "spec.loadBalancerIP");
    assert!(
        msg.starts_with("192.0.2.1 is not in any pool; pools: p (10.0.0.0-10.0.0.255), v6 ("),
        "{msg}"
    );
    // Taken by a Service without a sharing key.
    let (_, msg) = invalid(a.assign(&svc("d").want(&["10.0.0.77"]).0).unwrap_err());
    assert!(msg.contains("used by Service default/a"), "{msg}");
    // A family that is not the Service's.
    let (_, msg) = invalid(a.assign(&svc("e").want(&["2001:db8::5"]).0).unwrap_err());
    assert!(msg.contains("spec.ipFamilies is [IPv4]"), "{msg}");
    // Two of one family.
    let (_, msg) = invalid(
        a.assign(&svc("f").want(&["10.0.0.1", "10.0.0.2"]).0)
            .unwrap_err(),
    );
    assert!(msg.contains("one address per IP family"), "{msg}");
    // A pool annotation that disagrees.
    let (_, msg) = invalid(
        a.assign(&svc("g").want(&["10.0.0.9"]).pool("v6").0)
            .unwrap_err(),
    );
    assert!(msg.contains("asks for pool v6"), "{msg}");
    // Changing the request moves the Service; the old address is free again.
    assert_eq!(one(&mut a, &svc("a").want(&["10.0.0.90"])), "10.0.0.90");
    assert_eq!(one(&mut a, &svc("h").want(&["10.0.0.77"])), "10.0.0.77");
    // A failed change keeps the old address.
    assert!(a.assign(&svc("h").want(&["192.0.2.9"]).0).is_err());
    assert_eq!(ips(a.assignment("uid-h").unwrap()), ["10.0.0.77"]);
}

#[test]
fn unknown_pool_annotation_lists_the_pools() {
    let mut a = alloc(&[pool("p", &["10.0.0.0/24"])]);
    let (field, msg) = invalid(a.assign(&svc("a").pool("nope").0).unwrap_err());
    assert_eq!(field, "metadata.annotations[berth.io/address-pool]");
    assert_eq!(msg, "no pool named \"nope\"; pools: p");
    let mut empty = Allocator::new();
    let (_, msg) = invalid(empty.assign(&svc("a").0).unwrap_err());
    assert!(msg.contains("no IPAddressPool exists"), "{msg}");
}

#[test]
fn dual_stack_gets_one_address_per_family_from_one_pool() {
    let mut a = alloc(&[
        pool("v4only", &["10.0.0.0/30"]),
        pool("dual", &["10.1.0.0/30", "2001:db8::/126"]),
    ]);
    let both = [IpFamily::IPv6, IpFamily::IPv4];
    let got = a.assign(&svc("a").families(&both).0).unwrap();
    assert_eq!(ips(&got), ["2001:db8::", "10.1.0.0"]);
    assert_eq!(got.pool, "dual");
    let got = a.assign(&svc("b").families(&[IpFamily::IPv6]).0).unwrap();
    assert_eq!(ips(&got), ["2001:db8::1"]);
    let got = a
        .assign(
            &svc("c")
                .families(&both)
                .want(&["10.1.0.3", "2001:db8::3"])
                .0,
        )
        .unwrap();
    assert_eq!(ips(&got), ["10.1.0.3", "2001:db8::3"]);
    let s = a.stats();
    assert_eq!((s["dual"].assigned_ipv4, s["dual"].assigned_ipv6), (2, 3));
    assert_eq!((s["dual"].available_ipv4, s["dual"].available_ipv6), (2, 1));
    // No families given: one address, IPv4 first ("dual" sorts before "v4only").
    let got = a.assign(&svc("d").families(&[]).0).unwrap();
    assert_eq!(ips(&got), ["10.1.0.1"]);
    let got = a.assign(&svc("d6").families(&[]).pool("v4only").0).unwrap();
    assert_eq!(ips(&got), ["10.0.0.0"]);
    // A v6 Service never lands in a v4-only pool.
    let got = a
        .assign(&svc("e").families(&[IpFamily::IPv6]).pool("v4only").0)
        .unwrap_err();
    assert!(invalid(got).1.contains("no IPv6 addresses"));
}

#[test]
fn sharing_with_one_key_and_disjoint_ports() {
    let mut a = alloc(&[pool("p", &["10.0.0.0/30"])]);
    let web = svc("web").key("k").ports(&[(80, Protocol::Tcp)]);
    let dns = svc("dns")
        .key("k")
        .ports(&[(53, Protocol::Udp), (53, Protocol::Tcp)]);
    let tls = svc("tls").key("k").ports(&[(443, Protocol::Tcp)]);
    assert_eq!(one(&mut a, &web), "10.0.0.0");
    assert_eq!(one(&mut a, &dns), "10.0.0.0");
    // Same port number, other protocol: fine.
    let udp80 = svc("udp80").key("k").ports(&[(80, Protocol::Udp)]);
    assert_eq!(one(&mut a, &udp80), "10.0.0.0");
    assert_eq!(one(&mut a, &tls.clone().want(&["10.0.0.0"])), "10.0.0.0");
    assert_eq!(a.stats()["p"].assigned_ipv4, 1);
    // Releasing one user keeps the address for the others.
    a.release("uid-web");
    assert_eq!(a.stats()["p"].assigned_ipv4, 1);
    assert_eq!(one(&mut a, &svc("other")), "10.0.0.1");
    for u in ["uid-dns", "uid-udp80", "uid-tls"] {
        a.release(u);
    }
    assert_eq!(a.stats()["p"].assigned_ipv4, 1);
    assert_eq!(one(&mut a, &svc("again")), "10.0.0.0");
}

#[test]
fn overlapping_ports_get_another_address_or_a_conflict() {
    let mut a = alloc(&[pool("p", &["10.0.0.0/31"])]);
    assert_eq!(one(&mut a, &svc("a").key("k")), "10.0.0.0");
    // Auto-assign: same key but port 80 taken → a fresh address.
    assert_eq!(one(&mut a, &svc("b").key("k")), "10.0.0.1");
    // Requested: refused, naming the other Service and the port.
    let (field, msg) = invalid(
        a.assign(&svc("c").key("k").want(&["10.0.0.0"]).0)
            .unwrap_err(),
    );
    assert_eq!(field, "metadata.annotations[berth.io/load-balancer-ips]");
    assert!(
        msg.contains("default/a") && msg.contains("same port 80/TCP"),
        "{msg}"
    );
    // Pool full and every address conflicts: exhaustion.
    assert!(a.assign(&svc("d").key("k").0).is_err());
}

#[test]
fn different_or_missing_keys_never_share() {
    let mut a = alloc(&[pool("p", &["10.0.0.0/24"])]);
    one(&mut a, &svc("a").key("k1"));
    let (_, msg) = invalid(
        a.assign(
            &svc("b")
                .key("k2")
                .ports(&[(81, Protocol::Tcp)])
                .want(&["10.0.0.0"])
                .0,
        )
        .unwrap_err(),
    );
    assert!(
        msg.contains("different berth.io/allow-shared-ip key"),
        "{msg}"
    );
    let (_, msg) = invalid(
        a.assign(&svc("c").ports(&[(81, Protocol::Tcp)]).want(&["10.0.0.0"]).0)
            .unwrap_err(),
    );
    assert!(
        msg.contains("same berth.io/allow-shared-ip key on both"),
        "{msg}"
    );
    // Auto-assign with another key picks a fresh address.
    assert_eq!(
        one(&mut a, &svc("d").key("k2").ports(&[(81, Protocol::Tcp)])),
        "10.0.0.1"
    );
}

#[test]
fn local_traffic_policy_shares_only_with_the_same_selector() {
    let mut a = alloc(&[pool("p", &["10.0.0.0/24"])]);
    one(&mut a, &svc("a").key("k").local(&[("app", "x")]));
    let same = svc("b")
        .key("k")
        .ports(&[(81, Protocol::Tcp)])
        .local(&[("app", "x")]);
    assert_eq!(one(&mut a, &same.want(&["10.0.0.0"])), "10.0.0.0");
    let other = svc("c")
        .key("k")
        .ports(&[(82, Protocol::Tcp)])
        .local(&[("app", "y")])
        .want(&["10.0.0.0"]);
    let (_, msg) = invalid(a.assign(&other.0).unwrap_err());
    assert!(msg.contains("select the same pods"), "{msg}");
    // Cluster and Local never share either.
    let cluster = svc("d")
        .key("k")
        .ports(&[(83, Protocol::Tcp)])
        .want(&["10.0.0.0"]);
    assert!(a.assign(&cluster.0).is_err());
    // Auto-assign for the different selector takes a fresh address.
    let fresh = svc("e")
        .key("k")
        .ports(&[(84, Protocol::Tcp)])
        .local(&[("app", "y")]);
    assert_eq!(one(&mut a, &fresh), "10.0.0.1");
}

#[test]
fn port_changes_that_now_conflict_move_the_service() {
    let mut a = alloc(&[pool("p", &["10.0.0.0/24"])]);
    one(&mut a, &svc("a").key("k"));
    let b = svc("b").key("k").ports(&[(81, Protocol::Tcp)]);
    assert_eq!(one(&mut a, &b), "10.0.0.0");
    // b now also wants port 80: it cannot stay on a's address.
    let b2 = b.ports(&[(80, Protocol::Tcp)]);
    assert_eq!(one(&mut a, &b2), "10.0.0.1");
}

#[test]
fn restore_before_allocate_keeps_addresses_stable() {
    let pools = [pool("p", &["10.0.0.0/29"])];
    let mut a = alloc(&pools);
    for n in ["a", "b", "c", "d"] {
        one(&mut a, &svc(n));
    }
    a.release("uid-b");
    let before: BTreeMap<String, Vec<IpAddr>> = a
        .assignments()
        .map(|(u, x)| (u.clone(), x.ips.clone()))
        .collect();
    // A restart: a new allocator, restore everything first, in reverse order.
    let mut b = alloc(&pools);
    for (uid, ips) in before.iter().rev() {
        let name = uid.trim_start_matches("uid-");
        b.restore(&svc(name).0, ips).unwrap();
    }
    for (uid, ips) in &before {
        let name = uid.trim_start_matches("uid-");
        assert_eq!(&b.assign(&svc(name).0).unwrap().ips, ips, "{uid}");
    }
    // New Services fill the hole first.
    assert_eq!(one(&mut b, &svc("new")), "10.0.0.1");
    // Restoring a conflicting or out-of-pool address fails and takes nothing.
    let (field, _) = invalid(b.restore(&svc("x").0, &[ip("10.0.0.0")]).unwrap_err());
    assert_eq!(field, "status.loadBalancer.ingress");
    assert!(b.restore(&svc("y").0, &[ip("192.0.2.1")]).is_err());
    assert!(b.assignment("uid-y").is_none());
}

#[test]
fn release_and_reuse() {
    let mut a = alloc(&[pool("p", &["10.0.0.0/30"])]);
    for n in ["a", "b", "c", "d"] {
        one(&mut a, &svc(n));
    }
    assert!(a.assign(&svc("e").0).is_err());
    assert!(a.release("uid-c").is_some());
    assert!(a.release("uid-c").is_none());
    assert_eq!(one(&mut a, &svc("e")), "10.0.0.2");
    a.release("uid-a");
    a.release("uid-d");
    assert_eq!(one(&mut a, &svc("f")), "10.0.0.0");
    assert_eq!(one(&mut a, &svc("g")), "10.0.0.3");
}

#[test]
fn exhaustion_names_the_pool_and_counts() {
    let mut a = alloc(&[pool("small", &["198.51.100.0/31"])]);
    one(&mut a, &svc("a"));
    one(&mut a, &svc("b"));
    let (field, msg) = invalid(a.assign(&svc("c").0).unwrap_err());
    assert_eq!(field, "IPAddressPool/small");
    assert_eq!(
        msg,
        "no free IPv4 address left (2 of 2 assigned); free one or add addresses to the pool"
    );
    let e = a.assign(&svc("c").0).unwrap_err().to_string();
    assert!(
        e.starts_with("Invalid IPAddressPool/small: no free IPv4"),
        "{e}"
    );
}

#[test]
fn to_exhaustion_every_address_is_handed_out_once() {
    let mut p = pool("p", &["10.0.0.0/23", "2001:db8::/119"]);
    p.avoid_buggy_ips = true;
    let mut a = alloc(&[p]);
    let mut seen = BTreeSet::new();
    let mut n = 0;
    while let Ok(got) = a.assign(&svc(&format!("s{n}")).0) {
        assert!(seen.insert(got.ips[0]), "{} twice", got.ips[0]);
        n += 1;
    }
    assert_eq!(n, 508);
    assert!(seen.iter().all(|i| !is_buggy(IpFamily::IPv4, to_int(*i).1)));
    let s = a.stats()["p"];
    assert_eq!((s.assigned_ipv4, s.available_ipv4), (508, 0));
    assert_eq!((s.assigned_ipv6, s.available_ipv6), (0, 512));
    // Release every other one and fill again: exactly those come back.
    let mut freed = BTreeSet::new();
    for i in (0..n).step_by(2) {
        let uid = format!("uid-s{i}");
        freed.insert(a.release(&uid).unwrap().ips[0]);
    }
    let mut again = BTreeSet::new();
    for i in 0..freed.len() {
        again.insert(a.assign(&svc(&format!("t{i}")).0).unwrap().ips[0]);
    }
    assert_eq!(again, freed);
    assert!(a.assign(&svc("last").0).is_err());
}

#[test]
fn pool_changes_report_assignments_that_broke() {
    let mut a = alloc(&[pool("p", &["10.0.0.0/24"]), pool("q", &["10.1.0.0/24"])]);
    one(&mut a, &svc("a"));
    one(&mut a, &svc("b").pool("q"));
    // Shrinking p leaves a outside every pool; renaming q keeps b valid.
    let (res, broken) = a.set_pools(&[pool("p", &["10.0.0.128/25"]), pool("q2", &["10.1.0.0/24"])]);
    assert!(res.iter().all(|r| r.result.is_ok()));
    assert_eq!(broken, ["uid-a"]);
    // a keeps its address until re-assigned; then it moves into the pool.
    assert_eq!(ips(a.assignment("uid-a").unwrap()), ["10.0.0.0"]);
    assert_eq!(one(&mut a, &svc("a")), "10.0.0.128");
    assert_eq!(a.assignment("uid-b").unwrap().pool, "q2");
    // b asked for pool q, which is gone now.
    let (field, _) = invalid(a.assign(&svc("b").pool("q").0).unwrap_err());
    assert_eq!(field, "metadata.annotations[berth.io/address-pool]");
}

#[test]
fn an_older_pool_wins_an_overlap() {
    let mut a = Allocator::new();
    let (res, _) = a.set_pools(&[
        pool("old", &["10.0.0.0/24"]),
        pool("new", &["10.0.0.5-10.0.1.5"]),
    ]);
    assert!(res[0].result.is_ok());
    let e = res[1].result.as_ref().unwrap_err();
    assert_eq!(
        e,
        "its range 10.0.0.5-10.0.1.5 overlaps 10.0.0.0-10.0.0.255 of pool old; an address may belong to one pool only"
    );
}
