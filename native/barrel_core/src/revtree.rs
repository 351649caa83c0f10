//! Revision ids and CouchDB-compatible revision trees.
//!
//! A document's history is a forest of revisions (several roots appear when old history is
//! stemmed away, or when replicas created the same id independently). Each node knows its parent
//! and whether it is a deletion; leaves are the current revisions. The winner is chosen by
//! CouchDB's rule (live before deleted, then highest generation, then highest hash), so every
//! replica holding the same tree shows the same winner.
//!
//! The tree is a `BTreeMap` keyed by revision, so two trees built from the same revisions in any
//! order are equal, and merging is a set union with parent links filled in.

use crate::error::DocError;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Longest accepted revision hash, in characters.
pub const MAX_REV_HASH_LEN: usize = 64;

/// A revision id: `Generation-Hash`, e.g. `3-8f4a…`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rev {
    /// Distance from the first revision (which has generation 1).
    pub gen: u64,
    /// Lowercase hex digest of the parent rev, deletion flag and body.
    pub hash: String,
}

impl Rev {
    /// Builds a revision from its parts.
    pub fn new(gen: u64, hash: impl Into<String>) -> Rev {
        Rev {
            gen,
            hash: hash.into(),
        }
    }

    /// Parses `Generation-Hash`; the generation is ≥ 1 and the hash 1 to 64 hex digits.
    pub fn parse(s: &str) -> Result<Rev, DocError> {
        let bad = || DocError::BadRev(s.to_string());
        let (g, h) = s.split_once('-').ok_or_else(bad)?;
        if g.is_empty() || g.len() > 19 || !g.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let gen: u64 = g.parse().map_err(|_| bad())?;
        Self::check_hash(h).map_err(|_| bad())?;
        if gen == 0 {
            return Err(bad());
        }
        Ok(Rev::new(gen, h))
    }

    /// Checks that a hash has the accepted shape (1 to 64 hex digits, any case).
    pub fn check_hash(h: &str) -> Result<(), DocError> {
        if h.is_empty() || h.len() > MAX_REV_HASH_LEN || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(DocError::BadRev(h.to_string()));
        }
        Ok(())
    }
}

impl fmt::Display for Rev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.gen, self.hash)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Node {
    parent: Option<Rev>,
    deleted: bool,
}

/// A leaf (current) revision and whether it is a deletion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// The leaf's revision id.
    pub rev: Rev,
    /// `true` when this leaf is a tombstone.
    pub deleted: bool,
}

/// The revision tree of one document.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RevTree {
    nodes: BTreeMap<Rev, Node>,
}

impl RevTree {
    /// An empty tree (a document never written).
    pub fn new() -> RevTree {
        RevTree::default()
    }

    /// Number of revisions held.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// `true` when the tree holds no revision.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// `true` when `rev` is in the tree.
    pub fn contains(&self, rev: &Rev) -> bool {
        self.nodes.contains_key(rev)
    }

    /// Whether `rev` is a deletion, or `None` when it is not in the tree.
    pub fn is_deleted(&self, rev: &Rev) -> Option<bool> {
        self.nodes.get(rev).map(|n| n.deleted)
    }

    fn parents(&self) -> BTreeSet<&Rev> {
        self.nodes
            .values()
            .filter_map(|n| n.parent.as_ref())
            .collect()
    }

    /// The current revisions (nodes with no child), in ascending revision order.
    pub fn leaves(&self) -> Vec<Leaf> {
        let parents = self.parents();
        self.nodes
            .iter()
            .filter(|(rev, _)| !parents.contains(rev))
            .map(|(rev, n)| Leaf {
                rev: rev.clone(),
                deleted: n.deleted,
            })
            .collect()
    }

    /// Every current revision, `winner` first, then the others in ascending order (the order
    /// of a change's `changes` with `style=all_docs`).
    pub fn leaves_winner_first(&self, winner: &Rev) -> Vec<Rev> {
        let mut out = vec![winner.clone()];
        out.extend(
            self.leaves()
                .into_iter()
                .map(|l| l.rev)
                .filter(|r| r != winner),
        );
        out
    }

