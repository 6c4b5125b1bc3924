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
            let password_hash =
                crate::crypto::hash_password(user.password).map_err(|e| StoreError::Crypto {
                    what: "password hash".into(),
                    source: std::sync::Arc::new(e),
                })?;
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
    let found = client
        .query_opt(
            "SELECT id FROM ticket_buyers
             WHERE user_id = $1 AND id_type = $2 AND id_number_hash = $3 AND deleted_at IS NULL",
            &[
                &user_id,
                &buyer.id_type,
                &cipher.person_hash(buyer.id_number),
            ],
        )
        .await?;
    if let Some(row) = found {
        return Ok(row.get(0));
    }
    let (id, _) = super::ticket_buyers::insert(
        &client,
        cipher,
        user_id,
        buyer.name,
        buyer.id_type,
        buyer.id_number,
    )
    .await?;
    Ok(id)
}

/// An account to register; handles already normalized, password already hashed.
pub struct NewAccount<'a> {
    /// Mobile number, if given.
    pub mobile: Option<&'a str>,
    /// Email, if given.
    pub email: Option<&'a str>,
    /// argon2id PHC string.
    pub password_hash: &'a str,
    /// Shown name.
    pub display_name: &'a str,
}

/// Why a registration was refused by the database.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The handle (field `mobile` or `email`) belongs to another account.
    #[error("{0} is already registered")]
    Taken(&'static str),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Creates a buyer account with its handles in one transaction; a taken handle is refused by the
/// primary keys of `user_mobiles` / `user_emails`, also under concurrent registrations.
pub async fn register(pool: &PgPool, account: NewAccount<'_>) -> Result<i64, RegisterError> {
    let mut client = pool.get().await.map_err(StoreError::from)?;
    let tx = client.transaction().await.map_err(StoreError::from)?;
    let id: i64 = tx
        .query_one(
            "INSERT INTO users (password_hash, display_name) VALUES ($1, $2) RETURNING id",
            &[&account.password_hash, &account.display_name],
        )
        .await
        .map_err(StoreError::from)?
        .get(0);
    let handles = [
        (
            "mobile",
            account.mobile,
            "INSERT INTO user_mobiles (mobile, user_id) VALUES ($1, $2)",
        ),
        (
            "email",
            account.email,
            "INSERT INTO user_emails (email, user_id) VALUES ($1, $2)",
        ),
    ];
    for (field, value, sql) in handles {
        let Some(value) = value else { continue };
        tx.execute(sql, &[&value, &id]).await.map_err(|e| {
            if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
                RegisterError::Taken(field)
            } else {
                StoreError::from(e).into()
            }
        })?;
    }
    tx.execute(
        "INSERT INTO user_roles (user_id, role) VALUES ($1, $2)",
        &[&id, &role::BUYER],
    )
    .await
    .map_err(StoreError::from)?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(id)
}

/// Whether a normalized mobile (`is_email` false) or email is registered.
pub async fn handle_taken(pool: &PgPool, value: &str, is_email: bool) -> Result<bool, StoreError> {
    let sql = if is_email {
        "SELECT 1 FROM user_emails WHERE email = $1"
    } else {
        "SELECT 1 FROM user_mobiles WHERE mobile = $1"
    };
    Ok(pool.get().await?.query_opt(sql, &[&value]).await?.is_some())
}

/// What login needs of an account.
pub struct LoginRecord {
    /// User id.
    pub user_id: i64,
    /// argon2id PHC string.
    pub password_hash: String,
    /// `active` or `disabled`.
    pub active: bool,
    /// Role names.
    pub roles: Vec<String>,
}

/// Looks an account up by normalized mobile or email, through its lookup table.
pub async fn find_login(
    pool: &PgPool,
    value: &str,
    is_email: bool,
) -> Result<Option<LoginRecord>, StoreError> {
    let lookup = if is_email {
        "SELECT user_id FROM user_emails WHERE email = $1"
    } else {
        "SELECT user_id FROM user_mobiles WHERE mobile = $1"
    };
    let sql = format!(
        "SELECT u.id, u.password_hash, u.status = 'active',
                coalesce(array_agg(r.role) FILTER (WHERE r.role IS NOT NULL), '{{}}')
         FROM users u LEFT JOIN user_roles r ON r.user_id = u.id
         WHERE u.id = ({lookup}) GROUP BY u.id"
    );
    let row = pool.get().await?.query_opt(&sql, &[&value]).await?;
    Ok(row.map(|r| LoginRecord {
        user_id: r.get(0),
        password_hash: r.get(1),
        active: r.get(2),
        roles: r.get(3),
    }))
}

/// An account as its owner sees it (unmasked; the HTTP layer masks).
pub struct Profile {
    /// User id.
    pub user_id: i64,
    /// Mobile, if registered with one.
    pub mobile: Option<String>,
    /// Email, if registered with one.
    pub email: Option<String>,
    /// Shown name.
    pub display_name: String,
    /// Role names.
    pub roles: Vec<String>,
}

/// The profile of `user_id`.
pub async fn profile(pool: &PgPool, user_id: i64) -> Result<Option<Profile>, StoreError> {
    let row = pool
        .get()
        .await?
        .query_opt(
            "SELECT u.display_name,
                    (SELECT mobile FROM user_mobiles WHERE user_id = u.id),
                    (SELECT email FROM user_emails WHERE user_id = u.id),
                    coalesce((SELECT array_agg(role ORDER BY role) FROM user_roles WHERE user_id = u.id), '{}')
             FROM users u WHERE u.id = $1",
            &[&user_id],
        )
        .await?;
    Ok(row.map(|r| Profile {
        user_id,
        display_name: r.get(0),
        mobile: r.get(1),
        email: r.get(2),
        roles: r.get(3),
    }))
}

/// What an operator sets on an account: its roles and whether it may sign in.
pub struct Access<'a> {
    /// Every role the account keeps (`buyer`, `admin`); the others are taken away.
    pub roles: &'a [String],
    /// `false` disables the account: it can no longer sign in.
    pub active: bool,
}

/// Replaces `user_id`'s roles and status in one transaction with its audit entry by
/// `admin_id`; `NotFound` if there is no such user.
pub async fn set_access(
    pool: &PgPool,
    admin_id: i64,
    user_id: i64,
    access: &Access<'_>,
) -> Result<(), StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let status = if access.active { "active" } else { "disabled" };
    let found = tx
        .execute(
            "UPDATE users SET status = $2 WHERE id = $1",
            &[&user_id, &status],
        )
        .await?;
    if found == 0 {
        return Err(StoreError::NotFound(format!("user {user_id}")));
    }
    tx.execute("DELETE FROM user_roles WHERE user_id = $1", &[&user_id])
        .await?;
    tx.execute(
        "INSERT INTO user_roles (user_id, role) SELECT $1, unnest($2::text[])",
        &[&user_id, &access.roles],
    )
    .await?;
    let details = serde_json::json!({ "roles": access.roles, "status": status });
    super::audit::record(
        &tx,
        admin_id,
        "set_access",
        &format!("user:{user_id}"),
        &details,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
