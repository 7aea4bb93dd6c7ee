//! Storage of the collector's rows: batched, idempotent inserts into ClickHouse, and no loss
//! when ClickHouse is away.
//!
//! Every batch gets an id; each table's insert carries `insert_deduplication_token =
//! "<id>-<table>"`, so a retried insert (the first may have landed before the error reached
//! us) is dropped by ClickHouse instead of doubled. Batches wait in memory up to a byte
//! budget; beyond it the oldest are written to the spool directory (one JSON file per batch,
//! written atomically) and inserted from there, oldest first, when ClickHouse answers again.
//! A spool left by a crashed run is drained first on start.

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use clickhouse::{Client, Row, RowWrite};
use serde::Serialize;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::processor::Rows;
use crate::clickhouse::rows::RawFrameBlockRow;

/// Tunables of the writer.
#[derive(Clone, Debug)]
pub struct WriterConfig {
    pub spool_dir: PathBuf,
    /// Batches held in memory while inserts fail, before spilling to disk.
    pub max_memory_bytes: usize,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// On shutdown, how long to keep trying to insert before spooling what is left.
    pub shutdown_grace: Duration,
}

impl WriterConfig {
    #[must_use]
    pub fn new(spool_dir: PathBuf) -> Self {
        Self {
            spool_dir,
            max_memory_bytes: 256 << 20,
            retry_initial: Duration::from_millis(200),
            retry_max: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error("spool directory {path}: {source}")]
    Spool {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A point-in-time view of the writer, for metrics, readiness and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriterStatus {
    pub queued_batches: usize,
    pub queued_bytes: usize,
    pub spooled_batches: usize,
    pub inserted_rows: u64,
    /// The last insert error, cleared by the next success.
    pub last_error: Option<String>,
}

struct Batch {
    id: u64,
    rows: Rows,
    /// `rows.raw_frames` compressed (the spool keeps the frames; this is made again from them).
    frame_blocks: Vec<RawFrameBlockRow>,
    bytes: usize,
}

#[derive(Default)]
struct Queue {
    memory: VecDeque<Batch>,
    memory_bytes: usize,
    spooled: BTreeSet<u64>,
    last_error: Option<String>,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Notify,
    drained: Notify,
    next_id: AtomicU64,
    inserted_rows: AtomicU64,
    config: WriterConfig,
}

/// Handle to submit rows; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    shared: Arc<Shared>,
}

impl Writer {
    /// Starts the insert task. Leftover spool files are queued first.
    ///
    /// # Errors
    /// [`WriterError`] when the spool directory cannot be created or read.
    pub fn start(
        client: Client,
        config: WriterConfig,
        shutdown: CancellationToken,
    ) -> Result<(Self, JoinHandle<()>), WriterError> {
        let spool_error = |source| WriterError::Spool {
            path: config.spool_dir.clone(),
            source,
        };
        std::fs::create_dir_all(&config.spool_dir).map_err(spool_error)?;
        let mut spooled = BTreeSet::new();
        for entry in std::fs::read_dir(&config.spool_dir).map_err(spool_error)? {
            let name = entry.map_err(spool_error)?.file_name();
            if let Some(id) = name.to_str().and_then(spool_id) {
                spooled.insert(id);
            }
        }
        if !spooled.is_empty() {
            tracing::info!(
                batches = spooled.len(),
                "draining the spool left by an earlier run"
            );
        }
        // Ids increase across runs, so new batches sort after any leftover ones.
        let first_id = spooled
            .last()
            .map_or(0, |last| last + 1)
            .max(now_micros().unsigned_abs() << 8);
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                spooled,
                ..Queue::default()
            }),
            wake: Notify::new(),
            drained: Notify::new(),
            next_id: AtomicU64::new(first_id),
            inserted_rows: AtomicU64::new(0),
            config,
        });
        let task = tokio::spawn(insert_loop(client, shared.clone(), shutdown));
        Ok((Self { shared }, task))
    }

    /// Queues rows for insertion. Never waits on ClickHouse.
    pub fn submit(&self, rows: Rows) {
        if rows.is_empty() {
            return;
        }
        let bytes = estimate_bytes(&rows);
        // Compressed here, on the submitter's thread, so that the insert task only inserts: it
        // is the collector's slowest stage, and this keeps the work off its path. It takes
        // about 0.25 µs a frame.
        let frame_blocks = rows.raw_frames.encode();
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let mut queue = lock(&self.shared.queue);
        queue.memory.push_back(Batch {
            id,
            rows,
            frame_blocks,
            bytes,
        });
        queue.memory_bytes += bytes;
        while queue.memory_bytes > self.shared.config.max_memory_bytes && queue.memory.len() > 1 {
            let oldest = queue.memory.pop_front().expect("len > 1");
            queue.memory_bytes -= oldest.bytes;
            spill(&self.shared.config.spool_dir, &mut queue, oldest);
        }
        metrics::gauge!("collector_queue_bytes").set(queue.memory_bytes as f64);
        drop(queue);
        self.shared.wake.notify_one();
    }

    #[must_use]
    pub fn status(&self) -> WriterStatus {
        let queue = lock(&self.shared.queue);
        WriterStatus {
            queued_batches: queue.memory.len(),
            queued_bytes: queue.memory_bytes,
            spooled_batches: queue.spooled.len(),
            inserted_rows: self.shared.inserted_rows.load(Ordering::Relaxed),
            last_error: queue.last_error.clone(),
        }
    }

    /// Waits until everything submitted so far is in ClickHouse.
    pub async fn flushed(&self) {
        loop {
            let drained = self.shared.drained.notified();
            {
                let queue = lock(&self.shared.queue);
                if queue.memory.is_empty() && queue.spooled.is_empty() {
                    return;
                }
            }
            drained.await;
        }
    }
}

