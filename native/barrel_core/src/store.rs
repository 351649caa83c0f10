//! The node's storage: one RocksDB instance, column families per concern, the barrel catalog,
//! and key encoding.
//!
//! Column families:
//! - `meta`: the catalog (`b/<name>` → barrel config), counters (`s/<barrel id>` → stats) and the
//!   next barrel id (`n`).
//! - `docs`: `<barrel id><doc id>` → [`DocRecord`](crate::doc::DocRecord) (revision tree, seq,
//!   winning body). Ordered by doc id, so `fold_docs` is a range scan.
//! - `revs`: `<barrel id><doc id len><doc id><rev>` → body of a non-winning leaf (a conflict).
//! - `seqs`: `<barrel id><seq>` → doc id: the changes feed, one entry per document at its latest
//!   sequence.
//! - `local`: `<barrel id><id>` → JSON body: local (non-replicated) documents such as
//!   replication checkpoints (see [`crate::replicate`]).
//! - `ixq`: `<barrel id><seq>` → doc id and the body indexed before: writes committed but not
//!   yet in the index (see the `indexer` module).
//! - `atts`: attachment contents by digest, in chunks, and which revisions refer to them (see
//!   [`crate::attachment`]). Stored in RocksDB blob files, so large values are not rewritten
//!   by compactions.
//!
//! The path index lives in a second RocksDB instance in the `index.2/` subdirectory, written by
//! the indexer thread (see the `indexer` module): `<barrel id><path><value><doc id>` → nothing
//! (see [`crate::index`]), the barrel id in a short form (2 bytes for the first 255 barrels).
//! Its own instance has its own write path, so the indexer's large batches never hold up a
//! document write queued behind them in RocksDB's write queue (in one instance they did:
//! 107 µs a `save_doc` instead of 42).
//!
//! A barrel id is a 64-bit number never reused, so deleting a barrel is a range delete of its
//! prefix, and a handle to a deleted barrel can never see a later barrel of the same name.

use crate::barrel::Barrel;
use crate::changes::{Listeners, Notifier};
use crate::commit::{Committer, Op, OpResult};
use crate::error::{Error, Result};
use crate::indexer::{Indexer, Ingest};
use parking_lot::{Mutex, RwLock};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, Options,
    WriteBatch, WriteOptions, DB,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

pub(crate) const CF_META: &str = "meta";
pub(crate) const CF_DOCS: &str = "docs";
pub(crate) const CF_REVS: &str = "revs";
pub(crate) const CF_SEQS: &str = "seqs";
/// Where the path index lived before it got its own instance (dropped when found).
const LEGACY_CF_INDEX: &str = "index";
/// Subdirectory of the path index's RocksDB instance.
const INDEX_DIR: &str = "index.2";
/// Where the path index's instance lived in the layout before (8-byte barrel ids, numbers in
/// 25 bytes): removed when found, and the index rebuilt.
const OLD_INDEX_DIRS: [&str; 1] = ["index"];
/// Where a large batch of index writes is written as a table file before the index takes it in
/// (see [`Ingest`]); beside the index's directory, on the same file system.
const INDEX_INGEST_FILE: &str = "index.ingest.sst";
#[cfg(test)]
pub(crate) const INDEX_DIR_FOR_TESTS: &str = INDEX_DIR;
pub(crate) const CF_LOCAL: &str = "local";
pub(crate) const CF_ATTS: &str = "atts";
pub(crate) const CF_PENDING: &str = "ixq";
/// Memtable size of the sequence and pending-mark column families.
const SMALL_KEYS_MEMTABLE: usize = 8 * 1024 * 1024;
/// Memtable size of the path index's instance.
const INDEX_MEMTABLE: usize = 8 * 1024 * 1024;
/// Memtables of the path index merged into one file when flushed: the files are
/// `INDEX_MEMTABLES_MERGED * INDEX_MEMTABLE` bytes however small each memtable is.
const INDEX_MEMTABLES_MERGED: usize = 4;
/// Bytes of the path index's level-0 files, as flushed.
const INDEX_FLUSHED_FILE: usize = INDEX_MEMTABLES_MERGED * INDEX_MEMTABLE;
/// Level-0 files of the path index that start a compaction (RocksDB's default is 4). The
/// flushed files compress to about a sixth of [`INDEX_FLUSHED_FILE`], so an index of up to
/// ~1M documents fits its base level, which is then the last level: every level-0
/// compaction rewrites the whole index. Waiting for eight files halves those rewrites:
/// loading 1M documents, index compactions wrote 253-264 MB instead of 340 MB and took about
/// 20 s of CPU instead of 26 s (2 runs each); `$/id` queries afterwards were no slower.
const INDEX_L0_COMPACTION_TRIGGER: i32 = 8;
/// Seconds a bottommost-level file waits before RocksDB rewrites it only to zero its sequence
/// numbers or drop what a released snapshot protected. Without a delay, the first file flushed
/// after a load was rewritten about a second later: its blocks were cold again in the block
/// cache (a random fetch of 100k freshly loaded documents ran at 45-55k/s instead of ~90k/s)
/// and the rewrite took CPU from the readers.
const BOTTOMMOST_DELAY: (&str, &str) = ("bottommost_file_compaction_delay", "600");

const DATA_CFS: [&str; 6] = [CF_DOCS, CF_REVS, CF_SEQS, CF_LOCAL, CF_ATTS, CF_PENDING];

