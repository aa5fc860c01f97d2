//! `deploy/`: what a cluster operator applies, proven here.
//!
//! * the committed single-file renderings equal `kubectl kustomize deploy/overlays/X`
//!   (`scripts/render-deploy --check`);
//! * every rendered object validates against the Kubernetes 1.33 schemas
//!   (kubernetes-validate, strict) or its CRD's schema, and `kubectl apply --dry-run=server`
//!   accepts it;
//! * **sufficient**: following the README's "Deploying to a real cluster" literally against
//!   `mock-cloud serve --rbac`, `berth controller` runs as the ServiceAccount the manifests
//!   create, with the Deployment container's own arguments, and a LoadBalancer Service's whole
//!   lifecycle works (address, events, traffic, a port change, a node change, a NodePort
//!   conflict, delete, lease release) with no request denied;
//! * **minimal**: each (apiGroup, resource, verb) of each shipped role is removed in turn;
//!   each time the same lifecycle makes the controller hit a 403 for exactly that permission;
//! * the same for the **l2** overlay (`deploy/l2.rs`): `berth controller --provider l2` and a
//!   `berth speaker` (a real raw socket; root required) as their ServiceAccounts, pools,
//!   advertisements, announcements, ETP=Local, a failback, delete; then every rule of the
//!   controller's l2 ClusterRole and of the speaker's ClusterRole removed in turn.

#[path = "deploy/harness.rs"]
mod harness;
#[path = "deploy/l2.rs"]
mod l2;
use harness::*;

use berth_tests::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const NS: &str = "berth-system";
const SA: &str = "berth-controller";
const CLASS: &str = "berth.io/http";
/// The Kubernetes version the manifests are validated against (k8s-openapi's `v1_33`).
const K8S_VERSION: &str = "1.33.0";
/// The http provider's bearer token (the Secret the README has the operator create).
const LB_TOKEN: &str = "s3cret-lb-api-token";

// ---------------------------------------------------------------------------------------
// Rendering and validation
// ---------------------------------------------------------------------------------------

#[test]
fn committed_renderings_match_kustomize() {
    run(Command::new(root().join("scripts/render-deploy"))
        .current_dir(root())
        .arg("--check"));
    for overlay in ["http", "aws", "l2"] {
        let committed = std::fs::read_to_string(rendered(overlay)).expect("rendering");
        assert!(
            committed.ends_with(&kustomize(overlay)),
            "deploy/render/berth-{overlay}.yaml differs from kubectl kustomize; run scripts/render-deploy"
        );
    }
}

#[test]
fn rendered_manifests_validate_against_kubernetes_and_crd_schemas() {
    let files: Vec<PathBuf> = ["http", "aws", "l2"].map(rendered).into();
    let out = Command::new(venv().join("bin/python"))
        .arg(root().join("tests/deploy/validate.py"))
        .arg(K8S_VERSION)
        .args(&files)
        .output()
        .expect("run validate.py");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "validation failed:\n{text}");
    assert!(text.contains("ok  apps/v1/DaemonSet berth-speaker"));
    assert!(text.contains("ok  berth.io/v1alpha1/IPAddressPool default (CRD schema)"));
    // The validator does catch mistakes.
    let dir = scratch_dir("validate");
    let bad = dir.join("bad.yaml");
    let l2 = std::fs::read_to_string(rendered("l2")).expect("l2");
    std::fs::write(&bad, l2.replace("autoAssign: true", "autoAsign: true")).expect("write");
    let out = Command::new(venv().join("bin/python"))
        .arg(root().join("tests/deploy/validate.py"))
        .arg(K8S_VERSION)
        .arg(&bad)
        .output()
        .expect("run validate.py");
    assert!(
        !out.status.success(),
        "a misspelt field must fail validation"
    );
}

