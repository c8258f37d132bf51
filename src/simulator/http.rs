//! The HTTP surface: routes, bearer check, fault injection and the error envelopes of the seed
//! pages. Each request takes the state lock once, briefly, and answers with prepared bytes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State as AxumState};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use subtle::ConstantTimeEq;

use super::oauth;
use super::state::{to_json, Answer, Fault, State};
use super::{SimulatorConfig, SimulatorStats};
use crate::instacart::models::{ErrorBody, ErrorEnvelope, SendMessageRequest};

/// Longest accepted message body, in characters (seed 002).
const MAX_BODY_CHARS: usize = 1000;

/// Why a request is refused. The discriminant indexes the prepared answer bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ApiError {
    NotFound,
    UserIdNotFound,
    ShopperPii,
    SendingNotAllowed,
    BodyBlank,
    BodyTooLong,
    Unauthorized,
    RateLimited,
    Unavailable,
}

impl ApiError {
    const ALL: [ApiError; 9] = [
        ApiError::NotFound,
        ApiError::UserIdNotFound,
        ApiError::ShopperPii,
        ApiError::SendingNotAllowed,
        ApiError::BodyBlank,
        ApiError::BodyTooLong,
        ApiError::Unauthorized,
        ApiError::RateLimited,
        ApiError::Unavailable,
    ];

    fn status(self) -> StatusCode {
        match self {
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::UserIdNotFound | ApiError::BodyBlank | ApiError::BodyTooLong => {
                StatusCode::BAD_REQUEST
            }
            ApiError::ShopperPii | ApiError::SendingNotAllowed => StatusCode::FORBIDDEN,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Messages and codes as the seed pages list them; the 401/429/503 wording follows the
    /// Connect status-code table, which gives no payload for them.
    fn envelope(self) -> ErrorEnvelope {
        match self {
            ApiError::NotFound => single("Resource not found", Some(4000)),
            ApiError::UserIdNotFound => single("User ID not found", Some(4001)),
            ApiError::ShopperPii => single("Shopper PII", None),
            ApiError::SendingNotAllowed => {
                single("Sending a message is not allowed at this time", None)
            }
            ApiError::BodyBlank => invalid_body("can't be blank"),
            ApiError::BodyTooLong => invalid_body("is too long (maximum is 1000 characters)"),
            ApiError::Unauthorized => single("Unauthorized", None),
            ApiError::RateLimited => single("Too many requests", None),
            ApiError::Unavailable => single("Service unavailable", None),
        }
    }
}

fn single(message: &str, code: Option<i64>) -> ErrorEnvelope {
    ErrorEnvelope {
        error: ErrorBody {
            message: message.to_owned(),
            code,
            errors: Vec::new(),
        },
        meta: Some(serde_json::json!({})),
    }
}

/// The multiple-errors form (outer code 9999) with one validation error on `body`.
fn invalid_body(message: &str) -> ErrorEnvelope {
    ErrorEnvelope {
        error: ErrorBody {
            message: "There were issues with your request".to_owned(),
            code: Some(9999),
            errors: vec![ErrorEnvelope {
                error: ErrorBody {
                    message: message.to_owned(),
                    code: Some(1001),
                    errors: Vec::new(),
                },
                meta: Some(serde_json::json!({ "key": "body" })),
            }],
        },
        meta: None,
    }
}

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

    fn is_static_token(&self, token: &str) -> bool {
        self.static_token
            .as_ref()
            .is_some_and(|t| bool::from(t.as_bytes().ct_eq(token.as_bytes())))
    }
}

pub(super) struct Shared {
    state: Mutex<State>,
    pub(super) counters: Counters,
    pub(super) credentials: Credentials,
    /// Error bodies, serialized once, indexed by [`ApiError`].
    errors: Vec<Bytes>,
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
            errors: ApiError::ALL.map(|e| to_json(&e.envelope())).to_vec(),
        }
    }

    /// A panic while holding the lock cannot leave an order half-written in a way that matters
    /// to a fake server, so a poisoned lock is used as is.
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The common path of the post-checkout endpoints: count, check the bearer, draw a fault,
    /// run `handler` under the lock, then wait out an injected delay with the lock released.
    async fn serve(
        &self,
        endpoint: Counter,
        headers: &HeaderMap,
        handler: impl FnOnce(&mut State, Instant, Answer) -> Result<Bytes, ApiError>,
    ) -> Response {
        self.counters.add(endpoint);
        let now = Instant::now();
        let token = bearer(headers);
        let static_token = token.is_some_and(|t| self.credentials.is_static_token(t));
        let (result, fault, delay) = {
            let mut state = self.lock();
            if !static_token && !token.is_some_and(|t| state.token_is_valid(t, now)) {
                drop(state);
                self.counters.add(Counter::Unauthorized);
                return self.refuse(ApiError::Unauthorized);
            }
            let (fault, delay) = state.draw_fault();
            let result = match fault {
                None => handler(&mut state, now, Answer::Complete),
                Some(Fault::RateLimited) => Err(ApiError::RateLimited),
                Some(Fault::Unavailable) => Err(ApiError::Unavailable),
                Some(Fault::Malformed) => handler(&mut state, now, Answer::Cut),
            };
            (result, fault, delay)
        };
        if let Some(delay) = delay {
            self.counters.add(Counter::Delayed);
            tokio::time::sleep(delay).await;
        }
        match (result, fault) {
            // The request took effect; only its answer arrives cut short.
            (Ok(json), Some(Fault::Malformed)) => {
                self.counters.add(Counter::Malformed);
                json_response(StatusCode::OK, json.slice(..json.len() / 2))
            }
            (Ok(json), _) => json_response(StatusCode::OK, json),
            (Err(error), _) => {
                match error {
                    ApiError::RateLimited => self.counters.add(Counter::RateLimited),
                    ApiError::Unavailable => self.counters.add(Counter::Unavailable),
                    _ => {}
                }
                self.refuse(error)
            }
        }
    }

    fn refuse(&self, error: ApiError) -> Response {
        let mut response = json_response(error.status(), self.errors[error as usize].clone());
        let headers = response.headers_mut();
        match error {
            ApiError::RateLimited => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::Unauthorized => {
                headers.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                );
            }
            _ => {}
        }
        response
    }
}

