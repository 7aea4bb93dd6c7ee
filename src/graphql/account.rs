//! The caller's account over GraphQL: sign-up, sign-in, refresh and logout, API keys, `me`
//! (plan, credits, usage) and `estimateCost`. Thin: who is asking comes from the request's
//! data (session token or API key, checked by the HTTP layer), the work is the accounts
//! store's, every query of it scoped to the caller's own account (and by row-level security).

use async_graphql::{Context, Enum, ID, Object, SimpleObject};
use time::OffsetDateTime;
use uuid::Uuid;

use super::context::{Accounts, Caller, ClientAddr, SessionCaller};
use super::cost;
use super::error::ApiError;
use super::scalars::DateTimeScalar;
use crate::accounts::{Actor, Balance, Tier};
use crate::postgres::accounts::{KeyInfo, Session, UsageBucket, UsageQuery};

fn instant(at: OffsetDateTime) -> DateTimeScalar {
    DateTimeScalar(i64::try_from(at.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX))
}

fn offset(at: DateTimeScalar) -> Result<OffsetDateTime, ApiError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(at.0) * 1_000)
        .map_err(|_| ApiError::bad_input("from", "instant out of range"))
}

fn credits(value: crate::accounts::Credits) -> i64 {
    value.to_i64()
}

/// The signed-in user and account of the request: its valid session token.
///
/// # Errors
/// [`ApiError::Unauthenticated`] without a session or with an invalid or expired one.
pub fn session(ctx: &Context<'_>) -> Result<(Uuid, Uuid), ApiError> {
    match SessionCaller::of(ctx) {
        SessionCaller::Valid {
            user_id,
            account_id,
        } => Ok((user_id, account_id)),
        SessionCaller::Invalid => Err(ApiError::Unauthenticated(
            "the access token is invalid or has expired: get a new one with `refresh(refreshToken:)` or sign in again with `login`".to_owned(),
        )),
        SessionCaller::Absent => Err(ApiError::Unauthenticated(
            "this operation needs a dashboard session: send `Authorization: Bearer <accessToken>` with the token from `login` or `signup`".to_owned(),
        )),
    }
}

/// A signed-in session as returned by `signup`, `login` and `refresh`.
#[derive(SimpleObject)]
pub struct AuthPayload {
    /// Send as `Authorization: Bearer <accessToken>` for account operations.
    pub access_token: String,
    /// When the access token stops being accepted (15 minutes after issue).
    pub access_token_expires_at: DateTimeScalar,
    /// Exchange for a new session with `refresh` before it expires; shown once.
    pub refresh_token: String,
    /// When the refresh token expires (30 days after issue).
    pub refresh_token_expires_at: DateTimeScalar,
    /// The signed-in user.
    pub user_id: ID,
    /// The user's email, as stored.
    pub email: String,
    /// The user's billing account: the tenant keys, credits and usage belong to.
    pub account_id: ID,
}

impl From<Session> for AuthPayload {
    fn from(session: Session) -> Self {
        Self {
            access_token: session.access.token.clone(),
            access_token_expires_at: instant(session.access.expires_at),
            refresh_token: session.refresh.expose().to_owned(),
            refresh_token_expires_at: instant(session.refresh_expires_at),
            user_id: ID(session.user.id.to_string()),
            email: session.user.email,
            account_id: ID(session.user.account_id.to_string()),
        }
    }
}

/// An API key as listed: never the key itself, only its visible prefix.
#[derive(SimpleObject)]
#[graphql(name = "ApiKey")]
pub struct ApiKeyView {
    /// The key's id (for `revokeApiKey`); not the key.
    pub id: ID,
    /// The label given at creation.
    pub name: String,
    /// The first characters of the key, e.g. "kb_live_AbC1", to recognise it.
    pub prefix: String,
    /// When it was created.
    pub created_at: DateTimeScalar,
    /// Last request made with it (updated in batches, up to a minute behind).
    pub last_used_at: Option<DateTimeScalar>,
    /// When it was revoked; a revoked key is refused on its next request.
    pub revoked_at: Option<DateTimeScalar>,
}

