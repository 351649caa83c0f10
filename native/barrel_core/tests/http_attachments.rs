//! Attachments over HTTP through real sockets, with a real client (ureq): the attachment routes
//! of both surfaces (streamed uploads and downloads, ranges, checks, limits), attachment data in
//! document reads (`attachments=true`, `atts_since`, `_bulk_get`, `open_revs`), and CouchDB's
//! multipart forms (`open_revs` and `_bulk_get` as multipart/mixed, a document as
//! multipart/related, `PUT` as multipart/related with plain or gzip-encoded parts).

mod common;

use base64::Engine;
use common::{start, start_with, Server};
use md5::{Digest, Md5};
use serde_json::{json, Value};
use std::io::Read;
use std::time::Duration;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A barrel named `name`; its URL.
fn create(s: &Server, name: &str) -> String {
    let r = request("PUT", &format!("{}/barrels/{name}", s.base), &[], None);
    assert_eq!(r.status, 201, "{}", r.text());
    format!("{}/barrels/{name}", s.base)
}

/// A whole answer: status, headers, body.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .redirects(0)
        .build()
}

fn reply(r: Result<ureq::Response, ureq::Error>) -> Reply {
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{e}"),
    };
    let status = resp.status();
    let headers = resp
        .headers_names()
        .into_iter()
        .map(|n| {
            let v = resp.header(&n).unwrap_or_default().to_string();
            (n, v)
        })
        .collect();
    let mut body = Vec::new();
    resp.into_reader().read_to_end(&mut body).unwrap();
    Reply {
        status,
        headers,
        body,
    }
}

