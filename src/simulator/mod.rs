//! A built-in fake of the Instacart Connect API (OAuth token + the four post-checkout chat
//! endpoints), used by `shopper-bridge simulate`, the demo, tests and the benchmark.
//!
//! It answers with the seed pages' payloads and errors, serialized through the typed models in
//! [`crate::instacart::models`]: order `122233` is the seed example itself, other orders carry
//! plausible made-up people and messages. New messages can be added in process through a
//! [`SimulatorHandle`] or appear over time, and faults (429, 503, truncated JSON, delays) can be
//! injected at chosen rates.

mod data;
mod http;
mod oauth;
mod response;
mod shared;
mod state;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::domain::{OrderId, ValidationError};
use crate::instacart::models::{ChatMessage, LifecycleMessage};
use shared::Shared;

#[derive(Clone)]
pub struct SimulatorConfig {
    /// Order ids served from the start.
    pub orders: Vec<String>,
    /// When set, a new chat or lifecycle message appears on a random order this often.
    pub message_interval: Option<Duration>,
    /// When set, an order expires this long after the simulator created it: `is_expired`
    /// turns true and its chat messages are gone.
    pub expire_after: Option<Duration>,
    /// Accepted by `POST /v2/oauth/token`.
    pub client_id: String,
    pub client_secret: String,
    /// Always accepted as a bearer token, beside the tokens the OAuth endpoint issues.
    pub static_token: Option<String>,
    /// Lifetime of issued tokens, in seconds.
    pub token_expires_in: u64,
    pub faults: Faults,
    /// Makes ids, generated people and the message generator deterministic.
    pub seed: Option<u64>,
    /// Records when each chat message is created and first served, and the gaps between an
    /// order's answers, for [`SimulatorHandle::take_timings`] (the benchmark's view).
    pub record_message_timings: bool,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        Self {
            orders: ["122233", "122245", "122258", "122271"]
                .map(str::to_owned)
                .to_vec(),
            message_interval: None,
            expire_after: None,
            client_id: "simulator-client".to_owned(),
            client_secret: "simulator-secret".to_owned(),
            static_token: None,
            token_expires_in: 86_400,
            faults: Faults::default(),
            seed: None,
            record_message_timings: false,
        }
    }
}

/// Secrets stay out of logs.
impl fmt::Debug for SimulatorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimulatorConfig")
            .field("orders", &self.orders)
            .field("message_interval", &self.message_interval)
            .field("expire_after", &self.expire_after)
            .field("client_id", &self.client_id)
            .field("client_secret", &"***")
            .field("static_token", &self.static_token.as_ref().map(|_| "***"))
            .field("token_expires_in", &self.token_expires_in)
            .field("faults", &self.faults)
            .field("seed", &self.seed)
            .field("record_message_timings", &self.record_message_timings)
            .finish()
    }
}

impl SimulatorConfig {
    fn validate(&self) -> Result<(), SimulatorConfigError> {
        for order in &self.orders {
            OrderId::parse("orders", order)?;
        }
        if self.message_interval.is_some_and(|d| d.is_zero()) {
            return Err(SimulatorConfigError::ZeroMessageInterval);
        }
        self.faults.validate()
    }
}

/// Injected failures of the post-checkout endpoints. `rate_429`, `rate_5xx` and
/// `rate_malformed` are shares of all requests (0..1, together at most 1) and never overlap;
/// `rate_delay` is drawn separately and holds the answer back by `delay`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    /// 429 with `Retry-After: 1`; the request has no effect.
    pub rate_429: f64,
    /// 503; the request has no effect.
    pub rate_5xx: f64,
    /// 200 with the answer's JSON cut in half; the request does take effect.
    pub rate_malformed: f64,
    pub delay: Option<Duration>,
    pub rate_delay: f64,
}

impl Faults {
    fn validate(&self) -> Result<(), SimulatorConfigError> {
        for (name, rate) in [
            ("rate_429", self.rate_429),
            ("rate_5xx", self.rate_5xx),
            ("rate_malformed", self.rate_malformed),
            ("rate_delay", self.rate_delay),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(SimulatorConfigError::RateOutOfRange { name, rate });
            }
        }
        let shares = self.rate_429 + self.rate_5xx + self.rate_malformed;
        if shares > 1.0 {
            return Err(SimulatorConfigError::SharesExceedOne(shares));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimulatorConfigError {
    #[error(transparent)]
    OrderId(#[from] ValidationError),
    #[error("message_interval must be greater than zero")]
    ZeroMessageInterval,
    #[error("fault rate `{name}` must be between 0.0 and 1.0, got {rate}")]
    RateOutOfRange { name: &'static str, rate: f64 },
    #[error("rate_429 + rate_5xx + rate_malformed must not exceed 1.0, got {0}")]
    SharesExceedOne(f64),
}

/// How `order_messages` refuses an order, so a client's fallback to the chat endpoint (which
/// keeps answering) can be exercised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderMessagesFailure {
    /// 400 `User ID not found` (4001): the order was not created with Fulfillment v3.
    UserIdNotFound,
    /// 403 `Shopper PII`: the retailer has shopper information removed.
    ShopperPii,
}

/// Requests served per endpoint and faults injected, since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SimulatorStats {
    pub token_requests: u64,
    pub order_messages_requests: u64,
    pub chat_messages_requests: u64,
    pub send_message_requests: u64,
    pub mark_read_requests: u64,
    /// Post-checkout requests refused for a missing, unknown or expired bearer token.
    pub unauthorized: u64,
    pub injected_429: u64,
    pub injected_503: u64,
    pub injected_malformed: u64,
    pub injected_delays: u64,
}

/// One chat message's way out: when it was created and when a whole `order_messages` or
/// `chat_messages` answer first carried it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageTiming {
    pub message_id: i64,
    pub created: Instant,
    pub first_served: Instant,
}

/// What the simulator recorded since the last [`SimulatorHandle::take_timings`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timings {
    /// Messages first served in that time, in serving order.
    pub served: Vec<MessageTiming>,
    /// For each whole answer about an order answered before: the time since the previous one.
    pub poll_gaps: Vec<Duration>,
}

