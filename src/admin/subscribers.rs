//! `/v1/subscribers`: who receives events, filtered how, signed with which secrets.
//!
//! A signing secret's value is shown twice only: in the response that creates the subscriber and
//! in the one that rotates its secret. Otherwise a subscriber shows `signing_secrets`: when each
//! secret that currently signs was created and, for one rotated out, when it stops signing.
//! Only webhooks are signed: other kinds show no secret at all.

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
use crate::config::Settings;
use crate::domain::TargetFields;
use crate::domain::{
    Channel, MarkReadPolicy, NewSubscriber, SlackTarget, Subscriber, SubscriberFilter,
    SubscriberPatch, SubscriberStatus,
};
use crate::domain::{
    EmailAddress, EventType, OrderId, SigningSecret, SubscriberId, ValidationError, WebhookUrl,
};

/// Longest accepted filter list and description.
const MAX_FILTER_ENTRIES: usize = 1000;
const MAX_DESCRIPTION_CHARS: usize = 500;
/// Most recipients of an e-mail subscriber, and the longest digest window (a day).
const MAX_RECIPIENTS: usize = 50;
const MAX_DIGEST_SECONDS: u32 = 86_400;

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
    /// How the subscriber is reached: `webhook`, `slack` or `email`.
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
    /// Required for `email`: the recipients' addresses.
    #[schema(example = json!(["staff@store.example"]))]
    pub to: Option<Vec<String>>,
    /// `email` only: events of one order within this many seconds go out as one e-mail.
    #[schema(example = 300)]
    pub digest_seconds: Option<u32>,
    /// Only these event types; leave out (or null) for every type.
    #[schema(example = json!(["chat_message.created"]))]
    pub event_types: Option<Vec<String>>,
    /// Only events of these orders; leave out (or null) for every order.
    pub order_ids: Option<Vec<String>>,
    pub description: Option<String>,
    /// `never` (the default: reading is a human act) or `on_delivery`: delivering a shopper's
    /// chat message to this subscriber marks the order's messages read at Connect.
    #[schema(example = "never")]
    pub mark_read: Option<String>,
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
    /// `email`: replaces the recipients.
    pub to: Option<Vec<String>>,
    /// `email`; `null` sends one e-mail per event again.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<u32>, nullable)]
    pub digest_seconds: Option<Option<u32>>,
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
    /// `never` or `on_delivery`.
    #[schema(example = "on_delivery")]
    pub mark_read: Option<String>,
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
            Channel::Webhook { url } => ChannelView::Webhook { url: url.into() },
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
    /// Whether delivering a shopper's message to it marks the order's messages read.
    pub mark_read: MarkReadPolicy,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The secrets signing its deliveries now, newest first: two during a rotation's grace.
    /// Webhooks only (left out for other kinds).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub signing_secrets: Vec<SecretInfo>,
}

/// Whether the subscriber's deliveries are signed, so it has secrets to show and rotate.
fn is_signed(channel: &Channel) -> bool {
    matches!(channel, Channel::Webhook { .. })
}

impl SubscriberView {
    fn new(subscriber: Subscriber, now: DateTime<Utc>) -> Self {
        let signed = is_signed(&subscriber.channel);
        let signing_secrets = subscriber
            .secrets
            .iter()
            .filter(|s| signed && s.expires_at.is_none_or(|at| at > now))
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
            mark_read: subscriber.mark_read,
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
    /// Webhooks only (left out for other kinds).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    pub secret: Option<String>,
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
        let secret = is_signed(&subscriber.channel).then(|| secret.expose().to_owned());
        Self {
            subscriber: SubscriberView::new(subscriber, now),
            secret,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriberList {
    pub data: Vec<SubscriberView>,
}

fn check_channel(
    problems: &mut Problems,
    request: &CreateSubscriberRequest,
    settings: &Settings,
) -> Option<Channel> {
    let allow_private = settings.delivery.allow_private_targets;
    match request.kind.as_str() {
        "email" => check_email(problems, request, settings),
        _ => problems.check(check_target(request, allow_private)),
    }
}

/// A webhook's or a Slack subscriber's target.
fn check_target(
    request: &CreateSubscriberRequest,
    allow_private: bool,
) -> Result<Channel, ValidationError> {
    let slack = slack_fields(&request.webhook_url, &request.bot_token, &request.channel);
    if let Some(field) = email_field(request.to.is_some(), request.digest_seconds.is_some()) {
        if matches!(request.kind.as_str(), "webhook" | "slack") {
            return Err(foreign(field, "email"));
        }
    }
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
            "must be one of webhook, slack, email",
        )),
    }
}

