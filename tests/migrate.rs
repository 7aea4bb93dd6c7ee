//! `kalshibook migrate` against the real ClickHouse engine and real Postgres.

mod common;

use std::process::Stdio;

use common::TestEnv;

const CLICKHOUSE_TABLES: &[&str] = &[
    "deltas",
    "snapshots",
    "trades",
    "markets",
    "feed_gaps",
    "raw_frames",
    "raw_frame_blocks",
    "top_of_book",
    "trade_candles_1m",
    "trade_candles_1m_mv",
    "quote_candles_1m",
    "quote_candles_1m_mv",
    "schema_migrations",
];

const POSTGRES_TABLES: &[&str] = &[
    "users",
    "billing_accounts",
    "api_keys",
    "sessions",
    "credit_ledger",
    "usage",
    "stripe_events",
    "meter_outbox",
    "audit_log",
    "schema_migrations",
];

async fn clickhouse_tables(env: &TestEnv) -> Vec<String> {
    env.clickhouse()
        .query("SELECT name FROM system.tables WHERE database = currentDatabase() ORDER BY name")
        .fetch_all::<String>()
        .await
        .expect("list ClickHouse tables")
}

async fn postgres_tables(env: &TestEnv) -> Vec<String> {
    env.postgres()
        .await
        .query(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = 'public' ORDER BY 1",
            &[],
        )
        .await
        .expect("list Postgres tables")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// (ClickHouse, Postgres) applied versions, in order, duplicates included.
async fn history(env: &TestEnv) -> (Vec<i32>, Vec<i32>) {
    let clickhouse = env
        .clickhouse()
        .query("SELECT version FROM schema_migrations ORDER BY version")
        .fetch_all::<i32>()
        .await
        .expect("ClickHouse history");
    let postgres = env
        .postgres()
        .await
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .expect("Postgres history")
        .iter()
        .map(|row| row.get(0))
        .collect();
    (clickhouse, postgres)
}

fn expected_versions(runner: &refinery::Runner) -> Vec<i32> {
    runner
        .get_migrations()
        .iter()
        .map(|m| m.version())
        .collect()
}

#[tokio::test]
async fn migrate_creates_every_table_and_records_every_version() {
    let env = TestEnv::new().await;
    let report = kalshibook::migrate::run(&env.config)
        .await
        .expect("migrate");
    let ch_expected = expected_versions(&kalshibook::clickhouse::migrations::runner());
    let pg_expected = expected_versions(&kalshibook::postgres::migrations::runner());
    assert_eq!(report.clickhouse_applied.len(), ch_expected.len());
    assert_eq!(report.postgres_applied.len(), pg_expected.len());

    let ch_tables = clickhouse_tables(&env).await;
    for table in CLICKHOUSE_TABLES {
        assert!(
            ch_tables.iter().any(|t| t == table),
            "ClickHouse lacks {table}: {ch_tables:?}"
        );
    }
    let pg_tables = postgres_tables(&env).await;
    for table in POSTGRES_TABLES {
        assert!(
            pg_tables.iter().any(|t| t == table),
            "Postgres lacks {table}: {pg_tables:?}"
        );
    }
    assert_eq!(history(&env).await, (ch_expected, pg_expected));
    env.cleanup().await;
}

#[tokio::test]
async fn second_migrate_applies_nothing() {
    let env = TestEnv::migrated().await;
    let before = history(&env).await;
    let report = kalshibook::migrate::run(&env.config)
        .await
        .expect("second migrate");
    assert!(
        report.clickhouse_applied.is_empty(),
        "{:?}",
        report.clickhouse_applied
    );
    assert!(
        report.postgres_applied.is_empty(),
        "{:?}",
        report.postgres_applied
    );
    assert_eq!(history(&env).await, before);
    env.cleanup().await;
}

#[tokio::test]
async fn concurrent_migrate_processes_all_succeed_and_apply_once() {
    let env = TestEnv::new().await;
    let children: Vec<_> = (0..4)
        .map(|_| {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_kalshibook"))
                .arg("migrate")
                .env_clear()
                .envs(&env.vars)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn kalshibook migrate")
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().await.expect("migrate process");
        assert!(
            output.status.success(),
            "migrate failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let expected = (
        expected_versions(&kalshibook::clickhouse::migrations::runner()),
        expected_versions(&kalshibook::postgres::migrations::runner()),
    );
    assert_eq!(
        history(&env).await,
        expected,
        "each version recorded exactly once"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn changed_postgres_migration_is_refused() {
    let env = TestEnv::migrated().await;
    env.postgres()
        .await
        .execute(
            "UPDATE schema_migrations SET checksum = '1' WHERE version = 1",
            &[],
        )
        .await
        .expect("tamper");
    let error = kalshibook::migrate::run(&env.config)
        .await
        .expect_err("a changed migration must be refused")
        .to_string();
    assert!(error.contains("Postgres"), "{error}");
    assert!(error.to_lowercase().contains("different than"), "{error}");
    env.cleanup().await;
}

#[tokio::test]
async fn changed_clickhouse_migration_is_refused() {
    let env = TestEnv::migrated().await;
    let client = env.clickhouse();
    let v1 = kalshibook::clickhouse::migrations::runner().get_migrations()[0].clone();
    client
        .query("TRUNCATE TABLE schema_migrations")
        .execute()
        .await
        .expect("truncate");
    client
        .query("INSERT INTO schema_migrations VALUES (1, ?, '2026-01-01T00:00:00Z', '1')")
        .bind(v1.name())
        .execute()
        .await
        .expect("tamper");
    let error = kalshibook::migrate::run(&env.config)
        .await
        .expect_err("a changed migration must be refused")
        .to_string();
    assert!(error.contains("ClickHouse"), "{error}");
    assert!(error.to_lowercase().contains("different than"), "{error}");
    env.cleanup().await;
}

/// Row-level security: a session acting for account A sees none of B's rows, even when it
/// asks for them by id, and cannot write rows for B.
#[tokio::test]
async fn tenant_sessions_see_only_their_own_rows() {
    let env = TestEnv::migrated().await;
    let mut pg = env.postgres().await;
    let mut accounts = Vec::new();
    for name in ["a", "b"] {
        let row = pg
            .query_one(
                "WITH u AS (INSERT INTO users (email, password_hash) \
                   VALUES ($1, '$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA') RETURNING id), \
                 b AS (INSERT INTO billing_accounts (user_id, tier, credits_total, cycle_start, cycle_end) \
                   SELECT id, 'free', 1000, now(), now() + interval '1 month' FROM u RETURNING id) \
                 INSERT INTO api_keys (account_id, name, key_prefix, key_hash) \
                   SELECT id, 'k', 'kb_live_' || $2, sha256($2::bytea) FROM b RETURNING account_id::text",
                &[&format!("{name}@example.com"), &name],
            )
            .await
            .expect("seed account");
        accounts.push(row.get::<_, String>(0));
    }
    let (a, b) = (&accounts[0], &accounts[1]);

    let tx = pg.transaction().await.unwrap();
    tx.execute(
        "SELECT set_config('role', 'kalshibook_tenant', true), \
                set_config('kalshibook.account_id', $1, true)",
        &[a],
    )
    .await
    .unwrap();
    let all: i64 = tx
        .query_one("SELECT count(*) FROM api_keys", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(all, 1, "only A's key is visible");
    let of_b: i64 = tx
        .query_one(
            "SELECT count(*) FROM api_keys WHERE account_id = $1::text::uuid",
            &[b],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(of_b, 0, "B's rows stay invisible even when asked for by id");
    let write = tx
        .execute(
            "INSERT INTO api_keys (account_id, name, key_prefix, key_hash) \
             VALUES ($1::text::uuid, 'x', 'kb_live_x', sha256('x'::bytea))",
            &[b],
        )
        .await;
    assert!(write.is_err(), "writing B's rows is refused");
    drop(tx);

    // Without an account set, a tenant session sees nothing.
    let tx = pg.transaction().await.unwrap();
    tx.execute("SELECT set_config('role', 'kalshibook_tenant', true)", &[])
        .await
        .unwrap();
    let none: i64 = tx
        .query_one("SELECT count(*) FROM api_keys", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(none, 0);
    drop(tx);
    env.cleanup().await;
}
