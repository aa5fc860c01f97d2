//! The `aws` provider: one AWS Network Load Balancer (ELBv2) per Service.
//!
//! `ensure` finds the Service's NLB and target groups by name and ownership tags before
//! creating anything (moto, and a crashed earlier run, can leave duplicates), then changes
//! only what differs: subnets, tags, attributes, health checks, targets (in chunks) and
//! listeners. `delete` goes in dependency order: load balancer (with its listeners), then
//! target groups. The SDK is built with a ring-based rustls HTTPS client, so the binary keeps
//! one crypto provider.

mod adopt;
pub mod annotations;
mod api;
pub mod budget;
mod ec2;
mod ec2_security_groups;
pub mod group;
mod group_security;
pub mod plan;
pub mod security_groups;
mod tags;
pub mod tls;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_smithy_http_client::tls as http_tls;
use budget::{ApiMetricsHook, Bucket, Budget};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;
use tracing::{debug, info, instrument, warn};

use crate::{
    DesiredLoadBalancer, Ingress, IpMode, LABEL_CLUSTER, LoadBalancerRef, LoadBalancerStatus,
    OwnedLoadBalancer, Provider, ProviderError,
};
use api::{CurrentLb, CurrentTg, Elb, health_differs};
use plan::{Plan, owned_by};

/// What the aws provider honours: the annotations in [`annotations::ALL`] and berth's
/// health check; not requested addresses (AWS assigns the NLB's).
pub const ANNOTATIONS: crate::AnnotationSupport = crate::AnnotationSupport {
    keys: &annotations::ALL,
    health_check: true,
    requested_addresses: false,
    otherwise: "the NLB is built without that setting",
};

/// Where and how to reach AWS.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsProviderConfig {
    /// e.g. `us-east-1`.
    pub region: String,
    /// Overrides the ELBv2 and EC2 endpoints (moto, LocalStack, a VPC endpoint).
    pub endpoint: Option<String>,
    /// Most AWS calls in flight at once, across all Services.
    pub concurrency: usize,
    /// Attempts per call (throttling, 5xx, network errors), by berth's budget; the SDK's own
    /// retries are off so they never multiply.
    pub max_attempts: u32,
    /// Controllers whose NLBs berth takes over (`--adopt`).
    pub adopt: Vec<crate::adopt::AdoptFrom>,
    /// The cluster id the previous owner tagged with; None: berth's cluster name.
    pub adopt_cluster_id: Option<String>,
    /// ELBv2 calls per second and burst, shared by all workers (AWS: 10/s, 40).
    pub elb_rate: f64,
    pub elb_burst: u32,
    /// EC2 calls per second and burst (AWS, non-mutating calls: 20/s, 100).
    pub ec2_rate: f64,
    pub ec2_burst: u32,
    /// How long berth trusts what its last successful ensure of an NLB left there: within
    /// it, a change of nodes alone costs only the target writes (no reads); past it, or
    /// after any error, the next ensure reads everything again. The controller sets it to
    /// its drift resync (`--resync`), so each resync still re-reads and repairs drift.
    pub full_read_every: Duration,
}

impl AwsProviderConfig {
    /// `region`, the standard endpoints, 8 calls at once, 5 attempts, AWS's documented
    /// per-account rates as budgets.
    pub fn new(region: impl Into<String>) -> Self {
        Self {
            region: region.into(),
            endpoint: None,
            concurrency: 8,
            max_attempts: 5,
            adopt: vec![],
            adopt_cluster_id: None,
            elb_rate: budget::ELB_RATE,
            elb_burst: budget::ELB_BURST,
            ec2_rate: budget::EC2_RATE,
            ec2_burst: budget::EC2_BURST,
            full_read_every: Duration::from_secs(300),
        }
    }
}

struct Clients {
    elb: Elb,
    ec2: ec2::Ec2,
    sg: security_groups::SgState,
}

/// The `aws` provider.
pub struct AwsProvider {
    cfg: AwsProviderConfig,
    clients: OnceCell<Clients>,
    adopter: Option<adopt::Adopter>,
    elb_budget: Arc<Budget>,
    ec2_budget: Arc<Budget>,
    /// What the last successful ensure of each Service (by uid) left in AWS.
    known: std::sync::Mutex<HashMap<String, Known>>,
    /// For each cluster, how many [`Provider::list_owned`] passes in a row found no load
    /// balancer of it.
    none_seen: std::sync::Mutex<HashMap<String, u32>>,
    /// One lock per shared NLB (see `group`).
    group_locks: group::Locks,
    /// The shared NLBs of each cluster the last [`Provider::list_owned`] saw.
    shared_seen: std::sync::Mutex<HashMap<String, group::Seen>>,
}

