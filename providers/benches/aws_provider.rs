//! The aws provider against moto: ELBv2 calls per Service create, per node added (across 100
//! Services), per port change and per delete, next to the fewest writes each needs; and the
//! time to converge 200 Services; then 100 Services created through a proxy that throttles
//! 30% of the calls, at AWS's default API budget. Needs moto (`./scripts/moto-venv`, or BERTH_VENV).
//!
//! `cargo bench -p berth-providers --bench aws_provider`

#[path = "../../tests/tests/aws/moto.rs"]
#[allow(dead_code)]
mod moto;
#[path = "../../tests/src/throttle_proxy.rs"]
#[allow(dead_code)]
mod throttle_proxy;

use berth_providers::aws::{AwsProvider, AwsProviderConfig};
use berth_providers::{DesiredLoadBalancer, NodeTarget, Protocol, Provider, ServiceRef};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

const CLUSTER: &str = "bench";

fn desired(
    i: usize,
    ports: &[(u16, Protocol, u16)],
    nodes: &[(String, String)],
) -> DesiredLoadBalancer {
    let service = ServiceRef {
        namespace: "default".into(),
        name: format!("svc-{i}"),
        uid: format!("uid-{i}"),
    };
    ports
        .iter()
        .fold(
            DesiredLoadBalancer::builder(CLUSTER, service),
            |b, (port, protocol, np)| b.listener(&format!("p{port}"), *port, *protocol, Some(*np)),
        )
        .targets(nodes.iter().enumerate().map(|(n, (id, zone))| NodeTarget {
            provider_id: Some(format!("aws:///{zone}/{id}")),
            zone: Some(zone.clone()),
            ..NodeTarget::new(&format!("node-{n}"), None)
        }))
        .build()
}

/// Calls since `before`: (total, writes, by operation).
fn delta(
    before: &BTreeMap<&'static str, u64>,
    after: &BTreeMap<&'static str, u64>,
) -> (u64, u64, String) {
    let mut total = 0;
    let mut writes = 0;
    let mut ops = Vec::new();
    for (op, n) in after {
        let d = n - before.get(op).copied().unwrap_or(0);
        if d == 0 {
            continue;
        }
        total += d;
        if !op.starts_with("Describe") {
            writes += d;
        }
        ops.push(format!("{op}={d}"));
    }
    (total, writes, ops.join(" "))
}

/// One phase's ELBv2 calls per Service: all, writes next to the fewest writes it needs, and
/// reads next to the most it may make (`-`: no bound).
fn report(
    what: &str,
    per: f64,
    total: u64,
    writes: u64,
    minimal_writes: f64,
    max_reads: Option<f64>,
    ops: &str,
) {
    println!(
        "{what:<34} calls {:>6.1}  writes {:>5.1} (fewest {:>4.1})  reads {:>5.1} (bound {:>3})   [{ops}]",
        total as f64 / per,
        writes as f64 / per,
        minimal_writes,
        (total - writes) as f64 / per,
        max_reads.map_or("-".to_string(), |r| format!("{r:.0}")),
    );
}

