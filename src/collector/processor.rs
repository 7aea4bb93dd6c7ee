//! The collector's pure core: exchange frames in; rows to store, commands to send and live
//! events out. No I/O, so every protocol rule here is tested frame by frame.
//!
//! Rules (see the protocol reference, §5.2):
//! - `seq` is tracked per subscription (`sid`) of a connection, over every frame that carries
//!   one (`ok` replies included); sids and seq restart with each connection.
//! - A gap, a malformed frame, a delta that would go negative, a dead subscription or a lost
//!   connection makes the affected books unknown: a `feed_gaps` row opens at the last instant
//!   the stored book was good, deltas for those markets are dropped, a fresh snapshot is
//!   requested, and the gap closes at that snapshot. History never silently crosses a gap.
//! - Each market's book axis (`ts`) is Kalshi's exchange time, made non-decreasing per market:
//!   snapshots carry no timestamp, so one is placed at the latest exchange time seen.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use super::frame_log::FrameLog;
use super::recent_trades::RecentTrades;
use crate::clickhouse::rows::{
    DeltaRow, FeedGapRow, GapKind, MarketRow, SnapshotPlace, SnapshotRow, SnapshotSource,
    TopOfBookRow, TradeRow, side_code,
};
use crate::kalshi::commands::{self, UpdateAction};
use crate::kalshi::parse::{Body, DeltaUpdate, Frame, LifecycleUpdate, TradeUpdate, parse_frame};
use crate::live::{Bus, FeedPosition, LiveEvent};
use crate::market::{Book, MarketMeta, Side};

const ORDERBOOK: &str = "orderbook_delta";
/// How long a snapshot waits for the next timestamped frame of its subscription before it is
/// placed at its estimated arrival on the exchange's clock, µs.
const UNPLACED_PATIENCE_US: i64 = 30_000_000;
/// How long after Kalshi refused to subscribe markets they are placed again.
const RESYNC_DELAY_US: i64 = 5_000_000;
/// The least time between two snapshot requests for a market whose book is unknown outside
/// a recorded gap's own request (deltas keep arriving for it, or its snapshot was refused).
const SNAPSHOT_RETRY_US: i64 = 5_000_000;
/// `get_snapshot` requests for one market left unanswered before its snapshot is asked for
/// the other way (taken out of its subscription and added again): an exchange that ignores
/// the action must not leave the book unknown for ever.
const SNAPSHOT_REQUESTS_BEFORE_RESUBSCRIBING: u8 = 2;
/// How long a market that discovery stopped listing while its book was live stays
/// subscribed, waiting for the empty snapshot Kalshi sends at a close (seen 7 s after it):
/// unsubscribed before, its final book would be a gap left open for ever.
const CLOSING_SNAPSHOT_PATIENCE_US: i64 = 60_000_000;
const TRADE: &str = "trade";
const LIFECYCLE: &str = "market_lifecycle_v2";
/// The longest wait before asking again for a refused trade or lifecycle subscription, µs.
const SIDE_CHANNEL_RETRY_MAX_US: i64 = 60_000_000;

/// A map keyed by what the exchange names (market tickers, sids), looked up several times for
/// every frame. The standard SipHash guards against keys chosen to collide; these keys come
/// from the exchange we subscribe to, so a multiplicative hash (FxHash's) is enough and costs
/// a few instructions instead of a SipHash round per lookup.
type FeedMap<K, V> = HashMap<K, V, BuildHasherDefault<FeedHasher>>;

/// FxHash (rustc's hasher): per 8-byte word, rotate, xor, multiply.
#[derive(Clone, Copy, Default)]
struct FeedHasher {
    hash: u64,
}

impl FeedHasher {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(Self::SEED);
    }
}

impl Hasher for FeedHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

/// Tunables of the core; units in the names.
#[derive(Clone, Debug)]
pub struct ProcessorConfig {
    /// Markets per `orderbook_delta` subscription: a gap resynchronises one shard only.
    pub markets_per_subscription: usize,
    /// A changed book is checkpointed at most this often.
    pub checkpoint_interval_us: i64,
    /// An unchanged book is still checkpointed this often, so that finding the latest
    /// snapshot before any instant never looks further back than this.
    pub checkpoint_max_quiet_us: i64,
    /// Keep every frame in `raw_frames`.
    pub record_raw_frames: bool,
    /// Only markets whose series or event ticker is listed (empty: every market).
    pub series_tickers: Vec<String>,
    pub event_tickers: Vec<String>,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self {
            markets_per_subscription: 250,
            checkpoint_interval_us: 60_000_000,
            checkpoint_max_quiet_us: 30 * 60_000_000,
            record_raw_frames: true,
            series_tickers: Vec::new(),
            event_tickers: Vec::new(),
        }
    }
}

/// Everything the core asks to be stored, by table.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Rows {
    pub deltas: Vec<DeltaRow>,
    pub snapshots: Vec<SnapshotRow>,
    pub trades: Vec<TradeRow>,
    pub gaps: Vec<FeedGapRow>,
    pub tops: Vec<TopOfBookRow>,
    pub markets: Vec<MarketRow>,
    pub raw_frames: FrameLog,
}

