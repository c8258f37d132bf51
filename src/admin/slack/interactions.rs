//! `POST /slack/interactions`: clicks on the "Mark as read" button of a shopper's message. The
//! order's messages are marked read at Connect, then the message is replaced through the
//! click's `response_url`: without the button, with a line saying who marked it read, when,
//! and how many messages that was; or, when it failed, with the button and a line saying why.
//!
//! The `response_url` rather than `chat.update`: it needs no token, so it also works for
//! messages posted by incoming webhooks, and no lookup of which subscriber posted the message.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{mention, verify, within_ack_budget, ActionError, SlackError};
use crate::admin::AppState;
use crate::domain::{OrderId, WebhookUrl};
use crate::telemetry::error_chain;
use crate::templates::{remove_action, MARK_READ_ACTION};

/// The `block_id` of the status line added to the message: replaced, not repeated, on the next
/// click.
const STATUS_BLOCK: &str = "mark_read_status";
/// Slack's limit of blocks per message.
const MAX_BLOCKS: usize = 50;

#[derive(Deserialize)]
struct Interaction {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    user: Option<User>,
    #[serde(default)]
    actions: Vec<Action>,
    #[serde(default)]
    response_url: Option<String>,
    /// The message the button is on, as Slack has it.
    #[serde(default)]
    message: Option<PostedMessage>,
}

#[derive(Deserialize)]
struct User {
    id: String,
}

#[derive(Deserialize)]
struct Action {
    action_id: String,
    #[serde(default)]
    value: Option<String>,
}

#[derive(Deserialize)]
struct PostedMessage {
    #[serde(default)]
    text: String,
    #[serde(default)]
    blocks: Vec<Value>,
}

/// One click: on which order, by whom, and where to update the message.
struct Click {
    order_id: OrderId,
    user: Option<String>,
    response_url: Option<WebhookUrl>,
    message: Option<PostedMessage>,
}

pub(super) async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, SlackError> {
    verify(&state, &headers, &body)?;
    let payload = url::form_urlencoded::parse(&body)
        .find(|(key, _)| key == "payload")
        .map(|(_, value)| value)
        .ok_or(SlackError::NoPayload)?;
    let interaction: Interaction = serde_json::from_str(&payload).map_err(SlackError::Malformed)?;
    if interaction.kind != "block_actions" {
        return Ok(StatusCode::OK);
    }
    let Some(action) = interaction
        .actions
        .iter()
        .find(|action| action.action_id == MARK_READ_ACTION)
    else {
        return Ok(StatusCode::OK);
    };
    let order_id = OrderId::parse("value", action.value.as_deref().unwrap_or_default())
        .map_err(SlackError::InvalidValue)?;
    let allow_private = state.settings.delivery.allow_private_targets;
    let response_url = interaction.response_url.as_deref().and_then(|raw| {
        WebhookUrl::parse("response_url", raw, allow_private)
            .map_err(|error| tracing::warn!(%error, "cannot update the clicked message"))
            .ok()
    });
    let click = Click {
        order_id,
        user: interaction.user.map(|user| user.id),
        response_url,
        message: interaction.message,
    };
    within_ack_budget(mark_read(state, click)).await;
    Ok(StatusCode::OK)
}

#[tracing::instrument(skip_all, fields(order_id = %click.order_id))]
async fn mark_read(state: AppState, click: Click) {
    let outcome = mark_order_read(&state, &click.order_id).await;
    if let Err(error) = &outcome {
        error.log();
    }
    let Some(response_url) = &click.response_url else {
        return;
    };
    let status = status_line(&outcome, click.user.as_deref(), Utc::now());
    let update = updated_message(click.message, &status, outcome.is_err());
    if let Err(error) = state
        .talkback
        .update_in_slack(response_url.as_url(), &update)
        .await
    {
        tracing::warn!(error = %error_chain(&error), "could not update the clicked message");
    }
}

