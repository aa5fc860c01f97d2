//! Taking over the NLB another controller made for a Service: the legacy AWS cloud provider
//! (`ccm-aws`) or the AWS Load Balancer Controller (`aws-lbc`).
//!
//! The load balancer is found by its previous owner's tags, checked against the Service
//! (a Network Load Balancer, the scheme asked, this cluster's), tagged with berth's ownership
//! first (so an interrupted take-over is found again by berth's own tags), and then brought
//! to berth's desired state without replacing it: each listener is switched to berth's target
//! group only once that group has every target registered and none failing, and the old
//! group is deleted after. A listener never forwards to a group without targets.
//!
//! Before a listener is switched, the load balancer is tagged
//! `berth.io/retiring-target-group.<port>` with the old group's ARN: a crash between the
//! switch and the old group's deletion leaves that mark, and the next pass deletes the group
//! no listener uses any more and then the mark, so no previous owner's group is left behind.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::info;

use super::annotations::TargetType;
use super::api::{CurrentLb, CurrentTg, Elb};
use super::plan::{self, CurrentListener, ListenerModify, Plan, PlannedGroup, owned_by};
use crate::adopt::{AdoptFrom, Adoption};
use crate::{DesiredLoadBalancer, ProviderError};

/// Tag berth adds to a load balancer it took over: where it came from.
pub const TAG_ADOPTED_FROM: &str = "berth.io/adopted-from";
/// Legacy provider: `namespace/name` of the Service.
pub const LEGACY_SERVICE: &str = "kubernetes.io/service-name";
/// Legacy provider: `kubernetes.io/cluster/<cluster id>` = `owned`.
pub const LEGACY_CLUSTER_PREFIX: &str = "kubernetes.io/cluster/";
/// AWS Load Balancer Controller: `namespace/name` of the Service.
pub const LBC_STACK: &str = "service.k8s.aws/stack";
/// AWS Load Balancer Controller: the cluster name.
pub const LBC_CLUSTER: &str = "elbv2.k8s.aws/cluster";
/// AWS Load Balancer Controller: `LoadBalancer`, or `namespace/name:port` on a group.
pub const LBC_RESOURCE: &str = "service.k8s.aws/resource";
/// The annotation that chose the legacy provider's load balancer type.
pub const LB_TYPE: &str = "service.beta.kubernetes.io/aws-load-balancer-type";

/// How long a scan of every load balancer is reused.
const SCAN_TTL: Duration = Duration::from_secs(5);
/// Prefix of the tags marking a previous owner's target group a switched listener let go
/// of; the rest of the key is the listener's port, the value the group's ARN.
pub const TAG_RETIRING_PREFIX: &str = "berth.io/retiring-target-group.";
/// Checks of a new target group's targets before the switch is put off to a retry.
const READY_CHECKS: u32 = 6;

/// The name the legacy provider gives a Service's load balancer: `a` and the uid without
/// dashes, at most 32 characters.
pub fn legacy_name(uid: &str) -> String {
    let mut n: String = std::iter::once('a')
        .chain(uid.chars().filter(|c| *c != '-'))
        .collect();
    n.truncate(32);
    n
}

/// Marks the load balancer with the previous owner's group `old` the listener on `port` is
/// about to let go of (see the module doc): the mark's key, None when there is nothing to mark.
async fn mark_retiring(
    elb: &Elb,
    cur: &CurrentLb,
    port: u16,
    old: Option<&CurrentTg>,
    ns_name: &str,
) -> Result<Option<String>, ProviderError> {
    let Some(old) = old.filter(|t| previous_group(t, ns_name)) else {
        return Ok(None);
    };
    let key = format!("{TAG_RETIRING_PREFIX}{port}");
    elb.add_tags(&cur.arn, &BTreeMap::from([(key.clone(), old.arn.clone())]))
        .await?;
    Ok(Some(key))
}

