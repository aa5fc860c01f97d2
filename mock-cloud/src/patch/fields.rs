//! Field sets for server-side apply and their FieldsV1 encoding.
//!
//! A path is a list of elements in FieldsV1 spelling: `f:<field>`, `k:<key json>`
//! (an item of a keyed list) or `v:<value json>` (an item of a set). A set holds
//! leaf paths and keyed/set items; FieldsV1 marks an owned node that also has
//! owned children with `.`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::PatchError;
use super::schema::{ListKind, Schema, key_element};

/// One path in an object, as FieldsV1 elements.
pub(crate) type FieldPath = Vec<String>;

/// A set of owned paths.
pub(crate) type FieldSet = BTreeSet<FieldPath>;

/// Metadata that is never tracked as owned (upstream strips the same fields).
const UNTRACKED_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// Whether the field at schema path `path` is exempt from ownership.
fn is_untracked(path: &[String]) -> bool {
    match path {
        [f] => f == "apiVersion" || f == "kind",
        [m, f] => m == "metadata" && UNTRACKED_METADATA.contains(&f.as_str()),
        _ => false,
    }
}

/// Every owned path of `obj` (nulls skipped, untracked metadata left out).
pub(crate) fn collect(schema: &Schema, obj: &Value) -> Result<FieldSet, PatchError> {
    let mut out = FieldSet::new();
    let mut sp = Vec::new();
    let mut elems = Vec::new();
    collect_value(schema, obj, &mut sp, &mut elems, &mut out)?;
    Ok(out)
}

fn collect_value(
    schema: &Schema,
    v: &Value,
    sp: &mut Vec<String>,
    elems: &mut FieldPath,
    out: &mut FieldSet,
) -> Result<(), PatchError> {
    match v {
        Value::Object(m) if !m.is_empty() && !schema.is_atomic_map(sp) => {
            collect_map(schema, m, sp, elems, out)
        }
        Value::Array(items) if !items.is_empty() => match schema.list_kind(sp) {
            ListKind::Atomic => {
                out.insert(elems.clone());
                Ok(())
            }
            ListKind::Set => {
                for item in items {
                    let mut p = elems.clone();
                    p.push(format!("v:{item}"));
                    out.insert(p);
                }
                Ok(())
            }
            ListKind::Map(keys) => {
                let mut seen = BTreeSet::new();
                for item in items {
                    let Value::Object(m) = item else {
                        return Err(PatchError::BadRequest(format!(
                            "List .{} expects objects, got {item}",
                            sp.join(".")
                        )));
                    };
                    let k = key_element(m, keys)?;
                    if !seen.insert(k.clone()) {
                        return Err(PatchError::BadRequest(format!(
                            "Duplicate entries for key {k} in .{}",
                            sp.join(".")
                        )));
                    }
                    elems.push(k);
                    out.insert(elems.clone());
                    collect_map(schema, m, sp, elems, out)?;
                    elems.pop();
                }
                Ok(())
            }
        },
        _ => {
            if !elems.is_empty() {
                out.insert(elems.clone());
            }
            Ok(())
        }
    }
}

fn collect_map(
    schema: &Schema,
    m: &Map<String, Value>,
    sp: &mut Vec<String>,
    elems: &mut FieldPath,
    out: &mut FieldSet,
) -> Result<(), PatchError> {
    for (k, v) in m {
        sp.push(k.clone());
        if !v.is_null() && !is_untracked(sp) {
            elems.push(format!("f:{k}"));
            collect_value(schema, v, sp, elems, out)?;
            elems.pop();
        }
        sp.pop();
    }
    Ok(())
}

/// Index of the item a `k:`/`v:` element names in `items` (the list at schema path `sp`).
fn find_element(schema: &Schema, items: &[Value], sp: &[String], elem: &str) -> Option<usize> {
    if elem.starts_with("v:") {
        return items.iter().position(|v| format!("v:{v}") == elem);
    }
    let ListKind::Map(keys) = schema.list_kind(sp) else {
        return None;
    };
    items.iter().position(|v| {
        v.as_object()
            .and_then(|m| key_element(m, keys).ok())
            .is_some_and(|k| k == elem)
    })
}

