//! Small Kubernetes client utilities: a client whose writes are fenced by leadership and
//! whose non-watch requests are bounded in time, and waiting on caches and stop signals.

use crate::leader::{Fence, Fenced};
use futures::future::BoxFuture;
use http::{Method, Request, Response};
use kube::client::Body;
use kube::runtime::reflector::Store;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::watch;
use tracing::warn;

/// A non-watch request that took longer than the client's request timeout.
#[derive(Debug, thiserror::Error)]
#[error("Kubernetes API request timed out after {0:?}")]
pub struct TimedOut(pub Duration);

/// The request guard behind [`fenced_client`].
#[derive(Clone)]
struct Guarded {
    inner: kube::Client,
    fence: Fence,
    timeout: Duration,
}

fn is_watch(req: &Request<Body>) -> bool {
    req.uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"))
}

impl tower::Service<Request<Body>> for Guarded {
    type Response = Response<Body>;
    type Error = tower::BoxError;
    type Future = BoxFuture<'static, Result<Response<Body>, tower::BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        let fence = self.fence.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            if is_watch(&req) {
                return inner.send(req).await.map_err(Into::into);
            }
            let mut bound = timeout;
            if req.method() != Method::GET && req.method() != Method::HEAD {
                // A write: only while leading, and never past the fence's deadline.
                match fence.check() {
                    Err(Fenced) => return Err(Fenced.into()),
                    Ok(Some(left)) => bound = bound.min(left),
                    Ok(None) => {}
                }
            }
            match tokio::time::timeout(bound, inner.send(req)).await {
                Ok(r) => r.map_err(Into::into),
                Err(_) => Err(TimedOut(bound).into()),
            }
        })
    }
}

/// `client`, with every write refused once `fence` closes (and cut off when it closes while
/// the write is in flight), and every non-watch request bounded by `timeout`. Watches are
/// left alone (the watcher has its own idle timeout).
pub fn fenced_client(client: kube::Client, fence: Fence, timeout: Duration) -> kube::Client {
    let ns = client.default_namespace().to_string();
    kube::Client::new(
        Guarded {
            inner: client,
            fence,
            timeout,
        },
        ns,
    )
}

/// Whether `err` is a write refused by the fence.
pub fn is_fenced(err: &kube::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.is::<Fenced>() {
            return true;
        }
        cur = e.source();
    }
    false
}

/// An error and its sources on one line, each text once: kube's errors say only
/// `client error (Connect)` at the top and keep the reason (`Connection refused`, a TLS or DNS
/// failure) in their sources.
pub fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = String::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        let text = e.to_string();
        if !text.is_empty() && !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
        cur = e.source();
    }
    line
}

/// The default cluster id: the uid of the `kube-system` namespace, which is unique per
/// cluster and stable for its life. A few attempts with backoff; then an error naming the
/// flag that avoids the lookup.
pub async fn cluster_id(client: &kube::Client) -> anyhow::Result<String> {
    use k8s_openapi::api::core::v1::Namespace;
    let api: kube::Api<Namespace> = kube::Api::all(client.clone());
    let mut wait = Duration::from_millis(200);
    let mut last = String::new();
    for _ in 0..6 {
        match api.get("kube-system").await {
            Ok(ns) => match ns.metadata.uid {
                Some(uid) if !uid.is_empty() => return Ok(uid),
                _ => last = "it has no uid".into(),
            },
            Err(e) => {
                last = describe(&e);
                warn!(error = %last, "Cannot read the kube-system namespace (the default cluster id); retrying");
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
    anyhow::bail!(
        "Cannot read the uid of the kube-system namespace, the default cluster id ({last}); give --cluster-name"
    )
}

/// Waits until `store` has its first complete list; false if its writer is gone.
///
/// `Store::wait_until_ready` keeps one waker only (a oneshot receiver behind a mutex), so
/// when several tasks wait on the same store at once (the Controller's own runner, the
/// readiness flag, garbage collection) only the last one to poll is woken and the others
/// hang forever. Re-polling on a short timer makes every waiter see the ready state.
pub async fn store_ready<K>(store: &Store<K>) -> bool
where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    loop {
        match tokio::time::timeout(Duration::from_millis(200), store.wait_until_ready()).await {
            Ok(r) => return r.is_ok(),
            Err(_) => continue,
        }
    }
}

/// Resolves once the channel holds true (or its sender is gone).
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_keeps_the_reason_and_drops_repeats() {
        #[derive(Debug)]
        struct Top(std::io::Error);
        impl std::fmt::Display for Top {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("client error (Connect)")
            }
        }
        impl std::error::Error for Top {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Top(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        ));
        assert_eq!(
            describe(&e),
            "client error (Connect): Connection refused (os error 111)"
        );
    }

    #[test]
    fn watches_are_recognised_by_their_query() {
        let r = |u: &str| Request::get(u).body(Body::empty()).unwrap();
        assert!(is_watch(&r(
            "/api/v1/services?watch=true&resourceVersion=1"
        )));
        assert!(is_watch(&r("/api/v1/services?labelSelector=a&watch=1")));
        assert!(!is_watch(&r("/api/v1/services?limit=500")));
        assert!(!is_watch(&r("/api/v1/services?xwatch=true")));
    }
}
