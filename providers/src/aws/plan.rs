//! What one Service's NLB should look like (pure), and what it takes to get there from what
//! exists (pure diffs). `mod.rs` reads AWS, calls these, and performs the result.

use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use super::annotations::{Settings, TargetType, TgHealth};
use super::tls::{TlsListener, tls_ports};
use crate::{DesiredLoadBalancer, LABEL_CLUSTER, LABEL_SERVICE_UID, Protocol, ProviderError};

/// Tag: what kind of resource this is (`load-balancer` or `target-group`).
pub const TAG_RESOURCE: &str = "berth.io/resource";
/// Tag on a target group: the id (name) of its load balancer.
pub const TAG_LOAD_BALANCER: &str = "berth.io/load-balancer";
/// Tag on a shared NLB and its members' target groups: the group's name.
pub const TAG_GROUP: &str = "berth.io/load-balancer-group";
/// Tag on a target group: the listener port it serves.
pub const TAG_PORT: &str = "berth.io/port";
/// Tag on a target group: its ELBv2 protocol.
pub const TAG_PROTOCOL: &str = "berth.io/protocol";

/// An NLB listener / target group protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ElbProtocol {
    Tcp,
    Udp,
    /// TCP and UDP on one port.
    TcpUdp,
}

impl ElbProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            ElbProtocol::Tcp => "TCP",
            ElbProtocol::Udp => "UDP",
            ElbProtocol::TcpUdp => "TCP_UDP",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "TCP" => Some(ElbProtocol::Tcp),
            "UDP" => Some(ElbProtocol::Udp),
            "TCP_UDP" => Some(ElbProtocol::TcpUdp),
            _ => None,
        }
    }

    fn letter(self) -> char {
        match self {
            ElbProtocol::Tcp => 't',
            ElbProtocol::Udp => 'u',
            ElbProtocol::TcpUdp => 'x',
        }
    }
}

/// One target group and the listener that forwards to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedGroup {
    /// The listener port.
    pub port: u16,
    pub protocol: ElbProtocol,
    /// The target group's name: changes exactly when an immutable setting does.
    pub name: String,
    /// The port the group is created with: the NodePort for instance targets; the Service
    /// port for ip targets, each of which is registered with its own pod's port.
    pub tg_port: u16,
    pub target_type: TargetType,
    pub health: TgHealth,
    /// Attributes to set (only these keys are managed).
    pub attributes: BTreeMap<String, String>,
    /// Tags the target group carries.
    pub tags: BTreeMap<String, String>,
    /// What the group holds: (instance id, NodePort) for instance targets, (pod IP, pod
    /// port) for ip targets.
    pub targets: BTreeSet<Target>,
}

/// The whole desired NLB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The load balancer's name (the id).
    pub name: String,
    pub settings: Settings,
    /// Tags the load balancer carries.
    pub tags: BTreeMap<String, String>,
    pub groups: Vec<PlannedGroup>,
    /// The instance ids of the nodes targeted (instance targets only: the backend security
    /// group's rules admit them); empty for ip targets.
    pub instances: BTreeSet<String>,
    /// The listener ports that terminate TLS, and how.
    pub tls: BTreeMap<u16, TlsListener>,
}

