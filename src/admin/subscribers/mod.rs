//! `/v1/subscribers`: who receives events, filtered how, signed with which secrets.
//!
//! A signing secret's value is shown twice only: in the response that creates the subscriber and
//! in the one that rotates its secret. Otherwise a subscriber shows `signing_secrets`: when each
//! secret that currently signs was created and, for one rotated out, when it stops signing.
//! Only webhooks are signed: other kinds show no secret at all.

mod checks;
mod views;

pub use views::*;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::admin::error::{when_present, ApiError, ErrorBody, Problems};
use crate::admin::extract::{path_id, ApiJson, ApiPath};
use crate::admin::AppState;
use crate::domain::{Channel, NewSubscriber, SubscriberFilter, SubscriberPatch};
use crate::domain::{EventType, OrderId, SigningSecret, SubscriberId};

/// Longest accepted filter list and description.
use checks::*;

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
    use crate::domain::{MarkReadPolicy, Subscriber, SubscriberStatus};

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
