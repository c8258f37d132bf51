//! The differ: a pure function from (what the store has seen, what upstream returned) to the
//! events to emit and the seen-state changes to record. Novelty is decided by id membership, never
//! by id order, and an empty `chat_messages` on an expired order deletes nothing.
//!
//! What the bridge itself did in the chat is not echoed back to the subscriber behind it: a
//! message it sent is marked `sent_by_retailer` and not announced as new to its origin, and a
//! reading of shopper messages an `on_delivery` subscriber caused is not announced to it.

use crate::domain::{EventData, EventId, EventPayload, EventSubject, EventType, OrderId};
use crate::domain::{NewEvent, SeenState};
use crate::instacart::models::{
    ChatMessage, ChatUser, LifecycleMessage, ParticipantType, PollSnapshot,
};
use chrono::{DateTime, SecondsFormat, Utc};

/// What one poll changes, before the poller adds the order's progress.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Diff {
    pub new_chat: Vec<(i64, bool)>,
    pub newly_read: Vec<i64>,
    pub new_lifecycle: Vec<i64>,
    pub events: Vec<NewEvent>,
    /// Upstream says chat messages are no longer accessible: the order's watch is over.
    pub expired: bool,
}

pub fn diff(
    order_id: &OrderId,
    seen: &SeenState,
    snapshot: &PollSnapshot,
    now: DateTime<Utc>,
) -> Diff {
    let builder = EventBuilder {
        order_id,
        snapshot,
        now,
    };
    let mut out = Diff::default();

    let mut chat: Vec<&ChatMessage> = snapshot.chat_messages.iter().collect();
    chat.sort_by_key(|m| (m.created_at, m.id));
    for message in chat {
        let sent = seen.sent.get(&message.id);
        let (event_type, exclude) = match seen.chat.get(&message.id) {
            None => {
                out.new_chat.push((message.id, message.read));
                let origin = sent.cloned().flatten();
                (EventType::ChatMessageCreated, Vec::from_iter(origin))
            }
            Some(false) if message.read => {
                out.newly_read.push(message.id);
                // A mark-read request reads the shopper's messages only: the shopper reading the
                // customer's (or retailer's) message is news to everyone.
                let requesters = match message.sender_type {
                    ParticipantType::Driver => seen.read_requested.get(&message.id),
                    ParticipantType::User => None,
                };
                (
                    EventType::ChatMessageRead,
                    requesters.cloned().unwrap_or_default(),
                )
            }
            Some(_) => continue,
        };
        let mut event = builder.chat(event_type, message, sent.is_some());
        event.exclude_subscribers = exclude;
        out.events.push(event);
    }

    let mut lifecycle: Vec<&LifecycleMessage> = snapshot
        .lifecycle_messages
        .iter()
        .filter(|n| !seen.lifecycle.contains(&n.notification_id))
        .collect();
    lifecycle.sort_by_key(|n| (n.created_at, n.notification_id));
    for notification in lifecycle {
        out.new_lifecycle.push(notification.notification_id);
        out.events.push(builder.lifecycle(notification));
    }

    if snapshot.is_expired == Some(true) {
        out.expired = true;
        out.events.push(builder.expired());
    }
    out
}

struct EventBuilder<'a> {
    order_id: &'a OrderId,
    snapshot: &'a PollSnapshot,
    now: DateTime<Utc>,
}

