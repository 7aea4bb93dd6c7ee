-- Raw exchange frames move from one row each (raw_frames) to one compressed block per insert
-- batch. A frame is ~220 bytes of JSON beside a ~40-byte delta row: stored row by row, the
-- frames were four fifths of the bytes ClickHouse received, sorted, compressed and merged, and
-- held the collector to ~335,000 deltas/s against ~800,000 without them (bench ingest
-- --raw-frames). Compressed by the collector (LZ4), a batch of frames is a few hundred kB.
--
-- `data` is LZ4 block data (little-endian u32 uncompressed size, then the block); once
-- decompressed, `frames` records of: ts_received i64 µs, sid u32, seq u64, length u32, then
-- that many bytes of frame text (format 1; see src/collector/frame_log.rs, and
-- `kalshibook raw-frames` to read them back). raw_frames keeps what earlier versions stored.
CREATE TABLE IF NOT EXISTS raw_frame_blocks
(
    conn           UInt64,
    first_received DateTime64(6, 'UTC'),
    last_received  DateTime64(6, 'UTC'),
    frames         UInt32,
    format         UInt8,
    data           String CODEC(ZSTD(1))
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(first_received)
ORDER BY (conn, first_received)
SETTINGS non_replicated_deduplication_window = 10000;
