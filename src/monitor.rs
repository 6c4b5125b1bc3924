//! The operators' monitoring figures: one frame per tick, shared by every `/ws/admin` client.
