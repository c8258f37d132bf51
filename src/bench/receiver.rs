//! The webhook receiver the bridge delivers to: one route per subscriber, every signature
//! verified, every accepted request noted with its `webhook-id` and arrival time. It can refuse
//! a share of requests with 503 to make the bridge retry.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use rand::Rng;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Instant;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::channels::webhook::{verify_headers, HEADER_ID};
use crate::domain::SigningSecret;

/// One accepted delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    pub subscriber: usize,
    pub event_id: String,
    pub at: Instant,
}

/// Requests answered, by how.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiverCounts {
    pub accepted: u64,
    /// Refused on purpose (`fail_rate`), with 503.
    pub refused: u64,
    /// Refused with 401: a signature, timestamp or header did not verify.
    pub bad_signatures: u64,
}

#[derive(Default)]
struct Shared {
    /// Indexed by the subscriber number in the path.
    secrets: RwLock<Vec<SigningSecret>>,
    /// `f64` bits: the share of requests refused with 503.
    fail_rate: AtomicU64,
    arrivals: Mutex<Vec<Arrival>>,
    accepted: AtomicU64,
    refused: AtomicU64,
    bad_signatures: AtomicU64,
}

/// A running receiver; it stops when the token given to [`Receiver::start`] is cancelled.
#[derive(Clone)]
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Receiver {
    /// Serves on a free loopback port.
    pub async fn start(cancel: CancellationToken) -> io::Result<Self> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/hook/{subscriber}", post(receive))
            .with_state(shared.clone());
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(cancel.cancelled_owned())
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "the bench receiver failed");
            }
        });
        Ok(Self { addr, shared })
    }

    /// Where subscriber number `subscriber` receives.
    pub fn url(&self, subscriber: usize) -> String {
        format!("http://{}/hook/{subscriber}", self.addr)
    }

    /// The secrets that verify each subscriber's route, in subscriber order.
    pub fn set_secrets(&self, secrets: Vec<SigningSecret>) {
        *self
            .shared
            .secrets
            .write()
            .unwrap_or_else(PoisonError::into_inner) = secrets;
    }

    pub fn set_fail_rate(&self, rate: f64) {
        self.shared
            .fail_rate
            .store(rate.to_bits(), Ordering::Relaxed);
    }

    /// The arrivals noted since the last call.
    pub fn take_arrivals(&self) -> Vec<Arrival> {
        std::mem::take(&mut *self.arrivals())
    }

    pub fn counts(&self) -> ReceiverCounts {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ReceiverCounts {
            accepted: get(&self.shared.accepted),
            refused: get(&self.shared.refused),
            bad_signatures: get(&self.shared.bad_signatures),
        }
    }

    /// Forgets arrivals and counts, as after the raw-limit phase.
    pub fn reset(&self) {
        self.arrivals().clear();
        for counter in [
            &self.shared.accepted,
            &self.shared.refused,
            &self.shared.bad_signatures,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
    }

    fn arrivals(&self) -> std::sync::MutexGuard<'_, Vec<Arrival>> {
        self.shared
            .arrivals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    Path(subscriber): Path<usize>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let verified = {
        let secrets = shared
            .secrets
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        secrets
            .get(subscriber)
            .map(|secret| verify_headers(secret, &headers, &body, chrono::Utc::now()).is_ok())
    };
    match verified {
        None => return StatusCode::NOT_FOUND,
        Some(false) => {
            shared.bad_signatures.fetch_add(1, Ordering::Relaxed);
            return StatusCode::UNAUTHORIZED;
        }
        Some(true) => {}
    }
    let fail_rate = f64::from_bits(shared.fail_rate.load(Ordering::Relaxed));
    if fail_rate > 0.0 && rand::thread_rng().gen::<f64>() < fail_rate {
        shared.refused.fetch_add(1, Ordering::Relaxed);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let at = Instant::now();
    let event_id = headers
        .get(HEADER_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    shared.accepted.fetch_add(1, Ordering::Relaxed);
    shared
        .arrivals
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Arrival {
            subscriber,
            event_id,
            at,
        });
    StatusCode::NO_CONTENT
}
