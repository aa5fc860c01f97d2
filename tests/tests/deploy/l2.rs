//! The l2 overlay's RBAC against `mock-cloud serve --rbac`, as `deploy.rs` proves the http
//! overlay's:
//!
//! * **sufficient**: the CRDs and `deploy/render/berth-l2.yaml` applied (without its example
//!   IPAddressPool and L2Advertisement, whose range the operator replaces), `berth controller`
//!   runs with the Deployment container's arguments as `berth-controller` and one `berth
//!   speaker` with the DaemonSet container's arguments as `berth-speaker` (node `node-1`), and
//!   the l2 lifecycle works with no request denied (BGP mode's watches, Secret and
//!   BGPSessionStatus included): a pool and an advertisement, a Service
//!   gets a VIP, the speaker announces it (annotation, `NodeAssigned`), an ETP=Local Service
//!   follows its EndpointSlice, a failback repeats `NodeAssigned` (an event series), pool
//!   status counts follow, the Services are deleted;
//! * **minimal**: each (apiGroup, resource, verb) of the controller's `berth-controller-l2`
//!   ClusterRole and of the speaker's `berth-speaker` ClusterRole, as the rendered manifest
//!   has them at run time, is removed in turn; each time the lifecycle makes its
//!   ServiceAccount hit a 403 for exactly that permission, and nothing else is denied.
//!
//! The speaker opens real AF_PACKET sockets, so this needs root (CI runs as root): without it
//! the test fails, it does not skip. `lo` has no MAC address and the speaker refuses it, so
//! it announces on one end of a veth pair this test creates (and deletes): nothing leaves
//! the host.

use super::*;

const SPEAKER_SA: &str = "berth-speaker";
const L2_CLASS: &str = "berth.io/l2";
/// The node the one speaker runs as.
const NODE: &str = "node-1";
const ANNOUNCING: &str = "berth.io/announcing-node";
const POOL: &str = "lab";
/// A documentation range: 16 addresses.
const RANGE: &str = "198.51.100.0/28";
const RANGE_PREFIX: &str = "198.51.100.";
const RANGE_SIZE: i64 = 16;
/// The controller role of the l2 overlay whose rules are removed in turn (the base roles are
/// the http test's).
const L2_CONTROLLER_ROLE: &str = "ClusterRole/berth-controller-l2";

/// A veth pair in this host's namespace, both ends up and without addresses: the speaker
/// announces on one end (frames reach only the other end). Deleted on drop.
struct Veth {
    name: String,
}

impl Veth {
    fn create() -> Veth {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let euid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("?");
        assert_eq!(
            euid, "0",
            "the l2 deploy test runs `berth speaker` with raw AF_PACKET sockets on a veth pair it creates: run it as root (CI does)"
        );
        let name = format!("bd{}", std::process::id());
        let peer = format!("{name}p");
        let _ = Command::new("ip").args(["link", "del", &name]).output();
        run(Command::new("ip").args(["link", "add", &name, "type", "veth", "peer", "name", &peer]));
        let v = Veth { name };
        for n in [&v.name, &peer] {
            run(Command::new("ip").args(["link", "set", n, "up"]));
        }
        v
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.name])
            .output();
    }
}

/// The overlay's objects a cluster gets, without the example pool and advertisement.
fn install(cloud: &Cloud, docs: &[Value]) {
    let (examples, objects): (Vec<Value>, Vec<Value>) = docs
        .iter()
        .cloned()
        .partition(|d| d["apiVersion"].as_str() == Some("berth.io/v1alpha1"));
    assert_eq!(
        examples.len(),
        2,
        "the overlay's example IPAddressPool and L2Advertisement"
    );
    cloud.apply(&objects);
    wait_for("the berth.io resources to be served", DEADLINE, || {
        cloud
            .try_kubectl(&["get", "ipaddresspools,l2advertisements"])
            .ok()
    });
}

/// A free UDP port on 127.0.0.1 (for the speaker's failure detector).
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port()
}

