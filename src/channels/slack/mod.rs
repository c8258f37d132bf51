//! The Slack channel: an event rendered by the Slack templates, posted through an incoming
//! webhook or the Web API's `chat.postMessage` with a bot token.
//!
//! With a bot token, the first event of an order posts a top-level message and its `ts` becomes
//! the order's thread (the dispatcher keeps it per subscriber and order); later events of the
//! order reply in that thread, so a channel shows one thread per order. Incoming webhooks cannot
//! thread: every event is a top-level message there.
//!
//! Messages may carry a "Mark as read" button (action [`MARK_READ_ACTION`]); Slack reports clicks
//! to `/slack/interactions`, so without `slack.signing_secret` the buttons are taken out before
//! posting rather than shown dead.
//!
//! Bot tokens and webhook URLs are credentials: they go into requests and nowhere else (the
//! error texts kept in the attempt log never include a URL or a header).

mod api;
mod client;

pub use client::{SlackApi, SlackApiError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::header::CONTENT_TYPE;
use reqwest::{Response, StatusCode};
use serde::Serialize;
use serde_json::Value;
use std::fmt;
use std::time::Duration;
use url::Url;

use super::http::{read_excerpt, transport_error_text, EXCERPT_BYTES};
use super::webhook::WebhookSender;
use super::{ChannelSender, SendOutcome, Threading};
use crate::config::SlackSettings;
use crate::domain::{Channel, ClaimedDelivery, SlackTarget};
use crate::telemetry::error_chain;
use crate::templates::{remove_action, EventContext, SlackMessage, Templates, MARK_READ_ACTION};
use crate::time::retry_after;

/// The most of a Web API answer read to find `ok` and `ts` (they echo the message posted).
const MAX_REPLY_BYTES: usize = 1024 * 1024;
const JSON_UTF8: &str = "application/json; charset=utf-8";

/// Posts to Slack through the webhooks' pooled client (same timeout, no redirects, the same
/// guard against private targets), so the process keeps one HTTP pool for outgoing deliveries.
#[derive(Clone)]
pub struct SlackSender {
    api: SlackApi,
    interval: Duration,
    /// Whether Slack's button clicks reach the bridge (`slack.signing_secret` is set).
    interactive: bool,
    templates: Templates,
}

impl fmt::Debug for SlackSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlackSender")
            .field("post_message", &self.api.post_message_url().as_str())
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

/// An incoming webhook's body.
#[derive(Serialize)]
struct WebhookMessage<'a> {
    text: &'a str,
    #[serde(skip_serializing_if = "<[Value]>::is_empty")]
    blocks: &'a [Value],
}

/// `chat.postMessage`'s body.
#[derive(Serialize)]
struct PostMessage<'a> {
    channel: &'a str,
    text: &'a str,
    #[serde(skip_serializing_if = "<[Value]>::is_empty")]
    blocks: &'a [Value],
    #[serde(skip_serializing_if = "Option::is_none")]
    thread_ts: Option<&'a str>,
}

fn permanent(error: impl Into<String>) -> SendOutcome {
    SendOutcome::Permanent {
        status: None,
        excerpt: None,
        error: Some(error.into()),
        disable_subscriber: None,
    }
}

fn retry(error: impl Into<String>) -> SendOutcome {
    SendOutcome::Retry {
        after: None,
        status: None,
        excerpt: None,
        error: Some(error.into()),
    }
}

impl SlackSender {
    /// `http` lends its client; `settings.api_base_url` locates `chat.postMessage`.
    pub fn new(
        http: WebhookSender,
        settings: &SlackSettings,
        templates: Templates,
    ) -> Result<Self, url::ParseError> {
        Ok(Self {
            api: SlackApi::new(http, &settings.api_base_url)?,
            interval: settings.send_interval(),
            interactive: settings.signing_secret.is_some(),
            templates,
        })
    }

    /// The Web API and response URLs, for the calls made outside deliveries.
    pub fn api(&self) -> &SlackApi {
        &self.api
    }

