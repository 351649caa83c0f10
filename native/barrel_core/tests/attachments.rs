//! Attachments in the engine: inline and streamed contents, stubs, links, sharing by digest,
//! removal when no revision refers to a content, conflicts, replication-style writes, and bad
//! input refused with nothing lost.

use barrel_core::attachment::{digest_string, CHUNK_SIZE};
use barrel_core::{
    AttMeta, BarrelConfig, DocError, DocInput, Error, FetchOptions, Rev, SaveOptions, Store,
    StoreOptions,
};
use base64::Engine;
use serde_json::{json, Value};
use std::sync::Arc;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const NEW: SaveOptions = SaveOptions { new_edits: true };
const REPL: SaveOptions = SaveOptions { new_edits: false };

fn setup() -> (tempfile::TempDir, Arc<Store>, barrel_core::Barrel) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    store.create_barrel("b", BarrelConfig::default()).unwrap();
    let barrel = store.open_barrel("b").unwrap();
    (dir, store, barrel)
}

fn doc(v: Value) -> DocInput {
    DocInput::from_value(v).unwrap()
}

fn md5(data: &[u8]) -> [u8; 16] {
    use md5::{Digest, Md5};
    Md5::digest(data).into()
}

fn fetch(b: &barrel_core::Barrel, id: &str) -> serde_json::Map<String, Value> {
    b.fetch_doc(id, &FetchOptions::default()).unwrap()
}

#[test]
fn inline_attachment_becomes_a_stub_and_reads_back() {
    let (_d, _s, b) = setup();
    let data = b"hello attachments".to_vec();
    let (id, rev) = b
        .save_doc(
            doc(json!({"id": "a", "x": 1, "_attachments": {
                "hello.txt": {"content_type": "text/plain", "data": B64.encode(&data)}}})),
            &NEW,
        )
        .unwrap();
    let d = fetch(&b, &id);
    let stub = &d["_attachments"]["hello.txt"];
    assert_eq!(stub["content_type"], "text/plain");
    assert_eq!(stub["length"], data.len());
    assert_eq!(stub["digest"], digest_string(&md5(&data)));
    assert_eq!(stub["revpos"], 1);
    assert_eq!(stub["stub"], true);
    assert_eq!(rev.gen, 1);
    let (meta, content) = b.fetch_attachment("a", "hello.txt", None).unwrap();
    assert_eq!(content, data);
    assert_eq!(meta.length, data.len() as u64);
    // Fetched with data inline (base64 for JSON).
    let mut d = fetch(&b, "a");
    b.inline_attachments(&mut d, None, &|c| Value::String(B64.encode(c)))
        .unwrap();
    assert_eq!(d["_attachments"]["hello.txt"]["data"], B64.encode(&data));
    assert!(d["_attachments"]["hello.txt"].get("stub").is_none());
}

#[test]
fn saving_a_fetched_doc_keeps_its_attachments() {
    let (_d, _s, b) = setup();
    let (_, r1) = b
        .save_doc(
            doc(json!({"id": "a", "_attachments": {"f": {"data": B64.encode(b"one")}}})),
            &NEW,
        )
        .unwrap();
    let mut d = fetch(&b, "a");
    d.insert("x".into(), json!(2));
    let (_, r2) = b.save_doc(DocInput::from_map(d).unwrap(), &NEW).unwrap();
    assert_eq!(r2.gen, 2);
    let d = fetch(&b, "a");
    assert_eq!(d["_attachments"]["f"]["revpos"], 1);
    assert_eq!(b.fetch_attachment("a", "f", None).unwrap().1, b"one");
    // A bare stub ({"stub": true}) is completed from the parent revision.
    let (_, r3) = b
        .save_doc(
            doc(json!({"id": "a", "_rev": r2.to_string(), "_attachments": {"f": {"stub": true}}})),
            &NEW,
        )
        .unwrap();
    assert_eq!(b.fetch_attachment("a", "f", None).unwrap().1, b"one");
    // A bare stub the parent does not have is refused.
    let err = b
        .save_doc(
            doc(json!({"id": "a", "_rev": r3.to_string(), "_attachments": {"g": {"stub": true}}})),
            &NEW,
        )
        .unwrap_err();
    assert_eq!(err, Error::MissingStub("g".into()));
    assert_ne!(r1, r3);
}

