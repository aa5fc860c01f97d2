//! Simulated nodes and pods with a real data path, all on loopback.
//!
//! # Address scheme
//!
//! Everything of one mock-cloud lives in `127.{b}.0.0/16` (`b` = [`ClusterConfig::ip_block`]);
//! Linux routes all of 127/8 to `lo`, so binding these addresses needs no root.
//!
//! | range                      | use                                                        |
//! |----------------------------|------------------------------------------------------------|
//! | `127.{b}.1.1`–`127.{b}.15.254` | node InternalIPs; `node-N` gets `127.{b}.1.N` when free |
//! | `127.{b}.{16+i}.0/24`, i < 184 | pod CIDR of the i-th node (`spec.podCIDR`); `node-N` gets i = N-1 when free; pods get `.1`–`.254` |
//! | `127.{b}.200-254.x`         | reserved for load balancer VIPs (not used here)           |
//! | `127.{b}.255.254:29999`    | the block's claim marker (see `lib.rs`)                    |
//!
//! # Components
//!
//! Each runs as one task reacting to store events (level-triggered: any relevant event makes
//! it re-read the whole state from the store, so lagging or coalescing is harmless), plus a
//! resync every few seconds:
//!
//! * [`nodes`]: completes Nodes created through the API (InternalIP, podCIDR, providerID,
//!   labels, conditions) and, when a Node is deleted, deletes the pods bound to it.
//! * [`scheduler`]: binds pods without `spec.nodeName` to a fitting node.
//! * [`kubelet`]: gives bound pods an IP, runs their servers, reports their status.
//! * [`endpoints`]: the EndpointSlice controller.
//! * [`proxy`]: a userspace kube-proxy per node (NodePorts and health check NodePorts).
//!
//! All writes go through [`ApiCore`], so API clients see everything.

pub mod endpoints;
pub mod gc;
pub mod kubelet;
pub mod nodes;
pub mod pod_status;
pub mod proxy;
pub mod rollout;
pub mod scheduler;
pub mod workloads;

use crate::apiserver::{ApiCore, ApiError, DeleteOptions, WriteOptions};
use crate::registry::ResourceInfo;
use crate::store::GroupResource;
use anyhow::Context;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, oneshot, watch};
use tokio::task::{AbortHandle, JoinSet};

/// Where the simulated cluster lives: every address is inside 127.{block}.0.0/16.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub ip_block: u8,
    pub initial_nodes: usize,
    /// Run each node's kube-proxy (false: no NodePort listeners, for scale benchmarks).
    pub proxy: bool,
}

/// How often every controller re-reads the whole state even without events.
const RESYNC: Duration = Duration::from_secs(3);

/// Third octets of node addresses.
const NODE_OCTETS: std::ops::RangeInclusive<u8> = 1..=15;
/// Third octet of the first pod /24.
const POD_SUBNET_BASE: u8 = 16;
/// Number of pod /24s (16..=199; 200 is the load balancer range).
const POD_SUBNETS: u8 = 184;

/// The resources the cluster reads and writes.
#[derive(Debug, Clone)]
pub(crate) struct Infos {
    pub nodes: ResourceInfo,
    pub pods: ResourceInfo,
    pub services: ResourceInfo,
    pub slices: ResourceInfo,
    pub deployments: ResourceInfo,
    pub replicasets: ResourceInfo,
}

/// The addresses given to one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeAlloc {
    pub ip: Ipv4Addr,
    /// Third octet of the node's pod /24.
    pub subnet: u8,
}

/// Address bookkeeping: node IPs, pod CIDRs, pod IPs.
#[derive(Debug, Default)]
pub(crate) struct Alloc {
    nodes: BTreeMap<String, NodeAlloc>,
    /// Pod uid → (node, IP).
    pods: HashMap<String, (String, Ipv4Addr)>,
}

/// The number in a `node-N` name.
fn node_number(name: &str) -> Option<u32> {
    name.strip_prefix("node-")?.parse().ok()
}

/// A free node address: `127.b.1.N` for `node-N` when free, else the lowest free one.
pub(crate) fn pick_node_ip(block: u8, name: &str, used: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    if let Some(n) = node_number(name).filter(|n| (1..=254).contains(n)) {
        let ip = Ipv4Addr::new(127, block, 1, n as u8);
        if !used.contains(&ip) {
            return Some(ip);
        }
    }
    NODE_OCTETS
        .flat_map(|c| (1..=254u8).map(move |d| Ipv4Addr::new(127, block, c, d)))
        .find(|ip| !used.contains(ip))
}

