//! End to end: `service.beta.kubernetes.io/aws-load-balancer-nlb-target-type: ip` against
//! moto. A Deployment's pods run in mock-cloud; the NLB's target group holds exactly the
//! Service's ready pod IPs at the pod port, read back with boto3, and follows the pods as the
//! Deployment scales and a pod is replaced. berth reaches moto through a counting proxy, so
//! the test also sees what each pod change cost and that an instance-mode Service selecting
//! the same pods got nothing from the churn.

#[path = "aws/moto.rs"]
mod moto;
#[path = "aws/world.rs"]
mod world;

use berth_tests::throttle_proxy::ThrottleProxy;
use moto::State;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;
use world::{World, node_ports, service, strs};

const TARGET_TYPE: &str = "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type";
/// The pods' container port (named `web`, which the Services' `targetPort` names).
const POD_PORT: u16 = 8080;

fn deployment(replicas: u32) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{
                    "name": "web",
                    "image": "registry.example/web:1",
                    "ports": [{"name": "web", "containerPort": POD_PORT}]
                }]}
            }
        }
    })
}

/// A Service of the Deployment's pods: port 80 (`http`) to the pods' `web` port.
fn web_service(name: &str, annotations: Value) -> Value {
    let mut s = service(
        name,
        json!([{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "web"}]),
        annotations,
        false,
    );
    s["spec"]["selector"] = json!({"app": "web"});
    s
}

