//! Model test: revisions written with `new_edits = false` in any order, any number of times,
//! leave every replica with the same leaves, bodies and winner.

use barrel_core::{
    BarrelConfig, DocInput, FetchOptions, OpenRev, OpenRevs, SaveOptions, Store, StoreOptions,
};
use proptest::prelude::*;
use serde_json::{json, Value};

/// A random edit history of one document: node i has a parent among 0..i (or is a root) and may
/// be a deletion. Returns each revision as a replicated document with its full path.
fn history() -> impl Strategy<Value = Vec<Value>> {
    proptest::collection::vec(
        (any::<prop::sample::Index>(), any::<bool>(), any::<u8>()),
        1..16,
    )
    .prop_map(|spec| {
        let mut nodes: Vec<(u64, String, Option<usize>)> = Vec::new();
        for (i, (pidx, _, salt)) in spec.iter().enumerate() {
            let parent = if i == 0 || salt % 7 == 0 {
                None
            } else {
                Some(pidx.index(i))
            };
            let gen = parent.map_or(1, |p| nodes[p].0 + 1);
            nodes.push((gen, format!("{:02x}{:02x}", i, salt), parent));
        }
        spec.iter()
            .enumerate()
            .map(|(i, (_, deleted, _))| {
                let mut ids = Vec::new();
                let mut cur = Some(i);
                while let Some(c) = cur {
                    ids.push(Value::String(nodes[c].1.clone()));
                    cur = nodes[c].2;
                }
                json!({
                    "id": "doc",
                    "_rev": format!("{}-{}", nodes[i].0, nodes[i].1),
                    "_revisions": {"start": nodes[i].0, "ids": ids},
                    "_deleted": *deleted && i % 2 == 1,
                    "n": i,
                })
            })
            .collect()
    })
}

fn shuffled(mut v: Vec<Value>, seed: u64) -> Vec<Value> {
    let mut s = seed;
    for i in (1..v.len()).rev() {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        v.swap(i, (s >> 33) as usize % (i + 1));
    }
    v
}

/// Leaves with their bodies, sorted, and the winner as a plain fetch sees it.
fn state(b: &barrel_core::Barrel) -> (Vec<String>, Option<Value>) {
    let mut leaves: Vec<String> = b
        .fetch_open_revs("doc", &OpenRevs::All, false)
        .unwrap()
        .into_iter()
        .map(|o| match o {
            OpenRev::Ok(d) => Value::Object(d).to_string(),
            OpenRev::Missing(r) => format!("missing {r}"),
        })
        .collect();
    leaves.sort();
    let winner = b
        .fetch_doc("doc", &FetchOptions::default())
        .ok()
        .map(Value::Object);
    (leaves, winner)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn replicas_converge_whatever_the_order(
        revs in history(),
        seed in any::<u64>(),
        batch in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        store.create_barrel("a", BarrelConfig::default()).unwrap();
        store.create_barrel("b", BarrelConfig::default()).unwrap();
        let (a, b) = (store.open_barrel("a").unwrap(), store.open_barrel("b").unwrap());
        let opts = SaveOptions { new_edits: false };
        let doc = |v: &Value| Ok(DocInput::from_value(v.clone()).unwrap());
        for v in &revs {
            a.save_doc(DocInput::from_value(v.clone()).unwrap(), &opts).unwrap();
        }
        // The other replica gets them shuffled, with repeats, one by one or in one batch.
        let mut other = shuffled(revs.clone(), seed);
        other.extend(shuffled(revs.clone(), seed ^ 0x5555));
        if batch {
            for r in b.save_docs(other.iter().map(doc).collect(), &opts).unwrap() {
                prop_assert!(r.is_ok());
            }
        } else {
            for v in &other {
                b.save_doc(DocInput::from_value(v.clone()).unwrap(), &opts).unwrap();
            }
        }
        let (sa, sb) = (state(&a), state(&b));
        prop_assert_eq!(&sa, &sb);
        // Every leaf is readable and the counters agree.
        prop_assert!(!sa.0.iter().any(|l| l.starts_with("missing")));
        let (ia, ib) = (a.info().unwrap().stats, b.info().unwrap().stats);
        prop_assert_eq!((ia.docs_count, ia.deleted_count), (ib.docs_count, ib.deleted_count));
        prop_assert_eq!(ia.docs_count + ia.deleted_count, 1);
    }
}
