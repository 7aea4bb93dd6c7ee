//! The GraphQL API over HTTP against the real engines, on rows written straight into
//! ClickHouse so that every answer can be predicted: books and their analytics, deltas and
//! trades pages, markets, candles, gaps and coverage; every documented example runs; bad input
//! of every kind gets a structured error (never a panic, never a 500 without a code); and
//! ClickHouse going away is UNAVAILABLE while the server stays up.

mod api;
mod common;

use std::collections::BTreeMap;

use api::{BOOK_FIELDS, TestServer, book_of, codes, micros, rfc3339};
use common::TestEnv;
use kalshibook::clickhouse::rows::{
    DeltaRow, FeedGapRow, GapKind, MarketRow, SnapshotPlace, SnapshotRow, SnapshotSource,
    TopOfBookRow, TradeRow, side_code,
};
use kalshibook::graphql::analytics::{self, Action};
use kalshibook::graphql::llms::{EXAMPLE_TICKER, EXAMPLES};
use kalshibook::market::{Book, Price, Side, Size};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// 2026-03-01T14:00:00Z, Unix µs: the examples' hour starts here.
const T0: i64 = 1_772_373_600_000_000;
const SECOND: i64 = 1_000_000;
const MINUTE: i64 = 60 * SECOND;
/// The gap: [T0 + 40 min, T0 + 41 min).
const GAP: (i64, i64) = (T0 + 40 * MINUTE, T0 + 41 * MINUTE);
const OTHER: &str = "KXEXAMPLE-26MAR01-B60";
const NO_METADATA: &str = "KXNOMETA-26MAR01-X";

fn p(units: u32) -> Price {
    Price::from_units(units)
}
fn s(units: i64) -> Size {
    Size::from_units(units)
}

/// What was written, and the book after every event, to predict answers.
#[derive(Default)]
struct Seed {
    deltas: Vec<DeltaRow>,
    snapshots: Vec<SnapshotRow>,
    trades: Vec<TradeRow>,
    tops: Vec<TopOfBookRow>,
    /// (ts, book) after each event of EXAMPLE_TICKER.
    history: Vec<(i64, u64, Book)>,
}

impl Seed {
    fn book_at(&self, at: i64) -> Option<&(i64, u64, Book)> {
        self.history.iter().rev().find(|(ts, _, _)| *ts <= at)
    }

    fn snapshot(&mut self, market: &str, ts: i64, seq: u64, book: &Book, source: SnapshotSource) {
        let place = SnapshotPlace {
            market,
            ts,
            ts_received: ts + 500,
            conn: 1,
            sid: 1,
            seq,
            source,
        };
        self.snapshots.push(SnapshotRow::from_book(&place, book));
        if market == EXAMPLE_TICKER {
            self.history.push((ts, seq, book.clone()));
            self.top(ts, seq, book);
        }
    }

    fn top(&mut self, ts: i64, seq: u64, book: &Book) {
        let best = |side| book.best_bid(side).unwrap_or((p(0), s(0)));
        let (yes, yes_size) = best(Side::Yes);
        let (no, no_size) = best(Side::No);
        let row = TopOfBookRow {
            market: EXAMPLE_TICKER.to_owned(),
            ts,
            conn: 1,
            seq,
            best_yes_bid: yes.units(),
            yes_bid_size: yes_size.units(),
            best_no_bid: no.units(),
            no_bid_size: no_size.units(),
        };
        if self.tops.last().is_none_or(|last| {
            (last.best_yes_bid, last.best_no_bid) != (row.best_yes_bid, row.best_no_bid)
        }) {
            self.tops.push(row);
        }
    }
}

fn build_seed() -> Seed {
    let mut rng = StdRng::seed_from_u64(0x6b62_e9a1);
    let mut seed = Seed::default();
    let mut book = Book::from_levels([
        (Side::Yes, p(5000), s(10_000)),
        (Side::Yes, p(5200), s(20_000)),
        (Side::Yes, p(5500), s(30_000)),
        (Side::No, p(4000), s(15_000)),
        (Side::No, p(4200), s(25_000)),
        (Side::No, p(4400), s(5_000)),
    ]);
    let mut seq = 1;
    seed.snapshot(EXAMPLE_TICKER, T0, seq, &book, SnapshotSource::Exchange);
    let mut ts = T0;
    while ts < T0 + 60 * MINUTE {
        ts += 10 * SECOND;
        seq += 1;
        if (GAP.0..GAP.1).contains(&ts) {
            continue; // lost: the gap
        }
        if ts == GAP.1 {
            // The recovering snapshot: a different book.
            book = Book::from_levels([
                (Side::Yes, p(4800), s(7_000)),
                (Side::Yes, p(5100), s(1_250)),
                (Side::No, p(4500), s(9_900)),
            ]);
            seed.snapshot(EXAMPLE_TICKER, ts, seq, &book, SnapshotSource::Exchange);
            continue;
        }
        if ts == T0 + 30 * MINUTE {
            // A checkpoint at the position of the previous event.
            let last = seed.history.last().expect("events").clone();
            seed.snapshot(
                EXAMPLE_TICKER,
                last.0,
                last.1,
                &book,
                SnapshotSource::Checkpoint,
            );
        }
        let side = if rng.random_bool(0.5) {
            Side::Yes
        } else {
            Side::No
        };
        let resting: Vec<(Price, Size)> = book.ladder(side).iter().map(|(p, s)| (*p, *s)).collect();
        let (price, delta) = if !resting.is_empty() && rng.random_bool(0.4) {
            let (price, size) = resting[rng.random_range(0..resting.len())];
            (price, s(-rng.random_range(1..=size.units())))
        } else {
            let base = if side == Side::Yes { 4600 } else { 3800 };
            (
                p(base + 100 * rng.random_range(0..10)),
                s(rng.random_range(1..5_000)),
            )
        };
        book.apply_delta(side, price, delta).expect("valid delta");
        seed.deltas.push(DeltaRow {
            market: EXAMPLE_TICKER.to_owned(),
            ts,
            ts_received: ts + 700,
            conn: 1,
            sid: 1,
            seq,
            side: side_code(side),
            price: price.units(),
            delta: delta.units(),
        });
        seed.history.push((ts, seq, book.clone()));
        let snapshot = book.clone();
        seed.top(ts, seq, &snapshot);
    }
    for i in 0..120 {
        let ts = T0 + 15 * SECOND + i * 30 * SECOND;
        seed.trades.push(TradeRow {
            market: EXAMPLE_TICKER.to_owned(),
            ts,
            ts_received: ts + 900,
            trade_id: format!("trade-{:03}", (i * 37) % 120),
            yes_price: 4500 + 10 * rng.random_range(0..100),
            count: 100 * rng.random_range(1..50),
            taker_side: side_code(if i % 3 == 0 { Side::No } else { Side::Yes }),
            is_block: i == 7,
            conn: 1,
            sid: 2,
            seq: i as u64 + 1,
        });
    }
    // Another market of the same event, and one recorded without metadata.
    let other = Book::from_levels([(Side::Yes, p(3330), s(100))]);
    seed.snapshot(OTHER, T0, 1, &other, SnapshotSource::Exchange);
    seed.snapshot(NO_METADATA, T0, 1, &other, SnapshotSource::Exchange);
    seed
}

