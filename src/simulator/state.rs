//! The simulator's in-memory world: orders with their participants, chat and notifications,
//! issued tokens and the fault dice. All of it sits behind one std Mutex, so nothing here awaits
//! and every operation is a short piece of work. Answers are serialized once per change of an
//! order and then served as shared bytes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use chrono::{DateTime, SubsecRound, Utc};
use rand::distributions::Alphanumeric;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::data::{self, SEED_ORDER, SMS_SENDER};
use super::response::{to_json, ApiError};
use super::{Faults, MessageTiming, OrderMessagesFailure, Timings};
use crate::instacart::models::{
    ChatMessage, ChatMessagesMetadata, ChatMessagesResponse, ChatUser, LifecycleMessage,
    MarkReadResponse, OrderMessagesMetadata, OrderMessagesResponse, ParticipantType,
    SendMessageResponse,
};

/// A fault drawn for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fault {
    RateLimited,
    Unavailable,
    Malformed,
}

/// Whether an answer reached the client whole; only a whole one counts as serving its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    Complete,
    Cut,
}

/// Upstream ids are opaque and not consecutive: each sequence advances by a random step.
struct IdSequence(i64);

impl IdSequence {
    fn next(&mut self, rng: &mut StdRng) -> i64 {
        self.0 += rng.gen_range(1..=997);
        self.0
    }
}

/// Id ranges start above every id the seed examples use, so generated ids never collide with them.
struct Ids {
    chat: IdSequence,
    notification: IdSequence,
    user: IdSequence,
    internal_order: IdSequence,
}

struct Order {
    /// The integer `order_id` messages carry; the path key may be an external, non-numeric id.
    internal_id: i64,
    customer: ChatUser,
    /// Every simulated order has a shopper assigned.
    current_shopper: ChatUser,
    shoppers: Vec<ChatUser>,
    customer_phone: String,
    /// The chat endpoint's metadata when it differs from the order-messages one (seed order only).
    chat_metadata: Option<ChatMessagesMetadata>,
    chat: Vec<ChatMessage>,
    lifecycle: Vec<LifecycleMessage>,
    created: Instant,
    expired: bool,
    failure: Option<OrderMessagesFailure>,
    order_messages_json: Option<Bytes>,
    chat_messages_json: Option<Bytes>,
    /// Chat messages no whole answer has carried yet, with their creation time (only while
    /// timings are recorded).
    unserved: Vec<(i64, Instant)>,
    last_served: Option<Instant>,
}

impl Order {
    fn new(
        internal_id: i64,
        customer: ChatUser,
        current_shopper: ChatUser,
        shoppers: Vec<ChatUser>,
        customer_phone: String,
    ) -> Self {
        Self {
            internal_id,
            customer,
            current_shopper,
            shoppers,
            customer_phone,
            chat_metadata: None,
            chat: Vec::new(),
            lifecycle: Vec::new(),
            created: Instant::now(),
            expired: false,
            failure: None,
            order_messages_json: None,
            chat_messages_json: None,
            unserved: Vec::new(),
            last_served: None,
        }
    }

    /// Serves `message` from now on; `track` notes its creation time for [`MessageTiming`].
    fn push_chat(&mut self, message: ChatMessage, track: bool) {
        if track {
            self.unserved.push((message.id, Instant::now()));
        }
        self.chat.push(message);
        self.changed();
    }

    fn changed(&mut self) {
        self.order_messages_json = None;
        self.chat_messages_json = None;
    }

    /// Expired chats are no longer accessible upstream, so their messages are dropped for good.
    fn expire(&mut self) {
        if !self.expired {
            self.expired = true;
            self.chat.clear();
            self.unserved.clear();
            self.changed();
        }
    }

    fn order_messages_json(&mut self) -> Bytes {
        if let Some(json) = &self.order_messages_json {
            return json.clone();
        }
        let json = to_json(&OrderMessagesResponse {
            chat_messages: self.chat.clone(),
            lifecycle_messages: self.lifecycle.clone(),
            metadata: OrderMessagesMetadata {
                customer: self.customer.clone(),
                current_shopper: Some(self.current_shopper.clone()),
                shoppers: self.shoppers.clone(),
                is_expired: self.expired,
            },
        });
        self.order_messages_json = Some(json.clone());
        json
    }

