//! The admin operation log (DOMAIN.md, "Admin modules"): who did what to which object, written in
//! the same transaction as the change it describes.

use super::StoreError;
use serde_json::Value;

/// Records `action` on `target` by admin `admin_user_id`.
pub async fn record(
    tx: &deadpool_postgres::Transaction<'_>,
    admin_user_id: i64,
    action: &str,
    target: &str,
    details: &Value,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO admin_audit_log (admin_user_id, action, target, details) VALUES ($1, $2, $3, $4)",
        &[&admin_user_id, &action, &target, details],
    )
    .await?;
    Ok(())
}
