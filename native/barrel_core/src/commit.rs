//! Group commit: concurrent writers share RocksDB write batches.
//!
//! A writer queues its operation. If no commit is running it becomes the leader: it takes every
//! queued operation, applies them in order into one `WriteBatch` (reading current documents and
//! seeing the batch's own earlier writes through an overlay), writes the batch once, and hands
//! each writer its result. When the leader has its own result it passes leadership to the oldest
//! waiting writer, so no caller works for others indefinitely. Because exactly one leader applies
//! writes at a time, read-modify-write of revision trees needs no further locking: of concurrent
//! edits to the same parent revision exactly one wins, the others get `conflict`.

use crate::doc::{encode_body, generate_id, rev_hash, DocInput, DocRecord, MAX_DOC_SIZE};
use crate::error::{DocError, Error, Result};
use crate::revtree::{Rev, RevTree};
use crate::store::{keys, BarrelInner, Stats, Store, CF_DOCS, CF_META, CF_REVS, CF_SEQS};
use parking_lot::{Condvar, Mutex};
use rocksdb::{WriteBatch, WriteOptions};
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

/// A write operation submitted to the committer.
pub(crate) enum Op {
    /// Save documents (one result per document).
    Save {
        barrel: Arc<BarrelInner>,
        docs: Vec<DocInput>,
        new_edits: bool,
    },
    /// Remove a barrel's data.
    Drop { barrel: Arc<BarrelInner> },
}

/// The outcome of an [`Op`].
pub(crate) enum OpResult {
    Saved(Vec<Result<(String, Rev)>>),
    Dropped,
}

enum SlotState {
    Waiting,
    Lead,
    Done(Result<OpResult>),
}

struct Slot {
    op: Mutex<Option<Op>>,
    state: Mutex<SlotState>,
    wake: Condvar,
}

#[derive(Default)]
struct Queue {
    pending: Vec<Arc<Slot>>,
    leading: bool,
}

/// The group-commit queue of a store.
#[derive(Default)]
pub(crate) struct Committer {
    queue: Mutex<Queue>,
}

impl Committer {
    /// Runs `op` as part of a shared batch and returns its result.
    pub(crate) fn submit(&self, store: &Store, op: Op) -> Result<OpResult> {
        let me = Arc::new(Slot {
            op: Mutex::new(Some(op)),
            state: Mutex::new(SlotState::Waiting),
            wake: Condvar::new(),
        });
        {
            let mut q = self.queue.lock();
            q.pending.push(me.clone());
            if q.leading {
                drop(q);
                let mut st = me.state.lock();
                loop {
                    match std::mem::replace(&mut *st, SlotState::Waiting) {
                        SlotState::Done(r) => return r,
                        SlotState::Lead => break,
                        SlotState::Waiting => me.wake.wait(&mut st),
                    }
                }
            } else {
                q.leading = true;
            }
        }
        // Leader: commit groups until our own operation is done, then hand over.
        loop {
            let group = std::mem::take(&mut self.queue.lock().pending);
            self.commit_group(store, &group);
            let mut q = self.queue.lock();
            let done = matches!(*me.state.lock(), SlotState::Done(_));
            if done {
                if q.pending.is_empty() {
                    q.leading = false;
                } else {
                    let next = q.pending[0].clone();
                    *next.state.lock() = SlotState::Lead;
                    next.wake.notify_one();
                }
                drop(q);
                let result = std::mem::replace(&mut *me.state.lock(), SlotState::Waiting);
                return match result {
                    SlotState::Done(r) => r,
                    _ => Err(Error::Internal("commit slot lost its result".into())),
                };
            }
        }
    }

    fn commit_group(&self, store: &Store, group: &[Arc<Slot>]) {
        let ops: Vec<Option<Op>> = group.iter().map(|s| s.op.lock().take()).collect();
        let results =
            catch_unwind(AssertUnwindSafe(|| apply_group(store, ops))).unwrap_or_else(|p| {
                let msg = crate::panic_message(&p);
                group
                    .iter()
                    .map(|_| Err(Error::Internal(msg.clone())))
                    .collect()
            });
        for (slot, result) in group.iter().zip(results) {
            let mut st = slot.state.lock();
            *st = SlotState::Done(result);
            slot.wake.notify_one();
        }
    }
}

/// What a document write turns into.
enum Outcome {
    /// Store this tree; `Rev` is the revision written.
    Write(RevTree, Rev),
    /// The revision is already stored as given.
    Unchanged(Rev),
}

/// Uncommitted state of the batch being built, read before the database.
#[derive(Default)]
struct Overlay {
    records: HashMap<Vec<u8>, Option<(DocRecord, usize)>>,
    bodies: HashMap<Vec<u8>, Option<Vec<u8>>>,
}

struct GroupWriter<'a> {
    store: &'a Store,
    batch: WriteBatch,
    overlay: Overlay,
    stats: HashMap<u64, (Arc<BarrelInner>, Stats)>,
}

