//! The poller against a wiremock Connect API answering the seed payloads and errors, stepped
//! with `poll_once`, observed through the admin API.

use chrono::TimeDelta;
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{json, Value};
use std::time::Duration;
use wiremock::matchers::header;
use wiremock::{MockServer, ResponseTemplate};

use shopper_bridge::config::Settings;
use shopper_bridge::domain::{EventId, EventType, OrderId};
use shopper_bridge::poller::PollRound;

use crate::harness::{
    connect_error, dispatcher_was_woken, expect_chat_messages, expect_order_messages,
    expect_order_messages_first, expect_token, fixture, json_body, ok_json, on_get,
    order_messages_path, timestamp, wait_until, TestApp,
};

const ORDER: &str = "122233";

/// An app polling `connect` with every order due again a millisecond after each poll, a webhook
/// subscriber for every event, and [`ORDER`] watched.
async fn app_watching(connect: &MockServer, configure: impl FnOnce(&mut Settings)) -> TestApp {
    let app = TestApp::builder()
        .with_connect(connect)
        .polling_continuously()
        .configure(configure)
        .spawn()
        .await;
    app.create_webhook().await;
    app.watch_order(ORDER).await;
    app
}

fn polled(orders: usize, events: u64) -> PollRound {
    PollRound {
        orders_polled: orders,
        events_created: events,
        deliveries_created: events,
    }
}

fn event_types(deliveries: &[Value]) -> Vec<&str> {
    let mut types: Vec<_> = deliveries
        .iter()
        .map(|d| d["event_type"].as_str().expect("event_type"))
        .collect();
    types.sort_unstable();
    types
}

fn order_messages_with(change: impl FnOnce(&mut Value)) -> Value {
    let mut body = fixture("order_messages");
    change(&mut body);
    body
}

#[tokio::test]
async fn first_poll_creates_chat_and_lifecycle_deliveries_and_a_repeat_poll_creates_nothing() {
    let connect = MockServer::start().await;
    expect_order_messages(&connect, ORDER, ok_json(&fixture("order_messages")), 2).await;
    let app = app_watching(&connect, |_| {}).await;

    assert_eq!(app.poll_once().await, polled(1, 2));
    let deliveries = app.deliveries("?order_id=122233").await;
    assert_eq!(
        event_types(&deliveries),
        ["chat_message.created", "lifecycle_message.created"]
    );
    let chat = deliveries
        .iter()
        .find(|d| d["event_type"] == "chat_message.created")
        .unwrap();
    let order_id = OrderId::parse("order_id", ORDER).unwrap();
    let expected = EventId::derive(EventType::ChatMessageCreated, &order_id, Some(123456789));
    assert_eq!(chat["event_id"], expected.as_str());
    assert!(deliveries.iter().all(|d| d["status"] == "pending"));
    let counts = json!({"chat_messages": 1, "lifecycle_messages": 1, "events": 2});
    assert_eq!(app.order(ORDER).await["counts"], counts);

    assert_eq!(app.poll_when_due().await, polled(1, 0));
    assert_eq!(app.deliveries("?order_id=122233").await.len(), 2);
    assert_eq!(app.order(ORDER).await["counts"], counts);
}

#[tokio::test]
async fn an_order_answering_slowly_does_not_hold_back_the_others_commits() {
    const SLOW: &str = "700001";
    let connect = MockServer::start().await;
    expect_order_messages(
        &connect,
        SLOW,
        ok_json(&fixture("order_messages")).set_delay(Duration::from_secs(3)),
        1,
    )
    .await;
    expect_order_messages(&connect, ORDER, ok_json(&fixture("order_messages")), 1).await;
    let app = app_watching(&connect, |_| {}).await;
    app.watch_order(SLOW).await;

    let polling = app.poll_once();
    tokio::pin!(polling);
    tokio::select! {
        round = &mut polling => panic!("the round ended before anything was seen: {round:?}"),
        () = wait_until("the quick order's deliveries are committed", || async {
            app.deliveries("?order_id=122233").await.len() == 2
        }) => {}
    }
    assert!(app.deliveries("?order_id=700001").await.is_empty());
    assert!(
        dispatcher_was_woken(&app).await,
        "the dispatcher hears of the first group's deliveries at once"
    );
    assert_eq!(polling.await, polled(2, 4));
    assert_eq!(app.deliveries("?order_id=700001").await.len(), 2);
}

