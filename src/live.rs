//! The in-process live bus: the collector publishes every applied snapshot, delta and trade;
//! subscriptions read them.
//!
//! Built on `tokio::sync::broadcast`: publishing never waits. A reader that falls more than
//! its channel's capacity behind gets `RecvError::Lagged` and must resynchronise (take a fresh
//! snapshot) or give up; it can never slow the collector down.
//!
//! Besides the firehose ([`Bus::subscribe`]) the bus keeps, per market, the book as of the
//! last published event and a channel that exists only while someone listens to that market
//! ([`Bus::subscribe_market`]). Publishing and subscribing to a market take the same lock, so
//! the book a subscriber starts from and the first event it receives are adjacent: nothing is
//! lost or repeated between them. That is what the GraphQL subscriptions build on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast;

use crate::market::{Book, Price, Side, Size};

/// Events one market's subscriber may fall behind by before it is cut off (`Lagged`): the
/// bounded per-subscriber queue. Memory is one slot per event shared by every subscriber of
/// the market, allocated only for markets somebody listens to.
pub const MARKET_QUEUE: usize = 4096;

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

impl LiveEvent {
    /// The market the event is about.
    #[must_use]
    pub fn market(&self) -> &str {
        match self {
            Self::Snapshot { market, .. }
            | Self::Delta { market, .. }
            | Self::Trade { market, .. }
            | Self::Gap { market, .. }
            | Self::MarketStatus { market, .. } => market,
        }
    }
}

/// What the bus knows of one market.
#[derive(Debug, Default)]
struct MarketState {
    /// The book after the last published snapshot and deltas; `None` while unknown (before
    /// the first snapshot, or between a gap and its re-snapshot).
    book: Option<Book>,
    /// Position of the last published book event (snapshot or delta).
    position: Option<FeedPosition>,
    /// Book-axis time of that event, Unix µs.
    ts_us: i64,
    /// Present while the market has subscribers.
    channel: Option<broadcast::Sender<Arc<LiveEvent>>>,
}

/// A subscription to one market, taken atomically with the market's state: `receiver` gets
/// exactly the events published after `book` / `position`.
#[derive(Debug)]
pub struct MarketFeed {
    pub market: String,
    pub receiver: broadcast::Receiver<Arc<LiveEvent>>,
    /// The book as of the subscription; `None` when unknown (see [`LiveEvent::Gap`]).
    pub book: Option<Book>,
    /// The last book event published before the subscription; `None` when this process has
    /// published none for the market.
    pub position: Option<FeedPosition>,
    /// Book-axis time of that event, Unix µs (0 when `position` is `None`).
    pub ts_us: i64,
}

/// Cheap to clone; every clone publishes to the same subscribers.
#[derive(Clone, Debug)]
pub struct Bus {
    sender: broadcast::Sender<Arc<LiveEvent>>,
    markets: Arc<Mutex<HashMap<String, MarketState>>>,
    market_queue: usize,
}