/// An NLB as berth's last successful ensure left it: enough to apply a change of nodes
/// without reading anything back.
#[derive(Debug, Clone)]
struct Known {
    /// [`shape`] of the desired state it was made for.
    shape: String,
    dns_name: String,
    vpc_id: String,
    /// Each target group's ARN and the targets (id and port) berth left in it, by group
    /// name.
    groups: BTreeMap<String, (String, BTreeSet<plan::Target>)>,
    /// When everything was last read from AWS.
    read_at: Instant,
    /// The group whose shared NLB this Service's listeners are on.
    group: Option<String>,
}

impl Known {
    /// What an ensure that just wrote `p` leaves known: the NLB's name and VPC, and each
    /// planned target group's ARN (from `arns`, in `p.groups`' order) with its targets.
    fn written(
        shape: String,
        nlb: &CurrentLb,
        p: &Plan,
        arns: &[(u16, plan::ElbProtocol, String)],
        group: Option<String>,
    ) -> Known {
        Known {
            shape,
            dns_name: nlb.dns_name.clone(),
            vpc_id: nlb.vpc_id.clone(),
            groups: p
                .groups
                .iter()
                .zip(arns)
                .map(|(g, (_, _, arn))| (g.name.clone(), (arn.clone(), g.targets.clone())))
                .collect(),
            read_at: Instant::now(),
            group,
        }
    }
}

/// Deletes the target groups of `existing` that `p` no longer plans.
async fn delete_unplanned_groups(
    elb: &Elb,
    existing: &[CurrentTg],
    p: &Plan,
) -> Result<(), ProviderError> {
    for tg in existing
        .iter()
        .filter(|t| !p.groups.iter().any(|g| g.name == t.name))
    {
        elb.delete_target_group(&tg.arn).await?;
        info!(name = %tg.name, "Deleted target group");
    }
    Ok(())
}

/// Registers and deregisters what turns `have` into `want` in the group `arn`. A target
/// moving to another port on the same IP is deregistered at its old port before it is
/// registered at the new one: moto keys targets by id alone, so the other order would lose
/// it (AWS accepts either); every other deregistration waits until the new targets are in.
async fn sync_targets(
    elb: &Elb,
    name: &str,
    arn: &str,
    have: &BTreeSet<plan::Target>,
    want: &BTreeSet<plan::Target>,
) -> Result<(), ProviderError> {
    let (register, deregister) = plan::target_changes(have, want);
    let (moved, gone): (Vec<plan::Target>, Vec<plan::Target>) = deregister
        .iter()
        .cloned()
        .partition(|(id, _)| register.iter().any(|(r, _)| r == id));
    if !moved.is_empty() {
        elb.change_targets(arn, &moved, false).await?;
    }
    if !register.is_empty() {
        elb.change_targets(arn, &register, true).await?;
    }
    if !gone.is_empty() {
        elb.change_targets(arn, &gone, false).await?;
    }
    if !register.is_empty() || !deregister.is_empty() {
        info!(%name, registered = register.len(), deregistered = deregister.len(), "Updated targets");
    }
    Ok(())
}

/// Brings `current` (listeners of the NLB `nlb_arn`, or the part of them one Service owns)
/// to one listener per planned port forwarding to `arns`: deletes, modifies, creates, then
/// the extra TLS certificates. Returns what it changed.
async fn apply_listeners(
    elb: &Elb,
    nlb_arn: &str,
    current: &[plan::CurrentListener],
    arns: &[(u16, plan::ElbProtocol, String)],
    p: &Plan,
) -> Result<plan::ListenerChanges, ProviderError> {
    let changes = plan::listener_changes(current, arns, &p.tls);
    for arn in &changes.delete {
        elb.delete_listener(arn).await?;
    }
    for m in &changes.modify {
        info!(
            port = m.port,
            protocol = %plan::listener_protocol(m.protocol, m.tls.as_ref()),
            certificate = %m.tls.as_ref().and_then(|t| t.certificates.first()).map(String::as_str).unwrap_or("none"),
            listener = %m.arn,
            "Modifying listener"
        );
        elb.modify_listener(m).await?;
    }
    let mut created = Vec::new();
    for (port, proto, tg, t) in &changes.create {
        let arn = elb
            .create_listener(nlb_arn, *port, *proto, tg, t.as_ref())
            .await?;
        created.extend(arn.map(|a| (*port, a)));
    }
    tls::sync_extra_certificates(elb, &p.tls, current, &created).await?;
    Ok(changes)
}

