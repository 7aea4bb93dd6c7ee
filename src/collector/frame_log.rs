//! The raw frame archive: every exchange frame exactly as received, stored as one compressed
//! block per insert batch and connection (`raw_frame_blocks`).
//!
//! Row by row, the frames were most of the bytes ClickHouse had to receive, sort, compress and
//! merge; as LZ4 blocks made here they are a small fraction of them (see the V5 migration).
//!
//! Format 1, once the LZ4 block (size-prepended) is decompressed: for each frame, in order,
//! `ts_received` (i64 µs), `sid` (u32), `seq` (u64), the text's length (u32), all
//! little-endian, then the text.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::clickhouse::rows::{RawFrameBlockRow, RawFrameRow};

pub const FORMAT: u8 = 1;

/// Bytes of a record before its text.
const HEADER_BYTES: usize = 8 + 4 + 8 + 4;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameLogError {
    #[error("block format {0} is not known to this version (it reads format {FORMAT})")]
    UnknownFormat(u8),
    #[error("block does not decompress: {0}")]
    Corrupt(String),
    #[error("block holds {found} frames, its row says {expected}")]
    FrameCount { expected: u32, found: u32 },
}

/// Frames as they arrive, already laid out as format-1 records in one buffer: keeping a
/// frame is one copy of its text, not an allocation, and a block is the buffer compressed.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct FrameLog {
    /// Format-1 records, in arrival order (base64 in the spool's JSON).
    #[serde(serialize_with = "to_base64", deserialize_with = "from_base64")]
    records: Vec<u8>,
    /// The frames of each connection in turn.
    runs: Vec<Run>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Run {
    conn: u64,
    /// Where its records end in `records`.
    end: usize,
    frames: u32,
    first_received: i64,
    last_received: i64,
}

impl FrameLog {
    /// An empty log with room for `bytes` of records.
    #[must_use]
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            records: Vec::with_capacity(bytes),
            runs: Vec::new(),
        }
    }

    /// Keeps `text`, received at `ts_received` (µs) on connection `conn` as `seq` of `sid`.
    /// A frame of 4 GiB or more (which no WebSocket reader here accepts) is left out.
    pub fn push(&mut self, conn: u64, ts_received: i64, sid: u32, seq: u64, text: &str) {
        let Ok(length) = u32::try_from(text.len()) else {
            tracing::error!(bytes = text.len(), "frame too long to archive");
            return;
        };
        self.records.reserve(HEADER_BYTES + text.len());
        self.records.extend_from_slice(&ts_received.to_le_bytes());
        self.records.extend_from_slice(&sid.to_le_bytes());
        self.records.extend_from_slice(&seq.to_le_bytes());
        self.records.extend_from_slice(&length.to_le_bytes());
        self.records.extend_from_slice(text.as_bytes());
        let end = self.records.len();
        match self.runs.last_mut() {
            Some(run) if run.conn == conn && run.frames < u32::MAX => {
                run.end = end;
                run.frames += 1;
                run.last_received = ts_received;
            }
            _ => self.runs.push(Run {
                conn,
                end,
                frames: 1,
                first_received: ts_received,
                last_received: ts_received,
            }),
        }
    }

    /// Frames kept.
    #[must_use]
    pub fn len(&self) -> usize {
        self.runs.iter().map(|run| run.frames as usize).sum()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Bytes held.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.records.len()
    }

    /// The blocks to store: one per run of frames of one connection.
    #[must_use]
    pub fn encode(&self) -> Vec<RawFrameBlockRow> {
        let mut start = 0;
        self.runs
            .iter()
            .map(|run| {
                let records = &self.records[start..run.end];
                start = run.end;
                RawFrameBlockRow {
                    conn: run.conn,
                    first_received: run.first_received,
                    last_received: run.last_received,
                    frames: run.frames,
                    format: FORMAT,
                    data: lz4_flex::block::compress_prepend_size(records),
                }
            })
            .collect()
    }
}

fn to_base64<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&STANDARD.encode(bytes))
}

fn from_base64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    let text = String::deserialize(deserializer)?;
    STANDARD.decode(text).map_err(serde::de::Error::custom)
}

