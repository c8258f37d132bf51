//! Per-subscriber send pacing (Slack allows about one message per second per channel): enforced
//! here rather than learnt from 429s. Claimed deliveries that come too early go back to the store
//! unattempted, each given its own later slot, so a burst drains at the allowed pace and in order
//! (the store claims ties by creation order).
//!
//! The pace is kept in memory: per process, which is the deployment unit so far.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::domain::ClaimedDelivery;
use crate::domain::{DeliveryId, SubscriberId};
use crate::store::Store;
use crate::time::after;

/// What a claimed batch turns into once paced.
#[derive(Debug, Default)]
pub struct Paced {
    /// May be sent now, in claim order.
    pub send: Vec<ClaimedDelivery>,
    /// Put back unattempted, due at each time; times are whole milliseconds, as stored.
    pub postponed: Vec<(DateTime<Utc>, Vec<DeliveryId>)>,
}

/// The earliest time each paced subscriber may be sent to again.
#[derive(Debug, Default)]
pub struct SendPace {
    next_send: Mutex<HashMap<SubscriberId, DateTime<Utc>>>,
}

impl SendPace {
    /// Splits `batch` (in claim order) at `now`: a subscriber for which `interval` gives a pace
    /// gets at most one send per interval; its other deliveries take the following free slots,
    /// one interval apart. Unpaced subscribers' deliveries all go.
    pub fn pace(
        &self,
        batch: Vec<ClaimedDelivery>,
        now: DateTime<Utc>,
        interval: impl Fn(&ClaimedDelivery) -> Option<Duration>,
    ) -> Paced {
        let mut next_send = self.next_send.lock().unwrap_or_else(|e| e.into_inner());
        // Entries in the past constrain nothing: dropping them keeps the map to busy subscribers.
        next_send.retain(|_, at| *at > now);
        let mut paced = Paced::default();
        let mut slots: HashMap<DateTime<Utc>, Vec<DeliveryId>> = HashMap::new();
        // Slots handed out in this call, per subscriber: the next one is one interval later.
        let mut taken: HashMap<SubscriberId, DateTime<Utc>> = HashMap::new();
        for delivery in batch {
            let Some(step) = interval(&delivery) else {
                paced.send.push(delivery);
                continue;
            };
            let subscriber = &delivery.subscriber.id;
            let slot = match taken.get(subscriber) {
                Some(previous) => after(*previous, step),
                None => next_send.get(subscriber).copied().unwrap_or(now),
            };
            taken.insert(subscriber.clone(), slot);
            if slot <= now {
                next_send.insert(subscriber.clone(), whole_ms(after(now, step)));
                paced.send.push(delivery);
            } else {
                slots.entry(whole_ms(slot)).or_default().push(delivery.id);
            }
        }
        paced.postponed = slots.into_iter().collect();
        paced.postponed.sort_by_key(|(at, _)| *at);
        paced
    }

    /// [`SendPace::pace`], then puts the postponed deliveries back in `store`; returns the ones
    /// to send now. A delivery that cannot be put back stays claimed until its lease ends and is
    /// claimed again then: late, not lost.
    pub async fn admit(
        &self,
        store: &dyn Store,
        batch: Vec<ClaimedDelivery>,
        now: DateTime<Utc>,
        interval: impl Fn(&ClaimedDelivery) -> Option<Duration>,
    ) -> Vec<ClaimedDelivery> {
        let Paced { send, postponed } = self.pace(batch, now, interval);
        for (until, ids) in &postponed {
            match store.postpone_deliveries(ids, *until).await {
                Ok(()) => tracing::debug!(count = ids.len(), %until, "deliveries paced"),
                Err(err) => tracing::warn!(
                    error = ?err, count = ids.len(),
                    "cannot put paced deliveries back; they wait for their lease to end"
                ),
            }
        }
        send
    }
}