fn request(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Reply {
    let mut req = agent().request(method, url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    reply(match body {
        Some(b) => req.send_bytes(b),
        None => req.call(),
    })
}

fn get(url: &str) -> Reply {
    request("GET", url, &[], None)
}

fn send_json(method: &str, url: &str, v: Value) -> Reply {
    let body = v.to_string();
    request(
        method,
        url,
        &[("Content-Type", "application/json")],
        Some(body.as_bytes()),
    )
}

/// Uploads `data` as attachment `att` of `doc` (`rev` when given); the new revision.
fn put_att(url: &str, doc: &str, att: &str, rev: Option<&str>, ct: &str, data: &[u8]) -> String {
    let rev = rev.map(|r| format!("?rev={r}")).unwrap_or_default();
    let r = request(
        "PUT",
        &format!("{url}/{doc}/{att}{rev}"),
        &[("Content-Type", ct)],
        Some(data),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    assert_eq!(
        (v["ok"].clone(), v["id"].clone()),
        (json!(true), json!(doc))
    );
    v["rev"].as_str().unwrap().to_string()
}

fn md5_b64(data: &[u8]) -> String {
    B64.encode(Md5::digest(data))
}

fn digest(data: &[u8]) -> String {
    format!("md5-{}", md5_b64(data))
}

/// Bytes that compress badly and repeat never within a test: xorshift noise.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut n = Noise {
        state: seed,
        left: len as u64,
    };
    let mut out = Vec::with_capacity(len);
    n.read_to_end(&mut out).unwrap();
    out
}

/// A reader of `left` bytes of xorshift noise: a large upload that never sits in memory.
struct Noise {
    state: u64,
    left: u64,
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        for b in &mut buf[..n] {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            *b = (self.state >> 24) as u8;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// The `boundary` of a multipart Content-Type.
fn boundary(ct: &str) -> String {
    let b = ct.split("boundary=").nth(1).expect("a boundary");
    b.split(';')
        .next()
        .unwrap()
        .trim()
        .trim_matches('"')
        .to_string()
}

/// One part of a multipart body: its headers (names lowercased) and its body.
type Part = (Vec<(String, String)>, Vec<u8>);

/// The parts of a multipart body, whole.
fn parts(body: &[u8], boundary: &str) -> Vec<Part> {
    fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
        hay.windows(needle.len()).position(|w| w == needle)
    }
    let open = format!("--{boundary}");
    let delim = format!("\r\n--{boundary}");
    let mut rest = &body[find(body, open.as_bytes()).expect("opening boundary") + open.len()..];
    let mut out = Vec::new();
    while !rest.starts_with(b"--") {
        rest = rest.strip_prefix(b"\r\n").expect("CRLF after a boundary");
        let end = find(rest, delim.as_bytes()).expect("closing boundary");
        let part = &rest[..end];
        let (head, data) = if let Some(p) = part.strip_prefix(b"\r\n") {
            (&b""[..], p)
        } else {
            let i = find(part, b"\r\n\r\n").expect("end of part headers");
            (&part[..i], &part[i + 4..])
        };
        let headers = String::from_utf8_lossy(head)
            .split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        out.push((headers, data.to_vec()));
        rest = &rest[end + delim.len()..];
    }
    out
}

fn part_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn put_get_delete_on_both_surfaces() {
    let s = start();
    let db = create(&s, "a");
    let docs = format!("{db}/docs");
    // Barrel's surface: a new document made of one attachment.
    let r1 = put_att(&docs, "d", "hello.txt", None, "text/plain", b"hello");
    assert!(r1.starts_with("1-"));
    let r = get(&format!("{docs}/d/hello.txt"));
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hello");
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("content-length"), Some("5"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert_eq!(
        r.header("etag"),
        Some(format!("\"{}\"", md5_b64(b"hello")).as_str())
    );
    assert_eq!(r.header("content-md5"), Some(md5_b64(b"hello").as_str()));
    // The stub, on both surfaces.
    let stub = json!({"content_type": "text/plain", "digest": digest(b"hello"), "length": 5,
                      "revpos": 1, "stub": true});
    assert_eq!(
        get(&format!("{docs}/d")).json()["_attachments"]["hello.txt"],
        stub
    );
    assert_eq!(
        get(&format!("{db}/d")).json()["_attachments"]["hello.txt"],
        stub
    );
    // CouchDB's surface: a second attachment, a name with a slash, no Content-Type.
    let r2 = put_att(
        &db,
        "d",
        "dir/data.bin",
        Some(&r1),
        "application/x-thing",
        &[0, 1, 2, 255],
    );
    let r = get(&format!("{db}/d/dir/data.bin"));
    assert_eq!((r.status, r.body.as_slice()), (200, &[0u8, 1, 2, 255][..]));
    assert_eq!(r.header("content-type"), Some("application/x-thing"));
    assert_eq!(get(&format!("{docs}/d/hello.txt?rev={r2}")).body, b"hello");
    let r = request("PUT", &format!("{db}/d/raw?rev={r2}"), &[], Some(b"x"));
    assert_eq!(r.status, 201);
    let r3 = r.json()["rev"].as_str().unwrap().to_string();
    assert_eq!(
        get(&format!("{db}/d/raw")).header("content-type"),
        Some("application/octet-stream")
    );
    // Conflicts: a stale rev, or no rev on a live document.
    let r = request("PUT", &format!("{db}/d/x?rev={r1}"), &[], Some(b"x"));
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (409, json!("conflict"))
    );
    assert_eq!(
        request("PUT", &format!("{db}/d/x"), &[], Some(b"x")).status,
        409
    );
    // Names: none starting with `_`.
    let r = request("PUT", &format!("{db}/d/_bad?rev={r3}"), &[], Some(b"x"));
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("bad_attachment"))
    );
    // Nor document ids starting with `_` (refused before the body is read).
    let r = request("PUT", &format!("{db}/_bad/x"), &[], Some(&noise(5000, 1)));
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("illegal_docid"))
    );
    // Missing things are 404.
    assert_eq!(get(&format!("{db}/d/nope")).status, 404);
    assert_eq!(get(&format!("{db}/nodoc/nope")).status, 404);
    assert_eq!(get(&format!("{}/barrels/nobarrel/d/x", s.base)).status, 404);
    // Delete: a rev is needed (query or If-Match); 200 with the new rev.
    assert_eq!(
        request("DELETE", &format!("{db}/d/hello.txt"), &[], None).status,
        409
    );
    let r = request(
        "DELETE",
        &format!("{docs}/d/hello.txt"),
        &[("If-Match", &format!("\"{r3}\""))],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r4 = r.json()["rev"].as_str().unwrap().to_string();
    assert!(r4.starts_with("4-"));
    assert_eq!(get(&format!("{db}/d/hello.txt")).status, 404);
    let r = request("DELETE", &format!("{db}/d/hello.txt?rev={r4}"), &[], None);
    assert_eq!(r.status, 404);
    let doc = get(&format!("{db}/d")).json();
    assert_eq!(
        doc["_attachments"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["dir/data.bin", "raw"]
    );
    // The other attachments kept their revpos.
    assert_eq!(doc["_attachments"]["dir/data.bin"]["revpos"], json!(2));
}

#[test]
fn head_ranges_and_conditional_reads() {
    let s = start();
    let db = create(&s, "r");
    let data = noise(1000, 7);
    put_att(&db, "d", "n.bin", None, "application/octet-stream", &data);
    let url = format!("{db}/d/n.bin");
    let r = request("HEAD", &url, &[], None);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("1000"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert!(r.body.is_empty());
    let range = |h: &str| request("GET", &url, &[("Range", h)], None);
    let r = range("bytes=0-9");
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &data[..10]);
    assert_eq!(r.header("content-range"), Some("bytes 0-9/1000"));
    assert_eq!(r.header("content-length"), Some("10"));
    let r = range("bytes=990-");
    assert_eq!((r.status, r.body.as_slice()), (206, &data[990..]));
    assert_eq!(r.header("content-range"), Some("bytes 990-999/1000"));
    let r = range("bytes=-5");
    assert_eq!((r.status, r.body.as_slice()), (206, &data[995..]));
    let r = range("bytes=500-5000");
    assert_eq!((r.status, r.body.as_slice()), (206, &data[500..]));
    assert_eq!(r.header("content-range"), Some("bytes 500-999/1000"));
    let r = range("bytes=1000-");
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */1000"));
    assert_eq!(r.json()["error"], json!("requested_range_not_satisfiable"));
    // Ranges it does not serve are ignored: the whole content.
    for h in ["bytes=9-3", "bytes=0-1,5-6", "lines=1-2"] {
        let r = range(h);
        assert_eq!((r.status, r.body.len()), (200, 1000), "{h}");
    }
    // A chunk boundary inside the range (chunks are 128 KiB).
    let big = noise(300 * 1024, 8);
    put_att(&db, "big", "b", None, "application/octet-stream", &big);
    let r = request(
        "GET",
        &format!("{db}/big/b"),
        &[("Range", "bytes=131000-263000")],
        None,
    );
    assert_eq!((r.status, r.body.as_slice()), (206, &big[131000..263001]));
    // HEAD with a range, and If-None-Match.
    let r = request("HEAD", &url, &[("Range", "bytes=10-19")], None);
    assert_eq!((r.status, r.header("content-length")), (206, Some("10")));
    let etag = get(&url).header("etag").unwrap().to_string();
    let r = request("GET", &url, &[("If-None-Match", &etag)], None);
    assert_eq!((r.status, r.body.len()), (304, 0));
    let r = request("GET", &url, &[("If-None-Match", "\"other\"")], None);
    assert_eq!(r.status, 200);
}

#[test]
fn content_md5_and_length_mismatches_write_nothing() {
    let s = start();
    let db = create(&s, "m");
    let r1 = put_att(&db, "d", "a.txt", None, "text/plain", b"first");
    let url = format!("{db}/d/a.txt?rev={r1}");
    let r = request(
        "PUT",
        &url,
        &[("Content-MD5", &md5_b64(b"other"))],
        Some(b"second"),
    );
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("bad_attachment"))
    );
    let r = request(
        "PUT",
        &url,
        &[("Content-MD5", "not base64!")],
        Some(b"second"),
    );
    assert_eq!(r.status, 400);
    // The document and its attachment are as they were.
    let doc = get(&format!("{db}/d")).json();
    assert_eq!(doc["_rev"], json!(r1));
    assert_eq!(get(&format!("{db}/d/a.txt")).body, b"first");
    let r = request(
        "PUT",
        &url,
        &[("Content-MD5", &md5_b64(b"second"))],
        Some(b"second"),
    );
    assert_eq!(r.status, 201);
    assert_eq!(get(&format!("{db}/d/a.txt")).body, b"second");
}

