//! The in-process live bus: the collector publishes every applied snapshot, delta and trade;
//! subscriptions read them.
//!
//! Built on `tokio::sync::broadcast`: publishing never waits. A reader that falls more than
//! the bus capacity behind gets `RecvError::Lagged` and must resynchronise (take a fresh
//! snapshot); it can never slow the collector down.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::market::{Book, Price, Side, Size};

/// Where an event sits in the feed: (collector connection, subscription, sequence number).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedPosition {
    pub conn: u64,
    pub sid: u32,
    pub seq: u64,
}

/// One thing that happened to a market's book or trades, as applied by the collector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LiveEvent {
    /// The whole book replaced (exchange snapshot). `resync` is true when it ends a gap.
    Snapshot {
        market: String,
        position: FeedPosition,
        /// Book-axis time, Unix µs.
        ts_us: i64,
        book: Arc<Book>,
        resync: bool,
    },
    /// One level changed by `delta`.
    Delta {
        market: String,
        position: FeedPosition,
        ts_us: i64,
        ts_received_us: i64,
        side: Side,
        price: Price,
        delta: Size,
    },
    /// A public trade.
    Trade {
        market: String,
        position: FeedPosition,
        ts_us: i64,
        trade_id: String,
        yes_price: Price,
        count: Size,
        taker_side: Side,
    },
    /// The feed of `market` has a gap from now until its next `Snapshot`.
    Gap { market: String, ts_us: i64 },
    /// A market lifecycle change (Kalshi's `event_type`, e.g. `settled`).
    MarketStatus {
        market: String,
        ts_us: i64,
        event_type: String,
    },
}

/// Cheap to clone; every clone publishes to the same subscribers.
#[derive(Clone, Debug)]
pub struct Bus {
    sender: broadcast::Sender<Arc<LiveEvent>>,
}

impl Bus {
    /// A bus that buffers up to `capacity` events for the slowest reader.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Self { sender }
    }

    /// Publishes without waiting; having no subscribers is fine.
    pub fn publish(&self, event: LiveEvent) {
        let _ = self.sender.send(Arc::new(event));
    }

    /// A new reader that sees every event published from now on.
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveEvent>> {
        self.sender.subscribe()
    }

    /// Current number of readers.
    #[must_use]
    pub fn subscribers(&self) -> usize {
        self.sender.receiver_count()
    }
}

impl Default for Bus {
    fn default() -> Self {
        Self::new(65_536)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slow_reader_lags_instead_of_blocking_the_publisher() {
        let bus = Bus::new(4);
        let mut slow = bus.subscribe();
        for i in 0..10 {
            bus.publish(LiveEvent::Gap {
                market: "M".into(),
                ts_us: i,
            });
        }
        assert!(matches!(
            slow.recv().await,
            Err(broadcast::error::RecvError::Lagged(6))
        ));
        let next = slow.recv().await.expect("newest events remain");
        assert_eq!(
            *next,
            LiveEvent::Gap {
                market: "M".into(),
                ts_us: 6
            }
        );
    }
}