/// The first e-mail-only field given.
fn email_field(to: bool, digest_seconds: bool) -> Option<&'static str> {
    [("to", to), ("digest_seconds", digest_seconds)]
        .into_iter()
        .find_map(|(field, given)| given.then_some(field))
}

/// An e-mail subscriber's recipients and digest window; every bad address is named.
fn check_email(
    problems: &mut Problems,
    request: &CreateSubscriberRequest,
    settings: &Settings,
) -> Option<Channel> {
    let slack = slack_fields(&request.webhook_url, &request.bot_token, &request.channel);
    let others = problems.check(match (request.url.is_some(), slack.first_given()) {
        (true, _) => Err(foreign("url", "webhook")),
        (false, Some(field)) => Err(foreign(field, "slack")),
        (false, None) => Ok(()),
    });
    // Refused up front: its deliveries could only be parked.
    let configured = problems.check(match settings.email.smtp_url {
        Some(_) => Ok(()),
        None => Err(ValidationError::new(
            "kind",
            "email needs e-mail set up on this server (email.smtp_url)",
        )),
    });
    let to = match &request.to {
        Some(raw) => check_recipients(problems, raw),
        None => problems.check(Err(ValidationError::new(
            "to",
            "is required for email subscribers",
        ))),
    };
    let digest_seconds = problems.check(check_digest(request.digest_seconds));
    others?;
    configured?;
    Some(Channel::Email {
        to: to?,
        digest_seconds: digest_seconds?,
    })
}

/// The recipients: at least one, each a plain address (`to[i]` names a bad one), no repeats.
fn check_recipients(problems: &mut Problems, raw: &[String]) -> Option<Vec<String>> {
    if raw.is_empty() {
        return problems.check(Err(ValidationError::new(
            "to",
            "must list at least one address",
        )));
    }
    if raw.len() > MAX_RECIPIENTS {
        return problems.check(Err(ValidationError::new(
            "to",
            format!("must list at most {MAX_RECIPIENTS} addresses"),
        )));
    }
    let parsed = problems.check_each(
        raw.iter()
            .enumerate()
            .map(|(i, value)| EmailAddress::parse(&format!("to[{i}]"), value)),
    )?;
    let mut unique: Vec<String> = Vec::with_capacity(parsed.len());
    for address in parsed {
        let address = String::from(address);
        if !unique.iter().any(|u| u.eq_ignore_ascii_case(&address)) {
            unique.push(address);
        }
    }
    Some(unique)
}

fn check_digest(digest_seconds: Option<u32>) -> Result<Option<u32>, ValidationError> {
    match digest_seconds {
        Some(seconds) if !(1..=MAX_DIGEST_SECONDS).contains(&seconds) => Err(ValidationError::new(
            "digest_seconds",
            format!("must be between 1 and {MAX_DIGEST_SECONDS} (or left out, or null)"),
        )),
        _ => Ok(digest_seconds),
    }
}

