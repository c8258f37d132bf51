//! Slack's callbacks, for two-way Slack: `POST /slack/events` (the Events API: a person's reply
//! in an order's thread goes to the order's shopper) and `POST /slack/interactions` (the
//! "Mark as read" button). Mounted only with `slack.signing_secret`; every request must carry
//! Slack's signature over its raw body (see [`signature`]), not the admin token.
//!
//! Slack wants an answer within 3 seconds, and Connect may take longer (its timeout, a token to
//! fetch), so the work runs in a task of its own: the handler waits for it up to
//! [`ACK_BUDGET`] and answers then, whether or not it is done; the task carries on and reports
//! in Slack (a reply in the thread, an update of the message). An event acted on is recorded
//! before its task starts, so a retry of Slack's never repeats it: a crash in between loses the
//! reply rather than risk sending it twice, and the missing answer in the thread shows it.

mod events;
mod interactions;
pub mod signature;

pub use signature::{SignatureError, HEADER_SIGNATURE, HEADER_TIMESTAMP};

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::Utc;
use secrecy::ExposeSecret;
use std::future::Future;
use std::time::Duration;
use tracing::Instrument;

use super::error::{ErrorBody, ErrorItem};
use super::AppState;
use crate::domain::ValidationError;
use crate::instacart::InstacartError;
use crate::store::StoreError;
use crate::talkback::TalkbackError;
use crate::telemetry::error_chain;

/// How long a handler waits for its work before answering Slack (which gives up after 3 s).
pub const ACK_BUDGET: Duration = Duration::from_secs(2);

/// `/slack/events` and `/slack/interactions`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/slack/events", post(events::receive))
        .route("/slack/interactions", post(interactions::receive))
}

