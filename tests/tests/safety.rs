//! Adversarial end-to-end tests for issue 9 ("safe beside anything"): controllers of other
//! classes, other clusters sharing one load balancer API, and a leader whose lease renewals
//! hang. Every write is attributed from outside berth through mock-cloud's audit logs (each
//! replica writes with its own bearer tokens), never through berth's own metrics.
//!
//! Each test collects every problem it sees and reports them together at the end, so one run
//! shows the whole picture.

use berth_tests::safety_harness::*;
use berth_tests::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const A_CLASS: &str = "berth.io/http";
const B_CLASS: &str = "example.com/b";
const A_LEASE: &str = "berth-berth.io.http";
const B_LEASE: &str = "berth-example.com.b";

/// Who serves which class in [`check_two_classes`]: the bearer token of each class's
/// writes, or one token for both when one process serves both classes.
struct Owners {
    a: String,
    b: String,
}

/// The scenario both two-class tests share. Services `svc-a` (class A), `svc-b` (class B) and
/// `svc-none` (no class, served by nobody) exist from the start; for 60 s each Service must be
/// served by its own class only, with nothing deleted and (over the last 30 s) nothing
/// written; then deleting `svc-b` removes only B's load balancer, and turning `svc-a` into a
/// ClusterIP Service removes only A's.
fn check_two_classes(cloud: &Cloud, owners: &Owners, f: &mut Findings) {
    let lb = cloud.lb.clone();
    let start = Instant::now();
    cloud.apply(&[
        class_service("svc-a", Some(A_CLASS)),
        class_service("svc-b", Some(B_CLASS)),
        class_service("svc-none", None),
    ]);

    // --- 60 s of observation ---------------------------------------------------------
    let window = Duration::from_secs(60);
    let mut first_address: BTreeMap<&str, Duration> = BTreeMap::new();
    let mut none_touched: Option<String> = None;
    let mut snapshot: Option<(Vec<Option<String>>, u64, u64)> = None;
    let names = ["svc-a", "svc-b", "svc-none"];
    while start.elapsed() < window {
        for n in ["svc-a", "svc-b"] {
            if !first_address.contains_key(n)
                && cloud
                    .try_get("service", n)
                    .ok()
                    .flatten()
                    .as_ref()
                    .and_then(ingress_ip)
                    .is_some()
            {
                first_address.insert(n, start.elapsed());
            }
        }
        if none_touched.is_none()
            && let Ok(Some(s)) = cloud.try_get("service", "svc-none")
            && (!finalizers(&s).is_empty() || ingress_ip(&s).is_some())
        {
            none_touched = Some(format!(
                "class-less svc-none was touched after {:?}: finalizers {:?}, status {}",
                start.elapsed(),
                finalizers(&s),
                s["status"]
            ));
        }
        if snapshot.is_none() && start.elapsed() >= window - Duration::from_secs(30) {
            let rvs = names.iter().map(|n| service_rv(cloud, n)).collect();
            let lb_seq = lb_api_writes(&lb).last().map_or(0, |w| w.seq);
            let api_seq = api_writes(cloud).last().map_or(0, |w| w.seq);
            snapshot = Some((rvs, lb_seq, api_seq));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!("first address after: {first_address:?}");
    for n in ["svc-a", "svc-b"] {
        f.check(first_address.contains_key(n), || {
            format!("{n} got no address within {window:?}")
        });
    }
    if let Some(t) = none_touched {
        f.add(t);
    }
    if lb_of(&lb, "svc-none").is_some() {
        f.add("class-less svc-none got a load balancer".into());
    }

    // Each Service's load balancer was made by its own class.
    let ids: BTreeMap<&str, Option<String>> = ["svc-a", "svc-b"]
        .into_iter()
        .map(|n| (n, lb_id(&lb, n)))
        .collect();
    for (n, class, owner) in [("svc-a", A_CLASS, &owners.a), ("svc-b", B_CLASS, &owners.b)] {
        let Some(id) = &ids[n] else {
            f.add(format!("{n} has no load balancer at the end of the window"));
            continue;
        };
        let l = lb_of(&lb, n).unwrap_or_default();
        f.check(
            lb_label(&l, "berth.io/class").as_deref() == Some(class),
            || {
                format!(
                    "{n}'s load balancer {id} is labelled berth.io/class={:?}, not {class:?}",
                    lb_label(&l, "berth.io/class")
                )
            },
        );
        f.check(lb_label(&l, "berth.io/cluster").is_some(), || {
            format!("{n}'s load balancer {id} has no berth.io/cluster label")
        });
        let made_by = creator(&lb, id);
        f.check(made_by.as_deref() == Some(owner.as_str()), || {
            format!("{n}'s load balancer {id} was first written by {made_by:?}, not {owner:?}")
        });
    }

    // Nobody wrote to the other class's Service or load balancer.
    if owners.a != owners.b {
        for (svc, id, stranger) in [
            ("svc-a", &ids["svc-a"], &owners.b),
            ("svc-b", &ids["svc-b"], &owners.a),
        ] {
            let svc_path = format!("/services/{svc}");
            let foreign: Vec<String> = api_writes(cloud)
                .into_iter()
                .filter(|w| &w.token == stranger && w.path.contains(&svc_path))
                .map(|w| w.to_string())
                .collect();
            f.check(foreign.is_empty(), || {
                format!(
                    "{stranger} wrote {} time(s) to {svc}: {:?}",
                    foreign.len(),
                    foreign.iter().take(3).collect::<Vec<_>>()
                )
            });
            if let Some(id) = id {
                let lb_path = format!("/v1/loadbalancers/{id}");
                let foreign = lb_api_writes(&lb)
                    .into_iter()
                    .filter(|w| &w.token == stranger && w.path == lb_path)
                    .count();
                f.check(foreign == 0, || {
                    format!("{stranger} wrote {foreign} time(s) to {svc}'s load balancer {id}")
                });
            }
        }
    }

    // Nothing was deleted at the load balancer API.
    let deletes = total_deletes(&lb);
    eprintln!("DELETEs at the LB API over {window:?}: {deletes}");
    f.check(deletes == 0, || {
        format!(
            "{deletes} DELETE(s) at the load balancer API in {window:?}: {:?}",
            lb_deletes(&lb)
        )
    });

    // One berth finalizer per Service, each its own class's.
    let fin = |n: &str| {
        cloud
            .try_get("service", n)
            .ok()
            .flatten()
            .map(|s| berth_finalizers(&s))
            .unwrap_or_default()
    };
    let (fa, fb) = (fin("svc-a"), fin("svc-b"));
    eprintln!("finalizers: svc-a {fa:?}, svc-b {fb:?}");
    for (n, fs) in [("svc-a", &fa), ("svc-b", &fb)] {
        f.check(fs.len() == 1, || {
            format!("{n} carries {} berth finalizers: {fs:?}", fs.len())
        });
        f.check(!fs.iter().any(|x| x == LEGACY_FINALIZER), || {
            format!("{n} carries the shared finalizer {LEGACY_FINALIZER}")
        });
    }
    f.check(fa.is_empty() || fa != fb, || {
        format!("svc-a and svc-b carry the same finalizer(s) {fa:?}")
    });
    f.check(fin("svc-none").is_empty(), || {
        format!("svc-none carries {:?}", fin("svc-none"))
    });

    // Both classes lead at once, each with its own Lease.
    let ls = leases(cloud);
    eprintln!("leases: {ls:?}");
    for (lease, owner) in [(A_LEASE, &owners.a), (B_LEASE, &owners.b)] {
        f.check(
            holder_of(cloud, lease).as_deref() == Some(owner.as_str()),
            || format!("Lease {lease} is not held by {owner}; leases in default: {ls:?}"),
        );
    }

    // Steady state over the last 30 s: no Service changed, (almost) no writes.
    if let Some((rvs, lb_seq, api_seq)) = snapshot {
        for (n, before) in names.iter().zip(rvs) {
            let now = service_rv(cloud, n);
            f.check(now == before, || {
                format!("{n} changed in the last 30 s (resourceVersion {before:?} → {now:?})")
            });
        }
        let lb_late: Vec<Write> = lb_api_writes(&lb)
            .into_iter()
            .filter(|w| w.seq > lb_seq)
            .collect();
        let api_late: Vec<Write> = api_writes(cloud)
            .into_iter()
            .filter(|w| w.seq > api_seq && !w.is_lease())
            .collect();
        eprintln!(
            "writes in the last 30 s: {} at the LB API, {} at the API server (Lease renewals aside)",
            lb_late.len(),
            api_late.len()
        );
        f.check(lb_late.len() <= 2, || {
            format!(
                "{} LB API writes in the last 30 s, e.g. {:?}",
                lb_late.len(),
                lb_late
                    .iter()
                    .take(3)
                    .map(|w| w.to_string())
                    .collect::<Vec<_>>()
            )
        });
        f.check(api_late.len() <= 2, || {
            format!(
                "{} API server writes (not Leases) in the last 30 s, e.g. {:?}",
                api_late.len(),
                api_late
                    .iter()
                    .take(3)
                    .map(|w| w.to_string())
                    .collect::<Vec<_>>()
            )
        });
    }

    // --- each class cleans up only its own -------------------------------------------------
    let (Some(id_a), Some(id_b)) = (ids["svc-a"].clone(), ids["svc-b"].clone()) else {
        f.add("clean-up phase not run: a Service had no load balancer".into());
        return;
    };
    let deletes_of = |id: &str| {
        lb_deletes(&lb)
            .into_iter()
            .find(|(k, _)| k == id)
            .map_or(0, |(_, n)| n)
    };
    cloud.kubectl_ok(&["delete", "service", "svc-b", "--wait=false"]);
    let b_gone = crate_wait(DEADLINE, || {
        cloud.try_get("service", "svc-b").ok().flatten().is_none() && cloud.lb(&id_b).is_none()
    });
    f.check(b_gone, || {
        "deleting svc-b did not remove it and its load balancer within 30 s".into()
    });
    f.check(cloud.lb(&id_a).is_some() && deletes_of(&id_a) == 0, || {
        format!(
            "deleting svc-b touched svc-a's load balancer {id_a} ({} DELETEs)",
            deletes_of(&id_a)
        )
    });

    let mut cluster_ip = class_service("svc-a", None);
    cluster_ip["spec"]["type"] = json!("ClusterIP");
    cloud.apply(&[cluster_ip]);
    let a_released = crate_wait(DEADLINE, || {
        cloud.lb(&id_a).is_none()
            && cloud
                .try_get("service", "svc-a")
                .ok()
                .flatten()
                .is_some_and(|s| berth_finalizers(&s).is_empty())
    });
    f.check(a_released, || {
        "svc-a as ClusterIP kept its load balancer or a berth finalizer for 30 s".into()
    });
    f.check(deletes_of(&id_b) <= 1, || {
        format!("B's load balancer {id_b} got {} DELETEs", deletes_of(&id_b))
    });
    f.check(lb_of(&lb, "svc-none").is_none(), || {
        "svc-none got a load balancer".into()
    });
}

/// Polls `ok` every 200 ms for up to `timeout`; whether it became true.
fn crate_wait(timeout: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if ok() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Guards defect 1 of issue 9 (two controllers fight): every class shared the finalizer
/// `berth.io/load-balancer-cleanup` and a controller cleaned up any Service carrying it that
/// it did not want, so controllers of two classes deleted each other's load balancers
/// (1,546 DELETEs in 30 s); and the fixed Lease name let only one class lead.
#[test]
fn two_classes_two_processes_never_touch_each_other() {
    let cloud = Cloud::start("two-classes");
    let ep = cloud.lb_url();
    let common = [
        "--cluster-name",
        "safety",
        "--resync",
        "5s",
        "--gc-interval",
        "2s",
    ];
    let _a = Replica::http(&cloud, "class-a", &ep)
        .args(&["--class", A_CLASS])
        .args(&common)
        .start(&cloud);
    let _b = Replica::http(&cloud, "class-b", &ep)
        .args(&["--class", B_CLASS])
        .args(&common)
        .start(&cloud);
    let mut f = Findings::default();
    check_two_classes(
        &cloud,
        &Owners {
            a: "class-a".into(),
            b: "class-b".into(),
        },
        &mut f,
    );
    f.assert_none("two classes, two processes");
}

/// Guards defect 1 even where leader election cannot keep two classes apart: with their
/// Leases in different namespaces both controllers lead, and before issue 9 each one deleted
/// the other's load balancers (the shared finalizer marked the other's Service as its own to
/// clean up) — the 1,546-DELETEs-in-30-s fight. 30 s: 0 DELETEs, both load balancers stay.
#[test]
fn two_classes_leading_in_separate_namespaces_never_delete_each_other() {
    let cloud = Cloud::start("two-namespaces");
    let ep = cloud.lb_url();
    let lb = cloud.lb.clone();
    let common = [
        "--cluster-name",
        "safety",
        "--resync",
        "5s",
        "--gc-interval",
        "2s",
    ];
    let _a = Replica::http(&cloud, "class-a", &ep)
        .args(&["--class", A_CLASS])
        .args(&common)
        .start(&cloud);
    let _b = Replica::http(&cloud, "class-b", &ep)
        .args(&["--class", B_CLASS])
        .lease_namespace("kube-system")
        .args(&common)
        .start(&cloud);
    cloud.apply(&[
        class_service("svc-a", Some(A_CLASS)),
        class_service("svc-b", Some(B_CLASS)),
    ]);
    let mut f = Findings::default();
    let both = crate_wait(DEADLINE, || {
        lb_id(&lb, "svc-a").is_some() && lb_id(&lb, "svc-b").is_some()
    });
    f.check(both, || {
        "svc-a and svc-b did not both get a load balancer".into()
    });
    let window = Duration::from_secs(30);
    let start = Instant::now();
    let mut missing = BTreeMap::<&str, u32>::new();
    while start.elapsed() < window {
        for n in ["svc-a", "svc-b"] {
            if lb_id(&lb, n).is_none() {
                *missing.entry(n).or_default() += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let deletes = total_deletes(&lb);
    eprintln!("over {window:?}: {deletes} DELETE(s); samples without a load balancer: {missing:?}");
    f.check(deletes == 0, || {
        format!(
            "{deletes} DELETE(s) at the LB API in {window:?}: {:?}",
            lb_deletes(&lb)
        )
    });
    f.check(missing.is_empty(), || {
        format!("load balancers went missing (samples every 0.5 s): {missing:?}")
    });
    for (svc, stranger) in [("svc-a", "class-b"), ("svc-b", "class-a")] {
        let path = format!("/services/{svc}");
        let n = api_writes(&cloud)
            .into_iter()
            .filter(|w| w.token == stranger && w.path.contains(&path))
            .count();
        f.check(n == 0, || format!("{stranger} wrote {n} time(s) to {svc}"));
    }
    f.assert_none("two classes leading in separate namespaces");
}

/// Guards defect 1 for one process serving two classes from `--config` (`classes:`): each
/// class keeps its own finalizer, Lease and load balancers.
#[test]
fn two_classes_one_process() {
    let cloud = Cloud::start("one-process");
    let ep = cloud.lb_url();
    let token_file = write_file(&cloud.dir, "lb-token-both", "both");
    let config = format!(
        "clusterName: safety\nresync: 5s\ngcInterval: 2s\nclasses:\n  - class: {A_CLASS}\n    provider: http\n    httpEndpoint: {ep}\n    httpTokenFile: {tf}\n  - class: {B_CLASS}\n    provider: http\n    httpEndpoint: {ep}\n    httpTokenFile: {tf}\n    defaultClass: false\n",
        tf = token_file.display()
    );
    let config = write_file(&cloud.dir, "berth.yaml", &config);
    let _both = Replica::bare(&cloud, "both")
        .arg("--config")
        .arg(&config.to_string_lossy())
        .start(&cloud);
    let mut f = Findings::default();
    check_two_classes(
        &cloud,
        &Owners {
            a: "both".into(),
            b: "both".into(),
        },
        &mut f,
    );
    f.assert_none("two classes, one process");
}

/// Guards defect 2 of issue 9 (GC deletes another cluster's load balancers): two clusters
/// with the default cluster name shared one LB API, and cluster 2's garbage collector deleted
/// cluster 1's load balancer within 6 s. With no `--cluster-name`, each cluster's id must be
/// its own (the kube-system Namespace uid), and GC must never delete the other's.
#[test]
fn two_clusters_sharing_one_lb_api_never_collect_each_other() {
    let c1 = Cloud::start("cluster-1");
    let c2 = Cloud::start("cluster-2");
    let (uid1, uid2) = (kube_system_uid(&c1), kube_system_uid(&c2));
    assert_ne!(uid1, uid2, "each mock-cloud's kube-system has its own uid");
    let shared = c1.lb_url();
    let lb = c1.lb.clone();
    let flags = ["--resync", "5s", "--gc-interval", "2s"];
    let _r1 = Replica::http(&c1, "cluster-1", &shared)
        .args(&flags)
        .start(&c1);
    let _r2 = Replica::http(&c2, "cluster-2", &shared)
        .args(&flags)
        .start(&c2);
    // The same namespace/name in both clusters.
    c1.apply(&[class_service("web", Some(A_CLASS))]);
    c2.apply(&[class_service("web", Some(A_CLASS))]);

    let mut f = Findings::default();
    let start = Instant::now();
    let both = crate_wait(DEADLINE, || {
        [&c1, &c2].iter().all(|c| {
            c.try_get("service", "web")
                .ok()
                .flatten()
                .as_ref()
                .and_then(ingress_ip)
                .is_some()
        })
    });
    f.check(both, || {
        "both clusters' web did not get an address within 30 s".into()
    });
    eprintln!("both provisioned after {:?}", start.elapsed());

    // 30 s with GC every 2 s: both load balancers stay, nothing is deleted.
    let window = Duration::from_secs(30);
    let observed = Instant::now();
    let mut fewest = usize::MAX;
    while observed.elapsed() < window {
        let n = lbs_at(&lb)
            .iter()
            .filter(|l| l["spec"]["labels"]["berth.io/service-name"] == "web")
            .count();
        fewest = fewest.min(n);
        std::thread::sleep(Duration::from_millis(500));
    }
    let deletes = total_deletes(&lb);
    eprintln!(
        "over {window:?}: {deletes} DELETE(s) at the shared LB API; fewest load balancers seen: {fewest}"
    );
    f.check(deletes == 0, || {
        format!(
            "{deletes} DELETE(s) at the shared LB API in {window:?}: {:?}",
            lb_deletes(&lb)
        )
    });
    f.check(fewest == 2, || {
        format!("at some point only {fewest} of the 2 load balancers existed")
    });

    // Each load balancer carries its own cluster's id and was written by its own cluster.
    let all: Vec<Value> = lbs_at(&lb);
    let clusters: Vec<Option<String>> = all
        .iter()
        .map(|l| lb_label(l, "berth.io/cluster"))
        .collect();
    eprintln!("berth.io/cluster labels: {clusters:?} (kube-system uids {uid1}, {uid2})");
    f.check(
        clusters.len() == 2 && clusters[0].is_some() && clusters[0] != clusters[1],
        || format!("the load balancers' berth.io/cluster labels are not distinct: {clusters:?}"),
    );
    let mut writers: Vec<String> = all
        .iter()
        .filter_map(|l| l["id"].as_str())
        .filter_map(|id| creator(&lb, id))
        .collect();
    writers.sort();
    f.check(writers == ["cluster-1", "cluster-2"], || {
        format!("the load balancers were first written by {writers:?}")
    });
    for token in ["cluster-1", "cluster-2"] {
        let stranger_deletes: Vec<String> = lb_api_writes(&lb)
            .into_iter()
            .filter(|w| w.verb == "delete" && w.token == token)
            .map(|w| w.to_string())
            .collect();
        f.check(stranger_deletes.is_empty(), || {
            format!("{token} sent DELETEs: {stranger_deletes:?}")
        });
    }
    f.assert_none("two clusters, one LB API");
}

/// Guards defect 3 of issue 9 (writes after the lease is lost): lease renewals had no
/// deadline, so with 45 s of latency on the leader's renewals the old leader kept creating
/// load balancers and writing status 30 s after its last renewal, without logging that it
/// lost leadership. Now: no write by the old leader after its lease expires (its last
/// successful renewal + lease duration), a log line saying it lost leadership, and the
/// standby provisions a new Service within the lease duration plus a few seconds.
#[test]
fn a_leader_whose_renewals_hang_stops_writing_before_its_lease_expires() {
    const LEASE_MS: u64 = 4_000;
    let cloud = Cloud::start("fencing");
    let ep = cloud.lb_url();
    let lb = cloud.lb.clone();
    let flags = [
        "--class",
        A_CLASS,
        "--cluster-name",
        "fencing",
        "--resync",
        "5s",
        "--gc-interval",
        "2s",
    ];
    let mut a = Replica::http(&cloud, "replica-a", &ep)
        .args(&flags)
        .args(&SHORT_LEASE)
        .start(&cloud);
    wait_for("replica-a to lead", DEADLINE, || {
        leases(&cloud)
            .iter()
            .any(|(_, h)| h == "replica-a")
            .then_some(())
    });
    let _b = Replica::http(&cloud, "replica-b", &ep)
        .args(&flags)
        .args(&SHORT_LEASE)
        .start(&cloud);
    cloud.apply(&[class_service("before", Some(A_CLASS))]);
    cloud.wait_address("before");
    let before_id = lb_id(&lb, "before").expect("before's load balancer");
    assert_eq!(
        creator(&lb, &before_id).as_deref(),
        Some("replica-a"),
        "the leader provisions before the fault"
    );

    // 45 s of latency on replica-a's Lease renewals only (replica-b's takeover is not slowed).
    let injected = now_ms();
    cloud.set_api_faults(json!({
        "latencyMs": 45_000,
        "pathPrefixes": ["/apis/coordination.k8s.io/"],
        "verbs": ["update", "patch"],
        "bodyContains": ["\"holderIdentity\":\"replica-a\""],
    }));
    let hung = wait_for("a renewal by replica-a to hang", DEADLINE, || {
        api_writes(&cloud).into_iter().find(|w| {
            w.token == "replica-a" && w.is_lease() && w.received_ms >= injected && w.code.is_none()
        })
    });
    let last_ok = api_writes(&cloud)
        .into_iter()
        .filter(|w| w.token == "replica-a" && w.is_lease() && w.succeeded())
        .filter_map(|w| w.completed_ms)
        .max()
        .expect("replica-a renewed its lease at least once");
    let expiry = last_ok + LEASE_MS;
    eprintln!(
        "replica-a: last successful renewal at {last_ok}, hung renewal sent at {}, lease expires at {expiry}",
        hung.received_ms
    );

    // A new Service once the old leader's lease has expired: only the standby may serve it.
    while now_ms() < expiry {
        std::thread::sleep(Duration::from_millis(50));
    }
    cloud.apply(&[class_service("after", Some(A_CLASS))]);
    let created = now_ms();
    let mut f = Findings::default();
    let provisioned = crate_wait(DEADLINE, || {
        cloud
            .try_get("service", "after")
            .ok()
            .flatten()
            .as_ref()
            .and_then(ingress_ip)
            .is_some()
    })
    .then(now_ms);
    match provisioned {
        Some(t) => {
            eprintln!(
                "after provisioned {} ms after replica-a's last renewal ({} ms after its creation)",
                t - last_ok,
                t - created
            );
            f.check(t - last_ok <= LEASE_MS + 11_000, || {
                format!(
                    "the standby provisioned after only {} ms after the old leader's last renewal (lease {LEASE_MS} ms)",
                    t - last_ok
                )
            });
        }
        None => f.add("after got no address within 30 s".into()),
    }
    match lb_id(&lb, "after") {
        Some(id) => {
            let by = creator(&lb, &id);
            f.check(by.as_deref() == Some("replica-b"), || {
                format!("after's load balancer was first written by {by:?}, not the standby")
            });
        }
        None => f.add("after has no load balancer".into()),
    }

    // Watch the old leader until 25 s past its last renewal: it must say it lost leadership
    // and either exit non-zero or stay a silent standby.
    while now_ms() < last_ok + 25_000 && a.proc.try_exit().is_none() {
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = a.proc.output();
    let lost_line = log.lines().find(|l| {
        let l = l.to_lowercase();
        l.contains("lost") && (l.contains("lease") || l.contains("leader"))
    });
    eprintln!("replica-a's loss line: {lost_line:?}");
    f.check(lost_line.is_some(), || {
        format!(
            "replica-a logged nothing about losing leadership within {} ms of its last renewal",
            now_ms() - last_ok
        )
    });
    match a.proc.try_exit() {
        Some(s) => {
            eprintln!("replica-a exited: {s}");
            f.check(!s.success(), || "replica-a exited with status 0".into());
        }
        None => eprintln!("replica-a is still running (must be a silent standby)"),
    }

    // Give any late write a moment to land, then look for writes by the old leader after
    // its lease expired.
    std::thread::sleep(Duration::from_secs(2));
    let late: Vec<String> = api_writes(&cloud)
        .into_iter()
        .chain(lb_api_writes(&lb))
        .filter(|w| w.token == "replica-a" && w.received_ms > expiry)
        .map(|w| format!("{w} (+{} ms after expiry)", w.received_ms - expiry))
        .collect();
    eprintln!(
        "writes by replica-a after its lease expired: {}",
        late.len()
    );
    f.check(late.is_empty(), || {
        format!(
            "replica-a made {} write(s) after its lease expired, e.g. {:?}",
            late.len(),
            late.iter().take(5).collect::<Vec<_>>()
        )
    });
    let holders: Vec<String> = leases(&cloud).into_iter().map(|(_, h)| h).collect();
    f.check(holders.iter().any(|h| h == "replica-b"), || {
        format!("replica-b does not hold a lease: {holders:?}")
    });
    cloud.set_api_faults(json!({}));
    f.assert_none("fenced leadership");
}

/// An adversarial case of defect 1: a Service of another class that carries the shared
/// legacy finalizer `berth.io/load-balancer-cleanup` (as its own, older berth left it) is not
/// ours — we must never remove that finalizer nor write to the Service, even when it is
/// deleted. A Service of our class carrying the legacy finalizer keeps working, gets our
/// finalizer, and is still cleaned up completely when deleted.
#[test]
fn a_legacy_finalizer_on_another_class_is_not_ours_to_remove() {
    let cloud = Cloud::start("legacy");
    let mut theirs = class_service("theirs", Some(B_CLASS));
    theirs["metadata"]["finalizers"] = json!([LEGACY_FINALIZER]);
    let mut ours = class_service("ours", Some(A_CLASS));
    ours["metadata"]["finalizers"] = json!([LEGACY_FINALIZER]);
    cloud.apply(&[theirs, ours]);
    let _a = Replica::http(&cloud, "class-a", &cloud.lb_url())
        .args(&["--class", A_CLASS, "--cluster-name", "legacy"])
        .args(&["--resync", "5s", "--gc-interval", "2s"])
        .start(&cloud);
    let mut f = Findings::default();

    // Ours is served and gets our own finalizer.
    cloud.wait_address("ours");
    let own_finalizer = crate_wait(Duration::from_secs(10), || {
        cloud
            .service("ours")
            .is_some_and(|s| berth_finalizers(&s).iter().any(|x| x != LEGACY_FINALIZER))
    });
    let ours_fins = cloud.service("ours").map(|s| berth_finalizers(&s));
    eprintln!("ours carries {ours_fins:?}");
    f.check(own_finalizer, || {
        format!("ours did not get its class's own finalizer: {ours_fins:?}")
    });

    // Theirs: left alone, for 10 s, and while it is being deleted.
    let theirs_alone = |f: &mut Findings, phase: &str| {
        let s = cloud.service("theirs");
        let fins = s.as_ref().map(finalizers);
        f.check(
            fins.as_deref() == Some(&[LEGACY_FINALIZER.to_string()][..]),
            || format!("{phase}: theirs' finalizers became {fins:?}"),
        );
        f.check(s.as_ref().and_then(ingress_ip).is_none(), || {
            format!("{phase}: theirs got an address")
        });
    };
    std::thread::sleep(Duration::from_secs(10));
    theirs_alone(&mut f, "after 10 s");
    cloud.kubectl_ok(&["delete", "service", "theirs", "--wait=false"]);
    std::thread::sleep(Duration::from_secs(8));
    theirs_alone(&mut f, "8 s after its deletion");
    let writes: Vec<String> = api_writes(&cloud)
        .into_iter()
        .filter(|w| w.token == "class-a" && w.path.contains("/services/theirs"))
        .map(|w| w.to_string())
        .collect();
    f.check(writes.is_empty(), || {
        format!("class-a wrote to theirs: {writes:?}")
    });
    f.check(lb_of(&cloud.lb, "theirs").is_none(), || {
        "theirs got a load balancer".into()
    });

    // Ours, deleted: its load balancer goes and the Service is gone (no finalizer left).
    let id = lb_id(&cloud.lb, "ours").expect("ours' load balancer");
    cloud.kubectl_ok(&["delete", "service", "ours", "--wait=false"]);
    let gone = crate_wait(DEADLINE, || {
        cloud.try_get("service", "ours").ok().flatten().is_none() && cloud.lb(&id).is_none()
    });
    f.check(gone, || {
        format!(
            "ours was not fully cleaned up within 30 s: {:?}",
            cloud.service("ours").map(|s| finalizers(&s))
        )
    });

    // Let theirs go, as its own controller would (it may be gone already if it was wrongly
    // released).
    let _ = cloud.try_kubectl(&[
        "patch",
        "service",
        "theirs",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    f.assert_none("legacy finalizer of another class");
}
