//! The HTTP and WebSocket API through real sockets, with a real client (ureq, tungstenite):
//! every route, the CouchDB replication surface, the live feeds, errors and authentication.

mod common;

use barrel_core::server::{self, Auth, Cors, ServerConfig};
use barrel_core::{Store, StoreOptions};
use common::{start, start_with, Server};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Status and JSON body of a request (any status).
fn call(method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    let req = ureq::request(method, url).timeout(Duration::from_secs(10));
    let resp = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    let resp = match resp {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap();
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, v)
}

fn get(url: &str) -> (u16, Value) {
    call("GET", url, None)
}

fn create(s: &Server, name: &str) -> String {
    let (st, v) = call("PUT", &format!("{}/barrels/{name}", s.base), None);
    assert_eq!(st, 201, "{v}");
    format!("{}/barrels/{name}", s.base)
}

#[test]
fn barrels_routes() {
    let s = start();
    assert_eq!(get(&s.base).0, 200);
    let (st, _) = call(
        "POST",
        &format!("{}/barrels/b1", s.base),
        Some(json!({"name": "b1", "params": {"revs_limit": 10}})),
    );
    assert_eq!(st, 201);
    let (st, _) = call(
        "POST",
        &format!("{}/barrels", s.base),
        Some(json!({"name": "b2"})),
    );
    assert_eq!(st, 201);
    let (st, v) = call("PUT", &format!("{}/barrels/b1", s.base), None);
    assert_eq!((st, v["error"].as_str()), (412, Some("file_exists")));
    assert_eq!(get(&format!("{}/barrels", s.base)).1, json!(["b1", "b2"]));
    let (st, bg) = get(&format!("{}/_store", s.base));
    assert_eq!(st, 200, "{bg}");
    let mut keys: Vec<&str> = bg.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "compaction_pending",
            "compactions_running",
            "flush_pending",
            "flushes_running",
            "idle",
            "index_queue",
            "memtable_bytes",
            "pending_compaction_bytes"
        ]
    );
    assert!(
        bg["idle"].is_boolean() && bg["index_queue"].is_u64(),
        "{bg}"
    );
    let (st, info) = get(&format!("{}/barrels/b1", s.base));
    assert_eq!(st, 200);
    assert_eq!(info["db_name"], json!("b1"));
    assert_eq!(info["revs_limit"], json!(10));
    assert_eq!(get(&format!("{}/barrels/b1/", s.base)).0, 200);
    let (st, v) = call("POST", &format!("{}/barrels/bad%20name", s.base), None);
    assert_eq!(
        (st, v["error"].as_str()),
        (400, Some("illegal_database_name"))
    );
    assert_eq!(
        call("DELETE", &format!("{}/barrels/b2", s.base), None).0,
        200
    );
    assert_eq!(get(&format!("{}/barrels/b2", s.base)).0, 404);
    assert_eq!(
        call("DELETE", &format!("{}/barrels/b2", s.base), None).0,
        404
    );
}

#[test]
fn barrel_docs_routes() {
    let s = start();
    let db = create(&s, "d");
    let (st, v) = call("PUT", &format!("{db}/docs/a"), Some(json!({"k": 1})));
    assert_eq!(st, 201, "{v}");
    let rev1 = v["rev"].as_str().unwrap().to_string();
    let (st, doc) = get(&format!("{db}/docs/a"));
    assert_eq!(st, 200);
    assert_eq!(doc, json!({"id": "a", "_rev": rev1, "k": 1}));
    // Update needs the rev; a stale one conflicts.
    let (st, v) = call("PUT", &format!("{db}/docs/a"), Some(json!({"k": 2})));
    assert_eq!((st, v["error"].as_str()), (409, Some("conflict")));
    let (st, v) = call(
        "PUT",
        &format!("{db}/docs/a?rev={rev1}"),
        Some(json!({"k": 2})),
    );
    assert_eq!(st, 201);
    let rev2 = v["rev"].as_str().unwrap().to_string();
    assert_eq!(get(&format!("{db}/docs/a?rev={rev1}")).0, 404);
    let (_, doc) = get(&format!("{db}/docs/a?revs=true"));
    assert_eq!(doc["_revisions"]["start"], json!(2));
    // POST makes an id.
    let (st, v) = call("POST", &format!("{db}/docs"), Some(json!({"x": true})));
    assert_eq!(st, 201);
    assert!(v["id"].as_str().is_some_and(|i| !i.is_empty()));
    let (_, all) = get(&format!("{db}/docs?include_docs=true"));
    assert_eq!(all["total_rows"], json!(2));
    assert_eq!(
        call("DELETE", &format!("{db}/docs/a?rev={rev2}"), None).0,
        200
    );
    assert_eq!(get(&format!("{db}/docs/a")).0, 404);
    // open_revs=all shows the tombstone.
    let (st, revs) = get(&format!("{db}/docs/a?open_revs=all"));
    assert_eq!(st, 200);
    assert_eq!(revs[0]["ok"]["_deleted"], json!(true));
}

