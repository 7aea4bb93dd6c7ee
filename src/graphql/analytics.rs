//! Analytics of one book at one instant, pure integer arithmetic: depth near the top,
//! imbalance, and what it costs to buy (or yields to sell) a size by walking the book.
//!
//! Kalshi books hold bids only. Buying YES takes the NO bids (a NO bid at p is a YES ask at
//! 1 − p), best (highest) NO bid first; selling YES hits the YES bids, best first. NO is the
//! mirror image.

use crate::market::{Book, Price, Side, Size};

/// Money in $0.000001: a price ($0.0001) times a size (0.01 contracts) is exact in it.
pub const MICRO_DOLLARS_SCALE: u32 = 6;

/// Resting size near the top of each ladder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Depth {
    pub yes: Size,
    pub no: Size,
    pub yes_levels: u32,
    pub no_levels: u32,
}

impl Depth {
    /// (YES − NO) / (YES + NO) in units of 0.0001, rounded half away from zero; `None` when
    /// both are empty. +1 means only YES bids (buyers of YES), −1 only NO bids (sellers).
    #[must_use]
    pub fn imbalance_bp(&self) -> Option<i128> {
        let (yes, no) = (i128::from(self.yes.units()), i128::from(self.no.units()));
        (yes + no > 0).then(|| div_round(10_000 * (yes - no), yes + no))
    }
}

/// Sizes of each side's bids priced within `within` of that side's best bid (inclusive).
#[must_use]
pub fn depth_within(book: &Book, within: Price) -> Depth {
    let side_depth = |side: Side| -> (Size, u32) {
        let ladder = book.ladder(side);
        let Some((best, _)) = ladder.last_key_value() else {
            return (Size::ZERO, 0);
        };
        let floor = Price::from_units(best.units().saturating_sub(within.units()));
        ladder
            .range(floor..)
            .fold((Size::ZERO, 0), |(total, n), (_, size)| {
                (Size::from_units(total.units() + size.units()), n + 1)
            })
    };
    let (yes, yes_levels) = side_depth(Side::Yes);
    let (no, no_levels) = side_depth(Side::No);
    Depth {
        yes,
        no,
        yes_levels,
        no_levels,
    }
}

/// Whether a fill buys or sells contracts of its side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Buy,
    Sell,
}

/// The result of walking the book for a size: as much as the book holds, up to the size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fill {
    pub side: Side,
    pub action: Action,
    pub requested: Size,
    pub filled: Size,
    /// Total paid (buy) or received (sell), $0.000001.
    pub amount_micro: i128,
    /// Price of the first contract, the best available.
    pub best: Option<Price>,
    /// Price of the last contract filled.
    pub worst: Option<Price>,
    /// Price levels consumed (the last possibly in part).
    pub levels: u32,
}

impl Fill {
    /// Volume-weighted average price, $0.000001 per contract, rounded half away from zero.
    #[must_use]
    pub fn average_micro(&self) -> Option<i128> {
        let filled = i128::from(self.filled.units());
        (filled > 0).then(|| div_round(self.amount_micro * 100, filled))
    }

    /// How much worse than the best price the average is, $0.000001 per contract (≥ 0).
    #[must_use]
    pub fn slippage_micro(&self) -> Option<i128> {
        let best = i128::from(self.best?.units()) * 100;
        let average = self.average_micro()?;
        Some(match self.action {
            Action::Buy => average - best,
            Action::Sell => best - average,
        })
    }
}

