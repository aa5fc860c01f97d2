//! The load balancer API of berth's `http` provider (docs/http-provider.openapi.yaml), with a
//! real data plane: every load balancer gets its own loopback VIP `127.{block}.200.N`, where
//! TCP and UDP listeners proxy to healthy targets.
//!
//! Admin endpoints on the same listener (never faulted, never authenticated):
//! `GET/PUT /mock-cloud/v1/faults`, `GET /mock-cloud/v1/stats` and
//! `GET /mock-cloud/v1/audit[?after=SEQ]` (every PUT and DELETE with its bearer token).

pub mod affinity;
pub mod cidr;
pub mod dataplane;
pub mod health;
mod http;
pub mod spec;
pub mod vip;

use crate::faults::Faults;
use anyhow::Context;
use dataplane::DataPlane;
use serde::Serialize;
use serde_json::{Value, json};
use spec::{Spec, Target};
use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use vip::VipPool;

/// How to start the load balancer API.
#[derive(Debug, Clone)]
pub struct LbApiConfig {
    /// API address, e.g. `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// VIPs are `127.{ip_block}.200.1` to `127.{ip_block}.254.254`.
    pub ip_block: u8,
    /// When set, `/v1/*` requests need `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Multiplies health-check intervals and timeouts (1.0 = as specified).
    pub health_check_scale: f64,
    /// Serve traffic and run health checks (false: API only, every target reported
    /// healthy — for scale benchmarks that need no traffic).
    pub dataplane: bool,
}

impl Default for LbApiConfig {
    fn default() -> Self {
        LbApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ip_block: 0,
            token: None,
            health_check_scale: 1.0,
            dataplane: true,
        }
    }
}

/// Request counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LbStats {
    /// PUT requests handled (any outcome; not counting 401s and injected faults).
    pub puts: u64,
    /// PUTs that created or changed a load balancer.
    pub writes: u64,
    /// DELETE requests handled (any outcome).
    pub deletes: u64,
    /// DELETEs that removed a load balancer.
    pub deleted: u64,
    /// DELETE requests per load balancer id (any outcome).
    pub deletes_by_id: BTreeMap<String, u64>,
    /// Writes per load balancer id (kept after deletion).
    pub writes_by_id: BTreeMap<String, u64>,
    /// GETs of one load balancer.
    pub gets: u64,
    /// List requests.
    pub lists: u64,
    /// Requests answered 401.
    pub unauthorized: u64,
    /// Requests failed by fault injection.
    pub injected_errors: u64,
}

/// A digest of a set of target names, independent of their order (names are sorted and
/// repeated ones counted once): equal sets give equal digests, and different sets collide
/// with probability about 2^-64.
fn target_set_digest<'a>(names: impl Iterator<Item = &'a str>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut names: Vec<&str> = names.collect();
    names.sort_unstable();
    names.dedup();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    names.len().hash(&mut h);
    for n in names {
        n.hash(&mut h);
    }
    h.finish()
}

/// [`spec::list_digest`] of a stored list.
fn list_digest(targets: &[Target]) -> u64 {
    spec::list_digest(
        targets
            .iter()
            .map(|t| (t.name.as_str(), t.address.as_str())),
    )
}

/// A load balancer as `GET` and `PUT` return it, serialised straight from the stored entry
/// (no JSON value tree in between: at 1,000 targets that tree cost more than the write).
#[derive(Serialize)]
struct View<'a> {
    id: &'a str,
    /// Left out of a minimal answer (`Prefer: return=minimal`).
    #[serde(skip_serializing_if = "Option::is_none")]
    spec: Option<&'a Spec>,
    status: StatusView<'a>,
    etag: &'a str,
    generation: u64,
}

#[derive(Serialize)]
struct StatusView<'a> {
    addresses: [AddressView; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    targets: Option<HealthView<'a>>,
}

