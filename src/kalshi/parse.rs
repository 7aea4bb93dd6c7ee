//! Pure conversion of Kalshi wire types (`messages`) into domain values: one text frame in,
//! one [`Frame`] out; one REST market object in, one [`MarketMeta`] out. No I/O, no floats,
//! no panics on any input.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize as _;
use serde::de::{Deserializer, IgnoredAny};

use super::messages::{
    FrameSink, KalshiDeltaMsg, KalshiErrorMsg, KalshiEventMsg, KalshiLifecycleMsg, KalshiMarket,
    KalshiOkMsg, KalshiSnapshotMsg, KalshiSubscribedMsg, KalshiTradeMsg, Level, Listed, Loose,
    Mapped, MessageKind, read_frame,
};
use crate::market::{Book, MarketMeta, Price, Side, Size};

mod flat;

/// The envelope every server frame carries: its `type` and, when present and integral, the
/// echoed command `id`, the subscription `sid` and the per-sid sequence number `seq`.
///
/// For `subscribed` frames Kalshi puts the new `sid` inside `msg`; it is copied here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The frame's `type`, e.g. `orderbook_delta` (borrowed from a static for the known
    /// types, so the common frames allocate nothing for it).
    pub kind: Cow<'static, str>,
    /// Echo of the client command id (command replies and `get_snapshot` snapshots).
    pub id: Option<u64>,
    /// Subscription id, allocated per connection from 1.
    pub sid: Option<u32>,
    /// Sequence number within the sid, gapless from 1; counts snapshots, deltas and `ok` replies.
    pub seq: Option<u64>,
}

/// One parsed server frame. The envelope is always there; the body is an error when the
/// payload was unusable (the frame still counts in its sid's sequence).
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    pub envelope: Envelope,
    pub body: Result<Body, ParseError>,
}

/// What a frame says, by its `type`.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    /// Reply to `subscribe`: one per channel; the new sid is in the envelope.
    Subscribed { channel: String },
    /// Reply to `update_subscription` (`add_markets` / `delete_markets`): the full market
    /// list after the update, `None` when the subscription was made with `skip_ticker_ack`.
    Ok { market_tickers: Option<Vec<String>> },
    /// Reply to `list_subscriptions` (an `ok` whose `msg` is an array): `(channel, sid)`.
    ListSubscriptions(Vec<(String, u32)>),
    /// Reply to `unsubscribe`.
    Unsubscribed,
    /// A command or subscription error. Codes 10 (channel error) and 25 (buffer overflow)
    /// end the subscription.
    Error {
        code: u32,
        message: String,
        market_tickers: Vec<String>,
    },
    /// `orderbook_snapshot`: the market's whole book, replacing what was there. Empty at
    /// market close.
    Snapshot { market: String, book: Book },
    /// `orderbook_delta`: one signed change of one level.
    Delta(DeltaUpdate),
    /// `trade`: one execution.
    Trade(TradeUpdate),
    /// `market_lifecycle_v2` (every `event_type`, including `metadata_updated`).
    Lifecycle(LifecycleUpdate),
    /// `event_lifecycle` / `event_fee_update`: only their `seq` matters to the collector.
    EventLifecycle { event_ticker: String },
    /// `ticker`: not read.
    Ticker,
    /// Any other `type`: tolerated; its `seq`, if any, still counts.
    Unknown,
}

/// A signed change to the resting size of one level of one market's book.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeltaUpdate {
    pub market: String,
    /// Which bid ladder.
    pub side: Side,
    /// The level, in $0.0001 units; strictly between $0 and $1.
    pub price: Price,
    /// Signed change in 0.01-contract units; add it to the resting size.
    pub delta: Size,
    /// Exchange time of the change, Unix milliseconds (`ts_ms`, else the legacy RFC 3339 `ts`).
    pub ts_ms: Option<i64>,
}

/// One trade.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TradeUpdate {
    pub trade_id: String,
    pub market: String,
    /// YES price in $0.0001 units (the NO price is its complement).
    pub yes_price: Price,
    /// Contracts traded, in 0.01-contract units; positive.
    pub count: Size,
    /// The outcome the taker is positioned for (buy YES / sell NO ⇒ YES).
    pub taker_side: Side,
    /// Matched off book as a block trade.
    pub is_block: bool,
    /// Exchange time, Unix milliseconds (`ts_ms`, else `ts` seconds × 1000).
    pub ts_ms: Option<i64>,
}

/// A `market_lifecycle_v2` message. Optional fields are present only for the event types
/// that carry them. Timestamps are Unix seconds, as sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LifecycleUpdate {
    pub market: String,
    /// `created`, `activated`, `deactivated`, `close_date_updated`, `determined`, `settled`,
    /// `price_level_structure_updated`, `metadata_updated`, or a future type.
    pub event_type: String,
    pub open_ts: Option<i64>,
    pub close_ts: Option<i64>,
    pub determination_ts: Option<i64>,
    pub settled_ts: Option<i64>,
    /// `yes`, `no`, `scalar` or empty (on `determined`).
    pub result: Option<String>,
    /// Trading paused (`true`) or resumed (`false`) on an open market.
    pub is_deactivated: Option<bool>,
    /// E.g. `linear_cent`, `deci_cent` (on `created` and `price_level_structure_updated`).
    pub price_level_structure: Option<String>,
    /// From `additional_metadata` (on `created`).
    pub title: Option<String>,
    /// From `additional_metadata` (on `created`).
    pub event_ticker: Option<String>,
}

/// A frame or payload that could not be understood, with the market it named if any.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}{}", MarketSuffix(.market.as_deref()))]
pub struct ParseError {
    pub message: String,
    /// The payload's market ticker, when it could be read: that market needs a resnapshot.
    pub market: Option<String>,
}

struct MarketSuffix<'a>(Option<&'a str>);

impl fmt::Display for MarketSuffix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(market) => write!(f, " (market {market})"),
            None => Ok(()),
        }
    }
}

impl ParseError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            market: None,
        }
    }

    fn in_market(message: impl Into<String>, market: &str) -> Self {
        Self {
            message: message.into(),
            market: Some(market.to_owned()),
        }
    }
}

/// Parses one WebSocket text frame.
///
/// # Errors
/// Only when the text is not a JSON object with a string `type`. Otherwise the envelope is
/// always filled (`sid`/`seq`/`id` when present and integral) and an unusable payload yields
/// `Ok(Frame { body: Err(..) })`: the collector must still advance the sid's sequence and
/// resnapshot that market (`ParseError::market`).
pub fn parse_frame(text: &str) -> Result<Frame, ParseError> {
    flat::parse_flat_frame(text).map_or_else(|| parse_frame_generally(text), Ok)
}

/// [`parse_frame`] for any frame, through serde.
fn parse_frame_generally(text: &str) -> Result<Frame, ParseError> {
    // One borrowing pass. It fails only on malformed JSON, a missing or non-string
    // `type`, or a duplicated key inside `msg`; the slow path sorts those out.
    let mut decoded = Decoded::default();
    match read_frame(text, &mut decoded) {
        Ok(wire) => {
            let envelope = Envelope {
                kind: kind_name(&wire.kind),
                id: wire.id,
                sid: wire
                    .sid
                    .or(decoded.msg_sid)
                    .and_then(|sid| u32::try_from(sid).ok()),
                seq: wire.seq,
            };
            Ok(Frame {
                envelope,
                body: decoded.into_body(),
            })
        }
        Err(_) => parse_frame_slowly(text),
    }
}

/// A frame's `type` as stored in the [`Envelope`]: the known ones without an allocation.
fn kind_name(kind: &str) -> Cow<'static, str> {
    const KNOWN: [&str; 15] = [
        "orderbook_delta",
        "orderbook_snapshot",
        "trade",
        "market_lifecycle_v2",
        "event_lifecycle",
        "event_fee_update",
        "subscribed",
        "ok",
        "error",
        "unsubscribed",
        "ticker",
        "ticker_v2",
        "market_positions",
        "fill",
        "user_orders",
    ];
    KNOWN.iter().find(|known| **known == kind).map_or_else(
        || Cow::Owned(kind.to_owned()),
        |known| Cow::Borrowed(*known),
    )
}

