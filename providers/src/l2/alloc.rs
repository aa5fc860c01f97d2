//! The IP allocator: which address each Service gets from which pool. Pure: no API client,
//! no clock; the controller feeds it pools, namespace labels and Service facts.
//!
//! Rules (MetalLB's, plus berth's messages):
//! * A Service keeps the addresses it has while they stay valid (in a pool that still
//!   serves it, compatible with whoever shares them).
//! * Requested addresses (`berth.io/load-balancer-ips` or `spec.loadBalancerIP`) are
//!   honoured when inside a pool that serves the Service, else refused naming the field.
//! * `berth.io/address-pool` names the pool (auto-assign off does not matter then).
//! * Otherwise: auto-assign pools that serve the Service, positive priorities first
//!   (ascending), then by name; the first with a free address for every family wins.
//! * Sharing: Services with the same `berth.io/allow-shared-ip` key may share an address
//!   when their ports (port + protocol) do not overlap and, for
//!   `externalTrafficPolicy: Local`, they select the same pods. A Service with a key
//!   prefers an address its key already uses.
//! * One address per family; dual-stack Services get both from the same pool.

use super::pool::{Pool, PoolSpec, family_of, from_int, is_buggy, to_int};
use crate::error::ProviderError;
use crate::types::{IpFamily, Protocol};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

/// Annotation: the pool to allocate from.
pub const POOL_ANNOTATION: &str = "berth.io/address-pool";
/// Annotation: Services with the same value may share an address.
pub const SHARING_ANNOTATION: &str = "berth.io/allow-shared-ip";

fn ann_field(key: &str) -> String {
    format!("metadata.annotations[{key}]")
}