#[test]
fn put_replace_and_delete_standalone_attachments() {
    let (_d, _s, b) = setup();
    let mut w = b.attachment_writer().unwrap();
    w.write(b"abc").unwrap();
    w.write(b"def").unwrap();
    let (id, r1) = b
        .put_attachment(
            "doc",
            None,
            "f.bin",
            "application/x-test",
            w.finish().unwrap(),
        )
        .unwrap();
    assert_eq!(id, "doc");
    let meta = b.attachment_meta("doc", "f.bin", None).unwrap();
    assert_eq!(meta.content_type, "application/x-test");
    assert_eq!(meta.length, 6);
    assert_eq!(meta.revpos, 1);
    // Without a rev on an existing doc: conflict.
    let mut w = b.attachment_writer().unwrap();
    w.write(b"x").unwrap();
    assert_eq!(
        b.put_attachment("doc", None, "g", "text/plain", w.finish().unwrap())
            .unwrap_err(),
        Error::Conflict
    );
    // Replace on top of r1.
    let mut w = b.attachment_writer().unwrap();
    w.write(b"new content").unwrap();
    let (_, r2) = b
        .put_attachment("doc", Some(&r1), "f.bin", "text/plain", w.finish().unwrap())
        .unwrap();
    assert_eq!(
        b.fetch_attachment("doc", "f.bin", None).unwrap().1,
        b"new content"
    );
    assert_eq!(b.attachment_meta("doc", "f.bin", None).unwrap().revpos, 2);
    // The old content is no longer referenced: gone.
    assert_eq!(b.attachment_contents().unwrap(), (1, 11));
    // Stale rev: conflict; nothing changes.
    assert_eq!(
        b.delete_attachment("doc", &r1, "f.bin").unwrap_err(),
        Error::Conflict
    );
    assert_eq!(
        b.delete_attachment("doc", &r2, "nope").unwrap_err(),
        Error::NotFound
    );
    let (_, r3) = b.delete_attachment("doc", &r2, "f.bin").unwrap();
    assert_eq!(r3.gen, 3);
    assert_eq!(
        b.fetch_attachment("doc", "f.bin", None).unwrap_err(),
        Error::NotFound
    );
    assert!(fetch(&b, "doc").get("_attachments").is_none());
    assert_eq!(b.attachment_contents().unwrap(), (0, 0));
}

#[test]
fn identical_contents_are_stored_once_and_removed_with_the_last_reference() {
    let (_d, _s, b) = setup();
    let data = vec![7u8; 300_000];
    let att = json!({"f": {"data": B64.encode(&data)}});
    let (_, ra) = b
        .save_doc(doc(json!({"id": "a", "_attachments": att})), &NEW)
        .unwrap();
    let (_, rb) = b
        .save_doc(doc(json!({"id": "b", "_attachments": att})), &NEW)
        .unwrap();
    let mut w = b.attachment_writer().unwrap();
    w.write(&data).unwrap();
    let (_, rc) = b
        .put_attachment("c", None, "g", "x/y", w.finish().unwrap())
        .unwrap();
    assert_eq!(b.attachment_contents().unwrap(), (1, 300_000));
    b.delete_doc("a", ra).unwrap();
    b.delete_doc("b", rb).unwrap();
    assert_eq!(b.fetch_attachment("c", "g", None).unwrap().1, data);
    assert_eq!(b.attachment_contents().unwrap(), (1, 300_000));
    b.delete_doc("c", rc).unwrap();
    assert_eq!(b.attachment_contents().unwrap(), (0, 0));
}

