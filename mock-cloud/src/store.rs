//! The object store behind the API server: one resourceVersion counter, objects by resource,
//! and a bounded history of changes that watches replay from.
//!
//! The store knows nothing of API semantics (defaulting, finalizers, validation); it only
//! keeps objects, stamps `metadata.resourceVersion`, and tells watchers what changed.

use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// (group, plural resource): storage is shared across versions of one resource.
pub type GroupResource = (String, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change to one object.
#[derive(Debug, Clone)]
pub struct Event {
    pub rv: u64,
    pub type_: EventType,
    pub gr: GroupResource,
    pub namespace: String,
    pub name: String,
    /// The object after the change (for deletes: the last state, with the delete's rv).
    pub object: Arc<Value>,
    /// The object before the change (None for adds).
    pub prev: Option<Arc<Value>>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StoreError {
    #[error("object not found")]
    NotFound,
    #[error("object already exists")]
    AlreadyExists,
    #[error(
        "the object has been modified; please apply your changes to the latest version and try again"
    )]
    Conflict,
    /// The requested resourceVersion is older than the retained history.
    #[error("too old resource version: {requested} ({oldest})")]
    Expired { requested: u64, oldest: u64 },
}

type Objects = BTreeMap<(String, String), Arc<Value>>;

struct Inner {
    rv: u64,
    objects: BTreeMap<GroupResource, Objects>,
    history: VecDeque<Arc<Event>>,
    history_cap: usize,
    /// Watches may start from any rv >= this one.
    oldest_rv: u64,
}

/// A watch started at some resourceVersion: the events already past, then a live channel.
pub struct WatchStart {
    pub replay: Vec<Arc<Event>>,
    pub live: broadcast::Receiver<Arc<Event>>,
}

pub struct Store {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<Event>>,
}

impl Default for Store {
    fn default() -> Self {
        Store::new(100_000)
    }
}

impl Store {
    /// A store keeping the last `history_cap` events for watches to resume from.
    pub fn new(history_cap: usize) -> Self {
        let (tx, _) = broadcast::channel(65_536);
        Store {
            inner: Mutex::new(Inner {
                rv: 1,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                history_cap: history_cap.max(1),
                oldest_rv: 1,
            }),
            tx,
        }
    }

    /// The current resourceVersion of the whole store.
    pub fn current_rv(&self) -> u64 {
        self.inner.lock().unwrap().rv
    }

