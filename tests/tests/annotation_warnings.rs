//! No silent drops: an annotation of a known family that a Service's provider does not
//! implement, and a `berth.io/` key berth does not know, each get exactly one Warning event
//! naming them — through resyncs too — while the Service is still provisioned; annotations
//! the provider implements get none. `berth controller --provider l2` and `--provider http`
//! side by side on one mock-cloud, Services applied with the real kubectl.

use berth_tests::warnings::{
    UNKNOWN_ANNOTATION as UNKNOWN, UNSUPPORTED_ANNOTATION as UNSUPPORTED, annotation_warnings,
    annotation_warnings_once as exactly_once, wait_annotation_warnings, wait_reconciles,
};
use berth_tests::{Cloud, Controller, DEADLINE, install_berth_crds, start_l2_controller, wait_for};
use serde_json::{Value, json};
use std::collections::BTreeMap;

fn service(name: &str, class: &str, port: u16, annotations: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "type": "LoadBalancer",
            "loadBalancerClass": class,
            "selector": {"app": name},
            "ports": [{"name": "p", "port": port, "targetPort": 8080, "protocol": "TCP"}],
        },
    })
}

#[test]
fn ignored_annotations_warn_once_each_and_never_block() {
    let cloud = Cloud::start("annwarn");
    install_berth_crds(&cloud);
    cloud.apply(&[json!({
        "apiVersion": "berth.io/v1alpha1",
        "kind": "IPAddressPool",
        "metadata": {"name": "general"},
        "spec": {"addresses": ["192.0.2.10-192.0.2.40"]},
    })]);
    let (_l2, l2_admin) = start_l2_controller(&cloud, "annwarn-l2");
    let http_ctl = Controller::start(&cloud, "annwarn", "annwarn-http", &[]);

    let l2_bad: BTreeMap<&str, &str> = [
        (
            "service.beta.kubernetes.io/aws-load-balancer-ssl-cert",
            UNSUPPORTED,
        ),
        (
            "service.beta.kubernetes.io/aws-load-balancer-type",
            UNSUPPORTED,
        ),
        ("berth.io/health-check-interval-seconds", UNSUPPORTED),
        ("io.cilium/lb-ipam-ips", UNSUPPORTED),
        ("kube-vip.io/egress", UNSUPPORTED),
        ("metallb.io/ip-allocated-from-pool", UNSUPPORTED),
        ("lbipam.cilium.io/sharing-cross-namespace", UNSUPPORTED),
        ("berth.io/load-balancer-ip", UNKNOWN),
    ]
    .into();
    let http_bad: BTreeMap<&str, &str> = [
        ("metallb.io/address-pool", UNSUPPORTED),
        ("berth.io/allow-shared-ip", UNSUPPORTED),
        (
            "service.beta.kubernetes.io/aws-load-balancer-scheme",
            UNSUPPORTED,
        ),
        ("berth.io/helth-check-port", UNKNOWN),
    ]
    .into();
    // Every value is one the annotation accepts: the warnings are about the keys.
    let values = |keys: &BTreeMap<&str, &str>, extra: Value| {
        let mut v = extra;
        for k in keys.keys() {
            v[*k] = json!(if k.contains("interval") {
                "10"
            } else {
                "192.0.2.39"
            });
        }
        v
    };
    let l2_supported = json!({
        "metallb.universe.tf/loadBalancerIPs": "192.0.2.33",
        "berth.io/address-pool": "general",
        "app.example.com/owner": "team-a",
    });
    let http_supported = json!({
        "berth.io/health-check-protocol": "HTTP",
        "berth.io/health-check-interval-seconds": "10",
    });
    cloud.apply(&[
        service(
            "l2-ignored",
            "berth.io/l2",
            80,
            values(&l2_bad, l2_supported.clone()),
        ),
        service(
            "l2-clean",
            "berth.io/l2",
            80,
            json!({
                "lbipam.cilium.io/ips": "192.0.2.34",
                "metallb.io/allow-shared-ip": "k",
                "berth.io/allow-shared-ip": "k",
            }),
        ),
        service(
            "http-ignored",
            "berth.io/http",
            80,
            values(&http_bad, http_supported.clone()),
        ),
        service("http-clean", "berth.io/http", 81, http_supported),
    ]);

    // Warnings never block: every Service gets its address (the l2 ones the one asked for).
    assert_eq!(cloud.wait_address("l2-ignored").to_string(), "192.0.2.33");
    assert_eq!(cloud.wait_address("l2-clean").to_string(), "192.0.2.34");
    cloud.wait_address("http-ignored");
    cloud.wait_address("http-clean");

    let none = BTreeMap::new();
    let cases = [
        ("l2-ignored", &l2_bad),
        ("l2-clean", &none),
        ("http-ignored", &http_bad),
        ("http-clean", &none),
    ];
    for (name, expected) in cases {
        wait_annotation_warnings(&cloud, name, expected);
    }
    // The suggestions and what berth does instead.
    let notes: Vec<String> = annotation_warnings(&cloud, "l2-ignored")
        .into_iter()
        .map(|(_, n, _)| n)
        .collect();
    let has = |needle: &str| notes.iter().any(|n| n.contains(needle));
    assert!(
        has("did you mean berth.io/load-balancer-ips?"),
        "{notes:#?}"
    );
    assert!(
        has("not implemented by berth's l2 provider; the address comes from an IPAddressPool"),
        "{notes:#?}"
    );
    assert!(
        has("is read by berth's aws, http providers only"),
        "{notes:#?}"
    );

    // Two resyncs of every Service later, still one warning each.
    let admins = [l2_admin.as_str(), http_ctl.admin.as_str()];
    wait_reconciles(&admins, 4);
    for (name, expected) in cases {
        exactly_once(&cloud, name, expected).unwrap_or_else(|e| panic!("after resyncs: {e}"));
    }

    // Another annotation: its own warning, once; the standing ones are not repeated, and a
    // change to an unrelated annotation publishes nothing.
    cloud.kubectl_ok(&[
        "annotate",
        "service",
        "l2-ignored",
        "metallb.io/loadBalancerIP=192.0.2.33",
        "app.example.com/owner=team-b",
        "--overwrite",
    ]);
    let mut more = l2_bad.clone();
    more.insert("metallb.io/loadBalancerIP", UNSUPPORTED);
    wait_annotation_warnings(&cloud, "l2-ignored", &more);
    let typo = annotation_warnings(&cloud, "l2-ignored")
        .into_iter()
        .find(|(_, n, _)| n.contains("Annotation metallb.io/loadBalancerIP "))
        .expect("the warning");
    assert!(
        typo.1.contains("did you mean metallb.io/loadBalancerIPs?"),
        "{typo:?}"
    );
    wait_reconciles(&admins, 4);
    exactly_once(&cloud, "l2-ignored", &more).unwrap_or_else(|e| panic!("after resyncs: {e}"));
    assert_eq!(cloud.wait_address("l2-ignored").to_string(), "192.0.2.33");

    // An annotation removed and added back is reported again.
    let key = "kube-vip.io/egress";
    let reported = || -> u64 {
        annotation_warnings(&cloud, "l2-ignored")
            .iter()
            .filter(|(_, n, _)| n.contains(&format!("Annotation {key} ")))
            .map(|(_, _, count)| count)
            .sum()
    };
    cloud.kubectl_ok(&["annotate", "service", "l2-ignored", &format!("{key}-")]);
    wait_reconciles(&[l2_admin.as_str()], 3);
    assert_eq!(reported(), 1);
    cloud.kubectl_ok(&["annotate", "service", "l2-ignored", &format!("{key}=true")]);
    wait_for("the annotation reported again", DEADLINE, || {
        (reported() == 2).then_some(())
    });
    wait_reconciles(&[l2_admin.as_str()], 3);
    assert_eq!(reported(), 2, "and only once more");
}
