//! Exchange time for the simulator: wall-clock microseconds and Kalshi's timestamp strings
//! (RFC 3339 with Go-style trimmed fractions, as in `"2026-08-07T06:46:28.97871Z"`).

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock time in microseconds since the Unix epoch (0 if the clock is before 1970).
pub(crate) fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX)
        })
}

/// Days since 1970-01-01 → (year, month 1..=12, day 1..=31), proleptic Gregorian.
/// Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both fit: day is 1..=31 and month 1..=12 by construction.
    (year, month as u32, day as u32)
}

fn date_time(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `2026-09-21T23:30:00Z`: whole seconds, as Kalshi's REST times for schedule fields.
pub(crate) fn rfc3339_secs(secs: i64) -> String {
    format!("{}Z", date_time(secs))
}

/// `2026-08-07T06:46:28.97871Z`: microseconds with trailing zeros trimmed (no fraction at
/// all on a whole second), the way Go's `RFC3339Nano` prints them.
pub(crate) fn rfc3339_micros(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let micros = us.rem_euclid(1_000_000);
    if micros == 0 {
        return rfc3339_secs(secs);
    }
    let fraction = format!("{micros:06}");
    format!("{}.{}Z", date_time(secs), fraction.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_match_kalshi_frames() {
        // ts and ts_ms of a recorded delta (captures/ws_orderbook_stream.json).
        assert_eq!(
            rfc3339_micros(1_786_085_188_978_710),
            "2026-08-07T06:46:28.97871Z"
        );
        assert_eq!(
            rfc3339_micros(1_786_085_189_069_549),
            "2026-08-07T06:46:29.069549Z"
        );
        assert_eq!(rfc3339_secs(1_669_149_841), "2022-11-22T20:44:01Z");
        assert_eq!(rfc3339_micros(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_secs(951_782_400), "2000-02-29T00:00:00Z");
    }
}
