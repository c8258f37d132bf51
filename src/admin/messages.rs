//! `/v1/orders/{order_id}/messages`: talking back to an order's shopper through Connect.
//!
//! Any order will do, watched or not. A known order's stored `user_id` picks the token identity
//! (giving another one is a 409, as when watching it again); for an unknown order the optional
//! `?user_id=` does, and without it the client-credentials token is used.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::extract::{path_id, ApiJson, ApiPath, ApiQuery};
use super::AppState;
use crate::domain::{MessageBody, OrderId, UserId};
use crate::instacart::models::{MarkReadResponse, SendMessageResponse};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(send_message))
        .routes(routes!(mark_read))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMessage {
    /// Not blank, at most 1000 characters (not bytes); sent as given.
    #[schema(example = "Oat milk is gone? Any plant milk will do, thanks!")]
    pub body: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct IdentityQuery {
    /// For an order the bridge does not know: the Instacart user it belongs to, for a
    /// user-assertion token. A known order uses its own.
    pub user_id: Option<String>,
}

/// The message as Connect recorded it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SentMessage {
    /// Connect's id of the message: the chat shows it under this id.
    #[schema(example = 123)]
    pub id: i64,
    #[serde(rename = "type")]
    #[schema(example = "CHAT")]
    pub kind: String,
    pub created_at: DateTime<Utc>,
    pub timezone: String,
}

impl From<SendMessageResponse> for SentMessage {
    fn from(sent: SendMessageResponse) -> Self {
        Self {
            id: sent.id,
            kind: sent.kind,
            created_at: sent.created_at,
            timezone: sent.timezone,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessagesRead {
    /// How many of the shopper's messages Connect marked read.
    #[schema(example = 15)]
    pub messages_read_count: i64,
}

impl From<MarkReadResponse> for MessagesRead {
    fn from(read: MarkReadResponse) -> Self {
        Self {
            messages_read_count: read.messages_read_count,
        }
    }
}

/// Sends a message to the order's shopper. The body is checked before Connect is called, with
/// Connect's own rules and wording.
#[utoipa::path(
    post,
    path = "/orders/{order_id}/messages",
    tag = "messages",
    params(("order_id" = String, Path, description = "The Instacart order id"), IdentityQuery),
    request_body = NewMessage,
    responses(
        (status = 201, description = "Sent; Connect's record of the message", body = SentMessage),
        (status = 400, description = "Malformed request (`invalid_request`), or a blank or too long `body` (code `1001`, field `body`, Connect's wording, whether the bridge or Connect refused it)", body = ErrorBody),
        (status = 404, description = "Impossible order id (`not_found`), or Connect does not know the order (`upstream_not_found`)", body = ErrorBody),
        (status = 409, description = "Connect refused: chat disabled or no shopper available (`messaging_not_allowed`), shopper data withheld (`shopper_pii_redacted`), the order's user id needed (`upstream_user_id_not_found`); or `user_id` differs from the known order's (`conflict`)", body = ErrorBody),
        (status = 422, description = "Invalid `user_id`", body = ErrorBody),
        (status = 429, description = "Connect's rate limit (`upstream_rate_limited`); `Retry-After` when Connect gave one", body = ErrorBody),
        (status = 502, description = "Connect unavailable (`upstream_unavailable`), refused the bridge's credentials (`upstream_auth_failed`) or answered an undocumented error (`upstream_error`)", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(order_id = %raw_id))]
async fn send_message(
    State(state): State<AppState>,
    ApiPath(raw_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<IdentityQuery>,
    ApiJson(request): ApiJson<NewMessage>,
) -> Result<(StatusCode, Json<SentMessage>), ApiError> {
    let order_id = path_id("order", &raw_id, OrderId::parse)?;
    let body = MessageBody::parse("body", &request.body).map_err(ApiError::InvalidMessage)?;
    let sent = state
        .talkback
        .send_to_shopper(&order_id, given_user(query)?, &body, None)
        .await?;
    Ok((StatusCode::CREATED, Json(sent.into())))
}

/// Marks the shopper's messages of the order read at Connect.
#[utoipa::path(
    put,
    path = "/orders/{order_id}/messages/read",
    tag = "messages",
    params(("order_id" = String, Path, description = "The Instacart order id"), IdentityQuery),
    responses(
        (status = 200, description = "Marked read; Connect's count", body = MessagesRead),
        (status = 404, description = "Impossible order id (`not_found`), or Connect does not know the order (`upstream_not_found`)", body = ErrorBody),
        (status = 409, description = "Connect refused (`shopper_pii_redacted`, `upstream_user_id_not_found`), or `user_id` differs from the known order's (`conflict`)", body = ErrorBody),
        (status = 422, description = "Invalid `user_id`", body = ErrorBody),
        (status = 429, description = "Connect's rate limit (`upstream_rate_limited`); `Retry-After` when Connect gave one", body = ErrorBody),
        (status = 502, description = "Connect unavailable (`upstream_unavailable`), refused the bridge's credentials (`upstream_auth_failed`) or answered an undocumented error (`upstream_error`)", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(order_id = %raw_id))]
async fn mark_read(
    State(state): State<AppState>,
    ApiPath(raw_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<IdentityQuery>,
) -> Result<Json<MessagesRead>, ApiError> {
    let order_id = path_id("order", &raw_id, OrderId::parse)?;
    let read = state
        .talkback
        .mark_read(&order_id, given_user(query)?, &[])
        .await?;
    Ok(Json(read.into()))
}

/// The `user_id` of the query, checked.
fn given_user(query: IdentityQuery) -> Result<Option<UserId>, ApiError> {
    Ok(query
        .user_id
        .as_deref()
        .map(|raw| UserId::parse("user_id", raw))
        .transpose()?)
}