/// Reads the frame as a `serde_json::Value` (last duplicate key wins) and decodes from that.
fn parse_frame_slowly(text: &str) -> Result<Frame, ParseError> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| ParseError::new(format!("not a JSON object: {e}")))?;
    let object = value
        .as_object()
        .ok_or_else(|| ParseError::new("not a JSON object"))?;
    let kind_text = object
        .get("type")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| ParseError::new("no string `type`"))?;
    let kind = MessageKind::of(kind_text);
    let mut decoded = Decoded::default();
    match object.get("msg") {
        None => decoded.absent(kind),
        Some(msg) => {
            if let Err(e) = decoded.decode(kind, msg) {
                decoded.body = Some(Err(ParseError::new(format!("unreadable `msg`: {e}"))));
            }
        }
    }
    let envelope = Envelope {
        kind: kind_name(kind_text),
        id: object.get("id").and_then(serde_json::Value::as_u64),
        sid: object
            .get("sid")
            .and_then(serde_json::Value::as_u64)
            .or(decoded.msg_sid)
            .and_then(|sid| u32::try_from(sid).ok()),
        seq: object.get("seq").and_then(serde_json::Value::as_u64),
    };
    Ok(Frame {
        envelope,
        body: decoded.into_body(),
    })
}

/// The [`FrameSink`] `parse_frame` decodes into: the body, and the `sid` a `subscribed` reply
/// carries inside `msg`.
#[derive(Default)]
struct Decoded {
    body: Option<Result<Body, ParseError>>,
    msg_sid: Option<u64>,
}

impl Decoded {
    fn into_body(self) -> Result<Body, ParseError> {
        self.body
            .unwrap_or_else(|| Err(ParseError::new("`msg` was not decoded")))
    }
}

impl FrameSink for Decoded {
    fn decode<'de, D: Deserializer<'de>>(
        &mut self,
        kind: MessageKind,
        msg: D,
    ) -> Result<(), D::Error> {
        let body = match kind {
            MessageKind::Delta => {
                let msg = Mapped::<KalshiDeltaMsg<'_>>::deserialize(msg)?;
                object(&msg).and_then(parse_delta).map(Body::Delta)
            }
            MessageKind::Snapshot => {
                let msg = Mapped::<KalshiSnapshotMsg<'_>>::deserialize(msg)?;
                object(&msg).and_then(parse_snapshot)
            }
            MessageKind::Trade => {
                let msg = Mapped::<KalshiTradeMsg<'_>>::deserialize(msg)?;
                object(&msg).and_then(parse_trade).map(Body::Trade)
            }
            MessageKind::Lifecycle => {
                let msg = Mapped::<KalshiLifecycleMsg<'_>>::deserialize(msg)?;
                object(&msg).and_then(parse_lifecycle).map(Body::Lifecycle)
            }
            MessageKind::EventLifecycle => {
                let msg = Mapped::<KalshiEventMsg<'_>>::deserialize(msg)?;
                object(&msg).and_then(parse_event)
            }
            MessageKind::Subscribed => {
                let msg = Mapped::<KalshiSubscribedMsg<'_>>::deserialize(msg)?;
                let msg = object(&msg);
                self.msg_sid = msg
                    .as_ref()
                    .ok()
                    .and_then(|msg| msg.sid.as_ref())
                    .and_then(Loose::as_u64);
                msg.and_then(parse_subscribed)
            }
            MessageKind::Ok => parse_ok(KalshiOkMsg::deserialize(msg)?),
            MessageKind::Error => {
                let msg = Mapped::<KalshiErrorMsg<'_>>::deserialize(msg)?;
                object(&msg).and_then(parse_error)
            }
            MessageKind::Unsubscribed | MessageKind::Ticker | MessageKind::Unknown => {
                IgnoredAny::deserialize(msg)?;
                self.absent(kind);
                return Ok(());
            }
        };
        self.body = Some(body);
        Ok(())
    }

    fn absent(&mut self, kind: MessageKind) {
        self.body = Some(match kind {
            MessageKind::Ok => Ok(Body::Ok {
                market_tickers: None,
            }),
            MessageKind::Unsubscribed => Ok(Body::Unsubscribed),
            MessageKind::Ticker => Ok(Body::Ticker),
            MessageKind::Unknown => Ok(Body::Unknown),
            _ => Err(ParseError::new("frame without `msg`")),
        });
    }
}

fn object<T>(msg: &Mapped<T>) -> Result<&T, ParseError> {
    match msg {
        Mapped::Object(msg) => Ok(msg),
        Mapped::NotAnObject(found) => {
            Err(ParseError::new(format!("`msg` is {found}, not an object")))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Field readers. Errors are plain strings here; callers attach the market.
// ---------------------------------------------------------------------------------------------

fn loose_u32(value: &Loose<'_>) -> Option<u32> {
    value.as_u64().and_then(|v| u32::try_from(v).ok())
}

fn required<'v, 'a>(
    name: &'static str,
    value: &'v Option<Loose<'a>>,
) -> Result<&'v Loose<'a>, String> {
    value.as_ref().ok_or_else(|| format!("no `{name}`"))
}

fn wrong_type(name: &str, expected: &str, found: &Loose<'_>) -> String {
    format!("`{name}` is {}, not {expected}", found.type_name())
}

fn text<'v>(name: &'static str, value: &'v Loose<'_>) -> Result<&'v str, String> {
    match value {
        Loose::Text(text) => Ok(text),
        other => Err(wrong_type(name, "a string", other)),
    }
}

fn required_text<'v>(name: &'static str, value: &'v Option<Loose<'_>>) -> Result<&'v str, String> {
    text(name, required(name, value)?)
}

fn optional_text(name: &'static str, value: &Option<Loose<'_>>) -> Result<Option<String>, String> {
    value
        .as_ref()
        .map(|v| text(name, v).map(str::to_owned))
        .transpose()
}

fn optional_int(name: &'static str, value: &Option<Loose<'_>>) -> Result<Option<i64>, String> {
    match value {
        None => Ok(None),
        Some(Loose::Int(v)) => Ok(Some(*v)),
        Some(Loose::BigUInt(v)) => Err(format!("`{name}` {v} is out of range")),
        Some(other) => Err(wrong_type(name, "an integer", other)),
    }
}

fn optional_bool(name: &'static str, value: &Option<Loose<'_>>) -> Result<Option<bool>, String> {
    match value {
        None => Ok(None),
        Some(Loose::Bool(v)) => Ok(Some(*v)),
        Some(other) => Err(wrong_type(name, "a boolean", other)),
    }
}

fn side(name: &'static str, value: &Loose<'_>) -> Result<Side, String> {
    match text(name, value)? {
        "yes" => Ok(Side::Yes),
        "no" => Ok(Side::No),
        other => Err(format!("`{name}` is {other:?}, not \"yes\" or \"no\"")),
    }
}

/// A dollar string such as `"0.4300"`.
fn price_dollars(name: &'static str, value: &Loose<'_>) -> Result<Price, String> {
    text(name, value)?
        .parse::<Price>()
        .map_err(|e| format!("`{name}`: {e}"))
}

/// A legacy integer number of cents, 0..=100.
fn price_cents(name: &'static str, value: &Loose<'_>) -> Result<Price, String> {
    match value {
        Loose::Int(cents @ 0..=100) => {
            // In range by the pattern, so the conversion and product cannot overflow.
            let cents = u32::try_from(*cents).unwrap_or(0);
            Ok(Price::from_units(cents * (Price::SCALE / 100)))
        }
        Loose::Int(cents) => Err(format!("`{name}` {cents} is outside 0..=100 cents")),
        Loose::BigUInt(cents) => Err(format!("`{name}` {cents} is outside 0..=100 cents")),
        other => Err(wrong_type(name, "an integer number of cents", other)),
    }
}

/// A fixed-point contract string such as `"-100.00"`.
fn size_fp(name: &'static str, value: &Loose<'_>) -> Result<Size, String> {
    text(name, value)?
        .parse::<Size>()
        .map_err(|e| format!("`{name}`: {e}"))
}