/// The speakers' membership key as the DaemonSet mounts it at `path`: the Secret its volume
/// names, created by the controller (the l2 overlay ships no key), read as an administrator
/// and written to a file. When the controller cannot create it (a removed permission), a
/// key of the test's own, so the rest of the lifecycle still runs.
fn membership_key_file(cloud: &Cloud, pod: &Value, path: &str) -> PathBuf {
    let dir = Path::new(path)
        .parent()
        .expect("a directory")
        .to_str()
        .expect("utf-8");
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .find(|m| m["mountPath"] == dir)
        .unwrap_or_else(|| panic!("nothing is mounted at {dir}"));
    let volume = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");
    let secret = volume["secret"]["secretName"]
        .as_str()
        .expect("a Secret volume");
    let item = Path::new(path)
        .file_name()
        .expect("a file")
        .to_str()
        .expect("utf-8");
    let key = poll(Duration::from_secs(10), &|| false, || {
        let s = cloud
            .try_kubectl(&["get", "secret", "-n", NS, secret, "-o", "json"])
            .ok()?;
        let v: Value = serde_json::from_str(&s).ok()?;
        let b64 = v["data"][item].as_str()?.to_string();
        let out = Command::new("base64")
            .arg("-d")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .ok()?;
        use std::io::Write;
        let mut out = out;
        out.stdin.take()?.write_all(b64.as_bytes()).ok()?;
        let o = out.wait_with_output().ok()?;
        String::from_utf8(o.stdout).ok()
    });
    let text = key.unwrap_or_else(|| "membership-key-of-the-test-0123456789abcdef\n".to_string());
    let f = cloud.dir.join("membership-key");
    std::fs::write(&f, text).expect("write the key file");
    f
}

/// A `berth speaker` process.
struct Speaker {
    proc: Proc,
    /// `host:port` of its /metrics.
    metrics: String,
    /// The DaemonSet's `terminationGracePeriodSeconds`: SIGKILL after it, as the kubelet.
    grace: Duration,
}

impl Speaker {
    /// One sample of its /metrics.
    fn metric(&self, name: &str) -> Option<f64> {
        let (code, text) = http(&self.metrics, "GET", "/metrics", None).ok()?;
        (code == 200).then_some(())?;
        text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == name).then(|| v.trim().parse().ok()).flatten()
        })
    }

    /// VIPs it announces now.
    fn announced(&self) -> Option<f64> {
        self.metric("berth_speaker_announced_vips")
    }
}

/// `berth speaker` with the DaemonSet container's arguments and downward-API environment,
/// as the ServiceAccount, as node [`NODE`]. Adjusted for a process on this host: the failure
/// detector and metrics bind to 127.0.0.1 (free ports), and what a node would provide by
/// default is given explicitly: the interface to announce on (one end of the test's veth pair) and the peers
/// (only itself; by default every Node's InternalIP).
fn start_speaker(
    cloud: &Cloud,
    docs: &[Value],
    kubeconfig: &Path,
    iface: &str,
    label: &str,
) -> Speaker {
    let ds = find(docs, "DaemonSet", "berth-speaker");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], SPEAKER_SA);
    let c = &pod["containers"][0];
    let bind = format!("127.0.0.1:{}", free_udp_port());
    let mut rewritten = 0;
    let mut args: Vec<String> = c["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| {
            let a = a.as_str().expect("arg");
            if a.starts_with("--memberlist-bind=") {
                rewritten += 1;
                format!("--memberlist-bind={bind}")
            } else if a.starts_with("--metrics-listen=") {
                rewritten += 1;
                "--metrics-listen=127.0.0.1:0".into()
            } else if let Some(path) = a.strip_prefix("--membership-key-file=") {
                rewritten += 1;
                format!(
                    "--membership-key-file={}",
                    membership_key_file(cloud, pod, path).display()
                )
            } else {
                a.to_string()
            }
        })
        .collect();
    assert_eq!(args[0], "speaker");
    assert_eq!(
        rewritten, 3,
        "memberlist and metrics addresses, membership key: {args:?}"
    );
    args.push(format!("--interfaces={iface}"));
    args.push(format!("--memberlist-peers={NODE}={bind}"));
    args.push(format!("--kubeconfig={}", kubeconfig.display()));
    let mut cmd = Command::new(binary("berth"));
    cmd.args(&args)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .env_remove("KUBECONFIG");
    for e in c["env"].as_array().expect("env") {
        let name = e["name"].as_str().expect("name");
        match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            Some("spec.nodeName") => cmd.env(name, NODE),
            Some("status.hostIP") => cmd.env(name, "127.0.0.1"),
            _ => panic!("unexpected speaker environment {e}"),
        };
    }
    let mut proc = Proc::spawn(
        &format!("speaker[{}{label}]", cloud.ip_block),
        cmd,
        cloud.dir.join("speaker.log"),
    );
    let line = proc.wait_for_line("Serving /metrics and /healthz", Duration::from_secs(30));
    let metrics = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("address="))
        .expect("address")
        .to_string();
    let grace = Duration::from_secs(
        pod["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("terminationGracePeriodSeconds"),
    );
    Speaker {
        proc,
        metrics,
        grace,
    }
}