/// 16 hex digits of sha256(`s`).
pub(super) fn hash16(s: &str) -> String {
    let digest = Sha256::digest(s.as_bytes());
    let mut out = String::with_capacity(16);
    for b in &digest[..8] {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// `b-<16 hex of the LB id>-<port><t|u|x><4 hex of the immutable settings>`: at most 30
/// characters (ELBv2 allows 32), unique per load balancer and port/protocol, and new
/// whenever something ModifyTargetGroup cannot change (the group's port, target type)
/// changes, so the replacement can exist beside the old group while the listener switches
/// over. Targets are not part of it: pods coming and going never rename a group.
pub fn target_group_name(
    lb_id: &str,
    port: u16,
    protocol: ElbProtocol,
    tg_port: u16,
    target_type: TargetType,
) -> String {
    let immutable = hash16(&format!("{tg_port}/{}", target_type.as_str()));
    format!(
        "{}{port}{}{}",
        target_group_prefix(lb_id),
        protocol.letter(),
        &immutable[..4]
    )
}

/// What every target group name of load balancer `lb_id` starts with.
pub fn target_group_prefix(lb_id: &str) -> String {
    format!("b-{}-", hash16(lb_id))
}

/// The key a Service's target group names derive from: its load balancer id, or for a
/// member of a shared NLB's group, the id and the group (so joining or leaving a group
/// never reuses a group attached to the other load balancer).
pub fn target_group_key(lb_id: &str, group: Option<&str>) -> String {
    match group {
        Some(g) => format!("{lb_id}/{g}"),
        None => lb_id.to_string(),
    }
}

/// The instance id in a `spec.providerID` like `aws:///us-east-1a/i-0123`.
pub fn instance_id(provider_id: &str) -> Option<&str> {
    let rest = provider_id.strip_prefix("aws://")?;
    let id = rest.rsplit('/').next()?;
    (id.starts_with("i-") && id.len() > 2).then_some(id)
}

/// Listener ports and protocols, TCP and UDP on one port merged into `TCP_UDP`, with the
/// port each target group is created with (see [`PlannedGroup::tg_port`]). Fails on what
/// an NLB cannot serve; instance targets need NodePorts, ip targets do not.
pub fn plan_ports(
    lb: &DesiredLoadBalancer,
    target_type: TargetType,
) -> Result<Vec<(u16, ElbProtocol, u16)>, ProviderError> {
    let mut by_port: BTreeMap<u16, (ElbProtocol, u16, usize)> = BTreeMap::new();
    for (i, l) in lb.listeners.iter().enumerate() {
        let protocol = match l.protocol {
            Protocol::Tcp => ElbProtocol::Tcp,
            Protocol::Udp => ElbProtocol::Udp,
            Protocol::Sctp => {
                return Err(ProviderError::invalid(
                    format!("spec.ports[{i}].protocol"),
                    "SCTP is not supported by the aws provider; accepted values are TCP and UDP",
                ));
            }
        };
        let node_port = match target_type {
            TargetType::Instance => l.node_port.ok_or_else(|| {
                ProviderError::invalid(
                    format!("spec.ports[{i}].nodePort"),
                    "the aws provider sends traffic to NodePorts with instance targets; a NodePort is required",
                )
            })?,
            TargetType::Ip => l.port,
        };
        match by_port.get_mut(&l.port) {
            None => {
                by_port.insert(l.port, (protocol, node_port, i));
            }
            Some((existing, existing_np, first)) => {
                let merged = matches!(
                    (*existing, protocol),
                    (ElbProtocol::Tcp, ElbProtocol::Udp) | (ElbProtocol::Udp, ElbProtocol::Tcp)
                );
                if !merged {
                    return Err(ProviderError::invalid(
                        format!("spec.ports[{i}].port"),
                        format!(
                            "port {} appears twice with protocol {}; an NLB serves each port once (TCP and UDP on one port are allowed)",
                            l.port, l.protocol
                        ),
                    ));
                }
                if *existing_np != node_port {
                    return Err(ProviderError::invalid(
                        format!("spec.ports[{i}].nodePort"),
                        format!(
                            "TCP and UDP on port {} share one TCP_UDP target group, so they need the same nodePort (spec.ports[{first}] has {existing_np}, this one {node_port})",
                            l.port
                        ),
                    ));
                }
                *existing = ElbProtocol::TcpUdp;
            }
        }
    }
    Ok(by_port
        .into_iter()
        .map(|(port, (protocol, node_port, _))| (port, protocol, node_port))
        .collect())
}

/// The tags every resource of `lb` carries: ownership, resource kind, extra tags.
fn base_tags(
    lb: &DesiredLoadBalancer,
    settings: &Settings,
    resource: &str,
) -> BTreeMap<String, String> {
    let mut tags = settings.extra_tags.clone();
    tags.extend(super::tags::record(&settings.extra_tags));
    tags.extend(lb.labels.clone());
    tags.insert(TAG_RESOURCE.into(), resource.into());
    tags
}

/// The whole desired NLB for `lb` with its parsed annotations.
pub fn plan(lb: &DesiredLoadBalancer, settings: Settings) -> Result<Plan, ProviderError> {
    let ports = plan_ports(lb, settings.target_type)?;
    let instances: BTreeSet<String> = match settings.target_type {
        TargetType::Instance => lb
            .targets
            .iter()
            .filter_map(|t| t.provider_id.as_deref().and_then(instance_id))
            .map(str::to_string)
            .collect(),
        TargetType::Ip => BTreeSet::new(),
    };
    let mut tg_attributes = BTreeMap::new();
    if let crate::SessionAffinity::ClientIp { .. } = lb.session_affinity {
        tg_attributes.insert("stickiness.enabled".to_string(), "true".to_string());
        tg_attributes.insert("stickiness.type".to_string(), "source_ip".to_string());
    }
    tg_attributes.extend(settings.tg_attributes.clone());
    let tg_key = target_group_key(&lb.id, settings.group.as_deref());
    let groups: Vec<PlannedGroup> = ports
        .into_iter()
        .map(|(port, protocol, tg_port)| {
            let mut tags = base_tags(lb, &settings, "target-group");
            tags.insert(TAG_LOAD_BALANCER.into(), lb.id.clone());
            if let Some(g) = &settings.group {
                tags.insert(TAG_GROUP.into(), g.clone());
            }
            tags.insert(TAG_PORT.into(), port.to_string());
            tags.insert(TAG_PROTOCOL.into(), protocol.as_str().into());
            let targets = match settings.target_type {
                TargetType::Instance => instances.iter().map(|i| (i.clone(), tg_port)).collect(),
                TargetType::Ip => ip_targets(lb, port, protocol),
            };
            PlannedGroup {
                port,
                protocol,
                name: target_group_name(&tg_key, port, protocol, tg_port, settings.target_type),
                tg_port,
                target_type: settings.target_type,
                health: settings.health.clone(),
                attributes: tg_attributes.clone(),
                tags,
                targets,
            }
        })
        .collect();
    let tls = tls_ports(lb, &groups, &settings.tls)?;
    Ok(Plan {
        tls,
        name: lb.id.clone(),
        tags: base_tags(lb, &settings, "load-balancer"),
        settings,
        groups,
        instances,
    })
}

/// The ip targets of the group on listener `port`: the ready endpoints of the Service
/// port(s) it serves (for `TCP_UDP`, both the TCP and the UDP port's), each at its pod's
/// port. IPv4 only: berth's target groups are IPv4 groups.
fn ip_targets(lb: &DesiredLoadBalancer, port: u16, protocol: ElbProtocol) -> BTreeSet<Target> {
    let serves = |p: Protocol| match protocol {
        ElbProtocol::Tcp => p == Protocol::Tcp,
        ElbProtocol::Udp => p == Protocol::Udp,
        ElbProtocol::TcpUdp => matches!(p, Protocol::Tcp | Protocol::Udp),
    };
    lb.endpoints
        .iter()
        .filter(|e| e.port == port && serves(e.protocol))
        .flat_map(|e| &e.addresses)
        .filter(|a| a.ip.is_ipv4())
        .map(|a| (a.ip.to_string(), a.port))
        .collect()
}

/// Whether a resource with `tags` belongs to `cluster`.
pub fn in_cluster(tags: &BTreeMap<String, String>, cluster: &str) -> bool {
    tags.get(LABEL_CLUSTER).map(String::as_str) == Some(cluster)
}

/// Whether `tags` say the resource belongs to this cluster and Service uid.
pub fn owned_by(tags: &BTreeMap<String, String>, cluster: &str, uid: &str) -> bool {
    in_cluster(tags, cluster) && tags.get(LABEL_SERVICE_UID).map(String::as_str) == Some(uid)
}

/// Tags to add or overwrite so `current` carries `desired` (extra tags are left alone).
pub fn tags_to_add(
    current: &BTreeMap<String, String>,
    desired: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    desired
        .iter()
        .filter(|(k, v)| current.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Attributes whose current value differs from the desired one.
pub fn attributes_to_set(
    current: &BTreeMap<String, String>,
    desired: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    tags_to_add(current, desired)
}

/// A registered target: id (instance or IP) and port.
pub type Target = (String, u16);

/// `(register, deregister)` to turn `current` into `desired`. A target is its id and its
/// port: the same IP at another port is a change.
pub fn target_changes(
    current: &BTreeSet<Target>,
    desired: &BTreeSet<Target>,
) -> (Vec<Target>, Vec<Target>) {
    (
        desired.difference(current).cloned().collect(),
        current.difference(desired).cloned().collect(),
    )
}

/// A listener as read from ELBv2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentListener {
    pub arn: String,
    pub port: u16,
    pub protocol: String,
    /// The target group it forwards to (when it forwards to exactly one).
    pub target_group: Option<String>,
    /// For a TLS listener: its default certificate (and any others listed), policy, ALPN.
    pub tls: Option<TlsListener>,
}

/// Whether a listener's TLS settings are what is wanted (only the default certificate is
/// compared: DescribeListeners reports no other; the others are synced apart).
fn tls_matches(current: Option<&TlsListener>, want: Option<&TlsListener>) -> bool {
    match (current, want) {
        (None, None) => true,
        (Some(c), Some(w)) => {
            c.certificates.first() == w.certificates.first()
                && c.policy == w.policy
                && c.alpn == w.alpn
        }
        _ => false,
    }
}

/// One ModifyListener call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerModify {
    pub arn: String,
    pub port: u16,
    pub protocol: ElbProtocol,
    pub target_group: String,
    pub tls: Option<TlsListener>,
    /// Whether the listener's protocol changes (else it is left out of the call).
    pub protocol_changes: bool,
}

/// What to do to the listeners.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerChanges {
    /// (port, protocol, target group ARN, TLS)
    pub create: Vec<(u16, ElbProtocol, String, Option<TlsListener>)>,
    /// What to change on existing listeners.
    pub modify: Vec<ListenerModify>,
    /// Listener ARNs.
    pub delete: Vec<String>,
}

impl ListenerChanges {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.modify.is_empty() && self.delete.is_empty()
    }
}

