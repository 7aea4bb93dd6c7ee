//! What a resolver reaches: the [`Caller`] (API key) and [`SessionCaller`] (dashboard
//! session) of the request, the [`Store`] it reads market data from and the [`Accounts`] it
//! manages accounts through.
//!
//! A resolver is thin: validate arguments, call the store, map the rows to view types. It
//! does not charge: the HTTP layer prices the whole request from its parsed text and charges
//! it once before it runs (`graphql::cost`, `server::gate`).

use std::net::IpAddr;
use std::sync::Arc;

use async_graphql::Context;
use uuid::Uuid;

use super::error::ApiError;
use crate::accounts::JwtKeys;
use crate::accounts::rate::AttemptLimits;
use crate::clickhouse::read::{ReadLimits, read_client};
use crate::postgres::accounts::AccountStore;

/// An authenticated caller: the account and API key a request acts for. The HTTP layer
/// inserts it (as an axum request extension) once it has recognised the key.
pub use crate::accounts::Principal;

/// Who is asking, by API key. Every request carries one in its data; `principal` is `None`
/// when no key was sent (then only free and account fields run: the HTTP layer refuses data
/// fields without a key).
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

/// The dashboard session a request carries (`Authorization: Bearer <access token>`), as the
/// HTTP layer found it. Account operations need one; data queries use the API key instead.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SessionCaller {
    /// No `Authorization` header.
    #[default]
    Absent,
    /// A valid access token: the user and their billing account (the tenant).
    Valid { user_id: Uuid, account_id: Uuid },
    /// A token was sent but is malformed, forged or expired.
    Invalid,
}

impl SessionCaller {
    /// The session of the request `ctx` belongs to.
    #[must_use]
    pub fn of(ctx: &Context<'_>) -> Self {
        ctx.data_opt::<Self>().cloned().unwrap_or_default()
    }
}

/// The client's address (for per-IP limits on sign-in attempts); `None` when unknown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientAddr(pub Option<IpAddr>);

/// What account resolvers reach: the accounts store, the session signer and the sign-in
/// attempt limits. Installed in the schema's data by the server; without it (SDL generation)
/// account fields answer INTERNAL.
#[derive(Clone)]
pub struct Accounts {
    pub store: AccountStore,
    pub jwt: JwtKeys,
    pub attempts: Arc<AttemptLimits>,
}

impl Accounts {
    /// The accounts handle in the schema's data.
    ///
    /// # Errors
    /// [`ApiError::Internal`] when the schema was built without one (a wiring fault).
    pub fn of<'c>(ctx: &Context<'c>) -> Result<&'c Self, ApiError> {
        ctx.data_opt::<Self>()
            .ok_or_else(|| ApiError::internal(&"the schema was built without accounts"))
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
