//! `POST /slack/events`: the Events API. A person's reply in the thread of an order (started by
//! a bot-token Slack subscriber) is sent to the order's shopper; the bot then answers in the
//! thread that it was sent, or why not.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use super::{verify, within_ack_budget, ActionError, SlackError};
use crate::admin::AppState;
use crate::domain::{Channel, SlackTarget, SubscriberStatus};
use crate::domain::{MessageBody, OrderId, SubscriberId};
use crate::store::StoreError;
use crate::telemetry::error_chain;

/// How long an acted-on event is remembered: Slack retries within minutes (at once, after one
/// and after five).
const EVENT_MEMORY: TimeDelta = TimeDelta::hours(1);
const RETRY_NUM: &str = "x-slack-retry-num";

/// The envelope of everything the Events API posts.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Envelope {
    /// Sent once when the Request URL is saved in the app's settings.
    UrlVerification {
        challenge: String,
    },
    EventCallback {
        event_id: String,
        event: Event,
    },
    #[serde(other)]
    Other,
}

#[derive(Serialize)]
struct Challenge {
    challenge: String,
}

/// The fields of a `message` event that decide whether it is a person's thread reply (every
/// other event type leaves them out).
#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    subtype: Option<String>,
    channel: Option<String>,
    user: Option<String>,
    bot_id: Option<String>,
    text: Option<String>,
    ts: Option<String>,
    thread_ts: Option<String>,
}

/// A person's reply in a thread.
struct ThreadReply {
    channel: String,
    thread_ts: String,
    text: String,
}

impl Event {
    /// A reply in a thread, by a person: not the thread's first message, not a bot's post, not
    /// an edit or deletion (`message_changed`, `message_deleted`) or any other subtype, except
    /// `thread_broadcast` (a reply also shown in the channel).
    fn into_thread_reply(self) -> Option<ThreadReply> {
        let by_person = self.user.is_some() && self.bot_id.is_none();
        let plain = self
            .subtype
            .as_deref()
            .is_none_or(|subtype| subtype == "thread_broadcast");
        let thread_ts = self
            .thread_ts
            .filter(|thread| Some(thread) != self.ts.as_ref())?;
        (self.kind == "message" && by_person && plain).then_some(ThreadReply {
            channel: self.channel?,
            thread_ts,
            text: self.text.unwrap_or_default(),
        })
    }
}

/// The bot-token subscriber whose order thread a reply is in.
struct OrderThread {
    subscriber_id: SubscriberId,
    bot_token: String,
    order_id: OrderId,
}

pub(super) async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, SlackError> {
    verify(&state, &headers, &body)?;
    let (event_id, event) = match serde_json::from_slice(&body).map_err(SlackError::Malformed)? {
        Envelope::UrlVerification { challenge } => {
            return Ok(Json(Challenge { challenge }).into_response())
        }
        Envelope::EventCallback { event_id, event } => (event_id, event),
        Envelope::Other => return Ok(StatusCode::OK.into_response()),
    };
    let retry = headers.get(RETRY_NUM).and_then(|v| v.to_str().ok());
    let span = tracing::info_span!("slack_event", event_id = %event_id, retry);
    act_on(state, &event_id, event).instrument(span).await?;
    Ok(StatusCode::OK.into_response())
}

/// Sends a person's reply in an order's thread to the order's shopper, once per event.
async fn act_on(state: AppState, event_id: &str, event: Event) -> Result<(), StoreError> {
    let Some(reply) = event.into_thread_reply() else {
        return Ok(());
    };
    let Some(thread) = order_thread(&state, &reply).await? else {
        tracing::debug!("a thread reply outside any order's thread");
        return Ok(());
    };
    let now = Utc::now();
    if !state
        .store
        .record_slack_event(event_id, now, now - EVENT_MEMORY)
        .await?
    {
        tracing::info!("Slack sent an event again that was acted on already");
        return Ok(());
    }
    within_ack_budget(forward(state, thread, reply)).await;
    Ok(())
}

/// The order whose thread `reply` is in, among the active bot-token subscribers posting in the
/// reply's channel (the subscriber's `channel` must be the channel's ID, which events carry).
async fn order_thread(
    state: &AppState,
    reply: &ThreadReply,
) -> Result<Option<OrderThread>, StoreError> {
    for subscriber in state.store.list_subscribers().await? {
        let Channel::Slack {
            target: SlackTarget::Bot { bot_token, channel },
        } = subscriber.channel
        else {
            continue;
        };
        if subscriber.status != SubscriberStatus::Active || channel != reply.channel {
            continue;
        }
        if let Some(order_id) = state
            .store
            .order_for_thread(&subscriber.id, &reply.thread_ts)
            .await?
        {
            return Ok(Some(OrderThread {
                subscriber_id: subscriber.id,
                bot_token,
                order_id,
            }));
        }
    }
    Ok(None)
}

/// `chat.postMessage`'s body for a reply in the thread.
#[derive(Serialize)]
struct ThreadAnswer<'a> {
    channel: &'a str,
    thread_ts: &'a str,
    text: &'a str,
}

