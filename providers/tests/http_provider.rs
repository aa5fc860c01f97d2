//! The `http` provider against a small in-process implementation of berth's load balancer
//! API (`docs/http-provider.openapi.yaml`) that records every request and can be told to
//! fail the next ones.

#[path = "http_provider/fake_api.rs"]
mod fake_api;
use fake_api::*;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use berth_providers::http::{HttpProvider, HttpProviderConfig, MetricsHook};
use berth_providers::{
    DesiredLoadBalancer, Ingress, IpMode, LABEL_CLUSTER, NodeTarget, Protocol, Provider,
    ProviderError, ServiceRef,
};
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------------------------------
// The fake load balancer API.

async fn handle(
    State(api): State<Arc<Api>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    api.seen.lock().unwrap().push(Seen {
        method: method.clone(),
        uri: uri.to_string(),
        if_match: header(header::IF_MATCH),
        if_none_match: header(header::IF_NONE_MATCH),
        authorization: header(header::AUTHORIZATION),
        prefer: header(header::HeaderName::from_static("prefer")),
        content_type: header(header::CONTENT_TYPE),
        at: Instant::now(),
    });

    if let Some(token) = api.token.lock().unwrap().clone()
        && header(header::AUTHORIZATION) != Some(format!("Bearer {token}"))
    {
        return error(StatusCode::UNAUTHORIZED, "Unauthorized", "Bad token", None);
    }
    {
        let mut faults = api.faults.lock().unwrap();
        if faults
            .front()
            .is_some_and(|f| f.method.as_ref().is_none_or(|m| *m == method))
        {
            let fault = faults.pop_front().unwrap();
            let mut resp = error(fault.status, "Injected", "Injected fault", None);
            if let Some(secs) = fault.retry_after {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, secs.to_string().parse().unwrap());
            }
            return resp;
        }
    }

    let path = uri.path();
    if path == "/v1/loadbalancers" && method == Method::GET {
        let cluster = uri.query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("cluster="))
                .map(str::to_string)
        });
        let labels_only = uri
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv == "view=labels"));
        let lbs = api.lbs.lock().unwrap();
        let items: Vec<Value> = lbs
            .iter()
            .filter(|(_, lb)| {
                cluster.as_deref().is_none_or(|c| lb.spec["labels"][LABEL_CLUSTER] == c)
            })
            .map(|(id, lb)| {
                if labels_only {
                    json!({"id": id, "spec": {"labels": lb.spec["labels"]}})
                } else {
                    json!({"id": id, "spec": lb.spec, "status": {}, "etag": lb.etag, "generation": lb.generation})
                }
            })
            .collect();
        return axum::Json(json!({ "items": items })).into_response();
    }
    let Some(id) = path.strip_prefix("/v1/loadbalancers/") else {
        return error(StatusCode::NOT_FOUND, "NotFound", "No such path", None);
    };
    let mut lbs = api.lbs.lock().unwrap();
    match method {
        Method::GET => match lbs.get(id) {
            Some(lb) => lb_response(StatusCode::OK, id, lb),
            None => error(
                StatusCode::NOT_FOUND,
                "NotFound",
                "No such load balancer",
                None,
            ),
        },
        Method::DELETE => match lbs.remove(id) {
            Some(_) => StatusCode::NO_CONTENT.into_response(),
            None => error(
                StatusCode::NOT_FOUND,
                "NotFound",
                "No such load balancer",
                None,
            ),
        },
        Method::PUT => {
            let Ok(spec) = serde_json::from_slice::<Value>(&body) else {
                return error(StatusCode::BAD_REQUEST, "BadRequest", "Not JSON", None);
            };
            let requested = spec["requestedAddresses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for (i, a) in requested.iter().enumerate() {
                if !a.as_str().unwrap_or_default().starts_with("192.0.2.") {
                    return error(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "Invalid",
                        "Address is outside the pool 192.0.2.0/24",
                        Some(&format!("requestedAddresses[{i}]")),
                    );
                }
            }
            let existing = lbs.get(id);
            if header(header::IF_NONE_MATCH).as_deref() == Some("*") && existing.is_some() {
                return error(
                    StatusCode::PRECONDITION_FAILED,
                    "PreconditionFailed",
                    "Exists",
                    None,
                );
            }
            if let Some(want) = header(header::IF_MATCH)
                && existing.is_none_or(|lb| lb.etag != want)
            {
                return error(
                    StatusCode::PRECONDITION_FAILED,
                    "PreconditionFailed",
                    "Changed",
                    None,
                );
            }
            if let Some(lb) = existing.filter(|lb| lb.spec == spec) {
                return lb_response(StatusCode::OK, id, lb);
            }
            let n = api.writes.fetch_add(1, Ordering::SeqCst) + 1;
            let created = existing.is_none();
            let generation = existing.map_or(1, |lb| lb.generation + 1);
            let address = match (existing, requested.first().and_then(Value::as_str)) {
                (_, Some(ip)) => ip.to_string(),
                (Some(lb), None) => lb.address.clone(),
                (None, None) => format!("192.0.2.{}", lbs.len() + 1),
            };
            let stored = Stored {
                spec,
                etag: format!("\"w{n}\""),
                generation,
                address,
            };
            let resp = lb_response(
                if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                },
                id,
                &stored,
            );
            lbs.insert(id.to_string(), stored);
            resp
        }
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "BadRequest", "Method", None),
    }
}