    fn chat_messages_json(&mut self) -> Bytes {
        if let Some(json) = &self.chat_messages_json {
            return json.clone();
        }
        let metadata = self
            .chat_metadata
            .clone()
            .unwrap_or_else(|| ChatMessagesMetadata {
                customer: self.customer.clone(),
                current_shopper: Some(self.current_shopper.clone()),
                shoppers: self.shoppers.clone(),
            });
        let json = to_json(&ChatMessagesResponse {
            chat_messages: self.chat.clone(),
            metadata,
        });
        self.chat_messages_json = Some(json.clone());
        json
    }

    /// Marks the unread messages sent by `sender` as read; returns how many.
    fn mark_read_from(&mut self, sender: ParticipantType) -> usize {
        let now = utc_now();
        let mut count = 0;
        for message in self
            .chat
            .iter_mut()
            .filter(|m| m.sender_type == sender && !m.read)
        {
            message.read = true;
            message.read_at = Some(now);
            count += 1;
        }
        if count > 0 {
            self.changed();
        }
        count
    }
}

pub(super) struct State {
    orders: HashMap<String, Order>,
    /// Insertion order, so the generator's picks depend on the seed alone.
    keys: Vec<String>,
    ids: Ids,
    /// Ids, made-up people and the generator's choices.
    rng: StdRng,
    /// Fault draws and tokens, kept apart so traffic does not shift the generator's sequence.
    request_rng: StdRng,
    tokens: HashMap<String, Instant>,
    prune_tokens_at: usize,
    faults: Faults,
    expire_after: Option<Duration>,
    /// What the benchmark measures from the simulator's side, kept only when asked for.
    timings: Option<Timings>,
    /// Orders that have had at least one whole answer.
    orders_served: usize,
}

const MIN_TOKEN_PRUNE: usize = 1024;

impl State {
    pub(super) fn new(
        orders: &[String],
        seed: Option<u64>,
        faults: Faults,
        expire_after: Option<Duration>,
        record_timings: bool,
    ) -> Self {
        let (rng, request_rng) = match seed {
            Some(seed) => (
                StdRng::seed_from_u64(seed),
                StdRng::seed_from_u64(seed.wrapping_add(1)),
            ),
            None => (StdRng::from_entropy(), StdRng::from_entropy()),
        };
        let mut state = Self {
            orders: HashMap::with_capacity(orders.len()),
            keys: Vec::with_capacity(orders.len()),
            ids: Ids {
                chat: IdSequence(200_000_000),
                notification: IdSequence(1_000_000_000),
                user: IdSequence(400_000_000),
                internal_order: IdSequence(900_000_000_000),
            },
            rng,
            request_rng,
            tokens: HashMap::new(),
            prune_tokens_at: MIN_TOKEN_PRUNE,
            faults,
            expire_after,
            timings: record_timings.then(Timings::default),
            orders_served: 0,
        };
        for key in orders {
            state.add_order(key);
        }
        state
    }

    pub(super) fn set_faults(&mut self, faults: Faults) {
        self.faults = faults;
    }

    /// Adds an order with made-up participants, a shopper's greeting and a first notification,
    /// unless it exists.
    pub(super) fn add_order(&mut self, key: &str) {
        self.order_mut(key);
    }

    /// Adds an order with made-up participants and no messages yet, unless it exists.
    pub(super) fn add_empty_order(&mut self, key: &str) {
        if !self.orders.contains_key(key) {
            let (order, _, _) = self.generated_people(key);
            self.insert_order(key, order);
        }
    }

    fn order_mut(&mut self, key: &str) -> &mut Order {
        if !self.orders.contains_key(key) {
            let order = if key == SEED_ORDER {
                seed_order()
            } else {
                self.generated_order(key)
            };
            self.insert_order(key, order);
        }
        self.orders.get_mut(key).expect("inserted above")
    }

    fn insert_order(&mut self, key: &str, order: Order) {
        self.keys.push(key.to_owned());
        self.orders.insert(key.to_owned(), order);
    }