    /// `true` when `rev` is a current revision.
    pub fn is_leaf(&self, rev: &Rev) -> bool {
        self.contains(rev) && !self.nodes.values().any(|n| n.parent.as_ref() == Some(rev))
    }

    /// The winning leaf by CouchDB's rule: live before deleted, then highest generation, then
    /// highest hash.
    pub fn winner(&self) -> Option<Leaf> {
        self.leaves()
            .into_iter()
            .max_by(|a, b| (!a.deleted, &a.rev).cmp(&(!b.deleted, &b.rev)))
    }

    /// The ancestry of `rev`, newest first, starting with `rev` itself.
    pub fn history(&self, rev: &Rev) -> Vec<Rev> {
        let mut out = Vec::new();
        let mut cur = self.nodes.get_key_value(rev);
        while let Some((r, node)) = cur {
            out.push(r.clone());
            cur = node
                .parent
                .as_ref()
                .and_then(|p| self.nodes.get_key_value(p));
        }
        out
    }

    /// Adds `rev` as a child of `parent` (or as a root). Used for local edits, which the caller
    /// has already checked extend a leaf.
    pub fn add_child(&mut self, parent: Option<&Rev>, rev: Rev, deleted: bool) {
        self.nodes.insert(
            rev,
            Node {
                parent: parent.cloned(),
                deleted,
            },
        );
    }

    /// Merges a path of revisions, newest first (`path[i + 1]` is the parent of `path[i]`), whose
    /// newest revision is a deletion when `deleted` is set. Returns `true` when the tree changed.
    ///
    /// Merging is commutative and idempotent: unknown revisions are added, missing parent links
    /// are filled in, and a revision once known as a deletion stays one.
    pub fn merge_path(&mut self, path: &[Rev], deleted: bool) -> bool {
        let mut changed = false;
        for (i, rev) in path.iter().enumerate() {
            let parent = path.get(i + 1);
            let leaf_deleted = i == 0 && deleted;
            match self.nodes.get_mut(rev) {
                Some(node) => {
                    if node.parent.is_none() && parent.is_some() {
                        node.parent = parent.cloned();
                        changed = true;
                    }
                    if leaf_deleted && !node.deleted {
                        node.deleted = true;
                        changed = true;
                    }
                }
                None => {
                    self.nodes.insert(
                        rev.clone(),
                        Node {
                            parent: parent.cloned(),
                            deleted: leaf_deleted,
                        },
                    );
                    changed = true;
                }
            }
        }
        changed
    }

    /// Keeps only the `limit` newest revisions of every branch (CouchDB's `revs_limit`); revisions
    /// whose parent was dropped become roots. Returns the dropped revisions.
    pub fn stem(&mut self, limit: usize) -> Vec<Rev> {
        let limit = limit.max(1);
        let mut keep: BTreeSet<Rev> = BTreeSet::new();
        for leaf in self.leaves() {
            let mut cur = Some(leaf.rev);
            let mut depth = 0;
            while let Some(rev) = cur {
                if depth == limit {
                    break;
                }
                cur = self.nodes.get(&rev).and_then(|n| n.parent.clone());
                keep.insert(rev);
                depth += 1;
            }
        }
        if keep.len() == self.nodes.len() {
            return Vec::new();
        }
        let dropped: Vec<Rev> = self
            .nodes
            .keys()
            .filter(|r| !keep.contains(*r))
            .cloned()
            .collect();
        for r in &dropped {
            self.nodes.remove(r);
        }
        for node in self.nodes.values_mut() {
            if node.parent.as_ref().is_some_and(|p| !keep.contains(p)) {
                node.parent = None;
            }
        }
        dropped
    }