/// The Deployment's ready pods, as `IP:port` targets, and their names.
fn ready_pods(w: &World) -> BTreeMap<String, String> {
    w.cloud
        .list("pod", "app=web")
        .unwrap_or_default()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| {
            p["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        })
        .filter_map(|p| {
            Some((
                format!("{}:{POD_PORT}", p["status"]["podIP"].as_str()?),
                p["metadata"]["name"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// The Service's one NLB forwards port 80 to one `ip` group (created at the Service port)
/// whose targets are exactly `want`.
fn check_ip_group(st: &State, uid: &str, want: &BTreeSet<String>) -> Result<(), String> {
    let lbs = st.lbs_of(uid);
    let tgs = st.tgs_of(uid);
    if lbs.len() != 1 || tgs.len() != 1 {
        return Err(format!("{} NLBs and {} groups", lbs.len(), tgs.len()));
    }
    let tg = &tgs[0];
    let listener = lbs[0]["listeners"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["port"] == 80).cloned())
        .ok_or("no listener on 80")?;
    if listener["targetGroup"] != tg["arn"] {
        return Err("the listener forwards elsewhere".into());
    }
    if tg["targetType"] != "ip" || tg["port"] != 80 || tg["protocol"] != "TCP" {
        return Err(format!(
            "group {} {} {}",
            tg["targetType"], tg["protocol"], tg["port"]
        ));
    }
    let got = strs(&tg["targets"]);
    if &got != want {
        return Err(format!("targets {got:?}, want {want:?}"));
    }
    Ok(())
}

/// Whether `ip` lies in one of `cidrs` (IPv4 `a.b.c.d/n`).
fn in_cidrs(ip: &str, cidrs: &[String]) -> bool {
    let Ok(ip) = ip.parse::<Ipv4Addr>() else {
        return false;
    };
    cidrs.iter().any(|c| {
        let Some((net, len)) = c.split_once('/') else {
            return false;
        };
        let (Ok(net), Ok(len)) = (net.parse::<Ipv4Addr>(), len.parse::<u32>()) else {
            return false;
        };
        let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
        u32::from(ip) & mask == u32::from(net) & mask
    })
}

/// Waits until the ip Service's group holds exactly the `n` ready pods; returns them.
fn converge_pods(w: &World, uid: &str, n: usize, what: &str) -> BTreeMap<String, String> {
    w.converge(what, |st| {
        let now = ready_pods(w);
        if now.len() != n {
            return Err(format!("{} ready pods, want {n}", now.len()));
        }
        check_ip_group(st, uid, &now.keys().cloned().collect())
    });
    ready_pods(w)
}

/// Waits until the Service shows a hostname.
fn wait_hostname(w: &World, name: &str) {
    berth_tests::wait_for(&format!("{name}'s hostname"), world::DEADLINE, || {
        let s = w.cloud.service(name)?;
        s["status"]["loadBalancer"]["ingress"][0]["hostname"]
            .as_str()
            .map(|_| ())
    });
}

/// Calls berth made through the proxy since the last reset, by action.
fn calls(proxy: &ThrottleProxy) -> BTreeMap<String, u64> {
    proxy
        .counts()
        .into_iter()
        .map(|(k, c)| (k, c.forwarded + c.throttled))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// After a pod change has converged, lets any straggling reconcile finish, then checks
/// that berth made only target writes, as many as `want` allows, and no reads.
fn only_target_writes(
    proxy: &ThrottleProxy,
    want: std::ops::RangeInclusive<u64>,
    what: &str,
) -> BTreeMap<String, u64> {
    std::thread::sleep(Duration::from_secs(3));
    let c = calls(proxy);
    let writes: u64 = ["RegisterTargets", "DeregisterTargets"]
        .iter()
        .map(|a| c.get(*a).copied().unwrap_or(0))
        .sum();
    let others: Vec<_> = c
        .keys()
        .filter(|a| !matches!(a.as_str(), "RegisterTargets" | "DeregisterTargets"))
        .collect();
    assert!(
        others.is_empty() && want.contains(&writes),
        "{what}: calls {c:?}, want {want:?} target writes and nothing else"
    );
    proxy.reset_counts();
    c
}

#[test]
fn aws_ip_targets_follow_the_pods() {
    let w = World::start("aws-ip", 2);
    let ids: Vec<String> = w.instances.iter().map(|(i, _)| i.clone()).collect();
    w.cloud.apply(&[w.node(0, false), w.node(1, false)]);
    // AWS takes ip targets from the VPC's subnets (with the VPC CNI, pods get VPC
    // addresses) or from RFC 1918/6598 ranges. mock-cloud's pods live in 127.<block>.16.0
    // and up, so the test's VPC gets a secondary CIDR holding them, and every registered
    // target is checked to lie in the VPC's CIDRs (moto itself does not check).
    let pod_cidr = format!("127.{}.0.0/16", w.cloud.ip_block);
    w.moto.ctl(&["add-cidr", &w.vpc, &pod_cidr]);
    let cidrs: Vec<String> = w
        .moto
        .ctl(&["vpc-cidrs", &w.vpc])
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert!(cidrs.contains(&pod_cidr), "{cidrs:?}");
    let proxy = ThrottleProxy::start(&w.moto.endpoint, 0.0, 1);
    // No drift resync or garbage collection during the test: every call berth makes comes
    // from the changes the test makes.
    let _berth = w.berth_via("ip", &proxy.endpoint(), "600s", "600s");

    // 1. Two replicas behind an ip Service and an instance Service.
    w.cloud.apply(&[deployment(2)]);
    w.cloud.apply(&[
        web_service("web-ip", json!({TARGET_TYPE: "ip"})),
        web_service("web-inst", json!({})),
    ]);
    let uid = w.uid("web-ip");
    let inst_uid = w.uid("web-inst");
    let pods = converge_pods(&w, &uid, 2, "2 pods registered");
    for t in pods.keys() {
        let ip = t.split(':').next().unwrap();
        assert!(in_cidrs(ip, &cidrs), "{ip} outside the VPC's {cidrs:?}");
    }
    let inst_np = node_ports(&w.cloud.service("web-inst").unwrap())[0].2;
    let inst_targets: BTreeSet<String> = ids.iter().map(|i| format!("{i}:{inst_np}")).collect();
    let inst_group = |st: &State| -> Result<Value, String> {
        let tgs = st.tgs_of(&inst_uid);
        match &tgs[..] {
            [tg] if tg["targetType"] == "instance" && strs(&tg["targets"]) == inst_targets => {
                Ok(tg.clone())
            }
            _ => Err(format!("instance groups {tgs:?}")),
        }
    };
    let st = w.converge("the instance Service's NLB", |st| {
        inst_group(st).map(|_| ())
    });
    let inst_before = inst_group(&st).unwrap();
    // Both Services show their NLB's hostname.
    for name in ["web-ip", "web-inst"] {
        wait_hostname(&w, name);
    }
    proxy.reset_counts();

    // 2. Scale to 3: the new pod is registered at its pod port; nothing else is called.
    w.cloud
        .kubectl_ok(&["scale", "deployment", "web", "--replicas=3"]);
    let three = converge_pods(&w, &uid, 3, "3 pods registered");
    assert!(
        pods.keys().all(|t| three.contains_key(t)),
        "{pods:?} {three:?}"
    );
    let up = only_target_writes(&proxy, 1..=1, "scale 2 -> 3");

    // 3. Scale to 1: two pods deregistered (in one call, or one each if they stop apart).
    w.cloud
        .kubectl_ok(&["scale", "deployment", "web", "--replicas=1"]);
    let one = converge_pods(&w, &uid, 1, "1 pod left");
    assert!(
        one.keys().all(|t| three.contains_key(t)),
        "{three:?} {one:?}"
    );
    let down = only_target_writes(&proxy, 1..=2, "scale 3 -> 1");

    // 4. Delete the last pod: its replacement is the group's one target (mock-cloud may
    // give it the freed address again; then the group's target is unchanged).
    let (old_target, old_pod) = one.iter().next().unwrap();
    w.cloud
        .kubectl_ok(&["delete", "pod", old_pod, "--wait=false"]);
    w.converge("the replacement pod registered", |st| {
        let now = ready_pods(&w);
        if now.len() != 1 || now.values().any(|p| p == old_pod) {
            return Err(format!("pods {now:?}"));
        }
        check_ip_group(st, &uid, &now.keys().cloned().collect())
    });
    let replaced = ready_pods(&w);
    let (new_target, _) = replaced.iter().next().unwrap();
    assert!(in_cidrs(new_target.split(':').next().unwrap(), &cidrs));
    let least = u64::from(new_target != old_target);
    let moved = only_target_writes(&proxy, least..=2, "pod replaced");
    println!(
        "calls per pod change (ip Service, instance Service beside it): scale 2->3 {up:?}, \
         scale 3->1 {down:?}, pod replaced {moved:?}"
    );

    // The instance Service's group is exactly as it was: same ARN, same targets.
    let st = w.moto.state();
    assert_eq!(inst_group(&st).unwrap(), inst_before);

    // 5. The ip Service deleted: its NLB and group go; the instance Service keeps its own.
    w.cloud
        .kubectl_ok(&["delete", "service", "web-ip", "--wait=false"]);
    w.converge("web-ip's NLB and group deleted", |st| {
        match st.count_of(&uid) {
            0 => Ok(()),
            n => Err(format!("{n} resources left")),
        }
    });
    assert_eq!(inst_group(&w.moto.state()).unwrap(), inst_before);
}
