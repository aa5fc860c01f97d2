//! Target groups and their targets.

use aws_sdk_elasticloadbalancingv2 as elb;
use elb::types::{ProtocolEnum, TargetDescription, TargetGroupAttribute, TargetTypeEnum};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::{ApiError, CurrentTg, Elb, TARGET_CHUNK, sdk_tags};
use crate::aws::annotations::{TargetType, TgHealth};
use crate::aws::plan::{PlannedGroup, Target};

impl Elb {
    /// Target groups attached to load balancer `lb_arn`, with tags.
    pub async fn target_groups_of(&self, lb_arn: &str) -> Result<Vec<CurrentTg>, ApiError> {
        let out = match self
            .call("DescribeTargetGroups", |c| {
                c.describe_target_groups().load_balancer_arn(lb_arn).send()
            })
            .await
        {
            Ok(o) => o,
            Err(e) if e.not_found() => return Ok(vec![]),
            Err(e) => return Err(e),
        };
        let mut tgs: Vec<CurrentTg> = out.target_groups().iter().filter_map(tg_of).collect();
        self.fill_tg_tags(&mut tgs).await?;
        Ok(tgs)
    }

    /// The target groups with these ARNs that still exist, with tags.
    pub async fn target_groups_by_arn(&self, arns: &[String]) -> Result<Vec<CurrentTg>, ApiError> {
        let mut tgs = Vec::new();
        for chunk in arns.chunks(20) {
            let out = match self
                .call("DescribeTargetGroups", |c| {
                    c.describe_target_groups()
                        .set_target_group_arns(Some(chunk.to_vec()))
                        .send()
                })
                .await
            {
                Ok(o) => o,
                Err(e) if e.not_found() => continue,
                Err(e) => return Err(e),
            };
            tgs.extend(out.target_groups().iter().filter_map(tg_of));
        }
        self.fill_tg_tags(&mut tgs).await?;
        Ok(tgs)
    }

    /// The target group named `name`, if any, with tags.
    pub async fn target_groups_named(&self, name: &str) -> Result<Vec<CurrentTg>, ApiError> {
        let out = match self
            .call("DescribeTargetGroups", |c| {
                c.describe_target_groups().names(name).send()
            })
            .await
        {
            Ok(o) => o,
            Err(e) if e.not_found() => return Ok(vec![]),
            Err(e) => return Err(e),
        };
        let mut tgs: Vec<CurrentTg> = out
            .target_groups()
            .iter()
            .filter(|t| t.target_group_name() == Some(name))
            .filter_map(tg_of)
            .collect();
        self.fill_tg_tags(&mut tgs).await?;
        Ok(tgs)
    }

