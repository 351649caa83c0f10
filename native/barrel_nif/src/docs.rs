//! Document NIFs: `save_doc/3`, `save_docs/3`, `delete_doc/3`, `fetch_doc/6`,
//! `fetch_doc_cached/6`,
//! `fetch_open_revs/5`, `fold_docs_chunk/6`. Argument checking and option defaults live in
//! `barrel.erl`; these decode, call the engine and encode.
//!
//! Documents with `_attachments` are saved by the dirty NIFs only: writing inline contents (and
//! reading the stubs of the parent revision) is I/O on the calling thread.

use crate::attachments::attachment_specs_within;
use crate::convert::{
    extra_terms, json_to_term, map_to_term, pairs_map, term_to_value_within, Extra,
};
use crate::doc_json::{self, Encoded};
use crate::error;
use crate::guarded;
use crate::store::BarrelRef;
use barrel_core::attachment::ATTACHMENTS;
use barrel_core::SaveResults;
use barrel_core::{
    DocInput, DocParts, Error, FetchOptions, FoldOptions, OpenRev, OpenRevs, Rev, SaveOptions,
};
use parking_lot::Mutex;
use rustler::{Atom, Encoder, Env, LocalPid, OwnedEnv, ResourceArc, Term};
use serde_json::Value;
use std::ops::{Bound, ControlFlow};
use std::sync::Arc;

mod atoms {
    rustler::atoms! {
        ok, error, missing, all, undefined, inclusive, exclusive, invalid_doc_id, bad_rev, null,
        would_block, same, elsewhere, different,
    }
}

/// Why a call failed: an engine error, or an argument refused as the caller gave it (so
/// `{invalid_doc_id, 1}` shows the `1`, not a rendering of it).
pub(crate) enum Failure<'a> {
    Engine(Error),
    BadTerm(Atom, Term<'a>),
}

impl From<Error> for Failure<'_> {
    fn from(e: Error) -> Self {
        Failure::Engine(e)
    }
}

impl From<barrel_core::DocError> for Failure<'_> {
    fn from(e: barrel_core::DocError) -> Self {
        Failure::Engine(e.into())
    }
}

pub(crate) fn encode_failure<'a>(env: Env<'a>, f: &Failure<'a>) -> Term<'a> {
    match f {
        Failure::Engine(e) => error::encode(env, e),
        Failure::BadTerm(reason, term) => (atoms::error(), (*reason, *term)).encode(env),
    }
}

/// Requires `term` to be a UTF-8 binary, else `{Reason, Term}`.
fn utf8<'a>(term: Term<'a>, reason: Atom) -> Result<String, Failure<'a>> {
    term.decode::<String>()
        .map_err(|_| Failure::BadTerm(reason, term))
}

fn rev_term<'a>(env: Env<'a>, rev: &Rev) -> Term<'a> {
    rev.to_string().encode(env)
}

/// What a normal scheduler may spend converting documents before it hands the call to a dirty
/// scheduler instead (about one unit per byte: roughly 100 µs of work).
const NORMAL_BUDGET: usize = 64 * 1024;

fn decode_doc(term: Term) -> Result<DocInput, Failure> {
    let mut unlimited = usize::MAX;
    decode_doc_within(term, &mut unlimited)?
        .ok_or_else(|| Failure::Engine(Error::Internal("unbounded conversion stopped".into())))
}

/// Decodes a document unless that costs more than what is left of `budget` (`Ok(None)`).
fn decode_doc_within<'a>(
    term: Term<'a>,
    budget: &mut usize,
) -> Result<Option<DocInput>, Failure<'a>> {
    if !term.is_map() {
        return Err(barrel_core::DocError::NotAnObject.into());
    }
    match doc_json::encode_doc(term, budget) {
        Encoded::Doc(doc) => Ok(Some(doc)),
        Encoded::OverBudget => Ok(None),
        Encoded::Elsewhere => decode_doc_general(term, budget),
    }
}

