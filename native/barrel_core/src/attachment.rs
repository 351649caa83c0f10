//! Attachments: binary contents stored with a document revision, or links (URLs) to contents
//! kept elsewhere.
//!
//! A document's attachments live in its body under `_attachments`, one member per name, in
//! CouchDB's stub form:
//!
//! ```json
//! {"_attachments": {"photo.png": {"content_type": "image/png", "digest": "md5-<base64>",
//!                                 "length": 1234, "revpos": 2, "stub": true}}}
//! ```
//!
//! `digest` is `md5-` followed by the base64 MD5 of the content (as CouchDB and PouchDB write
//! it); `revpos` is the generation of the revision that last changed the attachment. A linked
//! attachment has `url` instead of `digest` and `length`.
//!
//! Contents are stored once per barrel and digest (identical contents are shared between
//! revisions and documents), in chunks of [`CHUNK_SIZE`] bytes, and removed when no stored
//! revision (the winner or a conflicting leaf of any document) refers to them any more. Writing
//! goes through an [`AttachmentWriter`] (chunk by chunk; nothing is held whole in memory) whose
//! [`NewBlob`] is then saved with a document revision; reading goes through an
//! [`AttachmentReader`] (chunk by chunk, any byte range).
//!
//! Keys in the `atts` column family, all under the barrel's 8-byte prefix:
//! - `d<md5>` → `<blob id><length>`: the content registered for a digest;
//! - `c<blob id><chunk number>` → bytes: the chunks of a content;
//! - `r<md5><id len><id><rev>` → nothing: revision `rev` of document `id` refers to the digest;
//! - `p<blob id>` → nothing: a content being written and not yet saved with a document (removed
//!   at the next open if the process stopped in between).

use crate::doc::Body;
use crate::error::{DocError, Error, Result};
use crate::revtree::Rev;
use crate::store::{BarrelInner, Store, CF_ATTS};
use base64::Engine;
use md5::{Digest, Md5};
use serde_json::{json, Map, Value};
use std::sync::{Arc, Weak};

/// Bytes per stored chunk of an attachment (128 KiB).
pub const CHUNK_SIZE: usize = 128 * 1024;

/// Largest attachment accepted by default (16 GiB); see [`AttachmentWriter::with_limit`].
pub const DEFAULT_MAX_ATTACHMENT_SIZE: u64 = 16 << 30;

/// Longest attachment name, in bytes.
pub const MAX_NAME_LEN: usize = 1024;

/// The body member holding the attachments.
pub const ATTACHMENTS: &str = "_attachments";

/// The default content type.
pub const OCTET_STREAM: &str = "application/octet-stream";

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// An MD5 digest of an attachment's content.
pub type Md5Digest = [u8; 16];

/// `md5-<base64>`: the digest as written in stubs.
pub fn digest_string(d: &Md5Digest) -> String {
    format!("md5-{}", B64.encode(d))
}

/// Parses `md5-<base64>`; `None` for any other form.
pub fn parse_digest(s: &str) -> Option<Md5Digest> {
    let raw = B64.decode(s.strip_prefix("md5-")?).ok()?;
    raw.try_into().ok()
}

/// What a revision records of one attachment (its stub).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttMeta {
    /// MIME type (default `application/octet-stream`).
    pub content_type: String,
    /// MD5 of the content; `None` for a linked attachment.
    pub digest: Option<Md5Digest>,
    /// Content length in bytes (0 for a linked attachment).
    pub length: u64,
    /// Generation of the revision that last changed the attachment.
    pub revpos: u64,
    /// The URL of a linked attachment.
    pub url: Option<String>,
}

