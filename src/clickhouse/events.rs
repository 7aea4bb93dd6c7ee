//! Pages of a market's deltas and trades over a time range, by keyset: each page starts
//! strictly after a position in the table's own order, so a position stays valid (and a page
//! never repeats or skips a row) while new rows arrive.
//!
//! Deltas are ordered by (ts, conn, seq), the total order of a market's book events; trades
//! by (ts, trade_id), the `trades` table's key (a trade stored twice is one trade: `FINAL`).

use clickhouse::Row;
use serde::Deserialize;

use super::read::ReadError;

/// A half-open time range `[from_us, to_us)`, Unix µs (exchange time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeRange {
    pub from_us: i64,
    pub to_us: i64,
}

/// Where a delta sits in its market's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeltaKey {
    pub ts_us: i64,
    pub conn: u64,
    pub seq: u64,
}

/// One stored delta, as the API reads it.
#[derive(Clone, Debug, PartialEq, Eq, Row, Deserialize)]
pub struct DeltaEvent {
    /// Exchange time, Unix µs.
    pub ts_us: i64,
    /// Collector receive time, Unix µs.
    pub ts_received_us: i64,
    pub conn: u64,
    pub sid: u32,
    pub seq: u64,
    /// `rows::side_code`: 1 yes, 2 no.
    pub side: i8,
    /// $0.0001 units.
    pub price: u32,
    /// Signed change, 0.01-contract units.
    pub delta: i64,
}

impl DeltaEvent {
    #[must_use]
    pub fn key(&self) -> DeltaKey {
        DeltaKey {
            ts_us: self.ts_us,
            conn: self.conn,
            seq: self.seq,
        }
    }
}

/// A page of rows and whether more follow within the range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub rows: Vec<T>,
    pub has_next: bool,
}

fn page<T>(mut rows: Vec<T>, limit: u32) -> Page<T> {
    let has_next = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    Page { rows, has_next }
}

// Aliases never reuse a column's name: an alias equal to a column would shadow it in WHERE.
const DELTAS_PAGE_SQL: &str = r"
SELECT toUnixTimestamp64Micro(ts) AS ts_us, toUnixTimestamp64Micro(ts_received) AS ts_received_us,
       conn, sid, seq, toInt8(side) AS side, price, delta
FROM deltas
WHERE market = {market:String}
  AND ts >= fromUnixTimestamp64Micro(greatest({from_us:Int64}, {after_ts:Int64}), 'UTC')
  AND ts < fromUnixTimestamp64Micro({to_us:Int64}, 'UTC')
  AND (NOT {has_after:Bool}
       OR (ts, conn, seq) > (fromUnixTimestamp64Micro({after_ts:Int64}, 'UTC'), {after_conn:UInt64}, {after_seq:UInt64}))
ORDER BY ts, conn, seq
LIMIT {limit:UInt32}
";

/// Up to `limit` deltas of `market` in `range`, strictly after `after`, in exchange order.
///
/// # Errors
/// [`ReadError`] when ClickHouse fails.
pub async fn deltas_page(
    client: &clickhouse::Client,
    market: &str,
    range: TimeRange,
    after: Option<DeltaKey>,
    limit: u32,
) -> Result<Page<DeltaEvent>, ReadError> {
    let key = after.unwrap_or(DeltaKey {
        ts_us: range.from_us,
        conn: 0,
        seq: 0,
    });
    let rows = client
        .query(DELTAS_PAGE_SQL)
        .param("market", market)
        .param("from_us", range.from_us)
        .param("to_us", range.to_us)
        .param("has_after", after.is_some())
        .param("after_ts", key.ts_us)
        .param("after_conn", key.conn)
        .param("after_seq", key.seq)
        .param("limit", limit + 1)
        .fetch_all::<DeltaEvent>()
        .await?;
    Ok(page(rows, limit))
}

/// Where a trade sits in its market's order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TradeKey {
    pub ts_us: i64,
    pub trade_id: String,
}

/// One stored trade, as the API reads it.
#[derive(Clone, Debug, PartialEq, Eq, Row, Deserialize)]
pub struct TradeEvent {
    /// Exchange time, Unix µs.
    pub ts_us: i64,
    pub ts_received_us: i64,
    pub trade_id: String,
    /// $0.0001 units.
    pub yes_price: u32,
    /// 0.01-contract units.
    pub count: i64,
    /// `rows::side_code` of the taker's side.
    pub taker_side: i8,
    pub is_block: bool,
}

impl TradeEvent {
    #[must_use]
    pub fn key(&self) -> TradeKey {
        TradeKey {
            ts_us: self.ts_us,
            trade_id: self.trade_id.clone(),
        }
    }
}

const TRADES_PAGE_SQL: &str = r"
SELECT toUnixTimestamp64Micro(ts) AS ts_us, toUnixTimestamp64Micro(ts_received) AS ts_received_us,
       trade_id, yes_price, count, toInt8(taker_side) AS taker_side, is_block
FROM trades FINAL
WHERE market = {market:String}
  AND ts >= fromUnixTimestamp64Micro(greatest({from_us:Int64}, {after_ts:Int64}), 'UTC')
  AND ts < fromUnixTimestamp64Micro({to_us:Int64}, 'UTC')
  AND (NOT {has_after:Bool}
       OR (ts, trade_id) > (fromUnixTimestamp64Micro({after_ts:Int64}, 'UTC'), {after_id:String}))
ORDER BY ts, trade_id
LIMIT {limit:UInt32}
";

/// Up to `limit` trades of `market` in `range`, strictly after `after`, by (ts, trade id).
///
/// # Errors
/// [`ReadError`] when ClickHouse fails.
pub async fn trades_page(
    client: &clickhouse::Client,
    market: &str,
    range: TimeRange,
    after: Option<&TradeKey>,
    limit: u32,
) -> Result<Page<TradeEvent>, ReadError> {
    let rows = client
        .query(TRADES_PAGE_SQL)
        .param("market", market)
        .param("from_us", range.from_us)
        .param("to_us", range.to_us)
        .param("has_after", after.is_some())
        .param("after_ts", after.map_or(range.from_us, |k| k.ts_us))
        .param("after_id", after.map_or("", |k| k.trade_id.as_str()))
        .param("limit", limit + 1)
        .fetch_all::<TradeEvent>()
        .await?;
    Ok(page(rows, limit))
}
