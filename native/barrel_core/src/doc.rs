//! Documents: the JSON-object shape Barrel stores, its special members, id rules, the
//! deterministic revision hash, and the stored record of a document (its revision tree and the
//! winning body).
//!
//! Special members: `id` (the document id), `_rev`, `_deleted`, `_revisions` (history, with
//! `new_edits => false`) and `_attachments` (kept in the body). `_conflicts`,
//! `_deleted_conflicts` and `_revs_info` are output-only and ignored on input, so a fetched doc can
//! be saved back. Any other top-level member starting with `_` is refused.

use crate::attachment::{AttSpec, ATTACHMENTS};
use crate::error::DocError;
use crate::revtree::{get_varint, put_varint, Rev, RevTree};
use md5::{Digest, Md5};
use serde_json::{Map, Value};

/// A document body: a JSON object.
pub type Body = Map<String, Value>;

/// Longest accepted document id, in bytes.
pub const MAX_DOC_ID_LEN: usize = 1024;

/// Deepest accepted nesting of objects and arrays in a document.
pub const MAX_DEPTH: usize = 128;

/// Largest accepted encoded document body, in bytes (16 MiB).
pub const MAX_DOC_SIZE: usize = 16 * 1024 * 1024;

/// The document-id member.
pub const ID: &str = "id";
/// The revision member.
pub const REV: &str = "_rev";
/// The deletion flag member.
pub const DELETED: &str = "_deleted";
/// The revision-history member (`{"start": N, "ids": [hash, ...]}`).
pub const REVISIONS: &str = "_revisions";
/// The conflicting-revisions member (output only).
pub const CONFLICTS: &str = "_conflicts";

/// A document as submitted for writing, with its special members taken apart.
#[derive(Debug)]
pub struct DocInput {
    /// The id, or `None` to have one generated.
    pub id: Option<String>,
    /// `_rev`: the revision this edit extends (or, with `new_edits => false`, the revision itself).
    pub rev: Option<Rev>,
    /// `_deleted`: this edit is a tombstone.
    pub deleted: bool,
    /// `_revisions` as a path, newest first, when given.
    pub revisions: Option<Vec<Rev>>,
    /// Everything else, as canonical JSON; encoded (and hashed, see `digest`) when the input is
    /// built, on the caller's thread, so the store's writer thread does as little per document
    /// as it can.
    body: Vec<u8>,
    /// MD5 of `body`, the body's part of the revision hash; `None` until needed when the input
    /// carries its revision history (`_revisions`: a replicated write, which keeps its
    /// revision and never hashes the body).
    digest: Option<[u8; 16]>,
    /// The body's path-index entries (see [`crate::index`]), sorted.
    index: crate::index::Entries,
    /// Attachments given with the write, until [`DocInput::resolve_attachments`] turns them
    /// into stubs (the body is encoded then).
    pending: Option<Box<PendingAtts>>,
    /// Contents written for this revision, registered when it is committed.
    pub(crate) blobs: Vec<crate::attachment::NewBlob>,
    /// The digests this revision's attachments refer to, sorted.
    pub(crate) att_digests: Vec<crate::attachment::Md5Digest>,
}

/// A body whose attachments are not resolved yet.
#[derive(Debug)]
struct PendingAtts {
    body: Body,
    specs: Vec<AttSpec>,
}

impl DocInput {
    /// Splits a JSON object into special members and body, validating each.
    pub fn from_value(v: Value) -> Result<DocInput, DocError> {
        match v {
            Value::Object(m) => DocInput::from_map(m),
            _ => Err(DocError::NotAnObject),
        }
    }

    /// Splits a JSON object into special members and body, validating each. `_attachments`
    /// is read in JSON form (inline `data` in base64; see [`crate::attachment`]).
    pub fn from_map(mut body: Body) -> Result<DocInput, DocError> {
        let specs = match body.remove(ATTACHMENTS) {
            Some(v) => AttSpec::all_from_json(v)?,
            None => Vec::new(),
        };
        DocInput::from_map_and_attachments(body, specs)
    }

