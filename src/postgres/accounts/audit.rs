//! Audit log rows: who did what to which account, written in the transaction of the change.

use deadpool_postgres::Transaction;
use uuid::Uuid;

use super::AccountsError;
use crate::accounts::Actor;

/// Appends one `audit_log` row. Works in tenant transactions too (for the tenant's own
/// account); `detail` must never carry a secret.
pub(super) async fn record(
    tx: &Transaction<'_>,
    actor: &Actor,
    account: Option<Uuid>,
    action: &str,
    detail: &serde_json::Value,
) -> Result<(), AccountsError> {
    let statement = tx
        .prepare_cached(
            "INSERT INTO audit_log (actor, account_id, action, detail) \
             VALUES ($1, $2, $3, $4::text::jsonb)",
        )
        .await?;
    tx.execute(
        &statement,
        &[&actor.to_string(), &account, &action, &detail.to_string()],
    )
    .await?;
    Ok(())
}
