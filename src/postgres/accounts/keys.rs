//! API keys at rest: created (the plaintext returned once, only hash and prefix stored),
//! listed and revoked inside the owner's tenant transaction, and authenticated by hash.

use time::OffsetDateTime;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{AccountStore, AccountsError, audit, tenant};
use crate::accounts::{Actor, ApiKey, Email, Principal, SecretHash, Tier};

/// Active (unrevoked) keys one account may hold.
pub const MAX_ACTIVE_KEYS: i64 = 20;

const MAX_NAME_CHARS: usize = 64;

/// What is known about a key after its creation: never the key itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    pub id: Uuid,
    pub account_id: Uuid,
    pub name: String,
    /// The visible start of the key, e.g. `kb_live_AbC1`.
    pub prefix: String,
    pub created_at: OffsetDateTime,
    /// Updated by the usage flusher, so up to one flush interval behind.
    pub last_used_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
}

impl KeyInfo {
    fn from_row(row: &Row) -> Self {
        Self {
            id: row.get("id"),
            account_id: row.get("account_id"),
            name: row.get("name"),
            prefix: row.get("key_prefix"),
            created_at: row.get("created_at"),
            last_used_at: row.get("last_used_at"),
            revoked_at: row.get("revoked_at"),
        }
    }
}

/// A key just created: `key` is the secret, to be shown to its owner now and never again.
#[derive(Debug)]
pub struct CreatedKey {
    pub key: ApiKey,
    pub info: KeyInfo,
}

const KEY_COLUMNS: &str = "id, account_id, name, key_prefix, created_at, last_used_at, revoked_at";

fn key_name(name: &str) -> Result<&str, AccountsError> {
    let name = name.trim();
    let chars = name.chars().count();
    if (1..=MAX_NAME_CHARS).contains(&chars) && !name.chars().any(char::is_control) {
        Ok(name)
    } else {
        Err(AccountsError::InvalidInput(format!(
            "a key name has 1 to {MAX_NAME_CHARS} characters and no control characters"
        )))
    }
}

impl AccountStore {
    /// Creates a key for `account_id` (in its tenant transaction) and audits it.
    ///
    /// # Errors
    /// [`AccountsError::InvalidInput`] for a bad name, [`AccountsError::TooManyKeys`] past
    /// [`MAX_ACTIVE_KEYS`], [`AccountsError::NotFound`] for an unknown account, or a
    /// database error.
    pub async fn create_key(
        &self,
        account_id: Uuid,
        name: &str,
        actor: &Actor,
    ) -> Result<CreatedKey, AccountsError> {
        let name = key_name(name)?;
        let mut client = self.client().await?;
        let tx = tenant(&mut client, account_id).await?;
        // Lock the account row so concurrent creations count keys one after another.
        let locked = tx
            .query_opt(
                "SELECT 1 FROM billing_accounts WHERE id = $1 FOR NO KEY UPDATE",
                &[&account_id],
            )
            .await?;
        if locked.is_none() {
            return Err(AccountsError::NotFound("account"));
        }
        let active: i64 = tx
            .query_one(
                "SELECT count(*) FROM api_keys WHERE account_id = $1 AND revoked_at IS NULL",
                &[&account_id],
            )
            .await?
            .get(0);
        if active >= MAX_ACTIVE_KEYS {
            return Err(AccountsError::TooManyKeys {
                max: MAX_ACTIVE_KEYS,
            });
        }
        let key = ApiKey::generate();
        let row = tx
            .query_one(
                &format!(
                    "INSERT INTO api_keys (account_id, name, key_prefix, key_hash) \
                     VALUES ($1, $2, $3, $4) RETURNING {KEY_COLUMNS}"
                ),
                &[
                    &account_id,
                    &name,
                    &key.prefix(),
                    &key.hash().as_bytes().as_slice(),
                ],
            )
            .await?;
        let info = KeyInfo::from_row(&row);
        audit::record(
            &tx,
            actor,
            Some(account_id),
            "key.created",
            &serde_json::json!({ "key_id": info.id, "name": info.name, "prefix": info.prefix }),
        )
        .await?;
        tx.commit().await?;
        Ok(CreatedKey { key, info })
    }

    /// Creates a key for the account of the user with `email` (the admin CLI's path).
    ///
    /// # Errors
    /// [`AccountsError::NotFound`] for an unknown email; otherwise as
    /// [`AccountStore::create_key`].
    pub async fn create_key_for_email(
        &self,
        email: &str,
        name: &str,
        actor: &Actor,
    ) -> Result<CreatedKey, AccountsError> {
        let user = self
            .find_user_by_email(email)
            .await?
            .ok_or(AccountsError::NotFound("user"))?;
        self.create_key(user.account_id, name, actor).await
    }

