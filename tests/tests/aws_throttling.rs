//! End to end under throttling: `berth controller --provider aws` talks to moto through
//! [`ThrottleProxy`], which answers 30% of the calls with AWS's own throttling errors
//! (ELBv2 `Throttling`, EC2 `RequestLimitExceeded`). 200 Services created at once must all
//! converge with exactly one NLB and one target group each (read back with boto3), the
//! calls moto saw must stay within bounds, and berth's /metrics must account for every
//! throttled answer the proxy gave.

#[path = "aws/moto.rs"]
#[allow(dead_code)]
mod moto;

use berth_tests::throttle_proxy::ThrottleProxy;
use berth_tests::{Cloud, Proc, binary, http, wait_for};
use moto::Moto;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

const CLUSTER: &str = "test";
const CLASS: &str = "berth.io/aws";
const SERVICES: usize = 200;
const DEADLINE: Duration = Duration::from_secs(420);

fn node(i: usize, id: &str, zone: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": format!("node-{i}"), "labels": {"topology.kubernetes.io/zone": zone}},
        "spec": {"providerID": format!("aws:///{zone}/{id}")}
    })
}

fn service(i: usize) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": format!("svc-{i}"), "namespace": "default", "labels": {"test": "throttle"}},
        "spec": {
            "type": "LoadBalancer",
            "loadBalancerClass": CLASS,
            "selector": {"app": format!("svc-{i}")},
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
        }
    })
}

/// Sum of the samples of `family` whose labels contain every one of `labels`.
fn metric_sum(text: &str, family: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
        .sum()
}

fn berth(cloud: &Cloud, endpoint: &str) -> (Proc, String) {
    let mut cmd = Command::new(binary("berth"));
    cmd.arg("controller")
        .arg("--kubeconfig")
        .arg(&cloud.kubeconfig)
        .args(["--provider", "aws", "--aws-region", "us-east-1"])
        .args(["--aws-endpoint", endpoint])
        // moto answers far faster than AWS's 10 calls per second; a budget above the
        // proxy's pace keeps the test short while every call still goes through it.
        .args(["--aws-elb-rate", "200", "--aws-elb-burst", "200"])
        .args(["--cluster-name", CLUSTER, "--identity", "throttled"])
        .args(["--metrics-listen", "127.0.0.1:0", "--leader-elect", "false"])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info,kube_runtime=warn,kube_client=warn");
    let mut proc = Proc::spawn(
        "berth[throttled]",
        cmd,
        cloud.dir.join("berth-throttled.log"),
    );
    let line = proc.wait_for_line("Serving /metrics", Duration::from_secs(30));
    let admin = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("address="))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    (proc, admin)
}

#[test]
fn aws_200_services_converge_under_30_percent_throttling_without_duplicates() {
    let cloud = Cloud::start("aws-throttle");
    let moto = Moto::start(&cloud.dir.join("moto.log"));
    let setup = moto.ctl(&["setup", CLUSTER, "3"]);
    let instances = moto::instances(&setup);
    let proxy = ThrottleProxy::start(&moto.endpoint, 0.3, 14);
    cloud.apply(
        &instances
            .iter()
            .enumerate()
            .map(|(i, (id, zone))| node(i, id, zone))
            .collect::<Vec<_>>(),
    );
    let (_berth, admin) = berth(&cloud, &proxy.endpoint());

    let started = Instant::now();
    cloud.apply(&(0..SERVICES).map(service).collect::<Vec<_>>());
    let mut last = 0;
    wait_for("every Service's hostname", DEADLINE, || {
        let ready = cloud
            .list("services", "test=throttle")
            .ok()?
            .iter()
            .filter(|s| s["status"]["loadBalancer"]["ingress"][0]["hostname"].is_string())
            .count();
        last = ready;
        (ready == SERVICES).then_some(())
    });
    let took = started.elapsed();
    assert_eq!(last, SERVICES);

    // boto3's view: one NLB and one target group per Service, each forwarding to the 3
    // instances; nothing else tagged for the cluster.
    let st = moto.state();
    let mut per_uid: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for lb in st.lbs() {
        assert_eq!(lb["tags"]["berth.io/cluster"], CLUSTER, "{lb}");
        per_uid
            .entry(lb["tags"]["berth.io/service-uid"].as_str().unwrap().into())
            .or_default()
            .0 += 1;
        assert_eq!(lb["listeners"].as_array().map(Vec::len), Some(1), "{lb}");
    }
    for tg in st.tgs() {
        per_uid
            .entry(tg["tags"]["berth.io/service-uid"].as_str().unwrap().into())
            .or_default()
            .1 += 1;
        assert_eq!(tg["targets"].as_array().map(Vec::len), Some(3), "{tg}");
    }
    assert_eq!(per_uid.len(), SERVICES, "Services with resources");
    let dup: Vec<_> = per_uid.iter().filter(|(_, n)| **n != (1, 1)).collect();
    assert!(dup.is_empty(), "duplicates or missing: {dup:?}");

    // The calls moto saw: every create exactly once per Service (a throttled create never
    // reached moto, and berth does not retry what moto answered, except moto's own
    // server errors, which a client must retry); all calls bounded.
    let counts = proxy.counts();
    let forwarded = |a: &str| counts.get(a).map_or(0, |c| c.forwarded - c.server_errors);
    for create in ["CreateLoadBalancer", "CreateTargetGroup", "CreateListener"] {
        assert_eq!(forwarded(create), SERVICES as u64, "{create}: {counts:?}");
    }
    // One frontend group per Service and one backend group for the cluster: workers that
    // start together do not race to create the backend group.
    assert_eq!(
        forwarded("CreateSecurityGroup"),
        SERVICES as u64 + 1,
        "CreateSecurityGroup: {counts:?}"
    );
    let total = proxy.total();
    let share = total.throttled as f64 / (total.throttled + total.forwarded) as f64;
    assert!((0.25..0.35).contains(&share), "throttled share {share}");
    // Creating one costs 9 calls (DescribeLoadBalancers, DescribeSubnets, 3 creates,
    // RegisterTargets, and its security group: DescribeSecurityGroups, CreateSecurityGroup,
    // AuthorizeSecurityGroupIngress), plus the cluster's backend group once; a re-ensure
    // after a failed attempt costs reads.
    assert!(
        total.forwarded <= 10 * SERVICES as u64,
        "{} calls reached moto for {SERVICES} Services: {counts:?}",
        total.forwarded
    );
    println!(
        "{SERVICES} Services under 30% throttling: converged in {:.1} s; {} calls to moto, {} throttled; {counts:?}",
        took.as_secs_f64(),
        total.forwarded,
        total.throttled
    );

    // berth's metrics account for every answer the proxy gave, throttled or not: no
    // retries hidden in the SDK.
    wait_for(
        "berth's request metrics to match the proxy's counts",
        Duration::from_secs(60),
        || {
            let (code, text) = http(&admin, "GET", "/metrics", None).ok()?;
            if code != 200 {
                return None;
            }
            let total = proxy.total();
            let family = "berth_provider_requests_total";
            let throttled = metric_sum(
                &text,
                family,
                &["provider=\"aws\"", "outcome=\"throttled\""],
            );
            let all = metric_sum(&text, family, &["provider=\"aws\""]);
            let backoffs = metric_sum(&text, "berth_provider_waits_total", &["reason=\"backoff\""]);
            (throttled == total.throttled as f64
                && all == (total.throttled + total.forwarded) as f64
                && backoffs > 0.0)
                .then_some(())
        },
    );
}
