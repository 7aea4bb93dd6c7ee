//! The query root: every read of recorded history, plus the caller's account (`me`,
//! `apiKeys`) and `estimateCost`. Resolvers are thin: check the arguments, read from the
//! store, map to view types. The request was priced and charged before it ran (see
//! `graphql::cost`); resolvers do not charge.

use async_graphql::{Context, Object};

use super::account::{self, ApiKeyView, CostEstimate, Me};
use super::args;
use super::context::Store;
use super::cursor;
use super::error::ApiError;
use super::limits;
use super::now_us;
use super::scalars::{DateTimeScalar, DecimalScalar, IntervalScalar, SizeScalar};
use super::types::{
    Candle, CandleSource, CoverageView, Delta, DeltaConnection, DeltaEdge, FeedGap, Limits, Market,
    MarketConnection, MarketEdge, OrderBook, PageInfo, Trade, TradeConnection, TradeEdge,
};
use crate::clickhouse::events::TimeRange;
use crate::clickhouse::markets::{MarketFilter, StoredMarket};
use crate::clickhouse::orderbook::Instants;
use crate::clickhouse::{candles, events, gaps, markets, orderbook};
use crate::market::{MarketMeta, Size};

/// The root of every query.
pub struct QueryRoot;

fn not_found(ticker: &str) -> ApiError {
    ApiError::NotFound(format!(
        "no market {ticker:?} is known: it is not in `markets` and nothing was recorded for it; tickers are case-sensitive, find one with `markets(search: \"...\")`"
    ))
}

/// `NOT_FOUND` unless something is known of `ticker`.
async fn ensure_known(store: &Store, ticker: &str) -> Result<(), ApiError> {
    if store
        .run(orderbook::market_known(&store.clickhouse, ticker))
        .await?
    {
        Ok(())
    } else {
        Err(not_found(ticker))
    }
}

fn page_info(cursors: &[String], has_next_page: bool) -> PageInfo {
    PageInfo {
        has_next_page,
        has_previous_page: false,
        start_cursor: cursors.first().cloned(),
        end_cursor: cursors.last().cloned(),
    }
}

#[Object(name = "Query")]
impl QueryRoot {
    /// The version of the KalshiBook server answering, e.g. "0.1.0". Costs nothing.
    async fn api_version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    /// What `query` (with `variables`, the operation `operationName`) would cost in credits,
    /// per operation, without running or charging it. Costs nothing and needs no key.
    async fn estimate_cost(
        &self,
        #[graphql(desc = "The GraphQL document to price.")] query: String,
        #[graphql(desc = "Its variables, as a JSON object.")] variables: Option<
            async_graphql::Json<serde_json::Value>,
        >,
        #[graphql(desc = "The operation to price when the document holds several.")]
        operation_name: Option<String>,
    ) -> async_graphql::Result<CostEstimate> {
        Ok(account::estimate_cost(
            &query,
            variables.map(|v| v.0),
            operation_name.as_deref(),
        )?)
    }

    /// The caller's account: tier, credits this cycle and usage. Needs a session token
    /// (`Authorization: Bearer <accessToken>`) or an API key (`X-API-Key`). Costs nothing.
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<Me> {
        Ok(account::me(ctx).await?)
    }