/// Makes each of `p`'s target groups what it plans (found in `existing`, else — when
/// `look_up` — by name, else created), with its targets; returns each one's listener port,
/// protocol and ARN.
async fn sync_groups(
    elb: &Elb,
    lb: &DesiredLoadBalancer,
    p: &Plan,
    existing: &[CurrentTg],
    look_up: bool,
    vpc_id: &str,
) -> Result<Vec<(u16, plan::ElbProtocol, String)>, ProviderError> {
    let uid = &lb.service.uid;
    let mut arns: Vec<(u16, plan::ElbProtocol, String)> = Vec::new();
    for g in &p.groups {
        let mut tg = existing.iter().find(|t| t.name == g.name).cloned();
        let mut created = false;
        if tg.is_none() && look_up {
            // Created earlier but not attached (a crash before its listener, or the
            // load balancer was just replaced)?
            tg = elb
                .target_groups_named(&g.name)
                .await?
                .into_iter()
                .find(|t| owned_by(&t.tags, &lb.cluster, uid));
        }
        let tg = match tg {
            Some(t) => t,
            None => {
                let t = elb.create_target_group(g, vpc_id).await?;
                info!(name = %g.name, port = g.port, protocol = g.protocol.as_str(), "Created target group");
                created = true;
                t
            }
        };
        if !created {
            if health_differs(&tg.health, &g.health) {
                elb.modify_health_check(&tg.arn, &g.health).await?;
                info!(name = %g.name, "Updated health check");
            }
            let add = plan::tags_to_add(&tg.tags, &g.tags);
            if !add.is_empty() {
                elb.add_tags(&tg.arn, &add).await?;
            }
            let remove = tags::to_remove(&tg.tags, &g.tags);
            if !remove.is_empty() {
                elb.remove_tags(&tg.arn, &remove).await?;
            }
        }
        if !g.attributes.is_empty() {
            let cur = elb.target_group_attributes(&tg.arn).await?;
            let set = plan::attributes_to_set(&cur, &g.attributes);
            if !set.is_empty() {
                elb.modify_target_group_attributes(&tg.arn, &set).await?;
            }
        }
        let current_targets = if created {
            BTreeSet::new()
        } else {
            elb.targets(&tg.arn).await?
        };
        sync_targets(elb, &g.name, &tg.arn, &current_targets, &g.targets).await?;
        arns.push((g.port, g.protocol, tg.arn));
    }
    Ok(arns)
}

/// The status of an NLB named `dns_name`.
fn status(dns_name: &str) -> LoadBalancerStatus {
    LoadBalancerStatus {
        ingress: vec![Ingress {
            ip: None,
            hostname: Some(dns_name.to_string()).filter(|d| !d.is_empty()),
            ip_mode: IpMode::Proxy,
        }],
    }
}

/// A digest of everything in `lb` but its targets (nodes and endpoints): equal shapes need
/// the same NLB, listeners, target groups, tags and security groups.
fn shape(lb: &DesiredLoadBalancer) -> String {
    let without_targets = DesiredLoadBalancer {
        targets: Default::default(),
        endpoints: Vec::new(),
        ..lb.clone()
    };
    plan::hash16(&serde_json::to_string(&without_targets).unwrap_or_default())
}

