//! The `log` subresource of pods (`kubectl logs [-f] [--tail N] [--since D|--since-time T]`):
//! the pod's request log as text, and with `follow=true` a stream of new lines that ends
//! when the pod is deleted (or stops), the client leaves, or the server shuts down.

use super::error::ApiError;
use super::http::ApiServer;
use crate::podlogs::PodLog;
use crate::registry::ResourceInfo;
use axum::body::Body;
use axum::http::header;
use axum::response::Response;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// How often a follower checks that its pod still exists (a pod deleted before it ever ran
/// has no log to close).
const POD_CHECK: Duration = Duration::from_secs(2);
/// Chunks queued for a follower; past that, reading waits for the client (and lines it
/// falls too far behind on are skipped, never queued).
const QUEUED_CHUNKS: usize = 4;

/// The options of a log request.
#[derive(Debug, Default, PartialEq)]
pub(super) struct LogOptions {
    follow: bool,
    tail: Option<usize>,
    since: Option<DateTime<Utc>>,
}

fn int(q: &HashMap<String, String>, key: &str) -> Result<Option<i64>, ApiError> {
    q.get(key)
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("{key}: invalid value {v:?}")))
        })
        .transpose()
}

pub(super) fn log_options(
    q: &HashMap<String, String>,
    now: DateTime<Utc>,
) -> Result<LogOptions, ApiError> {
    let since_seconds = int(q, "sinceSeconds")?;
    let since_time = q.get("sinceTime").filter(|t| !t.is_empty());
    if since_seconds.is_some() && since_time.is_some() {
        return Err(ApiError::bad_request(
            "at most one of sinceTime or sinceSeconds may be specified",
        ));
    }
    let since = match (since_seconds, since_time) {
        (Some(s), _) if s < 1 => {
            return Err(ApiError::bad_request(
                "sinceSeconds: Invalid value: must be greater than 0",
            ));
        }
        (Some(s), _) => Some(now - chrono::Duration::seconds(s)),
        (None, Some(t)) => Some(
            DateTime::parse_from_rfc3339(t)
                .map_err(|_| ApiError::bad_request(format!("sinceTime: invalid value {t:?}")))?
                .with_timezone(&Utc),
        ),
        (None, None) => None,
    };
    Ok(LogOptions {
        follow: super::http::truthy(q, "follow"),
        tail: int(q, "tailLines")?.map(|t| t.max(0) as usize),
        since,
    })
}

/// Whether a line (which starts with its RFC 3339 time) is at or after `since`.
fn after(line: &str, since: Option<DateTime<Utc>>) -> bool {
    let Some(since) = since else { return true };
    line.split(' ')
        .next()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .is_none_or(|t| t >= since)
}

fn text(lines: &[String], since: Option<DateTime<Utc>>) -> String {
    let mut out = String::new();
    for l in lines.iter().filter(|l| after(l, since)) {
        out.push_str(l);
        out.push('\n');
    }
    out
}

fn uid(pod: &Value) -> String {
    pod.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

pub(super) fn pod_log(
    srv: &Arc<ApiServer>,
    info: &ResourceInfo,
    ns: &str,
    name: &str,
    q: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let opts = log_options(q, Utc::now())?;
    let pod = srv.core.get(info, ns, name)?;
    let response = |body: Body| {
        Response::builder()
            .status(200)
            .header(header::CONTENT_TYPE, "text/plain")
            .body(body)
            .expect("valid response")
    };
    let uid = uid(&pod);
    if !opts.follow {
        let lines = srv.core.pod_logs.lines(&uid, opts.tail);
        return Ok(response(Body::from(text(&lines, opts.since))));
    }
    let log = srv.core.pod_logs.log(&uid);
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(QUEUED_CHUNKS);
    let follow = Follow {
        srv: srv.clone(),
        info: info.clone(),
        ns: ns.to_string(),
        name: name.to_string(),
        uid,
        log,
        tx,
    };
    tokio::spawn(follow.run(opts));
    Ok(response(Body::from_stream(ReceiverStream::new(rx))))
}

struct Follow {
    srv: Arc<ApiServer>,
    info: ResourceInfo,
    ns: String,
    name: String,
    uid: String,
    log: PodLog,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
}

impl Follow {
    fn pod_gone(&self) -> bool {
        self.srv
            .core
            .get(&self.info, &self.ns, &self.name)
            .map_or(true, |p| uid(&p) != self.uid)
    }

    async fn run(self, opts: LogOptions) {
        let mut changed = self.log.subscribe();
        let mut shutdown = self.srv.shutdown.clone();
        let mut cursor = self.log.tail_cursor(opts.tail);
        let mut check = tokio::time::interval(POD_CHECK);
        loop {
            changed.borrow_and_update();
            let read = self.log.read(cursor);
            cursor = read.cursor;
            let chunk = text(&read.lines, opts.since);
            if !chunk.is_empty() && self.tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                return;
            }
            if read.closed {
                return;
            }
            tokio::select! {
                r = changed.changed() => if r.is_err() { return },
                _ = check.tick() => if self.pod_gone() {
                    // A pod deleted before it ran has no kubelet to drop its log.
                    self.srv.core.pod_logs.remove(&self.uid);
                    return;
                },
                _ = shutdown.changed() => return,
                _ = self.tx.closed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options_follow_tail_and_since() {
        let now = DateTime::parse_from_rfc3339("2024-05-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let o = log_options(&q(&[("follow", "true"), ("tailLines", "3")]), now).unwrap();
        assert_eq!(
            o,
            LogOptions {
                follow: true,
                tail: Some(3),
                since: None
            }
        );
        let o = log_options(&q(&[("sinceSeconds", "60")]), now).unwrap();
        assert_eq!(o.since.unwrap().to_rfc3339(), "2024-05-01T09:59:00+00:00");
        assert_eq!(
            log_options(&q(&[("sinceSeconds", "0")]), now)
                .unwrap_err()
                .code,
            400
        );
        let both = q(&[("sinceSeconds", "5"), ("sinceTime", "2024-05-01T09:00:00Z")]);
        assert_eq!(log_options(&both, now).unwrap_err().code, 400);
        let lines = vec![
            "2024-05-01T09:58:59.000Z 127.0.0.1:1 tcp".to_string(),
            "2024-05-01T09:59:30.000Z 127.0.0.1:2 tcp".to_string(),
        ];
        assert_eq!(text(&lines, o.since), format!("{}\n", lines[1]));
    }
}
