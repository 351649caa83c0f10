//! Path-index maintenance off the writer thread.
//!
//! A 1 KB document has some thirty index entries, one RocksDB key each, and inserting them
//! cost the writer thread three quarters of its time: every write waited for it. Instead, the
//! writer commits a document with one small *pending mark* (in the `ixq` column family:
//! `<barrel><seq>` → doc id and the body whose entries the index holds for it now) and hands an
//! [`IndexJob`] to this module's thread once the commit is done. The indexer takes every job
//! queued, folds the jobs of one document into one change (entries of the first job's old body
//! out, entries of the last job's new winner in), writes the entries in key order (sorted
//! inserts are cheaper in RocksDB's skip list; a large batch, when the indexer is behind, goes
//! as one table file the index takes in as it is, see [`Ingest`]), then deletes the marks.
//!
//! Consistency, as users see it:
//! - a query waits until every write committed before it started is indexed
//!   ([`Indexer::wait_indexed`]), so a process reads its own writes;
//! - the writer stops taking new writes while more than [`MAX_PENDING`] documents (or
//!   [`MAX_PENDING_BYTES`] of their bodies and entries) wait to be
//!   indexed (back pressure), so the lag, the memory it takes and a query's wait are bounded;
//! - a crash loses no index work: the pending marks are committed with the documents, and
//!   [`recover`] applies what they name when the store opens (`index` then holds exactly the
//!   entries of every document's winning revision again).

use crate::doc::{decode_body, DocRecord};
use crate::error::{Error, Result};
use crate::index::{self, Entries};
#[cfg(test)]
use crate::store::INDEX_DIR_FOR_TESTS;
use crate::store::{keys, BarrelInner, Store, CF_DOCS, CF_PENDING};
use parking_lot::{Condvar, Mutex};
use rocksdb::{IngestExternalFileOptions, SstFileWriter, WriteBatch, DB};
use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Most documents waiting to be indexed before the writer waits for the indexer.
pub(crate) const MAX_PENDING: usize = 16_384;
/// Most bytes (bodies and entries held by the jobs) waiting to be indexed before the writer
/// waits: large documents must not fill memory at [`MAX_PENDING`] of them.
pub(crate) const MAX_PENDING_BYTES: usize = 64 << 20;
/// About the most bytes of jobs indexed in one batch (at least one job).
const MAX_BATCH_BYTES: usize = 16 << 20;
/// Most documents indexed in one batch.
const MAX_BATCH: usize = 4096;
/// How long the indexer lets jobs accumulate when few are queued and no query waits (a query
/// that comes stops the wait): larger batches are cheaper per entry (sorted inserts, one write
/// for many documents) and wake the indexer less often. `save_doc` from one process, 150k
/// documents (throwaway s16.erl, 2 alternated runs each): with 2 ms and 512 documents, 38k
/// documents/s and 15-17 µs of indexer CPU a document; with 10 ms and 2048, 44k/s and 14-15 µs
/// (30 ms and 4096: about the same as 10 ms). `save_docs` in batches of 100 or 1000 showed no
/// difference beyond this machine's noise (spot runs: 36-48k/s either way).
const GATHER: Duration = Duration::from_millis(10);
/// Queued documents that make a batch worth writing without waiting [`GATHER`].
const GATHER_ENOUGH: usize = 2048;
/// Documents committed at once (a `save_docs` batch, a replication batch) that end the wait:
/// they come in bursts, and waiting for the next one only delays their indexing.
const GATHER_BATCH: usize = 256;

/// Index writes per write while the indexer keeps up (batches of at most [`LARGE_BATCH`]
/// writes), with the core yielded after each: one batch of a few hundred documents held a
/// core for 2–4 ms, while a woken writer, notifier or scheduler thread queued behind it
/// (`perf sched`: waits of 2.3 ms with the other core idle). 10k `save_doc` a second to a
/// barrel with a listener, write-to-message p99 (3 alternated pairs): 1.98–2.08 ms, against
/// 2.32–2.66 ms in one write. The index stays consistent: a crash between two writes leaves
/// the batch's marks, and recovery writes its entries again.
const YIELD_EVERY: usize = 256;

/// Larger batches (the indexer behind: bulk loads, replications) are written as one table
/// file that RocksDB takes into the index as it is ([`Ingest`]), instead of through the
/// write-ahead log, the memtable's skip list and a flush that writes the same table again.
/// Taking in every such batch, a local replication of 100k documents (throwaway cpu.erl,
/// alternated) took 48–51 µs of CPU a document up to indexed instead of 62–85 and ran at
/// 35–38k docs/s instead of 22–29k, and loading 1M documents with `save_docs` (and waiting for
/// the index) took 53–57 s instead of 70–76 s. With level 0 bounded (see [`Ingest`]): 27–33k
/// docs/s against 20–31k, and 62–66 s against 70 s. (Yielding in these batches too, every 300
/// writes, cost a replication 10–15%.)
const LARGE_BATCH: usize = 16_384;

/// How long a query waits for the index to catch up before it fails.
const QUERY_WAIT: Duration = Duration::from_secs(60);

/// The index entries a document gets once its write is indexed.
pub(crate) enum NewEntries {
    /// None: the winning revision is a deletion.
    Nothing,
    /// Computed already (sorted, the id entry included).
    Entries(Entries),
    /// Those of this stored winning body.
    Body(Vec<u8>),
}

/// One committed document write whose index entries are still to be written.
pub(crate) struct IndexJob {
    pub barrel: Arc<BarrelInner>,
    pub seq: u64,
    pub id: String,
    /// The body whose entries the index holds for this document before this job (`None`: no
    /// entries — a new document or a deleted winner).
    pub old: Option<Vec<u8>>,
    pub new: NewEntries,
}

impl IndexJob {
    /// Memory the job holds, about.
    fn weight(&self) -> usize {
        let new = match &self.new {
            NewEntries::Nothing => 0,
            NewEntries::Entries(e) => e.byte_len() + 4 * e.len(),
            NewEntries::Body(b) => b.len(),
        };
        64 + self.id.len() + self.old.as_ref().map_or(0, Vec::len) + new
    }
}

/// Encodes a pending mark: `[1 if old][u32 id length][id][old body]`.
pub(crate) fn encode_mark(id: &str, old: Option<&[u8]>) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + id.len() + old.map_or(0, <[u8]>::len));
    v.push(u8::from(old.is_some()));
    v.extend_from_slice(&(id.len() as u32).to_be_bytes());
    v.extend_from_slice(id.as_bytes());
    if let Some(old) = old {
        v.extend_from_slice(old);
    }
    v
}

fn decode_mark(v: &[u8]) -> Option<(String, Option<&[u8]>)> {
    let has_old = *v.first()? == 1;
    let len = u32::from_be_bytes(v.get(1..5)?.try_into().ok()?) as usize;
    let id = std::str::from_utf8(v.get(5..5 + len)?).ok()?.to_string();
    let rest = v.get(5 + len..)?;
    Some((id, has_old.then_some(rest)))
}

#[derive(Default)]
struct State {
    queue: VecDeque<IndexJob>,
    /// Jobs taken by the thread and not yet written.
    busy: usize,
    /// Weight of the queued jobs and of those being written.
    bytes: usize,
    /// Queries (and drains) waiting for the indexer: it does not gather then.
    waiting: usize,
    /// A commit brought a batch of at least [`GATHER_BATCH`] documents since the indexer last
    /// took jobs: it does not gather then either.
    batch_came: bool,
    stop: bool,
    /// Tests: jobs stay queued.
    #[cfg(test)]
    paused: bool,
}

impl State {
    /// More documents or bytes wait than the writer may let in (see [`Backlog`]).
    fn over_limit(&self) -> bool {
        self.queue.len() > MAX_PENDING || self.bytes > MAX_PENDING_BYTES
    }

