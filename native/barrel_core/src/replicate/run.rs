//! The replication algorithm, the same for every pair of endpoints:
//!
//! 1. Read the checkpoint: the local document `_local/<replication id>` on both sides; the
//!    replication starts after the lower of their `last_seq` (or at `since` when given, or 0).
//! 2. Read a batch of the source's changes after it, every leaf revision of each document.
//! 3. Ask the target which of those revisions it misses (`revs_diff`).
//! 4. Read the missing revisions from the source with their history (`_revisions`, and
//!    `latest`) and write them to the target as they are (`new_edits: false`): conflicts
//!    arrive as conflicts, deletions as tombstones, and both sides end with the same trees.
//!    Attachments come along, each content at most once, the new ones being those changed
//!    after the target's possible ancestors (CouchDB's `atts_since`); the others go as stubs.
//!    Between two local barrels the documents carry stubs and only the contents the target
//!    lacks are copied, chunk by chunk. Across a network, a document whose new contents are
//!    small (at most [`STREAM_THRESHOLD`] in all) carries them inline (base64, in groups of
//!    bounded size); a larger one has its contents streamed apart, never whole in memory:
//!    pulled into a local barrel with a `GET` of each content it lacks, pushed to a remote one
//!    as a multipart `PUT` of the document and its new contents. A document the
//!    target refuses for a missing stub (its ancestor changed meanwhile) is sent again with
//!    every content. Linked attachments travel as links (stubs with a `url`).
//! 5. Write the checkpoint on both sides (a continuous replication that keeps finding changes:
//!    at most every [`CONTINUOUS_CHECKPOINT_EVERY`], and when it catches up or is cancelled),
//!    then go on from 2 until the source has no more.
//!
//! A stopped replication resumes from its checkpoint: what the target confirmed before it is
//! not sent again (and `revs_diff` skips what it has anyway). A continuous replication, once
//! caught up, waits for the source to change; on errors it retries with backoff.

use super::endpoint::{couch_id, is_encoded, AttachmentData, ContentRef, Endpoint, MissingStub};
use super::RevsDiff;
use crate::attachment::{since_generation, ATTACHMENTS};
use crate::barrel::{Barrel, SaveOptions};
use crate::changes::Pattern;
use crate::doc::DocInput;
use crate::error::{Error, Result};
use crate::revtree::Rev;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How a replication runs.
#[derive(Clone, Debug)]
pub struct RepOptions {
    /// Keep going: wait for new changes once caught up, retry on errors.
    pub continuous: bool,
    /// Only documents whose current revision matches one of these (source side).
    pub filter: Vec<Pattern>,
    /// Start after this source sequence instead of the checkpoint.
    pub since: Option<u64>,
    /// Changes read per batch.
    pub batch_size: usize,
    /// Create a missing target (before each pass, so a continuous replication whose remote
    /// is down at first creates it once it is up).
    pub create_target: bool,
}

impl Default for RepOptions {
    fn default() -> Self {
        RepOptions {
            continuous: false,
            filter: Vec::new(),
            since: None,
            batch_size: 500,
            create_target: false,
        }
    }
}

/// Where a replication is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RepState {
    /// Reading and writing.
    Running,
    /// Continuous and caught up: waiting for changes.
    Idle,
    /// An error happened; a continuous replication retries after a pause.
    Retrying,
    /// One-shot replication done.
    Completed,
    /// Stopped by [`cancel`](RepControl::cancel).
    Cancelled,
    /// One-shot replication failed.
    Failed,
}

/// Counters and state of a replication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// See [`RepState`].
    pub state: RepState,
    /// Changed documents read from the source.
    pub docs_read: u64,
    /// Revisions written to the target.
    pub docs_written: u64,
    /// Revisions the target reported missing (`revs_diff`).
    pub missing_checked: u64,
    /// Attachment contents sent to the target (copied between local barrels, or inline in
    /// documents).
    pub attachments_copied: u64,
    /// Their total length in bytes.
    pub attachment_bytes: u64,
    /// Source sequence of the last checkpoint.
    pub last_seq: u64,
    /// The latest error, if any.
    pub last_error: Option<String>,
    /// Errors seen so far.
    pub errors: u64,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            state: RepState::Running,
            docs_read: 0,
            docs_written: 0,
            missing_checked: 0,
            attachments_copied: 0,
            attachment_bytes: 0,
            last_seq: 0,
            last_error: None,
            errors: 0,
        }
    }
}

