//! The built-in Connect simulator over real HTTP on loopback: seed payloads, tokens, errors,
//! expiry, the message generator and fault injection.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use shopper_bridge::instacart::models::{
    OrderMessagesResponse, ParticipantType, SendMessageResponse, TokenResponse,
};
use shopper_bridge::simulator::{
    Faults, OrderMessagesFailure, Simulator, SimulatorConfig, SimulatorHandle,
};
use tokio_util::sync::CancellationToken;

use crate::harness::{
    chat_messages_path, fixture, order_messages_path, start_simulator, wait_until, RunningSimulator,
};

const TOKEN: &str = "static-test-token";
const SEED_ORDER: &str = "122233";

struct Sim {
    base: String,
    handle: SimulatorHandle,
    client: reqwest::Client,
    _running: RunningSimulator,
}

async fn start(config: SimulatorConfig) -> Sim {
    let running = start_simulator(config).await;
    Sim {
        base: running.base_url.clone(),
        handle: running.handle.clone(),
        client: reqwest::Client::new(),
        _running: running,
    }
}

fn config() -> SimulatorConfig {
    SimulatorConfig {
        static_token: Some(TOKEN.to_owned()),
        seed: Some(42),
        ..SimulatorConfig::default()
    }
}

impl Sim {
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap()
    }

    async fn json(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let response = self.call(method, path, Some(TOKEN), body).await;
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    async fn order_messages(&self, order: &str) -> OrderMessagesResponse {
        let (status, body) = self
            .json(Method::GET, &order_messages_path(order), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        serde_json::from_value(body).unwrap()
    }

    async fn send(&self, order: &str, body: &str) -> (StatusCode, Value) {
        self.json(
            Method::POST,
            &chat_messages_path(order),
            Some(json!({ "body": body })),
        )
        .await
    }

    async fn token(&self, form: &[(&str, &str)]) -> reqwest::Response {
        let body: serde_json::Map<String, Value> = form
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
            .collect();
        self.client
            .post(format!("{}/v2/oauth/token", self.base))
            .json(&body)
            .send()
            .await
            .unwrap()
    }
}

fn credentials<'a>(grant_type: &'a str, scope: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("client_id", "simulator-client"),
        ("client_secret", "simulator-secret"),
        ("grant_type", grant_type),
        ("scope", scope),
    ]
}

/// Polls `check` until it holds or five seconds pass.

#[tokio::test]
async fn client_credentials_and_user_assertion_tokens_authorize_post_checkout_calls() {
    let sim = start(SimulatorConfig::default()).await;
    let path = order_messages_path(SEED_ORDER);
    let assertion = STANDARD.encode(r#"{"user_id":"customer-8"}"#);
    let mut user_grant = credentials("fulfillment_user_assertion", "connect:post_checkout");
    user_grant.push(("assertion", &assertion));

    for (grant, scope) in [
        (
            credentials("client_credentials", "connect:fulfillment"),
            "connect:fulfillment",
        ),
        (user_grant, "connect:post_checkout"),
    ] {
        let response = sim.token(&grant).await;
        assert_eq!(response.status(), StatusCode::OK);
        let token: TokenResponse = response.json().await.unwrap();
        assert_eq!(token.token_type, "Bearer");
        assert_eq!(token.expires_in, 86_400);
        assert_eq!(token.scope.as_deref(), Some(scope));
        assert!(token.created_at.is_some());
        let answer = sim
            .call(Method::GET, &path, Some(&token.access_token), None)
            .await;
        assert_eq!(answer.status(), StatusCode::OK);
    }

    // Form-encoded requests are accepted too.
    let form = sim
        .client
        .post(format!("{}/v2/oauth/token", sim.base))
        .form(&credentials("client_credentials", "connect:fulfillment"))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::OK);
    assert_eq!(sim.handle.stats().token_requests, 3);
}

