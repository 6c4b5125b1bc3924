//! Inventory actors: one `CategoryActor` per hot (program, ticket category), spawned and
//! supervised by a `Supervisor`. Each actor owns its seats, holds and timers and changes them
//! one message at a time, so the hot path needs no locks (ARCHITECTURE.md, "The one idea").
