//! Book dynamics of one simulated market, pure and seeded: resting limit orders added near
//! the top, partial and full cancels, takers walking one or more levels, re-quotes. Every
//! step is applied to the market's [`Book`] and returned as the [`Action`]s the exchange
//! publishes, so the published stream and the book can never disagree.

use rand::Rng;

use super::ticks::PriceLevelStructure;
use crate::market::{Book, Price, Side, Size};

/// A side keeps at least this many levels; below it the step refills.
const MIN_LEVELS: usize = 3;
/// A side keeps at most this many levels; above it the deepest level is cancelled.
const MAX_LEVELS: usize = 40;

/// One thing that happened in a market, in the order it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// The resting size at (side, price) changed by `delta` (signed, never leaves a level < 0).
    Delta {
        side: Side,
        price: Price,
        delta: Size,
    },
    /// A trade at `yes_price` for `count` contracts.
    Trade(Fill),
}

/// One trade print.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fill {
    /// The YES price; the NO price is its complement.
    pub yes_price: Price,
    pub count: Size,
    /// The outcome the taker bought: YES takers lift NO bids, NO takers hit YES bids.
    pub taker: Side,
    /// Matched off book: no resting size changed.
    pub block: bool,
}

/// The parameters that make a market behave like itself.
#[derive(Clone, Debug)]
pub struct MarketDynamics {
    /// Where the market thinks YES is worth, in $0.0001; the quotes lean on it.
    pub fair: u32,
    pub structure: PriceLevelStructure,
    /// Sizes carry hundredths of a contract (`fractional_trading_enabled`).
    pub fractional: bool,
}

impl MarketDynamics {
    /// A new market with a random fair value on `structure`'s grid.
    pub fn new(rng: &mut impl Rng, structure: PriceLevelStructure, fractional: bool) -> Self {
        let fair = structure.floor(rng.random_range(1_200..=8_800));
        Self {
            fair,
            structure,
            fractional,
        }
    }

    /// The granularity of sizes in 0.01-contract units.
    const fn lot(&self) -> i64 {
        if self.fractional { 1 } else { 100 }
    }

    /// The price a side's best bid leans to when the side is empty.
    fn anchor(&self, side: Side) -> u32 {
        let reference = match side {
            Side::Yes => self.fair,
            Side::No => Price::SCALE - self.fair,
        };
        self.structure
            .next_down(reference)
            .unwrap_or_else(|| self.structure.min_price())
    }

    /// The highest price a bid on `side` may rest at without crossing the other side.
    fn cap(&self, book: &Book, side: Side) -> Option<u32> {
        let other = match side {
            Side::Yes => Side::No,
            Side::No => Side::Yes,
        };
        match book.best_bid(other) {
            Some((price, _)) => self
                .structure
                .next_down(Price::SCALE - price.units())
                .filter(|cap| *cap >= self.structure.min_price()),
            None => Some(self.structure.max_price()),
        }
    }

    /// A resting size: mostly round lots, sometimes with hundredths on fractional markets.
    fn random_size(&self, rng: &mut impl Rng) -> Size {
        const LOTS: [i64; 16] = [
            1, 1, 2, 5, 10, 10, 20, 25, 50, 100, 100, 150, 250, 500, 1000, 2500,
        ];
        let contracts = LOTS[rng.random_range(0..LOTS.len())];
        let mut units = contracts * 100;
        if self.fractional && rng.random_bool(0.35) {
            units += rng.random_range(1..100);
        }
        Size::from_units(units)
    }

    /// The initial book of a market: 6–18 levels a side below the fair value, thicker deeper
    /// down, sometimes with a large resting order at the minimum price (as on real books).
    pub fn initial_levels(&self, rng: &mut impl Rng) -> Vec<(Side, Price, Size)> {
        let mut levels = Vec::new();
        for side in [Side::Yes, Side::No] {
            let mut price = Some(self.anchor(side));
            for _ in 0..rng.random_range(0..3) {
                price = price.and_then(|p| self.structure.next_down(p));
            }
            let count = rng.random_range(6..=18);
            for depth in 0..count {
                let Some(units) = price else { break };
                let size = self.random_size(rng).units() * (1 + depth / 4);
                levels.push((side, Price::from_units(units), Size::from_units(size)));
                price = self.structure.next_down(units);
                if rng.random_bool(0.3) {
                    price = price.and_then(|p| self.structure.next_down(p));
                }
            }
            let min = self.structure.min_price();
            if rng.random_bool(0.5)
                && !levels
                    .iter()
                    .any(|(s, p, _)| *s == side && p.units() == min)
            {
                let size = rng.random_range(10_000..1_000_000) * 100;
                levels.push((side, Price::from_units(min), Size::from_units(size)));
            }
        }
        levels
    }

