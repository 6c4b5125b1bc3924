//! Inventory view and reconciliation findings for operators (API.md, "Admin"). Admins only.

use super::AppState;
use axum::Router;

/// Routes of this module.
pub fn router(_state: &AppState) -> Router<AppState> {
    Router::new()
}
