//! The dispatcher delivering webhooks from a real SQLite outbox to a real axum receiver on
//! loopback that checks Standard Webhooks signatures the way a subscriber would.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use chrono::Utc;
use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use shopper_bridge::channels::webhook::{
    verify_headers, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP,
};
use shopper_bridge::channels::Channels;
use shopper_bridge::config::{DeliverySettings, Settings};
use shopper_bridge::dispatch::Dispatcher;
use shopper_bridge::domain::{
    Channel, Delivery, DeliveryStatus, MarkReadPolicy, NewEvent, NewSubscriber, OrderState,
    PollProgress, SubscriberFilter, SubscriberStatus,
};
use shopper_bridge::domain::{EventId, EventType, OrderId, SigningSecret, SubscriberId};
use shopper_bridge::instacart::InstacartClient;
use shopper_bridge::store::{self, DeliveryFilter, PollCommit, Store};
use shopper_bridge::templates::Templates;

const WAIT_LIMIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- the receiver

#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
}

impl Reply {
    fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: String::new(),
            delay: Duration::ZERO,
        }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn body(mut self, body: impl Into<String>) -> Self {
        self.body = body.into();
        self
    }

    fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

#[derive(Clone)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Bytes,
    at: Instant,
}

struct ReceiverState {
    trusted: Vec<SigningSecret>,
    script: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<Received>>,
}

/// Answers the scripted replies in order, then 200 "ok"; answers 401 to any request whose
/// signature none of its trusted secrets verifies.
struct Receiver {
    addr: SocketAddr,
    state: Arc<ReceiverState>,
}

