//! `/v1/deliveries`: each event's way to each subscriber, with every attempt, and manual retry.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{when_present, ApiError, ErrorBody, Problems};
use super::extract::{path_id, ApiPath, ApiQuery};
use super::AppState;
use crate::domain::{Attempt, Delivery, DeliveryStatus};
use crate::domain::{DeliveryId, EventId, EventType, OrderId, SubscriberId, ValidationError};
use crate::store::{DeliveryFilter, RetryOutcome};

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_deliveries))
        .routes(routes!(get_delivery))
        .routes(routes!(retry_delivery))
}

/// Every value is read as text and validated here, so a bad one is named in a 422.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    #[param(value_type = Option<DeliveryStatus>)]
    pub status: Option<String>,
    /// `sub_...`
    pub subscriber_id: Option<String>,
    pub order_id: Option<String>,
    /// At most this many, newest first (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    #[schema(value_type = String, example = "dlv_0192f0c1a8e47d3b9a6f2c5e8d1b4a70")]
    pub id: DeliveryId,
    /// Also the `webhook-id` the receiver sees: its idempotency key.
    #[schema(value_type = String)]
    pub event_id: EventId,
    pub event_type: EventType,
    #[schema(value_type = String)]
    pub order_id: OrderId,
    #[schema(value_type = String)]
    pub subscriber_id: SubscriberId,
    pub status: DeliveryStatus,
    pub attempt_count: u32,
    /// When a pending delivery is next tried.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// Oldest first.
    pub attempts: Vec<Attempt>,
}

impl From<Delivery> for DeliveryView {
    fn from(delivery: Delivery) -> Self {
        Self {
            id: delivery.id,
            event_id: delivery.event_id,
            event_type: delivery.event_type,
            order_id: delivery.order_id,
            subscriber_id: delivery.subscriber_id,
            status: delivery.status,
            attempt_count: delivery.attempt_count,
            next_attempt_at: delivery.next_attempt_at,
            created_at: delivery.created_at,
            attempts: delivery.attempts,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    pub data: Vec<DeliveryView>,
}

fn check_status(raw: &str) -> Result<DeliveryStatus, ValidationError> {
    [
        DeliveryStatus::Pending,
        DeliveryStatus::Delivered,
        DeliveryStatus::Failed,
    ]
    .into_iter()
    .find(|s| s.as_str() == raw)
    .ok_or_else(|| ValidationError::new("status", "must be one of pending, delivered, failed"))
}

fn check_limit(raw: &str) -> Result<u32, ValidationError> {
    raw.parse()
        .ok()
        .filter(|n| (1..=MAX_LIMIT).contains(n))
        .ok_or_else(|| {
            ValidationError::new(
                "limit",
                format!("must be a whole number from 1 to {MAX_LIMIT}"),
            )
        })
}

impl DeliveryQuery {
    fn into_filter(self) -> Result<DeliveryFilter, ApiError> {
        let mut problems = Problems::default();
        let status = when_present(self.status, |raw| problems.check(check_status(&raw)));
        let subscriber_id = when_present(self.subscriber_id, |raw| {
            problems.check(SubscriberId::parse("subscriber_id", &raw))
        });
        let order_id = when_present(self.order_id, |raw| {
            problems.check(OrderId::parse("order_id", &raw))
        });
        let limit = when_present(self.limit, |raw| problems.check(check_limit(&raw)));
        let (Some(status), Some(subscriber_id), Some(order_id), Some(limit)) =
            (status, subscriber_id, order_id, limit)
        else {
            return Err(problems.into());
        };
        Ok(DeliveryFilter {
            status,
            subscriber_id,
            order_id,
            limit: limit.unwrap_or(DEFAULT_LIMIT),
        })
    }
}

/// Lists deliveries with their attempts, filtered by status, subscriber and order.
#[utoipa::path(
    get,
    path = "/deliveries",
    tag = "deliveries",
    params(DeliveryQuery),
    responses(
        (status = 200, description = "Matching deliveries", body = DeliveryList),
        (status = 400, description = "Unknown query parameter", body = ErrorBody),
        (status = 422, description = "Invalid query value, named", body = ErrorBody),
    )
)]
async fn list_deliveries(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<DeliveryQuery>,
) -> Result<Json<DeliveryList>, ApiError> {
    let filter = query.into_filter()?;
    let deliveries = state.store.list_deliveries(&filter).await?;
    Ok(Json(DeliveryList {
        data: deliveries.into_iter().map(DeliveryView::from).collect(),
    }))
}

/// One delivery with its attempts.
#[utoipa::path(
    get,
    path = "/deliveries/{id}",
    tag = "deliveries",
    params(("id" = String, Path, description = "Delivery id (`dlv_...`)")),
    responses(
        (status = 200, description = "The delivery", body = DeliveryView),
        (status = 404, description = "Unknown delivery", body = ErrorBody),
    )
)]
async fn get_delivery(
    State(state): State<AppState>,
    ApiPath(raw_id): ApiPath<String>,
) -> Result<Json<DeliveryView>, ApiError> {
    let id = path_id("delivery", &raw_id, DeliveryId::parse)?;
    let delivery = state
        .store
        .get_delivery(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("delivery", raw_id))?;
    Ok(Json(delivery.into()))
}

/// Makes a delivery pending and due now, whatever its status (a delivered one is sent again,
/// under the same event id).
#[utoipa::path(
    post,
    path = "/deliveries/{id}/retry",
    tag = "deliveries",
    params(("id" = String, Path, description = "Delivery id (`dlv_...`)")),
    responses(
        (status = 202, description = "Queued; the dispatcher sends it shortly", body = DeliveryView),
        (status = 404, description = "Unknown delivery", body = ErrorBody),
        (status = 409, description = "Its subscriber is disabled or deleted, or it is being attempted right now", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(delivery_id = %raw_id))]
async fn retry_delivery(
    State(state): State<AppState>,
    ApiPath(raw_id): ApiPath<String>,
) -> Result<(StatusCode, Json<DeliveryView>), ApiError> {
    let id = path_id("delivery", &raw_id, DeliveryId::parse)?;
    // The store checks the subscriber and the claim in the retry's own transaction, so neither
    // can change between the check and the retry.
    let delivery = match state.store.retry_delivery(&id, Utc::now()).await? {
        RetryOutcome::Queued(delivery) => delivery,
        RetryOutcome::NotFound => return Err(ApiError::not_found("delivery", raw_id)),
        RetryOutcome::SubscriberDeleted(subscriber) => {
            return Err(ApiError::Conflict(format!(
                "subscriber `{subscriber}` of this delivery was deleted"
            )))
        }
        RetryOutcome::SubscriberDisabled(subscriber) => {
            return Err(ApiError::Conflict(format!(
            "subscriber `{subscriber}` is disabled; re-enable it (PATCH status \"active\") first"
        )))
        }
        RetryOutcome::BeingAttempted => {
            return Err(ApiError::Conflict(
                "delivery is being attempted right now; retry once its attempt is recorded"
                    .to_owned(),
            ))
        }
    };
    state.outbox.wake();
    Ok((StatusCode::ACCEPTED, Json(delivery.into())))
}
