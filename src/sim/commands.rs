//! The WebSocket commands a client sends and the exchange's replies: `subscribe`,
//! `update_subscription` (`add_markets`, `delete_markets`, `get_snapshot`), `unsubscribe`,
//! `list_subscriptions`, with Kalshi's error codes.
//!
//! Choices where Kalshi's documents are silent: unknown market tickers are refused with error
//! 11 listing them; `use_yes_price: true` is refused with error 11 (the simulator only
//! reports NO bids in NO-leg prices); a command that fails validation subscribes nothing.

use std::collections::BTreeSet;

use serde::de::DeserializeOwned;

use super::exchange::Exchange;
use super::market::SimMarket;
use super::messages::{
    Command, Frame, OkMarketsMsg, SubscribeParams, SubscribedMsg, SubscriptionEntry,
    UnsubscribeParams, UpdateParams,
};
use super::subscription::{Channel, Sub};

/// A command refused: error code, message, and the offending markets if any.
struct Refusal {
    code: u32,
    message: &'static str,
    markets: Option<Vec<String>>,
}

const fn refuse(code: u32, message: &'static str) -> Refusal {
    Refusal {
        code,
        message,
        markets: None,
    }
}

fn params<T: DeserializeOwned + Default>(params: Option<serde_json::Value>) -> Result<T, Refusal> {
    match params {
        None | Some(serde_json::Value::Null) => Err(refuse(2, "Params required")),
        Some(value) => serde_json::from_value(value).map_err(|_| refuse(11, "Invalid parameter")),
    }
}

/// `market_ticker` and `market_tickers` (mutually exclusive) as one ordered, de-duplicated list.
fn market_list(single: Option<String>, many: Option<Vec<String>>) -> Result<Vec<String>, Refusal> {
    if single.is_some() && many.is_some() {
        return Err(refuse(11, "Invalid parameter"));
    }
    let mut seen = BTreeSet::new();
    Ok(single
        .into_iter()
        .chain(many.into_iter().flatten())
        .filter(|ticker| seen.insert(ticker.clone()))
        .collect())
}

impl Exchange {
    /// Handles one text frame from connection `conn_id`, queuing every reply on it.
    pub fn handle_command(&mut self, conn_id: u64, text: &str) {
        let Some(conn) = self.conn_mut(conn_id) else {
            return;
        };
        let command: Command = match serde_json::from_str(text) {
            Ok(command) => command,
            Err(_) => return conn.error(None, 1, "Unable to process message", None),
        };
        let id = command.id.filter(|id| *id != 0);
        let outcome = match command.cmd.as_deref() {
            None => Err(refuse(1, "Unable to process message")),
            Some("subscribe") => self.subscribe(conn_id, id, command.params),
            Some("update_subscription") => self.update_subscription(conn_id, id, command.params),
            Some("unsubscribe") => self.unsubscribe(conn_id, id, command.params),
            Some("list_subscriptions") => self.list_subscriptions(conn_id, id),
            Some(_) => Err(refuse(5, "Unknown command")),
        };
        if let Err(refusal) = outcome
            && let Some(conn) = self.conn_mut(conn_id)
        {
            conn.error(id, refusal.code, refusal.message, refusal.markets);
        }
    }

