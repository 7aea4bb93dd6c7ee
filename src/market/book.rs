//! An order book of one market: two bid ladders (YES and NO), price → resting size.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use super::price::{Price, Side, Size};

/// Both bid ladders of one market. Sizes are always positive; a level at zero is removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Book {
    yes: BTreeMap<Price, Size>,
    no: BTreeMap<Price, Size>,
}

/// A delta that would leave a level with a negative size: the book no longer matches the
/// exchange's, and must be re-snapshotted rather than guessed at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{side:?} level {price} would go from {resting} to {resting} + {delta} < 0")]
pub struct NegativeSize {
    pub side: Side,
    pub price: Price,
    pub resting: Size,
    pub delta: Size,
}

impl Book {
    /// Builds a book from (side, price, size) levels; zero sizes are skipped.
    pub fn from_levels(levels: impl IntoIterator<Item = (Side, Price, Size)>) -> Self {
        let mut book = Self::default();
        for (side, price, size) in levels {
            if size != Size::ZERO {
                book.ladder_mut(side).insert(price, size);
            }
        }
        book
    }

    fn ladder_mut(&mut self, side: Side) -> &mut BTreeMap<Price, Size> {
        match side {
            Side::Yes => &mut self.yes,
            Side::No => &mut self.no,
        }
    }

    /// No bids on either side (a closed market's book, as its final snapshot leaves it).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.yes.is_empty() && self.no.is_empty()
    }

    /// The bids of one side, ascending by price (best bid last, as Kalshi sends them).
    #[must_use]
    pub fn ladder(&self, side: Side) -> &BTreeMap<Price, Size> {
        match side {
            Side::Yes => &self.yes,
            Side::No => &self.no,
        }
    }

    /// Adds `delta` to the resting size at `price`.
    ///
    /// # Errors
    /// [`NegativeSize`] (and the book unchanged) if the level would go below zero.
    pub fn apply_delta(
        &mut self,
        side: Side,
        price: Price,
        delta: Size,
    ) -> Result<(), NegativeSize> {
        // One search of the ladder, whatever the outcome.
        let entry = self.ladder_mut(side).entry(price);
        let resting = match &entry {
            Entry::Occupied(level) => *level.get(),
            Entry::Vacant(_) => Size::ZERO,
        };
        let negative = NegativeSize {
            side,
            price,
            resting,
            delta,
        };
        let updated = resting.checked_add(delta).ok_or(negative)?;
        match (updated.units(), entry) {
            (0, Entry::Occupied(level)) => {
                level.remove();
            }
            (0, Entry::Vacant(_)) => {}
            (units, Entry::Occupied(mut level)) if units > 0 => {
                *level.get_mut() = updated;
            }
            (units, Entry::Vacant(level)) if units > 0 => {
                level.insert(updated);
            }
            _ => return Err(negative),
        }
        Ok(())
    }

    /// The best (highest) bid of a side, if any.
    #[must_use]
    pub fn best_bid(&self, side: Side) -> Option<(Price, Size)> {
        self.ladder(side).last_key_value().map(|(p, s)| (*p, *s))
    }

    /// All levels as (side, price, size), YES first, each ascending by price.
    pub fn levels(&self) -> impl Iterator<Item = (Side, Price, Size)> + '_ {
        let yes = self.yes.iter().map(|(p, s)| (Side::Yes, *p, *s));
        let no = self.no.iter().map(|(p, s)| (Side::No, *p, *s));
        yes.chain(no)
    }
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

    #[test]
    fn deltas_add_and_remove_levels() {
        let mut book = Book::from_levels([(Side::Yes, p(4300), s(10_000))]);
        book.apply_delta(Side::Yes, p(4400), s(250)).unwrap();
        assert_eq!(book.best_bid(Side::Yes), Some((p(4400), s(250))));
        book.apply_delta(Side::Yes, p(4400), s(-250)).unwrap();
        assert_eq!(book.best_bid(Side::Yes), Some((p(4300), s(10_000))));
        assert_eq!(book.best_bid(Side::No), None);
    }

    #[test]
    fn negative_result_is_an_error_and_leaves_the_book_alone() {
        let mut book = Book::from_levels([(Side::No, p(5500), s(100))]);
        let before = book.clone();
        let error = book.apply_delta(Side::No, p(5500), s(-101)).unwrap_err();
        assert_eq!(error.resting, s(100));
        assert_eq!(book, before);
        assert!(book.apply_delta(Side::Yes, p(100), s(-1)).is_err());
    }
}