/// Longest accepted barrel name, in bytes.
pub const MAX_BARREL_NAME_LEN: usize = 128;

/// Default `revs_limit`: revisions kept per branch, as in CouchDB.
pub const DEFAULT_REVS_LIMIT: usize = 1000;

/// Node-wide storage settings.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Shared block cache size in bytes (default 128 MiB).
    pub block_cache_bytes: usize,
    /// Let glibc's `malloc` keep RocksDB's memtable blocks instead of mapping and unmapping
    /// them (default `true`; see [`tune_malloc`]). Process-wide; no effect on other C
    /// libraries than glibc.
    pub tune_malloc: bool,
    /// Run RocksDB's compactions at the lowest CPU priority (default `true`; see
    /// [`lower_compaction_priority`]). Process-wide, and once lowered it stays lowered.
    pub low_priority_compactions: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            block_cache_bytes: 128 * 1024 * 1024,
            tune_malloc: true,
            low_priority_compactions: true,
        }
    }
}

/// Has RocksDB's compaction threads run at the lowest CPU priority (nice 19 on Linux; each
/// thread lowers itself before its next job). Flushes keep their priority: writes wait for
/// them when memtables fill up.
///
/// Compactions are the one piece of background work nothing waits for right away. At normal
/// priority they took a fair share of the cores from the callers, the writer, the indexer and
/// the flushes, whatever those had to do; at the lowest they use the CPU those leave, and
/// later, larger compactions merge more at once. Replicating 100k documents locally (the
/// bench's `replicate_local`, on 2 cores) ran at 24.4/24.0/31.1k documents/s against
/// 23.6/22.8/25.1k at normal priority (runs alternated); loading 1M documents with
/// `save_docs`, at 15.4/17.1k against 15.6/14.3k, with a fifth less compaction CPU.
///
/// The cost: on a machine whose cores stay busy with other work for long, compactions fall
/// behind, level-0 files pile up and RocksDB slows writes down until they catch up.
/// `low_priority_compactions: false` keeps them at normal priority. The setting belongs to
/// RocksDB's default environment, shared by every store of the process, and an unprivileged
/// process cannot raise a priority again once lowered.
pub fn lower_compaction_priority() -> Result<()> {
    let mut env = rocksdb::Env::new()?;
    env.lower_thread_pool_cpu_priority();
    Ok(())
}

/// Allocations below this size come from glibc's heaps once [`tune_malloc`] ran.
pub const MALLOC_MMAP_THRESHOLD: usize = 32 << 20;

/// Raises glibc's `M_MMAP_THRESHOLD` to [`MALLOC_MMAP_THRESHOLD`] (once per process).
///
/// RocksDB allocates its memtables in 1 MiB blocks and grows large write batches by doubling,
/// through the C library's `malloc`. glibc serves blocks that size with a fresh `mmap` and
/// returns them with `munmap` when freed (its adaptive threshold keeps missing blocks of
/// exactly the size it adapted to), so every memtable's memory was faulted in and zeroed by
/// the kernel again: loading 200k 1 KB documents took 630k page faults, 165k with the
/// threshold raised, and 6–8% less CPU. The memory stays in glibc's heaps for the next
/// memtable instead. The setting is process-wide (the BEAM's own allocators do not use
/// `malloc` for their carriers); `tune_malloc: false` leaves it alone.
pub fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: mallopt only changes an allocator parameter; any value is valid.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD as libc::c_int);
            }
        });
    }
}

/// Per-barrel settings, fixed at creation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BarrelConfig {
    /// Revisions kept per branch of a document's tree (default 1000).
    pub revs_limit: usize,
    /// `fsync` the write-ahead log on every commit (default `false`: a commit survives a crash of
    /// the VM, and at worst the last second of writes is lost on power failure).
    pub sync: bool,
}

impl Default for BarrelConfig {
    fn default() -> Self {
        BarrelConfig {
            revs_limit: DEFAULT_REVS_LIMIT,
            sync: false,
        }
    }
}

impl BarrelConfig {
    /// Checks ranges: `revs_limit` is 1 to 1,000,000.
    pub fn validate(&self) -> Result<()> {
        if self.revs_limit == 0 || self.revs_limit > 1_000_000 {
            return Err(Error::BadParam(format!(
                "revs_limit must be 1..1000000, got {}",
                self.revs_limit
            )));
        }
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
struct CatalogEntry {
    id: u64,
    #[serde(flatten)]
    config: BarrelConfig,
}

/// Counters of one barrel, persisted in the same batch as each write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Sequence of the barrel's latest change (0 when never written).
    pub updated_seq: u64,
    /// Documents whose winning revision is live.
    pub docs_count: u64,
    /// Documents whose winning revision is a deletion.
    pub deleted_count: u64,
    /// Bytes of stored document records (tree and winning body), before compression.
    pub data_size: u64,
}

impl Stats {
    pub(crate) fn encode(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, v) in [
            self.updated_seq,
            self.docs_count,
            self.deleted_count,
            self.data_size,
        ]
        .iter()
        .enumerate()
        {
            out[i * 8..i * 8 + 8].copy_from_slice(&v.to_be_bytes());
        }
        out
    }