#[tokio::test]
async fn token_endpoint_refuses_bad_credentials_grants_scopes_and_assertions() {
    let sim = start(SimulatorConfig::default()).await;
    let mut wrong_secret = credentials("client_credentials", "connect:fulfillment");
    wrong_secret[1].1 = "guess";
    let bad_assertion = STANDARD.encode(r#"{"customer":"8"}"#);
    let mut assertion_without_user =
        credentials("fulfillment_user_assertion", "connect:post_checkout");
    assertion_without_user.push(("assertion", &bad_assertion));

    for (request, status, error) in [
        (wrong_secret, StatusCode::UNAUTHORIZED, "invalid_client"),
        (
            credentials("password", "connect:fulfillment"),
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
        ),
        (
            credentials("client_credentials", "connect:post_checkout"),
            StatusCode::BAD_REQUEST,
            "invalid_scope",
        ),
        (
            credentials("fulfillment_user_assertion", "connect:post_checkout"),
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        ),
        (
            assertion_without_user,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        ),
        (
            vec![("client_id", "simulator-client")],
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ] {
        let response = sim.token(&request).await;
        assert_eq!(response.status(), status, "{request:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], error, "{request:?}");
    }
}

#[tokio::test]
async fn issued_token_is_refused_once_it_has_expired() {
    let sim = start(SimulatorConfig {
        token_expires_in: 0,
        ..SimulatorConfig::default()
    })
    .await;
    let token: TokenResponse = sim
        .token(&credentials("client_credentials", "connect:fulfillment"))
        .await
        .json()
        .await
        .unwrap();
    let answer = sim
        .call(
            Method::GET,
            &order_messages_path(SEED_ORDER),
            Some(&token.access_token),
            None,
        )
        .await;
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn missing_or_unknown_bearer_is_answered_with_401_on_every_endpoint() {
    let sim = start(config()).await;
    let endpoints = [
        (Method::GET, order_messages_path(SEED_ORDER), None),
        (Method::GET, chat_messages_path(SEED_ORDER), None),
        (
            Method::POST,
            chat_messages_path(SEED_ORDER),
            Some(json!({"body": "hi"})),
        ),
        (Method::PUT, chat_messages_path(SEED_ORDER), None),
    ];
    for (method, path, body) in &endpoints {
        for token in [None, Some("not-a-token")] {
            let response = sim.call(method.clone(), path, token, body.clone()).await;
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path}"
            );
            assert!(response.headers().contains_key("www-authenticate"));
        }
    }
    assert_eq!(sim.handle.stats().unauthorized, 8);
    // Nothing was sent or marked read by the refused calls.
    assert_eq!(sim.order_messages(SEED_ORDER).await.chat_messages.len(), 1);
}

#[tokio::test]
async fn order_messages_of_the_seed_order_equal_the_seed_example() {
    let sim = start(config()).await;
    let (status, body) = sim
        .json(Method::GET, &order_messages_path(SEED_ORDER), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, fixture("order_messages"));
}

#[tokio::test]
async fn chat_messages_of_the_seed_order_equal_the_seed_example() {
    let sim = start(config()).await;
    let (status, body) = sim
        .json(Method::GET, &chat_messages_path(SEED_ORDER), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, fixture("chat_messages"));
}

#[tokio::test]
async fn sent_message_is_answered_like_the_seed_and_reaches_the_current_shopper() {
    let sim = start(config()).await;
    let (status, answer) = sim
        .send(SEED_ORDER, "Oat milk is gone? Almond is fine.")
        .await;
    assert_eq!(status, StatusCode::OK);

    let seed = fixture("send_message");
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&answer), keys(&seed));
    assert_eq!(answer["type"], seed["type"]);
    let answer: SendMessageResponse = serde_json::from_value(answer).unwrap();

    let order = sim.order_messages(SEED_ORDER).await;
    let sent = order.chat_messages.last().unwrap();
    assert_eq!(sent.id, answer.id);
    assert_eq!(sent.created_at, answer.created_at);
    assert_eq!(sent.body, "Oat milk is gone? Almond is fine.");
    assert_eq!(sent.order_id, 122233);
    assert_eq!(sent.sender_type, ParticipantType::User);
    assert_eq!(sent.sender_id, order.metadata.customer.id);
    assert_eq!(sent.recipient_type, ParticipantType::Driver);
    assert_eq!(
        Some(sent.recipient_id),
        order.metadata.current_shopper.map(|s| s.id)
    );
    assert!(!sent.read);
}