    /// Refuses tickers the exchange does not list.
    fn known_markets(&self, tickers: &[String]) -> Result<(), Refusal> {
        let unknown: Vec<String> = tickers
            .iter()
            .filter(|ticker| self.market_index(ticker).is_none())
            .cloned()
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(Refusal {
                code: 11,
                message: "Invalid parameter",
                markets: Some(unknown),
            })
        }
    }

    /// Market ids (ticker channel only) as tickers.
    fn tickers_of_ids(
        &self,
        single: Option<String>,
        many: Option<Vec<String>>,
    ) -> Result<Vec<String>, Refusal> {
        let ids = market_list(single, many)?;
        ids.iter()
            .map(|id| {
                self.market_by_id(id)
                    .map(|index| self.markets[index].ticker.clone())
                    .ok_or(refuse(11, "Invalid parameter"))
            })
            .collect()
    }

    fn subscribe(
        &mut self,
        conn_id: u64,
        id: Option<u64>,
        raw: Option<serde_json::Value>,
    ) -> Result<(), Refusal> {
        let params: SubscribeParams = params(raw)?;
        let names = params
            .channels
            .filter(|channels| !channels.is_empty())
            .ok_or(refuse(3, "Channels required"))?;
        let channels = names
            .iter()
            .map(|name| Channel::parse(name).ok_or(refuse(8, "Unknown channel name")))
            .collect::<Result<Vec<_>, _>>()?;
        if params.use_yes_price {
            return Err(refuse(11, "Invalid parameter"));
        }
        let tickers = market_list(params.market_ticker, params.market_tickers)?;
        let by_id = self.tickers_of_ids(params.market_id, params.market_ids)?;
        if channels.contains(&Channel::OrderbookDelta) && tickers.is_empty() {
            return Err(refuse(14, "Market Ticker required"));
        }
        self.known_markets(&tickers)?;
        let snapshot_ts = super::clock::now_us();
        let mut frames = Vec::new();
        let Some((conn, markets, tickers_index)) = self.split_conn(conn_id) else {
            return Ok(());
        };
        let index = |ticker: &str| tickers_index.get(ticker).copied();
        for channel in channels {
            let sid = conn.next_sid;
            conn.next_sid += 1;
            let wanted: Vec<String> = match channel {
                Channel::Ticker => tickers.iter().chain(&by_id).cloned().collect(),
                _ => tickers.clone(),
            };
            let filter = match channel {
                Channel::OrderbookDelta => Some(wanted.iter().cloned().collect()),
                Channel::Trade | Channel::Ticker if !wanted.is_empty() => {
                    Some(wanted.iter().cloned().collect())
                }
                _ => None,
            };
            let mut sub = Sub::new(channel, filter, params.skip_ticker_ack);
            frames.push(
                Frame {
                    kind: "subscribed",
                    id,
                    sid: None,
                    seq: None,
                    msg: Some(SubscribedMsg {
                        channel: channel.name(),
                        sid,
                    }),
                }
                .to_text(),
            );
            match channel {
                Channel::OrderbookDelta => {
                    for ticker in &wanted {
                        if let Some(market) = index(ticker).map(|i| &markets[i]) {
                            let seq = sub.next_seq();
                            frames.push(snapshot_text(sid, seq, None, market));
                        }
                    }
                }
                Channel::Ticker if params.send_initial_snapshot => {
                    for ticker in &wanted {
                        if let Some(market) = index(ticker).map(|i| &markets[i]) {
                            frames.push(ticker_text(sid, market, snapshot_ts));
                        }
                    }
                }
                _ => {}
            }
            conn.subs.insert(sid, sub);
        }
        for frame in frames {
            conn.reply(frame);
        }
        Ok(())
    }

    fn update_subscription(
        &mut self,
        conn_id: u64,
        id: Option<u64>,
        raw: Option<serde_json::Value>,
    ) -> Result<(), Refusal> {
        let params: UpdateParams = params(raw)?;
        let action = params.action.clone().ok_or(refuse(15, "Action required"))?;
        let sid = match (params.sid, params.sids.as_deref()) {
            (Some(sid), None) => sid,
            (None, Some([sid])) => *sid,
            _ => return Err(refuse(12, "Exactly one subscription ID is required")),
        };
        if !matches!(
            action.as_str(),
            "add_markets" | "delete_markets" | "get_snapshot"
        ) {
            return Err(refuse(13, "Unsupported action"));
        }
        let mut tickers = market_list(params.market_ticker, params.market_tickers)?;
        let channel = self
            .conn_mut(conn_id)
            .and_then(|conn| conn.subs.get(&sid))
            .map(|sub| sub.channel)
            .ok_or(refuse(7, "Unknown subscription ID"))?;
        if channel == Channel::Ticker {
            tickers.extend(self.tickers_of_ids(params.market_id, params.market_ids)?);
        }
        if !matches!(
            channel,
            Channel::OrderbookDelta | Channel::Trade | Channel::Ticker
        ) {
            return Err(refuse(13, "Unsupported action"));
        }
        if tickers.is_empty() {
            return Err(refuse(14, "Market Ticker required"));
        }
        let ts = super::clock::now_us();
        let Some((conn, markets, tickers_index)) = self.split_conn(conn_id) else {
            return Ok(());
        };
        let index = |ticker: &str| tickers_index.get(ticker).copied();
        let Some(sub) = conn.subs.get_mut(&sid) else {
            return Err(refuse(7, "Unknown subscription ID"));
        };
        let mut frames = Vec::new();
        match action.as_str() {
            "get_snapshot" => {
                if channel != Channel::OrderbookDelta {
                    return Err(refuse(13, "Unsupported action"));
                }
                let missing: Vec<String> =
                    tickers.iter().filter(|t| !sub.wants(t)).cloned().collect();
                if !missing.is_empty() {
                    return Err(Refusal {
                        code: 11,
                        message: "Invalid parameter",
                        markets: Some(missing),
                    });
                }
                for ticker in &tickers {
                    if let Some(market) = index(ticker).map(|i| &markets[i]) {
                        let seq = sub.next_seq();
                        frames.push(snapshot_text(sid, seq, id, market));
                    }
                }
            }
            "add_markets" => {
                let unknown: Vec<String> = tickers
                    .iter()
                    .filter(|t| index(t).is_none())
                    .cloned()
                    .collect();
                if !unknown.is_empty() {
                    return Err(Refusal {
                        code: 11,
                        message: "Invalid parameter",
                        markets: Some(unknown),
                    });
                }
                let added: Vec<String> = match sub.markets.as_mut() {
                    Some(set) => tickers
                        .iter()
                        .filter(|t| set.insert((*t).clone()))
                        .cloned()
                        .collect(),
                    // Already every market.
                    None => Vec::new(),
                };
                frames.push(ok_text(id, sid, sub));
                for ticker in &added {
                    let Some(market) = index(ticker).map(|i| &markets[i]) else {
                        continue;
                    };
                    match channel {
                        Channel::OrderbookDelta => {
                            let seq = sub.next_seq();
                            frames.push(snapshot_text(sid, seq, None, market));
                        }
                        Channel::Ticker if params.send_initial_snapshot => {
                            frames.push(ticker_text(sid, market, ts));
                        }
                        _ => {}
                    }
                }
            }
            _ => {
                if let Some(set) = sub.markets.as_mut() {
                    for ticker in &tickers {
                        set.remove(ticker);
                    }
                }
                frames.push(ok_text(id, sid, sub));
            }
        }
        for frame in frames {
            conn.reply(frame);
        }
        Ok(())
    }

    fn unsubscribe(
        &mut self,
        conn_id: u64,
        id: Option<u64>,
        raw: Option<serde_json::Value>,
    ) -> Result<(), Refusal> {
        let params: UnsubscribeParams = params(raw)?;
        let sids = params
            .sids
            .filter(|sids| !sids.is_empty())
            .ok_or(refuse(4, "Subscription IDs required"))?;
        let Some(conn) = self.conn_mut(conn_id) else {
            return Ok(());
        };
        for sid in sids {
            match conn.subs.remove(&sid) {
                Some(sub) => conn.reply(
                    Frame::<()> {
                        kind: "unsubscribed",
                        id,
                        sid: Some(sid),
                        seq: Some(sub.seq + 1),
                        msg: None,
                    }
                    .to_text(),
                ),
                None => conn.error(id, 7, "Unknown subscription ID", None),
            }
        }
        Ok(())
    }

    fn list_subscriptions(&mut self, conn_id: u64, id: Option<u64>) -> Result<(), Refusal> {
        let Some(conn) = self.conn_mut(conn_id) else {
            return Ok(());
        };
        let entries: Vec<SubscriptionEntry<'_>> = conn
            .subs
            .iter()
            .map(|(sid, sub)| SubscriptionEntry {
                channel: sub.channel.name(),
                sid: *sid,
            })
            .collect();
        let text = Frame {
            kind: "ok",
            id,
            sid: None,
            seq: None,
            msg: Some(entries),
        }
        .to_text();
        conn.reply(text);
        Ok(())
    }
}

