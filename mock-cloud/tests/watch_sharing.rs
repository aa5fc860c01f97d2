//! Watchers of one resource share each event's encoded object: every watcher must still get
//! the bytes of its own format and served version, and only the events its selector passes.

use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use mock_cloud::testing::{Request, http_bytes};
use mock_cloud::{Config, MockCloud};
use prost::Message;
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use std::time::Duration;

const PB: &str = "application/vnd.kubernetes.protobuf";

/// A watch from `rv` that ends after two seconds: its whole body.
fn watch(
    addr: String,
    path: &str,
    rv: u64,
    accept: &'static str,
) -> tokio::task::JoinHandle<Vec<u8>> {
    let path = format!(
        "{path}{}watch=1&resourceVersion={rv}&timeoutSeconds=2",
        if path.contains('?') { "&" } else { "?" }
    );
    tokio::task::spawn_blocking(move || {
        let req = Request {
            accept,
            ..Request::json("GET", &path, b"")
        };
        let a = http_bytes(&addr, &req).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(
            a.code,
            200,
            "GET {path}: {}",
            String::from_utf8_lossy(&a.body)
        );
        a.body
    })
}

fn send(addr: &str, method: &str, path: &str, content_type: &str, body: Value) {
    let body = body.to_string();
    let req = Request {
        content_type,
        ..Request::json(method, path, body.as_bytes())
    };
    let a = http_bytes(addr, &req).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    assert!(
        a.code < 300,
        "{method} {path}: {}",
        String::from_utf8_lossy(&a.body)
    );
}

/// (type, object) of each line of a JSON watch.
fn json_events(body: &[u8]) -> Vec<(String, Value)> {
    String::from_utf8_lossy(body)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a JSON event per line"))
        .map(|v| {
            (
                v["type"].as_str().unwrap_or("").to_string(),
                v["object"].clone(),
            )
        })
        .collect()
}

/// (type, name, data) of each frame of a protobuf watch of ConfigMaps.
fn proto_events(mut body: &[u8]) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    while body.len() >= 4 {
        let len = u32::from_be_bytes(body[..4].try_into().unwrap()) as usize;
        let ev = meta::WatchEvent::decode(&body[4..4 + len]).expect("WatchEvent");
        body = &body[4 + len..];
        let raw = ev.object.and_then(|o| o.raw).unwrap_or_default();
        let raw = raw.strip_prefix(b"k8s\0").expect("protobuf magic");
        let u = Unknown::decode(raw).expect("runtime.Unknown");
        let cm = core::ConfigMap::decode(&u.raw.unwrap_or_default()[..]).expect("ConfigMap");
        let name = cm.metadata.and_then(|m| m.name).unwrap_or_default();
        out.push((ev.r#type.unwrap_or_default(), name, json!(cm.data)));
    }
    out
}

fn summary(events: &[(String, Value)]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|(t, o)| {
            (
                t.clone(),
                o["metadata"]["name"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_in_other_formats_versions_and_selectors_get_their_own_events() {
    let mc = MockCloud::start(Config {
        nodes: 0,
        dataplane: false,
        ..Default::default()
    })
    .await
    .expect("start mock-cloud");
    let addr = mc.api_addr.to_string();
    let rv = mc.core.store.current_rv();
    let cms = "/api/v1/namespaces/default/configmaps";
    let watches = [
        watch(addr.clone(), cms, rv, "application/json"),
        watch(addr.clone(), cms, rv, PB),
        watch(
            addr.clone(),
            &format!("{cms}?labelSelector=team%3Dblue"),
            rv,
            "application/json",
        ),
        watch(
            addr.clone(),
            "/api/v1/namespaces/default/events",
            rv,
            "application/json",
        ),
        watch(
            addr.clone(),
            "/apis/events.k8s.io/v1/namespaces/default/events",
            rv,
            "application/json",
        ),
    ];
    // Write once every watch is live, so all of them take events from the shared path.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while mc.server.open_watches.load(Ordering::Relaxed) < watches.len() as u64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "watches did not open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let a2 = addr.clone();
    tokio::task::spawn_blocking(move || {
        let json = "application/json";
        send(&a2, "POST", cms, json, json!({"metadata": {"name": "a"}, "data": {"k": "1"}}));
        send(&a2, "POST", cms, json, json!({"metadata": {"name": "b", "labels": {"team": "blue"}}, "data": {"k": "2"}}));
        send(&a2, "PATCH", &format!("{cms}/b"), "application/merge-patch+json", json!({"metadata": {"labels": {"team": "red"}}}));
        send(&a2, "POST", "/api/v1/namespaces/default/events", json, json!({
            "metadata": {"name": "e"}, "message": "shared", "reason": "Testing", "type": "Normal",
            "involvedObject": {"kind": "ConfigMap", "name": "a", "namespace": "default", "apiVersion": "v1"},
        }));
    })
    .await
    .unwrap();
    let mut bodies = Vec::new();
    for w in watches {
        bodies.push(w.await.unwrap());
    }

    let all = json_events(&bodies[0]);
    let expected = [("ADDED", "a"), ("ADDED", "b"), ("MODIFIED", "b")];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(t, n)| (t.to_string(), n.to_string()))
        .collect();
    assert_eq!(summary(&all), expected);
    assert_eq!(all[2].1["metadata"]["labels"]["team"], "red");
    assert_eq!(all[0].1["apiVersion"], "v1");

    // The same events in protobuf, not the JSON watcher's bytes.
    let pb = proto_events(&bodies[1]);
    let pb: Vec<(String, String, Value)> = pb.into_iter().collect();
    assert_eq!(
        pb,
        vec![
            ("ADDED".into(), "a".into(), json!({"k": "1"})),
            ("ADDED".into(), "b".into(), json!({"k": "2"})),
            ("MODIFIED".into(), "b".into(), json!({"k": "2"})),
        ]
    );

    // The selector passes b while it is blue; relabelled, it leaves as DELETED.
    let blue = json_events(&bodies[2]);
    assert_eq!(
        summary(&blue),
        vec![
            ("ADDED".to_string(), "b".to_string()),
            ("DELETED".to_string(), "b".to_string())
        ]
    );

    // One stored Event, served in two versions: each watcher gets its own shape.
    let core_v1 = json_events(&bodies[3]);
    let events_v1 = json_events(&bodies[4]);
    assert_eq!(core_v1.len(), 1);
    assert_eq!(events_v1.len(), 1);
    assert_eq!(core_v1[0].1["apiVersion"], "v1");
    assert_eq!(core_v1[0].1["message"], "shared");
    assert_eq!(events_v1[0].1["apiVersion"], "events.k8s.io/v1");
    assert_eq!(events_v1[0].1["note"], "shared");
    assert!(events_v1[0].1.get("message").is_none());
    mc.shutdown().await;
}
