//! Multipart bodies as CouchDB uses them (RFC 2046):
//! - `PUT /:db/:docid` with `Content-Type: multipart/related`: the document's JSON first, its
//!   attachments marked `"follows": true`, then one part per such attachment, in the order of
//!   the JSON (or named by the part's `Content-Disposition: attachment; filename="…"`);
//! - `GET /:db/:docid?open_revs=…` with `Accept: multipart/mixed` (CouchDB's replicator asks
//!   this way): one part per revision, `application/json`, or `multipart/related` (the JSON with
//!   `"follows": true` stubs, then the contents) when contents go with it; a missing revision is
//!   an `application/json; error="true"` part `{"missing": rev}`.
//!
//! Both stream: attachment parts go to and from storage chunk by chunk.

use super::attachments::{content_sent, AttsAsk};
use super::http::{
    blocking, doc_for_put, json_response, object, open, param, saved, wire_map, ApiError,
    ApiResult, Style,
};
use super::stream::{blocking_body, refuse, BodySink, BodySource};
use super::App;
use crate::attachment::{body_attachments, AttSource, AttSpec, ATTACHMENTS};
use crate::barrel::{Barrel, OpenRev, SaveOptions};
use crate::doc::{DocInput, REVISIONS};
use crate::error::DocError;
use crate::revtree::Rev;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
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

/// `"…"` with `"` and `\` escaped.
fn quoted(s: &str) -> String {
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
fn part_head(boundary: &str, headers: &[(&str, &str)]) -> Vec<u8> {
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
const PART_END: &[u8] = b"\r\n";

/// The closing delimiter.
fn closing(boundary: &str) -> Vec<u8> {
    format!("--{boundary}--").into_bytes()
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

fn bad_attachment(why: String) -> ApiError {
    DocError::BadAttachment(why).into()
}

/// `PUT …/:docid` with `Content-Type: multipart/related`: the JSON part (`?rev=` and
/// `?new_edits=false` as for a JSON body) and the contents of the attachments it marks
/// `follows`, each streamed into storage (up to the server's `max_attachment_size`).
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
            if let Some(enc) = atts.as_object().and_then(|a| {
                a.values()
                    .filter_map(|v| v.get("encoding").and_then(Value::as_str))
                    .find(|e| *e != "identity")
            }) {
                return Err(bad_attachment(format!(
                    "{enc}-encoded attachment contents are not supported"
                )));
            }
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
                        return Err(bad_attachment(format!(
                            "{f}: a part for an attachment not marked follows"
                        )))
                    }
                    None => waiting.first().cloned().ok_or_else(|| {
                        bad_attachment("more parts than attachments marked follows".into())
                    })?,
                };
                waiting.retain(|n| *n != att);
                if let Some(enc) = h.get("content-encoding").filter(|e| *e != "identity") {
                    return Err(bad_attachment(format!(
                        "{att}: Content-Encoding {enc} is not supported"
                    )));
                }
                let mut w = barrel.attachment_writer()?.with_limit(max_att);
                while let Some(piece) = parts.read()? {
                    w.write(&piece)?;
                }
                let blob = w.finish()?;
                if let Some(spec) = specs.iter_mut().find(|s| s.name == att) {
                    // Digest and length given in the JSON are checked when the revision is
                    // written.
                    spec.source = AttSource::Blob(blob);
                    if spec.content_type.is_none() {
                        spec.content_type = h.get("content-type").map(str::to_string);
                    }
                }
            }
            if let Some(s) = specs.iter().find(|s| follows(s)) {
                return Err(bad_attachment(format!(
                    "{}: marked follows, but no part holds it",
                    s.name
                )));
            }
            let doc = DocInput::from_map_and_attachments(m, specs)?;
            Ok(barrel.save_doc(doc, &SaveOptions { new_edits })?)
        };
        let result = save();
        Ok((result, src))
    })
    .await?;
    match result {
        Ok((id, rev)) => Ok(json_response(StatusCode::CREATED, saved(&id, &rev))),
        Err(e) => {
            src.drain().await;
            Err(e)
        }
    }
}

