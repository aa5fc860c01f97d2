//! A thin shell over the ELBv2 client: bounded concurrency, retries of throttling, call
//! counting, error classification and conversion of SDK types into plain ones.

use aws_sdk_elasticloadbalancingv2 as elb;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use elb::error::{ProvideErrorMetadata, SdkError};
use elb::types::{
    Action, ActionTypeEnum, LoadBalancerAttribute, LoadBalancerSchemeEnum, LoadBalancerTypeEnum,
    ProtocolEnum, Tag, TargetDescription, TargetGroupAttribute, TargetTypeEnum,
};
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Semaphore;
use tracing::debug;

use super::annotations::{TargetType, TgHealth};
use super::plan::{CurrentListener, ElbProtocol, PlannedGroup, Target};
use crate::ProviderError;

/// DescribeTags takes at most 20 ARNs.
const TAG_CHUNK: usize = 20;
/// Register/DeregisterTargets chunk size.
pub const TARGET_CHUNK: usize = 100;
/// Attempts of one call while ELBv2 throttles (on top of the SDK's own retries).
const THROTTLE_ATTEMPTS: u32 = 4;

/// A failed ELBv2 call, classified.
#[derive(Debug, Clone, thiserror::Error)]
#[error("ELBv2 {op} failed: {message}")]
pub struct ApiError {
    pub op: &'static str,
    pub code: Option<String>,
    pub message: String,
    pub throttled: bool,
    pub transient: bool,
}

impl ApiError {
    pub fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    pub fn not_found(&self) -> bool {
        matches!(
            self.code.as_deref(),
            Some(
                "LoadBalancerNotFound"
                    | "TargetGroupNotFound"
                    | "ListenerNotFound"
                    | "TargetGroupNotFoundException"
                    | "LoadBalancerNotFoundException"
            )
        )
    }
}

impl From<ApiError> for ProviderError {
    fn from(e: ApiError) -> Self {
        if e.throttled {
            ProviderError::Transient {
                message: e.to_string(),
                retry_after: Some(Duration::from_secs(2)),
            }
        } else if e.transient || e.is("ResourceInUse") {
            ProviderError::transient(e.to_string())
        } else {
            ProviderError::Permanent(e.to_string())
        }
    }
}

fn classify<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    op: &'static str,
    err: SdkError<E, HttpResponse>,
) -> ApiError {
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().map(str::to_string);
    let throttled = matches!(
        code.as_deref(),
        Some(
            "Throttling"
                | "ThrottlingException"
                | "RequestLimitExceeded"
                | "TooManyRequestsException"
        )
    ) || status == Some(429);
    let transient = throttled
        || status.is_some_and(|s| s >= 500)
        || matches!(
            err,
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_)
        );
    let message = match (&code, err.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.clone(),
        _ => {
            let mut m = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(s) = source {
                m.push_str(": ");
                m.push_str(&s.to_string());
                source = s.source();
            }
            m
        }
    };
    ApiError {
        op,
        code,
        message,
        throttled,
        transient,
    }
}

/// A load balancer as read.
#[derive(Debug, Clone)]
pub struct CurrentLb {
    pub arn: String,
    pub dns_name: String,
    pub scheme: String,
    pub vpc_id: String,
    pub subnets: BTreeSet<String>,
    pub created: Option<i64>,
    pub tags: BTreeMap<String, String>,
}

/// A target group as read.
#[derive(Debug, Clone)]
pub struct CurrentTg {
    pub arn: String,
    pub name: String,
    pub health: TgHealth,
    pub tags: BTreeMap<String, String>,
}

/// The ELBv2 client with berth's policies.
pub struct Elb {
    client: elb::Client,
    limit: Semaphore,
    calls: Mutex<BTreeMap<&'static str, u64>>,
}

impl Elb {
    pub fn new(client: elb::Client, concurrency: usize) -> Self {
        Self {
            client,
            limit: Semaphore::new(concurrency.max(1)),
            calls: Mutex::new(BTreeMap::new()),
        }
    }

