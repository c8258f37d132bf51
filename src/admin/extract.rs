//! axum's extractors with their rejections answered in the API's error shape.

use axum::extract::FromRequest;
use axum::extract::FromRequestParts;

use super::error::ApiError;
use crate::domain::ValidationError;

/// A JSON request body.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// A query string.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// Path parameters.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// Parses an id taken from the path. An id that cannot be valid cannot name anything either, so
/// it is answered like an unknown one: 404, naming the resource.
pub fn path_id<T>(
    resource: &'static str,
    raw: &str,
    parse: impl FnOnce(&str, &str) -> Result<T, ValidationError>,
) -> Result<T, ApiError> {
    parse(resource, raw).map_err(|_| ApiError::not_found(resource, raw))
}
