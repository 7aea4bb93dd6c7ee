//! The fast path of [`parse_frame`](super::parse_frame) for the frames that make up nearly all
//! of the exchange's traffic: `orderbook_delta` and `trade`, whose `msg` is a flat object of
//! strings, integers and booleans.
//!
//! serde_json through the lenient wire types costs about three quarters of the collector's
//! time per delta (profiled in `bench ingest`). This scanner reads such a frame in one pass
//! with no allocation and hands the same wire struct to the same conversion (`parse_delta`,
//! `parse_trade`), so the values and errors cannot differ. It accepts only what it fully
//! understands: `type` first, no escape in a string, no negative or fractional number, no
//! `null`, no nested value, no repeated key. On anything else it declines and the general path
//! decides; a test checks on mutated frames that whatever it accepts, the general path reads
//! the same.

use std::borrow::Cow;

use super::{Body, Envelope, Frame, kind_name, parse_delta, parse_trade};
use crate::kalshi::messages::{KalshiDeltaMsg, KalshiTradeMsg, Loose, MessageKind};

/// Reads `text` when it is a plain `orderbook_delta` or `trade` frame; `None` otherwise.
pub(super) fn parse_flat_frame(text: &str) -> Option<Frame> {
    let mut scanner = Scanner::new(text);
    scanner.eat(b'{')?;
    if scanner.string()? != "type" {
        return None;
    }
    scanner.eat(b':')?;
    let kind = scanner.string()?;
    let mut payload = match MessageKind::of(kind) {
        MessageKind::Delta => Payload::Delta(KalshiDeltaMsg::default()),
        MessageKind::Trade => Payload::Trade(KalshiTradeMsg::default()),
        _ => return None,
    };
    let (mut id, mut sid, mut seq) = (None, None, None);
    let mut has_msg = false;
    while scanner.eat(b',').is_some() {
        let key = scanner.string()?;
        scanner.eat(b':')?;
        match key {
            "id" => set_once(&mut id, scanner.unsigned()?)?,
            "sid" => set_once(&mut sid, scanner.unsigned()?)?,
            "seq" => set_once(&mut seq, scanner.unsigned()?)?,
            "msg" if !has_msg => {
                has_msg = true;
                scanner.object(|key, value| payload.set(key, value))?;
            }
            "type" | "msg" => return None,
            _ => {
                scanner.scalar()?;
            }
        }
    }
    scanner.eat(b'}')?;
    if !scanner.at_end() || !has_msg {
        return None;
    }
    let body = match &payload {
        Payload::Delta(msg) => parse_delta(msg).map(Body::Delta),
        Payload::Trade(msg) => parse_trade(msg).map(Body::Trade),
    };
    Some(Frame {
        envelope: Envelope {
            kind: kind_name(kind),
            id,
            sid: sid.and_then(|sid| u32::try_from(sid).ok()),
            seq,
        },
        body,
    })
}

/// Stores a value met for the first time; a repeated key declines (the general path reads
/// repeats its own way).
fn set_once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value);
    Some(())
}

