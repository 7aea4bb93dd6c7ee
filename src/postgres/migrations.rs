//! Postgres schema migrations (`postgres/migrations/V*__*.sql`), run by refinery, each in its
//! own transaction.

use refinery::Migration;
use refinery::error::Error as RefineryError;

mod embedded {
    refinery::embed_migrations!("postgres/migrations");
}

/// The table recording applied migrations.
pub const HISTORY_TABLE: &str = "schema_migrations";

/// The migrations compiled into this binary.
#[must_use]
pub fn runner() -> refinery::Runner {
    let mut runner = embedded::migrations::runner()
        .set_abort_divergent(true)
        .set_abort_missing(true);
    runner.set_migration_table_name(HISTORY_TABLE);
    runner
}

/// Applies the pending migrations on `client`.
///
/// # Errors
/// refinery's error: a failing statement (that migration rolled back), or an applied
/// migration whose file has changed since, which is refused.
pub async fn run(client: &mut tokio_postgres::Client) -> Result<Vec<Migration>, RefineryError> {
    let report = runner().run_async(client).await?;
    Ok(report.applied_migrations().clone())
}