impl AttMeta {
    /// The stub as stored in the body and returned by fetches.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("content_type".into(), json!(self.content_type));
        if let Some(d) = &self.digest {
            m.insert("digest".into(), json!(digest_string(d)));
            m.insert("length".into(), json!(self.length));
        }
        if let Some(u) = &self.url {
            m.insert("url".into(), json!(u));
        }
        m.insert("revpos".into(), json!(self.revpos));
        m.insert("stub".into(), json!(true));
        Value::Object(m)
    }

    /// `true` when content goes with this attachment to an asker that has everything up to
    /// generation `since` (everything when `None`): it has content here (not a link) and
    /// changed after `since` (CouchDB's `atts_since`).
    pub fn sends_content(&self, since: Option<u64>) -> bool {
        self.digest.is_some() && since.is_none_or(|s| self.revpos > s)
    }

    /// Reads a stored stub back.
    pub fn from_json(v: &Value) -> Option<AttMeta> {
        let m = v.as_object()?;
        let content_type = m
            .get("content_type")
            .and_then(Value::as_str)
            .unwrap_or(OCTET_STREAM)
            .to_string();
        let digest = match m.get("digest") {
            Some(d) => Some(parse_digest(d.as_str()?)?),
            None => None,
        };
        let url = m.get("url").and_then(Value::as_str).map(str::to_string);
        if digest.is_none() && url.is_none() {
            return None;
        }
        Some(AttMeta {
            content_type,
            digest,
            length: m.get("length").and_then(Value::as_u64).unwrap_or(0),
            revpos: m.get("revpos").and_then(Value::as_u64).unwrap_or(0),
            url,
        })
    }
}

/// The stubs of a body's `_attachments`, by name (empty when it has none).
pub fn body_attachments(body: &Body) -> Vec<(String, AttMeta)> {
    match body.get(ATTACHMENTS).and_then(Value::as_object) {
        Some(atts) => atts
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), AttMeta::from_json(v)?)))
            .collect(),
        None => Vec::new(),
    }
}

/// The digests a stored body (canonical JSON) refers to, sorted and without repeats. Cheap for
/// bodies without attachments (one substring search).
pub(crate) fn body_digests(json: &[u8]) -> Vec<Md5Digest> {
    if memchr::memmem::find(json, b"\"_attachments\"").is_none() {
        return Vec::new();
    }
    let Some(body) = crate::doc::decode_body(json) else {
        return Vec::new();
    };
    let mut d: Vec<Md5Digest> = body_attachments(&body)
        .into_iter()
        .filter_map(|(_, m)| m.digest)
        .collect();
    d.sort_unstable();
    d.dedup();
    d
}

/// CouchDB's `atts_since`: the generation of the newest of `known` revisions in a fetched
/// document's history (`_revisions`), i.e. what the asker already has; attachments with a
/// greater `revpos` are sent with their content (see
/// [`Barrel::inline_attachments`](crate::Barrel::inline_attachments)). `None` when none of them
/// is an ancestor (or the document carries no history): everything is sent.
pub fn since_generation(doc: &Body, known: &[Rev]) -> Option<u64> {
    if known.is_empty() {
        return None;
    }
    crate::doc::parse_revisions(doc.get(crate::doc::REVISIONS)?)
        .ok()?
        .into_iter()
        .find(|r| known.contains(r))
        .map(|r| r.gen)
}

/// Where an attachment given with a document write comes from.
#[derive(Debug)]
pub enum AttSource {
    /// Its content, whole (inline `data`).
    Data(Vec<u8>),
    /// Content already written through an [`AttachmentWriter`].
    Blob(NewBlob),
    /// A stub: the attachment is unchanged (or, when replicating, already present here).
    Stub,
    /// A link to content kept elsewhere.
    Url(String),
    /// Content that follows in a later part of a multipart request (filled in by the HTTP
    /// layer before the write).
    Follows,
}

/// One attachment of a document write.
#[derive(Debug)]
pub struct AttSpec {
    /// The attachment's name.
    pub name: String,
    /// `content_type`, when given.
    pub content_type: Option<String>,
    /// `digest`, when given (checked against `Data` content).
    pub digest: Option<Md5Digest>,
    /// `length`, when given (checked against `Data` content).
    pub length: Option<u64>,
    /// `revpos`, when given.
    pub revpos: Option<u64>,
    /// The content.
    pub source: AttSource,
}

