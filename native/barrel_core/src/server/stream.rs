//! Bodies that go through a blocking thread piece by piece: request bodies read there (attachment
//! uploads, multipart documents) and response bodies written from there (attachment contents,
//! multipart revisions). Storage calls block, so they run on the blocking pool; the connection is
//! served by a task; a bounded channel between them keeps memory flat whatever the size.

use super::http::{json_response, saved, ApiError, ApiResult};
use crate::revtree::Rev;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

/// How many pieces wait in a channel before the producer waits.
const QUEUE: usize = 8;

/// What is left of a refused upload is read and dropped up to this many bytes, so that the
/// client, still sending, reads the answer instead of a reset connection.
const DRAIN_LIMIT: u64 = 1 << 20;

/// A request body read from a blocking thread.
pub(crate) struct BodySource {
    rx: mpsc::Receiver<Result<Bytes, axum::Error>>,
    done: bool,
}

impl BodySource {
    /// Starts reading `body` (on a task of the server's runtime).
    pub fn spawn(body: Body) -> BodySource {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(async move {
            let mut s = body.into_data_stream();
            while let Some(piece) = s.next().await {
                let failed = piece.is_err();
                if tx.send(piece).await.is_err() || failed {
                    break;
                }
            }
        });
        BodySource { rx, done: false }
    }

    /// The next piece of the body, `None` at its end. Blocks: call it from a blocking thread.
    pub fn next_blocking(&mut self) -> ApiResult<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        match self.rx.blocking_recv() {
            Some(Ok(b)) => Ok(Some(b)),
            Some(Err(e)) => {
                self.done = true;
                Err(ApiError::bad_request(format!(
                    "cannot read the request body: {e}"
                )))
            }
            None => {
                self.done = true;
                Ok(None)
            }
        }
    }

    /// The answer to an upload read from this body: 201 `{"ok", "id", "rev"}` for a written
    /// revision; on a refusal, the rest of the body is drained first (up to [`DRAIN_LIMIT`]) so
    /// the client reads the answer instead of a reset connection.
    pub async fn answer(self, result: ApiResult<(String, Rev)>) -> ApiResult {
        match result {
            Ok((id, rev)) => Ok(json_response(StatusCode::CREATED, saved(&id, &rev))),
            Err(e) => {
                self.drain().await;
                Err(e)
            }
        }
    }

    /// Reads and drops what is left of the body, up to [`DRAIN_LIMIT`] bytes.
    pub async fn drain(mut self) {
        let mut left = DRAIN_LIMIT;
        while !self.done && left > 0 {
            match self.rx.recv().await {
                Some(Ok(b)) => left = left.saturating_sub(b.len() as u64),
                _ => self.done = true,
            }
        }
    }
}

/// `true` when the client waits for `100 Continue` before sending the body (it sends nothing
/// unless the body is read).
fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
}

/// Refuses an upload before reading its body: what the client is sending is drained first (up
/// to [`DRAIN_LIMIT`]) unless it waits for `100 Continue`. Returns `e`.
pub(crate) async fn refuse(headers: &HeaderMap, body: Body, e: ApiError) -> ApiError {
    if !expects_continue(headers) {
        BodySource::spawn(body).drain().await;
    }
    e
}

/// Where a response body written from a blocking thread goes.
pub(crate) struct BodySink {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
}

impl BodySink {
    /// Sends a piece; an error once the client has gone away (stop writing then).
    pub fn send(&self, b: impl Into<Bytes>) -> ApiResult<()> {
        self.tx.blocking_send(Ok(b.into())).map_err(|_| {
            ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "closed",
                "the client went away",
            )
        })
    }

    /// Cuts the response: a failure after the status was sent can only end the body early.
    pub fn fail(&self, why: String) {
        let _ = self.tx.blocking_send(Err(std::io::Error::other(why)));
    }
}

/// A response body that `write` produces on a blocking thread. An error it returns cuts the body
/// short (the status line is long gone).
pub(crate) fn blocking_body<F>(write: F) -> Body
where
    F: FnOnce(&BodySink) -> ApiResult<()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::task::spawn_blocking(move || {
        let sink = BodySink { tx };
        if let Err(e) = write(&sink) {
            sink.fail(format!("{}: {}", e.error, e.reason));
        }
    });
    Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
}
