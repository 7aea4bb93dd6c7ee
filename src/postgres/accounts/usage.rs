//! Usage counters: summed in memory per key × operation × minute and upserted in batches,
//! so a request costs a hash-map update, not a write; read back for `me { usage }`.
//!
//! Nothing recorded is lost on a clean shutdown: the flusher's last act is a final flush
//! (retried until its deadline), and a failed flush puts its counts back to be retried with
//! the next one. What can still be lost is what a crash (or SIGKILL) finds in memory, at most
//! one flush interval's worth; a flush whose COMMIT was sent but not acknowledged may be
//! counted twice. These are counters for charts: the ledger, written synchronously with each
//! charge, is the record that billing relies on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{AccountStore, AccountsError, tenant};
use crate::accounts::{Credits, Operation, Principal, cost};

/// Rows per upsert statement.
const BATCH_ROWS: usize = 5_000;

/// The longest range one usage query may cover.
pub const MAX_USAGE_RANGE: Duration = Duration::from_secs(400 * 24 * 3600);
/// The longest range that may be bucketed by minute (10,080 points).
const MAX_MINUTE_RANGE: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct BucketKey {
    account_id: Uuid,
    bucket_start: i64,
    key_id: Uuid,
    operation: Operation,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    requests: u64,
    credits: u64,
}

impl Counts {
    const fn add(&mut self, other: Self) {
        self.requests = self.requests.saturating_add(other.requests);
        self.credits = self.credits.saturating_add(other.credits);
    }
}

#[derive(Default)]
struct Pending {
    /// Minute buckets, keyed by their UTC-aligned start (Unix seconds).
    minutes: HashMap<BucketKey, Counts>,
    /// Latest use of each key, for `api_keys.last_used_at`.
    last_used: HashMap<Uuid, OffsetDateTime>,
}

impl Pending {
    fn merge(&mut self, other: Self) {
        for (key, counts) in other.minutes {
            self.minutes.entry(key).or_default().add(counts);
        }
        for (key, at) in other.last_used {
            let latest = self.last_used.entry(key).or_insert(at);
            *latest = (*latest).max(at);
        }
    }
}

struct Inner {
    pool: deadpool_postgres::Pool,
    pending: Mutex<Pending>,
    /// One flush at a time, so two flushes never upsert the same rows concurrently.
    flushing: tokio::sync::Mutex<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let pending = self.pending.get_mut().map_or(0, |p| p.minutes.len());
        if pending > 0 {
            tracing::error!(
                buckets = pending,
                "usage recorder dropped with unflushed counts: they are lost \
                 (stop it with UsageFlusher::shutdown or cancel its token and await it)"
            );
        }
    }
}

/// The in-memory usage aggregator. Cheap to clone; every clone records into the same counts.
#[derive(Clone)]
pub struct UsageRecorder {
    inner: Arc<Inner>,
}

/// The background task that flushes a [`UsageRecorder`] periodically and once more at
/// shutdown.
pub struct UsageFlusher {
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl UsageFlusher {
    /// Stops the flusher after a last flush and waits for it. Record nothing afterwards.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        if let Err(error) = self.task.await {
            tracing::error!(%error, "usage flusher failed");
        }
    }
}

