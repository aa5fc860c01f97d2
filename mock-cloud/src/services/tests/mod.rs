//! Tests of Service defaulting, allocation and validation.

use super::*;

/// Small builder for Service JSON.
struct B(Value);

fn svc(name: &str) -> B {
    B(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"app": name}}
    }))
}

impl B {
    fn spec(mut self, key: &str, v: Value) -> Self {
        self.0["spec"][key] = v;
        self
    }
    fn ty(self, t: &str) -> Self {
        self.spec("type", json!(t))
    }
    fn lb(self) -> Self {
        self.ty("LoadBalancer")
    }
    fn np(self) -> Self {
        self.ty("NodePort")
    }
    fn local(self) -> Self {
        self.spec("externalTrafficPolicy", json!("Local"))
    }
    fn port(mut self, port: i64, proto: &str) -> Self {
        let ports = self.0["spec"]["ports"].as_array().map_or(0, Vec::len);
        let p = json!({"name": format!("p{ports}"), "port": port, "protocol": proto});
        match self.0["spec"]["ports"].as_array_mut() {
            Some(a) => a.push(p),
            None => self.0["spec"]["ports"] = json!([p]),
        }
        self
    }
    fn node_port(mut self, np: i64) -> Self {
        if let Some(last) = self.0["spec"]["ports"]
            .as_array_mut()
            .and_then(|a| a.last_mut())
        {
            last["nodePort"] = json!(np);
        }
        self
    }
    fn v(self) -> Value {
        self.0
    }
}

fn ipam() -> ServiceIpam {
    ServiceIpam::new(ServiceIpamConfig::default()).unwrap()
}

fn ipam_with(cidrs: &[&str], ports: RangeInclusive<u16>) -> ServiceIpam {
    let cfg = ServiceIpamConfig {
        cluster_ip_cidrs: cidrs.iter().map(|c| c.to_string()).collect(),
        node_port_range: ports,
    };
    ServiceIpam::new(cfg).unwrap()
}

fn texts(errs: &[FieldError]) -> Vec<String> {
    errs.iter().map(FieldError::to_status_text).collect()
}

fn create_err(a: &mut ServiceIpam, v: Value) -> Vec<String> {
    let mut v = v;
    texts(&a.create(&mut v).unwrap_err())
}

fn created(a: &mut ServiceIpam, v: Value) -> Value {
    let mut v = v;
    if let Err(e) = a.create(&mut v) {
        panic!("create failed: {:?}", texts(&e));
    }
    v
}

fn node_port(v: &Value, i: usize) -> i64 {
    v["spec"]["ports"][i]["nodePort"].as_i64().unwrap_or(0)
}

fn cluster_ip(v: &Value) -> String {
    v["spec"]["clusterIP"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn updated(a: &mut ServiceIpam, old: &Value, new: Value) -> Value {
    let mut new = new;
    if let Err(e) = a.update(old, &mut new) {
        panic!("update failed: {:?}", texts(&e));
    }
    new
}

mod allocation;
mod defaults;
mod robustness;
mod validation;
