//! Two-way Slack: Slack posts signed events (thread replies) and button clicks to the bridge,
//! which talks to Connect and answers in Slack. wiremock plays Slack (the Web API and the
//! clicks' response URLs) and Connect; the bridge is the real service on a real SQLite file.

use chrono::{TimeDelta, Utc};
use hmac::{Hmac, Mac};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use sha2::Sha256;
use std::time::{Duration, Instant};
use wiremock::matchers::{body_json, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::harness::{
    chat_messages_path, connect_error, fixture, json_body, ok_json, serve_seed_order_messages,
    test_settings, use_connect, wait_until, TestApp,
};
use shopper_bridge::domain::DeliveryStatus;
use shopper_bridge::domain::{OrderId, SubscriberId};
use shopper_bridge::store::DeliveryFilter;

const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const BOT_TOKEN: &str = "xoxb-17-42-SeCrEtBoTtOkEn";
const CHANNEL: &str = "C0ORDERS";
const ORDER: &str = "122233";
/// The `ts` Slack gives the order's first message: the order's thread.
const THREAD_TS: &str = "1700000000.000100";
const REPLY_TS: &str = "1700000100.000200";
/// The store employee replying and clicking.
const STAFF: &str = "U0STAFF";
const RESPONSE_PATH: &str = "/actions/T0/4242/SeCrEtReSpOnSe";

// ---------------------------------------------------------------- the bridge and its peers

struct TwoWay {
    app: TestApp,
    /// Slack: `/api/...` is the Web API, [`RESPONSE_PATH`] a click's response URL.
    slack: MockServer,
    connect: MockServer,
    subscriber: SubscriberId,
}

/// The bridge with a Slack app (signing secret, Web API at the `slack` mock), Connect at the
/// `connect` mock, and a bot-token subscriber posting in [`CHANNEL`].
async fn two_way() -> TwoWay {
    let slack = MockServer::start().await;
    let connect = MockServer::start().await;
    let api = format!("{}/api/", slack.uri());
    let app = TestApp::builder()
        .configure(|settings| {
            settings.slack.api_base_url = api.parse().unwrap();
            settings.slack.messages_per_second = 1000.0;
            settings.slack.signing_secret = Some(SIGNING_SECRET.to_owned().into());
            use_connect(settings, &connect);
        })
        .spawn()
        .await;
    let created = app
        .create_subscriber(json!({"kind": "slack", "bot_token": BOT_TOKEN, "channel": CHANNEL}))
        .await;
    let subscriber = SubscriberId::parse("id", created["id"].as_str().unwrap()).unwrap();
    TwoWay {
        app,
        slack,
        connect,
        subscriber,
    }
}

fn order_id() -> OrderId {
    OrderId::parse("order_id", ORDER).unwrap()
}

/// `chat.postMessage` answers `ok` with [`THREAD_TS`], `expected` times.
async fn slack_posts(slack: &MockServer, expected: u64) {
    Mock::given(method("POST"))
        .and(path("/api/chat.postMessage"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"ok": true, "channel": CHANNEL, "ts": THREAD_TS})),
        )
        .expect(expected)
        .mount(slack)
        .await;
}

/// Watches [`ORDER`] and gives it a Slack thread without posting anything.
async fn order_with_thread(two_way: &TwoWay) {
    two_way.app.watch_order(ORDER).await;
    let kept = two_way
        .app
        .store
        .save_thread_ref(&two_way.subscriber, &order_id(), THREAD_TS)
        .await
        .unwrap();
    assert_eq!(kept, THREAD_TS);
}