#[tokio::test]
async fn a_message_turning_read_emits_chat_message_read_once() {
    let connect = MockServer::start().await;
    expect_order_messages_first(&connect, ORDER, ok_json(&fixture("order_messages"))).await;
    let read = order_messages_with(|b| b["chat_messages"][0]["read"] = json!(true));
    expect_order_messages(&connect, ORDER, ok_json(&read), 2).await;
    let app = app_watching(&connect, |_| {}).await;

    assert_eq!(app.poll_once().await, polled(1, 2));
    assert_eq!(app.poll_when_due().await, polled(1, 1));
    assert_eq!(app.poll_when_due().await, polled(1, 0));
    let reads = app.deliveries("?order_id=122233").await;
    let reads: Vec<_> = reads
        .iter()
        .filter(|d| d["event_type"] == "chat_message.read")
        .collect();
    assert_eq!(reads.len(), 1);
}

/// `order_messages` refuses the order with `refusal`: the same round reads the chat endpoint,
/// and every later round goes straight there.
async fn falls_back_to_chat_messages(refusal: ResponseTemplate, reason: &str) {
    let connect = MockServer::start().await;
    expect_order_messages(&connect, ORDER, refusal, 1).await;
    expect_chat_messages(&connect, ORDER, ok_json(&fixture("chat_messages")), 2).await;
    let app = app_watching(&connect, |_| {}).await;

    assert_eq!(app.poll_once().await, polled(1, 1));
    let order = app.order(ORDER).await;
    assert_eq!(order["fallback_reason"], reason);
    assert_eq!(order["state"], "watching");
    assert_eq!(order["last_error"], Value::Null);
    assert_eq!(order["consecutive_failures"], 0);
    let deliveries = app.deliveries("?order_id=122233").await;
    assert_eq!(event_types(&deliveries), ["chat_message.created"]);

    assert_eq!(app.poll_when_due().await, polled(1, 0));
}

#[tokio::test]
async fn user_id_not_found_falls_back_to_chat_messages_for_good() {
    let refusal = connect_error(400, "User ID not found", Some(4001));
    falls_back_to_chat_messages(refusal, "user_id_not_found").await;
}

#[tokio::test]
async fn shopper_pii_falls_back_to_chat_messages_for_good() {
    let refusal = connect_error(403, "Shopper PII", None);
    falls_back_to_chat_messages(refusal, "shopper_pii_redacted").await;
}

#[tokio::test]
async fn three_404s_give_the_order_up_as_not_found() {
    let connect = MockServer::start().await;
    expect_order_messages(
        &connect,
        ORDER,
        connect_error(404, "Resource not found", Some(4000)),
        3,
    )
    .await;
    let app = app_watching(&connect, |_| {}).await;

    assert_eq!(app.poll_once().await, polled(1, 0));
    let order = app.order(ORDER).await;
    assert_eq!(order["state"], "watching");
    let error = order["last_error"].as_str().unwrap();
    assert!(
        error.contains("not found") && error.contains("1 of 3"),
        "{error}"
    );

    app.poll_when_due().await;
    app.poll_when_due().await;
    let order = app.order(ORDER).await;
    assert_eq!(order["state"], "not_found");
    assert_eq!(order["next_poll_at"], Value::Null);
    let error = order["last_error"].as_str().unwrap();
    assert!(error.contains("3 of 3"), "{error}");

    assert_eq!(app.poll_once().await, polled(0, 0));
}

/// Polls once against `answer` with a 5 s interval and no jitter; returns the order afterwards
/// and how long after that poll the next one is scheduled.
async fn poll_failing_with(answer: ResponseTemplate) -> (Value, TimeDelta) {
    let connect = MockServer::start().await;
    expect_order_messages(&connect, ORDER, answer, 1).await;
    let app = app_watching(&connect, |s| s.poller.interval = Duration::from_secs(5)).await;

    assert_eq!(app.poll_once().await, polled(1, 0));
    // Not due again yet: no second upstream call (`expect(1)`).
    assert_eq!(app.poll_once().await, polled(0, 0));
    let order = app.order(ORDER).await;
    let wait = timestamp(&order["next_poll_at"]) - timestamp(&order["last_polled_at"]);
    assert_eq!(order["state"], "watching");
    assert_eq!(order["consecutive_failures"], 1);
    (order, wait)
}

#[tokio::test]
async fn a_429_waits_for_its_retry_after() {
    let answer = connect_error(429, "Too many requests", None).insert_header("Retry-After", "120");
    let (order, wait) = poll_failing_with(answer).await;
    let error = order["last_error"].as_str().unwrap();
    assert!(error.contains("429") && error.contains("120"), "{error}");
    assert_eq!(wait, TimeDelta::seconds(120));
}

#[tokio::test]
async fn a_huge_retry_after_backs_the_order_off_a_day_instead_of_panicking() {
    let answer = connect_error(429, "Too many requests", None)
        .insert_header("Retry-After", "99999999999999");
    let (order, wait) = poll_failing_with(answer).await;
    let error = order["last_error"].as_str().unwrap();
    assert!(error.contains("429"), "{error}");
    assert_eq!(wait, TimeDelta::hours(24));
}

