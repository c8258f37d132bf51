//! Talking back to the shopper, in one place for the admin API, the Slack endpoints and the
//! `on_delivery` mark-read policy: sending a message, marking the shopper's messages read, and
//! deciding whose token speaks for an order.
//!
//! What the bridge does in the chat is remembered (the message it sent and who sent it, the
//! readings a subscriber caused), so that when the poller sees it, it is not announced back to
//! whoever did it (echo suppression, see `poller::differ`). Answers to people in Slack go out
//! here too: they are talk-back, not deliveries.

use chrono::Utc;
use serde::Serialize;
use std::sync::Arc;
use url::Url;

use crate::channels::slack::{SlackApi, SlackApiError};
use crate::domain::{MessageBody, OrderId, SubscriberId, UserId};
use crate::instacart::models::{MarkReadResponse, SendMessageResponse};
use crate::instacart::{InstacartClient, InstacartError};
use crate::store::{Store, StoreError};
use crate::telemetry::error_chain;

#[derive(Debug, thiserror::Error)]
pub enum TalkbackError {
    /// A `user_id` was given for a known order registered with another one (or none).
    #[error("{0}")]
    IdentityConflict(String),
    #[error("the bridge could not read the order")]
    Store(#[from] StoreError),
    #[error("the Instacart call failed")]
    Upstream(#[from] InstacartError),
}

/// Cheap to clone: the process's one Connect client and Slack client.
#[derive(Clone)]
pub struct Talkback {
    store: Arc<dyn Store>,
    instacart: InstacartClient,
    slack: SlackApi,
}

impl Talkback {
    pub fn new(store: Arc<dyn Store>, instacart: InstacartClient, slack: SlackApi) -> Self {
        Self {
            store,
            instacart,
            slack,
        }
    }

    /// Whose token speaks for the order: a known order's stored user (`given` must then be
    /// that one, or absent), otherwise `given`; `None` is the client-credentials token.
    pub async fn identity(
        &self,
        order_id: &OrderId,
        given: Option<UserId>,
    ) -> Result<Option<UserId>, TalkbackError> {
        let Some((order, _)) = self.store.get_order(order_id).await? else {
            return Ok(given);
        };
        match given {
            Some(given) if order.user_id.as_ref() != Some(&given) => {
                let known = match &order.user_id {
                    Some(user_id) => format!("with user_id `{user_id}`"),
                    None => "without a user_id".to_owned(),
                };
                Err(TalkbackError::IdentityConflict(format!(
                    "order `{order_id}` is registered {known}; leave out `user_id` to use it"
                )))
            }
            _ => Ok(order.user_id),
        }
    }

    /// Sends `body` to the order's shopper and remembers it as sent on behalf of `origin`
    /// (`None`: the admin API), so its echo is announced as the retailer's and not to `origin`.
    #[tracing::instrument(skip_all, fields(order_id = %order_id))]
    pub async fn send_to_shopper(
        &self,
        order_id: &OrderId,
        given: Option<UserId>,
        body: &MessageBody,
        origin: Option<&SubscriberId>,
    ) -> Result<SendMessageResponse, TalkbackError> {
        let user_id = self.identity(order_id, given).await?;
        let sent = self
            .instacart
            .send_message(order_id, user_id.as_ref(), body.as_str())
            .await?;
        tracing::info!(message_id = sent.id, "message sent to the shopper");
        // The message is out: failing to remember it only costs its echo suppression, so the
        // caller still learns it was sent.
        if let Err(error) = self
            .store
            .record_sent_message(order_id, sent.id, origin, Utc::now())
            .await
        {
            tracing::error!(error = %error_chain(&error), "could not record the sent message");
        }
        Ok(sent)
    }

    /// Marks the shopper's messages of the order read. With `on_behalf_of` (the `on_delivery`
    /// subscribers that just received them), the readings are remembered as theirs, so they are
    /// not announced back to them.
    #[tracing::instrument(skip_all, fields(order_id = %order_id))]
    pub async fn mark_read(
        &self,
        order_id: &OrderId,
        given: Option<UserId>,
        on_behalf_of: &[SubscriberId],
    ) -> Result<MarkReadResponse, TalkbackError> {
        let user_id = self.identity(order_id, given).await?;
        let read = self.instacart.mark_read(order_id, user_id.as_ref()).await?;
        if !on_behalf_of.is_empty() {
            self.store
                .record_read_request(order_id, on_behalf_of, Utc::now())
                .await?;
        }
        Ok(read)
    }

    /// Answers a person in Slack with the bot of `bot_token` (`message` names the channel and
    /// the thread).
    pub async fn answer_in_slack(
        &self,
        bot_token: &str,
        message: &impl Serialize,
    ) -> Result<(), SlackApiError> {
        self.slack.post_message(bot_token, message).await
    }

    /// Replaces the Slack message an interaction came from, through its `response_url`.
    pub async fn update_in_slack(
        &self,
        response_url: &Url,
        message: &impl Serialize,
    ) -> Result<(), SlackApiError> {
        self.slack.respond(response_url, message).await
    }
}
