use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Router;
use chrono::{DateTime, Utc};
use rand::distributions::{Alphanumeric, DistString};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;
use tempfile::TempDir;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockBuilder, MockServer, ResponseTemplate};

use shopper_bridge::channels::webhook::HEADER_ID;
use shopper_bridge::config::Settings;
use shopper_bridge::dispatch::Dispatcher;
use shopper_bridge::domain::{
    AttemptRecord, AttemptResolution, NewEvent, OrderState, PollProgress,
};
use shopper_bridge::domain::{EventId, EventType, OrderId, SigningSecret};
use shopper_bridge::poller::{PollRound, Poller};
use shopper_bridge::startup::{Application, RunError};
use shopper_bridge::store::{PollCommit, Store};

/// Logs go to stderr when `TEST_LOG` is set (`RUST_LOG` picks the filter).
static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var_os("TEST_LOG").is_some() {
        shopper_bridge::telemetry::init("info,sqlx=warn");
    }
});

pub struct TestApp {
    pub address: String,
    pub admin_token: String,
    pub client: reqwest::Client,
    pub store: Arc<dyn Store>,
    pub poller_wake: Arc<Notify>,
    pub dispatcher_wake: Arc<Notify>,
    pub poller: Arc<Poller>,
    pub dispatcher: Arc<Dispatcher>,
    /// The SQLite file behind `store`.
    pub db_url: String,
    background_tasks: bool,
    cancel: CancellationToken,
    running: Option<JoinHandle<Result<(), RunError>>>,
    /// Kept by [`StoppedApp`] for the next app on the same SQLite file.
    dir: Arc<TempDir>,
}

/// What a stopped app leaves behind: its SQLite file, for a restart.
pub struct StoppedApp {
    dir: Arc<TempDir>,
    background_tasks: bool,
}

impl StoppedApp {
    /// Starts another app on the same SQLite file, with background loops if the stopped one had
    /// them; `configure` adjusts fresh [`test_settings`] as in [`spawn_app_with`].
    pub async fn start_with(self, configure: impl FnOnce(&mut Settings)) -> TestApp {
        spawn(self.dir, configure, self.background_tasks).await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Complete settings for a test: a SQLite file in `dir`, a free loopback port, a random admin
/// token, webhooks allowed to target loopback.
pub fn test_settings(dir: &Path) -> Settings {
    let admin_token = Alphanumeric.sample_string(&mut rand::thread_rng(), 32);
    let mut settings: Settings = serde_json::from_value(json!({})).expect("defaults");
    settings.server.listen = ([127, 0, 0, 1], 0).into();
    settings.server.admin_token = Some(SecretString::from(admin_token));
    settings.store.url = format!("sqlite://{}", dir.join("bridge.db").display());
    // Tests that reach Connect point `base_url` at a mock (see `use_connect`); any other call
    // goes to a port nothing listens on (discard), never to the real Connect.
    settings.instacart.base_url = "http://127.0.0.1:9".parse().expect("static URL");
    settings.instacart.token = Some(SecretString::from("test-connect-token".to_owned()));
    settings.delivery.allow_private_targets = true;
    settings
}

/// Builds the application with [`test_settings`], after `configure` adjusted them, and serves
/// its HTTP API. Nothing polls or delivers until the test calls [`TestApp::poll_once`] or
/// [`TestApp::deliver_next`], so every step is deterministic.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn(new_dir(), configure, false).await
}

/// Like [`spawn_app_with`], with the poller and dispatcher running in the background, as
/// `shopper-bridge serve` runs them.
pub async fn spawn_running_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn(new_dir(), configure, true).await
}

fn new_dir() -> Arc<TempDir> {
    Arc::new(tempfile::tempdir().expect("temp dir"))
}

async fn spawn(
    dir: Arc<TempDir>,
    configure: impl FnOnce(&mut Settings),
    background_tasks: bool,
) -> TestApp {
    LazyLock::force(&TRACING);
    let mut settings = test_settings(dir.path());
    configure(&mut settings);
    let admin_token = settings
        .server
        .admin_token
        .as_ref()
        .expect("an admin token")
        .expose_secret()
        .to_owned();
    let db_url = settings.store.url.clone();

    let mut app = Application::build(settings)
        .await
        .expect("application builds");
    if !background_tasks {
        app = app.without_background_tasks();
    }
    let (poller, dispatcher) = (app.poller(), app.dispatcher());
    let address = format!("http://127.0.0.1:{}", app.port());
    let state = app.state().clone();
    let cancel = CancellationToken::new();
    let running = tokio::spawn(app.run_until_stopped(cancel.clone()));

    TestApp {
        address,
        admin_token,
        client: reqwest::Client::new(),
        store: state.store,
        poller_wake: state.poller_wake,
        dispatcher_wake: state.dispatcher_wake,
        poller,
        dispatcher,
        db_url,
        background_tasks,
        cancel,
        running: Some(running),
        dir,
    }
}

