//! Strategic merge patch, modelled on apimachinery's `strategicpatch` package.
//!
//! Directives handled: `$patch: replace|delete|merge` on maps and list items,
//! `$retainKeys`, `$deleteFromPrimitiveList/<field>` and `$setElementOrder/<field>`.
//! Directives never reach the result. `null` deletes; nulls with nothing to delete
//! are dropped (upstream's `IgnoreUnmatchedNulls`).

use serde_json::{Map, Value};

use super::PatchError;
use super::schema::{ListKind, Schema, find_item, require_key};

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";

/// What a `$patch` directive asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Directive {
    Merge,
    Replace,
    Delete,
}

/// Removes and parses the `$patch` directive of a patch map.
fn take_directive(patch: &mut Map<String, Value>) -> Result<Directive, PatchError> {
    match patch.remove(PATCH) {
        None => Ok(Directive::Merge),
        Some(Value::String(s)) => match s.as_str() {
            "merge" => Ok(Directive::Merge),
            "replace" => Ok(Directive::Replace),
            "delete" => Ok(Directive::Delete),
            other => Err(bad(format!("Unknown patch directive {other:?}"))),
        },
        Some(other) => Err(bad(format!("Invalid patch directive {other}"))),
    }
}

fn bad(msg: String) -> PatchError {
    PatchError::BadRequest(msg)
}

/// Applies a strategic merge patch object to the `live` object.
pub(crate) fn patch_object(
    schema: &Schema,
    live: &Value,
    patch: Value,
) -> Result<Value, PatchError> {
    let Value::Object(patch) = patch else {
        return Err(bad("Strategic merge patch must be a JSON object".into()));
    };
    let mut path = Vec::new();
    match merge_value(schema, &mut path, Some(live.clone()), Value::Object(patch))? {
        Some(v @ Value::Object(_)) => Ok(v),
        _ => Err(bad("Patch must not delete the whole object".into())),
    }
}

/// Merges `patch` into `orig` (absent when the field does not exist yet);
/// `None` means the field is deleted.
fn merge_value(
    schema: &Schema,
    path: &mut Vec<String>,
    orig: Option<Value>,
    patch: Value,
) -> Result<Option<Value>, PatchError> {
    match patch {
        Value::Null => Ok(None),
        Value::Object(mut p) => {
            let base = match take_directive(&mut p)? {
                Directive::Delete => return Ok(None),
                Directive::Replace => Map::new(),
                Directive::Merge => match orig {
                    Some(Value::Object(m)) => m,
                    _ => Map::new(),
                },
            };
            merge_map(schema, path, base, p).map(|m| Some(Value::Object(m)))
        }
        Value::Array(p) => {
            let base = match orig {
                Some(Value::Array(a)) => a,
                _ => Vec::new(),
            };
            merge_list(schema, path, base, p).map(|l| Some(Value::Array(l)))
        }
        scalar => Ok(Some(scalar)),
    }
}

/// Merges a patch map (its `$patch` already taken) into `orig`.
fn merge_map(
    schema: &Schema,
    path: &mut Vec<String>,
    mut orig: Map<String, Value>,
    mut patch: Map<String, Value>,
) -> Result<Map<String, Value>, PatchError> {
    if let Some(retain) = patch.remove(RETAIN_KEYS) {
        apply_retain_keys(&mut orig, &retain)?;
    }
    let mut orders = Vec::new();
    let directive_keys: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(DELETE_FROM_PRIMITIVE_LIST) || k.starts_with(SET_ELEMENT_ORDER))
        .cloned()
        .collect();
    for k in directive_keys {
        let v = patch.remove(&k).unwrap_or(Value::Null);
        if let Some(field) = k.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            delete_from_primitive_list(&mut orig, field, &v)?;
        } else if let Some(field) = k.strip_prefix(SET_ELEMENT_ORDER) {
            orders.push((field.to_owned(), v));
        }
    }
    for (k, v) in patch {
        path.push(k.clone());
        let merged = match orig.get_mut(&k) {
            Some(slot) => {
                let old = slot.take();
                merge_value(schema, path, Some(old), v)?
            }
            None => merge_value(schema, path, None, v)?,
        };
        path.pop();
        match merged {
            Some(nv) => {
                orig.insert(k, nv);
            }
            None => {
                orig.remove(&k);
            }
        }
    }
    for (field, order) in orders {
        path.push(field.clone());
        let kind = schema.list_kind(path);
        path.pop();
        if let Some(Value::Array(items)) = orig.get_mut(&field) {
            reorder(items, &order, kind)?;
        }
    }
    Ok(orig)
}