#[test]
fn couch_surface_and_replication_calls() {
    let s = start();
    let db = create(&s, "c");
    let (st, v) = call("PUT", &format!("{db}/x"), Some(json!({"_id": "x", "v": 1})));
    assert_eq!(st, 201, "{v}");
    let rev = v["rev"].as_str().unwrap().to_string();
    let (_, doc) = get(&format!("{db}/x"));
    assert_eq!(doc["_id"], json!("x"));
    assert!(doc.get("id").is_none());
    // _bulk_docs with new_edits=false makes a conflict.
    let body = json!({"new_edits": false, "docs": [
        {"_id": "x", "_rev": "1-ffff", "v": 9},
        {"_id": "y", "_rev": "2-bbbb", "_revisions": {"start": 2, "ids": ["bbbb", "aaaa"]}, "v": 3},
        {"_id": "z", "_rev": "1-cccc", "_deleted": true}
    ]});
    let (st, v) = call("POST", &format!("{db}/_bulk_docs"), Some(body));
    assert_eq!((st, v), (201, json!([])));
    let (_, doc) = get(&format!("{db}/x?conflicts=true"));
    assert_eq!(doc["_rev"], json!("1-ffff"));
    assert_eq!(doc["_conflicts"], json!([rev]));
    // _revs_diff.
    let (_, d) = call(
        "POST",
        &format!("{db}/_revs_diff"),
        Some(json!({
        "x": ["1-ffff", "2-dddd"], "y": ["1-aaaa", "2-bbbb"], "new": ["1-eeee"]})),
    );
    assert_eq!(d["x"]["missing"], json!(["2-dddd"]));
    assert!(d.get("y").is_none());
    assert_eq!(d["new"]["missing"], json!(["1-eeee"]));
    // _bulk_get with revs.
    let (_, g) = call(
        "POST",
        &format!("{db}/_bulk_get?revs=true"),
        Some(json!({"docs": [
        {"id": "y", "rev": "2-bbbb"}, {"id": "nope", "rev": "1-aaaa"}]})),
    );
    assert_eq!(
        g["results"][0]["docs"][0]["ok"]["_revisions"],
        json!({"start": 2, "ids": ["bbbb", "aaaa"]})
    );
    assert_eq!(
        g["results"][1]["docs"][0]["error"]["error"],
        json!("not_found")
    );
    // latest: an old rev stands for its leaf.
    let (_, g) = call(
        "POST",
        &format!("{db}/_bulk_get?latest=true"),
        Some(json!({"docs": [{"id": "y", "rev": "1-aaaa"}]})),
    );
    assert_eq!(g["results"][0]["docs"][0]["ok"]["_rev"], json!("2-bbbb"));
    // _changes, style=all_docs, include_docs.
    let (_, ch) = get(&format!("{db}/_changes?style=all_docs&include_docs=true"));
    let results = ch["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(ch["last_seq"], json!(4));
    let x = results.iter().find(|r| r["id"] == "x").unwrap();
    assert_eq!(x["changes"].as_array().unwrap().len(), 2);
    assert_eq!(x["doc"]["_id"], json!("x"));
    let z = results.iter().find(|r| r["id"] == "z").unwrap();
    assert_eq!(z["deleted"], json!(true));
    let (_, ch) = get(&format!("{db}/_changes?since=3"));
    assert_eq!(ch["results"].as_array().unwrap().len(), 1);
    let (_, ch) = get(&format!(
        "{db}/_changes?filter=_doc_ids&doc_ids=%5B%22y%22%5D"
    ));
    assert_eq!(ch["results"][0]["id"], json!("y"));
    // _local checkpoints.
    assert_eq!(get(&format!("{db}/_local/cp")).0, 404);
    let (st, v) = call(
        "PUT",
        &format!("{db}/_local/cp"),
        Some(json!({"_id": "_local/cp", "last_seq": 4})),
    );
    assert_eq!((st, v["rev"].as_str()), (201, Some("0-1")));
    let (_, v) = call(
        "PUT",
        &format!("{db}/_local/cp"),
        Some(json!({"_rev": "0-1", "last_seq": 5})),
    );
    assert_eq!(v["rev"], json!("0-2"));
    let (_, cp) = get(&format!("{db}/_local/cp"));
    assert_eq!(
        (cp["last_seq"].clone(), cp["_id"].clone()),
        (json!(5), json!("_local/cp"))
    );
    // Local docs are not documents.
    let (_, all) = get(&format!("{db}/_all_docs"));
    assert_eq!(all["rows"].as_array().unwrap().len(), 2);
    assert_eq!(call("DELETE", &format!("{db}/_local/cp"), None).0, 200);
    let (st, _) = call(
        "POST",
        &format!("{db}/_ensure_full_commit"),
        Some(json!({})),
    );
    assert_eq!(st, 201);
    // _all_docs by keys.
    let (_, k) = call(
        "POST",
        &format!("{db}/_all_docs"),
        Some(json!({"keys": ["y", "missing"]})),
    );
    assert_eq!(k["rows"][0]["id"], json!("y"));
    assert_eq!(k["rows"][1]["error"], json!("not_found"));
    // Path queries.
    let (_, f) = get(&format!("{db}/_find?path=$/v&equal=3"));
    assert_eq!(f["docs"][0]["id"], json!("y"));
    let (_, f) = call(
        "POST",
        &format!("{db}/_find"),
        Some(json!({"query": "$/v/9"})),
    );
    assert_eq!(f["docs"][0]["id"], json!("x"));
}

#[test]
fn errors_are_json_with_the_right_status() {
    let s = start_with(|c| c.max_body = 1024);
    let db = create(&s, "e");
    let post_raw = |url: &str, ct: &str, body: &str| match ureq::post(url)
        .set("Content-Type", ct)
        .send_string(body)
    {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(c, r)) => (c, r.into_string().unwrap()),
        Err(e) => panic!("{e}"),
    };
    let (st, text) = post_raw(&format!("{db}/docs"), "application/json", "{not json");
    assert_eq!(st, 400);
    assert!(serde_json::from_str::<Value>(&text).unwrap()["reason"]
        .as_str()
        .unwrap()
        .contains("JSON"));
    let (st, _) = post_raw(&format!("{db}/docs"), "application/xml", "<a/>");
    assert_eq!(st, 415);
    let big = format!("{{\"x\": \"{}\"}}", "a".repeat(4096));
    let (st, text) = post_raw(&format!("{db}/docs"), "application/json", &big);
    assert_eq!(st, 413, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["error"],
        json!("too_large")
    );
    let (st, v) = get(&format!("{}/nowhere", s.base));
    assert_eq!((st, v["error"].as_str()), (404, Some("not_found")));
    let (st, v) = call("PATCH", &format!("{db}/docs/a"), Some(json!({})));
    assert_eq!((st, v["error"].as_str()), (405, Some("method_not_allowed")));
    let (st, v) = get(&format!("{db}/_changes?feed=sideways"));
    assert_eq!((st, v["error"].as_str()), (400, Some("query_parse_error")));
    let (st, v) = get(&format!("{db}/_changes?path=nope"));
    assert_eq!((st, v["error"].as_str()), (400, Some("bad_pattern")));
    let (st, _) = call("PUT", &format!("{db}/docs/_bad"), Some(json!({})));
    assert_eq!(st, 400);
    let (st, _) = call("PUT", &format!("{db}/docs/a"), Some(json!([1, 2])));
    assert_eq!(st, 400);
    let (st, _) = get(&format!("{}/barrels/nope/docs/a", s.base));
    assert_eq!(st, 404);
    // The server is still fine.
    assert_eq!(get(&format!("{db}/")).0, 200);
}

