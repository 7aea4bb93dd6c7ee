//! Test support for the GraphQL API: the real server on port 0 and a client that posts
//! queries and reads answers back into domain types.

#![allow(dead_code)]

use std::net::SocketAddr;

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
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl TestServer {
    pub async fn start(config: &Config) -> Self {
        Self::start_with(AppState::new(config).expect("state")).await
    }

    /// Serves `state` (e.g. with a live bus and short live timings).
    pub async fn start_with(state: AppState) -> Self {
        // Errors the server logs (e.g. the detail behind an INTERNAL) show in the test output.
        let _ = tracing_subscriber::fmt()
            .with_env_filter("warn,kalshibook::collector=error")
            .with_test_writer()
            .try_init();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve_on(listener, state, shutdown.clone()));
        Self {
            address,
            client: reqwest::Client::new(),
            shutdown,
            task,
        }
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
    yesBids { price size } noBids { price size } yesLevelCount noLevelCount \
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
    let yes = ladder(Side::Yes, "yesBids")?;
    let no = ladder(Side::No, "noBids")?;
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
