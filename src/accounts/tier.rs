//! Plans: what each tier includes and how fast it may call, as data.

use std::fmt;
use std::str::FromStr;

use super::Credits;

/// The plan a billing account is on. Stored as `billing_accounts.tier` ([`Tier::as_str`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tier {
    /// No card: the monthly allowance, then `CREDITS_EXHAUSTED` until the cycle resets.
    Free,
    /// Pay as you go: the same allowance, then overage billed per credit through Stripe.
    Payg,
    /// A monthly subscription with a larger allowance.
    Project,
}

/// What a tier includes. Money is in integer units (no floats): cents for prices, micro-dollars
/// (10⁻⁶ USD) for the per-credit overage price.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TierLimits {
    /// Credits included in every billing cycle.
    pub included_credits: Credits,
    /// Requests a key's account may make per minute (the `X-RateLimit-Limit`).
    pub requests_per_minute: u32,
    /// The subscription price per month, in US cents (0: no subscription).
    pub monthly_price_cents: u64,
    /// The price of each credit past the allowance, in micro-dollars; `None`: no overage,
    /// spending stops at the allowance.
    pub overage_micro_usd_per_credit: Option<u64>,
}

impl Tier {
    pub const ALL: [Self; 3] = [Self::Free, Self::Payg, Self::Project];

    /// The tier's allowance, rate limit and prices (the product plan).
    #[must_use]
    pub const fn limits(self) -> TierLimits {
        match self {
            Self::Free => TierLimits {
                included_credits: Credits::new(1_000),
                requests_per_minute: 30,
                monthly_price_cents: 0,
                overage_micro_usd_per_credit: None,
            },
            Self::Payg => TierLimits {
                included_credits: Credits::new(1_000),
                requests_per_minute: 60,
                monthly_price_cents: 0,
                // $0.008 per credit.
                overage_micro_usd_per_credit: Some(8_000),
            },
            Self::Project => TierLimits {
                included_credits: Credits::new(4_000),
                requests_per_minute: 120,
                monthly_price_cents: 3_000,
                overage_micro_usd_per_credit: None,
            },
        }
    }

    /// Live subscriptions an account of this tier may hold open at once, over all its keys
    /// and connections (a subscription is long-lived; this bounds what one account can take
    /// of a server's fan-out).
    #[must_use]
    pub const fn live_subscriptions(self) -> usize {
        match self {
            Self::Free => 5,
            Self::Payg => 25,
            Self::Project => 100,
        }
    }

    /// The name stored in Postgres and shown to clients.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Payg => "payg",
            Self::Project => "project",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tier name that is not one of [`Tier::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown tier {0:?}: expected free, payg or project")]
pub struct UnknownTier(pub String);

impl FromStr for Tier {
    type Err = UnknownTier;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|tier| tier.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownTier(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_match_the_product_plan() {
        let free = Tier::Free.limits();
        assert_eq!(
            (free.included_credits.get(), free.requests_per_minute),
            (1_000, 30)
        );
        assert_eq!(free.overage_micro_usd_per_credit, None);
        let payg = Tier::Payg.limits();
        assert_eq!(
            (payg.included_credits.get(), payg.requests_per_minute),
            (1_000, 60)
        );
        assert_eq!(payg.overage_micro_usd_per_credit, Some(8_000));
        let project = Tier::Project.limits();
        assert_eq!(
            (project.included_credits.get(), project.requests_per_minute),
            (4_000, 120)
        );
        assert_eq!(project.monthly_price_cents, 3_000);
    }

    #[test]
    fn names_round_trip() {
        for tier in Tier::ALL {
            assert_eq!(tier.as_str().parse::<Tier>(), Ok(tier));
        }
        assert!("gold".parse::<Tier>().is_err());
    }
}
