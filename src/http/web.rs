//! The two web pages — the buyer's seat map (`/`) and the operations console (`/admin`) — and
//! their assets (`/web/…`), from the top-level `web/` folder. Embedded in release builds, so one
//! binary serves everything; read from disk in debug builds, so editing a page needs no rebuild.
//! The pages use only the public API and WebSockets.

use super::AppState;
use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The `web/` folder, without its browser tests and their npm packages.
#[derive(rust_embed::Embed)]
#[folder = "web/"]
#[exclude = "tests/*"]
#[exclude = "node_modules/*"]
#[exclude = "package*.json"]
struct Assets;

/// Routes of the pages.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { asset("index.html") }))
        .route("/admin", get(|| async { asset("admin.html") }))
        .route(
            "/web/{*path}",
            get(|Path(path): Path<String>| async move { asset(&path) }),
        )
}

/// The file at `path` of `web/`, with its content type; 404 when there is none.
fn asset(path: &str) -> Response {
    match Assets::get(path) {
        Some(file) => (
            [
                (header::CONTENT_TYPE, file.metadata.mimetype().to_string()),
                // Pages and scripts change with the binary; always ask again (they are small).
                (header::CACHE_CONTROL, "no-cache".to_string()),
            ],
            file.data,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}