/// A `bad_attachment` error about attachment `name`.
pub fn bad(name: &str, why: impl std::fmt::Display) -> DocError {
    DocError::BadAttachment(format!("{name}: {why}"))
}

/// Checks an attachment name: 1 to [`MAX_NAME_LEN`] bytes, no leading `_`, no NUL.
pub fn check_name(name: &str) -> std::result::Result<(), DocError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.starts_with('_') || name.contains('\0')
    {
        return Err(bad(name, "invalid attachment name"));
    }
    Ok(())
}

impl AttSpec {
    /// Reads one `_attachments` member: `data` (base64, or `raw` when the binding already has
    /// the bytes), `stub: true`, `url`, or `follows: true`, with optional `content_type`,
    /// `digest`, `length` and `revpos`.
    pub fn from_json(
        name: &str,
        v: &Map<String, Value>,
        raw: Option<Vec<u8>>,
    ) -> std::result::Result<AttSpec, DocError> {
        check_name(name)?;
        let content_type = match v.get("content_type") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(bad(name, "content_type must be a string")),
        };
        let digest = match v.get("digest") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.starts_with("md5-") => {
                Some(parse_digest(s).ok_or_else(|| bad(name, format!("malformed digest {s:?}")))?)
            }
            // Another algorithm (CouchDB may send sha1 etc.): not checked, not kept.
            Some(Value::String(_)) => None,
            Some(_) => return Err(bad(name, "digest must be a string")),
        };
        let number = |k: &str| match v.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(n) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| bad(name, format!("{k} must be a non-negative integer"))),
        };
        let (length, revpos) = (number("length")?, number("revpos")?);
        let flag = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
        let source = if let Some(raw) = raw {
            AttSource::Data(raw)
        } else if let Some(data) = v.get("data") {
            let s = data
                .as_str()
                .ok_or_else(|| bad(name, "data must be a base64 string"))?;
            AttSource::Data(
                B64.decode(s.as_bytes())
                    .map_err(|e| bad(name, format!("data is not valid base64: {e}")))?,
            )
        } else if flag("follows") {
            AttSource::Follows
        } else if flag("stub") && (digest.is_some() || v.get("url").is_none()) {
            AttSource::Stub
        } else if let Some(u) = v.get("url") {
            let u = u
                .as_str()
                .ok_or_else(|| bad(name, "url must be a string"))?;
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(bad(name, "url must be an http(s) URL"));
            }
            AttSource::Url(u.to_string())
        } else {
            return Err(bad(name, "needs data, stub, url or follows"));
        };
        // A stub that says how the sender stores the content (`"encoding": "gzip"`, CouchDB)
        // may carry the digest of the encoded bytes: only the length is checked then, and the
        // content is stored under its own digest.
        let digest = if v.get("encoding").is_some_and(|e| !e.is_null()) {
            None
        } else {
            digest
        };
        if let AttSource::Data(bytes) = &source {
            check_content(name, bytes, digest.as_ref(), length)?;
        }
        Ok(AttSpec {
            name: name.to_string(),
            content_type,
            digest,
            length,
            revpos,
            source,
        })
    }

    /// Reads a whole `_attachments` object (JSON form: data in base64).
    pub fn all_from_json(v: Value) -> std::result::Result<Vec<AttSpec>, DocError> {
        match v {
            Value::Object(m) => m
                .iter()
                .map(|(name, a)| match a {
                    Value::Object(a) => AttSpec::from_json(name, a, None),
                    _ => Err(bad(name, "must be an object")),
                })
                .collect(),
            Value::Null => Ok(Vec::new()),
            _ => Err(DocError::BadAttachment(
                "_attachments must be an object".into(),
            )),
        }
    }
}

/// Checks content against the digest and length announced with it.
fn check_content(
    name: &str,
    bytes: &[u8],
    digest: Option<&Md5Digest>,
    length: Option<u64>,
) -> std::result::Result<(), DocError> {
    // The length first: it needs no hashing.
    check_announced(name, bytes.len() as u64, None, None, length)?;
    match digest {
        Some(d) => check_announced(name, 0, Some(&Md5::digest(bytes).into()), Some(d), None),
        None => Ok(()),
    }
}