enum Payload<'a> {
    Delta(KalshiDeltaMsg<'a>),
    Trade(KalshiTradeMsg<'a>),
}

impl<'a> Payload<'a> {
    /// Files one `msg` member; unknown keys are skipped, as serde skips them.
    fn set(&mut self, key: &str, value: Loose<'a>) -> Option<()> {
        let slot = match self {
            Self::Delta(msg) => match key {
                "market_ticker" => &mut msg.market_ticker,
                "side" => &mut msg.side,
                "price_dollars" => &mut msg.price_dollars,
                "delta_fp" => &mut msg.delta_fp,
                "price" => &mut msg.price,
                "delta" => &mut msg.delta,
                "ts_ms" => &mut msg.ts_ms,
                "ts" => &mut msg.ts,
                _ => return Some(()),
            },
            Self::Trade(msg) => match key {
                "trade_id" => &mut msg.trade_id,
                "market_ticker" => &mut msg.market_ticker,
                "yes_price_dollars" => &mut msg.yes_price_dollars,
                "yes_price" => &mut msg.yes_price,
                "count_fp" => &mut msg.count_fp,
                "count" => &mut msg.count,
                "taker_outcome_side" => &mut msg.taker_outcome_side,
                "taker_book_side" => &mut msg.taker_book_side,
                "taker_side" => &mut msg.taker_side,
                "is_block_trade" => &mut msg.is_block_trade,
                "ts_ms" => &mut msg.ts_ms,
                "ts" => &mut msg.ts,
                _ => return Some(()),
            },
        };
        set_once(slot, value)
    }
}

/// A cursor over JSON text that reads only the simple forms above.
struct Scanner<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn new(text: &'a str) -> Self {
        Self { text, pos: 0 }
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.text.as_bytes().get(self.pos) {
            self.pos += 1;
        }
    }

    /// The next byte after whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        self.skip_whitespace();
        self.text.as_bytes().get(self.pos).copied()
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.pos += 1)
    }

    fn at_end(&mut self) -> bool {
        self.peek().is_none()
    }

    /// A string without escapes or control characters, borrowed from the text.
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.pos;
        let rest = &self.text.as_bytes()[start..];
        let len = plain_run(rest);
        if rest.get(len) != Some(&b'"') {
            return None;
        }
        self.pos = start + len + 1;
        // Both ends sit next to an ASCII quote, so this is a char boundary.
        self.text.get(start..start + len)
    }

    /// A non-negative integer without a leading zero that fits in a `u64`. What follows it is
    /// checked by the caller's next `eat`, so `1.5` or `1e3` decline there.
    fn unsigned(&mut self) -> Option<u64> {
        self.skip_whitespace();
        let digits = self.text.as_bytes()[self.pos..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let number = &self.text[self.pos..self.pos + digits];
        if digits == 0 || (digits > 1 && number.starts_with('0')) {
            return None;
        }
        self.pos += digits;
        number.parse().ok()
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        self.skip_whitespace();
        self.text[self.pos..].starts_with(word).then(|| {
            self.pos += word.len();
        })
    }

    /// A string, a non-negative integer or a boolean, as serde would hand it to [`Loose`].
    fn scalar(&mut self) -> Option<Loose<'a>> {
        match self.peek()? {
            b'"' => self.string().map(|text| Loose::Text(Cow::Borrowed(text))),
            b'0'..=b'9' => self
                .unsigned()
                .map(|n| i64::try_from(n).map_or(Loose::BigUInt(n), Loose::Int)),
            b't' => self.literal("true").map(|()| Loose::Bool(true)),
            b'f' => self.literal("false").map(|()| Loose::Bool(false)),
            _ => None,
        }
    }

    /// An object of scalars, each member handed to `member`.
    fn object(&mut self, mut member: impl FnMut(&str, Loose<'a>) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            member(key, self.scalar()?)?;
            match self.peek()? {
                b',' => self.pos += 1,
                b'}' => {
                    self.pos += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }
}

/// The length of the leading run of `bytes` that a JSON string reads as is: up to the first
/// `"`, `\\` or control character. Eight bytes per step (the word tricks of "Bit Twiddling
/// Hacks": a byte is flagged when it equals a value or is below 0x20). Borrows can flag
/// bytes after a true match, never before it, so the lowest flag is exact.
fn plain_run(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const fn zero_bytes(word: u64) -> u64 {
        word.wrapping_sub(ONES) & !word & HIGHS
    }
    let mut at = 0;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let flags = zero_bytes(word ^ (ONES * u64::from(b'"')))
            | zero_bytes(word ^ (ONES * u64::from(b'\\')))
            | (word.wrapping_sub(ONES * 0x20) & !word & HIGHS);
        if flags != 0 {
            return at + (flags.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    at + bytes[at..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .unwrap_or(bytes.len() - at)
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::kalshi::parse::parse_frame_generally;

    const STREAM: &str = include_str!("../../../tests/fixtures/kalshi/ws_orderbook_stream.jsonl");
    const TRADES: &str = include_str!("../../../tests/fixtures/kalshi/kalshi_trade.jsonl");

    fn recorded_frames() -> Vec<&'static str> {
        STREAM
            .lines()
            .chain(TRADES.lines())
            .filter(|line| {
                line.contains(r#""type":"orderbook_delta""#) || line.contains(r#""type":"trade""#)
            })
            .collect()
    }

    #[test]
    fn plain_runs_end_at_the_first_quote_backslash_or_control_character() {
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..20_000 {
            let len = rng.random_range(0..40);
            let bytes: Vec<u8> = (0..len)
                .map(|_| match rng.random_range(0..12) {
                    0 => b'"',
                    1 => b'\\',
                    2 => rng.random_range(0..0x20),
                    3 => rng.random_range(0x80..=0xff),
                    _ => rng.random_range(0x20..0x7f),
                })
                .collect();
            let naive = bytes
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .unwrap_or(bytes.len());
            assert_eq!(plain_run(&bytes), naive, "{bytes:?}");
        }
    }

    /// The fast path must carry the real traffic, or its speed is never seen.
    #[test]
    fn every_recorded_delta_and_trade_takes_the_fast_path_and_reads_the_same() {
        let frames = recorded_frames();
        assert!(frames.len() > 245, "{} frames", frames.len());
        for text in frames {
            let fast = parse_flat_frame(text).unwrap_or_else(|| panic!("declined {text}"));
            assert_eq!(Ok(fast), parse_frame_generally(text), "{text}");
        }
    }

    #[test]
    fn frames_it_does_not_fully_understand_are_declined() {
        for text in [
            r#"{"sid":1,"type":"orderbook_delta","seq":2,"msg":{}}"#,
            r#"{"type":"orderbook_snapshot","sid":1,"seq":2,"msg":{}}"#,
            r#"{"type":"orderbook_delta","sid":1,"seq":2}"#,
            r#"{"type":"orderbook_delta","sid":1,"seq":2,"seq":3,"msg":{}}"#,
            r#"{"type":"orderbook_delta","sid":1,"seq":2,"msg":{"side":"yes","side":"no"}}"#,
            r#"{"type":"orderbook_delta","sid":1,"seq":2,"msg":{"market_ticker":"A\"B"}}"#,
            r#"{"type":"orderbook_delta","sid":1,"seq":2,"msg":{"delta":-5}}"#,
            r#"{"type":"orderbook_delta","sid":1,"seq":2,"msg":{"ts_ms":1.5}}"#,
            r#"{"type":"orderbook_delta","sid":1,"seq":02,"msg":{}}"#,
            r#"{"type":"orderbook_delta","sid":1,"seq":2,"msg":{"ts":null}}"#,
            r#"{"type":"orderbook_delta","sid":1,"seq":2,"msg":{"x":[1]}}"#,
            r#"{"type":"orderbook_delta","sid":1,"seq":2,"msg":{}} x"#,
            r#"{"type":"orderbook_delta","sid":1,"seq":18446744073709551616,"msg":{}}"#,
        ] {
            assert_eq!(parse_flat_frame(text), None, "{text}");
        }
    }

    #[test]
    fn whitespace_and_unknown_members_are_read_like_serde_reads_them() {
        let text = " {\"type\" : \"orderbook_delta\",\n \"sid\": 3, \"seq\": 9, \"extra\": true, \
                    \"msg\": {\"market_ticker\": \"KX-A\", \"market_id\": \"u\", \"subaccount\": 2, \
                    \"price_dollars\": \"0.4300\", \"delta_fp\": \"-100.00\", \"side\": \"no\", \
                    \"ts_ms\": 1786085188978} } ";
        let fast = parse_flat_frame(text).expect("accepted");
        assert_eq!(fast.envelope.sid, Some(3));
        assert_eq!(fast.envelope.seq, Some(9));
        assert_eq!(Ok(fast), parse_frame_generally(text));
    }

    /// Random damage to recorded frames: whatever the fast path accepts, the general path
    /// reads identically (values, envelope and errors alike).
    #[test]
    fn on_mutated_frames_the_fast_path_agrees_with_serde_or_declines() {
        const PIECES: [&str; 24] = [
            " ",
            "\"",
            "\\",
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            "-",
            ".",
            "e",
            "0",
            "7",
            "true",
            "null",
            "\"x\":1,",
            "\u{1}",
            "é",
            "\"seq\":5,",
            "\"side\":\"no\",",
            "\"ts_ms\":",
            "\"delta_fp\":\"1.5\",",
            "\"price_dollars\":\"1.0000\",",
        ];
        let frames = recorded_frames();
        let mut rng = StdRng::seed_from_u64(7);
        let (mut accepted, mut declined) = (0, 0);
        for _ in 0..20_000 {
            let mut text = frames[rng.random_range(0..frames.len())].to_owned();
            for _ in 0..rng.random_range(1..=3) {
                let mut at = rng.random_range(0..=text.len());
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                match rng.random_range(0..3) {
                    0 => text.insert_str(at, PIECES[rng.random_range(0..PIECES.len())]),
                    1 => {
                        let end = (at + rng.random_range(1..4)).min(text.len());
                        if text.is_char_boundary(end) {
                            text.replace_range(at..end, "");
                        }
                    }
                    _ => {
                        let end = (at + rng.random_range(1..3)).min(text.len());
                        if text.is_char_boundary(end) {
                            let piece = PIECES[rng.random_range(0..PIECES.len())];
                            text.replace_range(at..end, piece);
                        }
                    }
                }
            }
            match parse_flat_frame(&text) {
                Some(fast) => {
                    accepted += 1;
                    assert_eq!(Ok(fast), parse_frame_generally(&text), "{text}");
                }
                None => declined += 1,
            }
        }
        assert!(
            accepted > 1_000 && declined > 1_000,
            "{accepted} accepted, {declined} declined"
        );
    }
}
