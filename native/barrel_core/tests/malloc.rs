//! `StoreOptions::tune_malloc`: opening a store raises glibc's mmap threshold, unless told not
//! to. Its own test binary: the setting is process-wide.

#![cfg(all(target_os = "linux", target_env = "gnu"))]

use barrel_core::{Store, StoreOptions};

/// Whether glibc served an allocation of `bytes` with its own `mmap` (the chunk header's
/// `IS_MMAPPED` bit, in the size word just before the pointer).
fn served_by_mmap(bytes: usize) -> bool {
    // SAFETY: a live allocation of at least `bytes`; glibc keeps its chunk size word (with
    // the flag bits) in the machine word right before the pointer it returns. The pointer goes
    // through `black_box` and the read is volatile: to the compiler, reading before an
    // allocation is out of bounds, and it would fold the read away.
    unsafe {
        let p = std::hint::black_box(libc::malloc(bytes)) as *const usize;
        assert!(!p.is_null());
        let size_word = std::ptr::read_volatile(p.wrapping_sub(1));
        libc::free(p as *mut libc::c_void);
        size_word & 0x2 != 0
    }
}

#[test]
fn opening_a_store_keeps_large_allocations_in_the_heap_unless_told_not_to() {
    // Sizes far above glibc's default threshold (128 KiB) and below the new one. Freeing a
    // mapped block raises glibc's threshold to its size, so each check asks for more than the
    // one before: a larger block is mapped again unless the threshold was set.
    const MIB: usize = 1 << 20;
    const _: () = assert!(28 * MIB < barrel_core::MALLOC_MMAP_THRESHOLD);
    assert!(
        served_by_mmap(20 * MIB),
        "glibc's default maps large blocks"
    );

    let dir = tempfile::tempdir().unwrap();
    let opted_out = StoreOptions {
        tune_malloc: false,
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), &opted_out).unwrap();
    store.close();
    drop(store);
    assert!(
        served_by_mmap(24 * MIB),
        "tune_malloc: false leaves malloc alone"
    );

    let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    assert!(
        !served_by_mmap(28 * MIB),
        "from the heap once a store opened"
    );
    store.close();
}
