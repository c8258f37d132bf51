//! What templates see: an event parsed once from its webhook body into a flat, documented view
//! with friendly derived values (see `templates/README.md`).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::TemplateError;
use crate::domain::ClaimedDelivery;
use crate::domain::{EventId, EventPayload, EventSubject, EventType, OrderId};
use crate::instacart::models::{ChatMessage, ChatUser, LifecycleMessage, ParticipantType};

/// One event, parsed from its payload (`{"type","timestamp","data"}`) once per delivery.
#[derive(Debug, Clone)]
pub struct EventContext {
    event_id: EventId,
    event_type: EventType,
    order_id: OrderId,
    view: EventView,
}

impl EventContext {
    pub fn from_delivery(d: &ClaimedDelivery) -> Result<Self, TemplateError> {
        Self::parse(d.event_id.clone(), &d.payload)
    }

    /// Parses a webhook body; `event_id` is not part of the body, the store keeps it beside.
    pub fn parse(event_id: EventId, payload: &str) -> Result<Self, TemplateError> {
        let envelope = EventPayload::parse(payload).map_err(|source| TemplateError::Payload {
            event_id: event_id.clone(),
            source,
        })?;
        let view = EventView::new(&event_id, envelope)?;
        Ok(Self {
            event_type: view.event_type,
            order_id: view.order_id.clone(),
            event_id,
            view,
        })
    }

    pub fn order_id(&self) -> &OrderId {
        &self.order_id
    }

    pub fn event_type(&self) -> EventType {
        self.event_type
    }

    pub fn event_id(&self) -> &EventId {
        &self.event_id
    }

    pub(super) fn view(&self) -> &EventView {
        &self.view
    }
}

