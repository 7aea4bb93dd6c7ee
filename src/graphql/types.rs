//! The view types the schema returns, built from the stores' rows. Every type, field and
//! argument carries a description a client (or an agent) can act on: units, ordering, when
//! a value is null.

use async_graphql::{ComplexObject, Context, Enum, Object, SimpleObject};

use super::analytics::{self, Action, MICRO_DOLLARS_SCALE};
use super::context::Store;
use super::error::ApiError;
use super::scalars::{DateTimeScalar, DecimalScalar, PriceScalar, SizeScalar};
use crate::clickhouse::book::BookAt;
use crate::clickhouse::events::{DeltaEvent, TradeEvent};
use crate::clickhouse::gaps::StoredGap;
use crate::clickhouse::markets::{Coverage, StoredMarket};
use crate::market::{Book, Price, Side};

/// A side of a Kalshi market. Kalshi quotes bids on both sides: a YES bid at p is an offer
/// to sell NO at 1 − p, so the YES ask is 1 − the best NO bid.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[graphql(name = "Side")]
pub enum SideKind {
    /// The YES side: pays $1 if the market resolves yes.
    Yes,
    /// The NO side: pays $1 if the market resolves no.
    No,
}

impl From<Side> for SideKind {
    fn from(side: Side) -> Self {
        match side {
            Side::Yes => Self::Yes,
            Side::No => Self::No,
        }
    }
}

impl From<SideKind> for Side {
    fn from(side: SideKind) -> Self {
        match side {
            SideKind::Yes => Self::Yes,
            SideKind::No => Self::No,
        }
    }
}

/// The `rows::side_code` of a stored row (1 yes, 2 no).
fn side_of_code(code: i8) -> Result<SideKind, ApiError> {
    match code {
        1 => Ok(SideKind::Yes),
        2 => Ok(SideKind::No),
        other => Err(ApiError::internal(&format!("stored side code {other}"))),
    }
}

/// Whether a book is exactly the exchange's.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BookStatus {
    /// The exact book: the latest recorded snapshot plus every delta after it, and no
    /// recorded feed gap covers the instant.
    Complete,
    /// A recorded feed gap of the market covers the instant (see `feedGaps`): the book shown
    /// is the last one recorded before or during the gap and may differ from the exchange's.
    InGap,
    /// Nothing was recorded for the market within 2 hours before the instant (before
    /// recording began, or during an outage): the book is unknown and its ladders are null.
    /// (A market whose recording ended with the empty book Kalshi sends at its close keeps
    /// that empty, COMPLETE book until anything else is recorded for it.)
    NotRecorded,
}

/// One price level of a bid ladder.
#[derive(SimpleObject, Clone, Copy, Debug)]
pub struct PriceLevel {
    /// The bid price in dollars.
    pub price: PriceScalar,
    /// Contracts resting at that price.
    pub size: SizeScalar,
}

/// A market's order book at an instant, reconstructed from the recorded feed.
pub struct OrderBook {
    pub ticker: String,
    pub at_us: i64,
    pub status: BookStatus,
    pub book: Option<BookAt>,
    pub depth: usize,
}

impl OrderBook {
    /// The view of `book` (as read at `at_us`), given whether a gap covers the instant.
    #[must_use]
    pub fn new(ticker: &str, at_us: i64, book: Option<BookAt>, in_gap: bool, depth: usize) -> Self {
        let status = match (&book, in_gap) {
            (None, _) => BookStatus::NotRecorded,
            (Some(_), true) => BookStatus::InGap,
            (Some(_), false) => BookStatus::Complete,
        };
        Self {
            ticker: ticker.to_owned(),
            at_us,
            status,
            book,
            depth,
        }
    }

    fn book(&self) -> Option<&Book> {
        self.book.as_ref().map(|b| &b.book)
    }

    fn ladder(&self, side: Side) -> Option<Vec<PriceLevel>> {
        self.book().map(|book| {
            book.ladder(side)
                .iter()
                .rev()
                .take(self.depth)
                .map(|(price, size)| PriceLevel {
                    price: PriceScalar(*price),
                    size: SizeScalar(*size),
                })
                .collect()
        })
    }

