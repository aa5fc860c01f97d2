//! Reconciler scenarios, in-process and fast: mock-cloud's API server in this process, the
//! controller as `berth_controller::run::serve` runs it, and a recording fake provider. One test per
//! behaviour a Service's owner relies on, asserted on what they would see (status, condition,
//! finalizer, events) and on what reached the provider.

use async_trait::async_trait;
use berth_controller::cli::ControllerArgs;
use berth_controller::run::{ClassController, serve};
use berth_providers::{
    DesiredLoadBalancer, Ingress, IpMode, LoadBalancerRef, LoadBalancerStatus, OwnedLoadBalancer,
    Provider, ProviderError,
};
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

const CLASS_FINALIZER: &str = "berth.io/cleanup.berth.io.http";

/// What the fake provider was asked, and how it answers.
#[derive(Default)]
struct Fake {
    /// Every ensure, with the state asked for.
    ensures: Mutex<Vec<DesiredLoadBalancer>>,
    /// Ensures that changed something.
    writes: Mutex<usize>,
    deletes: Mutex<Vec<String>>,
    lbs: Mutex<BTreeMap<String, DesiredLoadBalancer>>,
    pending: Mutex<bool>,
    fail_delete: Mutex<bool>,
}

fn get<T: Clone>(m: &Mutex<T>) -> T {
    m.lock().unwrap().clone()
}

#[async_trait]
impl Provider for Fake {
    fn name(&self) -> &'static str {
        "fake"
    }
    fn needs_node_ports(&self) -> bool {
        true
    }
    fn annotations(&self) -> berth_providers::AnnotationSupport {
        berth_providers::AnnotationSupport {
            keys: &[],
            health_check: true,
            requested_addresses: true,
            otherwise: "the fake ignores it",
        }
    }
    fn validate(&self, _: &DesiredLoadBalancer) -> Result<(), ProviderError> {
        Ok(())
    }
    async fn ensure(&self, lb: &DesiredLoadBalancer) -> Result<LoadBalancerStatus, ProviderError> {
        self.ensures.lock().unwrap().push(lb.clone());
        let mut lbs = self.lbs.lock().unwrap();
        if lbs.get(&lb.id) != Some(lb) {
            *self.writes.lock().unwrap() += 1;
            lbs.insert(lb.id.clone(), lb.clone());
        }
        let ingress = if get(&self.pending) {
            vec![]
        } else {
            vec![Ingress {
                ip: Some("127.250.0.1".parse().unwrap()),
                hostname: None,
                ip_mode: IpMode::Proxy,
            }]
        };
        Ok(LoadBalancerStatus { ingress })
    }
    async fn delete(&self, lb: &LoadBalancerRef) -> Result<(), ProviderError> {
        if get(&self.fail_delete) {
            return Err(ProviderError::Transient {
                message: "Load balancer API answered 503 Service Unavailable: maintenance".into(),
                retry_after: None,
            });
        }
        self.deletes.lock().unwrap().push(lb.service.name.clone());
        self.lbs.lock().unwrap().remove(&lb.id);
        Ok(())
    }
    async fn list_owned(&self, cluster: &str) -> Result<Vec<OwnedLoadBalancer>, ProviderError> {
        Ok(self
            .lbs
            .lock()
            .unwrap()
            .values()
            .filter(|d| d.cluster == cluster)
            .filter_map(|d| OwnedLoadBalancer::from_labels(d.id.clone(), d.labels.clone()))
            .collect())
    }
}

impl Fake {
    fn ensures_of(&self, name: &str) -> Vec<DesiredLoadBalancer> {
        get(&self.ensures)
            .into_iter()
            .filter(|d| d.service.name == name)
            .collect()
    }
}

