//! Fixed-point prices and sizes, parsed straight from Kalshi's decimal strings into integers.
//! No floats: a price is a whole number of $0.0001, a size a whole number of 0.01 contracts.

use std::fmt;
use std::str::FromStr;

/// A price in units of $0.0001 (`10_000` = $1.00). Kalshi quotes up to 4 decimals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Price(u32);

/// A number of contracts in units of 0.01 (Kalshi sizes carry 2 decimals). Signed, because
/// a delta is a signed change of resting size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Size(i64);

/// Which bid ladder: Kalshi quotes YES bids and NO bids only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Side {
    Yes,
    No,
}

/// A decimal string that is not a valid price or size.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {input:?}: {reason}")]
pub struct ParseDecimalError {
    what: &'static str,
    input: String,
    reason: &'static str,
}

impl Price {
    /// Units per dollar.
    pub const SCALE: u32 = 10_000;
    /// $1.00, the payout of a winning contract.
    pub const ONE_DOLLAR: Price = Price(Self::SCALE);

    #[must_use]
    pub const fn from_units(units: u32) -> Self {
        Self(units)
    }

    /// The price in $0.0001 units.
    #[must_use]
    pub const fn units(self) -> u32 {
        self.0
    }

    /// The complementary price `$1 − self` (a YES bid at p is a NO ask at 1 − p).
    #[must_use]
    pub const fn complement(self) -> Self {
        Self(Self::SCALE.saturating_sub(self.0))
    }
}

impl Size {
    /// Units per contract.
    pub const SCALE: i64 = 100;
    pub const ZERO: Size = Size(0);

    #[must_use]
    pub const fn from_units(units: i64) -> Self {
        Self(units)
    }

    /// The size in 0.01-contract units.
    #[must_use]
    pub const fn units(self) -> i64 {
        self.0
    }

    #[must_use]
    pub const fn checked_add(self, other: Size) -> Option<Size> {
        match self.0.checked_add(other.0) {
            Some(sum) => Some(Size(sum)),
            None => None,
        }
    }
}

/// Parses an optionally signed decimal with at most `scale_digits` fraction digits into an
/// integer count of `10^-scale_digits` units. Extra fraction digits must be zeros.
fn parse_fixed(
    what: &'static str,
    input: &str,
    scale_digits: u32,
) -> Result<i128, ParseDecimalError> {
    let error = |reason| ParseDecimalError {
        what,
        input: input.to_owned(),
        reason,
    };
    let (negative, digits) = match input.as_bytes().first() {
        Some(b'-') => (true, &input[1..]),
        Some(b'+') => (false, &input[1..]),
        _ => (false, input),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && fraction.is_empty() {
        return Err(error("no digits"));
    }
    if !whole
        .bytes()
        .chain(fraction.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return Err(error("not a decimal number"));
    }
    if whole.len() > 18 {
        return Err(error("too large"));
    }
    let (kept, dropped) = fraction.split_at(fraction.len().min(scale_digits as usize));
    if dropped.bytes().any(|b| b != b'0') {
        return Err(error("more decimal places than supported"));
    }
    let mut value: i128 = 0;
    for b in whole.bytes().chain(kept.bytes()) {
        value = value * 10 + i128::from(b - b'0');
    }
    value *= 10i128.pow(scale_digits - kept.len() as u32);
    Ok(if negative { -value } else { value })
}

impl FromStr for Price {
    type Err = ParseDecimalError;

    /// Parses a dollar string such as `"0.5600"` or `"0.001"`; must lie in [$0, $1].
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let units = parse_fixed("price", input, 4)?;
        match u32::try_from(units) {
            Ok(units) if units <= Self::SCALE => Ok(Self(units)),
            _ => Err(ParseDecimalError {
                what: "price",
                input: input.to_owned(),
                reason: "outside $0.0000..=$1.0000",
            }),
        }
    }
}

impl FromStr for Size {
    type Err = ParseDecimalError;

    /// Parses a contract count such as `"10.00"`, `"-2.50"` or `"3"`.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let units = parse_fixed("size", input, 2)?;
        i64::try_from(units)
            .map(Self)
            .map_err(|_| ParseDecimalError {
                what: "size",
                input: input.to_owned(),
                reason: "too large",
            })
    }
}

impl fmt::Display for Price {
    /// Kalshi's form: dollars with 4 decimals, e.g. `0.5600`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:04}", self.0 / Self::SCALE, self.0 % Self::SCALE)
    }
}

impl fmt::Display for Size {
    /// Kalshi's form: contracts with 2 decimals, e.g. `10.00`, `-2.50`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

impl Side {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Yes => "yes",
            Self::No => "no",
        }
    }
}

impl FromStr for Side {
    type Err = ParseDecimalError;
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        match input {
            "yes" => Ok(Self::Yes),
            "no" => Ok(Self::No),
            _ => Err(ParseDecimalError {
                what: "side",
                input: input.to_owned(),
                reason: "expected \"yes\" or \"no\"",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_parse_to_exact_units() {
        for (input, units) in [
            ("0.5600", 5600),
            ("0.56", 5600),
            ("0.001", 10),
            ("0.0001", 1),
            ("1.0000", 10_000),
            ("0", 0),
            (".5", 5000),
            ("0.123400", 1234),
        ] {
            assert_eq!(input.parse::<Price>().unwrap().units(), units, "{input}");
        }
    }

    #[test]
    fn bad_prices_are_rejected() {
        for input in [
            "", ".", "abc", "1.0001", "2", "-0.10", "0.00001", "0.5.6", "1e-2",
        ] {
            assert!(input.parse::<Price>().is_err(), "{input}");
        }
    }

    #[test]
    fn sizes_parse_signed_fractions() {
        for (input, units) in [
            ("10.00", 1000),
            ("-2.50", -250),
            ("3", 300),
            ("812.37", 81237),
        ] {
            assert_eq!(input.parse::<Size>().unwrap().units(), units, "{input}");
        }
        assert!("0.001".parse::<Size>().is_err());
        assert!("99999999999999999999".parse::<Size>().is_err());
    }

    #[test]
    fn display_round_trips_kalshi_form() {
        assert_eq!(Price::from_units(5600).to_string(), "0.5600");
        assert_eq!(Price::from_units(10).to_string(), "0.0010");
        assert_eq!(Price::ONE_DOLLAR.to_string(), "1.0000");
        assert_eq!(Size::from_units(-250).to_string(), "-2.50");
        assert_eq!(Size::from_units(5).to_string(), "0.05");
        assert_eq!(
            Price::from_units(4300).complement(),
            Price::from_units(5700)
        );
    }
}
