//! The API's scalars: prices, sizes and derived amounts as exact decimal strings (no floats
//! anywhere), and instants as RFC 3339 UTC strings with microseconds.

use std::fmt;

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value};
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

use crate::market::{Price, Size};

/// A price in dollars as a fixed-point string with exactly 4 decimals, e.g. "0.5600" for
/// 56 cents. Kalshi prices lie in [0, 1] dollars (a contract pays $1 if its side wins); some
/// markets tick at $0.001. As input, 0 to 4 decimals are accepted ("0.56", "0.5600",
/// "0.001"); JSON numbers are refused so that no float ever touches a price.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PriceScalar(pub Price);

/// A price in dollars as a fixed-point string with exactly 4 decimals, e.g. "0.5600" for
/// 56 cents. Kalshi prices lie in [0, 1] dollars (a contract pays $1 if its side wins); some
/// markets tick at $0.001. As input, 0 to 4 decimals are accepted ("0.56", "0.5600",
/// "0.001"); JSON numbers are refused so that no float ever touches a price.
#[Scalar(name = "Price")]
impl ScalarType for PriceScalar {
    fn parse(value: Value) -> InputValueResult<Self> {
        match value {
            Value::String(text) => text.parse().map(Self).map_err(|e| {
                InputValueError::custom(format!(
                    "{e}; write a price as a string such as \"0.5600\""
                ))
            }),
            _ => Err(InputValueError::custom(
                "a Price is a string with up to 4 decimals in [0, 1], such as \"0.5600\"; numbers are not accepted",
            )),
        }
    }

    fn is_valid(value: &Value) -> bool {
        matches!(value, Value::String(_))
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.to_string())
    }
}

/// A number of contracts as a fixed-point string with exactly 2 decimals, e.g. "10.00"
/// (Kalshi sizes carry 2 decimals; fractional contracts exist). Negative for a delta that
/// removes size, e.g. "-2.50". As input, 0 to 2 decimals are accepted ("10", "10.5");
/// JSON numbers are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeScalar(pub Size);

/// A number of contracts as a fixed-point string with exactly 2 decimals, e.g. "10.00"
/// (Kalshi sizes carry 2 decimals; fractional contracts exist). Negative for a delta that
/// removes size, e.g. "-2.50". As input, 0 to 2 decimals are accepted ("10", "10.5");
/// JSON numbers are refused.
#[Scalar(name = "Size")]
impl ScalarType for SizeScalar {
    fn parse(value: Value) -> InputValueResult<Self> {
        match value {
            Value::String(text) => text.parse().map(Self).map_err(|e| {
                InputValueError::custom(format!("{e}; write a size as a string such as \"10.00\""))
            }),
            _ => Err(InputValueError::custom(
                "a Size is a string with up to 2 decimals, such as \"10.00\"; numbers are not accepted",
            )),
        }
    }

    fn is_valid(value: &Value) -> bool {
        matches!(value, Value::String(_))
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.to_string())
    }
}

/// An exact decimal number as a string, e.g. "0.56500" or "-0.0100", used for derived
/// amounts (midpoints, spreads, averages, costs). Each field states its unit and its number
/// of decimals; where a value had to be rounded to them, the field says so (half away from
/// zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecimalScalar {
    /// The value in units of 10^-scale.
    pub units: i128,
    pub scale: u32,
}

impl DecimalScalar {
    #[must_use]
    pub const fn new(units: i128, scale: u32) -> Self {
        Self { units, scale }
    }
}

impl fmt::Display for DecimalScalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.units < 0 { "-" } else { "" };
        let abs = self.units.unsigned_abs();
        if self.scale == 0 {
            return write!(f, "{sign}{abs}");
        }
        let one = 10u128.pow(self.scale);
        let width = self.scale as usize;
        write!(f, "{sign}{}.{:0width$}", abs / one, abs % one)
    }
}

/// An exact decimal number as a string, e.g. "0.56500" or "-0.0100", used for derived
/// amounts (midpoints, spreads, averages, costs). Each field states its unit and its number
/// of decimals; where a value had to be rounded to them, the field says so (half away from
/// zero).
#[Scalar(name = "Decimal")]
impl ScalarType for DecimalScalar {
    fn parse(value: Value) -> InputValueResult<Self> {
        let Value::String(text) = &value else {
            return Err(InputValueError::custom(
                "a Decimal is a string such as \"0.56500\"",
            ));
        };
        parse_decimal(text).map_err(|reason| {
            InputValueError::custom(format!("invalid Decimal {text:?}: {reason}"))
        })
    }

