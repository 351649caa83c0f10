//! Replication between barrels: local to local, over HTTP and over the WebSocket stream;
//! conflicts, deletions, checkpoints and resuming, continuous mode, filters, attachments (each
//! content copied once, only when the target lacks it; large ones streamed over the network in
//! bounded memory), and a model test (random edits on several replicas, replicated in random
//! order, end up equal).

use barrel_core::attachment::Md5Digest;
use barrel_core::replicate::endpoint::{
    AttachmentData, ChangedDoc, Chunks, ContentRef, Endpoint, HttpEndpoint, LocalEndpoint,
    MissingStub, WsEndpoint,
};
use barrel_core::replicate::run::{run, RepControl, RepOptions, RepState, STREAM_THRESHOLD};
use barrel_core::server::{self, ServerConfig, ServerHandle};
use barrel_core::{
    Barrel, BarrelConfig, ChangesOptions, DocInput, Error, OpenRev, OpenRevs, Pattern, Query, Rev,
    RevsDiff, SaveOptions, Select, Store, StoreOptions,
};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn store() -> (tempfile::TempDir, Arc<Store>) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    (dir, s)
}

fn barrel(s: &Arc<Store>, name: &str) -> Barrel {
    s.create_barrel(name, BarrelConfig::default()).unwrap();
    s.open_barrel(name).unwrap()
}

fn save(b: &Barrel, v: Value) -> String {
    b.save_doc(DocInput::from_value(v).unwrap(), &SaveOptions::default())
        .unwrap()
        .1
        .to_string()
}

fn save_rev(b: &Barrel, v: Value) {
    b.save_doc(
        DocInput::from_value(v).unwrap(),
        &SaveOptions { new_edits: false },
    )
    .unwrap();
}

/// A document's leaves (with deletion flags), winner and winning body.
type DocState = (Vec<(String, bool)>, String, Value);

/// Every document's [`DocState`]: equal on two barrels when their trees agree.
fn state(b: &Barrel) -> BTreeMap<String, DocState> {
    let mut out = BTreeMap::new();
    let mut cur = b.changes_cursor(0, ChangesOptions::default()).unwrap();
    loop {
        let chunk = cur.next_chunk(500).unwrap();
        let done = chunk.len() < 500;
        for c in chunk {
            let leaves = b.fetch_open_revs(&c.id, &OpenRevs::All, false).unwrap();
            let mut ls: Vec<(String, bool)> = leaves
                .into_iter()
                .filter_map(|l| match l {
                    OpenRev::Ok(d) => Some((
                        d["_rev"].as_str().unwrap().to_string(),
                        d.get("_deleted").is_some(),
                    )),
                    OpenRev::Missing(_) => None,
                })
                .collect();
            ls.sort();
            let body = b
                .fetch_open_revs(&c.id, &OpenRevs::Revs(vec![c.rev.clone()]), false)
                .unwrap();
            let body = match &body[0] {
                OpenRev::Ok(d) => Value::Object(d.clone()),
                OpenRev::Missing(_) => Value::Null,
            };
            out.insert(c.id.clone(), (ls, c.rev.to_string(), body));
        }
        if done {
            return out;
        }
    }
}

#[track_caller]
/// A store with barrel `a` holding `n` documents `d0000`.. and an empty barrel `b`.
fn source_of(n: usize) -> (tempfile::TempDir, Arc<Store>, Barrel, Barrel) {
    let (d, s) = store();
    let a = barrel(&s, "a");
    let b = barrel(&s, "b");
    for i in 0..n {
        save(&a, json!({"id": format!("d{i:04}")}));
    }
    (d, s, a, b)
}

fn replicate(
    src: &mut dyn Endpoint,
    tgt: &mut dyn Endpoint,
    opts: &RepOptions,
) -> barrel_core::replicate::run::Progress {
    let control = RepControl::default();
    run(src, tgt, opts, &control, &mut |_| {}).unwrap();
    control.progress()
}

fn serve(s: &Arc<Store>) -> ServerHandle {
    let shared = s.clone();
    server::start(
        Arc::new(move || Ok(shared.clone())),
        ServerConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..Default::default()
        },
    )
    .unwrap()
}

/// A source with plain docs, an updated doc, a deleted doc and a conflict.
fn fill(b: &Barrel, n: usize) {
    for i in 0..n {
        save(
            b,
            json!({"id": format!("d{i:04}"), "n": i, "type": if i % 2 == 0 { "even" } else { "odd" }}),
        );
    }
    let r = save(b, json!({"id": "upd", "v": 1}));
    save(b, json!({"id": "upd", "_rev": r, "v": 2}));
    let r = save(b, json!({"id": "gone"}));
    b.delete_doc("gone", barrel_core::Rev::parse(&r).unwrap())
        .unwrap();
    save(b, json!({"id": "conf", "side": "a"}));
    save_rev(
        b,
        json!({"id": "conf", "_rev": "1-ffffffffffffffff", "side": "b"}),
    );
}

/// The batched read of stored revisions (one snapshot, one MultiGet) gives, document by
/// document, what the one-document read gives: leaves, conflicts, a deletion, a revision that
/// is no longer a leaf (its leaves instead), a revision asked twice, unknown revisions and
/// documents, and an invalid id.
#[test]
fn stored_revisions_of_many_documents_are_those_of_each() {
    let (_d, s) = store();
    let b = barrel(&s, "many");
    fill(&b, 20);
    let unknown = barrel_core::Rev::parse("1-0123456789abcdef").unwrap();
    let mut asked: Vec<(String, Vec<barrel_core::Rev>)> = Vec::new();
    for id in state(&b).keys() {
        let leaves = b.leaf_revs(id).unwrap();
        let mut revs = leaves.clone();
        let stored = b.stored_revs_latest(id, &leaves[..1]).unwrap();
        if let Some(parent) = stored[0].history.get(1) {
            revs.push(parent.clone());
        }
        revs.push(leaves[0].clone());
        revs.push(unknown.clone());
        asked.push((id.clone(), revs));
    }
    asked.push(("never-written".into(), vec![unknown.clone()]));
    asked.push((String::new(), vec![unknown.clone()]));
    asked.push(("d0003".into(), Vec::new()));
    let list: Vec<(&str, &[barrel_core::Rev])> = asked
        .iter()
        .map(|(id, revs)| (id.as_str(), revs.as_slice()))
        .collect();
    let many = b.stored_revs_latest_many(&list).unwrap();
    assert_eq!(many.len(), list.len());
    let mut conflicts = 0;
    for ((id, revs), got) in list.iter().zip(many) {
        match (got, b.stored_revs_latest(id, revs)) {
            (Ok(got), Ok(one)) => {
                conflicts += usize::from(got.len() > 1);
                assert_eq!(got, one, "{id}");
            }
            (Err(got), Err(one)) => assert_eq!(format!("{got:?}"), format!("{one:?}"), "{id}"),
            (got, one) => panic!("{id}: {got:?} against {one:?}"),
        }
    }
    assert!(conflicts > 0, "the conflict was asked for");
    // Without `latest`, a revision asked twice comes twice, each time with its body.
    let leaf = b.leaf_revs("d0001").unwrap().remove(0);
    let twice = b
        .fetch_open_revs("d0001", &OpenRevs::Revs(vec![leaf.clone(), leaf]), false)
        .unwrap();
    assert_eq!(twice.len(), 2);
    assert_eq!(twice[0], twice[1]);
    assert!(matches!(&twice[0], OpenRev::Ok(d) if d["n"] == 1));
}

