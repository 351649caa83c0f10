//! Multipart bodies as CouchDB uses them (RFC 2046):
//! - `PUT /:db/:docid` with `Content-Type: multipart/related`: the document's JSON first, its
//!   attachments marked `"follows": true`, then one part per such attachment, in the order of
//!   the JSON (or named by the part's `Content-Disposition: attachment; filename="…"`); a part
//!   may be gzip-encoded (`Content-Encoding: gzip`, or `"encoding": "gzip"` in its stub, as
//!   CouchDB's replicator sends compressible contents) and is decoded as it arrives;
//! - `GET /:db/:docid?open_revs=…` with `Accept: multipart/mixed` (CouchDB's replicator asks
//!   this way) and `POST /:db/_bulk_get` with an `Accept` that takes multipart but not JSON: one
//!   part per revision, `application/json`, or `multipart/related` (the JSON with
//!   `"follows": true` stubs, then the contents) when contents go with it; a missing revision is
//!   an `application/json; error="true"` part;
//! - `GET /:db/:docid?attachments=true` with `Accept: multipart/related`: the document as one
//!   multipart/related body.
//!
//! All stream: attachment parts go to and from storage chunk by chunk.

use super::attachments::AttsAsk;
use super::http::{
    blocking, doc_for_put, object, open, param, wire_map, ApiError, ApiResult, Style,
};
use super::stream::{blocking_body, refuse, BodySink, BodySource};
use super::App;
use crate::attachment::{
    body_attachments, AttMeta, AttSource, AttSpec, AttachmentWriter, Md5Digest, NewBlob,
    ATTACHMENTS,
};
use crate::barrel::{Barrel, SaveOptions};
use crate::doc::{DocInput, REVISIONS};
use crate::error::{DocError, Error};
use crate::revtree::Rev;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use md5::{Digest, Md5};
use serde_json::{Map, Value};
use std::io::Write;
use std::sync::Arc;

/// Longest header block of one part.
const MAX_PART_HEADERS: usize = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// Wire format
// ---------------------------------------------------------------------------------------------

