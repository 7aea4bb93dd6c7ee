//! The paid API end to end, over real HTTP against real Postgres and ClickHouse: API keys,
//! credits charged atomically per request (and refunded when nothing is returned), the
//! metering headers, rate limits on a clock the test moves, sessions and tenant isolation
//! (in the code and by row-level security), revocation, and secrets never at rest or in logs.

mod api;
mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use api::{TestServer, codes, create_key};
use common::TestEnv;
use kalshibook::accounts::rate::{LimitClock, RateLimits, tier_rate};
use kalshibook::clickhouse::rows::MarketRow;
use reqwest::header::HeaderMap;
use serde_json::json;

const TICKER: &str = "KXAUTH-26MAR01-B50";
/// 2026-03-01T14:00:00Z, Unix µs.
const T0: i64 = 1_772_373_600_000_000;
const ORDERBOOK: &str = "query($t: String!) { orderbook(ticker: $t, at: \"2026-03-01T14:30:00Z\") { ticker complete } }";

/// Everything every test in this binary logs, to look for secrets in.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug")
            .with_ansi(false)
            .with_writer(move || Capture(sink.clone()))
            .try_init();
        logs
    })
    .clone()
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A migrated environment with one known market (so `orderbook` answers data).
async fn env_with_market() -> TestEnv {
    captured_logs();
    let env = TestEnv::migrated().await;
    let row = MarketRow {
        ticker: TICKER.to_owned(),
        event_ticker: "KXAUTH-26MAR01".to_owned(),
        series_ticker: "KXAUTH".to_owned(),
        title: "Auth".to_owned(),
        subtitle: "Above 50".to_owned(),
        status: "active".to_owned(),
        open_time: Some(T0),
        close_time: Some(T0 + 86_400_000_000),
        price_level_structure: "linear_cent".to_owned(),
        price_ranges: r#"[{"end":"1.0000","start":"0.0000","step":"0.0100"}]"#.to_owned(),
        updated_at: T0,
    };
    let mut insert = env
        .clickhouse()
        .insert::<MarketRow>("markets")
        .await
        .expect("insert");
    insert.write(&row).await.expect("write");
    insert.end().await.expect("end");
    env
}

fn header(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.parse().ok()
}

fn credits_headers(headers: &HeaderMap) -> [Option<u64>; 4] {
    [
        "x-credits-cost",
        "x-credits-used",
        "x-credits-remaining",
        "x-credits-total",
    ]
    .map(|name| header(headers, name))
}