    /// Every target group in the region, with tags.
    pub async fn all_target_groups(&self) -> Result<Vec<CurrentTg>, ApiError> {
        let mut tgs = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let m = marker.clone();
            let out = self
                .call("DescribeTargetGroups", |c| {
                    c.describe_target_groups()
                        .set_marker(m.clone())
                        .page_size(400)
                        .send()
                })
                .await?;
            tgs.extend(out.target_groups().iter().filter_map(tg_of));
            marker = out
                .next_marker()
                .filter(|m| !m.is_empty())
                .map(str::to_string);
            if marker.is_none() {
                break;
            }
        }
        self.fill_tg_tags(&mut tgs).await?;
        Ok(tgs)
    }

    async fn fill_tg_tags(&self, tgs: &mut [CurrentTg]) -> Result<(), ApiError> {
        let arns: Vec<String> = tgs.iter().map(|t| t.arn.clone()).collect();
        let tags = self.tags(&arns).await?;
        for tg in tgs {
            tg.tags = tags.get(&tg.arn).cloned().unwrap_or_default();
        }
        Ok(())
    }

    pub async fn create_target_group(
        &self,
        g: &PlannedGroup,
        vpc_id: &str,
    ) -> Result<CurrentTg, ApiError> {
        let h = &g.health;
        let out = self
            .call("CreateTargetGroup", |c| {
                c.create_target_group()
                    .name(&g.name)
                    .protocol(ProtocolEnum::from(g.protocol.as_str()))
                    .port(i32::from(g.tg_port))
                    .vpc_id(vpc_id)
                    .target_type(match g.target_type {
                        TargetType::Instance => TargetTypeEnum::Instance,
                        TargetType::Ip => TargetTypeEnum::Ip,
                    })
                    .health_check_enabled(true)
                    .health_check_protocol(ProtocolEnum::from(h.protocol))
                    .health_check_port(h.port_str())
                    .set_health_check_path(h.path.clone())
                    .health_check_interval_seconds(h.interval as i32)
                    .health_check_timeout_seconds(h.timeout as i32)
                    .healthy_threshold_count(h.healthy as i32)
                    .unhealthy_threshold_count(h.unhealthy as i32)
                    .set_tags(Some(sdk_tags(&g.tags)))
                    .send()
            })
            .await?;
        let mut tg = out
            .target_groups()
            .first()
            .and_then(tg_of)
            .ok_or_else(|| ApiError {
                op: "CreateTargetGroup",
                code: None,
                message: "the answer names no target group".into(),
                throttled: false,
                transient: true,
            })?;
        tg.tags = g.tags.clone();
        Ok(tg)
    }

    pub async fn modify_health_check(&self, arn: &str, h: &TgHealth) -> Result<(), ApiError> {
        self.call("ModifyTargetGroup", |c| {
            c.modify_target_group()
                .target_group_arn(arn)
                .health_check_enabled(true)
                .health_check_protocol(ProtocolEnum::from(h.protocol))
                .health_check_port(h.port_str())
                .set_health_check_path(h.path.clone())
                .health_check_interval_seconds(h.interval as i32)
                .health_check_timeout_seconds(h.timeout as i32)
                .healthy_threshold_count(h.healthy as i32)
                .unhealthy_threshold_count(h.unhealthy as i32)
                .send()
        })
        .await
        .map(|_| ())
    }

    pub async fn target_group_attributes(
        &self,
        arn: &str,
    ) -> Result<BTreeMap<String, String>, ApiError> {
        let out = self
            .call("DescribeTargetGroupAttributes", |c| {
                c.describe_target_group_attributes()
                    .target_group_arn(arn)
                    .send()
            })
            .await?;
        Ok(out
            .attributes()
            .iter()
            .filter_map(|a| Some((a.key()?.to_string(), a.value().unwrap_or("").to_string())))
            .collect())
    }

    pub async fn modify_target_group_attributes(
        &self,
        arn: &str,
        attrs: &BTreeMap<String, String>,
    ) -> Result<(), ApiError> {
        let attrs: Vec<_> = attrs
            .iter()
            .map(|(k, v)| TargetGroupAttribute::builder().key(k).value(v).build())
            .collect();
        self.call("ModifyTargetGroupAttributes", |c| {
            c.modify_target_group_attributes()
                .target_group_arn(arn)
                .set_attributes(Some(attrs.clone()))
                .send()
        })
        .await
        .map(|_| ())
    }

    /// Deletes a target group; absent is success; retried briefly while still in use (a
    /// just-deleted listener or load balancer lets go of it asynchronously).
    pub async fn delete_target_group(&self, arn: &str) -> Result<(), ApiError> {
        let mut attempt = 0u32;
        loop {
            match self
                .call("DeleteTargetGroup", |c| {
                    c.delete_target_group().target_group_arn(arn).send()
                })
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if e.not_found() => return Ok(()),
                Err(e) if e.is("ResourceInUse") && attempt < 5 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub async fn targets(&self, tg_arn: &str) -> Result<BTreeSet<Target>, ApiError> {
        let out = self
            .call("DescribeTargetHealth", |c| {
                c.describe_target_health().target_group_arn(tg_arn).send()
            })
            .await?;
        Ok(out
            .target_health_descriptions()
            .iter()
            .filter_map(|d| {
                let t = d.target()?;
                Some((t.id()?.to_string(), u16::try_from(t.port()?).ok()?))
            })
            .collect())
    }

    /// Registered targets and their health state (`healthy`, `initial`, `unused`, ...).
    pub async fn target_states(&self, tg_arn: &str) -> Result<Vec<(Target, String)>, ApiError> {
        let out = self
            .call("DescribeTargetHealth", |c| {
                c.describe_target_health().target_group_arn(tg_arn).send()
            })
            .await?;
        Ok(out
            .target_health_descriptions()
            .iter()
            .filter_map(|d| {
                let t = d.target()?;
                let state = d
                    .target_health()
                    .and_then(|h| h.state())
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default();
                Some(((t.id()?.to_string(), u16::try_from(t.port()?).ok()?), state))
            })
            .collect())
    }

    /// Registers (or deregisters) `targets` in chunks.
    pub async fn change_targets(
        &self,
        tg_arn: &str,
        targets: &[Target],
        register: bool,
    ) -> Result<(), ApiError> {
        for chunk in targets.chunks(TARGET_CHUNK) {
            let descs: Vec<TargetDescription> = chunk
                .iter()
                .map(|(id, port)| {
                    TargetDescription::builder()
                        .id(id)
                        .port(i32::from(*port))
                        .build()
                })
                .collect();
            if register {
                self.call("RegisterTargets", |c| {
                    c.register_targets()
                        .target_group_arn(tg_arn)
                        .set_targets(Some(descs.clone()))
                        .send()
                })
                .await?;
            } else {
                self.call("DeregisterTargets", |c| {
                    c.deregister_targets()
                        .target_group_arn(tg_arn)
                        .set_targets(Some(descs.clone()))
                        .send()
                })
                .await?;
            }
        }
        Ok(())
    }
}

fn tg_of(t: &elb::types::TargetGroup) -> Option<CurrentTg> {
    let port = match t.health_check_port() {
        None | Some("traffic-port") => None,
        Some(p) => p.parse().ok(),
    };
    Some(CurrentTg {
        arn: t.target_group_arn()?.to_string(),
        name: t.target_group_name().unwrap_or_default().to_string(),
        health: TgHealth {
            protocol: match t.health_check_protocol().map(|p| p.as_str()) {
                Some("HTTP") => "HTTP",
                Some("HTTPS") => "HTTPS",
                _ => "TCP",
            },
            port,
            path: t.health_check_path().map(str::to_string),
            interval: t.health_check_interval_seconds().unwrap_or(0) as u32,
            timeout: t.health_check_timeout_seconds().unwrap_or(0) as u32,
            healthy: t.healthy_threshold_count().unwrap_or(0) as u32,
            unhealthy: t.unhealthy_threshold_count().unwrap_or(0) as u32,
        },
        tags: BTreeMap::new(),
    })
}

/// Whether the health check as read differs from the desired one (a TCP check's path is
/// whatever ELBv2 reports and does not count).
pub fn health_differs(current: &TgHealth, desired: &TgHealth) -> bool {
    let path_matters = desired.protocol != "TCP";
    current.protocol != desired.protocol
        || current.port != desired.port
        || (path_matters && current.path != desired.path)
        || current.interval != desired.interval
        || current.timeout != desired.timeout
        || current.healthy != desired.healthy
        || current.unhealthy != desired.unhealthy
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hc(protocol: &'static str, path: Option<&str>) -> TgHealth {
        TgHealth {
            protocol,
            port: None,
            path: path.map(str::to_string),
            interval: 10,
            timeout: 5,
            healthy: 3,
            unhealthy: 3,
        }
    }

    #[test]
    fn health_diff_ignores_tcp_paths() {
        assert!(!health_differs(&hc("TCP", Some("/")), &hc("TCP", None)));
        assert!(health_differs(
            &hc("HTTP", Some("/")),
            &hc("HTTP", Some("/healthz"))
        ));
        assert!(health_differs(&hc("TCP", None), &hc("HTTP", Some("/"))));
        let mut other = hc("TCP", None);
        other.port = Some(32000);
        assert!(health_differs(&hc("TCP", None), &other));
        other = hc("TCP", None);
        other.interval = 30;
        assert!(health_differs(&hc("TCP", None), &other));
    }
}