fn l2_service(name: &str, app: &str, local: bool) -> Value {
    let mut s = tcp_service(name, app, 80);
    s["spec"]["loadBalancerClass"] = json!(L2_CLASS);
    if local {
        s["spec"]["externalTrafficPolicy"] = json!("Local");
    }
    s
}

/// The Service's first ingress address if it is a VIP from the test's pool.
fn vip(cloud: &Cloud, name: &str) -> Option<String> {
    let s = cloud.try_get("service", name).ok().flatten()?;
    let i = s.pointer("/status/loadBalancer/ingress/0")?;
    let ip = i["ip"].as_str()?;
    (i["ipMode"] == "VIP" && ip.starts_with(RANGE_PREFIX)).then(|| ip.to_string())
}

fn announcer(cloud: &Cloud, name: &str) -> Option<String> {
    let s = cloud.try_get("service", name).ok().flatten()?;
    s["metadata"]["annotations"][ANNOUNCING]
        .as_str()
        .map(str::to_string)
}

/// The highest count of the events about `name` with `reason` (0: none).
fn event_count(cloud: &Cloud, name: &str, reason: &str) -> u64 {
    cloud
        .events(name)
        .iter()
        .filter(|e| e["reason"] == reason)
        .map(|e| e["count"].as_u64().unwrap_or(1))
        .max()
        .unwrap_or(0)
}

/// The pool's (assigned, available) once its `Valid` condition is True.
fn pool_counts(cloud: &Cloud) -> Option<(i64, i64)> {
    let p = cloud.try_get("ipaddresspool", POOL).ok().flatten()?;
    let st = &p["status"];
    let valid = st["conditions"]
        .as_array()?
        .iter()
        .any(|c| c["type"] == "Valid" && c["status"] == "True");
    valid.then_some(())?;
    Some((st["assigned"].as_i64()?, st["available"].as_i64()?))
}

