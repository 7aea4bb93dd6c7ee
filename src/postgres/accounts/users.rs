//! Users and dashboard sessions: sign-up, sign-in (argon2id), refresh-token rotation, logout.

use time::OffsetDateTime;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{AccountStore, AccountsError, audit, is_unique_violation};
use crate::accounts::{
    AccessToken, Actor, Email, JwtKeys, Password, REFRESH_TOKEN_TTL, RefreshToken, Tier, dummy_hash,
};

/// A person with a dashboard login, and the billing account they own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: Uuid,
    /// As typed at sign-up (domain lower-cased).
    pub email: String,
    pub account_id: Uuid,
    pub created_at: OffsetDateTime,
    pub disabled_at: Option<OffsetDateTime>,
}

impl User {
    fn from_row(row: &Row) -> Self {
        Self {
            id: row.get("id"),
            email: row.get("email"),
            account_id: row.get("account_id"),
            created_at: row.get("created_at"),
            disabled_at: row.get("disabled_at"),
        }
    }
}

/// A signed-in dashboard session: a short-lived access token for requests and a refresh
/// token (shown to the client once; only its hash is stored) to get the next one.
#[derive(Debug)]
pub struct Session {
    pub user: User,
    pub access: AccessToken,
    pub refresh: RefreshToken,
    pub refresh_expires_at: OffsetDateTime,
}

const USER_COLUMNS: &str = "u.id, u.email, b.id AS account_id, u.created_at, u.disabled_at";

/// Runs argon2 on a blocking thread: it is CPU-bound by design (~20–40 ms).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AccountsError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(AccountsError::internal)
}

impl AccountStore {
    /// Creates a user and their billing account (Free tier, first cycle starting now) in one
    /// transaction, and audits it.
    ///
    /// # Errors
    /// [`AccountsError::InvalidEmail`], [`AccountsError::WeakPassword`] (the message states the
    /// policy), [`AccountsError::EmailTaken`] (case-insensitively), or a database error.
    pub async fn create_account(
        &self,
        email: &str,
        password: &str,
        actor: &Actor,
    ) -> Result<User, AccountsError> {
        let email = Email::parse(email)?;
        let password = Password::new(password)?;
        let hash = blocking(move || password.hash())
            .await?
            .map_err(AccountsError::internal)?;
        let tier = Tier::Free;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let inserted = tx
            .query_one(
                "WITH u AS ( \
                     INSERT INTO users (email, password_hash) VALUES ($1, $2) \
                     RETURNING id, email, created_at, disabled_at), \
                 b AS ( \
                     INSERT INTO billing_accounts (user_id, tier, credits_total, credits_included, \
                                                   cycle_anchor, cycle_start, cycle_end) \
                     SELECT u.id, $3, $4, $4, now(), c.cycle_start, c.cycle_end \
                     FROM u, billing_cycle_containing(now(), now()) c \
                     RETURNING id) \
                 SELECT u.id, u.email, b.id AS account_id, u.created_at, u.disabled_at \
                 FROM u, b",
                &[
                    &email.as_str(),
                    &hash.as_str(),
                    &tier.as_str(),
                    &tier.limits().included_credits.to_i64(),
                ],
            )
            .await
            .map_err(|error| {
                if is_unique_violation(&error, "users_email_key") {
                    AccountsError::EmailTaken
                } else {
                    error.into()
                }
            })?;
        let user = User::from_row(&inserted);
        audit::record(
            &tx,
            actor,
            Some(user.account_id),
            "account.created",
            &serde_json::json!({ "user_id": user.id, "email": user.email, "tier": tier.as_str() }),
        )
        .await?;
        tx.commit().await?;
        Ok(user)
    }

    /// The user with this email (case-insensitive), disabled or not.
    ///
    /// # Errors
    /// [`AccountsError::InvalidEmail`] or a database error.
    pub async fn find_user_by_email(&self, email: &str) -> Result<Option<User>, AccountsError> {
        let email = Email::parse(email)?;
        Ok(self
            .find_user_with_hash(&email)
            .await?
            .map(|(user, _)| user))
    }

