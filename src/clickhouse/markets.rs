//! Market metadata (`markets FINAL`: the newest version of each market) and what has been
//! recorded of each market: first and last event, row counts, feed gaps.

use std::collections::HashMap;

use clickhouse::Row;
use serde::Deserialize;

use super::events::TimeRange;
use super::read::ReadError;
use crate::market::MarketMeta;

/// One market as stored, with when its metadata last changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMarket {
    pub meta: MarketMeta,
    /// Unix µs.
    pub updated_at_us: i64,
}

#[derive(Debug, Row, Deserialize)]
struct MarketRow {
    ticker: String,
    event_ticker: String,
    series_ticker: String,
    title: String,
    subtitle: String,
    status: String,
    open_time_us: Option<i64>,
    close_time_us: Option<i64>,
    price_level_structure: String,
    price_ranges: String,
    updated_at_us: i64,
}

impl From<MarketRow> for StoredMarket {
    fn from(row: MarketRow) -> Self {
        Self {
            meta: MarketMeta {
                ticker: row.ticker,
                event_ticker: row.event_ticker,
                series_ticker: row.series_ticker,
                title: row.title,
                subtitle: row.subtitle,
                status: row.status,
                open_time_us: row.open_time_us,
                close_time_us: row.close_time_us,
                price_level_structure: row.price_level_structure,
                price_ranges_json: row.price_ranges,
            },
            updated_at_us: row.updated_at_us,
        }
    }
}

/// Filters of the market list; empty strings match everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MarketFilter {
    /// A status word as Kalshi's market objects write it (`active`, `closed`, `determined`,
    /// `finalized`, …), or as its `GET /markets?status=` filter does (`unopened`, `open`,
    /// `closed`, `settled`), case-insensitive; see [`MarketFilter::statuses`].
    pub status: String,
    pub series_ticker: String,
    pub event_ticker: String,
    /// Case-insensitive substring of the ticker, title or subtitle.
    pub search: String,
}

impl MarketFilter {
    /// The stored status words the `status` filter matches. Kalshi's list filter speaks of
    /// `open` and `settled` while its market objects say `active` and `finalized`: a client
    /// using either vocabulary gets the same markets.
    #[must_use]
    pub fn statuses(&self) -> Vec<String> {
        let status = self.status.trim().to_ascii_lowercase();
        let words: &[&str] = match status.as_str() {
            "" => &[],
            "open" | "active" => &["active", "open"],
            "unopened" | "initialized" | "inactive" => &["initialized", "inactive", "unopened"],
            "settled" | "finalized" => &["settled", "finalized"],
            _ => return vec![status],
        };
        words.iter().map(|w| (*w).to_owned()).collect()
    }
}

const MARKET_COLUMNS: &str = "ticker, event_ticker, series_ticker, title, subtitle, status,
       toUnixTimestamp64Micro(open_time) AS open_time_us,
       toUnixTimestamp64Micro(close_time) AS close_time_us,
       price_level_structure, price_ranges,
       toUnixTimestamp64Micro(updated_at) AS updated_at_us";

/// Up to `limit` markets matching `filter` with a ticker after `after`, by ticker; and whether
/// more follow.
///
/// # Errors
/// [`ReadError`] when ClickHouse fails.
pub async fn list_markets(
    client: &clickhouse::Client,
    filter: &MarketFilter,
    after: Option<&str>,
    limit: u32,
) -> Result<(Vec<StoredMarket>, bool), ReadError> {
    let sql = format!(
        "SELECT {MARKET_COLUMNS}
FROM markets FINAL
WHERE (empty({{statuses:Array(String)}}) OR has({{statuses:Array(String)}}, lower(status)))
  AND ({{series:String}} = '' OR series_ticker = {{series:String}})
  AND ({{event:String}} = '' OR event_ticker = {{event:String}})
  AND ({{search:String}} = ''
       OR positionCaseInsensitiveUTF8(concat(ticker, ' ', title, ' ', subtitle), {{search:String}}) > 0)
  AND ticker > {{after:String}}
ORDER BY ticker
LIMIT {{limit:UInt32}}"
    );
    let mut rows = client
        .query(&sql)
        .param("statuses", filter.statuses())
        .param("series", &filter.series_ticker)
        .param("event", &filter.event_ticker)
        .param("search", &filter.search)
        .param("after", after.unwrap_or(""))
        .param("limit", limit + 1)
        .fetch_all::<MarketRow>()
        .await?;
    let has_next = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    Ok((rows.into_iter().map(StoredMarket::from).collect(), has_next))
}

/// The newest metadata of one market, if any was stored.
///
/// # Errors
/// [`ReadError`] when ClickHouse fails.
pub async fn get_market(
    client: &clickhouse::Client,
    ticker: &str,
) -> Result<Option<StoredMarket>, ReadError> {
    let sql =
        format!("SELECT {MARKET_COLUMNS} FROM markets FINAL WHERE ticker = {{ticker:String}}");
    let row = client
        .query(&sql)
        .param("ticker", ticker)
        .fetch_optional::<MarketRow>()
        .await?;
    Ok(row.map(StoredMarket::from))
}

