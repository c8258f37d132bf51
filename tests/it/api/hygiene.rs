//! What every route shares: authentication, the error shape, health, the OpenAPI document.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeSet;

use crate::harness::{errors, json_body, single_error, spawn_app};

#[tokio::test]
async fn v1_routes_refuse_requests_without_a_token() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/v1/orders")).send().await.unwrap();
    assert_eq!(
        response.headers().get("www-authenticate").unwrap(),
        "Bearer"
    );
    let error = single_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert!(!error.message.contains(&app.admin_token));
}

#[tokio::test]
async fn v1_routes_refuse_a_wrong_token_or_another_scheme() {
    let app = spawn_app().await;
    let wrong = format!("{}x", app.admin_token);
    let response = app
        .client
        .post(app.url("/v1/orders"))
        .bearer_auth(&wrong)
        .json(&json!({"order_id": "122233"}))
        .send()
        .await
        .unwrap();
    single_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;

    let response = app
        .client
        .get(app.url("/v1/subscribers"))
        .basic_auth("admin", Some(&app.admin_token))
        .send()
        .await
        .unwrap();
    single_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;

    // The refused POST changed nothing.
    let orders = json_body(app.get("/v1/orders").await, StatusCode::OK).await;
    assert_eq!(orders["data"], json!([]));
}

#[tokio::test]
async fn v1_routes_accept_the_admin_token() {
    let app = spawn_app().await;
    let body = json_body(app.get("/v1/orders").await, StatusCode::OK).await;
    assert_eq!(body, json!({"data": []}));
}

#[tokio::test]
async fn healthz_needs_no_token_and_says_ok() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(
        json_body(response, StatusCode::OK).await,
        json!({"status": "ok"})
    );
}

#[tokio::test]
async fn store_failures_are_an_opaque_500_and_fail_the_health_check() {
    let app = spawn_app().await;
    app.watch_order("122233").await;
    // Break the database under the running service.
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&app.db_url)
        .await
        .unwrap();
    sqlx::query("DROP TABLE orders")
        .execute(&mut conn)
        .await
        .unwrap();

    let error = single_error(
        app.get("/v1/orders").await,
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
    )
    .await;
    assert_eq!(error.message, "internal error");

    let response = app.client.get(app.url("/healthz")).send().await.unwrap();
    single_error(response, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_error_shape() {
    let app = spawn_app().await;
    let error = single_error(
        app.get("/v1/nothing-here").await,
        StatusCode::NOT_FOUND,
        "route_not_found",
    )
    .await;
    assert!(error.message.contains("/v1/nothing-here"), "{error:?}");

    let response = app.request(Method::PUT, "/v1/orders").send().await.unwrap();
    single_error(
        response,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
}

#[tokio::test]
async fn malformed_json_is_a_400_saying_what_is_wrong() {
    let app = spawn_app().await;
    let response = app
        .request(Method::POST, "/v1/orders")
        .header("content-type", "application/json")
        .body("{\"order_id\": ")
        .send()
        .await
        .unwrap();
    let error = single_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert!(error.message.contains("JSON"), "{error:?}");

    // Valid JSON of the wrong shape: the message names the field.
    let response = app.post("/v1/orders", &json!({"order_id": 122233})).await;
    let error = single_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert!(error.message.contains("order_id"), "{error:?}");

    let response = app
        .post("/v1/orders", &json!({"order_id": "1", "user": "typo"}))
        .await;
    let error = single_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert!(error.message.contains("unknown field `user`"), "{error:?}");
}

#[tokio::test]
async fn a_body_without_json_content_type_is_a_415() {
    let app = spawn_app().await;
    let response = app
        .request(Method::POST, "/v1/orders")
        .body("{\"order_id\": \"1\"}")
        .send()
        .await
        .unwrap();
    let error = single_error(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "invalid_request",
    )
    .await;
    assert!(error.message.contains("Content-Type"), "{error:?}");
}

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

async fn openapi_document(app: &crate::harness::TestApp) -> Value {
    let response = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    json_body(response, StatusCode::OK).await
}

fn documented_operations(doc: &Value) -> BTreeSet<(String, String)> {
    doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(|m| (m.to_uppercase(), path.clone()))
        })
        .collect()
}

#[tokio::test]
async fn openapi_document_needs_no_token_and_lists_the_whole_api() {
    let app = spawn_app().await;
    let doc = openapi_document(&app).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let expected: BTreeSet<(String, String)> = [
        ("GET", "/healthz"),
        ("GET", "/openapi.json"),
        ("POST", "/v1/orders"),
        ("GET", "/v1/orders"),
        ("GET", "/v1/orders/{order_id}"),
        ("DELETE", "/v1/orders/{order_id}"),
        ("POST", "/v1/orders/{order_id}/messages"),
        ("PUT", "/v1/orders/{order_id}/messages/read"),
        ("POST", "/v1/subscribers"),
        ("GET", "/v1/subscribers"),
        ("GET", "/v1/subscribers/{id}"),
        ("PATCH", "/v1/subscribers/{id}"),
        ("DELETE", "/v1/subscribers/{id}"),
        ("POST", "/v1/subscribers/{id}/secret/rotate"),
        ("GET", "/v1/deliveries"),
        ("GET", "/v1/deliveries/{id}"),
        ("POST", "/v1/deliveries/{id}/retry"),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_owned(), p.to_owned()))
    .collect();
    assert_eq!(documented_operations(&doc), expected);

    // Every /v1 operation declares the bearer scheme and its 401; the open ones do not.
    for (method, path) in &expected {
        let operation = &doc["paths"][path][method.to_lowercase()];
        let secured = operation["security"] == json!([{"admin_token": []}]);
        assert_eq!(secured, path.starts_with("/v1/"), "{method} {path}");
        assert_eq!(
            operation["responses"].get("401").is_some(),
            path.starts_with("/v1/"),
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn every_routed_method_is_documented_and_every_documented_one_is_routed() {
    let app = spawn_app().await;
    let doc = openapi_document(&app).await;
    let documented = documented_operations(&doc);
    let paths: BTreeSet<&String> = documented.iter().map(|(_, p)| p).collect();
    for path in paths {
        // Any value fits a path parameter's slot; the handlers then answer 404 or 4xx.
        let concrete = path.replace("{order_id}", "x").replace("{id}", "x");
        for method in METHODS {
            let method = method.to_uppercase();
            let response = app
                .request(method.parse().unwrap(), &concrete)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            let status = response.status();
            let routed = status != StatusCode::METHOD_NOT_ALLOWED;
            let is_documented = documented.contains(&(method.clone(), path.clone()));
            assert_eq!(routed, is_documented, "{method} {path} answered {status}");
            if status == StatusCode::NOT_FOUND {
                let found = errors(response, status).await;
                assert_eq!(found[0].code, "not_found", "{method} {path}: {found:?}");
            }
        }
    }
}
