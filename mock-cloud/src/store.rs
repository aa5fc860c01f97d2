//! The object store behind the API server: one resourceVersion counter, objects by resource,
//! and a bounded history of changes that watches replay from.
//!
//! The store knows nothing of API semantics (defaulting, finalizers, validation); it only
//! keeps objects, stamps `metadata.resourceVersion`, and tells watchers what changed.

use serde_json::Value;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
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

/// The objects of one resource by (namespace, name), and how many each namespace holds.
#[derive(Default)]
struct Objects {
    by_key: BTreeMap<(String, String), Arc<Value>>,
    per_namespace: HashMap<String, usize>,
}

impl Objects {
    fn get(&self, key: &(String, String)) -> Option<&Arc<Value>> {
        self.by_key.get(key)
    }

    fn contains_key(&self, key: &(String, String)) -> bool {
        self.by_key.contains_key(key)
    }

    fn insert(&mut self, key: (String, String), obj: Arc<Value>) {
        let ns = key.0.clone();
        if self.by_key.insert(key, obj).is_none() {
            *self.per_namespace.entry(ns).or_default() += 1;
        }
    }

    fn remove(&mut self, key: &(String, String)) -> Option<Arc<Value>> {
        let removed = self.by_key.remove(key)?;
        if let Some(n) = self.per_namespace.get_mut(&key.0) {
            *n -= 1;
            if *n == 0 {
                self.per_namespace.remove(&key.0);
            }
        }
        Some(removed)
    }

    /// Objects in scope: one namespace, or all.
    fn count(&self, namespace: Option<&str>) -> usize {
        match namespace {
            None => self.by_key.len(),
            Some(ns) => self.per_namespace.get(ns).copied().unwrap_or(0),
        }
    }
}

/// One page of a list (see [`Store::list_page`]).
pub struct Page {
    pub items: Vec<Arc<Value>>,
    /// Whether any object in scope (accepted or not) follows the last one examined.
    pub more: bool,
    /// Objects in scope, accepted or not.
    pub total: usize,
    /// The store's resourceVersion when the page was read.
    pub rv: u64,
}

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
                None => objs.by_key.values().cloned().collect(),
                Some(ns) => objs
                    .by_key
                    .range((ns.to_string(), String::new())..)
                    .take_while(|((n, _), _)| n == ns)
                    .map(|(_, v)| v.clone())
                    .collect(),
            },
        };
        (items, inner.rv)
    }

    /// At most `limit` objects (all when None) that `keep` accepts, in (namespace, name)
    /// order, starting after the key `after`: a range read of the ordered index, so a page
    /// costs O(log n + objects examined), however deep into the collection it starts.
    pub fn list_page(
        &self,
        gr: &GroupResource,
        namespace: Option<&str>,
        after: Option<(&str, &str)>,
        limit: Option<usize>,
        keep: impl Fn(&Value) -> bool,
    ) -> Page {
        let inner = self.inner.lock().unwrap();
        let Some(objs) = inner.objects.get(gr) else {
            return Page {
                items: Vec::new(),
                more: false,
                total: 0,
                rv: inner.rv,
            };
        };
        let start = match (after, namespace) {
            (Some((ns, name)), _) => Bound::Excluded((ns.to_string(), name.to_string())),
            (None, Some(ns)) => Bound::Included((ns.to_string(), String::new())),
            (None, None) => Bound::Unbounded,
        };
        let mut in_scope = objs
            .by_key
            .range((start, Bound::Unbounded))
            .take_while(|((ns, _), _)| namespace.is_none_or(|want| want == ns))
            .map(|(_, v)| v);
        let mut items = Vec::new();
        let mut more = false;
        for obj in in_scope.by_ref() {
            if keep(obj) {
                items.push(obj.clone());
            }
            if limit.is_some_and(|l| items.len() >= l) {
                more = in_scope.next().is_some();
                break;
            }
        }
        Page {
            items,
            more,
            total: objs.count(namespace),
            rv: inner.rv,
        }
    }

    /// The oldest resourceVersion still readable: anything older has been compacted away.
    pub fn oldest_rv(&self) -> u64 {
        self.inner.lock().unwrap().oldest_rv
    }

    /// Number of objects of a resource.
    pub fn count(&self, gr: &GroupResource) -> usize {
        let inner = self.inner.lock().unwrap();
        inner.objects.get(gr).map(|o| o.count(None)).unwrap_or(0)
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
            .map(|o| o.by_key.values().cloned().collect())
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

    #[test]
    fn pages_start_after_their_key_and_stop_at_the_limit() {
        let s = Store::default();
        for (ns, n) in [("a", "x"), ("b", "p"), ("b", "q"), ("b", "r"), ("c", "w")] {
            s.create(&gr(), ns, n, json!({"metadata": {"name": n}}))
                .unwrap();
        }
        let names = |p: &Page| -> Vec<String> {
            p.items
                .iter()
                .map(|o| o["metadata"]["name"].as_str().unwrap_or("").to_string())
                .collect()
        };
        let all = |_: &Value| true;
        let p = s.list_page(&gr(), Some("b"), None, Some(2), all);
        assert_eq!(
            (names(&p), p.more, p.total),
            (vec!["p".into(), "q".into()], true, 3)
        );
        let p = s.list_page(&gr(), Some("b"), Some(("b", "q")), Some(2), all);
        assert_eq!((names(&p), p.more), (vec!["r".to_string()], false));
        let p = s.list_page(&gr(), None, Some(("b", "q")), None, all);
        assert_eq!(
            (names(&p), p.more, p.total),
            (vec!["r".into(), "w".into()], false, 5)
        );
        // A full page says more follows only when something in scope does.
        let p = s.list_page(&gr(), Some("b"), Some(("b", "p")), Some(2), all);
        assert_eq!((names(&p), p.more), (vec!["q".into(), "r".into()], false));
        let only_q = |o: &Value| o["metadata"]["name"] == "q";
        let p = s.list_page(&gr(), None, None, Some(1), only_q);
        assert_eq!((names(&p), p.more), (vec!["q".to_string()], true));
        s.delete(&gr(), "b", "q", None).unwrap();
        assert_eq!(s.list_page(&gr(), Some("b"), None, None, all).total, 2);
        assert_eq!(s.list_page(&gr(), Some("zz"), None, None, all).total, 0);
    }
}