/// The l2 lifecycle; returns the steps that failed. `stop` ends it early.
fn lifecycle(
    cloud: &Cloud,
    speaker: &Speaker,
    timeout: Duration,
    stop: &dyn Fn() -> bool,
) -> Vec<&'static str> {
    let mut failed = Vec::new();
    macro_rules! step {
        ($name:expr, $ok:expr) => {
            if stop() {
                return failed;
            }
            if !$ok {
                failed.push($name);
            }
        };
    }
    let wait = |f: &mut dyn FnMut() -> bool| poll(timeout, stop, || f().then_some(())).is_some();
    // 1. A pool and an advertisement for it: the controller reports the pool's status.
    cloud.apply(&[
        json!({"apiVersion": "berth.io/v1alpha1", "kind": "IPAddressPool",
               "metadata": {"name": POOL}, "spec": {"addresses": [RANGE]}}),
        json!({"apiVersion": "berth.io/v1alpha1", "kind": "L2Advertisement",
               "metadata": {"name": POOL}, "spec": {"ipAddressPools": [POOL]}}),
    ]);
    step!(
        "pool status",
        wait(&mut || pool_counts(cloud) == Some((0, RANGE_SIZE)))
    );
    // 2. A Service gets a VIP from it; the speaker on node-1 announces it and says so.
    cloud.apply(&[pod("web-1", "web", None), l2_service("web", "web", false)]);
    step!("address", wait(&mut || vip(cloud, "web").is_some()));
    step!(
        "IPAllocated event",
        wait(&mut || event_count(cloud, "web", "IPAllocated") > 0)
    );
    step!(
        "announcing-node annotation",
        wait(&mut || announcer(cloud, "web").as_deref() == Some(NODE))
    );
    step!(
        "ServiceL2Status of web",
        wait(&mut || {
            cloud
                .try_get("servicel2status", &format!("web-{NODE}"))
                .ok()
                .flatten()
                .is_some_and(|s| s["spec"]["node"] == NODE)
        })
    );
    step!(
        "NodeAssigned event",
        wait(&mut || event_count(cloud, "web", "NodeAssigned") > 0)
    );
    // 3. ETP=Local: announced from the node of a ready endpoint (its EndpointSlice).
    cloud.apply(&[
        pod("local-1", "local", Some(NODE)),
        l2_service("local", "local", true),
    ]);
    step!("local address", wait(&mut || vip(cloud, "local").is_some()));
    step!(
        "local announced from the endpoint's node",
        wait(&mut || announcer(cloud, "local").as_deref() == Some(NODE))
    );
    step!(
        "local NodeAssigned event",
        wait(&mut || event_count(cloud, "local", "NodeAssigned") > 0)
    );
    step!(
        "pool counts with two Services",
        wait(&mut || pool_counts(cloud) == Some((2, RANGE_SIZE - 2)))
    );
    step!(
        "speaker announces two VIPs",
        wait(&mut || speaker.announced() == Some(2.0))
    );
    // 4. A failback: the endpoint leaves node-1, which stops announcing; another node's
    //    speaker announces it meanwhile (its annotation); the endpoint comes back and node-1
    //    takes the VIP back: the annotation names it again and NodeAssigned repeats (the
    //    recorder patches the event's series).
    cloud.kubectl_ok(&["delete", "pod", "local-1"]);
    step!(
        "released without a local endpoint",
        wait(&mut || speaker.announced() == Some(1.0))
    );
    cloud.kubectl_ok(&[
        "annotate",
        "service",
        "local",
        &format!("{ANNOUNCING}=node-2"),
        "--overwrite",
    ]);
    cloud.apply(&[pod("local-1", "local", Some(NODE))]);
    step!(
        "announced again",
        wait(&mut || announcer(cloud, "local").as_deref() == Some(NODE))
    );
    step!(
        "repeated NodeAssigned",
        wait(&mut || event_count(cloud, "local", "NodeAssigned") >= 2)
    );
    // 5. Delete: the controller lets the Services go, the addresses return to the pool and
    //    the speaker stops announcing.
    cloud.kubectl_ok(&["delete", "service", "web", "local", "--wait=false"]);
    step!(
        "delete",
        wait(&mut || {
            ["web", "local"]
                .iter()
                .all(|n| cloud.try_get("service", n).is_ok_and(|s| s.is_none()))
        })
    );
    step!(
        "pool counts after delete",
        wait(&mut || pool_counts(cloud) == Some((0, RANGE_SIZE)))
    );
    step!(
        "speaker stops announcing",
        wait(&mut || speaker.announced() == Some(0.0))
    );
    // 6. BGP mode: a BGPPeer with a password Secret (read by name in the speaker's
    //    namespace) that refuses connections; the speaker reports the session in a
    //    BGPSessionStatus, and deletes it when the peer goes.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    cloud.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "tor-md5",
        "-n",
        NS,
        "--from-literal=password=s3cret",
    ]);
    cloud.apply(
        &[json!({"apiVersion": "berth.io/v1alpha1", "kind": "BGPPeer",
               "metadata": {"name": "tor"},
               "spec": {"peerAddress": "127.0.0.1", "peerPort": closed, "peerASN": 64512,
                        "myASN": 64512, "passwordSecret": {"name": "tor-md5"}}})],
    );
    let session = format!("tor-{NODE}");
    step!(
        "BGPSessionStatus of tor",
        wait(&mut || {
            cloud
                .try_get("bgpsessionstatus", &session)
                .ok()
                .flatten()
                .is_some_and(|s| {
                    s["spec"]["node"] == NODE
                        && s["status"]["state"]
                            .as_str()
                            .is_some_and(|st| st != "Invalid")
                })
        })
    );
    cloud.kubectl_ok(&["delete", "bgppeer", "tor", "--wait=false"]);
    step!(
        "BGPSessionStatus gone with its peer",
        wait(&mut || cloud
            .try_get("bgpsessionstatus", &session)
            .is_ok_and(|s| s.is_none()))
    );
    failed
}