/// An e-mail subscriber's channel after a PATCH of `to` and `digest_seconds` (`Some(None)`:
/// neither given; `None`: a problem was recorded).
fn patch_email(
    problems: &mut Problems,
    (to, digest_seconds): (&[String], Option<u32>),
    request: &UpdateSubscriberRequest,
) -> Option<Option<Channel>> {
    if request.to.is_none() && request.digest_seconds.is_none() {
        return Some(None);
    }
    let new_to = match &request.to {
        Some(raw) => check_recipients(problems, raw),
        None => Some(to.to_vec()),
    };
    let new_digest = match request.digest_seconds {
        Some(seconds) => problems.check(check_digest(seconds)),
        None => Some(digest_seconds),
    };
    Some(Some(Channel::Email {
        to: new_to?,
        digest_seconds: new_digest?,
    }))
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
    if let Some(field) = email_field(request.to.is_some(), request.digest_seconds.is_some()) {
        if !matches!(current, Channel::Email { .. }) {
            return Err(foreign(field, "email"));
        }
    }
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
        // Its own fields are `patch_email`'s, which reports every bad address.
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
    Channel::Webhook { url: url.into() }
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

fn check_mark_read(policy: &str) -> Result<MarkReadPolicy, ValidationError> {
    match policy {
        "never" => Ok(MarkReadPolicy::Never),
        "on_delivery" => Ok(MarkReadPolicy::OnDelivery),
        _ => Err(ValidationError::new(
            "mark_read",
            "must be one of never, on_delivery",
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
    let mut problems = Problems::default();
    let channel = check_channel(&mut problems, &request, &state.settings);
    let event_types = when_present(request.event_types, |raw| {
        check_filter(&mut problems, "event_types", &raw, EventType::parse)
    });
    let order_ids = when_present(request.order_ids, |raw| {
        check_filter(&mut problems, "order_ids", &raw, OrderId::parse)
    });
    let description = when_present(request.description, |raw| {
        problems.check(check_description(raw))
    });
    let mark_read = when_present(request.mark_read, |raw| {
        problems.check(check_mark_read(&raw))
    });
    let (Some(channel), Some(event_types), Some(order_ids), Some(description), Some(mark_read)) =
        (channel, event_types, order_ids, description, mark_read)
    else {
        return Err(problems.into());
    };

    // The store keeps a secret for every subscriber; for kinds that are not signed it is never
    // used nor shown.
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
            mark_read: mark_read.unwrap_or_default(),
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

/// Changes a subscriber's target, filters, description, status or mark-read policy.
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
        || !slack_fields(&request.webhook_url, &request.bot_token, &request.channel).is_empty()
        || email_field(request.to.is_some(), request.digest_seconds.is_some()).is_some();
    let channel = if changes_target {
        let current = state
            .store
            .get_subscriber(&id)
            .await?
            .ok_or_else(|| ApiError::not_found("subscriber", raw_id.clone()))?;
        let target = problems.check(patch_channel(&current.channel, &request, allow_private));
        match &current.channel {
            Channel::Email { to, digest_seconds } => {
                target.and_then(|_| patch_email(&mut problems, (to, *digest_seconds), &request))
            }
            _ => target,
        }
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
    let mark_read = when_present(request.mark_read, |raw| {
        problems.check(check_mark_read(&raw))
    });
    let (
        Some(channel),
        Some(event_types),
        Some(order_ids),
        Some(description),
        Some(status),
        Some(mark_read),
    ) = (
        channel,
        event_types,
        order_ids,
        description,
        status,
        mark_read,
    )
    else {
        return Err(problems.into());
    };

    let patch = SubscriberPatch {
        channel,
        event_types,
        order_ids,
        description,
        status,
        mark_read,
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
        (status = 409, description = "Not a webhook subscriber: nothing is signed", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(subscriber_id = %raw_id))]
async fn rotate_secret(
    State(state): State<AppState>,
    ApiPath(raw_id): ApiPath<String>,
) -> Result<Json<SubscriberWithSecret>, ApiError> {
    let id = path_id("subscriber", &raw_id, SubscriberId::parse)?;
    let current = state
        .store
        .get_subscriber(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("subscriber", raw_id.clone()))?;
    if !is_signed(&current.channel) {
        return Err(ApiError::Conflict(
            "only webhook subscribers have signing secrets".to_owned(),
        ));
    }
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
                url: "https://hooks.example.com/in".parse().unwrap(),
            },
            filter: SubscriberFilter::default(),
            description: None,
            status: SubscriberStatus::Active,
            disabled_reason: None,
            mark_read: MarkReadPolicy::default(),
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
