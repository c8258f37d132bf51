//! The OpenAPI document. Routes are registered together with their `#[utoipa::path]` operation
//! (utoipa-axum), so the document lists exactly what is routed; this module adds what every
//! operation shares and serves the result at `GET /openapi.json`.

use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Extension;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, ResponseBuilder};
use utoipa::{OpenApi, ToSchema};

use super::error::ErrorBody;

const SECURITY_SCHEME: &str = "admin_token";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "shopper-bridge admin API",
        description = "Watch Instacart orders, talk back to their shoppers, manage webhook \
            subscribers and inspect deliveries. \
            Every `/v1` route needs `Authorization: Bearer <server.admin_token>`. Errors are \
            `{\"errors\":[{\"code\",\"message\"}]}`."
    ),
    tags(
        (name = "orders", description = "Watched orders and their polling state"),
        (name = "messages", description = "Replies to an order's shopper and read receipts, through Connect"),
        (name = "subscribers", description = "Event receivers, their filters and signing secrets"),
        (name = "deliveries", description = "Deliveries, their attempts, manual retries"),
        (name = "meta", description = "Health and this document; no authentication"),
    ),
    components(schemas(ErrorBody))
)]
pub struct ApiDoc;

/// The served document, serialized once.
#[derive(Clone)]
pub struct DocumentJson(Bytes);

/// Completes the collected document: the bearer scheme and its 401 on every `/v1` operation, and
/// the opaque 500 any operation may answer.
pub fn finish(mut doc: Document) -> DocumentJson {
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            SECURITY_SCHEME,
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    let error = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name(ErrorBody::name())))
                    .build(),
            )
            .build()
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        let authenticated = path.starts_with("/v1/");
        for operation in operations(item) {
            if authenticated {
                operation.security = Some(vec![SecurityRequirement::new(
                    SECURITY_SCHEME,
                    Vec::<String>::new(),
                )]);
                operation
                    .responses
                    .responses
                    .insert("401".into(), error("Missing or wrong admin token").into());
            }
            operation
                .responses
                .responses
                .insert("500".into(), error("Unexpected failure (logged)").into());
        }
    }
    DocumentJson(
        serde_json::to_vec(&doc)
            .expect("an OpenAPI document always serializes")
            .into(),
    )
}

fn operations(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json"))
)]
pub async fn openapi_json(Extension(doc): Extension<DocumentJson>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], doc.0)
}
