//! The stream behind every live subscription: bus events (and, for a replay, stored history
//! first) turned into messages, with the seam between history and live deduplicated by feed
//! position, heartbeats on idle streams, metering per message block, and the endings a client
//! is told about (slow consumer, credits exhausted, shutdown).
//!
//! The engine is polled by the WebSocket connection only when the client can take another
//! message, so a client that stops reading stops the engine, its market queues fill up, and
//! the next receive reports `Lagged`: it is told `SLOW_CONSUMER` and ended. Nothing upstream
//! ever waits for it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use futures_util::stream::{BoxStream, SelectAll};
use futures_util::{Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use super::admission::{LiveService, Permit};
use super::types::{
    BookUpdate, BookUpdateKind, LevelChange, MarketStatusKind, MarketStatusUpdate, TradeUpdate,
    TradeUpdateKind, levels_view, side_view, top_levels,
};
use crate::accounts::LIVE_MESSAGES_PER_BLOCK;
use crate::accounts::Operation;
use crate::clickhouse::replay::{ReplayChange, ReplayEvent, ReplayKey, replay_page};
use crate::graphql::scalars::{DateTimeScalar, PriceScalar, SizeScalar};
use crate::graphql::{ApiError, Store, now_us};
use crate::live::{FeedPosition, LiveEvent, MarketFeed};
use crate::market::{Book, Price, Side, Size};

/// Rows per history page of a replay.
const REPLAY_PAGE: u32 = 2_000;
/// How often a replay that has read everything stored asks again, while the history store
/// has not yet written what the live feed already published (the collector writes in
/// batches about once a second).
const CATCH_UP_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// What a subscription sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One market's book: a snapshot first, then its changes, limited to `depth` levels per
    /// side (`None`: the whole book, and the changes are the exchange's deltas as they are).
    Book { depth: Option<usize> },
    /// The exchange's deltas (and re-snapshots) of many markets as they are.
    Deltas,
    /// Public trades.
    Trades,
    /// Lifecycle changes.
    Status,
}

/// One message of any subscription.
#[derive(Debug)]
pub enum Out {
    Book(BookUpdate),
    Trade(TradeUpdate),
    Status(MarketStatusUpdate),
}

/// The history part of a replay-then-live subscription.
pub struct Replay {
    pub store: Store,
    pub markets: Vec<String>,
    /// The next page starts strictly after this.
    pub key: ReplayKey,
    /// Per market, the last book event the live feed had published when the subscription
    /// began: history is complete once it has reached every one of them.
    pub targets: HashMap<String, (u64, u64)>,
    /// Since when history has been read to its end without reaching the targets.
    pub waiting_since: Option<Instant>,
}

type Feed = BoxStream<'static, Result<Arc<LiveEvent>, RecvError>>;

/// A broadcast receiver as a stream that ends after reporting `Closed`.
fn receiver_stream(receiver: tokio::sync::broadcast::Receiver<Arc<LiveEvent>>) -> Feed {
    futures_util::stream::unfold(Some(receiver), |receiver| async move {
        let mut receiver = receiver?;
        match receiver.recv().await {
            Err(RecvError::Closed) => Some((Err(RecvError::Closed), None)),
            other => Some((other, Some(receiver))),
        }
    })
    .boxed()
}

/// A running subscription.
pub struct Engine {
    service: Arc<LiveService>,
    permit: Permit,
    mode: Mode,
    feeds: SelectAll<Feed>,
    /// Per market, the (conn, seq) of the last book event sent or passed over: anything at
    /// or before it is a duplicate.
    last: HashMap<String, (u64, u64)>,
    /// Per market, the book the client holds (`Mode::Book` only); `None` while unknown.
    books: HashMap<String, Option<Book>>,
    /// Markets that have had a message (a later snapshot is then a re-snapshot).
    started: std::collections::HashSet<String>,
    pending: VecDeque<Out>,
    replay: Option<Replay>,
    live: bool,
    /// The single market of an `orderbook`, for its heartbeats.
    ticker: Option<String>,
    last_seq: Option<u64>,
    last_sent: Instant,
    sent: u64,
    finished: bool,
}

