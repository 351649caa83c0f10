//! Path queries over the index: equality, string prefix and ranges of the values at a path, with
//! `*` for any array index, in index order (or reversed), over one snapshot.

use crate::barrel::{decorate_doc, Barrel};
use crate::doc::{decode_body, Body, DocRecord};
use crate::error::{Error, Result};
use crate::index::{
    decode_entry, encode_segment, encode_value, normalize, path_matches, prefix_successor,
    PathPattern, Segment,
};
use crate::store::{keys, Store, CF_DOCS};
use rocksdb::{IteratorMode, ReadOptions, SnapshotWithThreadMode, DB};
use serde_json::Value;
use std::collections::HashSet;
use std::ops::Bound;
use std::sync::Arc;

/// Which values at the path match.
#[derive(Clone, Debug, PartialEq)]
pub enum Select {
    /// Any scalar value.
    All,
    /// Values equal to this one (strings compared lowercased).
    Equal(Value),
    /// String values starting with this prefix (compared lowercased).
    Prefix(String),
    /// Values within these bounds, in the index's type order.
    Range {
        /// Lower bound.
        start: Bound<Value>,
        /// Upper bound.
        end: Bound<Value>,
    },
}

/// A query: the values at `path` selected by `select`.
#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    /// The field, with [`PathPattern::AnyIndex`] for `*`.
    pub path: Vec<PathPattern>,
    /// Which values match.
    pub select: Select,
    /// Walk the index backwards.
    pub descending: bool,
    /// Read each matching document.
    pub include_docs: bool,
}

/// One matching document.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryRow {
    /// The document's id.
    pub id: String,
    /// The matched value, as indexed (strings lowercased).
    pub value: Value,
    /// The document (winning revision, with `id` and `_rev`) when `include_docs` was set.
    pub doc: Option<Body>,
}

const VALUE_TAGS: (u8, u8) = (0x10, 0x15);

/// The key range a query scans, and the check entries must pass when the path has a `*`.
struct Plan {
    lo: Vec<u8>,
    hi: Vec<u8>,
    wildcard: Option<Filter>,
}

struct Filter {
    path: Vec<PathPattern>,
    lo: Bound<Vec<u8>>,
    hi: Bound<Vec<u8>>,
}

impl Filter {
    fn accepts(&self, path: &[Segment], value: &[u8]) -> bool {
        let above = match &self.lo {
            Bound::Unbounded => true,
            Bound::Included(lo) => value >= lo.as_slice(),
            Bound::Excluded(lo) => value > lo.as_slice() && !value.starts_with(lo),
        };
        let below = match &self.hi {
            Bound::Unbounded => true,
            Bound::Included(hi) => value <= hi.as_slice() || value.starts_with(hi),
            Bound::Excluded(hi) => value < hi.as_slice(),
        };
        above && below && path_matches(&self.path, path)
    }
}

fn bad(why: impl Into<String>) -> Error {
    Error::BadQuery(why.into())
}

fn encoded(v: &Value) -> Result<Vec<u8>> {
    encode_value(v).ok_or_else(|| bad(format!("{v} is not an indexable scalar")))
}

/// The value bounds of a selection, as encoded values: `(lo, hi)` where `Excluded(hi)` of a
/// prefix means "everything starting with it".
/// Bounds on encoded values.
type ValueBounds = (Bound<Vec<u8>>, Bound<Vec<u8>>);

fn value_bounds(select: &Select) -> Result<ValueBounds> {
    Ok(match select {
        Select::All => (Bound::Unbounded, Bound::Unbounded),
        Select::Equal(v) => {
            let e = encoded(v)?;
            (Bound::Included(e.clone()), Bound::Included(e))
        }
        Select::Prefix(p) => {
            let mut e = vec![0x14];
            for &b in normalize(p).as_bytes() {
                e.push(b);
                if b == 0 {
                    e.push(0xFF);
                }
            }
            // Included bounds match whole encodings by prefix (see `Filter::accepts`).
            (Bound::Included(e.clone()), Bound::Included(e))
        }
        Select::Range { start, end } => {
            let map = |b: &Bound<Value>| -> Result<Bound<Vec<u8>>> {
                Ok(match b {
                    Bound::Unbounded => Bound::Unbounded,
                    Bound::Included(v) => Bound::Included(encoded(v)?),
                    Bound::Excluded(v) => Bound::Excluded(encoded(v)?),
                })
            };
            (map(start)?, map(end)?)
        }
    })
}

