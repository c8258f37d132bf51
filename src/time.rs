//! Time arithmetic that cannot panic, and the waits servers ask for with `Retry-After`.
//!
//! Waits come from configuration and from remote servers, so any of them can be absurd: chrono's
//! `DateTime + TimeDelta` and std's `Duration::mul_f64` panic on overflow, which would take a
//! background task down. Everything here saturates instead.

use chrono::{DateTime, TimeDelta, Utc};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use std::time::Duration;

/// The longest `Retry-After` honoured. A server asking for more (a misconfigured proxy, a
/// corrupted header) is waited on for a day, then asked again.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// `at + wait`, saturating at the latest time chrono can represent.
pub fn after(at: DateTime<Utc>, wait: Duration) -> DateTime<Utc> {
    at.checked_add_signed(delta(wait))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `wait` as a chrono `TimeDelta`, saturating.
pub fn delta(wait: Duration) -> TimeDelta {
    TimeDelta::from_std(wait).unwrap_or(TimeDelta::MAX)
}

/// `wait * factor`, saturating at `Duration::MAX`; a negative (or NaN) factor gives zero.
pub fn scaled(wait: Duration, factor: f64) -> Duration {
    Duration::try_from_secs_f64((wait.as_secs_f64() * factor).max(0.0)).unwrap_or(Duration::MAX)
}

/// `Retry-After` as delay-seconds or an HTTP-date (relative to `now`; a past date means now),
/// capped at [`MAX_RETRY_AFTER`]. `None` when the value is neither.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = DateTime::parse_from_rfc2822(value).ok()?;
            (at.with_timezone(&Utc) - now)
                .to_std()
                .unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// The `Retry-After` of an answer's `headers`, when present and readable (see
/// [`parse_retry_after`]).
pub fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2015-10-21T07:28:00Z".parse().unwrap()
    }

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        assert_eq!(
            parse_retry_after(" 120 ", now()),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:30:30 GMT", now()),
            Some(Duration::from_secs(150))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now()),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now()), None);
        assert_eq!(parse_retry_after("-5", now()), None);
    }

    #[test]
    fn a_huge_retry_after_is_capped_at_a_day() {
        assert_eq!(
            parse_retry_after("99999999999999", now()),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            parse_retry_after("18446744073709551615", now()),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now()),
            Some(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn retry_after_is_read_from_the_headers() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers, now()), None);
        headers.insert(RETRY_AFTER, "99999999999999".parse().unwrap());
        assert_eq!(retry_after(&headers, now()), Some(MAX_RETRY_AFTER));
        headers.insert(RETRY_AFTER, "12".parse().unwrap());
        assert_eq!(retry_after(&headers, now()), Some(Duration::from_secs(12)));
    }

    #[test]
    fn adding_a_huge_wait_saturates_instead_of_panicking() {
        assert_eq!(after(now(), Duration::MAX), DateTime::<Utc>::MAX_UTC);
        assert_eq!(
            after(now(), Duration::from_secs(99_999_999_999_999)),
            DateTime::<Utc>::MAX_UTC
        );
        assert_eq!(
            after(now(), Duration::from_millis(1500)),
            now() + TimeDelta::milliseconds(1500)
        );
        assert_eq!(delta(Duration::MAX), TimeDelta::MAX);
    }

    #[test]
    fn scaling_saturates_and_never_goes_negative() {
        assert_eq!(scaled(Duration::MAX, 1.5), Duration::MAX);
        assert_eq!(
            scaled(Duration::from_secs(100), 1.05),
            Duration::from_secs(105)
        );
        assert_eq!(scaled(Duration::from_secs(100), -1.0), Duration::ZERO);
        assert_eq!(scaled(Duration::from_secs(100), f64::NAN), Duration::ZERO);
    }
}
