//! Which Services berth handles, and small accessors.

use k8s_openapi::api::core::v1::Service;

/// berth's finalizer: present while berth may own a load balancer for the Service.
pub const FINALIZER: &str = "berth.io/load-balancer-cleanup";

/// Which `spec.loadBalancerClass` values this controller serves.
#[derive(Debug, Clone)]
pub struct ClassFilter {
    pub class: String,
    /// Also serve Services with no class (the cloud-controller-manager role).
    pub default_class: bool,
}

impl ClassFilter {
    /// Whether a Service of this class belongs to us (type aside).
    pub fn owns_class(&self, class: Option<&str>) -> bool {
        match class {
            Some(c) => c == self.class,
            None => self.default_class,
        }
    }

    /// Whether berth should give this Service a load balancer now.
    pub fn wants_load_balancer(&self, svc: &Service) -> bool {
        let Some(spec) = svc.spec.as_ref() else {
            return false;
        };
        svc.metadata.deletion_timestamp.is_none()
            && spec.type_.as_deref() == Some("LoadBalancer")
            && self.owns_class(spec.load_balancer_class.as_deref())
    }
}

pub fn has_finalizer(svc: &Service) -> bool {
    svc.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == FINALIZER))
}

/// `namespace/name`.
pub fn key(svc: &Service) -> String {
    format!(
        "{}/{}",
        svc.metadata.namespace.as_deref().unwrap_or("default"),
        svc.metadata.name.as_deref().unwrap_or("")
    )
}

pub fn uid(svc: &Service) -> String {
    svc.metadata.uid.clone().unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ClientIPConfig, ServicePort, ServiceSpec, SessionAffinityConfig,
    };

    /// A test Service builder: `SvcB::lb("web").port(80, "TCP", 30080).local(31000).svc()`.
    #[derive(Clone)]
    pub struct SvcB(pub Service);

    impl SvcB {
        pub fn lb(name: &str) -> Self {
            let mut s = Service::default();
            s.metadata.name = Some(name.into());
            s.metadata.namespace = Some("default".into());
            s.metadata.uid = Some(format!("uid-{name}"));
            s.spec = Some(ServiceSpec {
                type_: Some("LoadBalancer".into()),
                ..Default::default()
            });
            SvcB(s)
        }
        fn spec(&mut self) -> &mut ServiceSpec {
            self.0.spec.as_mut().expect("spec")
        }
        pub fn port(mut self, port: i32, proto: &str, node_port: i32) -> Self {
            let n = self.spec().ports.as_ref().map_or(0, Vec::len);
            self.spec()
                .ports
                .get_or_insert_with(Vec::new)
                .push(ServicePort {
                    name: Some(format!("p{n}")),
                    port,
                    protocol: Some(proto.into()),
                    node_port: (node_port > 0).then_some(node_port),
                    ..Default::default()
                });
            self
        }
        pub fn class(mut self, c: &str) -> Self {
            self.spec().load_balancer_class = Some(c.into());
            self
        }
        pub fn type_(mut self, t: &str) -> Self {
            self.spec().type_ = Some(t.into());
            self
        }
        pub fn local(mut self, hc_port: i32) -> Self {
            self.spec().external_traffic_policy = Some("Local".into());
            self.spec().health_check_node_port = Some(hc_port);
            self
        }
        pub fn affinity(mut self, timeout: i32) -> Self {
            self.spec().session_affinity = Some("ClientIP".into());
            self.spec().session_affinity_config = Some(SessionAffinityConfig {
                client_ip: Some(ClientIPConfig {
                    timeout_seconds: Some(timeout),
                }),
            });
            self
        }
        pub fn ann(mut self, k: &str, v: &str) -> Self {
            self.0
                .metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(k.into(), v.into());
            self
        }
        pub fn svc(self) -> Service {
            self.0
        }
    }

    #[test]
    fn class_filter_takes_only_its_class_and_optionally_none() {
        let only = ClassFilter {
            class: "berth.io/http".into(),
            default_class: false,
        };
        let default = ClassFilter {
            default_class: true,
            ..only.clone()
        };
        let mine = SvcB::lb("a").class("berth.io/http").svc();
        let other = SvcB::lb("a").class("example.com/other").svc();
        let none = SvcB::lb("a").svc();
        let cluster_ip = SvcB::lb("a")
            .class("berth.io/http")
            .type_("ClusterIP")
            .svc();
        assert!(only.wants_load_balancer(&mine));
        assert!(!only.wants_load_balancer(&other));
        assert!(!only.wants_load_balancer(&none));
        assert!(default.wants_load_balancer(&none));
        assert!(!default.wants_load_balancer(&other));
        assert!(!only.wants_load_balancer(&cluster_ip));
    }
}
