//! Markets coming and going: creation (lifecycle `created`, `event_lifecycle`), opening
//! (`activated`), pauses (`deactivated`/`activated`), early close (`close_date_updated` and an
//! empty `orderbook_snapshot`), determination and settlement, and the churn that cycles them.

use rand::Rng;

use super::SimError;
use super::clock::now_us;
use super::dynamics::Action;
use super::exchange::{Exchange, Publication, fan_out};
use super::market::{MARKETS_PER_EVENT, Status, top};
use super::messages::{EventLifecycleMsg, LifecycleMsg};
use crate::market::{Book, Price, Side};

impl Exchange {
    /// Creates a market after start (lifecycle `created`, and `event_lifecycle` for a new
    /// event). Its book is empty until it opens.
    fn create_later(&mut self, status: Status) -> usize {
        let population = self.markets.len() + 1;
        let index = self.create_market(status, false, population);
        let ts_ms = self.next_ts() / 1000;
        let change = self.next_change();
        let market = &mut self.markets[index];
        // New markets are livelier than the long tail.
        market.weight = market.weight.max(2_000);
        self.truth
            .snapshot(&market.ticker, ts_ms, change, &Book::default());
        let market = &self.markets[index];
        if index.is_multiple_of(MARKETS_PER_EVENT) {
            let event = EventLifecycleMsg {
                event_ticker: market.event_ticker.clone(),
                exchange_index: 0,
                title: format!("Simulated {}", market.series_ticker),
                subtitle: String::new(),
                collateral_return_type: "",
                series_ticker: market.series_ticker.clone(),
            };
            if let Ok(value) = serde_json::to_value(&event) {
                self.publish_lifecycle("event_lifecycle", value);
            }
        }
        let created = self.markets[index].created_msg();
        self.lifecycle(&created);
        index
    }

    /// Opens a market: status active, lifecycle `activated`, and market makers fill the book
    /// (published as deltas).
    fn open(&mut self, index: usize) {
        self.set_status(index, Status::Active);
        let market = &mut self.markets[index];
        market.open_secs = now_us() / 1_000_000;
        market.updated_us = now_us();
        self.lifecycle(&LifecycleMsg {
            market_ticker: self.markets[index].ticker.clone(),
            event_type: "activated",
            ..LifecycleMsg::default()
        });
        let market = &mut self.markets[index];
        let before = top(&market.book);
        let mut actions = Vec::new();
        for (side, price, size) in market.dynamics.initial_levels(&mut self.rng) {
            if market.book.apply_delta(side, price, size).is_ok() {
                actions.push(Action::Delta {
                    side,
                    price,
                    delta: size,
                });
            }
        }
        let (bid, _, ask, _) = market.quotes();
        market.stats.previous_yes_bid = bid;
        market.stats.previous_yes_ask = ask;
        self.publish_actions(index, &actions, before);
    }

    /// Creates and opens a market now; returns its ticker.
    pub fn open_market(&mut self) -> String {
        let index = self.create_later(Status::Active);
        self.open(index);
        self.markets[index].ticker.clone()
    }

    /// Pauses (`deactivated`) or resumes (`activated`) trading of a market.
    fn set_paused(&mut self, index: usize, paused: bool) {
        let status = if paused {
            Status::Inactive
        } else {
            Status::Active
        };
        self.set_status(index, status);
        let market = &mut self.markets[index];
        market.updated_us = now_us();
        let msg = LifecycleMsg {
            market_ticker: market.ticker.clone(),
            event_type: if paused { "deactivated" } else { "activated" },
            is_deactivated: Some(paused),
            ..LifecycleMsg::default()
        };
        self.lifecycle(&msg);
    }