/// Runs the real path: [`ORDER`] is watched, polled (Connect answers the seed page: a shopper's
/// chat message and a notification) and both events are posted to Slack, the first starting
/// the order's thread. Returns the shopper's message as posted.
async fn deliver_order_to_slack(two_way: &TwoWay) -> Value {
    let TwoWay {
        app,
        slack,
        connect,
        subscriber,
    } = two_way;
    serve_seed_order_messages(connect, ORDER).await;
    app.watch_order(ORDER).await;
    app.poll_once().await;
    let filter = DeliveryFilter {
        subscriber_id: Some(subscriber.clone()),
        limit: 10,
        ..DeliveryFilter::default()
    };
    wait_until("both events are posted to Slack", || async {
        app.deliver_next().await;
        let deliveries = app.store.list_deliveries(&filter).await.unwrap();
        deliveries.len() == 2
            && deliveries
                .iter()
                .all(|d| d.status == DeliveryStatus::Delivered)
    })
    .await;
    assert_eq!(
        app.store
            .thread_ref(subscriber, &order_id())
            .await
            .unwrap()
            .as_deref(),
        Some(THREAD_TS)
    );
    posted_messages(slack)
        .await
        .into_iter()
        .find(|m| {
            m["text"]
                .as_str()
                .unwrap_or_default()
                .contains("MessageBody")
        })
        .expect("the shopper's message was posted")
}

fn body(request: &Request) -> Value {
    serde_json::from_slice(&request.body).expect("a JSON body")
}

/// Every `chat.postMessage` body Slack received, in order.
async fn posted_messages(slack: &MockServer) -> Vec<Value> {
    slack
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/api/chat.postMessage")
        .map(body)
        .collect()
}

/// What the bridge said in the order's thread in answer to replies: posts without blocks.
async fn thread_answers(slack: &MockServer) -> Vec<Value> {
    posted_messages(slack)
        .await
        .into_iter()
        .filter(|m| m.get("blocks").is_none())
        .collect()
}

/// Waits (bounded) for the bridge's first answer in the thread; checks where and as whom.
async fn answer_in_thread(two_way: &TwoWay) -> Value {
    wait_until("the bridge answers in the order's thread", || async {
        !thread_answers(&two_way.slack).await.is_empty()
    })
    .await;
    let request = two_way
        .slack
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path() == "/api/chat.postMessage")
        .find(|r| body(r).get("blocks").is_none())
        .unwrap();
    assert_eq!(
        request.headers["authorization"],
        format!("Bearer {BOT_TOKEN}").as_str()
    );
    let answer = body(&request);
    assert_eq!(answer["channel"], CHANNEL);
    assert_eq!(answer["thread_ts"], THREAD_TS);
    answer
}

