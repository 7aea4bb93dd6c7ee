//! Accounts, keys and credits against real Postgres (a fresh database per test): atomic
//! charges under concurrency, cycle rolls, key lifecycle, tenant isolation, secrets at rest,
//! sessions, usage batching and the admin CLI.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::TestEnv;
use kalshibook::accounts::{
    Actor, ApiKey, BillingCycle, Credits, JwtKeys, Operation, Principal, Tier,
};
use kalshibook::postgres::accounts::{
    AccountStore, AccountsError, UsageBucket, UsageQuery, UsageRecorder, User,
};
use time::OffsetDateTime;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const PASSWORD: &str = "correct horse battery";

/// The store as the server builds it: charges on their own pool.
fn store(env: &TestEnv) -> AccountStore {
    AccountStore::connect(&env.config.postgres).expect("pools")
}

async fn account(store: &AccountStore, email: &str) -> User {
    store
        .create_account(email, PASSWORD, &Actor::System)
        .await
        .expect("create account")
}

/// An account with one key, and the principal that key authenticates as.
async fn account_with_key(store: &AccountStore, email: &str) -> (User, ApiKey, Principal) {
    let user = account(store, email).await;
    let created = store
        .create_key(user.account_id, "test", &Actor::User(user.id))
        .await
        .expect("create key");
    let principal = store
        .authenticate(created.key.expose())
        .await
        .expect("authenticate")
        .expect("a fresh key authenticates");
    (user, created.key, principal)
}

/// What `synchronous_commit` the sessions of `pool` run with.
async fn synchronous_commit(pool: &deadpool_postgres::Pool) -> String {
    pool.get()
        .await
        .expect("connection")
        .query_one("SHOW synchronous_commit", &[])
        .await
        .expect("show")
        .get(0)
}

#[tokio::test]
async fn only_charges_skip_the_commit_flush_and_the_switch_restores_it() {
    let env = TestEnv::migrated().await;
    let mut config = env.config.postgres.clone();
    config.charge_sync_commit = false;
    let accounts = kalshibook::postgres::pool(&config).unwrap();
    let charges = kalshibook::postgres::charge_pool(&config).unwrap();
    assert_eq!(synchronous_commit(&accounts).await, "on");
    assert_eq!(synchronous_commit(&charges).await, "off");
    config.charge_sync_commit = true;
    let durable = kalshibook::postgres::charge_pool(&config).unwrap();
    assert_eq!(synchronous_commit(&durable).await, "on");
    // The statement timeout that bounds every statement still applies to both.
    let timeout: String = charges
        .get()
        .await
        .unwrap()
        .query_one("SHOW statement_timeout", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(timeout, "5s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_charges_never_spend_more_than_the_balance() {
    let env = TestEnv::migrated().await;
    let store = store(&env);
    let (user, _key, principal) = account_with_key(&store, "racer@example.com").await;
    let pg = env.postgres().await;
    pg.execute(
        "UPDATE billing_accounts SET credits_total = 10 WHERE id = $1",
        &[&user.account_id],
    )
    .await
    .unwrap();

    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .charge(&principal, &[Operation::OrderbookAt], Uuid::new_v4())
                    .await
            })
        })
        .collect();
    let (mut charged, mut exhausted) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(outcome) => {
                assert_eq!(outcome.cost, Credits::new(5));
                charged += 1;
            }
            Err(AccountsError::CreditsExhausted(refused)) => {
                assert_eq!(refused.cost, Credits::new(5));
                assert!(refused.balance.used >= Credits::new(5));
                assert!(refused.reset_at() > OffsetDateTime::now_utc());
                exhausted += 1;
            }
            Err(other) => panic!("unexpected error: {other:?}"),
        }
    }
    assert_eq!((charged, exhausted), (2, 198));

    let row = pg
        .query_one(
            "SELECT (SELECT sum(credits)::int8 FROM credit_ledger WHERE account_id = $1), \
                    (SELECT count(*) FROM credit_ledger WHERE account_id = $1), \
                    (SELECT credits_used FROM billing_accounts WHERE id = $1)",
            &[&user.account_id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 10, "ledger shows 10 credits used");
    assert_eq!(
        row.get::<_, i64>(1),
        2,
        "one ledger row per successful charge"
    );
    assert_eq!(row.get::<_, i64>(2), 10);
    let balance = store.balance(user.account_id).await.unwrap();
    assert_eq!(balance.remaining(), Credits::ZERO);
    env.cleanup().await;
}