/// A free pod subnet (third octet): `16 + N - 1` for `node-N` when free, else the lowest.
pub(crate) fn pick_subnet(name: &str, used: &HashSet<u8>) -> Option<u8> {
    if let Some(n) = node_number(name).filter(|n| (1..=u32::from(POD_SUBNETS)).contains(n)) {
        let s = POD_SUBNET_BASE + (n - 1) as u8;
        if !used.contains(&s) {
            return Some(s);
        }
    }
    (POD_SUBNET_BASE..POD_SUBNET_BASE + POD_SUBNETS).find(|s| !used.contains(s))
}

/// The pod subnet carried by the fewest nodes (the lowest on ties).
fn least_shared_subnet(nodes: &BTreeMap<String, NodeAlloc>) -> u8 {
    let mut count = [0usize; POD_SUBNETS as usize];
    for a in nodes.values() {
        if let Some(c) = count.get_mut(usize::from(a.subnet.wrapping_sub(POD_SUBNET_BASE))) {
            *c += 1;
        }
    }
    let (i, _) = count
        .iter()
        .enumerate()
        .min_by_key(|&(i, c)| (*c, i))
        .unwrap_or((0, &0));
    POD_SUBNET_BASE + i as u8
}

/// A free pod address in `127.b.subnet.0/24`.
pub(crate) fn pick_pod_ip(block: u8, subnet: u8, used: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    (1..=254u8)
        .map(|d| Ipv4Addr::new(127, block, subnet, d))
        .find(|ip| !used.contains(ip))
}

impl Alloc {
    /// The node's addresses, allocating them on first sight. `internal_ip` (from the Node's
    /// status) is kept when given.
    fn node(&mut self, block: u8, name: &str, internal_ip: Option<Ipv4Addr>) -> Option<NodeAlloc> {
        if let Some(a) = self.nodes.get(name) {
            return Some(*a);
        }
        let ip = match internal_ip {
            Some(ip) => ip,
            None => {
                let used: HashSet<Ipv4Addr> = self.nodes.values().map(|a| a.ip).collect();
                pick_node_ip(block, name, &used)?
            }
        };
        let used: HashSet<u8> = self.nodes.values().map(|a| a.subnet).collect();
        // Past 184 nodes (API-only scale setups) nodes share pod /24s, the least shared
        // first; pod IPs stay unique because they are allocated from one cluster-wide set.
        let subnet = pick_subnet(name, &used).unwrap_or_else(|| least_shared_subnet(&self.nodes));
        let a = NodeAlloc { ip, subnet };
        self.nodes.insert(name.to_string(), a);
        Some(a)
    }

    fn release_node(&mut self, name: &str) {
        self.nodes.remove(name);
        self.pods.retain(|_, (n, _)| n != name);
    }

    /// The pod's IP, allocating one in its node's subnet (preferring `wanted`) on first sight.
    fn pod(
        &mut self,
        block: u8,
        uid: &str,
        node: &str,
        wanted: Option<Ipv4Addr>,
    ) -> Option<Ipv4Addr> {
        if let Some((n, ip)) = self.pods.get(uid)
            && n == node
        {
            return Some(*ip);
        }
        let subnet = self.nodes.get(node)?.subnet;
        let used: HashSet<Ipv4Addr> = self.pods.values().map(|(_, ip)| *ip).collect();
        let ip = match wanted {
            Some(w) if w.octets()[..3] == [127, block, subnet] && !used.contains(&w) => w,
            _ => pick_pod_ip(block, subnet, &used)?,
        };
        self.pods.insert(uid.to_string(), (node.to_string(), ip));
        Some(ip)
    }

    fn release_pod(&mut self, uid: &str) {
        self.pods.remove(uid);
    }
}

struct Tasks {
    set: JoinSet<()>,
    closed: bool,
}

/// State shared by the cluster's components.
pub(crate) struct Shared {
    pub core: Arc<ApiCore>,
    pub block: u8,
    pub infos: Infos,
    pub shutdown: watch::Receiver<bool>,
    alloc: Mutex<Alloc>,
    tasks: Mutex<Tasks>,
}

