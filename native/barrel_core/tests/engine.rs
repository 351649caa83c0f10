//! The engine as a Rust user sees it: barrels, documents, revisions, conflicts, persistence.

use barrel_core::{
    BarrelConfig, DocError, DocInput, Error, FetchOptions, FoldOptions, OpenRev, OpenRevs, Rev,
    SaveOptions, Store, StoreOptions,
};
use serde_json::{json, Value};
use std::ops::{Bound, ControlFlow};
use std::sync::Arc;

fn doc(v: Value) -> DocInput {
    DocInput::from_value(v).unwrap()
}

fn rev(s: &str) -> Rev {
    Rev::parse(s).unwrap()
}

fn open_store(dir: &tempfile::TempDir) -> Arc<Store> {
    Store::open(dir.path(), &StoreOptions::default()).unwrap()
}

/// The store in `dir` with a new barrel `name` in it, opened.
fn new_barrel_in(dir: &tempfile::TempDir, name: &str) -> (Arc<Store>, barrel_core::Barrel) {
    let store = open_store(dir);
    store.create_barrel(name, BarrelConfig::default()).unwrap();
    let barrel = store.open_barrel(name).unwrap();
    (store, barrel)
}

fn setup() -> (tempfile::TempDir, Arc<Store>, barrel_core::Barrel) {
    let dir = tempfile::tempdir().unwrap();
    let (store, barrel) = new_barrel_in(&dir, "b");
    (dir, store, barrel)
}

const NEW: SaveOptions = SaveOptions { new_edits: true };

/// Saves document `a` with `v` 1, then updates it to `v` 2: the two revisions.
fn save_a_twice(b: &barrel_core::Barrel) -> (Rev, Rev) {
    let (_, r1) = b.save_doc(doc(json!({"id": "a", "v": 1})), &NEW).unwrap();
    let (_, r2) = b
        .save_doc(
            doc(json!({"id": "a", "_rev": r1.to_string(), "v": 2})),
            &NEW,
        )
        .unwrap();
    (r1, r2)
}
const REPL: SaveOptions = SaveOptions { new_edits: false };

fn plain() -> FetchOptions {
    FetchOptions::default()
}

#[test]
fn create_open_list_delete_barrels() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    store.create_barrel("one", BarrelConfig::default()).unwrap();
    store.create_barrel("two", BarrelConfig::default()).unwrap();
    assert_eq!(
        store.create_barrel("one", BarrelConfig::default()),
        Err(Error::AlreadyExists)
    );
    assert_eq!(store.list_barrels(), vec!["one", "two"]);
    assert!(matches!(store.open_barrel("three"), Err(Error::NotFound)));
    assert!(matches!(
        store.create_barrel("a/b", BarrelConfig::default()),
        Err(Error::InvalidName(_))
    ));
    assert!(matches!(
        store.create_barrel(
            "x",
            BarrelConfig {
                revs_limit: 0,
                sync: false
            }
        ),
        Err(Error::BadParam(_))
    ));
    store.delete_barrel("one").unwrap();
    assert_eq!(store.list_barrels(), vec!["two"]);
    assert_eq!(store.delete_barrel("one"), Err(Error::NotFound));
}

#[test]
fn save_then_fetch_returns_id_and_rev() {
    let (_d, _s, b) = setup();
    let (id, r) = b.save_doc(doc(json!({"id": "a", "k": "v"})), &NEW).unwrap();
    assert_eq!(id, "a");
    assert_eq!(r.gen, 1);
    let d = b.fetch_doc("a", &plain()).unwrap();
    assert_eq!(
        Value::Object(d),
        json!({"id": "a", "_rev": r.to_string(), "k": "v"})
    );
}

