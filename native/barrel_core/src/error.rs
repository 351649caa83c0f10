//! The engine's error types: one enum per kind of failure, each variant mapping 1:1 to an
//! `{error, Reason}` term documented in the README.

use std::fmt;

/// Why a document was refused before anything was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocError {
    /// The document is not a JSON object / Erlang map.
    NotAnObject,
    /// `id` is not a valid document id (empty, too long, starts with `_`, not a string).
    InvalidDocId(String),
    /// `_rev` (or a rev given as an option) is not `Generation-Hash`.
    BadRev(String),
    /// `_revisions` is malformed or does not agree with `_rev`.
    BadRevisions(String),
    /// `_deleted` is not a boolean.
    BadDeleted,
    /// A top-level member starting with `_` that Barrel does not know.
    ReservedField(String),
    /// `new_edits => false` requires `_rev`.
    MissingRev,
    /// The document exceeds a documented limit (size, depth).
    TooLarge(String),
    /// A value that has no JSON form (pid, reference, tuple, non-UTF-8 binary, ...), at this
    /// JSON-pointer path.
    InvalidValue(String),
    /// An object key that is not a UTF-8 binary, at this JSON-pointer path.
    InvalidKey(String),
    /// An `_attachments` member is malformed, or its content does not match the digest or
    /// length given with it.
    BadAttachment(String),
}

impl fmt::Display for DocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DocError::NotAnObject => write!(f, "document is not an object"),
            DocError::InvalidDocId(id) => write!(f, "invalid document id {id:?}"),
            DocError::BadRev(r) => write!(f, "malformed revision {r:?}"),
            DocError::BadRevisions(w) => write!(f, "malformed _revisions: {w}"),
            DocError::BadDeleted => write!(f, "_deleted must be a boolean"),
            DocError::ReservedField(k) => write!(f, "unknown special field {k:?}"),
            DocError::MissingRev => write!(f, "new_edits=false requires _rev"),
            DocError::TooLarge(w) => write!(f, "document too large: {w}"),
            DocError::InvalidValue(p) => write!(f, "value at {p:?} has no JSON form"),
            DocError::InvalidKey(p) => write!(f, "key at {p:?} is not a UTF-8 string"),
            DocError::BadAttachment(w) => write!(f, "bad attachment {w}"),
        }
    }
}

/// Every failure the engine reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The barrel or document does not exist (or the document is deleted).
    NotFound,
    /// `create_barrel` on a name already in use.
    AlreadyExists,
    /// The update does not extend a current leaf revision.
    Conflict,
    /// The barrel handle or the store was closed.
    Closed,
    /// The barrel name is not acceptable.
    InvalidName(String),
    /// A barrel parameter has the wrong type or range.
    BadParam(String),
    /// A document was refused; nothing was written.
    BadDoc(DocError),
    /// RocksDB reported an error.
    Storage(String),
    /// Stored bytes could not be decoded (corruption or a format bug).
    Corrupt(String),
    /// A query's path or options are not valid.
    BadQuery(String),
    /// A memory-only read needed disk I/O; retry where blocking is allowed. Only
    /// [`Barrel::fetch_doc_cached`](crate::Barrel::fetch_doc_cached) produces it internally and
    /// it never reaches users.
    WouldBlock,
    /// An attachment stub names content this barrel does not have (or, without a digest, an
    /// attachment the parent revision does not have).
    MissingStub(String),
    /// An attachment is longer than the limit (in bytes).
    AttachmentTooLarge(u64),
    /// An engine bug caught at the boundary (a panic); nothing was written by the failing call.
    Internal(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotFound => write!(f, "not found"),
            Error::AlreadyExists => write!(f, "already exists"),
            Error::Conflict => write!(f, "document update conflict"),
            Error::Closed => write!(f, "closed"),
            Error::InvalidName(n) => write!(f, "invalid barrel name {n:?}"),
            Error::BadParam(p) => write!(f, "bad parameter: {p}"),
            Error::BadDoc(e) => write!(f, "bad document: {e}"),
            Error::Storage(e) => write!(f, "storage error: {e}"),
            Error::Corrupt(e) => write!(f, "corrupt data: {e}"),
            Error::Internal(e) => write!(f, "internal error: {e}"),
            Error::WouldBlock => write!(f, "read needs disk I/O"),
            Error::BadQuery(w) => write!(f, "bad query: {w}"),
            Error::MissingStub(n) => write!(f, "attachment stub {n:?} refers to missing content"),
            Error::AttachmentTooLarge(l) => write!(f, "attachment larger than {l} bytes"),
        }
    }
}

impl std::error::Error for Error {}

impl From<rocksdb::Error> for Error {
    fn from(e: rocksdb::Error) -> Self {
        Error::Storage(e.into_string())
    }
}

impl From<DocError> for Error {
    fn from(e: DocError) -> Self {
        Error::BadDoc(e)
    }
}

/// Result alias used across the engine.
pub type Result<T> = std::result::Result<T, Error>;