#[test]
fn longpoll_continuous_and_eventsource() {
    let s = start();
    let db = create(&s, "f");
    call("PUT", &format!("{db}/a"), Some(json!({})));
    // A longpoll with changes answers at once; one without waits for the next write.
    let (_, v) = get(&format!("{db}/_changes?feed=longpoll"));
    assert_eq!(v["results"].as_array().unwrap().len(), 1);
    let url = format!("{db}/_changes?feed=longpoll&since=1&timeout=5000");
    let waiter = std::thread::spawn(move || get(&url));
    std::thread::sleep(Duration::from_millis(200));
    call("PUT", &format!("{db}/b"), Some(json!({})));
    let (_, v) = waiter.join().unwrap();
    assert_eq!(v["results"][0]["id"], json!("b"));
    let (_, v) = get(&format!("{db}/_changes?feed=longpoll&since=2&timeout=100"));
    assert_eq!(
        (
            v["results"].as_array().unwrap().len(),
            v["last_seq"].clone()
        ),
        (0, json!(2))
    );
    // Continuous: lines for what is there, then live ones, heartbeats between.
    let resp = ureq::get(&format!(
        "{db}/_changes?feed=continuous&heartbeat=50&since=0&limit=3"
    ))
    .call()
    .unwrap();
    let db2 = db.clone();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        call("PUT", &format!("{db2}/c"), Some(json!({})));
    });
    let mut lines = Vec::new();
    let mut blank = 0;
    for line in BufReader::new(resp.into_reader()).lines() {
        let line = line.unwrap();
        if line.is_empty() {
            blank += 1;
            continue;
        }
        lines.push(serde_json::from_str::<Value>(&line).unwrap());
    }
    writer.join().unwrap();
    let ids: Vec<_> = lines.iter().filter_map(|l| l["id"].as_str()).collect();
    assert_eq!(ids, vec!["a", "b", "c"]);
    assert_eq!(lines.last().unwrap()["last_seq"], json!(3));
    assert!(blank >= 1, "heartbeats");
    // Eventsource.
    let resp = ureq::get(&format!("{db}/_changes?feed=eventsource&limit=2"))
        .call()
        .unwrap();
    assert_eq!(resp.header("Content-Type"), Some("text/event-stream"));
    let mut text = String::new();
    resp.into_reader().read_to_string(&mut text).unwrap();
    assert!(text.starts_with("data: {"), "{text}");
    assert!(text.contains("\nid: 2\n"), "{text}");
}