/// Why a Slack callback was refused. Slack only reads the status; the body is for whoever
/// debugs the app's setup.
#[derive(Debug, thiserror::Error)]
pub enum SlackError {
    #[error("not signed by the configured Slack app: {0}")]
    Signature(#[from] SignatureError),
    #[error("the body is not a Slack payload")]
    Malformed(#[source] serde_json::Error),
    #[error("the form has no `payload` field")]
    NoPayload,
    #[error("{0}")]
    InvalidValue(ValidationError),
    #[error("internal error")]
    Store(#[from] StoreError),
}

impl IntoResponse for SlackError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            SlackError::Signature(_) => (StatusCode::UNAUTHORIZED, "invalid_signature"),
            SlackError::Malformed(_) | SlackError::NoPayload | SlackError::InvalidValue(_) => {
                (StatusCode::BAD_REQUEST, "invalid_request")
            }
            // A 5xx makes Slack retry the event later, which is what a store failure needs.
            SlackError::Store(source) => {
                tracing::error!(error = %error_chain(source), "Slack callback failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
            }
        };
        if status == StatusCode::UNAUTHORIZED {
            tracing::warn!(reason = %self, "refused an unsigned Slack callback");
        }
        let body = ErrorBody {
            errors: vec![ErrorItem {
                code,
                message: self.to_string(),
                field: None,
            }],
        };
        (status, Json(body)).into_response()
    }
}

/// Checks Slack's signature of `body` with the configured signing secret.
fn verify(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<(), SlackError> {
    // The routes are only mounted with a secret; without one nothing could be verified.
    let secret = state
        .settings
        .slack
        .signing_secret
        .as_ref()
        .ok_or(SlackError::Signature(SignatureError::Mismatch))?;
    signature::verify(
        secret.expose_secret().as_bytes(),
        headers,
        body,
        Utc::now().timestamp(),
    )?;
    Ok(())
}

/// Runs `work` in a task of its own and waits for it up to [`ACK_BUDGET`]; past that the task
/// carries on unwaited.
async fn within_ack_budget(work: impl Future<Output = ()> + Send + 'static) {
    let task = tokio::spawn(work.in_current_span());
    match tokio::time::timeout(ACK_BUDGET, task).await {
        Ok(Ok(())) => {}
        Ok(Err(failed)) => tracing::error!(error = %failed, "Slack callback task failed"),
        Err(_) => tracing::info!("answering Slack before the work is done; it carries on"),
    }
}

/// Why a person's request from Slack was not carried out, in words for that person.
#[derive(Debug, thiserror::Error)]
enum ActionError {
    /// Connect's own rule and wording: "can't be blank", "is too long (maximum is ...)".
    #[error("the message {}", .0.rule)]
    InvalidMessage(ValidationError),
    #[error("the bridge could not read the order (an operator can find the cause in its log)")]
    Store(#[from] StoreError),
    #[error("{}", plain_words(.0))]
    Upstream(#[from] InstacartError),
    /// Not from Slack, whose requests never name a user: kept for completeness of the mapping.
    #[error("{0}")]
    Conflict(String),
}

impl From<TalkbackError> for ActionError {
    fn from(error: TalkbackError) -> Self {
        match error {
            TalkbackError::IdentityConflict(message) => ActionError::Conflict(message),
            TalkbackError::Store(error) => ActionError::Store(error),
            TalkbackError::Upstream(error) => ActionError::Upstream(error),
        }
    }
}

impl ActionError {
    /// Logs what an operator should know about.
    fn log(&self) {
        match self {
            ActionError::Store(source) => {
                tracing::error!(error = %error_chain(source), "could not read the order");
            }
            // Connect's documented answers about the order: the person was told, nothing to fix.
            ActionError::Upstream(
                source @ (InstacartError::MessagingNotAllowed { .. }
                | InstacartError::ShopperPiiRedacted
                | InstacartError::UserIdNotFound
                | InstacartError::NotFound
                | InstacartError::BodyTooLong { .. }),
            ) => {
                tracing::info!(error = %source, "Instacart refused the call");
            }
            ActionError::Upstream(source) => {
                tracing::warn!(error = %error_chain(source), "Instacart call failed");
            }
            ActionError::InvalidMessage(_) | ActionError::Conflict(_) => {}
        }
    }
}

/// A failed Connect call as store staff should read it: what happened and what to do, never a
/// credential or an upstream text.
fn plain_words(error: &InstacartError) -> &'static str {
    match error {
        InstacartError::MessagingNotAllowed { .. } => {
            "Instacart does not allow messages for this order right now (chat disabled or no \
             shopper available)"
        }
        InstacartError::ShopperPiiRedacted => {
            "Instacart withholds the shopper chat for this retailer (shopper PII is redacted)"
        }
        InstacartError::UserIdNotFound => {
            "Instacart wants the order's user id; watch the order again with its user_id"
        }
        InstacartError::NotFound => "Instacart does not know this order",
        InstacartError::BodyTooLong { .. } => {
            "the message is too long (maximum is 1000 characters)"
        }
        InstacartError::RateLimited { .. } => {
            "Instacart's rate limit was reached; try again in a minute"
        }
        InstacartError::Auth(inner) if inner.is_retryable() => plain_words(inner),
        InstacartError::Unauthorized | InstacartError::Auth(_) => {
            "Instacart refused the bridge's credentials; an operator needs to check its settings"
        }
        InstacartError::Server { .. }
        | InstacartError::Timeout
        | InstacartError::Transport(_)
        | InstacartError::MalformedBody { .. } => {
            "Instacart is not answering properly right now; try again later"
        }
        InstacartError::Unexpected { .. }
        | InstacartError::InvalidBaseUrl { .. }
        | InstacartError::HttpClient(_) => {
            "the Instacart call failed unexpectedly (an operator can find the cause in the \
             bridge's log)"
        }
    }
}

/// `<@U123>` for a Slack user id; anything else is not put into mrkdwn.
fn mention(user_id: Option<&str>) -> String {
    match user_id {
        Some(id) if !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()) => {
            format!("<@{id}>")
        }
        _ => "someone".to_owned(),
    }
}
