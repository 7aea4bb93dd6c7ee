//! Billing cycles: monthly periods counted from an account's anchor, in UTC.
//!
//! The n-th cycle starts at `anchor + n months`, each computed from the anchor itself (not
//! chained), so an account anchored on the 31st runs Jan 31 → Feb 28 → Mar 31, not drifting to
//! the 28th. Day-of-month is clamped to the month's length and the time of day kept: the same
//! rule as Postgres's `timestamp + interval 'n months'`, which the database's
//! `billing_cycle_containing` (migration V5) uses to roll cycles atomically; a test checks that
//! both agree.

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// One billing period, `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BillingCycle {
    pub start: OffsetDateTime,
    pub end: OffsetDateTime,
}

impl BillingCycle {
    /// The first cycle of an account anchored at `anchor`: one month from it.
    #[must_use]
    pub fn first(anchor: OffsetDateTime) -> Self {
        Self::nth(anchor, 0)
    }

    /// The cycle of an account anchored at `anchor` that contains `at`; the first cycle when
    /// `at` precedes the anchor.
    #[must_use]
    pub fn containing(anchor: OffsetDateTime, at: OffsetDateTime) -> Self {
        let anchor = anchor.to_offset(UtcOffset::UTC);
        let at = at.to_offset(UtcOffset::UTC);
        // The month difference is the answer or one too many (when `at` falls earlier in its
        // month than the anchor's day and time).
        let mut n = (at.year() - anchor.year()) * 12 + i32::from(u8::from(at.month()))
            - i32::from(u8::from(anchor.month()));
        if add_months(anchor, n) > at {
            n -= 1;
        }
        Self::nth(anchor, n.max(0))
    }

    fn nth(anchor: OffsetDateTime, n: i32) -> Self {
        Self {
            start: add_months(anchor, n),
            end: add_months(anchor, n.saturating_add(1)),
        }
    }

    /// Whether `at` falls in this cycle.
    #[must_use]
    pub fn contains(&self, at: OffsetDateTime) -> bool {
        self.start <= at && at < self.end
    }
}

/// `at + months` in UTC, the day clamped to the target month's length, the time of day kept.
/// Saturates at the calendar's ends (year ±9999) rather than failing.
#[must_use]
pub fn add_months(at: OffsetDateTime, months: i32) -> OffsetDateTime {
    let at = at.to_offset(UtcOffset::UTC);
    let index = i64::from(at.year()) * 12 + i64::from(u8::from(at.month()) - 1) + i64::from(months);
    let year = index.div_euclid(12);
    let Ok(year) = i32::try_from(year) else {
        return saturate(months);
    };
    // rem_euclid(12) is 0..=11, so the conversion cannot fail.
    let month = u8::try_from(index.rem_euclid(12) + 1).map_or(Month::January, |m| {
        Month::try_from(m).unwrap_or(Month::January)
    });
    let day = at.day().min(month.length(year));
    match Date::from_calendar_date(year, month, day) {
        Ok(date) => PrimitiveDateTime::new(date, at.time()).assume_utc(),
        Err(_) => saturate(months),
    }
}

fn saturate(months: i32) -> OffsetDateTime {
    let date = if months < 0 { Date::MIN } else { Date::MAX };
    PrimitiveDateTime::new(date, time::Time::MIDNIGHT).assume_utc()
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn months_are_counted_from_the_anchor_without_drift() {
        let anchor = datetime!(2026-01-31 10:00 UTC);
        assert_eq!(add_months(anchor, 1), datetime!(2026-02-28 10:00 UTC));
        assert_eq!(add_months(anchor, 2), datetime!(2026-03-31 10:00 UTC));
        assert_eq!(add_months(anchor, 13), datetime!(2027-02-28 10:00 UTC));
        assert_eq!(add_months(anchor, -2), datetime!(2025-11-30 10:00 UTC));
        assert_eq!(
            add_months(datetime!(2024-01-31 00:00 UTC), 1),
            datetime!(2024-02-29 00:00 UTC),
            "leap year"
        );
    }

    #[test]
    fn the_cycle_containing_an_instant() {
        let anchor = datetime!(2026-01-31 10:00 UTC);
        let cycle = BillingCycle::containing(anchor, datetime!(2026-03-01 00:00 UTC));
        assert_eq!(cycle.start, datetime!(2026-02-28 10:00 UTC));
        assert_eq!(cycle.end, datetime!(2026-03-31 10:00 UTC));

        // Boundaries: a cycle includes its start and excludes its end.
        let at_start = BillingCycle::containing(anchor, datetime!(2026-02-28 10:00 UTC));
        assert_eq!(at_start.start, datetime!(2026-02-28 10:00 UTC));
        let before = BillingCycle::containing(anchor, datetime!(2026-02-28 09:59:59 UTC));
        assert_eq!(before, BillingCycle::first(anchor));

        // Long idle: jumps straight to the current cycle.
        let later = BillingCycle::containing(anchor, datetime!(2031-06-15 00:00 UTC));
        assert_eq!(later.start, datetime!(2031-05-31 10:00 UTC));
        assert!(later.contains(datetime!(2031-06-15 00:00 UTC)));

        // Before the anchor: the first cycle.
        let early = BillingCycle::containing(anchor, datetime!(2025-12-01 00:00 UTC));
        assert_eq!(early, BillingCycle::first(anchor));
    }

    #[test]
    fn offsets_are_normalised_to_utc() {
        let anchor = datetime!(2026-01-31 23:30 -05:00); // 2026-02-01 04:30 UTC
        assert_eq!(
            BillingCycle::first(anchor).end,
            datetime!(2026-03-01 04:30 UTC)
        );
    }

    #[test]
    fn every_instant_falls_in_exactly_its_cycle() {
        let anchor = datetime!(2024-01-29 12:00 UTC);
        let mut at = anchor;
        for _ in 0..2_000 {
            let cycle = BillingCycle::containing(anchor, at);
            assert!(cycle.contains(at), "{at} not in {cycle:?}");
            at += time::Duration::hours(13);
        }
    }

    #[test]
    fn extreme_offsets_saturate() {
        let anchor = datetime!(2026-01-01 00:00 UTC);
        assert_eq!(add_months(anchor, i32::MAX).date(), Date::MAX);
        assert_eq!(add_months(anchor, i32::MIN).date(), Date::MIN);
    }
}
