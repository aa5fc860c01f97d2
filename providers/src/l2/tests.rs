use super::*;
use crate::types::{IpFamily, Protocol};

fn lb(name: &str, port: u16, ann: &[(&str, &str)]) -> DesiredLoadBalancer {
    let service = ServiceRef {
        namespace: "default".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
    };
    ann.iter()
        .fold(DesiredLoadBalancer::builder("c1", service), |b, (k, v)| {
            b.annotation(k, v)
        })
        .listener("", port, Protocol::Tcp, None)
        .ip_families([IpFamily::IPv4])
        .build()
}

fn provider() -> L2Provider {
    let p = L2Provider::new();
    let (res, _) = p.set_pools(&[PoolSpec {
        name: "default".into(),
        addresses: vec!["198.51.100.0/30".into()],
        auto_assign: true,
        ..Default::default()
    }]);
    assert!(res[0].result.is_ok());
    p
}

#[tokio::test]
async fn ensure_allocates_a_vip_and_reports_events_once() {
    let p = provider();
    let mut events = p.subscribe();
    assert!(!p.needs_node_ports());
    let st = p.ensure(&lb("web", 80, &[])).await.unwrap();
    assert_eq!(st.ingress.len(), 1);
    assert_eq!(st.ingress[0].ip, Some("198.51.100.0".parse().unwrap()));
    assert_eq!(st.ingress[0].ip_mode, IpMode::Vip);
    let again = p.ensure(&lb("web", 80, &[])).await.unwrap();
    assert_eq!(again, st);
    match events.try_recv().unwrap() {
        AllocEvent::Allocated { ips, pool, service } => {
            assert_eq!(pool, "default");
            assert_eq!(ips, vec!["198.51.100.0".parse::<IpAddr>().unwrap()]);
            assert_eq!(service.name, "web");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        events.try_recv().is_err(),
        "no event for an unchanged address"
    );
    let owned = p.list_owned("c1").await.unwrap();
    assert_eq!(owned.len(), 1);
    assert_eq!(owned[0].service.uid, "uid-web");
    assert!(p.list_owned("other").await.unwrap().is_empty());
    p.delete(&lb("web", 80, &[]).reference()).await.unwrap();
    p.delete(&lb("web", 80, &[]).reference()).await.unwrap();
    assert!(matches!(
        events.try_recv().unwrap(),
        AllocEvent::Released { .. }
    ));
    assert!(events.try_recv().is_err());
    assert!(p.list_owned("c1").await.unwrap().is_empty());
    assert_eq!(p.pool_stats()["default"].assigned_ipv4, 0);
}

#[tokio::test]
async fn requested_outside_every_pool_names_the_annotation() {
    let p = provider();
    let mut events = p.subscribe();
    let mut d = lb("web", 80, &[(LB_IPS_ANNOTATION, "192.0.2.1")]);
    d.requested_addresses = vec!["192.0.2.1".parse().unwrap()];
    let e = p.ensure(&d).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "Invalid metadata.annotations[berth.io/load-balancer-ips]: 192.0.2.1 is not in any pool; pools: default (198.51.100.0-198.51.100.3)"
    );
    assert!(p.has_failures());
    let _ = p.ensure(&d).await.unwrap_err();
    assert!(matches!(
        events.try_recv().unwrap(),
        AllocEvent::Failed { .. }
    ));
    assert!(
        events.try_recv().is_err(),
        "the same failure is reported once"
    );
    // spec.loadBalancerIP when the annotation is absent.
    let mut d = lb("api", 80, &[]);
    d.requested_addresses = vec!["192.0.2.1".parse().unwrap()];
    let (field, _) = match p.ensure(&d).await.unwrap_err() {
        ProviderError::Invalid { field, message } => (field, message),
        other => panic!("{other:?}"),
    };
    assert_eq!(field, "spec.loadBalancerIP");
}

#[tokio::test]
async fn sharing_annotation_and_facts_flow_into_the_allocator() {
    let p = provider();
    let key = [(SHARING_ANNOTATION, "k")];
    let a = p.ensure(&lb("a", 80, &key)).await.unwrap();
    let b = p.ensure(&lb("b", 443, &key)).await.unwrap();
    assert_eq!(a.ingress[0].ip, b.ingress[0].ip);
    // ETP=Local with another selector may not share: b moves once its facts change.
    let mut b_local = lb("b", 443, &key);
    b_local.external_traffic_policy = TrafficPolicy::Local;
    b_local.selector = [("app".to_string(), "b".to_string())].into();
    assert!(p.reads_service_facts());
    let b2 = p.ensure(&b_local).await.unwrap();
    assert_ne!(a.ingress[0].ip, b2.ingress[0].ip);
    // A pool's serviceSelectors see the Service's own labels.
    p.set_pools(&[
        PoolSpec {
            name: "default".into(),
            addresses: vec!["198.51.100.0/30".into()],
            auto_assign: true,
            ..Default::default()
        },
        PoolSpec {
            name: "web-only".into(),
            addresses: vec!["203.0.113.0/30".into()],
            auto_assign: false,
            allocation: Some(ServiceAllocation {
                service_selectors: vec![LabelSelector {
                    match_labels: [("tier".to_string(), "web".to_string())].into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        },
    ]);
    let pick = [(POOL_ANNOTATION, "web-only")];
    let e = p.ensure(&lb("w", 80, &pick)).await.unwrap_err();
    assert!(e.to_string().contains("web-only"), "{e}");
    let mut labelled = lb("w", 80, &pick);
    labelled.service_labels = [("tier".to_string(), "web".to_string())].into();
    let w = p.ensure(&labelled).await.unwrap();
    assert_eq!(w.ingress[0].ip, Some("203.0.113.0".parse().unwrap()));
    // The pool annotation.
    let e = p
        .ensure(&lb("c", 80, &[(POOL_ANNOTATION, "nope")]))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("address-pool"), "{e}");
}

#[tokio::test]
async fn restore_takes_addresses_back_before_allocating() {
    let p = provider();
    let d = lb("web", 80, &[]);
    p.restore(&d, &["198.51.100.2".parse().unwrap()]).unwrap();
    let st = p.ensure(&lb("other", 80, &[])).await.unwrap();
    assert_eq!(st.ingress[0].ip, Some("198.51.100.0".parse().unwrap()));
    let st = p.ensure(&d).await.unwrap();
    assert_eq!(st.ingress[0].ip, Some("198.51.100.2".parse().unwrap()));
    assert_eq!(p.list_owned("c1").await.unwrap().len(), 2);
}
