//! Credits: the unit every priced operation is paid in. Whole credits, never fractions, so
//! balances add up exactly.

use std::fmt;
use std::iter::Sum;
use std::ops::Add;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::BillingCycle;

/// A whole number of credits. Never negative: a balance that could go below zero is a
/// [`Credits`] pair (used, total), not a signed amount.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Credits(u64);

impl Credits {
    pub const ZERO: Self = Self(0);

    /// The largest amount the database can hold (Postgres `bigint`).
    pub const MAX: Self = Self(i64::MAX as u64);

    #[must_use]
    pub const fn new(credits: u64) -> Self {
        Self(credits)
    }

    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }

    /// `self − other`, or zero when `other` is larger (what is left of an allowance).
    #[must_use]
    pub const fn saturating_sub(self, other: Self) -> Self {
        Self(self.0.saturating_sub(other.0))
    }

    /// `self + other`, capped at [`Credits::MAX`].
    #[must_use]
    pub const fn saturating_add(self, other: Self) -> Self {
        let sum = self.0.saturating_add(other.0);
        if sum > Self::MAX.0 {
            Self::MAX
        } else {
            Self(sum)
        }
    }

    /// `self × n`, capped at [`Credits::MAX`] (a page count times a page price).
    #[must_use]
    pub const fn saturating_mul(self, n: u64) -> Self {
        let product = self.0.saturating_mul(n);
        if product > Self::MAX.0 {
            Self::MAX
        } else {
            Self(product)
        }
    }

    /// The amount as Postgres stores it (`bigint`); amounts above [`Credits::MAX`] saturate.
    #[must_use]
    pub fn to_i64(self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }

    /// An amount read from Postgres; the schema's CHECKs keep stored balances non-negative,
    /// and a negative value (a refund row) reads as its magnitude's absence: zero.
    #[must_use]
    pub fn from_i64(value: i64) -> Self {
        Self(u64::try_from(value).unwrap_or(0))
    }
}

impl Add for Credits {
    type Output = Self;
    /// Saturating, like [`Credits::saturating_add`]: no price list comes near the cap.
    fn add(self, other: Self) -> Self {
        self.saturating_add(other)
    }
}

impl Sum for Credits {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::ZERO, Add::add)
    }
}

impl fmt::Display for Credits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u32> for Credits {
    fn from(credits: u32) -> Self {
        Self(u64::from(credits))
    }
}

/// An account's spending position in its current cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Balance {
    /// Spent this cycle (may exceed `total` on PAYG, where the excess is billed as overage).
    pub used: Credits,
    /// The cycle's allowance: the tier's included credits plus this cycle's grants.
    pub total: Credits,
    /// The current cycle; `cycle.end` is when `used` returns to zero.
    pub cycle: BillingCycle,
}

impl Balance {
    /// What may still be spent before the allowance runs out (`X-Credits-Remaining`).
    #[must_use]
    pub const fn remaining(&self) -> Credits {
        self.total.saturating_sub(self.used)
    }
}

/// A successful charge: the cost and the balance just after it (for the `X-Credits-*`
/// headers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChargeOutcome {
    pub cost: Credits,
    pub balance: Balance,
    /// Of `cost`, the credits past the allowance that will be billed as PAYG overage.
    pub overage: Credits,
}

/// A charge refused because the cycle's allowance cannot cover it (the client sees
/// `CREDITS_EXHAUSTED`). Nothing was spent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "credits exhausted: this request costs {cost} credits and {remaining} of {total} remain \
     in this billing cycle; the allowance resets at {reset_at}",
    remaining = .balance.remaining(),
    total = .balance.total,
    reset_at = rfc3339(.balance.cycle.end)
)]
pub struct CreditsExhausted {
    pub cost: Credits,
    pub balance: Balance,
}

impl CreditsExhausted {
    /// When the allowance returns (the end of the current cycle).
    #[must_use]
    pub const fn reset_at(&self) -> OffsetDateTime {
        self.balance.cycle.end
    }
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_else(|_| at.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_wrapping() {
        assert_eq!(
            Credits::new(3).saturating_sub(Credits::new(5)),
            Credits::ZERO
        );
        assert_eq!(Credits::MAX + Credits::new(1), Credits::MAX);
        assert_eq!(Credits::new(u64::MAX).to_i64(), i64::MAX);
        assert_eq!(Credits::new(2).saturating_mul(u64::MAX), Credits::MAX);
        assert_eq!(Credits::from_i64(-4), Credits::ZERO);
        let total: Credits = [1u32, 2, 5].into_iter().map(Credits::from).sum();
        assert_eq!(total, Credits::new(8));
    }

    #[test]
    fn exhaustion_says_what_it_costs_and_when_it_resets() {
        let cycle = BillingCycle::first(time::macros::datetime!(2026-01-31 10:00 UTC));
        let balance = Balance {
            used: Credits::new(998),
            total: Credits::new(1_000),
            cycle,
        };
        assert_eq!(balance.remaining(), Credits::new(2));
        let error = CreditsExhausted {
            cost: Credits::new(5),
            balance,
        };
        assert_eq!(
            error.to_string(),
            "credits exhausted: this request costs 5 credits and 2 of 1000 remain in this \
             billing cycle; the allowance resets at 2026-02-28T10:00:00Z"
        );
        let over = Balance {
            used: Credits::new(1_200),
            ..balance
        };
        assert_eq!(over.remaining(), Credits::ZERO);
    }
}
