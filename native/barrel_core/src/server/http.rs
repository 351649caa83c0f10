//! Routes and handlers.

use super::attachments::{self, AttsAsk};
use super::{feed, multipart, ws, App, Cors, ServerConfig};
use crate::attachment::ATTACHMENTS;
use crate::barrel::{Barrel, FetchOptions, FoldOptions, OpenRev, OpenRevs, SaveOptions};
use crate::doc::{Body, DocInput};
use crate::error::{DocError, Error};
use crate::index::{parse_path, parse_path_and_value};
use crate::json_object;
use crate::query::{Query, Select};
use crate::revtree::Rev;
use crate::store::{BarrelConfig, BarrelInfo};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use serde_json::{json, Map, Value};
use std::ops::{Bound, ControlFlow};
use std::sync::Arc;

pub(crate) type AppState = State<Arc<App>>;

/// A failed request: a status and CouchDB's `{"error": ..., "reason": ...}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub error: &'static str,
    pub reason: String,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str, reason: impl Into<String>) -> ApiError {
        ApiError {
            status,
            error,
            reason: reason.into(),
        }
    }

    pub fn bad_request(reason: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", reason)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.error, "reason": self.reason});
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"barrel\""),
            );
        }
        resp
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        use StatusCode as S;
        match e {
            Error::NotFound => ApiError::new(S::NOT_FOUND, "not_found", "missing"),
            Error::AlreadyExists => ApiError::new(
                S::PRECONDITION_FAILED,
                "file_exists",
                "The database could not be created, the file already exists.",
            ),
            Error::Conflict => ApiError::new(S::CONFLICT, "conflict", "Document update conflict."),
            Error::Closed => ApiError::new(S::SERVICE_UNAVAILABLE, "closed", "the store is closed"),
            Error::InvalidName(n) => ApiError::new(
                S::BAD_REQUEST,
                "illegal_database_name",
                format!("invalid barrel name {n:?}"),
            ),
            Error::BadParam(p) => ApiError::bad_request(p),
            Error::BadQuery(q) => ApiError::new(S::BAD_REQUEST, "bad_query", q),
            Error::BadDoc(DocError::InvalidDocId(id)) => {
                ApiError::new(S::BAD_REQUEST, "illegal_docid", format!("invalid id {id}"))
            }
            Error::BadDoc(DocError::TooLarge(w)) => {
                ApiError::new(S::PAYLOAD_TOO_LARGE, "too_large", w)
            }
            Error::BadDoc(DocError::BadAttachment(w)) => {
                ApiError::new(S::BAD_REQUEST, "bad_attachment", w)
            }
            Error::BadDoc(d) => ApiError::new(S::BAD_REQUEST, "bad_request", d.to_string()),
            Error::MissingStub(n) => ApiError::new(
                S::PRECONDITION_FAILED,
                "missing_stub",
                format!("attachment stub {n} refers to content this barrel does not have"),
            ),
            Error::AttachmentTooLarge(l) => ApiError::new(
                S::PAYLOAD_TOO_LARGE,
                "attachment_too_large",
                format!("attachments are limited to {l} bytes"),
            ),
            Error::Storage(m) | Error::Corrupt(m) | Error::Internal(m) => {
                ApiError::new(S::INTERNAL_SERVER_ERROR, "internal_error", m)
            }
            Error::WouldBlock => {
                ApiError::new(S::INTERNAL_SERVER_ERROR, "internal_error", "would block")
            }
        }
    }
}

impl From<DocError> for ApiError {
    fn from(e: DocError) -> ApiError {
        Error::from(e).into()
    }
}

pub(crate) type ApiResult<T = Response> = std::result::Result<T, ApiError>;

/// Runs engine work on the blocking pool.
pub(crate) async fn blocking<T, F>(f: F) -> ApiResult<T>
where
    F: FnOnce() -> ApiResult<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            format!("handler failed: {e}"),
        ))
    })
}

pub(crate) fn json_response(status: StatusCode, v: Value) -> Response {
    (status, axum::Json(v)).into_response()
}

/// The query string as pairs, in order (repeated keys kept).
pub(crate) fn pairs(q: &Option<String>) -> Vec<(String, String)> {
    q.as_deref()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

pub(crate) fn param<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

pub(crate) fn bool_param(q: &[(String, String)], key: &str) -> ApiResult<bool> {
    match param(q, key) {
        None => Ok(false),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(v) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "query_parse_error",
            format!("invalid value for boolean parameter {key}: {v:?}"),
        )),
    }
}

pub(crate) fn int_param(q: &[(String, String)], key: &str) -> ApiResult<Option<u64>> {
    match param(q, key) {
        None => Ok(None),
        Some(v) => v.trim_matches('"').parse().map(Some).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "query_parse_error",
                format!("invalid value for integer parameter {key}: {v:?}"),
            )
        }),
    }
}

/// A JSON request body that may be absent (empty): `None` then.
pub(crate) fn optional_json_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Option<Value>> {
    match &body {
        Ok(b) if b.is_empty() => Ok(None),
        _ => json_body(headers, body).map(Some),
    }
}

/// A JSON request body: `Content-Type` must be JSON when given, the size within the limit.
pub(crate) fn json_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Value> {
    let bytes = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "the request body is over the server's limit",
            )
        } else {
            ApiError::bad_request(r.body_text())
        }
    })?;
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
        if !(ct.starts_with("application/json") || ct.starts_with("text/plain")) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "bad_content_type",
                "Content-Type must be application/json",
            ));
        }
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("invalid JSON: {e}"),
        )
    })
}

pub(crate) fn object(v: Value, what: &str) -> ApiResult<Map<String, Value>> {
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::bad_request(format!(
            "{what} must be a JSON object"
        ))),
    }
}

pub(crate) fn open(app: &App, name: &str) -> ApiResult<Barrel> {
    Ok(app.store()?.open_barrel(name)?)
}

