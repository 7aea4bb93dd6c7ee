//! KalshiBook: records every level-2 order book change of every Kalshi market into ClickHouse
//! and serves books, deltas, trades and analytics back over GraphQL.
//!
//! Data flows `kalshi → collector → clickhouse → graphql → server`; accounts flow
//! `server → accounts → postgres`. Each store depends on one pure domain module.

pub mod accounts;
pub mod bench;
pub mod bench_fanout;
pub mod cli;
pub mod clickhouse;
pub mod collector;
pub mod config;
pub mod demo;
pub mod graphql;
pub mod kalshi;
pub mod live;
pub mod market;
pub mod migrate;
pub mod postgres;
pub mod server;
pub mod shutdown;
pub mod sim;
pub mod telemetry;
