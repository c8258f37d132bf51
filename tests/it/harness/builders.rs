//! The store's types as the poller and the dispatcher build them, for tests that seed the store
//! directly: a poll's commit, its events, an attempt on a claimed delivery.

use chrono::{TimeDelta, Utc};
use serde_json::json;

use shopper_bridge::domain::{
    AttemptRecord, AttemptResolution, ClaimedDelivery, EventId, EventType, NewEvent, OrderId,
    OrderState, PollProgress, SeenState,
};
use shopper_bridge::instacart::models::{OrderMessagesResponse, PollSnapshot};
use shopper_bridge::poller::differ;
use shopper_bridge::store::PollCommit;

use super::fixture_text;

/// A poll of one watched order that saw new chat messages, committed as the poller commits it:
/// the order stays watched and falls due again after [`CommitBuilder::next_poll_in`] (5 s
/// unless set).
pub struct CommitBuilder {
    commit: PollCommit,
}

/// A commit for `order_id` that saw nothing yet.
pub fn poll_commit(order_id: &OrderId) -> CommitBuilder {
    let now = Utc::now();
    CommitBuilder {
        commit: PollCommit {
            order_id: order_id.clone(),
            new_chat: Vec::new(),
            newly_read: Vec::new(),
            new_lifecycle: Vec::new(),
            events: Vec::new(),
            progress: PollProgress {
                polled_at: now,
                state: OrderState::Watching,
                fallback: None,
                next_poll_at: Some(now + TimeDelta::seconds(5)),
                last_error: None,
                consecutive_failures: 0,
                not_found_count: 0,
            },
        },
    }
}

impl CommitBuilder {
    /// A new unread chat message, with its event.
    pub fn new_chat_message(mut self, message_id: i64, event: NewEvent) -> Self {
        self.commit.new_chat.push((message_id, false));
        self.commit.events.push(event);
        self
    }

    pub fn next_poll_in(mut self, wait: TimeDelta) -> Self {
        self.commit.progress.next_poll_at = Some(self.commit.progress.polled_at + wait);
        self
    }

    pub fn build(self) -> PollCommit {
        self.commit
    }
}

/// The `chat_message.created` event of `message_id` in `order_id`, with `payload` as its body,
/// created now.
pub fn chat_message_event(order_id: &OrderId, message_id: i64, payload: String) -> NewEvent {
    let event_type = EventType::ChatMessageCreated;
    NewEvent::new(
        EventId::derive(event_type, order_id, Some(message_id)),
        order_id.clone(),
        event_type,
        payload,
        Utc::now(),
    )
}

/// A minimal `chat_message.created` event: its type, order and message id.
pub fn bare_chat_message_event(order_id: &OrderId, message_id: i64) -> NewEvent {
    let payload = json!({
        "type": "chat_message.created",
        "data": { "order_id": order_id.as_str(), "message_id": message_id },
    });
    chat_message_event(order_id, message_id, payload.to_string())
}

/// The `chat_message.created` event the poller makes of the seed response with only this chat
/// message (id and body) in it, diffed against an empty memory.
pub fn seed_chat_message_event(order_id: &OrderId, message_id: i64, body: &str) -> NewEvent {
    let mut response: OrderMessagesResponse =
        serde_json::from_str(&fixture_text("order_messages")).expect("the seed response");
    response.lifecycle_messages.clear();
    let message = &mut response.chat_messages[0];
    message.id = message_id;
    message.body = body.to_owned();
    let snapshot = PollSnapshot::from(response);
    let mut diff = differ::diff(order_id, &SeenState::default(), &snapshot, Utc::now());
    assert_eq!(diff.events.len(), 1);
    diff.events.remove(0)
}

/// An attempt on `claimed` resolved as `resolution`, made now, with nothing else recorded: set
/// the other fields with `..attempt_on(..)`.
pub fn attempt_on(claimed: &ClaimedDelivery, resolution: AttemptResolution) -> AttemptRecord {
    AttemptRecord {
        delivery_id: claimed.id.clone(),
        claim: claimed.claim.clone(),
        at: Utc::now(),
        resolution,
        status_code: None,
        response_excerpt: None,
        error: None,
        disable_subscriber: None,
    }
}
