//! The one place engine errors become `{error, Reason}` terms (the list is in README.md).

use barrel_core::{DocError, Error};
use rustler::{Encoder, Env, Term};

mod atoms {
    rustler::atoms! {
        error, not_found, already_exists, conflict, closed, invalid_name, bad_param, bad_doc,
        storage_error, corrupt, internal_error, would_block, bad_query, invalid_doc_id, bad_rev, not_a_map, bad_revisions,
        bad_deleted, reserved_field, missing_rev, too_large, invalid_value, invalid_key,
        bad_attachment, missing_stub, attachment_too_large,
    }
}

/// The `Reason` of an engine error.
pub(crate) fn reason<'a>(env: Env<'a>, e: &Error) -> Term<'a> {
    use atoms::*;
    match e {
        Error::NotFound => not_found().encode(env),
        Error::AlreadyExists => already_exists().encode(env),
        Error::Conflict => conflict().encode(env),
        Error::Closed => closed().encode(env),
        Error::InvalidName(n) => (invalid_name(), n.as_str()).encode(env),
        Error::BadParam(p) => (bad_param(), p.as_str()).encode(env),
        Error::Storage(m) => (storage_error(), m.as_str()).encode(env),
        Error::Corrupt(m) => (corrupt(), m.as_str()).encode(env),
        Error::Internal(m) => (internal_error(), m.as_str()).encode(env),
        Error::WouldBlock => would_block().encode(env),
        Error::BadQuery(w) => (bad_query(), w.as_str()).encode(env),
        Error::MissingStub(n) => (missing_stub(), n.as_str()).encode(env),
        Error::AttachmentTooLarge(l) => (attachment_too_large(), *l).encode(env),
        Error::BadDoc(d) => match d {
            DocError::InvalidDocId(id) => (invalid_doc_id(), id.as_str()).encode(env),
            DocError::BadRev(r) => (bad_rev(), r.as_str()).encode(env),
            DocError::NotAnObject => (bad_doc(), not_a_map()).encode(env),
            DocError::BadRevisions(w) => (bad_doc(), (bad_revisions(), w.as_str())).encode(env),
            DocError::BadDeleted => (bad_doc(), bad_deleted()).encode(env),
            DocError::ReservedField(k) => (bad_doc(), (reserved_field(), k.as_str())).encode(env),
            DocError::MissingRev => (bad_doc(), missing_rev()).encode(env),
            DocError::TooLarge(w) => (bad_doc(), (too_large(), w.as_str())).encode(env),
            DocError::InvalidValue(p) => (bad_doc(), (invalid_value(), p.as_str())).encode(env),
            DocError::InvalidKey(p) => (bad_doc(), (invalid_key(), p.as_str())).encode(env),
            DocError::BadAttachment(w) => (bad_attachment(), w.as_str()).encode(env),
        },
    }
}

/// `{error, Reason}`.
pub(crate) fn encode<'a>(env: Env<'a>, e: &Error) -> Term<'a> {
    (atoms::error(), reason(env, e)).encode(env)
}
