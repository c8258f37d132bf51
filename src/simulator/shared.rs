//! What every request shares: the state behind its lock, the counters and the credentials.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use subtle::ConstantTimeEq;

use super::response::ErrorBodies;
use super::state::State;
use super::{SimulatorConfig, SimulatorStats};

/// What [`SimulatorStats`] reports; the discriminant indexes [`Counters`].
#[derive(Debug, Clone, Copy)]
pub(super) enum Counter {
    Token,
    OrderMessages,
    ChatMessages,
    SendMessage,
    MarkRead,
    Unauthorized,
    RateLimited,
    Unavailable,
    Malformed,
    Delayed,
}

/// Lock-free, so counting never adds to the state lock.
#[derive(Default)]
pub(super) struct Counters([AtomicU64; 10]);

impl Counters {
    pub(super) fn add(&self, counter: Counter) {
        self.0[counter as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self, counter: Counter) -> u64 {
        self.0[counter as usize].load(Ordering::Relaxed)
    }

    pub(super) fn snapshot(&self) -> SimulatorStats {
        SimulatorStats {
            token_requests: self.get(Counter::Token),
            order_messages_requests: self.get(Counter::OrderMessages),
            chat_messages_requests: self.get(Counter::ChatMessages),
            send_message_requests: self.get(Counter::SendMessage),
            mark_read_requests: self.get(Counter::MarkRead),
            unauthorized: self.get(Counter::Unauthorized),
            injected_429: self.get(Counter::RateLimited),
            injected_503: self.get(Counter::Unavailable),
            injected_malformed: self.get(Counter::Malformed),
            injected_delays: self.get(Counter::Delayed),
        }
    }
}

/// Who may ask for tokens and which bearer is always accepted.
pub(super) struct Credentials {
    pub(super) client_id: String,
    client_secret: String,
    static_token: Option<String>,
    pub(super) token_lifetime: Duration,
}

impl Credentials {
    pub(super) fn client_matches(&self, client_id: &str, client_secret: &str) -> bool {
        bool::from(
            client_id.as_bytes().ct_eq(self.client_id.as_bytes())
                & client_secret
                    .as_bytes()
                    .ct_eq(self.client_secret.as_bytes()),
        )
    }

    pub(super) fn is_static_token(&self, token: &str) -> bool {
        self.static_token
            .as_ref()
            .is_some_and(|t| bool::from(t.as_bytes().ct_eq(token.as_bytes())))
    }
}

pub(super) struct Shared {
    state: Mutex<State>,
    pub(super) counters: Counters,
    pub(super) credentials: Credentials,
    pub(super) errors: ErrorBodies,
}

impl Shared {
    pub(super) fn new(config: &SimulatorConfig) -> Self {
        Self {
            state: Mutex::new(State::new(
                &config.orders,
                config.seed,
                config.faults,
                config.expire_after,
                config.record_message_timings,
            )),
            counters: Counters::default(),
            credentials: Credentials {
                client_id: config.client_id.clone(),
                client_secret: config.client_secret.clone(),
                static_token: config.static_token.clone(),
                token_lifetime: Duration::from_secs(config.token_expires_in),
            },
            errors: ErrorBodies::new(),
        }
    }

    /// A panic while holding the lock cannot leave an order half-written in a way that matters
    /// to a fake server, so a poisoned lock is used as is.
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