    fn best(&self, side: Side) -> Option<Price> {
        self.book()?.best_bid(side).map(|(p, _)| p)
    }
}

/// Dollars in $0.000001 as a [`DecimalScalar`].
fn micro_dollars(units: i128) -> DecimalScalar {
    DecimalScalar::new(units, MICRO_DOLLARS_SCALE)
}

/// A market's order book at an instant, reconstructed from the recorded feed: the latest
/// snapshot at or before the instant plus every delta after it. Kalshi books hold bids only
/// (YES bids and NO bids); asks are derived (YES ask = $1 − best NO bid).
#[Object]
impl OrderBook {
    /// The market's ticker.
    async fn ticker(&self) -> &str {
        &self.ticker
    }

    /// The instant this book is as of (exchange time): every event stamped at or before it
    /// is applied, none after.
    async fn at(&self) -> DateTimeScalar {
        DateTimeScalar(self.at_us)
    }

    /// Whether the book is exact, inside a recorded feed gap, or unknown.
    async fn status(&self) -> BookStatus {
        self.status
    }

    /// True only when `status` is COMPLETE: the book equals the exchange's at `at`. False
    /// inside a recorded feed gap and when nothing was recorded within 2 hours before `at`
    /// (except after a market's close, whose empty book stays COMPLETE).
    async fn complete(&self) -> bool {
        self.status == BookStatus::Complete
    }

    /// Exchange time of the last event (snapshot or delta) applied to this book; null when
    /// the book is unknown.
    async fn last_update_at(&self) -> Option<DateTimeScalar> {
        self.book.as_ref().map(|b| DateTimeScalar(b.position.ts_us))
    }

    /// Sequence number of the last event applied to this book, within the recording
    /// connection's subscription (a 64-bit count); null when the book is unknown.
    async fn seq(&self) -> Option<u64> {
        self.book.as_ref().map(|b| b.position.seq)
    }

    /// The YES bids, best (highest price) first, at most `depth` levels; null when the book
    /// is unknown, empty when nobody bids. (A YES bid at p is a NO offer at $1 − p.)
    async fn yes(&self) -> Option<Vec<PriceLevel>> {
        self.ladder(Side::Yes)
    }

    /// The NO bids, best (highest price) first, at most `depth` levels; null when the book
    /// is unknown, empty when nobody bids. (A NO bid at p is a YES offer at $1 − p.)
    async fn no(&self) -> Option<Vec<PriceLevel>> {
        self.ladder(Side::No)
    }

    /// The same as `yes`.
    #[graphql(deprecation = "Use `yes`.")]
    async fn yes_bids(&self) -> Option<Vec<PriceLevel>> {
        self.ladder(Side::Yes)
    }

    /// The same as `no`.
    #[graphql(deprecation = "Use `no`.")]
    async fn no_bids(&self) -> Option<Vec<PriceLevel>> {
        self.ladder(Side::No)
    }

    /// Number of YES bid levels in the whole book (`yes` may show fewer: `depth`).
    async fn yes_level_count(&self) -> Option<usize> {
        self.book().map(|b| b.ladder(Side::Yes).len())
    }

    /// Number of NO bid levels in the whole book (`no` may show fewer: `depth`).
    async fn no_level_count(&self) -> Option<usize> {
        self.book().map(|b| b.ladder(Side::No).len())
    }

    /// The highest YES bid; null when there is none or the book is unknown.
    async fn best_yes_bid(&self) -> Option<PriceScalar> {
        self.best(Side::Yes).map(PriceScalar)
    }

    /// The highest NO bid; null when there is none or the book is unknown.
    async fn best_no_bid(&self) -> Option<PriceScalar> {
        self.best(Side::No).map(PriceScalar)
    }

    /// The price to buy YES now: $1 − the best NO bid; null without NO bids.
    async fn yes_ask(&self) -> Option<PriceScalar> {
        self.best(Side::No).map(|p| PriceScalar(p.complement()))
    }

