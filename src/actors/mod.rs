//! Inventory actors: one [`CategoryActor`] per hot (program, ticket category), spawned and
//! supervised by the [`Supervisor`]. Each actor owns its seats, holds and timers and changes them
//! one message at a time, so the hot path needs no locks (ARCHITECTURE.md, "The one idea").
//!
//! Orders spanning several categories go through [`hold_all`]: categories are reserved in
//! ascending id order and every hold taken is released if any category refuses.

pub mod category;
pub mod deadlines;
pub mod messages;
pub mod supervisor;

pub use category::CategoryActor;
pub use messages::*;
pub use supervisor::Supervisor;

use crate::domain::inventory::{ChangeKind, OrderNo};

/// Holds in several categories for one order, all or nothing. `parts` may come in any order;
/// they are taken in ascending category id so two multi-category orders never wait on each other
/// in opposite orders.
pub async fn hold_all(
    supervisor: &Supervisor,
    mut parts: Vec<(i64, Hold)>,
) -> Result<Vec<(i64, Held)>, ActorError> {
    parts.sort_by_key(|(category, _)| *category);
    let mut taken: Vec<(i64, Held)> = Vec::with_capacity(parts.len());
    let order = parts.first().map(|(_, h)| h.order_no);
    for (category, hold) in parts {
        match supervisor.hold(category, hold).await {
            Ok(held) => taken.push((category, held)),
            Err(refusal) => {
                roll_back(supervisor, order, &taken).await;
                return Err(refusal);
            }
        }
    }
    Ok(taken)
}

async fn roll_back(supervisor: &Supervisor, order: Option<OrderNo>, taken: &[(i64, Held)]) {
    let Some(order_no) = order else { return };
    for (category, _) in taken {
        let release = Transition {
            kind: ChangeKind::Release,
            order_no,
        };
        if let Err(e) = supervisor.transition(*category, release).await {
            // The hold stays until its timer releases it; nothing is sold twice meanwhile.
            tracing::warn!(order_no, category, error = %e, "rollback of a partial hold failed; its timer will release it");
        }
    }
}