fn market_row(ticker: &str, status: &str, title: &str, updated_at: i64) -> MarketRow {
    let series = ticker.split('-').next().unwrap().to_owned();
    MarketRow {
        ticker: ticker.to_owned(),
        event_ticker: ticker.rsplit_once('-').unwrap().0.to_owned(),
        series_ticker: series,
        title: title.to_owned(),
        subtitle: "Above 50".to_owned(),
        status: status.to_owned(),
        open_time: Some(T0 - 86_400 * SECOND),
        close_time: Some(T0 + 86_400 * SECOND),
        price_level_structure: "linear_cent".to_owned(),
        price_ranges: r#"[{"end":"1.0000","start":"0.0000","step":"0.0100"}]"#.to_owned(),
        updated_at,
    }
}

async fn insert<T>(client: &clickhouse::Client, table: &str, rows: &[T])
where
    T: clickhouse::RowOwned + clickhouse::RowWrite,
{
    let mut insert = client.insert::<T>(table).await.expect("insert");
    for row in rows {
        insert.write(row).await.expect("write");
    }
    insert.end().await.expect("end insert");
}

async fn seed(env: &TestEnv) -> Seed {
    let seed = build_seed();
    let client = env.clickhouse();
    insert(&client, "deltas", &seed.deltas).await;
    insert(&client, "snapshots", &seed.snapshots).await;
    insert(&client, "trades", &seed.trades).await;
    // The same trade seen twice (e.g. across a reconnect) is one trade.
    insert(&client, "trades", &seed.trades[..1]).await;
    insert(&client, "top_of_book", &seed.tops).await;
    let markets = [
        market_row(
            EXAMPLE_TICKER,
            "initialized",
            "Old title",
            T0 - 2 * 86_400 * SECOND,
        ),
        market_row(OTHER, "closed", "Example market: above 60?", T0),
        market_row("KXOTHERS-26MAR01-A", "active", "Something else", T0),
    ];
    insert(&client, "markets", &markets).await;
    // A newer version of the example market: `markets FINAL` must show this one.
    let newest = [market_row(
        EXAMPLE_TICKER,
        "active",
        "Example market: above 50?",
        T0,
    )];
    insert(&client, "markets", &newest).await;
    let gap = FeedGapRow {
        market: EXAMPLE_TICKER.to_owned(),
        gap_id: 42,
        channel: "orderbook_delta".to_owned(),
        kind: GapKind::SequenceGap as i8,
        conn: 1,
        sid: 1,
        expected_seq: 241,
        received_seq: 247,
        ts_start: GAP.0,
        ts_end: None,
        detail: "expected seq 241, got 247".to_owned(),
        version: 1,
    };
    insert(&client, "feed_gaps", std::slice::from_ref(&gap)).await;
    let recovered = FeedGapRow {
        ts_end: Some(GAP.1),
        version: 2,
        ..gap
    };
    insert(&client, "feed_gaps", &[recovered]).await;
    seed
}

const ORDERBOOK: &str = "query($t: String!, $at: DateTime, $depth: Int) { orderbook(ticker: $t, at: $at, depth: $depth) { BOOK } }";

async fn orderbook(server: &TestServer, at: Option<i64>, depth: i32) -> Value {
    server
        .data(
            &ORDERBOOK.replace("BOOK", BOOK_FIELDS),
            json!({ "t": EXAMPLE_TICKER, "at": at.map(rfc3339), "depth": depth }),
        )
        .await["orderbook"]
        .clone()
}

fn micro_dollars(units: i128) -> String {
    kalshibook::graphql::scalars::DecimalScalar::new(units, 6).to_string()
}

#[tokio::test]
async fn the_api_answers_exactly_from_recorded_rows() {
    let env = TestEnv::migrated().await;
    let seed = seed(&env).await;
    let server = TestServer::start(&env.config).await;

    // orderbook: the replayed book at random instants, depth truncation, analytics.
    let mut rng = StdRng::seed_from_u64(3);
    for _ in 0..40 {
        let at = rng.random_range(T0..T0 + 61 * MINUTE);
        let answer = orderbook(&server, Some(at), 1000).await;
        let (ts, seq, truth) = seed.book_at(at).expect("after the first snapshot").clone();
        assert_eq!(book_of(&answer).as_ref(), Some(&truth), "at {at}");
        assert_eq!(answer["seq"].as_u64(), Some(seq));
        assert_eq!(micros(&answer["lastUpdateAt"]), ts);
        let in_gap = (GAP.0..GAP.1).contains(&at);
        assert_eq!(answer["complete"], !in_gap, "at {at}");
        assert_eq!(answer["status"], if in_gap { "IN_GAP" } else { "COMPLETE" });
        let buy = analytics::fill(&truth, Side::Yes, Action::Buy, s(2_500));
        assert_eq!(answer["costToBuy"]["filled"], buy.filled.to_string());
        assert_eq!(
            answer["costToBuy"]["amount"],
            micro_dollars(buy.amount_micro)
        );
        assert_eq!(
            answer["costToBuy"]["averagePrice"]
                .as_str()
                .map(str::to_owned),
            buy.average_micro().map(micro_dollars)
        );
        let sell = analytics::fill(&truth, Side::No, Action::Sell, s(750));
        assert_eq!(
            answer["proceedsToSell"]["amount"],
            micro_dollars(sell.amount_micro)
        );
        let depth = analytics::depth_within(&truth, p(300));
        assert_eq!(answer["depthNearTop"]["yesBidSize"], depth.yes.to_string());
        assert_eq!(answer["depthNearTop"]["noLevels"], depth.no_levels);
    }
    // Just before and at the gap's end, the snapshot that recovers it, and the checkpoint.
    for (at, status) in [
        (GAP.0 - 1, "COMPLETE"),
        (GAP.0, "IN_GAP"),
        (GAP.1 - 1, "IN_GAP"),
        (GAP.1, "COMPLETE"),
        (T0 + 30 * MINUTE, "COMPLETE"),
        (T0, "COMPLETE"),
    ] {
        let answer = orderbook(&server, Some(at), 1000).await;
        assert_eq!(answer["status"], status, "at {at}");
        assert_eq!(
            book_of(&answer).as_ref(),
            seed.book_at(at).map(|b| &b.2),
            "at {at}"
        );
    }
    // Depth truncation keeps the best levels, best first; the counts tell the full size.
    let answer = orderbook(&server, Some(T0), 2).await;
    assert_eq!(
        answer["yes"],
        json!([{"price": "0.5500", "size": "300.00"}, {"price": "0.5200", "size": "200.00"}])
    );
    // The older names answer the same.
    let both = server
        .data(
            "query($t: String!, $at: DateTime) { orderbook(ticker: $t, at: $at, depth: 2) { \
             yes { price size } no { price size } yesBids { price size } noBids { price size } } }",
            json!({ "t": EXAMPLE_TICKER, "at": rfc3339(T0) }),
        )
        .await["orderbook"]
        .clone();
    assert_eq!(both["yes"], answer["yes"]);
    assert_eq!(both["yesBids"], both["yes"]);
    assert_eq!(both["noBids"], both["no"]);
    assert_eq!(answer["yesLevelCount"], 3);
    assert_eq!(answer["bestNoBid"], "0.4400");
    assert_eq!(answer["yesAsk"], "0.5600");
    assert_eq!(answer["noAsk"], "0.4500");
    assert_eq!(answer["spread"], "0.0100");
    assert_eq!(answer["midpoint"], "0.55500");
    assert_eq!(answer["costToBuy"]["bestPrice"], "0.5600");
    // Before recording began, and `at` omitted (now: months after the last snapshot).
    for at in [Some(T0 - 1), None] {
        let answer = orderbook(&server, at, 10).await;
        assert_eq!(answer["status"], "NOT_RECORDED");
        assert_eq!(answer["complete"], false);
        assert!(answer["yes"].is_null() && answer["costToBuy"].is_null());
    }
    // An unknown ticker is NOT_FOUND; one with data but no metadata is known.
    let (_, body) = server
        .post(
            "{ orderbook(ticker: \"KXNOPE-1\") { complete } }",
            json!({}),
        )
        .await;
    assert_eq!(codes(&body), ["NOT_FOUND"], "{body}");
    let data = server
        .data(
            &format!("{{ orderbook(ticker: \"{NO_METADATA}\", at: \"{}\") {{ status bestYesBid }} market(ticker: \"{NO_METADATA}\") {{ status coverage {{ snapshotCount }} }} }}", rfc3339(T0 + SECOND)),
            json!({}),
        )
        .await;
    assert_eq!(data["orderbook"]["bestYesBid"], "0.3330");
    assert_eq!(data["market"]["status"], "unknown");
    assert_eq!(data["market"]["coverage"]["snapshotCount"], 1);

    check_deltas(&server, &seed).await;
    check_trades(&server, &seed).await;
    check_markets(&server, &seed).await;
    check_candles(&server, &seed).await;
    check_gaps_and_coverage(&server, &seed).await;
    check_examples_and_docs(&server).await;

    server.stop().await;
    env.cleanup().await;
}