fn main() {
    // moto's credentials, through the standard chain (environment) like the controller.
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        let status = std::process::Command::new(std::env::current_exe().expect("own path"))
            .args(std::env::args_os().skip(1))
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .status()
            .expect("re-run with moto's credentials");
        std::process::exit(status.code().unwrap_or(1));
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = std::env::temp_dir().join(format!("berth-aws-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let moto = moto::Moto::start(&dir.join("moto.log"));
    let setup = moto.ctl(&["setup", CLUSTER, "4"]);
    let nodes = moto::instances(&setup);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut cfg = AwsProviderConfig::new("us-east-1");
    cfg.endpoint = Some(moto.endpoint.clone());
    cfg.concurrency = 16;
    // The unthrottled phases count calls and time moto itself: no budget pacing (AWS's
    // default 10 ELBv2 calls per second would make the 200-Service phase measure the bucket).
    cfg.elb_rate = 10_000.0;
    cfg.elb_burst = 10_000;
    cfg.ec2_rate = 10_000.0;
    cfg.ec2_burst = 10_000;
    let config = move || cfg.clone();
    let provider = Arc::new(AwsProvider::new(config()).expect("provider"));
    let ports = [(80, Protocol::Tcp, 30080), (53, Protocol::Udp, 30053)];
    let three = &nodes[..3];
    println!("aws provider against moto ({}): ELBv2 calls", moto.endpoint);
    rt.block_on(async {
        // Create one Service (2 ports, 3 nodes).
        let before = provider.elb_calls();
        let lb0 = desired(0, &ports, three);
        let st = provider.ensure(&lb0).await.expect("ensure");
        assert!(st.ingress[0].hostname.is_some());
        let (t, w, ops) = delta(&before, &provider.elb_calls());
        // CreateLoadBalancer, 2 × CreateTargetGroup, 2 × RegisterTargets, 2 × CreateListener.
        report("create (2 ports, 3 nodes)", 1.0, t, w, 7.0, None, &ops);

        // Converge 200 Services, 16 at a time (the controller's default workers).
        let started = Instant::now();
        let before = provider.elb_calls();
        let results: Vec<_> = futures::stream::iter(1..200)
            .map(|i| {
                let p = provider.clone();
                let lb = desired(i, &ports, three);
                async move { p.ensure(&lb).await }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let elapsed = started.elapsed();
        assert!(results.iter().all(Result::is_ok), "{:?}", results.iter().find(|r| r.is_err()));
        let (t, w, _) = delta(&before, &provider.elb_calls());
        println!(
            "converge 200 Services: {:.1} s ({:.0} ms per Service, 16 at once); {} calls, {} writes",
            elapsed.as_secs_f64() + 0.0,
            elapsed.as_secs_f64() * 1000.0 / 199.0,
            t,
            w
        );

        // Nothing changed: reads only.
        let before = provider.elb_calls();
        provider.ensure(&lb0).await.expect("ensure");
        let (t, w, ops) = delta(&before, &provider.elb_calls());
        report("re-ensure, nothing changed", 1.0, t, w, 0.0, Some(2.0), &ops);

        // The same by a provider that knows nothing yet (a restarted controller, or the
        // drift resync): everything is read.
        let fresh = Arc::new(AwsProvider::new(config()).expect("provider"));
        fresh.ensure(&lb0).await.expect("ensure");
        let (t, w, ops) = delta(&BTreeMap::new(), &fresh.elb_calls());
        report("re-ensure, full read (resync)", 1.0, t, w, 0.0, None, &ops);

        // A node added: 100 Services.
        let before = provider.elb_calls();
        let started = Instant::now();
        let results: Vec<_> = futures::stream::iter(0..100)
            .map(|i| {
                let p = provider.clone();
                let lb = desired(i, &ports, &nodes);
                async move { p.ensure(&lb).await }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        assert!(results.iter().all(Result::is_ok));
        let (t, w, ops) = delta(&before, &provider.elb_calls());
        // One RegisterTargets per target group.
        report("node added (per Service, of 100)", 100.0, t, w, 2.0, Some(2.0), &ops);
        println!(
            "  node added across 100 Services: {:.2} s",
            started.elapsed().as_secs_f64()
        );

        // A port change: 53/UDP → 8443/TCP.
        let before = provider.elb_calls();
        let changed = desired(0, &[(80, Protocol::Tcp, 30080), (8443, Protocol::Tcp, 30443)], &nodes);
        provider.ensure(&changed).await.expect("ensure");
        let (t, w, ops) = delta(&before, &provider.elb_calls());
        // CreateTargetGroup, RegisterTargets, DeleteListener, CreateListener, DeleteTargetGroup.
        report("port change (1 of 2 ports)", 1.0, t, w, 5.0, None, &ops);

        // Delete.
        let before = provider.elb_calls();
        provider.delete(&changed.reference()).await.expect("delete");
        let (t, w, ops) = delta(&before, &provider.elb_calls());
        // DeleteLoadBalancer, 2 × DeleteTargetGroup.
        report("delete (2 target groups)", 1.0, t, w, 3.0, None, &ops);

        // Garbage collection listing: everything tagged for the cluster.
        let before = provider.elb_calls();
        let started = Instant::now();
        let owned = provider.list_owned(CLUSTER).await.expect("list_owned");
        let (t, _, ops) = delta(&before, &provider.elb_calls());
        println!(
            "list_owned: {} load balancers in {:.2} s, {t} calls [{ops}]",
            owned.len(),
            started.elapsed().as_secs_f64()
        );

        // Throttled: 100 new Services through a proxy answering 30% of the calls with AWS's
        // throttling errors, paced by AWS's documented per-account ELBv2 rate (10/s, burst
        // 40), with a fresh provider (its own budget).
        let proxy = throttle_proxy::ThrottleProxy::start(&moto.endpoint, 0.3, 14);
        let mut cfg = AwsProviderConfig::new("us-east-1");
        cfg.endpoint = Some(proxy.endpoint());
        cfg.concurrency = 16;
        let throttled = Arc::new(AwsProvider::new(cfg).expect("provider"));
        let started = Instant::now();
        let results: Vec<_> = futures::stream::iter(1000..1100)
            .map(|i| {
                let p = throttled.clone();
                let lb = desired(i, &ports, three);
                async move {
                    // A failed ensure is retried, as the controller would.
                    let mut tries = 0;
                    loop {
                        tries += 1;
                        match p.ensure(&lb).await {
                            Ok(s) => return Ok::<_, String>((s, tries)),
                            Err(e) if tries < 5 => {
                                let _ = e;
                                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                            }
                            Err(e) => return Err(e.to_string()),
                        }
                    }
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let elapsed = started.elapsed();
        assert!(results.iter().all(Result::is_ok), "{:?}", results.iter().find(|r| r.is_err()));
        let retried = results.iter().filter(|r| matches!(r, Ok((_, t)) if *t > 1)).count();
        let total = proxy.total();
        let elb: u64 = proxy
            .counts()
            .iter()
            // Everything but the EC2 Query calls (subnets, security groups, instances),
            // which have a budget of their own.
            .filter(|(a, _)| {
                !matches!(
                    a.as_str(),
                    "DescribeSubnets"
                        | "DescribeSecurityGroups"
                        | "DescribeInstances"
                        | "CreateSecurityGroup"
                        | "DeleteSecurityGroup"
                        | "AuthorizeSecurityGroupIngress"
                        | "RevokeSecurityGroupIngress"
                        | "CreateTags"
                        | "DeleteTags"
                )
            })
            .map(|(_, c)| c.forwarded + c.throttled)
            .sum();
        println!(
            "throttled 30%: 100 Services in {:.1} s; {} calls ({} reached moto, {} throttled), {} ensures retried after failing; ELBv2 budget floor {:.1} s ({elb} calls, 40 at once then 10 per s)",
            elapsed.as_secs_f64(),
            total.forwarded + total.throttled,
            total.forwarded,
            total.throttled,
            retried,
            elb.saturating_sub(40) as f64 / 10.0
        );
    });
    drop(moto);
    let _ = std::fs::remove_dir_all(&dir);
}
