//! Argument checks shared by the resolvers: each refusal is a `BAD_INPUT` naming the argument
//! and the limit, so the client knows what to change.

use std::time::Duration;

use super::error::ApiError;
use super::limits;
use super::scalars::{DateTimeScalar, IntervalScalar};
use crate::clickhouse::events::TimeRange;

/// A ticker as Kalshi writes them: 1–64 ASCII letters, digits, `-`, `_` or `.`.
///
/// # Errors
/// [`ApiError::BadInput`] otherwise.
pub fn ticker(ticker: &str) -> Result<&str, ApiError> {
    let ok = !ticker.is_empty()
        && ticker.len() <= limits::MAX_TICKER_CHARS
        && ticker
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(ticker)
    } else {
        Err(ApiError::bad_input(
            "ticker",
            format!(
                "ticker must be 1 to {} ASCII letters, digits, '-', '_' or '.', e.g. \"KXBTCD-26MAR01-T100000\"; find tickers with `markets(search: ...)`",
                limits::MAX_TICKER_CHARS
            ),
        ))
    }
}

/// A book depth within 1..=[`limits::MAX_BOOK_DEPTH`].
///
/// # Errors
/// [`ApiError::BadInput`] otherwise.
pub fn depth(depth: i32) -> Result<usize, ApiError> {
    if (1..=limits::MAX_BOOK_DEPTH).contains(&depth) {
        Ok(depth as usize)
    } else {
        Err(ApiError::bad_input(
            "depth",
            format!(
                "depth must be between 1 and {} levels per side (got {depth})",
                limits::MAX_BOOK_DEPTH
            ),
        ))
    }
}

/// A page size within 1..=[`limits::MAX_PAGE_SIZE`].
///
/// # Errors
/// [`ApiError::BadInput`] otherwise.
pub fn page_size(first: i32) -> Result<u32, ApiError> {
    if (1..=limits::MAX_PAGE_SIZE).contains(&first) {
        Ok(first as u32)
    } else {
        Err(ApiError::bad_input(
            "first",
            format!(
                "first must be between 1 and {} (got {first}); page through more with `after`",
                limits::MAX_PAGE_SIZE
            ),
        ))
    }
}

/// A half-open range `[from, to)` with `from < to` no longer than `max`.
///
/// # Errors
/// [`ApiError::BadInput`] otherwise.
pub fn range(
    from: DateTimeScalar,
    to: DateTimeScalar,
    max: Duration,
) -> Result<TimeRange, ApiError> {
    if from.0 >= to.0 {
        return Err(ApiError::bad_input(
            "to",
            "`to` must be later than `from` (the range is [from, to))",
        ));
    }
    let max_us = i64::try_from(max.as_micros()).unwrap_or(i64::MAX);
    if to.0 - from.0 > max_us {
        return Err(ApiError::bad_input(
            "to",
            format!(
                "the range [from, to) may span at most {} (got {}); split it into several requests",
                human(max),
                human(Duration::from_micros((to.0 - from.0) as u64))
            ),
        ));
    }
    Ok(TimeRange {
        from_us: from.0,
        to_us: to.0,
    })
}

/// The `interval` argument in µs, or the deprecated argument it replaced (`legacy_name`,
/// counted in units of `legacy_unit_us`): exactly one of the two.
///
/// # Errors
/// [`ApiError::BadInput`] when both or neither are given, or the legacy one is below 1.
pub fn interval(
    interval: Option<IntervalScalar>,
    legacy: Option<i32>,
    legacy_name: &'static str,
    legacy_unit_us: i64,
) -> Result<i64, ApiError> {
    match (interval, legacy) {
        (Some(interval), None) => Ok(interval.0),
        (None, Some(count)) if count >= 1 => Ok(i64::from(count) * legacy_unit_us),
        (None, Some(_)) => Err(ApiError::bad_input(
            legacy_name,
            format!("{legacy_name} must be at least 1"),
        )),
        (Some(_), Some(_)) => Err(ApiError::bad_input(
            "interval",
            format!("give interval only ({legacy_name} is its deprecated older form)"),
        )),
        (None, None) => Err(ApiError::bad_input(
            "interval",
            "interval is required: seconds as an integer (60) or a string such as \"1m\", \"1h\", \"PT1M\"",
        )),
    }
}

/// A duration in the largest whole unit that fits, e.g. "31 days", "2 hours", "90 s".
#[must_use]
pub fn human(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        s if s >= 86_400 && s % 86_400 == 0 => format!("{} days", s / 86_400),
        s if s >= 3_600 && s % 3_600 == 0 => format!("{} hours", s / 3_600),
        s => format!("{s} s"),
    }
}

/// A free-text filter of at most [`limits::MAX_SEARCH_CHARS`] characters.
///
/// # Errors
/// [`ApiError::BadInput`] otherwise.
pub fn text(argument: &'static str, value: Option<String>) -> Result<String, ApiError> {
    let value = value.unwrap_or_default();
    if value.chars().count() > limits::MAX_SEARCH_CHARS {
        return Err(ApiError::bad_input(
            argument,
            format!(
                "{argument} may be at most {} characters",
                limits::MAX_SEARCH_CHARS
            ),
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickers_are_ascii_and_bounded() {
        assert!(ticker("KXBTCD-26MAR01-T100000").is_ok());
        assert!(ticker("kx.a_b-1").is_ok());
        for bad in ["", "KX BTC", "KX'--", "ÉTÉ", "KX\u{0}", &"A".repeat(65)] {
            assert_eq!(ticker(bad).unwrap_err().code(), "BAD_INPUT", "{bad:?}");
        }
    }

    #[test]
    fn ranges_are_ordered_and_bounded() {
        let day = 86_400_000_000;
        let max = Duration::from_secs(31 * 86_400);
        assert!(range(DateTimeScalar(0), DateTimeScalar(day), max).is_ok());
        assert!(range(DateTimeScalar(day), DateTimeScalar(day), max).is_err());
        let error = range(DateTimeScalar(0), DateTimeScalar(40 * day), max).unwrap_err();
        assert!(error.to_string().contains("31 days"), "{error}");
        assert!(depth(0).is_err() && depth(1001).is_err() && depth(1000).is_ok());
        assert!(page_size(-1).is_err() && page_size(1).is_ok());
    }
}
