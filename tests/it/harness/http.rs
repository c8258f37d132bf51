//! The admin API's answers: status, JSON body, the `{"errors":[...]}` shape.

use chrono::{DateTime, Utc};
use reqwest::{Response, StatusCode};
use serde::Deserialize;
use serde_json::Value;

/// Asserts the status and returns the JSON body.
pub async fn json_body(response: Response, status: StatusCode) -> Value {
    let actual = response.status();
    let text = response.text().await.expect("body");
    assert_eq!(actual, status, "unexpected status; body: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// One entry of the `{"errors":[...]}` body; nothing else may appear in it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorItem {
    pub code: String,
    pub message: String,
    pub field: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorBody {
    errors: Vec<ErrorItem>,
}

/// Asserts the status and the error shape (JSON content type included); returns the errors.
pub async fn errors(response: Response, status: StatusCode) -> Vec<ErrorItem> {
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = json_body(response, status).await;
    assert_eq!(content_type.as_deref(), Some("application/json"));
    let parsed: ErrorBody =
        serde_json::from_value(body.clone()).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert!(!parsed.errors.is_empty(), "no errors listed: {body}");
    parsed.errors
}

/// The single error of a response, asserted to carry `code`.
pub async fn single_error(response: Response, status: StatusCode, code: &str) -> ErrorItem {
    let mut found = errors(response, status).await;
    assert_eq!(found.len(), 1, "{found:?}");
    let error = found.remove(0);
    assert_eq!(error.code, code, "{error:?}");
    error
}

pub fn timestamp(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .unwrap_or_else(|| panic!("not an RFC 3339 time: {value}"))
        .with_timezone(&Utc)
}