/// A legacy integer number of whole contracts.
fn size_contracts(name: &'static str, value: &Loose<'_>) -> Result<Size, String> {
    match value {
        Loose::Int(count) => count
            .checked_mul(Size::SCALE)
            .map(Size::from_units)
            .ok_or_else(|| format!("`{name}` {count} is out of range")),
        Loose::BigUInt(count) => Err(format!("`{name}` {count} is out of range")),
        other => Err(wrong_type(name, "an integer number of contracts", other)),
    }
}

/// A book level must lie strictly between $0 and $1: nobody bids $0, and a $1 bid cannot rest.
fn book_price(name: &'static str, price: Price) -> Result<Price, String> {
    if price.units() == 0 || price >= Price::ONE_DOLLAR {
        Err(format!(
            "`{name}` {price} is outside $0.0001..=$0.9999 for a book level"
        ))
    } else {
        Ok(price)
    }
}

/// Exchange time in Unix ms: `ts_ms`, else `ts` as integer seconds or an RFC 3339 string.
fn timestamp_ms(ts_ms: &Option<Loose<'_>>, ts: &Option<Loose<'_>>) -> Result<Option<i64>, String> {
    if let Some(ms) = optional_int("ts_ms", ts_ms)? {
        return Ok(Some(ms));
    }
    match ts {
        None => Ok(None),
        Some(Loose::Int(secs)) => secs
            .checked_mul(1000)
            .map(Some)
            .ok_or_else(|| format!("`ts` {secs} is out of range")),
        Some(Loose::Text(text)) => rfc3339_unix_ns(text)
            .and_then(|ns| i64::try_from(ns.div_euclid(1_000_000)).ok())
            .map(Some)
            .ok_or_else(|| format!("`ts` {text:?} is not an RFC 3339 time")),
        Some(other) => Err(wrong_type("ts", "a time", other)),
    }
}

// ---------------------------------------------------------------------------------------------
// Payloads
// ---------------------------------------------------------------------------------------------

/// The three historical encodings of snapshot levels.
#[derive(Clone, Copy)]
enum LevelForm {
    /// `*_dollars_fp`: `[price_dollars, count_fp]` strings.
    FixedPoint,
    /// `*_dollars` (March 2026): `[price_dollars, whole contracts]`.
    Dollars,
    /// `yes` / `no` (legacy): `[price_cents, whole contracts]`.
    Cents,
}

fn parse_snapshot(msg: &KalshiSnapshotMsg<'_>) -> Result<Body, ParseError> {
    let market = required_text("market_ticker", &msg.market_ticker).map_err(ParseError::new)?;
    let yes = ladder(
        Side::Yes,
        [
            ("yes_dollars_fp", &msg.yes_dollars_fp, LevelForm::FixedPoint),
            ("yes_dollars", &msg.yes_dollars, LevelForm::Dollars),
            ("yes", &msg.yes, LevelForm::Cents),
        ],
    );
    let no = ladder(
        Side::No,
        [
            ("no_dollars_fp", &msg.no_dollars_fp, LevelForm::FixedPoint),
            ("no_dollars", &msg.no_dollars, LevelForm::Dollars),
            ("no", &msg.no, LevelForm::Cents),
        ],
    );
    let levels = yes
        .and_then(|yes| no.map(|no| yes.into_iter().chain(no)))
        .map_err(|message| ParseError::in_market(message, market))?;
    Ok(Body::Snapshot {
        market: market.to_owned(),
        book: Book::from_levels(levels),
    })
}

/// Reads one side from the first encoding present (absent everywhere ⇒ no bids), checking
/// every level and rejecting duplicates. Returns the levels ascending by price.
fn ladder(
    side: Side,
    forms: [(&'static str, &Option<Listed<Level<'_>>>, LevelForm); 3],
) -> Result<Vec<(Side, Price, Size)>, String> {
    let Some((name, listed, form)) = forms
        .into_iter()
        .find_map(|(name, listed, form)| listed.as_ref().map(|listed| (name, listed, form)))
    else {
        return Ok(Vec::new());
    };
    let levels = match listed {
        Listed::Items(levels) => levels,
        Listed::NotAnArray(found) => return Err(format!("`{name}` is {found}, not an array")),
    };
    let mut out = Vec::with_capacity(levels.len());
    for level in levels {
        let (price, count) = match level {
            Level::Pair(price, count) => (price, count),
            Level::Malformed(found) => {
                return Err(format!(
                    "`{name}` has a level that is {found}, not [price, count]"
                ));
            }
        };
        let price = match form {
            LevelForm::FixedPoint | LevelForm::Dollars => price_dollars(name, price)?,
            LevelForm::Cents => price_cents(name, price)?,
        };
        let price = book_price(name, price)?;
        let size = match form {
            LevelForm::FixedPoint => size_fp(name, count)?,
            LevelForm::Dollars | LevelForm::Cents => size_contracts(name, count)?,
        };
        if size.units() < 0 {
            return Err(format!("`{name}` level {price} has size {size}, negative"));
        }
        // A level with nothing resting is no level (as a delta to zero removes one).
        if size.units() > 0 {
            out.push((side, price, size));
        }
    }
    // Kalshi sends ascending prices; sort anyway, then refuse a book with a repeated level.
    out.sort_unstable_by_key(|&(_, price, _)| price);
    if let Some(pair) = out.windows(2).find(|pair| pair[0].1 == pair[1].1) {
        return Err(format!("`{name}` lists level {} twice", pair[0].1));
    }
    Ok(out)
}

fn parse_delta(msg: &KalshiDeltaMsg<'_>) -> Result<DeltaUpdate, ParseError> {
    let market = required_text("market_ticker", &msg.market_ticker).map_err(ParseError::new)?;
    let read = || -> Result<DeltaUpdate, String> {
        let side = side("side", required("side", &msg.side)?)?;
        let price = match (&msg.price_dollars, &msg.price) {
            (Some(dollars), _) => price_dollars("price_dollars", dollars)?,
            (None, Some(cents)) => price_cents("price", cents)?,
            (None, None) => return Err("no `price_dollars`".to_owned()),
        };
        let price = book_price("price_dollars", price)?;
        let delta = match (&msg.delta_fp, &msg.delta) {
            (Some(fp), _) => size_fp("delta_fp", fp)?,
            (None, Some(count)) => size_contracts("delta", count)?,
            (None, None) => return Err("no `delta_fp`".to_owned()),
        };
        Ok(DeltaUpdate {
            market: market.to_owned(),
            side,
            price,
            delta,
            ts_ms: timestamp_ms(&msg.ts_ms, &msg.ts)?,
        })
    };
    read().map_err(|message| ParseError::in_market(message, market))
}

fn parse_trade(msg: &KalshiTradeMsg<'_>) -> Result<TradeUpdate, ParseError> {
    let market = required_text("market_ticker", &msg.market_ticker).map_err(ParseError::new)?;
    let read = || -> Result<TradeUpdate, String> {
        let trade_id = required_text("trade_id", &msg.trade_id)?.to_owned();
        let yes_price = match (&msg.yes_price_dollars, &msg.yes_price) {
            (Some(dollars), _) => price_dollars("yes_price_dollars", dollars)?,
            (None, Some(cents)) => price_cents("yes_price", cents)?,
            (None, None) => return Err("no `yes_price_dollars`".to_owned()),
        };
        let count = match (&msg.count_fp, &msg.count) {
            (Some(fp), _) => size_fp("count_fp", fp)?,
            (None, Some(count)) => size_contracts("count", count)?,
            (None, None) => return Err("no `count_fp`".to_owned()),
        };
        if count.units() <= 0 {
            return Err(format!("`count_fp` {count} is not positive"));
        }
        let taker_side = match (
            &msg.taker_outcome_side,
            &msg.taker_book_side,
            &msg.taker_side,
        ) {
            (Some(outcome), _, _) => side("taker_outcome_side", outcome)?,
            (None, Some(book), _) => match text("taker_book_side", book)? {
                "bid" => Side::Yes,
                "ask" => Side::No,
                other => {
                    return Err(format!(
                        "`taker_book_side` is {other:?}, not \"bid\" or \"ask\""
                    ));
                }
            },
            (None, None, Some(legacy)) => side("taker_side", legacy)?,
            (None, None, None) => return Err("no `taker_outcome_side`".to_owned()),
        };
        Ok(TradeUpdate {
            trade_id,
            market: market.to_owned(),
            yes_price,
            count,
            taker_side,
            is_block: optional_bool("is_block_trade", &msg.is_block_trade)?.unwrap_or(false),
            ts_ms: timestamp_ms(&msg.ts_ms, &msg.ts)?,
        })
    };
    read().map_err(|message| ParseError::in_market(message, market))
}

