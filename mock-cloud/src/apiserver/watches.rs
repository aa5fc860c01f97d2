//! Watches: the initial state or the changes after a resourceVersion, streamed as JSON
//! lines (or one-row Tables), with bookmarks.

use super::core::storage_gr;
use super::error::ApiError;
use super::http::{ApiServer, list_options, render, truthy};
use super::negotiate::Wire;
use super::protobuf::MEDIA_TYPE;
use super::protobuf::encode::{encode, watch_frame, watch_frame_of};
use super::route::ResourcePath;
use super::shared_encodings::Encoded;
use super::shared_encodings::SharedEncodings;
use crate::registry::ResourceInfo;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{Event, EventType, StoreError};
use crate::table;
use axum::body::Body;
use axum::http::header;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

/// How a watch begins.
pub(super) enum WatchStart {
    /// Synthetic ADDED events for the current state, then changes.
    FromNow { initial_events_end: bool },
    /// Changes after this resourceVersion.
    From(u64),
}

pub(super) struct WatchFilter {
    info: ResourceInfo,
    gr: (String, String),
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl WatchFilter {
    fn matches(&self, obj: &Value) -> bool {
        if let Some(ns) = &self.namespace
            && obj.pointer("/metadata/namespace").and_then(Value::as_str) != Some(ns.as_str())
        {
            return false;
        }
        self.labels.matches(obj) && self.fields.matches(obj)
    }

    /// The event a watcher with this filter sees for a store event, if any: an object that
    /// starts matching is ADDED, one that stops matching is DELETED.
    fn translate(&self, ev: &Event) -> Option<(EventType, Arc<Value>)> {
        if ev.gr != self.gr {
            return None;
        }
        let now = self.matches(&ev.object);
        let before = ev.prev.as_ref().is_some_and(|p| self.matches(p));
        match ev.type_ {
            EventType::Added if now => Some((EventType::Added, ev.object.clone())),
            EventType::Modified if now && before => Some((EventType::Modified, ev.object.clone())),
            EventType::Modified if now => Some((EventType::Added, ev.object.clone())),
            EventType::Modified if before => Some((EventType::Deleted, ev.object.clone())),
            EventType::Deleted if before || now => Some((EventType::Deleted, ev.object.clone())),
            _ => None,
        }
    }
}

pub(super) fn watch(
    srv: &Arc<ApiServer>,
    rp: &ResourcePath,
    q: &HashMap<String, String>,
    as_table: bool,
    wire: Wire,
) -> Result<Response, ApiError> {
    let info = rp.info.clone();
    let proto = !as_table && wire.streams_protobuf(&info.api_version(), &info.kind)?;
    let opts = list_options(&info, q)?;
    let filter = WatchFilter {
        gr: storage_gr(&info),
        info: info.clone(),
        namespace: rp.namespace.clone(),
        labels: opts.labels,
        fields: opts.fields,
    };
    let send_initial = truthy(q, "sendInitialEvents");
    let start = match q.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => WatchStart::FromNow {
            initial_events_end: send_initial,
        },
        Some(rv) if send_initial => {
            let _ = rv;
            WatchStart::FromNow {
                initial_events_end: true,
            }
        }
        Some(rv) => WatchStart::From(rv.parse().map_err(|_| {
            ApiError::bad_request(format!("resourceVersion: Invalid value: {rv:?}"))
        })?),
    };
    let bookmarks = truthy(q, "allowWatchBookmarks");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|t| *t > 0)
        .map(Duration::from_secs);
    let include_object = q
        .get("includeObject")
        .cloned()
        .unwrap_or_else(|| "Metadata".into());
    // Start the watch synchronously, so 410 can still be a plain response... kube-apiserver
    // sends it as an ERROR event on a 200 stream, and so do we.
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(256);
    let (initial, mut live, mut last_rv, expired) = match start {
        WatchStart::FromNow { .. } => {
            let (items, rv, live) = srv.core.store.list_and_subscribe(&filter.gr);
            let items: Vec<Arc<Value>> = items.into_iter().filter(|o| filter.matches(o)).collect();
            (
                items
                    .into_iter()
                    .map(|o| (EventType::Added, o))
                    .collect::<Vec<_>>(),
                Some(live),
                rv,
                None,
            )
        }
        WatchStart::From(rv) => match srv.core.store.watch_from(rv) {
            Ok(w) => {
                let mut last = rv;
                let mut evs = Vec::new();
                for e in &w.replay {
                    last = e.rv;
                    if let Some(t) = filter.translate(e) {
                        evs.push(t);
                    }
                }
                (evs, Some(w.live), last, None)
            }
            Err(StoreError::Expired { requested, oldest }) => (
                Vec::new(),
                None,
                rv,
                Some(format!("too old resource version: {requested} ({oldest})")),
            ),
            Err(e) => return Err(ApiError::internal(e.to_string())),
        },
    };
    let initial_end = matches!(
        start,
        WatchStart::FromNow {
            initial_events_end: true
        }
    );
    let srv2 = srv.clone();
    srv.open_watches.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(async move {
        let mut drops = srv2.faults.watch_drops();
        drops.borrow_and_update();
        let mut shutdown = srv2.shutdown.clone();
        let mut enc = Encoder {
            info: filter.info.clone(),
            api_version: filter.info.api_version(),
            as_table,
            include_object,
            headers_sent: false,
            proto,
        };
        let result: Result<(), ()> = async {
            if let Some(msg) = expired {
                let status = ApiError::gone(msg).status();
                enc.send(&tx, &json!({"type": "ERROR", "object": status}))
                    .await?;
                return Ok(());
            }
            for (t, obj) in &initial {
                enc.send_object(&tx, *t, obj, None).await?;
            }
            if initial_end {
                enc.send(&tx, &enc.bookmark(last_rv, true)).await?;
            }
            let mut live = live.take().expect("live channel");
            let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
            let mut tick = tokio::time::interval(srv2.bookmark_interval);
            tick.tick().await;
            loop {
                let sleep_until = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    ev = live.recv() => match ev {
                        Ok(ev) => {
                            if ev.rv <= last_rv { continue; }
                            last_rv = ev.rv;
                            if let Some((t, obj)) = filter.translate(&ev) {
                                let shared = Some((&srv2.encodings, ev.rv));
                                enc.send_object(&tx, t, &obj, shared).await?;
                            }
                        }
                        // Too far behind: end the stream; the client resumes from its last version.
                        Err(broadcast::error::RecvError::Lagged(_)) => return Ok(()),
                        Err(broadcast::error::RecvError::Closed) => return Ok(()),
                    },
                    _ = tick.tick(), if bookmarks => {
                        enc.send(&tx, &enc.bookmark(last_rv, false)).await?;
                    }
                    _ = drops.changed() => return Ok(()),
                    _ = shutdown.changed() => return Ok(()),
                    _ = sleep_until => return Ok(()),
                    _ = tx.closed() => return Err(()),
                }
            }
        }
        .await;
        let _ = result;
        srv2.open_watches.fetch_sub(1, Ordering::Relaxed);
    });
    let body = Body::from_stream(ReceiverStream::new(rx));
    let content_type = if proto {
        format!("{MEDIA_TYPE};stream=watch")
    } else {
        "application/json".into()
    };
    Ok(Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(body)
        .expect("valid response"))
}