/// Shared between a running replication and whoever watches it.
#[derive(Default)]
pub struct RepControl {
    cancelled: AtomicBool,
    progress: Mutex<Progress>,
}

impl RepControl {
    /// Asks the replication to stop (it stops between batches or waits).
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    /// `true` once cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// A copy of the current progress.
    pub fn progress(&self) -> Progress {
        self.progress.lock().map(|p| p.clone()).unwrap_or_default()
    }

    fn update(&self, f: impl FnOnce(&mut Progress)) -> Progress {
        match self.progress.lock() {
            Ok(mut p) => {
                f(&mut p);
                p.clone()
            }
            Err(_) => Progress::default(),
        }
    }
}

/// The id of a replication between two endpoints with a filter: the name of its checkpoint.
pub fn replication_id(source: &dyn Endpoint, target: &dyn Endpoint, opts: &RepOptions) -> String {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    h.update(source.describe().as_bytes());
    h.update([0]);
    h.update(target.describe().as_bytes());
    for p in &opts.filter {
        h.update([0]);
        h.update(p.as_str().as_bytes());
    }
    format!("barrel-rep-{}", crate::hex(&h.finalize()))
}

fn checkpoint_seq(doc: Option<Value>) -> Option<u64> {
    doc?.get("last_seq")?.as_u64()
}

