//! The GraphQL schema: one endpoint for books, deltas, trades, markets, candles, gaps and
//! analytics over recorded history.
//!
//! `query` holds the resolvers (thin), `types` the views they return, `scalars` the exact
//! decimal and time scalars, `error` the codes every error carries, `context` the caller,
//! store and accounts a resolver reaches, `cost` the price of a parsed request, `account`
//! sign-in, keys and `me`, `limits` every bound, `llms` the documentation served
//! to agents. `schema.graphql` is generated from this (checked by a test).

pub mod account;
pub mod analytics;
pub mod args;
pub mod context;
pub mod cost;
pub mod cursor;
pub mod error;
pub mod limits;
pub mod llms;
pub mod query;
pub mod scalars;
pub mod subscription;
pub mod types;

use async_graphql::Schema;

pub use account::MutationRoot;
pub use context::{Accounts, Caller, ClientAddr, Principal, SessionCaller, Store};
pub use error::ApiError;
pub use query::QueryRoot;
pub use subscription::{LiveService, SubscriptionRoot};

pub type KalshiBookSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// Builds the schema with its limits, reading market data from `store`, accounts from
/// `accounts` and serving subscriptions through `live`. Without a store (SDL generation)
/// every data field answers INTERNAL, without accounts every account field does, without
/// `live` every subscription answers UNAVAILABLE.
#[must_use]
pub fn build(
    store: Option<Store>,
    accounts: Option<Accounts>,
    live: Option<std::sync::Arc<LiveService>>,
) -> KalshiBookSchema {
    let mut builder = Schema::build(QueryRoot, MutationRoot, SubscriptionRoot)
        .limit_depth(limits::MAX_DEPTH)
        .limit_complexity(limits::MAX_COMPLEXITY)
        .limit_recursive_depth(limits::MAX_BRACKET_NESTING)
        .limit_directives(8)
        .extension(error::ErrorCodes);
    if let Some(store) = store {
        builder = builder.data(store);
    }
    if let Some(accounts) = accounts {
        builder = builder.data(accounts);
    }
    if let Some(live) = live {
        builder = builder.data(live);
    }
    builder.finish()
}

/// The schema without a store: for its SDL and for validating documents.
#[must_use]
pub fn schema() -> KalshiBookSchema {
    build(None, None, None)
}

/// The schema in SDL, as committed in `schema.graphql`.
#[must_use]
pub fn sdl() -> String {
    schema().sdl()
}

/// Now on the server's clock, Unix µs: the default instant of `orderbook`.
#[must_use]
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}