    /// Nothing for the thread to take.
    fn idle(&self) -> bool {
        #[cfg(test)]
        if self.paused && !self.stop {
            return true;
        }
        self.queue.is_empty()
    }
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when jobs are queued or the indexer should stop.
    work: Condvar,
    /// Signalled after each batch: writers, queries and drains wait on it.
    progress: Condvar,
}

/// The index queue of a store and its thread.
pub(crate) struct Indexer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Waits for the indexer's backlog to shrink (see [`Indexer::backlog`]).
#[derive(Clone)]
pub(crate) struct Backlog(Arc<Shared>);

impl Backlog {
    /// Blocks while more than [`MAX_PENDING`] documents or [`MAX_PENDING_BYTES`] wait to be
    /// indexed (returns once the indexer stops).
    pub(crate) fn wait_below_limit(&self) {
        let mut st = self.0.state.lock();
        while st.over_limit() && !st.stop {
            self.0.progress.wait(&mut st);
        }
    }

    /// `true` while the writer would wait in [`Backlog::wait_below_limit`] (a caller that
    /// must not block queues its write instead of committing it itself).
    pub(crate) fn over_limit(&self) -> bool {
        self.0.state.lock().over_limit()
    }
}

impl Indexer {
    /// Starts the indexer thread: marks in `db`, entries in `index_db`.
    pub(crate) fn start(db: Arc<DB>, index_db: Arc<DB>, ingest: Arc<Ingest>) -> Result<Indexer> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            progress: Condvar::new(),
        });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("barrel-indexer".into())
            .spawn(move || indexer_loop(&thread_shared, &db, &index_db, &ingest))
            .map_err(|e| Error::Internal(format!("cannot start the indexer thread: {e}")))?;
        Ok(Indexer {
            shared,
            thread: Some(thread),
        })
    }

    /// Queues the jobs of a committed batch (in sequence order).
    pub(crate) fn queue(&self, jobs: Vec<IndexJob>) {
        if jobs.is_empty() {
            return;
        }
        let mut st = self.shared.state.lock();
        let was_empty = st.queue.is_empty();
        st.batch_came |= jobs.len() >= GATHER_BATCH;
        for job in jobs {
            job.barrel.index_queued.fetch_max(job.seq, Ordering::SeqCst);
            st.bytes += job.weight();
            st.queue.push_back(job);
        }
        // The indexer sleeps on an empty queue, or gathers until enough jobs came.
        if was_empty || st.queue.len() >= GATHER_ENOUGH || st.batch_came {
            self.shared.work.notify_one();
        }
    }

    /// The indexer's back pressure, for the writer thread: it holds this instead of the store,
    /// so the writer never holds the last reference to a store being dropped (the store
    /// would then close on the writer thread, after its owner had moved on).
    pub(crate) fn backlog(&self) -> Backlog {
        Backlog(self.shared.clone())
    }

    /// Documents queued or being indexed.
    pub(crate) fn pending(&self) -> usize {
        let st = self.shared.state.lock();
        st.queue.len() + st.busy
    }

    /// Blocks until every queued job is written.
    pub(crate) fn drain(&self) {
        let mut st = self.shared.state.lock();
        st.waiting += 1;
        self.shared.work.notify_one();
        while (!st.queue.is_empty() || st.busy > 0) && !st.stop {
            self.shared.progress.wait(&mut st);
        }
        st.waiting -= 1;
    }

    /// Blocks until every write to `barrel` committed so far is in its index; an internal error
    /// after a minute (the index cannot fall that far behind, short of a failing disk).
    pub(crate) fn wait_indexed(&self, barrel: &BarrelInner) -> Result<()> {
        let target = barrel.index_queued.load(Ordering::SeqCst);
        if barrel.index_done.load(Ordering::SeqCst) >= target {
            return Ok(());
        }
        let deadline = Instant::now() + QUERY_WAIT;
        let mut st = self.shared.state.lock();
        st.waiting += 1;
        self.shared.work.notify_one();
        let mut outcome = Ok(());
        while barrel.index_done.load(Ordering::SeqCst) < target {
            if st.stop || barrel.deleted.load(Ordering::SeqCst) {
                outcome = Err(Error::Closed);
                break;
            }
            if self
                .shared
                .progress
                .wait_until(&mut st, deadline)
                .timed_out()
            {
                outcome = Err(Error::Internal(
                    "the index did not catch up with the writes within a minute".into(),
                ));
                break;
            }
        }
        st.waiting -= 1;
        outcome
    }
}

#[cfg(test)]
impl Indexer {
    /// Stops indexing (jobs queue up) or starts again.
    pub(crate) fn set_paused(&self, paused: bool) {
        self.shared.state.lock().paused = paused;
        self.shared.work.notify_all();
    }

    /// Drops the queued jobs, as a crash would.
    pub(crate) fn forget_queued(&self) {
        let mut st = self.shared.state.lock();
        st.queue.clear();
        st.bytes = 0;
    }
}

impl Drop for Indexer {
    /// Indexes what is queued, then stops the thread.
    fn drop(&mut self) {
        self.shared.state.lock().stop = true;
        self.shared.work.notify_all();
        self.shared.progress.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn indexer_loop(shared: &Shared, db: &DB, index_db: &DB, ingest: &Ingest) {
    // One for every batch: see `IndexWrites`.
    let mut writes = IndexWrites::default();
    loop {
        let (jobs, bytes): (Vec<IndexJob>, usize) = {
            let mut st = shared.state.lock();
            while st.idle() && !st.stop {
                shared.work.wait(&mut st);
            }
            if st.queue.is_empty() {
                return;
            }
            let gather_until = Instant::now() + GATHER;
            while st.queue.len() < GATHER_ENOUGH && !st.batch_came && st.waiting == 0 && !st.stop {
                if shared.work.wait_until(&mut st, gather_until).timed_out() {
                    break;
                }
            }
            let mut n = 0;
            let mut bytes = 0;
            while n < st.queue.len().min(MAX_BATCH) && (n == 0 || bytes < MAX_BATCH_BYTES) {
                bytes += st.queue[n].weight();
                n += 1;
            }
            st.busy = n;
            st.batch_came = false;
            (st.queue.drain(..n).collect(), bytes)
        };
        let mut failures = 0;
        loop {
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                apply(db, index_db, ingest, &jobs, &mut writes)
            }))
            .unwrap_or_else(|_| Err(Error::Internal("indexer panicked".into())));
            match outcome {
                Ok(()) => break,
                Err(e) => {
                    // The documents are committed and their marks stay: the next open indexes
                    // them if this never succeeds.
                    failures += 1;
                    eprintln!("barrel: indexing failed (attempt {failures}): {e}");
                    if failures == 5 || shared.state.lock().stop {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100 * failures));
                }
            }
        }
        let mut st = shared.state.lock();
        st.busy = 0;
        st.bytes = st.bytes.saturating_sub(bytes);
        for job in &jobs {
            job.barrel.index_done.fetch_max(job.seq, Ordering::SeqCst);
        }
        drop(st);
        shared.progress.notify_all();
    }
}

/// Index entries (sorted) of a stored body; none without a body.
pub(crate) fn body_entries(id: &str, body: Option<&[u8]>) -> Result<Entries> {
    let Some(body) = body else {
        return Ok(Entries::default());
    };
    // Straight from the JSON, without building its values (an update's old body is indexed
    // out this way), unless it has attachments: their stubs are not indexed, which the walk
    // over values knows.
    if let Some(mut entries) = index::json_body_entries(body)? {
        entries.add_id(id);
        return Ok(entries);
    }
    let body = decode_body(body).ok_or_else(|| Error::Corrupt("document body".into()))?;
    // A stored body was accepted once, so it is within the limits.
    Ok(index::entries(id, &body)?)
}

