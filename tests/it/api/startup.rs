use reqwest::StatusCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use shopper_bridge::startup::{Application, StartupError};

use crate::harness::test_settings;

#[tokio::test]
async fn the_application_stops_serving_when_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let app = Application::build(test_settings(dir.path())).await.unwrap();
    let url = format!("http://127.0.0.1:{}/healthz", app.port());
    let cancel = CancellationToken::new();
    let running = tokio::spawn(app.run_until_stopped(cancel.clone()));

    let client = reqwest::Client::new();
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    cancel.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("stops within the timeout")
        .expect("did not panic");
    assert!(stopped.is_ok(), "{stopped:?}");
    // A fresh client: no pooled connection to the stopped server.
    assert!(reqwest::Client::new().get(&url).send().await.is_err());
}

#[tokio::test]
async fn build_refuses_invalid_settings() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path());
    settings.server.admin_token = Some("short".to_owned().into());
    let error = Application::build(settings).await.err().expect("refused");
    assert!(matches!(error, StartupError::Config(_)), "{error:?}");
    assert!(error.to_string().contains("server.admin_token"), "{error}");
}

#[tokio::test]
async fn build_names_the_address_it_cannot_listen_on() {
    let dir = tempfile::tempdir().unwrap();
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut settings = test_settings(dir.path());
    settings.server.listen = taken.local_addr().unwrap();
    let error = Application::build(settings).await.err().expect("refused");
    assert!(matches!(error, StartupError::Bind { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .contains(&taken.local_addr().unwrap().to_string()),
        "{error}"
    );
}
