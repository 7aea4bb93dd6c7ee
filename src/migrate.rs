//! `kalshibook migrate`: brings both databases to the schema this binary was built with.
//!
//! Safe to run from several processes at once: the whole run holds a Postgres session-level
//! advisory lock, which also serialises the ClickHouse half (ClickHouse has no lock of its
//! own). Both sets refuse to run if an already-applied migration file has changed.

use refinery::Migration;
use tokio_postgres::NoTls;

use crate::config::Config;
use crate::{clickhouse, postgres};

/// Arbitrary but fixed: "kbmigrat" in ASCII.
const MIGRATION_LOCK_KEY: i64 = 0x6b62_6d69_6772_6174;

/// What a run applied (empty lists when everything was already up to date).
#[derive(Debug, Default)]
pub struct MigrationReport {
    pub clickhouse_applied: Vec<Migration>,
    pub postgres_applied: Vec<Migration>,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("cannot connect to Postgres: {0}")]
    PostgresConnect(#[source] tokio_postgres::Error),
    #[error("cannot take the migration lock in Postgres: {0}")]
    Lock(#[source] tokio_postgres::Error),
    #[error("cannot create ClickHouse database {database}: {source}")]
    CreateDatabase {
        database: String,
        #[source]
        source: ::clickhouse::error::Error,
    },
    #[error("ClickHouse migrations: {0}")]
    ClickHouse(#[source] refinery::Error),
    #[error("Postgres migrations: {0}")]
    Postgres(#[source] refinery::Error),
}

/// Applies every pending migration, ClickHouse first, then Postgres.
///
/// # Errors
/// [`MigrateError`] naming the database and the step that failed.
pub async fn run(config: &Config) -> Result<MigrationReport, MigrateError> {
    let (mut pg, connection) = tokio_postgres::connect(config.postgres.url.expose(), NoTls)
        .await
        .map_err(MigrateError::PostgresConnect)?;
    let connection = tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "migration connection to Postgres closed");
        }
    });

    pg.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(MigrateError::Lock)?;
    let result = run_locked(config, &mut pg).await;
    // Closing the session releases the lock too; unlocking explicitly just frees it sooner.
    let _ = pg
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await;
    drop(pg);
    let _ = connection.await;
    result
}

async fn run_locked(
    config: &Config,
    pg: &mut tokio_postgres::Client,
) -> Result<MigrationReport, MigrateError> {
    let database = &config.clickhouse.database;
    clickhouse::server_client(&config.clickhouse)
        .query(&format!("CREATE DATABASE IF NOT EXISTS {database}"))
        .execute()
        .await
        .map_err(|source| MigrateError::CreateDatabase {
            database: database.clone(),
            source,
        })?;
    let clickhouse_applied = clickhouse::migrations::run(&clickhouse::client(&config.clickhouse))
        .await
        .map_err(MigrateError::ClickHouse)?;
    for migration in &clickhouse_applied {
        tracing::info!(%migration, "applied ClickHouse migration");
    }
    let postgres_applied = postgres::migrations::run(pg)
        .await
        .map_err(MigrateError::Postgres)?;
    for migration in &postgres_applied {
        tracing::info!(%migration, "applied Postgres migration");
    }
    Ok(MigrationReport {
        clickhouse_applied,
        postgres_applied,
    })
}
