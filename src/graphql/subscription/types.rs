//! The messages live subscriptions send: book updates (snapshots and level changes, with the
//! exchange's position), trades and lifecycle changes, each marked with what kind it is.

use async_graphql::{ComplexObject, Enum, SimpleObject};

use crate::graphql::scalars::{DateTimeScalar, PriceScalar, SizeScalar};
use crate::graphql::types::{PriceLevel, SideKind};
use crate::market::{Book, Price, Side, Size};

/// What a [`BookUpdate`] carries.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BookUpdateKind {
    /// The whole book (`yes`, `no`): replace what you hold. The first message of an
    /// `orderbook` subscription, and again after any upstream gap (then `resync` is true).
    Snapshot,
    /// Level changes (`changes`) at one exchange position: add each `delta` to the size at
    /// its price; a level whose size reaches 0 is gone.
    Delta,
    /// The upstream feed of the market broke: the book is unknown until the next `SNAPSHOT`
    /// (marked `resync`). Do not apply anything until then.
    Gap,
    /// History has been replayed up to the live feed: from the next message on, everything
    /// is live (`live` true). Sent once, by subscriptions started with `from`.
    CaughtUp,
    /// Nothing happened for a while: the stream is alive. Sent after every interval without
    /// a message (see `limits`/README: 5 seconds); `seq` repeats the last one sent.
    Heartbeat,
}

/// One level change of a book update.
#[derive(SimpleObject, Clone, Copy, Debug, PartialEq, Eq)]
pub struct LevelChange {
    /// The bid ladder changed.
    pub side: SideKind,
    /// The price level, in dollars.
    pub price: PriceScalar,
    /// Signed change of the contracts resting at that price ("-2.50" removes 2.5).
    pub delta: SizeScalar,
}

/// One message of an `orderbook` or `deltas` subscription.
#[derive(SimpleObject, Clone, Debug)]
#[graphql(complex)]
pub struct BookUpdate {
    /// What this message is; see each kind for how to apply it.
    pub kind: BookUpdateKind,
    /// The market (absent on `CAUGHT_UP` and `HEARTBEAT` of a `deltas` subscription, which
    /// cover all its markets).
    pub ticker: Option<String>,
    /// Exchange time of the event (for `CAUGHT_UP` and `HEARTBEAT`: the server's time).
    pub at: DateTimeScalar,
    /// When the collector received the exchange's message (deltas only).
    pub received_at: Option<DateTimeScalar>,
    /// The collector's exchange connection this event came through (increases over time; a
    /// new one always starts with a `SNAPSHOT`).
    pub conn: Option<u64>,
    /// The exchange's subscription id within that connection.
    pub sid: Option<u32>,
    /// The exchange's sequence number within (conn, sid): increasing, and shared by every
    /// market of that exchange subscription, so one market's numbers skip those of others.
    /// On `HEARTBEAT` and `CAUGHT_UP` of an `orderbook`: the last one sent.
    pub seq: Option<u64>,
    /// A `SNAPSHOT` that replaces the book after an upstream gap or reconnect, or after the
    /// stream had to start over.
    pub resync: bool,
    /// False while a subscription started with `from` replays history; true from its
    /// `CAUGHT_UP` on, and always true without `from`.
    pub live: bool,
    /// YES bids, best (highest) first, up to `depth` levels (`SNAPSHOT` only), as in
    /// `OrderBook.yes`.
    pub yes: Option<Vec<PriceLevel>>,
    /// NO bids, best (highest) first, up to `depth` levels (`SNAPSHOT` only), as in
    /// `OrderBook.no`.
    pub no: Option<Vec<PriceLevel>>,
    /// The level changes of a `DELTA`, to apply in order (empty for other kinds).
    pub changes: Vec<LevelChange>,
}

#[ComplexObject]
impl BookUpdate {
    /// The same as `yes`.
    #[graphql(deprecation = "Use `yes`.")]
    async fn yes_bids(&self) -> Option<Vec<PriceLevel>> {
        self.yes.clone()
    }

    /// The same as `no`.
    #[graphql(deprecation = "Use `no`.")]
    async fn no_bids(&self) -> Option<Vec<PriceLevel>> {
        self.no.clone()
    }
}

impl BookUpdate {
    /// A message of `kind` with nothing but its time and liveness set.
    #[must_use]
    pub fn bare(kind: BookUpdateKind, ticker: Option<String>, at_us: i64, live: bool) -> Self {
        Self {
            kind,
            ticker,
            at: DateTimeScalar(at_us),
            received_at: None,
            conn: None,
            sid: None,
            seq: None,
            resync: false,
            live,
            yes: None,
            no: None,
            changes: Vec::new(),
        }
    }
}

/// The best `depth` bids of `side`, best first (all of them when `depth` is `None`).
#[must_use]
pub fn top_levels(book: &Book, side: Side, depth: Option<usize>) -> Vec<(Price, Size)> {
    book.ladder(side)
        .iter()
        .rev()
        .take(depth.unwrap_or(usize::MAX))
        .map(|(p, s)| (*p, *s))
        .collect()
}

/// `top_levels` as the API's [`PriceLevel`]s.
#[must_use]
pub fn levels_view(book: &Book, side: Side, depth: Option<usize>) -> Vec<PriceLevel> {
    top_levels(book, side, depth)
        .into_iter()
        .map(|(price, size)| PriceLevel {
            price: PriceScalar(price),
            size: SizeScalar(size),
        })
        .collect()
}

/// What a [`TradeUpdate`] carries.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TradeUpdateKind {
    /// A public trade.
    Trade,
    /// Nothing happened for a while: the stream is alive.
    Heartbeat,
}

/// One message of a `trades` subscription.
#[derive(SimpleObject, Clone, Debug)]
pub struct TradeUpdate {
    /// What this message is.
    pub kind: TradeUpdateKind,
    /// The market traded (absent on `HEARTBEAT`).
    pub ticker: Option<String>,
    /// Exchange time of the trade (for `HEARTBEAT`: the server's time).
    pub at: DateTimeScalar,
    /// The collector's exchange connection (see `BookUpdate.conn`).
    pub conn: Option<u64>,
    /// The exchange's sequence number within the trade channel's subscription.
    pub seq: Option<u64>,
    /// Kalshi's trade id.
    pub trade_id: Option<String>,
    /// The YES price in dollars.
    pub yes_price: Option<PriceScalar>,
    /// The NO price: $1 − `yesPrice`.
    pub no_price: Option<PriceScalar>,
    /// Contracts traded.
    pub count: Option<SizeScalar>,
    /// The side the taker bought.
    pub taker_side: Option<SideKind>,
}

/// What a [`MarketStatusUpdate`] carries.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarketStatusKind {
    /// A lifecycle change of the market.
    Status,
    /// Nothing happened for a while: the stream is alive.
    Heartbeat,
}

/// One message of a `marketStatus` subscription.
#[derive(SimpleObject, Clone, Debug)]
pub struct MarketStatusUpdate {
    /// What this message is.
    pub kind: MarketStatusKind,
    /// The market (absent on `HEARTBEAT`).
    pub ticker: Option<String>,
    /// When the collector saw the change (for `HEARTBEAT`: the server's time).
    pub at: DateTimeScalar,
    /// Kalshi's lifecycle event type: `created`, `activated`, `deactivated`, `determined`,
    /// `settled`, … (passed through as Kalshi names it).
    pub event_type: Option<String>,
}

/// A side as the API names it.
#[must_use]
pub fn side_view(side: Side) -> SideKind {
    side.into()
}
