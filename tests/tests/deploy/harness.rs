//! The deploy tests' helpers: rendering, validation, a cloud with RBAC, ServiceAccount kubeconfigs, the lifecycle every RBAC check replays, and permission removal.

use super::*;

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// The virtualenv of `scripts/moto-venv` (with kubernetes-validate).
pub(crate) fn venv() -> PathBuf {
    let dir = std::env::var_os("BERTH_VENV")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR").map(|t| PathBuf::from(t).join("../berth-venv"))
        })
        .unwrap_or_else(|| root().join(".venv"));
    let ok = Command::new(dir.join("bin/python"))
        .args(["-c", "import kubernetes_validate, jsonschema, yaml"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "kubernetes-validate is required and was not found in {} (BERTH_VENV); run ./scripts/moto-venv",
        dir.display()
    );
    dir
}

pub(crate) fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `kubectl kustomize deploy/overlays/OVERLAY`.
pub(crate) fn kustomize(overlay: &str) -> String {
    run(Command::new(kubectl_path())
        .current_dir(root())
        .args(["kustomize", &format!("deploy/overlays/{overlay}")]))
}

/// The objects of a multi-document YAML file.
pub(crate) fn yaml_docs(path: &Path) -> Vec<Value> {
    let out = run(Command::new(venv().join("bin/python"))
        .args([
            "-c",
            "import sys, json, yaml; json.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d], sys.stdout)",
        ])
        .arg(path));
    serde_json::from_str(&out).expect("YAML as JSON")
}

pub(crate) fn rendered(overlay: &str) -> PathBuf {
    root().join(format!("deploy/render/berth-{overlay}.yaml"))
}

pub(crate) fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendered manifests"))
}

/// `mock-cloud serve --rbac` with an API
/// server NodePort range (31000-32767) narrower than berth's default, so a Service with
/// `allocateLoadBalancerNodePorts: false` makes berth hit the API server's 422 and re-read.
pub(crate) fn rbac_cloud(tag: &str) -> Cloud {
    kubectl_path();
    let dir = scratch_dir(tag);
    let kubeconfig = dir.join("kubeconfig");
    let mut cmd = Command::new(binary("mock-cloud"));
    cmd.args(["serve", "--rbac", "--nodes", "3", "--listen", "127.0.0.1:0"])
        .args(["--lb-api-listen", "127.0.0.1:0"])
        .args(["--service-node-port-range", "31000-32767"])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .current_dir(root().join("tests"));
    let mut proc = Proc::spawn(
        &format!("mock-cloud[{tag}]"),
        cmd,
        dir.join("mock-cloud.log"),
    );
    proc.wait_for_line("mock-cloud: fault injection at", Duration::from_secs(30));
    let text = proc.output();
    let after = |prefix: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("mock-cloud did not print {prefix:?}:\n{text}"))
            .trim()
            .trim_start_matches("http://")
            .to_string()
    };
    let api = after("mock-cloud: API server listening on ");
    let lb = after("mock-cloud: load balancer API listening on ");
    let ip_block = after("mock-cloud: nodes, pods and load balancers live in 127.")
        .split('.')
        .next()
        .and_then(|b| b.parse().ok())
        .expect("block");
    Cloud {
        proc,
        dir,
        kubeconfig,
        api,
        lb,
        ip_block,
    }
}

/// What the API server denied the controller's ServiceAccount so far.
pub(crate) fn denials(cloud: &Cloud) -> Vec<Value> {
    http_json(&cloud.api, "GET", "/mock-cloud/v1/denials", None)["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A kubeconfig authenticating as `system:serviceaccount:NS:NAME` (a token mock-cloud
/// issues, as the kubelet mounts one into the pod).
pub(crate) fn service_account_kubeconfig(cloud: &Cloud, ns: &str, name: &str) -> PathBuf {
    let t = http_json(
        &cloud.api,
        "POST",
        "/mock-cloud/v1/token",
        Some(&json!({"namespace": ns, "serviceAccount": name})),
    );
    let token = t["token"].as_str().expect("token").to_string();
    let kc = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": format!("http://{}", cloud.api)}}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": name, "namespace": ns}}],
        "current-context": "c",
    });
    let p = cloud.dir.join(format!("kubeconfig-{ns}-{name}"));
    std::fs::write(&p, kc.to_string()).expect("kubeconfig");
    p
}