    /// Advances the market by one event, applies it to `book` and returns what happened.
    pub fn step(&mut self, rng: &mut impl Rng, book: &mut Book) -> Vec<Action> {
        self.drift(rng);
        let mut actions = Vec::new();
        let thin = [Side::Yes, Side::No]
            .into_iter()
            .find(|side| book.ladder(*side).len() < MIN_LEVELS);
        match thin {
            Some(side) => self.add(rng, book, side, &mut actions),
            None => {
                let side = if rng.random_bool(0.5) {
                    Side::Yes
                } else {
                    Side::No
                };
                match rng.random_range(0..100) {
                    0..45 => self.add(rng, book, side, &mut actions),
                    45..78 => self.cancel(rng, book, side, &mut actions),
                    78..94 => self.trade(rng, book, &mut actions),
                    _ => self.requote(rng, book, side, &mut actions),
                }
            }
        }
        for side in [Side::Yes, Side::No] {
            if book.ladder(side).len() > MAX_LEVELS
                && let Some((&price, &size)) = book.ladder(side).first_key_value()
            {
                apply(
                    book,
                    &mut actions,
                    side,
                    price,
                    Size::from_units(-size.units()),
                );
            }
        }
        actions
    }

    /// Moves the fair value by a tick now and then.
    fn drift(&mut self, rng: &mut impl Rng) {
        if !rng.random_ratio(1, 6) {
            return;
        }
        let moved = if rng.random_bool(0.5) {
            self.structure.next_up(self.fair)
        } else {
            self.structure.next_down(self.fair)
        };
        if let Some(fair) = moved.filter(|f| (300..=9_700).contains(f)) {
            self.fair = fair;
        }
    }

    /// A new resting order near the top of `side`.
    fn add(&self, rng: &mut impl Rng, book: &mut Book, side: Side, actions: &mut Vec<Action>) {
        let Some(cap) = self.cap(book, side) else {
            return;
        };
        let anchor = book
            .best_bid(side)
            .map_or_else(|| self.anchor(side), |(price, _)| price.units());
        let mut price = if rng.random_bool(0.18) {
            self.structure.next_up(anchor).unwrap_or(anchor)
        } else {
            let mut price = anchor;
            let mut depth = 0;
            while depth < 10 && rng.random_bool(0.55) {
                match self.structure.next_down(price) {
                    Some(lower) => price = lower,
                    None => break,
                }
                depth += 1;
            }
            price
        };
        if price > cap {
            price = cap;
        }
        let size = self.random_size(rng);
        apply(book, actions, side, Price::from_units(price), size);
    }

    /// A cancel near the top of `side`: the whole level or part of it.
    fn cancel(&self, rng: &mut impl Rng, book: &mut Book, side: Side, actions: &mut Vec<Action>) {
        let ladder = book.ladder(side);
        if ladder.is_empty() {
            return self.add(rng, book, side, actions);
        }
        let mut depth = 0;
        while depth + 1 < ladder.len() && depth < 8 && rng.random_bool(0.5) {
            depth += 1;
        }
        let Some((&price, &size)) = ladder.iter().rev().nth(depth) else {
            return;
        };
        let lots = size.units() / self.lot();
        let cancelled = if lots <= 1 || rng.random_bool(0.45) {
            size.units()
        } else {
            rng.random_range(1..lots) * self.lot()
        };
        apply(book, actions, side, price, Size::from_units(-cancelled));
    }

    /// A taker that walks one to three levels of the opposite ladder, or rarely a block
    /// trade that leaves the book alone.
    fn trade(&mut self, rng: &mut impl Rng, book: &mut Book, actions: &mut Vec<Action>) {
        let taker = if rng.random_bool(0.5) {
            Side::Yes
        } else {
            Side::No
        };
        if rng.random_ratio(1, 50) {
            let yes_price = Price::from_units(self.fair);
            let count = self.random_size(rng);
            actions.push(Action::Trade(Fill {
                yes_price,
                count,
                taker,
                block: true,
            }));
            return;
        }
        // A YES taker lifts the NO bids (YES asks), a NO taker hits the YES bids.
        let resting = match taker {
            Side::Yes => Side::No,
            Side::No => Side::Yes,
        };
        let walk = match rng.random_range(0..100) {
            0..75 => 1,
            75..93 => 2,
            _ => 3,
        };
        let levels: Vec<(Price, Size)> = book
            .ladder(resting)
            .iter()
            .rev()
            .take(walk)
            .map(|(p, s)| (*p, *s))
            .collect();
        let last = levels.len().saturating_sub(1);
        for (index, (price, size)) in levels.into_iter().enumerate() {
            let lots = size.units() / self.lot();
            let taken = if index < last || lots <= 1 || rng.random_bool(0.4) {
                size.units()
            } else {
                rng.random_range(1..lots) * self.lot()
            };
            let yes_price = match resting {
                Side::No => price.complement(),
                Side::Yes => price,
            };
            apply(book, actions, resting, price, Size::from_units(-taken));
            actions.push(Action::Trade(Fill {
                yes_price,
                count: Size::from_units(taken),
                taker,
                block: false,
            }));
            // Trades pull the fair value half-way to where they printed.
            let pulled = (self.fair + yes_price.units()) / 2;
            self.fair = self.structure.floor(pulled.clamp(300, 9_700));
        }
    }

