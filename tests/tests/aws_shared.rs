//! End to end: Services sharing one NLB through `berth.io/aws-load-balancer-group`, against
//! moto, read back with boto3 (`tests/aws/moto_ctl.py`), with berth SIGKILLed mid-way.

#[path = "aws/moto.rs"]
mod moto;
#[path = "aws/world.rs"]
mod world;

use berth_tests::{Proc, http, wait_for};
use moto::State;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use world::{CLUSTER, DEADLINE, World, node_ports, service, strs};

const GROUP_KEY: &str = "berth.io/aws-load-balancer-group";
const GROUP_TAG: &str = "berth.io/load-balancer-group";

/// SIGKILLs `p` as soon as its log shows `needle`; panics if it never does, so each kill
/// really lands mid-way.
fn kill_when(p: &mut Proc, needle: &str) {
    let deadline = std::time::Instant::now() + DEADLINE;
    while !p.output().contains(needle) {
        assert!(
            std::time::Instant::now() < deadline,
            "berth never logged {needle:?}:\n{}",
            p.output()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    p.kill();
}

fn member(name: &str, port: u16, extra: Value) -> Value {
    let mut ann = json!({GROUP_KEY: "edge"});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            ann[k] = v;
        }
    }
    service(
        name,
        json!([{"name": "p", "port": port, "protocol": "TCP"}]),
        ann,
        false,
    )
}

/// The cluster's load balancers of group `edge`.
fn shared(st: &State) -> Vec<Value> {
    st.lbs()
        .into_iter()
        .filter(|l| l["tags"]["berth.io/cluster"] == CLUSTER && l["tags"][GROUP_TAG] == "edge")
        .collect()
}

/// Target groups carrying this cluster's tag.
fn cluster_tgs(st: &State) -> Vec<Value> {
    st.tgs()
        .into_iter()
        .filter(|t| t["tags"]["berth.io/cluster"] == CLUSTER)
        .collect()
}

/// Exactly one shared NLB whose listeners are exactly `members` (Service name, uid, port,
/// NodePort), each forwarding to a target group of that Service holding `targets` at its
/// NodePort; no other target group of the cluster exists. Returns the NLB.
fn check_shared(
    st: &State,
    members: &[(&str, String, u16, u16)],
    targets: &BTreeSet<String>,
) -> Result<Value, String> {
    let lbs = shared(st);
    if lbs.len() != 1 {
        return Err(format!("{} shared load balancers", lbs.len()));
    }
    let lb = lbs[0].clone();
    if lb["tags"]["berth.io/service-uid"].is_string() {
        return Err("the shared NLB carries a Service's uid".into());
    }
    let listeners = lb["listeners"].as_array().cloned().unwrap_or_default();
    if listeners.len() != members.len() {
        return Err(format!(
            "{} listeners, want {}",
            listeners.len(),
            members.len()
        ));
    }
    let tgs = cluster_tgs(st);
    if tgs.len() != members.len() {
        return Err(format!(
            "{} target groups of the cluster, want {}: {:?}",
            tgs.len(),
            members.len(),
            tgs.iter().map(|t| &t["name"]).collect::<Vec<_>>()
        ));
    }
    for (name, uid, port, np) in members {
        let l = listeners
            .iter()
            .find(|l| l["port"] == *port)
            .ok_or(format!("no listener on {port}"))?;
        let tg = tgs
            .iter()
            .find(|t| t["arn"] == l["targetGroup"])
            .ok_or(format!("listener {port} forwards to an unknown group"))?;
        if tg["tags"]["berth.io/service-uid"] != uid.as_str()
            || tg["tags"]["berth.io/service-name"] != *name
            || tg["tags"][GROUP_TAG] != "edge"
        {
            return Err(format!(
                "listener {port}'s group is not {name}'s: {}",
                tg["tags"]
            ));
        }
        let want: BTreeSet<String> = targets.iter().map(|t| format!("{t}:{np}")).collect();
        if strs(&tg["targets"]) != want {
            return Err(format!(
                "{name}'s targets {:?}, want {want:?}",
                tg["targets"]
            ));
        }
    }
    Ok(lb)
}