/// The parameters of a header value (`type; a=b; c="d"`), names lowercased, quoted values
/// unescaped. The first element is the bare value (`type`).
fn header_params(v: &str) -> (String, Vec<(String, String)>) {
    let mut out = Vec::new();
    let (bare, mut rest) = match v.find(';') {
        Some(i) => (&v[..i], &v[i + 1..]),
        None => (v, ""),
    };
    loop {
        rest = rest.trim_start_matches([' ', '\t', ';']);
        let Some(eq) = rest.find('=') else { break };
        let name = rest[..eq].trim().to_ascii_lowercase();
        rest = rest[eq + 1..].trim_start();
        let mut value = String::new();
        if let Some(q) = rest.strip_prefix('"') {
            let mut chars = q.char_indices();
            let mut end = q.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            rest = &q[end.min(q.len())..];
        } else {
            let end = rest.find(';').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        out.push((name, value));
    }
    (bare.trim().to_ascii_lowercase(), out)
}

/// The media type of a `Content-Type` value, lowercased, without parameters.
pub(crate) fn media_type(ct: &str) -> String {
    header_params(ct).0
}

/// The `boundary` parameter of a `Content-Type` value.
pub(crate) fn boundary_of(ct: &str) -> Option<String> {
    header_params(ct)
        .1
        .into_iter()
        .find(|(k, _)| k == "boundary")
        .map(|(_, v)| v)
        .filter(|b| !b.is_empty() && b.len() <= 70)
}

/// A fresh boundary (random hex: never found in JSON, and as unlikely as can be in contents).
pub(crate) fn new_boundary() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// `"…"` with `"` and `\` escaped (a quoted header parameter such as `filename`).
pub(crate) fn quoted(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

/// The headers of one part, names lowercased.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct PartHeaders(Vec<(String, String)>);

impl PartHeaders {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `filename` of `Content-Disposition`.
    pub fn filename(&self) -> Option<String> {
        header_params(self.get("content-disposition")?)
            .1
            .into_iter()
            .find(|(k, _)| k == "filename")
            .map(|(_, v)| v)
    }

    fn parse(block: &[u8]) -> PartHeaders {
        let text = String::from_utf8_lossy(block);
        PartHeaders(
            text.split("\r\n")
                .filter_map(|line| {
                    let (k, v) = line.split_once(':')?;
                    Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
                })
                .collect(),
        )
    }
}

/// The first position of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        let p = hay[i..=hay.len() - needle.len()]
            .iter()
            .position(|&b| b == first)?;
        i += p;
        if &hay[i..i + needle.len()] == needle {
            return Some(i);
        }
        i += 1;
    }
    None
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadState {
    /// Before the first delimiter.
    Preamble,
    /// Just after a delimiter: a part's headers, or the closing `--`.
    Delimiter,
    /// In a part's body.
    Body,
    /// After the closing delimiter.
    Done,
}

/// Reads a multipart body part by part, each part's body piece by piece, from a source of
/// pieces (`next()`: the next piece, `None` at the end). Only the pieces not yet handed out and
/// a possible partial delimiter are held.
pub(crate) struct Reader<F> {
    next: F,
    buf: Vec<u8>,
    /// `\r\n--boundary`.
    delim: Vec<u8>,
    state: ReadState,
}

fn malformed(why: &str) -> ApiError {
    ApiError::bad_request(format!("malformed multipart body: {why}"))
}

impl<F: FnMut() -> ApiResult<Option<Bytes>>> Reader<F> {
    pub fn new(boundary: &str, next: F) -> Reader<F> {
        Reader {
            next,
            // The first delimiter may open the body, without the CRLF that precedes the others.
            buf: b"\r\n".to_vec(),
            delim: format!("\r\n--{boundary}").into_bytes(),
            state: ReadState::Preamble,
        }
    }

    /// Appends the next piece of the source; `false` at its end.
    fn fill(&mut self) -> ApiResult<bool> {
        match (self.next)()? {
            Some(b) => {
                self.buf.extend_from_slice(&b);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Moves to the next part (skipping what is left of the current one) and returns its
    /// headers; `None` after the closing delimiter.
    pub fn next_part(&mut self) -> ApiResult<Option<PartHeaders>> {
        while self.state == ReadState::Body {
            self.read()?;
        }
        if self.state == ReadState::Preamble {
            loop {
                if let Some(i) = find(&self.buf, &self.delim) {
                    self.buf.drain(..i + self.delim.len());
                    self.state = ReadState::Delimiter;
                    break;
                }
                let keep = self.delim.len() - 1;
                if self.buf.len() > keep {
                    self.buf.drain(..self.buf.len() - keep);
                }
                if !self.fill()? {
                    return Err(malformed("no opening boundary"));
                }
            }
        }
        if self.state == ReadState::Done {
            return Ok(None);
        }
        // After a delimiter: `--` closes the body, otherwise padding, CRLF, then headers.
        while self.buf.len() < 2 {
            if !self.fill()? {
                return Err(malformed("ends after a boundary"));
            }
        }
        if self.buf.starts_with(b"--") {
            self.state = ReadState::Done;
            self.buf.clear();
            return Ok(None);
        }
        let line_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                break i;
            }
            if self.buf.len() > MAX_PART_HEADERS || !self.fill()? {
                return Err(malformed("boundary line not ended"));
            }
        };
        self.buf.drain(..line_end + 2);
        let headers_end = loop {
            if self.buf.starts_with(b"\r\n") {
                break 0;
            }
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 2;
            }
            if self.buf.len() > MAX_PART_HEADERS {
                return Err(malformed("part headers too long"));
            }
            if !self.fill()? {
                return Err(malformed("part headers not ended"));
            }
        };
        let headers = PartHeaders::parse(&self.buf[..headers_end]);
        self.buf.drain(..headers_end + 2);
        self.state = ReadState::Body;
        Ok(Some(headers))
    }

    /// The next piece of the current part's body; `None` at its end.
    pub fn read(&mut self) -> ApiResult<Option<Vec<u8>>> {
        if self.state != ReadState::Body {
            return Ok(None);
        }
        loop {
            if let Some(i) = find(&self.buf, &self.delim) {
                let piece: Vec<u8> = self.buf.drain(..i).collect();
                self.buf.drain(..self.delim.len());
                self.state = ReadState::Delimiter;
                return Ok((!piece.is_empty()).then_some(piece));
            }
            // All but a possible beginning of the delimiter can go.
            let safe = self.buf.len().saturating_sub(self.delim.len() - 1);
            if safe > 0 {
                return Ok(Some(self.buf.drain(..safe).collect()));
            }
            if !self.fill()? {
                return Err(malformed("a part is not closed by a boundary"));
            }
        }
    }

    /// The rest of the current part's body, up to `limit` bytes (413 `too_large` beyond).
    pub fn read_all(&mut self, limit: usize) -> ApiResult<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(p) = self.read()? {
            out.extend_from_slice(&p);
            if out.len() > limit {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    "the document part is over the server's limit",
                ));
            }
        }
        Ok(out)
    }
}

