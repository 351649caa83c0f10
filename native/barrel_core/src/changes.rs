//! The changes feed and live subscriptions.
//!
//! **Feed.** Every committed document write takes the next sequence number of its barrel, in the
//! same batch as the document. The `seqs` column family keeps one entry per document, at its
//! latest sequence (the writer deletes the previous one), so reading the feed since `S` lists
//! every document changed after `S` once, in sequence order. A [`ChangesCursor`] reads it over
//! one snapshot.
//!
//! **Subscriptions.** After each commit the writer hands the changes of barrels that have
//! subscribers to the store's notifier thread through a bounded queue, without ever waiting: when
//! the queue is full the changes are dropped and the barrel's subscribers are marked behind. A
//! small commit (at most [`INLINE_DELIVERIES`] changes × subscribers) while the notifier has
//! nothing in hand is delivered by the writer itself instead, right after the commit: waking
//! the notifier thread took a millisecond or more one time in ten on a busy 2-core machine,
//! most of a change's way to its listener. Either way deliveries follow the commit order. The
//! notifier matches each change against each subscription's [`Pattern`]s (old and new revision)
//! and passes matches to the subscription's [`ChangeSink`]. Each subscription has a window of
//! unacknowledged changes ([`Subscription::ack`]); a subscription that would exceed it stops
//! receiving and is told it fell behind ([`ChangeSink::fell_behind`]). Its owner then catches up
//! from the feed since the last change it handled and calls [`Subscription::resume`]. Nothing is
//! buffered without bound on either side, and nothing is lost: whatever was dropped is in the
//! feed.
//!
//! **Patterns** follow MQTT topic filters over a document's paths. A document is the set of
//! topics `/<path segments>/<value>`, one per scalar (as in the path index: `{"a": [{"b": 1}]}`
//! gives `/a/0/b/1`) plus `/id/<doc id>`. `+` matches exactly one segment, `#` (last) any number
//! of remaining segments, and `/*` (or `#`) every document. Other segments match object keys
//! exactly, array positions by number, and values: strings compared lowercased (as the index
//! does), numbers numerically (`1` matches `1.0`), `true`, `false`, `null`. `~1` and `~0` stand
//! for `/` and `~` inside a segment. A leading `$` is allowed (`$/type/user`).

use crate::barrel::Barrel;
use crate::doc::{decode_body, DocRecord, DELETED, ID, REV};
use crate::error::{Error, Result};
use crate::index::normalize;
use crate::revtree::{Rev, RevTree};
use crate::store::{keys, BarrelInner, Stats, Store, CF_DOCS, CF_META, CF_SEQS};
use parking_lot::{Mutex, RwLock};
use rocksdb::{IteratorMode, ReadOptions, SnapshotWithThreadMode, DB};
use serde_json::{Map, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

/// Longest accepted pattern, in bytes.
pub const MAX_PATTERN_LEN: usize = 1024;

/// One segment of a [`Pattern`].
#[derive(Clone, Debug, PartialEq)]
enum PatSeg {
    /// `+`: any one segment.
    One,
    /// `#`: any remaining segments.
    Rest,
    /// A key, an array position or a value.
    Lit(String),
}

/// An MQTT-style topic filter over document paths (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct Pattern {
    segs: Vec<PatSeg>,
    text: String,
}

impl Pattern {
    /// Parses a pattern: `/*`, `#`, or `/seg/seg/...` with `+` and a final `#`.
    pub fn parse(text: &str) -> std::result::Result<Pattern, String> {
        if text.len() > MAX_PATTERN_LEN {
            return Err(format!("pattern longer than {MAX_PATTERN_LEN} bytes"));
        }
        let body = text.strip_prefix('$').unwrap_or(text);
        let segs = if body == "/*" || body == "#" || body == "/#" {
            vec![PatSeg::Rest]
        } else {
            let rest = body
                .strip_prefix('/')
                .ok_or_else(|| format!("pattern {text:?} must start with /"))?;
            let parts: Vec<&str> = rest.split('/').collect();
            let mut segs = Vec::with_capacity(parts.len());
            for (i, p) in parts.iter().enumerate() {
                segs.push(match *p {
                    "" => return Err(format!("empty segment in pattern {text:?}")),
                    "+" => PatSeg::One,
                    "#" if i + 1 == parts.len() => PatSeg::Rest,
                    "#" => return Err(format!("# must be the last segment of {text:?}")),
                    s if s.contains('#') || (s.contains('+') && !is_number(s)) => {
                        return Err(format!("wildcard inside segment {s:?} of {text:?}"))
                    }
                    s => PatSeg::Lit(s.replace("~1", "/").replace("~0", "~")),
                });
            }
            segs
        };
        Ok(Pattern {
            segs,
            text: text.to_string(),
        })
    }

