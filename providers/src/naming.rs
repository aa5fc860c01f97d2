//! Deterministic load balancer ids.

use sha2::{Digest, Sha256};
use std::fmt::Write;

/// The longest id: ELBv2 load balancer and target group names allow 32 characters.
pub const MAX_ID_LEN: usize = 32;

/// How many characters of the Service name the id keeps, for people reading a cloud console.
const READABLE_LEN: usize = 12;

/// How many hex digits of the hash the id keeps (64 bits).
const HASH_LEN: usize = 16;

/// The id of the load balancer of Service `namespace/name` (with `uid`) in `cluster`.
///
/// `b-<up to 12 characters of the name>-<16 hex digits of sha256("cluster/namespace/name/uid")>`,
/// e.g. `b-web-1f0c…`: a DNS label, lowercase, at most [`MAX_ID_LEN`] characters, never
/// starting with `internal-` (which ELBv2 reserves). The same inputs always give the same
/// id, so a restarted controller finds what it created; a Service recreated with the same
/// name has a new uid and so a new load balancer. Namespace, name and uid cannot contain
/// `/`, so the hashed string is unambiguous even when the cluster name does.
pub fn load_balancer_id(cluster: &str, namespace: &str, name: &str, uid: &str) -> String {
    let digest = Sha256::digest(format!("{cluster}/{namespace}/{name}/{uid}"));
    let mut id = String::with_capacity(MAX_ID_LEN);
    id.push_str("b-");
    let readable = readable(name);
    if !readable.is_empty() {
        id.push_str(&readable);
        id.push('-');
    }
    for byte in &digest[..HASH_LEN / 2] {
        // Writing to a String cannot fail.
        let _ = write!(id, "{byte:02x}");
    }
    id
}

/// `name` reduced to lowercase letters, digits and single inner hyphens, at most
/// [`READABLE_LEN`] characters.
fn readable(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
        if out.len() == READABLE_LEN {
            break;
        }
    }
    out.trim_end_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_dns_label(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    }

    #[test]
    fn stable() {
        // These literals must never change: they name load balancers that already exist.
        assert_eq!(
            load_balancer_id(
                "prod",
                "shop",
                "web",
                "6f1c7c2e-1d2b-4e8a-9a57-0c1f1b1e2d3c"
            ),
            "b-web-eaa8b85c4acd7f60"
        );
        assert_eq!(load_balancer_id("", "", "", ""), "b-732c4e9711639ed1");
    }

    #[test]
    fn every_input_matters() {
        let base = load_balancer_id("c", "ns", "n", "u");
        for other in [
            load_balancer_id("c2", "ns", "n", "u"),
            load_balancer_id("c", "ns2", "n", "u"),
            load_balancer_id("c", "ns", "n2", "u"),
            load_balancer_id("c", "ns", "n", "u2"),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn short_dns_labels() {
        let long = "a".repeat(253);
        for (name, readable_part) in [
            ("web", "web"),
            (long.as_str(), "aaaaaaaaaaaa"),
            ("my-service-with-a-long-name", "my-service-w"),
            ("abcdefghijk-z", "abcdefghijk"),
            ("Web_Front.End", "web-front-en"),
            ("--", ""),
            ("", ""),
        ] {
            let id = load_balancer_id("cluster-with-a-long-name", "default", name, "uid");
            assert!(id.len() <= MAX_ID_LEN, "{id} is {} long", id.len());
            assert!(is_dns_label(&id), "{id}");
            assert!(!id.starts_with("internal-"));
            let want = if readable_part.is_empty() {
                "b-".to_string()
            } else {
                format!("b-{readable_part}-")
            };
            assert!(id.starts_with(&want), "{id} for {name:?}");
            assert_eq!(id.len(), want.len() + HASH_LEN);
        }
    }
}
