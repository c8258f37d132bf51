//! `shopper-bridge demo`: the simulated Connect API, the bridge on a temporary SQLite file, and a
//! webhook receiver that verifies every signature, wired together through the admin API exactly
//! as a retailer would, printing each verified event until Ctrl-C.

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use rand::distributions::{Alphanumeric, DistString};
use secrecy::SecretString;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::channels::webhook::verify_headers;
use crate::config::Settings;
use crate::domain::SigningSecret;
use crate::simulator::{Simulator, SimulatorConfig};
use crate::startup::Application;

pub async fn run(
    world: SimulatorConfig,
    listen: SocketAddr,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let workdir = tempfile::tempdir().context("creating the demo's temporary directory")?;

    let simulator = Simulator::build(world.clone(), loopback).await?;
    let simulator_url = format!("http://{}", simulator.local_addr());
    let simulator_task = tokio::spawn(simulator.run_until_stopped(cancel.clone()));

    let secret = Arc::new(OnceLock::new());
    let receiver = tokio::net::TcpListener::bind(loopback).await?;
    let receiver_url = format!("http://{}/webhook", receiver.local_addr()?);
    let receiver_app = Router::new()
        .route("/webhook", post(receive))
        .with_state(secret.clone());
    let receiver_cancel = cancel.clone();
    let receiver_task = tokio::spawn(async move {
        axum::serve(receiver, receiver_app)
            .with_graceful_shutdown(receiver_cancel.cancelled_owned())
            .await
    });

    let admin_token = Alphanumeric.sample_string(&mut rand::thread_rng(), 32);
    let settings = demo_settings(&world, listen, &simulator_url, &admin_token, workdir.path())?;
    let app = Application::build(settings).await?;
    let admin_url = format!("http://127.0.0.1:{}", app.port());
    let app_task = tokio::spawn(app.run_until_stopped(cancel.clone()));

    let admin = reqwest::Client::new();
    let subscriber: Value = admin
        .post(format!("{admin_url}/v1/subscribers"))
        .bearer_auth(&admin_token)
        .json(&json!({"kind": "webhook", "url": receiver_url, "description": "demo receiver"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let signing_secret = subscriber["secret"]
        .as_str()
        .context("the subscriber response carries its secret")?;
    secret
        .set(SigningSecret::parse("secret", signing_secret)?)
        .expect("set once");
    for order_id in &world.orders {
        admin
            .post(format!("{admin_url}/v1/orders"))
            .bearer_auth(&admin_token)
            .json(&json!({ "order_id": order_id }))
            .send()
            .await?
            .error_for_status()?;
    }

    println!("shopper-bridge demo");
    println!("  simulated Instacart Connect  {simulator_url}");
    println!("  admin API                    {admin_url}   (token: {admin_token})");
    println!("  webhook receiver             {receiver_url}");
    println!("  watching orders              {}", world.orders.join(", "));
    println!();
    println!("  try: curl -H 'Authorization: Bearer {admin_token}' {admin_url}/v1/deliveries");
    println!();
    println!("Verified webhooks as they arrive (Ctrl-C to stop):");

    cancel.cancelled().await;
    let _ = tokio::join!(simulator_task, receiver_task, app_task);
    Ok(())
}

fn demo_settings(
    world: &SimulatorConfig,
    listen: SocketAddr,
    simulator_url: &str,
    admin_token: &str,
    workdir: &std::path::Path,
) -> anyhow::Result<Settings> {
    let mut settings: Settings = serde_json::from_value(json!({}))?;
    settings.server.listen = listen;
    settings.server.admin_token = Some(SecretString::from(admin_token.to_owned()));
    settings.store.url = format!("sqlite://{}", workdir.join("demo.db").display());
    settings.instacart.base_url = simulator_url.parse()?;
    settings.instacart.client_id = Some(world.client_id.clone());
    settings.instacart.client_secret = Some(SecretString::from(world.client_secret.clone()));
    settings.poller.interval = Duration::from_secs(1);
    // The receiver is on loopback; a real deployment keeps this off.
    settings.delivery.allow_private_targets = true;
    settings.validate()?;
    Ok(settings)
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
        println!("✗ rejected a delivery: {error}");
        return StatusCode::UNAUTHORIZED;
    }
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?");
    match serde_json::from_slice::<Value>(&body) {
        Ok(event) => println!("✓ {}  ({id}, signature verified)", describe(&event)),
        Err(_) => println!("✓ {id}: signature verified, body is not JSON"),
    }
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