struct Scenario {
    cloud: Option<mock_cloud::MockCloud>,
    client: kube::Client,
    fake: Arc<Fake>,
    metrics: Arc<berth_controller::metrics::Metrics>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Scenario {
    async fn start() -> Scenario {
        berth_controller::install_crypto_provider();
        let cloud = mock_cloud::MockCloud::start(mock_cloud::Config {
            nodes: 3,
            dataplane: false,
            ..Default::default()
        })
        .await
        .expect("mock-cloud starts");
        let client =
            kube::Client::try_from(kube::Config::new(cloud.url().parse().unwrap())).unwrap();
        let args = ControllerArgs {
            provider: Some(berth_controller::factory::ProviderKind::Http),
            default_class: true,
            cluster_name: Some("scenario".into()),
            leader_elect: Some(false),
            metrics_listen: Some("off".into()),
            retry_min: Some(Duration::from_millis(100)),
            retry_max: Some(Duration::from_secs(2)),
            gc_interval: Some(Duration::from_secs(3600)),
            ..Default::default()
        };
        let opts = args.options().unwrap();
        let fake = Arc::new(Fake::default());
        let (stop, stop_rx) = watch::channel(false);
        let metrics = Arc::new(berth_controller::metrics::Metrics::default());
        let task = tokio::spawn(serve(
            vec![ClassController {
                client: client.clone(),
                provider: fake.clone(),
                opts,
                extension: None,
            }],
            None,
            stop_rx,
            None,
            metrics.clone(),
        ));
        Scenario {
            cloud: Some(cloud),
            client,
            fake,
            metrics,
            stop,
            task: Some(task),
        }
    }

    fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), "default")
    }

    async fn create(&self, name: &str, extra: serde_json::Value) -> Service {
        let mut svc = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name},
            "spec": {"type": "LoadBalancer", "selector": {"app": name},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
        });
        merge(&mut svc, extra);
        self.services()
            .create(
                &PostParams::default(),
                &serde_json::from_value(svc).unwrap(),
            )
            .await
            .unwrap()
    }

    async fn patch(&self, name: &str, patch: serde_json::Value) {
        self.services()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    /// Polls until `f` gives Some, or panics after 15 s.
    async fn until<T>(&self, what: &str, mut f: impl AsyncFnMut(&Scenario) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(t) = f(self).await {
                return t;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn service(&self, name: &str) -> Option<Service> {
        self.services().get_opt(name).await.unwrap()
    }

    async fn address(&self, name: &str) -> Option<String> {
        self.service(name)
            .await?
            .status?
            .load_balancer?
            .ingress?
            .first()?
            .ip
            .clone()
    }

    async fn condition(&self, name: &str) -> Option<(String, String)> {
        let c = self
            .service(name)
            .await?
            .status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "berth.io/LoadBalancerReady")?;
        Some((c.status, c.reason))
    }

    async fn event_reasons(&self, name: &str) -> Vec<String> {
        let events: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.client.clone(), "default");
        events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .filter_map(|e| e.reason)
            .collect()
    }

    /// How many reconciles have run (any result).
    fn reconciles(&self) -> f64 {
        self.metrics
            .encode()
            .lines()
            .filter(|l| l.starts_with("berth_reconciles_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        if let Some(c) = self.cloud.take() {
            c.shutdown().await;
        }
    }
}

fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

/// Lets anything already queued run, then some.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_publishes_address_condition_and_finalizer_with_one_write() {
    let s = Scenario::start().await;
    s.create("web", json!({})).await;
    let ip = s
        .until("an address", async |s| s.address("web").await)
        .await;
    assert_eq!(ip, "127.250.0.1");
    let svc = s.service("web").await.unwrap();
    assert_eq!(svc.metadata.finalizers.unwrap(), [CLASS_FINALIZER]);
    assert_eq!(
        s.condition("web").await,
        Some(("True".into(), "Ensured".into()))
    );
    let d = s.fake.ensures_of("web").pop().unwrap();
    assert!(
        d.listeners[0].node_port.is_some(),
        "a NodePort was allocated"
    );
    assert_eq!(d.labels["berth.io/class"], "berth.io/http");
    assert_eq!(d.targets.len(), 3);
    settle().await;
    assert_eq!(get(&s.fake.writes), 1);
    assert_eq!(s.fake.ensures_of("web").len(), 1, "one provider call");
    let reasons = s.event_reasons("web").await;
    assert!(reasons.contains(&"EnsuringLoadBalancer".into()));
    assert!(reasons.contains(&"EnsuredLoadBalancer".into()));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_writes_by_anyone_do_not_wake_the_reconciler() {
    let s = Scenario::start().await;
    s.create("web", json!({})).await;
    s.until("an address", async |s| s.address("web").await)
        .await;
    settle().await;
    let calls = s.fake.ensures_of("web").len();
    let reconciles = s.reconciles();
    assert!(reconciles >= 1.0);
    // Someone else adds a condition of their own: a status-only change.
    let patch = json!({"status": {"conditions": [{
        "type": "example.com/Audited", "status": "True", "reason": "Audited", "message": "",
        "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    s.services()
        .patch_status("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    settle().await;
    assert_eq!(s.fake.ensures_of("web").len(), calls);
    assert_eq!(
        s.reconciles(),
        reconciles,
        "a status-only change woke the reconciler"
    );
    // A label is metadata berth may act on: it does wake it (and the cache saves the call).
    s.patch("web", json!({"metadata": {"labels": {"team": "a"}}}))
        .await;
    s.until("a reconcile after the label", async |s| {
        (s.reconciles() > reconciles).then_some(())
    })
    .await;
    assert_eq!(s.fake.ensures_of("web").len(), calls);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_change_updates_the_load_balancer_and_the_published_ports() {
    let s = Scenario::start().await;
    s.create("web", json!({})).await;
    s.until("an address", async |s| s.address("web").await)
        .await;
    s.patch(
        "web",
        json!({"spec": {"ports": [{"name": "http", "port": 81, "targetPort": 8080}]}}),
    )
    .await;
    s.until("port 81 at the provider", async |s| {
        let d = s.fake.ensures_of("web").pop()?;
        (d.listeners[0].port == 81).then_some(())
    })
    .await;
    s.until("port 81 in the status", async |s| {
        let ports = s
            .service("web")
            .await?
            .status?
            .load_balancer?
            .ingress?
            .first()?
            .ports
            .clone()?;
        (ports[0].port == 81).then_some(())
    })
    .await;
    assert_eq!(get(&s.fake.writes), 2);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_excluded_node_leaves_the_targets_with_one_write() {
    let s = Scenario::start().await;
    s.create("web", json!({})).await;
    s.until("an address", async |s| s.address("web").await)
        .await;
    let nodes: Api<Node> = Api::all(s.client.clone());
    nodes
        .patch(
            "node-2",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {
                "node.kubernetes.io/exclude-from-external-load-balancers": "true"}}})),
        )
        .await
        .unwrap();
    s.until("node-2 out of the targets", async |s| {
        let d = s.fake.ensures_of("web").pop()?;
        let names: Vec<_> = d.targets.iter().map(|t| t.name.as_str()).collect();
        (names == ["node-1", "node-3"]).then_some(())
    })
    .await;
    settle().await;
    assert_eq!(
        get(&s.fake.writes),
        2,
        "one write to create, one for the node"
    );
    assert!(
        s.event_reasons("web")
            .await
            .contains(&"UpdatedLoadBalancer".into())
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_change_deletes_the_load_balancer_and_clears_what_berth_published() {
    let s = Scenario::start().await;
    s.create("web", json!({})).await;
    s.until("an address", async |s| s.address("web").await)
        .await;
    s.patch("web", json!({"spec": {"type": "ClusterIP"}})).await;
    s.until("the load balancer deleted", async |s| {
        get(&s.fake.deletes)
            .contains(&"web".to_string())
            .then_some(())
    })
    .await;
    s.until("finalizer, address and condition gone", async |s| {
        let svc = s.service("web").await?;
        let clean = svc.metadata.finalizers.unwrap_or_default().is_empty()
            && s.address("web").await.is_none()
            && s.condition("web").await.is_none();
        clean.then_some(())
    })
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_waits_for_a_failing_provider_and_then_completes() {
    let s = Scenario::start().await;
    s.create("web", json!({})).await;
    s.until("an address", async |s| s.address("web").await)
        .await;
    *s.fake.fail_delete.lock().unwrap() = true;
    s.services()
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    s.until("a DeleteLoadBalancerFailed event", async |s| {
        s.event_reasons("web")
            .await
            .contains(&"DeleteLoadBalancerFailed".into())
            .then_some(())
    })
    .await;
    let held = s.service("web").await.expect("the finalizer holds it");
    assert!(held.metadata.deletion_timestamp.is_some());
    *s.fake.fail_delete.lock().unwrap() = false;
    s.until("the Service gone", async |s| {
        s.service("web").await.is_none().then_some(())
    })
    .await;
    assert_eq!(get(&s.fake.deletes), ["web"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_annotation_is_reported_once_and_nothing_is_created() {
    let s = Scenario::start().await;
    s.create(
        "web",
        json!({"metadata": {"annotations": {"berth.io/health-check-protocol": "GOPHER"}}}),
    )
    .await;
    s.until("the InvalidConfiguration condition", async |s| {
        (s.condition("web").await? == ("False".into(), "InvalidConfiguration".into())).then_some(())
    })
    .await;
    settle().await;
    assert!(
        s.fake.ensures_of("web").is_empty(),
        "nothing reached the provider"
    );
    let warnings = s
        .event_reasons("web")
        .await
        .into_iter()
        .filter(|r| r == "SyncLoadBalancerFailed")
        .count();
    assert_eq!(warnings, 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_address_is_looked_at_again_with_backoff_and_no_events() {
    let s = Scenario::start().await;
    *s.fake.pending.lock().unwrap() = true;
    s.create("web", json!({})).await;
    s.until("the AddressPending condition", async |s| {
        (s.condition("web").await? == ("False".into(), "AddressPending".into())).then_some(())
    })
    .await;
    let events = s.event_reasons("web").await.len();
    // retry-min 100ms doubling to 2s: about 7 looks in 5 s, not hundreds.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let looks = s.fake.ensures_of("web").len();
    assert!((3..=10).contains(&looks), "{looks} looks in ~5 s");
    assert_eq!(get(&s.fake.writes), 1, "looking is not writing");
    assert_eq!(
        s.event_reasons("web").await.len(),
        events,
        "no event per look"
    );
    *s.fake.pending.lock().unwrap() = false;
    s.until("an address once the provider has one", async |s| {
        s.address("web").await
    })
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_class_and_a_legacy_finalizer_of_another_class_are_left_alone() {
    let s = Scenario::start().await;
    s.create(
        "theirs",
        json!({"metadata": {"finalizers": ["berth.io/load-balancer-cleanup"]},
               "spec": {"loadBalancerClass": "example.com/other"}}),
    )
    .await;
    s.create("ours", json!({})).await;
    s.until("an address for ours", async |s| s.address("ours").await)
        .await;
    s.services()
        .delete("theirs", &DeleteParams::default())
        .await
        .unwrap();
    settle().await;
    let theirs = s
        .service("theirs")
        .await
        .expect("still held by its own finalizer");
    assert_eq!(
        theirs.metadata.finalizers.unwrap(),
        ["berth.io/load-balancer-cleanup"]
    );
    assert!(s.fake.ensures_of("theirs").is_empty());
    assert!(get(&s.fake.deletes).is_empty());
    s.stop().await;
}
