//! One fully populated event of every type, rendered at load time to check the templates.

use serde_json::json;

use super::EventContext;
use crate::domain::{EventId, EventType};

pub(super) fn events() -> Vec<EventContext> {
    let customer = json!({"id": 8, "display_name": "Sample Customer",
        "avatar_url": "https://example.com/customer.png"});
    let shopper = json!({"id": 15, "display_name": "Sample Shopper",
        "avatar_url": "https://example.com/shopper.png"});
    let message = json!({"id": 1, "order_id": 1, "created_at": "2021-01-01T00:00:00Z",
        "recipient_id": 8, "recipient_type": "user", "sender_id": 15, "sender_type": "driver",
        "read": true, "read_at": "2021-01-01T00:01:00Z", "body": "Sample message",
        "image": "https://example.com/photo.jpg"});
    let notification = json!({"notification_id": 2, "medium": "sms",
        "recipient_phone_number": "+14155552671", "sent_from": "+18005551234",
        "created_at": "2021-01-01T00:00:00Z", "sent_at": "2021-01-01T00:00:01Z",
        "delivered_at": "2021-01-01T00:00:02Z", "body": "Sample notification",
        "image": "https://example.com/notification.png"});
    EventType::ALL
        .into_iter()
        .map(|event_type| {
            let mut data = json!({"order_id": "sample", "customer": customer,
                "current_shopper": shopper});
            match event_type {
                EventType::ChatMessageCreated | EventType::ChatMessageRead => {
                    data["message"] = message.clone();
                    data["sender"] = shopper.clone();
                }
                EventType::LifecycleMessageCreated => data["notification"] = notification.clone(),
                EventType::OrderChatExpired => {}
            }
            let payload = json!({"type": event_type, "timestamp": "2021-01-01T00:10:00.000Z",
                "data": data});
            EventContext::parse(
                EventId::from_stored(format!("evt_sample_{}", event_type.as_str())),
                &payload.to_string(),
            )
            .expect("sample events are well formed")
        })
        .collect()
}
