//! The history API end to end: the simulated exchange → the collector → ClickHouse → the
//! GraphQL server over HTTP. Books served by `orderbook(at:)` must equal the exchange's truth
//! at many instants (random ones, and ones just before and after every snapshot and gap),
//! be flagged incomplete inside recorded gaps, and equal the book-at-T SQL exactly;
//! `bookSnapshots` must equal repeated `orderbook` calls; and paging `deltas` while the
//! collector keeps inserting must return every delta once, in order.

mod api;
mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use api::{BOOK_FIELDS, TestServer, book_of, delta_position, micros, now_us, rfc3339};
use clickhouse::Row;
use common::TestEnv;
use common::exchange::{
    collector_config, reconnect_all, sim_shape, start_sim, trade_for, wait_caught_up,
    wait_subscribed,
};
use kalshibook::clickhouse::book::book_at;
use kalshibook::live::Bus;
use kalshibook::sim::SimHandle;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Row, Deserialize)]
struct GapRow {
    market: String,
    ts_start: i64,
    ts_end: Option<i64>,
}

async fn gaps(client: &clickhouse::Client) -> Vec<GapRow> {
    client
        .query(
            "SELECT market, toUnixTimestamp64Micro(ts_start) AS ts_start, \
             toUnixTimestamp64Micro(ts_end) AS ts_end FROM feed_gaps FINAL \
             WHERE market != '' ORDER BY market, ts_start",
        )
        .fetch_all::<GapRow>()
        .await
        .expect("read feed_gaps")
}

#[derive(Debug, Row, Deserialize)]
struct SnapshotTs {
    market: String,
    ts_us: i64,
}

async fn snapshot_instants(client: &clickhouse::Client) -> Vec<SnapshotTs> {
    client
        .query("SELECT market, toUnixTimestamp64Micro(ts) AS ts_us FROM snapshots ORDER BY market, ts_us")
        .fetch_all::<SnapshotTs>()
        .await
        .expect("read snapshots")
}

#[derive(Debug, Row, Deserialize, PartialEq, Eq, PartialOrd, Ord, Clone, Copy)]
struct Position {
    ts_us: i64,
    conn: u64,
    seq: u64,
}

/// Polls until the collector has stored `market`'s metadata: before that the API rightly
/// answers `NOT_FOUND` for it.
async fn wait_market_stored(client: &clickhouse::Client, market: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let stored: u64 = client
            .query("SELECT count() FROM markets WHERE ticker = ?")
            .bind(market)
            .fetch_one()
            .await
            .expect("read markets");
        if stored > 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the collector never stored {market}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const DELTAS_PAGE: &str = "query($t: String!, $from: DateTime!, $to: DateTime!, $after: String) {
  deltas(ticker: $t, from: $from, to: $to, first: 37, after: $after) {
    edges { cursor node { ts side price delta seq } }
    pageInfo { hasNextPage endCursor startCursor }
  }
}";

