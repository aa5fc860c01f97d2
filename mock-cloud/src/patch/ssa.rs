//! Server-side apply and `metadata.managedFields` bookkeeping.

use serde_json::{Map, Value};

use super::PatchError;
use super::fields::{self, FieldPath, FieldSet};
use super::schema::{ListKind, Schema, key_element};

const APPLY: &str = "Apply";
const UPDATE: &str = "Update";

/// One `metadata.managedFields` entry with its decoded field set.
#[derive(Debug, Clone)]
struct Entry {
    /// Every member except `fieldsType`/`fieldsV1` (kept verbatim, e.g. `subresource`).
    meta: Map<String, Value>,
    set: FieldSet,
}

impl Entry {
    fn new(manager: &str, operation: &str, api_version: &str, now: &str) -> Self {
        let mut meta = Map::new();
        meta.insert("manager".into(), manager.into());
        meta.insert("operation".into(), operation.into());
        meta.insert("apiVersion".into(), api_version.into());
        meta.insert("time".into(), now.into());
        Self {
            meta,
            set: FieldSet::new(),
        }
    }

    fn parse(v: &Value) -> Option<Self> {
        let mut meta = v.as_object()?.clone();
        meta.remove("fieldsType");
        let set = meta
            .remove("fieldsV1")
            .map(|f| fields::from_fields_v1(&f))
            .unwrap_or_default();
        Some(Self { meta, set })
    }

    fn str_field(&self, name: &str) -> &str {
        self.meta.get(name).and_then(Value::as_str).unwrap_or("")
    }

    fn manager(&self) -> &str {
        self.str_field("manager")
    }

    fn is_apply(&self) -> bool {
        self.str_field("operation") == APPLY
    }

    fn touch(&mut self, api_version: &str, now: &str) {
        self.meta.insert("apiVersion".into(), api_version.into());
        self.meta.insert("time".into(), now.into());
    }

    fn into_value(self) -> Value {
        let mut m = self.meta;
        m.insert("fieldsType".into(), "FieldsV1".into());
        m.insert("fieldsV1".into(), fields::to_fields_v1(&self.set));
        Value::Object(m)
    }
}

fn read_entries(obj: &Value) -> Vec<Entry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Entry::parse).collect())
        .unwrap_or_default()
}

/// Stores `entries` (empty ones dropped) as `metadata.managedFields`.
fn write_entries(obj: &mut Value, entries: Vec<Entry>) {
    let list: Vec<Value> = entries
        .into_iter()
        .filter(|e| !e.set.is_empty())
        .map(Entry::into_value)
        .collect();
    let Value::Object(root) = obj else { return };
    if list.is_empty() {
        if let Some(Value::Object(meta)) = root.get_mut("metadata") {
            meta.remove("managedFields");
        }
        return;
    }
    let meta = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(meta) = meta {
        meta.insert("managedFields".into(), Value::Array(list));
    }
}

/// Paths of `set` with no other member below them.
fn leaves(set: &FieldSet) -> impl Iterator<Item = &FieldPath> {
    set.iter().filter(|p| !fields::has_descendant(set, p))
}

/// One field another manager owns with a different value.
struct Conflict {
    manager: String,
    path: FieldPath,
}

/// The apiserver's conflict message.
fn conflict_message(conflicts: &[Conflict]) -> String {
    if let [c] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {:?}: {}",
            c.manager,
            fields::display(&c.path)
        );
    }
    let mut managers: Vec<&str> = conflicts.iter().map(|c| c.manager.as_str()).collect();
    managers.sort_unstable();
    managers.dedup();
    let mut lines = Vec::new();
    for m in managers {
        lines.push(format!("conflicts with {m:?}:"));
        for c in conflicts.iter().filter(|c| c.manager == m) {
            lines.push(format!("- {}", fields::display(&c.path)));
        }
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

/// Checks the applied configuration's type and drops what apply ignores.
fn validate(schema_kind: &str, api_version: &str, applied: Value) -> Result<Value, PatchError> {
    let Value::Object(mut m) = applied else {
        return Err(PatchError::BadRequest(
            "Apply configuration must be a JSON object".into(),
        ));
    };
    let field = |name: &str| m.get(name).and_then(Value::as_str).unwrap_or("").to_owned();
    let (kind, av) = (field("kind"), field("apiVersion"));
    if kind != schema_kind || av != api_version {
        return Err(PatchError::BadRequest(format!(
            "Apply configuration is {av}/{kind}, expected {api_version}/{schema_kind}"
        )));
    }
    if let Some(Value::Object(meta)) = m.get_mut("metadata") {
        meta.remove("managedFields");
    }
    Ok(Value::Object(m))
}

/// Server-side apply of `applied` to `live` (see [`super::server_side_apply`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn apply(
    schema: &Schema,
    kind: &str,
    api_version: &str,
    live: Option<&Value>,
    applied: Value,
    manager: &str,
    force: bool,
    now: &str,
) -> Result<Value, PatchError> {
    let applied = validate(kind, api_version, applied)?;
    let applied_set = fields::collect(schema, &applied)?;
    let live = live.cloned().unwrap_or_else(|| Value::Object(Map::new()));
    let mut entries = read_entries(&live);
    resolve_conflicts(
        schema,
        &live,
        &applied,
        &applied_set,
        &mut entries,
        manager,
        force,
    )?;

    let mine = entries
        .iter()
        .position(|e| e.manager() == manager && e.is_apply());
    let previous = mine.map(|i| entries[i].set.clone()).unwrap_or_default();
    let mut merged = merge(schema, &mut Vec::new(), Some(live), applied);

    let mut kept = applied_set.clone();
    for e in entries
        .iter()
        .filter(|e| !(e.manager() == manager && e.is_apply()))
    {
        kept.extend(e.set.iter().cloned());
    }
    for dropped in previous.difference(&kept) {
        if !fields::has_descendant(&kept, dropped) {
            fields::remove(schema, &mut merged, dropped);
        }
    }

    let mut entry = match mine {
        Some(i) => entries.remove(i),
        None => Entry::new(manager, APPLY, api_version, now),
    };
    entry.touch(api_version, now);
    entry.set = applied_set;
    entries.insert(mine.unwrap_or(entries.len()), entry);
    write_entries(&mut merged, entries);
    Ok(merged)
}