/// A spawned task that can be stopped and waited for (its sockets are closed once
/// [`Stoppable::stop`] returns).
pub(crate) struct Stoppable {
    abort: AbortHandle,
    done: oneshot::Receiver<()>,
}

impl Stoppable {
    pub async fn stop(self) {
        self.abort.abort();
        // The sender lives inside the task's future: it is dropped with it.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.done).await;
    }
}

impl Shared {
    fn alloc(&self) -> std::sync::MutexGuard<'_, Alloc> {
        self.alloc.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The addresses of a Node object, allocating them on first sight.
    pub fn node_alloc(&self, node: &Value) -> Option<NodeAlloc> {
        let name = name_of(node);
        self.alloc()
            .node(self.block, name, nodes::internal_ip(node))
    }

    pub fn known_node_alloc(&self, name: &str) -> Option<NodeAlloc> {
        self.alloc().nodes.get(name).copied()
    }

    pub fn release_node(&self, name: &str) {
        self.alloc().release_node(name);
    }

    pub fn pod_ip(&self, uid: &str, node: &str, wanted: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
        self.alloc().pod(self.block, uid, node, wanted)
    }

    pub fn release_pod(&self, uid: &str) {
        self.alloc().release_pod(uid);
    }

    /// Spawns a task the cluster stops on shutdown.
    pub fn spawn<F>(&self, fut: F) -> Option<Stoppable>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (tx, done) = oneshot::channel::<()>();
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        if tasks.closed {
            return None;
        }
        while tasks.set.try_join_next().is_some() {}
        let abort = tasks.set.spawn(async move {
            let _guard = tx;
            fut.await;
        });
        Some(Stoppable { abort, done })
    }

    fn abort_all(&self) -> JoinSet<()> {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.closed = true;
        tasks.set.abort_all();
        std::mem::take(&mut tasks.set)
    }

    pub fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// The simulated cluster.
///
/// Nodes can be managed through the API (create/delete Node objects, patch labels, taints,
/// `spec.unschedulable`) or with the helpers here, which do the same through [`ApiCore`].
pub struct Cluster {
    pub cfg: ClusterConfig,
    pub core: Arc<ApiCore>,
    shared: Arc<Shared>,
}