/// The protocol a listener on a target group of `proto` speaks (`TLS` when it
/// terminates TLS).
pub fn listener_protocol(proto: ElbProtocol, tls: Option<&TlsListener>) -> &'static str {
    if tls.is_some() { "TLS" } else { proto.as_str() }
}

/// Listener changes from `current` to `desired` (port, protocol, target group ARN), the
/// ports in `tls` terminating TLS. A second listener on one port (moto accepts
/// duplicates) is deleted.
pub fn listener_changes(
    current: &[CurrentListener],
    desired: &[(u16, ElbProtocol, String)],
    tls: &BTreeMap<u16, TlsListener>,
) -> ListenerChanges {
    let mut out = ListenerChanges::default();
    let mut seen = BTreeSet::new();
    for l in current {
        let want = desired.iter().find(|(p, _, _)| *p == l.port);
        match want {
            Some((port, proto, tg)) if seen.insert(l.port) => {
                let t = tls.get(port);
                let protocol_changes = l.protocol != listener_protocol(*proto, t);
                if protocol_changes
                    || l.target_group.as_deref() != Some(tg.as_str())
                    || !tls_matches(l.tls.as_ref(), t)
                {
                    out.modify.push(ListenerModify {
                        arn: l.arn.clone(),
                        port: *port,
                        protocol: *proto,
                        target_group: tg.clone(),
                        tls: t.cloned(),
                        protocol_changes,
                    });
                }
            }
            _ => out.delete.push(l.arn.clone()),
        }
    }
    for (port, proto, tg) in desired {
        if !seen.contains(port) {
            out.create
                .push((*port, *proto, tg.clone(), tls.get(port).cloned()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::annotations;
    use crate::{EndpointAddress, NodeTarget, ServiceRef};

    fn desired(listeners: &[(u16, Protocol, Option<u16>)]) -> DesiredLoadBalancer {
        let service = ServiceRef {
            namespace: "shop".into(),
            name: "web".into(),
            uid: "u-1".into(),
        };
        let node = |name: &str, ip: Option<&str>, provider_id: &str| NodeTarget {
            provider_id: Some(provider_id.into()),
            ..NodeTarget::new(name, ip.map(|ip| ip.parse().unwrap()))
        };
        listeners
            .iter()
            .fold(
                DesiredLoadBalancer::builder("test", service),
                |b, (port, protocol, node_port)| b.listener("", *port, *protocol, *node_port),
            )
            .targets([
                node("a", Some("10.0.0.1"), "aws:///us-east-1a/i-aaa"),
                node("b", Some("10.0.0.2"), "mock-cloud://b"),
                node("c", None, "aws:///us-east-1b/i-ccc"),
            ])
            .build()
    }

    fn settings(lb: &DesiredLoadBalancer) -> Settings {
        annotations::parse(&lb.annotations, &lb.health_check).unwrap()
    }

    #[test]
    fn names_are_short_stable_and_distinct() {
        let id = crate::naming::load_balancer_id("test", "shop", "web", "u-1");
        let n = target_group_name(&id, 80, ElbProtocol::Tcp, 30080, TargetType::Instance);
        // Must never change: it names target groups that already exist.
        assert_eq!(
            n,
            target_group_name(&id, 80, ElbProtocol::Tcp, 30080, TargetType::Instance)
        );
        assert!(n.starts_with("b-") && n.contains("-80t"), "{n}");
        let longest = target_group_name(&id, 65535, ElbProtocol::TcpUdp, 65535, TargetType::Ip);
        assert!(longest.len() <= 32, "{longest}");
        assert!(
            longest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        );
        let others = [
            target_group_name(&id, 81, ElbProtocol::Tcp, 30080, TargetType::Instance),
            target_group_name(&id, 80, ElbProtocol::Udp, 30080, TargetType::Instance),
            target_group_name(&id, 80, ElbProtocol::Tcp, 30081, TargetType::Instance),
            target_group_name(&id, 80, ElbProtocol::Tcp, 30080, TargetType::Ip),
            target_group_name("b-other", 80, ElbProtocol::Tcp, 30080, TargetType::Instance),
        ];
        for o in others {
            assert_ne!(o, n);
        }
    }

    #[test]
    fn instance_ids_from_provider_ids() {
        for (pid, want) in [
            ("aws:///us-east-1a/i-0123abc", Some("i-0123abc")),
            ("aws:///i-0123", Some("i-0123")),
            ("aws://us-east-1a/i-9", Some("i-9")),
            ("mock-cloud://node-1", None),
            ("aws:///us-east-1a/", None),
            ("gce://p/z/i-1", None),
        ] {
            assert_eq!(instance_id(pid), want, "{pid}");
        }
    }

    #[test]
    fn tcp_and_udp_on_one_port_merge() {
        let lb = desired(&[
            (80, Protocol::Tcp, Some(30080)),
            (53, Protocol::Udp, Some(30053)),
            (53, Protocol::Tcp, Some(30053)),
        ]);
        let p = plan(&lb, settings(&lb)).unwrap();
        let got: Vec<_> = p
            .groups
            .iter()
            .map(|g| (g.port, g.protocol, g.tg_port))
            .collect();
        assert_eq!(
            got,
            vec![
                (53, ElbProtocol::TcpUdp, 30053),
                (80, ElbProtocol::Tcp, 30080)
            ]
        );
        // Instance targets: only nodes with an aws providerID, at each group's NodePort.
        assert_eq!(
            p.instances.iter().map(String::as_str).collect::<Vec<_>>(),
            vec!["i-aaa", "i-ccc"]
        );
        for g in &p.groups {
            assert_eq!(g.target_type, TargetType::Instance);
            let want: BTreeSet<Target> = [("i-aaa".into(), g.tg_port), ("i-ccc".into(), g.tg_port)]
                .into_iter()
                .collect();
            assert_eq!(g.targets, want, "group on {}", g.port);
        }
        assert_eq!(p.tags[TAG_RESOURCE], "load-balancer");
        let g = &p.groups[0];
        assert_eq!(g.tags[TAG_RESOURCE], "target-group");
        assert_eq!(g.tags[TAG_PORT], "53");
        assert_eq!(g.tags[TAG_PROTOCOL], "TCP_UDP");
        assert_eq!(g.tags[TAG_LOAD_BALANCER], lb.id);
        assert_eq!(g.tags[LABEL_CLUSTER], "test");
    }

    fn ep(ip: &str, port: u16) -> EndpointAddress {
        EndpointAddress {
            ip: ip.parse().unwrap(),
            port,
        }
    }

    fn targets(list: &[(&str, u16)]) -> BTreeSet<Target> {
        list.iter().map(|(id, p)| (id.to_string(), *p)).collect()
    }

    /// Three Service ports (http 80, metrics 9090 without a NodePort, dns 53 on TCP and UDP)
    /// in ip mode, with these endpoints per port.
    fn ip_lb(endpoints: &[(&str, u16, Protocol, Vec<EndpointAddress>)]) -> DesiredLoadBalancer {
        let mut lb = desired(&[]);
        lb.listeners = [
            ("http", 80, Protocol::Tcp, Some(30080)),
            ("metrics", 9090, Protocol::Tcp, None),
            ("dns", 53, Protocol::Udp, Some(30053)),
            ("dns-tcp", 53, Protocol::Tcp, Some(30053)),
        ]
        .into_iter()
        .map(|(name, port, protocol, node_port)| crate::Listener {
            name: name.into(),
            port,
            protocol,
            node_port,
        })
        .collect();
        lb.annotations
            .insert(annotations::TARGET_TYPE.into(), "ip".into());
        lb.endpoints = endpoints
            .iter()
            .map(|(name, port, protocol, addresses)| crate::PortEndpoints {
                name: name.to_string(),
                port: *port,
                protocol: *protocol,
                addresses: addresses.clone(),
            })
            .collect();
        lb
    }

    #[test]
    fn ip_targets_are_each_ports_endpoints_at_their_pod_ports() {
        let lb = ip_lb(&[
            (
                "http",
                80,
                Protocol::Tcp,
                vec![
                    ep("10.1.0.1", 8080),
                    ep("10.1.0.2", 8080),
                    ep("fd00::1", 8080),
                ],
            ),
            ("metrics", 9090, Protocol::Tcp, vec![ep("10.1.0.1", 9100)]),
            ("dns", 53, Protocol::Udp, vec![ep("10.1.0.3", 5353)]),
            ("dns-tcp", 53, Protocol::Tcp, vec![ep("10.1.0.3", 5353)]),
        ]);
        let p = plan(&lb, settings(&lb)).unwrap();
        let got: Vec<_> = p
            .groups
            .iter()
            .map(|g| {
                (
                    g.port,
                    g.protocol,
                    g.tg_port,
                    g.target_type,
                    g.targets.clone(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    53,
                    ElbProtocol::TcpUdp,
                    53,
                    TargetType::Ip,
                    targets(&[("10.1.0.3", 5353)])
                ),
                (
                    80,
                    ElbProtocol::Tcp,
                    80,
                    TargetType::Ip,
                    // The IPv6 endpoint is left out: the group is an IPv4 group.
                    targets(&[("10.1.0.1", 8080), ("10.1.0.2", 8080)])
                ),
                (
                    9090,
                    ElbProtocol::Tcp,
                    9090,
                    TargetType::Ip,
                    targets(&[("10.1.0.1", 9100)])
                ),
            ]
        );
        // No node is a target, so no node needs the backend rules.
        assert!(p.instances.is_empty());
    }

    #[test]
    fn ip_groups_keep_their_names_as_pods_move_and_may_be_empty() {
        let before = ip_lb(&[("http", 80, Protocol::Tcp, vec![ep("10.1.0.1", 8080)])]);
        let moved = ip_lb(&[(
            "http",
            80,
            Protocol::Tcp,
            vec![ep("10.1.0.7", 8081), ep("10.1.0.8", 8081)],
        )]);
        let gone = ip_lb(&[]);
        let mut no_node_ports = ip_lb(&[]);
        for l in &mut no_node_ports.listeners {
            l.node_port = None;
        }
        let names = |lb: &DesiredLoadBalancer| {
            plan(lb, settings(lb))
                .unwrap()
                .groups
                .iter()
                .map(|g| g.name.clone())
                .collect::<Vec<_>>()
        };
        for other in [&moved, &gone, &no_node_ports] {
            assert_eq!(names(other), names(&before));
        }
        let p = plan(&moved, settings(&moved)).unwrap();
        let http = p.groups.iter().find(|g| g.port == 80).unwrap();
        assert_eq!(
            http.targets,
            targets(&[("10.1.0.7", 8081), ("10.1.0.8", 8081)])
        );
        // All pods gone: every group is planned, with no targets.
        let p = plan(&gone, settings(&gone)).unwrap();
        assert_eq!(p.groups.len(), 3);
        assert!(p.groups.iter().all(|g| g.targets.is_empty()));
        // Instance and ip groups of one port are different groups.
        let mut instance = before.clone();
        instance.annotations.remove(annotations::TARGET_TYPE);
        instance.listeners.retain(|l| l.node_port.is_some());
        assert!(names(&instance).iter().all(|n| !names(&before).contains(n)));
    }

    #[test]
    fn instance_targets_ignore_endpoints() {
        let mut lb = ip_lb(&[("http", 80, Protocol::Tcp, vec![ep("10.1.0.1", 8080)])]);
        lb.annotations
            .insert(annotations::TARGET_TYPE.into(), "instance".into());
        lb.listeners.retain(|l| l.node_port.is_some());
        lb.session_affinity = crate::SessionAffinity::ClientIp {
            timeout_seconds: 60,
        };
        let p = plan(&lb, settings(&lb)).unwrap();
        let http = p.groups.iter().find(|g| g.port == 80).unwrap();
        assert_eq!(http.target_type, TargetType::Instance);
        assert_eq!(http.tg_port, 30080);
        assert_eq!(http.targets, targets(&[("i-aaa", 30080), ("i-ccc", 30080)]));
        assert_eq!(http.attributes["stickiness.type"], "source_ip");
    }

    #[test]
    fn unservable_ports_are_invalid() {
        let cases = [
            (
                desired(&[(80, Protocol::Sctp, Some(30080))]),
                "spec.ports[0].protocol",
            ),
            (
                desired(&[(80, Protocol::Tcp, None)]),
                "spec.ports[0].nodePort",
            ),
            (
                desired(&[(80, Protocol::Tcp, Some(1)), (80, Protocol::Tcp, Some(1))]),
                "spec.ports[1].port",
            ),
            (
                desired(&[(53, Protocol::Tcp, Some(1)), (53, Protocol::Udp, Some(2))]),
                "spec.ports[1].nodePort",
            ),
        ];
        for (lb, want) in cases {
            match plan_ports(&lb, TargetType::Instance) {
                Err(ProviderError::Invalid { field, .. }) => assert_eq!(field, want),
                other => panic!("{want}: {other:?}"),
            }
        }
        // ip targets need no NodePort, nor one NodePort for TCP and UDP on one port.
        let lb = desired(&[
            (80, Protocol::Tcp, None),
            (53, Protocol::Tcp, Some(1)),
            (53, Protocol::Udp, Some(2)),
        ]);
        assert_eq!(
            plan_ports(&lb, TargetType::Ip).unwrap(),
            vec![(53, ElbProtocol::TcpUdp, 53), (80, ElbProtocol::Tcp, 80)]
        );
    }

    #[test]
    fn target_diff() {
        let current = targets(&[("i-a", 30080), ("i-b", 30080), ("i-c", 31000)]);
        let desired = targets(&[("i-a", 30080), ("i-c", 30080), ("i-d", 30080)]);
        let (reg, dereg) = target_changes(&current, &desired);
        assert_eq!(
            reg,
            vec![("i-c".to_string(), 30080), ("i-d".to_string(), 30080)]
        );
        assert_eq!(
            dereg,
            vec![("i-b".to_string(), 30080), ("i-c".to_string(), 31000)]
        );
        assert_eq!(target_changes(&desired, &desired), (vec![], vec![]));
    }

    #[test]
    fn listener_diff() {
        let l = |arn: &str, port, proto: &str, tg: &str| CurrentListener {
            arn: arn.into(),
            port,
            protocol: proto.into(),
            target_group: Some(tg.into()),
            tls: None,
        };
        let current = vec![
            l("l80", 80, "TCP", "tg80"),
            l("l53", 53, "UDP", "tg53u"),
            l("l443", 443, "TCP", "tg443"),
            l("l80-dup", 80, "TCP", "tg80"),
        ];
        let desired = vec![
            (80, ElbProtocol::Tcp, "tg80".to_string()),
            (53, ElbProtocol::TcpUdp, "tg53x".to_string()),
            (8080, ElbProtocol::Tcp, "tg8080".to_string()),
        ];
        let none = BTreeMap::new();
        let c = listener_changes(&current, &desired, &none);
        assert_eq!(
            c.create,
            vec![(8080, ElbProtocol::Tcp, "tg8080".to_string(), None)]
        );
        assert_eq!(
            c.modify,
            vec![ListenerModify {
                arn: "l53".to_string(),
                port: 53,
                protocol: ElbProtocol::TcpUdp,
                target_group: "tg53x".to_string(),
                tls: None,
                protocol_changes: true,
            }]
        );
        assert_eq!(c.delete, vec!["l443".to_string(), "l80-dup".to_string()]);
        let settled = vec![l("l80", 80, "TCP", "tg80")];
        assert!(listener_changes(&settled, &desired[..1], &none).is_empty());

        // TLS: a TCP listener becomes TLS; a certificate or policy change modifies it.
        let tls = |cert: &str, policy: &str| TlsListener {
            certificates: vec![cert.into(), "extra".into()],
            policy: policy.into(),
            alpn: None,
        };
        let want: BTreeMap<u16, TlsListener> = [(80, tls("c1", "p1"))].into();
        let c = listener_changes(&settled, &desired[..1], &want);
        assert_eq!(c.modify.len(), 1);
        assert_eq!(c.modify[0].tls, Some(tls("c1", "p1")));
        assert!(c.modify[0].protocol_changes);
        let mut as_tls = l("l80", 80, "TLS", "tg80");
        as_tls.tls = Some(TlsListener {
            certificates: vec!["c1".into()],
            ..tls("c1", "p1")
        });
        let same = vec![as_tls.clone()];
        assert!(
            listener_changes(&same, &desired[..1], &want).is_empty(),
            "only the default certificate is compared"
        );
        for other in [tls("c2", "p1"), tls("c1", "p2")] {
            let want: BTreeMap<u16, TlsListener> = [(80, other)].into();
            let m = listener_changes(&same, &desired[..1], &want).modify;
            assert_eq!(m.len(), 1);
            assert!(!m[0].protocol_changes, "TLS stays TLS");
        }
        let back = listener_changes(&same, &desired[..1], &none).modify;
        assert_eq!(
            (back.len(), back[0].tls.clone(), back[0].protocol_changes),
            (1, None, true),
            "back to TCP"
        );
    }

    #[test]
    fn tag_and_attribute_diffs() {
        let cur: BTreeMap<String, String> = [
            ("a".into(), "1".into()),
            ("b".into(), "2".into()),
            ("x".into(), "9".into()),
        ]
        .into();
        let want: BTreeMap<String, String> = [
            ("a".into(), "1".into()),
            ("b".into(), "3".into()),
            ("c".into(), "4".into()),
        ]
        .into();
        let add = tags_to_add(&cur, &want);
        assert_eq!(add.keys().collect::<Vec<_>>(), vec!["b", "c"]);
        assert!(attributes_to_set(&want, &want).is_empty());
        let mut owned = BTreeMap::new();
        assert!(!owned_by(&owned, "test", "u"));
        owned.insert(LABEL_CLUSTER.to_string(), "test".to_string());
        owned.insert(LABEL_SERVICE_UID.to_string(), "u".to_string());
        assert!(owned_by(&owned, "test", "u"));
        assert!(!owned_by(&owned, "other", "u"));
    }
}