    /// The price to buy NO now: $1 − the best YES bid; null without YES bids.
    async fn no_ask(&self) -> Option<PriceScalar> {
        self.best(Side::Yes).map(|p| PriceScalar(p.complement()))
    }

    /// `yesAsk − bestYesBid` in dollars, 4 decimals, exact (negative only if the recorded
    /// book is crossed); null unless both sides have bids.
    async fn spread(&self) -> Option<DecimalScalar> {
        let (yes, no) = (self.best(Side::Yes)?, self.best(Side::No)?);
        let ask = i128::from(no.complement().units());
        Some(DecimalScalar::new(ask - i128::from(yes.units()), 4))
    }

    /// `(bestYesBid + yesAsk) / 2` in dollars with 5 decimals, exact (a half of a $0.0001
    /// tick needs the fifth decimal), e.g. "0.56500"; null unless both sides have bids.
    async fn midpoint(&self) -> Option<DecimalScalar> {
        let (yes, no) = (self.best(Side::Yes)?, self.best(Side::No)?);
        let mid2 = i128::from(yes.units()) + i128::from(no.complement().units());
        Some(DecimalScalar::new(mid2 * 5, 5))
    }

    /// Resting size near the top of each ladder: the bids priced within `within` of their
    /// side's best bid (inclusive), and the imbalance between the sides. Null when the book
    /// is unknown.
    async fn depth_near_top(
        &self,
        #[graphql(
            desc = "How far below each side's best bid to count, in dollars: \"0.05\" counts levels within 5 cents of the top; \"0\" only the best level."
        )]
        within: PriceScalar,
    ) -> Option<BookDepth> {
        let depth = analytics::depth_within(self.book()?, within.0);
        Some(BookDepth {
            within,
            yes_bid_size: SizeScalar(depth.yes),
            no_bid_size: SizeScalar(depth.no),
            yes_levels: depth.yes_levels,
            no_levels: depth.no_levels,
            imbalance: depth.imbalance_bp().map(|bp| DecimalScalar::new(bp, 4)),
        })
    }

    /// What buying `size` contracts of `side` at market would cost at this instant: walks
    /// the asks (the other side's bids, best first), as far as the book allows. Null when
    /// the book is unknown.
    async fn cost_to_buy(
        &self,
        #[graphql(desc = "The side to buy: YES walks the NO bids (YES asks), NO the YES bids.")]
        side: SideKind,
        #[graphql(desc = "Contracts to buy, > 0, e.g. \"100\" or \"12.50\".")] size: SizeScalar,
    ) -> async_graphql::Result<Option<FillView>> {
        self.fill(side, Action::Buy, size)
    }

    /// What selling `size` contracts of `side` at market would yield at this instant: walks
    /// that side's bids, best first, as far as the book allows. Null when the book is unknown.
    async fn proceeds_to_sell(
        &self,
        #[graphql(desc = "The side to sell: YES hits the YES bids, NO the NO bids.")]
        side: SideKind,
        #[graphql(desc = "Contracts to sell, > 0, e.g. \"100\" or \"12.50\".")] size: SizeScalar,
    ) -> async_graphql::Result<Option<FillView>> {
        self.fill(side, Action::Sell, size)
    }
}

impl OrderBook {
    fn fill(
        &self,
        side: SideKind,
        action: Action,
        size: SizeScalar,
    ) -> async_graphql::Result<Option<FillView>> {
        if size.0.units() <= 0 {
            return Err(
                ApiError::bad_input("size", "size must be greater than 0, e.g. \"100\"").into(),
            );
        }
        Ok(self
            .book()
            .map(|book| FillView::from(analytics::fill(book, side.into(), action, size.0))))
    }
}

