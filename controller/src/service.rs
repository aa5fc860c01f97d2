//! Which Services berth handles, and small accessors.

use k8s_openapi::api::core::v1::Service;

pub use berth_api::names::{FINALIZER_PREFIX, LEGACY_FINALIZER, finalizer_for, lease_name_for};

/// Which `spec.loadBalancerClass` values this controller serves, and its finalizer.
#[derive(Debug, Clone)]
pub struct ClassFilter {
    pub class: String,
    /// Also serve Services with no class (the cloud-controller-manager role).
    pub default_class: bool,
    /// [`finalizer_for`] the class.
    pub finalizer: String,
}

impl ClassFilter {
    pub fn new(class: impl Into<String>, default_class: bool) -> Self {
        let class = class.into();
        ClassFilter {
            finalizer: finalizer_for(&class),
            class,
            default_class,
        }
    }

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

    /// Whether the Service carries this class's finalizer.
    pub fn has_finalizer(&self, svc: &Service) -> bool {
        has_finalizer(svc, &self.finalizer)
    }

    /// Whether this controller must clean up a Service that does not want its load balancer
    /// (any more): it carries this class's finalizer, or the legacy shared finalizer and
    /// nobody else can be its owner. A legacy Service still of type LoadBalancer belongs to
    /// whichever controller serves its class, so another class's is never touched; one
    /// being deleted belongs to the controller of its class (no class: every default
    /// controller may delete what it has for it); one whose type changed wants no load
    /// balancer from anybody, so each controller deletes what it may have for it.
    pub fn claims(&self, svc: &Service) -> bool {
        if self.has_finalizer(svc) {
            return true;
        }
        if !has_finalizer(svc, LEGACY_FINALIZER) {
            return false;
        }
        let spec = svc.spec.clone().unwrap_or_default();
        let class = spec.load_balancer_class.as_deref();
        if svc.metadata.deletion_timestamp.is_some() {
            return class.is_none_or(|c| c == self.class);
        }
        if spec.type_.as_deref() == Some("LoadBalancer") {
            // Still wants a load balancer, from another class (or from us: then it is not
            // cleaned up but served, see `wants_load_balancer`).
            return false;
        }
        true
    }

    /// Whether a load balancer labelled with `class` (None: from before class labels) may be
    /// collected by this controller at all.
    pub fn may_collect(&self, class: Option<&str>) -> bool {
        class.is_none_or(|c| c == self.class)
    }
}

pub fn has_finalizer(svc: &Service, finalizer: &str) -> bool {
    svc.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == finalizer))
}

/// Whether the Service carries any finalizer of berth's (any class, or the legacy one).
pub fn has_any_berth_finalizer(svc: &Service) -> bool {
    svc.metadata.finalizers.as_ref().is_some_and(|f| {
        f.iter()
            .any(|x| x == LEGACY_FINALIZER || x.starts_with(FINALIZER_PREFIX))
    })
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
    fn finalizers_and_leases_are_per_class_valid_names_and_distinct() {
        assert_eq!(
            finalizer_for("berth.io/http"),
            "berth.io/cleanup.berth.io.http"
        );
        assert_eq!(
            finalizer_for("example.com/b"),
            "berth.io/cleanup.example.com.b"
        );
        assert_eq!(lease_name_for("berth.io/http"), "berth-berth.io.http");
        assert_ne!(finalizer_for("a/b"), finalizer_for("a.b/c"));
        let long_a = format!("example.com/{}", "a".repeat(80));
        let long_b = format!("example.com/{}b", "a".repeat(79));
        let (fa, fb) = (finalizer_for(&long_a), finalizer_for(&long_b));
        assert_ne!(fa, fb, "long classes keep apart through the hash");
        for f in [&fa, &fb, &finalizer_for("Odd Class!/x_y")] {
            let name = f.strip_prefix("berth.io/").unwrap();
            assert!(name.len() <= 63, "{f}");
            assert!(name.starts_with(|c: char| c.is_ascii_alphanumeric()), "{f}");
            assert!(name.ends_with(|c: char| c.is_ascii_alphanumeric()), "{f}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-'),
                "{f}"
            );
        }
        assert!(lease_name_for(&long_a).len() <= 63);
    }

    fn finalized(mut s: Service, f: &str) -> Service {
        s.metadata
            .finalizers
            .get_or_insert_with(Vec::new)
            .push(f.into());
        s
    }

    fn deleting(mut s: Service) -> Service {
        s.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ));
        s
    }

    #[test]
    fn a_controller_claims_only_its_own_class_for_cleanup() {
        let a = ClassFilter::new("berth.io/http", false);
        let b = ClassFilter::new("example.com/b", false);
        // B's Service, provisioned by B: A never claims it, whatever its state.
        let b_svc = finalized(SvcB::lb("x").class("example.com/b").svc(), &b.finalizer);
        assert!(!a.claims(&b_svc));
        assert!(!a.claims(&deleting(b_svc.clone())));
        assert!(b.claims(&deleting(b_svc.clone())));
        // Ours: claimed once it does not want a load balancer any more.
        let a_gone = finalized(SvcB::lb("x").type_("ClusterIP").svc(), &a.finalizer);
        assert!(a.claims(&a_gone));
        assert!(!b.claims(&a_gone));
    }

    #[test]
    fn the_legacy_finalizer_is_claimed_only_where_no_other_class_can_own_it() {
        let a = ClassFilter::new("berth.io/http", false);
        let a_default = ClassFilter::new("berth.io/http", true);
        // Still a LoadBalancer of another class: never.
        let b_live = finalized(SvcB::lb("x").class("example.com/b").svc(), LEGACY_FINALIZER);
        assert!(!a.claims(&b_live));
        // Being deleted, of another class: never; of ours: yes.
        assert!(!a.claims(&deleting(b_live.clone())));
        let a_del = deleting(finalized(
            SvcB::lb("x").class("berth.io/http").svc(),
            LEGACY_FINALIZER,
        ));
        assert!(a.claims(&a_del));
        // No class, being deleted: whoever may have one cleans up.
        let none_del = deleting(finalized(SvcB::lb("x").svc(), LEGACY_FINALIZER));
        assert!(a_default.claims(&none_del));
        // No class, still a LoadBalancer: belongs to the default controller (served, not
        // cleaned up), so nobody claims it for cleanup.
        let none_live = finalized(SvcB::lb("x").svc(), LEGACY_FINALIZER);
        assert!(!a.claims(&none_live));
        assert!(!a_default.claims(&none_live));
        // Type changed: wants nothing from anybody; each controller cleans up what it has.
        let changed = finalized(SvcB::lb("x").type_("ClusterIP").svc(), LEGACY_FINALIZER);
        assert!(a.claims(&changed));
        // Without any berth finalizer: nothing to do.
        assert!(!a.claims(&SvcB::lb("x").type_("ClusterIP").svc()));
    }

    #[test]
    fn class_filter_takes_only_its_class_and_optionally_none() {
        let only = ClassFilter::new("berth.io/http", false);
        let default = ClassFilter::new("berth.io/http", true);
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