/// How many messages Connect marked read.
async fn mark_order_read(state: &AppState, order_id: &OrderId) -> Result<i64, ActionError> {
    let read = state.talkback.mark_read(order_id, None, &[]).await?;
    tracing::info!(
        messages_read = read.messages_read_count,
        "marked read from Slack"
    );
    Ok(read.messages_read_count)
}

/// "Marked as read by <@U123> at 14:05 UTC (3 messages)", or why it was not.
fn status_line(
    outcome: &Result<i64, ActionError>,
    user: Option<&str>,
    at: DateTime<Utc>,
) -> String {
    let (who, when) = (mention(user), at.format("%H:%M UTC"));
    match outcome {
        Ok(1) => format!("Marked as read by {who} at {when} (1 message)"),
        Ok(count) => format!("Marked as read by {who} at {when} ({count} messages)"),
        Err(error) => format!("Not marked as read ({who} at {when}): {error}."),
    }
}

/// The clicked message with `status` as its last line, replacing an earlier one; without the
/// button once it did its job. Slack always sends the message along with a click on it;
/// otherwise `status` goes to the clicker alone.
fn updated_message(original: Option<PostedMessage>, status: &str, keep_button: bool) -> Value {
    let Some(original) = original else {
        return json!({"replace_original": false, "text": status});
    };
    let mut blocks = original.blocks;
    blocks.retain(|block| block["block_id"] != STATUS_BLOCK);
    if !keep_button {
        remove_action(&mut blocks, MARK_READ_ACTION);
    }
    blocks.truncate(MAX_BLOCKS - 1);
    blocks.push(json!({
        "type": "context",
        "block_id": STATUS_BLOCK,
        "elements": [{"type": "mrkdwn", "text": status}],
    }));
    json!({"replace_original": true, "text": original.text, "blocks": blocks})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instacart::InstacartError;

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-05-01T14:05:59Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn posted() -> PostedMessage {
        PostedMessage {
            text: "Robert on order 122233: oat milk?".to_owned(),
            blocks: vec![
                json!({"type": "section", "block_id": "a", "text": {"type": "mrkdwn", "text": "oat milk?"}}),
                json!({"type": "actions", "block_id": "mark_read", "elements": [
                    {"type": "button", "action_id": MARK_READ_ACTION, "value": "122233"}
                ]}),
                json!({"type": "context", "block_id": "b", "elements": []}),
            ],
        }
    }

    #[test]
    fn the_status_says_who_when_and_how_many_or_why_not() {
        assert_eq!(
            status_line(&Ok(15), Some("U0STAFF"), at()),
            "Marked as read by <@U0STAFF> at 14:05 UTC (15 messages)"
        );
        assert_eq!(
            status_line(&Ok(1), Some("U0STAFF"), at()),
            "Marked as read by <@U0STAFF> at 14:05 UTC (1 message)"
        );
        assert_eq!(
            status_line(&Err(InstacartError::NotFound.into()), None, at()),
            "Not marked as read (someone at 14:05 UTC): Instacart does not know this order."
        );
        assert_eq!(
            status_line(&Ok(2), Some("<!channel>"), at()),
            "Marked as read by someone at 14:05 UTC (2 messages)"
        );
    }

    #[test]
    fn a_success_drops_the_button_and_a_new_status_replaces_the_old() {
        let first = updated_message(Some(posted()), "failed once", true);
        assert_eq!(first["replace_original"], true);
        assert_eq!(first["text"], "Robert on order 122233: oat milk?");
        let blocks = first["blocks"].as_array().unwrap();
        assert_eq!(blocks.len(), 4, "button kept, status added: {first}");
        assert_eq!(blocks[3]["elements"][0]["text"], "failed once");

        let again = PostedMessage {
            text: first["text"].as_str().unwrap().to_owned(),
            blocks: blocks.clone(),
        };
        let done = updated_message(Some(again), "marked", false);
        let ids: Vec<&str> = done["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["block_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["a", "b", STATUS_BLOCK]);
        assert_eq!(done["blocks"][2]["elements"][0]["text"], "marked");

        let unknown = updated_message(None, "marked", false);
        assert_eq!(
            unknown,
            json!({"replace_original": false, "text": "marked"})
        );
    }
}
