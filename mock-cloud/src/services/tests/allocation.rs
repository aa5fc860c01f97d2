use super::*;

// --- ClusterIP ----------------------------------------------------------

#[test]
fn cluster_ip_explicit_conflict_range_release_reuse() {
    let mut a = ipam();
    let v = created(
        &mut a,
        svc("a")
            .port(80, "TCP")
            .spec("clusterIP", json!("10.96.0.10"))
            .v(),
    );
    assert_eq!(cluster_ip(&v), "10.96.0.10");
    assert_eq!(v["spec"]["clusterIPs"], json!(["10.96.0.10"]));
    assert_eq!(
        create_err(
            &mut a,
            svc("b")
                .port(80, "TCP")
                .spec("clusterIP", json!("10.96.0.10"))
                .v()
        ),
        vec![
            r#"spec.clusterIPs: Invalid value: ["10.96.0.10"]: failed to allocate IP 10.96.0.10: provided IP is already allocated"#
        ]
    );
    assert_eq!(
        create_err(
            &mut a,
            svc("b")
                .port(80, "TCP")
                .spec("clusterIP", json!("1.2.3.4"))
                .v()
        ),
        vec![
            r#"spec.clusterIPs: Invalid value: ["1.2.3.4"]: failed to allocate IP 1.2.3.4: provided IP 1.2.3.4 is not in the valid range"#
        ]
    );
    assert_eq!(
        create_err(
            &mut a,
            svc("b")
                .port(80, "TCP")
                .spec("clusterIP", json!("10.111.255.255"))
                .v()
        ),
        vec![
            r#"spec.clusterIPs: Invalid value: ["10.111.255.255"]: failed to allocate IP 10.111.255.255: provided IP 10.111.255.255 is not in the valid range"#
        ]
    );
    assert_eq!(
        create_err(
            &mut a,
            svc("b")
                .port(80, "TCP")
                .spec("clusterIP", json!("nope"))
                .v()
        ),
        vec![
            r#"spec.clusterIPs[0]: Invalid value: "nope": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"#
        ]
    );
    a.release(&v);
    assert!(!a.is_cluster_ip_allocated("10.96.0.10"));
    let again = created(
        &mut a,
        svc("b")
            .port(80, "TCP")
            .spec("clusterIP", json!("10.96.0.10"))
            .v(),
    );
    assert_eq!(cluster_ip(&again), "10.96.0.10");
    assert_eq!(a.cluster_ips_in_use(), 1);
}

#[test]
fn first_ip_is_reserved_for_kubernetes_service() {
    let mut a = ipam_with(&["10.0.0.0/29"], 30000..=32767);
    let mut got: Vec<String> = (0..5)
        .map(|i| cluster_ip(&created(&mut a, svc(&format!("s{i}")).port(80, "TCP").v())))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec!["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
    );
    let errs = a.create(&mut svc("full").port(80, "TCP").v()).unwrap_err();
    assert_eq!(
        errs,
        vec![FieldError::internal(
            "failed to allocate a serviceIP: range is full".into()
        )]
    );
    assert!(errs[0].is_internal());
    let k = created(&mut a, svc("kubernetes").port(443, "TCP").v());
    assert_eq!(cluster_ip(&k), "10.0.0.1");
}

#[test]
fn dynamic_allocation_prefers_upper_bands() {
    let mut a = ipam();
    for i in 0..20 {
        let v = created(&mut a, svc(&format!("s{i}")).np().port(80, "TCP").v());
        assert!(
            node_port(&v, 0) >= 30086,
            "port {} in static band",
            node_port(&v, 0)
        );
        let ip: std::net::Ipv4Addr = cluster_ip(&v).parse().unwrap();
        assert!(
            u32::from(ip) >= u32::from(std::net::Ipv4Addr::new(10, 96, 1, 1)),
            "ip {ip} in static band"
        );
    }
}