#[derive(Serialize)]
struct AddressView {
    ip: Ipv4Addr,
}

/// `status.targets`: the data plane's health checks, or (API-only mode) every target healthy.
enum HealthView<'a> {
    Checked(Vec<dataplane::TargetHealth>),
    AllHealthy(&'a [Target]),
}

impl Serialize for HealthView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        #[derive(Serialize)]
        struct One<'a> {
            name: &'a str,
            healthy: bool,
        }
        let mut seq = s.serialize_seq(None)?;
        match self {
            HealthView::Checked(v) => {
                for t in v {
                    seq.serialize_element(&One {
                        name: &t.name,
                        healthy: t.healthy,
                    })?;
                }
            }
            HealthView::AllHealthy(v) => {
                for t in v.iter() {
                    seq.serialize_element(&One {
                        name: &t.name,
                        healthy: true,
                    })?;
                }
            }
        }
        seq.end()
    }
}

/// What a response renders of one load balancer, taken from the state so that rendering
/// holds no lock.
struct Snapshot {
    spec: Arc<Spec>,
    etag: String,
    generation: u64,
    plane: Arc<DataPlane>,
}

impl Snapshot {
    fn of(e: &LbEntry) -> Snapshot {
        Snapshot {
            spec: e.spec.clone(),
            etag: e.etag.clone(),
            generation: e.generation,
            plane: e.plane.clone(),
        }
    }

    fn view<'a>(&'a self, id: &'a str, minimal: bool) -> View<'a> {
        let targets = (!minimal).then(|| {
            let checked = self.plane.target_health();
            if checked.is_empty() {
                HealthView::AllHealthy(&self.spec.targets)
            } else {
                HealthView::Checked(checked)
            }
        });
        View {
            id,
            spec: (!minimal).then_some(&*self.spec),
            status: StatusView {
                addresses: [AddressView { ip: self.plane.vip }],
                targets,
            },
            etag: &self.etag,
            generation: self.generation,
        }
    }

    /// The response body: the whole load balancer, or with `minimal` only its id, addresses,
    /// ETag and generation.
    fn render(&self, id: &str, minimal: bool) -> Vec<u8> {
        serde_json::to_vec(&self.view(id, minimal)).unwrap_or_default()
    }

    fn value(&self, id: &str) -> Value {
        serde_json::to_value(self.view(id, false)).unwrap_or_default()
    }
}

/// One stored load balancer.
struct LbEntry {
    spec: Arc<Spec>,
    /// [`target_set_digest`] of the spec's target names, kept so that asking which load
    /// balancers target a given set of nodes costs one comparison per load balancer rather
    /// than a walk over every target (10 million at 10,000 × 1,000).
    targets_digest: u64,
    generation: u64,
    etag: String,
    plane: Arc<DataPlane>,
}

struct State {
    lbs: BTreeMap<String, LbEntry>,
    vips: VipPool,
}

/// Everything the HTTP handlers share.
pub(crate) struct Inner {
    block: u8,
    token: Option<String>,
    scale: f64,
    dataplane: bool,
    faults: Arc<Faults>,
    state: Mutex<State>,
    /// Target lists already stored, by [`list_digest`]: a PUT whose list equals one of them
    /// shares it, so 10,000 load balancers over the same 1,000 nodes hold one list, not
    /// 10,000 copies (about a gigabyte).
    target_lists: Mutex<HashMap<u64, Weak<[Target]>>>,
    /// Serialises every change (PUT, DELETE, shutdown) while letting reads proceed.
    gate: tokio::sync::Mutex<()>,
    stats: Mutex<LbStats>,
    closed: AtomicBool,
    /// Every PUT and DELETE with its bearer token.
    audit: crate::audit::Audit,
}

/// Why a request failed, in the contract's terms.
#[derive(Debug)]
pub(crate) enum Failure {
    NotFound(String),
    Precondition(String),
    Invalid(spec::Invalid),
    Unavailable(String),
}

