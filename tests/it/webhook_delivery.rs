//! The dispatcher delivering webhooks from the app's real SQLite outbox to a real receiver on
//! loopback that checks Standard Webhooks signatures the way a subscriber would.

use chrono::Utc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use shopper_bridge::channels::webhook::{
    verify_headers, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP,
};
use shopper_bridge::config::DeliverySettings;
use shopper_bridge::domain::{
    Channel, Delivery, DeliveryStatus, MarkReadPolicy, NewSubscriber, SubscriberFilter,
    SubscriberStatus,
};
use shopper_bridge::domain::{EventId, OrderId, SigningSecret, SubscriberId};

use crate::harness::{
    chat_message_event, poll_commit, wait_for, wait_until, within, Receiver, Reply, TestApp,
};

// ---------------------------------------------------------------- the bridge side

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

/// The app delivering with `delivery`, stepped by the test.
async fn bridge(delivery: DeliverySettings) -> TestApp {
    TestApp::builder()
        .configure(|s| s.delivery = delivery)
        .spawn()
        .await
}

struct Seeded {
    subscriber: SubscriberId,
    event_id: EventId,
    payload: String,
}

/// A webhook subscriber to `url` signing with `secret`, written to the store directly (the API
/// refuses private targets when they are not allowed; the dispatcher is what is tested here).
async fn subscribe(app: &TestApp, url: &str, secret: &SigningSecret) -> SubscriberId {
    let subscriber = app
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
async fn publish(app: &TestApp, order: &str, message_id: i64) -> (EventId, String) {
    let order_id = OrderId::parse("order_id", order).unwrap();
    app.store
        .watch_order(&order_id, None, Utc::now())
        .await
        .unwrap();
    // Non-ASCII text and a key order serde would not produce check the body goes out as
    // stored, byte for byte.
    let payload = format!(
        r#"{{"type":"chat_message.created","timestamp":"{}","data":{{"order_id":"{order}","message":{{"id":{message_id},"body":"Bananas — ça va? 🍌"}}}}}}"#,
        Utc::now().to_rfc3339()
    );
    let event = chat_message_event(&order_id, message_id, payload.clone());
    let event_id = event.id.clone();
    app.commit(poll_commit(&order_id).new_chat_message(message_id, event))
        .await;
    (event_id, payload)
}

async fn seed(app: &TestApp, url: &str, secret: &SigningSecret) -> Seeded {
    let subscriber = subscribe(app, url, secret).await;
    let (event_id, payload) = publish(app, "122233", 1).await;
    Seeded {
        subscriber,
        event_id,
        payload,
    }
}

/// The subscriber's one delivery, with its attempts.
async fn delivery_of(app: &TestApp, subscriber: &SubscriberId) -> Delivery {
    let mut deliveries = app.deliveries_of(subscriber).await;
    assert_eq!(deliveries.len(), 1, "one delivery per subscriber and event");
    deliveries.remove(0)
}

/// Runs delivery rounds until the subscriber's delivery leaves `pending`.
async fn deliver_until_settled(app: &TestApp, subscriber: &SubscriberId) -> Delivery {
    wait_for("the delivery leaves pending", || async {
        app.deliver_next().await;
        let delivery = delivery_of(app, subscriber).await;
        (delivery.status != DeliveryStatus::Pending).then_some(delivery)
    })
    .await
}

async fn wait_for_requests(receiver: &Receiver, count: usize) {
    wait_until(&format!("{count} requests arrived"), || async {
        receiver.requests().len() >= count
    })
    .await;
}

// ---------------------------------------------------------------- the tests

#[tokio::test]
async fn delivery_succeeds_with_a_valid_signature_and_the_exact_body() {
    let secret = SigningSecret::generate();
    let receiver = Receiver::verifying(std::slice::from_ref(&secret), []).await;
    let app = bridge(settings(true)).await;
    let seeded = seed(&app, &receiver.url, &secret).await;

    assert_eq!(app.deliver_next().await, 1);

    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.body, seeded.payload.as_bytes());
    assert_eq!(request.header(HEADER_ID), seeded.event_id.as_str());
    let sent_at: i64 = request.header(HEADER_TIMESTAMP).parse().unwrap();
    assert!((Utc::now().timestamp() - sent_at).abs() <= 5);
    assert_eq!(request.header("content-type"), "application/json");
    assert_eq!(request.header("user-agent"), shopper_bridge::USER_AGENT);
    verify_headers(&secret, &request.headers, &request.body, Utc::now()).unwrap();

    let delivery = delivery_of(&app, &seeded.subscriber).await;
    assert_eq!(delivery.status, DeliveryStatus::Delivered);
    assert_eq!(delivery.attempt_count, 1);
    assert_eq!(delivery.attempts[0].status_code, Some(200));
    assert_eq!(delivery.attempts[0].response_excerpt.as_deref(), Some("ok"));
    assert_eq!(
        app.deliver_next().await,
        0,
        "a delivered delivery is not sent again"
    );
}

