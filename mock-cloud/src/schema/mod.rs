//! Custom resources enforced as kube-apiserver enforces them on create, update and patch
//! (status writes too): the CRD's structural schema ([`structural`]: pruning, defaults,
//! types, formats of values) and its `x-kubernetes-validations` CEL rules ([`cel`]). A
//! refusal is a 422 `Invalid` Status whose causes name each field, worded like
//! kube-apiserver's, so `kubectl apply` prints the rule's message.
//!
//! As kube-apiserver does, CEL rules are not evaluated when a value has the wrong type; and
//! on update an error at a path whose value did not change is dropped (validation
//! ratcheting), so a tightened CRD does not lock existing objects.

pub mod cel;
pub mod structural;

#[cfg(test)]
mod tests;

use crate::apiserver::error::{ApiError, Cause};
use crate::registry::ResourceInfo;
use serde_json::{Value, json};

/// One problem with a field.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// `spec.addresses[0]`.
    pub field: String,
    /// `FieldValueInvalid`, `FieldValueRequired`, ...
    pub reason: String,
    /// `Invalid value: "string": must be a CIDR ...`.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: &str, message: String) -> Self {
        FieldError {
            field: field.into(),
            reason: reason.into(),
            message,
        }
    }

    /// `Invalid value: VALUE: DETAIL`.
    pub fn invalid(field: &str, value: &Value, detail: &str) -> Self {
        Self::new(
            field,
            "FieldValueInvalid",
            format!("Invalid value: {}: {detail}", structural::shown(value)),
        )
    }

    /// A value of the wrong type.
    pub fn type_invalid(field: &str, value: &Value, want: &str) -> Self {
        let got = structural::type_name(value);
        Self::new(
            field,
            "FieldValueTypeInvalid",
            format!("Invalid value: \"{got}\": {field} in body must be of type {want}: \"{got}\""),
        )
    }

    /// The line kube-apiserver prints: `FIELD: MESSAGE`.
    pub fn line(&self) -> String {
        if self.field.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.field, self.message)
        }
    }
}

/// What checking a custom resource found.
#[derive(Debug, Default)]
pub struct Checked {
    /// Every problem.
    pub errors: Vec<FieldError>,
    /// The unknown fields pruned (`spec.colour`).
    pub pruned: Vec<String>,
}

/// Prunes and defaults `obj` in place, then checks it.
pub fn check(schema: &Value, obj: &mut Value) -> Checked {
    let Some(m) = obj.as_object_mut() else {
        return Checked {
            errors: vec![FieldError::new(
                "",
                "FieldValueTypeInvalid",
                "the body must be a JSON object".into(),
            )],
            pruned: Vec::new(),
        };
    };
    // apiVersion, kind and metadata are the API server's, not the schema's.
    let keep: Vec<(String, Value)> = ["apiVersion", "kind", "metadata"]
        .iter()
        .filter_map(|k| m.remove(*k).map(|v| (k.to_string(), v)))
        .collect();
    let mut root = Value::Object(std::mem::take(m));
    let mut pruned = Vec::new();
    structural::prune_and_default(schema, &mut root, "", &mut pruned);
    let mut errs = Vec::new();
    structural::validate(schema, &root, "", &mut errs);
    let Value::Object(mut body) = root else {
        unreachable!("an object stays an object")
    };
    for (k, v) in keep {
        body.insert(k, v);
    }
    *obj = Value::Object(body);
    if errs.iter().any(|e| e.reason == "FieldValueTypeInvalid") {
        errs.push(FieldError::new(
            "<nil>",
            "FieldValueInvalid",
            "Invalid value: \"null\": some validation rules were not checked because the object was invalid; correct the existing errors to complete validation".into(),
        ));
    } else {
        let mut view = obj.clone();
        if let Some(meta) = view.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.retain(|k, _| k == "name" || k == "generateName");
        }
        rules(schema, &view, "", &mut errs);
    }
    Checked {
        errors: errs,
        pruned,
    }
}

/// The value at `path` (`spec.a[0].b`), if any.
fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, rest) = part.split_once('[').unwrap_or((part, ""));
        if !name.is_empty() {
            cur = cur.get(name)?;
        }
        for idx in rest.split('[').filter(|s| !s.is_empty()) {
            let i: usize = idx.trim_end_matches(']').parse().ok()?;
            cur = cur.get(i)?;
        }
    }
    Some(cur)
}

