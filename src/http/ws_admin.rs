//! `GET /ws/admin`: the operators' monitoring stream (API.md, "WebSockets"). Admins only.

use super::AppState;
use axum::Router;

/// Routes of this module.
pub fn router(_state: &AppState) -> Router<AppState> {
    Router::new()
}
