//! Bearer-token authentication of the `/v1` routes.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::AppState;

/// Lets the request through only with `Authorization: Bearer <server.admin_token>`.
pub async fn require_admin_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    // No configured token means nobody gets in (Settings::validate requires one anyway).
    let expected = state.settings.server.admin_token.as_ref();
    match (bearer_token(request.headers()), expected) {
        (Some(presented), Some(expected)) if tokens_match(presented, expected.expose_secret()) => {
            Ok(next.run(request).await)
        }
        _ => Err(ApiError::Unauthorized),
    }
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compares digests in constant time: neither the content nor the length of the expected token
/// leaks through timing.
fn tokens_match(presented: &str, expected: &str) -> bool {
    Sha256::digest(presented.as_bytes())
        .ct_eq(&Sha256::digest(expected.as_bytes()))
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_other_schemes_are_refused() {
        assert_eq!(bearer_token(&headers("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&headers("bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&headers("Basic abc")), None);
        assert_eq!(bearer_token(&headers("Bearerabc")), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(tokens_match("s3cret-token-000", "s3cret-token-000"));
        assert!(!tokens_match("s3cret-token-001", "s3cret-token-000"));
        assert!(!tokens_match("s3cret", "s3cret-token-000"));
    }
}
