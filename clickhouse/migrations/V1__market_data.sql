-- Market data at rest. Units everywhere (see src/market):
--   price : UInt32, in $0.0001 (Kalshi quotes up to 4 decimals; 10000 = $1)
--   size  : Int64,  in 0.01 contracts (Kalshi sizes carry 2 decimals; fractional contracts exist)
--   ts    : DateTime64(6, 'UTC'), the book's time axis (exchange time; see `deltas.ts`)
-- Every statement is idempotent (IF NOT EXISTS) because ClickHouse has no transactional DDL:
-- a migration interrupted half-way is finished by simply running it again.

-- One row per `orderbook_delta`. Ordered for "one market over a time range" reads, the only
-- access path the API needs. (ts, conn, seq) is the total order of a market's book events:
-- `ts` alone ties (Kalshi stamps in milliseconds), `seq` restarts on every connection, and
-- `conn` (the collector's connection id, increasing over time) orders connections.
CREATE TABLE IF NOT EXISTS deltas
(
    market       LowCardinality(String),
    -- exchange time (Kalshi's ts_ms), made non-decreasing per market by the collector
    ts           DateTime64(6, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    ts_received  DateTime64(6, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    conn         UInt64 CODEC(Delta, ZSTD(1)),
    sid          UInt32 CODEC(T64, ZSTD(1)),
    seq          UInt64 CODEC(Delta, ZSTD(1)),
    side         Enum8('yes' = 1, 'no' = 2),
    price        UInt32 CODEC(T64, ZSTD(1)),
    delta        Int64 CODEC(T64, ZSTD(1))
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (market, ts, conn, seq)
-- A retried batch carries the same insert_deduplication_token and is dropped, not doubled.
SETTINGS non_replicated_deduplication_window = 10000;

-- Full books: exchange snapshots (`orderbook_snapshot`) and the collector's own periodic
-- checkpoints of its in-memory book. One row per book, levels as parallel arrays, so that
-- "latest snapshot <= T" is one row and the work to answer a book query stays bounded.
CREATE TABLE IF NOT EXISTS snapshots
(
    market       LowCardinality(String),
    ts           DateTime64(6, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    ts_received  DateTime64(6, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    conn         UInt64 CODEC(Delta, ZSTD(1)),
    sid          UInt32,
    -- the sequence number of the last message reflected in this book
    seq          UInt64,
    source       Enum8('exchange' = 1, 'checkpoint' = 2),
    yes_prices   Array(UInt32) CODEC(ZSTD(3)),
    yes_sizes    Array(Int64) CODEC(ZSTD(3)),
    no_prices    Array(UInt32) CODEC(ZSTD(3)),
    no_sizes     Array(Int64) CODEC(ZSTD(3))
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (market, ts, conn, seq)
SETTINGS non_replicated_deduplication_window = 10000;

-- Public trades (`trade` channel). Replacing on trade_id: a trade seen twice (retry,
-- reconnect overlap) is one trade.
CREATE TABLE IF NOT EXISTS trades
(
    market       LowCardinality(String),
    ts           DateTime64(6, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    ts_received  DateTime64(6, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    -- Kalshi sends UUIDs; kept as text so an unexpected form is stored, not rejected
    trade_id     String,
    yes_price    UInt32 CODEC(T64, ZSTD(1)),
    count        Int64 CODEC(T64, ZSTD(1)),
    taker_side   Enum8('yes' = 1, 'no' = 2),
    is_block     Bool,
    conn         UInt64 CODEC(Delta, ZSTD(1)),
    sid          UInt32,
    seq          UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (market, ts, trade_id)
SETTINGS non_replicated_deduplication_window = 10000;

-- Market metadata from REST discovery and the lifecycle channel; newest version wins.
CREATE TABLE IF NOT EXISTS markets
(
    ticker                 String,
    event_ticker           LowCardinality(String),
    series_ticker          LowCardinality(String),
    title                  String,
    subtitle               String,
    status                 LowCardinality(String),
    open_time              Nullable(DateTime64(6, 'UTC')),
    close_time             Nullable(DateTime64(6, 'UTC')),
    -- e.g. 'linear_cent', 'tapered_deci_cent'; price_ranges is Kalshi's JSON list of {start,end,step}
    price_level_structure  LowCardinality(String),
    price_ranges           String,
    updated_at             DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY ticker;

-- Every detected discontinuity of a market's feed. A gap is written when detected (ts_end
-- NULL) and again when the recovering snapshot arrives; the newest version wins, so an
-- unrecovered gap stays visible as open-ended. [ts_start, ts_end) is the span in which the
-- stored book may differ from the exchange's. `market` is '' for a gap of a whole channel
-- (a lost `trade` frame cannot be attributed to a market).
CREATE TABLE IF NOT EXISTS feed_gaps
(
    market        LowCardinality(String),
    gap_id        UInt64,
    channel       LowCardinality(String),
    kind          Enum8('sequence_gap' = 1, 'reconnect' = 2, 'negative_size' = 3,
                        'subscription_error' = 4, 'collector_restart' = 5,
                        'malformed_frame' = 6, 'book_replaced' = 7),
    conn          UInt64,
    sid           UInt32,
    expected_seq  UInt64,
    received_seq  UInt64,
    ts_start      DateTime64(6, 'UTC'),
    ts_end        Nullable(DateTime64(6, 'UTC')),
    detail        String,
    version       UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(ts_start)
ORDER BY (market, ts_start, gap_id);

-- Every exchange text frame as received, so that every derived table can be rebuilt and
-- audited after a parser fix. Stored for audit, not for queries: heavy compression.
CREATE TABLE IF NOT EXISTS raw_frames
(
    conn         UInt64 CODEC(Delta, ZSTD(1)),
    ts_received  DateTime64(6, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    sid          UInt32 CODEC(T64, ZSTD(1)),
    seq          UInt64 CODEC(Delta, ZSTD(1)),
    frame        String CODEC(ZSTD(6))
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts_received)
ORDER BY (conn, ts_received, seq)
SETTINGS non_replicated_deduplication_window = 10000;
