//! Opaque cursors: a row's position in its table's order, base64url-encoded with a tag naming
//! the connection it belongs to. A cursor names a position, not an offset, so it stays valid
//! (and pages never repeat or skip rows) while new rows arrive.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::error::ApiError;
use crate::clickhouse::events::{DeltaKey, TradeKey};

fn encode(text: &str) -> String {
    URL_SAFE_NO_PAD.encode(text)
}

fn bad_cursor(field: &str) -> ApiError {
    ApiError::bad_input(
        "after",
        format!(
            "`after` is not a cursor of `{field}`: pass the `endCursor` (or an edge's `cursor`) that `{field}` returned"
        ),
    )
}

fn decode(cursor: &str, tag: &str, field: &str) -> Result<String, ApiError> {
    let bad = || bad_cursor(field);
    if cursor.len() > 512 {
        return Err(bad());
    }
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    text.strip_prefix(tag).map(str::to_owned).ok_or_else(bad)
}

/// The cursor of a delta: `d1:<ts µs>:<conn>:<seq>`.
#[must_use]
pub fn delta_cursor(key: DeltaKey) -> String {
    encode(&format!("d1:{}:{}:{}", key.ts_us, key.conn, key.seq))
}

/// # Errors
/// [`ApiError::BadInput`] when `cursor` is not a delta cursor.
pub fn parse_delta_cursor(cursor: &str) -> Result<DeltaKey, ApiError> {
    let body = decode(cursor, "d1:", "deltas")?;
    let mut parts = body.split(':');
    let key = (|| {
        let key = DeltaKey {
            ts_us: parts.next()?.parse().ok()?,
            conn: parts.next()?.parse().ok()?,
            seq: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(key)
    })();
    key.ok_or_else(|| bad_cursor("deltas"))
}

/// The cursor of a trade: `t1:<ts µs>:<trade id>`.
#[must_use]
pub fn trade_cursor(key: &TradeKey) -> String {
    encode(&format!("t1:{}:{}", key.ts_us, key.trade_id))
}

/// # Errors
/// [`ApiError::BadInput`] when `cursor` is not a trade cursor.
pub fn parse_trade_cursor(cursor: &str) -> Result<TradeKey, ApiError> {
    let body = decode(cursor, "t1:", "trades")?;
    body.split_once(':')
        .and_then(|(ts, id)| {
            Some(TradeKey {
                ts_us: ts.parse().ok()?,
                trade_id: id.to_owned(),
            })
        })
        .ok_or_else(|| bad_cursor("trades"))
}

/// The cursor of a market: `m1:<ticker>`.
#[must_use]
pub fn market_cursor(ticker: &str) -> String {
    encode(&format!("m1:{ticker}"))
}

/// # Errors
/// [`ApiError::BadInput`] when `cursor` is not a market cursor.
pub fn parse_market_cursor(cursor: &str) -> Result<String, ApiError> {
    decode(cursor, "m1:", "markets")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_each_other() {
        let key = DeltaKey {
            ts_us: 1_772_323_200_000_123,
            conn: 1_772_323_100_000_000,
            seq: 42,
        };
        let cursor = delta_cursor(key);
        assert_eq!(parse_delta_cursor(&cursor).unwrap(), key);
        let trade = TradeKey {
            ts_us: 5,
            trade_id: "a:b-c".into(),
        };
        assert_eq!(parse_trade_cursor(&trade_cursor(&trade)).unwrap(), trade);
        assert_eq!(parse_market_cursor(&market_cursor("KX-1")).unwrap(), "KX-1");
        assert!(parse_trade_cursor(&cursor).is_err());
        for bad in ["", "!!!", "ZDE6MTox", "é", &"A".repeat(10_000)] {
            let error = parse_delta_cursor(bad).unwrap_err();
            assert_eq!(error.code(), "BAD_INPUT", "{bad}");
        }
    }
}
