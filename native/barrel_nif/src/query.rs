//! Query NIFs: `query_open/5` starts a query over one snapshot and returns a cursor resource;
//! `query_next/3` reads a chunk of rows; `reindex/1`. Option checking lives in `barrel.erl`.

use crate::convert::{map_to_term, term_to_value_within};
use crate::error;
use crate::guarded;
use crate::store::BarrelRef;
use barrel_core::index::{parse_path, parse_path_and_value};
use barrel_core::{Body, Error, PathPattern, Query, QueryCursor, Segment, Select};
use parking_lot::Mutex;
use rustler::{Atom, Encoder, Env, Resource, ResourceArc, Term};
use serde_json::Value;
use std::ops::Bound;

mod atoms {
    rustler::atoms! {
        ok, all, equal, prefix, range, path_value, inclusive, exclusive, undefined,
        any_index = "*",
    }
}

/// A query in progress, as the BEAM sees it.
pub(crate) struct CursorRef {
    /// `None` once closed: a cursor holds the store open, so it is released as soon as the
    /// query ends rather than when the BEAM collects the handle.
    cursor: Mutex<Option<QueryCursor>>,
}

#[rustler::resource_impl]
impl Resource for CursorRef {}

fn bad(why: impl Into<String>) -> Error {
    Error::BadQuery(why.into())
}

fn path_of(term: Term) -> Result<Vec<PathPattern>, Error> {
    if let Ok(s) = term.decode::<String>() {
        return parse_path(&s).map_err(bad);
    }
    // Check properness first: decoding an improper list panics in rustler.
    term.list_length()
        .map_err(|_| bad(format!("path must be a binary or a list: {term:?}")))?;
    let items: Vec<Term> = term.decode().map_err(|_| bad("bad path"))?;
    items
        .into_iter()
        .map(|seg| {
            if let Ok(k) = seg.decode::<String>() {
                Ok(PathPattern::Seg(Segment::Key(k)))
            } else if let Ok(i) = seg.decode::<u32>() {
                Ok(PathPattern::Seg(Segment::Index(i)))
            } else if seg.decode::<Atom>().ok() == Some(atoms::any_index()) {
                Ok(PathPattern::AnyIndex)
            } else {
                Err(bad(format!("bad path segment {seg:?}")))
            }
        })
        .collect()
}

fn scalar(term: Term) -> Result<Value, Error> {
    let mut budget = usize::MAX;
    match term_to_value_within(term, &mut budget) {
        Ok(Some(v)) if !v.is_array() && !v.is_object() => Ok(v),
        _ => Err(bad(format!("{term:?} is not a JSON scalar"))),
    }
}

fn bound(term: Term) -> Result<Bound<Value>, Error> {
    if term.decode::<Atom>().ok() == Some(atoms::undefined()) {
        return Ok(Bound::Unbounded);
    }
    let (kind, v): (Atom, Term) = term
        .decode()
        .map_err(|_| bad(format!("bad bound {term:?}")))?;
    if kind == atoms::inclusive() {
        Ok(Bound::Included(scalar(v)?))
    } else if kind == atoms::exclusive() {
        Ok(Bound::Excluded(scalar(v)?))
    } else {
        Err(bad(format!("bad bound {term:?}")))
    }
}

