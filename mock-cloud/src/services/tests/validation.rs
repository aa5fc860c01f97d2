use super::*;

// --- validation -----------------------------------------------------------

#[test]
fn validation_rules() {
    let long = "a".repeat(64);
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (svc("a").v(), vec!["spec.ports: Required value"]),
        (
            svc("a").port(0, "TCP").v(),
            // The defaulted targetPort (= port) fails too, as upstream.
            vec![
                "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
                "spec.ports[0].targetPort: Invalid value: 0: must be between 1 and 65535, inclusive",
            ],
        ),
        (
            svc("a").port(65536, "TCP").v(),
            vec![
                "spec.ports[0].port: Invalid value: 65536: must be between 1 and 65535, inclusive",
                "spec.ports[0].targetPort: Invalid value: 65536: must be between 1 and 65535, inclusive",
            ],
        ),
        (
            svc("a").port(80, "FOO").v(),
            vec![
                r#"spec.ports[0].protocol: Unsupported value: "FOO": supported values: "SCTP", "TCP", "UDP""#,
            ],
        ),
        (
            svc("a").port(80, "TCP").port(80, "TCP").v(),
            vec![
                r#"spec.ports[1]: Duplicate value: {"Name":"","Protocol":"TCP","AppProtocol":null,"Port":80,"TargetPort":0,"NodePort":0}"#,
            ],
        ),
        (svc("a").port(80, "TCP").port(80, "UDP").v(), vec![]),
        (
            svc("a")
                .spec("ports", json!([{"port": 80}, {"port": 81}]))
                .v(),
            vec![
                "spec.ports[0].name: Required value",
                "spec.ports[1].name: Required value",
            ],
        ),
        (
            svc("a")
                .spec(
                    "ports",
                    json!([{"name": "web", "port": 80}, {"name": "web", "port": 81}]),
                )
                .v(),
            vec![r#"spec.ports[1].name: Duplicate value: "web""#],
        ),
        (
            svc("a")
                .spec("ports", json!([{"name": "Web", "port": 80}]))
                .v(),
            vec![
                r#"spec.ports[0].name: Invalid value: "Web": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"#,
            ],
        ),
        (
            svc("a").ty("Foo").port(80, "TCP").v(),
            vec![
                r#"spec.type: Unsupported value: "Foo": supported values: "ClusterIP", "ExternalName", "LoadBalancer", "NodePort""#,
            ],
        ),
        (
            svc("a")
                .spec("loadBalancerClass", json!("example.com/lb"))
                .port(80, "TCP")
                .v(),
            vec![
                "spec.loadBalancerClass: Forbidden: may only be used when `type` is 'LoadBalancer'",
            ],
        ),
        (
            svc("a")
                .lb()
                .spec("loadBalancerClass", json!("example.com/lb"))
                .port(80, "TCP")
                .v(),
            vec![],
        ),
        (
            svc("a")
                .lb()
                .spec("loadBalancerClass", json!("a/b/c"))
                .port(80, "TCP")
                .v(),
            vec![
                r#"spec.loadBalancerClass: Invalid value: "a/b/c": a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"#,
            ],
        ),
        (
            svc("a")
                .lb()
                .spec(
                    "loadBalancerSourceRanges",
                    json!(["10.0.0.0/8", "foo", "10.0.0.1/8"]),
                )
                .port(80, "TCP")
                .v(),
            vec![
                r#"spec.LoadBalancerSourceRanges[1]: Invalid value: "foo": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"#,
                r#"spec.LoadBalancerSourceRanges[2]: Invalid value: "10.0.0.1/8": must not have bits set beyond the prefix length"#,
            ],
        ),
        (
            svc("a")
                .spec("loadBalancerSourceRanges", json!(["10.0.0.0/8"]))
                .port(80, "TCP")
                .v(),
            vec![
                "spec.LoadBalancerSourceRanges: Forbidden: may only be used when `type` is 'LoadBalancer'",
            ],
        ),
        (
            svc("a")
                .spec("sessionAffinity", json!("Sticky"))
                .port(80, "TCP")
                .v(),
            vec![
                r#"spec.sessionAffinity: Unsupported value: "Sticky": supported values: "ClientIP", "None""#,
            ],
        ),
        (
            svc("a").local().port(80, "TCP").v(),
            vec![
                r#"spec.externalTrafficPolicy: Invalid value: "Local": may only be set for externally-accessible services"#,
            ],
        ),
        (svc("a").np().local().port(80, "TCP").v(), vec![]),
        (
            svc("a")
                .np()
                .spec("externalTrafficPolicy", json!("Global"))
                .port(80, "TCP")
                .v(),
            vec![
                r#"spec.externalTrafficPolicy: Unsupported value: "Global": supported values: "Cluster", "Local""#,
            ],
        ),
        (
            svc("a")
                .np()
                .port(80, "TCP")
                .node_port(30080)
                .port(81, "TCP")
                .node_port(30080)
                .v(),
            vec!["spec.ports[1].nodePort: Duplicate value: 30080"],
        ),
        (
            svc("a")
                .np()
                .port(80, "TCP")
                .node_port(30080)
                .port(81, "UDP")
                .node_port(30080)
                .v(),
            vec![],
        ),
        (
            svc("a").port(80, "TCP").node_port(30080).v(),
            vec!["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"],
        ),
        (
            svc("a")
                .spec("allocateLoadBalancerNodePorts", json!(true))
                .port(80, "TCP")
                .v(),
            vec![
                "spec.allocateLoadBalancerNodePorts: Forbidden: may only be used when `type` is 'LoadBalancer'",
            ],
        ),
        (
            svc("a")
                .spec("internalTrafficPolicy", json!("Nearby"))
                .port(80, "TCP")
                .v(),
            vec![
                r#"spec.internalTrafficPolicy: Unsupported value: "Nearby": supported values: "Cluster", "Local""#,
            ],
        ),
        (
            svc("a")
                .lb()
                .spec("clusterIP", json!("None"))
                .port(80, "TCP")
                .v(),
            vec![
                r#"spec.clusterIPs[0]: Invalid value: "None": may not be set to 'None' for LoadBalancer services"#,
            ],
        ),
        (svc("a").spec("clusterIP", json!("None")).v(), vec![]),
        (
            svc("a")
                .ty("ExternalName")
                .spec("externalName", json!("example.com."))
                .v(),
            vec![],
        ),
        (
            svc("a").ty("ExternalName").v(),
            vec!["spec.externalName: Required value"],
        ),
        (
            svc("a")
                .spec("externalIPs", json!(["127.0.0.1"]))
                .port(80, "TCP")
                .v(),
            vec![
                r#"spec.externalIPs[0]: Invalid value: "127.0.0.1": may not be in the loopback range (127.0.0.0/8, ::1/128)"#,
            ],
        ),
        (
            svc(&long)
                .spec("selector", json!({"app": "x"}))
                .port(80, "TCP")
                .v(),
            vec![
                "metadata.name: Invalid value: \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\": must be no more than 63 characters",
            ],
        ),
        (
            svc("a")
                .spec("ports", json!([{"port": 80, "targetPort": "Http"}]))
                .v(),
            vec![
                r#"spec.ports[0].targetPort: Invalid value: "Http": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"#,
            ],
        ),
        (
            svc("a")
                .spec("clusterIP", json!("10.96.0.5"))
                .spec("clusterIPs", json!(["10.96.0.6"]))
                .port(80, "TCP")
                .v(),
            vec![
                r#"spec.clusterIPs: Invalid value: ["10.96.0.6"]: first value must match `clusterIP`"#,
            ],
        ),
        (
            svc("a")
                .spec("ipFamilyPolicy", json!("Dual"))
                .port(80, "TCP")
                .v(),
            vec![
                r#"spec.ipFamilyPolicy: Unsupported value: "Dual": supported values: "PreferDualStack", "RequireDualStack", "SingleStack""#,
            ],
        ),
    ];
    for (i, (v, want)) in cases.iter().enumerate() {
        assert_eq!(texts(&validate(v)), *want, "case {i}: {v}");
    }
}