#[test]
fn conflicting_leaves_keep_their_contents() {
    let (_d, _s, b) = setup();
    let r1 = Rev::parse("1-aaaa").unwrap();
    let r2a = Rev::parse("2-bbbb").unwrap();
    let r2b = Rev::parse("2-cccc").unwrap();
    let path = |r: &Rev| json!({"start": r.gen, "ids": [r.hash.clone(), "aaaa"]});
    b.save_doc(doc(json!({"id": "d", "_rev": "1-aaaa"})), &REPL)
        .unwrap();
    for (r, content) in [(&r2a, "left"), (&r2b, "right")] {
        b.save_doc(
            doc(
                json!({"id": "d", "_rev": r.to_string(), "_revisions": path(r),
                "_attachments": {"f": {"data": B64.encode(content), "revpos": 2}}}),
            ),
            &REPL,
        )
        .unwrap();
    }
    assert_eq!(b.attachment_contents().unwrap().0, 2);
    let winner = fetch(&b, "d")["_rev"].as_str().unwrap().to_string();
    let loser = if winner == r2a.to_string() {
        &r2b
    } else {
        &r2a
    };
    let (_, c) = b.fetch_attachment("d", "f", Some(loser)).unwrap();
    assert!(c == b"left" || c == b"right");
    // Resolving the conflict (deleting the losing leaf) frees its content only.
    b.delete_doc("d", loser.clone()).unwrap();
    assert_eq!(b.attachment_contents().unwrap().0, 1);
    assert!(b.fetch_attachment("d", "f", None).is_ok());
    let _ = r1;
}

#[test]
fn replicated_stubs_need_the_content_here() {
    let (_d, _s, b) = setup();
    let data = b"shared".to_vec();
    let digest = digest_string(&md5(&data));
    // A stub naming content this barrel does not have is refused.
    let err = b
        .save_doc(
            doc(json!({"id": "r", "_rev": "1-abcd", "_attachments": {
                "f": {"stub": true, "digest": digest, "length": 6, "revpos": 1}}})),
            &REPL,
        )
        .unwrap_err();
    assert!(matches!(err, Error::MissingStub(_)), "{err:?}");
    assert_eq!(
        b.fetch_doc("r", &FetchOptions::default()).unwrap_err(),
        Error::NotFound
    );
    // Once the content is here (another doc), the same stub is accepted.
    b.save_doc(
        doc(json!({"id": "other", "_attachments": {"g": {"data": B64.encode(&data)}}})),
        &NEW,
    )
    .unwrap();
    assert!(b.has_attachment_content(&md5(&data)).unwrap());
    b.save_doc(
        doc(json!({"id": "r", "_rev": "1-abcd", "_attachments": {
            "f": {"stub": true, "digest": digest, "length": 6, "revpos": 1}}})),
        &REPL,
    )
    .unwrap();
    assert_eq!(b.fetch_attachment("r", "f", None).unwrap().1, data);
}

#[test]
fn linked_attachments_are_kept_as_links() {
    let (_d, _s, b) = setup();
    b.save_doc(
        doc(json!({"id": "l", "_attachments": {
            "pic": {"url": "https://example.com/p.png", "content_type": "image/png"}}})),
        &NEW,
    )
    .unwrap();
    let meta = b.attachment_meta("l", "pic", None).unwrap();
    assert_eq!(
        meta,
        AttMeta {
            content_type: "image/png".into(),
            digest: None,
            length: 0,
            revpos: 1,
            url: Some("https://example.com/p.png".into())
        }
    );
    assert_eq!(b.open_attachment(&meta).unwrap_err(), Error::NotFound);
    let d = fetch(&b, "l");
    assert_eq!(d["_attachments"]["pic"]["url"], "https://example.com/p.png");
    // Saved back, the link stays with its revpos.
    let (_, r2) = b.save_doc(DocInput::from_map(d).unwrap(), &NEW).unwrap();
    assert_eq!(r2.gen, 2);
    assert_eq!(b.attachment_meta("l", "pic", None).unwrap().revpos, 1);
}

