//! The book-at-T SQL against rows inserted through the `clickhouse` crate into the real
//! ClickHouse engine, checked against books replayed in memory from the same events.

mod common;

use common::TestEnv;
use kalshibook::clickhouse::book::{BookPosition, book_at};
use kalshibook::clickhouse::orderbook::{Instants, book_series, orderbook_at};
use kalshibook::clickhouse::rows::{
    DeltaRow, MarketRow, SnapshotPlace, SnapshotRow, SnapshotSource, side_code,
};
use kalshibook::market::{Book, Price, Side, Size};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const MARKETS: [&str; 3] = ["KXTEST-A", "KXTEST-B-SUBCENT", "KXTEST-C"];
/// 2026-03-01T00:00:00Z in µs.
const START_US: i64 = 1_772_323_200_000_000;

/// What the exchange's book was after each event of one market.
#[derive(Default)]
struct Truth {
    history: Vec<(BookPosition, Book)>,
}

impl Truth {
    /// The book after the last event at or before `at_us`, if any snapshot precedes it.
    fn at(&self, at_us: i64) -> Option<&(BookPosition, Book)> {
        self.history
            .iter()
            .rev()
            .find(|(pos, _)| pos.ts_us <= at_us)
    }
}

struct Feed {
    deltas: Vec<DeltaRow>,
    snapshots: Vec<SnapshotRow>,
    truth: Vec<Truth>,
    books: Vec<Option<Book>>,
    ts: i64,
    conn: u64,
    seq: u64,
}

impl Feed {
    fn new() -> Self {
        Self {
            deltas: Vec::new(),
            snapshots: Vec::new(),
            truth: MARKETS.iter().map(|_| Truth::default()).collect(),
            books: MARKETS.iter().map(|_| None).collect(),
            ts: START_US,
            conn: 1_000,
            seq: 0,
        }
    }

    fn position(&self) -> BookPosition {
        BookPosition {
            ts_us: self.ts,
            conn: self.conn,
            seq: self.seq,
        }
    }

    /// Exchange clocks stamp in milliseconds: several events share a timestamp.
    fn tick(&mut self, rng: &mut StdRng) {
        self.ts += 1_000 * rng.random_range(0..3);
        self.seq += 1;
    }

    fn snapshot(&mut self, market: usize, book: Book, source: SnapshotSource) {
        let place = SnapshotPlace {
            market: MARKETS[market],
            ts: self.ts,
            ts_received: self.ts + 900,
            conn: self.conn,
            sid: 1,
            seq: self.seq,
            source,
        };
        self.snapshots.push(SnapshotRow::from_book(&place, &book));
        let position = self.position();
        self.truth[market].history.push((position, book.clone()));
        self.books[market] = Some(book);
    }

    fn random_book(rng: &mut StdRng, market: usize) -> Book {
        let levels = (0..rng.random_range(1..12)).map(|_| {
            let side = if rng.random_bool(0.5) {
                Side::Yes
            } else {
                Side::No
            };
            (
                side,
                random_price(rng, market),
                Size::from_units(rng.random_range(1..50_000)),
            )
        });
        Book::from_levels(levels)
    }

    fn random_delta(&mut self, rng: &mut StdRng, market: usize) {
        let Some(book) = self.books[market].as_mut() else {
            return;
        };
        let side = if rng.random_bool(0.5) {
            Side::Yes
        } else {
            Side::No
        };
        let resting: Vec<(Price, Size)> = book.ladder(side).iter().map(|(p, s)| (*p, *s)).collect();
        let (price, delta) = if !resting.is_empty() && rng.random_bool(0.45) {
            // cancel part or all of a resting level
            let (price, size) = resting[rng.random_range(0..resting.len())];
            let take = if rng.random_bool(0.5) {
                size.units()
            } else {
                rng.random_range(1..=size.units())
            };
            (price, Size::from_units(-take))
        } else {
            (
                random_price(rng, market),
                Size::from_units(rng.random_range(1..20_000)),
            )
        };
        book.apply_delta(side, price, delta)
            .expect("generated deltas are valid");
        let book = book.clone();
        self.deltas.push(DeltaRow {
            market: MARKETS[market].to_owned(),
            ts: self.ts,
            ts_received: self.ts + 700,
            conn: self.conn,
            sid: 1,
            seq: self.seq,
            side: side_code(side),
            price: price.units(),
            delta: delta.units(),
        });
        let position = self.position();
        self.truth[market].history.push((position, book));
    }
}

/// Market B ticks at $0.001 (sub-cent); the others at $0.01.
fn random_price(rng: &mut StdRng, market: usize) -> Price {
    if market == 1 {
        Price::from_units(10 * rng.random_range(1..1000))
    } else {
        Price::from_units(100 * rng.random_range(1..100))
    }
}