/// A cluster with the l2 overlay (`docs`, possibly with a permission removed), the controller
/// and the speaker running as their ServiceAccounts.
struct L2Run {
    cloud: Cloud,
    controller: Controller,
    speaker: Speaker,
}

impl L2Run {
    /// `removed`: the permission missing from `applied`, if any (named in the speaker's
    /// messages).
    fn start(
        rendered_docs: &[Value],
        applied: &[Value],
        iface: &str,
        removed: Option<&Perm>,
    ) -> L2Run {
        let cloud = rbac_cloud(if removed.is_some() {
            "deploy-l2-minus"
        } else {
            "deploy-l2"
        });
        install(&cloud, applied);
        let args = controller_args(&cloud, rendered_docs, &[]);
        assert!(args.iter().any(|a| a == "--provider=l2"), "{args:?}");
        let kc = service_account_kubeconfig(&cloud, NS, SA);
        let skc = service_account_kubeconfig(&cloud, NS, SPEAKER_SA);
        let controller = start_controller(&cloud, &args, &kc);
        let label = removed.map(|p| format!(" without {p}")).unwrap_or_default();
        let speaker = start_speaker(&cloud, rendered_docs, &skc, iface, &label);
        L2Run {
            cloud,
            controller,
            speaker,
        }
    }

    /// SIGTERM to both; SIGKILL after the grace periods of the manifests.
    fn stop(&mut self) {
        self.speaker.proc.stop(self.speaker.grace);
        self.controller.stop();
    }
}

