//! Group commit: concurrent writers share RocksDB write batches.
//!
//! Every store has one writer thread. Callers queue an operation with a reply callback and go
//! on (the BEAM binding sends the reply as a message, so no scheduler thread waits) or block on
//! the reply (`submit`). The writer takes everything queued, applies it in order into one
//! `WriteBatch` (reading current documents, and seeing the batch's own earlier writes through an
//! overlay), writes the batch once, then runs each reply. While it commits, new operations queue
//! up and form the next group, so the busier the store, the larger the batches. Because a single
//! thread applies writes, read-modify-write of revision trees needs no further locking: of
//! concurrent edits to the same parent revision exactly one wins, the others get `conflict`.
//!
//! A small save to a barrel without subscribers that finds the store idle (no group being
//! applied, nothing queued) is committed on the caller's thread instead
//! ([`Committer::submit_save`]): handing it to the writer and the reply back cost two thread
//! wake-ups, more than the commit itself when one process writes in a loop. The caller then holds the writer's role (`Shared::role`), so writes are
//! still applied one group at a time. It never blocks: it reads only documents already in
//! memory, asks RocksDB not to stall the write, and otherwise queues the write (or, once the
//! batch is built, hands it to the writer thread to commit).

use crate::attachment::{self as att, body_digests, Md5Digest};
use crate::changes::{Change, LiveChange};
use crate::doc::{generate_id, DocInput, DocRecord};
use crate::error::{DocError, Error, Result};
use crate::index;
use crate::indexer::{self, Backlog, IndexJob, IndexWrites, NewEntries};
use crate::revtree::{Rev, RevTree};
use crate::store::{
    keys, BarrelInner, Stats, Store, CF_ATTS, CF_DOCS, CF_META, CF_PENDING, CF_REVS, CF_SEQS,
};
use parking_lot::{Condvar, Mutex};
use rocksdb::{ErrorKind, ReadOptions, ReadTier, WriteBatch, WriteOptions};
use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
    /// Rebuild a barrel's path index from its documents.
    Reindex { barrel: Arc<BarrelInner> },
    /// Nothing: answered once every operation queued before it is committed.
    Barrier,
    /// Remove an attachment content if nothing refers to it (after its last reader went).
    Collect {
        barrel: Arc<BarrelInner>,
        digest: Md5Digest,
    },
    /// Commit a batch built by a caller whose own commit would have stalled (internal).
    Commit(Box<Built>),
    /// Marks the end of a group (internal).
    End,
}

/// The outcome of an [`Op`].
pub(crate) enum OpResult {
    Saved(Vec<Result<(String, Rev)>>),
    Dropped,
    /// The number of documents reindexed.
    Reindexed(u64),
    /// A barrier passed.
    Passed,
}

/// Runs once with the result of an operation, on the writer thread.
pub(crate) type Reply = Box<dyn FnOnce(Result<OpResult>) + Send>;

struct Pending {
    op: Op,
    reply: Reply,
}

#[derive(Default)]
struct Queue {
    pending: Vec<Pending>,
    stop: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    /// Set when an operation is queued, so the writer can poll without the lock.
    queued: AtomicBool,
    /// Held while operations are applied: by the writer thread for a queued group, or by a
    /// caller committing its own save inline.
    role: Mutex<()>,
}

/// How long the writer polls for more work before it sleeps. A caller that writes in a loop
/// sends its next operation a few microseconds after its reply; catching it while polling
/// saves a sleep and a wake-up on each side, which cost more than the poll. The writer only
/// polls while work keeps arriving within this time, so a lightly loaded store does not spin.
const WRITER_POLL: Duration = Duration::from_micros(50);

/// Most documents a save may have to be committed on the caller's thread (more go through the
/// writer thread, so a scheduler thread never applies a large batch).
const INLINE_MAX_DOCS: usize = 64;

/// The group-commit queue of a store and its writer thread.
pub(crate) struct Committer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// The indexer's back pressure: no inline commit while it holds the writer back.
    backlog: Option<Backlog>,
}

impl Committer {
    /// Starts the writer thread of `store` (a weak reference, so the thread does not keep the
    /// store open); `backlog` is the store's indexer's.
    pub(crate) fn start(store: Weak<Store>, backlog: Backlog) -> Result<Committer> {
        let shared = Arc::new(Shared::default());
        let thread_shared = shared.clone();
        let thread_backlog = backlog.clone();
        let thread = std::thread::Builder::new()
            .name("barrel-writer".into())
            .spawn(move || writer_loop(&thread_shared, &store, &thread_backlog))
            .map_err(|e| Error::Internal(format!("cannot start the writer thread: {e}")))?;
        Ok(Committer {
            shared,
            thread: Some(thread),
            backlog: Some(backlog),
        })
    }

    /// A committer without a thread, refusing every operation with `Closed` (used only when
    /// the thread could not be started, so `Store::open` can fail cleanly).
    pub(crate) fn stopped() -> Committer {
        let shared = Arc::new(Shared::default());
        shared.queue.lock().stop = true;
        Committer {
            shared,
            thread: None,
            backlog: None,
        }
    }

