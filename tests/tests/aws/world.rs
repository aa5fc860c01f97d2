//! The world the aws end-to-end tests run in: moto, mock-cloud's API server with Nodes
//! naming moto's instances, and `berth controller --provider aws` pointed at both. Each
//! test binary uses part of it.
#![allow(dead_code)]

use super::moto::{Moto, State};
use berth_tests::{Cloud, Proc, binary, wait_for};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

pub const CLUSTER: &str = "test";
pub const CLASS: &str = "berth.io/aws";
pub const DEADLINE: Duration = Duration::from_secs(90);

/// moto plus mock-cloud plus the VPC, subnets and instances the tests use.
pub struct World {
    pub moto: Moto,
    pub cloud: Cloud,
    /// (instance id, zone)
    pub instances: Vec<(String, String)>,
    pub subnets: Vec<String>,
    pub vpc: String,
}

impl World {
    pub fn start(tag: &str, instances: usize) -> World {
        let cloud = Cloud::start(tag);
        let moto = Moto::start(&cloud.dir.join("moto.log"));
        let setup = moto.ctl(&["setup", CLUSTER, &instances.to_string()]);
        let instances = super::moto::instances(&setup);
        let subnets = setup["subnets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect();
        World {
            vpc: setup["vpc"].as_str().unwrap().to_string(),
            moto,
            cloud,
            instances,
            subnets,
        }
    }

    /// A Node named `node-<i>` for instance `i`, optionally excluded from load balancers.
    pub fn node(&self, i: usize, excluded: bool) -> Value {
        let (id, zone) = &self.instances[i];
        let mut labels = json!({"topology.kubernetes.io/zone": zone});
        if excluded {
            labels["node.kubernetes.io/exclude-from-external-load-balancers"] = json!("true");
        }
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": format!("node-{i}"), "labels": labels},
            "spec": {"providerID": format!("aws:///{zone}/{id}")}
        })
    }

    pub fn berth(&self, tag: &str) -> Proc {
        self.berth_via(tag, &self.moto.endpoint, "5s", "2s")
    }

    /// `berth controller` reaching AWS at `endpoint` (moto, or a proxy in front of it), with
    /// this drift resync and garbage-collection interval.
    pub fn berth_via(&self, tag: &str, endpoint: &str, resync: &str, gc_interval: &str) -> Proc {
        let mut cmd = Command::new(binary("berth"));
        cmd.arg("controller")
            .arg("--kubeconfig")
            .arg(&self.cloud.kubeconfig)
            .args(["--provider", "aws", "--aws-region", "us-east-1"])
            .args(["--aws-endpoint", endpoint])
            .args(["--cluster-name", CLUSTER, "--identity", tag])
            .args(["--metrics-listen", "127.0.0.1:0", "--leader-elect", "false"])
            .args(["--resync", resync, "--gc-interval", gc_interval])
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .env("NO_COLOR", "1")
            .env(
                "RUST_LOG",
                "info,berth_providers=debug,kube_runtime=warn,kube_client=warn",
            );
        let log = self.cloud.dir.join(format!("berth-{tag}.log"));
        Proc::spawn(&format!("berth[{tag}]"), cmd, log)
    }

    pub fn uid(&self, svc: &str) -> String {
        let s = wait_for(&format!("Service {svc}"), DEADLINE, || {
            self.cloud.service(svc)
        });
        s["metadata"]["uid"].as_str().unwrap().to_string()
    }

    /// Waits until `check` passes on moto's state; returns that state.
    pub fn converge(&self, what: &str, check: impl Fn(&State) -> Result<(), String>) -> State {
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            let st = self.moto.state();
            let last = match check(&st) {
                Ok(()) => return st,
                Err(e) => e,
            };
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: not reached in {DEADLINE:?}: {last}\nstate: {}",
                serde_json::to_string_pretty(&st.0).unwrap()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

pub fn service(name: &str, ports: Value, annotations: Value, local: bool) -> Value {
    let mut spec = json!({
        "type": "LoadBalancer",
        "loadBalancerClass": CLASS,
        "selector": {"app": name},
        "ports": ports,
    });
    if local {
        spec["externalTrafficPolicy"] = json!("Local");
    }
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default", "annotations": annotations},
        "spec": spec
    })
}

pub fn node_ports(svc: &Value) -> Vec<(u16, String, u16)> {
    svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["port"].as_u64().unwrap() as u16,
                p["protocol"].as_str().unwrap_or("TCP").to_string(),
                p["nodePort"].as_u64().unwrap_or(0) as u16,
            )
        })
        .collect()
}

pub fn strs(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
