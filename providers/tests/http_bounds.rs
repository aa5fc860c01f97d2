//! The `http` provider against servers that answer too much: bodies larger than berth
//! reads (chunked or by `Content-Length`), huge and ever-changing error messages, and
//! endpoints with credentials in them. Every error stays bounded, stable where it should be,
//! and free of secrets.

use berth_providers::http::{HttpProvider, HttpProviderConfig};
use berth_providers::{
    DesiredLoadBalancer, NodeTarget, Protocol, Provider, ProviderError, ServiceRef,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------------------------------
// A raw HTTP/1.1 server whose answers are chosen per request.

/// What the server sends back.
enum Answer {
    /// `status` with a JSON body, `Content-Length` set.
    Json(u16, String),
    /// `200` with a chunked body of 64 KiB chunks, up to `bytes` (the client hangs up first).
    Chunked { bytes: usize },
    /// `status` claiming `Content-Length: length` but sending `prefix` and then holding the
    /// connection open without sending more.
    Declared {
        status: u16,
        length: usize,
        prefix: &'static str,
    },
    /// `status` with a JSON error whose message is `size` bytes, streamed.
    HugeMessage { status: u16, size: usize },
}

type Chooser = Arc<dyn Fn(&str, &str) -> Answer + Send + Sync>;

/// Serves on 127.0.0.1; returns `host:port`.
async fn serve(choose: Chooser) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let choose = choose.clone();
            tokio::spawn(async move {
                let _ = answer(conn, choose).await;
            });
        }
    });
    addr.to_string()
}

async fn answer(mut conn: TcpStream, choose: Chooser) -> std::io::Result<()> {
    // The request head (and a body small enough to arrive with it).
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut chunk).await?;
        if n == 0 || buf.len() > 1 << 20 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut words = head.split_whitespace();
    let method = words.next().unwrap_or_default().to_string();
    let path = words.next().unwrap_or_default().to_string();
    match choose(&method, &path) {
        Answer::Json(status, body) => {
            let head = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            conn.write_all(head.as_bytes()).await?;
            conn.write_all(body.as_bytes()).await?;
        }
        Answer::Chunked { bytes } => {
            conn.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
            )
            .await?;
            let data = vec![b'a'; 64 * 1024];
            let mut frame = format!("{:x}\r\n", data.len()).into_bytes();
            frame.extend_from_slice(&data);
            frame.extend_from_slice(b"\r\n");
            conn.write_all(b"9\r\n{\"items\":\r\n").await?;
            let mut sent = 0;
            while sent < bytes {
                conn.write_all(&frame).await?;
                sent += data.len();
            }
            conn.write_all(b"0\r\n\r\n").await?;
        }
        Answer::Declared {
            status,
            length,
            prefix,
        } => {
            let head = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n{prefix}"
            );
            conn.write_all(head.as_bytes()).await?;
            // Hold the connection: a client waiting for the rest would time out.
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        Answer::HugeMessage { status, size } => {
            let prefix = r#"{"error": {"code": "BadRequest", "message": ""#;
            let suffix = r#""}}"#;
            let head = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{prefix}",
                prefix.len() + size + suffix.len()
            );
            conn.write_all(head.as_bytes()).await?;
            let data = vec![b'm'; 64 * 1024];
            let mut left = size;
            while left > 0 {
                let n = left.min(data.len());
                conn.write_all(&data[..n]).await?;
                left -= n;
            }
            conn.write_all(suffix.as_bytes()).await?;
        }
    }
    conn.flush().await
}

fn not_found() -> Answer {
    Answer::Json(
        404,
        r#"{"error": {"code": "NotFound", "message": "No such load balancer"}}"#.into(),
    )
}

// ---------------------------------------------------------------------------------------
// Fixtures.

fn provider(endpoint: &str) -> HttpProvider {
    let _ = rustls::crypto::ring::default_provider().install_default();
    HttpProvider::new(HttpProviderConfig {
        max_retries: 1,
        timeout: Duration::from_secs(5),
        ..HttpProviderConfig::new(endpoint)
    })
    .unwrap()
}

fn desired() -> DesiredLoadBalancer {
    let service = ServiceRef {
        namespace: "default".into(),
        name: "web".into(),
        uid: "uid-web".into(),
    };
    DesiredLoadBalancer::builder("c1", service)
        .listener("http", 80, Protocol::Tcp, Some(30080))
        .target(NodeTarget::new("node-a", Some("10.0.0.1".parse().unwrap())))
        .build()
}