async fn check_deltas(server: &TestServer, seed: &Seed) {
    let query = "query($t: String!, $from: DateTime!, $to: DateTime!, $after: String) {
      deltas(ticker: $t, from: $from, to: $to, first: 7, after: $after) {
        edges { cursor node { ts receivedAt side price delta seq } }
        nodes { seq }
        pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
      }
    }";
    let (from, to) = (T0 + 5 * MINUTE, T0 + 50 * MINUTE);
    let mut after: Option<String> = None;
    let mut got = Vec::new();
    loop {
        let data = server
            .data(
                query,
                json!({ "t": EXAMPLE_TICKER, "from": rfc3339(from), "to": rfc3339(to), "after": after }),
            )
            .await;
        let page = &data["deltas"];
        let edges = page["edges"].as_array().unwrap();
        assert!(edges.len() <= 7);
        assert_eq!(page["pageInfo"]["hasPreviousPage"], false);
        assert_eq!(page["nodes"].as_array().unwrap().len(), edges.len());
        for edge in edges {
            got.push(edge["node"].clone());
        }
        after = page["pageInfo"]["endCursor"].as_str().map(str::to_owned);
        if page["pageInfo"]["hasNextPage"] != true {
            break;
        }
    }
    let expected: Vec<Value> = seed
        .deltas
        .iter()
        .filter(|d| (from..to).contains(&d.ts))
        .map(|d| {
            json!({
                "ts": rfc3339(d.ts),
                "receivedAt": rfc3339(d.ts_received),
                "side": if d.side == 1 { "YES" } else { "NO" },
                "price": Price::from_units(d.price).to_string(),
                "delta": Size::from_units(d.delta).to_string(),
                "seq": d.seq,
            })
        })
        .collect();
    assert!(expected.len() > 100);
    assert_eq!(got, expected);
}

async fn check_trades(server: &TestServer, seed: &Seed) {
    let query = "query($after: String) {
      trades(ticker: \"KXEXAMPLE-26MAR01-B50\", from: \"2026-03-01T14:00:00Z\", to: \"2026-03-01T15:00:00Z\", first: 50, after: $after) {
        edges { cursor node { ts tradeId yesPrice noPrice count takerSide isBlock } }
        pageInfo { hasNextPage endCursor }
      }
    }";
    let mut after: Option<String> = None;
    let mut got = Vec::new();
    loop {
        let data = server.data(query, json!({ "after": after })).await;
        for edge in data["trades"]["edges"].as_array().unwrap() {
            got.push(edge["node"].clone());
        }
        after = data["trades"]["pageInfo"]["endCursor"]
            .as_str()
            .map(str::to_owned);
        if data["trades"]["pageInfo"]["hasNextPage"] != true {
            break;
        }
    }
    let mut expected: Vec<&TradeRow> = seed.trades.iter().collect();
    expected.sort_by(|a, b| (a.ts, &a.trade_id).cmp(&(b.ts, &b.trade_id)));
    let expected: Vec<Value> = expected
        .iter()
        .map(|t| {
            let yes = Price::from_units(t.yes_price);
            json!({
                "ts": rfc3339(t.ts),
                "tradeId": t.trade_id,
                "yesPrice": yes.to_string(),
                "noPrice": yes.complement().to_string(),
                "count": Size::from_units(t.count).to_string(),
                "takerSide": if t.taker_side == 1 { "YES" } else { "NO" },
                "isBlock": t.is_block,
            })
        })
        .collect();
    assert_eq!(got.len(), 120, "the trade stored twice is one trade");
    assert_eq!(got, expected);
}

