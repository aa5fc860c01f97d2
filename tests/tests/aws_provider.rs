//! End to end: `berth controller --provider aws` against moto in server mode, with
//! mock-cloud's API server holding Nodes whose providerIDs name moto's EC2 instances. Cloud
//! state is read back with boto3 (`tests/aws/moto_ctl.py`), not with berth's code.

#[path = "aws/moto.rs"]
mod moto;
#[path = "aws/world.rs"]
mod world;

use berth_tests::{Proc, wait_for};
use moto::State;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;
use world::{CLUSTER, DEADLINE, World, node_ports, service, strs};

/// Checks the Service's NLB: one load balancer, listeners and target groups exactly as
/// `want` (port, ELBv2 protocol, NodePort), each group holding `targets` at its NodePort.
fn check_nlb(
    st: &State,
    uid: &str,
    want: &[(u16, &str, u16)],
    targets: &BTreeSet<String>,
) -> Result<(), String> {
    let lbs = st.lbs_of(uid);
    if lbs.len() != 1 {
        return Err(format!("{} load balancers for {uid}", lbs.len()));
    }
    let lb = &lbs[0];
    if lb["type"] != "network" {
        return Err(format!("type {}", lb["type"]));
    }
    let tgs = st.tgs_of(uid);
    if tgs.len() != want.len() {
        return Err(format!("{} target groups, want {}", tgs.len(), want.len()));
    }
    let listeners = lb["listeners"].as_array().cloned().unwrap_or_default();
    if listeners.len() != want.len() {
        return Err(format!(
            "{} listeners, want {}",
            listeners.len(),
            want.len()
        ));
    }
    for (port, proto, np) in want {
        let l = listeners
            .iter()
            .find(|l| l["port"] == *port)
            .ok_or(format!("no listener on {port}"))?;
        if l["protocol"] != *proto {
            return Err(format!("listener {port} is {}", l["protocol"]));
        }
        let tg = tgs
            .iter()
            .find(|t| t["arn"] == l["targetGroup"])
            .ok_or(format!("listener {port} forwards to an unknown group"))?;
        if tg["protocol"] != *proto || tg["port"] != *np {
            return Err(format!(
                "group for {port}: {} {}",
                tg["protocol"], tg["port"]
            ));
        }
        let want_targets: BTreeSet<String> = targets.iter().map(|t| format!("{t}:{np}")).collect();
        let got = strs(&tg["targets"]);
        if got != want_targets {
            return Err(format!(
                "group for {port} targets {got:?}, want {want_targets:?}"
            ));
        }
        for key in [
            "berth.io/cluster",
            "berth.io/service-namespace",
            "berth.io/service-name",
            "berth.io/version",
        ] {
            if tg["tags"][key].as_str().is_none_or(str::is_empty) {
                return Err(format!("group for {port} lacks tag {key}"));
            }
        }
        if tg["tags"]["berth.io/resource"] != "target-group" {
            return Err("target group resource tag".into());
        }
    }
    if lb["tags"]["berth.io/resource"] != "load-balancer"
        || lb["tags"]["berth.io/cluster"] != CLUSTER
    {
        return Err(format!("load balancer tags {}", lb["tags"]));
    }
    Ok(())
}

/// SIGKILLs `p` as soon as its log shows `needle` (or after `timeout`).
fn kill_when(p: &mut Proc, needle: &str, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    while !p.output().contains(needle) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    p.kill();
}

fn hostname(svc: &Value) -> Option<String> {
    svc["status"]["loadBalancer"]["ingress"][0]["hostname"]
        .as_str()
        .map(str::to_string)
}

/// Everything but the targets: which ARNs exist and how listeners point.
fn skeleton(st: &State, uid: &str) -> Value {
    let mut tgs: Vec<Value> = st
        .tgs_of(uid)
        .iter()
        .map(|t| json!([t["arn"], t["healthCheck"], t["protocol"], t["port"]]))
        .collect();
    tgs.sort_by_key(|v| v.to_string());
    json!({"lbs": st.lbs_of(uid), "tgs": tgs})
}

