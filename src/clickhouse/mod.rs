//! Market data at rest in ClickHouse: the client, migrations, the book-at-T query, and the
//! reads behind the API (books, events, markets, gaps, candles).

pub mod book;
pub mod candles;
pub mod events;
pub mod gaps;
pub mod markets;
pub mod migrations;
pub mod orderbook;
pub mod read;
pub mod replay;
pub mod rows;

use crate::config::ClickHouseConfig;

/// A client bound to the configured database.
#[must_use]
pub fn client(config: &ClickHouseConfig) -> clickhouse::Client {
    server_client(config).with_database(&config.database)
}

/// A client with no database selected, for `CREATE DATABASE` and server-wide checks.
#[must_use]
pub fn server_client(config: &ClickHouseConfig) -> clickhouse::Client {
    clickhouse::Client::default()
        .with_url(&config.url)
        .with_user(&config.user)
        .with_password(config.password.expose())
        .with_compression(if config.compress {
            clickhouse::Compression::Lz4
        } else {
            clickhouse::Compression::None
        })
}

/// Answers `SELECT 1`: the readiness check.
///
/// # Errors
/// The client's error when ClickHouse does not answer.
pub async fn ping(client: &clickhouse::Client) -> Result<(), clickhouse::error::Error> {
    client.query("SELECT 1").fetch_one::<u8>().await.map(drop)
}
