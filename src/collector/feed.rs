//! The collector's I/O: market discovery over REST, the signed WebSocket, reconnects, and the
//! timers that flush rows, checkpoint books and refresh the market list.
//!
//! The read loop does only cheap work per frame (parse, apply to in-memory books, queue rows):
//! Kalshi kills subscriptions that are read too slowly (error 25). Inserts happen in the
//! writer's own task; discovery in its own task.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_util::sync::CancellationToken;

use super::processor::{Processor, Stats};
use super::writer::Writer;
use crate::kalshi::rest::{MarketFilter, RestClient};
use crate::kalshi::signing::Signer;
use crate::market::MarketMeta;

/// Tunables of the I/O loop; units in the names.
#[derive(Clone, Debug)]
pub struct FeedConfig {
    pub ws_url: String,
    pub rest_url: String,
    pub filter: MarketFilter,
    /// Queue rows for insertion at least this often…
    pub flush_interval: Duration,
    /// …or as soon as this many rows are waiting.
    pub flush_rows: usize,
    pub checkpoint_every: Duration,
    pub discovery_interval: Duration,
    /// No frame of any kind (Kalshi pings every 10 s) for this long: the socket is dead.
    pub stall_timeout: Duration,
    /// We ping too, so a silent peer is noticed even when the exchange sends nothing.
    pub ping_interval: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl FeedConfig {
    #[must_use]
    pub fn new(ws_url: String, rest_url: String) -> Self {
        Self {
            ws_url,
            rest_url,
            filter: MarketFilter::default(),
            flush_interval: Duration::from_millis(200),
            flush_rows: 50_000,
            checkpoint_every: Duration::from_secs(1),
            discovery_interval: Duration::from_secs(300),
            stall_timeout: Duration::from_secs(30),
            ping_interval: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// What `/readyz` and metrics know of the collector.
#[derive(Debug, Default)]
pub struct FeedHealth {
    pub connected: AtomicBool,
    /// Unix µs of the last frame received.
    pub last_frame_us: AtomicI64,
    pub reconnects: AtomicI64,
}

pub(crate) fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Runs discovery and the connection loop until `shutdown`; rows go to `writer`.
pub async fn run(
    config: FeedConfig,
    signer: Option<Signer>,
    mut processor: Processor,
    writer: Writer,
    health: Arc<FeedHealth>,
    shutdown: CancellationToken,
) {
    let signer = signer.map(Arc::new);
    let rest = match RestClient::new(&config.rest_url, signer.as_deref().cloned()) {
        Ok(rest) => rest,
        Err(error) => {
            tracing::error!(%error, url = %config.rest_url, "invalid Kalshi REST URL; collector stopped");
            return;
        }
    };
    let (markets_tx, mut markets_rx) = mpsc::channel::<Vec<MarketMeta>>(4);
    let discovery = tokio::spawn(discover_forever(
        rest,
        config.filter.clone(),
        config.discovery_interval,
        markets_tx,
        shutdown.clone(),
    ));
    // Start with the market list, so the first connection subscribes to everything at once.
    tokio::select! {
        () = shutdown.cancelled() => {}
        markets = markets_rx.recv() => {
            if let Some(markets) = markets {
                processor.set_markets(markets, now_micros());
            }
        }
    }
    let mut backoff = config.backoff_initial;
    while !shutdown.is_cancelled() {
        match connect(&config.ws_url, signer.as_deref()).await {
            Ok(socket) => {
                health.connected.store(true, Ordering::Relaxed);
                let opened = std::time::Instant::now();
                let reason = session(
                    &config,
                    socket,
                    &mut processor,
                    &writer,
                    &health,
                    &mut markets_rx,
                    &shutdown,
                )
                .await;
                health.connected.store(false, Ordering::Relaxed);
                if shutdown.is_cancelled() {
                    tracing::info!(%reason, "connection ended");
                } else {
                    tracing::warn!(%reason, "connection ended");
                }
                processor.disconnect(&reason);
                writer.submit(processor.take_rows());
                backoff = backoff_after_session(backoff, opened.elapsed(), &config);
            }
            Err(error) => tracing::warn!(%error, "cannot connect to the exchange"),
        }
        if shutdown.is_cancelled() {
            break;
        }
        health.reconnects.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("collector_reconnects_total").increment(1);
        let jitter = rand::rng().random_range(0.5..1.0);
        let wait = backoff.mul_f64(jitter);
        tracing::info!(wait_ms = wait.as_millis(), "reconnecting");
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(wait) => {}
        }
        backoff = (backoff * 2).min(config.backoff_max);
    }
    discovery.abort();
    writer.submit(processor.take_rows());
}

/// A connection that lasted this long was a working one: the next reconnect starts from the
/// shortest wait again.
const STABLE_CONNECTION: Duration = Duration::from_secs(5);

/// The backoff after a session that lasted `lasted`: reset only after a stable one, so an
/// exchange that accepts connections and drops them at once is not redialled four times a
/// second for ever.
fn backoff_after_session(backoff: Duration, lasted: Duration, config: &FeedConfig) -> Duration {
    if lasted >= STABLE_CONNECTION {
        config.backoff_initial
    } else {
        backoff
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the WebSocket with Kalshi's signed handshake headers (fresh for every attempt: the
/// timestamp is part of the signature).
async fn connect(
    url: &str,
    signer: Option<&Signer>,
) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    let mut request = url.into_client_request()?;
    if let Some(signer) = signer {
        let path = request.uri().path().to_owned();
        let signed = signer.headers("GET", &path, now_micros() / 1000);
        let headers = request.headers_mut();
        for (name, value) in [
            ("KALSHI-ACCESS-KEY", signed.key_id),
            ("KALSHI-ACCESS-TIMESTAMP", signed.timestamp),
            ("KALSHI-ACCESS-SIGNATURE", signed.signature),
        ] {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
    }
    let connect = tokio_tungstenite::connect_async(request);
    match tokio::time::timeout(Duration::from_secs(15), connect).await {
        Ok(result) => result.map(|(socket, _)| socket),
        Err(_) => Err(tokio_tungstenite::tungstenite::Error::Io(
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "WebSocket handshake timed out",
            ),
        )),
    }
}

/// One connection's life; returns why it ended.
async fn session(
    config: &FeedConfig,
    socket: Socket,
    processor: &mut Processor,
    writer: &Writer,
    health: &FeedHealth,
    markets_rx: &mut mpsc::Receiver<Vec<MarketMeta>>,
    shutdown: &CancellationToken,
) -> String {
    let (mut sink, mut stream) = socket.split();
    let conn = processor.connect(now_micros());
    tracing::info!(conn, markets = processor.subscribed_markets(), "connected");
    let mut flush = tokio::time::interval(config.flush_interval);
    let mut checkpoint = tokio::time::interval(config.checkpoint_every);
    let mut ping = tokio::time::interval(config.ping_interval);
    let mut last_frame = tokio::time::Instant::now();
    let mut watchdog = tokio::time::interval(Duration::from_secs(1));
    loop {
        if let Some(reason) = processor.abandon_reason() {
            return reason.to_owned();
        }
        for command in processor.take_commands() {
            if let Err(error) = sink.send(Message::text(command)).await {
                return format!("cannot send a command: {error}");
            }
        }
        if processor.pending_rows() >= config.flush_rows {
            writer.submit(processor.take_rows());
        }
        // Cancel safety: every branch's future is either cancel safe (StreamExt::next,
        // Receiver::recv, Interval::tick) or owns nothing that would be lost.
        tokio::select! {
            () = shutdown.cancelled() => {
                let _ = sink.send(Message::Close(None)).await;
                return "shutdown".to_owned();
            }
            message = stream.next() => {
                last_frame = tokio::time::Instant::now();
                let now = now_micros();
                health.last_frame_us.store(now, Ordering::Relaxed);
                match message {
                    Some(Ok(Message::Text(text))) => processor.on_text(text.as_str(), now),
                    Some(Ok(Message::Binary(_) | Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Close(frame))) => return format!("closed by the exchange: {frame:?}"),
                    Some(Err(error)) => return format!("read failed: {error}"),
                    None => return "stream ended".to_owned(),
                }
            }
            markets = markets_rx.recv() => {
                if let Some(markets) = markets {
                    processor.set_markets(markets, now_micros());
                }
            }
            _ = flush.tick() => {
                writer.submit(processor.take_rows());
                record_stats(processor.take_stats());
            }
            _ = checkpoint.tick() => processor.checkpoint(now_micros()),
            _ = ping.tick() => {
                if let Err(error) = sink.send(Message::Ping(Bytes::from_static(b"kalshibook"))).await {
                    return format!("cannot ping: {error}");
                }
            }
            _ = watchdog.tick() => {
                if last_frame.elapsed() > config.stall_timeout {
                    return format!("no frame for {} s: socket stalled", config.stall_timeout.as_secs());
                }
                let now = now_micros();
                for (market, last) in processor.last_updates() {
                    metrics::gauge!("collector_market_last_update_age_seconds", "market" => market.to_owned())
                        .set((now - last) as f64 / 1e6);
                }
            }
        }
    }
}

fn record_stats(stats: Stats) {
    metrics::counter!("collector_frames_total").increment(stats.frames);
    metrics::counter!("collector_messages_total", "type" => "orderbook_delta")
        .increment(stats.deltas);
    metrics::counter!("collector_messages_total", "type" => "orderbook_snapshot")
        .increment(stats.snapshots);
    metrics::counter!("collector_messages_total", "type" => "trade").increment(stats.trades);
    metrics::counter!("collector_malformed_frames_total").increment(stats.malformed);
    metrics::counter!("collector_dropped_deltas_total").increment(stats.dropped_deltas);
    metrics::counter!("collector_gaps_total").increment(stats.gaps);
    metrics::counter!("collector_subscription_errors_total").increment(stats.subscription_errors);
    metrics::counter!("collector_repeated_frames_total").increment(stats.repeated_frames);
    metrics::counter!("collector_foreign_frames_total").increment(stats.foreign_frames);
    metrics::counter!("collector_repeated_trades_total").increment(stats.repeated_trades);
}

/// Lists markets now and every `interval`, retrying failures with backoff.
async fn discover_forever(
    rest: RestClient,
    filter: MarketFilter,
    interval: Duration,
    out: mpsc::Sender<Vec<MarketMeta>>,
    shutdown: CancellationToken,
) {
    let mut retry = Duration::from_secs(1);
    loop {
        let wait = match rest.markets(&filter).await {
            Ok(markets) => {
                retry = Duration::from_secs(1);
                tracing::info!(markets = markets.len(), "discovered markets");
                if out.send(markets).await.is_err() {
                    return;
                }
                interval
            }
            Err(error) => {
                tracing::warn!(%error, "market discovery failed");
                retry = (retry * 2).min(Duration::from_secs(60));
                retry
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_stable_connection_resets_the_backoff() {
        let config = FeedConfig::new("ws://x".into(), "http://x".into());
        let grown = Duration::from_secs(8);
        // Accepted and dropped at once: the wait keeps growing.
        assert_eq!(
            backoff_after_session(grown, Duration::from_millis(40), &config),
            grown
        );
        assert_eq!(
            backoff_after_session(grown, STABLE_CONNECTION, &config),
            config.backoff_initial
        );
    }
}