    /// [`DocInput::from_map`] with the attachments already taken apart (bindings that carry
    /// raw binary data use this). `body` must not contain `_attachments`.
    pub fn from_map_and_attachments(
        mut body: Body,
        specs: Vec<AttSpec>,
    ) -> Result<DocInput, DocError> {
        let id = match body.remove(ID) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => {
                check_doc_id(&s)?;
                Some(s)
            }
            Some(other) => return Err(DocError::InvalidDocId(other.to_string())),
        };
        let rev = match body.remove(REV) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(Rev::parse(&s)?),
            Some(other) => return Err(DocError::BadRev(other.to_string())),
        };
        let deleted = match body.remove(DELETED) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => b,
            Some(_) => return Err(DocError::BadDeleted),
        };
        let revisions = match body.remove(REVISIONS) {
            None | Some(Value::Null) => None,
            Some(v) => Some(parse_revisions(&v)?),
        };
        if let (Some(path), Some(rev)) = (&revisions, &rev) {
            check_revisions_start(path, rev)?;
        }
        for ignored in [CONFLICTS, "_deleted_conflicts", "_revs_info"] {
            body.remove(ignored);
        }
        if let Some(k) = body.keys().find(|k| k.starts_with('_')) {
            return Err(DocError::ReservedField(k.clone()));
        }
        check_depth(&body)?;
        let mut doc = DocInput {
            id,
            rev,
            deleted,
            revisions,
            body: Vec::new(),
            digest: None,
            index: Default::default(),
            pending: None,
            blobs: Vec::new(),
            att_digests: Vec::new(),
        };
        if specs.is_empty() {
            doc.set_body(&body)?;
        } else {
            doc.pending = Some(Box::new(PendingAtts { body, specs }));
        }
        Ok(doc)
    }

    /// A revision copied as another barrel of this store keeps it: `body` as stored there
    /// (JSON, without the special members), `revisions` its history newest first (starting at
    /// `rev`). Written with `new_edits => false`. The body is neither decoded into values nor
    /// encoded again; its index entries are read straight from the JSON. `Ok(None)` when the
    /// body has attachments (their contents go another way) or is not a JSON object.
    pub fn from_stored(
        id: &str,
        rev: Rev,
        deleted: bool,
        revisions: Vec<Rev>,
        body: Vec<u8>,
    ) -> Result<Option<DocInput>, DocError> {
        check_doc_id(id)?;
        check_revisions_start(&revisions, &rev)?;
        check_size(&body)?;
        let Some(index) = crate::index::json_body_entries(&body)? else {
            return Ok(None);
        };
        Ok(Some(DocInput {
            id: Some(id.to_string()),
            rev: Some(rev),
            deleted,
            revisions: Some(revisions),
            body,
            digest: None,
            index,
            pending: None,
            blobs: Vec::new(),
            att_digests: Vec::new(),
        }))
    }

    /// A local edit whose body a binding encoded itself, for callers that never build the
    /// body's [`Value`]s (the BEAM binding writes the JSON straight from the Erlang terms).
    /// `body` must be exactly what [`encode_body`] writes for the body (members in key order,
    /// no special members, no `_attachments`), and `index` its
    /// [`body_entries`](crate::index::body_entries) (an
    /// [`EntriesBuilder`](crate::index::EntriesBuilder) gives them): the revision hashes the
    /// body's bytes, so other bytes would give another revision id for the same document.
    pub fn from_encoded(
        id: Option<String>,
        rev: Option<Rev>,
        deleted: bool,
        body: Vec<u8>,
        index: crate::index::Entries,
    ) -> Result<DocInput, DocError> {
        if let Some(id) = &id {
            check_doc_id(id)?;
        }
        check_size(&body)?;
        let digest = Some(body_digest(&body));
        Ok(DocInput {
            id,
            rev,
            deleted,
            revisions: None,
            body,
            digest,
            index,
            pending: None,
            blobs: Vec::new(),
            att_digests: Vec::new(),
        })
    }

    fn set_body(&mut self, body: &Body) -> Result<(), DocError> {
        self.index = crate::index::body_entries(body)?;
        self.body = encode_checked(body)?;
        self.digest = self.revisions.is_none().then(|| body_digest(&self.body));
        Ok(())
    }

    /// `true` while attachments given with the write still need
    /// `DocInput::resolve_attachments`.
    pub fn has_pending_attachments(&self) -> bool {
        self.pending.is_some()
    }

    /// Writes inline attachment data as contents and turns every attachment into its stub,
    /// then encodes the body. `gen` is the generation of the revision being written (its
    /// `revpos`); `parent` gives the stubs of the revision this edit extends, for stubs that
    /// lack a digest. [`Barrel::save_docs`](crate::Barrel::save_docs) calls it.
    pub(crate) fn resolve_attachments(
        &mut self,
        store: &std::sync::Arc<crate::store::Store>,
        barrel: &crate::store::BarrelInner,
        gen: u64,
        new_edits: bool,
        parent: &mut crate::attachment::ParentStubs<'_>,
    ) -> crate::error::Result<()> {
        let Some(p) = self.pending.take() else {
            return Ok(());
        };
        let PendingAtts { mut body, specs } = *p;
        let (atts, blobs, digests) =
            crate::attachment::resolve(store, barrel, specs, gen, new_edits, parent)?;
        body.insert(ATTACHMENTS.into(), Value::Object(atts));
        self.set_body(&body)?;
        self.blobs = blobs;
        self.att_digests = digests;
        Ok(())
    }

    /// Takes the encoded body and its index entries out of the input.
    pub(crate) fn into_body_and_index(self) -> (Vec<u8>, crate::index::Entries) {
        (self.body, self.index)
    }

    /// Takes the new attachment contents out of the input (they are registered, or discarded,
    /// by the commit).
    pub(crate) fn take_blobs(&mut self) -> Vec<crate::attachment::NewBlob> {
        std::mem::take(&mut self.blobs)
    }

    /// The body's path-index entries (see [`crate::index`]), sorted.
    pub fn index_entries(&self) -> &crate::index::Entries {
        &self.index
    }

    /// The body (everything but the special members) as canonical JSON.
    pub fn body_json(&self) -> &[u8] {
        &self.body
    }

    /// The revision this input creates when it extends `parent` (see [`rev_hash`]).
    pub fn next_rev(&self, parent: Option<&Rev>) -> Rev {
        let gen = parent.map_or(1, |p| p.gen + 1);
        let digest = self.digest.unwrap_or_else(|| body_digest(&self.body));
        Rev::new(gen, rev_hash(parent, self.deleted, &digest))
    }
}