fn assert_too_large(result: Result<impl std::fmt::Debug, ProviderError>, what: &str, mib: usize) {
    match result {
        Err(e @ ProviderError::Permanent(_)) => {
            assert!(
                e.to_string().contains(&format!("larger than {mib} MiB")),
                "{what}: {e}"
            );
            assert_eq!(e.summary(), e.to_string(), "{what}: nothing variable in it");
        }
        other => panic!("{what}: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Tests.

#[tokio::test]
async fn chunked_bodies_over_1_mib_are_refused_while_reading() {
    let addr = serve(Arc::new(|_: &str, _: &str| Answer::Chunked {
        bytes: 512 << 20,
    }))
    .await;
    let p = provider(&format!("http://{addr}"));
    assert_too_large(p.ensure(&desired()).await, "GET of the load balancer", 1);
    assert_too_large(p.list_owned("c1").await, "list", 16);

    // The PUT's answer too.
    let addr = serve(Arc::new(|method: &str, _: &str| match method {
        "GET" => not_found(),
        _ => Answer::Chunked { bytes: 512 << 20 },
    }))
    .await;
    let p = provider(&format!("http://{addr}"));
    assert_too_large(p.ensure(&desired()).await, "PUT", 1);
}

#[tokio::test]
async fn a_content_length_over_1_mib_is_refused_before_reading() {
    // The server would never send the rest: a client that tried to read it would time out.
    let addr = serve(Arc::new(|_: &str, _: &str| Answer::Declared {
        status: 200,
        length: 200 << 20,
        prefix: "{",
    }))
    .await;
    let p = provider(&format!("http://{addr}"));
    assert_too_large(p.ensure(&desired()).await, "GET", 1);
    assert_too_large(p.list_owned("c1").await, "list", 16);
}

#[tokio::test]
async fn huge_error_messages_are_cut_and_the_summary_names_the_status() {
    let addr = serve(Arc::new(|method: &str, _: &str| match method {
        "GET" => not_found(),
        _ => Answer::HugeMessage {
            status: 400,
            size: 5_000_000,
        },
    }))
    .await;
    let err = provider(&format!("http://{addr}"))
        .ensure(&desired())
        .await
        .unwrap_err();
    let text = err.to_string();
    println!("5 MB error message → {} bytes: {text:.120}…", text.len());
    assert!(text.len() <= 900, "{} bytes", text.len());
    assert!(
        text.contains("mmmm"),
        "the start of the server's words: {text}"
    );
    assert_eq!(err.summary(), "Load balancer API answered 400 Bad Request");

    // Retryable statuses too, and an error body that claims 200 MiB.
    let addr = serve(Arc::new(|_: &str, _: &str| Answer::Declared {
        status: 503,
        length: 200 << 20,
        prefix: r#"{"error": {"code": "Unavailable", "message": "busy"#,
    }))
    .await;
    let err = provider(&format!("http://{addr}"))
        .ensure(&desired())
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(err.to_string().len() <= 900, "{err}");
    assert_eq!(
        err.summary(),
        "Load balancer API answered 503 Service Unavailable"
    );
}

#[tokio::test]
async fn summaries_stay_the_same_when_only_the_request_id_changes() {
    let n = Arc::new(AtomicU64::new(0));
    let counter = n.clone();
    let addr = serve(Arc::new(move |method: &str, _: &str| match method {
        "GET" => not_found(),
        _ => {
            let id = counter.fetch_add(1, Ordering::Relaxed) * 7919 + 1000;
            Answer::Json(
                400,
                format!(
                    r#"{{"error": {{"code": "BadRequest", "message": "Pool exhausted (request id {id:x})"}}}}"#
                ),
            )
        }
    }))
    .await;
    let p = provider(&format!("http://{addr}"));
    let a = p.ensure(&desired()).await.unwrap_err();
    let b = p.ensure(&desired()).await.unwrap_err();
    assert_ne!(a.to_string(), b.to_string(), "the details differ");
    assert_eq!(a.summary(), b.summary());
    assert_eq!(a.summary(), "Load balancer API answered 400 Bad Request");
    assert!(
        a.detail().is_some_and(|d| d.starts_with("Pool exhausted")),
        "{a:?}"
    );
    assert_eq!(n.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn credentials_in_the_endpoint_never_appear_in_errors() {
    let secret = "s3cr3t-pw";
    // Nothing listens there.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    // Hangs up without answering.
    let hangup = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hangup_addr = hangup.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = hangup.accept().await {
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf).await;
        }
    });
    // Rejects with an error that echoes a URL with credentials.
    let echo = serve(Arc::new(move |method: &str, _: &str| match method {
        "GET" => not_found(),
        _ => Answer::Json(
            400,
            format!(
                r#"{{"error": {{"code": "BadRequest", "message": "Upstream http://admin:{secret}@10.0.0.9/ refused"}}}}"#
            ),
        ),
    }))
    .await;
    for endpoint in [
        format!("http://admin:{secret}@127.0.0.1:{port}/"),
        format!("http://admin:{secret}@{hangup_addr}/"),
        format!("http://127.0.0.1:{port}/?token={secret}"),
        format!("http://admin:{secret}@{echo}"),
    ] {
        let p = provider(&endpoint);
        for err in [
            p.ensure(&desired()).await.unwrap_err(),
            p.list_owned("c1").await.unwrap_err(),
        ] {
            let all = format!("{err} | {} | {:?} | {err:?}", err.summary(), err.detail());
            assert!(!all.contains(secret), "{endpoint}: {all}");
            assert!(!all.contains("admin"), "{endpoint}: {all}");
        }
    }
    // An endpoint that is refused outright is not repeated with its credentials either.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let err = HttpProvider::new(HttpProviderConfig::new(format!(
        "ftp://admin:{secret}@lb.example/"
    )))
    .err()
    .expect("ftp is refused");
    assert!(!err.to_string().contains(secret), "{err}");
}