/// The frames of `block`, in arrival order.
///
/// # Errors
/// [`FrameLogError`] for an unknown format, a block that does not decompress or parse, or
/// one holding another number of frames than its row says.
pub fn decode(block: &RawFrameBlockRow) -> Result<Vec<RawFrameRow>, FrameLogError> {
    if block.format != FORMAT {
        return Err(FrameLogError::UnknownFormat(block.format));
    }
    let plain = decompress(&block.data)?;
    let mut frames = Vec::with_capacity(block.frames as usize);
    let mut rest = plain.as_slice();
    while !rest.is_empty() {
        let truncated = || FrameLogError::Corrupt("a record runs past the block's end".into());
        let (header, after) = rest.split_at_checked(HEADER_BYTES).ok_or_else(truncated)?;
        let field = |at: usize, len: usize| &header[at..at + len];
        let length = u32::from_le_bytes(field(20, 4).try_into().expect("4 bytes")) as usize;
        let (text, after) = after.split_at_checked(length).ok_or_else(truncated)?;
        let frame = String::from_utf8(text.to_vec())
            .map_err(|_| FrameLogError::Corrupt("a frame is not UTF-8 text".into()))?;
        frames.push(RawFrameRow {
            conn: block.conn,
            ts_received: i64::from_le_bytes(field(0, 8).try_into().expect("8 bytes")),
            sid: u32::from_le_bytes(field(8, 4).try_into().expect("4 bytes")),
            seq: u64::from_le_bytes(field(12, 8).try_into().expect("8 bytes")),
            frame,
        });
        rest = after;
    }
    let found = u32::try_from(frames.len()).unwrap_or(u32::MAX);
    if found != block.frames {
        return Err(FrameLogError::FrameCount {
            expected: block.frames,
            found,
        });
    }
    Ok(frames)
}

/// The size-prepended LZ4 block `data`, whose stated size is checked against what LZ4 can
/// expand to before anything is allocated for it.
fn decompress(data: &[u8]) -> Result<Vec<u8>, FrameLogError> {
    let corrupt = |what: &str| FrameLogError::Corrupt(what.to_owned());
    let (size, compressed) = data
        .split_first_chunk::<4>()
        .ok_or_else(|| corrupt("no size"))?;
    let size = u32::from_le_bytes(*size) as usize;
    // LZ4 expands a byte to at most 255.
    if size > compressed.len().saturating_mul(255) {
        return Err(corrupt("a stated size LZ4 cannot reach"));
    }
    lz4_flex::block::decompress(compressed, size).map_err(|error| corrupt(&error.to_string()))
}

