//! kube-rs against mock-cloud: reflectors, watch resumption and 410 relists, NodePort
//! allocation, and bad input.

mod common;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use mock_cloud::{Config, MockCloud};
use serde_json::json;
use std::time::Duration;

async fn start(cfg: Config) -> (MockCloud, kube::Client) {
    let mc = MockCloud::start(cfg).await.expect("start mock-cloud");
    let config = kube::Config::new(mc.url().parse().unwrap());
    let client = kube::Client::try_from(config).expect("client");
    (mc, client)
}

async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn cm(name: &str, v: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"v": v}})).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflector_follows_changes_resumes_after_drops_and_relists_after_gone() {
    let (mc, client) = start(Config {
        nodes: 0,
        ..Default::default()
    })
    .await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let (reader, writer) = reflector::store();
    let stream = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    let task = tokio::spawn(async move {
        let mut s = std::pin::pin!(stream);
        while s.next().await.is_some() {}
    });
    let value = |name: &str| {
        reader
            .get(&reflector::ObjectRef::new(name).within("default"))
            .and_then(|c| c.data.as_ref().and_then(|d| d.get("v").cloned()))
    };

    api.create(&PostParams::default(), &cm("a", "1"))
        .await
        .unwrap();
    eventually("create seen", || async {
        value("a").as_deref() == Some("1")
    })
    .await;
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "2"}})),
    )
    .await
    .unwrap();
    eventually("update seen", || async {
        value("a").as_deref() == Some("2")
    })
    .await;
    api.delete("a", &DeleteParams::default()).await.unwrap();
    eventually("delete seen", || async { value("a").is_none() }).await;

    // A dropped watch resumes from its resourceVersion: no new list.
    let lists = mc.server.verb_count("list");
    let watches = mc.server.verb_count("watch");
    mc.faults.drop_watches();
    api.create(&PostParams::default(), &cm("b", "1"))
        .await
        .unwrap();
    eventually("create after drop seen", || async { value("b").is_some() }).await;
    eventually("a new watch", || async {
        mc.server.verb_count("watch") > watches
    })
    .await;
    assert_eq!(
        mc.server.verb_count("list"),
        lists,
        "resumed without relisting"
    );

    // History compacted past the watcher's version: 410 Gone, then a relist.
    api.create(&PostParams::default(), &cm("c", "1"))
        .await
        .unwrap();
    eventually("c seen", || async { value("c").is_some() }).await;
    mc.core.store.compact();
    api.create(&PostParams::default(), &cm("d", "1"))
        .await
        .unwrap();
    mc.core.store.compact();
    mc.faults.drop_watches();
    eventually("relist after 410", || async {
        mc.server.verb_count("list") > lists
    })
    .await;
    api.create(&PostParams::default(), &cm("e", "1"))
        .await
        .unwrap();
    eventually("all seen after relist", || async {
        ["b", "c", "d", "e"].iter().all(|n| value(n).is_some())
    })
    .await;
    task.abort();
    mc.shutdown().await;
}

fn svc(name: &str, ports: serde_json::Value) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"type": "NodePort", "ports": ports}
    }))
    .unwrap()
}

fn node_ports(s: &Service) -> Vec<i32> {
    s.spec
        .as_ref()
        .unwrap()
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .filter_map(|p| p.node_port)
        .collect()
}

