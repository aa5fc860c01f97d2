//! A custom resource against its CRD's structural `openAPIV3Schema`, as kube-apiserver
//! checks it: nulls of non-nullable fields dropped, unknown fields pruned (unless
//! `x-kubernetes-preserve-unknown-fields`), defaults filled in, then types, `required`,
//! `enum`, `pattern`, `minimum`/`maximum`, lengths and item counts checked. Each problem is
//! one [`FieldError`] worded as kube-apiserver words it.

use super::FieldError;
use serde_json::{Map, Value};

/// The most regexes kept compiled (CRD patterns are few; the cap bounds a hostile CRD).
const REGEX_CACHE_MAX: usize = 256;

/// Drops what the schema does not know, and fills in defaults, in place; the paths of the
/// unknown fields dropped (`spec.colour`) go to `pruned`.
pub fn prune_and_default(schema: &Value, v: &mut Value, path: &str, pruned: &mut Vec<String>) {
    let preserve = schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match v {
        Value::Object(m) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                m.retain(|k, val| match props.get(k) {
                    None => {
                        if !preserve {
                            pruned.push(join(k));
                        }
                        preserve
                    }
                    Some(ps) => !(val.is_null() && ps.get("nullable") != Some(&Value::Bool(true))),
                });
                for (k, ps) in props {
                    if let Some(d) = ps.get("default")
                        && !m.contains_key(k)
                    {
                        m.insert(k.clone(), d.clone());
                    }
                }
                for (k, val) in m.iter_mut() {
                    if let Some(ps) = props.get(k) {
                        prune_and_default(ps, val, &join(k), pruned);
                    }
                }
            } else if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for (k, val) in m.iter_mut() {
                    prune_and_default(ap, val, &join(k), pruned);
                }
            } else if !preserve && schema.get("type").and_then(Value::as_str) == Some("object") {
                // An object with neither properties nor additionalProperties keeps nothing.
                pruned.extend(m.keys().map(|k| join(k)));
                m.clear();
            }
        }
        Value::Array(items) => {
            if let Some(is) = schema.get("items") {
                for (i, it) in items.iter_mut().enumerate() {
                    prune_and_default(is, it, &format!("{path}[{i}]"), pruned);
                }
            }
        }
        _ => {}
    }
}

/// How kube-apiserver names a JSON value's type in a message.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A value as an `Invalid value:` shows it: strings quoted, the rest as JSON.
pub fn shown(v: &Value) -> String {
    v.to_string()
}

fn type_ok(want: &str, v: &Value) -> bool {
    match want {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        _ => true,
    }
}

fn regex_matches(pattern: &str, s: &str) -> Option<bool> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<HashMap<String, Option<regex::Regex>>>> = OnceLock::new();
    let mut c = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if c.len() >= REGEX_CACHE_MAX && !c.contains_key(pattern) {
        c.clear();
    }
    let re = c
        .entry(pattern.to_string())
        .or_insert_with(|| regex::Regex::new(pattern).ok());
    re.as_ref().map(|r| r.is_match(s))
}

fn num(schema: &Value, key: &str) -> Option<f64> {
    schema.get(key).and_then(Value::as_f64)
}

fn count(schema: &Value, key: &str) -> Option<usize> {
    schema.get(key).and_then(Value::as_u64).map(|n| n as usize)
}

/// Checks `v` at `path` against `schema`, appending to `errs`.
pub fn validate(schema: &Value, v: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if v.is_null() {
        if schema.get("nullable") != Some(&Value::Bool(true)) {
            let want = schema
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("object");
            errs.push(FieldError::type_invalid(path, v, want));
        }
        return;
    }
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        if !(v.is_string() || v.is_i64() || v.is_u64()) {
            errs.push(FieldError::type_invalid(path, v, "integer or string"));
        }
        return;
    }
    if let Some(want) = schema.get("type").and_then(Value::as_str)
        && !type_ok(want, v)
    {
        errs.push(FieldError::type_invalid(path, v, want));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        let list: Vec<String> = allowed.iter().map(shown).collect();
        errs.push(FieldError::new(
            path,
            "FieldValueNotSupported",
            format!(
                "Unsupported value: {}: supported values: {}",
                shown(v),
                list.join(", ")
            ),
        ));
    }
    match v {
        Value::String(s) => string(schema, s, v, path, errs),
        Value::Number(_) => number(schema, v, path, errs),
        Value::Array(items) => array(schema, items, path, errs),
        Value::Object(m) => object(schema, m, path, errs),
        _ => {}
    }
}