/// Checks a content's length and digest (`got`) against those announced with it.
fn check_announced(
    name: &str,
    got_length: u64,
    got_digest: Option<&Md5Digest>,
    digest: Option<&Md5Digest>,
    length: Option<u64>,
) -> std::result::Result<(), DocError> {
    if let Some(l) = length.filter(|l| *l != got_length) {
        return Err(bad(
            name,
            format!("length {l} announced, {got_length} bytes given"),
        ));
    }
    if let (Some(d), Some(got)) = (digest, got_digest) {
        if d != got {
            return Err(bad(
                name,
                format!(
                    "digest {} announced, content has {}",
                    digest_string(d),
                    digest_string(got)
                ),
            ));
        }
    }
    Ok(())
}

/// Key encoding of the `atts` column family.
pub(crate) mod keys {
    use super::Md5Digest;
    use crate::store::keys::prefix;

    pub fn meta(barrel: u64, d: &Md5Digest) -> Vec<u8> {
        [&prefix(barrel)[..], b"d", d].concat()
    }

    /// The prefix of every content registration of a barrel.
    pub fn metas_prefix(barrel: u64) -> Vec<u8> {
        [&prefix(barrel)[..], b"d"].concat()
    }

    pub fn chunk(barrel: u64, blob: u64, n: u64) -> Vec<u8> {
        [
            &prefix(barrel)[..],
            b"c",
            &blob.to_be_bytes(),
            &n.to_be_bytes(),
        ]
        .concat()
    }

    /// The chunk range of a blob: `[start, end)`.
    pub fn chunks(barrel: u64, blob: u64) -> (Vec<u8>, Vec<u8>) {
        let start = [&prefix(barrel)[..], b"c", &blob.to_be_bytes()].concat();
        let end = [
            &prefix(barrel)[..],
            b"c",
            &blob.wrapping_add(1).to_be_bytes(),
        ]
        .concat();
        (start, end)
    }

    pub fn pending(barrel: u64, blob: u64) -> Vec<u8> {
        [&prefix(barrel)[..], b"p", &blob.to_be_bytes()].concat()
    }

    pub fn pending_prefix(barrel: u64) -> Vec<u8> {
        [&prefix(barrel)[..], b"p"].concat()
    }

    pub fn refs_prefix(barrel: u64, d: &Md5Digest) -> Vec<u8> {
        [&prefix(barrel)[..], b"r", d].concat()
    }

    pub fn reference(barrel: u64, d: &Md5Digest, id: &str, rev: &crate::revtree::Rev) -> Vec<u8> {
        let mut k = refs_prefix(barrel, d);
        k.extend_from_slice(&(id.len() as u16).to_be_bytes());
        k.extend_from_slice(id.as_bytes());
        k.extend_from_slice(rev.to_string().as_bytes());
        k
    }
}

/// `true` when barrel `barrel` has content with digest `d` (committed).
pub(crate) fn content_stored(store: &Store, barrel: u64, d: &Md5Digest) -> Result<bool> {
    Ok(store
        .db
        .get_pinned_cf(store.cf(CF_ATTS), keys::meta(barrel, d))?
        .is_some())
}

/// `<blob id><length>`: the value of a digest's registration.
pub(crate) fn encode_meta(blob: u64, length: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&blob.to_be_bytes());
    v[8..].copy_from_slice(&length.to_be_bytes());
    v
}

pub(crate) fn decode_meta(v: &[u8]) -> Option<(u64, u64)> {
    Some((
        u64::from_be_bytes(v.get(..8)?.try_into().ok()?),
        u64::from_be_bytes(v.get(8..16)?.try_into().ok()?),
    ))
}

