//! The exchange's state under one lock: markets and their books, the ground truth, every
//! connection's subscriptions, and the fan-out that turns one market event into frames on
//! every subscription that wants it. Because subscribing (with its snapshots) and publishing
//! both happen under this lock, a snapshot and the deltas after it are always queued in order.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

use super::clock::{now_us, rfc3339_micros};
use super::dynamics::{Action, Fill, MarketDynamics};
use super::faults::{Faults, MalformedKind, malformed_text};
use super::market::{
    EVENTS_PER_SERIES, MARKETS_PER_EVENT, SERIES, SimMarket, Stats, Status, Top, top, uuid,
};
use super::messages::{DeltaMsg, Frame, LifecycleMsg, SnapshotMsg, TickerMsg, TradeMsg};
use super::outbox::{OutFrame, Outbox};
use super::subscription::{Channel, Conn, Sub};
use super::ticks::PriceLevelStructure;
use super::truth::Truth;
use super::{SentDelta, Shared, SimConfig};
use crate::market::{Book, Price, Side};

/// What one publication is, for the fan-out.
pub(crate) enum Publication<'a> {
    Delta(DeltaMsg<'a>, SentDelta),
    Trade(TradeMsg<'a>),
    Ticker(TickerMsg<'a>),
    /// An unrequested snapshot (empty at close).
    Snapshot(SnapshotMsg<'a>),
}

/// The exchange: markets, truth, connections. Guarded by one mutex in [`Shared`].
pub(crate) struct Exchange {
    pub(super) markets: Vec<SimMarket>,
    pub(super) index: HashMap<String, usize>,
    pub(super) ids: HashMap<String, usize>,
    /// Markets, books, activity and trade ids: deterministic given the seed.
    pub(super) rng: StdRng,
    pub(super) faults: Faults,
    pub(super) truth: Truth,
    pub(super) conns: BTreeMap<u64, Conn>,
    pub(super) next_conn: u64,
    pub(super) next_change: u64,
    pub(super) last_ts_us: i64,
    pub(super) paused: bool,
    pub(super) generated: u64,
    /// (cumulative weight, market index) of the active markets, for `pick_market`.
    pub(super) active_weights: Option<Vec<(u64, usize)>>,
    pub(super) churn_every_events: u64,
    pub(super) churn_step: u64,
    pub(super) sub_cent_pct: u8,
    pub(super) outbox_capacity: usize,
}

impl Exchange {
    /// The exchange with `config.markets` open markets, their initial books recorded as truth.
    pub fn new(config: &SimConfig, truth: Truth) -> Self {
        let mut exchange = Self {
            markets: Vec::new(),
            index: HashMap::new(),
            ids: HashMap::new(),
            rng: StdRng::seed_from_u64(config.seed),
            faults: Faults::new(
                config.seed,
                config.drop_per_mille,
                config.malformed_per_mille,
            ),
            truth,
            conns: BTreeMap::new(),
            next_conn: 1,
            next_change: 0,
            last_ts_us: 0,
            paused: false,
            generated: 0,
            active_weights: None,
            churn_every_events: config.churn_every_events,
            churn_step: 0,
            sub_cent_pct: config.sub_cent_pct,
            outbox_capacity: config.outbox_capacity,
        };
        let count = config.markets;
        for _ in 0..count {
            let index = exchange.create_market(Status::Active, true, count);
            let market = &mut exchange.markets[index];
            let levels = market.dynamics.initial_levels(&mut exchange.rng);
            market.book = Book::from_levels(levels);
            let (bid, _, ask, _) = market.quotes();
            market.stats.previous_yes_bid = bid;
            market.stats.previous_yes_ask = ask;
            market.stats.previous_price = Price::from_units(market.dynamics.fair);
            market.stats.last_price = Some(Price::from_units(market.dynamics.fair));
            market.stats.volume = exchange.rng.random_range(100..100_000) * 100;
            market.stats.open_interest = market.stats.volume / 10 * 6;
            let ts_ms = exchange.next_ts() / 1000;
            let change = exchange.next_change();
            let market = &exchange.markets[index];
            exchange
                .truth
                .snapshot(&market.ticker, ts_ms, change, &market.book);
        }
        exchange
    }

    /// Exchange time of a change: wall clock µs, never going backwards.
    pub(crate) fn next_ts(&mut self) -> i64 {
        self.last_ts_us = now_us().max(self.last_ts_us);
        self.last_ts_us
    }

    pub(crate) fn next_change(&mut self) -> u64 {
        let change = self.next_change;
        self.next_change += 1;
        change
    }

    /// Adds a market (empty book) and returns its index. `backdated` markets were created
    /// days ago (the ones open at start); `population` spreads their activity.
    pub(crate) fn create_market(
        &mut self,
        status: Status,
        backdated: bool,
        population: usize,
    ) -> usize {
        let index = self.markets.len();
        self.active_weights = None;
        let event = index / MARKETS_PER_EVENT;
        let (series_code, subject) = SERIES[(event / EVENTS_PER_SERIES) % SERIES.len()];
        let round = event / EVENTS_PER_SERIES / SERIES.len();
        let series_ticker = if round == 0 {
            format!("KXSIM{series_code}")
        } else {
            format!("KXSIM{series_code}{round}")
        };
        let event_ticker = format!("{series_ticker}-26E{event:03}");
        let strike = 1000 + 250 * (index % MARKETS_PER_EVENT) as i64;
        let ticker = format!("{event_ticker}-T{strike}");
        let rng = &mut self.rng;
        let structure = if rng.random_range(0..100u8) < self.sub_cent_pct {
            if rng.random_bool(0.67) {
                PriceLevelStructure::TaperedDeciCent
            } else {
                PriceLevelStructure::DeciCent
            }
        } else {
            PriceLevelStructure::LinearCent
        };
        let fractional = rng.random_bool(0.7);
        let dynamics = MarketDynamics::new(rng, structure, fractional);
        let spread = u32::try_from(population.max(1)).unwrap_or(u32::MAX);
        let weight = 10_000 / (1 + rng.random_range(0..spread));
        let market_id = uuid(rng);
        let now = now_us();
        let now_secs = now / 1_000_000;
        let created_us = if backdated {
            now - rng.random_range(1..20) * 86_400_000_000 - rng.random_range(0..86_400_000_000)
        } else {
            now
        };
        let open_secs = if backdated {
            created_us / 1_000_000 + 240
        } else {
            now_secs
        };
        let close_secs = (now_secs / 3600 + 24 * rng.random_range(1..30)) * 3600;
        let market = SimMarket {
            title: format!("Will the {subject} be above {strike}?"),
            yes_sub_title: format!("Above {strike}"),
            no_sub_title: format!("{strike} or below"),
            ticker: ticker.clone(),
            event_ticker,
            series_ticker,
            market_id: market_id.clone(),
            strike,
            status,
            book: Book::default(),
            dynamics,
            weight: weight.max(1),
            created_us,
            updated_us: created_us,
            open_secs,
            close_secs,
            expected_expiration_secs: close_secs,
            latest_expiration_secs: close_secs + 7 * 86_400,
            stats: Stats {
                previous_yes_ask: Price::ONE_DOLLAR,
                ..Stats::default()
            },
            result: None,
            determined_secs: None,
            settled_secs: None,
        };
        self.markets.push(market);
        self.index.insert(ticker, index);
        self.ids.insert(market_id, index);
        index
    }

    pub fn market_index(&self, ticker: &str) -> Option<usize> {
        self.index.get(ticker).copied()
    }

    pub fn market_by_id(&self, id: &str) -> Option<usize> {
        self.ids.get(id).copied()
    }

    pub fn tickers(&self) -> Vec<String> {
        self.markets.iter().map(|m| m.ticker.clone()).collect()
    }

    pub fn active_tickers(&self) -> Vec<String> {
        self.markets
            .iter()
            .filter(|m| m.status == Status::Active)
            .map(|m| m.ticker.clone())
            .collect()
    }

    pub fn status_of(&self, ticker: &str) -> Option<&'static str> {
        self.market_index(ticker)
            .map(|i| self.markets[i].status.as_str())
    }

    pub fn structure_of(&self, ticker: &str) -> Option<PriceLevelStructure> {
        self.market_index(ticker)
            .map(|i| self.markets[i].dynamics.structure)
    }

    // ---- connections ----

    /// Registers a connection; returns its id, its queue and its cancellation token.
    pub fn connect(&mut self, cancel: CancellationToken) -> (u64, Arc<Outbox>) {
        let id = self.next_conn;
        self.next_conn += 1;
        let outbox = Arc::new(Outbox::new(self.outbox_capacity));
        self.conns.insert(
            id,
            Conn {
                subs: BTreeMap::new(),
                next_sid: 1,
                outbox: outbox.clone(),
                cancel,
            },
        );
        (id, outbox)
    }

    pub fn disconnect(&mut self, id: u64) {
        if let Some(conn) = self.conns.remove(&id) {
            conn.cancel.cancel();
        }
    }

    pub fn disconnect_all(&mut self) {
        for (_, conn) in std::mem::take(&mut self.conns) {
            conn.cancel.cancel();
        }
    }

    /// A connection together with the markets (and the ticker index) it may read.
    pub fn split_conn(
        &mut self,
        id: u64,
    ) -> Option<(&mut Conn, &[SimMarket], &HashMap<String, usize>)> {
        let conn = self.conns.get_mut(&id)?;
        Some((conn, &self.markets, &self.index))
    }

    pub fn conn_mut(&mut self, id: u64) -> Option<&mut Conn> {
        self.conns.get_mut(&id)
    }

    pub fn connection_ids(&self) -> Vec<u64> {
        self.conns.keys().copied().collect()
    }

    pub fn subscribed_markets(&self, id: u64) -> Vec<String> {
        let Some(conn) = self.conns.get(&id) else {
            return Vec::new();
        };
        let markets: BTreeSet<&String> = conn
            .subs
            .values()
            .filter(|sub| sub.channel == Channel::OrderbookDelta)
            .filter_map(|sub| sub.markets.as_ref())
            .flatten()
            .collect();
        markets.into_iter().cloned().collect()
    }

    // ---- generation ----

    /// Generates `events` market events (and the churn steps they reach).
    pub fn generate(&mut self, events: u64) {
        for _ in 0..events {
            self.generated += 1;
            if self.churn_every_events > 0 && self.generated.is_multiple_of(self.churn_every_events)
            {
                self.churn();
            }
            let Some(index) = self.pick_market() else {
                continue;
            };
            let before = top(&self.markets[index].book);
            let market = &mut self.markets[index];
            let actions = market.dynamics.step(&mut self.rng, &mut market.book);
            self.publish_actions(index, &actions, before);
        }
    }

    /// An active market, chosen by activity weight (cumulative weights cached until a
    /// market's status or weight changes; the draw is the same as a linear scan's).
    fn pick_market(&mut self) -> Option<usize> {
        let markets = &self.markets;
        let cumulative = self.active_weights.get_or_insert_with(|| {
            let mut total = 0u64;
            markets
                .iter()
                .enumerate()
                .filter(|(_, m)| m.status == Status::Active)
                .map(|(index, m)| {
                    total += u64::from(m.weight);
                    (total, index)
                })
                .collect()
        });
        let total = cumulative.last()?.0;
        let target = self.rng.random_range(0..total);
        let slot = cumulative.partition_point(|(end, _)| *end <= target);
        cumulative.get(slot).map(|(_, index)| *index)
    }

    /// Sets a market's status (and forgets the cached activity weights).
    pub(crate) fn set_status(&mut self, index: usize, status: Status) {
        self.markets[index].status = status;
        self.active_weights = None;
    }

    /// Records and publishes what happened in market `index`; `before` is its top of book
    /// before (a ticker frame follows when the top moved or it traded).
    pub(crate) fn publish_actions(&mut self, index: usize, actions: &[Action], before: Top) {
        if actions.is_empty() {
            return;
        }
        let ts_us = self.next_ts();
        let ts_ms = ts_us / 1000;
        let mut changes = Vec::new();
        let mut fills: Vec<(String, Fill)> = Vec::new();
        for action in actions {
            match action {
                Action::Delta { side, price, delta } => {
                    let change = self.next_change();
                    let ticker = &self.markets[index].ticker;
                    self.truth
                        .delta(ticker, ts_ms, change, *side, *price, *delta);
                    changes.push((*side, *price, *delta));
                }
                Action::Trade(fill) => {
                    let id = uuid(&mut self.rng);
                    let stats = &mut self.markets[index].stats;
                    stats.last_price = Some(fill.yes_price);
                    stats.last_trade_size = fill.count;
                    stats.volume += fill.count.units();
                    stats.open_interest += fill.count.units() / 2;
                    stats.notional +=
                        i128::from(fill.count.units()) * i128::from(fill.yes_price.units());
                    fills.push((id, *fill));
                }
            }
        }
        let Self {
            markets,
            conns,
            faults,
            ..
        } = self;
        let market = &markets[index];
        let ts = rfc3339_micros(ts_us);
        let mut publications = Vec::with_capacity(actions.len() + 1);
        let mut changes = changes.into_iter();
        let mut fills = fills.into_iter();
        for action in actions {
            match action {
                Action::Delta { .. } => {
                    let Some((side, price, delta)) = changes.next() else {
                        continue;
                    };
                    publications.push(Publication::Delta(
                        DeltaMsg {
                            market_ticker: &market.ticker,
                            market_id: &market.market_id,
                            price_dollars: price.to_string(),
                            delta_fp: delta.to_string(),
                            side: side.as_str(),
                            ts: ts.clone(),
                            ts_ms,
                        },
                        SentDelta {
                            sid: 0,
                            seq: 0,
                            market: market.ticker.clone(),
                            side,
                            price,
                            delta,
                            ts_ms,
                        },
                    ));
                }
                Action::Trade(_) => {
                    let Some((trade_id, fill)) = fills.next() else {
                        continue;
                    };
                    let taker = fill.taker.as_str();
                    publications.push(Publication::Trade(TradeMsg {
                        trade_id,
                        market_ticker: &market.ticker,
                        yes_price_dollars: fill.yes_price.to_string(),
                        no_price_dollars: fill.yes_price.complement().to_string(),
                        count_fp: fill.count.to_string(),
                        taker_side: taker,
                        taker_outcome_side: taker,
                        taker_book_side: match fill.taker {
                            Side::Yes => "bid",
                            Side::No => "ask",
                        },
                        is_block_trade: fill.block,
                        ts: ts_us.div_euclid(1_000_000),
                        ts_ms,
                    }));
                }
            }
        }
        let traded = actions.iter().any(|a| matches!(a, Action::Trade(_)));
        if traded || top(&market.book) != before {
            publications.push(Publication::Ticker(market.ticker_msg(ts_us)));
        }
        fan_out(conns, faults, market, &publications);
    }

    /// Publishes lifecycle frames (not market-specific subscriptions: every lifecycle sid).
    pub(crate) fn publish_lifecycle(&mut self, kind: &'static str, msg: serde_json::Value) {
        let Self { conns, faults, .. } = self;
        for conn in conns.values_mut() {
            for (sid, sub) in &mut conn.subs {
                if sub.channel == Channel::Lifecycle {
                    emit_data(&conn.outbox, sub, faults, |seq| {
                        data_frame(kind, *sid, Some(seq), &msg)
                    });
                }
            }
            conn.settle_overflows();
        }
    }

    pub(crate) fn lifecycle(&mut self, msg: &LifecycleMsg) {
        if let Ok(value) = serde_json::to_value(msg) {
            self.publish_lifecycle("market_lifecycle_v2", value);
        }
    }

    // ---- faults ----

    /// One malformed frame of `kind` on every connection (see `SimHandle::send_malformed`).
    pub fn send_malformed(&mut self, kind: MalformedKind) {
        let Self {
            markets,
            conns,
            index,
            ..
        } = self;
        for conn in conns.values_mut() {
            let target = conn.subs.iter_mut().find(|(_, sub)| {
                sub.channel == Channel::OrderbookDelta
                    && sub.markets.as_ref().is_some_and(|m| !m.is_empty())
            });
            let text = match target {
                Some((sid, sub)) => {
                    let ticker = sub
                        .markets
                        .as_ref()
                        .and_then(|m| m.iter().next())
                        .cloned()
                        .unwrap_or_default();
                    let Some(market) = index.get(&ticker).map(|i| &markets[*i]) else {
                        continue;
                    };
                    let seq = if kind.takes_seq() { sub.next_seq() } else { 0 };
                    malformed_text(
                        kind,
                        *sid,
                        seq,
                        &market.ticker,
                        &market.market_id,
                        &market.levels(Side::Yes),
                    )
                }
                None if !kind.takes_seq() => malformed_text(kind, 0, 0, "KXSIM", "", &[]),
                None => continue,
            };
            conn.reply(text);
        }
    }
}

/// A data frame's text.
fn data_frame<M: serde::Serialize>(kind: &str, sid: u64, seq: Option<u64>, msg: &M) -> OutFrame {
    OutFrame::text(
        Frame {
            kind,
            id: None,
            sid: Some(sid),
            seq,
            msg: Some(msg),
        }
        .to_text(),
    )
}

/// Queues one sequenced data frame: takes the sid's next `seq`, then maybe drops the frame
/// (fault) or marks the subscription overflowed if the queue is full.
fn emit_data(
    outbox: &Outbox,
    sub: &mut Sub,
    faults: &mut Faults,
    frame: impl FnOnce(u64) -> OutFrame,
) {
    if sub.overflowed {
        return;
    }
    let seq = sub.next_seq();
    if faults.drop_frame() {
        return;
    }
    if outbox.push(frame(seq)).is_err() {
        sub.overflowed = true;
    }
}

/// Sends a market's publications to every subscription that wants them.
pub(crate) fn fan_out(
    conns: &mut BTreeMap<u64, Conn>,
    faults: &mut Faults,
    market: &SimMarket,
    publications: &[Publication<'_>],
) {
    let ticker = market.ticker.as_str();
    for conn in conns.values_mut() {
        let Conn { subs, outbox, .. } = conn;
        for (sid, sub) in subs.iter_mut() {
            if !sub.wants(ticker) {
                continue;
            }
            let sid = *sid;
            for publication in publications {
                match (sub.channel, publication) {
                    (Channel::OrderbookDelta, Publication::Delta(msg, sent)) => {
                        if let Some(kind) = faults.malformed_due()
                            && !sub.overflowed
                        {
                            let seq = if kind.takes_seq() { sub.next_seq() } else { 0 };
                            let text = malformed_text(
                                kind,
                                sid,
                                seq,
                                ticker,
                                &market.market_id,
                                &market.levels(Side::Yes),
                            );
                            if outbox.push(OutFrame::text(text)).is_err() {
                                sub.overflowed = true;
                            }
                        }
                        emit_data(outbox, sub, faults, |seq| OutFrame {
                            delta: Some(SentDelta {
                                sid,
                                seq,
                                ..sent.clone()
                            }),
                            ..data_frame("orderbook_delta", sid, Some(seq), msg)
                        });
                    }
                    (Channel::OrderbookDelta, Publication::Snapshot(msg)) => {
                        emit_data(outbox, sub, faults, |seq| {
                            data_frame("orderbook_snapshot", sid, Some(seq), msg)
                        });
                    }
                    (Channel::Trade, Publication::Trade(msg)) => {
                        emit_data(outbox, sub, faults, |seq| {
                            data_frame("trade", sid, Some(seq), msg)
                        });
                    }
                    (Channel::Ticker, Publication::Ticker(msg))
                        if !sub.overflowed
                            && outbox.push(data_frame("ticker", sid, None, msg)).is_err() =>
                    {
                        sub.overflowed = true;
                    }
                    _ => {}
                }
            }
        }
        conn.settle_overflows();
    }
}

/// The generator: `events_per_sec` market events spread over 10 ms ticks (deterministic in
/// sequence, only their timing follows the wall clock), and the periodic disconnects.
pub(crate) async fn generate(shared: Arc<Shared>, events_per_sec: u32, disconnect_every: Duration) {
    const TICK: Duration = Duration::from_millis(10);
    let rate = u64::from(events_per_sec);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut disconnect = (!disconnect_every.is_zero()).then(|| {
        let mut interval = tokio::time::interval_at(
            tokio::time::Instant::now() + disconnect_every,
            disconnect_every,
        );
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval
    });
    let mut since = tokio::time::Instant::now();
    let mut done: u64 = 0;
    loop {
        let next_disconnect = async {
            match disconnect.as_mut() {
                Some(interval) => {
                    interval.tick().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = shared.shutdown.cancelled() => break,
            _ = tick.tick(), if rate > 0 => {
                let elapsed_ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX);
                let due = elapsed_ms.saturating_mul(rate) / 1000;
                // Never burst more than a second's worth after a hiccup.
                done = done.max(due.saturating_sub(rate));
                let events = due - done;
                if events == 0 {
                    continue;
                }
                {
                    let mut exchange = shared.exchange();
                    if exchange.paused {
                        since = tokio::time::Instant::now();
                        done = 0;
                        continue;
                    }
                    exchange.generate(events);
                }
                done = due;
                shared.bump();
            }
            () = next_disconnect => {
                tracing::info!("sim: disconnecting every connection (disconnect_every)");
                shared.exchange().disconnect_all();
                shared.bump();
            }
        }
    }
    shared.exchange().disconnect_all();
}