pub(super) struct Encoder {
    info: ResourceInfo,
    /// The apiVersion objects are served as.
    api_version: String,
    as_table: bool,
    include_object: String,
    headers_sent: bool,
    /// Protobuf frames instead of JSON lines.
    proto: bool,
}

impl Encoder {
    /// Sends one event; Err when the client is gone. An object that has no protobuf form
    /// ends a protobuf stream with an ERROR event saying why.
    async fn send(
        &self,
        tx: &mpsc::Sender<Result<Bytes, Infallible>>,
        v: &Value,
    ) -> Result<(), ()> {
        let bytes = if self.proto {
            match watch_frame(v) {
                Ok(b) => b,
                Err(e) => {
                    let status = ApiError::internal(format!("no protobuf form: {e}")).status();
                    let b = watch_frame(&json!({"type": "ERROR", "object": status}))
                        .unwrap_or_default();
                    let _ = tx.send(Ok(Bytes::from(b))).await;
                    return Err(());
                }
            }
        } else {
            let mut line = serde_json::to_vec(v).unwrap_or_default();
            line.push(b'\n');
            line
        };
        tx.send(Ok(Bytes::from(bytes))).await.map_err(|_| ())
    }

    /// Sends one event of an object. `shared`: the object was written at this version, and
    /// its encoding is shared with every other watch sending that version in the same form.
    async fn send_object(
        &mut self,
        tx: &mpsc::Sender<Result<Bytes, Infallible>>,
        type_: EventType,
        obj: &Value,
        shared: Option<(&SharedEncodings, u64)>,
    ) -> Result<(), ()> {
        if self.as_table {
            // One-row Tables carry column headers once per stream: nothing to share.
            let ev = self.event(type_.as_str(), obj);
            return self.send(tx, &ev).await;
        }
        let object = match shared {
            Some((encodings, rv)) => {
                encodings.get_or_encode(rv, &self.api_version, self.proto, || {
                    self.encode_object(obj)
                })
            }
            None => self.encode_object(obj),
        };
        match self.frame(type_.as_str(), object) {
            Ok(frame) => tx.send(Ok(frame)).await.map_err(|_| ()),
            Err(error) => {
                let _ = tx.send(Ok(error)).await;
                Err(())
            }
        }
    }

