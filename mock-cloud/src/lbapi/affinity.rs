//! The `sessionAffinity: ClientIP` table: which target a client was pinned to, until when.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;
use tokio::time::Instant;

/// Prune expired entries every this many insertions.
const PRUNE_EVERY: u64 = 1024;

#[derive(Debug)]
pub struct AffinityTable<K> {
    entries: HashMap<K, (String, Instant)>,
    inserts: u64,
}

impl<K> Default for AffinityTable<K> {
    fn default() -> Self {
        AffinityTable {
            entries: HashMap::new(),
            inserts: 0,
        }
    }
}

impl<K: Hash + Eq> AffinityTable<K> {
    /// The target `key` is pinned to, if the pin has not expired by `now`.
    pub fn get(&mut self, key: &K, now: Instant) -> Option<&str> {
        let expired = match self.entries.get(key) {
            None => return None,
            Some((_, until)) => *until <= now,
        };
        if expired {
            self.entries.remove(key);
            return None;
        }
        self.entries.get(key).map(|(t, _)| t.as_str())
    }

    /// Pins `key` to `target` for `ttl` from `now` (refreshing an existing pin).
    pub fn set(&mut self, key: K, target: &str, now: Instant, ttl: Duration) {
        self.inserts += 1;
        if self.inserts.is_multiple_of(PRUNE_EVERY) {
            self.entries.retain(|_, (_, until)| *until > now);
        }
        match self.entries.get_mut(&key) {
            Some((t, until)) => {
                if t != target {
                    target.clone_into(t);
                }
                *until = now + ttl;
            }
            None => {
                self.entries.insert(key, (target.to_string(), now + ttl));
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_until_timeout_and_refreshes() {
        let mut t = AffinityTable::default();
        let now = Instant::now();
        let ttl = Duration::from_secs(10);
        assert_eq!(t.get(&"c1", now), None);
        t.set("c1", "node-a", now, ttl);
        assert_eq!(t.get(&"c1", now + Duration::from_secs(9)), Some("node-a"));
        t.set("c1", "node-a", now + Duration::from_secs(9), ttl);
        assert_eq!(t.get(&"c1", now + Duration::from_secs(18)), Some("node-a"));
        assert_eq!(t.get(&"c1", now + Duration::from_secs(19)), None);
        assert_eq!(t.len(), 0, "an expired pin is removed");
        t.set("c1", "node-b", now, ttl);
        t.set("c1", "node-c", now, ttl);
        assert_eq!(t.get(&"c1", now), Some("node-c"));
    }

    #[test]
    fn prunes_expired_entries() {
        let mut t = AffinityTable::default();
        let now = Instant::now();
        for i in 0..(PRUNE_EVERY - 1) {
            t.set(i, "x", now, Duration::from_secs(1));
        }
        t.set(
            u64::MAX,
            "y",
            now + Duration::from_secs(5),
            Duration::from_secs(1),
        );
        assert_eq!(t.len(), 1);
    }
}