fn lock(queue: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    // A panic while holding the lock cannot leave the queue half-updated in a way that
    // matters more than losing the whole collector; keep going with what is there.
    queue
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

fn spool_id(file_name: &str) -> Option<u64> {
    file_name.strip_suffix(".batch.json")?.parse().ok()
}

fn spool_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.batch.json"))
}

/// Writes `batch` to the spool; on failure keeps it in memory (over budget, but not lost).
fn spill(dir: &Path, queue: &mut Queue, batch: Batch) {
    let path = spool_path(dir, batch.id);
    let temporary = path.with_extension("tmp");
    let written = serde_json::to_vec(&batch.rows)
        .map_err(std::io::Error::other)
        .and_then(|bytes| {
            std::fs::write(&temporary, &bytes)?;
            std::fs::rename(&temporary, &path)?;
            metrics::counter!("collector_spool_bytes_written_total").increment(bytes.len() as u64);
            Ok(())
        });
    match written {
        Ok(()) => {
            queue.spooled.insert(batch.id);
        }
        Err(error) => {
            tracing::error!(%error, path = %path.display(), "cannot spool a batch; keeping it in memory");
            queue.memory_bytes += batch.bytes;
            queue.memory.push_front(batch);
        }
    }
}

/// Rough in-memory size, for the memory budget.
fn estimate_bytes(rows: &Rows) -> usize {
    rows.deltas
        .iter()
        .map(|r| 64 + r.market.len())
        .sum::<usize>()
        + rows
            .snapshots
            .iter()
            .map(|r| 96 + r.market.len() + 12 * (r.yes_prices.len() + r.no_prices.len()))
            .sum::<usize>()
        + rows
            .trades
            .iter()
            .map(|r| 96 + r.market.len() + r.trade_id.len())
            .sum::<usize>()
        + rows.raw_frames.bytes()
        + 128 * (rows.gaps.len() + rows.tops.len() + rows.markets.len())
}

enum Next {
    Memory(Box<Batch>),
    Spooled(u64),
}

/// Takes the oldest batch: spool ids are always older than what is still in memory.
fn next_batch(shared: &Shared) -> Option<Next> {
    let mut queue = lock(&shared.queue);
    let spooled = queue.spooled.first().copied();
    let memory = queue.memory.front().map(|b| b.id);
    match (spooled, memory) {
        (Some(s), Some(m)) if s < m => Some(Next::Spooled(s)),
        (Some(s), None) => Some(Next::Spooled(s)),
        (_, Some(_)) => {
            let batch = queue.memory.pop_front().expect("front exists");
            queue.memory_bytes -= batch.bytes;
            Some(Next::Memory(Box::new(batch)))
        }
        (None, None) => None,
    }
}