/// Records every event's level and fields.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<(tracing::Level, String)>>>);

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={v:?} ", f.name()));
            }
        }
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        self.0
            .lock()
            .unwrap()
            .push((*event.metadata().level(), fields.0));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn a_bearer_token_over_plain_http_is_warned_about_at_start() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let token = std::env::temp_dir().join(format!("berth-bounds-token-{}", std::process::id()));
    std::fs::write(&token, "t0ken").unwrap();
    let warnings = |endpoint: &str, token_file: Option<&std::path::Path>| {
        let capture = Capture::default();
        let cfg = HttpProviderConfig {
            token_file: token_file.map(Into::into),
            ..HttpProviderConfig::new(endpoint)
        };
        tracing::subscriber::with_default(capture.clone(), || HttpProvider::new(cfg).unwrap());
        let events = capture.0.lock().unwrap().clone();
        events
            .into_iter()
            .filter(|(level, _)| *level == tracing::Level::WARN)
            .map(|(_, text)| text)
            .collect::<Vec<_>>()
    };

    let w = warnings("http://user:pw@lb.example:8080/api", Some(&token));
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("--http-token-file"), "{}", w[0]);
    assert!(w[0].contains("https://"), "{}", w[0]);
    assert!(w[0].contains("http://lb.example:8080/api"), "{}", w[0]);
    assert!(!w[0].contains("pw"), "no credentials: {}", w[0]);

    assert_eq!(
        warnings("https://lb.example/", Some(&token)),
        Vec::<String>::new()
    );
    assert_eq!(warnings("http://lb.example/", None), Vec::<String>::new());
    let _ = std::fs::remove_file(&token);
}

#[tokio::test]
async fn listed_ids_that_cannot_be_berths_are_left_out() {
    let labels = r#"{"berth.io/cluster": "c1", "berth.io/service-namespace": "default",
        "berth.io/service-name": "web", "berth.io/service-uid": "uid-web"}"#;
    let long = "x".repeat(100_000);
    let body = format!(
        r#"{{"items": [{{"id": "b-web-1", "spec": {{"labels": {labels}}}}},
                       {{"id": "{long}", "spec": {{"labels": {labels}}}}},
                       {{"id": "Not A Label", "spec": {{"labels": {labels}}}}}]}}"#
    );
    let addr = serve(Arc::new(move |_: &str, _: &str| {
        Answer::Json(200, body.clone())
    }))
    .await;
    let owned = provider(&format!("http://{addr}"))
        .list_owned("c1")
        .await
        .unwrap();
    let ids: Vec<&str> = owned.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(ids, ["b-web-1"]);
}

/// A load balancer whose creation the API keeps refusing costs one request per attempt after
/// the first (no re-read before each retry); one that appears meanwhile is read, not
/// overwritten.
#[tokio::test]
async fn a_refused_creation_is_retried_without_reading_first() {
    let gets = Arc::new(AtomicU64::new(0));
    let puts = Arc::new(AtomicU64::new(0));
    let accept = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (g, p, a) = (gets.clone(), puts.clone(), accept.clone());
    let addr = serve(Arc::new(move |method: &str, _: &str| match method {
        "GET" => {
            g.fetch_add(1, Ordering::Relaxed);
            not_found()
        }
        _ => {
            p.fetch_add(1, Ordering::Relaxed);
            if a.load(Ordering::Relaxed) {
                // Someone else created it meanwhile: the create-only PUT is refused.
                Answer::Json(
                    412,
                    r#"{"error": {"code": "PreconditionFailed", "message": "exists"}}"#.into(),
                )
            } else {
                Answer::Json(
                    400,
                    r#"{"error": {"code": "BadRequest", "message": "no"}}"#.into(),
                )
            }
        }
    }))
    .await;
    let prov = provider(&format!("http://{addr}"));
    for _ in 0..3 {
        prov.ensure(&desired()).await.unwrap_err();
    }
    assert_eq!(
        gets.load(Ordering::Relaxed),
        1,
        "read once, before the first attempt"
    );
    assert_eq!(puts.load(Ordering::Relaxed), 3);
    // A 412 on the create-only PUT sends the provider back to reading.
    accept.store(true, Ordering::Relaxed);
    let _ = prov.ensure(&desired()).await;
    assert!(
        gets.load(Ordering::Relaxed) >= 2,
        "read again after the 412"
    );
}
