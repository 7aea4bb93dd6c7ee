//! One simulated market: identity, status, book, trading statistics, and its Kalshi views
//! (snapshot, ticker, lifecycle `created`).

use rand::Rng;

use super::clock::rfc3339_micros;
use super::dynamics::MarketDynamics;
use super::messages::{
    AdditionalMetadata, Level, LifecycleMsg, PriceRangeMsg, SnapshotMsg, TickerMsg,
};
use crate::market::{Book, Price, Side, Size};

/// A market's status as Kalshi's REST `status` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    Initialized,
    Active,
    Inactive,
    Closed,
    Determined,
    Finalized,
}

impl Status {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Initialized => "initialized",
            Self::Active => "active",
            Self::Inactive => "inactive",
            Self::Closed => "closed",
            Self::Determined => "determined",
            Self::Finalized => "finalized",
        }
    }
}

/// Trading statistics for the REST market and ticker frames.
#[derive(Clone, Debug, Default)]
pub(crate) struct Stats {
    pub last_price: Option<Price>,
    pub last_trade_size: Size,
    /// Contracts traded, 0.01 units.
    pub volume: i64,
    /// Open interest, 0.01 units.
    pub open_interest: i64,
    /// Σ count × YES price, in (0.01 contract × $0.0001) units.
    pub notional: i128,
    pub previous_yes_bid: Price,
    pub previous_yes_ask: Price,
    pub previous_price: Price,
}

/// One simulated market.
pub(crate) struct SimMarket {
    pub ticker: String,
    pub event_ticker: String,
    pub series_ticker: String,
    pub market_id: String,
    pub title: String,
    pub yes_sub_title: String,
    pub no_sub_title: String,
    pub strike: i64,
    pub status: Status,
    pub book: Book,
    pub dynamics: MarketDynamics,
    /// Relative activity: a few markets are busy, most are quiet.
    pub weight: u32,
    pub created_us: i64,
    pub updated_us: i64,
    pub open_secs: i64,
    pub close_secs: i64,
    pub expected_expiration_secs: i64,
    pub latest_expiration_secs: i64,
    pub stats: Stats,
    pub result: Option<Side>,
    pub determined_secs: Option<i64>,
    pub settled_secs: Option<i64>,
}

/// Best bids of both sides.
pub(crate) type Top = (Option<(Price, Size)>, Option<(Price, Size)>);

pub(crate) fn top(book: &Book) -> Top {
    (book.best_bid(Side::Yes), book.best_bid(Side::No))
}

impl SimMarket {
    /// Best YES bid and ask with sizes, as Kalshi's Market/ticker fields: a missing YES bid
    /// is $0 × 0, a missing YES ask (no NO bid) is $1 × 0.
    pub fn quotes(&self) -> (Price, Size, Price, Size) {
        let (yes, no) = top(&self.book);
        let (bid, bid_size) = yes.unwrap_or((Price::from_units(0), Size::ZERO));
        let (ask, ask_size) = no.map_or((Price::ONE_DOLLAR, Size::ZERO), |(p, s)| {
            (p.complement(), s)
        });
        (bid, bid_size, ask, ask_size)
    }

    pub fn levels(&self, side: Side) -> Vec<Level> {
        levels(&self.book, side)
    }

    pub fn price_ranges(&self) -> Vec<PriceRangeMsg> {
        self.dynamics
            .structure
            .ranges()
            .into_iter()
            .map(|(start, end, step)| PriceRangeMsg {
                start: start.to_string(),
                end: end.to_string(),
                step: step.to_string(),
            })
            .collect()
    }

    /// The `orderbook_snapshot` payload; empty sides are left out.
    pub fn snapshot_msg(&self) -> SnapshotMsg<'_> {
        let side = |side| Some(self.levels(side)).filter(|levels| !levels.is_empty());
        SnapshotMsg {
            market_ticker: &self.ticker,
            market_id: &self.market_id,
            yes_dollars_fp: side(Side::Yes),
            no_dollars_fp: side(Side::No),
        }
    }

    pub fn ticker_msg(&self, ts_us: i64) -> TickerMsg<'_> {
        let (bid, bid_size, ask, ask_size) = self.quotes();
        // Whole dollars: notional is in (0.01 contract × $0.0001) units.
        let dollars = |units: i128| i64::try_from(units / 1_000_000).unwrap_or(i64::MAX);
        let open_interest_notional = i128::from(self.stats.open_interest)
            * i128::from(self.stats.last_price.unwrap_or_default().units());
        TickerMsg {
            market_id: &self.market_id,
            market_ticker: &self.ticker,
            price_dollars: self.stats.last_price.unwrap_or_default().to_string(),
            yes_bid_dollars: bid.to_string(),
            yes_ask_dollars: ask.to_string(),
            volume_fp: Size::from_units(self.stats.volume).to_string(),
            open_interest_fp: Size::from_units(self.stats.open_interest).to_string(),
            dollar_volume: dollars(self.stats.notional),
            dollar_open_interest: dollars(open_interest_notional),
            yes_bid_size_fp: bid_size.to_string(),
            yes_ask_size_fp: ask_size.to_string(),
            last_trade_size_fp: self.stats.last_trade_size.to_string(),
            ts: ts_us.div_euclid(1_000_000),
            ts_ms: ts_us.div_euclid(1000),
            time: rfc3339_micros(ts_us),
        }
    }

    pub(super) fn created_msg(&self) -> LifecycleMsg {
        LifecycleMsg {
            market_ticker: self.ticker.clone(),
            event_type: "created",
            exchange_index: Some(0),
            open_ts: Some(self.open_secs),
            close_ts: Some(self.close_secs),
            additional_metadata: Some(AdditionalMetadata {
                name: self.title.clone(),
                title: self.title.clone(),
                yes_sub_title: self.yes_sub_title.clone(),
                no_sub_title: self.no_sub_title.clone(),
                rules_primary: self.rules_primary(),
                rules_secondary: String::new(),
                can_close_early: true,
                event_ticker: self.event_ticker.clone(),
                expected_expiration_ts: self.expected_expiration_secs,
                strike_type: "greater",
                floor_strike: self.strike,
            }),
            price_level_structure: Some(self.dynamics.structure.as_str()),
            price_ranges: Some(self.price_ranges()),
            ..LifecycleMsg::default()
        }
    }

    pub fn rules_primary(&self) -> String {
        format!(
            "If the simulated {} index is above {} at expiration, then the market resolves to Yes.",
            self.series_ticker, self.strike
        )
    }
}

/// Ladder of one side as `[price, size]` strings, ascending (best bid last).
pub(crate) fn levels(book: &Book, side: Side) -> Vec<Level> {
    book.ladder(side)
        .iter()
        .map(|(price, size)| [price.to_string(), size.to_string()])
        .collect()
}

/// A random version-4 UUID from `rng` (deterministic given the seed).
pub(crate) fn uuid(rng: &mut impl Rng) -> String {
    let mut bytes: [u8; 16] = rng.random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Series of the simulated markets: (ticker suffix, what it measures).
pub(crate) const SERIES: [(&str, &str); 8] = [
    ("BTC", "bitcoin price"),
    ("ETH", "ether price"),
    ("FED", "fed funds rate"),
    ("CPI", "CPI print"),
    ("NBA", "NBA points total"),
    ("RAIN", "NYC rainfall"),
    ("GDP", "GDP growth"),
    ("WTI", "oil price"),
];
/// Markets per event and events per series.
pub(crate) const MARKETS_PER_EVENT: usize = 4;
pub(crate) const EVENTS_PER_SERIES: usize = 4;
