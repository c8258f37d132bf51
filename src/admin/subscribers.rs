//! `/v1/subscribers`: who receives events, filtered how, signed with which secrets.
//!
//! A signing secret's value is shown twice only: in the response that creates the subscriber and
//! in the one that rotates its secret. Otherwise a subscriber shows `signing_secrets`: when each
//! secret that currently signs was created and, for one rotated out, when it stops signing.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{when_present, ApiError, ErrorBody, Problems};
use super::extract::{path_id, ApiJson, ApiPath};
use super::AppState;
use crate::channels::slack::TargetFields;
use crate::domain::{EventType, OrderId, SigningSecret, SubscriberId, ValidationError, WebhookUrl};
use crate::store::{
    Channel, NewSubscriber, SlackTarget, Subscriber, SubscriberFilter, SubscriberPatch,
    SubscriberStatus,
};

/// Longest accepted filter list and description.
const MAX_FILTER_ENTRIES: usize = 1000;
const MAX_DESCRIPTION_CHARS: usize = 500;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_subscriber, list_subscribers))
        .routes(routes!(
            get_subscriber,
            update_subscriber,
            delete_subscriber
        ))
        .routes(routes!(rotate_secret))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubscriberRequest {
    /// How the subscriber is reached: `webhook` or `slack`.
    #[schema(example = "webhook")]
    pub kind: String,
    /// Required for `webhook`: an http(s) URL.
    #[schema(example = "https://hooks.example.com/instacart")]
    pub url: Option<String>,
    /// `slack` with an incoming webhook: its URL (https). A credential: shown masked.
    #[schema(value_type = Option<String>, example = "https://hooks.slack.com/services/T000/B000/XXXX")]
    pub webhook_url: Option<SecretString>,
    /// `slack` through the Web API: a bot token (`xoxb-...`), with `channel`. A credential:
    /// shown masked. With a bot token, each order gets its own thread.
    #[schema(value_type = Option<String>, example = "xoxb-1234-5678-abcd")]
    pub bot_token: Option<SecretString>,
    /// `slack` with `bot_token`: the channel ID (or `#name`) to post in.
    #[schema(example = "C0123ABCD")]
    pub channel: Option<String>,
    /// Only these event types; leave out (or null) for every type.
    #[schema(example = json!(["chat_message.created"]))]
    pub event_types: Option<Vec<String>>,
    /// Only events of these orders; leave out (or null) for every order.
    pub order_ids: Option<Vec<String>>,
    pub description: Option<String>,
}

/// A partial update: absent fields stay as they are; `null` clears a filter or the description.
/// A subscriber keeps its kind: only its own kind's target fields may change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSubscriberRequest {
    pub url: Option<String>,
    /// `slack`: switches to this incoming webhook.
    #[schema(value_type = Option<String>)]
    pub webhook_url: Option<SecretString>,
    /// `slack`: a new bot token (`channel` is kept unless given too).
    #[schema(value_type = Option<String>)]
    pub bot_token: Option<SecretString>,
    /// `slack`: a new channel for the bot (the token is kept unless given too).
    pub channel: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Vec<String>>, nullable)]
    pub event_types: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Vec<String>>, nullable)]
    pub order_ids: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, nullable)]
    pub description: Option<Option<String>>,
    /// `active` or `disabled`; setting `active` re-enables a subscriber a receiver's 410 disabled.
    #[schema(example = "active")]
    pub status: Option<String>,
}

/// Tells `"field": null` (`Some(None)`) from an absent field (`None`, through `default`).
fn nullable<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChannelView {
    Webhook {
        url: String,
    },
    Email {
        to: Vec<String>,
        digest_seconds: Option<u32>,
    },
    /// Slack credentials are secrets: only their last characters are shown.
    Slack {
        webhook_url: Option<String>,
        bot_token: Option<String>,
        channel: Option<String>,
    },
}