/// Resting size within reach of the top of each ladder.
#[derive(SimpleObject, Clone, Copy, Debug)]
pub struct BookDepth {
    /// The distance below each side's best bid that was counted, in dollars.
    pub within: PriceScalar,
    /// Total contracts of YES bids within reach (buyers of YES).
    pub yes_bid_size: SizeScalar,
    /// Total contracts of NO bids within reach (sellers of YES at 1 − price).
    pub no_bid_size: SizeScalar,
    /// YES price levels counted.
    pub yes_levels: u32,
    /// NO price levels counted.
    pub no_levels: u32,
    /// `(yesBidSize − noBidSize) / (yesBidSize + noBidSize)`, from −1 (only NO bids) to 1
    /// (only YES bids), 4 decimals rounded half away from zero; null when both are zero.
    pub imbalance: Option<DecimalScalar>,
}

/// Whether a fill buys or sells.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FillAction {
    /// Buying contracts of the side (taking asks).
    Buy,
    /// Selling contracts of the side (hitting bids).
    Sell,
}

/// The outcome of walking the book for a size at one instant (ignoring fees).
#[derive(SimpleObject, Clone, Debug)]
#[graphql(name = "Fill")]
pub struct FillView {
    /// The side bought or sold.
    pub side: SideKind,
    /// Buy or sell.
    pub action: FillAction,
    /// Contracts asked for.
    pub requested: SizeScalar,
    /// Contracts the book could fill (less than `requested` when it runs out).
    pub filled: SizeScalar,
    /// True when `filled` equals `requested`.
    pub complete: bool,
    /// Total paid (buy) or received (sell) in dollars, 6 decimals, exact.
    pub amount: DecimalScalar,
    /// Volume-weighted average price per contract in dollars (the VWAP), 6 decimals rounded
    /// half away from zero; null when nothing filled.
    pub average_price: Option<DecimalScalar>,
    /// Price of the first contract: the best ask (buy) or bid (sell); null when nothing filled.
    pub best_price: Option<PriceScalar>,
    /// Price of the last contract filled; null when nothing filled.
    pub worst_price: Option<PriceScalar>,
    /// How much worse than `bestPrice` the average is, dollars per contract, 6 decimals,
    /// ≥ 0; null when nothing filled.
    pub slippage: Option<DecimalScalar>,
    /// Price levels consumed (the last one possibly in part).
    pub levels: u32,
}

impl From<analytics::Fill> for FillView {
    fn from(fill: analytics::Fill) -> Self {
        Self {
            side: fill.side.into(),
            action: match fill.action {
                Action::Buy => FillAction::Buy,
                Action::Sell => FillAction::Sell,
            },
            requested: SizeScalar(fill.requested),
            filled: SizeScalar(fill.filled),
            complete: fill.filled == fill.requested,
            amount: micro_dollars(fill.amount_micro),
            average_price: fill.average_micro().map(micro_dollars),
            best_price: fill.best.map(PriceScalar),
            worst_price: fill.worst.map(PriceScalar),
            slippage: fill.slippage_micro().map(micro_dollars),
            levels: fill.levels,
        }
    }
}

/// One recorded change of a book level (Kalshi's `orderbook_delta`).
#[derive(SimpleObject, Clone, Debug)]
pub struct Delta {
    /// Exchange time of the change.
    pub ts: DateTimeScalar,
    /// The same as `ts`.
    #[graphql(deprecation = "Use `ts`.")]
    pub at: DateTimeScalar,
    /// When the recorder received it.
    pub received_at: DateTimeScalar,
    /// The bid ladder changed.
    pub side: SideKind,
    /// The price level changed, in dollars.
    pub price: PriceScalar,
    /// Signed change of the resting contracts at that level ("-2.50" removes 2.5 contracts).
    pub delta: SizeScalar,
    /// Sequence number within the recording connection's subscription (a 64-bit count).
    pub seq: u64,
}

impl TryFrom<&DeltaEvent> for Delta {
    type Error = ApiError;
    fn try_from(row: &DeltaEvent) -> Result<Self, ApiError> {
        Ok(Self {
            ts: DateTimeScalar(row.ts_us),
            at: DateTimeScalar(row.ts_us),
            received_at: DateTimeScalar(row.ts_received_us),
            side: side_of_code(row.side)?,
            price: PriceScalar(Price::from_units(row.price)),
            delta: SizeScalar(crate::market::Size::from_units(row.delta)),
            seq: row.seq,
        })
    }
}

