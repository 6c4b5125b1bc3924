//! Users, their login handles (mobile/email lookup tables), roles and ticket buyers.

use super::{PgPool, StoreError};
use crate::crypto::IdNumberCipher;

/// Role names as stored in `roles`.
pub mod role {
    /// Every registered account.
    pub const BUYER: &str = "buyer";
    /// Operators: program creation, monitoring, reconciliation.
    pub const ADMIN: &str = "admin";
}

/// A user to create when its email is not yet registered.
pub struct EnsureUser<'a> {
    /// Login email (stored lower-case).
    pub email: &'a str,
    /// Password in clear; hashed (argon2id) only when the user is created.
    pub password: &'a str,
    /// Shown name.
    pub display_name: &'a str,
    /// Roles to grant; existing grants are kept.
    pub roles: &'a [&'a str],
}

/// Returns the user registered under `email`, creating it when absent, and grants `roles`.
/// Idempotent: used by `seed-demo` and `create-admin`.
pub async fn ensure_user(pool: &PgPool, user: EnsureUser<'_>) -> Result<i64, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let email = user.email.to_lowercase();
    let existing = tx
        .query_opt(
            "SELECT user_id FROM user_emails WHERE email = $1",
            &[&email],
        )
        .await?;
    let user_id: i64 = match existing {
        Some(row) => row.get(0),
        None => {
            let password_hash = crate::crypto::hash_password(user.password)
                .map_err(|e| StoreError::Postgres(format!("cannot hash password: {e}")))?;
            let row = tx
                .query_one(
                    "INSERT INTO users (password_hash, display_name) VALUES ($1, $2) RETURNING id",
                    &[&password_hash, &user.display_name],
                )
                .await?;
            let id: i64 = row.get(0);
            tx.execute(
                "INSERT INTO user_emails (email, user_id) VALUES ($1, $2)",
                &[&email, &id],
            )
            .await?;
            id
        }
    };
    for role in user.roles {
        tx.execute(
            "INSERT INTO user_roles (user_id, role) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&user_id, role],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(user_id)
}

/// A real-name ticket holder to record for a user.
pub struct NewTicketBuyer<'a> {
    /// Full name.
    pub name: &'a str,
    /// One of the id types the schema allows (`id_card`, `passport`, ...).
    pub id_type: &'a str,
    /// Id number in clear; stored encrypted.
    pub id_number: &'a str,
}

/// Returns the user's ticket buyer for this person, creating it when absent.
pub async fn ensure_ticket_buyer(
    pool: &PgPool,
    cipher: &IdNumberCipher,
    user_id: i64,
    buyer: NewTicketBuyer<'_>,
) -> Result<i64, StoreError> {
    let client = pool.get().await?;
    let fingerprint = cipher.fingerprint(buyer.id_number);
    let found = client
        .query_opt(
            "SELECT id FROM ticket_buyers
             WHERE user_id = $1 AND id_type = $2 AND id_number_hash = $3 AND deleted_at IS NULL",
            &[&user_id, &buyer.id_type, &fingerprint],
        )
        .await?;
    if let Some(row) = found {
        return Ok(row.get(0));
    }
    let last4: String = buyer
        .id_number
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let row = client
        .query_one(
            "INSERT INTO ticket_buyers (user_id, name, id_type, id_number_enc, id_number_hash, id_number_last4)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            &[&user_id, &buyer.name, &buyer.id_type, &cipher.encrypt(buyer.id_number), &fingerprint, &last4],
        )
        .await?;
    Ok(row.get(0))
}
