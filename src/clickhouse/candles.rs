//! Candles rolled up at query time from the one-minute aggregates the materialized views keep
//! (`trade_candles_1m`, `quote_candles_1m`): the aggregate states merge (argMinMerge for the
//! open, argMaxMerge for the close, min/max/sum for the rest), so a candle of any multiple of
//! a minute reads minutes, never raw trades or quotes.
//!
//! Candles start at multiples of the interval since the Unix epoch (UTC), so a 1440-minute
//! candle is a UTC day; buckets without activity are absent.

use clickhouse::Row;
use serde::Deserialize;

use super::events::TimeRange;
use super::read::ReadError;

/// One trade candle. Prices in $0.0001 (YES price), volume in 0.01 contracts.
#[derive(Clone, Debug, PartialEq, Eq, Row, Deserialize)]
pub struct TradeCandle {
    /// Start of the candle, Unix seconds.
    pub start: i64,
    pub open: u32,
    pub high: u32,
    pub low: u32,
    pub close: u32,
    pub volume: i64,
    pub trades: u64,
}

/// One candle of the midpoint and spread of two-sided books. Midpoints are doubled
/// (`mid2 = best yes bid + yes ask`, in $0.0001) to stay integral; spreads in $0.0001.
#[derive(Clone, Debug, PartialEq, Eq, Row, Deserialize)]
pub struct QuoteCandle {
    pub start: i64,
    pub mid2_open: u32,
    pub mid2_high: u32,
    pub mid2_low: u32,
    pub mid2_close: u32,
    pub spread_min: i32,
    pub spread_max: i32,
    pub spread_sum: i64,
    /// Top-of-book changes aggregated.
    pub updates: u64,
}

const TRADE_CANDLES_SQL: &str = r"
SELECT intDiv(toInt64(toUnixTimestamp(bucket)), {interval_s:Int64}) * {interval_s:Int64} AS start,
       argMinMerge(open) AS open, max(high) AS high, min(low) AS low, argMaxMerge(close) AS close,
       sum(volume) AS volume, sum(trades) AS trades
FROM trade_candles_1m
WHERE market = {market:String}
  AND bucket >= toDateTime({from_s:Int64}, 'UTC') AND bucket < toDateTime({to_s:Int64}, 'UTC')
GROUP BY start
ORDER BY start
";

const QUOTE_CANDLES_SQL: &str = r"
SELECT intDiv(toInt64(toUnixTimestamp(bucket)), {interval_s:Int64}) * {interval_s:Int64} AS start,
       argMinMerge(mid2_open) AS mid2_open, max(mid2_high) AS mid2_high,
       min(mid2_low) AS mid2_low, argMaxMerge(mid2_close) AS mid2_close,
       min(spread_min) AS spread_min, max(spread_max) AS spread_max,
       sum(spread_sum) AS spread_sum, sum(updates) AS updates
FROM quote_candles_1m
WHERE market = {market:String}
  AND bucket >= toDateTime({from_s:Int64}, 'UTC') AND bucket < toDateTime({to_s:Int64}, 'UTC')
GROUP BY start
ORDER BY start
";

/// The range in whole seconds, its start rounded down to a multiple of the interval.
fn bounds(range: TimeRange, interval_s: i64) -> (i64, i64) {
    let from_s = range.from_us.div_euclid(1_000_000);
    let to_s = (range.to_us + 999_999).div_euclid(1_000_000);
    (from_s - from_s.rem_euclid(interval_s), to_s)
}

/// Trade candles of `market` of `interval_s` seconds (a multiple of 60) over `range`.
///
/// # Errors
/// [`ReadError`] when ClickHouse fails.
pub async fn trade_candles(
    client: &clickhouse::Client,
    market: &str,
    range: TimeRange,
    interval_s: i64,
) -> Result<Vec<TradeCandle>, ReadError> {
    let (from_s, to_s) = bounds(range, interval_s);
    Ok(client
        .query(TRADE_CANDLES_SQL)
        .param("market", market)
        .param("from_s", from_s)
        .param("to_s", to_s)
        .param("interval_s", interval_s)
        .fetch_all::<TradeCandle>()
        .await?)
}

/// Midpoint and spread candles of `market` of `interval_s` seconds over `range`.
///
/// # Errors
/// [`ReadError`] when ClickHouse fails.
pub async fn quote_candles(
    client: &clickhouse::Client,
    market: &str,
    range: TimeRange,
    interval_s: i64,
) -> Result<Vec<QuoteCandle>, ReadError> {
    let (from_s, to_s) = bounds(range, interval_s);
    Ok(client
        .query(QUOTE_CANDLES_SQL)
        .param("market", market)
        .param("from_s", from_s)
        .param("to_s", to_s)
        .param("interval_s", interval_s)
        .fetch_all::<QuoteCandle>()
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_align_the_start_and_round_the_end_up() {
        let range = TimeRange {
            from_us: 3_700_000_001,
            to_us: 7_200_000_001,
        };
        assert_eq!(bounds(range, 3600), (3600, 7201));
        assert_eq!(bounds(range, 60), (3660, 7201));
    }
}
