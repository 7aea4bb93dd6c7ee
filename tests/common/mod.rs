//! Test support: real engines, a fresh database in each for every test.
//!
//! The engines are started by the test command (`./dev test`); tests only connect. Each
//! test gets its own ClickHouse database and Postgres database, named `kb_test_*`, so
//! parallel tests never see each other's rows. `./dev test` drops leftovers before a run.

#![allow(dead_code)]

pub mod exchange;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};

use kalshibook::config::Config;
use tokio_postgres::NoTls;

/// The ClickHouse HTTP endpoint tests use (the local launcher by default).
pub fn clickhouse_url() -> String {
    std::env::var("KALSHIBOOK_TEST_CLICKHOUSE_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:8123".to_owned())
}

/// A Postgres URL with rights to create databases; its database part is replaced per test.
pub fn postgres_admin_url() -> String {
    std::env::var("KALSHIBOOK_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `url` with its database name replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let root = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{root}/{database}?{query}"),
        None => format!("{root}/{database}"),
    }
}

fn unique_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let random: u32 = rand::random();
    format!("kb_test_{}_{n}_{random:08x}", std::process::id())
}

/// One test's private pair of databases and a config pointing at them.
pub struct TestEnv {
    pub name: String,
    pub vars: HashMap<String, String>,
    pub config: Config,
}

impl TestEnv {
    /// Creates an empty Postgres database (ClickHouse's is created by `migrate`).
    pub async fn new() -> Self {
        let name = unique_name();
        let admin = admin_client().await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("cannot create Postgres database {name}: {e}"));
        let vars: HashMap<String, String> = [
            ("KALSHIBOOK_CLICKHOUSE_URL", clickhouse_url()),
            ("KALSHIBOOK_CLICKHOUSE_DATABASE", name.clone()),
            (
                "KALSHIBOOK_POSTGRES_URL",
                with_database(&postgres_admin_url(), &name),
            ),
            ("KALSHIBOOK_LISTEN_ADDR", "127.0.0.1:0".to_owned()),
            ("KALSHIBOOK_LOG", "warn".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let config = Config::from_lookup(|key| vars.get(key).cloned()).expect("test config");
        kalshibook::telemetry::install_crypto_provider();
        Self { name, vars, config }
    }

    /// A fresh environment with every migration applied.
    pub async fn migrated() -> Self {
        let env = Self::new().await;
        kalshibook::migrate::run(&env.config)
            .await
            .expect("migrations apply to fresh databases");
        env
    }

    pub fn clickhouse(&self) -> clickhouse::Client {
        kalshibook::clickhouse::client(&self.config.clickhouse)
    }

    pub async fn postgres(&self) -> tokio_postgres::Client {
        connect(self.config.postgres.url.expose()).await
    }

    /// Drops both databases.
    pub async fn cleanup(self) {
        let _ = kalshibook::clickhouse::server_client(&self.config.clickhouse)
            .query(&format!("DROP DATABASE IF EXISTS {}", self.name))
            .execute()
            .await;
        let admin = admin_client().await;
        let _ = admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await;
    }
}

pub async fn admin_client() -> tokio_postgres::Client {
    connect(&postgres_admin_url()).await
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("cannot reach Postgres at {url} ({e}); run the tests with ./dev test")
        });
    tokio::spawn(connection);
    client
}

/// A private ClickHouse launcher (chdb behind the HTTP interface) that a test can stop and
/// start again, to see how the code under test copes with ClickHouse going away.
pub struct PrivateClickHouse {
    pub port: u16,
    data: std::path::PathBuf,
    child: Option<tokio::process::Child>,
}

impl PrivateClickHouse {
    pub async fn start(name: &str) -> Self {
        let port = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut this = Self {
            port,
            data: std::env::temp_dir().join(format!("{name}_chdb")),
            child: None,
        };
        this.resume().await;
        this
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the launcher (again) on the same port and data, and waits until it answers.
    pub async fn resume(&mut self) {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = root.join(".local/venv/bin/python");
        assert!(
            python.exists(),
            "run ./dev test: it installs the ClickHouse venv"
        );
        let child = tokio::process::Command::new(&python)
            .arg(root.join("clickhouse/launcher.py"))
            .args(["--port", &self.port.to_string(), "--data"])
            .arg(&self.data)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start launcher");
        self.child = Some(child);
        let url = self.url();
        for _ in 0..600 {
            if let Ok(response) = reqwest::get(format!("{url}/ping")).await
                && response.status().is_success()
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the launcher at {url} never answered /ping");
    }

    /// Kills the launcher (as abruptly as a crash).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill launcher");
            child.wait().await.expect("reap launcher");
        }
    }
}

impl Drop for PrivateClickHouse {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data);
    }
}
