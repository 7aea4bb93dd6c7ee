//! Kalshi's WebSocket wire format as the simulator writes and reads it: serde types of its own
//! (deliberately not shared with the collector's parser), field names and optionality as in
//! `kalshi-asyncapi.yaml` and the recorded frames.

use serde::{Deserialize, Serialize};

/// The envelope of every server frame: `type`, then `id` (command replies), `sid`, `seq`
/// (sequenced frames) and `msg`, each left out when absent.
#[derive(Serialize)]
pub(crate) struct Frame<'a, M> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub msg: Option<M>,
}

impl<M: Serialize> Frame<'_, M> {
    /// The frame as JSON text.
    pub fn to_text(&self) -> String {
        // Serializing these plain structs cannot fail (string keys, no maps with other keys).
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A [price, size] level: `["0.4300", "100.00"]`.
pub(crate) type Level = [String; 2];

#[derive(Serialize)]
pub(crate) struct SubscribedMsg<'a> {
    pub channel: &'a str,
    pub sid: u64,
}

/// `ok` reply to `update_subscription` add/delete: the full market list after the update,
/// or nothing with `skip_ticker_ack`.
#[derive(Serialize)]
pub(crate) struct OkMarketsMsg {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub market_tickers: Option<Vec<String>>,
}

#[derive(Serialize)]
pub(crate) struct SubscriptionEntry<'a> {
    pub channel: &'a str,
    pub sid: u64,
}

#[derive(Serialize)]
pub(crate) struct ErrorMsg<'a> {
    pub code: u32,
    pub msg: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub market_tickers: Option<Vec<String>>,
}

/// `orderbook_snapshot`: a side's key is absent when the side has no bids.
#[derive(Serialize)]
pub(crate) struct SnapshotMsg<'a> {
    pub market_ticker: &'a str,
    pub market_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub yes_dollars_fp: Option<Vec<Level>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_dollars_fp: Option<Vec<Level>>,
}

#[derive(Serialize)]
pub(crate) struct DeltaMsg<'a> {
    pub market_ticker: &'a str,
    pub market_id: &'a str,
    pub price_dollars: String,
    pub delta_fp: String,
    pub side: &'static str,
    pub ts: String,
    pub ts_ms: i64,
}

#[derive(Serialize)]
pub(crate) struct TradeMsg<'a> {
    pub trade_id: String,
    pub market_ticker: &'a str,
    pub yes_price_dollars: String,
    pub no_price_dollars: String,
    pub count_fp: String,
    pub taker_side: &'static str,
    pub taker_outcome_side: &'static str,
    pub taker_book_side: &'static str,
    pub is_block_trade: bool,
    /// Unix seconds (deprecated by Kalshi, still sent).
    pub ts: i64,
    pub ts_ms: i64,
}

#[derive(Serialize)]
pub(crate) struct TickerMsg<'a> {
    pub market_id: &'a str,
    pub market_ticker: &'a str,
    pub price_dollars: String,
    pub yes_bid_dollars: String,
    pub yes_ask_dollars: String,
    pub volume_fp: String,
    pub open_interest_fp: String,
    pub dollar_volume: i64,
    pub dollar_open_interest: i64,
    pub yes_bid_size_fp: String,
    pub yes_ask_size_fp: String,
    pub last_trade_size_fp: String,
    /// Unix seconds (deprecated by Kalshi, still sent).
    pub ts: i64,
    pub ts_ms: i64,
    /// RFC 3339 (deprecated by Kalshi, still sent).
    pub time: String,
}

#[derive(Clone, Serialize)]
pub(crate) struct PriceRangeMsg {
    pub start: String,
    pub end: String,
    pub step: String,
}

#[derive(Serialize)]
pub(crate) struct AdditionalMetadata {
    pub name: String,
    pub title: String,
    pub yes_sub_title: String,
    pub no_sub_title: String,
    pub rules_primary: String,
    pub rules_secondary: String,
    pub can_close_early: bool,
    pub event_ticker: String,
    pub expected_expiration_ts: i64,
    pub strike_type: &'static str,
    pub floor_strike: i64,
}

/// `market_lifecycle_v2`: which optional keys appear depends on `event_type`. Timestamps are
/// Unix seconds.
#[derive(Default, Serialize)]
pub(crate) struct LifecycleMsg {
    pub market_ticker: String,
    pub event_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exchange_index: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_ts: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close_ts: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub determination_ts: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settled_ts: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settlement_value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_deactivated: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub additional_metadata: Option<AdditionalMetadata>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price_level_structure: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price_ranges: Option<Vec<PriceRangeMsg>>,
}

/// `event_lifecycle` (same channel as `market_lifecycle_v2`): an event was created.
#[derive(Serialize)]
pub(crate) struct EventLifecycleMsg {
    pub event_ticker: String,
    pub exchange_index: u32,
    pub title: String,
    pub subtitle: String,
    pub collateral_return_type: &'static str,
    pub series_ticker: String,
}

/// A client command: `{"id": 1, "cmd": "subscribe", "params": {...}}`.
#[derive(Deserialize)]
pub(crate) struct Command {
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(default)]
    pub cmd: Option<String>,
    #[serde(default)]
    pub params: Option<serde_json::Value>,
}

#[derive(Default, Deserialize)]
pub(crate) struct SubscribeParams {
    #[serde(default)]
    pub channels: Option<Vec<String>>,
    #[serde(default)]
    pub market_ticker: Option<String>,
    #[serde(default)]
    pub market_tickers: Option<Vec<String>>,
    #[serde(default)]
    pub market_id: Option<String>,
    #[serde(default)]
    pub market_ids: Option<Vec<String>>,
    #[serde(default)]
    pub send_initial_snapshot: bool,
    #[serde(default)]
    pub skip_ticker_ack: bool,
    #[serde(default)]
    pub use_yes_price: bool,
}

#[derive(Default, Deserialize)]
pub(crate) struct UnsubscribeParams {
    #[serde(default)]
    pub sids: Option<Vec<u64>>,
}

#[derive(Default, Deserialize)]
pub(crate) struct UpdateParams {
    #[serde(default)]
    pub sid: Option<u64>,
    #[serde(default)]
    pub sids: Option<Vec<u64>>,
    #[serde(default)]
    pub market_ticker: Option<String>,
    #[serde(default)]
    pub market_tickers: Option<Vec<String>>,
    #[serde(default)]
    pub market_id: Option<String>,
    #[serde(default)]
    pub market_ids: Option<Vec<String>>,
    #[serde(default)]
    pub send_initial_snapshot: bool,
    #[serde(default)]
    pub action: Option<String>,
}