/// One public trade.
#[derive(SimpleObject, Clone, Debug)]
pub struct Trade {
    /// Exchange time of the trade.
    pub ts: DateTimeScalar,
    /// The same as `ts`.
    #[graphql(deprecation = "Use `ts`.")]
    pub at: DateTimeScalar,
    /// When the recorder received it.
    pub received_at: DateTimeScalar,
    /// Kalshi's trade id.
    pub trade_id: String,
    /// The YES price of the trade in dollars.
    pub yes_price: PriceScalar,
    /// The NO price: $1 − `yesPrice`.
    pub no_price: PriceScalar,
    /// Contracts traded.
    pub count: SizeScalar,
    /// The side the taker bought.
    pub taker_side: SideKind,
    /// Whether it was a block trade.
    pub is_block: bool,
}

impl TryFrom<&TradeEvent> for Trade {
    type Error = ApiError;
    fn try_from(row: &TradeEvent) -> Result<Self, ApiError> {
        let yes = Price::from_units(row.yes_price);
        Ok(Self {
            ts: DateTimeScalar(row.ts_us),
            at: DateTimeScalar(row.ts_us),
            received_at: DateTimeScalar(row.ts_received_us),
            trade_id: row.trade_id.clone(),
            yes_price: PriceScalar(yes),
            no_price: PriceScalar(yes.complement()),
            count: SizeScalar(crate::market::Size::from_units(row.count)),
            taker_side: side_of_code(row.taker_side)?,
            is_block: row.is_block,
        })
    }
}

/// Where a page ends and whether another follows (Relay's PageInfo).
#[derive(SimpleObject, Clone, Debug, Default)]
pub struct PageInfo {
    /// True when more rows follow in the range: ask again with `after: endCursor`.
    pub has_next_page: bool,
    /// Always false: pages go forward only.
    pub has_previous_page: bool,
    /// The cursor of the first row of this page; null when the page is empty.
    pub start_cursor: Option<String>,
    /// The cursor of the last row of this page: pass it as `after` for the next page. Null
    /// when the page is empty (ask again with the same `after` later for rows that arrive).
    pub end_cursor: Option<String>,
}

/// A delta with its cursor.
#[derive(SimpleObject, Clone, Debug)]
pub struct DeltaEdge {
    /// The position of this delta: pass it as `after` to continue after it.
    pub cursor: String,
    /// The delta at this position.
    pub node: Delta,
}

/// One page of deltas in exchange order (by time, then connection, then sequence).
#[derive(SimpleObject, Clone, Debug)]
pub struct DeltaConnection {
    /// The deltas with their cursors.
    pub edges: Vec<DeltaEdge>,
    /// The deltas alone (the same as `edges.node`).
    pub nodes: Vec<Delta>,
    /// Whether more deltas follow, and the cursor to continue from.
    pub page_info: PageInfo,
}

/// A trade with its cursor.
#[derive(SimpleObject, Clone, Debug)]
pub struct TradeEdge {
    /// The position of this trade: pass it as `after` to continue after it.
    pub cursor: String,
    /// The trade at this position.
    pub node: Trade,
}

/// One page of trades by exchange time, then trade id.
#[derive(SimpleObject, Clone, Debug)]
pub struct TradeConnection {
    /// The trades with their cursors.
    pub edges: Vec<TradeEdge>,
    /// The trades alone (the same as `edges.node`).
    pub nodes: Vec<Trade>,
    /// Whether more trades follow, and the cursor to continue from.
    pub page_info: PageInfo,
}

/// One price band of a market's tick structure.
#[derive(SimpleObject, Clone, Debug)]
pub struct PriceRange {
    /// Lowest price of the band.
    pub start: PriceScalar,
    /// Highest price of the band.
    pub end: PriceScalar,
    /// Tick size within the band, e.g. "0.0100" (cents) or "0.0010" (tenths of a cent).
    pub step: PriceScalar,
}