impl<'a> EventBuilder<'a> {
    fn sender_of(&self, message: &ChatMessage) -> Option<&'a ChatUser> {
        let s = self.snapshot;
        match message.sender_type {
            ParticipantType::User => Some(&s.customer),
            ParticipantType::Driver => s
                .current_shopper
                .iter()
                .chain(&s.shoppers)
                .find(|u| u.id == message.sender_id),
        }
    }

    fn chat(
        &self,
        event_type: EventType,
        message: &ChatMessage,
        sent_by_retailer: bool,
    ) -> NewEvent {
        let subject = EventSubject::Chat {
            message: message.clone(),
            sender: self.sender_of(message).cloned(),
            sent_by_retailer,
        };
        self.event(event_type, Some(message.id), subject)
    }

    fn lifecycle(&self, notification: &LifecycleMessage) -> NewEvent {
        self.event(
            EventType::LifecycleMessageCreated,
            Some(notification.notification_id),
            EventSubject::Lifecycle {
                notification: notification.clone(),
            },
        )
    }

    fn expired(&self) -> NewEvent {
        self.event(EventType::OrderChatExpired, None, EventSubject::Order {})
    }

    fn event(
        &self,
        event_type: EventType,
        subject_id: Option<i64>,
        subject: EventSubject,
    ) -> NewEvent {
        let payload = EventPayload {
            event_type,
            timestamp: self.now.to_rfc3339_opts(SecondsFormat::Millis, true),
            data: EventData {
                order_id: self.order_id.clone(),
                subject,
                customer: self.snapshot.customer.clone(),
                current_shopper: self.snapshot.current_shopper.clone(),
            },
        };
        NewEvent::new(
            EventId::derive(event_type, self.order_id, subject_id),
            self.order_id.clone(),
            event_type,
            payload.to_json(),
            self.now,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SubscriberId;
    use crate::instacart::models::OrderMessagesResponse;
    use serde_json::Value;

    fn seed_snapshot() -> PollSnapshot {
        let seed = include_str!("../../tests/fixtures/order_messages.json");
        serde_json::from_str::<OrderMessagesResponse>(seed)
            .unwrap()
            .into()
    }

    fn order() -> OrderId {
        OrderId::parse("order_id", "122233").unwrap()
    }

    fn now() -> DateTime<Utc> {
        "2021-01-01T00:10:00Z".parse().unwrap()
    }

    fn types(diff: &Diff) -> Vec<EventType> {
        diff.events.iter().map(|e| e.event_type).collect()
    }

    fn seen_after(diff: &Diff) -> SeenState {
        let mut seen = SeenState::default();
        seen.chat.extend(diff.new_chat.iter().copied());
        seen.lifecycle.extend(diff.new_lifecycle.iter().copied());
        seen
    }

    #[test]
    fn first_poll_announces_every_message_with_the_sender_resolved() {
        let diff = diff(&order(), &SeenState::default(), &seed_snapshot(), now());
        assert_eq!(
            types(&diff),
            [
                EventType::ChatMessageCreated,
                EventType::LifecycleMessageCreated
            ]
        );
        let body: Value = serde_json::from_str(&diff.events[0].payload).unwrap();
        assert_eq!(body["type"], "chat_message.created");
        assert_eq!(body["timestamp"], "2021-01-01T00:10:00.000Z");
        assert_eq!(body["data"]["order_id"], "122233");
        assert_eq!(body["data"]["message"]["id"], 123456789);
        assert_eq!(body["data"]["message"]["body"], "MessageBody");
        assert_eq!(body["data"]["sender"]["display_name"], "SomeFirstName");
        assert_eq!(body["data"]["sender"]["avatar_url"], "SomeURL");
        assert_eq!(body["data"]["customer"]["display_name"], "John");
        assert_eq!(body["data"]["current_shopper"]["display_name"], "Robert");

        let lifecycle: Value = serde_json::from_str(&diff.events[1].payload).unwrap();
        assert_eq!(
            lifecycle["data"]["notification"]["body"],
            "Your order has been picked up."
        );
        assert_eq!(lifecycle["data"]["notification"]["medium"], "sms");
    }

    #[test]
    fn a_second_poll_of_the_same_response_emits_nothing() {
        let first = diff(&order(), &SeenState::default(), &seed_snapshot(), now());
        let second = diff(&order(), &seen_after(&first), &seed_snapshot(), now());
        assert_eq!(second, Diff::default());
    }

    #[test]
    fn novelty_is_by_membership_not_by_increasing_ids() {
        let mut snapshot = seed_snapshot();
        let seen = seen_after(&diff(&order(), &SeenState::default(), &snapshot, now()));
        let mut older_id = snapshot.chat_messages[0].clone();
        older_id.id = 5; // smaller than every id already seen
        snapshot.chat_messages.push(older_id);
        let diff = diff(&order(), &seen, &snapshot, now());
        assert_eq!(diff.new_chat, [(5, false)]);
        assert_eq!(types(&diff), [EventType::ChatMessageCreated]);
    }

    #[test]
    fn a_read_flag_turning_true_is_announced_once() {
        let mut snapshot = seed_snapshot();
        let seen = seen_after(&diff(&order(), &SeenState::default(), &snapshot, now()));
        snapshot.chat_messages[0].read = true;
        snapshot.chat_messages[0].read_at = Some(now());
        let read = diff(&order(), &seen, &snapshot, now());
        assert_eq!(read.newly_read, [123456789]);
        assert_eq!(types(&read), [EventType::ChatMessageRead]);
        let created_id = EventId::derive(EventType::ChatMessageCreated, &order(), Some(123456789));
        assert_ne!(read.events[0].id, created_id);

        let mut seen_read = seen;
        seen_read.chat.insert(123456789, true);
        assert_eq!(
            diff(&order(), &seen_read, &snapshot, now()),
            Diff::default()
        );
    }

    #[test]
    fn a_message_first_seen_already_read_is_only_created() {
        let mut snapshot = seed_snapshot();
        snapshot.chat_messages[0].read = true;
        let diff = diff(&order(), &SeenState::default(), &snapshot, now());
        assert_eq!(diff.new_chat, [(123456789, true)]);
        assert!(diff.newly_read.is_empty());
    }

    #[test]
    fn expiry_with_empty_chat_announces_expiry_and_deletes_nothing() {
        let mut snapshot = seed_snapshot();
        let seen = seen_after(&diff(&order(), &SeenState::default(), &snapshot, now()));
        snapshot.chat_messages.clear();
        snapshot.is_expired = Some(true);
        let diff = diff(&order(), &seen, &snapshot, now());
        assert!(diff.expired);
        assert_eq!(types(&diff), [EventType::OrderChatExpired]);
        assert!(diff.new_chat.is_empty() && diff.newly_read.is_empty());
    }

    #[test]
    fn events_follow_creation_time_and_ids_are_stable_across_polls() {
        let mut snapshot = seed_snapshot();
        let mut earlier = snapshot.chat_messages[0].clone();
        earlier.id = 999;
        earlier.created_at = "2020-12-31T23:00:00Z".parse().unwrap();
        snapshot.chat_messages.push(earlier);
        let a = diff(&order(), &SeenState::default(), &snapshot, now());
        let later: DateTime<Utc> = "2021-01-02T00:00:00Z".parse().unwrap();
        let b = diff(&order(), &SeenState::default(), &snapshot, later);
        assert_eq!(a.new_chat[0].0, 999);
        let ids = |d: &Diff| d.events.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&a), ids(&b));
    }

    #[test]
    fn an_unknown_sender_is_null_not_guessed() {
        let mut snapshot = seed_snapshot();
        snapshot.chat_messages[0].sender_id = 1;
        let diff = diff(&order(), &SeenState::default(), &snapshot, now());
        let body: Value = serde_json::from_str(&diff.events[0].payload).unwrap();
        assert!(body["data"]["sender"].is_null());
    }

    /// The seed's shopper message plus one the bridge sent (id 7, shown as the customer's).
    fn with_sent_message() -> PollSnapshot {
        let mut snapshot = seed_snapshot();
        let mut sent = snapshot.chat_messages[0].clone();
        sent.id = 7;
        sent.sender_type = ParticipantType::User;
        sent.sender_id = snapshot.customer.id;
        sent.recipient_type = ParticipantType::Driver;
        snapshot.chat_messages.push(sent);
        snapshot
    }

    fn body(event: &NewEvent) -> Value {
        serde_json::from_str(&event.payload).unwrap()
    }

    #[test]
    fn a_message_sent_through_the_bridge_is_marked_and_not_echoed_to_its_origin() {
        let origin = SubscriberId::generate();
        let mut seen = SeenState::default();
        seen.sent.insert(7, Some(origin.clone()));
        let diff = diff(&order(), &seen, &with_sent_message(), now());
        assert_eq!(types(&diff)[..2], [EventType::ChatMessageCreated; 2]);
        let created = |id: i64| {
            let event = diff
                .events
                .iter()
                .find(|e| body(e)["data"]["message"]["id"] == id);
            event.expect("the message is announced")
        };
        let (shopper, sent) = (created(123456789), created(7));
        assert_eq!(body(shopper)["data"]["sent_by_retailer"], false);
        assert!(shopper.exclude_subscribers.is_empty());
        assert_eq!(body(sent)["data"]["message"]["id"], 7);
        assert_eq!(body(sent)["data"]["sent_by_retailer"], true);
        assert_eq!(sent.exclude_subscribers, [origin]);
    }

    #[test]
    fn a_message_sent_through_the_admin_api_is_marked_for_everyone() {
        let mut seen = SeenState::default();
        seen.sent.insert(7, None);
        let diff = diff(&order(), &seen, &with_sent_message(), now());
        let sent = diff
            .events
            .iter()
            .find(|e| body(e)["data"]["message"]["id"] == 7);
        let sent = sent.expect("the sent message is announced");
        assert_eq!(body(sent)["data"]["sent_by_retailer"], true);
        assert!(sent.exclude_subscribers.is_empty());
    }

    #[test]
    fn a_reading_the_subscriber_asked_for_is_not_announced_to_it() {
        let requester = SubscriberId::generate();
        let mut snapshot = with_sent_message();
        let mut seen = seen_after(&diff(&order(), &SeenState::default(), &snapshot, now()));
        seen.sent.insert(7, Some(requester.clone()));
        // The request found both unread; it reads only the shopper's one.
        for id in [123456789, 7] {
            seen.read_requested.insert(id, vec![requester.clone()]);
        }
        for message in &mut snapshot.chat_messages {
            message.read = true;
        }
        let read = diff(&order(), &seen, &snapshot, now());
        assert_eq!(types(&read), [EventType::ChatMessageRead; 2]);
        let excluded = |id: i64| {
            let event = read
                .events
                .iter()
                .find(|e| body(e)["data"]["message"]["id"] == id);
            event.expect("a reading").exclude_subscribers.clone()
        };
        assert_eq!(excluded(123456789), [requester]);
        // The shopper reading the retailer's message is news to its origin too.
        assert!(excluded(7).is_empty());
    }
}