/// Deletes a blob's chunks and its pending mark (used when a content is abandoned or became
/// a duplicate).
pub(crate) fn discard_into(batch: &mut rocksdb::WriteBatch, store: &Store, barrel: u64, blob: u64) {
    let cf = store.cf(CF_ATTS);
    let (start, end) = keys::chunks(barrel, blob);
    batch.delete_range_cf(cf, start, end);
    batch.delete_cf(cf, keys::pending(barrel, blob));
}

/// Deletes an abandoned content at once (outside any commit).
fn discard_now(store: &Weak<Store>, barrel: u64, blob: u64) {
    if let Some(store) = store.upgrade() {
        let mut batch = rocksdb::WriteBatch::default();
        discard_into(&mut batch, &store, barrel, blob);
        let _ = store.db.write(batch);
    }
}

/// Content written by an [`AttachmentWriter`], waiting to be saved with a document revision.
/// Dropped unsaved, its chunks are deleted.
#[derive(Debug)]
pub struct NewBlob {
    store: Weak<Store>,
    barrel: u64,
    blob: u64,
    digest: Md5Digest,
    length: u64,
    saved: bool,
}

impl NewBlob {
    /// MD5 of the content.
    pub fn digest(&self) -> Md5Digest {
        self.digest
    }

    /// Length in bytes.
    pub fn length(&self) -> u64 {
        self.length
    }

    pub(crate) fn barrel(&self) -> u64 {
        self.barrel
    }

    pub(crate) fn blob(&self) -> u64 {
        self.blob
    }

    /// Marks the content as taken over by a commit (registered or discarded in its batch).
    pub(crate) fn mark_saved(&mut self) {
        self.saved = true;
    }
}

impl Drop for NewBlob {
    fn drop(&mut self) {
        if self.saved {
            return;
        }
        discard_now(&self.store, self.barrel, self.blob);
    }
}

/// Writes one attachment's content chunk by chunk, computing its digest and length.
///
/// ```no_run
/// # fn main() -> barrel_core::Result<()> {
/// # let store = barrel_core::Store::open("/tmp/x", &Default::default())?;
/// # let barrel = store.open_barrel("b")?;
/// let mut w = barrel.attachment_writer()?;
/// w.write(b"hello ")?;
/// w.write(b"world")?;
/// let blob = w.finish()?;
/// let (id, rev) = barrel.put_attachment("doc", None, "greeting.txt", "text/plain", blob)?;
/// # Ok(()) }
/// ```
pub struct AttachmentWriter {
    store: Weak<Store>,
    barrel: u64,
    blob: u64,
    buf: Vec<u8>,
    chunk: u64,
    md5: Md5,
    length: u64,
    limit: u64,
    done: bool,
}

impl std::fmt::Debug for AttachmentWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachmentWriter")
            .field("length", &self.length)
            .finish()
    }
}

impl AttachmentWriter {
    pub(crate) fn start(store: &Arc<Store>, barrel: &BarrelInner) -> Result<AttachmentWriter> {
        let blob: u64 = rand::random();
        store
            .db
            .put_cf(store.cf(CF_ATTS), keys::pending(barrel.id, blob), [])?;
        Ok(AttachmentWriter {
            store: Arc::downgrade(store),
            barrel: barrel.id,
            blob,
            buf: Vec::with_capacity(CHUNK_SIZE),
            chunk: 0,
            md5: Md5::new(),
            length: 0,
            limit: DEFAULT_MAX_ATTACHMENT_SIZE,
            done: false,
        })
    }

    /// Refuses content longer than `limit` bytes with [`Error::AttachmentTooLarge`].
    pub fn with_limit(mut self, limit: u64) -> AttachmentWriter {
        self.limit = limit;
        self
    }

    /// Bytes written so far.
    pub fn length(&self) -> u64 {
        self.length
    }

    fn store(&self) -> Result<Arc<Store>> {
        let s = self.store.upgrade().ok_or(Error::Closed)?;
        if s.is_closing() {
            return Err(Error::Closed);
        }
        Ok(s)
    }