/// The opening of a part: the delimiter line and the headers.
pub(crate) fn part_head(boundary: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut s = format!("--{boundary}\r\n");
    for (k, v) in headers {
        s.push_str(k);
        s.push_str(": ");
        s.push_str(v);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s.into_bytes()
}

/// The end of a part's body (the CRLF that belongs to the next delimiter).
pub(crate) const PART_END: &[u8] = b"\r\n";

/// The closing delimiter.
pub(crate) fn closing(boundary: &str) -> Vec<u8> {
    format!("--{boundary}--").into_bytes()
}

/// A header value as given, or `fallback` when it holds control characters (names and
/// content types come from documents).
pub(crate) fn header_text<'a>(v: &'a str, fallback: &'a str) -> &'a str {
    if v.chars().any(char::is_control) {
        fallback
    } else {
        v
    }
}

/// The head of the part of a multipart/related body that holds attachment `name`'s content.
pub(crate) fn content_part_head(boundary: &str, name: &str, meta: &AttMeta) -> Vec<u8> {
    let disposition = format!(
        "attachment; filename={}",
        quoted(header_text(name, "attachment"))
    );
    let length = meta.length.to_string();
    part_head(
        boundary,
        &[
            ("Content-Disposition", &disposition),
            (
                "Content-Type",
                header_text(&meta.content_type, crate::attachment::OCTET_STREAM),
            ),
            ("Content-Length", &length),
        ],
    )
}

// ---------------------------------------------------------------------------------------------
// Documents
// ---------------------------------------------------------------------------------------------

/// The names of a JSON document's `_attachments` in the order they are written (serde_json's
/// maps sort their keys; multipart parts follow the written order).
fn attachment_order(json: &[u8]) -> Vec<String> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    #[derive(Default)]
    struct Names(Vec<String>);
    impl<'de> serde::Deserialize<'de> for Names {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Names, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Names;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Names, A::Error> {
                    let mut names = Vec::new();
                    while let Some((k, IgnoredAny)) = m.next_entry::<String, IgnoredAny>()? {
                        names.push(k);
                    }
                    Ok(Names(names))
                }
            }
            d.deserialize_map(V)
        }
    }
    #[derive(serde::Deserialize)]
    struct Doc {
        #[serde(rename = "_attachments", default)]
        attachments: Names,
    }
    serde_json::from_slice::<Doc>(json)
        .map(|d| d.attachments.0)
        .unwrap_or_default()
}

fn bad_attachment(name: &str, why: impl std::fmt::Display) -> ApiError {
    crate::attachment::bad(name, why).into()
}

/// What a `follows` stub says of how its part is sent: CouchDB's `encoding` and
/// `encoded_length`.
#[derive(Debug, Default, PartialEq)]
struct StubEncoding {
    gzip: bool,
    encoded_length: Option<u64>,
}

/// The encodings of the `follows` stubs of an `_attachments` object, by name; gzip is the only
/// one taken (it is all CouchDB sends).
fn stub_encodings(atts: &Value) -> ApiResult<Vec<(String, StubEncoding)>> {
    let Some(atts) = atts.as_object() else {
        return Ok(Vec::new());
    };
    let follows = |a: &Map<String, Value>| a.get("follows").and_then(Value::as_bool) == Some(true);
    let mut out = Vec::new();
    for (name, a) in atts {
        let Some(a) = a.as_object().filter(|a| follows(a)) else {
            continue;
        };
        let gzip = match a.get("encoding").and_then(Value::as_str) {
            None | Some("identity") => false,
            Some("gzip") => true,
            Some(enc) => {
                return Err(bad_attachment(
                    name,
                    format!("{enc}-encoded attachment contents are not supported"),
                ))
            }
        };
        let encoded_length = a.get("encoded_length").and_then(Value::as_u64);
        out.push((
            name.clone(),
            StubEncoding {
                gzip,
                encoded_length,
            },
        ));
    }
    Ok(out)
}

/// `true` when a part is gzip-encoded: its `Content-Encoding` says so or, without one, its stub.
fn part_is_gzip(h: &PartHeaders, stub: &StubEncoding, att: &str) -> ApiResult<bool> {
    match h.get("content-encoding").map(str::to_ascii_lowercase) {
        None => Ok(stub.gzip),
        Some(e) if e == "identity" => Ok(false),
        Some(e) if e == "gzip" || e == "x-gzip" => Ok(true),
        Some(e) => Err(bad_attachment(
            att,
            format!("Content-Encoding {e} is not supported"),
        )),
    }
}