    /// The pattern as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// `true` when the pattern matches every document.
    pub fn matches_all(&self) -> bool {
        self.segs == [PatSeg::Rest]
    }

    /// Does the document `id` with body `body` (`None` for a deletion) match?
    pub fn matches(&self, id: &str, body: Option<&Map<String, Value>>) -> bool {
        if self.matches_all() {
            return true;
        }
        // The id is the topic `/id/<id>`, whatever the body holds.
        let id_match = match self.segs.as_slice() {
            [first, rest @ ..] if seg_is(first, ID) => {
                match_value(rest, &Value::String(id.to_string()))
            }
            _ => false,
        };
        id_match || body.is_some_and(|b| match_object(&self.segs, b))
    }
}

fn is_number(s: &str) -> bool {
    s.parse::<f64>().is_ok()
}

fn seg_is(p: &PatSeg, key: &str) -> bool {
    match p {
        PatSeg::One | PatSeg::Rest => true,
        PatSeg::Lit(l) => l == key,
    }
}

fn match_object(pat: &[PatSeg], obj: &Map<String, Value>) -> bool {
    let Some((first, rest)) = pat.split_first() else {
        return false;
    };
    if *first == PatSeg::Rest {
        return !obj.is_empty();
    }
    match first {
        PatSeg::Lit(k) => obj
            .get(k)
            .is_some_and(|v| k != ID && k != "_attachments" && match_node(rest, v)),
        _ => obj
            .iter()
            .any(|(k, v)| k != ID && k != "_attachments" && match_node(rest, v)),
    }
}

fn match_node(pat: &[PatSeg], v: &Value) -> bool {
    match v {
        Value::Object(o) => match_object(pat, o),
        Value::Array(a) => {
            let Some((first, rest)) = pat.split_first() else {
                return false;
            };
            match first {
                PatSeg::Rest => !a.is_empty(),
                PatSeg::One => a.iter().any(|x| match_node(rest, x)),
                PatSeg::Lit(l) => l
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| a.get(i))
                    .is_some_and(|x| match_node(rest, x)),
            }
        }
        scalar => match_value(pat, scalar),
    }
}

/// Matches the last topic segment (a scalar value) and what follows it.
fn match_value(pat: &[PatSeg], v: &Value) -> bool {
    match pat {
        [PatSeg::Rest] => true,
        [PatSeg::One] | [PatSeg::One, PatSeg::Rest] => true,
        [PatSeg::Lit(l)] | [PatSeg::Lit(l), PatSeg::Rest] => value_is(l, v),
        _ => false,
    }
}

fn value_is(lit: &str, v: &Value) -> bool {
    match v {
        Value::Null => lit == "null",
        Value::Bool(b) => lit == if *b { "true" } else { "false" },
        Value::Number(n) => match (lit.parse::<f64>(), n.as_f64()) {
            (Ok(a), Some(b)) => a == b,
            _ => false,
        },
        Value::String(s) => normalize(s) == normalize(lit),
        _ => false,
    }
}

/// Do any of `patterns` match? (An empty list matches everything.)
pub fn any_matches(patterns: &[Pattern], id: &str, body: Option<&Map<String, Value>>) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| p.matches(id, body))
}

/// One entry of the changes feed.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// Document id.
    pub id: String,
    /// The sequence of this change.
    pub seq: u64,
    /// The winning revision after the change.
    pub rev: Rev,
    /// The winning revision, or with `all_docs` every leaf revision (winner first).
    pub changes: Vec<Rev>,
    /// The winning revision is a deletion.
    pub deleted: bool,
    /// The winning revision's body (stored JSON) when documents were asked for.
    pub doc: Option<Arc<[u8]>>,
}

