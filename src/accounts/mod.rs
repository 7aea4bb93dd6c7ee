//! Accounts, pure: API keys, credits and their price list, tiers, billing cycles, emails,
//! passwords and session tokens. No I/O here; `postgres::accounts` keeps these at rest and the
//! server calls it (`server → accounts → postgres`).

mod cost;
mod credits;
mod cycle;
mod email;
mod key;
mod password;
pub mod rate;
mod session;
mod tier;

use std::fmt;

use uuid::Uuid;

pub use cost::{LIVE_MESSAGES_PER_BLOCK, Operation, UnknownOperation, cost, price};
pub use credits::{Balance, ChargeOutcome, Credits, CreditsExhausted};
pub use cycle::{BillingCycle, add_months};
pub use email::{Email, InvalidEmail};
pub use key::{
    API_KEY_PREFIX_LEN, API_KEY_RANDOM_CHARS, API_KEY_SCHEME, ApiKey, KeyFormatError, RefreshToken,
    SecretHash,
};
pub use password::{
    HashError, MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS, Password, PasswordHashString, WeakPassword,
    dummy_hash,
};
pub use session::{
    ACCESS_TOKEN_TTL, AccessClaims, AccessToken, JwtKeys, MIN_JWT_SECRET_BYTES, REFRESH_TOKEN_TTL,
    SessionError,
};
pub use tier::{Tier, TierLimits, UnknownTier};

/// Who a request acts for once its API key is recognised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The billing account: the tenant every query and charge is scoped to.
    pub account_id: Uuid,
    /// The key that was presented (ledger and usage rows name it).
    pub key_id: Uuid,
    /// The person the account belongs to.
    pub user_id: Uuid,
    pub tier: Tier,
}

impl Principal {
    /// The account's request rate limit (`X-RateLimit-Limit`).
    #[must_use]
    pub const fn requests_per_minute(&self) -> u32 {
        self.tier.limits().requests_per_minute
    }
}

/// Who did something, as recorded in `audit_log.actor`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    /// A signed-in dashboard user (or their API key).
    User(Uuid),
    /// An operator at the admin CLI, by login name.
    Cli(String),
    /// The service itself (cycle rolls, webhooks without an event id).
    System,
}

impl Actor {
    /// The operator running this process, from `$USER` / `$LOGNAME`.
    #[must_use]
    pub fn cli_from_env() -> Self {
        let login = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".to_owned());
        Self::Cli(login)
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User(id) => write!(f, "user:{id}"),
            Self::Cli(login) => write!(f, "cli:{login}"),
            Self::System => f.write_str("system"),
        }
    }
}
