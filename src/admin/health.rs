//! `GET /healthz`: for load balancers and orchestrators; no authentication.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Answers 200 while the store answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "meta",
    security(()),
    responses(
        (status = 200, description = "Healthy", body = Health),
        (status = 503, description = "The store is not answering", body = ErrorBody),
    )
)]
pub async fn healthz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    // The cheapest indexed read the store offers: it proves the database answers queries.
    state
        .store
        .next_poll_due()
        .await
        .map_err(ApiError::Unavailable)?;
    Ok(Json(Health { status: "ok" }))
}
