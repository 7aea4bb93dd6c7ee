//! Frame-by-frame tests of the collector's core.

use serde_json::{Value, json};

use super::*;
use crate::market::{Price, Size};

const A: &str = "KXTEST-A";
const B: &str = "KXTEST-B";
const T0: i64 = 1_780_000_000_000_000;

fn meta(ticker: &str) -> MarketMeta {
    MarketMeta {
        ticker: ticker.to_owned(),
        event_ticker: "KXTEST".to_owned(),
        status: "active".to_owned(),
        ..MarketMeta::default()
    }
}

fn commands(p: &mut Processor) -> Vec<Value> {
    p.take_commands()
        .iter()
        .map(|c| serde_json::from_str(c).expect("commands are JSON"))
        .collect()
}

fn send(p: &mut Processor, frame: Value, ts: i64) {
    p.on_text(&frame.to_string(), ts);
}

fn snapshot(sid: u32, seq: u64, market: &str, yes: &[(&str, &str)], no: &[(&str, &str)]) -> Value {
    let mut msg =
        json!({"market_ticker": market, "market_id": "00000000-0000-0000-0000-000000000000"});
    if !yes.is_empty() {
        msg["yes_dollars_fp"] = json!(yes);
    }
    if !no.is_empty() {
        msg["no_dollars_fp"] = json!(no);
    }
    json!({"type": "orderbook_snapshot", "sid": sid, "seq": seq, "msg": msg})
}

fn delta(
    sid: u32,
    seq: u64,
    market: &str,
    side: &str,
    price: &str,
    delta: &str,
    ts_ms: i64,
) -> Value {
    json!({"type": "orderbook_delta", "sid": sid, "seq": seq, "msg": {
        "market_ticker": market, "market_id": "00000000-0000-0000-0000-000000000000",
        "price_dollars": price, "delta_fp": delta, "side": side, "ts_ms": ts_ms}})
}

/// A processor connected, with lifecycle (sid 1), trade (sid 2) and one orderbook shard
/// (sid 3) holding A and B, both snapshotted.
fn connected() -> Processor {
    let mut p = Processor::new(ProcessorConfig::default(), None);
    p.set_markets(vec![meta(A), meta(B)], T0);
    p.connect(T0);
    let sent = commands(&mut p);
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert_eq!(
        sent[0]["params"]["channels"],
        json!(["market_lifecycle_v2"])
    );
    assert_eq!(sent[1]["params"]["channels"], json!(["trade"]));
    assert_eq!(sent[2]["params"]["channels"], json!(["orderbook_delta"]));
    assert_eq!(sent[2]["params"]["market_tickers"], json!([A, B]));
    for (id, channel, sid) in [
        (1, "market_lifecycle_v2", 1),
        (2, "trade", 2),
        (3, "orderbook_delta", 3),
    ] {
        send(
            &mut p,
            json!({"type": "subscribed", "id": id, "msg": {"channel": channel, "sid": sid}}),
            T0,
        );
    }
    send(
        &mut p,
        snapshot(
            3,
            1,
            A,
            &[("0.4200", "10.00"), ("0.4300", "5.50")],
            &[("0.5500", "7.00")],
        ),
        T0 + 10,
    );
    send(
        &mut p,
        snapshot(3, 2, B, &[("0.0010", "1.00")], &[]),
        T0 + 20,
    );
    p
}

/// A processor connected, its orderbook subscription (sid 3) to `markets` confirmed and no
/// frame of it received yet.
fn subscribed_to(markets: &[&str]) -> Processor {
    subscribe(Processor::new(ProcessorConfig::default(), None), markets)
}

/// `p` connected, its orderbook subscription (sid 3) to `markets` confirmed.
fn subscribe(mut p: Processor, markets: &[&str]) -> Processor {
    p.set_markets(markets.iter().map(|m| meta(m)).collect(), T0);
    p.connect(T0);
    p.take_commands();
    send(
        &mut p,
        json!({"type": "subscribed", "id": 3, "msg": {"channel": "orderbook_delta", "sid": 3}}),
        T0,
    );
    p
}

fn level(p: &Processor, market: &str, side: Side, price: &str) -> Option<Size> {
    p.book(market)?
        .ladder(side)
        .get(&price.parse::<Price>().unwrap())
        .copied()
}

#[test]
fn snapshot_then_deltas_build_the_book_and_rows() {
    let mut p = connected();
    send(
        &mut p,
        delta(3, 3, A, "yes", "0.4300", "-5.50", 1_780_000_000_100),
        T0 + 100_000,
    );
    send(
        &mut p,
        delta(3, 4, A, "no", "0.5600", "2.25", 1_780_000_000_100),
        T0 + 100_000,
    );
    assert_eq!(level(&p, A, Side::Yes, "0.4300"), None);
    assert_eq!(
        level(&p, A, Side::No, "0.5600"),
        Some(Size::from_units(225))
    );
    let rows = p.take_rows();
    assert_eq!(rows.snapshots.len(), 2);
    assert_eq!(rows.deltas.len(), 2);
    assert_eq!(rows.deltas[0].ts, 1_780_000_000_100_000, "exchange ms → µs");
    assert_eq!(rows.deltas[0].delta, -550);
    assert_eq!(rows.deltas[1].seq, 4);
    assert!(rows.gaps.is_empty());
    assert!(
        rows.tops.len() >= 3,
        "top of book changed with each snapshot and delta"
    );
    assert!(commands(&mut p).is_empty());
}

#[test]
fn ok_replies_take_a_sequence_number_and_are_not_gaps() {
    let mut p = connected();
    send(
        &mut p,
        json!({"type": "ok", "id": 9, "sid": 3, "seq": 3, "msg": {"market_tickers": [A, B]}}),
        T0,
    );
    send(
        &mut p,
        delta(3, 4, A, "yes", "0.4200", "1.00", 1_780_000_000_200),
        T0,
    );
    let rows = p.take_rows();
    assert!(rows.gaps.is_empty(), "{:?}", rows.gaps);
    assert_eq!(rows.deltas.len(), 1);
}

#[test]
fn a_sequence_gap_opens_gaps_drops_deltas_asks_snapshots_and_closes_on_snapshot() {
    let mut p = connected();
    p.take_rows();
    // seq 3 lost.
    send(
        &mut p,
        delta(3, 4, A, "yes", "0.4200", "1.00", 1_780_000_000_300),
        T0 + 300_000,
    );
    assert_eq!(p.book(A), None, "book unknown after a gap");
    let rows = p.take_rows();
    assert!(rows.deltas.is_empty(), "a delta after a gap is not applied");
    assert_eq!(rows.gaps.len(), 2, "both markets of the sid");
    assert!(
        rows.gaps
            .iter()
            .all(|g| g.ts_end.is_none() && g.expected_seq == 3 && g.received_seq == 4)
    );
    let sent = commands(&mut p);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["cmd"], "update_subscription");
    assert_eq!(sent[0]["params"]["action"], "get_snapshot");
    assert_eq!(sent[0]["params"]["sid"], 3);
    assert_eq!(sent[0]["params"]["market_tickers"], json!([A, B]));

    send(
        &mut p,
        snapshot(3, 5, A, &[("0.4100", "3.00")], &[]),
        T0 + 400_000,
    );
    assert!(
        p.take_rows().snapshots.is_empty(),
        "placed by the next frame"
    );
    send(
        &mut p,
        delta(3, 6, A, "yes", "0.4100", "1.00", 1_780_000_000_450),
        T0 + 450_000,
    );
    let rows = p.take_rows();
    let closed: Vec<_> = rows.gaps.iter().filter(|g| g.market == A).collect();
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].version, 2);
    // Its book is the book before the next change: it stands at that change's time.
    assert_eq!(rows.snapshots[0].ts, 1_780_000_000_450_000);
    assert_eq!(closed[0].ts_end, Some(1_780_000_000_450_000));
    assert_eq!(rows.deltas[0].ts, 1_780_000_000_450_000);
    assert_eq!(
        level(&p, A, Side::Yes, "0.4100"),
        Some(Size::from_units(400))
    );
    assert_eq!(p.book(B), None, "B stays unknown until its own snapshot");
}