/// Serves `api` over plain HTTP; returns the endpoint.
async fn serve(api: Arc<Api>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(api)).await.unwrap() });
    format!("http://{addr}")
}

/// Serves `api` over TLS with `config`; returns the endpoint.
async fn serve_tls(api: Arc<Api>, config: rustls::ServerConfig) -> String {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let listener = TlsListener {
        tcp,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    };
    tokio::spawn(async move { axum::serve(listener, router(api)).await.unwrap() });
    format!("https://{addr}")
}

// ---------------------------------------------------------------------------------------
// Fixtures.

// ---------------------------------------------------------------------------------------
// Tests.

#[tokio::test]
async fn create_then_unchanged_ensure_writes_once() {
    let api = Arc::new(Api::default());
    let p = provider(config(&serve(api.clone()).await));
    let lb = desired("c1", "web");

    let first = p.ensure(&lb).await.unwrap();
    let second = p.ensure(&lb).await.unwrap();

    assert_eq!(
        first.ingress,
        vec![Ingress {
            ip: Some("192.0.2.1".parse().unwrap()),
            hostname: None,
            ip_mode: IpMode::Proxy
        }]
    );
    assert_eq!(second, first);
    assert_eq!(api.seen_methods(), ["GET", "PUT", "GET"]);
    let puts = api.puts();
    assert_eq!(puts[0].if_none_match.as_deref(), Some("*"));
    assert_eq!(puts[0].if_match, None);
    assert_eq!(puts[0].uri, format!("/v1/loadbalancers/{}", lb.id));
    // This fake ignores the preference and answers in full, which berth reads as well.
    assert_eq!(puts[0].prefer.as_deref(), Some("return=minimal"));
    assert_eq!(puts[0].content_type.as_deref(), Some("application/json"));
    let stored = api.spec_of(&lb.id).unwrap();
    assert_eq!(stored["listeners"][0]["targetPort"], 30080);
    assert_eq!(
        stored["targets"],
        json!([{"name": "node-a", "address": "10.0.0.1"}])
    );
}