fn apply_group(store: &Store, ops: Vec<Option<Op>>) -> Vec<Result<OpResult>> {
    let mut w = GroupWriter {
        store,
        batch: WriteBatch::default(),
        overlay: Overlay::default(),
        stats: HashMap::new(),
    };
    let mut sync = false;
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        results.push(match op {
            None => Err(Error::Internal("operation taken twice".into())),
            Some(Op::Save {
                barrel,
                docs,
                new_edits,
            }) => {
                if barrel.deleted.load(std::sync::atomic::Ordering::SeqCst) {
                    Err(Error::NotFound)
                } else {
                    sync |= barrel.config.sync;
                    let saved = docs
                        .into_iter()
                        .map(|d| w.save(&barrel, d, new_edits))
                        .collect();
                    Ok(OpResult::Saved(saved))
                }
            }
            Some(Op::Drop { barrel }) => {
                store.drop_barrel_into(&mut w.batch, &barrel);
                w.stats.remove(&barrel.id);
                sync = true;
                Ok(OpResult::Dropped)
            }
        });
    }
    let meta = store.cf(CF_META);
    for (id, (barrel, stats)) in &w.stats {
        if !barrel.deleted.load(std::sync::atomic::Ordering::SeqCst) {
            w.batch.put_cf(meta, keys::stats(*id), stats.encode());
        }
    }
    if w.batch.is_empty() {
        return results;
    }
    let mut wo = WriteOptions::default();
    wo.set_sync(sync);
    match store.db.write_opt(std::mem::take(&mut w.batch), &wo) {
        Ok(()) => {
            for (barrel, stats) in w.stats.values() {
                *barrel.stats.lock() = *stats;
            }
            results
        }
        Err(e) => {
            let e = Error::from(e);
            results.into_iter().map(|_| Err(e.clone())).collect()
        }
    }
}

