//! What can go wrong talking to Connect, typed after the error tables of the reference pages.

use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;

use super::models::{ErrorBody, ErrorEnvelope};

/// The code of Instacart's multi-error form: the real codes are in `error.errors[]`.
const MULTI_ERROR_CODE: i64 = 9999;

#[derive(Debug, thiserror::Error)]
pub enum InstacartError {
    /// 404 / 4000: the order does not exist (for this identity).
    #[error("Instacart order not found (HTTP 404, code 4000)")]
    NotFound,
    /// 400 / 4001: the order was placed with a user id but was fetched with client credentials.
    #[error(
        "Instacart does not know the user of this order: User ID not found (HTTP 400, code 4001)"
    )]
    UserIdNotFound,
    /// 403: the retailer has Instacart redact shopper personal data, so messages are never served.
    #[error("Instacart redacts shopper PII for this retailer (HTTP 403)")]
    ShopperPiiRedacted,
    /// 403: chat is disabled for the order or no shopper is available.
    #[error("Instacart refused the message: {message} (HTTP 403)")]
    MessagingNotAllowed { message: String },
    /// 400 / 1001 on the message body, the only field of the request.
    #[error("Instacart rejected the message body: {message} (HTTP 400, code 1001)")]
    BodyTooLong { message: String },
    #[error("Instacart rejected the credentials (HTTP 401)")]
    Unauthorized,
    #[error("Instacart rate limit reached (HTTP 429){}", retry_after.map(|d| format!(", retry after {}s", d.as_secs())).unwrap_or_default())]
    RateLimited { retry_after: Option<Duration> },
    #[error("Instacart server error (HTTP {status})")]
    Server { status: u16 },
    #[error("request to Instacart timed out")]
    Timeout,
    #[error("could not reach Instacart")]
    Transport(#[source] reqwest::Error),
    /// A success whose JSON does not match the documented payload, or an error answer that is not
    /// Instacart's error envelope.
    #[error(
        "Instacart answered HTTP {status} with a body that does not match the documented format"
    )]
    MalformedBody {
        status: u16,
        #[source]
        source: serde_json::Error,
    },
    /// A well-formed error the reference pages do not document.
    #[error("unexpected Instacart error (HTTP {status}, code {}): {message}", code.map_or_else(|| "none".to_owned(), |c| c.to_string()))]
    Unexpected {
        status: u16,
        code: Option<i64>,
        message: String,
    },
    /// The token endpoint failed; the inner error says how (and whether retrying can help).
    /// Shown inline rather than as `source` so a one-line report of this error is complete.
    #[error("could not obtain an Instacart access token: {0}")]
    Auth(Box<InstacartError>),
    #[error("Instacart base URL {url} cannot carry API paths (use an http or https URL)")]
    InvalidBaseUrl { url: String },
    #[error("could not build the Instacart HTTP client")]
    HttpClient(#[source] reqwest::Error),
}

/// Which endpoint answered: the codes of the reference pages only mean something on
/// post-checkout endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    PostCheckout,
    Token,
}

