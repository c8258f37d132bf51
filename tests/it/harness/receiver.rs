//! A webhook receiver: a real axum server on loopback that records every request, checks its
//! Standard Webhooks signature once it knows a secret (401 otherwise, as a subscriber would), and
//! answers the scripted replies in order, then 200 "ok".

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use chrono::Utc;
use serde_json::Value;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shopper_bridge::channels::webhook::{verify_headers, HEADER_ID};
use shopper_bridge::domain::SigningSecret;

/// One scripted answer.
#[derive(Clone)]
pub struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: String::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<String>) -> Self {
        self.body = body.into();
        self
    }

    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// A request as the receiver got it.
#[derive(Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("a {name} header"))
    }

    pub fn webhook_id(&self) -> &str {
        self.header(HEADER_ID)
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

#[derive(Default)]
struct ReceiverState {
    /// Empty: every request is taken as signed.
    trusted: Mutex<Vec<SigningSecret>>,
    script: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<Received>>,
    /// How long each unscripted answer takes.
    delay: Duration,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

pub struct Receiver {
    /// `http://127.0.0.1:{port}/hook`.
    pub url: String,
    pub addr: SocketAddr,
    state: Arc<ReceiverState>,
}

impl Receiver {
    /// Answers the scripted statuses in order, then 200.
    pub async fn start(statuses: &[u16]) -> Self {
        Self::scripted(statuses.iter().copied().map(Reply::status)).await
    }

    /// Answers `script` in order, then 200 "ok".
    pub async fn scripted(script: impl IntoIterator<Item = Reply>) -> Self {
        Self::serve(ReceiverState {
            script: Mutex::new(script.into_iter().collect()),
            ..ReceiverState::default()
        })
        .await
    }

    /// Checks every signature against `trusted` and answers `script`, then 200 "ok".
    pub async fn verifying(
        trusted: &[SigningSecret],
        script: impl IntoIterator<Item = Reply>,
    ) -> Self {
        let receiver = Self::scripted(script).await;
        receiver.trusted().extend_from_slice(trusted);
        receiver
    }

    /// Answers 200 to everything, each after `delay`.
    pub async fn start_slow(delay: Duration) -> Self {
        Self::serve(ReceiverState {
            delay,
            ..ReceiverState::default()
        })
        .await
    }

    async fn serve(state: ReceiverState) -> Self {
        let state = Arc::new(state);
        let app = Router::new()
            .fallback(receive)
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await.expect("receiver serves") });
        Self {
            url: format!("http://{addr}/hook"),
            addr,
            state,
        }
    }

    fn trusted(&self) -> std::sync::MutexGuard<'_, Vec<SigningSecret>> {
        self.state.trusted.lock().unwrap()
    }

    /// Answers these next, after what is scripted already.
    pub fn then(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.script.lock().unwrap().extend(replies);
    }

    pub fn requests(&self) -> Vec<Received> {
        self.state.requests.lock().unwrap().clone()
    }

    /// The most requests it was answering at once.
    pub fn most_in_flight(&self) -> usize {
        self.state.most_in_flight.load(Ordering::SeqCst)
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
    let verified = {
        let trusted = state.trusted.lock().unwrap();
        trusted.is_empty()
            || trusted
                .iter()
                .any(|secret| verify_headers(secret, &headers, &body, Utc::now()).is_ok())
    };
    if !verified {
        return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
    }
    let reply = state.script.lock().unwrap().pop_front();
    let reply = reply.unwrap_or_else(|| Reply::status(200).body("ok").delay(state.delay));
    let now_in_flight = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state
        .most_in_flight
        .fetch_max(now_in_flight, Ordering::SeqCst);
    tokio::time::sleep(reply.delay).await;
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    let status = StatusCode::from_u16(reply.status).expect("a valid status");
    let mut response = (status, reply.body).into_response();
    for (name, value) in reply.headers {
        response
            .headers_mut()
            .insert(name, value.parse().expect("a valid header value"));
    }
    response
}