impl GroupWriter<'_> {
    fn read_record(&mut self, key: &[u8]) -> Result<Option<(DocRecord, usize)>> {
        if let Some(r) = self.overlay.records.remove(key) {
            return Ok(r);
        }
        match self.store.db.get_pinned_cf(self.store.cf(CF_DOCS), key)? {
            None => Ok(None),
            Some(v) => DocRecord::decode(&v)
                .map(|r| Some((r, v.len())))
                .ok_or_else(|| Error::Corrupt("document record".into())),
        }
    }

    fn read_body(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(b) = self.overlay.bodies.get(key) {
            return Ok(b.clone());
        }
        Ok(self.store.db.get_cf(self.store.cf(CF_REVS), key)?)
    }

    fn put_body(&mut self, key: Vec<u8>, body: Vec<u8>) {
        self.batch.put_cf(self.store.cf(CF_REVS), &key, &body);
        self.overlay.bodies.insert(key, Some(body));
    }

    fn delete_body(&mut self, key: Vec<u8>) {
        self.batch.delete_cf(self.store.cf(CF_REVS), &key);
        self.overlay.bodies.insert(key, None);
    }

    /// Applies one document write to the batch.
    fn save(
        &mut self,
        barrel: &Arc<BarrelInner>,
        doc: DocInput,
        new_edits: bool,
    ) -> Result<(String, Rev)> {
        let body = encode_body(&doc.body);
        if body.len() > MAX_DOC_SIZE {
            return Err(DocError::TooLarge(format!("body over {MAX_DOC_SIZE} bytes")).into());
        }
        if !new_edits && doc.rev.is_none() {
            return Err(DocError::MissingRev.into());
        }
        let id = doc.id.clone().unwrap_or_else(generate_id);
        let key = keys::doc(barrel.id, &id);
        let current = self.read_record(&key)?;
        let result = if new_edits {
            Self::edit(current.as_ref().map(|c| &c.0), &doc, &body)
        } else {
            Self::merge(current.as_ref().map(|c| &c.0), &doc)
        };
        let (mut tree, rev) = match result {
            Ok(Outcome::Write(tree, rev)) => (tree, rev),
            Ok(Outcome::Unchanged(rev)) => {
                // An already-known revision: nothing to write, same answer.
                self.overlay.records.insert(key, current);
                return Ok((id, rev));
            }
            Err(e) => {
                self.overlay.records.insert(key, current);
                return Err(e);
            }
        };
        tree.stem(barrel.config.revs_limit);
        self.write_record(barrel, &id, key, current, tree, (rev.clone(), body))?;
        Ok((id, rev))
    }

    /// A local edit: must extend a current leaf (or a deleted winner, or create the doc).
    fn edit(current: Option<&DocRecord>, doc: &DocInput, body: &[u8]) -> Result<Outcome> {
        let (tree, parent) = match current {
            None if doc.rev.is_some() => return Err(Error::Conflict),
            None => (RevTree::new(), None),
            Some(rec) => {
                let parent = match &doc.rev {
                    Some(r) if rec.tree.is_leaf(r) => r.clone(),
                    Some(_) => return Err(Error::Conflict),
                    None => match rec.tree.winner() {
                        Some(w) if w.deleted => w.rev,
                        _ => return Err(Error::Conflict),
                    },
                };
                (rec.tree.clone(), Some(parent))
            }
        };
        let gen = parent.as_ref().map_or(1, |p| p.gen + 1);
        let rev = Rev::new(gen, rev_hash(parent.as_ref(), doc.deleted, body));
        let mut tree = tree;
        tree.add_child(parent.as_ref(), rev.clone(), doc.deleted);
        Ok(Outcome::Write(tree, rev))
    }

    /// A replicated revision (`new_edits => false`): merged into the tree as given. A revision
    /// already known is rewritten only when the merge taught the tree something (ancestry, a
    /// deletion); the same revision id always carries the same body.
    fn merge(current: Option<&DocRecord>, doc: &DocInput) -> Result<Outcome> {
        let rev = doc.rev.clone().ok_or(DocError::MissingRev)?;
        let path = doc.revisions.clone().unwrap_or_else(|| vec![rev.clone()]);
        let mut tree = current.map(|c| c.tree.clone()).unwrap_or_default();
        if tree.merge_path(&path, doc.deleted) {
            Ok(Outcome::Write(tree, rev))
        } else {
            Ok(Outcome::Unchanged(rev))
        }
    }

    /// Writes the record of a document whose tree became `tree`, with `new_body` the body of a
    /// newly written revision. Keeps the winner's body inline and other leaves' bodies in `revs`.
    fn write_record(
        &mut self,
        barrel: &Arc<BarrelInner>,
        id: &str,
        key: Vec<u8>,
        old: Option<(DocRecord, usize)>,
        tree: RevTree,
        new_body: (Rev, Vec<u8>),
    ) -> Result<()> {
        let winner = tree
            .winner()
            .ok_or_else(|| Error::Internal("empty revision tree".into()))?;
        let old_winner = old.as_ref().and_then(|(r, _)| r.tree.winner());
        let (old_rec, old_len) = match old {
            Some((r, len)) => (Some(r), len),
            None => (None, 0),
        };
        let (new_rev, new_body) = new_body;
        let new_is_leaf = tree.is_leaf(&new_rev);
        let mut old_winner_body = old_rec.as_ref().map(|r| r.winner_body.clone());

        // Body of the (possibly new) winner.
        let winner_body = if winner.rev == new_rev {
            new_body.clone()
        } else if old_winner.as_ref().map(|w| &w.rev) == Some(&winner.rev) {
            old_winner_body.take().unwrap_or_default()
        } else {
            let k = keys::rev(barrel.id, id, &winner.rev);
            let b = self.read_body(&k)?.unwrap_or_else(|| b"{}".to_vec());
            self.delete_body(k);
            b
        };
        // The old winner, still a leaf but no longer winning, moves to `revs`.
        if let (Some(ow), Some(body)) = (&old_winner, old_winner_body) {
            if ow.rev != winner.rev && tree.is_leaf(&ow.rev) {
                self.put_body(keys::rev(barrel.id, id, &ow.rev), body);
            }
        }
        // The new revision, when it is a losing leaf, goes to `revs`.
        if new_is_leaf && new_rev != winner.rev {
            self.put_body(keys::rev(barrel.id, id, &new_rev), new_body);
        }
        // Old losing leaves that stopped being leaves lose their body.
        if let Some(rec) = &old_rec {
            for leaf in rec.tree.leaves() {
                let was_winner = old_winner.as_ref().map(|w| &w.rev) == Some(&leaf.rev);
                if !was_winner && !tree.is_leaf(&leaf.rev) {
                    self.delete_body(keys::rev(barrel.id, id, &leaf.rev));
                }
            }
        }

        let st = &mut self
            .stats
            .entry(barrel.id)
            .or_insert_with(|| (barrel.clone(), *barrel.stats.lock()))
            .1;
        st.updated_seq += 1;
        let seq = st.updated_seq;
        match &old_winner {
            None => {}
            Some(w) if w.deleted => st.deleted_count = st.deleted_count.saturating_sub(1),
            Some(_) => st.docs_count = st.docs_count.saturating_sub(1),
        }
        if winner.deleted {
            st.deleted_count += 1;
        } else {
            st.docs_count += 1;
        }
        let record = DocRecord {
            seq,
            tree,
            winner_body,
        };
        let value = record.encode();
        st.data_size = (st.data_size + value.len() as u64).saturating_sub(old_len as u64);

        let seqs = self.store.cf(CF_SEQS);
        if let Some(rec) = &old_rec {
            self.batch.delete_cf(seqs, keys::seq(barrel.id, rec.seq));
        }
        self.batch
            .put_cf(seqs, keys::seq(barrel.id, seq), id.as_bytes());
        self.batch.put_cf(self.store.cf(CF_DOCS), &key, &value);
        let len = value.len();
        self.overlay.records.insert(key, Some((record, len)));
        Ok(())
    }
}