    fn is_valid(value: &Value) -> bool {
        matches!(value, Value::String(_))
    }

    fn to_value(&self) -> Value {
        Value::String(self.to_string())
    }
}

fn parse_decimal(text: &str) -> Result<DecimalScalar, &'static str> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty()
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return Err("expected digits with an optional sign and decimal point");
    }
    if whole.len() + fraction.len() > 30 {
        return Err("too many digits");
    }
    let mut units: i128 = 0;
    for b in whole.bytes().chain(fraction.bytes()) {
        units = units * 10 + i128::from(b - b'0');
    }
    Ok(DecimalScalar::new(
        if negative { -units } else { units },
        fraction.len() as u32,
    ))
}

/// The earliest instant the API accepts: 1970-01-01T00:00:00Z, Unix µs.
pub const MIN_INSTANT_US: i64 = 0;
/// The first instant the API no longer accepts: 2200-01-01T00:00:00Z, Unix µs.
pub const END_INSTANT_US: i64 = 7_258_118_400_000_000;

/// An instant as an RFC 3339 string. Output is always UTC with 6 decimals (microseconds),
/// e.g. "2026-03-01T14:30:00.250000Z". Input accepts any RFC 3339 offset
/// ("2026-03-01T09:30:00-05:00", "2026-03-01T14:30:00Z") and 0 to 9 fraction digits; finer
/// than a microsecond is truncated (the data is stamped in microseconds). Years 1970–2199.
/// All times are the exchange's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DateTimeScalar(pub i64);

/// An instant as an RFC 3339 string. Output is always UTC with 6 decimals (microseconds),
/// e.g. "2026-03-01T14:30:00.250000Z". Input accepts any RFC 3339 offset
/// ("2026-03-01T09:30:00-05:00", "2026-03-01T14:30:00Z") and 0 to 9 fraction digits; finer
/// than a microsecond is truncated (the data is stamped in microseconds). Years 1970–2199.
/// All times are the exchange's clock.
#[Scalar(name = "DateTime")]
impl ScalarType for DateTimeScalar {
    fn parse(value: Value) -> InputValueResult<Self> {
        match value {
            Value::String(text) => parse_rfc3339_us(&text).map(Self).map_err(|reason| {
                InputValueError::custom(format!(
                    "invalid DateTime {text:?}: {reason}; write RFC 3339 such as \"2026-03-01T14:30:00Z\""
                ))
            }),
            _ => Err(InputValueError::custom(
                "a DateTime is an RFC 3339 string such as \"2026-03-01T14:30:00Z\"",
            )),
        }
    }

    fn is_valid(value: &Value) -> bool {
        matches!(value, Value::String(_))
    }

    fn to_value(&self) -> Value {
        Value::String(format_rfc3339_us(self.0))
    }
}

