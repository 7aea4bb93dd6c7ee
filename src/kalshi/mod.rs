//! The exchange: Kalshi's wire protocol (`messages`), its pure conversion into the market
//! domain (`parse`), client commands (`commands`), request signing (`signing`) and REST market
//! discovery (`rest`). Flow: `kalshi → collector`.

pub mod commands;
pub(crate) mod messages;
pub mod parse;
pub mod rest;
pub mod signing;

pub use commands::UpdateAction;
pub use parse::{
    Body, DeltaUpdate, Envelope, Frame, LifecycleUpdate, ParseError, TradeUpdate, parse_frame,
};
pub use rest::{MarketFilter, RestClient, RestError, RetryPolicy};
pub use signing::{SignatureError, SignedHeaders, Signer, verify};

/// Production REST base URL (recommended host).
pub const PROD_REST_URL: &str = "https://external-api.kalshi.com/trade-api/v2";
/// Production WebSocket URL (recommended host).
pub const PROD_WS_URL: &str = "wss://external-api-ws.kalshi.com/trade-api/ws/v2";
/// Demo REST base URL.
pub const DEMO_REST_URL: &str = "https://external-api.demo.kalshi.co/trade-api/v2";
/// Demo WebSocket URL.
pub const DEMO_WS_URL: &str = "wss://external-api-ws.demo.kalshi.co/trade-api/ws/v2";
/// The path signed for the WebSocket upgrade (`timestamp + "GET" + WS_PATH`).
pub const WS_PATH: &str = "/trade-api/ws/v2";