/// The outcome of a PUT.
pub(crate) struct PutOutcome {
    pub created: bool,
    pub body: Vec<u8>,
    pub etag: String,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `targets`, or an equal list already stored, to be shared.
    pub(crate) fn share_targets(&self, targets: Arc<[Target]>) -> Arc<[Target]> {
        let key = list_digest(&targets);
        let mut lists = self.target_lists.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(known) = lists.get(&key).and_then(Weak::upgrade)
            && known == targets
        {
            return known;
        }
        // Forget lists no load balancer holds any more, now and then (amortised O(1)).
        if lists.len() >= 64 && lists.len().is_power_of_two() {
            lists.retain(|_, w| w.strong_count() > 0);
        }
        lists.insert(key, Arc::downgrade(&targets));
        targets
    }

    /// The stored list equal to a body's targets (`digest` is their [`spec::list_digest`]),
    /// or a new one: an unchanged node set costs no allocation per target.
    pub(crate) fn share_body_targets(
        &self,
        digest: u64,
        body: &[spec::BodyTarget<'_>],
    ) -> Arc<[Target]> {
        let known = {
            let lists = self.target_lists.lock().unwrap_or_else(|e| e.into_inner());
            lists.get(&digest).and_then(Weak::upgrade)
        };
        if let Some(known) = known
            && known.len() == body.len()
            && known
                .iter()
                .zip(body)
                .all(|(k, b)| k.name == b.name && k.address == b.address)
        {
            return known;
        }
        let fresh: Arc<[Target]> = body
            .iter()
            .map(|t| Target {
                name: t.name.to_string(),
                address: t.address.to_string(),
            })
            .collect();
        self.share_targets(fresh)
    }

    fn stats(&self) -> MutexGuard<'_, LbStats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn exists(&self, id: &str) -> bool {
        self.state().lbs.contains_key(id)
    }

    pub(crate) fn get(&self, id: &str) -> Result<(Vec<u8>, String), Failure> {
        self.stats().gets += 1;
        let snap = {
            let st = self.state();
            let e = st
                .lbs
                .get(id)
                .ok_or_else(|| Failure::NotFound(format!("load balancer {id:?} not found")))?;
            Snapshot::of(e)
        };
        Ok((snap.render(id, false), snap.etag))
    }

    /// `GET /v1/loadbalancers[?cluster=NAME][&view=labels]`: with `labels_only`, each item
    /// is only its id and `spec.labels` (what garbage collection reads: a few hundred bytes
    /// instead of every target).
    pub(crate) fn list(&self, cluster: Option<&str>, labels_only: bool) -> Value {
        self.stats().lists += 1;
        let st = self.state();
        let items: Vec<Value> = st
            .lbs
            .iter()
            .filter(|(_, e)| cluster.is_none_or(|c| e.spec.cluster() == Some(c)))
            .map(|(id, e)| {
                if labels_only {
                    json!({"id": id, "spec": {"labels": e.spec.labels}})
                } else {
                    Snapshot::of(e).value(id)
                }
            })
            .collect();
        json!({ "items": items })
    }