/// [`decode_doc_within`] through `serde_json` values: every document, and the precise reason
/// for a refused one.
fn decode_doc_general<'a>(
    term: Term<'a>,
    budget: &mut usize,
) -> Result<Option<DocInput>, Failure<'a>> {
    if !term.is_map() {
        return Err(barrel_core::DocError::NotAnObject.into());
    }
    // `id` and `_rev` of the wrong type are reported as given.
    for (key, reason) in [("id", atoms::invalid_doc_id()), ("_rev", atoms::bad_rev())] {
        if let Ok(v) = term.map_get(key) {
            let is_null = v.decode::<Atom>().ok() == Some(atoms::null());
            if !is_null {
                utf8(v, reason)?;
            }
        }
    }
    // `_attachments` is read apart: its `data` are raw binaries, not base64 strings.
    let (body, attachments) = match term.map_get(ATTACHMENTS) {
        Ok(atts) => (term.map_remove(ATTACHMENTS).unwrap_or(term), Some(atts)),
        Err(_) => (term, None),
    };
    let Some(Value::Object(body)) = term_to_value_within(body, budget)? else {
        return Ok(None);
    };
    let specs = match attachments {
        Some(atts) => match attachment_specs_within(atts, budget)? {
            Some(specs) => specs,
            None => return Ok(None),
        },
        None => Vec::new(),
    };
    Ok(Some(DocInput::from_map_and_attachments(body, specs)?))
}

/// For the test suite: converts `doc` both through `doc_json` and through the general
/// conversion. `same` when both give the same document (id, `_rev`, `_deleted`, body bytes and
/// index entries), `elsewhere` when `doc_json` does not take it, else `{different, Direct,
/// General}` (the two body JSONs, or the general conversion's error).
#[rustler::nif(schedule = "DirtyCpu")]
fn doc_encoding_check<'a>(env: Env<'a>, doc: Term<'a>) -> Term<'a> {
    guarded(env, || {
        let (mut unlimited, mut unlimited_too) = (usize::MAX, usize::MAX);
        let direct = match doc_json::encode_doc(doc, &mut unlimited) {
            Encoded::Doc(d) => d,
            _ => return atoms::elsewhere().encode(env),
        };
        let body = |d: &DocInput| String::from_utf8_lossy(d.body_json()).into_owned();
        match decode_doc_general(doc, &mut unlimited_too) {
            Ok(Some(general))
                if direct.id == general.id
                    && direct.rev.as_ref().map(Rev::to_string)
                        == general.rev.as_ref().map(Rev::to_string)
                    && direct.deleted == general.deleted
                    && direct.body_json() == general.body_json()
                    && direct.index_entries() == general.index_entries() =>
            {
                atoms::same().encode(env)
            }
            Ok(Some(general)) => (atoms::different(), body(&direct), body(&general)).encode(env),
            Ok(None) => (atoms::different(), body(&direct), atoms::would_block()).encode(env),
            Err(f) => (atoms::different(), body(&direct), encode_failure(env, &f)).encode(env),
        }
    })
}

/// `true` when a document term has attachments: saving it writes their contents (or reads the
/// parent revision's stubs), which only a dirty scheduler may do.
fn has_attachments(doc: Term) -> bool {
    doc.map_get(ATTACHMENTS)
        .is_ok_and(|atts| atts.map_size().map_or(true, |n| n > 0))
}

pub(crate) fn decode_rev(term: Term) -> Result<Rev, Failure> {
    Ok(Rev::parse(&utf8(term, atoms::bad_rev())?)?)
}

fn save_options(new_edits: bool) -> SaveOptions {
    SaveOptions { new_edits }
}

pub(crate) fn saved<'a>(env: Env<'a>, r: &Result<(String, Rev), Failure<'a>>) -> Term<'a> {
    match r {
        Ok((id, rev)) => (atoms::ok(), id.as_str(), rev_term(env, rev)).encode(env),
        Err(f) => encode_failure(env, f),
    }
}

/// `{ok, DocId, Rev} | {error, Reason}`.
#[rustler::nif(schedule = "DirtyIo")]
fn save_doc<'a>(
    env: Env<'a>,
    barrel: ResourceArc<BarrelRef>,
    doc: Term<'a>,
    new_edits: bool,
) -> Term<'a> {
    guarded(env, || {
        let r = (|| {
            let doc = decode_doc(doc)?;
            Ok(barrel.barrel()?.save_doc(doc, &save_options(new_edits))?)
        })();
        saved(env, &r)
    })
}