#[test]
fn local_to_local_with_conflicts_deletions_and_checkpoints() {
    let (_d, s) = store();
    let a = barrel(&s, "a");
    let b = barrel(&s, "b");
    fill(&a, 120);
    let opts = RepOptions {
        batch_size: 50,
        ..Default::default()
    };
    let p = replicate(
        &mut LocalEndpoint::new(a.clone()),
        &mut LocalEndpoint::new(b.clone()),
        &opts,
    );
    assert_eq!(p.state, RepState::Completed);
    assert_eq!(state(&a), state(&b));
    assert_eq!(p.docs_written, 120 + 1 + 1 + 2);
    // Again: nothing to send, from the checkpoint.
    let p = replicate(
        &mut LocalEndpoint::new(a.clone()),
        &mut LocalEndpoint::new(b.clone()),
        &opts,
    );
    assert_eq!((p.docs_read, p.docs_written), (0, 0));
    // New edits on both sides, then both ways: same trees, same winners.
    save(&b, json!({"id": "from-b"}));
    let r = a.fetch_doc("d0001", &Default::default()).unwrap()["_rev"]
        .as_str()
        .unwrap()
        .to_string();
    save(&a, json!({"id": "d0001", "_rev": r, "edited": "a"}));
    save(&b, json!({"id": "d0001", "_rev": r, "edited": "b"}));
    replicate(
        &mut LocalEndpoint::new(a.clone()),
        &mut LocalEndpoint::new(b.clone()),
        &opts,
    );
    replicate(
        &mut LocalEndpoint::new(b.clone()),
        &mut LocalEndpoint::new(a.clone()),
        &opts,
    );
    assert_eq!(state(&a), state(&b));
    assert_eq!(state(&a)["d0001"].0.len(), 2, "a conflict on both sides");
}

/// Every leaf of every document, with its history (`_revisions`).
fn leaves_with_history(b: &Barrel) -> BTreeMap<String, Vec<Value>> {
    let mut out = BTreeMap::new();
    let chunk = b
        .changes_cursor(0, ChangesOptions::default())
        .unwrap()
        .next_chunk(10_000)
        .unwrap();
    for c in chunk {
        let mut leaves: Vec<Value> = b
            .fetch_open_revs(&c.id, &OpenRevs::All, true)
            .unwrap()
            .into_iter()
            .filter_map(|l| match l {
                OpenRev::Ok(d) => Some(Value::Object(d)),
                OpenRev::Missing(_) => None,
            })
            .collect();
        leaves.sort_by_key(|l| l["_rev"].as_str().unwrap_or_default().to_string());
        out.insert(c.id, leaves);
    }
    out
}

/// Ids and values a query finds.
fn found(b: &Barrel, path: &str, select: Select) -> Vec<(String, Value)> {
    let q = Query {
        path: barrel_core::index::parse_path(path).unwrap(),
        select,
        descending: false,
        include_docs: false,
    };
    let mut out = Vec::new();
    b.query(&q, None, |r| {
        out.push((r.id, r.value));
        true
    })
    .unwrap();
    out
}

#[test]
fn local_copies_keep_bodies_histories_and_index_entries() {
    // Between two local barrels, revisions without attachments are copied as stored: the
    // target has the same leaves, bodies and histories, and indexes them as its own writes.
    let (_d, s) = store();
    let a = barrel(&s, "a");
    let b = barrel(&s, "b");
    fill(&a, 30);
    save(
        &a,
        json!({"id": "odd", "s": "Caf\u{e9} \"q\" \\ \u{0}", "n": [1, -2, 1.5, 1.0e300,
            18446744073709551615u64], "deep": {"x": [{"y": null}, true]}, "": ""}),
    );
    // Mixed in: a document with an attachment (sent the other way) and one updated after it.
    save(&a, json!({"id": "att", "kind": "photo"}));
    attach(&a, "att", "f.bin", &bytes(3, 1000));
    edit_keeping_attachments(&a, "att", "kind", json!("picture"));
    let p = replicate(
        &mut LocalEndpoint::new(a.clone()),
        &mut LocalEndpoint::new(b.clone()),
        &RepOptions {
            batch_size: 7,
            ..Default::default()
        },
    );
    assert_eq!(p.state, RepState::Completed);
    assert_eq!(p.docs_written, 30 + 1 + 1 + 2 + 1 + 1);
    assert_eq!(leaves_with_history(&a), leaves_with_history(&b));
    assert_eq!(content(&b, "att", "f.bin", None), bytes(3, 1000));
    for (path, select) in [
        ("type", Select::Equal(json!("odd"))),
        ("n", Select::All),
        ("n/*", Select::All),
        ("s", Select::Prefix("café".into())),
        ("deep/x/0/y", Select::All),
        ("deep/x/1", Select::Equal(json!(true))),
        ("kind", Select::All),
        ("side", Select::All),
        ("id", Select::Prefix("d00".into())),
    ] {
        let want = found(&a, path, select.clone());
        assert!(!want.is_empty(), "{path}");
        assert_eq!(found(&b, path, select), want, "{path}");
    }
}

