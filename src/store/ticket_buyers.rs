//! Ticket buyers (real-name holders) of one user. Every query is scoped to the owner, so another
//! user's ticket buyer is simply not found. Id numbers are stored encrypted (see `crypto`).

use super::{PgPool, StoreError};
use crate::crypto::IdNumberCipher;
use chrono::{DateTime, Utc};

/// A ticket buyer with the id number decrypted (the HTTP layer masks it).
pub struct TicketBuyer {
    /// Id.
    pub id: i64,
    /// Full name.
    pub name: String,
    /// Document type.
    pub id_type: String,
    /// Document number in clear.
    pub id_number: String,
    /// When it was added.
    pub created_at: DateTime<Utc>,
}

/// Why a ticket buyer could not be added.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    /// The user already has `max` ticket buyers.
    #[error("at most {0} ticket buyers per account")]
    Limit(u32),
    /// The same person (type and number) is already one of the user's ticket buyers.
    #[error("this person is already a ticket buyer of the account")]
    Duplicate,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Adds a ticket buyer, keeping at most `max` per user even under concurrent requests (the
/// user's row is locked while counting; a rare, per-user lock, not on the ticket hot path).
pub async fn add(
    pool: &PgPool,
    cipher: &IdNumberCipher,
    user_id: i64,
    name: &str,
    id_type: &str,
    id_number: &str,
    max: u32,
) -> Result<TicketBuyer, AddError> {
    let mut client = pool.get().await.map_err(StoreError::from)?;
    let tx = client.transaction().await.map_err(StoreError::from)?;
    // Lock first, count in a second statement: under READ COMMITTED a statement sees rows
    // committed before it started, so counting in the locking statement would miss the rows of
    // the transaction it waited for.
    tx.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", &[&user_id])
        .await
        .map_err(StoreError::from)?;
    let count: i64 = tx
        .query_one(
            "SELECT count(*) FROM ticket_buyers WHERE user_id = $1 AND deleted_at IS NULL",
            &[&user_id],
        )
        .await
        .map_err(StoreError::from)?
        .get(0);
    if count >= max as i64 {
        return Err(AddError::Limit(max));
    }
    let last4: String = id_number
        .chars()
        .skip(id_number.chars().count().saturating_sub(4))
        .collect();
    let row = tx
        .query_one(
            "INSERT INTO ticket_buyers (user_id, name, id_type, id_number_enc, id_number_hash, id_number_last4)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id, created_at",
            &[&user_id, &name, &id_type, &cipher.encrypt(id_number), &cipher.fingerprint(id_number), &last4],
        )
        .await
        .map_err(|e| match e.code() {
            Some(c) if *c == tokio_postgres::error::SqlState::UNIQUE_VIOLATION => AddError::Duplicate,
            _ => StoreError::from(e).into(),
        })?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(TicketBuyer {
        id: row.get(0),
        name: name.to_string(),
        id_type: id_type.to_string(),
        id_number: id_number.to_string(),
        created_at: row.get(1),
    })
}

/// The user's ticket buyers, oldest first.
pub async fn list(
    pool: &PgPool,
    cipher: &IdNumberCipher,
    user_id: i64,
) -> Result<Vec<TicketBuyer>, StoreError> {
    let rows = pool
        .get()
        .await?
        .query(
            "SELECT id, name, id_type, id_number_enc, created_at FROM ticket_buyers
             WHERE user_id = $1 AND deleted_at IS NULL ORDER BY id",
            &[&user_id],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let sealed: Vec<u8> = r.get(3);
            Ok(TicketBuyer {
                id: r.get(0),
                name: r.get(1),
                id_type: r.get(2),
                id_number: cipher.decrypt(&sealed).map_err(|e| StoreError::Crypto {
                    what: format!("id number of ticket buyer {}", r.get::<_, i64>(0)),
                    source: std::sync::Arc::new(e),
                })?,
                created_at: r.get(4),
            })
        })
        .collect()
}

/// Deletes the user's ticket buyer `id`; false if the user has no such ticket buyer.
pub async fn delete(pool: &PgPool, user_id: i64, id: i64) -> Result<bool, StoreError> {
    let n = pool
        .get()
        .await?
        .execute(
            "UPDATE ticket_buyers SET deleted_at = now()
             WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL",
            &[&id, &user_id],
        )
        .await?;
    Ok(n == 1)
}