    /// The API keys of the signed-in account, revoked ones included, oldest first (never the
    /// keys themselves: their visible prefix). Needs a session token. Costs nothing.
    async fn api_keys(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ApiKeyView>> {
        Ok(account::api_keys(ctx).await?)
    }

    /// The limits this server enforces (page sizes, ranges, depth, timeouts). Costs nothing.
    async fn limits(&self) -> Limits {
        Limits {
            max_book_depth: limits::MAX_BOOK_DEPTH,
            max_page_size: limits::MAX_PAGE_SIZE,
            max_events_range_seconds: limits::MAX_EVENTS_RANGE.as_secs(),
            max_gaps_range_seconds: limits::MAX_GAPS_RANGE.as_secs(),
            max_snapshot_instants: limits::MAX_SNAPSHOT_INSTANTS,
            max_snapshots_range_seconds: limits::MAX_SNAPSHOTS_RANGE.as_secs(),
            max_candles: limits::MAX_CANDLES,
            query_timeout_seconds: limits::QUERY_TIMEOUT.as_secs(),
            max_query_depth: limits::MAX_DEPTH,
            max_query_complexity: limits::MAX_COMPLEXITY,
            max_query_bytes: limits::MAX_QUERY_BYTES,
        }
    }

    /// The order book of one market at one instant, exactly as recorded: the latest snapshot
    /// at or before `at` plus every delta after it up to `at`. `complete` tells whether it is
    /// the exchange's exact book (false inside a recorded feed gap, and when nothing was
    /// recorded within 2 hours before `at`, in which case the ladders are null; a closed
    /// market's empty final book stays complete however long after its close). Errors:
    /// NOT_FOUND for a ticker never seen, BAD_INPUT for a bad argument.
    #[graphql(complexity = "crate::graphql::limits::COST_ORDERBOOK + child_complexity")]
    async fn orderbook(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The market's ticker, e.g. \"KXBTCD-26MAR01-T100000\" (case-sensitive).")]
        ticker: String,
        #[graphql(
            desc = "The instant (exchange time); events stamped at or before it are applied. Omitted: now."
        )]
        at: Option<DateTimeScalar>,
        #[graphql(
            default = 10,
            desc = "Levels per side to return in yesBids/noBids, best first, 1 to 1000. Analytics fields always use the whole book."
        )]
        depth: Option<i32>,
    ) -> async_graphql::Result<OrderBook> {
        let ticker = args::ticker(&ticker)?;
        let depth = args::depth(depth.unwrap_or(limits::DEFAULT_BOOK_DEPTH))?;
        let at = at.map_or_else(now_us, |at| at.0);
        let store = Store::of(ctx)?;
        let read = store
            .run(orderbook::orderbook_at(&store.clickhouse, ticker, at))
            .await?;
        if read.book.is_none() {
            ensure_known(store, ticker).await?;
        }
        Ok(OrderBook::new(ticker, at, read.book, read.in_gap, depth))
    }

    /// The order book of one market at evenly spaced instants `from`, `from + interval`, …
    /// before `to`, computed in one database query (each book equals `orderbook(at:)` at
    /// its instant). At most 1000 instants spanning at most 7 days.
    #[graphql(complexity = "crate::graphql::limits::COST_BOOK_SNAPSHOTS + child_complexity")]
    #[allow(clippy::too_many_arguments)] // one per GraphQL argument
    async fn book_snapshots(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The market's ticker (case-sensitive).")] ticker: String,
        #[graphql(desc = "The first instant.")] from: DateTimeScalar,
        #[graphql(desc = "Instants stop before this (exclusive).")] to: DateTimeScalar,
        #[graphql(
            desc = "Time between instants (required): seconds as an integer (60) or a string such as \"15s\", \"1m\", \"1h\", \"PT1M\"; at least 1 ms."
        )]
        interval: Option<IntervalScalar>,
        #[graphql(
            deprecation = "Use `interval` (60, or 1m as a string).",
            desc = "Seconds between instants; the older form of `interval`."
        )]
        interval_seconds: Option<i32>,
        #[graphql(
            default = 10,
            desc = "Levels per side returned in each book, 1 to 1000."
        )]
        depth: Option<i32>,
    ) -> async_graphql::Result<Vec<OrderBook>> {
        let ticker = args::ticker(&ticker)?;
        let depth = args::depth(depth.unwrap_or(limits::DEFAULT_BOOK_DEPTH))?;
        let range = args::range(from, to, limits::MAX_SNAPSHOTS_RANGE)?;
        let interval_us = args::interval(interval, interval_seconds, "intervalSeconds", 1_000_000)?;
        if interval_us < 1_000 {
            return Err(ApiError::bad_input("interval", "interval must be at least 1 ms").into());
        }
        let count = (range.to_us - range.from_us + interval_us - 1) / interval_us;
        if count > limits::MAX_SNAPSHOT_INSTANTS {
            return Err(ApiError::bad_input(
                "interval",
                format!(
                    "[from, to) at this interval holds {count} instants, more than the limit of {}; widen the interval or shorten the range",
                    limits::MAX_SNAPSHOT_INSTANTS
                ),
            )
            .into());
        }
        let instants = Instants {
            from_us: range.from_us,
            interval_us,
            count: count as u32,
        };
        let store = Store::of(ctx)?;
        let gap_range = TimeRange {
            from_us: range.from_us,
            to_us: instants.last() + 1,
        };
        let (books, (gaps, _)) = tokio::try_join!(
            store.run(orderbook::book_series(&store.clickhouse, ticker, instants)),
            store.run(gaps::gaps_overlapping(
                &store.clickhouse,
                ticker,
                gap_range,
                100_000
            )),
        )?;
        if books.iter().all(Option::is_none) {
            ensure_known(store, ticker).await?;
        }
        Ok(books
            .into_iter()
            .enumerate()
            .map(|(i, book)| {
                let at = instants.at(i as u32);
                let in_gap = gaps.iter().any(|g| g.covers(at));
                OrderBook::new(ticker, at, book, in_gap, depth)
            })
            .collect())
    }

    /// The recorded book deltas of one market in `[from, to)`, in exchange order (time, then
    /// connection, then sequence), one page at a time. Cursors are positions, so paging is
    /// stable while new deltas arrive. The range may span at most 31 days.
    #[graphql(complexity = "crate::graphql::limits::COST_EVENTS_PAGE + child_complexity")]
    async fn deltas(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The market's ticker (case-sensitive).")] ticker: String,
        #[graphql(desc = "Start of the range (inclusive), exchange time.")] from: DateTimeScalar,
        #[graphql(desc = "End of the range (exclusive), exchange time.")] to: DateTimeScalar,
        #[graphql(default = 100, desc = "Deltas per page, 1 to 1000.")] first: Option<i32>,
        #[graphql(
            desc = "Continue after this cursor (a previous page's pageInfo.endCursor); omitted: from the start of the range."
        )]
        after: Option<String>,
    ) -> async_graphql::Result<DeltaConnection> {
        let ticker = args::ticker(&ticker)?;
        let range = args::range(from, to, limits::MAX_EVENTS_RANGE)?;
        let limit = args::page_size(first.unwrap_or(limits::DEFAULT_PAGE_SIZE))?;
        let after = after
            .as_deref()
            .map(cursor::parse_delta_cursor)
            .transpose()?;
        let store = Store::of(ctx)?;
        let page = store
            .run(events::deltas_page(
                &store.clickhouse,
                ticker,
                range,
                after,
                limit,
            ))
            .await?;
        if page.rows.is_empty() && after.is_none() {
            ensure_known(store, ticker).await?;
        }
        let nodes = page
            .rows
            .iter()
            .map(Delta::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        let cursors: Vec<String> = page
            .rows
            .iter()
            .map(|row| cursor::delta_cursor(row.key()))
            .collect();
        Ok(DeltaConnection {
            page_info: page_info(&cursors, page.has_next),
            edges: cursors
                .into_iter()
                .zip(nodes.iter().cloned())
                .map(|(cursor, node)| DeltaEdge { cursor, node })
                .collect(),
            nodes,
        })
    }

    /// The recorded public trades of one market in `[from, to)`, by exchange time then trade
    /// id, one page at a time. The range may span at most 31 days.
    #[graphql(complexity = "crate::graphql::limits::COST_EVENTS_PAGE + child_complexity")]
    async fn trades(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The market's ticker (case-sensitive).")] ticker: String,
        #[graphql(desc = "Start of the range (inclusive), exchange time.")] from: DateTimeScalar,
        #[graphql(desc = "End of the range (exclusive), exchange time.")] to: DateTimeScalar,
        #[graphql(default = 100, desc = "Trades per page, 1 to 1000.")] first: Option<i32>,
        #[graphql(
            desc = "Continue after this cursor (a previous page's pageInfo.endCursor); omitted: from the start of the range."
        )]
        after: Option<String>,
    ) -> async_graphql::Result<TradeConnection> {
        let ticker = args::ticker(&ticker)?;
        let range = args::range(from, to, limits::MAX_EVENTS_RANGE)?;
        let limit = args::page_size(first.unwrap_or(limits::DEFAULT_PAGE_SIZE))?;
        let after = after
            .as_deref()
            .map(cursor::parse_trade_cursor)
            .transpose()?;
        let store = Store::of(ctx)?;
        let page = store
            .run(events::trades_page(
                &store.clickhouse,
                ticker,
                range,
                after.as_ref(),
                limit,
            ))
            .await?;
        if page.rows.is_empty() && after.is_none() {
            ensure_known(store, ticker).await?;
        }
        let nodes = page
            .rows
            .iter()
            .map(Trade::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        let cursors: Vec<String> = page
            .rows
            .iter()
            .map(|row| cursor::trade_cursor(&row.key()))
            .collect();
        Ok(TradeConnection {
            page_info: page_info(&cursors, page.has_next),
            edges: cursors
                .into_iter()
                .zip(nodes.iter().cloned())
                .map(|(cursor, node)| TradeEdge { cursor, node })
                .collect(),
            nodes,
        })
    }

    /// Markets known to the recorder (newest metadata), by ticker, one page at a time,
    /// optionally filtered. Each market's `coverage` tells what was recorded of it.
    #[graphql(complexity = "crate::graphql::limits::COST_MARKETS + child_complexity")]
    #[allow(clippy::too_many_arguments)]
    async fn markets(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "Only markets with this status, case-insensitive: a word of Kalshi's market objects (\"active\", \"closed\", \"determined\", \"finalized\", …) or of its list filter (\"open\" = active, \"unopened\", \"closed\", \"settled\" = settled or finalized)."
        )]
        status: Option<String>,
        #[graphql(desc = "Only markets of this series, e.g. \"KXBTCD\".")] series_ticker: Option<
            String,
        >,
        #[graphql(desc = "Only markets of this event, e.g. \"KXBTCD-26MAR01\".")]
        event_ticker: Option<String>,
        #[graphql(
            desc = "Only markets whose ticker, title or subtitle contains this text (case-insensitive), at most 100 characters."
        )]
        search: Option<String>,
        #[graphql(default = 100, desc = "Markets per page, 1 to 1000.")] first: Option<i32>,
        #[graphql(desc = "Continue after this cursor (a previous page's pageInfo.endCursor).")]
        after: Option<String>,
    ) -> async_graphql::Result<MarketConnection> {
        let filter = MarketFilter {
            status: args::text("status", status)?,
            series_ticker: args::text("seriesTicker", series_ticker)?,
            event_ticker: args::text("eventTicker", event_ticker)?,
            search: args::text("search", search)?,
        };
        let limit = args::page_size(first.unwrap_or(limits::DEFAULT_PAGE_SIZE))?;
        let after = after
            .as_deref()
            .map(cursor::parse_market_cursor)
            .transpose()?;
        let store = Store::of(ctx)?;
        let (found, has_next) = store
            .run(markets::list_markets(
                &store.clickhouse,
                &filter,
                after.as_deref(),
                limit,
            ))
            .await?;
        let look = ctx.look_ahead();
        let wants_coverage = look.field("nodes").field("coverage").exists()
            || look.field("edges").field("node").field("coverage").exists();
        let mut coverage = if wants_coverage && !found.is_empty() {
            let tickers: Vec<String> = found.iter().map(|m| m.meta.ticker.clone()).collect();
            let all = TimeRange {
                from_us: super::scalars::MIN_INSTANT_US,
                to_us: super::scalars::END_INSTANT_US,
            };
            store
                .run(markets::coverage(
                    &store.clickhouse,
                    &tickers,
                    all,
                    now_us(),
                ))
                .await?
        } else {
            Default::default()
        };
        let nodes: Vec<Market> = found
            .into_iter()
            .map(|stored| {
                let view = coverage
                    .remove(&stored.meta.ticker)
                    .map(|c| CoverageView::new(&c, None));
                Market::new(stored, view)
            })
            .collect();
        let cursors: Vec<String> = nodes
            .iter()
            .map(|m| cursor::market_cursor(&m.ticker))
            .collect();
        Ok(MarketConnection {
            page_info: page_info(&cursors, has_next),
            edges: cursors
                .into_iter()
                .zip(nodes.iter().cloned())
                .map(|(cursor, node)| MarketEdge { cursor, node })
                .collect(),
            nodes,
        })
    }

    /// One market by ticker. A market recorded without metadata has status "unknown".
    /// Errors: NOT_FOUND for a ticker never seen.
    #[graphql(complexity = "crate::graphql::limits::COST_MARKETS + child_complexity")]
    async fn market(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The market's ticker (case-sensitive).")] ticker: String,
    ) -> async_graphql::Result<Market> {
        let ticker = args::ticker(&ticker)?;
        let store = Store::of(ctx)?;
        let stored = store
            .run(markets::get_market(&store.clickhouse, ticker))
            .await?;
        let stored = match stored {
            Some(stored) => stored,
            None => {
                ensure_known(store, ticker).await?;
                StoredMarket {
                    meta: MarketMeta {
                        ticker: ticker.to_owned(),
                        status: "unknown".to_owned(),
                        price_ranges_json: "[]".to_owned(),
                        ..MarketMeta::default()
                    },
                    updated_at_us: 0,
                }
            }
        };
        Ok(Market::new(stored, None))
    }

    /// Candles of one market over `[from, to)`, read from pre-aggregated one-minute buckets:
    /// TRADES (trade prices and volume) or MIDPOINT (book midpoint and spread). Candles
    /// start at multiples of the interval since the Unix epoch (UTC; `from` is rounded down
    /// to one); buckets without activity are omitted. At most 1000 candles per call.
    #[graphql(complexity = "crate::graphql::limits::COST_CANDLES + child_complexity")]
    #[allow(clippy::too_many_arguments)] // one per GraphQL argument
    async fn candles(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The market's ticker (case-sensitive).")] ticker: String,
        #[graphql(desc = "Start of the range (inclusive).")] from: DateTimeScalar,
        #[graphql(desc = "End of the range (exclusive).")] to: DateTimeScalar,
        #[graphql(
            desc = "Length of each candle (required), whole minutes from 1 minute to 1 week: seconds as an integer (60, 300, 3600) or a string such as \"1m\", \"5m\", \"1h\", \"1d\", \"PT5M\"."
        )]
        interval: Option<IntervalScalar>,
        #[graphql(
            deprecation = "Use `interval` (5m as a string, or 300).",
            desc = "Minutes per candle; the older form of `interval`."
        )]
        interval_minutes: Option<i32>,
        #[graphql(
            default_with = "Some(CandleSource::Trades)",
            desc = "What to summarise: TRADES (default) or MIDPOINT."
        )]
        source: Option<CandleSource>,
    ) -> async_graphql::Result<Vec<Candle>> {
        let ticker = args::ticker(&ticker)?;
        let interval_us =
            args::interval(interval, interval_minutes, "intervalMinutes", 60_000_000)?;
        let minute_us = 60_000_000;
        if interval_us % minute_us != 0
            || !(1..=i64::from(limits::MAX_CANDLE_MINUTES)).contains(&(interval_us / minute_us))
        {
            return Err(ApiError::bad_input(
                "interval",
                format!(
                    "a candle's interval must be a whole number of minutes from 1 minute to {} minutes (a week), e.g. \"1m\", \"5m\", \"1h\" or 300",
                    limits::MAX_CANDLE_MINUTES
                ),
            )
            .into());
        }
        let interval_s = interval_us / 1_000_000;
        let interval_minutes = interval_s / 60;
        let max_range =
            std::time::Duration::from_secs((limits::MAX_CANDLES as u64) * interval_s as u64);
        let range = args::range(from, to, max_range).map_err(|_| {
            ApiError::bad_input(
                "to",
                format!(
                    "[from, to) must be non-empty and hold at most {} candles of {interval_minutes} minutes ({}); split the range or widen the interval",
                    limits::MAX_CANDLES,
                    args::human(max_range)
                ),
            )
        })?;
        let store = Store::of(ctx)?;
        let out: Vec<Candle> = match source.unwrap_or(CandleSource::Trades) {
            CandleSource::Trades => store
                .run(candles::trade_candles(
                    &store.clickhouse,
                    ticker,
                    range,
                    interval_s,
                ))
                .await?
                .into_iter()
                .map(|c| {
                    let price = |units: u32| DecimalScalar::new(i128::from(units), 4);
                    Candle {
                        start: DateTimeScalar(c.start * 1_000_000),
                        end: DateTimeScalar((c.start + interval_s) * 1_000_000),
                        open: price(c.open),
                        high: price(c.high),
                        low: price(c.low),
                        close: price(c.close),
                        volume: Some(SizeScalar(Size::from_units(c.volume))),
                        count: c.trades,
                        spread_low: None,
                        spread_high: None,
                        spread_average: None,
                    }
                })
                .collect(),
            CandleSource::Midpoint => store
                .run(candles::quote_candles(
                    &store.clickhouse,
                    ticker,
                    range,
                    interval_s,
                ))
                .await?
                .into_iter()
                .map(|c| {
                    // mid2 is twice the midpoint in $0.0001: the midpoint in $0.00001 is 5 × mid2.
                    let mid = |mid2: u32| DecimalScalar::new(i128::from(mid2) * 5, 5);
                    let spread = |units: i32| DecimalScalar::new(i128::from(units), 4);
                    let average = (c.updates > 0).then(|| {
                        DecimalScalar::new(
                            super::analytics::div_round(
                                i128::from(c.spread_sum) * 100,
                                i128::from(c.updates),
                            ),
                            6,
                        )
                    });
                    Candle {
                        start: DateTimeScalar(c.start * 1_000_000),
                        end: DateTimeScalar((c.start + interval_s) * 1_000_000),
                        open: mid(c.mid2_open),
                        high: mid(c.mid2_high),
                        low: mid(c.mid2_low),
                        close: mid(c.mid2_close),
                        volume: None,
                        count: c.updates,
                        spread_low: Some(spread(c.spread_min)),
                        spread_high: Some(spread(c.spread_max)),
                        spread_average: average,
                    }
                })
                .collect(),
        };
        if out.is_empty() {
            ensure_known(store, ticker).await?;
        }
        Ok(out)
    }

    /// Recorded feed gaps of one market overlapping `[from, to)`, by start: spans in which
    /// the recorded book may differ from the exchange's (books there have status IN_GAP).
    /// The range may span at most 366 days.
    #[graphql(complexity = "crate::graphql::limits::COST_MARKETS + child_complexity")]
    async fn feed_gaps(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The market's ticker (case-sensitive).")] ticker: String,
        #[graphql(desc = "Start of the range (inclusive).")] from: DateTimeScalar,
        #[graphql(desc = "End of the range (exclusive).")] to: DateTimeScalar,
        #[graphql(
            default = 100,
            desc = "At most this many gaps, 1 to 1000, earliest first."
        )]
        first: Option<i32>,
    ) -> async_graphql::Result<Vec<FeedGap>> {
        let ticker = args::ticker(&ticker)?;
        let range = args::range(from, to, limits::MAX_GAPS_RANGE)?;
        let first = first.unwrap_or(limits::DEFAULT_PAGE_SIZE);
        if !(1..=limits::MAX_GAPS).contains(&first) {
            return Err(ApiError::bad_input(
                "first",
                format!("first must be between 1 and {}", limits::MAX_GAPS),
            )
            .into());
        }
        let store = Store::of(ctx)?;
        let (found, _) = store
            .run(gaps::gaps_overlapping(
                &store.clickhouse,
                ticker,
                range,
                first as u32,
            ))
            .await?;
        if found.is_empty() {
            ensure_known(store, ticker).await?;
        }
        Ok(found.into_iter().map(FeedGap::from).collect())
    }

    /// What was recorded of one market in `[from, to)`: first and last event, counts of
    /// deltas, snapshots and trades, feed gaps and the time they cover. The range may span
    /// at most 366 days.
    #[graphql(complexity = "crate::graphql::limits::COST_MARKETS + child_complexity")]
    async fn coverage(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The market's ticker (case-sensitive).")] ticker: String,
        #[graphql(desc = "Start of the range (inclusive).")] from: DateTimeScalar,
        #[graphql(desc = "End of the range (exclusive).")] to: DateTimeScalar,
    ) -> async_graphql::Result<CoverageView> {
        let ticker = args::ticker(&ticker)?;
        let range = args::range(from, to, limits::MAX_GAPS_RANGE)?;
        let store = Store::of(ctx)?;
        let tickers = [ticker.to_owned()];
        let mut found = store
            .run(markets::coverage(
                &store.clickhouse,
                &tickers,
                range,
                now_us(),
            ))
            .await?;
        let coverage = found.remove(ticker).unwrap_or_default();
        if coverage.first_us.is_none() && coverage.gaps == 0 {
            ensure_known(store, ticker).await?;
        }
        Ok(CoverageView::new(
            &coverage,
            Some((range.from_us, range.to_us)),
        ))
    }
}