/// Which way documents look on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    /// Barrel's: the id in `id`.
    Barrel,
    /// CouchDB's: the id in `_id`.
    Couch,
}

/// A document from the wire, as the engine takes it.
pub(crate) fn doc_in(m: Map<String, Value>, style: Style) -> ApiResult<DocInput> {
    Ok(DocInput::from_map(wire_map(m, style)?)?)
}

/// A document object from the wire with its id where the engine reads it (`_id` → `id` on
/// CouchDB's surface).
pub(crate) fn wire_map(mut m: Map<String, Value>, style: Style) -> ApiResult<Map<String, Value>> {
    if style == Style::Couch {
        if let Some(id) = m.remove("_id") {
            if let Some(other) = m.get("id") {
                if *other != id {
                    return Err(ApiError::bad_request(
                        "a document with both _id and a different id cannot be stored",
                    ));
                }
            }
            m.insert("id".into(), id);
        }
    }
    Ok(m)
}

/// A document from the engine, as the wire shows it.
pub(crate) fn doc_out(mut doc: Body, style: Style) -> Value {
    if style == Style::Couch {
        if let Some(id) = doc.remove("id") {
            doc.insert("_id".into(), id);
        }
    }
    Value::Object(doc)
}

fn info_json(info: &BarrelInfo) -> Value {
    json!({
        "name": info.name,
        "db_name": info.name,
        "docs_count": info.stats.docs_count,
        "doc_count": info.stats.docs_count,
        "deleted_count": info.stats.deleted_count,
        "doc_del_count": info.stats.deleted_count,
        "updated_seq": info.stats.updated_seq,
        "update_seq": info.stats.updated_seq,
        "data_size": info.stats.data_size,
        "disk_size": info.disk_size,
        "sizes": {"file": info.disk_size, "external": info.stats.data_size, "active": info.stats.data_size},
        "revs_limit": info.config.revs_limit,
        "sync": info.config.sync,
        "instance_start_time": "0",
    })
}

pub(crate) fn router(app: Arc<App>, cfg: &ServerConfig) -> Router {
    let db = "/barrels/{name}";
    let mut r = Router::new()
        .route("/", get(welcome))
        .route("/barrels", get(list_barrels).post(create_barrel_body))
        .route("/_store", get(store_info))
        .route("/_replicate", post(replicate))
        .route(
            db,
            get(barrel_info)
                .head(barrel_info)
                .post(create_barrel)
                .put(create_barrel)
                .delete(delete_barrel),
        )
        .route(
            &format!("{db}/"),
            get(barrel_info)
                .head(barrel_info)
                .put(create_barrel)
                .delete(delete_barrel),
        )
        .route(
            &format!("{db}/docs"),
            get(all_docs_route::<false>).post(post_doc),
        )
        .route(
            &format!("{db}/docs/{{id}}"),
            get(get_doc_route::<false>)
                .put(put_doc_route::<false>)
                .delete(delete_doc_route),
        )
        .route(&format!("{db}/docs/{{id}}/{{*att}}"), attachment_routes())
        .route(
            &format!("{db}/_all_docs"),
            get(all_docs_route::<true>).post(all_docs_keys),
        )
        .route(
            &format!("{db}/_changes"),
            get(feed::changes).post(feed::changes_post),
        )
        .route(&format!("{db}/_revs_diff"), post(revs_diff))
        .route(&format!("{db}/_bulk_docs"), post(bulk_docs))
        .route(&format!("{db}/_bulk_get"), post(bulk_get))
        .route(
            &format!("{db}/_ensure_full_commit"),
            post(ensure_full_commit),
        )
        .route(&format!("{db}/_find"), get(find).post(find_post))
        .route(&format!("{db}/_ws"), get(ws::upgrade))
        .route(
            &format!("{db}/_local/{{id}}"),
            get(get_local).put(put_local).delete(delete_local),
        )
        .route(
            &format!("{db}/{{id}}"),
            get(get_doc_route::<true>)
                .put(put_doc_route::<true>)
                .delete(delete_doc_route),
        )
        .route(&format!("{db}/{{id}}/{{*att}}"), attachment_routes())
        .fallback(any(not_found))
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(app.clone())
        .layer(DefaultBodyLimit::max(cfg.max_body));
    if app.auth.is_enabled() {
        r = r.layer(middleware::from_fn_with_state(app, authenticate));
    }
    if let Some(cors) = &cfg.cors {
        r = r.layer(cors_layer(cors));
    }
    r
}

/// `…/:docid/:attname`, the same on both surfaces. Uploads are streamed and limited by
/// `max_attachment_size`, not by the body limit of the other routes.
fn attachment_routes() -> axum::routing::MethodRouter<Arc<App>> {
    get(attachments::get)
        .head(attachments::head)
        .put(attachments::put)
        .delete(attachments::delete)
}

fn cors_layer(cors: &Cors) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origin = match cors {
        Cors::Any => AllowOrigin::mirror_request(),
        Cors::Origins(list) => AllowOrigin::list(
            list.iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        ),
    };
    CorsLayer::new()
        .allow_origin(origin)
        .allow_credentials(true)
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::ACCEPT,
            header::IF_MATCH,
            header::IF_NONE_MATCH,
            header::RANGE,
            header::HeaderName::from_static("content-md5"),
        ])
        .expose_headers([
            header::ETAG,
            header::CONTENT_RANGE,
            header::ACCEPT_RANGES,
            header::CONTENT_LENGTH,
        ])
}

async fn authenticate(State(app): AppState, req: Request, next: Next) -> Response {
    // CORS preflights carry no credentials.
    if req.method() == Method::OPTIONS {
        return next.run(req).await;
    }
    let ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| credentials_ok(&app, h));
    if ok {
        next.run(req).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "authentication required (basic or bearer)",
        )
        .into_response()
    }
}

