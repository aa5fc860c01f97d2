//! Shared NLBs: Services annotated `berth.io/aws-load-balancer-group: NAME` share one NLB.
//!
//! - The NLB belongs to the group, not to a Service: its name is a hash of cluster and group
//!   ([`lb_name`]) and its tags carry the cluster, [`TAG_GROUP`] and what its members must
//!   agree on (scheme, subnets, attributes), never a Service uid. It is found by name and
//!   tags before anything is created, so a crash between CreateLoadBalancer and its answer
//!   leaves no second one (a duplicate, on backends that accept them, is deleted).
//! - Each member owns its listeners through their target groups: the groups carry the
//!   member's ownership tags and a name prefix derived from its id and the group
//!   ([`plan::target_group_key`]), so a listener's owner is read off its target group's ARN
//!   without a call. A port another member's listener holds is refused (Invalid, naming both
//!   Services) before anything is written for the Service.
//! - A member leaving deletes its listeners, then its target groups, then the NLB if no
//!   listener is left. A crash in between leaves either target groups tagged with the gone
//!   Service (garbage collection finds them, as for any Service) or an NLB without
//!   listeners, which [`AwsProvider::collect_empty_groups`] deletes.
//! - Members' ensures and deletes of one group run one at a time in this process (a lock
//!   per group); only the leader writes, so that is all the serialising needed.
//! - The shared NLB has its own security group (`group_security.rs`) and the cluster's
//!   backend group; each member's `loadBalancerSourceRanges` apply to its own ports. A
//!   member's `-security-groups` would replace the NLB's groups for every member, so it is
//!   refused on members.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use tracing::{info, warn};

use super::annotations::{self, Settings};
use super::api::{CurrentLb, CurrentTg, Elb};
use super::ec2_security_groups::SecurityGroup;
use super::group_security;
use super::plan::{
    self, CurrentListener, Plan, TAG_GROUP, TAG_RESOURCE, hash16, in_cluster, owned_by,
};
use super::security_groups::{self, Attach, frontend_rules};
use super::{
    AwsProvider, Clients, Known, apply_listeners, delete_unplanned_groups, status, sync_groups,
};
use crate::{
    DesiredLoadBalancer, LABEL_CLASS, LABEL_CLUSTER, LABEL_SERVICE_NAME, LABEL_SERVICE_NAMESPACE,
    LABEL_VERSION, LoadBalancerStatus, ProviderError,
};

/// Tag on a shared NLB: a digest of the subnets its members asked for (`discovered`: none).
pub const TAG_GROUP_SUBNETS: &str = "berth.io/group-subnets";
/// Tag on a shared NLB: a digest of the load balancer attributes its members asked for.
pub const TAG_GROUP_ATTRIBUTES: &str = "berth.io/group-attributes";
/// Tag on a shared NLB: whether berth lets it reach the nodes (`true`/`false`).
pub const TAG_GROUP_BACKEND_RULES: &str = "berth.io/group-backend-rules";

/// What garbage collection saw of a cluster's shared NLBs and their security groups.
pub struct Seen {
    pub nlbs: Vec<CurrentLb>,
    pub security_groups: Vec<SecurityGroup>,
}

/// The shared NLB's name: `b-g-<up to 10 characters of the group>-<16 hex digits of
/// sha256("cluster/group")>`, at most 31 characters.
pub fn lb_name(cluster: &str, group: &str) -> String {
    let readable: String = group.chars().take(10).collect();
    format!(
        "b-g-{}-{}",
        readable.trim_end_matches('-'),
        hash16(&format!("{cluster}/{group}"))
    )
}

fn subnets_digest(s: &Settings) -> String {
    match &s.subnets {
        None => "discovered".into(),
        Some(list) => {
            let mut list = list.clone();
            list.sort();
            list.dedup();
            hash16(&list.join(","))
        }
    }
}

fn attributes_digest(s: &Settings) -> String {
    if s.lb_attributes.is_empty() {
        return "none".into();
    }
    let joined: Vec<String> = s
        .lb_attributes
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    hash16(&joined.join(","))
}

