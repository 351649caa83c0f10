//! The changes feed and live subscriptions, as a Rust user of the engine sees them.

use barrel_core::{
    Barrel, BarrelConfig, Change, ChangeSink, ChangesOptions, DocInput, Pattern, SaveOptions,
    Store, StoreOptions, SubscribeOptions,
};
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn setup() -> (tempfile::TempDir, Arc<Store>, Barrel) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    store.create_barrel("b", BarrelConfig::default()).unwrap();
    let barrel = store.open_barrel("b").unwrap();
    (dir, store, barrel)
}

fn save(b: &Barrel, v: Value) -> (String, barrel_core::Rev) {
    b.save_doc(DocInput::from_value(v).unwrap(), &SaveOptions::default())
        .unwrap()
}

fn feed(b: &Barrel, since: u64, opts: ChangesOptions) -> (Vec<Change>, u64) {
    let mut cur = b.changes_cursor(since, opts).unwrap();
    let mut all = Vec::new();
    loop {
        // Small chunks, to exercise resuming inside one snapshot.
        let chunk = cur.next_chunk(2).unwrap();
        let done = chunk.len() < 2;
        all.extend(chunk);
        if done {
            break;
        }
    }
    (all, cur.update_seq())
}

fn ids(changes: &[Change]) -> Vec<(&str, u64)> {
    changes.iter().map(|c| (c.id.as_str(), c.seq)).collect()
}

#[test]
fn feed_lists_each_doc_once_at_its_latest_seq() {
    let (_d, _s, b) = setup();
    let (_, r1) = save(&b, json!({"id": "a", "v": 1}));
    save(&b, json!({"id": "b", "v": 1}));
    save(&b, json!({"id": "a", "_rev": r1.to_string(), "v": 2}));
    save(&b, json!({"id": "c", "v": 1}));
    let (all, last) = feed(&b, 0, ChangesOptions::default());
    assert_eq!(ids(&all), vec![("b", 2), ("a", 3), ("c", 4)]);
    assert_eq!(last, 4);
    assert!(all
        .iter()
        .all(|c| c.doc.is_none() && c.changes == vec![c.rev.clone()]));
    let (since2, _) = feed(&b, 2, ChangesOptions::default());
    assert_eq!(ids(&since2), vec![("a", 3), ("c", 4)]);
    let (none, last) = feed(&b, 4, ChangesOptions::default());
    assert!(none.is_empty());
    assert_eq!(last, 4);
    let (desc, _) = feed(
        &b,
        0,
        ChangesOptions {
            descending: true,
            ..Default::default()
        },
    );
    assert_eq!(ids(&desc), vec![("c", 4), ("a", 3), ("b", 2)]);
}

#[test]
fn deletions_conflicts_docs_and_filters() {
    let (_d, _s, b) = setup();
    let (_, ra) = save(&b, json!({"id": "a", "type": "user"}));
    save(&b, json!({"id": "b", "type": "order"}));
    b.delete_doc("a", ra).unwrap();
    // A conflict on "b", made by replication.
    b.save_doc(
        DocInput::from_value(json!({"id": "b", "_rev": "1-ffff", "type": "user"})).unwrap(),
        &SaveOptions { new_edits: false },
    )
    .unwrap();
    let (all, _) = feed(
        &b,
        0,
        ChangesOptions {
            all_docs: true,
            include_docs: true,
            ..Default::default()
        },
    );
    assert_eq!(ids(&all), vec![("a", 3), ("b", 4)]);
    assert!(all[0].deleted);
    assert_eq!(all[0].doc_value().unwrap()["_deleted"], json!(true));
    assert_eq!(all[1].changes.len(), 2);
    assert_eq!(all[1].changes[0], all[1].rev);
    let doc = all[1].doc_value().unwrap();
    assert_eq!(doc["id"], json!("b"));
    assert_eq!(doc["_rev"], json!(all[1].rev.to_string()));

    let users = ChangesOptions {
        filter: vec![Pattern::parse("/type/user").unwrap()],
        ..Default::default()
    };
    let (u, _) = feed(&b, 0, users);
    // "b"'s winner is 1-ffff (highest hash) with type user; "a" is deleted.
    assert_eq!(ids(&u), vec![("b", 4)]);
    let by_id = ChangesOptions {
        filter: vec![Pattern::parse("/id/a").unwrap()],
        ..Default::default()
    };
    assert_eq!(ids(&feed(&b, 0, by_id).0), vec![("a", 3)]);
}