/// Rounded up to the millisecond the store keeps, so a delivery put back until a slot is never
/// claimed before the slot (and put back again, and again).
fn whole_ms(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_round_up(TimeDelta::milliseconds(1))
        .unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Channel, ClaimToken, Subscriber, SubscriberFilter, SubscriberStatus};
    use crate::domain::{EventId, EventType, OrderId, SigningSecret};
    use std::sync::Arc;

    fn subscriber(id: &SubscriberId) -> Subscriber {
        Subscriber {
            id: id.clone(),
            channel: Channel::Webhook {
                url: "https://example.com/".parse().unwrap(),
            },
            filter: SubscriberFilter::default(),
            description: None,
            status: SubscriberStatus::Active,
            disabled_reason: None,
            mark_read: crate::domain::MarkReadPolicy::default(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
            secrets: vec![crate::domain::StoredSecret {
                secret: SigningSecret::generate(),
                created_at: Utc::now(),
                expires_at: None,
            }],
        }
    }

    fn delivery(subscriber_id: &SubscriberId) -> ClaimedDelivery {
        let order = OrderId::parse("order_id", "1").unwrap();
        ClaimedDelivery {
            id: DeliveryId::generate(),
            claim: ClaimToken::generate(),
            event_id: EventId::derive(EventType::OrderChatExpired, &order, None),
            event_type: EventType::OrderChatExpired,
            order_id: order,
            event_created_at: Utc::now(),
            payload: Arc::from("{}"),
            attempts_made: 0,
            subscriber: Arc::new(subscriber(subscriber_id)),
        }
    }

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000 + ms).unwrap()
    }

    fn ids(deliveries: &[ClaimedDelivery]) -> Vec<DeliveryId> {
        deliveries.iter().map(|d| d.id.clone()).collect()
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn a_burst_sends_one_now_and_gives_the_rest_successive_slots() {
        let pace = SendPace::default();
        let (paced_sub, free_sub) = (SubscriberId::generate(), SubscriberId::generate());
        let batch = vec![
            delivery(&paced_sub),
            delivery(&free_sub),
            delivery(&paced_sub),
            delivery(&paced_sub),
            delivery(&free_sub),
        ];
        let expected_send = vec![
            batch[0].id.clone(),
            batch[1].id.clone(),
            batch[4].id.clone(),
        ];
        let (second, third) = (batch[2].id.clone(), batch[3].id.clone());

        let paced = pace.pace(batch, at(0), |d| {
            (d.subscriber.id == paced_sub).then_some(SECOND)
        });
        assert_eq!(ids(&paced.send), expected_send);
        assert_eq!(
            paced.postponed,
            vec![(at(1000), vec![second]), (at(2000), vec![third])]
        );
    }

    #[test]
    fn a_subscriber_sent_to_recently_waits_for_the_end_of_its_interval() {
        let pace = SendPace::default();
        let sub = SubscriberId::generate();
        let pacing = |_: &ClaimedDelivery| Some(SECOND);
        assert_eq!(pace.pace(vec![delivery(&sub)], at(0), pacing).send.len(), 1);

        let early = delivery(&sub);
        let paced = pace.pace(vec![early.clone()], at(400), pacing);
        assert!(paced.send.is_empty());
        assert_eq!(paced.postponed, vec![(at(1000), vec![early.id.clone()])]);

        // Claimed again at its slot, it goes.
        let paced = pace.pace(vec![early.clone()], at(1000), pacing);
        assert_eq!(ids(&paced.send), vec![early.id]);
    }

    #[test]
    fn slots_are_whole_milliseconds_never_earlier_than_the_pace() {
        let pace = SendPace::default();
        let sub = SubscriberId::generate();
        let now = at(0) + TimeDelta::microseconds(300);
        let batch = vec![delivery(&sub), delivery(&sub)];
        let paced = pace.pace(batch, now, |_| Some(Duration::from_millis(250)));
        assert_eq!(paced.send.len(), 1);
        assert_eq!(paced.postponed[0].0, at(251));
    }
}
