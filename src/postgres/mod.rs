//! Accounts at rest in Postgres: the connection pool and migrations.

pub mod accounts;
pub mod migrations;

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

/// Builds a lazily-connecting pool: nothing is dialled until first use, so a server whose
/// Postgres is down still starts and reports itself unready.
///
/// # Errors
/// [`PostgresError`] when the URL does not parse.
pub fn pool(config: &PostgresConfig) -> Result<Pool, PostgresError> {
    let pg_config: tokio_postgres::Config =
        config.url.expose().parse().map_err(PostgresError::Url)?;
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