    fn flush_chunk(&mut self, store: &Store) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        store.db.put_cf(
            store.cf(CF_ATTS),
            keys::chunk(self.barrel, self.blob, self.chunk),
            &self.buf,
        )?;
        self.chunk += 1;
        self.buf.clear();
        Ok(())
    }

    /// Appends bytes; every full chunk goes to storage at once.
    pub fn write(&mut self, mut data: &[u8]) -> Result<()> {
        if self.length + data.len() as u64 > self.limit {
            return Err(Error::AttachmentTooLarge(self.limit));
        }
        let store = self.store()?;
        self.md5.update(data);
        self.length += data.len() as u64;
        while !data.is_empty() {
            let room = CHUNK_SIZE - self.buf.len();
            let take = room.min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == CHUNK_SIZE {
                self.flush_chunk(&store)?;
            }
        }
        Ok(())
    }

    /// Ends the content: the result is saved with a revision by
    /// [`Barrel::put_attachment`](crate::Barrel::put_attachment) or as the source of an
    /// [`AttSpec`].
    pub fn finish(mut self) -> Result<NewBlob> {
        let store = self.store()?;
        self.flush_chunk(&store)?;
        self.done = true;
        let md5 = std::mem::take(&mut self.md5);
        Ok(NewBlob {
            store: self.store.clone(),
            barrel: self.barrel,
            blob: self.blob,
            digest: md5.finalize().into(),
            length: self.length,
            saved: false,
        })
    }

    /// Checks the finished content against a digest and length announced by the sender
    /// (e.g. HTTP `Content-MD5`); on a mismatch the content is discarded.
    pub fn finish_checked(
        self,
        name: &str,
        digest: Option<&Md5Digest>,
        length: Option<u64>,
    ) -> Result<NewBlob> {
        let blob = self.finish()?;
        check_announced(name, blob.length, Some(&blob.digest), digest, length)?;
        Ok(blob)
    }
}

impl Drop for AttachmentWriter {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        discard_now(&self.store, self.barrel, self.blob);
    }
}

/// Reads one attachment's content (or a byte range of it) chunk by chunk.
pub struct AttachmentReader {
    store: Weak<Store>,
    barrel: Arc<BarrelInner>,
    blob: u64,
    pos: u64,
    end: u64,
    /// The attachment's stub.
    pub meta: AttMeta,
}

impl std::fmt::Debug for AttachmentReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachmentReader")
            .field("meta", &self.meta)
            .field("pos", &self.pos)
            .field("end", &self.end)
            .finish()
    }
}

/// Contents being read, which the collection after a commit must leave alone until their
/// readers are done. A reader pins its content before it looks it up, and the collection checks
/// the pins and deletes under the same lock: either the reader finds nothing (the content was
/// already removed) or the content stays until the reader is dropped, which then asks the writer
/// to collect it.
#[derive(Default)]
pub(crate) struct Pins {
    inner: parking_lot::Mutex<PinTable>,
}

#[derive(Default)]
pub(crate) struct PinTable {
    readers: std::collections::HashMap<(u64, Md5Digest), usize>,
    /// Pinned contents that lost their last reference meanwhile.
    deferred: std::collections::HashSet<(u64, Md5Digest)>,
}

impl PinTable {
    /// `true` when content `d` of `barrel` is being read; it is then collected when its last
    /// reader goes.
    pub(crate) fn defer_if_pinned(&mut self, barrel: u64, d: Md5Digest) -> bool {
        if self.readers.contains_key(&(barrel, d)) {
            self.deferred.insert((barrel, d));
            true
        } else {
            false
        }
    }
}

impl Pins {
    pub(crate) fn lock(&self) -> parking_lot::MutexGuard<'_, PinTable> {
        self.inner.lock()
    }

    fn pin(&self, barrel: u64, d: Md5Digest) {
        *self.inner.lock().readers.entry((barrel, d)).or_insert(0) += 1;
    }

    /// Unpins; `true` when the content lost its last reference while pinned and must now be
    /// collected.
    fn unpin(&self, barrel: u64, d: Md5Digest) -> bool {
        let mut t = self.inner.lock();
        match t.readers.get_mut(&(barrel, d)) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                t.readers.remove(&(barrel, d));
                t.deferred.remove(&(barrel, d))
            }
            None => false,
        }
    }
}

