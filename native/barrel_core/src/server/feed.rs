//! `GET/POST /barrels/:name/_changes`: the changes feed over HTTP, CouchDB-shaped, with
//! `feed=normal|longpoll|continuous|eventsource`.
//!
//! Live feeds subscribe to the barrel (the subscription only wakes the request up) and read the
//! feed again from the last sequence sent, so what they send is exactly the feed, in order.

use super::http::{
    blocking, bool_param, int_param, json_response, open, optional_json_body, pairs, param,
    ApiError, ApiResult, AppState,
};
use super::App;
use crate::barrel::Barrel;
use crate::changes::{Change, ChangeSink, ChangesOptions, Pattern, SubscribeOptions, Subscription};
use crate::doc::decode_body;
use crate::json_object;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Largest number of changes read from the feed at once.
const CHUNK: usize = 1000;
/// Default wait of a longpoll, and of a continuous feed given `timeout` (CouchDB's 60 s).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Feed {
    Normal,
    Longpoll,
    Continuous,
    EventSource,
}

#[derive(Clone)]
pub(crate) struct Params {
    since: Option<u64>,
    include_docs: bool,
    all_docs: bool,
    descending: bool,
    limit: Option<usize>,
    patterns: Vec<Pattern>,
    doc_ids: Option<HashSet<String>>,
    feed: Feed,
    heartbeat: Option<Duration>,
    timeout: Option<Duration>,
}

fn bad_param(what: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "query_parse_error", what)
}

fn params(q: &[(String, String)], body: Option<&Value>) -> ApiResult<Params> {
    let since = match param(q, "since").map(|s| s.trim_matches('"')) {
        None | Some("0") | Some("") => Some(0),
        Some("now") => None,
        // CouchDB 2+ sequences look like "N-opaque": take the number.
        Some(s) => Some(
            s.split('-')
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| bad_param(format!("bad since {s:?}")))?,
        ),
    };
    let feed = match param(q, "feed").unwrap_or("normal") {
        "normal" => Feed::Normal,
        "longpoll" => Feed::Longpoll,
        "continuous" => Feed::Continuous,
        "eventsource" => Feed::EventSource,
        f => return Err(bad_param(format!("unknown feed {f:?}"))),
    };
    let all_docs = match param(q, "style").unwrap_or("main_only") {
        "main_only" => false,
        "all_docs" => true,
        s => return Err(bad_param(format!("unknown style {s:?}"))),
    };
    let ms = |k: &str| -> ApiResult<Option<Duration>> {
        match param(q, k) {
            Some("true") => Ok(Some(Duration::from_secs(60))),
            _ => Ok(int_param(q, k)?.map(|ms| Duration::from_millis(ms.max(1)))),
        }
    };
    let mut patterns = Vec::new();
    for (k, v) in q {
        if k == "path" {
            patterns.push(
                Pattern::parse(v)
                    .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_pattern", e))?,
            );
        }
    }
    let doc_ids = match param(q, "filter") {
        None => None,
        Some("_doc_ids") => {
            let ids = match (param(q, "doc_ids"), body.and_then(|b| b.get("doc_ids"))) {
                (_, Some(v)) => v.clone(),
                (Some(s), None) => {
                    serde_json::from_str(s).map_err(|_| bad_param("doc_ids must be a JSON list"))?
                }
                (None, None) => return Err(bad_param("filter=_doc_ids needs doc_ids")),
            };
            let ids = ids
                .as_array()
                .ok_or_else(|| bad_param("doc_ids must be a list"))?
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| bad_param("doc_ids must be strings"))
                })
                .collect::<ApiResult<HashSet<String>>>()?;
            Some(ids)
        }
        Some("_path") => None,
        Some(f) => {
            return Err(bad_param(format!(
                "unknown filter {f:?} (use _doc_ids, or path=)"
            )))
        }
    };
    Ok(Params {
        since,
        include_docs: bool_param(q, "include_docs")?,
        all_docs,
        descending: bool_param(q, "descending")?,
        limit: int_param(q, "limit")?.map(|l| l as usize),
        patterns,
        doc_ids,
        feed,
        heartbeat: ms("heartbeat")?,
        timeout: ms("timeout")?,
    })
}