/// What the allocator needs to know about one Service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllocRequest {
    /// `metadata.uid`: assignments are keyed by it.
    pub uid: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name` (for messages).
    pub name: String,
    /// The Service's labels (for pools' `serviceSelectors`).
    pub service_labels: BTreeMap<String, String>,
    /// Its namespace's labels (for pools' `namespaceSelectors`).
    pub namespace_labels: BTreeMap<String, String>,
    /// Requested addresses; empty: any.
    pub requested: Vec<IpAddr>,
    /// The field the requested addresses came from, for errors.
    pub requested_field: String,
    /// `berth.io/address-pool`.
    pub pool: Option<String>,
    /// `berth.io/allow-shared-ip`.
    pub sharing_key: Option<String>,
    /// The Service's ports.
    pub ports: Vec<(u16, Protocol)>,
    /// `spec.ipFamilies`; empty: one address of whichever family the pool offers (IPv4 first).
    pub families: Vec<IpFamily>,
    /// `Some(spec.selector)` for `externalTrafficPolicy: Local`, `None` for `Cluster`.
    pub local_selector: Option<BTreeMap<String, String>>,
}

impl AllocRequest {
    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Services sharing an address must agree on this: `None` for Cluster, the selector for
    /// Local.
    fn backend(&self) -> Option<String> {
        self.local_selector.as_ref().map(|s| {
            s.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
    }
}

/// One Service's addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The pool they came from.
    pub pool: String,
    /// One per family, in the Service's family order.
    pub ips: Vec<IpAddr>,
    /// The request they satisfy (for re-checking when pools or labels change).
    pub request: AllocRequest,
}

/// Per-pool counts, for the IPAddressPool status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub assigned_ipv4: u64,
    pub assigned_ipv6: u64,
    pub available_ipv4: u64,
    pub available_ipv6: u64,
}

/// The outcome of [`Allocator::set_pools`] for one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolResult {
    pub name: String,
    /// `Err` when the pool is unusable (its addresses keep no Service).
    pub result: Result<(), String>,
}

#[derive(Debug, Default)]
struct IpUse {
    pool: String,
    /// uid → (sharing key, ports, backend).
    users: BTreeMap<String, Sharing>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Sharing {
    key: Option<String>,
    ports: Vec<(u16, Protocol)>,
    backend: Option<String>,
    service: String,
}

impl Sharing {
    fn of(req: &AllocRequest) -> Self {
        Sharing {
            key: req.sharing_key.clone(),
            ports: req.ports.clone(),
            backend: req.backend(),
            service: req.key(),
        }
    }

    /// Why `self` may not share an address with `other`, if it may not.
    fn conflict(&self, other: &Sharing) -> Option<String> {
        let (Some(a), Some(b)) = (&self.key, &other.key) else {
            return Some(format!(
                "it is used by Service {} and sharing needs the same {SHARING_ANNOTATION} key on both",
                other.service
            ));
        };
        if a != b {
            return Some(format!(
                "it is used by Service {} with a different {SHARING_ANNOTATION} key ({b:?}, not {a:?})",
                other.service
            ));
        }
        if let Some((port, proto)) = self.ports.iter().find(|p| other.ports.contains(p)) {
            return Some(format!(
                "it is used by Service {} (sharing key {a:?}) on the same port {port}/{proto}",
                other.service
            ));
        }
        if self.backend != other.backend {
            return Some(format!(
                "it is used by Service {} (sharing key {a:?}) and Services sharing an address with externalTrafficPolicy: Local must both be Local and select the same pods",
                other.service
            ));
        }
        None
    }
}

/// Assignments of addresses from pools to Services.
#[derive(Debug, Default)]
pub struct Allocator {
    /// Valid pools, by name.
    pools: BTreeMap<String, Pool>,
    /// Pool names in preference order (priority, then name).
    order: Vec<String>,
    services: HashMap<String, Assignment>,
    ips: HashMap<IpAddr, IpUse>,
    /// Sharing key → addresses it uses.
    by_key: HashMap<String, BTreeSet<IpAddr>>,
}

impl Allocator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the pools. `specs` in precedence order (oldest first): a pool overlapping an
    /// earlier one is rejected, as is one that does not parse; the others work. Returns one
    /// result per spec, and the uids whose current assignment is no longer valid (they
    /// keep their addresses until re-assigned).
    pub fn set_pools(&mut self, specs: &[PoolSpec]) -> (Vec<PoolResult>, Vec<String>) {
        let mut pools: BTreeMap<String, Pool> = BTreeMap::new();
        let mut results = Vec::new();
        for spec in specs {
            let res = Pool::parse(spec).and_then(|p| {
                if pools.contains_key(&p.name) {
                    return Err(format!("another pool is named {:?}", p.name));
                }
                if let Some((other, (a, b))) = pools
                    .values()
                    .find_map(|o| p.overlap_with(o).map(|x| (o, x)))
                {
                    return Err(format!(
                        "its range {a} overlaps {b} of pool {}; an address may belong to one pool only",
                        other.name
                    ));
                }
                Ok(p)
            });
            results.push(PoolResult {
                name: spec.name.clone(),
                result: res.map(|p| {
                    // Keep the cursor of an unchanged pool.
                    let p = match self.pools.get(&p.name) {
                        Some(old) if old.ranges == p.ranges => Pool {
                            cursors: old.cursors.clone(),
                            ..p
                        },
                        _ => p,
                    };
                    pools.insert(p.name.clone(), p);
                }),
            });
        }
        self.pools = pools;
        let mut order: Vec<&Pool> = self.pools.values().collect();
        order.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
        self.order = order.into_iter().map(|p| p.name.clone()).collect();
        // Re-home addresses whose pool changed name, and find broken assignments.
        for (ip, u) in self.ips.iter_mut() {
            if let Some(p) = self.pools.values().find(|p| p.contains(*ip)) {
                u.pool = p.name.clone();
            }
        }
        for a in self.services.values_mut() {
            if let Some(p) = a
                .ips
                .first()
                .and_then(|ip| self.pools.values().find(|p| p.contains(*ip)))
            {
                a.pool = p.name.clone();
            }
        }
        (results, self.invalid_assignments())
    }

    /// Uids whose assignment breaks a rule under the current pools and labels.
    pub fn invalid_assignments(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .services
            .iter()
            .filter(|(_, a)| self.check_pool(&a.request, &a.ips).is_err())
            .map(|(uid, _)| uid.clone())
            .collect();
        out.sort();
        out
    }

    /// Sets the labels of `namespace` on every assignment in it; returns the uids whose
    /// assignment is no longer valid.
    pub fn set_namespace_labels(
        &mut self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Vec<String> {
        let mut broken = Vec::new();
        for (uid, a) in self.services.iter_mut() {
            if a.request.namespace == namespace && a.request.namespace_labels != *labels {
                a.request.namespace_labels = labels.clone();
                broken.push(uid.clone());
            }
        }
        broken.retain(|uid| {
            let a = &self.services[uid];
            self.check_pool(&a.request, &a.ips).is_err()
        });
        broken.sort();
        broken
    }

    /// The addresses of the Service `uid`.
    pub fn assignment(&self, uid: &str) -> Option<&Assignment> {
        self.services.get(uid)
    }

    /// Every assignment, by uid.
    pub fn assignments(&self) -> impl Iterator<Item = (&String, &Assignment)> {
        self.services.iter()
    }

    /// Allocates (or keeps) addresses for `req`: one per family.
    pub fn assign(&mut self, req: &AllocRequest) -> Result<Assignment, ProviderError> {
        let old = self.take_out(&req.uid);
        let res = self.choose(req, old.as_ref());
        match res {
            Ok((pool, ips)) => {
                self.put(req, &pool, &ips);
                Ok(self.services[&req.uid].clone())
            }
            Err(e) => {
                if let Some(old) = old {
                    // Keep what the Service had: its status still shows it.
                    let r = old.request.clone();
                    self.put(&r, &old.pool, &old.ips);
                }
                Err(e)
            }
        }
    }

    /// Takes `ips` (a Service's published addresses) for `req` at start-up, before anything
    /// new is allocated, so addresses are stable across restarts.
    pub fn restore(&mut self, req: &AllocRequest, ips: &[IpAddr]) -> Result<(), ProviderError> {
        if ips.is_empty() {
            return Err(ProviderError::invalid(
                "status.loadBalancer.ingress",
                "no address to restore",
            ));
        }
        let old = self.take_out(&req.uid);
        let mut r = req.clone();
        r.requested = ips.to_vec();
        r.requested_field = "status.loadBalancer.ingress".into();
        match self.take_requested(&r) {
            Ok((pool, ips)) => {
                self.put(req, &pool, &ips);
                Ok(())
            }
            Err(e) => {
                if let Some(old) = old {
                    let r = old.request.clone();
                    self.put(&r, &old.pool, &old.ips);
                }
                Err(e)
            }
        }
    }

    /// Frees the Service's addresses (shared ones stay with their other users).
    pub fn release(&mut self, uid: &str) -> Option<Assignment> {
        self.take_out(uid)
    }

    /// Counts per valid pool.
    pub fn stats(&self) -> BTreeMap<String, PoolStats> {
        let mut used: HashMap<&str, (u64, u64)> = HashMap::new();
        for (ip, u) in &self.ips {
            let e = used.entry(u.pool.as_str()).or_default();
            match ip {
                IpAddr::V4(_) => e.0 += 1,
                IpAddr::V6(_) => e.1 += 1,
            }
        }
        self.pools
            .values()
            .map(|p| {
                let (a4, a6) = used.get(p.name.as_str()).copied().unwrap_or_default();
                let cap = |n: u128| u64::try_from(n).unwrap_or(u64::MAX);
                (
                    p.name.clone(),
                    PoolStats {
                        assigned_ipv4: a4,
                        assigned_ipv6: a6,
                        available_ipv4: cap(p.size(IpFamily::IPv4)).saturating_sub(a4),
                        available_ipv6: cap(p.size(IpFamily::IPv6)).saturating_sub(a6),
                    },
                )
            })
            .collect()
    }

    // --- internals ---------------------------------------------------------------------

    fn take_out(&mut self, uid: &str) -> Option<Assignment> {
        let a = self.services.remove(uid)?;
        for ip in &a.ips {
            let gone = match self.ips.get_mut(ip) {
                Some(u) => {
                    u.users.remove(uid);
                    u.users.is_empty()
                }
                None => false,
            };
            if gone {
                self.ips.remove(ip);
                if let Some(p) = self.pools.values_mut().find(|p| p.contains(*ip))
                    && let Some(i) = p.range_of(*ip)
                {
                    let n = to_int(*ip).1;
                    p.cursors[i] = p.cursors[i].min(n);
                }
            }
            if let Some(k) = &a.request.sharing_key {
                let still = self.ips.get(ip).is_some_and(|u| {
                    u.users
                        .values()
                        .any(|s| s.key.as_deref() == Some(k.as_str()))
                });
                if !still && let Some(set) = self.by_key.get_mut(k) {
                    set.remove(ip);
                    if set.is_empty() {
                        self.by_key.remove(k);
                    }
                }
            }
        }
        Some(a)
    }

    fn put(&mut self, req: &AllocRequest, pool: &str, ips: &[IpAddr]) {
        let sharing = Sharing::of(req);
        for ip in ips {
            let u = self.ips.entry(*ip).or_insert_with(|| IpUse {
                pool: pool.to_string(),
                users: BTreeMap::new(),
            });
            u.users.insert(req.uid.clone(), sharing.clone());
            if let Some(k) = &req.sharing_key {
                self.by_key.entry(k.clone()).or_default().insert(*ip);
            }
        }
        self.services.insert(
            req.uid.clone(),
            Assignment {
                pool: pool.to_string(),
                ips: ips.to_vec(),
                request: req.clone(),
            },
        );
    }

    /// The families to allocate: the Service's, or those of its requested addresses.
    fn families(&self, req: &AllocRequest) -> Result<Vec<IpFamily>, ProviderError> {
        if req.requested.is_empty() {
            return Ok(req.families.clone());
        }
        let fams: Vec<IpFamily> = req.requested.iter().map(|ip| family_of(*ip)).collect();
        let distinct: BTreeSet<IpFamily> = fams.iter().copied().collect();
        if distinct.len() != fams.len() {
            return Err(ProviderError::invalid(
                &req.requested_field,
                "give at most one address per IP family",
            ));
        }
        let wanted: BTreeSet<IpFamily> = req.families.iter().copied().collect();
        if !req.families.is_empty() && distinct != wanted {
            return Err(ProviderError::invalid(
                &req.requested_field,
                format!(
                    "the requested addresses are {} but spec.ipFamilies is {}; give one address per family",
                    fam_list(&fams),
                    fam_list(&req.families)
                ),
            ));
        }
        Ok(fams)
    }

    fn choose(
        &mut self,
        req: &AllocRequest,
        old: Option<&Assignment>,
    ) -> Result<(String, Vec<IpAddr>), ProviderError> {
        let families = self.families(req)?;
        if !req.requested.is_empty() {
            return self.take_requested(req);
        }
        // Keep what the Service has while it stays valid for this request.
        if let Some(old) = old {
            let same_families = if families.is_empty() {
                old.ips.len() == 1
            } else {
                old.ips.iter().map(|ip| family_of(*ip)).collect::<Vec<_>>() == families
            };
            let same_pool = req.pool.as_ref().is_none_or(|p| *p == old.pool);
            if same_families
                && same_pool
                && self.check_pool(req, &old.ips).is_ok()
                && self.check_sharing(req, &old.ips).is_ok()
            {
                return Ok((old.pool.clone(), old.ips.clone()));
            }
        }
        if let Some(name) = &req.pool {
            let field = ann_field(POOL_ANNOTATION);
            let Some(pool) = self.pools.get(name) else {
                return Err(ProviderError::invalid(
                    field,
                    format!("no pool named {name:?}; pools: {}", self.pool_names()),
                ));
            };
            pool.allows(&req.namespace, &req.namespace_labels, &req.service_labels)
                .map_err(|e| ProviderError::invalid(&field, e))?;
            return self
                .allocate_from(name, req, &families)
                .map(|ips| (name.clone(), ips))
                .map_err(|why| ProviderError::invalid(format!("IPAddressPool/{name}"), why));
        }
        let candidates: Vec<String> = self
            .order
            .iter()
            .filter(|n| {
                let p = &self.pools[*n];
                p.auto_assign
                    && p.allows(&req.namespace, &req.namespace_labels, &req.service_labels)
                        .is_ok()
            })
            .cloned()
            .collect();
        if candidates.is_empty() {
            return Err(ProviderError::invalid(
                "spec.loadBalancerClass",
                if self.pools.is_empty() {
                    "no IPAddressPool exists (or none is valid); create one to get an address"
                        .to_string()
                } else {
                    format!(
                        "no auto-assign IPAddressPool serves namespace {:?} and this Service's labels; pools: {}; name one with {POOL_ANNOTATION} or request an address",
                        req.namespace,
                        self.pool_names()
                    )
                },
            ));
        }
        let mut why: Vec<(String, String)> = Vec::new();
        for name in &candidates {
            match self.allocate_from(name, req, &families) {
                Ok(ips) => return Ok((name.clone(), ips)),
                Err(e) => why.push((name.clone(), e)),
            }
        }
        if let [(name, e)] = why.as_slice() {
            return Err(ProviderError::invalid(format!("IPAddressPool/{name}"), e));
        }
        let all: Vec<String> = why.iter().map(|(n, e)| format!("{n}: {e}")).collect();
        Err(ProviderError::invalid("IPAddressPool", all.join("; ")))
    }

    fn pool_names(&self) -> String {
        if self.pools.is_empty() {
            return "none".into();
        }
        self.order.join(", ")
    }

    /// Checks the requested addresses and returns their pool.
    fn take_requested(&self, req: &AllocRequest) -> Result<(String, Vec<IpAddr>), ProviderError> {
        self.families(req)?;
        let field = &req.requested_field;
        let mut pool_name: Option<String> = None;
        for ip in &req.requested {
            let Some(pool) = self.pools.values().find(|p| p.contains(*ip)) else {
                let listing: Vec<String> = self
                    .order
                    .iter()
                    .map(|n| self.pools[n].describe())
                    .collect();
                return Err(ProviderError::invalid(
                    field,
                    format!(
                        "{ip} is not in any pool; pools: {}",
                        if listing.is_empty() {
                            "none".to_string()
                        } else {
                            listing.join(", ")
                        }
                    ),
                ));
            };
            if let Some(p) = &req.pool
                && *p != pool.name
            {
                return Err(ProviderError::invalid(
                    field,
                    format!(
                        "{ip} is in pool {} but {POOL_ANNOTATION} asks for pool {p}",
                        pool.name
                    ),
                ));
            }
            if let Some(other) = &pool_name
                && *other != pool.name
            {
                return Err(ProviderError::invalid(
                    field,
                    format!(
                        "the addresses come from two pools ({other} and {}); give addresses of one pool",
                        pool.name
                    ),
                ));
            }
            if pool.avoid_buggy_ips && is_buggy(family_of(*ip), to_int(*ip).1) {
                return Err(ProviderError::invalid(
                    field,
                    format!(
                        "{ip} ends in .0 or .255, which pool {} avoids (avoidBuggyIPs)",
                        pool.name
                    ),
                ));
            }
            pool.allows(&req.namespace, &req.namespace_labels, &req.service_labels)
                .map_err(|e| ProviderError::invalid(field, format!("{ip}: {e}")))?;
            pool_name = Some(pool.name.clone());
        }
        self.check_sharing(req, &req.requested)
            .map_err(|e| ProviderError::invalid(field, e))?;
        Ok((pool_name.unwrap_or_default(), req.requested.clone()))
    }

    /// Whether `ips` are in one pool that serves `req`.
    fn check_pool(&self, req: &AllocRequest, ips: &[IpAddr]) -> Result<(), String> {
        let mut name: Option<&str> = None;
        for ip in ips {
            let pool = self
                .pools
                .values()
                .find(|p| p.contains(*ip))
                .ok_or_else(|| format!("{ip} is not in any pool"))?;
            if name.is_some_and(|n| n != pool.name) {
                return Err("addresses from two pools".into());
            }
            name = Some(&pool.name);
            if pool.avoid_buggy_ips && is_buggy(family_of(*ip), to_int(*ip).1) {
                return Err(format!("{ip} is avoided by pool {}", pool.name));
            }
            pool.allows(&req.namespace, &req.namespace_labels, &req.service_labels)?;
        }
        Ok(())
    }

    /// Whether `req` may use `ips` alongside their current users.
    fn check_sharing(&self, req: &AllocRequest, ips: &[IpAddr]) -> Result<(), String> {
        let me = Sharing::of(req);
        for ip in ips {
            if let Some(u) = self.ips.get(ip) {
                for (uid, s) in &u.users {
                    if *uid == req.uid {
                        continue;
                    }
                    if let Some(why) = me.conflict(s) {
                        return Err(format!("{ip} cannot be shared: {why}"));
                    }
                }
            }
        }
        Ok(())
    }

    /// One address per family from pool `name`, or why not.
    fn allocate_from(
        &mut self,
        name: &str,
        req: &AllocRequest,
        families: &[IpFamily],
    ) -> Result<Vec<IpAddr>, String> {
        let families: Vec<IpFamily> = if families.is_empty() {
            let p = &self.pools[name];
            match [IpFamily::IPv4, IpFamily::IPv6]
                .into_iter()
                .find(|f| p.has_family(*f))
            {
                Some(f) => vec![f],
                None => return Err("the pool has no addresses".into()),
            }
        } else {
            families.to_vec()
        };
        let mut out = Vec::new();
        for f in families {
            if !self.pools[name].has_family(f) {
                return Err(format!("the pool has no {} addresses", fam_name(f)));
            }
            let ip = self
                .shared_candidate(name, req, f)
                .or_else(|| self.free_address(name, f))
                .ok_or_else(|| {
                    let size = self.pools[name].size(f);
                    format!(
                        "no free {} address left ({size} of {size} assigned); free one or add addresses to the pool",
                        fam_name(f)
                    )
                })?;
            out.push(ip);
        }
        Ok(out)
    }

    /// An address of `family` in pool `name` already used by the request's sharing key and
    /// compatible with all its users.
    fn shared_candidate(&self, name: &str, req: &AllocRequest, family: IpFamily) -> Option<IpAddr> {
        let key = req.sharing_key.as_ref()?;
        let pool = &self.pools[name];
        self.by_key.get(key)?.iter().copied().find(|ip| {
            family_of(*ip) == family
                && pool.contains(*ip)
                && self.check_sharing(req, std::slice::from_ref(ip)).is_ok()
        })
    }

    /// The lowest free address of `family` in pool `name` (first fit).
    fn free_address(&mut self, name: &str, family: IpFamily) -> Option<IpAddr> {
        let ips = &self.ips;
        let pool = self.pools.get_mut(name)?;
        let avoid = pool.avoid_buggy_ips;
        for (i, r) in pool.ranges.iter().enumerate() {
            if r.family != family {
                continue;
            }
            let mut n = pool.cursors[i].max(r.first);
            loop {
                if n > r.last {
                    pool.cursors[i] = n;
                    break;
                }
                let ip = from_int(family, n);
                if (!avoid || !is_buggy(family, n)) && !ips.contains_key(&ip) {
                    // Everything before n is taken (or avoided).
                    pool.cursors[i] = n;
                    return Some(ip);
                }
                if n == u128::MAX {
                    pool.cursors[i] = n;
                    break;
                }
                n += 1;
            }
        }
        None
    }
}

fn fam_name(f: IpFamily) -> &'static str {
    match f {
        IpFamily::IPv4 => "IPv4",
        IpFamily::IPv6 => "IPv6",
    }
}

fn fam_list(f: &[IpFamily]) -> String {
    format!(
        "[{}]",
        f.iter()
            .map(|f| fam_name(*f))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

#[cfg(test)]
#[path = "alloc_tests.rs"]
mod tests;
