//! The collector: Kalshi's feed in, every book change into ClickHouse and onto the live bus.
//!
//! `processor` is the pure core (frames → rows, commands, live events), `feed` the exchange
//! I/O (discovery, WebSocket, reconnects, timers), `writer` the storage (batched idempotent
//! inserts, spool while ClickHouse is away).

pub mod feed;
pub mod frame_log;
pub mod processor;
pub mod recent_trades;
pub mod writer;

use std::sync::Arc;

use anyhow::Context;
use clickhouse::Row;
use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::feed::{FeedConfig, FeedHealth};
use self::processor::{Processor, ProcessorConfig};
use self::writer::{Writer, WriterConfig};
use crate::clickhouse::rows::FeedGapRow;
use crate::config::{Config, PrivateKey};
use crate::kalshi::rest::MarketFilter;
use crate::kalshi::signing::Signer;
use crate::live::Bus;

/// A running collector.
pub struct Collector {
    pub writer: Writer,
    pub health: Arc<FeedHealth>,
    feed: JoinHandle<()>,
    writer_task: JoinHandle<()>,
}

impl Collector {
    /// Waits for the feed to stop (on shutdown) and the writer to drain or spool.
    pub async fn join(self) {
        let _ = self.feed.await;
        let _ = self.writer_task.await;
    }
}

#[derive(Row, Deserialize)]
struct LastStored {
    market: String,
    ts_us: i64,
}

/// For every market with stored history, the book-axis time of its last stored event: the
/// gap left by a restart opens there. Its latest snapshot (exchange snapshot or checkpoint),
/// or a later delta: deltas are only searched in the last three hours before the newest
/// snapshot of all, which covers every market that was trading (checkpoints come at least
/// every 30 minutes) without scanning the whole history. No time filter against our own
/// clock: the exchange's may be far from it (a replay of old traffic).
///
/// A market that had closed, whose last stored event is the empty book Kalshi sends at the
/// close, is left out: its recording ended on purpose, and its final book stays exact (the
/// same rule as `books_left_empty` in `clickhouse::orderbook`; the open statuses are those
/// of `MarketMeta::is_open`).
async fn last_stored(
    client: &clickhouse::Client,
) -> Result<Vec<(String, i64)>, clickhouse::error::Error> {
    let rows = client
        .query(
            "SELECT s.market AS market, \
                    toUnixTimestamp64Micro(greatest(s.last_ts, ifNull(d.last_ts, s.last_ts))) AS ts_us \
             FROM (SELECT market, max(ts) AS last_ts, \
                          argMax(empty(yes_prices) AND empty(no_prices), (ts, conn, seq)) AS ends_empty \
                   FROM snapshots GROUP BY market) AS s \
             LEFT JOIN (SELECT market, max(ts) AS last_ts FROM deltas \
                        WHERE ts >= (SELECT max(ts) FROM snapshots) - INTERVAL 3 HOUR \
                        GROUP BY market) AS d ON s.market = d.market \
             LEFT JOIN (SELECT ticker, status, close_time FROM markets FINAL) AS m \
                  ON s.market = m.ticker \
             WHERE NOT (s.ends_empty \
                        AND ifNull(d.last_ts <= s.last_ts, 1) \
                        AND ifNull(m.status NOT IN ('active', 'open', 'initialized', 'unopened', 'inactive', 'paused', '') \
                                   OR ifNull(m.close_time <= s.last_ts, 0), 0)) \
             SETTINGS join_use_nulls = 1",
        )
        .fetch_all::<LastStored>()
        .await?;
    Ok(rows.into_iter().map(|r| (r.market, r.ts_us)).collect())
}