impl From<Channel> for ChannelView {
    fn from(channel: Channel) -> Self {
        match channel {
            Channel::Webhook { url } => ChannelView::Webhook { url },
            Channel::Email { to, digest_seconds } => ChannelView::Email { to, digest_seconds },
            Channel::Slack {
                target: SlackTarget::IncomingWebhook { webhook_url },
            } => ChannelView::Slack {
                webhook_url: Some(mask(&webhook_url)),
                bot_token: None,
                channel: None,
            },
            Channel::Slack {
                target: SlackTarget::Bot { bot_token, channel },
            } => ChannelView::Slack {
                webhook_url: None,
                bot_token: Some(mask(&bot_token)),
                channel: Some(channel),
            },
        }
    }
}

/// `****` and the last four characters: enough to tell two credentials apart.
fn mask(secret: &str) -> String {
    let tail: String = secret
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("****{tail}")
}

/// A secret that currently signs deliveries; its value is never shown here.
#[derive(Debug, Serialize, ToSchema)]
pub struct SecretInfo {
    pub created_at: DateTime<Utc>,
    /// Set on a rotated-out secret: it signs beside the new one until then.
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriberView {
    #[schema(value_type = String, example = "sub_0192f0c1a8e47d3b9a6f2c5e8d1b4a70")]
    pub id: SubscriberId,
    #[serde(flatten)]
    pub channel: ChannelView,
    /// `null`: every event type.
    pub event_types: Option<Vec<EventType>>,
    /// `null`: every order.
    #[schema(value_type = Option<Vec<String>>)]
    pub order_ids: Option<Vec<OrderId>>,
    pub description: Option<String>,
    pub status: SubscriberStatus,
    /// Why it was disabled, e.g. its receiver answered 410 Gone.
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The secrets signing its deliveries now, newest first: two during a rotation's grace.
    pub signing_secrets: Vec<SecretInfo>,
}

impl SubscriberView {
    fn new(subscriber: Subscriber, now: DateTime<Utc>) -> Self {
        let signing_secrets = subscriber
            .secrets
            .iter()
            .filter(|s| s.expires_at.is_none_or(|at| at > now))
            .map(|s| SecretInfo {
                created_at: s.created_at,
                expires_at: s.expires_at,
            })
            .collect();
        Self {
            id: subscriber.id,
            channel: subscriber.channel.into(),
            event_types: subscriber.filter.event_types,
            order_ids: subscriber.filter.order_ids,
            description: subscriber.description,
            status: subscriber.status,
            disabled_reason: subscriber.disabled_reason,
            created_at: subscriber.created_at,
            updated_at: subscriber.updated_at,
            signing_secrets,
        }
    }
}

/// A subscriber with its newest secret: only returned on creation and rotation. `Debug` redacts
/// the secret.
#[derive(Serialize, ToSchema)]
pub struct SubscriberWithSecret {
    #[serde(flatten)]
    pub subscriber: SubscriberView,
    /// Verifies the `webhook-signature` header (Standard Webhooks). Shown only this once.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    pub secret: String,
}

impl std::fmt::Debug for SubscriberWithSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriberWithSecret")
            .field("subscriber", &self.subscriber)
            .field("secret", &"[redacted]")
            .finish()
    }
}