/// Formats Unix µs as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
#[must_use]
pub fn format_rfc3339_us(us: i64) -> String {
    let Ok(t) = OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000) else {
        return format!("invalid instant ({us} µs)");
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// Parses RFC 3339 (`date "T" time fraction? offset`) into Unix µs, truncating below a µs.
///
/// # Errors
/// A short reason when the text is not RFC 3339 or lies outside 1970–2199.
pub fn parse_rfc3339_us(text: &str) -> Result<i64, String> {
    let b = text.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Result<u32, String> {
        let part = b.get(range.clone()).ok_or("too short")?;
        if !part.iter().all(u8::is_ascii_digit) {
            return Err(format!("expected digits at position {}", range.start + 1));
        }
        Ok(part.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
    };
    let expect = |at: usize, allowed: &[u8], what: &str| -> Result<(), String> {
        match b.get(at) {
            Some(c) if allowed.contains(c) => Ok(()),
            _ => Err(format!("expected {what} at position {}", at + 1)),
        }
    };
    let year = number(0..4)?;
    expect(4, b"-", "'-'")?;
    let month = number(5..7)?;
    expect(7, b"-", "'-'")?;
    let day = number(8..10)?;
    expect(10, b"Tt ", "'T'")?;
    let hour = number(11..13)?;
    expect(13, b":", "':'")?;
    let minute = number(14..16)?;
    expect(16, b":", "':'")?;
    let second = number(17..19)?;
    let mut at = 19;
    let mut micros = 0u32;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            if at - start < 6 {
                micros = micros * 10 + u32::from(b[at] - b'0');
            }
            at += 1;
        }
        let digits = at - start;
        if digits == 0 {
            return Err("expected digits after '.'".to_owned());
        }
        if digits > 9 {
            return Err("more than 9 fraction digits".to_owned());
        }
        for _ in digits..6 {
            micros *= 10;
        }
    }
    let offset_seconds: i32 = match b.get(at) {
        Some(b'Z' | b'z') if at + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if at + 6 == b.len() => {
            let hours = number(at + 1..at + 3)?;
            expect(at + 3, b":", "':' in the offset")?;
            let minutes = number(at + 4..at + 6)?;
            if hours > 23 || minutes > 59 {
                return Err("offset out of range".to_owned());
            }
            let seconds = (hours * 3600 + minutes * 60) as i32;
            if *sign == b'-' { -seconds } else { seconds }
        }
        _ => return Err("expected an offset: 'Z' or ±HH:MM at the end".to_owned()),
    };
    if second == 60 {
        return Err("leap seconds are not supported".to_owned());
    }
    let month = u8::try_from(month)
        .ok()
        .and_then(|m| Month::try_from(m).ok())
        .ok_or("month out of range")?;
    let date = Date::from_calendar_date(year as i32, month, day as u8)
        .map_err(|_| "day out of range for the month".to_owned())?;
    let time = Time::from_hms_micro(hour as u8, minute as u8, second as u8, micros)
        .map_err(|_| "time of day out of range".to_owned())?;
    let offset = UtcOffset::from_whole_seconds(offset_seconds).map_err(|e| e.to_string())?;
    let instant = PrimitiveDateTime::new(date, time).assume_offset(offset);
    let us = i64::try_from(instant.unix_timestamp_nanos() / 1000)
        .map_err(|_| "out of range".to_owned())?;
    if !(MIN_INSTANT_US..END_INSTANT_US).contains(&us) {
        return Err("outside the supported years 1970–2199".to_owned());
    }
    Ok(us)
}

/// A length of time, as input for `interval` arguments; held in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntervalScalar(pub i64);

/// A length of time: an integer number of seconds (60), or a string with units ("15s", "1m",
/// "5m", "1h", "1h 30m", "1d", "1w"; "m" is minutes) or in ISO 8601 ("PT1M", "PT15S", "P1D").
#[Scalar(name = "Interval")]
impl ScalarType for IntervalScalar {
    fn parse(value: Value) -> InputValueResult<Self> {
        const HOW: &str = "write seconds as an integer (60) or a string such as \"15s\", \"1m\", \"1h\", \"1d\" or \"PT1M\"";
        let us = match &value {
            Value::Number(number) => number
                .as_i64()
                .and_then(|seconds| seconds.checked_mul(1_000_000))
                .ok_or_else(|| format!("invalid Interval {number}: not a whole number of seconds")),
            Value::String(text) => parse_interval_us(text)
                .map_err(|reason| format!("invalid Interval {text:?}: {reason}")),
            _ => Err("an Interval is a number of seconds or a string".to_owned()),
        };
        match us {
            Ok(us) if us > 0 => Ok(Self(us)),
            Ok(_) => Err(InputValueError::custom(format!(
                "an Interval must be longer than zero; {HOW}"
            ))),
            Err(reason) => Err(InputValueError::custom(format!("{reason}; {HOW}"))),
        }
    }

    fn is_valid(value: &Value) -> bool {
        matches!(value, Value::Number(_) | Value::String(_))
    }

    fn to_value(&self) -> Value {
        let duration = std::time::Duration::from_micros(self.0.unsigned_abs());
        Value::String(humantime::format_duration(duration).to_string())
    }
}

/// Parses "90", "15s", "1m", "1h 30m", "1d" (humantime's units) or ISO 8601 "PT1M30S",
/// "P1DT12H", "P1W" into microseconds.
fn parse_interval_us(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<i64>() {
        return seconds
            .checked_mul(1_000_000)
            .ok_or_else(|| "too long".to_owned());
    }
    let written = match text.strip_prefix(['P', 'p']) {
        Some(iso) => iso_8601_as_units(iso)?,
        None => text.to_owned(),
    };
    let duration = humantime::parse_duration(&written).map_err(|e| e.to_string())?;
    i64::try_from(duration.as_micros()).map_err(|_| "too long".to_owned())
}

