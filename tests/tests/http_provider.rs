//! End-to-end tests of `berth controller --provider http` against `mock-cloud serve`: real
//! processes, the real kubectl, real TCP/UDP traffic to the load balancers' VIPs.
//!
//! Every test starts its own mock-cloud (its own 127.X block, ports picked by the kernel), so
//! the tests run in parallel.

use berth_tests::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

fn set<const N: usize>(names: [&str; N]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A Service is untouched by berth: no finalizer, no status, no condition, no events.
fn untouched(cloud: &Cloud, name: &str) -> Result<(), String> {
    let svc = cloud
        .try_get("service", name)?
        .ok_or_else(|| format!("Service {name} disappeared"))?;
    if !finalizers(&svc).is_empty() {
        return Err(format!("{name} got finalizers {:?}", finalizers(&svc)));
    }
    if svc.pointer("/status/loadBalancer/ingress/0").is_some() {
        return Err(format!("{name} got an address: {}", svc["status"]));
    }
    if condition(&svc).is_some() {
        return Err(format!("{name} got berth's condition: {}", svc["status"]));
    }
    let reasons = cloud.event_reasons(name);
    if !reasons.is_empty() {
        return Err(format!("{name} got events {reasons:?}"));
    }
    if cloud.lb_for(name).is_some() {
        return Err(format!("{name} got a load balancer"));
    }
    Ok(())
}

/// Test 1: The basics a user sees on a LoadBalancer Service.
#[test]
fn load_balancer_service_gets_address_condition_events_finalizer_and_traffic() {
    let cloud = Cloud::start("basic");
    let _berth = Controller::start(&cloud, "e2e-basic", "berth-basic", &["--default-class"]);
    cloud.apply(&[
        pod("web-1", "web", None),
        pod("web-2", "web", None),
        lb_service("web", "web"),
    ]);

    // `kubectl wait` on berth's condition works.
    cloud.kubectl_ok(&[
        "wait",
        "--for=condition=berth.io/LoadBalancerReady",
        "svc/web",
        "--timeout=30s",
    ]);
    let svc = cloud.service("web").expect("Service web");
    let ingress = svc["status"]["loadBalancer"]["ingress"]
        .as_array()
        .expect("status.loadBalancer.ingress");
    assert_eq!(ingress.len(), 1, "one ingress entry: {ingress:?}");
    let ip = ingress_ip(&svc).expect("an ingress ip");
    assert_eq!(
        ip.octets()[..3],
        [127, cloud.ip_block, 200],
        "the VIP comes from mock-cloud's load balancer range"
    );
    assert_eq!(ingress[0]["ipMode"], "Proxy");
    assert_eq!(
        ingress[0]["ports"],
        json!([{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}])
    );
    let cond = condition(&svc).expect("berth's condition");
    assert_eq!(cond["status"], "True", "{cond}");
    assert_eq!(cond["reason"], "Ensured", "{cond}");
    assert!(
        finalizers(&svc).contains(&FINALIZER.to_string()),
        "finalizer present: {:?}",
        finalizers(&svc)
    );

    // The upstream event reasons.
    let reasons = wait_for("Ensuring/Ensured events", DEADLINE, || {
        let r = cloud.event_reasons("web");
        (r.contains(&"EnsuringLoadBalancer".to_string())
            && r.contains(&"EnsuredLoadBalancer".to_string()))
        .then_some(r)
    });
    for e in cloud.events("web") {
        assert_eq!(e["type"], "Normal", "no warnings for a good Service: {e}");
    }
    println!("events on svc/web: {reasons:?}");

    // The load balancer as the LB API sees it: both listeners, every node.
    let lb = cloud.lb_for("web").expect("a load balancer for web");
    assert_eq!(lb["status"]["addresses"][0]["ip"], ip.to_string());
    assert_eq!(lb_targets(&lb), strings(&["node-1", "node-2", "node-3"]));
    let mut listeners: Vec<(u64, String)> = lb["spec"]["listeners"]
        .as_array()
        .expect("listeners")
        .iter()
        .map(|l| {
            (
                l["port"].as_u64().unwrap_or(0),
                l["protocol"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    listeners.sort();
    assert_eq!(listeners, [(53, "UDP".into()), (80, "TCP".into())]);

    // Real traffic, over TCP and UDP, answered by the pods.
    let pods = set(["web-1", "web-2"]);
    let tcp = wait_answer(Proto::Tcp, ip, 80);
    assert!(pods.contains(&tcp), "TCP answer {tcp:?}");
    let udp = wait_answer(Proto::Udp, ip, 53);
    assert!(pods.contains(&udp), "UDP answer {udp:?}");
    // Once both pods are ready every answer comes from one of them.
    cloud.wait_pod_ready("web-1");
    cloud.wait_pod_ready("web-2");
    for a in sample(Proto::Tcp, ip, 80, 10) {
        assert!(
            a.as_ref().is_some_and(|a| pods.contains(a)),
            "TCP answer {a:?}"
        );
    }
    println!("svc/web: {ip} answers over TCP ({tcp}) and UDP ({udp})");
}

/// Test 2: Node changes: targets follow eligibility; one write per load balancer per change.
#[test]
fn node_changes_update_targets_with_exactly_one_write_per_load_balancer() {
    let cloud = Cloud::start("nodes");
    let _berth = Controller::start(&cloud, "e2e-nodes", "berth-nodes", &["--default-class"]);
    let internal = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "internal"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    });
    cloud.apply(&[
        pod("web-1", "web", Some("node-1")),
        lb_service("web-a", "web"),
        tcp_service("web-b", "web", 8080),
        internal,
    ]);
    let ip_a = cloud.wait_address("web-a");
    let ip_b = cloud.wait_address("web-b");
    let a = cloud.wait_lb_for("web-a");
    let b = cloud.wait_lb_for("web-b");
    let three = strings(&["node-1", "node-2", "node-3"]);
    let targets = |id: &str| cloud.lb(id).map(|l| lb_targets(&l)).unwrap_or_default();
    assert_eq!(targets(&a), three);
    assert_eq!(targets(&b), three);
    assert_eq!(wait_answer(Proto::Tcp, ip_a, 80), "web-1");
    assert_eq!(wait_answer(Proto::Tcp, ip_b, 8080), "web-1");

    let mut expected = (cloud.lb_writes(&a), cloud.lb_writes(&b));
    assert_eq!(expected, (1, 1), "one write each to create them");
    let mut step = |what: &str, change: &dyn Fn(), want: &[&str]| {
        // Any late extra write from the previous step shows up here.
        let now = (cloud.lb_writes(&a), cloud.lb_writes(&b));
        assert_eq!(now, expected, "writes (web-a, web-b) before {what}");
        change();
        let want = strings(want);
        wait_for(
            &format!("targets {want:?} on both load balancers after {what}"),
            DEADLINE,
            || (targets(&a) == want && targets(&b) == want).then_some(()),
        );
        expected = (expected.0 + 1, expected.1 + 1);
        let now = (cloud.lb_writes(&a), cloud.lb_writes(&b));
        assert_eq!(
            now, expected,
            "exactly one write per load balancer for {what}"
        );
        // Traffic still flows.
        assert_eq!(wait_answer(Proto::Tcp, ip_a, 80), "web-1", "after {what}");
        assert_eq!(wait_answer(Proto::Tcp, ip_b, 8080), "web-1", "after {what}");
        println!("{what}: targets {want:?}, writes {now:?}");
    };

    step(
        "adding node-4",
        &|| {
            cloud.apply(&[
                json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-4"}}),
            ]);
        },
        &["node-1", "node-2", "node-3", "node-4"],
    );
    // node-4 really carries traffic: the LB's health checks through its kube-proxy pass.
    wait_for("node-4 healthy behind web-a", DEADLINE, || {
        let lb = cloud.lb(&a)?;
        lb_healthy_targets(&lb)
            .contains(&"node-4".to_string())
            .then_some(())
    });
    step(
        "labelling node-4 exclude-from-external-load-balancers",
        &|| {
            cloud.kubectl_ok(&[
                "label",
                "node",
                "node-4",
                "node.kubernetes.io/exclude-from-external-load-balancers=true",
            ]);
        },
        &["node-1", "node-2", "node-3"],
    );

    // A label that cannot change eligibility: no write at all.
    let before = cloud.lb_stats()["writes"].as_u64().unwrap_or(0);
    cloud.kubectl_ok(&["label", "node", "node-1", "foo=bar"]);
    holds_for(
        "no write after an irrelevant label",
        Duration::from_secs(5),
        || {
            let w = cloud.lb_stats()["writes"].as_u64().unwrap_or(0);
            if w == before {
                Ok(())
            } else {
                Err(format!(
                    "{} writes after labelling node-1 foo=bar",
                    w - before
                ))
            }
        },
    );

    step(
        "removing the exclude label",
        &|| {
            cloud.kubectl_ok(&[
                "label",
                "node",
                "node-4",
                "node.kubernetes.io/exclude-from-external-load-balancers-",
            ]);
        },
        &["node-1", "node-2", "node-3", "node-4"],
    );
    step(
        "tainting node-2 ToBeDeletedByClusterAutoscaler",
        &|| {
            cloud.kubectl_ok(&[
                "taint",
                "node",
                "node-2",
                "ToBeDeletedByClusterAutoscaler=1700000000:NoSchedule",
            ]);
        },
        &["node-1", "node-3", "node-4"],
    );
    step(
        "deleting node-4",
        &|| {
            cloud.kubectl_ok(&["delete", "node", "node-4"]);
        },
        &["node-1", "node-3"],
    );

    // The ClusterIP Service never got a load balancer.
    assert_eq!(
        cloud.lbs().len(),
        2,
        "one load balancer per LoadBalancer Service"
    );
    let internal = cloud.service("internal").expect("internal");
    assert!(finalizers(&internal).is_empty());
}

/// Test 3: externalTrafficPolicy: Local — only nodes with a local endpoint get traffic.
#[test]
fn external_traffic_policy_local_sends_traffic_only_to_nodes_with_pods() {
    let cloud = Cloud::start("local");
    let _berth = Controller::start(&cloud, "e2e-local", "berth-local", &["--default-class"]);
    let mut svc = lb_service("local", "local");
    svc["spec"]["externalTrafficPolicy"] = json!("Local");
    svc["metadata"]["annotations"] = json!({
        "berth.io/health-check-interval-seconds": "1",
        "berth.io/health-check-timeout-seconds": "1",
    });
    cloud.apply(&[pod("local-1", "local", Some("node-1")), svc]);
    let ip = cloud.wait_address("local");
    let id = cloud.wait_lb_for("local");
    let s = cloud.service("local").expect("svc");
    let hc_port = s["spec"]["healthCheckNodePort"]
        .as_u64()
        .expect("healthCheckNodePort allocated");
    let lb = cloud.lb(&id).expect("lb");
    let hc = &lb["spec"]["healthCheck"];
    assert_eq!(hc["protocol"], "HTTP", "{hc}");
    assert_eq!(hc["path"], "/healthz", "{hc}");
    assert_eq!(hc["port"].as_u64(), Some(hc_port), "{hc}");
    assert_eq!(lb_targets(&lb), strings(&["node-1", "node-2", "node-3"]));

    let healthy = |want: &[&str]| {
        let want = strings(want);
        wait_for(&format!("healthy targets {want:?}"), DEADLINE, || {
            (lb_healthy_targets(&cloud.lb(&id)?) == want).then_some(())
        });
    };
    healthy(&["node-1"]);
    let all_from = |pod: &str| {
        wait_for(
            &format!("every answer to come from {pod}"),
            DEADLINE,
            || {
                let tcp = sample(Proto::Tcp, ip, 80, 10);
                let udp = sample(Proto::Udp, ip, 53, 5);
                tcp.iter()
                    .chain(udp.iter())
                    .all(|a| a.as_deref() == Some(pod))
                    .then_some(())
            },
        );
    };
    all_from("local-1");

    // Move the pod: node-1 loses its endpoint, node-2 gains one.
    cloud.kubectl_ok(&["delete", "pod", "local-1"]);
    cloud.apply(&[pod("local-2", "local", Some("node-2"))]);
    let moved = Instant::now();
    healthy(&["node-2"]);
    all_from("local-2");
    println!(
        "ETP=Local: answers moved from node-1 to node-2 in {:.1}s",
        moved.elapsed().as_secs_f64()
    );
    // Targets never changed (health checks decide), so no write beyond the first.
    assert_eq!(cloud.lb_writes(&id), 1);
}

/// Test 4: Changing ports, changing the type away from LoadBalancer, deleting the Service.
#[test]
fn port_changes_type_changes_and_deletion_update_or_remove_the_load_balancer() {
    let cloud = Cloud::start("changes");
    let _berth = Controller::start(&cloud, "e2e-changes", "berth-changes", &["--default-class"]);
    cloud.apply(&[pod("web-1", "web", None), tcp_service("web", "web", 80)]);
    let ip = cloud.wait_address("web");
    let id = cloud.wait_lb_for("web");
    assert_eq!(wait_answer(Proto::Tcp, ip, 80), "web-1");

    // New port: the listener moves.
    cloud.apply(&[tcp_service("web", "web", 8081)]);
    wait_for("port 8081 to answer and port 80 to stop", DEADLINE, || {
        (ask_tcp(ip, 8081).as_deref() == Some("web-1") && ask_tcp(ip, 80).is_none()).then_some(())
    });
    let svc = wait_for("status ports to follow", DEADLINE, || {
        let s = cloud.service("web")?;
        (s["status"]["loadBalancer"]["ingress"][0]["ports"]
            == json!([{"port": 8081, "protocol": "TCP"}]))
        .then_some(s)
    });
    assert_eq!(ingress_ip(&svc), Some(ip), "the address is kept");
    let lb = cloud.lb(&id).expect("same load balancer");
    assert_eq!(lb["spec"]["listeners"].as_array().map(Vec::len), Some(1));
    assert_eq!(lb["spec"]["listeners"][0]["port"], 8081);

    // type: ClusterIP → the load balancer goes, status and finalizer are cleared.
    let mut cluster_ip = tcp_service("web", "web", 8081);
    cluster_ip["spec"]["type"] = json!("ClusterIP");
    cloud.apply(&[cluster_ip]);
    let svc = wait_for("berth to let go of web", DEADLINE, || {
        let s = cloud.service("web")?;
        (finalizers(&s).is_empty() && cloud.lb(&id).is_none()).then_some(s)
    });
    assert!(
        svc.pointer("/status/loadBalancer/ingress/0").is_none(),
        "status cleared: {}",
        svc["status"]
    );
    assert!(
        condition(&svc).is_none(),
        "condition removed: {}",
        svc["status"]
    );
    assert!(cloud.lbs().is_empty(), "LB list empty");
    wait_for("the VIP to stop answering", DEADLINE, || {
        ask_tcp(ip, 8081).is_none().then_some(())
    });
    let reasons = cloud.event_reasons("web");
    for r in ["DeletingLoadBalancer", "DeletedLoadBalancer"] {
        assert!(reasons.contains(&r.to_string()), "{r} in {reasons:?}");
    }

    // Deleting a Service deletes its load balancer, and the Service goes away.
    cloud.apply(&[tcp_service("gone", "web", 80)]);
    let gone_ip = cloud.wait_address("gone");
    let gone = cloud.wait_lb_for("gone");
    assert_eq!(wait_answer(Proto::Tcp, gone_ip, 80), "web-1");
    cloud.kubectl_ok(&["delete", "service", "gone", "--timeout=30s"]);
    wait_for("Service gone to be NotFound", DEADLINE, || {
        cloud.service("gone").is_none().then_some(())
    });
    assert!(cloud.lb(&gone).is_none(), "its load balancer is deleted");
    assert!(cloud.lbs().is_empty());
}

/// Test 5: Classes: another class is never touched; no class only with --default-class.
#[test]
fn other_classes_are_never_touched_and_no_class_needs_default_class() {
    let cloud = Cloud::start("classes");
    let mut berth = Controller::start(&cloud, "e2e-classes", "berth-classes-1", &[]);
    let mut mine = tcp_service("mine", "web", 80);
    mine["spec"]["loadBalancerClass"] = json!("berth.io/http");
    let mut other = tcp_service("other", "web", 80);
    other["spec"]["loadBalancerClass"] = json!("example.com/other");
    let plain = tcp_service("plain", "web", 80);
    cloud.apply(&[pod("web-1", "web", None), mine, other, plain]);

    let ip = cloud.wait_address("mine");
    assert_eq!(wait_answer(Proto::Tcp, ip, 80), "web-1");
    holds_for(
        "without --default-class, other and plain stay untouched",
        Duration::from_secs(5),
        || {
            untouched(&cloud, "other")?;
            untouched(&cloud, "plain")
        },
    );
    assert_eq!(cloud.lbs().len(), 1);

    // Restart with --default-class: the class-less Service is served, the other class still not.
    assert!(berth.stop().success(), "clean shutdown on SIGTERM");
    let _berth = Controller::start(
        &cloud,
        "e2e-classes",
        "berth-classes-2",
        &["--default-class"],
    );
    let plain_ip = cloud.wait_address("plain");
    assert_eq!(wait_answer(Proto::Tcp, plain_ip, 80), "web-1");
    let svc = cloud.service("plain").expect("plain");
    assert!(finalizers(&svc).contains(&FINALIZER.to_string()));
    holds_for(
        "with --default-class, other stays untouched",
        Duration::from_secs(5),
        || untouched(&cloud, "other"),
    );
    assert_eq!(cloud.lbs().len(), 2);
}

/// Test 6: Bad input: a Warning naming the field, no load balancer, condition False, and no hot
/// loop over a full minute.
#[test]
fn bad_input_is_reported_once_without_a_load_balancer_or_a_hot_loop() {
    let cloud = Cloud::start("invalid");
    // No leader election here, so the API server's write count is berth's Service work only
    // (lease renewals would add one write per retry period).
    let _berth = Controller::start(
        &cloud,
        "e2e-invalid",
        "berth-invalid",
        &["--default-class", "--leader-elect", "false"],
    );
    let mut interval = tcp_service("bad-interval", "web", 80);
    interval["metadata"]["annotations"] =
        json!({"berth.io/health-check-interval-seconds": "often"});
    let mut sctp = tcp_service("bad-sctp", "web", 80);
    sctp["spec"]["ports"][0]["protocol"] = json!("SCTP");
    let mut protocol = tcp_service("bad-hc-protocol", "web", 80);
    protocol["metadata"]["annotations"] = json!({"berth.io/health-check-protocol": "ICMP"});
    cloud.apply(&[
        pod("web-1", "web", None),
        interval,
        sctp,
        protocol,
        tcp_service("good", "web", 80),
    ]);

    // A source range that is not a CIDR never reaches berth: the API server rejects it, as
    // kube-apiserver does, naming the field.
    let mut ranges = tcp_service("bad-ranges", "web", 80);
    ranges["metadata"]["annotations"] =
        json!({"service.beta.kubernetes.io/load-balancer-source-ranges": "10.0.0.0/8,nope"});
    let f = cloud.manifest(&[ranges]);
    let err = cloud
        .try_kubectl(&["apply", "-f", &f])
        .expect_err("the API server rejects a source range that is not a CIDR");
    assert!(
        err.contains("load-balancer-source-ranges") && err.contains("nope"),
        "the rejection names the field and value: {err}"
    );
    assert!(cloud.service("bad-ranges").is_none());
    let good_ip = cloud.wait_address("good");
    assert_eq!(wait_answer(Proto::Tcp, good_ip, 80), "web-1");

    let cases = [
        ("bad-interval", "berth.io/health-check-interval-seconds"),
        ("bad-sctp", "SCTP"),
        ("bad-hc-protocol", "berth.io/health-check-protocol"),
    ];
    for (name, field) in cases {
        let warning = wait_for(&format!("a Warning event on {name}"), DEADLINE, || {
            cloud
                .events(name)
                .into_iter()
                .find(|e| e["type"] == "Warning")
        });
        let msg = warning["message"].as_str().unwrap_or_default();
        assert_eq!(warning["reason"], "SyncLoadBalancerFailed", "{warning}");
        assert!(
            msg.contains(field),
            "{name}: the warning names {field}: {msg}"
        );
        let cond = wait_for(&format!("condition False on {name}"), DEADLINE, || {
            condition(&cloud.service(name)?).filter(|c| c["status"] == "False")
        });
        assert_eq!(cond["reason"], "InvalidConfiguration", "{cond}");
        let svc = cloud.service(name).expect("svc");
        assert!(svc.pointer("/status/loadBalancer/ingress/0").is_none());
        assert!(cloud.lb_for(name).is_none(), "no load balancer for {name}");
        println!("{name}: {msg}");
    }
    assert_eq!(
        cloud.lbs().len(),
        1,
        "only the good Service has a load balancer"
    );

    // One minute of observation: berth must not spin on the broken Services.
    let api0 = cloud.api_stats();
    let lb0 = cloud.lb_stats();
    let events0: usize = cases.iter().map(|(n, _)| cloud.events(n).len()).sum();
    let window = Duration::from_secs(60);
    holds_for(
        "bad Services stay without load balancers",
        window,
        || match cases.iter().find(|(n, _)| cloud.lb_for(n).is_some()) {
            Some((n, _)) => Err(format!("{n} got a load balancer")),
            None => Ok(()),
        },
    );
    let api1 = cloud.api_stats();
    let lb1 = cloud.lb_stats();
    let events1: usize = cases.iter().map(|(n, _)| cloud.events(n).len()).sum();
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    let api_writes = n(&api1, "writes") - n(&api0, "writes");
    let lb_writes = n(&lb1, "writes") - n(&lb0, "writes");
    let lb_puts = n(&lb1, "puts") - n(&lb0, "puts");
    println!(
        "hot-loop window {window:?}: API server writes {api_writes}, LB API writes {lb_writes} (puts {lb_puts}), events {events0} → {events1}"
    );
    assert!(
        api_writes <= 10,
        "API server writes over {window:?}: {api_writes} (verbs before {} after {})",
        api0["verbs"],
        api1["verbs"]
    );
    assert_eq!(
        lb_writes, 0,
        "no load balancer writes while nothing changes"
    );
    assert_eq!(lb_puts, 0, "no PUTs at all while nothing changes");
    assert_eq!(events0, events1, "no repeated events");
}