#[test]
fn a_delta_that_would_go_negative_resnapshots_that_market_only() {
    let mut p = connected();
    p.take_rows();
    send(
        &mut p,
        delta(3, 3, A, "no", "0.5500", "-8.00", 1_780_000_000_300),
        T0,
    );
    assert_eq!(p.book(A), None);
    assert!(p.book(B).is_some());
    let rows = p.take_rows();
    assert_eq!(rows.gaps.len(), 1);
    assert_eq!(rows.gaps[0].kind, GapKind::NegativeSize as i8);
    let sent = commands(&mut p);
    assert_eq!(sent[0]["params"]["market_tickers"], json!([A]));
}

#[test]
fn reconnect_opens_gaps_and_a_new_connection_restarts_sids() {
    let mut p = connected();
    send(
        &mut p,
        delta(3, 3, A, "yes", "0.4200", "1.00", 1_780_000_000_500),
        T0 + 500_000,
    );
    p.take_rows();
    p.disconnect("test");
    let rows = p.take_rows();
    assert_eq!(rows.gaps.len(), 2);
    assert!(rows.gaps.iter().all(|g| g.kind == GapKind::Reconnect as i8));
    let gap_a = rows.gaps.iter().find(|g| g.market == A).unwrap();
    assert_eq!(
        gap_a.ts_start, 1_780_000_000_500_000,
        "gap starts at the last stored event"
    );

    let old = p.connect(T0); // clock went backwards: ids still increase
    assert!(old > T0 as u64);
    let sent = commands(&mut p);
    assert_eq!(sent.len(), 3);
    send(
        &mut p,
        json!({"type": "subscribed", "id": 3, "msg": {"channel": "orderbook_delta", "sid": 1}}),
        T0,
    );
    send(
        &mut p,
        snapshot(1, 1, A, &[("0.4000", "1.00")], &[]),
        T0 + 900_000,
    );
    send(
        &mut p,
        delta(1, 2, A, "yes", "0.4000", "1.00", 1_780_000_000_950),
        T0 + 950_000,
    );
    let rows = p.take_rows();
    assert_eq!(rows.gaps.len(), 1);
    assert!(rows.gaps[0].ts_end.is_some());
    assert!(rows.snapshots[0].conn > rows.gaps[0].conn || rows.snapshots[0].conn == old);
    assert!(
        rows.snapshots[0].ts >= gap_a.ts_start,
        "book axis never goes backwards"
    );
}

#[test]
fn malformed_frames_are_counted_never_fatal() {
    let mut p = connected();
    p.take_rows();
    p.on_text("not json at all", T0);
    p.on_text("{\"type\": 5}", T0);
    send(
        &mut p,
        json!({"type": "orderbook_delta", "sid": 3, "seq": 3, "msg": {"market_ticker": A, "price_dollars": "abc", "delta_fp": "1.00", "side": "yes"}}),
        T0,
    );
    let stats = p.take_stats();
    assert_eq!(stats.malformed, 3);
    assert_eq!(
        p.book(A),
        None,
        "the market named by the bad frame is resynchronised"
    );
    assert!(p.book(B).is_some());
    assert_eq!(commands(&mut p)[0]["params"]["market_tickers"], json!([A]));
    // The sequence continues after the malformed frame: no extra gap.
    send(
        &mut p,
        delta(3, 4, B, "yes", "0.0010", "1.00", 1_780_000_000_600),
        T0,
    );
    assert_eq!(p.take_rows().gaps.len(), 1);
}

#[test]
fn a_killed_subscription_is_resubscribed() {
    let mut p = connected();
    p.take_rows();
    send(
        &mut p,
        json!({"type": "error", "sid": 3, "seq": 3, "msg": {"code": 25, "msg": "Subscription buffer overflow"}}),
        T0,
    );
    assert_eq!(p.book(A), None);
    assert_eq!(p.book(B), None);
    let sent = commands(&mut p);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["cmd"], "subscribe");
    assert_eq!(sent[0]["params"]["market_tickers"], json!([A, B]));
    assert_eq!(p.take_rows().gaps.len(), 2);
}

#[test]
fn checkpoints_store_changed_books_at_their_feed_position() {
    let mut p = connected();
    send(
        &mut p,
        delta(3, 3, A, "yes", "0.4200", "1.00", 1_780_000_000_700),
        T0,
    );
    p.take_rows();
    p.checkpoint(T0 + 1_000_000);
    assert!(p.take_rows().snapshots.is_empty(), "not due yet");
    p.checkpoint(T0 + 61_000_000);
    let rows = p.take_rows();
    assert_eq!(rows.snapshots.len(), 1, "only A changed since its snapshot");
    let checkpoint = &rows.snapshots[0];
    assert_eq!(checkpoint.market, A);
    assert_eq!(checkpoint.source, SnapshotSource::Checkpoint as i8);
    assert_eq!(checkpoint.seq, 3, "position of the last applied delta");
    assert_eq!(checkpoint.yes_sizes, vec![1100, 550]);
    // Quiet books are checkpointed too, at the latest after the max quiet interval.
    p.checkpoint(T0 + 32 * 60_000_000);
    assert_eq!(p.take_rows().snapshots.len(), 2);
}

#[test]
fn lifecycle_settlement_unsubscribes_and_creation_subscribes() {
    let mut p = connected();
    // B's book is empty already (its closing snapshot came): settled, it leaves at once.
    send(&mut p, snapshot(3, 3, B, &[], &[]), T0 + 30);
    send(
        &mut p,
        json!({"type": "market_lifecycle_v2", "sid": 1, "seq": 1, "msg": {"market_ticker": B, "event_type": "settled", "settled_ts": 1_780_000_100}}),
        T0 + 40,
    );
    let sent = commands(&mut p);
    assert_eq!(sent[0]["params"]["action"], "delete_markets");
    assert_eq!(sent[0]["params"]["market_tickers"], json!([B]));
    send(
        &mut p,
        json!({"type": "market_lifecycle_v2", "sid": 1, "seq": 2, "msg": {"market_ticker": "KXTEST-C", "event_type": "activated"}}),
        T0 + 50,
    );
    let sent = commands(&mut p);
    assert_eq!(sent[0]["params"]["action"], "add_markets");
    assert_eq!(sent[0]["params"]["market_tickers"], json!(["KXTEST-C"]));
    p.checkpoint(T0 + 50 + UNPLACED_PATIENCE_US);
    let rows = p.take_rows();
    assert!(
        rows.markets
            .iter()
            .any(|m| m.ticker == B && m.status == "finalized")
    );
    assert!(
        rows.gaps
            .iter()
            .all(|g| g.market != B || g.ts_end.is_some()),
        "B's final book is known: {:?}",
        rows.gaps
    );
}

/// `determined` can come before the empty snapshot that closes the book: the market stays
/// subscribed for it, so its final book is stored and no gap is left open; one whose
/// snapshot never comes is let go after the wait, with a gap.
#[test]
fn a_market_determined_before_its_closing_snapshot_waits_for_it() {
    let mut p = connected();
    p.take_rows();
    for (seq, market) in [(1, A), (2, B)] {
        send(
            &mut p,
            json!({"type": "market_lifecycle_v2", "sid": 1, "seq": seq, "msg": {"market_ticker": market, "event_type": "determined", "determination_ts": 1_780_000_001, "result": "yes", "settlement_value": "1.0000"}}),
            T0 + 1_000_000,
        );
    }
    assert!(commands(&mut p).is_empty(), "both wait for their close");
    send(&mut p, snapshot(3, 3, A, &[], &[]), T0 + 7_000_000);
    let sent = commands(&mut p);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["params"]["action"], "delete_markets");
    assert_eq!(sent[0]["params"]["market_tickers"], json!([A]));
    // B's never comes: let go when the wait is over, its book no longer known.
    p.checkpoint(T0 + 1_000_000 + CLOSING_SNAPSHOT_PATIENCE_US - 1);
    assert!(
        commands(&mut p)
            .iter()
            .all(|c| c["params"]["action"] != "delete_markets")
    );
    p.checkpoint(T0 + 1_000_000 + CLOSING_SNAPSHOT_PATIENCE_US);
    let sent = commands(&mut p);
    assert_eq!(sent[0]["params"]["action"], "delete_markets");
    assert_eq!(sent[0]["params"]["market_tickers"], json!([B]));
    let rows = p.take_rows();
    assert!(
        rows.snapshots
            .iter()
            .any(|s| s.market == A && s.yes_prices.is_empty() && s.no_prices.is_empty()),
        "A's final, empty book is stored"
    );
    let open: Vec<_> = rows.gaps.iter().filter(|g| g.ts_end.is_none()).collect();
    assert_eq!(open.len(), 1, "{:?}", rows.gaps);
    assert_eq!(open[0].market, B);
    assert_eq!(open[0].kind, GapKind::Unsubscribed as i8);
    assert_eq!(p.book(A).map(Book::is_empty), Some(true));
    assert_eq!(p.book(B), None);
}

