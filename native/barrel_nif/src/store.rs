//! The node's store and the barrel catalog: `store_open/2`, `store_close/0`, `create_barrel/2`,
//! `open_barrel/1`, `close_barrel/1`, `delete_barrel/1`, `list_barrels/0`, `barrel_info/1`.
//!
//! One store per VM, held here; barrel handles are resources holding a weak reference to it, so
//! closing the store (application stop) releases RocksDB even while handles are still alive.

use crate::error;
use crate::guarded;
use barrel_core::{Barrel, BarrelConfig, Error, Store, StoreOptions};
use rustler::types::map::MapIterator;
use rustler::{Atom, Encoder, Env, Resource, ResourceArc, Term};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

mod atoms {
    rustler::atoms! {
        ok, revs_limit, sync, block_cache_bytes, tune_malloc, low_priority_compactions, name, docs_count, deleted_count, updated_seq,
        data_size, disk_size, idle, index_queue, flushes_running, compactions_running,
        flush_pending, compaction_pending, pending_compaction_bytes, memtable_bytes,
    }
}

static STORE: RwLock<Option<Arc<Store>>> = RwLock::new(None);

/// The open store, or `Closed`.
pub(crate) fn current_store() -> Result<Arc<Store>, Error> {
    STORE
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .ok_or(Error::Closed)
}

/// A barrel handle as the BEAM sees it.
pub(crate) struct BarrelRef {
    barrel: Barrel,
    closed: AtomicBool,
}

#[rustler::resource_impl]
impl Resource for BarrelRef {}

impl BarrelRef {
    /// The barrel, unless this handle was closed.
    pub(crate) fn barrel(&self) -> Result<&Barrel, Error> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(&self.barrel)
        }
    }
}

fn ok_or_error<'a>(env: Env<'a>, r: Result<(), Error>) -> Term<'a> {
    match r {
        Ok(()) => atoms::ok().encode(env),
        Err(e) => error::encode(env, &e),
    }
}

fn bad_param(what: &str) -> Error {
    Error::BadParam(what.to_string())
}

/// The value of boolean option `name`, or `{bad_param, <<"NAME must be a boolean">>}`.
fn bool_param(v: Term, name: &str) -> Result<bool, Error> {
    v.decode::<bool>()
        .map_err(|_| bad_param(&format!("{name} must be a boolean")))
}

/// Opens the node's store in `dir`. Options: `block_cache_bytes`, `tune_malloc`,
/// `low_priority_compactions`.
#[rustler::nif(schedule = "DirtyIo")]
fn store_open<'a>(env: Env<'a>, dir: String, opts: Term<'a>) -> Term<'a> {
    guarded(env, || {
        let run = || -> Result<(), Error> {
            let mut options = StoreOptions::default();
            for (k, v) in
                MapIterator::new(opts).ok_or_else(|| bad_param("options must be a map"))?
            {
                let key = k.decode::<Atom>().ok();
                if key == Some(atoms::block_cache_bytes()) {
                    options.block_cache_bytes = v
                        .decode::<usize>()
                        .map_err(|_| bad_param("block_cache_bytes must be an integer"))?;
                } else if key == Some(atoms::tune_malloc()) {
                    options.tune_malloc = bool_param(v, "tune_malloc")?;
                } else if key == Some(atoms::low_priority_compactions()) {
                    options.low_priority_compactions = bool_param(v, "low_priority_compactions")?;
                }
            }
            let mut slot = STORE.write().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = slot.as_ref() {
                return if s.path() == std::path::Path::new(&dir) {
                    Ok(())
                } else {
                    Err(Error::BadParam(format!(
                        "a store is already open at {}",
                        s.path().display()
                    )))
                };
            }
            *slot = Some(Store::open(&dir, &options)?);
            Ok(())
        };
        ok_or_error(env, run())
    })
}

/// Closes the store, waiting (up to 10 s) for calls in flight to finish.
#[rustler::nif(schedule = "DirtyIo")]
fn store_close(env: Env) -> Term {
    guarded(env, || {
        let taken = STORE.write().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(store) = taken {
            store.close();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Arc::strong_count(&store) > 1 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            // The store closes either way: what is not flushed stays in the logs.
            if let Err(e) = store.flush_for_close() {
                eprintln!("barrel: flushing the store as it closes: {e}");
            }
            drop(store);
        }
        atoms::ok().encode(env)
    })
}

fn decode_config(params: Term) -> Result<BarrelConfig, Error> {
    let mut config = BarrelConfig::default();
    for (k, v) in MapIterator::new(params).ok_or_else(|| bad_param("params must be a map"))? {
        match k.decode::<Atom>() {
            Ok(a) if a == atoms::revs_limit() => {
                config.revs_limit = v
                    .decode::<usize>()
                    .map_err(|_| bad_param("revs_limit must be a positive integer"))?;
            }
            Ok(a) if a == atoms::sync() => {
                config.sync = v
                    .decode::<bool>()
                    .map_err(|_| bad_param("sync must be a boolean"))?;
            }
            // Other parameters (e.g. the talk's store_provider) are accepted and ignored.
            _ => {}
        }
    }
    Ok(config)
}