/// `Select` is `all | path_value | {equal, V} | {prefix, Bin} | {range, Start, End}`; with
/// `path_value` the last segment of the binary `Path` is the value (the talk's form).
fn query_of(
    path: Term,
    select: Term,
    descending: bool,
    include_docs: bool,
) -> Result<Query, Error> {
    let tag = select
        .decode::<Atom>()
        .ok()
        .or_else(|| {
            rustler::types::tuple::get_tuple(select)
                .ok()
                .and_then(|t| t.first().and_then(|a| a.decode::<Atom>().ok()))
        })
        .ok_or_else(|| bad(format!("bad selection {select:?}")))?;
    let (path, select) = if tag == atoms::path_value() {
        let s: String = path
            .decode()
            .map_err(|_| bad("a path with its value must be a binary"))?;
        let (p, v) = parse_path_and_value(&s).map_err(bad)?;
        (p, Select::Equal(v))
    } else {
        let p = path_of(path)?;
        let sel = if tag == atoms::all() {
            Select::All
        } else if tag == atoms::equal() {
            let (_, v): (Atom, Term) = select.decode().map_err(|_| bad("bad equal"))?;
            Select::Equal(scalar(v)?)
        } else if tag == atoms::prefix() {
            let (_, v): (Atom, String) = select
                .decode()
                .map_err(|_| bad("prefix must be a binary"))?;
            Select::Prefix(v)
        } else if tag == atoms::range() {
            let (_, s, e): (Atom, Term, Term) = select.decode().map_err(|_| bad("bad range"))?;
            Select::Range {
                start: bound(s)?,
                end: bound(e)?,
            }
        } else {
            return Err(bad(format!("bad selection {select:?}")));
        };
        (p, sel)
    };
    Ok(Query {
        path,
        select,
        descending,
        include_docs,
    })
}

/// `{ok, Cursor} | {error, Reason}`.
#[rustler::nif(schedule = "DirtyIo")]
fn query_open<'a>(
    env: Env<'a>,
    barrel: ResourceArc<BarrelRef>,
    path: Term<'a>,
    select: Term<'a>,
    descending: bool,
    include_docs: bool,
) -> Term<'a> {
    guarded(env, || {
        let r = (|| {
            let q = query_of(path, select, descending, include_docs)?;
            barrel.barrel()?.query_cursor(&q)
        })();
        match r {
            Ok(cursor) => {
                let res = ResourceArc::new(CursorRef {
                    cursor: Mutex::new(Some(cursor)),
                });
                (atoms::ok(), res).encode(env)
            }
            Err(e) => error::encode(env, &e),
        }
    })
}

/// `{ok, Rows, Done}`: up to `N` rows; `Done` is `true` when the query is exhausted. A row is
/// the document (with `IncludeDocs`) or `#{<<"id">> => Id, <<"value">> => Value}`.
#[rustler::nif(schedule = "DirtyIo")]
fn query_next<'a>(env: Env<'a>, cursor: ResourceArc<CursorRef>, n: usize, null: Atom) -> Term<'a> {
    guarded(env, || {
        let r = match cursor.cursor.lock().as_mut() {
            Some(c) => c.next_chunk(n),
            None => Err(Error::Closed),
        };
        match r {
            Ok(rows) => {
                let done = rows.len() < n;
                let terms: Vec<Term> = rows
                    .iter()
                    .map(|row| match &row.doc {
                        Some(doc) => map_to_term(env, doc, null),
                        None => {
                            let mut m = Body::new();
                            m.insert("id".into(), Value::String(row.id.clone()));
                            m.insert("value".into(), row.value.clone());
                            map_to_term(env, &m, null)
                        }
                    })
                    .collect();
                (atoms::ok(), terms, done).encode(env)
            }
            Err(e) => error::encode(env, &e),
        }
    })
}

/// `ok`: releases the cursor's snapshot (and its hold on the store).
#[rustler::nif]
fn query_close(cursor: ResourceArc<CursorRef>) -> Atom {
    // Dropping a snapshot is cheap: no I/O.
    drop(cursor.cursor.lock().take());
    atoms::ok()
}

/// `{ok, Count} | {error, Reason}`.
#[rustler::nif(schedule = "DirtyIo")]
fn reindex(env: Env, barrel: ResourceArc<BarrelRef>) -> Term {
    guarded(env, || match barrel.barrel().and_then(|b| b.reindex()) {
        Ok(n) => (atoms::ok(), n).encode(env),
        Err(e) => error::encode(env, &e),
    })
}
