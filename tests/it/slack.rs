//! The Slack channel end to end: subscribers created over the admin API, events committed to a
//! real SQLite outbox, the dispatcher posting to wiremock playing Slack (an incoming webhook and
//! the Web API at a configurable base URL).

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{json, Value};
use std::time::Duration;
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::harness::{
    errors, json_body, poll_commit, seed_chat_message_event, test_settings, wait_for, TestApp,
};
use shopper_bridge::config::Settings;
use shopper_bridge::domain::{Delivery, DeliveryStatus, NewEvent};
use shopper_bridge::domain::{DeliveryId, OrderId, SubscriberId};
use shopper_bridge::templates::{EventContext, Templates};

const BOT_TOKEN: &str = "xoxb-17-42-SeCrEtBoTtOkEn";
const HOOK_PATH: &str = "/services/T0001/B0001/SeCrEtHoOkPaTh";

/// Slack's block and text limits, which every posted message must keep.
const MAX_BLOCKS: usize = 50;
const MAX_SECTION_CHARS: usize = 3000;

// ---------------------------------------------------------------- the bridge side

/// The app with its Slack Web API pointed at `slack`, sending at most `per_second` messages a
/// second to each Slack subscriber. Its Slack app takes button clicks, so messages are posted
/// exactly as the templates render them.
async fn bridge(slack: &MockServer, per_second: f64) -> TestApp {
    TestApp::builder()
        .with_slack(slack)
        .configure(|settings| {
            settings.slack.messages_per_second = per_second;
            settings.slack.signing_secret = Some("test-slack-signing-secret".to_owned().into());
        })
        .spawn()
        .await
}

/// Fast enough that the pace never gets in the way of a test about something else.
const UNPACED: f64 = 1000.0;

async fn bot_subscriber(app: &TestApp, channel: &str) -> SubscriberId {
    let created = app
        .create_subscriber(json!({"kind": "slack", "bot_token": BOT_TOKEN, "channel": channel}))
        .await;
    SubscriberId::parse("id", created["id"].as_str().unwrap()).unwrap()
}

async fn webhook_subscriber(app: &TestApp, slack: &MockServer) -> SubscriberId {
    let webhook_url = format!("{}{HOOK_PATH}", slack.uri());
    let created = app
        .create_subscriber(json!({"kind": "slack", "webhook_url": webhook_url}))
        .await;
    SubscriberId::parse("id", created["id"].as_str().unwrap()).unwrap()
}

/// Commits one poll of `order` (watched through the API) that saw a new chat message; returns
/// the event, whose payload the store now holds.
async fn new_message(app: &TestApp, order: &str, message_id: i64, body: &str) -> NewEvent {
    // Watched already (200) or now (201).
    let watched = app.post("/v1/orders", &json!({ "order_id": order })).await;
    assert!(watched.status().is_success(), "{}", watched.status());
    let order_id = OrderId::parse("order_id", order).unwrap();
    let event = seed_chat_message_event(&order_id, message_id, body);
    let commit = poll_commit(&order_id)
        .new_chat_message(message_id, event.clone())
        .next_poll_in(TimeDelta::seconds(60));
    let summary = app.commit(commit).await;
    assert_eq!(summary.events_inserted, 1);
    event
}

/// What the built-in templates make of `event`: `text` and `blocks`.
fn rendered(event: &NewEvent) -> (String, Vec<Value>) {
    let templates = Templates::load(None).unwrap();
    let context = EventContext::parse(event.id.clone(), &event.payload).unwrap();
    let message = templates.slack(&context).unwrap();
    (message.text, message.blocks)
}

/// Runs delivery rounds until `attempts` attempts were made (paced deliveries wait for their
/// slot), within a bounded time.
async fn deliver(app: &TestApp, attempts: usize) {
    let made = std::cell::Cell::new(0);
    wait_for(&format!("{attempts} attempts were made"), || async {
        made.set(made.get() + app.deliver_next().await);
        (made.get() >= attempts).then_some(())
    })
    .await;
    assert_eq!(made.get(), attempts, "more attempts than expected");
}

async fn delivery(app: &TestApp, id: &DeliveryId) -> Delivery {
    app.store.get_delivery(id).await.unwrap().unwrap()
}

fn posted(request: &Request) -> Value {
    serde_json::from_slice(&request.body).unwrap()
}

fn ok_ts(ts: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({"ok": true, "channel": "C0ORDERS", "ts": ts}))
}

