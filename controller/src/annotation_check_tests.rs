use super::*;
use berth_providers::aws::annotations as aws;

fn support(provider: &str) -> AnnotationSupport {
    SHIPPED
        .iter()
        .find(|(n, _)| *n == provider)
        .map(|(_, s)| *s)
        .unwrap()
}

fn run(provider: &str, keys: &[&str]) -> Vec<Finding> {
    let ann = keys
        .iter()
        .map(|k| (k.to_string(), "x".to_string()))
        .collect();
    check(&ann, provider, &support(provider))
}

const UNSUPPORTED: &str = reasons::UNSUPPORTED_ANNOTATION;
const UNKNOWN: &str = reasons::UNKNOWN_ANNOTATION;

/// (provider, key, expected: None = no finding, Some((reason, text the message contains))).
type Case = (
    &'static str,
    &'static str,
    Option<(&'static str, &'static str)>,
);

const CASES: &[Case] = &[
    // aws: its own annotations, berth's health check; not requested addresses or l2's.
    ("aws", aws::SCHEME, None),
    ("aws", aws::TG_ATTRIBUTES, None),
    ("aws", annotations::HC_PORT, None),
    ("aws", annotations::ANNOUNCING_NODE, None),
    (
        "aws",
        "service.beta.kubernetes.io/aws-load-balancer-proxy-protocol",
        Some((
            UNSUPPORTED,
            "berth's aws provider; the NLB is built without that setting",
        )),
    ),
    (
        "aws",
        "service.beta.kubernetes.io/aws-load-balancer-schema",
        Some((
            UNSUPPORTED,
            "; did you mean service.beta.kubernetes.io/aws-load-balancer-scheme?",
        )),
    ),
    (
        "aws",
        annotations::LB_IPS,
        Some((UNSUPPORTED, "is read by berth's http, l2 providers only")),
    ),
    (
        "aws",
        "berth.io/address-pool",
        Some((UNSUPPORTED, "is read by berth's l2 provider only")),
    ),
    (
        "aws",
        "metallb.io/loadBalancerIPs",
        Some((UNSUPPORTED, "means berth.io/load-balancer-ips to berth")),
    ),
    (
        "aws",
        "lbipam.cilium.io/ips",
        Some((UNSUPPORTED, "not implement; the NLB is built")),
    ),
    (
        "aws",
        "kube-vip.io/loadbalancerIPs",
        Some((UNSUPPORTED, "berth's aws provider does not implement")),
    ),
    // http: berth's health check and requested addresses (so the address aliases too).
    ("http", annotations::HC_PATH, None),
    ("http", annotations::LB_IPS, None),
    ("http", "metallb.io/loadBalancerIPs", None),
    ("http", "lbipam.cilium.io/ips", None),
    (
        "http",
        aws::SCHEME,
        Some((
            UNSUPPORTED,
            "http provider; it is not sent to the load balancer API",
        )),
    ),
    (
        "http",
        "metallb.io/address-pool",
        Some((UNSUPPORTED, "means berth.io/address-pool to berth")),
    ),
    (
        "http",
        "berth.io/allow-shared-ip",
        Some((UNSUPPORTED, "is read by berth's l2 provider only")),
    ),
    (
        "http",
        "io.cilium/lb-ipam-ips",
        Some((
            UNSUPPORTED,
            "berth's berth.io/load-balancer-ips means the same",
        )),
    ),
    // l2: pools, sharing, requested addresses and every alias of them; no health check.
    ("l2", "berth.io/address-pool", None),
    ("l2", "berth.io/allow-shared-ip", None),
    ("l2", annotations::LB_IPS, None),
    ("l2", annotations::ANNOUNCING_NODE, None),
    (
        "l2",
        annotations::HC_PROTOCOL,
        Some((UNSUPPORTED, "is read by berth's aws, http providers only")),
    ),
    (
        "l2",
        aws::HC_PATH,
        Some((
            UNSUPPORTED,
            "l2 provider; the address comes from an IPAddressPool",
        )),
    ),
    (
        "l2",
        "service.beta.kubernetes.io/aws-load-balancer-ssl-cert",
        Some((UNSUPPORTED, "not implemented by berth's l2 provider")),
    ),
    (
        "l2",
        "io.cilium/lb-ipam-sharing-key",
        Some((
            UNSUPPORTED,
            "berth's berth.io/allow-shared-ip means the same",
        )),
    ),
    (
        "l2",
        "metallb.io/ip-allocated-from-pool",
        Some((UNSUPPORTED, "MetalLB's record of the pool")),
    ),
    (
        "l2",
        "metallb.universe.tf/ip-allocated-from-pool",
        Some((UNSUPPORTED, "l2 provider chooses the address itself")),
    ),
    (
        "l2",
        "kube-vip.io/vipHost",
        Some((UNSUPPORTED, "not implemented by berth's l2 provider")),
    ),
    (
        "l2",
        "lbipam.cilium.io/sharing-cross-namespace",
        Some((UNSUPPORTED, "not implemented by berth's l2 provider")),
    ),
    (
        "l2",
        "metallb.io/loadbalancerIPs",
        Some((UNSUPPORTED, "; did you mean metallb.io/loadBalancerIPs?")),
    ),
    // Typos in berth's own family, whatever the provider.
    (
        "l2",
        "berth.io/load-balancer-ip",
        Some((
            UNKNOWN,
            "not one berth knows and is ignored; did you mean berth.io/load-balancer-ips?",
        )),
    ),
    (
        "aws",
        "berth.io/helth-check-port",
        Some((UNKNOWN, "did you mean berth.io/health-check-port?")),
    ),
    (
        "http",
        "berth.io/adress-pool",
        Some((UNKNOWN, "did you mean berth.io/address-pool?")),
    ),
    (
        "http",
        "berth.io/something-else",
        Some((UNKNOWN, "berth's annotations are listed in its README")),
    ),
    // Not a checked family.
    (
        "l2",
        "kubectl.kubernetes.io/last-applied-configuration",
        None,
    ),
    (
        "aws",
        "service.beta.kubernetes.io/load-balancer-source-ranges",
        None,
    ),
    ("http", "example.com/berth.io/x", None),
    ("http", "berth.iox/y", None),
];