impl From<KeyInfo> for ApiKeyView {
    fn from(info: KeyInfo) -> Self {
        Self {
            id: ID(info.id.to_string()),
            name: info.name,
            prefix: info.prefix,
            created_at: instant(info.created_at),
            last_used_at: info.last_used_at.map(instant),
            revoked_at: info.revoked_at.map(instant),
        }
    }
}

/// A key just created: `key` is shown now and never again (only its hash is stored).
#[derive(SimpleObject)]
pub struct CreatedApiKey {
    /// The secret: send it as the `X-API-Key` header. Store it now; it cannot be shown again.
    pub key: String,
    /// What is stored about it (what `apiKeys` lists).
    pub api_key: ApiKeyView,
}

/// How to split usage.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsageGroupBy {
    /// One row per UTC minute (ranges of at most 7 days).
    Minute,
    /// One row per UTC hour.
    Hour,
    /// One row per UTC day.
    Day,
    /// One row per API key.
    Key,
    /// One row per priced operation.
    Operation,
}

/// One line of usage; a field is null when the query did not group by it.
#[derive(SimpleObject)]
#[graphql(name = "UsageRow")]
pub struct UsageRowView {
    /// Start of the time bucket (UTC) when grouped by MINUTE, HOUR or DAY.
    pub bucket_start: Option<DateTimeScalar>,
    /// The key when grouped by KEY.
    pub api_key_id: Option<ID>,
    /// The priced operation (e.g. "orderbook") when grouped by OPERATION.
    pub operation: Option<String>,
    /// Requests counted.
    pub requests: i64,
    /// Credits they were charged.
    pub credits: i64,
}

/// The caller's account: plan, credits this cycle, usage.
pub struct Me {
    account_id: Uuid,
    tier: Tier,
    payg_enabled: bool,
    balance: Balance,
}

/// The caller's account: plan, credits this cycle, usage.
#[Object]
impl Me {
    /// The billing account's id.
    async fn account_id(&self) -> ID {
        ID(self.account_id.to_string())
    }

    /// FREE, PAYG or PROJECT.
    async fn tier(&self) -> String {
        self.tier.as_str().to_uppercase()
    }

    /// Whether usage past the allowance is billed per credit (PAYG).
    async fn payg_enabled(&self) -> bool {
        self.payg_enabled
    }

    /// Credits of this cycle: the tier's allowance plus grants.
    async fn credits_total(&self) -> i64 {
        credits(self.balance.total)
    }

    /// Credits spent this cycle.
    async fn credits_used(&self) -> i64 {
        credits(self.balance.used)
    }

    /// Credits left this cycle (`X-Credits-Remaining`).
    async fn credits_remaining(&self) -> i64 {
        credits(self.balance.remaining())
    }

    /// When the current billing cycle began.
    async fn cycle_start(&self) -> DateTimeScalar {
        instant(self.balance.cycle.start)
    }

    /// When the credits reset.
    async fn cycle_end(&self) -> DateTimeScalar {
        instant(self.balance.cycle.end)
    }

    /// Requests and credits in `[from, to)` (at most 400 days), grouped by time and/or key
    /// and/or operation. Recorded in batches: the last minute may not show yet.
    async fn usage(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Start of the range (inclusive).")] from: DateTimeScalar,
        #[graphql(desc = "End of the range (exclusive), at most 400 days after `from`.")]
        to: DateTimeScalar,
        #[graphql(
            default_with = "vec![UsageGroupBy::Day]",
            desc = "How to split: at most one of MINUTE, HOUR, DAY, plus KEY and/or OPERATION."
        )]
        group_by: Vec<UsageGroupBy>,
    ) -> async_graphql::Result<Vec<UsageRowView>> {
        let accounts = Accounts::of(ctx)?;
        let buckets: Vec<UsageBucket> = group_by
            .iter()
            .filter_map(|g| match g {
                UsageGroupBy::Minute => Some(UsageBucket::Minute),
                UsageGroupBy::Hour => Some(UsageBucket::Hour),
                UsageGroupBy::Day => Some(UsageBucket::Day),
                UsageGroupBy::Key | UsageGroupBy::Operation => None,
            })
            .collect();
        if buckets.len() > 1 {
            return Err(ApiError::bad_input(
                "groupBy",
                "group by at most one of MINUTE, HOUR, DAY",
            )
            .into());
        }
        let query = UsageQuery {
            from: offset(from)?,
            to: offset(to)?,
            bucket: buckets.first().copied(),
            by_key: group_by.contains(&UsageGroupBy::Key),
            by_operation: group_by.contains(&UsageGroupBy::Operation),
        };
        let rows = accounts
            .store
            .usage(self.account_id, &query)
            .await
            .map_err(ApiError::from)?;
        Ok(rows
            .into_iter()
            .map(|row| UsageRowView {
                bucket_start: row.bucket_start.map(instant),
                api_key_id: row.key_id.map(|id| ID(id.to_string())),
                operation: row.operation,
                requests: i64::try_from(row.requests).unwrap_or(i64::MAX),
                credits: credits(row.credits),
            })
            .collect())
    }
}

