//! The Connect client against wiremock playing Instacart Connect, with the seed payloads and the
//! error tables of the reference pages.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use secrecy::SecretString;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use shopper_bridge::config::{InstacartAuth, InstacartSettings};
use shopper_bridge::domain::{OrderId, UserId};
use shopper_bridge::instacart::models::{
    ChatMessagesResponse, MarkReadResponse, OrderMessagesResponse, SendMessageResponse,
};
use shopper_bridge::instacart::{InstacartClient, InstacartError};
use wiremock::matchers::{body_json, body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const STATIC_TOKEN: &str = "static-token-0123456789";
const CLIENT_ID: &str = "bridge-client";
const CLIENT_SECRET: &str = "client-secret-0123456789";
const ORDER_ID: &str = "122233";
const TOKEN_PATH: &str = "/v2/oauth/token";

fn order() -> OrderId {
    OrderId::parse("order_id", ORDER_ID).unwrap()
}

fn user(id: &str) -> UserId {
    UserId::parse("user_id", id).unwrap()
}

fn fixture(name: &str) -> Value {
    let file = format!("{}/tests/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap()
}

fn seed<T: DeserializeOwned>(name: &str) -> T {
    serde_json::from_value(fixture(name)).unwrap()
}

/// Long enough for the slowest CI machine; the renewal tests rely on tokens living no longer.
const TIMEOUT: Duration = Duration::from_secs(30);

fn settings(base_url: &str) -> InstacartSettings {
    InstacartSettings {
        base_url: base_url.parse().unwrap(),
        timeout: TIMEOUT,
        ..InstacartSettings::default()
    }
}

fn static_auth() -> InstacartAuth {
    InstacartAuth::StaticToken(SecretString::from(STATIC_TOKEN))
}

fn oauth() -> InstacartAuth {
    InstacartAuth::OAuth {
        client_id: CLIENT_ID.to_owned(),
        client_secret: SecretString::from(CLIENT_SECRET),
    }
}

fn client(server: &MockServer, auth: InstacartAuth) -> InstacartClient {
    InstacartClient::new(&settings(&server.uri()), auth).unwrap()
}

fn bearer(token: &str) -> wiremock::matchers::HeaderExactMatcher {
    header("authorization", format!("Bearer {token}").as_str())
}

fn envelope(message: &str, code: Option<i64>) -> Value {
    json!({ "error": { "message": message, "code": code } })
}

/// The four endpoints, so a test can run the same check against each.
#[derive(Debug, Clone, Copy)]
enum Call {
    OrderMessages,
    ChatMessages,
    SendMessage,
    MarkRead,
}

const ALL_CALLS: [Call; 4] = [
    Call::OrderMessages,
    Call::ChatMessages,
    Call::SendMessage,
    Call::MarkRead,
];

const MESSAGE: &str = "Please leave it at the door";

impl Call {
    fn route(self) -> (&'static str, String) {
        let chat = format!("/v2/post_checkout/chat/{ORDER_ID}/messages");
        match self {
            Call::OrderMessages => (
                "GET",
                format!("/v2/post_checkout/orders/{ORDER_ID}/order_messages"),
            ),
            Call::ChatMessages => ("GET", chat),
            Call::SendMessage => ("POST", chat),
            Call::MarkRead => ("PUT", chat),
        }
    }

    fn mock(self) -> wiremock::MockBuilder {
        let (verb, route) = self.route();
        Mock::given(method(verb)).and(path(route))
    }

    async fn run(
        self,
        client: &InstacartClient,
        user_id: Option<&UserId>,
    ) -> Result<(), InstacartError> {
        let order = order();
        match self {
            Call::OrderMessages => client.order_messages(&order, user_id).await.map(drop),
            Call::ChatMessages => client.chat_messages(&order, user_id).await.map(drop),
            Call::SendMessage => client
                .send_message(&order, user_id, MESSAGE)
                .await
                .map(drop),
            Call::MarkRead => client.mark_read(&order, user_id).await.map(drop),
        }
    }
}

/// A server answering `call` with the seed `name` only when the documented headers are present,
/// and a client sending `X-Treat-Ids-As-Internal`.
async fn serve_seed(call: Call, name: &str) -> (MockServer, InstacartClient) {
    let server = MockServer::start().await;
    call.mock()
        .and(bearer(STATIC_TOKEN))
        .and(header("accept", "application/json"))
        .and(header("x-treat-ids-as-internal", "true"))
        .and(header("user-agent", shopper_bridge::USER_AGENT))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture(name)))
        .expect(1)
        .mount(&server)
        .await;
    let settings = InstacartSettings {
        treat_ids_as_internal: true,
        ..settings(&server.uri())
    };
    let client = InstacartClient::new(&settings, static_auth()).unwrap();
    (server, client)
}

