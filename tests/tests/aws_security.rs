//! End to end against moto: security groups from source ranges, TLS listeners with ACM
//! certificates, and removal of additional tags. Cloud state is read with boto3
//! (`tests/aws/moto_ctl.py`), never with berth's code.

#[path = "aws/moto.rs"]
mod moto;
#[path = "aws/world.rs"]
mod world;

use berth_tests::wait_for;
use moto::State;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;
use world::{DEADLINE, World, service, strs};

const SOURCE_RANGES: &str = "service.beta.kubernetes.io/load-balancer-source-ranges";
const SECURITY_GROUPS: &str = "service.beta.kubernetes.io/aws-load-balancer-security-groups";
const SSL_CERT: &str = "service.beta.kubernetes.io/aws-load-balancer-ssl-cert";
const SSL_PORTS: &str = "service.beta.kubernetes.io/aws-load-balancer-ssl-ports";
const SSL_POLICY: &str = "service.beta.kubernetes.io/aws-load-balancer-ssl-negotiation-policy";
const ALPN: &str = "service.beta.kubernetes.io/aws-load-balancer-alpn-policy";
const EXTRA_TAGS: &str = "service.beta.kubernetes.io/aws-load-balancer-additional-resource-tags";

/// Every security group, as boto3 reads it.
fn groups(w: &World) -> Vec<Value> {
    w.moto
        .ctl(&["groups"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The ingress rules of the nodes' group (moto's default group of the VPC), if it exists.
fn node_rules(w: &World, gs: &[Value]) -> Option<BTreeSet<String>> {
    gs.iter()
        .find(|g| g["vpc"] == w.vpc.as_str() && g["name"] == "default")
        .map(|g| strs(&g["ingress"]))
}

fn tagged<'a>(gs: &'a [Value], key: &str, value: &str) -> Vec<&'a Value> {
    gs.iter().filter(|g| g["tags"][key] == value).collect()
}

/// The ingress rules `proto:port-port:source` for each (protocol, port) and source.
fn rules(ports: &[(&str, u16)], sources: &[&str]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (proto, port) in ports {
        for s in sources {
            out.insert(format!("{proto}:{port}-{port}:{s}"));
        }
    }
    out
}

/// The Service's one NLB and its frontend group (ids), once its frontend group has exactly
/// `want` as ingress rules and the NLB carries that group and the cluster's backend group.
fn check_groups(w: &World, uid: &str, want: &BTreeSet<String>) -> Result<(Value, String), String> {
    let st = w.moto.state();
    let lbs = st.lbs_of(uid);
    let [lb] = lbs.as_slice() else {
        return Err(format!("{} load balancers", lbs.len()));
    };
    let gs = groups(w);
    let mine: Vec<&Value> = tagged(&gs, "berth.io/service-uid", uid)
        .into_iter()
        .filter(|g| g["tags"]["berth.io/resource"] == "security-group")
        .collect();
    let [mine] = mine.as_slice() else {
        return Err(format!("{} frontend groups", mine.len()));
    };
    let got = strs(&mine["ingress"]);
    if got != *want {
        return Err(format!("frontend rules {got:?}, want {want:?}"));
    }
    let backend = tagged(&gs, "berth.io/resource", "backend-security-group");
    let [backend] = backend.as_slice() else {
        return Err(format!("{} backend groups", backend.len()));
    };
    let attached = strs(&lb["securityGroups"]);
    let expected: BTreeSet<String> = [
        mine["id"].as_str().unwrap().to_string(),
        backend["id"].as_str().unwrap().to_string(),
    ]
    .into();
    if attached != expected {
        return Err(format!("NLB has groups {attached:?}, want {expected:?}"));
    }
    Ok(((*lb).clone(), mine["id"].as_str().unwrap().to_string()))
}

