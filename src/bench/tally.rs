//! The ledger of expected deliveries: which events each subscriber must receive, which arrived
//! when, and what arrived twice or unasked.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::receiver::Arrival;
use super::report::MissingReport;
use crate::domain::{EventId, EventType, OrderId};
use crate::simulator::MessageTiming;

pub struct Tally {
    subscribers: usize,
    /// Event id → slot of the message it announces.
    slots: HashMap<String, usize>,
    /// Upstream message id, by slot.
    message_ids: Vec<i64>,
    /// First arrival per slot and subscriber: `slot * subscribers + subscriber`.
    arrivals: Vec<Option<Instant>>,
    pub unique: u64,
    pub duplicates: u64,
    /// Accepted deliveries of events nobody expected.
    pub unexpected: u64,
    pub first_arrival: Option<Instant>,
    pub last_arrival: Option<Instant>,
}

impl Tally {
    pub fn new(subscribers: usize) -> Self {
        Self {
            subscribers,
            slots: HashMap::new(),
            message_ids: Vec::new(),
            arrivals: Vec::new(),
            unique: 0,
            duplicates: 0,
            unexpected: 0,
            first_arrival: None,
            last_arrival: None,
        }
    }

    /// Every subscriber must receive the `chat_message.created` event of this message.
    pub fn expect(&mut self, order_id: &OrderId, message_id: i64) {
        let event_id = EventId::derive(EventType::ChatMessageCreated, order_id, Some(message_id));
        self.slots
            .insert(event_id.as_str().to_owned(), self.message_ids.len());
        self.message_ids.push(message_id);
        self.arrivals
            .extend(std::iter::repeat_n(None, self.subscribers));
    }

    pub fn absorb(&mut self, arrivals: Vec<Arrival>) {
        for arrival in arrivals {
            let Some(&slot) = self.slots.get(&arrival.event_id) else {
                self.unexpected += 1;
                continue;
            };
            let Some(first) = self
                .arrivals
                .get_mut(slot * self.subscribers + arrival.subscriber)
            else {
                self.unexpected += 1;
                continue;
            };
            if first.is_some() {
                self.duplicates += 1;
            } else {
                *first = Some(arrival.at);
                self.unique += 1;
                self.first_arrival =
                    Some(self.first_arrival.map_or(arrival.at, |t| t.min(arrival.at)));
                self.last_arrival = self.last_arrival.max(Some(arrival.at));
            }
        }
    }

    pub fn expected(&self) -> u64 {
        self.arrivals.len() as u64
    }

    pub fn complete(&self) -> bool {
        self.unique == self.expected()
    }

    /// For each arrived delivery: arrival minus the message's first serving (bridge-added) and
    /// minus its creation (end to end).
    pub fn latencies(
        &self,
        timings: &HashMap<i64, MessageTiming>,
    ) -> (Vec<Duration>, Vec<Duration>) {
        let mut bridge = Vec::with_capacity(self.arrivals.len());
        let mut end_to_end = Vec::with_capacity(self.arrivals.len());
        for (index, arrival) in self.arrivals.iter().enumerate() {
            let message_id = self.message_ids[index / self.subscribers];
            if let (Some(at), Some(timing)) = (arrival, timings.get(&message_id)) {
                bridge.push(at.saturating_duration_since(timing.first_served));
                end_to_end.push(at.saturating_duration_since(timing.created));
            }
        }
        (bridge, end_to_end)
    }

    /// What has not arrived, telling a stuck poller (never served) from a stuck dispatcher.
    pub fn missing(&self, timings: &HashMap<i64, MessageTiming>) -> MissingReport {
        const EXAMPLES: usize = 5;
        let mut missing = MissingReport {
            deliveries: self.expected() - self.unique,
            messages_never_polled: 0,
            messages_polled_not_delivered: 0,
            example_event_ids: Vec::new(),
            bridge_log_tail: None,
        };
        let mut slot_ids: Vec<(&String, &usize)> = self.slots.iter().collect();
        slot_ids.sort_unstable_by_key(|(_, slot)| **slot);
        for (event_id, &slot) in slot_ids {
            let span = slot * self.subscribers..(slot + 1) * self.subscribers;
            if self.arrivals[span].iter().all(Option::is_some) {
                continue;
            }
            if timings.contains_key(&self.message_ids[slot]) {
                missing.messages_polled_not_delivered += 1;
            } else {
                missing.messages_never_polled += 1;
            }
            if missing.example_event_ids.len() < EXAMPLES {
                missing.example_event_ids.push(event_id.clone());
            }
        }
        missing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> OrderId {
        OrderId::parse("order_id", "10000001").unwrap()
    }

    fn arrival(subscriber: usize, message_id: i64, at: Instant) -> Arrival {
        let id = EventId::derive(EventType::ChatMessageCreated, &order(), Some(message_id));
        Arrival {
            subscriber,
            event_id: id.as_str().to_owned(),
            at,
        }
    }

    #[test]
    fn counts_unique_duplicate_and_unexpected_deliveries_per_subscriber() {
        let mut tally = Tally::new(2);
        tally.expect(&order(), 7);
        tally.expect(&order(), 8);
        assert_eq!(tally.expected(), 4);
        let now = Instant::now();
        let later = now + Duration::from_millis(5);
        tally.absorb(vec![
            arrival(0, 7, now),
            arrival(1, 7, later),
            arrival(1, 7, later),
            arrival(0, 99, now),
            arrival(0, 8, now),
        ]);
        assert_eq!(
            (tally.unique, tally.duplicates, tally.unexpected),
            (3, 1, 1)
        );
        assert!(!tally.complete());
        assert_eq!(tally.first_arrival, Some(now));
        assert_eq!(tally.last_arrival, Some(later));

        let created = now - Duration::from_millis(100);
        let timing = |message_id| MessageTiming {
            message_id,
            created,
            first_served: now - Duration::from_millis(10),
        };
        let timings = HashMap::from([(7, timing(7))]);
        let missing = tally.missing(&timings);
        assert_eq!(missing.deliveries, 1);
        assert_eq!(
            (
                missing.messages_polled_not_delivered,
                missing.messages_never_polled
            ),
            (0, 1)
        );
        let (bridge, end_to_end) = tally.latencies(&timings);
        assert_eq!(
            bridge,
            [Duration::from_millis(10), Duration::from_millis(15)]
        );
        assert_eq!(
            end_to_end,
            [Duration::from_millis(100), Duration::from_millis(105)]
        );

        tally.absorb(vec![arrival(1, 8, later)]);
        assert!(tally.complete());
    }
}
