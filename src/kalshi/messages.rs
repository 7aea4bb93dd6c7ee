//! Kalshi wire types (serde): WebSocket frames and REST market objects exactly as the exchange
//! sends them, read in one borrowing pass. `parse` turns them into domain values.
//!
//! These types never judge a field's JSON type. Every field we read is a [`Loose`] (or a
//! lenient list or object of them), so deserialising a well-formed JSON object cannot fail on a
//! surprising value; `parse` decides what is acceptable and says why when it is not. This keeps
//! the frame envelope (`sid`, `seq`) readable even when the payload is not, which the collector
//! needs to keep its sequence count. Unknown fields are skipped.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

// ---------------------------------------------------------------------------------------------
// Lenient building blocks
// ---------------------------------------------------------------------------------------------

/// One JSON value read without judging its type; strings are borrowed from the frame text
/// when they contain no escapes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Loose<'a> {
    /// A JSON number without fraction or exponent, in `i64` range.
    Int(i64),
    /// A JSON integer above `i64::MAX` (and at most `u64::MAX`).
    BigUInt(u64),
    Text(Cow<'a, str>),
    Bool(bool),
    /// Anything else (a number with a fraction, null, an array, an object), by JSON type name.
    Other(&'static str),
}

impl Loose<'_> {
    /// The value as a `u64`, when it is a non-negative JSON integer.
    pub(crate) fn as_u64(&self) -> Option<u64> {
        match self {
            Self::Int(v) => u64::try_from(*v).ok(),
            Self::BigUInt(v) => Some(*v),
            _ => None,
        }
    }

    /// The JSON type name, for error messages.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Self::Int(_) | Self::BigUInt(_) => "integer",
            Self::Text(_) => "string",
            Self::Bool(_) => "boolean",
            Self::Other(name) => name,
        }
    }
}

/// Drains the rest of a JSON array without keeping it.
fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Drains the rest of a JSON object without keeping it.
fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

struct LooseVisitor<'a>(PhantomData<Loose<'a>>);

impl<'de: 'a, 'a> Visitor<'de> for LooseVisitor<'a> {
    type Value = Loose<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Loose::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Loose::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(i64::try_from(v).map_or(Loose::BigUInt(v), Loose::Int))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Self::Value, E> {
        Ok(i64::try_from(v).map_or(Loose::Other("integer"), Loose::Int))
    }
    fn visit_u128<E>(self, v: u128) -> Result<Self::Value, E> {
        Ok(u64::try_from(v).map_or(Loose::Other("integer"), |v| {
            i64::try_from(v).map_or(Loose::BigUInt(v), Loose::Int)
        }))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Loose::Other("number with a fraction"))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Loose::Text(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Loose::Text(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Loose::Text(Cow::Owned(v)))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Loose::Other("null"))
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Loose::Other("null"))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        drain_seq(seq)?;
        Ok(Loose::Other("array"))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        drain_map(map)?;
        Ok(Loose::Other("object"))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Loose<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LooseVisitor(PhantomData))
    }
}

/// Visitor methods for every JSON kind a lenient container does not expect: each yields
/// `$reject(type name)` and consumes the value.
macro_rules! reject_other_kinds {
    ($reject:expr) => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok($reject("boolean"))
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok($reject("integer"))
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok($reject("integer"))
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok($reject("number with a fraction"))
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok($reject("string"))
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok($reject("null"))
        }
    };
}

/// A JSON array of lenient elements, or the type name of whatever stood there instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Listed<T> {
    Items(Vec<T>),
    NotAnArray(&'static str),
}

struct ListedVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ListedVisitor<T> {
    type Value = Listed<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Listed::Items(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        drain_map(map)?;
        Ok(Listed::NotAnArray("object"))
    }
    reject_other_kinds!(Listed::NotAnArray);
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Listed<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ListedVisitor(PhantomData))
    }
}

/// A JSON object read into `T` (whose fields are all lenient), or the type name of whatever
/// stood there instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Mapped<T> {
    Object(T),
    NotAnObject(&'static str),
}

struct MappedVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for MappedVisitor<T> {
    type Value = Mapped<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(Mapped::Object)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        drain_seq(seq)?;
        Ok(Mapped::NotAnObject("array"))
    }
    reject_other_kinds!(Mapped::NotAnObject);
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Mapped<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(MappedVisitor(PhantomData))
    }
}