/// Encodes a body and checks its size.
fn encode_checked(body: &Body) -> Result<Vec<u8>, DocError> {
    let json = encode_body(body);
    check_size(&json)?;
    Ok(json)
}

/// Refuses an encoded body over [`MAX_DOC_SIZE`].
fn check_size(json: &[u8]) -> Result<(), DocError> {
    if json.len() > MAX_DOC_SIZE {
        return Err(DocError::TooLarge(format!(
            "body over {MAX_DOC_SIZE} bytes"
        )));
    }
    Ok(())
}

/// Refuses a `_revisions` path that does not start at the revision it comes with.
fn check_revisions_start(path: &[Rev], rev: &Rev) -> Result<(), DocError> {
    if path.first() != Some(rev) {
        return Err(DocError::BadRevisions(format!(
            "_revisions does not start at _rev {rev}"
        )));
    }
    Ok(())
}

/// The refusal of a document nested deeper than [`MAX_DEPTH`].
pub fn too_deep() -> DocError {
    DocError::TooLarge(format!("nested deeper than {MAX_DEPTH}"))
}

/// MD5 of an encoded body, its part of the revision hash.
fn body_digest(json: &[u8]) -> [u8; 16] {
    Md5::digest(json).into()
}

impl DocInput {
    /// The deletion of revision `rev` of document `id` (what `delete_doc` writes).
    pub fn tombstone(id: &str, rev: Rev) -> Result<DocInput, DocError> {
        check_doc_id(id)?;
        let body = encode_checked(&Body::new())?;
        Ok(DocInput {
            id: Some(id.to_string()),
            rev: Some(rev),
            deleted: true,
            revisions: None,
            digest: Some(body_digest(&body)),
            body,
            index: Default::default(),
            pending: None,
            blobs: Vec::new(),
            att_digests: Vec::new(),
        })
    }
}

