//! The price list: what each operation costs, so the GraphQL layer can price a parsed query
//! before running it (`X-Credits-Cost`) and charge exactly that.

use std::fmt;
use std::str::FromStr;

use super::Credits;

/// A priced operation. The GraphQL layer maps each top-level field (and each page of a
/// paginated one) to one of these; the name is what the ledger and usage tables record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    /// The market list (one page).
    Markets,
    /// One market's metadata.
    Market,
    /// One page of order book deltas.
    DeltasPage,
    /// One page of trades.
    TradesPage,
    /// The book of one market at one instant (`bookSnapshots` pays this per instant).
    OrderbookAt,
    /// One page (up to 1000) of pre-aggregated candles.
    Candles,
    /// One market's recorded feed gaps over a range.
    FeedGaps,
    /// What was recorded of one market over a range.
    Coverage,
    /// Starting a live subscription (any of `orderbook`, `deltas`, `trades`, `marketStatus`).
    LiveSubscription,
    /// A block of [`LIVE_MESSAGES_PER_BLOCK`] messages delivered on a live subscription,
    /// charged before the block's first message (heartbeats are free).
    LiveMessages,
}

/// Messages of a live subscription paid for by one [`Operation::LiveMessages`].
pub const LIVE_MESSAGES_PER_BLOCK: u64 = 1_000;

impl Operation {
    pub const ALL: [Self; 10] = [
        Self::Markets,
        Self::Market,
        Self::DeltasPage,
        Self::TradesPage,
        Self::OrderbookAt,
        Self::Candles,
        Self::FeedGaps,
        Self::Coverage,
        Self::LiveSubscription,
        Self::LiveMessages,
    ];

    /// The stable name stored in `credit_ledger.operation` and `usage.operation`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Markets => "markets",
            Self::Market => "market",
            Self::DeltasPage => "deltas",
            Self::TradesPage => "trades",
            Self::OrderbookAt => "orderbook",
            Self::Candles => "candles",
            Self::FeedGaps => "feed_gaps",
            Self::Coverage => "coverage",
            Self::LiveSubscription => "live_subscription",
            Self::LiveMessages => "live_messages",
        }
    }
}

/// What one `op` costs (the product plan's price list). The plan names markets (1), pages of
/// deltas or trades (2) and the book at an instant (5); the fields it does not name are priced
/// like their nearest kin so that none is free: feed gaps and coverage are market metadata (1),
/// a page of candles is a page (2).
#[must_use]
pub const fn cost(op: Operation) -> Credits {
    Credits::new(match op {
        Operation::Markets
        | Operation::Market
        | Operation::FeedGaps
        | Operation::Coverage
        | Operation::LiveMessages => 1,
        Operation::DeltasPage | Operation::TradesPage | Operation::Candles => 2,
        Operation::OrderbookAt | Operation::LiveSubscription => 5,
    })
}

/// The total cost of a query made of `ops` (one entry per priced field or page).
#[must_use]
pub fn price(ops: impl IntoIterator<Item = Operation>) -> Credits {
    ops.into_iter().map(cost).sum()
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An operation name that is not in the price list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown operation {0:?}")]
pub struct UnknownOperation(pub String);

impl FromStr for Operation {
    type Err = UnknownOperation;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|op| op.as_str() == s)
            .ok_or_else(|| UnknownOperation(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn price_list_matches_the_product_plan() {
        let list: Vec<(&str, u64)> = Operation::ALL
            .into_iter()
            .map(|op| (op.as_str(), cost(op).get()))
            .collect();
        assert_eq!(
            list,
            [
                ("markets", 1),
                ("market", 1),
                ("deltas", 2),
                ("trades", 2),
                ("orderbook", 5),
                ("candles", 2),
                ("feed_gaps", 1),
                ("coverage", 1),
                ("live_subscription", 5),
                ("live_messages", 1),
            ]
        );
    }

    #[test]
    fn a_query_costs_the_sum_of_its_operations() {
        let ops = [
            Operation::OrderbookAt,
            Operation::DeltasPage,
            Operation::DeltasPage,
        ];
        assert_eq!(price(ops), Credits::new(9));
        assert_eq!(price([]), Credits::ZERO);
    }

    #[test]
    fn names_round_trip() {
        for op in Operation::ALL {
            assert_eq!(op.as_str().parse::<Operation>(), Ok(op));
        }
    }
}
