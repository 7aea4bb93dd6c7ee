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
}