    /// Queues `op`; `reply` runs on the writer thread once the op's group is committed (or
    /// failed).
    pub(crate) fn submit_with(&self, op: Op, reply: Reply) {
        let mut q = self.shared.queue.lock();
        if q.stop {
            drop(q);
            reply(Err(Error::Closed));
            return;
        }
        q.pending.push(Pending { op, reply });
        self.shared.queued.store(true, Ordering::Release);
        if q.pending.len() == 1 {
            self.shared.wake.notify_one();
        }
    }

    /// Commits a save of `store`: on the calling thread when the store is idle and the save
    /// small (see the module documentation), `reply` then runs before this returns; otherwise
    /// as [`Committer::submit_with`] does. Never blocks either way.
    pub(crate) fn submit_save(&self, store: &Store, op: Op, reply: Reply) {
        if let Some((op, reply)) = self.try_inline(store, op, reply) {
            self.submit_with(op, reply);
        }
    }

    /// Commits `op` inline if it can, or gives it back (untouched but for generated ids).
    fn try_inline(&self, store: &Store, mut op: Op, reply: Reply) -> Option<(Op, Reply)> {
        let Op::Save { barrel, docs, .. } = &mut op else {
            return Some((op, reply));
        };
        // A synced write waits for the disk; attachments need reads of their contents. Writes
        // to a barrel with subscribers stay with the writer thread, which delivers small
        // commits itself (a caller's thread may not: see `Notifier::publish`), the shortest
        // way from a write to its listeners.
        let small = docs.len() <= INLINE_MAX_DOCS
            && !barrel.config.sync
            && !barrel.listeners.any()
            && docs
                .iter()
                .all(|d| d.att_digests.is_empty() && d.blobs.is_empty());
        if !small {
            return Some((op, reply));
        }
        let Some(role) = self.shared.role.try_lock() else {
            return Some((op, reply));
        };
        {
            let q = self.shared.queue.lock();
            if !q.pending.is_empty() || q.stop {
                return Some((op, reply));
            }
        }
        if self.backlog.as_ref().is_none_or(Backlog::over_limit) {
            return Some((op, reply));
        }
        let mut w = GroupWriter::new(store);
        match w.read_from_memory(barrel, docs) {
            Ok(true) => {}
            // Not all in memory, or a read failed (the writer thread reports it).
            Ok(false) | Err(_) => return Some((op, reply)),
        }
        // A panic must still answer the caller (who may be waiting for a message).
        let outcome = catch_unwind(AssertUnwindSafe(|| commit(store, w.build(vec![op]), true)))
            .unwrap_or_else(|p| Ok(vec![Err(Error::Internal(crate::panic_message(&p)))]));
        match outcome {
            Ok(mut results) => {
                drop(role);
                let result = results
                    .pop()
                    .unwrap_or_else(|| Err(Error::Internal("no result".into())));
                reply(result);
            }
            Err(built) => {
                // The write would stall: the writer thread commits the batch, first of all
                // (queued while this thread still holds the role, so nothing comes between).
                let mut q = self.shared.queue.lock();
                q.pending.insert(
                    0,
                    Pending {
                        op: Op::Commit(built),
                        reply,
                    },
                );
                self.shared.queued.store(true, Ordering::Release);
                self.shared.wake.notify_one();
                drop(q);
                drop(role);
            }
        }
        None
    }