    /// Serializes the tree (see [`RevTree::decode`]).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let index: BTreeMap<&Rev, u64> = self
            .nodes
            .keys()
            .enumerate()
            .map(|(i, r)| (r, i as u64))
            .collect();
        put_varint(out, self.nodes.len() as u64);
        for (rev, node) in &self.nodes {
            put_varint(out, rev.gen);
            out.push(rev.hash.len() as u8);
            out.extend_from_slice(rev.hash.as_bytes());
            let parent = node.parent.as_ref().and_then(|p| index.get(p));
            out.push(u8::from(node.deleted) | (u8::from(parent.is_some()) << 1));
            if let Some(p) = parent {
                put_varint(out, *p);
            }
        }
    }

    /// Reads a tree written by [`RevTree::encode`] from the front of `buf`; returns the tree and
    /// the number of bytes read, or `None` when the bytes are not a valid tree.
    pub fn decode(buf: &[u8]) -> Option<(RevTree, usize)> {
        let mut pos = 0;
        let n = get_varint(buf, &mut pos)? as usize;
        if n > buf.len() {
            return None;
        }
        let mut revs: Vec<(Rev, bool, Option<u64>)> = Vec::with_capacity(n);
        for _ in 0..n {
            let gen = get_varint(buf, &mut pos)?;
            let hlen = *buf.get(pos)? as usize;
            pos += 1;
            let hash = std::str::from_utf8(buf.get(pos..pos + hlen)?)
                .ok()?
                .to_string();
            pos += hlen;
            let flags = *buf.get(pos)?;
            pos += 1;
            let parent = if flags & 2 != 0 {
                Some(get_varint(buf, &mut pos)?)
            } else {
                None
            };
            revs.push((Rev { gen, hash }, flags & 1 != 0, parent));
        }
        let mut nodes = BTreeMap::new();
        for (rev, deleted, parent) in &revs {
            let parent = match parent {
                Some(i) => Some(revs.get(*i as usize)?.0.clone()),
                None => None,
            };
            nodes.insert(
                rev.clone(),
                Node {
                    parent,
                    deleted: *deleted,
                },
            );
        }
        Some((RevTree { nodes }, pos))
    }
}

