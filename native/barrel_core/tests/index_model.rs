//! Model test of the path index: for random documents, updates and deletes, every query answers
//! what a naive scan of the live documents answers, in the same order; `reindex` changes nothing.

use barrel_core::index::{normalize, PathPattern, Segment};
use barrel_core::{
    BarrelConfig, DocInput, FetchOptions, Query, SaveOptions, Select, Store, StoreOptions,
};
use proptest::prelude::*;
use serde_json::{json, Map, Number, Value};
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;

fn arb_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-5i64..5).prop_map(Value::from),
        (-10i64..10).prop_map(|i| Value::from(i as f64 / 2.0)),
        prop::sample::select(vec![
            "France", "france", "Fr", "creil", "Été", "été", "b", ""
        ])
        .prop_map(|s| Value::String(s.to_string())),
    ]
}

fn arb_body() -> impl Strategy<Value = Map<String, Value>> {
    (
        proptest::option::of(arb_scalar()),
        proptest::option::of(arb_scalar()),
        proptest::option::of(proptest::collection::vec(arb_scalar(), 0..4)),
        proptest::option::of(arb_scalar()),
    )
        .prop_map(|(a, b, tags, c)| {
            let mut m = Map::new();
            if let Some(a) = a {
                m.insert("a".into(), a);
            }
            if let Some(b) = b {
                m.insert("b".into(), b);
            }
            if let Some(tags) = tags {
                m.insert("tags".into(), Value::Array(tags));
            }
            if let Some(c) = c {
                m.insert("n".into(), json!({ "c": c }));
            }
            m
        })
}

#[derive(Clone, Debug)]
enum Op {
    Save(u8, Map<String, Value>),
    Delete(u8),
}

fn arb_ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(
        prop_oneof![
            4 => (0u8..8, arb_body()).prop_map(|(i, b)| Op::Save(i, b)),
            1 => (0u8..8).prop_map(Op::Delete),
        ],
        1..30,
    )
}

fn arb_path() -> impl Strategy<Value = Vec<PathPattern>> {
    let k = |s: &str| PathPattern::Seg(Segment::Key(s.into()));
    prop::sample::select(vec![
        vec![k("a")],
        vec![k("b")],
        vec![k("id")],
        vec![k("tags"), PathPattern::AnyIndex],
        vec![k("tags"), PathPattern::Seg(Segment::Index(1))],
        vec![k("n"), k("c")],
        vec![k("tags")],
    ])
}

fn arb_bound() -> impl Strategy<Value = Bound<Value>> {
    prop_oneof![
        Just(Bound::Unbounded),
        arb_scalar().prop_map(Bound::Included),
        arb_scalar().prop_map(Bound::Excluded),
    ]
}

fn arb_query() -> impl Strategy<Value = Query> {
    let select = prop_oneof![
        Just(Select::All),
        arb_scalar().prop_map(Select::Equal),
        prop::sample::select(vec!["f", "FR", "é", "", "c"])
            .prop_map(|p| Select::Prefix(p.to_string())),
        (arb_bound(), arb_bound()).prop_map(|(start, end)| Select::Range { start, end }),
    ];
    (arb_path(), select, any::<bool>()).prop_map(|(path, select, descending)| Query {
        path,
        select,
        descending,
        include_docs: false,
    })
}

// ---- The model: its own ordering, not the index encoding. ----

fn rank(v: &Value) -> u8 {
    match v {
        Value::Null => 0,
        Value::Bool(false) => 1,
        Value::Bool(true) => 2,
        Value::Number(_) => 3,
        _ => 4,
    }
}

fn num(n: &Number) -> f64 {
    n.as_f64().unwrap()
}

fn value_cmp(a: &Value, b: &Value) -> Ordering {
    rank(a).cmp(&rank(b)).then_with(|| match (a, b) {
        (Value::Number(x), Value::Number(y)) => num(x).partial_cmp(&num(y)).unwrap(),
        (Value::String(x), Value::String(y)) => normalize(x).cmp(&normalize(y)),
        _ => Ordering::Equal,
    })
}

fn seg_cmp(a: &Segment, b: &Segment) -> Ordering {
    match (a, b) {
        (Segment::Key(x), Segment::Key(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Segment::Index(x), Segment::Index(y)) => x.cmp(y),
        (Segment::Key(_), Segment::Index(_)) => Ordering::Less,
        (Segment::Index(_), Segment::Key(_)) => Ordering::Greater,
    }
}

fn path_cmp(a: &[Segment], b: &[Segment]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        let c = seg_cmp(x, y);
        if c != Ordering::Equal {
            return c;
        }
    }
    a.len().cmp(&b.len())
}

