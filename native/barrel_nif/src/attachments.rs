//! Attachment NIFs: streamed writes (`att_writer_open/8`, `att_writer_write/2`,
//! `att_writer_finish/2`, `att_writer_cancel/1`), streamed reads (`att_reader_open/5`,
//! `att_reader_read/1`), `att_info/4`, `att_fetch/4`, `att_delete/4` and
//! `fetch_doc_attachments/6`; and the reading of a document's `_attachments` term for the
//! document NIFs. Every call that touches contents runs on a dirty I/O scheduler. Options and
//! argument types are checked in `barrel.erl`.

use crate::convert::{extra_terms, json_to_term, pairs_map, pointer_segment, term_to_value_within};
use crate::docs::{decode_id, decode_rev, encode_failure, fetch_options, saved, Failure};
use crate::error;
use crate::guarded;
use crate::store::BarrelRef;
use barrel_core::attachment::{
    self, bad, body_attachments, digest_string, parse_digest, AttMeta, Md5Digest, ATTACHMENTS,
    OCTET_STREAM,
};
use barrel_core::{AttSpec, AttachmentReader, AttachmentWriter, Barrel, DocError, Error, Rev};
use parking_lot::Mutex;
use rustler::types::map::MapIterator;
use rustler::{Atom, Binary, Encoder, Env, NewBinary, Resource, ResourceArc, Term};
use serde_json::Value;

mod atoms {
    rustler::atoms! {
        ok, eof, url, undefined, null, nil, content_type, digest, length, revpos,
    }
}

/// `None` for `undefined`.
fn optional(term: Term) -> Option<Term> {
    (term.decode::<Atom>().ok() != Some(atoms::undefined())).then_some(term)
}

fn decode_name(term: Term) -> Result<String, DocError> {
    term.decode::<String>()
        .map_err(|_| DocError::BadAttachment(format!("{term:?}: names are UTF-8 binaries")))
}

/// A `DocError` about a value inside attachment `name`, with its JSON pointer from the
/// document's root.
fn under(name: &str, e: DocError) -> DocError {
    let at = |p: String| format!("/{ATTACHMENTS}{}{p}", pointer_segment(name));
    match e {
        DocError::InvalidValue(p) => DocError::InvalidValue(at(p)),
        DocError::InvalidKey(p) => DocError::InvalidKey(at(p)),
        other => other,
    }
}

/// Reads a document's `_attachments` term (`null`/`nil` for none): one [`AttSpec`] per member,
/// its `data` a binary taken as the raw content and its other members as JSON (`stub`, `url`,
/// `content_type`, `digest`, `length`, `revpos`). `Ok(None)` when that costs more than what is
/// left of `budget`.
pub(crate) fn attachment_specs_within(
    atts: Term,
    budget: &mut usize,
) -> Result<Option<Vec<AttSpec>>, DocError> {
    if matches!(atts.decode::<Atom>(), Ok(a) if a == atoms::null() || a == atoms::nil()) {
        return Ok(Some(Vec::new()));
    }
    let members = MapIterator::new(atts)
        .ok_or_else(|| DocError::BadAttachment(format!("{ATTACHMENTS} must be a map")))?;
    let mut specs = Vec::new();
    for (key, entry) in members {
        let name = decode_name(key)?;
        if !entry.is_map() {
            return Err(bad(&name, "must be a map"));
        }
        let (rest, raw) = match entry.map_get("data") {
            Ok(data) => {
                let bytes = data
                    .decode::<Binary>()
                    .map_err(|_| bad(&name, "data must be a binary"))?;
                let Some(left) = budget.checked_sub(bytes.len()) else {
                    return Ok(None);
                };
                *budget = left;
                let rest = entry.map_remove("data").unwrap_or(entry);
                (rest, Some(bytes.as_slice().to_vec()))
            }
            Err(_) => (entry, None),
        };
        let Some(Value::Object(rest)) =
            term_to_value_within(rest, budget).map_err(|e| under(&name, e))?
        else {
            return Ok(None);
        };
        specs.push(AttSpec::from_json(&name, &rest, raw)?);
    }
    Ok(Some(specs))
}

/// `#{content_type, revpos}` plus `digest` and `length` for a content stored here, or `url` for
/// a linked attachment: the stub, with atom keys.
fn info_term<'a>(env: Env<'a>, meta: &AttMeta) -> Term<'a> {
    let mut pairs: Vec<(Term, Term)> = vec![
        (
            atoms::content_type().encode(env),
            meta.content_type.encode(env),
        ),
        (atoms::revpos().encode(env), meta.revpos.encode(env)),
    ];
    if let Some(d) = &meta.digest {
        pairs.push((atoms::digest().encode(env), digest_string(d).encode(env)));
        pairs.push((atoms::length().encode(env), meta.length.encode(env)));
    }
    if let Some(u) = &meta.url {
        pairs.push((atoms::url().encode(env), u.encode(env)));
    }
    pairs_map(env, pairs)
}

