//! The demo's webhook receiver: verifies each delivery's Standard Webhooks signature with the
//! subscriber's secret, as a retailer's endpoint must, and prints one line per event.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::Value;
use std::sync::{Arc, OnceLock};

use super::Receiver;
use crate::channels::webhook::verify_headers;
use crate::domain::SigningSecret;

/// The secret is set once the subscriber exists; until then deliveries are answered 503.
pub fn router(secret: Arc<OnceLock<SigningSecret>>) -> Router {
    Router::new()
        .route("/webhook", post(receive))
        .with_state(secret)
}

async fn receive(
    State(secret): State<Arc<OnceLock<SigningSecret>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let Some(secret) = secret.get() else {
        return StatusCode::SERVICE_UNAVAILABLE;
    };
    if let Err(error) = verify_headers(secret, &headers, &body, chrono::Utc::now()) {
        Receiver::Webhook.print(&[format!("✗ rejected a delivery: {error}")]);
        return StatusCode::UNAUTHORIZED;
    }
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?");
    let line = match serde_json::from_slice::<Value>(&body) {
        Ok(event) => format!("✓ {}  ({id}, signature verified)", describe(&event)),
        Err(_) => format!("✓ {id}: signature verified, body is not JSON"),
    };
    Receiver::Webhook.print(&[line]);
    StatusCode::NO_CONTENT
}

/// One line a person can read.
fn describe(event: &Value) -> String {
    let data = &event["data"];
    let order = data["order_id"].as_str().unwrap_or("?");
    let kind = event["type"].as_str().unwrap_or("?");
    let detail = match kind {
        "chat_message.created" => format!(
            "{} says {:?}",
            data["sender"]["display_name"].as_str().unwrap_or("someone"),
            data["message"]["body"].as_str().unwrap_or_default()
        ),
        "chat_message.read" => format!("message {} was read", data["message"]["id"]),
        "lifecycle_message.created" => format!(
            "[{}] {:?}",
            data["notification"]["medium"].as_str().unwrap_or("?"),
            data["notification"]["body"].as_str().unwrap_or_default()
        ),
        _ => "chat is no longer accessible".to_owned(),
    };
    format!("{kind:<26} order {order:<8} {detail}")
}