impl Receiver {
    async fn start(trusted: &[SigningSecret], script: Vec<Reply>) -> Self {
        let state = Arc::new(ReceiverState {
            trusted: trusted.to_vec(),
            script: Mutex::new(script.into()),
            requests: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .fallback(receive)
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, state }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn requests(&self) -> Vec<Received> {
        self.state.requests.lock().unwrap().clone()
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.requests.lock().unwrap().push(Received {
        path: uri.path().to_owned(),
        headers: headers.clone(),
        body: body.clone(),
        at: Instant::now(),
    });
    let verified = state
        .trusted
        .iter()
        .any(|secret| verify_headers(secret, &headers, &body, Utc::now()).is_ok());
    if !verified {
        return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
    }
    let reply = state.script.lock().unwrap().pop_front();
    let reply = reply.unwrap_or_else(|| Reply::status(200).body("ok"));
    tokio::time::sleep(reply.delay).await;
    let mut response = (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response();
    for (name, value) in reply.headers {
        response
            .headers_mut()
            .insert(name, value.parse().expect("a valid header value"));
    }
    response
}

// ---------------------------------------------------------------- the bridge side

struct Bridge {
    _dir: TempDir,
    store: Arc<dyn Store>,
    dispatcher: Arc<Dispatcher>,
}

fn settings(allow_private_targets: bool) -> DeliverySettings {
    DeliverySettings {
        retry_schedule: vec![Duration::from_millis(10), Duration::from_millis(10)],
        retry_jitter: 0.0,
        timeout: Duration::from_secs(5),
        concurrency: 4,
        allow_private_targets,
        ..DeliverySettings::default()
    }
}

async fn bridge(settings: DeliverySettings) -> Bridge {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/x.db", dir.path().display());
    let store = store::open(&url).await.unwrap();
    let mut all: Settings = serde_json::from_value(serde_json::json!({})).unwrap();
    all.delivery = settings.clone();
    let channels = Channels::new(&all, Templates::load(None).unwrap(), Arc::clone(&store)).unwrap();
    // Never called (no subscriber here marks messages read); were it, nothing listens there.
    all.instacart.base_url = "http://127.0.0.1:9".parse().unwrap();
    all.instacart.token = Some("unused".to_owned().into());
    let instacart = InstacartClient::new(&all.instacart, all.instacart_auth().unwrap()).unwrap();
    let dispatcher = Arc::new(Dispatcher::new(
        Arc::clone(&store),
        channels,
        instacart,
        settings,
        Arc::default(),
    ));
    Bridge {
        _dir: dir,
        store,
        dispatcher,
    }
}

struct Seeded {
    subscriber: SubscriberId,
    event_id: EventId,
    payload: String,
}

impl Bridge {
    async fn subscribe(&self, url: &str, secret: &SigningSecret) -> SubscriberId {
        let subscriber = self
            .store
            .create_subscriber(NewSubscriber {
                id: SubscriberId::generate(),
                channel: Channel::Webhook {
                    url: url.parse().unwrap(),
                },
                filter: SubscriberFilter::default(),
                description: None,
                mark_read: MarkReadPolicy::Never,
                secret: secret.clone(),
                created_at: Utc::now(),
            })
            .await
            .unwrap();
        subscriber.id
    }

    /// One new chat message event for `order`, fanned out to every subscriber.
    async fn publish(&self, order: &str, message_id: i64) -> (EventId, String) {
        let now = Utc::now();
        let order_id = OrderId::parse("order_id", order).unwrap();
        self.store.watch_order(&order_id, None, now).await.unwrap();
        let event_type = EventType::ChatMessageCreated;
        let event_id = EventId::derive(event_type, &order_id, Some(message_id));
        // Non-ASCII text and a key order serde would not produce check the body goes out as
        // stored, byte for byte.
        let payload = format!(
            r#"{{"type":"chat_message.created","timestamp":"{}","data":{{"order_id":"{order}","message":{{"id":{message_id},"body":"Bananas — ça va? 🍌"}}}}}}"#,
            now.to_rfc3339()
        );
        self.store
            .commit_poll(&PollCommit {
                order_id: order_id.clone(),
                new_chat: vec![(message_id, false)],
                newly_read: Vec::new(),
                new_lifecycle: Vec::new(),
                events: vec![NewEvent::new(
                    event_id.clone(),
                    order_id,
                    event_type,
                    payload.clone(),
                    now,
                )],
                progress: PollProgress {
                    polled_at: now,
                    state: OrderState::Watching,
                    fallback: None,
                    next_poll_at: Some(now + chrono::Duration::seconds(5)),
                    last_error: None,
                    consecutive_failures: 0,
                    not_found_count: 0,
                },
            })
            .await
            .unwrap();
        (event_id, payload)
    }

    async fn seed(&self, url: &str, secret: &SigningSecret) -> Seeded {
        let subscriber = self.subscribe(url, secret).await;
        let (event_id, payload) = self.publish("122233", 1).await;
        Seeded {
            subscriber,
            event_id,
            payload,
        }
    }

    async fn delivery_of(&self, subscriber: &SubscriberId) -> Delivery {
        let mut deliveries = self
            .store
            .list_deliveries(&DeliveryFilter {
                subscriber_id: Some(subscriber.clone()),
                limit: 10,
                ..DeliveryFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(deliveries.len(), 1, "one delivery per subscriber and event");
        let id = deliveries.remove(0).id;
        // get_delivery carries the attempts.
        self.store.get_delivery(&id).await.unwrap().unwrap()
    }

    /// Runs delivery rounds until the subscriber's delivery leaves `pending`.
    async fn deliver_until_settled(&self, subscriber: &SubscriberId) -> Delivery {
        within(async {
            loop {
                self.dispatcher.deliver_next().await.unwrap();
                let delivery = self.delivery_of(subscriber).await;
                if delivery.status != DeliveryStatus::Pending {
                    return delivery;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
    }
}

async fn within<T>(work: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT_LIMIT, work)
        .await
        .expect("did not happen in time")
}

async fn wait_for_requests(receiver: &Receiver, count: usize) {
    within(async {
        while receiver.requests().len() < count {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

fn header<'a>(request: &'a Received, name: &str) -> &'a str {
    request.headers.get(name).unwrap().to_str().unwrap()
}

// ---------------------------------------------------------------- the tests

#[tokio::test]
async fn delivery_succeeds_with_a_valid_signature_and_the_exact_body() {
    let secret = SigningSecret::generate();
    let receiver = Receiver::start(std::slice::from_ref(&secret), Vec::new()).await;
    let bridge = bridge(settings(true)).await;
    let seeded = bridge.seed(&receiver.url(), &secret).await;

    assert_eq!(bridge.dispatcher.deliver_next().await.unwrap(), 1);

    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.body, seeded.payload.as_bytes());
    assert_eq!(header(request, HEADER_ID), seeded.event_id.as_str());
    let sent_at: i64 = header(request, HEADER_TIMESTAMP).parse().unwrap();
    assert!((Utc::now().timestamp() - sent_at).abs() <= 5);
    assert_eq!(header(request, "content-type"), "application/json");
    assert_eq!(header(request, "user-agent"), shopper_bridge::USER_AGENT);
    verify_headers(&secret, &request.headers, &request.body, Utc::now()).unwrap();

    let delivery = bridge.delivery_of(&seeded.subscriber).await;
    assert_eq!(delivery.status, DeliveryStatus::Delivered);
    assert_eq!(delivery.attempt_count, 1);
    assert_eq!(delivery.attempts[0].status_code, Some(200));
    assert_eq!(delivery.attempts[0].response_excerpt.as_deref(), Some("ok"));
    assert_eq!(
        bridge.dispatcher.deliver_next().await.unwrap(),
        0,
        "a delivered delivery is not sent again"
    );
}

#[tokio::test]
async fn delivery_is_retried_when_receiver_returns_503() {
    let secret = SigningSecret::generate();
    let script = vec![Reply::status(503), Reply::status(503)];
    let receiver = Receiver::start(std::slice::from_ref(&secret), script).await;
    let bridge = bridge(settings(true)).await;
    let seeded = bridge.seed(&receiver.url(), &secret).await;

    let delivery = bridge.deliver_until_settled(&seeded.subscriber).await;

    assert_eq!(delivery.status, DeliveryStatus::Delivered);
    assert_eq!(delivery.attempt_count, 3);
    let codes: Vec<_> = delivery.attempts.iter().map(|a| a.status_code).collect();
    assert_eq!(codes, [Some(503), Some(503), Some(200)]);
    let requests = receiver.requests();
    assert_eq!(requests.len(), 3);
    for request in &requests {
        assert_eq!(header(request, HEADER_ID), seeded.event_id.as_str());
        assert_eq!(request.body, seeded.payload.as_bytes());
    }
}

#[tokio::test]
async fn retry_after_from_the_receiver_sets_the_next_attempt() {
    let secret = SigningSecret::generate();
    let script = vec![Reply::status(429).header("retry-after", "1")];
    let receiver = Receiver::start(std::slice::from_ref(&secret), script).await;
    let bridge = bridge(settings(true)).await;
    let seeded = bridge.seed(&receiver.url(), &secret).await;

    assert_eq!(bridge.dispatcher.deliver_next().await.unwrap(), 1);
    let pending = bridge.delivery_of(&seeded.subscriber).await;
    assert_eq!(pending.status, DeliveryStatus::Pending);
    let wait = pending.next_attempt_at.unwrap() - pending.attempts[0].at;
    assert!(
        wait >= chrono::Duration::seconds(1) && wait < chrono::Duration::seconds(2),
        "the 10 ms schedule gave way to Retry-After: waited {wait}"
    );
    assert_eq!(
        bridge.dispatcher.deliver_next().await.unwrap(),
        0,
        "not due before Retry-After"
    );

    let delivery = bridge.deliver_until_settled(&seeded.subscriber).await;
    assert_eq!(delivery.status, DeliveryStatus::Delivered);
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests[1].at - requests[0].at >= Duration::from_secs(1));
}

#[tokio::test]
async fn gone_410_disables_the_subscriber_and_parks_the_delivery() {
    let secret = SigningSecret::generate();
    let script = vec![Reply::status(410).body("unsubscribed")];
    let receiver = Receiver::start(std::slice::from_ref(&secret), script).await;
    let bridge = bridge(settings(true)).await;
    let seeded = bridge.seed(&receiver.url(), &secret).await;

    assert_eq!(bridge.dispatcher.deliver_next().await.unwrap(), 1);

    let delivery = bridge.delivery_of(&seeded.subscriber).await;
    assert_eq!(delivery.status, DeliveryStatus::Failed);
    assert_eq!(delivery.attempts.len(), 1);
    assert_eq!(delivery.attempts[0].status_code, Some(410));
    assert_eq!(
        delivery.attempts[0].response_excerpt.as_deref(),
        Some("unsubscribed")
    );
    let subscriber = bridge
        .store
        .get_subscriber(&seeded.subscriber)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(subscriber.status, SubscriberStatus::Disabled);
    assert!(subscriber.disabled_reason.unwrap().contains("410"));
    assert_eq!(bridge.dispatcher.deliver_next().await.unwrap(), 0);
    assert_eq!(receiver.requests().len(), 1);
}

#[tokio::test]
async fn exhausted_schedule_parks_the_delivery_as_failed_with_every_attempt_logged() {
    let secret = SigningSecret::generate();
    let body = "boom ".repeat(100);
    let script = vec![Reply::status(500).body(body.clone()); 3];
    let receiver = Receiver::start(std::slice::from_ref(&secret), script).await;
    let bridge = bridge(settings(true)).await;
    let seeded = bridge.seed(&receiver.url(), &secret).await;

    let delivery = bridge.deliver_until_settled(&seeded.subscriber).await;

    assert_eq!(delivery.status, DeliveryStatus::Failed);
    assert_eq!(
        delivery.attempt_count, 3,
        "the first attempt and two retries"
    );
    assert_eq!(delivery.next_attempt_at, None);
    for attempt in &delivery.attempts {
        assert_eq!(attempt.status_code, Some(500));
        assert_eq!(attempt.response_excerpt.as_deref(), Some(&body[..256]));
    }
    assert_eq!(bridge.dispatcher.deliver_next().await.unwrap(), 0);
    assert_eq!(receiver.requests().len(), 3);
}

#[tokio::test]
async fn rotation_signs_with_both_secrets_and_each_verifies() {
    let old = SigningSecret::generate();
    let new = SigningSecret::generate();
    // The receiver still only knows the old secret: the overlap is what keeps it working.
    let receiver = Receiver::start(std::slice::from_ref(&old), Vec::new()).await;
    let bridge = bridge(settings(true)).await;
    let seeded = bridge.seed(&receiver.url(), &old).await;
    let now = Utc::now();
    bridge
        .store
        .rotate_secret(
            &seeded.subscriber,
            new.clone(),
            now,
            now + chrono::Duration::hours(1),
        )
        .await
        .unwrap()
        .unwrap();

    assert_eq!(bridge.dispatcher.deliver_next().await.unwrap(), 1);

    let delivery = bridge.delivery_of(&seeded.subscriber).await;
    assert_eq!(delivery.status, DeliveryStatus::Delivered);
    let request = &receiver.requests()[0];
    assert_eq!(header(request, HEADER_SIGNATURE).split(' ').count(), 2);
    for secret in [&old, &new] {
        verify_headers(secret, &request.headers, &request.body, Utc::now()).unwrap();
    }
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let secret = SigningSecret::generate();
    let receiver = Receiver::start(std::slice::from_ref(&secret), Vec::new()).await;
    let target = format!("http://{}/target", receiver.addr);
    let script = vec![Reply::status(302).header("location", target)];
    receiver.state.script.lock().unwrap().extend(script);
    let bridge = bridge(settings(true)).await;
    let seeded = bridge.seed(&receiver.url(), &secret).await;

    assert_eq!(bridge.dispatcher.deliver_next().await.unwrap(), 1);

    let delivery = bridge.delivery_of(&seeded.subscriber).await;
    assert_eq!(delivery.status, DeliveryStatus::Pending, "a 302 is retried");
    assert_eq!(delivery.attempts[0].status_code, Some(302));
    let paths: Vec<_> = receiver.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/hook"], "the redirect target received nothing");
}

#[tokio::test]
async fn ssrf_guard_refuses_a_host_name_resolving_to_loopback() {
    let secret = SigningSecret::generate();
    let receiver = Receiver::start(std::slice::from_ref(&secret), Vec::new()).await;
    let bridge = bridge(settings(false)).await;
    let url = format!("http://localhost:{}/hook", receiver.addr.port());
    let seeded = bridge.seed(&url, &secret).await;

    assert_eq!(bridge.dispatcher.deliver_next().await.unwrap(), 1);

    let delivery = bridge.delivery_of(&seeded.subscriber).await;
    assert_eq!(
        delivery.status,
        DeliveryStatus::Failed,
        "a refused target is parked like a refused literal, not retried for a day and a half"
    );
    let attempt = &delivery.attempts[0];
    assert_eq!(attempt.status_code, None);
    let error = attempt.error.as_deref().unwrap();
    assert!(
        error.contains("`localhost`") && error.contains("private"),
        "{error}"
    );
    assert!(receiver.requests().is_empty());
}

#[tokio::test]
async fn ssrf_guard_refuses_a_loopback_ip_literal_at_send_time() {
    let secret = SigningSecret::generate();
    let receiver = Receiver::start(std::slice::from_ref(&secret), Vec::new()).await;
    let bridge = bridge(settings(false)).await;
    let seeded = bridge.seed(&receiver.url(), &secret).await;

    assert_eq!(bridge.dispatcher.deliver_next().await.unwrap(), 1);

    let delivery = bridge.delivery_of(&seeded.subscriber).await;
    assert_eq!(
        delivery.status,
        DeliveryStatus::Failed,
        "an address cannot change: no retry"
    );
    assert!(delivery.attempts[0]
        .error
        .as_deref()
        .unwrap()
        .starts_with("refused"));
    assert!(receiver.requests().is_empty());
}

#[tokio::test]
async fn run_delivers_when_woken_and_stops_on_cancel() {
    let secret = SigningSecret::generate();
    let receiver = Receiver::start(std::slice::from_ref(&secret), Vec::new()).await;
    let bridge = bridge(settings(true)).await;
    let subscriber = bridge.subscribe(&receiver.url(), &secret).await;
    let cancel = CancellationToken::new();
    let running = tokio::spawn(Arc::clone(&bridge.dispatcher).run(cancel.clone()));

    for message_id in 1..=3 {
        bridge.publish("122233", message_id).await;
        bridge.dispatcher.waker().notify_one();
    }
    wait_for_requests(&receiver, 3).await;
    cancel.cancel();
    within(running).await.unwrap();

    let deliveries = bridge
        .store
        .list_deliveries(&DeliveryFilter {
            subscriber_id: Some(subscriber),
            limit: 10,
            ..DeliveryFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(deliveries.len(), 3);
    assert!(deliveries
        .iter()
        .all(|d| d.status == DeliveryStatus::Delivered));
}

#[tokio::test]
async fn shutdown_lets_the_in_flight_delivery_finish() {
    let secret = SigningSecret::generate();
    let script = vec![Reply::status(200).delay(Duration::from_millis(300))];
    let receiver = Receiver::start(std::slice::from_ref(&secret), script).await;
    let bridge = bridge(settings(true)).await;
    let seeded = bridge.seed(&receiver.url(), &secret).await;
    let cancel = CancellationToken::new();
    let running = tokio::spawn(Arc::clone(&bridge.dispatcher).run(cancel.clone()));

    wait_for_requests(&receiver, 1).await;
    cancel.cancel();
    within(running).await.unwrap();

    let delivery = bridge.delivery_of(&seeded.subscriber).await;
    assert_eq!(delivery.status, DeliveryStatus::Delivered);
    assert_eq!(delivery.attempt_count, 1);
}

#[tokio::test]
async fn shutdown_abandons_sends_that_outlast_the_grace() {
    let secret = SigningSecret::generate();
    let script = vec![Reply::status(200).delay(Duration::from_secs(30))];
    let receiver = Receiver::start(std::slice::from_ref(&secret), script).await;
    let bridge = bridge(DeliverySettings {
        shutdown_grace: Duration::from_millis(100),
        ..settings(true)
    })
    .await;
    let seeded = bridge.seed(&receiver.url(), &secret).await;
    let cancel = CancellationToken::new();
    let running = tokio::spawn(Arc::clone(&bridge.dispatcher).run(cancel.clone()));

    wait_for_requests(&receiver, 1).await;
    let cancelled_at = Instant::now();
    cancel.cancel();
    within(running).await.unwrap();
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(2),
        "did not wait for the 5 s send timeout"
    );

    // Still claimed: another run retries it once the lease ends.
    let delivery = bridge.delivery_of(&seeded.subscriber).await;
    assert_eq!(delivery.status, DeliveryStatus::Pending);
    assert_eq!(delivery.attempt_count, 0);
    assert!(delivery.next_attempt_at.unwrap() > Utc::now());
}

#[tokio::test]
async fn refused_connection_is_retried_and_its_error_does_not_reveal_the_url() {
    let secret = SigningSecret::generate();
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let bridge = bridge(settings(true)).await;
    let url = format!("http://{addr}/hook/tok_s3cr3t?key=s3cr3t");
    let seeded = bridge.seed(&url, &secret).await;

    assert_eq!(bridge.dispatcher.deliver_next().await.unwrap(), 1);

    let delivery = bridge.delivery_of(&seeded.subscriber).await;
    assert_eq!(delivery.status, DeliveryStatus::Pending);
    let error = delivery.attempts[0].error.as_deref().unwrap();
    assert!(error.contains("connect"), "{error}");
    assert!(!error.contains("s3cr3t"), "{error}");
}

#[tokio::test]
async fn a_receiver_slower_than_the_timeout_is_retried() {
    let secret = SigningSecret::generate();
    let script = vec![Reply::status(200).delay(Duration::from_secs(5))];
    let receiver = Receiver::start(std::slice::from_ref(&secret), script).await;
    let bridge = bridge(DeliverySettings {
        timeout: Duration::from_millis(200),
        ..settings(true)
    })
    .await;
    let seeded = bridge.seed(&receiver.url(), &secret).await;

    assert_eq!(bridge.dispatcher.deliver_next().await.unwrap(), 1);

    let delivery = bridge.delivery_of(&seeded.subscriber).await;
    assert_eq!(delivery.status, DeliveryStatus::Pending);
    assert_eq!(delivery.attempts[0].status_code, None);
    let error = delivery.attempts[0].error.as_deref().unwrap();
    assert!(error.contains("timed out"), "{error}");

    let delivery = bridge.deliver_until_settled(&seeded.subscriber).await;
    assert_eq!(delivery.status, DeliveryStatus::Delivered);
    assert_eq!(delivery.attempt_count, 2);
}