#[test]
fn bad_attachments_are_refused_and_nothing_is_lost() {
    let (_d, _s, b) = setup();
    let (_, r1) = b
        .save_doc(
            doc(json!({"id": "k", "_attachments": {"f": {"data": B64.encode(b"keep")}}})),
            &NEW,
        )
        .unwrap();
    let bad_att = |v: Value| match DocInput::from_value(v) {
        Err(DocError::BadAttachment(w)) => w,
        other => panic!("expected bad_attachment, got {other:?}"),
    };
    let r = r1.to_string();
    bad_att(json!({"id": "k", "_rev": r, "_attachments": {"f": {"data": "@@not base64"}}}));
    bad_att(
        json!({"id": "k", "_rev": r, "_attachments": {"f": {"data": B64.encode(b"abc"), "length": 4}}}),
    );
    bad_att(
        json!({"id": "k", "_rev": r, "_attachments": {"f": {"data": B64.encode(b"abc"),
        "digest": digest_string(&md5(b"abd"))}}}),
    );
    bad_att(json!({"id": "k", "_rev": r, "_attachments": {"_f": {"data": ""}}}));
    bad_att(json!({"id": "k", "_rev": r, "_attachments": {"f": {"content_type": "x"}}}));
    bad_att(json!({"id": "k", "_rev": r, "_attachments": {"f": {"url": "ftp://x"}}}));
    bad_att(json!({"id": "k", "_rev": r, "_attachments": {"f": 1}}));
    bad_att(json!({"id": "k", "_rev": r, "_attachments": [1]}));
    // Oversized streamed content.
    let mut w = b.attachment_writer().unwrap().with_limit(10);
    w.write(b"0123456789").unwrap();
    assert_eq!(w.write(b"!").unwrap_err(), Error::AttachmentTooLarge(10));
    drop(w);
    // Mismatched length/digest of a streamed upload.
    let mut w = b.attachment_writer().unwrap();
    w.write(b"abc").unwrap();
    assert!(matches!(
        w.finish_checked("f", None, Some(4)).unwrap_err(),
        Error::BadDoc(DocError::BadAttachment(_))
    ));
    let mut w = b.attachment_writer().unwrap();
    w.write(b"abc").unwrap();
    assert!(matches!(
        w.finish_checked("f", Some(&md5(b"abd")), None).unwrap_err(),
        Error::BadDoc(DocError::BadAttachment(_))
    ));
    // Nothing was lost, nothing left over.
    assert_eq!(b.fetch_attachment("k", "f", None).unwrap().1, b"keep");
    assert_eq!(fetch(&b, "k")["_rev"], r);
    assert_eq!(b.attachment_contents().unwrap(), (1, 4));
}

#[test]
fn large_contents_stream_in_chunks_with_ranges() {
    let (_d, _s, b) = setup();
    let total = 5 * CHUNK_SIZE + 1234;
    let piece: Vec<u8> = (0..total).map(|i| (i * 31 % 251) as u8).collect();
    let mut w = b.attachment_writer().unwrap();
    for part in piece.chunks(77_777) {
        w.write(part).unwrap();
    }
    let blob = w.finish().unwrap();
    assert_eq!(blob.length(), total as u64);
    assert_eq!(blob.digest(), md5(&piece));
    b.put_attachment("big", None, "f", "application/octet-stream", blob)
        .unwrap();
    let meta = b.attachment_meta("big", "f", None).unwrap();
    let mut r = b.open_attachment(&meta).unwrap();
    let mut got = Vec::new();
    while let Some(c) = r.read().unwrap() {
        assert!(c.len() <= CHUNK_SIZE);
        got.extend_from_slice(&c);
    }
    assert_eq!(got, piece);
    for (start, end) in [
        (0, 1),
        (CHUNK_SIZE - 3, CHUNK_SIZE + 5),
        (total - 10, total + 99),
    ] {
        let mut r = b.open_attachment(&meta).unwrap();
        r.set_range(start as u64, end as u64);
        assert_eq!(r.read_to_end().unwrap(), piece[start..end.min(total)]);
    }
}

#[test]
fn unsaved_contents_are_discarded_and_swept_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        store.create_barrel("b", BarrelConfig::default()).unwrap();
        let b = store.open_barrel("b").unwrap();
        let mut w = b.attachment_writer().unwrap();
        w.write(&vec![1u8; 3 * CHUNK_SIZE]).unwrap();
        let blob = w.finish().unwrap();
        drop(blob); // never saved: discarded
        assert_eq!(b.attachment_contents().unwrap(), (0, 0));
        // Simulate a crash between writing and saving: leak the writer's finish.
        let mut w = b.attachment_writer().unwrap();
        w.write(&vec![2u8; CHUNK_SIZE]).unwrap();
        std::mem::forget(w.finish().unwrap());
    }
    let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    let b = store.open_barrel("b").unwrap();
    assert_eq!(b.attachment_contents().unwrap(), (0, 0));
    // The barrel still works, and deleting it removes its attachments.
    b.save_doc(
        doc(json!({"id": "z", "_attachments": {"f": {"data": B64.encode(b"z")}}})),
        &NEW,
    )
    .unwrap();
    store.delete_barrel("b").unwrap();
}