#[test]
fn missing_id_is_generated() {
    let (_d, _s, b) = setup();
    let (id1, _) = b.save_doc(doc(json!({"k": 1})), &NEW).unwrap();
    let (id2, _) = b.save_doc(doc(json!({"k": 1})), &NEW).unwrap();
    assert_ne!(id1, id2);
    assert_eq!(id1.len(), 32);
    assert_eq!(b.fetch_doc(&id1, &plain()).unwrap()["k"], json!(1));
}

#[test]
fn same_edit_gives_same_rev_on_two_stores() {
    let (_d1, _s1, b1) = setup();
    let (_d2, _s2, b2) = setup();
    let r1 = b1
        .save_doc(doc(json!({"id": "a", "x": [1, 2]})), &NEW)
        .unwrap()
        .1;
    let r2 = b2
        .save_doc(doc(json!({"x": [1, 2], "id": "a"})), &NEW)
        .unwrap()
        .1;
    assert_eq!(r1, r2);
}

#[test]
fn conflicting_save_returns_conflict() {
    let (_d, _s, b) = setup();
    let (_, r1) = b.save_doc(doc(json!({"id": "a", "v": 1})), &NEW).unwrap();
    // No _rev over a live doc.
    assert_eq!(
        b.save_doc(doc(json!({"id": "a", "v": 2})), &NEW),
        Err(Error::Conflict)
    );
    let (_, r2) = b
        .save_doc(
            doc(json!({"id": "a", "_rev": r1.to_string(), "v": 2})),
            &NEW,
        )
        .unwrap();
    assert_eq!(r2.gen, 2);
    // A stale rev.
    assert_eq!(
        b.save_doc(
            doc(json!({"id": "a", "_rev": r1.to_string(), "v": 3})),
            &NEW
        ),
        Err(Error::Conflict)
    );
    // A rev on a doc that does not exist.
    assert_eq!(
        b.save_doc(doc(json!({"id": "nope", "_rev": "1-abc"})), &NEW),
        Err(Error::Conflict)
    );
    assert_eq!(b.fetch_doc("a", &plain()).unwrap()["v"], json!(2));
}

#[test]
fn delete_then_recreate() {
    let (_d, _s, b) = setup();
    let (_, r1) = b.save_doc(doc(json!({"id": "a"})), &NEW).unwrap();
    let (_, r2) = b.delete_doc("a", r1.clone()).unwrap();
    assert_eq!(r2.gen, 2);
    assert_eq!(b.fetch_doc("a", &plain()), Err(Error::NotFound));
    let deleted = b
        .fetch_doc(
            "a",
            &FetchOptions {
                rev: Some(r2.clone()),
                ..plain()
            },
        )
        .unwrap();
    assert_eq!(deleted["_deleted"], json!(true));
    assert_eq!(b.delete_doc("a", r1), Err(Error::Conflict));
    let (_, r3) = b
        .save_doc(doc(json!({"id": "a", "back": true})), &NEW)
        .unwrap();
    assert_eq!(r3.gen, 3);
    assert_eq!(b.fetch_doc("a", &plain()).unwrap()["back"], json!(true));
    let info = b.info().unwrap();
    assert_eq!((info.stats.docs_count, info.stats.deleted_count), (1, 0));
}

