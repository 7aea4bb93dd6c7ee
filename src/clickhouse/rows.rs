//! Rows as stored in ClickHouse (the boundary types): integer units, Unix-microsecond
//! timestamps, enums as their `Enum8` codes. Conversions from the domain live here.

use clickhouse::Row;
use serde::{Deserialize, Serialize};

use crate::market::{Book, Side};

/// `Enum8('yes' = 1, 'no' = 2)` in the `deltas` table.
#[must_use]
pub const fn side_code(side: Side) -> i8 {
    match side {
        Side::Yes => 1,
        Side::No => 2,
    }
}

/// `Enum8('exchange' = 1, 'checkpoint' = 2)` in the `snapshots` table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i8)]
pub enum SnapshotSource {
    /// An `orderbook_snapshot` sent by Kalshi.
    Exchange = 1,
    /// The collector's own copy of its in-memory book.
    Checkpoint = 2,
}

/// One row of `deltas`.
#[derive(Clone, Debug, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct DeltaRow {
    pub market: String,
    /// Exchange time, Unix µs.
    pub ts: i64,
    /// Collector receive time, Unix µs.
    pub ts_received: i64,
    pub conn: u64,
    pub sid: u32,
    pub seq: u64,
    /// [`side_code`].
    pub side: i8,
    /// $0.0001 units.
    pub price: u32,
    /// Signed change, 0.01-contract units.
    pub delta: i64,
}

/// One row of `snapshots`: a whole book.
#[derive(Clone, Debug, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct SnapshotRow {
    pub market: String,
    pub ts: i64,
    pub ts_received: i64,
    pub conn: u64,
    pub sid: u32,
    pub seq: u64,
    /// [`SnapshotSource`] code.
    pub source: i8,
    pub yes_prices: Vec<u32>,
    pub yes_sizes: Vec<i64>,
    pub no_prices: Vec<u32>,
    pub no_sizes: Vec<i64>,
}

/// Where a snapshot sits in the feed: its market, times and sequence position.
#[derive(Clone, Debug)]
pub struct SnapshotPlace<'a> {
    pub market: &'a str,
    pub ts: i64,
    pub ts_received: i64,
    pub conn: u64,
    pub sid: u32,
    pub seq: u64,
    pub source: SnapshotSource,
}

impl SnapshotRow {
    /// The row recording `book` at `place`.
    #[must_use]
    pub fn from_book(place: &SnapshotPlace<'_>, book: &Book) -> Self {
        let (yes_prices, yes_sizes) = book
            .ladder(Side::Yes)
            .iter()
            .map(|(p, s)| (p.units(), s.units()))
            .unzip();
        let (no_prices, no_sizes) = book
            .ladder(Side::No)
            .iter()
            .map(|(p, s)| (p.units(), s.units()))
            .unzip();
        Self {
            market: place.market.to_owned(),
            ts: place.ts,
            ts_received: place.ts_received,
            conn: place.conn,
            sid: place.sid,
            seq: place.seq,
            source: place.source as i8,
            yes_prices,
            yes_sizes,
            no_prices,
            no_sizes,
        }
    }
}

/// One row of `trades`.
#[derive(Clone, Debug, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct TradeRow {
    pub market: String,
    /// Exchange time, Unix µs.
    pub ts: i64,
    pub ts_received: i64,
    pub trade_id: String,
    /// YES price, $0.0001 units.
    pub yes_price: u32,
    /// 0.01-contract units.
    pub count: i64,
    /// [`side_code`] of the taker's outcome side.
    pub taker_side: i8,
    pub is_block: bool,
    pub conn: u64,
    pub sid: u32,
    pub seq: u64,
}

/// Why a market's feed has a gap (`Enum8` codes of `feed_gaps.kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i8)]
pub enum GapKind {
    /// A sequence number was skipped on the subscription.
    SequenceGap = 1,
    /// The connection was lost; the book is unknown until the next snapshot.
    Reconnect = 2,
    /// A delta would have left a negative size: our book no longer matched.
    NegativeSize = 3,
    /// Kalshi ended the subscription (error 10 or 25).
    SubscriptionError = 4,
    /// The collector was not running (restart after a stop or crash).
    CollectorRestart = 5,
    /// A frame of the subscription could not be parsed.
    MalformedFrame = 6,
    /// The exchange replaced the book (e.g. the empty snapshot at a market's close) at an
    /// instant known only to lie within the span: snapshots carry no timestamp.
    BookReplaced = 7,
    /// The collector stopped watching the market (it left the recorded set, e.g. paused)
    /// before the exchange emptied its book at close: the book is unknown from then on.
    Unsubscribed = 8,
}

/// One version of a row of `feed_gaps` (ReplacingMergeTree on `version`).
#[derive(Clone, Debug, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct FeedGapRow {
    /// '' for a gap of a whole channel.
    pub market: String,
    pub gap_id: u64,
    pub channel: String,
    /// [`GapKind`] code.
    pub kind: i8,
    pub conn: u64,
    pub sid: u32,
    pub expected_seq: u64,
    pub received_seq: u64,
    /// Unix µs: the last instant the stored book is known good.
    pub ts_start: i64,
    /// Unix µs of the recovering snapshot; `None` while unrecovered.
    pub ts_end: Option<i64>,
    pub detail: String,
    pub version: u64,
}

/// One row of `top_of_book`: written whenever a market's best bids change.
#[derive(Clone, Debug, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct TopOfBookRow {
    pub market: String,
    pub ts: i64,
    pub conn: u64,
    pub seq: u64,
    /// 0 when the side is empty.
    pub best_yes_bid: u32,
    pub yes_bid_size: i64,
    pub best_no_bid: u32,
    pub no_bid_size: i64,
}

/// One version of a row of `markets` (ReplacingMergeTree on `updated_at`).
#[derive(Clone, Debug, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct MarketRow {
    pub ticker: String,
    pub event_ticker: String,
    pub series_ticker: String,
    pub title: String,
    pub subtitle: String,
    pub status: String,
    pub open_time: Option<i64>,
    pub close_time: Option<i64>,
    pub price_level_structure: String,
    pub price_ranges: String,
    pub updated_at: i64,
}

/// One row of `raw_frame_blocks`: the frames of one insert batch on one connection, in order,
/// compressed (see `crate::collector::frame_log`).
#[derive(Clone, Debug, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct RawFrameBlockRow {
    pub conn: u64,
    pub first_received: i64,
    pub last_received: i64,
    pub frames: u32,
    pub format: u8,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// An exchange text frame exactly as received (stored in `raw_frame_blocks`; `raw_frames`
/// holds those of earlier versions, one row each).
#[derive(Clone, Debug, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct RawFrameRow {
    pub conn: u64,
    pub ts_received: i64,
    /// 0 when the frame had none.
    pub sid: u32,
    pub seq: u64,
    pub frame: String,
}
