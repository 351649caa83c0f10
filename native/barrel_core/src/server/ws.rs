//! `ws://host:port/barrels/:name/_ws`: a compact replication stream over one WebSocket.
//!
//! Each text frame is a JSON object with a `type`; requests carry an `id` (any JSON value)
//! echoed in their answer, so a client may pipeline them:
//!
//! | Request | Answer |
//! |---|---|
//! | `{"type": "info"}` | `{"type": "info", "info": {...}}` |
//! | `{"type": "changes", "since": N, "style": "all_docs", "include_docs": bool, "live": bool, "limit": N, "path": [pattern]}` | `{"type": "changes", "results": [...], "last_seq": N}` batches, then with `live` more batches as changes are committed (without `live`, a `limit` asks for one batch) |
//! | `{"type": "wait", "since": N, "timeout": ms}` | `{"type": "wait", "update_seq": N}` once the barrel has a change after `since` (or the timeout passed) |
//! | `{"type": "revs_diff", "revs": {"docid": [rev, ...]}}` | `{"type": "revs_diff", "result": {...}}` (as `_revs_diff`) |
//! | `{"type": "bulk_get", "docs": [{"id", "rev", "atts_since"?}], "revs": true, "latest": bool, "attachments": bool}` | `{"type": "bulk_get", "result": {...}}` (as `_bulk_get`) |
//! | `{"type": "bulk_docs", "docs": [...], "new_edits": false}` | `{"type": "bulk_docs", "result": [...]}` (as `_bulk_docs`) |
//! | `{"type": "get_local", "doc_id": ...}` / `{"type": "put_local", "doc_id": ..., "doc": {...}}` | `{"type": ..., "doc": ...}` / `{"type": ..., "rev": ...}` |
//!
//! A request that fails is answered `{"type": "error", "id": ..., "error": ..., "reason": ...}`;
//! the connection stays open. One live `changes` subscription per connection.

use super::http::{
    blocking, bulk_docs_json, bulk_get_json, object, open, revs_diff_json, ApiError, ApiResult,
    AppState, BulkGetOptions,
};
use super::App;
use crate::barrel::Barrel;
use crate::json_object;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::{json, Value};
use std::sync::Arc;

pub(crate) async fn upgrade(
    State(app): AppState,
    Path(name): Path<String>,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    let barrel = {
        let app = app.clone();
        blocking(move || open(&app, &name)).await?
    };
    Ok(ws.on_upgrade(move |socket| session(app, barrel, socket)))
}

