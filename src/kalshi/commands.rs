//! Client commands sent over the Kalshi WebSocket (`{"id", "cmd", "params"}` JSON text), as
//! serde types so the simulator can read exactly what the collector writes.

use serde::{Deserialize, Serialize};

/// One client command. `id` should be unique within a connection (`0` means "no id").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KalshiCommand {
    pub id: u64,
    #[serde(flatten)]
    pub command: KalshiCommandKind,
}

/// The command name (`cmd`) with its `params`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", content = "params", rename_all = "snake_case")]
pub enum KalshiCommandKind {
    Subscribe(SubscribeParams),
    Unsubscribe(UnsubscribeParams),
    UpdateSubscription(UpdateSubscriptionParams),
    ListSubscriptions,
}

/// `subscribe` params. `orderbook_delta` needs a market list; `market_lifecycle_v2` takes none.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeParams {
    pub channels: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub market_ticker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub market_tickers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_initial_snapshot: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_ticker_ack: Option<bool>,
}

/// `unsubscribe` params: the subscriptions to cancel.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnsubscribeParams {
    pub sids: Vec<u32>,
}

/// `update_subscription` params: exactly one subscription, by `sid` (or a one-element `sids`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateSubscriptionParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sids: Option<Vec<u32>>,
    pub action: UpdateAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub market_ticker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub market_tickers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_initial_snapshot: Option<bool>,
}

/// What `update_subscription` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateAction {
    /// Add markets; an `orderbook_snapshot` follows for each.
    AddMarkets,
    /// Remove markets.
    DeleteMarkets,
    /// Send an `orderbook_snapshot` per market without changing the subscription.
    GetSnapshot,
}

impl KalshiCommand {
    /// The command as JSON text.
    #[must_use]
    pub fn to_json(&self) -> String {
        // Only strings, integers, booleans and sequences: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Reads a command sent by a client (the simulator's side).
///
/// # Errors
/// The JSON error when the text is not a known command with valid params.
pub fn parse_command(text: &str) -> Result<KalshiCommand, serde_json::Error> {
    serde_json::from_str(text)
}

/// `{"id":1,"cmd":"subscribe","params":{"channels":[…],"market_tickers":[…]}}`;
/// `market_tickers` is left out when empty (e.g. for `market_lifecycle_v2`).
#[must_use]
pub fn subscribe(id: u64, channels: &[&str], market_tickers: &[String]) -> String {
    KalshiCommand {
        id,
        command: KalshiCommandKind::Subscribe(SubscribeParams {
            channels: channels.iter().map(|&c| c.to_owned()).collect(),
            market_tickers: (!market_tickers.is_empty()).then(|| market_tickers.to_vec()),
            ..SubscribeParams::default()
        }),
    }
    .to_json()
}

/// `{"id":3,"cmd":"update_subscription","params":{"sid":1,"action":"add_markets","market_tickers":[…]}}`.
#[must_use]
pub fn update_subscription(
    id: u64,
    sid: u32,
    action: UpdateAction,
    market_tickers: &[String],
) -> String {
    KalshiCommand {
        id,
        command: KalshiCommandKind::UpdateSubscription(UpdateSubscriptionParams {
            sid: Some(sid),
            sids: None,
            action,
            market_ticker: None,
            market_tickers: Some(market_tickers.to_vec()),
            send_initial_snapshot: None,
        }),
    }
    .to_json()
}

/// `{"id":7,"cmd":"unsubscribe","params":{"sids":[1]}}`.
#[must_use]
pub fn unsubscribe(id: u64, sids: &[u32]) -> String {
    KalshiCommand {
        id,
        command: KalshiCommandKind::Unsubscribe(UnsubscribeParams {
            sids: sids.to_vec(),
        }),
    }
    .to_json()
}

/// `{"id":9,"cmd":"list_subscriptions"}`.
#[must_use]
pub fn list_subscriptions(id: u64) -> String {
    KalshiCommand {
        id,
        command: KalshiCommandKind::ListSubscriptions,
    }
    .to_json()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tickers(names: &[&str]) -> Vec<String> {
        names.iter().map(|&n| n.to_owned()).collect()
    }

    #[test]
    fn subscribe_matches_the_reference_shape() {
        let text = subscribe(
            1,
            &["orderbook_delta"],
            &tickers(&["KXBTCD-26JUL0317-T60499.99", "KXNEXTTEAMNBA-26LJAM-MIA"]),
        );
        assert_eq!(
            text,
            r#"{"id":1,"cmd":"subscribe","params":{"channels":["orderbook_delta"],"market_tickers":["KXBTCD-26JUL0317-T60499.99","KXNEXTTEAMNBA-26LJAM-MIA"]}}"#
        );
    }

    #[test]
    fn subscribe_without_markets_omits_the_list() {
        assert_eq!(
            subscribe(2, &["market_lifecycle_v2"], &[]),
            r#"{"id":2,"cmd":"subscribe","params":{"channels":["market_lifecycle_v2"]}}"#
        );
        assert_eq!(
            subscribe(4, &["trade", "ticker"], &[]),
            r#"{"id":4,"cmd":"subscribe","params":{"channels":["trade","ticker"]}}"#
        );
    }

    #[test]
    fn update_subscription_matches_the_reference_shape() {
        assert_eq!(
            update_subscription(
                3,
                1,
                UpdateAction::AddMarkets,
                &tickers(&["KXNEXTTEAMNBA-26LJAM-CLE"])
            ),
            r#"{"id":3,"cmd":"update_subscription","params":{"sid":1,"action":"add_markets","market_tickers":["KXNEXTTEAMNBA-26LJAM-CLE"]}}"#
        );
        assert!(
            update_subscription(4, 2, UpdateAction::DeleteMarkets, &tickers(&["A"]))
                .contains(r#""action":"delete_markets""#)
        );
        assert!(
            update_subscription(5, 2, UpdateAction::GetSnapshot, &tickers(&["A"]))
                .contains(r#""action":"get_snapshot""#)
        );
    }

    #[test]
    fn unsubscribe_and_list_match_the_reference_shapes() {
        assert_eq!(
            unsubscribe(7, &[1]),
            r#"{"id":7,"cmd":"unsubscribe","params":{"sids":[1]}}"#
        );
        assert_eq!(
            list_subscriptions(9),
            r#"{"id":9,"cmd":"list_subscriptions"}"#
        );
    }

    #[test]
    fn commands_round_trip_through_the_parser() {
        for text in [
            subscribe(1, &["orderbook_delta"], &tickers(&["A", "B"])),
            subscribe(2, &["market_lifecycle_v2"], &[]),
            update_subscription(3, 1, UpdateAction::GetSnapshot, &tickers(&["A"])),
            unsubscribe(4, &[1, 2]),
            list_subscriptions(5),
        ] {
            let command = parse_command(&text).unwrap();
            assert_eq!(command.to_json(), text);
        }
        // Kalshi's other spellings: one ticker, one-element sids, unknown params.
        let command = parse_command(
            r#"{"id":6,"cmd":"update_subscription","params":{"sids":[3],"action":"delete_markets","market_ticker":"A","shard_key":1}}"#,
        )
        .unwrap();
        let KalshiCommandKind::UpdateSubscription(params) = command.command else {
            panic!("wrong kind: {command:?}");
        };
        assert_eq!(params.sids, Some(vec![3]));
        assert_eq!(params.market_ticker.as_deref(), Some("A"));
        assert!(parse_command(r#"{"id":1,"cmd":"nonsense"}"#).is_err());
    }
}