/// Runs a replication until it completes (one-shot), fails (one-shot) or is cancelled.
/// `report` is called after every batch and state change, from this thread.
pub fn run(
    source: &mut dyn Endpoint,
    target: &mut dyn Endpoint,
    opts: &RepOptions,
    control: &RepControl,
    report: &mut dyn FnMut(&Progress),
) -> Result<()> {
    let rep_id = replication_id(source, target, opts);
    let mut backoff = Duration::from_millis(250);
    loop {
        if control.is_cancelled() {
            report(&control.update(|p| p.state = RepState::Cancelled));
            return Ok(());
        }
        match pass(source, target, opts, &rep_id, control, report) {
            // Cancelled inside the pass: reported at the top of the loop.
            Ok(()) if control.is_cancelled() => {}
            Ok(()) if !opts.continuous => {
                report(&control.update(|p| p.state = RepState::Completed));
                return Ok(());
            }
            Ok(()) => backoff = Duration::from_millis(250),
            Err(e) if !opts.continuous => {
                let msg = e.to_string();
                report(&control.update(|p| {
                    p.state = RepState::Failed;
                    p.errors += 1;
                    p.last_error = Some(msg);
                }));
                return Err(e);
            }
            Err(e) => {
                let msg = e.to_string();
                report(&control.update(|p| {
                    p.state = RepState::Retrying;
                    p.errors += 1;
                    p.last_error = Some(msg);
                }));
                sleep_unless_cancelled(control, backoff);
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

fn sleep_unless_cancelled(control: &RepControl, d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until && !control.is_cancelled() {
        std::thread::sleep(
            Duration::from_millis(20).min(until.saturating_duration_since(Instant::now())),
        );
    }
}

/// One pass: from the checkpoint to the end of the source's feed (one-shot), or until
/// cancelled (continuous).
fn pass(
    source: &mut dyn Endpoint,
    target: &mut dyn Endpoint,
    opts: &RepOptions,
    rep_id: &str,
    control: &RepControl,
    report: &mut dyn FnMut(&Progress),
) -> Result<()> {
    source.prepare(false)?;
    target.prepare(opts.create_target)?;
    let mut since = match opts.since {
        // `since` applies until the first checkpoint of this run.
        Some(s) if control.progress().last_seq <= s => s,
        _ => {
            let a = checkpoint_seq(source.get_local(rep_id)?);
            let b = checkpoint_seq(target.get_local(rep_id)?);
            match (a, b) {
                (Some(a), Some(b)) => a.min(b),
                _ => 0,
            }
        }
    };
    report(&control.update(|p| {
        p.state = RepState::Running;
        p.last_seq = since;
    }));
    let batch = opts.batch_size.max(1);
    // A continuous replication following writes checkpoints at most every
    // CONTINUOUS_CHECKPOINT_EVERY (the first batch of a pass always), and when it catches up or
    // is cancelled: a checkpoint is two more writes a batch, one of them maybe remote. A
    // restart repeats at most that much, which `revs_diff` then finds already there.
    let mut checkpointed: Option<Instant> = None;
    // Whether batches went to the target since the last checkpoint (they end at `since`).
    let mut unsaved = false;
    loop {
        if control.is_cancelled() {
            // Best effort: without it, a restart repeats at most a second of work.
            if unsaved && checkpoint(source, target, rep_id, since).is_ok() {
                control.update(|p| p.last_seq = since);
            }
            return Ok(());
        }
        let (changed, last) = source.changes(since, batch, &opts.filter)?;
        if changed.is_empty() {
            if last > since || unsaved {
                checkpoint(source, target, rep_id, last.max(since))?;
                unsaved = false;
                since = last.max(since);
                report(&control.update(|p| p.last_seq = since));
            }
            if !opts.continuous {
                return Ok(());
            }
            report(&control.update(|p| p.state = RepState::Idle));
            // Short waits, so a cancel is seen within half a second.
            source.wait_changes(since, Duration::from_millis(500))?;
            if !control.is_cancelled() {
                report(&control.update(|p| p.state = RepState::Running));
            }
            continue;
        }
        let read = changed.len() as u64;
        let asked: Vec<(String, Vec<_>)> = changed.into_iter().map(|c| (c.id, c.revs)).collect();
        let missing = target.revs_diff(&asked)?;
        let wanted: usize = missing.iter().map(|(_, d)| d.missing.len()).sum();
        let sent = transfer(source, target, &missing)?;
        let save_now = !opts.continuous
            || checkpointed.is_none_or(|t| t.elapsed() >= CONTINUOUS_CHECKPOINT_EVERY);
        if save_now {
            checkpoint(source, target, rep_id, last)?;
            checkpointed = Some(Instant::now());
        }
        unsaved = !save_now;
        since = last;
        report(&control.update(|p| {
            p.docs_read += read;
            p.docs_written += sent.revisions;
            p.missing_checked += wanted as u64;
            p.attachments_copied += sent.contents;
            p.attachment_bytes += sent.bytes;
            if save_now {
                p.last_seq = last;
            }
        }));
    }
}

/// How often a continuous replication that keeps finding changes checkpoints.
pub const CONTINUOUS_CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

fn checkpoint(
    source: &mut dyn Endpoint,
    target: &mut dyn Endpoint,
    rep_id: &str,
    seq: u64,
) -> Result<()> {
    let doc = json!({"last_seq": seq, "replicator": "barrel"});
    // The target first: a checkpoint on the source alone would skip what the target lacks.
    target.put_local(rep_id, doc.clone())?;
    source
        .put_local(rep_id, doc)
        .map_err(|e| Error::Storage(format!("checkpoint on the source: {e}")))
}

/// Copies every leaf revision of document `id` (with its history) from `source` to `target`:
/// the peer-to-peer write of one document.
pub fn push_doc(
    source: &mut dyn Endpoint,
    target: &mut dyn Endpoint,
    id: &str,
    revs: &[crate::revtree::Rev],
) -> Result<usize> {
    let asked = vec![(id.to_string(), revs.to_vec())];
    let missing = target.revs_diff(&asked)?;
    Ok(transfer(source, target, &missing)?.revisions as usize)
}

/// What a [`transfer`] sent to the target.
#[derive(Debug, Default)]
struct Sent {
    revisions: u64,
    contents: u64,
    bytes: u64,
}

/// Across a network, a revision whose new attachment contents total more than this many bytes
/// has them streamed apart, never whole in memory; smaller ones go inline in the document
/// batches, sparing a request each.
pub const STREAM_THRESHOLD: u64 = 1 << 20;

/// About the most content bytes fetched inline at once: documents with small new contents are
/// fetched and saved in groups of this much.
const INLINE_GROUP_BYTES: u64 = 16 << 20;

/// Copies the revisions the target misses from `source` to `target`, with their attachments.
fn transfer(
    source: &mut dyn Endpoint,
    target: &mut dyn Endpoint,
    missing: &[(String, RevsDiff)],
) -> Result<Sent> {
    // Between two local barrels, only what `copy_stored` leaves goes the other ways.
    let copied = match (source.local(), target.local()) {
        (Some(from), Some(to)) => Some(copy_stored(from, to, missing)?),
        _ => None,
    };
    let (missing, revisions) = match &copied {
        Some((rest, n)) => (rest.as_slice(), *n),
        None => (missing, 0),
    };
    let mut sent = Sent {
        revisions,
        ..Sent::default()
    };
    if missing.is_empty() {
        return Ok(sent);
    }
    let apart = source.reads_contents() && (target.stores_contents() || target.saves_streamed());
    let (revisions, refused) = if apart {
        send_apart(source, target, missing, &mut sent)?
    } else {
        send_inline(
            source,
            target,
            missing,
            AttachmentData::SinceAncestors,
            &mut sent,
        )?
    };
    sent.revisions += revisions;
    if refused.is_empty() {
        return Ok(sent);
    }
    // The target lacked a content it was expected to have (the possible ancestor changed
    // meanwhile, or the revision that was to bring a shared content was already there): send
    // those documents again with every content.
    let ids: HashSet<&str> = refused.iter().map(|r| r.id.as_str()).collect();
    let again: Vec<(String, RevsDiff)> = missing
        .iter()
        .filter(|(id, _)| ids.contains(id.as_str()))
        .map(|(id, d)| {
            let diff = RevsDiff {
                missing: d.missing.clone(),
                possible_ancestors: Vec::new(),
            };
            (id.clone(), diff)
        })
        .collect();
    // Those revisions were counted the first time.
    let (_, refused) = if apart {
        send_apart(source, target, &again, &mut sent)?
    } else {
        send_inline(source, target, &again, AttachmentData::All, &mut sent)?
    };
    match refused.into_iter().next() {
        None => Ok(sent),
        Some(MissingStub { id, reason }) => Err(Error::MissingStub(format!(
            "{reason} (document {id}, sent again with every content)"
        ))),
    }
}

/// Between two barrels of this node: copies the revisions `wanted` that have no attachments
/// as the source stores them (body JSON and history, see [`DocInput::from_stored`]), in one
/// write to the target, and returns the documents left for the other ways (those with a
/// revision that has attachments) and how many revisions went.
fn copy_stored(
    source: &Barrel,
    target: &Barrel,
    wanted: &[(String, RevsDiff)],
) -> Result<(Vec<(String, RevsDiff)>, u64)> {
    let mut inputs = Vec::new();
    let mut rest = Vec::new();
    let asked: Vec<(&str, &[Rev])> = wanted
        .iter()
        .map(|(id, diff)| (id.as_str(), diff.missing.as_slice()))
        .collect();
    let found = source.stored_revs_latest_many(&asked)?;
    for ((id, diff), revs) in wanted.iter().zip(found) {
        let revs = match revs {
            Ok(revs) => revs,
            Err(Error::NotFound) => continue,
            Err(e) => return Err(e),
        };
        let docs: Option<Vec<DocInput>> = revs
            .into_iter()
            .map(|r| DocInput::from_stored(id, r.rev, r.deleted, r.history, r.body))
            .collect::<std::result::Result<_, _>>()?;
        match docs {
            Some(docs) => inputs.extend(docs),
            None => rest.push((id.clone(), diff.clone())),
        }
    }
    let copied = inputs.len() as u64;
    if !inputs.is_empty() {
        let inputs = inputs.into_iter().map(Ok).collect();
        for r in target.save_docs(inputs, &SaveOptions { new_edits: false })? {
            r?;
        }
    }
    Ok((rest, copied))
}

/// Sends the revisions `wanted` with their attachments inline (`atts` as
/// [`Endpoint::fetch`] takes it). Returns how many revisions went, and the refused documents.
fn send_inline(
    source: &mut dyn Endpoint,
    target: &mut dyn Endpoint,
    wanted: &[(String, RevsDiff)],
    atts: AttachmentData,
    sent: &mut Sent,
) -> Result<(u64, Vec<MissingStub>)> {
    let docs = source.fetch(wanted, atts)?;
    let revisions = docs.len() as u64;
    if docs.is_empty() {
        return Ok((0, Vec::new()));
    }
    for data in inline_data(&docs) {
        sent.contents += 1;
        sent.bytes += base64_len(data);
    }
    Ok((revisions, target.save(docs)?))
}

/// Sends the revisions `wanted` with their contents apart from the documents where it pays:
/// the documents are fetched with stubs, then each goes as
/// - stubs only, when it has no new content (an edit keeping its attachments);
/// - inline, when its new contents total at most [`STREAM_THRESHOLD`] and the two sides are
///   not both local, or one of them is stored encoded at the source ([`is_encoded`]) (a second
///   fetch, in groups of about [`INLINE_GROUP_BYTES`]);
/// - with its contents streamed: to a target that stores contents, ahead of the documents,
///   each content it lacks once; to one that saves streamed, in the same write as the document,
///   its new contents.
///
/// Returns how many revisions went, and the refused documents.
fn send_apart(
    source: &mut dyn Endpoint,
    target: &mut dyn Endpoint,
    wanted: &[(String, RevsDiff)],
    sent: &mut Sent,
) -> Result<(u64, Vec<MissingStub>)> {
    let docs = source.fetch(wanted, AttachmentData::Stubs)?;
    let revisions = docs.len() as u64;
    // Between two barrels of this node no content is worth encoding.
    let inline_limit =
        (!(source.stores_contents() && target.stores_contents())).then_some(STREAM_THRESHOLD);
    let ancestors: HashMap<&str, &[Rev]> = wanted
        .iter()
        .map(|(id, d)| (id.as_str(), d.possible_ancestors.as_slice()))
        .collect();
    let mut stubs_only = Vec::new();
    let mut streamed = Vec::new();
    let mut inline = InlineGroups::default();
    for doc in docs {
        let known = ancestors
            .get(couch_id(&doc).as_str())
            .copied()
            .unwrap_or_default();
        let since = doc
            .as_object()
            .and_then(|body| since_generation(body, known));
        let new = contents_after(&doc, since);
        let bytes: u64 = new.iter().map(|c| c.meta.length).sum();
        let small = !new.is_empty() && inline_limit.is_some_and(|l| bytes <= l);
        let rev = doc
            .get("_rev")
            .and_then(Value::as_str)
            .and_then(|r| Rev::parse(r).ok());
        match rev {
            Some(rev) if small || encoded_after(&doc, since) => {
                inline.add(couch_id(&doc), rev, known, bytes)
            }
            _ if new.is_empty() => stubs_only.push(doc),
            _ => streamed.push((doc, new)),
        }
    }
    let mut refused = Vec::new();
    if target.stores_contents() {
        let mut docs = stubs_only;
        docs.extend(streamed.into_iter().map(|(d, _)| d));
        copy_contents(source, target, &docs, sent)?;
        if !docs.is_empty() {
            refused.extend(target.save(docs)?);
        }
    } else {
        if !stubs_only.is_empty() {
            refused.extend(target.save(stubs_only)?);
        }
        for (doc, follows) in streamed {
            refused.extend(target.save_streamed(doc, &follows, source)?);
            sent.contents += follows.len() as u64;
            sent.bytes += follows.iter().map(|c| c.meta.length).sum::<u64>();
        }
    }
    for group in inline.groups {
        let docs = source.fetch(&group, AttachmentData::SinceAncestors)?;
        for data in inline_data(&docs) {
            sent.contents += 1;
            sent.bytes += base64_len(data);
        }
        if !docs.is_empty() {
            refused.extend(target.save(docs)?);
        }
    }
    Ok((revisions, refused))
}

/// The contents of a revision (with stubs) changed after generation `since` (all of them
/// when `None`): those the target lacks, unless it has them from another document.
fn contents_after(doc: &Value, since: Option<u64>) -> Vec<ContentRef> {
    ContentRef::all_of(doc)
        .into_iter()
        .filter(|c| c.meta.sends_content(since))
        .collect()
}

/// `true` when an attachment of a revision changed after generation `since` is stored encoded
/// at the source ([`is_encoded`]).
fn encoded_after(doc: &Value, since: Option<u64>) -> bool {
    doc.get(ATTACHMENTS)
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .any(|(_, a)| {
            let revpos = a.get("revpos").and_then(Value::as_u64).unwrap_or(0);
            is_encoded(a) && since.is_none_or(|s| revpos > s)
        })
}

/// The revisions to fetch again with their new contents inline, in groups of about
/// [`INLINE_GROUP_BYTES`] of content.
#[derive(Default)]
struct InlineGroups {
    groups: Vec<Vec<(String, RevsDiff)>>,
    bytes: u64,
}

impl InlineGroups {
    /// Adds revision `rev` of document `id`, whose new contents weigh `bytes`.
    fn add(&mut self, id: String, rev: Rev, known: &[Rev], bytes: u64) {
        if self.groups.is_empty() || self.bytes + bytes > INLINE_GROUP_BYTES {
            self.groups.push(Vec::new());
            self.bytes = 0;
        }
        self.bytes += bytes;
        let diff = RevsDiff {
            missing: vec![rev],
            possible_ancestors: known.to_vec(),
        };
        if let Some(g) = self.groups.last_mut() {
            g.push((id, diff));
        }
    }
}

/// Copies to a target that stores contents the ones `docs` refer to that it lacks, each once
/// however many documents refer to it, chunk by chunk.
fn copy_contents(
    source: &mut dyn Endpoint,
    target: &mut dyn Endpoint,
    docs: &[Value],
    sent: &mut Sent,
) -> Result<()> {
    let mut seen = HashSet::new();
    let contents: Vec<ContentRef> = docs
        .iter()
        .flat_map(ContentRef::all_of)
        .filter(|c| c.meta.digest.is_some_and(|d| seen.insert(d)))
        .collect();
    if contents.is_empty() {
        return Ok(());
    }
    let digests: Vec<_> = contents.iter().filter_map(|c| c.meta.digest).collect();
    let lacking = target.missing_contents(&digests)?;
    for c in contents
        .iter()
        .filter(|c| c.meta.digest.is_some_and(|d| lacking.contains(&d)))
    {
        let chunks = source.read_content(c)?;
        sent.bytes += target.write_content(&c.meta, chunks)?;
        sent.contents += 1;
    }
    Ok(())
}

/// The inline (base64) `data` of every attachment in these documents.
fn inline_data(docs: &[Value]) -> impl Iterator<Item = &str> {
    docs.iter()
        .filter_map(|d| d.get(ATTACHMENTS)?.as_object())
        .flat_map(|atts| atts.values())
        .filter_map(|a| a.get("data")?.as_str())
}

/// The length of what base64 text `s` decodes to.
fn base64_len(s: &str) -> u64 {
    let padding = s.bytes().rev().take_while(|&b| b == b'=').count();
    (s.len() / 4 * 3).saturating_sub(padding) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A revision 3 as CouchDB sends it with stubs: `old` from revision 1, `new` from 3, and
    /// `text`, gzipped at the source, from 2.
    fn couch_doc() -> Value {
        let digest = |s: &[u8]| {
            use md5::{Digest, Md5};
            crate::attachment::digest_string(&Md5::digest(s).into())
        };
        json!({"_id": "d", "_rev": "3-c", "_revisions": {"start": 3, "ids": ["c", "b", "a"]},
               "_attachments": {
                   "old": {"stub": true, "digest": digest(b"old"), "length": 3, "revpos": 1},
                   "text": {"stub": true, "digest": digest(b"gz"), "length": 9, "revpos": 2,
                            "encoding": "gzip", "encoded_length": 2},
                   "new": {"stub": true, "digest": digest(b"new!"), "length": 4, "revpos": 3},
                   "link": {"url": "https://example.com/x", "revpos": 3}}})
    }

    fn names(refs: &[ContentRef]) -> Vec<&str> {
        refs.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn new_contents_are_those_after_the_known_ancestor() {
        let doc = couch_doc();
        let since =
            |known: &str| since_generation(doc.as_object().unwrap(), &[Rev::parse(known).unwrap()]);
        assert_eq!(names(&contents_after(&doc, None)), ["new", "old"]);
        assert_eq!(names(&contents_after(&doc, since("1-a"))), ["new"]);
        assert_eq!(names(&contents_after(&doc, since("2-b"))), ["new"]);
        let new = &contents_after(&doc, None)[0];
        assert_eq!(
            (new.id.as_str(), new.rev.to_string(), new.meta.length),
            ("d", "3-c".into(), 4)
        );
    }

    #[test]
    fn contents_encoded_at_the_source_travel_inline() {
        let doc = couch_doc();
        let since =
            |known: &str| since_generation(doc.as_object().unwrap(), &[Rev::parse(known).unwrap()]);
        assert!(encoded_after(&doc, None));
        assert!(encoded_after(&doc, since("1-a")));
        assert!(!encoded_after(&doc, since("2-b")));
    }
}
