//! A document term straight to what the engine stores: its body's canonical JSON and its index
//! entries, in one walk over the term, without building the body's `serde_json` values first.
//! Converting to values, walking them for the entries and encoding them again was two thirds
//! of the conversion, itself over a third of a `save_doc` on the calling scheduler.
//!
//! The JSON is written by `serde_json`'s own serializer, members in key order, so it is byte
//! for byte what `barrel_core::doc::encode_body` writes for the same body, and revision ids
//! (which hash those bytes) do not depend on the way a document came in. This path takes plain
//! documents only: anything else (attachments, `_revisions`, a member it does not accept, a
//! refused document) goes through the general conversion, which also reports what is wrong.
//! The test suite checks both give the same documents (`barrel_nif:doc_encoding_check/1`).

use crate::convert::{atoms, is_null_atom};
use barrel_core::doc::MAX_DEPTH;
use barrel_core::index::EntriesBuilder;
use barrel_core::{DocInput, Rev};
use rustler::types::atom::{false_, true_, Atom};
use rustler::types::map::MapIterator;
use rustler::{Term, TermType};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::Number;
use std::cell::RefCell;

thread_local! {
    /// About the length of the last document [`encode_doc`] wrote on this thread, plus a
    /// quarter: where the next one's buffer starts.
    static LAST_LEN: std::cell::Cell<usize> = const { std::cell::Cell::new(128) };
}

/// What [`encode_doc`] made of a term.
// Returned once per document and taken apart at once: boxing the document would only add an
// allocation to every save.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Encoded {
    Doc(DocInput),
    /// Converting it costs more than the budget left.
    OverBudget,
    /// Not a document this path takes: use the general conversion.
    Elsewhere,
}

/// Why a walk stopped.
#[derive(Clone, Copy)]
enum Stop {
    OverBudget,
    Elsewhere,
}

struct Walk {
    entries: EntriesBuilder,
    budget: usize,
    stop: Option<Stop>,
}

impl Walk {
    /// Spends `cost` of the budget (units as in `convert`: about one a byte, 16 a value).
    fn spend(&mut self, cost: usize) -> Result<(), Stop> {
        self.budget = self.budget.checked_sub(cost).ok_or(Stop::OverBudget)?;
        Ok(())
    }
}

/// Records why the walk stops and turns it into the serializer's error.
fn stop<E: serde::ser::Error>(walk: &RefCell<Walk>, why: Stop) -> E {
    walk.borrow_mut().stop.get_or_insert(why);
    E::custom("stopped")
}

/// `Some(None)` for `null`, `Some(Some(s))` for a UTF-8 binary: what `id` and `_rev` may be
/// (`nil` is refused there, as the general conversion does).
fn nullable_str<'a>(t: Term<'a>) -> Option<Option<&'a str>> {
    match t.get_type() {
        TermType::Binary => t.decode::<&str>().ok().map(Some),
        TermType::Atom if t.decode::<Atom>().ok() == Some(atoms::null()) => Some(None),
        _ => None,
    }
}

fn is_null(t: Term) -> bool {
    t.decode::<Atom>().is_ok_and(is_null_atom)
}

/// The members of a map term, in key order (`None` for a key that is not a UTF-8 binary).
fn members<'a>(map: Term<'a>) -> Option<Vec<(&'a str, Term<'a>)>> {
    let mut out = Vec::with_capacity(map.map_size().ok()?);
    for (k, v) in MapIterator::new(map)? {
        out.push((k.decode::<&str>().ok()?, v));
    }
    // Small maps iterate in key order already; large ones in hash order.
    if !out.is_sorted_by(|a, b| a.0 < b.0) {
        out.sort_unstable_by(|a, b| a.0.cmp(b.0));
    }
    Some(out)
}

/// Encodes a plain document term within `budget` (spent only when it succeeds).
pub(crate) fn encode_doc(term: Term, budget: &mut usize) -> Encoded {
    let Some(all) = members(term) else {
        return Encoded::Elsewhere;
    };
    let (mut id, mut rev, mut deleted) = (None, None, false);
    let mut body = Vec::with_capacity(all.len());
    for (k, v) in all {
        match k {
            barrel_core::doc::ID => match nullable_str(v) {
                Some(s) => id = s,
                None => return Encoded::Elsewhere,
            },
            barrel_core::doc::REV => match nullable_str(v) {
                Some(s) => rev = s,
                None => return Encoded::Elsewhere,
            },
            barrel_core::doc::DELETED => match v.decode::<Atom>() {
                Ok(a) if a == true_() => deleted = true,
                Ok(a) if a == false_() || is_null(v) => deleted = false,
                _ => return Encoded::Elsewhere,
            },
            // `_revisions`, `_attachments`, the ignored and the reserved members.
            _ if k.starts_with('_') => return Encoded::Elsewhere,
            _ => body.push((k, v)),
        }
    }
    let walk = RefCell::new(Walk {
        entries: EntriesBuilder::new(),
        budget: *budget,
        stop: None,
    });
    // Sized after the last document this thread encoded: documents saved together tend to be
    // alike, and growing from serde_json's 128 bytes took four reallocations (and copies) for
    // a 1 KB document.
    let mut json = Vec::with_capacity(LAST_LEN.get());
    let json = serde_json::to_writer(
        &mut json,
        &Members {
            members: &body,
            depth: 1,
            walk: &walk,
        },
    )
    .map(|()| {
        LAST_LEN.set((json.len() + json.len() / 4).clamp(128, 64 << 10));
        json
    });
    let walk = walk.into_inner();
    let json = match (json, walk.stop) {
        (Ok(json), None) => json,
        (_, Some(Stop::OverBudget)) => return Encoded::OverBudget,
        _ => return Encoded::Elsewhere,
    };
    let rev = match rev.map(Rev::parse).transpose() {
        Ok(rev) => rev,
        Err(_) => return Encoded::Elsewhere,
    };
    let id = id.map(str::to_string);
    match DocInput::from_encoded(id, rev, deleted, json, walk.entries.finish()) {
        Ok(doc) => {
            *budget = walk.budget;
            Encoded::Doc(doc)
        }
        Err(_) => Encoded::Elsewhere,
    }
}