    pub(crate) fn decode(b: &[u8]) -> Option<Stats> {
        let n = |i: usize| -> Option<u64> {
            Some(u64::from_be_bytes(
                b.get(i * 8..i * 8 + 8)?.try_into().ok()?,
            ))
        };
        Some(Stats {
            updated_seq: n(0)?,
            docs_count: n(1)?,
            deleted_count: n(2)?,
            data_size: n(3)?,
        })
    }
}

/// What `barrel_infos` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BarrelInfo {
    /// The barrel's name.
    pub name: String,
    /// Counters.
    pub stats: Stats,
    /// Approximate bytes on disk of the barrel's flushed data (recent writes still in the
    /// memtable are not counted; see `stats.data_size` for the logical size).
    pub disk_size: u64,
    /// Settings fixed at creation.
    pub config: BarrelConfig,
}

/// The store's background work at one moment (see [`Store::background`]): what runs or waits
/// after writes have returned. All zero and `false` once a store is at rest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Background {
    /// Committed documents whose path-index entries are not written yet.
    pub index_queue: u64,
    /// Memtable flushes running.
    pub flushes_running: u64,
    /// Compactions running.
    pub compactions_running: u64,
    /// Full memtables waiting to be flushed.
    pub flush_pending: bool,
    /// Some level is over its target size, so a compaction is due.
    pub compaction_pending: bool,
    /// RocksDB's estimate of the bytes compactions have to rewrite to bring every level back
    /// under its target size.
    pub pending_compaction_bytes: u64,
    /// Bytes in memtables (active, immutable, and pinned ones).
    pub memtable_bytes: u64,
}

impl Background {
    /// Nothing running or due.
    pub fn is_idle(&self) -> bool {
        self.index_queue == 0
            && self.flushes_running == 0
            && self.compactions_running == 0
            && !self.flush_pending
            && !self.compaction_pending
    }
}

/// The in-memory state of one barrel, shared by its handles and the committer.
pub(crate) struct BarrelInner {
    pub id: u64,
    pub name: String,
    pub config: BarrelConfig,
    pub deleted: AtomicBool,
    pub stats: Mutex<Stats>,
    /// Live subscriptions to this barrel's changes.
    pub listeners: Listeners,
    /// Sequence of the latest write handed to the indexer.
    pub index_queued: AtomicU64,
    /// Sequence of the latest write in the index (see [`crate::indexer`]).
    pub index_done: AtomicU64,
}

/// One node's storage: a RocksDB instance holding every barrel.
pub struct Store {
    // Declared first so it is dropped first: the writer thread stops before the database closes.
    pub(crate) committer: Committer,
    // Then the indexer: it indexes what the writer queued, then stops.
    pub(crate) indexer: Indexer,
    // Next: stops after the writer (its last publications are dropped with the queue).
    pub(crate) notifier: Notifier,
    pub(crate) db: Arc<DB>,
    /// The path index (its default column family).
    pub(crate) index_db: Arc<DB>,
    /// Writes large batches of index writes as files the index takes in.
    pub(crate) ingest: Arc<Ingest>,
    path: PathBuf,
    catalog: RwLock<HashMap<String, Arc<BarrelInner>>>,
    catalog_changes: Mutex<()>,
    next_id: AtomicU64,
    closing: AtomicBool,
    /// Attachment contents being read (see [`crate::attachment`]).
    pub(crate) att_pins: crate::attachment::Pins,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// Key encoding, defined once.
pub(crate) mod keys {
    pub fn prefix(barrel: u64) -> [u8; 8] {
        barrel.to_be_bytes()
    }

    /// The first key after every key of `barrel`.
    pub fn prefix_end(barrel: u64) -> [u8; 8] {
        (barrel + 1).to_be_bytes()
    }

    pub fn doc(barrel: u64, id: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(8 + id.len());
        k.extend_from_slice(&prefix(barrel));
        k.extend_from_slice(id.as_bytes());
        k
    }

    pub fn rev(barrel: u64, id: &str, rev: &crate::revtree::Rev) -> Vec<u8> {
        let rev = rev.to_string();
        let mut k = Vec::with_capacity(10 + id.len() + rev.len());
        k.extend_from_slice(&prefix(barrel));
        k.extend_from_slice(&(id.len() as u16).to_be_bytes());
        k.extend_from_slice(id.as_bytes());
        k.extend_from_slice(rev.as_bytes());
        k
    }

    pub fn seq(barrel: u64, seq: u64) -> [u8; 16] {
        let mut k = [0u8; 16];
        k[..8].copy_from_slice(&prefix(barrel));
        k[8..].copy_from_slice(&seq.to_be_bytes());
        k
    }

    /// An index entry's key, as [`index_into`] writes it.
    #[cfg(test)]
    pub fn index(barrel: u64, entry: &[u8], id: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(9 + entry.len() + id.len());
        index_into(&mut k, barrel, entry, id);
        k
    }

    /// Appends an index entry's key, `<barrel><path and value><doc id>`, to `out`.
    pub fn index_into(out: &mut Vec<u8>, barrel: u64, entry: &[u8], id: &str) {
        put_index_prefix(out, barrel);
        out.extend_from_slice(entry);
        out.extend_from_slice(id.as_bytes());
    }