#[tokio::test]
async fn message_of_1000_multibyte_characters_is_sent_and_1001_is_refused() {
    let sim = start(config()).await;
    let (status, _) = sim.send(SEED_ORDER, &"ü".repeat(1000)).await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = sim.send(SEED_ORDER, &"ü".repeat(1001)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        json!({"error": {
            "message": "There were issues with your request",
            "code": 9999,
            "errors": [{
                "error": {"message": "is too long (maximum is 1000 characters)", "code": 1001},
                "meta": {"key": "body"}
            }]
        }})
    );
    let chat = sim.order_messages(SEED_ORDER).await.chat_messages;
    assert_eq!(chat.len(), 2, "only the accepted message was added");
}

#[tokio::test]
async fn mark_read_marks_only_the_shoppers_unread_messages_and_counts_them() {
    let sim = start(config()).await;
    // The seed order already holds one unread shopper message; with 14 more the answer is the
    // seed example's count.
    for n in 0..14 {
        sim.handle
            .add_chat_message(SEED_ORDER, &format!("Update {n} from your shopper"));
    }
    let (status, _) = sim.send(SEED_ORDER, "Thanks!").await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = sim
        .json(Method::PUT, &chat_messages_path(SEED_ORDER), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, fixture("mark_read"));

    let chat = sim.order_messages(SEED_ORDER).await.chat_messages;
    for message in &chat {
        let from_shopper = message.sender_type == ParticipantType::Driver;
        assert_eq!(message.read, from_shopper, "{message:?}");
        assert_eq!(message.read_at.is_some(), from_shopper, "{message:?}");
    }

    let (_, again) = sim
        .json(Method::PUT, &chat_messages_path(SEED_ORDER), None)
        .await;
    assert_eq!(again, json!({"messages_read_count": 0}));
    assert_eq!(sim.handle.stats().mark_read_requests, 2);
}

#[tokio::test]
async fn shopper_reading_turns_the_customers_messages_read() {
    let sim = start(config()).await;
    sim.send(SEED_ORDER, "Please call me when you arrive").await;
    assert_eq!(sim.handle.shopper_reads(SEED_ORDER), 1);
    let chat = sim.order_messages(SEED_ORDER).await.chat_messages;
    let mine = chat.last().unwrap();
    assert!(mine.read && mine.read_at.is_some());
    assert_eq!(sim.handle.shopper_reads(SEED_ORDER), 0);
}

#[tokio::test]
async fn added_chat_and_lifecycle_messages_appear_with_unique_ids() {
    let sim = start(config()).await;
    sim.handle.add_order("ext-order-9");
    let mut ids = HashSet::new();
    for order in [SEED_ORDER, "122245", "ext-order-9"] {
        let chat = sim.handle.add_chat_message(
            order,
            "They are out of oat milk, which replacement would you like?",
        );
        let note = sim
            .handle
            .add_lifecycle_message(order, "Your order has been picked up.");
        let served = sim.order_messages(order).await;
        assert_eq!(served.chat_messages.last(), Some(&chat));
        assert_eq!(served.lifecycle_messages.last(), Some(&note));
        assert_eq!(chat.sender_type, ParticipantType::Driver);
        assert_eq!(
            Some(chat.sender_id),
            served.metadata.current_shopper.map(|s| s.id)
        );
        assert_eq!(chat.recipient_id, served.metadata.customer.id);
        assert!(!chat.read);
        assert_eq!(note.medium, "sms");
        assert!(note.recipient_phone_number.is_some() && note.sent_from.is_some());
        for message in &served.chat_messages {
            assert!(ids.insert(("chat", message.id)), "duplicate {}", message.id);
            assert!(served
                .chat_messages
                .iter()
                .all(|m| m.order_id == message.order_id));
        }
        for note in &served.lifecycle_messages {
            assert!(ids.insert(("note", note.notification_id)));
        }
    }
}

#[tokio::test]
async fn generated_orders_carry_a_customer_a_shopper_and_first_messages() {
    let sim = start(config()).await;
    let order = sim.order_messages("122258").await;
    let shopper = order.metadata.current_shopper.clone().unwrap();
    assert_eq!(order.metadata.shoppers, vec![shopper.clone()]);
    assert!(!order.metadata.customer.display_name.is_empty());
    assert!(!order.metadata.is_expired);
    assert_eq!(order.chat_messages.len(), 1);
    assert_eq!(order.chat_messages[0].order_id, 122258);
    assert_eq!(order.chat_messages[0].sender_id, shopper.id);
    assert_eq!(order.lifecycle_messages.len(), 1);

    // The chat endpoint shows the same participants for generated orders.
    let (_, chat) = sim
        .json(Method::GET, &chat_messages_path("122258"), None)
        .await;
    assert_eq!(
        chat["metadata"]["current_shopper"],
        serde_json::to_value(&shopper).unwrap()
    );
}