fn price_ranges(json: &str) -> Vec<PriceRange> {
    #[derive(serde::Deserialize)]
    struct Raw {
        start: String,
        end: String,
        step: String,
    }
    let raw: Vec<Raw> = serde_json::from_str(json).unwrap_or_default();
    raw.into_iter()
        .filter_map(|r| {
            Some(PriceRange {
                start: PriceScalar(r.start.parse().ok()?),
                end: PriceScalar(r.end.parse().ok()?),
                step: PriceScalar(r.step.parse().ok()?),
            })
        })
        .collect()
}

/// What was recorded of a market over a time range.
#[derive(SimpleObject, Clone, Debug)]
#[graphql(name = "Coverage")]
pub struct CoverageView {
    /// Start of the range considered; null for all of history.
    pub from: Option<DateTimeScalar>,
    /// End of the range considered (exclusive); null for all of history.
    pub to: Option<DateTimeScalar>,
    /// Exchange time of the first recorded snapshot, delta or trade in the range; null when
    /// nothing was recorded.
    pub first_recorded_at: Option<DateTimeScalar>,
    /// Exchange time of the last recorded snapshot, delta or trade in the range.
    pub last_recorded_at: Option<DateTimeScalar>,
    /// Book deltas recorded.
    pub delta_count: u64,
    /// Book snapshots recorded (the exchange's and the recorder's periodic checkpoints).
    pub snapshot_count: u64,
    /// Distinct trades recorded.
    pub trade_count: u64,
    /// Recorded feed gaps overlapping the range (see `feedGaps`).
    pub gap_count: u64,
    /// Of those, gaps not yet recovered (books after their start are not exact).
    pub open_gap_count: u64,
    /// Time in the range covered by gaps, in seconds with 6 decimals (an open gap counts up
    /// to the end of the range or now, whichever is earlier).
    pub incomplete_seconds: DecimalScalar,
}

impl CoverageView {
    #[must_use]
    pub fn new(coverage: &Coverage, range: Option<(i64, i64)>) -> Self {
        Self {
            from: range.map(|r| DateTimeScalar(r.0)),
            to: range.map(|r| DateTimeScalar(r.1)),
            first_recorded_at: coverage.first_us.map(DateTimeScalar),
            last_recorded_at: coverage.last_us.map(DateTimeScalar),
            delta_count: coverage.deltas,
            snapshot_count: coverage.snapshots,
            trade_count: coverage.trades,
            gap_count: coverage.gaps,
            open_gap_count: coverage.open_gaps,
            incomplete_seconds: DecimalScalar::new(i128::from(coverage.gap_us), 6),
        }
    }
}

/// A Kalshi market: its identity, status and schedule, and what has been recorded of it.
#[derive(SimpleObject, Clone, Debug)]
#[graphql(complex)]
pub struct Market {
    /// The market's ticker, e.g. "KXBTCD-26MAR01-T100000"; the key of every other query.
    pub ticker: String,
    /// The event the market belongs to.
    pub event_ticker: String,
    /// The series the event belongs to.
    pub series_ticker: String,
    /// The market's title.
    pub title: String,
    /// The market's subtitle (often the strike).
    pub subtitle: String,
    /// Kalshi's status word: "active", "closed", "settled", "finalized", … ("unknown" for a
    /// market recorded without metadata).
    pub status: String,
    /// When trading opens; null if unknown.
    pub open_time: Option<DateTimeScalar>,
    /// When trading closes; null if unknown.
    pub close_time: Option<DateTimeScalar>,
    /// Kalshi's tick structure name, e.g. "linear_cent" or "tapered_deci_cent".
    pub price_level_structure: String,
    /// The tick size by price band.
    pub price_ranges: Vec<PriceRange>,
    /// When this metadata was last updated.
    pub updated_at: DateTimeScalar,
    #[graphql(skip)]
    pub coverage: Option<CoverageView>,
}

