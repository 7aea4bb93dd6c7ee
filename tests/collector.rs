//! End to end: the simulated exchange → the collector → ClickHouse, with faults on. Books
//! reconstructed by the book-at-T SQL must equal the exchange's truth at every instant outside
//! the spans recorded in `feed_gaps`, every injected fault must appear there, and nothing the
//! exchange sent may be missing or stored twice.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use clickhouse::Row;
use common::exchange::{
    self, collector_config, reconnect_all, trade_for, wait_caught_up, wait_subscribed,
};
use common::{PrivateClickHouse, TestEnv};
use kalshibook::clickhouse::book::book_at;
use kalshibook::live::Bus;
use kalshibook::sim::{MalformedKind, SimConfig, SimHandle};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Row, Deserialize)]
struct GapRow {
    market: String,
    kind: String,
    ts_start: i64,
    ts_end: Option<i64>,
}

async fn gaps(client: &clickhouse::Client) -> Vec<GapRow> {
    client
        .query(
            "SELECT market, toString(kind) AS kind, toUnixTimestamp64Micro(ts_start) AS ts_start, \
             toUnixTimestamp64Micro(ts_end) AS ts_end FROM feed_gaps FINAL ORDER BY market, ts_start",
        )
        .fetch_all::<GapRow>()
        .await
        .expect("read feed_gaps")
}

/// The exchange of these tests: sent deltas are recorded, to check none is lost.
async fn start_sim(markets: usize, events_per_sec: u32) -> (SimHandle, CancellationToken) {
    exchange::start_sim(SimConfig {
        record_sent_deltas: true,
        ..exchange::sim_shape(markets, 0x6b62, events_per_sec)
    })
    .await
}

/// Pauses the exchange's activity, waits for the collector to catch up, resumes.
async fn settle(client: &clickhouse::Client, sim: &SimHandle) {
    sim.pause_generation();
    wait_caught_up(client, sim).await;
    sim.resume_generation();
}

/// Compares the book-at-T SQL with the exchange's truth at every millisecond in which a
/// market changed, except inside recorded gaps and before the first stored snapshot.
/// Returns how many instants were compared.
async fn compare_with_truth(client: &clickhouse::Client, sim: &SimHandle) -> usize {
    let gaps = gaps(client).await;
    let mut compared = 0;
    let (mut in_gaps, mut before_first) = (0, 0);
    for market in sim.markets() {
        let spans: Vec<(i64, i64)> = gaps
            .iter()
            .filter(|g| g.market == market)
            .map(|g| (g.ts_start, g.ts_end.unwrap_or(i64::MAX)))
            .collect();
        let mut instants: Vec<i64> = sim
            .truth(&market)
            .iter()
            .map(|(ts_ms, _, _)| *ts_ms)
            .collect();
        instants.dedup();
        // Every instant would take too long: the first ones, the last ones and a spread.
        let step = (instants.len() / 150).max(1);
        let chosen: Vec<i64> = instants
            .iter()
            .enumerate()
            .filter(|(i, _)| i % step == 0 || *i + 20 >= instants.len())
            .map(|(_, t)| *t)
            .collect();
        for ts_ms in chosen {
            // The end of that millisecond: every change stamped with it has happened.
            let at = ts_ms * 1000 + 999;
            if spans.iter().any(|(start, end)| *start <= at && at < *end) {
                in_gaps += 1;
                continue;
            }
            let stored = book_at(client, &market, at).await.expect("book_at");
            let truth = sim.book_at(&market, ts_ms);
            match stored {
                None => before_first += 1, // before the collector's first snapshot of the market
                Some(stored) => {
                    assert_eq!(
                        Some(stored.book),
                        truth,
                        "{market} at {ts_ms} ms (outside every recorded gap)"
                    );
                    compared += 1;
                }
            }
        }
    }
    eprintln!(
        "compared {compared} instants; skipped {in_gaps} inside gaps, {before_first} before the first snapshot"
    );
    compared
}

#[derive(Debug, Row, Deserialize)]
struct StoredDelta {
    market: String,
    ts: i64,
    side: i8,
    price: u32,
    delta: i64,
    conn: u64,
    sid: u32,
    seq: u64,
}

