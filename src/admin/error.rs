//! The one error type of the admin API and its JSON shape, `{"errors":[{"code","message"}]}`
//! (the shape HelpCrunch's REST API uses). Unexpected failures are logged with their cause chain
//! and answered with an opaque 500: nothing internal, and never a secret, reaches a body.
//! Failures of Connect calls keep their cause in the code (`upstream_*`, `messaging_not_allowed`)
//! and answer 4xx when the caller can act on them, 502 when only an operator can.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::ValidationError;
use crate::instacart::InstacartError;
use crate::store::StoreError;
use crate::talkback::TalkbackError;
use crate::telemetry::error_chain;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request could not be read: malformed JSON, an unexpected field, a bad query string.
    #[error("{message}")]
    InvalidRequest { status: StatusCode, message: String },
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("{resource} `{id}` was not found")]
    NotFound { resource: &'static str, id: String },
    #[error("no route for {method} {path}")]
    RouteNotFound { method: String, path: String },
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    /// Well-formed, but values broke the rules; every broken rule is reported.
    #[error("invalid fields")]
    Invalid(Vec<ValidationError>),
    /// A chat message Connect would refuse (or did): its status, code and wording are Connect's.
    #[error("{0}")]
    InvalidMessage(ValidationError),
    /// A Connect call failed; see [`UpstreamReply`] for the answer.
    #[error("the Instacart call failed")]
    Upstream(#[source] InstacartError),
    /// The store is not answering (health check).
    #[error("the store is not answering")]
    Unavailable(#[source] StoreError),
    #[error("internal error")]
    Internal(#[from] StoreError),
}

impl From<ValidationError> for ApiError {
    fn from(error: ValidationError) -> Self {
        ApiError::Invalid(vec![error])
    }
}

impl From<TalkbackError> for ApiError {
    fn from(error: TalkbackError) -> Self {
        match error {
            TalkbackError::IdentityConflict(message) => ApiError::Conflict(message),
            TalkbackError::Store(error) => ApiError::Internal(error),
            TalkbackError::Upstream(error) => ApiError::Upstream(error),
        }
    }
}

impl From<InstacartError> for ApiError {
    fn from(error: InstacartError) -> Self {
        ApiError::Upstream(error)
    }
}

/// Connect's code for an invalid message body, passed on as is.
const INVALID_MESSAGE_CODE: &str = "1001";

/// How a failed Connect call is answered.
struct UpstreamReply {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<&'static str>,
    /// Worth an operator's attention: logged with the cause chain.
    unexpected: bool,
}

impl UpstreamReply {
    fn of(error: &InstacartError) -> Self {
        let reply = |status, code, message: &str| Self {
            status,
            code,
            message: message.to_owned(),
            field: None,
            unexpected: status.is_server_error(),
        };
        match error {
            InstacartError::MessagingNotAllowed { message } => reply(
                StatusCode::CONFLICT,
                "messaging_not_allowed",
                &format!(
                    "Instacart refused: \"{message}\" (chat is disabled for this order or no \
                     shopper is available)"
                ),
            ),
            InstacartError::ShopperPiiRedacted => reply(
                StatusCode::CONFLICT,
                "shopper_pii_redacted",
                "Instacart refused: it withholds shopper data for this retailer (\"Shopper PII\"), \
                 so the shopper chat is not available",
            ),
            InstacartError::UserIdNotFound => reply(
                StatusCode::CONFLICT,
                "upstream_user_id_not_found",
                "Instacart refused: the order was placed with a user id (\"User ID not found\"); \
                 give `user_id`, or watch the order with its user_id",
            ),
            InstacartError::NotFound => reply(
                StatusCode::NOT_FOUND,
                "upstream_not_found",
                "Instacart does not know this order (or not for the user whose token was used)",
            ),
            // The same answer as the bridge's own check of the rule: Connect names the body, the
            // request's only field (`meta.key`).
            InstacartError::BodyTooLong { message } => Self {
                field: Some("body"),
                ..reply(StatusCode::BAD_REQUEST, INVALID_MESSAGE_CODE, message)
            },
            InstacartError::RateLimited { .. } => reply(
                StatusCode::TOO_MANY_REQUESTS,
                "upstream_rate_limited",
                "Instacart's rate limit was reached; try again later",
            ),
            // A token endpoint that may answer later is unavailable, not a credentials problem.
            InstacartError::Auth(inner) if inner.is_retryable() => Self::of(inner),
            // Fixed wording: an upstream description has no business in a body next to
            // credentials; the log has the cause.
            InstacartError::Unauthorized | InstacartError::Auth(_) => reply(
                StatusCode::BAD_GATEWAY,
                "upstream_auth_failed",
                "Instacart refused the bridge's credentials; check the instacart settings \
                 (the log has the cause)",
            ),
            InstacartError::Server { .. }
            | InstacartError::Timeout
            | InstacartError::Transport(_)
            | InstacartError::MalformedBody { .. } => reply(
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                &format!("{error}; try again later"),
            ),
            InstacartError::Unexpected { .. } => {
                reply(StatusCode::BAD_GATEWAY, "upstream_error", &error.to_string())
            }
            // Only `InstacartClient::new` fails so: the bridge's own fault, answered opaquely.
            InstacartError::InvalidBaseUrl { .. } | InstacartError::HttpClient(_) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "internal error",
            ),
        }
    }
}

/// `{"errors":[...]}`: the body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub errors: Vec<ErrorItem>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorItem {
    /// Stable, machine-readable: `invalid_request`, `unauthorized`, `not_found`,
    /// `route_not_found`, `method_not_allowed`, `conflict`, `invalid_field`, `unavailable`,
    /// `internal_error`; for chat messages Connect's own `1001` (invalid `body`); for Connect's
    /// answers `upstream_not_found`, `messaging_not_allowed`, `shopper_pii_redacted`,
    /// `upstream_user_id_not_found`, `upstream_rate_limited`, `upstream_auth_failed`,
    /// `upstream_unavailable`, `upstream_error`.
    #[schema(example = "invalid_field")]
    pub code: &'static str,
    #[schema(example = "`url` must use http or https")]
    pub message: String,
    /// The offending field, for `invalid_field`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "url")]
    pub field: Option<String>,
}

impl ErrorItem {
    fn new(code: &'static str, message: String) -> Self {
        Self {
            code,
            message,
            field: None,
        }
    }
}

impl ApiError {
    pub fn not_found(resource: &'static str, id: impl Into<String>) -> Self {
        ApiError::NotFound {
            resource,
            id: id.into(),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest { status, .. } => *status,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound { .. } | ApiError::RouteNotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::InvalidMessage(_) => StatusCode::BAD_REQUEST,
            ApiError::Upstream(error) => UpstreamReply::of(error).status,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest { .. } => "invalid_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::NotFound { .. } => "not_found",
            ApiError::RouteNotFound { .. } => "route_not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::Invalid(_) => "invalid_field",
            ApiError::InvalidMessage(_) => INVALID_MESSAGE_CODE,
            ApiError::Upstream(error) => UpstreamReply::of(error).code,
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal_error",
        }
    }

    fn items(&self) -> Vec<ErrorItem> {
        match self {
            ApiError::Invalid(problems) => problems
                .iter()
                .map(|p| ErrorItem {
                    code: self.code(),
                    message: p.to_string(),
                    field: Some(p.field.clone()),
                })
                .collect(),
            // Connect's wording alone, as Connect words it.
            ApiError::InvalidMessage(problem) => vec![ErrorItem {
                code: self.code(),
                message: problem.rule.clone(),
                field: Some(problem.field.clone()),
            }],
            ApiError::Upstream(error) => {
                let reply = UpstreamReply::of(error);
                vec![ErrorItem {
                    code: reply.code,
                    message: reply.message,
                    field: reply.field.map(str::to_owned),
                }]
            }
            // Display of these two is deliberately generic: the cause is only logged.
            other => vec![ErrorItem::new(other.code(), other.to_string())],
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Internal(source) => {
                tracing::error!(error = %error_chain(source), "request failed");
            }
            ApiError::Unavailable(source) => {
                tracing::warn!(error = %error_chain(source), "health check failed");
            }
            ApiError::Upstream(source) if UpstreamReply::of(source).unexpected => {
                tracing::warn!(error = %error_chain(source), "Instacart call failed");
            }
            ApiError::Upstream(source) => {
                tracing::info!(error = %source, "Instacart refused the call");
            }
            _ => {}
        }
        let status = self.status();
        let mut response = (
            status,
            Json(ErrorBody {
                errors: self.items(),
            }),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let ApiError::Upstream(source) = &self {
            // Connect's own wait, when it gave one: the caller's retry would hit the same limit.
            if let Some(wait) = source.retry_after().filter(|_| status.as_u16() == 429) {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs()));
            }
        }
        response
    }
}

