//! The HTTP surface: routes, bearer check and fault injection. Each request takes the state lock
//! once, briefly, and answers with prepared bytes.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State as AxumState};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use super::oauth;
use super::response::{json_response, ApiError};
use super::shared::{Counter, Shared};
use super::state::{Answer, Fault, State};
use crate::instacart::models::SendMessageRequest;

/// Longest accepted message body, in characters (seed 002).
const MAX_BODY_CHARS: usize = 1000;

/// The common path of the post-checkout endpoints: count, check the bearer, draw a fault,
/// run `handler` under the lock, then wait out an injected delay with the lock released.
async fn serve(
    shared: &Shared,
    endpoint: Counter,
    headers: &HeaderMap,
    handler: impl FnOnce(&mut State, Instant, Answer) -> Result<Bytes, ApiError>,
) -> Response {
    shared.counters.add(endpoint);
    let now = Instant::now();
    let token = bearer(headers);
    let static_token = token.is_some_and(|t| shared.credentials.is_static_token(t));
    let (result, fault, delay) = {
        let mut state = shared.lock();
        if !static_token && !token.is_some_and(|t| state.token_is_valid(t, now)) {
            drop(state);
            shared.counters.add(Counter::Unauthorized);
            return shared.errors.refuse(ApiError::Unauthorized);
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
        shared.counters.add(Counter::Delayed);
        tokio::time::sleep(delay).await;
    }
    match (result, fault) {
        // The request took effect; only its answer arrives cut short.
        (Ok(json), Some(Fault::Malformed)) => {
            shared.counters.add(Counter::Malformed);
            json_response(StatusCode::OK, json.slice(..json.len() / 2))
        }
        (Ok(json), _) => json_response(StatusCode::OK, json),
        (Err(error), _) => {
            match error {
                ApiError::RateLimited => shared.counters.add(Counter::RateLimited),
                ApiError::Unavailable => shared.counters.add(Counter::Unavailable),
                _ => {}
            }
            shared.errors.refuse(error)
        }
    }
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
    serve(
        &shared,
        Counter::OrderMessages,
        &headers,
        |state, now, answer| state.order_messages(&order_id, now, answer),
    )
    .await
}

#[tracing::instrument(level = "debug", skip_all, fields(order_id = %order_id))]
async fn chat_messages(
    AxumState(shared): SharedState,
    Path(order_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    serve(
        &shared,
        Counter::ChatMessages,
        &headers,
        |state, now, answer| state.chat_messages(&order_id, now, answer),
    )
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
    serve(&shared, Counter::SendMessage, &headers, |state, now, _| {
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
    serve(&shared, Counter::MarkRead, &headers, |state, now, _| {
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
    use axum::http::HeaderValue;

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