/// The cluster ids `from`'s tags claim `tags` for, when they name Service `ns_name`.
pub fn claimed_clusters(
    tags: &BTreeMap<String, String>,
    from: AdoptFrom,
    ns_name: &str,
) -> Option<Vec<String>> {
    match from {
        AdoptFrom::CcmAws => {
            (tags.get(LEGACY_SERVICE).map(String::as_str) == Some(ns_name)).then(|| {
                tags.keys()
                    .filter_map(|k| k.strip_prefix(LEGACY_CLUSTER_PREFIX))
                    .map(str::to_string)
                    .collect()
            })
        }
        AdoptFrom::AwsLbc => (tags.get(LBC_STACK).map(String::as_str) == Some(ns_name)
            && tags.contains_key(LBC_RESOURCE))
        .then(|| tags.get(LBC_CLUSTER).cloned().into_iter().collect()),
        AdoptFrom::Metallb => None,
    }
}

/// Why `lb` cannot be taken over for a Service planned as `p`, if it cannot.
pub fn refusal(lb: &CurrentLb, p: &Plan, from: AdoptFrom, cluster_id: &str) -> Option<String> {
    let name = lb.arn.rsplit('/').nth(1).unwrap_or(&lb.arn);
    if lb.kind != "network" {
        let kind = match lb.kind.as_str() {
            "application" => "an Application Load Balancer",
            "gateway" => "a Gateway Load Balancer",
            _ => "not a Network Load Balancer",
        };
        return Some(format!(
            "load balancer {name} made by {from} is {kind}; berth takes over only Network Load Balancers"
        ));
    }
    let want = p.settings.scheme.as_str();
    if lb.scheme != want {
        return Some(format!(
            "load balancer {name} made by {from} is {} but the Service asks for {want} \
             (service.beta.kubernetes.io/aws-load-balancer-scheme); an NLB's scheme cannot \
             change, so berth will not take it over",
            lb.scheme
        ));
    }
    let clusters = claimed_clusters(&lb.tags, from, &p_ns_name(p)).unwrap_or_default();
    if !clusters.iter().any(|c| c == cluster_id) {
        return Some(format!(
            "load balancer {name} made by {from} is tagged for cluster {} and berth adopts for \
             cluster {cluster_id:?} (--adopt-cluster-id)",
            if clusters.is_empty() {
                "(none)".to_string()
            } else {
                format!("{clusters:?}")
            }
        ));
    }
    None
}

/// Why `from` cannot have made an NLB for a Service with `annotations`, before any lookup.
pub fn refusal_by_annotations(
    annotations: &BTreeMap<String, String>,
    from: AdoptFrom,
) -> Option<String> {
    match from {
        AdoptFrom::CcmAws => match annotations.get(LB_TYPE).map(String::as_str) {
            Some("nlb") => None,
            other => Some(format!(
                "the legacy AWS provider serves this Service ({LB_TYPE}: {}) with a Classic ELB; \
                 berth takes over only Network Load Balancers",
                other.unwrap_or("unset")
            )),
        },
        AdoptFrom::AwsLbc => None,
        AdoptFrom::Metallb => Some("the aws provider has no MetalLB addresses to keep".into()),
    }
}

fn p_ns_name(p: &Plan) -> String {
    format!(
        "{}/{}",
        p.tags
            .get(crate::LABEL_SERVICE_NAMESPACE)
            .map_or("", String::as_str),
        p.tags
            .get(crate::LABEL_SERVICE_NAME)
            .map_or("", String::as_str)
    )
}

/// Whether target group `tg` was made by the previous owner for Service `ns_name` (only
/// those are ever deleted).
fn previous_group(tg: &CurrentTg, ns_name: &str) -> bool {
    [AdoptFrom::CcmAws, AdoptFrom::AwsLbc]
        .into_iter()
        .any(|f| claimed_clusters(&tg.tags, f, ns_name).is_some())
}