impl UsageRecorder {
    #[must_use]
    pub fn new(pool: deadpool_postgres::Pool) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool,
                pending: Mutex::new(Pending::default()),
                flushing: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Starts flushing every `interval` until `shutdown` is cancelled, then flushes what is
    /// left, retrying failures for up to `final_deadline`.
    #[must_use]
    pub fn spawn_flusher(
        &self,
        interval: Duration,
        final_deadline: Duration,
        shutdown: CancellationToken,
    ) -> UsageFlusher {
        let recorder = self.clone();
        let token = shutdown.clone();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                tokio::select! {
                    () = token.cancelled() => break,
                    _ = ticker.tick() => {
                        if let Err(error) = recorder.flush().await {
                            tracing::warn!(%error, "usage flush failed; counts kept for the next one");
                        }
                    }
                }
            }
            recorder.final_flush(final_deadline).await;
        });
        UsageFlusher { shutdown, task }
    }

    async fn final_flush(&self, deadline: Duration) {
        let until = tokio::time::Instant::now() + deadline;
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.flush().await {
                Ok(_) => return,
                Err(error) if tokio::time::Instant::now() + backoff < until => {
                    tracing::warn!(%error, "final usage flush failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(error) => {
                    tracing::error!(
                        %error,
                        buckets = self.pending_buckets(),
                        "final usage flush failed: these counts are lost"
                    );
                    return;
                }
            }
        }
    }

    /// Counts one request of `principal` made of `operations` at `at`: one request and the
    /// summed credits per distinct operation.
    pub fn record(&self, principal: &Principal, operations: &[Operation], at: OffsetDateTime) {
        let minute = at.unix_timestamp().div_euclid(60) * 60;
        let mut per_op: Vec<(Operation, u64)> = Vec::with_capacity(operations.len());
        for &op in operations {
            match per_op.iter_mut().find(|(seen, _)| *seen == op) {
                Some((_, credits)) => *credits += cost(op).get(),
                None => per_op.push((op, cost(op).get())),
            }
        }
        let mut pending = self.lock();
        for (operation, credits) in per_op {
            let key = BucketKey {
                account_id: principal.account_id,
                bucket_start: minute,
                key_id: principal.key_id,
                operation,
            };
            pending.minutes.entry(key).or_default().add(Counts {
                requests: 1,
                credits,
            });
        }
        let latest = pending.last_used.entry(principal.key_id).or_insert(at);
        *latest = (*latest).max(at);
    }

    /// Minute buckets waiting to be written.
    #[must_use]
    pub fn pending_buckets(&self) -> usize {
        self.lock().minutes.len()
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding this lock cannot leave the maps half-updated in a way that
        // matters for counters; keep recording.
        self.inner
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes every pending count (minute and hour rows) and key last-use time in one
    /// transaction, as the owning role (it spans accounts). On failure the counts are put
    /// back, to be written by the next flush. Returns the minute buckets written.
    ///
    /// # Errors
    /// A database error; nothing was written and nothing is lost.
    pub async fn flush(&self) -> Result<usize, AccountsError> {
        let _one_at_a_time = self.inner.flushing.lock().await;
        let taken = std::mem::take(&mut *self.lock());
        if taken.minutes.is_empty() {
            return Ok(0);
        }
        let written = taken.minutes.len();
        match write(&self.inner.pool, &taken).await {
            Ok(()) => Ok(written),
            Err(error) => {
                self.lock().merge(taken);
                Err(error)
            }
        }
    }
}

async fn write(pool: &deadpool_postgres::Pool, pending: &Pending) -> Result<(), AccountsError> {
    let mut rows: Vec<(i32, BucketKey, Counts)> = Vec::with_capacity(pending.minutes.len() * 2);
    let mut hours: HashMap<BucketKey, Counts> = HashMap::new();
    for (key, counts) in &pending.minutes {
        rows.push((60, *key, *counts));
        let hour = BucketKey {
            bucket_start: key.bucket_start.div_euclid(3600) * 3600,
            ..*key
        };
        hours.entry(hour).or_default().add(*counts);
    }
    rows.extend(hours.into_iter().map(|(key, counts)| (3600, key, counts)));
    // The primary key's order, so concurrent flushers (other replicas) lock rows in the same
    // order and cannot deadlock.
    rows.sort_unstable_by_key(|(secs, key, _)| {
        (
            key.account_id,
            *secs,
            key.bucket_start,
            key.key_id,
            key.operation.as_str(),
        )
    });

    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let upsert = tx
        .prepare_cached(
            "INSERT INTO usage AS u \
                 (account_id, api_key_id, operation, bucket_secs, bucket_start, requests, credits) \
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::int4[], \
                                  $5::timestamptz[], $6::int8[], $7::int8[]) \
             ON CONFLICT (account_id, bucket_secs, bucket_start, api_key_id, operation) \
             DO UPDATE SET requests = u.requests + excluded.requests, \
                           credits = u.credits + excluded.credits",
        )
        .await?;
    for batch in rows.chunks(BATCH_ROWS) {
        let mut accounts = Vec::with_capacity(batch.len());
        let mut keys = Vec::with_capacity(batch.len());
        let mut operations = Vec::with_capacity(batch.len());
        let mut secs = Vec::with_capacity(batch.len());
        let mut starts = Vec::with_capacity(batch.len());
        let mut requests = Vec::with_capacity(batch.len());
        let mut credits = Vec::with_capacity(batch.len());
        for (bucket_secs, key, counts) in batch {
            accounts.push(key.account_id);
            keys.push(key.key_id);
            operations.push(key.operation.as_str());
            secs.push(*bucket_secs);
            starts.push(
                OffsetDateTime::from_unix_timestamp(key.bucket_start)
                    .map_err(AccountsError::internal)?,
            );
            requests.push(Credits::new(counts.requests).to_i64());
            credits.push(Credits::new(counts.credits).to_i64());
        }
        tx.execute(
            &upsert,
            &[
                &accounts,
                &keys,
                &operations,
                &secs,
                &starts,
                &requests,
                &credits,
            ],
        )
        .await?;
    }
    let mut used: Vec<(Uuid, OffsetDateTime)> =
        pending.last_used.iter().map(|(k, t)| (*k, *t)).collect();
    used.sort_unstable();
    let (ids, ats): (Vec<Uuid>, Vec<OffsetDateTime>) = used.into_iter().unzip();
    tx.execute(
        "UPDATE api_keys k SET last_used_at = greatest(k.last_used_at, v.at) \
         FROM unnest($1::uuid[], $2::timestamptz[]) AS v (id, at) WHERE k.id = v.id",
        &[&ids, &ats],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// How usage rows are bucketed in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsageBucket {
    Minute,
    Hour,
    Day,
}

impl UsageBucket {
    const fn date_trunc_field(self) -> &'static str {
        match self {
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day",
        }
    }
}