    /// The object as this watch serves it, in its wire format (Err: no protobuf form).
    fn encode_object(&self, obj: &Value) -> Encoded {
        let obj = render(&self.info, obj);
        if self.proto {
            encode(&obj).map(Bytes::from).map_err(|e| e.to_string())
        } else {
            Ok(Bytes::from(serde_json::to_vec(&obj).unwrap_or_default()))
        }
    }

    /// One event around an encoded object: a JSON line or a protobuf frame. Err: the ERROR
    /// event that ends a protobuf stream whose object has no protobuf form.
    fn frame(&self, type_: &str, object: Encoded) -> Result<Bytes, Bytes> {
        let no_form = |e: &str| {
            let status = ApiError::internal(format!("no protobuf form: {e}")).status();
            Bytes::from(
                watch_frame(&json!({"type": "ERROR", "object": status})).unwrap_or_default(),
            )
        };
        let object = object.map_err(|e| no_form(&e))?;
        if self.proto {
            return watch_frame_of(type_, object.to_vec())
                .map(Bytes::from)
                .map_err(|e| no_form(&e.to_string()));
        }
        let type_ = serde_json::to_vec(type_).unwrap_or_default();
        let mut line = Vec::with_capacity(object.len() + type_.len() + 24);
        line.extend_from_slice(b"{\"type\":");
        line.extend_from_slice(&type_);
        line.extend_from_slice(b",\"object\":");
        line.extend_from_slice(&object);
        line.extend_from_slice(b"}\n");
        Ok(Bytes::from(line))
    }

    fn event(&mut self, type_: &str, obj: &Value) -> Value {
        let obj = render(&self.info, obj);
        if self.as_table {
            let meta = json!({"resourceVersion": obj.pointer("/metadata/resourceVersion").cloned().unwrap_or(json!(""))});
            let t = table::to_table(
                &self.info,
                &[&obj],
                !self.headers_sent,
                &self.include_object,
                meta,
                chrono::Utc::now(),
            );
            self.headers_sent = true;
            return json!({"type": type_, "object": t});
        }
        json!({"type": type_, "object": obj})
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Value {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = if self.as_table {
            json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": [], "rows": []})
        } else {
            json!({"kind": self.info.kind, "apiVersion": self.info.api_version(), "metadata": meta})
        };
        json!({"type": "BOOKMARK", "object": obj})
    }
}
