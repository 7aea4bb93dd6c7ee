//! Every bound the API enforces, in one place, so the errors, the `limits` query field and
//! the documentation name the same numbers.

use std::time::Duration;

/// Levels per side returned by `orderbook` / `bookSnapshots` unless `depth` says otherwise.
pub const DEFAULT_BOOK_DEPTH: i32 = 10;
/// The most levels per side a book may return (a $0.001-tick market has at most 1000).
pub const MAX_BOOK_DEPTH: i32 = 1000;

/// Rows per page of `deltas`, `trades` and `markets` unless `first` says otherwise.
pub const DEFAULT_PAGE_SIZE: i32 = 100;
/// The most rows one page may hold.
pub const MAX_PAGE_SIZE: i32 = 1000;

/// The longest `[from, to)` of `deltas` and `trades` (page through longer spans in pieces).
pub const MAX_EVENTS_RANGE: Duration = Duration::from_secs(31 * 24 * 3600);
/// The longest `[from, to)` of `feedGaps` and `coverage`.
pub const MAX_GAPS_RANGE: Duration = Duration::from_secs(366 * 24 * 3600);
/// The most instants one `bookSnapshots` call may ask for.
pub const MAX_SNAPSHOT_INSTANTS: i64 = 1000;
/// The longest span of `bookSnapshots` (from the first to the last instant).
pub const MAX_SNAPSHOTS_RANGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// The most candles one `candles` call may return.
pub const MAX_CANDLES: i64 = 1000;
/// The longest candle: one week.
pub const MAX_CANDLE_MINUTES: i32 = 7 * 24 * 60;
/// The most gaps one `feedGaps` call returns.
pub const MAX_GAPS: i32 = 1000;

/// ClickHouse's `max_execution_time` on every query the API runs.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Nesting of selection sets a query may have.
pub const MAX_DEPTH: usize = 8;
/// Total cost of a query (each field costs 1 unless listed below).
pub const MAX_COMPLEXITY: usize = 1000;
/// Cost of one `orderbook` field (so at most 20 books per request).
pub const COST_ORDERBOOK: usize = 50;
/// Cost of one `bookSnapshots` field.
pub const COST_BOOK_SNAPSHOTS: usize = 200;
/// Cost of one page of `deltas` or `trades`.
pub const COST_EVENTS_PAGE: usize = 50;
/// Cost of one `candles` field.
pub const COST_CANDLES: usize = 50;
/// Cost of one page of `markets`, of `market`, `feedGaps` or `coverage`.
pub const COST_MARKETS: usize = 20;

/// The largest query text accepted, bytes.
pub const MAX_QUERY_BYTES: usize = 32 * 1024;
/// The largest request body accepted on POST /graphql, bytes (query and variables).
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// The deepest nesting of brackets (`{`, `[`, `(`) in a query text, checked before parsing.
pub const MAX_BRACKET_NESTING: usize = 32;

/// The longest market ticker accepted.
pub const MAX_TICKER_CHARS: usize = 64;
/// The longest `search` text of `markets`.
pub const MAX_SEARCH_CHARS: usize = 100;

/// The most markets one `deltas`, `trades` or `marketStatus` subscription may name.
pub const MAX_LIVE_TICKERS: usize = 100;
/// How far back a replay-then-live subscription (`from`) may start.
pub const MAX_REPLAY: Duration = Duration::from_secs(24 * 3600);
