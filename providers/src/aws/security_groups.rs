//! Security groups for an NLB, as the AWS Load Balancer Controller arranges them:
//!
//! - a **frontend** group per NLB, owned by berth and tagged like the NLB, allowing the
//!   listener ports from `loadBalancerSourceRanges` (everywhere when there are none); or
//!   the user's own groups (`-security-groups`), which berth attaches and never edits;
//! - a **backend** group per cluster and VPC, owned by berth and attached to every NLB,
//!   and a rule on each node's security group letting that backend group reach the nodes
//!   (`-manage-backend-security-group-rules: "false"` turns this off).
//!
//! Every NLB is created with its groups: AWS accepts security groups on an NLB only if it
//! was created with at least one. The rule sets and their diffs are pure; the calls are in
//! `ec2_security_groups.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use tracing::{info, warn};

use super::annotations::{self, TargetType};
use super::api::{CurrentLb, Elb};
use super::ec2::Ec2;
use super::ec2_security_groups::SecurityGroup;
use super::plan::{ElbProtocol, Plan, TAG_LOAD_BALANCER, TAG_RESOURCE, hash16, tags_to_add};
use super::tags;
use crate::bounds::quote;
use crate::{
    BERTH_VERSION, DesiredLoadBalancer, IpFamily, LABEL_CLUSTER, LABEL_SERVICE_UID, LABEL_VERSION,
    OwnedLoadBalancer, ProviderError,
};

/// The description of every rule berth writes.
pub const RULE_DESCRIPTION: &str = "managed by berth";
/// [`TAG_RESOURCE`] of a frontend group.
pub const RESOURCE_FRONTEND: &str = "security-group";
/// [`TAG_RESOURCE`] of the cluster's backend group.
pub const RESOURCE_BACKEND: &str = "backend-security-group";

/// Where traffic allowed by a rule comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// An IPv4 or IPv6 prefix.
    Cidr(String),
    /// Members of a security group.
    Group(String),
}

/// One ingress rule: protocol (`tcp`, `udp`, `-1`), port range, one source.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rule {
    pub protocol: String,
    pub from: i32,
    pub to: i32,
    pub source: Source,
}

/// What the security-group annotations ask for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SgSettings {
    /// The user's groups (ids or names): attached instead of berth's frontend group.
    pub user_groups: Option<Vec<String>>,
    /// Whether berth lets its NLBs reach the nodes (backend group and node rule).
    pub manage_backend_rules: bool,
}

/// Reads the security-group annotations.
pub fn parse(ann: &BTreeMap<String, String>) -> Result<SgSettings, ProviderError> {
    let field = |k: &str| format!("metadata.annotations[{k}]");
    let user_groups = match ann.get(annotations::SECURITY_GROUPS) {
        None => None,
        Some(raw) => {
            let list: Vec<String> = raw.split(',').map(|s| s.trim().to_string()).collect();
            if list.iter().any(String::is_empty) || list.len() > 5 {
                return Err(ProviderError::invalid(
                    field(annotations::SECURITY_GROUPS),
                    format!(
                        "invalid value {}: accepted values are 1 to 5 comma-separated security group ids (sg-…) or names",
                        quote(raw)
                    ),
                ));
            }
            Some(list)
        }
    };
    let manage_backend_rules = match ann
        .get(annotations::MANAGE_BACKEND_RULES)
        .map(|s| s.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("true") => true,
        Some("false") => false,
        Some(_) => {
            return Err(ProviderError::invalid(
                field(annotations::MANAGE_BACKEND_RULES),
                format!(
                    "invalid value {}: accepted values are \"true\" and \"false\"",
                    quote(&ann[annotations::MANAGE_BACKEND_RULES])
                ),
            ));
        }
    };
    Ok(SgSettings {
        user_groups,
        manage_backend_rules,
    })
}

