//! Live subscriptions over WebSocket (`graphql-transport-ws`, and the legacy `graphql-ws`):
//! a market's book, many markets' deltas, trades and lifecycle changes, live from the
//! collector's bus; `orderbook` and `deltas` can start in the past and replay history from
//! ClickHouse into the live feed with no gap and no duplicate at the seam.
//!
//! Resolvers are thin: check arguments, admit (limits), charge the start, subscribe to the
//! bus *before* reading any history, and hand everything to the [`engine::Engine`].

pub mod admission;
pub mod engine;
pub mod types;

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::{Context, Subscription};
use futures_util::{Stream, StreamExt};

pub use admission::{ConnectionScope, LiveConfig, LiveMeter, LiveService};
use engine::{Engine, Mode, Out, Replay};
use types::{BookUpdate, MarketStatusUpdate, TradeUpdate};

use super::scalars::DateTimeScalar;
use super::{ApiError, Store, args, limits, now_us};
use crate::accounts::Operation;
use crate::clickhouse::orderbook::{market_known, orderbook_at};
use crate::clickhouse::replay::ReplayKey;
use crate::live::FeedPosition;

/// The subscription root.
pub struct SubscriptionRoot;

/// The live service and the connection's scope, or why a subscription cannot start here.
fn live_context(ctx: &Context<'_>) -> Result<(Arc<LiveService>, Arc<ConnectionScope>), ApiError> {
    let service = ctx
        .data_opt::<Arc<LiveService>>()
        .cloned()
        .ok_or(ApiError::LiveUnavailable)?;
    let scope = ctx.data_opt::<Arc<ConnectionScope>>().cloned().ok_or_else(|| {
        ApiError::Unauthenticated(
            "subscriptions are served over WebSocket on /graphql (graphql-transport-ws) with an API key in the connection_init payload {\"apiKey\": \"...\"}".to_owned(),
        )
    })?;
    Ok((service, scope))
}

/// Valid, distinct tickers (1 to `MAX_LIVE_TICKERS`).
fn tickers_arg(tickers: Vec<String>) -> Result<Vec<String>, ApiError> {
    if tickers.is_empty() || tickers.len() > limits::MAX_LIVE_TICKERS {
        return Err(ApiError::bad_input(
            "tickers",
            format!(
                "give 1 to {} tickers (open more subscriptions for more markets)",
                limits::MAX_LIVE_TICKERS
            ),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(tickers.len());
    for ticker in &tickers {
        let ticker = args::ticker(ticker)?;
        if !out.iter().any(|t| t == ticker) {
            out.push(ticker.to_owned());
        }
    }
    Ok(out)
}

/// A replay start: not in the future, at most `MAX_REPLAY` ago.
fn from_arg(from: DateTimeScalar) -> Result<i64, ApiError> {
    let now = now_us();
    let oldest = now - i64::try_from(limits::MAX_REPLAY.as_micros()).unwrap_or(i64::MAX);
    if from.0 > now {
        return Err(ApiError::bad_input(
            "from",
            "`from` is in the future; omit it to start live",
        ));
    }
    if from.0 < oldest {
        return Err(ApiError::bad_input(
            "from",
            format!(
                "a replay starts at most {} ago; page older history with the `deltas` query",
                args::human(limits::MAX_REPLAY)
            ),
        ));
    }
    Ok(from.0)
}

/// `NOT_FOUND` for a ticker neither the live feed nor the history knows.
async fn ensure_known(
    ctx: &Context<'_>,
    service: &LiveService,
    tickers: &[String],
) -> Result<(), ApiError> {
    let bus = service.bus()?;
    for ticker in tickers {
        if bus.knows(ticker) {
            continue;
        }
        let store = Store::of(ctx)?;
        if !store.run(market_known(&store.clickhouse, ticker)).await? {
            return Err(ApiError::NotFound(format!(
                "no market {ticker:?} is known (tickers are case-sensitive; list them with `markets`)"
            )));
        }
    }
    Ok(())
}

/// The engine's messages of the kind `pick` keeps (an engine in one mode yields one kind);
/// errors pass through.
fn messages_of<T: Send + 'static>(
    engine: Engine,
    pick: fn(Out) -> Option<T>,
) -> impl Stream<Item = async_graphql::Result<T>> + Send + 'static {
    engine.into_stream().filter_map(move |item| async move {
        match item {
            Ok(out) => pick(out).map(Ok),
            Err(error) => Some(Err(error.into())),
        }
    })
}

fn book_messages(
    engine: Engine,
) -> impl Stream<Item = async_graphql::Result<BookUpdate>> + Send + 'static {
    messages_of(engine, |out| match out {
        Out::Book(message) => Some(message),
        _ => None,
    })
}

