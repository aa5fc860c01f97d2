//! What the API server checks when a berth custom resource is applied: the hand-written
//! parts of the CRD schemas (list item schemas with `x-kubernetes-validations` CEL rules).
//!
//! The rules use only what kube-apiserver's CEL environment has (the standard library, the
//! strings extension and the Kubernetes IP/CIDR library of Kubernetes 1.31+), and are written
//! so that one rule fails per problem: a rule that needs a well-formed value first checks
//! that it is one (an error in a rule is not its message). Cross-object problems (two pools
//! that overlap) cannot be rules: the controller reports them in status and events.

use schemars::{Schema, SchemaGenerator, json_schema};
use serde_json::{Value, json};

/// A pool entry's text: a CIDR or `FIRST-LAST`, with spaces allowed around each part.
pub const MSG_ADDRESS: &str = "must be a CIDR (198.51.100.0/24, 2001:db8::/120) or a range of two addresses (198.51.100.10-198.51.100.20)";
/// Both ends of a range in one family.
pub const MSG_RANGE_FAMILY: &str = "the two ends of a range must be of the same IP family";
/// An IPv4 range's ends in order.
pub const MSG_RANGE_ORDER: &str = "the first address of a range must not be after the last";
/// An address.
pub const MSG_IP: &str = "must be an IPv4 or IPv6 address";
/// A BGP community.
pub const MSG_COMMUNITY: &str = "must be a standard community ASN:VALUE (16 bits each, 65000:100) or a large one GLOBAL:DATA1:DATA2 (32 bits each, 65000:1:2)";
/// A label selector requirement's values.
pub const MSG_SELECTOR_VALUES: &str =
    "values must be set for In and NotIn, and must be empty for Exists and DoesNotExist";
/// sourceAddress and peerAddress in one family.
pub const MSG_PEER_FAMILY: &str = "sourceAddress must be of the same IP family as peerAddress";
/// BFD echo mode.
pub const MSG_ECHO: &str = "echo mode is not supported";

/// The longest pool entry (two IPv6 addresses, a dash and some spaces).
const ADDRESS_MAX_LEN: u32 = 100;
/// The most entries in one pool.
const ADDRESSES_MAX: u32 = 64;

/// `x` split on the range dash: the part `i` (0 or 1), trimmed.
fn end(i: usize) -> String {
    format!("self.split('-')[{i}].trim()")
}

/// True when `self` is `FIRST-LAST` with two addresses.
fn is_range() -> String {
    format!(
        "(self.split('-').size() == 2 && isIP({}) && isIP({}))",
        end(0),
        end(1)
    )
}

/// The IPv4 address `e` (a CEL string expression) as an integer.
fn v4_number(e: &str) -> String {
    (0..4)
        .map(|i| format!("int({e}.split('.')[{i}]) * {}", 1u64 << (8 * (3 - i))))
        .collect::<Vec<_>>()
        .join(" + ")
}

/// The CEL rules of one `spec.addresses` entry, as `(rule, message)`.
pub fn address_rules() -> Vec<(String, &'static str)> {
    let range = is_range();
    vec![
        (format!("isCIDR(self.trim()) || {range}"), MSG_ADDRESS),
        (
            format!(
                "!{range} || ip({}).family() == ip({}).family()",
                end(0),
                end(1)
            ),
            MSG_RANGE_FAMILY,
        ),
        (
            format!(
                "!({range} && ip({a}).family() == 4 && ip({b}).family() == 4) || {} <= {}",
                v4_number(&end(0)),
                v4_number(&end(1)),
                a = end(0),
                b = end(1),
            ),
            MSG_RANGE_ORDER,
        ),
    ]
}

fn validations(rules: &[(String, &str)]) -> Value {
    Value::Array(
        rules
            .iter()
            .map(|(r, m)| json!({"rule": r, "message": m}))
            .collect(),
    )
}

/// `IPAddressPool.spec.addresses`.
pub fn pool_addresses(_: &mut SchemaGenerator) -> Schema {
    let rules = validations(&address_rules());
    json_schema!({
        "type": "array",
        "minItems": 1,
        "maxItems": ADDRESSES_MAX,
        "items": {
            "type": "string",
            "minLength": 1,
            "maxLength": ADDRESS_MAX_LEN,
            "x-kubernetes-validations": rules,
        },
    })
}

/// A list of object names (pools, peers): DNS subdomains.
pub fn names(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": 256,
        "items": {"type": "string", "minLength": 1, "maxLength": 253},
    })
}

/// A list of namespace names: DNS labels.
pub fn namespaces(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": 256,
        "items": {
            "type": "string",
            "maxLength": 63,
            "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        },
    })
}

/// A list of network interface names (at most 15 bytes on Linux).
pub fn interfaces(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": 64,
        "items": {"type": "string", "minLength": 1, "maxLength": 15},
    })
}

/// A list of addresses.
pub fn ips(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": 64,
        "items": {
            "type": "string",
            "maxLength": 45,
            "x-kubernetes-validations": [{"rule": "isIP(self)", "message": MSG_IP}],
        },
    })
}

/// The CEL rule of one BGP community.
pub fn community_rule() -> String {
    let shape = "self.matches('^[0-9]{1,10}(:[0-9]{1,10}){1,2}$')";
    format!(
        "{shape} && (self.split(':').size() == 3 ? self.split(':').all(p, int(p) <= 4294967295) : self.split(':').all(p, int(p) <= 65535))"
    )
}