/// Every delta the exchange sent is stored, unless it lies inside a recorded gap of its
/// market; no delta is stored twice.
async fn check_nothing_lost_or_doubled(client: &clickhouse::Client, sim: &SimHandle) -> usize {
    let stored = client
        .query(
            "SELECT market, toUnixTimestamp64Micro(ts) AS ts, toInt8(side) AS side, price, delta, \
             conn, sid, seq FROM deltas",
        )
        .fetch_all::<StoredDelta>()
        .await
        .expect("read deltas");
    let mut positions = HashSet::new();
    for row in &stored {
        assert!(
            positions.insert((row.conn, row.sid, row.seq)),
            "delta stored twice: {row:?}"
        );
    }
    // Multiset of (market, side, price, delta, ts ms) stored.
    let mut available: HashMap<(String, i8, u32, i64, i64), usize> = HashMap::new();
    for row in &stored {
        *available
            .entry((
                row.market.clone(),
                row.side,
                row.price,
                row.delta,
                row.ts / 1000,
            ))
            .or_default() += 1;
    }
    let gaps = gaps(client).await;
    let mut checked = 0;
    for deltas in sim.sent_deltas().values() {
        for sent in deltas {
            let at = sent.ts_ms * 1000;
            let in_gap = gaps.iter().any(|g| {
                g.market == sent.market
                    && g.ts_start <= at + 999
                    && at <= g.ts_end.unwrap_or(i64::MAX)
            });
            if in_gap {
                continue;
            }
            let side = if sent.side == kalshibook::market::Side::Yes {
                1
            } else {
                2
            };
            let key = (
                sent.market.clone(),
                side,
                sent.price.units(),
                sent.delta.units(),
                sent.ts_ms,
            );
            let count = available.get_mut(&key);
            assert!(
                count.as_ref().is_some_and(|c| **c > 0),
                "sent outside any gap but not stored: {sent:?}"
            );
            *count.expect("checked") -= 1;
            checked += 1;
        }
    }
    checked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_books_equal_the_exchange_outside_recorded_gaps() {
    let env = TestEnv::migrated().await;
    let (sim, sim_shutdown) = start_sim(12, 400).await;
    let config = collector_config(&env, &sim, 4);
    let shutdown = CancellationToken::new();
    let collector = kalshibook::collector::start(&config, Bus::default(), shutdown.clone())
        .await
        .expect("start the collector");
    wait_subscribed(&sim).await;
    let client = env.clickhouse();

    // Faults, each once the previous one has been recovered from.
    trade_for(Duration::from_secs(2)).await;
    // A lost frame is only noticed when the next one on its subscription arrives: keep the
    // exchange busy after each drop.
    sim.drop_next(3);
    sim.step(500);
    settle(&client, &sim).await;
    trade_for(Duration::from_secs(2)).await;
    sim.send_malformed(MalformedKind::WrongTypes);
    sim.send_malformed(MalformedKind::InvalidJson);
    sim.send_malformed(MalformedKind::NegativeSize);
    settle(&client, &sim).await;
    trade_for(Duration::from_secs(2)).await;
    reconnect_all(&sim).await;
    trade_for(Duration::from_secs(2)).await;
    let settled = sim.active_markets()[0].clone();
    sim.settle_market(&settled).expect("settle");
    let opened = sim.open_market();
    sim.wait_until(|s| {
        s.connection_ids()
            .iter()
            .any(|c| s.subscribed_markets(*c).contains(&opened))
    })
    .await;
    trade_for(Duration::from_secs(1)).await;
    sim.drop_next(2);
    sim.step(500);
    trade_for(Duration::from_secs(1)).await;
    sim.pause_generation();
    wait_caught_up(&client, &sim).await;

    let compared = compare_with_truth(&client, &sim).await;
    assert!(compared > 500, "compared only {compared} instants");
    let kinds: HashSet<String> = gaps(&client).await.into_iter().map(|g| g.kind).collect();
    for kind in ["sequence_gap", "reconnect", "malformed_frame"] {
        assert!(kinds.contains(kind), "no {kind} gap recorded: {kinds:?}");
    }
    let checked = check_nothing_lost_or_doubled(&client, &sim).await;
    assert!(checked > 500, "checked only {checked} deltas");
    assert_eq!(sim.book(&settled).map(|b| b.levels().count()), Some(0));

    shutdown.cancel();
    collector.join().await;
    sim_shutdown.cancel();
    let _ = std::fs::remove_dir_all(&config.spool_dir);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clickhouse_outage_loses_nothing() {
    let env = TestEnv::new().await;
    let mut clickhouse = PrivateClickHouse::start(&env.name).await;
    let (sim, sim_shutdown) = start_sim(8, 300).await;
    let mut config = collector_config(&env, &sim, 4);
    config.clickhouse.url = clickhouse.url();
    kalshibook::migrate::run(&config).await.expect("migrate");
    let client = kalshibook::clickhouse::client(&config.clickhouse);
    let shutdown = CancellationToken::new();
    let collector = kalshibook::collector::start(&config, Bus::default(), shutdown.clone())
        .await
        .expect("start the collector");
    wait_subscribed(&sim).await;
    trade_for(Duration::from_secs(1)).await;
    settle(&client, &sim).await;

    clickhouse.stop().await;
    let outage_secs = std::env::var("KALSHIBOOK_TEST_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    // The outage lasts as long as the acceptance asks; the exchange keeps trading meanwhile.
    tokio::time::sleep(Duration::from_secs(outage_secs)).await;
    assert!(
        collector.writer.status().last_error.is_some(),
        "inserts failed during the outage"
    );
    clickhouse.resume().await;
    sim.pause_generation();
    wait_caught_up(&client, &sim).await;

    assert!(compare_with_truth(&client, &sim).await > 300);
    let checked = check_nothing_lost_or_doubled(&client, &sim).await;
    assert!(checked > 1_000, "checked only {checked} deltas");
    let outage_gaps = gaps(&client).await;
    assert!(
        outage_gaps.is_empty(),
        "an outage of ClickHouse is not a gap in the feed: {outage_gaps:?}"
    );

    shutdown.cancel();
    collector.join().await;
    sim_shutdown.cancel();
    let _ = std::fs::remove_dir_all(&config.spool_dir);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_collector_restarts_without_losing_or_doubling() {
    let env = TestEnv::migrated().await;
    let (sim, sim_shutdown) = start_sim(8, 300).await;
    let config = collector_config(&env, &sim, 4);
    let mut vars: BTreeMap<String, String> = env.vars.clone().into_iter().collect();
    vars.insert("KALSHIBOOK_KALSHI_WS_URL".into(), sim.ws_url());
    vars.insert("KALSHIBOOK_KALSHI_REST_URL".into(), sim.rest_url());
    vars.insert(
        "KALSHIBOOK_SPOOL_DIR".into(),
        config.spool_dir.display().to_string(),
    );
    vars.insert("KALSHIBOOK_MARKETS_PER_SUBSCRIPTION".into(), "4".into());
    let spawn = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_kalshibook"))
            .arg("collect")
            .env_clear()
            .envs(&vars)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn kalshibook collect")
    };
    let client = env.clickhouse();

    let mut first = spawn();
    wait_subscribed(&sim).await;
    trade_for(Duration::from_secs(1)).await;
    settle(&client, &sim).await;
    // Killed while the exchange trades: some of what it received is not stored yet.
    trade_for(Duration::from_secs(2)).await;
    let killed = sim.connection_ids();
    first.kill().await.expect("SIGKILL the collector");
    first.wait().await.expect("reap");
    sim.wait_until(|s| s.connection_ids().iter().all(|c| !killed.contains(c)))
        .await;

    let mut second = spawn();
    wait_subscribed(&sim).await;
    trade_for(Duration::from_secs(2)).await;
    sim.pause_generation();
    wait_caught_up(&client, &sim).await;

    assert!(compare_with_truth(&client, &sim).await > 300);
    let checked = check_nothing_lost_or_doubled(&client, &sim).await;
    assert!(checked > 500, "checked only {checked} deltas");
    let kinds: HashSet<String> = gaps(&client).await.into_iter().map(|g| g.kind).collect();
    assert!(
        kinds.contains("collector_restart"),
        "the restart is recorded as a gap: {kinds:?}"
    );

    second.kill().await.expect("stop");
    sim_shutdown.cancel();
    let _ = std::fs::remove_dir_all(&config.spool_dir);
    env.cleanup().await;
}