/// An object's members (sorted), whose values sit at `depth`.
struct Members<'a, 'm, 'w> {
    members: &'m [(&'a str, Term<'a>)],
    depth: usize,
    walk: &'w RefCell<Walk>,
}

impl Serialize for Members<'_, '_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.members.len()))?;
        for &(k, v) in self.members {
            let mark = {
                let mut w = self.walk.borrow_mut();
                if let Err(why) = w.spend(k.len()) {
                    drop(w);
                    return Err(stop(self.walk, why));
                }
                w.entries.enter_key(k)
            };
            map.serialize_entry(
                k,
                &Node {
                    term: v,
                    depth: self.depth,
                    walk: self.walk,
                },
            )?;
            self.walk.borrow_mut().entries.leave(mark);
        }
        map.end()
    }
}

/// A value at `depth` (a top-level member's is at 1).
struct Node<'a, 'w> {
    term: Term<'a>,
    depth: usize,
    walk: &'w RefCell<Walk>,
}

impl Node<'_, '_> {
    /// Spends `cost`, then records a scalar's entry with `entry`.
    fn scalar<E: serde::ser::Error>(
        &self,
        cost: usize,
        entry: impl FnOnce(&mut EntriesBuilder) -> Result<(), barrel_core::DocError>,
    ) -> Result<(), E> {
        let mut w = self.walk.borrow_mut();
        let done = w
            .spend(cost)
            .and_then(|()| entry(&mut w.entries).map_err(|_| Stop::Elsewhere));
        drop(w);
        done.map_err(|why| stop(self.walk, why))
    }
}

impl Serialize for Node<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let t = self.term;
        if self.depth > MAX_DEPTH {
            return Err(stop(self.walk, Stop::Elsewhere));
        }
        match t.get_type() {
            TermType::Map => {
                if let Err(why) = self.walk.borrow_mut().spend(16) {
                    return Err(stop(self.walk, why));
                }
                let Some(members) = members(t) else {
                    return Err(stop(self.walk, Stop::Elsewhere));
                };
                Members {
                    members: &members,
                    depth: self.depth + 1,
                    walk: self.walk,
                }
                .serialize(s)
            }
            TermType::List => {
                if let Err(why) = self.walk.borrow_mut().spend(16) {
                    return Err(stop(self.walk, why));
                }
                // Improper lists are for the general conversion to report.
                let (Ok(len), Ok(items)) = (t.list_length(), t.into_list_iterator()) else {
                    return Err(stop(self.walk, Stop::Elsewhere));
                };
                let mut seq = s.serialize_seq(Some(len))?;
                for (i, item) in items.enumerate() {
                    let mark = self.walk.borrow_mut().entries.enter_index(i);
                    seq.serialize_element(&Node {
                        term: item,
                        depth: self.depth + 1,
                        walk: self.walk,
                    })?;
                    self.walk.borrow_mut().entries.leave(mark);
                }
                seq.end()
            }
            TermType::Binary => {
                let Ok(st) = t.decode::<&str>() else {
                    return Err(stop(self.walk, Stop::Elsewhere));
                };
                self.scalar(16 + st.len(), |e| e.string(st))?;
                s.serialize_str(st)
            }
            TermType::Integer => {
                if let Ok(i) = t.decode::<i64>() {
                    self.scalar(16, |e| e.number(Number::from(i)))?;
                    s.serialize_i64(i)
                } else if let Ok(u) = t.decode::<u64>() {
                    self.scalar(16, |e| e.number(Number::from(u)))?;
                    s.serialize_u64(u)
                } else {
                    Err(stop(self.walk, Stop::Elsewhere))
                }
            }
            TermType::Float => match t.decode::<f64>().ok().and_then(Number::from_f64) {
                Some(n) => {
                    let f = n.as_f64().unwrap_or_default();
                    self.scalar(16, |e| e.number(n))?;
                    s.serialize_f64(f)
                }
                None => Err(stop(self.walk, Stop::Elsewhere)),
            },
            TermType::Atom => {
                let a = t.decode::<Atom>().ok();
                if a == Some(true_()) || a == Some(false_()) {
                    let b = a == Some(true_());
                    self.scalar(16, |e| e.bool(b))?;
                    s.serialize_bool(b)
                } else if is_null(t) {
                    self.scalar(16, |e| e.null())?;
                    s.serialize_unit()
                } else {
                    Err(stop(self.walk, Stop::Elsewhere))
                }
            }
            _ => Err(stop(self.walk, Stop::Elsewhere)),
        }
    }
}
