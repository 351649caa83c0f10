//! Changes NIFs: the feed (`changes_open/6`, `changes_next/3`) and live subscriptions
//! (`subscribe/8`, `subscription_ack/2`, `subscription_resume/1`, `subscription_cancel/1`).
//! Listener logic (replay, catch-up, delivery to users) lives in `barrel_listener.erl`.
//!
//! A subscription sends its process `{barrel_live, Tag, [Change]}` for matching changes, and
//! `{barrel_behind, Tag}` once when it stopped delivering (its window was full, changes were
//! dropped, or the barrel was deleted) until `subscription_resume/1`.

use crate::convert::{json_to_term, pairs_map};
use crate::error;
use crate::guarded;
use crate::store::BarrelRef;
use barrel_core::doc::{DELETED, ID, REV};
use barrel_core::{
    Change, ChangeSink, ChangesCursor, ChangesOptions, Pattern, SubscribeOptions, Subscription,
};
use parking_lot::Mutex;
use rustler::{Atom, Encoder, Env, LocalPid, OwnedEnv, Resource, ResourceArc, Term};
use std::sync::Arc;

mod atoms {
    rustler::atoms! {
        ok, error, bad_pattern, barrel_live, barrel_behind,
    }
}

/// A feed read in progress.
pub(crate) struct ChangesRef {
    /// `None` once closed (a cursor holds the store open).
    cursor: Mutex<Option<ChangesCursor>>,
}

#[rustler::resource_impl]
impl Resource for ChangesRef {}

/// A live subscription; cancelled when the BEAM collects the handle.
pub(crate) struct SubRef {
    sub: Arc<Subscription>,
}

#[rustler::resource_impl]
impl Resource for SubRef {}

impl Drop for SubRef {
    fn drop(&mut self) {
        self.sub.cancel();
    }
}

/// Parses patterns; `Err` carries the refused term.
fn patterns<'a>(terms: Vec<Term<'a>>) -> Result<Vec<Pattern>, Term<'a>> {
    terms
        .into_iter()
        .map(|t| {
            t.decode::<String>()
                .ok()
                .and_then(|s| Pattern::parse(&s).ok())
                .ok_or(t)
        })
        .collect()
}

fn bad_pattern<'a>(env: Env<'a>, t: Term<'a>) -> Term<'a> {
    (atoms::error(), (atoms::bad_pattern(), t)).encode(env)
}

/// A change as a map: `id`, `rev`, `seq`, `changes`, and `deleted`, `doc` when they apply.
fn change_term<'a>(env: Env<'a>, c: &Change, null: Atom) -> Term<'a> {
    let changes: Vec<String> = c.changes.iter().map(|r| r.to_string()).collect();
    let (id, rev) = (c.id.as_str().encode(env), c.rev.to_string().encode(env));
    let mut members = vec![
        ("id", id),
        ("rev", rev),
        ("seq", c.seq.encode(env)),
        ("changes", changes.encode(env)),
    ];
    let deleted = true.encode(env);
    if c.deleted {
        members.push(("deleted", deleted));
    }
    if let Some(doc) = &c.doc {
        // The document's special members (`Change::doc_meta`), in key order, sharing the
        // change's terms.
        let meta = [(DELETED, deleted), (REV, rev), (ID, id)];
        let meta = if c.deleted { &meta[..] } else { &meta[1..] };
        // A stored body always parses; should it not, the change still goes out, without it.
        if let Ok(t) = json_to_term(env, doc, meta, null) {
            members.push(("doc", t));
        }
    }
    pairs_map(env, members.into_iter().map(|(k, v)| (k.encode(env), v)))
}

/// `{ok, Cursor, UpdateSeq} | {error, Reason}`.
#[rustler::nif(schedule = "DirtyIo")]
fn changes_open<'a>(
    env: Env<'a>,
    barrel: ResourceArc<BarrelRef>,
    since: u64,
    flags: (bool, bool, bool),
    filter: Vec<Term<'a>>,
) -> Term<'a> {
    guarded(env, || {
        let (include_docs, all_docs, descending) = flags;
        let filter = match patterns(filter) {
            Ok(p) => p,
            Err(t) => return bad_pattern(env, t),
        };
        let opts = ChangesOptions {
            include_docs,
            all_docs,
            descending,
            filter,
        };
        match barrel.barrel().and_then(|b| b.changes_cursor(since, opts)) {
            Ok(cursor) => {
                let seq = cursor.update_seq();
                let res = ResourceArc::new(ChangesRef {
                    cursor: Mutex::new(Some(cursor)),
                });
                (atoms::ok(), res, seq).encode(env)
            }
            Err(e) => error::encode(env, &e),
        }
    })
}