#[tokio::test]
async fn a_query_is_charged_its_price_with_a_ledger_row_per_operation() {
    let env = TestEnv::migrated().await;
    let store = store(&env);
    let (user, _key, principal) = account_with_key(&store, "pricer@example.com").await;
    let request = Uuid::new_v4();
    let outcome = store
        .charge(
            &principal,
            &[
                Operation::DeltasPage,
                Operation::DeltasPage,
                Operation::Market,
            ],
            request,
        )
        .await
        .unwrap();
    assert_eq!(outcome.cost, Credits::new(5));
    assert_eq!(outcome.balance.used, Credits::new(5));
    assert_eq!(outcome.balance.total, Credits::new(1_000));
    assert_eq!(outcome.balance.remaining(), Credits::new(995));
    assert_eq!(outcome.overage, Credits::ZERO);
    let rows = env
        .postgres()
        .await
        .query(
            "SELECT operation, credits, api_key_id, request_id FROM credit_ledger \
             WHERE account_id = $1 ORDER BY operation",
            &[&user.account_id],
        )
        .await
        .unwrap();
    let lines: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(lines, [("deltas".to_owned(), 4), ("market".to_owned(), 1)]);
    assert!(
        rows.iter()
            .all(|r| r.get::<_, Option<Uuid>>(2) == Some(principal.key_id))
    );
    assert!(
        rows.iter()
            .all(|r| r.get::<_, Option<Uuid>>(3) == Some(request))
    );

    // Nothing to price: nothing written.
    let free = store.charge(&principal, &[], Uuid::new_v4()).await.unwrap();
    assert_eq!(
        (free.cost, free.balance.used),
        (Credits::ZERO, Credits::new(5))
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_cycle_rolls_once_at_the_next_charge() {
    let env = TestEnv::migrated().await;
    let store = store(&env);
    let (user, _key, principal) = account_with_key(&store, "roller@example.com").await;
    let pg = env.postgres().await;
    // Anchored 2 months and 3 days ago; the first cycle ended long since, fully spent, with a
    // grant that must not survive the roll.
    let anchor: OffsetDateTime = pg
        .query_one(
            "UPDATE billing_accounts \
                SET cycle_anchor = now() - interval '2 months 3 days', \
                    cycle_start = now() - interval '2 months 3 days', \
                    cycle_end = now() - interval '1 month 3 days', \
                    credits_used = 1500, credits_total = 1500 \
              WHERE id = $1 RETURNING cycle_anchor",
            &[&user.account_id],
        )
        .await
        .unwrap()
        .get(0);

    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .charge(&principal, &[Operation::OrderbookAt], Uuid::new_v4())
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().expect("the new cycle has room");
    }
    let balance = store.balance(user.account_id).await.unwrap();
    assert_eq!(balance.used, Credits::new(100), "usage restarted from zero");
    assert_eq!(
        balance.total,
        Tier::Free.limits().included_credits,
        "the allowance is the tier's again"
    );
    let now = OffsetDateTime::now_utc();
    assert!(balance.cycle.contains(now), "{:?}", balance.cycle);
    assert_eq!(
        balance.cycle,
        BillingCycle::containing(anchor, now),
        "Postgres and Rust agree"
    );
    let rolls: i64 = pg
        .query_one(
            "SELECT count(*) FROM audit_log WHERE account_id = $1 AND action = 'cycle.rolled'",
            &[&user.account_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        rolls, 1,
        "exactly one of the concurrent charges rolled the cycle"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn postgres_and_rust_compute_the_same_cycles() {
    let env = TestEnv::migrated().await;
    let pg = env.postgres().await;
    let anchors = [
        "2024-01-31 10:00:00+00",
        "2024-02-29 23:59:59.5+00",
        "2025-12-31 23:30:00-05",
        "2026-03-15 00:00:00+00",
        "2026-05-31 12:34:56+02",
    ];
    let mut pairs: Vec<(OffsetDateTime, OffsetDateTime)> = Vec::new();
    for anchor in anchors {
        let anchor: OffsetDateTime = pg
            .query_one("SELECT $1::text::timestamptz", &[&anchor])
            .await
            .unwrap()
            .get(0);
        let mut at = anchor - time::Duration::days(40);
        for _ in 0..400 {
            pairs.push((anchor, at));
            at += time::Duration::hours(29) + time::Duration::seconds(7);
        }
        // Exactly at each boundary and a microsecond before it.
        for n in 0..30 {
            let boundary = kalshibook::accounts::add_months(anchor, n);
            pairs.push((anchor, boundary));
            pairs.push((anchor, boundary - time::Duration::microseconds(1)));
        }
    }
    let (anchors, ats): (Vec<_>, Vec<_>) = pairs.iter().copied().unzip();
    let rows = pg
        .query(
            "SELECT c.cycle_start, c.cycle_end \
             FROM unnest($1::timestamptz[], $2::timestamptz[]) WITH ORDINALITY AS p (a, t, i), \
                  billing_cycle_containing(p.a, p.t) c ORDER BY p.i",
            &[&anchors, &ats],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), pairs.len());
    for ((anchor, at), row) in pairs.iter().zip(&rows) {
        let rust = BillingCycle::containing(*anchor, *at);
        let sql = BillingCycle {
            start: row.get(0),
            end: row.get(1),
        };
        assert_eq!(rust, sql, "anchor {anchor}, at {at}");
    }
    env.cleanup().await;
}

#[tokio::test]
async fn payg_spends_past_the_allowance_and_enqueues_the_overage() {
    let env = TestEnv::migrated().await;
    let store = store(&env);
    let (user, _key, principal) = account_with_key(&store, "payg@example.com").await;
    let pg = env.postgres().await;
    // PAYG without a Stripe customer cannot run into overage: nobody could be billed.
    pg.execute(
        "UPDATE billing_accounts SET tier = 'payg', payg_enabled = true, credits_total = 8 \
         WHERE id = $1",
        &[&user.account_id],
    )
    .await
    .unwrap();
    store
        .charge(&principal, &[Operation::OrderbookAt], Uuid::new_v4())
        .await
        .unwrap();
    let refused = store
        .charge(&principal, &[Operation::OrderbookAt], Uuid::new_v4())
        .await;
    assert!(
        matches!(refused, Err(AccountsError::CreditsExhausted(_))),
        "{refused:?}"
    );

    pg.execute(
        "UPDATE billing_accounts SET stripe_customer_id = 'cus_test' WHERE id = $1",
        &[&user.account_id],
    )
    .await
    .unwrap();
    let over = store
        .charge(&principal, &[Operation::OrderbookAt], Uuid::new_v4())
        .await
        .unwrap();
    assert_eq!(
        over.overage,
        Credits::new(2),
        "3 of the 5 were still in the allowance"
    );
    assert_eq!(over.balance.used, Credits::new(10));
    assert_eq!(over.balance.remaining(), Credits::ZERO);
    let again = store
        .charge(&principal, &[Operation::Market], Uuid::new_v4())
        .await
        .unwrap();
    assert_eq!(again.overage, Credits::new(1));
    let outbox: Vec<(String, i64, String)> = pg
        .query(
            "SELECT stripe_customer_id, value, event_name FROM meter_outbox \
             WHERE account_id = $1 AND sent_at IS NULL ORDER BY id",
            &[&user.account_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let name = kalshibook::postgres::accounts::METER_EVENT_NAME.to_owned();
    assert_eq!(
        outbox,
        [
            ("cus_test".to_owned(), 2, name.clone()),
            ("cus_test".to_owned(), 1, name)
        ]
    );
    env.cleanup().await;
}

#[tokio::test]
async fn refunds_give_back_a_request_once() {
    let env = TestEnv::migrated().await;
    let store = store(&env);
    let (user, _key, principal) = account_with_key(&store, "refund@example.com").await;
    let request = Uuid::new_v4();
    store
        .charge(
            &principal,
            &[Operation::OrderbookAt, Operation::TradesPage],
            request,
        )
        .await
        .unwrap();
    store
        .charge(&principal, &[Operation::Market], Uuid::new_v4())
        .await
        .unwrap();
    let after = store.refund(&principal, request).await.unwrap();
    assert_eq!(after.used, Credits::new(1));
    let again = store.refund(&principal, request).await.unwrap();
    assert_eq!(
        again.used,
        Credits::new(1),
        "a second refund gives nothing back"
    );
    let net: i64 = env
        .postgres()
        .await
        .query_one(
            "SELECT sum(credits)::int8 FROM credit_ledger WHERE account_id = $1",
            &[&user.account_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(net, 1, "the ledger explains the balance");
    env.cleanup().await;
}

#[tokio::test]
async fn grants_raise_this_cycles_allowance_and_are_audited() {
    let env = TestEnv::migrated().await;
    let store = store(&env);
    let user = account(&store, "Granted@Example.com").await;
    let balance = store
        .grant_credits(
            "granted@EXAMPLE.com",
            Credits::new(250),
            &Actor::Cli("ops".into()),
        )
        .await
        .unwrap();
    assert_eq!(balance.total, Credits::new(1_250));
    assert!(matches!(
        store
            .grant_credits("granted@example.com", Credits::ZERO, &Actor::System)
            .await,
        Err(AccountsError::InvalidInput(_))
    ));
    assert!(matches!(
        store
            .grant_credits("nobody@example.com", Credits::new(1), &Actor::System)
            .await,
        Err(AccountsError::NotFound(_))
    ));
    let pg = env.postgres().await;
    let ledger: (String, i64) = pg
        .query_one(
            "SELECT operation, credits FROM credit_ledger WHERE account_id = $1",
            &[&user.account_id],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(ledger, ("grant".to_owned(), -250));
    let actor: String = pg
        .query_one(
            "SELECT actor FROM audit_log WHERE account_id = $1 AND action = 'credits.granted'",
            &[&user.account_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(actor, "cli:ops");
    env.cleanup().await;
}

#[tokio::test]
async fn a_revoked_key_no_longer_authenticates() {
    let env = TestEnv::migrated().await;
    let store = store(&env);
    let (user, key, principal) = account_with_key(&store, "revoker@example.com").await;
    assert_eq!(principal.account_id, user.account_id);
    assert_eq!(principal.user_id, user.id);
    assert_eq!(principal.tier, Tier::Free);
    assert_eq!(principal.requests_per_minute(), 30);

    let revoked = store
        .revoke_key(user.account_id, principal.key_id, &Actor::User(user.id))
        .await
        .unwrap();
    assert!(revoked.revoked_at.is_some());
    assert_eq!(store.authenticate(key.expose()).await.unwrap(), None);
    let again = store
        .revoke_key(user.account_id, principal.key_id, &Actor::User(user.id))
        .await
        .unwrap();
    assert_eq!(
        again.revoked_at, revoked.revoked_at,
        "revoking twice changes nothing"
    );

    // Unknown and malformed keys are simply not principals.
    assert_eq!(
        store
            .authenticate(ApiKey::generate().expose())
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.authenticate("kb_live_nope").await.unwrap(), None);
    assert_eq!(store.authenticate("").await.unwrap(), None);

    let audit: Vec<String> = env
        .postgres()
        .await
        .query(
            "SELECT action FROM audit_log WHERE account_id = $1 ORDER BY id",
            &[&user.account_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(audit, ["account.created", "key.created", "key.revoked"]);
    env.cleanup().await;
}

#[tokio::test]
async fn a_disabled_user_cannot_use_keys_or_sign_in() {
    let env = TestEnv::migrated().await;
    let store = store(&env);
    let (user, key, _) = account_with_key(&store, "gone@example.com").await;
    env.postgres()
        .await
        .execute(
            "UPDATE users SET disabled_at = now() WHERE id = $1",
            &[&user.id],
        )
        .await
        .unwrap();
    assert_eq!(store.authenticate(key.expose()).await.unwrap(), None);
    assert!(matches!(
        store.verify_password("gone@example.com", PASSWORD).await,
        Err(AccountsError::InvalidCredentials)
    ));
    env.cleanup().await;
}

#[tokio::test]
async fn tenants_cannot_see_or_revoke_each_others_keys() {
    let env = TestEnv::migrated().await;
    let store = store(&env);
    let (a, a_key, a_principal) = account_with_key(&store, "a@example.com").await;
    let (b, _b_key, b_principal) = account_with_key(&store, "b@example.com").await;
    store
        .charge(&a_principal, &[Operation::Markets], Uuid::new_v4())
        .await
        .unwrap();

    let b_keys = store.list_keys(b.account_id).await.unwrap();
    assert_eq!(
        b_keys.iter().map(|k| k.id).collect::<Vec<_>>(),
        [b_principal.key_id]
    );
    assert!(matches!(
        store
            .revoke_key(b.account_id, a_principal.key_id, &Actor::User(b.id))
            .await,
        Err(AccountsError::NotFound(_))
    ));
    assert!(
        store.authenticate(a_key.expose()).await.unwrap().is_some(),
        "A's key survives B's attempt"
    );
    // B cannot create a key in A's account by naming it either: the tenant is the account.
    assert!(store.list_keys(a.account_id).await.unwrap().len() == 1);

    // Underneath, row-level security hides A's rows from B's tenant transaction.
    let mut pg = env.postgres().await;
    let tx = pg.transaction().await.unwrap();
    tx.execute(
        "SELECT set_config('role', 'kalshibook_tenant', true), \
                set_config('kalshibook.account_id', $1::uuid::text, true)",
        &[&b.account_id],
    )
    .await
    .unwrap();
    for (table, column) in [
        ("api_keys", "account_id"),
        ("credit_ledger", "account_id"),
        ("audit_log", "account_id"),
        ("billing_accounts", "id"),
    ] {
        let visible: i64 = tx
            .query_one(
                &format!("SELECT count(*) FROM {table} WHERE {column} = $1"),
                &[&a.account_id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(visible, 0, "{table}: A's rows are invisible to B");
    }
    let updated = tx
        .execute(
            "UPDATE api_keys SET revoked_at = now() WHERE id = $1",
            &[&a_principal.key_id],
        )
        .await
        .unwrap();
    assert_eq!(updated, 0, "and cannot be touched");
    drop(tx);
    env.cleanup().await;
}

#[tokio::test]
async fn no_secret_is_stored_in_plain_text() {
    let env = TestEnv::migrated().await;
    let store = store(&env);
    let jwt = JwtKeys::new(&[9; 32]).unwrap();
    let session = store
        .signup(&jwt, "secret@example.com", PASSWORD)
        .await
        .unwrap();
    let created = store
        .create_key(
            session.user.account_id,
            "mine",
            &Actor::User(session.user.id),
        )
        .await
        .unwrap();
    let key = created.key.expose().to_owned();
    let principal = store.authenticate(&key).await.unwrap().unwrap();
    store
        .charge(&principal, &[Operation::OrderbookAt], Uuid::new_v4())
        .await
        .unwrap();
    let recorder = UsageRecorder::new(store.pool().clone());
    recorder.record(
        &principal,
        &[Operation::OrderbookAt],
        OffsetDateTime::now_utc(),
    );
    recorder.flush().await.unwrap();

    let pg = env.postgres().await;
    let columns = pg
        .query(
            "SELECT table_name::text, column_name::text, data_type::text \
             FROM information_schema.columns \
             WHERE table_schema = 'public' \
               AND data_type IN ('text', 'character varying', 'bytea', 'jsonb', 'json')",
            &[],
        )
        .await
        .unwrap();
    assert!(columns.len() > 10, "every text-like column of every table");
    let secrets = [
        key.clone(),
        key[12..].to_owned(), // the part after the visible prefix
        session.refresh.expose().to_owned(),
        PASSWORD.to_owned(),
    ];
    for row in &columns {
        let (table, column, kind): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        let as_text = if kind == "bytea" {
            format!("encode({column}, 'escape')")
        } else {
            format!("{column}::text")
        };
        for secret in &secrets {
            let found: i64 = pg
                .query_one(
                    &format!("SELECT count(*) FROM {table} WHERE strpos({as_text}, $1) > 0"),
                    &[secret],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(found, 0, "{table}.{column} holds a secret in plain text");
        }
    }
    // What is stored is the SHA-256 of the key and its 12-character prefix.
    let stored = pg
        .query_one(
            "SELECT key_hash = sha256(convert_to($1, 'UTF8')), key_prefix FROM api_keys",
            &[&key],
        )
        .await
        .unwrap();
    assert!(stored.get::<_, bool>(0));
    assert_eq!(stored.get::<_, String>(1), key[..12]);
    env.cleanup().await;
}

#[tokio::test]
async fn passwords_are_stored_as_argon2id_and_checked() {
    let env = TestEnv::migrated().await;
    let store = store(&env);
    let user = account(&store, "Ann@Example.COM").await;
    assert_eq!(user.email, "Ann@example.com");
    let hash: String = env
        .postgres()
        .await
        .query_one("SELECT password_hash FROM users WHERE id = $1", &[&user.id])
        .await
        .unwrap()
        .get(0);
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );

    let found = store
        .verify_password(" ann@example.com ", PASSWORD)
        .await
        .expect("email is case-insensitive");
    assert_eq!(found.id, user.id);
    for (email, password) in [
        ("ann@example.com", "wrong password!"),
        ("nobody@example.com", PASSWORD),
        ("not an email", PASSWORD),
    ] {
        assert!(
            matches!(
                store.verify_password(email, password).await,
                Err(AccountsError::InvalidCredentials)
            ),
            "{email}"
        );
    }
    assert!(matches!(
        store
            .create_account("ANN@example.com", PASSWORD, &Actor::System)
            .await,
        Err(AccountsError::EmailTaken)
    ));
    let weak = store
        .create_account("bob@example.com", "short", &Actor::System)
        .await
        .unwrap_err();
    assert_eq!(weak.code(), "BAD_INPUT");
    assert!(weak.to_string().contains("12"), "{weak}");
    assert!(
        store
            .find_user_by_email("bob@example.com")
            .await
            .unwrap()
            .is_none()
    );
    env.cleanup().await;
}

#[tokio::test]
async fn sessions_refresh_by_rotation_and_end_at_logout() {
    let env = TestEnv::migrated().await;
    let store = store(&env);
    let jwt = JwtKeys::new(&[3; 32]).unwrap();
    let first = store
        .signup(&jwt, "dash@example.com", PASSWORD)
        .await
        .unwrap();
    let claims = jwt.verify(&first.access.token).unwrap();
    assert_eq!(
        (claims.sub, claims.acc),
        (first.user.id, first.user.account_id)
    );

    let second = store
        .refresh(&jwt, first.refresh.expose())
        .await
        .expect("refresh");
    assert_ne!(second.refresh.expose(), first.refresh.expose());
    assert!(jwt.verify(&second.access.token).is_ok());

    // Presenting the rotated-out token again means it leaked: every session ends.
    assert!(matches!(
        store.refresh(&jwt, first.refresh.expose()).await,
        Err(AccountsError::InvalidSession)
    ));
    assert!(matches!(
        store.refresh(&jwt, second.refresh.expose()).await,
        Err(AccountsError::InvalidSession)
    ));

    let third = store
        .login(&jwt, "dash@example.com", PASSWORD)
        .await
        .unwrap();
    // Another user's logout cannot end this session.
    store
        .logout(uuid::Uuid::new_v4(), Some(third.refresh.expose()))
        .await
        .unwrap();
    let third = store
        .refresh(&jwt, third.refresh.expose())
        .await
        .expect("still signed in");
    store
        .logout(third.user.id, Some(third.refresh.expose()))
        .await
        .unwrap();
    store
        .logout(third.user.id, Some(third.refresh.expose()))
        .await
        .unwrap();
    assert!(matches!(
        store.refresh(&jwt, third.refresh.expose()).await,
        Err(AccountsError::InvalidSession)
    ));
    // Without a token: every session of the user ends.
    let fourth = store
        .login(&jwt, "dash@example.com", PASSWORD)
        .await
        .unwrap();
    let fifth = store
        .login(&jwt, "dash@example.com", PASSWORD)
        .await
        .unwrap();
    store.logout(fourth.user.id, None).await.unwrap();
    for ended in [&fourth, &fifth] {
        assert!(matches!(
            store.refresh(&jwt, ended.refresh.expose()).await,
            Err(AccountsError::InvalidSession)
        ));
    }
    assert!(matches!(
        store.refresh(&jwt, "kb_rt_garbage").await,
        Err(AccountsError::InvalidSession)
    ));
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_batching_loses_nothing_across_flushes_and_shutdown() {
    let env = TestEnv::migrated().await;
    let store = store(&env);
    let (user, _, principal) = account_with_key(&store, "usage@example.com").await;
    let second_key = store
        .create_key(user.account_id, "second", &Actor::User(user.id))
        .await
        .unwrap();
    let other = store
        .authenticate(second_key.key.expose())
        .await
        .unwrap()
        .unwrap();

    let recorder = UsageRecorder::new(store.pool().clone());
    let shutdown = CancellationToken::new();
    let flusher = recorder.spawn_flusher(
        Duration::from_millis(20),
        Duration::from_secs(10),
        shutdown.clone(),
    );
    // Several writers record while the flusher runs; each yields now and then so flushes
    // interleave with recording.
    let start = OffsetDateTime::now_utc();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let recorder = recorder.clone();
            tokio::spawn(async move {
                for i in 0..500u32 {
                    let who = if w % 2 == 0 { principal } else { other };
                    let ops: &[Operation] = if i % 3 == 0 {
                        &[Operation::DeltasPage, Operation::DeltasPage]
                    } else {
                        &[Operation::OrderbookAt]
                    };
                    recorder.record(&who, ops, start + time::Duration::seconds(i64::from(i)));
                    if i % 50 == 0 {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    flusher.shutdown().await;
    assert_eq!(recorder.pending_buckets(), 0);

    // 8 writers × 500 requests: 167 of each writer's are two deltas pages (4 credits),
    // 333 an orderbook (5 credits).
    let pg = env.postgres().await;
    let totals: Vec<(i32, i64, i64)> = pg
        .query(
            "SELECT bucket_secs, sum(requests)::int8, sum(credits)::int8 FROM usage \
             GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let credits = 8 * (167 * 4 + 333 * 5);
    assert_eq!(totals, [(60, 4_000, credits), (3600, 4_000, credits)]);

    // Read back through the tenant's usage query.
    let hour = |at: OffsetDateTime| {
        OffsetDateTime::from_unix_timestamp(at.unix_timestamp().div_euclid(3600) * 3600).unwrap()
    };
    let range = UsageQuery {
        from: hour(start),
        to: hour(start) + time::Duration::hours(2),
        bucket: None,
        by_key: false,
        by_operation: true,
    };
    let by_op = store.usage(user.account_id, &range).await.unwrap();
    let lines: Vec<(Option<String>, u64, u64)> = by_op
        .iter()
        .map(|r| (r.operation.clone(), r.requests, r.credits.get()))
        .collect();
    assert_eq!(
        lines,
        [
            (Some("deltas".to_owned()), 8 * 167, 8 * 167 * 4),
            (Some("orderbook".to_owned()), 8 * 333, 8 * 333 * 5),
        ]
    );
    let by_key = store
        .usage(
            user.account_id,
            &UsageQuery {
                by_key: true,
                by_operation: false,
                bucket: Some(UsageBucket::Day),
                ..range
            },
        )
        .await
        .unwrap();
    let per_key: u64 = by_key.iter().map(|r| r.requests).sum();
    assert_eq!(per_key, 4_000);
    assert!(
        by_key
            .iter()
            .all(|r| r.bucket_start.is_some() && r.key_id.is_some())
    );
    let by_minute = store
        .usage(
            user.account_id,
            &UsageQuery {
                from: start - time::Duration::minutes(1),
                to: start + time::Duration::minutes(10),
                bucket: Some(UsageBucket::Minute),
                by_key: false,
                by_operation: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(by_minute.iter().map(|r| r.requests).sum::<u64>(), 4_000);
    assert!(by_minute.len() >= 9, "500 s of records span 9+ minutes");

    // Another tenant sees none of it.
    let stranger = account(&store, "stranger@example.com").await;
    assert!(
        store
            .usage(stranger.account_id, &range)
            .await
            .unwrap()
            .is_empty()
    );
    let bad = store
        .usage(
            user.account_id,
            &UsageQuery {
                to: range.from,
                ..range
            },
        )
        .await;
    assert!(matches!(bad, Err(AccountsError::InvalidInput(_))));

    // last_used_at followed the recorded uses.
    let last_used: Option<OffsetDateTime> = pg
        .query_one(
            "SELECT last_used_at FROM api_keys WHERE id = $1",
            &[&principal.key_id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(last_used.is_some_and(|at| at >= start));
    env.cleanup().await;
}

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

fn dead_store(port: u16) -> AccountStore {
    let config = kalshibook::config::PostgresConfig {
        url: kalshibook::config::Secret::new(format!(
            "postgres://postgres:postgres@127.0.0.1:{port}/nothing"
        )),
        pool_size: 2,
        charge_sync_commit: false,
    };
    AccountStore::connect(&config).unwrap()
}

#[tokio::test]
async fn postgres_down_is_unavailable_and_usage_is_kept() {
    let store = dead_store(closed_port().await);
    let error = store
        .authenticate(ApiKey::generate().expose())
        .await
        .unwrap_err();
    assert_eq!(error.code(), "UNAVAILABLE", "{error:?}");
    assert!(error.is_retriable());
    assert!(
        !error.to_string().contains("127.0.0.1"),
        "no internals: {error}"
    );
    let principal = Principal {
        account_id: Uuid::new_v4(),
        key_id: Uuid::new_v4(),
        user_id: Uuid::new_v4(),
        tier: Tier::Free,
    };
    let charge = store
        .charge(&principal, &[Operation::Market], Uuid::new_v4())
        .await
        .unwrap_err();
    assert_eq!(charge.code(), "UNAVAILABLE");

    let recorder = UsageRecorder::new(store.pool().clone());
    recorder.record(&principal, &[Operation::Market], OffsetDateTime::now_utc());
    let failed = recorder.flush().await.unwrap_err();
    assert_eq!(failed.code(), "UNAVAILABLE");
    assert_eq!(
        recorder.pending_buckets(),
        1,
        "a failed flush keeps its counts"
    );
    // Recording keeps working meanwhile and merges into the same bucket.
    recorder.record(&principal, &[Operation::Market], OffsetDateTime::now_utc());
    assert!(recorder.pending_buckets() <= 2);
}

#[tokio::test]
async fn an_account_holds_a_bounded_number_of_keys() {
    let env = TestEnv::migrated().await;
    let store = store(&env);
    let user = account(&store, "hoarder@example.com").await;
    let actor = Actor::User(user.id);
    let max = kalshibook::postgres::accounts::MAX_ACTIVE_KEYS;
    let mut last = None;
    for i in 0..max {
        last = Some(
            store
                .create_key(user.account_id, &format!("k{i}"), &actor)
                .await
                .unwrap(),
        );
    }
    let refused = store
        .create_key(user.account_id, "one too many", &actor)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), "FORBIDDEN");
    let last = last.unwrap();
    store
        .revoke_key(user.account_id, last.info.id, &actor)
        .await
        .unwrap();
    store
        .create_key(user.account_id, "room again", &actor)
        .await
        .expect("revoking makes room");
    for bad in ["", "   ", &"x".repeat(65), "tab\tname"] {
        assert!(matches!(
            store.create_key(user.account_id, bad, &actor).await,
            Err(AccountsError::InvalidInput(_))
        ));
    }
    env.cleanup().await;
}

async fn kalshibook(env: &TestEnv, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kalshibook"))
        .args(args)
        .env_clear()
        .envs(&env.vars)
        .env("USER", "operator")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kalshibook");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.unwrap();
    }
    drop(input);
    let output = child.wait_with_output().await.unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn admin_cli_creates_accounts_keys_and_grants() {
    let env = TestEnv::migrated().await;
    let (ok, out, err) = kalshibook(
        &env,
        &[
            "accounts",
            "create",
            "--email",
            "cli@example.com",
            "--password-stdin",
        ],
        Some(&format!("{PASSWORD}\n")),
    )
    .await;
    assert!(ok, "accounts create failed: {err}");
    assert!(out.contains("cli@example.com"), "{out}");

    let (ok, _, err) = kalshibook(
        &env,
        &[
            "accounts",
            "create",
            "--email",
            "cli@example.com",
            "--password",
            PASSWORD,
        ],
        None,
    )
    .await;
    assert!(!ok);
    assert!(err.contains("already exists"), "{err}");

    let (ok, out, err) = kalshibook(
        &env,
        &[
            "keys",
            "create",
            "--email",
            "cli@example.com",
            "--name",
            "bot",
        ],
        None,
    )
    .await;
    assert!(ok, "keys create failed: {err}");
    let key = out.trim();
    assert!(
        key.starts_with("kb_live_"),
        "only the key on stdout: {out:?}"
    );
    assert!(err.contains("shown only this once"), "{err}");
    let store = store(&env);
    let principal = store
        .authenticate(key)
        .await
        .unwrap()
        .expect("the printed key authenticates");

    let (ok, out, err) = kalshibook(
        &env,
        &[
            "credits",
            "grant",
            "--email",
            "cli@example.com",
            "--amount",
            "500",
        ],
        None,
    )
    .await;
    assert!(ok, "credits grant failed: {err}");
    assert!(out.contains("1500"), "{out}");
    assert_eq!(
        store.balance(principal.account_id).await.unwrap().total,
        Credits::new(1_500)
    );

    let (ok, out, err) =
        kalshibook(&env, &["keys", "list", "--email", "cli@example.com"], None).await;
    assert!(ok, "{err}");
    assert!(out.contains(&key[..12]) && !out.contains(key), "{out}");
    let id = principal.key_id.to_string();
    let (ok, _, err) = kalshibook(
        &env,
        &["keys", "revoke", "--email", "cli@example.com", "--id", &id],
        None,
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(store.authenticate(key).await.unwrap(), None);

    let (ok, _, err) = kalshibook(
        &env,
        &[
            "keys",
            "create",
            "--email",
            "nobody@example.com",
            "--name",
            "x",
        ],
        None,
    )
    .await;
    assert!(!ok);
    assert!(err.contains("not found"), "{err}");

    let audit: Vec<(String, String)> = env
        .postgres()
        .await
        .query(
            "SELECT actor, action FROM audit_log WHERE account_id = $1 ORDER BY id",
            &[&principal.account_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected: Vec<(String, String)> = [
        "account.created",
        "key.created",
        "credits.granted",
        "key.revoked",
    ]
    .into_iter()
    .map(|action| ("cli:operator".to_owned(), action.to_owned()))
    .collect();
    assert_eq!(audit, expected);
    env.cleanup().await;
}

#[tokio::test]
async fn one_statement_authenticates_and_charges_or_leaves_it_to_charge() {
    let env = TestEnv::migrated().await;
    let store = store(&env);
    let (user, key, principal) = account_with_key(&store, "fast@example.com").await;
    let pg = env.postgres().await;
    let request = Uuid::new_v4();
    let (found, outcome) = store
        .authenticate_and_charge(
            key.expose(),
            &[Operation::OrderbookAt, Operation::Market],
            request,
        )
        .await
        .unwrap()
        .expect("a live key");
    assert_eq!(found, principal);
    let outcome = outcome.expect("charged in the one statement");
    assert_eq!(outcome.cost, Credits::new(6));
    assert_eq!(outcome.balance.used, Credits::new(6));
    let lines: Vec<(String, i64, Uuid)> = pg
        .query(
            "SELECT operation, credits, api_key_id FROM credit_ledger \
              WHERE account_id = $1 AND request_id = $2 ORDER BY operation",
            &[&user.account_id, &request],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        lines,
        [
            ("market".to_owned(), 1, principal.key_id),
            ("orderbook".to_owned(), 5, principal.key_id)
        ]
    );
    assert_eq!(
        store.refund(&principal, request).await.unwrap().used,
        Credits::ZERO
    );

    // An allowance too short, or a cycle due to roll: authenticated, nothing spent here.
    pg.execute(
        "UPDATE billing_accounts SET credits_used = credits_total - 1 WHERE id = $1",
        &[&user.account_id],
    )
    .await
    .unwrap();
    let (_, outcome) = store
        .authenticate_and_charge(key.expose(), &[Operation::OrderbookAt], Uuid::new_v4())
        .await
        .unwrap()
        .expect("a live key");
    assert_eq!(outcome, None);
    pg.execute(
        "UPDATE billing_accounts \
            SET cycle_start = cycle_start - interval '1 month', \
                cycle_end = now() - interval '1 second' \
          WHERE id = $1",
        &[&user.account_id],
    )
    .await
    .unwrap();
    let (_, outcome) = store
        .authenticate_and_charge(key.expose(), &[Operation::Market], Uuid::new_v4())
        .await
        .unwrap()
        .expect("a live key");
    assert_eq!(outcome, None, "the roll is left to charge");
    let used: i64 = pg
        .query_one(
            "SELECT credits_used FROM billing_accounts WHERE id = $1",
            &[&user.account_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(used, 999, "nothing spent by the refused statements");

    // Not a live key: no principal and nothing spent, whatever the operations.
    let unknown = ApiKey::generate();
    for presented in ["", "kb_live_nope", unknown.expose()] {
        assert!(
            store
                .authenticate_and_charge(presented, &[Operation::Market], Uuid::new_v4())
                .await
                .unwrap()
                .is_none()
        );
    }
    store
        .revoke_key(user.account_id, principal.key_id, &Actor::User(user.id))
        .await
        .unwrap();
    assert!(
        store
            .authenticate_and_charge(key.expose(), &[Operation::Market], Uuid::new_v4())
            .await
            .unwrap()
            .is_none(),
        "a revoke takes effect on the next request"
    );
    env.cleanup().await;
}