/// Finds fields other managers own with a different value. Conflicts with other
/// apply managers fail the request unless `force`; otherwise (and for update
/// managers) ownership of those fields moves to the applier.
fn resolve_conflicts(
    schema: &Schema,
    live: &Value,
    applied: &Value,
    applied_set: &FieldSet,
    entries: &mut [Entry],
    manager: &str,
    force: bool,
) -> Result<(), PatchError> {
    let differs = |p: &FieldPath| {
        fields::lookup(schema, live, p)
            .is_some_and(|old| fields::lookup(schema, applied, p) != Some(old))
    };
    let mut conflicts = Vec::new();
    for e in entries.iter_mut() {
        if e.manager() == manager && e.is_apply() {
            continue;
        }
        let lost: Vec<FieldPath> = leaves(applied_set)
            .filter(|p| e.set.contains(*p) && differs(p))
            .cloned()
            .collect();
        if e.is_apply() && !force {
            conflicts.extend(lost.into_iter().map(|path| Conflict {
                manager: e.manager().to_owned(),
                path,
            }));
        } else {
            for p in &lost {
                e.set.remove(p);
            }
        }
    }
    if conflicts.is_empty() {
        Ok(())
    } else {
        Err(PatchError::Conflict(conflict_message(&conflicts)))
    }
}

/// Merges an applied configuration into `live`: maps field by field, keyed lists
/// item by item, sets by union, everything else replaced. Nulls are ignored.
fn merge(schema: &Schema, sp: &mut Vec<String>, live: Option<Value>, applied: Value) -> Value {
    match applied {
        Value::Object(a) => {
            let mut base = match live {
                Some(Value::Object(m)) if !schema.is_atomic_map(sp) => m,
                _ => Map::new(),
            };
            for (k, v) in a {
                if v.is_null() {
                    continue;
                }
                sp.push(k.clone());
                let old = base.get_mut(&k).map(Value::take);
                let nv = merge(schema, sp, old, v);
                sp.pop();
                base.insert(k, nv);
            }
            Value::Object(base)
        }
        Value::Array(items) => {
            let kind = schema.list_kind(sp);
            let mut out = match (kind, live) {
                (ListKind::Atomic, _) => Vec::new(),
                (_, Some(Value::Array(l))) => l,
                _ => Vec::new(),
            };
            for item in items {
                merge_item(schema, sp, kind, &mut out, item);
            }
            Value::Array(out)
        }
        scalar => scalar,
    }
}

/// Adds one applied list item to `out`.
fn merge_item(
    schema: &Schema,
    sp: &mut Vec<String>,
    kind: ListKind,
    out: &mut Vec<Value>,
    item: Value,
) {
    match kind {
        ListKind::Atomic => out.push(merge(schema, sp, None, item)),
        ListKind::Set => {
            if !out.contains(&item) {
                out.push(item);
            }
        }
        ListKind::Map(keys) => {
            let key_of = |v: &Value| v.as_object().and_then(|m| key_element(m, keys).ok());
            let k = key_of(&item);
            match out.iter().position(|v| k.is_some() && key_of(v) == k) {
                Some(i) => {
                    let old = out[i].take();
                    out[i] = merge(schema, sp, Some(old), item);
                }
                None => out.push(merge(schema, sp, None, item)),
            }
        }
    }
}

/// Records a non-apply write (see [`super::record_update`]).
pub(crate) fn update(
    schema: &Schema,
    api_version: &str,
    old: Option<&Value>,
    mut new: Value,
    manager: &str,
    now: &str,
) -> Value {
    let Ok(present) = fields::collect(schema, &new) else {
        return new;
    };
    let changed: FieldSet = present
        .iter()
        .filter(|p| {
            let before = old.and_then(|o| fields::lookup(schema, o, p));
            before.is_none()
                || (!fields::has_descendant(&present, p)
                    && before != fields::lookup(schema, &new, p))
        })
        .cloned()
        .collect();
    let mut entries = match new.pointer("/metadata/managedFields") {
        Some(_) => read_entries(&new),
        None => old.map(read_entries).unwrap_or_default(),
    };
    let is_mine = |e: &Entry| {
        e.manager() == manager
            && e.str_field("operation") == UPDATE
            && e.str_field("apiVersion") == api_version
    };
    for e in entries.iter_mut() {
        e.set.retain(|p| present.contains(p));
        if !is_mine(e) {
            e.set.retain(|p| !changed.contains(p));
        }
    }
    if !changed.is_empty() {
        match entries.iter_mut().find(|e| is_mine(e)) {
            Some(e) => {
                e.set.extend(changed);
                e.touch(api_version, now);
            }
            None => {
                let mut e = Entry::new(manager, UPDATE, api_version, now);
                e.set = changed;
                entries.push(e);
            }
        }
    }
    write_entries(&mut new, entries);
    new
}
