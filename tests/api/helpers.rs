use chrono::{DateTime, Utc};
use rand::distributions::{Alphanumeric, DistString};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tempfile::TempDir;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use shopper_bridge::config::Settings;
use shopper_bridge::dispatch::Dispatcher;
use shopper_bridge::domain::{EventId, EventType, OrderId};
use shopper_bridge::poller::{PollRound, Poller};
use shopper_bridge::startup::Application;
use shopper_bridge::store::{
    AttemptRecord, AttemptResolution, NewEvent, OrderState, PollCommit, PollProgress, Store,
};

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
    cancel: CancellationToken,
    _dir: TempDir,
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
    // Nothing reaches Instacart in these tests; the settings only need to be complete.
    settings.instacart.token = Some(SecretString::from("unused-connect-token".to_owned()));
    settings.delivery.allow_private_targets = true;
    settings
}

/// Builds the application with [`test_settings`], after `configure` adjusted them, and serves
/// its HTTP API. Nothing polls or delivers until the test calls [`TestApp::poll_once`] or
/// [`TestApp::deliver_next`], so every step is deterministic.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn(configure, false).await
}

/// Like [`spawn_app_with`], with the poller and dispatcher running in the background, as
/// `shopper-bridge serve` runs them.
pub async fn spawn_running_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn(configure, true).await
}

async fn spawn(configure: impl FnOnce(&mut Settings), background_tasks: bool) -> TestApp {
    LazyLock::force(&TRACING);
    let dir = tempfile::tempdir().expect("temp dir");
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
    tokio::spawn(app.run_until_stopped(cancel.clone()));

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
        cancel,
        _dir: dir,
    }
}

impl TestApp {
    pub async fn poll_once(&self) -> PollRound {
        self.poller.poll_once().await.expect("poll round")
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
            events: vec![NewEvent {
                id: event_id.clone(),
                order_id,
                event_type: EventType::ChatMessageCreated,
                payload: payload.to_string(),
                created_at: now,
            }],
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