#[test]
fn uploads_over_the_limit_get_413() {
    let s = start_with(|c| c.max_attachment_size = 1000);
    let db = create(&s, "l");
    let r1 = put_att(&db, "d", "ok", None, "text/plain", &noise(1000, 1));
    // Announced too large (Content-Length), and found too large while streaming (chunked).
    let r = request(
        "PUT",
        &format!("{db}/d/big?rev={r1}"),
        &[],
        Some(&noise(1001, 2)),
    );
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (413, json!("attachment_too_large"))
    );
    let r = reply(agent().put(&format!("{db}/d/big?rev={r1}")).send(Noise {
        state: 3,
        left: 5000,
    }));
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (413, json!("attachment_too_large"))
    );
    assert_eq!(get(&format!("{db}/d")).json()["_rev"], json!(r1));
    assert_eq!(get(&format!("{db}/d/big")).status, 404);
    // The limit is for attachments: the JSON routes keep theirs.
    let r = send_json("PUT", &format!("{db}/j"), json!({"text": "x".repeat(5000)}));
    assert_eq!(r.status, 201);
}

#[test]
fn stubs_keep_attachments_and_inline_data_writes_them() {
    let s = start();
    let db = create(&s, "s");
    let r1 = put_att(&db, "d", "a.txt", None, "text/plain", b"kept");
    // A JSON update with a bare stub keeps the attachment (revpos stays 1).
    let r = send_json(
        "PUT",
        &format!("{db}/d"),
        json!({"_rev": r1, "v": 2, "_attachments": {"a.txt": {"stub": true}}}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let doc = get(&format!("{db}/d")).json();
    assert_eq!(doc["v"], json!(2));
    assert_eq!(doc["_attachments"]["a.txt"]["revpos"], json!(1));
    assert_eq!(
        doc["_attachments"]["a.txt"]["digest"],
        json!(digest(b"kept"))
    );
    assert_eq!(get(&format!("{db}/d/a.txt")).body, b"kept");
    // Saving the fetched document back keeps it too; leaving it out removes it.
    let mut doc2 = doc.clone();
    doc2["v"] = json!(3);
    assert_eq!(send_json("PUT", &format!("{db}/d"), doc2).status, 201);
    let doc = get(&format!("{db}/d")).json();
    assert_eq!(get(&format!("{db}/d/a.txt")).body, b"kept");
    let r = send_json(
        "PUT",
        &format!("{db}/d"),
        json!({"_rev": doc["_rev"], "v": 4}),
    );
    assert_eq!(r.status, 201);
    assert_eq!(get(&format!("{db}/d/a.txt")).status, 404);
    // Inline base64 data; a stub the barrel cannot complete is 412.
    let r = send_json(
        "PUT",
        &format!("{db}/e"),
        json!({"_attachments": {"b.bin": {"content_type": "image/png", "data": B64.encode([9u8, 8, 7])}}}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = get(&format!("{db}/e/b.bin"));
    assert_eq!(
        (r.body.as_slice(), r.header("content-type")),
        (&[9u8, 8, 7][..], Some("image/png"))
    );
    let r = send_json(
        "PUT",
        &format!("{db}/f"),
        json!({"_attachments": {"x": {"stub": true}}}),
    );
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (412, json!("missing_stub"))
    );
}

#[test]
fn bulk_docs_with_base64_and_new_edits_false() {
    let s = start();
    let db = create(&s, "b");
    let png = noise(3000, 11);
    let body = json!({"new_edits": false, "docs": [{
        "_id": "r", "_rev": "2-bbbb", "_revisions": {"start": 2, "ids": ["bbbb", "aaaa"]},
        "_attachments": {
            "p.png": {"content_type": "image/png", "revpos": 1, "digest": digest(&png),
                      "data": B64.encode(&png)},
            "t.txt": {"content_type": "text/plain", "revpos": 2, "data": B64.encode("text")}
        }
    }]});
    let r = send_json("POST", &format!("{db}/_bulk_docs"), body);
    assert_eq!((r.status, r.json()), (201, json!([])));
    assert_eq!(get(&format!("{db}/r/p.png")).body, png);
    assert_eq!(get(&format!("{db}/r/t.txt")).body, b"text");
    let doc = get(&format!("{db}/r")).json();
    assert_eq!(doc["_attachments"]["p.png"]["revpos"], json!(1));
    assert_eq!(doc["_attachments"]["t.txt"]["revpos"], json!(2));
    // A replicated child revision with stubs (digest and revpos) keeps the contents; the one
    // it drops is gone from the new winner.
    let body = json!({"new_edits": false, "docs": [{
        "_id": "r", "_rev": "3-cccc", "_revisions": {"start": 3, "ids": ["cccc", "bbbb", "aaaa"]},
        "_attachments": {"p.png": {"content_type": "image/png", "revpos": 1,
                                   "digest": digest(&png), "length": 3000, "stub": true}}
    }]});
    let r = send_json("POST", &format!("{db}/_bulk_docs"), body);
    assert_eq!((r.status, r.json()), (201, json!([])));
    assert_eq!(get(&format!("{db}/r/p.png")).body, png);
    assert_eq!(get(&format!("{db}/r/t.txt")).status, 404);
    // Errors are per document: a wrong digest, a stub of content the barrel lacks.
    let body = json!({"new_edits": false, "docs": [
        {"_id": "bad", "_rev": "1-dddd",
         "_attachments": {"x": {"data": B64.encode("abc"), "digest": digest(b"abd")}}},
        {"_id": "stub", "_rev": "1-eeee",
         "_attachments": {"y": {"stub": true, "digest": digest(b"nowhere"), "revpos": 1}}}
    ]});
    let r = send_json("POST", &format!("{db}/_bulk_docs"), body);
    let v = r.json();
    assert_eq!(v[0]["id"], json!("bad"));
    assert_eq!(v[1]["id"], json!("stub"));
    assert_eq!(v[1]["error"], json!("missing_stub"));
    assert_eq!(get(&format!("{db}/bad")).status, 404);
    assert_eq!(get(&format!("{db}/stub")).status, 404);
}

/// A document with `a.txt` (revpos 1), then `b.txt` (revpos 2), then a plain edit (rev 3).
fn three_revisions(db: &str) -> [String; 3] {
    let r1 = put_att(db, "d", "a.txt", None, "text/plain", b"alpha");
    let r2 = put_att(db, "d", "b.txt", Some(&r1), "text/plain", b"beta");
    let mut doc = get(&format!("{db}/d")).json();
    doc["edited"] = json!(true);
    let r3 = send_json("PUT", &format!("{db}/d"), doc).json()["rev"]
        .as_str()
        .unwrap()
        .to_string();
    [r1, r2, r3]
}

/// `{name: data (decoded) or "stub"}` of a JSON document's attachments.
fn inline(doc: &Value) -> Value {
    let atts = doc["_attachments"].as_object().unwrap();
    Value::Object(
        atts.iter()
            .map(|(k, a)| {
                let v = match a.get("data").and_then(Value::as_str) {
                    Some(d) => json!(String::from_utf8(B64.decode(d).unwrap()).unwrap()),
                    None => {
                        assert_eq!(a["stub"], json!(true));
                        json!("stub")
                    }
                };
                (k.clone(), v)
            })
            .collect(),
    )
}

#[test]
fn attachments_and_atts_since_in_fetches_bulk_get_and_open_revs() {
    let s = start();
    let db = create(&s, "g");
    let [r1, r2, r3] = three_revisions(&db);
    let q = |query: &str| get(&format!("{db}/d?{query}")).json();
    let all = json!({"a.txt": "alpha", "b.txt": "beta"});
    assert_eq!(inline(&q("attachments=true")), all);
    assert_eq!(inline(&q("")), json!({"a.txt": "stub", "b.txt": "stub"}));
    let since = |revs: &[&str]| format!("atts_since={}", json!(revs));
    // Only what changed after the newest revision the client has.
    assert_eq!(
        inline(&q(&since(&[&r1]))),
        json!({"a.txt": "stub", "b.txt": "beta"})
    );
    assert_eq!(
        inline(&q(&since(&[&r2, &r1]))),
        json!({"a.txt": "stub", "b.txt": "stub"})
    );
    assert_eq!(inline(&q(&since(&["9-ffff"]))), all);
    // _revisions only when asked for, though atts_since needs the history.
    assert!(q(&since(&[&r1])).get("_revisions").is_none());
    assert_eq!(
        q(&format!("revs=true&{}", since(&[&r1])))["_revisions"]["start"],
        json!(3)
    );
    // _bulk_get: attachments=true in the query, atts_since per document.
    let body = json!({"docs": [{"id": "d", "rev": r3}, {"id": "d", "rev": r3, "atts_since": [r2]},
                               {"id": "d", "atts_since": [r1]}]});
    let v = send_json(
        "POST",
        &format!("{db}/_bulk_get?attachments=true"),
        body.clone(),
    )
    .json();
    let got: Vec<Value> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| inline(&r["docs"][0]["ok"]))
        .collect();
    assert_eq!(
        got,
        [
            all.clone(),
            json!({"a.txt": "stub", "b.txt": "stub"}),
            json!({"a.txt": "stub", "b.txt": "beta"})
        ]
    );
    assert!(v["results"][1]["docs"][0]["ok"].get("_revisions").is_none());
    let v = send_json(
        "POST",
        &format!("{db}/_bulk_get"),
        json!({"docs": [{"id": "d"}]}),
    )
    .json();
    assert_eq!(
        inline(&v["results"][0]["docs"][0]["ok"]),
        json!({"a.txt": "stub", "b.txt": "stub"})
    );
    // open_revs, JSON form.
    let v = q(&format!("open_revs=all&attachments=true&{}", since(&[&r1])));
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(
        inline(&v[0]["ok"]),
        json!({"a.txt": "stub", "b.txt": "beta"})
    );
    let v = q(&format!(
        "open_revs={}&attachments=true",
        json!([r3, "9-ffff"])
    ));
    assert_eq!(inline(&v[0]["ok"]), all);
    assert_eq!(v[1]["missing"], json!("9-ffff"));
}

#[test]
fn open_revs_as_multipart_mixed() {
    let s = start();
    let db = create(&s, "mm");
    let [r1, _, r3] = three_revisions(&db);
    // A conflicting branch with no attachments, and one whose attachment is binary.
    let bin = noise(200_000, 5);
    let body = json!({"new_edits": false, "docs": [
        {"_id": "d", "_rev": "2-ffff", "_revisions": {"start": 2, "ids": ["ffff", &r1[2..]]}, "side": 1},
        {"_id": "d", "_rev": "3-eeee", "_revisions": {"start": 3, "ids": ["eeee", "dddd", &r1[2..]]},
         "_attachments": {"bin": {"content_type": "application/octet-stream", "revpos": 3,
                                  "data": B64.encode(&bin)}}}
    ]});
    assert_eq!(
        send_json("POST", &format!("{db}/_bulk_docs"), body).status,
        201
    );
    let revs = json!([r3, "2-ffff", "3-eeee", "9-abcd"]).to_string();
    let url = format!("{db}/d?open_revs={revs}&revs=true&attachments=true&atts_since=[\"{r1}\"]");
    let r = request("GET", &url, &[("Accept", "multipart/mixed")], None);
    assert_eq!(r.status, 200);
    let ct = r.header("content-type").unwrap().to_string();
    assert!(ct.starts_with("multipart/mixed"), "{ct}");
    let outer = parts(&r.body, &boundary(&ct));
    assert_eq!(outer.len(), 4);
    // r3: a.txt (revpos 1) is in the client's r1, a stub; b.txt (revpos 2) follows.
    let ct0 = part_header(&outer[0].0, "content-type").unwrap();
    assert!(ct0.starts_with("multipart/related"), "{ct0}");
    let inner = parts(&outer[0].1, &boundary(ct0));
    assert_eq!(inner.len(), 2);
    assert_eq!(
        part_header(&inner[0].0, "content-type"),
        Some("application/json")
    );
    let doc: Value = serde_json::from_slice(&inner[0].1).unwrap();
    assert_eq!(doc["_id"], json!("d"));
    assert_eq!(doc["_rev"], json!(r3));
    assert_eq!(doc["_revisions"]["start"], json!(3));
    assert_eq!(doc["_attachments"]["a.txt"]["stub"], json!(true));
    assert_eq!(doc["_attachments"]["b.txt"]["follows"], json!(true));
    assert!(doc["_attachments"]["b.txt"].get("stub").is_none());
    assert_eq!(doc["_attachments"]["b.txt"]["length"], json!(4));
    assert_eq!(
        part_header(&inner[1].0, "content-disposition"),
        Some("attachment; filename=\"b.txt\"")
    );
    assert_eq!(part_header(&inner[1].0, "content-length"), Some("4"));
    assert_eq!(inner[1].1, b"beta");
    // 2-ffff: no contents to send, plain JSON.
    assert_eq!(
        part_header(&outer[1].0, "content-type"),
        Some("application/json")
    );
    let doc: Value = serde_json::from_slice(&outer[1].1).unwrap();
    assert_eq!(
        (doc["_rev"].clone(), doc["side"].clone()),
        (json!("2-ffff"), json!(1))
    );
    // 3-eeee: its binary attachment, whole.
    let ct2 = part_header(&outer[2].0, "content-type").unwrap();
    let inner = parts(&outer[2].1, &boundary(ct2));
    assert_eq!(inner.len(), 2);
    assert_eq!(inner[1].1, bin);
    // The missing revision.
    assert_eq!(
        part_header(&outer[3].0, "content-type"),
        Some("application/json; error=\"true\"")
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&outer[3].1).unwrap(),
        json!({"missing": "9-abcd"})
    );
    // Without attachments=true every revision is a JSON part with stubs.
    let url = format!("{db}/d?open_revs=all");
    let r = request("GET", &url, &[("Accept", "multipart/mixed")], None);
    let outer = parts(&r.body, &boundary(r.header("content-type").unwrap()));
    assert_eq!(outer.len(), 3);
    for (h, _) in &outer {
        assert_eq!(part_header(h, "content-type"), Some("application/json"));
    }
    // A missing document is a JSON 404, as without multipart.
    let r = request(
        "GET",
        &format!("{db}/nope?open_revs=all"),
        &[("Accept", "multipart/mixed")],
        None,
    );
    assert_eq!(r.status, 404);
}

/// A part to send: its headers and its body.
type PartIn<'a> = (&'a [(&'a str, &'a str)], &'a [u8]);

/// A multipart/related body: the JSON, then the given parts.
fn related(json: &impl ToString, atts: &[PartIn]) -> Vec<u8> {
    let mut b = b"--XyZ\r\nContent-Type: application/json\r\n\r\n".to_vec();
    b.extend(json.to_string().into_bytes());
    for (headers, data) in atts {
        b.extend_from_slice(b"\r\n--XyZ\r\n");
        for (k, v) in *headers {
            b.extend(format!("{k}: {v}\r\n").into_bytes());
        }
        b.extend_from_slice(b"\r\n");
        b.extend_from_slice(data);
    }
    b.extend_from_slice(b"\r\n--XyZ--");
    b
}

fn put_related(url: &str, body: &[u8]) -> Reply {
    request(
        "PUT",
        url,
        &[("Content-Type", "multipart/related; boundary=\"XyZ\"")],
        Some(body),
    )
}

#[test]
fn multipart_put_streams_the_attachment_parts() {
    let s = start();
    let db = create(&s, "mp");
    let big = noise(400_000, 9);
    // Parts in the order the JSON lists them (not sorted): z.bin then a.txt (written by hand:
    // serde_json would sort the names).
    let doc = format!(
        r#"{{"_id": "d", "v": 1, "_attachments": {{
            "z.bin": {{"follows": true, "content_type": "application/octet-stream",
                       "length": 400000, "digest": "{}"}},
            "a.txt": {{"follows": true, "content_type": "text/plain", "length": 5}}}}}}"#,
        digest(&big)
    );
    let body = related(
        &doc,
        &[(&[], &big), (&[("Content-Type", "text/plain")], b"hello")],
    );
    let r = put_related(&format!("{db}/d"), &body);
    assert_eq!(r.status, 201, "{}", r.text());
    let r1 = r.json()["rev"].as_str().unwrap().to_string();
    assert_eq!(get(&format!("{db}/d/z.bin")).body, big);
    assert_eq!(get(&format!("{db}/d/a.txt")).body, b"hello");
    assert_eq!(get(&format!("{db}/d")).json()["v"], json!(1));
    // Named parts (Content-Disposition) in any order, a stub kept, on Barrel's surface.
    let doc = json!({"v": 2, "_attachments": {
        "z.bin": {"stub": true},
        "m.txt": {"follows": true, "content_type": "text/plain"},
        "n.txt": {"follows": true, "content_type": "text/plain"}
    }});
    let body = related(
        &doc,
        &[
            (
                &[("Content-Disposition", "attachment; filename=\"n.txt\"")],
                b"en",
            ),
            (
                &[("Content-Disposition", "attachment; filename=\"m.txt\"")],
                b"em",
            ),
        ],
    );
    let r = put_related(&format!("{db}/docs/d?rev={r1}"), &body);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(get(&format!("{db}/d/m.txt")).body, b"em");
    assert_eq!(get(&format!("{db}/d/n.txt")).body, b"en");
    assert_eq!(get(&format!("{db}/d/z.bin")).body, big);
    assert_eq!(get(&format!("{db}/d/a.txt")).status, 404);
    // Replication's form: new_edits=false with the history.
    let doc = json!({"_id": "rep", "_rev": "2-bbbb", "_revisions": {"start": 2, "ids": ["bbbb", "aaaa"]},
                     "_attachments": {"r.txt": {"follows": true, "revpos": 1, "length": 3,
                                                "digest": digest(b"rep")}}});
    let r = put_related(
        &format!("{db}/rep?new_edits=false"),
        &related(&doc, &[(&[], b"rep")]),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["rev"], json!("2-bbbb"));
    assert_eq!(
        get(&format!("{db}/rep")).json()["_attachments"]["r.txt"]["revpos"],
        json!(1)
    );
    // Refusals write nothing: a digest that does not match, a missing part, an extra part, a
    // part for a name that does not follow.
    let bad = |doc: Value, atts: &[PartIn]| {
        let r = put_related(&format!("{db}/bad"), &related(&doc, atts));
        assert_eq!(r.status, 400, "{}", r.text());
        assert_eq!(r.json()["error"], json!("bad_attachment"));
    };
    let follows = |d: &[u8]| json!({"follows": true, "digest": digest(d)});
    bad(
        json!({"_attachments": {"x": follows(b"one")}}),
        &[(&[], b"two")],
    );
    bad(
        json!({"_attachments": {"x": follows(b"one"), "y": follows(b"two")}}),
        &[(&[], b"one")],
    );
    bad(
        json!({"_attachments": {"x": follows(b"one")}}),
        &[(&[], b"one"), (&[], b"extra")],
    );
    bad(
        json!({"_attachments": {"x": follows(b"one")}}),
        &[(
            &[("Content-Disposition", "attachment; filename=\"y\"")],
            b"one",
        )],
    );
    assert_eq!(get(&format!("{db}/bad")).status, 404);
    // A body that is not multipart as announced.
    let r = put_related(&format!("{db}/bad"), b"{\"no\": \"parts\"}");
    assert_eq!(r.status, 400);
}