/// Live data over WebSocket (graphql-transport-ws on /graphql, API key in connection_init):
/// books, deltas, trades and lifecycle changes as the collector receives them.
#[Subscription(name = "Subscription")]
impl SubscriptionRoot {
    /// One market's order book, live. The first message is the whole book (`SNAPSHOT`, with
    /// the exchange position `conn`/`seq` it stands at); then every change as the collector
    /// applies it (`DELTA`, with the exchange's `seq`), so that a client applying them in
    /// order holds the exchange's book. After an upstream gap the stream says so (`GAP`) and
    /// sends a `SNAPSHOT` with `resync: true`, never a silent jump. With `from`, the book
    /// at `from` and every change since are replayed from history first (`live: false`),
    /// then `CAUGHT_UP`, then live: no change is missing or repeated at the seam.
    /// Costs 5 credits to start and 1 per 1,000 messages.
    async fn orderbook(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The market's ticker (case-sensitive).")] ticker: String,
        #[graphql(
            desc = "Levels per side to keep, 1 to 1000; omitted: the whole book. With a depth, `DELTA` changes are those of the visible levels (a level that comes into view is added), so applying them keeps exactly the top `depth` levels."
        )]
        depth: Option<i32>,
        #[graphql(
            desc = "Replay from this instant (exchange time, at most 24 hours ago) before going live; omitted: start live now."
        )]
        from: Option<DateTimeScalar>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<BookUpdate>>> {
        let ticker = args::ticker(&ticker)?.to_owned();
        let depth = depth.map(args::depth).transpose()?;
        let from = from.map(from_arg).transpose()?;
        let (service, scope) = live_context(ctx)?;
        let tickers = [ticker.clone()];
        ensure_known(ctx, &service, &tickers).await?;
        let permit = service.admit(&scope)?;
        service
            .charge(permit.principal(), Operation::LiveSubscription)
            .await?;
        // Subscribe first: every event from here on is in the queue, and everything before
        // is in history (or in the book taken with the subscription).
        let feed = service.bus()?.subscribe_market(&ticker);
        let mode = Mode::Book { depth };
        let engine = match from {
            None => {
                let initial = (ticker.clone(), feed.book.clone(), feed.position, feed.ts_us);
                Engine::new(
                    service.clone(),
                    permit,
                    mode,
                    vec![feed],
                    None,
                    Some(initial),
                )
            }
            Some(from) => {
                let store = Store::of(ctx)?.clone();
                let stored = store
                    .run(orderbook_at(&store.clickhouse, &ticker, from))
                    .await?;
                let (book, position, key) = match stored.book {
                    Some(at) => (
                        Some(at.book),
                        // The stored position has no sid; the book's own events carry it.
                        Some(FeedPosition {
                            conn: at.position.conn,
                            sid: 0,
                            seq: at.position.seq,
                        }),
                        ReplayKey {
                            ts_us: at.position.ts_us,
                            conn: at.position.conn,
                            seq: at.position.seq,
                            market: ticker.clone(),
                        },
                    ),
                    None => (
                        None,
                        None,
                        ReplayKey {
                            ts_us: from,
                            ..ReplayKey::default()
                        },
                    ),
                };
                let replay = replay_of(&service, store, &[&feed], key);
                Engine::new(
                    service.clone(),
                    permit,
                    mode,
                    vec![feed],
                    Some(replay),
                    Some((ticker, book, position, from)),
                )
            }
        };
        Ok(book_messages(engine))
    }

    /// The exchange's order book deltas of many markets on one subscription, as they are
    /// (one `DELTA` per exchange delta), with `SNAPSHOT` (`resync: true`) after any upstream
    /// gap and `GAP` when one begins. Messages of one market are in its exchange order.
    /// With `from`, history is replayed first (including the snapshots recorded in it), then
    /// `CAUGHT_UP`, then live, with nothing missing or repeated at the seam.
    /// Costs 5 credits to start and 1 per 1,000 messages.
    async fn deltas(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The markets' tickers, 1 to 100 (case-sensitive).")] tickers: Vec<String>,
        #[graphql(
            desc = "Replay from this instant (exchange time, at most 24 hours ago) before going live; omitted: start live now."
        )]
        from: Option<DateTimeScalar>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<BookUpdate>>> {
        let tickers = tickers_arg(tickers)?;
        let from = from.map(from_arg).transpose()?;
        let (service, scope) = live_context(ctx)?;
        ensure_known(ctx, &service, &tickers).await?;
        let permit = service.admit(&scope)?;
        service
            .charge(permit.principal(), Operation::LiveSubscription)
            .await?;
        let bus = service.bus()?;
        let feeds: Vec<_> = tickers.iter().map(|t| bus.subscribe_market(t)).collect();
        let replay = match from {
            None => None,
            Some(from) => {
                let store = Store::of(ctx)?.clone();
                let feed_refs: Vec<_> = feeds.iter().collect();
                Some(replay_of(
                    &service,
                    store,
                    &feed_refs,
                    ReplayKey {
                        ts_us: from,
                        ..ReplayKey::default()
                    },
                ))
            }
        };
        let engine = Engine::new(service.clone(), permit, Mode::Deltas, feeds, replay, None);
        Ok(book_messages(engine))
    }

    /// Public trades of many markets, live. Costs 5 credits to start and 1 per 1,000 messages.
    async fn trades(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The markets' tickers, 1 to 100 (case-sensitive).")] tickers: Vec<String>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<TradeUpdate>>> {
        let engine = start_plain(ctx, tickers, Mode::Trades).await?;
        Ok(messages_of(engine, |out| match out {
            Out::Trade(message) => Some(message),
            _ => None,
        }))
    }

    /// Lifecycle changes (opened, closed, determined, settled, …) of many markets, live.
    /// Costs 5 credits to start and 1 per 1,000 messages.
    async fn market_status(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The markets' tickers, 1 to 100 (case-sensitive).")] tickers: Vec<String>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<MarketStatusUpdate>>> {
        let engine = start_plain(ctx, tickers, Mode::Status).await?;
        Ok(messages_of(engine, |out| match out {
            Out::Status(message) => Some(message),
            _ => None,
        }))
    }
}

