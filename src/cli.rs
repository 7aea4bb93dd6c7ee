//! Command line: one binary, one subcommand per job. Each arm is a thin call into the library.

use anyhow::Context;
use clap::{Parser, Subcommand};

mod admin;

use crate::config::Config;
use crate::{migrate, server, shutdown, telemetry};

/// KalshiBook: Kalshi order book history and live data over GraphQL.
///
/// Configuration comes from `KALSHIBOOK_*` environment variables (see `.env.example`).
#[derive(Debug, Parser)]
#[command(name = "kalshibook", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API (and run the collector in the same process when KALSHIBOOK_COLLECT=1).
    Serve,
    /// Run the collector only.
    Collect,
    /// Apply the ClickHouse and Postgres migrations (idempotent; safe to run concurrently).
    Migrate,
    /// Run the simulated Kalshi exchange (Kalshi's REST and WebSocket protocol).
    Sim(crate::demo::SimArgs),
    /// Simulator + collector + API on the local engines.
    Demo(crate::demo::SimArgs),
    /// Manage accounts (admin).
    #[command(subcommand)]
    Accounts(admin::AccountsCommand),
    /// Manage API keys (admin).
    #[command(subcommand)]
    Keys(admin::KeysCommand),
    /// Grant credits (admin).
    #[command(subcommand)]
    Credits(admin::CreditsCommand),
    /// Export market data (Parquet/CSV).
    Export,
    /// Print the exchange frames the collector archived, exactly as received, one JSON object
    /// a line: `{"conn", "ts_received" (Unix µs), "sid", "seq", "frame"}`.
    RawFrames(RawFramesArgs),
    /// Run a benchmark.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Print the GraphQL schema (SDL) that `schema.graphql` must equal.
    Schema,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Deltas/s through the collector (parse + apply + insert) against inserting the same
    /// rows pre-built through the same ClickHouse endpoint.
    Ingest(crate::bench::IngestArgs),
    /// p50/p99 of `orderbook(at:)` through the API (HTTP) against the same SQL straight to
    /// ClickHouse, on a generated market with 10 M deltas over 30 days.
    Query(crate::bench::QueryArgs),
    /// Live fan-out: subscribers, messages/s and p50/p99 latency from the collector receiving
    /// an exchange message to a WebSocket subscriber receiving it, for 100, 1,000 and 5,000
    /// subscribers over 500 markets.
    Fanout(crate::bench_fanout::FanoutArgs),
    /// p50/p99 of the same query through the API with authentication, rate limiting and
    /// credit metering on and off, in one run, and the latency they add.
    Auth(crate::bench::AuthArgs),
}

#[derive(Debug, clap::Args)]
pub struct RawFramesArgs {
    /// Received at or after: RFC 3339 (`2026-12-05T04:00:00Z`) or Unix microseconds.
    #[arg(long, value_parser = parse_instant)]
    pub from: i64,
    /// Received before: RFC 3339 or Unix microseconds.
    #[arg(long, value_parser = parse_instant)]
    pub to: i64,
    /// Only this connection (the `conn` of `feed_gaps` and of stored rows).
    #[arg(long)]
    pub conn: Option<u64>,
}

/// An instant as Unix microseconds, from RFC 3339 text or a number of microseconds.
fn parse_instant(text: &str) -> Result<i64, String> {
    if let Ok(micros) = text.parse::<i64>() {
        return Ok(micros);
    }
    let at = humantime::parse_rfc3339_weak(text)
        .map_err(|e| format!("expected RFC 3339 or Unix microseconds: {e}"))?;
    let since_epoch = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| "before 1970".to_owned())?;
    i64::try_from(since_epoch.as_micros()).map_err(|_| "too far in the future".to_owned())
}

/// Runs one command to completion.
///
/// # Errors
/// Any start-up failure (invalid configuration, unreachable database, migration refused),
/// with context naming what failed.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Schema => {
            print!("{}", crate::graphql::sdl());
            Ok(())
        }
        Command::Migrate => {
            let config = Config::from_env()?;
            telemetry::init_logging(&config.log)?;
            let report = migrate::run(&config).await.context("migration failed")?;
            tracing::info!(
                clickhouse_applied = report.clickhouse_applied.len(),
                postgres_applied = report.postgres_applied.len(),
                "migrations up to date"
            );
            Ok(())
        }
        Command::Serve => {
            let config = Config::from_env()?;
            telemetry::init_logging(&config.log)?;
            let shutdown = shutdown::on_signals();
            server::serve(config, shutdown).await
        }
        Command::Collect => {
            let config = Config::from_env()?;
            telemetry::init_logging(&config.log)?;
            let shutdown = shutdown::on_signals();
            let collector =
                crate::collector::start(&config, crate::live::Bus::default(), shutdown).await?;
            collector.join().await;
            Ok(())
        }
        Command::Bench(BenchCommand::Ingest(args)) => {
            let config = Config::from_env()?;
            telemetry::init_logging(&config.log)?;
            crate::bench::ingest(&config, &args).await
        }
        Command::Bench(BenchCommand::Fanout(args)) => {
            let config = Config::from_env()?;
            telemetry::init_logging(&config.log)?;
            crate::bench_fanout::fanout(&config, &args).await
        }
        Command::Bench(BenchCommand::Auth(args)) => {
            let config = Config::from_env()?;
            telemetry::init_logging(&config.log)?;
            crate::bench::auth(&config, &args).await
        }
        Command::Bench(BenchCommand::Query(args)) => {
            let config = Config::from_env()?;
            telemetry::init_logging(&config.log)?;
            crate::bench::query(&config, &args).await
        }
        Command::Sim(args) => {
            let log = crate::config::LogConfig {
                format: crate::config::LogFormat::Text,
                filter: std::env::var("KALSHIBOOK_LOG").unwrap_or_else(|_| "info".to_owned()),
            };
            telemetry::init_logging(&log)?;
            crate::demo::sim(&args, shutdown::on_signals()).await
        }
        Command::Demo(args) => {
            let config = Config::from_env()?;
            telemetry::init_logging(&config.log)?;
            crate::demo::demo(config, &args, shutdown::on_signals()).await
        }
        Command::Accounts(command) => admin::accounts(command).await,
        Command::Keys(command) => admin::keys(command).await,
        Command::Credits(command) => admin::credits(command).await,
        Command::RawFrames(args) => {
            use std::io::Write;
            let config = Config::from_env()?;
            telemetry::init_logging(&config.log)?;
            let client = crate::clickhouse::client(&config.clickhouse);
            let frames =
                crate::collector::frame_log::frames_between(&client, args.from, args.to, args.conn)
                    .await?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for frame in &frames {
                serde_json::to_writer(&mut out, frame)?;
                out.write_all(b"\n")?;
            }
            out.flush()?;
            Ok(())
        }
        Command::Export => {
            anyhow::bail!("`{:?}` is not yet available in this build", cli.command)
        }
    }
}