impl AwsProvider {
    /// A provider for `cfg`. Credentials come from the standard chain (environment, web
    /// identity, profile, instance metadata) and are resolved on first use.
    pub fn new(cfg: AwsProviderConfig) -> Result<Self, ProviderError> {
        if cfg.region.trim().is_empty() {
            return Err(ProviderError::Permanent(
                "The aws provider needs a region (--aws-region)".into(),
            ));
        }
        if let Some(e) = &cfg.endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(ProviderError::Permanent(format!(
                "Invalid AWS endpoint {e:?}: expected an http:// or https:// URL"
            )));
        }
        let bad =
            |e: String| ProviderError::Permanent(format!("Invalid aws provider setting: {e}"));
        let elb_budget = Arc::new(Budget::new(
            Bucket::new("elbv2", cfg.elb_rate, cfg.elb_burst).map_err(bad)?,
            cfg.max_attempts,
        ));
        let ec2_budget = Arc::new(Budget::new(
            Bucket::new("ec2", cfg.ec2_rate, cfg.ec2_burst).map_err(bad)?,
            cfg.max_attempts,
        ));
        Ok(Self {
            adopter: adopt::Adopter::new(cfg.adopt.clone(), cfg.adopt_cluster_id.clone()),
            cfg,
            clients: OnceCell::new(),
            elb_budget,
            ec2_budget,
            known: Default::default(),
            none_seen: Default::default(),
            group_locks: Default::default(),
            shared_seen: Default::default(),
        })
    }

    /// Reports every AWS request (by API, operation and outcome) and every wait for the
    /// budget or a backoff to `hook`.
    pub fn with_metrics(self, hook: ApiMetricsHook) -> Self {
        self.elb_budget.set_hook(hook.clone());
        self.ec2_budget.set_hook(hook);
        self
    }

    async fn clients(&self) -> Result<&Clients, ProviderError> {
        self.clients
            .get_or_try_init(|| async {
                let http = aws_smithy_http_client::Builder::new()
                    .tls_provider(http_tls::Provider::Rustls(
                        http_tls::rustls_provider::CryptoMode::Ring,
                    ))
                    .build_https();
                let mut loader = aws_config::defaults(BehaviorVersion::latest())
                    .region(aws_config::Region::new(self.cfg.region.clone()))
                    .http_client(http)
                    // berth's budget retries (see `budget`); the SDK's standard or adaptive
                    // modes would retry each of those attempts again, unpaced and uncounted.
                    .retry_config(RetryConfig::disabled())
                    .timeout_config(
                        TimeoutConfig::builder()
                            .connect_timeout(Duration::from_secs(5))
                            .operation_attempt_timeout(Duration::from_secs(30))
                            .build(),
                    );
                if let Some(e) = &self.cfg.endpoint {
                    loader = loader.endpoint_url(e);
                }
                let sdk = loader.load().await;
                let credentials = sdk.credentials_provider().ok_or_else(|| {
                    ProviderError::Permanent("No AWS credentials provider is configured".into())
                })?;
                Ok(Clients {
                    elb: Elb::new(
                        aws_sdk_elasticloadbalancingv2::Client::new(&sdk),
                        self.cfg.concurrency,
                    )
                    .with_budget(self.elb_budget.clone()),
                    ec2: ec2::Ec2::new(
                        self.cfg.endpoint.as_deref(),
                        &self.cfg.region,
                        credentials,
                    )?
                    .with_budget(self.ec2_budget.clone()),
                    sg: security_groups::SgState::default(),
                })
            })
            .await
    }

    /// ELBv2 calls made so far, by operation (for benchmarks and metrics).
    pub fn elb_calls(&self) -> BTreeMap<&'static str, u64> {
        self.clients
            .get()
            .map(|c| c.elb.calls())
            .unwrap_or_default()
    }

    /// Parses and plans; no I/O.
    fn plan(lb: &DesiredLoadBalancer) -> Result<Plan, ProviderError> {
        let settings = annotations::parse(&lb.annotations, &lb.health_check)?;
        if let Some(g) = &settings.group {
            group::validate(&settings, g)?;
        }
        plan::plan(lb, settings)
    }

    /// The Service's load balancers (duplicates included), refusing a same-named one berth
    /// did not create for it.
    async fn find_lbs(
        elb: &Elb,
        name: &str,
        cluster: &str,
        uid: &str,
    ) -> Result<Vec<CurrentLb>, ProviderError> {
        let all = elb.load_balancers_named(name).await?;
        let (mut ours, foreign): (Vec<_>, Vec<_>) = all
            .into_iter()
            .partition(|l| owned_by(&l.tags, cluster, uid));
        if ours.is_empty() && !foreign.is_empty() {
            return Err(ProviderError::Permanent(format!(
                "Load balancer {name} exists but berth did not create it for this Service \
                 (its {LABEL_CLUSTER} and berth.io/service-uid tags differ); berth will not change it"
            )));
        }
        ours.sort_by(|a, b| a.created.cmp(&b.created).then(a.arn.cmp(&b.arn)));
        Ok(ours)
    }

    async fn subnets(
        &self,
        c: &Clients,
        p: &Plan,
        cluster: &str,
    ) -> Result<(Vec<String>, String), ProviderError> {
        let requested = p.settings.subnets.as_deref();
        let mut found = Vec::new();
        for f in ec2::filters(p.settings.scheme, requested) {
            found.extend(c.ec2.describe_subnets(&f).await?);
        }
        ec2::choose(&found, p.settings.scheme, requested, cluster).map_err(ProviderError::Permanent)
    }

    /// Reads the Service's NLB and everything under it and makes it what `p` asks for.
    async fn ensure_full(
        &self,
        c: &Clients,
        lb: &DesiredLoadBalancer,
        p: &Plan,
        shape: String,
    ) -> Result<(LoadBalancerStatus, Known), ProviderError> {
        let elb = &c.elb;
        let uid = &lb.service.uid;
        let mut found = Self::find_lbs(elb, &p.name, &lb.cluster, uid).await?;
        if let (true, Some(a)) = (found.is_empty(), &self.adopter) {
            found.extend(a.take_over(elb, lb, p).await?);
        }
        // Duplicates (a crash between CreateLoadBalancer and its answer, on a backend that
        // accepts duplicate names): keep the oldest.
        for dup in found.split_off(found.len().min(1)) {
            warn!(arn = %dup.arn, "Deleting a duplicate load balancer");
            let tgs = elb.target_groups_of(&dup.arn).await?;
            elb.delete_load_balancer(&dup.arn).await?;
            for tg in tgs {
                if owned_by(&tg.tags, &lb.cluster, uid)
                    && !p.groups.iter().any(|g| g.name == tg.name)
                {
                    elb.delete_target_group(&tg.arn).await?;
                }
            }
        }
        let mut current = found.pop();
        let mut replaced = false;
        // The scheme cannot change in place: replace the load balancer (its target groups
        // are reused).
        if let Some(cur) = current
            .as_ref()
            .filter(|c| c.scheme != p.settings.scheme.as_str())
        {
            info!(from = %cur.scheme, to = p.settings.scheme.as_str(), "Scheme changed; replacing the load balancer");
            elb.delete_load_balancer(&cur.arn).await?;
            current = None;
            replaced = true;
        }
        let (lb_now, fresh) = match current {
            Some(cur) => (cur, false),
            None => {
                let (subnets, vpc) = self.subnets(c, p, &lb.cluster).await?;
                // Created with its security groups: AWS takes none later otherwise.
                let sgs = c.sg.ensure(&c.ec2, lb, p, &vpc).await?;
                let created = elb
                    .create_load_balancer(
                        &p.name,
                        p.settings.scheme.as_str(),
                        &subnets,
                        &sgs.groups,
                        &p.tags,
                    )
                    .await?;
                security_groups::delete_stale(&c.ec2, &sgs.stale).await?;
                info!(arn = %created.arn, dns = %created.dns_name, "Created load balancer");
                (created, true)
            }
        };
        if !fresh {
            if p.settings.subnets.is_some() {
                let (subnets, _) = self.subnets(c, p, &lb.cluster).await?;
                if subnets.iter().cloned().collect::<BTreeSet<_>>() != lb_now.subnets {
                    elb.set_subnets(&lb_now.arn, &subnets).await?;
                    info!(?subnets, "Updated subnets");
                }
            }
            let add = plan::tags_to_add(&lb_now.tags, &p.tags);
            if !add.is_empty() {
                elb.add_tags(&lb_now.arn, &add).await?;
            }
            let remove = tags::to_remove(&lb_now.tags, &p.tags);
            if !remove.is_empty() {
                elb.remove_tags(&lb_now.arn, &remove).await?;
                info!(?remove, "Removed tags");
            }
            let sgs = c.sg.ensure(&c.ec2, lb, p, &lb_now.vpc_id).await?;
            security_groups::attach(elb, &lb_now, &sgs).await?;
            security_groups::delete_stale(&c.ec2, &sgs.stale).await?;
        }
        if !p.settings.lb_attributes.is_empty() {
            let cur = elb.load_balancer_attributes(&lb_now.arn).await?;
            let set = plan::attributes_to_set(&cur, &p.settings.lb_attributes);
            if !set.is_empty() {
                elb.modify_load_balancer_attributes(&lb_now.arn, &set)
                    .await?;
                info!(?set, "Updated load balancer attributes");
            }
        }

        // Target groups.
        let existing: Vec<CurrentTg> = if fresh {
            vec![]
        } else {
            elb.target_groups_of(&lb_now.arn)
                .await?
                .into_iter()
                .filter(|t| owned_by(&t.tags, &lb.cluster, uid))
                .collect()
        };
        let arns = sync_groups(elb, lb, p, &existing, !fresh || replaced, &lb_now.vpc_id).await?;

        // Listeners.
        let listeners = if fresh {
            vec![]
        } else {
            elb.listeners(&lb_now.arn).await?
        };
        let changes = apply_listeners(elb, &lb_now.arn, &listeners, &arns, p).await?;
        if !changes.is_empty() {
            info!(
                created = changes.create.len(),
                modified = changes.modify.len(),
                deleted = changes.delete.len(),
                "Updated listeners"
            );
        }

        // Target groups no longer used.
        delete_unplanned_groups(elb, &existing, p).await?;

        let known = Known::written(shape, &lb_now, p, &arns, None);
        Ok((status(&lb_now.dns_name), known))
    }

    /// A change of targets alone (nodes, or the pods of ip targets) on an NLB berth knows as
    /// it left it: only the target writes (and the backend rule for instances not seen
    /// before), nothing read back.
    async fn ensure_known(
        &self,
        c: &Clients,
        lb: &DesiredLoadBalancer,
        p: &Plan,
        mut k: Known,
    ) -> Result<(LoadBalancerStatus, Known), ProviderError> {
        c.sg.ensure_node_rules(&c.ec2, lb, p, &k.vpc_id).await?;
        for g in &p.groups {
            let Some((arn, have)) = k.groups.get_mut(&g.name) else {
                return Err(ProviderError::transient(format!(
                    "Target group {} is not among those berth last wrote",
                    g.name
                )));
            };
            sync_targets(&c.elb, &g.name, arn, have, &g.targets).await?;
            *have = g.targets.clone();
        }
        Ok((status(&k.dns_name), k))
    }

    /// Deletes the load balancer `lb` and then the target groups it used that this Service
    /// owns.
    async fn delete_lb(
        elb: &Elb,
        lb: &CurrentLb,
        cluster: &str,
        uid: &str,
    ) -> Result<(), ProviderError> {
        let mut tgs = elb.target_groups_of(&lb.arn).await?;
        if lb.tags.contains_key(adopt::TAG_ADOPTED_FROM) {
            // Its listeners were switched to berth's groups by ModifyListener, and not every
            // ELBv2 lists such a group under the load balancer: ask the listeners too.
            let more: Vec<String> = elb
                .listeners(&lb.arn)
                .await?
                .into_iter()
                .filter_map(|l| l.target_group)
                .filter(|a| !tgs.iter().any(|t| &t.arn == a))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            if !more.is_empty() {
                tgs.extend(elb.target_groups_by_arn(&more).await?);
            }
        }
        elb.delete_load_balancer(&lb.arn).await?;
        info!(arn = %lb.arn, "Deleted load balancer");
        for tg in tgs.iter().filter(|t| owned_by(&t.tags, cluster, uid)) {
            elb.delete_target_group(&tg.arn).await?;
            info!(name = %tg.name, "Deleted target group");
        }
        Ok(())
    }
}