impl AttachmentReader {
    pub(crate) fn open(
        store: &Arc<Store>,
        barrel: &Arc<BarrelInner>,
        meta: AttMeta,
    ) -> Result<AttachmentReader> {
        let digest = meta.digest.ok_or(Error::NotFound)?;
        store.att_pins.pin(barrel.id, digest);
        let found = (|| {
            // Missing: the revision naming it was replaced and its content removed meanwhile.
            let raw = store
                .db
                .get_cf(store.cf(CF_ATTS), keys::meta(barrel.id, &digest))?
                .ok_or(Error::NotFound)?;
            decode_meta(&raw).ok_or_else(|| Error::Corrupt("attachment registration".into()))
        })();
        let (blob, length) = match found {
            Ok(f) => f,
            Err(e) => {
                if store.att_pins.unpin(barrel.id, digest) {
                    collect_later(store, barrel, digest);
                }
                return Err(e);
            }
        };
        Ok(AttachmentReader {
            store: Arc::downgrade(store),
            barrel: barrel.clone(),
            blob,
            pos: 0,
            end: length,
            meta,
        })
    }

    /// Restricts reading to bytes `start..end` (clamped to the content).
    pub fn set_range(&mut self, start: u64, end: u64) {
        let len = self.meta.length;
        self.end = end.min(len);
        self.pos = start.min(self.end);
    }

    /// Bytes left to read.
    pub fn remaining(&self) -> u64 {
        self.end - self.pos
    }

    /// The next piece of content (at most one chunk), or `None` at the end.
    pub fn read(&mut self) -> Result<Option<Vec<u8>>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let store = self.store.upgrade().ok_or(Error::Closed)?;
        let n = self.pos / CHUNK_SIZE as u64;
        let chunk = store
            .db
            .get_pinned_cf(store.cf(CF_ATTS), keys::chunk(self.barrel.id, self.blob, n))?
            .ok_or_else(|| {
                Error::Corrupt(format!(
                    "chunk {n} of {} missing",
                    digest_string(&self.meta.digest.unwrap_or_default())
                ))
            })?;
        let off = (self.pos % CHUNK_SIZE as u64) as usize;
        let take = ((self.end - self.pos) as usize).min(chunk.len().saturating_sub(off));
        if take == 0 {
            return Err(Error::Corrupt("attachment shorter than recorded".into()));
        }
        self.pos += take as u64;
        Ok(Some(chunk[off..off + take].to_vec()))
    }

    /// Reads everything left into one buffer.
    pub fn read_to_end(&mut self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.remaining() as usize);
        while let Some(c) = self.read()? {
            out.extend_from_slice(&c);
        }
        Ok(out)
    }
}

impl Drop for AttachmentReader {
    fn drop(&mut self) {
        let Some(d) = self.meta.digest else { return };
        if let Some(store) = self.store.upgrade() {
            if store.att_pins.unpin(self.barrel.id, d) {
                collect_later(&store, &self.barrel, d);
            }
        }
    }
}

/// Asks the writer to remove content `d` if nothing refers to it (after its last reader).
fn collect_later(store: &Store, barrel: &Arc<BarrelInner>, d: Md5Digest) {
    store.committer.submit_with(
        crate::commit::Op::Collect {
            barrel: barrel.clone(),
            digest: d,
        },
        Box::new(|_| {}),
    );
}

/// Where [`resolve`] finds the stubs of the revision a write extends.
pub(crate) type ParentStubs<'a> = dyn FnMut() -> Result<Vec<(String, AttMeta)>> + 'a;

/// What [`resolve`] gives: the `_attachments` object, the new contents, the digests referred to.
pub(crate) type Resolved = (Map<String, Value>, Vec<NewBlob>, Vec<Md5Digest>);