    /// Runs `op` as part of a shared batch and waits for its result.
    pub(crate) fn submit(&self, op: Op) -> Result<OpResult> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.submit_with(
            op,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv()
            .unwrap_or_else(|_| Err(Error::Internal("writer thread gone".into())))
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.shared.queue.lock().stop = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            // The writer itself may drop the last reference to the store: never join oneself.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

fn writer_loop(shared: &Shared, store: &Weak<Store>, backlog: &Backlog) {
    let mut poll = false;
    loop {
        let idle_since = Instant::now();
        if poll {
            // Yielding, not spinning: on a busy machine the indexer or the caller may need
            // this core to produce the next operation.
            while !shared.queued.load(Ordering::Acquire) && idle_since.elapsed() < WRITER_POLL {
                std::thread::yield_now();
            }
        }
        {
            let mut q = shared.queue.lock();
            while q.pending.is_empty() && !q.stop {
                shared.wake.wait(&mut q);
            }
            if q.pending.is_empty() {
                return;
            }
        }
        // Back pressure: no group while the indexer is too far behind (inline commits are
        // refused meanwhile, see `Committer::try_inline`).
        backlog.wait_below_limit();
        // The role first, then the group: an inline commit in progress finishes before, and
        // none starts while the group is applied.
        let role = shared.role.lock();
        let group = {
            let mut q = shared.queue.lock();
            shared.queued.store(false, Ordering::Release);
            std::mem::take(&mut q.pending)
        };
        poll = idle_since.elapsed() < WRITER_POLL;
        let (ops, replies): (Vec<Op>, Vec<Reply>) =
            group.into_iter().map(|p| (p.op, p.reply)).unzip();
        let results = match store.upgrade() {
            Some(store) => apply_ops(&store, ops),
            None => ops.iter().map(|_| Err(Error::Closed)).collect(),
        };
        drop(role);
        for (reply, result) in replies.into_iter().zip(results) {
            // A failing reply (its receiver gone) must not stop the others.
            let _ = catch_unwind(AssertUnwindSafe(|| reply(result)));
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
    /// Changes of barrels with subscribers, published once the batch is committed.
    live: Vec<(Arc<BarrelInner>, LiveChange)>,
    /// Attachment contents registered by this batch: `(barrel id, digest)`.
    registered: HashSet<(u64, Md5Digest)>,
    /// Contents that lost a reference in this batch: removed after the commit when nothing
    /// refers to them any more.
    unreferenced: Vec<(Arc<BarrelInner>, Md5Digest)>,
    /// Index work of the batch's writes, handed to the indexer once the batch is committed.
    index_jobs: Vec<IndexJob>,
}

/// Applies a group in order: runs of writes share one batch; a reindex runs on its own, after
/// the writes queued before it are committed.
fn apply_ops(store: &Store, ops: Vec<Op>) -> Vec<Result<OpResult>> {
    let mut results = Vec::with_capacity(ops.len());
    let mut run = Vec::new();
    let guarded = |f: &mut dyn FnMut() -> Vec<Result<OpResult>>, n: usize| {
        catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
            let msg = crate::panic_message(&p);
            (0..n).map(|_| Err(Error::Internal(msg.clone()))).collect()
        })
    };
    for op in ops.into_iter().chain(std::iter::once(Op::End)) {
        match op {
            Op::Reindex { .. } | Op::Commit(_) | Op::End => {
                if !run.is_empty() {
                    let n = run.len();
                    let mut batch = Some(std::mem::take(&mut run));
                    results.extend(guarded(
                        &mut || apply_group(store, batch.take().unwrap_or_default()),
                        n,
                    ));
                }
                match op {
                    Op::Reindex { barrel } => {
                        results.extend(guarded(&mut || vec![reindex(store, &barrel)], 1));
                    }
                    Op::Commit(built) => {
                        let mut built = Some(built);
                        results.extend(guarded(
                            &mut || match built.take() {
                                Some(b) => waited(commit(store, *b, false)),
                                None => vec![Err(Error::Internal("commit taken".into()))],
                            },
                            1,
                        ));
                    }
                    _ => {}
                }
            }
            other => run.push(other),
        }
    }
    results
}

/// Rebuilds a barrel's index (on the writer thread, after the writes queued before it are
/// indexed; none comes while it runs).
fn reindex(store: &Store, barrel: &BarrelInner) -> Result<OpResult> {
    if barrel.deleted.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(Error::NotFound);
    }
    store.indexer.drain();
    Ok(OpResult::Reindexed(reindex_now(store, barrel)?))
}

/// Rebuilds a barrel's index: drops its entries, then writes those of every live document, in
/// batches of 1000 documents (sorted, see `indexer`). Readers may see a partial index until it
/// returns. Returns the number of documents indexed.
///
/// The barrel is marked as being rebuilt (in `meta`) until the index's log is synced after the
/// last batch: a run that stops or crashes in between leaves the mark, and the next open
/// rebuilds the barrel's index again (`Store::open`) instead of keeping it partial.
pub(crate) fn reindex_now(store: &Store, barrel: &BarrelInner) -> Result<u64> {
    let meta = store.cf(CF_META);
    let mark = keys::rebuilding(barrel.id);
    store.db.put_cf(meta, &mark, [])?;
    let docs = rebuild_entries(store, barrel)?;
    store.index_db.flush_wal(true)?;
    store.db.delete_cf(meta, &mark)?;
    Ok(docs)
}

/// Tests: the store whose next index rebuild fails after its first batch, as if the process
/// had stopped there.
#[cfg(test)]
pub(crate) static INTERRUPT_REBUILD_IN: Mutex<Option<std::path::PathBuf>> = Mutex::new(None);

/// The index writes of [`reindex_now`].
fn rebuild_entries(store: &Store, barrel: &BarrelInner) -> Result<u64> {
    let (start, end) = (keys::prefix(barrel.id), keys::prefix_end(barrel.id));
    // The old entries out first: the new ones, written after, are newer than this deletion
    // (also those taken in as files).
    let mut batch = WriteBatch::default();
    batch.delete_range(
        keys::index_prefix(barrel.id),
        keys::index_prefix_end(barrel.id),
    );
    store.index_db.write(batch)?;
    let mut ro = rocksdb::ReadOptions::default();
    ro.set_iterate_upper_bound(end.to_vec());
    let iter = store.db.iterator_cf_opt(
        store.cf(CF_DOCS),
        ro,
        rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward),
    );
    let (mut docs, mut writes) = (0u64, IndexWrites::default());
    // The entries of 1000 documents at a time, as the indexer writes a batch (some 30k
    // entries: taken in as a file).
    let write = |writes: &mut IndexWrites| writes.write(&store.index_db, &store.ingest);
    for item in iter {
        let (k, v) = item?;
        let rec = DocRecord::decode(&v).ok_or_else(|| Error::Corrupt("document record".into()))?;
        match rec.tree.winner() {
            Some(w) if !w.deleted => {}
            _ => continue,
        }
        let id = std::str::from_utf8(&k[start.len()..])
            .map_err(|_| Error::Corrupt("document id".into()))?;
        for entry in indexer::body_entries(id, Some(&rec.winner_body))?.iter() {
            writes.put(barrel.id, entry, id);
        }
        docs += 1;
        if docs % 1000 == 0 {
            write(&mut writes)?;
            #[cfg(test)]
            if INTERRUPT_REBUILD_IN
                .lock()
                .take_if(|p| p == store.path())
                .is_some()
            {
                return Err(Error::Internal("rebuild interrupted (test)".into()));
            }
        }
    }
    write(&mut writes)?;
    Ok(docs)
}