#[test]
fn aws_nlb_follows_service_ports_nodes_and_health_checks() {
    let w = World::start("aws-life", 4);
    let ids: Vec<String> = w.instances.iter().map(|(i, _)| i.clone()).collect();
    w.cloud
        .apply(&[w.node(0, false), w.node(1, false), w.node(2, true)]);
    let mut berth = w.berth("life");

    // 1. 80/TCP and 53/UDP: one NLB, two listeners and groups, eligible nodes registered.
    w.cloud.apply(&[service(
        "web",
        json!([{"name": "http", "port": 80, "protocol": "TCP"},
               {"name": "dns", "port": 53, "protocol": "UDP"}]),
        json!({}),
        false,
    )]);
    let uid = w.uid("web");
    let svc = w.cloud.service("web").unwrap();
    let np = node_ports(&svc);
    let (np80, np53) = (np[0].2, np[1].2);
    let eligible: BTreeSet<String> = [ids[0].clone(), ids[1].clone()].into();
    let st = w.converge("web's NLB", |st| {
        check_nlb(st, &uid, &[(80, "TCP", np80), (53, "UDP", np53)], &eligible)
    });
    let lb = &st.lbs_of(&uid)[0];
    assert_eq!(lb["scheme"], "internal");
    assert_eq!(strs(&lb["subnets"]), w.subnets.iter().cloned().collect());
    for tg in st.tgs_of(&uid) {
        assert_eq!(tg["healthCheck"]["protocol"], "TCP");
        assert_eq!(tg["healthCheck"]["port"], "traffic-port");
        assert!(tg["name"].as_str().unwrap().len() <= 32);
    }
    let dns = lb["dns"].as_str().unwrap().to_string();
    wait_for("web's hostname", DEADLINE, || {
        w.cloud
            .service("web")
            .and_then(|s| hostname(&s))
            .filter(|h| *h == dns)
    });

    // TCP and UDP on one port: one TCP_UDP listener and group. The NodePort is in the range's
    // static band (below 30086), which random allocation never hands out, so web's ports
    // cannot already hold it.
    w.cloud.apply(&[service(
        "dns",
        json!([{"name": "dns-tcp", "port": 53, "protocol": "TCP", "nodePort": 30053},
               {"name": "dns-udp", "port": 53, "protocol": "UDP", "nodePort": 30053}]),
        json!({"service.beta.kubernetes.io/aws-load-balancer-scheme": "internet-facing"}),
        false,
    )]);
    let dns_uid = w.uid("dns");
    let st = w.converge("dns's TCP_UDP NLB", |st| {
        check_nlb(st, &dns_uid, &[(53, "TCP_UDP", 30053)], &eligible)
    });
    assert_eq!(st.lbs_of(&dns_uid)[0]["scheme"], "internet-facing");

    // 2. ETP=Local: HTTP /healthz on healthCheckNodePort; annotations override.
    w.cloud.apply(&[service(
        "local",
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}]),
        json!({}),
        true,
    )]);
    let local_uid = w.uid("local");
    let local = w.cloud.service("local").unwrap();
    let hc_port = local["spec"]["healthCheckNodePort"].as_u64().unwrap();
    let np_local = node_ports(&local)[0].2;
    let st = w.converge("local's NLB", |st| {
        check_nlb(st, &local_uid, &[(8080, "TCP", np_local)], &eligible)
    });
    let hc = &st.tgs_of(&local_uid)[0]["healthCheck"];
    assert_eq!(hc["protocol"], "HTTP");
    assert_eq!(hc["port"], hc_port.to_string());
    assert_eq!(hc["path"], "/healthz");
    w.cloud.kubectl_ok(&[
        "annotate",
        "--overwrite",
        "service",
        "local",
        "service.beta.kubernetes.io/aws-load-balancer-healthcheck-path=/ready",
        "service.beta.kubernetes.io/aws-load-balancer-healthcheck-interval=30",
        "service.beta.kubernetes.io/aws-load-balancer-healthcheck-timeout=10",
        "service.beta.kubernetes.io/aws-load-balancer-healthcheck-healthy-threshold=3",
        "service.beta.kubernetes.io/aws-load-balancer-healthcheck-unhealthy-threshold=4",
    ]);
    w.converge("local's health check overridden", |st| {
        let hc = &st.tgs_of(&local_uid).first().ok_or("no group")?["healthCheck"].clone();
        let want = json!({"protocol": "HTTP", "port": hc_port.to_string(), "path": "/ready",
                          "interval": 30, "timeout": 10, "healthy": 3, "unhealthy": 4});
        (*hc == want).then_some(()).ok_or(format!("{hc}"))
    });

    // Attributes set after create, then changed: AWS holds what the annotations say.
    let attrs = |st: &State| -> Result<(Value, Value), String> {
        let lb = st.lbs_of(&local_uid).first().ok_or("no NLB")?["arn"].clone();
        let tg = st.tgs_of(&local_uid).first().ok_or("no group")?["arn"].clone();
        let (lb, tg) = (
            lb.as_str().unwrap_or_default(),
            tg.as_str().unwrap_or_default(),
        );
        let got = w.moto.ctl(&["attributes", lb, tg]);
        Ok((got[lb].clone(), got[tg].clone()))
    };
    for (cross_zone, delay, preserve) in [("true", "120", "false"), ("false", "30", "true")] {
        w.cloud.kubectl_ok(&[
            "annotate",
            "--overwrite",
            "service",
            "local",
            &format!("service.beta.kubernetes.io/aws-load-balancer-attributes=load_balancing.cross_zone.enabled={cross_zone}"),
            &format!("service.beta.kubernetes.io/aws-load-balancer-target-group-attributes=deregistration_delay.timeout_seconds={delay},preserve_client_ip.enabled={preserve}"),
        ]);
        w.converge(
            &format!("local's attributes: cross zone {cross_zone}, delay {delay}"),
            |st| {
                let (lb, tg) = attrs(st)?;
                (lb["load_balancing.cross_zone.enabled"] == cross_zone
                    && tg["deregistration_delay.timeout_seconds"] == delay
                    && tg["preserve_client_ip.enabled"] == preserve)
                    .then_some(())
                    .ok_or(format!("load balancer {lb}, target group {tg}"))
            },
        );
    }

    // 3. Nodes: add, exclude, delete → targets follow; nothing else changes.
    let before = w.moto.state();
    let web_skeleton = skeleton(&before, &uid);
    w.cloud.apply(&[w.node(3, false)]);
    let with_3: BTreeSet<String> = [ids[0].clone(), ids[1].clone(), ids[3].clone()].into();
    w.converge("node-3 registered", |st| {
        check_nlb(st, &uid, &[(80, "TCP", np80), (53, "UDP", np53)], &with_3)
    });
    w.cloud.apply(&[w.node(0, true)]);
    w.cloud.kubectl_ok(&["delete", "node", "node-1"]);
    let only_3: BTreeSet<String> = [ids[3].clone()].into();
    let st = w.converge("node-0 excluded, node-1 deleted", |st| {
        check_nlb(st, &uid, &[(80, "TCP", np80), (53, "UDP", np53)], &only_3)
    });
    assert_eq!(skeleton(&st, &uid), web_skeleton, "only targets may change");

    // 4. Ports change: listeners and groups follow, the old ones go.
    w.cloud.apply(&[service(
        "web",
        json!([{"name": "http", "port": 80, "protocol": "TCP", "nodePort": np80},
               {"name": "alt", "port": 8443, "protocol": "TCP"}]),
        json!({}),
        false,
    )]);
    let svc = w.cloud.service("web").unwrap();
    let np8443 = node_ports(&svc)[1].2;
    let lb_arn = before.lbs_of(&uid)[0]["arn"].clone();
    let st = w.converge("web's ports changed", |st| {
        check_nlb(
            st,
            &uid,
            &[(80, "TCP", np80), (8443, "TCP", np8443)],
            &only_3,
        )
    });
    assert_eq!(st.lbs_of(&uid)[0]["arn"], lb_arn, "the NLB stays");

    // 6. Delete: nothing with the Service's tags remains.
    w.cloud
        .kubectl_ok(&["delete", "service", "web", "--wait=false"]);
    w.converge("web's resources deleted", |st| {
        (st.count_of(&uid) == 0)
            .then_some(())
            .ok_or("still there".into())
    });
    wait_for("web gone from the API", DEADLINE, || {
        w.cloud.service("web").is_none().then_some(())
    });
    berth.stop(Duration::from_secs(10));
}