    /// A market maker moves its best quote one tick: cancel the level, re-add nearby.
    fn requote(&self, rng: &mut impl Rng, book: &mut Book, side: Side, actions: &mut Vec<Action>) {
        let Some((price, size)) = book.best_bid(side) else {
            return self.add(rng, book, side, actions);
        };
        apply(book, actions, side, price, Size::from_units(-size.units()));
        let Some(cap) = self.cap(book, side) else {
            return;
        };
        let moved = if rng.random_bool(0.5) {
            self.structure.next_up(price.units())
        } else {
            self.structure.next_down(price.units())
        };
        if let Some(units) = moved.filter(|units| *units <= cap) {
            let size = self.random_size(rng);
            apply(book, actions, side, Price::from_units(units), size);
        }
    }
}

/// Applies one change to the book and records it.
fn apply(book: &mut Book, actions: &mut Vec<Action>, side: Side, price: Price, delta: Size) {
    if delta == Size::ZERO {
        return;
    }
    // The dynamics only ever take what rests, so this cannot fail; if it ever did, the
    // change is left out of both the book and the stream, which keeps them equal.
    if book.apply_delta(side, price, delta).is_ok() {
        actions.push(Action::Delta { side, price, delta });
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn run(
        seed: u64,
        structure: PriceLevelStructure,
        fractional: bool,
        steps: usize,
    ) -> (Book, Vec<Action>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut market = MarketDynamics::new(&mut rng, structure, fractional);
        let mut book = Book::from_levels(market.initial_levels(&mut rng));
        let mut all = Vec::new();
        for _ in 0..steps {
            let before = book.clone();
            let actions = market.step(&mut rng, &mut book);
            // Replaying the published deltas on the previous book gives the new book.
            let mut replayed = before;
            for action in &actions {
                if let Action::Delta { side, price, delta } = action {
                    replayed
                        .apply_delta(*side, *price, *delta)
                        .expect("delta applies");
                }
            }
            assert_eq!(replayed, book);
            if let (Some((yes, _)), Some((no, _))) =
                (book.best_bid(Side::Yes), book.best_bid(Side::No))
            {
                assert!(
                    yes.units() + no.units() < Price::SCALE,
                    "crossed: {yes} + {no}"
                );
            }
            for (_, price, size) in book.levels() {
                assert!(structure.is_valid(price.units()), "{price} off grid");
                assert!(size.units() > 0);
                if !fractional {
                    assert_eq!(size.units() % 100, 0, "fractional size on a whole market");
                }
            }
            all.extend(actions);
        }
        (book, all)
    }

    #[test]
    fn books_stay_consistent_uncrossed_and_on_grid() {
        for (seed, structure, fractional) in [
            (1, PriceLevelStructure::LinearCent, false),
            (2, PriceLevelStructure::LinearCent, true),
            (3, PriceLevelStructure::TaperedDeciCent, true),
            (4, PriceLevelStructure::DeciCent, true),
        ] {
            let (_, actions) = run(seed, structure, fractional, 5_000);
            let trades = actions
                .iter()
                .filter(|a| matches!(a, Action::Trade(_)))
                .count();
            let cancels = actions
                .iter()
                .filter(|a| matches!(a, Action::Delta { delta, .. } if delta.units() < 0))
                .count();
            assert!(
                trades > 100 && cancels > 500,
                "{trades} trades, {cancels} cancels"
            );
        }
    }

    #[test]
    fn same_seed_same_market() {
        let a = run(7, PriceLevelStructure::TaperedDeciCent, true, 2_000);
        let b = run(7, PriceLevelStructure::TaperedDeciCent, true, 2_000);
        assert_eq!(a, b);
        let c = run(8, PriceLevelStructure::TaperedDeciCent, true, 2_000);
        assert_ne!(a.0, c.0);
    }

    #[test]
    fn fractional_markets_show_hundredths_and_trades_walk_levels() {
        let (_, actions) = run(11, PriceLevelStructure::DeciCent, true, 5_000);
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::Delta { delta, .. } if delta.units() % 100 != 0))
        );
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::Delta { price, .. } if price.units() % 100 != 0))
        );
        // Two fills in a row from one taker walk two levels.
        assert!(actions.windows(4).any(|w| matches!(
            w,
            [Action::Delta { price: p1, .. }, Action::Trade(f1), Action::Delta { price: p2, .. }, Action::Trade(f2)]
                if p1 != p2 && f1.taker == f2.taker && !f1.block
        )));
    }
}
