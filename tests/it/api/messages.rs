//! Talking back to the shopper: `POST /v1/orders/{id}/messages` and `PUT .../messages/read`
//! against a mocked Connect playing the seed payloads and documented errors.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use reqwest::{Method, Response, StatusCode};
use secrecy::SecretString;
use serde_json::{json, Value};
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockBuilder, MockServer, ResponseTemplate};

use crate::harness::{
    chat_messages_path, connect_error, expect_token, fixture, json_body, ok_json, single_error,
    spawn_app, use_connect, TestApp,
};

const ORDER: &str = "122233";
const TOO_LONG: &str = "is too long (maximum is 1000 characters)";
const NOT_ALLOWED: &str = "Sending a message is not allowed at this time";

/// A mock for Connect's chat endpoint of `order_id` (POST sends, PUT marks read).
fn on_chat(verb: &str, order_id: &str) -> MockBuilder {
    Mock::given(method(verb)).and(path(chat_messages_path(order_id)))
}

async fn app_for(connect: &MockServer) -> TestApp {
    TestApp::builder()
        .configure(|s| use_connect(s, connect))
        .spawn()
        .await
}

async fn send(app: &TestApp, order_id: &str, body: &str) -> Response {
    app.post(
        &format!("/v1/orders/{order_id}/messages"),
        &json!({ "body": body }),
    )
    .await
}

async fn mark_read(app: &TestApp, order_id: &str) -> Response {
    app.request(Method::PUT, &format!("/v1/orders/{order_id}/messages/read"))
        .send()
        .await
        .expect("PUT")
}

/// `unit` repeated `n` times: ASCII, a two-byte and a four-byte character.
const UNITS: [&str; 3] = ["a", "\u{e9}", "\u{1f95b}"];

#[tokio::test]
async fn blank_and_too_long_bodies_are_a_400_in_connects_words_without_calling_it() {
    let connect = MockServer::start().await;
    on_chat("POST", ORDER)
        .respond_with(ok_json(&fixture("send_message")))
        .expect(0)
        .mount(&connect)
        .await;
    let app = app_for(&connect).await;

    let mut refused = vec![
        (String::new(), "can't be blank"),
        (" \n\t ".to_owned(), "can't be blank"),
    ];
    refused.extend(UNITS.map(|unit| (unit.repeat(1001), TOO_LONG)));
    for (body, message) in refused {
        let error = single_error(
            send(&app, ORDER, &body).await,
            StatusCode::BAD_REQUEST,
            "1001",
        )
        .await;
        assert_eq!(error.message, message, "{body:?}");
        assert_eq!(error.field.as_deref(), Some("body"));
    }
}

#[tokio::test]
async fn bodies_of_exactly_1000_characters_are_sent_as_given() {
    let connect = MockServer::start().await;
    for unit in UNITS {
        on_chat("POST", ORDER)
            .and(body_json(json!({ "body": unit.repeat(1000) })))
            .respond_with(ok_json(&fixture("send_message")))
            .expect(1)
            .mount(&connect)
            .await;
    }
    let app = app_for(&connect).await;

    for unit in UNITS {
        let response = send(&app, ORDER, &unit.repeat(1000)).await;
        json_body(response, StatusCode::CREATED).await;
    }
}

#[tokio::test]
async fn a_sent_message_posts_only_the_body_and_returns_connects_record() {
    let connect = MockServer::start().await;
    let text = "  Any plant milk will do, thanks!\n";
    on_chat("POST", ORDER)
        .and(header("authorization", "Bearer test-connect-token"))
        .and(body_json(json!({ "body": text })))
        .respond_with(ok_json(&fixture("send_message")))
        .expect(1)
        .mount(&connect)
        .await;
    let app = app_for(&connect).await;

    let sent = json_body(send(&app, ORDER, text).await, StatusCode::CREATED).await;
    // id, type, created_at and timezone, as Connect gave them.
    assert_eq!(sent, fixture("send_message"));
}