impl Change {
    /// The special members of the change's document (`id`, `_rev`, `_deleted` for deletions),
    /// to add to [`Change::doc`].
    pub fn doc_meta(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert(ID.into(), Value::String(self.id.clone()));
        m.insert(REV.into(), Value::String(self.rev.to_string()));
        if self.deleted {
            m.insert(DELETED.into(), Value::Bool(true));
        }
        m
    }

    /// The whole document (`doc` plus [`Change::doc_meta`]), when documents were asked for.
    pub fn doc_value(&self) -> Option<Map<String, Value>> {
        let mut body = decode_body(self.doc.as_deref()?)?;
        body.extend(self.doc_meta());
        Some(body)
    }
}

/// Options of a feed read.
#[derive(Clone, Debug, Default)]
pub struct ChangesOptions {
    /// Carry each document's winning body.
    pub include_docs: bool,
    /// `changes` lists every leaf revision (conflicts and deleted leaves), not just the winner.
    pub all_docs: bool,
    /// Newest first.
    pub descending: bool,
    /// Only documents whose current revision matches one of these (none: every document).
    pub filter: Vec<Pattern>,
}

fn leaves_of(tree: &RevTree, winner: &Rev, all_docs: bool) -> Vec<Rev> {
    if all_docs {
        tree.leaves_winner_first(winner)
    } else {
        vec![winner.clone()]
    }
}

/// Most feed entries whose documents a feed read looks up at once.
const FEED_RUN: usize = 256;

/// A feed read in progress: one snapshot, read in chunks.
pub struct ChangesCursor {
    // Field order matters: the snapshot borrows `store.db` and must be dropped first.
    snapshot: SnapshotWithThreadMode<'static, DB>,
    store: Arc<Store>,
    barrel: u64,
    /// Next sequence to read (ascending) or first sequence not to read (descending).
    lo: u64,
    hi: u64,
    opts: ChangesOptions,
    update_seq: u64,
    done: bool,
}

impl ChangesCursor {
    fn new(store: Arc<Store>, barrel: u64, since: u64, opts: ChangesOptions) -> Result<Self> {
        let snapshot = store.db.snapshot();
        // SAFETY: as for `QueryCursor`: the snapshot borrows `store.db`, kept alive by the
        // `Arc<Store>` in this struct and dropped after the snapshot field.
        let snapshot: SnapshotWithThreadMode<'static, DB> =
            unsafe { std::mem::transmute(snapshot) };
        let update_seq = match snapshot.get_cf(store.cf(CF_META), keys::stats(barrel))? {
            Some(v) => {
                Stats::decode(&v)
                    .ok_or_else(|| Error::Corrupt("barrel stats".into()))?
                    .updated_seq
            }
            None => 0,
        };
        Ok(ChangesCursor {
            snapshot,
            store,
            barrel,
            lo: since.saturating_add(1),
            hi: update_seq.saturating_add(1),
            opts,
            update_seq,
            done: since >= update_seq,
        })
    }

    /// The barrel's latest sequence in this snapshot: where a reader that read everything can
    /// continue from.
    pub fn update_seq(&self) -> u64 {
        self.update_seq
    }

