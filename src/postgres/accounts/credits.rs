//! Credits at rest: atomic charges, refunds, operator grants and balances.
//!
//! The balance is `billing_accounts.credits_used` against `credits_total`; every change to it
//! is one conditional UPDATE, in the same transaction as the ledger rows that explain it (and,
//! for PAYG overage, the meter-outbox row that bills it). Postgres's row lock and its re-check
//! of the WHERE clause on the locked row make concurrent charges queue on the account: they can
//! never together spend more than the allowance.

use std::collections::BTreeMap;

use tokio_postgres::Row;
use uuid::Uuid;

use super::{AccountStore, AccountsError, audit, tenant};
use crate::accounts::{
    Actor, ApiKey, Balance, BillingCycle, ChargeOutcome, Credits, CreditsExhausted, Operation,
    Principal, SecretHash, Tier, cost,
};

/// An account's plan and where it stands in its cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountSummary {
    pub tier: Tier,
    pub payg_enabled: bool,
    pub balance: Balance,
}

/// The Stripe meter event that PAYG overage rows in `meter_outbox` are sent as.
pub const METER_EVENT_NAME: &str = "kalshibook_credits";

/// The largest single operator grant, a guard against a typo of a few extra digits.
pub const MAX_GRANT: Credits = Credits::new(100_000_000);

/// One statement: spend `$2` if the cycle is current and the allowance (or PAYG with a Stripe
/// customer) covers it, write a ledger row per operation, and enqueue billed overage.
const CHARGE_SQL: &str = "\
WITH charged AS (
    UPDATE billing_accounts
       SET credits_used = credits_used + $2, updated_at = now()
     WHERE id = $1
       AND cycle_end > now()
       AND (credits_used + $2 <= credits_total
            OR (payg_enabled AND stripe_customer_id IS NOT NULL))
    RETURNING credits_used, credits_total, cycle_start, cycle_end, stripe_customer_id,
              least($2, greatest(credits_used - credits_total, 0)) AS overage
), ledger AS (
    INSERT INTO credit_ledger (account_id, api_key_id, operation, credits, request_id)
    SELECT $1, $3, l.operation, l.credits, $4
      FROM charged, unnest($5::text[], $6::int8[]) AS l (operation, credits)
    RETURNING id
), outbox AS (
    INSERT INTO meter_outbox (account_id, stripe_customer_id, event_name, value, identifier)
    SELECT $1, c.stripe_customer_id, $7, c.overage, 'credit_ledger:' || l.first_id
      FROM charged c, (SELECT min(id) AS first_id FROM ledger) l
     WHERE c.overage > 0
)
SELECT credits_used, credits_total, cycle_start, cycle_end, overage FROM charged";

/// The balance as it is now, whether the cycle is due to roll, and whether a charge of `$2`
/// would fit (the charge's own condition).
const BALANCE_SQL: &str = "\
SELECT credits_used, credits_total, cycle_start, cycle_end, cycle_end <= now() AS due,
       (credits_used + $2 <= credits_total
        OR (payg_enabled AND stripe_customer_id IS NOT NULL)) AS fits
  FROM billing_accounts WHERE id = $1";

/// The request path's one round trip: authenticate the key by `$1` (its hash: live, its user
/// not disabled) and, for that key's account only, charge `$2` exactly as [`CHARGE_SQL`] does
/// (ledger rows, PAYG overage to the outbox). A system-path statement, but the account it
/// writes is the one the key belongs to, found in the statement itself, so no request can
/// touch another tenant's rows. Returns no row for a key that is not live; a row with a null
/// `credits_used` when the key is live but the charge did not apply (cycle due to roll,
/// allowance short, or a concurrent change): the caller then takes the transactional path.
const AUTH_CHARGE_SQL: &str = "\
WITH key AS (
    SELECT k.id AS key_id, k.account_id, k.key_hash, b.user_id, b.tier
      FROM api_keys k
      JOIN billing_accounts b ON b.id = k.account_id
      JOIN users u ON u.id = b.user_id
     WHERE k.key_hash = $1 AND k.revoked_at IS NULL AND u.disabled_at IS NULL
), charged AS (
    UPDATE billing_accounts b
       SET credits_used = b.credits_used + $2, updated_at = now()
      FROM key
     WHERE b.id = key.account_id
       AND b.cycle_end > now()
       AND (b.credits_used + $2 <= b.credits_total
            OR (b.payg_enabled AND b.stripe_customer_id IS NOT NULL))
    RETURNING b.id, b.credits_used, b.credits_total, b.cycle_start, b.cycle_end,
              b.stripe_customer_id,
              least($2, greatest(b.credits_used - b.credits_total, 0)) AS overage
), ledger AS (
    INSERT INTO credit_ledger (account_id, api_key_id, operation, credits, request_id)
    SELECT c.id, k.key_id, l.operation, l.credits, $3
      FROM charged c, key k, unnest($4::text[], $5::int8[]) AS l (operation, credits)
    RETURNING id
), outbox AS (
    INSERT INTO meter_outbox (account_id, stripe_customer_id, event_name, value, identifier)
    SELECT c.id, c.stripe_customer_id, $6, c.overage, 'credit_ledger:' || l.first_id
      FROM charged c, (SELECT min(id) AS first_id FROM ledger) l
     WHERE c.overage > 0
)
SELECT k.key_id, k.account_id, k.key_hash, k.user_id, k.tier,
       c.credits_used, c.credits_total, c.cycle_start, c.cycle_end, c.overage
  FROM key k LEFT JOIN charged c ON true";