/// The shared NLB's own security group (exactly one of the cluster) as (id, ingress rules
/// like `tcp:80-80:0.0.0.0/0`); Err when there is none or several.
fn group_sg(w: &World) -> Result<(String, BTreeSet<String>), String> {
    let found: Vec<Value> = w
        .moto
        .ctl(&["groups"])
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|g| g["tags"]["berth.io/cluster"] == CLUSTER && g["tags"][GROUP_TAG] == "edge")
        .collect();
    match found.as_slice() {
        [g] => Ok((
            g["id"].as_str().unwrap_or_default().to_string(),
            strs(&g["ingress"]),
        )),
        _ => Err(format!("{} security groups of the group", found.len())),
    }
}

/// The rules the shared NLB's group should hold: each port from its ranges.
fn rules(ports: &[(u16, &str)]) -> BTreeSet<String> {
    ports
        .iter()
        .map(|(p, from)| format!("tcp:{p}-{p}:{from}"))
        .collect()
}

fn hostname(w: &World, name: &str) -> Option<String> {
    w.cloud.service(name).and_then(|s| {
        s["status"]["loadBalancer"]["ingress"][0]["hostname"]
            .as_str()
            .map(str::to_string)
    })
}

/// The first Warning `SyncLoadBalancerFailed` event about `name`.
fn warning(w: &World, name: &str) -> String {
    wait_for(&format!("{name}'s Warning event"), DEADLINE, || {
        w.cloud.events(name).into_iter().find_map(|e| {
            (e["type"] == "Warning" && e["reason"] == "SyncLoadBalancerFailed")
                .then(|| e["message"].as_str().unwrap_or("").to_string())
        })
    })
}

/// berth's AWS calls so far by operation (`/metrics` at `admin`).
fn calls(admin: &str) -> BTreeMap<String, u64> {
    let (code, text) = http(admin, "GET", "/metrics", None).expect("/metrics");
    assert_eq!(code, 200);
    let mut out = BTreeMap::new();
    for l in text.lines().filter(|l| {
        l.starts_with("berth_provider_requests_total{") && l.contains("provider=\"aws\"")
    }) {
        let op = l
            .split("operation=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_default()
            .to_string();
        let n = l
            .rsplit_once(' ')
            .and_then(|(_, n)| n.trim().parse::<f64>().ok());
        *out.entry(op).or_default() += n.unwrap_or_default() as u64;
    }
    out
}

/// What `after` has more of than `before`, by operation.
fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or_default()))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// Waits until berth's call counts stop changing for two seconds; returns them.
fn settled(admin: &str) -> BTreeMap<String, u64> {
    let mut last = calls(admin);
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        std::thread::sleep(Duration::from_secs(2));
        let now = calls(admin);
        if now == last {
            return now;
        }
        assert!(std::time::Instant::now() < deadline, "berth never settled");
        last = now;
    }
}

fn is_read(op: &str) -> bool {
    op.contains("Describe")
}