fn parse_lifecycle(msg: &KalshiLifecycleMsg<'_>) -> Result<LifecycleUpdate, ParseError> {
    let market = required_text("market_ticker", &msg.market_ticker).map_err(ParseError::new)?;
    let read = || -> Result<LifecycleUpdate, String> {
        let (title, event_ticker) = match &msg.additional_metadata {
            None => (None, None),
            Some(Mapped::Object(meta)) => (
                optional_text("additional_metadata.title", &meta.title)?,
                optional_text("additional_metadata.event_ticker", &meta.event_ticker)?,
            ),
            Some(Mapped::NotAnObject(found)) => {
                return Err(format!("`additional_metadata` is {found}, not an object"));
            }
        };
        Ok(LifecycleUpdate {
            market: market.to_owned(),
            event_type: required_text("event_type", &msg.event_type)?.to_owned(),
            open_ts: optional_int("open_ts", &msg.open_ts)?,
            close_ts: optional_int("close_ts", &msg.close_ts)?,
            determination_ts: optional_int("determination_ts", &msg.determination_ts)?,
            settled_ts: optional_int("settled_ts", &msg.settled_ts)?,
            result: optional_text("result", &msg.result)?,
            is_deactivated: optional_bool("is_deactivated", &msg.is_deactivated)?,
            price_level_structure: optional_text(
                "price_level_structure",
                &msg.price_level_structure,
            )?,
            title,
            event_ticker,
        })
    };
    read().map_err(|message| ParseError::in_market(message, market))
}

fn parse_event(msg: &KalshiEventMsg<'_>) -> Result<Body, ParseError> {
    let event_ticker = required_text("event_ticker", &msg.event_ticker).map_err(ParseError::new)?;
    Ok(Body::EventLifecycle {
        event_ticker: event_ticker.to_owned(),
    })
}

fn parse_subscribed(msg: &KalshiSubscribedMsg<'_>) -> Result<Body, ParseError> {
    let channel = required_text("channel", &msg.channel).map_err(ParseError::new)?;
    Ok(Body::Subscribed {
        channel: channel.to_owned(),
    })
}

fn parse_ok(msg: KalshiOkMsg<'_>) -> Result<Body, ParseError> {
    match msg {
        KalshiOkMsg::Tickers(msg) => {
            let market_tickers = match msg.market_tickers {
                None => None,
                Some(listed) => Some(ticker_list("market_tickers", &listed)?),
            };
            Ok(Body::Ok { market_tickers })
        }
        KalshiOkMsg::Subscriptions(entries) => {
            let mut subscriptions = Vec::with_capacity(entries.len());
            for entry in entries {
                let Mapped::Object(entry) = entry else {
                    return Err(ParseError::new(
                        "a `list_subscriptions` entry is not an object",
                    ));
                };
                let channel = required_text("channel", &entry.channel).map_err(ParseError::new)?;
                let sid =
                    entry.sid.as_ref().and_then(loose_u32).ok_or_else(|| {
                        ParseError::new(format!("no integer `sid` for {channel}"))
                    })?;
                subscriptions.push((channel.to_owned(), sid));
            }
            Ok(Body::ListSubscriptions(subscriptions))
        }
        KalshiOkMsg::Other(found) => Err(ParseError::new(format!(
            "`ok` `msg` is {found}, not an object or array"
        ))),
    }
}

fn ticker_list(name: &'static str, listed: &Listed<Loose<'_>>) -> Result<Vec<String>, ParseError> {
    match listed {
        Listed::Items(items) => items
            .iter()
            .map(|item| text(name, item).map(str::to_owned))
            .collect::<Result<_, _>>()
            .map_err(ParseError::new),
        Listed::NotAnArray(found) => Err(ParseError::new(format!(
            "`{name}` is {found}, not an array"
        ))),
    }
}

fn parse_error(msg: &KalshiErrorMsg<'_>) -> Result<Body, ParseError> {
    let code = match required("code", &msg.code).map_err(ParseError::new)? {
        Loose::Int(code) => u32::try_from(*code)
            .map_err(|_| ParseError::new(format!("error `code` {code} is out of range")))?,
        other => return Err(ParseError::new(wrong_type("code", "an integer", other))),
    };
    let message = optional_text("msg", &msg.msg)
        .map_err(ParseError::new)?
        .unwrap_or_default();
    let mut market_tickers = Vec::new();
    if let Some(ticker) =
        optional_text("market_ticker", &msg.market_ticker).map_err(ParseError::new)?
    {
        market_tickers.push(ticker);
    }
    if let Some(listed) = &msg.market_tickers {
        market_tickers.extend(ticker_list("market_tickers", listed)?);
    }
    Ok(Body::Error {
        code,
        message,
        market_tickers,
    })
}

// ---------------------------------------------------------------------------------------------
// REST
// ---------------------------------------------------------------------------------------------

/// Converts one REST `Market` object into the market's metadata. Only `ticker` is required;
/// other fields of an unexpected type read as empty. The series comes from the object's
/// `series_ticker` when present, else from the filter used to list it (`series_ticker`).
/// `price_ranges` are kept as compact JSON (`[{"end":"1.0000","start":"0.0000","step":"0.0100"}]`);
/// an object without them but with the deprecated integer-cent `tick_size` gets the one
/// range that tick implies, and one with neither gets `[]`.
///
/// # Errors
/// [`ParseError`] if `ticker` is missing or not a string.
pub(crate) fn parse_market(
    market: &KalshiMarket<'_>,
    series_ticker: Option<&str>,
) -> Result<MarketMeta, ParseError> {
    fn string(value: &Option<Loose<'_>>) -> Option<String> {
        match value {
            Some(Loose::Text(text)) => Some(text.clone().into_owned()),
            _ => None,
        }
    }
    let ticker = required_text("ticker", &market.ticker).map_err(ParseError::new)?;
    let time_us = |value: &Option<Loose<'_>>| match value {
        Some(Loose::Text(text)) => {
            rfc3339_unix_ns(text).and_then(|ns| i64::try_from(ns.div_euclid(1000)).ok())
        }
        _ => None,
    };
    let subtitle = string(&market.yes_sub_title)
        .filter(|s| !s.is_empty())
        .or_else(|| string(&market.subtitle))
        .unwrap_or_default();
    let legacy_tick = match &market.tick_size {
        Some(Loose::Int(cents @ 1..=100)) => price_cents("tick_size", &Loose::Int(*cents)).ok(),
        _ => None,
    };
    let price_ranges_json = match (&market.price_ranges, legacy_tick) {
        (Some(ranges @ serde_json::Value::Array(_)), _) => ranges.to_string(),
        (_, Some(tick)) => serde_json::json!([
            {
                "start": Price::from_units(0).to_string(),
                "end": Price::ONE_DOLLAR.to_string(),
                "step": tick.to_string(),
            }
        ])
        .to_string(),
        _ => "[]".to_owned(),
    };
    Ok(MarketMeta {
        ticker: ticker.to_owned(),
        event_ticker: string(&market.event_ticker).unwrap_or_default(),
        series_ticker: string(&market.series_ticker)
            .or_else(|| series_ticker.map(str::to_owned))
            .unwrap_or_default(),
        title: string(&market.title).unwrap_or_default(),
        subtitle,
        status: string(&market.status).unwrap_or_default(),
        open_time_us: time_us(&market.open_time),
        close_time_us: time_us(&market.close_time),
        price_level_structure: string(&market.price_level_structure).unwrap_or_default(),
        price_ranges_json,
    })
}