#[tokio::test]
async fn expired_order_has_no_chat_and_refuses_new_messages() {
    let sim = start(config()).await;
    sim.handle.expire(SEED_ORDER);

    let order = sim.order_messages(SEED_ORDER).await;
    assert!(order.metadata.is_expired);
    assert!(order.chat_messages.is_empty());
    assert_eq!(order.lifecycle_messages.len(), 1, "notifications stay");

    let (_, chat) = sim
        .json(Method::GET, &chat_messages_path(SEED_ORDER), None)
        .await;
    assert_eq!(chat["chat_messages"], json!([]));

    let (status, body) = sim.send(SEED_ORDER, "still there?").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body,
        json!({"error": {"message": "Sending a message is not allowed at this time", "code": null}, "meta": {}})
    );
}

#[tokio::test]
async fn orders_expire_once_expire_after_has_passed() {
    let sim = start(SimulatorConfig {
        expire_after: Some(Duration::from_millis(200)),
        ..config()
    })
    .await;
    let fresh = sim.order_messages("122245").await;
    assert!(!fresh.metadata.is_expired);
    assert!(!fresh.chat_messages.is_empty());
    wait_until("the order expires", || async {
        let order = sim.order_messages("122245").await;
        order.metadata.is_expired && order.chat_messages.is_empty()
    })
    .await;
}

#[tokio::test]
async fn unknown_order_is_answered_with_404_resource_not_found_everywhere() {
    let sim = start(config()).await;
    let expected = json!({"error": {"message": "Resource not found", "code": 4000}, "meta": {}});
    for (method, path, body) in [
        (Method::GET, order_messages_path("999"), None),
        (Method::GET, chat_messages_path("999"), None),
        (
            Method::POST,
            chat_messages_path("999"),
            Some(json!({"body": "hi"})),
        ),
        (Method::PUT, chat_messages_path("999"), None),
    ] {
        let (status, answer) = sim.json(method.clone(), &path, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(answer, expected, "{method} {path}");
    }
}

#[tokio::test]
async fn order_messages_can_refuse_with_4001_or_shopper_pii_while_chat_still_answers() {
    let sim = start(config()).await;
    for (failure, status, expected) in [
        (
            OrderMessagesFailure::UserIdNotFound,
            StatusCode::BAD_REQUEST,
            json!({"error": {"message": "User ID not found", "code": 4001}, "meta": {}}),
        ),
        (
            OrderMessagesFailure::ShopperPii,
            StatusCode::FORBIDDEN,
            json!({"error": {"message": "Shopper PII", "code": null}, "meta": {}}),
        ),
    ] {
        sim.handle
            .set_order_messages_failure(SEED_ORDER, Some(failure));
        let (got_status, body) = sim
            .json(Method::GET, &order_messages_path(SEED_ORDER), None)
            .await;
        assert_eq!(got_status, status);
        assert_eq!(body, expected);
        let (chat_status, chat) = sim
            .json(Method::GET, &chat_messages_path(SEED_ORDER), None)
            .await;
        assert_eq!(chat_status, StatusCode::OK);
        assert_eq!(chat, fixture("chat_messages"));
    }
    sim.handle.set_order_messages_failure(SEED_ORDER, None);
    sim.order_messages(SEED_ORDER).await;
}

#[tokio::test]
async fn faults_at_rate_one_answer_429_503_and_truncated_json() {
    let sim = start(config()).await;
    let path = order_messages_path(SEED_ORDER);
    let clean = sim
        .call(Method::GET, &path, Some(TOKEN), None)
        .await
        .text()
        .await
        .unwrap();

    sim.handle
        .set_faults(Faults {
            rate_429: 1.0,
            ..Faults::default()
        })
        .unwrap();
    let limited = sim.call(Method::GET, &path, Some(TOKEN), None).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers()["retry-after"], "1");
    let (status, _) = sim.send(SEED_ORDER, "lost to the rate limit").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);

    sim.handle
        .set_faults(Faults {
            rate_5xx: 1.0,
            ..Faults::default()
        })
        .unwrap();
    let unavailable = sim
        .call(
            Method::PUT,
            &chat_messages_path(SEED_ORDER),
            Some(TOKEN),
            None,
        )
        .await;
    assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);

    sim.handle
        .set_faults(Faults {
            rate_malformed: 1.0,
            ..Faults::default()
        })
        .unwrap();
    let malformed = sim.call(Method::GET, &path, Some(TOKEN), None).await;
    assert_eq!(malformed.status(), StatusCode::OK);
    let text = malformed.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err());
    assert!(!text.is_empty() && clean.starts_with(&text) && text.len() < clean.len());

    sim.handle.set_faults(Faults::default()).unwrap();
    // Neither the 429'd send nor the 503'd mark-read took effect.
    let order = sim.order_messages(SEED_ORDER).await;
    assert_eq!(order.chat_messages.len(), 1);
    assert!(!order.chat_messages[0].read);

    let stats = sim.handle.stats();
    assert_eq!(
        (
            stats.injected_429,
            stats.injected_503,
            stats.injected_malformed
        ),
        (2, 1, 1)
    );
}

