//! # barrel_core
//!
//! Barrel's storage engine, in pure Rust: documents (JSON objects) with CouchDB-compatible
//! revision trees, stored in RocksDB with one atomic write batch per commit and group commit
//! across concurrent writers. The BEAM binding (`barrel_nif`) and the HTTP server are thin layers
//! over this crate.
//!
//! ```no_run
//! use barrel_core::{BarrelConfig, DocInput, FetchOptions, SaveOptions, Store, StoreOptions};
//! use serde_json::json;
//!
//! let store = Store::open("/tmp/barrel-example", &StoreOptions::default())?;
//! store.create_barrel("mybarrel", BarrelConfig::default())?;
//! let barrel = store.open_barrel("mybarrel")?;
//! let doc = DocInput::from_value(json!({"id": "a", "key": "value"}))?;
//! let (id, rev) = barrel.save_doc(doc, &SaveOptions::default())?;
//! let fetched = barrel.fetch_doc(&id, &FetchOptions::default())?;
//! assert_eq!(fetched["_rev"], json!(rev.to_string()));
//! # Ok::<(), barrel_core::Error>(())
//! ```

pub mod attachment;
pub mod barrel;
pub mod changes;
mod commit;
pub mod doc;
pub mod error;
pub mod index;
mod indexer;
pub mod query;
pub mod replicate;
pub mod revtree;
pub mod server;
pub mod store;

pub use attachment::{AttMeta, AttSource, AttSpec, AttachmentReader, AttachmentWriter, NewBlob};
pub use barrel::{
    Barrel, DocParts, DocRow, FetchOptions, FoldOptions, OpenRev, OpenRevs, SaveOptions,
    SaveResults, StoredRev,
};
pub use changes::{
    Change, ChangeSink, ChangesCursor, ChangesOptions, Pattern, SubscribeOptions, Subscription,
    INLINE_DELIVERIES,
};
pub use doc::{Body, DocInput};
pub use error::{DocError, Error, Result};
pub use index::{PathPattern, Segment};
pub use query::{Query, QueryCursor, QueryRow, Select};
pub use replicate::RevsDiff;
pub use revtree::{Rev, RevTree};
pub use store::{
    lower_compaction_priority, tune_malloc, Background, BarrelConfig, BarrelInfo, Stats, Store,
    StoreOptions, MALLOC_MMAP_THRESHOLD,
};

/// A JSON object of `members`, each moved in. `serde_json::json!` copies a member given as an
/// expression by serializing it into a new value: for a batch of documents (a `_bulk_get`
/// answer, a changes batch with the documents, a replication batch on its way to a remote)
/// that copy was a large part of the work.
pub(crate) fn json_object<const N: usize>(
    members: [(&str, serde_json::Value); N],
) -> serde_json::Value {
    serde_json::Value::Object(
        members
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

/// `bytes` in lowercase hexadecimal. Every revision id has 16 bytes of it: formatting each byte
/// with `format!` took about 2 µs of a `save_doc`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 * bytes.len());
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xF)]));
    }
    s
}

/// The text of a caught panic payload, for [`Error::Internal`].
pub fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}
