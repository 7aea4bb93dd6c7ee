//! The simulator's HTTP side: Kalshi's REST market endpoints under `/trade-api/v2`, the
//! WebSocket upgrade route, and the signature gate in front of both.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::AuthError;
use super::clock::{now_us, rfc3339_micros, rfc3339_secs};
use super::market::{SimMarket, Status};
use super::messages::{Level, PriceRangeMsg};
use super::{Shared, ws};
use crate::market::{Price, Side, Size};

/// Kalshi's default and largest `/markets` page.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// The whole HTTP app: REST, the WebSocket route, and the signature gate over everything.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/markets", get(markets))
        .route("/markets/orderbooks", get(orderbooks))
        .route("/markets/{ticker}", get(market))
        .route("/markets/{ticker}/orderbook", get(orderbook))
        .route("/exchange/status", get(exchange_status));
    Router::new()
        .nest("/trade-api/v2", api)
        .route(ws::PATH, get(ws::upgrade))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            require_signature,
        ))
        .with_state(shared)
}

/// A request the exchange refuses, as Kalshi's `{"error": {code, message, details}}`.
enum RestError {
    Unauthorized(AuthError),
    NotFound,
    BadRequest(String),
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let (status, code, details) = match self {
            Self::Unauthorized(error) => (
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                error.to_string(),
            ),
            Self::NotFound => (StatusCode::NOT_FOUND, "not_found", String::new()),
            Self::BadRequest(details) => (StatusCode::BAD_REQUEST, "bad_request", details),
        };
        let body =
            json!({"error": {"code": code, "message": code, "details": details, "service": "sim"}});
        (status, Json(body)).into_response()
    }
}

/// Checks the Kalshi signature headers on every request when a key is configured.
async fn require_signature(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(gate) = &shared.gate {
        let now_ms = now_us() / 1000;
        if let Err(error) = gate.check(
            request.method().as_str(),
            request.uri().path(),
            request.headers(),
            now_ms,
        ) {
            tracing::debug!(%error, path = request.uri().path(), "sim: refused unsigned request");
            return RestError::Unauthorized(error).into_response();
        }
    }
    next.run(request).await
}

async fn not_found() -> RestError {
    RestError::NotFound
}

/// Kalshi's Market object (the fields of the August 2026 captures).
#[derive(Serialize)]
struct MarketView {
    can_close_early: bool,
    close_time: String,
    created_time: String,
    early_close_condition: &'static str,
    event_ticker: String,
    exchange_index: u32,
    expected_expiration_time: String,
    expiration_time: String,
    expiration_value: &'static str,
    fractional_trading_enabled: bool,
    floor_strike: i64,
    last_price_dollars: String,
    latest_expiration_time: String,
    liquidity_dollars: &'static str,
    market_type: &'static str,
    no_ask_dollars: String,
    no_bid_dollars: String,
    no_sub_title: String,
    notional_value_dollars: &'static str,
    occurrence_datetime: Option<String>,
    open_interest_fp: String,
    open_time: String,
    previous_price_dollars: String,
    previous_yes_ask_dollars: String,
    previous_yes_bid_dollars: String,
    price_level_structure: &'static str,
    price_ranges: Vec<PriceRangeMsg>,
    result: &'static str,
    rules_primary: String,
    rules_secondary: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    settlement_ts: Option<String>,
    settlement_timer_seconds: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    settlement_value_dollars: Option<String>,
    status: &'static str,
    strike_type: &'static str,
    ticker: String,
    title: String,
    updated_time: String,
    volume_24h_fp: String,
    volume_fp: String,
    yes_ask_dollars: String,
    yes_ask_size_fp: String,
    yes_bid_dollars: String,
    yes_bid_size_fp: String,
    yes_sub_title: String,
}