/// The request `chat.postMessage` must receive for `event`.
fn post_message_body(channel: &str, event: &NewEvent, thread_ts: Option<&str>) -> Value {
    let (text, blocks) = rendered(event);
    let mut body = json!({"channel": channel, "text": text, "blocks": blocks});
    if let Some(ts) = thread_ts {
        body["thread_ts"] = json!(ts);
    }
    body
}

fn assert_within_slack_limits(message: &Value) {
    let text = message["text"].as_str().expect("a text fallback");
    assert!(!text.trim().is_empty(), "empty text fallback");
    let blocks = message["blocks"].as_array().expect("blocks");
    assert!(
        !blocks.is_empty() && blocks.len() <= MAX_BLOCKS,
        "{}",
        blocks.len()
    );
    for block in blocks.iter().filter(|b| b["type"] == "section") {
        if let Some(text) = block["text"]["text"].as_str() {
            assert!(text.chars().count() < MAX_SECTION_CHARS, "{}", text.len());
        }
    }
}

// ---------------------------------------------------------------- posting

#[tokio::test]
async fn incoming_webhook_receives_exactly_the_rendered_text_and_blocks() {
    let slack = MockServer::start().await;
    let app = bridge(&slack, UNPACED).await;
    let subscriber = webhook_subscriber(&app, &slack).await;
    let event = new_message(&app, "5001", 901, "Your bananas are green, OK?").await;
    let (text, blocks) = rendered(&event);
    assert!(text.contains("Your bananas are green"), "{text}");
    Mock::given(method("POST"))
        .and(path(HOOK_PATH))
        .and(header("content-type", "application/json; charset=utf-8"))
        .and(body_json(json!({"text": text, "blocks": blocks})))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .expect(1)
        .mount(&slack)
        .await;

    deliver(&app, 1).await;

    let [delivered] = &app.deliveries_of(&subscriber).await[..] else {
        panic!("expected one delivery");
    };
    assert_eq!(delivered.status, DeliveryStatus::Delivered);
    assert_eq!(delivered.attempts[0].status_code, Some(200));
    assert_within_slack_limits(&posted(&slack.received_requests().await.unwrap()[0]));
}

#[tokio::test]
async fn bot_posts_chat_post_message_with_its_token_channel_and_blocks() {
    let slack = MockServer::start().await;
    let app = bridge(&slack, UNPACED).await;
    let subscriber = bot_subscriber(&app, "C0ORDERS").await;
    let event = new_message(&app, "5002", 902, "Out of oat milk: almond instead?").await;
    Mock::given(method("POST"))
        .and(path("/api/chat.postMessage"))
        .and(header(
            "authorization",
            format!("Bearer {BOT_TOKEN}").as_str(),
        ))
        .and(body_json(post_message_body("C0ORDERS", &event, None)))
        .respond_with(ok_ts("1700000000.000100"))
        .expect(1)
        .mount(&slack)
        .await;

    deliver(&app, 1).await;

    let [delivered] = &app.deliveries_of(&subscriber).await[..] else {
        panic!("expected one delivery");
    };
    assert_eq!(delivered.status, DeliveryStatus::Delivered);
    let order = OrderId::parse("order_id", "5002").unwrap();
    assert_eq!(
        app.store.thread_ref(&subscriber, &order).await.unwrap(),
        Some("1700000000.000100".to_owned())
    );
}

#[tokio::test]
async fn later_events_of_an_order_reply_in_its_thread_and_other_orders_start_their_own() {
    let slack = MockServer::start().await;
    let app = bridge(&slack, UNPACED).await;
    let subscriber = bot_subscriber(&app, "C0ORDERS").await;
    let first = new_message(&app, "6001", 1, "Starting your order").await;
    let second = new_message(&app, "6001", 2, "Found everything").await;
    let other = new_message(&app, "6002", 3, "Starting the other order").await;
    for (event, thread_ts, ts) in [
        (&first, None, "1700000001.000001"),
        (&second, Some("1700000001.000001"), "1700000002.000002"),
        (&other, None, "1700000003.000003"),
    ] {
        Mock::given(method("POST"))
            .and(path("/api/chat.postMessage"))
            .and(body_json(post_message_body("C0ORDERS", event, thread_ts)))
            .respond_with(ok_ts(ts))
            .expect(1)
            .named(format!("message {}", event.id))
            .mount(&slack)
            .await;
    }

    deliver(&app, 3).await;

    let deliveries = app.deliveries_of(&subscriber).await;
    assert!(deliveries
        .iter()
        .all(|d| d.status == DeliveryStatus::Delivered));
    // The thread is the order's first message, not its latest.
    for (order, thread) in [("6001", "1700000001.000001"), ("6002", "1700000003.000003")] {
        let order = OrderId::parse("order_id", order).unwrap();
        assert_eq!(
            app.store.thread_ref(&subscriber, &order).await.unwrap(),
            Some(thread.to_owned())
        );
    }
}

