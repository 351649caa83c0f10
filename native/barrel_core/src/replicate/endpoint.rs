//! The two sides of a replication: a local barrel (through the engine, no HTTP), a remote barrel
//! or CouchDB/PouchDB-server database over HTTP, or a remote barrel over Barrel's WebSocket
//! stream. Documents travel CouchDB-shaped (`_id`, `_rev`, `_revisions`, `_deleted`,
//! `_attachments`).
//!
//! Attachment contents travel inline in the documents (base64 `data`) or apart from them, as
//! streams read and written chunk by chunk, so a large one is never whole in memory:
//! - every endpoint here reads a content apart ([`Endpoint::read_content`]): a local barrel
//!   from its storage, a remote one with `GET /db/docid/attname?rev=` (the WebSocket endpoint
//!   over HTTP to the same server);
//! - a local barrel stores contents ahead of the documents that refer to them
//!   ([`Endpoint::write_content`]);
//! - a remote one takes a document and its contents in one streamed multipart/related
//!   `PUT /db/docid?new_edits=false` ([`Endpoint::save_streamed`]).
//!
//! Inline, a document carries the attachments changed after the revisions the target already
//! has (CouchDB's `atts_since`), and stubs for the older ones, which the target accepts because
//! it holds their contents. [`crate::replicate::run`] chooses the way for each document.

use crate::attachment::{AttMeta, AttSource, AttSpec, Md5Digest, NewBlob, ATTACHMENTS, CHUNK_SIZE};
use crate::barrel::{Barrel, OpenRev, OpenRevs, SaveOptions};
use crate::changes::{ChangeSink, ChangesOptions, Pattern, SubscribeOptions, Subscription};
use crate::doc::{Body, DocInput};
use crate::error::{Error, Result};
use crate::json_object;
use crate::replicate::RevsDiff;
use crate::revtree::Rev;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// One document's leaf revisions in a changes batch.
#[derive(Clone, Debug, PartialEq)]
pub struct ChangedDoc {
    /// Document id.
    pub id: String,
    /// Sequence of its change on the source.
    pub seq: u64,
    /// Every leaf revision.
    pub revs: Vec<Rev>,
}

/// How [`Endpoint::fetch`] returns attachments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachmentData {
    /// Stubs only: the contents move apart ([`Endpoint::read_content`]).
    Stubs,
    /// Inline base64 `data` for the attachments changed after the highest of the possible
    /// ancestors in each revision's history, stubs for the others (CouchDB's `atts_since`).
    SinceAncestors,
    /// Inline base64 `data` for every attachment.
    All,
}

/// A document the target refused because one of its attachment stubs names content the target
/// does not have (the `missing_stub` error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingStub {
    /// Document id.
    pub id: String,
    /// What the target said (the stub or digest it lacks).
    pub reason: String,
}

/// An attachment's content read piece by piece (each at most one stored chunk).
pub type Chunks<'a> = Box<dyn Iterator<Item = Result<Vec<u8>>> + 'a>;

/// An attachment content as a replication moves it apart from its document: the revision and
/// name it is read under (what a remote source needs) and its stub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentRef {
    /// Document id.
    pub id: String,
    /// The revision whose attachment it is.
    pub rev: Rev,
    /// Attachment name.
    pub name: String,
    /// Its stub (a digest: linked attachments have no content here).
    pub meta: AttMeta,
}

impl ContentRef {
    /// The contents a CouchDB-shaped revision refers to (its attachments with a digest),
    /// except those stored encoded at the source (see [`is_encoded`]).
    pub fn all_of(doc: &Value) -> Vec<ContentRef> {
        let Some(rev) = doc
            .get("_rev")
            .and_then(Value::as_str)
            .and_then(|r| Rev::parse(r).ok())
        else {
            return Vec::new();
        };
        let id = couch_id(doc);
        doc.get(ATTACHMENTS)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter(|(_, a)| !is_encoded(a))
            .filter_map(|(name, a)| Some((name, AttMeta::from_json(a)?)))
            .filter(|(_, m)| m.digest.is_some())
            .map(|(name, meta)| ContentRef {
                id: id.clone(),
                rev: rev.clone(),
                name: name.clone(),
                meta,
            })
            .collect()
    }
}

/// `true` when an attachment stub describes a content stored encoded at the source (CouchDB
/// gzips text): its digest is the encoded bytes', which a content read decoded does not
/// match, so such a content travels inline, decoded by the source.
pub fn is_encoded(att: &Value) -> bool {
    att.get("encoding")
        .and_then(Value::as_str)
        .is_some_and(|e| e != "identity")
}

