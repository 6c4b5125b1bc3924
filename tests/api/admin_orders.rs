//! admin_orders
