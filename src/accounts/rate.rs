//! Request rates, in memory: per-API-key limits by tier and per-IP / per-email limits on
//! sign-in attempts, with governor's GCRA (a key's concurrent requests share one bucket).
//!
//! The state lives in this process: with N replicas behind a balancer a key may reach N× its
//! rate at worst. That is the usual trade for keeping Postgres off the limiter's path; the
//! credits, which are what is paid for, are enforced in Postgres and never overspend.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use uuid::Uuid;

use super::{Principal, Tier};

/// Sign-in and sign-up attempts allowed per minute, per client IP and per email.
pub const ATTEMPTS_PER_MINUTE: u32 = 5;

/// The limiters' time source: the monotonic clock, or one a test moves by hand so that a
/// limit is checked without depending on how fast the machine is.
#[derive(Clone, Debug)]
pub enum LimitClock {
    Monotonic(Instant),
    /// Nanoseconds since an arbitrary origin, advanced only by [`LimitClock::advance`].
    Manual(Arc<AtomicU64>),
}

impl LimitClock {
    #[must_use]
    pub fn monotonic() -> Self {
        Self::Monotonic(Instant::now())
    }

    #[must_use]
    pub fn manual() -> Self {
        Self::Manual(Arc::new(AtomicU64::new(0)))
    }

    /// Moves a manual clock forward (a monotonic one ignores this).
    pub fn advance(&self, by: Duration) {
        if let Self::Manual(nanos) = self {
            let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
            nanos.fetch_add(by, Ordering::AcqRel);
        }
    }
}

impl Clock for LimitClock {
    // Elapsed time since the clock's origin: governor implements its `Reference` for it.
    type Instant = Duration;

    fn now(&self) -> Duration {
        match self {
            Self::Monotonic(origin) => origin.elapsed(),
            Self::Manual(nanos) => Duration::from_nanos(nanos.load(Ordering::Acquire)),
        }
    }
}

type Keyed<K> = RateLimiter<K, DashMapStateStore<K>, LimitClock, StateInformationMiddleware>;

fn keyed<K: Clone + Hash + Eq>(per_minute: u32, clock: &LimitClock) -> Keyed<K> {
    let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
    RateLimiter::dashmap_with_clock(Quota::per_minute(per_minute), clock.clone())
        .with_middleware::<StateInformationMiddleware>()
}

/// Where a key stands after a request was let through (the `X-RateLimit-*` headers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateState {
    /// Requests per minute (`X-RateLimit-Limit`).
    pub limit: u32,
    /// Requests that may still be made right now (`X-RateLimit-Remaining`).
    pub remaining: u32,
    /// Seconds until the full allowance is back (`X-RateLimit-Reset`), rounded up.
    pub reset_secs: u64,
}

/// A request refused by a limit: retry after `retry_after_secs` (at least 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("rate limit of {limit} requests per minute reached; retry in {retry_after_secs} s")]
pub struct RateLimited {
    pub limit: u32,
    pub retry_after_secs: u64,
}

/// Seconds, rounded up, with a floor of 1 so `Retry-After: 0` never tells a client to
/// hammer.
fn ceil_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// How many requests per minute a tier's keys get; overridable for benchmarks and tests
/// that are about something else.
pub type RatePolicy = fn(Tier) -> u32;

/// The product plan's rates: 30 / 60 / 120 per minute.
#[must_use]
pub const fn tier_rate(tier: Tier) -> u32 {
    tier.limits().requests_per_minute
}

/// Per-API-key request limits, one GCRA bucket per key sized by its tier.
pub struct RateLimits {
    policy: RatePolicy,
    clock: LimitClock,
    /// One limiter per tier (a quota is per limiter), keyed by API key id.
    by_tier: [(Tier, Keyed<Uuid>); 3],
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl RateLimits {
    #[must_use]
    pub fn new(policy: RatePolicy, clock: LimitClock) -> Self {
        let by_tier = Tier::ALL.map(|tier| (tier, keyed(policy(tier), &clock)));
        Self {
            policy,
            clock,
            by_tier,
        }
    }

    /// The product plan's limits on the monotonic clock.
    #[must_use]
    pub fn standard() -> Self {
        Self::new(tier_rate, LimitClock::monotonic())
    }

    #[must_use]
    pub const fn clock(&self) -> &LimitClock {
        &self.clock
    }

    /// Counts one request of `principal`'s key.
    ///
    /// # Errors
    /// [`RateLimited`] when the key has used its allowance for now.
    pub fn check(&self, principal: &Principal) -> Result<RateState, RateLimited> {
        let limit = (self.policy)(principal.tier).max(1);
        let limiter = &self
            .by_tier
            .iter()
            .find(|(tier, _)| *tier == principal.tier)
            .unwrap_or(&self.by_tier[0])
            .1;
        match limiter.check_key(&principal.key_id) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                // Each used request comes back after 60 s / limit.
                let per_request = Duration::from_secs(60) / limit;
                let reset = per_request * limit.saturating_sub(remaining);
                Ok(RateState {
                    limit,
                    remaining,
                    reset_secs: if reset.is_zero() { 0 } else { ceil_secs(reset) },
                })
            }
            Err(not_until) => Err(RateLimited {
                limit,
                retry_after_secs: ceil_secs(not_until.wait_time_from(self.clock.now())),
            }),
        }
    }

    /// Forgets keys whose buckets are full again (memory stays bounded by active keys).
    pub fn retain_recent(&self) {
        for (_, limiter) in &self.by_tier {
            limiter.retain_recent();
        }
    }
}