/// What is left to read, as one binary (built in place, chunk by chunk).
fn read_whole<'a>(env: Env<'a>, reader: &mut AttachmentReader) -> Result<Term<'a>, Error> {
    let size = usize::try_from(reader.remaining())
        .map_err(|_| Error::BadParam("attachment too large to read whole".into()))?;
    let mut bin = NewBinary::new(env, size);
    let mut at = 0;
    while let Some(chunk) = reader.read()? {
        let end = at + chunk.len();
        if end > size {
            return Err(Error::Corrupt("attachment longer than recorded".into()));
        }
        bin.as_mut_slice()[at..end].copy_from_slice(&chunk);
        at = end;
    }
    if at != size {
        return Err(Error::Corrupt("attachment shorter than recorded".into()));
    }
    Ok(Binary::from(bin).to_term(env))
}

/// The attachment a writer is for, checked when it opens.
struct Target {
    id: String,
    rev: Option<Rev>,
    name: String,
    content_type: String,
    digest: Option<Md5Digest>,
    length: Option<u64>,
}

/// An attachment's content being written chunk by chunk; saved with a new revision of its
/// document by `att_writer_finish/1`. Dropped unfinished (cancelled or collected), what was
/// written is deleted.
pub(crate) struct AttWriterRef {
    barrel: ResourceArc<BarrelRef>,
    target: Target,
    /// `None` once finished or cancelled.
    writer: Mutex<Option<AttachmentWriter>>,
}

#[rustler::resource_impl]
impl Resource for AttWriterRef {}

fn writer_done() -> Error {
    Error::BadParam("attachment writer already finished or cancelled".into())
}

/// Starts writing attachment `Name` of `DocId` on top of `Rev` (`undefined`: a new document):
/// `{ok, Writer} | {error, Reason}`. `ContentType`, `Digest` (`md5-<base64>`, checked when the
/// content ends), `Length` (checked likewise) and `Limit` (bytes) may be `undefined`.
#[allow(clippy::too_many_arguments)]
#[rustler::nif(schedule = "DirtyIo")]
fn att_writer_open<'a>(
    env: Env<'a>,
    barrel: ResourceArc<BarrelRef>,
    id: Term<'a>,
    rev: Term<'a>,
    name: Term<'a>,
    content_type: Term<'a>,
    digest: Term<'a>,
    length: Term<'a>,
    limit: Term<'a>,
) -> Term<'a> {
    guarded(env, || {
        let r = (|| {
            let id = decode_id(id)?;
            barrel_core::doc::check_doc_id(&id)?;
            let rev = optional(rev).map(decode_rev).transpose()?;
            let name = decode_name(name)?;
            attachment::check_name(&name)?;
            let content_type = match optional(content_type) {
                None => OCTET_STREAM.to_string(),
                Some(t) => t
                    .decode::<String>()
                    .map_err(|_| bad(&name, "content_type must be a UTF-8 binary"))?,
            };
            let digest = match optional(digest) {
                None => None,
                Some(t) => {
                    let s = t
                        .decode::<String>()
                        .map_err(|_| bad(&name, "digest must be a UTF-8 binary"))?;
                    Some(
                        parse_digest(&s)
                            .ok_or_else(|| bad(&name, format!("malformed digest {s:?}")))?,
                    )
                }
            };
            let number = |t: Term, what: &str| {
                t.decode::<u64>()
                    .map_err(|_| Error::BadParam(format!("{what} must be a non-negative integer")))
            };
            let length = optional(length).map(|t| number(t, "length")).transpose()?;
            let limit = optional(limit).map(|t| number(t, "max_size")).transpose()?;
            let mut writer = barrel.barrel()?.attachment_writer()?;
            if let Some(l) = limit {
                writer = writer.with_limit(l);
            }
            Ok::<_, Failure>(ResourceArc::new(AttWriterRef {
                barrel: barrel.clone(),
                target: Target {
                    id,
                    rev,
                    name,
                    content_type,
                    digest,
                    length,
                },
                writer: Mutex::new(Some(writer)),
            }))
        })();
        match r {
            Ok(w) => (atoms::ok(), w).encode(env),
            Err(f) => encode_failure(env, &f),
        }
    })
}

/// Appends a binary to the content: `ok | {error, Reason}`.
#[rustler::nif(schedule = "DirtyIo")]
fn att_writer_write<'a>(
    env: Env<'a>,
    writer: ResourceArc<AttWriterRef>,
    data: Binary<'a>,
) -> Term<'a> {
    guarded(env, || {
        let r = writer.barrel.barrel().and_then(|_| {
            writer
                .writer
                .lock()
                .as_mut()
                .ok_or_else(writer_done)?
                .write(data.as_slice())
        });
        match r {
            Ok(()) => atoms::ok().encode(env),
            Err(e) => error::encode(env, &e),
        }
    })
}