    /// Up to `n` more changes; fewer (possibly none) when the feed is exhausted.
    pub fn next_chunk(&mut self, n: usize) -> Result<Vec<Change>> {
        let mut out = Vec::new();
        if self.done || n == 0 {
            return Ok(out);
        }
        if self.store.is_closing() {
            return Err(Error::Closed);
        }
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(keys::seq(self.barrel, self.lo).to_vec());
        ro.set_iterate_upper_bound(keys::seq(self.barrel, self.hi).to_vec());
        let mode = if self.opts.descending {
            IteratorMode::End
        } else {
            IteratorMode::Start
        };
        let mut iter = self
            .snapshot
            .iterator_cf_opt(self.store.cf(CF_SEQS), ro, mode);
        let mut last = None;
        let mut exhausted = false;
        // Feed entries are read in runs of at most the changes still wanted, whose documents
        // are then looked up together (one MultiGet): the n-th change, if any, is the last
        // entry of a run.
        while out.len() < n && !exhausted {
            let want = (n - out.len()).min(FEED_RUN);
            let mut run: Vec<(String, u64)> = Vec::with_capacity(want);
            for item in iter.by_ref() {
                let (key, id) = item?;
                let seq = key
                    .get(8..16)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes)
                    .ok_or_else(|| Error::Corrupt("sequence key".into()))?;
                let id = std::str::from_utf8(&id)
                    .map_err(|_| Error::Corrupt("document id".into()))?
                    .to_string();
                run.push((id, seq));
                if run.len() == want {
                    break;
                }
            }
            exhausted = run.len() < want;
            last = run.last().map(|(_, seq)| *seq).or(last);
            self.read_changes(run, &mut out)?;
        }
        match last {
            Some(seq) if out.len() == n => {
                if self.opts.descending {
                    self.hi = seq;
                } else {
                    self.lo = seq + 1;
                }
                self.done = self.lo >= self.hi;
            }
            _ => self.done = true,
        }
        Ok(out)
    }

    /// Appends to `out` the changes of feed entries `run` (id and sequence) that pass the
    /// filter, their documents read together from the cursor's snapshot.
    fn read_changes(&self, run: Vec<(String, u64)>, out: &mut Vec<Change>) -> Result<()> {
        if run.is_empty() {
            return Ok(());
        }
        let keys: Vec<Vec<u8>> = run
            .iter()
            .map(|(id, _)| keys::doc(self.barrel, id))
            .collect();
        let mut ro = ReadOptions::default();
        ro.set_snapshot(&self.snapshot);
        let found =
            self.store
                .db
                .batched_multi_get_cf_opt(self.store.cf(CF_DOCS), &keys, false, &ro);
        for ((id, seq), raw) in run.into_iter().zip(found) {
            let Some(raw) = raw? else {
                return Err(Error::Corrupt(format!("feed entry for missing doc {id}")));
            };
            if let Some(c) = self.read_change(id, seq, &raw)? {
                out.push(c);
            }
        }
        Ok(())
    }

    /// The change of document `id` at `seq`, from its record `raw` (decoded in place: only a
    /// feed with the documents copies a body); `None` when the filter leaves it out.
    fn read_change(&self, id: String, seq: u64, raw: &[u8]) -> Result<Option<Change>> {
        let (_, tree, body) =
            DocRecord::decode_parts(raw).ok_or_else(|| Error::Corrupt("document record".into()))?;
        let winner = tree
            .winner()
            .ok_or_else(|| Error::Corrupt("empty revision tree".into()))?;
        if !self.opts.filter.is_empty() {
            let body = if winner.deleted {
                None
            } else {
                Some(decode_body(body).ok_or_else(|| Error::Corrupt("document body".into()))?)
            };
            if !any_matches(&self.opts.filter, &id, body.as_ref()) {
                return Ok(None);
            }
        }
        let changes = leaves_of(&tree, &winner.rev, self.opts.all_docs);
        Ok(Some(Change {
            id,
            seq,
            rev: winner.rev,
            changes,
            deleted: winner.deleted,
            doc: if self.opts.include_docs {
                Some(Arc::from(body))
            } else {
                None
            },
        }))
    }
}

/// Where a subscription's changes go (the BEAM binding sends them to a process). Called on the
/// store's notifier thread, or on its writer thread for a small commit (never on a thread that
/// committed its own save, see `crate::commit`; see
/// [`INLINE_DELIVERIES`]): an implementation must hand the changes over and return, never
/// block (every write would wait behind it).
pub trait ChangeSink: Send + Sync {
    /// Takes matching changes, in sequence order. Returns `false` when the receiver is gone,
    /// which cancels the subscription.
    fn deliver(&self, changes: Vec<Change>) -> bool;
    /// Says the subscription stopped receiving (window full, changes dropped, or the barrel was
    /// deleted) until [`Subscription::resume`]. Returns `false` when the receiver is gone.
    fn fell_behind(&self) -> bool;
}

/// Options of a subscription.
#[derive(Clone, Debug)]
pub struct SubscribeOptions {
    /// Only changes whose new or previous revision matches one of these (none: every change).
    pub patterns: Vec<Pattern>,
    /// Carry each document's winning body.
    pub include_docs: bool,
    /// `changes` lists every leaf revision.
    pub all_docs: bool,
    /// Most changes delivered and not yet acknowledged (default 1000).
    pub window: usize,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            patterns: Vec::new(),
            include_docs: false,
            all_docs: false,
            window: 1000,
        }
    }
}

struct SubState {
    active: bool,
    inflight: usize,
}