    /// Writes `spec` as load balancer `id`. `minimal`: answer with only the id, addresses,
    /// ETag and generation (`Prefer: return=minimal`).
    pub(crate) async fn put(
        &self,
        id: &str,
        spec: Spec,
        if_match: Option<&str>,
        if_none_match: Option<&str>,
        minimal: bool,
    ) -> Result<PutOutcome, Failure> {
        self.stats().puts += 1;
        let gate = self.gate.lock().await;
        if self.closed.load(Ordering::SeqCst) {
            return Err(Failure::Unavailable(
                "the load balancer API is shutting down".into(),
            ));
        }
        let requested = spec.requested_vip(self.block).map_err(Failure::Invalid)?;
        let existing: Option<(Arc<Spec>, u64, String, Arc<DataPlane>)> =
            self.state().lbs.get(id).map(|e| {
                (
                    e.spec.clone(),
                    e.generation,
                    e.etag.clone(),
                    e.plane.clone(),
                )
            });

        match (&existing, if_match) {
            (None, Some(_)) => {
                return Err(Failure::Precondition(format!(
                    "If-Match: load balancer {id:?} does not exist"
                )));
            }
            (Some((_, _, etag, _)), Some(m)) if !spec::etag_matches(m, etag) => {
                return Err(Failure::Precondition(format!(
                    "If-Match: load balancer {id:?} changed (current ETag {etag})"
                )));
            }
            _ => {}
        }
        if let (Some((_, _, etag, _)), Some(m)) = (&existing, if_none_match)
            && spec::etag_matches(m, etag)
        {
            return Err(Failure::Precondition(format!(
                "If-None-Match: load balancer {id:?} already exists"
            )));
        }

        // Idempotent: the same spec changes nothing.
        if let Some((old, _, _, _)) = &existing
            && **old == spec
        {
            let snap = self.state().lbs.get(id).map(Snapshot::of);
            if let Some(snap) = snap {
                drop(gate);
                return Ok(PutOutcome {
                    created: false,
                    body: snap.render(id, minimal),
                    etag: snap.etag,
                });
            }
        }

        // Choose the VIP: the requested one, else the current one, else a fresh one.
        let current_vip = existing.as_ref().map(|(_, _, _, p)| p.vip);
        let (vip, claimed_new) = {
            let mut st = self.state();
            match (requested, current_vip) {
                (Some((ip, _)), Some(cur)) if ip == cur => (cur, false),
                (Some((ip, field)), _) => {
                    if !st.vips.claim(ip) {
                        return Err(Failure::Invalid(spec::Invalid {
                            field,
                            message: format!("{ip} is already in use by another load balancer"),
                        }));
                    }
                    (ip, true)
                }
                (None, Some(cur)) => (cur, false),
                (None, None) => match st.vips.alloc() {
                    Some(ip) => (ip, true),
                    None => {
                        return Err(Failure::Unavailable(format!(
                            "no free address left in 127.{0}.200.1-127.{0}.254.254",
                            self.block
                        )));
                    }
                },
            }
        };
        let (plane, new_plane) = match &existing {
            Some((_, _, _, p)) if p.vip == vip => (p.clone(), false),
            _ => (Arc::new(DataPlane::new(vip, self.scale)), true),
        };
        let applied = if self.dataplane {
            plane.apply(&spec).await
        } else {
            Ok(Vec::new())
        };
        let fresh = match applied {
            Ok(f) => f,
            Err(e) => {
                if new_plane {
                    plane.shutdown().await;
                }
                if claimed_new {
                    self.state().vips.release(vip);
                }
                tracing::warn!(id, error = %e, "load balancer data plane update failed");
                return Err(Failure::Unavailable(format!("{e:#}")));
            }
        };

        let spec = Arc::new(spec);
        let generation = existing.as_ref().map_or(0, |(_, g, _, _)| *g) + 1;
        let etag = spec::etag(generation, &spec);
        let replaced = {
            let mut st = self.state();
            let old = st.lbs.insert(
                id.to_string(),
                LbEntry {
                    targets_digest: target_set_digest(spec.targets.iter().map(|t| t.name.as_str())),
                    spec: spec.clone(),
                    generation,
                    etag: etag.clone(),
                    plane: plane.clone(),
                },
            );
            match old {
                Some(o) if o.plane.vip != vip => {
                    st.vips.release(o.plane.vip);
                    Some(o.plane)
                }
                _ => None,
            }
        };
        if let Some(old_plane) = replaced {
            old_plane.shutdown().await;
        }
        // The change is made: what is left (waiting for first health checks, rendering the
        // answer) does not hold up other writes.
        drop(gate);
        {
            let mut s = self.stats();
            s.writes += 1;
            *s.writes_by_id.entry(id.to_string()).or_default() += 1;
        }
        tracing::info!(id, %vip, generation, created = existing.is_none(), "load balancer written");

        // New checks run at once; give them a moment so the answer shows real health.
        let settle = Duration::from_secs_f64(self.scale.clamp(0.01, 1.0));
        let _ = tokio::time::timeout(
            settle,
            futures::future::join_all(fresh.iter().map(|c| c.first_checked())),
        )
        .await;

        // What this write made, even if a later one has replaced it since.
        let snap = Snapshot {
            spec,
            etag,
            generation,
            plane,
        };
        Ok(PutOutcome {
            created: existing.is_none(),
            body: snap.render(id, minimal),
            etag: snap.etag,
        })
    }

