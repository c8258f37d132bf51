//! HTTP helpers shared by the channels that speak HTTP: response excerpts and transport-error
//! texts safe to store (no URL, hence no secret embedded in one).

use std::error::Error as StdError;

use crate::telemetry::error_chain;

/// How much of a response body is kept for the attempt log.
pub const EXCERPT_BYTES: usize = 256;
/// Bodies up to this size are read to the end so the connection goes back to the pool.
const DRAIN_LIMIT: usize = 64 * 1024;

/// The first [`EXCERPT_BYTES`] of the body, lossily decoded; `None` when the body is empty.
pub async fn read_excerpt(mut response: reqwest::Response) -> Option<String> {
    let mut excerpt = Vec::with_capacity(EXCERPT_BYTES);
    let mut read = 0usize;
    // A failed read mid-body only shortens the excerpt: the status already decided the outcome.
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = EXCERPT_BYTES - excerpt.len();
        excerpt.extend_from_slice(&chunk[..chunk.len().min(room)]);
        read += chunk.len();
        if read > DRAIN_LIMIT {
            break;
        }
    }
    (!excerpt.is_empty()).then(|| String::from_utf8_lossy(&excerpt).into_owned())
}

/// The error and its causes, without the request URL.
pub fn transport_error_text(err: reqwest::Error) -> String {
    error_chain(&err.without_url())
}

/// The first cause of type `E` in `err`'s source chain.
pub fn find_cause<'a, E: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a E> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}