// ---------------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------------

/// Parses an RFC 3339 date-time (`2026-08-07T06:46:28.97871Z`, `…+02:00`; any number of
/// fraction digits, kept to the nanosecond) into Unix nanoseconds.
pub(crate) fn rfc3339_unix_ns(text: &str) -> Option<i128> {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(range)?;
        part.iter().try_fold(0u32, |acc, &d| {
            d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0'))
        })
    };
    let sep = |i: usize, allowed: &[u8]| b.get(i).is_some_and(|c| allowed.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let year = i64::from(digits(0..4)?);
    let month = digits(5..7)?;
    let day = digits(8..10)?;
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut nanos: i128 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        let mut scale: i128 = 100_000_000;
        while let Some(d) = b.get(i).filter(|d| d.is_ascii_digit()) {
            nanos += i128::from(d - b'0') * scale;
            scale /= 10;
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    let offset_secs: i64 = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() && sep(i + 3, b":") => {
            let (h, m) = (digits(i + 1..i + 3)?, digits(i + 4..i + 6)?);
            if h > 23 || m > 59 {
                return None;
            }
            let secs = i64::from(h * 3600 + m * 60);
            if sign == b'-' { -secs } else { secs }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_secs;
    Some(i128::from(secs) * 1_000_000_000 + nanos)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::kalshi::messages::KalshiMarketResponse;

    const STREAM: &str = include_str!("../../tests/fixtures/kalshi/ws_orderbook_stream.jsonl");
    const TRADES: &str = include_str!("../../tests/fixtures/kalshi/kalshi_trade.jsonl");
    const TICKERS: &str = include_str!("../../tests/fixtures/kalshi/kalshi_ticker.jsonl");
    const MARKET_SINGLE: &str = include_str!("../../tests/fixtures/kalshi/market_single.json");

    fn p(units: u32) -> Price {
        Price::from_units(units)
    }
    fn s(units: i64) -> Size {
        Size::from_units(units)
    }

    fn body(text: &str) -> Result<Body, ParseError> {
        parse_frame(text).expect("a frame").body
    }

    fn snapshot_book(text: &str) -> Book {
        match body(text) {
            Ok(Body::Snapshot { book, .. }) => book,
            other => panic!("not a snapshot: {other:?}"),
        }
    }

    /// Every recorded frame parses; replaying them gives books that never go negative, and
    /// the sid's sequence is gapless across snapshots, deltas and `ok` replies.
    #[test]
    fn recorded_stream_replays_cleanly() {
        let mut books: HashMap<String, Book> = HashMap::new();
        let mut next_seq: HashMap<u32, u64> = HashMap::new();
        let mut kinds: HashMap<String, usize> = HashMap::new();
        let mut subscribed_markets: Vec<String> = Vec::new();
        for (line, text) in STREAM.lines().enumerate() {
            let frame = parse_frame(text).unwrap_or_else(|e| panic!("line {line}: {e}"));
            *kinds.entry(frame.envelope.kind.to_string()).or_default() += 1;
            if let (Some(sid), Some(seq)) = (frame.envelope.sid, frame.envelope.seq) {
                let expected = next_seq.entry(sid).or_insert(1);
                assert_eq!(seq, *expected, "line {line}: gap on sid {sid}");
                *expected = seq + 1;
            }
            match frame.body.unwrap_or_else(|e| panic!("line {line}: {e}")) {
                Body::Subscribed { channel } => {
                    assert_eq!(channel, "orderbook_delta");
                    assert_eq!(frame.envelope.sid, Some(1));
                    assert_eq!(frame.envelope.id, Some(2));
                }
                Body::Ok { market_tickers } => {
                    let tickers = market_tickers.expect("ok lists the markets");
                    assert!(tickers.len() > subscribed_markets.len(), "line {line}");
                    subscribed_markets = tickers;
                }
                Body::Snapshot { market, book } => {
                    assert!(book.levels().all(|(_, _, size)| size.units() > 0));
                    books.insert(market, book);
                }
                Body::Delta(delta) => {
                    assert!(delta.ts_ms.is_some());
                    books
                        .get_mut(&delta.market)
                        .unwrap_or_else(|| panic!("line {line}: delta before snapshot"))
                        .apply_delta(delta.side, delta.price, delta.delta)
                        .unwrap_or_else(|e| panic!("line {line}: {e}"));
                }
                other => panic!("line {line}: unexpected {other:?}"),
            }
        }
        assert_eq!(kinds["subscribed"], 1);
        assert_eq!(kinds["orderbook_snapshot"], 12);
        assert_eq!(kinds["ok"], 11);
        assert_eq!(kinds["orderbook_delta"], 245);
        assert_eq!(next_seq[&1], 269, "seq 1..=268");
        assert_eq!(books.len(), 12);
        assert_eq!(subscribed_markets.len(), 12);
        for book in books.values() {
            let (yes, no) = (book.best_bid(Side::Yes), book.best_bid(Side::No));
            let (Some((yes, _)), Some((no, _))) = (yes, no) else {
                panic!("a side is empty");
            };
            assert!(yes.units() + no.units() < Price::SCALE, "crossed book");
        }
    }

    #[test]
    fn recorded_delta_reads_exactly() {
        let text = STREAM.lines().find(|l| l.contains(r#""seq":24,"#)).unwrap();
        let frame = parse_frame(text).unwrap();
        assert_eq!(
            frame.envelope,
            Envelope {
                kind: "orderbook_delta".into(),
                id: None,
                sid: Some(1),
                seq: Some(24),
            }
        );
        assert_eq!(
            frame.body,
            Ok(Body::Delta(DeltaUpdate {
                market: "KXMLBGAME-26AUG071840NYMPIT-NYM".to_owned(),
                side: Side::Yes,
                price: p(4300),
                delta: s(-10_000),
                ts_ms: Some(1_786_085_188_978),
            }))
        );
    }

    /// JSON does not order keys: a frame whose `msg` precedes `type` reads the same.
    #[test]
    fn key_order_does_not_matter() {
        for text in STREAM.lines().take(40) {
            let value: serde_json::Value = serde_json::from_str(text).unwrap();
            let mut keys: Vec<_> = value.as_object().unwrap().iter().collect();
            keys.sort_by_key(|(key, _)| key.as_str() != "msg");
            let reordered = format!(
                "{{{}}}",
                keys.iter()
                    .map(|(k, v)| format!("{:?}:{v}", k))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            assert!(reordered.starts_with(r#"{"msg""#), "{reordered}");
            assert_eq!(parse_frame(&reordered), parse_frame(text));
        }
    }

    #[test]
    fn recorded_legacy_trades_read() {
        let trades: Vec<TradeUpdate> = TRADES
            .lines()
            .map(|text| match body(text) {
                Ok(Body::Trade(trade)) => trade,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(trades.len(), 10);
        assert_eq!(
            trades[0],
            TradeUpdate {
                trade_id: "f851595a-6d92-424e-09f8-0d2669de70ae".to_owned(),
                market: "KXSOLD-26FEB1217-T79.9999".to_owned(),
                yes_price: p(7700),
                count: s(7500),
                taker_side: Side::Yes,
                is_block: false,
                ts_ms: Some(1_770_897_981_000),
            }
        );
        assert_eq!(trades[1].taker_side, Side::No);
        let frame = parse_frame(TRADES.lines().next().unwrap()).unwrap();
        assert_eq!(
            (frame.envelope.sid, frame.envelope.seq),
            (Some(2), Some(10))
        );
    }

    #[test]
    fn recorded_tickers_are_ignored_without_seq() {
        for text in TICKERS.lines() {
            let frame = parse_frame(text).unwrap();
            assert_eq!(frame.body, Ok(Body::Ticker));
            assert_eq!((frame.envelope.sid, frame.envelope.seq), (Some(1), None));
        }
    }

    #[test]
    fn current_trade_prefers_outcome_side_and_ms() {
        let text = r#"{"type":"trade","sid":3,"seq":57,"msg":{"trade_id":"t","market_ticker":"M","yes_price_dollars":"0.6100","no_price_dollars":"0.3900","count_fp":"90.55","taker_side":"yes","taker_outcome_side":"no","taker_book_side":"ask","is_block_trade":true,"ts":1770897985,"ts_ms":1770897985120}}"#;
        let Ok(Body::Trade(trade)) = body(text) else {
            panic!()
        };
        assert_eq!(trade.taker_side, Side::No);
        assert_eq!(trade.count, s(9055));
        assert!(trade.is_block);
        assert_eq!(trade.ts_ms, Some(1_770_897_985_120));
        let book_side_only = r#"{"type":"trade","sid":3,"seq":58,"msg":{"trade_id":"t","market_ticker":"M","yes_price_dollars":"0.0010","count_fp":"1.00","taker_book_side":"bid"}}"#;
        let Ok(Body::Trade(trade)) = body(book_side_only) else {
            panic!()
        };
        assert_eq!(
            (trade.taker_side, trade.yes_price, trade.ts_ms),
            (Side::Yes, p(10), None)
        );
        for bad in [
            r#"{"type":"trade","sid":3,"seq":59,"msg":{"trade_id":"t","market_ticker":"M","yes_price_dollars":"0.5","count_fp":"0.00","taker_outcome_side":"yes"}}"#,
            r#"{"type":"trade","sid":3,"seq":59,"msg":{"trade_id":"t","market_ticker":"M","yes_price_dollars":"0.5","count_fp":"1.00"}}"#,
            r#"{"type":"trade","sid":3,"seq":59,"msg":{"trade_id":"t","market_ticker":"M","yes_price_dollars":"1.5","count_fp":"1.00","taker_side":"yes"}}"#,
            r#"{"type":"trade","sid":3,"seq":59,"msg":{"market_ticker":"M","yes_price_dollars":"0.5","count_fp":"1.00","taker_side":"yes"}}"#,
        ] {
            let frame = parse_frame(bad).unwrap();
            assert_eq!(frame.envelope.seq, Some(59));
            let error = frame.body.unwrap_err();
            assert_eq!(error.market.as_deref(), Some("M"), "{error}");
        }
    }

    #[test]
    fn snapshot_forms_and_preference() {
        // Legacy integer cents (≤ Aug 2025).
        let legacy = snapshot_book(
            r#"{"type":"orderbook_snapshot","sid":1,"seq":1,"msg":{"market_ticker":"M","yes":[[1,200],[43,10]],"no":[[55,5]]}}"#,
        );
        assert_eq!(
            legacy,
            Book::from_levels([
                (Side::Yes, p(100), s(20_000)),
                (Side::Yes, p(4300), s(1000)),
                (Side::No, p(5500), s(500)),
            ])
        );
        // March 2026: three encodings side by side; the `_fp` strings win (they carry the
        // sub-cent price and fractional size the others cannot).
        let march = snapshot_book(
            r#"{"type":"orderbook_snapshot","sid":1,"seq":1,"msg":{"market_ticker":"M","market_id":"x","yes":[[43,10]],"yes_dollars":[["0.4300",10]],"yes_dollars_fp":[["0.4310","10.50"]],"no":[[55,5]],"no_dollars":[["0.5500",5]]}}"#,
        );
        assert_eq!(
            march,
            Book::from_levels([(Side::Yes, p(4310), s(1050)), (Side::No, p(5500), s(500)),])
        );
        // Current: absent side keys mean no bids; neither side is the close-of-market book.
        let one_sided = snapshot_book(
            r#"{"type":"orderbook_snapshot","sid":1,"seq":2,"msg":{"market_ticker":"M","market_id":"x","no_dollars_fp":[["0.0010","1.00"]]}}"#,
        );
        assert_eq!(one_sided.best_bid(Side::Yes), None);
        assert_eq!(one_sided.best_bid(Side::No), Some((p(10), s(100))));
        let empty = snapshot_book(
            r#"{"type":"orderbook_snapshot","sid":1,"seq":3,"msg":{"market_ticker":"M","market_id":"x"}}"#,
        );
        assert_eq!(empty, Book::default());
        let empty_arrays = snapshot_book(
            r#"{"type":"orderbook_snapshot","sid":1,"seq":3,"msg":{"market_ticker":"M","yes_dollars_fp":[],"no_dollars_fp":null}}"#,
        );
        assert_eq!(empty_arrays, Book::default());
        // A level with nothing resting is skipped, not a reason to refuse the whole book
        // (which would only be asked for again, and refused again).
        let zero = snapshot_book(
            r#"{"type":"orderbook_snapshot","sid":1,"seq":3,"msg":{"market_ticker":"M","yes_dollars_fp":[["0.4200","0.00"],["0.4300","2.50"]]}}"#,
        );
        assert_eq!(
            zero.levels().collect::<Vec<_>>(),
            vec![(Side::Yes, p(4300), s(250))]
        );
        // Out of order levels are sorted.
        let unsorted = snapshot_book(
            r#"{"type":"orderbook_snapshot","sid":1,"seq":4,"msg":{"market_ticker":"M","yes_dollars_fp":[["0.5000","1.00"],["0.1000","2.00"]]}}"#,
        );
        assert_eq!(
            unsorted.levels().collect::<Vec<_>>(),
            vec![(Side::Yes, p(1000), s(200)), (Side::Yes, p(5000), s(100))]
        );
    }

    #[test]
    fn bad_snapshots_are_errors_never_guessed_books() {
        for levels in [
            r#"[["0.4300","1.00"],["0.4300","2.00"]]"#,
            r#"[["0.4300","-1.00"]]"#,
            r#"[["0.0000","1.00"]]"#,
            r#"[["1.0000","1.00"]]"#,
            r#"[["1.5000","1.00"]]"#,
            r#"[["0.43001","1.00"]]"#,
            r#"[["abc","1.00"]]"#,
            r#"[["0.4300","1.001"]]"#,
            r#"[[0.43,"1.00"]]"#,
            r#"[["0.4300"]]"#,
            r#"[["0.4300","1.00","x"]]"#,
            r#"[{"price":"0.43"}]"#,
            r#"{"0.43":"1.00"}"#,
            r#""0.43""#,
        ] {
            let text = format!(
                r#"{{"type":"orderbook_snapshot","sid":4,"seq":9,"msg":{{"market_ticker":"M","yes_dollars_fp":{levels}}}}}"#
            );
            let frame = parse_frame(&text).unwrap();
            assert_eq!((frame.envelope.sid, frame.envelope.seq), (Some(4), Some(9)));
            let error = frame.body.expect_err(levels);
            assert_eq!(error.market.as_deref(), Some("M"), "{levels}: {error}");
        }
        let legacy_bad = r#"{"type":"orderbook_snapshot","sid":1,"seq":1,"msg":{"market_ticker":"M","yes":[[100,1]]}}"#;
        assert!(body(legacy_bad).is_err());
    }

    #[test]
    fn delta_forms() {
        // ≤ Aug 2025: integer cents and contracts, RFC 3339 `ts` only.
        let legacy = r#"{"type":"orderbook_delta","sid":1,"seq":5,"msg":{"market_ticker":"M","price":43,"delta":-10,"side":"no","ts":"2025-08-01T12:00:00.5Z"}}"#;
        assert_eq!(
            body(legacy),
            Ok(Body::Delta(DeltaUpdate {
                market: "M".to_owned(),
                side: Side::No,
                price: p(4300),
                delta: s(-1000),
                ts_ms: Some(1_754_049_600_500),
            }))
        );
        // March 2026: both; the strings win.
        let march = r#"{"type":"orderbook_delta","sid":1,"seq":6,"msg":{"market_ticker":"M","market_id":"x","price":43,"price_dollars":"0.4350","delta":-10,"delta_fp":"-10.25","side":"yes"}}"#;
        let Ok(Body::Delta(delta)) = body(march) else {
            panic!()
        };
        assert_eq!(
            (delta.price, delta.delta, delta.ts_ms),
            (p(4350), s(-1025), None)
        );
        for bad in [
            r#"{"market_ticker":"M","price_dollars":"0.43","delta_fp":"1.00","side":"maybe"}"#,
            r#"{"market_ticker":"M","price_dollars":"0.43","delta_fp":"1.00"}"#,
            r#"{"market_ticker":"M","price_dollars":"0","delta_fp":"1.00","side":"yes"}"#,
            r#"{"market_ticker":"M","price_dollars":"0.43","delta_fp":1,"side":"yes"}"#,
            r#"{"market_ticker":"M","delta_fp":"1.00","side":"yes"}"#,
            r#"{"market_ticker":"M","price_dollars":"0.43","delta_fp":"1.00","side":"yes","ts_ms":"x"}"#,
            r#"{"market_ticker":"M","price_dollars":"0.43","delta_fp":"1.00","side":"yes","ts":"yesterday"}"#,
        ] {
            let text = format!(r#"{{"type":"orderbook_delta","sid":2,"seq":7,"msg":{bad}}}"#);
            let frame = parse_frame(&text).unwrap();
            assert_eq!(frame.envelope.seq, Some(7));
            let error = frame.body.expect_err(bad);
            assert_eq!(error.market.as_deref(), Some("M"), "{bad}: {error}");
        }
        let no_market = r#"{"type":"orderbook_delta","sid":2,"seq":8,"msg":{"price_dollars":"0.43","delta_fp":"1.00","side":"yes"}}"#;
        assert_eq!(body(no_market).unwrap_err().market, None);
    }

    #[test]
    fn command_replies() {
        let frame =
            parse_frame(r#"{"type":"subscribed","id":1,"msg":{"channel":"trade","sid":2}}"#)
                .unwrap();
        assert_eq!((frame.envelope.id, frame.envelope.sid), (Some(1), Some(2)));
        assert_eq!(
            frame.body,
            Ok(Body::Subscribed {
                channel: "trade".to_owned()
            })
        );
        assert_eq!(
            body(r#"{"type":"ok","id":3,"sid":1,"seq":4,"msg":{"market_tickers":["A","B"]}}"#),
            Ok(Body::Ok {
                market_tickers: Some(vec!["A".to_owned(), "B".to_owned()])
            })
        );
        assert_eq!(
            body(r#"{"type":"ok","id":3,"sid":1,"seq":4}"#),
            Ok(Body::Ok {
                market_tickers: None
            })
        );
        assert_eq!(
            body(r#"{"type":"ok","id":3,"sid":1,"seq":4,"msg":{}}"#),
            Ok(Body::Ok {
                market_tickers: None
            })
        );
        assert_eq!(
            body(
                r#"{"type":"ok","id":9,"msg":[{"channel":"orderbook_delta","sid":1},{"channel":"trade","sid":2}]}"#
            ),
            Ok(Body::ListSubscriptions(vec![
                ("orderbook_delta".to_owned(), 1),
                ("trade".to_owned(), 2)
            ]))
        );
        let unsubscribed =
            parse_frame(r#"{"type":"unsubscribed","id":7,"sid":1,"seq":4130}"#).unwrap();
        assert_eq!(unsubscribed.body, Ok(Body::Unsubscribed));
        assert_eq!(unsubscribed.envelope.seq, Some(4130));
        assert_eq!(
            body(r#"{"type":"error","id":12,"msg":{"code":14,"msg":"Market Ticker required"}}"#),
            Ok(Body::Error {
                code: 14,
                message: "Market Ticker required".to_owned(),
                market_tickers: vec![],
            })
        );
        let scoped = parse_frame(
            r#"{"type":"error","sid":3,"seq":17,"msg":{"code":25,"msg":"Subscription buffer overflow","market_ticker":"A","market_tickers":["B"]}}"#,
        )
        .unwrap();
        assert_eq!(
            (scoped.envelope.sid, scoped.envelope.seq),
            (Some(3), Some(17))
        );
        assert_eq!(
            scoped.body,
            Ok(Body::Error {
                code: 25,
                message: "Subscription buffer overflow".to_owned(),
                market_tickers: vec!["A".to_owned(), "B".to_owned()],
            })
        );
        assert!(body(r#"{"type":"error","msg":{"msg":"no code"}}"#).is_err());
        assert!(body(r#"{"type":"ok","msg":[{"channel":"x"}]}"#).is_err());
        assert!(body(r#"{"type":"ok","msg":"fine"}"#).is_err());
    }

    #[test]
    fn lifecycle_messages() {
        let created = r#"{"type":"market_lifecycle_v2","sid":4,"seq":1,"msg":{"market_ticker":"M","event_type":"created","exchange_index":0,"open_ts":1778680000,"close_ts":1778680900,"price_level_structure":"deci_cent","price_ranges":[{"start":"0.0000","end":"1.0000","step":"0.0010"}],"additional_metadata":{"name":"n","title":"Bitcoin above 100k?","yes_sub_title":"y","no_sub_title":"n","rules_primary":"r","rules_secondary":"r","can_close_early":true,"event_ticker":"EV","expected_expiration_ts":1778681000,"strike_type":"greater","floor_strike":99999.99,"custom_strike":{"a":1}}}}"#;
        assert_eq!(
            body(created),
            Ok(Body::Lifecycle(LifecycleUpdate {
                market: "M".to_owned(),
                event_type: "created".to_owned(),
                open_ts: Some(1_778_680_000),
                close_ts: Some(1_778_680_900),
                determination_ts: None,
                settled_ts: None,
                result: None,
                is_deactivated: None,
                price_level_structure: Some("deci_cent".to_owned()),
                title: Some("Bitcoin above 100k?".to_owned()),
                event_ticker: Some("EV".to_owned()),
            }))
        );
        let determined = r#"{"type":"market_lifecycle_v2","sid":4,"seq":118,"msg":{"market_ticker":"M","event_type":"determined","determination_ts":1778680812,"result":"yes","settlement_value":"1.0000"}}"#;
        let Ok(Body::Lifecycle(update)) = body(determined) else {
            panic!()
        };
        assert_eq!(update.result.as_deref(), Some("yes"));
        assert_eq!(update.determination_ts, Some(1_778_680_812));
        let metadata = r#"{"type":"market_lifecycle_v2","sid":13,"seq":5,"msg":{"event_type":"metadata_updated","market_ticker":"KXBTC-25APR30-T0915-B95000","strike_type":"between","floor_strike":95000,"cap_strike":95250}}"#;
        let Ok(Body::Lifecycle(update)) = body(metadata) else {
            panic!()
        };
        assert_eq!(update.event_type, "metadata_updated");
        let paused = r#"{"type":"market_lifecycle_v2","sid":4,"seq":2,"msg":{"market_ticker":"M","event_type":"deactivated","is_deactivated":true}}"#;
        let Ok(Body::Lifecycle(update)) = body(paused) else {
            panic!()
        };
        assert_eq!(update.is_deactivated, Some(true));
        let bad = r#"{"type":"market_lifecycle_v2","sid":4,"seq":3,"msg":{"market_ticker":"M","event_type":"settled","settled_ts":"soon"}}"#;
        assert_eq!(body(bad).unwrap_err().market.as_deref(), Some("M"));

        for text in [
            r#"{"type":"event_lifecycle","sid":4,"seq":9,"msg":{"event_ticker":"EV","exchange_index":0,"title":"t","subtitle":"","collateral_return_type":"","series_ticker":"S","strike_date":1778680000}}"#,
            r#"{"type":"event_fee_update","sid":4,"seq":10,"msg":{"event_ticker":"EV","fee_type_override":null,"fee_multiplier_override":0.035}}"#,
        ] {
            assert_eq!(
                body(text),
                Ok(Body::EventLifecycle {
                    event_ticker: "EV".to_owned()
                })
            );
        }
    }

    #[test]
    fn unknown_types_keep_their_sequence() {
        let frame = parse_frame(
            r#"{"type":"multivariate_market_lifecycle","sid":6,"seq":12,"msg":{"anything":[1,{"b":null}]},"extra":true}"#,
        )
        .unwrap();
        assert_eq!(frame.body, Ok(Body::Unknown));
        assert_eq!(
            (frame.envelope.sid, frame.envelope.seq),
            (Some(6), Some(12))
        );
        assert_eq!(body(r#"{"type":"future_thing"}"#), Ok(Body::Unknown));
    }

    #[test]
    fn envelope_keeps_only_integral_numbers() {
        let payload =
            r#""msg":{"market_ticker":"M","price_dollars":"0.43","delta_fp":"1.00","side":"yes"}"#;
        for (fields, expected) in [
            (r#""id":1,"sid":2,"seq":3"#, (Some(1), Some(2), Some(3))),
            (r#""id":"1","sid":"2","seq":"3""#, (None, None, None)),
            (r#""id":1.0,"sid":2.5,"seq":3e2"#, (None, None, None)),
            (r#""id":-1,"sid":-2,"seq":-3"#, (None, None, None)),
            (
                r#""id":18446744073709551615,"sid":4294967296,"seq":18446744073709551616"#,
                (Some(u64::MAX), None, None),
            ),
            (r#""id":null,"sid":[1],"seq":{"n":3}"#, (None, None, None)),
        ] {
            let text = format!(r#"{{"type":"orderbook_delta",{fields},{payload}}}"#);
            let frame = parse_frame(&text).unwrap_or_else(|e| panic!("{fields}: {e}"));
            let envelope = frame.envelope;
            assert_eq!(
                (envelope.id, envelope.sid, envelope.seq),
                expected,
                "{fields}"
            );
            assert!(frame.body.is_ok(), "{fields}");
        }
    }

    #[test]
    fn unusable_payloads_keep_the_envelope() {
        for msg in [r#""msg":"text""#, r#""msg":[1,2]"#, r#""msg":null"#, ""] {
            let sep = if msg.is_empty() { "" } else { "," };
            let text = format!(r#"{{"type":"orderbook_snapshot","sid":5,"seq":77{sep}{msg}}}"#);
            let frame = parse_frame(&text).unwrap_or_else(|e| panic!("{msg}: {e}"));
            assert_eq!(
                (frame.envelope.sid, frame.envelope.seq),
                (Some(5), Some(77))
            );
            assert!(frame.body.is_err(), "{msg}");
        }
        // A duplicated key inside `msg` defeats the one-pass decoder; the slow path reads it,
        // and the last one wins, as in most JSON readers.
        let dup = r#"{"type":"orderbook_snapshot","sid":5,"seq":78,"msg":{"market_ticker":"M","market_ticker":"N"}}"#;
        assert_eq!(
            body(dup),
            Ok(Body::Snapshot {
                market: "N".to_owned(),
                book: Book::default()
            })
        );
    }

    #[test]
    fn only_non_objects_and_missing_types_are_errors() {
        for text in [
            "",
            "null",
            "[]",
            "42",
            r#""orderbook_delta""#,
            "{}",
            r#"{"sid":1,"seq":2}"#,
            r#"{"type":1,"sid":1}"#,
            r#"{"type":null}"#,
            r#"{"type":"ok""#,
            r#"{"type":"ok"} trailing"#,
        ] {
            assert!(parse_frame(text).is_err(), "{text:?}");
        }
    }

    /// Nothing panics: every truncation and random corruption of real frames, deep nesting.
    #[test]
    fn no_input_panics() {
        let samples: Vec<&str> = STREAM
            .lines()
            .filter(|l| l.len() < 3000)
            .take(30)
            .chain(TRADES.lines().take(2))
            .collect();
        for text in &samples {
            for end in (0..text.len()).filter(|&end| text.is_char_boundary(end)) {
                let _ = parse_frame(&text[..end]);
            }
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let alphabet = br#"{}[]:,"0123456789.-eE tfnul\ayesno_"#;
        for _ in 0..20_000 {
            let mut bytes = samples[rng.random_range(0..samples.len())]
                .as_bytes()
                .to_vec();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..bytes.len());
                bytes[at] = alphabet[rng.random_range(0..alphabet.len())];
            }
            if let Ok(text) = std::str::from_utf8(&bytes) {
                let _ = parse_frame(text);
            }
        }
        let deep = format!(
            r#"{{"type":"orderbook_delta","sid":1,"seq":1,"msg":{{"x":{}{}}}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let _ = parse_frame(&deep);
        let deep_top = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse_frame(&deep_top).is_err());
    }

    #[test]
    fn rfc3339_times() {
        let base = 1_786_085_188_i128 * 1_000_000_000;
        for (text, ns) in [
            ("2026-08-07T06:46:28Z", base),
            ("2026-08-07T06:46:28.97871Z", base + 978_710_000),
            ("2026-08-07T06:46:28.539836022Z", base + 539_836_022),
            ("2026-08-07T06:46:28.5398360229Z", base + 539_836_022),
            ("2026-08-07T08:46:28+02:00", base),
            ("2026-08-07T01:16:28.1-05:30", base + 100_000_000),
            ("2026-08-07 06:46:28z", base),
            ("1970-01-01T00:00:00Z", 0),
            ("1969-12-31T23:59:59.5Z", -500_000_000),
            ("2024-02-29T00:00:00Z", 1_709_164_800 * 1_000_000_000),
        ] {
            assert_eq!(rfc3339_unix_ns(text), Some(ns), "{text}");
        }
        for text in [
            "",
            "2026-08-07",
            "2026-08-07T06:46:28",
            "2026-08-07T06:46:28.Z",
            "2026-13-07T06:46:28Z",
            "2026-02-29T06:46:28Z",
            "2026-08-07T24:00:00Z",
            "2026-08-07T06:46:28+2:00",
            "2026-08-07T06:46:28Zjunk",
            "2026-08-07T06:4é:28Z",
        ] {
            assert_eq!(rfc3339_unix_ns(text), None, "{text}");
        }
    }

    #[test]
    fn rest_market_reads() {
        let recorded: serde_json::Value = serde_json::from_str(MARKET_SINGLE).unwrap();
        let text = recorded["single"].to_string();
        let response: KalshiMarketResponse<'_> = serde_json::from_str(&text).unwrap();
        let Mapped::Object(market) = response.market else {
            panic!()
        };
        assert_eq!(
            parse_market(&market, None).unwrap(),
            MarketMeta {
                ticker: "KXNCAAFGAME-26SEP19MSUND-ND".to_owned(),
                event_ticker: "KXNCAAFGAME-26SEP19MSUND".to_owned(),
                series_ticker: String::new(),
                title: "Will Notre Dame win the Michigan St. vs Notre Dame college football game?"
                    .to_owned(),
                subtitle: "Notre Dame".to_owned(),
                status: "active".to_owned(),
                open_time_us: Some(1_779_304_200_000_000),
                close_time_us: Some(1_790_033_400_000_000),
                price_level_structure: "linear_cent".to_owned(),
                price_ranges_json: r#"[{"end":"1.0000","start":"0.0000","step":"0.0100"}]"#
                    .to_owned(),
            }
        );
        let odd: KalshiMarketResponse<'_> = serde_json::from_str(
            r#"{"market":{"ticker":"T","title":7,"open_time":"soon","price_ranges":{},"tick_size":"1"}}"#,
        )
        .unwrap();
        let Mapped::Object(market) = odd.market else {
            panic!()
        };
        let info = parse_market(&market, Some("S")).unwrap();
        assert_eq!(
            (info.title.as_str(), info.series_ticker.as_str()),
            ("", "S")
        );
        assert_eq!(info.open_time_us, None);
        assert_eq!(info.price_ranges_json, "[]");
        // A legacy object with only the integer-cent tick: the one range it implies.
        let legacy: KalshiMarketResponse<'_> =
            serde_json::from_str(r#"{"market":{"ticker":"T","tick_size":1}}"#).unwrap();
        let Mapped::Object(market) = legacy.market else {
            panic!()
        };
        assert_eq!(
            parse_market(&market, None).unwrap().price_ranges_json,
            r#"[{"end":"1.0000","start":"0.0000","step":"0.0100"}]"#
        );
    }
}
