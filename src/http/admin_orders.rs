//! Orders and discarded orders of a program for operators (API.md, "Admin"). Admins only.
//!
//! - `GET /api/v1/admin/programs/{id}/orders?status=&user_id=&order_no=&page=&per_page=` →
//!   `{items, total, page, per_page}`; each item is an order with its `tickets`, its `steps`
//!   (`{step, store, at, ...}` in time order) and its `reconcile_status` — the step names and
//!   how each is derived are listed in [`crate::store::admin_orders`].
//! - `GET /api/v1/admin/programs/{id}/discarded-orders?page=&per_page=` → the same envelope of
//!   `{id, order_no, user_id, reason, tickets, created_at, seats_free}`.
//!
//! Empty query values (`?status=&user_id=`, as a form sends them) mean "no filter".

use super::error::ApiError;
use super::extractor::{AdminUser, ApiQuery};
use super::limits;
use super::{AppState, Listing};
use crate::store::admin_orders::{self, AdminOrder, DiscardedOrder, ORDER_STATUSES, OrderFilter};
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router, middleware};
use serde::{Deserialize, Deserializer};
use std::str::FromStr;

const ORDERS: &str = "/api/v1/admin/programs/{id}/orders";
const DISCARDED: &str = "/api/v1/admin/programs/{id}/discarded-orders";

/// The routes whose query values may be sent empty (a form's untouched fields), meaning "no
/// filter": the OpenAPI document says so (`allowEmptyValue`) for their query parameters.
pub const BLANK_QUERY_VALUES_ALLOWED: [&str; 2] = [ORDERS, DISCARDED];

/// Routes of this module, with the `admin` rate limit.
pub fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .route(ORDERS, get(list_orders))
        .route(DISCARDED, get(list_discarded))
        .route_layer(middleware::from_fn_with_state(state.clone(), limits::admin))
}

/// Filters of the order list; each one left out (or empty) matches every order.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OrdersQuery {
    /// `pending_payment | paid | cancelled | expired | refunded`.
    #[serde(default, deserialize_with = "blank_is_none")]
    status: Option<String>,
    /// The buyer's account.
    #[serde(default, deserialize_with = "blank_is_none")]
    user_id: Option<i64>,
    /// One order number (a string, as orders show it).
    #[serde(default, deserialize_with = "blank_is_none")]
    order_no: Option<i64>,
    /// Page number, from 1.
    #[serde(default, deserialize_with = "blank_is_none")]
    page: Option<u32>,
    /// Items per page (default 50, at most 200).
    #[serde(default, deserialize_with = "blank_is_none")]
    per_page: Option<u32>,
}

/// Pages of the discarded-order list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page number, from 1.
    #[serde(default, deserialize_with = "blank_is_none")]
    page: Option<u32>,
    /// Items per page (default 50, at most 200).
    #[serde(default, deserialize_with = "blank_is_none")]
    per_page: Option<u32>,
}

/// A query value parsed as `T`; absent or empty is `None`, unparsable is an error (→ 422).
fn blank_is_none<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match Option::<String>::deserialize(d)?.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => v.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

/// The filter, refusing a status no order can have (a typo would list nothing, silently).
fn filter_of(q: &OrdersQuery) -> Result<OrderFilter, ApiError> {
    if let Some(s) = q.status.as_deref()
        && !ORDER_STATUSES.contains(&s)
    {
        let allowed = ORDER_STATUSES.join(", ");
        return Err(ApiError::validation(
            "status",
            format!("must be one of {allowed}"),
        ));
    }
    Ok(OrderFilter {
        status: q.status.clone(),
        user_id: q.user_id,
        order_no: q.order_no,
    })
}

/// `GET /api/v1/admin/programs/{id}/orders`: the program's orders, newest first.
#[utoipa::path(get, path = "/api/v1/admin/programs/{id}/orders", tag = "admin", operation_id = "list_program_orders",
    params(("id" = i64, Path, description = "Program id"), OrdersQuery),
    responses((status = 200, description = "Items carry `tickets`, `steps` and `reconcile_status`", body = Listing<AdminOrder>),
        (status = 401, description = "No or bad token"), (status = 403, description = "Not an admin"),
        (status = 422, description = "A filter that cannot match")))]
pub async fn list_orders(
    State(st): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<i64>,
    ApiQuery(q): ApiQuery<OrdersQuery>,
) -> Result<Json<Listing<AdminOrder>>, ApiError> {
    let filter = filter_of(&q)?;
    let (page, per_page) = super::paging(q.page, q.per_page);
    let (items, total) =
        admin_orders::orders_page(&st.stores.pg, id, &filter, page, per_page).await?;
    Ok(Json(Listing {
        items,
        total,
        page,
        per_page,
    }))
}

/// `GET /api/v1/admin/programs/{id}/discarded-orders`: attempts that took seats but could not
/// be completed, newest first, and whether their seats were released.
#[utoipa::path(get, path = "/api/v1/admin/programs/{id}/discarded-orders", tag = "admin", operation_id = "list_discarded_orders",
    params(("id" = i64, Path, description = "Program id"), PageQuery),
    responses((status = 200, description = "The program's discarded orders", body = Listing<DiscardedOrder>),
        (status = 401, description = "No or bad token"), (status = 403, description = "Not an admin")))]
pub async fn list_discarded(
    State(st): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<i64>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Listing<DiscardedOrder>>, ApiError> {
    let (page, per_page) = super::paging(q.page, q.per_page);
    let (items, total) = admin_orders::discarded_page(&st.stores.pg, id, page, per_page).await?;
    Ok(Json(Listing {
        items,
        total,
        page,
        per_page,
    }))
}