#[tokio::test]
async fn a_long_shopper_message_is_cut_to_slack_limits_with_an_ellipsis() {
    let slack = MockServer::start().await;
    let app = bridge(&slack, UNPACED).await;
    bot_subscriber(&app, "C0ORDERS").await;
    let long = "substitution details ".repeat(250);
    assert!(long.chars().count() >= 5000);
    new_message(&app, "5003", 903, &long).await;
    Mock::given(method("POST"))
        .and(path("/api/chat.postMessage"))
        .respond_with(ok_ts("1700000000.000200"))
        .expect(1)
        .mount(&slack)
        .await;

    deliver(&app, 1).await;

    let message = posted(&slack.received_requests().await.unwrap()[0]);
    assert_within_slack_limits(&message);
    let cut: Vec<&str> = message["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["text"]["text"].as_str())
        .filter(|text| text.contains("substitution details"))
        .collect();
    assert!(!cut.is_empty(), "the message body is not in any block");
    for text in cut {
        let tail: String = text
            .chars()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        assert!(text.ends_with('…'), "…{tail}");
        assert!(text.chars().count() < MAX_SECTION_CHARS);
    }
}

// ---------------------------------------------------------------- Slack's answers

#[tokio::test]
async fn a_429_is_retried_after_its_retry_after_and_then_succeeds() {
    let slack = MockServer::start().await;
    let app = bridge(&slack, UNPACED).await;
    let subscriber = bot_subscriber(&app, "C0ORDERS").await;
    new_message(&app, "5004", 904, "Is 2% milk fine?").await;
    Mock::given(method("POST"))
        .and(path("/api/chat.postMessage"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "1")
                .set_body_json(json!({"ok": false, "error": "ratelimited"})),
        )
        .up_to_n_times(1)
        .expect(1)
        .mount(&slack)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/chat.postMessage"))
        .respond_with(ok_ts("1700000000.000300"))
        .expect(1)
        .mount(&slack)
        .await;

    deliver(&app, 1).await;
    let id = app.deliveries_of(&subscriber).await[0].id.clone();
    let waiting = delivery(&app, &id).await;
    assert_eq!(waiting.status, DeliveryStatus::Pending);
    assert_eq!(waiting.attempts[0].status_code, Some(429));
    let retry_at = waiting.next_attempt_at.expect("a retry is scheduled");
    assert!(retry_at - waiting.attempts[0].at >= TimeDelta::seconds(1));
    // Not due before then: an immediate round sends nothing.
    assert_eq!(app.deliver_next().await, 0);

    deliver(&app, 1).await;

    let done = delivery(&app, &id).await;
    assert_eq!(done.status, DeliveryStatus::Delivered);
    assert_eq!(done.attempts.len(), 2);
    let mut at: Vec<DateTime<Utc>> = done.attempts.iter().map(|a| a.at).collect();
    at.sort();
    assert!(at[1] - at[0] >= TimeDelta::seconds(1), "{at:?}");
}

#[tokio::test]
async fn an_ok_false_answer_parks_the_delivery_with_slacks_error() {
    let slack = MockServer::start().await;
    let app = bridge(&slack, UNPACED).await;
    let subscriber = bot_subscriber(&app, "C0GONE").await;
    new_message(&app, "5005", 905, "Anyone there?").await;
    // The Web API reports errors in a 200 answer.
    Mock::given(method("POST"))
        .and(path("/api/chat.postMessage"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"ok": false, "error": "channel_not_found"})),
        )
        .expect(1)
        .mount(&slack)
        .await;

    deliver(&app, 1).await;

    let [parked] = &app.deliveries_of(&subscriber).await[..] else {
        panic!("expected one delivery");
    };
    assert_eq!(parked.status, DeliveryStatus::Failed);
    assert_eq!(parked.next_attempt_at, None);
    assert_eq!(parked.attempts.len(), 1);
    assert_eq!(
        parked.attempts[0].error.as_deref(),
        Some("channel_not_found")
    );
    let order = OrderId::parse("order_id", "5005").unwrap();
    assert_eq!(
        app.store.thread_ref(&subscriber, &order).await.unwrap(),
        None
    );
}

