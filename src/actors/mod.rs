//! Inventory actors: one [`CategoryActor`] per hot (program, ticket category), spawned and
//! supervised by the [`Supervisor`]. Each actor owns its seats, holds and timers and changes them
//! one message at a time, so the hot path needs no locks (ARCHITECTURE.md, "The one idea").
//!
//! Orders reach the actors only through the ordering service (`crate::ordering`): a [`Reserve`]
//! per category, in ascending category id, then a [`Settle`] with the outcome of the order's
//! transaction. No other path writes a hold, so every held seat in Postgres has an order row.

pub mod category;
pub mod deadlines;
pub mod messages;
pub mod supervisor;

pub use category::CategoryActor;
pub use messages::*;
pub use supervisor::{Supervisor, Watched};