/// Checks a document id: 1 to [`MAX_DOC_ID_LEN`] bytes, not starting with `_`, no NUL.
pub fn check_doc_id(id: &str) -> Result<(), DocError> {
    if id.is_empty() || id.len() > MAX_DOC_ID_LEN || id.starts_with('_') || id.contains('\0') {
        return Err(DocError::InvalidDocId(id.to_string()));
    }
    Ok(())
}

/// Parses CouchDB's `{"start": N, "ids": [newest, ..., oldest]}` into revisions, newest first.
pub fn parse_revisions(v: &Value) -> Result<Vec<Rev>, DocError> {
    let bad = |w: &str| DocError::BadRevisions(w.to_string());
    let start = v
        .get("start")
        .and_then(Value::as_u64)
        .filter(|s| *s >= 1)
        .ok_or_else(|| bad("start must be a positive integer"))?;
    let ids = v
        .get("ids")
        .and_then(Value::as_array)
        .filter(|ids| !ids.is_empty())
        .ok_or_else(|| bad("ids must be a non-empty list"))?;
    if ids.len() as u64 > start {
        return Err(bad("more ids than generations"));
    }
    ids.iter()
        .enumerate()
        .map(|(i, h)| {
            let h = h.as_str().ok_or_else(|| bad("ids must be strings"))?;
            Rev::check_hash(h)?;
            Ok(Rev::new(start - i as u64, h))
        })
        .collect()
}

/// Renders a path (newest first) as CouchDB's `_revisions` object.
pub fn revisions_value(path: &[Rev]) -> Value {
    let start = path.first().map_or(0, |r| r.gen);
    let ids: Vec<Value> = path.iter().map(|r| Value::String(r.hash.clone())).collect();
    let mut m = Map::new();
    m.insert("start".into(), Value::from(start));
    m.insert("ids".into(), Value::Array(ids));
    Value::Object(m)
}

fn check_depth(body: &Body) -> Result<(), DocError> {
    fn depth(v: &Value, d: usize) -> bool {
        if d > MAX_DEPTH {
            return false;
        }
        match v {
            Value::Object(m) => m.values().all(|v| depth(v, d + 1)),
            Value::Array(a) => a.iter().all(|v| depth(v, d + 1)),
            _ => true,
        }
    }
    if body.values().all(|v| depth(v, 1)) {
        Ok(())
    } else {
        Err(too_deep())
    }
}

/// A new unique document id: 32 lowercase hex digits, the first 12 from the clock in
/// microseconds (so generated ids sort roughly by creation time), the rest random.
pub fn generate_id() -> String {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let random: u128 = rand::random();
    format!(
        "{:012x}{:020x}",
        micros & 0xffff_ffff_ffff,
        random & ((1u128 << 80) - 1)
    )
}

/// The deterministic revision hash: MD5 over the parent revision, the deletion flag and the
/// MD5 of the body's canonical JSON (keys sorted), as 32 lowercase hex digits. The same edit
/// made on two nodes gets the same revision id, so it does not conflict.
pub fn rev_hash(parent: Option<&Rev>, deleted: bool, body_digest: &[u8; 16]) -> String {
    let mut h = Md5::new();
    if let Some(p) = parent {
        h.update(p.to_string().as_bytes());
    }
    h.update([0u8, u8::from(deleted)]);
    h.update(body_digest);
    crate::hex(&h.finalize())
}

/// Encodes a body as stored: canonical JSON (serde_json's map keeps keys sorted).
pub fn encode_body(body: &Body) -> Vec<u8> {
    // Serializing a map of JSON values cannot fail.
    serde_json::to_vec(body).unwrap_or_default()
}