/// Sends the reply to the shopper, then says in the thread how that went.
#[tracing::instrument(skip_all, fields(
    order_id = %thread.order_id,
    subscriber_id = %thread.subscriber_id,
))]
async fn forward(state: AppState, thread: OrderThread, reply: ThreadReply) {
    let answer = match send_to_shopper(&state, &thread, &reply.text).await {
        Ok(()) => "Sent to the shopper.".to_owned(),
        Err(error) => {
            error.log();
            format!("Not sent: {error}.")
        }
    };
    let message = ThreadAnswer {
        channel: &reply.channel,
        thread_ts: &reply.thread_ts,
        text: &answer,
    };
    if let Err(error) = state
        .talkback
        .answer_in_slack(&thread.bot_token, &message)
        .await
    {
        tracing::warn!(error = %error_chain(&error), "could not answer in the order's thread");
    }
}

async fn send_to_shopper(
    state: &AppState,
    thread: &OrderThread,
    text: &str,
) -> Result<(), ActionError> {
    let body =
        MessageBody::parse("body", &plain_text(text)).map_err(ActionError::InvalidMessage)?;
    state
        .talkback
        .send_to_shopper(&thread.order_id, None, &body, Some(&thread.subscriber_id))
        .await?;
    Ok(())
}

/// What a person typed, out of Slack's markup: `&amp;`, `&lt;`, `&gt;` decoded; a mention
/// `<@U123>` as `@U123`, a channel `<#C123|orders>` as `#orders`, `<!here>` as `@here`; a link
/// as its text, followed by its address when that differs (`<https://x.example|x.example>` is
/// `x.example`, `<https://x.example/a|this>` is `this (https://x.example/a)`).
fn plain_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>').map(|i| open + i) else {
            break;
        };
        out.push_str(&rest[..open]);
        let inner = &rest[open + 1..close];
        let (target, label) = match inner.split_once('|') {
            Some((target, label)) => (target, Some(label)),
            None => (inner, None),
        };
        match (target.chars().next(), label) {
            (Some('@'), _) => out.push_str(target),
            (Some('#'), Some(name)) => {
                out.push('#');
                out.push_str(name);
            }
            (Some('!'), Some(label)) => out.push_str(label),
            (Some('!'), None) => {
                out.push('@');
                out.push_str(&target[1..]);
            }
            (_, Some(label)) if target.ends_with(label) || label.is_empty() => {
                out.push_str(if label.is_empty() { target } else { label });
            }
            (_, Some(label)) => {
                out.push_str(label);
                out.push_str(" (");
                out.push_str(target.strip_prefix("mailto:").unwrap_or(target));
                out.push(')');
            }
            (_, None) => out.push_str(target.strip_prefix("mailto:").unwrap_or(target)),
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reply(event: serde_json::Value) -> Option<ThreadReply> {
        serde_json::from_value::<Event>(event)
            .unwrap()
            .into_thread_reply()
    }

    fn base() -> serde_json::Value {
        json!({"type": "message", "channel": "C1", "user": "U1", "text": "ok",
               "ts": "1700000100.000200", "thread_ts": "1700000000.000100"})
    }

    #[test]
    fn only_a_persons_reply_in_a_thread_counts() {
        let found = reply(base()).expect("a thread reply");
        assert_eq!(
            (
                found.channel.as_str(),
                found.thread_ts.as_str(),
                found.text.as_str()
            ),
            ("C1", "1700000000.000100", "ok")
        );
        let mut broadcast = base();
        broadcast["subtype"] = json!("thread_broadcast");
        assert!(reply(broadcast).is_some());

        let mut cases = Vec::new();
        for (key, value) in [
            ("subtype", json!("message_changed")),
            ("subtype", json!("bot_message")),
            ("bot_id", json!("B1")),
            ("user", json!(null)),
            ("thread_ts", json!(null)),
            ("thread_ts", json!("1700000100.000200")), // the thread's parent itself
            ("channel", json!(null)),
            ("type", json!("reaction_added")),
        ] {
            let mut event = base();
            event[key] = value;
            cases.push((key, event));
        }
        for (key, event) in cases {
            assert!(reply(event.clone()).is_none(), "{key}: {event}");
        }
    }

    #[test]
    fn slack_markup_becomes_what_the_person_typed() {
        for (typed, plain) in [
            ("Almond &amp; oat are fine", "Almond & oat are fine"),
            ("&lt;3 &amp;lt;", "<3 &lt;"),
            ("ask <@U024BE7LH> or <!here>", "ask @U024BE7LH or @here"),
            ("see <#C024BE7LR|orders>", "see #orders"),
            ("<http://oatly.com|oatly.com> please", "oatly.com please"),
            (
                "<https://x.example/a|this one>",
                "this one (https://x.example/a)",
            ),
            ("<https://x.example/a>", "https://x.example/a"),
            ("<mailto:a@b.example|a@b.example>", "a@b.example"),
            ("unclosed < stays", "unclosed < stays"),
        ] {
            assert_eq!(plain_text(typed), plain, "{typed}");
        }
    }
}
