//! Fault injection: frames dropped after their `seq` was taken (the client sees a gap), and
//! malformed frames of several kinds. Random faults come from their own seeded generator so
//! the market stream stays the same whatever the fault settings.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

/// A kind of malformed frame, for [`super::SimHandle::send_malformed`] and
/// `malformed_per_mille`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MalformedKind {
    /// Text that is not JSON (an object cut off mid-way). No `seq` is taken.
    InvalidJson,
    /// An `orderbook_delta` with wrong JSON types (`seq` a string, price and delta numbers,
    /// `side` a number). It takes the sid's next `seq`, so a client that rejects it sees a gap.
    WrongTypes,
    /// A well-formed frame of a `type` Kalshi does not send, with no `sid` or `seq`.
    UnknownType,
    /// An `orderbook_snapshot` of a subscribed market with a negative size string
    /// (`"-12.00"`). It takes the sid's next `seq`; a client must reject it, not apply it.
    NegativeSize,
}

impl MalformedKind {
    /// Every kind, in a fixed order.
    pub const ALL: [MalformedKind; 4] = [
        Self::InvalidJson,
        Self::WrongTypes,
        Self::UnknownType,
        Self::NegativeSize,
    ];

    /// Whether the frame carries a `sid` and takes a `seq` number.
    #[must_use]
    pub const fn takes_seq(self) -> bool {
        matches!(self, Self::WrongTypes | Self::NegativeSize)
    }
}

/// The random and scheduled faults of one exchange.
pub(crate) struct Faults {
    rng: StdRng,
    drop_per_mille: u16,
    malformed_per_mille: u16,
    /// Sequenced data frames still to drop on request (`drop_next`).
    pub drop_next: u64,
}

impl Faults {
    pub fn new(seed: u64, drop_per_mille: u16, malformed_per_mille: u16) -> Self {
        Self {
            // A different stream from the market generator's, fixed by the same seed.
            rng: StdRng::seed_from_u64(seed ^ 0x5EED_FA17_5EED_FA17),
            drop_per_mille: drop_per_mille.min(1000),
            malformed_per_mille: malformed_per_mille.min(1000),
            drop_next: 0,
        }
    }

    /// Whether the next sequenced data frame is silently skipped (its `seq` still taken).
    pub fn drop_frame(&mut self) -> bool {
        if self.drop_next > 0 {
            self.drop_next -= 1;
            return true;
        }
        self.drop_per_mille > 0 && self.rng.random_range(0..1000) < self.drop_per_mille
    }

    /// A malformed frame to slip in before the next delta, if one is due.
    pub fn malformed_due(&mut self) -> Option<MalformedKind> {
        if self.malformed_per_mille == 0
            || self.rng.random_range(0..1000) >= self.malformed_per_mille
        {
            return None;
        }
        Some(MalformedKind::ALL[self.rng.random_range(0..MalformedKind::ALL.len())])
    }
}

/// The text of a malformed frame. `sid`/`seq` are used by the kinds that take a `seq`;
/// `levels` is the book of `market` for [`MalformedKind::NegativeSize`].
pub(crate) fn malformed_text(
    kind: MalformedKind,
    sid: u64,
    seq: u64,
    market: &str,
    market_id: &str,
    levels: &[[String; 2]],
) -> String {
    match kind {
        MalformedKind::InvalidJson => format!(
            r#"{{"type":"orderbook_delta","sid":{sid},"msg":{{"market_ticker":"{market}","price_dollars":"0.4"#
        ),
        MalformedKind::WrongTypes => json!({
            "type": "orderbook_delta",
            "sid": sid,
            "seq": seq.to_string(),
            "msg": {
                "market_ticker": market,
                "market_id": market_id,
                "price_dollars": 0.43,
                "delta_fp": -100,
                "side": 1,
                "ts_ms": "soon",
            }
        })
        .to_string(),
        MalformedKind::UnknownType => json!({
            "type": "exchange_notice_v9",
            "msg": {"note": "a message type this client has never seen"}
        })
        .to_string(),
        MalformedKind::NegativeSize => {
            let mut yes: Vec<[String; 2]> = levels.to_vec();
            match yes.last_mut() {
                Some(level) => level[1] = "-12.00".to_owned(),
                None => yes.push(["0.5000".to_owned(), "-12.00".to_owned()]),
            }
            json!({
                "type": "orderbook_snapshot",
                "sid": sid,
                "seq": seq,
                "msg": {
                    "market_ticker": market,
                    "market_id": market_id,
                    "yes_dollars_fp": yes,
                }
            })
            .to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_frames_are_what_they_claim() {
        let text = |kind| malformed_text(kind, 3, 17, "KXSIM-A", "id", &[]);
        assert!(
            serde_json::from_str::<serde_json::Value>(&text(MalformedKind::InvalidJson)).is_err()
        );
        let wrong: serde_json::Value =
            serde_json::from_str(&text(MalformedKind::WrongTypes)).unwrap();
        assert_eq!(wrong["seq"], "17");
        assert!(wrong["msg"]["price_dollars"].is_number());
        let unknown: serde_json::Value =
            serde_json::from_str(&text(MalformedKind::UnknownType)).unwrap();
        assert!(unknown.get("sid").is_none() && unknown.get("seq").is_none());
        let negative: serde_json::Value =
            serde_json::from_str(&text(MalformedKind::NegativeSize)).unwrap();
        assert_eq!(negative["seq"], 17);
        assert_eq!(negative["msg"]["yes_dollars_fp"][0][1], "-12.00");
    }

    #[test]
    fn drop_next_drops_exactly_n() {
        let mut faults = Faults::new(1, 0, 0);
        faults.drop_next = 2;
        assert!(faults.drop_frame());
        assert!(faults.drop_frame());
        assert!(!faults.drop_frame());
    }
}
