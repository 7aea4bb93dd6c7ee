//! What we know about a market besides its book: identity, status, schedule, tick structure.

/// A market's metadata, from REST discovery or the lifecycle channel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MarketMeta {
    pub ticker: String,
    pub event_ticker: String,
    pub series_ticker: String,
    pub title: String,
    pub subtitle: String,
    /// Kalshi's status word (`active`, `closed`, `settled`, …).
    pub status: String,
    /// Unix µs.
    pub open_time_us: Option<i64>,
    /// Unix µs.
    pub close_time_us: Option<i64>,
    /// e.g. `linear_cent`, `tapered_deci_cent`.
    pub price_level_structure: String,
    /// Kalshi's `price_ranges` as JSON text (`[{"start":..,"end":..,"step":..}]`).
    pub price_ranges_json: String,
}

impl MarketMeta {
    /// Whether the market still trades (its book can change).
    #[must_use]
    pub fn is_open(&self) -> bool {
        matches!(
            self.status.as_str(),
            "active" | "open" | "initialized" | "unopened" | "inactive" | "paused" | ""
        )
    }

    /// Whether the market had closed by `ts_us` (Unix µs): a closed status, or a close time
    /// at or before it. Its book can no longer change after that.
    #[must_use]
    pub fn closed_by(&self, ts_us: i64) -> bool {
        !self.is_open() || self.close_time_us.is_some_and(|close| close <= ts_us)
    }
}
