//! Objects of live watch events, encoded once and shared by every watcher that sends them:
//! with ten watchers of Services, each created Service is rendered and serialised once, not
//! ten times.
//!
//! An encoding is found by the resourceVersion the object was written at (unique in the
//! store: every write takes a new one), the apiVersion it is served as, and the wire format.
//! Only recent events are kept; a watcher far behind encodes for itself.

use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// An object's bytes on one wire format, or why it has none (no protobuf form).
pub(crate) type Encoded = Result<Bytes, String>;

/// Encodings of one object version.
type Forms = Vec<(Form, Encoded)>;

#[derive(Clone, PartialEq, Eq)]
struct Form {
    api_version: String,
    proto: bool,
}

pub(crate) struct SharedEncodings {
    inner: Mutex<Inner>,
    /// Object versions kept.
    cap: usize,
}

#[derive(Default)]
struct Inner {
    by_rv: HashMap<u64, Forms>,
    /// Versions in the order they were first encoded, oldest first, for eviction.
    order: VecDeque<u64>,
}

impl Default for SharedEncodings {
    fn default() -> Self {
        SharedEncodings::new(4096)
    }
}

impl SharedEncodings {
    pub(crate) fn new(cap: usize) -> Self {
        SharedEncodings {
            inner: Mutex::new(Inner::default()),
            cap: cap.max(1),
        }
    }

    /// The encoding of the object written at `rv`, served as `api_version` in protobuf or
    /// JSON: from an earlier watcher, or made now by `encode` (outside the lock) and kept.
    pub(crate) fn get_or_encode(
        &self,
        rv: u64,
        api_version: &str,
        proto: bool,
        encode: impl FnOnce() -> Encoded,
    ) -> Encoded {
        let wanted = |f: &Form| f.proto == proto && f.api_version == api_version;
        if let Some(found) = self
            .lock()
            .by_rv
            .get(&rv)
            .and_then(|forms| forms.iter().find(|(f, _)| wanted(f)))
        {
            return found.1.clone();
        }
        let encoded = encode();
        let mut inner = self.lock();
        if !inner.by_rv.contains_key(&rv) {
            inner.order.push_back(rv);
            while inner.order.len() > self.cap {
                if let Some(old) = inner.order.pop_front() {
                    inner.by_rv.remove(&old);
                }
            }
        }
        let forms = inner.by_rv.entry(rv).or_default();
        // Another watcher may have encoded it meanwhile: keep one copy.
        match forms.iter().find(|(f, _)| wanted(f)) {
            Some((_, kept)) => kept.clone(),
            None => {
                let form = Form {
                    api_version: api_version.to_string(),
                    proto,
                };
                forms.push((form, encoded.clone()));
                encoded
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    fn kept(&self) -> usize {
        self.lock().by_rv.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(s: &str) -> Encoded {
        Ok(Bytes::from(s.to_string()))
    }

    #[test]
    fn one_encoding_per_version_and_form() {
        let c = SharedEncodings::new(10);
        let mut calls = 0;
        let mut get = |rv, av: &str, proto, s: &str| {
            c.get_or_encode(rv, av, proto, || {
                calls += 1;
                bytes(s)
            })
        };
        assert_eq!(get(5, "v1", false, "a"), bytes("a"));
        // Found again, not re-encoded.
        assert_eq!(get(5, "v1", false, "other"), bytes("a"));
        // Another format, another served version, another object version: encoded apart.
        assert_eq!(get(5, "v1", true, "p"), bytes("p"));
        assert_eq!(get(5, "v2", false, "b"), bytes("b"));
        assert_eq!(get(6, "v1", false, "c"), bytes("c"));
        assert_eq!(get(5, "v1", true, "other"), bytes("p"));
        assert_eq!(calls, 4);
    }

    #[test]
    fn failures_are_shared_and_old_versions_are_forgotten() {
        let c = SharedEncodings::new(2);
        let no_form = || Err::<Bytes, _>("no protobuf form".to_string());
        assert!(c.get_or_encode(1, "v1", true, no_form).is_err());
        assert!(c.get_or_encode(1, "v1", true, || bytes("x")).is_err());
        assert_eq!(c.get_or_encode(2, "v1", false, || bytes("2")), bytes("2"));
        assert_eq!(c.get_or_encode(3, "v1", false, || bytes("3")), bytes("3"));
        assert_eq!(c.kept(), 2);
        // Version 1 was evicted: encoded afresh.
        assert_eq!(c.get_or_encode(1, "v1", true, || bytes("x")), bytes("x"));
        assert_eq!(c.get_or_encode(3, "v1", false, || bytes("y")), bytes("3"));
    }
}
