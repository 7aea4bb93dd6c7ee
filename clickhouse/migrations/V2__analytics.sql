-- Pre-aggregated analytics, so analytical queries read minutes, not raw rows.

-- One-minute trade candles. Coarser intervals are rolled up from these at query time.
-- argMin/argMax by ts give open/close; states merge correctly across parts and inserts.
CREATE TABLE IF NOT EXISTS trade_candles_1m
(
    market     LowCardinality(String),
    bucket     DateTime('UTC'),
    open       AggregateFunction(argMin, UInt32, DateTime64(6, 'UTC')),
    high       SimpleAggregateFunction(max, UInt32),
    low        SimpleAggregateFunction(min, UInt32),
    close      AggregateFunction(argMax, UInt32, DateTime64(6, 'UTC')),
    volume     SimpleAggregateFunction(sum, Int64),
    trades     SimpleAggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (market, bucket);

CREATE MATERIALIZED VIEW IF NOT EXISTS trade_candles_1m_mv TO trade_candles_1m AS
SELECT
    market,
    toStartOfMinute(ts) AS bucket,
    argMinState(yes_price, ts) AS open,
    max(yes_price) AS high,
    min(yes_price) AS low,
    argMaxState(yes_price, ts) AS close,
    sum(count) AS volume,
    toUInt64(count()) AS trades
FROM trades
GROUP BY market, bucket;

-- Top of book, written by the collector whenever a market's best bids change. Deltas alone
-- cannot feed a view of the best price (that needs the whole book), the collector has it.
CREATE TABLE IF NOT EXISTS top_of_book
(
    market        LowCardinality(String),
    ts            DateTime64(6, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    conn          UInt64 CODEC(Delta, ZSTD(1)),
    seq           UInt64 CODEC(Delta, ZSTD(1)),
    -- 0 when that side is empty
    best_yes_bid  UInt32 CODEC(T64, ZSTD(1)),
    yes_bid_size  Int64 CODEC(T64, ZSTD(1)),
    best_no_bid   UInt32 CODEC(T64, ZSTD(1)),
    no_bid_size   Int64 CODEC(T64, ZSTD(1))
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (market, ts, conn, seq)
SETTINGS non_replicated_deduplication_window = 10000;

-- One-minute candles of the midpoint ((best yes bid + yes ask) / 2, in $0.0001 x 2 to stay
-- integral: mid2 = best_yes_bid + 10000 - best_no_bid) and of the spread, over two-sided books.
CREATE TABLE IF NOT EXISTS quote_candles_1m
(
    market       LowCardinality(String),
    bucket       DateTime('UTC'),
    mid2_open    AggregateFunction(argMin, UInt32, DateTime64(6, 'UTC')),
    mid2_high    SimpleAggregateFunction(max, UInt32),
    mid2_low     SimpleAggregateFunction(min, UInt32),
    mid2_close   AggregateFunction(argMax, UInt32, DateTime64(6, 'UTC')),
    spread_min   SimpleAggregateFunction(min, Int32),
    spread_max   SimpleAggregateFunction(max, Int32),
    spread_sum   SimpleAggregateFunction(sum, Int64),
    updates      SimpleAggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (market, bucket);

CREATE MATERIALIZED VIEW IF NOT EXISTS quote_candles_1m_mv TO quote_candles_1m AS
SELECT
    market,
    toStartOfMinute(ts) AS bucket,
    argMinState(toUInt32(best_yes_bid + 10000 - best_no_bid), ts) AS mid2_open,
    max(toUInt32(best_yes_bid + 10000 - best_no_bid)) AS mid2_high,
    min(toUInt32(best_yes_bid + 10000 - best_no_bid)) AS mid2_low,
    argMaxState(toUInt32(best_yes_bid + 10000 - best_no_bid), ts) AS mid2_close,
    min(toInt32(10000 - best_no_bid) - toInt32(best_yes_bid)) AS spread_min,
    max(toInt32(10000 - best_no_bid) - toInt32(best_yes_bid)) AS spread_max,
    sum(toInt64(toInt32(10000 - best_no_bid) - toInt32(best_yes_bid))) AS spread_sum,
    toUInt64(count()) AS updates
FROM top_of_book
WHERE best_yes_bid > 0 AND best_no_bid > 0
GROUP BY market, bucket;
