//! `kalshibook bench fanout`: live fan-out measured end to end in one process. Exchange
//! frames go through the collector's real processor (parse, sequence check, apply, publish on
//! the bus) at a steady rate; the real server fans them out to WebSocket subscribers (the
//! `orderbook` subscription over graphql-transport-ws, spoken by hand with
//! tokio-tungstenite). Latency is from the instant the processor receives a frame (its
//! `receivedAt`) to the instant a subscriber has read and parsed the message carrying it.
//! Everything shares this machine's cores: the figures include the clients' own work.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::accounts::{Principal, Tier};
use crate::bench::{IngestArgs, exchange_frames, percentile};
use crate::collector::processor::{Processor, ProcessorConfig};
use crate::config::Config;
use crate::graphql::now_us;
use crate::graphql::scalars::parse_rfc3339_us;
use crate::live::Bus;
use crate::server::ws::Authenticator;

/// Options of `bench fanout`.
#[derive(Clone, Debug, Args)]
pub struct FanoutArgs {
    /// Subscriber counts to measure, one run each.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,5000")]
    pub subscribers: Vec<usize>,
    /// Markets the subscribers and the deltas are spread over.
    #[arg(long, default_value_t = 500)]
    pub markets: usize,
    /// Exchange deltas per second fed to the collector.
    #[arg(long, default_value_t = 2_000)]
    pub rate: usize,
    /// Seconds of feed per run.
    #[arg(long, default_value_t = 5)]
    pub seconds: usize,
    /// Subscriptions per WebSocket connection.
    #[arg(long, default_value_t = 10)]
    pub per_connection: usize,
}

/// Every key is valid and its own Project-tier account: the bench measures fan-out, not
/// Postgres (which `bench` runs need not have).
struct AnyKey;

impl Authenticator for AnyKey {
    fn authenticate<'a>(
        &'a self,
        _key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Principal>, String>> {
        Box::pin(async move {
            Ok(Some(Principal {
                account_id: Uuid::new_v4(),
                key_id: Uuid::new_v4(),
                user_id: Uuid::new_v4(),
                tier: Tier::Project,
            }))
        })
    }
}

const SUBSCRIPTION: &str =
    "subscription($t: String!) { orderbook(ticker: $t) { kind receivedAt } }";

/// What the subscriber tasks report.
#[derive(Default)]
struct Received {
    deltas: AtomicU64,
    latencies_us: std::sync::Mutex<Vec<u32>>,
}

/// `bench fanout`.
///
/// # Errors
/// When the server cannot start or a subscriber cannot connect.
pub async fn fanout(config: &Config, args: &FanoutArgs) -> anyhow::Result<()> {
    crate::telemetry::install_crypto_provider();
    println!(
        "bench fanout: {} markets, {} exchange deltas/s for {} s per run, {} subscriptions per connection, orderbook subscriptions over graphql-transport-ws",
        args.markets, args.rate, args.seconds, args.per_connection
    );
    println!(
        "{:>11}  {:>14}  {:>10}  {:>10}  {:>10}",
        "subscribers", "messages/s", "delivered", "p50 ms", "p99 ms"
    );
    for &subscribers in &args.subscribers {
        run(config, args, subscribers).await?;
    }
    Ok(())
}