/// One `[price, count]` level of a snapshot, or what stood there instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Level<'a> {
    Pair(Loose<'a>, Loose<'a>),
    /// Not a two-element array: its JSON type, or "array of N" for a wrong length.
    Malformed(Cow<'static, str>),
}

struct LevelVisitor<'a>(PhantomData<Level<'a>>);

impl<'de: 'a, 'a> Visitor<'de> for LevelVisitor<'a> {
    type Value = Level<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let first = seq.next_element::<Loose<'a>>()?;
        let second = seq.next_element::<Loose<'a>>()?;
        let mut extra = 0usize;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            extra += 1;
        }
        Ok(match (first, second, extra) {
            (Some(price), Some(count), 0) => Level::Pair(price, count),
            (first, second, extra) => {
                let len = usize::from(first.is_some()) + usize::from(second.is_some()) + extra;
                Level::Malformed(Cow::Owned(format!("array of {len}")))
            }
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        drain_map(map)?;
        Ok(Level::Malformed(Cow::Borrowed("object")))
    }
    reject_other_kinds!(|name| Level::Malformed(Cow::Borrowed(name)));
}

impl<'de: 'a, 'a> Deserialize<'de> for Level<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LevelVisitor(PhantomData))
    }
}

// ---------------------------------------------------------------------------------------------
// WebSocket payloads (`msg`), one per message type
// ---------------------------------------------------------------------------------------------

/// `orderbook_snapshot` payload. A side's key is absent when that side has no bids.
/// Current form: `*_dollars_fp` `[[price_dollars, count_fp]]` strings. March 2026 also sent
/// `*_dollars` `[[price_dollars, count_int]]` and `yes`/`no` `[[price_cents, count_int]]`;
/// up to August 2025 only the integer `yes`/`no` existed.
#[derive(Debug, Deserialize)]
pub(crate) struct KalshiSnapshotMsg<'a> {
    #[serde(borrow)]
    pub market_ticker: Option<Loose<'a>>,
    #[serde(borrow)]
    pub yes_dollars_fp: Option<Listed<Level<'a>>>,
    #[serde(borrow)]
    pub no_dollars_fp: Option<Listed<Level<'a>>>,
    #[serde(borrow)]
    pub yes_dollars: Option<Listed<Level<'a>>>,
    #[serde(borrow)]
    pub no_dollars: Option<Listed<Level<'a>>>,
    #[serde(borrow)]
    pub yes: Option<Listed<Level<'a>>>,
    #[serde(borrow)]
    pub no: Option<Listed<Level<'a>>>,
}

/// `orderbook_delta` payload: `price_dollars` + `delta_fp` strings (current), or `price`
/// integer cents + `delta` integer contracts (legacy); `side` `yes`/`no`; `ts_ms` integer, or
/// only `ts` RFC 3339 (legacy, deprecated).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct KalshiDeltaMsg<'a> {
    #[serde(borrow)]
    pub market_ticker: Option<Loose<'a>>,
    #[serde(borrow)]
    pub side: Option<Loose<'a>>,
    #[serde(borrow)]
    pub price_dollars: Option<Loose<'a>>,
    #[serde(borrow)]
    pub delta_fp: Option<Loose<'a>>,
    #[serde(borrow)]
    pub price: Option<Loose<'a>>,
    #[serde(borrow)]
    pub delta: Option<Loose<'a>>,
    #[serde(borrow)]
    pub ts_ms: Option<Loose<'a>>,
    #[serde(borrow)]
    pub ts: Option<Loose<'a>>,
}

