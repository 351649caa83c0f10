//! A document term straight to what the engine stores: its body's canonical JSON and its index
//! entries, in one walk over the term, without building the body's `serde_json` values first.
//! Converting to values, walking them for the entries and encoding them again was two thirds
//! of the conversion, itself over a third of a `save_doc` on the calling scheduler.
//!
//! The JSON is written as `serde_json` writes it, members in key order (numbers by its
//! formatter, strings by `barrel_core::doc::put_json_string`), so it is byte for byte what
//! `barrel_core::doc::encode_body` writes for the same body, and revision ids
//! (which hash those bytes) do not depend on the way a document came in. This path takes plain
//! documents only: anything else (attachments, `_revisions`, a member it does not accept, a
//! refused document) goes through the general conversion, which also reports what is wrong.
//! The test suite checks both give the same documents (`barrel_nif:doc_encoding_check/1`).

use crate::convert::{atoms, is_null_atom};
use barrel_core::doc::{put_json_string, MAX_DEPTH};
use barrel_core::index::EntriesBuilder;
use barrel_core::{DocInput, Rev};
use rustler::types::atom::{false_, true_, Atom};
use rustler::types::map::MapIterator;
use rustler::{Binary, Term, TermType};
use serde_json::ser::{CompactFormatter, Formatter};
use serde_json::Number;

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

/// Any failure below a value: the general conversion is to report it.
fn elsewhere<E>(_: E) -> Stop {
    Stop::Elsewhere
}

struct Walk {
    /// The body's JSON so far.
    json: Vec<u8>,
    entries: EntriesBuilder,
    budget: usize,
}

impl Walk {
    /// Spends `cost` of the budget (units as in `convert`: about one a byte, 16 a value).
    fn spend(&mut self, cost: usize) -> Result<(), Stop> {
        self.budget = self.budget.checked_sub(cost).ok_or(Stop::OverBudget)?;
        Ok(())
    }

    /// Writes an object's members (sorted), whose values sit at `depth` (a top-level member's
    /// is at 1), and records their entries.
    fn object(&mut self, members: &[(&str, Term)], depth: usize) -> Result<(), Stop> {
        self.json.push(b'{');
        for (i, &(k, v)) in members.iter().enumerate() {
            self.spend(k.len())?;
            if i > 0 {
                self.json.push(b',');
            }
            put_json_string(&mut self.json, k.as_bytes()).ok_or(Stop::Elsewhere)?;
            self.json.push(b':');
            let mark = self.entries.enter_key(k);
            self.value(v, depth)?;
            self.entries.leave(mark);
        }
        self.json.push(b'}');
        Ok(())
    }

    /// Writes a value at `depth` and records its entries.
    fn value(&mut self, t: Term, depth: usize) -> Result<(), Stop> {
        if depth > MAX_DEPTH {
            return Err(Stop::Elsewhere);
        }
        match t.get_type() {
            TermType::Map => {
                self.spend(16)?;
                let members = members(t).ok_or(Stop::Elsewhere)?;
                self.object(&members, depth + 1)
            }
            TermType::List => {
                self.spend(16)?;
                // Improper lists are for the general conversion to report.
                let items = t.into_list_iterator().map_err(elsewhere)?;
                t.list_length().map_err(elsewhere)?;
                self.json.push(b'[');
                for (i, item) in items.enumerate() {
                    if i > 0 {
                        self.json.push(b',');
                    }
                    let mark = self.entries.enter_index(i);
                    self.value(item, depth + 1)?;
                    self.entries.leave(mark);
                }
                self.json.push(b']');
                Ok(())
            }
            TermType::Binary => {
                let bytes = t.decode::<Binary>().map_err(elsewhere)?;
                // Spent before the bytes are read: a binary too big for this scheduler is
                // left for the dirty one whole.
                self.spend(16 + bytes.len())?;
                let s = put_json_string(&mut self.json, bytes.as_slice()).ok_or(Stop::Elsewhere)?;
                self.entries.string(s).map_err(elsewhere)
            }
            TermType::Integer => {
                self.spend(16)?;
                let mut f = CompactFormatter;
                if let Ok(i) = t.decode::<i64>() {
                    self.entries.number(Number::from(i)).map_err(elsewhere)?;
                    f.write_i64(&mut self.json, i).map_err(elsewhere)
                } else if let Ok(u) = t.decode::<u64>() {
                    self.entries.number(Number::from(u)).map_err(elsewhere)?;
                    f.write_u64(&mut self.json, u).map_err(elsewhere)
                } else {
                    Err(Stop::Elsewhere)
                }
            }
            TermType::Float => {
                self.spend(16)?;
                // Finite (what `Number` takes) is what JSON writes as a number.
                let (f, n) = t
                    .decode::<f64>()
                    .ok()
                    .and_then(|f| Some((f, Number::from_f64(f)?)))
                    .ok_or(Stop::Elsewhere)?;
                self.entries.number(n).map_err(elsewhere)?;
                CompactFormatter
                    .write_f64(&mut self.json, f)
                    .map_err(elsewhere)
            }
            TermType::Atom => {
                self.spend(16)?;
                let a = t.decode::<Atom>().map_err(elsewhere)?;
                if a == true_() || a == false_() {
                    let b = a == true_();
                    self.entries.bool(b).map_err(elsewhere)?;
                    self.json
                        .extend_from_slice(if b { b"true" } else { b"false" });
                    Ok(())
                } else if is_null_atom(a) {
                    self.entries.null().map_err(elsewhere)?;
                    self.json.extend_from_slice(b"null");
                    Ok(())
                } else {
                    Err(Stop::Elsewhere)
                }
            }
            _ => Err(Stop::Elsewhere),
        }
    }
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
    let mut walk = Walk {
        // Sized after the last document this thread encoded: documents saved together tend
        // to be alike, and growing from 128 bytes took four reallocations (and copies) for a
        // 1 KB document.
        json: Vec::with_capacity(LAST_LEN.get()),
        entries: EntriesBuilder::new(),
        budget: *budget,
    };
    match walk.object(&body, 1) {
        Ok(()) => {}
        Err(Stop::OverBudget) => return Encoded::OverBudget,
        Err(Stop::Elsewhere) => return Encoded::Elsewhere,
    }
    let Walk {
        json,
        entries,
        budget: left,
    } = walk;
    LAST_LEN.set((json.len() + json.len() / 4).clamp(128, 64 << 10));
    let rev = match rev.map(Rev::parse).transpose() {
        Ok(rev) => rev,
        Err(_) => return Encoded::Elsewhere,
    };
    let id = id.map(str::to_string);
    match DocInput::from_encoded(id, rev, deleted, json, entries.finish()) {
        Ok(doc) => {
            *budget = left;
            Encoded::Doc(doc)
        }
        Err(_) => Encoded::Elsewhere,
    }
}