/// `{ok, [{ok, DocId, Rev} | {error, Reason}]} | {error, Reason}`.
#[rustler::nif(schedule = "DirtyIo")]
fn save_docs<'a>(
    env: Env<'a>,
    barrel: ResourceArc<BarrelRef>,
    docs: Term<'a>,
    new_edits: bool,
) -> rustler::NifResult<Term<'a>> {
    // Decoding an improper list would panic in rustler: check properness first.
    docs.list_length()?;
    let docs: Vec<Term<'a>> = docs.decode()?;
    Ok(guarded(env, || {
        // Documents refused while decoding keep their own failure; the engine gets a
        // placeholder error for them so results stay in order.
        let mut refused: Vec<Option<Failure>> = Vec::with_capacity(docs.len());
        let inputs = docs
            .into_iter()
            .map(|d| match decode_doc(d) {
                Ok(doc) => {
                    refused.push(None);
                    Ok(doc)
                }
                Err(f) => {
                    refused.push(Some(f));
                    Err(Error::NotFound)
                }
            })
            .collect();
        match barrel
            .barrel()
            .and_then(|b| b.save_docs(inputs, &save_options(new_edits)))
        {
            Ok(results) => {
                let list: Vec<Term> = results
                    .into_iter()
                    .zip(refused)
                    .map(|(r, refused)| match refused {
                        Some(f) => encode_failure(env, &f),
                        None => saved(env, &r.map_err(Failure::Engine)),
                    })
                    .collect();
                (atoms::ok(), list).encode(env)
            }
            Err(e) => error::encode(env, &e),
        }
    }))
}

/// `{ok, DocId, NewRev} | {error, Reason}`.
#[rustler::nif(schedule = "DirtyIo")]
fn delete_doc<'a>(
    env: Env<'a>,
    barrel: ResourceArc<BarrelRef>,
    id: Term<'a>,
    rev: Term<'a>,
) -> Term<'a> {
    guarded(env, || {
        let r = (|| {
            let id = utf8(id, atoms::invalid_doc_id())?;
            let rev = decode_rev(rev)?;
            Ok(barrel.barrel()?.delete_doc(&id, rev)?)
        })();
        saved(env, &r)
    })
}

pub(crate) fn decode_id(id: Term) -> Result<String, Failure> {
    utf8(id, atoms::invalid_doc_id())
}

/// `{ok, Doc}` from a fetched document's parts.
fn doc_term<'a>(env: Env<'a>, parts: &DocParts, null: Atom) -> Term<'a> {
    ok_doc(env, &parts.body, &extra_terms(env, &parts.meta, null), null)
}

/// `{ok, Doc}` from a stored body and the members to add to it (in key order).
fn ok_doc<'a>(env: Env<'a>, body: &[u8], extra: &Extra<'a, '_>, null: Atom) -> Term<'a> {
    match json_to_term(env, body, extra, null) {
        Ok(doc) => (atoms::ok(), doc).encode(env),
        Err(e) => error::encode(env, &Error::Corrupt(format!("document body: {e}"))),
    }
}

/// A document's `id` and `_rev` as [`Extra`] members (in key order: `_` sorts before `i`).
fn id_rev_terms<'a>(env: Env<'a>, id: &str, rev: &Rev) -> [(&'static str, Term<'a>); 2] {
    [
        (barrel_core::doc::REV, rev.to_string().encode(env)),
        (barrel_core::doc::ID, id.encode(env)),
    ]
}

pub(crate) fn fetch_options(
    rev: Term,
    revs: bool,
    conflicts: bool,
) -> Result<FetchOptions, Failure> {
    let rev = if rev.decode::<Atom>().ok() == Some(atoms::undefined()) {
        None
    } else {
        Some(decode_rev(rev)?)
    };
    Ok(FetchOptions {
        rev,
        revs,
        conflicts,
    })
}