#[test]
fn a_feed_read_is_one_snapshot() {
    let (_d, _s, b) = setup();
    for i in 0..10 {
        save(&b, json!({"id": format!("d{i}")}));
    }
    let mut cur = b.changes_cursor(0, ChangesOptions::default()).unwrap();
    let first = cur.next_chunk(3).unwrap();
    for i in 0..10 {
        save(&b, json!({"id": format!("e{i}")}));
    }
    let rest = cur.next_chunk(100).unwrap();
    assert_eq!(first.len() + rest.len(), 10);
    assert_eq!(cur.update_seq(), 10);
}

#[test]
fn sequences_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        store.create_barrel("b", BarrelConfig::default()).unwrap();
        let b = store.open_barrel("b").unwrap();
        save(&b, json!({"id": "x"}));
        save(&b, json!({"id": "y"}));
    }
    let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    let b = store.open_barrel("b").unwrap();
    save(&b, json!({"id": "z"}));
    let (all, last) = feed(&b, 0, ChangesOptions::default());
    assert_eq!(ids(&all), vec![("x", 1), ("y", 2), ("z", 3)]);
    assert_eq!(last, 3);
}

/// A sink that records what it gets.
#[derive(Default)]
struct Recorder {
    got: Mutex<Vec<Change>>,
    behind: AtomicUsize,
}

struct Sink(Arc<Recorder>);

impl ChangeSink for Sink {
    fn deliver(&self, changes: Vec<Change>) -> bool {
        self.0.got.lock().extend(changes);
        true
    }
    fn fell_behind(&self) -> bool {
        self.0.behind.fetch_add(1, Ordering::SeqCst);
        true
    }
}