/// A live subscription to a barrel's changes. Dropping it does not cancel it: call
/// [`Subscription::cancel`] (the BEAM binding does so when its handle is garbage collected).
pub struct Subscription {
    opts: SubscribeOptions,
    state: Mutex<SubState>,
    sink: Box<dyn ChangeSink>,
    barrel: Weak<BarrelInner>,
    cancelled: AtomicBool,
}

impl Subscription {
    /// The changes handled by the receiver: frees room in the window.
    pub fn ack(&self, n: usize) {
        let mut st = self.state.lock();
        st.inflight = st.inflight.saturating_sub(n);
    }

    /// Starts receiving again after [`ChangeSink::fell_behind`], with an empty window. Changes
    /// committed from now on are delivered; the caller reads the feed for earlier ones.
    pub fn resume(&self) {
        let mut st = self.state.lock();
        st.active = true;
        st.inflight = 0;
    }

    /// Stops the subscription for good.
    pub fn cancel(&self) {
        if self.cancelled.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(b) = self.barrel.upgrade() {
            b.listeners.remove(self);
        }
    }

    /// `true` once cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Stops delivery and tells the sink, once.
    fn fall_behind(&self) {
        let was_active = {
            let mut st = self.state.lock();
            std::mem::replace(&mut st.active, false)
        };
        if was_active && !self.sink.fell_behind() {
            self.cancel();
        }
    }

    fn offer(&self, changes: Vec<Change>) {
        let fits = {
            let mut st = self.state.lock();
            if !st.active {
                return;
            }
            if st.inflight + changes.len() > self.opts.window {
                false
            } else {
                st.inflight += changes.len();
                true
            }
        };
        if !fits {
            self.fall_behind();
        } else if !self.sink.deliver(changes) {
            self.cancel();
        }
    }
}

/// The subscriptions of one barrel.
#[derive(Default)]
pub(crate) struct Listeners {
    subs: RwLock<Vec<Arc<Subscription>>>,
    /// Set when changes of this barrel were dropped (notifier queue full).
    lost: AtomicBool,
    count: AtomicU64,
}

impl Listeners {
    /// Are there subscribers (so the writer should publish changes)?
    pub(crate) fn any(&self) -> bool {
        self.count.load(Ordering::Acquire) > 0
    }

    fn add(&self, s: Arc<Subscription>) {
        let mut subs = self.subs.write();
        subs.push(s);
        self.count.store(subs.len() as u64, Ordering::Release);
    }

    fn remove(&self, s: &Subscription) {
        let mut subs = self.subs.write();
        subs.retain(|x| !std::ptr::eq(Arc::as_ptr(x), s));
        self.count.store(subs.len() as u64, Ordering::Release);
    }

    /// How many subscriptions there are.
    fn len(&self) -> usize {
        self.count.load(Ordering::Acquire) as usize
    }

    /// Marks every subscriber behind (their owners catch up from the feed). Sinks are only
    /// called on the notifier thread, or on the writer's when it delivers itself (see
    /// [`Notifier::publish`]): elsewhere, use [`Notifier::all_behind`].
    fn all_behind(&self) {
        let subs: Vec<_> = self.subs.read().clone();
        for s in subs {
            s.fall_behind();
        }
    }
}

/// A committed change as the writer publishes it: the change (with the new winner's body) and
/// the previous winner's body, for matching.
pub(crate) struct LiveChange {
    pub change: Change,
    pub all_leaves: Vec<Rev>,
    pub old_body: Option<Arc<[u8]>>,
}

struct Event {
    barrel: Arc<BarrelInner>,
    changes: Vec<LiveChange>,
}

/// Queue length (commit groups) between the writer and the notifier.
const NOTIFY_QUEUE: usize = 4096;

/// Most deliveries (changes × subscriptions of the barrel) the writer makes itself after a
/// commit, when the notifier has nothing in hand; larger commits go to the notifier, so a
/// writer under load spends no time on listeners.
pub const INLINE_DELIVERIES: usize = 8;