impl Cluster {
    /// Creates the initial nodes `node-1..node-N` and starts the controllers and proxies.
    pub async fn start(
        core: Arc<ApiCore>,
        cfg: ClusterConfig,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Cluster> {
        let info = |g: &str, r: &str| {
            core.info(g, "v1", r)
                .with_context(|| format!("resource {r} is not served"))
        };
        let infos = Infos {
            nodes: info("", "nodes")?,
            pods: info("", "pods")?,
            services: info("", "services")?,
            slices: info("discovery.k8s.io", "endpointslices")?,
            deployments: info("apps", "deployments")?,
            replicasets: info("apps", "replicasets")?,
        };
        let shared = Arc::new(Shared {
            core: core.clone(),
            block: cfg.ip_block,
            infos,
            shutdown,
            alloc: Mutex::new(Alloc::default()),
            tasks: Mutex::new(Tasks {
                set: JoinSet::new(),
                closed: false,
            }),
        });
        let cluster = Cluster {
            cfg: cfg.clone(),
            core,
            shared: shared.clone(),
        };
        for i in 1..=cfg.initial_nodes {
            cluster
                .add_node(&format!("node-{i}"))
                .with_context(|| format!("creating node-{i}"))?;
        }
        run_controller(&shared, nodes::NodeController::default());
        run_controller(&shared, scheduler::Scheduler);
        run_controller(&shared, kubelet::Kubelet::default());
        run_controller(&shared, endpoints::EndpointSliceController::default());
        run_controller(&shared, workloads::DeploymentController);
        run_controller(&shared, workloads::ReplicaSetController);
        run_controller(&shared, gc::GarbageCollector);
        if cfg.proxy {
            run_controller(&shared, proxy::Proxy::default());
        }
        Ok(cluster)
    }

    /// Creates a Node `name` with the standard labels and a `mock-cloud://name` providerID.
    pub fn add_node(&self, name: &str) -> anyhow::Result<Value> {
        self.add_node_with(name, &BTreeMap::new(), None)
    }

    /// Creates a Node with extra labels (overriding the standard ones) and, optionally, a
    /// providerID of the caller's choice (e.g. `aws:///us-east-1a/i-0123`).
    pub fn add_node_with(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        provider_id: Option<&str>,
    ) -> anyhow::Result<Value> {
        let a = self
            .shared
            .alloc()
            .node(self.cfg.ip_block, name, None)
            .context("no free node address")?;
        let obj = nodes::node_object(name, a, labels, provider_id, &now());
        match self
            .core
            .create(&self.shared.infos.nodes, "", obj, &WriteOptions::default())
        {
            Ok(v) => Ok((*v).clone()),
            Err(e) => {
                if self.core.get(&self.shared.infos.nodes, "", name).is_err() {
                    self.shared.release_node(name);
                }
                Err(anyhow::Error::new(e).context(format!("creating node {name}")))
            }
        }
    }

    /// Deletes a Node: its kube-proxy stops and its pods are deleted.
    pub fn delete_node(&self, name: &str) -> anyhow::Result<()> {
        self.core
            .delete(
                &self.shared.infos.nodes,
                "",
                name,
                &DeleteOptions::default(),
            )
            .with_context(|| format!("deleting node {name}"))?;
        Ok(())
    }

    /// Sets the Node's Ready condition; its pods' Ready conditions follow.
    pub fn set_node_ready(&self, name: &str, ready: bool) -> anyhow::Result<()> {
        let t = now();
        modify(&self.shared, Kind::Nodes, "", name, true, |n| {
            nodes::set_ready(n, ready, &t)
        })
        .with_context(|| format!("setting node {name} ready={ready}"))?;
        Ok(())
    }

    /// Sets (Some) or removes (None) a label on a Node.
    pub fn label_node(&self, name: &str, key: &str, value: Option<&str>) -> anyhow::Result<()> {
        modify(&self.shared, Kind::Nodes, "", name, false, |n| {
            set_label(n, key, value)
        })
        .with_context(|| format!("labelling node {name}"))?;
        Ok(())
    }

    /// Adds (or replaces, by key and effect) a taint on a Node.
    pub fn taint_node(
        &self,
        name: &str,
        key: &str,
        value: Option<&str>,
        effect: &str,
    ) -> anyhow::Result<()> {
        modify(&self.shared, Kind::Nodes, "", name, false, |n| {
            nodes::add_taint(n, key, value, effect)
        })
        .with_context(|| format!("tainting node {name}"))?;
        Ok(())
    }

    /// Removes every taint with this key from a Node.
    pub fn untaint_node(&self, name: &str, key: &str) -> anyhow::Result<()> {
        modify(&self.shared, Kind::Nodes, "", name, false, |n| {
            nodes::remove_taint(n, key)
        })
        .with_context(|| format!("untainting node {name}"))?;
        Ok(())
    }

    /// The InternalIP of a Node (from its status).
    pub fn node_ip(&self, name: &str) -> Option<Ipv4Addr> {
        let n = self.core.get(&self.shared.infos.nodes, "", name).ok()?;
        nodes::internal_ip(&n)
    }

    /// Names and InternalIPs of all Nodes, by name.
    pub fn node_ips(&self) -> Vec<(String, Ipv4Addr)> {
        let (items, _) = self.core.store.list(&self.shared.infos.nodes_gr(), None);
        items
            .iter()
            .filter_map(|n| Some((name_of(n).to_string(), nodes::internal_ip(n)?)))
            .collect()
    }

    /// Human-readable lines about the nodes and the address scheme (for the CLI banner).
    pub fn describe(&self) -> Vec<String> {
        let b = self.cfg.ip_block;
        let mut out: Vec<String> = self
            .node_ips()
            .into_iter()
            .map(|(name, ip)| match self.shared.known_node_alloc(&name) {
                Some(a) => format!(
                    "node {name}: {ip} (pods in 127.{b}.{}.0/24, {})",
                    a.subnet,
                    nodes::zone_for(a)
                ),
                None => format!("node {name}: {ip}"),
            })
            .collect();
        out.push(format!(
            "NodePorts listen on every node IP; pods live in 127.{b}.16.0-127.{b}.199.255; 127.{b}.200.1-127.{b}.254.254 is for load balancers"
        ));
        out
    }

    /// A pod's IP once the kubelet has given it one.
    pub fn pod_ip(&self, namespace: &str, name: &str) -> Option<Ipv4Addr> {
        let p = self
            .core
            .get(&self.shared.infos.pods, namespace, name)
            .ok()?;
        p.pointer("/status/podIP")?.as_str()?.parse().ok()
    }

    /// Stops every listener and task this cluster started; when it returns, no socket of the
    /// cluster is bound any more.
    pub async fn shutdown(self) {
        let mut set = self.shared.abort_all();
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while set.join_next().await.is_some() {}
        })
        .await;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Without an explicit shutdown, at least stop everything (asynchronously).
        let mut tasks = self.shared.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.closed = true;
        tasks.set.abort_all();
    }
}