/// Tries of the charge statement in one transaction (see [`AccountStore::charge`]).
const MAX_CHARGE_ATTEMPTS: u32 = 4;

fn balance_from_row(row: &Row) -> Balance {
    Balance {
        used: Credits::from_i64(row.get("credits_used")),
        total: Credits::from_i64(row.get("credits_total")),
        cycle: BillingCycle {
            start: row.get("cycle_start"),
            end: row.get("cycle_end"),
        },
    }
}

/// Per operation: (name, credits), operations in price-list order.
fn ledger_lines(operations: &[Operation]) -> (Vec<&'static str>, Vec<i64>) {
    let mut lines: BTreeMap<Operation, Credits> = BTreeMap::new();
    for &op in operations {
        let line = lines.entry(op).or_default();
        *line = *line + cost(op);
    }
    lines
        .into_iter()
        .map(|(op, credits)| (op.as_str(), credits.to_i64()))
        .unzip()
}

impl AccountStore {
    /// Charges the price of `operations` (one entry per priced field or page) to the
    /// principal's account, atomically, in its tenant transaction. A cycle that has ended is
    /// rolled first (usage back to zero, allowance back to the tier's). PAYG accounts with a
    /// Stripe customer may go past the allowance; the excess is enqueued in `meter_outbox`.
    /// An empty list costs nothing and writes nothing.
    ///
    /// # Errors
    /// [`AccountsError::CreditsExhausted`] (nothing spent) when the allowance cannot cover the
    /// price; [`AccountsError::NotFound`] for an unknown account; a database error
    /// ([`AccountsError::Unavailable`] when Postgres is down).
    pub async fn charge(
        &self,
        principal: &Principal,
        operations: &[Operation],
        request_id: Uuid,
    ) -> Result<ChargeOutcome, AccountsError> {
        let (names, credits) = ledger_lines(operations);
        let price: Credits = operations.iter().copied().map(cost).sum();
        if price == Credits::ZERO {
            return Ok(ChargeOutcome {
                cost: price,
                balance: self.balance(principal.account_id).await?,
                overage: Credits::ZERO,
            });
        }
        let account = principal.account_id;
        let mut client = self.charge_client().await?;
        let tx = tenant(&mut client, account).await?;
        let charge = tx.prepare_cached(CHARGE_SQL).await?;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
            &account,
            &price.to_i64(),
            &principal.key_id,
            &request_id,
            &names,
            &credits,
            &METER_EVENT_NAME,
        ];
        let balance = tx.prepare_cached(BALANCE_SQL).await?;
        // The UPDATE sees the row as of its statement's start and, if that version is
        // locked by a concurrent charge, re-checks the newest one (so concurrent charges queue
        // and never overspend). It can still miss a change that *frees* credits (a cycle
        // rolled, a grant, a refund) committed just before it: so when it charges nothing,
        // look again and retry while the newest row says the charge fits. Each retry needs
        // such a change to have landed in between: a handful of attempts is plenty.
        let mut attempts = 0;
        let charged = loop {
            attempts += 1;
            if let Some(row) = tx.query_opt(&charge, &params).await? {
                break row;
            }
            let now = tx
                .query_opt(&balance, &[&account, &price.to_i64()])
                .await?
                .ok_or(AccountsError::NotFound("account"))?;
            if now.get::<_, bool>("due") && attempts < MAX_CHARGE_ATTEMPTS {
                tx.execute("SELECT roll_billing_cycle($1)", &[&account])
                    .await?;
            } else if !now.get::<_, bool>("fits") || attempts >= MAX_CHARGE_ATTEMPTS {
                return Err(CreditsExhausted {
                    cost: price,
                    balance: balance_from_row(&now),
                }
                .into());
            }
        };
        tx.commit().await?;
        Ok(ChargeOutcome {
            cost: price,
            balance: balance_from_row(&charged),
            overage: Credits::from_i64(charged.get("overage")),
        })
    }

    /// Authenticates `presented` and charges `operations` to its key's account in one round
    /// trip ([`AUTH_CHARGE_SQL`], prepared): `None` for anything that is not a live key (as
    /// [`AccountStore::authenticate`]); otherwise the principal and, when the one statement
    /// could charge, the charge. When it could not (a cycle to roll, an allowance that looks
    /// short, a concurrent change, or an empty list) nothing was spent, and
    /// [`AccountStore::charge`] is what decides, in its tenant transaction.
    ///
    /// # Errors
    /// A database error (typically [`AccountsError::Unavailable`]).
    pub async fn authenticate_and_charge(
        &self,
        presented: &str,
        operations: &[Operation],
        request_id: Uuid,
    ) -> Result<Option<(Principal, Option<ChargeOutcome>)>, AccountsError> {
        let Ok(key) = ApiKey::parse(presented) else {
            return Ok(None);
        };
        let price: Credits = operations.iter().copied().map(cost).sum();
        if price == Credits::ZERO {
            let principal = self.authenticate_key(&key).await?;
            return Ok(principal.map(|principal| (principal, None)));
        }
        let hash = key.hash();
        let (names, credits) = ledger_lines(operations);
        let row = {
            let client = self.charge_client().await?;
            let statement = client.prepare_cached(AUTH_CHARGE_SQL).await?;
            client
                .query_opt(
                    &statement,
                    &[
                        &hash.as_bytes().as_slice(),
                        &price.to_i64(),
                        &request_id,
                        &names,
                        &credits,
                        &METER_EVENT_NAME,
                    ],
                )
                .await?
        };
        let Some(row) = row else {
            return Ok(None);
        };
        // As in `authenticate_key`: the final decision compares in constant time. The index
        // matched these bytes by equality, so this never disagrees with the charge just made.
        let stored = SecretHash::from_slice(row.get("key_hash"));
        if !stored.is_some_and(|stored| stored.ct_eq(&hash)) {
            return Err(AccountsError::internal(std::io::Error::other(
                "a key hash matched by equality compared unequal",
            )));
        }
        let tier: &str = row.get("tier");
        let principal = Principal {
            account_id: row.get("account_id"),
            key_id: row.get("key_id"),
            user_id: row.get("user_id"),
            tier: tier.parse().map_err(AccountsError::internal)?,
        };
        let outcome = row
            .get::<_, Option<i64>>("credits_used")
            .is_some()
            .then(|| ChargeOutcome {
                cost: price,
                balance: balance_from_row(&row),
                overage: Credits::from_i64(row.get("overage")),
            });
        Ok(Some((principal, outcome)))
    }

    /// Gives back everything charged under `request_id` in the current cycle and not yet
    /// refunded (for a request that failed after it was charged). Idempotent: a second call
    /// refunds nothing. Overage already enqueued for Stripe stays billed.
    ///
    /// # Errors
    /// [`AccountsError::NotFound`] for an unknown account, or a database error.
    pub async fn refund(
        &self,
        principal: &Principal,
        request_id: Uuid,
    ) -> Result<Balance, AccountsError> {
        let account = principal.account_id;
        let mut client = self.client().await?;
        let tx = tenant(&mut client, account).await?;
        // The account row lock serialises refunds of one request, so each sees the other's
        // ledger rows (READ COMMITTED reads afresh after the lock).
        let cycle_start = tx
            .query_opt(
                "SELECT cycle_start FROM billing_accounts WHERE id = $1 FOR NO KEY UPDATE",
                &[&account],
            )
            .await?
            .ok_or(AccountsError::NotFound("account"))?;
        let cycle_start: time::OffsetDateTime = cycle_start.get(0);
        let refunded: i64 = tx
            .query_one(
                "WITH refund AS ( \
                     INSERT INTO credit_ledger (account_id, api_key_id, operation, credits, request_id) \
                     SELECT account_id, api_key_id, operation, -sum(credits), request_id \
                       FROM credit_ledger \
                      WHERE account_id = $1 AND request_id = $2 AND created_at >= $3 \
                      GROUP BY account_id, api_key_id, operation, request_id \
                     HAVING sum(credits) > 0 \
                     RETURNING credits) \
                 SELECT coalesce(-sum(credits), 0)::int8 FROM refund",
                &[&account, &request_id, &cycle_start],
            )
            .await?
            .get(0);
        let row = tx
            .query_one(
                "UPDATE billing_accounts \
                    SET credits_used = greatest(credits_used - $2, 0), updated_at = now() \
                  WHERE id = $1 \
                 RETURNING credits_used, credits_total, cycle_start, cycle_end",
                &[&account, &refunded],
            )
            .await?;
        tx.commit().await?;
        Ok(balance_from_row(&row))
    }

    /// The account's balance in its current cycle (rolling it first if it has ended).
    ///
    /// # Errors
    /// [`AccountsError::NotFound`] for an unknown account, or a database error.
    pub async fn balance(&self, account_id: Uuid) -> Result<Balance, AccountsError> {
        let mut client = self.client().await?;
        let tx = tenant(&mut client, account_id).await?;
        tx.execute("SELECT roll_billing_cycle($1)", &[&account_id])
            .await?;
        let statement = tx.prepare_cached(BALANCE_SQL).await?;
        let row = tx
            .query_opt(&statement, &[&account_id, &0i64])
            .await?
            .ok_or(AccountsError::NotFound("account"))?;
        tx.commit().await?;
        Ok(balance_from_row(&row))
    }

    /// The account's plan and balance in its current cycle (rolling it first if it has
    /// ended), read in its tenant transaction: for `me`.
    ///
    /// # Errors
    /// [`AccountsError::NotFound`] for an unknown account (or another tenant's), or a database
    /// error.
    pub async fn account_summary(&self, account_id: Uuid) -> Result<AccountSummary, AccountsError> {
        let mut client = self.client().await?;
        let tx = tenant(&mut client, account_id).await?;
        tx.execute("SELECT roll_billing_cycle($1)", &[&account_id])
            .await?;
        let row = tx
            .query_opt(
                "SELECT tier, payg_enabled, credits_used, credits_total, cycle_start, cycle_end \
                   FROM billing_accounts WHERE id = $1",
                &[&account_id],
            )
            .await?
            .ok_or(AccountsError::NotFound("account"))?;
        tx.commit().await?;
        let tier: &str = row.get("tier");
        Ok(AccountSummary {
            tier: tier.parse().map_err(AccountsError::internal)?,
            payg_enabled: row.get("payg_enabled"),
            balance: balance_from_row(&row),
        })
    }

    /// Adds `amount` credits to the current cycle's allowance of the account of `email` (an
    /// operator's grant: it lasts until the cycle ends). Writes a ledger row (negative
    /// credits, operation `grant`) and an audit row.
    ///
    /// # Errors
    /// [`AccountsError::InvalidInput`] for zero or more than [`MAX_GRANT`],
    /// [`AccountsError::NotFound`] for an unknown email, or a database error.
    pub async fn grant_credits(
        &self,
        email: &str,
        amount: Credits,
        actor: &Actor,
    ) -> Result<Balance, AccountsError> {
        if amount == Credits::ZERO || amount > MAX_GRANT {
            return Err(AccountsError::InvalidInput(format!(
                "a grant is 1 to {MAX_GRANT} credits"
            )));
        }
        let user = self
            .find_user_by_email(email)
            .await?
            .ok_or(AccountsError::NotFound("user"))?;
        let account = user.account_id;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT roll_billing_cycle($1)", &[&account])
            .await?;
        let row = tx
            .query_one(
                "UPDATE billing_accounts \
                    SET credits_total = credits_total + $2, updated_at = now() \
                  WHERE id = $1 \
                 RETURNING credits_used, credits_total, cycle_start, cycle_end",
                &[&account, &amount.to_i64()],
            )
            .await?;
        tx.execute(
            "INSERT INTO credit_ledger (account_id, operation, credits) VALUES ($1, 'grant', $2)",
            &[&account, &-amount.to_i64()],
        )
        .await?;
        let balance = balance_from_row(&row);
        audit::record(
            &tx,
            actor,
            Some(account),
            "credits.granted",
            &serde_json::json!({
                "credits": amount.get(),
                "credits_total": balance.total.get(),
                "cycle_end": balance.cycle.end.unix_timestamp(),
            }),
        )
        .await?;
        tx.commit().await?;
        Ok(balance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_lines_sum_repeated_operations() {
        let (names, credits) = ledger_lines(&[
            Operation::DeltasPage,
            Operation::OrderbookAt,
            Operation::DeltasPage,
        ]);
        assert_eq!(names, ["deltas", "orderbook"]);
        assert_eq!(credits, [4, 5]);
    }
}