    /// Calls made so far, by operation.
    pub fn calls(&self) -> BTreeMap<&'static str, u64> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// One call: waits for a slot, counts it, retries while throttled.
    async fn call<T, E, Fut>(
        &self,
        op: &'static str,
        f: impl Fn(&elb::Client) -> Fut,
    ) -> Result<T, ApiError>
    where
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let mut attempt = 0;
        loop {
            let result = {
                let _permit = self.limit.acquire().await.expect("never closed");
                if let Ok(mut c) = self.calls.lock() {
                    *c.entry(op).or_default() += 1;
                }
                f(&self.client).await
            };
            match result {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let e = classify(op, e);
                    attempt += 1;
                    if !e.throttled || attempt >= THROTTLE_ATTEMPTS {
                        return Err(e);
                    }
                    let ceiling = 400u64 << attempt;
                    let wait = rand::rng().random_range(ceiling / 2..=ceiling);
                    debug!(op, wait_ms = wait, "ELBv2 throttled; backing off");
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                }
            }
        }
    }

    // --- load balancers ----------------------------------------------------------------

    /// Load balancers named `name` (moto allows several), with their tags.
    pub async fn load_balancers_named(&self, name: &str) -> Result<Vec<CurrentLb>, ApiError> {
        let out = match self
            .call("DescribeLoadBalancers", |c| {
                c.describe_load_balancers().names(name).send()
            })
            .await
        {
            Ok(out) => out,
            Err(e) if e.not_found() => return Ok(vec![]),
            Err(e) => return Err(e),
        };
        let mut lbs: Vec<CurrentLb> = out
            .load_balancers()
            .iter()
            .filter(|l| l.load_balancer_name() == Some(name))
            .filter_map(lb_of)
            .collect();
        self.fill_lb_tags(&mut lbs).await?;
        Ok(lbs)
    }

    /// Every load balancer in the region, with tags.
    pub async fn all_load_balancers(&self) -> Result<Vec<CurrentLb>, ApiError> {
        let mut lbs = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let m = marker.clone();
            let out = self
                .call("DescribeLoadBalancers", |c| {
                    c.describe_load_balancers()
                        .set_marker(m.clone())
                        .page_size(400)
                        .send()
                })
                .await?;
            lbs.extend(out.load_balancers().iter().filter_map(lb_of));
            marker = out
                .next_marker()
                .filter(|m| !m.is_empty())
                .map(str::to_string);
            if marker.is_none() {
                break;
            }
        }
        self.fill_lb_tags(&mut lbs).await?;
        Ok(lbs)
    }

    async fn fill_lb_tags(&self, lbs: &mut [CurrentLb]) -> Result<(), ApiError> {
        let arns: Vec<String> = lbs.iter().map(|l| l.arn.clone()).collect();
        let tags = self.tags(&arns).await?;
        for lb in lbs {
            lb.tags = tags.get(&lb.arn).cloned().unwrap_or_default();
        }
        Ok(())
    }

    /// Tags of `arns`, 20 at a time.
    pub async fn tags(
        &self,
        arns: &[String],
    ) -> Result<BTreeMap<String, BTreeMap<String, String>>, ApiError> {
        let mut out = BTreeMap::new();
        for chunk in arns.chunks(TAG_CHUNK) {
            let resp = match self
                .call("DescribeTags", |c| {
                    c.describe_tags()
                        .set_resource_arns(Some(chunk.to_vec()))
                        .send()
                })
                .await
            {
                Ok(r) => r,
                // One of them vanished meanwhile: it has no tags to speak of.
                Err(e) if e.not_found() => continue,
                Err(e) => return Err(e),
            };
            for d in resp.tag_descriptions() {
                let Some(arn) = d.resource_arn() else {
                    continue;
                };
                let tags = d
                    .tags()
                    .iter()
                    .filter_map(|t| {
                        Some((t.key()?.to_string(), t.value().unwrap_or("").to_string()))
                    })
                    .collect();
                out.insert(arn.to_string(), tags);
            }
        }
        Ok(out)
    }

    pub async fn create_load_balancer(
        &self,
        name: &str,
        scheme: &str,
        subnets: &[String],
        tags: &BTreeMap<String, String>,
    ) -> Result<CurrentLb, ApiError> {
        let out = self
            .call("CreateLoadBalancer", |c| {
                c.create_load_balancer()
                    .name(name)
                    .r#type(LoadBalancerTypeEnum::Network)
                    .scheme(LoadBalancerSchemeEnum::from(scheme))
                    .set_subnets(Some(subnets.to_vec()))
                    .set_tags(Some(sdk_tags(tags)))
                    .send()
            })
            .await?;
        let mut lb = out
            .load_balancers()
            .first()
            .and_then(lb_of)
            .ok_or_else(|| ApiError {
                op: "CreateLoadBalancer",
                code: None,
                message: "the answer names no load balancer".into(),
                throttled: false,
                transient: true,
            })?;
        lb.tags = tags.clone();
        Ok(lb)
    }

    pub async fn delete_load_balancer(&self, arn: &str) -> Result<(), ApiError> {
        match self
            .call("DeleteLoadBalancer", |c| {
                c.delete_load_balancer().load_balancer_arn(arn).send()
            })
            .await
        {
            Err(e) if !e.not_found() => Err(e),
            _ => Ok(()),
        }
    }

    pub async fn set_subnets(&self, arn: &str, subnets: &[String]) -> Result<(), ApiError> {
        self.call("SetSubnets", |c| {
            c.set_subnets()
                .load_balancer_arn(arn)
                .set_subnets(Some(subnets.to_vec()))
                .send()
        })
        .await
        .map(|_| ())
    }

    pub async fn add_tags(
        &self,
        arn: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), ApiError> {
        self.call("AddTags", |c| {
            c.add_tags()
                .resource_arns(arn)
                .set_tags(Some(sdk_tags(tags)))
                .send()
        })
        .await
        .map(|_| ())
    }

    pub async fn load_balancer_attributes(
        &self,
        arn: &str,
    ) -> Result<BTreeMap<String, String>, ApiError> {
        let out = self
            .call("DescribeLoadBalancerAttributes", |c| {
                c.describe_load_balancer_attributes()
                    .load_balancer_arn(arn)
                    .send()
            })
            .await?;
        Ok(out
            .attributes()
            .iter()
            .filter_map(|a| Some((a.key()?.to_string(), a.value().unwrap_or("").to_string())))
            .collect())
    }

    pub async fn modify_load_balancer_attributes(
        &self,
        arn: &str,
        attrs: &BTreeMap<String, String>,
    ) -> Result<(), ApiError> {
        let attrs: Vec<_> = attrs
            .iter()
            .map(|(k, v)| LoadBalancerAttribute::builder().key(k).value(v).build())
            .collect();
        self.call("ModifyLoadBalancerAttributes", |c| {
            c.modify_load_balancer_attributes()
                .load_balancer_arn(arn)
                .set_attributes(Some(attrs.clone()))
                .send()
        })
        .await
        .map(|_| ())
    }

    // --- target groups -----------------------------------------------------------------

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
                    .port(i32::from(g.node_port))
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

    // --- listeners ---------------------------------------------------------------------

    pub async fn listeners(&self, lb_arn: &str) -> Result<Vec<CurrentListener>, ApiError> {
        let out = self
            .call("DescribeListeners", |c| {
                c.describe_listeners().load_balancer_arn(lb_arn).send()
            })
            .await?;
        Ok(out
            .listeners()
            .iter()
            .filter_map(|l| {
                let forwards: Vec<&str> = l
                    .default_actions()
                    .iter()
                    .filter_map(|a| a.target_group_arn())
                    .collect();
                Some(CurrentListener {
                    arn: l.listener_arn()?.to_string(),
                    port: u16::try_from(l.port()?).ok()?,
                    protocol: l
                        .protocol()
                        .map(|p| p.as_str().to_string())
                        .unwrap_or_default(),
                    target_group: (forwards.len() == 1).then(|| forwards[0].to_string()),
                })
            })
            .collect())
    }

    pub async fn create_listener(
        &self,
        lb_arn: &str,
        port: u16,
        protocol: ElbProtocol,
        tg_arn: &str,
    ) -> Result<(), ApiError> {
        self.call("CreateListener", |c| {
            c.create_listener()
                .load_balancer_arn(lb_arn)
                .port(i32::from(port))
                .protocol(ProtocolEnum::from(protocol.as_str()))
                .default_actions(forward(tg_arn))
                .send()
        })
        .await
        .map(|_| ())
    }

    pub async fn modify_listener(
        &self,
        arn: &str,
        protocol: ElbProtocol,
        tg_arn: &str,
    ) -> Result<(), ApiError> {
        self.call("ModifyListener", |c| {
            c.modify_listener()
                .listener_arn(arn)
                .protocol(ProtocolEnum::from(protocol.as_str()))
                .default_actions(forward(tg_arn))
                .send()
        })
        .await
        .map(|_| ())
    }

    pub async fn delete_listener(&self, arn: &str) -> Result<(), ApiError> {
        match self
            .call("DeleteListener", |c| {
                c.delete_listener().listener_arn(arn).send()
            })
            .await
        {
            Err(e) if !e.not_found() => Err(e),
            _ => Ok(()),
        }
    }
}

