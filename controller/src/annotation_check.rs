//! Annotations berth would otherwise ignore without a word: those of a known family (berth's
//! own, the AWS load balancer controllers', MetalLB's, kube-vip's, Cilium's) that the
//! Service's provider does not implement, and `berth.io/` keys berth does not know (typos).
//! Pure: the reconciler publishes each finding as one Warning event.
//!
//! What a provider implements comes from the provider itself
//! ([`berth_providers::Provider::annotations`]); the berth annotations the controller reads
//! for every provider count as implemented when the provider uses what they set (the health
//! check, the requested addresses); another project's annotation that means one of berth's
//! ([`crate::compat::ALIASES`]) counts as implemented when berth's does.

use crate::compat::ALIASES;
use crate::desired::annotations;
use berth_api::names::reasons;
use berth_providers::AnnotationSupport;
use berth_providers::annotations::SHIPPED;
use std::collections::BTreeMap;

/// The key prefixes of the families berth checks.
pub const FAMILIES: [&str; 7] = [
    BERTH,
    AWS,
    "metallb.io/",
    "metallb.universe.tf/",
    "kube-vip.io/",
    "lbipam.cilium.io/",
    "io.cilium/",
];

const BERTH: &str = "berth.io/";
const AWS: &str = "service.beta.kubernetes.io/aws-load-balancer-";

/// At most this many findings per Service; further ones are summed up in the last.
pub const MAX_FINDINGS: usize = 16;

/// The farthest (in edits) a suggested key may be from the key given.
const SUGGEST_WITHIN: usize = 2;

/// What one of berth's own annotations that the controller reads sets.
#[derive(Clone, Copy)]
enum Sets {
    HealthCheck,
    RequestedAddresses,
    /// Nothing: berth writes it (the announcing node), so it is never warned about.
    Output,
}

/// berth's annotations the controller reads (or writes) for every provider.
const CONTROLLER_KEYS: [(&str, Sets); 9] = [
    (annotations::HC_PROTOCOL, Sets::HealthCheck),
    (annotations::HC_PORT, Sets::HealthCheck),
    (annotations::HC_PATH, Sets::HealthCheck),
    (annotations::HC_INTERVAL, Sets::HealthCheck),
    (annotations::HC_TIMEOUT, Sets::HealthCheck),
    (annotations::HC_HEALTHY, Sets::HealthCheck),
    (annotations::HC_UNHEALTHY, Sets::HealthCheck),
    (annotations::LB_IPS, Sets::RequestedAddresses),
    (annotations::ANNOUNCING_NODE, Sets::Output),
];

/// Other projects' annotations berth does not fold into its own, with berth's of the same
/// meaning (named in the warning when the provider implements it).
const EQUIVALENTS: [(&str, &str); 2] = [
    ("io.cilium/lb-ipam-ips", annotations::LB_IPS),
    (
        "io.cilium/lb-ipam-sharing-key",
        berth_providers::l2::SHARING_ANNOTATION,
    ),
];

/// MetalLB's record of the pool it allocated from (MetalLB writes it; nobody asks with it).
const METALLB_RECORDS: [&str; 2] = [
    "metallb.io/ip-allocated-from-pool",
    "metallb.universe.tf/ip-allocated-from-pool",
];

/// One annotation berth ignores, as the Warning event says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub key: String,
    /// [`reasons::UNSUPPORTED_ANNOTATION`] or [`reasons::UNKNOWN_ANNOTATION`].
    pub reason: &'static str,
    /// Names the key and says what berth does instead.
    pub message: String,
}

fn family(key: &str) -> Option<&'static str> {
    FAMILIES.into_iter().find(|f| key.starts_with(f))
}

fn controller_key(key: &str) -> Option<Sets> {
    CONTROLLER_KEYS
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, s)| *s)
}

/// Whether a provider with `support` implements berth's annotation `key`.
fn honours(support: &AnnotationSupport, key: &str) -> bool {
    support.reads(key)
        || match controller_key(key) {
            Some(Sets::HealthCheck) => support.health_check,
            Some(Sets::RequestedAddresses) => support.requested_addresses,
            Some(Sets::Output) => true,
            None => false,
        }
}

/// berth's annotation that `key` (another project's) means, if berth folds it.
fn alias_of(key: &str) -> Option<&'static str> {
    ALIASES
        .iter()
        .find(|(_, aliases)| aliases.contains(&key))
        .map(|(berth, _)| *berth)
}

/// Every `berth.io/` annotation some part of berth reads or writes.
fn known_berth_keys() -> impl Iterator<Item = &'static str> {
    CONTROLLER_KEYS.iter().map(|(k, _)| *k).chain(
        SHIPPED
            .iter()
            .flat_map(|(_, s)| s.keys.iter().copied())
            .filter(|k| k.starts_with(BERTH)),
    )
}