async fn session(_app: Arc<App>, barrel: Barrel, mut socket: WebSocket) {
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Value>(64);
    let mut live: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tokio::select! {
            msg = socket.recv() => {
                // Parsed where it arrived, without a copy of the frame's text first.
                let parsed = match msg {
                    Some(Ok(Message::Text(t))) => serde_json::from_str::<Value>(t.as_str()),
                    Some(Ok(Message::Binary(b))) => serde_json::from_str(&String::from_utf8_lossy(&b)),
                    Some(Ok(Message::Ping(_))) | Some(Ok(Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                };
                let req: Value = match parsed {
                    Ok(v) => v,
                    Err(e) => {
                        let err = json!({"type": "error", "error": "bad_request", "reason": format!("invalid JSON: {e}")});
                        if socket.send(Message::Text(err.to_string().into())).await.is_err() { break; }
                        continue;
                    }
                };
                let id = req.get("id").cloned().unwrap_or(Value::Null);
                let kind = req.get("type").and_then(Value::as_str).unwrap_or_default().to_string();
                let answer = if kind == "wait" {
                    let since = req.get("since").and_then(Value::as_u64).unwrap_or(0);
                    let ms = req.get("timeout").and_then(Value::as_u64).unwrap_or(60_000).min(300_000);
                    let wait = std::time::Duration::from_millis(ms);
                    Some(match super::feed::wait_for_change(barrel.clone(), since, wait).await {
                        Ok(seq) => json!({"type": "wait", "id": id, "update_seq": seq}),
                        Err(e) => error(id, e),
                    })
                } else if kind == "changes" {
                    if let Some(h) = live.take() { h.abort(); }
                    match start_changes(barrel.clone(), req, out_tx.clone()).await {
                        Ok(h) => { live = Some(h); None }
                        Err(e) => Some(error(id, e)),
                    }
                } else {
                    let b = barrel.clone();
                    Some(match blocking(move || handle(&b, req)).await {
                        Ok(mut v) => { v["id"] = id; v }
                        Err(e) => error(id, e),
                    })
                };
                if let Some(a) = answer {
                    if socket.send(Message::Text(a.to_string().into())).await.is_err() { break; }
                }
            }
            Some(v) = out_rx.recv() => {
                if socket.send(Message::Text(v.to_string().into())).await.is_err() { break; }
            }
        }
    }
    if let Some(h) = live {
        h.abort();
    }
}

fn error(id: Value, e: ApiError) -> Value {
    json!({"type": "error", "id": id, "error": e.error, "reason": e.reason})
}

/// An answer `{"type": kind, key: value}`, `value` moved in (see [`json_object`]).
fn answer(kind: &str, key: &str, value: Value) -> Value {
    json_object([("type", Value::from(kind)), (key, value)])
}

fn handle(barrel: &Barrel, mut req: Value) -> ApiResult<Value> {
    let flag = |req: &Value, k: &str| req.get(k).and_then(Value::as_bool).unwrap_or(false);
    // Owned, so that the arms may take members out of `req`.
    let kind = req.get("type").and_then(Value::as_str).map(str::to_string);
    match kind.as_deref() {
        Some("info") => {
            let info = barrel.info()?;
            Ok(
                json!({"type": "info", "info": {"name": info.name, "update_seq": info.stats.updated_seq,
                                               "doc_count": info.stats.docs_count}}),
            )
        }
        Some("revs_diff") => {
            let revs = object(req["revs"].take(), "revs")?;
            Ok(answer("revs_diff", "result", revs_diff_json(barrel, revs)?))
        }
        Some("bulk_get") => {
            let opts = BulkGetOptions {
                revs: flag(&req, "revs"),
                latest: flag(&req, "latest"),
                attachments: flag(&req, "attachments"),
            };
            Ok(answer(
                "bulk_get",
                "result",
                bulk_get_json(barrel, &req, opts)?,
            ))
        }
        Some("bulk_docs") => {
            let m = object(req, "the request")?;
            Ok(answer("bulk_docs", "result", bulk_docs_json(barrel, m)?))
        }
        Some("get_local") => {
            let id = req
                .get("doc_id")
                .and_then(Value::as_str)
                .unwrap_or_default();
            Ok(answer(
                "get_local",
                "doc",
                Value::Object(barrel.get_local(id)?),
            ))
        }
        Some("put_local") => {
            let doc = object(req["doc"].take(), "doc")?;
            let id = req
                .get("doc_id")
                .and_then(Value::as_str)
                .unwrap_or_default();
            Ok(json!({"type": "put_local", "rev": barrel.put_local(id, doc)?}))
        }
        other => Err(ApiError::bad_request(format!(
            "unknown request type {other:?}"
        ))),
    }
}

/// Streams the feed into `out`: what is there, then (with `live`) what comes.
async fn start_changes(
    barrel: Barrel,
    req: Value,
    out: tokio::sync::mpsc::Sender<Value>,
) -> ApiResult<tokio::task::JoinHandle<()>> {
    let mut q: Vec<(String, String)> = Vec::new();
    if let Some(s) = req.get("since").and_then(Value::as_u64) {
        q.push(("since".into(), s.to_string()));
    }
    if req.get("style").and_then(Value::as_str) == Some("all_docs") {
        q.push(("style".into(), "all_docs".into()));
    }
    if req.get("include_docs").and_then(Value::as_bool) == Some(true) {
        q.push(("include_docs".into(), "true".into()));
    }
    if let Some(l) = req.get("limit").and_then(Value::as_u64) {
        q.push(("limit".into(), l.to_string()));
    }
    for p in req
        .get("path")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(p) = p.as_str() {
            q.push(("path".into(), p.to_string()));
        }
    }
    let live = req.get("live").and_then(Value::as_bool).unwrap_or(false);
    let id = req.get("id").cloned().unwrap_or(Value::Null);
    super::feed::batches(barrel, &q, live, move |results, last_seq| {
        let out = out.clone();
        let id = id.clone();
        async move {
            out.send(json_object([
                ("type", Value::from("changes")),
                ("id", id),
                ("results", Value::Array(results)),
                ("last_seq", Value::from(last_seq)),
            ]))
            .await
            .is_ok()
        }
    })
    .await
}