/// The frontend group's rules: every listener port (TCP, UDP or both) from every source
/// range, or from everywhere (`0.0.0.0/0`, and `::/0` for an IPv6 Service) when none.
pub fn frontend_rules(lb: &DesiredLoadBalancer, p: &Plan) -> BTreeSet<Rule> {
    let sources: Vec<String> = if lb.source_ranges.is_empty() {
        let mut all = vec!["0.0.0.0/0".to_string()];
        if lb.ip_families.contains(&IpFamily::IPv6) {
            all.push("::/0".into());
        }
        all
    } else {
        lb.source_ranges
            .iter()
            .map(|c| c.net().trunc().to_string())
            .collect()
    };
    let mut out = BTreeSet::new();
    for g in &p.groups {
        let protocols: &[&str] = match g.protocol {
            ElbProtocol::Tcp => &["tcp"],
            ElbProtocol::Udp => &["udp"],
            ElbProtocol::TcpUdp => &["tcp", "udp"],
        };
        for proto in protocols {
            for s in &sources {
                out.insert(Rule {
                    protocol: (*proto).into(),
                    from: i32::from(g.port),
                    to: i32::from(g.port),
                    source: Source::Cidr(s.clone()),
                });
            }
        }
    }
    out
}

/// The rules that let members of `backend` reach a node on any TCP or UDP port (NodePorts,
/// health-check ports, pod ports for `ip` targets).
pub fn backend_rules(backend: &str) -> BTreeSet<Rule> {
    ["tcp", "udp"]
        .into_iter()
        .map(|proto| Rule {
            protocol: proto.into(),
            from: 0,
            to: 65535,
            source: Source::Group(backend.into()),
        })
        .collect()
}

/// `(authorize, revoke)` to turn `current` into `desired`.
pub fn rule_changes(current: &BTreeSet<Rule>, desired: &BTreeSet<Rule>) -> (Vec<Rule>, Vec<Rule>) {
    (
        desired.difference(current).cloned().collect(),
        current.difference(desired).cloned().collect(),
    )
}

/// The security group of a node that berth adds the backend rule to: the one tagged
/// `kubernetes.io/cluster/<cluster>`, else the node's only group. `None` when neither
/// exists or several are tagged (the same choice the AWS Load Balancer Controller makes).
pub fn node_group<'a>(
    groups: &[&'a SecurityGroup],
    cluster: &str,
) -> Result<&'a SecurityGroup, String> {
    let tag = format!("kubernetes.io/cluster/{cluster}");
    let tagged: Vec<&&SecurityGroup> = groups
        .iter()
        .filter(|g| g.tags.contains_key(&tag))
        .collect();
    match (tagged.as_slice(), groups) {
        ([one], _) => Ok(one),
        ([], [only]) => Ok(only),
        ([], _) => Err(format!(
            "{} security groups and none tagged {tag}",
            groups.len()
        )),
        (many, _) => Err(format!("{} security groups tagged {tag}", many.len())),
    }
}

/// The frontend group's name: the NLB's (unique per Service; security group names are
/// unique per VPC).
fn frontend_name(p: &Plan) -> String {
    p.name.clone()
}

fn backend_name(cluster: &str) -> String {
    format!("berth-backend-{}", hash16(cluster))
}

/// The tags of the frontend group: the NLB's, with its own resource kind and the NLB id
/// (so garbage collection finds it without the NLB).
fn frontend_tags(p: &Plan) -> BTreeMap<String, String> {
    let mut tags = p.tags.clone();
    tags.insert(TAG_RESOURCE.into(), RESOURCE_FRONTEND.into());
    tags.insert(TAG_LOAD_BALANCER.into(), p.name.clone());
    tags
}

/// The groups to attach to an NLB, and berth's groups to delete once detached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attach {
    /// Sorted ids.
    pub groups: Vec<String>,
    /// berth's frontend groups no longer wanted (the user now names their own).
    pub stale: Vec<String>,
}

/// What berth has already checked, so an unchanged re-ensure costs no extra EC2 call per
/// node: the backend group per VPC and the instances whose security group has the rule.
#[derive(Default)]
pub struct SgState {
    backend: Mutex<BTreeMap<String, String>>,
    /// Held while one worker looks up or creates the backend group, so workers that start
    /// together do not each try to create it (its name is unique per VPC).
    backend_lookup: tokio::sync::Mutex<()>,
    ruled: Mutex<BTreeSet<String>>,
    /// Read-held by every ensure, write-held while the backend group is deleted, so no
    /// load balancer is being made with a group that is going away.
    pub in_use: tokio::sync::RwLock<()>,
}

