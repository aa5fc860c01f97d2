//! What `kubectl logs POD` prints: one line per request the pod's servers answered, kept per
//! pod uid (the newest [`MAX_LINES`]) until the pod stops. Followers (`kubectl logs -f`)
//! read from a cursor and are woken by each new line; one that falls behind by more than
//! the kept lines skips the lost ones, so a slow follower never holds more than the log.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Lines kept per pod.
pub const MAX_LINES: usize = 1000;

/// One pod's log.
pub type PodLog = Arc<Log>;

#[derive(Debug)]
pub struct Log {
    buf: Mutex<Buf>,
    /// Bumped on every new line and when the log closes.
    changed: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct Buf {
    lines: VecDeque<String>,
    /// Sequence number of the next line.
    next: u64,
    closed: bool,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            buf: Mutex::default(),
            changed: watch::channel(0).0,
        }
    }
}

/// What a follower reads: the lines after its cursor, the next cursor, whether it is closed.
pub struct Read {
    pub lines: Vec<String>,
    pub cursor: u64,
    pub closed: bool,
}

impl Log {
    fn buf(&self) -> std::sync::MutexGuard<'_, Buf> {
        self.buf.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The lines from sequence number `cursor` on (those still kept).
    pub fn read(&self, cursor: u64) -> Read {
        let b = self.buf();
        let first = b.next - b.lines.len() as u64;
        let skip = cursor.saturating_sub(first) as usize;
        Read {
            lines: b.lines.iter().skip(skip).cloned().collect(),
            cursor: b.next,
            closed: b.closed,
        }
    }

    /// The cursor of the last `tail` lines (all kept lines when None).
    pub fn tail_cursor(&self, tail: Option<usize>) -> u64 {
        let b = self.buf();
        let kept = b.lines.len().min(tail.unwrap_or(usize::MAX)) as u64;
        b.next - kept
    }

    /// Wakes when a line is added or the log closes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn close(&self) {
        self.buf().closed = true;
        self.changed.send_modify(|n| *n += 1);
    }
}

#[derive(Debug, Default)]
pub struct PodLogs {
    by_uid: Mutex<HashMap<String, PodLog>>,
}

/// Appends a line, dropping the oldest beyond [`MAX_LINES`].
pub fn push(log: &PodLog, line: String) {
    {
        let mut b = log.buf();
        if b.lines.len() >= MAX_LINES {
            b.lines.pop_front();
        }
        b.lines.push_back(line);
        b.next += 1;
    }
    log.changed.send_modify(|n| *n += 1);
}

impl PodLogs {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, PodLog>> {
        self.by_uid.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The log of a pod, created on first use.
    pub fn log(&self, uid: &str) -> PodLog {
        self.map().entry(uid.to_string()).or_default().clone()
    }

    /// The last `tail` lines (all when None) of a pod's log; empty when it has none.
    pub fn lines(&self, uid: &str, tail: Option<usize>) -> Vec<String> {
        let Some(log) = self.map().get(uid).cloned() else {
            return Vec::new();
        };
        log.read(log.tail_cursor(tail)).lines
    }

    /// Forgets a stopped pod's log; its followers read what is left, then end.
    pub fn remove(&self, uid: &str) {
        if let Some(log) = self.map().remove(uid) {
            log.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_keep_the_newest_lines_and_tail() {
        let logs = PodLogs::default();
        let l = logs.log("u");
        for i in 0..MAX_LINES + 5 {
            push(&l, format!("line {i}"));
        }
        let all = logs.lines("u", None);
        assert_eq!(all.len(), MAX_LINES);
        assert_eq!(all[0], "line 5");
        assert_eq!(
            logs.lines("u", Some(2)),
            vec![
                format!("line {}", MAX_LINES + 3),
                format!("line {}", MAX_LINES + 4)
            ]
        );
        logs.remove("u");
        assert!(logs.lines("u", None).is_empty());
    }

    #[test]
    fn a_follower_reads_new_lines_skips_what_it_lost_and_sees_the_end() {
        let logs = PodLogs::default();
        let l = logs.log("u");
        push(&l, "a".into());
        let mut rx = l.subscribe();
        let r = l.read(l.tail_cursor(Some(0)));
        assert!(r.lines.is_empty());
        push(&l, "b".into());
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        let r = l.read(r.cursor);
        assert_eq!(r.lines, vec!["b".to_string()]);
        // A follower that fell more than MAX_LINES behind gets only the kept lines.
        for i in 0..MAX_LINES * 2 {
            push(&l, format!("x{i}"));
        }
        let lagged = l.read(r.cursor);
        assert_eq!(lagged.lines.len(), MAX_LINES);
        assert_eq!(lagged.lines[0], format!("x{}", MAX_LINES));
        logs.remove("u");
        assert!(rx.has_changed().unwrap());
        let end = l.read(lagged.cursor);
        assert!(end.lines.is_empty() && end.closed);
    }
}