/// Index entries of a stored document's winning revision, `None` when that is a deletion.
fn winner_entries(id: &str, rec: &DocRecord) -> Result<Option<Entries>> {
    match rec.tree.winner() {
        Some(w) if !w.deleted => Ok(Some(body_entries(id, Some(&rec.winner_body))?)),
        _ => Ok(None),
    }
}

/// Index writes, put in key order into a batch: every key in one buffer (a document's thirty
/// keys would otherwise be thirty allocations, made and freed again by the indexer), each
/// write a span of it.
///
/// [`IndexWrites::write`] empties it and keeps its buffers: the indexer thread keeps one for
/// all its batches, so a batch does not grow fresh buffers of some megabytes (page faults and
/// copies that were a tenth of the indexer's time).
#[derive(Default)]
pub(crate) struct IndexWrites {
    keys: Vec<u8>,
    writes: Vec<IndexWrite>,
    /// The sort's scratch space.
    scratch: Vec<IndexWrite>,
}

/// Most bytes each buffer of an [`IndexWrites`] keeps between batches: the largest batch of
/// 1 KB documents ([`MAX_BATCH`] of them) needs about 7 MB of keys, and a rare larger one
/// (large documents) should not hold its memory for the life of the store.
const KEPT_BUFFER_BYTES: usize = 8 << 20;

/// One key of [`IndexWrites`]: `keys[at..at + len]`, put or deleted.
#[derive(Clone, Copy)]
struct IndexWrite {
    at: usize,
    len: u32,
    put: bool,
}

impl IndexWrite {
    /// This write's key in `keys`, the buffer of its [`IndexWrites`].
    fn key<'k>(&self, keys: &'k [u8]) -> &'k [u8] {
        &keys[self.at..self.at + self.len as usize]
    }
}

impl IndexWrites {
    fn push(&mut self, barrel: u64, entry: &[u8], id: &str, put: bool) {
        let at = self.keys.len();
        keys::index_into(&mut self.keys, barrel, entry, id);
        self.writes.push(IndexWrite {
            at,
            len: (self.keys.len() - at) as u32,
            put,
        });
    }

    /// Writes entry `entry` of document `id`.
    pub(crate) fn put(&mut self, barrel: u64, entry: &[u8], id: &str) {
        self.push(barrel, entry, id, true);
    }

    /// The difference between two sorted entry lists of document `id`.
    fn diff(&mut self, barrel: u64, id: &str, old: &Entries, new: &Entries) {
        let (mut i, mut j) = (0, 0);
        loop {
            match (old.get(i), new.get(j)) {
                (Some(o), Some(n)) if o == n => {
                    i += 1;
                    j += 1;
                }
                (Some(o), n) if n.is_none_or(|n| o < n) => {
                    self.push(barrel, o, id, false);
                    i += 1;
                }
                (_, Some(n)) => {
                    self.push(barrel, n, id, true);
                    j += 1;
                }
                _ => break,
            }
        }
    }

    /// Puts the writes in key order.
    fn sort(&mut self) {
        sort_by_key_bytes(&mut self.writes, &self.keys, &mut self.scratch);
    }

    /// Forgets the writes, keeping the buffers up to [`KEPT_BUFFER_BYTES`] each.
    fn clear(&mut self) {
        self.keys.clear();
        self.keys.shrink_to(KEPT_BUFFER_BYTES);
        let writes = KEPT_BUFFER_BYTES / std::mem::size_of::<IndexWrite>();
        self.writes.clear();
        self.writes.shrink_to(writes);
        self.scratch.clear();
        self.scratch.shrink_to(writes);
    }

    /// Writes them to the index in key order: a large batch (the indexer behind: a bulk
    /// load, a replication, a rebuild) as one table file taken in by `ingest`, else in writes
    /// of [`YIELD_EVERY`] with the core yielded between them. When the file cannot be written
    /// or taken in, the batch goes in one write instead. In key order, with the index's insert
    /// hint (see `Store::open`), RocksDB's skip list starts each insert where the previous one
    /// ended (one document's entries span the whole index otherwise). Empties `self`, written
    /// or not.
    pub(crate) fn write(&mut self, index_db: &DB, ingest: &Ingest) -> Result<()> {
        let written = self.write_sorted(index_db, ingest);
        self.clear();
        written
    }

    /// [`IndexWrites::write`] without the emptying.
    fn write_sorted(&mut self, index_db: &DB, ingest: &Ingest) -> Result<()> {
        self.sort();
        if self.writes.len() > LARGE_BATCH {
            match ingest.ingest(index_db, self.sorted_writes()) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => eprintln!("barrel: index batch written instead of ingested: {e}"),
            }
        }
        let chunk = if self.writes.len() <= LARGE_BATCH {
            YIELD_EVERY
        } else {
            self.writes.len()
        };
        for (i, part) in self.writes.chunks(chunk).enumerate() {
            if i > 0 {
                std::thread::yield_now();
            }
            // Room for the keys and RocksDB's few bytes of framing each, so the batch is not
            // copied as it grows.
            let bytes = part.iter().map(|w| w.len as usize + 8).sum::<usize>() + 16;
            let mut batch = WriteBatch::with_capacity_bytes(bytes);
            for w in part {
                add_write(&mut batch, w.key(&self.keys), w.put);
            }
            index_db.write(batch)?;
        }
        Ok(())
    }

    /// The writes as they are ordered now (in key order once sorted), `(key, put)`.
    fn sorted_writes(&self) -> impl Iterator<Item = (&[u8], bool)> {
        self.writes.iter().map(|w| (w.key(&self.keys), w.put))
    }
}

/// Groups of fewer writes than this are sorted by comparing their keys; larger ones are split
/// by the byte at their common depth first.
const RADIX_MIN: usize = 48;

/// Sorts `writes` by their keys in `keys`, a most-significant-byte-first radix sort: a group
/// of writes whose keys agree up to byte `d` is split into 257 buckets by byte `d` (the first
/// for keys that end there), then each bucket from `d + 1` on; groups smaller than
/// [`RADIX_MIN`] are sorted by comparing the rest of their keys.
///
/// Index keys share long starts (a batch's keys agree on 26 bytes with their neighbour on
/// average: the barrel, the path, often part of the value), which every comparison of a
/// comparison sort reads again. Sorting the keys of one real batch of 32k writes took 105–122
/// ns a write that way and 85–93 ns this way (a throwaway micro-benchmark); in the indexer,
/// during a local replication of 100k documents (throwaway cpu.erl, two alternated runs each),
/// 243–258 ns against 185–208 ns (some 30 writes a document: about 1.5 µs of the indexer's
/// 18–24 µs).
///
/// A group whose keys all have the same byte `d` goes on from the first byte where they
/// differ (compared eight at a time), not one byte further: every key of a barrel starts with
/// the barrel's prefix, and the keys of one path with the path. In the same micro-benchmark
/// (5 rounds), 91–116 ns a write against 108–127 one byte at a time.
fn sort_by_key_bytes(writes: &mut [IndexWrite], keys: &[u8], scratch: &mut Vec<IndexWrite>) {
    let byte = |w: &IndexWrite, d: usize| -> usize {
        if d < w.len as usize {
            keys[w.at + d] as usize + 1
        } else {
            0
        }
    };
    // Groups left to sort: (start, end, depth). A work list, not recursion: keys may be
    // longer than a thread's stack allows levels of.
    let mut groups = vec![(0, writes.len(), 0)];
    while let Some((start, end, d)) = groups.pop() {
        let group = &mut writes[start..end];
        if group.len() < RADIX_MIN {
            group.sort_unstable_by(|a, b| {
                let (a, b) = (a.key(keys), b.key(keys));
                a[d.min(a.len())..].cmp(&b[d.min(b.len())..])
            });
            continue;
        }
        let mut count = [0usize; 257];
        for w in group.iter() {
            count[byte(w, d)] += 1;
        }
        if count[0] == group.len() {
            // Every key ends here: all equal.
            continue;
        }
        if count.contains(&group.len()) {
            // All in one bucket: no split at this depth. The keys may agree on more bytes
            // (the barrel, a path): go on where they first differ.
            groups.push((start, end, d + 1 + shared_from(group, keys, d + 1)));
            continue;
        }
        let mut at = [0usize; 257];
        let mut next = 0;
        for (b, n) in count.iter().enumerate() {
            at[b] = next;
            next += n;
        }
        scratch.clear();
        scratch.extend_from_slice(group);
        for w in scratch.iter() {
            let b = byte(w, d);
            group[at[b]] = *w;
            at[b] += 1;
        }
        // Bucket 0 holds keys that end at `d`: equal, done. `at[b]` is now its end.
        for b in 1..257 {
            if count[b] > 1 {
                groups.push((start + at[b] - count[b], start + at[b], d + 1));
            }
        }
    }
}