fn scalars(path: &mut Vec<Segment>, v: &Value, out: &mut Vec<(Vec<Segment>, Value)>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                path.push(Segment::Key(k.clone()));
                scalars(path, v, out);
                path.pop();
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                path.push(Segment::Index(i as u32));
                scalars(path, v, out);
                path.pop();
            }
        }
        s => out.push((path.clone(), s.clone())),
    }
}

fn matches_path(pattern: &[PathPattern], path: &[Segment]) -> bool {
    pattern.len() == path.len()
        && pattern.iter().zip(path).all(|(p, s)| match (p, s) {
            (PathPattern::AnyIndex, Segment::Index(_)) => true,
            (PathPattern::Seg(a), b) => a == b,
            _ => false,
        })
}

fn selected(select: &Select, v: &Value) -> bool {
    match select {
        Select::All => true,
        Select::Equal(e) => value_cmp(v, e) == Ordering::Equal,
        Select::Prefix(p) => match v {
            Value::String(s) => normalize(s).starts_with(&normalize(p)),
            _ => false,
        },
        Select::Range { start, end } => {
            let lo = match start {
                Bound::Unbounded => true,
                Bound::Included(s) => value_cmp(v, s) != Ordering::Less,
                Bound::Excluded(s) => value_cmp(v, s) == Ordering::Greater,
            };
            let hi = match end {
                Bound::Unbounded => true,
                Bound::Included(e) => value_cmp(v, e) != Ordering::Greater,
                Bound::Excluded(e) => value_cmp(v, e) == Ordering::Less,
            };
            lo && hi
        }
    }
}

fn naive(docs: &BTreeMap<String, Map<String, Value>>, q: &Query) -> Vec<(String, Value)> {
    let mut hits: Vec<(Vec<Segment>, Value, String)> = Vec::new();
    for (id, body) in docs {
        let mut all = vec![(vec![Segment::Key("id".into())], Value::String(id.clone()))];
        scalars(&mut Vec::new(), &Value::Object(body.clone()), &mut all);
        for (path, v) in all {
            if matches_path(&q.path, &path) && selected(&q.select, &v) {
                hits.push((path, v, id.clone()));
            }
        }
    }
    hits.sort_by(|a, b| {
        path_cmp(&a.0, &b.0)
            .then_with(|| value_cmp(&a.1, &b.1))
            .then_with(|| a.2.cmp(&b.2))
    });
    // Equal values may differ in case: the index keeps one (lowercased) entry per path.
    hits.dedup_by(|b, a| a.0 == b.0 && a.2 == b.2 && value_cmp(&a.1, &b.1) == Ordering::Equal);
    if q.descending {
        hits.reverse();
    }
    let mut seen = HashSet::new();
    hits.into_iter()
        .filter(|(_, _, id)| seen.insert(id.clone()))
        .map(|(_, v, id)| (id, v))
        .collect()
}

fn run(b: &barrel_core::Barrel, q: &Query) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    b.query(q, None, |row| {
        out.push((row.id, row.value));
        true
    })
    .unwrap();
    out
}

fn same(a: &[(String, Value)], b: &[(String, Value)]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.0 == y.0 && value_cmp(&x.1, &y.1) == Ordering::Equal)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    #[test]
    fn queries_equal_a_naive_scan(ops in arb_ops(), queries in proptest::collection::vec(arb_query(), 1..8)) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        store.create_barrel("m", BarrelConfig::default()).unwrap();
        let b = store.open_barrel("m").unwrap();
        let mut model: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Save(i, body) => {
                    let id = format!("doc{i}");
                    let mut doc = body.clone();
                    doc.insert("id".into(), json!(id));
                    if let Ok(cur) = b.fetch_doc(&id, &FetchOptions::default()) {
                        doc.insert("_rev".into(), cur["_rev"].clone());
                    }
                    b.save_doc(DocInput::from_map(doc).unwrap(), &SaveOptions::default()).unwrap();
                    model.insert(id, body);
                }
                Op::Delete(i) => {
                    let id = format!("doc{i}");
                    if let Ok(cur) = b.fetch_doc(&id, &FetchOptions::default()) {
                        let rev = barrel_core::Rev::parse(cur["_rev"].as_str().unwrap()).unwrap();
                        b.delete_doc(&id, rev).unwrap();
                        model.remove(&id);
                    }
                }
            }
        }
        let before: Vec<_> = queries.iter().map(|q| run(&b, q)).collect();
        for (q, got) in queries.iter().zip(&before) {
            let want = naive(&model, q);
            prop_assert!(same(got, &want), "query {:?}\ngot  {:?}\nwant {:?}", q, got, want);
        }
        prop_assert_eq!(b.reindex().unwrap(), model.len() as u64);
        let after: Vec<_> = queries.iter().map(|q| run(&b, q)).collect();
        prop_assert_eq!(before, after);
    }
}