fn api_error(e: kube::Error) -> (u16, String, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason.clone(), s.message.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_ports_conflict_exhaust_release_and_share_across_protocols() {
    let mut cfg = Config {
        nodes: 0,
        ..Default::default()
    };
    cfg.core.node_port_range = 30000..=30002;
    let (mc, client) = start(cfg).await;
    let api: Api<Service> = Api::namespaced(client, "default");
    let pp = PostParams::default();

    // TCP and UDP on one port share one NodePort.
    let dns = api
        .create(&pp, &svc("dns", json!([{"name": "t", "port": 53, "protocol": "TCP"}, {"name": "u", "port": 53, "protocol": "UDP"}])))
        .await
        .unwrap();
    let p = node_ports(&dns);
    assert_eq!(p.len(), 2);
    assert_eq!(p[0], p[1], "one number for 53/TCP and 53/UDP");

    // An explicit request for a taken port: 422 naming the field.
    let (code, reason, msg) = api_error(
        api.create(&pp, &svc("clash", json!([{"port": 80, "nodePort": p[0]}])))
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert!(msg.contains("spec.ports[0].nodePort"), "{msg}");
    assert!(msg.contains("provided port is already allocated"), "{msg}");

    // Out of range.
    let (code, _, msg) = api_error(
        api.create(&pp, &svc("far", json!([{"port": 80, "nodePort": 40000}])))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422);
    assert!(
        msg.contains("The range of valid ports is 30000-30002"),
        "{msg}"
    );

    // Exhaustion: two more fit, the next one does not.
    api.create(&pp, &svc("s1", json!([{"port": 80}])))
        .await
        .unwrap();
    api.create(&pp, &svc("s2", json!([{"port": 80}])))
        .await
        .unwrap();
    let (code, _, msg) = api_error(
        api.create(&pp, &svc("s3", json!([{"port": 80}])))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 500, "{msg}");
    assert!(msg.contains("range is full"), "{msg}");
    assert!(
        api.get_opt("s3").await.unwrap().is_none(),
        "nothing half-created"
    );

    // Release on delete, then reuse.
    api.delete("dns", &DeleteParams::default()).await.unwrap();
    let s3 = api
        .create(&pp, &svc("s3", json!([{"port": 80}])))
        .await
        .unwrap();
    assert_eq!(node_ports(&s3), vec![p[0]]);

    // Changing the type to ClusterIP releases its NodePort.
    api.patch(
        "s1",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"type": "ClusterIP"}})),
    )
    .await
    .unwrap();
    let s4 = api
        .create(&pp, &svc("s4", json!([{"port": 81}])))
        .await
        .unwrap();
    assert_eq!(node_ports(&s4).len(), 1);
    mc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_status_errors_and_changes_nothing() {
    let (mc, _client) = start(Config {
        nodes: 0,
        ..Default::default()
    })
    .await;
    let addr = mc.api_addr.to_string();
    let before = mc.core.writes.load(std::sync::atomic::Ordering::Relaxed);
    type Case = (
        &'static str,
        &'static str,
        &'static str,
        Vec<u8>,
        u16,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        ("POST", "/api/v1/namespaces/default/services", "application/json", b"{not json".to_vec(), 400, "BadRequest"),
        ("POST", "/api/v1/namespaces/default/frobs", "application/json", b"{}".to_vec(), 404, "NotFound"),
        ("POST", "/api/v1/namespaces/default/configmaps", "application/xml", b"<cm/>".to_vec(), 415, "UnsupportedMediaType"),
        ("POST", "/api/v1/namespaces/default/configmaps", "application/json", vec![b' '; 4 * 1024 * 1024], 413, "RequestEntityTooLarge"),
        ("PATCH", "/api/v1/namespaces/default/services/kubernetes", "text/plain", b"{}".to_vec(), 415, "UnsupportedMediaType"),
        ("PATCH", "/api/v1/namespaces/default/services/kubernetes", "application/json-patch+json", b"[{\"op\":\"test\",\"path\":\"/spec/type\",\"value\":\"NodePort\"}]".to_vec(), 422, "Invalid"),
        ("POST", "/api/v1/namespaces/nowhere/configmaps", "application/json", br#"{"metadata":{"name":"x"}}"#.to_vec(), 404, "NotFound"),
        ("POST", "/api/v1/namespaces/default/services", "application/json", br#"{"metadata":{"name":"dup"},"spec":{"ports":[{"port":80},{"port":80}]}}"#.to_vec(), 422, "Invalid"),
        ("POST", "/api/v1/namespaces/default/services", "application/json", br#"{"metadata":{"name":"proto"},"spec":{"ports":[{"port":80,"protocol":"FOO"}]}}"#.to_vec(), 422, "Invalid"),
        ("PUT", "/api/v1/namespaces/default/services/kubernetes", "application/json", br#"{"metadata":{"name":"kubernetes","resourceVersion":"1"},"spec":{"ports":[{"port":443}]}}"#.to_vec(), 409, "Conflict"),
    ];
    for (method, path, ct, body, code, reason) in cases {
        let (got, text) = common::raw_http(&addr, method, path, ct, &body);
        assert_eq!(got, code, "{method} {path} ({ct}): {text}");
        let status: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(status["kind"], "Status", "{text}");
        assert_eq!(status["reason"], reason, "{text}");
        assert_eq!(status["code"], code, "{text}");
    }
    let after = mc.core.writes.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(before, after, "no bad request wrote anything");
    mc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_an_expired_version_gets_410_and_timeouts_end_streams() {
    let (mc, client) = start(Config {
        nodes: 0,
        ..Default::default()
    })
    .await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    api.create(&PostParams::default(), &cm("x", "1"))
        .await
        .unwrap();
    mc.core.store.compact();
    let addr = mc.api_addr.to_string();
    let (code, body) = tokio::task::spawn_blocking(move || {
        common::raw_http(
            &addr,
            "GET",
            "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=2&timeoutSeconds=5",
            "application/json",
            b"",
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 200);
    let ev: serde_json::Value = serde_json::from_str(body.lines().next().unwrap()).unwrap();
    assert_eq!(ev["type"], "ERROR");
    assert_eq!(ev["object"]["code"], 410);
    assert_eq!(ev["object"]["reason"], "Expired");

    // timeoutSeconds ends the stream; a label selector filters, and an object that stops
    // matching is reported as DELETED.
    let addr = mc.api_addr.to_string();
    let rv = mc.core.store.current_rv();
    let api2 = api.clone();
    let watcher = tokio::task::spawn_blocking(move || {
        common::raw_http(
            &addr,
            "GET",
            &format!(
                "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}&timeoutSeconds=2&labelSelector=team%3Dblue"
            ),
            "application/json",
            b"",
        )
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut blue = cm("y", "1");
    blue.metadata.labels = Some([("team".to_string(), "blue".to_string())].into());
    api2.create(&PostParams::default(), &blue).await.unwrap();
    api2.create(&PostParams::default(), &cm("z", "1"))
        .await
        .unwrap();
    api2.patch(
        "y",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"team": "red"}}})),
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let (code, body) = watcher.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(code, 200);
    let events: Vec<(String, String)> = body
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| {
            (
                v["type"].as_str().unwrap().to_string(),
                v["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        events,
        vec![("ADDED".into(), "y".into()), ("DELETED".into(), "y".into())]
    );
    mc.shutdown().await;
}

/// Writes are audited with the bearer token that sent them (reads are not), and every
/// mock-cloud's namespaces get fresh uids (berth's default cluster id is kube-system's uid).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_audited_by_token_and_namespace_uids_are_fresh() {
    let cfg = || Config {
        nodes: 0,
        ..Default::default()
    };
    let (mc, _) = start(cfg()).await;
    let mut config = kube::Config::new(mc.url().parse().unwrap());
    config.headers.push((
        hyper::header::AUTHORIZATION,
        hyper::header::HeaderValue::from_static("Bearer replica-a"),
    ));
    let client = kube::Client::try_from(config).expect("client");
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    api.create(&PostParams::default(), &cm("audited", "1"))
        .await
        .unwrap();
    api.get("audited").await.unwrap();
    api.delete("audited", &DeleteParams::default())
        .await
        .unwrap();
    let page = mc.server.audit.since(0);
    let seen: Vec<(&str, &str, Option<u16>)> = page
        .items
        .iter()
        .map(|e| (e.verb.as_str(), e.token.as_str(), e.code))
        .collect();
    assert_eq!(
        seen,
        [
            ("create", "replica-a", Some(201)),
            ("delete", "replica-a", Some(200))
        ]
    );
    assert!(
        page.items[0]
            .path
            .ends_with("/namespaces/default/configmaps")
    );

    let (other, _) = start(cfg()).await;
    let ns = mc.core.info("", "v1", "namespaces").unwrap();
    let uid = |m: &MockCloud| {
        m.core.get(&ns, "", "kube-system").unwrap()["metadata"]["uid"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_ne!(uid(&mc), uid(&other));
    other.shutdown().await;
    mc.shutdown().await;
}