#[tokio::test]
async fn connect_refusing_the_message_is_a_409_that_says_why() {
    let connect = MockServer::start().await;
    on_chat("POST", ORDER)
        .respond_with(connect_error(403, NOT_ALLOWED, None))
        .expect(1)
        .mount(&connect)
        .await;
    let app = app_for(&connect).await;

    let response = send(&app, ORDER, "hello").await;
    let error = single_error(response, StatusCode::CONFLICT, "messaging_not_allowed").await;
    assert!(error.message.contains(NOT_ALLOWED), "{error:?}");
    assert!(error.message.contains("chat is disabled"), "{error:?}");
    assert!(error.message.contains("no shopper"), "{error:?}");
}

#[tokio::test]
async fn an_order_connect_does_not_know_is_a_404_of_its_own() {
    let connect = MockServer::start().await;
    for verb in ["POST", "PUT"] {
        on_chat(verb, ORDER)
            .respond_with(connect_error(404, "Resource not found", Some(4000)))
            .expect(1)
            .mount(&connect)
            .await;
    }
    let app = app_for(&connect).await;

    for response in [
        send(&app, ORDER, "hello").await,
        mark_read(&app, ORDER).await,
    ] {
        let error = single_error(response, StatusCode::NOT_FOUND, "upstream_not_found").await;
        assert!(error.message.contains("Instacart"), "{error:?}");
    }
}

#[tokio::test]
async fn connects_own_1001_is_passed_on_as_the_same_400() {
    let connect = MockServer::start().await;
    // The seed's error exactly, for a body the bridge let through (Connect has the last word).
    on_chat("POST", ORDER)
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": {"message": TOO_LONG, "code": 1001},
            "meta": {"key": "body"},
        })))
        .expect(1)
        .mount(&connect)
        .await;
    let app = app_for(&connect).await;

    let response = send(&app, ORDER, "hello").await;
    let error = single_error(response, StatusCode::BAD_REQUEST, "1001").await;
    assert_eq!(error.message, TOO_LONG);
    assert_eq!(error.field.as_deref(), Some("body"));
}

#[tokio::test]
async fn marking_read_passes_connects_count_through() {
    let connect = MockServer::start().await;
    on_chat("PUT", ORDER)
        .respond_with(ok_json(&fixture("mark_read")))
        .expect(1)
        .mount(&connect)
        .await;
    let app = app_for(&connect).await;

    let read = json_body(mark_read(&app, ORDER).await, StatusCode::OK).await;
    assert_eq!(read, json!({"messages_read_count": 15}));
}

fn user_grant(user_id: &str) -> Value {
    let assertion = BASE64.encode(json!({ "user_id": user_id }).to_string());
    json!({"grant_type": "fulfillment_user_assertion", "assertion": assertion})
}

async fn oauth_app(connect: &MockServer) -> TestApp {
    TestApp::builder()
        .configure(|s| {
            use_connect(s, connect);
            s.instacart.token = None;
            s.instacart.client_id = Some("bridge-client".to_owned());
            s.instacart.client_secret = Some(SecretString::from("bridge-secret".to_owned()));
        })
        .spawn()
        .await
}

#[tokio::test]
async fn an_unwatched_order_speaks_as_the_given_user_or_else_as_the_client() {
    let connect = MockServer::start().await;
    expect_token(&connect, user_grant("user-7"), "user-token", 1).await;
    let client_grant = json!({"grant_type": "client_credentials"});
    expect_token(&connect, client_grant, "client-token", 1).await;
    for (order, token) in [("700001", "user-token"), ("700002", "client-token")] {
        on_chat("POST", order)
            .and(header("authorization", format!("Bearer {token}")))
            .respond_with(ok_json(&fixture("send_message")))
            .expect(1)
            .mount(&connect)
            .await;
    }
    let app = oauth_app(&connect).await;

    let response = app
        .post(
            "/v1/orders/700001/messages?user_id=user-7",
            &json!({"body": "hi"}),
        )
        .await;
    json_body(response, StatusCode::CREATED).await;
    json_body(send(&app, "700002", "hi").await, StatusCode::CREATED).await;
}

