//! How a claimed batch becomes sends: one message per delivery, except an e-mail digest's.

use std::collections::hash_map::{Entry, HashMap};

use crate::domain::{Channel, ClaimedDelivery, OrderId, SubscriberId};

/// Splits a claimed batch into sends: an e-mail digest subscriber's deliveries of one order
/// go together (the fan-out made them due together), in the order their events were detected;
/// every other delivery goes alone.
pub(super) fn sends(batch: Vec<ClaimedDelivery>) -> Vec<Vec<ClaimedDelivery>> {
    let mut sends: Vec<Vec<ClaimedDelivery>> = Vec::with_capacity(batch.len());
    let mut digests: HashMap<(SubscriberId, OrderId), usize> = HashMap::new();
    for delivery in batch {
        let is_digest = matches!(
            delivery.subscriber.channel,
            Channel::Email {
                digest_seconds: Some(_),
                ..
            }
        );
        if !is_digest {
            sends.push(vec![delivery]);
            continue;
        }
        match digests.entry((delivery.subscriber.id.clone(), delivery.order_id.clone())) {
            Entry::Occupied(entry) => sends[*entry.get()].push(delivery),
            Entry::Vacant(entry) => {
                entry.insert(sends.len());
                sends.push(vec![delivery]);
            }
        }
    }
    for &index in digests.values() {
        // Stable: events detected together keep the claim's (insertion) order.
        sends[index].sort_by_key(|delivery| delivery.event_created_at);
    }
    sends
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ClaimToken, SubscriberFilter, SubscriberStatus};
    use crate::domain::{DeliveryId, EventId, EventType, MarkReadPolicy, Subscriber};
    use chrono::Utc;
    use std::sync::Arc;

    fn subscriber(channel: Channel) -> Subscriber {
        Subscriber {
            id: SubscriberId::generate(),
            channel,
            filter: SubscriberFilter::default(),
            description: None,
            status: SubscriberStatus::Active,
            disabled_reason: None,
            mark_read: MarkReadPolicy::default(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
            secrets: Vec::new(),
        }
    }

    fn delivery(
        subscriber: &Subscriber,
        order: &str,
        message: i64,
        detected_secs_ago: i64,
    ) -> ClaimedDelivery {
        let order_id = OrderId::parse("order_id", order).unwrap();
        ClaimedDelivery {
            id: DeliveryId::generate(),
            claim: ClaimToken::generate(),
            event_id: EventId::derive(EventType::ChatMessageCreated, &order_id, Some(message)),
            event_type: EventType::ChatMessageCreated,
            order_id,
            event_created_at: Utc::now() - chrono::Duration::seconds(detected_secs_ago),
            payload: Arc::from("{}"),
            attempts_made: 0,
            subscriber: Arc::new(subscriber.clone()),
        }
    }

    #[test]
    fn a_digest_subscribers_deliveries_of_one_order_go_as_one_send_in_detection_order() {
        let digest = subscriber(Channel::Email {
            to: vec!["staff@store.example".to_owned()],
            digest_seconds: Some(60),
        });
        let plain = subscriber(Channel::Email {
            to: vec!["ops@store.example".to_owned()],
            digest_seconds: None,
        });
        let batch = vec![
            delivery(&digest, "1", 2, 5),
            delivery(&plain, "1", 1, 9),
            delivery(&digest, "2", 1, 9),
            delivery(&plain, "1", 2, 5),
            delivery(&digest, "1", 1, 9),
        ];
        let ids = |picks: &[usize]| -> Vec<EventId> {
            picks.iter().map(|&i| batch[i].event_id.clone()).collect()
        };
        let expected = [ids(&[4, 0]), ids(&[1]), ids(&[2]), ids(&[3])];
        let found: Vec<Vec<EventId>> = sends(batch.clone())
            .iter()
            .map(|send| send.iter().map(|d| d.event_id.clone()).collect())
            .collect();
        assert_eq!(found, expected);
    }
}