impl TestApp {
    pub async fn poll_once(&self) -> PollRound {
        self.poller.poll_once().await.expect("poll round")
    }

    /// Waits (bounded) until every watched order is due, then polls.
    pub async fn poll_when_due(&self) -> PollRound {
        wait_until("every watched order falls due", || async {
            let orders = self.store.list_orders().await.expect("list_orders");
            let now = Utc::now();
            orders
                .iter()
                .filter(|o| o.state == OrderState::Watching)
                .all(|o| o.next_poll_at.is_none_or(|due| due <= now))
        })
        .await;
        self.poll_once().await
    }

    /// Stops the app as `serve` stops on a signal, and waits until its server and loops ended.
    pub async fn stop(mut self) -> StoppedApp {
        self.cancel.cancel();
        if let Some(running) = self.running.take() {
            running
                .await
                .expect("app task joins")
                .expect("app stops cleanly");
        }
        StoppedApp {
            dir: Arc::clone(&self.dir),
            background_tasks: self.background_tasks,
        }
    }

    /// `GET /v1/orders/{order_id}`.
    pub async fn order(&self, order_id: &str) -> Value {
        json_body(
            self.get(&format!("/v1/orders/{order_id}")).await,
            StatusCode::OK,
        )
        .await
    }

    /// `GET /v1/deliveries{query}`'s `data`.
    pub async fn deliveries(&self, query: &str) -> Vec<Value> {
        let body = json_body(
            self.get(&format!("/v1/deliveries{query}")).await,
            StatusCode::OK,
        )
        .await;
        body["data"].as_array().expect("data").clone()
    }