#[test]
fn aws_group_members_share_one_nlb_through_crashes_clashes_and_leaving() {
    let w = World::start("aws-shared", 2);
    let ids: BTreeSet<String> = w.instances.iter().map(|(i, _)| i.clone()).collect();
    w.cloud.apply(&[w.node(0, false), w.node(1, false)]);

    // 1. Three members at once; berth SIGKILLed three times while it builds the shared NLB
    //    (right after creating it, a target group, a listener), then left to converge.
    let names = ["alpha", "beta", "gamma"];
    let ports = [80u16, 81, 82];
    // beta admits only 10.0.0.0/8 on its port.
    let mut members_json: Vec<Value> = names
        .iter()
        .zip(ports)
        .map(|(n, p)| member(n, p, json!({})))
        .collect();
    members_json[1]["spec"]["loadBalancerSourceRanges"] = json!(["10.0.0.0/8"]);
    w.cloud.apply(&members_json);
    for (i, needle) in [
        "Created shared load balancer",
        "Created target group",
        "Updated the Service's listeners on the shared load balancer",
    ]
    .into_iter()
    .enumerate()
    {
        let mut b = w.berth(&format!("crash-{i}"));
        kill_when(&mut b, needle);
    }
    let mut berth = w.berth("final");
    let uids: Vec<String> = names.iter().map(|n| w.uid(n)).collect();
    let members: Vec<(&str, String, u16, u16)> = names
        .iter()
        .zip(&uids)
        .zip(ports)
        .map(|((n, u), p)| {
            (
                *n,
                u.clone(),
                p,
                node_ports(&w.cloud.service(n).unwrap())[0].2,
            )
        })
        .collect();
    let st = w.converge("one shared NLB with three listeners", |st| {
        check_shared(st, &members, &ids).map(|_| ())
    });
    let lb = check_shared(&st, &members, &ids).unwrap();
    let (arn, dns) = (lb["arn"].clone(), lb["dns"].as_str().unwrap().to_string());
    assert_eq!(lb["scheme"], "internal");
    assert_eq!(st.lbs().len(), 1, "no other load balancer: {:?}", st.lbs());
    // Its own security group admits each member's port from that member's ranges; it and
    // the cluster's backend group are attached.
    let (sg, ingress) = group_sg(&w).unwrap();
    assert_eq!(
        ingress,
        rules(&[(80, "0.0.0.0/0"), (81, "10.0.0.0/8"), (82, "0.0.0.0/0")])
    );
    let attached = strs(&lb["securityGroups"]);
    assert!(
        attached.contains(&sg) && attached.len() == 2,
        "{attached:?}"
    );
    for n in names {
        wait_for(&format!("{n}'s hostname"), DEADLINE, || {
            hostname(&w, n).filter(|h| *h == dns)
        });
    }

    // 2. A port another member holds: a Warning naming both Services; nothing of the
    //    newcomer's in AWS, nothing else changed. Likewise a member asking for another
    //    scheme, and one naming security groups (they would replace every member's).
    w.cloud.apply(&[member("delta", 80, json!({}))]);
    let msg = warning(&w, "delta");
    assert!(
        msg.contains("default/delta") && msg.contains("default/alpha") && msg.contains("port 80"),
        "{msg}"
    );
    w.cloud.apply(&[member(
        "epsilon",
        90,
        json!({"service.beta.kubernetes.io/aws-load-balancer-scheme": "internet-facing"}),
    )]);
    let msg = warning(&w, "epsilon");
    assert!(
        msg.contains("aws-load-balancer-scheme") && msg.contains("internet-facing"),
        "{msg}"
    );
    w.cloud.apply(&[member(
        "zeta",
        91,
        json!({"service.beta.kubernetes.io/aws-load-balancer-security-groups": "sg-12345678"}),
    )]);
    let msg = warning(&w, "zeta");
    assert!(msg.contains("aws-load-balancer-security-groups"), "{msg}");
    let st = w.moto.state();
    let lb = check_shared(&st, &members, &ids).unwrap();
    assert_eq!(lb["arn"], arn, "the shared NLB stays");
    for n in ["delta", "epsilon", "zeta"] {
        let uid = w.uid(n);
        assert_eq!(st.count_of(&uid), 0, "{n} has resources");
        assert!(hostname(&w, n).is_none(), "{n} has a hostname");
    }
    assert_eq!(group_sg(&w).unwrap().1, ingress, "rules unchanged");
    // Refused members are looked at again with backoff (a port may free up); gone, they
    // leave nothing to count in the measurement below.
    for n in ["delta", "epsilon", "zeta"] {
        w.cloud
            .kubectl_ok(&["delete", "service", n, "--wait=false"]);
    }
    for n in ["delta", "epsilon", "zeta"] {
        wait_for(&format!("{n} gone from the API"), DEADLINE, || {
            w.cloud.service(n).is_none().then_some(())
        });
    }

    // 3. What one member costs: a berth with no resync or garbage collection in the way
    //    measures a fourth member joining and leaving.
    berth.stop(Duration::from_secs(10));
    let mut berth = w.berth_via("measure", &w.moto.endpoint, "600s", "600s");
    let admin = berth
        .wait_for_line("Serving /metrics", DEADLINE)
        .split_whitespace()
        .find_map(|t| t.strip_prefix("address="))
        .expect("the /metrics address")
        .to_string();
    wait_for("alpha's status re-ensured", DEADLINE, || {
        hostname(&w, "alpha").filter(|h| *h == dns)
    });
    let before = settled(&admin);
    w.cloud.apply(&[member("eta", 83, json!({}))]);
    let eta_uid = w.uid("eta");
    let eta_np = node_ports(&w.cloud.service("eta").unwrap())[0].2;
    let mut with_eta = members.clone();
    with_eta.push(("eta", eta_uid, 83, eta_np));
    w.converge("eta joined", |st| {
        check_shared(st, &with_eta, &ids).map(|_| ())
    });
    wait_for("eta's hostname", DEADLINE, || {
        hostname(&w, "eta").filter(|h| *h == dns)
    });
    let joined = settled(&admin);
    let join = delta(&before, &joined);
    w.cloud
        .kubectl_ok(&["delete", "service", "eta", "--wait=false"]);
    w.converge("eta left", |st| {
        check_shared(st, &members, &ids).map(|_| ())
    });
    wait_for("eta gone from the API", DEADLINE, || {
        w.cloud.service("eta").is_none().then_some(())
    });
    let leave = delta(&joined, &settled(&admin));
    let sum = |m: &BTreeMap<String, u64>, reads: bool| -> u64 {
        m.iter()
            .filter(|(k, _)| is_read(k) == reads)
            .map(|(_, v)| v)
            .sum()
    };
    println!(
        "AWS calls for one member (one port): join {} reads + {} writes {join:?}; leave {} reads + {} writes {leave:?}",
        sum(&join, true),
        sum(&join, false),
        sum(&leave, true),
        sum(&leave, false),
    );
    // Join: find the NLB (2), its listeners, its security group, the Service's own NLB,
    // target group and security group (all absent: it is new); create the target group,
    // register, create the listener, allow its port. Leave: find the NLB (2), its
    // listeners, its security group; delete listener and target group, revoke the port.
    assert!(sum(&join, true) <= 7 && sum(&join, false) <= 4, "{join:?}");
    assert!(
        sum(&leave, true) <= 4 && sum(&leave, false) <= 3,
        "{leave:?}"
    );

    // 4. alpha leaves the group by annotation: its listener and target group leave the
    //    shared NLB and it gets an NLB of its own. theta, refused port 80 while alpha held
    //    it, gets the port once alpha is gone, with nothing changed on theta.
    w.cloud.apply(&[member("theta", 80, json!({}))]);
    let msg = warning(&w, "theta");
    assert!(
        msg.contains("default/theta") && msg.contains("default/alpha"),
        "{msg}"
    );
    let theta_uid = w.uid("theta");
    let theta_np = node_ports(&w.cloud.service("theta").unwrap())[0].2;
    w.cloud
        .kubectl_ok(&["annotate", "service", "alpha", &format!("{GROUP_KEY}-")]);
    let alpha_uid = uids[0].clone();
    w.converge("theta on port 80 of the shared NLB", |st| {
        let lb = shared(st).first().cloned().ok_or("no shared NLB")?;
        let l = lb["listeners"]
            .as_array()
            .and_then(|ls| ls.iter().find(|l| l["port"] == 80).cloned())
            .ok_or("no listener on 80")?;
        let tg = st
            .tgs()
            .into_iter()
            .find(|t| t["arn"] == l["targetGroup"])
            .ok_or("port 80 forwards to an unknown group")?;
        let want: BTreeSet<String> = ids.iter().map(|t| format!("{t}:{theta_np}")).collect();
        (tg["tags"]["berth.io/service-uid"] == theta_uid.as_str() && strs(&tg["targets"]) == want)
            .then_some(())
            .ok_or(format!(
                "port 80: {}, targets {}",
                tg["tags"], tg["targets"]
            ))
    });
    wait_for("theta's hostname", DEADLINE, || {
        hostname(&w, "theta").filter(|h| *h == dns)
    });
    let st = w.converge("alpha on its own NLB", |st| {
        if st.lbs_of(&alpha_uid).len() != 1 {
            return Err(format!(
                "{} NLBs of alpha's own",
                st.lbs_of(&alpha_uid).len()
            ));
        }
        let lb = shared(st).first().cloned().ok_or("no shared NLB")?;
        let ports: BTreeSet<u64> = lb["listeners"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|l| l["port"].as_u64())
            .collect();
        let alpha_tgs = st.tgs_of(&alpha_uid);
        (ports == [80, 81, 82].into()
            && alpha_tgs.len() == 1
            && alpha_tgs[0]["tags"][GROUP_TAG].is_null())
        .then_some(())
        .ok_or(format!(
            "shared listeners {ports:?}, alpha's groups {}",
            alpha_tgs.len()
        ))
    });
    assert_eq!(shared(&st)[0]["arn"], arn);
    let own_dns = st.lbs_of(&alpha_uid)[0]["dns"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for("alpha's own hostname", DEADLINE, || {
        hostname(&w, "alpha").filter(|h| *h == own_dns)
    });
    wait_for("port 80 open to theta as it was to alpha", DEADLINE, || {
        (group_sg(&w).ok()?.1 == ingress).then_some(())
    });

    // 5. Members leave one by one: the NLB stays while one is left, with the others'
    //    listeners untouched.
    for n in ["theta", "alpha"] {
        w.cloud
            .kubectl_ok(&["delete", "service", n, "--wait=false"]);
    }
    let st = w.converge("theta and alpha gone", |st| {
        check_shared(st, &members[1..], &ids)?;
        st.lbs_of(&alpha_uid)
            .is_empty()
            .then_some(())
            .ok_or("alpha's own NLB is left".into())
    });
    assert_eq!(shared(&st)[0]["arn"], arn);
    wait_for("port 80 closed on the shared NLB", DEADLINE, || {
        (group_sg(&w).ok()?.1 == rules(&[(81, "10.0.0.0/8"), (82, "0.0.0.0/0")])).then_some(())
    });

    // 6. beta leaves while berth (a new one, which knows nothing yet) is SIGKILLed right
    //    after deleting its listener; the next berth finishes. Then gamma, the last, leaves:
    //    no load balancer, target group or security group of the group is left.
    berth.stop(Duration::from_secs(10));
    let mut gone = w.berth("leaving");
    w.cloud
        .kubectl_ok(&["delete", "service", "beta", "--wait=false"]);
    kill_when(
        &mut gone,
        "Deleted the Service's listeners on the shared load balancer",
    );
    let mut berth = w.berth("after");
    let st = w.converge("beta left", |st| {
        check_shared(st, &members[2..], &ids).map(|_| ())
    });
    assert_eq!(
        shared(&st)[0]["arn"],
        arn,
        "the NLB stays for its last member"
    );
    wait_for("beta's port closed", DEADLINE, || {
        (group_sg(&w).ok()?.1 == rules(&[(82, "0.0.0.0/0")])).then_some(())
    });
    w.cloud
        .kubectl_ok(&["delete", "service", "gamma", "--wait=false"]);
    w.converge("the shared NLB deleted with its last member", |st| {
        let left: BTreeMap<String, usize> = [
            ("load balancers".to_string(), st.lbs().len()),
            ("target groups".to_string(), cluster_tgs(st).len()),
        ]
        .into();
        left.values()
            .all(|n| *n == 0)
            .then_some(())
            .ok_or(format!("left: {left:?}"))
    });
    // Deleted by gamma's leaving itself, not left for garbage collection.
    assert!(
        berth
            .output()
            .contains("Deleted shared load balancer: its last member left"),
        "the NLB did not go with its last member"
    );
    wait_for("the shared NLB's security group deleted", DEADLINE, || {
        group_sg(&w)
            .err()
            .filter(|e| e.starts_with("0 "))
            .map(|_| ())
    });
    for n in names {
        wait_for(&format!("{n} gone from the API"), DEADLINE, || {
            w.cloud.service(n).is_none().then_some(())
        });
    }
    berth.stop(Duration::from_secs(10));
}
