//! Subscriptions as the exchange keeps them: channels, each subscription's market filter and
//! `seq`, and a connection's replies and error-25 handling.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::messages::{ErrorMsg, Frame};
use super::outbox::{OutFrame, Outbox};

/// A WebSocket channel a client can subscribe to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Channel {
    OrderbookDelta,
    Trade,
    Ticker,
    Lifecycle,
    /// A channel Kalshi has that the simulator accepts but never publishes on (private and
    /// index channels).
    Silent(&'static str),
}

/// Channel names of Kalshi's `subscribe` enum.
const SILENT_CHANNELS: [&str; 9] = [
    "fill",
    "market_positions",
    "multivariate_market_lifecycle",
    "communications",
    "order_group_updates",
    "user_orders",
    "cfbenchmarks_value",
    "cfbenchmarks_value_5hz",
    "pyth_value",
];

impl Channel {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "orderbook_delta" => Some(Self::OrderbookDelta),
            "trade" => Some(Self::Trade),
            "ticker" => Some(Self::Ticker),
            "market_lifecycle_v2" => Some(Self::Lifecycle),
            other => SILENT_CHANNELS
                .iter()
                .find(|known| **known == other)
                .map(|known| Self::Silent(known)),
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::OrderbookDelta => "orderbook_delta",
            Self::Trade => "trade",
            Self::Ticker => "ticker",
            Self::Lifecycle => "market_lifecycle_v2",
            Self::Silent(name) => name,
        }
    }

    /// Whether frames on this channel carry `seq` (ticker frames do not).
    pub const fn sequenced(self) -> bool {
        !matches!(self, Self::Ticker)
    }
}

/// One subscription of one connection.
pub(crate) struct Sub {
    pub channel: Channel,
    /// `None`: every market.
    pub markets: Option<BTreeSet<String>>,
    /// The last `seq` taken on this sid (0 before the first).
    pub seq: u64,
    pub skip_ticker_ack: bool,
    /// Overflowed during the current fan-out: publish nothing more, remove after.
    pub(crate) overflowed: bool,
}

impl Sub {
    pub fn new(channel: Channel, markets: Option<BTreeSet<String>>, skip_ticker_ack: bool) -> Self {
        Self {
            channel,
            markets,
            seq: 0,
            skip_ticker_ack,
            overflowed: false,
        }
    }

    pub fn wants(&self, ticker: &str) -> bool {
        self.markets
            .as_ref()
            .is_none_or(|markets| markets.contains(ticker))
    }

    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }
}

/// One WebSocket connection as the exchange sees it.
pub(crate) struct Conn {
    pub subs: BTreeMap<u64, Sub>,
    pub next_sid: u64,
    pub outbox: Arc<Outbox>,
    pub cancel: CancellationToken,
}

impl Conn {
    /// Queues a command reply; a connection whose queue is beyond its hard limit is closed.
    pub fn reply(&self, text: String) {
        if self.outbox.push_reply(OutFrame::text(text)).is_err() {
            tracing::info!("sim: connection not reading its replies; closing it");
            self.cancel.cancel();
        }
    }

    /// Queues an `error` frame.
    pub fn error(&self, id: Option<u64>, code: u32, message: &str, markets: Option<Vec<String>>) {
        self.reply(
            Frame {
                kind: "error",
                id,
                sid: None,
                seq: None,
                msg: Some(ErrorMsg {
                    code,
                    msg: message,
                    market_tickers: markets,
                }),
            }
            .to_text(),
        );
    }

    /// Removes the subscriptions that overflowed, telling the client with error 25.
    pub(crate) fn settle_overflows(&mut self) {
        let overflowed: Vec<u64> = self
            .subs
            .iter()
            .filter(|(_, sub)| sub.overflowed)
            .map(|(sid, _)| *sid)
            .collect();
        for sid in overflowed {
            let Some(sub) = self.subs.remove(&sid) else {
                continue;
            };
            tracing::info!(
                sid,
                channel = sub.channel.name(),
                "sim: subscription buffer overflow"
            );
            let text = Frame {
                kind: "error",
                id: None,
                sid: Some(sid),
                seq: sub.channel.sequenced().then_some(sub.seq + 1),
                msg: Some(ErrorMsg {
                    code: 25,
                    msg: "Subscription buffer overflow",
                    market_tickers: None,
                }),
            }
            .to_text();
            self.reply(text);
        }
    }
}
