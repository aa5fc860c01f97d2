//! End to end: `berth controller --provider aws --adopt ...` taking over NLBs made (with
//! boto3, against moto) exactly as the legacy AWS cloud provider and the AWS Load Balancer
//! Controller tag them, for Services carrying those controllers' finalizers and status
//! hostnames in mock-cloud; and `berth adopt plan` on the same setup, writing nothing.
//! Cloud state is read with boto3 (`tests/aws/moto_ctl.py`), never with berth's code.

#[path = "aws/moto.rs"]
mod moto;

use berth_tests::{Cloud, Proc, binary, finalizers, http_json, wait_for};
use moto::{Moto, State};
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::time::Duration;

const CLUSTER: &str = "test";
const DEADLINE: Duration = Duration::from_secs(90);
const CCM_FINALIZER: &str = "service.kubernetes.io/load-balancer-cleanup";
const LBC_FINALIZER: &str = "service.k8s.aws/resources";
/// berth's per-class finalizers start with this.
const BERTH_FINALIZER: &str = "berth.io/cleanup.";
const TYPE: &str = "service.beta.kubernetes.io/aws-load-balancer-type";
const SCHEME: &str = "service.beta.kubernetes.io/aws-load-balancer-scheme";

/// moto, mock-cloud, two instances as Nodes, and the previous owners' Services.
struct World {
    moto: Moto,
    cloud: Cloud,
    instances: Vec<String>,
    subnets: Vec<String>,
    vpc: String,
}

/// One Service and the load balancer its previous owner made.
struct Previous {
    name: &'static str,
    uid: String,
    arn: String,
    dns: String,
    tgs: Vec<String>,
}

impl World {
    fn start(tag: &str) -> World {
        let cloud = Cloud::start(tag);
        let moto = Moto::start(&cloud.dir.join("moto.log"));
        let setup = moto.ctl(&["setup", CLUSTER, "2"]);
        let ids = |k: &str| -> Vec<String> {
            setup[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_string())
                .collect()
        };
        let nodes: Vec<Value> = moto::instances(&setup)
            .iter()
            .enumerate()
            .map(|(i, (id, zone))| {
                json!({
                    "apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": format!("node-{i}"), "labels": {"topology.kubernetes.io/zone": zone}},
                    "spec": {"providerID": format!("aws:///{zone}/{id}")}
                })
            })
            .collect();
        cloud.apply(&nodes);
        World {
            instances: ids("instances"),
            subnets: ids("subnets"),
            vpc: setup["vpc"].as_str().unwrap().to_string(),
            moto,
            cloud,
        }
    }

    /// A Service without a class (berth serves it with --default-class), carrying
    /// `finalizer`; returns its uid and NodePort.
    fn service(&self, name: &str, annotations: Value, finalizer: &str) -> (String, u16) {
        self.cloud.apply(&[json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default", "annotations": annotations,
                         "finalizers": [finalizer]},
            "spec": {"type": "LoadBalancer", "selector": {"app": name},
                     "ports": [{"name": "web", "port": 80, "protocol": "TCP"}]}
        })]);
        let s = self.cloud.service(name).expect("Service");
        (
            s["metadata"]["uid"].as_str().unwrap().to_string(),
            s["spec"]["ports"][0]["nodePort"].as_u64().unwrap() as u16,
        )
    }

    /// Publishes `hostname` in the Service's status, as its previous owner did.
    fn publish(&self, name: &str, hostname: &str) {
        let patch = json!({"status": {"loadBalancer": {"ingress": [{"hostname": hostname}]}}});
        self.cloud.kubectl_ok(&[
            "patch",
            "service",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch.to_string(),
        ]);
    }

    /// Service `name` with an NLB made as `owner` (`legacy` or `lbc`) makes it.
    fn previous(&self, owner: &str, name: &'static str, scheme: &str) -> Previous {
        let (finalizer, annotations) = if owner == "legacy" {
            (
                CCM_FINALIZER,
                json!({TYPE: "nlb", SCHEME: "internet-facing"}),
            )
        } else {
            (LBC_FINALIZER, json!({TYPE: "external", SCHEME: "internal"}))
        };
        let (uid, node_port) = self.service(name, annotations, finalizer);
        let lb = self.moto.ctl(&[
            "previous",
            owner,
            &format!("default/{name}"),
            &uid,
            CLUSTER,
            scheme,
            &self.vpc,
            &self.subnets.join(","),
            &format!("80:{node_port}"),
            &self.instances.join(","),
        ]);
        let dns = lb["dns"].as_str().unwrap().to_string();
        self.publish(name, &dns);
        Previous {
            name,
            uid,
            arn: lb["arn"].as_str().unwrap().to_string(),
            dns,
            tgs: lb["tgs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_string())
                .collect(),
        }
    }

    fn aws_args(&self, cmd: &mut Command) {
        cmd.arg("--kubeconfig")
            .arg(&self.cloud.kubeconfig)
            .args(["--provider", "aws", "--aws-region", "us-east-1"])
            .args(["--aws-endpoint", &self.moto.endpoint])
            .args(["--cluster-name", CLUSTER, "--default-class"])
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .env("NO_COLOR", "1");
    }

    /// `berth controller`, taking over from both previous owners (set through BERTH_ADOPT).
    fn berth(&self) -> Proc {
        let mut cmd = Command::new(binary("berth"));
        cmd.arg("controller");
        self.aws_args(&mut cmd);
        cmd.args(["--identity", "adopt", "--metrics-listen", "127.0.0.1:0"])
            .args([
                "--leader-elect",
                "false",
                "--resync",
                "5s",
                "--gc-interval",
                "2s",
            ])
            .env("BERTH_ADOPT", "ccm-aws,aws-lbc")
            .env(
                "RUST_LOG",
                "info,berth_providers=debug,kube_runtime=warn,kube_client=warn",
            );
        Proc::spawn("berth[adopt]", cmd, self.cloud.dir.join("berth.log"))
    }

    /// `berth adopt plan` with the controller's flags: its stdout.
    fn plan(&self) -> String {
        let mut cmd = Command::new(binary("berth"));
        cmd.args(["adopt", "plan"]);
        self.aws_args(&mut cmd);
        cmd.args(["--adopt", "ccm-aws", "--adopt", "aws-lbc"]);
        let out = cmd.output().expect("run berth adopt plan");
        assert!(
            out.status.success(),
            "berth adopt plan failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes the API server has seen so far.
    fn api_writes(&self) -> usize {
        let v = http_json(&self.cloud.api, "GET", "/mock-cloud/v1/audit", None);
        v["items"].as_array().map_or(0, Vec::len) + v["dropped"].as_u64().unwrap_or(0) as usize
    }

    /// The previous owners' Services: a legacy NLB, an AWS LBC NLB, an NLB whose scheme the
    /// Service no longer asks for, and a Classic ELB.
    fn setup(&self) -> (Previous, Previous, Previous, String) {
        let legacy = self.previous("legacy", "legacy", "internet-facing");
        let lbc = self.previous("lbc", "lbc", "internal");
        // The Service asks for internal (its annotation says so) but the NLB is public.
        let mismatch = self.previous("lbc", "mismatch", "internet-facing");
        let (classic_uid, _) = self.service("classic", json!({}), CCM_FINALIZER);
        let elb = self.moto.ctl(&[
            "classic",
            "default/classic",
            &classic_uid,
            CLUSTER,
            &self.subnets[0],
        ]);
        self.publish("classic", elb["dns"].as_str().unwrap());
        (legacy, lbc, mismatch, classic_uid)
    }
}

fn lb<'a>(st: &'a State, arn: &str) -> Option<&'a Value> {
    st.0["loadBalancers"]
        .as_array()?
        .iter()
        .find(|l| l["arn"] == arn)
}