/// A group's writes, applied to a batch and not yet committed.
pub(crate) struct Built {
    batch: WriteBatch,
    stats: HashMap<u64, (Arc<BarrelInner>, Stats)>,
    live: Vec<(Arc<BarrelInner>, LiveChange)>,
    unreferenced: Vec<(Arc<BarrelInner>, Md5Digest)>,
    index_jobs: Vec<IndexJob>,
    /// The write waits for the disk (a barrel asks for it, or one is dropped).
    sync: bool,
    /// Barrels dropped by the group: their indexes go once it is committed.
    dropped: Vec<u64>,
    /// One per operation, as they stand if the batch is committed.
    results: Vec<Result<OpResult>>,
}

fn apply_group(store: &Store, ops: Vec<Op>) -> Vec<Result<OpResult>> {
    waited(commit(store, GroupWriter::new(store).build(ops), false))
}

/// The results of a [`commit`] allowed to wait (which never gives its group back).
fn waited(
    committed: std::result::Result<Vec<Result<OpResult>>, Box<Built>>,
) -> Vec<Result<OpResult>> {
    committed.unwrap_or_else(|b| {
        b.results
            .iter()
            .map(|_| Err(Error::Internal("commit refused".into())))
            .collect()
    })
}

/// Writes a built group, then makes it visible: barrel stats, index jobs, live changes, the
/// indexes of dropped barrels, contents no longer referenced. With `no_stall`, a write RocksDB
/// would stall or slow down is not made and the group comes back; it is also what a caller
/// committing its own save asks for, and its changes then go through the notifier thread.
fn commit(
    store: &Store,
    mut b: Built,
    no_stall: bool,
) -> std::result::Result<Vec<Result<OpResult>>, Box<Built>> {
    if !b.batch.is_empty() {
        let mut wo = WriteOptions::default();
        wo.set_sync(b.sync);
        let written = if no_stall {
            wo.set_no_slowdown(true);
            // RocksDB is given a copy: this batch stays, should the write be refused.
            store
                .db
                .write_opt(WriteBatch::from_data(b.batch.data()), &wo)
        } else {
            store.db.write_opt(std::mem::take(&mut b.batch), &wo)
        };
        match written {
            Ok(()) => {}
            Err(e) if no_stall && e.kind() == ErrorKind::Incomplete => return Err(Box::new(b)),
            Err(e) => {
                let e = Error::from(e);
                return Ok(b.results.into_iter().map(|_| Err(e.clone())).collect());
            }
        }
        for (barrel, stats) in b.stats.values() {
            *barrel.stats.lock() = *stats;
        }
        store.indexer.queue(std::mem::take(&mut b.index_jobs));
        for id in b.dropped {
            if let Err(e) = store.drop_index(id) {
                // Left for the next open to remove (see `indexer::recover`).
                eprintln!("barrel: removing a deleted barrel's index failed: {e}");
            }
        }
        publish(store, std::mem::take(&mut b.live), !no_stall);
    }
    if let Err(e) = collect_garbage(store, std::mem::take(&mut b.unreferenced)) {
        // The writes are committed; unreferenced contents stay until a later write drops
        // another reference to them.
        eprintln!("barrel: attachment garbage collection failed: {e}");
    }
    Ok(b.results)
}

/// Removes the contents no stored revision refers to any more, among those that lost a
/// reference in the last commit. Runs on the writer thread, so no write registering or
/// referring to these contents can interleave.
fn collect_garbage(
    store: &Store,
    mut candidates: Vec<(Arc<BarrelInner>, Md5Digest)>,
) -> Result<()> {
    if candidates.is_empty() {
        return Ok(());
    }
    candidates.sort_by_key(|c| (c.0.id, c.1));
    candidates.dedup_by(|a, b| a.0.id == b.0.id && a.1 == b.1);
    let cf = store.cf(CF_ATTS);
    let mut batch = WriteBatch::default();
    // Held until the deletions are written: a reader pins before it looks the content up.
    let mut pins = store.att_pins.lock();
    for (barrel, digest) in candidates {
        if barrel.deleted.load(Ordering::SeqCst) || pins.defer_if_pinned(barrel.id, digest) {
            continue;
        }
        let prefix = att::keys::refs_prefix(barrel.id, &digest);
        let referenced = match store.db.prefix_iterator_cf(cf, &prefix).next() {
            Some(item) => item?.0.starts_with(&prefix),
            None => false,
        };
        if referenced {
            continue;
        }
        let meta_key = att::keys::meta(barrel.id, &digest);
        if let Some(v) = store.db.get_pinned_cf(cf, &meta_key)? {
            if let Some((blob, length)) = att::decode_meta(&v) {
                // Point deletions (not a range): RocksDB compacts files dense in them soon
                // (see the `atts` options in `Store::open`), giving the space back.
                for n in 0..length.div_ceil(att::CHUNK_SIZE as u64) {
                    batch.delete_cf(cf, att::keys::chunk(barrel.id, blob, n));
                }
            }
            batch.delete_cf(cf, meta_key);
        }
    }
    if !batch.is_empty() {
        store.db.write(batch)?;
    }
    drop(pins);
    Ok(())
}

