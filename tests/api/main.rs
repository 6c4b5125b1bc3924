//! The one integration-test binary: every test gets its own database, Redis key prefix, Pulsar
//! topic prefix and server on port 0 (see `helpers`), so they all run in parallel.

mod helpers;

mod actor_timers;
mod actors;
mod bench;
mod ops;
mod schema;
mod seed;