/// `data` gzip-encoded.
fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn multipart_put_decodes_gzip_parts() {
    let s = start_with(|c| c.max_attachment_size = 1 << 20);
    let db = create(&s, "gz");
    let text: Vec<u8> = (0..20_000)
        .flat_map(|i| format!("line {i} of a compressible text\n").into_bytes())
        .take(600_000)
        .collect();
    let encoded = gzip(&text);
    assert!(encoded.len() < text.len() / 4);
    // CouchDB's replicator: `encoding` and `encoded_length` in the stub, `length` decoded,
    // `digest` of the encoded bytes, the part with Content-Encoding: gzip.
    let doc = json!({"_id": "d", "_rev": "1-abcd", "_revisions": {"start": 1, "ids": ["abcd"]},
        "_attachments": {"t.txt": {"follows": true, "content_type": "text/plain", "revpos": 1,
            "length": text.len(), "encoding": "gzip", "encoded_length": encoded.len(),
            "digest": digest(&encoded)}}});
    let part: PartIn = (&[("Content-Encoding", "gzip")], &encoded);
    let r = put_related(&format!("{db}/d?new_edits=false"), &related(&doc, &[part]));
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(get(&format!("{db}/d/t.txt")).body, text);
    let stub = &get(&format!("{db}/d")).json()["_attachments"]["t.txt"];
    assert_eq!(stub["length"], json!(text.len()));
    assert_eq!(stub["digest"], json!(digest(&text)));
    assert!(stub.get("encoding").is_none());
    // The stub alone says gzip; the digest may be the decoded content's.
    let doc = json!({"_attachments": {"u.txt": {"follows": true, "encoding": "gzip",
                                                "digest": digest(b"hello")}}});
    let r = put_related(
        &format!("{db}/e"),
        &related(&doc, &[(&[], &gzip(b"hello"))]),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(get(&format!("{db}/e/u.txt")).body, b"hello");
    // Refusals write nothing: encoded_length, length or digest not those of the part, a part
    // that is not gzip, an encoding other than gzip.
    let bad = |stub: Value, data: &[u8], status: u16, error: &str| {
        let doc = json!({"_attachments": {"x": stub}});
        let part: PartIn = (&[("Content-Encoding", "gzip")], data);
        let r = put_related(&format!("{db}/bad"), &related(&doc, &[part]));
        assert_eq!(r.status, status, "{}", r.text());
        assert_eq!(r.json()["error"], json!(error));
    };
    let z = gzip(b"zzz");
    let follows = json!({"follows": true});
    let with = |k: &str, v: Value| {
        let mut s = follows.clone();
        s[k] = v;
        s
    };
    bad(with("encoded_length", json!(3)), &z, 400, "bad_attachment");
    bad(with("length", json!(4)), &z, 400, "bad_attachment");
    bad(
        with("digest", json!(digest(b"other"))),
        &z,
        400,
        "bad_attachment",
    );
    bad(follows.clone(), b"zzz", 400, "bad_attachment");
    bad(follows.clone(), &z[..z.len() - 4], 400, "bad_attachment");
    let doc = json!({"_attachments": {"x": with("encoding", json!("deflate"))}});
    let r = put_related(&format!("{db}/bad"), &related(&doc, &[(&[], b"zzz")]));
    assert_eq!(r.status, 400, "{}", r.text());
    // What decodes beyond the attachment limit is refused as it decodes.
    bad(
        follows,
        &gzip(&vec![0u8; 4 << 20]),
        413,
        "attachment_too_large",
    );
    assert_eq!(get(&format!("{db}/bad")).status, 404);
}

#[test]
fn bulk_get_as_multipart_when_json_is_not_accepted() {
    let s = start();
    let db = create(&s, "bg");
    let [r1, _, r3] = three_revisions(&db);
    assert_eq!(
        send_json("PUT", &format!("{db}/plain"), json!({"v": 1})).status,
        201
    );
    let body = json!({"docs": [
        {"id": "plain"},
        {"id": "d", "rev": r3},
        {"id": "d", "rev": r3, "atts_since": [r1]},
        {"id": "d", "rev": "9-ffff"},
        {"id": "nope"}
    ]})
    .to_string();
    let post = |query: &str, accept: &str| {
        request(
            "POST",
            &format!("{db}/_bulk_get?{query}"),
            &[("Content-Type", "application/json"), ("Accept", accept)],
            Some(body.as_bytes()),
        )
    };
    let r = post("revs=true&attachments=true", "multipart/mixed");
    assert_eq!(r.status, 200, "{}", r.text());
    let ct = r.header("content-type").unwrap().to_string();
    assert!(ct.starts_with("multipart/mixed"), "{ct}");
    let outer = parts(&r.body, &boundary(&ct));
    assert_eq!(outer.len(), 5);
    // A document without attachments: a JSON part.
    assert_eq!(
        part_header(&outer[0].0, "content-type"),
        Some("application/json")
    );
    assert_eq!(part_header(&outer[0].0, "x-doc-id"), Some("plain"));
    let doc: Value = serde_json::from_slice(&outer[0].1).unwrap();
    assert_eq!(
        (doc["_id"].clone(), doc["v"].clone()),
        (json!("plain"), json!(1))
    );
    // With its attachments: the JSON with follows stubs, then each content.
    let related_parts = |p: &Part| {
        let ct = part_header(&p.0, "content-type").unwrap();
        assert!(ct.starts_with("multipart/related"), "{ct}");
        assert_eq!(part_header(&p.0, "x-rev-id"), Some(r3.as_str()));
        let inner = parts(&p.1, &boundary(ct));
        let doc: Value = serde_json::from_slice(&inner[0].1).unwrap();
        assert_eq!(doc["_revisions"]["start"], json!(3));
        let contents: Vec<(String, Vec<u8>)> = inner[1..]
            .iter()
            .map(|(h, d)| {
                let disposition = part_header(h, "content-disposition").unwrap();
                (disposition.to_string(), d.clone())
            })
            .collect();
        (doc["_attachments"].clone(), contents)
    };
    let (atts, contents) = related_parts(&outer[1]);
    assert_eq!(atts["a.txt"]["follows"], json!(true));
    assert_eq!(atts["b.txt"]["follows"], json!(true));
    assert_eq!(
        contents,
        [
            ("attachment; filename=\"a.txt\"".into(), b"alpha".to_vec()),
            ("attachment; filename=\"b.txt\"".into(), b"beta".to_vec())
        ]
    );
    // atts_since: only what the client lacks.
    let (atts, contents) = related_parts(&outer[2]);
    assert_eq!(atts["a.txt"]["stub"], json!(true));
    assert_eq!(
        contents,
        [("attachment; filename=\"b.txt\"".into(), b"beta".to_vec())]
    );
    // A missing revision, a missing document.
    for (part, rev) in [(&outer[3], json!("9-ffff")), (&outer[4], Value::Null)] {
        assert_eq!(
            part_header(&part.0, "content-type"),
            Some("application/json; error=\"true\"")
        );
        let id = if rev.is_null() { "nope" } else { "d" };
        assert_eq!(
            serde_json::from_slice::<Value>(&part.1).unwrap(),
            json!({"id": id, "rev": rev, "error": "not_found", "reason": "missing"})
        );
    }
    // Without attachments=true, every revision is a JSON part with stubs.
    let r = post("", "multipart/mixed");
    let outer = parts(&r.body, &boundary(r.header("content-type").unwrap()));
    let doc: Value = serde_json::from_slice(&outer[1].1).unwrap();
    assert_eq!(doc["_attachments"]["a.txt"]["stub"], json!(true));
    assert!(doc.get("_revisions").is_none());
    // multipart/related at the top for a client that takes only that.
    let r = post("attachments=true", "multipart/related");
    let ct = r.header("content-type").unwrap().to_string();
    assert!(ct.starts_with("multipart/related"), "{ct}");
    assert_eq!(parts(&r.body, &boundary(&ct)).len(), 5);
    // JSON whenever JSON is taken.
    for accept in [
        "multipart/mixed, application/json",
        "*/*",
        "multipart/mixed, application/*;q=0.5",
        "application/json",
    ] {
        let r = post("attachments=true", accept);
        assert_eq!(r.status, 200);
        assert!(r
            .header("content-type")
            .unwrap()
            .starts_with("application/json"));
        assert_eq!(r.json()["results"].as_array().unwrap().len(), 5, "{accept}");
    }
    // A bad request is refused before anything is sent.
    let r = request(
        "POST",
        &format!("{db}/_bulk_get"),
        &[
            ("Content-Type", "application/json"),
            ("Accept", "multipart/mixed"),
        ],
        Some(br#"{"docs": [{"id": "d", "rev": "x"}]}"#),
    );
    assert_eq!(r.status, 400);
}

#[test]
fn document_with_attachments_as_multipart_related() {
    let s = start();
    let db = create(&s, "rel");
    let [r1, _, r3] = three_revisions(&db);
    let accept = [("Accept", "multipart/related")];
    let r = request("GET", &format!("{db}/d?attachments=true"), &accept, None);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("etag"), Some(format!("\"{r3}\"").as_str()));
    let ct = r.header("content-type").unwrap().to_string();
    assert!(ct.starts_with("multipart/related"), "{ct}");
    let p = parts(&r.body, &boundary(&ct));
    assert_eq!(p.len(), 3);
    assert_eq!(
        part_header(&p[0].0, "content-type"),
        Some("application/json")
    );
    let doc: Value = serde_json::from_slice(&p[0].1).unwrap();
    assert_eq!(
        (doc["_id"].clone(), doc["_rev"].clone()),
        (json!("d"), json!(r3))
    );
    assert_eq!(doc["_attachments"]["a.txt"]["follows"], json!(true));
    assert_eq!(doc["_attachments"]["a.txt"]["length"], json!(5));
    assert!(doc["_attachments"]["a.txt"].get("data").is_none());
    assert_eq!(
        part_header(&p[1].0, "content-disposition"),
        Some("attachment; filename=\"a.txt\"")
    );
    assert_eq!(part_header(&p[1].0, "content-type"), Some("text/plain"));
    assert_eq!(
        (p[1].1.as_slice(), p[2].1.as_slice()),
        (&b"alpha"[..], &b"beta"[..])
    );
    // atts_since: stubs for what the client has.
    let url = format!("{db}/d?atts_since={}", json!([r1]));
    let r = request("GET", &url, &accept, None);
    let p = parts(&r.body, &boundary(r.header("content-type").unwrap()));
    assert_eq!(p.len(), 2);
    let doc: Value = serde_json::from_slice(&p[0].1).unwrap();
    assert_eq!(doc["_attachments"]["a.txt"]["stub"], json!(true));
    assert_eq!(p[1].1, b"beta");
    // JSON otherwise: no attachments=true, a document without attachments, JSON accepted.
    assert_eq!(
        send_json("PUT", &format!("{db}/plain"), json!({})).status,
        201
    );
    for (url, accept) in [
        (format!("{db}/d"), "multipart/related"),
        (format!("{db}/plain?attachments=true"), "multipart/related"),
        (
            format!("{db}/d?attachments=true"),
            "multipart/related, application/json",
        ),
        (format!("{db}/d?attachments=true"), "*/*"),
    ] {
        let r = request("GET", &url, &[("Accept", accept)], None);
        assert_eq!(r.status, 200);
        let ct = r.header("content-type").unwrap();
        assert!(ct.starts_with("application/json"), "{url} {accept}: {ct}");
    }
}

#[test]
fn fifty_mib_streamed_round_trip() {
    const LEN: u64 = 50 << 20;
    let s = start();
    let db = create(&s, "big");
    let mut md5 = Md5::new();
    let mut sample = Noise {
        state: 42,
        left: LEN,
    };
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = sample.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        md5.update(&buf[..n]);
    }
    let want = B64.encode(md5.finalize());
    // Chunked upload (no Content-Length), with the MD5 announced.
    let r = reply(
        agent()
            .put(&format!("{db}/d/big.bin"))
            .set("Content-Type", "application/octet-stream")
            .set("Content-MD5", &want)
            .send(Noise {
                state: 42,
                left: LEN,
            }),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let stub = &get(&format!("{db}/d")).json()["_attachments"]["big.bin"];
    assert_eq!(stub["length"], json!(LEN));
    assert_eq!(stub["digest"], json!(format!("md5-{want}")));
    // Streamed download, hashed as it comes.
    let resp = agent().get(&format!("{db}/d/big.bin")).call().unwrap();
    assert_eq!(
        resp.header("Content-Length"),
        Some(LEN.to_string().as_str())
    );
    let mut reader = resp.into_reader();
    let mut md5 = Md5::new();
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
        md5.update(&buf[..n]);
    }
    assert_eq!(total, LEN);
    assert_eq!(B64.encode(md5.finalize()), want);
}

#[test]
fn linked_attachments_redirect() {
    let s = start();
    let db = create(&s, "u");
    let r = send_json(
        "PUT",
        &format!("{db}/d"),
        json!({"_attachments": {"logo": {"url": "https://example.com/logo.png",
                                          "content_type": "image/png"}}}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    for method in ["GET", "HEAD"] {
        let r = request(method, &format!("{db}/d/logo"), &[], None);
        assert_eq!(r.status, 303);
        assert_eq!(r.header("location"), Some("https://example.com/logo.png"));
    }
}