#[test]
fn replicated_link_stubs_and_partial_stubs() {
    let (_d, _s, b) = setup();
    // A link arriving by replication (stub form, with revpos) is kept as is.
    b.save_doc(
        doc(json!({"id": "l", "_rev": "3-abcd", "_attachments": {
            "pic": {"url": "https://example.com/p.png", "revpos": 2, "stub": true}}})),
        &REPL,
    )
    .unwrap();
    let m = b.attachment_meta("l", "pic", None).unwrap();
    assert_eq!(
        (m.revpos, m.url.as_deref()),
        (2, Some("https://example.com/p.png"))
    );
    // A replicated stub with a digest but no revpos takes the revision's generation.
    let (_, r) = b
        .save_doc(
            doc(json!({"id": "p", "_attachments": {"f": {"data": B64.encode(b"pp")}}})),
            &NEW,
        )
        .unwrap();
    let digest = digest_string(&md5(b"pp"));
    b.save_doc(
        doc(json!({"id": "q", "_rev": "4-abcd", "_attachments": {
            "f": {"stub": true, "digest": digest, "length": 2}}})),
        &REPL,
    )
    .unwrap();
    assert_eq!(b.attachment_meta("q", "f", None).unwrap().revpos, 4);
    assert_eq!(b.fetch_attachment("q", "f", None).unwrap().1, b"pp");
    // A local edit with a digest-only stub takes the parent's stub.
    b.save_doc(
        doc(json!({"id": "p", "_rev": r.to_string(), "_attachments": {
            "f": {"stub": true, "digest": digest}}})),
        &NEW,
    )
    .unwrap();
    let m = b.attachment_meta("p", "f", None).unwrap();
    assert_eq!((m.revpos, m.length), (1, 2));
}