fn build_feed(rng: &mut StdRng) -> Feed {
    let mut feed = Feed::new();
    // Subscribe: one exchange snapshot per market, sharing the sid's sequence.
    for market in 0..MARKETS.len() {
        feed.tick(rng);
        let book = Feed::random_book(rng, market);
        feed.snapshot(market, book, SnapshotSource::Exchange);
    }
    for step in 0..3_000 {
        feed.tick(rng);
        let market = rng.random_range(0..MARKETS.len());
        if step == 1_500 {
            // Reconnect: a new connection, seq restarts, and fresh snapshots that differ from
            // the books before (what was missed while disconnected).
            feed.conn += 1;
            feed.seq = 1;
            for market in 0..MARKETS.len() {
                let book = Feed::random_book(rng, market);
                feed.snapshot(market, book, SnapshotSource::Exchange);
                feed.seq += 1;
            }
        } else if step == 2_700 {
            // Market close: an unrequested empty snapshot.
            feed.snapshot(2, Book::default(), SnapshotSource::Exchange);
        } else if step % 250 == 0 {
            // Collector checkpoint: the book as of the last event, at the same position.
            if let Some(book) = feed.books[market].clone() {
                feed.seq -= 1;
                let last = feed.truth[market].history.last().expect("has events").0;
                feed.ts = feed.ts.max(last.ts_us);
                feed.snapshot(market, book, SnapshotSource::Checkpoint);
                feed.seq += 1;
            }
        } else if market != 2 || step < 2_700 {
            feed.random_delta(rng, market);
        }
    }
    feed
}

async fn insert(env: &TestEnv, feed: &Feed) {
    let client = env.clickhouse();
    let mut insert = client
        .insert::<DeltaRow>("deltas")
        .await
        .expect("insert deltas");
    for row in &feed.deltas {
        insert.write(row).await.expect("write delta");
    }
    insert.end().await.expect("end deltas");
    let mut insert = client
        .insert::<SnapshotRow>("snapshots")
        .await
        .expect("insert snapshots");
    for row in &feed.snapshots {
        insert.write(row).await.expect("write snapshot");
    }
    insert.end().await.expect("end snapshots");
}

#[tokio::test]
async fn book_at_matches_replayed_truth() {
    let env = TestEnv::migrated().await;
    let mut rng = StdRng::seed_from_u64(0x6b62_0001);
    let feed = build_feed(&mut rng);
    insert(&env, &feed).await;
    let client = env.clickhouse();

    let mut checked = 0;
    for (market, truth) in feed.truth.iter().enumerate() {
        let first = truth.history.first().expect("events").0.ts_us;
        let last = truth.history.last().expect("events").0.ts_us;
        // Random instants, plus every snapshot's instant and its neighbours.
        let mut instants: Vec<i64> = (0..60)
            .map(|_| rng.random_range(first..=last + 5_000))
            .collect();
        for snapshot in feed
            .snapshots
            .iter()
            .filter(|s| s.market == MARKETS[market])
        {
            instants.extend([
                snapshot.ts - 1,
                snapshot.ts,
                snapshot.ts + 1,
                snapshot.ts + 1_000,
            ]);
        }
        instants.push(first - 1);
        for at in instants {
            let got = book_at(&client, MARKETS[market], at)
                .await
                .expect("book_at");
            match (truth.at(at), got) {
                (None, None) => {}
                (Some((position, book)), Some(got)) => {
                    assert_eq!(&got.book, book, "{} at {at}", MARKETS[market]);
                    assert_eq!(got.position, *position, "{} at {at}", MARKETS[market]);
                }
                (expected, got) => panic!(
                    "{} at {at}: expected {:?}, got {:?}",
                    MARKETS[market],
                    expected.map(|e| e.0),
                    got.map(|g| g.position)
                ),
            }
            checked += 1;
        }
    }
    assert!(checked > 200, "checked only {checked} instants");
    env.cleanup().await;
}

#[tokio::test]
async fn unknown_market_has_no_book() {
    let env = TestEnv::migrated().await;
    let got = book_at(
        &env.clickhouse(),
        "KXNOPE-'; DROP TABLE deltas; --",
        START_US,
    )
    .await
    .expect("query runs");
    assert!(got.is_none());
    env.cleanup().await;
}

/// One event of the hand-built feed below.
fn snapshot_row(market: &str, ts: i64, seq: u64, book: &Book) -> SnapshotRow {
    let place = SnapshotPlace {
        market,
        ts,
        ts_received: ts + 900,
        conn: 7,
        sid: 1,
        seq,
        source: SnapshotSource::Exchange,
    };
    SnapshotRow::from_book(&place, book)
}