/// What a replication reads from and writes to.
pub trait Endpoint: Send {
    /// A stable description (used in the replication id and in messages).
    fn describe(&self) -> String;
    /// Up to `limit` changed documents after `since`, and the sequence to continue from.
    fn changes(
        &mut self,
        since: u64,
        limit: usize,
        filter: &[Pattern],
    ) -> Result<(Vec<ChangedDoc>, u64)>;
    /// Blocks until there may be changes after `since`, at most `timeout`.
    fn wait_changes(&mut self, since: u64, timeout: Duration) -> Result<()>;
    /// Of these revisions, which are missing here, with the leaves here that may be their
    /// ancestors (documents missing nothing are left out).
    fn revs_diff(&mut self, asked: &[(String, Vec<Rev>)]) -> Result<Vec<(String, RevsDiff)>>;
    /// The missing revisions of each document (or the leaves descending from them), with
    /// their history (`_revisions`), CouchDB-shaped; attachments as `atts` asks, relative to
    /// the possible ancestors.
    fn fetch(&mut self, wanted: &[(String, RevsDiff)], atts: AttachmentData) -> Result<Vec<Value>>;
    /// Stores replicated revisions as given (`new_edits: false`). Returns the documents
    /// refused because an attachment stub names content this side lacks (the replication
    /// sends them again with their contents); any other refusal is an error.
    fn save(&mut self, docs: Vec<Value>) -> Result<Vec<MissingStub>>;
    /// A local (checkpoint) document.
    fn get_local(&mut self, id: &str) -> Result<Option<Value>>;
    /// Writes a local (checkpoint) document.
    fn put_local(&mut self, id: &str, doc: Value) -> Result<()>;
    /// Checks the other side is there (creating it with `create`); called before each pass.
    fn prepare(&mut self, _create: bool) -> Result<()> {
        Ok(())
    }
    /// `true` when [`Endpoint::read_content`] works: as a source, this side hands out
    /// attachment contents apart from the documents.
    fn reads_contents(&self) -> bool {
        false
    }
    /// `true` when [`Endpoint::missing_contents`] and [`Endpoint::write_content`] work: as a
    /// target, this side stores contents ahead of the documents that refer to them.
    fn stores_contents(&self) -> bool {
        false
    }
    /// `true` when [`Endpoint::save_streamed`] works: as a target, this side takes a document
    /// with its contents streamed in the same write.
    fn saves_streamed(&self) -> bool {
        false
    }
    /// The barrel behind this side when it is one of this node's: between two of them,
    /// revisions without attachments are copied as stored.
    fn local(&self) -> Option<&Barrel> {
        None
    }
    /// Of these contents, the ones this side does not have.
    fn missing_contents(&mut self, _digests: &[Md5Digest]) -> Result<Vec<Md5Digest>> {
        Err(contents_unsupported(&self.describe()))
    }
    /// A content, piece by piece, as it is read (never whole in memory).
    fn read_content(&mut self, _content: &ContentRef) -> Result<Chunks<'static>> {
        Err(contents_unsupported(&self.describe()))
    }
    /// Stores the content of stub `meta` (checked against its digest and length), kept until
    /// the next [`Endpoint::save`] stores the documents that refer to it. Returns its length.
    fn write_content(&mut self, _meta: &AttMeta, _chunks: Chunks<'_>) -> Result<u64> {
        Err(contents_unsupported(&self.describe()))
    }
    /// Stores one replicated revision (`new_edits: false`) with the contents `follows` (of its
    /// attachments) read from `source` as they are sent; its other attachments are stubs.
    /// `Some` when refused for a stub naming content this side lacks, as [`Endpoint::save`].
    fn save_streamed(
        &mut self,
        _doc: Value,
        _follows: &[ContentRef],
        _source: &mut dyn Endpoint,
    ) -> Result<Option<MissingStub>> {
        Err(contents_unsupported(&self.describe()))
    }
}

fn contents_unsupported(endpoint: &str) -> Error {
    Error::Internal(format!(
        "{endpoint} does not move attachment contents apart from documents this way"
    ))
}

/// An engine document as CouchDB shows it (`id` becomes `_id`).
pub fn to_couch(mut doc: Body) -> Value {
    if let Some(id) = doc.remove("id") {
        doc.insert("_id".into(), id);
    }
    Value::Object(doc)
}

/// A CouchDB-shaped document as the engine takes it (`_id` becomes `id`); attachments in JSON
/// form (inline base64 `data`, stubs, links).
pub fn from_couch(doc: Map<String, Value>) -> Result<DocInput> {
    Ok(DocInput::from_map(engine_shaped(doc)?)?)
}

fn engine_shaped(mut doc: Map<String, Value>) -> Result<Map<String, Value>> {
    if let Some(id) = doc.remove("_id") {
        if doc.get("id").is_some_and(|other| *other != id) {
            return Err(Error::BadParam(
                "a document with both _id and a different id cannot be stored".into(),
            ));
        }
        doc.insert("id".into(), id);
    }
    Ok(doc)
}

/// [`from_couch`], with the stubs of contents written ahead (`contents`, by digest) taking
/// those contents: each content goes with the first document that refers to it, and the
/// documents after it in the same save find it registered.
fn from_couch_with(
    doc: Map<String, Value>,
    contents: &mut HashMap<Md5Digest, NewBlob>,
) -> Result<DocInput> {
    let mut body = engine_shaped(doc)?;
    let Some(atts) = body.remove(ATTACHMENTS) else {
        return Ok(DocInput::from_map(body)?);
    };
    let mut specs = AttSpec::all_from_json(atts)?;
    for spec in &mut specs {
        if let (AttSource::Stub, Some(d)) = (&spec.source, spec.digest) {
            if let Some(blob) = contents.remove(&d) {
                spec.source = AttSource::Blob(blob);
            }
        }
    }
    Ok(DocInput::from_map_and_attachments(body, specs)?)
}

