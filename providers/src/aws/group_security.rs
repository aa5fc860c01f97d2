//! The security group of a shared NLB (see `group.rs`): one per group, owned by the group
//! (never by a Service), created before the NLB and attached at its creation (AWS accepts
//! security groups on an NLB only if it was created with at least one), beside the
//! cluster's backend group.
//!
//! Each listener port belongs to exactly one member, so each port's rules do too: a member's
//! ensure makes the rules of its own ports exactly what its `loadBalancerSourceRanges` say
//! (everywhere when none) and revokes the rules of ports no listener holds any more (a member
//! that left, or crashed while leaving); other members' ports are left alone. The group goes
//! right after the NLB, and garbage collection deletes one whose NLB is gone.

use std::collections::{BTreeMap, BTreeSet};
use tracing::info;

use super::ec2::Ec2;
use super::ec2_security_groups::SecurityGroup;
use super::plan::{TAG_GROUP, TAG_RESOURCE};
use super::security_groups::{Rule, Source};
use crate::{LABEL_CLUSTER, ProviderError};

/// [`TAG_RESOURCE`] of a shared NLB's security group.
pub const RESOURCE_GROUP_FRONTEND: &str = "group-security-group";

/// The tags of the security group of the shared NLB with `nlb_tags`.
pub fn tags(nlb_tags: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut tags: BTreeMap<String, String> = nlb_tags
        .iter()
        .filter(|(k, _)| {
            [
                TAG_GROUP,
                LABEL_CLUSTER,
                crate::LABEL_CLASS,
                crate::LABEL_VERSION,
            ]
            .contains(&k.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    tags.insert(TAG_RESOURCE.into(), RESOURCE_GROUP_FRONTEND.into());
    tags
}

/// `(authorize, revoke)` on a shared NLB's group holding `current`: the member's own ports
/// `mine` get exactly the rules `want`; rules of ports no listener holds (`held`, after the
/// member's changes) go; other rules stay.
pub fn changes(
    current: &BTreeSet<Rule>,
    want: &BTreeSet<Rule>,
    mine: &BTreeSet<u16>,
    held: &BTreeSet<u16>,
) -> (Vec<Rule>, Vec<Rule>) {
    let port = |r: &Rule| {
        (r.from == r.to)
            .then(|| u16::try_from(r.from).ok())
            .flatten()
    };
    let authorize = want.difference(current).cloned().collect();
    let revoke = current
        .iter()
        .filter(|r| !want.contains(r))
        .filter(|r| match port(r) {
            Some(p) => mine.contains(&p) || !held.contains(&p),
            // Not a rule berth writes on this group.
            None => matches!(r.source, Source::Cidr(_)),
        })
        .cloned()
        .collect();
    (authorize, revoke)
}

/// The security groups of `cluster`'s shared NLB of `group` (normally one).
pub async fn find(
    ec2: &Ec2,
    cluster: &str,
    group: &str,
) -> Result<Vec<SecurityGroup>, ProviderError> {
    super::security_groups::tagged_groups(ec2, cluster, (TAG_GROUP, group), RESOURCE_GROUP_FRONTEND)
        .await
}

/// The group's security group in `vpc`, created (with no rules yet) when missing.
pub async fn ensure(
    ec2: &Ec2,
    cluster: &str,
    group: &str,
    name: &str,
    vpc: &str,
    nlb_tags: &BTreeMap<String, String>,
) -> Result<SecurityGroup, ProviderError> {
    if let Some(g) = find(ec2, cluster, group)
        .await?
        .into_iter()
        .find(|g| g.vpc_id == vpc)
    {
        return Ok(g);
    }
    let tags = tags(nlb_tags);
    let id = ec2
        .create_security_group(
            name,
            &format!("berth: clients of the load balancer group {group}"),
            vpc,
            &tags,
        )
        .await?;
    info!(%group, security_group = %id, "Created the shared load balancer's security group");
    Ok(SecurityGroup {
        id,
        name: name.into(),
        vpc_id: vpc.into(),
        ingress: BTreeSet::new(),
        tags,
    })
}

/// Applies [`changes`] to `g`.
pub async fn sync_rules(
    ec2: &Ec2,
    g: &SecurityGroup,
    want: &BTreeSet<Rule>,
    mine: &BTreeSet<u16>,
    held: &BTreeSet<u16>,
) -> Result<(), ProviderError> {
    let (authorize, revoke) = changes(&g.ingress, want, mine, held);
    ec2.revoke_ingress(&g.id, &revoke).await?;
    ec2.authorize_ingress(&g.id, &authorize).await?;
    if !authorize.is_empty() || !revoke.is_empty() {
        info!(security_group = %g.id, added = authorize.len(), removed = revoke.len(), "Updated the shared load balancer's security group rules");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(port: i32, cidr: &str) -> Rule {
        Rule {
            protocol: "tcp".into(),
            from: port,
            to: port,
            source: Source::Cidr(cidr.into()),
        }
    }

    #[test]
    fn a_member_sets_its_ports_and_clears_unheld_ones_only() {
        let current: BTreeSet<Rule> = [
            rule(80, "0.0.0.0/0"),
            rule(81, "10.0.0.0/8"),
            rule(82, "0.0.0.0/0"),
            rule(83, "0.0.0.0/0"),
        ]
        .into();
        // The member of 81 narrows its range; 83's member left; 80 and 82 are others'.
        let want: BTreeSet<Rule> = [rule(81, "10.1.0.0/16")].into();
        let (add, remove) = changes(&current, &want, &[81].into(), &[80, 81, 82].into());
        assert_eq!(add, vec![rule(81, "10.1.0.0/16")]);
        assert_eq!(remove, vec![rule(81, "10.0.0.0/8"), rule(83, "0.0.0.0/0")]);
        // Nothing to do when all is as wanted.
        let now: BTreeSet<Rule> = [rule(80, "0.0.0.0/0"), rule(81, "10.1.0.0/16")].into();
        assert_eq!(
            changes(&now, &want, &[81].into(), &[80, 81].into()),
            (vec![], vec![])
        );
    }

    #[test]
    fn tags_name_the_group_not_a_service() {
        let nlb: BTreeMap<String, String> = [
            (LABEL_CLUSTER.to_string(), "test".to_string()),
            (crate::LABEL_CLASS.to_string(), "berth.io/aws".to_string()),
            (TAG_GROUP.to_string(), "edge".to_string()),
            (TAG_RESOURCE.to_string(), "load-balancer".to_string()),
            (
                "berth.io/group-subnets".to_string(),
                "discovered".to_string(),
            ),
        ]
        .into();
        let t = tags(&nlb);
        assert_eq!(t[TAG_RESOURCE], RESOURCE_GROUP_FRONTEND);
        assert_eq!(t[TAG_GROUP], "edge");
        assert_eq!(t[LABEL_CLUSTER], "test");
        assert_eq!(t[crate::LABEL_CLASS], "berth.io/aws");
        assert!(!t.contains_key("berth.io/group-subnets"));
    }
}