impl SubscriberWithSecret {
    fn new(subscriber: Subscriber, secret: &SigningSecret, now: DateTime<Utc>) -> Self {
        Self {
            subscriber: SubscriberView::new(subscriber, now),
            secret: secret.expose().to_owned(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriberList {
    pub data: Vec<SubscriberView>,
}

fn check_channel(
    request: &CreateSubscriberRequest,
    allow_private: bool,
) -> Result<Channel, ValidationError> {
    let slack = slack_fields(&request.webhook_url, &request.bot_token, &request.channel);
    match request.kind.as_str() {
        "webhook" => {
            if let Some(field) = slack.first_given() {
                return Err(foreign(field, "slack"));
            }
            let url = request.url.as_deref().ok_or_else(|| {
                ValidationError::new("url", "is required for webhook subscribers")
            })?;
            Ok(webhook(WebhookUrl::parse("url", url, allow_private)?))
        }
        "slack" => {
            if request.url.is_some() {
                return Err(foreign("url", "webhook"));
            }
            Ok(Channel::Slack {
                target: slack.target(allow_private)?,
            })
        }
        _ => Err(ValidationError::new(
            "kind",
            "must be one of webhook, slack",
        )),
    }
}

/// The channel after a partial update of `current` (`None`: unchanged). The kind stays: a field
/// of another kind is refused rather than silently turning, say, a Slack subscriber into a
/// webhook.
fn patch_channel(
    current: &Channel,
    request: &UpdateSubscriberRequest,
    allow_private: bool,
) -> Result<Option<Channel>, ValidationError> {
    let slack = slack_fields(&request.webhook_url, &request.bot_token, &request.channel);
    match current {
        Channel::Webhook { .. } => {
            if let Some(field) = slack.first_given() {
                return Err(foreign(field, "slack"));
            }
            request
                .url
                .as_deref()
                .map(|raw| WebhookUrl::parse("url", raw, allow_private).map(webhook))
                .transpose()
        }
        Channel::Slack { target } => {
            if request.url.is_some() {
                return Err(foreign("url", "webhook"));
            }
            Ok(slack
                .patch(target, allow_private)?
                .map(|target| Channel::Slack { target }))
        }
        Channel::Email { .. } => match (request.url.is_some(), slack.first_given()) {
            (true, _) => Err(foreign("url", "webhook")),
            (false, Some(field)) => Err(foreign(field, "slack")),
            (false, None) => Ok(None),
        },
    }
}

fn slack_fields<'a>(
    webhook_url: &'a Option<SecretString>,
    bot_token: &'a Option<SecretString>,
    channel: &'a Option<String>,
) -> TargetFields<'a> {
    TargetFields {
        webhook_url: webhook_url.as_ref().map(ExposeSecret::expose_secret),
        bot_token: bot_token.as_ref().map(ExposeSecret::expose_secret),
        channel: channel.as_deref(),
    }
}

fn foreign(field: &str, kind: &str) -> ValidationError {
    ValidationError::new(field, format!("applies to {kind} subscribers only"))
}

fn webhook(url: WebhookUrl) -> Channel {
    Channel::Webhook {
        url: url.to_string(),
    }
}

/// A filter list: non-empty, bounded, each entry valid (`field[i]` names a bad one), no repeats.
fn check_filter<T: PartialEq>(
    problems: &mut Problems,
    field: &str,
    raw: &[String],
    parse: impl Fn(&str, &str) -> Result<T, ValidationError>,
) -> Option<Vec<T>> {
    if raw.is_empty() {
        return problems.check(Err(ValidationError::new(
            field,
            "must not be empty (leave it out, or null, to match everything)",
        )));
    }
    if raw.len() > MAX_FILTER_ENTRIES {
        return problems.check(Err(ValidationError::new(
            field,
            format!("must have at most {MAX_FILTER_ENTRIES} entries"),
        )));
    }
    let parsed = problems.check_each(
        raw.iter()
            .enumerate()
            .map(|(i, value)| parse(&format!("{field}[{i}]"), value)),
    )?;
    let mut unique = Vec::with_capacity(parsed.len());
    for item in parsed {
        if !unique.contains(&item) {
            unique.push(item);
        }
    }
    Some(unique)
}

fn check_description(description: String) -> Result<String, ValidationError> {
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(ValidationError::new(
            "description",
            format!("must be at most {MAX_DESCRIPTION_CHARS} characters long"),
        ));
    }
    Ok(description)
}

fn check_status(status: &str) -> Result<SubscriberStatus, ValidationError> {
    match status {
        "active" => Ok(SubscriberStatus::Active),
        "disabled" => Ok(SubscriberStatus::Disabled),
        _ => Err(ValidationError::new(
            "status",
            "must be one of active, disabled",
        )),
    }
}

/// Creates a subscriber and its first signing secret.
#[utoipa::path(
    post,
    path = "/subscribers",
    tag = "subscribers",
    request_body = CreateSubscriberRequest,
    responses(
        (status = 201, description = "Created; the only response showing this secret", body = SubscriberWithSecret),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 422, description = "Invalid fields, each named", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
async fn create_subscriber(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<CreateSubscriberRequest>,
) -> Result<(StatusCode, Json<SubscriberWithSecret>), ApiError> {
    let allow_private = state.settings.delivery.allow_private_targets;
    let mut problems = Problems::default();
    let channel = problems.check(check_channel(&request, allow_private));
    let event_types = when_present(request.event_types, |raw| {
        check_filter(&mut problems, "event_types", &raw, EventType::parse)
    });
    let order_ids = when_present(request.order_ids, |raw| {
        check_filter(&mut problems, "order_ids", &raw, OrderId::parse)
    });
    let description = when_present(request.description, |raw| {
        problems.check(check_description(raw))
    });
    let (Some(channel), Some(event_types), Some(order_ids), Some(description)) =
        (channel, event_types, order_ids, description)
    else {
        return Err(problems.into());
    };

    let secret = SigningSecret::generate();
    let now = Utc::now();
    let subscriber = state
        .store
        .create_subscriber(NewSubscriber {
            id: SubscriberId::generate(),
            channel,
            filter: SubscriberFilter {
                event_types,
                order_ids,
            },
            description,
            secret: secret.clone(),
            created_at: now,
        })
        .await?;
    tracing::info!(subscriber_id = %subscriber.id, "subscriber created");
    Ok((
        StatusCode::CREATED,
        Json(SubscriberWithSecret::new(subscriber, &secret, now)),
    ))
}

/// Lists every subscriber (without secret values).
#[utoipa::path(
    get,
    path = "/subscribers",
    tag = "subscribers",
    responses((status = 200, description = "All subscribers", body = SubscriberList))
)]
async fn list_subscribers(State(state): State<AppState>) -> Result<Json<SubscriberList>, ApiError> {
    let now = Utc::now();
    let subscribers = state.store.list_subscribers().await?;
    Ok(Json(SubscriberList {
        data: subscribers
            .into_iter()
            .map(|s| SubscriberView::new(s, now))
            .collect(),
    }))
}