    /// Appends the start of every index key of `barrel`: the number of significant bytes of
    /// its id, then those bytes, big-endian. Bytewise order is still the order of the ids, no
    /// prefix is the start of another, and it takes 2 bytes for the first 255 barrels where
    /// the 8 of [`prefix`] took about a tenth of the index's bytes (some thirty entries a
    /// document each repeat it).
    pub fn put_index_prefix(out: &mut Vec<u8>, barrel: u64) {
        let bytes = barrel.to_be_bytes();
        let significant = 8 - barrel.leading_zeros() as usize / 8;
        out.push(significant as u8);
        out.extend_from_slice(&bytes[8 - significant..]);
    }

    /// The start of every index key of `barrel` (see [`put_index_prefix`]).
    pub fn index_prefix(barrel: u64) -> Vec<u8> {
        let mut p = Vec::with_capacity(9);
        put_index_prefix(&mut p, barrel);
        p
    }

    /// The first index key after every index key of `barrel`.
    pub fn index_prefix_end(barrel: u64) -> Vec<u8> {
        match barrel.checked_add(1) {
            Some(next) => index_prefix(next),
            // No id has 9 significant bytes.
            None => vec![9],
        }
    }

    /// The barrel of an index key and the length of its prefix; `None` for a malformed key.
    pub fn index_barrel(key: &[u8]) -> Option<(u64, usize)> {
        let significant = usize::from(*key.first()?);
        let bytes = key.get(1..1 + significant).filter(|_| significant <= 8)?;
        let barrel = bytes.iter().fold(0u64, |id, &b| id << 8 | u64::from(b));
        Some((barrel, 1 + significant))
    }

    pub fn catalog(name: &str) -> Vec<u8> {
        [b"b/".as_slice(), name.as_bytes()].concat()
    }

    pub fn stats(barrel: u64) -> Vec<u8> {
        [b"s/".as_slice(), &prefix(barrel)].concat()
    }

    /// Marks a barrel whose index is being rebuilt (see `commit::reindex_now`).
    pub fn rebuilding(barrel: u64) -> Vec<u8> {
        [REBUILDING, &prefix(barrel)[..]].concat()
    }

    /// The start of every [`rebuilding`] key.
    pub const REBUILDING: &[u8] = b"r/";

    pub const NEXT_ID: &[u8] = b"n";
}

/// Checks a barrel name: 1 to 128 bytes of ASCII letters, digits, `_`, `-` and `.`, starting with
/// a letter or digit (names appear in URLs).
pub fn check_barrel_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_BARREL_NAME_LEN
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName(name.to_string()))
    }
}

/// Read-side tuning the `rocksdb` crate has no setter for, applied as options strings: the
/// blocks of a flushed `docs` file go into the block cache as they are written (documents are
/// most often read soon after they are written, and a fetch that finds its block in the cache is
/// answered on the calling scheduler), and [`BOTTOMMOST_DELAY`] for every family.
fn tune_reads(db: &DB) -> Result<()> {
    for name in std::iter::once(CF_META).chain(DATA_CFS) {
        if let Some(cf) = db.cf_handle(name) {
            db.set_options_cf(&cf, &[BOTTOMMOST_DELAY])?;
        }
    }
    if let Some(cf) = db.cf_handle(CF_DOCS) {
        db.set_options_cf(
            &cf,
            &[(
                "block_based_table_factory",
                "{prepopulate_block_cache=kFlushOnly}",
            )],
        )?;
    }
    Ok(())
}

