//! Replication NIFs: `replication_start/5` runs a replication on its own thread and sends its
//! progress to a process; `replication_progress/1`, `replication_cancel/1`; and the
//! peer-to-peer calls `p2p_push/4` and `p2p_fetch/4`. The processes and options live in
//! `barrel_replicator.erl` and `barrel.erl`.

use crate::convert::{pairs_map, value_to_term};
use crate::error;
use crate::guarded;
use crate::store::{current_store, BarrelRef};
use barrel_core::replicate::endpoint::{Endpoint, HttpEndpoint, LocalEndpoint, WsEndpoint};
use barrel_core::replicate::run::{push_doc, run, Progress, RepControl, RepOptions, RepState};
use barrel_core::{BarrelConfig, Error, Pattern};
use parking_lot::Mutex;
use rustler::{Atom, Encoder, Env, LocalPid, OwnedEnv, Resource, ResourceArc, Term};
use std::sync::Arc;
use std::thread::JoinHandle;

mod atoms {
    rustler::atoms! {
        ok, error, local, http, ws, barrel_rep, state, docs_read, docs_written, missing_checked,
        attachments_copied, attachment_bytes,
        last_seq, last_error, errors, running, idle, retrying, completed, cancelled, failed,
        undefined, not_found, bad_pattern,
    }
}

/// A running replication; cancelled when the BEAM collects the handle.
pub(crate) struct RepRef {
    control: Arc<RepControl>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[rustler::resource_impl]
impl Resource for RepRef {}

impl Drop for RepRef {
    fn drop(&mut self) {
        self.control.cancel();
    }
}

/// `{local, Name} | {http, Url} | {ws, Url}` (checked in Erlang), with `Auth` for remote ones.
/// With `check`, a remote side must answer now (one-shot replications fail at once); a
/// continuous replication checks before each pass instead, retrying while the remote is down.
fn endpoint(
    spec: Term,
    auth: &Option<String>,
    ca: &Option<Vec<u8>>,
    create: bool,
    check: bool,
) -> Result<Box<dyn Endpoint>, Error> {
    let (kind, name): (Atom, String) = spec
        .decode()
        .map_err(|_| Error::BadParam(format!("bad endpoint {spec:?}")))?;
    if kind == atoms::local() {
        let store = current_store()?;
        let barrel = match store.open_barrel(&name) {
            Err(Error::NotFound) if create => {
                match store.create_barrel(&name, BarrelConfig::default()) {
                    Ok(()) | Err(Error::AlreadyExists) => {}
                    Err(e) => return Err(e),
                }
                store.open_barrel(&name)?
            }
            other => other?,
        };
        Ok(Box::new(LocalEndpoint::new(barrel)))
    } else if kind == atoms::http() {
        let mut e = HttpEndpoint::new(&name, auth.clone());
        if let Some(pem) = ca {
            e = e.with_ca(pem)?;
        }
        if check {
            e.prepare(create)?;
        }
        Ok(Box::new(e))
    } else if kind == atoms::ws() {
        let mut e = WsEndpoint::new(&name, auth.clone());
        if let Some(pem) = ca {
            e = e.with_ca(pem)?;
        }
        if check {
            e.prepare(create)?;
        }
        Ok(Box::new(e))
    } else {
        Err(Error::BadParam(format!("bad endpoint kind {kind:?}")))
    }
}

fn state_atom(s: &RepState) -> Atom {
    match s {
        RepState::Running => atoms::running(),
        RepState::Idle => atoms::idle(),
        RepState::Retrying => atoms::retrying(),
        RepState::Completed => atoms::completed(),
        RepState::Cancelled => atoms::cancelled(),
        RepState::Failed => atoms::failed(),
    }
}

fn progress_term<'a>(env: Env<'a>, p: &Progress) -> Term<'a> {
    let last_error = match &p.last_error {
        Some(e) => e.as_str().encode(env),
        None => atoms::undefined().encode(env),
    };
    let pairs = [
        (atoms::state(), state_atom(&p.state).encode(env)),
        (atoms::docs_read(), p.docs_read.encode(env)),
        (atoms::docs_written(), p.docs_written.encode(env)),
        (atoms::missing_checked(), p.missing_checked.encode(env)),
        (
            atoms::attachments_copied(),
            p.attachments_copied.encode(env),
        ),
        (atoms::attachment_bytes(), p.attachment_bytes.encode(env)),
        (atoms::last_seq(), p.last_seq.encode(env)),
        (atoms::last_error(), last_error),
        (atoms::errors(), p.errors.encode(env)),
    ];
    pairs_map(env, pairs.map(|(k, v)| (k.encode(env), v)))
}