#[test]
fn rendered_manifests_apply_with_server_dry_run_and_follow_the_security_rules() {
    let cloud = rbac_cloud("dryrun");
    // A server-side dry run of a namespaced object needs its namespace to exist (as with
    // kube-apiserver): create it for real first.
    cloud.apply(&[json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})]);
    for overlay in ["http", "aws", "l2"] {
        let f = rendered(overlay);
        let f = f.to_str().expect("utf-8");
        if overlay == "l2" {
            // A dry run cannot create the CRDs its custom resources need: install them first.
            let crds = root().join("deploy/crds/berth.io_crds.yaml");
            cloud.kubectl_ok(&["apply", "-f", crds.to_str().expect("utf-8")]);
        }
        let out = cloud.kubectl_ok(&["apply", "--dry-run=server", "-f", f]);
        assert!(out.contains("(server dry run)"), "{out}");
        let docs = yaml_docs(Path::new(f));
        let ns = docs.iter().filter(|d| d["kind"] == "Namespace").count();
        assert_eq!(ns, 1, "{overlay}: one Namespace");
        let dep = find(&docs, "Deployment", "berth-controller");
        assert_eq!(dep["spec"]["replicas"], 2);
        let pod = &dep["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        let c = &pod["containers"][0];
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert!(c["resources"]["requests"]["memory"].is_string());
        assert!(c["resources"]["limits"]["memory"].is_string());
        let env: Vec<&str> = c["env"]
            .as_array()
            .expect("env")
            .iter()
            .filter_map(|e| e["name"].as_str())
            .collect();
        assert_eq!(env, ["POD_NAME", "POD_NAMESPACE"]);
        assert_eq!(
            find(&docs, "PodDisruptionBudget", "berth-controller")["spec"]["minAvailable"],
            1
        );
        // No wildcards, and no role that can read Secrets.
        for d in docs
            .iter()
            .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
        {
            for r in d["rules"].as_array().expect("rules") {
                for k in ["verbs", "resources", "apiGroups"] {
                    assert!(
                        !r[k].as_array().expect("list").iter().any(|x| x == "*"),
                        "{overlay}: wildcard in {}",
                        d["metadata"]["name"]
                    );
                }
                // Secrets are never listed or watched, and never readable cluster-wide: the
                // l2 controller may only create the speakers' membership key when it is
                // absent, and the speaker may only `get` Secrets by name in its own
                // namespace (BGPPeer TCP MD5 passwords), through a namespaced Role.
                if r["resources"]
                    .as_array()
                    .expect("list")
                    .contains(&json!("secrets"))
                {
                    let bgp_passwords = d["kind"] == "Role"
                        && d["metadata"]["name"] == "berth-speaker-bgp-secrets"
                        && d["metadata"]["namespace"] == NS;
                    let want = if bgp_passwords {
                        json!(["get"])
                    } else {
                        json!(["create"])
                    };
                    assert_eq!(
                        (overlay, &r["verbs"]),
                        ("l2", &want),
                        "{}: Secrets may only be created by the l2 controller, or read by name in {NS} by the speaker",
                        d["metadata"]["name"]
                    );
                }
            }
        }
        if overlay == "l2" {
            let ds = find(&docs, "DaemonSet", "berth-speaker");
            let pod = &ds["spec"]["template"]["spec"];
            assert_eq!(pod["hostNetwork"], true);
            assert_eq!(pod["tolerations"], json!([{"operator": "Exists"}]));
            let caps = &pod["containers"][0]["securityContext"]["capabilities"];
            assert_eq!(caps["add"], json!(["NET_RAW"]));
            assert_eq!(caps["drop"], json!(["ALL"]));
        }
        if overlay == "http" {
            // The token is mounted 0440 (owner and group only): the pod's fsGroup is the
            // group of the files, and the user is in it.
            assert_eq!(pod["securityContext"]["fsGroup"], 65532);
            assert_eq!(pod["securityContext"]["runAsGroup"], 65532);
            let token = pod["volumes"]
                .as_array()
                .expect("volumes")
                .iter()
                .find(|v| v["name"] == "http-token")
                .expect("the token volume");
            assert_eq!(token["secret"]["defaultMode"], 0o440);
        }
        if overlay == "aws" {
            let sa = find(&docs, "ServiceAccount", SA);
            assert!(sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].is_string());
        }
    }
}

// ---------------------------------------------------------------------------------------
// mock-cloud with RBAC, the controller as its ServiceAccount
// ---------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------
// The lifecycle
// ---------------------------------------------------------------------------------------

#[test]
fn http_overlay_rbac_is_sufficient_and_every_rule_is_needed() {
    // --- sufficient: the README, literally -------------------------------------------
    let cloud = rbac_cloud("deploy-http");
    let docs = readme_install(&cloud);
    let secrets = vec![
        json!({"kind": "Secret", "metadata": {"name": "berth-http-token"},
                              "stringData": {"token": LB_TOKEN}}),
    ];
    let args = controller_args(&cloud, &docs, &secrets);
    eprintln!("berth {}", args.join(" "));
    let kc = service_account_kubeconfig(&cloud, NS, SA);
    let mut berth = start_controller(&cloud, &args, &kc);
    let started = Instant::now();
    let pid = berth.pid();
    let peak = std::cell::Cell::new((0, 0));
    let failed = lifecycle(&cloud, &mut berth, DEADLINE, &|| {
        peak.set(peak.get().max(memory_kib(pid)));
        false
    });
    let peak = peak.get();
    let d = denials(&cloud);
    let user = format!("system:serviceaccount:{NS}:{SA}");
    let calls = http_json(&cloud.api, "GET", "/mock-cloud/v1/denials", None)["requestsByUser"]
        [&user]
        .as_u64()
        .unwrap_or(0);
    assert!(
        calls > 0,
        "the controller must have authenticated as {user}"
    );
    assert!(
        failed.is_empty() && d.is_empty(),
        "with the shipped roles the lifecycle must work and nothing be denied; failed steps {failed:?}, denied {d:#?}"
    );
    eprintln!(
        "sufficient: the whole lifecycle ran as {SA} in {:?}; controller memory (debug build): peak RSS {} KiB, last RSS {} KiB",
        started.elapsed(),
        peak.0,
        peak.1
    );
    drop(berth);
    drop(cloud);

    // --- minimal: each permission removed in turn -----------------------------------
    let perms = permissions(&docs, SA);
    assert!(perms.len() >= 12, "{perms:?}");
    let results: Mutex<Vec<(Perm, Result<String, String>)>> = Mutex::new(Vec::new());
    let queue = Mutex::new(perms.clone());
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                loop {
                    let Some(p) = queue.lock().expect("queue").pop() else {
                        return;
                    };
                    let r = removal_run(&docs, &secrets, &p);
                    results.lock().expect("results").push((p, r));
                }
            });
        }
    });
    let results = results.into_inner().expect("results");
    let mut bad = Vec::new();
    for (p, r) in &results {
        match r {
            Ok(msg) => eprintln!("needed: {p:<70} -> {msg}"),
            Err(e) => {
                eprintln!("UNNEEDED? {p}: {e}");
                bad.push(p.to_string());
            }
        }
    }
    assert_eq!(results.len(), perms.len());
    assert!(bad.is_empty(), "permissions no behaviour needed: {bad:?}");
}

#[test]
fn l2_overlay_rbac_is_sufficient_and_every_rule_is_needed() {
    l2::rbac_is_sufficient_and_every_rule_is_needed();
}
