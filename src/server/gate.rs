//! The paid API's front door: who a request acts for (API key or session token), whether
//! its key may call now (rate limit), and what it pays (credits charged once, up front, in
//! Postgres; refunded when it returns no data), with the `X-Credits-*` / `X-RateLimit-*`
//! headers that tell the client where it stands.
//!
//! `server → accounts (principal, cost, rate) → postgres (authenticate, charge)`. The same
//! calls serve any transport: the `/graphql` handler uses them per request, a subscription
//! can use them per connection ([`Gate::authenticate`]) and per delivered item
//! ([`Gate::charge`]).
//!
//! No cache sits in front of [`Gate::authenticate`]: every request looks its key up by hash
//! (one indexed read), so a revoked key is refused by the very next request on every replica.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use uuid::Uuid;

use crate::accounts::rate::{AttemptLimits, RateLimits, RateState};
use crate::accounts::{Balance, ChargeOutcome, Credits, JwtKeys, Operation, Principal};
use crate::graphql::{Accounts, ApiError, SessionCaller};
use crate::postgres::accounts::{AccountStore, AccountsError, UsageRecorder};

/// The header carrying the API key of data requests.
pub const API_KEY_HEADER: &str = "x-api-key";

/// Everything the gate needs; cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Gate {
    inner: Arc<Inner>,
}

struct Inner {
    store: AccountStore,
    usage: UsageRecorder,
    rates: RateLimits,
    accounts: Accounts,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate").finish_non_exhaustive()
    }
}

/// A charge refused: the error for the client, and the balance that refused it (for the
/// headers), when known.
#[derive(Debug)]
pub struct Refused {
    pub error: ApiError,
    pub balance: Option<Balance>,
}

/// A request refused by its key's rate limit.
#[derive(Debug)]
pub struct RateRefused {
    pub error: ApiError,
    pub state: RateState,
}

impl Gate {
    /// A gate over `store`, signing sessions with `jwt`, limiting keys with `rates`.
    #[must_use]
    pub fn new(store: AccountStore, jwt: JwtKeys, rates: RateLimits) -> Self {
        let attempts = Arc::new(AttemptLimits::new(rates.clock().clone()));
        let usage = UsageRecorder::new(store.pool().clone());
        let accounts = Accounts {
            store: store.clone(),
            jwt,
            attempts,
        };
        Self {
            inner: Arc::new(Inner {
                store,
                usage,
                rates,
                accounts,
            }),
        }
    }

    #[must_use]
    pub fn store(&self) -> &AccountStore {
        &self.inner.store
    }

    /// The batched usage counters (flushed by `serve_on`'s flusher).
    #[must_use]
    pub fn usage(&self) -> &UsageRecorder {
        &self.inner.usage
    }

    #[must_use]
    pub fn rates(&self) -> &RateLimits {
        &self.inner.rates
    }

    /// What account resolvers reach (installed in the schema's data).
    #[must_use]
    pub fn accounts(&self) -> Accounts {
        self.inner.accounts.clone()
    }

    /// Who the presented API key acts for.
    ///
    /// # Errors
    /// [`ApiError::Unauthenticated`] for no key or one that is not live (unknown, revoked,
    /// malformed, its user disabled); [`ApiError::AccountsUnavailable`] when Postgres does
    /// not answer (fail closed: nothing is served unauthenticated).
    pub async fn authenticate(&self, presented: Option<&str>) -> Result<Principal, ApiError> {
        let Some(presented) = presented.map(str::trim).filter(|key| !key.is_empty()) else {
            return Err(missing_key());
        };
        match self.inner.store.authenticate(presented).await {
            Ok(Some(principal)) => Ok(principal),
            Ok(None) => Err(invalid_key()),
            Err(error) => Err(error.into()),
        }
    }

    /// Counts one request of `principal`'s key against its tier's rate.
    ///
    /// # Errors
    /// [`RateRefused`]: RATE_LIMITED, with the headers' view (nothing remaining, the reset
    /// being the seconds to wait).
    pub fn admit(&self, principal: &Principal) -> Result<RateState, RateRefused> {
        self.inner.rates.check(principal).map_err(|refused| RateRefused {
            error: ApiError::RateLimited {
                message: format!(
                    "rate limit reached: this key's plan ({}) allows {} requests per minute; retry in {} s (see the Retry-After header), or upgrade for a higher rate",
                    principal.tier, refused.limit, refused.retry_after_secs
                ),
                retry_after_secs: refused.retry_after_secs,
            },
            state: RateState {
                limit: refused.limit,
                remaining: 0,
                reset_secs: refused.retry_after_secs,
            },
        })
    }

