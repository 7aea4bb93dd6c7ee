//! The simulated exchange and a collector pointed at it, for the end-to-end tests
//! (`collector.rs`, `graphql_sim.rs`, `live.rs`): starting them and waiting until the
//! collector has subscribed or caught up.

use std::time::Duration;

use kalshibook::clickhouse::book::book_at;
use kalshibook::config::Config;
use kalshibook::sim::{Sim, SimConfig, SimHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::TestEnv;

/// How long a wait on the exchange or the collector may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(90);

/// Now, in microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970");
    i64::try_from(since_epoch.as_micros()).expect("microseconds fit in i64")
}

/// The simulated exchange on a free local port, with sub-cent markets among its markets;
/// `shape` sets the rest (markets, seed, rate, recording).
pub async fn start_sim(shape: SimConfig) -> (SimHandle, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free local port");
    let shutdown = CancellationToken::new();
    let sim = Sim::start(shape, listener, shutdown.clone()).expect("start the simulator");
    (sim, shutdown)
}

/// The simulator's usual test shape: `markets` markets, 40 % of them on sub-cent ticks.
pub fn sim_shape(markets: usize, seed: u64, events_per_sec: u32) -> SimConfig {
    SimConfig {
        markets,
        seed,
        events_per_sec,
        sub_cent_pct: 40,
        record_sent_deltas: false,
        ..SimConfig::default()
    }
}

/// `env`'s configuration with the collector pointed at `sim`, a private spool, and small
/// shards (`markets_per_subscription`), so that a gap resynchronises only part of the markets.
pub fn collector_config(env: &TestEnv, sim: &SimHandle, markets_per_subscription: usize) -> Config {
    let mut config = env.config.clone();
    config.kalshi.ws_url = sim.ws_url();
    config.kalshi.rest_url = sim.rest_url();
    config.spool_dir = std::env::temp_dir().join(format!("{}_spool", env.name));
    config.collector.markets_per_subscription = markets_per_subscription;
    config
}

/// Waits until one connection of the collector holds every active market of the simulator.
pub async fn wait_subscribed(sim: &SimHandle) {
    let wanted = sim.active_markets().len();
    tokio::time::timeout(
        PATIENCE,
        sim.wait_until(|s| {
            s.connection_ids()
                .iter()
                .any(|c| s.subscribed_markets(*c).len() >= wanted)
        }),
    )
    .await
    .expect("the collector subscribes to every market");
}

/// Disconnects every client of the exchange and waits until the collector is back and
/// subscribed to every market again.
pub async fn reconnect_all(sim: &SimHandle) {
    let before = sim.connection_ids();
    sim.disconnect_all();
    tokio::time::timeout(
        PATIENCE,
        sim.wait_until(|s| s.connection_ids().iter().any(|c| !before.contains(c))),
    )
    .await
    .expect("the collector reconnects");
    wait_subscribed(sim).await;
}

/// Lets the exchange trade for a while, so there is history to compare. Pacing, not
/// synchronisation: no assertion depends on how much happened meanwhile.
pub async fn trade_for(duration: Duration) {
    tokio::time::sleep(duration).await;
}

/// Polls ClickHouse until the book it serves now equals the exchange's for every market
/// (the collector has caught up and every gap has been resynchronised). The exchange must be
/// paused, or "now" moves on.
pub async fn wait_caught_up(client: &clickhouse::Client, sim: &SimHandle) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mut behind = Vec::new();
        for market in sim.markets() {
            let stored = book_at(client, &market, now_us() + 60_000_000)
                .await
                .expect("book_at");
            if stored.map(|b| b.book) != sim.book(&market) {
                behind.push(market);
            }
        }
        let Some(market) = behind.first() else {
            return;
        };
        if tokio::time::Instant::now() > deadline {
            let stored = book_at(client, market, now_us() + 60_000_000)
                .await
                .expect("book_at");
            let gaps: Vec<String> = client
                .query("SELECT toString(tuple(*)) FROM feed_gaps FINAL WHERE market = ?")
                .bind(market)
                .fetch_all()
                .await
                .unwrap_or_default();
            panic!(
                "the stored books never caught up with the exchange: {behind:?}\n\
                 {market} stored: {stored:?}\nexchange: {:?}\ngaps: {gaps:?}",
                sim.book(market)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