fn wait_for(what: impl Fn() -> bool) {
    let t = Instant::now();
    while !what() {
        assert!(t.elapsed() < Duration::from_secs(10), "timed out");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn subscribe(
    b: &Barrel,
    patterns: &[&str],
    window: usize,
) -> (Arc<Recorder>, Arc<barrel_core::Subscription>) {
    let rec = Arc::new(Recorder::default());
    let sub = b
        .subscribe(
            SubscribeOptions {
                patterns: patterns
                    .iter()
                    .map(|p| Pattern::parse(p).unwrap())
                    .collect(),
                include_docs: true,
                all_docs: false,
                window,
            },
            Box::new(Sink(rec.clone())),
        )
        .unwrap();
    (rec, sub)
}

#[test]
fn live_changes_match_new_or_previous_revision() {
    let (_d, _s, b) = setup();
    let (rec, sub) = subscribe(&b, &["/type/user"], 1000);
    let (_, r1) = save(&b, json!({"id": "u", "type": "user"}));
    save(&b, json!({"id": "o", "type": "order"}));
    // Leaves the pattern: still heard, through the previous revision.
    let (_, r2) = save(
        &b,
        json!({"id": "u", "_rev": r1.to_string(), "type": "admin"}),
    );
    // No longer matches, before or after: not heard.
    let (_, r3) = save(
        &b,
        json!({"id": "u", "_rev": r2.to_string(), "type": "guest"}),
    );
    let (_, r4) = save(
        &b,
        json!({"id": "u", "_rev": r3.to_string(), "type": "user"}),
    );
    b.delete_doc("u", r4).unwrap();
    wait_for(|| rec.got.lock().len() == 4);
    let got = rec.got.lock().clone();
    assert_eq!(ids(&got), vec![("u", 1), ("u", 3), ("u", 5), ("u", 6)]);
    assert!(got[3].deleted);
    assert_eq!(got[0].doc_value().unwrap()["type"], json!("user"));
    sub.cancel();
    save(&b, json!({"id": "u2", "type": "user"}));
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(rec.got.lock().len(), 4);
}

#[test]
fn a_full_window_stops_delivery_until_resumed() {
    let (_d, _s, b) = setup();
    let (rec, sub) = subscribe(&b, &["/*"], 3);
    for i in 0..3 {
        save(&b, json!({"id": format!("a{i}")}));
    }
    wait_for(|| rec.got.lock().len() == 3);
    // The window is full: the next change is dropped and the sink told, once.
    save(&b, json!({"id": "b0"}));
    save(&b, json!({"id": "b1"}));
    wait_for(|| rec.behind.load(Ordering::SeqCst) == 1);
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(rec.got.lock().len(), 3);
    assert_eq!(rec.behind.load(Ordering::SeqCst), 1);
    // The owner catches up from the feed, then resumes: later changes flow again.
    sub.resume();
    let (missed, _) = feed(&b, 3, ChangesOptions::default());
    assert_eq!(ids(&missed), vec![("b0", 4), ("b1", 5)]);
    save(&b, json!({"id": "c0"}));
    wait_for(|| rec.got.lock().len() == 4);
    assert_eq!(rec.got.lock()[3].id, "c0");
    // Acknowledged changes free the window.
    sub.ack(4);
    for i in 0..3 {
        save(&b, json!({"id": format!("d{i}")}));
    }
    wait_for(|| rec.got.lock().len() == 7);
    assert_eq!(rec.behind.load(Ordering::SeqCst), 1);
}

#[test]
fn concurrent_writers_deliver_every_seq_once_in_order() {
    let (_d, _s, b) = setup();
    let (rec, _sub) = subscribe(&b, &[], 1_000_000);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let b = b.clone();
            std::thread::spawn(move || {
                for i in 0..500 {
                    save(&b, json!({"id": format!("t{t}-{i}"), "n": i}));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    wait_for(|| rec.got.lock().len() == 2000);
    let seqs: Vec<u64> = rec.got.lock().iter().map(|c| c.seq).collect();
    assert_eq!(seqs, (1..=2000).collect::<Vec<_>>());
}

#[test]
fn deleting_the_barrel_tells_subscribers() {
    let (_d, store, b) = setup();
    let (rec, _sub) = subscribe(&b, &["/*"], 10);
    store.delete_barrel("b").unwrap();
    wait_for(|| rec.behind.load(Ordering::SeqCst) == 1);
    assert!(b.changes_cursor(0, ChangesOptions::default()).is_err());
}

/// A sink that records each change with the name of the thread that delivered it, and can
/// hold up the notifier's first delivery.
#[derive(Default)]
struct Threads {
    got: Mutex<Vec<(u64, String)>>,
    notifier_delay: Mutex<Option<Duration>>,
}

struct ThreadSink(Arc<Threads>);

impl ChangeSink for ThreadSink {
    fn deliver(&self, changes: Vec<Change>) -> bool {
        let name = std::thread::current().name().unwrap_or("").to_string();
        if name == "barrel-notifier" {
            if let Some(d) = self.0.notifier_delay.lock().take() {
                std::thread::sleep(d);
            }
        }
        let mut got = self.0.got.lock();
        got.extend(changes.into_iter().map(|c| (c.seq, name.clone())));
        true
    }
    fn fell_behind(&self) -> bool {
        true
    }
}

fn subscribe_threads(b: &Barrel) -> (Arc<Threads>, Arc<barrel_core::Subscription>) {
    let rec = Arc::new(Threads::default());
    let opts = SubscribeOptions {
        patterns: Vec::new(),
        include_docs: false,
        all_docs: false,
        window: 1_000_000,
    };
    let sub = b
        .subscribe(opts, Box::new(ThreadSink(rec.clone())))
        .unwrap();
    (rec, sub)
}

fn save_many(b: &Barrel, prefix: &str, n: usize) {
    let docs = (0..n)
        .map(|i| DocInput::from_value(json!({"id": format!("{prefix}{i}")})).map_err(Into::into))
        .collect();
    for r in b.save_docs(docs, &SaveOptions::default()).unwrap() {
        r.unwrap();
    }
}

#[test]
fn a_small_commit_is_delivered_by_the_writer_a_large_one_by_the_notifier() {
    let (_d, _s, b) = setup();
    let (rec, _sub) = subscribe_threads(&b);
    save(&b, json!({"id": "one"}));
    wait_for(|| rec.got.lock().len() == 1);
    save_many(&b, "many", barrel_core::INLINE_DELIVERIES + 1);
    wait_for(|| rec.got.lock().len() == barrel_core::INLINE_DELIVERIES + 2);
    let got = rec.got.lock().clone();
    assert_eq!(got[0], (1, "barrel-writer".to_string()));
    assert!(
        got[1..].iter().all(|(_, t)| t == "barrel-notifier"),
        "{got:?}"
    );
}

#[test]
fn small_commits_wait_for_the_notifier_to_keep_the_order() {
    let (_d, _s, b) = setup();
    let (rec, _sub) = subscribe_threads(&b);
    // The notifier holds on to this batch while single writes commit behind it.
    *rec.notifier_delay.lock() = Some(Duration::from_millis(200));
    let batch = barrel_core::INLINE_DELIVERIES + 1;
    save_many(&b, "batch", batch);
    for i in 0..5 {
        save(&b, json!({"id": format!("single{i}")}));
    }
    wait_for(|| rec.got.lock().len() == batch + 5);
    let seqs: Vec<u64> = rec.got.lock().iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=(batch as u64 + 5)).collect::<Vec<_>>());
    // Once the notifier has caught up, single writes go out from the writer again.
    save(&b, json!({"id": "after"}));
    wait_for(|| rec.got.lock().len() == batch + 6);
    assert_eq!(rec.got.lock().last().unwrap().1, "barrel-writer");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

    /// Read in chunks of any size, ascending or descending, filtered or not (so that the
    /// documents of a chunk are looked up in several runs), the feed is the model's: each
    /// document once, at its latest sequence, with its latest body.
    #[test]
    fn a_feed_read_in_chunks_is_the_model(
        writes in proptest::collection::vec((0usize..300, proptest::bool::ANY), 0..400),
        chunk in 1usize..600,
        descending in proptest::bool::ANY,
        filtered in proptest::bool::ANY,
        include_docs in proptest::bool::ANY,
    ) {
        let (_d, _s, b) = setup();
        // Per document: its latest revision, sequence and type.
        let mut model: std::collections::HashMap<String, (barrel_core::Rev, u64, bool)> =
            Default::default();
        for (seq, (n, x)) in writes.iter().enumerate() {
            let id = format!("d{n:03}");
            let mut doc = json!({"id": id, "t": if *x { "x" } else { "y" }, "seq": seq});
            if let Some((rev, _, _)) = model.get(&id) {
                doc["_rev"] = json!(rev.to_string());
            }
            let (_, rev) = save(&b, doc);
            model.insert(id, (rev, seq as u64 + 1, *x));
        }
        let mut want: Vec<(String, u64)> = model
            .iter()
            .filter(|(_, (_, _, x))| !filtered || *x)
            .map(|(id, (_, seq, _))| (id.clone(), *seq))
            .collect();
        want.sort_by_key(|(_, seq)| *seq);
        if descending {
            want.reverse();
        }
        let opts = ChangesOptions {
            descending,
            include_docs,
            filter: if filtered { vec![Pattern::parse("/t/x").unwrap()] } else { Vec::new() },
            ..Default::default()
        };
        let mut cur = b.changes_cursor(0, opts).unwrap();
        let mut got = Vec::new();
        loop {
            let part = cur.next_chunk(chunk).unwrap();
            proptest::prop_assert!(part.len() <= chunk);
            let done = part.len() < chunk;
            for c in part {
                let (rev, _, _) = &model[&c.id];
                proptest::prop_assert_eq!(&c.rev, rev);
                match &c.doc {
                    Some(body) => {
                        let body: Value = serde_json::from_slice(body).unwrap();
                        proptest::prop_assert!(include_docs);
                        proptest::prop_assert_eq!(body["seq"].as_u64().unwrap() + 1, c.seq);
                    }
                    None => proptest::prop_assert!(!include_docs),
                }
                got.push((c.id, c.seq));
            }
            if done {
                break;
            }
        }
        proptest::prop_assert!(cur.next_chunk(chunk).unwrap().is_empty());
        proptest::prop_assert_eq!(got, want);
    }
}
