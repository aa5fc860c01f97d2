//! The allocator set: Service create / update / release around the allocators.

use super::alloc::{IpRange, PortAllocator, family_of, ip_error_text, other_family};
use super::defaults::{
    drop_type_dependent_fields, normalize_cluster_ips, patch_allocated_values, set_defaults,
    trim_for_dual_stack_downgrade, write_back,
};
use super::parse::parse;
use super::validation::{validate_cluster_ips_related, validate_service, validate_service_update};
use super::*;

/// Cluster configuration for Service allocation.
pub struct ServiceIpamConfig {
    /// Service CIDRs, primary first, e.g. `["10.96.0.0/12"]` or `["10.96.0.0/12", "fd00:10:96::/112"]`.
    pub cluster_ip_cidrs: Vec<String>,
    /// NodePort range, default `30000..=32767`.
    pub node_port_range: RangeInclusive<u16>,
}

impl Default for ServiceIpamConfig {
    fn default() -> Self {
        Self {
            cluster_ip_cidrs: vec!["10.96.0.0/12".into()],
            node_port_range: 30000..=32767,
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct State {
    ips: Vec<IpRange>,
    ports: PortAllocator,
}

/// Releases that only happen if the whole operation succeeds.
#[derive(Default)]
pub(super) struct Deferred {
    ports: Vec<i64>,
    ips: Vec<String>,
}

/// ClusterIP and NodePort allocators plus the Service create/update/delete logic.
#[derive(Debug, Clone)]
pub struct ServiceIpam {
    state: State,
}

impl ServiceIpam {
    /// Builds the allocators; fails on malformed CIDRs, two CIDRs of one family, or an empty port range.
    pub fn new(cfg: ServiceIpamConfig) -> Result<Self, String> {
        if cfg.cluster_ip_cidrs.is_empty() || cfg.cluster_ip_cidrs.len() > 2 {
            return Err("expected one or two service CIDRs".into());
        }
        let ips = cfg
            .cluster_ip_cidrs
            .iter()
            .map(|c| IpRange::new(c))
            .collect::<Result<Vec<_>, _>>()?;
        if ips.len() == 2 && ips[0].family == ips[1].family {
            return Err("the two service CIDRs must be of different IP families".into());
        }
        let ports = PortAllocator::new(&cfg.node_port_range)?;
        Ok(Self {
            state: State { ips, ports },
        })
    }

    /// Defaults, validates and allocates for a Service being created (the whole object; `metadata.name` is set).
    /// On error nothing stays allocated and `svc` is left untouched.
    pub fn create(&mut self, svc: &mut Value) -> Result<(), Vec<FieldError>> {
        let mut s = parse(svc)?;
        set_defaults(&mut s);
        normalize_cluster_ips(&mut s, None);
        let saved = self.state.clone();
        let result = self
            .allocate_create(&mut s)
            .and_then(|()| errs_to_result(validate_service(&s)));
        if result.is_err() {
            self.state = saved;
        } else {
            write_back(svc, &s);
        }
        result
    }

    /// For an update/patch: `old` is the stored Service, `new` the desired one. Carries allocations over,
    /// allocates what is newly needed, releases what is no longer needed — all or nothing.
    pub fn update(&mut self, old: &Value, new: &mut Value) -> Result<(), Vec<FieldError>> {
        let mut o = parse(old)?;
        set_defaults(&mut o);
        let mut n = parse(new)?;
        set_defaults(&mut n);
        patch_allocated_values(&mut n, &o);
        normalize_cluster_ips(&mut n, Some(&o));
        let saved = self.state.clone();
        let mut deferred = Deferred::default();
        let result = self
            .allocate_update(&mut n, &o, &mut deferred)
            .and_then(|()| {
                normalize_cluster_ips(&mut n, Some(&o));
                drop_type_dependent_fields(&mut n, &o);
                trim_for_dual_stack_downgrade(&mut n, &o);
                errs_to_result(validate_service_update(&n, &o))
            });
        match result {
            Ok(()) => {
                self.apply_deferred(deferred);
                write_back(new, &n);
                Ok(())
            }
            Err(e) => {
                self.state = saved;
                Err(e)
            }
        }
    }

    /// As [`ServiceIpam::create`] without keeping any allocation (for `dryRun=All`).
    pub fn dry_run_create(&self, svc: &mut Value) -> Result<(), Vec<FieldError>> {
        self.clone().create(svc)
    }

    /// As [`ServiceIpam::update`] without changing any allocation (for `dryRun=All`).
    pub fn dry_run_update(&self, old: &Value, new: &mut Value) -> Result<(), Vec<FieldError>> {
        self.clone().update(old, new)
    }

    /// The Service was deleted: release everything it held. Tolerates malformed objects.
    pub fn release(&mut self, svc: &Value) {
        let s = parse_lenient(svc);
        if s.needs_cluster_ip() && s.cluster_ips.first().is_none_or(|ip| ip != NONE) {
            for ip in &s.cluster_ips {
                self.release_ip(ip);
            }
        }
        for n in s.node_port_numbers() {
            self.state.ports.release(n);
        }
        if s.needs_health_check() && s.hc_node_port > 0 {
            self.state.ports.release(s.hc_node_port);
        }
    }

    /// Number of NodePorts (including healthCheckNodePorts) currently allocated.
    pub fn node_ports_in_use(&self) -> usize {
        self.state.ports.bits.used.len()
    }

    /// Number of NodePorts still free.
    pub fn node_ports_free(&self) -> usize {
        (self.state.ports.bits.max as usize).saturating_sub(self.node_ports_in_use())
    }

    /// Number of ClusterIPs allocated across all configured families.
    pub fn cluster_ips_in_use(&self) -> usize {
        self.state.ips.iter().map(|r| r.bits.used.len()).sum()
    }

    /// True if `port` is currently allocated.
    pub fn is_node_port_allocated(&self, port: u16) -> bool {
        self.state
            .ports
            .offset_of(i64::from(port))
            .is_some_and(|o| self.state.ports.bits.used.contains(&o))
    }

    /// True if the ClusterIP `ip` is currently allocated.
    pub fn is_cluster_ip_allocated(&self, ip: &str) -> bool {
        self.state
            .ips
            .iter()
            .any(|r| r.offset_of(ip).is_some_and(|o| r.bits.used.contains(&o)))
    }

    /// The configured service CIDRs, primary first.
    pub fn service_cidrs(&self) -> Vec<String> {
        self.state.ips.iter().map(IpRange::cidr_text).collect()
    }

    pub(super) fn primary_family(&self) -> &'static str {
        self.state.ips[0].family
    }

    pub(super) fn has_family(&self, fam: &str) -> bool {
        self.state.ips.iter().any(|r| r.family == fam)
    }

    pub(super) fn range_mut(&mut self, fam: &str) -> Option<&mut IpRange> {
        self.state.ips.iter_mut().find(|r| r.family == fam)
    }

    pub(super) fn release_ip(&mut self, ip: &str) {
        if let Some(r) = family_of(ip).and_then(|f| self.range_mut(f)) {
            r.release(ip);
        }
    }

    pub(super) fn apply_deferred(&mut self, d: Deferred) {
        for p in d.ports {
            self.state.ports.release(p);
        }
        for ip in d.ips {
            self.release_ip(&ip);
        }
    }

    // --- create -----------------------------------------------------------

    pub(super) fn allocate_create(&mut self, s: &mut Svc) -> Result<(), Vec<FieldError>> {
        self.init_ip_family_fields(s, None)?;
        self.alloc_cluster_ips(s)?;
        if s.needs_node_port() {
            self.init_node_ports(s)?;
        }
        if s.needs_health_check() {
            self.alloc_health_check_node_port(s)?;
        }
        Ok(())
    }

    /// Upstream `initIPFamilyFields`: default ipFamilyPolicy / ipFamilies against the cluster config.
    pub(super) fn init_ip_family_fields(
        &self,
        s: &mut Svc,
        old: Option<&Svc>,
    ) -> Result<(), Vec<FieldError>> {
        if s.is(TYPE_EXTERNAL_NAME) || old.is_some_and(|o| matching_prefer_dual_stack(s, o)) {
            return Ok(());
        }
        if s.policy.is_none() {
            s.policy = match old.and_then(|o| o.policy.clone()) {
                Some(p) => Some(p),
                None if s.cluster_ip == NONE && s.selector_empty() => Some(REQUIRE_DUAL.into()),
                None => Some(SINGLE_STACK.into()),
            };
        }
        errs_to_result(validate_cluster_ips_related(s))?;
        let mut errs = Vec::new();
        if let Some(old) = old {
            prepare_family_update(s, old, &mut errs);
        }
        self.check_single_stack_and_infer(s, &mut errs);
        errs_to_result(errs)?;
        if s.cluster_ip == NONE && s.selector_empty() {
            if s.families.is_empty() {
                s.families.push(self.primary_family().into());
            }
            if s.families.len() < 2 && s.policy.as_deref() != Some(SINGLE_STACK) {
                let other = other_family(&s.families[0]);
                s.families.push(other.into());
            }
            return Ok(());
        }
        self.check_families_configured(s)?;
        if s.families.is_empty() {
            s.families.push(self.primary_family().into());
        }
        if s.policy.as_deref() != Some(SINGLE_STACK)
            && s.families.len() == 1
            && self.state.ips.len() == 2
        {
            let other = other_family(&s.families[0]);
            s.families.push(other.into());
        }
        Ok(())
    }

    pub(super) fn check_single_stack_and_infer(&self, s: &mut Svc, errs: &mut Vec<FieldError>) {
        if s.policy.as_deref() == Some(SINGLE_STACK) {
            let detail = "must be 'RequireDualStack' or 'PreferDualStack' when multiple";
            if s.cluster_ips.len() == 2 {
                let msg = format!("{detail} cluster IPs are specified");
                errs.push(FieldError::invalid(
                    "spec.ipFamilyPolicy",
                    qopt(&s.policy),
                    &msg,
                ));
            }
            if s.families.len() == 2 {
                let msg = format!("{detail} IP families are specified");
                errs.push(FieldError::invalid(
                    "spec.ipFamilyPolicy",
                    qopt(&s.policy),
                    &msg,
                ));
            }
        }
        for i in 0..s.cluster_ips.len() {
            let ip = &s.cluster_ips[i];
            if ip == NONE {
                break;
            }
            let Some(fam) = family_of(ip) else { continue };
            if i >= s.families.len() {
                if self.has_family(fam) {
                    s.families.push(fam.into());
                } else {
                    let msg = format!("{fam} is not configured on this cluster");
                    errs.push(FieldError::invalid(
                        format!("spec.clusterIPs[{i}]"),
                        qlist(&s.cluster_ips),
                        &msg,
                    ));
                }
            }
        }
    }

    pub(super) fn check_families_configured(&self, s: &Svc) -> Result<(), Vec<FieldError>> {
        let mut errs = Vec::new();
        if s.policy.as_deref() == Some(REQUIRE_DUAL) && self.state.ips.len() < 2 {
            let msg = "this cluster is not configured for dual-stack services";
            errs.push(FieldError::invalid(
                "spec.ipFamilyPolicy",
                qopt(&s.policy),
                msg,
            ));
        }
        for (i, fam) in s.families.iter().enumerate() {
            if !self.has_family(fam) {
                errs.push(FieldError::invalid(
                    format!("spec.ipFamilies[{i}]"),
                    q(fam),
                    "not configured on this cluster",
                ));
            }
        }
        errs_to_result(errs)
    }

    /// Upstream `allocClusterIPs`: one IP per requested family, explicit ones honoured.
    pub(super) fn alloc_cluster_ips(&mut self, s: &mut Svc) -> Result<(), Vec<FieldError>> {
        if s.is(TYPE_EXTERNAL_NAME) || s.cluster_ips.first().is_some_and(|ip| ip == NONE) {
            return Ok(());
        }
        while s.cluster_ips.len() < s.families.len() {
            s.cluster_ips.push(String::new());
        }
        for i in 0..s.families.len() {
            self.alloc_ip_at(s, i)?;
        }
        if let Some(first) = s.cluster_ips.first() {
            s.cluster_ip = first.clone();
        }
        Ok(())
    }

    pub(super) fn alloc_ip_at(&mut self, s: &mut Svc, i: usize) -> Result<(), Vec<FieldError>> {
        let wants_reserved = s.name == "kubernetes" && s.namespace == "default";
        let requested = s.cluster_ips[i].clone();
        let listed = qlist(&s.cluster_ips);
        let fam = s.families[i].clone();
        let Some(range) = self.range_mut(&fam) else {
            return Err(vec![FieldError::internal(format!(
                "no allocator for IP family {fam}"
            ))]);
        };
        if requested.is_empty() {
            let ip = range.allocate_next(wants_reserved).map_err(|e| {
                vec![FieldError::internal(format!(
                    "failed to allocate a serviceIP: {}",
                    ip_error_text(&e)
                ))]
            })?;
            s.cluster_ips[i] = ip;
            return Ok(());
        }
        range.allocate(&requested).map_err(|e| {
            let detail = format!("failed to allocate IP {requested}: {}", ip_error_text(&e));
            vec![FieldError::invalid("spec.clusterIPs", listed, &detail)]
        })
    }

    /// Upstream `initNodePorts`: the same port number shares one NodePort across protocols.
    pub(super) fn init_node_ports(&mut self, s: &mut Svc) -> Result<(), Vec<FieldError>> {
        let allocate_new = s.should_allocate_node_ports();
        let mut by_port: HashMap<i64, i64> = HashMap::new();
        for i in 0..s.ports.len() {
            let (port, node_port) = (s.ports[i].port, s.ports[i].node_port);
            if node_port == 0 && !allocate_new {
                continue;
            }
            match by_port.get(&port).copied() {
                None => {
                    let requested = s
                        .ports
                        .iter()
                        .find(|p| p.port == port && p.node_port != 0)
                        .map(|p| p.node_port);
                    let np = match requested {
                        Some(np) => {
                            self.allocate_port(np, i)?;
                            np
                        }
                        None => self.next_port("failed to allocate a nodePort")?,
                    };
                    s.ports[i].node_port = np;
                    by_port.insert(port, np);
                }
                Some(shared) if node_port == 0 => s.ports[i].node_port = shared,
                Some(shared) if node_port != shared => self.allocate_port(node_port, i)?,
                Some(_) => {}
            }
        }
        Ok(())
    }

    pub(super) fn allocate_port(&mut self, np: i64, i: usize) -> Result<(), Vec<FieldError>> {
        self.state.ports.allocate(np).map_err(|e| {
            let detail = self.state.ports.port_error_text(&e);
            vec![FieldError::invalid(
                format!("spec.ports[{i}].nodePort"),
                np.to_string(),
                &detail,
            )]
        })
    }

    pub(super) fn next_port(&mut self, what: &str) -> Result<i64, Vec<FieldError>> {
        self.state.ports.allocate_next().map_err(|e| {
            vec![FieldError::internal(format!(
                "{what}: {}",
                self.state.ports.port_error_text(&e)
            ))]
        })
    }

    /// Upstream `allocHealthCheckNodePort` (failures are 500s upstream, even for explicit values).
    pub(super) fn alloc_health_check_node_port(
        &mut self,
        s: &mut Svc,
    ) -> Result<(), Vec<FieldError>> {
        if s.hc_node_port != 0 {
            let hc = s.hc_node_port;
            return self.state.ports.allocate(hc).map_err(|e| {
                let text = self.state.ports.port_error_text(&e);
                vec![FieldError::internal(format!(
                    "failed to allocate requested HealthCheck NodePort {hc}: {text}"
                ))]
            });
        }
        s.hc_node_port = self.next_port("failed to allocate a HealthCheck NodePort 0")?;
        Ok(())
    }

    // --- update -----------------------------------------------------------

    pub(super) fn allocate_update(
        &mut self,
        n: &mut Svc,
        o: &Svc,
        d: &mut Deferred,
    ) -> Result<(), Vec<FieldError>> {
        self.init_ip_family_fields(n, Some(o))?;
        self.update_cluster_ips(n, o, d)?;
        if o.needs_node_port() && !n.needs_node_port() {
            d.ports.extend(o.node_port_numbers());
        }
        if n.needs_node_port() {
            self.update_node_ports(n, o, d)?;
        }
        match (o.needs_health_check(), n.needs_health_check()) {
            (false, true) => self.alloc_health_check_node_port(n)?,
            (true, false) => d.ports.push(o.hc_node_port),
            _ => {}
        }
        Ok(())
    }

    /// Upstream `updateClusterIPs`: type changes to/from ExternalName and dual-stack up/downgrades.
    pub(super) fn update_cluster_ips(
        &mut self,
        n: &mut Svc,
        o: &Svc,
        d: &mut Deferred,
    ) -> Result<(), Vec<FieldError>> {
        if matching_prefer_dual_stack(n, o) {
            return Ok(());
        }
        if o.is(TYPE_EXTERNAL_NAME) && !n.is(TYPE_EXTERNAL_NAME) {
            return self.alloc_cluster_ips(n);
        }
        if o.cluster_ips.first().is_some_and(|ip| ip == NONE) {
            return Ok(());
        }
        if !o.is(TYPE_EXTERNAL_NAME) && n.is(TYPE_EXTERNAL_NAME) {
            d.ips.extend(o.cluster_ips.iter().cloned());
            return Ok(());
        }
        if o.families.len() == 1 && n.families.len() == 2 {
            if n.cluster_ips.len() < 2 {
                n.cluster_ips.push(String::new());
            }
            return self.alloc_ip_at(n, 1);
        }
        if o.families.len() == 2 && n.families.len() == 1 {
            d.ips.extend(o.cluster_ips.get(1).cloned());
        }
        Ok(())
    }

    /// Upstream `updateNodePorts`: keep what the old object held, allocate the rest, release the gone.
    pub(super) fn update_node_ports(
        &mut self,
        n: &mut Svc,
        o: &Svc,
        d: &mut Deferred,
    ) -> Result<(), Vec<FieldError>> {
        let old_numbers = o.node_port_numbers();
        let allocate_new = n.should_allocate_node_ports();
        let mut taken: HashSet<i64> = HashSet::new();
        let mut seen: Vec<(String, i64)> = Vec::new();
        for i in 0..n.ports.len() {
            let np = n.ports[i].node_port;
            if np == 0 && !allocate_new {
                continue;
            }
            if np != 0 {
                if !old_numbers.contains(&np) && !taken.contains(&np) {
                    self.allocate_port(np, i)?;
                    taken.insert(np);
                }
            } else {
                n.ports[i].node_port = self.next_port("failed to allocate a nodePort")?;
            }
            let key = (n.ports[i].protocol.clone(), n.ports[i].node_port);
            if seen.contains(&key) {
                return Err(vec![FieldError::internal(format!(
                    "duplicate nodePort: {{{} {}}}",
                    key.0, key.1
                ))]);
            }
            seen.push(key);
        }
        let new_numbers = n.node_port_numbers();
        d.ports
            .extend(old_numbers.into_iter().filter(|p| !new_numbers.contains(p)));
        Ok(())
    }
}

pub(super) fn errs_to_result(errs: Vec<FieldError>) -> Result<(), Vec<FieldError>> {
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}

/// Upstream `isMatchingPreferDualStackClusterIPFields`: a PreferDualStack Service whose
/// IP fields did not change is left alone even if the cluster's dual-stackness changed.
pub(super) fn matching_prefer_dual_stack(n: &Svc, o: &Svc) -> bool {
    n.policy.is_some()
        && o.ty == n.ty
        && n.needs_cluster_ip()
        && n.policy.as_deref() == Some(PREFER_DUAL)
        && o.policy.as_deref().is_none_or(|p| p == PREFER_DUAL)
        && o.cluster_ips == n.cluster_ips
        && o.families == n.families
}

/// Update-only part of `initIPFamilyFields`: SingleStack trims, other policies may not shrink.
pub(super) fn prepare_family_update(s: &mut Svc, old: &Svc, errs: &mut Vec<FieldError>) {
    if s.policy.as_deref() == Some(SINGLE_STACK) {
        if old.cluster_ips == s.cluster_ips {
            s.cluster_ips.truncate(1);
        }
        if old.families == s.families {
            s.families.truncate(1);
        }
        return;
    }
    if !s.cluster_ips.is_empty() && s.cluster_ips.len() < old.cluster_ips.len() {
        let msg = "must be 'SingleStack' to release the secondary cluster IP";
        errs.push(FieldError::invalid(
            "spec.ipFamilyPolicy",
            qopt(&s.policy),
            msg,
        ));
    }
    if !s.families.is_empty() && s.families.len() < old.families.len() {
        let msg = "must be 'SingleStack' to release the secondary IP family";
        errs.push(FieldError::invalid(
            "spec.ipFamilyPolicy",
            qopt(&s.policy),
            msg,
        ));
    }
}

/// Best-effort extraction for `release`: keeps whatever parses.
pub(super) fn parse_lenient(v: &Value) -> Svc {
    if let Ok(s) = parse(v) {
        return s;
    }
    let spec = v.get("spec");
    let str_at = |k: &str| {
        spec.and_then(|s| s.get(k))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let ports = spec
        .and_then(|s| s.get("ports"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    Svc {
        ty: str_at("type"),
        etp: str_at("externalTrafficPolicy"),
        cluster_ips: spec
            .and_then(|s| s.get("clusterIPs"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
        hc_node_port: spec
            .and_then(|s| s.get("healthCheckNodePort"))
            .and_then(Value::as_i64)
            .unwrap_or(0),
        ports: ports
            .iter()
            .filter_map(|p| p.get("nodePort").and_then(Value::as_i64))
            .map(|np| Port {
                name: String::new(),
                protocol: String::new(),
                port: 0,
                target: TargetPort::Int(0),
                node_port: np,
                app_protocol: None,
            })
            .collect(),
        ..Svc::default()
    }
}