#[tokio::test]
async fn changed_spec_is_written_with_if_match() {
    let api = Arc::new(Api::default());
    let p = provider(config(&serve(api.clone()).await));
    let mut lb = desired("c1", "web");
    p.ensure(&lb).await.unwrap();
    let etag = api.lbs.lock().unwrap()[&lb.id].etag.clone();

    lb.targets = [&lb.targets[..], &[node("node-b", "10.0.0.2")]]
        .concat()
        .into();
    let status = p.ensure(&lb).await.unwrap();

    assert_eq!(status.ingress[0].ip, Some("192.0.2.1".parse().unwrap()));
    // The provider wrote this load balancer itself: the update needs no read first.
    assert_eq!(api.seen_methods(), ["GET", "PUT", "PUT"]);
    let update = &api.puts()[1];
    assert_eq!(update.if_match.as_deref(), Some(etag.as_str()));
    assert_eq!(update.if_none_match, None);
    assert_eq!(
        api.spec_of(&lb.id).unwrap()["targets"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // An unchanged spec is always read back (periodic re-ensures repair drift).
    p.ensure(&lb).await.unwrap();
    assert_eq!(api.seen_methods(), ["GET", "PUT", "PUT", "GET"]);
    // A provider that never saw it (e.g. after a restart) reads before writing.
    let fresh = provider(config(&serve(api.clone()).await));
    lb.targets = lb.targets[..lb.targets.len() - 1].into();
    fresh.ensure(&lb).await.unwrap();
    assert_eq!(
        api.seen_methods(),
        ["GET", "PUT", "PUT", "GET", "GET", "PUT"]
    );
}

#[tokio::test]
async fn a_load_balancer_deleted_behind_berths_back_is_recreated_on_the_next_change() {
    let api = Arc::new(Api::default());
    let p = provider(config(&serve(api.clone()).await));
    let mut lb = desired("c1", "web");
    p.ensure(&lb).await.unwrap();
    api.lbs.lock().unwrap().remove(&lb.id);

    lb.targets = [&lb.targets[..], &[node("node-b", "10.0.0.2")]]
        .concat()
        .into();
    p.ensure(&lb).await.unwrap();

    // If-Match on an absent load balancer is refused; berth reads and creates it.
    assert_eq!(api.seen_methods(), ["GET", "PUT", "PUT", "GET", "PUT"]);
    assert_eq!(api.puts()[2].if_none_match.as_deref(), Some("*"));
    assert_eq!(
        api.spec_of(&lb.id).unwrap()["targets"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn precondition_failure_rereads_and_retries() {
    let api = Arc::new(Api::default());
    let p = provider(config(&serve(api.clone()).await));
    let mut lb = desired("c1", "web");
    p.ensure(&lb).await.unwrap();

    lb.listeners[0].node_port = Some(30081);
    api.fail_next(Some(Method::PUT), 412, None, 1);
    p.ensure(&lb).await.unwrap();

    // The update goes straight to PUT with the known ETag; its 412 makes berth read again.
    assert_eq!(api.seen_methods(), ["GET", "PUT", "PUT", "GET", "PUT"]);
    assert_eq!(
        api.spec_of(&lb.id).unwrap()["listeners"][0]["targetPort"],
        30081
    );
}

#[tokio::test]
async fn create_race_ends_without_a_second_write() {
    let api = Arc::new(Api::default());
    let endpoint = serve(api.clone()).await;
    let (p, other) = (provider(config(&endpoint)), provider(config(&endpoint)));
    let lb = desired("c1", "web");
    other.ensure(&lb).await.unwrap();
    api.seen.lock().unwrap().clear();
    // Our read happened just before the other replica created it.
    api.fail_next(Some(Method::GET), 404, None, 1);

    let status = p.ensure(&lb).await.unwrap();

    assert_eq!(status.ingress.len(), 1);
    // The create is refused (412), the re-read finds it already right: no write.
    assert_eq!(api.seen_methods(), ["GET", "PUT", "GET"]);
    assert_eq!(api.writes.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn throttling_waits_for_retry_after() {
    let api = Arc::new(Api::default());
    let p = provider(config(&serve(api.clone()).await));
    api.fail_next(Some(Method::GET), 429, Some(1), 1);

    let started = Instant::now();
    p.ensure(&desired("c1", "web")).await.unwrap();

    assert!(started.elapsed() >= Duration::from_secs(1));
    let seen = api.seen();
    assert_eq!(api.seen_methods(), ["GET", "GET", "PUT"]);
    assert!(seen[1].at - seen[0].at >= Duration::from_secs(1));
}

#[tokio::test]
async fn exhausted_throttling_carries_retry_after() {
    let api = Arc::new(Api::default());
    let p = provider(HttpProviderConfig {
        max_retries: 1,
        ..config(&serve(api.clone()).await)
    });
    api.fail_next(None, 503, Some(1), 5);

    let err = p.ensure(&desired("c1", "web")).await.unwrap_err();

    assert_eq!(api.seen_methods(), ["GET", "GET"]);
    match err {
        ProviderError::Transient {
            message,
            retry_after,
        } => {
            assert_eq!(retry_after, Some(Duration::from_secs(1)));
            assert!(message.contains("503"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn server_errors_exhaust_retries_as_transient() {
    let api = Arc::new(Api::default());
    let p = provider(HttpProviderConfig {
        max_retries: 2,
        ..config(&serve(api.clone()).await)
    });
    api.fail_next(None, 500, None, 10);

    let err = p.ensure(&desired("c1", "web")).await.unwrap_err();

    assert_eq!(api.seen_methods(), ["GET", "GET", "GET"]);
    assert!(err.is_retryable());
    assert_eq!(err.metric_label(), "transient");
    assert_eq!(err.retry_after(), None);
    assert!(
        err.to_string().contains("500 Internal Server Error"),
        "{err}"
    );
}

#[tokio::test]
async fn unreachable_api_is_transient() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let p = provider(HttpProviderConfig {
        max_retries: 1,
        ..config(&endpoint)
    });

    let err = p.ensure(&desired("c1", "web")).await.unwrap_err();

    assert!(matches!(err, ProviderError::Transient { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("Cannot reach the load balancer API"),
        "{err}"
    );
}

#[tokio::test]
async fn unprocessable_is_invalid_with_the_servers_field() {
    let api = Arc::new(Api::default());
    let p = provider(config(&serve(api.clone()).await));
    let mut lb = desired("c1", "web");
    lb.requested_addresses = vec!["203.0.113.5".parse().unwrap()];

    let err = p.ensure(&lb).await.unwrap_err();

    assert_eq!(
        err,
        ProviderError::Invalid {
            field: "requestedAddresses[0]".into(),
            message: "Address is outside the pool 192.0.2.0/24".into(),
        }
    );
    assert!(!err.is_retryable());
    assert_eq!(api.seen_methods(), ["GET", "PUT"]);
}

#[tokio::test]
async fn invalid_service_is_rejected_before_any_request() {
    let api = Arc::new(Api::default());
    let p = provider(config(&serve(api.clone()).await));
    let mut lb = desired("c1", "web");
    lb.listeners[0].protocol = Protocol::Sctp;

    let want = ProviderError::Invalid {
        field: "spec.ports[0].protocol".into(),
        message: "SCTP is not supported by the http provider; accepted values: \"TCP\", \"UDP\""
            .into(),
    };
    assert_eq!(p.validate(&lb).unwrap_err(), want);
    assert_eq!(p.ensure(&lb).await.unwrap_err(), want);
    assert!(api.seen().is_empty());
    assert!(p.needs_node_ports());
    assert_eq!(p.name(), "http");
}

#[tokio::test]
async fn delete_is_idempotent() {
    let api = Arc::new(Api::default());
    let p = provider(config(&serve(api.clone()).await));
    let lb = desired("c1", "web");
    p.ensure(&lb).await.unwrap();

    p.delete(&lb.reference()).await.unwrap();
    p.delete(&lb.reference()).await.unwrap();

    assert!(api.spec_of(&lb.id).is_none());
    assert_eq!(api.seen_methods(), ["GET", "PUT", "DELETE", "DELETE"]);
}

/// berth lists ids and labels only: 400 load balancers of 1,000 targets each are about
/// 28 MB whole, past the 16 MiB berth reads of a list, and a few hundred KiB as labels.
#[tokio::test]
async fn listing_asks_for_labels_only_so_large_load_balancers_stay_under_the_cap() {
    let api = Arc::new(Api::default());
    let p = provider(config(&serve(api.clone()).await));
    let lb = desired("c1", "web");
    p.ensure(&lb).await.unwrap();
    let mut spec = api.spec_of(&lb.id).unwrap();
    spec["targets"] = (0..1000)
        .map(|i| json!({"name": format!("node-{i:04}-of-a-large-cluster"), "address": format!("10.1.{}.{}", i / 250, i % 250)}))
        .collect();
    let mut whole = 0;
    for i in 0..400 {
        let mut s = spec.clone();
        s["labels"]["berth.io/service-uid"] = json!(format!("uid-{i}"));
        whole += serde_json::to_vec(&s).unwrap().len();
        api.insert(&format!("b-web-{i}"), s);
    }
    assert!(whole > 16 << 20, "{whole} bytes whole");
    let owned = p.list_owned("c1").await.unwrap();
    assert_eq!(owned.len(), 401);
}

#[tokio::test]
async fn list_owned_returns_this_clusters_load_balancers() {
    let api = Arc::new(Api::default());
    let p = provider(config(&serve(api.clone()).await));
    let (web, db, elsewhere) = (
        desired("c1", "web"),
        desired("c1", "db"),
        desired("c2", "web"),
    );
    for lb in [&web, &db, &elsewhere] {
        p.ensure(lb).await.unwrap();
    }
    // Same cluster label, but not a full set of ownership labels: not berth's.
    api.insert("hand-made", json!({"labels": {LABEL_CLUSTER: "c1"}, "listeners": [], "targets": [], "healthCheck": {"protocol": "TCP"}}));

    let mut owned = p.list_owned("c1").await.unwrap();
    owned.sort_by(|a, b| a.service.name.cmp(&b.service.name));

    let got: Vec<_> = owned
        .iter()
        .map(|o| (o.id.as_str(), &o.service, o.cluster.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (db.id.as_str(), &db.service, "c1"),
            (web.id.as_str(), &web.service, "c1")
        ]
    );
    assert_eq!(owned[0].labels, db.labels);
    assert_eq!(
        api.seen().last().unwrap().uri,
        "/v1/loadbalancers?cluster=c1&view=labels"
    );
}

#[tokio::test]
async fn foreign_load_balancer_with_the_same_id_is_not_touched() {
    let api = Arc::new(Api::default());
    let p = provider(config(&serve(api.clone()).await));
    let lb = desired("c1", "web");
    let mut labels = lb.labels.clone();
    labels.insert("berth.io/service-uid".into(), "someone-else".into());
    api.insert(&lb.id, json!({"labels": labels, "listeners": [], "targets": [], "healthCheck": {"protocol": "TCP"}}));

    let err = p.ensure(&lb).await.unwrap_err();

    assert!(matches!(err, ProviderError::Permanent(_)), "{err:?}");
    assert!(err.to_string().contains("berth did not create it"), "{err}");
    assert_eq!(api.seen_methods(), ["GET"]);
}

#[tokio::test]
async fn bearer_token_is_read_from_the_file_on_every_request() {
    let api = Arc::new(Api::default());
    let token_file = temp_file("token", "first-token\n");
    let p = provider(HttpProviderConfig {
        token_file: Some(token_file.clone()),
        ..config(&serve(api.clone()).await)
    });
    let lb = desired("c1", "web");
    *api.token.lock().unwrap() = Some("first-token".into());
    p.ensure(&lb).await.unwrap();

    // Rotation: the server and the file change together.
    *api.token.lock().unwrap() = Some("second-token".into());
    std::fs::write(&token_file, "second-token").unwrap();
    p.delete(&lb.reference()).await.unwrap();

    let auth: Vec<_> = api
        .seen()
        .into_iter()
        .map(|s| s.authorization.unwrap())
        .collect();
    assert_eq!(
        auth,
        [
            "Bearer first-token",
            "Bearer first-token",
            "Bearer second-token"
        ]
    );

    // A stale token is the operator's to fix: permanent, and it says so.
    *api.token.lock().unwrap() = Some("third-token".into());
    let err = p.ensure(&lb).await.unwrap_err();
    assert!(matches!(err, ProviderError::Permanent(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("refused the credentials (401 Unauthorized)"),
        "{err}"
    );

    // A missing file sends nothing and says which file.
    std::fs::remove_file(&token_file).unwrap();
    let before = api.seen().len();
    let err = p.ensure(&lb).await.unwrap_err();
    assert!(matches!(err, ProviderError::Transient { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("Cannot read token file {}", token_file.display())),
        "{err}"
    );
    assert_eq!(api.seen().len(), before);
}

#[tokio::test]
async fn custom_ca_is_trusted_only_when_configured() {
    install_crypto();
    let api = Arc::new(Api::default());
    let (ca_pem, server_config) = test_pki();
    let endpoint = serve_tls(api.clone(), server_config).await;
    let ca_file = temp_file("ca.pem", &ca_pem);

    let trusting = provider(HttpProviderConfig {
        ca_bundle: Some(ca_file),
        ..config(&endpoint)
    });
    let status = trusting.ensure(&desired("c1", "web")).await.unwrap();
    assert_eq!(status.ingress.len(), 1);

    let untrusting = provider(HttpProviderConfig {
        max_retries: 0,
        ..config(&endpoint)
    });
    let err = untrusting.ensure(&desired("c1", "web")).await.unwrap_err();
    assert!(matches!(err, ProviderError::Transient { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("certificate"), "{message}");
    assert_eq!(
        api.seen_methods(),
        ["GET", "PUT"],
        "the untrusted server saw no request"
    );
}

#[tokio::test]
async fn unusable_ca_bundle_fails_at_construction() {
    install_crypto();
    let missing = std::env::temp_dir().join("berth-providers-no-such-ca.pem");
    let not_pem = temp_file("not-a-ca.pem", "hello");
    for (path, want) in [
        (missing, "Cannot read CA bundle"),
        (not_pem, "holds no PEM certificates"),
    ] {
        let err = HttpProvider::new(HttpProviderConfig {
            ca_bundle: Some(path),
            ..config("https://127.0.0.1:1")
        })
        .err()
        .unwrap();
        assert!(matches!(err, ProviderError::Permanent(_)), "{err:?}");
        assert!(err.to_string().contains(want), "{err}");
    }
}

#[tokio::test]
async fn metrics_hook_sees_every_attempt() {
    let api = Arc::new(Api::default());
    let calls = Arc::new(Mutex::new(Vec::new()));
    let hook: MetricsHook = {
        let calls = calls.clone();
        Arc::new(move |op, outcome, _elapsed| calls.lock().unwrap().push((op, outcome)))
    };
    let p = provider(config(&serve(api.clone()).await)).with_metrics(hook);
    api.fail_next(Some(Method::GET), 503, Some(0), 1);
    let lb = desired("c1", "web");

    p.ensure(&lb).await.unwrap();
    p.delete(&lb.reference()).await.unwrap();
    p.list_owned("c1").await.unwrap();

    assert_eq!(
        *calls.lock().unwrap(),
        [
            ("get", "unavailable"),
            ("get", "not_found"),
            ("put", "success"),
            ("delete", "success"),
            ("list", "success"),
        ]
    );
}