fn position_of(position: Option<FeedPosition>) -> Option<(u64, u64)> {
    position.map(|p| (p.conn, p.seq))
}

impl Engine {
    /// A subscription over `feeds` (taken before any history is read). With `replay`, history
    /// is sent first; `initial` is the book a `Mode::Book` subscription starts from (the live
    /// book, or the stored book at `from`), with its position.
    #[must_use]
    pub fn new(
        service: Arc<LiveService>,
        permit: Permit,
        mode: Mode,
        feeds: Vec<MarketFeed>,
        replay: Option<Replay>,
        initial: Option<(String, Option<Book>, Option<FeedPosition>, i64)>,
    ) -> Self {
        let live = replay.is_none();
        let mut engine = Self {
            service,
            permit,
            mode,
            feeds: futures_util::stream::select_all(Vec::new()),
            last: HashMap::new(),
            books: HashMap::new(),
            started: std::collections::HashSet::new(),
            pending: VecDeque::new(),
            replay,
            live,
            ticker: initial.as_ref().map(|(t, ..)| t.clone()),
            last_seq: None,
            last_sent: Instant::now(),
            sent: 0,
            finished: false,
        };
        for feed in feeds {
            if live && let Some(position) = position_of(feed.position) {
                engine.last.insert(feed.market.clone(), position);
            }
            engine.feeds.push(receiver_stream(feed.receiver));
        }
        if let Some((ticker, book, position, ts_us)) = initial {
            match book {
                Some(book) => {
                    let at = if ts_us > 0 { ts_us } else { now_us() };
                    engine.send_snapshot(&ticker, &book, position, at, false);
                    engine.books.insert(ticker.clone(), Some(book));
                }
                None if live => engine.send_gap(&ticker, now_us()),
                None => {}
            }
            if let Some(position) = position_of(position) {
                engine.last.insert(ticker, position);
            }
        }
        engine
    }

