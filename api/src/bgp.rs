//! berth's custom resources for BGP mode (group `berth.io`, version `v1alpha1`, all
//! cluster-scoped): [`BGPPeer`] (a router each selected node's speaker peers with),
//! [`BGPAdvertisement`] (which pools are announced over BGP, from which nodes, to which
//! peers, with which attributes), [`BFDProfile`] (fast failure detection settings a peer may
//! name) and [`BGPSessionStatus`] (one per peer per node: written by that node's speaker).
//!
//! The shapes follow MetalLB's `BGPPeer`, `BGPAdvertisement` and `BFDProfile`, so moving from
//! MetalLB is mostly a change of API group.

// Several `printcolumn(...)` attributes are how kube-derive declares several columns.
#![allow(clippy::duplicated_attributes)]

use crate::crd::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A BGP router that the speakers on the selected nodes peer with.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "berth.io",
    version = "v1alpha1",
    kind = "BGPPeer",
    plural = "bgppeers",
    doc = "A BGP router that the speakers on the selected nodes peer with.",
    shortname = "bgppeer",
    category = "berth",
    printcolumn(name = "Address", type_ = "string", json_path = ".spec.peerAddress"),
    printcolumn(name = "ASN", type_ = "integer", json_path = ".spec.peerASN"),
    printcolumn(name = "My ASN", type_ = "integer", json_path = ".spec.myASN"),
    printcolumn(name = "BFD Profile", type_ = "string", json_path = ".spec.bfdProfile"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": crate::rules::peer_family_rule(),
    "message": crate::rules::MSG_PEER_FAMILY,
}]))]
pub struct BGPPeerSpec {
    /// The router's address (IPv4 or IPv6). The session carries IPv4 and IPv6 routes
    /// (MP-BGP) whatever its transport.
    #[schemars(length(max = 45), extend("x-kubernetes-validations" = crate::rules::ip_rule()))]
    pub peer_address: String,
    /// The router's AS number (1 to 4294967295; 4-octet AS numbers are supported).
    #[serde(rename = "peerASN")]
    #[schemars(extend("minimum" = 1, "maximum" = 4_294_967_295_u64))]
    pub peer_asn: u32,
    /// The nodes' AS number (the same on every node). Equal to `peerASN`: iBGP.
    #[serde(rename = "myASN")]
    #[schemars(extend("minimum" = 1, "maximum" = 4_294_967_295_u64))]
    pub my_asn: u32,
    /// The router's TCP port (1 to 65535); default 179.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minimum" = 1, "maximum" = 65535))]
    pub peer_port: Option<u16>,
    /// Proposed hold time (`90s`, `3s`; 0 disables keepalives; default 90s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub hold_time: Option<String>,
    /// Keepalive interval; default a third of the negotiated hold time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub keepalive_time: Option<String>,
    /// The local address to connect from, of the same family as `peerAddress`; default:
    /// chosen by the kernel's routing. The session's local address is the next hop of every
    /// route announced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 45), extend("x-kubernetes-validations" = crate::rules::ip_rule()))]
    pub source_address: Option<String>,
    /// The router is more than one hop away (eBGP multihop: TTL 255 instead of 1).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ebgp_multi_hop: bool,
    /// TCP MD5 (RFC 2385) password from a Secret. The speaker reads Secrets only in its own
    /// namespace (its RBAC Role); `namespace` defaults to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<SecretKeyRef>,
    /// Nodes that peer with this router (any matching selector is enough); empty: every node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
    /// A [`BFDProfile`] name: run BFD on the session, so a failed node's routes are
    /// withdrawn within the BFD detection time instead of the hold time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub bfd_profile: Option<String>,
}