impl Store {
    /// Opens (creating when missing) the store in directory `path`.
    ///
    /// Only one process may hold a store open; a second open of the same path fails with
    /// [`Error::Storage`] (RocksDB's lock).
    pub fn open(path: impl AsRef<Path>, options: &StoreOptions) -> Result<Arc<Store>> {
        let path = path.as_ref().to_path_buf();
        std::fs::create_dir_all(&path).map_err(|e| Error::Storage(e.to_string()))?;
        if options.tune_malloc {
            tune_malloc();
        }
        if options.low_priority_compactions {
            lower_compaction_priority()?;
        }
        let cache = Cache::new_hyper_clock_cache(options.block_cache_bytes, 0);
        // Index and filter blocks stay with their open files, beside the block cache (about
        // 1.5% of the data: ~35 MB for a million 1 KB documents and their path index). In the
        // cache, the path index's large index blocks were evicted by the data blocks that
        // random reads bring in and read back whole: `$/id` queries over 1M documents ran at
        // ~20k/s instead of 50-80k/s, and random fetches ~10% slower.
        let table_options = |bloom: bool| {
            let mut t = BlockBasedOptions::default();
            t.set_block_cache(&cache);
            if bloom {
                t.set_bloom_filter(10.0, false);
            }
            t
        };
        let table = table_options(true);
        // Families only ever iterated (sequences, marks, the index) have no use for bloom
        // filters: building them was about 5% of the flushes' and compactions' work.
        let scan_table = table_options(false);
        let mut cf_opts = Options::default();
        cf_opts.set_compression_type(DBCompressionType::Lz4);
        cf_opts.set_block_based_table_factory(&table);
        // A bloom filter over each memtable's keys: a point read of a key the memtable does not
        // hold (most reads of a large store, and the writer's lookup of every new document)
        // skips the skip-list search, a cache miss per level.
        cf_opts.set_memtable_prefix_bloom_ratio(0.02);
        cf_opts.set_memtable_whole_key_filtering(true);
        let mut db_opts = cf_opts.clone();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        db_opts.increase_parallelism(cores as i32);
        // Small column families (meta, rewritten on every commit) would otherwise keep every
        // write-ahead log alive until RocksDB's default limit: bound the logs so they get
        // flushed and the logs deleted.
        db_opts.set_max_total_wal_size(128 * 1024 * 1024);
        let mut att_opts = cf_opts.clone();
        att_opts.set_enable_blob_files(true);
        att_opts.set_min_blob_size(4096);
        att_opts.set_enable_blob_gc(true);
        // Attachment chunks pass through the memtable on their way to blob files: a small one
        // bounds the memory a large upload takes.
        att_opts.set_write_buffer_size(16 * 1024 * 1024);
        // Removed contents are deleted chunk by chunk: a file dense in such deletions is
        // compacted soon, which drops the chunks and the blob files only they used, so the
        // space comes back without waiting for compactions to reach them by size.
        att_opts.add_compact_on_deletion_collector_factory(64, 8, 0.5);
        // The sequence and pending-mark families take small keys, little data in all. An insert
        // into RocksDB's skip list costs a cache miss per level, so a small memtable makes them
        // cheaper (for scattered keys, measured 2.1 µs a key with 64 MiB, 0.9 µs with 8 MiB); a
        // few memtables queue for flushing so a write never waits for one.
        let mut small_keys = cf_opts.clone();
        // Only iterated, never read by key: no bloom filters to fill.
        small_keys.set_memtable_prefix_bloom_ratio(0.0);
        small_keys.set_block_based_table_factory(&scan_table);
        small_keys.set_write_buffer_size(SMALL_KEYS_MEMTABLE);
        small_keys.set_max_write_buffer_number(4);
        // A store written before the index had its own instance still has the old column
        // family: open it to drop it, and rebuild the index below.
        let legacy_index =
            DB::list_cf(&db_opts, &path).is_ok_and(|cfs| cfs.iter().any(|c| c == LEGACY_CF_INDEX));
        let mut names = vec![CF_META, CF_DOCS, CF_REVS, CF_SEQS, CF_LOCAL, CF_PENDING];
        if legacy_index {
            names.push(LEGACY_CF_INDEX);
        }
        let cfs = names
            .into_iter()
            .map(|name| {
                let opts = if [CF_SEQS, CF_PENDING].contains(&name) {
                    small_keys.clone()
                } else {
                    cf_opts.clone()
                };
                ColumnFamilyDescriptor::new(name, opts)
            })
            .chain(std::iter::once(ColumnFamilyDescriptor::new(
                CF_ATTS, att_opts,
            )));
        let mut db = DB::open_cf_descriptors(&db_opts, &path, cfs)?;
        if legacy_index {
            db.drop_cf(LEGACY_CF_INDEX)?;
        }
        tune_reads(&db)?;
        let db = Arc::new(db);
        let index_path = path.join(INDEX_DIR);
        let index_is_new = !index_path.join("CURRENT").exists();
        if index_is_new {
            // An index in an older layout: rebuilt below, from the documents.
            for old in OLD_INDEX_DIRS {
                let old = path.join(old);
                if old.exists() {
                    std::fs::remove_dir_all(&old).map_err(|e| Error::Storage(e.to_string()))?;
                }
            }
        }
        // The index takes the most bytes of all (some thirty keys a document), and inserting
        // them into RocksDB's skip list is most of the indexer's work: a cache miss per level
        // of the list, so small memtables make each insert cheaper. Its level-0 files must
        // still be large, or compactions into level 1 rewrite that level for every few
        // megabytes flushed (with files of 8 MiB, loading 1M documents stalled on them): a
        // flush merges four 8 MiB memtables into one 32 MiB file. Against one 32 MiB memtable,
        // loading 1M documents with `save_docs` (3 runs against 2) took about a fifth less
        // indexer CPU (17-19 s instead of 23 s) and less compaction (22-24 s instead of
        // 24-27 s), and ran at 24-26k documents/s instead of 21-23k.
        //
        // The indexer writes each batch's entries in key order. With this option, each insert
        // into the skip list starts from where the previous one with the same first 2 bytes
        // (the barrel, for the first 255 barrels) ended, at O(log distance) cost. Without it,
        // RocksDB starts each insert from the top of the list unless the key goes right
        // after the previous one.
        let mut index_opts = cf_opts.clone().get_options_from_string(
            "memtable_insert_with_hint_prefix_extractor=rocksdb.FixedPrefix.2",
        )?;
        index_opts.set_memtable_prefix_bloom_ratio(0.0);
        index_opts.set_block_based_table_factory(&scan_table);
        index_opts.create_if_missing(true);
        index_opts.set_write_buffer_size(INDEX_MEMTABLE);
        index_opts.set_min_write_buffer_number_to_merge(INDEX_MEMTABLES_MERGED as i32);
        // Two more than the merged ones: a write never waits while they flush.
        index_opts.set_max_write_buffer_number(INDEX_MEMTABLES_MERGED as i32 + 2);
        index_opts.set_max_bytes_for_level_base(4 * INDEX_FLUSHED_FILE as u64);
        index_opts.set_target_file_size_base(INDEX_FLUSHED_FILE as u64);
        index_opts.set_level_zero_file_num_compaction_trigger(INDEX_L0_COMPACTION_TRIGGER);
        index_opts.set_max_total_wal_size(128 * 1024 * 1024);
        let index_db = DB::open(&index_opts, &index_path)?;
        index_db.set_options(&[BOTTOMMOST_DELAY])?;
        let index_db = Arc::new(index_db);
        let notifier = Notifier::start()?;
        let ingest = Arc::new(Ingest::new(
            index_opts.clone(),
            path.join(INDEX_INGEST_FILE),
            INDEX_L0_COMPACTION_TRIGGER as u64,
        ));
        let indexer = Indexer::start(db.clone(), index_db.clone(), ingest.clone())?;
        let mut started = Ok(());
        let store = Arc::new_cyclic(|weak| {
            let committer = Committer::start(weak.clone(), indexer.backlog());
            let committer = committer.unwrap_or_else(|e| {
                started = Err(e);
                Committer::stopped()
            });
            Store {
                committer,
                indexer,
                notifier,
                db,
                index_db,
                ingest,
                path,
                catalog: RwLock::new(HashMap::new()),
                catalog_changes: Mutex::new(()),
                next_id: AtomicU64::new(1),
                closing: AtomicBool::new(false),
                att_pins: Default::default(),
            }
        });
        started?;
        store.load_catalog()?;
        store.rebuild_indexes(legacy_index || index_is_new)?;
        crate::indexer::recover(&store)?;
        store.sweep_pending_attachments()?;
        Ok(store)
    }

