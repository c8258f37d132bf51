//! When an order is polled next, and in what state, after each poll. Pure, so the policy
//! (jitter, exponential back-off, 404 confirmations, expiry, the watch limit) is tested without a
//! clock.

use chrono::{DateTime, Utc};
use std::time::Duration;

use crate::config::PollerSettings;
use crate::domain::{FallbackReason, Order, OrderState, PollProgress};
use crate::instacart::InstacartError;
use crate::time::{after, scaled};

/// `spread` is a random number in [-1, 1]; the caller draws it so this stays deterministic.
pub fn after_success(
    settings: &PollerSettings,
    order: &Order,
    fallback: Option<FallbackReason>,
    expired: bool,
    now: DateTime<Utc>,
    spread: f64,
) -> PollProgress {
    let progress = PollProgress {
        polled_at: now,
        state: if expired {
            OrderState::Expired
        } else {
            OrderState::Watching
        },
        fallback,
        next_poll_at: (!expired).then(|| next_regular(settings, order, now, spread)),
        last_error: None,
        consecutive_failures: 0,
        not_found_count: 0,
    };
    limit_watch(settings, order, progress)
}

pub fn after_failure(
    settings: &PollerSettings,
    order: &Order,
    fallback: Option<FallbackReason>,
    error: &InstacartError,
    now: DateTime<Utc>,
    spread: f64,
) -> PollProgress {
    let progress = match error {
        InstacartError::NotFound => {
            let confirmations = order.not_found_count + 1;
            let given_up = confirmations >= settings.not_found_confirmations;
            PollProgress {
                polled_at: now,
                state: if given_up {
                    OrderState::NotFound
                } else {
                    OrderState::Watching
                },
                fallback,
                next_poll_at: (!given_up).then(|| next_regular(settings, order, now, spread)),
                last_error: Some(format!(
                    "{error} (confirmation {confirmations} of {})",
                    settings.not_found_confirmations
                )),
                consecutive_failures: order.consecutive_failures,
                not_found_count: confirmations,
            }
        }
        _ => {
            let failures = order.consecutive_failures.saturating_add(1);
            // A back-off (and a Retry-After) counts from the failure, not from the schedule.
            // A permanent error (401, 403, an undocumented 4xx) will not pass by itself soon:
            // ask again only as often as the back-off ceiling allows.
            let backoff = if error.is_retryable() {
                settings
                    .interval
                    .saturating_mul(1u32 << failures.min(16))
                    .min(settings.max_backoff)
            } else {
                settings.max_backoff
            };
            let wait = jittered(backoff, settings.jitter, spread)
                .max(error.retry_after().unwrap_or_default());
            PollProgress {
                polled_at: now,
                state: OrderState::Watching,
                fallback,
                next_poll_at: Some(after(now, wait)),
                last_error: Some(error.to_string()),
                consecutive_failures: failures,
                not_found_count: 0,
            }
        }
    };
    limit_watch(settings, order, progress)
}

/// The next regular poll: one jittered interval after the poll just made was due, so the wait
/// for a turn and the poll itself do not stretch the interval; one interval from `now` when that
/// has passed already (the bridge fell behind), so a late bridge does not catch up in a burst.
fn next_regular(
    settings: &PollerSettings,
    order: &Order,
    now: DateTime<Utc>,
    spread: f64,
) -> DateTime<Utc> {
    let interval = jittered(settings.interval, settings.jitter, spread);
    order
        .next_poll_at
        .map(|due| after(due, interval))
        .filter(|next| *next > now)
        .unwrap_or_else(|| after(now, interval))
}

/// Stops an order still watched `poller.max_watch` after its watch started: orders polled through
/// the chat-messages fallback never see `is_expired`, and an order failing for good would
/// otherwise be polled forever.
fn limit_watch(settings: &PollerSettings, order: &Order, progress: PollProgress) -> PollProgress {
    if progress.state != OrderState::Watching
        || progress.polled_at < after(order.watched_since, settings.max_watch)
    {
        return progress;
    }
    PollProgress {
        state: OrderState::Stopped,
        next_poll_at: None,
        last_error: Some(format!(
            "stopped: watched longer than poller.max_watch ({})",
            humantime::format_duration(settings.max_watch)
        )),
        ..progress
    }
}