/// What was recorded of one market within a time range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Exchange time of the first stored snapshot, delta or trade, Unix µs; `None` when none.
    pub first_us: Option<i64>,
    /// Exchange time of the last stored snapshot, delta or trade, Unix µs.
    pub last_us: Option<i64>,
    pub deltas: u64,
    pub snapshots: u64,
    /// Distinct trade ids.
    pub trades: u64,
    /// Recorded feed gaps overlapping the range.
    pub gaps: u64,
    /// Of those, the ones not yet recovered.
    pub open_gaps: u64,
    /// Time within the range covered by gaps (overlaps counted once per gap), µs; an open
    /// gap counts up to the end of the range or now, whichever is earlier.
    pub gap_us: i64,
}

#[derive(Debug, Row, Deserialize)]
struct RecordedRow {
    market: String,
    deltas: u64,
    snapshots: u64,
    trades: u64,
    first_us: i64,
    last_us: i64,
}

#[derive(Debug, Row, Deserialize)]
struct GapCountRow {
    market: String,
    gaps: u64,
    open_gaps: u64,
    gap_us: i64,
}

const RECORDED_SQL: &str = r"
SELECT market, sum(n_deltas) AS deltas, sum(n_snapshots) AS snapshots, sum(n_trades) AS trades,
       min(lo) AS first_us, max(hi) AS last_us
FROM (
    SELECT market, count() AS n_deltas, toUInt64(0) AS n_snapshots, toUInt64(0) AS n_trades,
           toUnixTimestamp64Micro(min(ts)) AS lo, toUnixTimestamp64Micro(max(ts)) AS hi
    FROM deltas
    WHERE market IN {markets:Array(String)}
      AND ts >= fromUnixTimestamp64Micro({from_us:Int64}, 'UTC')
      AND ts < fromUnixTimestamp64Micro({to_us:Int64}, 'UTC')
    GROUP BY market
    UNION ALL
    SELECT market, toUInt64(0), count(), toUInt64(0),
           toUnixTimestamp64Micro(min(ts)), toUnixTimestamp64Micro(max(ts))
    FROM snapshots
    WHERE market IN {markets:Array(String)}
      AND ts >= fromUnixTimestamp64Micro({from_us:Int64}, 'UTC')
      AND ts < fromUnixTimestamp64Micro({to_us:Int64}, 'UTC')
    GROUP BY market
    UNION ALL
    SELECT market, toUInt64(0), toUInt64(0), uniqExact(trade_id),
           toUnixTimestamp64Micro(min(ts)), toUnixTimestamp64Micro(max(ts))
    FROM trades
    WHERE market IN {markets:Array(String)}
      AND ts >= fromUnixTimestamp64Micro({from_us:Int64}, 'UTC')
      AND ts < fromUnixTimestamp64Micro({to_us:Int64}, 'UTC')
    GROUP BY market
)
GROUP BY market
";

const GAP_COUNTS_SQL: &str = r"
SELECT market, count() AS gaps, countIf(ts_end IS NULL) AS open_gaps,
       toInt64(sum(
           greatest(0,
               least(ifNull(toUnixTimestamp64Micro(ts_end), {now_us:Int64}), {to_us:Int64})
               - greatest(toUnixTimestamp64Micro(ts_start), {from_us:Int64})))) AS gap_us
FROM feed_gaps FINAL
WHERE market IN {markets:Array(String)}
  AND ts_start < fromUnixTimestamp64Micro({to_us:Int64}, 'UTC')
  AND (ts_end IS NULL OR ts_end > fromUnixTimestamp64Micro({from_us:Int64}, 'UTC'))
GROUP BY market
";

/// Coverage of each of `markets` within `range` (two queries, run concurrently). Markets with
/// nothing recorded get an empty [`Coverage`].
///
/// # Errors
/// [`ReadError`] when ClickHouse fails.
pub async fn coverage(
    client: &clickhouse::Client,
    markets: &[String],
    range: TimeRange,
    now_us: i64,
) -> Result<HashMap<String, Coverage>, ReadError> {
    let recorded = client
        .query(RECORDED_SQL)
        .param("markets", markets)
        .param("from_us", range.from_us)
        .param("to_us", range.to_us)
        .fetch_all::<RecordedRow>();
    let gaps = client
        .query(GAP_COUNTS_SQL)
        .param("markets", markets)
        .param("from_us", range.from_us)
        .param("to_us", range.to_us)
        .param("now_us", now_us)
        .fetch_all::<GapCountRow>();
    let (recorded, gaps) = tokio::try_join!(recorded, gaps)?;
    let mut out: HashMap<String, Coverage> = markets
        .iter()
        .map(|m| (m.clone(), Coverage::default()))
        .collect();
    for row in recorded {
        if let Some(c) = out.get_mut(&row.market) {
            c.deltas = row.deltas;
            c.snapshots = row.snapshots;
            c.trades = row.trades;
            if row.deltas + row.snapshots + row.trades > 0 {
                c.first_us = Some(row.first_us);
                c.last_us = Some(row.last_us);
            }
        }
    }
    for row in gaps {
        if let Some(c) = out.get_mut(&row.market) {
            c.gaps = row.gaps;
            c.open_gaps = row.open_gaps;
            c.gap_us = row.gap_us;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_status_vocabularies_match_the_same_markets() {
        let statuses = |status: &str| {
            MarketFilter {
                status: status.to_owned(),
                ..MarketFilter::default()
            }
            .statuses()
        };
        assert!(statuses("").is_empty());
        assert_eq!(statuses("open"), statuses("ACTIVE"));
        assert!(statuses("open").contains(&"active".to_owned()));
        assert!(statuses("settled").contains(&"finalized".to_owned()));
        assert_eq!(statuses("Determined"), ["determined"]);
    }
}