#[test]
fn an_empty_snapshot_at_close_empties_the_book() {
    let mut p = connected();
    send(
        &mut p,
        delta(3, 3, B, "yes", "0.0010", "1.00", 1_780_000_000_100),
        T0 + 100_000,
    );
    send(&mut p, snapshot(3, 4, A, &[], &[]), T0 + 200_000);
    send(
        &mut p,
        delta(3, 5, B, "yes", "0.0010", "1.00", 1_780_000_000_300),
        T0 + 300_000,
    );
    assert_eq!(p.book(A).map(|b| b.levels().count()), Some(0));
    let rows = p.take_rows();
    let last = rows.snapshots.last().unwrap();
    assert!(last.yes_prices.is_empty() && last.no_prices.is_empty());
}

#[test]
fn restart_gaps_open_from_the_last_stored_event() {
    let mut p = Processor::new(ProcessorConfig::default(), None);
    p.resume_after_restart([(A.to_owned(), T0 - 5_000_000)]);
    let rows = p.take_rows();
    assert_eq!(rows.gaps.len(), 1);
    assert_eq!(rows.gaps[0].kind, GapKind::CollectorRestart as i8);
    assert_eq!(rows.gaps[0].ts_start, T0 - 5_000_000);
}

#[test]
fn gaps_an_earlier_run_left_open_close_at_this_runs_first_snapshot() {
    let mut p = Processor::new(ProcessorConfig::default(), None);
    p.resume_after_restart([(A.to_owned(), T0 - 5_000_000)]);
    // The earlier run lost its connection and stopped before it could resnapshot A.
    let left_open = FeedGapRow {
        market: A.to_owned(),
        gap_id: 77,
        channel: "orderbook_delta".to_owned(),
        kind: GapKind::Reconnect as i8,
        conn: 1,
        sid: 3,
        expected_seq: 0,
        received_seq: 0,
        ts_start: T0 - 6_000_000,
        ts_end: None,
        detail: "closed by the exchange".to_owned(),
        version: 1,
    };
    p.inherit_open_gaps([left_open.clone()]);
    let mut p = subscribe(p, &[A]);
    send(
        &mut p,
        snapshot(3, 1, A, &[("0.4200", "10.00")], &[]),
        T0 + 10,
    );
    send(
        &mut p,
        delta(3, 2, A, "yes", "0.4200", "1.00", T0 / 1000 + 1),
        T0 + 1_020,
    );
    let rows = p.take_rows();
    let stored = rows.snapshots[0].ts;
    let closed: Vec<&FeedGapRow> = rows.gaps.iter().filter(|g| g.ts_end.is_some()).collect();
    assert!(
        closed
            .iter()
            .any(|g| g.kind == GapKind::CollectorRestart as i8 && g.ts_end == Some(stored)),
        "{:?}",
        rows.gaps
    );
    assert!(
        closed.contains(&&FeedGapRow {
            ts_end: Some(stored),
            version: 2,
            ..left_open
        }),
        "the inherited gap closes where this run's book is known again: {:?}",
        rows.gaps
    );
}

#[test]
fn an_unrequested_snapshot_that_changes_the_book_marks_its_uncertain_instant() {
    let mut p = connected();
    // Exchange time 1_780_000_001_000 ms, received 2 ms later: the lag is 2 ms.
    send(
        &mut p,
        delta(3, 3, B, "yes", "0.0010", "1.00", 1_780_000_001_000),
        1_780_000_001_002_000,
    );
    p.take_rows();
    // The close: an empty snapshot, received 50 ms after that delta.
    send(&mut p, snapshot(3, 4, A, &[], &[]), 1_780_000_001_052_000);
    // The next frame of the subscription, 80 ms after the previous one.
    send(
        &mut p,
        delta(3, 5, B, "yes", "0.0010", "1.00", 1_780_000_001_080),
        1_780_000_001_082_000,
    );
    let rows = p.take_rows();
    assert_eq!(rows.gaps.len(), 1, "{:?}", rows.gaps);
    let gap = &rows.gaps[0];
    assert_eq!(gap.kind, GapKind::BookReplaced as i8);
    assert_eq!(
        gap.ts_start, 1_780_000_001_000_000,
        "after the previous frame"
    );
    assert_eq!(
        gap.ts_end,
        Some(1_780_000_001_080_000),
        "before the next frame"
    );
    assert_eq!(rows.snapshots[0].ts, 1_780_000_001_080_000);
    // The same book again changes nothing: no gap.
    send(&mut p, snapshot(3, 6, A, &[], &[]), 1_780_000_001_090_000);
    send(
        &mut p,
        delta(3, 7, B, "yes", "0.0010", "1.00", 1_780_000_001_095),
        1_780_000_001_096_000,
    );
    assert!(p.take_rows().gaps.is_empty());
}

/// Kalshi empties a closing market's book without deltas: the instant lies after that
/// market's own last event, however recent the other markets' frames on its subscription,
/// and not before its close time when that is known and falls in between.
#[test]
fn a_closing_snapshot_is_uncertain_from_the_markets_own_last_event_or_its_close_time() {
    for close_time_us in [None, Some(1_780_000_004_000_000)] {
        let mut p = subscribed_to(&[A, B]);
        if let Some(close) = close_time_us {
            p.set_markets(
                vec![
                    MarketMeta {
                        close_time_us: Some(close),
                        ..meta(A)
                    },
                    meta(B),
                ],
                T0,
            );
        }
        send(
            &mut p,
            snapshot(3, 1, A, &[("0.4200", "10.00")], &[]),
            T0 + 10,
        );
        send(
            &mut p,
            snapshot(3, 2, B, &[("0.0010", "1.00")], &[]),
            T0 + 20,
        );
        // A's last change at exchange time …001 s; B keeps trading until …009 s.
        send(
            &mut p,
            delta(3, 3, A, "yes", "0.4200", "1.00", 1_780_000_001_000),
            1_780_000_001_000_500,
        );
        for (seq, second) in (4..).zip(2..10) {
            send(
                &mut p,
                delta(
                    3,
                    seq,
                    B,
                    "yes",
                    "0.0010",
                    "1.00",
                    1_780_000_000_000 + second * 1000,
                ),
                1_780_000_000_000_500 + second * 1_000_000,
            );
        }
        send(&mut p, snapshot(3, 12, A, &[], &[]), 1_780_000_009_200_000);
        send(
            &mut p,
            delta(3, 13, B, "yes", "0.0010", "1.00", 1_780_000_009_300),
            1_780_000_009_300_500,
        );
        let gaps: Vec<_> = p
            .take_rows()
            .gaps
            .into_iter()
            .filter(|g| g.kind == GapKind::BookReplaced as i8)
            .collect();
        assert_eq!(gaps.len(), 1, "{gaps:?}");
        assert_eq!(
            gaps[0].ts_start,
            close_time_us.unwrap_or(1_780_000_001_000_000),
            "close time {close_time_us:?}"
        );
        assert_eq!(gaps[0].ts_end, Some(1_780_000_009_300_000));
    }
}

/// A book replaced before any exchange timestamp on its subscription still marks the span.
#[test]
fn a_book_replaced_before_any_delta_marks_its_span() {
    let mut p = subscribed_to(&[A]);
    send(
        &mut p,
        snapshot(3, 1, A, &[("0.4200", "10.00")], &[]),
        T0 + 10,
    );
    send(&mut p, snapshot(3, 2, A, &[], &[]), T0 + 5_000_000);
    p.checkpoint(T0 + 5_000_000 + UNPLACED_PATIENCE_US);
    let rows = p.take_rows();
    let replaced: Vec<_> = rows
        .gaps
        .iter()
        .filter(|g| g.kind == GapKind::BookReplaced as i8)
        .collect();
    assert_eq!(replaced.len(), 1, "{:?}", rows.gaps);
    let stored: Vec<i64> = rows.snapshots.iter().map(|s| s.ts).collect();
    assert_eq!(replaced[0].ts_start, stored[0], "{stored:?}");
    assert_eq!(replaced[0].ts_end, Some(stored[1]));
}