/// Hands the committed changes to the notifier, one event per barrel run (`may_deliver`: see
/// `Notifier::publish`).
fn publish(store: &Store, live: Vec<(Arc<BarrelInner>, LiveChange)>, may_deliver: bool) {
    let mut run: Option<(Arc<BarrelInner>, Vec<LiveChange>)> = None;
    for (barrel, change) in live {
        match &mut run {
            Some((b, changes)) if Arc::ptr_eq(b, &barrel) => changes.push(change),
            _ => {
                if let Some((b, changes)) = run.take() {
                    store.notifier.publish(b, changes, may_deliver);
                }
                run = Some((barrel, vec![change]));
            }
        }
    }
    if let Some((b, changes)) = run {
        store.notifier.publish(b, changes, may_deliver);
    }
}

impl<'a> GroupWriter<'a> {
    fn new(store: &'a Store) -> GroupWriter<'a> {
        GroupWriter {
            store,
            batch: WriteBatch::default(),
            overlay: Overlay::default(),
            stats: HashMap::new(),
            live: Vec::new(),
            registered: HashSet::new(),
            unreferenced: Vec::new(),
            index_jobs: Vec::new(),
        }
    }

    /// Reads the records of `docs` (giving an id to those without one) into the overlay, from
    /// memory only: `false` as soon as one would have to be read from disk.
    fn read_from_memory(&mut self, barrel: &BarrelInner, docs: &mut [DocInput]) -> Result<bool> {
        let mut ro = ReadOptions::default();
        ro.set_read_tier(ReadTier::BlockCache);
        for d in docs {
            let key = keys::doc(barrel.id, d.id.get_or_insert_with(generate_id));
            if self.overlay.records.contains_key(&key) {
                continue;
            }
            match self.stored_record(&key, &ro) {
                Ok(record) => self.overlay.records.insert(key, record),
                Err(Error::WouldBlock) => return Ok(false),
                Err(e) => return Err(e),
            };
        }
        Ok(true)
    }

    /// Applies a group's operations, in order, to one batch.
    fn build(mut self, ops: Vec<Op>) -> Built {
        let w = &mut self;
        let mut sync = false;
        let mut dropped = Vec::new();
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            results.push(match op {
                Op::Save {
                    barrel,
                    docs,
                    new_edits,
                } => {
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
                Op::Reindex { .. } | Op::Commit(_) | Op::End => Err(Error::Internal(
                    "reindex or commit inside a write group".into(),
                )),
                Op::Barrier => Ok(OpResult::Passed),
                Op::Collect { barrel, digest } => {
                    w.unreferenced.push((barrel, digest));
                    Ok(OpResult::Passed)
                }
                Op::Drop { barrel } => {
                    // The index goes once the drop is committed: entries the indexer wrote after
                    // that would outlive the barrel.
                    w.store.indexer.drain();
                    w.store.drop_barrel_into(&mut w.batch, &barrel);
                    dropped.push(barrel.id);
                    w.stats.remove(&barrel.id);
                    sync = true;
                    Ok(OpResult::Dropped)
                }
            });
        }
        let meta = w.store.cf(CF_META);
        for (id, (barrel, stats)) in &w.stats {
            if !barrel.deleted.load(std::sync::atomic::Ordering::SeqCst) {
                w.batch.put_cf(meta, keys::stats(*id), stats.encode());
            }
        }
        Built {
            batch: self.batch,
            stats: self.stats,
            live: self.live,
            unreferenced: self.unreferenced,
            index_jobs: self.index_jobs,
            sync,
            dropped,
            results,
        }
    }
}

impl GroupWriter<'_> {
    fn read_record(&mut self, key: &[u8]) -> Result<Option<(DocRecord, usize)>> {
        if let Some(r) = self.overlay.records.remove(key) {
            return Ok(r);
        }
        self.stored_record(key, &ReadOptions::default())
    }