impl Rows {
    #[must_use]
    pub fn len(&self) -> usize {
        self.deltas.len()
            + self.snapshots.len()
            + self.trades.len()
            + self.gaps.len()
            + self.tops.len()
            + self.markets.len()
            + self.raw_frames.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Counters since the last [`Processor::take_stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub frames: u64,
    pub deltas: u64,
    pub snapshots: u64,
    pub trades: u64,
    pub malformed: u64,
    /// Deltas for a market whose book is unknown (awaiting its snapshot).
    pub dropped_deltas: u64,
    pub gaps: u64,
    pub subscription_errors: u64,
    /// Frames whose sequence number was already handled (skipped, never applied twice).
    pub repeated_frames: u64,
    /// Deltas and snapshots that came on a subscription other than their market's (a market
    /// the exchange holds on two subscriptions), and frames still arriving on a subscription
    /// the exchange ended: skipped, so no change is applied twice or to a dead feed.
    pub foreign_frames: u64,
    /// Trades already stored (the same trade id of the same market): skipped, so volume and
    /// candles count each trade once.
    pub repeated_trades: u64,
}

/// Why and where a gap opened.
#[derive(Clone, Copy, Debug)]
struct GapCause<'a> {
    kind: GapKind,
    channel: &'a str,
    sid: u32,
    expected: u64,
    received: u64,
    detail: &'a str,
}

impl<'a> GapCause<'a> {
    fn new(kind: GapKind, channel: &'a str, sid: u32) -> Self {
        Self {
            kind,
            channel,
            sid,
            expected: 0,
            received: 0,
            detail: "",
        }
    }

    fn seqs(self, expected: u64, received: u64) -> Self {
        Self {
            expected,
            received,
            ..self
        }
    }

    fn detail(self, detail: &'a str) -> Self {
        Self { detail, ..self }
    }
}

/// An exchange snapshot applied to the in-memory book but not yet stored: Kalshi's snapshots
/// carry no timestamp, and until the first exchange timestamp of the process arrives we
/// cannot map receive times onto the exchange's clock (which may be far from ours, e.g. a
/// replay of old traffic).
#[derive(Debug)]
struct UnplacedSnapshot {
    market: String,
    book: Arc<Book>,
    /// It changed a book we held (not a resynchronisation).
    replaced: bool,
    /// The gap it closes.
    gap: Option<FeedGapRow>,
    sid: u32,
    seq: u64,
    conn: u64,
    ts_received_us: i64,
}

#[derive(Debug)]
struct OpenGap {
    row: FeedGapRow,
}

#[derive(Debug, Default)]
struct MarketState {
    meta: Option<MarketMeta>,
    /// `None`: unknown until the next snapshot.
    book: Option<Book>,
    /// Book-axis time of the last stored event, Unix µs; 0 before any.
    watermark_us: i64,
    /// Book-axis time of the last stored delta or exchange snapshot (checkpoints aside):
    /// the last instant the exchange itself told us what the book was, Unix µs.
    last_event_us: i64,
    /// (ts, conn, seq) of the last stored delta or exchange snapshot: the next one must sort
    /// after it (see [`MarketState::place`]).
    stored: (i64, u64, u64),
    last_seq: u64,
    last_conn: u64,
    /// Something is stored for this market, so losing the feed opens a gap.
    has_history: bool,
    open_gap: Option<OpenGap>,
    /// Gaps an earlier run left open: the next stored snapshot closes them too.
    inherited_gaps: Vec<FeedGapRow>,
    changed_since_checkpoint: bool,
    last_checkpoint_us: i64,
    top: Top,
    /// Orderbook shard on the current connection.
    shard: Option<usize>,
    /// Taken out of its subscription because it is no longer wanted: whatever still comes
    /// for it is the tail of a feed we stopped recording.
    released: bool,
    /// Last time (receive clock) anything was applied, Unix µs.
    last_update_us: i64,
    /// Last time (receive clock) a snapshot of it was asked for, Unix µs.
    snapshot_asked_us: i64,
    /// `get_snapshot` requests since its last snapshot.
    snapshot_requests: u8,
}

impl MarketState {
    /// The book-axis time for the next stored event at exchange time `ts_us`, position
    /// (`conn`, `seq`): never before the watermark, and strictly after the last stored
    /// event in (ts, conn, seq) order. `seq` restarts with each subscription, so after a
    /// market moves to a new sid on the same connection, an event stamped in the same
    /// microsecond as the old sid's last one would sort before it; it moves 1 µs later.
    fn place(&mut self, ts_us: i64, conn: u64, seq: u64) -> i64 {
        let mut ts = ts_us.max(self.watermark_us);
        if (ts, conn, seq) <= self.stored {
            ts = self.stored.0 + 1;
        }
        self.stored = (ts, conn, seq);
        self.watermark_us = ts;
        self.last_event_us = ts;
        ts
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Channel {
    Orderbook(usize),
    Trade,
    Lifecycle,
    Other,
}

#[derive(Debug)]
struct SidState {
    channel: Channel,
    next_seq: Option<u64>,
    /// Exchange time of the last timestamped frame of this subscription, µs.
    clock_us: Option<i64>,
}

#[derive(Debug, Default)]
struct Shard {
    sid: Option<u32>,
    markets: BTreeSet<String>,
}

#[derive(Debug)]
enum Pending {
    Subscribe(Channel),
    Update(Update),
}

/// An `update_subscription` awaiting its reply.
#[derive(Debug)]
struct Update {
    action: UpdateAction,
    sid: u32,
    markets: Vec<String>,
}

#[derive(Debug)]
struct Connection {
    id: u64,
    next_command_id: u64,
    sids: FeedMap<u32, SidState>,
    pending: HashMap<u64, Pending>,
    shards: Vec<Shard>,
    /// Latest exchange time seen on this connection, Unix µs.
    clock_us: Option<i64>,
    /// Every command sent, by id: what to resend or undo when Kalshi refuses it.
    sent: HashMap<u64, String>,
    /// Commands refused for the command rate (error 27), to resend at the receive time given.
    deferred: Vec<(i64, String)>,
    /// How often Kalshi has refused the trade or lifecycle subscription on this connection:
    /// each refusal doubles the wait before asking again (an exchange without the channel
    /// is asked about once a minute, not every second).
    side_channel_refusals: u32,
    /// When to bring the subscriptions in line with `wanted` again (after a refusal).
    resync_at_us: Option<i64>,
    /// Why this connection must be dropped and opened again, once asked.
    abandon: Option<String>,
    /// Subscriptions the exchange ended (errors 10/25, `unsubscribed`): what still comes on
    /// them is the tail of a dead feed, never a reply to the subscription replacing them.
    ended_sids: HashSet<u32>,
}

/// The collector's state across connections.
#[derive(Debug)]
pub struct Processor {
    config: ProcessorConfig,
    markets: FeedMap<String, MarketState>,
    wanted: BTreeSet<String>,
    /// Markets discovery no longer lists or the lifecycle channel called closed, kept
    /// subscribed until their closing snapshot empties the book or the receive time given
    /// passes (see [`CLOSING_SNAPSHOT_PATIENCE_US`]).
    leaving: FeedMap<String, i64>,
    conn: Option<Connection>,
    last_conn_id: u64,
    rows: Rows,
    commands: Vec<String>,
    stats: Stats,
    bus: Option<Bus>,
    /// Smallest (receive time − exchange time) seen, µs: maps receive times onto the
    /// exchange's clock for frames that carry no timestamp.
    receive_lag_us: Option<i64>,
    unplaced: Vec<UnplacedSnapshot>,
    recent_trades: RecentTrades,
    /// Receive time of the latest frame, Unix µs.
    last_received_us: i64,
}

impl Processor {
    #[must_use]
    pub fn new(config: ProcessorConfig, bus: Option<Bus>) -> Self {
        Self {
            config,
            markets: FeedMap::default(),
            wanted: BTreeSet::new(),
            leaving: FeedMap::default(),
            conn: None,
            last_conn_id: 0,
            rows: Rows::default(),
            commands: Vec::new(),
            stats: Stats::default(),
            bus,
            receive_lag_us: None,
            unplaced: Vec::new(),
            recent_trades: RecentTrades::default(),
            last_received_us: 0,
        }
    }

    /// Markets stored by an earlier run, with the book-axis time of their last stored event:
    /// the span until each one's next snapshot is a gap (the collector was not running).
    pub fn resume_after_restart(&mut self, last_stored: impl IntoIterator<Item = (String, i64)>) {
        for (market, ts_us) in last_stored {
            let state = self.markets.entry(market.clone()).or_default();
            state.watermark_us = state.watermark_us.max(ts_us);
            state.has_history = true;
            self.open_gap(
                &market,
                GapCause::new(GapKind::CollectorRestart, ORDERBOOK, 0)
                    .detail("collector was not running"),
            );
        }
    }

    /// Gaps of markets that earlier runs left open (see `gaps_left_open` in the collector):
    /// each closes at the first snapshot this run stores for its market.
    pub fn inherit_open_gaps(&mut self, gaps: impl IntoIterator<Item = FeedGapRow>) {
        for gap in gaps {
            let state = self.markets.entry(gap.market.clone()).or_default();
            state.has_history = true;
            state.watermark_us = state.watermark_us.max(gap.ts_start);
            state.inherited_gaps.push(gap);
        }
    }

    /// The markets to record (from discovery). Open ones matching the filter are subscribed;
    /// metadata changes are stored.
    ///
    /// Discovery lists open markets only, so a market it omits that the lifecycle channel
    /// last called created-but-not-open or paused is kept: its absence says nothing, and
    /// dropping it would lose the start of its trading (Kalshi sends no event at open).
    pub fn set_markets(&mut self, markets: Vec<MarketMeta>, now_us: i64) {
        let mut wanted: BTreeSet<String> = self
            .wanted
            .iter()
            .filter(|ticker| {
                self.markets
                    .get(*ticker)
                    .and_then(|state| state.meta.as_ref())
                    .is_some_and(|meta| {
                        matches!(
                            meta.status.as_str(),
                            "initialized" | "unopened" | "inactive" | "paused"
                        )
                    })
            })
            .cloned()
            .collect();
        for meta in markets {
            if meta.is_open() && self.matches_filter(&meta) {
                wanted.insert(meta.ticker.clone());
            } else {
                wanted.remove(&meta.ticker);
            }
            self.store_meta(meta, now_us);
        }
        // A market that closes leaves the open listing a few seconds before Kalshi empties
        // its book: a live one stays until that snapshot comes, for a while.
        self.leaving.retain(|ticker, _| !wanted.contains(ticker));
        let dropped: Vec<String> = self
            .wanted
            .iter()
            .filter(|ticker| !wanted.contains(*ticker))
            .cloned()
            .collect();
        for ticker in dropped {
            if self.waits_for_closing_snapshot(&ticker, now_us) {
                wanted.insert(ticker);
            }
        }
        self.wanted = wanted;
        self.sync_subscriptions();
    }

    /// Whether `market`, no longer wanted at `now_us`, stays subscribed a while longer for
    /// the empty snapshot Kalshi sends when it closes (at most
    /// [`CLOSING_SNAPSHOT_PATIENCE_US`] from the first time it was let go). Leaving before
    /// it would store no final book and leave the market's history open-ended in a gap.
    fn waits_for_closing_snapshot(&mut self, market: &str, now_us: i64) -> bool {
        if self.awaits_closing_snapshot(market) {
            let deadline = *self
                .leaving
                .entry(market.to_owned())
                .or_insert(now_us + CLOSING_SNAPSHOT_PATIENCE_US);
            if deadline > now_us {
                return true;
            }
        }
        self.leaving.remove(market);
        false
    }

    /// Whether `market` is subscribed with a live book, so that leaving now would cut its
    /// history short of the empty snapshot Kalshi sends when it closes.
    fn awaits_closing_snapshot(&self, market: &str) -> bool {
        self.markets.get(market).is_some_and(|state| {
            state.shard.is_some() && state.book.as_ref().is_some_and(|book| !book.is_empty())
        })
    }

    /// Lets go of leaving markets whose book is now final, or whose wait is over at `now_us`.
    fn let_leaving_markets_go(&mut self, now_us: i64) {
        if self.leaving.is_empty() {
            return;
        }
        let gone: Vec<String> = self
            .leaving
            .iter()
            .filter(|(ticker, deadline)| {
                **deadline <= now_us
                    || self
                        .markets
                        .get(*ticker)
                        .and_then(|state| state.book.as_ref())
                        .is_some_and(Book::is_empty)
            })
            .map(|(ticker, _)| ticker.clone())
            .collect();
        if gone.is_empty() {
            return;
        }
        for ticker in &gone {
            self.leaving.remove(ticker);
            self.wanted.remove(ticker);
        }
        self.sync_subscriptions();
    }

    fn matches_filter(&self, meta: &MarketMeta) -> bool {
        let config = &self.config;
        if config.series_tickers.is_empty() && config.event_tickers.is_empty() {
            return true;
        }
        // Market objects do not always name their series; an event ticker starts with it.
        let in_series = config.series_tickers.iter().any(|series| {
            *series == meta.series_ticker
                || meta
                    .event_ticker
                    .strip_prefix(series.as_str())
                    .is_some_and(|rest| rest.starts_with('-'))
        });
        in_series || config.event_tickers.contains(&meta.event_ticker)
    }

    fn store_meta(&mut self, meta: MarketMeta, now_us: i64) {
        let state = self.markets.entry(meta.ticker.clone()).or_default();
        if state.meta.as_ref() == Some(&meta) {
            return;
        }
        self.rows.markets.push(MarketRow {
            ticker: meta.ticker.clone(),
            event_ticker: meta.event_ticker.clone(),
            series_ticker: meta.series_ticker.clone(),
            title: meta.title.clone(),
            subtitle: meta.subtitle.clone(),
            status: meta.status.clone(),
            open_time: meta.open_time_us,
            close_time: meta.close_time_us,
            price_level_structure: meta.price_level_structure.clone(),
            price_ranges: meta.price_ranges_json.clone(),
            updated_at: now_us,
        });
        state.meta = Some(meta);
    }

    /// A new connection is open: returns its id (increasing) and queues its subscriptions.
    pub fn connect(&mut self, now_us: i64) -> u64 {
        let id = (now_us.max(0) as u64).max(self.last_conn_id + 1);
        self.last_conn_id = id;
        self.conn = Some(Connection {
            id,
            next_command_id: 1,
            sids: FeedMap::default(),
            pending: HashMap::new(),
            shards: Vec::new(),
            clock_us: None,
            sent: HashMap::new(),
            deferred: Vec::new(),
            side_channel_refusals: 0,
            resync_at_us: None,
            abandon: None,
            ended_sids: HashSet::new(),
        });
        for state in self.markets.values_mut() {
            state.shard = None;
        }
        self.send_subscribe(Channel::Lifecycle, &[]);
        self.send_subscribe(Channel::Trade, &[]);
        self.sync_subscriptions();
        id
    }

    /// The connection is gone: every known book is unknown until its next snapshot.
    pub fn disconnect(&mut self, reason: &str) {
        if self.conn.is_none() {
            return;
        }
        // Snapshots still waiting for the next frame of their subscription (which will never
        // come) are placed at their estimated exchange time, as overdue ones are: a market's
        // closing snapshot followed by a dropped connection is still its final book.
        if let Some(lag) = self.receive_lag_us {
            let conn_clock = self.conn.as_ref().and_then(|c| c.clock_us);
            for snapshot in std::mem::take(&mut self.unplaced) {
                let at = (snapshot.ts_received_us - lag).max(conn_clock.unwrap_or(i64::MIN));
                self.store_snapshot(snapshot, at);
            }
        }
        self.conn = None;
        // Without any exchange time seen, they cannot be placed: they are not stored, and the
        // gaps they would have closed stay open until the next connection's snapshots.
        for snapshot in std::mem::take(&mut self.unplaced) {
            if let Some(state) = self.markets.get_mut(&snapshot.market)
                && let Some(row) = snapshot.gap
                && state.open_gap.is_none()
            {
                state.open_gap = Some(OpenGap { row });
            }
        }
        let markets: Vec<String> = self
            .markets
            .iter()
            .filter(|(m, s)| (s.book.is_some() || s.has_history) && !self.book_is_final(m))
            .map(|(m, _)| m.clone())
            .collect();
        for market in markets {
            self.open_gap(
                &market,
                GapCause::new(GapKind::Reconnect, ORDERBOOK, 0).detail(reason),
            );
        }
    }

    /// Handles one text frame received at `ts_received_us` (Unix µs).
    pub fn on_text(&mut self, text: &str, ts_received_us: i64) {
        self.stats.frames += 1;
        self.last_received_us = ts_received_us;
        let frame = match parse_frame(text) {
            Ok(frame) => frame,
            Err(error) => {
                self.stats.malformed += 1;
                tracing::warn!(%error, frame = %truncate(text), "unparseable frame");
                self.record_raw(text, ts_received_us, 0, 0);
                return;
            }
        };
        let sid = frame.envelope.sid.unwrap_or(0);
        self.record_raw(text, ts_received_us, sid, frame.envelope.seq.unwrap_or(0));
        self.on_frame(frame, ts_received_us);
    }

    fn record_raw(&mut self, text: &str, ts_received_us: i64, sid: u32, seq: u64) {
        if self.config.record_raw_frames
            && let Some(conn) = &self.conn
        {
            self.rows
                .raw_frames
                .push(conn.id, ts_received_us, sid, seq, text);
        }
    }

    fn on_frame(&mut self, frame: Frame, ts_received_us: i64) {
        let Frame { envelope, body } = frame;
        if self.conn.is_none() {
            return;
        }
        // `subscribed` names its sid in the payload; register it before checking sequences.
        if let Ok(Body::Subscribed { channel }) = &body {
            self.on_subscribed(envelope.id, envelope.sid, channel);
            return;
        }
        if let Some(sid) = envelope.sid
            && self
                .conn
                .as_ref()
                .is_some_and(|c| !c.ended_sids.is_empty() && c.ended_sids.contains(&sid))
        {
            self.stats.foreign_frames += 1;
            return;
        }
        if let (Some(sid), Some(seq)) = (envelope.sid, envelope.seq)
            && !self.check_sequence(sid, seq, ts_received_us)
        {
            return;
        }
        let sid = envelope.sid.unwrap_or(0);
        let seq = envelope.seq.unwrap_or(0);
        match body {
            Ok(Body::Snapshot { market, book }) => {
                self.apply_snapshot(&market, book, sid, seq, ts_received_us);
            }
            Ok(Body::Delta(delta)) => self.apply_delta(delta, sid, seq, ts_received_us),
            Ok(Body::Trade(trade)) => self.apply_trade(trade, sid, seq, ts_received_us),
            Ok(Body::Lifecycle(update)) => self.apply_lifecycle(update, ts_received_us),
            Ok(Body::Ok { market_tickers }) => self.on_ok(envelope.id, sid, market_tickers),
            Ok(Body::Error {
                code,
                message,
                market_tickers,
            }) => self.on_error(envelope.id, envelope.sid, code, &message, &market_tickers),
            // We never send `unsubscribe` (markets leave by `delete_markets`): the exchange
            // ended this subscription on its own.
            Ok(Body::Unsubscribed) => {
                self.end_subscription(sid, "the exchange unsubscribed us");
            }
            Ok(
                Body::Subscribed { .. }
                | Body::ListSubscriptions(_)
                | Body::EventLifecycle { .. }
                | Body::Ticker
                | Body::Unknown,
            ) => {}
            Err(error) => {
                self.stats.malformed += 1;
                tracing::warn!(%error, sid, seq, "malformed frame");
                self.on_malformed(envelope.sid, error.market.as_deref());
            }
        }
    }

    /// Advances `sid`'s expected sequence number past `seq`, handling a gap; returns whether
    /// the frame is new (false for a repeat, which must not be applied twice).
    fn check_sequence(&mut self, sid: u32, seq: u64, ts_received_us: i64) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        let state = conn.sids.entry(sid).or_insert(SidState {
            channel: Channel::Other,
            next_seq: None,
            clock_us: None,
        });
        let expected = state.next_seq;
        match expected {
            Some(expected) if seq > expected => {
                state.next_seq = Some(seq + 1);
                let channel = state.channel;
                tracing::warn!(sid, expected, received = seq, "sequence gap");
                self.on_sequence_gap(sid, channel, expected, seq, ts_received_us);
            }
            Some(expected) if seq < expected => {
                // A repeat of something already handled: never apply it twice.
                tracing::warn!(sid, expected, received = seq, "sequence went backwards");
                self.stats.repeated_frames += 1;
                return false;
            }
            _ => state.next_seq = Some(seq + 1),
        }
        true
    }

    fn on_sequence_gap(
        &mut self,
        sid: u32,
        channel: Channel,
        expected: u64,
        received: u64,
        ts_us: i64,
    ) {
        self.stats.gaps += 1;
        match channel {
            Channel::Orderbook(shard) => {
                let markets = self.shard_markets(shard);
                for market in &markets {
                    self.open_gap(
                        market,
                        GapCause::new(GapKind::SequenceGap, ORDERBOOK, sid)
                            .seqs(expected, received),
                    );
                }
                self.request_snapshots(sid, markets);
            }
            Channel::Trade | Channel::Lifecycle | Channel::Other => {
                // Lost trades or lifecycle events cannot be attributed to a market: record a
                // gap of the whole channel, closed at once (there is nothing to resync).
                let name = match channel {
                    Channel::Trade => TRADE,
                    Channel::Lifecycle => LIFECYCLE,
                    _ => "unknown",
                };
                let ts = self.conn.as_ref().and_then(|c| c.clock_us).unwrap_or(ts_us);
                let cause = GapCause::new(GapKind::SequenceGap, name, sid).seqs(expected, received);
                let row = self.gap_row("", cause, ts);
                self.rows.gaps.push(FeedGapRow {
                    ts_end: Some(ts.max(ts_us)),
                    version: 2,
                    ..row
                });
            }
        }
    }

    fn shard_markets(&self, shard: usize) -> Vec<String> {
        self.conn
            .as_ref()
            .and_then(|c| c.shards.get(shard))
            .map(|s| s.markets.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn gap_row(&self, market: &str, cause: GapCause<'_>, ts_start: i64) -> FeedGapRow {
        FeedGapRow {
            market: market.to_owned(),
            gap_id: rand::random(),
            channel: cause.channel.to_owned(),
            kind: cause.kind as i8,
            conn: self.conn.as_ref().map_or(self.last_conn_id, |c| c.id),
            sid: cause.sid,
            expected_seq: cause.expected,
            received_seq: cause.received,
            ts_start,
            ts_end: None,
            detail: cause.detail.to_owned(),
            version: 1,
        }
    }

    /// Whether `market`'s book can no longer change: we no longer want it and the exchange
    /// emptied it (the snapshot Kalshi sends at a market's close).
    fn book_is_final(&self, market: &str) -> bool {
        !self.wanted.contains(market)
            && self
                .markets
                .get(market)
                .and_then(|s| s.book.as_ref())
                .is_some_and(Book::is_empty)
    }

    /// Makes `market`'s book unknown and opens a gap, unless one is already open.
    fn open_gap(&mut self, market: &str, cause: GapCause<'_>) {
        let Some(state) = self.markets.get(market) else {
            return;
        };
        let had_book = state.book.is_some();
        if state.open_gap.is_some() || !(had_book || state.has_history) {
            if let Some(state) = self.markets.get_mut(market) {
                state.book = None;
            }
            return;
        }
        let ts_start = state.watermark_us;
        let row = self.gap_row(market, cause, ts_start);
        self.rows.gaps.push(row.clone());
        let state = self.markets.get_mut(market).expect("checked above");
        state.open_gap = Some(OpenGap { row });
        state.book = None;
        if let Some(bus) = &self.bus {
            bus.publish(LiveEvent::Gap {
                market: market.to_owned(),
                ts_us: ts_start,
            });
        }
    }

    fn request_snapshots(&mut self, sid: u32, markets: Vec<String>) {
        if markets.is_empty() {
            return;
        }
        for market in &markets {
            if let Some(state) = self.markets.get_mut(market) {
                state.snapshot_asked_us = self.last_received_us;
                state.snapshot_requests = state.snapshot_requests.saturating_add(1);
            }
        }
        self.send_update(sid, UpdateAction::GetSnapshot, markets);
    }

    /// Queues `update_subscription` of `sid` and notes it as pending.
    fn send_update(&mut self, sid: u32, action: UpdateAction, markets: Vec<String>) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let id = conn.next_command_id;
        conn.next_command_id += 1;
        self.commands
            .push(commands::update_subscription(id, sid, action, &markets));
        conn.pending.insert(
            id,
            Pending::Update(Update {
                action,
                sid,
                markets,
            }),
        );
    }

    /// Notes an exchange timestamp received at `ts_received_us`: advances the connection's
    /// exchange clock and the smallest receive lag seen (network latency plus clock offset).
    ///
    /// The smallest lag is taken over the current connection only: the first exchange time a
    /// new connection sees replaces the earlier estimate. An exchange that resumes after a
    /// pause (a reconnect, maintenance, a replay picking up where it stopped) has fallen
    /// behind our clock by the pause, and the old, smaller lag would stamp checkpoints and
    /// late snapshots ahead of its clock, clamping the deltas that follow forward.
    fn observe_exchange_time(&mut self, exchange_us: i64, ts_received_us: i64) {
        let lag = ts_received_us - exchange_us;
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let fresh = conn.clock_us.is_none();
        conn.clock_us = Some(conn.clock_us.map_or(exchange_us, |c| c.max(exchange_us)));
        self.receive_lag_us = Some(match self.receive_lag_us {
            Some(known) if !fresh => known.min(lag),
            _ => lag,
        });
    }

    /// Stores every snapshot of subscription `sid` (all of them with `None`) that waits for
    /// its place on the exchange's clock, at `next_us`: the exchange time of the frame that
    /// followed it. Kalshi's snapshots carry no timestamp; the book they hold is the book
    /// before that next change, so `next_us` is the latest instant they can stand for and
    /// the earliest from which they are certain.
    fn place_unplaced(&mut self, sid: Option<u32>, next_us: impl Fn(&UnplacedSnapshot) -> i64) {
        if self.unplaced.is_empty() {
            return;
        }
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.unplaced)
            .into_iter()
            .partition(|s| sid.is_none_or(|sid| s.sid == sid));
        self.unplaced = waiting;
        for snapshot in due {
            let at = next_us(&snapshot);
            self.store_snapshot(snapshot, at);
        }
    }

    /// Book data of `market` on `sid`, a subscription we never saw confirmed: when `market`'s
    /// shard is still waiting for its `subscribed` reply, that reply was lost and `sid` is
    /// the shard's. Taken as such, so that a gap on it makes its books unknown.
    fn confirm_orderbook_sid(&mut self, sid: u32, market: &str) {
        let Some(shard) = self.markets.get(market).and_then(|state| state.shard) else {
            return;
        };
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let Some(entry) = conn
            .shards
            .get_mut(shard)
            .filter(|entry| entry.sid.is_none())
        else {
            return;
        };
        entry.sid = Some(sid);
        if let Some(state) = conn.sids.get_mut(&sid) {
            state.channel = Channel::Orderbook(shard);
        }
        conn.pending.retain(|_, pending| {
            !matches!(pending, Pending::Subscribe(Channel::Orderbook(s)) if *s == shard)
        });
        tracing::warn!(
            sid,
            shard,
            "orderbook subscription known by its data: its `subscribed` reply was lost"
        );
    }

    /// Whether `sid` is not the subscription `market` is on: the exchange can hold a market on
    /// two (an add whose reply we took for lost), and each sends every change.
    fn is_foreign(&self, market: &str, sid: u32) -> bool {
        let shard = self.markets.get(market).and_then(|state| state.shard);
        on_another_sid(self.conn.as_ref(), shard, sid)
    }

    fn position(&self, sid: u32, seq: u64) -> FeedPosition {
        FeedPosition {
            conn: self.conn.as_ref().map_or(0, |c| c.id),
            sid,
            seq,
        }
    }

    fn apply_snapshot(
        &mut self,
        market: &str,
        book: Book,
        sid: u32,
        seq: u64,
        ts_received_us: i64,
    ) {
        let unconfirmed = self
            .conn
            .as_ref()
            .and_then(|c| c.sids.get(&sid))
            .is_some_and(|state| state.channel == Channel::Other);
        if unconfirmed {
            self.confirm_orderbook_sid(sid, market);
        }
        if self.is_foreign(market, sid) {
            self.stats.foreign_frames += 1;
            return;
        }
        self.stats.snapshots += 1;
        let conn = self.conn.as_ref().map_or(0, |c| c.id);
        let state = self.markets.entry(market.to_owned()).or_default();
        let replaced =
            state.open_gap.is_none() && state.book.as_ref().is_some_and(|held| *held != book);
        let gap = state.open_gap.take().map(|gap| gap.row);
        state.last_seq = seq;
        state.last_conn = conn;
        state.has_history = true;
        state.changed_since_checkpoint = false;
        state.last_checkpoint_us = ts_received_us;
        state.last_update_us = ts_received_us;
        state.snapshot_requests = 0;
        let book = Arc::new(book);
        state.book = Some((*book).clone());
        let resync = gap.is_some();
        let estimate = ts_received_us - self.receive_lag_us.unwrap_or(0);
        if let Some(bus) = &self.bus {
            // Live readers get it now; its stored place waits for the next frame.
            bus.publish(LiveEvent::Snapshot {
                market: market.to_owned(),
                position: FeedPosition { conn, sid, seq },
                ts_us: estimate,
                book: book.clone(),
                resync,
            });
        }
        self.unplaced.push(UnplacedSnapshot {
            market: market.to_owned(),
            book,
            replaced,
            gap,
            sid,
            seq,
            conn,
            ts_received_us,
        });
        if self.leaving.contains_key(market) {
            self.let_leaving_markets_go(ts_received_us);
        }
    }

    /// Stores a snapshot at `at_us` on the book axis (see [`Self::place_unplaced`]).
    fn store_snapshot(&mut self, snapshot: UnplacedSnapshot, at_us: i64) {
        let UnplacedSnapshot {
            market,
            book,
            replaced,
            gap,
            sid,
            seq,
            conn,
            ts_received_us,
        } = snapshot;
        let Some(state) = self.markets.get_mut(&market) else {
            return;
        };
        let last_event = state.last_event_us;
        let close = state.meta.as_ref().and_then(|meta| meta.close_time_us);
        let ts = state.place(at_us, conn, seq);
        // A snapshot the exchange sent on its own that changes a book we hold: Kalshi changes
        // a book without a delta when it closes the market (it empties it), at an instant
        // known only to lie after this market's own last event (the other markets' frames
        // on the subscription say nothing about it) and, when we know the close time and it
        // falls in between, not before it. Checkpoints stored since only repeated the old
        // book, so they do not narrow the span. Say so.
        let earliest = close
            .filter(|close| *close > last_event && *close < ts)
            .unwrap_or(last_event);
        if replaced && earliest < ts {
            let cause = GapCause::new(GapKind::BookReplaced, ORDERBOOK, sid)
                .seqs(seq, seq)
                .detail("snapshot replaced the book at an unknown instant in this span");
            let row = self.gap_row(&market, cause, earliest);
            self.rows.gaps.push(FeedGapRow {
                ts_end: Some(ts),
                ..row
            });
        }
        self.rows.snapshots.push(SnapshotRow::from_book(
            &SnapshotPlace {
                market: &market,
                ts,
                ts_received: ts_received_us,
                conn,
                sid,
                seq,
                source: SnapshotSource::Exchange,
            },
            &book,
        ));
        if let Some(gap) = gap {
            self.rows.gaps.push(FeedGapRow {
                ts_end: Some(ts),
                version: 2,
                ..gap
            });
        }
        let inherited = self
            .markets
            .get_mut(&market)
            .map(|state| std::mem::take(&mut state.inherited_gaps))
            .unwrap_or_default();
        for gap in inherited {
            self.rows.gaps.push(FeedGapRow {
                ts_end: Some(ts.max(gap.ts_start)),
                version: gap.version + 1,
                ..gap
            });
        }
        self.record_top(&market, &book, ts, conn, seq);
        // A snapshot of a market we had already taken out (it crossed our `delete_markets`)
        // is true at its instant, but no change after it will be recorded: unless it is the
        // empty book of a close, the gap opens again at once. (Unless a later snapshot
        // already emptied the book: this one waited for its place and that one follows.)
        let released = self
            .markets
            .get(&market)
            .is_some_and(|state| state.released);
        if released && !book.is_empty() && !self.book_is_final(&market) {
            self.open_gap(
                &market,
                GapCause::new(GapKind::Unsubscribed, ORDERBOOK, sid)
                    .detail("the market is no longer recorded"),
            );
        }
    }

    fn apply_delta(&mut self, delta: DeltaUpdate, sid: u32, seq: u64, ts_received_us: i64) {
        let exchange_us = delta
            .ts_ms
            .map_or(ts_received_us, |ms| ms.saturating_mul(1000));
        self.observe_exchange_time(exchange_us, ts_received_us);
        self.place_unplaced(Some(sid), |_| exchange_us);
        let mut unconfirmed = false;
        if let Some(state) = self.conn.as_mut().and_then(|c| c.sids.get_mut(&sid)) {
            state.clock_us = Some(state.clock_us.map_or(exchange_us, |c| c.max(exchange_us)));
            unconfirmed = state.channel == Channel::Other;
        }
        if unconfirmed {
            self.confirm_orderbook_sid(sid, &delta.market);
        }
        let position = self.position(sid, seq);
        let Some(state) = self.markets.get_mut(&delta.market) else {
            self.stats.dropped_deltas += 1;
            return;
        };
        if on_another_sid(self.conn.as_ref(), state.shard, sid) {
            self.stats.foreign_frames += 1;
            return;
        }
        let Some(book) = state.book.as_mut() else {
            self.stats.dropped_deltas += 1;
            // Its snapshot was lost, refused or never sent: ask again, at a bounded rate, and
            // after requests went unanswered, by taking it out and adding it again.
            if state.shard.is_some()
                && ts_received_us - state.snapshot_asked_us >= SNAPSHOT_RETRY_US
            {
                if state.snapshot_requests >= SNAPSHOT_REQUESTS_BEFORE_RESUBSCRIBING {
                    state.snapshot_requests = 0;
                    state.snapshot_asked_us = ts_received_us;
                    self.resubscribe_markets(sid, vec![delta.market]);
                } else {
                    self.request_snapshots(sid, vec![delta.market]);
                }
            }
            return;
        };
        if let Err(error) = book.apply_delta(delta.side, delta.price, delta.delta) {
            tracing::warn!(market = %delta.market, %error, "delta inconsistent with our book");
            self.stats.gaps += 1;
            let detail = error.to_string();
            let cause = GapCause::new(GapKind::NegativeSize, ORDERBOOK, sid).seqs(seq, seq);
            self.open_gap(&delta.market, cause.detail(&detail));
            self.request_snapshots(sid, vec![delta.market]);
            return;
        }
        self.stats.deltas += 1;
        let top = top_of(book);
        let top_changed = top != state.top;
        state.top = top;
        let ts = state.place(exchange_us, position.conn, seq);
        state.last_seq = seq;
        state.last_conn = position.conn;
        state.changed_since_checkpoint = true;
        state.last_update_us = ts_received_us;
        if top_changed {
            self.push_top(&delta.market, top, ts, position.conn, seq);
        }
        if let Some(bus) = &self.bus {
            bus.publish(LiveEvent::Delta {
                market: delta.market.clone(),
                position,
                ts_us: ts,
                ts_received_us,
                side: delta.side,
                price: delta.price,
                delta: delta.delta,
            });
        }
        // The parsed ticker moves into the row: one allocation per delta, not two.
        self.rows.deltas.push(DeltaRow {
            market: delta.market,
            ts,
            ts_received: ts_received_us,
            conn: position.conn,
            sid,
            seq,
            side: side_code(delta.side),
            price: delta.price.units(),
            delta: delta.delta.units(),
        });
    }

    /// Writes a `top_of_book` row when the best bids of `book` differ from the last written.
    fn record_top(&mut self, market: &str, book: &Book, ts: i64, conn: u64, seq: u64) {
        let top = top_of(book);
        let Some(state) = self.markets.get_mut(market) else {
            return;
        };
        if top != state.top {
            state.top = top;
            self.push_top(market, top, ts, conn, seq);
        }
    }

    fn push_top(&mut self, market: &str, top: Top, ts: i64, conn: u64, seq: u64) {
        let (best_yes_bid, yes_bid_size, best_no_bid, no_bid_size) = top;
        self.rows.tops.push(TopOfBookRow {
            market: market.to_owned(),
            ts,
            conn,
            seq,
            best_yes_bid,
            yes_bid_size,
            best_no_bid,
            no_bid_size,
        });
    }

    fn apply_trade(&mut self, trade: TradeUpdate, sid: u32, seq: u64, ts_received_us: i64) {
        self.stats.trades += 1;
        let ts = trade
            .ts_ms
            .map_or(ts_received_us, |ms| ms.saturating_mul(1000));
        self.observe_exchange_time(ts, ts_received_us);
        if !self
            .recent_trades
            .first_time(&trade.market, &trade.trade_id)
        {
            tracing::debug!(market = %trade.market, trade_id = %trade.trade_id, "repeated trade");
            self.stats.repeated_trades += 1;
            return;
        }
        let position = self.position(sid, seq);
        self.rows.trades.push(TradeRow {
            market: trade.market.clone(),
            ts,
            ts_received: ts_received_us,
            trade_id: trade.trade_id.clone(),
            yes_price: trade.yes_price.units(),
            count: trade.count.units(),
            taker_side: side_code(trade.taker_side),
            is_block: trade.is_block,
            conn: position.conn,
            sid,
            seq,
        });
        if let Some(bus) = &self.bus {
            bus.publish(LiveEvent::Trade {
                market: trade.market,
                position,
                ts_us: ts,
                trade_id: trade.trade_id,
                yes_price: trade.yes_price,
                count: trade.count,
                taker_side: trade.taker_side,
            });
        }
    }

    fn apply_lifecycle(&mut self, update: LifecycleUpdate, now_us: i64) {
        let mut meta = self
            .markets
            .get(&update.market)
            .and_then(|s| s.meta.clone())
            .unwrap_or_else(|| MarketMeta {
                ticker: update.market.clone(),
                ..MarketMeta::default()
            });
        let status = match update.event_type.as_str() {
            "created" => Some("initialized"),
            "activated" => Some("active"),
            // The same event pauses and unpauses: `is_deactivated` says which.
            "deactivated" if update.is_deactivated == Some(false) => Some("active"),
            "deactivated" => Some("inactive"),
            "determined" => Some("determined"),
            "settled" => Some("finalized"),
            _ => None,
        };
        if let Some(status) = status {
            meta.status = status.to_owned();
        }
        if let Some(title) = &update.title {
            meta.title.clone_from(title);
        }
        if let Some(event) = &update.event_ticker {
            meta.event_ticker.clone_from(event);
        }
        if let Some(structure) = &update.price_level_structure {
            meta.price_level_structure.clone_from(structure);
        }
        if let Some(open) = update.open_ts {
            meta.open_time_us = Some(open.saturating_mul(1_000_000));
        }
        if let Some(close) = update.close_ts {
            meta.close_time_us = Some(close.saturating_mul(1_000_000));
        }
        let market = update.market.clone();
        let open = meta.is_open() && self.matches_filter(&meta);
        self.store_meta(meta, now_us);
        if open {
            self.leaving.remove(&market);
            self.wanted.insert(market.clone());
        } else if !(self.wanted.contains(&market)
            && self.waits_for_closing_snapshot(&market, now_us))
        {
            // `determined` can come before the closing snapshot: a live book waits for it
            // like one discovery stops listing.
            self.wanted.remove(&market);
        }
        self.sync_subscriptions();
        if let Some(bus) = &self.bus {
            bus.publish(LiveEvent::MarketStatus {
                market,
                ts_us: now_us,
                event_type: update.event_type,
            });
        }
    }

    fn on_subscribed(&mut self, id: Option<u64>, sid: Option<u32>, channel: &str) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let Some(sid) = sid else {
            tracing::warn!(channel, "subscribed without a sid");
            return;
        };
        conn.ended_sids.remove(&sid);
        let pending = id.and_then(|id| conn.pending.get(&id));
        // A reply that comes after its subscription's data already told which shard it is
        // (see `confirm_orderbook_sid`) keeps that.
        let known = conn.sids.get(&sid).map(|state| state.channel);
        let kind = match (channel, pending, known) {
            (ORDERBOOK, Some(Pending::Subscribe(Channel::Orderbook(shard))), _) => {
                Channel::Orderbook(*shard)
            }
            (ORDERBOOK, _, Some(known @ Channel::Orderbook(_))) => known,
            (TRADE, _, _) => Channel::Trade,
            (LIFECYCLE, _, _) => Channel::Lifecycle,
            _ => Channel::Other,
        };
        if let Channel::Orderbook(shard) = kind
            && let Some(shard) = conn.shards.get_mut(shard)
        {
            shard.sid = Some(sid);
        }
        // A new subscription's sequence starts at 1: a lost first frame (its snapshot) is a
        // gap like any other. (Frames seen before the reply, never expected, keep their count.)
        let next_seq = conn.sids.get(&sid).and_then(|s| s.next_seq).or(Some(1));
        let clock_us = conn.sids.get(&sid).and_then(|s| s.clock_us);
        conn.sids.insert(
            sid,
            SidState {
                channel: kind,
                next_seq,
                clock_us,
            },
        );
        // One `subscribed` per channel; drop the pending entry once all channels replied.
        if let Some(id) = id
            && !matches!(kind, Channel::Other)
        {
            conn.pending.remove(&id);
        }
    }

    fn on_ok(&mut self, id: Option<u64>, sid: u32, market_tickers: Option<Vec<String>>) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        // Only the replies to add and delete are specified to list the subscription's markets;
        // whatever another `ok` lists (a get_snapshot's) is not taken as the full set.
        let lists_all = match id.and_then(|id| conn.pending.remove(&id)) {
            Some(Pending::Update(update)) => update.action != UpdateAction::GetSnapshot,
            _ => false,
        };
        let Some(SidState {
            channel: Channel::Orderbook(shard),
            ..
        }) = conn.sids.get(&sid).filter(|_| lists_all)
        else {
            return;
        };
        let shard = *shard;
        let Some(tickers) = market_tickers else {
            return;
        };
        // The reply lists the subscription's full market set after its own update, not after
        // ours still unanswered (Kalshi answers back-to-back updates out of order): those are
        // laid over it, or a market being added would seem missing and be added twice.
        let mut listed: BTreeSet<String> = tickers.into_iter().collect();
        let mut unanswered: Vec<(u64, &Update)> = conn
            .pending
            .iter()
            .filter_map(|(id, pending)| match pending {
                Pending::Update(update) if update.sid == sid => Some((*id, update)),
                _ => None,
            })
            .collect();
        unanswered.sort_unstable_by_key(|(id, _)| *id);
        for (_, update) in unanswered {
            match update.action {
                UpdateAction::AddMarkets => listed.extend(update.markets.iter().cloned()),
                UpdateAction::DeleteMarkets => {
                    for market in &update.markets {
                        listed.remove(market);
                    }
                }
                UpdateAction::GetSnapshot => {}
            }
        }
        if let Some(state) = conn.shards.get_mut(shard) {
            state.markets = listed;
        }
    }

    fn on_error(
        &mut self,
        id: Option<u64>,
        sid: Option<u32>,
        code: u32,
        message: &str,
        market_tickers: &[String],
    ) {
        self.stats.subscription_errors += 1;
        tracing::warn!(?id, ?sid, code, message, ?market_tickers, "exchange error");
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        // The subscription the error ends: its own `sid` for 10 and 25; for 7 (unknown
        // subscription id) the one our refused command named, which Kalshi no longer has.
        let mut ended = sid.filter(|_| matches!(code, 10 | 25));
        if let Some(id) = id {
            let refused = conn.sent.get(&id).cloned();
            match (code, refused) {
                // Too many commands: send it again (same id, still pending) a second later.
                // The subscription the error names is dead, whatever the command was.
                (10 | 25, _) if ended.is_some() => {
                    conn.pending.remove(&id);
                }
                (27, Some(command)) => {
                    conn.deferred
                        .push((self.last_received_us + 1_000_000, command));
                    return;
                }
                // Too many markets in one subscription: halve the shards and place the
                // refused markets again.
                (26, Some(command)) => {
                    conn.pending.remove(&id);
                    let refused = command_markets(&command);
                    for shard in &mut conn.shards {
                        for market in &refused {
                            shard.markets.remove(market);
                        }
                    }
                    let size = self.config.markets_per_subscription.min(refused.len());
                    self.config.markets_per_subscription = (size / 2).max(1);
                    tracing::warn!(
                        markets_per_subscription = self.config.markets_per_subscription,
                        "Kalshi refused a subscription's size; smaller shards from now on"
                    );
                    self.sync_subscriptions();
                    return;
                }
                (7, Some(command)) => {
                    conn.pending.remove(&id);
                    ended = command_sid(&command);
                }
                // A terminal error in reply to a command on one subscription ends that one.
                (10 | 25, Some(command)) if ended.is_none() && command_sid(&command).is_some() => {
                    conn.pending.remove(&id);
                    ended = command_sid(&command);
                }
                (_, Some(command)) => match conn.pending.remove(&id) {
                    Some(
                        Pending::Subscribe(Channel::Orderbook(_))
                        | Pending::Update(Update {
                            action: UpdateAction::AddMarkets,
                            ..
                        }),
                    ) => {
                        self.unsubscribed_by_refusal(&command, market_tickers);
                        return;
                    }
                    Some(Pending::Update(Update {
                        action: UpdateAction::GetSnapshot,
                        ..
                    })) => {
                        self.resubscribe_for_snapshots(&command);
                        return;
                    }
                    // A refused trade or lifecycle subscription: ask again a second later, then
                    // two, four, … up to a minute.
                    Some(pending @ Pending::Subscribe(Channel::Trade | Channel::Lifecycle)) => {
                        conn.pending.insert(id, pending);
                        let wait_us = (1_000_000_i64 << conn.side_channel_refusals.min(6))
                            .min(SIDE_CHANNEL_RETRY_MAX_US);
                        conn.side_channel_refusals += 1;
                        conn.deferred
                            .push((self.last_received_us + wait_us, command));
                        return;
                    }
                    _ => {}
                },
                (_, None) => {
                    conn.pending.remove(&id);
                }
            }
        }
        // A terminal error that names no subscription of ours may have ended any of them,
        // and nothing tells which: only a new connection makes every book known again.
        if matches!(code, 10 | 25) && ended.is_none() && id.is_none() {
            conn.abandon.get_or_insert_with(|| {
                format!("exchange error {code} ({message}) named no subscription")
            });
            return;
        }
        if let Some(sid) = ended {
            self.end_subscription(sid, message);
        }
    }

    /// The exchange ended subscription `sid` (`why`): it is subscribed again, and its markets'
    /// books are unknown till then.
    fn end_subscription(&mut self, sid: u32, why: &str) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let Some(state) = conn.sids.remove(&sid) else {
            return;
        };
        conn.ended_sids.insert(sid);
        match state.channel {
            Channel::Orderbook(shard) => {
                let markets = self.shard_markets(shard);
                for market in &markets {
                    self.open_gap(
                        market,
                        GapCause::new(GapKind::SubscriptionError, ORDERBOOK, sid).detail(why),
                    );
                }
                if let Some(conn) = self.conn.as_mut()
                    && let Some(shard) = conn.shards.get_mut(shard)
                {
                    shard.sid = None;
                }
                // (An orderbook subscription naming no market would ask for every market.)
                if !markets.is_empty() {
                    self.send_subscribe(Channel::Orderbook(shard), &markets);
                }
            }
            channel @ (Channel::Trade | Channel::Lifecycle) => self.send_subscribe(channel, &[]),
            Channel::Other => {}
        }
    }

    /// Kalshi refused to subscribe markets (`command`, not for size or rate): they are not
    /// subscribed, whatever our shards assumed. Those the error names are set aside until the
    /// next discovery; the others are placed again at the next resync (a few seconds later,
    /// so that a refusal repeated for ever costs a command every few seconds, not a loop).
    fn unsubscribed_by_refusal(&mut self, command: &str, named: &[String]) {
        let refused = command_markets(command);
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        for shard in &mut conn.shards {
            for market in &refused {
                shard.markets.remove(market);
            }
        }
        // The earlier of a resync already due and this one: refusals coming one after
        // another must not keep postponing it.
        let due = self.last_received_us + RESYNC_DELAY_US;
        conn.resync_at_us = Some(conn.resync_at_us.map_or(due, |at| at.min(due)));
        for market in &refused {
            if let Some(state) = self.markets.get_mut(market) {
                state.shard = None;
            }
        }
        for market in named {
            self.wanted.remove(market);
        }
    }

    /// Kalshi refused `get_snapshot` (`command`): take the markets out of their subscription
    /// and add them again, which brings their snapshots the other way the protocol offers.
    fn resubscribe_for_snapshots(&mut self, command: &str) {
        if let Some(sid) = command_sid(command) {
            self.resubscribe_markets(sid, command_markets(command));
        }
    }

    /// Takes `markets` out of subscription `sid` now and adds them again at the next resync
    /// (a few seconds later), which brings their snapshots.
    fn resubscribe_markets(&mut self, sid: u32, markets: Vec<String>) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let Some(shard) = conn.shards.iter_mut().find(|shard| shard.sid == Some(sid)) else {
            return;
        };
        let markets: Vec<String> = markets
            .into_iter()
            .filter(|market| shard.markets.remove(market))
            .collect();
        if markets.is_empty() {
            return;
        }
        // The earlier of a resync already due and this one: refusals coming one after
        // another must not keep postponing it.
        let due = self.last_received_us + RESYNC_DELAY_US;
        conn.resync_at_us = Some(conn.resync_at_us.map_or(due, |at| at.min(due)));
        for market in &markets {
            if let Some(state) = self.markets.get_mut(market) {
                state.shard = None;
            }
            // Unwatched till added again: a book a snapshot made known (a get_snapshot
            // answered for some markets and refused for others) would go stale unseen.
            self.open_gap(
                market,
                GapCause::new(GapKind::Unsubscribed, ORDERBOOK, sid)
                    .detail("taken out of its subscription to be subscribed again"),
            );
        }
        self.send_update(sid, UpdateAction::DeleteMarkets, markets);
    }

    fn on_malformed(&mut self, sid: Option<u32>, market: Option<&str>) {
        let Some(sid) = sid else { return };
        let channel = self
            .conn
            .as_ref()
            .and_then(|c| c.sids.get(&sid))
            .map(|s| s.channel);
        if let Some(Channel::Orderbook(shard)) = channel {
            let markets: Vec<String> = match market {
                Some(m) if self.markets.contains_key(m) => vec![m.to_owned()],
                _ => self.shard_markets(shard),
            };
            self.stats.gaps += 1;
            for m in &markets {
                self.open_gap(
                    m,
                    GapCause::new(GapKind::MalformedFrame, ORDERBOOK, sid)
                        .detail("unparseable frame"),
                );
            }
            self.request_snapshots(sid, markets);
        }
    }

    fn send_subscribe(&mut self, channel: Channel, markets: &[String]) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let id = conn.next_command_id;
        conn.next_command_id += 1;
        conn.pending.insert(id, Pending::Subscribe(channel));
        let name = match channel {
            Channel::Orderbook(_) => ORDERBOOK,
            Channel::Trade => TRADE,
            Channel::Lifecycle => LIFECYCLE,
            Channel::Other => return,
        };
        self.commands
            .push(commands::subscribe(id, &[name], markets));
    }

    /// Brings the connection's orderbook subscriptions in line with `wanted`.
    fn sync_subscriptions(&mut self) {
        let Some(conn) = self.conn.as_ref() else {
            return;
        };
        let subscribed: BTreeSet<&String> = conn.shards.iter().flat_map(|s| &s.markets).collect();
        let to_add: Vec<String> = self
            .wanted
            .iter()
            .filter(|m| !subscribed.contains(m))
            .cloned()
            .collect();
        let mut to_remove: HashMap<usize, Vec<String>> = HashMap::new();
        for (index, shard) in conn.shards.iter().enumerate() {
            for market in shard.markets.iter().filter(|m| !self.wanted.contains(*m)) {
                to_remove.entry(index).or_default().push(market.clone());
            }
        }
        for (shard, markets) in to_remove {
            let Some(conn) = self.conn.as_mut() else {
                return;
            };
            let Some(sid) = conn.shards[shard].sid else {
                continue;
            };
            for market in &markets {
                conn.shards[shard].markets.remove(market);
            }
            self.send_update(sid, UpdateAction::DeleteMarkets, markets.clone());
            for market in markets {
                if let Some(state) = self.markets.get_mut(&market) {
                    state.shard = None;
                    state.released = true;
                }
                // Unwatched, a live book goes stale: say so. An empty one is a closed
                // market's final book (its closing snapshot came), which stays true.
                if !self.book_is_final(&market) {
                    self.open_gap(
                        &market,
                        GapCause::new(GapKind::Unsubscribed, ORDERBOOK, sid)
                            .detail("the market is no longer recorded"),
                    );
                }
            }
        }
        let per_shard = self.config.markets_per_subscription.max(1);
        let mut remaining = to_add.into_iter().peekable();
        while remaining.peek().is_some() {
            let Some(conn) = self.conn.as_mut() else {
                return;
            };
            // Fill a subscribed shard with room first, else open a new one.
            let room = conn
                .shards
                .iter()
                .position(|s| s.sid.is_some() && s.markets.len() < per_shard);
            let (shard, capacity) = match room {
                Some(index) => (index, per_shard - conn.shards[index].markets.len()),
                None => {
                    conn.shards.push(Shard::default());
                    (conn.shards.len() - 1, per_shard)
                }
            };
            let batch: Vec<String> = remaining.by_ref().take(capacity).collect();
            conn.shards[shard].markets.extend(batch.iter().cloned());
            for market in &batch {
                let state = self.markets.entry(market.clone()).or_default();
                state.shard = Some(shard);
                state.released = false;
            }
            match self.conn.as_ref().and_then(|conn| conn.shards[shard].sid) {
                Some(sid) => self.send_update(sid, UpdateAction::AddMarkets, batch),
                None => self.send_subscribe(Channel::Orderbook(shard), &batch),
            }
        }
    }

    /// Queues checkpoints of the books that are due (see [`ProcessorConfig`]).
    pub fn checkpoint(&mut self, now_us: i64) {
        self.let_leaving_markets_go(now_us);
        if let Some(conn) = self.conn.as_mut() {
            let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut conn.deferred)
                .into_iter()
                .partition(|(at, _)| *at <= now_us);
            conn.deferred = later;
            self.commands
                .extend(due.into_iter().map(|(_, command)| command));
            if conn.resync_at_us.is_some_and(|at| at <= now_us) {
                conn.resync_at_us = None;
                self.sync_subscriptions();
            }
        }
        // Snapshots of a subscription that has gone quiet: place them at the estimated
        // exchange time of their arrival rather than wait for ever.
        let lag = self.receive_lag_us.unwrap_or(0);
        let conn_clock = self.conn.as_ref().and_then(|c| c.clock_us);
        let (overdue, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.unplaced)
            .into_iter()
            .partition(|s| now_us - s.ts_received_us >= UNPLACED_PATIENCE_US);
        self.unplaced = waiting;
        for snapshot in overdue {
            let at = (snapshot.ts_received_us - lag).max(conn_clock.unwrap_or(i64::MIN));
            self.store_snapshot(snapshot, at);
        }
        let Some(conn) = self.conn.as_ref() else {
            return;
        };
        let Some(lag) = self.receive_lag_us else {
            return;
        };
        let conn_id = conn.id;
        // Without traffic the exchange clock stalls; never let a checkpoint's time fall far
        // behind the (estimated) exchange present, or the search for the latest snapshot
        // would have to look back further than its bound.
        let floor = conn.clock_us.unwrap_or(0).max(now_us - lag - 10_000_000);
        let mut due = Vec::new();
        for (market, state) in &self.markets {
            // A market whose latest snapshot is not placed yet has nothing to checkpoint from.
            if state.book.is_none()
                || state.last_conn != conn_id
                || self.unplaced.iter().any(|s| s.market == *market)
            {
                continue;
            }
            let age = now_us - state.last_checkpoint_us;
            if (state.changed_since_checkpoint && age >= self.config.checkpoint_interval_us)
                || age >= self.config.checkpoint_max_quiet_us
            {
                due.push(market.clone());
            }
        }
        for market in due {
            let state = self.markets.get_mut(&market).expect("listed above");
            let ts = state.watermark_us.max(floor);
            state.watermark_us = ts;
            // The checkpoint stands at the last event's position: what follows sorts after.
            state.stored = state.stored.max((ts, conn_id, state.last_seq));
            state.changed_since_checkpoint = false;
            state.last_checkpoint_us = now_us;
            let book = state.book.as_ref().expect("checked above");
            let sid = self
                .conn
                .as_ref()
                .and_then(|c| {
                    state
                        .shard
                        .and_then(|s| c.shards.get(s))
                        .and_then(|s| s.sid)
                })
                .unwrap_or(0);
            self.rows.snapshots.push(SnapshotRow::from_book(
                &SnapshotPlace {
                    market: &market,
                    ts,
                    ts_received: now_us,
                    conn: conn_id,
                    sid,
                    seq: state.last_seq,
                    source: SnapshotSource::Checkpoint,
                },
                book,
            ));
        }
    }

    /// Rows produced since the last call.
    pub fn take_rows(&mut self) -> Rows {
        // The next batch is likely as large as this one: size its delta rows up front rather
        // than grow them by doubling (a copy of everything at each step).
        let deltas = Vec::with_capacity(self.rows.deltas.len());
        let raw_frames = FrameLog::with_capacity(self.rows.raw_frames.bytes());
        std::mem::replace(
            &mut self.rows,
            Rows {
                deltas,
                raw_frames,
                ..Rows::default()
            },
        )
    }

    /// Rows waiting for [`Self::take_rows`], as ClickHouse will count them: the raw frames
    /// of a batch are stored as one compressed block, not a row each.
    #[must_use]
    pub fn pending_rows(&self) -> usize {
        self.rows.len() - self.rows.raw_frames.len()
    }

    /// Why the current connection must be dropped and opened again, if it must: the caller
    /// disconnects with this reason (which records the gaps) and reconnects.
    #[must_use]
    pub fn abandon_reason(&self) -> Option<&str> {
        self.conn.as_ref()?.abandon.as_deref()
    }

    /// Commands (JSON text frames) to send, in order.
    pub fn take_commands(&mut self) -> Vec<String> {
        let commands = std::mem::take(&mut self.commands);
        if let Some(conn) = self.conn.as_mut() {
            for command in &commands {
                if let Some(id) = command_id(command) {
                    conn.sent.insert(id, command.clone());
                }
            }
        }
        commands
    }

    pub fn take_stats(&mut self) -> Stats {
        std::mem::take(&mut self.stats)
    }

    /// The current book of `market`, if known.
    #[must_use]
    pub fn book(&self, market: &str) -> Option<&Book> {
        self.markets.get(market).and_then(|s| s.book.as_ref())
    }

    /// (market, receive time of its last update in Unix µs) for every market with a book.
    pub fn last_updates(&self) -> impl Iterator<Item = (&str, i64)> {
        self.markets
            .iter()
            .filter(|(_, s)| s.book.is_some())
            .map(|(m, s)| (m.as_str(), s.last_update_us))
    }

    /// Markets currently subscribed on the connection.
    #[must_use]
    pub fn subscribed_markets(&self) -> usize {
        self.conn
            .as_ref()
            .map_or(0, |c| c.shards.iter().map(|s| s.markets.len()).sum())
    }
}

/// Whether `shard` (a market's) is subscribed on `conn` under a sid other than `sid`. A free
/// function, so the delta path can ask it while it holds the market's state.
fn on_another_sid(conn: Option<&Connection>, shard: Option<usize>, sid: u32) -> bool {
    shard
        .and_then(|shard| conn?.shards.get(shard)?.sid)
        .is_some_and(|own| own != sid)
}

/// The `id` of a command we built.
fn command_id(command: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(command)
        .ok()?
        .get("id")?
        .as_u64()
}

/// The subscription a command we built names (`update_subscription`'s `sid`).
fn command_sid(command: &str) -> Option<u32> {
    serde_json::from_str::<serde_json::Value>(command)
        .ok()?
        .get("params")?
        .get("sid")?
        .as_u64()
        .and_then(|sid| u32::try_from(sid).ok())
}

/// The markets a command we built names.
fn command_markets(command: &str) -> Vec<String> {
    serde_json::from_str::<serde_json::Value>(command)
        .ok()
        .and_then(|v| v.get("params")?.get("market_tickers").cloned())
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

/// Best YES bid and size, best NO bid and size, in stored units (0 for an empty side).
type Top = (u32, i64, u32, i64);

fn top_of(book: &Book) -> Top {
    let best = |side| {
        book.best_bid(side)
            .map_or((0, 0), |(p, s)| (p.units(), s.units()))
    };
    let (yes, yes_size) = best(Side::Yes);
    let (no, no_size) = best(Side::No);
    (yes, yes_size, no, no_size)
}

fn truncate(text: &str) -> &str {
    let end = text.char_indices().nth(200).map_or(text.len(), |(i, _)| i);
    &text[..end]
}

#[cfg(test)]
#[path = "processor_tests.rs"]
mod tests;
