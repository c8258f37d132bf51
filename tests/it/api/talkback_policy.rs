//! What the bridge does in the chat is not echoed back to whoever caused it: a message sent
//! through it is marked as the retailer's and not announced to its origin, and an `on_delivery`
//! subscriber's mark-read (one PUT per order per round) is not announced back to it.

use chrono::Utc;
use reqwest::StatusCode;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockGuard, MockServer};

use shopper_bridge::domain::{OrderId, SubscriberId};

use crate::harness::{
    chat_messages_path, fixture, json_body, ok_json, on_get, order_messages_path,
    poll_continuously, single_error, use_connect, Receiver, TestApp,
};

const ORDER: &str = "122233";
/// Connect's id for the message of the `send_message` fixture.
const SENT_ID: i64 = 123;

/// A chat message of the seed order: from the shopper (as in the seed) or from the customer's
/// side (which is how Connect shows what the bridge sent), read or not.
fn chat_message(id: i64, from_shopper: bool, read: bool) -> Value {
    let mut message = fixture("order_messages")["chat_messages"][0].clone();
    message["id"] = json!(id);
    message["body"] = json!(format!("message {id}"));
    if !from_shopper {
        message["sender_type"] = json!("user");
        message["sender_id"] = json!(8);
        message["recipient_type"] = json!("driver");
        message["recipient_id"] = json!(15);
    }
    message["read"] = json!(read);
    if read {
        message["read_at"] = json!("2021-01-01T00:05:00Z");
    }
    message
}

fn shopper(id: i64) -> Value {
    chat_message(id, true, false)
}

fn customer(id: i64) -> Value {
    chat_message(id, false, false)
}

/// The same messages, now read.
fn read(messages: &[Value]) -> Vec<Value> {
    messages
        .iter()
        .map(|m| {
            let mut m = m.clone();
            m["read"] = json!(true);
            m["read_at"] = json!("2021-01-01T00:05:00Z");
            m
        })
        .collect()
}

/// Connect answers `order_messages` of [`ORDER`] with exactly these chat messages, until the
/// guard is dropped.
async fn chat_shows(connect: &MockServer, messages: &[Value]) -> MockGuard {
    let mut body = fixture("order_messages");
    body["chat_messages"] = json!(messages);
    body["lifecycle_messages"] = json!([]);
    on_get(order_messages_path(ORDER))
        .respond_with(ok_json(&body))
        .mount_as_scoped(connect)
        .await
}

/// Connect's chat endpoint of [`ORDER`] (`POST` sends, `PUT` marks read) answers the fixture
/// `answer`, `calls` times.
async fn expect_chat_call(connect: &MockServer, verb: &str, answer: &str, calls: u64) {
    Mock::given(method(verb))
        .and(path(chat_messages_path(ORDER)))
        .respond_with(ok_json(&fixture(answer)))
        .expect(calls)
        .mount(connect)
        .await;
}

async fn app_for(connect: &MockServer) -> TestApp {
    let app = TestApp::builder()
        .configure(|s| {
            use_connect(s, connect);
            poll_continuously(s);
        })
        .spawn()
        .await;
    app.watch_order(ORDER).await;
    app
}

/// A webhook subscriber to a fresh receiver, with this mark-read policy.
async fn subscriber(app: &TestApp, mark_read: &str) -> (SubscriberId, Receiver) {
    let receiver = Receiver::start(&[]).await;
    let created = app
        .create_subscriber(json!({"kind": "webhook", "url": receiver.url, "mark_read": mark_read}))
        .await;
    assert_eq!(created["mark_read"], mark_read);
    let id = SubscriberId::parse("id", created["id"].as_str().unwrap()).unwrap();
    (id, receiver)
}

/// Polls once and delivers everything that is due.
async fn poll_and_deliver(app: &TestApp) {
    app.poll_when_due().await;
    while app.deliver_next().await > 0 {}
}