/// A usage question: `[from, to)`, optionally bucketed in time, optionally split by key
/// and/or operation. Days and hours are UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsageQuery {
    pub from: OffsetDateTime,
    pub to: OffsetDateTime,
    pub bucket: Option<UsageBucket>,
    pub by_key: bool,
    pub by_operation: bool,
}

/// One line of a usage answer; a field is `None` when the query did not group by it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageRow {
    pub bucket_start: Option<OffsetDateTime>,
    pub key_id: Option<Uuid>,
    pub operation: Option<String>,
    pub requests: u64,
    pub credits: Credits,
}

impl AccountStore {
    /// The account's usage (in its tenant transaction). Reads hour rows when the range is
    /// hour-aligned and the bucket is not a minute, minute rows otherwise. Counts still in a
    /// recorder's memory (up to one flush interval) are not included.
    ///
    /// # Errors
    /// [`AccountsError::InvalidInput`] for an empty or reversed range, one longer than
    /// [`MAX_USAGE_RANGE`], or minute buckets over more than 7 days; or a database error.
    pub async fn usage(
        &self,
        account_id: Uuid,
        query: &UsageQuery,
    ) -> Result<Vec<UsageRow>, AccountsError> {
        let span = query.to - query.from;
        if span <= time::Duration::ZERO || span > MAX_USAGE_RANGE {
            return Err(AccountsError::InvalidInput(
                "a usage range needs `from` before `to`, at most 400 days apart".to_owned(),
            ));
        }
        if query.bucket == Some(UsageBucket::Minute) && span > MAX_MINUTE_RANGE {
            return Err(AccountsError::InvalidInput(
                "usage by minute covers at most 7 days; bucket by hour or day".to_owned(),
            ));
        }
        let hour_aligned = |at: OffsetDateTime| at.unix_timestamp().rem_euclid(3600) == 0;
        let bucket_secs: i32 = if query.bucket != Some(UsageBucket::Minute)
            && hour_aligned(query.from)
            && hour_aligned(query.to)
        {
            3600
        } else {
            60
        };
        let mut client = self.client().await?;
        let tx = tenant(&mut client, account_id).await?;
        let statement = tx
            .prepare_cached(
                "SELECT CASE WHEN $5::text IS NOT NULL \
                             THEN date_trunc($5::text, bucket_start, 'UTC') END AS bucket, \
                        CASE WHEN $6 THEN api_key_id END AS key_id, \
                        CASE WHEN $7 THEN operation END AS operation, \
                        sum(requests)::int8 AS requests, sum(credits)::int8 AS credits \
                 FROM usage \
                 WHERE account_id = $1 AND bucket_secs = $2 \
                   AND bucket_start >= $3 AND bucket_start < $4 \
                 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
            )
            .await?;
        let rows = tx
            .query(
                &statement,
                &[
                    &account_id,
                    &bucket_secs,
                    &query.from,
                    &query.to,
                    &query.bucket.map(UsageBucket::date_trunc_field),
                    &query.by_key,
                    &query.by_operation,
                ],
            )
            .await?;
        tx.commit().await?;
        Ok(rows
            .iter()
            .map(|row| UsageRow {
                bucket_start: row.get("bucket"),
                key_id: row.get("key_id"),
                operation: row.get("operation"),
                requests: u64::try_from(row.get::<_, i64>("requests")).unwrap_or(0),
                credits: Credits::from_i64(row.get("credits")),
            })
            .collect())
    }
}