impl SgState {
    fn forget(&self) {
        if let Ok(mut b) = self.backend.lock() {
            b.clear();
        }
        if let Ok(mut r) = self.ruled.lock() {
            r.clear();
        }
    }

    /// Makes the groups of `lb` what `p` asks for in `vpc`; returns what to attach.
    pub async fn ensure(
        &self,
        ec2: &Ec2,
        lb: &DesiredLoadBalancer,
        p: &Plan,
        vpc: &str,
    ) -> Result<Attach, ProviderError> {
        let result = self.ensure_inner(ec2, lb, p, vpc).await;
        if result.is_err() {
            // Re-read everything next time.
            self.forget();
        }
        result
    }

    async fn ensure_inner(
        &self,
        ec2: &Ec2,
        lb: &DesiredLoadBalancer,
        p: &Plan,
        vpc: &str,
    ) -> Result<Attach, ProviderError> {
        let sg = &p.settings.security;
        let owned = owned_groups(ec2, &lb.cluster, &lb.service.uid).await?;
        let mut out = Attach::default();
        match &sg.user_groups {
            Some(wanted) => {
                out.groups = resolve_user_groups(ec2, wanted, vpc).await?;
                out.stale = owned.iter().map(|g| g.id.clone()).collect();
            }
            None => {
                let mine = match owned.iter().find(|g| g.vpc_id == vpc) {
                    Some(g) => {
                        sync_tags(ec2, g, &frontend_tags(p)).await?;
                        g.clone()
                    }
                    None => {
                        let name = frontend_name(p);
                        let description = format!(
                            "berth: clients of Service {}/{}",
                            lb.service.namespace, lb.service.name
                        );
                        let id = ec2
                            .create_security_group(&name, &description, vpc, &frontend_tags(p))
                            .await?;
                        info!(group = %id, "Created security group");
                        SecurityGroup {
                            id,
                            name,
                            vpc_id: vpc.into(),
                            ingress: BTreeSet::new(),
                            tags: frontend_tags(p),
                        }
                    }
                };
                let (authorize, revoke) = rule_changes(&mine.ingress, &frontend_rules(lb, p));
                ec2.revoke_ingress(&mine.id, &revoke).await?;
                ec2.authorize_ingress(&mine.id, &authorize).await?;
                if !authorize.is_empty() || !revoke.is_empty() {
                    info!(group = %mine.id, added = authorize.len(), removed = revoke.len(), "Updated security group rules");
                }
                out.stale = owned
                    .iter()
                    .filter(|g| g.id != mine.id)
                    .map(|g| g.id.clone())
                    .collect();
                out.groups.push(mine.id);
            }
        }
        if sg.manage_backend_rules {
            let backend = self.backend_group(ec2, &lb.cluster, vpc).await?;
            if p.settings.target_type == TargetType::Instance {
                self.node_rules(ec2, &lb.cluster, &backend, &p.instances)
                    .await?;
            }
            out.groups.push(backend);
        }
        out.groups.sort();
        out.groups.dedup();
        Ok(out)
    }

    /// Only the node rules for `p`'s targets, for an NLB whose groups are known to be as
    /// berth left them: EC2 calls only for instances not checked before.
    pub async fn ensure_node_rules(
        &self,
        ec2: &Ec2,
        lb: &DesiredLoadBalancer,
        p: &Plan,
        vpc: &str,
    ) -> Result<(), ProviderError> {
        if !p.settings.security.manage_backend_rules
            || p.settings.target_type != TargetType::Instance
        {
            return Ok(());
        }
        let result = async {
            let backend = self.backend_group(ec2, &lb.cluster, vpc).await?;
            self.node_rules(ec2, &lb.cluster, &backend, &p.instances)
                .await
        }
        .await;
        if result.is_err() {
            self.forget();
        }
        result
    }