/// Limits on sign-in and sign-up attempts: [`ATTEMPTS_PER_MINUTE`] per client IP and per
/// email, so neither one address nor a botnet aimed at one account can guess passwords fast.
pub struct AttemptLimits {
    clock: LimitClock,
    by_ip: Keyed<IpAddr>,
    by_email: Keyed<String>,
}

impl std::fmt::Debug for AttemptLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttemptLimits").finish_non_exhaustive()
    }
}

impl AttemptLimits {
    #[must_use]
    pub fn new(clock: LimitClock) -> Self {
        Self {
            by_ip: keyed(ATTEMPTS_PER_MINUTE, &clock),
            by_email: keyed(ATTEMPTS_PER_MINUTE, &clock),
            clock,
        }
    }

    /// Counts one attempt from `ip` (when known) for `email` (compared case-insensitively).
    ///
    /// # Errors
    /// [`RateLimited`] when either the IP or the email is over its limit.
    pub fn check(&self, ip: Option<IpAddr>, email: &str) -> Result<(), RateLimited> {
        let refused = |wait: Duration| RateLimited {
            limit: ATTEMPTS_PER_MINUTE,
            retry_after_secs: ceil_secs(wait),
        };
        if let Some(ip) = ip {
            self.by_ip
                .check_key(&ip)
                .map_err(|n| refused(n.wait_time_from(self.clock.now())))?;
        }
        self.by_email
            .check_key(&email.trim().to_lowercase())
            .map_err(|n| refused(n.wait_time_from(self.clock.now())))?;
        Ok(())
    }

    pub fn retain_recent(&self) {
        self.by_ip.retain_recent();
        self.by_email.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(tier: Tier) -> Principal {
        Principal {
            account_id: Uuid::new_v4(),
            key_id: Uuid::new_v4(),
            user_id: Uuid::new_v4(),
            tier,
        }
    }

    #[test]
    fn each_tier_gets_its_rate_per_key_then_waits() {
        let limits = RateLimits::new(tier_rate, LimitClock::manual());
        for (tier, rate) in [(Tier::Free, 30), (Tier::Payg, 60), (Tier::Project, 120)] {
            let key = principal(tier);
            for n in 1..=rate {
                let state = limits.check(&key).expect("within the limit");
                assert_eq!((state.limit, state.remaining), (rate, rate - n));
            }
            let refused = limits.check(&key).unwrap_err();
            // The next request is due after 60 s / rate, rounded up (Project's 0.5 s: 1).
            assert_eq!(refused.retry_after_secs, u64::from(60_u32.div_ceil(rate)));
            // Another key of the same tier has its own bucket.
            assert!(limits.check(&principal(tier)).is_ok());
        }
    }

    #[test]
    fn a_used_request_comes_back_after_its_share_of_the_minute() {
        let limits = RateLimits::new(tier_rate, LimitClock::manual());
        let key = principal(Tier::Free);
        for _ in 0..30 {
            limits.check(&key).unwrap();
        }
        assert!(limits.check(&key).is_err());
        limits.clock().advance(Duration::from_secs(2));
        let state = limits.check(&key).expect("one request back after 2 s");
        assert_eq!(state.remaining, 0);
        assert_eq!(state.reset_secs, 60);
    }

    #[test]
    fn attempts_are_limited_per_ip_and_per_email() {
        let limits = AttemptLimits::new(LimitClock::manual());
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for n in 0..5 {
            limits
                .check(Some(ip), &format!("user{n}@example.com"))
                .unwrap();
        }
        assert!(limits.check(Some(ip), "other@example.com").is_err());
        for n in 0..5 {
            let ip: IpAddr = format!("10.0.1.{n}").parse().unwrap();
            limits.check(Some(ip), "Target@Example.com").unwrap();
        }
        let refused = limits
            .check(Some("10.0.2.1".parse().unwrap()), "target@example.com")
            .unwrap_err();
        assert_eq!(refused.retry_after_secs, 12);
    }
}
