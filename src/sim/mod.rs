//! A simulated Kalshi exchange that speaks Kalshi's real REST and WebSocket protocol, with
//! seeded, realistic order-book dynamics, recorded ground truth and fault injection, so the
//! collector can be tested end to end without the real exchange.
//!
//! Layout: `ticks` (price grids), `dynamics` (one market's book behaviour, pure), `market`
//! (one market and its views), `exchange` (all markets and connections under one lock, the
//! fan-out, the generator), `lifecycle` (markets opening, pausing, closing, settling),
//! `subscription` and `commands` (WebSocket subscriptions and commands), `messages` (wire
//! types), `outbox` (per-connection bounded queue), `ws` (socket I/O), `rest` (HTTP
//! endpoints), `auth` (signature check), `truth` (ground truth), `faults`, `clock`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kalshibook::sim::SimError> {
//! use kalshibook::sim::{Sim, SimConfig};
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let sim = Sim::start(SimConfig::default(), listener, shutdown.clone())?;
//! println!("REST {} WS {}", sim.rest_url(), sim.ws_url());
//! shutdown.cancel();
//! sim.stopped().await;
//! # Ok(()) }
//! ```

mod auth;
mod clock;
mod commands;
mod dynamics;
mod exchange;
mod faults;
mod lifecycle;
mod market;
mod messages;
mod outbox;
mod rest;
mod subscription;
mod ticks;
mod truth;
mod ws;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rsa::RsaPublicKey;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use auth::{
    ACCESS_KEY, ACCESS_SIGNATURE, ACCESS_TIMESTAMP, AuthError, KeyError, parse_public_key_pem,
    verify,
};
pub use faults::MalformedKind;
pub use ticks::PriceLevelStructure;
pub use truth::TruthCheckpoint;

use crate::market::{Book, Price, Side, Size};
use exchange::Exchange;

/// Everything the simulator can be told. Plain fields so a CLI can fill them; units in names.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Markets open at start.
    pub markets: usize,
    /// Seed of everything random: markets, books, activity, faults.
    pub seed: u64,
    /// Market events generated per second across all markets (an event is an add, a cancel,
    /// a trade walking levels, …; one event may change several levels). 0: only on demand
    /// through [`SimHandle::step`].
    pub events_per_sec: u32,
    /// Percent of markets on a sub-cent grid (`tapered_deci_cent` or `deci_cent`); the rest
    /// are `linear_cent`.
    pub sub_cent_pct: u8,
    /// WebSocket Ping (payload `heartbeat`) interval, ms. Kalshi: 10 000.
    pub ping_interval_ms: u64,
    /// A connection whose oldest unanswered Ping is older than this is dropped, ms. 0: never.
    pub pong_timeout_ms: u64,
    /// Frames a connection may have waiting before a subscription overflows (error 25).
    pub outbox_capacity: usize,
    /// Per mille of sequenced data frames silently skipped, their `seq` still taken.
    pub drop_per_mille: u16,
    /// Per mille of deltas preceded by a malformed frame of a random [`MalformedKind`].
    pub malformed_per_mille: u16,
    /// Close every connection this often, ms. 0: never.
    pub disconnect_every_ms: u64,
    /// Every this many generated events, one step of market churn: create a market, open
    /// it, pause or resume one, close one and settle the closed. 0: no churn.
    pub churn_every_events: u64,
    /// Keep every delta written to each connection for [`SimHandle::sent_deltas`].
    pub record_sent_deltas: bool,
    /// `None`: accept unsigned requests. `Some`: every REST request and WebSocket upgrade
    /// must carry a valid signature by this key, else 401.
    pub public_key: Option<RsaPublicKey>,
    /// If set, `KALSHI-ACCESS-KEY` must equal it.
    pub api_key_id: Option<String>,
    /// Largest accepted distance between `KALSHI-ACCESS-TIMESTAMP` and the exchange clock, ms.
    pub max_clock_skew_ms: u64,
    /// Write the ground truth as JSONL here (format: see the `truth` module).
    pub truth_path: Option<PathBuf>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            markets: 20,
            seed: 1,
            events_per_sec: 50,
            sub_cent_pct: 30,
            ping_interval_ms: 10_000,
            pong_timeout_ms: 30_000,
            outbox_capacity: 8192,
            drop_per_mille: 0,
            malformed_per_mille: 0,
            disconnect_every_ms: 0,
            churn_every_events: 0,
            record_sent_deltas: true,
            public_key: None,
            api_key_id: None,
            max_clock_skew_ms: 60_000,
            truth_path: None,
        }
    }
}