#[test]
fn aws_restarts_and_crashes_leave_exactly_one_nlb_and_gc_spares_foreign_resources() {
    let w = World::start("aws-crash", 2);
    let ids: BTreeSet<String> = w.instances.iter().map(|(i, _)| i.clone()).collect();
    w.cloud.apply(&[w.node(0, false), w.node(1, false)]);
    let foreign = w.moto.ctl(&["foreign", &w.subnets[0], &w.vpc]);
    let names: Vec<String> = (0..12).map(|i| format!("svc-{i}")).collect();
    let services: Vec<Value> = names
        .iter()
        .map(|n| {
            service(
                n,
                json!([{"name": "a", "port": 80, "protocol": "TCP"},
                       {"name": "b", "port": 81, "protocol": "UDP"}]),
                json!({}),
                false,
            )
        })
        .collect();
    w.cloud.apply(&services);
    // SIGKILL mid-create, several times, at different points: as soon as the log shows
    // the first load balancer, target group, targets or listeners being written.
    for (i, needle) in [
        "Created load balancer",
        "Created target group",
        "Updated targets",
        "Updated listeners",
    ]
    .into_iter()
    .enumerate()
    {
        let mut b = w.berth(&format!("crash-{i}"));
        kill_when(&mut b, needle, Duration::from_secs(20));
    }
    // A clean restart in between, then the one that converges.
    let mut b = w.berth("clean-1");
    std::thread::sleep(Duration::from_secs(2));
    b.stop(Duration::from_secs(10));
    let mut berth = w.berth("final");
    let uids: Vec<String> = names.iter().map(|n| w.uid(n)).collect();
    let st = w.converge("every Service has its NLB", |st| {
        for (n, uid) in names.iter().zip(&uids) {
            let svc = w.cloud.service(n).ok_or("service gone")?;
            let np = node_ports(&svc);
            check_nlb(st, uid, &[(80, "TCP", np[0].2), (81, "UDP", np[1].2)], &ids)
                .map_err(|e| format!("{n}: {e}"))?;
        }
        Ok(())
    });
    // Exactly one NLB per Service, none left over by the crashes, nothing untagged.
    let berth_lbs: Vec<Value> = st
        .lbs()
        .into_iter()
        .filter(|l| l["tags"]["berth.io/cluster"] == CLUSTER)
        .collect();
    assert_eq!(berth_lbs.len(), names.len(), "{berth_lbs:?}");
    let tagged_tgs = st
        .tgs()
        .into_iter()
        .filter(|t| t["tags"]["berth.io/service-uid"].is_string())
        .count();
    assert_eq!(tagged_tgs, names.len() * 2);
    // Restarting again changes nothing.
    berth.stop(Duration::from_secs(10));
    let mut berth = w.berth("again");
    std::thread::sleep(Duration::from_secs(4));
    let again = w.moto.state();
    for uid in &uids {
        assert_eq!(skeleton(&again, uid), skeleton(&st, uid));
    }

    // 6. A Service that vanished while berth was down: its NLB is garbage-collected.
    berth.stop(Duration::from_secs(10));
    w.cloud.kubectl_ok(&[
        "patch",
        "service",
        "svc-0",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    w.cloud.kubectl_ok(&["delete", "service", "svc-0"]);
    let mut berth = w.berth("gc");
    w.converge("svc-0's orphaned NLB collected", |st| {
        (st.count_of(&uids[0]) == 0)
            .then_some(())
            .ok_or("still there".into())
    });
    // Resources without berth's full ownership tags are never touched.
    let st = w.moto.state();
    assert!(
        st.lbs().iter().any(|l| l["arn"] == foreign["lb"]),
        "foreign LB deleted"
    );
    assert!(
        st.tgs().iter().any(|t| t["arn"] == foreign["tg"]),
        "foreign TG deleted"
    );
    assert_eq!(st.lbs_of(&uids[1]).len(), 1, "live Services keep theirs");
    berth.stop(Duration::from_secs(10));
}

#[test]
fn aws_invalid_annotations_warn_and_write_nothing() {
    let w = World::start("aws-invalid", 1);
    w.cloud.apply(&[w.node(0, false)]);
    let mut berth = w.berth("invalid");
    let bad = [
        (
            "bad-scheme",
            "service.beta.kubernetes.io/aws-load-balancer-scheme",
            "public",
        ),
        (
            "bad-interval",
            "service.beta.kubernetes.io/aws-load-balancer-healthcheck-interval",
            "often",
        ),
        (
            "bad-tags",
            "service.beta.kubernetes.io/aws-load-balancer-additional-resource-tags",
            "team",
        ),
    ];
    for (name, key, value) in bad {
        w.cloud.apply(&[service(
            name,
            json!([{"name": "a", "port": 80, "protocol": "TCP"}]),
            json!({key: value}),
            false,
        )]);
    }
    for (name, key, _) in bad {
        let msg = wait_for(&format!("{name}'s Warning event"), DEADLINE, || {
            w.cloud.events(name).into_iter().find_map(|e| {
                (e["type"] == "Warning" && e["reason"] == "SyncLoadBalancerFailed")
                    .then(|| e["message"].as_str().unwrap_or("").to_string())
            })
        });
        assert!(msg.contains(key), "{msg}");
        assert!(msg.contains("accepted values"), "{msg}");
    }
    // A good Service proves the controller is working; the bad ones still have nothing.
    w.cloud.apply(&[service(
        "good",
        json!([{"name": "a", "port": 80, "protocol": "TCP"}]),
        json!({"service.beta.kubernetes.io/aws-load-balancer-additional-resource-tags": "team=web"}),
        false,
    )]);
    let good = w.uid("good");
    let st = w.converge("good's NLB", |st| {
        (st.lbs_of(&good).len() == 1)
            .then_some(())
            .ok_or("absent".into())
    });
    assert_eq!(st.lbs_of(&good)[0]["tags"]["team"], "web");
    assert_eq!(
        st.lbs().len(),
        1,
        "only the good Service's NLB: {:?}",
        st.lbs()
    );
    assert_eq!(st.tgs().len(), 1);
    // Fixing the annotation builds the load balancer.
    w.cloud.kubectl_ok(&[
        "annotate",
        "--overwrite",
        "service",
        "bad-scheme",
        "service.beta.kubernetes.io/aws-load-balancer-scheme=internet-facing",
    ]);
    let fixed = w.uid("bad-scheme");
    w.converge("bad-scheme fixed", |st| {
        (st.lbs_of(&fixed).len() == 1)
            .then_some(())
            .ok_or("absent".into())
    });
    berth.stop(Duration::from_secs(10));
}

#[test]
fn aws_unimplemented_annotations_warn_once_and_the_nlb_is_built() {
    use berth_tests::warnings::{UNSUPPORTED_ANNOTATION, annotation_warnings_once};
    let w = World::start("aws-annwarn", 1);
    w.cloud.apply(&[w.node(0, false)]);
    let mut berth = w.berth("annwarn");
    let line = berth.wait_for_line("Serving /metrics", DEADLINE);
    let admin = line
        .split_whitespace()
        .find_map(|t| t.strip_prefix("address="))
        .expect("the /metrics address")
        .to_string();
    let ignored: std::collections::BTreeMap<&str, &str> = [
        "service.beta.kubernetes.io/aws-load-balancer-proxy-protocol",
        "service.beta.kubernetes.io/aws-load-balancer-type",
        "berth.io/load-balancer-ips",
        "berth.io/address-pool",
        "metallb.io/loadBalancerIPs",
    ]
    .into_iter()
    .map(|k| (k, UNSUPPORTED_ANNOTATION))
    .collect();
    let mut ann = json!({
        "service.beta.kubernetes.io/aws-load-balancer-scheme": "internal",
        "berth.io/health-check-interval-seconds": "10",
    });
    for k in ignored.keys() {
        ann[*k] = json!(if k.contains("IP") || k.contains("ips") {
            "10.0.0.5"
        } else {
            "*"
        });
    }
    w.cloud.apply(&[service(
        "annotated",
        json!([{"name": "a", "port": 80, "protocol": "TCP"}]),
        ann,
        false,
    )]);
    let uid = w.uid("annotated");
    w.converge("the NLB despite the warnings", |st| {
        (st.lbs_of(&uid).len() == 1)
            .then_some(())
            .ok_or("absent".into())
    });
    berth_tests::warnings::wait_annotation_warnings(&w.cloud, "annotated", &ignored);
    berth_tests::warnings::wait_reconciles(&[admin.as_str()], 2);
    annotation_warnings_once(&w.cloud, "annotated", &ignored)
        .unwrap_or_else(|e| panic!("after resyncs: {e}"));
    berth.stop(Duration::from_secs(10));
}
