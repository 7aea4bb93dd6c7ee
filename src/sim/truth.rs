//! Ground truth: every change of every simulated market, in the order the exchange made it,
//! kept in memory for [`super::SimHandle::book_at`] and optionally written as JSONL.
//!
//! # The truth file (JSONL, one object per line)
//!
//! Every line has `change` (the exchange-wide change counter, from 0, increasing by one per
//! change across all markets), `ts_ms` (the exchange timestamp of the change, Unix ms, never
//! decreasing), `market` (ticker) and `kind`:
//!
//! | `kind` | extra fields | meaning |
//! |---|---|---|
//! | `snapshot` | `yes`, `no`: `[[price, size], …]` ascending | the market's book is replaced: its initial book at start, or empty when it is created later |
//! | `delta` | `side` (`yes`/`no`), `price` (`"0.4300"`), `delta` (`"-100.00"`) | the resting size at that level changed by `delta` |
//! | `clear` | — | the market closed: its book is empty from now on |
//! | `checkpoint` | `yes`, `no` | not a change: the book after change `change`, every 1000 changes of a market, so a reader may start from any checkpoint |
//!
//! Prices are dollar strings with 4 decimals, sizes contract strings with 2, as on the wire.
//! The book at instant T is the replay of the market's lines with `ts_ms ≤ T`.

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::market::{Book, Price, Side, Size};

/// Keep an in-memory checkpoint every this many changes of a market.
const MEMORY_CHECKPOINT_EVERY: usize = 256;
/// Write a `checkpoint` line every this many changes of a market.
const FILE_CHECKPOINT_EVERY: usize = 1000;

/// The book of a market after one of its changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TruthCheckpoint {
    pub market: String,
    /// Exchange time of the change, Unix ms.
    pub ts_ms: i64,
    /// Exchange-wide index of the change.
    pub change: u64,
    pub book: Book,
}

enum Change {
    Delta {
        side: Side,
        price: Price,
        delta: Size,
    },
    Reset(Box<Book>),
}

struct Entry {
    ts_ms: i64,
    change: u64,
    what: Change,
}

#[derive(Default)]
struct History {
    entries: Vec<Entry>,
    /// (index into `entries`, book after that entry).
    checkpoints: Vec<(usize, Book)>,
    current: Book,
}

impl History {
    fn push(&mut self, entry: Entry) {
        match &entry.what {
            Change::Delta { side, price, delta } => {
                // The exchange only records deltas it applied to the same book.
                let _ = self.current.apply_delta(*side, *price, *delta);
            }
            Change::Reset(book) => self.current = (**book).clone(),
        }
        let reset = matches!(entry.what, Change::Reset(_));
        self.entries.push(entry);
        let index = self.entries.len() - 1;
        if reset || index.is_multiple_of(MEMORY_CHECKPOINT_EVERY) {
            self.checkpoints.push((index, self.current.clone()));
        }
    }

    /// The book after the first `count` entries.
    fn replay(&self, count: usize) -> Book {
        let Some(last) = count.checked_sub(1) else {
            return Book::default();
        };
        let start = self
            .checkpoints
            .partition_point(|(index, _)| *index <= last);
        let (mut next, mut book) = match start.checked_sub(1).map(|i| &self.checkpoints[i]) {
            Some((index, book)) => (index + 1, book.clone()),
            None => (0, Book::default()),
        };
        while next < count {
            apply(&mut book, &self.entries[next].what);
            next += 1;
        }
        book
    }
}

fn apply(book: &mut Book, change: &Change) {
    match change {
        Change::Delta { side, price, delta } => {
            let _ = book.apply_delta(*side, *price, *delta);
        }
        Change::Reset(reset) => *book = (**reset).clone(),
    }
}

#[derive(Serialize)]
struct Line<'a> {
    change: u64,
    ts_ms: i64,
    market: &'a str,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    side: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    price: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    yes: Option<Vec<[String; 2]>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    no: Option<Vec<[String; 2]>>,
}

fn ladder(book: &Book, side: Side) -> Vec<[String; 2]> {
    book.ladder(side)
        .iter()
        .map(|(p, s)| [p.to_string(), s.to_string()])
        .collect()
}

/// Every market's history, and the truth file's writer if there is one.
#[derive(Default)]
pub(crate) struct Truth {
    markets: HashMap<String, History>,
    file: Option<mpsc::UnboundedSender<String>>,
}

impl Truth {
    /// Truth that is also written to `path` (created or truncated) by a task that flushes
    /// whenever it has caught up and finishes when `shutdown` is cancelled.
    ///
    /// # Errors
    /// The file cannot be created.
    pub fn with_file(
        path: &Path,
        shutdown: CancellationToken,
        tracker: &tokio_util::task::TaskTracker,
    ) -> std::io::Result<Self> {
        let file = std::fs::File::create(path)?;
        let (sender, receiver) = mpsc::unbounded_channel();
        tracker.spawn(write_lines(
            tokio::fs::File::from_std(file),
            receiver,
            shutdown,
        ));
        Ok(Self {
            markets: HashMap::new(),
            file: Some(sender),
        })
    }

    fn write(&self, line: &Line<'_>) {
        if let Some(file) = &self.file
            && let Ok(mut text) = serde_json::to_string(line)
        {
            text.push('\n');
            let _ = file.send(text);
        }
    }

    /// Replaces a market's book (its initial book, or an empty one).
    pub fn snapshot(&mut self, market: &str, ts_ms: i64, change: u64, book: &Book) {
        self.write(&Line {
            change,
            ts_ms,
            market,
            kind: "snapshot",
            side: None,
            price: None,
            delta: None,
            yes: Some(ladder(book, Side::Yes)),
            no: Some(ladder(book, Side::No)),
        });
        self.record(market, ts_ms, change, Change::Reset(Box::new(book.clone())));
    }