#[test]
fn concurrent_writers_to_one_parent_exactly_one_wins() {
    let (_d, _s, b) = setup();
    let (_, r1) = b.save_doc(doc(json!({"id": "a"})), &NEW).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let b = b.clone();
            let r1 = r1.to_string();
            std::thread::spawn(move || {
                b.save_doc(doc(json!({"id": "a", "_rev": r1, "writer": i})), &NEW)
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(results
        .iter()
        .filter(|r| r.is_err())
        .all(|r| *r == Err(Error::Conflict)));
}

#[test]
fn concurrent_writers_are_all_committed_with_distinct_seqs() {
    let (_d, _s, b) = setup();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let b = b.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    b.save_doc(doc(json!({"id": format!("t{t}-{i}")})), &NEW)
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let info = b.info().unwrap();
    assert_eq!(info.stats.docs_count, 1600);
    assert_eq!(info.stats.updated_seq, 1600);
}

#[test]
fn save_docs_is_one_batch_with_per_doc_results() {
    let (_d, _s, b) = setup();
    let res = b
        .save_docs(
            vec![
                Ok(doc(json!({"id": "a"}))),
                Err(Error::BadDoc(DocError::NotAnObject)),
                Ok(doc(json!({"id": "a"}))),
                Ok(doc(json!({"id": "b"}))),
            ],
            &NEW,
        )
        .unwrap();
    assert!(res[0].is_ok());
    assert_eq!(res[1], Err(Error::BadDoc(DocError::NotAnObject)));
    assert_eq!(res[2], Err(Error::Conflict));
    assert!(res[3].is_ok());
    assert_eq!(b.info().unwrap().stats.updated_seq, 2);
}

#[test]
fn new_edits_false_creates_conflicts_and_is_idempotent() {
    let (_d, _s, b) = setup();
    let base = json!({"id": "a", "_rev": "2-bb", "_revisions": {"start": 2, "ids": ["bb", "aa"]}, "v": "left"});
    let other = json!({"id": "a", "_rev": "2-cc", "_revisions": {"start": 2, "ids": ["cc", "aa"]}, "v": "right"});
    b.save_doc(doc(base.clone()), &REPL).unwrap();
    b.save_doc(doc(other.clone()), &REPL).unwrap();
    let seq = b.info().unwrap().stats.updated_seq;
    // Replaying the same revisions changes nothing.
    assert_eq!(
        b.save_doc(doc(other.clone()), &REPL).unwrap(),
        ("a".into(), rev("2-cc"))
    );
    b.save_doc(doc(base), &REPL).unwrap();
    assert_eq!(b.info().unwrap().stats.updated_seq, seq);

    let d = b
        .fetch_doc(
            "a",
            &FetchOptions {
                conflicts: true,
                revs: true,
                ..plain()
            },
        )
        .unwrap();
    assert_eq!(d["_rev"], json!("2-cc"));
    assert_eq!(d["v"], json!("right"));
    assert_eq!(d["_conflicts"], json!(["2-bb"]));
    assert_eq!(d["_revisions"], json!({"start": 2, "ids": ["cc", "aa"]}));
    let loser = b
        .fetch_doc(
            "a",
            &FetchOptions {
                rev: Some(rev("2-bb")),
                ..plain()
            },
        )
        .unwrap();
    assert_eq!(loser["v"], json!("left"));
    // Resolving the conflict: delete the loser.
    b.delete_doc("a", rev("2-bb")).unwrap();
    let d = b
        .fetch_doc(
            "a",
            &FetchOptions {
                conflicts: true,
                ..plain()
            },
        )
        .unwrap();
    assert!(d.get("_conflicts").is_none());
    assert_eq!(d["v"], json!("right"));
}

#[test]
fn winner_body_moves_when_a_replicated_branch_wins() {
    let (_d, _s, b) = setup();
    let (r1, r2) = save_a_twice(&b);
    // A longer branch arrives from elsewhere and wins.
    let hist = json!({"start": 3, "ids": ["ff", "ee", r1.hash]});
    b.save_doc(
        doc(json!({"id": "a", "_rev": "3-ff", "_revisions": hist, "v": "remote"})),
        &REPL,
    )
    .unwrap();
    assert_eq!(b.fetch_doc("a", &plain()).unwrap()["v"], json!("remote"));
    let local = b
        .fetch_doc(
            "a",
            &FetchOptions {
                rev: Some(r2.clone()),
                ..plain()
            },
        )
        .unwrap();
    assert_eq!(local["v"], json!(2));
    let all = b.fetch_open_revs("a", &OpenRevs::All, false).unwrap();
    assert_eq!(all.len(), 2);
    let missing = b
        .fetch_open_revs("a", &OpenRevs::Revs(vec![r1.clone(), r2.clone()]), true)
        .unwrap();
    assert_eq!(missing[0], OpenRev::Missing(r1));
    match &missing[1] {
        OpenRev::Ok(d) => assert_eq!(d["_revisions"]["start"], json!(2)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn old_revisions_are_not_readable() {
    let (_d, _s, b) = setup();
    let (_, r1) = b.save_doc(doc(json!({"id": "a"})), &NEW).unwrap();
    b.save_doc(doc(json!({"id": "a", "_rev": r1.to_string()})), &NEW)
        .unwrap();
    assert_eq!(
        b.fetch_doc(
            "a",
            &FetchOptions {
                rev: Some(r1),
                ..plain()
            }
        ),
        Err(Error::NotFound)
    );
}

#[test]
fn revs_limit_prunes_history() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    store
        .create_barrel(
            "b",
            BarrelConfig {
                revs_limit: 3,
                sync: true,
            },
        )
        .unwrap();
    let b = store.open_barrel("b").unwrap();
    let mut r = b.save_doc(doc(json!({"id": "a", "n": 0})), &NEW).unwrap().1;
    for n in 1..10 {
        r = b
            .save_doc(doc(json!({"id": "a", "_rev": r.to_string(), "n": n})), &NEW)
            .unwrap()
            .1;
    }
    let d = b
        .fetch_doc(
            "a",
            &FetchOptions {
                revs: true,
                ..plain()
            },
        )
        .unwrap();
    assert_eq!(d["_revisions"]["start"], json!(10));
    assert_eq!(d["_revisions"]["ids"].as_array().unwrap().len(), 3);
}

#[test]
fn fold_docs_in_id_order_with_ranges_and_limit() {
    let (_d, _s, b) = setup();
    for id in ["c", "a", "e", "b", "d"] {
        b.save_doc(doc(json!({"id": id})), &NEW).unwrap();
    }
    let (_, r) = b.save_doc(doc(json!({"id": "f"})), &NEW).unwrap();
    b.delete_doc("f", r).unwrap();
    let ids = |opts: FoldOptions| {
        let mut out = Vec::new();
        b.fold_docs(&opts, |row| {
            out.push(row.id);
            ControlFlow::Continue(())
        })
        .unwrap();
        out
    };
    assert_eq!(ids(FoldOptions::default()), ["a", "b", "c", "d", "e"]);
    assert_eq!(
        ids(FoldOptions {
            start: Bound::Included("b".into()),
            end: Bound::Included("d".into()),
            ..FoldOptions::default()
        }),
        ["b", "c", "d"]
    );
    assert_eq!(
        ids(FoldOptions {
            start: Bound::Excluded("b".into()),
            end: Bound::Excluded("d".into()),
            ..FoldOptions::default()
        }),
        ["c"]
    );
    assert_eq!(
        ids(FoldOptions {
            limit: Some(2),
            ..FoldOptions::default()
        }),
        ["a", "b"]
    );
    let mut first = None;
    b.fold_docs(&FoldOptions::default(), |row| {
        first = row.doc;
        ControlFlow::Break(())
    })
    .unwrap();
    assert_eq!(first.unwrap()["id"], json!("a"));
}

#[test]
fn data_persists_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let r = {
        let store = open_store(&dir);
        store.create_barrel("p", BarrelConfig::default()).unwrap();
        let b = store.open_barrel("p").unwrap();
        b.save_doc(doc(json!({"id": "x", "v": 1})), &NEW).unwrap();
        b.save_doc(doc(json!({"id": "y", "v": 2})), &NEW).unwrap().1
    };
    let store = open_store(&dir);
    let b = store.open_barrel("p").unwrap();
    assert_eq!(
        b.fetch_doc("y", &plain()).unwrap()["_rev"],
        json!(r.to_string())
    );
    let info = b.info().unwrap();
    assert_eq!((info.stats.docs_count, info.stats.updated_seq), (2, 2));
    // Sequences continue after reopen.
    b.save_doc(doc(json!({"id": "z"})), &NEW).unwrap();
    assert_eq!(b.info().unwrap().stats.updated_seq, 3);
}

#[test]
fn handles_report_closed_store_and_deleted_barrel() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    store
        .create_barrel("gone", BarrelConfig::default())
        .unwrap();
    let b = store.open_barrel("gone").unwrap();
    b.save_doc(doc(json!({"id": "a"})), &NEW).unwrap();
    store.delete_barrel("gone").unwrap();
    assert_eq!(b.fetch_doc("a", &plain()), Err(Error::NotFound));
    assert_eq!(b.save_doc(doc(json!({})), &NEW), Err(Error::NotFound));
    // A new barrel of the same name does not see the old documents.
    store
        .create_barrel("gone", BarrelConfig::default())
        .unwrap();
    let b2 = store.open_barrel("gone").unwrap();
    assert_eq!(b2.fetch_doc("a", &plain()), Err(Error::NotFound));
    assert_eq!(b2.info().unwrap().stats.docs_count, 0);
    drop(store);
    assert_eq!(b2.fetch_doc("a", &plain()), Err(Error::Closed));
}

#[test]
fn replicated_revisions_require_rev() {
    let (_d, _s, b) = setup();
    assert_eq!(
        b.save_doc(doc(json!({"id": "a"})), &REPL),
        Err(Error::BadDoc(DocError::MissingRev))
    );
}

#[test]
fn cached_fetch_declines_when_disk_io_is_needed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, b) = new_barrel_in(&dir, "c");
        b.save_doc(doc(json!({"id": "a", "v": 1})), &NEW).unwrap();
        // In the memtable: answered from memory.
        let got = b.fetch_doc_cached("a", &plain()).unwrap().unwrap();
        assert_eq!(got["v"], json!(1));
        store.flush().unwrap();
        assert!(b.info().unwrap().disk_size > 0);
        // Flushed to a file, whose blocks went into the block cache as it was written: still
        // answered from memory (documents are most often read soon after they are written).
        let got = b.fetch_doc_cached("a", &plain()).unwrap().unwrap();
        assert_eq!(got["v"], json!(1));
    }
    let store = open_store(&dir);
    let b = store.open_barrel("c").unwrap();
    // Fresh block cache: the block must come from disk, so the cached read declines...
    assert_eq!(b.fetch_doc_cached("a", &plain()), Ok(None));
    // ...the blocking read answers and fills the cache...
    assert_eq!(b.fetch_doc("a", &plain()).unwrap()["v"], json!(1));
    // ...and the cached read then succeeds.
    assert_eq!(
        b.fetch_doc_cached("a", &plain()).unwrap().unwrap()["v"],
        json!(1)
    );
    assert_eq!(b.fetch_doc_cached("zz", &plain()), Err(Error::NotFound));
}

