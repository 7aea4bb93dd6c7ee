//! Price level structures of simulated markets: Kalshi's `price_level_structure` names, their
//! `price_ranges`, and which bid prices lie on the grid. Prices are in $0.0001 units.

use crate::market::Price;

/// A market's tick grid. Kalshi names more structures; the simulator uses the three that
/// cover both whole-cent and sub-cent books.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PriceLevelStructure {
    /// $0.01 everywhere.
    LinearCent,
    /// $0.001 everywhere.
    DeciCent,
    /// $0.001 below $0.10 and above $0.90, $0.01 in between.
    TaperedDeciCent,
}

/// $0.01 in price units.
const CENT: u32 = 100;
/// $0.001 in price units.
const DECI_CENT: u32 = 10;
/// $1 in price units.
const DOLLAR: u32 = Price::SCALE;

impl PriceLevelStructure {
    /// Kalshi's name, as in `price_level_structure`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::LinearCent => "linear_cent",
            Self::DeciCent => "deci_cent",
            Self::TaperedDeciCent => "tapered_deci_cent",
        }
    }

    /// `price_ranges` as (start, end, step).
    #[must_use]
    pub fn ranges(self) -> Vec<(Price, Price, Price)> {
        let p = Price::from_units;
        match self {
            Self::LinearCent => vec![(p(0), p(DOLLAR), p(CENT))],
            Self::DeciCent => vec![(p(0), p(DOLLAR), p(DECI_CENT))],
            Self::TaperedDeciCent => vec![
                (p(0), p(1000), p(DECI_CENT)),
                (p(1000), p(9000), p(CENT)),
                (p(9000), p(DOLLAR), p(DECI_CENT)),
            ],
        }
    }

    /// Whether a bid may rest at `units`: on the grid and strictly between $0 and $1.
    #[must_use]
    pub const fn is_valid(self, units: u32) -> bool {
        if units == 0 || units >= DOLLAR {
            return false;
        }
        match self {
            Self::LinearCent => units.is_multiple_of(CENT),
            Self::DeciCent => units.is_multiple_of(DECI_CENT),
            Self::TaperedDeciCent => {
                units.is_multiple_of(DECI_CENT)
                    && (units <= 1000 || units >= 9000 || units.is_multiple_of(CENT))
            }
        }
    }

    /// The lowest valid bid.
    #[must_use]
    pub const fn min_price(self) -> u32 {
        match self {
            Self::LinearCent => CENT,
            Self::DeciCent | Self::TaperedDeciCent => DECI_CENT,
        }
    }

    /// The highest valid bid.
    #[must_use]
    pub const fn max_price(self) -> u32 {
        DOLLAR - self.min_price()
    }

    /// The next valid price above `units`, if any.
    #[must_use]
    pub fn next_up(self, units: u32) -> Option<u32> {
        let mut candidate = units - units % DECI_CENT + DECI_CENT;
        while candidate < DOLLAR {
            if self.is_valid(candidate) {
                return Some(candidate);
            }
            candidate += DECI_CENT;
        }
        None
    }

    /// The next valid price below `units`, if any.
    #[must_use]
    pub fn next_down(self, units: u32) -> Option<u32> {
        let mut candidate = units.div_ceil(DECI_CENT) * DECI_CENT;
        while candidate > DECI_CENT {
            candidate -= DECI_CENT;
            if self.is_valid(candidate) {
                return Some(candidate);
            }
        }
        None
    }

    /// The highest valid price ≤ `units`, or the lowest valid price if there is none.
    #[must_use]
    pub fn floor(self, units: u32) -> u32 {
        if self.is_valid(units) {
            return units;
        }
        self.next_down(units.min(DOLLAR))
            .unwrap_or_else(|| self.min_price())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_follow_kalshi_structures() {
        use PriceLevelStructure::*;
        assert!(LinearCent.is_valid(4300) && !LinearCent.is_valid(4310));
        assert!(DeciCent.is_valid(4310) && !DeciCent.is_valid(4315));
        assert!(TaperedDeciCent.is_valid(10) && TaperedDeciCent.is_valid(990));
        assert!(TaperedDeciCent.is_valid(1000) && !TaperedDeciCent.is_valid(1010));
        assert!(TaperedDeciCent.is_valid(9010) && TaperedDeciCent.is_valid(9990));
        assert!(!TaperedDeciCent.is_valid(0) && !TaperedDeciCent.is_valid(10_000));
        assert_eq!(TaperedDeciCent.next_up(990), Some(1000));
        assert_eq!(TaperedDeciCent.next_up(1000), Some(1100));
        assert_eq!(TaperedDeciCent.next_up(8900), Some(9000));
        assert_eq!(TaperedDeciCent.next_up(9000), Some(9010));
        assert_eq!(TaperedDeciCent.next_down(1100), Some(1000));
        assert_eq!(TaperedDeciCent.next_down(1000), Some(990));
        assert_eq!(TaperedDeciCent.next_down(10), None);
        assert_eq!(LinearCent.next_up(9900), None);
        assert_eq!(LinearCent.floor(4399), 4300);
        assert_eq!(TaperedDeciCent.floor(5555), 5500);
        assert_eq!(TaperedDeciCent.floor(555), 550);
    }

    #[test]
    fn grids_are_symmetric_so_no_bids_mirror_yes_asks() {
        for structure in [
            PriceLevelStructure::LinearCent,
            PriceLevelStructure::DeciCent,
            PriceLevelStructure::TaperedDeciCent,
        ] {
            for units in 0..=DOLLAR {
                assert_eq!(
                    structure.is_valid(units),
                    structure.is_valid(DOLLAR - units),
                    "{structure:?} {units}"
                );
            }
        }
    }
}