impl Infos {
    pub fn nodes_gr(&self) -> GroupResource {
        (String::new(), "nodes".into())
    }
}

/// Which of [`Infos`] a write goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Nodes,
    Pods,
    Services,
    Slices,
    Deployments,
    ReplicaSets,
}

impl Kind {
    pub fn info(self, infos: &Infos) -> &ResourceInfo {
        match self {
            Kind::Nodes => &infos.nodes,
            Kind::Pods => &infos.pods,
            Kind::Services => &infos.services,
            Kind::Slices => &infos.slices,
            Kind::Deployments => &infos.deployments,
            Kind::ReplicaSets => &infos.replicasets,
        }
    }

    pub fn gr(self) -> GroupResource {
        match self {
            Kind::Nodes => (String::new(), "nodes".into()),
            Kind::Pods => (String::new(), "pods".into()),
            Kind::Services => (String::new(), "services".into()),
            Kind::Slices => ("discovery.k8s.io".into(), "endpointslices".into()),
            Kind::Deployments => ("apps".into(), "deployments".into()),
            Kind::ReplicaSets => ("apps".into(), "replicasets".into()),
        }
    }
}

/// Lists every object of a kind straight from the store.
pub(crate) fn list(shared: &Shared, kind: Kind) -> Vec<Arc<Value>> {
    shared.core.store.list(&kind.gr(), None).0
}

/// Read-modify-write of one object, retried on conflicts. `f` returns whether it changed
/// anything; nothing is written otherwise. Ok(None): nothing to change.
pub(crate) fn modify(
    shared: &Shared,
    kind: Kind,
    ns: &str,
    name: &str,
    status: bool,
    mut f: impl FnMut(&mut Value) -> bool,
) -> Result<Option<Arc<Value>>, ApiError> {
    let info = kind.info(&shared.infos);
    let mut last = None;
    for _ in 0..10 {
        let cur = shared.core.get(info, ns, name)?;
        let mut v = (*cur).clone();
        if !f(&mut v) {
            return Ok(None);
        }
        match shared
            .core
            .update(info, ns, name, v, status, &WriteOptions::default())
        {
            Ok(o) => return Ok(Some(o)),
            Err(e) if e.code == 409 => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| ApiError::internal("too many conflicts")))
}

/// A level-triggered controller: reconciles the whole state when anything it cares about
/// changes.
pub(crate) trait Controller: Send + 'static {
    const NAME: &'static str;
    /// The resources whose changes trigger a reconcile.
    fn watches(&self) -> &'static [Kind];
    /// Whether a change of a watched resource can change what the controller does. Most
    /// controllers say yes to all; one that looks at a few objects of a busy kind says no to
    /// the rest, so a cluster of 10,000 Services does not rescan them on every status write.
    fn triggers(&self, _event: &crate::store::Event) -> bool {
        true
    }
    /// Told of every triggering event before the run that follows it (a controller that
    /// works incrementally records what changed).
    fn note(&mut self, _event: &crate::store::Event) {}
    /// Told that events were missed (the next run must look at everything).
    fn note_lost(&mut self) {}
    /// `resync`: a periodic run (retry what failed before).
    fn reconcile(&mut self, shared: &Arc<Shared>, resync: bool) -> impl Future<Output = ()> + Send;
}