/// The shared NLB's tags: the cluster (and class and version) of `lb`'s labels, the group,
/// and what its members must agree on. No Service's ownership.
pub fn nlb_tags(lb: &DesiredLoadBalancer, p: &Plan, group: &str) -> BTreeMap<String, String> {
    let mut tags: BTreeMap<String, String> = lb
        .labels
        .iter()
        .filter(|(k, _)| [LABEL_CLUSTER, LABEL_CLASS, LABEL_VERSION].contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    tags.insert(LABEL_CLUSTER.into(), lb.cluster.clone());
    tags.insert(TAG_RESOURCE.into(), "load-balancer".into());
    tags.insert(TAG_GROUP.into(), group.into());
    tags.insert(TAG_GROUP_SUBNETS.into(), subnets_digest(&p.settings));
    tags.insert(TAG_GROUP_ATTRIBUTES.into(), attributes_digest(&p.settings));
    tags.insert(
        TAG_GROUP_BACKEND_RULES.into(),
        p.settings.security.manage_backend_rules.to_string(),
    );
    tags
}

/// Whether `tags` are those of `cluster`'s shared NLB of `group`.
pub fn is_group_nlb(tags: &BTreeMap<String, String>, cluster: &str, group: &str) -> bool {
    in_cluster(tags, cluster) && tags.get(TAG_GROUP).map(String::as_str) == Some(group)
}

/// What a group member may not ask for: settings that would apply to every member.
pub fn validate(s: &Settings, group: &str) -> Result<(), ProviderError> {
    if s.security.user_groups.is_some() {
        return Err(ProviderError::invalid(
            format!("metadata.annotations[{}]", annotations::SECURITY_GROUPS),
            format!(
                "a member of the shared load balancer group {group:?} cannot set security \
                 groups: they would apply to every member; remove it or the {} annotation",
                annotations::GROUP
            ),
        ));
    }
    Ok(())
}

/// Why the existing shared NLB `cur` does not suit the member planned as `p`: (field,
/// message); None when it does.
pub fn disagreement(cur: &CurrentLb, p: &Plan, group: &str) -> Option<(String, String)> {
    let field = |k: &str| format!("metadata.annotations[{k}]");
    let differ = |what: &str| {
        format!(
            "the members of the shared load balancer group {group:?} must agree on {what}, and \
             this Service's differs from the group's load balancer {}; nothing was changed \
             for this Service",
            cur.tags
                .get(TAG_GROUP)
                .map(|_| lb_name_of(cur))
                .unwrap_or_default()
        )
    };
    let scheme = p.settings.scheme.as_str();
    if cur.scheme != scheme {
        return Some((
            field(annotations::SCHEME),
            format!(
                "{} (it is {}, this Service asks for {scheme})",
                differ("the scheme"),
                cur.scheme
            ),
        ));
    }
    if cur.tags.get(TAG_GROUP_SUBNETS) != Some(&subnets_digest(&p.settings)) {
        return Some((field(annotations::SUBNETS), differ("the subnets")));
    }
    if cur.tags.get(TAG_GROUP_ATTRIBUTES) != Some(&attributes_digest(&p.settings)) {
        return Some((
            field(annotations::LB_ATTRIBUTES),
            differ("the load balancer attributes"),
        ));
    }
    let backend = p.settings.security.manage_backend_rules.to_string();
    if cur.tags.get(TAG_GROUP_BACKEND_RULES) != Some(&backend) {
        return Some((
            field(annotations::MANAGE_BACKEND_RULES),
            differ("whether berth manages the backend security group rules"),
        ));
    }
    None
}

/// The name in a load balancer's ARN (`…:loadbalancer/net/NAME/ID`).
fn lb_name_of(cur: &CurrentLb) -> String {
    cur.arn.rsplit('/').nth(1).unwrap_or_default().to_string()
}

/// The name in a target group's ARN (`…:targetgroup/NAME/ID`).
pub fn tg_name_of(arn: &str) -> Option<&str> {
    arn.rsplit('/').nth(1)
}

/// `namespace/name` of the Service whose tags these are.
fn service_of(tags: &BTreeMap<String, String>) -> String {
    match (
        tags.get(LABEL_SERVICE_NAMESPACE),
        tags.get(LABEL_SERVICE_NAME),
    ) {
        (Some(ns), Some(n)) => format!("{ns}/{n}"),
        _ => "a resource berth did not create".into(),
    }
}

/// The error for ports of `lb` that other members' listeners already hold.
pub fn clash(
    lb: &DesiredLoadBalancer,
    group: &str,
    nlb: &str,
    taken: &[&CurrentListener],
    holders: &[CurrentTg],
) -> ProviderError {
    let mut ports: Vec<u16> = taken.iter().map(|l| l.port).collect();
    ports.sort_unstable();
    let first = ports[0];
    let index = lb
        .listeners
        .iter()
        .position(|l| l.port == first)
        .unwrap_or_default();
    let who: Vec<String> = ports
        .iter()
        .map(|port| {
            let holder = taken
                .iter()
                .find(|l| l.port == *port)
                .and_then(|l| l.target_group.as_deref())
                .and_then(|arn| holders.iter().find(|t| t.arn == arn))
                .map(|t| service_of(&t.tags))
                .unwrap_or_else(|| "a listener berth did not create".into());
            format!("port {port} is held by Service {holder}")
        })
        .collect();
    ProviderError::invalid(
        format!("spec.ports[{index}].port"),
        format!(
            "Service {}/{} cannot have its ports on the shared load balancer {nlb} of group \
             {group:?}: {}; each port of a shared load balancer serves one Service; nothing \
             was changed for this Service",
            lb.service.namespace,
            lb.service.name,
            who.join(", ")
        ),
    )
}

/// One lock per shared NLB (by name), so members' ensures and deletes of a group do not
/// interleave.
#[derive(Default)]
pub struct Locks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl Locks {
    pub fn get(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        match self.0.lock() {
            Ok(mut all) => all.entry(name.to_string()).or_default().clone(),
            // A poisoned map: a lock of its own still serialises this caller's work.
            Err(_) => Arc::default(),
        }
    }
}

/// The shared NLBs named `name` of `cluster`'s `group`, oldest first; a same-named load
/// balancer berth did not make for the group is an error.
async fn find(
    elb: &Elb,
    name: &str,
    cluster: &str,
    group: &str,
) -> Result<Vec<CurrentLb>, ProviderError> {
    let all = elb.load_balancers_named(name).await?;
    let (mut ours, foreign): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|l| is_group_nlb(&l.tags, cluster, group));
    if ours.is_empty() && !foreign.is_empty() {
        return Err(ProviderError::Permanent(format!(
            "Load balancer {name} exists but berth did not create it for group {group:?}; \
             berth will not change it"
        )));
    }
    ours.sort_by(|a, b| a.created.cmp(&b.created).then(a.arn.cmp(&b.arn)));
    Ok(ours)
}