/// What can go wrong starting or driving the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid simulator configuration: {0}")]
    InvalidConfig(&'static str),
    #[error("simulator I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("no market {0:?}")]
    UnknownMarket(String),
    #[error("market {0:?} is already settled")]
    AlreadySettled(String),
}

/// One `orderbook_delta` written to a client's socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentDelta {
    pub sid: u64,
    pub seq: u64,
    pub market: String,
    pub side: Side,
    pub price: Price,
    pub delta: Size,
    /// Exchange time of the change, Unix ms.
    pub ts_ms: i64,
}

/// The simulator's entry point.
pub struct Sim;

impl Sim {
    /// Starts the exchange on `listener` (REST under `/trade-api/v2`, WebSocket at
    /// `/trade-api/ws/v2`) and the market generator; everything stops when `shutdown` is
    /// cancelled. Must be called inside a Tokio runtime.
    ///
    /// # Errors
    /// [`SimError::InvalidConfig`] for an unusable configuration, [`SimError::Io`] if the
    /// listener has no address or the truth file cannot be created.
    pub fn start(
        config: SimConfig,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<SimHandle, SimError> {
        if config.ping_interval_ms == 0 {
            return Err(SimError::InvalidConfig("ping_interval_ms must be > 0"));
        }
        if config.sub_cent_pct > 100 {
            return Err(SimError::InvalidConfig("sub_cent_pct must be ≤ 100"));
        }
        let address = listener.local_addr()?;
        let tracker = TaskTracker::new();
        let truth = match &config.truth_path {
            Some(path) => truth::Truth::with_file(path, shutdown.clone(), &tracker)?,
            None => truth::Truth::default(),
        };
        let gate = config.public_key.clone().map(|public_key| auth::Gate {
            public_key,
            api_key_id: config.api_key_id.clone(),
            max_skew_ms: i64::try_from(config.max_clock_skew_ms).unwrap_or(i64::MAX),
        });
        let exchange = Exchange::new(&config, truth);
        let shared = Arc::new(Shared {
            exchange: Mutex::new(exchange),
            gate,
            ping_interval: Duration::from_millis(config.ping_interval_ms),
            pong_timeout: (config.pong_timeout_ms > 0)
                .then(|| Duration::from_millis(config.pong_timeout_ms)),
            record_sent: config.record_sent_deltas,
            stall: watch::Sender::new(None),
            version: watch::Sender::new(0),
            sent: Mutex::new(BTreeMap::new()),
            shutdown: shutdown.clone(),
            tracker: tracker.clone(),
        });
        let router = rest::router(shared.clone());
        let serve_shutdown = shutdown.clone();
        tracker.spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(serve_shutdown.cancelled_owned())
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "sim: HTTP server failed");
            }
        });
        tracker.spawn(exchange::generate(
            shared.clone(),
            config.events_per_sec,
            Duration::from_millis(config.disconnect_every_ms),
        ));
        tracker.close();
        tracing::info!(%address, markets = config.markets, seed = config.seed, "sim: exchange open");
        Ok(SimHandle {
            shared,
            tracker,
            address,
        })
    }
}