/// What taking over `lb` changes, in order, for people to read (`berth adopt plan`).
pub fn changes(
    lb: &CurrentLb,
    p: &Plan,
    listeners: &[CurrentListener],
    tgs: &[CurrentTg],
) -> Vec<String> {
    let name_of = |arn: &Option<String>| {
        arn.as_deref()
            .and_then(|a| tgs.iter().find(|t| t.arn == a))
            .map_or_else(|| "(none)".to_string(), |t| t.name.clone())
    };
    let add = plan::tags_to_add(&lb.tags, &p.tags);
    let mut out = vec![];
    if !add.is_empty() {
        out.push(format!(
            "tag load balancer with berth's ownership: {}",
            add.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    for l in listeners {
        match p.groups.iter().find(|g| g.port == l.port) {
            Some(g) if name_of(&l.target_group) == g.name => {}
            Some(g) => out.push(format!(
                "listener {}/{}: register {} targets {} in new target group {}, \
                 switch from {} once they are registered, then delete {}",
                l.port,
                l.protocol,
                g.targets.len(),
                match g.target_type {
                    TargetType::Instance => format!("at NodePort {}", g.tg_port),
                    TargetType::Ip => "at their pods' ports".to_string(),
                },
                g.name,
                name_of(&l.target_group),
                name_of(&l.target_group),
            )),
            None => out.push(format!(
                "listener {}/{}: not a port of the Service; delete it and target group {}",
                l.port,
                l.protocol,
                name_of(&l.target_group)
            )),
        }
    }
    for g in &p.groups {
        if !listeners.iter().any(|l| l.port == g.port) {
            out.push(format!(
                "listener {}/{}: create it with new target group {}",
                g.port,
                g.protocol.as_str(),
                g.name
            ));
        }
    }
    out
}

/// The aws provider's take-over state: which sources, for which cluster, and a short-lived
/// view of every load balancer (the AWS Load Balancer Controller's names cannot be derived).
pub struct Adopter {
    sources: Vec<AdoptFrom>,
    cluster_id: Option<String>,
    scan: tokio::sync::Mutex<Option<(Instant, Vec<CurrentLb>)>>,
    /// Service uid → ARN of the load balancer taken over for it.
    known: Mutex<HashMap<String, String>>,
}

impl Adopter {
    /// `cluster_id`: the previous owner's cluster id; None means berth's own cluster name.
    pub fn new(sources: Vec<AdoptFrom>, cluster_id: Option<String>) -> Option<Self> {
        let sources: Vec<AdoptFrom> = sources
            .into_iter()
            .filter(|s| *s != AdoptFrom::Metallb)
            .collect();
        (!sources.is_empty()).then(|| Self {
            sources,
            cluster_id,
            scan: tokio::sync::Mutex::new(None),
            known: Mutex::new(HashMap::new()),
        })
    }

    fn cluster_id<'a>(&'a self, lb: &'a DesiredLoadBalancer) -> &'a str {
        self.cluster_id.as_deref().unwrap_or(&lb.cluster)
    }

    async fn all(&self, elb: &Elb) -> Result<Vec<CurrentLb>, ProviderError> {
        let mut scan = self.scan.lock().await;
        if let Some((at, lbs)) = scan.as_ref()
            && at.elapsed() < SCAN_TTL
        {
            return Ok(lbs.clone());
        }
        let lbs = elb.all_load_balancers().await?;
        *scan = Some((Instant::now(), lbs.clone()));
        Ok(lbs)
    }

    async fn forget_scan(&self) {
        *self.scan.lock().await = None;
    }

    /// The load balancer berth took over for Service `uid` (found by berth's own tags).
    pub async fn find_owned(
        &self,
        elb: &Elb,
        cluster: &str,
        uid: &str,
    ) -> Result<Option<CurrentLb>, ProviderError> {
        let known = self.known.lock().ok().and_then(|k| k.get(uid).cloned());
        if let Some(arn) = known {
            if let Some(lb) = elb.load_balancer_arn(&arn).await?
                && owned_by(&lb.tags, cluster, uid)
            {
                return Ok(Some(lb));
            }
            if let Ok(mut k) = self.known.lock() {
                k.remove(uid);
            }
        }
        let found = self
            .all(elb)
            .await?
            .into_iter()
            .find(|l| owned_by(&l.tags, cluster, uid) && l.tags.contains_key(TAG_ADOPTED_FROM));
        if let (Some(l), Ok(mut k)) = (&found, self.known.lock()) {
            k.insert(uid.to_string(), l.arn.clone());
        }
        Ok(found)
    }

    /// The NLB `from` made for the Service of `lb`, if any: the one of this cluster when
    /// several claim the Service.
    async fn find_previous(
        &self,
        elb: &Elb,
        lb: &DesiredLoadBalancer,
        from: AdoptFrom,
    ) -> Result<Option<CurrentLb>, ProviderError> {
        let ns_name = format!("{}/{}", lb.service.namespace, lb.service.name);
        let mut candidates: Vec<CurrentLb> = match from {
            AdoptFrom::CcmAws => elb
                .load_balancers_named(&legacy_name(&lb.service.uid))
                .await?
                .into_iter()
                .filter(|l| claimed_clusters(&l.tags, from, &ns_name).is_some())
                .collect(),
            AdoptFrom::AwsLbc => self
                .all(elb)
                .await?
                .into_iter()
                .filter(|l| claimed_clusters(&l.tags, from, &ns_name).is_some())
                .collect(),
            AdoptFrom::Metallb => vec![],
        };
        let cluster_id = self.cluster_id(lb);
        candidates.sort_by_key(|l| {
            !claimed_clusters(&l.tags, from, &ns_name)
                .unwrap_or_default()
                .iter()
                .any(|c| c == cluster_id)
        });
        Ok(candidates.into_iter().next())
    }

    /// Read-only: what taking over `lb`'s previous load balancer from `from` would do.
    pub async fn plan(
        &self,
        elb: &Elb,
        lb: &DesiredLoadBalancer,
        p: &Plan,
        from: AdoptFrom,
    ) -> Result<Adoption, ProviderError> {
        if let Some(why) = refusal_by_annotations(&lb.annotations, from) {
            return Ok(Adoption::Refused(why));
        }
        if let Some(owned) = self.find_owned(elb, &lb.cluster, &lb.service.uid).await? {
            return Ok(Adoption::AlreadyOwned {
                load_balancer: owned.arn,
            });
        }
        let Some(cur) = self.find_previous(elb, lb, from).await? else {
            let tags = match from {
                AdoptFrom::CcmAws => format!(
                    "named {} and tagged {LEGACY_SERVICE}={}/{}",
                    legacy_name(&lb.service.uid),
                    lb.service.namespace,
                    lb.service.name
                ),
                _ => format!(
                    "tagged {LBC_STACK}={}/{}",
                    lb.service.namespace, lb.service.name
                ),
            };
            return Ok(Adoption::Refused(format!(
                "no load balancer {tags} was found to take over from {from}"
            )));
        };
        if let Some(why) = refusal(&cur, p, from, self.cluster_id(lb)) {
            return Ok(Adoption::Refused(why));
        }
        let listeners = elb.listeners(&cur.arn).await?;
        let tgs = elb.target_groups_of(&cur.arn).await?;
        Ok(Adoption::Adoptable {
            from,
            address: cur.dns_name.clone(),
            changes: changes(&cur, p, &listeners, &tgs),
            load_balancer: cur.arn,
        })
    }

    /// Takes over the Service's previous load balancer, or finishes an interrupted take-over:
    /// Some(load balancer) carrying berth's tags with every listener on berth's target
    /// groups; None when there is nothing to take over. A load balancer that cannot be taken
    /// over is a permanent error and nothing is changed.
    pub async fn take_over(
        &self,
        elb: &Elb,
        lb: &DesiredLoadBalancer,
        p: &Plan,
    ) -> Result<Option<CurrentLb>, ProviderError> {
        let (mut cur, from) = match self.find_owned(elb, &lb.cluster, &lb.service.uid).await? {
            Some(owned) => {
                let from = owned
                    .tags
                    .get(TAG_ADOPTED_FROM)
                    .and_then(|f| AdoptFrom::parse(f).ok())
                    .unwrap_or(AdoptFrom::CcmAws);
                (owned, from)
            }
            None => {
                let mut found = None;
                for from in self.sources.clone() {
                    if refusal_by_annotations(&lb.annotations, from).is_some() {
                        continue;
                    }
                    if let Some(cur) = self.find_previous(elb, lb, from).await? {
                        found = Some((cur, from));
                        break;
                    }
                }
                let Some((cur, from)) = found else {
                    return Ok(None);
                };
                if let Some(why) = refusal(&cur, p, from, self.cluster_id(lb)) {
                    return Err(ProviderError::Permanent(format!("Cannot adopt: {why}")));
                }
                (cur, from)
            }
        };
        // Ownership first: from here on berth's own lookup finds it.
        let mut want = p.tags.clone();
        want.insert(TAG_ADOPTED_FROM.into(), from.as_str().into());
        let add = plan::tags_to_add(&cur.tags, &want);
        if !add.is_empty() {
            elb.add_tags(&cur.arn, &add).await?;
            cur.tags.extend(add);
            info!(arn = %cur.arn, dns = %cur.dns_name, %from, "Took over load balancer");
            self.forget_scan().await;
        }
        if let Ok(mut k) = self.known.lock() {
            k.insert(lb.service.uid.clone(), cur.arn.clone());
        }
        self.switch_listeners(elb, lb, p, &cur).await?;
        Ok(Some(cur))
    }

    /// Moves every listener of `cur` to berth's target group, one at a time.
    async fn switch_listeners(
        &self,
        elb: &Elb,
        lb: &DesiredLoadBalancer,
        p: &Plan,
        cur: &CurrentLb,
    ) -> Result<(), ProviderError> {
        let ns_name = format!("{}/{}", lb.service.namespace, lb.service.name);
        let listeners = elb.listeners(&cur.arn).await?;
        // Groups let go of by a pass that was cut off after switching: delete, then unmark.
        for (key, arn) in cur
            .tags
            .iter()
            .filter(|(k, _)| k.starts_with(TAG_RETIRING_PREFIX))
        {
            if !listeners
                .iter()
                .any(|l| l.target_group.as_deref() == Some(arn.as_str()))
            {
                elb.delete_target_group(arn).await?;
                info!(arn = %arn, "Deleted the previous owner's target group left by an interrupted take-over");
            }
            elb.remove_tags(&cur.arn, std::slice::from_ref(key)).await?;
        }
        let mut tgs = elb.target_groups_of(&cur.arn).await?;
        for l in &listeners {
            let old = l
                .target_group
                .as_deref()
                .and_then(|a| tgs.iter().find(|t| t.arn == a))
                .cloned();
            if old
                .as_ref()
                .is_some_and(|t| owned_by(&t.tags, &lb.cluster, &lb.service.uid))
            {
                continue; // berth's already
            }
            let mark;
            match p.groups.iter().find(|g| g.port == l.port) {
                Some(g) => {
                    let mine = elb
                        .target_groups_named(&g.name)
                        .await?
                        .into_iter()
                        .find(|t| owned_by(&t.tags, &lb.cluster, &lb.service.uid));
                    if old.is_none() && mine.as_ref().map(|t| &t.arn) == l.target_group.as_ref() {
                        // berth's already (not every ELBv2 lists a group under the load
                        // balancer whose listener was switched to it).
                        continue;
                    }
                    if g.targets.is_empty() {
                        return Err(ProviderError::transient(format!(
                            "Listener {} still forwards to the previous owner's target group: \
                             no eligible target to register in berth's yet",
                            l.port
                        )));
                    }
                    let new = match mine {
                        Some(t) => t,
                        None => elb.create_target_group(g, &cur.vpc_id).await?,
                    };
                    let have = elb.targets(&new.arn).await?;
                    let (register, _) = plan::target_changes(&have, &g.targets);
                    if !register.is_empty() {
                        elb.change_targets(&new.arn, &register, true).await?;
                    }
                    self.wait_ready(elb, &new, g).await?;
                    mark = mark_retiring(elb, cur, l.port, old.as_ref(), &ns_name).await?;
                    // Only the target group moves here; TLS and protocol converge in the ensure
                    // that follows, like any other listener change.
                    elb.modify_listener(&ListenerModify {
                        arn: l.arn.clone(),
                        port: l.port,
                        protocol: g.protocol,
                        target_group: new.arn.clone(),
                        tls: l.tls.clone(),
                        protocol_changes: false,
                    })
                    .await?;
                    info!(port = l.port, from = %old.as_ref().map_or("", |t| t.name.as_str()), to = %g.name, "Switched listener to berth's target group");
                    tgs.push(new);
                }
                None => {
                    mark = mark_retiring(elb, cur, l.port, old.as_ref(), &ns_name).await?;
                    elb.delete_listener(&l.arn).await?;
                    info!(port = l.port, "Deleted listener the Service no longer has");
                }
            }
            let still_used = listeners
                .iter()
                .filter(|o| o.arn != l.arn)
                .any(|o| o.target_group == l.target_group);
            if let Some(old) = old.filter(|t| !still_used && previous_group(t, &ns_name)) {
                elb.delete_target_group(&old.arn).await?;
                info!(name = %old.name, "Deleted the previous owner's target group");
            }
            if let Some(key) = mark {
                elb.remove_tags(&cur.arn, &[key]).await?;
            }
        }
        Ok(())
    }

    /// Waits (bounded) until `tg` has every planned target registered and none failing.
    async fn wait_ready(
        &self,
        elb: &Elb,
        tg: &CurrentTg,
        g: &PlannedGroup,
    ) -> Result<(), ProviderError> {
        let mut last = String::new();
        for attempt in 0..READY_CHECKS {
            let states = elb.target_states(&tg.arn).await?;
            let missing = g
                .targets
                .iter()
                .filter(|t| !states.iter().any(|(have, _)| have == *t))
                .count();
            let failing: Vec<&str> = states
                .iter()
                .filter(|(_, s)| !matches!(s.as_str(), "healthy" | "initial" | "unused"))
                .map(|((id, _), _)| id.as_str())
                .collect();
            if missing == 0 && failing.is_empty() && !states.is_empty() {
                return Ok(());
            }
            last = format!("{missing} not registered yet, not ready: {failing:?}");
            tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
        }
        Err(ProviderError::transient(format!(
            "Target group {} is not ready to take traffic ({last}); the listener keeps the \
             previous owner's group for now",
            tg.name
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn legacy_names_follow_the_uid() {
        assert_eq!(
            legacy_name("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"),
            "a0f1e2d3c4b5a69788796a5b4c3d2e1f"
        );
        assert_eq!(legacy_name("u-1"), "au1");
    }

    #[test]
    fn previous_owners_are_recognised_by_their_tags() {
        let legacy = tags(&[
            (LEGACY_SERVICE, "shop/web"),
            ("kubernetes.io/cluster/prod", "owned"),
        ]);
        assert_eq!(
            claimed_clusters(&legacy, AdoptFrom::CcmAws, "shop/web"),
            Some(vec!["prod".to_string()])
        );
        assert_eq!(
            claimed_clusters(&legacy, AdoptFrom::CcmAws, "shop/api"),
            None
        );
        assert_eq!(
            claimed_clusters(&legacy, AdoptFrom::AwsLbc, "shop/web"),
            None
        );
        let lbc = tags(&[
            (LBC_STACK, "shop/web"),
            (LBC_CLUSTER, "prod"),
            (LBC_RESOURCE, "LoadBalancer"),
        ]);
        assert_eq!(
            claimed_clusters(&lbc, AdoptFrom::AwsLbc, "shop/web"),
            Some(vec!["prod".to_string()])
        );
        assert_eq!(claimed_clusters(&lbc, AdoptFrom::CcmAws, "shop/web"), None);
    }

    fn planned(scheme: Option<&str>) -> Plan {
        let service = crate::ServiceRef {
            namespace: "shop".into(),
            name: "web".into(),
            uid: "u-1".into(),
        };
        let mut lb = DesiredLoadBalancer::builder("test", service)
            .listener("", 80, crate::Protocol::Tcp, Some(30080))
            .listener("", 443, crate::Protocol::Tcp, Some(30443))
            .target(crate::NodeTarget {
                provider_id: Some("aws:///us-east-1a/i-aaa".into()),
                ..crate::NodeTarget::new("a", None)
            })
            .build();
        if let Some(s) = scheme {
            lb.annotations.insert(
                "service.beta.kubernetes.io/aws-load-balancer-scheme".into(),
                s.into(),
            );
        }
        let settings = super::super::annotations::parse(&lb.annotations, &lb.health_check).unwrap();
        plan::plan(&lb, settings).unwrap()
    }

    fn current(kind: &str, scheme: &str, tags: BTreeMap<String, String>) -> CurrentLb {
        CurrentLb {
            arn: "arn:aws:elasticloadbalancing:r:1:loadbalancer/net/au1/abc".into(),
            dns_name: "au1-abc.elb.r.amazonaws.com".into(),
            scheme: scheme.into(),
            kind: kind.into(),
            vpc_id: "vpc-1".into(),
            subnets: Default::default(),
            created: None,
            security_groups: Default::default(),
            tags,
        }
    }

    #[test]
    fn only_a_matching_nlb_of_this_cluster_is_taken_over() {
        let legacy = tags(&[
            (LEGACY_SERVICE, "shop/web"),
            ("kubernetes.io/cluster/test", "owned"),
        ]);
        let p = planned(Some("internet-facing"));
        let ok = current("network", "internet-facing", legacy.clone());
        assert_eq!(refusal(&ok, &p, AdoptFrom::CcmAws, "test"), None);
        let cases = [
            (
                current("application", "internet-facing", legacy.clone()),
                "test",
                "Application Load Balancer",
            ),
            (
                current("network", "internal", legacy.clone()),
                "test",
                "internal",
            ),
            (ok.clone(), "prod", "cluster [\"test\"]"),
        ];
        for (lb, cluster, want) in cases {
            let why = refusal(&lb, &p, AdoptFrom::CcmAws, cluster).expect(want);
            assert!(why.contains(want), "{why}");
            assert!(why.contains("au1"), "names the load balancer: {why}");
        }
        // berth's default scheme is internal: a Service that does not say so is refused.
        let why = refusal(&ok, &planned(None), AdoptFrom::CcmAws, "test").unwrap();
        assert!(why.contains("aws-load-balancer-scheme"), "{why}");
    }

    #[test]
    fn changes_list_tags_switches_and_removals() {
        let p = planned(Some("internet-facing"));
        let lb = current("network", "internet-facing", BTreeMap::new());
        let old = |arn: &str, name: &str| CurrentTg {
            arn: arn.into(),
            name: name.into(),
            health: p.groups[0].health.clone(),
            tags: BTreeMap::new(),
        };
        let listener = |port, tg: &str| CurrentListener {
            arn: format!("l{port}"),
            port,
            protocol: "TCP".into(),
            target_group: Some(tg.into()),
            tls: None,
        };
        let tgs = vec![old("t80", "k8s-web-80"), old("t22", "k8s-web-22")];
        let got = changes(&lb, &p, &[listener(80, "t80"), listener(22, "t22")], &tgs);
        assert_eq!(got.len(), 4, "{got:#?}");
        assert!(got[0].starts_with("tag load balancer with berth's ownership: berth.io/"));
        assert!(
            got[1].starts_with(
                "listener 80/TCP: register 1 targets at NodePort 30080 in new target group b-"
            ) && got[1].ends_with(
                "switch from k8s-web-80 once they are registered, then delete k8s-web-80"
            ),
            "{}",
            got[1]
        );
        assert_eq!(
            got[2],
            "listener 22/TCP: not a port of the Service; delete it and target group k8s-web-22"
        );
        assert!(got[3].starts_with("listener 443/TCP: create it with new target group b-"));
        // Once berth's: nothing left to say.
        let mut owned = lb.clone();
        owned.tags = p.tags.clone();
        let mine = CurrentTg {
            arn: "tb".into(),
            name: p.groups[0].name.clone(),
            ..old("", "")
        };
        let mine443 = CurrentTg {
            arn: "tb443".into(),
            name: p.groups[1].name.clone(),
            ..old("", "")
        };
        assert!(
            changes(
                &owned,
                &p,
                &[listener(80, "tb"), listener(443, "tb443")],
                &[mine, mine443]
            )
            .is_empty()
        );
    }

    #[test]
    fn classic_elbs_are_refused_before_any_lookup() {
        let none = BTreeMap::new();
        let why = refusal_by_annotations(&none, AdoptFrom::CcmAws).unwrap();
        assert!(
            why.contains("Classic ELB") && why.contains("unset"),
            "{why}"
        );
        let nlb = tags(&[(LB_TYPE, "nlb")]);
        assert_eq!(refusal_by_annotations(&nlb, AdoptFrom::CcmAws), None);
        assert_eq!(refusal_by_annotations(&none, AdoptFrom::AwsLbc), None);
    }
}