async fn insert_loop(client: Client, shared: Arc<Shared>, shutdown: CancellationToken) {
    let config = shared.config.clone();
    let mut shutdown_deadline: Option<Instant> = None;
    loop {
        let Some(next) = next_batch(&shared) else {
            shared.drained.notify_waiters();
            if shutdown_deadline.is_some() || shutdown.is_cancelled() {
                return;
            }
            tokio::select! {
                () = shared.wake.notified() => continue,
                () = shutdown.cancelled() => continue,
            }
        };
        let (id, rows, frame_blocks) = match next {
            Next::Memory(batch) => {
                let Batch {
                    id,
                    rows,
                    frame_blocks,
                    ..
                } = *batch;
                (id, rows, frame_blocks)
            }
            Next::Spooled(id) => match read_spooled(&config.spool_dir, id) {
                Ok(rows) => {
                    let frame_blocks = rows.raw_frames.encode();
                    (id, rows, frame_blocks)
                }
                Err(error) => {
                    tracing::error!(%error, id, "unreadable spool file; moved aside");
                    let path = spool_path(&config.spool_dir, id);
                    let _ = std::fs::rename(&path, path.with_extension("corrupt"));
                    lock(&shared.queue).spooled.remove(&id);
                    continue;
                }
            },
        };
        let mut delay = config.retry_initial;
        loop {
            match insert_batch(&client, id, &rows, &frame_blocks).await {
                Ok(count) => {
                    shared
                        .inserted_rows
                        .fetch_add(count as u64, Ordering::Relaxed);
                    let mut queue = lock(&shared.queue);
                    queue.last_error = None;
                    if queue.spooled.remove(&id) {
                        let _ = std::fs::remove_file(spool_path(&config.spool_dir, id));
                    }
                    break;
                }
                Err(error) => {
                    metrics::counter!("collector_insert_errors_total").increment(1);
                    tracing::warn!(%error, id, retry_in_ms = delay.as_millis(), "insert failed");
                    lock(&shared.queue).last_error = Some(error.to_string());
                    if shutdown.is_cancelled() {
                        let deadline = *shutdown_deadline
                            .get_or_insert_with(|| Instant::now() + config.shutdown_grace);
                        if Instant::now() >= deadline {
                            spool_everything(&shared, id, rows);
                            return;
                        }
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(config.retry_max);
                }
            }
        }
    }
}

/// Shutdown with ClickHouse away: everything still in memory goes to the spool.
fn spool_everything(shared: &Shared, current_id: u64, current: Rows) {
    let mut queue = lock(&shared.queue);
    if !queue.spooled.contains(&current_id) {
        let bytes = estimate_bytes(&current);
        spill(
            &shared.config.spool_dir,
            &mut queue,
            Batch {
                id: current_id,
                rows: current,
                frame_blocks: Vec::new(),
                bytes,
            },
        );
    }
    while let Some(batch) = queue.memory.pop_front() {
        queue.memory_bytes -= batch.bytes;
        spill(&shared.config.spool_dir, &mut queue, batch);
    }
    tracing::warn!(
        spooled = queue.spooled.len(),
        "stopped with ClickHouse unreachable; batches kept in the spool"
    );
}

fn read_spooled(dir: &Path, id: u64) -> std::io::Result<Rows> {
    let bytes = std::fs::read(spool_path(dir, id))?;
    serde_json::from_slice(&bytes).map_err(std::io::Error::other)
}

/// Inserts every table of one batch; returns the number of rows.
pub(crate) async fn insert_batch(
    client: &Client,
    id: u64,
    rows: &Rows,
    frame_blocks: &[RawFrameBlockRow],
) -> Result<usize, clickhouse::error::Error> {
    let started = Instant::now();
    // The market-data tables are independent inserts, each with its own deduplication token:
    // send them side by side, so a batch costs its largest insert rather than the sum. Gaps
    // and market metadata follow once those are stored, as before: a reader never sees a gap
    // closed before the snapshot that closes it. On any error the whole batch is retried and
    // the tables already stored drop the repeat.
    let data = tokio::try_join!(
        insert_table(client, id, "deltas", &rows.deltas),
        insert_table(client, id, "snapshots", &rows.snapshots),
        insert_table(client, id, "trades", &rows.trades),
        insert_table(client, id, "top_of_book", &rows.tops),
        insert_table(client, id, "raw_frame_blocks", frame_blocks),
    )?;
    // Frames count one each, not one per block.
    let frames = if data.4 > 0 { rows.raw_frames.len() } else { 0 };
    let mut count = data.0 + data.1 + data.2 + data.3 + frames;
    count += insert_table(client, id, "feed_gaps", &rows.gaps).await?;
    count += insert_table(client, id, "markets", &rows.markets).await?;
    metrics::histogram!("collector_insert_seconds").record(started.elapsed().as_secs_f64());
    metrics::histogram!("collector_insert_batch_rows").record(count as f64);
    Ok(count)
}

async fn insert_table<T>(
    client: &Client,
    id: u64,
    table: &str,
    rows: &[T],
) -> Result<usize, clickhouse::error::Error>
where
    T: Row + RowWrite + Serialize,
    for<'a> T: Row<Value<'a> = T>,
{
    if rows.is_empty() {
        return Ok(0);
    }
    let mut insert = client
        .insert::<T>(table)
        .await?
        .with_setting("insert_deduplication_token", format!("{id}-{table}"));
    for row in rows {
        insert.write(row).await?;
    }
    insert.end().await?;
    metrics::counter!("collector_rows_inserted_total", "table" => table.to_owned())
        .increment(rows.len() as u64);
    Ok(rows.len())
}