fn plan(barrel: u64, q: &Query) -> Result<Plan> {
    if q.path.is_empty() {
        return Err(bad("empty path"));
    }
    let mut prefix = keys::index_prefix(barrel);
    let first_wild = q.path.iter().position(|p| *p == PathPattern::AnyIndex);
    let concrete = &q.path[..first_wild.unwrap_or(q.path.len())];
    for p in concrete {
        if let PathPattern::Seg(s) = p {
            encode_segment(&mut prefix, s);
        }
    }
    let (vlo, vhi) = value_bounds(&q.select)?;
    if first_wild.is_some() {
        // Scan every array element under the concrete prefix and filter.
        let mut lo = prefix.clone();
        lo.push(0x02);
        let mut hi = prefix;
        hi.push(0x03);
        return Ok(Plan {
            lo,
            hi,
            wildcard: Some(Filter {
                path: q.path.clone(),
                lo: vlo,
                hi: vhi,
            }),
        });
    }
    let with = |v: &[u8]| [prefix.as_slice(), v].concat();
    let succ = |k: Vec<u8>| prefix_successor(&k).unwrap_or(k);
    let lo = match &vlo {
        Bound::Unbounded => with(&[VALUE_TAGS.0]),
        Bound::Included(v) => with(v),
        Bound::Excluded(v) => succ(with(v)),
    };
    let hi = match &vhi {
        Bound::Unbounded => with(&[VALUE_TAGS.1]),
        Bound::Included(v) => succ(with(v)),
        Bound::Excluded(v) => with(v),
    };
    Ok(Plan {
        lo,
        hi,
        wildcard: None,
    })
}

/// A query in progress: a snapshot of the store and a position in the index. Rows come in
/// chunks ([`QueryCursor::next_chunk`]), all from the same snapshot.
pub struct QueryCursor {
    // Field order matters: the snapshots borrow `store.index_db` and `store.db` and must be
    // dropped first.
    index_snapshot: SnapshotWithThreadMode<'static, DB>,
    snapshot: SnapshotWithThreadMode<'static, DB>,
    store: Arc<Store>,
    barrel: u64,
    plan: Plan,
    descending: bool,
    include_docs: bool,
    seen: HashSet<String>,
    done: bool,
}