/// One subscriber (without secret values).
#[utoipa::path(
    get,
    path = "/subscribers/{id}",
    tag = "subscribers",
    params(("id" = String, Path, description = "Subscriber id (`sub_...`)")),
    responses(
        (status = 200, description = "The subscriber", body = SubscriberView),
        (status = 404, description = "Unknown subscriber", body = ErrorBody),
    )
)]
async fn get_subscriber(
    State(state): State<AppState>,
    ApiPath(raw_id): ApiPath<String>,
) -> Result<Json<SubscriberView>, ApiError> {
    let id = path_id("subscriber", &raw_id, SubscriberId::parse)?;
    let subscriber = state
        .store
        .get_subscriber(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("subscriber", raw_id))?;
    Ok(Json(SubscriberView::new(subscriber, Utc::now())))
}

/// Changes a subscriber's target, filters, description or status.
#[utoipa::path(
    patch,
    path = "/subscribers/{id}",
    tag = "subscribers",
    params(("id" = String, Path, description = "Subscriber id (`sub_...`)")),
    request_body = UpdateSubscriberRequest,
    responses(
        (status = 200, description = "The updated subscriber", body = SubscriberView),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 404, description = "Unknown subscriber", body = ErrorBody),
        (status = 422, description = "Invalid fields, each named", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(subscriber_id = %raw_id))]
async fn update_subscriber(
    State(state): State<AppState>,
    ApiPath(raw_id): ApiPath<String>,
    ApiJson(request): ApiJson<UpdateSubscriberRequest>,
) -> Result<Json<SubscriberView>, ApiError> {
    let id = path_id("subscriber", &raw_id, SubscriberId::parse)?;
    let allow_private = state.settings.delivery.allow_private_targets;
    let mut problems = Problems::default();
    let changes_target = request.url.is_some()
        || !slack_fields(&request.webhook_url, &request.bot_token, &request.channel).is_empty();
    let channel = if changes_target {
        let current = state
            .store
            .get_subscriber(&id)
            .await?
            .ok_or_else(|| ApiError::not_found("subscriber", raw_id.clone()))?;
        problems.check(patch_channel(&current.channel, &request, allow_private))
    } else {
        Some(None)
    };
    let event_types = when_present(request.event_types, |filter| {
        when_present(filter, |raw| {
            check_filter(&mut problems, "event_types", &raw, EventType::parse)
        })
    });
    let order_ids = when_present(request.order_ids, |filter| {
        when_present(filter, |raw| {
            check_filter(&mut problems, "order_ids", &raw, OrderId::parse)
        })
    });
    let description = when_present(request.description, |description| {
        when_present(description, |raw| problems.check(check_description(raw)))
    });
    let status = when_present(request.status, |raw| problems.check(check_status(&raw)));
    let (Some(channel), Some(event_types), Some(order_ids), Some(description), Some(status)) =
        (channel, event_types, order_ids, description, status)
    else {
        return Err(problems.into());
    };

    let patch = SubscriberPatch {
        channel,
        event_types,
        order_ids,
        description,
        status,
    };
    let subscriber = state
        .store
        .update_subscriber(&id, patch, Utc::now())
        .await?
        .ok_or_else(|| ApiError::not_found("subscriber", raw_id))?;
    Ok(Json(SubscriberView::new(subscriber, Utc::now())))
}

