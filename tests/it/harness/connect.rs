//! A mocked Instacart Connect (wiremock) and the seed payloads in `tests/fixtures/`: the mocks
//! most tests mount, each with the number of calls it expects (checked when the server drops).

use serde_json::{json, Value};
use std::time::Duration;
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, MockBuilder, MockServer, ResponseTemplate};

use shopper_bridge::config::Settings;

/// Points the app at `connect` (the static token of [`super::test_settings`] authenticates).
pub fn use_connect(settings: &mut Settings, connect: &MockServer) {
    settings.instacart.base_url = connect.uri().parse().expect("mock URL");
}

/// Every watched order is due again a millisecond after each poll.
pub fn poll_continuously(settings: &mut Settings) {
    settings.poller.interval = Duration::from_millis(1);
    settings.poller.jitter = 0.0;
}

/// `tests/fixtures/{name}.json`: a payload of the seed pages, verbatim.
pub fn fixture(name: &str) -> Value {
    let text = fixture_text(name);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// `tests/fixtures/{name}.json` as text, byte for byte.
pub fn fixture_text(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A mock for `GET {path}`.
pub fn on_get(path_: impl Into<String>) -> MockBuilder {
    Mock::given(method("GET")).and(path(path_))
}

/// `200` with `body` as JSON.
pub fn ok_json(body: &Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(body)
}

pub fn order_messages_path(order_id: &str) -> String {
    format!("/v2/post_checkout/orders/{order_id}/order_messages")
}

pub fn chat_messages_path(order_id: &str) -> String {
    format!("/v2/post_checkout/chat/{order_id}/messages")
}

/// An error answer as the seed pages document them: `{"error":{"message","code"},"meta":{}}`.
pub fn connect_error(status: u16, message: &str, code: Option<i64>) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .set_body_json(json!({"error": {"message": message, "code": code}, "meta": {}}))
}

/// Connect answers `GET order_messages` of `order` with `answer`, `calls` times in the test.
pub async fn expect_order_messages(
    connect: &MockServer,
    order: &str,
    answer: ResponseTemplate,
    calls: u64,
) {
    on_get(order_messages_path(order))
        .respond_with(answer)
        .expect(calls)
        .mount(connect)
        .await;
}

/// Connect answers the first `GET order_messages` of `order` with `answer`, and only that one:
/// later calls reach the mocks mounted after it.
pub async fn expect_order_messages_first(
    connect: &MockServer,
    order: &str,
    answer: ResponseTemplate,
) {
    on_get(order_messages_path(order))
        .respond_with(answer)
        .up_to_n_times(1)
        .expect(1)
        .mount(connect)
        .await;
}

/// Connect answers `GET` of the chat endpoint of `order` with `answer`, `calls` times.
pub async fn expect_chat_messages(
    connect: &MockServer,
    order: &str,
    answer: ResponseTemplate,
    calls: u64,
) {
    on_get(chat_messages_path(order))
        .respond_with(answer)
        .expect(calls)
        .mount(connect)
        .await;
}

/// Connect's token endpoint hands `token` out for requests whose form includes `grant`,
/// `calls` times.
pub async fn expect_token(connect: &MockServer, grant: Value, token: &str, calls: u64) {
    Mock::given(method("POST"))
        .and(path("/v2/oauth/token"))
        .and(body_partial_json(grant))
        .respond_with(ok_json(
            &json!({"access_token": token, "token_type": "Bearer", "expires_in": 7200}),
        ))
        .expect(calls)
        .mount(connect)
        .await;
}

/// Connect answers every `GET order_messages` of `order` with the seed payload.
pub async fn serve_seed_order_messages(connect: &MockServer, order: &str) {
    on_get(order_messages_path(order))
        .respond_with(ok_json(&fixture("order_messages")))
        .mount(connect)
        .await;
}
