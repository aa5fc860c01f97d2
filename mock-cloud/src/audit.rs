//! An audit log of write requests, so a test can attribute every write to the client that
//! sent it (by its bearer token) from outside that client. Bounded: the oldest entries are
//! dropped once [`CAPACITY`] is reached.

use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Entries kept; older ones are dropped (and counted).
pub const CAPACITY: usize = 20_000;

/// One write request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// Increasing from 1, never reused.
    pub seq: u64,
    /// `create`, `update`, `patch`, `delete`, `deletecollection` (API server) or `put`,
    /// `delete` (load balancer API).
    pub verb: String,
    pub path: String,
    /// The bearer token the request carried ("" without one).
    pub token: String,
    /// When the request arrived (before any injected latency), in ms since the Unix epoch.
    pub received_ms: u64,
    /// When the answer was ready, in ms since the Unix epoch; None while in flight.
    pub completed_ms: Option<u64>,
    /// The answer's status code; None while in flight.
    pub code: Option<u16>,
}

#[derive(Default)]
struct Log {
    entries: VecDeque<AuditEntry>,
    next_seq: u64,
    dropped: u64,
}

/// The audit log of one listener.
#[derive(Default)]
pub struct Audit {
    log: Mutex<Log>,
}

/// What `GET /mock-cloud/v1/audit` returns.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    /// Entries dropped because the log was full.
    pub dropped: u64,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The token of an `Authorization: Bearer <token>` header value ("" otherwise).
pub fn bearer(authorization: Option<&str>) -> String {
    authorization
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_string())
        .unwrap_or_default()
}

impl Audit {
    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a request as it arrives; returns its sequence number for [`Audit::finish`].
    pub fn begin(&self, verb: &str, path: &str, token: String) -> u64 {
        let mut log = self.lock();
        log.next_seq += 1;
        let seq = log.next_seq;
        if log.entries.len() >= CAPACITY {
            log.entries.pop_front();
            log.dropped += 1;
        }
        log.entries.push_back(AuditEntry {
            seq,
            verb: verb.to_string(),
            path: path.to_string(),
            token,
            received_ms: now_ms(),
            completed_ms: None,
            code: None,
        });
        seq
    }

    /// Records the answer to request `seq` (a no-op if it was dropped meanwhile).
    pub fn finish(&self, seq: u64, code: u16) {
        let mut log = self.lock();
        if let Ok(i) = log.entries.binary_search_by_key(&seq, |e| e.seq) {
            let e = &mut log.entries[i];
            e.completed_ms = Some(now_ms());
            e.code = Some(code);
        }
    }

    /// Entries with a sequence number above `after`, oldest first.
    pub fn since(&self, after: u64) -> AuditPage {
        let log = self.lock();
        AuditPage {
            items: log
                .entries
                .iter()
                .filter(|e| e.seq > after)
                .cloned()
                .collect(),
            dropped: log.dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_begin_and_finish_and_drops_the_oldest_when_full() {
        let a = Audit::default();
        let s1 = a.begin("update", "/x", bearer(Some("Bearer tok-a")));
        let s2 = a.begin("put", "/v1/loadbalancers/y", bearer(None));
        a.finish(s1, 200);
        let page = a.since(0);
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.items[0].token, "tok-a");
        assert_eq!(page.items[0].code, Some(200));
        assert!(page.items[0].completed_ms >= Some(page.items[0].received_ms));
        assert_eq!(page.items[1].token, "");
        assert_eq!(page.items[1].code, None);
        assert_eq!(a.since(s1).items.len(), 1);
        assert_eq!(a.since(s2).items.len(), 0);

        for _ in 0..CAPACITY {
            a.begin("delete", "/z", String::new());
        }
        let page = a.since(0);
        assert_eq!(page.items.len(), CAPACITY);
        assert_eq!(page.dropped, 2);
        assert_eq!(page.items[0].seq, 3);
        a.finish(s1, 500); // dropped: ignored
        assert_eq!(a.since(0).items[0].code, None);
    }
}