/// Runs the simulator until `shutdown` is cancelled and every task has finished (the truth
/// file complete).
///
/// # Errors
/// As [`Sim::start`].
pub async fn run(
    config: SimConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), SimError> {
    let handle = Sim::start(config, listener, shutdown.clone())?;
    shutdown.cancelled().await;
    handle.stopped().await;
    Ok(())
}

/// State shared by the HTTP handlers, the connections, the generator and the handle.
pub(crate) struct Shared {
    pub exchange: Mutex<Exchange>,
    pub gate: Option<auth::Gate>,
    pub ping_interval: Duration,
    pub pong_timeout: Option<Duration>,
    pub record_sent: bool,
    /// Until when every socket is silent (`stall`).
    pub stall: watch::Sender<Option<tokio::time::Instant>>,
    /// Bumped on every observable change, for [`SimHandle::wait_until`].
    pub version: watch::Sender<u64>,
    pub sent: Mutex<BTreeMap<u64, Vec<SentDelta>>>,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
}

impl Shared {
    pub fn exchange(&self) -> MutexGuard<'_, Exchange> {
        lock(&self.exchange)
    }

    pub fn bump(&self) {
        self.version
            .send_modify(|version| *version = version.wrapping_add(1));
    }
}

/// Locks a mutex, taking the data even if a panicking thread poisoned it (the simulator's
/// state stays usable for the test that wants to see what happened).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A handle on a running simulator: its addresses, its ground truth, and the knobs tests
/// turn. Cheap to clone.
#[derive(Clone)]
pub struct SimHandle {
    shared: Arc<Shared>,
    tracker: TaskTracker,
    address: SocketAddr,
}

impl SimHandle {
    /// The address the exchange listens on.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// `http://ADDR/trade-api/v2`, the REST base.
    #[must_use]
    pub fn rest_url(&self) -> String {
        format!("http://{}/trade-api/v2", self.address)
    }

    /// `ws://ADDR/trade-api/ws/v2`, the WebSocket endpoint.
    #[must_use]
    pub fn ws_url(&self) -> String {
        format!("ws://{}{}", self.address, ws::PATH)
    }

    /// Every market's ticker, in creation order (settled markets included).
    #[must_use]
    pub fn markets(&self) -> Vec<String> {
        self.shared.exchange().tickers()
    }

    /// Tickers of the markets that are trading (status `active`).
    #[must_use]
    pub fn active_markets(&self) -> Vec<String> {
        self.shared.exchange().active_tickers()
    }

