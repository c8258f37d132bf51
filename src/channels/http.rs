//! HTTP helpers shared by the channels that speak HTTP: response excerpts, `Retry-After`, and
//! transport-error texts safe to store (no URL, hence no secret embedded in one).

use chrono::{DateTime, Utc};
use std::error::Error as StdError;
use std::time::Duration;

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

/// `Retry-After` as delay-seconds or an HTTP-date (relative to `now`; a past date means now).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

/// The error and its causes, without the request URL.
pub fn transport_error_text(err: reqwest::Error) -> String {
    let err = err.without_url();
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:30:30 GMT", now),
            Some(Duration::from_secs(150))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }
}