    pub fn get(&self, gr: &GroupResource, namespace: &str, name: &str) -> Option<Arc<Value>> {
        let inner = self.inner.lock().unwrap();
        inner
            .objects
            .get(gr)?
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// All objects of a resource (in one namespace, or all when `namespace` is None),
    /// ordered by (namespace, name), and the rv they were read at.
    pub fn list(&self, gr: &GroupResource, namespace: Option<&str>) -> (Vec<Arc<Value>>, u64) {
        let inner = self.inner.lock().unwrap();
        let items = match inner.objects.get(gr) {
            None => Vec::new(),
            Some(objs) => match namespace {
                None => objs.values().cloned().collect(),
                Some(ns) => objs
                    .range((ns.to_string(), String::new())..)
                    .take_while(|((n, _), _)| n == ns)
                    .map(|(_, v)| v.clone())
                    .collect(),
            },
        };
        (items, inner.rv)
    }

    /// Number of objects of a resource.
    pub fn count(&self, gr: &GroupResource) -> usize {
        let inner = self.inner.lock().unwrap();
        inner.objects.get(gr).map(|o| o.len()).unwrap_or(0)
    }

    /// Stores a new object. Sets `metadata.resourceVersion`; returns the stored object.
    pub fn create(
        &self,
        gr: &GroupResource,
        namespace: &str,
        name: &str,
        mut obj: Value,
    ) -> Result<Arc<Value>, StoreError> {
        let mut inner = self.inner.lock().unwrap();
        let key = (namespace.to_string(), name.to_string());
        if inner
            .objects
            .get(gr)
            .is_some_and(|objs| objs.contains_key(&key))
        {
            return Err(StoreError::AlreadyExists);
        }
        inner.rv += 1;
        let rv = inner.rv;
        set_rv(&mut obj, rv);
        let obj = Arc::new(obj);
        inner
            .objects
            .entry(gr.clone())
            .or_default()
            .insert(key, obj.clone());
        self.record(
            &mut inner,
            EventType::Added,
            (gr, namespace, name),
            obj.clone(),
            None,
        );
        Ok(obj)
    }

    /// Replaces an object. When `expected_rv` is given it must match the stored one.
    pub fn update(
        &self,
        gr: &GroupResource,
        namespace: &str,
        name: &str,
        expected_rv: Option<u64>,
        mut obj: Value,
    ) -> Result<Arc<Value>, StoreError> {
        let mut inner = self.inner.lock().unwrap();
        let key = (namespace.to_string(), name.to_string());
        let current = inner
            .objects
            .get(gr)
            .and_then(|objs| objs.get(&key))
            .ok_or(StoreError::NotFound)?;
        if let Some(expected) = expected_rv
            && rv_of(current) != Some(expected)
        {
            return Err(StoreError::Conflict);
        }
        let prev = current.clone();
        inner.rv += 1;
        let rv = inner.rv;
        set_rv(&mut obj, rv);
        let obj = Arc::new(obj);
        inner
            .objects
            .get_mut(gr)
            .expect("resource map exists")
            .insert(key, obj.clone());
        self.record(
            &mut inner,
            EventType::Modified,
            (gr, namespace, name),
            obj.clone(),
            Some(prev),
        );
        Ok(obj)
    }

    /// Removes an object; returns its last state (stamped with the delete's rv).
    pub fn delete(
        &self,
        gr: &GroupResource,
        namespace: &str,
        name: &str,
        expected_rv: Option<u64>,
    ) -> Result<Arc<Value>, StoreError> {
        let mut inner = self.inner.lock().unwrap();
        let key = (namespace.to_string(), name.to_string());
        let objs = inner.objects.get_mut(gr).ok_or(StoreError::NotFound)?;
        let current = objs.get(&key).ok_or(StoreError::NotFound)?;
        if let Some(expected) = expected_rv
            && rv_of(current) != Some(expected)
        {
            return Err(StoreError::Conflict);
        }
        let removed = objs.remove(&key).expect("present");
        inner.rv += 1;
        let rv = inner.rv;
        let mut last = (*removed).clone();
        set_rv(&mut last, rv);
        let last = Arc::new(last);
        self.record(
            &mut inner,
            EventType::Deleted,
            (gr, namespace, name),
            last.clone(),
            Some(removed),
        );
        Ok(last)
    }

    /// Starts a watch of everything after `from_rv`: the retained events past it, then a
    /// live channel, with no gap between the two. Callers filter by resource themselves.
    pub fn watch_from(&self, from_rv: u64) -> Result<WatchStart, StoreError> {
        let inner = self.inner.lock().unwrap();
        if from_rv < inner.oldest_rv {
            return Err(StoreError::Expired {
                requested: from_rv,
                oldest: inner.oldest_rv,
            });
        }
        let replay = inner
            .history
            .iter()
            .filter(|e| e.rv > from_rv)
            .cloned()
            .collect();
        Ok(WatchStart {
            replay,
            live: self.tx.subscribe(),
        })
    }

    /// A live channel of every change from now on, plus the rv it starts after.
    pub fn subscribe(&self) -> (broadcast::Receiver<Arc<Event>>, u64) {
        let inner = self.inner.lock().unwrap();
        (self.tx.subscribe(), inner.rv)
    }

    /// Lists a resource and subscribes to changes atomically: nothing is missed or repeated.
    pub fn list_and_subscribe(
        &self,
        gr: &GroupResource,
    ) -> (Vec<Arc<Value>>, u64, broadcast::Receiver<Arc<Event>>) {
        let inner = self.inner.lock().unwrap();
        let items = inner
            .objects
            .get(gr)
            .map(|o| o.values().cloned().collect())
            .unwrap_or_default();
        (items, inner.rv, self.tx.subscribe())
    }

    /// Forgets all history and moves the resourceVersion on: a watch from any version
    /// handed out before now gets 410 Gone (as after an etcd compaction).
    pub fn compact(&self) {
        let mut inner = self.inner.lock().unwrap();
        inner.history.clear();
        inner.rv += 1;
        inner.oldest_rv = inner.rv;
    }

    fn record(
        &self,
        inner: &mut Inner,
        type_: EventType,
        (gr, namespace, name): (&GroupResource, &str, &str),
        object: Arc<Value>,
        prev: Option<Arc<Value>>,
    ) {
        let ev = Arc::new(Event {
            rv: inner.rv,
            type_,
            gr: gr.clone(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            object,
            prev,
        });
        inner.history.push_back(ev.clone());
        while inner.history.len() > inner.history_cap {
            let dropped = inner.history.pop_front().expect("non-empty");
            inner.oldest_rv = dropped.rv;
        }
        // Nobody listening is fine.
        let _ = self.tx.send(ev);
    }
}

/// The `metadata.resourceVersion` of an object, parsed.
pub fn rv_of(obj: &Value) -> Option<u64> {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
}

fn set_rv(obj: &mut Value, rv: u64) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gr() -> GroupResource {
        (String::new(), "services".into())
    }

    #[test]
    fn create_update_delete_stamp_versions_and_record_events() {
        let s = Store::new(10);
        let a = s
            .create(&gr(), "default", "a", json!({"metadata": {"name": "a"}}))
            .unwrap();
        let rv1 = rv_of(&a).unwrap();
        assert_eq!(
            s.create(&gr(), "default", "a", json!({"metadata": {}})),
            Err(StoreError::AlreadyExists)
        );
        assert_eq!(
            s.update(
                &gr(),
                "default",
                "a",
                Some(rv1 + 7),
                json!({"metadata": {}})
            )
            .unwrap_err(),
            StoreError::Conflict
        );
        let b = s
            .update(
                &gr(),
                "default",
                "a",
                Some(rv1),
                json!({"metadata": {"x": 1}}),
            )
            .unwrap();
        assert!(rv_of(&b).unwrap() > rv1);
        s.delete(&gr(), "default", "a", None).unwrap();
        assert!(s.get(&gr(), "default", "a").is_none());
        let w = s.watch_from(rv1 - 1).unwrap();
        let types: Vec<_> = w.replay.iter().map(|e| e.type_).collect();
        assert_eq!(
            types,
            vec![EventType::Added, EventType::Modified, EventType::Deleted]
        );
    }

    #[test]
    fn old_versions_expire_after_history_cap_and_compaction() {
        let s = Store::new(2);
        for i in 0..5 {
            s.create(&gr(), "default", &format!("s{i}"), json!({"metadata": {}}))
                .unwrap();
        }
        assert!(matches!(s.watch_from(1), Err(StoreError::Expired { .. })));
        let now = s.current_rv();
        assert_eq!(s.watch_from(now - 1).unwrap().replay.len(), 1);
        s.compact();
        assert!(matches!(s.watch_from(now), Err(StoreError::Expired { .. })));
        assert!(s.watch_from(s.current_rv()).unwrap().replay.is_empty());
    }

    #[test]
    fn list_is_scoped_by_namespace() {
        let s = Store::default();
        for (ns, n) in [("a", "x"), ("b", "y"), ("b", "z"), ("c", "w")] {
            s.create(&gr(), ns, n, json!({"metadata": {"name": n}}))
                .unwrap();
        }
        assert_eq!(s.list(&gr(), Some("b")).0.len(), 2);
        assert_eq!(s.list(&gr(), None).0.len(), 4);
        assert_eq!(s.list(&gr(), Some("bb")).0.len(), 0);
    }
}
