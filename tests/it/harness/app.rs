//! The application under test: built from test settings (a SQLite file in a temp dir, a free
//! loopback port), serving its admin API on real HTTP, stepped or running in the background.

use chrono::Utc;
use rand::distributions::{Alphanumeric, DistString};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::{Arc, LazyLock};
use tempfile::TempDir;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use url::Url;
use wiremock::MockServer;

use shopper_bridge::config::Settings;
use shopper_bridge::dispatch::Dispatcher;
use shopper_bridge::domain::{
    AttemptRecord, AttemptResolution, ClaimedDelivery, Delivery, EventId, OrderId, OrderState,
    SigningSecret, SubscriberId,
};
use shopper_bridge::poller::{PollRound, Poller};
use shopper_bridge::startup::{Application, RunError};
use shopper_bridge::store::{CommitSummary, DeliveryFilter, Store};

use super::{
    attempt_on, bare_chat_message_event, json_body, poll_commit, poll_continuously, use_connect,
    wait_until, CommitBuilder, RunningSimulator,
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
    /// Another app on the same SQLite file, with background loops if the stopped one had them.
    pub fn restart(&self) -> TestAppBuilder<'static> {
        TestAppBuilder {
            dir: Some(Arc::clone(&self.dir)),
            background_tasks: self.background_tasks,
            steps: Vec::new(),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The app with [`test_settings`], stepped by the test (see [`TestApp::builder`]).
pub async fn spawn_app() -> TestApp {
    TestApp::builder().spawn().await
}

/// Complete settings for a test: a SQLite file in `dir`, a free loopback port, a random admin
/// token, webhooks allowed to target loopback.
pub fn test_settings(dir: &Path) -> Settings {
    let admin_token = Alphanumeric.sample_string(&mut rand::thread_rng(), 32);
    let mut settings = Settings::default();
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

/// One change to the settings.
type SettingsStep<'a> = Box<dyn FnOnce(&mut Settings) + 'a>;

/// How a test wants its app: [`test_settings`] with the changes named, in order.
pub struct TestAppBuilder<'a> {
    dir: Option<Arc<TempDir>>,
    background_tasks: bool,
    steps: Vec<SettingsStep<'a>>,
}

impl<'a> TestAppBuilder<'a> {
    /// Any change to the settings.
    pub fn configure(mut self, step: impl FnOnce(&mut Settings) + 'a) -> Self {
        self.steps.push(Box::new(step));
        self
    }

    /// Connect is the mock `connect`.
    pub fn with_connect(self, connect: &'a MockServer) -> Self {
        self.configure(move |s| use_connect(s, connect))
    }

    /// Connect is the simulator `sim`, with its static token.
    pub fn with_simulator(self, sim: &'a RunningSimulator) -> Self {
        self.configure(move |s| {
            s.instacart.base_url = sim.base_url.parse().expect("simulator URL");
            s.instacart.token = sim.token.clone().map(SecretString::from);
        })
    }

    /// Every watched order is due again a millisecond after each poll.
    pub fn polling_continuously(self) -> Self {
        self.configure(poll_continuously)
    }

    /// Mail goes to `smtp_url`, from `from`.
    pub fn with_email(self, smtp_url: Url, from: &'a str) -> Self {
        self.configure(move |s| {
            s.email.smtp_url = Some(smtp_url);
            s.email.from = Some(from.to_owned());
        })
    }

    /// Slack's Web API is the mock `slack` (under `/api/`).
    pub fn with_slack(self, slack: &'a MockServer) -> Self {
        self.configure(move |s| {
            let api = format!("{}/api/", slack.uri());
            s.slack.api_base_url = api.parse().expect("mock URL");
        })
    }

    /// The poller and dispatcher run in the background, as `shopper-bridge serve` runs them.
    pub fn with_background_tasks(mut self) -> Self {
        self.background_tasks = true;
        self
    }

    /// Builds the application and serves its HTTP API.
    pub async fn spawn(self) -> TestApp {
        LazyLock::force(&TRACING);
        let dir = self
            .dir
            .unwrap_or_else(|| Arc::new(tempfile::tempdir().expect("temp dir")));
        let mut settings = test_settings(dir.path());
        for step in self.steps {
            step(&mut settings);
        }
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
        if !self.background_tasks {
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
            poller,
            dispatcher,
            db_url,
            background_tasks: self.background_tasks,
            cancel,
            running: Some(running),
            dir,
        }
    }
}

impl TestApp {
    pub fn builder() -> TestAppBuilder<'static> {
        TestAppBuilder {
            dir: None,
            background_tasks: false,
            steps: Vec::new(),
        }
    }

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
        let event = bare_chat_message_event(&order_id, message_id);
        let event_id = event.id.clone();
        self.commit(poll_commit(&order_id).new_chat_message(message_id, event))
            .await;
        event_id
    }

    /// Commits `commit` as the poller would.
    pub async fn commit(&self, commit: CommitBuilder) -> CommitSummary {
        self.store
            .commit_poll(&commit.build())
            .await
            .expect("commit_poll")
    }

    /// The subscriber's deliveries, oldest first, each with its attempts (from the store).
    pub async fn deliveries_of(&self, subscriber: &SubscriberId) -> Vec<Delivery> {
        let listed = self
            .store
            .list_deliveries(&DeliveryFilter {
                subscriber_id: Some(subscriber.clone()),
                limit: 100,
                ..DeliveryFilter::default()
            })
            .await
            .expect("list_deliveries");
        let mut found = Vec::with_capacity(listed.len());
        for delivery in listed {
            let delivery = self.store.get_delivery(&delivery.id).await;
            found.push(delivery.expect("get_delivery").expect("listed"));
        }
        found.sort_by_key(|d| d.created_at);
        found
    }

    /// Claims every due delivery (at most 100) as the dispatcher claims them, for 30 s.
    pub async fn claim_due_deliveries(&self) -> Vec<ClaimedDelivery> {
        let now = Utc::now();
        self.store
            .claim_due_deliveries(now, now + chrono::TimeDelta::seconds(30), 100)
            .await
            .expect("claim")
    }

    /// Claims every due delivery and records one attempt for each, as the dispatcher would.
    pub async fn attempt_due_deliveries(&self, resolution: AttemptResolution, status_code: u16) {
        let claimed = self.claim_due_deliveries().await;
        assert!(!claimed.is_empty(), "nothing was due");
        let records: Vec<_> = claimed
            .iter()
            .map(|d| AttemptRecord {
                status_code: Some(status_code),
                response_excerpt: Some("upstream says no".to_owned()),
                error: Some(format!("receiver answered {status_code}")),
                ..attempt_on(d, resolution.clone())
            })
            .collect();
        self.store.record_attempts(&records).await.expect("record");
    }
}

/// A subscriber as created over the API, with the secret only its creation response shows.
pub struct Subscription {
    pub id: String,
    pub secret: SigningSecret,
}