#[test]
fn with_winner_reads_the_winning_body_in_place() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, b) = new_barrel_in(&dir, "c");
        let (_, r2) = save_a_twice(&b);
        let read = |cached| b.with_winner("a", cached, |body, rev| (body.to_vec(), rev.clone()));
        // The stored JSON of the winner, without `id` or `_rev`, and the winner's revision:
        // what fetch_doc returns, parts apart.
        for cached in [false, true] {
            let (body, rev) = read(cached).unwrap();
            assert_eq!(rev, r2);
            assert_eq!(
                serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
                json!({"v": 2})
            );
        }
        assert_eq!(b.with_winner("zz", false, |_, _| ()), Err(Error::NotFound));
        assert!(matches!(
            b.with_winner("_bad", false, |_, _| ()),
            Err(Error::BadDoc(DocError::InvalidDocId(_)))
        ));
        b.delete_doc("a", r2).unwrap();
        assert_eq!(b.with_winner("a", false, |_, _| ()), Err(Error::NotFound));
        b.save_doc(
            doc(json!({"id": "big", "s": "x".repeat(barrel_core::barrel::CACHED_FETCH_MAX)})),
            &NEW,
        )
        .unwrap();
        // Too large to decode on a normal scheduler: declined from memory, read otherwise.
        assert_eq!(
            b.with_winner("big", true, |_, _| ()),
            Err(Error::WouldBlock)
        );
        assert!(
            b.with_winner("big", false, |body, _| body.len()).unwrap()
                > barrel_core::barrel::CACHED_FETCH_MAX
        );
        b.save_doc(doc(json!({"id": "d", "v": 3})), &NEW).unwrap();
        store.flush().unwrap();
    }
    let store = open_store(&dir);
    let b = store.open_barrel("c").unwrap();
    // Fresh block cache: declined from memory, read from disk.
    assert_eq!(b.with_winner("d", true, |_, _| ()), Err(Error::WouldBlock));
    assert_eq!(
        b.with_winner("d", false, |body, _| body.to_vec()).unwrap(),
        br#"{"v":3}"#.to_vec()
    );
}