    /// The cluster's backend group in `vpc`, created when missing.
    pub(super) async fn backend_group(
        &self,
        ec2: &Ec2,
        cluster: &str,
        vpc: &str,
    ) -> Result<String, ProviderError> {
        if let Some(id) = self.backend.lock().ok().and_then(|b| b.get(vpc).cloned()) {
            return Ok(id);
        }
        let _one_at_a_time = self.backend_lookup.lock().await;
        // Another worker may have found or created it while this one waited.
        if let Some(id) = self.backend.lock().ok().and_then(|b| b.get(vpc).cloned()) {
            return Ok(id);
        }
        let found = Self::backend_groups(ec2, cluster, Some(vpc)).await?;
        let id = match found.iter().map(|g| &g.id).min() {
            Some(id) => id.clone(),
            None => {
                let tags: BTreeMap<String, String> = [
                    (LABEL_CLUSTER, cluster),
                    (TAG_RESOURCE, RESOURCE_BACKEND),
                    (LABEL_VERSION, BERTH_VERSION),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
                let id = ec2
                    .create_security_group(
                        &backend_name(cluster),
                        &format!("berth: load balancers of cluster {cluster} reach its nodes"),
                        vpc,
                        &tags,
                    )
                    .await?;
                info!(group = %id, "Created the cluster's backend security group");
                id
            }
        };
        if let Ok(mut b) = self.backend.lock() {
            b.insert(vpc.to_string(), id.clone());
        }
        Ok(id)
    }

    /// The cluster's backend groups: in `vpc`, or in every VPC it has had load balancers in.
    pub async fn backend_groups(
        ec2: &Ec2,
        cluster: &str,
        vpc: Option<&str>,
    ) -> Result<Vec<SecurityGroup>, ProviderError> {
        let mut filters = vec![
            (format!("tag:{LABEL_CLUSTER}"), vec![cluster.to_string()]),
            (
                format!("tag:{TAG_RESOURCE}"),
                vec![RESOURCE_BACKEND.to_string()],
            ),
        ];
        if let Some(vpc) = vpc {
            filters.push(("vpc-id".into(), vec![vpc.to_string()]));
        }
        let filters: Vec<(&str, Vec<String>)> = filters
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        Ok(ec2.describe_security_groups(&filters).await?)
    }

    /// Deletes the backend group `backend`: first the rules that name it as their source
    /// (AWS refuses to delete a group other groups' rules refer to), then the group. If any
    /// step fails, the rules taken away so far are put back, so the nodes never stop
    /// admitting a group that still exists. The caller holds [`SgState::in_use`] for
    /// writing and has checked that no load balancer of the cluster is left.
    pub async fn delete_backend(&self, ec2: &Ec2, backend: &str) -> Result<(), ProviderError> {
        // Whatever happens, what this process remembered about the group is stale.
        self.forget();
        let want = backend_rules(backend);
        let referring = ec2
            .describe_security_groups(&[("ip-permission.group-id", vec![backend.to_string()])])
            .await?;
        let mut revoked: Vec<(String, Vec<Rule>)> = Vec::new();
        let result: Result<(), ProviderError> = async {
            for g in referring.iter().filter(|g| g.id != backend) {
                let rules: Vec<Rule> = g.ingress.intersection(&want).cloned().collect();
                if !rules.is_empty() {
                    ec2.revoke_ingress(&g.id, &rules).await?;
                    revoked.push((g.id.clone(), rules));
                }
            }
            Ok(ec2.delete_security_group(backend).await?)
        }
        .await;
        if let Err(e) = result {
            for (g, rules) in &revoked {
                if let Err(back) = ec2.authorize_ingress(g, rules).await {
                    warn!(group = %g, error = %ProviderError::from(back), "Cannot put back the backend rule on a node security group; the next ensure adds it");
                }
            }
            return Err(e);
        }
        info!(group = %backend, nodes = revoked.len(), "Deleted the cluster's backend security group and the node rules naming it: no load balancer of the cluster is left");
        Ok(())
    }

    /// Adds the backend rule to the security group of each instance in `targets` not
    /// checked before.
    async fn node_rules(
        &self,
        ec2: &Ec2,
        cluster: &str,
        backend: &str,
        targets: &BTreeSet<String>,
    ) -> Result<(), ProviderError> {
        let new: Vec<String> = {
            let ruled = self.ruled.lock().map(|r| r.clone()).unwrap_or_default();
            targets.difference(&ruled).cloned().collect()
        };
        if new.is_empty() {
            return Ok(());
        }
        let by_instance = ec2.instance_security_groups(&new).await?;
        let ids: BTreeSet<String> = by_instance.values().flatten().cloned().collect();
        let groups = if ids.is_empty() {
            vec![]
        } else {
            ec2.describe_security_groups(&[("group-id", ids.into_iter().collect())])
                .await?
        };
        let want = backend_rules(backend);
        let mut done: BTreeSet<String> = BTreeSet::new();
        for (instance, gids) in &by_instance {
            let of: Vec<&SecurityGroup> = groups.iter().filter(|g| gids.contains(&g.id)).collect();
            match node_group(&of, cluster) {
                Ok(g) => {
                    if done.insert(g.id.clone()) {
                        let (add, _) = rule_changes(&g.ingress, &want);
                        ec2.authorize_ingress(&g.id, &add).await?;
                        if !add.is_empty() {
                            info!(group = %g.id, "Let load balancers reach the nodes of this security group");
                        }
                    }
                }
                Err(why) => warn!(%instance, "No node security group for the backend rule: {why}"),
            }
        }
        if let Ok(mut r) = self.ruled.lock() {
            r.extend(by_instance.into_keys());
        }
        Ok(())
    }
}

/// Brings the tags of berth's group `g` to `want` (extra tags added or removed).
async fn sync_tags(
    ec2: &Ec2,
    g: &SecurityGroup,
    want: &BTreeMap<String, String>,
) -> Result<(), ProviderError> {
    let add = tags_to_add(&g.tags, want);
    if !add.is_empty() {
        ec2.create_tags(&g.id, &add).await?;
    }
    let remove = tags::to_remove(&g.tags, want);
    if !remove.is_empty() {
        ec2.delete_tags(&g.id, &remove).await?;
        info!(group = %g.id, ?remove, "Removed tags");
    }
    Ok(())
}

/// berth's frontend groups of the Service `uid` in `cluster`.
async fn owned_groups(
    ec2: &Ec2,
    cluster: &str,
    uid: &str,
) -> Result<Vec<SecurityGroup>, ProviderError> {
    tagged_groups(ec2, cluster, (LABEL_SERVICE_UID, uid), RESOURCE_FRONTEND).await
}

/// `cluster`'s security groups tagged as `resource` and with the tag `owner` (key, value),
/// oldest id first.
pub(super) async fn tagged_groups(
    ec2: &Ec2,
    cluster: &str,
    owner: (&str, &str),
    resource: &str,
) -> Result<Vec<SecurityGroup>, ProviderError> {
    let mut found = ec2
        .describe_security_groups(&[
            (&format!("tag:{LABEL_CLUSTER}"), vec![cluster.to_string()]),
            (&format!("tag:{}", owner.0), vec![owner.1.to_string()]),
            (&format!("tag:{TAG_RESOURCE}"), vec![resource.to_string()]),
        ])
        .await?;
    found.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(found)
}

/// The ids of the user's groups (ids or names in `vpc`); a missing one is an error naming
/// the annotation.
async fn resolve_user_groups(
    ec2: &Ec2,
    wanted: &[String],
    vpc: &str,
) -> Result<Vec<String>, ProviderError> {
    let (ids, names): (Vec<String>, Vec<String>) =
        wanted.iter().cloned().partition(|s| s.starts_with("sg-"));
    let mut found = Vec::new();
    if !ids.is_empty() {
        found.extend(
            ec2.describe_security_groups(&[("group-id", ids)])
                .await
                .or_else(|e| {
                    if e.is("InvalidGroup.NotFound") {
                        Ok(vec![])
                    } else {
                        Err(e)
                    }
                })?,
        );
    }
    if !names.is_empty() {
        found.extend(
            ec2.describe_security_groups(&[
                ("group-name", names),
                ("vpc-id", vec![vpc.to_string()]),
            ])
            .await?,
        );
    }
    let mut out = Vec::new();
    for w in wanted {
        let g = found.iter().find(|g| &g.id == w || &g.name == w).ok_or_else(|| {
            ProviderError::invalid(
                format!("metadata.annotations[{}]", annotations::SECURITY_GROUPS),
                format!(
                    "security group {} does not exist in {vpc}; accepted values are ids (sg-…) or names of existing groups",
                    quote(w)
                ),
            )
        })?;
        out.push(g.id.clone());
    }
    Ok(out)
}

/// Attaches `sgs` to the existing NLB `lb` when it has other groups. An NLB created
/// without any (before berth managed security groups) cannot take them: AWS refuses, so
/// berth says so in its log and goes on; recreating the Service gives it its groups.
pub async fn attach(elb: &Elb, lb: &CurrentLb, sgs: &Attach) -> Result<(), ProviderError> {
    let want: BTreeSet<String> = sgs.groups.iter().cloned().collect();
    if want == lb.security_groups {
        return Ok(());
    }
    match elb.set_security_groups(&lb.arn, &sgs.groups).await {
        Ok(()) => {
            info!(groups = ?sgs.groups, "Updated the load balancer's security groups");
            Ok(())
        }
        Err(e) if lb.security_groups.is_empty() && !e.transient => {
            warn!(error = %e, "This load balancer was created without security groups and AWS adds none later; recreate the Service to enforce loadBalancerSourceRanges");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Deletes berth's groups in `stale` (no longer attached).
pub async fn delete_stale(ec2: &Ec2, stale: &[String]) -> Result<(), ProviderError> {
    for id in stale {
        delete_group(ec2, id).await?;
    }
    Ok(())
}

/// Deletes berth's frontend groups of the Service `uid` (after its NLB is gone).
pub async fn delete_owned(ec2: &Ec2, cluster: &str, uid: &str) -> Result<(), ProviderError> {
    for g in owned_groups(ec2, cluster, uid).await? {
        delete_group(ec2, &g.id).await?;
    }
    Ok(())
}

/// Deletes one of berth's groups.
pub async fn delete_group(ec2: &Ec2, id: &str) -> Result<(), ProviderError> {
    ec2.delete_security_group(id).await?;
    info!(group = %id, "Deleted security group");
    Ok(())
}

/// Frontend groups of `cluster`, as load balancers to garbage-collect when their Service
/// is gone; and, in the same call, the shared NLBs' groups (see `group_security`).
pub async fn list_owned(
    ec2: &Ec2,
    cluster: &str,
) -> Result<(Vec<OwnedLoadBalancer>, Vec<SecurityGroup>), ProviderError> {
    let found = ec2
        .describe_security_groups(&[
            (&format!("tag:{LABEL_CLUSTER}"), vec![cluster.to_string()]),
            (
                &format!("tag:{TAG_RESOURCE}"),
                vec![
                    RESOURCE_FRONTEND.to_string(),
                    super::group_security::RESOURCE_GROUP_FRONTEND.to_string(),
                ],
            ),
        ])
        .await?;
    let (shared, own): (Vec<_>, Vec<_>) = found.into_iter().partition(|g| {
        g.tags.get(TAG_RESOURCE).map(String::as_str)
            == Some(super::group_security::RESOURCE_GROUP_FRONTEND)
    });
    let owned = own
        .into_iter()
        .filter_map(|g| {
            let id = g.tags.get(TAG_LOAD_BALANCER).cloned()?;
            OwnedLoadBalancer::from_labels(id, g.tags)
        })
        .collect();
    Ok((owned, shared))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::plan;
    use crate::{Protocol, ServiceRef};

    fn lb(ranges: &[&str], ann: &[(&str, &str)]) -> (DesiredLoadBalancer, Plan) {
        let service = ServiceRef {
            namespace: "shop".into(),
            name: "web".into(),
            uid: "u-1".into(),
        };
        let mut b = DesiredLoadBalancer::builder("test", service)
            .listener("http", 80, Protocol::Tcp, Some(30080))
            .listener("dns", 53, Protocol::Udp, Some(30053))
            .listener("dns-tcp", 53, Protocol::Tcp, Some(30053));
        for r in ranges {
            b = b.source_range(r.parse().unwrap());
        }
        for (k, v) in ann {
            b = b.annotation(k, v);
        }
        let lb = b.build();
        let settings = annotations::parse(&lb.annotations, &lb.health_check).unwrap();
        let p = plan::plan(&lb, settings).unwrap();
        (lb, p)
    }

    fn rule(protocol: &str, port: i32, cidr: &str) -> Rule {
        Rule {
            protocol: protocol.into(),
            from: port,
            to: port,
            source: Source::Cidr(cidr.into()),
        }
    }

    #[test]
    fn listener_ports_from_each_range_or_everywhere() {
        let (l, p) = lb(&["10.0.0.0/8", "192.168.1.7/24"], &[]);
        let got = frontend_rules(&l, &p);
        let mut want = BTreeSet::new();
        for cidr in ["10.0.0.0/8", "192.168.1.0/24"] {
            want.insert(rule("tcp", 80, cidr));
            want.insert(rule("tcp", 53, cidr));
            want.insert(rule("udp", 53, cidr));
        }
        assert_eq!(got, want, "host bits are cleared; TCP_UDP opens both");
        let (mut l, p) = lb(&[], &[]);
        let open = frontend_rules(&l, &p);
        assert_eq!(open.len(), 3);
        assert!(
            open.iter()
                .all(|r| r.source == Source::Cidr("0.0.0.0/0".into()))
        );
        l.ip_families = vec![IpFamily::IPv4, IpFamily::IPv6];
        assert_eq!(frontend_rules(&l, &p).len(), 6);
    }

    #[test]
    fn rule_diff_adds_and_removes() {
        let cur: BTreeSet<Rule> =
            [rule("tcp", 80, "10.0.0.0/8"), rule("tcp", 80, "1.0.0.0/8")].into();
        let want: BTreeSet<Rule> = [
            rule("tcp", 80, "10.0.0.0/8"),
            rule("tcp", 443, "10.0.0.0/8"),
        ]
        .into();
        let (add, del) = rule_changes(&cur, &want);
        assert_eq!(add, vec![rule("tcp", 443, "10.0.0.0/8")]);
        assert_eq!(del, vec![rule("tcp", 80, "1.0.0.0/8")]);
        assert_eq!(rule_changes(&want, &want), (vec![], vec![]));
        let b = backend_rules("sg-b");
        assert_eq!(b.len(), 2);
        assert!(
            b.iter()
                .all(|r| r.from == 0 && r.to == 65535 && r.source == Source::Group("sg-b".into()))
        );
    }

    #[test]
    fn annotations_parse_strictly() {
        let (_, p) = lb(&[], &[]);
        assert_eq!(p.settings.security.user_groups, None);
        assert!(p.settings.security.manage_backend_rules);
        let ok = parse(
            &[
                (
                    annotations::SECURITY_GROUPS.to_string(),
                    "sg-1, web".to_string(),
                ),
                (
                    annotations::MANAGE_BACKEND_RULES.to_string(),
                    "False".to_string(),
                ),
            ]
            .into(),
        )
        .unwrap();
        assert_eq!(ok.user_groups, Some(vec!["sg-1".into(), "web".into()]));
        assert!(!ok.manage_backend_rules);
        for (k, v) in [
            (annotations::SECURITY_GROUPS, "sg-1,,sg-2"),
            (annotations::SECURITY_GROUPS, "a,b,c,d,e,f"),
            (annotations::MANAGE_BACKEND_RULES, "yes"),
        ] {
            match parse(&[(k.to_string(), v.to_string())].into()) {
                Err(ProviderError::Invalid { field, message }) => {
                    assert!(field.contains(k), "{field}");
                    assert!(message.contains("accepted values"), "{message}");
                }
                other => panic!("{k}={v}: {other:?}"),
            }
        }
    }

    #[test]
    fn node_group_choice() {
        let g = |id: &str, tagged: bool| SecurityGroup {
            id: id.into(),
            name: id.into(),
            vpc_id: "v".into(),
            ingress: BTreeSet::new(),
            tags: if tagged {
                [(
                    "kubernetes.io/cluster/test".to_string(),
                    "owned".to_string(),
                )]
                .into()
            } else {
                BTreeMap::new()
            },
        };
        let (a, b, c) = (g("sg-a", false), g("sg-b", true), g("sg-c", true));
        assert_eq!(node_group(&[&a], "test").unwrap().id, "sg-a");
        assert_eq!(node_group(&[&a, &b], "test").unwrap().id, "sg-b");
        assert!(node_group(&[&a, &g("sg-d", false)], "test").is_err());
        assert!(node_group(&[&b, &c], "test").is_err());
        assert!(node_group(&[], "test").is_err());
    }
}