/// The market gaps earlier runs left open (a reconnect or error the process stopped before
/// recovering from): nothing in this run knows of them, so the first snapshot this run
/// stores for each market must close them, or its books would read as in a gap for ever.
async fn gaps_left_open(
    client: &clickhouse::Client,
) -> Result<Vec<FeedGapRow>, clickhouse::error::Error> {
    client
        .query(
            "SELECT market, gap_id, channel, toInt8(kind) AS kind, conn, sid, expected_seq, \
                    received_seq, toUnixTimestamp64Micro(ts_start) AS ts_start, \
                    toUnixTimestamp64Micro(ts_end) AS ts_end, detail, version \
             FROM feed_gaps FINAL WHERE market != '' AND ts_end IS NULL",
        )
        .fetch_all::<FeedGapRow>()
        .await
}

fn signer(config: &Config) -> anyhow::Result<Option<Signer>> {
    let kalshi = &config.kalshi;
    match (&kalshi.api_key_id, &kalshi.private_key) {
        (Some(key_id), Some(PrivateKey::Pem(pem))) => Ok(Some(
            Signer::from_pem(key_id, pem.expose()).context("KALSHIBOOK_KALSHI_PRIVATE_KEY_PEM")?,
        )),
        (Some(key_id), Some(PrivateKey::Path(path))) => Ok(Some(
            Signer::from_file(key_id, path).context("KALSHIBOOK_KALSHI_PRIVATE_KEY_PATH")?,
        )),
        (None, None) => {
            tracing::warn!(
                "no Kalshi credentials: connecting unsigned (only a simulator accepts that)"
            );
            Ok(None)
        }
        (None, Some(_)) => {
            anyhow::bail!("KALSHIBOOK_KALSHI_API_KEY_ID is required with a private key")
        }
        (Some(_), None) => anyhow::bail!(
            "KALSHIBOOK_KALSHI_PRIVATE_KEY_PATH or KALSHIBOOK_KALSHI_PRIVATE_KEY_PEM is required with an API key id"
        ),
    }
}

/// Starts the writer (draining any spool left behind) and the feed.
///
/// # Errors
/// Invalid credentials or an unusable spool directory.
pub async fn start(
    config: &Config,
    bus: Bus,
    shutdown: CancellationToken,
) -> anyhow::Result<Collector> {
    crate::telemetry::install_crypto_provider();
    let signer = signer(config)?;
    let client = crate::clickhouse::client(&config.clickhouse);
    let collector = &config.collector;
    let mut writer_config = WriterConfig::new(config.spool_dir.clone());
    writer_config.max_memory_bytes = collector.max_memory_bytes;
    let (writer, writer_task) = Writer::start(client.clone(), writer_config, shutdown.clone())?;

    let mut processor = Processor::new(
        ProcessorConfig {
            markets_per_subscription: collector.markets_per_subscription,
            record_raw_frames: collector.record_raw_frames,
            series_tickers: collector.series_tickers.clone(),
            event_tickers: collector.event_tickers.clone(),
            ..ProcessorConfig::default()
        },
        Some(bus),
    );
    match last_stored(&client).await {
        Ok(markets) => processor.resume_after_restart(markets),
        Err(error) => tracing::warn!(
            %error,
            "cannot read what earlier runs stored; their end will not be marked as a gap"
        ),
    }
    match gaps_left_open(&client).await {
        Ok(gaps) => processor.inherit_open_gaps(gaps),
        Err(error) => tracing::warn!(
            %error,
            "cannot read the gaps earlier runs left open; they stay open"
        ),
    }

    let mut feed_config =
        FeedConfig::new(config.kalshi.ws_url.clone(), config.kalshi.rest_url.clone());
    feed_config.filter = MarketFilter {
        status: Some("open".to_owned()),
        series_ticker: None,
        event_ticker: None,
    };
    feed_config.discovery_interval = collector.discovery_interval;
    if let [series] = collector.series_tickers.as_slice() {
        feed_config.filter.series_ticker = Some(series.clone());
    }
    let health = Arc::new(FeedHealth::default());
    let feed = tokio::spawn(feed::run(
        feed_config,
        signer,
        processor,
        writer.clone(),
        health.clone(),
        shutdown,
    ));
    Ok(Collector {
        writer,
        health,
        feed,
        writer_task,
    })
}