#[tokio::test]
async fn an_incoming_webhook_error_word_parks_the_delivery_with_it() {
    let slack = MockServer::start().await;
    let app = bridge(&slack, UNPACED).await;
    let subscriber = webhook_subscriber(&app, &slack).await;
    new_message(&app, "5006", 906, "Hello?").await;
    Mock::given(method("POST"))
        .and(path(HOOK_PATH))
        .respond_with(ResponseTemplate::new(404).set_body_string("no_service"))
        .expect(1)
        .mount(&slack)
        .await;

    deliver(&app, 1).await;

    let [parked] = &app.deliveries_of(&subscriber).await[..] else {
        panic!("expected one delivery");
    };
    assert_eq!(parked.status, DeliveryStatus::Failed);
    assert_eq!(parked.attempts[0].status_code, Some(404));
    assert_eq!(parked.attempts[0].error.as_deref(), Some("no_service"));
    // The attempt log never shows the webhook URL.
    let logged = serde_json::to_string(&parked.attempts).unwrap();
    assert!(!logged.contains("SeCrEt"), "{logged}");
}

// ---------------------------------------------------------------- the send rate

#[tokio::test]
async fn a_burst_to_one_subscriber_goes_out_one_per_second_in_order() {
    let slack = MockServer::start().await;
    let app = bridge(&slack, 1.0).await;
    let busy = bot_subscriber(&app, "C0BUSY").await;
    let quiet = bot_subscriber(&app, "C0QUIET").await;
    // Three events of one order: each subscriber gets a delivery of each.
    for (id, body) in [(11, "one"), (12, "two"), (13, "three")] {
        new_message(&app, "7001", id, body).await;
    }
    // Only the first of each subscriber's deliveries may go now.
    Mock::given(method("POST"))
        .and(path("/api/chat.postMessage"))
        .respond_with(ok_ts("1700000000.000400"))
        .expect(2)
        .mount(&slack)
        .await;

    let attempted = app.deliver_next().await;

    assert_eq!(attempted, 2);
    let requests = slack.received_requests().await.unwrap();
    let mut channels: Vec<String> = requests
        .iter()
        .map(|r| posted(r)["channel"].as_str().unwrap().to_owned())
        .collect();
    channels.sort();
    assert_eq!(channels, ["C0BUSY", "C0QUIET"]);
    for subscriber in [&busy, &quiet] {
        let deliveries = app.deliveries_of(subscriber).await;
        let statuses: Vec<_> = deliveries.iter().map(|d| d.status).collect();
        assert_eq!(
            statuses,
            [
                DeliveryStatus::Delivered,
                DeliveryStatus::Pending,
                DeliveryStatus::Pending
            ]
        );
        let sent_at = deliveries[0].attempts[0].at;
        let slots: Vec<DateTime<Utc>> = deliveries[1..]
            .iter()
            .map(|d| d.next_attempt_at.expect("postponed to a slot"))
            .collect();
        // Put back unattempted, one second apart, the first a second after the send.
        assert!(deliveries[1..].iter().all(|d| d.attempts.is_empty()));
        assert_eq!(slots[1] - slots[0], TimeDelta::seconds(1));
        let wait = slots[0] - sent_at;
        assert!(
            wait > TimeDelta::milliseconds(500) && wait <= TimeDelta::milliseconds(1001),
            "{wait}"
        );
    }
    // Nothing else is due yet.
    assert_eq!(app.deliver_next().await, 0);
}

// ---------------------------------------------------------------- the admin API