pub(super) fn json_response(status: StatusCode, body: Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v2/oauth/token", post(oauth::issue_token))
        .route(
            "/v2/post_checkout/orders/{order_id}/order_messages",
            get(order_messages),
        )
        .route(
            "/v2/post_checkout/chat/{order_id}/messages",
            get(chat_messages).post(send_message).put(mark_read),
        )
        .with_state(shared)
}

type SharedState = AxumState<Arc<Shared>>;

#[tracing::instrument(level = "debug", skip_all, fields(order_id = %order_id))]
async fn order_messages(
    AxumState(shared): SharedState,
    Path(order_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    shared
        .serve(Counter::OrderMessages, &headers, |state, now, answer| {
            state.order_messages(&order_id, now, answer)
        })
        .await
}

#[tracing::instrument(level = "debug", skip_all, fields(order_id = %order_id))]
async fn chat_messages(
    AxumState(shared): SharedState,
    Path(order_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    shared
        .serve(Counter::ChatMessages, &headers, |state, now, answer| {
            state.chat_messages(&order_id, now, answer)
        })
        .await
}

#[tracing::instrument(level = "debug", skip_all, fields(order_id = %order_id))]
async fn send_message(
    AxumState(shared): SharedState,
    Path(order_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Validated before taking the lock; an unknown order still answers 404 first.
    let message = validate_message(&body);
    shared
        .serve(Counter::SendMessage, &headers, |state, now, _| {
            state.send_message(&order_id, message, now)
        })
        .await
}

#[tracing::instrument(level = "debug", skip_all, fields(order_id = %order_id))]
async fn mark_read(
    AxumState(shared): SharedState,
    Path(order_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    shared
        .serve(Counter::MarkRead, &headers, |state, now, _| {
            state.mark_read(&order_id, now)
        })
        .await
}

/// A missing or unreadable body counts as blank; length is counted in characters, not bytes.
fn validate_message(raw: &[u8]) -> Result<String, ApiError> {
    let body = serde_json::from_slice::<SendMessageRequest>(raw)
        .map(|request| request.body)
        .unwrap_or_default();
    if body.trim().is_empty() {
        Err(ApiError::BodyBlank)
    } else if body.chars().count() > MAX_BODY_CHARS {
        Err(ApiError::BodyTooLong)
    } else {
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepared_error_bodies_line_up_with_their_errors() {
        for (index, error) in ApiError::ALL.into_iter().enumerate() {
            assert_eq!(error as usize, index, "{error:?} out of place in ALL");
        }
    }

    #[test]
    fn message_length_counts_characters_not_bytes() {
        let body = |n| format!(r#"{{"body":"{}"}}"#, "é".repeat(n));
        assert_eq!(validate_message(body(1000).as_bytes()).unwrap().len(), 2000);
        assert_eq!(
            validate_message(body(1001).as_bytes()),
            Err(ApiError::BodyTooLong)
        );
        assert_eq!(validate_message(b"{}"), Err(ApiError::BodyBlank));
        assert_eq!(validate_message(b"not json"), Err(ApiError::BodyBlank));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_token_required() {
        let headers = |value: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(AUTHORIZATION, HeaderValue::from_static(value));
            h
        };
        assert_eq!(bearer(&headers("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&headers("bearer abc")), Some("abc"));
        assert_eq!(bearer(&headers("Basic abc")), None);
        assert_eq!(bearer(&headers("Bearer ")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }
}
