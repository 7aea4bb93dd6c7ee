//! What a resolver reaches: the [`Caller`] of the request (from the request's data), the
//! [`Meter`] that charges it (when one is installed), and the [`Store`] it reads from.
//!
//! A resolver is thin: validate arguments, `Caller::of(ctx)`, `charge`, call the store, map
//! the rows to view types.

use std::sync::Arc;

use async_graphql::Context;
use futures_util::future::BoxFuture;

use super::error::ApiError;
use crate::clickhouse::read::{ReadLimits, read_client};

/// An authenticated caller: the account and API key a request acts for. The HTTP layer
/// inserts it (as an axum request extension) once it has recognised the key.
pub use crate::accounts::Principal;

/// Who is asking. Every request carries one in its data; `principal` is `None` for an
/// anonymous request (allowed until the accounts layer enforces keys).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    pub principal: Option<Principal>,
}

impl Caller {
    /// The caller of the request `ctx` belongs to; anonymous when none was inserted (e.g. a
    /// schema executed directly in a test).
    #[must_use]
    pub fn of(ctx: &Context<'_>) -> Self {
        ctx.data_opt::<Self>().cloned().unwrap_or_default()
    }
}

/// A root field as the price list sees it: what the meter is asked to charge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PricedField {
    /// One page of `markets`.
    Markets,
    /// One `market`.
    Market,
    /// One page of `deltas`.
    DeltasPage,
    /// One page of `trades`.
    TradesPage,
    /// One `orderbook`.
    Orderbook,
    /// One `bookSnapshots` of this many instants.
    BookSnapshots { instants: u32 },
    /// One `candles`.
    Candles,
    /// One `feedGaps`.
    FeedGaps,
    /// One `coverage`.
    Coverage,
}

impl PricedField {
    /// The operation of the product's price list this field is charged as; `None` for
    /// fields the price list does not name yet (they cost nothing until it does).
    #[must_use]
    pub const fn operation(self) -> Option<crate::accounts::Operation> {
        use crate::accounts::Operation;
        match self {
            Self::Markets => Some(Operation::Markets),
            Self::Market => Some(Operation::Market),
            Self::DeltasPage => Some(Operation::DeltasPage),
            Self::TradesPage => Some(Operation::TradesPage),
            Self::Orderbook => Some(Operation::OrderbookAt),
            Self::BookSnapshots { .. } | Self::Candles | Self::FeedGaps | Self::Coverage => None,
        }
    }
}

/// Charges callers for what they ask. The accounts layer installs one in the schema's data;
/// without one, everything is free.
pub trait Meter: Send + Sync + 'static {
    /// Charges `field` to `caller` before it runs. An error (e.g. credits exhausted) stops
    /// that field and is returned to the client as it is.
    fn charge<'a>(
        &'a self,
        caller: &'a Caller,
        field: PricedField,
    ) -> BoxFuture<'a, Result<(), ApiError>>;
}

/// Charges `field` to the caller of `ctx` through the installed [`Meter`], if any.
///
/// # Errors
/// Whatever the meter refuses with.
pub async fn charge(
    ctx: &Context<'_>,
    caller: &Caller,
    field: PricedField,
) -> Result<(), ApiError> {
    match ctx.data_opt::<Arc<dyn Meter>>() {
        Some(meter) => meter.charge(caller, field).await,
        None => Ok(()),
    }
}

/// Where resolvers read market data: a ClickHouse client bounded by the read limits.
#[derive(Clone)]
pub struct Store {
    pub clickhouse: clickhouse::Client,
}

impl Store {
    /// A store reading through `client` with `max_execution_time` set on every query.
    #[must_use]
    pub fn new(client: &clickhouse::Client) -> Self {
        Self {
            clickhouse: read_client(
                client,
                ReadLimits {
                    max_execution_time: super::limits::QUERY_TIMEOUT,
                },
            ),
        }
    }

    /// The store in the schema's data.
    ///
    /// # Errors
    /// [`ApiError::Internal`] when the schema was built without one (a wiring fault).
    pub fn of<'c>(ctx: &Context<'c>) -> Result<&'c Self, ApiError> {
        ctx.data_opt::<Self>()
            .ok_or_else(|| ApiError::internal(&"the schema was built without a store"))
    }

    /// Runs `read` with a deadline a little past ClickHouse's own, so that a server that
    /// stops answering mid-query cannot hold a request forever.
    ///
    /// # Errors
    /// The read's error as an [`ApiError`], or [`ApiError::Unavailable`] past the deadline.
    pub async fn run<T>(
        &self,
        read: impl Future<Output = Result<T, crate::clickhouse::read::ReadError>>,
    ) -> Result<T, ApiError> {
        let deadline = super::limits::QUERY_TIMEOUT + std::time::Duration::from_secs(5);
        match tokio::time::timeout(deadline, read).await {
            Ok(result) => result.map_err(ApiError::from),
            Err(_) => {
                tracing::warn!("ClickHouse did not answer within {deadline:?}");
                Err(ApiError::Unavailable)
            }
        }
    }
}