#[test]
fn cluster_ip_is_immutable_on_update() {
    let mut a = ipam();
    let old = created(
        &mut a,
        svc("a")
            .port(80, "TCP")
            .spec("clusterIP", json!("10.96.0.10"))
            .v(),
    );
    let mut new = old.clone();
    new["spec"]["clusterIP"] = json!("10.96.0.99");
    let errs = texts(&a.update(&old, &mut new).unwrap_err());
    assert_eq!(
        errs,
        vec![r#"spec.clusterIPs[0]: Invalid value: ["10.96.0.99"]: may not change once set"#]
    );
    assert!(a.is_cluster_ip_allocated("10.96.0.10"));
    assert!(!a.is_cluster_ip_allocated("10.96.0.99"));
}

#[test]
fn type_change_to_and_from_external_name_moves_cluster_ip() {
    let mut a = ipam();
    let old = created(&mut a, svc("a").port(80, "TCP").v());
    let ip = cluster_ip(&old);
    let en = svc("a")
        .port(80, "TCP")
        .ty("ExternalName")
        .spec("externalName", json!("example.com"))
        .v();
    let mut en_full = en.clone();
    en_full["spec"]["clusterIP"] = old["spec"]["clusterIP"].clone();
    en_full["spec"]["clusterIPs"] = old["spec"]["clusterIPs"].clone();
    en_full["spec"]["ipFamilies"] = old["spec"]["ipFamilies"].clone();
    en_full["spec"]["ipFamilyPolicy"] = old["spec"]["ipFamilyPolicy"].clone();
    let en = updated(&mut a, &old, en_full);
    assert_eq!(en["spec"].get("clusterIP"), None);
    assert!(!a.is_cluster_ip_allocated(&ip));
    let back = updated(&mut a, &en, svc("a").port(80, "TCP").v());
    assert!(a.is_cluster_ip_allocated(&cluster_ip(&back)));
    assert_eq!(a.cluster_ips_in_use(), 1);
}

// --- NodePorts ------------------------------------------------------------

#[test]
fn node_port_explicit_conflict_and_range() {
    let mut a = ipam();
    let v = created(&mut a, svc("a").np().port(80, "TCP").node_port(30080).v());
    assert_eq!(node_port(&v, 0), 30080);
    assert!(a.is_node_port_allocated(30080));
    assert_eq!(
        create_err(&mut a, svc("b").np().port(80, "TCP").node_port(30080).v()),
        vec!["spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"]
    );
    assert_eq!(
        create_err(
            &mut a,
            svc("b")
                .lb()
                .port(80, "TCP")
                .port(81, "TCP")
                .node_port(40000)
                .v()
        ),
        vec![
            "spec.ports[1].nodePort: Invalid value: 40000: provided port is not in the valid range. The range of valid ports is 30000-32767"
        ]
    );
    assert_eq!(a.node_ports_in_use(), 1);
    assert_eq!(a.cluster_ips_in_use(), 1);
}

#[test]
fn node_port_exhaustion_release_and_reuse() {
    let mut a = ipam_with(&["10.96.0.0/12"], 30000..=30004);
    let mut held = Vec::new();
    for i in 0..5 {
        held.push(created(
            &mut a,
            svc(&format!("s{i}")).np().port(80, "TCP").v(),
        ));
    }
    let mut ports: Vec<i64> = held.iter().map(|v| node_port(v, 0)).collect();
    ports.sort();
    assert_eq!(ports, vec![30000, 30001, 30002, 30003, 30004]);
    assert_eq!((a.node_ports_in_use(), a.node_ports_free()), (5, 0));
    let ips_before = a.cluster_ips_in_use();
    let errs = a
        .create(&mut svc("x").np().port(80, "TCP").v())
        .unwrap_err();
    assert_eq!(
        errs,
        vec![FieldError::internal(
            "failed to allocate a nodePort: range is full".into()
        )]
    );
    assert_eq!(
        a.cluster_ips_in_use(),
        ips_before,
        "ClusterIP of the failed create was released"
    );
    let freed = node_port(&held[2], 0);
    a.release(&held[2]);
    assert_eq!(a.node_ports_in_use(), 4);
    let v = created(&mut a, svc("y").np().port(80, "TCP").v());
    assert_eq!(node_port(&v, 0), freed);
}

#[test]
fn same_port_number_shares_node_port_across_protocols() {
    let mut a = ipam();
    let v = created(&mut a, svc("dns").np().port(53, "TCP").port(53, "UDP").v());
    assert_eq!(node_port(&v, 0), node_port(&v, 1));
    assert_eq!(a.node_ports_in_use(), 1);
    let v2 = created(
        &mut a,
        svc("dns2")
            .np()
            .port(53, "TCP")
            .port(53, "UDP")
            .node_port(30053)
            .v(),
    );
    assert_eq!((node_port(&v2, 0), node_port(&v2, 1)), (30053, 30053));
    a.release(&v);
    a.release(&v2);
    assert_eq!(a.node_ports_in_use(), 0);
}

#[test]
fn allocate_load_balancer_node_ports_false() {
    let mut a = ipam();
    let b = || {
        svc("lb")
            .lb()
            .spec("allocateLoadBalancerNodePorts", json!(false))
            .port(80, "TCP")
    };
    let v = created(&mut a, b().v());
    assert_eq!(node_port(&v, 0), 0);
    assert_eq!(a.node_ports_in_use(), 0);
    let v2 = created(
        &mut a,
        svc("lb2")
            .lb()
            .spec("allocateLoadBalancerNodePorts", json!(false))
            .port(80, "TCP")
            .node_port(31000)
            .v(),
    );
    assert_eq!(node_port(&v2, 0), 31000);
    assert_eq!(a.node_ports_in_use(), 1);
}

#[test]
fn lb_to_cluster_ip_drops_and_releases() {
    let mut a = ipam();
    let old = created(
        &mut a,
        svc("a").lb().local().port(80, "TCP").port(443, "TCP").v(),
    );
    assert_eq!(a.node_ports_in_use(), 3);
    let mut new = old.clone();
    new["spec"]["type"] = json!("ClusterIP");
    let new = updated(&mut a, &old, new);
    assert_eq!(node_port(&new, 0), 0);
    assert_eq!(node_port(&new, 1), 0);
    assert_eq!(new["spec"].get("healthCheckNodePort"), None);
    assert_eq!(new["spec"].get("externalTrafficPolicy"), None);
    assert_eq!(new["spec"].get("allocateLoadBalancerNodePorts"), None);
    assert_eq!(new["spec"]["clusterIP"], old["spec"]["clusterIP"]);
    assert_eq!(a.node_ports_in_use(), 0);
}

#[test]
fn lb_to_cluster_ip_with_changed_node_port_is_rejected_atomically() {
    let mut a = ipam();
    let old = created(&mut a, svc("a").lb().port(80, "TCP").v());
    let held = node_port(&old, 0);
    let mut new = old.clone();
    new["spec"]["type"] = json!("ClusterIP");
    new["spec"]["ports"][0]["nodePort"] = json!(if held == 31999 { 31998 } else { 31999 });
    let errs = texts(&a.update(&old, &mut new).unwrap_err());
    assert_eq!(
        errs,
        vec!["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"]
    );
    assert!(a.is_node_port_allocated(held as u16));
    assert_eq!(a.node_ports_in_use(), 1);
}

#[test]
fn update_keeps_unchanged_ports_and_releases_removed() {
    let mut a = ipam();
    let old = created(&mut a, svc("a").np().port(80, "TCP").port(443, "TCP").v());
    let (p80, p443) = (node_port(&old, 0), node_port(&old, 1));
    // Re-submitting the original manifest (no nodePorts, no clusterIP) keeps everything.
    let same = updated(
        &mut a,
        &old,
        svc("a").np().port(80, "TCP").port(443, "TCP").v(),
    );
    assert_eq!((node_port(&same, 0), node_port(&same, 1)), (p80, p443));
    assert_eq!(same["spec"]["clusterIP"], old["spec"]["clusterIP"]);
    assert_eq!(a.node_ports_in_use(), 2);
    // Dropping port 443 releases its NodePort; adding 8080 allocates a new one.
    let mut new = same.clone();
    new["spec"]["ports"] = json!([same["spec"]["ports"][0].clone(), {"name": "p2", "port": 8080}]);
    let new = updated(&mut a, &same, new);
    assert_eq!(node_port(&new, 0), p80);
    assert!(!a.is_node_port_allocated(p443 as u16));
    assert!(a.is_node_port_allocated(node_port(&new, 1) as u16));
    assert_eq!(a.node_ports_in_use(), 2);
}

#[test]
fn update_to_taken_node_port_conflicts() {
    let mut a = ipam();
    created(&mut a, svc("a").np().port(80, "TCP").node_port(30080).v());
    let old = created(&mut a, svc("b").np().port(80, "TCP").node_port(30081).v());
    let mut new = old.clone();
    new["spec"]["ports"][0]["nodePort"] = json!(30080);
    let errs = texts(&a.update(&old, &mut new).unwrap_err());
    assert_eq!(
        errs,
        vec!["spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"]
    );
    assert!(a.is_node_port_allocated(30081));
    assert_eq!(a.node_ports_in_use(), 2);
}

// --- healthCheckNodePort --------------------------------------------------

#[test]
fn health_check_node_port_lifecycle() {
    let mut a = ipam();
    let v = created(&mut a, svc("a").lb().local().port(80, "TCP").v());
    let hc = v["spec"]["healthCheckNodePort"].as_i64().unwrap();
    assert!(a.is_node_port_allocated(hc as u16));
    assert_eq!(a.node_ports_in_use(), 2);
    // Immutable while still needed.
    let mut moved = v.clone();
    moved["spec"]["healthCheckNodePort"] = json!(if hc == 32000 { 32001 } else { 32000 });
    assert_eq!(
        texts(&a.update(&v, &mut moved).unwrap_err()),
        vec!["spec.healthCheckNodePort: Forbidden: field is immutable"]
    );
    assert_eq!(a.node_ports_in_use(), 2);
    // externalTrafficPolicy back to Cluster releases it.
    let mut cluster = v.clone();
    cluster["spec"]["externalTrafficPolicy"] = json!("Cluster");
    let cluster = updated(&mut a, &v, cluster);
    assert_eq!(cluster["spec"].get("healthCheckNodePort"), None);
    assert!(!a.is_node_port_allocated(hc as u16));
    assert_eq!(a.node_ports_in_use(), 1);
    // And to Local again allocates a fresh one.
    let mut local = cluster.clone();
    local["spec"]["externalTrafficPolicy"] = json!("Local");
    let local = updated(&mut a, &cluster, local);
    assert!(local["spec"]["healthCheckNodePort"].as_i64().is_some());
    assert_eq!(a.node_ports_in_use(), 2);
    a.release(&local);
    assert_eq!(a.node_ports_in_use(), 0);
}

#[test]
fn health_check_node_port_explicit_and_invalid() {
    let mut a = ipam();
    let v = created(
        &mut a,
        svc("a")
            .lb()
            .local()
            .spec("healthCheckNodePort", json!(32100))
            .port(80, "TCP")
            .v(),
    );
    assert_eq!(v["spec"]["healthCheckNodePort"], 32100);
    let errs = a
        .create(
            &mut svc("b")
                .lb()
                .local()
                .spec("healthCheckNodePort", json!(32100))
                .port(80, "TCP")
                .v(),
        )
        .unwrap_err();
    assert_eq!(
            errs,
            vec![FieldError::internal("failed to allocate requested HealthCheck NodePort 32100: provided port is already allocated".into())]
        );
    assert_eq!(
        create_err(
            &mut a,
            svc("c")
                .np()
                .spec("healthCheckNodePort", json!(32200))
                .port(80, "TCP")
                .v()
        ),
        vec![
            "spec.healthCheckNodePort: Invalid value: 32200: may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'"
        ]
    );
    assert_eq!(
        create_err(
            &mut a,
            svc("d")
                .lb()
                .spec("healthCheckNodePort", json!(32200))
                .port(80, "TCP")
                .v()
        ),
        vec![
            "spec.healthCheckNodePort: Invalid value: 32200: may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'"
        ]
    );
    assert_eq!(a.node_ports_in_use(), 2);
    assert_eq!(a.cluster_ips_in_use(), 1);
}
