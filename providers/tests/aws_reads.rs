//! The aws provider remembers what its last successful ensure left in AWS: within the
//! full-read interval (the controller's drift resync) a change of nodes costs only its
//! target writes and an unchanged re-ensure costs nothing; a changed Service, or the
//! interval passed, reads everything again and repairs drift. Against moto (BERTH_VENV or
//! `./scripts/moto-venv`; the test fails without it).

#[path = "../../tests/tests/aws/moto.rs"]
#[allow(dead_code)]
mod moto;

use berth_providers::aws::{AwsProvider, AwsProviderConfig};
use berth_providers::{DesiredLoadBalancer, NodeTarget, Protocol, Provider, ServiceRef};
use std::time::Duration;

const CLUSTER: &str = "reads";

fn desired(nodes: &[(String, String)], tags: Option<&str>) -> DesiredLoadBalancer {
    let service = ServiceRef {
        namespace: "default".into(),
        name: "web".into(),
        uid: "uid-web".into(),
    };
    let mut lb = DesiredLoadBalancer::builder(CLUSTER, service)
        .listener("http", 80, Protocol::Tcp, Some(30080))
        .listener("dns", 53, Protocol::Udp, Some(30053))
        .targets(nodes.iter().enumerate().map(|(n, (id, zone))| NodeTarget {
            provider_id: Some(format!("aws:///{zone}/{id}")),
            zone: Some(zone.clone()),
            ..NodeTarget::new(&format!("node-{n}"), None)
        }))
        .build();
    if let Some(t) = tags {
        lb.annotations.insert(
            "service.beta.kubernetes.io/aws-load-balancer-additional-resource-tags".into(),
            t.into(),
        );
    }
    lb
}

/// Ensures `lb` with `p` (its status names the NLB) and returns the ELBv2 (reads, writes)
/// that took.
async fn ensure_counted(p: &AwsProvider, lb: &DesiredLoadBalancer) -> (u64, u64) {
    let before = p.elb_calls();
    let st = p.ensure(lb).await.unwrap();
    assert!(st.ingress[0].hostname.is_some(), "{st:?}");
    p.elb_calls().iter().fold((0, 0), |(r, w), (op, n)| {
        let d = n - before.get(op).copied().unwrap_or(0);
        if op.starts_with("Describe") {
            (r + d, w)
        } else {
            (r, w + d)
        }
    })
}

/// Each of the Service's target groups' targets, as `id:port`.
fn targets(m: &moto::Moto) -> Vec<Vec<String>> {
    let st = m.state();
    let mut out: Vec<Vec<String>> = st
        .tgs_of("uid-web")
        .iter()
        .map(|t| {
            t["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect()
        })
        .collect();
    out.sort();
    out
}

fn want(nodes: &[(String, String)]) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = [30053, 30080]
        .iter()
        .map(|port| {
            let mut v: Vec<String> = nodes.iter().map(|(id, _)| format!("{id}:{port}")).collect();
            v.sort();
            v
        })
        .collect();
    out.sort();
    out
}

#[test]
fn node_changes_cost_only_their_writes_until_the_full_read_interval() {
    // The provider takes moto's credentials from the standard chain, as the controller does;
    // this binary has this one test, so nothing else reads the environment meanwhile.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = std::env::temp_dir().join(format!("berth-aws-reads-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let m = moto::Moto::start(&dir.join("moto.log"));
    let setup = m.ctl(&["setup", CLUSTER, "4"]);
    let nodes = moto::instances(&setup);
    let config = |full_read_every: Duration| {
        let mut cfg = AwsProviderConfig::new("us-east-1");
        cfg.endpoint = Some(m.endpoint.clone());
        cfg.full_read_every = full_read_every;
        cfg
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let p = AwsProvider::new(config(Duration::from_secs(3600))).unwrap();
        p.ensure(&desired(&nodes[..3], None)).await.unwrap();
        assert_eq!(targets(&m), want(&nodes[..3]));

        // A node added: one RegisterTargets per target group, nothing read.
        assert_eq!(
            ensure_counted(&p, &desired(&nodes, None)).await,
            (0, 2),
            "node added"
        );
        assert_eq!(targets(&m), want(&nodes));

        // Unchanged: no call at all.
        assert_eq!(
            ensure_counted(&p, &desired(&nodes, None)).await,
            (0, 0),
            "unchanged"
        );

        // A node removed: one DeregisterTargets per group.
        assert_eq!(
            ensure_counted(&p, &desired(&nodes[1..], None)).await,
            (0, 2),
            "node removed"
        );
        assert_eq!(targets(&m), want(&nodes[1..]));

        // Anything else changed (here a tag): everything is read again.
        let tagged = desired(&nodes[1..], Some("team=web"));
        let (reads, writes) = ensure_counted(&p, &tagged).await;
        assert!(
            reads >= 5 && writes >= 1,
            "tag change: {reads} reads, {writes} writes"
        );

        // Drift made by someone else stays until the full read, which repairs it.
        let st = m.state();
        let tg = &st.tgs_of("uid-web")[0];
        let (arn, port) = (tg["arn"].as_str().unwrap(), tg["port"].to_string());
        m.ctl(&["deregister", arn, &nodes[1].0, &port]);
        p.ensure(&tagged).await.unwrap();
        assert_ne!(targets(&m), want(&nodes[1..]), "trusted until the interval");
        let resync = AwsProvider::new(config(Duration::ZERO)).unwrap();
        let (reads, writes) = ensure_counted(&resync, &tagged).await;
        assert_eq!(writes, 1, "the one missing target registered again");
        assert!(reads >= 5, "{reads} reads");
        assert_eq!(targets(&m), want(&nodes[1..]));
        // And with a zero interval every ensure reads everything.
        let (reads, writes) = ensure_counted(&resync, &tagged).await;
        assert_eq!(writes, 0);
        assert!(reads >= 5, "{reads} reads");
    });
}