#[tokio::test]
async fn delay_fault_holds_the_answer_back() {
    let sim = start(SimulatorConfig {
        faults: Faults {
            delay: Some(Duration::from_millis(150)),
            rate_delay: 1.0,
            ..Faults::default()
        },
        ..config()
    })
    .await;
    let started = Instant::now();
    sim.order_messages(SEED_ORDER).await;
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(sim.handle.stats().injected_delays, 1);
}

#[tokio::test]
async fn invalid_fault_rates_are_refused() {
    let error = Simulator::build(
        SimulatorConfig {
            faults: Faults {
                rate_429: 0.6,
                rate_5xx: 0.6,
                ..Faults::default()
            },
            ..config()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .err()
    .expect("shares over 1.0 are refused");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);

    let sim = start(config()).await;
    assert!(sim
        .handle
        .set_faults(Faults {
            rate_malformed: 1.5,
            ..Faults::default()
        })
        .is_err());
}

/// Drops what the clock decides, keeping ids, bodies, people and flags.
fn without_timestamps(mut value: Value) -> Value {
    fn strip(value: &mut Value) {
        match value {
            Value::Object(map) => {
                for key in ["created_at", "sent_at", "delivered_at", "read_at"] {
                    map.remove(key);
                }
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut value);
    value
}

async fn all_orders(sim: &Sim) -> Vec<Value> {
    let mut orders = Vec::new();
    for order in SimulatorConfig::default().orders {
        let (_, body) = sim
            .json(Method::GET, &order_messages_path(&order), None)
            .await;
        orders.push(without_timestamps(body));
    }
    orders
}

#[tokio::test]
async fn generator_ticks_are_deterministic_given_the_seed() {
    let first = start(config()).await;
    let second = start(config()).await;
    let before = all_orders(&first).await;
    for _ in 0..25 {
        first.handle.tick();
        second.handle.tick();
    }
    let after = all_orders(&first).await;
    assert_ne!(after, before, "ticks added messages");
    assert_eq!(after, all_orders(&second).await);
}

#[tokio::test]
async fn message_interval_makes_new_messages_appear_over_time() {
    let sim = start(SimulatorConfig {
        message_interval: Some(Duration::from_millis(10)),
        seed: None,
        ..config()
    })
    .await;
    let count = |orders: Vec<Value>| -> usize {
        orders
            .iter()
            .map(|o| {
                o["chat_messages"].as_array().unwrap().len()
                    + o["lifecycle_messages"].as_array().unwrap().len()
            })
            .sum()
    };
    let initial = count(all_orders(&sim).await);
    wait_until("three new messages appear", || async {
        count(all_orders(&sim).await) >= initial + 3
    })
    .await;
}

#[tokio::test]
async fn generator_leaves_expired_orders_alone() {
    let sim = start(config()).await;
    let orders = SimulatorConfig::default().orders;
    for order in &orders[1..] {
        sim.handle.expire(order);
    }
    let before = all_orders(&sim).await;
    for _ in 0..10 {
        sim.handle.tick();
    }
    let after = all_orders(&sim).await;
    assert_ne!(after[0], before[0], "the live order got the new messages");
    assert_eq!(after[1..], before[1..]);
}

#[tokio::test]
async fn run_until_stopped_returns_promptly_after_cancel_despite_open_connections() {
    let simulator = Simulator::build(config(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = format!(
        "http://{}{}",
        simulator.local_addr(),
        order_messages_path(SEED_ORDER)
    );
    let cancel = CancellationToken::new();
    let server = tokio::spawn(simulator.run_until_stopped(cancel.clone()));
    // A pooled keep-alive connection stays open after this request.
    let client = reqwest::Client::new();
    let response = client.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("stops within 5 s")
        .unwrap()
        .unwrap();
    drop(client);
}

#[tokio::test]
async fn empty_orders_have_people_but_no_messages_and_leave_existing_orders_alone() {
    let sim = start(config()).await;
    sim.handle
        .add_empty_orders(&["900001", "900002", SEED_ORDER]);
    let empty = sim.order_messages("900001").await;
    assert!(empty.chat_messages.is_empty() && empty.lifecycle_messages.is_empty());
    assert!(empty.metadata.current_shopper.is_some());
    assert!(!empty.metadata.customer.display_name.is_empty());
    assert_eq!(sim.order_messages(SEED_ORDER).await.chat_messages.len(), 1);
}

#[tokio::test]
async fn bulk_added_messages_appear_together_in_the_given_orders() {
    let sim = start(config()).await;
    sim.handle.add_empty_orders(&["900001", "900002"]);
    let added = sim.handle.add_chat_messages(&[
        ("900001", "first"),
        ("900002", "second"),
        ("900001", "third"),
    ]);
    let one = sim.order_messages("900001").await;
    let two = sim.order_messages("900002").await;
    assert_eq!(one.chat_messages, [added[0].clone(), added[2].clone()]);
    assert_eq!(two.chat_messages, [added[1].clone()]);
    assert_eq!(one.chat_messages[1].body, "third");
}

#[tokio::test]
async fn timings_note_creation_and_the_first_whole_answer_carrying_each_message() {
    let sim = start(SimulatorConfig {
        record_message_timings: true,
        ..config()
    })
    .await;
    sim.handle.add_empty_orders(&["900001", "900002"]);
    let before = Instant::now();
    let added =
        sim.handle
            .add_chat_messages(&[("900001", "one"), ("900001", "two"), ("900002", "x")]);
    assert_eq!(sim.handle.orders_served(), 0);
    assert_eq!(sim.handle.take_timings(), Default::default());

    // A cut answer does not count as serving anything.
    sim.handle
        .set_faults(Faults {
            rate_malformed: 1.0,
            ..Faults::default()
        })
        .unwrap();
    let path = order_messages_path("900001");
    let cut = sim.call(Method::GET, &path, Some(TOKEN), None).await;
    assert_eq!(cut.status(), StatusCode::OK);
    assert_eq!(sim.handle.orders_served(), 0);
    sim.handle.set_faults(Faults::default()).unwrap();

    let asked = Instant::now();
    sim.order_messages("900001").await;
    let answered = Instant::now();
    sim.order_messages("900001").await;
    let timings = sim.handle.take_timings();
    let ids: Vec<i64> = timings.served.iter().map(|t| t.message_id).collect();
    assert_eq!(ids, [added[0].id, added[1].id]);
    for timing in &timings.served {
        assert!(before <= timing.created && timing.created <= asked);
        assert!(asked <= timing.first_served && timing.first_served <= answered);
    }
    assert_eq!(
        timings.poll_gaps.len(),
        1,
        "one gap between two whole answers"
    );
    assert_eq!(sim.handle.orders_served(), 1);

    // The chat endpoint serves too; what was taken is not handed over again.
    let (status, _) = sim
        .json(Method::GET, &chat_messages_path("900002"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let timings = sim.handle.take_timings();
    assert_eq!(timings.served.len(), 1);
    assert_eq!(timings.served[0].message_id, added[2].id);
    assert!(timings.poll_gaps.is_empty());
    assert_eq!(sim.handle.orders_served(), 2);
}

#[tokio::test]
async fn timings_are_not_kept_unless_asked_for() {
    let sim = start(config()).await;
    sim.handle.add_chat_messages(&[(SEED_ORDER, "hello")]);
    sim.order_messages(SEED_ORDER).await;
    sim.order_messages(SEED_ORDER).await;
    assert_eq!(sim.handle.take_timings(), Default::default());
    assert_eq!(sim.handle.orders_served(), 1);
}
