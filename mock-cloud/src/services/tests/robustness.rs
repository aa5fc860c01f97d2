use super::*;

// --- atomicity and robustness -------------------------------------------------

#[test]
fn failing_create_leaves_allocator_unchanged() {
    let mut a = ipam();
    created(&mut a, svc("a").np().port(80, "TCP").node_port(30081).v());
    let before = (a.node_ports_in_use(), a.cluster_ips_in_use());
    // Port 0 allocates 30080, port 1 conflicts: 30080 and the ClusterIP must be rolled back.
    let errs = create_err(
        &mut a,
        svc("b")
            .np()
            .port(80, "TCP")
            .node_port(30080)
            .port(81, "TCP")
            .node_port(30081)
            .v(),
    );
    assert_eq!(
        errs,
        vec!["spec.ports[1].nodePort: Invalid value: 30081: provided port is already allocated"]
    );
    assert_eq!((a.node_ports_in_use(), a.cluster_ips_in_use()), before);
    assert!(!a.is_node_port_allocated(30080));
    // Allocation succeeds but validation fails afterwards: also rolled back, object untouched.
    let mut v = svc("c")
        .lb()
        .local()
        .spec("sessionAffinity", json!("Sticky"))
        .port(80, "TCP")
        .v();
    let original = v.clone();
    assert!(a.create(&mut v).is_err());
    assert_eq!(v, original);
    assert_eq!((a.node_ports_in_use(), a.cluster_ips_in_use()), before);
}

#[test]
fn failing_update_leaves_allocator_unchanged() {
    let mut a = ipam();
    let old = created(&mut a, svc("a").np().port(80, "TCP").v());
    let held = node_port(&old, 0);
    // Adds a port (allocates) then fails validation: the new port is returned, the old one kept.
    let mut new = old.clone();
    new["spec"]["ports"] =
        json!([old["spec"]["ports"][0].clone(), {"name": "p1", "port": 81, "protocol": "BOGUS"}]);
    assert!(a.update(&old, &mut new).is_err());
    assert_eq!(a.node_ports_in_use(), 1);
    assert!(a.is_node_port_allocated(held as u16));
    // Switching to ClusterIP but with an invalid field keeps the old NodePort allocated.
    let mut cip = old.clone();
    cip["spec"]["type"] = json!("ClusterIP");
    cip["spec"]["sessionAffinity"] = json!("Sticky");
    assert!(a.update(&old, &mut cip).is_err());
    assert!(a.is_node_port_allocated(held as u16));
}

#[test]
fn dry_run_does_not_allocate() {
    let a = ipam();
    let mut v = svc("a").lb().local().port(80, "TCP").v();
    a.dry_run_create(&mut v).unwrap();
    assert!(node_port(&v, 0) > 0);
    assert_eq!((a.node_ports_in_use(), a.cluster_ips_in_use()), (0, 0));
}

#[test]
fn wrong_types_are_field_errors_not_panics() {
    let mut a = ipam();
    let garbage = [
        json!(null),
        json!("svc"),
        json!({"metadata": "x"}),
        json!({"metadata": {"name": "a"}, "spec": []}),
        json!({"metadata": {"name": "a"}, "spec": {"ports": {}}}),
        json!({"metadata": {"name": "a"}, "spec": {"ports": [1]}}),
        json!({"metadata": {"name": 7}, "spec": {"ports": [{"port": "80"}]}}),
        json!({"metadata": {"name": "a"}, "spec": {"ports": [{"port": 80.5, "nodePort": true, "targetPort": []}]}}),
        json!({"metadata": {"name": "a"}, "spec": {"type": 3, "clusterIPs": "x", "selector": {"a": 1}}}),
        json!({"metadata": {"name": "a"}, "spec": {"ports": [{"port": 80, "nodePort": 99999999999i64}], "type": "NodePort"}}),
        json!({"metadata": {"name": "a"}, "spec": {"ports": [{"port": 80}], "clusterIP": "::1", "clusterIPs": ["::1", "::2", "1.1.1.1"]}}),
    ];
    for g in &garbage {
        let mut v = g.clone();
        assert!(a.create(&mut v).is_err(), "{g}");
        assert!(!validate(g).is_empty(), "{g}");
        a.release(g);
        let mut v = g.clone();
        let _ = a.update(g, &mut v);
    }
    // A negative nodePort passes ValidateService (as upstream) but not the allocator.
    let neg = json!({"metadata": {"name": "a"}, "spec": {"ports": [{"port": 80, "nodePort": -5}], "type": "NodePort"}});
    assert!(validate(&neg).is_empty());
    assert_eq!(
        texts(&a.create(&mut neg.clone()).unwrap_err()),
        vec![
            "spec.ports[0].nodePort: Invalid value: -5: provided port is not in the valid range. The range of valid ports is 30000-32767"
        ]
    );
    let errs = validate(&json!({"metadata": {"name": "a"}, "spec": {"ports": [{"port": "80"}]}}));
    assert_eq!(
        errs,
        vec![FieldError {
            field: "spec.ports[0].port".into(),
            reason: REASON_TYPE_INVALID,
            message: r#"Invalid value: "80": expected integer"#.into()
        }]
    );
    assert_eq!((a.node_ports_in_use(), a.cluster_ips_in_use()), (0, 0));
}

#[test]
fn config_is_checked() {
    let bad = |cidrs: &[&str], ports: RangeInclusive<u16>| {
        ServiceIpam::new(ServiceIpamConfig {
            cluster_ip_cidrs: cidrs.iter().map(|c| c.to_string()).collect(),
            node_port_range: ports,
        })
        .is_err()
    };
    assert!(bad(&[], 30000..=32767));
    assert!(bad(&["10.96.0.0/33"], 30000..=32767));
    assert!(bad(&["10.96.0.0/12", "10.0.0.0/8"], 30000..=32767));
    #[allow(clippy::reversed_empty_ranges)]
    let empty = 30010..=30000;
    assert!(bad(&["10.96.0.0/12"], empty));
    assert_eq!(ipam().service_cidrs(), vec!["10.96.0.0/12"]);
}