#[tokio::test]
async fn slack_credentials_never_appear_in_clear_in_api_responses() {
    let slack = MockServer::start().await;
    let app = bridge(&slack, UNPACED).await;
    let webhook_url = format!("{}{HOOK_PATH}", slack.uri());

    let bot = app
        .create_subscriber(json!({"kind": "slack", "bot_token": BOT_TOKEN, "channel": "C0ORDERS"}))
        .await;
    let hook = app
        .create_subscriber(json!({"kind": "slack", "webhook_url": webhook_url}))
        .await;
    assert_eq!(bot["kind"], "slack");
    assert_eq!(bot["bot_token"], "****OkEn");
    assert_eq!(bot["channel"], "C0ORDERS");
    assert_eq!(hook["webhook_url"], "****PaTh");

    let bot_path = format!("/v1/subscribers/{}", bot["id"].as_str().unwrap());
    let hook_path = format!("/v1/subscribers/{}", hook["id"].as_str().unwrap());
    let mut bodies = vec![bot.to_string(), hook.to_string()];
    for path in ["/v1/subscribers", &bot_path, &hook_path] {
        bodies.push(app.get(path).await.text().await.unwrap());
    }
    let patched = app.patch(&bot_path, &json!({"channel": "C0OTHER"})).await;
    let patched = json_body(patched, reqwest::StatusCode::OK).await;
    assert_eq!(patched["channel"], "C0OTHER");
    assert_eq!(patched["bot_token"], "****OkEn", "the token is kept");
    bodies.push(patched.to_string());

    for body in &bodies {
        assert!(!body.contains("SeCrEt"), "a credential in clear: {body}");
    }
}

#[tokio::test]
async fn invalid_slack_subscribers_are_refused_naming_the_field_without_echoing_it() {
    let slack = MockServer::start().await;
    let app = bridge(&slack, UNPACED).await;
    let cases = [
        (json!({"kind": "slack"}), "webhook_url"),
        (
            json!({"kind": "slack", "bot_token": "xoxp-SeCrEt-user-token", "channel": "C1"}),
            "bot_token",
        ),
        (json!({"kind": "slack", "bot_token": BOT_TOKEN}), "channel"),
        (
            json!({"kind": "slack", "bot_token": BOT_TOKEN, "channel": "two words"}),
            "channel",
        ),
        (
            json!({"kind": "slack", "webhook_url": "ftp://hooks.example/SeCrEt"}),
            "webhook_url",
        ),
        (
            json!({"kind": "slack", "webhook_url": "https://hooks.slack.com/x/SeCrEt",
                   "bot_token": BOT_TOKEN, "channel": "C1"}),
            "webhook_url",
        ),
        (
            json!({"kind": "slack", "url": "https://example.com/", "bot_token": BOT_TOKEN,
                   "channel": "C1"}),
            "url",
        ),
        (
            json!({"kind": "webhook", "url": "https://example.com/", "bot_token": BOT_TOKEN}),
            "bot_token",
        ),
    ];
    for (body, field) in cases {
        let response = app.post("/v1/subscribers", &body).await;
        let found = errors(response, reqwest::StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(found.len(), 1, "{body}: {found:?}");
        assert_eq!(found[0].field.as_deref(), Some(field), "{body}");
        assert!(!found[0].message.contains("SeCrEt"), "{}", found[0].message);
    }

    // A subscriber keeps its kind.
    let bot = bot_subscriber(&app, "C0ORDERS").await;
    let response = app
        .patch(
            &format!("/v1/subscribers/{bot}"),
            &json!({"url": "https://example.com/"}),
        )
        .await;
    let found = errors(response, reqwest::StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(found[0].field.as_deref(), Some("url"));
}

#[tokio::test]
async fn an_incoming_webhook_must_use_https_unless_private_targets_are_allowed() {
    let slack = MockServer::start().await;
    let api = format!("{}/api/", slack.uri());
    let app = TestApp::builder()
        .configure(|settings| {
            settings.slack.api_base_url = api.parse().unwrap();
            settings.delivery.allow_private_targets = false;
        })
        .spawn()
        .await;
    let response = app
        .post(
            "/v1/subscribers",
            &json!({"kind": "slack", "webhook_url": "http://hooks.slack.com/services/SeCrEt"}),
        )
        .await;
    let found = errors(response, reqwest::StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(found[0].message, "`webhook_url` must use https");
}

#[test]
fn a_slack_rate_must_be_positive() {
    let dir = tempfile::tempdir().unwrap();
    for bad in [0.0, -1.0, f64::NAN] {
        let mut settings: Settings = test_settings(dir.path());
        settings.slack.messages_per_second = bad;
        let err = settings.validate().unwrap_err().to_string();
        assert!(err.contains("slack.messages_per_second"), "{err}");
    }
    let settings = test_settings(dir.path());
    assert_eq!(settings.slack.send_interval(), Duration::from_secs(1));
}
