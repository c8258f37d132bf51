//! What the simulated orders contain: the seed order exactly as the reference pages show it, and
//! plausible made-up people, shopper lines and notifications for every other order.

use chrono::{DateTime, Utc};

use crate::instacart::models::{
    ChatMessage, ChatMessagesMetadata, ChatUser, LifecycleMessage, ParticipantType,
};

/// The order every reference page uses in its examples.
pub(super) const SEED_ORDER: &str = "122233";

/// The phone number SMS notifications come from (the seed's `sent_from`).
pub(super) const SMS_SENDER: &str = "+18005551234";

const SEED_AVATAR: &str = "https://speedwagon.foundation/avatar/reospeedwagon.jpg";

/// The seed order's people and messages, as the order-messages page (003) shows them.
pub(super) struct SeedOrder {
    pub customer: ChatUser,
    pub current_shopper: ChatUser,
    pub shoppers: Vec<ChatUser>,
    pub customer_phone: String,
    pub chat: Vec<ChatMessage>,
    pub lifecycle: Vec<LifecycleMessage>,
    /// The chat-messages page (001) shows other participants for the same order; the simulator
    /// answers each endpoint with its own page's example.
    pub chat_metadata: ChatMessagesMetadata,
}

pub(super) fn seed_order() -> SeedOrder {
    let robert = |id| user(id, "Robert", SEED_AVATAR);
    SeedOrder {
        customer: user(8, "John", ""),
        current_shopper: robert(15),
        shoppers: vec![user(55655345, "SomeFirstName", "SomeURL")],
        customer_phone: "+14155552671".to_owned(),
        chat: vec![ChatMessage {
            id: 123456789,
            order_id: 122233,
            created_at: seed_time(0),
            recipient_id: 334354343,
            recipient_type: ParticipantType::User,
            sender_id: 55655345,
            sender_type: ParticipantType::Driver,
            read: false,
            read_at: None,
            body: "MessageBody".to_owned(),
            image: None,
        }],
        lifecycle: vec![LifecycleMessage {
            notification_id: 987654321,
            medium: "sms".to_owned(),
            recipient_phone_number: Some("+14155552671".to_owned()),
            sent_from: Some(SMS_SENDER.to_owned()),
            created_at: seed_time(0),
            sent_at: seed_time(1),
            delivered_at: seed_time(2),
            body: "Your order has been picked up.".to_owned(),
            image: None,
        }],
        chat_metadata: ChatMessagesMetadata {
            customer: user(2, "John", ""),
            current_shopper: Some(robert(4)),
            shoppers: vec![
                user(55655345, "SomeFirstName", "SomeURL"),
                user(123456789, "SomeFirstName2", "SomeURL2"),
                robert(4),
            ],
        },
    }
}

fn user(id: i64, display_name: &str, avatar_url: &str) -> ChatUser {
    ChatUser {
        id,
        display_name: display_name.to_owned(),
        avatar_url: Some(avatar_url.to_owned()),
    }
}

/// `2021-01-01T00:00:00Z` plus `seconds`, the seed examples' clock.
fn seed_time(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_609_459_200 + seconds, 0).expect("a fixed, valid timestamp")
}

pub(super) const CUSTOMER_NAMES: &[&str] = &[
    "Alice", "Maya", "Daniel", "Priya", "Tom", "Grace", "Lucas", "Sofia", "Hiro", "Amara",
];

pub(super) const SHOPPER_NAMES: &[&str] = &[
    "Robert", "Ana", "Kevin", "Jasmine", "Marcus", "Lena", "Omar", "Chloe", "Tariq", "Ingrid",
];

pub(super) fn customer(id: i64, name: &str) -> ChatUser {
    user(id, name, "")
}

pub(super) fn shopper(id: i64, name: &str) -> ChatUser {
    user(
        id,
        name,
        &format!("https://avatars.simulator.invalid/shoppers/{id}.jpg"),
    )
}

pub(super) fn greeting(customer: &str, shopper: &str) -> String {
    format!("Hi {customer}, I'm {shopper} and I'll be shopping for your order today.")
}

pub(super) fn shopping_started(shopper: &str) -> String {
    format!("Your shopper {shopper} has started shopping your order.")
}

/// What shoppers write to customers while they shop.
pub(super) const SHOPPER_LINES: &[&str] = &[
    "They are out of oat milk, which replacement would you like?",
    "I found everything on your list, heading to checkout now.",
    "The avocados are still quite firm, should I get them anyway?",
    "Would you like a different brand of pasta? Yours is sold out.",
    "The bananas are a little green, is that okay?",
    "Your eggs were out of stock, I picked the free-range ones instead.",
    "I'm at the store now and starting on your list.",
    "On my way with your groceries!",
];

/// Automated notifications: (medium, body).
pub(super) const LIFECYCLE_NOTES: &[(&str, &str)] = &[
    ("sms", "Your order has been picked up."),
    ("push", "Your shopper is on the way."),
    (
        "in_app_message",
        "Your shopper replaced an item in your order.",
    ),
    ("email", "Your order receipt is ready."),
    ("sms", "Your order has been delivered."),
    ("call", "Your shopper tried to call you."),
    ("push", "An item in your order was refunded."),
];