/// Bytes in the write-ahead logs (RocksDB's `NNNNNN.log` files) under `dir`.
fn log_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if meta.is_dir() {
            total += log_bytes(&entry.path());
        } else if name
            .strip_suffix(".log")
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        {
            total += meta.len();
        }
    }
    total
}

#[test]
fn flush_for_close_leaves_no_log_to_replay() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, b) = new_barrel_in(&dir, "c");
        for i in 0..200 {
            b.save_doc(doc(json!({"id": format!("d{i}"), "v": i})), &NEW)
                .unwrap();
        }
        assert!(log_bytes(dir.path()) > 0);
        store.flush_for_close().unwrap();
    }
    // The documents and their index entries are in table files, the logs empty.
    assert_eq!(log_bytes(dir.path()), 0);
    let store = open_store(&dir);
    let b = store.open_barrel("c").unwrap();
    assert_eq!(b.fetch_doc("d199", &plain()).unwrap()["v"], json!(199));
    assert_eq!(b.info().unwrap().stats.docs_count, 200);
}

#[test]
fn opening_a_store_on_a_file_is_a_storage_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"not a directory").unwrap();
    assert!(matches!(
        Store::open(&file, &StoreOptions::default()),
        Err(Error::Storage(_))
    ));
}

#[test]
fn two_opens_of_one_directory_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open_store(&dir);
    assert!(matches!(
        Store::open(dir.path(), &StoreOptions::default()),
        Err(Error::Storage(_))
    ));
}

#[test]
fn a_closed_store_refuses_new_operations() {
    let (_d, store, b) = setup();
    b.save_doc(doc(json!({"id": "a"})), &NEW).unwrap();
    store.close();
    assert_eq!(b.fetch_doc("a", &plain()), Err(Error::Closed));
    assert_eq!(b.save_doc(doc(json!({})), &NEW), Err(Error::Closed));
}

#[test]
fn leaf_revs_lists_every_leaf_winner_first() {
    let (_d, _s, b) = setup();
    assert_eq!(b.leaf_revs("none"), Err(Error::NotFound));
    b.save_doc(doc(json!({"id": "c", "_rev": "1-aa"})), &REPL)
        .unwrap();
    b.save_doc(doc(json!({"id": "c", "_rev": "1-bb"})), &REPL)
        .unwrap();
    b.save_doc(
        doc(json!({"id": "c", "_rev": "1-cc", "_deleted": true})),
        &REPL,
    )
    .unwrap();
    let leaves = b.leaf_revs("c").unwrap();
    assert_eq!(leaves[0], rev("1-bb"));
    let mut all = leaves.clone();
    all.sort();
    assert_eq!(all, vec![rev("1-aa"), rev("1-bb"), rev("1-cc")]);
}