/// The bodies a receiver got, as `(type, message id, sent_by_retailer)`, sorted.
fn received(receiver: &Receiver) -> Vec<(String, i64, bool)> {
    let mut found: Vec<_> = receiver
        .requests()
        .iter()
        .map(|r| {
            let body = r.json();
            (
                body["type"].as_str().unwrap().to_owned(),
                body["data"]["message"]["id"].as_i64().unwrap(),
                body["data"]["sent_by_retailer"].as_bool().unwrap(),
            )
        })
        .collect();
    found.sort();
    found
}

fn created(id: i64, sent_by_retailer: bool) -> (String, i64, bool) {
    ("chat_message.created".to_owned(), id, sent_by_retailer)
}

fn was_read(id: i64, sent_by_retailer: bool) -> (String, i64, bool) {
    ("chat_message.read".to_owned(), id, sent_by_retailer)
}

#[tokio::test]
async fn a_message_sent_through_the_api_comes_back_from_the_chat_marked_as_the_retailers() {
    let connect = MockServer::start().await;
    expect_chat_call(&connect, "POST", "send_message", 1).await;
    let app = app_for(&connect).await;
    let (_, receiver) = subscriber(&app, "never").await;

    let sent = json_body(
        app.post(
            &format!("/v1/orders/{ORDER}/messages"),
            &json!({"body": "Any plant milk will do"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(sent["id"], SENT_ID);

    let _chat = chat_shows(&connect, &[shopper(1), customer(SENT_ID)]).await;
    poll_and_deliver(&app).await;
    assert_eq!(
        received(&receiver),
        [created(1, false), created(SENT_ID, true)]
    );
}

#[tokio::test]
async fn a_message_sent_from_a_subscriber_is_not_echoed_to_it_but_reaches_the_others() {
    let connect = MockServer::start().await;
    let app = app_for(&connect).await;
    let (origin, origin_receiver) = subscriber(&app, "never").await;
    let (_, other_receiver) = subscriber(&app, "never").await;
    let order = OrderId::parse("order_id", ORDER).unwrap();
    app.store
        .record_sent_message(&order, SENT_ID, Some(&origin), Utc::now())
        .await
        .unwrap();

    let messages = [customer(SENT_ID)];
    let chat = chat_shows(&connect, &messages).await;
    poll_and_deliver(&app).await;
    assert_eq!(received(&origin_receiver), []);
    assert_eq!(received(&other_receiver), [created(SENT_ID, true)]);

    // The shopper reading it is news to its origin too.
    drop(chat);
    let _chat = chat_shows(&connect, &read(&messages)).await;
    poll_and_deliver(&app).await;
    assert_eq!(received(&origin_receiver), [was_read(SENT_ID, true)]);
    assert_eq!(
        received(&other_receiver),
        [created(SENT_ID, true), was_read(SENT_ID, true)]
    );
}

/// An app watching [`ORDER`] with one subscriber of the `mark_read` policy, Connect showing
/// `messages` and expecting `puts` mark-read calls.
struct MarkReadCase {
    connect: MockServer,
    app: TestApp,
    receiver: Receiver,
    _chat: MockGuard,
}

async fn marking_read(mark_read: &str, puts: u64, messages: &[Value]) -> MarkReadCase {
    let connect = MockServer::start().await;
    expect_chat_call(&connect, "PUT", "mark_read", puts).await;
    let app = app_for(&connect).await;
    let (_, receiver) = subscriber(&app, mark_read).await;
    let _chat = chat_shows(&connect, messages).await;
    MarkReadCase {
        connect,
        app,
        receiver,
        _chat,
    }
}

#[tokio::test]
async fn three_shopper_messages_delivered_to_an_on_delivery_subscriber_mark_the_order_read_once() {
    let case = marking_read("on_delivery", 1, &[shopper(1), shopper(2), shopper(3)]).await;
    case.app.poll_when_due().await;
    assert_eq!(case.app.deliver_next().await, 3);
    assert_eq!(case.app.deliver_next().await, 0);
    assert_eq!(case.receiver.requests().len(), 3);
    case.connect.verify().await;
}

#[tokio::test]
async fn a_never_subscriber_marks_nothing_read() {
    let case = marking_read("never", 0, &[shopper(1), shopper(2)]).await;
    poll_and_deliver(&case.app).await;
    assert_eq!(case.receiver.requests().len(), 2);
    case.connect.verify().await;
}

#[tokio::test]
async fn a_customer_message_delivered_to_an_on_delivery_subscriber_marks_nothing_read() {
    let case = marking_read("on_delivery", 0, &[customer(1)]).await;
    poll_and_deliver(&case.app).await;
    assert_eq!(received(&case.receiver), [created(1, false)]);
    case.connect.verify().await;
}

#[tokio::test]
async fn the_readings_an_on_delivery_subscriber_caused_are_announced_to_the_others_only() {
    let connect = MockServer::start().await;
    expect_chat_call(&connect, "PUT", "mark_read", 1).await;
    let app = app_for(&connect).await;
    let (reader, reader_receiver) = subscriber(&app, "on_delivery").await;
    let (_, other_receiver) = subscriber(&app, "never").await;

    let messages = [shopper(1), shopper(2), shopper(3), customer(4)];
    let chat = chat_shows(&connect, &messages).await;
    poll_and_deliver(&app).await;
    connect.verify().await;

    // Connect now shows every message read: the shopper's by the PUT, the customer's by the
    // shopper.
    drop(chat);
    let _chat = chat_shows(&connect, &read(&messages)).await;
    poll_and_deliver(&app).await;
    let everything: Vec<_> = (1..=4)
        .map(|id| created(id, false))
        .chain((1..=4).map(|id| was_read(id, false)))
        .collect();
    assert_eq!(received(&other_receiver), everything);
    // The shopper reading the customer's message is still news to the subscriber.
    let mut own: Vec<_> = (1..=4).map(|id| created(id, false)).collect();
    own.push(was_read(4, false));
    assert_eq!(received(&reader_receiver), own);
    let reader_deliveries = app
        .deliveries(&format!("?subscriber_id={reader}"))
        .await
        .iter()
        .filter(|d| d["event_type"] == "chat_message.read")
        .count();
    assert_eq!(reader_deliveries, 1);
}

#[tokio::test]
async fn mark_read_defaults_to_never_and_is_settable_on_every_kind() {
    let app = TestApp::builder()
        .with_email(
            "smtp://127.0.0.1:2525".parse().unwrap(),
            "Store 42 <chat@store.example>",
        )
        .spawn()
        .await;
    let webhook = app
        .create_subscriber(json!({"kind": "webhook", "url": "http://127.0.0.1:9/hook"}))
        .await;
    assert_eq!(webhook["mark_read"], "never");

    let kinds = [
        json!({"kind": "webhook", "url": "http://127.0.0.1:9/hook"}),
        json!({"kind": "email", "to": ["staff@store.example"]}),
        json!({"kind": "slack", "bot_token": "xoxb-1-2-abcd", "channel": "C0123ABCD"}),
    ];
    for mut body in kinds {
        body["mark_read"] = json!("on_delivery");
        let created = app.create_subscriber(body.clone()).await;
        assert_eq!(created["mark_read"], "on_delivery", "{body}");
        let path = format!("/v1/subscribers/{}", created["id"].as_str().unwrap());
        let patched = json_body(
            app.patch(&path, &json!({"mark_read": "never"})).await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(patched["mark_read"], "never", "{body}");
        let shown = json_body(app.get(&path).await, StatusCode::OK).await;
        assert_eq!(shown["mark_read"], "never", "{body}");
        assert_eq!(shown["kind"], body["kind"]);
    }

    let path = format!("/v1/subscribers/{}", webhook["id"].as_str().unwrap());
    for response in [
        app.patch(&path, &json!({"mark_read": "always"})).await,
        app.post(
            "/v1/subscribers",
            &json!({"kind": "webhook", "url": "http://127.0.0.1:9/hook", "mark_read": "sometimes"}),
        )
        .await,
    ] {
        let error = single_error(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;
        assert_eq!(error.field.as_deref(), Some("mark_read"));
        assert_eq!(
            error.message,
            "`mark_read` must be one of never, on_delivery"
        );
    }
}