fn credentials_ok(app: &App, header: &str) -> bool {
    use base64::Engine;
    if let Some(token) = header.strip_prefix("Bearer ") {
        return app
            .auth
            .bearer
            .iter()
            .any(|t| constant_eq(t.as_bytes(), token.trim().as_bytes()));
    }
    if let Some(b64) = header.strip_prefix("Basic ") {
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else {
            return false;
        };
        let Ok(text) = String::from_utf8(raw) else {
            return false;
        };
        if let Some((u, p)) = text.split_once(':') {
            return app.auth.basic.iter().any(|(cu, cp)| {
                constant_eq(cu.as_bytes(), u.as_bytes()) & constant_eq(cp.as_bytes(), p.as_bytes())
            });
        }
    }
    false
}

/// Compares without stopping at the first difference.
fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

async fn welcome() -> Response {
    json_response(
        StatusCode::OK,
        json!({"barrel": "Welcome", "couchdb": "Welcome", "version": env!("CARGO_PKG_VERSION"),
               "vendor": {"name": "barrel"}}),
    )
}

/// `GET /_store`: the store's background work (see `Store::background`).
async fn store_info(State(app): AppState) -> ApiResult {
    let bg = blocking(move || Ok(app.store()?.background())).await?;
    Ok(json_response(
        StatusCode::OK,
        json!({
            "idle": bg.is_idle(),
            "index_queue": bg.index_queue,
            "flushes_running": bg.flushes_running,
            "compactions_running": bg.compactions_running,
            "flush_pending": bg.flush_pending,
            "compaction_pending": bg.compaction_pending,
            "pending_compaction_bytes": bg.pending_compaction_bytes,
            "memtable_bytes": bg.memtable_bytes,
        }),
    ))
}

async fn list_barrels(State(app): AppState) -> ApiResult {
    let names = blocking(move || Ok(app.store()?.list_barrels())).await?;
    Ok(json_response(StatusCode::OK, json!(names)))
}

fn config_of(params: Option<&Value>) -> ApiResult<BarrelConfig> {
    let mut config = BarrelConfig::default();
    let Some(params) = params else {
        return Ok(config);
    };
    let params = params
        .as_object()
        .ok_or_else(|| ApiError::bad_request("params must be an object"))?;
    if let Some(v) = params.get("revs_limit") {
        config.revs_limit = v
            .as_u64()
            .ok_or_else(|| ApiError::bad_request("revs_limit must be a positive integer"))?
            as usize;
    }
    if let Some(v) = params.get("sync") {
        config.sync = v
            .as_bool()
            .ok_or_else(|| ApiError::bad_request("sync must be a boolean"))?;
    }
    Ok(config)
}

async fn create_named(app: Arc<App>, name: String, body: Option<Value>) -> ApiResult {
    let params = body.as_ref().and_then(|b| b.get("params")).cloned();
    if let Some(Value::String(n)) = body.as_ref().and_then(|b| b.get("name")) {
        if *n != name {
            return Err(ApiError::bad_request(format!(
                "the body names {n:?}, the URL {name:?}"
            )));
        }
    }
    let config = config_of(params.as_ref())?;
    blocking(move || Ok(app.store()?.create_barrel(&name, config)?)).await?;
    Ok(json_response(StatusCode::CREATED, json!({"ok": true})))
}

/// `POST /barrels` with `{"name": ..., "params": ...}`.
async fn create_barrel_body(
    State(app): AppState,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let v = json_body(&headers, body)?;
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("the body needs a name"))?
        .to_string();
    create_named(app, name, Some(v)).await
}

/// `POST` or `PUT /barrels/:name`, with an optional `{"name", "params"}` body.
async fn create_barrel(
    State(app): AppState,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body = optional_json_body(&headers, body)?;
    create_named(app, name, body).await
}

async fn barrel_info(State(app): AppState, Path(name): Path<String>) -> ApiResult {
    let info = blocking(move || Ok(app.store()?.barrel_info(&name)?)).await?;
    Ok(json_response(StatusCode::OK, info_json(&info)))
}

async fn delete_barrel(State(app): AppState, Path(name): Path<String>) -> ApiResult {
    blocking(move || Ok(app.store()?.delete_barrel(&name)?)).await?;
    Ok(json_response(StatusCode::OK, json!({"ok": true})))
}

// ---------------------------------------------------------------------------------------------
// Documents
// ---------------------------------------------------------------------------------------------

pub(crate) fn rev_param(q: &[(String, String)]) -> ApiResult<Option<Rev>> {
    param(q, "rev")
        .map(|r| Rev::parse(r).map_err(ApiError::from))
        .transpose()
}

/// The revision a write applies to: `?rev=`, or the `If-Match` header.
pub(crate) fn rev_of(q: &[(String, String)], headers: &HeaderMap) -> ApiResult<Option<Rev>> {
    if let Some(r) = rev_param(q)? {
        return Ok(Some(r));
    }
    Ok(headers
        .get(header::IF_MATCH)
        .and_then(|h| h.to_str().ok())
        .map(|s| Rev::parse(s.trim().trim_matches('"')))
        .transpose()?)
}

pub(crate) fn json_param(q: &[(String, String)], key: &str) -> ApiResult<Option<Value>> {
    param(q, key)
        .map(|v| {
            serde_json::from_str(v).map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "query_parse_error",
                    format!("{key} must be JSON"),
                )
            })
        })
        .transpose()
}

pub(crate) fn revs_of(v: &Value) -> ApiResult<Vec<Rev>> {
    v.as_array()
        .ok_or_else(|| ApiError::bad_request("expected a list of revisions"))?
        .iter()
        .map(|r| {
            r.as_str()
                .ok_or_else(|| ApiError::bad_request("a revision must be a string"))
                .and_then(|s| Rev::parse(s).map_err(ApiError::from))
        })
        .collect()
}

