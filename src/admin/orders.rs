//! `/v1/orders`: which orders are watched, and how their polling stands.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{when_present, ApiError, ErrorBody, Problems};
use super::extract::{path_id, ApiJson, ApiPath};
use super::AppState;
use crate::domain::{FallbackReason, Order, OrderCounts, OrderState};
use crate::domain::{OrderId, UserId};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(watch_order, list_orders))
        .routes(routes!(get_order, stop_order))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WatchOrderRequest {
    #[schema(example = "122233")]
    pub order_id: String,
    /// The Instacart user the order belongs to, for user-scoped tokens.
    #[serde(default)]
    #[schema(example = "user-42")]
    pub user_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderView {
    #[schema(value_type = String, example = "122233")]
    pub order_id: OrderId,
    #[schema(value_type = Option<String>)]
    pub user_id: Option<UserId>,
    pub state: OrderState,
    /// Set when the order is polled through the chat-messages endpoint, and why.
    pub fallback_reason: Option<FallbackReason>,
    pub created_at: DateTime<Utc>,
    pub next_poll_at: Option<DateTime<Utc>>,
    pub last_polled_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
}

impl From<Order> for OrderView {
    fn from(order: Order) -> Self {
        Self {
            order_id: order.order_id,
            user_id: order.user_id,
            state: order.state,
            fallback_reason: order.fallback,
            created_at: order.created_at,
            next_poll_at: order.next_poll_at,
            last_polled_at: order.last_polled_at,
            last_error: order.last_error,
            consecutive_failures: order.consecutive_failures,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderDetail {
    #[serde(flatten)]
    pub order: OrderView,
    /// What the order has produced so far.
    pub counts: OrderCounts,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderList {
    pub data: Vec<OrderView>,
}

/// Starts watching an order; it is polled right away.
#[utoipa::path(
    post,
    path = "/orders",
    tag = "orders",
    request_body = WatchOrderRequest,
    responses(
        (status = 201, description = "Now watched (new, or watched again after it stopped)", body = OrderView),
        (status = 200, description = "Already watched; unchanged", body = OrderView),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 409, description = "Already watched with a different user_id", body = ErrorBody),
        (status = 422, description = "Invalid order_id or user_id", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(order_id = %request.order_id))]
async fn watch_order(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<WatchOrderRequest>,
) -> Result<(StatusCode, Json<OrderView>), ApiError> {
    let mut problems = Problems::default();
    let order_id = problems.check(OrderId::parse("order_id", &request.order_id));
    let user_id = when_present(request.user_id.as_deref(), |raw| {
        problems.check(UserId::parse("user_id", raw))
    });
    let (Some(order_id), Some(user_id)) = (order_id, user_id) else {
        return Err(problems.into());
    };

    let (order, started) = state
        .store
        .watch_order(&order_id, user_id.as_ref(), Utc::now())
        .await?;
    if started {
        state.poller_wake.notify_one();
        return Ok((StatusCode::CREATED, Json(order.into())));
    }
    if user_id.is_some() && user_id != order.user_id {
        return Err(ApiError::Conflict(format!(
            "order `{order_id}` is already watched with a different user_id; \
             stop it (DELETE) and watch it again to change it"
        )));
    }
    Ok((StatusCode::OK, Json(order.into())))
}

/// Lists every order the bridge knows, whatever its state.
#[utoipa::path(
    get,
    path = "/orders",
    tag = "orders",
    responses((status = 200, description = "All orders", body = OrderList))
)]
async fn list_orders(State(state): State<AppState>) -> Result<Json<OrderList>, ApiError> {
    let orders = state.store.list_orders().await?;
    Ok(Json(OrderList {
        data: orders.into_iter().map(OrderView::from).collect(),
    }))
}

/// One order's polling state and what it has produced.
#[utoipa::path(
    get,
    path = "/orders/{order_id}",
    tag = "orders",
    params(("order_id" = String, Path, description = "The Instacart order id")),
    responses(
        (status = 200, description = "The order", body = OrderDetail),
        (status = 404, description = "Unknown order", body = ErrorBody),
    )
)]
async fn get_order(
    State(state): State<AppState>,
    ApiPath(raw_id): ApiPath<String>,
) -> Result<Json<OrderDetail>, ApiError> {
    let order_id = path_id("order", &raw_id, OrderId::parse)?;
    let (order, counts) = state
        .store
        .get_order(&order_id)
        .await?
        .ok_or_else(|| ApiError::not_found("order", raw_id))?;
    Ok(Json(OrderDetail {
        order: order.into(),
        counts,
    }))
}

/// Stops watching an order. Its events and deliveries stay.
#[utoipa::path(
    delete,
    path = "/orders/{order_id}",
    tag = "orders",
    params(("order_id" = String, Path, description = "The Instacart order id")),
    responses(
        (status = 204, description = "No longer watched"),
        (status = 404, description = "Unknown order", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(order_id = %raw_id))]
async fn stop_order(
    State(state): State<AppState>,
    ApiPath(raw_id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let order_id = path_id("order", &raw_id, OrderId::parse)?;
    if state.store.stop_order(&order_id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("order", raw_id))
    }
}
