//! The trade ids seen lately, so that a trade the exchange delivers twice is stored once.
//!
//! The `trades` table collapses repeats by `(market, ts, trade_id)` only when its parts merge,
//! but the one-minute candles (`trade_candles_1m_mv`) aggregate every inserted row at insert
//! time: a repeat would count twice in volume and trade count for good. A trade can come
//! twice when the trade subscription is replaced (after an error, or a reconnect whose new
//! connection overlaps what the old one delivered). Inserts retried after an error are
//! already deduplicated by ClickHouse (the writer's tokens), which the views follow.

use std::collections::{HashSet, VecDeque};

/// How many ids are remembered: far more trades than any subscription switch can replay,
/// a few megabytes at most.
pub const CAPACITY: usize = 65_536;

/// A bounded set of `(market, trade_id)`, forgetting the oldest first.
#[derive(Debug)]
pub struct RecentTrades {
    capacity: usize,
    order: VecDeque<(String, String)>,
    seen: HashSet<(String, String)>,
}

impl Default for RecentTrades {
    fn default() -> Self {
        Self::with_capacity(CAPACITY)
    }
}

impl RecentTrades {
    #[must_use]
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            order: VecDeque::new(),
            seen: HashSet::new(),
        }
    }

    /// Remembers the trade; false when it was already remembered (a repeat). An empty id
    /// identifies nothing, so it is never taken for a repeat.
    pub fn first_time(&mut self, market: &str, trade_id: &str) -> bool {
        if trade_id.is_empty() {
            return true;
        }
        let key = (market.to_owned(), trade_id.to_owned());
        if self.seen.contains(&key) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        self.seen.insert(key.clone());
        self.order.push_back(key);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_is_recognised_per_market_and_the_oldest_are_forgotten() {
        let mut recent = RecentTrades::with_capacity(2);
        assert!(recent.first_time("A", "t1"));
        assert!(!recent.first_time("A", "t1"));
        assert!(recent.first_time("B", "t1"), "same id, other market");
        assert!(recent.first_time("A", "t2"));
        // Capacity 2: ("A", "t1") was the oldest and is forgotten.
        assert!(recent.first_time("A", "t1"));
        assert!(!recent.first_time("A", "t2"));
    }

    #[test]
    fn an_empty_id_is_never_a_repeat() {
        let mut recent = RecentTrades::with_capacity(4);
        assert!(recent.first_time("A", ""));
        assert!(recent.first_time("A", ""));
    }
}
