//! What Slack answers, and what each answer means for the delivery.
//!
//! The Web API answers HTTP 200 with `{"ok":false,"error":"..."}` on failure, so `ok` decides,
//! not the status. Incoming webhooks answer `ok` on success and an error word as a plain-text
//! 4xx body (`invalid_payload`, `no_service`, `channel_is_archived`, ...).

use serde::Deserialize;

/// A Web API method's answer, as far as delivery cares.
#[derive(Debug, Deserialize)]
pub struct ApiReply {
    pub ok: bool,
    #[serde(default)]
    pub error: Option<String>,
    /// The posted message's timestamp: its id, and the `thread_ts` of replies to it.
    #[serde(default)]
    pub ts: Option<String>,
}

/// Web API errors that say "later", not "never"; every other error is permanent
/// (`invalid_auth`, `channel_not_found`, `not_in_channel`, `invalid_blocks`, ...).
const TRANSIENT_ERRORS: &[&str] = &[
    "ratelimited",
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
];

pub fn is_transient(error: &str) -> bool {
    TRANSIENT_ERRORS.contains(&error)
}

/// An incoming webhook's error word (the first line of its body, bounded), else `fallback`.
pub fn webhook_error(body: Option<&str>, fallback: &str) -> String {
    body.and_then(|b| b.lines().next())
        .map(str::trim)
        .filter(|word| !word.is_empty())
        .map(|word| word.chars().take(100).collect())
        .unwrap_or_else(|| fallback.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_slack_side_trouble_is_worth_a_retry() {
        assert!(is_transient("ratelimited"));
        assert!(is_transient("service_unavailable"));
        for permanent in [
            "invalid_auth",
            "channel_not_found",
            "channel_is_archived",
            "not_in_channel",
            "invalid_blocks",
            "msg_too_long",
            "token_revoked",
            "account_inactive",
            "something_new",
        ] {
            assert!(!is_transient(permanent), "{permanent}");
        }
    }

    #[test]
    fn a_reply_parses_with_or_without_its_optional_fields() {
        let failed: ApiReply =
            serde_json::from_str(r#"{"ok":false,"error":"channel_not_found"}"#).unwrap();
        assert!(!failed.ok);
        assert_eq!(failed.error.as_deref(), Some("channel_not_found"));
        let posted: ApiReply = serde_json::from_str(
            r#"{"ok":true,"channel":"C1","ts":"1503435956.000247","message":{"text":"x"}}"#,
        )
        .unwrap();
        assert_eq!(posted.ts.as_deref(), Some("1503435956.000247"));
    }

    #[test]
    fn a_webhook_error_is_its_first_word_line() {
        assert_eq!(
            webhook_error(Some("invalid_payload\n"), "HTTP 400"),
            "invalid_payload"
        );
        assert_eq!(webhook_error(Some("  "), "HTTP 400"), "HTTP 400");
        assert_eq!(webhook_error(None, "HTTP 404"), "HTTP 404");
    }
}