/// The body of `fetch_doc/6` and `fetch_doc_cached/6`: with `cached_only`, `would_block` when
/// the answer needs disk I/O.
#[allow(clippy::too_many_arguments)]
fn fetch<'a>(
    env: Env<'a>,
    barrel: &BarrelRef,
    id: Term<'a>,
    rev: Term<'a>,
    revs: bool,
    conflicts: bool,
    null: Atom,
    cached_only: bool,
) -> Term<'a> {
    guarded(env, || {
        // `None`: the answer needs disk I/O (only with `cached_only`).
        let r = (|| {
            let opts = fetch_options(rev, revs, conflicts)?;
            let b = barrel.barrel()?;
            let id = decode_id(id)?;
            if opts.rev.is_none() && !opts.revs && !opts.conflicts {
                // The winner, as most fetches ask: decoded from the stored bytes in place,
                // with `id` and `_rev` made straight into terms.
                let doc = b.with_winner(&id, cached_only, |body, rev| {
                    ok_doc(env, body, &id_rev_terms(env, &id, rev), null)
                });
                return match doc {
                    Err(Error::WouldBlock) => Ok(None),
                    doc => Ok(Some(doc?)),
                };
            }
            let parts = if cached_only {
                b.fetch_doc_parts_cached(&id, &opts)?
            } else {
                Some(b.fetch_doc_parts(&id, &opts)?)
            };
            Ok(parts.map(|parts| doc_term(env, &parts, null)))
        })();
        match r {
            Ok(Some(doc)) => doc,
            Ok(None) => error::reason(env, &Error::WouldBlock),
            Err(f) => encode_failure(env, &f),
        }
    })
}

/// `{ok, Doc} | {error, Reason}`. `Rev` is `undefined` for the winner.
#[rustler::nif(schedule = "DirtyIo")]
fn fetch_doc<'a>(
    env: Env<'a>,
    barrel: ResourceArc<BarrelRef>,
    id: Term<'a>,
    rev: Term<'a>,
    revs: bool,
    conflicts: bool,
    null: Atom,
) -> Term<'a> {
    fetch(env, &barrel, id, rev, revs, conflicts, null, false)
}

/// `fetch_doc/6` on a normal scheduler, answered from memory only: returns `would_block` when
/// the read needs disk I/O, and the caller then uses the dirty `fetch_doc/6`. Saves the
/// dirty-scheduler round trip for cached documents.
#[rustler::nif]
fn fetch_doc_cached<'a>(
    env: Env<'a>,
    barrel: ResourceArc<BarrelRef>,
    id: Term<'a>,
    rev: Term<'a>,
    revs: bool,
    conflicts: bool,
    null: Atom,
) -> Term<'a> {
    fetch(env, &barrel, id, rev, revs, conflicts, null, true)
}

/// `{ok, [{ok, Doc} | {missing, Rev}]} | {error, Reason}`; `Which` is `all` or a list of revs.
#[rustler::nif(schedule = "DirtyIo")]
fn fetch_open_revs<'a>(
    env: Env<'a>,
    barrel: ResourceArc<BarrelRef>,
    id: Term<'a>,
    which: Term<'a>,
    revs: bool,
    null: Atom,
) -> Term<'a> {
    guarded(env, || {
        let r = (|| {
            let id = decode_id(id)?;
            let which = if which.decode::<Atom>().ok() == Some(atoms::all()) {
                OpenRevs::All
            } else {
                // Check properness first: decoding an improper list panics in rustler.
                let bad = || Failure::BadTerm(atoms::bad_rev(), which);
                which.list_length().map_err(|_| bad())?;
                let list: Vec<Term> = which.decode().map_err(|_| bad())?;
                OpenRevs::Revs(list.into_iter().map(decode_rev).collect::<Result<_, _>>()?)
            };
            Ok(barrel.barrel()?.fetch_open_revs(&id, &which, revs)?)
        })();
        match r {
            Ok(list) => {
                let items: Vec<Term> = list
                    .iter()
                    .map(|o| match o {
                        OpenRev::Ok(doc) => (atoms::ok(), map_to_term(env, doc, null)).encode(env),
                        OpenRev::Missing(rev) => (atoms::missing(), rev_term(env, rev)).encode(env),
                    })
                    .collect();
                (atoms::ok(), items).encode(env)
            }
            Err(f) => encode_failure(env, &f),
        }
    })
}

