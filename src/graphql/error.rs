//! The API's one error type and its stable codes. Every error a client sees carries
//! `extensions.code`; internals (ClickHouse messages, SQL) are logged, never returned.

use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextRequest, NextSubscribe,
};
use async_graphql::{ErrorExtensionValues, Response, ServerError, Value};

use super::limits;
use crate::clickhouse::read::ReadError;

/// Everything that can go wrong answering a query, by what the client should do about it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The request itself is wrong: fix the named argument and retry.
    #[error("{message}")]
    BadInput {
        /// The argument at fault, when one is.
        argument: Option<&'static str>,
        message: String,
    },
    /// The named thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The history database does not answer: retry after a short wait.
    #[error(
        "market data is temporarily unavailable (the history database does not answer); retry in a few seconds"
    )]
    Unavailable,
    /// The accounts database does not answer: nothing was served or charged; retry shortly.
    #[error(
        "the accounts service is temporarily unavailable, so the request could not be authenticated or metered and was not run; retry in a few seconds"
    )]
    AccountsUnavailable,
    /// The query ran past the server's time limit.
    #[error(
        "the query ran longer than the limit of {secs} s and was cancelled; ask for a shorter time range, fewer instants or a smaller page"
    )]
    Timeout { secs: u64 },
    /// No valid API key: send one (`Authorization: Bearer <key>`).
    #[error("{0}")]
    Unauthenticated(String),
    /// The key is valid but may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The account has no credits left for this operation (HTTP 429).
    #[error("{0}")]
    CreditsExhausted(String),
    /// Too many requests: retry after `retry_after_secs` (HTTP 429 with `Retry-After`).
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after_secs: u64,
    },
    /// Live data is not served by this server (no collector runs in its process).
    #[error(
        "live data is unavailable on this server (it runs without the collector); connect to a server started with KALSHIBOOK_COLLECT=1, or use the history queries"
    )]
    LiveUnavailable,
    /// A subscription fell further behind the live feed than its queue holds.
    #[error("{0}")]
    SlowConsumer(String),
    /// Opening one more subscription would pass the tier's or the connection's limit.
    #[error("{0}")]
    TooManySubscriptions(String),
    /// The server is stopping; reconnect (another replica, or this one once restarted).
    #[error("the server is shutting down; reconnect and subscribe again")]
    ShuttingDown,
    /// A fault of the server; `reference` finds it in the server's logs.
    #[error(
        "internal error (reference {reference}); retrying may help, and if it persists report the reference"
    )]
    Internal { reference: String },
}

impl ApiError {
    /// `extensions.code` of this error.
    #[must_use]
    pub const fn code(&self) -> &'static str {
        match self {
            Self::BadInput { .. } => "BAD_INPUT",
            Self::NotFound(_) => "NOT_FOUND",
            Self::Unavailable | Self::AccountsUnavailable => "UNAVAILABLE",
            Self::Timeout { .. } => "TIMEOUT",
            Self::Unauthenticated(_) => "UNAUTHENTICATED",
            Self::Forbidden(_) => "FORBIDDEN",
            Self::CreditsExhausted(_) => "CREDITS_EXHAUSTED",
            Self::RateLimited { .. } => "RATE_LIMITED",
            Self::LiveUnavailable => "UNAVAILABLE",
            Self::SlowConsumer(_) => "SLOW_CONSUMER",
            Self::TooManySubscriptions(_) => "TOO_MANY_SUBSCRIPTIONS",
            Self::ShuttingDown => "SHUTTING_DOWN",
            Self::Internal { .. } => "INTERNAL",
        }
    }

    /// A bad value of `argument`, with a message saying what would be accepted.
    #[must_use]
    pub fn bad_input(argument: &'static str, message: impl Into<String>) -> Self {
        Self::BadInput {
            argument: Some(argument),
            message: message.into(),
        }
    }

    /// An internal fault: logs `detail` under a fresh reference and returns the error that
    /// names only the reference.
    #[must_use]
    pub fn internal(detail: &dyn std::fmt::Display) -> Self {
        let reference = format!("{:016x}", rand::random::<u64>());
        tracing::error!(%reference, %detail, "internal error answering a query");
        Self::Internal { reference }
    }

    fn extensions(&self) -> ErrorExtensionValues {
        let mut values = ErrorExtensionValues::default();
        values.set("code", self.code());
        match self {
            Self::BadInput {
                argument: Some(argument),
                ..
            } => values.set("argument", *argument),
            Self::RateLimited {
                retry_after_secs, ..
            } => values.set("retryAfterSeconds", *retry_after_secs),
            _ => {}
        }
        values
    }
}

impl From<ReadError> for ApiError {
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::Unavailable(detail) => {
                tracing::warn!(%detail, "ClickHouse unavailable");
                Self::Unavailable
            }
            ReadError::Timeout(detail) => {
                tracing::warn!(%detail, "query cancelled by max_execution_time");
                Self::Timeout {
                    secs: limits::QUERY_TIMEOUT.as_secs(),
                }
            }
            other => Self::internal(&other),
        }
    }
}