/// A live-only subscription of many markets.
async fn start_plain(
    ctx: &Context<'_>,
    tickers: Vec<String>,
    mode: Mode,
) -> Result<Engine, ApiError> {
    let tickers = tickers_arg(tickers)?;
    let (service, scope) = live_context(ctx)?;
    ensure_known(ctx, &service, &tickers).await?;
    let permit = service.admit(&scope)?;
    service
        .charge(permit.principal(), Operation::LiveSubscription)
        .await?;
    let bus = service.bus()?;
    let feeds = tickers.iter().map(|t| bus.subscribe_market(t)).collect();
    Ok(Engine::new(
        service.clone(),
        permit,
        mode,
        feeds,
        None,
        None,
    ))
}

/// The history part of a replay of `feeds`' markets, starting after `key`.
fn replay_of(
    _service: &LiveService,
    store: Store,
    feeds: &[&crate::live::MarketFeed],
    key: ReplayKey,
) -> Replay {
    let targets: HashMap<String, (u64, u64)> = feeds
        .iter()
        .filter_map(|f| f.position.map(|p| (f.market.clone(), (p.conn, p.seq))))
        .collect();
    Replay {
        store,
        markets: feeds.iter().map(|f| f.market.clone()).collect(),
        key,
        targets,
        waiting_since: None,
    }
}