    /// Closes a market early: `close_date_updated`, its book emptied, and an empty
    /// `orderbook_snapshot` on every orderbook subscription holding it.
    fn close(&mut self, index: usize) {
        let ts_us = self.next_ts();
        let change = self.next_change();
        self.set_status(index, Status::Closed);
        let market = &mut self.markets[index];
        market.close_secs = ts_us / 1_000_000;
        market.updated_us = ts_us;
        market.book = Book::default();
        self.truth.clear(&market.ticker, ts_us / 1000, change);
        let msg = LifecycleMsg {
            market_ticker: market.ticker.clone(),
            event_type: "close_date_updated",
            close_ts: Some(market.close_secs),
            ..LifecycleMsg::default()
        };
        self.lifecycle(&msg);
        let Self {
            markets,
            conns,
            faults,
            ..
        } = self;
        let market = &markets[index];
        fan_out(
            conns,
            faults,
            market,
            &[Publication::Snapshot(market.snapshot_msg())],
        );
    }

    /// Determines (`determined`, with a result) and settles (`settled`) a closed market.
    fn determine_and_settle(&mut self, index: usize) {
        let result = if self.rng.random_bool(0.5) {
            Side::Yes
        } else {
            Side::No
        };
        let now_secs = now_us() / 1_000_000;
        self.set_status(index, Status::Determined);
        let market = &mut self.markets[index];
        market.result = Some(result);
        market.determined_secs = Some(now_secs);
        let determined = LifecycleMsg {
            market_ticker: market.ticker.clone(),
            event_type: "determined",
            determination_ts: Some(now_secs),
            result: Some(result.as_str()),
            settlement_value: Some(
                match result {
                    Side::Yes => Price::ONE_DOLLAR,
                    Side::No => Price::from_units(0),
                }
                .to_string(),
            ),
            ..LifecycleMsg::default()
        };
        self.lifecycle(&determined);
        self.set_status(index, Status::Finalized);
        let market = &mut self.markets[index];
        market.settled_secs = Some(now_secs);
        market.updated_us = now_us();
        let settled = LifecycleMsg {
            market_ticker: market.ticker.clone(),
            event_type: "settled",
            settled_ts: Some(now_secs),
            ..LifecycleMsg::default()
        };
        self.lifecycle(&settled);
    }

    /// Closes, determines and settles a market now.
    pub fn settle_market(&mut self, ticker: &str) -> Result<(), SimError> {
        let index = self
            .market_index(ticker)
            .ok_or_else(|| SimError::UnknownMarket(ticker.to_owned()))?;
        match self.markets[index].status {
            Status::Finalized => return Err(SimError::AlreadySettled(ticker.to_owned())),
            Status::Closed | Status::Determined => {}
            Status::Initialized | Status::Active | Status::Inactive => self.close(index),
        }
        self.determine_and_settle(index);
        Ok(())
    }

    /// One step of churn, cycling: create a market (initialized), open it, pause or resume
    /// one, then settle the closed and close another.
    pub(super) fn churn(&mut self) {
        let step = self.churn_step;
        self.churn_step += 1;
        match step % 4 {
            0 => {
                let index = self.create_later(Status::Initialized);
                self.markets[index].open_secs = now_us() / 1_000_000 + 60;
            }
            1 => {
                let waiting: Vec<usize> = (0..self.markets.len())
                    .filter(|i| self.markets[*i].status == Status::Initialized)
                    .collect();
                for index in waiting {
                    self.open(index);
                }
            }
            2 => {
                if let Some(index) =
                    (0..self.markets.len()).find(|i| self.markets[*i].status == Status::Inactive)
                {
                    self.set_paused(index, false);
                } else if let Some(index) = self.random_active() {
                    self.set_paused(index, true);
                }
            }
            _ => {
                let closed: Vec<usize> = (0..self.markets.len())
                    .filter(|i| self.markets[*i].status == Status::Closed)
                    .collect();
                for index in closed {
                    self.determine_and_settle(index);
                }
                let active = self
                    .markets
                    .iter()
                    .filter(|m| m.status == Status::Active)
                    .count();
                if active > 2
                    && let Some(index) = self.random_active()
                {
                    self.close(index);
                }
            }
        }
    }

    fn random_active(&mut self) -> Option<usize> {
        let active: Vec<usize> = (0..self.markets.len())
            .filter(|i| self.markets[*i].status == Status::Active)
            .collect();
        (!active.is_empty()).then(|| active[self.rng.random_range(0..active.len())])
    }
}
