//! Slack calls made for people rather than for deliveries: a reply in an order's thread (a bot
//! token's `chat.postMessage`) and the update of a message through an interaction's
//! `response_url`. They go through the deliveries' pooled, guarded client.

use reqwest::header::CONTENT_TYPE;
use serde::Serialize;
use url::Url;

use super::api::{webhook_error, ApiReply};
use super::{read_reply, JSON_UTF8};
use crate::channels::http::read_excerpt;
use crate::channels::webhook::WebhookSender;

/// The Slack Web API at `slack.api_base_url`, and Slack's response URLs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SlackApi {
    http: WebhookSender,
    post_message: Url,
}

#[derive(Debug, thiserror::Error)]
pub enum SlackApiError {
    /// Without the URL: a response URL is a credential for as long as it lives.
    #[error("could not reach Slack")]
    Transport(#[source] reqwest::Error),
    #[error("Slack answered HTTP {status}: {error}")]
    Status { status: u16, error: String },
    /// The Web API's `{"ok": false, "error": "..."}`.
    #[error("Slack refused the call: {error}")]
    Refused { error: String },
    #[error("Slack's answer is not a Web API reply")]
    Malformed(#[source] serde_json::Error),
    #[error("refused: the target is a private, loopback or link-local address")]
    PrivateTarget,
}

impl SlackApi {
    pub(super) fn new(http: WebhookSender, api_base_url: &Url) -> Result<Self, url::ParseError> {
        // `join` replaces the last path segment unless the base ends with a slash.
        let mut base = api_base_url.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        Ok(Self {
            http,
            post_message: base.join("chat.postMessage")?,
        })
    }

    pub(super) fn http(&self) -> &WebhookSender {
        &self.http
    }

    pub(super) fn post_message_url(&self) -> &Url {
        &self.post_message
    }

    /// `chat.postMessage` as the bot of `bot_token`; `message` names the `channel` and, for a
    /// reply, the `thread_ts`.
    #[tracing::instrument(skip_all)]
    pub async fn post_message(
        &self,
        bot_token: &str,
        message: &impl Serialize,
    ) -> Result<(), SlackApiError> {
        let response = self
            .http
            .client()
            .post(self.post_message.clone())
            .bearer_auth(bot_token)
            .header(CONTENT_TYPE, JSON_UTF8)
            .json(message)
            .send()
            .await
            .map_err(|e| SlackApiError::Transport(e.without_url()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(status_error(response).await);
        }
        let reply: ApiReply = serde_json::from_slice(&read_reply(response).await)
            .map_err(SlackApiError::Malformed)?;
        match reply.ok {
            true => Ok(()),
            false => Err(SlackApiError::Refused {
                error: reply.error.unwrap_or_else(|| "unknown_error".to_owned()),
            }),
        }
    }

    /// Posts `message` to an interaction's `response_url` (the URL is the credential: no token).
    #[tracing::instrument(skip_all)]
    pub async fn respond(
        &self,
        response_url: &Url,
        message: &impl Serialize,
    ) -> Result<(), SlackApiError> {
        if self.http.refuses_literal(response_url) {
            return Err(SlackApiError::PrivateTarget);
        }
        let response = self
            .http
            .client()
            .post(response_url.clone())
            .header(CONTENT_TYPE, JSON_UTF8)
            .json(message)
            .send()
            .await
            .map_err(|e| SlackApiError::Transport(e.without_url()))?;
        if !response.status().is_success() {
            return Err(status_error(response).await);
        }
        Ok(())
    }
}

/// A non-2xx answer with Slack's error word (`expired_url`, `invalid_blocks`, ...).
async fn status_error(response: reqwest::Response) -> SlackApiError {
    let status = response.status().as_u16();
    let excerpt = read_excerpt(response).await;
    SlackApiError::Status {
        status,
        error: webhook_error(excerpt.as_deref(), "no error given"),
    }
}