/// Turns a write's attachment specs into stubs: inline data is written as content, stubs are
/// completed from the parent revision when they lack a digest. Returns the `_attachments`
/// object, the new contents, and the digests the revision refers to.
pub(crate) fn resolve(
    store: &Arc<Store>,
    barrel: &BarrelInner,
    specs: Vec<AttSpec>,
    gen: u64,
    new_edits: bool,
    parent: &mut ParentStubs<'_>,
) -> Result<Resolved> {
    let mut out = Map::new();
    let mut blobs = Vec::new();
    let mut digests = Vec::new();
    let mut parent_stubs: Option<Vec<(String, AttMeta)>> = None;
    for spec in specs {
        let revpos = |given: Option<u64>| if new_edits { gen } else { given.unwrap_or(gen) };
        let ct = spec
            .content_type
            .clone()
            .unwrap_or_else(|| OCTET_STREAM.to_string());
        let meta = match spec.source {
            // Inline data was checked against its digest and length when it was read.
            AttSource::Data(bytes) => {
                let mut w = AttachmentWriter::start(store, barrel)?;
                w.write(&bytes)?;
                new_content(w.finish()?, ct, revpos(spec.revpos), &mut blobs)
            }
            AttSource::Blob(blob) => {
                check_announced(
                    &spec.name,
                    blob.length,
                    Some(&blob.digest),
                    spec.digest.as_ref(),
                    spec.length,
                )?;
                new_content(blob, ct, revpos(spec.revpos), &mut blobs)
            }
            // A link keeps the revpos it comes with (a fetched stub saved back).
            AttSource::Url(u) => AttMeta {
                content_type: ct,
                digest: None,
                length: 0,
                revpos: spec.revpos.unwrap_or(gen),
                url: Some(u),
            },
            AttSource::Stub => {
                // A complete stub (digest and revpos) naming content stored here stands for
                // itself; otherwise the attachment of that name is taken from the revision
                // edited or, replicated, the nearest stored ancestor (CouchDB's rule: a
                // gzip-encoded attachment's digest is that of the encoded bytes, unknown here).
                let known = match spec.digest {
                    Some(d) if !new_edits => content_stored(store, barrel.id, &d)?,
                    Some(_) => spec.revpos.is_some(),
                    None => false,
                };
                let inherited = if !known {
                    if parent_stubs.is_none() {
                        parent_stubs = Some(parent()?);
                    }
                    parent_stubs
                        .as_ref()
                        .and_then(|p| p.iter().find(|(n, _)| *n == spec.name))
                        .map(|(_, m)| m.clone())
                } else {
                    None
                };
                match (inherited, spec.digest) {
                    (Some(m), _) => m,
                    (None, Some(d)) => AttMeta {
                        content_type: ct,
                        digest: Some(d),
                        length: spec.length.unwrap_or(0),
                        revpos: spec.revpos.unwrap_or(gen),
                        url: None,
                    },
                    (None, None) => return Err(Error::MissingStub(spec.name.clone())),
                }
            }
            AttSource::Follows => {
                return Err(bad(&spec.name, "follows without a multipart part").into());
            }
        };
        if let Some(d) = meta.digest {
            digests.push(d);
        }
        out.insert(spec.name, meta.to_json());
    }
    digests.sort_unstable();
    digests.dedup();
    Ok((out, blobs, digests))
}

/// The stub of content written for a revision; the content joins `blobs`, registered with it.
fn new_content(
    blob: NewBlob,
    content_type: String,
    revpos: u64,
    blobs: &mut Vec<NewBlob>,
) -> AttMeta {
    let meta = AttMeta {
        content_type,
        digest: Some(blob.digest),
        length: blob.length,
        revpos,
        url: None,
    };
    blobs.push(blob);
    meta
}

/// The reference keys recording that revision `rev` of document `id` refers to `digests`.
pub(crate) fn reference_keys(
    barrel: u64,
    id: &str,
    rev: &Rev,
    digests: &[Md5Digest],
) -> Vec<Vec<u8>> {
    digests
        .iter()
        .map(|d| keys::reference(barrel, d, id, rev))
        .collect()
}