#[test]
fn a_content_being_read_outlives_its_last_reference_until_the_reader_goes() {
    let (_d, _s, b) = setup();
    let data: Vec<u8> = (0..3 * CHUNK_SIZE).map(|i| (i % 253) as u8).collect();
    let mut w = b.attachment_writer().unwrap();
    w.write(&data).unwrap();
    let (_, rev) = b
        .put_attachment("d", None, "f", "x/y", w.finish().unwrap())
        .unwrap();
    let meta = b.attachment_meta("d", "f", None).unwrap();
    let mut r = b.open_attachment(&meta).unwrap();
    let first = r.read().unwrap().unwrap();
    b.delete_doc("d", rev).unwrap();
    // The reader still reads everything.
    let mut got = first;
    got.extend(r.read_to_end().unwrap());
    assert_eq!(got, data);
    assert_eq!(b.attachment_contents().unwrap().0, 1);
    drop(r);
    // Its last reader gone, the content is collected (by the writer thread, soon).
    let t0 = std::time::Instant::now();
    while b.attachment_contents().unwrap().0 != 0 {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(5),
            "not collected"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // Opening a stub whose content is gone: not_found.
    assert_eq!(b.open_attachment(&meta).unwrap_err(), Error::NotFound);
}

#[test]
fn a_replicated_stub_with_a_foreign_digest_takes_the_ancestors_attachment() {
    let (_d, _s, b) = setup();
    // Revision 1 arrives with its content.
    b.save_doc(
        doc(json!({"id": "g", "_rev": "1-aaaa", "_attachments": {
            "t.txt": {"data": B64.encode(b"text"), "content_type": "text/plain", "revpos": 1}}})),
        &REPL,
    )
    .unwrap();
    // Revision 2 from CouchDB: the unchanged attachment is a stub whose digest is that of its
    // gzip encoding there, unknown here. It is the ancestor's attachment.
    b.save_doc(
        doc(
            json!({"id": "g", "_rev": "2-bbbb", "_revisions": {"start": 2, "ids": ["bbbb", "aaaa"]},
            "_attachments": {"t.txt": {"stub": true, "digest": digest_string(&md5(b"gzipped")),
                "encoding": "gzip", "length": 4, "revpos": 1}}}),
        ),
        &REPL,
    )
    .unwrap();
    let m = b.attachment_meta("g", "t.txt", None).unwrap();
    assert_eq!((m.revpos, m.digest), (1, Some(md5(b"text"))));
    assert_eq!(b.fetch_attachment("g", "t.txt", None).unwrap().1, b"text");
    // Without such an ancestor the stub is refused.
    let err = b
        .save_doc(
            doc(json!({"id": "h", "_rev": "2-cccc", "_revisions": {"start": 2, "ids": ["cccc", "dddd"]},
                "_attachments": {"t.txt": {"stub": true, "digest": digest_string(&md5(b"zz")),
                    "revpos": 1}}})),
            &REPL,
        )
        .unwrap_err();
    assert!(matches!(err, Error::MissingStub(_)), "{err:?}");
}

#[test]
fn inline_data_of_an_encoded_attachment_is_stored_under_its_own_digest() {
    let (_d, _s, b) = setup();
    // CouchDB sends decoded data with the digest of its gzip encoding.
    b.save_doc(
        doc(
            json!({"id": "e", "_rev": "1-aaaa", "_attachments": {"t.txt": {
            "data": B64.encode(b"plain"), "digest": digest_string(&md5(b"gz")),
            "encoding": "gzip", "length": 5, "revpos": 1}}}),
        ),
        &REPL,
    )
    .unwrap();
    let m = b.attachment_meta("e", "t.txt", None).unwrap();
    assert_eq!(m.digest, Some(md5(b"plain")));
    // The length is still checked.
    assert!(
        DocInput::from_value(json!({"id": "f", "_attachments": {"t": {
        "data": B64.encode(b"plain"), "encoding": "gzip", "length": 9}}}))
        .is_err()
    );
}

/// Bytes of the store's files on disk.
fn disk_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// Waits (at most 20 s) until the store's files take less than `below` bytes.
fn wait_disk_below(store: &Store, dir: &std::path::Path, below: u64) -> u64 {
    let t0 = std::time::Instant::now();
    loop {
        // Write-ahead logs still holding the deleted content go once their data is flushed.
        store.flush().unwrap();
        let size = disk_bytes(dir);
        if size < below || t0.elapsed() > std::time::Duration::from_secs(20) {
            return size;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn removed_contents_and_deleted_barrels_give_their_disk_space_back() {
    let (d, s, b) = setup();
    let mib = 1 << 20;
    // Incompressible bytes, so the sizes are the content's.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..32 * mib)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let before = disk_bytes(d.path());
    let mut w = b.attachment_writer().unwrap();
    w.write(&data).unwrap();
    let (_, rev) = b
        .put_attachment("big", None, "f", "x/y", w.finish().unwrap())
        .unwrap();
    // Settled in the bottom level: nothing would compact the deletion's tombstones soon.
    s.compact().unwrap();
    let written = disk_bytes(d.path());
    assert!(written >= before + 32 * mib as u64, "{before} -> {written}");
    b.delete_doc("big", rev).unwrap();
    let after = wait_disk_below(&s, d.path(), before + 8 * mib as u64);
    assert!(
        after < before + 8 * mib as u64,
        "{before} -> {written} -> {after}"
    );
    // The same for a deleted barrel.
    let mut w = b.attachment_writer().unwrap();
    w.write(&data).unwrap();
    b.put_attachment("big2", None, "f", "x/y", w.finish().unwrap())
        .unwrap();
    s.compact().unwrap();
    let written = disk_bytes(d.path());
    // A deleted barrel's space comes back with a compaction (here: asked for).
    s.delete_barrel("b").unwrap();
    s.compact().unwrap();
    let after = wait_disk_below(&s, d.path(), written - 24 * mib as u64);
    assert!(after < written - 24 * mib as u64, "{written} -> {after}");
}
