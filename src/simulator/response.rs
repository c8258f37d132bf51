//! What the simulator sends back: JSON bodies, and Connect's error envelopes as the seed pages
//! show them. Shared by the routes, the token endpoint and the state, which all answer in JSON.

use axum::body::{Body, Bytes};
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use serde::Serialize;

use crate::instacart::models::{ErrorBody, ErrorEnvelope};

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

/// Error bodies, serialized once, indexed by [`ApiError`].
pub(super) struct ErrorBodies(Vec<Bytes>);

impl ErrorBodies {
    pub(super) fn new() -> Self {
        Self(ApiError::ALL.map(|e| to_json(&e.envelope())).to_vec())
    }

    /// The refusal with the headers Connect sends beside it.
    pub(super) fn refuse(&self, error: ApiError) -> Response {
        let mut response = json_response(error.status(), self.0[error as usize].clone());
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

pub(super) fn to_json<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("the Connect models always serialize"))
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
}