/// The listeners of `arn`; none once it is gone.
async fn listeners_of(elb: &Elb, arn: &str) -> Result<Vec<CurrentListener>, ProviderError> {
    match elb.listeners(arn).await {
        Ok(l) => Ok(l),
        Err(e) if e.not_found() => Ok(vec![]),
        Err(e) => Err(e.into()),
    }
}

impl AwsProvider {
    /// Makes `lb`'s listeners and target groups on its group's shared NLB (made first when
    /// missing) what `p` asks for.
    pub(super) async fn ensure_group(
        &self,
        c: &Clients,
        lb: &DesiredLoadBalancer,
        p: &Plan,
        group: &str,
        shape: String,
    ) -> Result<(LoadBalancerStatus, Known), ProviderError> {
        let elb = &c.elb;
        let uid = &lb.service.uid;
        let name = lb_name(&lb.cluster, group);
        let lock = self.group_locks.get(&name);
        let _one_member_at_a_time = lock.lock().await;

        let mut found = find(elb, &name, &lb.cluster, group).await?;
        // Duplicates (a crash between CreateLoadBalancer and its answer, on a backend that
        // accepts duplicate names): keep the oldest; members' listeners on the others go
        // with them and are made again below or by the members' next ensure.
        for dup in found.split_off(found.len().min(1)) {
            warn!(arn = %dup.arn, "Deleting a duplicate shared load balancer");
            elb.delete_load_balancer(&dup.arn).await?;
        }
        let (nlb, fresh, sg) = match found.pop() {
            Some(cur) => {
                if let Some((field, message)) = disagreement(&cur, p, group) {
                    return Err(ProviderError::invalid(field, message));
                }
                (cur, false, None)
            }
            None => {
                let (subnets, vpc) = self.subnets(c, p, &lb.cluster).await?;
                let tags = nlb_tags(lb, p, group);
                // Created with its security groups: AWS takes none later otherwise.
                let sg =
                    group_security::ensure(&c.ec2, &lb.cluster, group, &name, &vpc, &tags).await?;
                let attach = self.group_attach(c, lb, p, &sg, &vpc).await?;
                let created = elb
                    .create_load_balancer(
                        &name,
                        p.settings.scheme.as_str(),
                        &subnets,
                        &attach.groups,
                        &tags,
                    )
                    .await?;
                info!(%group, arn = %created.arn, dns = %created.dns_name, "Created shared load balancer");
                if !p.settings.lb_attributes.is_empty() {
                    elb.modify_load_balancer_attributes(&created.arn, &p.settings.lb_attributes)
                        .await?;
                }
                (created, true, Some(sg))
            }
        };

        let listeners = if fresh {
            vec![]
        } else {
            elb.listeners(&nlb.arn).await?
        };
        let prefix = plan::target_group_prefix(&plan::target_group_key(&lb.id, Some(group)));
        let (mine, others): (Vec<CurrentListener>, Vec<CurrentListener>) =
            listeners.into_iter().partition(|l| {
                l.target_group
                    .as_deref()
                    .and_then(tg_name_of)
                    .is_some_and(|n| n.starts_with(&prefix))
            });
        let taken: Vec<&CurrentListener> = others
            .iter()
            .filter(|l| p.groups.iter().any(|g| g.port == l.port))
            .collect();
        if !taken.is_empty() {
            let arns: Vec<String> = taken
                .iter()
                .filter_map(|l| l.target_group.clone())
                .collect();
            let holders = elb.target_groups_by_arn(&arns).await?;
            return Err(clash(lb, group, &name, &taken, &holders));
        }

        // The NLB's security groups (made with it when it is new).
        let sg = match sg {
            Some(sg) => sg,
            None => {
                let sg = group_security::ensure(
                    &c.ec2,
                    &lb.cluster,
                    group,
                    &name,
                    &nlb.vpc_id,
                    &nlb.tags,
                )
                .await?;
                let attach = self.group_attach(c, lb, p, &sg, &nlb.vpc_id).await?;
                security_groups::attach(elb, &nlb, &attach).await?;
                sg
            }
        };
        c.sg.ensure_node_rules(&c.ec2, lb, p, &nlb.vpc_id).await?;

        if mine.is_empty() {
            // Joining (or again after a crash): a load balancer of the Service's own from
            // before it joined goes, with its target groups and security group.
            let own: Vec<CurrentLb> = elb
                .load_balancers_named(&lb.id)
                .await?
                .into_iter()
                .filter(|l| owned_by(&l.tags, &lb.cluster, uid))
                .collect();
            for cur in &own {
                info!(arn = %cur.arn, %group, "Joining a group: deleting the Service's own load balancer");
                Self::delete_lb(elb, cur, &lb.cluster, uid).await?;
            }
            // Its own security group, also when a crash left it behind its load balancer.
            security_groups::delete_owned(&c.ec2, &lb.cluster, uid).await?;
        }

        let arns_now: Vec<String> = mine.iter().filter_map(|l| l.target_group.clone()).collect();
        let existing: Vec<CurrentTg> = if arns_now.is_empty() {
            vec![]
        } else {
            elb.target_groups_by_arn(&arns_now)
                .await?
                .into_iter()
                .filter(|t| owned_by(&t.tags, &lb.cluster, uid))
                .collect()
        };
        // Groups not attached yet (a crash before their listener) are looked up by name.
        let arns = sync_groups(elb, lb, p, &existing, true, &nlb.vpc_id).await?;

        let changes = apply_listeners(elb, &nlb.arn, &mine, &arns, p).await?;
        if !changes.is_empty() {
            info!(
                %group,
                created = changes.create.len(),
                modified = changes.modify.len(),
                deleted = changes.delete.len(),
                "Updated the Service's listeners on the shared load balancer"
            );
        }
        delete_unplanned_groups(elb, &existing, p).await?;
        // The rules of this member's ports, and none for ports no listener holds.
        let mine: std::collections::BTreeSet<u16> = p.groups.iter().map(|g| g.port).collect();
        let held = others
            .iter()
            .map(|l| l.port)
            .chain(mine.iter().copied())
            .collect();
        group_security::sync_rules(&c.ec2, &sg, &frontend_rules(lb, p), &mine, &held).await?;

        let known = Known::written(shape, &nlb, p, &arns, Some(group.to_string()));
        Ok((status(&nlb.dns_name), known))
    }