    /// Charges `operations` (one entry per priced field, page or instant) to `principal`'s
    /// account, atomically, under `request_id` (the handle for [`Gate::refund`]). Nothing is
    /// charged for an empty list.
    ///
    /// # Errors
    /// [`Refused`] with CREDITS_EXHAUSTED (and the balance that refused it), UNAVAILABLE
    /// when Postgres does not answer, or another accounts error.
    pub async fn charge(
        &self,
        principal: &Principal,
        operations: &[Operation],
        request_id: Uuid,
    ) -> Result<ChargeOutcome, Refused> {
        match self
            .inner
            .store
            .charge(principal, operations, request_id)
            .await
        {
            Ok(outcome) => Ok(outcome),
            Err(AccountsError::CreditsExhausted(exhausted)) => Err(Refused {
                error: ApiError::credits_exhausted(&exhausted),
                balance: Some(exhausted.balance),
            }),
            Err(error) => Err(Refused {
                error: error.into(),
                balance: None,
            }),
        }
    }

    /// The HTTP path's gate in (usually) one Postgres round trip: authenticates the key and
    /// charges `operations` under `request_id` in one statement, then counts the request
    /// against the key's rate. Same outcomes, errors and `metering` as
    /// [`Gate::authenticate`], then [`Gate::admit`], then [`Gate::charge`]: a request refused
    /// by its rate is refunded (it was charged in the same statement that found its key), and
    /// when the one statement could not charge, [`Gate::charge`] decides after the rate check.
    ///
    /// # Errors
    /// As those three calls.
    pub async fn authenticate_and_charge(
        &self,
        presented: Option<&str>,
        operations: &[Operation],
        request_id: Uuid,
        metering: &mut Metering,
    ) -> Result<Principal, ApiError> {
        let Some(presented) = presented.map(str::trim).filter(|key| !key.is_empty()) else {
            return Err(missing_key());
        };
        let (principal, charged) = match self
            .inner
            .store
            .authenticate_and_charge(presented, operations, request_id)
            .await
        {
            Ok(Some(found)) => found,
            Ok(None) => return Err(invalid_key()),
            Err(error) => return Err(error.into()),
        };
        match self.admit(&principal) {
            Ok(rate) => metering.rate = Some(rate),
            Err(refused) => {
                metering.rate = Some(refused.state);
                metering.retry_after_secs = Some(refused.state.reset_secs);
                if charged.is_some()
                    && let Err(error) = self.refund(&principal, request_id).await
                {
                    tracing::error!(%error, %request_id, account = %principal.account_id, "refund of a rate-limited request failed");
                }
                return Err(refused.error);
            }
        }
        let outcome = match charged {
            Some(outcome) => outcome,
            None if operations.is_empty() => return Ok(principal),
            None => match self.charge(&principal, operations, request_id).await {
                Ok(outcome) => outcome,
                Err(refused) => {
                    metering.credits = refused.balance.map(|balance| (balance, Credits::ZERO));
                    return Err(refused.error);
                }
            },
        };
        metering.credits = Some((outcome.balance, outcome.cost));
        Ok(principal)
    }

    /// Gives back what `request_id` was charged (it returned no data).
    ///
    /// # Errors
    /// The accounts error when the refund could not be written.
    pub async fn refund(
        &self,
        principal: &Principal,
        request_id: Uuid,
    ) -> Result<Balance, AccountsError> {
        self.inner.store.refund(principal, request_id).await
    }

    /// The dashboard session in `headers` (`Authorization: Bearer <access token>`).
    #[must_use]
    pub fn session(&self, headers: &HeaderMap) -> SessionCaller {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return SessionCaller::Absent;
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        match token.map(|t| self.inner.accounts.jwt.verify(t)) {
            Some(Ok(claims)) => SessionCaller::Valid {
                user_id: claims.sub,
                account_id: claims.acc,
            },
            _ => SessionCaller::Invalid,
        }
    }
}

fn missing_key() -> ApiError {
    ApiError::Unauthenticated(
        "this request reads market data and needs an API key: send it in the `X-API-Key` header (create one with the `createApiKey` mutation after `signup` or `login`)".to_owned(),
    )
}

fn invalid_key() -> ApiError {
    ApiError::Unauthenticated(
        "the API key in `X-API-Key` is not valid: it is unknown, revoked or mistyped; list your keys with `apiKeys` or create one with `createApiKey`".to_owned(),
    )
}

/// Where a request stands on credits and rate, written as response headers.
#[derive(Clone, Copy, Debug, Default)]
pub struct Metering {
    /// The balance after this request, and what it was charged (net of any refund).
    pub credits: Option<(Balance, Credits)>,
    pub rate: Option<RateState>,
    /// Seconds to wait (on 429), for `Retry-After`.
    pub retry_after_secs: Option<u64>,
}

impl Metering {
    /// Adds the `X-Credits-*`, `X-RateLimit-*` and `Retry-After` headers it knows.
    pub fn write(&self, headers: &mut HeaderMap) {
        let mut set = |name: &'static str, value: u64| {
            headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
        };
        if let Some((balance, cost)) = self.credits {
            set("x-credits-remaining", balance.remaining().get());
            set("x-credits-used", balance.used.get());
            set("x-credits-total", balance.total.get());
            set("x-credits-cost", cost.get());
        }
        if let Some(rate) = self.rate {
            set("x-ratelimit-limit", u64::from(rate.limit));
            set("x-ratelimit-remaining", u64::from(rate.remaining));
            set("x-ratelimit-reset", rate.reset_secs);
        }
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
    }
}