/// `data` as JSON carries it.
fn base64_value(bytes: Vec<u8>) -> Value {
    Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// The generation of the highest of `ancestors` in the history (`_revisions`) of `doc`:
/// attachments with a higher `revpos` changed after it. `None` when none of them is an
/// ancestor.
fn ancestor_gen(doc: &Body, ancestors: &[Rev]) -> Option<u64> {
    crate::attachment::since_generation(doc, ancestors)
}

/// A CouchDB-shaped document's `_id` (empty when it has none).
pub(crate) fn couch_id(doc: &Value) -> String {
    doc.get("_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Wakes a waiting replication when the local source commits.
#[derive(Default)]
struct Wake {
    changed: Mutex<bool>,
    cond: Condvar,
}

struct WakeSink(Arc<Wake>);

impl ChangeSink for WakeSink {
    fn deliver(&self, _changes: Vec<crate::changes::Change>) -> bool {
        self.poke();
        true
    }
    fn fell_behind(&self) -> bool {
        self.poke();
        true
    }
}

impl WakeSink {
    fn poke(&self) {
        if let Ok(mut c) = self.0.changed.lock() {
            *c = true;
            self.0.cond.notify_all();
        }
    }
}

/// A barrel of this node.
pub struct LocalEndpoint {
    barrel: Barrel,
    live: Option<(Arc<Subscription>, Arc<Wake>)>,
    /// Contents written by [`Endpoint::write_content`], waiting for the next save.
    contents: HashMap<Md5Digest, NewBlob>,
}

impl LocalEndpoint {
    /// The endpoint of `barrel`.
    pub fn new(barrel: Barrel) -> LocalEndpoint {
        LocalEndpoint {
            barrel,
            live: None,
            contents: HashMap::new(),
        }
    }
}

impl Drop for LocalEndpoint {
    fn drop(&mut self) {
        if let Some((sub, _)) = &self.live {
            sub.cancel();
        }
    }
}

impl Endpoint for LocalEndpoint {
    fn describe(&self) -> String {
        format!("local:{}", self.barrel.name())
    }

    fn changes(
        &mut self,
        since: u64,
        limit: usize,
        filter: &[Pattern],
    ) -> Result<(Vec<ChangedDoc>, u64)> {
        let opts = ChangesOptions {
            all_docs: true,
            filter: filter.to_vec(),
            ..Default::default()
        };
        let mut cursor = self.barrel.changes_cursor(since, opts)?;
        let chunk = cursor.next_chunk(limit)?;
        let last = if chunk.len() < limit {
            cursor.update_seq().max(since)
        } else {
            chunk.last().map_or(since, |c| c.seq)
        };
        let docs = chunk
            .into_iter()
            .map(|c| ChangedDoc {
                id: c.id,
                seq: c.seq,
                revs: c.changes,
            })
            .collect();
        Ok((docs, last))
    }

    fn wait_changes(&mut self, since: u64, timeout: Duration) -> Result<()> {
        if self.live.is_none() {
            let wake = Arc::new(Wake::default());
            let sub = self.barrel.subscribe(
                SubscribeOptions {
                    window: usize::MAX / 2,
                    ..Default::default()
                },
                Box::new(WakeSink(wake.clone())),
            )?;
            self.live = Some((sub, wake));
        }
        if self.barrel.info()?.stats.updated_seq > since {
            return Ok(());
        }
        if let Some((sub, wake)) = &self.live {
            let guard = wake
                .changed
                .lock()
                .map_err(|_| Error::Internal("poisoned".into()))?;
            let (mut changed, _) = wake
                .cond
                .wait_timeout_while(guard, timeout, |c| !*c)
                .map_err(|_| Error::Internal("poisoned".into()))?;
            *changed = false;
            sub.ack(usize::MAX / 4);
            sub.resume();
        }
        Ok(())
    }

    fn revs_diff(&mut self, asked: &[(String, Vec<Rev>)]) -> Result<Vec<(String, RevsDiff)>> {
        let mut out = Vec::new();
        for (id, revs) in asked {
            let d = self.barrel.revs_diff(id, revs)?;
            if !d.missing.is_empty() {
                out.push((id.clone(), d));
            }
        }
        Ok(out)
    }

    fn fetch(&mut self, wanted: &[(String, RevsDiff)], atts: AttachmentData) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        for (id, diff) in wanted {
            let list = match self.barrel.fetch_open_revs_latest(
                id,
                &OpenRevs::Revs(diff.missing.clone()),
                true,
                true,
            ) {
                Ok(l) => l,
                Err(Error::NotFound) => continue,
                Err(e) => return Err(e),
            };
            for r in list {
                let OpenRev::Ok(mut doc) = r else { continue };
                let since = match atts {
                    AttachmentData::Stubs => {
                        out.push(to_couch(doc));
                        continue;
                    }
                    AttachmentData::SinceAncestors => ancestor_gen(&doc, &diff.possible_ancestors),
                    AttachmentData::All => None,
                };
                self.barrel
                    .inline_attachments(&mut doc, since, &base64_value)?;
                out.push(to_couch(doc));
            }
        }
        Ok(out)
    }

    fn save(&mut self, docs: Vec<Value>) -> Result<Vec<MissingStub>> {
        let mut ids = Vec::with_capacity(docs.len());
        let inputs = docs
            .into_iter()
            .map(|d| {
                ids.push(couch_id(&d));
                match d {
                    Value::Object(m) => from_couch_with(m, &mut self.contents),
                    _ => Err(Error::BadParam(
                        "a replicated document is not an object".into(),
                    )),
                }
            })
            .collect();
        // Contents no document took are discarded.
        self.contents.clear();
        let results = self
            .barrel
            .save_docs(inputs, &SaveOptions { new_edits: false })?;
        let mut refused = Vec::new();
        for (r, id) in results.into_iter().zip(ids) {
            match r {
                Ok(_) => {}
                Err(Error::MissingStub(reason)) => refused.push(MissingStub { id, reason }),
                Err(e) => return Err(e),
            }
        }
        Ok(refused)
    }

    fn reads_contents(&self) -> bool {
        true
    }

    fn stores_contents(&self) -> bool {
        true
    }

    fn local(&self) -> Option<&Barrel> {
        Some(&self.barrel)
    }

    fn missing_contents(&mut self, digests: &[Md5Digest]) -> Result<Vec<Md5Digest>> {
        let mut out = Vec::new();
        for d in digests {
            if !self.contents.contains_key(d) && !self.barrel.has_attachment_content(d)? {
                out.push(*d);
            }
        }
        Ok(out)
    }

    fn read_content(&mut self, content: &ContentRef) -> Result<Chunks<'static>> {
        let mut reader = self.barrel.open_attachment(&content.meta)?;
        Ok(Box::new(std::iter::from_fn(move || {
            reader.read().transpose()
        })))
    }

    fn write_content(&mut self, meta: &AttMeta, chunks: Chunks<'_>) -> Result<u64> {
        let digest = meta
            .digest
            .ok_or_else(|| Error::BadParam("a linked attachment has no content".into()))?;
        let mut w = self.barrel.attachment_writer()?;
        for c in chunks {
            w.write(&c?)?;
        }
        let label = crate::attachment::digest_string(&digest);
        let blob = w.finish_checked(&label, Some(&digest), Some(meta.length))?;
        let length = blob.length();
        self.contents.insert(digest, blob);
        Ok(length)
    }

    fn get_local(&mut self, id: &str) -> Result<Option<Value>> {
        match self.barrel.get_local(id) {
            Ok(b) => Ok(Some(Value::Object(b))),
            Err(Error::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn put_local(&mut self, id: &str, doc: Value) -> Result<()> {
        let Value::Object(m) = doc else {
            return Err(Error::BadParam("a local document is an object".into()));
        };
        self.barrel.put_local(id, m).map(|_| ())
    }
}

/// A remote database over CouchDB's HTTP replication protocol: a barrel
/// (`http://host:port/barrels/name`) or any CouchDB-compatible database URL, over http or
/// https (Mozilla's root certificates, or the CA given with [`HttpEndpoint::with_ca`]).
pub struct HttpEndpoint {
    base: String,
    agent: ureq3::Agent,
    auth: Option<String>,
}

fn remote(e: impl std::fmt::Display) -> Error {
    Error::Storage(format!("remote: {e}"))
}

/// Installs the process's TLS crypto provider (ring, as the server uses) once.
pub(crate) fn tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The certificates of a PEM file, for a private certificate authority.
fn pem_certs(pem: &[u8]) -> Result<Vec<ureq3::tls::Certificate<'static>>> {
    let certs: Vec<_> = ureq3::tls::parse_pem(pem)
        .filter_map(|item| match item {
            Ok(ureq3::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(Error::BadParam("no certificate in the CA file".into()));
    }
    Ok(certs)
}

fn http_agent(ca: Option<&[u8]>) -> Result<ureq3::Agent> {
    use ureq3::tls::{RootCerts, TlsConfig};
    tls_provider();
    let roots = match ca {
        Some(pem) => RootCerts::new_with_certs(&pem_certs(pem)?),
        None => RootCerts::WebPki,
    };
    let config = ureq3::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(5)))
        .timeout_global(Some(Duration::from_secs(120)))
        .http_status_as_error(false)
        .tls_config(TlsConfig::builder().root_certs(roots).build())
        .build();
    Ok(ureq3::Agent::new_with_config(config))
}

/// Longest JSON answer read. Large contents travel apart and small ones in bounded groups
/// (see [`crate::replicate::run`]), so a batch stays far below; this only stops a runaway
/// answer.
const MAX_ANSWER: u64 = 256 << 20;

/// A JSON answer: its status and body. A body that is not JSON (or is too long) is an error
/// for a success, and `null` otherwise (the status says what went wrong).
fn answer(
    method: &str,
    url: &str,
    mut resp: ureq3::http::Response<ureq3::Body>,
) -> Result<(u16, Value)> {
    let status = resp.status().as_u16();
    match resp
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER)
        .read_json::<Value>()
    {
        Ok(v) => Ok((status, v)),
        Err(e) if (200..300).contains(&status) => Err(remote(format!(
            "{method} {url}: {status}, unreadable answer: {e}"
        ))),
        Err(_) => Ok((status, Value::Null)),
    }
}

/// `s` as one URL path segment: all but unreserved characters percent-encoded, `/` included
/// (`_design/x` and an attachment named `a/b.txt` stay one segment, as CouchDB reads them).
fn path_segment(s: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The time allowed for a request carrying `bytes` of content: the usual two minutes plus a
/// second per 256 KiB, so a stalled transfer fails while a slow link still finishes.
fn stream_timeout(bytes: u64) -> Duration {
    Duration::from_secs(120 + bytes / (256 << 10))
}

/// The next piece of a streamed content: up to one stored chunk, `None` at its end.
fn read_piece(body: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0; CHUNK_SIZE];
    let mut n = 0;
    while n < buf.len() {
        match body.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(n);
    Ok((n > 0).then_some(buf))
}

/// One piece of a [`MultipartBody`]: framing and JSON, or a content read when reached.
enum Piece {
    Bytes(Vec<u8>),
    Content(ContentRef),
}

/// A revision and contents of its attachments as a multipart/related request body (CouchDB's
/// form of `PUT /db/docid`): the JSON, its attachments marked `follows`, then one part per
/// content in the order the JSON names them, each read from the source chunk by chunk as the
/// request goes out.
struct MultipartBody<'a> {
    source: &'a mut dyn Endpoint,
    pieces: std::vec::IntoIter<Piece>,
    /// The content being sent, and how many of its bytes are still to come.
    content: Option<(ContentRef, Chunks<'static>, u64)>,
    buf: Vec<u8>,
    pos: usize,
    /// Total length (the request's `Content-Length`).
    length: u64,
    /// Why reading a content failed, reported instead of the broken request.
    failure: Option<Error>,
}

impl<'a> MultipartBody<'a> {
    fn new(
        source: &'a mut dyn Endpoint,
        boundary: &str,
        json: Vec<u8>,
        contents: Vec<ContentRef>,
    ) -> MultipartBody<'a> {
        use crate::server::multipart::{closing, content_part_head, part_head, JSON, PART_END};
        let mut first = part_head(boundary, &[("Content-Type", JSON)]);
        first.extend(json);
        let mut pieces = vec![Piece::Bytes(first)];
        for c in contents {
            let head = [PART_END, &content_part_head(boundary, &c.name, &c.meta)].concat();
            pieces.push(Piece::Bytes(head));
            pieces.push(Piece::Content(c));
        }
        pieces.push(Piece::Bytes([PART_END, &closing(boundary)].concat()));
        let length = pieces
            .iter()
            .map(|p| match p {
                Piece::Bytes(b) => b.len() as u64,
                Piece::Content(c) => c.meta.length,
            })
            .sum();
        MultipartBody {
            source,
            pieces: pieces.into_iter(),
            content: None,
            buf: Vec::new(),
            pos: 0,
            length,
            failure: None,
        }
    }

    fn fail(&mut self, e: Error) -> std::io::Error {
        let io = std::io::Error::other(e.to_string());
        self.failure = Some(e);
        io
    }

    /// Loads the next bytes to send into `buf`; `false` at the end.
    fn advance(&mut self) -> Result<bool> {
        loop {
            if let Some((c, chunks, left)) = &mut self.content {
                let short = |c: &ContentRef| {
                    Error::from(crate::attachment::bad(
                        &c.name,
                        format!(
                            "the content read is not the {} bytes its stub says",
                            c.meta.length
                        ),
                    ))
                };
                match chunks.next().transpose()? {
                    Some(piece) if piece.len() as u64 > *left => return Err(short(c)),
                    Some(piece) => {
                        *left -= piece.len() as u64;
                        self.buf = piece;
                        self.pos = 0;
                        return Ok(true);
                    }
                    None if *left > 0 => return Err(short(c)),
                    None => self.content = None,
                }
            }
            match self.pieces.next() {
                Some(Piece::Bytes(b)) => {
                    self.buf = b;
                    self.pos = 0;
                    return Ok(true);
                }
                Some(Piece::Content(c)) => {
                    let chunks = self.source.read_content(&c)?;
                    let left = c.meta.length;
                    self.content = Some((c, chunks, left));
                }
                None => return Ok(false),
            }
        }
    }
}

impl Read for MultipartBody<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.buf.len() {
            match self.advance() {
                Ok(true) => {}
                Ok(false) => return Ok(0),
                Err(e) => return Err(self.fail(e)),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl HttpEndpoint {
    /// The database at `url` (no trailing slash needed); `auth` is an `Authorization` header
    /// value.
    pub fn new(url: &str, auth: Option<String>) -> HttpEndpoint {
        let agent = http_agent(None).unwrap_or_else(|_| ureq3::Agent::new_with_defaults());
        HttpEndpoint {
            base: url.trim_end_matches('/').to_string(),
            agent,
            auth,
        }
    }

    /// Trusts the certificate authority in `pem` (a PEM file's bytes) for https, instead of
    /// the public roots.
    pub fn with_ca(mut self, pem: &[u8]) -> Result<HttpEndpoint> {
        self.agent = http_agent(Some(pem))?;
        Ok(self)
    }

    /// `b` with the `Authorization` header, when there is one.
    fn authorized<B>(&self, b: ureq3::RequestBuilder<B>) -> ureq3::RequestBuilder<B> {
        match &self.auth {
            Some(a) => b.header("Authorization", a),
            None => b,
        }
    }

    /// The URL of document `id`.
    fn doc_url(&self, id: &str) -> String {
        format!("{}/{}", self.base, path_segment(id))
    }

    fn json(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
        let url = format!("{}{}", self.base, path);
        macro_rules! send {
            ($builder:expr) => {
                // JSON answers, never multipart (CouchDB sends multipart when asked for it).
                self.authorized($builder.header("Accept", "application/json"))
            };
        }
        let resp = match (method, body) {
            ("GET", _) => send!(self.agent.get(&url)).call(),
            ("DELETE", _) => send!(self.agent.delete(&url)).call(),
            ("PUT", Some(b)) => send!(self.agent.put(&url)).send_json(b),
            ("PUT", None) => send!(self.agent.put(&url)).send_empty(),
            ("POST", Some(b)) => send!(self.agent.post(&url)).send_json(b),
            ("POST", None) => send!(self.agent.post(&url)).send_empty(),
            (m, _) => return Err(Error::Internal(format!("unsupported method {m}"))),
        };
        let resp = resp.map_err(|e| remote(format!("{method} {url}: {e}")))?;
        answer(method, &url, resp)
    }

    fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let (status, v) = self.json(method, path, body)?;
        if (200..300).contains(&status) {
            Ok(v)
        } else {
            Err(remote(format!(
                "{method} {}{path}: {status} {v}",
                self.base
            )))
        }
    }

    /// The winning revision of document `id` with its history, Barrel-shaped (`id`), or
    /// `None` when the remote does not have it (or it is deleted).
    pub fn fetch_doc(&mut self, id: &str) -> Result<Option<Value>> {
        let path = format!("/{}?revs=true&attachments=true", path_segment(id));
        let (status, v) = self.json("GET", &path, None)?;
        match status {
            200..=299 => Ok(Some(match v {
                Value::Object(mut m) => {
                    if let Some(i) = m.remove("_id") {
                        m.insert("id".into(), i);
                    }
                    Value::Object(m)
                }
                other => other,
            })),
            404 => Ok(None),
            s => Err(remote(format!("GET {}{path}: {s} {v}", self.base))),
        }
    }

    /// Fails unless the database answers (a replication source must exist).
    pub fn check_exists(&self) -> Result<()> {
        let (status, v) = self.json("GET", "/", None)?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(remote(format!("GET {}: {status} {v}", self.base)))
        }
    }

    /// Creates the database when it does not exist.
    pub fn ensure_exists(&self) -> Result<()> {
        let (status, _) = self.json("GET", "/", None)?;
        match status {
            200..=299 => Ok(()),
            404 => {
                let (s, v) = self.json("PUT", "/", None)?;
                if (200..300).contains(&s) || s == 412 {
                    Ok(())
                } else {
                    Err(remote(format!("cannot create {}: {s} {v}", self.base)))
                }
            }
            s => Err(remote(format!("GET {}: {s}", self.base))),
        }
    }
}

fn seq_of(v: &Value) -> u64 {
    match v {
        Value::Number(n) => n.as_u64().unwrap_or(0),
        Value::String(s) => s
            .split('-')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
        _ => 0,
    }
}

fn revs_json(revs: &[Rev]) -> Value {
    Value::Array(revs.iter().map(|r| Value::String(r.to_string())).collect())
}

/// A `revs_diff` request: `{"docid": [rev, ...]}`.
fn revs_request(asked: &[(String, Vec<Rev>)]) -> Map<String, Value> {
    asked
        .iter()
        .map(|(id, r)| (id.clone(), revs_json(r)))
        .collect()
}

fn parse_revs(v: &Value) -> Vec<Rev> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r.as_str().and_then(|s| Rev::parse(s).ok()))
                .collect()
        })
        .unwrap_or_default()
}