/// A key of a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Default: the speaker's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Default: `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Which pools' VIPs are announced over BGP, from which nodes, to which peers.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "berth.io",
    version = "v1alpha1",
    kind = "BGPAdvertisement",
    plural = "bgpadvertisements",
    doc = "Which IPAddressPools' VIPs the BGP speakers announce, from which nodes, to which BGPPeers, with which attributes.",
    shortname = "bgpadv",
    category = "berth",
    printcolumn(name = "Pools", type_ = "string", json_path = ".spec.ipAddressPools"),
    printcolumn(name = "Peers", type_ = "string", json_path = ".spec.peers"),
    printcolumn(
        name = "Aggregation",
        type_ = "integer",
        json_path = ".spec.aggregationLength",
        priority = "1"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BGPAdvertisementSpec {
    /// IPAddressPool names announced. With `ipAddressPoolSelectors` too, a pool named here or
    /// selected there is announced; both empty: every pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::rules::names")]
    pub ip_address_pools: Vec<String>,
    /// IPAddressPools announced by label (any matching selector is enough).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_address_pool_selectors: Vec<LabelSelector>,
    /// BGPPeer names announced to; empty: every peer of the node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::rules::names")]
    pub peers: Vec<String>,
    /// Nodes that announce (any matching selector is enough); empty: every node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
    /// Prefix length of the IPv4 routes (default 32: one route per VIP). Shorter: VIPs are
    /// announced as the covering prefix. 0 to 32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minimum" = 0, "maximum" = 32))]
    pub aggregation_length: Option<u8>,
    /// Prefix length of the IPv6 routes (default 128). 0 to 128.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minimum" = 0, "maximum" = 128))]
    pub aggregation_length_v6: Option<u8>,
    /// LOCAL_PREF of the routes (sent to iBGP peers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_pref: Option<u32>,
    /// Communities attached: standard `65000:100` or large `65000:1:2`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::rules::communities")]
    pub communities: Vec<String>,
}

/// BFD settings a [`BGPPeer`] names in `bfdProfile` (single-hop asynchronous mode).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "berth.io",
    version = "v1alpha1",
    kind = "BFDProfile",
    plural = "bfdprofiles",
    doc = "BFD settings a BGPPeer names in `bfdProfile` (single-hop asynchronous mode).",
    shortname = "bfdprofile",
    category = "berth",
    printcolumn(
        name = "Receive",
        type_ = "integer",
        json_path = ".spec.receiveInterval"
    ),
    printcolumn(
        name = "Transmit",
        type_ = "integer",
        json_path = ".spec.transmitInterval"
    ),
    printcolumn(
        name = "Multiplier",
        type_ = "integer",
        json_path = ".spec.detectMultiplier"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BFDProfileSpec {
    /// Minimum interval between received packets, milliseconds (10 to 60000, default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minimum" = 10, "maximum" = 60000))]
    pub receive_interval: Option<u32>,
    /// Minimum interval between sent packets, milliseconds (10 to 60000, default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minimum" = 10, "maximum" = 60000))]
    pub transmit_interval: Option<u32>,
    /// Packets missed before the session is down (2 to 255, default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minimum" = 2, "maximum" = 255))]
    pub detect_multiplier: Option<u32>,
    /// Echo mode is not supported: must be false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "!self", "message": crate::rules::MSG_ECHO}]))]
    pub echo_mode: bool,
}

/// The session of one node's speaker with one [`BGPPeer`]: named `<peer>-<node>`, written by
/// that node's speaker, owned by the BGPPeer (deleted with it).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "berth.io",
    version = "v1alpha1",
    kind = "BGPSessionStatus",
    plural = "bgpsessionstatuses",
    doc = "The BGP session of one node's speaker with one BGPPeer; written by that speaker.",
    shortname = "bgpsession",
    category = "berth",
    status = "BGPSessionStatusStatus",
    printcolumn(name = "Peer", type_ = "string", json_path = ".spec.peer"),
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.node"),
    printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
    printcolumn(
        name = "Routes",
        type_ = "integer",
        json_path = ".status.routesAdvertised"
    ),
    printcolumn(name = "Error", type_ = "string", json_path = ".status.lastError"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BGPSessionStatusSpec {
    /// The BGPPeer.
    pub peer: String,
    /// The node whose speaker holds the session.
    pub node: String,
}

/// What the speaker reports about a session.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BGPSessionStatusStatus {
    /// The BGP FSM state (`Idle`, `Connect`, `Active`, `OpenSent`, `OpenConfirm`,
    /// `Established`), or `Invalid` when the BGPPeer cannot be used as written.
    #[serde(default)]
    pub state: String,
    /// Prefixes announced to the peer now.
    #[serde(default)]
    pub routes_advertised: i64,
    /// BFD session state, when BFD runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd_state: Option<String>,
    /// Why the session is not Established (or the last reason it went down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The name of the [`BGPSessionStatus`] of `peer` on `node`.
pub fn session_status_name(peer: &str, node: &str) -> String {
    // Same shape (and length cap) as a ServiceL2Status name.
    crate::crd::status_name(peer, node)
}

/// The label naming a [`BGPSessionStatus`]'s node (hashed when too long for a label value).
pub const SESSION_NODE_LABEL: &str = "berth.io/node";
/// The label naming a [`BGPSessionStatus`]'s peer.
pub const SESSION_PEER_LABEL: &str = "berth.io/bgp-peer";

impl LabelSelector {
    /// Whether the selector selects an object with `labels` (`matchLabels` and
    /// `matchExpressions`, by kube's own matcher; an unknown operator selects nothing).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
        use kube::core::{Selector, SelectorExt};
        let sel = meta::LabelSelector {
            match_labels: (!self.match_labels.is_empty()).then(|| self.match_labels.clone()),
            match_expressions: (!self.match_expressions.is_empty()).then(|| {
                self.match_expressions
                    .iter()
                    .map(|e| meta::LabelSelectorRequirement {
                        key: e.key.clone(),
                        operator: e.operator.clone(),
                        values: Some(e.values.clone()),
                    })
                    .collect()
            }),
        };
        Selector::try_from(sel).is_ok_and(|s| s.matches(labels))
    }
}

/// A BGP community as written in a [`BGPAdvertisement`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Community {
    /// `ASN:VALUE`, both 16 bits: `(asn << 16) | value`.
    Standard(u32),
    /// `GLOBAL:DATA1:DATA2`, 32 bits each.
    Large(u32, u32, u32),
}

/// Parses `65000:100` (standard) or `65000:1:2` (large).
pub fn parse_community(s: &str) -> Result<Community, String> {
    let parts: Vec<&str> = s.trim().split(':').collect();
    let bad = || {
        format!(
            "community {s:?}: expected ASN:VALUE (16 bits each) or GLOBAL:DATA1:DATA2 (32 bits each)"
        )
    };
    match parts.as_slice() {
        [a, v] => {
            let a: u16 = a.parse().map_err(|_| bad())?;
            let v: u16 = v.parse().map_err(|_| bad())?;
            Ok(Community::Standard((u32::from(a) << 16) | u32::from(v)))
        }
        [g, d1, d2] => Ok(Community::Large(
            g.parse().map_err(|_| bad())?,
            d1.parse().map_err(|_| bad())?,
            d2.parse().map_err(|_| bad())?,
        )),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    fn columns(
        crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    ) -> Vec<String> {
        let v = serde_json::to_value(crd).unwrap();
        v["spec"]["versions"][0]["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .collect()
    }

    #[test]
    fn crds_are_cluster_scoped_with_columns() {
        for (crd, plural, cols) in [
            (
                BGPPeer::crd(),
                "bgppeers",
                &["Address", "ASN", "My ASN", "BFD Profile", "Age"][..],
            ),
            (
                BGPAdvertisement::crd(),
                "bgpadvertisements",
                &["Pools", "Peers", "Aggregation", "Age"][..],
            ),
            (
                BFDProfile::crd(),
                "bfdprofiles",
                &["Receive", "Transmit", "Multiplier", "Age"][..],
            ),
            (
                BGPSessionStatus::crd(),
                "bgpsessionstatuses",
                &["Peer", "Node", "State", "Routes", "Error", "Age"][..],
            ),
        ] {
            let v = serde_json::to_value(&crd).unwrap();
            assert_eq!(v["spec"]["scope"], "Cluster", "{plural}");
            assert_eq!(v["spec"]["names"]["plural"], plural);
            assert_eq!(columns(&crd), cols, "{plural}");
        }
        let v = serde_json::to_value(BGPSessionStatus::crd()).unwrap();
        assert!(v["spec"]["versions"][0]["subresources"]["status"].is_object());
        // Doc comments become descriptions.
        let props = &v["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"];
        assert!(
            props["status"]["properties"]["routesAdvertised"]["description"]
                .as_str()
                .is_some_and(|d| d.contains("Prefixes"))
        );
    }

    #[test]
    fn metallb_shaped_specs_deserialise() {
        let p: BGPPeer = serde_json::from_value(serde_json::json!({
            "apiVersion": "berth.io/v1alpha1", "kind": "BGPPeer",
            "metadata": {"name": "tor"},
            "spec": {"peerAddress": "10.0.0.1", "peerASN": 64512, "myASN": 4200000000u32,
                     "holdTime": "9s", "ebgpMultiHop": true, "bfdProfile": "fast",
                     "passwordSecret": {"name": "bgp-pw"},
                     "nodeSelectors": [{"matchLabels": {"rack": "a"}}]}
        }))
        .unwrap();
        assert_eq!(p.spec.my_asn, 4_200_000_000);
        assert!(p.spec.ebgp_multi_hop);
        assert_eq!(p.spec.password_secret.unwrap().key, None);
        let a: BGPAdvertisement = serde_json::from_value(serde_json::json!({
            "apiVersion": "berth.io/v1alpha1", "kind": "BGPAdvertisement",
            "metadata": {"name": "x"},
            "spec": {"ipAddressPools": ["p"], "aggregationLength": 24, "aggregationLengthV6": 64,
                     "localPref": 150, "communities": ["65000:100", "65000:1:2"], "peers": ["tor"]}
        }))
        .unwrap();
        assert_eq!(a.spec.aggregation_length_v6, Some(64));
        assert_eq!(a.spec.local_pref, Some(150));
        let b: BFDProfile = serde_json::from_value(serde_json::json!({
            "apiVersion": "berth.io/v1alpha1", "kind": "BFDProfile",
            "metadata": {"name": "fast"},
            "spec": {"receiveInterval": 300, "transmitInterval": 300, "detectMultiplier": 3}
        }))
        .unwrap();
        assert_eq!(b.spec.detect_multiplier, Some(3));
        assert!(!b.spec.echo_mode);
    }

    #[test]
    fn communities_parse() {
        assert_eq!(
            parse_community("65000:100"),
            Ok(Community::Standard((65000 << 16) | 100))
        );
        assert_eq!(
            parse_community("4200000000:1:2"),
            Ok(Community::Large(4_200_000_000, 1, 2))
        );
        for bad in ["65536:1", "1", "a:b", "1:2:3:4", "", "1:-1"] {
            assert!(parse_community(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn selectors_match() {
        let l: BTreeMap<String, String> = [("rack".to_string(), "a".to_string())].into();
        let sel = |v: serde_json::Value| -> LabelSelector { serde_json::from_value(v).unwrap() };
        assert!(sel(serde_json::json!({})).matches(&l));
        assert!(sel(serde_json::json!({"matchLabels": {"rack": "a"}})).matches(&l));
        assert!(!sel(serde_json::json!({"matchLabels": {"rack": "b"}})).matches(&l));
        assert!(
            sel(serde_json::json!({"matchExpressions": [{"key": "rack", "operator": "In", "values": ["a", "b"]}]}))
                .matches(&l)
        );
        assert!(
            !sel(serde_json::json!({"matchExpressions": [{"key": "rack", "operator": "DoesNotExist"}]}))
                .matches(&l)
        );
        assert!(
            !sel(serde_json::json!({"matchExpressions": [{"key": "rack", "operator": "Bogus"}]}))
                .matches(&l)
        );
    }
}
