//! `StoreOptions::low_priority_compactions`: RocksDB's compaction threads run at nice 19 once a
//! store opened with it (the default) has compacted, and stay at normal priority before.
//! Its own test binary: the setting is process-wide and cannot be undone.

#![cfg(target_os = "linux")]

use barrel_core::{BarrelConfig, DocInput, SaveOptions, Store, StoreOptions};
use serde_json::json;
use std::sync::Arc;

/// The nice value of every thread of this process whose name starts with `prefix`.
fn nice_of_threads(prefix: &str) -> Vec<i64> {
    let mut nices = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // After the name in parentheses: state is field 3, nice field 19.
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after_name.split(' ').collect();
        nices.push(fields[19 - 3].parse().unwrap());
    }
    nices
}

/// Writes documents in two flushed files, then compacts: compaction jobs run on the pool.
fn write_and_compact(store: &Arc<Store>) {
    store.create_barrel("b", BarrelConfig::default()).unwrap();
    let barrel = store.open_barrel("b").unwrap();
    for round in 0..2 {
        let docs = (0..200)
            .map(|i| {
                Ok(DocInput::from_value(json!({"id": format!("d{round}-{i}"), "n": i})).unwrap())
            })
            .collect();
        for r in barrel
            .save_docs(docs, &SaveOptions { new_edits: true })
            .unwrap()
        {
            r.unwrap();
        }
        store.flush().unwrap();
    }
    store.compact().unwrap();
}

#[test]
fn compactions_run_at_the_lowest_priority_unless_told_not_to() {
    let normal_dir = tempfile::tempdir().unwrap();
    let normal = Store::open(
        normal_dir.path(),
        &StoreOptions {
            low_priority_compactions: false,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    write_and_compact(&normal);
    let low = nice_of_threads("rocksdb:low");
    assert!(!low.is_empty(), "RocksDB names its compaction threads");
    assert!(
        low.iter().all(|&n| n == 0),
        "compactions at normal priority: {low:?}"
    );
    normal.close();

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    write_and_compact(&store);
    let low = nice_of_threads("rocksdb:low");
    assert!(
        low.contains(&19),
        "a compaction thread that ran a job since is at nice 19: {low:?}"
    );
    let high = nice_of_threads("rocksdb:high");
    assert!(
        high.iter().all(|&n| n == 0),
        "flushes keep their priority: {high:?}"
    );
    store.close();
}