/// `(order_id, message_id, origin_subscriber_id)` of every message recorded as sent.
async fn recorded_sent_messages(app: &TestApp) -> Vec<(String, i64, Option<String>)> {
    let pool = sqlx::SqlitePool::connect(&app.db_url).await.unwrap();
    let rows = sqlx::query_as(
        "SELECT order_id, message_id, origin_subscriber_id FROM sent_messages ORDER BY message_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows
}

// ---------------------------------------------------------------- what Slack sends

fn signature(secret: &str, timestamp: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("v0:{timestamp}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// A request as Slack sends it: `body` signed with `secret`, stamped `age` ago.
struct Signed<'a> {
    path: &'a str,
    content_type: &'a str,
    body: String,
    secret: &'a str,
    age: TimeDelta,
    retry: Option<u32>,
}

impl<'a> Signed<'a> {
    fn event(body: &Value) -> Self {
        Self {
            path: "/slack/events",
            content_type: "application/json",
            body: body.to_string(),
            secret: SIGNING_SECRET,
            age: TimeDelta::zero(),
            retry: None,
        }
    }

    fn interaction(payload: &Value) -> Self {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", &payload.to_string())
            .finish();
        Self {
            path: "/slack/interactions",
            content_type: "application/x-www-form-urlencoded",
            body,
            ..Self::event(&Value::Null)
        }
    }

    async fn send(self, app: &TestApp) -> Response {
        let timestamp = (Utc::now() - self.age).timestamp().to_string();
        let mut request = app
            .client
            .post(app.url(self.path))
            .header("content-type", self.content_type)
            .header("x-slack-request-timestamp", &timestamp)
            .header(
                "x-slack-signature",
                signature(self.secret, &timestamp, &self.body),
            );
        if let Some(retry) = self.retry {
            request = request
                .header("x-slack-retry-num", retry)
                .header("x-slack-retry-reason", "http_timeout");
        }
        request.body(self.body).send().await.unwrap()
    }
}

/// An Events API envelope around `event`.
fn envelope(event_id: &str, event: Value) -> Value {
    json!({
        "token": "deprecated-verification-token",
        "team_id": "T0",
        "api_app_id": "A0",
        "type": "event_callback",
        "event_id": event_id,
        "event_time": 1_700_000_100,
        "event": event,
    })
}

/// A store employee's reply in the order's thread.
fn thread_reply(text: &str) -> Value {
    json!({
        "type": "message",
        "channel": CHANNEL,
        "channel_type": "channel",
        "user": STAFF,
        "text": text,
        "ts": REPLY_TS,
        "thread_ts": THREAD_TS,
        "event_ts": REPLY_TS,
    })
}

/// Connect accepts a message (the seed answer, id 123) with exactly `text`, `expected` times.
async fn connect_accepts(connect: &MockServer, text: &str, expected: u64) {
    Mock::given(method("POST"))
        .and(path(chat_messages_path(ORDER)))
        .and(body_json(json!({ "body": text })))
        .respond_with(ok_json(&fixture("send_message")))
        .expect(expected)
        .named(format!("send {text:?}"))
        .mount(connect)
        .await;
}

/// Connect is sent no message at all (mounted after the mocks that may match).
async fn connect_sent_nothing_else(connect: &MockServer) {
    Mock::given(method("POST"))
        .and(path(chat_messages_path(ORDER)))
        .respond_with(ok_json(&fixture("send_message")))
        .expect(0)
        .named("any other message")
        .mount(connect)
        .await;
}

// ---------------------------------------------------------------- thread replies

#[tokio::test]
async fn a_thread_reply_is_sent_to_the_shopper_once_even_when_slack_retries_it() {
    let two_way = two_way().await;
    slack_posts(&two_way.slack, 3).await; // two events, one answer
    let text = "Oat milk is gone? Almond & soy are both fine.";
    connect_accepts(&two_way.connect, text, 1).await;
    connect_sent_nothing_else(&two_way.connect).await;
    deliver_order_to_slack(&two_way).await;

    // Slack escapes `&`; the shopper reads what was typed.
    let reply = envelope(
        "Ev0REPLY1",
        thread_reply("Oat milk is gone? Almond &amp; soy are both fine."),
    );
    let first = Signed::event(&reply).send(&two_way.app).await;
    assert_eq!(first.status(), StatusCode::OK);
    let answer = answer_in_thread(&two_way).await;
    assert_eq!(answer["text"], "Sent to the shopper.");

    for retry in [1, 2] {
        let again = Signed {
            retry: Some(retry),
            ..Signed::event(&reply)
        }
        .send(&two_way.app)
        .await;
        assert_eq!(again.status(), StatusCode::OK, "retry {retry}");
    }
    assert_eq!(thread_answers(&two_way.slack).await.len(), 1);
    // The message is remembered as this subscriber's, for echo suppression.
    assert_eq!(
        recorded_sent_messages(&two_way.app).await,
        [(
            ORDER.to_owned(),
            123,
            Some(two_way.subscriber.as_str().to_owned())
        )]
    );
}

#[tokio::test]
async fn a_slow_connect_is_answered_within_slacks_time_and_the_retry_sends_nothing_more() {
    let two_way = two_way().await;
    slack_posts(&two_way.slack, 1).await;
    order_with_thread(&two_way).await;
    let slow = Duration::from_millis(3500);
    Mock::given(method("POST"))
        .and(path(chat_messages_path(ORDER)))
        .respond_with(ok_json(&fixture("send_message")).set_delay(slow))
        .expect(1)
        .mount(&two_way.connect)
        .await;

    let reply = envelope("Ev0SLOW", thread_reply("Any plant milk will do"));
    let started = Instant::now();
    let first = Signed::event(&reply).send(&two_way.app).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "Slack waits 3 s at most; answered after {:?}",
        started.elapsed()
    );
    // Slack gave up on the first delivery and retries while the message is still on its way.
    let retried = Signed {
        retry: Some(1),
        ..Signed::event(&reply)
    }
    .send(&two_way.app)
    .await;
    assert_eq!(retried.status(), StatusCode::OK);

    let answer = answer_in_thread(&two_way).await;
    assert_eq!(answer["text"], "Sent to the shopper.");
    assert!(started.elapsed() >= slow);
}

#[tokio::test]
async fn unsigned_tampered_or_stale_requests_are_refused_and_send_nothing() {
    let two_way = two_way().await;
    slack_posts(&two_way.slack, 0).await;
    order_with_thread(&two_way).await;
    connect_sent_nothing_else(&two_way.connect).await;
    let reply = envelope("Ev0FORGED", thread_reply("Cancel everything"));
    let app = &two_way.app;

    let unsigned = app
        .client
        .post(app.url("/slack/events"))
        .json(&reply)
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);

    let wrong_secret = Signed {
        secret: "another-apps-signing-secret",
        ..Signed::event(&reply)
    };
    let stale = Signed {
        age: TimeDelta::minutes(6),
        ..Signed::event(&reply)
    };
    let from_the_future = Signed {
        age: TimeDelta::minutes(-6),
        ..Signed::event(&reply)
    };
    for (case, request) in [
        ("wrong secret", wrong_secret),
        ("6 minutes old", stale),
        ("6 minutes ahead", from_the_future),
    ] {
        let response = request.send(app).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{case}");
        let refused = json_body(response, StatusCode::UNAUTHORIZED).await;
        assert_eq!(refused["errors"][0]["code"], "invalid_signature", "{case}");
    }

    // Signed, then changed on the way.
    let timestamp = Utc::now().timestamp().to_string();
    let signed_body = reply.to_string();
    let tampered = signed_body.replace("Cancel everything", "Cancel everything now");
    let response = app
        .client
        .post(app.url("/slack/events"))
        .header("content-type", "application/json")
        .header("x-slack-request-timestamp", &timestamp)
        .header(
            "x-slack-signature",
            signature(SIGNING_SECRET, &timestamp, &signed_body),
        )
        .body(tampered)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bot_posts_edits_and_messages_outside_an_order_thread_send_nothing() {
    let two_way = two_way().await;
    slack_posts(&two_way.slack, 1).await; // the answer to the last, real reply
    order_with_thread(&two_way).await;
    connect_accepts(&two_way.connect, "the real reply", 1).await;
    connect_sent_nothing_else(&two_way.connect).await;

    let bot_post = json!({
        "type": "message", "channel": CHANNEL, "user": "U0BRIDGEBOT", "bot_id": "B0BRIDGE",
        "app_id": "A0", "text": "Sent to the shopper.", "ts": REPLY_TS, "thread_ts": THREAD_TS,
    });
    let legacy_bot_post = json!({
        "type": "message", "subtype": "bot_message", "channel": CHANNEL, "bot_id": "B0OTHER",
        "text": "beep", "ts": REPLY_TS, "thread_ts": THREAD_TS,
    });
    let edit = json!({
        "type": "message", "subtype": "message_changed", "hidden": true, "channel": CHANNEL,
        "ts": "1700000200.000300",
        "message": {
            "type": "message", "user": STAFF, "text": "edited text", "ts": REPLY_TS,
            "thread_ts": THREAD_TS, "edited": {"user": STAFF, "ts": "1700000200.000300"},
        },
        "previous_message": {"type": "message", "user": STAFF, "text": "first text", "ts": REPLY_TS},
    });
    let edit_with_thread_fields = json!({
        "type": "message", "subtype": "message_changed", "channel": CHANNEL, "user": STAFF,
        "text": "edited text", "ts": REPLY_TS, "thread_ts": THREAD_TS,
    });
    let top_level = json!({
        "type": "message", "channel": CHANNEL, "user": STAFF, "text": "Morning all",
        "ts": REPLY_TS,
    });
    let other_channel = json!({
        "type": "message", "channel": "C0ELSEWHERE", "user": STAFF, "text": "wrong room",
        "ts": REPLY_TS, "thread_ts": THREAD_TS,
    });
    let other_thread = json!({
        "type": "message", "channel": CHANNEL, "user": STAFF, "text": "lunch?",
        "ts": REPLY_TS, "thread_ts": "1600000000.000001",
    });
    for (n, event) in [
        bot_post,
        legacy_bot_post,
        edit,
        edit_with_thread_fields,
        top_level,
        other_channel,
        other_thread,
    ]
    .into_iter()
    .enumerate()
    {
        let response = Signed::event(&envelope(&format!("Ev0IGNORED{n}"), event))
            .send(&two_way.app)
            .await;
        assert_eq!(response.status(), StatusCode::OK, "event {n}");
    }
    assert!(thread_answers(&two_way.slack).await.is_empty());

    // The same setup does send a person's reply in the thread.
    let real = envelope("Ev0REAL", thread_reply("the real reply"));
    Signed::event(&real).send(&two_way.app).await;
    assert_eq!(
        answer_in_thread(&two_way).await["text"],
        "Sent to the shopper."
    );
}

#[tokio::test]
async fn a_refusal_by_connect_is_explained_in_the_thread_in_plain_words() {
    let two_way = two_way().await;
    slack_posts(&two_way.slack, 1).await;
    order_with_thread(&two_way).await;
    Mock::given(method("POST"))
        .and(path(chat_messages_path(ORDER)))
        .respond_with(connect_error(
            403,
            "Sending a message is not allowed at this time",
            None,
        ))
        .expect(1)
        .mount(&two_way.connect)
        .await;

    let reply = envelope("Ev0REFUSED", thread_reply("Are you still shopping?"));
    Signed::event(&reply).send(&two_way.app).await;

    assert_eq!(
        answer_in_thread(&two_way).await["text"],
        "Not sent: Instacart does not allow messages for this order right now \
         (chat disabled or no shopper available)."
    );
    assert!(recorded_sent_messages(&two_way.app).await.is_empty());
}

#[tokio::test]
async fn a_reply_connect_would_refuse_is_not_sent_and_the_thread_says_why() {
    let two_way = two_way().await;
    slack_posts(&two_way.slack, 1).await;
    order_with_thread(&two_way).await;
    connect_sent_nothing_else(&two_way.connect).await;

    let too_long = "🥛".repeat(1001);
    Signed::event(&envelope("Ev0LONG", thread_reply(&too_long)))
        .send(&two_way.app)
        .await;

    assert_eq!(
        answer_in_thread(&two_way).await["text"],
        "Not sent: the message is too long (maximum is 1000 characters)."
    );
}

#[tokio::test]
async fn the_url_verification_challenge_is_answered_when_signed() {
    let two_way = two_way().await;
    let challenge = json!({
        "token": "deprecated-verification-token",
        "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
        "type": "url_verification",
    });

    let answered = json_body(
        Signed::event(&challenge).send(&two_way.app).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        answered,
        json!({"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})
    );

    let forged = Signed {
        secret: "another-apps-signing-secret",
        ..Signed::event(&challenge)
    };
    assert_eq!(
        forged.send(&two_way.app).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn without_a_signing_secret_the_slack_routes_do_not_exist_and_buttons_are_not_posted() {
    let slack = MockServer::start().await;
    let connect = MockServer::start().await;
    let api = format!("{}/api/", slack.uri());
    let app = TestApp::builder()
        .configure(|settings| {
            settings.slack.api_base_url = api.parse().unwrap();
            settings.slack.messages_per_second = 1000.0;
            use_connect(settings, &connect);
        })
        .spawn()
        .await;
    for route in ["/slack/events", "/slack/interactions"] {
        let response = Signed::event(&json!({"type": "url_verification", "challenge": "x"}));
        let response = Signed {
            path: route,
            ..response
        }
        .send(&app)
        .await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{route}");
    }

    // Clicks could not reach the bridge: the shopper's message goes out without its button.
    let created = app
        .create_subscriber(json!({"kind": "slack", "bot_token": BOT_TOKEN, "channel": CHANNEL}))
        .await;
    let two_way = TwoWay {
        subscriber: SubscriberId::parse("id", created["id"].as_str().unwrap()).unwrap(),
        app,
        slack,
        connect,
    };
    slack_posts(&two_way.slack, 2).await;
    let posted = deliver_order_to_slack(&two_way).await;
    assert!(
        posted["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["type"] != "actions"),
        "{posted}"
    );
}

#[test]
fn an_empty_signing_secret_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path());
    settings.slack.signing_secret = Some(" ".to_owned().into());
    let refused = settings.validate().unwrap_err().to_string();
    assert!(refused.contains("`slack.signing_secret`"), "{refused}");
}

// ---------------------------------------------------------------- the "Mark as read" button

/// The `mark_read` button of a posted message.
fn mark_read_button(message: &Value) -> Value {
    message["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "actions")
        .flat_map(|b| b["elements"].as_array().unwrap().iter())
        .find(|e| e["action_id"] == "mark_read")
        .cloned()
        .unwrap_or_else(|| panic!("no Mark as read button: {message}"))
}

/// A `block_actions` payload: [`STAFF`] clicked `button` on `message` (as Slack has it).
fn click(slack: &MockServer, message: &Value, button: &Value) -> Value {
    json!({
        "type": "block_actions",
        "user": {"id": STAFF, "username": "sam", "name": "sam", "team_id": "T0"},
        "api_app_id": "A0",
        "token": "deprecated-verification-token",
        "container": {"type": "message", "message_ts": THREAD_TS, "channel_id": CHANNEL,
                      "is_ephemeral": false},
        "trigger_id": "1700000200.42.abc",
        "team": {"id": "T0", "domain": "store"},
        "channel": {"id": CHANNEL, "name": "orders"},
        "message": {"type": "message", "user": "U0BRIDGEBOT", "bot_id": "B0BRIDGE",
                    "ts": THREAD_TS, "text": message["text"], "blocks": message["blocks"]},
        "response_url": format!("{}{RESPONSE_PATH}", slack.uri()),
        "actions": [{
            "type": "button",
            "action_id": button["action_id"],
            "block_id": "mark_read",
            "text": button["text"],
            "value": button["value"],
            "action_ts": "1700000200.000400",
        }],
    })
}

/// The response URL takes one update.
async fn slack_takes_one_update(slack: &MockServer) {
    Mock::given(method("POST"))
        .and(path(RESPONSE_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true})))
        .expect(1)
        .mount(slack)
        .await;
}

/// The update posted to the response URL.
async fn message_update(slack: &MockServer) -> Value {
    wait_until("the clicked message is updated", || async {
        slack
            .received_requests()
            .await
            .unwrap()
            .iter()
            .any(|r| r.url.path() == RESPONSE_PATH)
    })
    .await;
    let requests = slack.received_requests().await.unwrap();
    body(
        requests
            .iter()
            .find(|r| r.url.path() == RESPONSE_PATH)
            .unwrap(),
    )
}

/// The text of the update's last block, its status line.
fn status_line(update: &Value) -> String {
    let blocks = update["blocks"].as_array().unwrap();
    let last = blocks.last().unwrap();
    assert_eq!(last["type"], "context");
    last["elements"][0]["text"].as_str().unwrap().to_owned()
}

fn has_button(update: &Value) -> bool {
    update["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b["elements"].as_array().into_iter().flatten())
        .any(|e| e["action_id"] == "mark_read")
}

#[tokio::test]
async fn the_mark_as_read_button_marks_the_order_read_and_says_who_and_how_many() {
    let two_way = two_way().await;
    slack_posts(&two_way.slack, 2).await;
    Mock::given(method("PUT"))
        .and(path(chat_messages_path(ORDER)))
        .respond_with(ok_json(&fixture("mark_read")))
        .expect(1)
        .mount(&two_way.connect)
        .await;
    slack_takes_one_update(&two_way.slack).await;
    let posted = deliver_order_to_slack(&two_way).await;
    let button = mark_read_button(&posted);
    assert_eq!(button["value"], ORDER);

    let clicked = Signed::interaction(&click(&two_way.slack, &posted, &button))
        .send(&two_way.app)
        .await;
    assert_eq!(clicked.status(), StatusCode::OK);

    let update = message_update(&two_way.slack).await;
    assert_eq!(update["replace_original"], true);
    assert_eq!(update["text"], posted["text"]);
    assert!(!has_button(&update), "the button stays: {update}");
    let status = status_line(&update);
    assert!(
        status.starts_with("Marked as read by <@U0STAFF> at ")
            && status.ends_with(" UTC (15 messages)"),
        "{status}"
    );
    // The rest of the message is as it was.
    let original = posted["blocks"].as_array().unwrap();
    let kept = &update["blocks"].as_array().unwrap()[..original.len() - 1];
    let without_actions: Vec<&Value> = original.iter().filter(|b| b["type"] != "actions").collect();
    assert_eq!(kept.iter().collect::<Vec<_>>(), without_actions);
}

#[tokio::test]
async fn a_failed_mark_as_read_keeps_the_button_and_says_why() {
    let two_way = two_way().await;
    slack_posts(&two_way.slack, 2).await;
    Mock::given(method("PUT"))
        .and(path(chat_messages_path(ORDER)))
        .respond_with(connect_error(404, "Resource not found", Some(4000)))
        .expect(1)
        .mount(&two_way.connect)
        .await;
    slack_takes_one_update(&two_way.slack).await;
    let posted = deliver_order_to_slack(&two_way).await;

    let button = mark_read_button(&posted);
    Signed::interaction(&click(&two_way.slack, &posted, &button))
        .send(&two_way.app)
        .await;

    let update = message_update(&two_way.slack).await;
    assert!(has_button(&update), "the button is gone: {update}");
    let status = status_line(&update);
    assert!(
        status.starts_with("Not marked as read (<@U0STAFF> at ")
            && status.ends_with("): Instacart does not know this order."),
        "{status}"
    );
}

#[tokio::test]
async fn an_unsigned_click_is_refused_and_marks_nothing() {
    let two_way = two_way().await;
    Mock::given(method("PUT"))
        .and(path(chat_messages_path(ORDER)))
        .respond_with(ok_json(&fixture("mark_read")))
        .expect(0)
        .mount(&two_way.connect)
        .await;
    let message = json!({"text": "x", "blocks": []});
    let button = json!({"action_id": "mark_read", "value": ORDER, "text": {"type": "plain_text", "text": "Mark as read"}});
    let payload = click(&two_way.slack, &message, &button);

    for request in [
        Signed {
            secret: "another-apps-signing-secret",
            ..Signed::interaction(&payload)
        },
        Signed {
            age: TimeDelta::minutes(6),
            ..Signed::interaction(&payload)
        },
    ] {
        assert_eq!(
            request.send(&two_way.app).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert!(two_way.slack.received_requests().await.unwrap().is_empty());
}

// ---------------------------------------------------------------- the event memory

#[tokio::test]
async fn a_slack_event_is_acted_on_once_and_forgotten_after_a_while() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bridge.db").display());
    let store = shopper_bridge::store::open(&url).await.unwrap();
    let t0 = Utc::now();
    let long_ago = t0 - TimeDelta::days(1);

    assert!(store.record_slack_event("Ev1", t0, long_ago).await.unwrap());
    assert!(!store.record_slack_event("Ev1", t0, long_ago).await.unwrap());
    assert!(store.record_slack_event("Ev2", t0, long_ago).await.unwrap());
    drop(store);

    // Durable: a restarted bridge still knows it.
    let store = shopper_bridge::store::open(&url).await.unwrap();
    let later = t0 + TimeDelta::hours(2);
    assert!(!store
        .record_slack_event("Ev1", later, long_ago)
        .await
        .unwrap());
    // Once older than what is kept, it is pruned and would count as new.
    assert!(store
        .record_slack_event("Ev3", later, t0 + TimeDelta::seconds(1))
        .await
        .unwrap());
    assert!(store.record_slack_event("Ev1", later, t0).await.unwrap());
}
