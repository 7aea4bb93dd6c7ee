//! Recorded feed gaps of a market: spans in which the stored book may differ from the
//! exchange's (`feed_gaps FINAL`: the newest version of each gap, so a recovered gap has its
//! end and an unrecovered one none).

use clickhouse::Row;
use serde::Deserialize;

use super::events::TimeRange;
use super::read::ReadError;

/// One recorded gap.
#[derive(Clone, Debug, PartialEq, Eq, Row, Deserialize)]
pub struct StoredGap {
    pub gap_id: u64,
    /// The feed channel (`orderbook_delta`, `trade`, …).
    pub channel: String,
    /// The `feed_gaps.kind` enum's name (`sequence_gap`, `reconnect`, …).
    pub kind: String,
    pub conn: u64,
    pub sid: u32,
    pub expected_seq: u64,
    pub received_seq: u64,
    /// Unix µs: the last instant the stored book is known good.
    pub start_us: i64,
    /// Unix µs of the recovering snapshot; `None` while unrecovered.
    pub end_us: Option<i64>,
    pub detail: String,
}

impl StoredGap {
    /// Whether the gap covers `at_us`: `start <= at < end` (an open gap has no end).
    #[must_use]
    pub fn covers(&self, at_us: i64) -> bool {
        self.start_us <= at_us && self.end_us.is_none_or(|end| at_us < end)
    }
}

const GAPS_SQL: &str = r"
SELECT gap_id, channel, toString(kind) AS kind, conn, sid, expected_seq, received_seq,
       toUnixTimestamp64Micro(ts_start) AS start_us, toUnixTimestamp64Micro(ts_end) AS end_us,
       detail
FROM feed_gaps FINAL
WHERE market = {market:String}
  AND ts_start < fromUnixTimestamp64Micro({to_us:Int64}, 'UTC')
  AND (ts_end IS NULL OR ts_end > fromUnixTimestamp64Micro({from_us:Int64}, 'UTC'))
ORDER BY ts_start, gap_id
LIMIT {limit:UInt32}
";

/// Up to `limit` gaps of `market` overlapping `range`, by start; and whether more exist.
///
/// # Errors
/// [`ReadError`] when ClickHouse fails.
pub async fn gaps_overlapping(
    client: &clickhouse::Client,
    market: &str,
    range: TimeRange,
    limit: u32,
) -> Result<(Vec<StoredGap>, bool), ReadError> {
    let mut rows = client
        .query(GAPS_SQL)
        .param("market", market)
        .param("from_us", range.from_us)
        .param("to_us", range.to_us)
        .param("limit", limit + 1)
        .fetch_all::<StoredGap>()
        .await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    Ok((rows, more))
}