/// How many bytes from `d` on every key of `group` (not empty) has in common with the first.
fn shared_from(group: &[IndexWrite], keys: &[u8], d: usize) -> usize {
    let first = group[0].key(keys);
    let mut shared = &first[d.min(first.len())..];
    for w in &group[1..] {
        if shared.is_empty() {
            break;
        }
        let key = w.key(keys);
        shared = &shared[..common_prefix(shared, &key[d.min(key.len())..])];
    }
    shared.len()
}

/// The length of the longest common start of `a` and `b`, eight bytes at a time.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 8 <= n {
        let x = u64::from_le_bytes(a[i..i + 8].try_into().unwrap_or_default());
        let y = u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        if x != y {
            // The lowest differing bit is in the first differing byte (little-endian).
            return i + ((x ^ y).trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i + a[i..n]
        .iter()
        .zip(&b[i..n])
        .take_while(|(x, y)| x == y)
        .count()
}

/// Writes a large batch of index writes as a table file (RocksDB's `SstFileWriter`) that the
/// index takes in as it is (`IngestExternalFile`): the file goes to level 0 like a flushed
/// memtable would (or lower, where it overlaps nothing), without the write-ahead log, the skip
/// list and the flush.
///
/// The files are small (a batch of 1000 documents is ~0.5 MB; a flush writes ~5 MB), and
/// every one at level 0 makes the next compaction into level 1 come sooner (one that overlaps
/// the memtable also makes RocksDB flush it first). Taking in every large batch, `save_docs`
/// of 100 documents (whose batches are large at times) piled up 30 files at level 0, most with
/// the memtable empty: compactions, at low priority, fell behind the files, and RocksDB slowed
/// the index's writes down (9.6–17.1k docs/s instead of 20.5–21.0k). So a batch goes through
/// the memtable while level 0 holds as many files as start a compaction (`max_level0_files`);
/// that run then measured 21.2–26.1k against 21.7–26.5k, and batches of 1000 26.2–29.6k
/// against 23.5–26.4k.
///
/// Over twelve alternated local replications of 100k documents each (throwaway cpu.erl and
/// knobs), this bound used the least CPU a document up to rest: 96.5 µs (median), against
/// 104 taking in every large batch, 127 with a bound of 16 and RocksDB's slowdown at 36 files,
/// and 125 with universal compaction for the index. The compactions of the small files cost
/// what the memtable path saves.
pub(crate) struct Ingest {
    /// The index's options: the file gets its compression and table format.
    options: rocksdb::Options,
    /// Where the file is written; RocksDB moves it into the index.
    path: PathBuf,
    /// Held while the file is in use (the indexer thread, or recovery at open).
    file: Mutex<()>,
    /// Files at level 0 from which batches go through the memtable instead.
    max_level0_files: u64,
}

impl Ingest {
    /// Files written at `path`, with the index's `options`; removes a file left there by a
    /// run that stopped between writing and ingesting it.
    pub(crate) fn new(options: rocksdb::Options, path: PathBuf, max_level0_files: u64) -> Ingest {
        let _ = std::fs::remove_file(&path);
        Ingest {
            options,
            path,
            file: Mutex::new(()),
            max_level0_files,
        }
    }

    /// Writes `writes` (in strictly increasing key order) as a file and ingests it, unless
    /// level 0 holds [`Ingest::max_level0_files`] files already (`false`: write them instead).
    /// Nothing reaches the index unless all of it does.
    fn ingest<'k>(
        &self,
        index_db: &DB,
        writes: impl Iterator<Item = (&'k [u8], bool)>,
    ) -> Result<bool> {
        let level0 = index_db.property_int_value("rocksdb.num-files-at-level0")?;
        if level0.unwrap_or(u64::MAX) >= self.max_level0_files {
            return Ok(false);
        }
        let _in_use = self.file.lock();
        let ingested = (|| {
            let mut file = SstFileWriter::create(&self.options);
            file.open(&self.path)?;
            for (key, put) in writes {
                if put {
                    file.put(key, [])?;
                } else {
                    file.delete(key)?;
                }
            }
            file.finish()?;
            let mut opts = IngestExternalFileOptions::default();
            // Linked into the index's directory, not copied.
            opts.set_move_files(true);
            index_db.ingest_external_file_opts(&opts, vec![&self.path])
        })();
        // Gone once ingested; removed as well when writing or ingesting it failed.
        let _ = std::fs::remove_file(&self.path);
        ingested?;
        Ok(true)
    }
}

/// Puts or deletes index key `key` in `batch`.
fn add_write(batch: &mut WriteBatch, key: &[u8], put: bool) {
    if put {
        batch.put(key, []);
    } else {
        batch.delete(key);
    }
}

fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a rocksdb::ColumnFamily> {
    db.cf_handle(name)
        .ok_or_else(|| Error::Internal(format!("column family {name} missing")))
}

/// What one batch does to a document's entries: those of the old body (if any) out, the new
/// ones in.
type DocChange<'a> = (Option<&'a [u8]>, &'a NewEntries);

/// Writes the entries of `jobs`, then deletes their marks. Redoing a job whose entries are
/// written (a crash between the two writes) writes the same entries again.
/// `writes` is the buffer the batch's writes go through (left empty).
fn apply(
    db: &DB,
    index_db: &DB,
    ingest: &Ingest,
    jobs: &[IndexJob],
    writes: &mut IndexWrites,
) -> Result<()> {
    // Not empty only after a panic in the middle of a batch.
    writes.clear();
    let pending = cf(db, CF_PENDING)?;
    // Per barrel, the sequences of the marks to delete.
    let mut marks: HashMap<u64, (u64, u64)> = HashMap::new();
    // Per document: the old body of its first job, the new entries of its last.
    let mut docs: HashMap<(u64, &str), DocChange> = HashMap::new();
    let mut order = Vec::new();
    for job in jobs {
        if job.barrel.deleted.load(Ordering::SeqCst) {
            // Its entries and marks went with it.
            continue;
        }
        let range = marks.entry(job.barrel.id).or_insert((job.seq, job.seq));
        *range = (range.0.min(job.seq), range.1.max(job.seq));
        let key = (job.barrel.id, job.id.as_str());
        match docs.get_mut(&key) {
            Some(doc) => doc.1 = &job.new,
            None => {
                docs.insert(key, (job.old.as_deref(), &job.new));
                order.push(key);
            }
        }
    }
    for key in order {
        let (old, new) = docs[&key];
        let (barrel, id) = key;
        let old = body_entries(id, old)?;
        let computed;
        let none = Entries::default();
        let new = match new {
            NewEntries::Nothing => &none,
            NewEntries::Entries(e) => e,
            NewEntries::Body(body) => {
                computed = body_entries(id, Some(body))?;
                &computed
            }
        };
        writes.diff(barrel, id, &old, new);
    }
    writes.write(index_db, ingest)?;
    // One range deletion per barrel, so this write (queued with the document writes of the
    // same instance) stays small: a barrel's jobs come in sequence order, and every mark
    // below this batch's was deleted by an earlier one.
    let mut batch = WriteBatch::default();
    for (barrel, (first, last)) in marks {
        batch.delete_range_cf(
            pending,
            keys::seq(barrel, first),
            keys::seq(barrel, last + 1),
        );
    }
    db.write(batch)?;
    Ok(())
}

/// Indexes the writes a previous run committed but did not index (it stopped or crashed
/// first), from their pending marks, and removes the index of barrels deleted meanwhile. Runs
/// when the store opens, before any write.
pub(crate) fn recover(store: &Store) -> Result<u64> {
    drop_orphans(store)?;
    let db = &store.db;
    let pending = cf(db, CF_PENDING)?;
    // Per document, the old bodies of its marks, and every mark's key. Every one of them
    // counts, not only the earliest: a crash between an indexer batch and the deletion of its
    // marks leaves marks whose writes are indexed, so the index may hold the entries of any
    // of those bodies (the earliest mark's, or a later one's once the batch went through).
    let mut docs: HashMap<(u64, String), Vec<Vec<u8>>> = HashMap::new();
    let mut marks = Vec::new();
    for item in db.iterator_cf(pending, rocksdb::IteratorMode::Start) {
        let (k, v) = item?;
        let barrel = k
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| Error::Corrupt("pending index mark".into()))?;
        let (id, old) =
            decode_mark(&v).ok_or_else(|| Error::Corrupt("pending index mark".into()))?;
        let olds = docs.entry((barrel, id)).or_default();
        if let Some(old) = old {
            olds.push(old.to_vec());
        }
        marks.push(k);
    }
    if marks.is_empty() {
        return Ok(0);
    }
    let mut writes = IndexWrites::default();
    let docs_cf = store.cf(CF_DOCS);
    for ((barrel, id), olds) in &docs {
        let old = olds
            .iter()
            .map(|body| body_entries(id, Some(body)))
            .collect::<Result<Vec<_>>>()?;
        let old = Entries::union(&old);
        let new = match db.get_cf(docs_cf, keys::doc(*barrel, id))? {
            Some(raw) => {
                let rec = DocRecord::decode(&raw)
                    .ok_or_else(|| Error::Corrupt("document record".into()))?;
                winner_entries(id, &rec)?.unwrap_or_default()
            }
            None => Entries::default(),
        };
        writes.diff(*barrel, id, &old, &new);
    }
    writes.write(&store.index_db, &store.ingest)?;
    let mut batch = WriteBatch::default();
    for k in marks {
        batch.delete_cf(pending, k);
    }
    db.write(batch)?;
    Ok(docs.len() as u64)
}