/// A snapshot with its borrow erased.
///
/// # Safety
/// The caller keeps the database alive (and in place) for as long as the snapshot.
unsafe fn widen(s: SnapshotWithThreadMode<'_, DB>) -> SnapshotWithThreadMode<'static, DB> {
    // SAFETY: only the lifetime changes; the caller upholds it.
    unsafe {
        std::mem::transmute::<SnapshotWithThreadMode<'_, DB>, SnapshotWithThreadMode<'static, DB>>(
            s,
        )
    }
}

impl QueryCursor {
    pub(crate) fn new(store: Arc<Store>, barrel: u64, q: &Query) -> Result<QueryCursor> {
        let plan = plan(barrel, q)?;
        // The index first: every document an entry names is in the later document snapshot.
        // SAFETY: the snapshots borrow `store.index_db` and `store.db`, which live (behind
        // `Arc`s) in the `Arc<Store>` kept in this struct; the snapshot fields are declared (so
        // dropped) before it, and the databases do not move when the cursor moves. The lifetime
        // is only widened, never used beyond the cursor's own.
        let index_snapshot = unsafe { widen(store.index_db.snapshot()) };
        let snapshot = unsafe { widen(store.db.snapshot()) };
        Ok(QueryCursor {
            index_snapshot,
            snapshot,
            store,
            barrel,
            plan,
            descending: q.descending,
            include_docs: q.include_docs,
            seen: HashSet::new(),
            done: false,
        })
    }

    /// Up to `n` more rows; fewer (possibly none) when the query is exhausted.
    pub fn next_chunk(&mut self, n: usize) -> Result<Vec<QueryRow>> {
        let mut rows = Vec::new();
        if self.done || n == 0 {
            return Ok(rows);
        }
        if self.store.is_closing() {
            return Err(Error::Closed);
        }
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(self.plan.lo.clone());
        ro.set_iterate_upper_bound(self.plan.hi.clone());
        let mode = if self.descending {
            IteratorMode::End
        } else {
            IteratorMode::Start
        };
        let iter = self.index_snapshot.iterator_opt(mode, ro);
        let prefix_len = keys::index_prefix(self.barrel).len();
        let mut last: Option<Vec<u8>> = None;
        for item in iter {
            let (key, _) = item?;
            last = Some(key.to_vec());
            let entry = decode_entry(&key[prefix_len..])
                .ok_or_else(|| Error::Corrupt("index entry".into()))?;
            if let Some(filter) = &self.plan.wildcard {
                let value = &key[prefix_len + entry.value_at..prefix_len + entry.value_end];
                if !filter.accepts(&entry.path, value) || !self.seen.insert(entry.id.clone()) {
                    continue;
                }
            }
            let doc = if self.include_docs {
                Some(self.read_doc(&entry.id)?)
            } else {
                None
            };
            rows.push(QueryRow {
                id: entry.id,
                value: entry.value,
                doc,
            });
            if rows.len() == n {
                break;
            }
        }
        match last {
            Some(k) if rows.len() == n => {
                // Resume after the last key seen.
                if self.descending {
                    self.plan.hi = k;
                } else {
                    let mut next = k;
                    next.push(0);
                    self.plan.lo = next;
                }
            }
            _ => self.done = true,
        }
        Ok(rows)
    }

    fn read_doc(&self, id: &str) -> Result<Body> {
        let raw = self
            .snapshot
            .get_cf(self.store.cf(CF_DOCS), keys::doc(self.barrel, id))?
            .ok_or_else(|| Error::Corrupt(format!("index entry for missing doc {id}")))?;
        let rec =
            DocRecord::decode(&raw).ok_or_else(|| Error::Corrupt("document record".into()))?;
        let winner = rec
            .tree
            .winner()
            .ok_or_else(|| Error::Corrupt("empty revision tree".into()))?;
        let body =
            decode_body(&rec.winner_body).ok_or_else(|| Error::Corrupt("document body".into()))?;
        Ok(decorate_doc(body, id, &winner.rev, winner.deleted))
    }
}

impl Barrel {
    /// Starts a query; read its rows with [`QueryCursor::next_chunk`].
    pub fn query_cursor(&self, q: &Query) -> Result<QueryCursor> {
        let store = self.store()?;
        // Read your writes: every write committed before the query is in the index it reads.
        store.indexer.wait_indexed(self.inner())?;
        QueryCursor::new(store, self.id(), q)
    }

    /// Calls `f` on each matching document, in index order, until it returns `false` or
    /// `limit` rows were seen; returns the number of rows passed to `f`.
    pub fn query<F>(&self, q: &Query, limit: Option<usize>, mut f: F) -> Result<usize>
    where
        F: FnMut(QueryRow) -> bool,
    {
        let mut cursor = self.query_cursor(q)?;
        let mut left = limit.unwrap_or(usize::MAX);
        let mut count = 0;
        while left > 0 {
            let rows = cursor.next_chunk(left.min(256))?;
            if rows.is_empty() {
                break;
            }
            for row in rows {
                count += 1;
                left -= 1;
                if !f(row) {
                    return Ok(count);
                }
            }
        }
        Ok(count)
    }
}