/// Appends `Last` (a binary, possibly empty), ends the content, checks it against the digest
/// and length given to `att_writer_open/8`, and saves it with a new revision of the document:
/// `{ok, DocId, NewRev} | {error, Reason}`. The writer is done after this call whatever the
/// outcome (what was written is deleted on an error). A whole binary content thus takes two
/// dirty calls: open, then finish with it.
#[rustler::nif(schedule = "DirtyIo")]
fn att_writer_finish<'a>(
    env: Env<'a>,
    writer: ResourceArc<AttWriterRef>,
    last: Binary<'a>,
) -> Term<'a> {
    guarded(env, || {
        let r = (|| {
            let mut w = writer.writer.lock().take().ok_or_else(writer_done)?;
            if !last.is_empty() {
                w.write(last.as_slice())?;
            }
            let t = &writer.target;
            let blob = w.finish_checked(&t.name, t.digest.as_ref(), t.length)?;
            writer.barrel.barrel()?.put_attachment(
                &t.id,
                t.rev.as_ref(),
                &t.name,
                &t.content_type,
                blob,
            )
        })();
        saved(env, &r.map_err(Failure::Engine))
    })
}

/// Abandons the content now (rather than when the handle is collected): `ok`.
#[rustler::nif(schedule = "DirtyIo")]
fn att_writer_cancel(env: Env, writer: ResourceArc<AttWriterRef>) -> Term {
    guarded(env, || {
        drop(writer.writer.lock().take());
        atoms::ok().encode(env)
    })
}

/// An attachment's content being read chunk by chunk.
pub(crate) struct AttReaderRef {
    /// `None` once the end was read: the reader (and its pin on the content) goes then, not
    /// when the resource is garbage collected.
    reader: Mutex<Option<AttachmentReader>>,
}

#[rustler::resource_impl]
impl Resource for AttReaderRef {}

/// The stub of attachment `Name` of `DocId` at `Rev` (`undefined`: the winner).
fn meta_of<'a>(
    barrel: &Barrel,
    id: Term<'a>,
    name: Term<'a>,
    rev: Term<'a>,
) -> Result<AttMeta, Failure<'a>> {
    let id = decode_id(id)?;
    let name = decode_name(name)?;
    let rev = optional(rev).map(decode_rev).transpose()?;
    Ok(barrel.attachment_meta(&id, &name, rev.as_ref())?)
}

/// Opens attachment `Name` of `DocId` (at `Rev`, or the winner when `undefined`) for reading,
/// restricted to `{Start, End}` when `Range` is not `undefined`:
/// `{ok, Reader, Info} | {error, Reason}`. A linked attachment is `not_found`.
#[rustler::nif(schedule = "DirtyIo")]
fn att_reader_open<'a>(
    env: Env<'a>,
    barrel: ResourceArc<BarrelRef>,
    id: Term<'a>,
    name: Term<'a>,
    rev: Term<'a>,
    range: Term<'a>,
) -> Term<'a> {
    guarded(env, || {
        let r = (|| {
            let b = barrel.barrel()?;
            let meta = meta_of(b, id, name, rev)?;
            let mut reader = b.open_attachment(&meta)?;
            if let Some(range) = optional(range) {
                let (start, end): (u64, u64) = range
                    .decode()
                    .map_err(|_| Error::BadParam(format!("bad range {range:?}")))?;
                reader.set_range(start, end);
            }
            Ok::<_, Failure>((reader, meta))
        })();
        match r {
            Ok((reader, meta)) => {
                let info = info_term(env, &meta);
                let res = ResourceArc::new(AttReaderRef {
                    reader: Mutex::new(Some(reader)),
                });
                (atoms::ok(), res, info).encode(env)
            }
            Err(f) => encode_failure(env, &f),
        }
    })
}

/// The next piece of content (at most 128 KiB): `{ok, Binary} | eof | {error, Reason}`.
#[rustler::nif(schedule = "DirtyIo")]
fn att_reader_read(env: Env, reader: ResourceArc<AttReaderRef>) -> Term {
    guarded(env, || {
        let mut slot = reader.reader.lock();
        let Some(r) = slot.as_mut() else {
            return atoms::eof().encode(env);
        };
        match r.read() {
            Ok(Some(chunk)) => {
                let bin = Binary::from(NewBinary::from_slice(env, &chunk));
                (atoms::ok(), bin).encode(env)
            }
            Ok(None) => {
                *slot = None;
                atoms::eof().encode(env)
            }
            Err(e) => error::encode(env, &e),
        }
    })
}

