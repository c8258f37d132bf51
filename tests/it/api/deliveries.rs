use chrono::Utc;
use reqwest::StatusCode;
use serde_json::{json, Value};

use shopper_bridge::domain::AttemptResolution;

use crate::harness::{
    dispatcher_was_woken, errors, json_body, single_error, spawn_app, timestamp, TestApp,
};

async fn list(app: &TestApp, query: &str) -> Vec<Value> {
    let body = json_body(
        app.get(&format!("/v1/deliveries{query}")).await,
        StatusCode::OK,
    )
    .await;
    body["data"].as_array().expect("data").clone()
}

fn ids(deliveries: &[Value]) -> Vec<&str> {
    deliveries
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn deliveries_show_their_event_subscriber_and_attempts() {
    let app = spawn_app().await;
    let subscriber = app.create_webhook().await;
    app.watch_order("122233").await;
    let event_id = app.seed_chat_message("122233", 42).await;

    let pending = list(&app, "").await;
    assert_eq!(pending.len(), 1);
    let delivery = &pending[0];
    assert_eq!(delivery["event_id"], event_id.as_str());
    assert_eq!(delivery["event_type"], "chat_message.created");
    assert_eq!(delivery["order_id"], "122233");
    assert_eq!(delivery["subscriber_id"], subscriber["id"]);
    assert_eq!(delivery["status"], "pending");
    assert_eq!(delivery["attempt_count"], 0);
    assert_eq!(delivery["attempts"], json!([]));

    app.attempt_due_deliveries(AttemptResolution::Failed, 500)
        .await;
    let path = format!("/v1/deliveries/{}", delivery["id"].as_str().unwrap());
    let failed = json_body(app.get(&path).await, StatusCode::OK).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["attempt_count"], 1);
    let attempts = failed["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["status_code"], 500);
    assert_eq!(attempts[0]["response_excerpt"], "upstream says no");
    assert_eq!(attempts[0]["error"], "receiver answered 500");
    assert!(attempts[0]["outcome"].is_string());
    timestamp(&attempts[0]["at"]);
}

#[tokio::test]
async fn deliveries_filter_by_status_subscriber_order_and_limit() {
    let app = spawn_app().await;
    let everything = app.create_webhook().await;
    let only_777 = app
        .create_subscriber(json!({
            "kind": "webhook",
            "url": "http://127.0.0.1:9/other",
            "order_ids": ["777"],
        }))
        .await;
    app.watch_order("122233").await;
    app.watch_order("777").await;
    app.seed_chat_message("122233", 1).await;
    // Park the first delivery as failed, so two statuses exist.
    app.attempt_due_deliveries(AttemptResolution::Failed, 500)
        .await;
    app.seed_chat_message("777", 2).await;

    let all = list(&app, "").await;
    assert_eq!(all.len(), 3, "{all:?}");

    let failed = list(&app, "?status=failed").await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["order_id"], "122233");
    assert_eq!(list(&app, "?status=pending").await.len(), 2);
    assert_eq!(list(&app, "?status=delivered").await.len(), 0);

    let of_777 = list(&app, "?order_id=777").await;
    assert_eq!(of_777.len(), 2);
    assert!(of_777.iter().all(|d| d["order_id"] == "777"));

    let sub = only_777["id"].as_str().unwrap();
    let for_sub = list(&app, &format!("?subscriber_id={sub}")).await;
    assert_eq!(for_sub.len(), 1);
    assert_eq!(for_sub[0]["subscriber_id"], sub);

    let combined = list(
        &app,
        &format!(
            "?subscriber_id={}&order_id=777&status=pending",
            everything["id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(combined.len(), 1);

    let limited = list(&app, "?limit=2").await;
    assert_eq!(ids(&limited), ids(&all)[..2]);
}

#[tokio::test]
async fn bad_delivery_queries_name_the_parameter() {
    let app = spawn_app().await;
    let cases = [
        (
            "?status=lost",
            "status",
            "`status` must be one of pending, delivered, failed",
        ),
        (
            "?limit=0",
            "limit",
            "`limit` must be a whole number from 1 to 1000",
        ),
        (
            "?limit=ten",
            "limit",
            "`limit` must be a whole number from 1 to 1000",
        ),
        (
            "?subscriber_id=dlv_1",
            "subscriber_id",
            "`subscriber_id` must start with `sub_`",
        ),
    ];
    for (query, field, message) in cases {
        let response = app.get(&format!("/v1/deliveries{query}")).await;
        let found = errors(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(found.len(), 1, "{query}: {found:?}");
        assert_eq!(found[0].code, "invalid_field");
        assert_eq!(found[0].field.as_deref(), Some(field), "{query}");
        assert_eq!(found[0].message, message, "{query}");
    }

    let error = single_error(
        app.get("/v1/deliveries?stauts=failed").await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    assert!(error.message.contains("stauts"), "{error:?}");
}

#[tokio::test]
async fn retrying_a_failed_delivery_makes_it_due_now_and_wakes_the_dispatcher() {
    let app = spawn_app().await;
    app.create_webhook().await;
    app.watch_order("122233").await;
    app.seed_chat_message("122233", 1).await;
    app.attempt_due_deliveries(AttemptResolution::Failed, 503)
        .await;
    let failed = list(&app, "?status=failed").await;
    let id = failed[0]["id"].as_str().unwrap();

    let before = Utc::now();
    let response = app
        .post(&format!("/v1/deliveries/{id}/retry"), &json!({}))
        .await;
    let retried = json_body(response, StatusCode::ACCEPTED).await;
    assert_eq!(retried["id"], id);
    assert_eq!(retried["status"], "pending");
    let due = timestamp(&retried["next_attempt_at"]);
    assert!(due <= Utc::now() && due >= before - chrono::TimeDelta::seconds(1));
    assert_eq!(
        retried["attempts"].as_array().unwrap().len(),
        1,
        "history stays"
    );
    assert!(dispatcher_was_woken(&app).await);

    // The dispatcher can claim it again.
    let now = Utc::now();
    let claimed = app
        .store
        .claim_due_deliveries(now, now + chrono::TimeDelta::seconds(30), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id.as_str(), id);
}

#[tokio::test]
async fn retrying_a_delivery_while_it_is_being_attempted_is_a_conflict() {
    let app = spawn_app().await;
    app.create_webhook().await;
    app.watch_order("122233").await;
    app.seed_chat_message("122233", 1).await;
    let now = Utc::now();
    // Claimed as the dispatcher claims it: its attempt is in flight until recorded.
    let claimed = app
        .store
        .claim_due_deliveries(now, now + chrono::TimeDelta::seconds(30), 10)
        .await
        .unwrap();
    let id = claimed[0].id.as_str();
    let retry = format!("/v1/deliveries/{id}/retry");

    let error = single_error(
        app.post(&retry, &json!({})).await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    assert!(error.message.contains("being attempted"), "{error:?}");
    assert!(!dispatcher_was_woken(&app).await);

    // Once the claim is released (here: put back unattempted), it can be retried.
    app.store
        .postpone_deliveries(&[claimed[0].id.clone()], now)
        .await
        .unwrap();
    json_body(app.post(&retry, &json!({})).await, StatusCode::ACCEPTED).await;
}

#[tokio::test]
async fn retrying_for_a_disabled_or_deleted_subscriber_is_a_conflict() {
    let app = spawn_app().await;
    let subscriber = app.create_webhook().await;
    let sub_path = format!("/v1/subscribers/{}", subscriber["id"].as_str().unwrap());
    app.watch_order("122233").await;
    app.seed_chat_message("122233", 1).await;
    let id = list(&app, "").await[0]["id"].as_str().unwrap().to_owned();
    let retry = format!("/v1/deliveries/{id}/retry");

    app.patch(&sub_path, &json!({"status": "disabled"})).await;
    let error = single_error(
        app.post(&retry, &json!({})).await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    assert!(error.message.contains("disabled"), "{error:?}");

    app.delete(&sub_path).await;
    let error = single_error(
        app.post(&retry, &json!({})).await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    assert!(error.message.contains("deleted"), "{error:?}");
    // The delivery itself is still there, parked.
    let parked = json_body(
        app.get(&format!("/v1/deliveries/{id}")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(parked["status"], "failed");
}

#[tokio::test]
async fn unknown_deliveries_are_a_404() {
    let app = spawn_app().await;
    let missing = "dlv_0192f0c1a8e47d3b9a6f2c5e8d1b4a70";
    let error = single_error(
        app.get(&format!("/v1/deliveries/{missing}")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_eq!(error.message, format!("delivery `{missing}` was not found"));
    single_error(
        app.post(&format!("/v1/deliveries/{missing}/retry"), &json!({}))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    single_error(
        app.get("/v1/deliveries/nope").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}
