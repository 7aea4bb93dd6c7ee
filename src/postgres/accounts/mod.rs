//! Accounts at rest: users, sessions, API keys, credits, usage and the audit log in Postgres.
//!
//! Two kinds of access, following the schema's row-level security (postgres/migrations/V1):
//! * system paths run as the owning role and see every row: signing in (no tenant is known
//!   yet), authenticating an API key by its hash, the usage flusher, admin commands;
//! * everything done for one account runs in a *tenant transaction* ([`tenant`]), as the role
//!   `kalshibook_tenant` with `kalshibook.account_id` set, so the database itself hides and
//!   protects every other account's rows whatever the SQL says.
//!
//! Every method returns [`AccountsError`], whose [`code`](AccountsError::code) is the
//! `extensions.code` a client sees.

mod audit;
mod credits;
mod keys;
mod usage;
mod users;

use deadpool_postgres::{Object, Pool, PoolError, Transaction};
use uuid::Uuid;

use crate::accounts::{CreditsExhausted, InvalidEmail, WeakPassword};

pub use credits::{AccountSummary, MAX_GRANT, METER_EVENT_NAME};
pub use keys::{CreatedKey, KeyInfo, MAX_ACTIVE_KEYS};
pub use usage::{MAX_USAGE_RANGE, UsageBucket, UsageFlusher, UsageQuery, UsageRecorder, UsageRow};
pub use users::{Session, User};

/// Errors of the accounts store. Messages are written for the person using the API; the
/// variants holding a database error keep it as the `source` for logs, never in the message.
#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    /// Postgres cannot be reached, or dropped the connection: retry later.
    #[error("the accounts database is unavailable; retry shortly")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A statement failed in a way that is a bug or a broken invariant.
    #[error("internal error in the accounts store")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    InvalidEmail(#[from] InvalidEmail),
    #[error(transparent)]
    WeakPassword(#[from] WeakPassword),
    #[error("an account with this email already exists; sign in instead")]
    EmailTaken,
    /// Unknown email, wrong password or disabled user: deliberately not told apart.
    #[error("wrong email or password")]
    InvalidCredentials,
    #[error("the session has expired or was signed out; sign in again")]
    InvalidSession,
    /// Nothing of this kind visible to the caller (absent, or another tenant's).
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    InvalidInput(String),
    #[error("an account may hold at most {max} active API keys; revoke one first")]
    TooManyKeys { max: i64 },
    #[error(transparent)]
    CreditsExhausted(#[from] CreditsExhausted),
}

impl AccountsError {
    /// The stable `extensions.code` for clients.
    #[must_use]
    pub const fn code(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "UNAVAILABLE",
            Self::Internal(_) => "INTERNAL",
            Self::InvalidEmail(_)
            | Self::WeakPassword(_)
            | Self::EmailTaken
            | Self::InvalidInput(_) => "BAD_INPUT",
            Self::InvalidCredentials | Self::InvalidSession => "UNAUTHENTICATED",
            Self::NotFound(_) => "NOT_FOUND",
            Self::TooManyKeys { .. } => "FORBIDDEN",
            Self::CreditsExhausted(_) => "CREDITS_EXHAUSTED",
        }
    }

    /// Whether the same call may succeed if simply repeated later.
    #[must_use]
    pub const fn is_retriable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    fn internal(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(error))
    }
}

impl From<PoolError> for AccountsError {
    /// Every way of not getting a connection (refused, timed out, authentication, pool
    /// closed) leaves the store unusable for now.
    fn from(error: PoolError) -> Self {
        Self::Unavailable(Box::new(error))
    }
}

impl From<tokio_postgres::Error> for AccountsError {
    fn from(error: tokio_postgres::Error) -> Self {
        if is_unavailable(&error) {
            Self::Unavailable(Box::new(error))
        } else {
            Self::Internal(Box::new(error))
        }
    }
}

/// A lost connection, an I/O failure, or a server refusing work for now (shutting down,
/// starting up, out of connections, cancelled statement).
fn is_unavailable(error: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    if error.is_closed() {
        return true;
    }
    if let Some(code) = error.code() {
        return code.code().starts_with("08")
            || [
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
                SqlState::TOO_MANY_CONNECTIONS,
                SqlState::QUERY_CANCELED,
            ]
            .contains(code);
    }
    std::error::Error::source(error).is_some_and(|source| source.is::<std::io::Error>())
}

/// The accounts store: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct AccountStore {
    pool: Pool,
    /// Where credit charges run (see [`crate::postgres::charge_pool`]); the same pool when
    /// the store was made with [`AccountStore::new`].
    charge_pool: Pool,
}

impl std::fmt::Debug for AccountStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountStore").finish_non_exhaustive()
    }
}

impl AccountStore {
    /// A store over `pool` (see [`crate::postgres::pool`]); connects lazily.
    #[must_use]
    pub fn new(pool: Pool) -> Self {
        Self {
            charge_pool: pool.clone(),
            pool,
        }
    }

    /// The store the server uses: accounts on [`crate::postgres::pool`], charges on
    /// [`crate::postgres::charge_pool`].
    ///
    /// # Errors
    /// [`crate::postgres::PostgresError`] when the URL does not parse.
    pub fn connect(
        config: &crate::config::PostgresConfig,
    ) -> Result<Self, crate::postgres::PostgresError> {
        Ok(Self {
            pool: crate::postgres::pool(config)?,
            charge_pool: crate::postgres::charge_pool(config)?,
        })
    }

    #[must_use]
    pub const fn pool(&self) -> &Pool {
        &self.pool
    }

    async fn client(&self) -> Result<Object, AccountsError> {
        Ok(self.pool.get().await?)
    }

    /// A connection for charging credits (the hot path of every data request).
    async fn charge_client(&self) -> Result<Object, AccountsError> {
        Ok(self.charge_pool.get().await?)
    }
}

/// Begins a transaction acting for `account`: from here to its end, row-level security
/// shows and accepts only that account's rows. Both settings are transaction-local, so the
/// pooled connection carries no tenant into its next use.
///
/// # Errors
/// [`AccountsError::Unavailable`] or [`AccountsError::Internal`] from Postgres.
pub async fn tenant(client: &mut Object, account: Uuid) -> Result<Transaction<'_>, AccountsError> {
    let tx = client.transaction().await?;
    let statement = tx
        .prepare_cached(
            "SELECT set_config('role', 'kalshibook_tenant', true), \
                    set_config('kalshibook.account_id', $1::uuid::text, true)",
        )
        .await?;
    tx.execute(&statement, &[&account]).await?;
    Ok(tx)
}

/// Whether `error` is a unique violation of `constraint`.
fn is_unique_violation(error: &tokio_postgres::Error, constraint: &str) -> bool {
    error.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
        && error
            .as_db_error()
            .and_then(tokio_postgres::error::DbError::constraint)
            == Some(constraint)
}