/// Built and bound, not yet serving.
pub struct Simulator {
    listener: TcpListener,
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    message_interval: Option<Duration>,
}

impl Simulator {
    /// Validates `config` (an invalid one is an `InvalidInput` error wrapping a
    /// [`SimulatorConfigError`]) and binds `listen`; port 0 picks a free port.
    #[tracing::instrument(skip_all, fields(%listen))]
    pub async fn build(config: SimulatorConfig, listen: SocketAddr) -> io::Result<Simulator> {
        config
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let listener = TcpListener::bind(listen).await?;
        let local_addr = listener.local_addr()?;
        Ok(Simulator {
            listener,
            local_addr,
            shared: Arc::new(Shared::new(&config)),
            message_interval: config.message_interval,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn handle(&self) -> SimulatorHandle {
        SimulatorHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Serves until `cancel` fires, running the message generator when configured.
    #[tracing::instrument(skip_all, fields(addr = %self.local_addr))]
    pub async fn run_until_stopped(self, cancel: CancellationToken) -> io::Result<()> {
        tracing::info!("simulated Instacart Connect API listening");
        let generator_stop = cancel.child_token();
        let generator = self.message_interval.map(|period| {
            tokio::spawn(generate_messages(
                self.handle(),
                period,
                generator_stop.clone(),
            ))
        });
        let served = axum::serve(self.listener, http::router(self.shared))
            .with_graceful_shutdown(cancel.cancelled_owned())
            .await;
        generator_stop.cancel();
        if let Some(generator) = generator {
            generator.await.map_err(io::Error::other)?;
        }
        served
    }
}

/// The background generator: one [`SimulatorHandle::tick`] per period.
async fn generate_messages(handle: SimulatorHandle, period: Duration, stop: CancellationToken) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticks.tick() => handle.tick(),
        }
    }
}

/// In-process control of a running simulator. Methods taking an order id add the order first
/// when it is unknown, except [`expire`](Self::expire) and [`shopper_reads`](Self::shopper_reads).
#[derive(Clone)]
pub struct SimulatorHandle {
    shared: Arc<Shared>,
}

impl SimulatorHandle {
    /// Serves `order_id` from now on, with made-up participants, a shopper's greeting and a first
    /// notification.
    pub fn add_order(&self, order_id: &str) {
        self.shared.lock().add_order(order_id);
    }

    /// A message from the order's current shopper (driver) to the customer (user), unread.
    pub fn add_chat_message(&self, order_id: &str, body: &str) -> ChatMessage {
        self.shared.lock().add_chat_message(order_id, body)
    }

    /// Orders with made-up participants and no messages at all, under one lock: a first poll
    /// finds nothing to announce. Existing orders are left as they are.
    pub fn add_empty_orders<S: AsRef<str>>(&self, order_ids: &[S]) {
        let mut state = self.shared.lock();
        for order_id in order_ids {
            state.add_empty_order(order_id.as_ref());
        }
    }

    /// [`add_chat_message`](Self::add_chat_message) for each `(order_id, body)`, under one lock,
    /// so they appear to clients at once.
    pub fn add_chat_messages(&self, messages: &[(&str, &str)]) -> Vec<ChatMessage> {
        let mut state = self.shared.lock();
        messages
            .iter()
            .map(|(order_id, body)| state.add_chat_message(order_id, body))
            .collect()
    }

    /// An SMS notification to the customer.
    pub fn add_lifecycle_message(&self, order_id: &str, body: &str) -> LifecycleMessage {
        self.shared.lock().add_lifecycle_message(order_id, body)
    }

    /// Marks the order expired now: `is_expired` turns true and its chat messages are gone.
    pub fn expire(&self, order_id: &str) {
        self.shared.lock().expire(order_id);
    }

    /// Makes `order_messages` refuse this order (`None` restores it); the chat endpoint still
    /// answers.
    pub fn set_order_messages_failure(
        &self,
        order_id: &str,
        failure: Option<OrderMessagesFailure>,
    ) {
        self.shared.lock().set_failure(order_id, failure);
    }

    /// The shopper reads the customer's unread messages; returns how many turned read.
    pub fn shopper_reads(&self, order_id: &str) -> usize {
        self.shared.lock().shopper_reads(order_id)
    }

    /// Replaces the fault rates of a running simulator.
    pub fn set_faults(&self, faults: Faults) -> Result<(), SimulatorConfigError> {
        faults.validate()?;
        self.shared.lock().set_faults(faults);
        Ok(())
    }

    /// One step of the background generator on a random unexpired order: the shopper reads the
    /// customer's unread messages if any, otherwise writes a line or a notification goes out.
    /// Deterministic given the configured seed.
    pub fn tick(&self) {
        self.shared.lock().tick(Instant::now());
    }

    pub fn stats(&self) -> SimulatorStats {
        self.shared.counters.snapshot()
    }

    /// How many orders have had at least one whole `order_messages` or `chat_messages` answer.
    pub fn orders_served(&self) -> usize {
        self.shared.lock().orders_served()
    }

    /// Takes what was recorded since the last call; empty unless `record_message_timings`.
    pub fn take_timings(&self) -> Timings {
        self.shared.lock().take_timings()
    }
}