/// What a request would cost.
#[derive(SimpleObject)]
pub struct CostEstimate {
    /// Total credits (`X-Credits-Cost` when it runs).
    pub credits: i64,
    /// The priced operations it runs, in price-list order.
    pub operations: Vec<OperationCost>,
}

/// One priced operation of a request.
#[derive(SimpleObject)]
pub struct OperationCost {
    /// Its name in the price list and in usage, e.g. "orderbook".
    pub operation: String,
    /// How many times the request runs it.
    pub count: i32,
    /// Credits they cost together.
    pub credits: i64,
}

/// Prices a document without running it.
///
/// # Errors
/// [`ApiError::BadInput`] when it does not parse or names no operation it holds.
pub fn estimate_cost(
    query: &str,
    variables: Option<serde_json::Value>,
    operation_name: Option<&str>,
) -> Result<CostEstimate, ApiError> {
    let variables = match variables {
        None | Some(serde_json::Value::Null) => async_graphql::Variables::default(),
        Some(value @ serde_json::Value::Object(_)) => async_graphql::Variables::from_json(value),
        Some(_) => {
            return Err(ApiError::bad_input(
                "variables",
                "variables is a JSON object",
            ));
        }
    };
    let plan = cost::plan(query, operation_name, &variables)?;
    Ok(CostEstimate {
        credits: credits(plan.cost()),
        operations: plan
            .lines()
            .into_iter()
            .map(|(op, count, price)| OperationCost {
                operation: op.as_str().to_owned(),
                count: i32::try_from(count).unwrap_or(i32::MAX),
                credits: credits(price),
            })
            .collect(),
    })
}

/// `me`: by session, or by the API key of the request.
///
/// # Errors
/// UNAUTHENTICATED without either; UNAVAILABLE when the accounts database does not answer.
pub async fn me(ctx: &Context<'_>) -> Result<Me, ApiError> {
    let account_id = match (session(ctx), Caller::of(ctx).principal) {
        (Ok((_, account_id)), _) => account_id,
        (Err(_), Some(principal)) => principal.account_id,
        (Err(error), None) => return Err(error),
    };
    let summary = Accounts::of(ctx)?.store.account_summary(account_id).await?;
    Ok(Me {
        account_id,
        tier: summary.tier,
        payg_enabled: summary.payg_enabled,
        balance: summary.balance,
    })
}

/// `apiKeys`: the session's account's keys.
///
/// # Errors
/// UNAUTHENTICATED without a session; UNAVAILABLE when the accounts database does not answer.
pub async fn api_keys(ctx: &Context<'_>) -> Result<Vec<ApiKeyView>, ApiError> {
    let (_, account_id) = session(ctx)?;
    let keys = Accounts::of(ctx)?.store.list_keys(account_id).await?;
    Ok(keys.into_iter().map(ApiKeyView::from).collect())
}

/// Every mutation: account operations.
pub struct MutationRoot;