fn delta_row(market: &str, ts: i64, seq: u64, price: u32, delta: i64) -> DeltaRow {
    DeltaRow {
        market: market.to_owned(),
        ts,
        ts_received: ts + 700,
        conn: 7,
        sid: 1,
        seq,
        side: side_code(Side::Yes),
        price,
        delta,
    }
}

/// A closed market whose recording ended with the empty book Kalshi sends at its close keeps
/// that book, exactly, long after the snapshot lookback; one whose recording ended with bids
/// does not (its book is unknown), nor does an open market whose book was empty when its
/// recording stopped, nor an empty book that changed since.
/// `bookSnapshots`' reader agrees with the single-instant one at every instant.
#[tokio::test]
async fn a_closed_markets_empty_book_outlives_the_lookback() {
    const HOUR: i64 = 3_600_000_000;
    let env = TestEnv::migrated().await;
    let client = env.clickhouse();
    let bids = Book::from_levels([(Side::Yes, Price::from_units(4_200), Size::from_units(1_000))]);
    let (closed, left, reopened) = ("KXTEST-CLOSED", "KXTEST-LEFT", "KXTEST-REOPENED");
    let open_empty = "KXTEST-OPEN-EMPTY";
    let t = START_US;
    let market = |ticker: &str, status: &str, close_time: Option<i64>| MarketRow {
        ticker: ticker.to_owned(),
        event_ticker: "KXTEST".to_owned(),
        series_ticker: "KXTEST".to_owned(),
        title: String::new(),
        subtitle: String::new(),
        status: status.to_owned(),
        open_time: None,
        close_time,
        price_level_structure: String::new(),
        price_ranges: "[]".to_owned(),
        updated_at: t,
    };
    let markets = [
        market(closed, "active", Some(t + 7_000)),
        market(reopened, "closed", None),
        market(left, "closed", None),
        market(open_empty, "active", Some(t + 100 * HOUR)),
    ];
    let mut insert = client.insert::<MarketRow>("markets").await.unwrap();
    for row in &markets {
        insert.write(row).await.unwrap();
    }
    insert.end().await.unwrap();
    let snapshots = vec![
        snapshot_row(open_empty, t, 8, &Book::default()),
        snapshot_row(closed, t, 1, &bids),
        snapshot_row(closed, t + 10_000, 3, &Book::default()),
        snapshot_row(left, t, 4, &bids),
        snapshot_row(reopened, t, 5, &Book::default()),
    ];
    let deltas = vec![
        delta_row(closed, t + 5_000, 2, 4_300, 500),
        delta_row(left, t + 5_000, 6, 4_300, 500),
        delta_row(reopened, t + 3 * HOUR, 7, 4_300, 500),
    ];
    let mut insert = client.insert::<SnapshotRow>("snapshots").await.unwrap();
    for row in &snapshots {
        insert.write(row).await.unwrap();
    }
    insert.end().await.unwrap();
    let mut insert = client.insert::<DeltaRow>("deltas").await.unwrap();
    for row in &deltas {
        insert.write(row).await.unwrap();
    }
    insert.end().await.unwrap();

    let at = |market: &'static str, at_us: i64| {
        let client = client.clone();
        async move {
            orderbook_at(&client, market, at_us)
                .await
                .expect("orderbook_at")
                .book
        }
    };
    let closed_position = BookPosition {
        ts_us: t + 10_000,
        conn: 7,
        seq: 3,
    };
    for later in [HOUR, 3 * HOUR, 30 * 24 * HOUR] {
        let read = orderbook_at(&client, closed, t + later).await.unwrap();
        let book = read.book.expect("the closed book is known");
        assert!(book.book.is_empty(), "{later}");
        assert_eq!(book.position, closed_position);
        assert!(!read.in_gap);
    }
    assert_eq!(
        at(open_empty, t + 3 * HOUR).await,
        None,
        "an open market's empty book is not final"
    );
    assert_eq!(at(left, t + 3 * HOUR).await, None, "bids left unrecorded");
    assert!(at(left, t + HOUR).await.is_some(), "within the lookback");
    let before_change = at(reopened, t + 3 * HOUR - 1).await.expect("still empty");
    assert!(before_change.book.is_empty());
    assert_eq!(
        at(reopened, t + 3 * HOUR).await,
        None,
        "a delta came after the empty snapshot: unknown, not guessed"
    );

    let instants = Instants {
        from_us: t - HOUR,
        interval_us: HOUR / 2,
        count: 16,
    };
    for market in [closed, left, reopened, open_empty] {
        let series = book_series(&client, market, instants)
            .await
            .expect("book_series");
        for (i, book) in series.into_iter().enumerate() {
            let instant = instants.at(u32::try_from(i).unwrap());
            assert_eq!(book, at(market, instant).await, "{market} at {instant}");
        }
    }
    env.cleanup().await;
}
