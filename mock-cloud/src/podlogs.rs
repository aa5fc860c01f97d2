//! What `kubectl logs POD` prints: one line per request the pod's servers answered, kept per
//! pod uid (the newest [`MAX_LINES`]) until the pod stops.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Lines kept per pod.
pub const MAX_LINES: usize = 1000;

/// One pod's log.
pub type PodLog = Arc<Mutex<VecDeque<String>>>;

#[derive(Debug, Default)]
pub struct PodLogs {
    by_uid: Mutex<HashMap<String, PodLog>>,
}

/// Appends a line, dropping the oldest beyond [`MAX_LINES`].
pub fn push(log: &PodLog, line: String) {
    let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
    if l.len() >= MAX_LINES {
        l.pop_front();
    }
    l.push_back(line);
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
        let l = log.lock().unwrap_or_else(|e| e.into_inner());
        let skip = tail.map_or(0, |t| l.len().saturating_sub(t));
        l.iter().skip(skip).cloned().collect()
    }

    pub fn remove(&self, uid: &str) {
        self.map().remove(uid);
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
}