/// Account operations: sign-up, sign-in, sessions and API keys. They cost no credits.
#[Object(name = "Mutation")]
impl MutationRoot {
    /// Creates an account (Free tier: 1,000 credits a month, no card) and signs it in.
    /// Password: 12 to 128 characters. At most 5 attempts a minute per IP and per email
    /// (RATE_LIMITED).
    async fn signup(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The email to sign in with (case-insensitive).")] email: String,
        #[graphql(desc = "12 to 128 characters.")] password: String,
    ) -> async_graphql::Result<AuthPayload> {
        let accounts = Accounts::of(ctx)?;
        limit_attempt(ctx, accounts, &email)?;
        let session = accounts
            .store
            .signup(&accounts.jwt, &email, &password)
            .await
            .map_err(ApiError::from)?;
        Ok(session.into())
    }

    /// Signs in: a session (access token for 15 minutes, refresh token for 30 days). At most
    /// 5 attempts a minute per IP and per email (RATE_LIMITED).
    async fn login(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The account's email.")] email: String,
        #[graphql(desc = "Its password.")] password: String,
    ) -> async_graphql::Result<AuthPayload> {
        let accounts = Accounts::of(ctx)?;
        limit_attempt(ctx, accounts, &email)?;
        let session = accounts
            .store
            .login(&accounts.jwt, &email, &password)
            .await
            .map_err(ApiError::from)?;
        Ok(session.into())
    }

    /// Exchanges a refresh token for a new session; the presented token stops working.
    async fn refresh(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The refresh token of the current session.")] refresh_token: String,
    ) -> async_graphql::Result<AuthPayload> {
        let accounts = Accounts::of(ctx)?;
        let session = accounts
            .store
            .refresh(&accounts.jwt, &refresh_token)
            .await
            .map_err(ApiError::from)?;
        Ok(session.into())
    }

    /// Signs out: the session whose refresh token is given, or every session of the
    /// signed-in user when it is omitted. Their refresh tokens stop working (access tokens
    /// expire within 15 minutes). Needs the session's access token. Always true.
    async fn logout(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "The refresh token of the session to end; omitted: end every session of the user."
        )]
        refresh_token: Option<String>,
    ) -> async_graphql::Result<bool> {
        let (user_id, _) = session(ctx)?;
        let accounts = Accounts::of(ctx)?;
        accounts
            .store
            .logout(user_id, refresh_token.as_deref())
            .await
            .map_err(ApiError::from)?;
        Ok(true)
    }

    /// Creates an API key; the key is in the answer once and never again. Needs a session.
    /// At most 20 active keys per account.
    async fn create_api_key(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "A label, 1 to 64 characters.")] name: String,
    ) -> async_graphql::Result<CreatedApiKey> {
        let (user_id, account_id) = session(ctx)?;
        let created = Accounts::of(ctx)?
            .store
            .create_key(account_id, &name, &Actor::User(user_id))
            .await
            .map_err(ApiError::from)?;
        Ok(CreatedApiKey {
            key: created.key.expose().to_owned(),
            api_key: created.info.into(),
        })
    }

    /// Revokes one of the account's keys: refused from its next request on, on every server.
    /// Needs a session. NOT_FOUND for a key that is not the account's.
    async fn revoke_api_key(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The key's id, from `apiKeys` or `createApiKey`.")] id: ID,
    ) -> async_graphql::Result<ApiKeyView> {
        let (user_id, account_id) = session(ctx)?;
        let key_id: Uuid = id.parse().map_err(|_| {
            ApiError::bad_input("id", "id is an API key id (a UUID) from `apiKeys`")
        })?;
        let info = Accounts::of(ctx)?
            .store
            .revoke_key(account_id, key_id, &Actor::User(user_id))
            .await
            .map_err(ApiError::from)?;
        Ok(info.into())
    }
}

/// Counts a sign-in or sign-up attempt against its IP and email.
fn limit_attempt(ctx: &Context<'_>, accounts: &Accounts, email: &str) -> Result<(), ApiError> {
    let ClientAddr(ip) = ctx.data_opt::<ClientAddr>().copied().unwrap_or_default();
    accounts
        .attempts
        .check(ip, email)
        .map_err(|refused| ApiError::RateLimited {
            message: format!(
                "too many sign-in attempts: at most {} a minute per address and per email; retry in {} s",
                refused.limit, refused.retry_after_secs
            ),
            retry_after_secs: refused.retry_after_secs,
        })
}
