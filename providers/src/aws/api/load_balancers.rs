//! Load balancers, their listeners and tags.

use aws_sdk_elasticloadbalancingv2 as elb;
use elb::types::{
    Certificate, LoadBalancerAttribute, LoadBalancerSchemeEnum, LoadBalancerTypeEnum, ProtocolEnum,
};
use std::collections::BTreeMap;

use super::{ApiError, CurrentLb, Elb, TAG_CHUNK, forward, sdk_tags};
use crate::aws::plan::{CurrentListener, ElbProtocol, ListenerModify, listener_protocol};
use crate::aws::tls::TlsListener;

impl Elb {
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

    /// The load balancer `arn`, with tags; None once it is gone.
    pub async fn load_balancer_arn(&self, arn: &str) -> Result<Option<CurrentLb>, ApiError> {
        let out = match self
            .call("DescribeLoadBalancers", |c| {
                c.describe_load_balancers().load_balancer_arns(arn).send()
            })
            .await
        {
            Ok(out) => out,
            Err(e) if e.not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut lbs: Vec<CurrentLb> = out
            .load_balancers()
            .iter()
            .filter(|l| l.load_balancer_arn() == Some(arn))
            .filter_map(lb_of)
            .collect();
        self.fill_lb_tags(&mut lbs).await?;
        Ok(lbs.pop())
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
        security_groups: &[String],
        tags: &BTreeMap<String, String>,
    ) -> Result<CurrentLb, ApiError> {
        let out = self
            .call("CreateLoadBalancer", |c| {
                c.create_load_balancer()
                    .name(name)
                    .r#type(LoadBalancerTypeEnum::Network)
                    .scheme(LoadBalancerSchemeEnum::from(scheme))
                    .set_subnets(Some(subnets.to_vec()))
                    .set_security_groups(
                        (!security_groups.is_empty()).then(|| security_groups.to_vec()),
                    )
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

    pub async fn set_security_groups(&self, arn: &str, groups: &[String]) -> Result<(), ApiError> {
        self.call("SetSecurityGroups", |c| {
            c.set_security_groups()
                .load_balancer_arn(arn)
                .set_security_groups(Some(groups.to_vec()))
                .send()
        })
        .await
        .map(|_| ())
    }

    pub async fn remove_tags(&self, arn: &str, keys: &[String]) -> Result<(), ApiError> {
        self.call("RemoveTags", |c| {
            c.remove_tags()
                .resource_arns(arn)
                .set_tag_keys(Some(keys.to_vec()))
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
                    tls: (l.protocol() == Some(&ProtocolEnum::Tls)).then(|| TlsListener {
                        certificates: l
                            .certificates()
                            .iter()
                            .filter_map(|c| c.certificate_arn().map(str::to_string))
                            .collect(),
                        policy: l.ssl_policy().unwrap_or_default().to_string(),
                        alpn: l.alpn_policy().first().filter(|a| *a != "None").cloned(),
                    }),
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
        tls: Option<&TlsListener>,
    ) -> Result<Option<String>, ApiError> {
        let out = self
            .call("CreateListener", |c| {
                let (certs, policy, alpn) = tls_parts(tls);
                c.create_listener()
                    .load_balancer_arn(lb_arn)
                    .port(i32::from(port))
                    .protocol(ProtocolEnum::from(listener_protocol(protocol, tls)))
                    .default_actions(forward(tg_arn))
                    .set_certificates(certs)
                    .set_ssl_policy(policy)
                    .set_alpn_policy(alpn)
                    .send()
            })
            .await?;
        Ok(out
            .listeners()
            .first()
            .and_then(|l| l.listener_arn())
            .map(str::to_string))
    }

    pub async fn modify_listener(&self, m: &ListenerModify) -> Result<(), ApiError> {
        let tls = m.tls.as_ref();
        // The protocol only when it changes: some backends (moto) take no other for TLS.
        let protocol = m
            .protocol_changes
            .then(|| ProtocolEnum::from(listener_protocol(m.protocol, tls)));
        self.call("ModifyListener", |c| {
            let (certs, policy, alpn) = tls_parts(tls);
            c.modify_listener()
                .listener_arn(&m.arn)
                .set_protocol(protocol.clone())
                .default_actions(forward(&m.target_group))
                .set_certificates(certs)
                .set_ssl_policy(policy)
                .set_alpn_policy(alpn)
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

/// The default certificate, policy and ALPN policy of a TLS listener, as ELBv2 takes them.
#[allow(clippy::type_complexity)]
fn tls_parts(
    tls: Option<&TlsListener>,
) -> (
    Option<Vec<Certificate>>,
    Option<String>,
    Option<Vec<String>>,
) {
    match tls {
        None => (None, None, None),
        Some(t) => (
            t.certificates
                .first()
                .map(|c| vec![Certificate::builder().certificate_arn(c).build()]),
            Some(t.policy.clone()),
            t.alpn.clone().map(|a| vec![a]),
        ),
    }
}

fn lb_of(l: &elb::types::LoadBalancer) -> Option<CurrentLb> {
    Some(CurrentLb {
        arn: l.load_balancer_arn()?.to_string(),
        dns_name: l.dns_name().unwrap_or_default().to_string(),
        scheme: l
            .scheme()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        kind: l
            .r#type()
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        vpc_id: l.vpc_id().unwrap_or_default().to_string(),
        subnets: l
            .availability_zones()
            .iter()
            .filter_map(|z| z.subnet_id().map(str::to_string))
            .collect(),
        security_groups: l.security_groups().iter().cloned().collect(),
        created: l.created_time().map(|t| t.secs()),
        tags: BTreeMap::new(),
    })
}