/// `{ok, Info} | {error, Reason}`: the stub of attachment `Name` of `DocId` at `Rev`
/// (`undefined`: the winner).
#[rustler::nif(schedule = "DirtyIo")]
fn att_info<'a>(
    env: Env<'a>,
    barrel: ResourceArc<BarrelRef>,
    id: Term<'a>,
    name: Term<'a>,
    rev: Term<'a>,
) -> Term<'a> {
    guarded(env, || {
        let r = (|| {
            let b = barrel.barrel()?;
            meta_of(b, id, name, rev)
        })();
        match r {
            Ok(meta) => (atoms::ok(), info_term(env, &meta)).encode(env),
            Err(f) => encode_failure(env, &f),
        }
    })
}

/// The whole content of attachment `Name` of `DocId` at `Rev` (`undefined`: the winner):
/// `{ok, Binary}`, `{ok, {url, Url}}` for a linked attachment, or `{error, Reason}`.
#[rustler::nif(schedule = "DirtyIo")]
fn att_fetch<'a>(
    env: Env<'a>,
    barrel: ResourceArc<BarrelRef>,
    id: Term<'a>,
    name: Term<'a>,
    rev: Term<'a>,
) -> Term<'a> {
    guarded(env, || {
        let r = (|| {
            let b = barrel.barrel()?;
            let meta = meta_of(b, id, name, rev)?;
            if let Some(u) = &meta.url {
                return Ok((atoms::url(), u.as_str()).encode(env));
            }
            Ok::<_, Failure>(read_whole(env, &mut b.open_attachment(&meta)?)?)
        })();
        match r {
            Ok(content) => (atoms::ok(), content).encode(env),
            Err(f) => encode_failure(env, &f),
        }
    })
}

/// Removes attachment `Name` of `DocId` with a new revision on top of `Rev`:
/// `{ok, DocId, NewRev} | {error, Reason}`.
#[rustler::nif(schedule = "DirtyIo")]
fn att_delete<'a>(
    env: Env<'a>,
    barrel: ResourceArc<BarrelRef>,
    id: Term<'a>,
    rev: Term<'a>,
    name: Term<'a>,
) -> Term<'a> {
    guarded(env, || {
        let r = (|| {
            let id = decode_id(id)?;
            let rev = decode_rev(rev)?;
            let name = decode_name(name)?;
            Ok(barrel.barrel()?.delete_attachment(&id, &rev, &name)?)
        })();
        saved(env, &r)
    })
}

/// Replaces the stubs (`stubs`, read from the stored body) of a fetched document's attachments
/// by their contents: `data` (a binary) instead of `stub`. Linked attachments stay as they are.
fn with_contents<'a>(
    env: Env<'a>,
    barrel: &Barrel,
    doc: Term<'a>,
    stubs: Vec<(String, AttMeta)>,
) -> Result<Term<'a>, Error> {
    let Ok(mut out) = doc.map_get(ATTACHMENTS) else {
        return Ok(doc);
    };
    let rebuilt = || Error::Internal("attachment entry".into());
    for (name, meta) in stubs.into_iter().filter(|(_, m)| m.sends_content(None)) {
        let data = read_whole(env, &mut barrel.open_attachment(&meta)?)?;
        let entry = out
            .map_get(name.as_str())
            .and_then(|e| e.map_remove("stub"))
            .and_then(|e| e.map_put("data", data))
            .map_err(|_| rebuilt())?;
        out = out.map_put(name.as_str(), entry).map_err(|_| rebuilt())?;
    }
    doc.map_put(ATTACHMENTS, out).map_err(|_| rebuilt())
}

/// `fetch_doc/6` with the contents of the document's attachments in place of their stubs:
/// `{ok, Doc} | {error, Reason}`.
#[rustler::nif(schedule = "DirtyIo")]
fn fetch_doc_attachments<'a>(
    env: Env<'a>,
    barrel: ResourceArc<BarrelRef>,
    id: Term<'a>,
    rev: Term<'a>,
    revs: bool,
    conflicts: bool,
    null: Atom,
) -> Term<'a> {
    guarded(env, || {
        let r = (|| {
            let opts = fetch_options(rev, revs, conflicts)?;
            let b = barrel.barrel()?;
            let id = decode_id(id)?;
            let parts = b.fetch_doc_parts(&id, &opts)?;
            let doc = json_to_term(env, &parts.body, &extra_terms(env, &parts.meta, null), null)
                .map_err(|e| Error::Corrupt(format!("document body: {e}")))?;
            let body = barrel_core::doc::decode_body(&parts.body)
                .ok_or_else(|| Error::Corrupt("document body".into()))?;
            Ok::<_, Failure>(with_contents(env, b, doc, body_attachments(&body))?)
        })();
        match r {
            Ok(doc) => (atoms::ok(), doc).encode(env),
            Err(f) => encode_failure(env, &f),
        }
    })
}