impl Market {
    /// The view of a stored market, with its coverage when already read.
    #[must_use]
    pub fn new(stored: StoredMarket, coverage: Option<CoverageView>) -> Self {
        let meta = stored.meta;
        Self {
            price_ranges: price_ranges(&meta.price_ranges_json),
            ticker: meta.ticker,
            event_ticker: meta.event_ticker,
            series_ticker: meta.series_ticker,
            title: meta.title,
            subtitle: meta.subtitle,
            status: meta.status,
            open_time: meta.open_time_us.map(DateTimeScalar),
            close_time: meta.close_time_us.map(DateTimeScalar),
            price_level_structure: meta.price_level_structure,
            updated_at: DateTimeScalar(stored.updated_at_us),
            coverage,
        }
    }
}

#[ComplexObject]
impl Market {
    /// What has been recorded of this market over all of history: first and last event,
    /// counts, feed gaps. For a time range use the `coverage` query.
    #[graphql(complexity = 5)]
    async fn coverage(&self, ctx: &Context<'_>) -> async_graphql::Result<CoverageView> {
        if let Some(coverage) = &self.coverage {
            return Ok(coverage.clone());
        }
        let store = Store::of(ctx)?;
        let now = super::now_us();
        let all = crate::clickhouse::events::TimeRange {
            from_us: super::scalars::MIN_INSTANT_US,
            to_us: super::scalars::END_INSTANT_US,
        };
        let tickers = [self.ticker.clone()];
        let mut found = store
            .run(crate::clickhouse::markets::coverage(
                &store.clickhouse,
                &tickers,
                all,
                now,
            ))
            .await?;
        let coverage = found.remove(&self.ticker).unwrap_or_default();
        Ok(CoverageView::new(&coverage, None))
    }
}

/// A market with its cursor.
#[derive(SimpleObject, Clone, Debug)]
pub struct MarketEdge {
    /// The position of this market (by ticker): pass it as `after` to continue after it.
    pub cursor: String,
    /// The market at this position.
    pub node: Market,
}

/// One page of markets, by ticker.
#[derive(SimpleObject, Clone, Debug)]
pub struct MarketConnection {
    /// The markets with their cursors.
    pub edges: Vec<MarketEdge>,
    /// The markets alone (the same as `edges.node`).
    pub nodes: Vec<Market>,
    /// Whether more markets follow, and the cursor to continue from.
    pub page_info: PageInfo,
}

/// Why a market's recorded feed has a gap.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GapKind {
    /// A sequence number was skipped: at least one message was lost.
    SequenceGap,
    /// The connection to the exchange was lost.
    Reconnect,
    /// A delta would have made a level negative: the recorded book no longer matched.
    NegativeSize,
    /// The exchange ended the subscription.
    SubscriptionError,
    /// The recorder was not running (a restart after a stop or crash).
    CollectorRestart,
    /// A message could not be parsed.
    MalformedFrame,
    /// The exchange replaced the book (e.g. at a market's close) at an instant known only to
    /// lie within the span.
    BookReplaced,
    /// The recorder stopped watching the market (paused, no longer listed as open, or a
    /// subscription refused) while its book was still live: the book is unknown from then
    /// until the recorder subscribes again.
    Unsubscribed,
    /// A kind this server version does not know.
    Other,
}

impl GapKind {
    fn from_stored(kind: &str) -> Self {
        match kind {
            "sequence_gap" => Self::SequenceGap,
            "reconnect" => Self::Reconnect,
            "negative_size" => Self::NegativeSize,
            "subscription_error" => Self::SubscriptionError,
            "collector_restart" => Self::CollectorRestart,
            "malformed_frame" => Self::MalformedFrame,
            "book_replaced" => Self::BookReplaced,
            "unsubscribed" => Self::Unsubscribed,
            _ => Self::Other,
        }
    }
}

