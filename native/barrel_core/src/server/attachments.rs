//! Attachments over HTTP: `GET`/`HEAD`/`PUT`/`DELETE` of `…/:docid/:attname` (the same handlers
//! serve Barrel's `/barrels/:name/docs/:id/:attname` and CouchDB's `/barrels/:name/:docid/:attname`),
//! and the `attachments=true` / `atts_since` options of document fetches.
//!
//! Contents stream both ways: an upload goes to an [`AttachmentWriter`](crate::AttachmentWriter)
//! piece by piece as it arrives, a download is read chunk by chunk, so neither is ever whole in
//! memory.

use super::http::{
    blocking, bool_param, json_param, json_response, open, pairs, rev_of, rev_param, rev_required,
    revs_of, saved, ApiError, ApiResult, AppState,
};
use super::stream::{blocking_body, refuse, BodySource};
use crate::attachment::{check_name, AttMeta, AttachmentReader, OCTET_STREAM};
use crate::barrel::Barrel;
use crate::doc::{check_doc_id, Body, REVISIONS};
use crate::error::Error;
use crate::revtree::Rev;
use axum::body::Body as HttpBody;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use base64::Engine;
use serde_json::Value;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The part of an attachment a `Range` header asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ByteRange {
    /// No (usable) range: the whole content, 200.
    Whole,
    /// Bytes `start..end`, 206.
    Part { start: u64, end: u64 },
    /// A range that starts past the end, 416.
    Unsatisfiable,
}

/// Reads a `Range` header against a content of `len` bytes: `bytes=a-b`, `bytes=a-` and
/// `bytes=-n` (the last n bytes). Anything else, several ranges included, is ignored (the whole
/// content is sent), as RFC 9110 allows.
fn byte_range(header: Option<&str>, len: u64) -> ByteRange {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return ByteRange::Whole;
    };
    let Some((a, b)) = spec.split_once('-') else {
        return ByteRange::Whole;
    };
    if spec.contains(',') {
        return ByteRange::Whole;
    }
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        return match b.parse::<u64>() {
            Ok(0) => ByteRange::Unsatisfiable,
            Ok(_) if len == 0 => ByteRange::Whole,
            Ok(n) => ByteRange::Part {
                start: len - n.min(len),
                end: len,
            },
            Err(_) => ByteRange::Whole,
        };
    }
    let Ok(start) = a.parse::<u64>() else {
        return ByteRange::Whole;
    };
    let end = if b.is_empty() {
        len
    } else {
        match b.parse::<u64>() {
            Ok(last) if last >= start => last.saturating_add(1).min(len),
            _ => return ByteRange::Whole,
        }
    };
    if start >= len {
        return ByteRange::Unsatisfiable;
    }
    ByteRange::Part { start, end }
}

/// `true` when an `If-None-Match` header names `etag` (or is `*`).
fn etag_matches(if_none_match: Option<&str>, etag: &str) -> bool {
    if_none_match.is_some_and(|h| {
        h.split(',').any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/") == etag
        })
    })
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
}

fn value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(OCTET_STREAM))
}

/// The response headers of an attachment's content.
fn content_headers(meta: &AttMeta, etag: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, value(&meta.content_type));
    h.insert(header::ETAG, value(etag));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("must-revalidate"),
    );
    h
}

/// A response body fed by `reader`, chunk by chunk, from a blocking thread.
fn reader_body(mut reader: AttachmentReader) -> HttpBody {
    blocking_body(move |sink| {
        while let Some(chunk) = reader.read()? {
            sink.send(chunk)?;
        }
        Ok(())
    })
}