/// `{ok, Changes, Done}`: up to `N` changes; `Done` when the feed is exhausted.
#[rustler::nif(schedule = "DirtyIo")]
fn changes_next<'a>(
    env: Env<'a>,
    cursor: ResourceArc<ChangesRef>,
    n: usize,
    null: Atom,
) -> Term<'a> {
    guarded(env, || {
        let r = match cursor.cursor.lock().as_mut() {
            Some(c) => c.next_chunk(n),
            None => Err(barrel_core::Error::Closed),
        };
        match r {
            Ok(changes) => {
                let done = changes.len() < n;
                let terms: Vec<Term> = changes.iter().map(|c| change_term(env, c, null)).collect();
                (atoms::ok(), terms, done).encode(env)
            }
            Err(e) => error::encode(env, &e),
        }
    })
}

/// `ok`: releases the cursor's snapshot (and its hold on the store).
#[rustler::nif]
fn changes_close(cursor: ResourceArc<ChangesRef>) -> Atom {
    drop(cursor.cursor.lock().take());
    atoms::ok()
}

/// Sends a subscription's changes to its process, from the store's notifier thread.
struct PidSink {
    pid: LocalPid,
    tag: u64,
    null: Atom,
}

impl ChangeSink for PidSink {
    fn deliver(&self, changes: Vec<Change>) -> bool {
        let mut env = OwnedEnv::new();
        env.send_and_clear(&self.pid, |env| {
            let list: Vec<Term> = changes
                .iter()
                .map(|c| change_term(env, c, self.null))
                .collect();
            (atoms::barrel_live(), self.tag, list)
        })
        .is_ok()
    }

    fn fell_behind(&self) -> bool {
        let mut env = OwnedEnv::new();
        env.send_and_clear(&self.pid, |_| (atoms::barrel_behind(), self.tag))
            .is_ok()
    }
}

/// `{ok, Sub} | {error, Reason}`: subscribes `Pid` to the changes committed from now on.
/// `Flags` is `{IncludeDocs, AllDocs}`. Dirty: it waits for writes in progress to commit.
#[rustler::nif(schedule = "DirtyIo")]
fn subscribe<'a>(
    env: Env<'a>,
    barrel: ResourceArc<BarrelRef>,
    pats: Vec<Term<'a>>,
    flags: (bool, bool),
    window: usize,
    target: (LocalPid, u64),
    null: Atom,
) -> Term<'a> {
    guarded(env, || {
        let patterns = match patterns(pats) {
            Ok(p) => p,
            Err(t) => return bad_pattern(env, t),
        };
        let (include_docs, all_docs) = flags;
        let (pid, tag) = target;
        let opts = SubscribeOptions {
            patterns,
            include_docs,
            all_docs,
            window,
        };
        let sink = Box::new(PidSink { pid, tag, null });
        match barrel.barrel().and_then(|b| b.subscribe(opts, sink)) {
            Ok(sub) => (atoms::ok(), ResourceArc::new(SubRef { sub })).encode(env),
            Err(e) => error::encode(env, &e),
        }
    })
}

/// `ok`: `N` delivered changes were handled.
#[rustler::nif]
fn subscription_ack(sub: ResourceArc<SubRef>, n: usize) -> Atom {
    sub.sub.ack(n);
    atoms::ok()
}

/// `ok`: deliver again after `{barrel_behind, Tag}` (read the feed for what was missed).
#[rustler::nif]
fn subscription_resume(sub: ResourceArc<SubRef>) -> Atom {
    sub.sub.resume();
    atoms::ok()
}

/// `ok`: no more deliveries.
#[rustler::nif]
fn subscription_cancel(sub: ResourceArc<SubRef>) -> Atom {
    sub.sub.cancel();
    atoms::ok()
}