    /// Empties a market's book at its close.
    pub fn clear(&mut self, market: &str, ts_ms: i64, change: u64) {
        self.write(&Line {
            change,
            ts_ms,
            market,
            kind: "clear",
            side: None,
            price: None,
            delta: None,
            yes: None,
            no: None,
        });
        self.record(market, ts_ms, change, Change::Reset(Box::default()));
    }

    /// One level change.
    pub fn delta(
        &mut self,
        market: &str,
        ts_ms: i64,
        change: u64,
        side: Side,
        price: Price,
        delta: Size,
    ) {
        self.write(&Line {
            change,
            ts_ms,
            market,
            kind: "delta",
            side: Some(side.as_str()),
            price: Some(price.to_string()),
            delta: Some(delta.to_string()),
            yes: None,
            no: None,
        });
        self.record(market, ts_ms, change, Change::Delta { side, price, delta });
    }

    fn record(&mut self, market: &str, ts_ms: i64, change: u64, what: Change) {
        let history = self.markets.entry(market.to_owned()).or_default();
        history.push(Entry {
            ts_ms,
            change,
            what,
        });
        let count = history.entries.len();
        if self.file.is_some() && count.is_multiple_of(FILE_CHECKPOINT_EVERY) {
            let book = history.current.clone();
            self.write(&Line {
                change,
                ts_ms,
                market,
                kind: "checkpoint",
                side: None,
                price: None,
                delta: None,
                yes: Some(ladder(&book, Side::Yes)),
                no: Some(ladder(&book, Side::No)),
            });
        }
    }

    /// The book after every change with `ts_ms ≤ at_ms`; `None` before the market existed.
    pub fn book_at(&self, market: &str, at_ms: i64) -> Option<Book> {
        let history = self.markets.get(market)?;
        let count = history
            .entries
            .partition_point(|entry| entry.ts_ms <= at_ms);
        (count > 0).then(|| history.replay(count))
    }

    /// The book after each change of a market.
    pub fn history(&self, market: &str) -> Vec<(i64, u64, Book)> {
        let Some(history) = self.markets.get(market) else {
            return Vec::new();
        };
        let mut book = Book::default();
        history
            .entries
            .iter()
            .map(|entry| {
                apply(&mut book, &entry.what);
                (entry.ts_ms, entry.change, book.clone())
            })
            .collect()
    }

    /// The current book of every market with its last change.
    pub fn current(&self) -> Vec<TruthCheckpoint> {
        let mut all: Vec<TruthCheckpoint> = self
            .markets
            .iter()
            .filter_map(|(market, history)| {
                let last = history.entries.last()?;
                Some(TruthCheckpoint {
                    market: market.clone(),
                    ts_ms: last.ts_ms,
                    change: last.change,
                    book: history.current.clone(),
                })
            })
            .collect();
        all.sort_by(|a, b| a.market.cmp(&b.market));
        all
    }

    /// The current book of one market.
    pub fn current_book(&self, market: &str) -> Option<&Book> {
        self.markets.get(market).map(|history| &history.current)
    }
}

/// Writes truth lines until shutdown, flushing whenever the queue is empty.
async fn write_lines(
    file: tokio::fs::File,
    mut lines: mpsc::UnboundedReceiver<String>,
    shutdown: CancellationToken,
) {
    let mut file = tokio::io::BufWriter::new(file);
    loop {
        let line = tokio::select! {
            line = lines.recv() => line,
            () = shutdown.cancelled() => None,
        };
        let Some(line) = line else { break };
        if let Err(error) = file.write_all(line.as_bytes()).await {
            tracing::error!(%error, "sim: cannot write the truth file");
            return;
        }
        if lines.is_empty()
            && let Err(error) = file.flush().await
        {
            tracing::error!(%error, "sim: cannot flush the truth file");
            return;
        }
    }
    // Whatever was recorded before shutdown still goes to the file.
    while let Ok(line) = lines.try_recv() {
        if file.write_all(line.as_bytes()).await.is_err() {
            return;
        }
    }
    let _ = file.flush().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(units: u32) -> Price {
        Price::from_units(units)
    }
    fn s(units: i64) -> Size {
        Size::from_units(units)
    }

    #[test]
    fn book_at_replays_changes_up_to_the_instant() {
        let mut truth = Truth::default();
        let initial = Book::from_levels([(Side::Yes, p(4000), s(1000))]);
        truth.snapshot("M", 100, 0, &initial);
        let mut expected = vec![(100, initial.clone())];
        let mut book = initial;
        for i in 0..1000u32 {
            let ts = 101 + i64::from(i / 3); // three changes share each millisecond
            book.apply_delta(Side::No, p(5000 - (i % 7) * 100), s(10))
                .unwrap();
            truth.delta(
                "M",
                ts,
                u64::from(i) + 1,
                Side::No,
                p(5000 - (i % 7) * 100),
                s(10),
            );
            if i % 3 == 2 {
                expected.push((ts, book.clone()));
            }
        }
        assert_eq!(truth.book_at("M", 99), None);
        for (ts, book) in &expected {
            assert_eq!(truth.book_at("M", *ts).as_ref(), Some(book), "at {ts}");
        }
        truth.clear("M", 10_000, 1001);
        assert_eq!(truth.book_at("M", 10_000), Some(Book::default()));
        assert_eq!(truth.book_at("M", 9_999).as_ref(), Some(&book));
        assert_eq!(truth.history("M").len(), 1002);
        assert_eq!(truth.current()[0].change, 1001);
    }
}