fn forward(tg_arn: &str) -> Action {
    Action::builder()
        .r#type(ActionTypeEnum::Forward)
        .target_group_arn(tg_arn)
        .build()
}

fn sdk_tags(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

fn lb_of(l: &elb::types::LoadBalancer) -> Option<CurrentLb> {
    Some(CurrentLb {
        arn: l.load_balancer_arn()?.to_string(),
        dns_name: l.dns_name().unwrap_or_default().to_string(),
        scheme: l
            .scheme()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        vpc_id: l.vpc_id().unwrap_or_default().to_string(),
        subnets: l
            .availability_zones()
            .iter()
            .filter_map(|z| z.subnet_id().map(str::to_string))
            .collect(),
        created: l.created_time().map(|t| t.secs()),
        tags: BTreeMap::new(),
    })
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

    #[test]
    fn throttling_is_transient_with_a_wait() {
        let e = ApiError {
            op: "RegisterTargets",
            code: Some("Throttling".into()),
            message: "Throttling: Rate exceeded".into(),
            throttled: true,
            transient: true,
        };
        let p: ProviderError = e.into();
        assert!(p.is_retryable());
        assert!(p.retry_after().is_some());
        let e = ApiError {
            op: "CreateLoadBalancer",
            code: Some("ValidationError".into()),
            message: "bad".into(),
            throttled: false,
            transient: false,
        };
        assert!(!ProviderError::from(e).is_retryable());
    }
}