/// A span in which the recorded book of a market may differ from the exchange's: books at
/// instants in `[start, end)` have status IN_GAP.
#[derive(SimpleObject, Clone, Debug)]
pub struct FeedGap {
    /// Why the gap happened.
    pub kind: GapKind,
    /// The feed channel affected ("orderbook_delta", "trade", …).
    pub channel: String,
    /// The last instant the recorded book is known good; the gap starts here.
    pub start: DateTimeScalar,
    /// When the book was recovered (a fresh snapshot); null while not yet recovered, in which
    /// case every later book is IN_GAP.
    pub end: Option<DateTimeScalar>,
    /// Whether the gap has ended.
    pub recovered: bool,
    /// The sequence number expected (0 when not a sequence gap).
    pub expected_seq: u64,
    /// The sequence number received instead (0 when not a sequence gap).
    pub received_seq: u64,
    /// A human-readable detail from the recorder.
    pub detail: String,
}

impl From<StoredGap> for FeedGap {
    fn from(gap: StoredGap) -> Self {
        Self {
            kind: GapKind::from_stored(&gap.kind),
            channel: gap.channel,
            start: DateTimeScalar(gap.start_us),
            end: gap.end_us.map(DateTimeScalar),
            recovered: gap.end_us.is_some(),
            expected_seq: gap.expected_seq,
            received_seq: gap.received_seq,
            detail: gap.detail,
        }
    }
}

/// What a candle summarises.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CandleSource {
    /// Trade prices (YES price) and volume.
    Trades,
    /// The midpoint of the book ((best YES bid + YES ask) / 2) and its spread, over instants
    /// when both sides had bids.
    Midpoint,
}

/// One candle: a time bucket's open, high, low and close. Buckets without activity are
/// omitted.
#[derive(SimpleObject, Clone, Debug)]
pub struct Candle {
    /// Start of the bucket (a multiple of the interval since the Unix epoch, UTC).
    pub start: DateTimeScalar,
    /// End of the bucket (exclusive).
    pub end: DateTimeScalar,
    /// First value in the bucket, dollars (TRADES: 4 decimals; MIDPOINT: 5 decimals, exact).
    pub open: DecimalScalar,
    /// Highest value, dollars.
    pub high: DecimalScalar,
    /// Lowest value, dollars.
    pub low: DecimalScalar,
    /// Last value, dollars.
    pub close: DecimalScalar,
    /// Contracts traded (TRADES only; null for MIDPOINT).
    pub volume: Option<SizeScalar>,
    /// Trades (TRADES) or top-of-book changes (MIDPOINT) in the bucket.
    pub count: u64,
    /// Narrowest spread (YES ask − best YES bid) seen, dollars, 4 decimals (MIDPOINT only).
    pub spread_low: Option<DecimalScalar>,
    /// Widest spread seen, dollars, 4 decimals (MIDPOINT only).
    pub spread_high: Option<DecimalScalar>,
    /// Spread averaged over top-of-book changes (not time-weighted), dollars, 6 decimals
    /// rounded half away from zero (MIDPOINT only).
    pub spread_average: Option<DecimalScalar>,
}

/// The limits this server enforces, so a client can size its requests.
#[derive(SimpleObject, Clone, Debug)]
pub struct Limits {
    /// Most levels per side `depth` may ask for.
    pub max_book_depth: i32,
    /// Most rows per page (`first`) of `deltas`, `trades` and `markets`.
    pub max_page_size: i32,
    /// Longest `[from, to)` of `deltas` and `trades`, seconds.
    pub max_events_range_seconds: u64,
    /// Longest `[from, to)` of `feedGaps` and `coverage`, seconds.
    pub max_gaps_range_seconds: u64,
    /// Most instants of one `bookSnapshots`.
    pub max_snapshot_instants: i64,
    /// Longest span of one `bookSnapshots`, seconds.
    pub max_snapshots_range_seconds: u64,
    /// Most candles of one `candles`.
    pub max_candles: i64,
    /// How long one database query may run, seconds.
    pub query_timeout_seconds: u64,
    /// Deepest nesting of selection sets.
    pub max_query_depth: usize,
    /// Highest total cost of one request.
    pub max_query_complexity: usize,
    /// Largest query text, bytes.
    pub max_query_bytes: usize,
}