#[tokio::test]
async fn a_watched_order_speaks_as_its_stored_user() {
    let connect = MockServer::start().await;
    expect_token(&connect, user_grant("user-42"), "user-token", 1).await;
    on_chat("PUT", ORDER)
        .and(header("authorization", "Bearer user-token"))
        .respond_with(ok_json(&fixture("mark_read")))
        .expect(2)
        .mount(&connect)
        .await;
    let app = oauth_app(&connect).await;
    let watch = json!({"order_id": ORDER, "user_id": "user-42"});
    json_body(app.post("/v1/orders", &watch).await, StatusCode::CREATED).await;

    json_body(mark_read(&app, ORDER).await, StatusCode::OK).await;
    // Naming the same user again is fine.
    let path = format!("/v1/orders/{ORDER}/messages/read?user_id=user-42");
    let response = app.request(Method::PUT, &path).send().await.unwrap();
    json_body(response, StatusCode::OK).await;
}

#[tokio::test]
async fn another_user_id_for_a_watched_order_is_a_conflict_without_calling_connect() {
    let connect = MockServer::start().await;
    on_chat("POST", ORDER)
        .respond_with(ok_json(&fixture("send_message")))
        .expect(0)
        .mount(&connect)
        .await;
    let app = app_for(&connect).await;
    app.watch_order(ORDER).await;

    let response = app
        .post(
            &format!("/v1/orders/{ORDER}/messages?user_id=someone-else"),
            &json!({"body": "hi"}),
        )
        .await;
    let error = single_error(response, StatusCode::CONFLICT, "conflict").await;
    assert!(error.message.contains("without a user_id"), "{error:?}");
}

#[tokio::test]
async fn impossible_order_ids_and_user_ids_are_refused_without_calling_connect() {
    let connect = MockServer::start().await;
    let app = app_for(&connect).await;

    let error = single_error(
        send(&app, "12.3", "hi").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert!(error.message.contains("12.3"), "{error:?}");
    single_error(
        mark_read(&app, "12.3").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    let path = format!("/v1/orders/{ORDER}/messages/read?user_id=has%20space");
    let response = app.request(Method::PUT, &path).send().await.unwrap();
    let error = single_error(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;
    assert_eq!(error.field.as_deref(), Some("user_id"));

    assert!(connect.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn connects_rate_limit_is_a_429_with_its_retry_after() {
    let connect = MockServer::start().await;
    on_chat("PUT", ORDER)
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "7"))
        .expect(1)
        .mount(&connect)
        .await;
    let app = app_for(&connect).await;

    let response = mark_read(&app, ORDER).await;
    assert_eq!(response.headers()["retry-after"], "7");
    single_error(
        response,
        StatusCode::TOO_MANY_REQUESTS,
        "upstream_rate_limited",
    )
    .await;
}

#[tokio::test]
async fn connect_failures_are_a_502_that_never_shows_a_token() {
    let connect = MockServer::start().await;
    on_chat("POST", ORDER)
        .respond_with(ResponseTemplate::new(503))
        .expect(1)
        .mount(&connect)
        .await;
    on_chat("PUT", ORDER)
        .respond_with(connect_error(401, "Unauthorized", None))
        .expect(1)
        .mount(&connect)
        .await;
    let app = app_for(&connect).await;

    let response = send(&app, ORDER, "hello").await;
    let error = single_error(response, StatusCode::BAD_GATEWAY, "upstream_unavailable").await;
    assert!(error.message.contains("503"), "{error:?}");

    let response = mark_read(&app, ORDER).await;
    let error = single_error(response, StatusCode::BAD_GATEWAY, "upstream_auth_failed").await;
    assert!(!error.message.contains("test-connect-token"), "{error:?}");
}

#[tokio::test]
async fn an_unreachable_connect_is_a_502() {
    // The test settings point Connect at a port nothing listens on.
    let app = spawn_app().await;
    let response = mark_read(&app, ORDER).await;
    single_error(response, StatusCode::BAD_GATEWAY, "upstream_unavailable").await;
}

#[tokio::test]
async fn messages_routes_need_the_admin_token() {
    let connect = MockServer::start().await;
    let app = app_for(&connect).await;

    let path = format!("/v1/orders/{ORDER}/messages");
    let response = app
        .client
        .post(app.url(&path))
        .json(&json!({"body": "hi"}))
        .send()
        .await
        .unwrap();
    single_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let response = app
        .client
        .put(app.url(&format!("{path}/read")))
        .send()
        .await
        .unwrap();
    single_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;

    assert!(connect.received_requests().await.unwrap().is_empty());
}
