//! A connection's bounded outgoing queue. The exchange pushes frames under its lock and never
//! waits; the connection's writer drains it at the client's pace. A full queue is the
//! exchange's signal that the client is too slow (error 25), never back-pressure.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

use super::{SentDelta, lock};

/// One text frame to send, and the delta it carries if it is an `orderbook_delta` (recorded
/// in [`SentDelta`]s once written to the socket).
pub(crate) struct OutFrame {
    pub text: String,
    pub delta: Option<SentDelta>,
}

impl OutFrame {
    pub fn text(text: String) -> Self {
        Self { text, delta: None }
    }
}

/// The queue is full: the frame was not queued.
#[derive(Debug)]
pub(crate) struct Full;

pub(crate) struct Outbox {
    frames: Mutex<VecDeque<OutFrame>>,
    notify: Notify,
    capacity: usize,
}

impl Outbox {
    /// A queue that accepts subscription data while it holds fewer than `capacity` frames.
    pub fn new(capacity: usize) -> Self {
        Self {
            frames: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    /// The most frames the queue may hold at all: command replies and error frames may use
    /// the room above `capacity`, but a client that reads nothing cannot grow it forever.
    fn hard_limit(&self) -> usize {
        self.capacity.saturating_mul(2).saturating_add(64)
    }

    /// Queues a subscription data frame.
    ///
    /// # Errors
    /// [`Full`] if the queue holds `capacity` frames or more.
    pub fn push(&self, frame: OutFrame) -> Result<(), Full> {
        self.push_within(frame, self.capacity)
    }

    /// Queues a command reply or an error frame, which may use the room above `capacity`.
    ///
    /// # Errors
    /// [`Full`] if even the hard limit is reached: the connection must be closed.
    pub fn push_reply(&self, frame: OutFrame) -> Result<(), Full> {
        self.push_within(frame, self.hard_limit())
    }

    fn push_within(&self, frame: OutFrame, limit: usize) -> Result<(), Full> {
        {
            let mut frames = lock(&self.frames);
            if frames.len() >= limit {
                return Err(Full);
            }
            frames.push_back(frame);
        }
        self.notify.notify_one();
        Ok(())
    }

    /// The oldest queued frame.
    pub fn pop(&self) -> Option<OutFrame> {
        lock(&self.frames).pop_front()
    }

    /// Frames waiting.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        lock(&self.frames).len()
    }

    /// Resolves after the next push (or at once if a push happened since the last wait).
    ///
    /// # Cancel safety
    /// Cancel-safe: a dropped wait loses nothing, frames stay queued.
    pub async fn pushed(&self) {
        self.notify.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_stops_at_capacity_replies_at_the_hard_limit() {
        let outbox = Outbox::new(2);
        assert!(outbox.push(OutFrame::text("a".into())).is_ok());
        assert!(outbox.push(OutFrame::text("b".into())).is_ok());
        assert!(outbox.push(OutFrame::text("c".into())).is_err());
        for _ in 0..66 {
            assert!(outbox.push_reply(OutFrame::text("r".into())).is_ok());
        }
        assert!(outbox.push_reply(OutFrame::text("r".into())).is_err());
        assert_eq!(outbox.pop().map(|f| f.text), Some("a".to_owned()));
        assert_eq!(outbox.len(), 67);
    }
}
