//! The machine's own limit: the bench pushes signed webhooks to its receiver as fast as it can,
//! with the bridge's delivery concurrency over keep-alive connections.

use axum::body::Bytes;
use futures::future::join_all;
use reqwest::header::CONTENT_TYPE;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::receiver::Receiver;
use crate::channels::webhook::{signature_header, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use crate::domain::SigningSecret;

/// Accepted webhooks per second over `duration`, each with its own id and a fresh signature,
/// spread over `subscribers` routes like the bridge's deliveries.
pub async fn measure(
    receiver: &Receiver,
    body: Bytes,
    subscribers: usize,
    concurrency: usize,
    duration: Duration,
) -> Result<f64, reqwest::Error> {
    let secrets: Arc<Vec<SigningSecret>> = Arc::new(
        (0..subscribers)
            .map(|_| SigningSecret::generate())
            .collect(),
    );
    receiver.set_secrets(secrets.to_vec());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let urls: Arc<Vec<String>> = Arc::new((0..subscribers).map(|k| receiver.url(k)).collect());
    let accepted = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let until = started + duration;
    let workers = (0..concurrency).map(|worker| {
        let (client, urls, secrets, body, accepted) = (
            client.clone(),
            urls.clone(),
            secrets.clone(),
            body.clone(),
            accepted.clone(),
        );
        tokio::spawn(async move {
            let mut sent = 0u64;
            while Instant::now() < until {
                let k = (worker + sent as usize) % urls.len();
                let id = format!("evt_{worker:08x}{sent:024x}");
                let timestamp = chrono::Utc::now().timestamp();
                let signature =
                    signature_header(std::slice::from_ref(&secrets[k]), &id, timestamp, &body);
                let response = client
                    .post(&urls[k])
                    .header(HEADER_ID, &id)
                    .header(HEADER_TIMESTAMP, timestamp)
                    .header(HEADER_SIGNATURE, signature)
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone())
                    .send()
                    .await?;
                if response.status().is_success() {
                    accepted.fetch_add(1, Ordering::Relaxed);
                }
                sent += 1;
            }
            Ok::<(), reqwest::Error>(())
        })
    });
    for joined in join_all(workers).await {
        joined.expect("a raw-limit worker panicked")?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(accepted.load(Ordering::Relaxed) as f64 / elapsed)
}