#[test]
fn snapshots_wait_for_the_exchange_clock_when_it_is_far_from_ours() {
    // A replay of old traffic: exchange timestamps half a year before our clock.
    let old_ms = 1_763_000_000_000;
    let mut p = subscribed_to(&[A]);
    send(
        &mut p,
        snapshot(3, 1, A, &[("0.4200", "10.00")], &[]),
        T0 + 1_000,
    );
    p.checkpoint(T0 + 10_000_000);
    assert!(
        p.take_rows().snapshots.is_empty(),
        "no clock yet: nothing placed, no checkpoint"
    );
    send(
        &mut p,
        delta(3, 2, A, "yes", "0.4200", "1.00", old_ms),
        T0 + 2_000,
    );
    let rows = p.take_rows();
    assert_eq!(rows.snapshots.len(), 1);
    assert_eq!(
        rows.deltas[0].ts,
        old_ms * 1000,
        "the delta keeps its exchange time"
    );
    assert!(
        rows.snapshots[0].ts <= rows.deltas[0].ts,
        "the snapshot precedes it on the exchange clock"
    );
    assert!(rows.snapshots[0].ts > old_ms * 1000 - 1_000_000);
}

#[test]
fn a_silent_exchange_is_eventually_taken_to_share_our_clock() {
    let mut p = subscribed_to(&[A]);
    send(
        &mut p,
        snapshot(3, 1, A, &[("0.4200", "10.00")], &[]),
        T0 + 1_000,
    );
    p.checkpoint(T0 + 10_000_000);
    assert!(p.take_rows().snapshots.is_empty());
    p.checkpoint(T0 + 31_000_000);
    let rows = p.take_rows();
    assert_eq!(rows.snapshots.len(), 1);
    assert_eq!(
        rows.snapshots[0].ts,
        T0 + 1_000,
        "placed at its receive time"
    );
}

#[test]
fn commands_refused_for_rate_are_resent_and_oversized_subscriptions_split() {
    let mut p = Processor::new(ProcessorConfig::default(), None);
    let markets: Vec<MarketMeta> = (0..6).map(|i| meta(&format!("KXTEST-M{i}"))).collect();
    p.set_markets(markets, T0);
    p.connect(T0);
    let sent = commands(&mut p);
    assert_eq!(sent.len(), 3);
    // Error 27 on the lifecycle subscription: resent a second later, same id.
    send(
        &mut p,
        json!({"type": "error", "id": 1, "msg": {"code": 27, "msg": "Too many requests"}}),
        T0 + 10,
    );
    p.checkpoint(T0 + 500_000);
    assert!(commands(&mut p).is_empty(), "not yet");
    p.checkpoint(T0 + 1_100_000);
    let resent = commands(&mut p);
    assert_eq!(resent.len(), 1);
    assert_eq!(resent[0], sent[0]);
    // Error 26 on the orderbook subscription of 6 markets: two subscriptions of 3.
    send(
        &mut p,
        json!({"type": "error", "id": 3, "msg": {"code": 26, "msg": "Subscription market limit exceeded"}}),
        T0 + 20,
    );
    let split = commands(&mut p);
    assert_eq!(split.len(), 2, "{split:?}");
    for command in &split {
        assert_eq!(
            command["params"]["market_tickers"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
    }
}

#[test]
fn a_refused_trade_subscription_is_asked_again_ever_less_often() {
    let mut p = Processor::new(ProcessorConfig::default(), None);
    p.set_markets(vec![meta(A)], T0);
    p.connect(T0);
    let sent = commands(&mut p);
    assert_eq!(sent[1]["params"]["channels"], json!(["trade"]));
    // An exchange without the channel refuses it every time: asked again after 1 s, 2 s, 4 s.
    let mut refused_at = T0 + 10;
    for wait_us in [1_000_000, 2_000_000, 4_000_000] {
        send(
            &mut p,
            json!({"type": "error", "id": 2, "msg": {"code": 8, "msg": "Unknown channel name"}}),
            refused_at,
        );
        p.checkpoint(refused_at + wait_us - 100_000);
        assert!(commands(&mut p).is_empty(), "not before {wait_us} µs");
        p.checkpoint(refused_at + wait_us);
        assert_eq!(
            commands(&mut p),
            vec![sent[1].clone()],
            "after {wait_us} µs"
        );
        refused_at += wait_us + 10;
    }
}

#[test]
fn a_lost_first_frame_of_a_subscription_is_a_gap_and_asks_for_snapshots() {
    let mut p = subscribed_to(&[A, B]);
    // seq 1 (A's snapshot) never arrives; B's comes as seq 2.
    send(
        &mut p,
        snapshot(3, 2, B, &[("0.0010", "1.00")], &[]),
        T0 + 10,
    );
    let sent = commands(&mut p);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["params"]["action"], "get_snapshot");
    assert_eq!(sent[0]["params"]["market_tickers"], json!([A, B]));
    assert_eq!(p.take_stats().gaps, 1);
}

#[test]
fn a_repeated_frame_is_applied_once() {
    let mut p = connected();
    p.take_rows();
    let frame = delta(3, 3, A, "yes", "0.4200", "1.00", 1_780_000_000_100);
    send(&mut p, frame.clone(), T0 + 100_000);
    send(&mut p, frame, T0 + 100_001);
    assert_eq!(
        level(&p, A, Side::Yes, "0.4200"),
        Some(Size::from_units(1100))
    );
    assert_eq!(p.take_rows().deltas.len(), 1);
    assert_eq!(p.take_stats().repeated_frames, 1);
    assert!(commands(&mut p).is_empty());
}

#[test]
fn a_closing_snapshot_before_a_disconnect_is_stored_and_the_closed_market_has_no_gap() {
    let mut p = connected();
    send(
        &mut p,
        delta(3, 3, B, "yes", "0.0010", "1.00", 1_780_000_000_100),
        T0 + 100_000,
    );
    // A closes: its empty snapshot, then the lifecycle event, then the connection drops
    // before any other frame of the sid could place the snapshot.
    send(&mut p, snapshot(3, 4, A, &[], &[]), T0 + 200_000);
    send(
        &mut p,
        json!({"type": "market_lifecycle_v2", "sid": 1, "seq": 1, "msg": {"market_ticker": A, "event_type": "determined"}}),
        T0 + 250_000,
    );
    p.take_rows();
    p.disconnect("test");
    let rows = p.take_rows();
    let closing: Vec<_> = rows.snapshots.iter().filter(|s| s.market == A).collect();
    assert_eq!(closing.len(), 1, "the closing snapshot is stored");
    assert!(closing[0].yes_prices.is_empty() && closing[0].no_prices.is_empty());
    assert_eq!(
        closing[0].ts, 1_780_000_000_200_000,
        "at its estimated exchange time"
    );
    // (A's book-replaced span, closed, says when the close happened; no gap stays open.)
    let open: Vec<_> = rows
        .gaps
        .iter()
        .filter(|g| g.ts_end.is_none())
        .map(|g| g.market.as_str())
        .collect();
    assert_eq!(open, vec![B], "the closed market's final book stays known");
}

#[test]
fn a_live_market_no_longer_recorded_gets_a_gap() {
    let mut p = connected();
    p.take_rows();
    // A leaves the discovered set while its book is live, and no closing snapshot comes.
    p.set_markets(vec![meta(B)], T0 + 1_000);
    assert!(
        commands(&mut p).is_empty(),
        "it may be closing: wait for its snapshot"
    );
    p.checkpoint(T0 + 1_000 + CLOSING_SNAPSHOT_PATIENCE_US - 1);
    assert!(commands(&mut p).is_empty());
    assert!(p.book(A).is_some());
    p.checkpoint(T0 + 1_000 + CLOSING_SNAPSHOT_PATIENCE_US);
    let sent = commands(&mut p);
    assert_eq!(sent[0]["params"]["action"], "delete_markets");
    assert_eq!(p.book(A), None, "no longer watched: unknown");
    let rows = p.take_rows();
    assert_eq!(rows.gaps.len(), 1);
    assert_eq!(rows.gaps[0].market, A);
    assert_eq!(rows.gaps[0].kind, GapKind::Unsubscribed as i8);
    assert!(rows.gaps[0].ts_end.is_none());
}

#[test]
fn refused_subscriptions_are_placed_again_and_named_markets_set_aside() {
    let mut p = Processor::new(ProcessorConfig::default(), None);
    p.set_markets(vec![meta(A), meta(B)], T0);
    p.connect(T0);
    let sent = commands(&mut p);
    assert_eq!(sent[2]["params"]["market_tickers"], json!([A, B]));
    // Kalshi refuses the orderbook subscription, naming B.
    send(
        &mut p,
        json!({"type": "error", "id": 3, "msg": {"code": 11, "msg": "Invalid parameter", "market_tickers": [B]}}),
        T0 + 10,
    );
    assert_eq!(p.subscribed_markets(), 0, "nothing is subscribed");
    p.checkpoint(T0 + 1_000_000);
    assert!(commands(&mut p).is_empty(), "not at once");
    p.checkpoint(T0 + 6_000_000);
    let again = commands(&mut p);
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0]["cmd"], "subscribe");
    assert_eq!(again[0]["params"]["market_tickers"], json!([A]));
}