    /// An order with made-up people; returns their first names too.
    fn generated_people(&mut self, key: &str) -> (Order, &'static str, &'static str) {
        let rng = &mut self.rng;
        let internal_id = match key.parse::<i64>() {
            Ok(id) if id > 0 => id,
            _ => self.ids.internal_order.next(rng),
        };
        let customer_name = *data::CUSTOMER_NAMES.choose(rng).expect("non-empty");
        let shopper_name = *data::SHOPPER_NAMES.choose(rng).expect("non-empty");
        let customer = data::customer(self.ids.user.next(rng), customer_name);
        let shopper = data::shopper(self.ids.user.next(rng), shopper_name);
        let customer_phone = format!("+1415555{:04}", rng.gen_range(0..10_000));
        let order = Order::new(
            internal_id,
            customer,
            shopper.clone(),
            vec![shopper],
            customer_phone,
        );
        (order, customer_name, shopper_name)
    }

    fn generated_order(&mut self, key: &str) -> Order {
        let (mut order, customer_name, shopper_name) = self.generated_people(key);
        let rng = &mut self.rng;
        let note = lifecycle_message(
            &mut self.ids,
            rng,
            &order,
            "push",
            data::shopping_started(shopper_name),
        );
        order.lifecycle.push(note);
        let hello = shopper_message(
            &mut self.ids,
            rng,
            &order,
            data::greeting(customer_name, shopper_name),
        );
        let track = self.timings.is_some();
        order.push_chat(hello, track);
        order
    }

    /// A chat message from the current shopper to the customer, unread. An unknown order is added
    /// first. On an expired order the message is made but, like the rest of its chat, not served.
    pub(super) fn add_chat_message(&mut self, key: &str, body: &str) -> ChatMessage {
        self.add_order(key);
        let order = self.orders.get_mut(key).expect("added above");
        let message = shopper_message(&mut self.ids, &mut self.rng, order, body.to_owned());
        if !order.expired {
            order.push_chat(message.clone(), self.timings.is_some());
        }
        message
    }

    /// An SMS notification to the customer. An unknown order is added first.
    pub(super) fn add_lifecycle_message(&mut self, key: &str, body: &str) -> LifecycleMessage {
        self.push_lifecycle(key, "sms", body.to_owned())
    }

    fn push_lifecycle(&mut self, key: &str, medium: &str, body: String) -> LifecycleMessage {
        self.add_order(key);
        let order = self.orders.get_mut(key).expect("added above");
        let note = lifecycle_message(&mut self.ids, &mut self.rng, order, medium, body);
        order.lifecycle.push(note.clone());
        order.changed();
        note
    }

    pub(super) fn expire(&mut self, key: &str) {
        if let Some(order) = self.orders.get_mut(key) {
            order.expire();
        }
    }

    pub(super) fn set_failure(&mut self, key: &str, failure: Option<OrderMessagesFailure>) {
        self.order_mut(key).failure = failure;
    }

    /// The shopper reads the customer's messages; returns how many turned read.
    pub(super) fn shopper_reads(&mut self, key: &str) -> usize {
        self.orders
            .get_mut(key)
            .map_or(0, |order| order.mark_read_from(ParticipantType::User))
    }

    /// One step of the background generator on a random live order: the shopper reads the
    /// customer's unread messages if there are any, else writes a line or a notification goes out.
    pub(super) fn tick(&mut self, now: Instant) {
        let Some(key) = self.pick_live_order(now) else {
            return;
        };
        if self.shopper_reads(&key) > 0 {
            return;
        }
        if self.rng.gen_bool(0.6) {
            let line = *data::SHOPPER_LINES
                .choose(&mut self.rng)
                .expect("non-empty");
            self.add_chat_message(&key, line);
        } else {
            let (medium, body) = *data::LIFECYCLE_NOTES
                .choose(&mut self.rng)
                .expect("non-empty");
            self.push_lifecycle(&key, medium, body.to_owned());
        }
    }

    /// A random unexpired order. A few blind picks find one cheaply while most orders are live,
    /// so a tick stays O(1) with many orders; the full scan only runs when they miss.
    fn pick_live_order(&mut self, now: Instant) -> Option<String> {
        const BLIND_PICKS: usize = 8;
        if self.keys.is_empty() {
            return None;
        }
        for _ in 0..BLIND_PICKS {
            let index = self.rng.gen_range(0..self.keys.len());
            if self.is_live(index, now) {
                return Some(self.keys[index].clone());
            }
        }
        let live: Vec<usize> = (0..self.keys.len())
            .filter(|&i| self.is_live(i, now))
            .collect();
        live.choose(&mut self.rng).map(|&i| self.keys[i].clone())
    }