/// Deletes a subscriber; its pending deliveries are parked as failed.
#[utoipa::path(
    delete,
    path = "/subscribers/{id}",
    tag = "subscribers",
    params(("id" = String, Path, description = "Subscriber id (`sub_...`)")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "Unknown subscriber", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(subscriber_id = %raw_id))]
async fn delete_subscriber(
    State(state): State<AppState>,
    ApiPath(raw_id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = path_id("subscriber", &raw_id, SubscriberId::parse)?;
    if state.store.delete_subscriber(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("subscriber", raw_id))
    }
}

/// Issues a new signing secret. The previous one keeps signing beside it for
/// `delivery.secret_rotation_grace`, so receivers can switch over without dropping deliveries.
#[utoipa::path(
    post,
    path = "/subscribers/{id}/secret/rotate",
    tag = "subscribers",
    params(("id" = String, Path, description = "Subscriber id (`sub_...`)")),
    responses(
        (status = 200, description = "The new secret; the only response showing it", body = SubscriberWithSecret),
        (status = 404, description = "Unknown subscriber", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(subscriber_id = %raw_id))]
async fn rotate_secret(
    State(state): State<AppState>,
    ApiPath(raw_id): ApiPath<String>,
) -> Result<Json<SubscriberWithSecret>, ApiError> {
    let id = path_id("subscriber", &raw_id, SubscriberId::parse)?;
    let secret = SigningSecret::generate();
    let now = Utc::now();
    // Saturates on an absurd configured grace.
    let old_expires_at = crate::time::after(now, state.settings.delivery.secret_rotation_grace);
    let subscriber = state
        .store
        .rotate_secret(&id, secret.clone(), now, old_expires_at)
        .await?
        .ok_or_else(|| ApiError::not_found("subscriber", raw_id))?;
    tracing::info!(%old_expires_at, "signing secret rotated");
    Ok(Json(SubscriberWithSecret::new(subscriber, &secret, now)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_name_the_bad_entry_and_drop_repeats() {
        let mut problems = Problems::default();
        let raw = ["chat_message.created", "chat_message.created"].map(String::from);
        assert_eq!(
            check_filter(&mut problems, "event_types", &raw, EventType::parse),
            Some(vec![EventType::ChatMessageCreated])
        );

        let raw = ["chat_message.created", "nope"].map(String::from);
        assert_eq!(
            check_filter(&mut problems, "event_types", &raw, EventType::parse),
            None
        );
        let ApiError::Invalid(found) = ApiError::from(problems) else {
            panic!("expected a validation error");
        };
        assert_eq!(found[0].field, "event_types[1]");
    }

    #[test]
    fn a_subscriber_with_its_secret_never_shows_the_secret_in_debug() {
        let now = Utc::now();
        let secret = SigningSecret::generate();
        let subscriber = Subscriber {
            id: SubscriberId::generate(),
            channel: Channel::Webhook {
                url: "https://hooks.example.com/in".to_owned(),
            },
            filter: SubscriberFilter::default(),
            description: None,
            status: SubscriberStatus::Active,
            disabled_reason: None,
            created_at: now,
            updated_at: now,
            secrets: Vec::new(),
        };
        let shown = format!("{:?}", SubscriberWithSecret::new(subscriber, &secret, now));
        assert!(
            shown.contains("hooks.example.com") && shown.contains("[redacted]"),
            "{shown}"
        );
        assert!(!shown.contains(secret.expose()), "{shown}");
    }
}