/// The Deployment container's arguments, run here: files the pod would mount (the CA
/// ConfigMap, the token Secret) are written under the scratch dir at the same relative
/// paths; the endpoint is mock-cloud's load balancer API and the metrics port a free one.
pub(crate) fn controller_args(cloud: &Cloud, docs: &[Value], secrets: &[Value]) -> Vec<String> {
    let dep = find(docs, "Deployment", "berth-controller");
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], SA);
    let c = &pod["containers"][0];
    let mut mounts: Vec<(String, PathBuf)> = Vec::new();
    for m in c["volumeMounts"].as_array().into_iter().flatten() {
        let path = m["mountPath"].as_str().expect("mountPath").to_string();
        let vol = pod["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == m["name"])
            .expect("volume");
        let dir = cloud.dir.join(format!("mount{path}"));
        std::fs::create_dir_all(&dir).expect("mount dir");
        let data = if let Some(cm) = vol["configMap"]["name"].as_str() {
            find(docs, "ConfigMap", cm)["data"].clone()
        } else if let Some(s) = vol["secret"]["secretName"].as_str() {
            let s = find(secrets, "Secret", s);
            let mut d = serde_json::Map::new();
            for (k, v) in s["stringData"].as_object().expect("stringData") {
                d.insert(k.clone(), v.clone());
            }
            Value::Object(d)
        } else {
            panic!("unexpected volume {vol}");
        };
        for (k, v) in data.as_object().expect("data") {
            std::fs::write(dir.join(k), v.as_str().expect("text")).expect("write");
        }
        mounts.push((path, dir));
    }
    c["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| {
            let a = a.as_str().expect("arg").to_string();
            if a.starts_with("--http-endpoint=") {
                return format!("--http-endpoint={}", cloud.lb_url());
            }
            if a.starts_with("--metrics-listen=") {
                return "--metrics-listen=127.0.0.1:0".into();
            }
            for (path, dir) in &mounts {
                if let Some((flag, rest)) = a.split_once('=')
                    && let Some(tail) = rest.strip_prefix(path.as_str())
                {
                    return format!("{flag}={}{tail}", dir.display());
                }
            }
            a
        })
        .collect()
}

/// `berth controller` with the Deployment's arguments, as the ServiceAccount, with the
/// downward-API environment the Deployment sets.
pub(crate) fn start_controller(cloud: &Cloud, args: &[String], kubeconfig: &Path) -> Controller {
    let identity = "berth-controller-7d9f-abcde";
    let mut cmd = Command::new(binary("berth"));
    cmd.args(args)
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .env("POD_NAME", identity)
        .env("POD_NAMESPACE", NS)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .env_remove("KUBECONFIG");
    let mut proc = Proc::spawn(
        &format!("berth[{}]", cloud.ip_block),
        cmd,
        cloud.dir.join("berth.log"),
    );
    let line = proc.wait_for_line("Serving /metrics", Duration::from_secs(30));
    let admin = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("address="))
        .expect("address")
        .to_string();
    Controller {
        proc,
        identity: identity.into(),
        admin,
    }
}

/// The README's commands, literally (run by `sh` with `KUBECONFIG` set, from the repository
/// root; the token file is the operator's): the rendered http manifests, then the token Secret.
pub(crate) fn readme_install(cloud: &Cloud) -> Vec<Value> {
    std::fs::write(cloud.dir.join("token"), LB_TOKEN).expect("token");
    let sh = |dir: &Path, line: &str| {
        run(Command::new("sh")
            .args(["-ec", line])
            .current_dir(dir)
            .env("KUBECONFIG", &cloud.kubeconfig))
    };
    sh(&root(), "kubectl apply -f deploy/render/berth-http.yaml");
    sh(
        &cloud.dir,
        "kubectl -n berth-system create secret generic berth-http-token --from-file=token=./token \\\n  --dry-run=client -o yaml | kubectl apply -f -",
    );
    yaml_docs(&rendered("http"))
}

/// A permission, as RBAC names it, granted to the ServiceAccount `sa` (in [`NS`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Perm {
    pub(crate) sa: String,
    pub(crate) role: String,
    pub(crate) group: String,
    pub(crate) resource: String,
    pub(crate) verb: String,
}

impl std::fmt::Display for Perm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(f, "{} {g}/{} {}", self.role, self.resource, self.verb)
    }
}

/// Whether the API server denied the permission's ServiceAccount this permission.
pub(crate) fn denied(cloud: &Cloud, p: &Perm) -> Option<String> {
    let user = format!("system:serviceaccount:{NS}:{}", p.sa);
    denials(cloud).into_iter().find_map(|d| {
        (d["user"] == user.as_str()
            && d["apiGroup"] == p.group.as_str()
            && d["resource"] == p.resource.as_str()
            && d["verb"] == p.verb.as_str())
        .then(|| d["message"].as_str().unwrap_or("").to_string())
    })
}