    fn is_live(&mut self, index: usize, now: Instant) -> bool {
        let order = self
            .orders
            .get_mut(&self.keys[index])
            .expect("keys mirror orders");
        apply_expiry(order, self.expire_after, now);
        !order.expired
    }

    /// Looks an order up for a request, turning it expired once `expire_after` has passed.
    fn requested(&mut self, key: &str, now: Instant) -> Result<&mut Order, ApiError> {
        let order = self.orders.get_mut(key).ok_or(ApiError::NotFound)?;
        apply_expiry(order, self.expire_after, now);
        Ok(order)
    }

    pub(super) fn order_messages(
        &mut self,
        key: &str,
        now: Instant,
        answer: Answer,
    ) -> Result<Bytes, ApiError> {
        let order = self.requested(key, now)?;
        let json = match order.failure {
            Some(OrderMessagesFailure::UserIdNotFound) => return Err(ApiError::UserIdNotFound),
            Some(OrderMessagesFailure::ShopperPii) => return Err(ApiError::ShopperPii),
            None => order.order_messages_json(),
        };
        self.served(key, now, answer);
        Ok(json)
    }

    pub(super) fn chat_messages(
        &mut self,
        key: &str,
        now: Instant,
        answer: Answer,
    ) -> Result<Bytes, ApiError> {
        let json = self.requested(key, now)?.chat_messages_json();
        self.served(key, now, answer);
        Ok(json)
    }

    /// Notes a whole answer about `key` given at `now`: the first one for the order, the gap
    /// since the previous one, and the first serving of each message it carried.
    fn served(&mut self, key: &str, now: Instant, answer: Answer) {
        if answer == Answer::Cut {
            return;
        }
        let Some(order) = self.orders.get_mut(key) else {
            return;
        };
        let previous = order.last_served.replace(now);
        if previous.is_none() {
            self.orders_served += 1;
        }
        if let Some(timings) = &mut self.timings {
            if let Some(previous) = previous {
                timings
                    .poll_gaps
                    .push(now.saturating_duration_since(previous));
            }
            timings
                .served
                .extend(
                    order
                        .unserved
                        .drain(..)
                        .map(|(message_id, created)| MessageTiming {
                            message_id,
                            created,
                            first_served: now,
                        }),
                );
        }
    }

    pub(super) fn orders_served(&self) -> usize {
        self.orders_served
    }

