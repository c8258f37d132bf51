//! When a failed delivery is tried again.

use std::time::Duration;

use crate::time::{scaled, MAX_RETRY_AFTER};

/// The wait before the next attempt, once `attempts_made` attempts (this one included) have
/// failed with a retryable outcome; `None` when `schedule` is exhausted and the delivery is to be
/// parked. The receiver's `retry_after` wins over the schedule (capped at [`MAX_RETRY_AFTER`]),
/// but never buys attempts beyond it. Otherwise the scheduled wait is spread by `jitter` (a share,
/// either way); `spread` in `[-1, 1]` picks the point in that band, so the caller owns randomness.
pub fn retry_delay(
    schedule: &[Duration],
    jitter: f64,
    attempts_made: u32,
    retry_after: Option<Duration>,
    spread: f64,
) -> Option<Duration> {
    let index = usize::try_from(attempts_made.saturating_sub(1)).ok()?;
    let scheduled = *schedule.get(index)?;
    Some(match retry_after {
        Some(asked) => asked.min(MAX_RETRY_AFTER),
        None => scaled(scheduled, 1.0 + jitter * spread.clamp(-1.0, 1.0)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn attempt_k_waits_for_the_kth_scheduled_delay() {
        let schedule = [secs(5), secs(300), secs(1800)];
        assert_eq!(retry_delay(&schedule, 0.0, 1, None, 0.7), Some(secs(5)));
        assert_eq!(retry_delay(&schedule, 0.0, 2, None, 0.7), Some(secs(300)));
        assert_eq!(retry_delay(&schedule, 0.0, 3, None, 0.7), Some(secs(1800)));
    }

    #[test]
    fn exhausted_schedule_parks_the_delivery() {
        let schedule = [secs(5), secs(300)];
        assert_eq!(retry_delay(&schedule, 0.1, 3, None, 0.0), None);
        assert_eq!(retry_delay(&schedule, 0.1, 3, Some(secs(1)), 0.0), None);
        assert_eq!(retry_delay(&[], 0.1, 1, None, 0.0), None);
    }

    #[test]
    fn jitter_spreads_the_wait_within_its_share() {
        let schedule = [secs(100)];
        assert_eq!(retry_delay(&schedule, 0.1, 1, None, -1.0), Some(secs(90)));
        assert_eq!(retry_delay(&schedule, 0.1, 1, None, 1.0), Some(secs(110)));
        assert_eq!(retry_delay(&schedule, 0.1, 1, None, 0.5), Some(secs(105)));
        // An out-of-range spread cannot push the wait outside the band.
        assert_eq!(retry_delay(&schedule, 0.1, 1, None, 7.0), Some(secs(110)));
    }

    #[test]
    fn retry_after_replaces_the_scheduled_wait_up_to_a_day() {
        let schedule = [secs(5), secs(300)];
        assert_eq!(
            retry_delay(&schedule, 0.1, 1, Some(secs(120)), 1.0),
            Some(secs(120))
        );
        assert_eq!(
            retry_delay(&schedule, 0.1, 2, Some(secs(7 * 24 * 3600)), 1.0),
            Some(MAX_RETRY_AFTER)
        );
    }
}