/// Removes index entries of barrels no longer in the catalog (deleted by a run that stopped
/// before it removed their index): one seek per barrel id found in the index.
fn drop_orphans(store: &Store) -> Result<()> {
    let live = store.barrel_ids();
    let mut from = keys::index_prefix(0);
    loop {
        let mut iter = store.index_db.raw_iterator();
        iter.seek(&from);
        let Some(key) = iter.key() else {
            iter.status()?;
            return Ok(());
        };
        let Some((id, _)) = keys::index_barrel(key) else {
            return Err(Error::Corrupt("index entry".into()));
        };
        if !live.contains(&id) {
            store.drop_index(id)?;
        }
        if id == u64::MAX {
            return Ok(());
        }
        from = keys::index_prefix_end(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::parse_path_and_value;
    use crate::{Barrel, BarrelConfig, DocInput, Query, SaveOptions, Select, StoreOptions};
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn open(dir: &std::path::Path) -> Arc<Store> {
        Store::open(dir, &StoreOptions::default()).unwrap()
    }

    /// A new store in `dir` with one barrel, `b`.
    fn new_barrel(dir: &std::path::Path) -> (Arc<Store>, Barrel) {
        let store = open(dir);
        store.create_barrel("b", BarrelConfig::default()).unwrap();
        let b = store.open_barrel("b").unwrap();
        (store, b)
    }

    fn save(b: &Barrel, doc: Value) -> crate::revtree::Rev {
        b.save_doc(DocInput::from_value(doc).unwrap(), &SaveOptions::default())
            .unwrap()
            .1
    }

    /// Ids of the documents the talk-style query `$/path/value` finds.
    fn find(b: &Barrel, q: &str) -> Vec<String> {
        let (path, value) = parse_path_and_value(q).unwrap();
        let query = Query {
            path,
            select: Select::Equal(value),
            descending: false,
            include_docs: false,
        };
        let mut ids = Vec::new();
        b.query(&query, None, |r| {
            ids.push(r.id);
            true
        })
        .unwrap();
        ids
    }

    /// Every index key of the store.
    fn index_keys(store: &Store) -> Vec<Vec<u8>> {
        store
            .index_db
            .iterator(rocksdb::IteratorMode::Start)
            .map(|kv| kv.unwrap().0.to_vec())
            .collect()
    }

    #[test]
    fn background_work_shows_the_index_queue_and_memtables_then_comes_to_rest() {
        let dir = tempfile::tempdir().unwrap();
        let (store, b) = new_barrel(dir.path());
        store.indexer.set_paused(true);
        for i in 0..5 {
            save(&b, json!({"id": format!("d{i}"), "n": i}));
        }
        let bg = store.background();
        assert_eq!(bg.index_queue, 5);
        assert!(bg.memtable_bytes > 0);
        assert!(!bg.is_idle());
        store.indexer.set_paused(false);
        store.flush().unwrap();
        let t = Instant::now();
        while !store.background().is_idle() {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "{:?}",
                store.background()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(find(&b, "$/n/3"), ["d3"]);
    }

    #[test]
    fn queries_see_entries_and_removals_spread_over_several_unflushed_memtables() {
        let dir = tempfile::tempdir().unwrap();
        let (store, b) = new_barrel(dir.path());
        // ~200 entries a document: a few thousand fill several of the index's memtables.
        let doc = |i: usize, v: &str| {
            let mut d = serde_json::Map::new();
            d.insert("id".into(), json!(format!("d{i:05}")));
            d.insert("v".into(), json!(v));
            for f in 0..200 {
                d.insert(format!("field{f}"), json!(format!("value {i} {f}")));
            }
            DocInput::from_value(Value::Object(d)).unwrap()
        };
        // Each batch indexed before the next comes, so the indexer's batches stay small enough
        // to go through the memtable (a larger one is taken in as a file).
        let save_all = |docs: Vec<DocInput>| {
            for r in b
                .save_docs(docs.into_iter().map(Ok).collect(), &SaveOptions::default())
                .unwrap()
            {
                r.unwrap();
            }
            find(&b, "$/id/none");
        };
        // About two and a half memtables of entries, all of them unflushed at the end (a flush
        // takes four).
        let n = 1500;
        let per_batch = 50;
        assert!(per_batch * 201 <= LARGE_BATCH);
        let mut revs = Vec::new();
        for start in (0..n).step_by(per_batch) {
            save_all((start..start + per_batch).map(|i| doc(i, "old")).collect());
        }
        assert_eq!(find(&b, "$/id/d00000"), ["d00000"]);
        for i in 0..n {
            revs.push(b.leaf_revs(&format!("d{i:05}")).unwrap()[0].clone());
        }
        // Every other document changes `v`: its old entries are removed by writes in newer
        // memtables than the ones holding them.
        for start in (0..n).step_by(per_batch) {
            save_all(
                (start..start + per_batch)
                    .filter(|i| i % 2 == 0)
                    .map(|i| {
                        let mut d = doc(i, "new");
                        d.rev = Some(revs[i].clone());
                        d
                    })
                    .collect(),
            );
        }
        assert_eq!(find(&b, "$/v/new").len(), n / 2);
        let unflushed = store
            .index_db
            .property_int_value("rocksdb.num-immutable-mem-table")
            .unwrap()
            .unwrap();
        assert!(unflushed >= 1, "{unflushed} immutable memtables");
        let old = find(&b, "$/v/old");
        assert_eq!(old.len(), n / 2);
        assert!(old
            .iter()
            .all(|id| id[1..].parse::<usize>().unwrap() % 2 == 1));
        assert_eq!(find(&b, "$/field7/value 1498 7"), ["d01498"]);
        // The same answers once everything is flushed and compacted.
        store.flush().unwrap();
        store.compact().unwrap();
        assert_eq!(find(&b, "$/v/old"), old);
        assert_eq!(find(&b, "$/v/new").len(), n / 2);
    }

    #[test]
    fn writes_committed_but_not_indexed_are_indexed_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let keys_after;
        {
            let (store, b) = new_barrel(dir.path());
            let a0 = save(&b, json!({"id": "a", "x": 0, "keep": "same"}));
            let c_rev = save(&b, json!({"id": "c", "z": 1}));
            assert_eq!(find(&b, "$/x/0"), ["a"]);
            store.indexer.set_paused(true);
            let a1 = save(
                &b,
                json!({"id": "a", "_rev": a0.to_string(), "x": 1, "keep": "same"}),
            );
            save(
                &b,
                json!({"id": "a", "_rev": a1.to_string(), "x": 2, "keep": "same"}),
            );
            save(&b, json!({"id": "new", "y": 1}));
            b.delete_doc("c", c_rev).unwrap();
            assert_eq!(store.indexer.pending(), 4);
            // A crash: the documents and their marks are committed, the jobs are lost.
            store.indexer.forget_queued();
            keys_after = index_keys(&store).len();
        }
        let store = open(dir.path());
        let b = store.open_barrel("b").unwrap();
        assert_eq!(find(&b, "$/x/2"), ["a"]);
        assert!(find(&b, "$/x/0").is_empty());
        assert!(find(&b, "$/x/1").is_empty());
        assert_eq!(find(&b, "$/keep/same"), ["a"]);
        assert_eq!(find(&b, "$/y/1"), ["new"]);
        assert!(find(&b, "$/z/1").is_empty());
        assert!(find(&b, "$/id/c").is_empty());
        // a: id, x, keep; new: id, y. Before the reopen: a's, c's (id, z) and nothing else.
        assert_eq!(keys_after, 5);
        assert_eq!(index_keys(&store).len(), 5);
        let pending = store.cf(CF_PENDING);
        assert!(store
            .db
            .iterator_cf(pending, rocksdb::IteratorMode::Start)
            .next()
            .is_none());
    }

    /// A crash after the indexer wrote a batch but before it deleted the batch's marks, with a
    /// later write of the same document committed but not indexed: the index then holds the
    /// middle revision's entries, which neither the first mark's old body nor the winner has.
    #[test]
    fn recovery_removes_the_entries_of_every_pending_old_body() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, b) = new_barrel(dir.path());
            let pending = store.cf(CF_PENDING);
            let marks = |store: &Store| -> Vec<(Vec<u8>, Vec<u8>)> {
                store
                    .db
                    .iterator_cf(pending, rocksdb::IteratorMode::Start)
                    .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
                    .collect()
            };
            let a0 = save(&b, json!({"id": "a", "x": 0}));
            assert_eq!(find(&b, "$/x/0"), ["a"]);
            assert!(marks(&store).is_empty());
            store.indexer.set_paused(true);
            let a1 = save(&b, json!({"id": "a", "_rev": a0.to_string(), "x": 1}));
            let first_mark = marks(&store);
            assert_eq!(first_mark.len(), 1);
            store.indexer.set_paused(false);
            assert_eq!(find(&b, "$/x/1"), ["a"]);
            assert!(marks(&store).is_empty());
            store.indexer.set_paused(true);
            save(&b, json!({"id": "a", "_rev": a1.to_string(), "x": 2}));
            store.indexer.forget_queued();
            // The first batch's mark deletion never reached the disk.
            let (k, v) = &first_mark[0];
            store.db.put_cf(pending, k, v).unwrap();
            assert_eq!(marks(&store).len(), 2);
        }
        let store = open(dir.path());
        let b = store.open_barrel("b").unwrap();
        assert_eq!(find(&b, "$/x/2"), ["a"]);
        assert!(
            find(&b, "$/x/1").is_empty(),
            "the middle revision's entry is gone"
        );
        assert!(find(&b, "$/x/0").is_empty());
        // a: id and x.
        assert_eq!(index_keys(&store).len(), 2);
    }

    #[test]
    fn a_query_waits_for_the_writes_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let (store, b) = new_barrel(dir.path());
        store.indexer.set_paused(true);
        save(&b, json!({"id": "a", "x": 1}));
        let (tx, rx) = std::sync::mpsc::channel();
        let b2 = b.clone();
        let t = std::thread::spawn(move || tx.send(find(&b2, "$/x/1")).unwrap());
        // Blocked while the write is not indexed (it never returns before that).
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        store.indexer.set_paused(false);
        assert_eq!(rx.recv().unwrap(), ["a"]);
        t.join().unwrap();
    }

    #[test]
    fn writes_wait_while_the_index_is_too_far_behind() {
        let dir = tempfile::tempdir().unwrap();
        let (store, b) = new_barrel(dir.path());
        store.indexer.set_paused(true);
        let total = MAX_PENDING + 100;
        let b2 = b.clone();
        let writer = std::thread::spawn(move || {
            for i in 0..total {
                save(&b2, json!({"id": format!("d{i}"), "n": i}));
            }
        });
        while store.indexer.pending() <= MAX_PENDING {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(200));
        // One write past the limit, then the writer waits (a blocked write never finishes).
        assert_eq!(store.indexer.pending(), MAX_PENDING + 1);
        assert!(!writer.is_finished());
        store.indexer.set_paused(false);
        writer.join().unwrap();
        assert_eq!(
            find(&b, &format!("$/n/{}", total - 1)),
            [format!("d{}", total - 1)]
        );
    }

    #[test]
    fn writes_wait_while_too_many_bytes_are_not_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let (store, b) = new_barrel(dir.path());
        // Each update's job holds the previous body: 256 KiB (a string too long to index).
        let big = "x".repeat(256 << 10);
        let mut rev = save(&b, json!({"id": "d", "n": 0, "big": big}));
        store.indexer.set_paused(true);
        let limit = MAX_PENDING_BYTES / (256 << 10);
        let b2 = b.clone();
        let writer = std::thread::spawn(move || {
            for n in 1..=limit + 50 {
                rev = save(
                    &b2,
                    json!({"id": "d", "_rev": rev.to_string(), "n": n, "big": big}),
                );
            }
        });
        while store.indexer.pending() < limit {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(200));
        // Far fewer documents than MAX_PENDING, but at the byte limit: the writer waits.
        let queued = store.indexer.pending();
        assert!(queued <= limit + 1, "{queued} jobs queued");
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(store.indexer.pending(), queued);
        assert!(!writer.is_finished());
        store.indexer.set_paused(false);
        writer.join().unwrap();
        assert_eq!(find(&b, &format!("$/n/{}", limit + 50)), ["d"]);
    }

    #[test]
    fn an_index_lost_or_from_an_older_layout_is_rebuilt_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (_store, b) = new_barrel(dir.path());
            save(&b, json!({"id": "a", "x": 1}));
            save(&b, json!({"id": "b", "x": 2}));
            assert_eq!(find(&b, "$/x/2"), ["b"]);
        }
        // The index's files removed.
        std::fs::remove_dir_all(dir.path().join(INDEX_DIR_FOR_TESTS)).unwrap();
        {
            let store = open(dir.path());
            let b = store.open_barrel("b").unwrap();
            assert_eq!(find(&b, "$/x/2"), ["b"]);
            assert_eq!(find(&b, "$/x/1"), ["a"]);
        }
        // An index in the layout before (its own instance, in `index/`): removed, rebuilt.
        let old_dir = dir.path().join("index");
        std::fs::rename(dir.path().join(INDEX_DIR_FOR_TESTS), &old_dir).unwrap();
        {
            let store = open(dir.path());
            assert!(!old_dir.exists());
            let b = store.open_barrel("b").unwrap();
            assert_eq!(find(&b, "$/x/2"), ["b"]);
            assert_eq!(find(&b, "$/x/1"), ["a"]);
        }
        // A store from before the index had its own instance: an `index` column family.
        {
            let mut opts = rocksdb::Options::default();
            opts.create_missing_column_families(true);
            let cfs = DB::list_cf(&opts, dir.path()).unwrap();
            let mut db = DB::open_cf(&opts, dir.path(), &cfs).unwrap();
            db.create_cf("index", &opts).unwrap();
            let cf = db.cf_handle("index").unwrap();
            db.put_cf(cf, b"stale", b"").unwrap();
        }
        std::fs::remove_dir_all(dir.path().join(INDEX_DIR_FOR_TESTS)).unwrap();
        let store = open(dir.path());
        assert!(!DB::list_cf(&rocksdb::Options::default(), dir.path())
            .unwrap()
            .contains(&"index".to_string()));
        let b = store.open_barrel("b").unwrap();
        assert_eq!(find(&b, "$/x/1"), ["a"]);
    }

    #[test]
    fn an_index_rebuild_cut_short_is_done_again_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, a) = new_barrel(dir.path());
            store.create_barrel("c", BarrelConfig::default()).unwrap();
            let c = store.open_barrel("c").unwrap();
            let docs = (0..2500)
                .map(|i| {
                    Ok(DocInput::from_value(
                        json!({"id": format!("d{i:04}"), "n": i}),
                    )?)
                })
                .collect();
            for r in a.save_docs(docs, &SaveOptions::default()).unwrap() {
                r.unwrap();
            }
            save(&c, json!({"id": "x", "n": 1}));
        }
        // The index lost; the rebuild at the next open stops after its first batch.
        std::fs::remove_dir_all(dir.path().join(INDEX_DIR_FOR_TESTS)).unwrap();
        *crate::commit::INTERRUPT_REBUILD_IN.lock() = Some(dir.path().to_path_buf());
        assert!(Store::open(dir.path(), &StoreOptions::default()).is_err());
        assert!(crate::commit::INTERRUPT_REBUILD_IN.lock().is_none());
        // The index directory exists now, but both barrels were marked: rebuilt again.
        let store = open(dir.path());
        let a = store.open_barrel("b").unwrap();
        let c = store.open_barrel("c").unwrap();
        let all = |b: &Barrel| {
            let query = Query {
                path: parse_path_and_value("$/n/0").unwrap().0,
                select: Select::All,
                descending: false,
                include_docs: false,
            };
            let mut n = 0;
            b.query(&query, None, |_| {
                n += 1;
                true
            })
            .unwrap();
            n
        };
        assert_eq!(all(&a), 2500);
        assert_eq!(all(&c), 1);
        let meta = store.cf(crate::store::CF_META);
        assert_eq!(
            store
                .db
                .prefix_iterator_cf(meta, keys::REBUILDING)
                .filter_map(|i| i.ok())
                .filter(|(k, _)| k.starts_with(keys::REBUILDING))
                .count(),
            0
        );
    }

    #[test]
    fn the_index_of_a_barrel_deleted_before_its_removal_goes_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, b) = new_barrel(dir.path());
            save(&b, json!({"id": "a", "x": 1}));
            assert_eq!(find(&b, "$/x/1"), ["a"]);
            // Entries of barrel ids not in the catalog (a drop whose index removal was lost).
            for orphan in [0u64, 999, u64::MAX] {
                store
                    .index_db
                    .put(keys::index(orphan, b"\x01x\x00\x01", "zz"), b"")
                    .unwrap();
            }
            assert_eq!(index_keys(&store).len(), 5);
        }
        let store = open(dir.path());
        let b = store.open_barrel("b").unwrap();
        assert_eq!(index_keys(&store).len(), 2);
        assert_eq!(find(&b, "$/x/1"), ["a"]);
        store.delete_barrel("b").unwrap();
        assert!(index_keys(&store).is_empty());
    }

    #[test]
    fn marks_roundtrip() {
        let m = encode_mark("doc-1", Some(br#"{"a":1}"#));
        assert_eq!(
            decode_mark(&m),
            Some(("doc-1".to_string(), Some(&br#"{"a":1}"#[..])))
        );
        let m = encode_mark("", None);
        assert_eq!(decode_mark(&m), Some((String::new(), None)));
        assert_eq!(decode_mark(&[1, 0, 0]), None);
        assert_eq!(decode_mark(&[0, 0, 0, 0, 9, b'a']), None);
    }

    #[test]
    fn stored_bodies_give_the_entries_of_their_values_with_or_without_attachments() {
        let plain = json!({"a": [1, "X", {"b": null}], "c": 2.5, "d": true});
        let with_atts = json!({
            "a": "y",
            "_attachments": {"f.txt": {"content_type": "text/plain", "digest": "md5-x"}}
        });
        for v in [plain, with_atts] {
            let Value::Object(body) = v else {
                unreachable!()
            };
            let stored = crate::doc::encode_body(&body);
            assert_eq!(
                body_entries("doc-1", Some(&stored)).unwrap(),
                index::entries("doc-1", &body).unwrap()
            );
        }
        assert!(body_entries("doc-1", None).unwrap().is_empty());
        assert!(matches!(
            body_entries("doc-1", Some(b"not json")),
            Err(Error::Corrupt(_))
        ));
    }

    /// Entry `i` of the tests' batches (in key order with `i`).
    fn entry(i: usize) -> Vec<u8> {
        format!("e{i:06}").into_bytes()
    }

    /// Puts of entries `0..n` of document `d` in barrel 999 or, with `deletes`, deletions of
    /// every other one.
    fn writes_of(n: usize, deletes: bool) -> IndexWrites {
        let mut writes = IndexWrites::default();
        for i in (0..n).step_by(if deletes { 2 } else { 1 }) {
            writes.push(999, &entry(i), "d", !deletes);
        }
        writes
    }

    /// The keys of entries `0..n` left after [`writes_of`]`(n, true)`.
    fn keys_left(n: usize) -> Vec<Vec<u8>> {
        (1..n)
            .step_by(2)
            .map(|i| keys::index(999, &entry(i), "d"))
            .collect()
    }

    /// In a new store, writes the puts of `n` entries, then the deletions of every other one,
    /// each with one [`IndexWrites::write`], and calls `check` after each (`deletes`: after
    /// the second); then checks the keys left.
    fn puts_then_deletes(n: usize, check: impl Fn(&Store, bool)) {
        let dir = tempfile::tempdir().unwrap();
        let (store, _b) = new_barrel(dir.path());
        for deletes in [false, true] {
            writes_of(n, deletes)
                .write(&store.index_db, &store.ingest)
                .unwrap();
            check(&store, deletes);
        }
        assert_eq!(index_keys(&store), keys_left(n));
    }

    #[test]
    fn a_batch_written_in_chunks_leaves_every_put_and_delete() {
        let n = 3 * YIELD_EVERY + 5;
        // The deletions too go in several chunks.
        assert!(n / 2 > YIELD_EVERY);
        puts_then_deletes(n, |_, _| {});
    }

    /// Entries in the index's memtables, and its files.
    fn memtable_entries_and_files(store: &Store) -> (u64, usize) {
        let prop = |name: &str| store.index_db.property_int_value(name).unwrap().unwrap();
        (
            prop("rocksdb.num-entries-active-mem-table")
                + prop("rocksdb.num-entries-imm-mem-tables"),
            store.index_db.live_files().unwrap().len(),
        )
    }

    #[test]
    fn a_large_batch_is_taken_in_as_a_file_with_every_put_and_delete() {
        let n = 2 * LARGE_BATCH + 10;
        assert!(n / 2 > LARGE_BATCH);
        puts_then_deletes(n, |store, deletes| {
            // A file each time, nothing through the memtable, no file left behind.
            let files = if deletes { 2 } else { 1 };
            assert_eq!(memtable_entries_and_files(store), (0, files));
            assert!(!store.ingest.path.exists());
        });
    }

    #[test]
    fn a_large_batch_goes_through_the_memtable_while_level_0_is_full() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _b) = new_barrel(dir.path());
        let mut puts = writes_of(LARGE_BATCH + 1, false);
        // No file at level 0 yet, but no room for one either.
        let full = Ingest::new(
            rocksdb::Options::default(),
            dir.path().join("ingest.sst"),
            0,
        );
        puts.write(&store.index_db, &full).unwrap();
        assert_eq!(
            memtable_entries_and_files(&store),
            (LARGE_BATCH as u64 + 1, 0)
        );
        assert_eq!(index_keys(&store).len(), LARGE_BATCH + 1);
    }

    #[test]
    fn a_large_batch_the_file_cannot_take_goes_in_one_write() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _b) = new_barrel(dir.path());
        let mut puts = writes_of(LARGE_BATCH + 1, false);
        // A key twice: a table file takes keys in strictly increasing order only.
        puts.put(999, &entry(7), "d");
        puts.write(&store.index_db, &store.ingest).unwrap();
        assert!(!store.ingest.path.exists());
        let (in_memtable, files) = memtable_entries_and_files(&store);
        assert_eq!((in_memtable, files), (LARGE_BATCH as u64 + 2, 0));
        let expected: Vec<Vec<u8>> = (0..=LARGE_BATCH)
            .map(|i| keys::index(999, &entry(i), "d"))
            .collect();
        assert_eq!(index_keys(&store), expected);
    }

    #[test]
    fn documents_indexed_in_large_batches_are_found_updated_reopened_and_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let fields = 20;
        let docs = 1000;
        let doc = |i: usize, version: usize| {
            let mut m = serde_json::Map::new();
            m.insert("id".into(), json!(format!("d{i:04}")));
            for f in 0..fields {
                m.insert(format!("f{f}"), json!(format!("v{version}-{}", i % 10)));
            }
            DocInput::from_value(Value::Object(m)).unwrap()
        };
        let save_all = |b: &Barrel, version: usize, revs: &[Option<crate::revtree::Rev>]| {
            let batch = (0..docs)
                .map(|i| {
                    let mut input = doc(i, version);
                    input.rev = revs.get(i).cloned().flatten();
                    Ok(input)
                })
                .collect();
            b.save_docs(batch, &SaveOptions::default())
                .unwrap()
                .into_iter()
                .map(|r| Some(r.unwrap().1))
                .collect::<Vec<_>>()
        };
        let entries_per_doc = fields + 1;
        {
            let (store, b) = new_barrel(dir.path());
            // Queued while paused, the jobs are indexed in one batch of 21k writes.
            store.indexer.set_paused(true);
            let revs = save_all(&b, 1, &[]);
            store.indexer.set_paused(false);
            assert_eq!(find(&b, "$/f3/v1-4").len(), docs / 10);
            assert_eq!(memtable_entries_and_files(&store).0, 0);
            assert_eq!(index_keys(&store).len(), docs * entries_per_doc);
            // Every value changes: 20k deletes and 20k puts, in one file again.
            let files = memtable_entries_and_files(&store).1;
            store.indexer.set_paused(true);
            save_all(&b, 2, &revs);
            store.indexer.set_paused(false);
            assert!(find(&b, "$/f3/v1-4").is_empty());
            assert_eq!(find(&b, "$/f19/v2-9").len(), docs / 10);
            assert_eq!(memtable_entries_and_files(&store), (0, files + 1));
            assert_eq!(index_keys(&store).len(), docs * entries_per_doc);
        }
        {
            let store = open(dir.path());
            let b = store.open_barrel("b").unwrap();
            assert_eq!(find(&b, "$/f0/v2-0").len(), docs / 10);
            assert_eq!(index_keys(&store).len(), docs * entries_per_doc);
        }
        // The index lost: rebuilt at open, its 21k entries taken in as one file (the memtable
        // holds at most the range deletion of the old entries).
        std::fs::remove_dir_all(dir.path().join(INDEX_DIR_FOR_TESTS)).unwrap();
        let store = open(dir.path());
        let b = store.open_barrel("b").unwrap();
        let (in_memtable, files) = memtable_entries_and_files(&store);
        assert!(in_memtable <= 1 && files >= 1, "{in_memtable} {files}");
        assert_eq!(find(&b, "$/f7/v2-3").len(), docs / 10);
        assert!(find(&b, "$/f7/v1-3").is_empty());
        assert_eq!(index_keys(&store).len(), docs * entries_per_doc);
    }

    proptest! {
        /// The radix sort orders keys as a comparison of their bytes does, for keys with long
        /// shared starts, prefixes of one another and ends at every depth.
        #[test]
        fn writes_sort_in_byte_order(
            keys in proptest::collection::vec(
                proptest::collection::vec(prop_oneof![Just(0u8), Just(1), Just(255), any::<u8>()], 0..12),
                0..400,
            ),
            shared in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let mut w = IndexWrites::default();
            for k in &keys {
                let at = w.keys.len();
                w.keys.extend_from_slice(&shared);
                w.keys.extend_from_slice(k);
                w.writes.push(IndexWrite { at, len: (w.keys.len() - at) as u32, put: true });
            }
            w.sort();
            let got: Vec<Vec<u8>> = w.sorted_writes().map(|(k, _)| k.to_vec()).collect();
            let mut want: Vec<Vec<u8>> =
                keys.iter().map(|k| [shared.as_slice(), k].concat()).collect();
            want.sort();
            prop_assert_eq!(got, want);
        }

        /// `common_prefix` finds where two byte strings first differ, wherever that is in its
        /// eight-byte steps (or that one is a prefix of the other).
        #[test]
        fn common_prefix_is_where_bytes_first_differ(
            start in proptest::collection::vec(any::<u8>(), 0..40),
            a in proptest::collection::vec(prop_oneof![Just(0u8), Just(1), any::<u8>()], 0..12),
            b in proptest::collection::vec(prop_oneof![Just(0u8), Just(1), any::<u8>()], 0..12),
        ) {
            let (a, b) = ([start.as_slice(), &a].concat(), [start.as_slice(), &b].concat());
            let want = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
            prop_assert_eq!(common_prefix(&a, &b), want);
        }
    }

    #[test]
    fn diff_puts_and_deletes() {
        let e = |v: &[&str]| v.iter().map(|s| s.as_bytes()).collect::<Entries>();
        let mut w = IndexWrites::default();
        w.diff(1, "d", &e(&["a", "b", "d"]), &e(&["b", "c"]));
        w.sort();
        let got: Vec<(Vec<u8>, bool)> = w
            .sorted_writes()
            .map(|(k, put)| (k.to_vec(), put))
            .collect();
        assert_eq!(
            got,
            vec![
                (keys::index(1, b"a", "d"), false),
                (keys::index(1, b"c", "d"), true),
                (keys::index(1, b"d", "d"), false),
            ]
        );
    }
}