#[test]
fn deltas_for_a_market_without_a_book_ask_for_its_snapshot_at_a_bounded_rate_then_resubscribe_it() {
    let mut p = connected();
    send(
        &mut p,
        delta(3, 3, A, "no", "0.5500", "-8.00", 1_780_000_000_100),
        T0 + 100_000,
    );
    assert_eq!(commands(&mut p).len(), 1, "the negative size asks once");
    // The get_snapshot goes unanswered (lost); deltas keep coming.
    for (i, seq) in (4..10).enumerate() {
        send(
            &mut p,
            delta(
                3,
                seq,
                A,
                "yes",
                "0.4200",
                "1.00",
                1_780_000_000_200 + i as i64,
            ),
            T0 + 200_000 + i as i64 * 1_000,
        );
    }
    assert!(commands(&mut p).is_empty(), "not within the retry interval");
    send(
        &mut p,
        delta(3, 10, A, "yes", "0.4200", "1.00", 1_780_000_006_000),
        T0 + 6_000_000,
    );
    let sent = commands(&mut p);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["params"]["action"], "get_snapshot");
    assert_eq!(sent[0]["params"]["market_tickers"], json!([A]));

    // Two requests unanswered: the market is taken out and added again instead.
    send(
        &mut p,
        delta(3, 11, A, "yes", "0.4200", "1.00", 1_780_000_012_000),
        T0 + 12_000_000,
    );
    let out = commands(&mut p);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0]["params"]["action"], "delete_markets");
    assert_eq!(out[0]["params"]["market_tickers"], json!([A]));
    send(
        &mut p,
        json!({"type": "ok", "id": out[0]["id"], "sid": 3, "seq": 12, "msg": {"market_tickers": [B]}}),
        T0 + 12_100_000,
    );
    p.checkpoint(T0 + 17_200_000);
    let back = commands(&mut p);
    assert_eq!(back.len(), 1, "{back:?}");
    assert_eq!(back[0]["params"]["action"], "add_markets");
    assert_eq!(back[0]["params"]["market_tickers"], json!([A]));
    // Its snapshot arrives: the book is known again and requests start over.
    send(
        &mut p,
        snapshot(3, 13, A, &[("0.4200", "3.00")], &[]),
        T0 + 17_300_000,
    );
    assert_eq!(
        level(&p, A, Side::Yes, "0.4200"),
        Some(Size::from_units(300))
    );
}

#[test]
fn a_subscription_kalshi_no_longer_knows_is_subscribed_again() {
    let mut p = connected();
    p.take_rows();
    send(
        &mut p,
        delta(3, 3, A, "no", "0.5500", "-8.00", 1_780_000_000_100),
        T0 + 100_000,
    );
    let sent = commands(&mut p);
    assert_eq!(sent[0]["params"]["action"], "get_snapshot");
    let id = sent[0]["id"].clone();
    // Kalshi answers that sid 3 is unknown: the subscription is gone.
    send(
        &mut p,
        json!({"type": "error", "id": id, "msg": {"code": 7, "msg": "Unknown subscription ID"}}),
        T0 + 150_000,
    );
    assert_eq!(
        p.book(B),
        None,
        "B's book is unknown until it is subscribed again"
    );
    let again = commands(&mut p);
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0]["cmd"], "subscribe");
    assert_eq!(again[0]["params"]["market_tickers"], json!([A, B]));
}

#[test]
fn discovery_keeps_markets_the_lifecycle_channel_announced_before_they_open() {
    let mut p = connected();
    send(
        &mut p,
        json!({"type": "market_lifecycle_v2", "sid": 1, "seq": 1, "msg": {"market_ticker": "KXTEST-C", "event_type": "created", "open_ts": 1_780_000_900}}),
        T0,
    );
    let sent = commands(&mut p);
    assert_eq!(sent[0]["params"]["action"], "add_markets");
    // The next discovery (open markets only) does not list C yet.
    p.set_markets(vec![meta(A), meta(B)], T0 + 1_000);
    assert!(commands(&mut p).is_empty(), "C stays subscribed");
    assert_eq!(p.subscribed_markets(), 3);
    // A settled market the lifecycle channel never reported leaves with discovery (once
    // its closing snapshot had time to come).
    p.set_markets(vec![meta(B)], T0 + 2_000);
    p.set_markets(vec![meta(B)], T0 + 2_000 + CLOSING_SNAPSHOT_PATIENCE_US);
    let sent = commands(&mut p);
    assert_eq!(sent[0]["params"]["action"], "delete_markets");
    assert_eq!(sent[0]["params"]["market_tickers"], json!([A]));
}

#[test]
fn a_market_resubscribed_on_the_same_connection_sorts_after_its_old_subscription() {
    let mut p = connected();
    let ms = 1_780_000_000_100;
    send(
        &mut p,
        delta(3, 3, A, "yes", "0.4200", "1.00", ms),
        T0 + 100_000,
    );
    // Kalshi ends sid 3; the markets come back on sid 4, whose seq starts at 1, and the
    // new snapshot and its next delta carry the very same exchange millisecond.
    send(
        &mut p,
        json!({"type": "error", "sid": 3, "seq": 4, "msg": {"code": 25, "msg": "Subscription buffer overflow"}}),
        T0 + 100_500,
    );
    commands(&mut p);
    send(
        &mut p,
        json!({"type": "subscribed", "id": 4, "msg": {"channel": "orderbook_delta", "sid": 4}}),
        T0 + 100_600,
    );
    send(
        &mut p,
        snapshot(4, 1, A, &[("0.4200", "20.00")], &[]),
        T0 + 100_700,
    );
    send(
        &mut p,
        delta(4, 2, A, "yes", "0.4200", "1.00", ms),
        T0 + 100_800,
    );
    let rows = p.take_rows();
    let mut events: Vec<(i64, u64, u64)> = rows
        .deltas
        .iter()
        .filter(|d| d.market == A)
        .map(|d| (d.ts, d.conn, d.seq))
        .chain(
            rows.snapshots
                .iter()
                .filter(|s| s.market == A && s.sid == 4)
                .map(|s| (s.ts, s.conn, s.seq)),
        )
        .collect();
    let arrival = events.clone();
    events.sort_unstable();
    assert_eq!(events.len(), 3);
    // Arrival order: old delta, new snapshot, new delta (chained as delta, delta, snapshot).
    assert_eq!(events[0], arrival[0], "the old sid's delta sorts first");
    assert_eq!(events[1], arrival[2], "then the new snapshot");
    assert_eq!(events[2], arrival[1], "then the new sid's delta");
}

#[test]
fn a_refused_get_snapshot_takes_the_market_out_and_adds_it_again() {
    let mut p = connected();
    send(
        &mut p,
        delta(3, 3, A, "no", "0.5500", "-8.00", 1_780_000_000_100),
        T0 + 100_000,
    );
    let sent = commands(&mut p);
    assert_eq!(sent[0]["params"]["action"], "get_snapshot");
    send(
        &mut p,
        json!({"type": "error", "id": sent[0]["id"], "msg": {"code": 13, "msg": "Unsupported action"}}),
        T0 + 150_000,
    );
    let out = commands(&mut p);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0]["params"]["action"], "delete_markets");
    assert_eq!(out[0]["params"]["sid"], 3);
    assert_eq!(out[0]["params"]["market_tickers"], json!([A]));
    assert!(p.book(B).is_some(), "the other market is untouched");
    p.checkpoint(T0 + 5_200_000);
    let back = commands(&mut p);
    assert_eq!(back.len(), 1, "{back:?}");
    assert_eq!(back[0]["params"]["action"], "add_markets");
    assert_eq!(back[0]["params"]["sid"], 3);
    assert_eq!(back[0]["params"]["market_tickers"], json!([A]));
}