#[test]
fn table() {
    for (provider, key, want) in CASES {
        let got = run(provider, &[*key]);
        match want {
            None => assert!(got.is_empty(), "{provider} {key}: {got:?}"),
            Some((reason, text)) => {
                assert_eq!(got.len(), 1, "{provider} {key}: {got:?}");
                let f = &got[0];
                assert_eq!(f.key, *key);
                assert_eq!(f.reason, *reason, "{provider} {key}: {f:?}");
                assert!(f.message.contains(key), "names the key: {f:?}");
                assert!(f.message.contains(text), "{provider} {key}: {}", f.message);
            }
        }
    }
}

#[test]
fn every_honoured_alias_and_provider_key_is_quiet_where_it_is_honoured() {
    for (berth, aliases) in ALIASES {
        for key in aliases.iter().chain([&berth]) {
            assert!(run("l2", &[*key]).is_empty(), "l2 {key}");
        }
    }
    for key in aws::ALL {
        assert!(run("aws", &[key]).is_empty(), "aws {key}");
        for other in ["http", "l2"] {
            assert_eq!(run(other, &[key]).len(), 1, "{other} {key}");
        }
    }
}

#[test]
fn one_finding_per_key_in_key_order() {
    let got = run(
        "l2",
        &[
            "berth.io/address-pool",
            "metallb.io/address-pool",
            aws::SCHEME,
            "berth.io/typo",
            "kube-vip.io/ignore",
            "app",
        ],
    );
    let keys: Vec<&str> = got.iter().map(|f| f.key.as_str()).collect();
    assert_eq!(keys, ["berth.io/typo", "kube-vip.io/ignore", aws::SCHEME]);
}

#[test]
fn many_findings_are_summed_up() {
    let keys: Vec<String> = (0..40).map(|i| format!("berth.io/x-{i:02}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let got = run("http", &refs);
    assert_eq!(got.len(), MAX_FINDINGS);
    let last = got.last().unwrap();
    assert!(last.message.starts_with("25 more annotations"), "{last:?}");
    assert!(
        last.message.contains("berth.io/x-15, berth.io/x-16"),
        "{last:?}"
    );
    assert!(last.message.ends_with(", …"), "{last:?}");
    assert!(!last.message.contains("berth.io/x-39"), "{last:?}");
    // Exactly one over the first fifteen: described in full, no summary.
    let got = run("http", &refs[..MAX_FINDINGS]);
    assert_eq!(got.len(), MAX_FINDINGS);
    assert_eq!(got.last().unwrap().reason, UNKNOWN);
}

#[test]
fn edit_distance() {
    assert_eq!(distance_within("abc", "abc", 2), Some(0));
    assert_eq!(distance_within("abc", "abd", 2), Some(1));
    assert_eq!(distance_within("abc", "ab", 2), Some(1));
    assert_eq!(distance_within("abc", "bca", 2), Some(2));
    assert_eq!(distance_within("abc", "xyz", 2), None);
    assert_eq!(distance_within("a", "abcd", 2), None);
    assert_eq!(distance_within("", "ab", 2), Some(2));
    let long = "x".repeat(10_000);
    assert_eq!(distance_within(&long, "berth.io/address-pool", 2), None);
}