#[tokio::test]
async fn delivery_is_retried_when_receiver_returns_503() {
    let secret = SigningSecret::generate();
    let script = vec![Reply::status(503), Reply::status(503)];
    let receiver = Receiver::verifying(std::slice::from_ref(&secret), script).await;
    let app = bridge(settings(true)).await;
    let seeded = seed(&app, &receiver.url, &secret).await;

    let delivery = deliver_until_settled(&app, &seeded.subscriber).await;

    assert_eq!(delivery.status, DeliveryStatus::Delivered);
    assert_eq!(delivery.attempt_count, 3);
    let codes: Vec<_> = delivery.attempts.iter().map(|a| a.status_code).collect();
    assert_eq!(codes, [Some(503), Some(503), Some(200)]);
    let requests = receiver.requests();
    assert_eq!(requests.len(), 3);
    for request in &requests {
        assert_eq!(request.header(HEADER_ID), seeded.event_id.as_str());
        assert_eq!(request.body, seeded.payload.as_bytes());
    }
}

#[tokio::test]
async fn retry_after_from_the_receiver_sets_the_next_attempt() {
    let secret = SigningSecret::generate();
    let script = vec![Reply::status(429).header("retry-after", "1")];
    let receiver = Receiver::verifying(std::slice::from_ref(&secret), script).await;
    let app = bridge(settings(true)).await;
    let seeded = seed(&app, &receiver.url, &secret).await;

    assert_eq!(app.deliver_next().await, 1);
    let pending = delivery_of(&app, &seeded.subscriber).await;
    assert_eq!(pending.status, DeliveryStatus::Pending);
    let wait = pending.next_attempt_at.unwrap() - pending.attempts[0].at;
    assert!(
        wait >= chrono::Duration::seconds(1) && wait < chrono::Duration::seconds(2),
        "the 10 ms schedule gave way to Retry-After: waited {wait}"
    );
    assert_eq!(app.deliver_next().await, 0, "not due before Retry-After");

    let delivery = deliver_until_settled(&app, &seeded.subscriber).await;
    assert_eq!(delivery.status, DeliveryStatus::Delivered);
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests[1].at - requests[0].at >= Duration::from_secs(1));
}

#[tokio::test]
async fn gone_410_disables_the_subscriber_and_parks_the_delivery() {
    let secret = SigningSecret::generate();
    let script = vec![Reply::status(410).body("unsubscribed")];
    let receiver = Receiver::verifying(std::slice::from_ref(&secret), script).await;
    let app = bridge(settings(true)).await;
    let seeded = seed(&app, &receiver.url, &secret).await;

    assert_eq!(app.deliver_next().await, 1);

    let delivery = delivery_of(&app, &seeded.subscriber).await;
    assert_eq!(delivery.status, DeliveryStatus::Failed);
    assert_eq!(delivery.attempts.len(), 1);
    assert_eq!(delivery.attempts[0].status_code, Some(410));
    assert_eq!(
        delivery.attempts[0].response_excerpt.as_deref(),
        Some("unsubscribed")
    );
    let subscriber = app
        .store
        .get_subscriber(&seeded.subscriber)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(subscriber.status, SubscriberStatus::Disabled);
    assert!(subscriber.disabled_reason.unwrap().contains("410"));
    assert_eq!(app.deliver_next().await, 0);
    assert_eq!(receiver.requests().len(), 1);
}