    pub async fn deliver_next(&self) -> usize {
        self.dispatcher
            .deliver_next()
            .await
            .expect("delivery round")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// A request carrying the admin token.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(&self.admin_token)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path).send().await.expect("GET")
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.request(Method::POST, path)
            .json(body)
            .send()
            .await
            .expect("POST")
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Response {
        self.request(Method::PATCH, path)
            .json(body)
            .send()
            .await
            .expect("PATCH")
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.request(Method::DELETE, path)
            .send()
            .await
            .expect("DELETE")
    }

    pub async fn watch_order(&self, order_id: &str) -> Value {
        json_body(
            self.post("/v1/orders", &json!({ "order_id": order_id }))
                .await,
            StatusCode::CREATED,
        )
        .await
    }

    /// Creates a subscriber from `body` (over HTTP) and returns the creation response.
    pub async fn create_subscriber(&self, body: Value) -> Value {
        json_body(
            self.post("/v1/subscribers", &body).await,
            StatusCode::CREATED,
        )
        .await
    }

    /// A webhook subscriber to `url` for the listed event types (every type when empty).
    pub async fn subscribe(&self, url: &str, event_types: &[&str]) -> Subscription {
        let mut body = json!({"kind": "webhook", "url": url});
        if !event_types.is_empty() {
            body["event_types"] = json!(event_types);
        }
        let created = self.create_subscriber(body).await;
        let secret = created["secret"].as_str().expect("secret");
        Subscription {
            id: created["id"].as_str().expect("id").to_owned(),
            secret: SigningSecret::parse("secret", secret).expect("a whsec_ secret"),
        }
    }

    /// A webhook subscriber for every event.
    pub async fn create_webhook(&self) -> Value {
        self.create_subscriber(json!({"kind": "webhook", "url": "http://127.0.0.1:9/hook"}))
            .await
    }

    /// Commits one poll of `order_id` (which must be watched) that saw chat message `message_id`,
    /// as the poller would: the store creates one delivery per matching subscriber.
    pub async fn seed_chat_message(&self, order_id: &str, message_id: i64) -> EventId {
        let order_id = OrderId::parse("order_id", order_id).expect("order id");
        let now = Utc::now();
        let event_id = EventId::derive(EventType::ChatMessageCreated, &order_id, Some(message_id));
        let payload = json!({
            "type": "chat_message.created",
            "data": { "order_id": order_id.as_str(), "message_id": message_id },
        });
        let commit = PollCommit {
            order_id: order_id.clone(),
            new_chat: vec![(message_id, false)],
            newly_read: vec![],
            new_lifecycle: vec![],
            events: vec![NewEvent::new(
                event_id.clone(),
                order_id,
                EventType::ChatMessageCreated,
                payload.to_string(),
                now,
            )],
            progress: PollProgress {
                polled_at: now,
                state: OrderState::Watching,
                fallback: None,
                next_poll_at: Some(now + chrono::TimeDelta::seconds(5)),
                last_error: None,
                consecutive_failures: 0,
                not_found_count: 0,
            },
        };
        self.store.commit_poll(&commit).await.expect("commit_poll");
        event_id
    }

    /// Claims every due delivery and records one attempt for each, as the dispatcher would.
    pub async fn attempt_due_deliveries(&self, resolution: AttemptResolution, status_code: u16) {
        let now = Utc::now();
        let claimed = self
            .store
            .claim_due_deliveries(now, now + chrono::TimeDelta::seconds(30), 100)
            .await
            .expect("claim");
        assert!(!claimed.is_empty(), "nothing was due");
        let records: Vec<_> = claimed
            .iter()
            .map(|d| AttemptRecord {
                delivery_id: d.id.clone(),
                claim: d.claim.clone(),
                at: now,
                resolution: resolution.clone(),
                status_code: Some(status_code),
                response_excerpt: Some("upstream says no".to_owned()),
                error: Some(format!("receiver answered {status_code}")),
                disable_subscriber: None,
            })
            .collect();
        self.store.record_attempts(&records).await.expect("record");
    }
}

/// Asserts the status and returns the JSON body.
pub async fn json_body(response: Response, status: StatusCode) -> Value {
    let actual = response.status();
    let text = response.text().await.expect("body");
    assert_eq!(actual, status, "unexpected status; body: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// One entry of the `{"errors":[...]}` body; nothing else may appear in it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorItem {
    pub code: String,
    pub message: String,
    pub field: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorBody {
    errors: Vec<ErrorItem>,
}

/// Asserts the status and the error shape (JSON content type included); returns the errors.
pub async fn errors(response: Response, status: StatusCode) -> Vec<ErrorItem> {
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = json_body(response, status).await;
    assert_eq!(content_type.as_deref(), Some("application/json"));
    let parsed: ErrorBody =
        serde_json::from_value(body.clone()).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert!(!parsed.errors.is_empty(), "no errors listed: {body}");
    parsed.errors
}

/// The single error of a response, asserted to carry `code`.
pub async fn single_error(response: Response, status: StatusCode, code: &str) -> ErrorItem {
    let mut found = errors(response, status).await;
    assert_eq!(found.len(), 1, "{found:?}");
    let error = found.remove(0);
    assert_eq!(error.code, code, "{error:?}");
    error
}

pub fn timestamp(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .unwrap_or_else(|| panic!("not an RFC 3339 time: {value}"))
        .with_timezone(&Utc)
}

/// Whether `wake` was notified (a notification is kept until someone waits).
pub async fn was_woken(wake: &Notify) -> bool {
    tokio::time::timeout(Duration::from_secs(1), wake.notified())
        .await
        .is_ok()
}

/// How long a test waits for something that should happen.
pub const WAIT_LIMIT: Duration = Duration::from_secs(20);

/// Checks `done` every few milliseconds until it holds; panics naming `what` after [`WAIT_LIMIT`].
pub async fn wait_until<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up after {WAIT_LIMIT:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------- Instacart Connect (wiremock)

/// Points the app at `connect` (the static token of [`test_settings`] authenticates).
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

// ---------------------------------------------------------------- a webhook receiver

/// A subscriber as created over the API, with the secret only its creation response shows.
pub struct Subscription {
    pub id: String,
    pub secret: SigningSecret,
}

#[derive(Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn webhook_id(&self) -> &str {
        self.headers
            .get(HEADER_ID)
            .and_then(|v| v.to_str().ok())
            .expect("a webhook-id header")
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

#[derive(Default)]
struct ReceiverState {
    script: Mutex<VecDeque<u16>>,
    requests: Mutex<Vec<Received>>,
    /// How long each request takes to answer.
    delay: Duration,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

/// A real axum server on loopback that records every request and answers the scripted statuses
/// in order, then 200.
pub struct Receiver {
    pub url: String,
    state: Arc<ReceiverState>,
}

impl Receiver {
    pub async fn start(script: &[u16]) -> Self {
        Self::serve(ReceiverState {
            script: Mutex::new(script.iter().copied().collect()),
            ..ReceiverState::default()
        })
        .await
    }

    /// A receiver answering 200 to everything, each after `delay`.
    pub async fn start_slow(delay: Duration) -> Self {
        Self::serve(ReceiverState {
            delay,
            ..ReceiverState::default()
        })
        .await
    }

    async fn serve(state: ReceiverState) -> Self {
        let state = Arc::new(state);
        let app = Router::new()
            .fallback(receive)
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await.expect("receiver serves") });
        Self { url, state }
    }

    pub fn requests(&self) -> Vec<Received> {
        self.state.requests.lock().unwrap().clone()
    }

    /// The most requests it was answering at once.
    pub fn most_in_flight(&self) -> usize {
        self.state.most_in_flight.load(Ordering::SeqCst)
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    state
        .requests
        .lock()
        .unwrap()
        .push(Received { headers, body });
    let status = state.script.lock().unwrap().pop_front().unwrap_or(200);
    let now_in_flight = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state
        .most_in_flight
        .fetch_max(now_in_flight, Ordering::SeqCst);
    tokio::time::sleep(state.delay).await;
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    StatusCode::from_u16(status).expect("a valid status")
}