fn run_controller<C: Controller>(shared: &Arc<Shared>, mut c: C) {
    let sh = shared.clone();
    let (mut rx, _) = shared.core.store.subscribe();
    let grs: Vec<GroupResource> = c.watches().iter().map(|k| k.gr()).collect();
    let fut = async move {
        let mut stop = sh.shutdown.clone();
        let mut tick = tokio::time::interval(RESYNC);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.reset();
        c.reconcile(&sh, false).await;
        loop {
            let resync = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                r = rx.recv() => match r {
                    Ok(ev) if grs.contains(&ev.gr) && c.triggers(&ev) => {
                        c.note(&ev);
                        false
                    }
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!(controller = C::NAME, missed = n, "event stream lagged; relisting");
                        c.note_lost();
                        false
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tick.tick() => true,
            };
            // Coalesce whatever else is already queued into this one run.
            loop {
                match rx.try_recv() {
                    Ok(ev) => {
                        if grs.contains(&ev.gr) && c.triggers(&ev) {
                            c.note(&ev);
                        }
                    }
                    Err(broadcast::error::TryRecvError::Lagged(_)) => c.note_lost(),
                    Err(_) => break,
                }
            }
            if sh.stopping() {
                return;
            }
            c.reconcile(&sh, resync).await;
        }
    };
    if shared.spawn(fut).is_none() {
        tracing::warn!(
            controller = C::NAME,
            "cluster is shutting down; not started"
        );
    }
}

// ---- small JSON helpers ----

pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `obj.pointer(ptr)` without its allocations: serde_json unescapes every token into a new
/// String, and the cluster's controllers look up names and labels of every object they scan.
/// Tokens with `~` escapes take serde_json's way.
pub(crate) fn at<'a>(obj: &'a Value, ptr: &str) -> Option<&'a Value> {
    if ptr.contains('~') {
        return obj.pointer(ptr);
    }
    let Some(path) = ptr.strip_prefix('/') else {
        return ptr.is_empty().then_some(obj);
    };
    path.split('/').try_fold(obj, |v, token| match v {
        Value::Object(m) => m.get(token),
        // An index as RFC 6901 writes it: digits, no leading zero, no sign.
        Value::Array(a) if !token.starts_with('+') && (token == "0" || !token.starts_with('0')) => {
            token.parse::<usize>().ok().and_then(|i| a.get(i))
        }
        _ => None,
    })
}

pub(crate) fn name_of(obj: &Value) -> &str {
    at(obj, "/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub(crate) fn namespace_of(obj: &Value) -> &str {
    at(obj, "/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub(crate) fn uid_of(obj: &Value) -> &str {
    obj.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub(crate) fn str_at<'a>(obj: &'a Value, ptr: &str) -> Option<&'a str> {
    at(obj, ptr).and_then(Value::as_str)
}

pub(crate) fn label<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    at(obj, "/metadata/labels")
        .and_then(|l| l.get(key))
        .and_then(Value::as_str)
}

pub(crate) fn is_deleting(obj: &Value) -> bool {
    at(obj, "/metadata/deletionTimestamp").is_some_and(|v| !v.is_null())
}

pub(crate) fn array<'a>(obj: &'a Value, ptr: &str) -> &'a [Value] {
    at(obj, ptr)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// Sets (Some) or removes (None) a label; returns whether anything changed.