    /// Hands over the timings recorded since the last call (none unless recording).
    pub(super) fn take_timings(&mut self) -> Timings {
        self.timings
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Sends the customer's (already validated) message to the current shopper.
    pub(super) fn send_message(
        &mut self,
        key: &str,
        body: Result<String, ApiError>,
        now: Instant,
    ) -> Result<Bytes, ApiError> {
        if self.requested(key, now)?.expired {
            return Err(ApiError::SendingNotAllowed);
        }
        let body = body?;
        let order = self.orders.get_mut(key).expect("found above");
        let message = customer_message(&mut self.ids, &mut self.rng, order, body);
        let answer = to_json(&SendMessageResponse {
            id: message.id,
            kind: "CHAT".to_owned(),
            created_at: message.created_at,
            timezone: "UTC".to_owned(),
        });
        order.push_chat(message, self.timings.is_some());
        Ok(answer)
    }

    /// Marks the shopper's unread messages read, as the customer reading them.
    pub(super) fn mark_read(&mut self, key: &str, now: Instant) -> Result<Bytes, ApiError> {
        let count = self
            .requested(key, now)?
            .mark_read_from(ParticipantType::Driver);
        Ok(to_json(&MarkReadResponse {
            messages_read_count: i64::try_from(count).expect("fits"),
        }))
    }

    pub(super) fn issue_token(&mut self, now: Instant, lifetime: Duration) -> String {
        if self.tokens.len() >= self.prune_tokens_at {
            self.tokens.retain(|_, expires| *expires > now);
            self.prune_tokens_at = (self.tokens.len() * 2).max(MIN_TOKEN_PRUNE);
        }
        let token: String = (&mut self.request_rng)
            .sample_iter(Alphanumeric)
            .take(43)
            .map(char::from)
            .collect();
        self.tokens.insert(token.clone(), now + lifetime);
        token
    }

    pub(super) fn token_is_valid(&self, token: &str, now: Instant) -> bool {
        self.tokens.get(token).is_some_and(|expires| *expires > now)
    }

    /// Draws this request's fault, if any, and whether it is delayed. The three fault shares
    /// split one draw, so they never overlap; the delay is drawn on its own.
    pub(super) fn draw_fault(&mut self) -> (Option<Fault>, Option<Duration>) {
        let f = &self.faults;
        let fault = if f.rate_429 + f.rate_5xx + f.rate_malformed > 0.0 {
            let x: f64 = self.request_rng.gen();
            if x < f.rate_429 {
                Some(Fault::RateLimited)
            } else if x < f.rate_429 + f.rate_5xx {
                Some(Fault::Unavailable)
            } else if x < f.rate_429 + f.rate_5xx + f.rate_malformed {
                Some(Fault::Malformed)
            } else {
                None
            }
        } else {
            None
        };
        let delay = match f.delay {
            Some(delay) if f.rate_delay > 0.0 && self.request_rng.gen::<f64>() < f.rate_delay => {
                Some(delay)
            }
            _ => None,
        };
        (fault, delay)
    }
}

fn apply_expiry(order: &mut Order, expire_after: Option<Duration>, now: Instant) {
    if expire_after.is_some_and(|after| now.saturating_duration_since(order.created) >= after) {
        order.expire();
    }
}

fn seed_order() -> Order {
    let seed = data::seed_order();
    Order {
        internal_id: 122233,
        customer: seed.customer,
        current_shopper: seed.current_shopper,
        shoppers: seed.shoppers,
        customer_phone: seed.customer_phone,
        chat_metadata: Some(seed.chat_metadata),
        chat: seed.chat,
        lifecycle: seed.lifecycle,
        created: Instant::now(),
        expired: false,
        failure: None,
        order_messages_json: None,
        chat_messages_json: None,
        unserved: Vec::new(),
        last_served: None,
    }
}

fn shopper_message(ids: &mut Ids, rng: &mut StdRng, order: &Order, body: String) -> ChatMessage {
    ChatMessage {
        id: ids.chat.next(rng),
        order_id: order.internal_id,
        created_at: utc_now(),
        recipient_id: order.customer.id,
        recipient_type: ParticipantType::User,
        sender_id: order.current_shopper.id,
        sender_type: ParticipantType::Driver,
        read: false,
        read_at: None,
        body,
        image: None,
    }
}

fn customer_message(ids: &mut Ids, rng: &mut StdRng, order: &Order, body: String) -> ChatMessage {
    ChatMessage {
        id: ids.chat.next(rng),
        order_id: order.internal_id,
        created_at: utc_now(),
        recipient_id: order.current_shopper.id,
        recipient_type: ParticipantType::Driver,
        sender_id: order.customer.id,
        sender_type: ParticipantType::User,
        read: false,
        read_at: None,
        body,
        image: None,
    }
}

/// A notification created two seconds ago, sent a second later and delivered now, like the
/// seed's; phone numbers only for SMS, as upstream documents.
fn lifecycle_message(
    ids: &mut Ids,
    rng: &mut StdRng,
    order: &Order,
    medium: &str,
    body: String,
) -> LifecycleMessage {
    let delivered_at = utc_now();
    let sms = medium == "sms";
    LifecycleMessage {
        notification_id: ids.notification.next(rng),
        medium: medium.to_owned(),
        recipient_phone_number: sms.then(|| order.customer_phone.clone()),
        sent_from: sms.then(|| SMS_SENDER.to_owned()),
        created_at: delivered_at - chrono::Duration::seconds(2),
        sent_at: delivered_at - chrono::Duration::seconds(1),
        delivered_at,
        body,
        image: None,
    }
}

/// Upstream timestamps are whole seconds in UTC.
fn utc_now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(0)
}