/// An `orderbook_snapshot` frame; `id` only in reply to `get_snapshot`.
fn snapshot_text(sid: u64, seq: u64, id: Option<u64>, market: &SimMarket) -> String {
    Frame {
        kind: "orderbook_snapshot",
        id,
        sid: Some(sid),
        seq: Some(seq),
        msg: Some(market.snapshot_msg()),
    }
    .to_text()
}

fn ticker_text(sid: u64, market: &SimMarket, ts_us: i64) -> String {
    Frame {
        kind: "ticker",
        id: None,
        sid: Some(sid),
        seq: None,
        msg: Some(market.ticker_msg(ts_us)),
    }
    .to_text()
}

/// The `ok` reply to add/delete: the full market list (sorted) unless `skip_ticker_ack`;
/// it takes the sid's next `seq` on sequenced channels.
fn ok_text(id: Option<u64>, sid: u64, sub: &mut Sub) -> String {
    let seq = sub.channel.sequenced().then(|| sub.next_seq());
    let market_tickers =
        (!sub.skip_ticker_ack).then(|| sub.markets.iter().flatten().cloned().collect());
    Frame {
        kind: "ok",
        id,
        sid: Some(sid),
        seq,
        msg: Some(OkMarketsMsg { market_tickers }),
    }
    .to_text()
}