    /// The account's keys, revoked ones included, oldest first.
    ///
    /// # Errors
    /// A database error.
    pub async fn list_keys(&self, account_id: Uuid) -> Result<Vec<KeyInfo>, AccountsError> {
        let mut client = self.client().await?;
        let tx = tenant(&mut client, account_id).await?;
        // No account filter in the SQL: row-level security is what scopes it.
        let rows = tx
            .query(
                &format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, id"),
                &[],
            )
            .await?;
        tx.commit().await?;
        Ok(rows.iter().map(KeyInfo::from_row).collect())
    }

    /// Revokes one of the account's keys; it stops authenticating at once. Revoking a key
    /// again returns it unchanged (and audits nothing).
    ///
    /// # Errors
    /// [`AccountsError::NotFound`] when the account has no such key (another account's key
    /// included), or a database error.
    pub async fn revoke_key(
        &self,
        account_id: Uuid,
        key_id: Uuid,
        actor: &Actor,
    ) -> Result<KeyInfo, AccountsError> {
        let mut client = self.client().await?;
        let tx = tenant(&mut client, account_id).await?;
        let revoked = tx
            .query_opt(
                &format!(
                    "UPDATE api_keys SET revoked_at = now() \
                     WHERE id = $1 AND revoked_at IS NULL RETURNING {KEY_COLUMNS}"
                ),
                &[&key_id],
            )
            .await?;
        let info = if let Some(row) = revoked {
            let info = KeyInfo::from_row(&row);
            audit::record(
                &tx,
                actor,
                Some(account_id),
                "key.revoked",
                &serde_json::json!({ "key_id": info.id, "prefix": info.prefix }),
            )
            .await?;
            info
        } else {
            tx.query_opt(
                &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"),
                &[&key_id],
            )
            .await?
            .map(|row| KeyInfo::from_row(&row))
            .ok_or(AccountsError::NotFound("API key"))?
        };
        tx.commit().await?;
        Ok(info)
    }

    /// Revokes a key of the user with `email` (the admin CLI's path).
    ///
    /// # Errors
    /// As [`AccountStore::revoke_key`], and [`AccountsError::NotFound`] for an unknown email.
    pub async fn revoke_key_for_email(
        &self,
        email: &str,
        key_id: Uuid,
        actor: &Actor,
    ) -> Result<KeyInfo, AccountsError> {
        let email = Email::parse(email)?;
        let user = self
            .find_user_by_email(email.as_str())
            .await?
            .ok_or(AccountsError::NotFound("user"))?;
        self.revoke_key(user.account_id, key_id, actor).await
    }

    /// Who a presented API key acts for: `None` for anything that is not a live key (bad
    /// shape, unknown, revoked, or its user disabled). A malformed key costs no query.
    ///
    /// # Errors
    /// A database error (typically [`AccountsError::Unavailable`]).
    pub async fn authenticate(&self, presented: &str) -> Result<Option<Principal>, AccountsError> {
        match ApiKey::parse(presented) {
            Ok(key) => self.authenticate_key(&key).await,
            Err(_) => Ok(None),
        }
    }

    /// As [`AccountStore::authenticate`], for a key already parsed. System path: the key's
    /// account is what is being found out.
    ///
    /// # Errors
    /// A database error (typically [`AccountsError::Unavailable`]).
    pub async fn authenticate_key(&self, key: &ApiKey) -> Result<Option<Principal>, AccountsError> {
        let hash = key.hash();
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT k.id, k.account_id, k.key_hash, b.user_id, b.tier \
                 FROM api_keys k \
                 JOIN billing_accounts b ON b.id = k.account_id \
                 JOIN users u ON u.id = b.user_id \
                 WHERE k.key_hash = $1 AND k.revoked_at IS NULL AND u.disabled_at IS NULL",
            )
            .await?;
        let Some(row) = client
            .query_opt(&statement, &[&hash.as_bytes().as_slice()])
            .await?
        else {
            return Ok(None);
        };
        // The index found the row by equality already; comparing again in constant time
        // keeps the final decision free of early-exit timing.
        let stored = SecretHash::from_slice(row.get("key_hash"));
        if !stored.is_some_and(|stored| stored.ct_eq(&hash)) {
            return Ok(None);
        }
        let tier: &str = row.get("tier");
        let tier: Tier = tier.parse().map_err(AccountsError::internal)?;
        Ok(Some(Principal {
            account_id: row.get("account_id"),
            key_id: row.get("id"),
            user_id: row.get("user_id"),
            tier,
        }))
    }
}