/// `GET` of a document: the winner or `?rev=`, or `open_revs` (JSON, or multipart/mixed when
/// the client accepts it); `attachments=true` and `atts_since` send attachment contents, inline
/// in the JSON, or as multipart/related parts for a client that takes that and not JSON.
async fn get_doc(
    app: Arc<App>,
    name: String,
    id: String,
    q: Option<String>,
    headers: HeaderMap,
    style: Style,
) -> ApiResult {
    let q = pairs(&q);
    let revs = bool_param(&q, "revs")?;
    let conflicts = bool_param(&q, "conflicts")?;
    let latest = bool_param(&q, "latest")?;
    let rev = rev_param(&q)?;
    let ask = AttsAsk::from_query(&q)?;
    let open_revs = match param(&q, "open_revs") {
        None => None,
        Some("all") => Some(OpenRevs::All),
        Some(_) => Some(OpenRevs::Revs(revs_of(
            &json_param(&q, "open_revs")?.unwrap_or(Value::Null),
        )?)),
    };
    let mixed = multipart::accepts_mixed(&headers);
    let related = ask.inline && multipart::wants_related(&headers);
    let with_history = revs || ask.needs_history();
    blocking(move || {
        let barrel = open(&app, &name)?;
        match open_revs {
            Some(which) => {
                let list = barrel.fetch_open_revs_latest(&id, &which, with_history, latest)?;
                if mixed {
                    let parts: Vec<_> = list
                        .into_iter()
                        .map(|r| {
                            Ok(match r {
                                OpenRev::Ok(doc) => multipart::RevPart::Rev(doc, ask.clone()),
                                OpenRev::Missing(rev) => {
                                    multipart::RevPart::Error(json!({"missing": rev.to_string()}))
                                }
                            })
                        })
                        .collect();
                    let to_wire = move |doc| doc_out(doc, style);
                    return Ok(multipart::revisions_response(
                        barrel,
                        multipart::MIXED,
                        parts,
                        revs,
                        to_wire,
                    ));
                }
                let out = list
                    .into_iter()
                    .map(|r| match r {
                        OpenRev::Ok(mut doc) => {
                            ask.apply_json(&barrel, &mut doc, revs)?;
                            Ok(json!({"ok": doc_out(doc, style)}))
                        }
                        OpenRev::Missing(rev) => Ok(json!({"missing": rev.to_string()})),
                    })
                    .collect::<ApiResult<Vec<Value>>>()?;
                Ok(json_response(StatusCode::OK, Value::Array(out)))
            }
            None => {
                let opts = FetchOptions {
                    rev,
                    revs: with_history,
                    conflicts,
                };
                let mut doc = barrel.fetch_doc(&id, &opts)?;
                let etag = doc
                    .get("_rev")
                    .and_then(Value::as_str)
                    .map(|r| format!("\"{r}\""));
                // As CouchDB: multipart only for a document with attachments.
                let with_atts = doc
                    .get(ATTACHMENTS)
                    .and_then(Value::as_object)
                    .is_some_and(|a| !a.is_empty());
                let mut resp = if related && with_atts {
                    let to_wire = move |doc| doc_out(doc, style);
                    multipart::doc_response(barrel, doc, &ask, revs, to_wire)
                } else {
                    ask.apply_json(&barrel, &mut doc, revs)?;
                    json_response(StatusCode::OK, doc_out(doc, style))
                };
                if let Some(e) = etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
                    resp.headers_mut().insert(header::ETAG, e);
                }
                Ok(resp)
            }
        }
    })
    .await
}

pub(crate) fn saved(id: &str, rev: &Rev) -> Value {
    json!({"ok": true, "id": id, "rev": rev.to_string()})
}

/// A document body for `PUT …/:docid`: the URL's id put in (a different one in the body is
/// refused), and `?rev=` when the body has no `_rev`.
pub(crate) fn doc_for_put(
    mut m: Map<String, Value>,
    id: &str,
    q: &[(String, String)],
    style: Style,
) -> ApiResult<Map<String, Value>> {
    let id_key = if style == Style::Couch { "_id" } else { "id" };
    match m.get(id_key) {
        Some(Value::String(given)) if given != id => {
            return Err(ApiError::bad_request(format!(
                "the document's {id_key} {given:?} is not the URL's {id:?}"
            )))
        }
        _ => {
            m.insert(id_key.into(), Value::String(id.to_string()));
        }
    }
    if let Some(rev) = param(q, "rev") {
        m.entry("_rev")
            .or_insert_with(|| Value::String(rev.to_string()));
    }
    Ok(m)
}

/// `PUT …/:docid`: a JSON document, or a multipart/related one (the JSON, then the contents of
/// the attachments it marks `follows`).
async fn put_doc(
    app: Arc<App>,
    name: String,
    id: String,
    q: Option<String>,
    req: Request,
    style: Style,
) -> ApiResult {
    let q = pairs(&q);
    let headers = req.headers().clone();
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .map(multipart::media_type);
    if ct.as_deref() == Some("multipart/related") {
        let body = req.into_body();
        return multipart::put_doc(app, name, id, q, headers, body, style).await;
    }
    let body = Bytes::from_request(req, &()).await;
    let m = doc_for_put(
        object(json_body(&headers, body)?, "a document")?,
        &id,
        &q,
        style,
    )?;
    let new_edits = param(&q, "new_edits") != Some("false");
    let doc = doc_in(m, style)?;
    let (id, rev) = blocking(move || {
        let barrel = open(&app, &name)?;
        Ok(barrel.save_doc(doc, &SaveOptions { new_edits })?)
    })
    .await?;
    Ok(json_response(StatusCode::CREATED, saved(&id, &rev)))
}

/// The revision a deletion names (`?rev=` or `If-Match`): 409 `conflict` with `why` without one.
pub(crate) fn rev_required(q: &Option<String>, headers: &HeaderMap, why: &str) -> ApiResult<Rev> {
    rev_of(&pairs(q), headers)?.ok_or_else(|| ApiError::new(StatusCode::CONFLICT, "conflict", why))
}