fn decode_bound(t: Term) -> Result<Bound<String>, Error> {
    if t.decode::<Atom>().ok() == Some(atoms::undefined()) {
        return Ok(Bound::Unbounded);
    }
    let (id, kind): (String, Atom) = t
        .decode()
        .map_err(|_| Error::BadParam(format!("bad key bound {t:?}")))?;
    if kind == atoms::inclusive() {
        Ok(Bound::Included(id))
    } else if kind == atoms::exclusive() {
        Ok(Bound::Excluded(id))
    } else {
        Err(Error::BadParam(format!("bad key bound {t:?}")))
    }
}

/// Reads up to `Limit` live documents in id order from `Start` to `End`:
/// `{ok, Rows, Last}` with `Last` the id of the last row, or `undefined` when fewer than `Limit`
/// rows were left. A row is the document, or `#{<<"id">>, <<"_rev">>}` without `IncludeDocs`.
#[rustler::nif(schedule = "DirtyIo")]
fn fold_docs_chunk<'a>(
    env: Env<'a>,
    barrel: ResourceArc<BarrelRef>,
    start: Term<'a>,
    end: Term<'a>,
    limit: usize,
    include_docs: bool,
    null: Atom,
) -> Term<'a> {
    guarded(env, || {
        let r = (|| {
            let opts = FoldOptions {
                start: decode_bound(start)?,
                end: decode_bound(end)?,
                limit: Some(limit),
                include_docs,
            };
            let mut rows: Vec<Term> = Vec::new();
            let mut last: Option<String> = None;
            let mut failed = None;
            barrel.barrel()?.fold_docs_raw(&opts, |id, rev, body| {
                let meta = id_rev_terms(env, &id, &rev);
                let term = match body {
                    // Stored JSON straight into terms, as fetch_doc does.
                    Some(json) => match json_to_term(env, json, &meta, null) {
                        Ok(t) => t,
                        Err(e) => {
                            failed = Some(Error::Corrupt(format!("document body: {e}")));
                            return ControlFlow::Break(());
                        }
                    },
                    None => pairs_map(env, meta.iter().map(|&(k, v)| (k.encode(env), v))),
                };
                rows.push(term);
                last = Some(id);
                ControlFlow::Continue(())
            })?;
            if let Some(e) = failed {
                return Err(e);
            }
            Ok::<_, Error>((rows, last))
        })();
        match r {
            Ok((rows, last)) => {
                let last = match last {
                    Some(id) if rows.len() == limit => id.encode(env),
                    _ => atoms::undefined().encode(env),
                };
                (atoms::ok(), rows, last).encode(env)
            }
            Err(e) => error::encode(env, &e),
        }
    })
}

/// Sends `{Ref, Result}` to the calling process, from the store's writer thread.
struct Replier {
    env: OwnedEnv,
    reference: rustler::env::SavedTerm,
    to: LocalPid,
}

impl Replier {
    fn new(env: Env, reference: Term) -> Replier {
        let owned = OwnedEnv::new();
        let reference = owned.save(reference);
        Replier {
            env: owned,
            reference,
            to: env.pid(),
        }
    }

    fn send(mut self, results: SaveResults, single: bool) {
        let reference = self.reference;
        // The caller may have died meanwhile: nothing to do then.
        let _ = self.env.send_and_clear(&self.to, |env| {
            (reference.load(env), encode_results(env, &results, single))
        });
    }
}

/// `{ok, Id, Rev} | {error, Reason}` for one document, `{ok, [..]} | {error, Reason}` for many.
fn encode_results<'a>(env: Env<'a>, results: &SaveResults, single: bool) -> Term<'a> {
    match results {
        Ok(list) if single => match list.first() {
            Some(Ok((id, rev))) => (atoms::ok(), id.as_str(), rev_term(env, rev)).encode(env),
            Some(Err(e)) => error::encode(env, e),
            None => error::encode(env, &Error::Internal("no result".into())),
        },
        Ok(list) => {
            let items: Vec<Term> = list
                .iter()
                .map(|r| match r {
                    Ok((id, rev)) => (atoms::ok(), id.as_str(), rev_term(env, rev)).encode(env),
                    Err(e) => error::encode(env, e),
                })
                .collect();
            (atoms::ok(), items).encode(env)
        }
        Err(e) => error::encode(env, e),
    }
}

