//! The BEAM binding of `barrel_core`: term conversion, resources and dirty NIFs. No database
//! logic lives here; see `src/barrel_nif.erl` for the stubs and `src/barrel.erl` for the API.

mod attachments;
mod changes;
mod convert;
mod docs;
mod error;
mod http;
mod query;
mod replicate;
mod store;

use std::panic::{catch_unwind, AssertUnwindSafe};

/// mimalloc for every Rust allocation of the NIF (RocksDB's own C++ allocations keep the
/// system allocator): document conversion and the writer and indexer threads allocate many small
/// values, which glibc's allocator served slowly, across threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Runs a NIF body, turning a Rust panic into `{error, {internal_error, Msg}}` instead of an
/// exception, so no engine bug can take the caller down with it.
pub(crate) fn guarded<'a, F>(env: rustler::Env<'a>, f: F) -> rustler::Term<'a>
where
    F: FnOnce() -> rustler::Term<'a>,
{
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
        error::encode(
            env,
            &barrel_core::Error::Internal(barrel_core::panic_message(&p)),
        )
    })
}

rustler::init!("barrel_nif");
