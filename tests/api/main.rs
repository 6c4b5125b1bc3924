//! The one integration-test binary: every test gets its own database, Redis key prefix, Pulsar
//! topic prefix and server on port 0 (see `helpers`), so they all run in parallel.

mod helpers;

mod accounts;
mod actor_timers;
mod actors;
mod admin_orders;
mod admin_stream;
mod bench;
mod browser;
mod catalog;
mod crash;
mod events;
mod faults;
mod fuzz;
mod hardening;
mod limits;
mod mockpay;
mod ops;
mod order_path;
mod orders;
mod outages;
mod payments;
mod reconcile;
mod schema;
mod seat_feed;
mod security;
mod seed;
mod server_limits;
mod ticket_buyers;
mod writer;
mod ws;