/// `$retainKeys`: drops every original key not listed.
fn apply_retain_keys(orig: &mut Map<String, Value>, retain: &Value) -> Result<(), PatchError> {
    let list = retain
        .as_array()
        .ok_or_else(|| bad("$retainKeys must be a list of strings".into()))?;
    let keep: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
    if keep.len() != list.len() {
        return Err(bad("$retainKeys must be a list of strings".into()));
    }
    orig.retain(|k, _| keep.contains(&k.as_str()));
    Ok(())
}

/// `$deleteFromPrimitiveList/<field>`: removes the listed values from `orig[field]`.
fn delete_from_primitive_list(
    orig: &mut Map<String, Value>,
    field: &str,
    values: &Value,
) -> Result<(), PatchError> {
    let values = values
        .as_array()
        .ok_or_else(|| bad(format!("$deleteFromPrimitiveList/{field} must be a list")))?;
    if let Some(Value::Array(items)) = orig.get_mut(field) {
        items.retain(|v| !values.contains(v));
    }
    Ok(())
}

/// Merges a patch list into `orig` according to the list's kind.
fn merge_list(
    schema: &Schema,
    path: &mut Vec<String>,
    orig: Vec<Value>,
    patch: Vec<Value>,
) -> Result<Vec<Value>, PatchError> {
    match schema.list_kind(path) {
        ListKind::Atomic => clean_items(schema, path, patch),
        ListKind::Set => Ok(merge_set(orig, patch)),
        ListKind::Map(keys) => {
            if patch.iter().any(is_replace_marker) {
                let rest = patch
                    .into_iter()
                    .filter(|v| !is_replace_marker(v))
                    .collect();
                return clean_items(schema, path, rest);
            }
            let mut out = orig;
            for item in patch {
                merge_keyed_item(schema, path, &mut out, item, keys)?;
            }
            Ok(out)
        }
    }
}

/// Whether a list element is the bare `{"$patch": "replace"}` marker.
fn is_replace_marker(v: &Value) -> bool {
    v.get(PATCH).and_then(Value::as_str) == Some("replace")
}

/// Patch items for a list that is replaced: directives stripped, deleted items dropped.
fn clean_items(
    schema: &Schema,
    path: &mut Vec<String>,
    items: Vec<Value>,
) -> Result<Vec<Value>, PatchError> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        if item.is_object() {
            out.extend(merge_value(schema, path, None, item)?);
        } else {
            out.push(item);
        }
    }
    Ok(out)
}

/// Union of two primitive lists, original order first; a `{"$patch":"replace"}` marker replaces.
fn merge_set(orig: Vec<Value>, patch: Vec<Value>) -> Vec<Value> {
    if patch.iter().any(is_replace_marker) {
        return patch.into_iter().filter(|v| !v.is_object()).collect();
    }
    let mut out = orig;
    for v in patch {
        if !v.is_null() && !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

/// Merges, adds or (with `$patch: delete`) removes one keyed list item.
fn merge_keyed_item(
    schema: &Schema,
    path: &mut Vec<String>,
    out: &mut Vec<Value>,
    item: Value,
    keys: &'static [super::schema::KeyField],
) -> Result<(), PatchError> {
    let Value::Object(map) = item else {
        return Err(bad(format!(
            "List {} expects objects, got {item}",
            path.join(".")
        )));
    };
    require_key(&map, keys)?;
    let found = find_item(out, &map, keys);
    let is_delete = map.get(PATCH).and_then(Value::as_str) == Some("delete");
    match (found, is_delete) {
        (Some(i), true) => {
            out.remove(i);
        }
        (None, true) => {}
        (Some(i), false) => {
            let old = out[i].take();
            match merge_value(schema, path, Some(old), Value::Object(map))? {
                Some(v) => out[i] = v,
                None => {
                    out.remove(i);
                }
            }
        }
        (None, false) => out.extend(merge_value(schema, path, None, Value::Object(map))?),
    }
    Ok(())
}

/// `$setElementOrder/<field>`: listed items first, in the given order, then the rest
/// in their current order.
fn reorder(items: &mut Vec<Value>, order: &Value, kind: ListKind) -> Result<(), PatchError> {
    let order = order
        .as_array()
        .ok_or_else(|| bad("$setElementOrder must be a list".into()))?;
    let mut rest = std::mem::take(items);
    for o in order {
        let idx = match (kind, o) {
            (ListKind::Map(keys), Value::Object(m)) => find_item(&rest, m, keys),
            (ListKind::Map(_), _) => {
                return Err(bad(format!("Invalid $setElementOrder entry {o}")));
            }
            _ => rest.iter().position(|v| v == o),
        };
        if let Some(i) = idx {
            items.push(rest.remove(i));
        }
    }
    items.append(&mut rest);
    Ok(())
}
