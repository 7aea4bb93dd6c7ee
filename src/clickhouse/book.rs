//! The book of one market at an instant, reconstructed inside ClickHouse.
//!
//! The book at T is the latest snapshot at or before T (exchange snapshot or collector
//! checkpoint, found by ASOF JOIN) plus every delta after that snapshot up to T, summed by
//! (side, price). The snapshot search is bounded to [`SNAPSHOT_LOOKBACK`] before T, so the
//! work is bounded however long the history: the collector checkpoints every market well
//! within that window.
//!
//! Events of a market are totally ordered by (ts, conn, seq): `ts` ties within Kalshi's
//! millisecond stamps, `seq` restarts per connection, `conn` increases across connections.

use std::time::Duration;

use clickhouse::Row;
use serde::Deserialize;

use crate::market::{Book, Price, Side, Size};

/// How far before T a snapshot is searched for. The collector checkpoints each market at
/// least every hour; twice that leaves room for a late checkpoint.
pub const SNAPSHOT_LOOKBACK: Duration = Duration::from_secs(2 * 60 * 60);

/// "Book of market M at time T". Parameters: `market` (String), `at_us` (Int64, Unix µs),
/// `lookback_us` (Int64). Always returns exactly one row (see [`BookAtRow`]).
pub const BOOK_AT_SQL: &str = r"
WITH
    snap AS (
        SELECT s.ts AS ts, s.pos.1 AS conn, s.pos.2 AS seq, s.levels AS levels
        FROM (
            SELECT {market:String} AS market,
                   fromUnixTimestamp64Micro({at_us:Int64}, 'UTC') AS at
        ) AS q
        ASOF INNER JOIN (
            -- one row per (market, ts): of snapshots sharing a timestamp, the last one wins
            SELECT market, ts,
                   max((conn, seq)) AS pos,
                   argMax(
                       arrayConcat(
                           arrayMap((p, s) -> ('yes', p, s), yes_prices, yes_sizes),
                           arrayMap((p, s) -> ('no', p, s), no_prices, no_sizes)),
                       (conn, seq)) AS levels
            FROM snapshots
            WHERE market = {market:String}
              AND ts <= fromUnixTimestamp64Micro({at_us:Int64}, 'UTC')
              AND ts >= fromUnixTimestamp64Micro({at_us:Int64} - {lookback_us:Int64}, 'UTC')
            GROUP BY market, ts
        ) AS s ON q.market = s.market AND q.at >= s.ts
    ),
    events AS (
        -- the snapshot itself (side '') so that an empty book is still found, then its levels
        SELECT level.1 AS side, level.2 AS price, level.3 AS size, (ts, conn, seq) AS pos
        FROM snap
        ARRAY JOIN arrayConcat([('', toUInt32(0), toInt64(0))], levels) AS level
        UNION ALL
        SELECT toString(d.side), d.price, d.delta, (d.ts, d.conn, d.seq)
        FROM deltas AS d CROSS JOIN snap
        WHERE d.market = {market:String}
          AND d.ts <= fromUnixTimestamp64Micro({at_us:Int64}, 'UTC')
          AND d.ts >= fromUnixTimestamp64Micro({at_us:Int64} - {lookback_us:Int64}, 'UTC')
          AND (d.ts, d.conn, d.seq) > (snap.ts, snap.conn, snap.seq)
    ),
    levels AS (
        SELECT side, price, sum(size) AS size, max(pos) AS pos
        FROM events
        GROUP BY side, price
    )
SELECT
    countIf(side = '') AS snapshots,
    toUnixTimestamp64Micro(max(pos).1) AS last_ts_us,
    max(pos).2 AS last_conn,
    max(pos).3 AS last_seq,
    arrayMap(l -> l.1, arraySort(groupArrayIf((side, price, size), side != '' AND size != 0))) AS sides,
    arrayMap(l -> l.2, arraySort(groupArrayIf((side, price, size), side != '' AND size != 0))) AS prices,
    arrayMap(l -> l.3, arraySort(groupArrayIf((side, price, size), side != '' AND size != 0))) AS sizes
FROM levels
";

/// The single row [`BOOK_AT_SQL`] returns.
#[derive(Debug, Row, Deserialize)]
pub struct BookAtRow {
    /// 1 when a snapshot was found within the lookback, else 0 (and the book is unknown).
    pub snapshots: u64,
    pub last_ts_us: i64,
    pub last_conn: u64,
    pub last_seq: u64,
    pub sides: Vec<String>,
    pub prices: Vec<u32>,
    pub sizes: Vec<i64>,
}

/// Where in the feed a reconstructed book stands: the last event applied to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BookPosition {
    /// Exchange time of the last applied event, Unix microseconds.
    pub ts_us: i64,
    /// The collector connection that received it.
    pub conn: u64,
    /// Its sequence number within that connection's subscription.
    pub seq: u64,
}

/// A market's book at an instant, as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BookAt {
    pub position: BookPosition,
    pub book: Book,
}

/// Errors reading a book.
#[derive(Debug, thiserror::Error)]
pub enum BookQueryError {
    #[error(transparent)]
    ClickHouse(#[from] clickhouse::error::Error),
    /// A stored row that the domain rejects (never expected; reported, not guessed at).
    #[error("stored level is invalid: {0}")]
    Corrupt(String),
}

/// Reconstructs the book of `market` at `at_us` (Unix µs, exchange time).
///
/// Returns `None` when no snapshot lies within [`SNAPSHOT_LOOKBACK`] before `at_us`: the
/// book at that instant is unknown (before recording began, or inside an outage).
///
/// # Errors
/// [`BookQueryError`] when ClickHouse fails or returns a level the domain rejects.
pub async fn book_at(
    client: &clickhouse::Client,
    market: &str,
    at_us: i64,
) -> Result<Option<BookAt>, BookQueryError> {
    let lookback_us = i64::try_from(SNAPSHOT_LOOKBACK.as_micros()).unwrap_or(i64::MAX);
    let row = client
        .query(BOOK_AT_SQL)
        .param("market", market)
        .param("at_us", at_us)
        .param("lookback_us", lookback_us)
        .fetch_one::<BookAtRow>()
        .await?;
    book_from_row(row)
}

fn book_from_row(row: BookAtRow) -> Result<Option<BookAt>, BookQueryError> {
    if row.snapshots == 0 {
        return Ok(None);
    }
    let mut levels = Vec::with_capacity(row.prices.len());
    for ((side, price), size) in row.sides.iter().zip(&row.prices).zip(&row.sizes) {
        let side: Side = side
            .parse()
            .map_err(|e| BookQueryError::Corrupt(format!("{e}")))?;
        if *size < 0 || *price > Price::SCALE {
            return Err(BookQueryError::Corrupt(format!(
                "{side:?} level {price} has size {size}"
            )));
        }
        levels.push((side, Price::from_units(*price), Size::from_units(*size)));
    }
    Ok(Some(BookAt {
        position: BookPosition {
            ts_us: row.last_ts_us,
            conn: row.last_conn,
            seq: row.last_seq,
        },
        book: Book::from_levels(levels),
    }))
}