// Rejections of the extractors in `extract`: axum's message says what was wrong (with the JSON
// path of the offending value); only the body shape and status codes are ours.
impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = match rejection {
            JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            JsonRejection::BytesRejection(ref r) => r.status(),
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::InvalidRequest {
            status,
            message: rejection.body_text(),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::InvalidRequest {
            status: StatusCode::BAD_REQUEST,
            message: rejection.body_text(),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::InvalidRequest {
            status: StatusCode::BAD_REQUEST,
            message: rejection.body_text(),
        }
    }
}

/// Gathers every broken rule of a request, so one response names them all. A value comes back
/// `None` exactly when its problem was recorded, so a caller can destructure all its checked
/// values and turn `Problems` into the error when any is missing.
#[derive(Debug, Default)]
pub struct Problems(Vec<ValidationError>);

impl Problems {
    /// Keeps the value, or records why it was refused.
    pub fn check<T>(&mut self, result: Result<T, ValidationError>) -> Option<T> {
        result.map_err(|e| self.0.push(e)).ok()
    }

    /// Checks every item, without stopping at the first refusal.
    pub fn check_each<T>(
        &mut self,
        results: impl IntoIterator<Item = Result<T, ValidationError>>,
    ) -> Option<Vec<T>> {
        let checked: Vec<Option<T>> = results.into_iter().map(|r| self.check(r)).collect();
        checked.into_iter().collect()
    }
}

/// Checks an optional field: `Some(None)` when absent, `Some(Some(v))` when present and valid,
/// `None` when present and refused.
pub fn when_present<T, U>(
    value: Option<T>,
    check: impl FnOnce(T) -> Option<U>,
) -> Option<Option<U>> {
    match value {
        None => Some(None),
        Some(value) => check(value).map(Some),
    }
}

impl From<Problems> for ApiError {
    fn from(problems: Problems) -> Self {
        ApiError::Invalid(problems.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn token_endpoint_failures_say_unavailable_when_passing_and_never_repeat_the_description() {
        let refused = InstacartError::Auth(Box::new(InstacartError::Unexpected {
            status: 400,
            code: None,
            message: "invalid_client: bridge-secret".to_owned(),
        }));
        let reply = UpstreamReply::of(&refused);
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
        assert_eq!(reply.code, "upstream_auth_failed");
        assert!(
            !reply.message.contains("bridge-secret"),
            "{}",
            reply.message
        );

        let down = InstacartError::Auth(Box::new(InstacartError::Server { status: 503 }));
        assert_eq!(UpstreamReply::of(&down).code, "upstream_unavailable");

        let throttled = ApiError::Upstream(InstacartError::Auth(Box::new(
            InstacartError::RateLimited {
                retry_after: Some(Duration::from_secs(3)),
            },
        )))
        .into_response();
        assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(throttled.headers()[header::RETRY_AFTER], "3");
    }

    #[test]
    fn problems_report_every_field() {
        let mut problems = Problems::default();
        assert_eq!(problems.check(Ok::<_, ValidationError>(1)), Some(1));
        let each = problems.check_each([
            Err(ValidationError::new("a", "is bad")),
            Ok(2),
            Err(ValidationError::new("b", "is worse")),
        ]);
        assert_eq!(each, None);
        let ApiError::Invalid(found) = ApiError::from(problems) else {
            panic!("expected a validation error");
        };
        let fields: Vec<_> = found.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["a", "b"]);
    }
}
