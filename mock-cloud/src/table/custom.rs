//! Custom resources: the CRD's `additionalPrinterColumns` and their JSON paths.

use super::format::{name, parse_time};
use super::*;

/// The printer columns of a custom resource: the CRD's, or the default `Age` column.
pub(super) fn custom_columns(info: &ResourceInfo) -> Vec<PrinterColumn> {
    if !info.printer_columns.is_empty() {
        return info.printer_columns.clone();
    }
    vec![PrinterColumn {
        name: "Age".into(),
        type_: "date".into(),
        json_path: ".metadata.creationTimestamp".into(),
        description: String::new(),
        priority: 0,
        format: String::new(),
    }]
}

pub(super) fn custom_resource_printer(info: &ResourceInfo) -> Printer {
    let mut columns = vec![name_col()];
    for c in custom_columns(info) {
        let description = if c.description.is_empty() {
            format!(
                "Custom resource definition column (in JSONPath format): {}",
                c.json_path
            )
        } else {
            c.description.clone()
        };
        columns.push(Col {
            name: c.name,
            type_: c.type_,
            format: c.format,
            priority: c.priority,
            description,
        });
    }
    Printer {
        columns,
        cells: custom_resource_cells,
    }
}

pub(super) fn custom_resource_cells(
    info: &ResourceInfo,
    obj: &Value,
    now: DateTime<Utc>,
) -> Vec<Value> {
    let mut cells = vec![name(obj)];
    for c in custom_columns(info) {
        let value = eval_json_path(obj, &c.json_path);
        cells.push(value.map_or(Value::Null, |v| typed_cell(&c.type_, v, now)));
    }
    cells
}

/// A cell of a custom column: the value converted to the column's type, or null.
pub(super) fn typed_cell(type_: &str, v: &Value, now: DateTime<Utc>) -> Value {
    match (type_, v) {
        (_, Value::Null) => Value::Null,
        ("string", Value::String(s)) => json!(s),
        ("string", Value::Number(_) | Value::Bool(_)) => json!(v.to_string()),
        ("string", _) => json!(v.to_string()),
        ("integer", Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .map_or(Value::Null, |x| json!(x)),
        ("number", Value::Number(n)) => n.as_f64().map_or(Value::Null, |x| json!(x)),
        ("boolean", Value::Bool(b)) => json!(b),
        ("date", Value::String(ts)) => match parse_time(ts) {
            Some(t) => json!(human_duration(now.signed_duration_since(t))),
            None => json!("<invalid>"),
        },
        _ => Value::Null,
    }
}

/// One step of a simple JSONPath.
#[derive(Debug, PartialEq)]
pub(super) enum Step {
    Field(String),
    Index(usize),
    /// `[*]`: upstream keeps only the first result.
    All,
    /// `[?(@.key=="value")]`: the first element whose `key` equals `value`.
    Filter(String, String),
}

/// Parses `.a.b`, `.a[0].b`, `.a[*].b`, `.a['x.y']`, `.a[?(@.t=="Ready")].s` (an optional
/// surrounding `{}` is accepted).
pub(super) fn parse_json_path(path: &str) -> Option<Vec<Step>> {
    let p = path.trim();
    let p = p
        .strip_prefix('{')
        .and_then(|x| x.strip_suffix('}'))
        .unwrap_or(p);
    let mut steps = Vec::new();
    let mut rest = p.strip_prefix('$').unwrap_or(p);
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end > 0 {
                steps.push(Step::Field(r[..end].to_string()));
            }
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let (inner, after) = split_bracket(r)?;
            steps.push(parse_bracket(inner)?);
            rest = after;
        } else {
            return None;
        }
    }
    Some(steps)
}

/// Splits `inner]rest` at the bracket's closing `]` (quotes may contain `]`).
pub(super) fn split_bracket(r: &str) -> Option<(&str, &str)> {
    let mut quote: Option<char> = None;
    for (idx, ch) in r.char_indices() {
        match (quote, ch) {
            (Some(q), c) if c == q => quote = None,
            (None, '\'' | '"') => quote = Some(ch),
            (None, ']') => return Some((&r[..idx], &r[idx + 1..])),
            _ => {}
        }
    }
    None
}

/// Removes matching surrounding quotes.
pub(super) fn unquote(s: &str) -> &str {
    let s = s.trim();
    for q in ['\'', '"'] {
        if let Some(x) = s.strip_prefix(q).and_then(|x| x.strip_suffix(q)) {
            return x;
        }
    }
    s
}

pub(super) fn parse_bracket(inner: &str) -> Option<Step> {
    let inner = inner.trim();
    if inner == "*" {
        return Some(Step::All);
    }
    if let Ok(n) = inner.parse::<usize>() {
        return Some(Step::Index(n));
    }
    if let Some(f) = inner.strip_prefix("?(@.").and_then(|x| x.strip_suffix(')')) {
        let (k, v) = f.split_once("==")?;
        return Some(Step::Filter(k.trim().to_string(), unquote(v).to_string()));
    }
    Some(Step::Field(unquote(inner).to_string()))
}

/// Evaluates a simple JSONPath; `None` when the path is invalid or leads nowhere.
pub(super) fn eval_json_path<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = obj;
    for step in parse_json_path(path)? {
        cur = match step {
            Step::Field(f) => cur
                .as_object()
                .and_then(|m: &Map<String, Value>| m.get(&f))?,
            Step::Index(n) => cur.as_array()?.get(n)?,
            Step::All => cur.as_array()?.first()?,
            Step::Filter(k, v) => cur.as_array()?.iter().find(|e| match e.get(&k) {
                Some(Value::String(x)) => *x == v,
                Some(other) => serde_json::from_str::<Value>(&v).is_ok_and(|x| x == *other),
                None => false,
            })?,
        };
    }
    Some(cur)
}