fn wait_groups(w: &World, what: &str, uid: &str, want: &BTreeSet<String>) -> (Value, String) {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        match check_groups(w, uid, want) {
            Ok(v) => return v,
            Err(e) => assert!(
                std::time::Instant::now() < deadline,
                "{what}: not reached in {DEADLINE:?}: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn with_ranges(name: &str, ranges: Option<Value>, annotations: Value) -> Value {
    let mut s = service(
        name,
        json!([{"name": "http", "port": 80, "protocol": "TCP"},
               {"name": "dns", "port": 53, "protocol": "UDP"}]),
        annotations,
        false,
    );
    if let Some(r) = ranges {
        s["spec"]["loadBalancerSourceRanges"] = r;
    }
    s
}

#[test]
fn aws_source_ranges_become_security_group_rules() {
    let w = World::start("aws-sg", 2);
    w.cloud.apply(&[w.node(0, false), w.node(1, false)]);
    let foreign = w.moto.ctl(&["foreign-group", &w.vpc]);
    let foreign_id = foreign["id"].as_str().unwrap().to_string();
    let foreign_before = groups(&w)
        .into_iter()
        .find(|g| g["id"] == foreign_id.as_str())
        .unwrap();
    let mut berth = w.berth("sg");

    // 1. Two ranges: the listener ports from each, nothing else; the NLB carries the group.
    w.cloud.apply(&[with_ranges(
        "web",
        Some(json!(["10.0.0.0/8", "192.168.0.0/16"])),
        json!({}),
    )]);
    let uid = w.uid("web");
    let ports = [("tcp", 80), ("udp", 53)];
    let (lb, frontend) = wait_groups(
        &w,
        "web's security group",
        &uid,
        &rules(&ports, &["10.0.0.0/8", "192.168.0.0/16"]),
    );
    let gs = groups(&w);
    let g = gs.iter().find(|g| g["id"] == frontend.as_str()).unwrap();
    assert_eq!(g["vpc"], w.vpc.as_str());
    assert_eq!(g["tags"]["berth.io/cluster"], "test");
    assert_eq!(g["tags"]["berth.io/service-name"], "web");
    // The nodes' group (moto's default group of the instances) lets the backend group in.
    let backend = tagged(&gs, "berth.io/resource", "backend-security-group")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let have = node_rules(&w, &gs).expect("the VPC's default group");
    for proto in ["tcp", "udp"] {
        let want = format!("{proto}:0-65535:{backend}");
        assert!(have.contains(&want), "{want} not in {have:?}");
    }

    // 2. Ranges changed (by the annotation now): rules follow, the same group and NLB.
    w.cloud.kubectl_ok(&[
        "patch",
        "service",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/spec/loadBalancerSourceRanges"}]"#,
    ]);
    w.cloud.kubectl_ok(&[
        "annotate",
        "service",
        "web",
        &format!("{SOURCE_RANGES}=172.16.0.0/12"),
    ]);
    let (lb2, frontend2) = wait_groups(
        &w,
        "web's ranges changed",
        &uid,
        &rules(&ports, &["172.16.0.0/12"]),
    );
    assert_eq!(
        (lb2["arn"].clone(), frontend2.clone()),
        (lb["arn"].clone(), frontend.clone())
    );

    // 3. No ranges: the listener ports from everywhere.
    w.cloud
        .kubectl_ok(&["annotate", "service", "web", &format!("{SOURCE_RANGES}-")]);
    wait_groups(
        &w,
        "web open to everyone",
        &uid,
        &rules(&ports, &["0.0.0.0/0"]),
    );

    // 4. The user's own group: attached as is (never edited), berth's frontend group goes.
    w.cloud.apply(&[with_ranges(
        "mine",
        None,
        json!({SECURITY_GROUPS: "not-berths-sg"}),
    )]);
    let mine_uid = w.uid("mine");
    w.converge("mine carries the user's group", |st: &State| {
        let lbs = st.lbs_of(&mine_uid);
        let lb = lbs.first().ok_or("no NLB")?;
        let want: BTreeSet<String> = [foreign_id.clone(), backend.clone()].into();
        (strs(&lb["securityGroups"]) == want)
            .then_some(())
            .ok_or(format!("groups {}", lb["securityGroups"]))
    });
    let gs = groups(&w);
    assert!(
        tagged(&gs, "berth.io/service-uid", &mine_uid).is_empty(),
        "no group of berth's for a Service naming its own"
    );

    // 5. Deleted with the Service, after its NLB. moto does not refuse to delete a group
    // an NLB still uses (AWS does), so the order is checked in berth's log instead.
    w.cloud
        .kubectl_ok(&["delete", "service", "web", "--wait=false"]);
    wait_for("web's group deleted", DEADLINE, || {
        let gone = !groups(&w).iter().any(|g| g["id"] == frontend.as_str());
        let st = w.moto.state();
        (gone && st.lbs_of(&uid).is_empty()).then_some(())
    });
    let log = berth.output();
    let lb_deleted = log
        .find(&format!(
            "Deleted load balancer arn={}",
            lb["arn"].as_str().unwrap()
        ))
        .or_else(|| log.find("Deleted load balancer"))
        .expect("NLB deletion logged");
    let sg_deleted = log
        .find(&format!("Deleted security group group={frontend}"))
        .expect("group deletion logged");
    assert!(lb_deleted < sg_deleted, "the group went before its NLB");

    // 6. A Service deleted while berth was down: its group is garbage-collected.
    w.cloud
        .apply(&[with_ranges("gone", Some(json!(["10.1.0.0/16"])), json!({}))]);
    let gone_uid = w.uid("gone");
    wait_groups(
        &w,
        "gone's group",
        &gone_uid,
        &rules(&ports, &["10.1.0.0/16"]),
    );
    berth.stop(Duration::from_secs(10));
    w.cloud.kubectl_ok(&[
        "patch",
        "service",
        "gone",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    w.cloud.kubectl_ok(&["delete", "service", "gone"]);
    let mut berth = w.berth("sg-gc");
    wait_for("gone's group collected", DEADLINE, || {
        let gs = groups(&w);
        (tagged(&gs, "berth.io/service-uid", &gone_uid).is_empty()
            && w.moto.state().count_of(&gone_uid) == 0)
            .then_some(())
    });

    // 7. The cluster's last NLB gone: its backend group goes too, after the node rules
    // that name it (AWS refuses to delete a group other groups' rules refer to).
    w.cloud
        .kubectl_ok(&["delete", "service", "mine", "--wait=false"]);
    wait_for(
        "the backend group deleted with the last NLB",
        DEADLINE,
        || {
            let gs = groups(&w);
            (tagged(&gs, "berth.io/resource", "backend-security-group").is_empty()
                && w.moto.state().lbs().is_empty())
            .then_some(gs)
        },
    );
    let left = node_rules(&w, &groups(&w)).unwrap_or_default();
    assert!(
        !left.iter().any(|r| r.ends_with(backend.as_str())),
        "node rules still name the deleted group: {left:?}"
    );
    assert!(
        berth
            .output()
            .contains("Deleted the cluster's backend security group")
    );

    // 8. A new Service after that: a new backend group, and the nodes admit it again (the
    // controller did not keep believing they do).
    w.cloud.apply(&[with_ranges(
        "again",
        Some(json!(["10.2.0.0/16"])),
        json!({}),
    )]);
    let again_uid = w.uid("again");
    wait_groups(
        &w,
        "again's groups",
        &again_uid,
        &rules(&ports, &["10.2.0.0/16"]),
    );
    wait_for("the nodes admit the new backend group", DEADLINE, || {
        let gs = groups(&w);
        let new = tagged(&gs, "berth.io/resource", "backend-security-group").first()?["id"]
            .as_str()?
            .to_string();
        let have = node_rules(&w, &gs).unwrap_or_default();
        (new != backend
            && ["tcp", "udp"]
                .iter()
                .all(|p| have.contains(&format!("{p}:0-65535:{new}"))))
        .then_some(())
    });

    // The foreign group, though tagged with berth's cluster, is exactly as it was.
    let foreign_after = groups(&w)
        .into_iter()
        .find(|g| g["id"] == foreign_id.as_str())
        .expect("foreign group deleted");
    assert_eq!(foreign_after, foreign_before);
    berth.stop(Duration::from_secs(10));
}

/// The listener on `port` of the Service's one NLB.
fn listener(st: &State, uid: &str, port: u16) -> Result<Value, String> {
    let lbs = st.lbs_of(uid);
    let lb = lbs.first().ok_or("no NLB")?;
    lb["listeners"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["port"] == port).cloned())
        .ok_or(format!("no listener on {port}"))
}

#[test]
fn aws_tls_listeners_and_removed_tags() {
    let w = World::start("aws-tls", 1);
    w.cloud.apply(&[w.node(0, false)]);
    let cert_a = w.moto.ctl(&["import-cert", "a.example.com"])["arn"]
        .as_str()
        .unwrap()
        .to_string();
    let cert_b = w.moto.ctl(&["import-cert", "b.example.com"])["arn"]
        .as_str()
        .unwrap()
        .to_string();
    let mut berth = w.berth("tls");
    let policy = "ELBSecurityPolicy-TLS13-1-2-2021-06";
    w.cloud.apply(&[service(
        "shop",
        json!([{"name": "https", "port": 443, "protocol": "TCP"},
               {"name": "http", "port": 80, "protocol": "TCP"},
               {"name": "dns", "port": 53, "protocol": "UDP"}]),
        json!({SSL_CERT: cert_a, SSL_PORTS: "https", SSL_POLICY: policy, ALPN: "HTTP2Preferred",
               EXTRA_TAGS: "team=web,cost=42"}),
        false,
    )]);
    let uid = w.uid("shop");

    // 1. TLS on the chosen port with the certificate; TCP and UDP elsewhere.
    let st = w.converge("shop's TLS listener", |st| {
        let l = listener(st, &uid, 443)?;
        (l["protocol"] == "TLS" && l["certificates"] == json!([cert_a.clone()]))
            .then_some(())
            .ok_or(format!("{l}"))?;
        let plain = listener(st, &uid, 80)?;
        (plain["protocol"] == "TCP")
            .then_some(())
            .ok_or(format!("{plain}"))?;
        let dns = listener(st, &uid, 53)?;
        (dns["protocol"] == "UDP")
            .then_some(())
            .ok_or(format!("{dns}"))
    });
    let tls = listener(&st, &uid, 443).unwrap();
    assert_eq!(tls["sslPolicy"], policy);
    assert_eq!(tls["alpn"], json!(["HTTP2Preferred"]));
    assert_eq!(listener(&st, &uid, 80).unwrap()["certificates"], json!([]));
    // Tags on every resource, the frontend security group included.
    let lb_arn = st.lbs_of(&uid)[0]["arn"].as_str().unwrap().to_string();
    let gs = groups(&w);
    let group = json!({"tags": tagged(&gs, "berth.io/service-uid", &uid)[0]["tags"].clone()});
    for t in st
        .lbs_of(&uid)
        .iter()
        .chain(st.tgs_of(&uid).iter())
        .chain([&group])
    {
        assert_eq!(
            (t["tags"]["team"].as_str(), t["tags"]["cost"].as_str()),
            (Some("web"), Some("42"))
        );
    }

    // 2. Another certificate: the same listener, modified in place. moto applies
    // ModifyListener's certificates only to HTTPS listeners (it ignores them on TLS ones and
    // refuses TLS as a new protocol), so the call berth sent is checked in its log.
    w.cloud.kubectl_ok(&[
        "annotate",
        "--overwrite",
        "service",
        "shop",
        &format!("{SSL_CERT}={cert_b}"),
    ]);
    let modify_443 = format!(
        "Modifying listener port=443 protocol=TLS certificate={cert_b} listener={}",
        tls["arn"].as_str().unwrap()
    );
    wait_for("ModifyListener with the new certificate", DEADLINE, || {
        berth.output().contains(&modify_443).then_some(())
    });
    let st = w.moto.state();
    assert_eq!(
        listener(&st, &uid, 443).unwrap()["arn"],
        tls["arn"],
        "the same listener"
    );
    assert_eq!(st.lbs_of(&uid)[0]["listeners"].as_array().unwrap().len(), 3);

    // 4. A tag leaves the annotation: gone everywhere; then all of them, while a tag
    // someone else put on the NLB stays. (moto refuses an eleventh tag on a resource, so
    // the foreign tag comes once berth's tags are fewer.)
    w.cloud.kubectl_ok(&[
        "annotate",
        "--overwrite",
        "service",
        "shop",
        &format!("{EXTRA_TAGS}=team=web"),
    ]);
    let group_tags = || {
        let gs = groups(&w);
        let mine = tagged(&gs, "berth.io/service-uid", &uid);
        assert_eq!(mine.len(), 1, "shop's frontend group");
        mine[0]["tags"].clone()
    };
    w.converge("cost tag removed", |st| {
        let g = json!({"tags": group_tags()});
        for t in st
            .lbs_of(&uid)
            .iter()
            .chain(st.tgs_of(&uid).iter())
            .chain([&g])
        {
            if t["tags"].get("cost").is_some() || t["tags"]["team"] != "web" {
                return Err(format!("{}", t["tags"]));
            }
        }
        Ok(())
    });
    w.moto.ctl(&["tag", &lb_arn, "owner", "ops"]);
    w.cloud
        .kubectl_ok(&["annotate", "service", "shop", &format!("{EXTRA_TAGS}-")]);
    let st = w.converge("every extra tag removed", |st| {
        let g = json!({"tags": group_tags()});
        for t in st
            .lbs_of(&uid)
            .iter()
            .chain(st.tgs_of(&uid).iter())
            .chain([&g])
        {
            let tags = t["tags"].as_object().ok_or("no tags")?;
            if tags
                .keys()
                .any(|k| k == "team" || k.starts_with("berth.io/extra-tags"))
            {
                return Err(format!("{}", t["tags"]));
            }
        }
        Ok(())
    });
    assert_eq!(
        st.lbs_of(&uid)[0]["tags"]["owner"],
        "ops",
        "someone else's tag stays"
    );
    assert_eq!(st.lbs_of(&uid)[0]["tags"]["berth.io/cluster"], "test");

    // 5. No port list: every TCP port terminates TLS; port 80's listener is modified in
    // place to TLS (the call moto refuses, see above), 53/UDP stays as it is.
    w.cloud
        .kubectl_ok(&["annotate", "service", "shop", &format!("{SSL_PORTS}-")]);
    let port_80 = listener(&st, &uid, 80).unwrap();
    let modify_80 = format!(
        "Modifying listener port=80 protocol=TLS certificate={cert_b} listener={}",
        port_80["arn"].as_str().unwrap()
    );
    wait_for("ModifyListener of port 80 to TLS", DEADLINE, || {
        berth.output().contains(&modify_80).then_some(())
    });
    assert!(
        !berth.output().contains("Modifying listener port=53"),
        "the UDP listener is left alone"
    );
    berth.stop(Duration::from_secs(10));
}