/// A `get_snapshot` answered for one market and then refused: both markets leave the
/// subscription to be added again, and the one whose book the answer made known is no
/// longer watched, so its book is unknown (a gap) until it is back.
#[test]
fn a_get_snapshot_answered_in_part_then_refused_leaves_no_book_unwatched() {
    let mut p = connected();
    p.take_rows();
    // A lost frame: both books unknown, snapshots asked for.
    send(
        &mut p,
        delta(3, 4, B, "yes", "0.0010", "1.00", 1_780_000_000_100),
        T0 + 100_000,
    );
    let sent = commands(&mut p);
    assert_eq!(sent[0]["params"]["action"], "get_snapshot");
    send(
        &mut p,
        snapshot(3, 5, A, &[("0.4200", "3.00")], &[]),
        T0 + 120_000,
    );
    assert!(p.book(A).is_some());
    send(
        &mut p,
        json!({"type": "error", "id": sent[0]["id"], "msg": {"code": 13, "msg": "Unsupported action"}}),
        T0 + 150_000,
    );
    let out = commands(&mut p);
    assert_eq!(out[0]["params"]["action"], "delete_markets");
    assert_eq!(out[0]["params"]["market_tickers"], json!([A, B]));
    assert_eq!(p.book(A), None, "no longer watched");
    send(
        &mut p,
        delta(3, 6, B, "yes", "0.0010", "1.00", 1_780_000_000_200),
        T0 + 200_000,
    );
    let gaps = p.take_rows().gaps;
    assert!(
        gaps.iter()
            .any(|g| g.market == A && g.ts_end.is_none() && g.kind == GapKind::Unsubscribed as i8),
        "{gaps:?}"
    );
}

/// A subscription the exchange ended (error 25, or an `unsubscribed` we never asked for):
/// its books are unknown and it is subscribed again; frames still arriving on the dead sid
/// are neither applied nor taken for the new subscription's.
#[test]
fn an_ended_subscription_is_replaced_and_its_late_frames_ignored() {
    for ending in [
        json!({"type": "error", "sid": 3, "seq": 3, "msg": {"code": 25, "msg": "Subscription buffer overflow"}}),
        json!({"type": "unsubscribed", "sid": 3, "seq": 3}),
    ] {
        let mut p = connected();
        p.take_rows();
        send(&mut p, ending.clone(), T0 + 100_000);
        assert_eq!(p.book(A), None, "{ending}");
        let sent = commands(&mut p);
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0]["cmd"], "subscribe");
        assert_eq!(sent[0]["params"]["market_tickers"], json!([A, B]));
        assert_eq!(p.take_rows().gaps.len(), 2);
        // The dead feed's tail, then the new subscription's reply and snapshots.
        send(
            &mut p,
            snapshot(3, 4, A, &[("0.9900", "1.00")], &[]),
            T0 + 110_000,
        );
        send(
            &mut p,
            delta(3, 5, A, "yes", "0.9900", "1.00", 1_780_000_000_120),
            T0 + 120_000,
        );
        assert_eq!(p.book(A), None, "nothing applied from the dead sid");
        assert_eq!(p.take_stats().foreign_frames, 2);
        send(
            &mut p,
            json!({"type": "subscribed", "id": sent[0]["id"], "msg": {"channel": "orderbook_delta", "sid": 4}}),
            T0 + 130_000,
        );
        send(
            &mut p,
            snapshot(4, 1, A, &[("0.4200", "2.00")], &[]),
            T0 + 140_000,
        );
        send(&mut p, snapshot(4, 2, B, &[], &[]), T0 + 150_000);
        send(
            &mut p,
            delta(4, 3, A, "yes", "0.4200", "1.00", 1_780_000_000_160),
            T0 + 160_000,
        );
        assert_eq!(
            level(&p, A, Side::Yes, "0.4200"),
            Some("3.00".parse().unwrap())
        );
        assert_eq!(level(&p, A, Side::Yes, "0.9900"), None);
        let gaps = p.take_rows().gaps;
        assert!(gaps.iter().all(|g| g.ts_end.is_some()), "{gaps:?}");
    }
}

#[test]
fn an_ok_to_get_snapshot_listing_some_markets_does_not_shrink_the_subscription() {
    let mut p = connected();
    send(
        &mut p,
        delta(3, 3, A, "no", "0.5500", "-8.00", 1_780_000_000_100),
        T0 + 100_000,
    );
    let sent = commands(&mut p);
    assert_eq!(sent[0]["params"]["action"], "get_snapshot");
    send(
        &mut p,
        json!({"type": "ok", "id": sent[0]["id"], "sid": 3, "seq": 4, "msg": {"market_tickers": [A]}}),
        T0 + 150_000,
    );
    assert_eq!(p.subscribed_markets(), 2);
    p.set_markets(vec![meta(A), meta(B)], T0 + 200_000);
    assert!(commands(&mut p).is_empty(), "nothing to add or delete");
}

/// Kalshi's own recorded traffic (one `orderbook_delta` subscription of 12 markets, whose
/// `ok` replies to other clients' commands take places in the sequence) goes through the
/// core without a false gap, a dropped delta or a command, and leaves every book equal to
/// a plain fold of the frames.
#[test]
fn recorded_kalshi_traffic_replays_without_false_gaps_into_exact_books() {
    const STREAM: &str = include_str!("../../tests/fixtures/kalshi/ws_orderbook_stream.jsonl");
    let frames: Vec<Value> = STREAM
        .lines()
        .map(|line| serde_json::from_str(line).expect("recorded frames are JSON"))
        .collect();
    let tickers: Vec<String> = frames
        .iter()
        .filter(|f| f["type"] == "orderbook_snapshot")
        .map(|f| f["msg"]["market_ticker"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(tickers.len(), 12);

    let mut p = Processor::new(ProcessorConfig::default(), None);
    p.set_markets(tickers.iter().map(|t| meta(t)).collect(), T0);
    p.connect(T0);
    let sent = commands(&mut p);
    let book_subscribe = sent
        .iter()
        .find(|c| c["params"]["channels"] == json!(["orderbook_delta"]))
        .expect("an orderbook subscription");
    assert_eq!(
        book_subscribe["params"]["market_tickers"]
            .as_array()
            .unwrap()
            .len(),
        12
    );

    // Our units, folded by hand: price in $0.0001, size in 0.01 contracts.
    let units = |text: &Value| -> i64 { text.as_str().unwrap().replace('.', "").parse().unwrap() };
    let mut truth: HashMap<(String, &str, i64), i64> = HashMap::new();
    let mut received_us = T0;
    for mut frame in frames {
        match frame["type"].as_str().unwrap() {
            // The recording's ids were another client's; the reply to ours carries our id.
            "subscribed" => frame["id"] = book_subscribe["id"].clone(),
            "ok" => frame["id"] = json!(frame["id"].as_u64().unwrap() + 1_000),
            "orderbook_snapshot" => {
                let market = frame["msg"]["market_ticker"].as_str().unwrap().to_owned();
                truth.retain(|(m, _, _), _| *m != market);
                for side in ["yes", "no"] {
                    let Some(levels) = frame["msg"][format!("{side}_dollars_fp")].as_array() else {
                        continue;
                    };
                    for level in levels {
                        truth.insert((market.clone(), side, units(&level[0])), units(&level[1]));
                    }
                }
            }
            "orderbook_delta" => {
                let msg = &frame["msg"];
                let side = if msg["side"] == "yes" { "yes" } else { "no" };
                let key = (
                    msg["market_ticker"].as_str().unwrap().to_owned(),
                    side,
                    units(&msg["price_dollars"]),
                );
                *truth.entry(key).or_default() += units(&msg["delta_fp"]);
                received_us = received_us.max(msg["ts_ms"].as_i64().unwrap() * 1_000 + 30_000);
            }
            other => panic!("unexpected {other}"),
        }
        send(&mut p, frame, received_us);
    }
    truth.retain(|_, size| *size != 0);

    let stats = p.take_stats();
    assert_eq!(stats.deltas, 245);
    assert_eq!(stats.snapshots, 12);
    assert_eq!(
        (
            stats.gaps,
            stats.malformed,
            stats.dropped_deltas,
            stats.repeated_frames
        ),
        (0, 0, 0, 0)
    );
    assert!(
        commands(&mut p).is_empty(),
        "no snapshot asked, nothing resent"
    );
    let rows = p.take_rows();
    assert!(rows.gaps.is_empty(), "{:?}", rows.gaps);
    assert_eq!(rows.deltas.len(), 245);
    let mut last: HashMap<&str, (i64, u64)> = HashMap::new();
    for row in &rows.deltas {
        let previous = last.insert(&row.market, (row.ts, row.seq));
        assert!(
            previous.is_none_or(|p| p < (row.ts, row.seq)),
            "{} stored out of order",
            row.market
        );
    }

    let mut served: HashMap<(String, &str, i64), i64> = HashMap::new();
    for ticker in &tickers {
        let book = p.book(ticker).expect("every market has a book");
        for (side, name) in [(Side::Yes, "yes"), (Side::No, "no")] {
            for (price, size) in book.ladder(side) {
                served.insert(
                    (ticker.clone(), name, i64::from(price.units())),
                    size.units(),
                );
            }
        }
    }
    assert_eq!(served, truth);
}

#[test]
fn a_buffer_overflow_in_reply_to_a_command_ends_the_subscription_it_named() {
    for with_sid in [false, true] {
        buffer_overflow_in_reply_to_get_snapshot(with_sid);
    }
}

fn buffer_overflow_in_reply_to_get_snapshot(with_sid: bool) {
    let mut p = connected();
    p.take_rows();
    send(
        &mut p,
        delta(3, 3, A, "no", "0.5500", "-8.00", 1_780_000_000_100),
        T0 + 100_000,
    );
    let sent = commands(&mut p);
    assert_eq!(sent[0]["params"]["sid"], 3);
    let mut error = json!({"type": "error", "id": sent[0]["id"], "msg": {"code": 25, "msg": "Subscription buffer overflow"}});
    if with_sid {
        error["sid"] = json!(3);
    }
    send(&mut p, error, T0 + 150_000);
    assert_eq!(p.book(B), None, "every market of sid 3 is unknown");
    let again = commands(&mut p);
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0]["cmd"], "subscribe");
    assert_eq!(again[0]["params"]["market_tickers"], json!([A, B]));
    assert!(
        p.abandon_reason().is_none(),
        "the connection itself is fine"
    );
}