/// A change as CouchDB shows it.
fn change_json(c: &Change) -> Value {
    let mut v = json!({
        "seq": c.seq,
        "id": c.id,
        "changes": c.changes.iter().map(|r| json!({"rev": r.to_string()})).collect::<Vec<_>>(),
    });
    if c.deleted {
        v["deleted"] = Value::Bool(true);
    }
    if let Some(body) = &c.doc {
        let mut doc = decode_body(body).unwrap_or_default();
        doc.insert("_id".into(), Value::String(c.id.clone()));
        doc.insert("_rev".into(), Value::String(c.rev.to_string()));
        if c.deleted {
            doc.insert("_deleted".into(), Value::Bool(true));
        }
        v["doc"] = Value::Object(doc);
    }
    v
}

/// Reads up to `max` changes after `since`: the changes (as JSON), the sequence to continue
/// from, and whether the feed was read to its end.
fn read(barrel: &Barrel, since: u64, p: &Params, max: usize) -> ApiResult<(Vec<Value>, u64, bool)> {
    let opts = ChangesOptions {
        include_docs: p.include_docs,
        all_docs: p.all_docs,
        descending: p.descending,
        filter: p.patterns.clone(),
    };
    let mut cursor = barrel.changes_cursor(since, opts)?;
    let update_seq = cursor.update_seq();
    let mut out = Vec::new();
    let mut last = since;
    loop {
        let want = (max - out.len()).min(CHUNK);
        if want == 0 {
            return Ok((out, last, false));
        }
        let chunk = cursor.next_chunk(want)?;
        let exhausted = chunk.len() < want;
        for c in &chunk {
            last = if p.descending { update_seq } else { c.seq };
            if p.doc_ids.as_ref().is_some_and(|ids| !ids.contains(&c.id)) {
                continue;
            }
            out.push(change_json(c));
        }
        if exhausted {
            return Ok((out, update_seq.max(since), true));
        }
    }
}

/// Wakes a live feed up when its barrel changes.
struct Wake {
    notify: Notify,
    pending: AtomicUsize,
    behind: AtomicBool,
}

struct WakeSink(Arc<Wake>);

impl ChangeSink for WakeSink {
    fn deliver(&self, changes: Vec<Change>) -> bool {
        self.0.pending.fetch_add(changes.len(), Ordering::AcqRel);
        self.0.notify.notify_one();
        true
    }

    fn fell_behind(&self) -> bool {
        self.0.behind.store(true, Ordering::Release);
        self.0.notify.notify_one();
        true
    }
}

/// A live subscription, cancelled when dropped (the client went away).
struct Live {
    sub: Arc<Subscription>,
    wake: Arc<Wake>,
}

impl Live {
    async fn start(barrel: Barrel, p: &Params) -> ApiResult<Live> {
        let wake = Arc::new(Wake {
            notify: Notify::new(),
            pending: AtomicUsize::new(0),
            behind: AtomicBool::new(false),
        });
        let opts = SubscribeOptions {
            patterns: p.patterns.clone(),
            include_docs: false,
            all_docs: false,
            window: 100_000,
        };
        let sink = Box::new(WakeSink(wake.clone()));
        let sub = blocking(move || Ok(barrel.subscribe(opts, sink)?)).await?;
        Ok(Live { sub, wake })
    }

    /// Waits for a change, at most `d`; `true` when woken by one.
    async fn wait(&self, d: Duration) -> bool {
        let woken = tokio::time::timeout(d, self.wake.notify.notified())
            .await
            .is_ok();
        self.sub.ack(self.wake.pending.swap(0, Ordering::AcqRel));
        if self.wake.behind.swap(false, Ordering::AcqRel) {
            self.sub.resume();
        }
        woken
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.sub.cancel();
    }
}