/// `{ok, Rep} | {error, Reason}`. `Opts` is `{Continuous, BatchSize, Since, Filter, Auth,
/// CreateTarget, TlsCa}` (`Since` an integer or `undefined`, `Auth` an `Authorization` header
/// value or `undefined`, `TlsCa` a PEM file of the CA to trust for https/wss, or `undefined`). Progress goes to `Pid` as `{barrel_rep, Tag, Progress}`.
#[rustler::nif(schedule = "DirtyIo")]
#[allow(clippy::type_complexity)]
fn replication_start<'a>(
    env: Env<'a>,
    source: Term<'a>,
    target: Term<'a>,
    opts: (bool, usize, Term<'a>, Vec<String>, Term<'a>, bool, Term<'a>),
    pid: LocalPid,
    tag: u64,
) -> Term<'a> {
    guarded(env, || {
        let (continuous, batch_size, since, filter, auth, create, ca_file) = opts;
        if let Some(bad) = filter.iter().find(|p| Pattern::parse(p).is_err()) {
            return (atoms::error(), (atoms::bad_pattern(), bad.as_str())).encode(env);
        }
        let run_it = || -> Result<ResourceArc<RepRef>, Error> {
            let auth: Option<String> = auth.decode().ok();
            let ca = match ca_file.decode::<String>() {
                Ok(path) => Some(std::fs::read(&path).map_err(|e| {
                    Error::BadParam(format!("cannot read the CA file {path}: {e}"))
                })?),
                Err(_) => None,
            };
            let since: Option<u64> = since.decode().ok();
            let filter = filter
                .iter()
                .map(|p| Pattern::parse(p).map_err(Error::BadParam))
                .collect::<Result<Vec<_>, _>>()?;
            let mut src = endpoint(source, &auth, &ca, false, !continuous)?;
            let mut tgt = endpoint(target, &auth, &ca, create, !continuous)?;
            let opts = RepOptions {
                continuous,
                filter,
                since,
                batch_size: batch_size.max(1),
                create_target: create,
            };
            let control = Arc::new(RepControl::default());
            let c2 = control.clone();
            let thread = std::thread::Builder::new()
                .name("barrel-replication".into())
                .spawn(move || {
                    let mut report = |p: &Progress| {
                        let mut owned = OwnedEnv::new();
                        let _ = owned.send_and_clear(&pid, |env| {
                            (atoms::barrel_rep(), tag, progress_term(env, p))
                        });
                    };
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run(src.as_mut(), tgt.as_mut(), &opts, &c2, &mut report)
                    }));
                    if let Err(p) = r {
                        let msg = barrel_core::panic_message(&p);
                        let mut prog = c2.progress();
                        prog.state = RepState::Failed;
                        prog.last_error = Some(msg);
                        report(&prog);
                    }
                })
                .map_err(|e| Error::Internal(format!("cannot start a replication thread: {e}")))?;
            Ok(ResourceArc::new(RepRef {
                control,
                thread: Mutex::new(Some(thread)),
            }))
        };
        match run_it() {
            Ok(r) => (atoms::ok(), r).encode(env),
            Err(e) => error::encode(env, &e),
        }
    })
}

/// The replication's progress map.
#[rustler::nif]
fn replication_progress(env: Env, rep: ResourceArc<RepRef>) -> Term {
    progress_term(env, &rep.control.progress())
}

/// `ok`: stops the replication and waits for its thread (it stops between batches).
#[rustler::nif(schedule = "DirtyIo")]
fn replication_cancel(rep: ResourceArc<RepRef>) -> Atom {
    rep.control.cancel();
    if let Some(t) = rep.thread.lock().take() {
        let _ = t.join();
    }
    atoms::ok()
}

/// Pushes every leaf of document `Id` of `Barrel` to each remote barrel URL (peer-to-peer
/// write): `[ok | {error, Reason}]`, one per URL, in order.
#[rustler::nif(schedule = "DirtyIo")]
fn p2p_push<'a>(
    env: Env<'a>,
    barrel: ResourceArc<BarrelRef>,
    id: String,
    urls: Vec<String>,
    auth: Term<'a>,
) -> Term<'a> {
    guarded(env, || {
        let auth: Option<String> = auth.decode().ok();
        let b = match barrel.barrel() {
            Ok(b) => b.clone(),
            Err(e) => return error::encode(env, &e),
        };
        let revs = match b.leaf_revs(&id) {
            Ok(revs) => revs,
            Err(e) => return error::encode(env, &e),
        };
        let results: Vec<Term> = urls
            .iter()
            .map(|url| {
                let mut src = LocalEndpoint::new(b.clone());
                let mut target = HttpEndpoint::new(url, auth.clone());
                let r = target
                    .prepare(true)
                    .and_then(|_| push_doc(&mut src, &mut target, &id, &revs));
                match r {
                    Ok(_) => atoms::ok().encode(env),
                    Err(e) => error::encode(env, &e),
                }
            })
            .collect();
        results.encode(env)
    })
}

/// Reads document `Id` from the remote barrel at `Url` (peer-to-peer read): `{ok, Doc}` with
/// `_revisions` (so it can be stored as a replicated revision) or `{error, Reason}`.
#[rustler::nif(schedule = "DirtyIo")]
fn p2p_fetch<'a>(env: Env<'a>, url: String, id: String, auth: Term<'a>, null: Atom) -> Term<'a> {
    guarded(env, || {
        let auth: Option<String> = auth.decode().ok();
        let mut remote = HttpEndpoint::new(&url, auth);
        match remote.fetch_doc(&id) {
            Ok(Some(doc)) => (atoms::ok(), value_to_term(env, &doc, null)).encode(env),
            Ok(None) => (atoms::error(), atoms::not_found()).encode(env),
            Err(e) => error::encode(env, &e),
        }
    })
}