/// RFC 6749 error body, which OAuth token endpoints answer instead of Instacart's envelope.
#[derive(Deserialize)]
struct OAuthErrorBody {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

impl InstacartError {
    /// 429, 5xx and network trouble may pass; documented 4xx answers will not change on retry.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::RateLimited { .. } | Self::Server { .. } | Self::Timeout | Self::Transport(_) => {
                true
            }
            Self::MalformedBody { status, .. } => *status >= 500,
            Self::Auth(inner) => inner.is_retryable(),
            Self::NotFound
            | Self::UserIdNotFound
            | Self::ShopperPiiRedacted
            | Self::MessagingNotAllowed { .. }
            | Self::BodyTooLong { .. }
            | Self::Unauthorized
            | Self::Unexpected { .. }
            | Self::InvalidBaseUrl { .. }
            | Self::HttpClient(_) => false,
        }
    }

    /// The wait Instacart asked for, when it asked.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } => *retry_after,
            Self::Auth(inner) => inner.retry_after(),
            _ => None,
        }
    }

    pub(crate) fn from_reqwest(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            Self::Timeout
        } else {
            Self::Transport(e)
        }
    }

    /// Classifies a non-2xx answer.
    pub(crate) fn from_response(
        status: StatusCode,
        retry_after: Option<Duration>,
        body: &[u8],
        endpoint: Endpoint,
    ) -> Self {
        let status = status.as_u16();
        match status {
            401 => return Self::Unauthorized,
            429 => return Self::RateLimited { retry_after },
            500.. => return Self::Server { status },
            _ => {}
        }
        let envelope = match serde_json::from_slice::<ErrorEnvelope>(body) {
            Ok(envelope) => envelope,
            Err(source) => {
                return match serde_json::from_slice::<OAuthErrorBody>(body) {
                    Ok(oauth) if endpoint == Endpoint::Token => Self::Unexpected {
                        status,
                        code: None,
                        message: match oauth.error_description {
                            Some(description) => format!("{}: {description}", oauth.error),
                            None => oauth.error,
                        },
                    },
                    _ => Self::MalformedBody { status, source },
                }
            }
        };
        let error = effective_error(envelope.error);
        match endpoint {
            Endpoint::PostCheckout => Self::from_documented(status, error),
            Endpoint::Token => Self::unexpected(status, error),
        }
    }

    /// The error tables of the reference pages.
    fn from_documented(status: u16, error: ErrorBody) -> Self {
        match (status, error.code) {
            (404, Some(4000)) => Self::NotFound,
            (400, Some(4001)) => Self::UserIdNotFound,
            (400, Some(1001)) => Self::BodyTooLong {
                message: error.message,
            },
            (403, None) if error.message == "Shopper PII" => Self::ShopperPiiRedacted,
            (403, None)
                if error
                    .message
                    .starts_with("Sending a message is not allowed") =>
            {
                Self::MessagingNotAllowed {
                    message: error.message,
                }
            }
            _ => Self::unexpected(status, error),
        }
    }

    fn unexpected(status: u16, error: ErrorBody) -> Self {
        Self::Unexpected {
            status,
            code: error.code,
            message: error.message,
        }
    }
}

/// The multi-error form wraps the real errors; the first one decides.
fn effective_error(mut error: ErrorBody) -> ErrorBody {
    if error.code == Some(MULTI_ERROR_CODE) && !error.errors.is_empty() {
        return effective_error(error.errors.swap_remove(0).error);
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn classify(status: u16, body: serde_json::Value, endpoint: Endpoint) -> InstacartError {
        InstacartError::from_response(
            StatusCode::from_u16(status).unwrap(),
            None,
            body.to_string().as_bytes(),
            endpoint,
        )
    }

    #[test]
    fn multi_error_form_without_inner_errors_is_unexpected_with_the_outer_code() {
        let err = classify(
            400,
            json!({"error": {"message": "Invalid request", "code": 9999}}),
            Endpoint::PostCheckout,
        );
        assert!(
            matches!(
                err,
                InstacartError::Unexpected {
                    status: 400,
                    code: Some(9999),
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn documented_codes_on_the_token_endpoint_are_not_read_as_order_errors() {
        let err = classify(
            404,
            json!({"error": {"message": "Resource not found", "code": 4000}}),
            Endpoint::Token,
        );
        assert!(
            matches!(
                err,
                InstacartError::Unexpected {
                    status: 404,
                    code: Some(4000),
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn oauth_error_bodies_of_the_token_endpoint_keep_their_description() {
        let err = classify(
            400,
            json!({"error": "invalid_grant", "error_description": "The assertion is invalid"}),
            Endpoint::Token,
        );
        assert_eq!(
            err.to_string(),
            "unexpected Instacart error (HTTP 400, code none): invalid_grant: The assertion is invalid"
        );
    }

    #[test]
    fn non_envelope_error_bodies_are_malformed_and_only_retryable_on_5xx() {
        let err = classify(404, json!("<html>"), Endpoint::PostCheckout);
        assert!(matches!(
            err,
            InstacartError::MalformedBody { status: 404, .. }
        ));
        assert!(!err.is_retryable());
        let source = serde_json::from_str::<u8>("x").unwrap_err();
        assert!(InstacartError::MalformedBody {
            status: 502,
            source
        }
        .is_retryable());
    }

    #[test]
    fn token_endpoint_failures_are_retryable_as_their_cause_is() {
        let throttled = InstacartError::Auth(Box::new(InstacartError::RateLimited {
            retry_after: Some(Duration::from_secs(3)),
        }));
        assert!(throttled.is_retryable());
        assert_eq!(throttled.retry_after(), Some(Duration::from_secs(3)));
        assert!(!InstacartError::Auth(Box::new(InstacartError::Unauthorized)).is_retryable());
    }
}
