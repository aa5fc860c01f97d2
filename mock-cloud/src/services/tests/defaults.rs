use super::*;

// --- defaults -----------------------------------------------------------

#[test]
fn defaults_for_cluster_ip_service() {
    let mut a = ipam();
    let v = created(&mut a, svc("web").port(80, "").v());
    let spec = &v["spec"];
    assert_eq!(spec["type"], "ClusterIP");
    assert_eq!(spec["ports"][0]["protocol"], "TCP");
    assert_eq!(spec["ports"][0]["targetPort"], 80);
    assert_eq!(spec["sessionAffinity"], "None");
    assert_eq!(spec["internalTrafficPolicy"], "Cluster");
    assert_eq!(spec.get("externalTrafficPolicy"), None);
    assert_eq!(spec.get("allocateLoadBalancerNodePorts"), None);
    assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
    assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
    assert_eq!(spec["clusterIPs"], json!([cluster_ip(&v)]));
    assert_eq!(spec["ports"][0].get("nodePort"), None);
    assert_eq!(a.cluster_ips_in_use(), 1);
    assert_eq!(a.node_ports_in_use(), 0);
}

#[test]
fn defaults_for_load_balancer_and_affinity() {
    let mut a = ipam();
    let v = created(
        &mut a,
        svc("lb")
            .lb()
            .port(443, "TCP")
            .spec("sessionAffinity", json!("ClientIP"))
            .v(),
    );
    let spec = &v["spec"];
    assert_eq!(spec["externalTrafficPolicy"], "Cluster");
    assert_eq!(spec["allocateLoadBalancerNodePorts"], true);
    assert_eq!(
        spec["sessionAffinityConfig"],
        json!({"clientIP": {"timeoutSeconds": 10800}})
    );
    assert!((30000..=32767).contains(&node_port(&v, 0)));
    assert_eq!(spec.get("healthCheckNodePort"), None);
}

#[test]
fn named_target_port_is_kept_and_zero_target_defaults() {
    let mut a = ipam();
    let v = svc("t").port(80, "TCP").v();
    let mut v2 = v.clone();
    v2["spec"]["ports"][0]["targetPort"] = json!("http");
    let v2 = created(&mut a, v2);
    assert_eq!(v2["spec"]["ports"][0]["targetPort"], "http");
}

#[test]
fn dual_stack_families() {
    let mut a = ipam_with(&["10.96.0.0/12", "fd00:10:96::/112"], 30000..=32767);
    let v = created(
        &mut a,
        svc("d")
            .port(80, "TCP")
            .spec("ipFamilyPolicy", json!("PreferDualStack"))
            .v(),
    );
    assert_eq!(v["spec"]["ipFamilies"], json!(["IPv4", "IPv6"]));
    let ips = v["spec"]["clusterIPs"].as_array().unwrap();
    assert_eq!(ips.len(), 2);
    assert!(ips[1].as_str().unwrap().starts_with("fd00:10:96::"));
    let single = created(&mut a, svc("s").port(80, "TCP").v());
    assert_eq!(single["spec"]["ipFamilies"], json!(["IPv4"]));
    let v6 = created(
        &mut a,
        svc("six")
            .port(80, "TCP")
            .spec("ipFamilies", json!(["IPv6"]))
            .v(),
    );
    assert!(cluster_ip(&v6).starts_with("fd00:10:96::"));
    assert_eq!(a.cluster_ips_in_use(), 4);
}

#[test]
fn require_dual_stack_on_single_stack_cluster_fails() {
    let mut a = ipam();
    let v = svc("d")
        .port(80, "TCP")
        .spec("ipFamilyPolicy", json!("RequireDualStack"))
        .v();
    assert_eq!(
        create_err(&mut a, v),
        vec![
            r#"spec.ipFamilyPolicy: Invalid value: "RequireDualStack": this cluster is not configured for dual-stack services"#
        ]
    );
    let v = svc("d")
        .port(80, "TCP")
        .spec("ipFamilies", json!(["IPv6"]))
        .v();
    assert_eq!(
        create_err(&mut a, v),
        vec![r#"spec.ipFamilies[0]: Invalid value: "IPv6": not configured on this cluster"#]
    );
    assert_eq!(a.cluster_ips_in_use(), 0);
}

#[test]
fn headless_and_external_name_get_no_cluster_ip() {
    let mut a = ipam();
    let mut hl = svc("hl")
        .port(80, "TCP")
        .spec("clusterIP", json!("None"))
        .v();
    hl["spec"].as_object_mut().unwrap().remove("selector");
    let hl = created(&mut a, hl);
    assert_eq!(hl["spec"]["clusterIPs"], json!(["None"]));
    assert_eq!(hl["spec"]["ipFamilyPolicy"], "RequireDualStack");
    assert_eq!(hl["spec"]["ipFamilies"], json!(["IPv4", "IPv6"]));
    let en = created(
        &mut a,
        svc("en")
            .ty("ExternalName")
            .spec("externalName", json!("example.com"))
            .v(),
    );
    assert_eq!(en["spec"].get("clusterIP"), None);
    assert_eq!(en["spec"].get("ipFamilies"), None);
    assert_eq!(en["spec"].get("ipFamilyPolicy"), None);
    assert_eq!(a.cluster_ips_in_use(), 0);
}