/// `BGPAdvertisement.spec.communities`.
pub fn communities(_: &mut SchemaGenerator) -> Schema {
    let rule = community_rule();
    json_schema!({
        "type": "array",
        "maxItems": 64,
        "items": {
            "type": "string",
            "maxLength": 32,
            "x-kubernetes-validations": [{"rule": rule, "message": MSG_COMMUNITY}],
        },
    })
}

/// A rule for `self`, a string field that must be an address.
pub fn ip_rule() -> Value {
    json!([{"rule": "isIP(self.trim())", "message": MSG_IP}])
}

/// The rule of a label selector requirement.
pub fn selector_values_rule() -> String {
    "(self.operator == 'In' || self.operator == 'NotIn') == (has(self.values) && size(self.values) > 0)".into()
}

/// The rule tying a BGPPeer's sourceAddress to its peerAddress's family.
pub fn peer_family_rule() -> String {
    let (s, p) = ("self.sourceAddress.trim()", "self.peerAddress.trim()");
    format!(
        "!has(self.sourceAddress) || !isIP({s}) || !isIP({p}) || ip({s}).family() == ip({p}).family()"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ipv4_number_weighs_each_octet() {
        assert_eq!(
            v4_number("x"),
            "int(x.split('.')[0]) * 16777216 + int(x.split('.')[1]) * 65536 + int(x.split('.')[2]) * 256 + int(x.split('.')[3]) * 1"
        );
    }

    /// Whether every rule holds for `v`, as mock-cloud (like kube-apiserver) evaluates them.
    fn all_hold(rules: &[String], v: Value) -> bool {
        rules.iter().all(|r| {
            mock_cloud::schema::cel::eval(r, &v).unwrap_or_else(|e| panic!("{r} on {v}: {e}"))
        })
    }

    /// The rules refuse exactly the entries the allocator cannot use, except what one entry
    /// cannot show in CEL (a reversed IPv6 range) and what Kubernetes' IP library refuses
    /// (IPv4-mapped IPv6).
    #[cfg(feature = "l2")]
    #[test]
    fn address_rules_agree_with_the_allocator() {
        use berth_providers::l2::{Allocator, PoolSpec};
        let rules: Vec<String> = address_rules().into_iter().map(|(r, _)| r).collect();
        let allocator = |a: &str| {
            let (results, _) = Allocator::new().set_pools(&[PoolSpec {
                name: "p".into(),
                addresses: vec![a.into()],
                auto_assign: true,
                avoid_buggy_ips: false,
                allocation: None,
            }]);
            results[0].result.is_ok()
        };
        for a in [
            "10.0.0.0/24",
            "10.0.0.7/24",
            "0.0.0.0/0",
            "2001:db8::/120",
            "::/0",
            " 10.0.0.0/24 ",
            "10.0.0.1-10.0.0.1",
            "10.0.0.1-10.0.0.9",
            "10.0.0.1 - 10.0.0.9",
            "10.0.0.255-10.0.1.0",
            "2001:db8::1-2001:db8::9",
            "10.0.0.300/24",
            "10.0.0.0/33",
            "2001:db8::/129",
            "10.0.0.0/",
            "/24",
            "banana",
            "",
            "10.0.0.9-10.0.0.1",
            "10.0.1.0-10.0.0.255",
            "9.255.255.255-10.0.0.0",
            "10.0.0.1-2001:db8::1",
            "10.0.0.1-",
            "-10.0.0.1",
            "10.0.0.1-10.0.0.2-10.0.0.3",
            "10.0.0.1-10.0.0.300",
        ] {
            assert_eq!(all_hold(&rules, json!(a)), allocator(a), "{a:?}");
        }
        assert!(all_hold(&rules, json!("2001:db8::9-2001:db8::1")));
        assert!(
            !allocator("2001:db8::9-2001:db8::1"),
            "reported in status instead"
        );
    }

    #[test]
    fn community_rule_agrees_with_the_parser() {
        let rule = [community_rule()];
        for c in [
            "65000:100",
            "0:0",
            "65535:65535",
            "65536:1",
            "1:65536",
            "4200000000:1:2",
            "4294967295:4294967295:4294967295",
            "4294967296:1:2",
            "1",
            "a:b",
            "1:2:3:4",
            "",
            "1:-1",
            "99999999999:1:1",
        ] {
            assert_eq!(
                all_hold(&rule, json!(c)),
                crate::bgp::parse_community(c).is_ok(),
                "{c:?}"
            );
        }
    }

    #[test]
    fn selector_and_peer_rules() {
        let sel = [selector_values_rule()];
        assert!(all_hold(
            &sel,
            json!({"key": "a", "operator": "In", "values": ["x"]})
        ));
        assert!(all_hold(&sel, json!({"key": "a", "operator": "Exists"})));
        assert!(!all_hold(&sel, json!({"key": "a", "operator": "NotIn"})));
        assert!(!all_hold(
            &sel,
            json!({"key": "a", "operator": "NotIn", "values": []})
        ));
        assert!(!all_hold(
            &sel,
            json!({"key": "a", "operator": "DoesNotExist", "values": ["x"]})
        ));
        let peer = [peer_family_rule()];
        assert!(all_hold(&peer, json!({"peerAddress": "10.0.0.1"})));
        assert!(all_hold(
            &peer,
            json!({"peerAddress": "10.0.0.1", "sourceAddress": "10.0.0.2"})
        ));
        assert!(!all_hold(
            &peer,
            json!({"peerAddress": "10.0.0.1", "sourceAddress": "2001:db8::2"})
        ));
        // A malformed address is the address rule's to report, not this one's.
        assert!(all_hold(
            &peer,
            json!({"peerAddress": "nope", "sourceAddress": "2001:db8::2"})
        ));
    }
}