fn market_view(market: &SimMarket) -> MarketView {
    let (bid, bid_size, ask, ask_size) = market.quotes();
    let no_bid = market
        .book
        .best_bid(Side::No)
        .map_or(Price::from_units(0), |(p, _)| p);
    let settled = matches!(market.status, Status::Determined | Status::Finalized);
    MarketView {
        can_close_early: true,
        close_time: rfc3339_secs(market.close_secs),
        created_time: rfc3339_micros(market.created_us),
        early_close_condition: "This market may close early if the outcome is known.",
        event_ticker: market.event_ticker.clone(),
        exchange_index: 0,
        expected_expiration_time: rfc3339_secs(market.expected_expiration_secs),
        expiration_time: rfc3339_secs(market.latest_expiration_secs),
        expiration_value: "",
        fractional_trading_enabled: market.dynamics.fractional,
        floor_strike: market.strike,
        last_price_dollars: market.stats.last_price.unwrap_or_default().to_string(),
        latest_expiration_time: rfc3339_secs(market.latest_expiration_secs),
        liquidity_dollars: "0.0000",
        market_type: "binary",
        no_ask_dollars: bid.complement().to_string(),
        no_bid_dollars: no_bid.to_string(),
        no_sub_title: market.no_sub_title.clone(),
        notional_value_dollars: "1.0000",
        occurrence_datetime: settled.then(|| rfc3339_secs(market.close_secs)),
        open_interest_fp: Size::from_units(market.stats.open_interest).to_string(),
        open_time: rfc3339_secs(market.open_secs),
        previous_price_dollars: market.stats.previous_price.to_string(),
        previous_yes_ask_dollars: market.stats.previous_yes_ask.to_string(),
        previous_yes_bid_dollars: market.stats.previous_yes_bid.to_string(),
        price_level_structure: market.dynamics.structure.as_str(),
        price_ranges: market.price_ranges(),
        result: market.result.map_or("", Side::as_str),
        rules_primary: market.rules_primary(),
        rules_secondary: "",
        settlement_ts: market.settled_secs.map(rfc3339_secs),
        settlement_timer_seconds: 300,
        settlement_value_dollars: market.result.map(|result| {
            match result {
                Side::Yes => Price::ONE_DOLLAR,
                Side::No => Price::from_units(0),
            }
            .to_string()
        }),
        status: market.status.as_str(),
        strike_type: "greater",
        ticker: market.ticker.clone(),
        title: market.title.clone(),
        updated_time: rfc3339_micros(market.updated_us),
        volume_24h_fp: Size::from_units(market.stats.volume).to_string(),
        volume_fp: Size::from_units(market.stats.volume).to_string(),
        yes_ask_dollars: ask.to_string(),
        yes_ask_size_fp: ask_size.to_string(),
        yes_bid_dollars: bid.to_string(),
        yes_bid_size_fp: bid_size.to_string(),
        yes_sub_title: market.yes_sub_title.clone(),
    }
}

/// `GET /markets` query; strings so a bad value is a 400 with a message, not a rejection.
#[derive(Deserialize)]
struct MarketsQuery {
    limit: Option<String>,
    cursor: Option<String>,
    event_ticker: Option<String>,
    series_ticker: Option<String>,
    status: Option<String>,
    tickers: Option<String>,
}

/// Whether a market passes a `status` filter (the filter names differ from the response's).
fn status_matches(filter: &str, status: Status) -> Option<bool> {
    Some(match filter {
        "unopened" => status == Status::Initialized,
        "open" => status == Status::Active,
        "paused" => status == Status::Inactive,
        "closed" => matches!(status, Status::Closed | Status::Determined),
        "settled" => status == Status::Finalized,
        _ => return None,
    })
}

fn encode_cursor(index: usize) -> String {
    URL_SAFE_NO_PAD.encode(format!("sim-v1:{index}"))
}

fn decode_cursor(cursor: &str) -> Option<usize> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    String::from_utf8(bytes)
        .ok()?
        .strip_prefix("sim-v1:")?
        .parse()
        .ok()
}

/// `GET /markets`: filtered, in creation order, cursor-paginated (`cursor` is `""` on the
/// last page). Markets created while a client pages are appended, so none is seen twice.
async fn markets(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<MarketsQuery>,
) -> Result<Json<serde_json::Value>, RestError> {
    let limit = match query.limit.as_deref().filter(|l| !l.is_empty()) {
        None => DEFAULT_LIMIT,
        Some(text) => match text.parse::<usize>() {
            Ok(0) => DEFAULT_LIMIT,
            Ok(limit) if limit <= MAX_LIMIT => limit,
            _ => {
                return Err(RestError::BadRequest(format!(
                    "limit must be 0..={MAX_LIMIT}"
                )));
            }
        },
    };
    let start = match query.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => 0,
        Some(cursor) => {
            decode_cursor(cursor).ok_or_else(|| RestError::BadRequest("invalid cursor".into()))?
        }
    };
    if let Some(status) = query.status.as_deref().filter(|s| !s.is_empty())
        && status_matches(status, Status::Active).is_none()
    {
        return Err(RestError::BadRequest(format!("invalid status {status:?}")));
    }
    let tickers: Option<Vec<&str>> = query
        .tickers
        .as_deref()
        .filter(|t| !t.is_empty())
        .map(|t| t.split(',').map(str::trim).collect());
    let exchange = shared.exchange();
    let wanted = |market: &SimMarket| {
        query
            .event_ticker
            .as_deref()
            .is_none_or(|e| e.is_empty() || e == market.event_ticker)
            && query
                .series_ticker
                .as_deref()
                .is_none_or(|s| s.is_empty() || s == market.series_ticker)
            && query
                .status
                .as_deref()
                .filter(|s| !s.is_empty())
                .is_none_or(|s| status_matches(s, market.status) == Some(true))
            && tickers
                .as_ref()
                .is_none_or(|t| t.contains(&market.ticker.as_str()))
    };
    let mut page = Vec::new();
    let mut cursor = String::new();
    for (index, market) in exchange.markets.iter().enumerate().skip(start) {
        if !wanted(market) {
            continue;
        }
        if page.len() == limit {
            cursor = encode_cursor(index);
            break;
        }
        page.push(market_view(market));
    }
    Ok(Json(json!({"markets": page, "cursor": cursor})))
}