/// `trade` payload: `yes_price_dollars`/`count_fp` strings (current) or `yes_price` cents /
/// `count` integers (legacy); direction in `taker_outcome_side` (`yes`/`no`),
/// `taker_book_side` (`bid`/`ask`) or the deprecated `taker_side`; `ts_ms` or `ts` seconds.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct KalshiTradeMsg<'a> {
    #[serde(borrow)]
    pub trade_id: Option<Loose<'a>>,
    #[serde(borrow)]
    pub market_ticker: Option<Loose<'a>>,
    #[serde(borrow)]
    pub yes_price_dollars: Option<Loose<'a>>,
    #[serde(borrow)]
    pub yes_price: Option<Loose<'a>>,
    #[serde(borrow)]
    pub count_fp: Option<Loose<'a>>,
    #[serde(borrow)]
    pub count: Option<Loose<'a>>,
    #[serde(borrow)]
    pub taker_outcome_side: Option<Loose<'a>>,
    #[serde(borrow)]
    pub taker_book_side: Option<Loose<'a>>,
    #[serde(borrow)]
    pub taker_side: Option<Loose<'a>>,
    #[serde(borrow)]
    pub is_block_trade: Option<Loose<'a>>,
    #[serde(borrow)]
    pub ts_ms: Option<Loose<'a>>,
    #[serde(borrow)]
    pub ts: Option<Loose<'a>>,
}

/// `market_lifecycle_v2` payload (every `event_type`, including `metadata_updated`).
/// Timestamps are Unix seconds.
#[derive(Debug, Deserialize)]
pub(crate) struct KalshiLifecycleMsg<'a> {
    #[serde(borrow)]
    pub market_ticker: Option<Loose<'a>>,
    #[serde(borrow)]
    pub event_type: Option<Loose<'a>>,
    #[serde(borrow)]
    pub open_ts: Option<Loose<'a>>,
    #[serde(borrow)]
    pub close_ts: Option<Loose<'a>>,
    #[serde(borrow)]
    pub determination_ts: Option<Loose<'a>>,
    #[serde(borrow)]
    pub settled_ts: Option<Loose<'a>>,
    #[serde(borrow)]
    pub result: Option<Loose<'a>>,
    #[serde(borrow)]
    pub is_deactivated: Option<Loose<'a>>,
    #[serde(borrow)]
    pub price_level_structure: Option<Loose<'a>>,
    #[serde(borrow)]
    pub additional_metadata: Option<Mapped<KalshiLifecycleMetadata<'a>>>,
}

/// `additional_metadata` of a `created` lifecycle message (only the fields we keep).
#[derive(Debug, Deserialize)]
pub(crate) struct KalshiLifecycleMetadata<'a> {
    #[serde(borrow)]
    pub title: Option<Loose<'a>>,
    #[serde(borrow)]
    pub event_ticker: Option<Loose<'a>>,
}

/// `event_lifecycle` and `event_fee_update` payloads (only `event_ticker` is kept).
#[derive(Debug, Deserialize)]
pub(crate) struct KalshiEventMsg<'a> {
    #[serde(borrow)]
    pub event_ticker: Option<Loose<'a>>,
}

/// `subscribed` payload: the channel and, inside `msg`, the new `sid`.
#[derive(Debug, Deserialize)]
pub(crate) struct KalshiSubscribedMsg<'a> {
    #[serde(borrow)]
    pub channel: Option<Loose<'a>>,
    #[serde(borrow)]
    pub sid: Option<Loose<'a>>,
}

/// `ok` payload of `update_subscription`: the full market list after the update (absent with
/// `skip_ticker_ack`).
#[derive(Debug, Deserialize)]
pub(crate) struct KalshiOkTickersMsg<'a> {
    #[serde(borrow)]
    pub market_tickers: Option<Listed<Loose<'a>>>,
}

/// One element of the `ok` reply to `list_subscriptions`.
#[derive(Debug, Deserialize)]
pub(crate) struct KalshiSubscriptionEntry<'a> {
    #[serde(borrow)]
    pub channel: Option<Loose<'a>>,
    #[serde(borrow)]
    pub sid: Option<Loose<'a>>,
}

/// `ok` payload: an object for `update_subscription`, an array for `list_subscriptions`.
#[derive(Debug)]
pub(crate) enum KalshiOkMsg<'a> {
    Tickers(KalshiOkTickersMsg<'a>),
    Subscriptions(Vec<Mapped<KalshiSubscriptionEntry<'a>>>),
    Other(&'static str),
}

struct OkVisitor<'a>(PhantomData<KalshiOkMsg<'a>>);

impl<'de: 'a, 'a> Visitor<'de> for OkVisitor<'a> {
    type Value = KalshiOkMsg<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        KalshiOkTickersMsg::deserialize(MapAccessDeserializer::new(map)).map(KalshiOkMsg::Tickers)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = seq.next_element()? {
            entries.push(entry);
        }
        Ok(KalshiOkMsg::Subscriptions(entries))
    }
    reject_other_kinds!(KalshiOkMsg::Other);
}

