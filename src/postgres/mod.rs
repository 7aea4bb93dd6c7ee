//! Accounts at rest in Postgres: the connection pool and migrations.

pub mod accounts;
pub mod migrations;
pub mod revocations;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use crate::config::PostgresConfig;

/// Errors opening or using the pool.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error("invalid Postgres URL: {0}")]
    Url(#[source] tokio_postgres::Error),
    #[error("cannot build the Postgres pool: {0}")]
    Build(#[from] deadpool_postgres::BuildError),
    #[error("Postgres unavailable: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("Postgres query failed: {0}")]
    Query(#[from] tokio_postgres::Error),
}

/// The longest a new connection may take to be established.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);
/// The longest any statement may run (Postgres cancels it; the request is UNAVAILABLE).
pub const STATEMENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// The longest a request waits for a free pooled connection.
pub const POOL_WAIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Builds a lazily-connecting pool: nothing is dialled until first use, so a server whose
/// Postgres is down still starts and reports itself unready.
///
/// # Errors
/// [`PostgresError`] when the URL does not parse.
pub fn pool(config: &PostgresConfig) -> Result<Pool, PostgresError> {
    build_pool(config, &[])
}

/// The pool the credit charge runs on: as [`pool`], and unless
/// [`PostgresConfig::charge_sync_commit`] its sessions commit without waiting for the WAL
/// flush (`synchronous_commit = off`), which takes a disk flush off every data request.
/// Atomicity, isolation and the no-overspend guarantee are unchanged; only the last
/// fraction of a second of charges can be forgotten if the Postgres server itself crashes.
///
/// # Errors
/// [`PostgresError`] when the URL does not parse.
pub fn charge_pool(config: &PostgresConfig) -> Result<Pool, PostgresError> {
    if config.charge_sync_commit {
        build_pool(config, &[])
    } else {
        build_pool(config, &["synchronous_commit=off"])
    }
}

fn build_pool(config: &PostgresConfig, settings: &[&str]) -> Result<Pool, PostgresError> {
    let mut pg_config: tokio_postgres::Config =
        config.url.expose().parse().map_err(PostgresError::Url)?;
    // A server that accepts TCP but never answers must not hold requests: bound the dial,
    // every statement (server side), and the wait for a pooled connection.
    if pg_config.get_connect_timeout().is_none() {
        pg_config.connect_timeout(CONNECT_TIMEOUT);
    }
    let mut options = pg_config.get_options().map_or_else(
        || format!("-c statement_timeout={}", STATEMENT_TIMEOUT.as_millis()),
        str::to_owned,
    );
    for setting in settings {
        options.push_str(" -c ");
        options.push_str(setting);
    }
    pg_config.options(options);
    let manager = Manager::from_config(
        pg_config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Ok(Pool::builder(manager)
        .max_size(config.pool_size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()?)
}

/// Answers `SELECT 1`: the readiness check.
///
/// # Errors
/// [`PostgresError`] when no connection can be had or the query fails.
pub async fn ping(pool: &Pool) -> Result<(), PostgresError> {
    let client = pool.get().await?;
    client.simple_query("SELECT 1").await?;
    Ok(())
}
