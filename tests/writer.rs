//! The collector's writer against the real ClickHouse engine: batches land once, survive
//! ClickHouse going away (memory, then the on-disk spool), and a spool left behind by a
//! stopped run is drained by the next.

mod common;

use std::time::Duration;

use common::{PrivateClickHouse, TestEnv};
use kalshibook::clickhouse::rows::DeltaRow;
use kalshibook::clickhouse::rows::RawFrameRow;
use kalshibook::collector::frame_log::frames_between;
use kalshibook::collector::processor::Rows;
use kalshibook::collector::writer::{Writer, WriterConfig};
use tokio_util::sync::CancellationToken;

fn deltas(from: u64, count: u64) -> Rows {
    Rows {
        deltas: (from..from + count)
            .map(|seq| DeltaRow {
                market: "KXW".to_owned(),
                ts: 1_780_000_000_000_000 + seq as i64,
                ts_received: 1_780_000_000_000_000 + seq as i64,
                conn: 1,
                sid: 1,
                seq,
                side: 1,
                price: 4200,
                delta: 100,
            })
            .collect(),
        ..Rows::default()
    }
}

/// `rows` with, for each delta, the frame it came in (as the collector archives it).
fn with_frames(mut rows: Rows) -> Rows {
    for delta in &rows.deltas {
        rows.raw_frames.push(
            delta.conn,
            delta.ts_received,
            delta.sid,
            delta.seq,
            &format!(
                r#"{{"type":"orderbook_delta","sid":1,"seq":{}}}"#,
                delta.seq
            ),
        );
    }
    rows
}

/// The `seq` of every archived frame, in the order they are read back.
async fn archived_seqs(client: &clickhouse::Client) -> Vec<u64> {
    frames_between(client, 0, i64::MAX, None)
        .await
        .expect("archived frames")
        .iter()
        .map(|f| f.seq)
        .collect()
}

/// (rows, distinct seqs) in `deltas`.
async fn counts(client: &clickhouse::Client) -> (u64, u64) {
    client
        .query("SELECT count(), uniqExact(seq) FROM deltas")
        .fetch_one::<(u64, u64)>()
        .await
        .expect("count deltas")
}

fn config(dir: &std::path::Path) -> WriterConfig {
    let mut config = WriterConfig::new(dir.to_owned());
    config.retry_initial = Duration::from_millis(20);
    config.retry_max = Duration::from_millis(200);
    config.shutdown_grace = Duration::from_millis(300);
    config
}

fn spool_dir(env: &TestEnv) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("{}_spool", env.name))
}

