//! Test support for the GraphQL API: the real server on port 0 (behind its real gate:
//! API keys, rate limits, credits in the test's Postgres) and a client that sends a funded
//! key with every request and reads answers back into domain types.

#![allow(dead_code)]

use std::net::SocketAddr;

use kalshibook::accounts::rate::{LimitClock, RateLimits};
use kalshibook::accounts::{Actor, Credits};
use kalshibook::config::Config;
use kalshibook::market::{Book, Price, Side, Size};
use kalshibook::server::{AppState, serve_on};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The API server running on a port of its own.
pub struct TestServer {
    pub address: SocketAddr,
    /// Sends the funded key (`X-API-Key`) with every request.
    pub client: reqwest::Client,
    /// The funded key `client` sends.
    pub key: String,
    /// The server's state: its gate (store, usage recorder, limits) for tests to look into.
    pub state: AppState,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

/// Credits the default key's account holds: plenty for any test about data.
pub const FUNDED_CREDITS: u64 = 10_000_000;

/// A rate no test about data reaches (the limiter still runs on every request).
fn unlimited(_: kalshibook::accounts::Tier) -> u32 {
    1_000_000
}

impl TestServer {
    /// The server with a funded key on its client and limits no data test reaches.
    pub async fn start(config: &Config) -> Self {
        Self::start_with(config, RateLimits::new(unlimited, LimitClock::monotonic())).await
    }

    /// The server with `rates`, and a funded key on its client.
    pub async fn start_with(config: &Config, rates: RateLimits) -> Self {
        Self::start_state(AppState::with_rate_limits(config, rates).expect("state")).await
    }

    /// Serves `state` (e.g. with a live bus and short live timings), with a funded key on
    /// its client.
    pub async fn start_state(state: AppState) -> Self {
        // Errors the server logs (e.g. the detail behind an INTERNAL) show in the test output.
        let _ = tracing_subscriber::fmt()
            .with_env_filter("warn,kalshibook::collector=error")
            .with_test_writer()
            .try_init();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve_on(listener, state.clone(), shutdown.clone()));
        // An email of its own: several servers may share one test database (replicas).
        let email = format!("tests-{}@kalshibook.test", address.port());
        let (user_id, account_id, key) = create_user_key(&state, &email, FUNDED_CREDITS).await;
        // A session too, so account fields (`me`, `apiKeys`) answer for the same account.
        let session = state
            .gate
            .as_ref()
            .expect("gate")
            .accounts()
            .jwt
            .issue(user_id, account_id, time::OffsetDateTime::now_utc())
            .expect("access token");
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("x-api-key", key.parse().expect("header value"));
        headers.insert(
            "authorization",
            format!("Bearer {}", session.token)
                .parse()
                .expect("header value"),
        );
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .expect("client");
        Self {
            address,
            client,
            key,
            state,
            shutdown,
            task,
        }
    }

    /// POSTs `query` with `variables` and the given headers only (no default key); returns
    /// the status, the headers and the JSON body.
    pub async fn post_as(
        &self,
        headers: &[(&str, &str)],
        query: &str,
        variables: Value,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut request = reqwest::Client::new()
            .post(self.url("/graphql"))
            .json(&json!({ "query": query, "variables": variables }));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("POST /graphql");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text}"));
        (status, headers, body)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// POSTs `query` with `variables`; returns the HTTP status and the JSON body.
    pub async fn post(&self, query: &str, variables: Value) -> (u16, Value) {
        let response = self
            .client
            .post(self.url("/graphql"))
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("POST /graphql");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text}"));
        (status, body)
    }

    /// POSTs `query` and returns `data`, panicking on any error.
    pub async fn data(&self, query: &str, variables: Value) -> Value {
        let (status, body) = self.post(query, variables.clone()).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body.get("errors").is_none(),
            "errors for {query} with {variables}: {body}"
        );
        body["data"].clone()
    }

    /// Signals shutdown without waiting (the server then closes its WebSockets).
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("join").expect("clean shutdown");
    }
}

/// Creates an account for `email` whose cycle allowance is exactly `credits`, and a key for
/// it; returns the account id and the key.
pub async fn create_key(state: &AppState, email: &str, credits: u64) -> (uuid::Uuid, String) {
    let (_, account_id, key) = create_user_key(state, email, credits).await;
    (account_id, key)
}

/// As [`create_key`], returning the user id too: (user, account, key).
pub async fn create_user_key(
    state: &AppState,
    email: &str,
    credits: u64,
) -> (uuid::Uuid, uuid::Uuid, String) {
    let store = state.gate.as_ref().expect("gate").store();
    let user = store
        .create_account(email, "correct horse battery staple", &Actor::System)
        .await
        .expect("account");
    let key = store
        .create_key(user.account_id, "tests", &Actor::System)
        .await
        .expect("key");
    let client = store.pool().get().await.expect("postgres");
    client
        .execute(
            "UPDATE billing_accounts SET credits_total = $2 WHERE id = $1",
            &[&user.account_id, &Credits::new(credits).to_i64()],
        )
        .await
        .expect("set allowance");
    (user.id, user.account_id, key.key.expose().to_owned())
}

/// The `extensions.code` of every error in a GraphQL body.
pub fn codes(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["extensions"]["code"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Every field an `OrderBook` answer needs to be compared in full.
pub const BOOK_FIELDS: &str = "ticker at status complete seq lastUpdateAt \
    yes { price size } no { price size } yesLevelCount noLevelCount \
    bestYesBid bestNoBid yesAsk noAsk spread midpoint \
    depthNearTop(within: \"0.03\") { yesBidSize noBidSize yesLevels noLevels imbalance } \
    costToBuy(side: YES, size: \"25\") { filled amount averagePrice bestPrice worstPrice slippage levels complete } \
    proceedsToSell(side: NO, size: \"7.5\") { filled amount averagePrice levels }";

/// The book in an `OrderBook` answer (`None` when its ladders are null).
pub fn book_of(answer: &Value) -> Option<Book> {
    let ladder = |side: Side, key: &str| -> Option<Vec<(Side, Price, Size)>> {
        let levels = answer[key].as_array()?;
        Some(
            levels
                .iter()
                .map(|l| {
                    (
                        side,
                        l["price"].as_str().unwrap().parse().unwrap(),
                        l["size"].as_str().unwrap().parse().unwrap(),
                    )
                })
                .collect(),
        )
    };
    let yes = ladder(Side::Yes, "yes")?;
    let no = ladder(Side::No, "no")?;
    Some(Book::from_levels(yes.into_iter().chain(no)))
}

/// Unix µs as the API writes instants.
pub fn rfc3339(us: i64) -> String {
    kalshibook::graphql::scalars::format_rfc3339_us(us)
}

/// An instant as the API wrote it, back to Unix µs.
pub fn micros(text: &Value) -> i64 {
    kalshibook::graphql::scalars::parse_rfc3339_us(text.as_str().expect("a DateTime"))
        .expect("an RFC 3339 instant")
}

/// The (ts µs, conn, seq) a delta cursor encodes: opaque to clients, not to these tests.
pub fn delta_position(cursor: &str) -> (i64, u64, u64) {
    use base64::Engine;
    let text = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .expect("base64");
    let text = String::from_utf8(text).expect("utf-8");
    let parts: Vec<&str> = text.trim_start_matches("d1:").split(':').collect();
    (
        parts[0].parse().unwrap(),
        parts[1].parse().unwrap(),
        parts[2].parse().unwrap(),
    )
}

pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}