/// The value at `path` in `root`.
pub(crate) fn lookup<'a>(schema: &Schema, root: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = root;
    let mut sp = Vec::new();
    for elem in path {
        cur = match (elem.strip_prefix("f:"), cur) {
            (Some(f), Value::Object(m)) => {
                sp.push(f.to_owned());
                m.get(f)?
            }
            (None, Value::Array(items)) => &items[find_element(schema, items, &sp, elem)?],
            _ => return None,
        };
    }
    Some(cur)
}

/// Removes the value at `path` from `root`, pruning maps the removal left empty.
pub(crate) fn remove(schema: &Schema, root: &mut Value, path: &[String]) {
    let mut sp = Vec::new();
    remove_at(schema, root, path, &mut sp);
}

fn remove_at(schema: &Schema, node: &mut Value, path: &[String], sp: &mut Vec<String>) {
    let Some((head, rest)) = path.split_first() else {
        return;
    };
    match (head.strip_prefix("f:"), node) {
        (Some(f), Value::Object(m)) => {
            if !rest.is_empty() {
                let Some(child) = m.get_mut(f) else { return };
                sp.push(f.to_owned());
                remove_at(schema, child, rest, sp);
                sp.pop();
                if !child.as_object().is_some_and(Map::is_empty) {
                    return;
                }
            }
            m.remove(f);
        }
        (None, Value::Array(items)) => {
            let Some(i) = find_element(schema, items, sp, head) else {
                return;
            };
            if rest.is_empty() {
                items.remove(i);
            } else {
                remove_at(schema, &mut items[i], rest, sp);
            }
        }
        _ => {}
    }
}

/// Whether some path in `set` lies strictly below `path`.
pub(crate) fn has_descendant(set: &FieldSet, path: &FieldPath) -> bool {
    set.range(path.clone()..)
        .find(|p| *p != path)
        .is_some_and(|p| p.starts_with(path))
}

/// Renders a path the way apiserver conflict messages do: `.spec.ports[port=80,protocol="TCP"]`.
pub(crate) fn display(path: &[String]) -> String {
    let mut s = String::new();
    for elem in path {
        if let Some(f) = elem.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(v) = elem.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        } else if let Some(k) = elem.strip_prefix("k:") {
            let parsed: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = parsed.iter().map(|(n, v)| format!("{n}={v}")).collect();
            s.push_str(&format!("[{}]", parts.join(",")));
        }
    }
    s
}

#[derive(Default)]
struct Node {
    owned: bool,
    children: BTreeMap<String, Node>,
}

impl Node {
    fn into_value(self) -> Value {
        let mut m = Map::new();
        if self.owned && !self.children.is_empty() {
            m.insert(".".into(), Value::Object(Map::new()));
        }
        for (k, child) in self.children {
            m.insert(k, child.into_value());
        }
        Value::Object(m)
    }
}

/// Encodes a field set as a FieldsV1 object.
pub(crate) fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Node::default();
    for path in set {
        let mut node = &mut root;
        for elem in path {
            node = node.children.entry(elem.clone()).or_default();
        }
        node.owned = true;
    }
    root.into_value()
}

/// Decodes a FieldsV1 object; anything malformed is ignored.
pub(crate) fn from_fields_v1(v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    let mut prefix = Vec::new();
    decode_node(v, &mut prefix, &mut out);
    out
}

fn decode_node(v: &Value, prefix: &mut FieldPath, out: &mut FieldSet) {
    let Some(m) = v.as_object() else { return };
    for (k, child) in m {
        if k == "." {
            out.insert(prefix.clone());
            continue;
        }
        prefix.push(k.clone());
        if child.as_object().is_some_and(Map::is_empty) {
            out.insert(prefix.clone());
        } else {
            decode_node(child, prefix, out);
        }
        prefix.pop();
    }
}
