//! The pure decisions table-tested, backoff and error chains.

use super::*;

use crate::service::tests::SvcB;
use crate::service::{LEGACY_FINALIZER, finalizer_for};
use berth_providers::NodeTarget;

/// [`decide::plan_ensure`] on the digests of whole desired states.
fn plan_ensure(
    desired: &DesiredLoadBalancer,
    previous: Option<(&DesiredLoadBalancer, bool, Duration)>,
    resync: Duration,
    reads_facts: bool,
    shown: bool,
) -> EnsurePlan {
    let dg = |d: &DesiredLoadBalancer| Digests::of(d, decide::targets_digest(&d.targets));
    let prev = previous.map(|(p, a, t)| (dg(p), a, t));
    decide::plan_ensure(
        &dg(desired),
        prev.as_ref().map(|(p, a, t)| (p, *a, *t)),
        resync,
        reads_facts,
        shown,
    )
}

#[test]
fn digests_see_every_field_where_it_belongs() {
    let d = desired(80, &["n1", "n2"]);
    let dg = |d: &DesiredLoadBalancer| Digests::of(d, decide::targets_digest(&d.targets));
    let base = dg(&d);
    assert_eq!(base, dg(&d.clone()), "the same state, the same digests");
    let mut x = d.clone();
    x.annotations.insert("a".into(), "b".into());
    assert!(dg(&x).spec != base.spec && dg(&x).targets == base.targets);
    let x = with_pod(&d);
    assert!(dg(&x).spec == base.spec && dg(&x).targets != base.targets);
    let x = desired(80, &["n1"]);
    assert!(dg(&x).spec == base.spec && dg(&x).targets != base.targets);
    let mut x = d.clone();
    x.selector.insert("app".into(), "web".into());
    assert!(dg(&x).spec == base.spec && dg(&x).facts != base.facts);
    let mut x = d.clone();
    x.source_ranges.push("10.0.0.0/8".parse().unwrap());
    assert_ne!(dg(&x).spec, base.spec);
}

fn with_finalizer(mut s: Service, f: &str) -> Service {
    s.metadata
        .finalizers
        .get_or_insert_with(Vec::new)
        .push(f.into());
    s
}

#[test]
fn branch_table() {
    let a = ClassFilter::new("berth.io/http", true);
    let ours = SvcB::lb("s").port(80, "TCP", 30080).svc();
    let deleted = {
        let mut s = with_finalizer(ours.clone(), &a.finalizer);
        s.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ));
        s
    };
    let cases: Vec<(&str, Service, Branch)> = vec![
        ("new Service of ours", ours.clone(), Branch::AddFinalizer),
        (
            "ours with our finalizer",
            with_finalizer(ours.clone(), &a.finalizer),
            Branch::Apply,
        ),
        (
            "ours with only the legacy finalizer gets ours too",
            with_finalizer(ours.clone(), LEGACY_FINALIZER),
            Branch::AddFinalizer,
        ),
        ("deleted, ours", deleted, Branch::CleanUp),
        (
            "type changed, ours",
            with_finalizer(SvcB::lb("s").type_("ClusterIP").svc(), &a.finalizer),
            Branch::CleanUp,
        ),
        (
            "type changed, never ours",
            SvcB::lb("s").type_("ClusterIP").svc(),
            Branch::Ignore,
        ),
        (
            "another class, its finalizer",
            with_finalizer(
                SvcB::lb("s").class("example.com/b").svc(),
                &finalizer_for("example.com/b"),
            ),
            Branch::Ignore,
        ),
        (
            "another class, legacy finalizer",
            with_finalizer(SvcB::lb("s").class("example.com/b").svc(), LEGACY_FINALIZER),
            Branch::Ignore,
        ),
    ];
    for (what, svc, want) in cases {
        assert_eq!(branch(&a, &svc), want, "{what}");
    }
}

/// `d` with one ready pod behind its first port.
fn with_pod(d: &DesiredLoadBalancer) -> DesiredLoadBalancer {
    let mut d = d.clone();
    let l = &d.listeners[0];
    d.endpoints = vec![berth_providers::PortEndpoints {
        name: l.name.clone(),
        port: l.port,
        protocol: l.protocol,
        addresses: vec![berth_providers::EndpointAddress {
            ip: "10.1.0.7".parse().unwrap(),
            port: 8080,
        }],
    }];
    d
}