/// `true` when an `Accept` header asks for `multipart/mixed`.
pub(crate) fn accepts_mixed(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(','))
        .any(|t| media_type(t) == "multipart/mixed")
}

/// The `open_revs` answer as multipart/mixed, streamed: each revision's JSON (shaped by
/// `to_wire`), with the contents `ask` wants as parts of a multipart/related part.
pub(crate) fn open_revs_response<W>(
    barrel: Barrel,
    list: Vec<OpenRev>,
    ask: AttsAsk,
    keep_revisions: bool,
    to_wire: W,
) -> Response
where
    W: Fn(crate::doc::Body) -> Value + Send + 'static,
{
    let outer = new_boundary();
    let content_type = format!("multipart/mixed; boundary=\"{outer}\"");
    let body = blocking_body(move |sink| {
        for r in list {
            match r {
                OpenRev::Missing(rev) => {
                    sink.send(part_head(
                        &outer,
                        &[("Content-Type", "application/json; error=\"true\"")],
                    ))?;
                    sink.send(json!({"missing": rev.to_string()}).to_string())?;
                    sink.send(PART_END)?;
                }
                OpenRev::Ok(doc) => {
                    send_revision(&barrel, sink, &outer, doc, &ask, keep_revisions, &to_wire)?;
                }
            }
        }
        sink.send(closing(&outer))
    });
    let mut resp = (StatusCode::OK, body).into_response();
    if let Ok(v) = HeaderValue::from_str(&content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

/// One revision of a multipart/mixed answer.
fn send_revision(
    barrel: &Barrel,
    sink: &BodySink,
    outer: &str,
    mut doc: crate::doc::Body,
    ask: &AttsAsk,
    keep_revisions: bool,
    to_wire: &dyn Fn(crate::doc::Body) -> Value,
) -> ApiResult<()> {
    let since = ask.since_gen(&doc);
    if !keep_revisions {
        doc.remove(REVISIONS);
    }
    let follow: Vec<_> = if ask.inline {
        body_attachments(&doc)
            .into_iter()
            .filter(|(_, m)| content_sent(m, since))
            .collect()
    } else {
        Vec::new()
    };
    if follow.is_empty() {
        sink.send(part_head(outer, &[("Content-Type", "application/json")]))?;
        sink.send(to_wire(doc).to_string())?;
        return sink.send(PART_END);
    }
    if let Some(Value::Object(atts)) = doc.get_mut(ATTACHMENTS) {
        for (name, _) in &follow {
            if let Some(Value::Object(a)) = atts.get_mut(name) {
                a.remove("stub");
                a.insert("follows".into(), Value::Bool(true));
            }
        }
    }
    let inner = new_boundary();
    let related = format!("multipart/related; boundary=\"{inner}\"");
    sink.send(part_head(outer, &[("Content-Type", &related)]))?;
    sink.send(part_head(&inner, &[("Content-Type", "application/json")]))?;
    sink.send(to_wire(doc).to_string())?;
    sink.send(PART_END)?;
    for (name, meta) in follow {
        let disposition = format!("attachment; filename={}", quoted(&name));
        let length = meta.length.to_string();
        sink.send(part_head(
            &inner,
            &[
                ("Content-Disposition", &disposition),
                ("Content-Type", &meta.content_type),
                ("Content-Length", &length),
            ],
        ))?;
        let mut reader = barrel.open_attachment(&meta)?;
        while let Some(chunk) = reader.read()? {
            sink.send(chunk)?;
        }
        sink.send(PART_END)?;
    }
    sink.send(closing(&inner))?;
    sink.send(PART_END)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn attachment_names_in_written_order() {
        let json =
            br#"{"_id":"x","_attachments":{"z":{"follows":true},"a":{"follows":true},"m":{}}}"#;
        assert_eq!(attachment_order(json), ["z", "a", "m"]);
        assert!(attachment_order(b"{}").is_empty());
    }
}
