//! Where clients can tell mock-cloud from kube-apiserver: empty metadata fields are
//! omitted.

mod common;

use mock_cloud::{Config, MockCloud};
use serde_json::{Value, json};

async fn start() -> MockCloud {
    MockCloud::start(Config {
        nodes: 0,
        ..Default::default()
    })
    .await
    .expect("start mock-cloud")
}

/// A raw request to the API server: (status, body as JSON).
async fn call(mc: &MockCloud, method: &str, path: &str, ct: &str, body: Value) -> (u16, Value) {
    let addr = mc.url().trim_start_matches("http://").to_string();
    let (method, path, ct) = (method.to_string(), path.to_string(), ct.to_string());
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    let (code, text) =
        tokio::task::spawn_blocking(move || common::raw_http(&addr, &method, &path, &ct, &body))
            .await
            .expect("request thread");
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (code, v)
}

async fn get(mc: &MockCloud, path: &str) -> (u16, Value) {
    call(mc, "GET", path, "application/json", Value::Null).await
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";

fn meta_keys(obj: &Value) -> Vec<String> {
    let mut keys: Vec<String> = obj["metadata"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    keys.sort();
    keys
}

#[tokio::test]
async fn empty_metadata_lists_and_maps_are_omitted() {
    let mc = start().await;
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
        "name": "a", "labels": {}, "annotations": {}, "finalizers": ["example.com/hold"],
        "ownerReferences": []}});
    let (code, created) = call(&mc, "POST", CMS, "application/json", body).await;
    assert_eq!(code, 201, "{created}");
    for key in ["labels", "annotations", "ownerReferences", "managedFields"] {
        assert!(!meta_keys(&created).contains(&key.to_string()), "{created}");
    }
    assert_eq!(
        created["metadata"]["finalizers"],
        json!(["example.com/hold"])
    );

    // An emptied finalizer list comes back absent, from the patch, a GET and a list.
    let patch = json!({"metadata": {"finalizers": [], "labels": {"x": "1"}}});
    let ct = "application/merge-patch+json";
    let (code, patched) = call(&mc, "PATCH", &format!("{CMS}/a"), ct, patch).await;
    assert_eq!(code, 200, "{patched}");
    assert_eq!(patched["metadata"].get("finalizers"), None, "{patched}");
    assert_eq!(patched["metadata"]["labels"], json!({"x": "1"}));
    let (_, got) = get(&mc, &format!("{CMS}/a")).await;
    assert_eq!(got["metadata"].get("finalizers"), None, "{got}");
    // Removing the last label drops the map.
    let patch = json!({"metadata": {"labels": {"x": null}}});
    let (_, patched) = call(&mc, "PATCH", &format!("{CMS}/a"), ct, patch).await;
    assert_eq!(patched["metadata"].get("labels"), None, "{patched}");
    let (_, list) = get(&mc, CMS).await;
    let item = &list["items"][0];
    assert_eq!(item["metadata"]["name"], "a");
    for key in ["labels", "annotations", "finalizers", "ownerReferences"] {
        assert!(!meta_keys(item).contains(&key.to_string()), "{item}");
    }
    // A write that only spells out empty fields changes nothing (same resourceVersion).
    let rv = patched["metadata"]["resourceVersion"].clone();
    let patch = json!({"metadata": {"annotations": {}, "finalizers": []}});
    let (_, same) = call(&mc, "PATCH", &format!("{CMS}/a"), ct, patch).await;
    assert_eq!(same["metadata"]["resourceVersion"], rv, "{same}");
    mc.shutdown().await;
}