/// Pages through `deltas` from `after` until a page says nothing follows; returns the
/// positions read and the cursor to continue from.
async fn page_deltas(
    server: &TestServer,
    ticker: &str,
    range: (i64, i64),
    mut after: Option<String>,
    positions: &mut Vec<(i64, u64, u64)>,
) -> Option<String> {
    loop {
        let data = server
            .data(
                DELTAS_PAGE,
                json!({ "t": ticker, "from": rfc3339(range.0), "to": rfc3339(range.1), "after": after }),
            )
            .await;
        let page = &data["deltas"];
        let edges = page["edges"].as_array().expect("edges");
        for edge in edges {
            let position = delta_position(edge["cursor"].as_str().unwrap());
            assert_eq!(micros(&edge["node"]["ts"]), position.0);
            assert_eq!(edge["node"]["seq"].as_u64(), Some(position.2));
            positions.push(position);
        }
        if let Some(end) = page["pageInfo"]["endCursor"].as_str() {
            after = Some(end.to_owned());
        }
        if page["pageInfo"]["hasNextPage"] != true {
            return after;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_serves_the_exchange_books_and_deltas_recorded_by_the_collector() {
    let env = TestEnv::migrated().await;
    let (sim, sim_shutdown) = start_sim(sim_shape(8, 0x6b62_a001, 300)).await;
    let config = collector_config(&env, &sim, 4);
    let shutdown = CancellationToken::new();
    let collector = kalshibook::collector::start(&config, Bus::default(), shutdown.clone())
        .await
        .expect("start the collector");
    let server = TestServer::start(&env.config).await;
    let client = env.clickhouse();
    let started = now_us();
    wait_subscribed(&sim).await;
    let paged_market = sim.active_markets()[0].clone();
    wait_market_stored(&client, &paged_market).await;
    let range = (started, started + 3_600_000_000);

    // Page deltas while the exchange trades and faults happen; the collector keeps inserting.
    let mut positions = Vec::new();
    let mut after = None;
    let mut pages_while_inserting = 0;
    for round in 0..12 {
        after = page_deltas(&server, &paged_market, range, after, &mut positions).await;
        pages_while_inserting += 1;
        match round {
            3 => {
                // A lost frame is noticed when the next one on its subscription arrives.
                sim.drop_next(3);
                sim.step(400);
            }
            7 => {
                reconnect_all(&sim).await;
            }
            _ => {}
        }
        trade_for(Duration::from_millis(700)).await;
    }
    sim.pause_generation();
    wait_caught_up(&client, &sim).await;
    page_deltas(&server, &paged_market, range, after, &mut positions).await;

    // Every stored delta of the range, once, in exchange order.
    let stored = client
        .query(
            "SELECT toUnixTimestamp64Micro(ts) AS ts_us, conn, seq FROM deltas \
             WHERE market = ? AND ts >= fromUnixTimestamp64Micro(?, 'UTC') \
             AND ts < fromUnixTimestamp64Micro(?, 'UTC') ORDER BY ts, conn, seq",
        )
        .bind(&paged_market)
        .bind(range.0)
        .bind(range.1)
        .fetch_all::<Position>()
        .await
        .expect("read deltas");
    let stored: Vec<(i64, u64, u64)> = stored.iter().map(|p| (p.ts_us, p.conn, p.seq)).collect();
    assert!(stored.len() > 200, "only {} deltas stored", stored.len());
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "pages are in strictly increasing (ts, conn, seq) order"
    );
    assert_eq!(
        positions, stored,
        "paging returned every stored delta exactly once"
    );
    eprintln!(
        "paged {} deltas of {paged_market} over {pages_while_inserting} rounds while inserting",
        positions.len()
    );

    compare_books(&server, &client, &sim).await;
    compare_book_snapshots(&server, &sim).await;

    server.stop().await;
    shutdown.cancel();
    collector.join().await;
    sim_shutdown.cancel();
    let _ = std::fs::remove_dir_all(&config.spool_dir);
    env.cleanup().await;
}

const ORDERBOOK: &str =
    "query($t: String!, $at: DateTime!) { orderbook(ticker: $t, at: $at, depth: 1000) { BOOK } }";

async fn orderbook(server: &TestServer, ticker: &str, at: i64) -> Value {
    let query = ORDERBOOK.replace("BOOK", BOOK_FIELDS);
    let data = server
        .data(&query, json!({ "t": ticker, "at": rfc3339(at) }))
        .await;
    data["orderbook"].clone()
}

/// The end of the millisecond containing `us`: every change stamped in it has happened.
fn end_of_ms(us: i64) -> i64 {
    us.div_euclid(1000) * 1000 + 999
}

async fn compare_books(server: &TestServer, client: &clickhouse::Client, sim: &SimHandle) {
    let gaps = gaps(client).await;
    let snapshots = snapshot_instants(client).await;
    assert!(!gaps.is_empty(), "the faults left recorded gaps");
    let mut rng = StdRng::seed_from_u64(7);
    let (mut with_truth, mut in_gaps, mut not_recorded, mut exact) = (0, 0, 0, 0);
    for market in sim.markets() {
        let spans: Vec<(i64, i64)> = gaps
            .iter()
            .filter(|g| g.market == market)
            .map(|g| (g.ts_start, g.ts_end.unwrap_or(i64::MAX)))
            .collect();
        let truth = sim.truth(&market);
        let (Some(first), Some(last)) = (truth.first(), truth.last()) else {
            continue;
        };
        let (first_ms, last_ms) = (first.0, last.0);
        let mut instants: BTreeSet<i64> = (0..40)
            .map(|_| end_of_ms(rng.random_range(first_ms..=last_ms) * 1000))
            .collect();
        instants.extend((0..10).map(|_| rng.random_range(first_ms * 1000..=last_ms * 1000 + 999)));
        for snapshot in snapshots.iter().filter(|s| s.market == market) {
            let t = snapshot.ts_us;
            instants.extend([t - 1, t, t + 1, end_of_ms(t), end_of_ms(t) - 1000]);
        }
        for &(start, end) in &spans {
            instants.extend([start - 1, start, start + 1, end_of_ms(start)]);
            if end != i64::MAX {
                instants.extend([(start + end) / 2, end - 1, end, end + 1, end_of_ms(end)]);
            }
        }
        for at in instants {
            let answer = orderbook(server, &market, at).await;
            let in_gap = spans.iter().any(|(s, e)| *s <= at && at < *e);
            // Exactly the book-at-T SQL, at any microsecond.
            let sql = book_at(client, &market, at).await.expect("book_at");
            assert_eq!(
                book_of(&answer),
                sql.as_ref().map(|b| b.book.clone()),
                "{market} at {at}: the API serves the book-at-T SQL"
            );
            assert_eq!(
                answer["seq"].as_u64(),
                sql.as_ref().map(|b| b.position.seq),
                "{market} at {at}"
            );
            assert_eq!(
                answer["lastUpdateAt"]
                    .as_str()
                    .map(|_| micros(&answer["lastUpdateAt"])),
                sql.as_ref().map(|b| b.position.ts_us)
            );
            assert_eq!(micros(&answer["at"]), at);
            exact += 1;
            let complete = answer["complete"].as_bool().expect("complete");
            if in_gap {
                assert!(!complete, "{market} at {at} lies in a gap: {answer}");
                in_gaps += 1;
                continue;
            }
            if sql.is_none() {
                assert_eq!(answer["status"], "NOT_RECORDED");
                assert!(!complete);
                assert!(answer["yes"].is_null());
                not_recorded += 1;
                continue;
            }
            assert!(complete, "{market} at {at} outside every gap: {answer}");
            assert_eq!(answer["status"], "COMPLETE");
            if at == end_of_ms(at) {
                assert_eq!(
                    book_of(&answer),
                    sim.book_at(&market, at.div_euclid(1000)),
                    "{market} at {at}: the exchange's book"
                );
                check_top_of_book(&answer);
                with_truth += 1;
            }
        }
    }
    eprintln!(
        "orderbook: {exact} instants equal to the SQL, {with_truth} equal to the exchange's truth, \
         {in_gaps} inside gaps (incomplete), {not_recorded} before recording"
    );
    assert!(
        with_truth > 250,
        "compared only {with_truth} instants with the truth"
    );
    assert!(in_gaps > 10, "checked only {in_gaps} instants inside gaps");
}

/// The derived top-of-book fields agree with the ladders.
fn check_top_of_book(answer: &Value) {
    let best = |key: &str| -> Option<u32> {
        answer[key][0]["price"]
            .as_str()
            .map(|p| p.parse::<kalshibook::market::Price>().unwrap().units())
    };
    let (yes, no) = (best("yes"), best("no"));
    assert_eq!(
        answer["bestYesBid"]
            .as_str()
            .map(|p| p.parse::<kalshibook::market::Price>().unwrap().units()),
        yes
    );
    if let Some(no) = no {
        assert_eq!(
            answer["yesAsk"]
                .as_str()
                .unwrap()
                .parse::<kalshibook::market::Price>()
                .unwrap()
                .units(),
            10_000 - no
        );
    }
    if let (Some(yes), Some(no)) = (yes, no) {
        let mid2 = i64::from(yes) + 10_000 - i64::from(no);
        let midpoint = answer["midpoint"].as_str().unwrap();
        assert_eq!(
            midpoint,
            format!("{}.{:05}", mid2 * 5 / 100_000, mid2 * 5 % 100_000),
            "{answer}"
        );
    } else {
        assert!(answer["midpoint"].is_null());
    }
}

const SNAPSHOTS: &str = "query($t: String!, $from: DateTime!, $to: DateTime!, $every: Interval!) {
  bookSnapshots(ticker: $t, from: $from, to: $to, interval: $every, depth: 1000) { BOOK }
}";

/// `bookSnapshots` (one query) equals `orderbook` called at each of its instants.
async fn compare_book_snapshots(server: &TestServer, sim: &SimHandle) {
    let query = SNAPSHOTS.replace("BOOK", BOOK_FIELDS);
    let mut compared = 0;
    for market in sim.markets().iter().take(4) {
        let truth = sim.truth(market);
        let (Some(first), Some(last)) = (truth.first(), truth.last()) else {
            continue;
        };
        // Offsets that are not whole seconds, so instants fall everywhere in a second; the
        // range starts before the first snapshot so that some books are not recorded.
        for offset_us in [0, 137_000, 511_111, 999_999] {
            let from = first.0 * 1000 - 2_000_000 + offset_us;
            let to = last.0 * 1000 + 2_000_000;
            let data = server
                .data(
                    &query,
                    json!({ "t": market, "from": rfc3339(from), "to": rfc3339(to), "every": 1 }),
                )
                .await;
            let books = data["bookSnapshots"].as_array().expect("books");
            assert_eq!(books.len() as i64, (to - from + 999_999) / 1_000_000);
            for (i, book) in books.iter().enumerate() {
                let at = from + i as i64 * 1_000_000;
                assert_eq!(micros(&book["at"]), at);
                assert_eq!(
                    book,
                    &orderbook(server, market, at).await,
                    "{market}: bookSnapshots[{i}] at {at}"
                );
                compared += 1;
            }
        }
    }
    eprintln!("bookSnapshots: {compared} books equal to orderbook(at:)");
    assert!(compared > 100, "compared only {compared} books");
}
