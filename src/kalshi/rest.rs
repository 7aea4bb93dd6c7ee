//! Kalshi REST discovery: signed `GET /markets` paged by cursor, with bounded retries on
//! 429 and 5xx. The I/O half of market discovery; conversion lives in `parse`.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::RETRY_AFTER;
use reqwest::{StatusCode, Url};

use super::messages::{KalshiMarketResponse, KalshiMarketsPage, Listed, Loose, Mapped};
use super::parse::parse_market;
use super::signing::Signer;
use crate::market::MarketMeta;

/// The page size asked for: the maximum `GET /markets` allows.
pub const MARKETS_PAGE_LIMIT: u32 = 1000;
/// A listing longer than this many pages is treated as a server fault (10 M markets).
const MAX_PAGES: usize = 10_000;
/// How much of an error response body is kept in [`RestError::Status`].
const ERROR_BODY_LIMIT: usize = 512;

/// Which markets `GET /markets` lists. `None` fields are not sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MarketFilter {
    /// Filter vocabulary: `unopened`, `open`, `paused`, `closed`, `settled` (one at a time).
    pub status: Option<String>,
    pub series_ticker: Option<String>,
    pub event_ticker: Option<String>,
}

/// How failed requests are retried: exponential backoff from `initial_backoff`, doubling,
/// capped at `max_backoff`, with jitter (each wait is 50–100 % of the step). A `Retry-After`
/// header in seconds replaces the computed wait, capped at `max_retry_after`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, including the first (at least 1).
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    /// 6 attempts, 0.5 s doubling to at most 16 s (≈ 31 s in all), `Retry-After` up to 60 s.
    fn default() -> Self {
        Self {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(16),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `failed + 1`, after `failed` failures (≥ 1).
    fn backoff(&self, failed: u32) -> Duration {
        let step = self
            .initial_backoff
            .saturating_mul(1u32 << failed.saturating_sub(1).min(20))
            .min(self.max_backoff);
        let millis = u64::try_from(step.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::random_range(millis / 2..=millis))
    }
}

/// A failed REST call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RestError {
    /// The base URL is not an absolute http(s) URL.
    #[error("invalid base URL {url:?}: {reason}")]
    BaseUrl { url: String, reason: String },
    /// The HTTP client could not be built.
    #[error("building the HTTP client: {0}")]
    Client(String),
    /// No response: connect, TLS, timeout or body read failure.
    #[error("GET {path}: {message}")]
    Transport { path: String, message: String },
    /// A non-success status; `body` is the start of the response body.
    #[error("GET {path}: HTTP {status}: {body}")]
    Status {
        path: String,
        status: u16,
        body: String,
    },
    /// A success status with a body that is not the expected JSON.
    #[error("GET {path}: undecodable response: {message}")]
    Decode { path: String, message: String },
    /// The cursor repeated or the listing did not end.
    #[error("GET {path}: {message}")]
    Pagination { path: String, message: String },
}

impl RestError {
    /// Whether trying again later may succeed: transport failures, 408, 429 and 5xx.
    #[must_use]
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Transport { .. } => true,
            Self::Status { status, .. } => matches!(status, 408 | 429 | 500..=599),
            Self::BaseUrl { .. }
            | Self::Client { .. }
            | Self::Decode { .. }
            | Self::Pagination { .. } => false,
        }
    }
}

/// A Kalshi REST client. Signs every request when it has a [`Signer`] (public endpoints
/// accept signed requests and give them the key's higher rate limit).
#[derive(Clone, Debug)]
pub struct RestClient {
    http: reqwest::Client,
    /// E.g. `https://external-api.kalshi.com/trade-api/v2`, without a trailing slash.
    base_url: Url,
    signer: Option<Signer>,
    retry: RetryPolicy,
}