    /// A member of `group` leaves: its listeners (those forwarding to `tgs`, its target
    /// groups' ARNs), then its target groups, then the shared NLB if no listener is left.
    pub(super) async fn leave_group(
        &self,
        c: &Clients,
        cluster: &str,
        group: &str,
        tgs: &[String],
    ) -> Result<(), ProviderError> {
        let elb = &c.elb;
        let name = lb_name(cluster, group);
        let lock = self.group_locks.get(&name);
        let _one_member_at_a_time = lock.lock().await;
        let mut left: Option<std::collections::BTreeSet<u16>> = None;
        for nlb in find(elb, &name, cluster, group).await? {
            let (ours, rest): (Vec<_>, Vec<_>) = listeners_of(elb, &nlb.arn)
                .await?
                .into_iter()
                .partition(|l| l.target_group.as_ref().is_some_and(|t| tgs.contains(t)));
            for l in &ours {
                elb.delete_listener(&l.arn).await?;
            }
            if !ours.is_empty() {
                info!(%group, listeners = ours.len(), "Deleted the Service's listeners on the shared load balancer");
            }
            if rest.is_empty() {
                elb.delete_load_balancer(&nlb.arn).await?;
                info!(%group, arn = %nlb.arn, "Deleted shared load balancer: its last member left");
            } else {
                left.get_or_insert_default()
                    .extend(rest.iter().map(|l| l.port));
            }
        }
        for arn in tgs {
            elb.delete_target_group(arn).await?;
            info!(name = %tg_name_of(arn).unwrap_or_default(), "Deleted target group");
        }
        let sgs = group_security::find(&c.ec2, cluster, group).await?;
        match left {
            // Members remain: only the rules of ports no listener holds go.
            Some(held) => {
                for sg in &sgs {
                    group_security::sync_rules(
                        &c.ec2,
                        sg,
                        &Default::default(),
                        &Default::default(),
                        &held,
                    )
                    .await?;
                }
            }
            // The NLB is gone: its security group goes after it.
            None => {
                for sg in &sgs {
                    security_groups::delete_group(&c.ec2, &sg.id).await?;
                }
            }
        }
        Ok(())
    }