/// Walks the book to buy or sell `size` contracts of `side`.
#[must_use]
pub fn fill(book: &Book, side: Side, action: Action, size: Size) -> Fill {
    // Buying a side takes the other side's bids, each at 1 − its price; selling hits the
    // side's own bids. Both walk from the best (highest) bid down.
    let (ladder_side, price_of): (Side, fn(Price) -> Price) = match action {
        Action::Buy => (other(side), Price::complement),
        Action::Sell => (side, |p| p),
    };
    let mut result = Fill {
        side,
        action,
        requested: size,
        filled: Size::ZERO,
        amount_micro: 0,
        best: None,
        worst: None,
        levels: 0,
    };
    let mut left = size.units().max(0);
    for (bid, resting) in book.ladder(ladder_side).iter().rev() {
        if left == 0 {
            break;
        }
        let take = left.min(resting.units());
        let price = price_of(*bid);
        result.amount_micro += i128::from(price.units()) * i128::from(take);
        result.filled = Size::from_units(result.filled.units() + take);
        result.best.get_or_insert(price);
        result.worst = Some(price);
        result.levels += 1;
        left -= take;
    }
    result
}

const fn other(side: Side) -> Side {
    match side {
        Side::Yes => Side::No,
        Side::No => Side::Yes,
    }
}

/// `n / d` rounded half away from zero (`d > 0`).
#[must_use]
pub fn div_round(n: i128, d: i128) -> i128 {
    let q = n / d;
    let r = n % d;
    if 2 * r.abs() >= d { q + n.signum() } else { q }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(units: u32) -> Price {
        Price::from_units(units)
    }
    fn s(units: i64) -> Size {
        Size::from_units(units)
    }

    fn book() -> Book {
        Book::from_levels([
            (Side::Yes, p(5500), s(1000)),
            (Side::Yes, p(5400), s(500)),
            (Side::Yes, p(5000), s(200)),
            (Side::No, p(4300), s(300)),
            (Side::No, p(4200), s(1000)),
        ])
    }

    #[test]
    fn depth_counts_levels_within_reach_of_the_best() {
        let depth = depth_within(&book(), p(100));
        assert_eq!((depth.yes, depth.yes_levels), (s(1500), 2));
        assert_eq!((depth.no, depth.no_levels), (s(1300), 2));
        assert_eq!(depth.imbalance_bp(), Some(div_round(10_000 * 200, 2800)));
        let top = depth_within(&book(), p(0));
        assert_eq!((top.yes, top.no), (s(1000), s(300)));
        assert_eq!(depth_within(&Book::default(), p(100)).imbalance_bp(), None);
    }

    #[test]
    fn buying_yes_walks_the_no_bids_as_asks() {
        // 3 contracts at 0.57 (1 − 0.43) then 2 at 0.58.
        let fill = fill(&book(), Side::Yes, Action::Buy, s(500));
        assert_eq!(fill.filled, s(500));
        assert_eq!(fill.amount_micro, 5700 * 300 + 5800 * 200);
        assert_eq!(fill.best, Some(p(5700)));
        assert_eq!(fill.worst, Some(p(5800)));
        assert_eq!(fill.levels, 2);
        // (1.71 + 1.16) / 5 = 0.574 $/contract
        assert_eq!(fill.average_micro(), Some(574_000));
        assert_eq!(fill.slippage_micro(), Some(4_000));
    }

    #[test]
    fn selling_yes_hits_the_yes_bids_and_stops_when_the_book_runs_out() {
        let fill = fill(&book(), Side::Yes, Action::Sell, s(100_000));
        assert_eq!(fill.filled, s(1700));
        assert_eq!(fill.amount_micro, 5500 * 1000 + 5400 * 500 + 5000 * 200);
        assert_eq!(fill.worst, Some(p(5000)));
        assert_eq!(fill.levels, 3);
        assert!(fill.slippage_micro().unwrap() > 0);
        let none = super::fill(&Book::default(), Side::No, Action::Buy, s(100));
        assert_eq!((none.filled, none.average_micro()), (s(0), None));
    }

    #[test]
    fn rounding_is_half_away_from_zero() {
        assert_eq!(div_round(5, 2), 3);
        assert_eq!(div_round(-5, 2), -3);
        assert_eq!(div_round(4, 3), 1);
        assert_eq!(div_round(-4, 3), -1);
    }
}
