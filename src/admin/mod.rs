//! The admin HTTP API: JSON over HTTP, one module per resource, all of it through the store.
//! `/v1` routes need the admin bearer token; `/healthz` and `/openapi.json` are open. Slack's
//! callbacks (`/slack/...`, see [`slack`]) are verified by Slack's signature instead.

pub mod auth;
pub mod deliveries;
pub mod error;
pub mod extract;
pub mod health;
pub mod messages;
pub mod openapi;
pub mod orders;
pub mod slack;
pub mod subscribers;

use axum::extract::Request;
use axum::http::{Method, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::{Extension, Router};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Notify;
use tracing::Instrument;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::Settings;
use crate::outbox::Producer;
use crate::store::Store;
use crate::talkback::Talkback;
use error::ApiError;

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub settings: Arc<Settings>,
    /// Sending to the shopper, marking read, and answering people in Slack.
    pub talkback: Talkback,
    /// Notified when an order starts being watched, so the poller polls it right away.
    pub poller_wake: Arc<Notify>,
    /// Told when a delivery is queued by hand, so the dispatcher sends it right away.
    pub outbox: Producer,
}

impl AppState {
    pub fn new(
        store: Arc<dyn Store>,
        settings: Arc<Settings>,
        talkback: Talkback,
        outbox: Producer,
    ) -> Self {
        Self {
            store,
            settings,
            talkback,
            poller_wake: Arc::new(Notify::new()),
            outbox,
        }
    }
}

/// The whole HTTP surface, ready to serve: `/healthz`, `/openapi.json`, `/v1/...`, and
/// `/slack/...` when a Slack signing secret is configured.
pub fn router(state: AppState) -> Router {
    let v1 = OpenApiRouter::new()
        .merge(orders::router())
        .merge(messages::router())
        .merge(subscribers::router())
        .merge(deliveries::router())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin_token,
        ));
    let (router, document) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(openapi::openapi_json))
        .nest("/v1", v1)
        .split_for_parts();
    // Slack's callbacks are for Slack alone, not part of the documented API.
    let router = match state.settings.slack.signing_secret {
        Some(_) => router.merge(slack::router()),
        None => router,
    };
    router
        // After every route is in: it applies to the routes present.
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .fallback(route_not_found)
        .layer(Extension(openapi::finish(document)))
        .layer(middleware::from_fn(trace_request))
        .with_state(state)
}

async fn route_not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::RouteNotFound {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

/// One span per request, so whatever a handler logs carries its method and path.
async fn trace_request(request: Request, next: Next) -> Response {
    let span = tracing::info_span!(
        "http",
        method = %request.method(),
        path = %request.uri().path(),
    );
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::debug!(
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "request handled"
        );
    });
    response
}