    /// The groups a shared NLB carries: its own and, when berth manages the backend rules,
    /// the cluster's backend group in `vpc`.
    async fn group_attach(
        &self,
        c: &Clients,
        lb: &DesiredLoadBalancer,
        p: &Plan,
        sg: &SecurityGroup,
        vpc: &str,
    ) -> Result<Attach, ProviderError> {
        let mut groups = vec![sg.id.clone()];
        if p.settings.security.manage_backend_rules {
            groups.push(c.sg.backend_group(&c.ec2, &lb.cluster, vpc).await?);
        }
        groups.sort();
        Ok(Attach {
            groups,
            stale: vec![],
        })
    }

    /// Deletes `cluster`'s shared NLBs that have no listener left (a crash between the
    /// last member's leaving and the NLB's deletion), and the security groups of shared
    /// NLBs that are gone; returns how many went. Both are checked again with no ensure
    /// running before each deletion, so a member being made is never cut.
    pub(super) async fn collect_empty_groups(
        &self,
        c: &Clients,
        cluster: &str,
        seen: Seen,
    ) -> Result<usize, ProviderError> {
        let mut empty = Vec::new();
        for nlb in &seen.nlbs {
            if listeners_of(&c.elb, &nlb.arn).await?.is_empty() {
                empty.push(nlb.clone());
            }
        }
        let live: Vec<&str> = seen
            .nlbs
            .iter()
            .filter(|n| !empty.iter().any(|e| e.arn == n.arn))
            .filter_map(|n| n.tags.get(TAG_GROUP).map(String::as_str))
            .collect();
        let lone: Vec<&SecurityGroup> = seen
            .security_groups
            .iter()
            .filter(|g| {
                g.tags
                    .get(TAG_GROUP)
                    .is_none_or(|t| !live.contains(&t.as_str()))
            })
            .collect();
        if empty.is_empty() && lone.is_empty() {
            return Ok(0);
        }
        let _no_ensure = c.sg.in_use.write().await;
        let mut deleted = 0;
        for nlb in empty {
            let lock = self.group_locks.get(&lb_name_of(&nlb));
            let _no_member = lock.lock().await;
            if listeners_of(&c.elb, &nlb.arn).await?.is_empty() {
                c.elb.delete_load_balancer(&nlb.arn).await?;
                info!(arn = %nlb.arn, group = %nlb.tags.get(TAG_GROUP).map(String::as_str).unwrap_or_default(), "Deleted a shared load balancer no member uses");
                deleted += 1;
            }
        }
        for g in lone {
            let Some(group) = g.tags.get(TAG_GROUP) else {
                continue;
            };
            let name = lb_name(cluster, group);
            let lock = self.group_locks.get(&name);
            let _no_member = lock.lock().await;
            if !find(&c.elb, &name, cluster, group).await?.is_empty() {
                continue;
            }
            // AWS refuses while a just-deleted NLB still holds it: the next pass retries.
            match security_groups::delete_group(&c.ec2, &g.id).await {
                Ok(()) => deleted += 1,
                Err(e) => {
                    warn!(security_group = %g.id, error = %e, "Cannot delete a shared load balancer's security group yet")
                }
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Protocol, ServiceRef};

    fn member(name: &str, port: u16, ann: &[(&str, &str)]) -> DesiredLoadBalancer {
        let service = ServiceRef {
            namespace: "shop".into(),
            name: name.into(),
            uid: format!("u-{name}"),
        };
        let b = ann.iter().fold(
            DesiredLoadBalancer::builder("test", service)
                .listener("", port, Protocol::Tcp, Some(30000 + port))
                .annotation(annotations::GROUP, "edge"),
            |b, (k, v)| b.annotation(k, v),
        );
        b.build()
    }

    fn plan_of(lb: &DesiredLoadBalancer) -> Plan {
        let s = annotations::parse(&lb.annotations, &lb.health_check).unwrap();
        plan::plan(lb, s).unwrap()
    }

    fn nlb(tags: BTreeMap<String, String>, scheme: &str) -> CurrentLb {
        CurrentLb {
            arn: "arn:aws:elasticloadbalancing:us-east-1:1:loadbalancer/net/b-g-edge-x/1".into(),
            dns_name: "edge.elb".into(),
            scheme: scheme.into(),
            kind: "network".into(),
            vpc_id: "vpc-1".into(),
            subnets: Default::default(),
            security_groups: Default::default(),
            created: None,
            tags,
        }
    }

    #[test]
    fn names_are_stable_short_and_per_cluster() {
        let n = lb_name("test", "edge");
        assert_eq!(n, lb_name("test", "edge"));
        assert!(n.starts_with("b-g-edge-") && n.len() <= 32, "{n}");
        let long = lb_name("test", &"a-".repeat(31));
        assert!(long.len() <= 32 && !long.contains("--"), "{long}");
        assert_ne!(n, lb_name("other", "edge"));
        assert_ne!(n, lb_name("test", "edge2"));
    }

    #[test]
    fn members_have_their_own_target_group_names_and_the_group_tag() {
        let a = plan_of(&member("a", 80, &[]));
        let b = plan_of(&member("b", 80, &[]));
        assert_ne!(a.groups[0].name, b.groups[0].name);
        assert_eq!(a.groups[0].tags[TAG_GROUP], "edge");
        let key = plan::target_group_key(&member("a", 80, &[]).id, Some("edge"));
        assert!(
            a.groups[0]
                .name
                .starts_with(&plan::target_group_prefix(&key))
        );
        // Outside the group, the same Service's group has another name.
        let mut alone = member("a", 80, &[]);
        alone.annotations.remove(annotations::GROUP);
        let alone = plan_of(&alone);
        assert_ne!(alone.groups[0].name, a.groups[0].name);
        assert!(!alone.groups[0].tags.contains_key(TAG_GROUP));
    }

    #[test]
    fn the_shared_nlb_carries_the_group_but_no_service() {
        let lb = member("a", 80, &[]);
        let tags = nlb_tags(&lb, &plan_of(&lb), "edge");
        assert!(is_group_nlb(&tags, "test", "edge"));
        assert!(!is_group_nlb(&tags, "other", "edge"));
        assert!(!tags.contains_key(crate::LABEL_SERVICE_UID));
        assert!(!tags.contains_key(LABEL_SERVICE_NAME));
    }

    #[test]
    fn members_must_agree_on_scheme_subnets_and_attributes() {
        let a = member("a", 80, &[]);
        let cur = nlb(nlb_tags(&a, &plan_of(&a), "edge"), "internal");
        assert_eq!(
            disagreement(&cur, &plan_of(&member("b", 81, &[])), "edge"),
            None
        );
        let facing = member("b", 81, &[(annotations::SCHEME, "internet-facing")]);
        let (field, msg) = disagreement(&cur, &plan_of(&facing), "edge").unwrap();
        assert!(field.contains(annotations::SCHEME), "{field}");
        assert!(
            msg.contains("internet-facing") && msg.contains("internal"),
            "{msg}"
        );
        let subnets = member("b", 81, &[(annotations::SUBNETS, "subnet-1")]);
        let (field, _) = disagreement(&cur, &plan_of(&subnets), "edge").unwrap();
        assert!(field.contains(annotations::SUBNETS), "{field}");
        let attrs = member(
            "b",
            81,
            &[(
                annotations::LB_ATTRIBUTES,
                "load_balancing.cross_zone.enabled=true",
            )],
        );
        let (field, _) = disagreement(&cur, &plan_of(&attrs), "edge").unwrap();
        assert!(field.contains(annotations::LB_ATTRIBUTES), "{field}");
        let unmanaged = member("b", 81, &[(annotations::MANAGE_BACKEND_RULES, "false")]);
        let (field, _) = disagreement(&cur, &plan_of(&unmanaged), "edge").unwrap();
        assert!(field.contains(annotations::MANAGE_BACKEND_RULES), "{field}");
    }

    #[test]
    fn members_cannot_name_security_groups() {
        let lb = member("a", 80, &[(annotations::SECURITY_GROUPS, "sg-1")]);
        let s = annotations::parse(&lb.annotations, &lb.health_check).unwrap();
        let err = validate(&s, "edge").unwrap_err();
        assert!(
            err.to_string().contains(annotations::SECURITY_GROUPS),
            "{err}"
        );
        // Source ranges are a member's own: its ports' rules.
        let lb = DesiredLoadBalancer {
            source_ranges: vec!["10.0.0.0/8".parse().unwrap()],
            ..member("a", 80, &[])
        };
        let s = annotations::parse(&lb.annotations, &lb.health_check).unwrap();
        assert!(validate(&s, "edge").is_ok());
    }

    #[test]
    fn a_clash_names_both_services_and_the_port() {
        let web = member("web", 80, &[]);
        let tg_arn = "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/b-x-80t/2";
        let held = CurrentListener {
            arn: "l-1".into(),
            port: 80,
            protocol: "TCP".into(),
            target_group: Some(tg_arn.into()),
            tls: None,
        };
        let holder = CurrentTg {
            arn: tg_arn.into(),
            name: "b-x-80t".into(),
            health: plan_of(&web).groups[0].health.clone(),
            tags: [
                (LABEL_SERVICE_NAMESPACE.to_string(), "shop".to_string()),
                (LABEL_SERVICE_NAME.to_string(), "api".to_string()),
            ]
            .into(),
        };
        let err = clash(&web, "edge", "b-g-edge-1", &[&held], &[holder]);
        let ProviderError::Invalid { field, message } = err else {
            panic!("not Invalid");
        };
        assert_eq!(field, "spec.ports[0].port");
        assert!(
            message.contains("shop/web") && message.contains("shop/api"),
            "{message}"
        );
        assert!(message.contains("port 80"), "{message}");
        assert_eq!(tg_name_of(tg_arn), Some("b-x-80t"));
    }

    #[test]
    fn bad_group_names_are_refused() {
        for bad in ["", "Edge", "edge_1", "-edge", &"a".repeat(64)] {
            let ann: BTreeMap<String, String> =
                [(annotations::GROUP.to_string(), bad.to_string())].into();
            let err =
                annotations::parse(&ann, &crate::HealthCheck::tcp_traffic_port()).unwrap_err();
            assert!(err.to_string().contains(annotations::GROUP), "{bad}: {err}");
        }
    }
}