    /// Rebuilds at open the index of every barrel when `all` (the index is new: lost, or in
    /// an older layout), else of the barrels whose rebuild a previous run started and did not
    /// finish (it stopped or crashed first: their index may lack any document). Every barrel
    /// to rebuild is marked first, in one write, so a crash during this rebuild leaves the
    /// next open the whole list even though the index is no longer new then. Marks of
    /// barrels deleted meanwhile are dropped.
    fn rebuild_indexes(&self, all: bool) -> Result<()> {
        let meta = self.cf(CF_META);
        let barrels: Vec<Arc<BarrelInner>> = self.catalog.read().values().cloned().collect();
        let mut marked = std::collections::HashSet::new();
        let mut stale = WriteBatch::default();
        for item in self.db.prefix_iterator_cf(meta, keys::REBUILDING) {
            let (k, _) = item?;
            let Some(id) = k.strip_prefix(keys::REBUILDING) else {
                break;
            };
            let id = <[u8; 8]>::try_from(id)
                .map(u64::from_be_bytes)
                .map_err(|_| Error::Corrupt("index rebuild mark".into()))?;
            if barrels.iter().any(|b| b.id == id) {
                marked.insert(id);
            } else {
                stale.delete_cf(meta, k);
            }
        }
        self.db.write(stale)?;
        let todo: Vec<Arc<BarrelInner>> = barrels
            .into_iter()
            .filter(|b| all || marked.contains(&b.id))
            .collect();
        if all {
            let mut batch = WriteBatch::default();
            for b in &todo {
                batch.put_cf(meta, keys::rebuilding(b.id), []);
            }
            self.db.write(batch)?;
        }
        for b in todo {
            crate::commit::reindex_now(self, &b)?;
        }
        Ok(())
    }