fn tg<'a>(st: &'a State, arn: &str) -> Option<&'a Value> {
    st.0["targetGroups"]
        .as_array()?
        .iter()
        .find(|t| t["arn"] == arn)
}

/// The Service's NLB is berth's now: same ARN and DNS name, berth's tags, its one listener
/// on a berth target group holding both instances at the NodePort, the old groups gone.
fn adopted(w: &World, st: &State, p: &Previous, from: &str) -> Result<(), String> {
    let l = lb(st, &p.arn).ok_or("the load balancer is gone")?;
    if l["dns"] != p.dns.as_str() {
        return Err(format!("DNS name changed: {}", l["dns"]));
    }
    let tags = &l["tags"];
    if tags["berth.io/service-uid"] != p.uid.as_str()
        || tags["berth.io/cluster"] != CLUSTER
        || tags["berth.io/adopted-from"] != from
    {
        return Err(format!("berth's tags missing: {tags}"));
    }
    let listeners = l["listeners"].as_array().unwrap();
    if listeners.len() != 1 || listeners[0]["port"] != 80 {
        return Err(format!("listeners: {listeners:?}"));
    }
    let g = tg(st, listeners[0]["targetGroup"].as_str().unwrap_or(""))
        .ok_or("the listener's target group is missing")?;
    if g["tags"]["berth.io/service-uid"] != p.uid.as_str() {
        return Err(format!("listener still on {}", g["name"]));
    }
    let svc = w.cloud.service(p.name).unwrap();
    let np = svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    let mut want: Vec<String> = w.instances.iter().map(|i| format!("{i}:{np}")).collect();
    want.sort();
    if g["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        != want
    {
        return Err(format!("targets {} != {want:?}", g["targets"]));
    }
    for old in &p.tgs {
        if tg(st, old).is_some() {
            return Err(format!("previous owner's target group {old} still exists"));
        }
    }
    Ok(())
}

fn warning(w: &World, name: &str) -> Option<String> {
    w.cloud.events(name).into_iter().find_map(|e| {
        (e["type"] == "Warning" && e["reason"] == "AdoptLoadBalancerRefused")
            .then(|| e["message"].as_str().unwrap_or("").to_string())
    })
}

#[test]
fn aws_adopt_takes_over_legacy_and_lbc_nlbs_in_place_and_refuses_mismatches() {
    let w = World::start("aws-adopt");
    let (legacy, lbc, mismatch, classic_uid) = w.setup();
    // A take-over interrupted right after berth tagged the NLB: found by berth's own tags.
    let halfway = w.previous("legacy", "halfway", "internet-facing");
    w.moto.ctl(&[
        "tag",
        &halfway.arn,
        &format!("berth.io/cluster={CLUSTER}"),
        &format!("berth.io/service-uid={}", halfway.uid),
        "berth.io/adopted-from=ccm-aws",
    ]);
    // One interrupted after its listener was switched, before the old group was deleted:
    // the mark berth left names the group no listener uses any more.
    let cutoff = w.previous("legacy", "cutoff", "internet-facing");
    let svc = w.cloud.service("cutoff").unwrap();
    let np = svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    let cut = w.moto.ctl(&[
        "switch",
        &cutoff.arn,
        "80",
        &w.vpc,
        &np.to_string(),
        &w.instances.join(","),
    ]);
    let cut_tg = cut["tg"].as_str().unwrap().to_string();
    w.moto.ctl(&[
        "tag",
        &cutoff.arn,
        &format!("berth.io/cluster={CLUSTER}"),
        &format!("berth.io/service-uid={}", cutoff.uid),
        "berth.io/adopted-from=ccm-aws",
        &format!("berth.io/retiring-target-group.80={}", cutoff.tgs[0]),
    ]);
    let before = w.moto.state();
    let lbs_before = before.lbs().len();

    // Sample the listeners' target groups with boto3 while berth takes over.
    let sampler = Command::new(moto::venv().join("bin/python"))
        .arg(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("tests/aws/moto_ctl.py"),
        )
        .args([&w.moto.endpoint, "sample", "25", &legacy.arn, &lbc.arn])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the sampler");
    std::thread::sleep(Duration::from_secs(2));
    let started = std::time::Instant::now();
    let mut berth = w.berth();

    for (p, from, gone) in [
        (&legacy, "ccm-aws", CCM_FINALIZER),
        (&lbc, "aws-lbc", LBC_FINALIZER),
        (&halfway, "ccm-aws", CCM_FINALIZER),
        (&cutoff, "ccm-aws", CCM_FINALIZER),
    ] {
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            let st = w.moto.state();
            let svc = w.cloud.service(p.name).unwrap();
            let fs = finalizers(&svc);
            let res = adopted(&w, &st, p, from).and_then(|()| {
                if fs.iter().any(|f| f == gone)
                    || !fs.iter().any(|f| f.starts_with(BERTH_FINALIZER))
                {
                    Err(format!("finalizers {fs:?}"))
                } else if svc["status"]["loadBalancer"]["ingress"][0]["hostname"] != p.dns.as_str()
                {
                    Err(format!("status {}", svc["status"]))
                } else {
                    Ok(())
                }
            });
            match res {
                Ok(()) => break,
                Err(e) => assert!(
                    std::time::Instant::now() < deadline,
                    "{} not taken over in {DEADLINE:?}: {e}\n{}",
                    p.name,
                    berth.output()
                ),
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let events = w.cloud.event_reasons(p.name);
        assert!(
            events.iter().any(|r| r == "AdoptedLoadBalancer"),
            "{events:?}"
        );
    }
    let st = w.moto.state();
    assert_eq!(
        st.lbs().len(),
        lbs_before,
        "no load balancer was added or replaced"
    );
    eprintln!(
        "figure: all four NLBs taken over {:?} after berth started",
        started.elapsed()
    );
    // The interrupted switch: the marked group deleted, the mark removed; the group the
    // listener had moved to is not the previous owner's, so berth leaves it.
    let marked = lb(&st, &cutoff.arn).unwrap()["tags"].clone();
    assert!(
        marked
            .as_object()
            .unwrap()
            .keys()
            .all(|k| !k.starts_with("berth.io/retiring-target-group.")),
        "the mark is left: {marked}"
    );
    assert!(
        tg(&st, &cut_tg).is_some(),
        "berth deleted a group it did not own"
    );
    let log = berth.output();
    for (line, n) in [
        // The interrupted ones carried only some of berth's tags: the rest are added.
        ("Took over load balancer", 4),
        ("Switched listener to berth's target group", 4),
        // Three deleted after their switch, one (a substring) found by its mark.
        ("Deleted the previous owner's target group", 4),
        ("left by an interrupted take-over", 1),
    ] {
        assert_eq!(log.matches(line).count(), n, "{line:?}:\n{log}");
    }

    // Refused: a Warning naming why; the Service and its load balancer as they were.
    let why = wait_for("mismatch's Warning", DEADLINE, || warning(&w, "mismatch"));
    assert!(
        why.contains("internet-facing") && why.contains("internal"),
        "{why}"
    );
    let why = wait_for("classic's Warning", DEADLINE, || warning(&w, "classic"));
    assert!(why.contains("Classic ELB"), "{why}");
    for (name, uid) in [("mismatch", &mismatch.uid), ("classic", &classic_uid)] {
        let svc = w.cloud.service(name).unwrap();
        let fs = finalizers(&svc);
        let want = if name == "classic" {
            CCM_FINALIZER
        } else {
            LBC_FINALIZER
        };
        assert_eq!(fs, vec![want.to_string()], "{name}: finalizers");
        assert_eq!(st.count_of(uid), 0, "{name}: berth made or tagged nothing");
    }
    assert_eq!(
        lb(&st, &mismatch.arn).map(|l| l["tags"].clone()),
        lb(&before, &mismatch.arn).map(|l| l["tags"].clone()),
        "the mismatching NLB is untouched"
    );
    for t in &mismatch.tgs {
        assert_eq!(
            tg(&st, t).map(|g| g["targets"].clone()),
            tg(&before, t).map(|g| g["targets"].clone())
        );
    }

    // Never a listener without targets, and the switch was seen happening.
    let out = sampler.wait_with_output().expect("sampler");
    assert!(out.status.success(), "sampler failed");
    let s: Value = serde_json::from_slice(&out.stdout).expect("sampler JSON");
    assert_eq!(
        s["empty"],
        json!([]),
        "a listener forwarded to a group without targets"
    );
    for p in [&legacy, &lbc] {
        let groups = s["seen"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["lb"] == p.arn.as_str())
            .count();
        assert!(
            groups >= 2,
            "{}: the sampler saw {groups} target group(s): {s}",
            p.name
        );
    }
    assert!(s["samples"].as_u64().unwrap() > 10, "{s}");
    eprintln!(
        "figure: {} samples of both NLBs' listeners, none without targets",
        s["samples"]
    );

    // berth owns them now: deleting the Service deletes the same NLB.
    w.cloud
        .kubectl_ok(&["delete", "service", "legacy", "--wait=false"]);
    w.cloud
        .kubectl_ok(&["delete", "service", "lbc", "--wait=false"]);
    for p in [&legacy, &lbc] {
        let deadline = std::time::Instant::now() + DEADLINE;
        while lb(&w.moto.state(), &p.arn).is_some() || w.cloud.service(p.name).is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "{} not deleted",
                p.name
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        assert_eq!(
            w.moto.state().count_of(&p.uid),
            0,
            "{}: everything deleted",
            p.name
        );
    }
    berth.stop(Duration::from_secs(10));
}

#[test]
fn aws_adopt_plan_prints_what_it_would_do_and_writes_nothing() {
    let w = World::start("aws-adopt-plan");
    let (legacy, lbc, _mismatch, _) = w.setup();
    let before = w.moto.state();
    let writes = w.api_writes();
    let out = w.plan();
    assert_eq!(
        w.api_writes(),
        writes,
        "berth adopt plan wrote to the API server"
    );
    assert_eq!(
        w.moto.state().0,
        before.0,
        "berth adopt plan changed the cloud"
    );
    let line = |name: &str| -> String {
        out.lines()
            .find(|l| l.starts_with(&format!("default/{name}: ")))
            .unwrap_or_else(|| panic!("no line for {name}:\n{out}"))
            .to_string()
    };
    assert_eq!(
        line("legacy"),
        format!(
            "default/legacy: adopt from ccm-aws: {} ({})",
            legacy.arn, legacy.dns
        )
    );
    assert_eq!(
        line("lbc"),
        format!("default/lbc: adopt from aws-lbc: {} ({})", lbc.arn, lbc.dns)
    );
    assert!(
        line("mismatch").contains("not adopted") && line("mismatch").contains("internet-facing"),
        "{out}"
    );
    assert!(line("classic").contains("Classic ELB"), "{out}");
    for want in [
        "tag load balancer with berth's ownership",
        "listener 80/TCP: register 2 targets",
        "remove service.kubernetes.io/load-balancer-cleanup",
        "remove service.k8s.aws/resources",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
}
