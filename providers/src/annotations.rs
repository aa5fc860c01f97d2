//! What each provider does with a Service's annotations, stated by the provider itself, so
//! the controller can warn about an annotation a Service's provider would otherwise ignore
//! without a word. Plain data; no Kubernetes types.

/// The annotations a provider honours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnotationSupport {
    /// Keys the provider reads itself from [`crate::DesiredLoadBalancer::annotations`].
    pub keys: &'static [&'static str],
    /// Whether it uses [`crate::DesiredLoadBalancer::health_check`] (which berth's own
    /// health-check annotations set).
    pub health_check: bool,
    /// Whether it uses [`crate::DesiredLoadBalancer::requested_addresses`] (which berth's
    /// address annotation sets).
    pub requested_addresses: bool,
    /// What the provider does about an annotation it does not read, completing "berth's X
    /// provider does not implement it; ...".
    pub otherwise: &'static str,
}

impl AnnotationSupport {
    /// Whether the provider reads `key` itself.
    pub fn reads(&self, key: &str) -> bool {
        self.keys.contains(&key)
    }
}

/// The providers berth ships, by name, with what each honours.
pub const SHIPPED: [(&str, AnnotationSupport); 3] = [
    ("aws", crate::aws::ANNOTATIONS),
    ("http", crate::http::ANNOTATIONS),
    ("l2", crate::l2::ANNOTATIONS),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_provider_states_what_it_reads() {
        let get = |name: &str| SHIPPED.iter().find(|(n, _)| *n == name).unwrap().1;
        let aws = get("aws");
        assert!(aws.reads(crate::aws::annotations::SCHEME));
        for key in crate::aws::annotations::ALL {
            assert!(!crate::aws::annotations::is_unsupported(key), "{key}");
            assert!(aws.reads(key), "{key}");
        }
        assert!(aws.health_check && !aws.requested_addresses);
        let http = get("http");
        assert!(http.keys.is_empty() && http.health_check && http.requested_addresses);
        let l2 = get("l2");
        assert!(l2.reads(crate::l2::POOL_ANNOTATION) && l2.reads(crate::l2::SHARING_ANNOTATION));
        assert!(!l2.health_check && l2.requested_addresses);
    }
}