#[tokio::test]
async fn the_same_deduplication_token_inserts_once() {
    let env = TestEnv::migrated().await;
    let client = env.clickhouse();
    for _ in 0..2 {
        let mut insert = client
            .insert::<DeltaRow>("deltas")
            .await
            .unwrap()
            .with_setting("insert_deduplication_token", "batch-1-deltas");
        for row in &deltas(0, 100).deltas {
            insert.write(row).await.unwrap();
        }
        insert.end().await.unwrap();
    }
    assert_eq!(
        counts(&client).await,
        (100, 100),
        "a retried batch must not double"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn batches_land_once_in_order() {
    let env = TestEnv::migrated().await;
    let dir = spool_dir(&env);
    let shutdown = CancellationToken::new();
    let (writer, task) = Writer::start(env.clickhouse(), config(&dir), shutdown.clone()).unwrap();
    for batch in 0..20 {
        writer.submit(deltas(batch * 1_000, 1_000));
    }
    writer.flushed().await;
    assert_eq!(counts(&env.clickhouse()).await, (20_000, 20_000));
    assert_eq!(writer.status().inserted_rows, 20_000);
    shutdown.cancel();
    task.await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
    env.cleanup().await;
}

#[tokio::test]
async fn an_outage_loses_nothing_and_doubles_nothing() {
    let env = TestEnv::new().await;
    let mut clickhouse = PrivateClickHouse::start(&env.name).await;
    let mut env_config = env.config.clone();
    env_config.clickhouse.url = clickhouse.url();
    kalshibook::migrate::run(&env_config).await.unwrap();
    let client = kalshibook::clickhouse::client(&env_config.clickhouse);
    let dir = spool_dir(&env);
    let mut writer_config = config(&dir);
    // A tiny memory budget, so that the outage spills to disk.
    writer_config.max_memory_bytes = 50_000;
    let shutdown = CancellationToken::new();
    let (writer, task) = Writer::start(client.clone(), writer_config, shutdown.clone()).unwrap();

    writer.submit(with_frames(deltas(0, 1_000)));
    writer.flushed().await;
    clickhouse.stop().await;
    for batch in 1..10 {
        writer.submit(with_frames(deltas(batch * 1_000, 1_000)));
    }
    let status = writer.status();
    assert!(
        status.spooled_batches > 0,
        "over budget: spilled to disk {status:?}"
    );
    assert!(std::fs::read_dir(&dir).unwrap().count() > 0);

    clickhouse.resume().await;
    writer.flushed().await;
    assert_eq!(counts(&client).await, (10_000, 10_000));
    assert_eq!(
        archived_seqs(&client).await,
        (0..10_000).collect::<Vec<u64>>(),
        "every frame archived once, in order, through the spool"
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "spool drained");
    shutdown.cancel();
    task.await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
    env.cleanup().await;
}

#[tokio::test]
async fn a_spool_left_by_a_stopped_run_is_drained_by_the_next() {
    let env = TestEnv::new().await;
    let mut clickhouse = PrivateClickHouse::start(&env.name).await;
    let mut env_config = env.config.clone();
    env_config.clickhouse.url = clickhouse.url();
    kalshibook::migrate::run(&env_config).await.unwrap();
    let client = kalshibook::clickhouse::client(&env_config.clickhouse);
    let dir = spool_dir(&env);

    clickhouse.stop().await;
    let shutdown = CancellationToken::new();
    let (writer, task) = Writer::start(client.clone(), config(&dir), shutdown.clone()).unwrap();
    for batch in 0..5 {
        writer.submit(deltas(batch * 1_000, 1_000));
    }
    shutdown.cancel();
    task.await.unwrap();
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        5,
        "stopped with ClickHouse away: spooled"
    );

    clickhouse.resume().await;
    let shutdown = CancellationToken::new();
    let (writer, task) = Writer::start(client.clone(), config(&dir), shutdown.clone()).unwrap();
    writer.flushed().await;
    assert_eq!(counts(&client).await, (5_000, 5_000));
    shutdown.cancel();
    task.await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
    env.cleanup().await;
}

/// `bench ingest` checks what it measures: every delta of a round stored exactly once (its
/// sums equal the applied rows'), raw frames included. A small round, so that a change that
/// breaks the collector's path through the benchmark fails here, not at measuring time.
#[tokio::test]
async fn bench_ingest_stores_every_delta_once_with_raw_frames() {
    let env = TestEnv::migrated().await;
    let args = kalshibook::bench::IngestArgs {
        deltas: 20_000,
        markets: 20,
        rounds: 1,
        raw_frames: true,
    };
    kalshibook::bench::ingest(&env.config, &args)
        .await
        .expect("every delta applied and stored once");
}

/// Archived frames read back by time range and connection: blocks cut at the range's ends,
/// and frames earlier versions stored a row each (`raw_frames`) among them.
#[tokio::test]
async fn archived_frames_read_back_by_range_and_connection() {
    let env = TestEnv::migrated().await;
    let client = env.clickhouse();
    let dir = spool_dir(&env);
    let shutdown = CancellationToken::new();
    let (writer, task) = Writer::start(client.clone(), config(&dir), shutdown.clone()).unwrap();
    let mut rows = with_frames(deltas(0, 100));
    for delta in deltas(100, 10).deltas {
        rows.raw_frames
            .push(9, delta.ts_received, 4, delta.seq, "another connection");
    }
    writer.submit(rows);
    writer.flushed().await;
    let legacy = RawFrameRow {
        conn: 5,
        ts_received: 1_780_000_000_000_050,
        sid: 2,
        seq: 77,
        frame: "stored by an earlier version".to_owned(),
    };
    let mut insert = client.insert::<RawFrameRow>("raw_frames").await.unwrap();
    insert.write(&legacy).await.unwrap();
    insert.end().await.unwrap();

    let t = |seq: i64| 1_780_000_000_000_000 + seq;
    let range = frames_between(&client, t(40), t(105), None).await.unwrap();
    let conns: Vec<(u64, u64)> = range.iter().map(|f| (f.conn, f.seq)).collect();
    let mut expected: Vec<(u64, u64)> = (40..100).map(|seq| (1, seq)).collect();
    expected.push((5, 77));
    expected.extend((100..105).map(|seq| (9, seq)));
    assert_eq!(conns, expected);
    assert_eq!(range[60], legacy);
    assert_eq!(
        range[0].frame,
        r#"{"type":"orderbook_delta","sid":1,"seq":40}"#
    );
    let only = frames_between(&client, t(0), t(200), Some(9))
        .await
        .unwrap();
    assert_eq!(only.len(), 10);
    assert!(only.iter().all(|f| f.conn == 9 && f.sid == 4));
    shutdown.cancel();
    task.await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
    env.cleanup().await;
}