pub(crate) fn set_label(obj: &mut Value, key: &str, value: Option<&str>) -> bool {
    if label(obj, key) == value {
        return false;
    }
    if !obj["metadata"].is_object() {
        obj["metadata"] = serde_json::json!({});
    }
    let meta = &mut obj["metadata"];
    if !meta["labels"].is_object() {
        meta["labels"] = serde_json::json!({});
    }
    if let Some(labels) = meta["labels"].as_object_mut() {
        match value {
            Some(v) => {
                labels.insert(key.to_string(), Value::String(v.to_string()));
            }
            None => {
                labels.remove(key);
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn node_addresses_follow_node_numbers_and_fill_gaps() {
        let mut used = HashSet::new();
        assert_eq!(
            pick_node_ip(23, "node-3", &used),
            Some(Ipv4Addr::new(127, 23, 1, 3))
        );
        used.insert(Ipv4Addr::new(127, 23, 1, 1));
        assert_eq!(
            pick_node_ip(23, "worker", &used),
            Some(Ipv4Addr::new(127, 23, 1, 2))
        );
        // node-1's preferred address is taken: the next free one.
        assert_eq!(
            pick_node_ip(23, "node-1", &used),
            Some(Ipv4Addr::new(127, 23, 1, 2))
        );
    }

    #[test]
    fn pod_subnets_and_ips_stay_in_their_ranges() {
        let used: HashSet<u8> = [16, 17].into_iter().collect();
        assert_eq!(pick_subnet("node-5", &used), Some(20));
        assert_eq!(pick_subnet("node-1", &used), Some(18));
        let all: HashSet<u8> = (16..200).collect();
        assert_eq!(pick_subnet("x", &all), None);
        let mut ips = HashSet::new();
        ips.insert(Ipv4Addr::new(127, 9, 16, 1));
        assert_eq!(pick_pod_ip(9, 16, &ips), Some(Ipv4Addr::new(127, 9, 16, 2)));
    }

    #[test]
    fn alloc_keeps_pod_ips_per_node_and_releases_them() {
        let mut a = Alloc::default();
        let n1 = a.node(5, "node-1", None).expect("alloc");
        assert_eq!(n1.ip, Ipv4Addr::new(127, 5, 1, 1));
        assert_eq!(n1.subnet, 16);
        let custom = a
            .node(5, "big", Some(Ipv4Addr::new(127, 5, 1, 9)))
            .expect("alloc");
        assert_eq!(custom.ip, Ipv4Addr::new(127, 5, 1, 9));
        assert_eq!(custom.subnet, 17);
        let p1 = a.pod(5, "uid-1", "node-1", None).expect("ip");
        assert_eq!(p1, Ipv4Addr::new(127, 5, 16, 1));
        assert_eq!(a.pod(5, "uid-1", "node-1", None), Some(p1));
        let p2 = a.pod(5, "uid-2", "node-1", Some(p1)).expect("ip");
        assert_ne!(p1, p2);
        assert_eq!(a.pod(5, "uid-3", "ghost", None), None);
        a.release_node("node-1");
        assert!(a.pods.is_empty());
    }

    #[test]
    fn past_184_nodes_pod_subnets_are_shared_and_pod_ips_stay_unique() {
        let mut a = Alloc::default();
        for n in 1..=400 {
            a.node(5, &format!("node-{n}"), None)
                .expect("a node address");
        }
        let mut per_subnet: BTreeMap<u8, usize> = BTreeMap::new();
        for n in a.nodes.values() {
            *per_subnet.entry(n.subnet).or_default() += 1;
        }
        assert_eq!(per_subnet.len(), usize::from(POD_SUBNETS));
        assert!(
            per_subnet.values().all(|&c| (2..=3).contains(&c)),
            "{per_subnet:?}"
        );
        let shared = a.nodes["node-185"].subnet;
        let owner = a
            .nodes
            .iter()
            .find(|(k, v)| *k != "node-185" && v.subnet == shared);
        let owner = owner.expect("another node on that subnet").0.clone();
        let p1 = a.pod(5, "u1", "node-185", None).expect("ip");
        let p2 = a.pod(5, "u2", &owner, None).expect("ip");
        assert_ne!(p1, p2);
    }

    #[test]
    fn set_label_reports_changes() {
        let mut v = json!({"metadata": {"name": "n"}});
        assert!(set_label(&mut v, "a", Some("1")));
        assert!(!set_label(&mut v, "a", Some("1")));
        assert_eq!(label(&v, "a"), Some("1"));
        assert!(set_label(&mut v, "a", None));
        assert_eq!(label(&v, "a"), None);
    }

    #[test]
    fn at_finds_what_pointer_finds() {
        let v = serde_json::json!({
            "metadata": {"name": "web", "labels": {"kubernetes.io/service-name": "web", "": "empty"}},
            "spec": {"ports": [{"port": 80}, {"port": 443}]},
            "a~b": 1,
        });
        for p in [
            "",
            "/metadata/name",
            "/metadata/labels/kubernetes.io~1service-name",
            "/metadata/labels/",
            "/spec/ports/1/port",
            "/spec/ports/2/port",
            "/spec/ports/x",
            "/spec/ports/01",
            "/spec/ports/+1",
            "/spec/ports/0",
            "/a~0b",
            "/missing/deeper",
            "metadata",
            "/metadata/name/more",
        ] {
            assert_eq!(at(&v, p), v.pointer(p), "{p:?}");
        }
    }
}
