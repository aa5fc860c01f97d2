//! EC2 security groups and instances over the Query API (see `ec2.rs` for the transport):
//! describe, create with tags, authorize and revoke ingress, delete. Answers are parsed
//! with quick-xml into plain types; what berth does not use is skipped.

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

use super::ec2::{Ec2, Ec2Error, Items, TagItem, tags_of};
use super::security_groups::{Rule, Source};
use crate::ProviderError;
use crate::bounds::server_message;

/// Pages read at most by one describe call (1000 groups each): a bound, not a limit hit
/// in practice.
const MAX_PAGES: usize = 50;

/// A security group as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityGroup {
    pub id: String,
    pub name: String,
    pub vpc_id: String,
    pub ingress: BTreeSet<Rule>,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeSecurityGroupsResponse {
    #[serde(default)]
    security_group_info: Items<GroupItem>,
    #[serde(default)]
    next_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupItem {
    #[serde(default)]
    group_id: Option<String>,
    #[serde(default)]
    group_name: String,
    #[serde(default)]
    vpc_id: String,
    #[serde(default)]
    ip_permissions: Items<PermissionItem>,
    #[serde(default)]
    tag_set: Items<TagItem>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PermissionItem {
    #[serde(default)]
    ip_protocol: String,
    #[serde(default)]
    from_port: Option<i32>,
    #[serde(default)]
    to_port: Option<i32>,
    #[serde(default)]
    groups: Items<GroupPairItem>,
    #[serde(default)]
    ip_ranges: Items<RangeItem>,
    #[serde(default)]
    ipv6_ranges: Items<Range6Item>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupPairItem {
    #[serde(default)]
    group_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RangeItem {
    #[serde(default)]
    cidr_ip: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Range6Item {
    #[serde(default)]
    cidr_ipv6: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateSecurityGroupResponse {
    #[serde(default)]
    group_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescribeInstancesResponse {
    #[serde(default)]
    reservation_set: Items<ReservationItem>,
    #[serde(default)]
    next_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReservationItem {
    #[serde(default)]
    instances_set: Items<InstanceItem>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InstanceItem {
    #[serde(default)]
    instance_id: Option<String>,
    #[serde(default)]
    group_set: Items<GroupPairItem>,
    #[serde(default)]
    network_interface_set: Items<InterfaceItem>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InterfaceItem {
    #[serde(default)]
    group_set: Items<GroupPairItem>,
}

fn malformed(action: &str, e: &quick_xml::DeError) -> ProviderError {
    ProviderError::transient(format!(
        "EC2 {action} returned malformed XML: {}",
        server_message(&e.to_string())
    ))
}

/// The rules of one `ipPermissions` item, one per source.
fn rules_of(p: PermissionItem) -> Vec<Rule> {
    let protocol = p.ip_protocol.trim().to_string();
    let (from, to) = (p.from_port.unwrap_or(-1), p.to_port.unwrap_or(-1));
    let rule = |source| Rule {
        protocol: protocol.clone(),
        from,
        to,
        source,
    };
    let mut out = Vec::new();
    out.extend(
        p.ip_ranges
            .items
            .into_iter()
            .filter_map(|r| r.cidr_ip)
            .map(|c| rule(Source::Cidr(c.trim().to_string()))),
    );
    out.extend(
        p.ipv6_ranges
            .items
            .into_iter()
            .filter_map(|r| r.cidr_ipv6)
            .map(|c| rule(Source::Cidr(c.trim().to_string()))),
    );
    out.extend(
        p.groups
            .items
            .into_iter()
            .filter_map(|g| g.group_id)
            .map(|g| rule(Source::Group(g.trim().to_string()))),
    );
    out
}

/// Groups and next token of a DescribeSecurityGroupsResponse.
pub(super) fn parse_groups(
    text: &str,
) -> Result<(Vec<SecurityGroup>, Option<String>), ProviderError> {
    let answer: DescribeSecurityGroupsResponse =
        quick_xml::de::from_str(text).map_err(|e| malformed("DescribeSecurityGroups", &e))?;
    let groups = answer
        .security_group_info
        .items
        .into_iter()
        .filter_map(|g| {
            Some(SecurityGroup {
                id: g.group_id?.trim().to_string(),
                name: g.group_name.trim().to_string(),
                vpc_id: g.vpc_id.trim().to_string(),
                ingress: g
                    .ip_permissions
                    .items
                    .into_iter()
                    .flat_map(rules_of)
                    .collect(),
                tags: tags_of(g.tag_set),
            })
        })
        .collect();
    Ok((groups, next_token(answer.next_token)))
}

fn next_token(t: Option<String>) -> Option<String> {
    t.map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
}

/// The security groups of each instance (those of the instance and of its network
/// interfaces) and the next token of a DescribeInstancesResponse.
#[allow(clippy::type_complexity)]
pub(super) fn parse_instances(
    text: &str,
) -> Result<(BTreeMap<String, Vec<String>>, Option<String>), ProviderError> {
    let answer: DescribeInstancesResponse =
        quick_xml::de::from_str(text).map_err(|e| malformed("DescribeInstances", &e))?;
    let mut out = BTreeMap::new();
    for r in answer.reservation_set.items {
        for i in r.instances_set.items {
            let Some(id) = i.instance_id else { continue };
            let groups: BTreeSet<String> = i
                .group_set
                .items
                .into_iter()
                .chain(
                    i.network_interface_set
                        .items
                        .into_iter()
                        .flat_map(|n| n.group_set.items),
                )
                .filter_map(|g| g.group_id.map(|g| g.trim().to_string()))
                .collect();
            out.insert(id.trim().to_string(), groups.into_iter().collect());
        }
    }
    Ok((out, next_token(answer.next_token)))
}

/// `IpPermissions.N.*` parameters for `rules` (one permission per rule).
pub(super) fn permission_params(rules: &[Rule]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let p = format!("IpPermissions.{}", i + 1);
        out.push((format!("{p}.IpProtocol"), r.protocol.clone()));
        if r.protocol != "-1" {
            out.push((format!("{p}.FromPort"), r.from.to_string()));
            out.push((format!("{p}.ToPort"), r.to.to_string()));
        }
        match &r.source {
            Source::Cidr(c) if c.contains(':') => {
                out.push((format!("{p}.Ipv6Ranges.1.CidrIpv6"), c.clone()));
                out.push((
                    format!("{p}.Ipv6Ranges.1.Description"),
                    super::security_groups::RULE_DESCRIPTION.into(),
                ));
            }
            Source::Cidr(c) => {
                out.push((format!("{p}.IpRanges.1.CidrIp"), c.clone()));
                out.push((
                    format!("{p}.IpRanges.1.Description"),
                    super::security_groups::RULE_DESCRIPTION.into(),
                ));
            }
            Source::Group(g) => {
                out.push((format!("{p}.Groups.1.GroupId"), g.clone()));
                out.push((
                    format!("{p}.Groups.1.Description"),
                    super::security_groups::RULE_DESCRIPTION.into(),
                ));
            }
        }
    }
    out
}

impl Ec2 {
    /// DescribeSecurityGroups with `filters` (name, values), every page.
    pub async fn describe_security_groups(
        &self,
        filters: &[(&str, Vec<String>)],
    ) -> Result<Vec<SecurityGroup>, Ec2Error> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut form: Vec<(String, String)> = Vec::new();
            for (i, (name, values)) in filters.iter().enumerate() {
                form.push((format!("Filter.{}.Name", i + 1), name.to_string()));
                for (j, v) in values.iter().enumerate() {
                    form.push((format!("Filter.{}.Value.{}", i + 1, j + 1), v.clone()));
                }
            }
            if let Some(t) = &token {
                form.push(("NextToken".into(), t.clone()));
            }
            let text = self.query("DescribeSecurityGroups", form).await?;
            let (groups, next) = parse_groups(&text).map_err(plain)?;
            out.extend(groups);
            token = next;
            if token.is_none() {
                break;
            }
        }
        Ok(out)
    }

    /// CreateSecurityGroup in `vpc` with `tags` set atomically; the new group's id.
    pub async fn create_security_group(
        &self,
        name: &str,
        description: &str,
        vpc: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<String, Ec2Error> {
        let mut form: Vec<(String, String)> = vec![
            ("GroupName".into(), name.into()),
            ("GroupDescription".into(), description.into()),
            ("VpcId".into(), vpc.into()),
            (
                "TagSpecification.1.ResourceType".into(),
                "security-group".into(),
            ),
        ];
        for (i, (k, v)) in tags.iter().enumerate() {
            form.push((format!("TagSpecification.1.Tag.{}.Key", i + 1), k.clone()));
            form.push((format!("TagSpecification.1.Tag.{}.Value", i + 1), v.clone()));
        }
        let text = self.query("CreateSecurityGroup", form).await?;
        let answer: CreateSecurityGroupResponse = quick_xml::de::from_str(&text)
            .map_err(|e| plain(malformed("CreateSecurityGroup", &e)))?;
        answer
            .group_id
            .map(|g| g.trim().to_string())
            .filter(|g| !g.is_empty())
            .ok_or_else(|| {
                plain(ProviderError::transient(
                    "EC2 CreateSecurityGroup answered without a group id",
                ))
            })
    }

    /// AuthorizeSecurityGroupIngress (a rule that already exists is success).
    pub async fn authorize_ingress(&self, group: &str, rules: &[Rule]) -> Result<(), Ec2Error> {
        if rules.is_empty() {
            return Ok(());
        }
        self.change_ingress(
            "AuthorizeSecurityGroupIngress",
            "InvalidPermission.Duplicate",
            group,
            rules,
        )
        .await
    }

    /// `action` for `rules` in one call. EC2 refuses the whole call when one rule is
    /// already as wanted (`done`, e.g. added by a concurrent writer): then rule by rule.
    async fn change_ingress(
        &self,
        action: &'static str,
        done: &str,
        group: &str,
        rules: &[Rule],
    ) -> Result<(), Ec2Error> {
        let form = |rules: &[Rule]| {
            let mut form = vec![("GroupId".to_string(), group.to_string())];
            form.extend(permission_params(rules));
            form
        };
        match self.query(action, form(rules)).await {
            Err(e) if e.is(done) && rules.len() > 1 => {
                for r in rules {
                    match self.query(action, form(std::slice::from_ref(r))).await {
                        Err(e) if !e.is(done) => return Err(e),
                        _ => {}
                    }
                }
                Ok(())
            }
            Err(e) if e.is(done) => Ok(()),
            r => r.map(|_| ()),
        }
    }

    /// RevokeSecurityGroupIngress (a rule already gone is success).
    pub async fn revoke_ingress(&self, group: &str, rules: &[Rule]) -> Result<(), Ec2Error> {
        if rules.is_empty() {
            return Ok(());
        }
        self.change_ingress(
            "RevokeSecurityGroupIngress",
            "InvalidPermission.NotFound",
            group,
            rules,
        )
        .await
    }

    /// CreateTags on `resource` (adds or overwrites).
    pub async fn create_tags(
        &self,
        resource: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), Ec2Error> {
        let mut form = vec![("ResourceId.1".to_string(), resource.to_string())];
        for (i, (k, v)) in tags.iter().enumerate() {
            form.push((format!("Tag.{}.Key", i + 1), k.clone()));
            form.push((format!("Tag.{}.Value", i + 1), v.clone()));
        }
        self.query("CreateTags", form).await.map(|_| ())
    }

    /// DeleteTags `keys` of `resource` (whatever their values).
    pub async fn delete_tags(&self, resource: &str, keys: &[String]) -> Result<(), Ec2Error> {
        let mut form = vec![("ResourceId.1".to_string(), resource.to_string())];
        for (i, k) in keys.iter().enumerate() {
            form.push((format!("Tag.{}.Key", i + 1), k.clone()));
        }
        self.query("DeleteTags", form).await.map(|_| ())
    }

    /// DeleteSecurityGroup (absent is success; still in use is transient: an NLB's network
    /// interfaces linger for a while after it is deleted).
    pub async fn delete_security_group(&self, group: &str) -> Result<(), Ec2Error> {
        match self
            .query(
                "DeleteSecurityGroup",
                vec![("GroupId".into(), group.into())],
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is("InvalidGroup.NotFound") => Ok(()),
            Err(e) if e.is("DependencyViolation") => Err(Ec2Error {
                error: ProviderError::transient(format!(
                    "Security group {group} is still in use; deleting it again later"
                )),
                code: e.code,
            }),
            Err(e) => Err(e),
        }
    }

    /// The security groups of each of `instances` (DescribeInstances, every page).
    pub async fn instance_security_groups(
        &self,
        instances: &[String],
    ) -> Result<BTreeMap<String, Vec<String>>, Ec2Error> {
        let mut out = BTreeMap::new();
        for chunk in instances.chunks(200) {
            let mut token: Option<String> = None;
            for _ in 0..MAX_PAGES {
                let mut form: Vec<(String, String)> = chunk
                    .iter()
                    .enumerate()
                    .map(|(i, id)| (format!("InstanceId.{}", i + 1), id.clone()))
                    .collect();
                if let Some(t) = &token {
                    form.push(("NextToken".into(), t.clone()));
                }
                let text = match self.query("DescribeInstances", form).await {
                    Ok(t) => t,
                    // An instance that is gone has no groups to speak of.
                    Err(e) if e.is("InvalidInstanceID.NotFound") => break,
                    Err(e) => return Err(e),
                };
                let (groups, next) = parse_instances(&text).map_err(plain)?;
                out.extend(groups);
                token = next;
                if token.is_none() {
                    break;
                }
            }
        }
        Ok(out)
    }
}

fn plain(error: ProviderError) -> Ec2Error {
    Ec2Error { code: None, error }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUPS: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeSecurityGroupsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>r</requestId>
  <securityGroupInfo>
    <item>
      <ownerId>123</ownerId>
      <groupId>sg-1</groupId>
      <groupName>b-web-1</groupName>
      <groupDescription>d</groupDescription>
      <vpcId>vpc-1</vpcId>
      <ipPermissions>
        <item>
          <ipProtocol>tcp</ipProtocol><fromPort>80</fromPort><toPort>80</toPort>
          <groups/>
          <ipRanges><item><cidrIp>10.0.0.0/8</cidrIp></item><item><cidrIp>192.168.0.0/16</cidrIp><description>x</description></item></ipRanges>
          <ipv6Ranges><item><cidrIpv6>::/0</cidrIpv6></item></ipv6Ranges>
          <prefixListIds/>
        </item>
        <item>
          <ipProtocol>udp</ipProtocol><fromPort>0</fromPort><toPort>65535</toPort>
          <groups><item><userId>1</userId><groupId>sg-back</groupId></item></groups>
        </item>
      </ipPermissions>
      <ipPermissionsEgress><item><ipProtocol>-1</ipProtocol><ipRanges><item><cidrIp>0.0.0.0/0</cidrIp></item></ipRanges></item></ipPermissionsEgress>
      <tagSet><item><key>berth.io/cluster</key><value>test</value></item></tagSet>
    </item>
    <item><groupName>no id</groupName></item>
  </securityGroupInfo>
  <nextToken>t2</nextToken>
</DescribeSecurityGroupsResponse>"#;

    fn rule(protocol: &str, from: i32, to: i32, source: Source) -> Rule {
        Rule {
            protocol: protocol.into(),
            from,
            to,
            source,
        }
    }

    #[test]
    fn parses_groups_with_their_ingress_rules() {
        let (groups, next) = parse_groups(GROUPS).unwrap();
        assert_eq!(next.as_deref(), Some("t2"));
        assert_eq!(groups.len(), 1, "an item without an id is skipped");
        let g = &groups[0];
        assert_eq!((g.id.as_str(), g.vpc_id.as_str()), ("sg-1", "vpc-1"));
        assert_eq!(g.tags["berth.io/cluster"], "test");
        let want: BTreeSet<Rule> = [
            rule("tcp", 80, 80, Source::Cidr("10.0.0.0/8".into())),
            rule("tcp", 80, 80, Source::Cidr("192.168.0.0/16".into())),
            rule("tcp", 80, 80, Source::Cidr("::/0".into())),
            rule("udp", 0, 65535, Source::Group("sg-back".into())),
        ]
        .into();
        assert_eq!(g.ingress, want, "egress rules are not ingress");
        for bad in ["<a", &GROUPS[..GROUPS.len() / 2]] {
            let e = parse_groups(bad).unwrap_err().to_string();
            assert!(
                e.contains("DescribeSecurityGroups returned malformed XML"),
                "{e}"
            );
        }
    }

    #[test]
    fn instance_groups_include_their_interfaces_groups() {
        let text = r#"<DescribeInstancesResponse><reservationSet><item><groupSet/><instancesSet>
          <item><instanceId>i-1</instanceId><groupSet/>
            <networkInterfaceSet><item><groupSet><item><groupId>sg-eni</groupId><groupName>default</groupName></item></groupSet></item></networkInterfaceSet>
          </item>
          <item><instanceId>i-2</instanceId><groupSet><item><groupId>sg-a</groupId></item></groupSet>
            <networkInterfaceSet><item><groupSet><item><groupId>sg-a</groupId></item><item><groupId>sg-b</groupId></item></groupSet></item></networkInterfaceSet>
          </item>
          <item><groupSet/></item>
        </instancesSet></item></reservationSet><nextToken>n</nextToken></DescribeInstancesResponse>"#;
        let (groups, next) = parse_instances(text).unwrap();
        assert_eq!(next.as_deref(), Some("n"));
        assert_eq!(groups.len(), 2, "an item without an id is skipped");
        assert_eq!(groups["i-1"], vec!["sg-eni".to_string()]);
        assert_eq!(groups["i-2"], vec!["sg-a".to_string(), "sg-b".to_string()]);
        assert!(parse_instances("<x").is_err());
    }

    #[test]
    fn permission_parameters_name_each_source_kind() {
        let p = permission_params(&[
            rule("tcp", 443, 443, Source::Cidr("10.0.0.0/8".into())),
            rule("udp", 53, 53, Source::Cidr("2001:db8::/32".into())),
            rule("tcp", 0, 65535, Source::Group("sg-9".into())),
        ]);
        let get = |k: &str| {
            p.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("{k} missing in {p:?}"))
        };
        assert_eq!(get("IpPermissions.1.IpProtocol"), "tcp");
        assert_eq!(get("IpPermissions.1.FromPort"), "443");
        assert_eq!(get("IpPermissions.1.IpRanges.1.CidrIp"), "10.0.0.0/8");
        assert_eq!(
            get("IpPermissions.2.Ipv6Ranges.1.CidrIpv6"),
            "2001:db8::/32"
        );
        assert_eq!(get("IpPermissions.3.Groups.1.GroupId"), "sg-9");
        assert_eq!(get("IpPermissions.3.ToPort"), "65535");
    }
}