impl<'de: 'a, 'a> Deserialize<'de> for KalshiOkMsg<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(OkVisitor(PhantomData))
    }
}

/// `error` payload: `code`, `msg` text, optional `market_ticker` / `market_tickers`.
#[derive(Debug, Deserialize)]
pub(crate) struct KalshiErrorMsg<'a> {
    #[serde(borrow)]
    pub code: Option<Loose<'a>>,
    #[serde(borrow)]
    pub msg: Option<Loose<'a>>,
    #[serde(borrow)]
    pub market_ticker: Option<Loose<'a>>,
    #[serde(borrow)]
    pub market_tickers: Option<Listed<Loose<'a>>>,
}

// ---------------------------------------------------------------------------------------------
// The frame
// ---------------------------------------------------------------------------------------------

/// The message types we tell apart, from the frame's `type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MessageKind {
    Snapshot,
    Delta,
    Trade,
    Lifecycle,
    EventLifecycle,
    Subscribed,
    Ok,
    Error,
    Unsubscribed,
    Ticker,
    Unknown,
}

impl MessageKind {
    pub(crate) fn of(kind: &str) -> Self {
        match kind {
            "orderbook_delta" => Self::Delta,
            "orderbook_snapshot" => Self::Snapshot,
            "trade" => Self::Trade,
            "market_lifecycle_v2" => Self::Lifecycle,
            "event_lifecycle" | "event_fee_update" => Self::EventLifecycle,
            "subscribed" => Self::Subscribed,
            "ok" => Self::Ok,
            "error" => Self::Error,
            "unsubscribed" => Self::Unsubscribed,
            "ticker" | "ticker_v2" => Self::Ticker,
            _ => Self::Unknown,
        }
    }
}

/// Where a frame's `msg` goes. `parse` converts each payload to its domain value inside
/// [`FrameSink::decode`] and keeps it in the sink, so neither the large wire structs nor the
/// domain body travel back up through the serde layers (those moves were a fifth of the time).
pub(crate) trait FrameSink {
    /// Decodes the `msg` value of a frame of `kind` into the sink.
    ///
    /// # Errors
    /// Only the deserializer's own errors (malformed JSON, a duplicated key); payload problems
    /// belong in the sink.
    fn decode<'de, D: Deserializer<'de>>(
        &mut self,
        kind: MessageKind,
        msg: D,
    ) -> Result<(), D::Error>;

    /// Records that the frame, of `kind`, has no `msg`.
    fn absent(&mut self, kind: MessageKind);
}

struct SinkSeed<'s, S>(&'s mut S, MessageKind);

impl<'de, S: FrameSink> DeserializeSeed<'de> for SinkSeed<'_, S> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.0.decode(self.1, d)
    }
}

/// A server frame's envelope: `{"type", "id"?, "sid"?, "seq"?, "msg"?}` with `msg` handed to
/// a [`FrameSink`]. `id`, `sid` and `seq` are kept when they are non-negative JSON integers.
#[derive(Debug)]
pub(crate) struct KalshiEnvelope<'a> {
    pub kind: Cow<'a, str>,
    pub id: Option<u64>,
    pub sid: Option<u64>,
    pub seq: Option<u64>,
}

/// Reads one frame in a single borrowing pass, decoding `msg` into `sink` by `type`.
///
/// # Errors
/// Malformed JSON, a top level that is not an object, a missing or non-string `type`, or a
/// deserializer error from the sink (a duplicated key inside `msg`).
pub(crate) fn read_frame<'a, S: FrameSink>(
    text: &'a str,
    sink: &mut S,
) -> Result<KalshiEnvelope<'a>, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let envelope = (&mut deserializer).deserialize_map(FrameVisitor { sink })?;
    deserializer.end()?;
    Ok(envelope)
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum FrameKey {
    Type,
    Id,
    Sid,
    Seq,
    Msg,
    #[serde(other)]
    Other,
}