    /// The engine as the stream a resolver returns.
    pub fn into_stream(self) -> impl Stream<Item = Result<Out, ApiError>> + Send + 'static {
        futures_util::stream::unfold(self, |mut engine| async move {
            engine.next().await.map(|item| (item, engine))
        })
    }

    fn end(&mut self, error: ApiError) -> Option<Result<Out, ApiError>> {
        self.finished = true;
        Some(Err(error))
    }

    /// The next message, or the final error, or `None` when ended.
    async fn next(&mut self) -> Option<Result<Out, ApiError>> {
        loop {
            if self.finished {
                return None;
            }
            if let Some(out) = self.pending.pop_front() {
                if !is_heartbeat(&out) {
                    if self.sent.is_multiple_of(LIVE_MESSAGES_PER_BLOCK)
                        && let Err(error) = self
                            .service
                            .charge(self.permit.principal(), Operation::LiveMessages)
                            .await
                    {
                        return self.end(error);
                    }
                    self.sent += 1;
                }
                self.last_sent = Instant::now();
                return Some(Ok(out));
            }
            if self.service.shutdown.is_cancelled() {
                return self.end(ApiError::ShuttingDown);
            }
            if self.replay.is_some() {
                if let Err(error) = self.replay_step().await {
                    return self.end(error);
                }
                continue;
            }
            let heartbeat_at = self.last_sent + self.service.config.heartbeat;
            // Cancel safety: `cancelled`, `SelectAll::next` over broadcast receivers and
            // `sleep_until` lose nothing when another branch wins.
            tokio::select! {
                biased;
                () = self.service.shutdown.cancelled() => return self.end(ApiError::ShuttingDown),
                item = self.feeds.next() => match item {
                    Some(Ok(event)) => self.on_live(&event),
                    Some(Err(RecvError::Lagged(missed))) => {
                        return self.end(ApiError::SlowConsumer(format!(
                            "this subscription fell {missed} messages behind the live feed (the client did not read fast enough; each market's queue holds {}) and was ended; subscribe again to get a fresh snapshot",
                            crate::live::MARKET_QUEUE
                        )));
                    }
                    Some(Err(RecvError::Closed)) | None => return self.end(ApiError::LiveUnavailable),
                },
                () = tokio::time::sleep_until(heartbeat_at) => self.send_heartbeat(),
            }
        }
    }

    /// Reads one page of history, or finds history complete, or waits for the store.
    async fn replay_step(&mut self) -> Result<(), ApiError> {
        let Some(replay) = self.replay.as_mut() else {
            return Ok(());
        };
        let page = replay
            .store
            .run(replay_page(
                &replay.store.clickhouse,
                &replay.markets,
                &replay.key,
                REPLAY_PAGE,
            ))
            .await?;
        if let Some(last) = page.last() {
            replay.key = last.key();
            replay.waiting_since = None;
        }
        let full = page.len() == REPLAY_PAGE as usize;
        for event in page {
            self.on_history(event);
        }
        if full {
            return Ok(());
        }
        let Some(replay) = self.replay.as_ref() else {
            return Ok(());
        };
        let caught_up = replay
            .targets
            .iter()
            .all(|(market, target)| self.last.get(market).is_some_and(|last| last >= target));
        if caught_up {
            self.replay = None;
            self.live = true;
            let mut message = BookUpdate::bare(
                BookUpdateKind::CaughtUp,
                self.ticker.clone(),
                now_us(),
                true,
            );
            message.seq = self.last_seq;
            self.pending.push_back(Out::Book(message));
            return Ok(());
        }
        let Some(replay) = self.replay.as_mut() else {
            return Ok(());
        };
        let waiting_since = *replay.waiting_since.get_or_insert_with(Instant::now);
        if waiting_since.elapsed() >= self.service.config.catch_up_timeout {
            tracing::warn!("history store did not reach the live feed in time for a replay");
            return Err(ApiError::Unavailable);
        }
        tokio::select! {
            () = self.service.shutdown.cancelled() => Err(ApiError::ShuttingDown),
            () = tokio::time::sleep(CATCH_UP_POLL) => Ok(()),
        }
    }

    fn on_history(&mut self, event: ReplayEvent) {
        let position = FeedPosition {
            conn: event.conn,
            sid: event.sid,
            seq: event.seq,
        };
        match event.change {
            ReplayChange::Snapshot(book) => {
                self.on_snapshot(&event.market, position, event.ts_us, &book, false);
            }
            ReplayChange::Delta { side, price, delta } => self.on_delta(
                &event.market,
                position,
                event.ts_us,
                event.ts_received_us,
                (side, price, delta),
            ),
        }
    }

    fn on_live(&mut self, event: &LiveEvent) {
        match (self.mode, event) {
            (
                Mode::Book { .. } | Mode::Deltas,
                LiveEvent::Snapshot {
                    market,
                    position,
                    ts_us,
                    book,
                    resync,
                },
            ) => self.on_snapshot(market, *position, *ts_us, book, *resync),
            (
                Mode::Book { .. } | Mode::Deltas,
                LiveEvent::Delta {
                    market,
                    position,
                    ts_us,
                    ts_received_us,
                    side,
                    price,
                    delta,
                },
            ) => self.on_delta(
                market,
                *position,
                *ts_us,
                *ts_received_us,
                (*side, *price, *delta),
            ),
            (Mode::Book { .. } | Mode::Deltas, LiveEvent::Gap { market, ts_us }) => {
                self.books.insert(market.clone(), None);
                self.send_gap(market, *ts_us);
            }
            (
                Mode::Trades,
                LiveEvent::Trade {
                    market,
                    position,
                    ts_us,
                    trade_id,
                    yes_price,
                    count,
                    taker_side,
                },
            ) => self.pending.push_back(Out::Trade(TradeUpdate {
                kind: TradeUpdateKind::Trade,
                ticker: Some(market.clone()),
                at: DateTimeScalar(*ts_us),
                conn: Some(position.conn),
                seq: Some(position.seq),
                trade_id: Some(trade_id.clone()),
                yes_price: Some(PriceScalar(*yes_price)),
                no_price: Some(PriceScalar(yes_price.complement())),
                count: Some(SizeScalar(*count)),
                taker_side: Some(side_view(*taker_side)),
            })),
            (
                Mode::Status,
                LiveEvent::MarketStatus {
                    market,
                    ts_us,
                    event_type,
                },
            ) => self.pending.push_back(Out::Status(MarketStatusUpdate {
                kind: MarketStatusKind::Status,
                ticker: Some(market.clone()),
                at: DateTimeScalar(*ts_us),
                event_type: Some(event_type.clone()),
            })),
            _ => {}
        }
    }

    /// Whether `position` was already sent (or passed over) for `market`; records it if not.
    fn is_duplicate(&mut self, market: &str, position: FeedPosition) -> bool {
        let at = (position.conn, position.seq);
        match self.last.get_mut(market) {
            Some(last) if at <= *last => true,
            Some(last) => {
                *last = at;
                false
            }
            None => {
                self.last.insert(market.to_owned(), at);
                false
            }
        }
    }

    fn on_snapshot(
        &mut self,
        market: &str,
        position: FeedPosition,
        ts_us: i64,
        book: &Book,
        resync: bool,
    ) {
        if self.is_duplicate(market, position) {
            return;
        }
        let resync = resync || self.started.contains(market);
        self.send_snapshot(market, book, Some(position), ts_us, resync);
        if matches!(self.mode, Mode::Book { .. }) {
            self.books.insert(market.to_owned(), Some(book.clone()));
        }
    }

    fn on_delta(
        &mut self,
        market: &str,
        position: FeedPosition,
        ts_us: i64,
        ts_received_us: i64,
        (side, price, delta): (Side, Price, Size),
    ) {
        if self.is_duplicate(market, position) {
            return;
        }
        let changes = match self.mode {
            Mode::Book { depth } => {
                let Some(Some(book)) = self.books.get_mut(market) else {
                    // No book yet (a replay before its first snapshot): nothing to change.
                    return;
                };
                let before = top_levels(book, side, depth);
                if book.apply_delta(side, price, delta).is_err() {
                    // The collector applied the same delta to the same book; disagreeing
                    // here is a fault, and the honest answer is "unknown until resync".
                    tracing::error!(
                        market,
                        "a live delta does not apply to the subscriber's book"
                    );
                    self.books.insert(market.to_owned(), None);
                    self.send_gap(market, ts_us);
                    return;
                }
                if depth.is_none() {
                    vec![(side, price, delta)]
                } else {
                    visible_changes(side, &before, &top_levels(book, side, depth))
                }
            }
            _ => vec![(side, price, delta)],
        };
        if changes.is_empty() {
            // Outside the requested depth: the client's book does not change.
            return;
        }
        self.started.insert(market.to_owned());
        self.last_seq = Some(position.seq);
        let mut message = BookUpdate::bare(
            BookUpdateKind::Delta,
            Some(market.to_owned()),
            ts_us,
            self.live,
        );
        message.received_at = Some(DateTimeScalar(ts_received_us));
        message.conn = Some(position.conn);
        message.sid = Some(position.sid);
        message.seq = Some(position.seq);
        message.changes = changes
            .into_iter()
            .map(|(side, price, delta)| LevelChange {
                side: side_view(side),
                price: PriceScalar(price),
                delta: SizeScalar(delta),
            })
            .collect();
        self.pending.push_back(Out::Book(message));
    }

    fn send_snapshot(
        &mut self,
        market: &str,
        book: &Book,
        position: Option<FeedPosition>,
        ts_us: i64,
        resync: bool,
    ) {
        let depth = match self.mode {
            Mode::Book { depth } => depth,
            _ => None,
        };
        self.started.insert(market.to_owned());
        let mut message = BookUpdate::bare(
            BookUpdateKind::Snapshot,
            Some(market.to_owned()),
            ts_us,
            self.live,
        );
        if let Some(position) = position {
            message.conn = Some(position.conn);
            // A stored book's position has no sid (0): say nothing rather than a wrong one.
            message.sid = (position.sid != 0).then_some(position.sid);
            message.seq = Some(position.seq);
            self.last_seq = Some(position.seq);
        }
        message.resync = resync;
        message.yes = Some(levels_view(book, Side::Yes, depth));
        message.no = Some(levels_view(book, Side::No, depth));
        self.pending.push_back(Out::Book(message));
    }

    fn send_gap(&mut self, market: &str, ts_us: i64) {
        self.pending.push_back(Out::Book(BookUpdate::bare(
            BookUpdateKind::Gap,
            Some(market.to_owned()),
            ts_us,
            self.live,
        )));
    }

    fn send_heartbeat(&mut self) {
        let at = now_us();
        let out = match self.mode {
            Mode::Book { .. } | Mode::Deltas => {
                let mut message =
                    BookUpdate::bare(BookUpdateKind::Heartbeat, self.ticker.clone(), at, true);
                message.seq = self.last_seq;
                Out::Book(message)
            }
            Mode::Trades => Out::Trade(TradeUpdate {
                kind: TradeUpdateKind::Heartbeat,
                ticker: None,
                at: DateTimeScalar(at),
                conn: None,
                seq: None,
                trade_id: None,
                yes_price: None,
                no_price: None,
                count: None,
                taker_side: None,
            }),
            Mode::Status => Out::Status(MarketStatusUpdate {
                kind: MarketStatusKind::Heartbeat,
                ticker: None,
                at: DateTimeScalar(at),
                event_type: None,
            }),
        };
        self.pending.push_back(out);
    }
}