/// The error `call` fails with when Connect answers `response` (exactly once: no retry).
async fn error_for(call: Call, response: ResponseTemplate) -> InstacartError {
    let server = MockServer::start().await;
    call.mock()
        .respond_with(response)
        .expect(1)
        .mount(&server)
        .await;
    call.run(&client(&server, static_auth()), None)
        .await
        .unwrap_err()
}

fn token_answer(token: &str, expires_in: u64) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "scope": "connect:post_checkout",
        "created_at": 1_700_000_000
    }))
}

async fn mount_token(server: &MockServer, answer: ResponseTemplate, times: u64) {
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(answer)
        .up_to_n_times(times)
        .expect(times)
        .mount(server)
        .await;
}

/// Answers order_messages with its seed for requests bearing `token`, expecting `times` of them.
async fn serve_for_token(server: &MockServer, token: &str, times: u64) {
    Call::OrderMessages
        .mock()
        .and(bearer(token))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("order_messages")))
        .expect(times)
        .mount(server)
        .await;
}

fn assertion_for(user_id: &str) -> String {
    BASE64.encode(json!({ "user_id": user_id }).to_string())
}

// --- the endpoints and their seed payloads ---

#[tokio::test]
async fn order_messages_returns_the_seed_payload() {
    let (_server, client) = serve_seed(Call::OrderMessages, "order_messages").await;
    let got = client.order_messages(&order(), None).await.unwrap();
    assert_eq!(got, seed::<OrderMessagesResponse>("order_messages"));
    assert_eq!(got.lifecycle_messages[0].medium, "sms");
}

#[tokio::test]
async fn chat_messages_returns_the_seed_payload() {
    let (_server, client) = serve_seed(Call::ChatMessages, "chat_messages").await;
    let got = client.chat_messages(&order(), None).await.unwrap();
    assert_eq!(got, seed::<ChatMessagesResponse>("chat_messages"));
}

#[tokio::test]
async fn send_message_posts_the_body_as_json_and_returns_the_seed_payload() {
    let (server, client) = serve_seed(Call::SendMessage, "send_message").await;
    let got = client.send_message(&order(), None, MESSAGE).await.unwrap();
    assert_eq!(got, seed::<SendMessageResponse>("send_message"));

    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests[0].headers["content-type"], "application/json");
    assert_eq!(
        requests[0].body_json::<Value>().unwrap(),
        json!({ "body": MESSAGE })
    );
}

#[tokio::test]
async fn mark_read_returns_the_seed_payload() {
    let (_server, client) = serve_seed(Call::MarkRead, "mark_read").await;
    let got = client.mark_read(&order(), None).await.unwrap();
    assert_eq!(got, seed::<MarkReadResponse>("mark_read"));
}

#[tokio::test]
async fn treat_ids_as_internal_header_is_only_sent_when_configured() {
    let server = MockServer::start().await;
    Call::MarkRead
        .mock()
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("mark_read")))
        .expect(1)
        .mount(&server)
        .await;
    client(&server, static_auth())
        .mark_read(&order(), None)
        .await
        .unwrap();
    let requests = server.received_requests().await.unwrap();
    assert!(!requests[0].headers.contains_key("x-treat-ids-as-internal"));
}