#[test]
fn over_http_and_websocket() {
    let (_d1, s1) = store();
    let (_d2, s2) = store();
    let a = barrel(&s1, "a");
    let remote = barrel(&s2, "r");
    let web = barrel(&s2, "w");
    fill(&a, 80);
    let server = serve(&s2);
    let base = format!("http://{}", server.addr());
    let opts = RepOptions {
        batch_size: 30,
        ..Default::default()
    };
    // Push over HTTP, pull back into a fresh barrel.
    replicate(
        &mut LocalEndpoint::new(a.clone()),
        &mut HttpEndpoint::new(&format!("{base}/barrels/r"), None),
        &opts,
    );
    assert_eq!(state(&a), state(&remote));
    let back = barrel(&s1, "back");
    replicate(
        &mut HttpEndpoint::new(&format!("{base}/barrels/r"), None),
        &mut LocalEndpoint::new(back.clone()),
        &opts,
    );
    assert_eq!(state(&a), state(&back));
    // The talk's WebSocket URL form.
    let ws = format!("ws://{}/w", server.addr());
    replicate(
        &mut LocalEndpoint::new(a.clone()),
        &mut WsEndpoint::new(&ws, None),
        &opts,
    );
    assert_eq!(state(&a), state(&web));
    let back2 = barrel(&s1, "back2");
    replicate(
        &mut WsEndpoint::new(&ws, None),
        &mut LocalEndpoint::new(back2.clone()),
        &opts,
    );
    assert_eq!(state(&a), state(&back2));
    // A missing remote barrel is created on demand.
    let created = HttpEndpoint::new(&format!("{base}/barrels/fresh"), None);
    created.ensure_exists().unwrap();
    assert!(s2.open_barrel("fresh").is_ok());
    server.stop();
}

#[test]
fn a_stopped_replication_resumes_from_its_checkpoint() {
    let (_d, _s, a, b) = source_of(300);
    let opts = RepOptions {
        batch_size: 50,
        ..Default::default()
    };
    // Cancel after two batches.
    let control = RepControl::default();
    let mut batches = 0;
    run(
        &mut LocalEndpoint::new(a.clone()),
        &mut LocalEndpoint::new(b.clone()),
        &opts,
        &control,
        &mut |p| {
            if p.docs_written > 0 && p.state == RepState::Running {
                batches += 1;
                if batches == 2 {
                    control.cancel();
                }
            }
        },
    )
    .unwrap();
    let first = control.progress();
    assert_eq!(first.state, RepState::Cancelled);
    assert_eq!(first.docs_written, 100);
    assert_eq!(b.info().unwrap().stats.docs_count, 100);
    // Resumed: only the rest is read and written.
    let p = replicate(
        &mut LocalEndpoint::new(a.clone()),
        &mut LocalEndpoint::new(b.clone()),
        &opts,
    );
    assert_eq!((p.docs_read, p.docs_written), (200, 200));
    assert_eq!(state(&a), state(&b));
}