#[tokio::test]
async fn a_503_backs_off_beyond_the_interval() {
    let (order, wait) = poll_failing_with(ResponseTemplate::new(503)).await;
    let error = order["last_error"].as_str().unwrap();
    assert!(error.contains("503"), "{error}");
    // Twice the 5 s interval after a first failure.
    assert_eq!(wait, TimeDelta::seconds(10));
}

#[tokio::test]
async fn expiry_announces_chat_expired_keeps_what_was_seen_and_stops_polling() {
    let connect = MockServer::start().await;
    expect_order_messages_first(&connect, ORDER, ok_json(&fixture("order_messages"))).await;
    let expired = order_messages_with(|b| {
        b["chat_messages"] = json!([]);
        b["metadata"]["is_expired"] = json!(true);
    });
    expect_order_messages(&connect, ORDER, ok_json(&expired), 1).await;
    let app = app_watching(&connect, |_| {}).await;

    assert_eq!(app.poll_once().await, polled(1, 2));
    assert_eq!(app.poll_when_due().await, polled(1, 1));
    let deliveries = app.deliveries("?order_id=122233").await;
    assert_eq!(
        event_types(&deliveries),
        [
            "chat_message.created",
            "lifecycle_message.created",
            "order.chat_expired"
        ]
    );
    let order = app.order(ORDER).await;
    assert_eq!(order["state"], "expired");
    assert_eq!(order["next_poll_at"], Value::Null);
    assert_eq!(
        order["counts"],
        json!({"chat_messages": 1, "lifecycle_messages": 1, "events": 3})
    );

    assert_eq!(app.poll_once().await, polled(0, 0));
}

#[tokio::test]
async fn oauth_tokens_follow_the_orders_user_and_are_reused() {
    let connect = MockServer::start().await;
    for (grant_type, token) in [
        ("fulfillment_user_assertion", "user-token"),
        ("client_credentials", "client-token"),
    ] {
        let grant = json!({"client_id": "bridge-client", "grant_type": grant_type});
        expect_token(&connect, grant, token, 1).await;
    }
    for (order, token) in [("700001", "user-token"), ("700002", "client-token")] {
        on_get(order_messages_path(order))
            .and(header("authorization", format!("Bearer {token}")))
            .respond_with(ok_json(&fixture("order_messages")))
            .expect(2)
            .mount(&connect)
            .await;
    }
    let app = TestApp::builder()
        .with_connect(&connect)
        .polling_continuously()
        .configure(|s| {
            s.instacart.token = None;
            s.instacart.client_id = Some("bridge-client".to_owned());
            s.instacart.client_secret = Some(SecretString::from("bridge-secret".to_owned()));
        })
        .spawn()
        .await;
    let body = json!({"order_id": "700001", "user_id": "user-42"});
    json_body(app.post("/v1/orders", &body).await, StatusCode::CREATED).await;
    app.watch_order("700002").await;

    assert_eq!(app.poll_once().await.orders_polled, 2);
    assert_eq!(app.poll_when_due().await.orders_polled, 2);
    for order in ["700001", "700002"] {
        assert_eq!(app.order(order).await["last_error"], Value::Null);
    }
}

#[tokio::test]
async fn a_stopped_order_is_not_polled() {
    let connect = MockServer::start().await;
    expect_order_messages(&connect, ORDER, ok_json(&fixture("order_messages")), 0).await;
    let app = app_watching(&connect, |_| {}).await;
    let stopped = app.delete(&format!("/v1/orders/{ORDER}")).await;
    assert_eq!(stopped.status(), StatusCode::NO_CONTENT);

    assert_eq!(app.poll_once().await, polled(0, 0));
}

#[tokio::test]
async fn treat_ids_as_internal_sends_its_header() {
    let connect = MockServer::start().await;
    on_get(order_messages_path(ORDER))
        .and(header("x-treat-ids-as-internal", "true"))
        .respond_with(ok_json(&fixture("order_messages")))
        .expect(1)
        .mount(&connect)
        .await;
    let app = app_watching(&connect, |s| s.instacart.treat_ids_as_internal = true).await;

    assert_eq!(app.poll_once().await, polled(1, 2));
}

#[tokio::test]
async fn a_restarted_app_does_not_repeat_events_already_committed() {
    let connect = MockServer::start().await;
    expect_order_messages(&connect, ORDER, ok_json(&fixture("order_messages")), 2).await;
    let app = app_watching(&connect, |_| {}).await;
    assert_eq!(app.poll_once().await, polled(1, 2));

    let app = app
        .stop()
        .await
        .restart()
        .with_connect(&connect)
        .polling_continuously()
        .spawn()
        .await;
    assert_eq!(app.poll_when_due().await, polled(1, 0));
    assert_eq!(app.deliveries("?order_id=122233").await.len(), 2);
    assert_eq!(app.order(ORDER).await["counts"]["events"], 2);
}