#[tokio::test]
async fn exhausted_schedule_parks_the_delivery_as_failed_with_every_attempt_logged() {
    let secret = SigningSecret::generate();
    let body = "boom ".repeat(100);
    let script = vec![Reply::status(500).body(body.clone()); 3];
    let receiver = Receiver::verifying(std::slice::from_ref(&secret), script).await;
    let app = bridge(settings(true)).await;
    let seeded = seed(&app, &receiver.url, &secret).await;

    let delivery = deliver_until_settled(&app, &seeded.subscriber).await;

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
    assert_eq!(app.deliver_next().await, 0);
    assert_eq!(receiver.requests().len(), 3);
}

#[tokio::test]
async fn rotation_signs_with_both_secrets_and_each_verifies() {
    let old = SigningSecret::generate();
    let new = SigningSecret::generate();
    // The receiver still only knows the old secret: the overlap is what keeps it working.
    let receiver = Receiver::verifying(std::slice::from_ref(&old), []).await;
    let app = bridge(settings(true)).await;
    let seeded = seed(&app, &receiver.url, &old).await;
    let now = Utc::now();
    app.store
        .rotate_secret(
            &seeded.subscriber,
            new.clone(),
            now,
            now + chrono::Duration::hours(1),
        )
        .await
        .unwrap()
        .unwrap();

    assert_eq!(app.deliver_next().await, 1);

    let delivery = delivery_of(&app, &seeded.subscriber).await;
    assert_eq!(delivery.status, DeliveryStatus::Delivered);
    let request = &receiver.requests()[0];
    assert_eq!(request.header(HEADER_SIGNATURE).split(' ').count(), 2);
    for secret in [&old, &new] {
        verify_headers(secret, &request.headers, &request.body, Utc::now()).unwrap();
    }
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let secret = SigningSecret::generate();
    let receiver = Receiver::verifying(std::slice::from_ref(&secret), []).await;
    let target = format!("http://{}/target", receiver.addr);
    receiver.then([Reply::status(302).header("location", target)]);
    let app = bridge(settings(true)).await;
    let seeded = seed(&app, &receiver.url, &secret).await;

    assert_eq!(app.deliver_next().await, 1);

    let delivery = delivery_of(&app, &seeded.subscriber).await;
    assert_eq!(delivery.status, DeliveryStatus::Pending, "a 302 is retried");
    assert_eq!(delivery.attempts[0].status_code, Some(302));
    let paths: Vec<_> = receiver.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/hook"], "the redirect target received nothing");
}

#[tokio::test]
async fn ssrf_guard_refuses_a_host_name_resolving_to_loopback() {
    let secret = SigningSecret::generate();
    let receiver = Receiver::verifying(std::slice::from_ref(&secret), []).await;
    let app = bridge(settings(false)).await;
    let url = format!("http://localhost:{}/hook", receiver.addr.port());
    let seeded = seed(&app, &url, &secret).await;

    assert_eq!(app.deliver_next().await, 1);

    let delivery = delivery_of(&app, &seeded.subscriber).await;
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
    let receiver = Receiver::verifying(std::slice::from_ref(&secret), []).await;
    let app = bridge(settings(false)).await;
    let seeded = seed(&app, &receiver.url, &secret).await;

    assert_eq!(app.deliver_next().await, 1);

    let delivery = delivery_of(&app, &seeded.subscriber).await;
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
    let receiver = Receiver::verifying(std::slice::from_ref(&secret), []).await;
    let app = bridge(settings(true)).await;
    let subscriber = subscribe(&app, &receiver.url, &secret).await;
    let cancel = CancellationToken::new();
    let running = tokio::spawn(Arc::clone(&app.dispatcher).run(cancel.clone()));

    for message_id in 1..=3 {
        publish(&app, "122233", message_id).await;
        app.dispatcher.outbox().wake();
    }
    wait_for_requests(&receiver, 3).await;
    cancel.cancel();
    within("the dispatcher stops", running).await.unwrap();

    let deliveries = app.deliveries_of(&subscriber).await;
    assert_eq!(deliveries.len(), 3);
    assert!(deliveries
        .iter()
        .all(|d| d.status == DeliveryStatus::Delivered));
}

