//! Continuous reconciliation of the three places seat state lives (actor, Postgres, Redis mirror)
//! and of orders against seats, payment bills and the provider.
