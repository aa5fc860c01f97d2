//! Server-side printing: `meta.k8s.io/v1` `Table` documents as `kubectl get` asks for them
//! (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io,...`).
//!
//! Column names, types, priorities and cell formats follow kube-apiserver's printers
//! (`pkg/printers/internalversion/printers.go`, the apiextensions table convertor for
//! custom resources, and the default convertor's `Name`/`Created At`). Names are in the
//! server's casing (`Cluster-IP`, `Port(s)`); kubectl upper-cases them. Columns with
//! `priority: 1` are only shown by `kubectl get -o wide`. Ages use kubectl's
//! `HumanDuration` format (`5s`, `3m12s`, `10m`, `4h2m`, `3d`).
//!
//! Watch: kube-apiserver sends each watch event's object as a one-row `Table`, with
//! `columnDefinitions` only on the **first** event of the stream and none afterwards
//! (kubectl reuses the previous columns). Call [`to_table`] with `include_headers: true`
//! for the first event and `false` for the rest (and `true` for every list/get).
//!
//! Known simplifications: pod init containers are not considered for READY/STATUS; a
//! custom resource column's `[*]` selects the first element (as upstream's convertor does).

use crate::registry::{PrinterColumn, ResourceInfo};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

mod apps;
mod columns;
mod custom;
mod format;
mod misc;
mod network;
mod pods;
#[cfg(test)]
mod tests;

pub use format::human_duration;

use columns::printer_for;

/// Whether an Accept header asks for a meta.k8s.io Table (`application/json;as=Table;v=v1;g=meta.k8s.io`, also v1beta1).
pub fn wants_table(accept: &str) -> bool {
    accept.split(',').any(|media| {
        let parts: Vec<String> = media
            .split(';')
            .map(|p| p.trim().replace(' ', ""))
            .collect();
        let has = |p: &str| parts.iter().any(|x| x == p);
        parts.first().map(String::as_str) == Some("application/json")
            && has("as=Table")
            && has("g=meta.k8s.io")
            && (has("v=v1") || has("v=v1beta1"))
    })
}

/// A meta.k8s.io/v1 Table for these objects. `include_headers` false leaves the column
/// definitions empty (watch events after the first). `include_object`: `"None"`,
/// `"Metadata"` (default: a `PartialObjectMetadata` with apiVersion meta.k8s.io/v1) or
/// `"Object"` (from the `includeObject` query parameter). `list_meta` (resourceVersion,
/// continue, ...) becomes the table's `metadata`.
pub fn to_table(
    info: &ResourceInfo,
    objects: &[&Value],
    include_headers: bool,
    include_object: &str,
    list_meta: Value,
    now: DateTime<Utc>,
) -> Value {
    let printer = printer_for(info);
    let columns: Vec<Value> = if include_headers {
        printer.columns.iter().map(Col::to_value).collect()
    } else {
        Vec::new()
    };
    let rows: Vec<Value> = objects
        .iter()
        .map(|obj| {
            let mut row = json!({ "cells": (printer.cells)(info, obj, now) });
            if let Some(o) = row_object(obj, include_object) {
                row["object"] = o;
            }
            row
        })
        .collect();
    let metadata = if list_meta.is_object() {
        list_meta
    } else {
        json!({})
    };
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

/// The `object` of a row according to `includeObject`.
fn row_object(obj: &Value, include_object: &str) -> Option<Value> {
    match include_object {
        "None" => None,
        "Object" => Some(obj.clone()),
        _ => Some(json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
        })),
    }
}

/// One column definition.
struct Col {
    name: String,
    type_: String,
    format: String,
    priority: i64,
    description: String,
}

impl Col {
    fn new(name: &str, type_: &str, priority: i64, description: &str) -> Self {
        Col {
            name: name.into(),
            type_: type_.into(),
            format: String::new(),
            priority,
            description: description.into(),
        }
    }

    fn to_value(&self) -> Value {
        json!({
            "name": self.name,
            "type": self.type_,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }
}

type CellFn = fn(&ResourceInfo, &Value, DateTime<Utc>) -> Vec<Value>;

/// Columns plus the function computing one row's cells.
struct Printer {
    columns: Vec<Col>,
    cells: CellFn,
}

const NAME_DESC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically.";
const AGE_DESC: &str =
    "CreationTimestamp is a timestamp representing the server time when this object was created.";

fn name_col() -> Col {
    let mut c = Col::new("Name", "string", 0, NAME_DESC);
    c.format = "name".into();
    c
}

fn age_col() -> Col {
    Col::new("Age", "string", 0, AGE_DESC)
}

/// Builds a column list: `(name, type, priority)` specs between Name and Age handling.
fn cols(specs: &[(&str, &str, i64)]) -> Vec<Col> {
    specs
        .iter()
        .map(|(n, t, p)| match *n {
            "Name" => Col {
                priority: *p,
                ..name_col()
            },
            "Age" => age_col(),
            _ => Col::new(n, t, *p, n),
        })
        .collect()
}