fn jittered(base: Duration, jitter: f64, spread: f64) -> Duration {
    scaled(base, 1.0 + jitter * spread.clamp(-1.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::OrderId;
    use chrono::TimeDelta;

    fn settings() -> PollerSettings {
        PollerSettings {
            interval: Duration::from_secs(5),
            jitter: 0.1,
            max_backoff: Duration::from_secs(60),
            not_found_confirmations: 3,
            ..PollerSettings::default()
        }
    }

    fn order(failures: u32, not_found: u32) -> Order {
        Order {
            order_id: OrderId::parse("order_id", "1").unwrap(),
            user_id: None,
            state: OrderState::Watching,
            fallback: None,
            created_at: now(),
            watched_since: now(),
            next_poll_at: Some(now()),
            last_polled_at: None,
            last_error: None,
            consecutive_failures: failures,
            not_found_count: not_found,
        }
    }

    fn now() -> DateTime<Utc> {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    fn wait(p: &PollProgress) -> TimeDelta {
        p.next_poll_at.unwrap() - now()
    }

    #[test]
    fn success_schedules_the_next_poll_within_the_jitter_band() {
        let s = settings();
        let low = after_success(&s, &order(0, 0), None, false, now(), -1.0);
        let high = after_success(&s, &order(0, 0), None, false, now(), 1.0);
        assert_eq!(wait(&low), TimeDelta::milliseconds(4500));
        assert_eq!(wait(&high), TimeDelta::milliseconds(5500));
        assert_eq!(low.state, OrderState::Watching);
    }

    #[test]
    fn the_next_poll_counts_from_when_the_last_was_due_not_when_it_finished() {
        let s = settings();
        let mut late = order(0, 0);
        late.next_poll_at = Some(now() - TimeDelta::milliseconds(300));
        let p = after_success(&s, &late, None, false, now(), 0.0);
        assert_eq!(wait(&p), TimeDelta::milliseconds(4700));
        let high = after_success(&s, &late, None, false, now(), 1.0);
        assert_eq!(wait(&high), TimeDelta::milliseconds(5200));
        let confirming = after_failure(&s, &late, None, &InstacartError::NotFound, now(), 0.0);
        assert_eq!(wait(&confirming), TimeDelta::milliseconds(4700));
    }

    #[test]
    fn a_bridge_fallen_behind_polls_again_an_interval_from_now_without_catching_up() {
        let s = settings();
        let mut behind = order(0, 0);
        behind.next_poll_at = Some(now() - TimeDelta::seconds(8));
        let p = after_success(&s, &behind, None, false, now(), 0.0);
        assert_eq!(wait(&p), TimeDelta::seconds(5));
        // Exactly one interval late is late too: due now would poll again at once.
        behind.next_poll_at = Some(now() - TimeDelta::seconds(5));
        let p = after_success(&s, &behind, None, false, now(), 0.0);
        assert_eq!(wait(&p), TimeDelta::seconds(5));
    }

    #[test]
    fn a_back_off_counts_from_the_failure_however_late_the_poll_was() {
        let mut late = order(0, 0);
        late.next_poll_at = Some(now() - TimeDelta::seconds(3));
        let err = InstacartError::Server { status: 503 };
        let p = after_failure(&settings(), &late, None, &err, now(), 0.0);
        assert_eq!(wait(&p), TimeDelta::seconds(10));
    }

    #[test]
    fn expiry_stops_watching() {
        let p = after_success(&settings(), &order(0, 0), None, true, now(), 0.0);
        assert_eq!(p.state, OrderState::Expired);
        assert_eq!(p.next_poll_at, None);
    }

    #[test]
    fn server_errors_back_off_exponentially_up_to_the_ceiling() {
        let s = settings();
        let err = InstacartError::Server { status: 503 };
        let waits: Vec<i64> = [0, 1, 2, 3, 10]
            .into_iter()
            .map(|f| wait(&after_failure(&s, &order(f, 0), None, &err, now(), 0.0)).num_seconds())
            .collect();
        assert_eq!(waits, [10, 20, 40, 60, 60]);
        let p = after_failure(&s, &order(0, 0), None, &err, now(), 0.0);
        assert_eq!(p.consecutive_failures, 1);
        assert!(p.last_error.unwrap().contains("503"));
    }

    #[test]
    fn permanent_errors_wait_the_back_off_ceiling_from_the_first_failure() {
        let s = settings();
        for err in [
            InstacartError::Unauthorized,
            InstacartError::ShopperPiiRedacted,
            InstacartError::Unexpected {
                status: 422,
                code: None,
                message: "no".to_owned(),
            },
            InstacartError::Auth(Box::new(InstacartError::Unauthorized)),
        ] {
            let p = after_failure(&s, &order(0, 0), None, &err, now(), 0.0);
            assert_eq!(wait(&p).num_seconds(), 60, "{err}");
            assert_eq!(p.state, OrderState::Watching);
            assert_eq!(p.consecutive_failures, 1);
        }
        let throttled = InstacartError::Auth(Box::new(InstacartError::Server { status: 502 }));
        let p = after_failure(&s, &order(0, 0), None, &throttled, now(), 0.0);
        assert_eq!(wait(&p).num_seconds(), 10, "retryable: exponential");
    }

    #[test]
    fn an_order_watched_longer_than_max_watch_is_stopped() {
        let s = settings();
        let mut old = order(0, 0);
        old.watched_since = now() - TimeDelta::hours(72);
        let expected = "stopped: watched longer than poller.max_watch (3days)";

        let polled = after_success(
            &s,
            &old,
            Some(FallbackReason::UserIdNotFound),
            false,
            now(),
            0.0,
        );
        assert_eq!(polled.state, OrderState::Stopped);
        assert_eq!(polled.next_poll_at, None);
        assert_eq!(polled.fallback, Some(FallbackReason::UserIdNotFound));
        assert_eq!(polled.last_error.as_deref(), Some(expected));

        let failed = after_failure(&s, &old, None, &InstacartError::Unauthorized, now(), 0.0);
        assert_eq!(failed.state, OrderState::Stopped);
        assert_eq!(failed.last_error.as_deref(), Some(expected));
        let given_up = after_failure(
            &s,
            &order(0, 2),
            None,
            &InstacartError::NotFound,
            now(),
            0.0,
        );
        assert_eq!(given_up.state, OrderState::NotFound, "a final state stays");

        // The limit counts from the current watch, not from the order's first registration.
        old.watched_since = now() - TimeDelta::hours(72) + TimeDelta::milliseconds(1);
        old.created_at = now() - TimeDelta::days(30);
        let p = after_success(&s, &old, None, false, now(), 0.0);
        assert_eq!((p.state, p.last_error), (OrderState::Watching, None));
    }

    #[test]
    fn retry_after_is_honoured_when_longer_than_the_backoff() {
        let err = InstacartError::RateLimited {
            retry_after: Some(Duration::from_secs(120)),
        };
        let p = after_failure(&settings(), &order(0, 0), None, &err, now(), 0.0);
        assert_eq!(wait(&p).num_seconds(), 120);
    }

    #[test]
    fn absurd_waits_saturate_instead_of_overflowing_the_clock() {
        let huge = InstacartError::RateLimited {
            retry_after: Some(Duration::MAX),
        };
        let p = after_failure(&settings(), &order(0, 0), None, &huge, now(), 1.0);
        assert_eq!(p.next_poll_at, Some(DateTime::<Utc>::MAX_UTC));
        let s = PollerSettings {
            interval: Duration::MAX,
            max_backoff: Duration::MAX,
            ..settings()
        };
        let err = InstacartError::Server { status: 503 };
        let p = after_failure(&s, &order(3, 0), None, &err, now(), 1.0);
        assert_eq!(p.next_poll_at, Some(DateTime::<Utc>::MAX_UTC));
        let p = after_success(&s, &order(0, 0), None, false, now(), 1.0);
        assert_eq!(p.next_poll_at, Some(DateTime::<Utc>::MAX_UTC));
    }

    #[test]
    fn not_found_is_confirmed_before_the_order_is_given_up() {
        let s = settings();
        let first = after_failure(
            &s,
            &order(0, 0),
            None,
            &InstacartError::NotFound,
            now(),
            0.0,
        );
        assert_eq!(first.state, OrderState::Watching);
        assert_eq!(first.not_found_count, 1);
        let third = after_failure(
            &s,
            &order(0, 2),
            None,
            &InstacartError::NotFound,
            now(),
            0.0,
        );
        assert_eq!(third.state, OrderState::NotFound);
        assert_eq!(third.next_poll_at, None);
        assert!(third.last_error.unwrap().contains("confirmation 3 of 3"));
    }
}