async fn run(config: &Config, args: &FanoutArgs, subscribers: usize) -> anyhow::Result<()> {
    let deltas = args.rate * args.seconds;
    let (frames, markets) = exchange_frames(&IngestArgs {
        deltas,
        markets: args.markets,
        rounds: 1,
        raw_frames: false,
    });
    let setup = frames.len() - deltas;
    let bus = Bus::default();
    let mut processor = Processor::new(ProcessorConfig::default(), Some(bus.clone()));
    processor.connect(now_us());
    processor.take_commands();
    for frame in &frames[..setup] {
        processor.on_text(frame, now_us());
    }
    processor.take_rows();

    let mut state = crate::server::AppState::new(config)?;
    state.bus = Some(bus.clone());
    state.live_meter = None;
    state.authenticator = Arc::new(AnyKey);
    state.live.max_per_connection = args.per_connection;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(crate::server::serve_on(listener, state, shutdown.clone()));

    // Subscribers: subscription i follows market i % markets.
    let received = Arc::new(Received::default());
    let connections = subscribers.div_ceil(args.per_connection);
    let mut readers = Vec::with_capacity(connections);
    let mut ready = Vec::with_capacity(connections);
    for c in 0..connections {
        let first = c * args.per_connection;
        let count = args.per_connection.min(subscribers - first);
        let tickers: Vec<String> = (first..first + count)
            .map(|i| markets[i % markets.len()].clone())
            .collect();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        ready.push(ready_rx);
        readers.push(tokio::spawn(subscriber(
            format!("ws://{address}/graphql"),
            tickers,
            received.clone(),
            ready_tx,
        )));
    }
    for r in ready {
        r.await
            .context("a subscriber failed to start")?
            .context("subscriber")?;
    }

    // Each delta reaches the subscriptions of its market.
    let mut per_market = vec![0u64; markets.len()];
    for i in 0..subscribers {
        per_market[i % markets.len()] += 1;
    }
    let index: std::collections::HashMap<&str, usize> = markets
        .iter()
        .enumerate()
        .map(|(i, m)| (m.as_str(), i))
        .collect();
    let mut expected = 0u64;
    let started = Instant::now();
    let per_tick = (args.rate / 1000).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for chunk in frames[setup..].chunks(per_tick) {
        tick.tick().await;
        for frame in chunk {
            processor.on_text(frame, now_us());
            if let Some(market) = market_of(frame).and_then(|m| index.get(m)) {
                expected += per_market[*market];
            }
        }
        processor.take_rows();
    }
    let fed = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.deltas.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let delivered = received.deltas.load(Ordering::Relaxed);
    let mut latencies: Vec<f64> = received
        .latencies_us
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .map(|us| f64::from(*us) / 1000.0)
        .collect();
    latencies.sort_by(f64::total_cmp);
    println!(
        "{:>11}  {:>14.0}  {:>10}  {:>10.2}  {:>10.2}{}",
        subscribers,
        delivered as f64 / elapsed.as_secs_f64(),
        delivered,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        if delivered < expected {
            format!("  (only {delivered} of {expected} delivered in time; fed in {fed:?})")
        } else {
            String::new()
        }
    );
    shutdown.cancel();
    for reader in readers {
        reader.abort();
    }
    let _ = server.await;
    Ok(())
}

/// The `market_ticker` of a delta frame, without a full parse.
fn market_of(frame: &str) -> Option<&str> {
    let start = frame.find("\"market_ticker\":\"")? + 17;
    let end = frame[start..].find('"')?;
    Some(&frame[start..start + end])
}

/// One connection with `tickers.len()` subscriptions; reports once every snapshot arrived.
async fn subscriber(
    url: String,
    tickers: Vec<String>,
    received: Arc<Received>,
    ready: tokio::sync::oneshot::Sender<anyhow::Result<()>>,
) {
    let mut request = match url.into_client_request() {
        Ok(request) => request,
        Err(error) => {
            let _ = ready.send(Err(error.into()));
            return;
        }
    };
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let mut socket = match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => socket,
        Err(error) => {
            let _ = ready.send(Err(error.into()));
            return;
        }
    };
    let init = serde_json::json!({"type": "connection_init", "payload": {"apiKey": "bench"}});
    let mut out = vec![Message::text(init.to_string())];
    for (i, ticker) in tickers.iter().enumerate() {
        let subscribe = serde_json::json!({
            "type": "subscribe",
            "id": i.to_string(),
            "payload": {"query": SUBSCRIPTION, "variables": {"t": ticker}}
        });
        out.push(Message::text(subscribe.to_string()));
    }
    for message in out {
        if let Err(error) = socket.send(message).await {
            let _ = ready.send(Err(error.into()));
            return;
        }
    }
    let mut ready = Some(ready);
    let mut snapshots = 0;
    while let Some(Ok(message)) = socket.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        let Ok(value) = serde_json::from_str::<serde_json::Value>(text.as_str()) else {
            continue;
        };
        let update = &value["payload"]["data"]["orderbook"];
        match update["kind"].as_str() {
            Some("SNAPSHOT") => {
                snapshots += 1;
                if snapshots == tickers.len()
                    && let Some(ready) = ready.take()
                {
                    let _ = ready.send(Ok(()));
                }
            }
            Some("DELTA") => {
                if let Some(at) = update["receivedAt"]
                    .as_str()
                    .and_then(|t| parse_rfc3339_us(t).ok())
                {
                    let latency = u32::try_from((now_us() - at).max(0)).unwrap_or(u32::MAX);
                    received
                        .latencies_us
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(latency);
                }
                // Counted after its latency is recorded: the run ends on the count.
                received.deltas.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                if value["payload"].get("errors").is_some()
                    && let Some(ready) = ready.take()
                {
                    let _ = ready.send(Err(anyhow::anyhow!("subscription refused: {value}")));
                    return;
                }
            }
        }
    }
}