/// Appends `bytes` as a JSON string, byte for byte as [`encode_body`] writes a string, and
/// returns them as text; `None` (and `out` unchanged) when they are not UTF-8. For encoders of
/// bodies that walk another form than [`Body`] (the BEAM binding walks Erlang terms).
///
/// Most strings are ASCII with nothing to escape: one pass over them finds that out, and they
/// are copied as they are. The others are checked and escaped by `serde_json`. Checking and
/// escaping every string that way, a byte at a time, was about a fifth of converting a 1 KB
/// document term.
pub fn put_json_string<'a>(out: &mut Vec<u8>, bytes: &'a [u8]) -> Option<&'a str> {
    if is_plain_json(bytes) {
        // SAFETY: every byte is below 0x80, and ASCII is UTF-8.
        let text = unsafe { std::str::from_utf8_unchecked(bytes) };
        out.reserve(bytes.len() + 2);
        out.push(b'"');
        out.extend_from_slice(bytes);
        out.push(b'"');
        return Some(text);
    }
    let text = std::str::from_utf8(bytes).ok()?;
    let start = out.len();
    if serde_json::to_writer(&mut *out, text).is_err() {
        out.truncate(start);
        return None;
    }
    Some(text)
}

/// `true` when every byte is ASCII that JSON strings hold as it is: no control character, `"`
/// or `\`. Tests 32 bytes at a time without branching on each, which the compiler vectorizes;
/// the last few bytes (all of most strings) are tested the same way, padded with spaces.
fn is_plain_json(bytes: &[u8]) -> bool {
    fn all_plain(chunk: &[u8; 32]) -> bool {
        !chunk.iter().fold(false, |any, &b| {
            any | !(0x20..0x80).contains(&b) | (b == b'"') | (b == b'\\')
        })
    }
    let mut chunks = bytes.chunks_exact(32);
    for chunk in &mut chunks {
        if !chunk.try_into().is_ok_and(all_plain) {
            return false;
        }
    }
    let rest = chunks.remainder();
    let mut last = [b' '; 32];
    last[..rest.len()].copy_from_slice(rest);
    all_plain(&last)
}

/// Decodes a stored body.
pub fn decode_body(bytes: &[u8]) -> Option<Body> {
    serde_json::from_slice(bytes).ok()
}

/// What the store keeps per document: the revision tree, the sequence of its last change, and the
/// winning revision's body inline (so a plain fetch is one read).
#[derive(Clone, Debug, PartialEq)]
pub struct DocRecord {
    /// The sequence number of the document's latest change.
    pub seq: u64,
    /// The full revision tree.
    pub tree: RevTree,
    /// The encoded body of the winning revision.
    pub winner_body: Vec<u8>,
}

const RECORD_VERSION: u8 = 1;

