//! The BEAM binding of `barrel_core`: term conversion, resources and dirty NIFs. No database
//! logic lives here; see `src/barrel_nif.erl` for the stubs and `src/barrel.erl` for the API.

mod attachments;
mod changes;
mod convert;
mod doc_json;
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

/// Checks, when the library is loaded, that this CPU runs the instructions RocksDB was compiled
/// for (see `.cargo/config.toml`: SSE4.2 and PCLMUL on x86-64; `build.rs` tells), so an older
/// CPU gets an error from `erlang:load_nif/2` instead of an illegal instruction taking the VM
/// down later.
fn load(_env: rustler::Env, _info: rustler::Term) -> bool {
    #[cfg(all(target_arch = "x86_64", rocksdb_sse42))]
    if !(std::arch::is_x86_feature_detected!("sse4.2")
        && std::arch::is_x86_feature_detected!("pclmulqdq"))
    {
        eprintln!(
            "barrel: this CPU lacks SSE4.2 or PCLMUL, which this build of the NIF needs; \
             rebuild it with CXXFLAGS_x86_64_unknown_linux_gnu=\"\" (see .cargo/config.toml)"
        );
        return false;
    }
    true
}

rustler::init!("barrel_nif", load = load);