async fn delete_doc(
    app: Arc<App>,
    name: String,
    id: String,
    q: Option<String>,
    headers: HeaderMap,
) -> ApiResult {
    let rev = rev_required(&q, &headers, "a rev is needed to delete")?;
    let (id, rev) = blocking(move || Ok(open(&app, &name)?.delete_doc(&id, rev)?)).await?;
    Ok(json_response(StatusCode::OK, saved(&id, &rev)))
}

/// The document routes, for both surfaces: `COUCH` picks CouchDB's (`/barrels/:name/:docid`,
/// ids in `_id`) over Barrel's (`/barrels/:name/docs/:id`, ids in `id`).
fn style_of(couch: bool) -> Style {
    if couch {
        Style::Couch
    } else {
        Style::Barrel
    }
}

async fn get_doc_route<const COUCH: bool>(
    State(app): AppState,
    Path((name, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> ApiResult {
    get_doc(app, name, id, q, headers, style_of(COUCH)).await
}

async fn put_doc_route<const COUCH: bool>(
    State(app): AppState,
    Path((name, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    req: Request,
) -> ApiResult {
    put_doc(app, name, id, q, req, style_of(COUCH)).await
}

async fn delete_doc_route(
    State(app): AppState,
    Path((name, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> ApiResult {
    delete_doc(app, name, id, q, headers).await
}

/// `POST /barrels/:name/docs`: a new document (its `id` generated when absent).
async fn post_doc(
    State(app): AppState,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let m = object(json_body(&headers, body)?, "a document")?;
    let doc = doc_in(m, Style::Barrel)?;
    let (id, rev) =
        blocking(move || Ok(open(&app, &name)?.save_doc(doc, &SaveOptions::default())?)).await?;
    Ok(json_response(StatusCode::CREATED, saved(&id, &rev)))
}

// ---------------------------------------------------------------------------------------------
// _all_docs
// ---------------------------------------------------------------------------------------------

fn key_param(q: &[(String, String)], names: &[&str]) -> ApiResult<Option<String>> {
    for n in names {
        if let Some(v) = json_param(q, n)? {
            return match v {
                Value::String(s) => Ok(Some(s)),
                _ => Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "query_parse_error",
                    format!("{n} must be a JSON string"),
                )),
            };
        }
    }
    Ok(None)
}

fn fold_rows(
    barrel: &Barrel,
    q: &[(String, String)],
    style: Style,
) -> ApiResult<(Vec<Value>, u64)> {
    if bool_param(q, "descending")? {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "query_parse_error",
            "descending is not supported",
        ));
    }
    let include_docs = bool_param(q, "include_docs")?;
    let inclusive_end = param(q, "inclusive_end") != Some("false");
    let start = key_param(q, &["startkey", "start_key"])?;
    let end = key_param(q, &["endkey", "end_key"])?;
    let skip = int_param(q, "skip")?.unwrap_or(0) as usize;
    let limit = int_param(q, "limit")?.map(|l| l as usize + skip);
    let opts = FoldOptions {
        start: start.map_or(Bound::Unbounded, Bound::Included),
        end: match end {
            None => Bound::Unbounded,
            Some(e) if inclusive_end => Bound::Included(e),
            Some(e) => Bound::Excluded(e),
        },
        limit,
        include_docs,
    };
    let mut rows = Vec::new();
    let mut n = 0usize;
    barrel.fold_docs(&opts, |row| {
        n += 1;
        if n > skip {
            let mut r = json!({"id": row.id, "key": row.id, "value": {"rev": row.rev.to_string()}});
            if let Some(doc) = row.doc {
                r["doc"] = doc_out(doc, style);
            }
            rows.push(r);
        }
        ControlFlow::Continue(())
    })?;
    let total = barrel.info()?.stats.docs_count;
    Ok((rows, total))
}

/// `GET _all_docs` (CouchDB's surface) and `GET docs` (Barrel's).
async fn all_docs_route<const COUCH: bool>(
    State(app): AppState,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let q = pairs(&q);
    let style = style_of(COUCH);
    blocking(move || all_docs_json(&open(&app, &name)?, &q, style)).await
}

/// An `_all_docs` answer over the id range and options of the query string.
fn all_docs_json(barrel: &Barrel, q: &[(String, String)], style: Style) -> ApiResult {
    let (rows, total) = fold_rows(barrel, q, style)?;
    Ok(all_docs_response(rows, total))
}

fn all_docs_response(rows: Vec<Value>, total: u64) -> Response {
    json_response(
        StatusCode::OK,
        json_object([
            ("total_rows", Value::from(total)),
            ("offset", Value::from(0)),
            ("rows", Value::Array(rows)),
        ]),
    )
}

/// `POST _all_docs` with `{"keys": [...]}`.
async fn all_docs_keys(
    State(app): AppState,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let q = pairs(&q);
    let v = json_body(&headers, body)?;
    let Some(keys) = v.get("keys") else {
        return blocking(move || all_docs_json(&open(&app, &name)?, &q, Style::Couch)).await;
    };
    let keys: Vec<String> = keys
        .as_array()
        .ok_or_else(|| ApiError::bad_request("keys must be a list"))?
        .iter()
        .map(|k| {
            k.as_str()
                .map(str::to_string)
                .ok_or_else(|| ApiError::bad_request("keys must be strings"))
        })
        .collect::<ApiResult<_>>()?;
    let include_docs = bool_param(&q, "include_docs")?;
    blocking(move || {
        let barrel = open(&app, &name)?;
        let mut rows = Vec::new();
        for k in keys {
            match barrel.fetch_doc(&k, &FetchOptions::default()) {
                Ok(doc) => {
                    let rev = doc.get("_rev").cloned().unwrap_or(Value::Null);
                    let mut r = json!({"id": k, "key": k, "value": {"rev": rev}});
                    if include_docs {
                        r["doc"] = doc_out(doc, Style::Couch);
                    }
                    rows.push(r);
                }
                Err(Error::NotFound) | Err(Error::BadDoc(_)) => {
                    rows.push(json!({"key": k, "error": "not_found"}))
                }
                Err(e) => return Err(e.into()),
            }
        }
        let total = barrel.info()?.stats.docs_count;
        Ok(all_docs_response(rows, total))
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Replication surface
// ---------------------------------------------------------------------------------------------

/// `_revs_diff`: `{"id": [rev, ...]}` → `{"id": {"missing": [...], "possible_ancestors": [...]}}`
/// (documents missing nothing left out).
pub(crate) fn revs_diff_json(barrel: &Barrel, req: Map<String, Value>) -> ApiResult<Value> {
    let mut out = Map::new();
    for (id, revs) in req {
        let revs = revs_of(&revs)?;
        let diff = match barrel.revs_diff(&id, &revs) {
            Ok(d) => d,
            Err(Error::BadDoc(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        if diff.missing.is_empty() {
            continue;
        }
        let mut entry =
            json!({"missing": diff.missing.iter().map(Rev::to_string).collect::<Vec<_>>()});
        if !diff.possible_ancestors.is_empty() {
            entry["possible_ancestors"] = json!(diff
                .possible_ancestors
                .iter()
                .map(Rev::to_string)
                .collect::<Vec<_>>());
        }
        out.insert(id, entry);
    }
    Ok(Value::Object(out))
}

/// `_bulk_docs`: `{"docs": [...], "new_edits": bool}` → one result per document (with
/// `new_edits: false`, only the failures, as CouchDB does).
pub(crate) fn bulk_docs_json(barrel: &Barrel, mut v: Map<String, Value>) -> ApiResult<Value> {
    let new_edits = match v.get("new_edits") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::bad_request("new_edits must be a boolean")),
    };
    // Taken out of the request, not copied: a batch of a replication is hundreds of documents.
    let docs = match v.remove("docs") {
        Some(Value::Array(d)) => d,
        _ => return Err(ApiError::bad_request("docs must be a list")),
    };
    let mut ids: Vec<Option<String>> = Vec::with_capacity(docs.len());
    let inputs: Vec<crate::error::Result<DocInput>> = docs
        .into_iter()
        .map(|d| {
            ids.push(d.get("_id").and_then(Value::as_str).map(str::to_string));
            match d {
                Value::Object(m) => doc_in(m, Style::Couch).map_err(|e| Error::BadParam(e.reason)),
                _ => Err(Error::BadDoc(DocError::NotAnObject)),
            }
        })
        .collect();
    let results = barrel.save_docs(inputs, &SaveOptions { new_edits })?;
    let out: Vec<Value> = results
        .into_iter()
        .zip(ids)
        .filter_map(|(r, id)| match r {
            Ok((id, rev)) if new_edits => {
                Some(json!({"ok": true, "id": id, "rev": rev.to_string()}))
            }
            Ok(_) => None,
            Err(e) => {
                let ApiError { error, reason, .. } = ApiError::from(e);
                Some(json!({"id": id, "error": error, "reason": reason}))
            }
        })
        .collect();
    Ok(Value::Array(out))
}

/// The query options of `_bulk_get`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct BulkGetOptions {
    /// `revs=true`: each revision with `_revisions`.
    pub revs: bool,
    /// `latest=true`: a revision that is no longer a leaf stands for its leaves.
    pub latest: bool,
    /// `attachments=true`: contents inline (base64), all of them or those after the entry's
    /// `atts_since`.
    pub attachments: bool,
}

/// One document asked of `_bulk_get`.
struct BulkGetEntry {
    id: String,
    /// `rev` as given (for the errors).
    rev: Value,
    which: OpenRevs,
    ask: AttsAsk,
}

/// The entries of a `_bulk_get` body, `{"docs": [{"id", "rev"?, "atts_since"?}]}`.
fn bulk_get_entries(v: &Value, opts: BulkGetOptions) -> ApiResult<Vec<BulkGetEntry>> {
    let asked = v
        .get("docs")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::bad_request("docs must be a list"))?;
    asked
        .iter()
        .map(|a| {
            let rev = a.get("rev").cloned().unwrap_or(Value::Null);
            let which = match rev.as_str() {
                Some(r) => OpenRevs::Revs(vec![Rev::parse(r)?]),
                None => OpenRevs::All,
            };
            Ok(BulkGetEntry {
                id: a
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                rev,
                which,
                ask: AttsAsk::from_entry(opts.attachments, a)?,
            })
        })
        .collect()
}

impl BulkGetEntry {
    /// The revisions of the entry: each document, or the error object of a missing one.
    fn fetch(&self, barrel: &Barrel, opts: BulkGetOptions) -> ApiResult<Vec<Result<Body, Value>>> {
        let missing = |rev: Value| json!({"id": self.id, "rev": rev, "error": "not_found", "reason": "missing"});
        let with_history = opts.revs || self.ask.needs_history();
        match barrel.fetch_open_revs_latest(&self.id, &self.which, with_history, opts.latest) {
            Ok(list) => Ok(list
                .into_iter()
                .map(|r| match r {
                    OpenRev::Ok(doc) => Ok(doc),
                    OpenRev::Missing(rev) => Err(missing(Value::String(rev.to_string()))),
                })
                .collect()),
            Err(Error::NotFound) | Err(Error::BadDoc(_)) => {
                Ok(vec![Err(missing(self.rev.clone()))])
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// `_bulk_get`: `{"docs": [{"id", "rev"?, "atts_since"?}]}` → `{"results": [{"id", "docs":
/// [{"ok": doc} | {"error": ...}]}]}`.
pub(crate) fn bulk_get_json(barrel: &Barrel, v: &Value, opts: BulkGetOptions) -> ApiResult<Value> {
    let entries = bulk_get_entries(v, opts)?;
    let mut results = Vec::with_capacity(entries.len());
    for e in entries {
        let docs = e
            .fetch(barrel, opts)?
            .into_iter()
            .map(|r| match r {
                Ok(mut doc) => {
                    e.ask.apply_json(barrel, &mut doc, opts.revs)?;
                    Ok(json_object([("ok", doc_out(doc, Style::Couch))]))
                }
                Err(error) => Ok(json!({ "error": error })),
            })
            .collect::<ApiResult<Vec<Value>>>()?;
        results.push(json_object([
            ("id", Value::String(e.id)),
            ("docs", Value::Array(docs)),
        ]));
    }
    Ok(json_object([("results", Value::Array(results))]))
}

/// `_bulk_get` as multipart (`media`), streamed: one part per revision of each entry, the
/// documents fetched one entry at a time as the body is written.
fn bulk_get_multipart(
    barrel: Barrel,
    media: &'static str,
    entries: Vec<BulkGetEntry>,
    opts: BulkGetOptions,
) -> Response {
    let fetcher = barrel.clone();
    let parts = entries.into_iter().flat_map(move |e| {
        let parts: Vec<ApiResult<multipart::RevPart>> = match e.fetch(&fetcher, opts) {
            Ok(list) => list
                .into_iter()
                .map(|r| {
                    Ok(match r {
                        Ok(doc) => multipart::RevPart::Rev(doc, e.ask.clone()),
                        Err(error) => multipart::RevPart::Error(error),
                    })
                })
                .collect(),
            Err(err) => vec![Err(err)],
        };
        parts
    });
    multipart::revisions_response(barrel, media, parts, opts.revs, |doc| {
        doc_out(doc, Style::Couch)
    })
}

/// A POST whose JSON object body `f` answers with a JSON value, on the blocking pool.
async fn post_object<F>(
    app: Arc<App>,
    name: String,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    status: StatusCode,
    f: F,
) -> ApiResult
where
    F: FnOnce(&Barrel, Map<String, Value>) -> ApiResult<Value> + Send + 'static,
{
    let req = object(json_body(&headers, body)?, "the request")?;
    let v = blocking(move || f(&open(&app, &name)?, req)).await?;
    Ok(json_response(status, v))
}

async fn revs_diff(
    State(app): AppState,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    post_object(app, name, headers, body, StatusCode::OK, revs_diff_json).await
}

async fn bulk_docs(
    State(app): AppState,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    post_object(
        app,
        name,
        headers,
        body,
        StatusCode::CREATED,
        bulk_docs_json,
    )
    .await
}

/// `POST _bulk_get` (`?revs`, `?latest`, `?attachments`): JSON, or multipart for a client that
/// takes that and not JSON.
async fn bulk_get(
    State(app): AppState,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let q = pairs(&q);
    let opts = BulkGetOptions {
        revs: bool_param(&q, "revs")?,
        latest: bool_param(&q, "latest")?,
        attachments: bool_param(&q, "attachments")?,
    };
    let req = json_body(&headers, body)?;
    if let Some(media) = multipart::bulk_get_multipart(&headers) {
        let entries = bulk_get_entries(&req, opts)?;
        return blocking(move || Ok(bulk_get_multipart(open(&app, &name)?, media, entries, opts)))
            .await;
    }
    let v = blocking(move || bulk_get_json(&open(&app, &name)?, &req, opts)).await?;
    Ok(json_response(StatusCode::OK, v))
}

async fn ensure_full_commit(State(app): AppState, Path(name): Path<String>) -> ApiResult {
    blocking(move || {
        open(&app, &name)?;
        Ok(json_response(
            StatusCode::CREATED,
            json!({"ok": true, "instance_start_time": "0"}),
        ))
    })
    .await
}

async fn get_local(State(app): AppState, Path((name, id)): Path<(String, String)>) -> ApiResult {
    blocking(move || {
        let mut doc = open(&app, &name)?.get_local(&id)?;
        doc.insert("_id".into(), Value::String(format!("_local/{id}")));
        Ok(json_response(StatusCode::OK, Value::Object(doc)))
    })
    .await
}

async fn put_local(
    State(app): AppState,
    Path((name, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let mut m = object(json_body(&headers, body)?, "a document")?;
    m.remove("_id");
    blocking(move || {
        let rev = open(&app, &name)?.put_local(&id, m)?;
        Ok(json_response(
            StatusCode::CREATED,
            json!({"ok": true, "id": format!("_local/{id}"), "rev": rev}),
        ))
    })
    .await
}

async fn delete_local(State(app): AppState, Path((name, id)): Path<(String, String)>) -> ApiResult {
    blocking(move || {
        open(&app, &name)?.delete_local(&id)?;
        Ok(json_response(
            StatusCode::OK,
            json!({"ok": true, "id": format!("_local/{id}"), "rev": "0-0"}),
        ))
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Path queries
// ---------------------------------------------------------------------------------------------

/// A query from `{"path": P, "equal" | "prefix" | "start_at"/"end_at" ...}` or the talk's
/// `{"query": "$/path/value"}`.
fn query_of(v: &Map<String, Value>) -> ApiResult<(Query, Option<usize>)> {
    let bad = |w: &str| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", w.to_string());
    let descending = v
        .get("descending")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let include_docs = v
        .get("include_docs")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let limit = v.get("limit").and_then(Value::as_u64).map(|l| l as usize);
    let (path, select) = if let Some(q) = v.get("query").and_then(Value::as_str) {
        let (p, val) = parse_path_and_value(q).map_err(|e| bad(&e))?;
        (p, Select::Equal(val))
    } else {
        let p = v
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("path is required"))?;
        let path = parse_path(p).map_err(|e| bad(&e))?;
        let bound = |k: &str, incl: &str| -> Bound<Value> {
            match v.get(k) {
                None => Bound::Unbounded,
                Some(x) if v.get(incl).and_then(Value::as_bool) == Some(false) => {
                    Bound::Excluded(x.clone())
                }
                Some(x) => Bound::Included(x.clone()),
            }
        };
        let select = if let Some(e) = v.get("equal") {
            Select::Equal(e.clone())
        } else if let Some(p) = v.get("prefix") {
            Select::Prefix(
                p.as_str()
                    .ok_or_else(|| bad("prefix must be a string"))?
                    .to_string(),
            )
        } else if v.contains_key("start_at") || v.contains_key("end_at") {
            Select::Range {
                start: bound("start_at", "start_inclusive"),
                end: bound("end_at", "end_inclusive"),
            }
        } else {
            Select::All
        };
        (path, select)
    };
    Ok((
        Query {
            path,
            select,
            descending,
            include_docs,
        },
        limit,
    ))
}

async fn run_find(app: Arc<App>, name: String, v: Map<String, Value>) -> ApiResult {
    let (q, limit) = query_of(&v)?;
    blocking(move || {
        let barrel = open(&app, &name)?;
        let mut rows = Vec::new();
        barrel.query(&q, limit, |row| {
            rows.push(match row.doc {
                Some(doc) => doc_out(doc, Style::Barrel),
                None => json!({"id": row.id, "value": row.value}),
            });
            true
        })?;
        Ok(json_response(
            StatusCode::OK,
            json_object([("docs", Value::Array(rows))]),
        ))
    })
    .await
}

/// `GET _find?path=$/a/b&equal=...` (values as JSON, or plain strings), or `?query=$/a/b/value`.
async fn find(State(app): AppState, Path(name): Path<String>, RawQuery(q): RawQuery) -> ApiResult {
    let mut m = Map::new();
    for (k, v) in pairs(&q) {
        let value = match k.as_str() {
            "path" | "query" | "prefix" => Value::String(v),
            _ => serde_json::from_str(&v).unwrap_or(Value::String(v)),
        };
        m.insert(k, value);
    }
    run_find(app, name, m).await
}

async fn find_post(
    State(app): AppState,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let m = object(json_body(&headers, body)?, "the query")?;
    run_find(app, name, m).await
}

// ---------------------------------------------------------------------------------------------
// _replicate
// ---------------------------------------------------------------------------------------------

/// An endpoint of `POST /_replicate`: a barrel of this server, or a URL (`http(s)://` for the
/// CouchDB protocol, `ws(s)://` for Barrel's stream).
fn rep_endpoint(
    app: &App,
    spec: &Value,
    create: bool,
) -> ApiResult<Box<dyn crate::replicate::endpoint::Endpoint>> {
    use crate::replicate::endpoint::{Endpoint as _, HttpEndpoint, LocalEndpoint, WsEndpoint};
    let s = match spec {
        Value::String(s) => s.as_str(),
        Value::Object(o) => o.get("url").and_then(Value::as_str).unwrap_or_default(),
        _ => "",
    };
    if s.is_empty() {
        return Err(ApiError::bad_request(
            "source and target are barrel names or URLs",
        ));
    }
    if s.starts_with("http://") || s.starts_with("https://") {
        let mut e = HttpEndpoint::new(s, None);
        e.prepare(create)?;
        Ok(Box::new(e))
    } else if s.starts_with("ws://") || s.starts_with("wss://") {
        let mut e = WsEndpoint::new(s, None);
        e.prepare(create)?;
        Ok(Box::new(e))
    } else {
        let store = app.store()?;
        let barrel = match store.open_barrel(s) {
            Err(Error::NotFound) if create => {
                match store.create_barrel(s, BarrelConfig::default()) {
                    Ok(()) | Err(Error::AlreadyExists) => {}
                    Err(e) => return Err(e.into()),
                }
                store.open_barrel(s)?
            }
            other => other?,
        };
        Ok(Box::new(LocalEndpoint::new(barrel)))
    }
}

/// `POST /_replicate` (CouchDB's): `{"source", "target", "create_target", "filter": [pattern],
/// "since", "batch_size"}` runs a one-shot replication in the server and answers when it is
/// done, with its counters.
async fn replicate(
    State(app): AppState,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    use crate::changes::Pattern;
    use crate::replicate::run::{run, RepControl, RepOptions};
    let req = object(json_body(&headers, body)?, "the replication request")?;
    if req.get("continuous").and_then(Value::as_bool) == Some(true) {
        return Err(ApiError::bad_request(
            "continuous replications run from the BEAM (barrel:replicate/2)",
        ));
    }
    let create = req
        .get("create_target")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let filter = req
        .get("filter")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|p| {
                    Pattern::parse(p.as_str().unwrap_or_default())
                        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_pattern", e))
                })
                .collect::<ApiResult<Vec<_>>>()
        })
        .transpose()?
        .unwrap_or_default();
    let opts = RepOptions {
        continuous: false,
        filter,
        since: req.get("since").and_then(Value::as_u64),
        batch_size: req.get("batch_size").and_then(Value::as_u64).unwrap_or(500) as usize,
        create_target: create,
    };
    blocking(move || {
        let mut source = rep_endpoint(&app, req.get("source").unwrap_or(&Value::Null), false)?;
        let mut target = rep_endpoint(&app, req.get("target").unwrap_or(&Value::Null), create)?;
        let control = RepControl::default();
        run(
            source.as_mut(),
            target.as_mut(),
            &opts,
            &control,
            &mut |_| {},
        )
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "replication_failed",
                e.to_string(),
            )
        })?;
        let p = control.progress();
        Ok(json_response(
            StatusCode::OK,
            json!({"ok": true, "docs_read": p.docs_read, "docs_written": p.docs_written,
                   "source_last_seq": p.last_seq}),
        ))
    })
    .await
}
