//! History for replay-then-live subscriptions: the book events (exchange snapshots and deltas)
//! of a set of markets after a position, in each market's feed order, one page at a time.
//!
//! A market's events are ordered by (ts, conn, seq) (see `deltas`); the page key adds the
//! market so that a page boundary between two markets' events at the same (ts, conn, seq) —
//! possible, they sit on different exchange subscriptions — neither skips nor repeats one.
//! The collector's own checkpoints are not events (they restate a book the deltas already
//! built) and are left out.

use clickhouse::Row;
use serde::Deserialize;

use super::read::ReadError;
use crate::market::{Book, Price, Side, Size};

/// Where a page starts: strictly after this (ts µs, conn, seq, market).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReplayKey {
    pub ts_us: i64,
    pub conn: u64,
    pub seq: u64,
    pub market: String,
}

/// What happened, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplayChange {
    /// The exchange replaced the whole book.
    Snapshot(Book),
    /// One level changed by a signed size.
    Delta {
        side: Side,
        price: Price,
        delta: Size,
    },
}

/// One stored book event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayEvent {
    pub market: String,
    /// Book-axis (exchange) time, Unix µs.
    pub ts_us: i64,
    /// Collector receive time, Unix µs.
    pub ts_received_us: i64,
    pub conn: u64,
    pub sid: u32,
    pub seq: u64,
    pub change: ReplayChange,
}

impl ReplayEvent {
    /// The key a following page starts after.
    #[must_use]
    pub fn key(&self) -> ReplayKey {
        ReplayKey {
            ts_us: self.ts_us,
            conn: self.conn,
            seq: self.seq,
            market: self.market.clone(),
        }
    }
}

#[derive(Debug, Row, Deserialize)]
struct ReplayRow {
    market: String,
    kind: u8,
    ts_us: i64,
    ts_received_us: i64,
    conn: u64,
    sid: u32,
    seq: u64,
    side: i8,
    price: u32,
    delta: i64,
    yes_prices: Vec<u32>,
    yes_sizes: Vec<i64>,
    no_prices: Vec<u32>,
    no_sizes: Vec<i64>,
}

// `ts >= from` prunes by the primary key; the tuple comparison is the exact keyset.
const REPLAY_SQL: &str = r"
SELECT market, kind, ts_us, ts_received_us, conn, sid, seq, side, price, delta,
       yes_prices, yes_sizes, no_prices, no_sizes
FROM (
    SELECT market, toUInt8(2) AS kind, toUnixTimestamp64Micro(ts) AS ts_us,
           toUnixTimestamp64Micro(ts_received) AS ts_received_us, conn, sid, seq,
           toInt8(side) AS side, price, delta,
           CAST([], 'Array(UInt32)') AS yes_prices, CAST([], 'Array(Int64)') AS yes_sizes,
           CAST([], 'Array(UInt32)') AS no_prices, CAST([], 'Array(Int64)') AS no_sizes
    FROM deltas
    WHERE market IN {markets:Array(String)}
      AND ts >= fromUnixTimestamp64Micro({after_ts:Int64}, 'UTC')
      AND (toUnixTimestamp64Micro(ts), conn, seq, market)
          > ({after_ts:Int64}, {after_conn:UInt64}, {after_seq:UInt64}, {after_market:String})
    UNION ALL
    SELECT market, toUInt8(1), toUnixTimestamp64Micro(ts), toUnixTimestamp64Micro(ts_received),
           conn, sid, seq, toInt8(0), toUInt32(0), toInt64(0),
           yes_prices, yes_sizes, no_prices, no_sizes
    FROM snapshots
    WHERE market IN {markets:Array(String)}
      AND source = 'exchange'
      AND ts >= fromUnixTimestamp64Micro({after_ts:Int64}, 'UTC')
      AND (toUnixTimestamp64Micro(ts), conn, seq, market)
          > ({after_ts:Int64}, {after_conn:UInt64}, {after_seq:UInt64}, {after_market:String})
)
ORDER BY ts_us, conn, seq, market
LIMIT {limit:UInt32}
";

fn side_of(code: i8) -> Result<Side, ReadError> {
    match code {
        1 => Ok(Side::Yes),
        2 => Ok(Side::No),
        other => Err(ReadError::Corrupt(format!("side code {other}"))),
    }
}

fn levels(
    side: Side,
    prices: &[u32],
    sizes: &[i64],
) -> Result<Vec<(Side, Price, Size)>, ReadError> {
    prices
        .iter()
        .zip(sizes)
        .map(|(&price, &size)| {
            if size < 0 || price > Price::SCALE {
                return Err(ReadError::Corrupt(format!(
                    "{side:?} level {price} has size {size}"
                )));
            }
            Ok((side, Price::from_units(price), Size::from_units(size)))
        })
        .collect()
}

impl TryFrom<ReplayRow> for ReplayEvent {
    type Error = ReadError;
    fn try_from(row: ReplayRow) -> Result<Self, ReadError> {
        let change = if row.kind == 1 {
            let mut all = levels(Side::Yes, &row.yes_prices, &row.yes_sizes)?;
            all.extend(levels(Side::No, &row.no_prices, &row.no_sizes)?);
            ReplayChange::Snapshot(Book::from_levels(all))
        } else {
            ReplayChange::Delta {
                side: side_of(row.side)?,
                price: Price::from_units(row.price),
                delta: Size::from_units(row.delta),
            }
        };
        Ok(Self {
            market: row.market,
            ts_us: row.ts_us,
            ts_received_us: row.ts_received_us,
            conn: row.conn,
            sid: row.sid,
            seq: row.seq,
            change,
        })
    }
}

/// Up to `limit` book events of `markets` strictly after `after`, in feed order.
///
/// # Errors
/// [`ReadError`] when ClickHouse fails or returns a row the domain rejects.
pub async fn replay_page(
    client: &clickhouse::Client,
    markets: &[String],
    after: &ReplayKey,
    limit: u32,
) -> Result<Vec<ReplayEvent>, ReadError> {
    let rows = client
        .query(REPLAY_SQL)
        .param("markets", markets)
        .param("after_ts", after.ts_us)
        .param("after_conn", after.conn)
        .param("after_seq", after.seq)
        .param("after_market", after.market.as_str())
        .param("limit", limit)
        .fetch_all::<ReplayRow>()
        .await?;
    rows.into_iter().map(ReplayEvent::try_from).collect()
}