    pub(crate) async fn delete(&self, id: &str, if_match: Option<&str>) -> Result<(), Failure> {
        {
            let mut s = self.stats();
            s.deletes += 1;
            *s.deletes_by_id.entry(id.to_string()).or_default() += 1;
        }
        let _gate = self.gate.lock().await;
        let plane = {
            let mut st = self.state();
            let e = st
                .lbs
                .get(id)
                .ok_or_else(|| Failure::NotFound(format!("load balancer {id:?} not found")))?;
            if let Some(m) = if_match
                && !spec::etag_matches(m, &e.etag)
            {
                return Err(Failure::Precondition(format!(
                    "If-Match: load balancer {id:?} changed (current ETag {})",
                    e.etag
                )));
            }
            let e = st
                .lbs
                .remove(id)
                .ok_or_else(|| Failure::NotFound(format!("load balancer {id:?} not found")))?;
            st.vips.release(e.plane.vip);
            e.plane
        };
        // Close every socket before answering, so the VIP is free when the client hears 204.
        plane.shutdown().await;
        self.stats().deleted += 1;
        tracing::info!(id, vip = %plane.vip, "load balancer deleted");
        Ok(())
    }

    /// Stops every load balancer's data plane; later writes fail with 503.
    async fn teardown(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _gate = self.gate.lock().await;
        let planes: Vec<Arc<DataPlane>> = {
            let mut st = self.state();
            let lbs = std::mem::take(&mut st.lbs);
            lbs.into_values()
                .map(|e| {
                    st.vips.release(e.plane.vip);
                    e.plane
                })
                .collect()
        };
        for p in planes {
            p.shutdown().await;
        }
    }
}

/// A running load balancer API.
pub struct LbApi {
    pub addr: SocketAddr,
    pub faults: Arc<Faults>,
    pub ip_block: u8,
    inner: Arc<Inner>,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
    watcher: JoinHandle<()>,
}