    async fn find_user_with_hash(
        &self,
        email: &Email,
    ) -> Result<Option<(User, String)>, AccountsError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {USER_COLUMNS}, u.password_hash FROM users u \
                 JOIN billing_accounts b ON b.user_id = u.id \
                 WHERE lower(u.email) = lower($1)"
            ))
            .await?;
        let row = client.query_opt(&statement, &[&email.as_str()]).await?;
        Ok(row.map(|row| (User::from_row(&row), row.get("password_hash"))))
    }

    /// Checks a sign-in. Takes as long for an unknown email as for a known one (a dummy hash
    /// is verified), so the answer does not reveal who has an account.
    ///
    /// # Errors
    /// [`AccountsError::InvalidCredentials`] for an unknown email, a wrong password or a
    /// disabled user, without saying which; or a database error.
    pub async fn verify_password(
        &self,
        email: &str,
        password: &str,
    ) -> Result<User, AccountsError> {
        let email = Email::parse(email).map_err(|_| AccountsError::InvalidCredentials)?;
        let password = Password::presented(password).ok_or(AccountsError::InvalidCredentials)?;
        let found = self.find_user_with_hash(&email).await?;
        let stored = found
            .as_ref()
            .map_or_else(|| dummy_hash().to_owned(), |(_, hash)| hash.clone());
        let matches = blocking(move || password.verify(&stored)).await?;
        match found {
            Some((user, _)) if matches && user.disabled_at.is_none() => Ok(user),
            _ => Err(AccountsError::InvalidCredentials),
        }
    }

    /// Creates an account (see [`AccountStore::create_account`]) and signs it in.
    ///
    /// # Errors
    /// As [`AccountStore::create_account`].
    pub async fn signup(
        &self,
        jwt: &JwtKeys,
        email: &str,
        password: &str,
    ) -> Result<Session, AccountsError> {
        let user = self.create_account(email, password, &Actor::System).await?;
        self.start_session(jwt, user).await
    }

    /// Signs in with email and password: a new session.
    ///
    /// # Errors
    /// As [`AccountStore::verify_password`].
    pub async fn login(
        &self,
        jwt: &JwtKeys,
        email: &str,
        password: &str,
    ) -> Result<Session, AccountsError> {
        let user = self.verify_password(email, password).await?;
        self.start_session(jwt, user).await
    }

    async fn start_session(&self, jwt: &JwtKeys, user: User) -> Result<Session, AccountsError> {
        let client = self.client().await?;
        let refresh = RefreshToken::generate();
        let statement = client.prepare_cached(INSERT_SESSION).await?;
        let row = client
            .query_one(
                &statement,
                &[&user.id, &refresh.hash().as_bytes().as_slice(), &ttl_secs()],
            )
            .await?;
        let access = jwt
            .issue(user.id, user.account_id, OffsetDateTime::now_utc())
            .map_err(AccountsError::internal)?;
        Ok(Session {
            user,
            access,
            refresh,
            refresh_expires_at: row.get(0),
        })
    }

    /// Exchanges a refresh token for a new session, revoking the presented token (rotation).
    /// A token that was already rotated or signed out being presented again means it was
    /// copied: every session of that user is then revoked.
    ///
    /// # Errors
    /// [`AccountsError::InvalidSession`] for an unknown, expired, revoked or malformed token
    /// or a disabled user; or a database error.
    pub async fn refresh(
        &self,
        jwt: &JwtKeys,
        refresh_token: &str,
    ) -> Result<Session, AccountsError> {
        let presented = RefreshToken::parse(refresh_token).ok_or(AccountsError::InvalidSession)?;
        let hash = presented.hash();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let rotated = tx
            .query_opt(
                "UPDATE sessions SET revoked_at = now() \
                 WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > now() \
                 RETURNING user_id",
                &[&hash.as_bytes().as_slice()],
            )
            .await?;
        let Some(rotated) = rotated else {
            let reused = tx
                .query_opt(
                    "SELECT user_id FROM sessions WHERE token_hash = $1 AND revoked_at IS NOT NULL",
                    &[&hash.as_bytes().as_slice()],
                )
                .await?;
            if let Some(reused) = reused {
                let user_id: Uuid = reused.get(0);
                tx.execute(
                    "UPDATE sessions SET revoked_at = now() \
                     WHERE user_id = $1 AND revoked_at IS NULL",
                    &[&user_id],
                )
                .await?;
                tx.commit().await?;
                tracing::warn!(%user_id, "a revoked refresh token was presented again: all sessions of the user revoked");
            }
            return Err(AccountsError::InvalidSession);
        };
        let user_id: Uuid = rotated.get(0);
        let user = tx
            .query_opt(
                &format!(
                    "SELECT {USER_COLUMNS} FROM users u JOIN billing_accounts b ON b.user_id = u.id \
                     WHERE u.id = $1 AND u.disabled_at IS NULL"
                ),
                &[&user_id],
            )
            .await?
            .map(|row| User::from_row(&row))
            .ok_or(AccountsError::InvalidSession)?;
        let refresh = RefreshToken::generate();
        let row = tx
            .query_one(
                INSERT_SESSION,
                &[&user.id, &refresh.hash().as_bytes().as_slice(), &ttl_secs()],
            )
            .await?;
        tx.commit().await?;
        let access = jwt
            .issue(user.id, user.account_id, OffsetDateTime::now_utc())
            .map_err(AccountsError::internal)?;
        Ok(Session {
            user,
            access,
            refresh,
            refresh_expires_at: row.get(0),
        })
    }

    /// Signs `user_id` out: of the session whose refresh token is given, or of every session
    /// when none is. Their refresh tokens stop working (current access tokens live out their
    /// few minutes). Idempotent; an unknown token, or another user's, changes nothing.
    ///
    /// # Errors
    /// A database error.
    pub async fn logout(
        &self,
        user_id: Uuid,
        refresh_token: Option<&str>,
    ) -> Result<(), AccountsError> {
        let client = self.client().await?;
        match refresh_token {
            Some(refresh_token) => {
                let Some(token) = RefreshToken::parse(refresh_token) else {
                    return Ok(());
                };
                client
                    .execute(
                        "UPDATE sessions SET revoked_at = now() \
                         WHERE token_hash = $1 AND user_id = $2 AND revoked_at IS NULL",
                        &[&token.hash().as_bytes().as_slice(), &user_id],
                    )
                    .await?;
            }
            None => {
                client
                    .execute(
                        "UPDATE sessions SET revoked_at = now() \
                         WHERE user_id = $1 AND revoked_at IS NULL",
                        &[&user_id],
                    )
                    .await?;
            }
        }
        Ok(())
    }
}

const INSERT_SESSION: &str = "INSERT INTO sessions (user_id, token_hash, expires_at) \
                              VALUES ($1, $2, now() + make_interval(secs => $3)) \
                              RETURNING expires_at";

fn ttl_secs() -> f64 {
    REFRESH_TOKEN_TTL.as_secs_f64()
}