fn is_heartbeat(out: &Out) -> bool {
    match out {
        Out::Book(m) => m.kind == BookUpdateKind::Heartbeat,
        Out::Trade(m) => m.kind == TradeUpdateKind::Heartbeat,
        Out::Status(m) => m.kind == MarketStatusKind::Heartbeat,
    }
}

/// The signed size changes that turn the visible levels `before` into `after` (both best
/// first, one side): what a client holding only the top levels must apply.
fn visible_changes(
    side: Side,
    before: &[(Price, Size)],
    after: &[(Price, Size)],
) -> Vec<(Side, Price, Size)> {
    let mut sizes: std::collections::BTreeMap<Price, i64> = std::collections::BTreeMap::new();
    for (price, size) in before {
        *sizes.entry(*price).or_default() -= size.units();
    }
    for (price, size) in after {
        *sizes.entry(*price).or_default() += size.units();
    }
    sizes
        .into_iter()
        .rev()
        .filter(|(_, change)| *change != 0)
        .map(|(price, change)| (side, price, Size::from_units(change)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(price: u32, size: i64) -> (Price, Size) {
        (Price::from_units(price), Size::from_units(size))
    }

    #[test]
    fn removing_a_visible_level_reveals_the_next_one() {
        let before = [level(500, 10), level(400, 20)];
        let after = [level(400, 20), level(300, 5)];
        assert_eq!(
            visible_changes(Side::Yes, &before, &after),
            vec![
                (Side::Yes, Price::from_units(500), Size::from_units(-10)),
                (Side::Yes, Price::from_units(300), Size::from_units(5)),
            ]
        );
        assert!(visible_changes(Side::No, &after, &after).is_empty());
    }
}