fn desired(port: i32, nodes: &[&str]) -> DesiredLoadBalancer {
    let targets: Vec<NodeTarget> = nodes
        .iter()
        .map(|n| NodeTarget {
            name: n.to_string(),
            internal_ip: Some("127.0.0.1".parse().unwrap()),
            provider_id: None,
            zone: None,
        })
        .collect();
    crate::desired::desired_load_balancer(
        &SvcB::lb("s").port(port, "TCP", 30080).svc(),
        &targets.into(),
        "c",
        true,
    )
    .unwrap()
}

#[test]
fn plan_ensure_table() {
    let resync = Duration::from_secs(300);
    let d = desired(80, &["n1", "n2"]);
    let fresh = Duration::from_secs(1);
    let old = Duration::from_secs(301);
    let mut relabelled = d.clone();
    relabelled.service_labels.insert("team".into(), "a".into());
    relabelled.external_traffic_policy = berth_providers::TrafficPolicy::Local;
    let cases: Vec<(&str, EnsurePlan, EnsurePlan)> = vec![
        (
            "never ensured",
            plan_ensure(&d, None, resync, false, false),
            EnsurePlan::Call(Change::Spec),
        ),
        (
            "never ensured here, but the Service shows it ensured (a restart)",
            plan_ensure(&d, None, resync, false, true),
            EnsurePlan::Call(Change::Resume),
        ),
        (
            "only the pods behind an ip-target load balancer moved",
            plan_ensure(&with_pod(&d), Some((&d, true, fresh)), resync, false, false),
            EnsurePlan::Call(Change::Targets),
        ),
        (
            "ensured here: what the Service shows does not matter",
            plan_ensure(
                &desired(81, &["n1"]),
                Some((&d, true, fresh)),
                resync,
                false,
                true,
            ),
            EnsurePlan::Call(Change::Spec),
        ),
        (
            "unchanged, fresh, with an address",
            plan_ensure(&d, Some((&d, true, fresh)), resync, false, false),
            EnsurePlan::UpToDate,
        ),
        (
            "unchanged but the resync is due",
            plan_ensure(&d, Some((&d, true, old)), resync, false, false),
            EnsurePlan::Call(Change::Recheck),
        ),
        (
            "unchanged, address still pending",
            plan_ensure(&d, Some((&d, false, fresh)), resync, false, false),
            EnsurePlan::Call(Change::Recheck),
        ),
        (
            "unchanged, the provider's facts changed",
            plan_ensure(&relabelled, Some((&d, true, fresh)), resync, true, false),
            EnsurePlan::Call(Change::Recheck),
        ),
        (
            "unchanged, the Service's facts unchanged for a provider reading them",
            plan_ensure(&d, Some((&d, true, fresh)), resync, true, false),
            EnsurePlan::UpToDate,
        ),
        (
            "only facts the provider does not read changed",
            plan_ensure(&relabelled, Some((&d, true, fresh)), resync, false, false),
            EnsurePlan::UpToDate,
        ),
        (
            "a node joined and the facts changed",
            plan_ensure(
                &desired(80, &["n1", "n2", "n3"]).with_service_facts_of(&relabelled),
                Some((&d, true, fresh)),
                resync,
                true,
                false,
            ),
            EnsurePlan::Call(Change::Targets),
        ),
        (
            "a node joined",
            plan_ensure(
                &desired(80, &["n1", "n2", "n3"]),
                Some((&d, true, fresh)),
                resync,
                false,
                false,
            ),
            EnsurePlan::Call(Change::Targets),
        ),
        (
            "a port changed",
            plan_ensure(
                &desired(81, &["n1", "n2"]),
                Some((&d, true, fresh)),
                resync,
                false,
                false,
            ),
            EnsurePlan::Call(Change::Spec),
        ),
        (
            "a port and the nodes changed",
            plan_ensure(
                &desired(81, &["n1"]),
                Some((&d, true, fresh)),
                resync,
                false,
                false,
            ),
            EnsurePlan::Call(Change::Spec),
        ),
    ];
    for (what, got, want) in cases {
        assert_eq!(got, want, "{what}");
    }
}

#[test]
fn backoff_doubles_to_the_cap_with_jitter() {
    let min = Duration::from_secs(1);
    let max = Duration::from_secs(60);
    for (n, base) in [(1, 1.0), (2, 2.0), (3, 4.0), (7, 60.0), (40, 60.0)] {
        let d = backoff(n, min, max).as_secs_f64();
        assert!(d >= base * 0.8 - 1e-9 && d <= base * 1.2 + 1e-9, "{n}: {d}");
    }
}

#[test]
fn error_chain_prints_every_cause_once() {
    let e = Error::Provider(ProviderError::Permanent("boom".into()));
    assert_eq!(error_chain(&e), "Load balancer provider failed: boom");
}