#[rustler::nif(schedule = "DirtyIo")]
fn create_barrel<'a>(env: Env<'a>, name: String, params: Term<'a>) -> Term<'a> {
    guarded(env, || {
        let run = || -> Result<(), Error> {
            let config = decode_config(params)?;
            current_store()?.create_barrel(&name, config)
        };
        ok_or_error(env, run())
    })
}

#[rustler::nif]
fn open_barrel(env: Env, name: String) -> Term {
    guarded(env, || {
        match current_store().and_then(|s| s.open_barrel(&name)) {
            Ok(barrel) => {
                let r = ResourceArc::new(BarrelRef {
                    barrel,
                    closed: AtomicBool::new(false),
                });
                (atoms::ok(), r).encode(env)
            }
            Err(e) => error::encode(env, &e),
        }
    })
}

#[rustler::nif]
fn close_barrel(env: Env, barrel: ResourceArc<BarrelRef>) -> Term {
    barrel.closed.store(true, Ordering::Release);
    atoms::ok().encode(env)
}

#[rustler::nif(schedule = "DirtyIo")]
fn delete_barrel(env: Env, name: String) -> Term {
    guarded(env, || {
        ok_or_error(env, current_store().and_then(|s| s.delete_barrel(&name)))
    })
}

/// `ok`: compacts the whole store (blocking; see `Store::compact`).
#[rustler::nif(schedule = "DirtyIo")]
fn store_compact(env: Env) -> Term {
    guarded(env, || {
        ok_or_error(env, current_store().and_then(|s| s.compact()))
    })
}

/// `{ok, Map}` of atom keys, or an internal error naming `what` (the keys are distinct
/// atoms, so building the map cannot fail).
fn ok_map<'a>(env: Env<'a>, fields: &[(Atom, Term<'a>)], what: &str) -> Term<'a> {
    let keys: Vec<Term> = fields.iter().map(|(k, _)| k.encode(env)).collect();
    let values: Vec<Term> = fields.iter().map(|(_, v)| *v).collect();
    match Term::map_from_term_arrays(env, &keys, &values) {
        Ok(m) => (atoms::ok(), m).encode(env),
        Err(_) => error::encode(env, &Error::Internal(format!("{what} map"))),
    }
}

/// `{ok, Info}`: the store's background work now (see `Store::background`).
#[rustler::nif(schedule = "DirtyIo")]
fn store_info(env: Env) -> Term {
    guarded(env, || match current_store() {
        Ok(s) => {
            let bg = s.background();
            let fields: [(Atom, Term); 8] = [
                (atoms::idle(), bg.is_idle().encode(env)),
                (atoms::index_queue(), bg.index_queue.encode(env)),
                (atoms::flushes_running(), bg.flushes_running.encode(env)),
                (
                    atoms::compactions_running(),
                    bg.compactions_running.encode(env),
                ),
                (atoms::flush_pending(), bg.flush_pending.encode(env)),
                (
                    atoms::compaction_pending(),
                    bg.compaction_pending.encode(env),
                ),
                (
                    atoms::pending_compaction_bytes(),
                    bg.pending_compaction_bytes.encode(env),
                ),
                (atoms::memtable_bytes(), bg.memtable_bytes.encode(env)),
            ];
            ok_map(env, &fields, "store info")
        }
        Err(e) => error::encode(env, &e),
    })
}

#[rustler::nif]
fn list_barrels(env: Env) -> Term {
    guarded(env, || match current_store() {
        Ok(s) => (atoms::ok(), s.list_barrels()).encode(env),
        Err(e) => error::encode(env, &e),
    })
}

/// `barrel_info(Name | Barrel)`; raises `badarg` for anything else.
#[rustler::nif(schedule = "DirtyIo")]
fn barrel_info<'a>(env: Env<'a>, which: Term<'a>) -> rustler::NifResult<Term<'a>> {
    let handle = which.decode::<ResourceArc<BarrelRef>>().ok();
    let name = which.decode::<String>().ok();
    if handle.is_none() && name.is_none() {
        return Err(rustler::Error::BadArg);
    }
    Ok(guarded(env, || {
        let info = match (&handle, &name) {
            (Some(r), _) => r.barrel().and_then(|b| b.info()),
            (None, Some(name)) => current_store().and_then(|s| s.barrel_info(name)),
            (None, None) => Err(Error::Internal("unreachable".into())),
        };
        match info {
            Ok(i) => {
                let fields: [(Atom, Term); 8] = [
                    (atoms::name(), i.name.as_str().encode(env)),
                    (atoms::docs_count(), i.stats.docs_count.encode(env)),
                    (atoms::deleted_count(), i.stats.deleted_count.encode(env)),
                    (atoms::updated_seq(), i.stats.updated_seq.encode(env)),
                    (atoms::data_size(), i.stats.data_size.encode(env)),
                    (atoms::disk_size(), i.disk_size.encode(env)),
                    (atoms::revs_limit(), i.config.revs_limit.encode(env)),
                    (atoms::sync(), i.config.sync.encode(env)),
                ];
                ok_map(env, &fields, "info")
            }
            Err(e) => error::encode(env, &e),
        }
    }))
}