/// Why a key is a finding (cheap to tell; the message is built only for the first few).
enum Kind {
    /// A `berth.io/` key berth knows but this provider does not implement.
    OtherProvider,
    /// A `berth.io/` key berth does not know.
    Unknown,
    /// Another project's key whose berth meaning this provider does not implement.
    AliasUnread(&'static str),
    /// Another project's key berth does not implement.
    Unimplemented,
}

fn classify(key: &str, support: &AnnotationSupport) -> Option<Kind> {
    let fam = family(key)?;
    if fam == BERTH {
        if honours(support, key) {
            None
        } else if known_berth_keys().any(|k| k == key) {
            Some(Kind::OtherProvider)
        } else {
            Some(Kind::Unknown)
        }
    } else if let Some(berth) = alias_of(key) {
        (!honours(support, berth)).then_some(Kind::AliasUnread(berth))
    } else {
        (!support.reads(key)).then_some(Kind::Unimplemented)
    }
}

/// The edit distance between `a` and `b` if it is at most `max` (insertions, deletions and
/// substitutions of characters).
fn distance_within(a: &str, b: &str, max: usize) -> Option<usize> {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > max {
        return None;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut row = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            row[j + 1] = sub.min(prev[j + 1] + 1).min(row[j] + 1);
        }
        if row.iter().min().is_some_and(|m| *m > max) {
            return None;
        }
        prev = row;
    }
    Some(prev[b.len()]).filter(|d| *d <= max)
}

/// The candidate nearest to `key` within [`SUGGEST_WITHIN`] edits (ties: alphabetical).
fn nearest<'a>(key: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .filter(|c| *c != key)
        .filter_map(|c| distance_within(key, c, SUGGEST_WITHIN).map(|d| (d, c)))
        .min()
        .map(|(_, c)| c)
}

/// The keys of `key`'s family this provider implements, to suggest for a near miss.
fn implemented_in_family(
    key: &str,
    support: &AnnotationSupport,
) -> impl Iterator<Item = &'static str> {
    let fam = family(key).unwrap_or_default();
    let aliases = ALIASES
        .iter()
        .filter(|(berth, _)| honours(support, berth))
        .flat_map(|(_, aliases)| aliases.iter().copied());
    support
        .keys
        .iter()
        .copied()
        .chain(aliases)
        .filter(move |k| k.starts_with(fam))
}

fn describe(key: &str, kind: Kind, provider: &str, support: &AnnotationSupport) -> Finding {
    let otherwise = support.otherwise;
    let unsupported = |message: String| Finding {
        key: key.to_string(),
        reason: reasons::UNSUPPORTED_ANNOTATION,
        message,
    };
    let mut finding = match kind {
        Kind::OtherProvider => {
            let readers: Vec<&str> = SHIPPED
                .iter()
                .filter(|(_, s)| honours(s, key))
                .map(|(n, _)| *n)
                .collect();
            let by = match readers.as_slice() {
                [] => String::new(),
                [one] => format!(" is read by berth's {one} provider only and"),
                many => format!(" is read by berth's {} providers only and", many.join(", ")),
            };
            unsupported(format!(
                "Annotation {key}{by} is not implemented by berth's {provider} provider; \
                 {otherwise}"
            ))
        }
        Kind::Unknown => {
            let hint = match nearest(key, known_berth_keys()) {
                Some(k) => format!("did you mean {k}?"),
                None => "berth's annotations are listed in its README".to_string(),
            };
            return Finding {
                key: key.to_string(),
                reason: reasons::UNKNOWN_ANNOTATION,
                message: format!("Annotation {key} is not one berth knows and is ignored; {hint}"),
            };
        }
        Kind::AliasUnread(berth) => unsupported(format!(
            "Annotation {key} means {berth} to berth, which berth's {provider} provider does not \
             implement; {otherwise}"
        )),
        Kind::Unimplemented if METALLB_RECORDS.contains(&key) => unsupported(format!(
            "Annotation {key} is MetalLB's record of the pool it allocated from; berth does not \
             read it and the {provider} provider chooses the address itself"
        )),
        Kind::Unimplemented => {
            let mut m = format!(
                "Annotation {key} is not implemented by berth's {provider} provider; {otherwise}"
            );
            if let Some((_, berth)) = EQUIVALENTS
                .iter()
                .find(|(k, b)| *k == key && honours(support, b))
            {
                m.push_str(&format!("; berth's {berth} means the same"));
            }
            unsupported(m)
        }
    };
    if let Some(k) = nearest(key, implemented_in_family(key, support)) {
        finding.message.push_str(&format!("; did you mean {k}?"));
    }
    finding
}

/// The annotations of `ann` that berth ignores when the Service's provider is `provider`
/// (its name) implementing `support`, in key order; at most [`MAX_FINDINGS`], the last summing
/// up any others.
pub fn check(
    ann: &BTreeMap<String, String>,
    provider: &str,
    support: &AnnotationSupport,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut rest: Vec<&str> = Vec::new();
    for key in ann.keys() {
        let Some(kind) = classify(key, support) else {
            continue;
        };
        if out.len() < MAX_FINDINGS - 1 {
            out.push(describe(key, kind, provider, support));
        } else {
            rest.push(key.as_str());
        }
    }
    match rest.as_slice() {
        [] => {}
        [key] => {
            if let Some(kind) = classify(key, support) {
                out.push(describe(key, kind, provider, support));
            }
        }
        many => out.push(Finding {
            key: many[0].to_string(),
            reason: reasons::UNSUPPORTED_ANNOTATION,
            message: format!(
                "{} more annotations are not implemented by berth's {provider} provider or not \
                 known to berth, and are ignored: {}{}",
                many.len(),
                many[..many.len().min(8)].join(", "),
                if many.len() > 8 { ", …" } else { "" }
            ),
        }),
    }
    out
}

#[cfg(test)]
#[path = "annotation_check_tests.rs"]
mod tests;