#[test]
fn validation_reasons() {
    let errs = validate(&svc("a").ty("Foo").port(80, "TCP").port(80, "TCP").v());
    let reasons: Vec<&str> = errs.iter().map(|e| e.reason).collect();
    assert_eq!(reasons, vec![REASON_NOT_SUPPORTED, REASON_DUPLICATE]);
    let errs = validate(&svc("a").v());
    assert_eq!(
        errs[0],
        FieldError {
            field: "spec.ports".into(),
            reason: REASON_REQUIRED,
            message: "Required value".into()
        }
    );
}

#[test]
fn load_balancer_class_is_immutable() {
    let mut a = ipam();
    let old = created(
        &mut a,
        svc("a")
            .lb()
            .spec("loadBalancerClass", json!("x.io/a"))
            .port(80, "TCP")
            .v(),
    );
    let mut new = old.clone();
    new["spec"]["loadBalancerClass"] = json!("x.io/b");
    assert_eq!(
        texts(&a.update(&old, &mut new).unwrap_err()),
        vec![r#"spec.loadBalancerClass: Invalid value: "x.io/b": may not change once set"#]
    );
    // Leaving LoadBalancer drops the unchanged class.
    let mut cip = old.clone();
    cip["spec"]["type"] = json!("ClusterIP");
    let cip = updated(&mut a, &old, cip);
    assert_eq!(cip["spec"].get("loadBalancerClass"), None);
}

#[test]
fn cidr_rules_follow_upstream() {
    use crate::services::validation::cidr_error;
    for ok in [
        "10.0.0.0/8",
        "0.0.0.0/0",
        "192.0.2.7/32",
        "2001:db8::/64",
        "::/0",
    ] {
        assert_eq!(cidr_error(ok), None, "{ok}");
    }
    let invalid = Some("must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)");
    for bad in [
        "foo",
        "10.0.0.0",
        "10.0.0.0/33",
        "::/129",
        "10.0.0.0/8/8",
        "10.0.0.256/8",
    ] {
        assert_eq!(cidr_error(bad), invalid, "{bad}");
    }
    let zeros = Some("must not have leading 0s in IP or prefix length");
    assert_eq!(cidr_error("10.0.0.0/08"), zeros);
    assert_eq!(cidr_error("010.0.0.0/8"), zeros);
    let beyond = Some("must not have bits set beyond the prefix length");
    assert_eq!(cidr_error("10.0.0.1/8"), beyond);
    assert_eq!(cidr_error("2001:db8::1/64"), beyond);
}