#[async_trait]
impl Provider for AwsProvider {
    fn name(&self) -> &'static str {
        "aws"
    }

    fn needs_node_ports(&self) -> bool {
        true
    }

    /// ip targets are the Service's ready pods.
    fn needs_endpoints(&self, lb: &DesiredLoadBalancer) -> bool {
        annotations::target_type_of(&lb.annotations) == Some(annotations::TargetType::Ip)
    }

    fn may_need_endpoints(&self) -> bool {
        true
    }

    fn annotations(&self) -> crate::AnnotationSupport {
        ANNOTATIONS
    }

    fn validate(&self, lb: &DesiredLoadBalancer) -> Result<(), ProviderError> {
        Self::plan(lb).map(|_| ())
    }

    #[instrument(skip_all, fields(id = %lb.id, service = %format_args!("{}/{}", lb.service.namespace, lb.service.name)))]
    async fn ensure(&self, lb: &DesiredLoadBalancer) -> Result<LoadBalancerStatus, ProviderError> {
        let p = Self::plan(lb)?;
        for key in lb
            .annotations
            .keys()
            .filter(|k| annotations::is_unsupported(k))
        {
            debug!(annotation = %key, "Annotation not implemented by berth's aws provider; ignored");
        }
        let c = self.clients().await?;
        let _in_use = c.sg.in_use.read().await;
        let uid = &lb.service.uid;
        let shape = shape(lb);
        let known = self.known.lock().ok().and_then(|k| k.get(uid).cloned());
        // Left its group (or moved to another) since berth last ensured it: its listeners
        // and target groups leave the shared NLB first. (Known only in this process: after
        // a restart they stay until the Service is deleted; see the README.)
        if let Some(k) = known
            .as_ref()
            .filter(|k| k.group.is_some() && k.group != p.settings.group)
        {
            let tgs: Vec<String> = k.groups.values().map(|(arn, _)| arn.clone()).collect();
            let old = k.group.as_deref().unwrap_or_default();
            info!(group = %old, "The Service left its load balancer group");
            self.leave_group(c, &lb.cluster, old, &tgs).await?;
            if let Ok(mut all) = self.known.lock() {
                all.remove(uid);
            }
        }
        let known =
            known.filter(|k| k.read_at.elapsed() < self.cfg.full_read_every && k.shape == shape);
        let result = match (known, p.settings.group.clone()) {
            (Some(k), _) => self.ensure_known(c, lb, &p, k).await,
            (None, Some(g)) => self.ensure_group(c, lb, &p, &g, shape).await,
            (None, None) => self.ensure_full(c, lb, &p, shape).await,
        };
        let mut all = self.known.lock().ok();
        match result {
            Ok((status, k)) => {
                if let Some(all) = all.as_mut() {
                    all.insert(uid.clone(), k);
                }
                Ok(status)
            }
            Err(e) => {
                // Read everything again next time.
                if let Some(all) = all.as_mut() {
                    all.remove(uid);
                }
                Err(e)
            }
        }
    }

    #[instrument(skip_all, fields(id = %lb.id))]
    async fn delete(&self, lb: &LoadBalancerRef) -> Result<(), ProviderError> {
        let c = self.clients().await?;
        let elb = &c.elb;
        let uid = &lb.service.uid;
        let known = self.known.lock().ok().and_then(|mut k| k.remove(uid));
        if let Some(Known {
            group: Some(g),
            groups,
            ..
        }) = known
        {
            // A member as berth last left it: its listeners and target groups are known.
            // (Its own security group, if it had one before joining, went when it joined.)
            let tgs: Vec<String> = groups.into_values().map(|(arn, _)| arn).collect();
            return self.leave_group(c, &lb.cluster, &g, &tgs).await;
        }
        let found = match Self::find_lbs(elb, &lb.id, &lb.cluster, uid).await {
            Ok(f) => f,
            // Someone else's load balancer with this name: nothing of ours to delete there.
            Err(ProviderError::Permanent(_)) => vec![],
            Err(e) => return Err(e),
        };
        let mut found = found;
        if let (true, Some(a)) = (found.is_empty(), &self.adopter) {
            found.extend(a.find_owned(elb, &lb.cluster, uid).await?);
        }
        for cur in &found {
            Self::delete_lb(elb, cur, &lb.cluster, uid).await?;
        }
        // No load balancer: target groups may be left behind (a crash between deleting the
        // load balancer and its target groups, or groups never attached); find them by tag.
        // (With a load balancer, unattached leftovers are found by the garbage collector's
        // next pass, which calls this again once the load balancer is gone.)
        let left: Vec<CurrentTg> = if found.is_empty() {
            elb.all_target_groups()
                .await?
                .into_iter()
                .filter(|t| owned_by(&t.tags, &lb.cluster, uid))
                .collect()
        } else {
            vec![]
        };
        // A group member's target groups go with their listeners on the shared NLB.
        let mut by_group: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for tg in &left {
            match tg.tags.get(plan::TAG_GROUP) {
                Some(g) => by_group.entry(g).or_default().push(tg.arn.clone()),
                None => {
                    elb.delete_target_group(&tg.arn).await?;
                    info!(name = %tg.name, "Deleted target group");
                }
            }
        }
        for (g, tgs) in by_group {
            self.leave_group(c, &lb.cluster, g, &tgs).await?;
        }
        // The security group last: AWS refuses to delete it while the NLB uses it.
        security_groups::delete_owned(&c.ec2, &lb.cluster, uid).await?;
        if found.is_empty() && left.is_empty() {
            debug!("Load balancer already absent");
        }
        Ok(())
    }

    #[instrument(skip(self))]
    async fn list_owned(&self, cluster: &str) -> Result<Vec<OwnedLoadBalancer>, ProviderError> {
        let c = self.clients().await?;
        let mut out: BTreeMap<String, OwnedLoadBalancer> = BTreeMap::new();
        let mut lbs = 0;
        let mut shared = Vec::new();
        for lb in c.elb.all_load_balancers().await? {
            if !plan::in_cluster(&lb.tags, cluster) {
                continue;
            }
            lbs += 1;
            if lb.tags.contains_key(plan::TAG_GROUP) {
                shared.push(lb);
                continue;
            }
            let id = lb
                .arn
                .rsplit('/')
                .nth(1)
                .map(str::to_string)
                .unwrap_or_default();
            if let Some(o) = OwnedLoadBalancer::from_labels(id, lb.tags) {
                out.entry(o.service.uid.clone()).or_insert(o);
            }
        }
        // Security groups whose load balancer is gone are orphans too.
        let (owned_sgs, shared_sgs) = security_groups::list_owned(&c.ec2, cluster).await?;
        for o in owned_sgs {
            out.entry(o.service.uid.clone()).or_insert(o);
        }
        if let Ok(mut seen) = self.shared_seen.lock() {
            seen.insert(
                cluster.to_string(),
                group::Seen {
                    nlbs: shared,
                    security_groups: shared_sgs,
                },
            );
        }
        if let Ok(mut seen) = self.none_seen.lock() {
            let streak = seen.entry(cluster.to_string()).or_default();
            *streak = if lbs == 0 {
                streak.saturating_add(1)
            } else {
                0
            };
        }
        // Target groups whose load balancer is gone are orphans too.
        for tg in c.elb.all_target_groups().await? {
            if !plan::in_cluster(&tg.tags, cluster) {
                continue;
            }
            let Some(id) = tg.tags.get(plan::TAG_LOAD_BALANCER).cloned() else {
                continue;
            };
            if let Some(o) = OwnedLoadBalancer::from_labels(id, tg.tags) {
                out.entry(o.service.uid.clone()).or_insert(o);
            }
        }
        Ok(out.into_values().collect())
    }

    /// The cluster's backend security group, once the cluster has had no NLB for two
    /// garbage-collection passes in a row: it is shared by all of them, so it outlives every
    /// Service until the last one goes (and a cluster whose first Services are being made
    /// does not lose it).
    #[instrument(skip(self))]
    async fn collect_shared(&self, cluster: &str) -> Result<usize, ProviderError> {
        let shared = self
            .shared_seen
            .lock()
            .ok()
            .and_then(|mut s| s.remove(cluster));
        let mut collected = 0;
        if let Some(seen) = shared {
            let c = self.clients().await?;
            collected += self.collect_empty_groups(c, cluster, seen).await?;
        }
        let streak = self
            .none_seen
            .lock()
            .ok()
            .and_then(|s| s.get(cluster).copied())
            .unwrap_or(0);
        if streak < 2 {
            return Ok(collected);
        }
        let c = self.clients().await?;
        let backends = security_groups::SgState::backend_groups(&c.ec2, cluster, None).await?;
        if backends.is_empty() {
            return Ok(collected);
        }
        // No ensure runs from here on; one that finished since list_owned made an NLB.
        let _no_ensure = c.sg.in_use.write().await;
        let left = c
            .elb
            .all_load_balancers()
            .await?
            .iter()
            .filter(|lb| plan::in_cluster(&lb.tags, cluster))
            .count();
        if left > 0 {
            if let Ok(mut seen) = self.none_seen.lock() {
                seen.insert(cluster.to_string(), 0);
            }
            return Ok(collected);
        }
        for g in &backends {
            c.sg.delete_backend(&c.ec2, &g.id).await?;
        }
        Ok(collected + backends.len())
    }

    async fn plan_adoption(
        &self,
        lb: &DesiredLoadBalancer,
        from: crate::adopt::AdoptFrom,
    ) -> Result<crate::adopt::Adoption, ProviderError> {
        let p = Self::plan(lb)?;
        let c = self.clients().await?;
        let one_off;
        let adopter = match &self.adopter {
            Some(a) => a,
            None => {
                one_off = adopt::Adopter::new(vec![from], self.cfg.adopt_cluster_id.clone());
                match &one_off {
                    Some(a) => a,
                    None => {
                        return Ok(crate::adopt::Adoption::Refused(format!(
                            "the aws provider cannot take over load balancers made by {from}"
                        )));
                    }
                }
            }
        };
        adopter.plan(&c.elb, lb, &p, from).await
    }
}
