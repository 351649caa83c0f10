//! Path queries as a Rust user sees them.

use barrel_core::index::{parse_path, parse_path_and_value};
use barrel_core::{
    BarrelConfig, DocInput, Query, QueryRow, SaveOptions, Select, Store, StoreOptions,
};
use serde_json::json;
use std::ops::Bound;

fn setup() -> (
    tempfile::TempDir,
    std::sync::Arc<Store>,
    barrel_core::Barrel,
) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    store.create_barrel("q", BarrelConfig::default()).unwrap();
    let b = store.open_barrel("q").unwrap();
    for doc in [
        json!({"id": "acme", "locations": [{"country": "France", "city": "creil"}], "headquarter": "France", "age": 12}),
        json!({"id": "bolt", "locations": [{"country": "Spain"}, {"country": "FRANCE"}], "headquarter": "Spain", "age": 7.5}),
        json!({"id": "core", "locations": [], "headquarter": null, "age": 40}),
    ] {
        b.save_doc(DocInput::from_value(doc).unwrap(), &SaveOptions::default())
            .unwrap();
    }
    (dir, store, b)
}

fn q(path: &str, select: Select) -> Query {
    Query {
        path: parse_path(path).unwrap(),
        select,
        descending: false,
        include_docs: false,
    }
}

fn ids(b: &barrel_core::Barrel, query: &Query) -> Vec<String> {
    let mut out = Vec::new();
    b.query(query, None, |r: QueryRow| {
        out.push(r.id);
        true
    })
    .unwrap();
    out
}

#[test]
fn talk_style_equality_is_case_insensitive() {
    let (_d, _s, b) = setup();
    let (path, value) = parse_path_and_value("$/headquarter/france").unwrap();
    let query = Query {
        path,
        select: Select::Equal(value),
        descending: false,
        include_docs: true,
    };
    let mut rows = Vec::new();
    b.query(&query, None, |r| {
        rows.push(r);
        true
    })
    .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].id, "acme");
    assert_eq!(rows[0].value, json!("france"));
    // The document keeps its original value.
    assert_eq!(
        rows[0].doc.as_ref().unwrap()["headquarter"],
        json!("France")
    );
    assert_eq!(
        ids(
            &b,
            &q("$/locations/0/country", Select::Equal(json!("france")))
        ),
        ["acme"]
    );
}

#[test]
fn wildcard_finds_any_array_position_once() {
    let (_d, _s, b) = setup();
    assert_eq!(
        ids(
            &b,
            &q("$/locations/*/country", Select::Equal(json!("France")))
        ),
        ["acme", "bolt"]
    );
    assert_eq!(
        ids(&b, &q("$/locations/*/country", Select::All)),
        ["acme", "bolt"]
    );
}

#[test]
fn ranges_order_numbers_numerically_across_ints_and_floats() {
    let (_d, _s, b) = setup();
    assert_eq!(ids(&b, &q("$/age", Select::All)), ["bolt", "acme", "core"]);
    let between = Select::Range {
        start: Bound::Excluded(json!(7.5)),
        end: Bound::Included(json!(40)),
    };
    assert_eq!(ids(&b, &q("$/age", between)), ["acme", "core"]);
    let mut desc = q("$/age", Select::All);
    desc.descending = true;
    assert_eq!(ids(&b, &desc), ["core", "acme", "bolt"]);
    // null sorts before strings.
    assert_eq!(
        ids(&b, &q("$/headquarter", Select::All)),
        ["core", "acme", "bolt"]
    );
}

#[test]
fn prefix_and_limit() {
    let (_d, _s, b) = setup();
    assert_eq!(
        ids(&b, &q("$/headquarter", Select::Prefix("SP".into()))),
        ["bolt"]
    );
    let mut n = Vec::new();
    b.query(&q("$/id", Select::All), Some(2), |r| {
        n.push(r.id);
        true
    })
    .unwrap();
    assert_eq!(n, ["acme", "bolt"]);
}

#[test]
fn updates_and_deletes_move_entries() {
    let (_d, _s, b) = setup();
    let cur = b
        .fetch_doc("acme", &barrel_core::FetchOptions::default())
        .unwrap();
    let mut doc = cur.clone();
    doc.insert("headquarter".into(), json!("Italy"));
    let (_, rev) = b
        .save_doc(DocInput::from_map(doc).unwrap(), &SaveOptions::default())
        .unwrap();
    assert!(ids(&b, &q("$/headquarter", Select::Equal(json!("france")))).is_empty());
    assert_eq!(
        ids(&b, &q("$/headquarter", Select::Equal(json!("italy")))),
        ["acme"]
    );
    b.delete_doc("acme", rev).unwrap();
    assert!(ids(&b, &q("$/headquarter", Select::Equal(json!("italy")))).is_empty());
    assert_eq!(ids(&b, &q("$/id", Select::All)), ["bolt", "core"]);
}

#[test]
fn a_cursor_reads_one_snapshot() {
    let (_d, _s, b) = setup();
    let mut cursor = b.query_cursor(&q("$/id", Select::All)).unwrap();
    let first = cursor.next_chunk(1).unwrap();
    assert_eq!(first[0].id, "acme");
    // A write after the cursor opened is not seen by it.
    b.save_doc(
        DocInput::from_value(json!({"id": "b-new"})).unwrap(),
        &SaveOptions::default(),
    )
    .unwrap();
    let rest: Vec<String> = cursor
        .next_chunk(10)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(rest, ["bolt", "core"]);
    assert!(cursor.next_chunk(10).unwrap().is_empty());
}

#[test]
fn non_scalar_query_values_are_bad_queries() {
    let (_d, _s, b) = setup();
    assert!(matches!(
        b.query_cursor(&q("$/age", Select::Equal(json!([1])))),
        Err(barrel_core::Error::BadQuery(_))
    ));
}