#[tokio::test]
async fn shutdown_lets_the_in_flight_delivery_finish() {
    let secret = SigningSecret::generate();
    let script = vec![Reply::status(200).delay(Duration::from_millis(300))];
    let receiver = Receiver::verifying(std::slice::from_ref(&secret), script).await;
    let app = bridge(settings(true)).await;
    let seeded = seed(&app, &receiver.url, &secret).await;
    let cancel = CancellationToken::new();
    let running = tokio::spawn(Arc::clone(&app.dispatcher).run(cancel.clone()));

    wait_for_requests(&receiver, 1).await;
    cancel.cancel();
    within("the dispatcher stops", running).await.unwrap();

    let delivery = delivery_of(&app, &seeded.subscriber).await;
    assert_eq!(delivery.status, DeliveryStatus::Delivered);
    assert_eq!(delivery.attempt_count, 1);
}

#[tokio::test]
async fn shutdown_abandons_sends_that_outlast_the_grace() {
    let secret = SigningSecret::generate();
    let script = vec![Reply::status(200).delay(Duration::from_secs(30))];
    let receiver = Receiver::verifying(std::slice::from_ref(&secret), script).await;
    let app = bridge(DeliverySettings {
        shutdown_grace: Duration::from_millis(100),
        ..settings(true)
    })
    .await;
    let seeded = seed(&app, &receiver.url, &secret).await;
    let cancel = CancellationToken::new();
    let running = tokio::spawn(Arc::clone(&app.dispatcher).run(cancel.clone()));

    wait_for_requests(&receiver, 1).await;
    let cancelled_at = Instant::now();
    cancel.cancel();
    within("the dispatcher stops", running).await.unwrap();
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(2),
        "did not wait for the 5 s send timeout"
    );

    // Still claimed: another run retries it once the lease ends.
    let delivery = delivery_of(&app, &seeded.subscriber).await;
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
    let app = bridge(settings(true)).await;
    let url = format!("http://{addr}/hook/tok_s3cr3t?key=s3cr3t");
    let seeded = seed(&app, &url, &secret).await;

    assert_eq!(app.deliver_next().await, 1);

    let delivery = delivery_of(&app, &seeded.subscriber).await;
    assert_eq!(delivery.status, DeliveryStatus::Pending);
    let error = delivery.attempts[0].error.as_deref().unwrap();
    assert!(error.contains("connect"), "{error}");
    assert!(!error.contains("s3cr3t"), "{error}");
}

#[tokio::test]
async fn a_receiver_slower_than_the_timeout_is_retried() {
    let secret = SigningSecret::generate();
    let script = vec![Reply::status(200).delay(Duration::from_secs(5))];
    let receiver = Receiver::verifying(std::slice::from_ref(&secret), script).await;
    let app = bridge(DeliverySettings {
        timeout: Duration::from_millis(200),
        ..settings(true)
    })
    .await;
    let seeded = seed(&app, &receiver.url, &secret).await;

    assert_eq!(app.deliver_next().await, 1);

    let delivery = delivery_of(&app, &seeded.subscriber).await;
    assert_eq!(delivery.status, DeliveryStatus::Pending);
    assert_eq!(delivery.attempts[0].status_code, None);
    let error = delivery.attempts[0].error.as_deref().unwrap();
    assert!(error.contains("timed out"), "{error}");

    let delivery = deliver_until_settled(&app, &seeded.subscriber).await;
    assert_eq!(delivery.status, DeliveryStatus::Delivered);
    assert_eq!(delivery.attempt_count, 2);
}