/// The store's notifier thread and its queue.
pub(crate) struct Notifier {
    tx: Option<SyncSender<Event>>,
    lost: Arc<Mutex<Vec<Weak<BarrelInner>>>>,
    /// Events queued for the notifier or being dispatched by it.
    pending: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Notifier {
    pub(crate) fn start() -> Result<Notifier> {
        let (tx, rx) = sync_channel(NOTIFY_QUEUE);
        let lost = Arc::new(Mutex::new(Vec::new()));
        let pending = Arc::new(AtomicUsize::new(0));
        let (thread_lost, thread_pending) = (lost.clone(), pending.clone());
        let thread = std::thread::Builder::new()
            .name("barrel-notifier".into())
            .spawn(move || notifier_loop(&rx, &thread_lost, &thread_pending))
            .map_err(|e| Error::Internal(format!("cannot start the notifier thread: {e}")))?;
        Ok(Notifier {
            tx: Some(tx),
            lost,
            pending,
            thread: Some(thread),
        })
    }

    /// Hands committed changes to their subscribers without waiting. Called by whoever
    /// commits (holding the writer's role, so in commit order). With `may_deliver` (the
    /// store's writer thread), a small commit is delivered right here when the notifier has
    /// nothing in hand (everything handed to it before is delivered, so the order holds) and
    /// no drop is waiting to be told; anything else is queued for the notifier, and dropped
    /// (marking the barrel's subscribers behind) when the queue is full. A caller committing
    /// its own save never delivers: its thread may be one a sink cannot send from (the BEAM's
    /// schedulers).
    pub(crate) fn publish(
        &self,
        barrel: Arc<BarrelInner>,
        changes: Vec<LiveChange>,
        may_deliver: bool,
    ) {
        let Some(tx) = &self.tx else { return };
        let inline = may_deliver
            && self.pending.load(Ordering::Acquire) == 0
            && !barrel.listeners.lost.load(Ordering::Acquire)
            && changes.len().saturating_mul(barrel.listeners.len()) <= INLINE_DELIVERIES;
        if inline {
            dispatch_guarded(Event { barrel, changes });
            return;
        }
        self.pending.fetch_add(1, Ordering::AcqRel);
        if let Err(TrySendError::Full(ev) | TrySendError::Disconnected(ev)) =
            tx.try_send(Event { barrel, changes })
        {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            self.all_behind(&ev.barrel);
        }
    }

    /// Has the notifier thread mark every subscriber of `barrel` behind (within its polling
    /// interval, 20 ms).
    pub(crate) fn all_behind(&self, barrel: &Arc<BarrelInner>) {
        barrel.listeners.lost.store(true, Ordering::Release);
        self.lost.lock().push(Arc::downgrade(barrel));
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

fn notifier_loop(
    rx: &Receiver<Event>,
    lost: &Mutex<Vec<Weak<BarrelInner>>>,
    pending: &AtomicUsize,
) {
    loop {
        let ev = match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(ev) => Some(ev),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let dropped: Vec<_> = std::mem::take(&mut *lost.lock());
        for b in dropped.iter().filter_map(Weak::upgrade) {
            if b.listeners.lost.swap(false, Ordering::AcqRel) {
                b.listeners.all_behind();
            }
        }
        if let Some(ev) = ev {
            dispatch_guarded(ev);
            // Released after the deliveries: a writer that reads 0 delivers after them.
            pending.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// [`dispatch`], whose sinks must not take the notifier (or the writer) down with them.
fn dispatch_guarded(ev: Event) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| dispatch(ev)));
}

/// A lazily decoded body.
struct Lazy<'a> {
    raw: Option<&'a [u8]>,
    decoded: Option<Option<Map<String, Value>>>,
}

impl Lazy<'_> {
    fn get(&mut self) -> Option<&Map<String, Value>> {
        let raw = self.raw;
        self.decoded
            .get_or_insert_with(|| raw.and_then(decode_body))
            .as_ref()
    }
}

fn dispatch(ev: Event) {
    let subs: Vec<Arc<Subscription>> = ev.barrel.listeners.subs.read().clone();
    if subs.is_empty() {
        return;
    }
    let mut out: Vec<Vec<Change>> = vec![Vec::new(); subs.len()];
    for live in &ev.changes {
        let c = &live.change;
        let mut new = Lazy {
            raw: if c.deleted { None } else { c.doc.as_deref() },
            decoded: None,
        };
        let mut old = Lazy {
            raw: live.old_body.as_deref(),
            decoded: None,
        };
        for (i, s) in subs.iter().enumerate() {
            let p = &s.opts.patterns;
            let hit = p.is_empty()
                || p.iter().any(|p| p.matches_all())
                || any_matches(p, &c.id, new.get())
                || any_matches(p, &c.id, old.get());
            if hit {
                let mut c = c.clone();
                if s.opts.all_docs {
                    c.changes = live.all_leaves.clone();
                }
                if !s.opts.include_docs {
                    c.doc = None;
                }
                out[i].push(c);
            }
        }
    }
    for (s, changes) in subs.iter().zip(out) {
        if !changes.is_empty() && !s.is_cancelled() {
            s.offer(changes);
        }
    }
}

impl Barrel {
    /// Reads the changes feed after sequence `since`, over one snapshot; read it with
    /// [`ChangesCursor::next_chunk`].
    pub fn changes_cursor(&self, since: u64, opts: ChangesOptions) -> Result<ChangesCursor> {
        let store = self.store()?;
        ChangesCursor::new(store, self.id(), since, opts)
    }