#[test]
fn websocket_stream() {
    let s = start();
    let db = create(&s, "w");
    call("PUT", &format!("{db}/a"), Some(json!({"n": 1})));
    let ws_url = db.replace("http://", "ws://") + "/_ws";
    let (mut ws, _) = tungstenite::connect(&ws_url).unwrap();
    let mut send = |v: Value| {
        ws.send(tungstenite::Message::Text(v.to_string().into()))
            .unwrap()
    };
    send(json!({"type": "revs_diff", "id": 1, "revs": {"a": ["1-abcd"]}}));
    send(json!({"type": "bulk_docs", "id": 2, "new_edits": false,
                "docs": [{"_id": "r", "_rev": "1-abcd", "x": 1}]}));
    send(json!({"type": "changes", "id": 3, "since": 0, "live": true, "include_docs": true}));
    send(json!({"type": "nonsense", "id": 4}));
    send(json!({"type": "put_local", "id": 5, "doc_id": "cp", "doc": {"seq": 3}}));
    send(json!({"type": "get_local", "id": 6, "doc_id": "cp"}));
    send(json!({"type": "bulk_get", "id": 7, "revs": true,
                "docs": [{"id": "r", "rev": "1-abcd"}, {"id": "nope", "rev": "1-abcd"}]}));
    let mut got = Vec::new();
    let mut next = || -> Value {
        loop {
            match ws.read().unwrap() {
                tungstenite::Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
                _ => continue,
            }
        }
    };
    while got.len() < 7 {
        got.push(next());
    }
    let by_id = |i: i64| {
        got.iter()
            .find(|m| m["id"] == json!(i) && m["type"] != "changes")
            .cloned()
    };
    assert_eq!(
        by_id(1).unwrap()["result"]["a"]["missing"],
        json!(["1-abcd"])
    );
    assert_eq!(by_id(2).unwrap()["result"], json!([]));
    assert_eq!(by_id(4).unwrap()["type"], json!("error"));
    assert_eq!(
        by_id(5).unwrap(),
        json!({"type": "put_local", "id": 5, "rev": "0-1"})
    );
    assert_eq!(
        by_id(6).unwrap(),
        json!({"type": "get_local", "id": 6, "doc": {"seq": 3, "_rev": "0-1"}})
    );
    let bulk = by_id(7).unwrap();
    assert_eq!(bulk["type"], json!("bulk_get"));
    let results = bulk["result"]["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    let ok = &results[0]["docs"][0]["ok"];
    assert_eq!(
        (&ok["_id"], &ok["_rev"], &ok["x"]),
        (&json!("r"), &json!("1-abcd"), &json!(1))
    );
    assert_eq!(ok["_revisions"], json!({"start": 1, "ids": ["abcd"]}));
    assert_eq!(results[1]["id"], json!("nope"));
    assert!(results[1]["docs"][0].get("error").is_some(), "{bulk}");
    let first = got.iter().find(|m| m["type"] == "changes").unwrap();
    assert!(!first["results"].as_array().unwrap().is_empty());
    // Live: a write shows up on the socket.
    call("PUT", &format!("{db}/live"), Some(json!({})));
    let mut seen = false;
    for _ in 0..5 {
        let m = next();
        if m["type"] == "changes"
            && m["results"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["id"] == "live")
        {
            seen = true;
            break;
        }
    }
    assert!(seen);
}

#[test]
fn authentication_and_binding_rules() {
    // Not loopback without credentials: refused.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    let shared = store.clone();
    let r = server::start(
        Arc::new(move || Ok(shared.clone())),
        ServerConfig {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            ..Default::default()
        },
    );
    assert!(matches!(r, Err(barrel_core::Error::BadParam(_))));
    drop(store);

    let s = start_with(|c| {
        c.auth = Auth {
            basic: vec![("admin".into(), "secret".into())],
            bearer: vec!["tok".into()],
        };
        c.cors = Some(Cors::Origins(vec!["http://app.example".into()]));
    });
    let (st, v) = get(&format!("{}/barrels", s.base));
    assert_eq!((st, v["error"].as_str()), (401, Some("unauthorized")));
    let ok = ureq::get(&format!("{}/barrels", s.base))
        .set("Authorization", "Basic YWRtaW46c2VjcmV0")
        .call()
        .unwrap();
    assert_eq!(ok.status(), 200);
    let ok = ureq::get(&format!("{}/barrels", s.base))
        .set("Authorization", "Bearer tok")
        .call()
        .unwrap();
    assert_eq!(ok.status(), 200);
    let bad = ureq::get(&format!("{}/barrels", s.base))
        .set("Authorization", "Bearer nope")
        .call();
    assert!(matches!(bad, Err(ureq::Error::Status(401, _))));
    // CORS preflight, without credentials.
    let pre = ureq::request("OPTIONS", &format!("{}/barrels", s.base))
        .set("Origin", "http://app.example")
        .set("Access-Control-Request-Method", "GET")
        .call()
        .unwrap();
    assert_eq!(
        pre.header("access-control-allow-origin"),
        Some("http://app.example")
    );
}