/// `GET …/:docid/:attname` (`?rev=`): the content, whole or the `Range` asked for, with
/// `Content-Type`, `Content-Length`, `ETag` (the digest), `Accept-Ranges`; 304 when
/// `If-None-Match` names the ETag; 303 to the URL of a linked attachment.
pub(crate) async fn get(
    State(app): AppState,
    Path((name, id, att)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> ApiResult {
    read(app, name, id, att, q, headers, true).await
}

/// `HEAD …/:docid/:attname`: the headers of [`get`], no content.
pub(crate) async fn head(
    State(app): AppState,
    Path((name, id, att)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> ApiResult {
    read(app, name, id, att, q, headers, false).await
}

async fn read(
    app: std::sync::Arc<super::App>,
    name: String,
    id: String,
    att: String,
    q: Option<String>,
    headers: HeaderMap,
    with_content: bool,
) -> ApiResult {
    let rev = rev_param(&pairs(&q))?;
    let range = header_str(&headers, header::RANGE);
    let if_none_match = header_str(&headers, header::IF_NONE_MATCH);
    blocking(move || {
        let barrel = open(&app, &name)?;
        let meta = barrel.attachment_meta(&id, &att, rev.as_ref())?;
        let Some(digest) = meta.digest else {
            // A linked attachment: its content is elsewhere.
            let url = meta.url.as_deref().unwrap_or_default();
            let location = HeaderValue::from_str(url).map_err(|_| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "the attachment's url is not a valid Location",
                )
            })?;
            return Ok((StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response());
        };
        let etag = format!("\"{}\"", B64.encode(digest));
        let mut h = content_headers(&meta, &etag);
        if etag_matches(if_none_match.as_deref(), &etag) {
            h.remove(header::CONTENT_TYPE);
            return Ok((StatusCode::NOT_MODIFIED, h).into_response());
        }
        let len = meta.length;
        let (status, start, end) = match byte_range(range.as_deref(), len) {
            ByteRange::Whole => {
                h.insert("content-md5", value(&B64.encode(digest)));
                (StatusCode::OK, 0, len)
            }
            ByteRange::Part { start, end } => {
                let cr = format!("bytes {start}-{}/{len}", end - 1);
                h.insert(header::CONTENT_RANGE, value(&cr));
                (StatusCode::PARTIAL_CONTENT, start, end)
            }
            ByteRange::Unsatisfiable => {
                let mut resp = ApiError::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "requested_range_not_satisfiable",
                    format!("the attachment has {len} bytes"),
                )
                .into_response();
                resp.headers_mut()
                    .insert(header::CONTENT_RANGE, value(&format!("bytes */{len}")));
                return Ok(resp);
            }
        };
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
        let body = if with_content {
            let mut reader = barrel.open_attachment(&meta)?;
            reader.set_range(start, end);
            reader_body(reader)
        } else {
            HttpBody::empty()
        };
        Ok((status, h, body).into_response())
    })
    .await
}

/// `Content-MD5`: the base64 MD5 of an upload, when given.
fn content_md5(headers: &HeaderMap) -> ApiResult<Option<crate::attachment::Md5Digest>> {
    let Some(h) = headers.get("content-md5") else {
        return Ok(None);
    };
    let bad = || ApiError::bad_request("Content-MD5 must be the base64 MD5 of the content");
    let raw = B64
        .decode(h.to_str().map_err(|_| bad())?.trim())
        .map_err(|_| bad())?;
    raw.try_into().map(Some).map_err(|_| bad())
}

/// `Content-Length`, when given.
fn content_length(headers: &HeaderMap) -> ApiResult<Option<u64>> {
    headers
        .get(header::CONTENT_LENGTH)
        .map(|h| {
            h.to_str()
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| ApiError::bad_request("invalid Content-Length"))
        })
        .transpose()
}

/// `PUT …/:docid/:attname` (`?rev=` or `If-Match`; without a rev the document must not exist
/// and is created): the body is the content, `Content-Type` its type; `Content-MD5` and
/// `Content-Length`, when given, are checked (400 `bad_attachment`, nothing written). Over the
/// server's `max_attachment_size`: 413 `attachment_too_large`. 201 `{"ok", "id", "rev"}`.
pub(crate) async fn put(
    State(app): AppState,
    Path((name, id, att)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: HttpBody,
) -> ApiResult {
    let limit = app.max_attachment_size;
    let checked = || -> ApiResult<_> {
        let rev = rev_of(&pairs(&q), &headers)?;
        check_doc_id(&id)?;
        check_name(&att)?;
        let length = content_length(&headers)?;
        if length.is_some_and(|l| l > limit) {
            return Err(Error::AttachmentTooLarge(limit).into());
        }
        Ok((rev, content_md5(&headers)?, length))
    };
    let (rev, md5, length) = match checked() {
        Ok(c) => c,
        Err(e) => return Err(refuse(&headers, body, e).await),
    };
    let content_type =
        header_str(&headers, header::CONTENT_TYPE).unwrap_or_else(|| OCTET_STREAM.to_string());
    let mut src = BodySource::spawn(body);
    let (result, src) = blocking(move || {
        let mut write = || -> ApiResult<(String, Rev)> {
            let barrel = open(&app, &name)?;
            let mut w = barrel.attachment_writer()?.with_limit(limit);
            while let Some(piece) = src.next_blocking()? {
                w.write(&piece)?;
            }
            let blob = w.finish_checked(&att, md5.as_ref(), length)?;
            Ok(barrel.put_attachment(&id, rev.as_ref(), &att, &content_type, blob)?)
        };
        let result = write();
        Ok((result, src))
    })
    .await?;
    src.answer(result).await
}

/// `DELETE …/:docid/:attname?rev=R` (or `If-Match`): a new revision without the attachment;
/// 200 `{"ok", "id", "rev"}`, 404 when that revision has no such attachment, 409 without a rev
/// or with one that is not a current leaf.
pub(crate) async fn delete(
    State(app): AppState,
    Path((name, id, att)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> ApiResult {
    let rev = rev_required(&q, &headers, "a rev is needed to delete an attachment")?;
    let (id, rev) =
        blocking(move || Ok(open(&app, &name)?.delete_attachment(&id, &rev, &att)?)).await?;
    Ok(json_response(StatusCode::OK, saved(&id, &rev)))
}

/// What a document fetch asks of attachment contents: none (stubs), all (`attachments=true`),
/// or those changed after the revisions of `atts_since` (which implies `attachments=true`).
#[derive(Clone, Debug, Default)]
pub(crate) struct AttsAsk {
    /// Send contents (not only stubs).
    pub inline: bool,
    /// `atts_since`: revisions the client has.
    pub since: Vec<Rev>,
}

impl AttsAsk {
    /// From `inline` (`attachments=true`) and an `atts_since` list.
    pub fn new(inline: bool, since: Option<Vec<Rev>>) -> AttsAsk {
        AttsAsk {
            inline: inline || since.is_some(),
            since: since.unwrap_or_default(),
        }
    }

    /// From a query string's `attachments` and `atts_since` (a JSON list of revisions).
    pub fn from_query(q: &[(String, String)]) -> ApiResult<AttsAsk> {
        let since = json_param(q, "atts_since")?
            .map(|v| revs_of(&v))
            .transpose()?;
        Ok(AttsAsk::new(bool_param(q, "attachments")?, since))
    }

    /// From an `_bulk_get` entry's `atts_since`, with the query's `attachments`.
    pub fn from_entry(inline: bool, entry: &Value) -> ApiResult<AttsAsk> {
        let since = entry.get("atts_since").map(revs_of).transpose()?;
        Ok(AttsAsk::new(inline, since))
    }

    /// `true` when revisions must be fetched with `_revisions`, to place `atts_since`.
    pub fn needs_history(&self) -> bool {
        self.inline && !self.since.is_empty()
    }

    /// The generation after which contents are sent for `doc` (fetched with `_revisions` when
    /// [`AttsAsk::needs_history`]): that of the newest revision of its history that
    /// `atts_since` names, as CouchDB does. `None`: every content.
    pub fn since_gen(&self, doc: &Body) -> Option<u64> {
        crate::attachment::since_generation(doc, &self.since)
    }

    /// Applies the ask to a fetched revision in JSON form (contents inline as base64 `data`),
    /// then drops `_revisions` unless the client asked for them.
    pub fn apply_json(
        &self,
        barrel: &Barrel,
        doc: &mut Body,
        keep_revisions: bool,
    ) -> ApiResult<()> {
        if self.inline {
            let since = self.since_gen(doc);
            barrel.inline_attachments(doc, since, &|data| Value::String(B64.encode(data)))?;
        }
        if !keep_revisions {
            doc.remove(REVISIONS);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_ranges() {
        use ByteRange::*;
        let r = |h: &str| byte_range(Some(h), 100);
        assert_eq!(r("bytes=0-9"), Part { start: 0, end: 10 });
        assert_eq!(
            r("bytes=90-200"),
            Part {
                start: 90,
                end: 100
            }
        );
        assert_eq!(
            r("bytes=10-"),
            Part {
                start: 10,
                end: 100
            }
        );
        assert_eq!(
            r("bytes=-5"),
            Part {
                start: 95,
                end: 100
            }
        );
        assert_eq!(r("bytes=-500"), Part { start: 0, end: 100 });
        assert_eq!(r("bytes=100-"), Unsatisfiable);
        assert_eq!(r("bytes=100-200"), Unsatisfiable);
        assert_eq!(r("bytes=-0"), Unsatisfiable);
        assert_eq!(r("bytes=9-3"), Whole);
        assert_eq!(r("bytes=0-1,5-6"), Whole);
        assert_eq!(r("items=0-9"), Whole);
        assert_eq!(r("bytes=x-9"), Whole);
        assert_eq!(byte_range(None, 100), Whole);
        assert_eq!(byte_range(Some("bytes=-5"), 0), Whole);
        assert_eq!(byte_range(Some("bytes=0-"), 0), Unsatisfiable);
    }

    #[test]
    fn if_none_match() {
        assert!(etag_matches(Some("\"a\""), "\"a\""));
        assert!(etag_matches(Some("\"b\", W/\"a\""), "\"a\""));
        assert!(etag_matches(Some("*"), "\"a\""));
        assert!(!etag_matches(Some("\"b\""), "\"a\""));
        assert!(!etag_matches(None, "\"a\""));
    }
}