pub(super) fn rbac_is_sufficient_and_every_rule_is_needed() {
    let veth = Veth::create();
    let docs = yaml_docs(&rendered("l2"));

    // --- sufficient ------------------------------------------------------------------
    let started = Instant::now();
    let mut r = L2Run::start(&docs, &docs, &veth.name, None);
    eprintln!("berth {}", controller_args(&r.cloud, &docs, &[]).join(" "));
    let failed = lifecycle(&r.cloud, &r.speaker, DEADLINE, &|| false);
    assert!(
        r.cloud
            .try_kubectl(&["get", "secret", "-n", NS, "berth-memberlist"])
            .is_ok(),
        "the controller did not create the membership key Secret"
    );
    let d = denials(&r.cloud);
    let by_user = &http_json(&r.cloud.api, "GET", "/mock-cloud/v1/denials", None)["requestsByUser"];
    for sa in [SA, SPEAKER_SA] {
        let user = format!("system:serviceaccount:{NS}:{sa}");
        assert!(
            by_user[&user].as_u64().unwrap_or(0) > 0,
            "{sa} must have authenticated as {user}: {by_user}"
        );
    }
    assert!(
        failed.is_empty() && d.is_empty(),
        "with the shipped l2 roles the lifecycle must work and nothing be denied; failed steps {failed:?}, denied {d:#?}"
    );
    // On SIGTERM the speaker exits cleanly within the DaemonSet's grace period.
    r.speaker.proc.signal("TERM");
    let exit = r.speaker.proc.wait_exit(r.speaker.grace);
    assert!(
        exit.is_some_and(|s| s.success()),
        "on SIGTERM the speaker must exit cleanly within the DaemonSet's terminationGracePeriodSeconds ({:?}): {exit:?}",
        r.speaker.grace
    );
    r.stop();
    drop(r);
    eprintln!(
        "sufficient: the l2 lifecycle ran as {SA} and {SPEAKER_SA} in {:?}",
        started.elapsed()
    );

    // --- minimal: each rule of the l2 controller role and of the speaker role removed ---
    let controller: Vec<Perm> = permissions(&docs, SA)
        .into_iter()
        .filter(|p| p.role == L2_CONTROLLER_ROLE)
        .collect();
    let speaker = permissions(&docs, SPEAKER_SA);
    assert!(!controller.is_empty(), "no {L2_CONTROLLER_ROLE} rules");
    assert!(speaker.len() >= 10, "{speaker:?}");
    let perms: Vec<Perm> = controller.into_iter().chain(speaker).collect();
    let started = Instant::now();
    let results: Mutex<Vec<(Perm, Result<String, String>)>> = Mutex::new(Vec::new());
    // Popped from the end: the speaker's rules (the longer runs) start first.
    let queue = Mutex::new(perms.clone());
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                loop {
                    let Some(p) = queue.lock().expect("queue").pop() else {
                        return;
                    };
                    let r = removal_run(&docs, &p, &veth.name);
                    results.lock().expect("results").push((p, r));
                }
            });
        }
    });
    let mut results = results.into_inner().expect("results");
    results.sort_by_key(|(p, _)| perms.iter().position(|q| q == p));
    let mut bad = Vec::new();
    for (p, r) in &results {
        match r {
            Ok(msg) => eprintln!("needed: {p:<60} -> {msg}"),
            Err(e) => {
                eprintln!("UNNEEDED? {p}: {e}");
                bad.push(p.to_string());
            }
        }
    }
    eprintln!(
        "minimal: {} l2 permissions removed in turn in {:?}",
        perms.len(),
        started.elapsed()
    );
    assert_eq!(results.len(), perms.len());
    assert!(bad.is_empty(), "permissions no behaviour needed: {bad:?}");
}

/// The l2 lifecycle with `p` removed: Ok(how it failed) once its ServiceAccount is denied
/// `p`, and nothing else was denied.
fn removal_run(docs: &[Value], p: &Perm, iface: &str) -> Result<String, String> {
    let mut r = L2Run::start(docs, &without(docs, p), iface, Some(p));
    let seen = || denied(&r.cloud, p).is_some();
    let failed = lifecycle(&r.cloud, &r.speaker, Duration::from_secs(10), &seen);
    r.stop();
    let user = format!("system:serviceaccount:{NS}:{}", p.sa);
    let others: Vec<Value> = denials(&r.cloud)
        .into_iter()
        .filter(|d| {
            !(d["user"] == user.as_str()
                && d["apiGroup"] == p.group.as_str()
                && d["resource"] == p.resource.as_str()
                && d["verb"] == p.verb.as_str())
        })
        .collect();
    match denied(&r.cloud, p) {
        Some(_) if !others.is_empty() => Err(format!("other requests denied too: {others:?}")),
        Some(msg) => Ok(format!(
            "403 \"{}\"{}",
            msg.split(": User").next().unwrap_or(&msg),
            if failed.is_empty() {
                String::new()
            } else {
                format!("; failed: {}", failed.join(", "))
            }
        )),
        None => Err(format!(
            "lifecycle without it: failed steps {failed:?}, denials {:?}",
            denials(&r.cloud)
        )),
    }
}