    /// The stored record under `key` and its encoded size, read with `ro` (an error of a
    /// memory-only read that needed the disk becomes [`Error::WouldBlock`]).
    fn stored_record(&self, key: &[u8], ro: &ReadOptions) -> Result<Option<(DocRecord, usize)>> {
        let read = self
            .store
            .db
            .get_pinned_cf_opt(self.store.cf(CF_DOCS), key, ro);
        match read.map_err(crate::barrel::read_error)? {
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
        mut doc: DocInput,
        new_edits: bool,
    ) -> Result<(String, Rev)> {
        if !new_edits && doc.rev.is_none() {
            return Err(DocError::MissingRev.into());
        }
        if doc.has_pending_attachments() {
            return Err(Error::Internal(
                "attachments not resolved before the commit".into(),
            ));
        }
        let id = doc.id.clone().unwrap_or_else(generate_id);
        let key = keys::doc(barrel.id, &id);
        let current = self.read_record(&key)?;
        let result = if new_edits {
            Self::edit(current.as_ref().map(|c| &c.0), &doc)
        } else {
            Self::merge(current.as_ref().map(|c| &c.0), &doc)
        };
        let (mut tree, rev) = match result {
            Ok(Outcome::Write(tree, rev)) => (tree, rev),
            Ok(Outcome::Unchanged(rev)) => {
                // An already-known revision: nothing to write, same answer. Contents that came
                // with it are kept for later documents of the batch that name them (and
                // collected after the commit if none does).
                self.overlay.records.insert(key, current);
                self.take_contents(barrel, doc.take_blobs(), &[])?;
                return Ok((id, rev));
            }
            Err(e) => {
                self.overlay.records.insert(key, current);
                return Err(e);
            }
        };
        let digests = std::mem::take(&mut doc.att_digests);
        if let Err(e) = self.take_contents(barrel, doc.take_blobs(), &digests) {
            self.overlay.records.insert(key, current);
            return Err(e);
        }
        tree.stem(barrel.config.revs_limit);
        let (body, index) = doc.into_body_and_index();
        self.write_record(
            barrel,
            &id,
            key,
            current,
            tree,
            (rev.clone(), body, index, digests),
        )?;
        Ok((id, rev))
    }

    /// Registers the contents written for a revision, then checks that the barrel has every
    /// content the revision refers to (`missing_stub` otherwise).
    fn take_contents(
        &mut self,
        barrel: &Arc<BarrelInner>,
        blobs: Vec<att::NewBlob>,
        digests: &[Md5Digest],
    ) -> Result<()> {
        for blob in blobs {
            self.register(barrel, blob)?;
        }
        for d in digests {
            if !self.has_content(barrel.id, d)? {
                return Err(Error::MissingStub(att::digest_string(d)));
            }
        }
        Ok(())
    }

    /// `true` when content with digest `d` is stored in the barrel (or registered by this
    /// batch).
    fn has_content(&self, barrel: u64, d: &Md5Digest) -> Result<bool> {
        if self.registered.contains(&(barrel, *d)) {
            return Ok(true);
        }
        att::content_stored(self.store, barrel, d)
    }

    /// Makes newly written content the barrel's copy of its digest, or discards it when the
    /// barrel already has that content. Either way it is checked after the commit: removed
    /// unless a stored revision refers to it by then (the revision was already stored, or
    /// its write failed).
    fn register(&mut self, barrel: &Arc<BarrelInner>, mut blob: att::NewBlob) -> Result<()> {
        let d = blob.digest();
        self.unreferenced.push((barrel.clone(), d));
        let barrel = barrel.id;
        if blob.barrel() != barrel || self.has_content(barrel, &d)? {
            att::discard_into(&mut self.batch, self.store, blob.barrel(), blob.blob());
        } else {
            let cf = self.store.cf(CF_ATTS);
            self.batch.put_cf(
                cf,
                att::keys::meta(barrel, &d),
                att::encode_meta(blob.blob(), blob.length()),
            );
            self.batch
                .delete_cf(cf, att::keys::pending(barrel, blob.blob()));
            self.registered.insert((barrel, d));
        }
        blob.mark_saved();
        Ok(())
    }

    /// Records that revision `rev` of `id` (whose body is now stored) refers to `digests`.
    fn add_references(&mut self, barrel: u64, id: &str, rev: &Rev, digests: &[Md5Digest]) {
        let cf = self.store.cf(CF_ATTS);
        for k in att::reference_keys(barrel, id, rev, digests) {
            self.batch.put_cf(cf, k, []);
        }
    }

    /// Records that revision `rev` of `id` (whose body is no longer stored) stopped referring
    /// to `digests`.
    fn drop_references(
        &mut self,
        barrel: &Arc<BarrelInner>,
        id: &str,
        rev: &Rev,
        digests: Vec<Md5Digest>,
    ) {
        let cf = self.store.cf(CF_ATTS);
        for k in att::reference_keys(barrel.id, id, rev, &digests) {
            self.batch.delete_cf(cf, k);
        }
        self.unreferenced
            .extend(digests.into_iter().map(|d| (barrel.clone(), d)));
    }

    /// A local edit: must extend a current leaf (or a deleted winner, or create the doc).
    fn edit(current: Option<&DocRecord>, doc: &DocInput) -> Result<Outcome> {
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
        let rev = doc.next_rev(parent.as_ref());
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
        new_body: (Rev, Vec<u8>, index::Entries, Vec<Md5Digest>),
    ) -> Result<()> {
        let winner = tree
            .winner()
            .ok_or_else(|| Error::Internal("empty revision tree".into()))?;
        let old_winner = old.as_ref().and_then(|(r, _)| r.tree.winner());
        let (old_rec, old_len) = match old {
            Some((r, len)) => (Some(r), len),
            None => (None, 0),
        };
        let (new_rev, new_body, new_index, new_digests) = new_body;
        // Moved into the record when the new revision wins, into `revs` when it is a losing leaf.
        let mut new_body = Some(new_body);
        let new_is_leaf = tree.is_leaf(&new_rev);
        // Attachment references follow the stored bodies: the new revision's when it is
        // stored, the old winner's when it stops being a leaf.
        if new_is_leaf && !new_digests.is_empty() {
            self.add_references(barrel.id, id, &new_rev, &new_digests);
        }
        if let (Some(rec), Some(ow)) = (&old_rec, &old_winner) {
            if ow.rev != new_rev && !tree.is_leaf(&ow.rev) {
                let d = body_digests(&rec.winner_body);
                if !d.is_empty() {
                    self.drop_references(barrel, id, &ow.rev, d);
                }
            }
        }
        let listening = barrel.listeners.any();
        let old_live_body: Option<Arc<[u8]>> = match (&old_rec, &old_winner) {
            (Some(rec), Some(w)) if listening && !w.deleted => {
                Some(Arc::from(rec.winner_body.as_slice()))
            }
            _ => None,
        };
        let mut old_winner_body = old_rec.as_ref().map(|r| r.winner_body.clone());

        // Body of the (possibly new) winner.
        let winner_body = if winner.rev == new_rev {
            new_body.take().unwrap_or_default()
        } else if old_winner.as_ref().map(|w| &w.rev) == Some(&winner.rev) {
            old_winner_body.take().unwrap_or_default()
        } else {
            let k = keys::rev(barrel.id, id, &winner.rev);
            let b = self.read_body(&k)?.unwrap_or_else(|| b"{}".to_vec());
            self.delete_body(k);
            b
        };
        // Index entries follow the winner: those of the old live winner go, those of the new
        // live winner come. The indexer thread writes them (see `crate::indexer`).
        let old_indexed = match (&old_rec, &old_winner) {
            (Some(rec), Some(w)) if !w.deleted => Some(rec.winner_body.clone()),
            _ => None,
        };
        let new_indexed = if winner.deleted {
            NewEntries::Nothing
        } else if winner.rev == new_rev {
            let mut e = new_index;
            e.add_id(id);
            NewEntries::Entries(e)
        } else {
            NewEntries::Body(winner_body.clone())
        };
        // The old winner, still a leaf but no longer winning, moves to `revs`.
        if let (Some(ow), Some(body)) = (&old_winner, old_winner_body) {
            if ow.rev != winner.rev && tree.is_leaf(&ow.rev) {
                self.put_body(keys::rev(barrel.id, id, &ow.rev), body);
            }
        }
        // The new revision, when it is a losing leaf, goes to `revs`.
        if let Some(body) = new_body.filter(|_| new_is_leaf && new_rev != winner.rev) {
            self.put_body(keys::rev(barrel.id, id, &new_rev), body);
        }
        // Old losing leaves that stopped being leaves lose their body.
        if let Some(rec) = &old_rec {
            for leaf in rec.tree.leaves() {
                let was_winner = old_winner.as_ref().map(|w| &w.rev) == Some(&leaf.rev);
                if !was_winner && !tree.is_leaf(&leaf.rev) {
                    let k = keys::rev(barrel.id, id, &leaf.rev);
                    if let Some(b) = self.read_body(&k)? {
                        let d = body_digests(&b);
                        if !d.is_empty() {
                            self.drop_references(barrel, id, &leaf.rev, d);
                        }
                    }
                    self.delete_body(k);
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
        if listening {
            let all_leaves = tree.leaves_winner_first(&winner.rev);
            self.live.push((
                barrel.clone(),
                LiveChange {
                    change: Change {
                        id: id.to_string(),
                        seq,
                        rev: winner.rev.clone(),
                        changes: vec![winner.rev.clone()],
                        deleted: winner.deleted,
                        doc: Some(Arc::from(winner_body.as_slice())),
                    },
                    all_leaves,
                    old_body: old_live_body,
                },
            ));
        }
        let record = DocRecord {
            seq,
            tree,
            winner_body,
        };
        let value = record.encode();
        st.data_size = (st.data_size + value.len() as u64).saturating_sub(old_len as u64);

        self.batch.put_cf(
            self.store.cf(CF_PENDING),
            keys::seq(barrel.id, seq),
            indexer::encode_mark(id, old_indexed.as_deref()),
        );
        self.index_jobs.push(IndexJob {
            barrel: barrel.clone(),
            seq,
            id: id.to_string(),
            old: old_indexed,
            new: new_indexed,
        });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Barrel, BarrelConfig, FetchOptions, SaveOptions, StoreOptions};
    use serde_json::json;
    use std::sync::mpsc;
    use std::thread::ThreadId;

    fn new_barrel(dir: &std::path::Path) -> (Arc<Store>, Barrel) {
        let store = Store::open(dir, &StoreOptions::default()).unwrap();
        store.create_barrel("b", BarrelConfig::default()).unwrap();
        let b = store.open_barrel("b").unwrap();
        (store, b)
    }

    fn docs(ids: impl IntoIterator<Item = String>) -> Vec<Result<DocInput>> {
        ids.into_iter()
            .map(|id| Ok(DocInput::from_value(json!({"id": id, "v": 1})).unwrap()))
            .collect()
    }

    /// Saves `docs` with `save_docs_with`: the replying thread and the results arrive on the
    /// receiver.
    fn save_async(
        b: &Barrel,
        docs: Vec<Result<DocInput>>,
    ) -> mpsc::Receiver<(ThreadId, crate::SaveResults)> {
        let (tx, rx) = mpsc::channel();
        b.save_docs_with(docs, &SaveOptions::default(), move |r| {
            let _ = tx.send((std::thread::current().id(), r));
        });
        rx
    }

    #[test]
    fn a_small_save_on_an_idle_store_is_committed_on_the_callers_thread() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, b) = new_barrel(dir.path());
        let rx = save_async(&b, docs(["a".to_string()]));
        let (thread, result) = rx.try_recv().expect("answered before the call returned");
        assert_eq!(thread, std::thread::current().id());
        assert!(result.unwrap()[0].is_ok());
        assert!(b.fetch_doc("a", &FetchOptions::default()).is_ok());
    }

    #[test]
    fn large_saves_and_saves_while_the_role_is_held_go_through_the_writer_thread() {
        let dir = tempfile::tempdir().unwrap();
        let (store, b) = new_barrel(dir.path());
        let me = std::thread::current().id();
        // More documents than an inline commit takes.
        let rx = save_async(&b, docs((0..=INLINE_MAX_DOCS).map(|i| format!("l{i}"))));
        let (thread, result) = rx.recv().unwrap();
        assert_ne!(thread, me);
        assert!(result.unwrap().iter().all(|r| r.is_ok()));
        // While the role is held (a group being applied), a small save is queued, and
        // committed once the role is free.
        let role = store.committer.shared.role.lock();
        let rx = save_async(&b, docs(["q".to_string()]));
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        drop(role);
        let (thread, result) = rx.recv().unwrap();
        assert_ne!(thread, me);
        assert!(result.unwrap()[0].is_ok());
        // The queue is empty again: the next one is inline.
        let (thread, result) = save_async(&b, docs(["r".to_string()])).try_recv().unwrap();
        assert_eq!(thread, me);
        assert!(result.unwrap()[0].is_ok());
    }

    #[test]
    fn a_save_that_would_stall_is_committed_by_the_writer_once_writes_resume() {
        let dir = tempfile::tempdir().unwrap();
        let (store, b) = new_barrel(dir.path());
        b.save_doc(
            DocInput::from_value(json!({"id": "first"})).unwrap(),
            &SaveOptions::default(),
        )
        .unwrap();
        // One level-0 file, no compaction to remove it, and writes stop at one: RocksDB stalls
        // every write.
        let docs_cf = store.cf(CF_DOCS);
        store
            .db
            .set_options_cf(
                docs_cf,
                &[
                    ("level0_file_num_compaction_trigger", "100"),
                    ("level0_slowdown_writes_trigger", "1"),
                    ("level0_stop_writes_trigger", "1"),
                ],
            )
            .unwrap();
        store.db.flush_cf(docs_cf).unwrap();
        let rx = save_async(&b, docs(["stalled".to_string()]));
        // The call returned without waiting for the stall (the writer thread waits).
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
        store
            .db
            .set_options_cf(
                docs_cf,
                &[
                    ("level0_file_num_compaction_trigger", "4"),
                    ("level0_slowdown_writes_trigger", "20"),
                    ("level0_stop_writes_trigger", "36"),
                ],
            )
            .unwrap();
        let (thread, result) = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_ne!(thread, std::thread::current().id());
        assert!(result.unwrap()[0].is_ok());
        assert!(b.fetch_doc("stalled", &FetchOptions::default()).is_ok());
        assert_eq!(b.info().unwrap().stats.docs_count, 2);
    }

    #[test]
    fn inline_and_queued_updates_of_one_document_never_lose_an_edit() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, b) = new_barrel(dir.path());
        b.save_doc(
            DocInput::from_value(json!({"id": "c", "n": 0})).unwrap(),
            &SaveOptions::default(),
        )
        .unwrap();
        let updaters: Vec<_> = (0..4)
            .map(|t| {
                let b = b.clone();
                std::thread::spawn(move || {
                    let mut won = 0;
                    for i in 0..300 {
                        let cur = b.fetch_doc("c", &FetchOptions::default()).unwrap();
                        let rev = cur
                            .get("_rev")
                            .and_then(|r| r.as_str())
                            .unwrap()
                            .to_string();
                        let d = json!({"id": "c", "_rev": rev, "t": t, "i": i});
                        match b.save_doc(DocInput::from_value(d).unwrap(), &SaveOptions::default())
                        {
                            Ok(_) => won += 1,
                            Err(Error::Conflict) => {}
                            Err(e) => panic!("{e}"),
                        }
                    }
                    won
                })
            })
            .collect();
        // Meanwhile, batches too large to be committed inline.
        let batches = {
            let b = b.clone();
            std::thread::spawn(move || {
                for n in 0..20 {
                    let ids = (0..100).map(|i| format!("batch{n}-{i}"));
                    let r = b.save_docs(docs(ids), &SaveOptions::default()).unwrap();
                    assert!(r.iter().all(|r| r.is_ok()));
                }
            })
        };
        let won: u64 = updaters.into_iter().map(|t| t.join().unwrap()).sum();
        batches.join().unwrap();
        let cur = b.fetch_doc("c", &FetchOptions::default()).unwrap();
        let rev = cur.get("_rev").and_then(|r| r.as_str()).unwrap();
        let generation: u64 = rev.split('-').next().unwrap().parse().unwrap();
        assert_eq!(generation, 1 + won);
        assert_eq!(b.info().unwrap().stats.docs_count, 1 + 20 * 100);
    }
}
