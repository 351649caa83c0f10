//! Document NIFs: `save_doc/3`, `save_docs/3`, `delete_doc/3`, `fetch_doc/6`,
//! `fetch_open_revs/5`, `fold_docs_chunk/6`. Argument checking and option defaults live in
//! `barrel.erl`; these decode, call the engine and encode.

use crate::convert::{map_to_term, term_to_value};
use crate::error;
use crate::guarded;
use crate::store::BarrelRef;
use barrel_core::{
    Body, DocInput, Error, FetchOptions, FoldOptions, OpenRev, OpenRevs, Rev, SaveOptions,
};
use rustler::{Atom, Encoder, Env, ResourceArc, Term};
use std::ops::{Bound, ControlFlow};

mod atoms {
    rustler::atoms! { ok, missing, all, undefined, inclusive, exclusive }
}

fn rev_term<'a>(env: Env<'a>, rev: &Rev) -> Term<'a> {
    rev.to_string().encode(env)
}

fn decode_doc(term: Term) -> Result<DocInput, Error> {
    if !term.is_map() {
        return Err(barrel_core::DocError::NotAnObject.into());
    }
    let value = term_to_value(term)?;
    Ok(DocInput::from_value(value)?)
}

fn decode_rev(term: Term) -> Result<Rev, Error> {
    let s: String = term
        .decode()
        .map_err(|_| Error::BadDoc(barrel_core::DocError::BadRev(format!("{term:?}"))))?;
    Ok(Rev::parse(&s)?)
}

fn save_options(new_edits: bool) -> SaveOptions {
    SaveOptions { new_edits }
}

fn saved<'a>(env: Env<'a>, r: &Result<(String, Rev), Error>) -> Term<'a> {
    match r {
        Ok((id, rev)) => (atoms::ok(), id.as_str(), rev_term(env, rev)).encode(env),
        Err(e) => error::encode(env, e),
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
        let r = barrel
            .barrel()
            .and_then(|b| b.save_doc(decode_doc(doc)?, &save_options(new_edits)));
        saved(env, &r)
    })
}

/// `{ok, [{ok, DocId, Rev} | {error, Reason}]} | {error, Reason}`.
#[rustler::nif(schedule = "DirtyIo")]
fn save_docs<'a>(
    env: Env<'a>,
    barrel: ResourceArc<BarrelRef>,
    docs: Vec<Term<'a>>,
    new_edits: bool,
) -> Term<'a> {
    guarded(env, || {
        let inputs = docs.into_iter().map(decode_doc).collect();
        match barrel
            .barrel()
            .and_then(|b| b.save_docs(inputs, &save_options(new_edits)))
        {
            Ok(results) => {
                let list: Vec<Term> = results.iter().map(|r| saved(env, r)).collect();
                (atoms::ok(), list).encode(env)
            }
            Err(e) => error::encode(env, &e),
        }
    })
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
            let id: String = id
                .decode()
                .map_err(|_| barrel_core::DocError::InvalidDocId(format!("{id:?}")))?;
            let rev = decode_rev(rev)?;
            barrel.barrel()?.delete_doc(&id, rev)
        })();
        saved(env, &r)
    })
}

fn decode_id(id: Term) -> Result<String, Error> {
    id.decode()
        .map_err(|_| barrel_core::DocError::InvalidDocId(format!("{id:?}")).into())
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
    guarded(env, || {
        let r = (|| {
            let id = decode_id(id)?;
            let rev = if rev.decode::<Atom>().ok() == Some(atoms::undefined()) {
                None
            } else {
                Some(decode_rev(rev)?)
            };
            let opts = FetchOptions {
                rev,
                revs,
                conflicts,
            };
            barrel.barrel()?.fetch_doc(&id, &opts)
        })();
        match r {
            Ok(doc) => (atoms::ok(), map_to_term(env, &doc, null)).encode(env),
            Err(e) => error::encode(env, &e),
        }
    })
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
                let list: Vec<Term> = which
                    .decode()
                    .map_err(|_| barrel_core::DocError::BadRev(format!("{which:?}")))?;
                OpenRevs::Revs(list.into_iter().map(decode_rev).collect::<Result<_, _>>()?)
            };
            barrel.barrel()?.fetch_open_revs(&id, &which, revs)
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
            Err(e) => error::encode(env, &e),
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
            barrel.barrel()?.fold_docs(&opts, |row| {
                let doc = row.doc.unwrap_or_else(|| {
                    let mut m = Body::new();
                    m.insert("id".into(), row.id.clone().into());
                    m.insert("_rev".into(), row.rev.to_string().into());
                    m
                });
                rows.push(map_to_term(env, &doc, null));
                last = Some(row.id);
                ControlFlow::Continue(())
            })?;
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