    /// The least time between two messages to one subscriber.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    #[tracing::instrument(skip_all, fields(
        delivery_id = %delivery.id,
        event_id = %delivery.event_id,
        subscriber_id = %delivery.subscriber.id,
    ))]
    async fn post(
        &self,
        delivery: &ClaimedDelivery,
        thread_ts: Option<&str>,
        now: DateTime<Utc>,
    ) -> SendOutcome {
        let Channel::Slack { target } = &delivery.subscriber.channel else {
            return permanent("not a Slack subscriber");
        };
        let mut message =
            match EventContext::from_delivery(delivery).and_then(|e| self.templates.slack(&e)) {
                Ok(message) => message,
                Err(err) => {
                    return permanent(format!(
                        "cannot render the Slack message: {}",
                        error_chain(&err)
                    ))
                }
            };
        if !self.interactive {
            remove_action(&mut message.blocks, MARK_READ_ACTION);
        }
        match target {
            SlackTarget::IncomingWebhook { webhook_url } => {
                self.post_to_webhook(webhook_url, &message, now).await
            }
            SlackTarget::Bot { bot_token, channel } => {
                self.post_message(bot_token, channel, thread_ts, &message, now)
                    .await
            }
        }
    }

    async fn post_to_webhook(
        &self,
        webhook_url: &str,
        message: &SlackMessage,
        now: DateTime<Utc>,
    ) -> SendOutcome {
        let Ok(url) = Url::parse(webhook_url) else {
            return permanent("the stored Slack webhook URL is not a valid URL");
        };
        if self.api.http().refuses_literal(&url) {
            return permanent("refused: the target is a private, loopback or link-local address");
        }
        let body = WebhookMessage {
            text: &message.text,
            blocks: &message.blocks,
        };
        let request = self
            .api
            .http()
            .client()
            .post(url)
            .header(CONTENT_TYPE, JSON_UTF8)
            .json(&body);
        match by_status(request.send().await, now).await {
            Ok(response) => SendOutcome::Delivered {
                status: Some(response.status().as_u16()),
                excerpt: read_excerpt(response).await,
                thread_started: None,
            },
            Err(outcome) => outcome,
        }
    }

    /// A first message of the order (no `thread_ts`) starts its thread: its `ts` comes back.
    async fn post_message(
        &self,
        bot_token: &str,
        channel: &str,
        thread_ts: Option<&str>,
        message: &SlackMessage,
        now: DateTime<Utc>,
    ) -> SendOutcome {
        let body = PostMessage {
            channel,
            text: &message.text,
            blocks: &message.blocks,
            thread_ts,
        };
        let request = self
            .api
            .http()
            .client()
            .post(self.api.post_message_url().clone())
            .bearer_auth(bot_token)
            .header(CONTENT_TYPE, JSON_UTF8)
            .json(&body);
        let response = match by_status(request.send().await, now).await {
            Ok(response) => response,
            Err(outcome) => return outcome,
        };
        let status = Some(response.status().as_u16());
        let retry_after = retry_after(response.headers(), now);
        let body = read_reply(response).await;
        let excerpt = excerpt(&body);
        let reply: api::ApiReply = match serde_json::from_slice(&body) {
            Ok(reply) => reply,
            Err(_) => {
                return SendOutcome::Retry {
                    after: None,
                    status,
                    excerpt,
                    error: Some("Slack's answer is not a Web API reply".to_owned()),
                }
            }
        };
        if !reply.ok {
            let error = reply.error.unwrap_or_else(|| "unknown_error".to_owned());
            return if api::is_transient(&error) {
                SendOutcome::Retry {
                    after: retry_after,
                    status,
                    excerpt,
                    error: Some(error),
                }
            } else {
                SendOutcome::Permanent {
                    status,
                    excerpt,
                    error: Some(error),
                    disable_subscriber: None,
                }
            };
        }
        SendOutcome::Delivered {
            status,
            excerpt,
            // Without it, the order's next event starts a second thread rather than being
            // held back.
            thread_started: reply.ts.filter(|_| thread_ts.is_none()),
        }
    }
}

#[async_trait]
impl ChannelSender for SlackSender {
    fn threading(&self, deliveries: &[ClaimedDelivery]) -> Threading {
        match deliveries.first().map(|d| &d.subscriber.channel) {
            Some(Channel::Slack {
                target: SlackTarget::Bot { .. },
            }) => Threading::FromSend,
            _ => Threading::None,
        }
    }

    async fn send(
        &self,
        deliveries: &[ClaimedDelivery],
        thread: Option<&str>,
        now: DateTime<Utc>,
    ) -> SendOutcome {
        match deliveries {
            [delivery] => self.post(delivery, thread, now).await,
            _ => permanent("Slack messages carry one event each"),
        }
    }
}

/// What the HTTP exchange alone decides: transport errors, 429 and 5xx are worth a retry (429
/// after its `Retry-After`); other non-2xx answers are permanent, with Slack's error word. A 2xx
/// response comes back for the caller to read.
async fn by_status(
    sent: reqwest::Result<Response>,
    now: DateTime<Utc>,
) -> Result<Response, SendOutcome> {
    let response = sent.map_err(|err| retry(transport_error_text(err)))?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let after = retry_after(response.headers(), now);
    let code = Some(status.as_u16());
    let excerpt = read_excerpt(response).await;
    Err(
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            SendOutcome::Retry {
                after,
                status: code,
                excerpt,
                error: None,
            }
        } else {
            let fallback = format!("Slack answered HTTP {}", status.as_u16());
            SendOutcome::Permanent {
                status: code,
                error: Some(api::webhook_error(excerpt.as_deref(), &fallback)),
                excerpt,
                disable_subscriber: None,
            }
        },
    )
}

/// The body up to [`MAX_REPLY_BYTES`]; a read failing midway leaves what was read.
async fn read_reply(mut response: Response) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_REPLY_BYTES {
            break;
        }
    }
    body
}

fn excerpt(body: &[u8]) -> Option<String> {
    let head = &body[..body.len().min(EXCERPT_BYTES)];
    (!head.is_empty()).then(|| String::from_utf8_lossy(head).into_owned())
}