    /// Deletes attachment contents left half-written by a previous run (written but never
    /// saved with a document).
    fn sweep_pending_attachments(&self) -> Result<()> {
        let ids: Vec<u64> = self.catalog.read().values().map(|b| b.id).collect();
        let cf = self.cf(CF_ATTS);
        let mut batch = WriteBatch::default();
        for barrel in ids {
            let prefix = crate::attachment::keys::pending_prefix(barrel);
            for item in self.db.prefix_iterator_cf(cf, &prefix) {
                let (k, _) = item?;
                if !k.starts_with(&prefix) {
                    break;
                }
                if let Some(blob) = k
                    .get(prefix.len()..)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes)
                {
                    crate::attachment::discard_into(&mut batch, self, barrel, blob);
                }
            }
        }
        if !batch.is_empty() {
            self.db.write(batch)?;
        }
        Ok(())
    }

    /// Refuses every later operation through barrel handles with [`Error::Closed`]; operations
    /// already running finish. The database itself closes when the last `Arc<Store>` is dropped.
    pub fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    /// `true` once [`Store::close`] was called.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// The directory this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn cf(&self, name: &str) -> &ColumnFamily {
        // The column families are all created at open, so the handle always exists.
        self.db
            .cf_handle(name)
            .expect("column family created at open")
    }

    fn load_catalog(&self) -> Result<()> {
        let meta = self.cf(CF_META);
        if let Some(n) = self.db.get_cf(meta, keys::NEXT_ID)? {
            let n = u64::from_be_bytes(
                n.as_slice()
                    .try_into()
                    .map_err(|_| Error::Corrupt("next barrel id".into()))?,
            );
            self.next_id.store(n, Ordering::SeqCst);
        }
        let mut catalog = self.catalog.write();
        for item in self.db.prefix_iterator_cf(meta, b"b/") {
            let (k, v) = item?;
            let Some(name) = k.strip_prefix(b"b/") else {
                break;
            };
            let name = String::from_utf8(name.to_vec())
                .map_err(|_| Error::Corrupt("barrel name".into()))?;
            let entry: CatalogEntry = serde_json::from_slice(&v)
                .map_err(|e| Error::Corrupt(format!("catalog entry {name}: {e}")))?;
            let stats = match self.db.get_cf(meta, keys::stats(entry.id))? {
                Some(b) => {
                    Stats::decode(&b).ok_or_else(|| Error::Corrupt(format!("stats of {name}")))?
                }
                None => Stats::default(),
            };
            catalog.insert(
                name.clone(),
                Arc::new(BarrelInner {
                    id: entry.id,
                    name,
                    config: entry.config,
                    deleted: AtomicBool::new(false),
                    stats: Mutex::new(stats),
                    listeners: Listeners::default(),
                    index_queued: AtomicU64::new(0),
                    index_done: AtomicU64::new(0),
                }),
            );
        }
        Ok(())
    }

    /// Creates a barrel. Fails with [`Error::AlreadyExists`] when the name is taken.
    pub fn create_barrel(&self, name: &str, config: BarrelConfig) -> Result<()> {
        check_barrel_name(name)?;
        config.validate()?;
        let _guard = self.catalog_changes.lock();
        if self.catalog.read().contains_key(name) {
            return Err(Error::AlreadyExists);
        }
        let id = self.next_id.load(Ordering::SeqCst);
        let entry = CatalogEntry {
            id,
            config: config.clone(),
        };
        let meta = self.cf(CF_META);
        let mut batch = WriteBatch::default();
        batch.put_cf(
            meta,
            keys::catalog(name),
            serde_json::to_vec(&entry).map_err(|e| Error::Internal(e.to_string()))?,
        );
        batch.put_cf(meta, keys::NEXT_ID, (id + 1).to_be_bytes());
        batch.put_cf(meta, keys::stats(id), Stats::default().encode());
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo)?;
        self.next_id.store(id + 1, Ordering::SeqCst);
        self.catalog.write().insert(
            name.to_string(),
            Arc::new(BarrelInner {
                id,
                name: name.to_string(),
                config,
                deleted: AtomicBool::new(false),
                stats: Mutex::new(Stats::default()),
                listeners: Listeners::default(),
                index_queued: AtomicU64::new(0),
                index_done: AtomicU64::new(0),
            }),
        );
        Ok(())
    }

    /// Opens a handle on an existing barrel.
    pub fn open_barrel(self: &Arc<Self>, name: &str) -> Result<Barrel> {
        let inner = self.barrel_inner(name)?;
        Ok(Barrel::new(Arc::downgrade(self), inner))
    }

    fn barrel_inner(&self, name: &str) -> Result<Arc<BarrelInner>> {
        check_barrel_name(name)?;
        self.catalog
            .read()
            .get(name)
            .cloned()
            .ok_or(Error::NotFound)
    }

    /// Deletes a barrel and all its documents. Open handles on it answer [`Error::NotFound`]
    /// from then on.
    pub fn delete_barrel(&self, name: &str) -> Result<()> {
        check_barrel_name(name)?;
        let _guard = self.catalog_changes.lock();
        let inner = self.catalog.write().remove(name).ok_or(Error::NotFound)?;
        inner.deleted.store(true, Ordering::SeqCst);
        match self.committer.submit(Op::Drop {
            barrel: inner.clone(),
        })? {
            OpResult::Dropped => {
                // Subscribers learn it when they catch up (the feed answers `NotFound`).
                self.notifier.all_behind(&inner);
                Ok(())
            }
            _ => Err(Error::Internal("unexpected commit result".into())),
        }
    }

    /// Compacts the whole store now (blocking): every deleted document, barrel and attachment
    /// content leaves the disk. Deleted barrels are range deletions whose space otherwise comes
    /// back only as compactions reach it; removed attachment contents are compacted soon by
    /// RocksDB itself. For maintenance and measurements.
    pub fn compact(&self) -> Result<()> {
        for cf in std::iter::once(CF_META).chain(DATA_CFS) {
            self.db
                .compact_range_cf(self.cf(cf), None::<&[u8]>, None::<&[u8]>);
        }
        self.index_db.compact_range(None::<&[u8]>, None::<&[u8]>);
        Ok(())
    }

    /// Flushes every memtable to disk (SST files). Not needed for durability (the write-ahead
    /// log already has every commit); useful before measuring sizes or backing up files.
    pub fn flush(&self) -> Result<()> {
        for cf in std::iter::once(CF_META).chain(DATA_CFS) {
            self.db.flush_cf(self.cf(cf))?;
        }
        self.index_db.flush()?;
        Ok(())
    }

    /// Writes what the memtables hold to table files once the indexer has caught up, so the
    /// write-ahead logs can be deleted: for a store about to close (the NIF's `store_close`,
    /// `barreld` on shutdown). Not needed for durability, as [`Store::flush`]. A store closed
    /// this way takes less disk (100k 1 KB documents left ~110 MiB of logs behind, and their
    /// contents take about half that in compressed tables) and opens without replaying them.
    pub fn flush_for_close(&self) -> Result<()> {
        self.indexer.drain();
        self.flush()
    }

    /// The store's background work now: the indexer's queue and RocksDB's flushes and
    /// compactions, over the document and the index databases and all their column families.
    /// For operators (is the store keeping up?) and for benchmarks that must start from rest.
    pub fn background(&self) -> Background {
        let mut bg = Background {
            index_queue: self.indexer.pending() as u64,
            ..Background::default()
        };
        // The documents' column families; the index instance has only its default one (`None`).
        let doc_cfs: Vec<Option<&ColumnFamily>> = std::iter::once(CF_META)
            .chain(DATA_CFS)
            .map(|name| Some(self.cf(name)))
            .collect();
        for (db, cfs) in [(&*self.db, doc_cfs), (&*self.index_db, vec![None])] {
            let int = |cf: Option<&ColumnFamily>, name: &str| {
                match cf {
                    Some(cf) => db.property_int_value_cf(cf, name),
                    None => db.property_int_value(name),
                }
                .ok()
                .flatten()
                .unwrap_or(0)
            };
            bg.flushes_running += int(None, "rocksdb.num-running-flushes");
            bg.compactions_running += int(None, "rocksdb.num-running-compactions");
            let per_cf = |name: &str| -> u64 { cfs.iter().map(|cf| int(*cf, name)).sum() };
            bg.flush_pending |= per_cf("rocksdb.mem-table-flush-pending") > 0;
            bg.compaction_pending |= per_cf("rocksdb.compaction-pending") > 0;
            bg.pending_compaction_bytes += per_cf("rocksdb.estimate-pending-compaction-bytes");
            bg.memtable_bytes += per_cf("rocksdb.size-all-mem-tables");
        }
        bg
    }

    /// Names of all barrels, sorted.
    pub fn list_barrels(&self) -> Vec<String> {
        let mut names: Vec<String> = self.catalog.read().keys().cloned().collect();
        names.sort();
        names
    }

    /// Information about a barrel by name.
    pub fn barrel_info(&self, name: &str) -> Result<BarrelInfo> {
        let inner = self.barrel_inner(name)?;
        Ok(self.info_of(&inner))
    }

    pub(crate) fn info_of(&self, inner: &BarrelInner) -> BarrelInfo {
        let (start, end) = (keys::prefix(inner.id), keys::prefix_end(inner.id));
        let disk_size = DATA_CFS
            .iter()
            .map(|cf| {
                self.db
                    .get_approximate_sizes_cf(self.cf(cf), &[rocksdb::Range::new(&start, &end)])
                    .into_iter()
                    .sum::<u64>()
            })
            .chain(self.index_db.get_approximate_sizes(&[rocksdb::Range::new(
                &keys::index_prefix(inner.id),
                &keys::index_prefix_end(inner.id),
            )]))
            .sum();
        BarrelInfo {
            name: inner.name.clone(),
            stats: *inner.stats.lock(),
            disk_size,
            config: inner.config.clone(),
        }
    }

    /// Removes a barrel's path index (after its removal from the catalog was committed).
    pub(crate) fn drop_index(&self, barrel: u64) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.delete_range(keys::index_prefix(barrel), keys::index_prefix_end(barrel));
        self.index_db.write(batch)?;
        Ok(())
    }

    /// Ids of the barrels in the catalog.
    pub(crate) fn barrel_ids(&self) -> std::collections::HashSet<u64> {
        self.catalog.read().values().map(|b| b.id).collect()
    }

    /// Adds the removal of a barrel's data (but its path index) and catalog entry to `batch`.
    pub(crate) fn drop_barrel_into(&self, batch: &mut WriteBatch, inner: &BarrelInner) {
        let (start, end) = (keys::prefix(inner.id), keys::prefix_end(inner.id));
        for cf in DATA_CFS {
            batch.delete_range_cf(self.cf(cf), start, end);
        }
        let meta = self.cf(CF_META);
        batch.delete_cf(meta, keys::catalog(&inner.name));
        batch.delete_cf(meta, keys::stats(inner.id));
        batch.delete_cf(meta, keys::rebuilding(inner.id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn barrel_names_are_url_safe() {
        for ok in ["a", "mybarrel", "My-Barrel_2.0", "9lives"] {
            assert!(check_barrel_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "_x", "-x", "a/b", "a b", "é", &"a".repeat(129)] {
            assert!(check_barrel_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn index_prefixes_keep_the_order_of_barrels_and_hold_their_keys() {
        let ids = [
            0,
            1,
            2,
            255,
            256,
            257,
            65_535,
            65_536,
            1 << 40,
            u64::MAX - 1,
            u64::MAX,
        ];
        for (i, &a) in ids.iter().enumerate() {
            let p = keys::index_prefix(a);
            assert_eq!(keys::index_barrel(&p), Some((a, p.len())));
            let key = keys::index(a, b"\x01x\x00\x01\xff\xff", "doc");
            assert_eq!(keys::index_barrel(&key), Some((a, p.len())));
            assert!(key.starts_with(&p));
            assert!(p.as_slice() <= key.as_slice() && key < keys::index_prefix_end(a));
            for &b in &ids[i + 1..] {
                // Every key of a sorts before every key of b.
                assert!(
                    keys::index_prefix_end(a) <= keys::index_prefix(b),
                    "{a} {b}"
                );
            }
        }
        assert_eq!(keys::index_prefix(1), [1, 1]);
        assert_eq!(keys::index_barrel(&[]), None);
        assert_eq!(keys::index_barrel(&[2, 1]), None);
        assert_eq!(keys::index_barrel(&[9, 1, 2, 3, 4, 5, 6, 7, 8, 9]), None);
    }

    #[test]
    fn stats_roundtrip() {
        let s = Stats {
            updated_seq: 1,
            docs_count: 2,
            deleted_count: 3,
            data_size: 4,
        };
        assert_eq!(Stats::decode(&s.encode()), Some(s));
        assert_eq!(Stats::decode(&[1, 2]), None);
    }
}