fn string(schema: &Value, s: &str, v: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let chars = s.chars().count();
    if let Some(max) = count(schema, "maxLength")
        && chars > max
    {
        errs.push(FieldError::new(
            path,
            "FieldValueTooLong",
            format!("Too long: may not be more than {max} bytes"),
        ));
    }
    if let Some(min) = count(schema, "minLength")
        && chars < min
    {
        errs.push(FieldError::invalid(
            path,
            v,
            &format!("{path} in body should be at least {min} chars long"),
        ));
    }
    if let Some(p) = schema.get("pattern").and_then(Value::as_str)
        && regex_matches(p, s) == Some(false)
    {
        errs.push(FieldError::invalid(
            path,
            v,
            &format!("{path} in body should match '{p}'"),
        ));
    }
}

fn number(schema: &Value, v: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let Some(x) = v.as_f64() else { return };
    let fmt = |b: f64| {
        if b.fract() == 0.0 && b.abs() < 1e18 {
            format!("{}", b as i64)
        } else {
            b.to_string()
        }
    };
    if let Some(min) = num(schema, "minimum") {
        let excl = schema.get("exclusiveMinimum") == Some(&Value::Bool(true));
        if x < min || (excl && x == min) {
            let rel = if excl {
                "greater than"
            } else {
                "greater than or equal to"
            };
            errs.push(FieldError::invalid(
                path,
                v,
                &format!("{path} in body should be {rel} {}", fmt(min)),
            ));
        }
    }
    if let Some(max) = num(schema, "maximum") {
        let excl = schema.get("exclusiveMaximum") == Some(&Value::Bool(true));
        if x > max || (excl && x == max) {
            let rel = if excl {
                "less than"
            } else {
                "less than or equal to"
            };
            errs.push(FieldError::invalid(
                path,
                v,
                &format!("{path} in body should be {rel} {}", fmt(max)),
            ));
        }
    }
}

fn array(schema: &Value, items: &[Value], path: &str, errs: &mut Vec<FieldError>) {
    if let Some(max) = count(schema, "maxItems")
        && items.len() > max
    {
        errs.push(FieldError::new(
            path,
            "FieldValueTooMany",
            format!("Too many: {}: must have at most {max} items", items.len()),
        ));
    }
    if let Some(min) = count(schema, "minItems")
        && items.len() < min
    {
        errs.push(FieldError::invalid(
            path,
            &Value::from(items.len()),
            &format!("{path} in body should have at least {min} items"),
        ));
    }
    if schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("set") {
        for (i, it) in items.iter().enumerate() {
            if items[..i].contains(it) {
                errs.push(FieldError::new(
                    format!("{path}[{i}]"),
                    "FieldValueDuplicate",
                    format!("Duplicate value: {}", shown(it)),
                ));
            }
        }
    }
    if let Some(is) = schema.get("items") {
        for (i, it) in items.iter().enumerate() {
            validate(is, it, &format!("{path}[{i}]"), errs);
        }
    }
}

fn object(schema: &Value, m: &Map<String, Value>, path: &str, errs: &mut Vec<FieldError>) {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    if let Some(req) = schema.get("required").and_then(Value::as_array) {
        for k in req.iter().filter_map(Value::as_str) {
            if !m.contains_key(k) {
                errs.push(FieldError::new(
                    join(k),
                    "FieldValueRequired",
                    "Required value".into(),
                ));
            }
        }
    }
    if let Some(max) = count(schema, "maxProperties")
        && m.len() > max
    {
        errs.push(FieldError::new(
            path,
            "FieldValueTooMany",
            format!("Too many: {}: must have at most {max} items", m.len()),
        ));
    }
    let props = schema.get("properties").and_then(Value::as_object);
    let extra = schema.get("additionalProperties").filter(|a| a.is_object());
    for (k, val) in m {
        if path.is_empty() && matches!(k.as_str(), "metadata" | "apiVersion" | "kind") {
            continue;
        }
        if let Some(ps) = props.and_then(|p| p.get(k)) {
            validate(ps, val, &join(k), errs);
        } else if let Some(ap) = extra {
            validate(ap, val, &join(k), errs);
        }
    }
}