/// Appends `v` as a LEB128 varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a LEB128 varint at `*pos`, advancing it.
pub(crate) fn get_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(s: &str) -> Rev {
        Rev::parse(s).unwrap()
    }

    #[test]
    fn parse_accepts_generation_dash_hex() {
        assert_eq!(r("12-abcDEF0"), Rev::new(12, "abcDEF0"));
        assert_eq!(r("1-a").to_string(), "1-a");
    }

    #[test]
    fn parse_rejects_malformed_revs() {
        for bad in ["", "1", "-a", "0-a", "1-", "x-a", "1-xyz", "+1-a", "1-a-b"] {
            assert!(Rev::parse(bad).is_err(), "{bad}");
        }
        assert!(Rev::parse(&format!("1-{}", "a".repeat(65))).is_err());
    }

    #[test]
    fn winner_prefers_live_then_generation_then_hash() {
        let mut t = RevTree::new();
        t.merge_path(&[r("1-a")], false);
        t.merge_path(&[r("2-b"), r("1-a")], false);
        t.merge_path(&[r("2-c"), r("1-a")], false);
        assert_eq!(t.winner().unwrap().rev, r("2-c"));
        t.merge_path(&[r("3-d"), r("2-c")], true);
        assert_eq!(t.winner().unwrap().rev, r("2-b"));
        t.merge_path(&[r("3-a"), r("2-b")], true);
        let w = t.winner().unwrap();
        assert_eq!((w.rev, w.deleted), (r("3-d"), true));
    }

    #[test]
    fn leaves_and_history() {
        let mut t = RevTree::new();
        t.merge_path(&[r("3-c"), r("2-b"), r("1-a")], false);
        t.merge_path(&[r("2-f"), r("1-a")], false);
        let leaves: Vec<Rev> = t.leaves().into_iter().map(|l| l.rev).collect();
        assert_eq!(leaves, vec![r("2-f"), r("3-c")]);
        assert_eq!(t.history(&r("3-c")), vec![r("3-c"), r("2-b"), r("1-a")]);
        assert!(t.is_leaf(&r("2-f")) && !t.is_leaf(&r("1-a")));
    }

    #[test]
    fn stem_keeps_limit_newest_per_branch() {
        let mut t = RevTree::new();
        t.merge_path(&[r("4-d"), r("3-c"), r("2-b"), r("1-a")], false);
        t.merge_path(&[r("2-f"), r("1-a")], false);
        let dropped = t.stem(2);
        assert_eq!(dropped, vec![r("2-b")]);
        assert_eq!(t.history(&r("4-d")), vec![r("4-d"), r("3-c")]);
        assert_eq!(t.history(&r("2-f")), vec![r("2-f"), r("1-a")]);
    }

    #[test]
    fn merge_fills_missing_parent_and_keeps_deletion() {
        let mut t = RevTree::new();
        t.merge_path(&[r("2-b")], true);
        assert!(t.merge_path(&[r("3-c"), r("2-b"), r("1-a")], false));
        assert_eq!(t.history(&r("3-c")), vec![r("3-c"), r("2-b"), r("1-a")]);
        assert_eq!(t.is_deleted(&r("2-b")), Some(true));
        assert!(!t.merge_path(&[r("3-c"), r("2-b")], false));
    }

    #[test]
    fn decode_rejects_garbage() {
        assert!(RevTree::decode(&[5]).is_none());
        assert!(RevTree::decode(&[1, 1, 200]).is_none());
    }

    /// Random histories: a set of paths drawn from one random tree.
    fn arb_paths() -> impl Strategy<Value = Vec<(Vec<Rev>, bool)>> {
        // parent choice per node: node i's parent is one of 0..i or none (a root).
        proptest::collection::vec((any::<prop::sample::Index>(), any::<bool>(), 0u8..4), 1..24)
            .prop_map(|spec| {
                let mut revs: Vec<(Rev, Option<usize>)> = Vec::new();
                for (i, (pidx, root, salt)) in spec.iter().enumerate() {
                    let parent = if i == 0 || *root && i % 5 == 0 {
                        None
                    } else {
                        Some(pidx.index(i))
                    };
                    let gen = parent.map_or(1, |p| revs[p].0.gen + 1);
                    revs.push((Rev::new(gen, format!("{:x}{:x}", i + 10, salt)), parent));
                }
                revs.iter()
                    .enumerate()
                    .map(|(i, _)| {
                        let mut path = Vec::new();
                        let mut cur = Some(i);
                        while let Some(c) = cur {
                            path.push(revs[c].0.clone());
                            cur = revs[c].1;
                        }
                        (path, i % 3 == 0)
                    })
                    .collect()
            })
    }

    proptest! {
        #[test]
        fn merge_order_does_not_matter(paths in arb_paths(), seed in any::<u64>()) {
            let mut a = RevTree::new();
            for (p, d) in &paths { a.merge_path(p, *d); }
            let mut shuffled = paths.clone();
            let mut s = seed;
            for i in (1..shuffled.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (s >> 33) as usize % (i + 1));
            }
            let mut b = RevTree::new();
            for (p, d) in &shuffled { b.merge_path(p, *d); }
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(a.winner(), b.winner());
        }

        #[test]
        fn merge_is_idempotent(paths in arb_paths()) {
            let mut a = RevTree::new();
            for (p, d) in &paths { a.merge_path(p, *d); }
            let before = a.clone();
            for (p, d) in &paths { prop_assert!(!a.merge_path(p, *d)); }
            prop_assert_eq!(a, before);
        }

        #[test]
        fn encode_decode_roundtrip(paths in arb_paths()) {
            let mut a = RevTree::new();
            for (p, d) in &paths { a.merge_path(p, *d); }
            let mut buf = Vec::new();
            a.encode(&mut buf);
            let (b, used) = RevTree::decode(&buf).unwrap();
            prop_assert_eq!(used, buf.len());
            prop_assert_eq!(a, b);
        }

        #[test]
        fn stem_keeps_leaves_and_is_idempotent(paths in arb_paths(), limit in 1usize..6) {
            let mut a = RevTree::new();
            for (p, d) in &paths { a.merge_path(p, *d); }
            let leaves = a.leaves();
            let winner = a.winner();
            let full: Vec<usize> = leaves.iter().map(|l| a.history(&l.rev).len()).collect();
            a.stem(limit);
            prop_assert_eq!(&a.leaves(), &leaves);
            prop_assert_eq!(a.winner(), winner);
            let once = a.clone();
            prop_assert!(a.stem(limit).is_empty());
            prop_assert_eq!(&a, &once);
            prop_assert!(a.len() <= leaves.len() * limit);
            for (l, n) in a.leaves().iter().zip(full) {
                prop_assert!(a.history(&l.rev).len() >= n.min(limit));
            }
        }
    }
}