async fn signup(server: &TestServer, email: &str) -> String {
    let (status, _, body) = server
        .post_as(
            &[],
            "mutation($e: String!) { signup(email: $e, password: \"correct horse battery staple\") { accessToken accountId } }",
            json!({ "e": email }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"]["signup"]["accessToken"]
        .as_str()
        .expect("token")
        .to_owned()
}

async fn create_api_key(server: &TestServer, token: &str, name: &str) -> (String, String) {
    let bearer = format!("Bearer {token}");
    let (status, _, body) = server
        .post_as(
            &[("authorization", &bearer)],
            "mutation($n: String!) { createApiKey(name: $n) { key apiKey { id prefix } } }",
            json!({ "n": name }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let created = &body["data"]["createApiKey"];
    (
        created["key"].as_str().unwrap().to_owned(),
        created["apiKey"]["id"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn two_hundred_concurrent_orderbooks_on_ten_credits_buy_exactly_two() {
    let env = env_with_market().await;
    let server = TestServer::start(&env.config).await;
    let (account, key) = create_key(&server.state, "ten@kalshibook.test", 10).await;

    let requests = (0..200).map(|_| async {
        server
            .post_as(
                &[("x-api-key", key.as_str())],
                ORDERBOOK,
                json!({ "t": TICKER }),
            )
            .await
    });
    let answers = futures_util::future::join_all(requests).await;

    let mut used_after_success = Vec::new();
    let mut exhausted = 0;
    for (status, headers, body) in &answers {
        let [cost, used, remaining, total] = credits_headers(headers);
        assert_eq!(total, Some(10), "{headers:?}");
        assert!(
            header(headers, "x-ratelimit-limit").is_some(),
            "{headers:?}"
        );
        assert!(header(headers, "x-ratelimit-remaining").is_some());
        assert!(header(headers, "x-ratelimit-reset").is_some());
        match status {
            200 => {
                assert_eq!(body["data"]["orderbook"]["ticker"], TICKER, "{body}");
                assert_eq!(cost, Some(5));
                assert_eq!(used.unwrap() + remaining.unwrap(), 10);
                used_after_success.push(used.unwrap());
            }
            429 => {
                assert_eq!(codes(body), ["CREDITS_EXHAUSTED"], "{body}");
                let message = body["errors"][0]["message"].as_str().unwrap();
                for option in ["resets at", "pay-as-you-go", "upgrade"] {
                    assert!(message.contains(option), "{option} in {message}");
                }
                assert_eq!((cost, used, remaining), (Some(0), Some(10), Some(0)));
                exhausted += 1;
            }
            other => panic!("status {other}: {body}"),
        }
    }
    used_after_success.sort_unstable();
    assert_eq!(used_after_success, [5, 10]);
    assert_eq!(exhausted, 198);

    let db = env.postgres().await;
    let ledger: i64 = db
        .query_one(
            "SELECT coalesce(sum(credits), 0)::int8 FROM credit_ledger WHERE account_id = $1",
            &[&account],
        )
        .await
        .unwrap()
        .get(0);
    let used: i64 = db
        .query_one(
            "SELECT credits_used FROM billing_accounts WHERE id = $1",
            &[&account],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!((ledger, used), (10, 10));
    server.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_request_costs_its_parsed_fields_and_is_refunded_when_it_returns_nothing() {
    let env = env_with_market().await;
    let server = TestServer::start(&env.config).await;
    let (_, key) = create_key(&server.state, "cost@kalshibook.test", 100).await;
    let two = format!(
        "{{ a: orderbook(ticker: \"{TICKER}\") {{ complete }} b: orderbook(ticker: \"{TICKER}\", depth: 3) {{ complete }} market(ticker: \"{TICKER}\") {{ ticker }} }}"
    );
    let (status, _, body) = server
        .post_as(
            &[],
            "query($q: String!) { estimateCost(query: $q) { credits operations { operation count credits } } }",
            json!({ "q": two }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["estimateCost"]["credits"], 11, "{body}");
    assert_eq!(
        body["data"]["estimateCost"]["operations"],
        json!([
            { "operation": "market", "count": 1, "credits": 1 },
            { "operation": "orderbook", "count": 2, "credits": 10 }
        ])
    );
    let (status, headers, body) = server
        .post_as(&[("x-api-key", &key)], &two, json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        credits_headers(&headers),
        [Some(11), Some(11), Some(89), Some(100)]
    );

    // A field that fails before returning anything (an unknown market): charged, then
    // refunded in full.
    let (status, headers, body) = server
        .post_as(
            &[("x-api-key", &key)],
            "{ orderbook(ticker: \"KXNOPE-26MAR01-B1\") { complete } }",
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(codes(&body), ["NOT_FOUND"], "{body}");
    assert_eq!(
        credits_headers(&headers),
        [Some(0), Some(11), Some(89), Some(100)]
    );
    // No key: 401 before anything runs; a made-up key: 401 too.
    let (status, _, body) = server.post_as(&[], &two, json!({})).await;
    assert_eq!(
        (status, codes(&body)),
        (401, vec!["UNAUTHENTICATED".to_owned()])
    );
    let (status, _, body) = server
        .post_as(&[("x-api-key", "kb_live_not-a-real-key")], &two, json!({}))
        .await;
    assert_eq!(
        (status, codes(&body)),
        (401, vec!["UNAUTHENTICATED".to_owned()])
    );
    // Free metadata needs no key.
    let (status, _, body) = server.post_as(&[], "{ apiVersion }", json!({})).await;
    assert_eq!(status, 200, "{body}");
    server.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn the_n_plus_first_request_in_a_minute_is_rate_limited() {
    let env = env_with_market().await;
    let clock = LimitClock::manual();
    let server =
        TestServer::start_with(&env.config, RateLimits::new(tier_rate, clock.clone())).await;
    // The server's own key is on the Free tier: 30 requests a minute.
    for n in 1..=30u64 {
        let (status, headers, body) = server
            .post_as(&[("x-api-key", &server.key)], "{ apiVersion }", json!({}))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(header(&headers, "x-ratelimit-limit"), Some(30));
        assert_eq!(header(&headers, "x-ratelimit-remaining"), Some(30 - n));
    }
    let (status, headers, body) = server
        .post_as(
            &[("x-api-key", &server.key)],
            ORDERBOOK,
            json!({ "t": TICKER }),
        )
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(codes(&body), ["RATE_LIMITED"]);
    assert_eq!(header(&headers, "retry-after"), Some(2));
    assert_eq!(header(&headers, "x-ratelimit-remaining"), Some(0));
    let (_, key_b) = create_key(&server.state, "other@kalshibook.test", 100).await;
    let (status, _, _) = server
        .post_as(&[("x-api-key", &key_b)], "{ apiVersion }", json!({}))
        .await;
    assert_eq!(status, 200, "another key has its own allowance");
    clock.advance(Duration::from_secs(2));
    let (status, headers, body) = server
        .post_as(
            &[("x-api-key", &server.key)],
            ORDERBOOK,
            json!({ "t": TICKER }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Charged once: the refused request cost nothing.
    assert_eq!(credits_headers(&headers)[..2], [Some(5), Some(5)]);

    // Sign-in attempts: 5 a minute per email.
    for _ in 0..5 {
        let (status, _, body) = server
            .post_as(
                &[],
                "mutation { login(email: \"victim@kalshibook.test\", password: \"wrong password 123\") { accessToken } }",
                json!({}),
            )
            .await;
        assert_eq!(
            (status, codes(&body)),
            (401, vec!["UNAUTHENTICATED".to_owned()])
        );
    }
    let (status, headers, body) = server
        .post_as(
            &[],
            "mutation { login(email: \"Victim@kalshibook.test\", password: \"wrong password 123\") { accessToken } }",
            json!({}),
        )
        .await;
    assert_eq!(
        (status, codes(&body)),
        (429, vec!["RATE_LIMITED".to_owned()])
    );
    assert_eq!(header(&headers, "retry-after"), Some(12));
    server.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn tenants_cannot_see_revoke_or_spend_each_other() {
    let env = env_with_market().await;
    let server = TestServer::start(&env.config).await;
    let token_a = signup(&server, "alice@kalshibook.test").await;
    let token_b = signup(&server, "bob@kalshibook.test").await;
    let (key_a, id_a) = create_api_key(&server, &token_a, "alice's bot").await;
    let (_, id_b) = create_api_key(&server, &token_b, "bob's bot").await;
    let bearer_a = format!("Bearer {token_a}");
    let bearer_b = format!("Bearer {token_b}");

    // A spends with A's key.
    for _ in 0..3 {
        let (status, _, body) = server
            .post_as(&[("x-api-key", &key_a)], ORDERBOOK, json!({ "t": TICKER }))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    server
        .state
        .gate
        .as_ref()
        .unwrap()
        .usage()
        .flush()
        .await
        .expect("flush usage");

    // B lists only B's keys.
    let (_, _, body) = server
        .post_as(
            &[("authorization", &bearer_b)],
            "{ apiKeys { id } }",
            json!({}),
        )
        .await;
    assert_eq!(body["data"]["apiKeys"], json!([{ "id": id_b }]), "{body}");
    // B cannot revoke A's key, which keeps working.
    let (_, _, body) = server
        .post_as(
            &[("authorization", &bearer_b)],
            "mutation($id: ID!) { revokeApiKey(id: $id) { id } }",
            json!({ "id": id_a }),
        )
        .await;
    assert_eq!(codes(&body), ["NOT_FOUND"], "{body}");
    let (status, _, _) = server
        .post_as(&[("x-api-key", &key_a)], ORDERBOOK, json!({ "t": TICKER }))
        .await;
    assert_eq!(status, 200);
    // Key management needs a session, not an API key.
    let (status, _, body) = server
        .post_as(&[("x-api-key", &key_a)], "{ apiKeys { id } }", json!({}))
        .await;
    assert_eq!(
        (status, codes(&body)),
        (401, vec!["UNAUTHENTICATED".to_owned()])
    );
    server
        .state
        .gate
        .as_ref()
        .unwrap()
        .usage()
        .flush()
        .await
        .expect("flush usage");
    // B's usage and credits show none of A's spending; A's show it.
    let me = "{ me { creditsUsed usage(from: \"2026-01-01T00:00:00Z\", to: \"2027-01-01T00:00:00Z\", groupBy: [KEY, OPERATION]) { apiKeyId operation requests credits } } }";
    let (_, _, body) = server
        .post_as(&[("authorization", &bearer_b)], me, json!({}))
        .await;
    assert_eq!(
        body["data"]["me"],
        json!({ "creditsUsed": 0, "usage": [] }),
        "{body}"
    );
    let (_, _, body) = server
        .post_as(&[("authorization", &bearer_a)], me, json!({}))
        .await;
    assert_eq!(body["data"]["me"]["creditsUsed"], 20, "{body}");
    assert_eq!(
        body["data"]["me"]["usage"],
        json!([{ "apiKeyId": id_a, "operation": "orderbook", "requests": 4, "credits": 20 }])
    );

    // Row-level security: under B's tenant settings, a hand-written filter on A's account
    // finds nothing, though the rows are there for the owner.
    let db = env.postgres().await;
    let account = |email: &'static str| {
        let db = &db;
        async move {
            let row = db
                .query_one(
                    "SELECT b.id FROM billing_accounts b JOIN users u ON u.id = b.user_id WHERE u.email = $1",
                    &[&email],
                )
                .await
                .unwrap();
            row.get::<_, uuid::Uuid>(0)
        }
    };
    let (a, b) = (
        account("alice@kalshibook.test").await,
        account("bob@kalshibook.test").await,
    );
    let tables = ["api_keys", "credit_ledger", "usage", "billing_accounts"];
    for table in tables {
        let column = if table == "billing_accounts" {
            "id"
        } else {
            "account_id"
        };
        let sql = format!("SELECT count(*) FROM {table} WHERE {column} = $1");
        let owner: i64 = db.query_one(&sql, &[&a]).await.unwrap().get(0);
        assert!(owner > 0, "{table} holds A's rows");
        db.batch_execute("BEGIN").await.unwrap();
        db.execute(
            "SELECT set_config('role', 'kalshibook_tenant', true), set_config('kalshibook.account_id', $1::uuid::text, true)",
            &[&b],
        )
        .await
        .unwrap();
        let as_b: i64 = db.query_one(&sql, &[&a]).await.unwrap().get(0);
        db.batch_execute("ROLLBACK").await.unwrap();
        assert_eq!(as_b, 0, "{table}: B's session sees A's rows");
    }
    server.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_revoked_key_is_refused_next_and_no_key_is_ever_stored_or_logged() {
    let env = env_with_market().await;
    let server = TestServer::start(&env.config).await;
    let token = signup(&server, "carol@kalshibook.test").await;
    let (key, id) = create_api_key(&server, &token, "soon revoked").await;
    assert!(key.starts_with("kb_live_"));
    let (status, _, body) = server
        .post_as(&[("x-api-key", &key)], ORDERBOOK, json!({ "t": TICKER }))
        .await;
    assert_eq!(status, 200, "{body}");
    let bearer = format!("Bearer {token}");
    let (_, _, body) = server
        .post_as(
            &[("authorization", &bearer)],
            "mutation($id: ID!) { revokeApiKey(id: $id) { revokedAt } }",
            json!({ "id": id }),
        )
        .await;
    assert!(
        body["data"]["revokeApiKey"]["revokedAt"].is_string(),
        "{body}"
    );
    let (status, _, body) = server
        .post_as(&[("x-api-key", &key)], ORDERBOOK, json!({ "t": TICKER }))
        .await;
    assert_eq!(
        (status, codes(&body)),
        (401, vec!["UNAUTHENTICATED".to_owned()])
    );
    let server_secret = server.key["kb_live_".len()..].to_owned();
    server.stop().await;

    // Neither the key nor its secret part is anywhere in the database or the logs.
    let secret = &key["kb_live_".len()..];
    let dump = tokio::process::Command::new("pg_dump")
        .arg("--data-only")
        .arg(env.config.postgres.url.expose())
        .output()
        .await
        .expect("pg_dump");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump.contains(&key[..12]),
        "the dump holds the visible prefix"
    );
    assert!(!dump.contains(secret), "the key is stored in plain text");
    let logs = String::from_utf8_lossy(&captured_logs().lock().unwrap()).into_owned();
    assert!(!logs.is_empty(), "logs were captured");
    assert!(!logs.contains(secret), "the key was logged");
    assert!(
        !logs.contains(&server_secret),
        "the server's key was logged"
    );
    assert!(
        !dump.contains(&server_secret),
        "the server's key is stored in plain text"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn postgres_down_fails_closed_and_recovers() {
    let env = env_with_market().await;
    // A proxy in front of Postgres that the test can cut and restore on the same port.
    let proxy = Proxy::start().await;
    let mut config = env.config.clone();
    let url = env
        .config
        .postgres
        .url
        .expose()
        .replace(":5432/", &format!(":{}/", proxy.port));
    assert_ne!(
        url,
        env.config.postgres.url.expose(),
        "the URL names port 5432"
    );
    config.postgres.url = kalshibook::config::Secret::new(url);
    let server = TestServer::start(&config).await;
    let (status, body) = server.post(ORDERBOOK, json!({ "t": TICKER })).await;
    assert_eq!(status, 200, "{body}");

    proxy.cut();
    for _ in 0..3 {
        let (status, _, body) = server
            .post_as(
                &[("x-api-key", &server.key)],
                ORDERBOOK,
                json!({ "t": TICKER }),
            )
            .await;
        assert_eq!(
            (status, codes(&body)),
            (503, vec!["UNAVAILABLE".to_owned()]),
            "{body}"
        );
        assert!(body["data"].is_null());
    }
    proxy.restore();
    let (status, headers, body) = server
        .post_as(
            &[("x-api-key", &server.key)],
            ORDERBOOK,
            json!({ "t": TICKER }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(credits_headers(&headers)[0], Some(5));
    server.stop().await;
    env.cleanup().await;
}

/// A TCP proxy to Postgres: `cut` closes every connection and refuses new ones until
/// `restore`.
struct Proxy {
    port: u16,
    open: Arc<std::sync::atomic::AtomicBool>,
    generation: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let task = {
            let open = open.clone();
            let generation = generation.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        return;
                    };
                    if !open.load(std::sync::atomic::Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let mut cut = generation.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut outbound) =
                            tokio::net::TcpStream::connect("127.0.0.1:5432").await
                        else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = cut.changed() => {}
                        }
                    });
                }
            })
        };
        Self {
            port,
            open,
            generation,
            task,
        }
    }

    fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn usage_counted_in_memory_is_written_when_the_server_stops() {
    let env = env_with_market().await;
    let server = TestServer::start(&env.config).await;
    let (account, key) = create_key(&server.state, "usage@kalshibook.test", 100).await;
    for _ in 0..3 {
        let (status, _, body) = server
            .post_as(
                &[("x-api-key", key.as_str())],
                ORDERBOOK,
                json!({ "t": TICKER }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    // No explicit flush: the server's shutdown writes what the recorder holds.
    server.stop().await;
    let db = env.postgres().await;
    let row = db
        .query_one(
            "SELECT coalesce(sum(requests), 0)::int8, coalesce(sum(credits), 0)::int8 \
             FROM usage WHERE account_id = $1 AND bucket_secs = 60",
            &[&account],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (3, 15));
    let last_used: Option<time::OffsetDateTime> = db
        .query_one(
            "SELECT last_used_at FROM api_keys WHERE account_id = $1",
            &[&account],
        )
        .await
        .unwrap()
        .get(0);
    assert!(last_used.is_some(), "last_used_at is recorded");
    env.cleanup().await;
}