/// Submits a save without blocking the scheduler: returns `ok` and the result arrives as
/// `{Ref, Result}`; or, when the engine answers at once (closed store, deleted barrel), returns
/// the result itself.
fn submit_async<'a>(
    env: Env<'a>,
    barrel: &BarrelRef,
    docs: Vec<Result<DocInput, Error>>,
    new_edits: bool,
    reference: Term<'a>,
    single: bool,
) -> Term<'a> {
    let barrel = match barrel.barrel() {
        Ok(b) => b,
        Err(e) => return error::encode(env, &e),
    };
    let replier = Replier::new(env, reference);
    let caller = std::thread::current().id();
    let inline: Arc<Mutex<Option<SaveResults>>> = Arc::new(Mutex::new(None));
    let inline_slot = inline.clone();
    barrel.save_docs_with(docs, &save_options(new_edits), move |results| {
        if std::thread::current().id() == caller {
            *inline_slot.lock() = Some(results);
        } else {
            replier.send(results, single);
        }
    });
    let answered = inline.lock().take();
    match answered {
        Some(results) => encode_results(env, &results, single),
        None => atoms::ok().encode(env),
    }
}

/// `save_doc/3` without a dirty scheduler: `ok` (then `{Ref, {ok, Id, Rev} | {error, R}}`
/// arrives), `{error, Reason}` for a refused document, or `would_block` for a document too big
/// to convert here or with attachments (call `save_doc/3`).
#[rustler::nif]
fn save_doc_async<'a>(
    env: Env<'a>,
    barrel: ResourceArc<BarrelRef>,
    doc: Term<'a>,
    new_edits: bool,
    reference: Term<'a>,
) -> Term<'a> {
    guarded(env, || {
        if has_attachments(doc) {
            return atoms::would_block().encode(env);
        }
        let mut budget = NORMAL_BUDGET;
        match decode_doc_within(doc, &mut budget) {
            Ok(Some(doc)) => submit_async(env, &barrel, vec![Ok(doc)], new_edits, reference, true),
            Ok(None) => atoms::would_block().encode(env),
            Err(f) => encode_failure(env, &f),
        }
    })
}

/// `save_docs/3` without a dirty scheduler: `ok` (then `{Ref, {ok, Results}}` arrives), or
/// `would_block` when the documents are too big to convert here, one of them has attachments,
/// or one of them must be reported with its own term (call `save_docs/3`).
#[rustler::nif]
fn save_docs_async<'a>(
    env: Env<'a>,
    barrel: ResourceArc<BarrelRef>,
    docs: Term<'a>,
    new_edits: bool,
    reference: Term<'a>,
) -> rustler::NifResult<Term<'a>> {
    docs.list_length()?;
    let docs: Vec<Term<'a>> = docs.decode()?;
    Ok(guarded(env, || {
        if docs.iter().any(|d| has_attachments(*d)) {
            return atoms::would_block().encode(env);
        }
        let mut budget = NORMAL_BUDGET;
        let mut inputs = Vec::with_capacity(docs.len());
        for d in docs {
            match decode_doc_within(d, &mut budget) {
                Ok(Some(doc)) => inputs.push(Ok(doc)),
                Err(Failure::Engine(e)) => inputs.push(Err(e)),
                Ok(None) | Err(Failure::BadTerm(..)) => return atoms::would_block().encode(env),
            }
        }
        submit_async(env, &barrel, inputs, new_edits, reference, false)
    }))
}

/// `delete_doc/3` without a dirty scheduler: `ok` (then `{Ref, {ok, Id, Rev} | {error, R}}`
/// arrives) or `{error, Reason}`.
#[rustler::nif]
fn delete_doc_async<'a>(
    env: Env<'a>,
    barrel: ResourceArc<BarrelRef>,
    id: Term<'a>,
    rev: Term<'a>,
    reference: Term<'a>,
) -> Term<'a> {
    guarded(env, || {
        let doc = (|| {
            let id = utf8(id, atoms::invalid_doc_id())?;
            Ok::<_, Failure>(DocInput::tombstone(&id, decode_rev(rev)?)?)
        })();
        match doc {
            Ok(doc) => submit_async(env, &barrel, vec![Ok(doc)], true, reference, true),
            Err(f) => encode_failure(env, &f),
        }
    })
}