fn changed_docs(results: &Value) -> Vec<ChangedDoc> {
    results
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter_map(|r| {
                    let id = r.get("id")?.as_str()?.to_string();
                    let revs = r
                        .get("changes")?
                        .as_array()?
                        .iter()
                        .filter_map(|c| c.get("rev")?.as_str().and_then(|s| Rev::parse(s).ok()))
                        .collect();
                    Some(ChangedDoc {
                        id,
                        seq: seq_of(r.get("seq").unwrap_or(&Value::Null)),
                        revs,
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn filter_query(filter: &[Pattern]) -> String {
    filter
        .iter()
        .map(|p| {
            format!(
                "&path={}",
                form_urlencoded::byte_serialize(p.as_str().as_bytes()).collect::<String>()
            )
        })
        .collect()
}

fn missing_of(v: &Value) -> Vec<(String, RevsDiff)> {
    let revs = |e: &Value, k: &str| parse_revs(e.get(k).unwrap_or(&Value::Null));
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(id, e)| {
                    let diff = RevsDiff {
                        missing: revs(e, "missing"),
                        possible_ancestors: revs(e, "possible_ancestors"),
                    };
                    (id.clone(), diff)
                })
                .filter(|(_, d)| !d.missing.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

fn bulk_get_docs(v: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for r in v
        .get("results")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for d in r
            .get("docs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(doc) = d.get("ok") {
                out.push(doc.clone());
            }
        }
    }
    out
}

/// A `_bulk_get` request: `{"docs": [{"id", "rev", "atts_since"?}]}`, `atts_since` (the
/// possible ancestors) when only the attachments changed after them are wanted inline.
fn bulk_get_request(wanted: &[(String, RevsDiff)], atts: AttachmentData) -> Value {
    let docs: Vec<Value> = wanted
        .iter()
        .flat_map(|(id, diff)| {
            diff.missing.iter().map(move |r| {
                let mut d = json!({"id": id, "rev": r.to_string()});
                if atts == AttachmentData::SinceAncestors && !diff.possible_ancestors.is_empty() {
                    d["atts_since"] = revs_json(&diff.possible_ancestors);
                }
                d
            })
        })
        .collect();
    json_object([("docs", Value::Array(docs))])
}

/// The refusals in a `_bulk_docs` answer: `missing_stub` ones returned, any other an error.
fn save_refusals(v: &Value) -> Result<Vec<MissingStub>> {
    let mut refused = Vec::new();
    for r in v.as_array().into_iter().flatten() {
        match r.get("error").and_then(Value::as_str) {
            None => {}
            Some("missing_stub") => refused.push(MissingStub {
                id: r
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                reason: r
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            }),
            Some(_) => return Err(remote(format!("a revision was refused: {r}"))),
        }
    }
    Ok(refused)
}

impl Endpoint for HttpEndpoint {
    fn describe(&self) -> String {
        self.base.clone()
    }

    fn prepare(&mut self, create: bool) -> Result<()> {
        if create {
            self.ensure_exists()
        } else {
            self.check_exists()
        }
    }

    fn changes(
        &mut self,
        since: u64,
        limit: usize,
        filter: &[Pattern],
    ) -> Result<(Vec<ChangedDoc>, u64)> {
        let v = self.ok(
            "GET",
            &format!(
                "/_changes?style=all_docs&since={since}&limit={limit}{}",
                filter_query(filter)
            ),
            None,
        )?;
        let docs = changed_docs(v.get("results").unwrap_or(&Value::Null));
        let last = seq_of(v.get("last_seq").unwrap_or(&Value::Null)).max(since);
        Ok((docs, last))
    }

    fn wait_changes(&mut self, since: u64, timeout: Duration) -> Result<()> {
        let ms = timeout.as_millis().max(1);
        self.ok(
            "GET",
            &format!("/_changes?feed=longpoll&since={since}&limit=1&timeout={ms}"),
            None,
        )
        .map(|_| ())
    }

    fn revs_diff(&mut self, asked: &[(String, Vec<Rev>)]) -> Result<Vec<(String, RevsDiff)>> {
        let req = revs_request(asked);
        Ok(missing_of(&self.ok(
            "POST",
            "/_revs_diff",
            Some(&Value::Object(req)),
        )?))
    }

    fn fetch(&mut self, wanted: &[(String, RevsDiff)], atts: AttachmentData) -> Result<Vec<Value>> {
        let path = match atts {
            AttachmentData::Stubs => "/_bulk_get?revs=true&latest=true",
            _ => "/_bulk_get?revs=true&latest=true&attachments=true",
        };
        let v = self.ok("POST", path, Some(&bulk_get_request(wanted, atts)))?;
        Ok(bulk_get_docs(&v))
    }

    fn save(&mut self, docs: Vec<Value>) -> Result<Vec<MissingStub>> {
        let ids: Vec<String> = docs.iter().map(couch_id).collect();
        let body = json_object([
            ("docs", Value::Array(docs)),
            ("new_edits", Value::Bool(false)),
        ]);
        let (status, v) = self.json("POST", "/_bulk_docs", Some(&body))?;
        match status {
            200..=299 => save_refusals(&v),
            // CouchDB may refuse the whole request for one missing stub.
            412 if v.get("error").and_then(Value::as_str) == Some("missing_stub") => {
                let reason = v
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                Ok(ids
                    .into_iter()
                    .map(|id| MissingStub {
                        id,
                        reason: reason.clone(),
                    })
                    .collect())
            }
            s => Err(remote(format!("POST {}/_bulk_docs: {s} {v}", self.base))),
        }
    }

    fn reads_contents(&self) -> bool {
        true
    }

    fn saves_streamed(&self) -> bool {
        true
    }

    /// `GET /db/docid/attname?rev=`, read as it arrives.
    fn read_content(&mut self, content: &ContentRef) -> Result<Chunks<'static>> {
        let url = format!(
            "{}/{}?rev={}",
            self.doc_url(&content.id),
            path_segment(&content.name),
            content.rev
        );
        let req = self
            .agent
            .get(&url)
            .config()
            .timeout_global(Some(stream_timeout(content.meta.length)))
            .build();
        let resp = self
            .authorized(req)
            .call()
            .map_err(|e| remote(format!("GET {url}: {e}")))?;
        if resp.status().as_u16() != 200 {
            let (status, v) = answer("GET", &url, resp)?;
            return Err(remote(format!("GET {url}: {status} {v}")));
        }
        let mut body = resp.into_body().into_reader();
        Ok(Box::new(std::iter::from_fn(move || {
            read_piece(&mut body)
                .map_err(|e| remote(format!("GET {url}: {e}")))
                .transpose()
        })))
    }

    /// `PUT /db/docid?new_edits=false`, multipart/related, the contents streamed from `source`.
    fn save_streamed(
        &mut self,
        mut doc: Value,
        follows: &[ContentRef],
        source: &mut dyn Endpoint,
    ) -> Result<Option<MissingStub>> {
        let id = couch_id(&doc);
        // The parts follow the order in which the JSON names the attachments.
        let mut parts = Vec::with_capacity(follows.len());
        if let Some(Value::Object(atts)) = doc.get_mut(ATTACHMENTS) {
            for (name, att) in atts.iter_mut() {
                let (Some(c), Value::Object(a)) = (follows.iter().find(|c| c.name == *name), att)
                else {
                    continue;
                };
                a.remove("stub");
                a.remove("data");
                a.insert("follows".into(), Value::Bool(true));
                a.insert("length".into(), json!(c.meta.length));
                parts.push(c.clone());
            }
        }
        if parts.len() != follows.len() {
            return Err(Error::Internal(format!(
                "contents to send with {id} that it has no attachment for"
            )));
        }
        let json = serde_json::to_vec(&doc).map_err(|e| Error::Internal(e.to_string()))?;
        let boundary = crate::server::multipart::new_boundary();
        let mut body = MultipartBody::new(source, &boundary, json, parts);
        let url = format!("{}?new_edits=false", self.doc_url(&id));
        let req = self
            .agent
            .put(&url)
            .config()
            .timeout_global(Some(stream_timeout(body.length)))
            .build()
            .header(
                "Content-Type",
                format!("multipart/related; boundary=\"{boundary}\""),
            )
            .header("Content-Length", body.length.to_string())
            .header("Accept", "application/json");
        let resp = self
            .authorized(req)
            .send(ureq3::SendBody::from_reader(&mut body));
        if let Some(e) = body.failure.take() {
            return Err(e);
        }
        let resp = resp.map_err(|e| remote(format!("PUT {url}: {e}")))?;
        let (status, v) = answer("PUT", &url, resp)?;
        match status {
            200..=299 => Ok(None),
            412 if v.get("error").and_then(Value::as_str) == Some("missing_stub") => {
                let reason = v.get("reason").and_then(Value::as_str).unwrap_or_default();
                Ok(Some(MissingStub {
                    id,
                    reason: reason.to_string(),
                }))
            }
            s => Err(remote(format!("PUT {url}: {s} {v}"))),
        }
    }

    fn get_local(&mut self, id: &str) -> Result<Option<Value>> {
        let (status, v) = self.json("GET", &format!("/_local/{id}"), None)?;
        match status {
            200..=299 => Ok(Some(v)),
            404 => Ok(None),
            s => Err(remote(format!("GET _local/{id}: {s} {v}"))),
        }
    }

    fn put_local(&mut self, id: &str, mut doc: Value) -> Result<()> {
        if let Some(prev) = self.get_local(id)? {
            if let Some(r) = prev.get("_rev") {
                doc["_rev"] = r.clone();
            }
        }
        self.ok("PUT", &format!("/_local/{id}"), Some(&doc))
            .map(|_| ())
    }
}

/// A socket to a remote barrel's stream.
type Socket = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>;

/// A remote barrel over Barrel's WebSocket stream (`ws://host:port/name`, as in the talk, or
/// the full `ws://host:port/barrels/name/_ws`).
pub struct WsEndpoint {
    url: String,
    auth: Option<String>,
    ca: Option<Vec<u8>>,
    socket: Option<Socket>,
    next_id: u64,
    /// The same barrel over HTTP, for the contents that stream apart (made on first use).
    contents: Option<HttpEndpoint>,
}

impl WsEndpoint {
    /// The barrel at `url` (`auth`: an `Authorization` header value); the connection opens on
    /// first use.
    pub fn new(url: &str, auth: Option<String>) -> WsEndpoint {
        WsEndpoint {
            url: ws_url(url),
            auth,
            ca: None,
            socket: None,
            next_id: 0,
            contents: None,
        }
    }

    /// The same barrel over HTTP (`ws://h/barrels/n/_ws` → `http://h/barrels/n`), e.g. to
    /// create it.
    pub fn http(&self) -> Result<HttpEndpoint> {
        let base = self.url.trim_end_matches("/_ws");
        let base = base
            .strip_prefix("wss://")
            .map(|r| format!("https://{r}"))
            .or_else(|| base.strip_prefix("ws://").map(|r| format!("http://{r}")))
            .unwrap_or_else(|| base.to_string());
        let http = HttpEndpoint::new(&base, self.auth.clone());
        match &self.ca {
            Some(pem) => http.with_ca(pem),
            None => Ok(http),
        }
    }

    /// Trusts the certificate authority in `pem` for wss (and for the https calls made to
    /// create the barrel), instead of the public roots.
    pub fn with_ca(mut self, pem: &[u8]) -> Result<WsEndpoint> {
        pem_certs(pem)?;
        self.ca = Some(pem.to_vec());
        self.contents = None;
        Ok(self)
    }

    /// The HTTP endpoint that moves contents apart (the stream carries JSON messages only).
    fn over_http(&mut self) -> Result<&mut HttpEndpoint> {
        let http = match self.contents.take() {
            Some(h) => h,
            None => self.http()?,
        };
        Ok(self.contents.insert(http))
    }

    fn connect(&self) -> Result<Socket> {
        use tungstenite::client::IntoClientRequest;
        let mut req = self.url.as_str().into_client_request().map_err(remote)?;
        if let Some(a) = &self.auth {
            let v = a.parse().map_err(|_| remote("bad authorization header"))?;
            req.headers_mut().insert("Authorization", v);
        }
        tls_provider();
        let connector = match &self.ca {
            Some(pem) if self.url.starts_with("wss://") => {
                let mut roots = rustls::RootCertStore::empty();
                for c in pem_certs(pem)? {
                    let der = rustls::pki_types::CertificateDer::from(c.der().to_vec());
                    roots.add(der).map_err(remote)?;
                }
                let config = rustls::ClientConfig::builder()
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                Some(tungstenite::Connector::Rustls(Arc::new(config)))
            }
            _ => None,
        };
        let host = req.uri().host().unwrap_or_default().to_string();
        let port = req
            .uri()
            .port_u16()
            .unwrap_or(if self.url.starts_with("wss://") {
                443
            } else {
                80
            });
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let stream = std::net::TcpStream::connect((host, port)).map_err(remote)?;
        // Small request frames: without this, Nagle's algorithm held one back until the
        // previous one was acknowledged (tens of milliseconds with delayed ACKs).
        stream.set_nodelay(true).map_err(remote)?;
        let (s, _) =
            tungstenite::client_tls_with_config(req, stream, None, connector).map_err(remote)?;
        Ok(s)
    }

    fn call(&mut self, mut req: Value) -> Result<Value> {
        if self.socket.is_none() {
            self.socket = Some(self.connect()?);
        }
        self.next_id += 1;
        let id = self.next_id;
        req["id"] = json!(id);
        let socket = self
            .socket
            .as_mut()
            .ok_or_else(|| remote("not connected"))?;
        let result = (|| {
            socket
                .send(tungstenite::Message::Text(req.to_string().into()))
                .map_err(remote)?;
            loop {
                let msg = socket.read().map_err(remote)?;
                let tungstenite::Message::Text(t) = msg else {
                    continue;
                };
                let v: Value = serde_json::from_str(t.as_str()).map_err(remote)?;
                if v.get("id") != Some(&json!(id)) {
                    continue;
                }
                if v.get("type").and_then(Value::as_str) == Some("error") {
                    return Err(remote(format!("{}: {}", v["error"], v["reason"])));
                }
                return Ok(v);
            }
        })();
        if result.is_err() {
            // Start over with a new connection next time.
            self.socket = None;
        }
        result
    }
}

/// `ws://host:port/name` → `ws://host:port/barrels/name/_ws`; full URLs are kept.
fn ws_url(url: &str) -> String {
    if url.ends_with("/_ws") {
        return url.to_string();
    }
    let (scheme, rest) = url.split_once("://").unwrap_or(("ws", url));
    match rest.split_once('/') {
        Some((host, path)) if !path.starts_with("barrels/") => {
            format!(
                "{scheme}://{host}/barrels/{}/_ws",
                path.trim_end_matches('/')
            )
        }
        _ => format!("{}/_ws", url.trim_end_matches('/')),
    }
}

impl Endpoint for WsEndpoint {
    fn describe(&self) -> String {
        self.url.clone()
    }

    fn prepare(&mut self, create: bool) -> Result<()> {
        self.http()?.prepare(create)
    }

    fn changes(
        &mut self,
        since: u64,
        limit: usize,
        filter: &[Pattern],
    ) -> Result<(Vec<ChangedDoc>, u64)> {
        let v = self.call(
            json!({"type": "changes", "since": since, "limit": limit, "style": "all_docs",
                                 "path": filter.iter().map(|p| p.as_str()).collect::<Vec<_>>()}),
        )?;
        let docs = changed_docs(v.get("results").unwrap_or(&Value::Null));
        let last = seq_of(v.get("last_seq").unwrap_or(&Value::Null)).max(since);
        Ok((docs, last))
    }

    fn wait_changes(&mut self, since: u64, timeout: Duration) -> Result<()> {
        let ms = timeout.as_millis().max(1) as u64;
        self.call(json!({"type": "wait", "since": since, "timeout": ms}))
            .map(|_| ())
    }

    fn revs_diff(&mut self, asked: &[(String, Vec<Rev>)]) -> Result<Vec<(String, RevsDiff)>> {
        let req = revs_request(asked);
        let v = self.call(json_object([
            ("type", Value::from("revs_diff")),
            ("revs", Value::Object(req)),
        ]))?;
        Ok(missing_of(v.get("result").unwrap_or(&Value::Null)))
    }

    fn fetch(&mut self, wanted: &[(String, RevsDiff)], atts: AttachmentData) -> Result<Vec<Value>> {
        let mut req = bulk_get_request(wanted, atts);
        req["type"] = json!("bulk_get");
        req["revs"] = json!(true);
        req["latest"] = json!(true);
        req["attachments"] = json!(atts != AttachmentData::Stubs);
        let v = self.call(req)?;
        Ok(bulk_get_docs(v.get("result").unwrap_or(&Value::Null)))
    }

    fn save(&mut self, docs: Vec<Value>) -> Result<Vec<MissingStub>> {
        let v = self.call(json_object([
            ("type", Value::from("bulk_docs")),
            ("docs", Value::Array(docs)),
            ("new_edits", Value::Bool(false)),
        ]))?;
        save_refusals(v.get("result").unwrap_or(&Value::Null))
    }

    fn reads_contents(&self) -> bool {
        true
    }

    fn saves_streamed(&self) -> bool {
        true
    }

    fn read_content(&mut self, content: &ContentRef) -> Result<Chunks<'static>> {
        self.over_http()?.read_content(content)
    }

    fn save_streamed(
        &mut self,
        doc: Value,
        follows: &[ContentRef],
        source: &mut dyn Endpoint,
    ) -> Result<Option<MissingStub>> {
        self.over_http()?.save_streamed(doc, follows, source)
    }

    fn get_local(&mut self, id: &str) -> Result<Option<Value>> {
        match self.call(json!({"type": "get_local", "doc_id": id})) {
            Ok(v) => Ok(v.get("doc").cloned()),
            Err(Error::Storage(m)) if m.contains("not_found") => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn put_local(&mut self, id: &str, doc: Value) -> Result<()> {
        self.call(json!({"type": "put_local", "doc_id": id, "doc": doc}))
            .map(|_| ())
    }
}
