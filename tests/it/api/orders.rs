use chrono::Utc;
use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{errors, json_body, single_error, spawn_app, timestamp, was_woken};

#[tokio::test]
async fn watching_an_order_returns_201_and_wakes_the_poller() {
    let app = spawn_app().await;
    let before = Utc::now();
    let response = app
        .post(
            "/v1/orders",
            &json!({"order_id": "122233", "user_id": "user-42"}),
        )
        .await;
    let order = json_body(response, StatusCode::CREATED).await;

    assert_eq!(order["order_id"], "122233");
    assert_eq!(order["user_id"], "user-42");
    assert_eq!(order["state"], "watching");
    assert_eq!(order["fallback_reason"], json!(null));
    assert_eq!(order["consecutive_failures"], 0);
    // Due at once: the first poll should not wait an interval.
    assert!(timestamp(&order["next_poll_at"]) <= Utc::now());
    assert!(timestamp(&order["created_at"]) >= before - chrono::TimeDelta::seconds(1));
    assert!(was_woken(&app.poller_wake).await);
}

#[tokio::test]
async fn watching_a_watched_order_again_returns_200_unchanged() {
    let app = spawn_app().await;
    let first = app.watch_order("122233").await;
    let response = app.post("/v1/orders", &json!({"order_id": "122233"})).await;
    let again = json_body(response, StatusCode::OK).await;
    assert_eq!(again, first);
}

#[tokio::test]
async fn watching_a_watched_order_with_another_user_id_is_a_conflict() {
    let app = spawn_app().await;
    let response = app
        .post("/v1/orders", &json!({"order_id": "122233", "user_id": "a"}))
        .await;
    json_body(response, StatusCode::CREATED).await;
    let response = app
        .post("/v1/orders", &json!({"order_id": "122233", "user_id": "b"}))
        .await;
    let error = single_error(response, StatusCode::CONFLICT, "conflict").await;
    assert!(error.message.contains("122233"), "{error:?}");

    // The same user id again is no conflict.
    let response = app
        .post("/v1/orders", &json!({"order_id": "122233", "user_id": "a"}))
        .await;
    json_body(response, StatusCode::OK).await;
}

#[tokio::test]
async fn a_stopped_order_is_watched_again_with_201() {
    let app = spawn_app().await;
    app.watch_order("122233").await;
    assert_eq!(
        app.delete("/v1/orders/122233").await.status(),
        StatusCode::NO_CONTENT
    );
    let stopped = json_body(app.get("/v1/orders/122233").await, StatusCode::OK).await;
    assert_eq!(stopped["state"], "stopped");

    let again = app.watch_order("122233").await;
    assert_eq!(again["state"], "watching");
}

#[tokio::test]
async fn invalid_order_and_user_ids_are_a_422_naming_each_field() {
    let app = spawn_app().await;
    let response = app
        .post(
            "/v1/orders",
            &json!({"order_id": "12/../3", "user_id": "has space"}),
        )
        .await;
    let found = errors(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().all(|e| e.code == "invalid_field"));
    assert_eq!(found[0].field.as_deref(), Some("order_id"));
    assert_eq!(
        found[0].message,
        "`order_id` may only contain letters, digits, '-' and '_'"
    );
    assert_eq!(found[1].field.as_deref(), Some("user_id"));
    assert!(found[1]
        .message
        .starts_with("`user_id` must not contain whitespace"));
}

#[tokio::test]
async fn a_missing_order_id_is_a_400_naming_it() {
    let app = spawn_app().await;
    let error = single_error(
        app.post("/v1/orders", &json!({})).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    assert!(
        error.message.contains("missing field `order_id`"),
        "{error:?}"
    );
}

#[tokio::test]
async fn listing_orders_shows_every_order_whatever_its_state() {
    let app = spawn_app().await;
    app.watch_order("111").await;
    app.watch_order("222").await;
    app.delete("/v1/orders/111").await;

    let body = json_body(app.get("/v1/orders").await, StatusCode::OK).await;
    let mut states: Vec<(String, String)> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["order_id"].as_str().unwrap().to_owned(),
                o["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    states.sort();
    assert_eq!(
        states,
        [
            ("111".to_owned(), "stopped".to_owned()),
            ("222".to_owned(), "watching".to_owned())
        ]
    );
}

#[tokio::test]
async fn an_order_shows_its_polling_state_and_what_it_produced() {
    let app = spawn_app().await;
    app.watch_order("122233").await;
    app.seed_chat_message("122233", 9001).await;
    app.seed_chat_message("122233", 9002).await;

    let order = json_body(app.get("/v1/orders/122233").await, StatusCode::OK).await;
    assert_eq!(order["order_id"], "122233");
    assert_eq!(order["state"], "watching");
    assert!(order["last_polled_at"].is_string(), "{order}");
    assert!(timestamp(&order["next_poll_at"]) > timestamp(&order["last_polled_at"]));
    assert_eq!(order["last_error"], json!(null));
    assert_eq!(
        order["counts"],
        json!({"chat_messages": 2, "lifecycle_messages": 0, "events": 2})
    );
}

#[tokio::test]
async fn unknown_orders_are_a_404_naming_the_order() {
    let app = spawn_app().await;
    let error = single_error(
        app.get("/v1/orders/404404").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_eq!(error.message, "order `404404` was not found");

    single_error(
        app.delete("/v1/orders/404404").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    // An id that cannot exist is simply not found.
    single_error(
        app.get("/v1/orders/not%20valid").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}