impl Bus {
    /// A bus that buffers up to `capacity` events for the slowest firehose reader and
    /// [`MARKET_QUEUE`] per market.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self::with_market_queue(capacity, MARKET_QUEUE)
    }

    /// As [`Bus::new`] with `market_queue` events per market subscriber (tests use a small
    /// one to provoke slow consumers).
    #[must_use]
    pub fn with_market_queue(capacity: usize, market_queue: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Self {
            sender,
            markets: Arc::default(),
            market_queue: market_queue.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, MarketState>> {
        // The state is updated in small steps that leave it consistent; a panic elsewhere
        // while holding the lock must not stop the collector from publishing.
        self.markets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Publishes without waiting; having no subscribers is fine.
    pub fn publish(&self, event: LiveEvent) {
        let event = Arc::new(event);
        {
            let mut markets = self.lock();
            // Look up before inserting: the ticker is allocated once per market, not per event.
            if !markets.contains_key(event.market()) {
                markets.insert(event.market().to_owned(), MarketState::default());
            }
            let Some(state) = markets.get_mut(event.market()) else {
                return;
            };
            match &*event {
                LiveEvent::Snapshot {
                    position,
                    ts_us,
                    book,
                    ..
                } => {
                    state.book = Some((**book).clone());
                    state.position = Some(*position);
                    state.ts_us = *ts_us;
                }
                LiveEvent::Delta {
                    position,
                    ts_us,
                    side,
                    price,
                    delta,
                    ..
                } => {
                    // The collector applied it to the same book; failing here would mean the
                    // two disagree, and then the book is unknown rather than wrong.
                    if let Some(book) = &mut state.book
                        && book.apply_delta(*side, *price, *delta).is_err()
                    {
                        state.book = None;
                    }
                    state.position = Some(*position);
                    state.ts_us = *ts_us;
                }
                LiveEvent::Gap { .. } => state.book = None,
                LiveEvent::Trade { .. } | LiveEvent::MarketStatus { .. } => {}
            }
            if let Some(channel) = &state.channel
                && channel.send(event.clone()).is_err()
            {
                // Every subscriber left: free the queue.
                state.channel = None;
            }
        }
        let _ = self.sender.send(event);
    }

    /// Subscribes to `market`'s events and returns, atomically, its book as of now.
    #[must_use]
    pub fn subscribe_market(&self, market: &str) -> MarketFeed {
        let mut markets = self.lock();
        let state = markets.entry(market.to_owned()).or_default();
        let receiver = match &state.channel {
            Some(channel) => channel.subscribe(),
            None => {
                let (channel, receiver) = broadcast::channel(self.market_queue);
                state.channel = Some(channel);
                receiver
            }
        };
        MarketFeed {
            market: market.to_owned(),
            receiver,
            book: state.book.clone(),
            position: state.position,
            ts_us: state.ts_us,
        }
    }

    /// Readers of `market`'s own channel (its live subscriptions).
    #[must_use]
    pub fn market_subscribers(&self, market: &str) -> usize {
        self.lock()
            .get(market)
            .and_then(|s| s.channel.as_ref())
            .map_or(0, broadcast::Sender::receiver_count)
    }

    /// Whether this process has published anything about `market`.
    #[must_use]
    pub fn knows(&self, market: &str) -> bool {
        self.lock()
            .get(market)
            .is_some_and(|s| s.position.is_some() || s.book.is_some())
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

    fn delta(seq: u64, price: u32, size: i64) -> LiveEvent {
        LiveEvent::Delta {
            market: "M".into(),
            position: FeedPosition {
                conn: 1,
                sid: 1,
                seq,
            },
            ts_us: i64::try_from(seq).unwrap(),
            ts_received_us: 0,
            side: Side::Yes,
            price: Price::from_units(price),
            delta: Size::from_units(size),
        }
    }

    #[tokio::test]
    async fn a_market_subscriber_starts_from_the_book_just_before_its_first_event() {
        let bus = Bus::new(16);
        bus.publish(LiveEvent::Snapshot {
            market: "M".into(),
            position: FeedPosition {
                conn: 1,
                sid: 1,
                seq: 1,
            },
            ts_us: 1,
            book: Arc::new(Book::default()),
            resync: false,
        });
        bus.publish(delta(2, 100, 5));
        let mut feed = bus.subscribe_market("M");
        assert_eq!(feed.position.map(|p| p.seq), Some(2));
        let book = feed.book.clone().expect("book known");
        assert_eq!(
            book.best_bid(Side::Yes),
            Some((Price::from_units(100), Size::from_units(5)))
        );
        bus.publish(delta(3, 100, -5));
        bus.publish(LiveEvent::Gap {
            market: "M".into(),
            ts_us: 4,
        });
        let first = feed.receiver.recv().await.unwrap();
        assert_eq!(*first, delta(3, 100, -5));
        assert!(
            bus.subscribe_market("M").book.is_none(),
            "a gap makes the book unknown"
        );
    }

    #[tokio::test]
    async fn a_market_channel_is_dropped_when_its_last_subscriber_leaves() {
        let bus = Bus::new(16);
        let feed = bus.subscribe_market("M");
        drop(feed);
        bus.publish(delta(1, 100, 5));
        assert!(bus.lock().get("M").unwrap().channel.is_none());
    }
}