async fn check_markets(server: &TestServer, seed: &Seed) {
    let query = "query($status: String, $series: String, $event: String, $search: String, $first: Int, $after: String) {
      markets(status: $status, seriesTicker: $series, eventTicker: $event, search: $search, first: $first, after: $after) {
        nodes { ticker title status coverage { deltaCount snapshotCount tradeCount gapCount openGapCount firstRecordedAt } }
        pageInfo { hasNextPage endCursor }
      }
    }";
    let tickers = |data: &Value| -> Vec<String> {
        data["markets"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["ticker"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = server.data(query, json!({})).await;
    assert_eq!(
        tickers(&all),
        [EXAMPLE_TICKER, OTHER, "KXOTHERS-26MAR01-A"]
            .iter()
            .copied()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    );
    let example = &all["markets"]["nodes"][0];
    assert_eq!(example["status"], "active", "the newest version wins");
    assert_eq!(example["title"], "Example market: above 50?");
    assert_eq!(example["coverage"]["deltaCount"], seed.deltas.len());
    assert_eq!(example["coverage"]["tradeCount"], 120);
    assert_eq!(example["coverage"]["gapCount"], 1);
    assert_eq!(example["coverage"]["openGapCount"], 0);
    assert_eq!(example["coverage"]["firstRecordedAt"], rfc3339(T0));
    for (filters, expected) in [
        (
            json!({ "status": "active" }),
            vec![EXAMPLE_TICKER, "KXOTHERS-26MAR01-A"],
        ),
        // Kalshi's list-filter word for the same markets, in any case.
        (
            json!({ "status": "Open" }),
            vec![EXAMPLE_TICKER, "KXOTHERS-26MAR01-A"],
        ),
        (json!({ "status": "closed" }), vec![OTHER]),
        (json!({ "status": "settled" }), vec![]),
        (
            json!({ "series": "KXEXAMPLE" }),
            vec![EXAMPLE_TICKER, OTHER],
        ),
        (
            json!({ "event": "KXEXAMPLE-26MAR01" }),
            vec![EXAMPLE_TICKER, OTHER],
        ),
        (json!({ "search": "ABOVE 60" }), vec![OTHER]),
        (json!({ "search": "kxothers" }), vec!["KXOTHERS-26MAR01-A"]),
        (json!({ "search": "nothing like this" }), vec![]),
    ] {
        let data = server.data(query, filters.clone()).await;
        assert_eq!(tickers(&data), expected, "{filters}");
    }
    // One at a time through the cursors.
    let mut after: Option<String> = None;
    let mut paged = Vec::new();
    loop {
        let data = server
            .data(query, json!({ "first": 1, "after": after }))
            .await;
        paged.extend(tickers(&data));
        after = data["markets"]["pageInfo"]["endCursor"]
            .as_str()
            .map(str::to_owned);
        if data["markets"]["pageInfo"]["hasNextPage"] != true {
            break;
        }
    }
    assert_eq!(paged, tickers(&all));
    let data = server
        .data(
            &format!("{{ market(ticker: \"{EXAMPLE_TICKER}\") {{ ticker eventTicker seriesTicker status openTime priceLevelStructure priceRanges {{ start end step }} updatedAt }} }}"),
            json!({}),
        )
        .await;
    assert_eq!(
        data["market"],
        json!({
            "ticker": EXAMPLE_TICKER,
            "eventTicker": "KXEXAMPLE-26MAR01",
            "seriesTicker": "KXEXAMPLE",
            "status": "active",
            "openTime": rfc3339(T0 - 86_400 * SECOND),
            "priceLevelStructure": "linear_cent",
            "priceRanges": [{ "start": "0.0000", "end": "1.0000", "step": "0.0100" }],
            "updatedAt": rfc3339(T0),
        })
    );
    let (_, body) = server
        .post("{ market(ticker: \"KXNOPE-2\") { ticker } }", json!({}))
        .await;
    assert_eq!(codes(&body), ["NOT_FOUND"]);
}

fn price_decimal(units: u32) -> String {
    Price::from_units(units).to_string()
}

async fn check_candles(server: &TestServer, seed: &Seed) {
    let query = "query($source: CandleSource!, $interval: Interval!) {
      candles(ticker: \"KXEXAMPLE-26MAR01-B50\", from: \"2026-03-01T14:07:00Z\", to: \"2026-03-01T15:00:00Z\", interval: $interval, source: $source) {
        start end open high low close volume count spreadLow spreadHigh spreadAverage
      }
    }";
    let minutes = 15;
    let bucket = |ts: i64| ts - ts.rem_euclid(minutes * MINUTE);
    // Trades: `from` is rounded down to 14:00, so four candles.
    let mut expected: BTreeMap<i64, Vec<&TradeRow>> = BTreeMap::new();
    // Known limitation: the candles' materialized view sees every insert, so the trade that
    // was stored twice counts twice in its candle (`trades` itself, read FINAL, has it once).
    // The collector never inserts a trade twice: retried batches are deduplicated by token
    // before any view runs.
    for trade in seed.trades.iter().chain(&seed.trades[..1]) {
        expected.entry(bucket(trade.ts)).or_default().push(trade);
    }
    let data = server
        .data(query, json!({ "source": "TRADES", "interval": "15m" }))
        .await;
    // The deprecated form of the interval answers the same.
    let legacy = server
        .data(
            "query($m: Int!) { candles(ticker: \"KXEXAMPLE-26MAR01-B50\", from: \"2026-03-01T14:07:00Z\", \
             to: \"2026-03-01T15:00:00Z\", intervalMinutes: $m, source: TRADES) { \
             start end open high low close volume count spreadLow spreadHigh spreadAverage } }",
            json!({ "m": minutes }),
        )
        .await;
    assert_eq!(legacy, data);
    let candles = data["candles"].as_array().unwrap();
    assert_eq!(candles.len(), expected.len());
    for (candle, (start, trades)) in candles.iter().zip(&expected) {
        let first = trades.iter().min_by_key(|t| t.ts).unwrap();
        let last = trades.iter().max_by_key(|t| t.ts).unwrap();
        assert_eq!(micros(&candle["start"]), *start);
        assert_eq!(micros(&candle["end"]), start + minutes * MINUTE);
        assert_eq!(candle["open"], price_decimal(first.yes_price));
        assert_eq!(candle["close"], price_decimal(last.yes_price));
        assert_eq!(
            candle["high"],
            price_decimal(trades.iter().map(|t| t.yes_price).max().unwrap())
        );
        assert_eq!(
            candle["low"],
            price_decimal(trades.iter().map(|t| t.yes_price).min().unwrap())
        );
        assert_eq!(
            candle["volume"],
            Size::from_units(trades.iter().map(|t| t.count).sum()).to_string()
        );
        assert_eq!(candle["count"], trades.len());
        assert!(candle["spreadLow"].is_null());
    }
    // Midpoints from the top of book, over two-sided books.
    let mut expected: BTreeMap<i64, Vec<&TopOfBookRow>> = BTreeMap::new();
    for top in seed
        .tops
        .iter()
        .filter(|t| t.best_yes_bid > 0 && t.best_no_bid > 0)
    {
        expected.entry(bucket(top.ts)).or_default().push(top);
    }
    let data = server
        .data(
            query,
            json!({ "source": "MIDPOINT", "interval": minutes * 60 }),
        )
        .await;
    let candles = data["candles"].as_array().unwrap();
    assert_eq!(candles.len(), expected.len());
    let mid = |t: &TopOfBookRow| {
        let mid2 = i128::from(t.best_yes_bid) + 10_000 - i128::from(t.best_no_bid);
        kalshibook::graphql::scalars::DecimalScalar::new(mid2 * 5, 5).to_string()
    };
    for (candle, (_, tops)) in candles.iter().zip(&expected) {
        assert_eq!(candle["open"], mid(tops.first().unwrap()));
        assert_eq!(candle["close"], mid(tops.last().unwrap()));
        assert_eq!(candle["count"], tops.len());
        let spreads: Vec<i64> = tops
            .iter()
            .map(|t| 10_000 - i64::from(t.best_no_bid) - i64::from(t.best_yes_bid))
            .collect();
        let spread = |units: i64| {
            kalshibook::graphql::scalars::DecimalScalar::new(i128::from(units), 4).to_string()
        };
        assert_eq!(candle["spreadLow"], spread(*spreads.iter().min().unwrap()));
        assert_eq!(candle["spreadHigh"], spread(*spreads.iter().max().unwrap()));
        let average = analytics::div_round(
            i128::from(spreads.iter().sum::<i64>()) * 100,
            spreads.len() as i128,
        );
        assert_eq!(candle["spreadAverage"], micro_dollars(average));
        assert!(candle["volume"].is_null());
    }
}

async fn check_gaps_and_coverage(server: &TestServer, seed: &Seed) {
    let data = server
        .data(
            "{ inside: feedGaps(ticker: \"KXEXAMPLE-26MAR01-B50\", from: \"2026-03-01T14:40:30Z\", to: \"2026-03-01T14:40:31Z\") { kind channel start end recovered expectedSeq receivedSeq detail }
               after: feedGaps(ticker: \"KXEXAMPLE-26MAR01-B50\", from: \"2026-03-01T14:41:00Z\", to: \"2026-03-01T15:00:00Z\") { kind }
               coverage(ticker: \"KXEXAMPLE-26MAR01-B50\", from: \"2026-03-01T14:30:00Z\", to: \"2026-03-01T15:30:00Z\") { from to firstRecordedAt lastRecordedAt deltaCount snapshotCount tradeCount gapCount openGapCount incompleteSeconds } }",
            json!({}),
        )
        .await;
    assert_eq!(
        data["inside"],
        json!([{
            "kind": "SEQUENCE_GAP",
            "channel": "orderbook_delta",
            "start": rfc3339(GAP.0),
            "end": rfc3339(GAP.1),
            "recovered": true,
            "expectedSeq": 241,
            "receivedSeq": 247,
            "detail": "expected seq 241, got 247",
        }])
    );
    assert_eq!(
        data["after"],
        json!([]),
        "the range [from, to) starts at the gap's end"
    );
    let (from, to) = (T0 + 30 * MINUTE, T0 + 90 * MINUTE);
    let coverage = &data["coverage"];
    assert_eq!(
        coverage["deltaCount"],
        seed.deltas
            .iter()
            .filter(|d| (from..to).contains(&d.ts))
            .count()
    );
    assert_eq!(
        coverage["snapshotCount"],
        seed.snapshots
            .iter()
            .filter(|s| s.market == EXAMPLE_TICKER && (from..to).contains(&s.ts))
            .count()
    );
    assert_eq!(coverage["tradeCount"], 60);
    assert_eq!(coverage["gapCount"], 1);
    assert_eq!(coverage["incompleteSeconds"], "60.000000");
    assert_eq!(coverage["firstRecordedAt"], rfc3339(T0 + 30 * MINUTE));
    assert_eq!(coverage["from"], rfc3339(from));
}

async fn check_examples_and_docs(server: &TestServer) {
    for example in EXAMPLES {
        let data = server.data(example.query, json!({})).await;
        let answer = data.as_object().unwrap();
        assert!(
            answer.values().all(|v| !v.is_null()),
            "{}: {data}",
            example.field
        );
    }
    let llms = server
        .client
        .get(server.url("/llms.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(llms.status(), 200);
    let llms = llms.text().await.unwrap();
    let full = server
        .client
        .get(server.url("/llms-full.txt"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in kalshibook::graphql::llms::query_field_names() {
        assert!(llms.contains(&format!("`{name}`")), "{name} in llms.txt");
        assert!(
            full.contains(&format!("### {name}")),
            "{name} in llms-full.txt"
        );
    }
    assert!(full.contains(&kalshibook::graphql::sdl()));
    let page = server
        .client
        .get(server.url("/graphql"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("graphiql"));
    let get = server
        .client
        .get(server.url("/graphql"))
        .query(&[
            (
                "query",
                "query($t: String!) { market(ticker: $t) { ticker } }",
            ),
            ("variables", &format!("{{\"t\": \"{EXAMPLE_TICKER}\"}}")),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200);
    let body: Value = get.json().await.unwrap();
    assert_eq!(body["data"]["market"]["ticker"], EXAMPLE_TICKER);
}

/// Every element of the schema has a description an agent can act on.
#[test]
fn every_type_field_and_argument_is_described() {
    use async_graphql::parser::types::{TypeKind, TypeSystemDefinition};
    let document = async_graphql::parser::parse_schema(kalshibook::graphql::sdl()).unwrap();
    let mut missing = Vec::new();
    let described = |d: &Option<async_graphql::Positioned<String>>| {
        d.as_ref().is_some_and(|d| d.node.trim().len() > 10)
    };
    for definition in document.definitions {
        let TypeSystemDefinition::Type(ty) = definition else {
            continue;
        };
        let ty = ty.node;
        let name = ty.name.node.to_string();
        if name != "Query" && !described(&ty.description) {
            missing.push(name.clone());
        }
        match ty.kind {
            TypeKind::Object(object) => {
                for field in object.fields {
                    let field = field.node;
                    if !described(&field.description) {
                        missing.push(format!("{name}.{}", field.name.node));
                    }
                    for arg in field.arguments {
                        if !described(&arg.node.description) {
                            missing.push(format!(
                                "{name}.{}({})",
                                field.name.node, arg.node.name.node
                            ));
                        }
                    }
                }
            }
            TypeKind::Enum(values) => {
                for value in values.values {
                    if !described(&value.node.description) {
                        missing.push(format!("{name}.{}", value.node.value.node));
                    }
                }
            }
            _ => {}
        }
    }
    assert!(missing.is_empty(), "undescribed: {missing:?}");
}

/// One request of the bad-input suite: what is sent, and the status it must get.
enum Bad {
    /// A raw POST body.
    Body(&'static str, Vec<u8>),
    /// A GraphQL query (as JSON) with variables.
    Query(&'static str, String, Value),
    /// A GET with these URL parameters and Accept header.
    Get(&'static str, Vec<(&'static str, String)>, &'static str),
}

#[tokio::test]
async fn bad_input_gets_structured_errors_never_a_panic() {
    let env = TestEnv::migrated().await;
    seed(&env).await;
    let server = TestServer::start(&env.config).await;
    let t = EXAMPLE_TICKER;
    let book = |args: &str| format!("{{ orderbook({args}) {{ complete yesBids {{ price }} }} }}");
    let nested_types = "{ __schema { types { fields { type { ofType { ofType { ofType { ofType { ofType { ofType { name } } } } } } } } } }".to_owned();
    let ten_mb = format!(
        "{{\"query\": \"{{ apiVersion }}\", \"pad\": \"{}\"}}",
        "x".repeat(10 << 20)
    );
    let big_query = format!("{{ apiVersion {} }}", "apiVersion ".repeat(4_000));
    let deep_variables = format!(
        "{{\"query\": \"{{ apiVersion }}\", \"variables\": {{\"v\": {}{}}}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let many_books = format!(
        "{{ {} }}",
        (0..25)
            .map(|i| format!("b{i}: orderbook(ticker: \"{t}\") {{ complete }}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let cases: Vec<Bad> = vec![
        Bad::Body("malformed JSON", b"{\"query\": \"{ apiVersion }\"".to_vec()),
        Bad::Body("not JSON at all", b"query { apiVersion }".to_vec()),
        Bad::Body("empty body", Vec::new()),
        Bad::Body("a JSON string", b"\"{ apiVersion }\"".to_vec()),
        Bad::Body("a batch", b"[{\"query\": \"{ apiVersion }\"}]".to_vec()),
        Bad::Body("query is a number", b"{\"query\": 5}".to_vec()),
        Bad::Body("no query", b"{\"variables\": {}}".to_vec()),
        Bad::Body(
            "variables is a list",
            b"{\"query\": \"{ apiVersion }\", \"variables\": [1]}".to_vec(),
        ),
        Bad::Body(
            "operationName is an object",
            b"{\"query\": \"{ apiVersion }\", \"operationName\": {}}".to_vec(),
        ),
        Bad::Body(
            "lone surrogate",
            b"{\"query\": \"{ apiVersion } \\ud800\"}".to_vec(),
        ),
        Bad::Body("invalid UTF-8", b"{\"query\": \"\xff\xfe\"}".to_vec()),
        Bad::Body("10 MB body", ten_mb.into_bytes()),
        Bad::Body("JSON nested 10000 deep", deep_variables.into_bytes()),
        Bad::Body(
            "braces nested 100000 deep",
            format!("{{\"query\": \"{}\"}}", "{".repeat(100_000)).into_bytes(),
        ),
        Bad::Query("query over 32 KiB", big_query.clone(), json!({})),
        Bad::Query("syntax error", "{ orderbook(ticker: ) }".into(), json!({})),
        Bad::Query("unknown field", "{ nope }".into(), json!({})),
        Bad::Body(
            "unknown operation name",
            b"{\"query\": \"query A { apiVersion }\", \"operationName\": \"B\"}".to_vec(),
        ),
        Bad::Body(
            "braces nested 1000 deep",
            format!("{{\"query\": \"{}\"}}", "{".repeat(1_000)).into_bytes(),
        ),
        Bad::Query("a mutation", "mutation { apiVersion }".into(), json!({})),
        Bad::Query(
            "a subscription",
            "subscription { apiVersion }".into(),
            json!({}),
        ),
        Bad::Query("selection sets nested too deep", nested_types, json!({})),
        Bad::Query("too complex: 25 books", many_books, json!({})),
        Bad::Query("ticker is a number", book("ticker: 5"), json!({})),
        Bad::Query(
            "depth is a string",
            book(&format!("ticker: \"{t}\", depth: \"ten\"")),
            json!({}),
        ),
        Bad::Query(
            "huge depth",
            book(&format!("ticker: \"{t}\", depth: 100000")),
            json!({}),
        ),
        Bad::Query(
            "depth overflows Int",
            book(&format!("ticker: \"{t}\", depth: 99999999999999")),
            json!({}),
        ),
        Bad::Query(
            "negative depth",
            book(&format!("ticker: \"{t}\", depth: -1")),
            json!({}),
        ),
        Bad::Query(
            "at is a number",
            book(&format!("ticker: \"{t}\", at: 1772373600")),
            json!({}),
        ),
        Bad::Query(
            "at has no offset",
            book(&format!("ticker: \"{t}\", at: \"2026-03-01T14:00:00\"")),
            json!({}),
        ),
        Bad::Query(
            "at on Feb 30",
            book(&format!("ticker: \"{t}\", at: \"2026-02-30T14:00:00Z\"")),
            json!({}),
        ),
        Bad::Query(
            "at in words",
            book(&format!("ticker: \"{t}\", at: \"yesterday\"")),
            json!({}),
        ),
        Bad::Query(
            "at before 1970",
            book(&format!("ticker: \"{t}\", at: \"1900-01-01T00:00:00Z\"")),
            json!({}),
        ),
        Bad::Query(
            "at in year 9999",
            book(&format!("ticker: \"{t}\", at: \"9999-12-31T23:59:59Z\"")),
            json!({}),
        ),
        Bad::Query(
            "at in a variable, wrong type",
            "query($at: DateTime) { orderbook(ticker: \"X\", at: $at) { complete } }".into(),
            json!({"at": [1, 2]}),
        ),
        Bad::Query("unicode ticker", book("ticker: \"КАЛШИ-ТИКЕР\""), json!({})),
        Bad::Query("emoji ticker", book("ticker: \"KX😀\""), json!({})),
        Bad::Query(
            "ticker with NUL",
            "query($t: String!) { orderbook(ticker: $t) { complete } }".into(),
            json!({"t": "KX\u{0}A"}),
        ),
        Bad::Query(
            "SQL in the ticker",
            book("ticker: \"KX'; DROP TABLE deltas; --\""),
            json!({}),
        ),
        Bad::Query("empty ticker", book("ticker: \"\""), json!({})),
        Bad::Query(
            "very long ticker",
            book(&format!("ticker: \"{}\"", "A".repeat(10_000))),
            json!({}),
        ),
        Bad::Query("unknown ticker", book("ticker: \"KXUNKNOWN-1\""), json!({})),
        Bad::Query(
            "price as a number",
            format!(
                "{{ orderbook(ticker: \"{t}\") {{ depthNearTop(within: 0.05) {{ yesBidSize }} }} }}"
            ),
            json!({}),
        ),
        Bad::Query(
            "price above $1",
            format!(
                "{{ orderbook(ticker: \"{t}\") {{ depthNearTop(within: \"1.5\") {{ yesBidSize }} }} }}"
            ),
            json!({}),
        ),
        Bad::Query(
            "price with 5 decimals",
            format!(
                "{{ orderbook(ticker: \"{t}\") {{ depthNearTop(within: \"0.00001\") {{ yesBidSize }} }} }}"
            ),
            json!({}),
        ),
        Bad::Query(
            "size zero",
            format!(
                "{{ orderbook(ticker: \"{t}\", at: \"2026-03-01T14:30:00Z\") {{ costToBuy(side: YES, size: \"0\") {{ filled }} }} }}"
            ),
            json!({}),
        ),
        Bad::Query(
            "size not a number",
            format!(
                "{{ orderbook(ticker: \"{t}\") {{ costToBuy(side: YES, size: \"lots\") {{ filled }} }} }}"
            ),
            json!({}),
        ),
        Bad::Query(
            "side unknown",
            format!(
                "{{ orderbook(ticker: \"{t}\") {{ costToBuy(side: MAYBE, size: \"1\") {{ filled }} }} }}"
            ),
            json!({}),
        ),
        Bad::Query(
            "from after to",
            format!(
                "{{ deltas(ticker: \"{t}\", from: \"2026-03-02T00:00:00Z\", to: \"2026-03-01T00:00:00Z\") {{ nodes {{ seq }} }} }}"
            ),
            json!({}),
        ),
        Bad::Query(
            "range of a year",
            format!(
                "{{ deltas(ticker: \"{t}\", from: \"2025-03-01T00:00:00Z\", to: \"2026-03-01T00:00:00Z\") {{ nodes {{ seq }} }} }}"
            ),
            json!({}),
        ),
        Bad::Query(
            "first zero",
            format!(
                "{{ trades(ticker: \"{t}\", from: \"2026-03-01T00:00:00Z\", to: \"2026-03-02T00:00:00Z\", first: 0) {{ nodes {{ tradeId }} }} }}"
            ),
            json!({}),
        ),
        Bad::Query(
            "first huge",
            "{ markets(first: 1000000) { nodes { ticker } } }".to_owned(),
            json!({}),
        ),
        Bad::Query(
            "garbage cursor",
            format!(
                "{{ deltas(ticker: \"{t}\", from: \"2026-03-01T00:00:00Z\", to: \"2026-03-02T00:00:00Z\", after: \"not-a-cursor\") {{ nodes {{ seq }} }} }}"
            ),
            json!({}),
        ),
        Bad::Query(
            "a market cursor for deltas",
            format!(
                "{{ deltas(ticker: \"{t}\", from: \"2026-03-01T00:00:00Z\", to: \"2026-03-02T00:00:00Z\", after: \"bTE6S1g\") {{ nodes {{ seq }} }} }}"
            ),
            json!({}),
        ),
        Bad::Query(
            "interval zero",
            format!(
                "{{ bookSnapshots(ticker: \"{t}\", from: \"2026-03-01T14:00:00Z\", to: \"2026-03-01T15:00:00Z\", interval: 0) {{ complete }} }}"
            ),
            json!({}),
        ),
        Bad::Query(
            "too many instants",
            format!(
                "{{ bookSnapshots(ticker: \"{t}\", from: \"2026-03-01T14:00:00Z\", to: \"2026-03-01T15:00:00Z\", interval: \"1s\") {{ complete }} }}"
            ),
            json!({}),
        ),
        Bad::Query(
            "candle interval of a year",
            format!(
                "{{ candles(ticker: \"{t}\", from: \"2026-03-01T14:00:00Z\", to: \"2026-03-01T15:00:00Z\", interval: \"365d\") {{ open }} }}"
            ),
            json!({}),
        ),
        Bad::Query(
            "too many candles",
            format!(
                "{{ candles(ticker: \"{t}\", from: \"2026-01-01T00:00:00Z\", to: \"2026-03-01T00:00:00Z\", interval: \"1m\") {{ open }} }}"
            ),
            json!({}),
        ),
        Bad::Query(
            "search too long",
            format!(
                "{{ markets(search: \"{}\") {{ nodes {{ ticker }} }} }}",
                "é".repeat(101)
            ),
            json!({}),
        ),
        Bad::Query(
            "interval and its deprecated form together",
            format!(
                "{{ bookSnapshots(ticker: \"{t}\", from: \"2026-03-01T14:00:00Z\", to: \"2026-03-01T15:00:00Z\", interval: 60, intervalSeconds: 60) {{ complete }} }}"
            ),
            json!({}),
        ),
        Bad::Query(
            "no interval at all",
            format!(
                "{{ candles(ticker: \"{t}\", from: \"2026-03-01T14:00:00Z\", to: \"2026-03-01T15:00:00Z\") {{ open }} }}"
            ),
            json!({}),
        ),
        Bad::Query(
            "candle interval not in whole minutes",
            format!(
                "{{ candles(ticker: \"{t}\", from: \"2026-03-01T14:00:00Z\", to: \"2026-03-01T15:00:00Z\", interval: 90) {{ open }} }}"
            ),
            json!({}),
        ),
        Bad::Query(
            "interval in months",
            format!(
                "{{ candles(ticker: \"{t}\", from: \"2026-03-01T14:00:00Z\", to: \"2026-03-01T15:00:00Z\", interval: \"P1M\") {{ open }} }}"
            ),
            json!({}),
        ),
        Bad::Query(
            "feedGaps first over the limit",
            format!(
                "{{ feedGaps(ticker: \"{t}\", from: \"2026-03-01T00:00:00Z\", to: \"2026-03-02T00:00:00Z\", first: 5000) {{ kind }} }}"
            ),
            json!({}),
        ),
        Bad::Get(
            "GET without a query (API client)",
            vec![],
            "application/json",
        ),
        Bad::Get(
            "GET with malformed variables",
            vec![
                ("query", "{ apiVersion }".into()),
                ("variables", "{nope".into()),
            ],
            "application/json",
        ),
        Bad::Get(
            "GET with a 44 KB query",
            vec![("query", big_query.clone())],
            "application/json",
        ),
        Bad::Get(
            "GET with a syntax error",
            vec![("query", "{ apiVersion".into())],
            "application/json",
        ),
    ];
    let mut seen = 0;
    for case in cases {
        let (name, response) = match case {
            Bad::Body(name, body) => (
                name,
                server
                    .client
                    .post(server.url("/graphql"))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await,
            ),
            Bad::Query(name, query, variables) => (
                name,
                server
                    .client
                    .post(server.url("/graphql"))
                    .json(&json!({ "query": query, "variables": variables }))
                    .send()
                    .await,
            ),
            Bad::Get(name, params, accept) => (
                name,
                server
                    .client
                    .get(server.url("/graphql"))
                    .header("accept", accept)
                    .query(&params)
                    .send()
                    .await,
            ),
        };
        let response = response.unwrap_or_else(|e| panic!("{name}: no answer: {e}"));
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("{name}: status {status}, body not JSON ({e}): {text:.300}")
        });
        let codes = codes(&body);
        assert!(status < 500, "{name}: status {status}: {body}");
        assert!(
            !codes.is_empty()
                && codes
                    .iter()
                    .all(|c| ["BAD_INPUT", "NOT_FOUND"].contains(&c.as_str())),
            "{name}: status {status}, codes {codes:?}: {body}"
        );
        for error in body["errors"].as_array().unwrap() {
            let message = error["message"].as_str().unwrap_or("");
            assert!(message.len() > 10, "{name}: an actionable message: {error}");
            assert!(
                !message.contains("DB::Exception") && !message.contains("SELECT"),
                "{name}: no internals: {message}"
            );
        }
        eprintln!(
            "{name:40} {status} {codes:?} {}",
            body["errors"][0]["message"]
                .as_str()
                .unwrap_or("")
                .chars()
                .take(110)
                .collect::<String>()
        );
        seen += 1;
    }
    assert!(seen > 50);
    // Limits are named in their messages; the argument at fault is in the extensions.
    let (_, body) = server
        .post(&book(&format!("ticker: \"{t}\", depth: 100000")), json!({}))
        .await;
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("1000"),
        "{body}"
    );
    assert_eq!(body["errors"][0]["extensions"]["argument"], "depth");
    // Still serving after all of it.
    let health = server
        .client
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    server.data("{ apiVersion }", json!({})).await;
    server.stop().await;
    env.cleanup().await;
}

/// ClickHouse going away: UNAVAILABLE with a retry hint, the server stays up, and answers
/// again once ClickHouse is back.
#[tokio::test]
async fn clickhouse_down_is_unavailable_and_the_server_stays_up() {
    let env = TestEnv::new().await;
    let mut launcher = common::PrivateClickHouse::start(&env.name).await;
    let mut config = env.config.clone();
    config.clickhouse.url = launcher.url();
    kalshibook::migrate::run(&config).await.expect("migrate");
    insert(
        &kalshibook::clickhouse::client(&config.clickhouse),
        "markets",
        &[market_row(EXAMPLE_TICKER, "active", "Example", T0)],
    )
    .await;
    let server = TestServer::start(&config).await;
    let query = format!("{{ market(ticker: \"{EXAMPLE_TICKER}\") {{ status }} }}");
    server.data(&query, json!({})).await;

    launcher.stop().await;
    for query in [
        query.as_str(),
        "{ orderbook(ticker: \"KXEXAMPLE-26MAR01-B50\") { complete } }",
        "{ markets { nodes { ticker } } }",
    ] {
        let (status, body) = server.post(query, json!({})).await;
        assert_eq!(status, 200);
        assert_eq!(codes(&body), ["UNAVAILABLE"], "{body}");
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("retry")
        );
    }
    let health = server
        .client
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    launcher.resume().await;
    let mut answered = false;
    for _ in 0..100 {
        let (_, body) = server.post(&query, json!({})).await;
        if body["data"]["market"]["status"] == "active" {
            answered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(answered, "answers again once ClickHouse is back");
    server.stop().await;
    env.cleanup().await;
}

/// The API's book query (one pass, summed in Rust) equals the reference book-at-T SQL on a
/// feed full of ties: snapshots sharing a timestamp, deltas sharing one with a snapshot before
/// and after it in sequence, connections restarting their sequence numbers, books emptied.
#[tokio::test]
async fn the_orderbook_query_equals_book_at_sql_on_ties() {
    use kalshibook::clickhouse::book::book_at;
    use kalshibook::clickhouse::orderbook::orderbook_at;
    let env = TestEnv::migrated().await;
    let client = env.clickhouse();
    let mut rng = StdRng::seed_from_u64(0x7165);
    let market = "KXTIES-1";
    let (mut ts, mut conn, mut seq) = (T0, 1u64, 0u64);
    let mut book = Book::default();
    let mut deltas = Vec::new();
    let mut snapshots = Vec::new();
    for step in 0..1_000 {
        // Milliseconds tie often; the clock sometimes stands still for several events.
        ts += 1_000 * rng.random_range(0..2);
        seq += 1;
        if step % 97 == 0 {
            conn += 1; // a new connection: sequence numbers restart
            seq = 1;
        }
        if step % 13 == 0 || step == 0 {
            if rng.random_bool(0.2) {
                book = Book::default();
            }
            let place = SnapshotPlace {
                market,
                ts,
                ts_received: ts,
                conn,
                sid: 1,
                seq,
                source: SnapshotSource::Checkpoint,
            };
            snapshots.push(SnapshotRow::from_book(&place, &book));
            continue;
        }
        let side = if rng.random_bool(0.5) {
            Side::Yes
        } else {
            Side::No
        };
        let resting: Vec<(Price, Size)> = book.ladder(side).iter().map(|(p, s)| (*p, *s)).collect();
        let (price, delta) = if !resting.is_empty() && rng.random_bool(0.45) {
            let (price, size) = resting[rng.random_range(0..resting.len())];
            (price, s(-rng.random_range(1..=size.units())))
        } else {
            (
                p(100 * rng.random_range(1..100)),
                s(rng.random_range(1..5_000)),
            )
        };
        book.apply_delta(side, price, delta).expect("valid");
        deltas.push(DeltaRow {
            market: market.to_owned(),
            ts,
            ts_received: ts,
            conn,
            sid: 1,
            seq,
            side: side_code(side),
            price: price.units(),
            delta: delta.units(),
        });
    }
    insert(&client, "deltas", &deltas).await;
    insert(&client, "snapshots", &snapshots).await;
    // Around every snapshot, and at a sample of deltas.
    let mut instants: Vec<i64> = snapshots
        .iter()
        .map(|s| s.ts)
        .chain(deltas.iter().step_by(7).map(|d| d.ts))
        .flat_map(|t| [t - 1, t, t + 1])
        .collect();
    instants.sort_unstable();
    instants.dedup();
    instants.push(T0 - 1);
    for at in &instants {
        let fast = orderbook_at(&client, market, *at)
            .await
            .expect("orderbook_at");
        let reference = book_at(&client, market, *at).await.expect("book_at");
        assert_eq!(fast.book, reference, "at {at}");
    }
    assert!(instants.len() > 300, "{} instants", instants.len());
    env.cleanup().await;
}

/// Every API read carries `max_execution_time`; a query past it is cancelled by ClickHouse
/// and reported as a timeout (the API's TIMEOUT code), not as an internal error.
#[tokio::test]
async fn reads_past_max_execution_time_are_timeouts() {
    use kalshibook::clickhouse::read::{ReadError, ReadLimits, read_client};
    let env = TestEnv::migrated().await;
    let client = read_client(
        &env.clickhouse(),
        ReadLimits {
            max_execution_time: std::time::Duration::from_secs(1),
        },
    );
    let slow = client
        .query("SELECT sum(sleepEachRow(0.3)) FROM numbers(20) SETTINGS max_block_size = 1")
        .fetch_one::<u64>()
        .await
        .map_err(ReadError::from);
    assert!(matches!(slow, Err(ReadError::Timeout(_))), "{slow:?}");
    let error = kalshibook::graphql::ApiError::from(slow.unwrap_err());
    assert_eq!(error.code(), "TIMEOUT");
    assert!(error.to_string().contains("10 s"), "{error}");
    env.cleanup().await;
}
