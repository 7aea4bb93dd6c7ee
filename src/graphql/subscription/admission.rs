//! Who may open a live subscription and what it costs: the per-connection and per-tier limits
//! on open subscriptions, and the meter that charges starts and message blocks.
//!
//! The rule (also in the README and `/llms-full.txt`): starting a subscription costs
//! 5 credits ([`Operation::LiveSubscription`]); every started block of 1,000 messages costs
//! 1 credit ([`Operation::LiveMessages`]), charged before the block's first message, so a
//! subscription never delivers what was not paid for. Heartbeats are free. When a charge is
//! refused the subscription ends with `CREDITS_EXHAUSTED` in its final message.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::accounts::{Operation, Principal};
use crate::graphql::ApiError;
use crate::live::Bus;

/// Timing and size limits of live subscriptions.
#[derive(Clone, Debug)]
pub struct LiveConfig {
    /// A stream that sent nothing for this long sends a `HEARTBEAT`.
    pub heartbeat: Duration,
    /// How long a replay waits for the history store to hold what the live feed already
    /// published, before giving up with `UNAVAILABLE`.
    pub catch_up_timeout: Duration,
    /// Subscriptions one WebSocket connection may hold open.
    pub max_per_connection: usize,
    /// How often an open connection's API key is checked again (a revoked key closes it).
    pub key_recheck: Duration,
    /// How long a new connection may take to send `connection_init`.
    pub init_timeout: Duration,
    /// How long one frame may wait for a client that reads nothing before it is dropped.
    pub send_stall: Duration,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(5),
            catch_up_timeout: Duration::from_secs(30),
            max_per_connection: 100,
            key_recheck: Duration::from_secs(30),
            init_timeout: Duration::from_secs(10),
            send_stall: Duration::from_secs(30),
        }
    }
}

/// Charges live subscriptions (the accounts store in production; tests may count).
pub trait LiveMeter: Send + Sync + 'static {
    /// Charges `op` to `principal`; an error ends the subscription with it.
    fn charge<'a>(
        &'a self,
        principal: &'a Principal,
        op: Operation,
    ) -> BoxFuture<'a, Result<(), ApiError>>;
}

/// Everything live subscriptions share: the bus (absent when no collector runs in this
/// process), the limits, the meter, the shutdown signal and the per-account counts.
pub struct LiveService {
    bus: Option<Bus>,
    pub config: LiveConfig,
    meter: Option<Arc<dyn LiveMeter>>,
    pub shutdown: CancellationToken,
    per_account: Mutex<HashMap<Uuid, usize>>,
}

impl LiveService {
    #[must_use]
    pub fn new(
        bus: Option<Bus>,
        config: LiveConfig,
        meter: Option<Arc<dyn LiveMeter>>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            bus,
            config,
            meter,
            shutdown,
            per_account: Mutex::default(),
        }
    }

    /// The bus, or `UNAVAILABLE` when this server has no collector in its process.
    ///
    /// # Errors
    /// [`ApiError::LiveUnavailable`].
    pub fn bus(&self) -> Result<&Bus, ApiError> {
        self.bus.as_ref().ok_or(ApiError::LiveUnavailable)
    }

    /// Charges `op` through the meter (free without one).
    ///
    /// # Errors
    /// What the meter refuses with (typically `CREDITS_EXHAUSTED`).
    pub async fn charge(&self, principal: &Principal, op: Operation) -> Result<(), ApiError> {
        match &self.meter {
            Some(meter) => meter.charge(principal, op).await,
            None => Ok(()),
        }
    }

    /// Reserves one open subscription for `scope`'s connection and account.
    ///
    /// # Errors
    /// [`ApiError::TooManySubscriptions`] past the connection's or the tier's limit.
    pub fn admit(self: &Arc<Self>, scope: &Arc<ConnectionScope>) -> Result<Permit, ApiError> {
        let per_connection = self.config.max_per_connection;
        if scope.open.fetch_add(1, Ordering::SeqCst) >= per_connection {
            scope.open.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::TooManySubscriptions(format!(
                "a connection may hold at most {per_connection} subscriptions; complete one first or open another connection"
            )));
        }
        let tier = scope.principal.tier;
        let limit = tier.live_subscriptions();
        let mut counts = self
            .per_account
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = counts.entry(scope.principal.account_id).or_default();
        if *count >= limit {
            drop(counts);
            scope.open.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::TooManySubscriptions(format!(
                "the {tier} tier allows {limit} live subscriptions open at once and this account has {limit}; complete one first or upgrade"
            )));
        }
        *count += 1;
        Ok(Permit {
            service: self.clone(),
            scope: scope.clone(),
        })
    }

    fn release(&self, account: Uuid) {
        let mut counts = self
            .per_account
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&account) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&account);
            }
        }
    }
}

/// One WebSocket connection once its key is recognised: in the connection's GraphQL data.
#[derive(Debug)]
pub struct ConnectionScope {
    pub principal: Principal,
    open: AtomicUsize,
}

impl ConnectionScope {
    #[must_use]
    pub fn new(principal: Principal) -> Self {
        Self {
            principal,
            open: AtomicUsize::new(0),
        }
    }

    /// Subscriptions of this connection still running.
    #[must_use]
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

/// An open subscription's place in the limits; released when the subscription's stream is
/// dropped (completed by the client, ended by the server, or the connection closed).
pub struct Permit {
    service: Arc<LiveService>,
    scope: Arc<ConnectionScope>,
}

impl Permit {
    #[must_use]
    pub fn principal(&self) -> &Principal {
        &self.scope.principal
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.scope.open.fetch_sub(1, Ordering::SeqCst);
        self.service.release(self.scope.principal.account_id);
    }
}