impl LbApi {
    /// Binds the API and serves it until `shutdown` turns true or [`LbApi::shutdown`].
    pub async fn start(cfg: LbApiConfig, shutdown: watch::Receiver<bool>) -> anyhow::Result<LbApi> {
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("binding the load balancer API to {}", cfg.listen))?;
        let addr = listener.local_addr()?;
        let faults = Arc::new(Faults::default());
        let inner = Arc::new(Inner {
            block: cfg.ip_block,
            token: cfg.token.clone().filter(|t| !t.is_empty()),
            scale: cfg.health_check_scale,
            dataplane: cfg.dataplane,
            faults: faults.clone(),
            state: Mutex::new(State {
                lbs: BTreeMap::new(),
                vips: VipPool::new(cfg.ip_block),
            }),
            target_lists: Mutex::new(HashMap::new()),
            gate: tokio::sync::Mutex::new(()),
            stats: Mutex::new(LbStats::default()),
            closed: AtomicBool::new(false),
            audit: Default::default(),
        });
        let (stop, stop_rx) = watch::channel(false);
        let app = http::router(inner.clone());
        let mut ext = shutdown.clone();
        let mut own = stop_rx;
        let server = tokio::spawn(async move {
            let signal = async move {
                tokio::select! {
                    _ = wait_true(&mut ext) => {}
                    _ = wait_true(&mut own) => {}
                }
            };
            if let Err(e) = axum::serve(crate::no_delay(listener), app)
                .with_graceful_shutdown(signal)
                .await
            {
                tracing::warn!(error = %e, "load balancer API server failed");
            }
        });
        // Tears the data planes down on either signal.
        let watcher = {
            let inner = inner.clone();
            let mut ext = shutdown;
            let mut own = stop.subscribe();
            tokio::spawn(async move {
                tokio::select! {
                    _ = wait_true(&mut ext) => {}
                    _ = wait_true(&mut own) => {}
                }
                inner.teardown().await;
            })
        };
        tracing::info!(%addr, block = cfg.ip_block, "load balancer API listening");
        Ok(LbApi {
            addr,
            faults,
            ip_block: cfg.ip_block,
            inner,
            stop,
            server,
            watcher,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stats(&self) -> LbStats {
        let mut s = self.inner.stats().clone();
        s.injected_errors = self.faults.injected_errors();
        s
    }

    /// The current load balancers, as `GET /v1/loadbalancers/{id}` returns them.
    pub fn load_balancers(&self) -> Vec<Value> {
        let st = self.inner.state();
        st.lbs
            .iter()
            .map(|(id, e)| Snapshot::of(e).value(id))
            .collect()
    }

    /// How many load balancers exist, and how many of them target exactly the nodes named in
    /// `nodes` (cheap enough to poll with 10,000 load balancers of 1,000 targets each).
    pub fn count_targeting(&self, nodes: &std::collections::BTreeSet<String>) -> (usize, usize) {
        let want = target_set_digest(nodes.iter().map(String::as_str));
        let st = self.inner.state();
        let exact = st
            .lbs
            .values()
            .filter(|e| e.spec.targets.len() == nodes.len() && e.targets_digest == want)
            .count();
        (st.lbs.len(), exact)
    }

    /// How many target lists the load balancers hold between them: equal lists are stored
    /// once, so this is the number of distinct lists.
    pub fn target_lists(&self) -> usize {
        let st = self.inner.state();
        st.lbs
            .values()
            .map(|e| Arc::as_ptr(&e.spec.targets).cast::<u8>() as usize)
            .collect::<std::collections::HashSet<_>>()
            .len()
    }

    /// The VIP of load balancer `id`, if it exists.
    pub fn vip(&self, id: &str) -> Option<Ipv4Addr> {
        self.inner.state().lbs.get(id).map(|e| e.plane.vip)
    }

    /// Stops the API and every data plane; nothing stays bound when this returns.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let mut server = self.server;
        if tokio::time::timeout(Duration::from_secs(5), &mut server)
            .await
            .is_err()
        {
            server.abort();
            let _ = server.await;
        }
        let _ = self.watcher.await;
        self.inner.teardown().await;
    }
}

/// Resolves when `rx` turns true; never if its sender is gone without doing so.
async fn wait_true(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::target_set_digest;

    #[test]
    fn target_set_digest_depends_on_the_set_only() {
        let d = |names: &[&str]| target_set_digest(names.iter().copied());
        assert_eq!(d(&["node-1", "node-2"]), d(&["node-2", "node-1"]));
        assert_eq!(d(&["node-1", "node-2"]), d(&["node-2", "node-1", "node-2"]));
        assert_ne!(d(&["node-1", "node-2"]), d(&["node-1"]));
        assert_ne!(d(&["node-1", "node-2"]), d(&["node-1", "node-3"]));
        // Names are hashed with their boundaries: "ab"+"c" is not "a"+"bc".
        assert_ne!(d(&["ab", "c"]), d(&["a", "bc"]));
        assert_ne!(d(&[]), d(&[""]));
    }
}