#[test]
fn a_terminal_error_naming_no_subscription_abandons_the_connection() {
    let mut p = connected();
    p.take_rows();
    assert!(p.abandon_reason().is_none());
    send(
        &mut p,
        json!({"type": "error", "msg": {"code": 10, "msg": "Channel error"}}),
        T0 + 100_000,
    );
    let reason = p.abandon_reason().expect("the connection is to be dropped");
    assert!(reason.contains("error 10"), "{reason}");
    p.disconnect(reason.to_owned().as_str());
    let gaps = p.take_rows().gaps;
    assert_eq!(
        gaps.len(),
        2,
        "both books are unknown until the next connection"
    );
    p.connect(T0 + 200_000);
    assert!(
        p.abandon_reason().is_none(),
        "a new connection starts clean"
    );
}

#[test]
fn an_exchange_resuming_after_a_pause_keeps_its_own_clock_on_the_new_connection() {
    // Connection 1: exchange and receive times agree (lag 0).
    let mut p = connected();
    send(
        &mut p,
        delta(3, 3, A, "yes", "0.4200", "1.00", (T0 + 500_000) / 1000),
        T0 + 500_000,
    );
    p.disconnect("test");
    // The exchange comes back 100 s later and carries on from where it stopped: its clock
    // is now 100 s behind ours.
    let pause_us = 100_000_000;
    p.connect(T0 + pause_us);
    p.take_commands();
    send(
        &mut p,
        json!({"type": "subscribed", "id": 3, "msg": {"channel": "orderbook_delta", "sid": 1}}),
        T0 + pause_us,
    );
    send(
        &mut p,
        snapshot(1, 1, A, &[("0.4200", "11.00")], &[]),
        T0 + pause_us + 1_000,
    );
    send(
        &mut p,
        delta(1, 2, A, "yes", "0.4200", "1.00", (T0 + 600_000) / 1000),
        T0 + pause_us + 100_000,
    );
    p.take_rows();
    // A minute later the book is checkpointed, then the next change arrives.
    let now = T0 + pause_us + 61_000_000;
    p.checkpoint(now);
    let checkpoint = p.take_rows().snapshots;
    assert_eq!(checkpoint.len(), 1);
    let next_ms = (T0 + 61_600_000) / 1000;
    send(
        &mut p,
        delta(1, 3, A, "yes", "0.4200", "1.00", next_ms),
        now + 1_000,
    );
    let rows = p.take_rows();
    assert!(
        checkpoint[0].ts <= next_ms * 1000,
        "the checkpoint ({}) stands before the exchange's next change ({})",
        checkpoint[0].ts,
        next_ms * 1000
    );
    assert_eq!(
        rows.deltas[0].ts,
        next_ms * 1000,
        "the delta keeps its exchange time"
    );
}

/// Kalshi answers back-to-back `update_subscription`s out of order, and an add's `ok` lists
/// the subscription after that add only: updates still unanswered must not be undone by it.
#[test]
fn an_ok_answered_before_an_earlier_update_does_not_undo_the_later_ones() {
    const C: &str = "KXTEST-C";
    const D: &str = "KXTEST-D";
    let mut p = connected();
    // A closes (its book emptied), so that it may leave at the next discovery.
    send(&mut p, snapshot(3, 3, A, &[], &[]), T0 + 500);
    p.set_markets(vec![meta(A), meta(B), meta(C)], T0 + 1_000);
    let add_c = commands(&mut p);
    p.set_markets(vec![meta(B), meta(C), meta(D)], T0 + 2_000);
    let sent = commands(&mut p);
    assert_eq!(add_c[0]["params"]["action"], "add_markets");
    let actions: Vec<&Value> = sent.iter().map(|c| &c["params"]["action"]).collect();
    assert_eq!(actions, vec!["delete_markets", "add_markets"], "{sent:?}");
    // The reply to the add of C comes first and lists A, B, C: it knows nothing yet of the
    // delete of A and the add of D sent after it.
    send(
        &mut p,
        json!({"type": "ok", "id": add_c[0]["id"], "sid": 3, "seq": 4, "msg": {"market_tickers": [A, B, C]}}),
        T0 + 3_000,
    );
    assert_eq!(p.subscribed_markets(), 3, "B, C and D");
    p.set_markets(vec![meta(B), meta(C), meta(D)], T0 + 4_000);
    let again = commands(&mut p);
    assert!(
        again.is_empty(),
        "D is not added twice, A not deleted twice: {again:?}"
    );
    // The later replies agree.
    for (seq, command, listed) in [
        (5, &sent[0], json!([B, C])),
        (6, &sent[1], json!([B, C, D])),
    ] {
        send(
            &mut p,
            json!({"type": "ok", "id": command["id"], "sid": 3, "seq": seq, "msg": {"market_tickers": listed}}),
            T0 + 5_000,
        );
    }
    p.set_markets(vec![meta(B), meta(C), meta(D)], T0 + 6_000);
    assert!(commands(&mut p).is_empty());
    assert_eq!(p.subscribed_markets(), 3);
}

/// A market the exchange holds on two subscriptions sends every change on both: only the
/// subscription it is on counts, so nothing is applied twice.
#[test]
fn a_market_held_on_a_second_subscription_is_applied_once() {
    let mut p = connected();
    p.take_rows();
    send(
        &mut p,
        delta(3, 3, A, "yes", "0.4200", "1.00", 1_780_000_000_100),
        T0 + 100_000,
    );
    // Sid 9 holds A as well: its snapshot and the same change arrive on it.
    send(
        &mut p,
        snapshot(9, 1, A, &[("0.4200", "10.00")], &[]),
        T0 + 100_100,
    );
    send(
        &mut p,
        delta(9, 2, A, "yes", "0.4200", "1.00", 1_780_000_000_100),
        T0 + 100_200,
    );
    assert_eq!(
        level(&p, A, Side::Yes, "0.4200"),
        Some("11.00".parse().unwrap()),
        "the change counts once"
    );
    assert_eq!(
        level(&p, A, Side::Yes, "0.4300"),
        Some("5.50".parse().unwrap())
    );
    let rows = p.take_rows();
    assert_eq!(rows.deltas.len(), 1, "{:?}", rows.deltas);
    assert!(
        rows.snapshots.iter().all(|s| s.sid == 3),
        "{:?}",
        rows.snapshots
    );
    assert_eq!(p.take_stats().foreign_frames, 2);
}