async fn market(
    State(shared): State<Arc<Shared>>,
    Path(ticker): Path<String>,
) -> Result<Json<serde_json::Value>, RestError> {
    let exchange = shared.exchange();
    let index = exchange.market_index(&ticker).ok_or(RestError::NotFound)?;
    Ok(Json(
        json!({"market": market_view(&exchange.markets[index])}),
    ))
}

#[derive(Serialize)]
struct OrderbookView {
    yes_dollars: Vec<Level>,
    no_dollars: Vec<Level>,
}

/// Both ladders, ascending (best bid last), the best `depth` levels (0 = all).
fn orderbook_view(market: &SimMarket, depth: usize) -> OrderbookView {
    let side = |side: Side| {
        let levels = market.levels(side);
        let skip = if depth == 0 {
            0
        } else {
            levels.len().saturating_sub(depth)
        };
        levels.into_iter().skip(skip).collect()
    };
    OrderbookView {
        yes_dollars: side(Side::Yes),
        no_dollars: side(Side::No),
    }
}

#[derive(Deserialize)]
struct DepthQuery {
    depth: Option<String>,
}

fn parse_depth(depth: Option<&str>) -> Result<usize, RestError> {
    match depth.filter(|d| !d.is_empty()) {
        None => Ok(0),
        Some(text) => match text.parse::<i64>() {
            Ok(depth) if depth <= 0 => Ok(0),
            Ok(depth) if depth <= 100 => Ok(usize::try_from(depth).unwrap_or(0)),
            _ => Err(RestError::BadRequest("depth must be 0..=100".into())),
        },
    }
}

/// `GET /markets/{ticker}/orderbook`: `{"orderbook_fp": {"yes_dollars": [...], "no_dollars": [...]}}`.
async fn orderbook(
    State(shared): State<Arc<Shared>>,
    Path(ticker): Path<String>,
    Query(query): Query<DepthQuery>,
) -> Result<Json<serde_json::Value>, RestError> {
    let depth = parse_depth(query.depth.as_deref())?;
    let exchange = shared.exchange();
    let index = exchange.market_index(&ticker).ok_or(RestError::NotFound)?;
    Ok(Json(
        json!({"orderbook_fp": orderbook_view(&exchange.markets[index], depth)}),
    ))
}

/// `GET /markets/orderbooks?tickers=A&tickers=B` (the key repeats; 1–100 tickers).
async fn orderbooks(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
) -> Result<Json<serde_json::Value>, RestError> {
    let query = query.unwrap_or_default();
    let tickers: Vec<String> = query
        .split('&')
        .filter_map(|pair| pair.strip_prefix("tickers="))
        .flat_map(|value| {
            percent_decode(value)
                .split(',')
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|ticker| !ticker.is_empty())
        .collect();
    if tickers.is_empty() || tickers.len() > 100 {
        return Err(RestError::BadRequest(
            "tickers: 1 to 100 market tickers".into(),
        ));
    }
    let exchange = shared.exchange();
    let books: Vec<serde_json::Value> = tickers
        .iter()
        .filter_map(|ticker| exchange.market_index(ticker))
        .map(|index| {
            let market = &exchange.markets[index];
            json!({"ticker": market.ticker, "orderbook_fp": orderbook_view(market, 0)})
        })
        .collect();
    Ok(Json(json!({"orderbooks": books})))
}

/// Decodes `%XX` escapes and `+` in a query value.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn exchange_status() -> Json<serde_json::Value> {
    Json(json!({
        "exchange_active": true,
        "trading_active": true,
        "exchange_estimated_resume_time": null,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        assert_eq!(decode_cursor(&encode_cursor(1234)), Some(1234));
        assert_eq!(decode_cursor("not-a-cursor"), None);
    }

    #[test]
    fn status_filters_use_kalshi_filter_names() {
        assert_eq!(status_matches("open", Status::Active), Some(true));
        assert_eq!(status_matches("closed", Status::Determined), Some(true));
        assert_eq!(status_matches("settled", Status::Finalized), Some(true));
        assert_eq!(status_matches("unopened", Status::Initialized), Some(true));
        assert_eq!(status_matches("active", Status::Active), None);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("KX-A%2CKX-B"), "KX-A,KX-B");
        assert_eq!(percent_decode("50%"), "50%");
    }
}