/// Where a gzip decoder puts what it decodes: an attachment writer, whose failure (too large,
/// storage) is kept as it is, the decoder passing on only `io::Error`s.
struct Decoded {
    w: AttachmentWriter,
    failed: Option<Error>,
}

impl Write for Decoded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.w.write(buf) {
            Ok(()) => Ok(buf.len()),
            Err(e) => {
                let why = e.to_string();
                self.failed = Some(e);
                Err(std::io::Error::other(why))
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The size and MD5 of an encoded part as it was sent.
struct Encoded {
    length: u64,
    digest: Md5Digest,
}

impl Encoded {
    /// Checks what the stub announced of a gzip-encoded part: `encoded_length` is the size
    /// sent; `digest`, in CouchDB's stubs, is the MD5 of the encoded bytes (that of the decoded
    /// content is taken too). The digest is then dropped from the spec: the content is stored
    /// decoded, under its own digest. `length`, the decoded size, is checked with the revision.
    fn check(
        &self,
        spec: &mut AttSpec,
        blob: &NewBlob,
        encoded_length: Option<u64>,
    ) -> ApiResult<()> {
        if let Some(l) = encoded_length.filter(|l| *l != self.length) {
            return Err(bad_attachment(
                &spec.name,
                format!("encoded_length {l} announced, {} bytes sent", self.length),
            ));
        }
        if let Some(d) = spec.digest.take() {
            if d != self.digest && d != blob.digest() {
                return Err(bad_attachment(
                    &spec.name,
                    format!(
                        "digest {} announced, matching neither the gzip-encoded part nor its \
                         decoded content",
                        crate::attachment::digest_string(&d)
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Reads the rest of the current part, gzip-encoded, into `w` as it decodes (the decoded size
/// is bounded by `w`'s limit); the content, and what was sent.
fn receive_gzip<F>(
    parts: &mut Reader<F>,
    w: AttachmentWriter,
    att: &str,
) -> ApiResult<(NewBlob, Encoded)>
where
    F: FnMut() -> ApiResult<Option<Bytes>>,
{
    use flate2::write::MultiGzDecoder;
    let fail = |decoder: &mut MultiGzDecoder<Decoded>, e: std::io::Error| -> ApiError {
        match decoder.get_mut().failed.take() {
            Some(e) => e.into(),
            None => bad_attachment(att, format!("invalid gzip content: {e}")),
        }
    };
    let mut md5 = Md5::new();
    let mut length = 0u64;
    let mut decoder = MultiGzDecoder::new(Decoded { w, failed: None });
    while let Some(piece) = parts.read()? {
        md5.update(&piece);
        length += piece.len() as u64;
        if let Err(e) = decoder.write_all(&piece) {
            return Err(fail(&mut decoder, e));
        }
    }
    if let Err(e) = decoder.try_finish() {
        return Err(fail(&mut decoder, e));
    }
    let decoded = decoder
        .finish()
        .map_err(|e| bad_attachment(att, format!("invalid gzip content: {e}")))?;
    let sent = Encoded {
        length,
        digest: md5.finalize().into(),
    };
    Ok((decoded.w.finish()?, sent))
}

/// `PUT …/:docid` with `Content-Type: multipart/related`: the JSON part (`?rev=` and
/// `?new_edits=false` as for a JSON body) and the contents of the attachments it marks
/// `follows`, each streamed into storage (up to the server's `max_attachment_size`), decoded
/// on the way when gzip-encoded.
pub(crate) async fn put_doc(
    app: Arc<App>,
    name: String,
    id: String,
    q: Vec<(String, String)>,
    headers: HeaderMap,
    body: Body,
    style: Style,
) -> ApiResult {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let Some(boundary) = boundary_of(ct) else {
        let e = ApiError::bad_request("multipart body without boundary");
        return Err(refuse(&headers, body, e).await);
    };
    let new_edits = param(&q, "new_edits") != Some("false");
    let (max_json, max_att) = (app.max_body, app.max_attachment_size);
    let mut src = BodySource::spawn(body);
    let (result, src) = blocking(move || {
        let mut save = || -> ApiResult<(String, Rev)> {
            let barrel = open(&app, &name)?;
            let mut parts = Reader::new(&boundary, || src.next_blocking());
            let first = parts
                .next_part()?
                .ok_or_else(|| malformed("no document part"))?;
            let ct = first.get("content-type").map(media_type);
            if ct.is_some_and(|c| c != "application/json") {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "bad_content_type",
                    "the first part must be the document, application/json",
                ));
            }
            let json = parts.read_all(max_json)?;
            let order = attachment_order(&json);
            let doc: Value = serde_json::from_slice(&json)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
            let mut m = wire_map(
                doc_for_put(object(doc, "a document")?, &id, &q, style)?,
                style,
            )?;
            let atts = m.remove(ATTACHMENTS).unwrap_or(Value::Null);
            let encodings = stub_encodings(&atts)?;
            let mut specs = AttSpec::all_from_json(atts)?;
            let follows = |s: &AttSpec| matches!(s.source, AttSource::Follows);
            let mut waiting: Vec<String> = order
                .into_iter()
                .filter(|n| specs.iter().any(|s| s.name == *n && follows(s)))
                .collect();
            while let Some(h) = parts.next_part()? {
                let att = match h.filename() {
                    Some(f) if waiting.contains(&f) => f,
                    Some(f) => {
                        return Err(bad_attachment(
                            &f,
                            "a part for an attachment not marked follows",
                        ))
                    }
                    None => waiting.first().cloned().ok_or_else(|| {
                        ApiError::from(DocError::BadAttachment(
                            "more parts than attachments marked follows".into(),
                        ))
                    })?,
                };
                waiting.retain(|n| *n != att);
                let no_encoding = StubEncoding::default();
                let stub = encodings
                    .iter()
                    .find(|(n, _)| *n == att)
                    .map_or(&no_encoding, |(_, e)| e);
                let mut w = barrel.attachment_writer()?.with_limit(max_att);
                let (blob, sent) = if part_is_gzip(&h, stub, &att)? {
                    let (blob, sent) = receive_gzip(&mut parts, w, &att)?;
                    (blob, Some(sent))
                } else {
                    while let Some(piece) = parts.read()? {
                        w.write(&piece)?;
                    }
                    (w.finish()?, None)
                };
                if let Some(spec) = specs.iter_mut().find(|s| s.name == att) {
                    if let Some(sent) = sent {
                        sent.check(spec, &blob, stub.encoded_length)?;
                    }
                    // The digest and length left in the spec are checked when the revision is
                    // written.
                    spec.source = AttSource::Blob(blob);
                    if spec.content_type.is_none() {
                        spec.content_type = h.get("content-type").map(str::to_string);
                    }
                }
            }
            if let Some(s) = specs.iter().find(|s| follows(s)) {
                return Err(bad_attachment(
                    &s.name,
                    "marked follows, but no part holds it",
                ));
            }
            let doc = DocInput::from_map_and_attachments(m, specs)?;
            Ok(barrel.save_doc(doc, &SaveOptions { new_edits })?)
        };
        let result = save();
        Ok((result, src))
    })
    .await?;
    src.answer(result).await
}

// ---------------------------------------------------------------------------------------------
// Content negotiation
// ---------------------------------------------------------------------------------------------

pub(crate) const MIXED: &str = "multipart/mixed";
pub(crate) const RELATED: &str = "multipart/related";
pub(crate) const JSON: &str = "application/json";

/// The media ranges of a request's `Accept` headers, with their weights (`q`).
pub(crate) struct Accept(Vec<(String, f32)>);

impl Accept {
    pub fn of(headers: &HeaderMap) -> Accept {
        Accept(
            headers
                .get_all(header::ACCEPT)
                .iter()
                .filter_map(|h| h.to_str().ok())
                .flat_map(|h| h.split(','))
                .filter(|r| !r.trim().is_empty())
                .map(|r| {
                    let (range, params) = header_params(r);
                    let q = params
                        .iter()
                        .find(|(k, _)| k == "q")
                        .and_then(|(_, v)| v.parse().ok())
                        .unwrap_or(1.0);
                    (range, q)
                })
                .collect(),
        )
    }

    /// `true` when `media` is acceptable, by the rule CouchDB applies (mochiweb's): without an
    /// `Accept` everything is; otherwise `media`, `type/*` or `*/*` must be there with a weight
    /// above 0, and neither `media` nor `type/*` with weight 0.
    pub fn accepts(&self, media: &str) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let family = format!("{}/*", media.split('/').next().unwrap_or_default());
        let names = |r: &str| r == media || r == family;
        self.0
            .iter()
            .any(|(r, q)| *q > 0.0 && (r == "*/*" || names(r)))
            && !self.0.iter().any(|(r, q)| *q <= 0.0 && names(r))
    }

    /// `true` when `media` itself (not a wildcard) is asked for.
    pub fn names(&self, media: &str) -> bool {
        self.0.iter().any(|(r, q)| r == media && *q > 0.0)
    }
}

/// `true` when an `Accept` header asks for `multipart/mixed` by name (`open_revs`).
pub(crate) fn accepts_mixed(headers: &HeaderMap) -> bool {
    Accept::of(headers).names(MIXED)
}

/// The multipart type a `_bulk_get` answers with, `None` for JSON. CouchDB's rule
/// (apache/couchdb#1195): multipart when the client takes `multipart/mixed` or
/// `multipart/related` and does not take JSON; `multipart/related` at the top only for clients
/// that do not take `multipart/mixed` (some Couchbase Lite versions).
pub(crate) fn bulk_get_multipart(headers: &HeaderMap) -> Option<&'static str> {
    let a = Accept::of(headers);
    if a.accepts(JSON) {
        None
    } else if a.accepts(MIXED) {
        Some(MIXED)
    } else if a.accepts(RELATED) {
        Some(RELATED)
    } else {
        None
    }
}

/// `true` when a document fetch with attachment contents is answered as multipart/related:
/// the client takes it and does not take JSON (so that `*/*`, curl's default, keeps JSON,
/// where CouchDB would answer multipart).
pub(crate) fn wants_related(headers: &HeaderMap) -> bool {
    let a = Accept::of(headers);
    !a.accepts(JSON) && a.accepts(RELATED)
}

// ---------------------------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------------------------

/// One part of a multipart answer of revisions (`open_revs`, `_bulk_get`).
pub(crate) enum RevPart {
    /// A revision (fetched with `_revisions` when its ask needs the history), with the
    /// attachment contents the ask wants.
    Rev(crate::doc::Body, AttsAsk),
    /// An error, sent as an `application/json; error="true"` part.
    Error(Value),
}

/// Revisions as a multipart answer (`media`: `multipart/mixed`, or `multipart/related` for the
/// clients that take only that), streamed: one part per revision, its JSON shaped by `to_wire`,
/// with the contents its ask wants as the parts of a multipart/related part. `parts` is drawn
/// from while the body is written, so revisions may be fetched one document at a time; an error
/// it yields cuts the body short (the status is long sent).
pub(crate) fn revisions_response<I, W>(
    barrel: Barrel,
    media: &str,
    parts: I,
    keep_revisions: bool,
    to_wire: W,
) -> Response
where
    I: IntoIterator<Item = ApiResult<RevPart>> + Send + 'static,
    W: Fn(crate::doc::Body) -> Value + Send + 'static,
{
    let outer = new_boundary();
    let content_type = format!("{media}; boundary=\"{outer}\"");
    let body = blocking_body(move |sink| {
        for part in parts {
            match part? {
                RevPart::Error(e) => {
                    sink.send(part_head(
                        &outer,
                        &[("Content-Type", "application/json; error=\"true\"")],
                    ))?;
                    sink.send(e.to_string())?;
                    sink.send(PART_END)?;
                }
                RevPart::Rev(doc, ask) => {
                    send_revision(&barrel, sink, &outer, doc, &ask, keep_revisions, &to_wire)?;
                }
            }
        }
        sink.send(closing(&outer))
    });
    with_content_type((StatusCode::OK, body).into_response(), &content_type)
}

fn with_content_type(mut resp: Response, content_type: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

/// A header value as sent, or `None` when it cannot be one (control characters).
fn header_safe(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str)
        .filter(|s| !s.chars().any(char::is_control))
}

/// Readies a revision for a multipart answer: `_revisions` dropped unless asked for, the stubs
/// of the attachments whose contents go with it marked `"follows": true`. Those attachments.
fn mark_follows(
    doc: &mut crate::doc::Body,
    ask: &AttsAsk,
    keep_revisions: bool,
) -> Vec<(String, AttMeta)> {
    let since = ask.since_gen(doc);
    if !keep_revisions {
        doc.remove(REVISIONS);
    }
    if !ask.inline {
        return Vec::new();
    }
    let follow: Vec<_> = body_attachments(doc)
        .into_iter()
        .filter(|(_, m)| m.sends_content(since))
        .collect();
    if let Some(Value::Object(atts)) = doc.get_mut(ATTACHMENTS) {
        for (name, _) in &follow {
            if let Some(Value::Object(a)) = atts.get_mut(name) {
                a.remove("stub");
                a.insert("follows".into(), Value::Bool(true));
            }
        }
    }
    follow
}

/// One revision of a multipart answer of revisions.
fn send_revision(
    barrel: &Barrel,
    sink: &BodySink,
    outer: &str,
    mut doc: crate::doc::Body,
    ask: &AttsAsk,
    keep_revisions: bool,
    to_wire: &dyn Fn(crate::doc::Body) -> Value,
) -> ApiResult<()> {
    let follow = mark_follows(&mut doc, ask, keep_revisions);
    // CouchDB's _bulk_get names the document and revision of each part.
    let mut headers = Vec::new();
    if let Some(id) = header_safe(doc.get("id")) {
        headers.push(("X-Doc-Id", id.to_string()));
    }
    if let Some(rev) = header_safe(doc.get("_rev")) {
        headers.push(("X-Rev-Id", rev.to_string()));
    }
    let inner = new_boundary();
    let content_type = if follow.is_empty() {
        JSON.to_string()
    } else {
        format!("{RELATED}; boundary=\"{inner}\"")
    };
    headers.push(("Content-Type", content_type));
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    sink.send(part_head(outer, &headers))?;
    let json = to_wire(doc).to_string();
    if follow.is_empty() {
        sink.send(json)?;
    } else {
        send_related(barrel, sink, &inner, json, follow)?;
    }
    sink.send(PART_END)
}

/// A multipart/related body: the document's JSON, then the contents of `follow`, streamed,
/// then the closing delimiter.
fn send_related(
    barrel: &Barrel,
    sink: &BodySink,
    boundary: &str,
    json: String,
    follow: Vec<(String, AttMeta)>,
) -> ApiResult<()> {
    sink.send(part_head(boundary, &[("Content-Type", JSON)]))?;
    sink.send(json)?;
    sink.send(PART_END)?;
    for (name, meta) in follow {
        sink.send(content_part_head(boundary, &name, &meta))?;
        let mut reader = barrel.open_attachment(&meta)?;
        while let Some(chunk) = reader.read()? {
            sink.send(chunk)?;
        }
        sink.send(PART_END)?;
    }
    sink.send(closing(boundary))
}

/// A document with attachment contents as multipart/related (CouchDB's "efficient multiple
/// attachments retrieving"): the JSON (shaped by `to_wire`) with the stubs of the contents
/// that go with it marked `"follows": true`, then those contents, streamed.
pub(crate) fn doc_response<W>(
    barrel: Barrel,
    mut doc: crate::doc::Body,
    ask: &AttsAsk,
    keep_revisions: bool,
    to_wire: W,
) -> Response
where
    W: FnOnce(crate::doc::Body) -> Value,
{
    let follow = mark_follows(&mut doc, ask, keep_revisions);
    let json = to_wire(doc).to_string();
    let boundary = new_boundary();
    let content_type = format!("{RELATED}; boundary=\"{boundary}\"");
    let body = blocking_body(move |sink| send_related(&barrel, sink, &boundary, json, follow));
    with_content_type((StatusCode::OK, body).into_response(), &content_type)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Feeds `body` in pieces of `n` bytes.
    fn reader(body: &[u8], n: usize) -> Reader<impl FnMut() -> ApiResult<Option<Bytes>>> {
        let pieces: Vec<Bytes> = body.chunks(n).map(Bytes::copy_from_slice).collect();
        let mut it = pieces.into_iter();
        Reader::new("b0undary", move || Ok(it.next()))
    }

    fn parts_of(body: &[u8], n: usize) -> Vec<(PartHeaders, Vec<u8>)> {
        let mut r = reader(body, n);
        let mut out = Vec::new();
        while let Some(h) = r.next_part().unwrap() {
            let mut data = Vec::new();
            while let Some(p) = r.read().unwrap() {
                data.extend(p);
            }
            out.push((h, data));
        }
        out
    }

    #[test]
    fn reads_parts_whatever_the_piece_size() {
        let body = b"preamble\r\n--b0undary\r\nContent-Type: application/json\r\n\r\n{\"a\":1}\r\n\
                     --b0undary\r\nContent-Disposition: attachment; filename=\"x \\\"y\\\".txt\"\r\n\r\n\
                     line\r\n--b0undar almost\r\n--b0undary\r\n\r\n\r\n--b0undary--\r\nepilogue";
        for n in [1, 2, 3, 7, 13, 64, 1000] {
            let parts = parts_of(body, n);
            assert_eq!(parts.len(), 3, "piece size {n}");
            assert_eq!(parts[0].0.get("content-type"), Some("application/json"));
            assert_eq!(parts[0].1, b"{\"a\":1}");
            assert_eq!(parts[1].0.filename().as_deref(), Some("x \"y\".txt"));
            assert_eq!(parts[1].1, b"line\r\n--b0undar almost");
            assert_eq!(parts[2].0, PartHeaders::default());
            assert_eq!(parts[2].1, b"");
        }
    }

    #[test]
    fn unread_parts_are_skipped_and_truncation_is_an_error() {
        let body = b"--b0undary\r\n\r\nskipped\r\n--b0undary\r\nX: 1\r\n\r\nkept\r\n--b0undary--";
        let mut r = reader(body, 5);
        r.next_part().unwrap().unwrap();
        let h = r.next_part().unwrap().unwrap();
        assert_eq!(h.get("x"), Some("1"));
        assert_eq!(r.read_all(100).unwrap(), b"kept");
        assert!(r.next_part().unwrap().is_none());
        let mut r = reader(b"--b0undary\r\n\r\nno end", 4);
        r.next_part().unwrap().unwrap();
        assert!(r.read_all(100).is_err());
        assert!(reader(b"nothing here", 4).next_part().is_err());
    }

    #[test]
    fn writes_what_it_reads() {
        let mut body = part_head("b0undary", &[("Content-Type", "application/json")]);
        body.extend_from_slice(b"{}");
        body.extend_from_slice(PART_END);
        let d = format!("attachment; filename={}", quoted("a\"b"));
        body.extend(part_head("b0undary", &[("Content-Disposition", &d)]));
        body.extend_from_slice(b"\r\n--b0undar\r\n-");
        body.extend_from_slice(PART_END);
        body.extend(closing("b0undary"));
        let parts = parts_of(&body, 3);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1].0.filename().as_deref(), Some("a\"b"));
        assert_eq!(parts[1].1, b"\r\n--b0undar\r\n-");
    }

    #[test]
    fn content_type_parameters() {
        let ct = "Multipart/Related; boundary=\"abc def\"; type=application/json";
        assert_eq!(media_type(ct), "multipart/related");
        assert_eq!(boundary_of(ct).as_deref(), Some("abc def"));
        assert_eq!(
            boundary_of("multipart/mixed;boundary=xyz").as_deref(),
            Some("xyz")
        );
        assert_eq!(boundary_of("multipart/mixed"), None);
    }

    fn accept(v: &str) -> Accept {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        Accept::of(&h)
    }

    #[test]
    fn accept_follows_couchdb() {
        // mochiweb's examples.
        assert!(Accept::of(&HeaderMap::new()).accepts(JSON));
        assert!(accept("text/plain, application/*").accepts(JSON));
        assert!(!accept("text/plain, */*; q=0.0").accepts(JSON));
        assert!(accept("text/plain; q=0.5, */*; q=0.1").accepts(JSON));
        assert!(!accept("text/*; q=0.0, */*").accepts("text/plain"));
        assert!(accept("Multipart/Mixed").accepts(MIXED));
        assert!(!accept("multipart/*").names(MIXED));
        assert!(accept("multipart/mixed;q=0.9").names(MIXED));
        assert!(!accept("multipart/mixed;q=0").names(MIXED));
        let bulk_get = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
            bulk_get_multipart(&h)
        };
        assert_eq!(bulk_get("multipart/mixed"), Some(MIXED));
        assert_eq!(bulk_get("multipart/related"), Some(RELATED));
        assert_eq!(bulk_get("multipart/*"), Some(MIXED));
        assert_eq!(bulk_get("multipart/mixed, application/json"), None);
        assert_eq!(bulk_get("*/*"), None);
        assert_eq!(bulk_get("text/html"), None);
        assert_eq!(bulk_get_multipart(&HeaderMap::new()), None);
    }

    #[test]
    fn stub_encodings_of_follows_stubs() {
        let atts = json!({"a": {"follows": true, "encoding": "gzip", "encoded_length": 7},
                          "b": {"follows": true}, "c": {"stub": true, "encoding": "gzip"}});
        let gz = StubEncoding {
            gzip: true,
            encoded_length: Some(7),
        };
        assert_eq!(
            stub_encodings(&atts).unwrap(),
            [
                ("a".to_string(), gz),
                ("b".to_string(), StubEncoding::default())
            ]
        );
        let atts = json!({"a": {"follows": true, "encoding": "deflate"}});
        assert!(stub_encodings(&atts).is_err());
    }

    #[test]
    fn attachment_names_in_written_order() {
        let json =
            br#"{"_id":"x","_attachments":{"z":{"follows":true},"a":{"follows":true},"m":{}}}"#;
        assert_eq!(attachment_order(json), ["z", "a", "m"]);
        assert!(attachment_order(b"{}").is_empty());
    }
}