struct FrameVisitor<'s, S> {
    sink: &'s mut S,
}

impl<'de, S: FrameSink> Visitor<'de> for FrameVisitor<'_, S> {
    type Value = KalshiEnvelope<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object with a string `type`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut kind: Option<Cow<'de, str>> = None;
        let (mut id, mut sid, mut seq) = (None, None, None);
        let mut has_msg = false;
        // `msg` before `type` (Kalshi sends `type` first; JSON does not promise it): kept as a
        // value and decoded once the type is known.
        let mut early_msg: Option<serde_json::Value> = None;
        while let Some(key) = map.next_key::<FrameKey>()? {
            match key {
                FrameKey::Type => match map.next_value::<Loose<'de>>()? {
                    Loose::Text(text) => kind = Some(text),
                    other => {
                        return Err(de::Error::custom(format_args!(
                            "`type` is {}, not a string",
                            other.type_name()
                        )));
                    }
                },
                FrameKey::Id => id = map.next_value::<Loose<'de>>()?.as_u64(),
                FrameKey::Sid => sid = map.next_value::<Loose<'de>>()?.as_u64(),
                FrameKey::Seq => seq = map.next_value::<Loose<'de>>()?.as_u64(),
                FrameKey::Msg => match &kind {
                    Some(kind) => {
                        let seed = SinkSeed(&mut *self.sink, MessageKind::of(kind));
                        map.next_value_seed(seed)?;
                        has_msg = true;
                        early_msg = None;
                    }
                    None => early_msg = Some(map.next_value()?),
                },
                FrameKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let kind = kind.ok_or_else(|| de::Error::custom("no `type`"))?;
        let message_kind = MessageKind::of(&kind);
        if let Some(value) = early_msg {
            self.sink
                .decode(message_kind, &value)
                .map_err(de::Error::custom)?;
        } else if !has_msg {
            self.sink.absent(message_kind);
        }
        Ok(KalshiEnvelope { kind, id, sid, seq })
    }
}

// ---------------------------------------------------------------------------------------------
// REST
// ---------------------------------------------------------------------------------------------

/// One page of `GET /markets`: `{"markets": [Market…], "cursor": "…"}`; an empty, null or
/// missing cursor ends the listing.
#[derive(Debug, Deserialize)]
pub(crate) struct KalshiMarketsPage<'a> {
    #[serde(borrow)]
    pub markets: Listed<Mapped<KalshiMarket<'a>>>,
    #[serde(borrow)]
    pub cursor: Option<Loose<'a>>,
}

/// `GET /markets/{ticker}`: `{"market": Market}`.
#[derive(Debug, Deserialize)]
pub(crate) struct KalshiMarketResponse<'a> {
    #[serde(borrow)]
    pub market: Mapped<KalshiMarket<'a>>,
}

/// The fields of a REST `Market` object that discovery keeps (OA 3.13.0 `Market`).
/// `series_ticker` is not part of the schema; it is read in case newer responses carry it.
#[derive(Debug, Deserialize)]
pub(crate) struct KalshiMarket<'a> {
    #[serde(borrow)]
    pub ticker: Option<Loose<'a>>,
    #[serde(borrow)]
    pub event_ticker: Option<Loose<'a>>,
    #[serde(borrow)]
    pub series_ticker: Option<Loose<'a>>,
    #[serde(borrow)]
    pub title: Option<Loose<'a>>,
    #[serde(borrow)]
    pub yes_sub_title: Option<Loose<'a>>,
    /// Deprecated; read only when `yes_sub_title` is missing.
    #[serde(borrow)]
    pub subtitle: Option<Loose<'a>>,
    #[serde(borrow)]
    pub status: Option<Loose<'a>>,
    /// RFC 3339.
    #[serde(borrow)]
    pub open_time: Option<Loose<'a>>,
    /// RFC 3339.
    #[serde(borrow)]
    pub close_time: Option<Loose<'a>>,
    #[serde(borrow)]
    pub price_level_structure: Option<Loose<'a>>,
    /// `[{"start","end","step"}]` dollar strings; kept verbatim.
    pub price_ranges: Option<serde_json::Value>,
    /// Deprecated: integer cents.
    #[serde(borrow)]
    pub tick_size: Option<Loose<'a>>,
}
