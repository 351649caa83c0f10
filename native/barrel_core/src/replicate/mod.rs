//! Replication primitives: which revisions a barrel misses (`revs_diff`), and local
//! (non-replicated) documents where replicators keep their checkpoints (CouchDB's `_local/`).
//!
//! The replication itself (endpoints and the algorithm) is in [`endpoint`] and [`run`].
//!
//! Local documents live in their own column family, `<barrel id><id>` → JSON body. They have
//! no revision tree: each write bumps a counter revision `0-N`, and they never appear in
//! `fold_docs`, the changes feed or the index. They go with their barrel.

pub mod endpoint;
pub mod run;

use crate::barrel::Barrel;
use crate::doc::{check_doc_id, decode_body, encode_body, Body, DocRecord};
use crate::error::{DocError, Error, Result};
use crate::revtree::Rev;
use crate::store::{keys, CF_DOCS, CF_LOCAL};
use serde_json::Value;

/// What a barrel misses of the revisions of one document.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RevsDiff {
    /// The revisions given that the barrel does not have.
    pub missing: Vec<Rev>,
    /// Leaves the barrel has with a lower generation than a missing revision: possible
    /// ancestors, so the sender may send only what follows them.
    pub possible_ancestors: Vec<Rev>,
}

/// Longest local document id, in bytes.
pub const MAX_LOCAL_ID: usize = 1024;

fn check_local_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_LOCAL_ID {
        return Err(DocError::InvalidDocId(id.to_string()).into());
    }
    Ok(())
}

impl Barrel {
    /// Which of `revs` (revisions of document `id`) this barrel does not have. A document it
    /// does not know misses them all.
    pub fn revs_diff(&self, id: &str, revs: &[Rev]) -> Result<RevsDiff> {
        check_doc_id(id)?;
        let store = self.store()?;
        let raw = store
            .db
            .get_pinned_cf(store.cf(CF_DOCS), keys::doc(self.id(), id))?;
        let Some(raw) = raw else {
            return Ok(RevsDiff {
                missing: revs.to_vec(),
                possible_ancestors: Vec::new(),
            });
        };
        let (_, tree, _) = DocRecord::decode_parts(&raw)
            .ok_or_else(|| Error::Corrupt("document record".into()))?;
        let mut missing: Vec<Rev> = revs.iter().filter(|r| !tree.contains(r)).cloned().collect();
        missing.dedup();
        let max_gen = missing.iter().map(|r| r.gen).max().unwrap_or(0);
        let possible_ancestors = if missing.is_empty() {
            Vec::new()
        } else {
            tree.leaves()
                .into_iter()
                .map(|l| l.rev)
                .filter(|r| r.gen < max_gen)
                .collect()
        };
        Ok(RevsDiff {
            missing,
            possible_ancestors,
        })
    }

    /// The local document `id` (without the `_local/` prefix), with `_rev` (`0-N`).
    pub fn get_local(&self, id: &str) -> Result<Body> {
        check_local_id(id)?;
        let store = self.store()?;
        let raw = store
            .db
            .get_pinned_cf(store.cf(CF_LOCAL), keys::doc(self.id(), id))?
            .ok_or(Error::NotFound)?;
        decode_body(&raw).ok_or_else(|| Error::Corrupt("local document".into()))
    }

    /// Stores the local document `id`; its `_rev`, if any, is replaced by the next `0-N`,
    /// which is returned. Members other than `_rev` are kept as given.
    pub fn put_local(&self, id: &str, mut body: Body) -> Result<String> {
        check_local_id(id)?;
        let store = self.store()?;
        let key = keys::doc(self.id(), id);
        let cf = store.cf(CF_LOCAL);
        let n: u64 = match store.db.get_pinned_cf(cf, &key)? {
            Some(raw) => decode_body(&raw)
                .and_then(|b| b.get("_rev").and_then(Value::as_str).map(str::to_string))
                .and_then(|r| r.strip_prefix("0-").and_then(|n| n.parse().ok()))
                .unwrap_or(0),
            None => 0,
        };
        let rev = format!("0-{}", n + 1);
        body.insert("_rev".into(), Value::String(rev.clone()));
        store.db.put_cf(cf, &key, encode_body(&body))?;
        Ok(rev)
    }

    /// Removes the local document `id`.
    pub fn delete_local(&self, id: &str) -> Result<()> {
        check_local_id(id)?;
        let store = self.store()?;
        let key = keys::doc(self.id(), id);
        let cf = store.cf(CF_LOCAL);
        if store.db.get_pinned_cf(cf, &key)?.is_none() {
            return Err(Error::NotFound);
        }
        store.db.delete_cf(cf, &key)?;
        Ok(())
    }
}