pub(crate) async fn changes(
    State(app): AppState,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let q = pairs(&q);
    let p = params(&q, None)?;
    serve(app, name, p).await
}

/// `POST _changes`: the same, with `doc_ids` in the body.
pub(crate) async fn changes_post(
    State(app): AppState,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let q = pairs(&q);
    let body = optional_json_body(&headers, body)?;
    let p = params(&q, body.as_ref())?;
    serve(app, name, p).await
}

/// The barrel's latest sequence.
async fn update_seq(barrel: &Barrel) -> ApiResult<u64> {
    let b = barrel.clone();
    blocking(move || Ok(b.info()?.stats.updated_seq)).await
}

/// `since` as given, or the barrel's latest sequence for `since=now`.
async fn since_or_now(barrel: &Barrel, since: Option<u64>) -> ApiResult<u64> {
    match since {
        Some(s) => Ok(s),
        None => update_seq(barrel).await,
    }
}

async fn serve(app: Arc<App>, name: String, p: Params) -> ApiResult {
    let barrel = {
        let app = app.clone();
        blocking(move || open(&app, &name)).await?
    };
    let since = since_or_now(&barrel, p.since).await?;
    match p.feed {
        Feed::Normal => {
            let b = barrel.clone();
            let max = p.limit.unwrap_or(usize::MAX);
            let (results, last, _) = blocking(move || read(&b, since, &p, max)).await?;
            Ok(json_response(
                StatusCode::OK,
                json_object([
                    ("results", Value::Array(results)),
                    ("last_seq", Value::from(last)),
                    ("pending", Value::from(0)),
                ]),
            ))
        }
        Feed::Longpoll => longpoll(barrel, since, p).await,
        Feed::Continuous | Feed::EventSource => Ok(stream(barrel, since, p)),
    }
}

async fn longpoll(barrel: Barrel, since: u64, p: Params) -> ApiResult {
    // Subscribe before reading, so a change between the read and the wait is not missed.
    let live = Live::start(barrel.clone(), &p).await?;
    let deadline = Instant::now() + p.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let max = p.limit.unwrap_or(usize::MAX);
    let mut since = since;
    loop {
        let (b, pp) = (barrel.clone(), p.clone());
        let (results, last, _) = blocking(move || read(&b, since, &pp, max)).await?;
        let left = deadline.saturating_duration_since(Instant::now());
        if !results.is_empty() || left.is_zero() {
            return Ok(json_response(
                StatusCode::OK,
                json_object([
                    ("results", Value::Array(results)),
                    ("last_seq", Value::from(last)),
                    ("pending", Value::from(0)),
                ]),
            ));
        }
        since = last;
        live.wait(left).await;
    }
}

