//! Where clients can tell mock-cloud from kube-apiserver: empty metadata fields are
//! omitted, and paginated lists continue from their key, report what remains, and refuse
//! bad or compacted continue tokens as kube-apiserver does.

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

async fn create_cms(mc: &MockCloud, ns: &str, n: usize) {
    let path = format!("/api/v1/namespaces/{ns}/configmaps");
    for i in 0..n {
        let label = if i % 3 == 0 { "yes" } else { "no" };
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("cm-{i:03}"), "labels": {"third": label}}});
        let (code, v) = call(mc, "POST", &path, "application/json", body).await;
        assert_eq!(code, 201, "{v}");
    }
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| i["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Pages through `path` (which has a `?`), returning every page's list object.
async fn pages(mc: &MockCloud, path: &str, limit: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cont = String::new();
    loop {
        let (code, page) = get(mc, &format!("{path}&limit={limit}&continue={cont}")).await;
        assert_eq!(code, 200, "{page}");
        let next = page["metadata"]["continue"]
            .as_str()
            .unwrap_or("")
            .to_string();
        out.push(page);
        if next.is_empty() {
            return out;
        }
        cont = next;
        assert!(out.len() < 100, "paging does not end");
    }
}

#[tokio::test]
async fn paged_lists_continue_from_their_key_and_count_what_remains() {
    let mc = start().await;
    create_cms(&mc, "default", 25).await;
    create_cms(&mc, "kube-system", 4).await;

    let ps = pages(&mc, &format!("{CMS}?x=1"), 10).await;
    let all: Vec<String> = ps.iter().flat_map(names).collect();
    let want: Vec<String> = (0..25).map(|i| format!("cm-{i:03}")).collect();
    assert_eq!(all, want);
    let remaining: Vec<Value> = ps
        .iter()
        .map(|p| p["metadata"]["remainingItemCount"].clone())
        .collect();
    assert_eq!(remaining, vec![json!(15), json!(5), Value::Null]);
    // Every page reports the version the list started at.
    let rv0 = ps[0]["metadata"]["resourceVersion"].clone();
    assert!(ps.iter().all(|p| p["metadata"]["resourceVersion"] == rv0));

    // Across namespaces, in (namespace, name) order.
    let ps = pages(&mc, "/api/v1/configmaps?x=1", 7).await;
    let all: Vec<String> = ps.iter().flat_map(names).collect();
    assert_eq!(all.len(), 29);
    assert_eq!(ps[0]["metadata"]["remainingItemCount"], json!(22));

    // With a selector the rest is unknown: no remainingItemCount, same objects as unpaged.
    let sel = format!("{CMS}?labelSelector=third%3Dyes");
    let ps = pages(&mc, &sel, 3).await;
    assert!(
        ps.iter()
            .all(|p| p["metadata"].get("remainingItemCount").is_none())
    );
    let paged: Vec<String> = ps.iter().flat_map(names).collect();
    let (_, unpaged) = get(&mc, &sel).await;
    assert_eq!(paged, names(&unpaged));
    assert_eq!(paged.len(), 9);

    // Objects created behind the cursor are not repeated; those ahead are seen.
    let (_, first) = get(&mc, &format!("{CMS}?limit=10")).await;
    let cont = first["metadata"]["continue"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let mk =
        |name: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});
    for name in ["cm-000a", "cm-999"] {
        call(&mc, "POST", CMS, "application/json", mk(name)).await;
    }
    let (_, second) = get(&mc, &format!("{CMS}?limit=100&continue={cont}")).await;
    let rest = names(&second);
    assert_eq!(rest.first().map(String::as_str), Some("cm-010"));
    assert_eq!(rest.last().map(String::as_str), Some("cm-999"));
    assert!(!rest.contains(&"cm-000a".to_string()));
    mc.shutdown().await;
}

#[tokio::test]
async fn bad_and_compacted_continue_tokens_are_refused_like_kube_apiserver() {
    let mc = start().await;
    create_cms(&mc, "default", 6).await;
    for bad in ["not-base64!", "e30", "eyJ2IjoibWV0YS5rOHMuaW8vdjEifQ"] {
        let (code, status) = get(&mc, &format!("{CMS}?limit=2&continue={bad}")).await;
        assert_eq!(code, 400, "{bad}: {status}");
        assert_eq!(status["reason"], "BadRequest");
        assert!(
            status["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("continue key is not valid")),
            "{status}"
        );
    }

    let (_, first) = get(&mc, &format!("{CMS}?limit=2")).await;
    let cont = first["metadata"]["continue"]
        .as_str()
        .unwrap_or("")
        .to_string();
    // A token of one namespace's list does not continue another's.
    let other = format!("/api/v1/namespaces/kube-system/configmaps?limit=2&continue={cont}");
    let (code, status) = get(&mc, &other).await;
    assert_eq!(
        (code, &status["reason"]),
        (400, &json!("BadRequest")),
        "{status}"
    );
    mc.core.store.compact();
    let (code, status) = get(&mc, &format!("{CMS}?limit=2&continue={cont}")).await;
    assert_eq!(code, 410, "{status}");
    assert_eq!(status["reason"], "Expired");
    // The Status carries a token that goes on from the same place, at the latest version.
    let latest = status["metadata"]["continue"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(!latest.is_empty(), "{status}");
    let (code, rest) = get(&mc, &format!("{CMS}?limit=100&continue={latest}")).await;
    assert_eq!(code, 200, "{rest}");
    assert_eq!(names(&rest), vec!["cm-002", "cm-003", "cm-004", "cm-005"]);
    let now = mc.core.store.current_rv().to_string();
    assert_eq!(rest["metadata"]["resourceVersion"], json!(now));
    mc.shutdown().await;
}
