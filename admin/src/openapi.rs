//! The OpenAPI 3.1 document of the API, maintained by hand in
//! `admin/openapi.json` (a derive crate would cost more build time than the
//! document costs to keep). A test checks it against `routes()` both ways,
//! so a route cannot be added without documenting it.

use axum::http::header;
use axum::response::IntoResponse;

/// The document.
pub const DOCUMENT: &str = include_str!("../openapi.json");

/// `GET /api/v1/openapi.json`.
pub async fn serve() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}