/// A continuous or eventsource feed: a streamed body, fed by a task that ends when the client
/// goes away, the `timeout` passes or `limit` changes were sent.
fn stream(barrel: Barrel, since: u64, p: Params) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let sse = p.feed == Feed::EventSource;
    tokio::spawn(async move {
        let line = |v: &Value, seq: Option<u64>| -> Bytes {
            if sse {
                match seq {
                    Some(s) => Bytes::from(format!("data: {v}\nid: {s}\n\n")),
                    None => Bytes::from(format!("data: {v}\n\n")),
                }
            } else {
                Bytes::from(format!("{v}\n"))
            }
        };
        // A failure mid-stream can only be told in the stream itself.
        let fail = |e: ApiError| line(&json!({"error": e.error, "reason": e.reason}), None);
        let live = match Live::start(barrel.clone(), &p).await {
            Ok(l) => l,
            Err(e) => {
                let _ = tx.send(Ok(fail(e))).await;
                return;
            }
        };
        let heartbeat = p.heartbeat.unwrap_or(Duration::from_secs(60));
        let deadline = p.timeout.map(|t| Instant::now() + t);
        let mut left = p.limit.unwrap_or(usize::MAX);
        let mut since = since;
        loop {
            let (b, pp) = (barrel.clone(), p.clone());
            let read = blocking(move || read(&b, since, &pp, left.min(CHUNK))).await;
            let (results, last, _) = match read {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Ok(fail(e))).await;
                    return;
                }
            };
            for r in &results {
                let seq = r.get("seq").and_then(Value::as_u64);
                if tx.send(Ok(line(r, seq))).await.is_err() {
                    return;
                }
            }
            left -= results.len().min(left);
            since = last;
            let expired = deadline.is_some_and(|d| Instant::now() >= d);
            if left == 0 || expired {
                if !sse {
                    let _ = tx.send(Ok(line(&json!({"last_seq": since}), None))).await;
                }
                return;
            }
            if !results.is_empty() {
                continue;
            }
            let wait = match deadline {
                Some(d) => heartbeat.min(d.saturating_duration_since(Instant::now())),
                None => heartbeat,
            };
            if !live.wait(wait).await {
                // Nothing happened: a heartbeat keeps proxies and clients from timing out.
                let beat = if sse {
                    Bytes::from_static(b":\n\n")
                } else {
                    Bytes::from_static(b"\n")
                };
                if tx.send(Ok(beat)).await.is_err() {
                    return;
                }
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let ct = if sse {
        "text/event-stream"
    } else {
        "application/json"
    };
    (
        [
            (header::CONTENT_TYPE, ct),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Feeds batches of changes (as CouchDB JSON) to `send` from a task: what is in the feed after
/// `since` (the first batch is sent even when empty), then, with `live`, batches as changes are
/// committed. The task ends when `send` answers `false`, or (without `live`) once the feed is
/// read. Used by the WebSocket stream.
pub(crate) async fn batches<F, Fut>(
    barrel: Barrel,
    q: &[(String, String)],
    live: bool,
    send: F,
) -> ApiResult<tokio::task::JoinHandle<()>>
where
    F: Fn(Vec<Value>, u64) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let p = params(q, None)?;
    let mut since = since_or_now(&barrel, p.since).await?;
    let sub = if live {
        Some(Live::start(barrel.clone(), &p).await?)
    } else {
        None
    };
    // Without `live`, a `limit` asks for one batch of at most that many.
    let max = p.limit.unwrap_or(CHUNK).clamp(1, CHUNK);
    let one_batch = !live && p.limit.is_some();
    Ok(tokio::spawn(async move {
        let mut first = true;
        loop {
            let (b, pp) = (barrel.clone(), p.clone());
            let Ok((results, last, done)) = blocking(move || read(&b, since, &pp, max)).await
            else {
                return;
            };
            since = last;
            if (first || !results.is_empty()) && !send(results, last).await {
                return;
            }
            first = false;
            if one_batch {
                return;
            }
            if !done {
                continue;
            }
            match &sub {
                Some(l) => {
                    l.wait(Duration::from_secs(60)).await;
                }
                None => return,
            }
        }
    }))
}

/// Waits until `barrel` has a change after `since`, at most `timeout`; returns its latest
/// sequence. Used by the WebSocket stream's `wait` request.
pub(crate) async fn wait_for_change(
    barrel: Barrel,
    since: u64,
    timeout: Duration,
) -> ApiResult<u64> {
    let p = params(&[], None)?;
    let live = Live::start(barrel.clone(), &p).await?;
    let deadline = Instant::now() + timeout;
    loop {
        let seq = update_seq(&barrel).await?;
        let left = deadline.saturating_duration_since(Instant::now());
        if seq > since || left.is_zero() {
            return Ok(seq);
        }
        live.wait(left).await;
    }
}