#[test]
fn continuous_replication_follows_writes_until_cancelled() {
    let (_d, s) = store();
    let a = barrel(&s, "a");
    let b = barrel(&s, "b");
    save(&a, json!({"id": "before"}));
    let control = Arc::new(RepControl::default());
    let (a2, b2, c2) = (a.clone(), b.clone(), control.clone());
    let t = std::thread::spawn(move || {
        run(
            &mut LocalEndpoint::new(a2),
            &mut LocalEndpoint::new(b2),
            &RepOptions {
                continuous: true,
                ..Default::default()
            },
            &c2,
            &mut |_| {},
        )
    });
    let writer = {
        let a = a.clone();
        std::thread::spawn(move || {
            for i in 0..200 {
                save(&a, json!({"id": format!("live{i}")}));
            }
        })
    };
    writer.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while b.info().unwrap().stats.docs_count < 201 {
        assert!(
            Instant::now() < deadline,
            "continuous replication did not catch up"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    control.cancel();
    t.join().unwrap().unwrap();
    assert_eq!(control.progress().state, RepState::Cancelled);
    assert_eq!(state(&a), state(&b));
}

#[test]
fn continuous_replication_checkpoints_at_intervals_and_when_caught_up() {
    let (_d, _s, a, b) = source_of(300);
    // Batches of one: 300 batches in a row before the replication catches up.
    let opts = RepOptions {
        continuous: true,
        batch_size: 1,
        ..Default::default()
    };
    let control = Arc::new(RepControl::default());
    let (a2, b2, c2, o2) = (a.clone(), b.clone(), control.clone(), opts.clone());
    let started = Instant::now();
    let t = std::thread::spawn(move || {
        let mut batches = 0;
        let r = run(
            &mut LocalEndpoint::new(a2),
            &mut LocalEndpoint::new(b2),
            &o2,
            &c2,
            &mut |_| batches += 1,
        );
        r.map(|()| batches)
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while control.progress().state != RepState::Idle || control.progress().docs_written < 300 {
        assert!(Instant::now() < deadline, "replication did not catch up");
        std::thread::sleep(Duration::from_millis(5));
    }
    let caught_up = started.elapsed().as_secs();
    // Caught up: checkpointed at the source's last sequence...
    let update_seq = a.info().unwrap().stats.updated_seq;
    assert_eq!(control.progress().last_seq, update_seq);
    let rep_id = barrel_core::replicate::run::replication_id(
        &LocalEndpoint::new(a.clone()),
        &LocalEndpoint::new(b.clone()),
        &opts,
    );
    let checkpoint = b.get_local(&rep_id).unwrap();
    assert_eq!(checkpoint["last_seq"], json!(update_seq));
    // ...after writing it for the first batch, about once a second, and at the end, not
    // after each of the 300 batches (the local document's `0-N` counts its writes).
    let writes: u64 = checkpoint["_rev"].as_str().unwrap()[2..].parse().unwrap();
    assert!(
        writes <= 3 + caught_up,
        "{writes} checkpoints in {caught_up} s"
    );
    control.cancel();
    assert!(t.join().unwrap().unwrap() >= 300);
    // A restart finds nothing to do.
    let p = replicate(
        &mut LocalEndpoint::new(a.clone()),
        &mut LocalEndpoint::new(b.clone()),
        &RepOptions {
            batch_size: 1,
            ..Default::default()
        },
    );
    assert_eq!((p.docs_read, p.docs_written), (0, 0));
    assert_eq!(state(&a), state(&b));
}

#[test]
fn filtered_replication() {
    let (_d, s) = store();
    let a = barrel(&s, "a");
    let b = barrel(&s, "b");
    fill(&a, 20);
    let opts = RepOptions {
        filter: vec![Pattern::parse("/type/even").unwrap()],
        ..Default::default()
    };
    replicate(
        &mut LocalEndpoint::new(a.clone()),
        &mut LocalEndpoint::new(b.clone()),
        &opts,
    );
    let got: Vec<String> = state(&b).keys().cloned().collect();
    assert_eq!(got.len(), 10);
    assert!(got.iter().all(|id| id.starts_with('d')));
}

#[test]
fn an_unreachable_remote_fails_a_one_shot_replication() {
    let (_d, s) = store();
    let a = barrel(&s, "a");
    save(&a, json!({"id": "x"}));
    let control = RepControl::default();
    let r = run(
        &mut LocalEndpoint::new(a),
        &mut HttpEndpoint::new("http://127.0.0.1:9/barrels/nowhere", None),
        &RepOptions::default(),
        &control,
        &mut |_| {},
    );
    assert!(r.is_err());
    let p = control.progress();
    assert_eq!(p.state, RepState::Failed);
    assert!(p.last_error.is_some());
}

#[derive(Clone, Debug)]
enum Edit {
    /// Create or update doc `d` on replica `r` (a new edit of its current winner).
    Put { r: usize, d: usize, v: u8 },
    /// Delete doc `d` on replica `r` (if live).
    Delete { r: usize, d: usize },
    /// Put attachment `a<v % 3>` with content `[v]` on doc `d` on replica `r` (a new edit; the
    /// document's other attachments stay, a `Put` drops them all).
    Attach { r: usize, d: usize, v: u8 },
    /// Replicate replica `from` to `to`, attachment contents copied apart or, with `inline`,
    /// inline in the documents (as with a remote replica).
    Sync {
        from: usize,
        to: usize,
        inline: bool,
    },
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (0..3usize, 0..6usize, any::<u8>()).prop_map(|(r, d, v)| Edit::Put { r, d, v }),
        1 => (0..3usize, 0..6usize).prop_map(|(r, d)| Edit::Delete { r, d }),
        2 => (0..3usize, 0..6usize, any::<u8>()).prop_map(|(r, d, v)| Edit::Attach { r, d, v }),
        2 => (0..3usize, 0..3usize, any::<bool>())
            .prop_map(|(from, to, inline)| Edit::Sync { from, to, inline }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// Random concurrent edits on three replicas, replicated in random order, then every pair
    /// both ways until quiescent: all replicas equal (same trees, same winners and bodies, same
    /// attachment contents).
    #[test]
    fn replicas_converge(edits in proptest::collection::vec(edit(), 1..40)) {
        let (_d, s) = store();
        let rs: Vec<Barrel> = (0..3).map(|i| barrel(&s, &format!("r{i}"))).collect();
        let opts = RepOptions { batch_size: 3, ..Default::default() };
        for e in edits {
            match e {
                Edit::Put { r, d, v } => {
                    let id = format!("doc{d}");
                    let mut doc = json!({"id": id, "v": v});
                    match rs[r].fetch_doc(&id, &Default::default()) {
                        Ok(cur) => doc["_rev"] = cur["_rev"].clone(),
                        Err(_) => {
                            // Maybe a deleted winner: a new edit goes on it.
                        }
                    }
                    let _ = rs[r].save_doc(DocInput::from_value(doc).unwrap(), &SaveOptions::default());
                }
                Edit::Delete { r, d } => {
                    let id = format!("doc{d}");
                    if let Ok(cur) = rs[r].fetch_doc(&id, &Default::default()) {
                        let rev = barrel_core::Rev::parse(cur["_rev"].as_str().unwrap()).unwrap();
                        rs[r].delete_doc(&id, rev).unwrap();
                    }
                }
                Edit::Attach { r, d, v } => {
                    attach(&rs[r], &format!("doc{d}"), &format!("a{}", v % 3), &[v]);
                }
                Edit::Sync { from, to, inline } if from != to => {
                    let mut source = LocalEndpoint::new(rs[from].clone());
                    if inline {
                        replicate(&mut source, &mut inline_only(&rs[to]), &opts);
                    } else {
                        replicate(&mut source, &mut LocalEndpoint::new(rs[to].clone()), &opts);
                    }
                }
                Edit::Sync { .. } => {}
            }
        }
        for _ in 0..2 {
            for from in 0..3 {
                for to in 0..3 {
                    if from != to {
                        replicate(&mut LocalEndpoint::new(rs[from].clone()), &mut LocalEndpoint::new(rs[to].clone()), &opts);
                    }
                }
            }
        }
        let s0 = state(&rs[0]);
        prop_assert_eq!(&s0, &state(&rs[1]));
        prop_assert_eq!(&s0, &state(&rs[2]));
        assert_same_attachments(&rs[0], &rs[1]);
        assert_same_attachments(&rs[0], &rs[2]);
    }
}

/// A certificate authority and a server certificate for 127.0.0.1 it signed (openssl).
fn test_certs(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    let script = "set -e
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 1 -subj /CN=barrel-test-ca 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout srv.key -out srv.csr -subj /CN=localhost 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nbasicConstraints=CA:FALSE\\n' > ext.cnf
openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem -days 1 -extfile ext.cnf 2>/dev/null";
    let ok = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl failed");
    let ca = std::fs::read(dir.join("ca.pem")).unwrap();
    (dir.join("srv.pem"), dir.join("srv.key"), ca)
}

#[test]
fn over_https_and_wss_with_a_private_ca() {
    let (_d1, s1) = store();
    let (_d2, s2) = store();
    let certs = tempfile::tempdir().unwrap();
    let (cert, key, ca) = test_certs(certs.path());
    let a = barrel(&s1, "a");
    fill(&a, 30);
    let shared = s2.clone();
    let server = server::start(
        Arc::new(move || Ok(shared.clone())),
        ServerConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: Some((cert, key)),
            ..Default::default()
        },
    )
    .unwrap();
    let addr = server.addr();
    let opts = RepOptions {
        create_target: true,
        ..Default::default()
    };
    let mut https = HttpEndpoint::new(&format!("https://{addr}/barrels/h"), None)
        .with_ca(&ca)
        .unwrap();
    replicate(&mut LocalEndpoint::new(a.clone()), &mut https, &opts);
    assert_eq!(state(&a), state(&s2.open_barrel("h").unwrap()));
    let mut wss = WsEndpoint::new(&format!("wss://{addr}/w"), None)
        .with_ca(&ca)
        .unwrap();
    replicate(&mut LocalEndpoint::new(a.clone()), &mut wss, &opts);
    assert_eq!(state(&a), state(&s2.open_barrel("w").unwrap()));
    // Without the CA the certificate is not trusted: refused, nothing written.
    let control = RepControl::default();
    let r = run(
        &mut LocalEndpoint::new(a.clone()),
        &mut HttpEndpoint::new(&format!("https://{addr}/barrels/x"), None),
        &opts,
        &control,
        &mut |_| {},
    );
    assert!(r.is_err());
    assert!(s2.open_barrel("x").is_err());
    server.stop();
}

// ---------------------------------------------------------------------------------------------
// Attachments
// ---------------------------------------------------------------------------------------------

/// `n` bytes of a pattern that differs with `seed`.
fn bytes(seed: u64, n: usize) -> Vec<u8> {
    (0..n as u64)
        .map(|i| ((i * 31 + seed * 7 + i / 251) % 251) as u8)
        .collect()
}

fn winner(b: &Barrel, id: &str) -> Option<Rev> {
    b.fetch_doc(id, &Default::default())
        .ok()
        .map(|d| Rev::parse(d["_rev"].as_str().unwrap()).unwrap())
}

/// Puts attachment `name` on the winner of `id` (creating the document if needed).
fn attach(b: &Barrel, id: &str, name: &str, content: &[u8]) -> Rev {
    let mut w = b.attachment_writer().unwrap();
    w.write(content).unwrap();
    let blob = w.finish().unwrap();
    b.put_attachment(
        id,
        winner(b, id).as_ref(),
        name,
        "application/octet-stream",
        blob,
    )
    .unwrap()
    .1
}

fn content(b: &Barrel, id: &str, name: &str, rev: Option<&Rev>) -> Vec<u8> {
    b.fetch_attachment(id, name, rev).unwrap().1
}

/// A new edit of the winner of `id` that changes `field` and keeps its attachments.
fn edit_keeping_attachments(b: &Barrel, id: &str, field: &str, v: Value) {
    let mut d = b.fetch_doc(id, &Default::default()).unwrap();
    d.insert(field.into(), v);
    b.save_doc(DocInput::from_map(d).unwrap(), &SaveOptions::default())
        .unwrap();
}

const PHOTO_LEN: usize = 300_000;

/// Documents with attachments: `p` (a photo of three chunks and a note), `q` (the same photo
/// under another name), `r` (created by its attachment), `l` (a link), and `c` (two leaves
/// with different contents under the same name).
fn fill_attachments(b: &Barrel) {
    save(b, json!({"id": "p", "kind": "photo"}));
    attach(b, "p", "photo.jpg", &bytes(1, PHOTO_LEN));
    attach(b, "p", "note.txt", b"a short note");
    save(b, json!({"id": "q"}));
    attach(b, "q", "copy.jpg", &bytes(1, PHOTO_LEN));
    attach(b, "r", "only.txt", b"r");
    save(
        b,
        json!({"id": "l", "_attachments": {
            "pic": {"url": "https://example.com/p.png", "content_type": "image/png"}}}),
    );
    let base = save(b, json!({"id": "c"}));
    attach(b, "c", "f", b"leaf one");
    let b64 = base64::engine::general_purpose::STANDARD;
    let leaf_two = base64::Engine::encode(&b64, b"leaf two");
    save_rev(
        b,
        json!({"id": "c", "_rev": "2-ffffffffffffffff",
               "_revisions": {"start": 2, "ids": ["ffffffffffffffff", base.split_once('-').unwrap().1]},
               "_attachments": {"f": {"data": leaf_two, "revpos": 2}}}),
    );
}

/// Every leaf's attachments have the same contents on both barrels, and the barrels hold the
/// same contents.
fn assert_same_attachments(a: &Barrel, b: &Barrel) {
    assert_eq!(
        a.attachment_contents().unwrap(),
        b.attachment_contents().unwrap()
    );
    for (id, (leaves, _, _)) in state(a) {
        for (rev, deleted) in leaves {
            if deleted {
                continue;
            }
            let rev = Rev::parse(&rev).unwrap();
            let opts = barrel_core::FetchOptions {
                rev: Some(rev.clone()),
                ..Default::default()
            };
            let doc = a.fetch_doc(&id, &opts).unwrap();
            for name in doc
                .get("_attachments")
                .and_then(Value::as_object)
                .into_iter()
                .flat_map(|m| m.keys())
            {
                let meta = a.attachment_meta(&id, name, Some(&rev)).unwrap();
                assert_eq!(b.attachment_meta(&id, name, Some(&rev)).unwrap(), meta);
                if meta.digest.is_some() {
                    assert_eq!(
                        content(a, &id, name, Some(&rev)),
                        content(b, &id, name, Some(&rev)),
                        "{id} {rev} {name}"
                    );
                }
            }
        }
    }
}

#[test]
fn local_replication_copies_each_missing_content_once() {
    let (_d, s) = store();
    let a = barrel(&s, "a");
    let b = barrel(&s, "b");
    fill_attachments(&a);
    let p = replicate(
        &mut LocalEndpoint::new(a.clone()),
        &mut LocalEndpoint::new(b.clone()),
        &RepOptions::default(),
    );
    assert_eq!(state(&a), state(&b));
    assert_same_attachments(&a, &b);
    // The photo once for p and q; the note, r's content and c's two leaves.
    let sizes = [PHOTO_LEN, 12, 1, 8, 8];
    assert_eq!(p.attachments_copied, sizes.len() as u64);
    assert_eq!(p.attachment_bytes, sizes.iter().sum::<usize>() as u64);
    assert_eq!(b.attachment_contents().unwrap(), (5, p.attachment_bytes));
    assert_eq!(content(&b, "q", "copy.jpg", None), bytes(1, PHOTO_LEN));
    let link = b.attachment_meta("l", "pic", None).unwrap();
    assert_eq!(link.url.as_deref(), Some("https://example.com/p.png"));
    // An edit that keeps the attachments: the revision goes, no content.
    edit_keeping_attachments(&a, "p", "kind", json!("portrait"));
    let p = replicate(
        &mut LocalEndpoint::new(a.clone()),
        &mut LocalEndpoint::new(b.clone()),
        &RepOptions::default(),
    );
    assert_eq!(
        (p.docs_written, p.attachments_copied, p.attachment_bytes),
        (1, 0, 0)
    );
    assert_eq!(state(&a), state(&b));
    // A new attachment: only its content.
    attach(&a, "p", "thumb.png", &bytes(2, 1000));
    let p = replicate(
        &mut LocalEndpoint::new(a.clone()),
        &mut LocalEndpoint::new(b.clone()),
        &RepOptions::default(),
    );
    assert_eq!(
        (p.docs_written, p.attachments_copied, p.attachment_bytes),
        (1, 1, 1000)
    );
    assert_same_attachments(&a, &b);
}

#[test]
fn a_deleted_attachment_replicates() {
    let (_d, s) = store();
    let a = barrel(&s, "a");
    let b = barrel(&s, "b");
    attach(&a, "d", "x", b"going");
    attach(&a, "d", "y", b"staying");
    let rep = || {
        replicate(
            &mut LocalEndpoint::new(a.clone()),
            &mut LocalEndpoint::new(b.clone()),
            &RepOptions::default(),
        )
    };
    rep();
    assert_eq!(b.attachment_contents().unwrap().0, 2);
    a.delete_attachment("d", &winner(&a, "d").unwrap(), "x")
        .unwrap();
    let p = rep();
    assert_eq!((p.docs_written, p.attachments_copied), (1, 0));
    assert_eq!(state(&a), state(&b));
    assert_eq!(b.attachment_meta("d", "x", None), Err(Error::NotFound));
    assert_eq!(content(&b, "d", "y", None), b"staying");
    // No revision refers to the deleted content any more: gone from both.
    assert_eq!(a.attachment_contents().unwrap(), (1, 7));
    assert_eq!(b.attachment_contents().unwrap(), (1, 7));
}

#[test]
fn conflicting_revisions_keep_their_own_attachments() {
    let (_d, s) = store();
    let a = barrel(&s, "a");
    let b = barrel(&s, "b");
    save(&a, json!({"id": "c"}));
    let both_ways = || {
        for (from, to) in [(&a, &b), (&b, &a)] {
            replicate(
                &mut LocalEndpoint::new(from.clone()),
                &mut LocalEndpoint::new(to.clone()),
                &RepOptions::default(),
            );
        }
    };
    both_ways();
    let ra = attach(&a, "c", "f", b"written on a");
    let rb = attach(&b, "c", "f", b"written on b");
    both_ways();
    assert_eq!(state(&a), state(&b));
    assert_eq!(state(&a)["c"].0.len(), 2, "a conflict on both sides");
    for x in [&a, &b] {
        assert_eq!(content(x, "c", "f", Some(&ra)), b"written on a");
        assert_eq!(content(x, "c", "f", Some(&rb)), b"written on b");
        assert_eq!(x.attachment_contents().unwrap().0, 2);
    }
    // Resolving the conflict on one side removes the loser's content on both.
    let loser = if state(&a)["c"].1 == ra.to_string() {
        &rb
    } else {
        &ra
    };
    a.delete_doc("c", loser.clone()).unwrap();
    both_ways();
    assert_eq!(state(&a), state(&b));
    for x in [&a, &b] {
        assert_eq!(x.attachment_contents().unwrap().0, 1);
    }
}

/// A large content goes between local barrels chunk by chunk: written here in 1 MiB pieces,
/// compared piece by piece, never held whole.
#[test]
fn a_large_attachment_is_copied_in_chunks() {
    const MIB: usize = 1 << 20;
    const PIECES: usize = 20;
    let (_d, s) = store();
    let a = barrel(&s, "a");
    let b = barrel(&s, "b");
    let mut w = a.attachment_writer().unwrap();
    for i in 0..PIECES {
        w.write(&bytes(i as u64, MIB)).unwrap();
    }
    let blob = w.finish().unwrap();
    a.put_attachment("big", None, "video.bin", "video/mp4", blob)
        .unwrap();
    let p = replicate(
        &mut LocalEndpoint::new(a.clone()),
        &mut LocalEndpoint::new(b.clone()),
        &RepOptions::default(),
    );
    assert_eq!(
        (p.attachments_copied, p.attachment_bytes),
        (1, (PIECES * MIB) as u64)
    );
    let meta = a.attachment_meta("big", "video.bin", None).unwrap();
    assert_eq!(b.attachment_meta("big", "video.bin", None).unwrap(), meta);
    let (mut from, mut to) = (
        a.open_attachment(&meta).unwrap(),
        b.open_attachment(&meta).unwrap(),
    );
    let mut total = 0;
    while let Some(piece) = from.read().unwrap() {
        total += piece.len();
        assert_eq!(to.read().unwrap().as_deref(), Some(&piece[..]));
    }
    assert_eq!(to.read().unwrap(), None);
    assert_eq!(total, PIECES * MIB);
}

/// Another endpoint through a test lens. With `inline`, contents never move apart (a local
/// barrel seen as a remote one: they travel inline in the documents, `atts_since`). With
/// `claimed`, every missing revision gets that revision as a possible ancestor, as from a
/// target whose leaf was replaced right after `revs_diff`.
struct Lens<E> {
    inner: E,
    inline: bool,
    claimed: Option<Rev>,
}

/// A local barrel whose contents travel inline.
fn inline_only(b: &Barrel) -> Lens<LocalEndpoint> {
    Lens {
        inner: LocalEndpoint::new(b.clone()),
        inline: true,
        claimed: None,
    }
}

impl<E: Endpoint> Endpoint for Lens<E> {
    fn describe(&self) -> String {
        let inline = if self.inline { "inline " } else { "" };
        format!("{inline}{}", self.inner.describe())
    }
    fn changes(
        &mut self,
        since: u64,
        limit: usize,
        filter: &[Pattern],
    ) -> barrel_core::Result<(Vec<ChangedDoc>, u64)> {
        self.inner.changes(since, limit, filter)
    }
    fn wait_changes(&mut self, since: u64, timeout: Duration) -> barrel_core::Result<()> {
        self.inner.wait_changes(since, timeout)
    }
    fn revs_diff(
        &mut self,
        asked: &[(String, Vec<Rev>)],
    ) -> barrel_core::Result<Vec<(String, RevsDiff)>> {
        let mut out = self.inner.revs_diff(asked)?;
        for (_, d) in &mut out {
            d.possible_ancestors.extend(self.claimed.clone());
        }
        Ok(out)
    }
    fn fetch(
        &mut self,
        wanted: &[(String, RevsDiff)],
        atts: AttachmentData,
    ) -> barrel_core::Result<Vec<Value>> {
        self.inner.fetch(wanted, atts)
    }
    fn save(&mut self, docs: Vec<Value>) -> barrel_core::Result<Vec<MissingStub>> {
        self.inner.save(docs)
    }
    fn get_local(&mut self, id: &str) -> barrel_core::Result<Option<Value>> {
        self.inner.get_local(id)
    }
    fn put_local(&mut self, id: &str, doc: Value) -> barrel_core::Result<()> {
        self.inner.put_local(id, doc)
    }
    fn reads_contents(&self) -> bool {
        !self.inline && self.inner.reads_contents()
    }
    fn stores_contents(&self) -> bool {
        !self.inline && self.inner.stores_contents()
    }
    fn saves_streamed(&self) -> bool {
        !self.inline && self.inner.saves_streamed()
    }
    fn missing_contents(&mut self, digests: &[Md5Digest]) -> barrel_core::Result<Vec<Md5Digest>> {
        self.inner.missing_contents(digests)
    }
    fn read_content(&mut self, content: &ContentRef) -> barrel_core::Result<Chunks<'static>> {
        self.inner.read_content(content)
    }
    fn write_content(
        &mut self,
        meta: &barrel_core::AttMeta,
        chunks: Chunks<'_>,
    ) -> barrel_core::Result<u64> {
        self.inner.write_content(meta, chunks)
    }
    fn save_streamed(
        &mut self,
        doc: Value,
        follows: &[ContentRef],
        source: &mut dyn Endpoint,
    ) -> barrel_core::Result<Option<MissingStub>> {
        self.inner.save_streamed(doc, follows, source)
    }
}

#[test]
fn a_document_refused_for_a_missing_stub_is_sent_again_with_its_contents() {
    let (_d, s) = store();
    let a = barrel(&s, "a");
    let b = barrel(&s, "b");
    let first = attach(&a, "s", "f", b"content");
    edit_keeping_attachments(&a, "s", "v", json!(2));
    // Told the target has the first revision, the source sends the attachment as a stub.
    let mut target = Lens {
        claimed: Some(first),
        ..inline_only(&b)
    };
    let p = replicate(
        &mut LocalEndpoint::new(a.clone()),
        &mut target,
        &RepOptions::default(),
    );
    assert_eq!(p.state, RepState::Completed);
    assert_eq!(
        (p.docs_written, p.attachments_copied, p.attachment_bytes),
        (1, 1, 7)
    );
    assert_eq!(state(&a), state(&b));
    assert_eq!(content(&b, "s", "f", None), b"content");
}

/// Attachments over HTTP and over the WebSocket stream: contents inline (base64) for what
/// changed after the target's revisions, stubs for the rest.
#[test]
fn attachments_over_http_and_websocket() {
    let (_d1, s1) = store();
    let (_d2, s2) = store();
    let server = serve(&s2);
    let http = format!("http://{}/barrels/r", server.addr());
    let ws = format!("ws://{}/w", server.addr());
    let opts = RepOptions {
        create_target: true,
        ..Default::default()
    };
    type Remote = Box<dyn Fn() -> Box<dyn Endpoint>>;
    let remotes: [(&str, Remote); 2] = [
        (
            "r",
            Box::new(move || Box::new(HttpEndpoint::new(&http, None))),
        ),
        ("w", Box::new(move || Box::new(WsEndpoint::new(&ws, None)))),
    ];
    for (name, remote) in remotes {
        let a = barrel(&s1, &format!("a-{name}"));
        fill_attachments(&a);
        let p = replicate(&mut LocalEndpoint::new(a.clone()), &mut *remote(), &opts);
        let there = s2.open_barrel(name).unwrap();
        assert_eq!(state(&a), state(&there), "{name}");
        assert_same_attachments(&a, &there);
        // Inline, each document carries its own copy: the photo twice.
        assert_eq!(p.attachments_copied, 6, "{name}");
        // Pulled back into a fresh barrel.
        let back = barrel(&s1, &format!("back-{name}"));
        replicate(&mut *remote(), &mut LocalEndpoint::new(back.clone()), &opts);
        assert_eq!(state(&a), state(&back), "{name}");
        assert_same_attachments(&a, &back);
        // An edit that keeps the attachments sends none (`atts_since`); a new one only itself.
        edit_keeping_attachments(&a, "p", "kind", json!(format!("seen by {name}")));
        let p = replicate(&mut LocalEndpoint::new(a.clone()), &mut *remote(), &opts);
        assert_eq!((p.docs_written, p.attachments_copied), (1, 0), "{name}");
        attach(&a, "p", &format!("{name}.txt"), name.as_bytes());
        let p = replicate(&mut LocalEndpoint::new(a.clone()), &mut *remote(), &opts);
        assert_eq!((p.docs_written, p.attachments_copied), (1, 1), "{name}");
        assert_same_attachments(&a, &there);
        let p = replicate(&mut *remote(), &mut LocalEndpoint::new(back.clone()), &opts);
        assert_eq!((p.docs_written, p.attachments_copied), (1, 1), "{name}");
        assert_eq!(state(&a), state(&back), "{name}");
        assert_same_attachments(&a, &back);
    }
    server.stop();
}

// ---------------------------------------------------------------------------------------------
// Large attachments over the network
// ---------------------------------------------------------------------------------------------

const MIB: usize = 1 << 20;

/// Puts a content of `mib` MiB, written 1 MiB at a time, as attachment `name` of `id`.
fn attach_large(b: &Barrel, id: &str, name: &str, mib: usize) -> Rev {
    let mut w = b.attachment_writer().unwrap();
    for i in 0..mib {
        w.write(&bytes(i as u64, MIB)).unwrap();
    }
    let blob = w.finish().unwrap();
    b.put_attachment(id, winner(b, id).as_ref(), name, "video/mp4", blob)
        .unwrap()
        .1
}

/// The MD5 of the content of attachment `name` of the winner of `id`, read chunk by chunk.
fn md5_of(b: &Barrel, id: &str, name: &str) -> [u8; 16] {
    use md5::{Digest, Md5};
    let meta = b.attachment_meta(id, name, None).unwrap();
    let mut reader = b.open_attachment(&meta).unwrap();
    let mut h = Md5::new();
    while let Some(chunk) = reader.read().unwrap() {
        h.update(&chunk);
    }
    h.finalize().into()
}

/// `true` when attachment `name` of `id` has the same content on `a` and `b`, the one its
/// digest names.
fn same_content(a: &Barrel, b: &Barrel, id: &str, name: &str) -> bool {
    let digest = a.attachment_meta(id, name, None).unwrap().digest.unwrap();
    md5_of(a, id, name) == digest && md5_of(b, id, name) == digest
}

/// The peak resident memory of this process so far (`VmHWM`), in bytes; `None` off Linux.
fn peak_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Runs test `name` alone in a child process of this test binary, unless this is that child:
/// a process's peak memory is shared by the tests its threads run at once. `true` in the child
/// (go on with the test), `false` in the parent once the child passed.
fn in_a_process_of_its_own(name: &str) -> bool {
    const CHILD: &str = "BARREL_TEST_ALONE";
    if std::env::var_os(CHILD).is_some() {
        return true;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--test-threads=1", "--nocapture"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name} failed in its own process:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    false
}

/// A 64 MiB attachment goes to a remote barrel as a multipart `PUT` and comes back with a
/// streamed `GET`: equal contents, right counters, and the process's peak memory grows by less
/// than the content (inline, it would hold it whole, twice as base64).
#[test]
fn a_large_attachment_streams_over_http_in_bounded_memory() {
    if !in_a_process_of_its_own("a_large_attachment_streams_over_http_in_bounded_memory") {
        return;
    }
    const LEN: usize = 64;
    let (_d1, s1) = store();
    let (_d2, s2) = store();
    let server = serve(&s2);
    let remote = || HttpEndpoint::new(&format!("http://{}/barrels/r", server.addr()), None);
    let a = barrel(&s1, "a");
    let back = barrel(&s1, "back");
    save(&a, json!({"id": "film", "title": "a long one"}));
    attach_large(&a, "film", "film.mp4", LEN);
    attach(&a, "film", "poster.txt", b"coming soon");
    let opts = RepOptions {
        create_target: true,
        ..Default::default()
    };
    let before = peak_memory();
    let pushed = replicate(&mut LocalEndpoint::new(a.clone()), &mut remote(), &opts);
    let pulled = replicate(&mut remote(), &mut LocalEndpoint::new(back.clone()), &opts);
    let after = peak_memory();
    let there = s2.open_barrel("r").unwrap();
    let total = (LEN * MIB + 11) as u64;
    for p in [&pushed, &pulled] {
        assert_eq!(
            (p.docs_written, p.attachments_copied, p.attachment_bytes),
            (1, 2, total)
        );
    }
    assert_eq!(state(&a), state(&there));
    assert_eq!(state(&a), state(&back));
    for name in ["film.mp4", "poster.txt"] {
        assert!(same_content(&a, &there, "film", name), "{name} pushed");
        assert!(same_content(&a, &back, "film", name), "{name} pulled");
    }
    if let (Some(before), Some(after)) = (before, after) {
        let grown = after.saturating_sub(before);
        assert!(
            grown < (LEN * MIB) as u64,
            "peak memory grew by {} MiB",
            grown / MIB as u64
        );
    }
    server.stop();
}

/// Large contents stream over the WebSocket endpoint too (over HTTP to the same server),
/// whatever the document id and attachment names hold; small new ones of other documents
/// still go inline, and an edit that keeps the attachments sends none.
#[test]
fn large_contents_stream_over_websocket_with_any_names() {
    let (_d1, s1) = store();
    let (_d2, s2) = store();
    let server = serve(&s2);
    let ws = format!("ws://{}/w", server.addr());
    let remote = || WsEndpoint::new(&ws, None);
    let a = barrel(&s1, "a");
    let back = barrel(&s1, "back");
    let id = "clips/2024 summer+fall?";
    let large = STREAM_THRESHOLD as usize + 1;
    save(&a, json!({"id": id}));
    attach(&a, id, "part 1/intro \"cut\".bin", &bytes(7, large));
    attach(&a, id, "part 2.bin", &bytes(8, large));
    attach(&a, "small", "note.txt", b"small");
    let opts = RepOptions {
        create_target: true,
        ..Default::default()
    };
    let p = replicate(&mut LocalEndpoint::new(a.clone()), &mut remote(), &opts);
    assert_eq!(
        (p.docs_written, p.attachments_copied, p.attachment_bytes),
        (2, 3, 2 * large as u64 + 5)
    );
    let p = replicate(&mut remote(), &mut LocalEndpoint::new(back.clone()), &opts);
    assert_eq!(
        (p.attachments_copied, p.attachment_bytes),
        (3, 2 * large as u64 + 5)
    );
    let there = s2.open_barrel("w").unwrap();
    for b in [&there, &back] {
        assert_eq!(state(&a), state(b));
        assert_same_attachments(&a, b);
    }
    // Only what changed: no content for an edit, the new one alone for a new attachment.
    edit_keeping_attachments(&a, id, "seen", json!(true));
    let p = replicate(&mut LocalEndpoint::new(a.clone()), &mut remote(), &opts);
    assert_eq!((p.docs_written, p.attachments_copied), (1, 0));
    attach(&a, id, "part 3.bin", &bytes(9, large));
    let p = replicate(&mut LocalEndpoint::new(a.clone()), &mut remote(), &opts);
    assert_eq!(
        (p.docs_written, p.attachments_copied, p.attachment_bytes),
        (1, 1, large as u64)
    );
    let p = replicate(&mut remote(), &mut LocalEndpoint::new(back.clone()), &opts);
    assert_eq!(
        (p.docs_written, p.attachments_copied, p.attachment_bytes),
        (1, 1, large as u64)
    );
    for b in [&there, &back] {
        assert_eq!(state(&a), state(b));
        assert_same_attachments(&a, b);
    }
    server.stop();
}

/// A document streamed with a stub the target turns out to lack (a `PUT` refused with
/// `missing_stub`) is streamed again with every content.
#[test]
fn a_document_refused_for_a_missing_stub_is_streamed_again_with_its_contents() {
    let (_d1, s1) = store();
    let (_d2, s2) = store();
    let server = serve(&s2);
    let a = barrel(&s1, "a");
    barrel(&s2, "r");
    let large = STREAM_THRESHOLD as usize * 2;
    let first = attach(&a, "s", "note.txt", b"old note");
    attach(&a, "s", "f.bin", &bytes(3, large));
    // Told the target has the first revision, the source sends the note as a stub.
    let mut target = Lens {
        inner: HttpEndpoint::new(&format!("http://{}/barrels/r", server.addr()), None),
        inline: false,
        claimed: Some(first),
    };
    let p = replicate(
        &mut LocalEndpoint::new(a.clone()),
        &mut target,
        &RepOptions::default(),
    );
    assert_eq!(p.state, RepState::Completed);
    // The large content twice: with the refused stub, then with the note.
    assert_eq!(
        (p.docs_written, p.attachments_copied, p.attachment_bytes),
        (1, 3, 2 * large as u64 + 8)
    );
    let there = s2.open_barrel("r").unwrap();
    assert_eq!(state(&a), state(&there));
    assert_same_attachments(&a, &there);
    server.stop();
}