impl DocRecord {
    /// Serializes the record for the `docs` column family.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.winner_body.len() + 64);
        out.push(RECORD_VERSION);
        put_varint(&mut out, self.seq);
        let mut tree = Vec::new();
        self.tree.encode(&mut tree);
        put_varint(&mut out, tree.len() as u64);
        out.extend_from_slice(&tree);
        out.extend_from_slice(&self.winner_body);
        out
    }

    /// Reads a record written by [`DocRecord::encode`].
    pub fn decode(buf: &[u8]) -> Option<DocRecord> {
        let (seq, tree, body) = DocRecord::decode_parts(buf)?;
        Some(DocRecord {
            seq,
            tree,
            winner_body: body.to_vec(),
        })
    }

    /// [`DocRecord::decode`] without copying the winner's body: the sequence, the tree, and
    /// the body as a slice of `buf`.
    pub fn decode_parts(buf: &[u8]) -> Option<(u64, RevTree, &[u8])> {
        if buf.first() != Some(&RECORD_VERSION) {
            return None;
        }
        let mut pos = 1;
        let seq = get_varint(buf, &mut pos)?;
        let tlen = get_varint(buf, &mut pos)? as usize;
        let end = pos.checked_add(tlen)?;
        let (tree, used) = RevTree::decode(buf.get(pos..end)?)?;
        if used != tlen {
            return None;
        }
        Some((seq, tree, &buf[end..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    proptest! {
        #[test]
        fn stored_floats_read_back_exactly(f in any::<f64>().prop_filter("finite", |f| f.is_finite())) {
            let mut body = Body::new();
            body.insert("f".into(), Value::from(f));
            let back = decode_body(&encode_body(&body)).unwrap();
            prop_assert_eq!(back["f"].as_f64(), Some(f));
        }

        #[test]
        fn json_strings_are_written_as_serde_json_writes_them(
            s in "(\\PC|[\u{0}-\u{1f}\"\\\\\u{7f}\u{2028}])*",
            prefix in "[a-z]{0,3}",
        ) {
            let mut out = prefix.clone().into_bytes();
            prop_assert_eq!(put_json_string(&mut out, s.as_bytes()), Some(s.as_str()));
            let mut expected = prefix.into_bytes();
            expected.extend(serde_json::to_vec(&s).unwrap());
            prop_assert_eq!(out, expected);
        }

        #[test]
        fn bytes_that_are_not_utf8_are_refused_and_not_written(
            bytes in proptest::collection::vec(any::<u8>(), 0..80),
        ) {
            let mut out = b"{".to_vec();
            let written = put_json_string(&mut out, &bytes);
            match std::str::from_utf8(&bytes) {
                Ok(s) => {
                    prop_assert_eq!(written, Some(s));
                    let expected = serde_json::to_vec(s).unwrap();
                    prop_assert_eq!(&out[1..], expected.as_slice());
                }
                Err(_) => {
                    prop_assert_eq!(written, None);
                    prop_assert_eq!(out, b"{".to_vec());
                }
            }
        }
    }

    #[test]
    fn json_strings_of_every_length_around_a_chunk_are_checked_to_the_end() {
        for len in 0..100 {
            for at in 0..len {
                for special in [b'"', b'\\', 0x1f, 0x00, 0xc3] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = special;
                    let mut out = Vec::new();
                    match std::str::from_utf8(&bytes) {
                        Ok(s) => {
                            assert_eq!(put_json_string(&mut out, &bytes), Some(s));
                            assert_eq!(out, serde_json::to_vec(s).unwrap(), "{len} {at}");
                        }
                        Err(_) => assert_eq!(put_json_string(&mut out, &bytes), None),
                    }
                }
            }
        }
    }

    fn input(v: Value) -> Result<DocInput, DocError> {
        DocInput::from_value(v)
    }

    #[test]
    fn special_members_are_split_from_the_body() {
        let d = input(json!({"id": "a", "_rev": "1-ab", "_deleted": true, "k": 1})).unwrap();
        assert_eq!(d.id.as_deref(), Some("a"));
        assert_eq!(d.rev, Some(Rev::new(1, "ab")));
        assert!(d.deleted);
        assert_eq!(d.body_json(), br#"{"k":1}"#);
    }

    #[test]
    fn output_only_members_are_ignored_and_unknown_ones_refused() {
        let d = input(json!({"_conflicts": ["1-a"], "x": 1})).unwrap();
        assert_eq!(d.body_json(), br#"{"x":1}"#);
        assert_eq!(
            input(json!({"_foo": 1})).err(),
            Some(DocError::ReservedField("_foo".into()))
        );
    }

    #[test]
    fn bad_members_are_refused() {
        assert_eq!(input(json!([1])).err(), Some(DocError::NotAnObject));
        assert!(matches!(
            input(json!({"id": 1})),
            Err(DocError::InvalidDocId(_))
        ));
        assert!(matches!(
            input(json!({"id": ""})),
            Err(DocError::InvalidDocId(_))
        ));
        assert!(matches!(
            input(json!({"id": "_x"})),
            Err(DocError::InvalidDocId(_))
        ));
        assert!(matches!(
            input(json!({"_rev": "zz"})),
            Err(DocError::BadRev(_))
        ));
        assert_eq!(
            input(json!({"_deleted": 1})).err(),
            Some(DocError::BadDeleted)
        );
        assert!(matches!(
            input(json!({"_rev": "2-b", "_revisions": {"start": 2, "ids": ["c", "a"]}})),
            Err(DocError::BadRevisions(_))
        ));
    }

    #[test]
    fn revisions_roundtrip() {
        let path = parse_revisions(&json!({"start": 3, "ids": ["c", "b", "a"]})).unwrap();
        assert_eq!(
            path,
            vec![Rev::new(3, "c"), Rev::new(2, "b"), Rev::new(1, "a")]
        );
        assert_eq!(
            revisions_value(&path),
            json!({"start": 3, "ids": ["c", "b", "a"]})
        );
        assert!(parse_revisions(&json!({"start": 1, "ids": ["b", "a"]})).is_err());
    }

    #[test]
    fn too_large_documents_are_refused() {
        let big = "x".repeat(MAX_DOC_SIZE);
        assert!(matches!(
            input(json!({ "big": big })),
            Err(DocError::TooLarge(_))
        ));
    }

    #[test]
    fn too_deep_documents_are_refused() {
        let mut v = json!(1);
        for _ in 0..200 {
            v = json!([v]);
        }
        assert!(matches!(
            input(json!({ "deep": v })),
            Err(DocError::TooLarge(_))
        ));
    }

    #[test]
    fn rev_hash_is_deterministic_and_depends_on_every_input() {
        let a = input(json!({"b": 1, "a": 2})).unwrap();
        let b = input(json!({"a": 2, "b": 1})).unwrap();
        assert_eq!(a.body_json(), b.body_json());
        let p = Rev::new(1, "ab");
        let r = a.next_rev(Some(&p));
        assert_eq!((r.gen, r.hash.len()), (2, 32));
        assert_eq!(r, b.next_rev(Some(&p)));
        assert_ne!(r.hash, a.next_rev(None).hash);
        let deleted = input(json!({"b": 1, "a": 2, "_deleted": true})).unwrap();
        assert_ne!(r, deleted.next_rev(Some(&p)));
        assert_ne!(r, input(json!({})).unwrap().next_rev(Some(&p)));
    }

    #[test]
    fn rev_hashes_are_the_hex_md5_of_parent_deletion_and_digest() {
        // Fixed values (Python's hashlib): revision ids must not change across versions, or
        // the same edit made on two nodes would conflict.
        assert_eq!(
            rev_hash(None, false, &[0; 16]),
            "ff035bff2dcf972ee7dfd023455997ef"
        );
        let digest: [u8; 16] = std::array::from_fn(|i| i as u8);
        assert_eq!(
            rev_hash(Some(&Rev::new(1, "ab")), true, &digest),
            "21a3179539a4b78147b462417f0cc738"
        );
    }

    #[test]
    fn an_input_with_its_history_hashes_its_body_only_when_asked() {
        let plain = input(json!({"a": 1, "_rev": "1-aa"})).unwrap();
        let replicated =
            input(json!({"a": 1, "_rev": "1-aa", "_revisions": {"start": 1, "ids": ["aa"]}}))
                .unwrap();
        assert!(plain.digest.is_some());
        assert!(replicated.digest.is_none());
        let p = Rev::new(1, "aa");
        assert_eq!(plain.next_rev(Some(&p)), replicated.next_rev(Some(&p)));
    }

    #[test]
    fn generated_ids_are_unique_hex() {
        let a = generate_id();
        let b = generate_id();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn record_roundtrip_and_garbage() {
        let mut tree = RevTree::new();
        tree.merge_path(&[Rev::new(2, "b"), Rev::new(1, "a")], false);
        let rec = DocRecord {
            seq: 300,
            tree,
            winner_body: b"{\"x\":1}".to_vec(),
        };
        assert_eq!(DocRecord::decode(&rec.encode()), Some(rec));
        assert_eq!(DocRecord::decode(&[9, 9]), None);
        assert_eq!(DocRecord::decode(&[1, 1, 200]), None);
    }
}