impl From<crate::postgres::accounts::AccountsError> for ApiError {
    fn from(error: crate::postgres::accounts::AccountsError) -> Self {
        use crate::postgres::accounts::AccountsError as E;
        match error {
            E::Unavailable(source) => {
                tracing::warn!(%source, "accounts database unavailable");
                Self::AccountsUnavailable
            }
            E::Internal(ref source) => {
                Self::internal(&format_args!("accounts store: {error}: {source}"))
            }
            E::InvalidEmail(_) | E::WeakPassword(_) | E::EmailTaken | E::InvalidInput(_) => {
                Self::BadInput {
                    argument: None,
                    message: error.to_string(),
                }
            }
            E::InvalidCredentials | E::InvalidSession => Self::Unauthenticated(error.to_string()),
            E::NotFound(_) => Self::NotFound(error.to_string()),
            E::TooManyKeys { .. } => Self::Forbidden(error.to_string()),
            E::CreditsExhausted(exhausted) => Self::credits_exhausted(&exhausted),
        }
    }
}

impl ApiError {
    /// CREDITS_EXHAUSTED naming the way out: the reset date, PAYG, or a larger plan.
    #[must_use]
    pub fn credits_exhausted(exhausted: &crate::accounts::CreditsExhausted) -> Self {
        Self::CreditsExhausted(format!(
            "{exhausted}. To go on before then: enable pay-as-you-go (PAYG: $0.008 per credit past the allowance) or upgrade to the Project plan (4,000 credits a month for $30) in the dashboard; or wait for the reset."
        ))
    }
}

/// Gives every error of a response its `extensions.code`: an [`ApiError`] raised by a
/// resolver its own; anything else async-graphql reports (syntax, validation, argument
/// coercion, limits) is the client's to fix, `BAD_INPUT`, with the limit named where one was
/// hit. Installed on the schema, so every way of executing it gets the same codes.
pub struct ErrorCodes;

impl ExtensionFactory for ErrorCodes {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ErrorCodes)
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for ErrorCodes {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let mut response = next.run(ctx).await;
        for error in &mut response.errors {
            assign_code(error);
        }
        response
    }

    /// Subscriptions do not pass through `request`: every message of their streams gets
    /// the same codes here.
    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: futures_util::stream::BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> futures_util::stream::BoxStream<'s, Response> {
        use futures_util::StreamExt;
        next.run(ctx, stream)
            .map(|mut response| {
                for error in &mut response.errors {
                    assign_code(error);
                }
                response
            })
            .boxed()
    }
}

fn assign_code(error: &mut ServerError) {
    if let Some(api) = error.source::<ApiError>() {
        let api = api.clone();
        error.message = api.to_string();
        error.extensions = Some(api.extensions());
        return;
    }
    let has_code = error
        .extensions
        .as_ref()
        .is_some_and(|e| e.get("code").is_some());
    if has_code {
        return;
    }
    match error.message.as_str() {
        "Query is too complex." => {
            error.message = format!(
                "the query is too complex: its cost exceeds the limit of {} (each field costs 1; orderbook {}, bookSnapshots {}, deltas/trades {}, candles {}, markets {}); ask for fewer fields or split it into several requests",
                limits::MAX_COMPLEXITY,
                limits::COST_ORDERBOOK,
                limits::COST_BOOK_SNAPSHOTS,
                limits::COST_EVENTS_PAGE,
                limits::COST_CANDLES,
                limits::COST_MARKETS,
            );
        }
        "Query is nested too deep." => {
            error.message = format!(
                "the query is nested too deep: the limit is {} levels of selection sets",
                limits::MAX_DEPTH
            );
        }
        message if message.trim_start().starts_with("-->") => {
            error.message = format!("the query does not parse (GraphQL syntax):\n{message}");
        }
        _ => {}
    }
    let mut values = error.extensions.take().unwrap_or_default();
    values.set("code", Value::from("BAD_INPUT"));
    error.extensions = Some(values);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_a_stable_code() {
        let cases = [
            (ApiError::bad_input("depth", "too deep"), "BAD_INPUT"),
            (ApiError::NotFound("no market".into()), "NOT_FOUND"),
            (ApiError::Unavailable, "UNAVAILABLE"),
            (ApiError::Timeout { secs: 10 }, "TIMEOUT"),
            (
                ApiError::Unauthenticated("no key".into()),
                "UNAUTHENTICATED",
            ),
            (ApiError::Forbidden("no".into()), "FORBIDDEN"),
            (
                ApiError::CreditsExhausted("none left".into()),
                "CREDITS_EXHAUSTED",
            ),
            (
                ApiError::RateLimited {
                    message: "slow down".into(),
                    retry_after_secs: 3,
                },
                "RATE_LIMITED",
            ),
            (
                ApiError::Internal {
                    reference: "x".into(),
                },
                "INTERNAL",
            ),
        ];
        for (error, code) in cases {
            assert_eq!(error.code(), code);
            assert_eq!(
                error.extensions().get("code"),
                Some(&Value::from(code)),
                "{error}"
            );
        }
    }

    #[test]
    fn internal_errors_do_not_repeat_their_detail() {
        let error = ApiError::from(ReadError::Failed(
            "Code: 62. DB::Exception: Syntax error near SELECT secret".into(),
        ));
        assert_eq!(error.code(), "INTERNAL");
        assert!(!error.to_string().contains("SELECT"), "{error}");
    }
}
