//! Replication between barrels: local to local, over HTTP and over the WebSocket stream;
//! conflicts, deletions, checkpoints and resuming, continuous mode, filters, and a model test
//! (random edits on several replicas, replicated in random order, end up equal).

use barrel_core::replicate::endpoint::{Endpoint, HttpEndpoint, LocalEndpoint, WsEndpoint};
use barrel_core::replicate::run::{run, RepControl, RepOptions, RepState};
use barrel_core::server::{self, ServerConfig, ServerHandle};
use barrel_core::{
    Barrel, BarrelConfig, ChangesOptions, DocInput, OpenRev, OpenRevs, Pattern, SaveOptions, Store,
    StoreOptions,
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
    let (_d, s) = store();
    let a = barrel(&s, "a");
    let b = barrel(&s, "b");
    for i in 0..300 {
        save(&a, json!({"id": format!("d{i:04}")}));
    }
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
    /// Replicate replica `from` to `to`.
    Sync { from: usize, to: usize },
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (0..3usize, 0..6usize, any::<u8>()).prop_map(|(r, d, v)| Edit::Put { r, d, v }),
        1 => (0..3usize, 0..6usize).prop_map(|(r, d)| Edit::Delete { r, d }),
        2 => (0..3usize, 0..3usize).prop_map(|(from, to)| Edit::Sync { from, to }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// Random concurrent edits on three replicas, replicated in random order, then every pair
    /// both ways until quiescent: all replicas equal (same trees, same winners and bodies).
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
                Edit::Sync { from, to } if from != to => {
                    replicate(&mut LocalEndpoint::new(rs[from].clone()), &mut LocalEndpoint::new(rs[to].clone()), &opts);
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