/// Evaluates the CEL rules of `schema` and of every value below it.
fn rules(schema: &Value, v: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if v.is_null() {
        return;
    }
    if let Some(list) = schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    {
        for r in list {
            let Some(rule) = r.get("rule").and_then(Value::as_str) else {
                continue;
            };
            if rule.contains("oldSelf") {
                continue;
            }
            let field = match r.get("fieldPath").and_then(Value::as_str) {
                Some(fp) if path.is_empty() => fp.trim_start_matches('.').to_string(),
                Some(fp) => format!("{path}{fp}"),
                None => path.to_string(),
            };
            let type_ = schema
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("object");
            let reason = r
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("FieldValueInvalid");
            match cel::eval(rule, v) {
                Ok(true) => {}
                Ok(false) => {
                    let msg = r
                        .get("message")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("failed rule: {rule}"));
                    errs.push(FieldError::new(
                        field,
                        reason,
                        format!("Invalid value: \"{type_}\": {msg}"),
                    ));
                }
                Err(e) => errs.push(FieldError::new(
                    field,
                    "FieldValueInvalid",
                    format!("Invalid value: \"{type_}\": rule {rule:?} evaluation error: {e}"),
                )),
            }
        }
    }
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match v {
        Value::Object(m) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let extra = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, val) in m {
                if path.is_empty() && k == "metadata" {
                    continue;
                }
                if let Some(ps) = props.and_then(|p| p.get(k)).or(extra) {
                    rules(ps, val, &join(k), errs);
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = schema.get("items") {
                for (i, it) in items.iter().enumerate() {
                    rules(is, it, &format!("{path}[{i}]"), errs);
                }
            }
        }
        _ => {}
    }
}

/// The openAPIV3Schema of a custom resource, when it is one and has a schema.
fn schema_of(info: &ResourceInfo) -> Option<&Value> {
    info.crd_name.as_ref()?;
    info.schema.as_ref()
}

/// Admits a custom resource being written (`old`: the stored object, on update): prunes and
/// defaults it in place, or refuses it with a 422 like kube-apiserver's. `strict`
/// (`fieldValidation=Strict`, what kubectl sends) refuses unknown fields with a 400 instead
/// of pruning them.
pub fn admit(
    info: &ResourceInfo,
    obj: &mut Value,
    old: Option<&Value>,
    strict: bool,
) -> Result<(), ApiError> {
    let Some(schema) = schema_of(info) else {
        return Ok(());
    };
    let Checked {
        errors: mut errs,
        pruned,
    } = check(schema, obj);
    if strict && !pruned.is_empty() {
        let list: Vec<String> = pruned
            .iter()
            .map(|p| format!("unknown field \"{p}\""))
            .collect();
        return Err(ApiError::bad_request(format!(
            "{kind} in version \"{v}\" cannot be handled as a {kind}: strict decoding error: {}",
            list.join(", "),
            kind = info.kind,
            v = info.version,
        )));
    }
    if let Some(old) = old {
        // Ratcheting: a value that did not change is not the writer's doing.
        errs.retain(|e| {
            e.field == "<nil>"
                || at(obj, &e.field).is_none()
                || at(obj, &e.field) != at(old, &e.field)
        });
        if errs.len() == 1 && errs[0].field == "<nil>" {
            errs.clear();
        }
    }
    if errs.is_empty() {
        return Ok(());
    }
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let lines: Vec<String> = errs.iter().map(FieldError::line).collect();
    let qualified = if info.group.is_empty() {
        info.kind.clone()
    } else {
        format!("{}.{}", info.kind, info.group)
    };
    let message = if lines.len() == 1 {
        format!("{qualified} \"{name}\" is invalid: {}", lines[0])
    } else {
        format!("{qualified} \"{name}\" is invalid: [{}]", lines.join(", "))
    };
    let causes = errs
        .into_iter()
        .map(|e| Cause {
            field: e.field,
            reason: e.reason,
            message: e.message,
        })
        .collect();
    let mut e = ApiError::invalid(&info.kind, &info.group, &name, causes);
    e.message = message;
    Err(e)
}

/// Checks a CRD's rules compile, as kube-apiserver does when the CRD is written: the first
/// rule that does not, with the JSON path of its schema.
pub fn check_crd_rules(crd: &Value) -> Result<(), String> {
    fn walk(s: &Value, path: &str) -> Result<(), String> {
        if let Some(list) = s.get("x-kubernetes-validations").and_then(Value::as_array) {
            for (i, r) in list.iter().enumerate() {
                let rule = r.get("rule").and_then(Value::as_str).unwrap_or_default();
                cel::compile(rule).map_err(|e| {
                    format!("{path}.x-kubernetes-validations[{i}].rule: Invalid value: {}: compilation failed: {e}", json!(rule))
                })?;
            }
        }
        if let Some(props) = s.get("properties").and_then(Value::as_object) {
            for (k, p) in props {
                walk(p, &format!("{path}.properties[{k}]"))?;
            }
        }
        for k in ["items", "additionalProperties"] {
            if let Some(p) = s.get(k).filter(|p| p.is_object()) {
                walk(p, &format!("{path}.{k}"))?;
            }
        }
        Ok(())
    }
    let versions = crd.pointer("/spec/versions").and_then(Value::as_array);
    for (i, v) in versions.into_iter().flatten().enumerate() {
        if let Some(s) = v.pointer("/schema/openAPIV3Schema") {
            walk(s, &format!("spec.versions[{i}].schema.openAPIV3Schema"))?;
        }
    }
    Ok(())
}