/// The part of an ISO 8601 duration after "P" in humantime's units: "T1M30S" → "1m 30s".
/// Years and months have no fixed length and are refused.
fn iso_8601_as_units(iso: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut number = String::new();
    let mut in_time = false;
    let mut time_parts = 0;
    for c in iso.chars() {
        match c.to_ascii_uppercase() {
            'T' if !in_time && number.is_empty() => in_time = true,
            d if d.is_ascii_digit() || d == '.' => number.push(d),
            unit => {
                let unit = match (in_time, unit) {
                    (false, 'W') => "w",
                    (false, 'D') => "d",
                    (true, 'H') => "h",
                    (true, 'M') => "m",
                    (true, 'S') => "s",
                    (false, 'Y' | 'M') => {
                        return Err("years and months have no fixed length".into());
                    }
                    _ => return Err(format!("unexpected {c:?} in an ISO 8601 duration")),
                };
                if number.is_empty() {
                    return Err(format!("no number before {c:?}"));
                }
                out.push_str(&number);
                out.push_str(unit);
                out.push(' ');
                number.clear();
                time_parts += usize::from(in_time);
            }
        }
    }
    if !number.is_empty() || out.is_empty() || (in_time && time_parts == 0) {
        return Err("incomplete ISO 8601 duration".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_read_seconds_units_and_iso_8601() {
        let us = |value: Value| IntervalScalar::parse(value).map(|i| i.0);
        assert_eq!(us(Value::from(60)).unwrap(), 60_000_000);
        for (text, seconds) in [
            ("60", 60),
            ("15s", 15),
            ("1m", 60),
            ("5m", 300),
            ("1h 30m", 5_400),
            ("1d", 86_400),
            ("1w", 604_800),
            ("PT1M", 60),
            ("PT1M30S", 90),
            ("P1DT12H", 129_600),
            ("pt15s", 15),
        ] {
            assert_eq!(
                us(Value::from(text)).unwrap(),
                seconds * 1_000_000,
                "{text}"
            );
        }
        for bad in ["", "0", "-5", "1x", "P1M", "PT", "P1DT", "soon", "PT1H2"] {
            let error = us(Value::from(bad))
                .unwrap_err()
                .into_server_error(Default::default());
            assert!(error.message.contains("\"1m\""), "{bad}: {}", error.message);
        }
        assert!(us(Value::from(0)).is_err());
        assert!(us(Value::Boolean(true)).is_err());
        assert_eq!(IntervalScalar(90_000_000).to_value(), Value::from("1m 30s"));
    }

    #[test]
    fn rfc3339_round_trips_in_utc_with_microseconds() {
        let us = parse_rfc3339_us("2026-03-01T14:30:00.25Z").unwrap();
        assert_eq!(us, 1_772_375_400_250_000);
        assert_eq!(format_rfc3339_us(us), "2026-03-01T14:30:00.250000Z");
        assert_eq!(
            parse_rfc3339_us("2026-03-01T09:30:00.250000-05:00").unwrap(),
            us
        );
        assert_eq!(
            parse_rfc3339_us("2026-03-01t14:30:00.250000999z").unwrap(),
            us
        );
        assert_eq!(parse_rfc3339_us("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(format_rfc3339_us(0), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn bad_instants_are_refused_with_a_reason() {
        for text in [
            "",
            "2026",
            "2026-03-01",
            "2026-03-01T14:30:00",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-03-01T24:00:00Z",
            "2026-03-01T14:30:60Z",
            "2026-03-01T14:30:00.Z",
            "2026-03-01T14:30:00.1234567890Z",
            "2026-03-01T14:30:00+25:00",
            "2026-03-01T14:30:00Zjunk",
            "1969-12-31T23:59:59Z",
            "2200-01-01T00:00:00Z",
            "２０２６-03-01T14:30:00Z",
            "2026-03-01T14:30:00+0100",
        ] {
            assert!(parse_rfc3339_us(text).is_err(), "{text}");
        }
    }

    #[test]
    fn decimals_print_exactly() {
        assert_eq!(DecimalScalar::new(56_500, 5).to_string(), "0.56500");
        assert_eq!(DecimalScalar::new(-100, 4).to_string(), "-0.0100");
        assert_eq!(DecimalScalar::new(12, 0).to_string(), "12");
        assert_eq!(
            parse_decimal("-1.250").unwrap(),
            DecimalScalar::new(-1250, 3)
        );
        assert!(parse_decimal("1e5").is_err());
    }
}
