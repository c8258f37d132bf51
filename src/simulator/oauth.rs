//! `POST /v2/oauth/token`: client credentials for `connect:fulfillment`, and the user assertion
//! grant for `connect:post_checkout`. Accepts JSON (as the Connect docs send it) or a form body;
//! refusals use the OAuth 2.0 error shape (RFC 6749 section 5.2).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::response::{json_response, to_json};
use super::shared::{Counter, Shared};
use crate::domain::UserId;
use crate::instacart::models::{TokenRequest, TokenResponse};

const CLIENT_CREDENTIALS: &str = "client_credentials";
const USER_ASSERTION: &str = "fulfillment_user_assertion";
const FULFILLMENT_SCOPE: &str = "connect:fulfillment";
const POST_CHECKOUT_SCOPE: &str = "connect:post_checkout";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OAuthError {
    InvalidRequest,
    InvalidClient,
    UnsupportedGrantType,
    InvalidScope,
    InvalidGrant,
}

#[derive(Serialize)]
struct OAuthErrorBody {
    error: &'static str,
    error_description: &'static str,
}

impl OAuthError {
    fn into_response(self) -> Response {
        let (status, error, error_description) = match self {
            OAuthError::InvalidRequest => (
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "client_id, client_secret, grant_type and scope are required",
            ),
            OAuthError::InvalidClient => (
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "Client authentication failed",
            ),
            OAuthError::UnsupportedGrantType => (
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "grant_type must be client_credentials or fulfillment_user_assertion",
            ),
            OAuthError::InvalidScope => (
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                "client_credentials takes connect:fulfillment, \
                 fulfillment_user_assertion takes connect:post_checkout",
            ),
            OAuthError::InvalidGrant => (
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "assertion must be base64 of {\"user_id\":\"...\"}",
            ),
        };
        json_response(
            status,
            to_json(&OAuthErrorBody {
                error,
                error_description,
            }),
        )
    }
}

#[tracing::instrument(level = "debug", skip_all)]
pub(super) async fn issue_token(
    AxumState(shared): AxumState<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.counters.add(Counter::Token);
    let request = match parse_request(&headers, &body).and_then(|request| {
        check_grant(&shared, &request)?;
        Ok(request)
    }) {
        Ok(request) => request,
        Err(error) => {
            tracing::debug!(?error, "token request refused");
            return error.into_response();
        }
    };
    let lifetime = shared.credentials.token_lifetime;
    let access_token = shared.lock().issue_token(Instant::now(), lifetime);
    json_response(
        StatusCode::OK,
        to_json(&TokenResponse {
            access_token,
            token_type: "Bearer".to_owned(),
            expires_in: lifetime.as_secs(),
            scope: Some(request.scope),
            created_at: Some(Utc::now().timestamp()),
        }),
    )
}

fn parse_request(headers: &HeaderMap, body: &[u8]) -> Result<TokenRequest, OAuthError> {
    let is_form = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let parsed = if is_form {
        let fields: serde_json::Map<String, serde_json::Value> = url::form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), serde_json::Value::String(v.into_owned())))
            .collect();
        serde_json::from_value(serde_json::Value::Object(fields))
    } else {
        serde_json::from_slice(body)
    };
    parsed.map_err(|_| OAuthError::InvalidRequest)
}

fn check_grant(shared: &Shared, request: &TokenRequest) -> Result<(), OAuthError> {
    if !shared
        .credentials
        .client_matches(&request.client_id, &request.client_secret)
    {
        return Err(OAuthError::InvalidClient);
    }
    let scope = match request.grant_type.as_str() {
        CLIENT_CREDENTIALS => FULFILLMENT_SCOPE,
        USER_ASSERTION => POST_CHECKOUT_SCOPE,
        _ => return Err(OAuthError::UnsupportedGrantType),
    };
    if request.scope != scope {
        return Err(OAuthError::InvalidScope);
    }
    if request.grant_type == USER_ASSERTION {
        let assertion = request.assertion.as_deref().unwrap_or_default();
        decode_assertion(assertion).ok_or(OAuthError::InvalidGrant)?;
    }
    Ok(())
}

#[derive(Deserialize)]
struct Assertion {
    user_id: UserId,
}

/// Base64 of `{"user_id":"..."}`; either alphabet, padded or not, since clients differ.
fn decode_assertion(assertion: &str) -> Option<UserId> {
    let raw = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(assertion.trim()).ok())?;
    serde_json::from_slice::<Assertion>(&raw)
        .ok()
        .map(|a| a.user_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assertion_is_base64_json_with_a_user_id() {
        let encoded = STANDARD.encode(r#"{"user_id":"u-42"}"#);
        assert_eq!(decode_assertion(&encoded).unwrap().as_str(), "u-42");
        let unpadded = URL_SAFE_NO_PAD.encode(r#"{"user_id":"u-7"}"#);
        assert_eq!(decode_assertion(&unpadded).unwrap().as_str(), "u-7");
        assert!(decode_assertion(&STANDARD.encode(r#"{"user":"u-42"}"#)).is_none());
        assert!(decode_assertion(&STANDARD.encode(r#"{"user_id":""}"#)).is_none());
        assert!(decode_assertion("not base64!").is_none());
    }
}