    /// Subscribes to the changes committed from now on (see the module docs). Read earlier ones
    /// from the feed.
    pub fn subscribe(
        &self,
        opts: SubscribeOptions,
        sink: Box<dyn ChangeSink>,
    ) -> Result<Arc<Subscription>> {
        let store = self.store()?;
        if opts.window == 0 {
            return Err(Error::BadParam("window must be at least 1".into()));
        }
        let inner = self.inner();
        let sub = Arc::new(Subscription {
            opts,
            state: Mutex::new(SubState {
                active: true,
                inflight: 0,
            }),
            sink,
            barrel: Arc::downgrade(inner),
            cancelled: AtomicBool::new(false),
        });
        inner.listeners.add(sub.clone());
        if inner.deleted.load(Ordering::SeqCst) {
            // A deleted barrel never publishes: tell the subscriber now.
            store.notifier.all_behind(inner);
        }
        // Writes already being applied may have decided not to publish: once every operation
        // queued so far is committed, a snapshot taken after this call sees those, and every
        // later commit is published.
        if let Err(e) = store.committer.submit(crate::commit::Op::Barrier) {
            sub.cancel();
            return Err(e);
        }
        Ok(sub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn hit(p: &str, id: &str, body: Value) -> bool {
        Pattern::parse(p).unwrap().matches(id, Some(&m(body)))
    }

    #[test]
    fn every_document() {
        for p in ["/*", "#", "/#", "$/*"] {
            assert!(hit(p, "a", json!({})), "{p}");
            assert!(Pattern::parse(p).unwrap().matches("a", None));
        }
    }

    #[test]
    fn ids() {
        assert!(hit("/id/a", "a", json!({"x": 1})));
        assert!(!hit("/id/b", "a", json!({"x": 1})));
        assert!(Pattern::parse("/id/a").unwrap().matches("a", None));
        assert!(hit("/id/+", "a", json!({})));
        assert!(hit("/id/#", "a", json!({})));
    }

    #[test]
    fn values_and_wildcards() {
        let d = json!({"locations": [{"country": "France"}, {"country": "Spain"}],
                       "n": 1.0, "ok": true, "none": null, "a/b": {"c~d": "x"}});
        assert!(hit("/locations/+/country/france", "i", d.clone()));
        assert!(hit("/locations/1/country/Spain", "i", d.clone()));
        assert!(!hit("/locations/0/country/spain", "i", d.clone()));
        assert!(hit("/locations/#", "i", d.clone()));
        assert!(hit("/locations/+/country/+", "i", d.clone()));
        assert!(!hit("/locations/+/country", "i", d.clone()));
        assert!(!hit("/locations/+", "i", d.clone()));
        assert!(hit("/+/+/country/spain", "i", d.clone()));
        assert!(hit("/n/1", "i", d.clone()));
        assert!(hit("$/ok/true", "i", d.clone()));
        assert!(hit("/none/null", "i", d.clone()));
        assert!(!hit("/ok/false", "i", d.clone()));
        assert!(hit("/a~1b/c~0d/x", "i", d.clone()));
        assert!(hit("/n/#", "i", d.clone()));
        assert!(!hit("/missing/#", "i", d));
    }

    #[test]
    fn bad_patterns() {
        for p in [
            "",
            "x",
            "/a//b",
            "/a/#/b",
            "/a#",
            "/a/b+",
            &format!("/{}", "a".repeat(2000)),
        ] {
            assert!(Pattern::parse(p).is_err(), "{p}");
        }
        assert!(Pattern::parse("/n/+1").is_ok());
    }
}