/// Everything about one event, as templates see it under `event`. Absent values are `none`,
/// never missing, so a template may test any documented field.
#[derive(Debug, Clone, Serialize)]
pub(super) struct EventView {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub timestamp: String,
    /// When it happened upstream: the message's creation (its reading for `chat_message.read`),
    /// the notification's creation, else the event's `timestamp`.
    pub occurred_at: String,
    /// A human heading for the event type.
    pub title: &'static str,
    pub order_id: OrderId,
    pub sender: Option<Person>,
    /// The sender's display name, else "Shopper" / "Customer"; "Instacart" for notifications.
    pub sender_name: String,
    /// "shopper" or "customer" for chat messages.
    pub sender_role: Option<&'static str>,
    /// A chat message the store sent through the bridge (upstream shows it as the customer's).
    pub sent_by_retailer: bool,
    pub sender_avatar: Option<String>,
    pub message: Option<MessageView>,
    pub notification: Option<NotificationView>,
    /// The chat message's or notification's body.
    pub body: Option<String>,
    pub image: Option<String>,
    pub medium: Option<String>,
    pub customer: Person,
    pub current_shopper: Option<Person>,
    pub customer_name: String,
    pub shopper_name: String,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct Person {
    pub id: i64,
    pub display_name: String,
    pub avatar_url: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct MessageView {
    pub id: i64,
    pub body: String,
    pub image: Option<String>,
    pub created_at: String,
    pub read: bool,
    pub read_at: Option<String>,
    pub sender_id: i64,
    pub sender_type: ParticipantType,
    pub recipient_id: i64,
    pub recipient_type: ParticipantType,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct NotificationView {
    pub id: i64,
    pub medium: String,
    pub body: String,
    pub image: Option<String>,
    pub created_at: String,
    pub sent_at: String,
    pub delivered_at: String,
    pub recipient_phone_number: Option<String>,
    pub sent_from: Option<String>,
}

impl EventView {
    fn new(event_id: &EventId, envelope: EventPayload) -> Result<Self, TemplateError> {
        let EventPayload {
            event_type,
            timestamp,
            data,
        } = envelope;
        let missing = |field| TemplateError::MissingField {
            event_id: event_id.clone(),
            event_type,
            field,
        };
        let (message, sender, sent_by_retailer, notification) = match (event_type, data.subject) {
            (
                EventType::ChatMessageCreated | EventType::ChatMessageRead,
                EventSubject::Chat {
                    message,
                    sender,
                    sent_by_retailer,
                },
            ) => (Some(message), sender, sent_by_retailer, None),
            (EventType::ChatMessageCreated | EventType::ChatMessageRead, _) => {
                return Err(missing("data.message"))
            }
            (EventType::LifecycleMessageCreated, EventSubject::Lifecycle { notification }) => {
                (None, None, false, Some(notification))
            }
            (EventType::LifecycleMessageCreated, _) => return Err(missing("data.notification")),
            (EventType::OrderChatExpired, _) => (None, None, false, None),
        };

        let sender_role = message.as_ref().map(|m| role(m.sender_type));
        let sender_name = match (&sender, sender_role) {
            (Some(sender), _) if !sender.display_name.trim().is_empty() => {
                sender.display_name.clone()
            }
            (_, Some("customer")) => "Customer".to_owned(),
            (_, Some(_)) => "Shopper".to_owned(),
            (_, None) => "Instacart".to_owned(),
        };
        let sender = sender.as_ref().map(Person::from);
        let customer = Person::from(&data.customer);
        let current_shopper = data.current_shopper.as_ref().map(Person::from);
        let message = message.map(MessageView::from);
        let notification = notification.map(NotificationView::from);
        let (body, image) = match (&message, &notification) {
            (Some(m), _) => (Some(m.body.clone()), m.image.clone()),
            (_, Some(n)) => (Some(n.body.clone()), n.image.clone()),
            _ => (None, None),
        };
        let occurred_at = match (&message, &notification) {
            (Some(m), _) if event_type == EventType::ChatMessageRead => m.read_at.clone(),
            (Some(m), _) => Some(m.created_at.clone()),
            (_, Some(n)) => Some(n.created_at.clone()),
            _ => None,
        }
        .unwrap_or_else(|| timestamp.clone());
        Ok(Self {
            id: event_id.to_string(),
            occurred_at,
            event_type,
            timestamp,
            title: title(event_type),
            order_id: data.order_id,
            sender_avatar: sender.as_ref().and_then(|s| s.avatar_url.clone()),
            sender,
            sender_name,
            sender_role,
            sent_by_retailer,
            medium: notification.as_ref().map(|n| n.medium.clone()),
            message,
            notification,
            body,
            image,
            customer_name: name_or(&customer.display_name, "Customer"),
            shopper_name: current_shopper.as_ref().map_or_else(
                || "Shopper".to_owned(),
                |s| name_or(&s.display_name, "Shopper"),
            ),
            customer,
            current_shopper,
        })
    }
}

fn title(event_type: EventType) -> &'static str {
    match event_type {
        EventType::ChatMessageCreated => "New chat message",
        EventType::LifecycleMessageCreated => "Order notification",
        EventType::ChatMessageRead => "Message read",
        EventType::OrderChatExpired => "Chat closed",
    }
}

fn role(participant: ParticipantType) -> &'static str {
    match participant {
        ParticipantType::User => "customer",
        ParticipantType::Driver => "shopper",
    }
}

fn name_or(name: &str, fallback: &str) -> String {
    if name.trim().is_empty() {
        fallback.to_owned()
    } else {
        name.to_owned()
    }
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Only absolute http(s) URLs reach templates: anything else (`javascript:`, a bare word) could
/// not be shown as an image or link anyway. Serializing through `url` percent-encodes `<`, `>`,
/// `"` and spaces; `|` is encoded too because it ends the URL part of a Slack `<url|label>` link.
pub(super) fn web_url(raw: Option<&str>) -> Option<String> {
    let parsed = url::Url::parse(raw?.trim()).ok()?;
    matches!(parsed.scheme(), "http" | "https").then(|| parsed.as_str().replace('|', "%7C"))
}

impl From<&ChatUser> for Person {
    fn from(u: &ChatUser) -> Self {
        Self {
            id: u.id,
            display_name: u.display_name.clone(),
            avatar_url: web_url(u.avatar_url.as_deref()),
        }
    }
}

impl From<ChatMessage> for MessageView {
    fn from(m: ChatMessage) -> Self {
        Self {
            id: m.id,
            image: web_url(m.image.as_deref()),
            body: m.body,
            created_at: time(m.created_at),
            read: m.read,
            read_at: m.read_at.map(time),
            sender_id: m.sender_id,
            sender_type: m.sender_type,
            recipient_id: m.recipient_id,
            recipient_type: m.recipient_type,
        }
    }
}

impl From<LifecycleMessage> for NotificationView {
    fn from(n: LifecycleMessage) -> Self {
        Self {
            id: n.notification_id,
            image: web_url(n.image.as_deref()),
            medium: n.medium,
            body: n.body,
            created_at: time(n.created_at),
            sent_at: time(n.sent_at),
            delivered_at: time(n.delivered_at),
            recipient_phone_number: n.recipient_phone_number,
            sent_from: n.sent_from,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_absolute_web_urls_are_kept() {
        assert_eq!(web_url(Some("SomeURL")), None);
        assert_eq!(web_url(Some("javascript:alert(1)")), None);
        assert_eq!(web_url(Some("")), None);
        assert_eq!(
            web_url(Some("https://x.example/a b|c?q=<1>&r=2")).as_deref(),
            Some("https://x.example/a%20b%7Cc?q=%3C1%3E&r=2")
        );
    }

    #[test]
    fn sender_name_falls_back_to_the_role() {
        let payload = r#"{"type":"chat_message.created","timestamp":"2021-01-01T00:10:00.000Z",
            "data":{"order_id":"1","message":{"id":1,"order_id":1,"created_at":"2021-01-01T00:00:00Z",
            "recipient_id":2,"recipient_type":"driver","sender_id":8,"sender_type":"user",
            "read":false,"body":"hi"},"sender":null,"customer":{"id":8,"display_name":""},
            "current_shopper":null}}"#;
        let event = EventContext::parse(EventId::from_stored("evt_1".into()), payload).unwrap();
        assert_eq!(event.view().sender_name, "Customer");
        assert_eq!(event.view().sender_role, Some("customer"));
        assert_eq!(event.view().customer_name, "Customer");
        assert_eq!(event.view().shopper_name, "Shopper");
    }

    #[test]
    fn a_chat_event_without_its_message_is_rejected() {
        let payload = r#"{"type":"chat_message.read","timestamp":"t",
            "data":{"order_id":"1","customer":{"id":8,"display_name":"J"}}}"#;
        let err = EventContext::parse(EventId::from_stored("evt_1".into()), payload).unwrap_err();
        assert!(err.to_string().contains("data.message"), "{err}");
    }
}