#[tokio::test]
async fn base_url_path_prefix_is_kept_without_doubled_slashes() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!(
            "/connect/v2/post_checkout/chat/{ORDER_ID}/messages"
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("chat_messages")))
        .expect(2)
        .mount(&server)
        .await;
    for base in ["/connect", "/connect/"] {
        let settings = settings(&format!("{}{base}", server.uri()));
        let client = InstacartClient::new(&settings, static_auth()).unwrap();
        client.chat_messages(&order(), None).await.unwrap();
    }
}

// --- the documented errors ---

#[tokio::test]
async fn unknown_order_is_not_found_on_every_endpoint() {
    for call in ALL_CALLS {
        let answer =
            ResponseTemplate::new(404).set_body_json(envelope("Resource not found", Some(4000)));
        let err = error_for(call, answer).await;
        assert!(matches!(err, InstacartError::NotFound), "{call:?}: {err:?}");
        assert!(!err.is_retryable());
    }
}

#[tokio::test]
async fn order_of_a_user_fetched_with_client_credentials_is_user_id_not_found() {
    let answer =
        ResponseTemplate::new(400).set_body_json(envelope("User ID not found", Some(4001)));
    let err = error_for(Call::OrderMessages, answer).await;
    assert!(matches!(err, InstacartError::UserIdNotFound), "{err:?}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn redacted_shopper_pii_is_shopper_pii_redacted() {
    let answer = ResponseTemplate::new(403).set_body_json(envelope("Shopper PII", None));
    let err = error_for(Call::OrderMessages, answer).await;
    assert!(matches!(err, InstacartError::ShopperPiiRedacted), "{err:?}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn refused_message_is_messaging_not_allowed_with_its_message() {
    let refusal = "Sending a message is not allowed at this time";
    let answer = ResponseTemplate::new(403).set_body_json(envelope(refusal, None));
    let err = error_for(Call::SendMessage, answer).await;
    assert!(
        matches!(&err, InstacartError::MessagingNotAllowed { message } if message == refusal),
        "{err:?}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn too_long_body_in_the_multi_error_form_is_body_too_long() {
    let too_long = "is too long (maximum is 1000 characters)";
    let answer = ResponseTemplate::new(400).set_body_json(json!({
        "error": {
            "message": "There were issues with your request",
            "code": 9999,
            "errors": [{ "error": { "message": too_long, "code": 1001 }, "meta": { "key": "body" } }]
        }
    }));
    let err = error_for(Call::SendMessage, answer).await;
    assert!(
        matches!(&err, InstacartError::BodyTooLong { message } if message == too_long),
        "{err:?}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn rate_limit_is_retryable_after_the_announced_delay() {
    let answer = ResponseTemplate::new(429).insert_header("Retry-After", "7");
    let err = error_for(Call::OrderMessages, answer).await;
    let seven = Some(Duration::from_secs(7));
    assert!(
        matches!(err, InstacartError::RateLimited { retry_after } if retry_after == seven),
        "{err:?}"
    );
    assert_eq!(err.retry_after(), seven);
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_huge_retry_after_is_capped_at_a_day() {
    for value in ["99999999999999", "Fri, 31 Dec 9999 23:59:59 GMT"] {
        let answer = ResponseTemplate::new(429).insert_header("Retry-After", value);
        let err = error_for(Call::OrderMessages, answer).await;
        assert_eq!(
            err.retry_after(),
            Some(Duration::from_secs(24 * 3600)),
            "{value}"
        );
    }
}

#[tokio::test]
async fn server_error_is_retryable() {
    let answer = ResponseTemplate::new(500).set_body_string("oops");
    let err = error_for(Call::ChatMessages, answer).await;
    assert!(
        matches!(err, InstacartError::Server { status: 500 }),
        "{err:?}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn success_with_an_undocumented_body_is_malformed_and_permanent() {
    let answer = ResponseTemplate::new(200).set_body_json(json!({ "chat_messages": "none" }));
    let err = error_for(Call::OrderMessages, answer).await;
    assert!(
        matches!(err, InstacartError::MalformedBody { status: 200, .. }),
        "{err:?}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn rejected_static_token_is_unauthorized_without_retry_or_leak() {
    let err = error_for(Call::OrderMessages, ResponseTemplate::new(401)).await;
    assert!(matches!(err, InstacartError::Unauthorized), "{err:?}");
    assert!(!err.is_retryable());
    assert!(!err.to_string().contains(STATIC_TOKEN));
}

#[tokio::test]
async fn slow_answer_is_a_retryable_timeout() {
    let server = MockServer::start().await;
    Call::OrderMessages
        .mock()
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(fixture("order_messages"))
                .set_delay(Duration::from_secs(5)),
        )
        .mount(&server)
        .await;
    let settings = InstacartSettings {
        timeout: Duration::from_millis(200),
        ..settings(&server.uri())
    };
    let client = InstacartClient::new(&settings, static_auth()).unwrap();
    let err = client.order_messages(&order(), None).await.unwrap_err();
    assert!(matches!(err, InstacartError::Timeout), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn unreachable_instacart_is_a_retryable_transport_error() {
    // A port that was just free and has nobody listening (wiremock servers are pooled, so
    // dropping one does not close its port).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let client = InstacartClient::new(&settings(&base_url), static_auth()).unwrap();
    let err = client.order_messages(&order(), None).await.unwrap_err();
    assert!(matches!(err, InstacartError::Transport(_)), "{err:?}");
    assert!(err.is_retryable());
}

// --- OAuth ---

#[tokio::test]
async fn client_credentials_token_is_requested_once_for_many_concurrent_requests() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .and(body_json(json!({
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "grant_type": "client_credentials",
            "scope": "connect:fulfillment"
        })))
        // Slow enough that every caller arrives while the token is being fetched.
        .respond_with(token_answer("cc-token", 86_400).set_delay(Duration::from_millis(200)))
        .expect(1)
        .mount(&server)
        .await;
    serve_for_token(&server, "cc-token", 8).await;

    let client = client(&server, oauth());
    let calls = (0..8).map(|_| Call::OrderMessages.run(&client, None));
    for result in futures::future::join_all(calls).await {
        result.unwrap();
    }
}

#[tokio::test]
async fn user_assertion_token_request_names_the_user() {
    let server = MockServer::start().await;
    mount_token(&server, token_answer("user-token", 86_400), 1).await;
    serve_for_token(&server, "user-token", 1).await;

    Call::OrderMessages
        .run(&client(&server, oauth()), Some(&user("u-42")))
        .await
        .unwrap();

    let requests = server.received_requests().await.unwrap();
    let token_request: Value = requests[0].body_json().unwrap();
    let assertion = token_request["assertion"].as_str().unwrap();
    let claim: Value = serde_json::from_slice(&BASE64.decode(assertion).unwrap()).unwrap();
    assert_eq!(claim, json!({ "user_id": "u-42" }));
    assert_eq!(
        token_request,
        json!({
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "grant_type": "fulfillment_user_assertion",
            "scope": "connect:post_checkout",
            "assertion": assertion
        })
    );
}

#[tokio::test]
async fn tokens_are_cached_per_user() {
    let server = MockServer::start().await;
    for name in ["alice", "bob"] {
        Mock::given(method("POST"))
            .and(path(TOKEN_PATH))
            .and(body_partial_json(
                json!({ "assertion": assertion_for(name) }),
            ))
            .respond_with(token_answer(&format!("{name}-token"), 86_400))
            .expect(1)
            .mount(&server)
            .await;
        serve_for_token(&server, &format!("{name}-token"), 2).await;
    }

    let client = client(&server, oauth());
    for name in ["alice", "bob", "alice", "bob"] {
        Call::OrderMessages
            .run(&client, Some(&user(name)))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn rejected_token_is_renewed_and_the_request_retried_once() {
    let server = MockServer::start().await;
    mount_token(&server, token_answer("revoked", 86_400), 1).await;
    mount_token(&server, token_answer("renewed", 86_400), 1).await;
    Call::ChatMessages
        .mock()
        .and(bearer("revoked"))
        .respond_with(ResponseTemplate::new(401))
        .expect(1)
        .mount(&server)
        .await;
    Call::ChatMessages
        .mock()
        .and(bearer("renewed"))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("chat_messages")))
        .expect(2)
        .mount(&server)
        .await;

    let client = client(&server, oauth());
    for _ in 0..2 {
        client.chat_messages(&order(), None).await.unwrap();
    }
}

#[tokio::test]
async fn token_rejected_again_after_renewal_is_unauthorized() {
    let server = MockServer::start().await;
    mount_token(&server, token_answer("useless", 86_400), 2).await;
    Call::MarkRead
        .mock()
        .respond_with(ResponseTemplate::new(401))
        .expect(2)
        .mount(&server)
        .await;

    let err = Call::MarkRead
        .run(&client(&server, oauth()), None)
        .await
        .unwrap_err();
    assert!(matches!(err, InstacartError::Unauthorized), "{err:?}");
}

// A token that would not outlive a request timeout (30 s) is due for renewal at once.
#[tokio::test]
async fn token_close_to_expiry_is_renewed_before_the_next_request() {
    let server = MockServer::start().await;
    mount_token(&server, token_answer("short-lived", 30), 1).await;
    mount_token(&server, token_answer("long-lived", 86_400), 1).await;
    serve_for_token(&server, "short-lived", 1).await;
    serve_for_token(&server, "long-lived", 2).await;

    let client = client(&server, oauth());
    for _ in 0..3 {
        Call::OrderMessages.run(&client, None).await.unwrap();
    }
}

#[tokio::test]
async fn failed_renewal_keeps_using_the_token_until_it_expires() {
    let server = MockServer::start().await;
    mount_token(&server, token_answer("short-lived", 30), 1).await;
    mount_token(&server, ResponseTemplate::new(503), 1).await;
    serve_for_token(&server, "short-lived", 2).await;

    let client = client(&server, oauth());
    for _ in 0..2 {
        Call::OrderMessages.run(&client, None).await.unwrap();
    }
}

/// The error when the token endpoint answers `answer`; Connect itself must not be called.
async fn token_endpoint_error(answer: ResponseTemplate) -> InstacartError {
    let server = MockServer::start().await;
    mount_token(&server, answer, 1).await;
    serve_for_token(&server, "any", 0).await;
    Call::OrderMessages
        .run(&client(&server, oauth()), None)
        .await
        .unwrap_err()
}

#[tokio::test]
async fn unavailable_token_endpoint_is_a_retryable_auth_error() {
    let err = token_endpoint_error(ResponseTemplate::new(503)).await;
    assert!(
        matches!(&err, InstacartError::Auth(inner) if matches!(**inner, InstacartError::Server { status: 503 })),
        "{err:?}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn refused_client_credentials_are_a_permanent_auth_error_without_the_secret() {
    let answer = ResponseTemplate::new(401).set_body_json(json!({
        "error": "invalid_client",
        "error_description": "Client authentication failed"
    }));
    let err = token_endpoint_error(answer).await;
    assert!(
        matches!(&err, InstacartError::Auth(inner) if matches!(**inner, InstacartError::Unauthorized)),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    assert!(!err.to_string().contains(CLIENT_SECRET));
}

#[tokio::test]
async fn client_debug_output_hides_credentials() {
    let server = MockServer::start().await;
    let shown = format!(
        "{:?} {:?}",
        client(&server, static_auth()),
        client(&server, oauth())
    );
    assert!(
        !shown.contains(STATIC_TOKEN) && !shown.contains(CLIENT_SECRET),
        "{shown}"
    );
}