/// Kalshi drops a closing market from the open listing seconds before it sends the empty
/// snapshot that ends its book: the market stays subscribed until that snapshot, and leaves
/// without a gap; a snapshot that crosses our `delete_markets` does not close a gap for good.
#[test]
fn a_market_leaving_discovery_waits_for_its_closing_snapshot() {
    let mut p = connected();
    p.take_rows();
    p.set_markets(vec![meta(B)], T0 + 1_000_000);
    assert!(commands(&mut p).is_empty(), "A is still subscribed");
    assert_eq!(p.subscribed_markets(), 2);
    send(
        &mut p,
        delta(3, 3, A, "yes", "0.4200", "1.00", 1_780_000_001_500),
        T0 + 1_500_000,
    );
    assert_eq!(
        level(&p, A, Side::Yes, "0.4200"),
        Some("11.00".parse().unwrap())
    );
    // Seven seconds later, the close.
    send(&mut p, snapshot(3, 4, A, &[], &[]), T0 + 8_000_000);
    let sent = commands(&mut p);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["params"]["action"], "delete_markets");
    assert_eq!(sent[0]["params"]["market_tickers"], json!([A]));
    send(
        &mut p,
        delta(3, 5, B, "yes", "0.0010", "1.00", 1_780_000_008_100),
        T0 + 8_100_000,
    );
    let rows = p.take_rows();
    // (Only the span in which the close happened, closed at the snapshot, is uncertain.)
    assert!(
        rows.gaps
            .iter()
            .all(|g| g.ts_end.is_some() && g.kind == GapKind::BookReplaced as i8),
        "the final book is known: {:?}",
        rows.gaps
    );
    assert_eq!(rows.deltas.len(), 2);
    assert!(
        rows.snapshots
            .iter()
            .any(|s| s.market == A && s.yes_prices.is_empty() && s.no_prices.is_empty())
    );

    // B leaves too and its wait runs out: it is taken out, with a gap. A live snapshot of it
    // that crossed the delete closes that gap at its instant and opens it again at once.
    p.set_markets(vec![], T0 + 9_000_000);
    p.checkpoint(T0 + 9_000_000 + CLOSING_SNAPSHOT_PATIENCE_US);
    assert_eq!(commands(&mut p)[0]["params"]["action"], "delete_markets");
    send(
        &mut p,
        snapshot(3, 6, B, &[("0.0020", "3.00")], &[]),
        T0 + 69_500_000,
    );
    send(
        &mut p,
        json!({"type": "ok", "id": 9, "sid": 3, "seq": 7, "msg": {}}),
        T0 + 69_600_000,
    );
    p.checkpoint(T0 + 69_500_000 + UNPLACED_PATIENCE_US);
    let gaps = p.take_rows().gaps;
    let open: Vec<_> = gaps.iter().filter(|g| g.ts_end.is_none()).collect();
    assert_eq!(open.len(), 2, "{gaps:?}");
    assert!(
        open.iter()
            .all(|g| g.market == B && g.kind == GapKind::Unsubscribed as i8)
    );
    assert_eq!(
        gaps.iter().filter(|g| g.ts_end.is_some()).count(),
        1,
        "{gaps:?}"
    );
    assert_eq!(p.book(B), None, "no longer watched: unknown");
}

/// A lost `subscribed` reply: the subscription is known by the book data that comes on it,
/// so a gap on it still makes its books unknown and asks for their snapshots.
#[test]
fn an_orderbook_subscription_whose_reply_was_lost_is_known_by_its_data() {
    let mut p = Processor::new(ProcessorConfig::default(), None);
    p.set_markets(vec![meta(A), meta(B)], T0);
    p.connect(T0);
    p.take_commands();
    // No `subscribed` for the orderbook subscription (id 3); its snapshots come on sid 3.
    send(
        &mut p,
        snapshot(3, 1, A, &[("0.4200", "10.00")], &[]),
        T0 + 10,
    );
    send(
        &mut p,
        snapshot(3, 2, B, &[("0.0010", "1.00")], &[]),
        T0 + 20,
    );
    send(
        &mut p,
        delta(3, 3, A, "yes", "0.4200", "1.00", 1_780_000_000_100),
        T0 + 100_000,
    );
    assert_eq!(
        level(&p, A, Side::Yes, "0.4200"),
        Some("11.00".parse().unwrap())
    );
    p.take_rows();
    // Seq 4 is lost.
    send(
        &mut p,
        delta(3, 5, B, "yes", "0.0010", "1.00", 1_780_000_000_200),
        T0 + 200_000,
    );
    assert_eq!(p.book(A), None, "the gap made the shard's books unknown");
    assert_eq!(p.book(B), None);
    let gaps = p.take_rows().gaps;
    let mut markets: Vec<&str> = gaps.iter().map(|g| g.market.as_str()).collect();
    markets.sort_unstable();
    assert_eq!(markets, vec![A, B], "{gaps:?}");
    let sent = commands(&mut p);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["params"]["action"], "get_snapshot");
    assert_eq!(sent[0]["params"]["sid"], 3);
    // The reply turns up after all: it changes nothing, and a later gap still counts.
    send(
        &mut p,
        json!({"type": "subscribed", "id": 3, "msg": {"channel": "orderbook_delta", "sid": 3}}),
        T0 + 250_000,
    );
    send(
        &mut p,
        snapshot(3, 6, A, &[("0.4200", "10.00")], &[]),
        T0 + 300_000,
    );
    send(
        &mut p,
        snapshot(3, 7, B, &[("0.0010", "1.00")], &[]),
        T0 + 300_000,
    );
    p.take_rows();
    send(
        &mut p,
        delta(3, 9, A, "yes", "0.4200", "1.00", 1_780_000_000_400),
        T0 + 400_000,
    );
    assert_eq!(p.book(A), None);
    let opened = p
        .take_rows()
        .gaps
        .iter()
        .filter(|g| g.ts_end.is_none() && g.kind == GapKind::SequenceGap as i8)
        .count();
    assert_eq!(opened, 2);
}

fn trade(sid: u32, seq: u64, market: &str, trade_id: &str, count: &str) -> Value {
    json!({"type": "trade", "sid": sid, "seq": seq, "msg": {
        "trade_id": trade_id, "market_ticker": market, "yes_price_dollars": "0.4300",
        "no_price_dollars": "0.5700", "count_fp": count, "taker_side": "yes",
        "is_block_trade": false, "ts": 1_780_000_000, "ts_ms": 1_780_000_000_123_i64}})
}

#[test]
fn a_trade_delivered_again_is_stored_once_even_across_a_reconnect() {
    let mut p = connected();
    p.take_rows();
    send(&mut p, trade(2, 1, A, "t-1", "3.50"), T0 + 100);
    send(&mut p, trade(2, 2, A, "t-1", "3.50"), T0 + 110);
    // The same id on another market is another trade.
    send(&mut p, trade(2, 3, B, "t-1", "1.00"), T0 + 120);
    p.disconnect("test");
    p.connect(T0 + 200);
    p.take_commands();
    send(
        &mut p,
        json!({"type": "subscribed", "id": 2, "msg": {"channel": "trade", "sid": 2}}),
        T0 + 210,
    );
    // The new connection delivers the last trade again, then a new one.
    send(&mut p, trade(2, 1, B, "t-1", "1.00"), T0 + 220);
    send(&mut p, trade(2, 2, A, "t-2", "2.00"), T0 + 230);
    let stored: Vec<(String, String, i64)> = p
        .take_rows()
        .trades
        .into_iter()
        .map(|t| (t.market, t.trade_id, t.count))
        .collect();
    assert_eq!(
        stored,
        vec![
            (A.to_owned(), "t-1".to_owned(), 350),
            (B.to_owned(), "t-1".to_owned(), 100),
            (A.to_owned(), "t-2".to_owned(), 200),
        ]
    );
    let stats = p.take_stats();
    assert_eq!((stats.trades, stats.repeated_trades), (5, 2));
}