    /// A market's status as Kalshi's REST reports it (`active`, `closed`, `finalized`, …).
    #[must_use]
    pub fn market_status(&self, ticker: &str) -> Option<&'static str> {
        self.shared.exchange().status_of(ticker)
    }

    /// A market's price level structure.
    #[must_use]
    pub fn price_level_structure(&self, ticker: &str) -> Option<PriceLevelStructure> {
        self.shared.exchange().structure_of(ticker)
    }

    /// A market's book now.
    #[must_use]
    pub fn book(&self, ticker: &str) -> Option<Book> {
        self.shared.exchange().truth.current_book(ticker).cloned()
    }

    /// The book of `market` after every change with exchange time ≤ `ts_ms` (Unix ms);
    /// `None` for an unknown market or an instant before it existed.
    #[must_use]
    pub fn book_at(&self, market: &str, ts_ms: i64) -> Option<Book> {
        self.shared.exchange().truth.book_at(market, ts_ms)
    }

    /// The book of `market` after each of its changes: (exchange ts_ms, exchange-wide change
    /// index, book). Every market starts with a change that sets its initial book.
    #[must_use]
    pub fn truth(&self, market: &str) -> Vec<(i64, u64, Book)> {
        self.shared.exchange().truth.history(market)
    }

    /// Every market's current book with its last change, sorted by ticker. Taken under the
    /// exchange lock, so it is one consistent instant.
    #[must_use]
    pub fn checkpoints(&self) -> Vec<TruthCheckpoint> {
        self.shared.exchange().truth.current()
    }

    /// For each connection id, every `orderbook_delta` written to its socket, in order.
    /// Dropped frames are not in it; frames still queued are not in it yet.
    #[must_use]
    pub fn sent_deltas(&self) -> BTreeMap<u64, Vec<SentDelta>> {
        lock(&self.shared.sent).clone()
    }

    /// Silently skips the next `n` sequenced data frames (deltas, trades, lifecycle, close
    /// snapshots) on any connection; each still takes its `seq`, so clients see a gap.
    /// Command replies are never dropped.
    pub fn drop_next(&self, n: u64) {
        self.shared.exchange().faults.drop_next += n;
    }

    /// Closes every WebSocket connection at once, without a close frame.
    pub fn disconnect_all(&self) {
        self.shared.exchange().disconnect_all();
        self.shared.bump();
    }

    /// Sends nothing at all (frames, Pings, Pongs) and reads nothing on every socket for
    /// `duration`; sockets stay open and frames keep queuing (and may overflow).
    /// `Duration::ZERO` ends a stall early.
    pub fn stall(&self, duration: Duration) {
        let until = (!duration.is_zero()).then(|| tokio::time::Instant::now() + duration);
        self.shared.stall.send_replace(until);
    }

    /// Sends one malformed frame of `kind` on every connection. Kinds that take a `seq` go
    /// on the connection's first `orderbook_delta` subscription that has a market, and are
    /// skipped on a connection without one.
    pub fn send_malformed(&self, kind: MalformedKind) {
        self.shared.exchange().send_malformed(kind);
    }

    /// Creates and opens a new market (lifecycle `created` and `activated`; its book fills
    /// with deltas) and returns its ticker.
    pub fn open_market(&self) -> String {
        let ticker = self.shared.exchange().open_market();
        self.shared.bump();
        ticker
    }

    /// Closes (an empty `orderbook_snapshot` on every orderbook subscription holding it),
    /// determines and settles a market (lifecycle events for each).
    ///
    /// # Errors
    /// [`SimError::UnknownMarket`], [`SimError::AlreadySettled`].
    pub fn settle_market(&self, ticker: &str) -> Result<(), SimError> {
        let settled = self.shared.exchange().settle_market(ticker);
        self.shared.bump();
        settled
    }

    /// Stops automatic generation. When this returns, no generated event will follow until
    /// [`Self::resume_generation`].
    pub fn pause_generation(&self) {
        self.shared.exchange().paused = true;
    }

    /// Resumes automatic generation (without a burst for the paused time).
    pub fn resume_generation(&self) {
        self.shared.exchange().paused = false;
    }

    /// Generates `events` market events now, whatever the rate or pause.
    pub fn step(&self, events: u64) {
        self.shared.exchange().generate(events);
        self.shared.bump();
    }

    /// Open WebSocket connections.
    #[must_use]
    pub fn connections(&self) -> usize {
        self.shared.exchange().connection_ids().len()
    }

    /// Ids of the open connections, ascending (ids are never reused).
    #[must_use]
    pub fn connection_ids(&self) -> Vec<u64> {
        self.shared.exchange().connection_ids()
    }

    /// Markets of every `orderbook_delta` subscription of connection `conn`, sorted.
    #[must_use]
    pub fn subscribed_markets(&self, conn: u64) -> Vec<String> {
        self.shared.exchange().subscribed_markets(conn)
    }

    /// Waits until `ready(self)` holds, re-checking after every change of the exchange
    /// (connections, subscriptions, events, frames written).
    pub async fn wait_until(&self, mut ready: impl FnMut(&SimHandle) -> bool) {
        let mut version = self.shared.version.subscribe();
        loop {
            version.borrow_and_update();
            if ready(self) {
                return;
            }
            if version.changed().await.is_err() {
                return;
            }
        }
    }

    /// Resolves when every task of the simulator has finished after shutdown.
    pub async fn stopped(&self) {
        self.tracker.wait().await;
    }
}