/// Polls `f` until Some, for at most `timeout`; None on timeout or as soon as `stop` holds.
pub(crate) fn poll<T>(
    timeout: Duration,
    stop: &dyn Fn() -> bool,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if stop() || Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn class_service(mut svc: Value) -> Value {
    svc["spec"]["loadBalancerClass"] = json!(CLASS);
    svc
}

/// Runs the lifecycle; returns the steps that failed. `stop` ends it early (a removal run
/// stops once the expected 403 was seen).
pub(crate) fn lifecycle(
    cloud: &Cloud,
    berth: &mut Controller,
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
    cloud.apply(&[
        pod("web-1", "web", None),
        pod("web-2", "web", None),
        class_service(lb_service("web", "web")),
    ]);
    // 1. Address, finalizer, condition, events, traffic.
    let ip = poll(timeout, stop, || {
        cloud
            .try_get("service", "web")
            .ok()
            .flatten()
            .as_ref()
            .and_then(ingress_ip)
    });
    step!("address", ip.is_some());
    step!(
        "finalizer and condition",
        cloud
            .service("web")
            .is_some_and(|s| finalizers(&s).contains(&FINALIZER.to_string())
                && condition(&s).is_some_and(|c| c["status"] == "True"))
    );
    step!(
        "events",
        poll(timeout, stop, || {
            let r = cloud.event_reasons("web");
            (r.contains(&"EnsuringLoadBalancer".into())
                && r.contains(&"EnsuredLoadBalancer".into()))
            .then_some(())
        })
        .is_some()
    );
    step!(
        "traffic",
        ip.is_some_and(|ip| poll(timeout, stop, || ask(Proto::Tcp, ip, 80)
            .filter(|a| a.starts_with("web-")))
        .is_some())
    );
    // 2. A port change: the load balancer follows; EnsuringLoadBalancer repeats (a series).
    let mut svc = class_service(lb_service("web", "web"));
    svc["spec"]["ports"]
        .as_array_mut()
        .expect("ports")
        .push(json!({"name": "alt", "port": 8081, "targetPort": 8080, "protocol": "TCP"}));
    cloud.apply(&[svc]);
    step!(
        "port change",
        poll(timeout, stop, || {
            let s = cloud.service("web")?;
            let ports = s
                .pointer("/status/loadBalancer/ingress/0/ports")?
                .as_array()?;
            (ports.len() == 3).then_some(())
        })
        .is_some()
    );
    step!(
        "repeated event",
        poll(timeout, stop, || {
            cloud
                .events("web")
                .iter()
                .any(|e| e["reason"] == "EnsuringLoadBalancer" && e["count"].as_u64() >= Some(2))
                .then_some(())
        })
        .is_some()
    );
    // 3. A node change: an excluded node leaves the targets.
    cloud.kubectl_ok(&[
        "label",
        "node",
        "node-3",
        "node.kubernetes.io/exclude-from-external-load-balancers=true",
    ]);
    step!(
        "node change",
        poll(timeout, stop, || {
            let lb = cloud.lb_for("web")?;
            (lb_targets(&lb).len() == 2).then_some(())
        })
        .is_some()
    );
    // 4. A NodePort berth picks is refused (422): it re-reads the Service and says why.
    let mut noalloc = class_service(tcp_service("noalloc", "web", 80));
    noalloc["spec"]["allocateLoadBalancerNodePorts"] = json!(false);
    cloud.apply(&[noalloc]);
    step!(
        "NodePort conflict reported",
        poll(timeout, stop, || {
            cloud
                .events("noalloc")
                .iter()
                .any(|e| {
                    e["reason"] == "SyncLoadBalancerFailed"
                        && e["message"]
                            .as_str()
                            .is_some_and(|m| m.contains("spec.ports[].nodePort"))
                })
                .then_some(())
        })
        .is_some()
    );
    // 5. Delete: the load balancer goes, the finalizer lets the Service go.
    cloud.kubectl_ok(&["delete", "service", "web", "--wait=false"]);
    step!(
        "delete",
        poll(timeout, stop, || {
            (cloud.try_get("service", "web").ok()?.is_none() && cloud.lb_for("web").is_none())
                .then_some(())
        })
        .is_some()
    );
    step!(
        "deleted event",
        poll(timeout, stop, || cloud
            .event_reasons("web")
            .contains(&"DeletedLoadBalancer".into())
            .then_some(()))
        .is_some()
    );
    // 6. The leader renews its lease; a clean shutdown releases it for the standby replica.
    let lease = || {
        cloud
            .try_kubectl(&[
                "-n",
                NS,
                "get",
                "lease",
                "berth-berth.io.http",
                "-o",
                "json",
            ])
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
    };
    step!(
        "lease renewed",
        poll(timeout, stop, || {
            let l = lease()?;
            (l["spec"]["renewTime"] != l["spec"]["acquireTime"]).then_some(())
        })
        .is_some()
    );
    if stop() {
        return failed;
    }
    berth.stop();
    step!(
        "lease released",
        lease().is_some_and(|l| l["spec"]["holderIdentity"]
            .as_str()
            .is_none_or(str::is_empty))
    );
    failed
}

/// The controller's resident memory (VmHWM, VmRSS) in KiB.
pub(crate) fn memory_kib(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Every (role, apiGroup, resource, verb) the shipped roles grant the ServiceAccount `sa`.
pub(crate) fn permissions(docs: &[Value], sa: &str) -> Vec<Perm> {
    let bound: Vec<String> = docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRoleBinding" || d["kind"] == "RoleBinding")
        .filter(|d| {
            d["subjects"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["name"] == sa && s["namespace"] == NS))
        })
        .map(|d| {
            format!(
                "{}/{}",
                d["roleRef"]["kind"].as_str().unwrap_or(""),
                d["roleRef"]["name"].as_str().unwrap_or("")
            )
        })
        .collect();
    let mut out = Vec::new();
    for d in docs {
        let id = format!(
            "{}/{}",
            d["kind"].as_str().unwrap_or(""),
            d["metadata"]["name"].as_str().unwrap_or("")
        );
        if !bound.contains(&id) {
            continue;
        }
        for r in d["rules"].as_array().expect("rules") {
            for g in r["apiGroups"].as_array().expect("apiGroups") {
                for res in r["resources"].as_array().expect("resources") {
                    for v in r["verbs"].as_array().expect("verbs") {
                        out.push(Perm {
                            sa: sa.into(),
                            role: id.clone(),
                            group: g.as_str().expect("group").into(),
                            resource: res.as_str().expect("resource").into(),
                            verb: v.as_str().expect("verb").into(),
                        });
                    }
                }
            }
        }
    }
    out
}

/// The manifests with one permission removed from its role.
pub(crate) fn without(docs: &[Value], p: &Perm) -> Vec<Value> {
    docs.iter()
        .map(|d| {
            let id = format!(
                "{}/{}",
                d["kind"].as_str().unwrap_or(""),
                d["metadata"]["name"].as_str().unwrap_or("")
            );
            if id != p.role {
                return d.clone();
            }
            let mut d = d.clone();
            let mut rules = Vec::new();
            for r in d["rules"].as_array().expect("rules") {
                let matches = r["apiGroups"]
                    .as_array()
                    .expect("g")
                    .contains(&json!(p.group))
                    && r["resources"]
                        .as_array()
                        .expect("r")
                        .contains(&json!(p.resource))
                    && r["verbs"].as_array().expect("v").contains(&json!(p.verb));
                if !matches {
                    rules.push(r.clone());
                    continue;
                }
                // Split the rule so only this (group, resource, verb) goes.
                for g in r["apiGroups"].as_array().expect("g") {
                    for res in r["resources"].as_array().expect("r") {
                        let verbs: Vec<Value> = r["verbs"]
                            .as_array()
                            .expect("v")
                            .iter()
                            .filter(|v| {
                                !(*g == json!(p.group)
                                    && *res == json!(p.resource)
                                    && **v == json!(p.verb))
                            })
                            .cloned()
                            .collect();
                        if verbs.is_empty() {
                            continue;
                        }
                        let mut nr = r.clone();
                        nr["apiGroups"] = json!([g]);
                        nr["resources"] = json!([res]);
                        nr["verbs"] = json!(verbs);
                        rules.push(nr);
                    }
                }
            }
            d["rules"] = json!(rules);
            d
        })
        .collect()
}

/// The lifecycle with `p` removed: Ok(how it failed) once the controller is denied `p`.
pub(crate) fn removal_run(docs: &[Value], secrets: &[Value], p: &Perm) -> Result<String, String> {
    let cloud = rbac_cloud("deploy-minus");
    cloud.apply(&without(docs, p));
    cloud.apply(&[json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "berth-http-token", "namespace": NS},
        "stringData": {"token": LB_TOKEN}})]);
    let args = controller_args(&cloud, docs, secrets);
    let kc = service_account_kubeconfig(&cloud, NS, SA);
    let mut berth = start_controller(&cloud, &args, &kc);
    let seen = || denied(&cloud, p).is_some();
    let failed = lifecycle(&cloud, &mut berth, Duration::from_secs(10), &seen);
    // A clean stop (lease release) happens at the end of the lifecycle or here.
    berth.stop();
    match denied(&cloud, p) {
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
            denials(&cloud)
        )),
    }
}