impl RestClient {
    /// A client for `base_url` (e.g. `https://external-api.kalshi.com/trade-api/v2`), with
    /// the default [`RetryPolicy`], a 10 s connect and 30 s request timeout.
    ///
    /// # Errors
    /// [`RestError::BaseUrl`] if `base_url` is not an absolute http(s) URL without a query;
    /// [`RestError::Client`] if the HTTP client cannot be built.
    pub fn new(base_url: &str, signer: Option<Signer>) -> Result<Self, RestError> {
        let bad = |reason: &str| RestError::BaseUrl {
            url: base_url.to_owned(),
            reason: reason.to_owned(),
        };
        let mut url =
            Url::parse(base_url.trim_end_matches('/')).map_err(|e| bad(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
            return Err(bad("not an http(s) URL"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("has a query or fragment"));
        }
        let path = url.path().trim_end_matches('/').to_owned();
        url.set_path(&path);
        // reqwest panics when building a rustls client without a process-wide provider.
        crate::telemetry::install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("kalshibook/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| RestError::Client(e.to_string()))?;
        Ok(Self {
            http,
            base_url: url,
            signer,
            retry: RetryPolicy::default(),
        })
    }

    /// The same client with another retry policy.
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Every market matching `filter`: `GET /markets?limit=1000[&status&series_ticker&event_ticker]`
    /// followed through `cursor` until it is empty. `series_ticker` of each result is the
    /// filter's when the response does not carry one. A market without a `ticker` is logged
    /// and skipped.
    ///
    /// # Errors
    /// The first page that fails after retries ([`RestError::is_retriable`] tells whether a
    /// later call may succeed), an undecodable page, or a cursor that repeats.
    pub async fn markets(&self, filter: &MarketFilter) -> Result<Vec<MarketMeta>, RestError> {
        let url = self.url(&["markets"]);
        let limit = MARKETS_PAGE_LIMIT.to_string();
        let mut markets = Vec::new();
        let mut cursor: Option<String> = None;
        let mut seen_cursors = HashSet::new();
        for _ in 0..MAX_PAGES {
            let mut page_url = url.clone();
            {
                let mut query = page_url.query_pairs_mut();
                query.append_pair("limit", &limit);
                for (name, value) in [
                    ("status", &filter.status),
                    ("series_ticker", &filter.series_ticker),
                    ("event_ticker", &filter.event_ticker),
                    ("cursor", &cursor),
                ] {
                    if let Some(value) = value {
                        query.append_pair(name, value);
                    }
                }
            }
            let body = self.get(&page_url).await?;
            let decode = |message: String| RestError::Decode {
                path: url.path().to_owned(),
                message,
            };
            let page: KalshiMarketsPage<'_> =
                serde_json::from_str(&body).map_err(|e| decode(e.to_string()))?;
            let Listed::Items(items) = page.markets else {
                return Err(decode("`markets` is not an array".to_owned()));
            };
            for item in &items {
                let parsed = match item {
                    Mapped::Object(market) => parse_market(market, filter.series_ticker.as_deref()),
                    Mapped::NotAnObject(found) => Err(super::ParseError {
                        message: format!("market is {found}, not an object"),
                        market: None,
                    }),
                };
                match parsed {
                    Ok(market) => markets.push(market),
                    Err(e) => tracing::warn!(error = %e, "skipping unreadable market"),
                }
            }
            cursor = match page.cursor {
                Some(Loose::Text(next)) if !next.is_empty() => Some(next.into_owned()),
                _ => return Ok(markets),
            };
            if let Some(next) = &cursor
                && !seen_cursors.insert(next.clone())
            {
                return Err(RestError::Pagination {
                    path: url.path().to_owned(),
                    message: format!("cursor {next:?} repeated"),
                });
            }
        }
        Err(RestError::Pagination {
            path: url.path().to_owned(),
            message: format!("more than {MAX_PAGES} pages"),
        })
    }

    /// One market: `GET /markets/{ticker}`.
    ///
    /// # Errors
    /// As [`RestClient::markets`]; [`RestError::Decode`] if the market cannot be read.
    pub async fn market(&self, ticker: &str) -> Result<MarketMeta, RestError> {
        let url = self.url(&["markets", ticker]);
        let body = self.get(&url).await?;
        let decode = |message: String| RestError::Decode {
            path: url.path().to_owned(),
            message,
        };
        let response: KalshiMarketResponse<'_> =
            serde_json::from_str(&body).map_err(|e| decode(e.to_string()))?;
        match response.market {
            Mapped::Object(market) => {
                parse_market(&market, None).map_err(|e| decode(e.to_string()))
            }
            Mapped::NotAnObject(found) => Err(decode(format!("`market` is {found}"))),
        }
    }

    /// `base_url` with `segments` appended (each percent-encoded as needed).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base_url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// GETs `url`, signed afresh on every attempt, retrying retriable failures per the policy.
    /// Returns the body of the first success.
    async fn get(&self, url: &Url) -> Result<String, RestError> {
        let path = url.path();
        let mut failed = 0u32;
        loop {
            let (error, retry_after) = match self.get_once(url).await {
                Ok(body) => return Ok(body),
                Err(failure) => failure,
            };
            failed += 1;
            if !error.is_retriable() || failed >= self.retry.max_attempts.max(1) {
                return Err(error);
            }
            let wait = retry_after.map_or_else(
                || self.retry.backoff(failed),
                |after| after.min(self.retry.max_retry_after),
            );
            tracing::warn!(
                %path,
                error = %error,
                attempt = failed,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                "Kalshi REST request failed; retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// One attempt. On failure also returns the server's `Retry-After`, if it gave one.
    async fn get_once(&self, url: &Url) -> Result<String, (RestError, Option<Duration>)> {
        let path = url.path();
        let transport = |e: reqwest::Error| {
            let error = RestError::Transport {
                path: path.to_owned(),
                message: e.to_string(),
            };
            (error, None)
        };
        let mut request = self.http.get(url.clone());
        if let Some(signer) = &self.signer {
            for (name, value) in signer.headers("GET", path, now_ms()).pairs() {
                request = request.header(name, value);
            }
        }
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        if status.is_success() {
            return response.text().await.map_err(transport);
        }
        let retry_after = retry_after(&response);
        let mut body = response.text().await.unwrap_or_default();
        truncate(&mut body, ERROR_BODY_LIMIT);
        let error = RestError::Status {
            path: path.to_owned(),
            status: status.as_u16(),
            body,
        };
        Err((error, retry_after.filter(|_| retriable_status(status))))
    }
}

fn retriable_status(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
}

/// `Retry-After` in whole seconds (the HTTP-date form is not used by Kalshi and is ignored).
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response.headers().get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

fn truncate(text: &mut String, limit: usize) {
    if text.len() > limit {
        let mut end = limit;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, VecDeque};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use axum::Router;
    use axum::extract::{Query, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use rsa::RsaPublicKey;
    use serde_json::{Value, json};

    use super::*;
    use crate::kalshi::signing::{self, HEADER_KEY, HEADER_SIGNATURE, HEADER_TIMESTAMP};

    const DUMP: &str = include_str!("../../tests/fixtures/kalshi/rest_markets_dump.json");
    const PKCS8: &str = include_str!("../../tests/fixtures/kalshi/test_key_pkcs8.pem");

    /// The 46 recorded markets, in their recorded order.
    fn recorded_markets() -> Vec<Value> {
        let dump: serde_json::Map<String, Value> = serde_json::from_str(DUMP).unwrap();
        let mut markets: Vec<(usize, Value)> = dump
            .into_iter()
            .map(|(key, market)| (key.parse().unwrap(), market))
            .collect();
        markets.sort_by_key(|(key, _)| *key);
        markets.into_iter().map(|(_, market)| market).collect()
    }

    /// What the mock exchange saw of one request.
    #[derive(Clone, Debug)]
    struct Seen {
        query: HashMap<String, String>,
        signature_ok: bool,
    }

    struct Exchange {
        public_key: RsaPublicKey,
        pages: Vec<Value>,
        /// Failures served before any page: status and optional `Retry-After`.
        failures: Mutex<VecDeque<(StatusCode, Option<&'static str>)>>,
        seen: Mutex<Vec<Seen>>,
    }

    async fn list_markets(
        State(exchange): State<Arc<Exchange>>,
        Query(query): Query<HashMap<String, String>>,
        headers: HeaderMap,
    ) -> Response {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let signature_ok = header(HEADER_KEY) == "test-key"
            && signing::verify(
                &exchange.public_key,
                &header(HEADER_TIMESTAMP),
                "GET",
                "/trade-api/v2/markets",
                &header(HEADER_SIGNATURE),
            )
            .is_ok();
        exchange.seen.lock().unwrap().push(Seen {
            query: query.clone(),
            signature_ok,
        });
        if let Some((status, retry_after)) = exchange.failures.lock().unwrap().pop_front() {
            let mut response = (status, r#"{"error": "too many requests"}"#).into_response();
            if let Some(after) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", after.parse().unwrap());
            }
            return response;
        }
        let page = match query.get("cursor").map(String::as_str) {
            None => 0,
            Some("c2") => 1,
            Some(_) => return (StatusCode::BAD_REQUEST, "bad cursor").into_response(),
        };
        axum::Json(exchange.pages[page].clone()).into_response()
    }

    /// A real HTTP server on port 0 serving the recorded markets in two pages.
    async fn start_exchange(
        failures: Vec<(StatusCode, Option<&'static str>)>,
    ) -> (String, Arc<Exchange>, Signer) {
        let signer = Signer::from_pem("test-key", PKCS8).unwrap();
        let markets = recorded_markets();
        let (first, second) = markets.split_at(30);
        let exchange = Arc::new(Exchange {
            public_key: signer.public_key(),
            pages: vec![
                json!({"markets": first, "cursor": "c2"}),
                json!({"markets": second, "cursor": ""}),
            ],
            failures: Mutex::new(failures.into()),
            seen: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/trade-api/v2/markets", get(list_markets))
            .with_state(exchange.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{address}/trade-api/v2"), exchange, signer)
    }

    fn fast_retry() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            max_retry_after: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn markets_follow_the_cursor_with_signed_requests() {
        let (base, exchange, signer) = start_exchange(Vec::new()).await;
        let client = RestClient::new(&base, Some(signer)).unwrap();
        let filter = MarketFilter {
            status: Some("open".to_owned()),
            series_ticker: Some("KXFEDMENTION".to_owned()),
            event_ticker: None,
        };
        let markets = client.markets(&filter).await.unwrap();
        assert_eq!(markets.len(), 46);
        let tickers: HashSet<_> = markets.iter().map(|m| m.ticker.as_str()).collect();
        assert_eq!(tickers.len(), 46);

        let seen = exchange.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2);
        assert!(seen.iter().all(|s| s.signature_ok), "{seen:?}");
        assert_eq!(seen[0].query.get("limit").map(String::as_str), Some("1000"));
        assert_eq!(
            seen[0].query.get("status").map(String::as_str),
            Some("open")
        );
        assert_eq!(
            seen[0].query.get("series_ticker").map(String::as_str),
            Some("KXFEDMENTION")
        );
        assert!(!seen[0].query.contains_key("cursor"));
        assert!(!seen[0].query.contains_key("event_ticker"));
        assert_eq!(seen[1].query.get("cursor").map(String::as_str), Some("c2"));

        let first = &markets[0];
        assert_eq!(first.ticker, "KXFEDMENTION-26MAR-JUDY");
        assert_eq!(first.event_ticker, "KXFEDMENTION-26MAR");
        assert_eq!(first.series_ticker, "KXFEDMENTION");
        assert_eq!(first.subtitle, "Judy Shelton");
        assert_eq!(first.status, "active");
        assert_eq!(first.price_level_structure, "linear_cent");
        assert_eq!(
            first.price_ranges_json,
            r#"[{"end":"1.0000","start":"0.0000","step":"0.0100"}]"#
        );
        // 2026-03-03T23:00:00Z and 2026-03-19T14:00:00Z.
        assert_eq!(first.open_time_us, Some(1_772_578_800_000_000));
        assert_eq!(first.close_time_us, Some(1_773_928_800_000_000));
    }

    #[tokio::test]
    async fn unsigned_client_sends_no_auth_headers() {
        let (base, exchange, _signer) = start_exchange(Vec::new()).await;
        let client = RestClient::new(&format!("{base}/"), None).unwrap();
        let markets = client.markets(&MarketFilter::default()).await.unwrap();
        assert_eq!(markets.len(), 46);
        assert!(markets.iter().all(|m| m.series_ticker.is_empty()));
        assert!(
            exchange
                .seen
                .lock()
                .unwrap()
                .iter()
                .all(|s| !s.signature_ok)
        );
    }

    #[tokio::test]
    async fn rate_limits_and_server_errors_are_retried() {
        let (base, exchange, signer) = start_exchange(vec![
            (StatusCode::TOO_MANY_REQUESTS, None),
            (StatusCode::BAD_GATEWAY, None),
        ])
        .await;
        let client = RestClient::new(&base, Some(signer))
            .unwrap()
            .with_retry(fast_retry());
        assert_eq!(
            client
                .markets(&MarketFilter::default())
                .await
                .unwrap()
                .len(),
            46
        );
        let seen = exchange.seen.lock().unwrap();
        assert_eq!(seen.len(), 4);
        // Every attempt is signed afresh.
        assert!(seen.iter().all(|s| s.signature_ok));
    }

    #[tokio::test]
    async fn retry_after_is_honoured() {
        let (base, _exchange, signer) =
            start_exchange(vec![(StatusCode::TOO_MANY_REQUESTS, Some("1"))]).await;
        let client = RestClient::new(&base, Some(signer))
            .unwrap()
            .with_retry(fast_retry());
        let started = Instant::now();
        client.markets(&MarketFilter::default()).await.unwrap();
        assert!(started.elapsed() >= Duration::from_secs(1));
    }

    #[tokio::test]
    async fn retries_are_bounded_and_client_errors_are_not_retried() {
        let (base, exchange, signer) = start_exchange(vec![
            (StatusCode::SERVICE_UNAVAILABLE, None),
            (StatusCode::SERVICE_UNAVAILABLE, None),
            (StatusCode::SERVICE_UNAVAILABLE, None),
        ])
        .await;
        let client = RestClient::new(&base, Some(signer.clone()))
            .unwrap()
            .with_retry(fast_retry());
        let error = client.markets(&MarketFilter::default()).await.unwrap_err();
        assert!(error.is_retriable());
        assert!(
            matches!(error, RestError::Status { status: 503, .. }),
            "{error}"
        );
        assert_eq!(exchange.seen.lock().unwrap().len(), 3);

        let (base, exchange, _) = start_exchange(vec![(StatusCode::UNAUTHORIZED, None)]).await;
        let client = RestClient::new(&base, Some(signer))
            .unwrap()
            .with_retry(fast_retry());
        let error = client.markets(&MarketFilter::default()).await.unwrap_err();
        assert!(!error.is_retriable());
        assert!(
            matches!(error, RestError::Status { status: 401, .. }),
            "{error}"
        );
        assert_eq!(exchange.seen.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn unreachable_server_is_a_retriable_transport_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let client = RestClient::new(&format!("http://{address}/trade-api/v2"), None)
            .unwrap()
            .with_retry(RetryPolicy {
                max_attempts: 1,
                ..fast_retry()
            });
        let error = client.markets(&MarketFilter::default()).await.unwrap_err();
        assert!(matches!(error, RestError::Transport { .. }), "{error}");
        assert!(error.is_retriable());
    }

    #[test]
    fn base_urls_are_checked() {
        assert!(RestClient::new("not a url", None).is_err());
        assert!(RestClient::new("ftp://example.com/x", None).is_err());
        assert!(RestClient::new("https://example.com/x?y=1", None).is_err());
        let client =
            RestClient::new("https://external-api.kalshi.com/trade-api/v2/", None).unwrap();
        assert_eq!(
            client.url(&["markets", "KX A/B"]).as_str(),
            "https://external-api.kalshi.com/trade-api/v2/markets/KX%20A%2FB"
        );
    }

    #[test]
    fn backoff_doubles_within_bounds() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            max_retry_after: Duration::from_secs(1),
        };
        for (failed, step) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (60, 1000),
        ] {
            let wait = policy.backoff(failed).as_millis();
            assert!((step / 2..=step).contains(&wait), "{failed}: {wait}");
        }
    }
}