/// The archived frames received in `[from_us, to_us)` (Unix µs), of connection `conn` or of
/// all, by connection and then in arrival order; frames that earlier versions stored a row
/// each (`raw_frames`) included.
///
/// # Errors
/// When ClickHouse fails, or a block does not decode.
pub async fn frames_between(
    client: &clickhouse::Client,
    from_us: i64,
    to_us: i64,
    conn: Option<u64>,
) -> anyhow::Result<Vec<RawFrameRow>> {
    let conn_filter = if conn.is_some() { "AND conn = ?" } else { "" };
    let mut blocks = client
        .query(&format!(
            "SELECT ?fields FROM raw_frame_blocks \
             WHERE last_received >= fromUnixTimestamp64Micro(?) \
               AND first_received < fromUnixTimestamp64Micro(?) {conn_filter} \
             ORDER BY conn, first_received"
        ))
        .bind(from_us)
        .bind(to_us);
    let mut rows = client
        .query(&format!(
            "SELECT ?fields FROM raw_frames \
             WHERE ts_received >= fromUnixTimestamp64Micro(?) \
               AND ts_received < fromUnixTimestamp64Micro(?) {conn_filter} \
             ORDER BY conn, ts_received, seq"
        ))
        .bind(from_us)
        .bind(to_us);
    if let Some(conn) = conn {
        blocks = blocks.bind(conn);
        rows = rows.bind(conn);
    }
    let mut frames = rows.fetch_all::<RawFrameRow>().await?;
    for block in blocks.fetch_all::<RawFrameBlockRow>().await? {
        frames.extend(
            decode(&block)?
                .into_iter()
                .filter(|f| (from_us..to_us).contains(&f.ts_received)),
        );
    }
    // Stable: a connection's frames keep their arrival order.
    frames.sort_by_key(|f| f.conn);
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(conn: u64, seq: u64, text: &str) -> RawFrameRow {
        RawFrameRow {
            conn,
            ts_received: 1_780_000_000_000_000 + seq as i64,
            sid: 3,
            seq,
            frame: text.to_owned(),
        }
    }

    fn encode(frames: &[RawFrameRow]) -> Vec<RawFrameBlockRow> {
        let mut log = FrameLog::default();
        for f in frames {
            log.push(f.conn, f.ts_received, f.sid, f.seq, &f.frame);
        }
        assert_eq!(log.len(), frames.len());
        log.encode()
    }

    #[test]
    fn frames_come_back_exactly_one_block_per_connection() {
        let frames = vec![
            frame(
                1,
                1,
                r#"{"type":"orderbook_snapshot","sid":3,"seq":1,"msg":{}}"#,
            ),
            frame(1, 2, "not json at all, \n with a newline and ünïcödé"),
            frame(1, 0, ""),
            frame(2, 1, r#"{"type":"orderbook_delta","sid":3,"seq":1}"#),
        ];
        let blocks = encode(&frames);
        assert_eq!(blocks.len(), 2);
        assert_eq!((blocks[0].conn, blocks[0].frames), (1, 3));
        assert_eq!(blocks[0].first_received, frames[0].ts_received);
        assert_eq!(blocks[0].last_received, frames[2].ts_received);
        assert_eq!((blocks[1].conn, blocks[1].frames), (2, 1));
        let back: Vec<RawFrameRow> = blocks.iter().flat_map(|b| decode(b).unwrap()).collect();
        assert_eq!(back, frames);
        assert!(encode(&[]).is_empty());
    }

    #[test]
    fn a_log_survives_the_spools_json() {
        let mut log = FrameLog::default();
        log.push(1, 10, 3, 1, r#"{"type":"ok","sid":3,"seq":1}"#);
        log.push(2, 11, 0, 0, "garbage\u{0}\n");
        let json = serde_json::to_string(&log).unwrap();
        let back: FrameLog = serde_json::from_str(&json).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back.encode(), log.encode());
        assert!(
            serde_json::from_str::<FrameLog>(r#"{"records":"not base64!","runs":[]}"#).is_err()
        );
    }

    #[test]
    fn repetitive_frames_compress_several_times() {
        let frames: Vec<RawFrameRow> = (0..2_000)
            .map(|seq| {
                frame(
                    1,
                    seq,
                    &format!(
                        r#"{{"type":"orderbook_delta","sid":3,"seq":{seq},"msg":{{"market_ticker":"KXTEST-{}","price_dollars":"0.{:04}","delta_fp":"-{}.00","side":"yes","ts_ms":{}}}}}"#,
                        seq % 20,
                        seq % 9_999,
                        seq % 97,
                        1_780_000_000_000 + seq
                    ),
                )
            })
            .collect();
        let plain: usize = frames.iter().map(|f| f.frame.len()).sum();
        let block = &encode(&frames)[0];
        assert!(
            block.data.len() * 3 < plain,
            "{} of {plain}",
            block.data.len()
        );
    }

    #[test]
    fn damaged_blocks_are_errors_never_panics() {
        let frames = vec![frame(1, 1, "abc"), frame(1, 2, "defgh")];
        let good = encode(&frames).remove(0);
        let unknown = RawFrameBlockRow {
            format: 9,
            ..good.clone()
        };
        assert_eq!(decode(&unknown), Err(FrameLogError::UnknownFormat(9)));
        let miscounted = RawFrameBlockRow {
            frames: 3,
            ..good.clone()
        };
        assert_eq!(
            decode(&miscounted),
            Err(FrameLogError::FrameCount {
                expected: 3,
                found: 2
            })
        );
        // Every truncation and every single-byte change either decodes or is an error.
        for cut in 0..good.data.len() {
            let truncated = RawFrameBlockRow {
                data: good.data[..cut].to_vec(),
                ..good.clone()
            };
            assert!(decode(&truncated).is_err(), "cut at {cut}");
        }
        for at in 0..good.data.len() {
            let mut data = good.data.clone();
            data[at] ^= 0x5a;
            let _ = decode(&RawFrameBlockRow {
                data,
                ..good.clone()
            });
        }
    }
}
