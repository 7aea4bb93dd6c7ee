//! The HTTP front: axum router, shared state, health, readiness and metrics endpoints,
//! `/graphql` (POST, GET, GraphiQL) behind the [`Gate`] (API keys, rate limits, credits),
//! and the agent documentation `/llms.txt`, `/llms-full.txt`.

pub mod gate;
mod graphql_http;
mod health;
pub mod ws;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use gate::Gate;

use crate::accounts::JwtKeys;
use crate::accounts::rate::RateLimits;
use crate::config::Config;
use crate::postgres::accounts::AccountStore;
use crate::{clickhouse, graphql, telemetry};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub clickhouse: ::clickhouse::Client,
    pub postgres: deadpool_postgres::Pool,
    pub metrics: PrometheusHandle,
    pub ready_timeout: Duration,
    /// Present when the collector runs in this process; `/readyz` then reports it too.
    pub collector: Option<CollectorProbe>,
    /// API keys, rate limits, credits and sessions. Always set by [`AppState::new`]; `None`
    /// only where a benchmark measures the API without them (`kalshibook bench auth`).
    pub gate: Option<Gate>,
    /// The collector's live bus when it runs in this process; without it subscriptions
    /// answer `UNAVAILABLE`.
    pub bus: Option<crate::live::Bus>,
    /// Limits and timings of live subscriptions.
    pub live: graphql::subscription::LiveConfig,
    /// Charges live subscriptions (the gate unless replaced); `None`: free.
    pub live_meter: Option<std::sync::Arc<dyn graphql::subscription::LiveMeter>>,
    /// Recognises API keys on WebSocket connections (the accounts store unless replaced).
    pub authenticator: std::sync::Arc<dyn ws::Authenticator>,
    /// Key revocations announced by Postgres: WebSocket connections using a revoked key
    /// close at once (listened to while the server runs, when it has a gate).
    pub revocations: crate::postgres::revocations::Revocations,
    /// Cancelled when the server stops: ends every subscription.
    pub shutdown: CancellationToken,
}

/// What the server can see of an in-process collector.
#[derive(Clone)]
pub struct CollectorProbe {
    pub health: std::sync::Arc<crate::collector::feed::FeedHealth>,
    pub writer: crate::collector::writer::Writer,
}

impl AppState {
    /// Builds clients for the configured databases. Connects lazily: a server whose
    /// databases are down still starts, and `/readyz` says which one is missing.
    ///
    /// # Errors
    /// When the Postgres URL cannot be turned into a pool.
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        Self::with_rate_limits(config, RateLimits::standard())
    }

    /// As [`AppState::new`], with `rates` instead of the product plan's limits on the
    /// monotonic clock (tests move a manual clock; benchmarks lift the ceiling).
    ///
    /// # Errors
    /// When the Postgres URL cannot be turned into a pool.
    pub fn with_rate_limits(config: &Config, rates: RateLimits) -> anyhow::Result<Self> {
        telemetry::install_crypto_provider();
        let jwt = JwtKeys::new(config.auth.jwt_secret_or_dev_default().expose().as_bytes())
            .context("KALSHIBOOK_JWT_SECRET")?;
        let store = AccountStore::connect(&config.postgres)?;
        let postgres = store.pool().clone();
        let gate = Gate::new(store, jwt, rates);
        Ok(Self {
            clickhouse: clickhouse::client(&config.clickhouse),
            postgres,
            metrics: telemetry::metrics_handle(),
            ready_timeout: config.ready_timeout,
            collector: None,
            live_meter: Some(std::sync::Arc::new(gate.clone())
                as std::sync::Arc<dyn graphql::subscription::LiveMeter>),
            authenticator: std::sync::Arc::new(gate.store().clone()),
            revocations: crate::postgres::revocations::Revocations::new(&config.postgres)?,
            gate: Some(gate),
            bus: None,
            live: graphql::subscription::LiveConfig::default(),
            shutdown: CancellationToken::new(),
        })
    }
}

/// The whole HTTP surface, ready to serve; tests drive this same router.
pub fn app(state: AppState) -> Router {
    let live = std::sync::Arc::new(graphql::LiveService::new(
        state.bus.clone(),
        state.live.clone(),
        state.live_meter.clone(),
        state.shutdown.clone(),
    ));
    let schema = graphql::build(
        Some(graphql::Store::new(&state.clickhouse)),
        state.gate.as_ref().map(Gate::accounts),
        Some(live.clone()),
    );
    let ws = ws::WsState {
        schema: schema.clone(),
        auth: state.authenticator.clone(),
        revocations: state.revocations.clone(),
        live,
    };
    let api = Router::new()
        .route("/graphql", get(graphql_http::get).post(graphql_http::post))
        .layer(DefaultBodyLimit::max(graphql::limits::MAX_BODY_BYTES))
        .with_state(graphql_http::GraphqlState {
            schema,
            gate: state.gate.clone(),
            ws,
        });
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics))
        .route("/llms.txt", get(llms_txt))
        .route("/llms-full.txt", get(llms_full_txt))
        .with_state(state)
        .merge(api)
        .layer(middleware::from_fn(record_request))
}

/// Binds `config.listen_addr` and serves until `shutdown` is cancelled, then lets in-flight
/// requests finish.
///
/// # Errors
/// When the address cannot be bound or the state cannot be built.
pub async fn serve(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut state = AppState::new(&config)?;
    let collector = if config.collect {
        let bus = crate::live::Bus::default();
        state.bus = Some(bus.clone());
        let collector = crate::collector::start(&config, bus, shutdown.clone()).await?;
        state.collector = Some(CollectorProbe {
            health: collector.health.clone(),
            writer: collector.writer.clone(),
        });
        Some(collector)
    } else {
        None
    };
    let listener = TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen on KALSHIBOOK_LISTEN_ADDR={}",
                config.listen_addr
            )
        })?;
    let served = serve_on(listener, state, shutdown.clone()).await;
    shutdown.cancel();
    if let Some(collector) = collector {
        collector.join().await;
    }
    served
}

/// How often usage counters are written to Postgres.
pub const USAGE_FLUSH_INTERVAL: Duration = Duration::from_secs(10);
/// How long the last flush at shutdown may keep retrying a Postgres that does not answer.
pub const USAGE_FINAL_FLUSH_DEADLINE: Duration = Duration::from_secs(15);

/// Serves on an already-bound listener (tests bind port 0). Runs the usage flusher beside
/// the server; at shutdown, in-flight requests finish first, then the last usage is flushed,
/// so nothing counted is lost.
///
/// # Errors
/// When accepting connections fails.
pub async fn serve_on(
    listener: TcpListener,
    mut state: AppState,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Subscriptions end with the server (each with a final SHUTTING_DOWN message).
    state.shutdown = shutdown.clone();
    let address: SocketAddr = listener.local_addr()?;
    tracing::info!(%address, "serving: /graphql /llms.txt /healthz /readyz /metrics");
    // Its own token: the flusher must outlive the server's last request, not stop with it.
    let flusher_stop = CancellationToken::new();
    let flusher = state.gate.as_ref().map(|gate| {
        gate.usage().spawn_flusher(
            USAGE_FLUSH_INTERVAL,
            USAGE_FINAL_FLUSH_DEADLINE,
            flusher_stop.clone(),
        )
    });
    let housekeeping = state.gate.clone().map(|gate| {
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => gate.rates().retain_recent(),
                }
            }
        })
    });
    // Announced revocations close WebSocket connections at once (the periodic re-check
    // stays as the fallback); only a server with a gate has keys to revoke.
    let revocation_listener = state
        .gate
        .is_some()
        .then(|| state.revocations.spawn_listener(shutdown.clone()));
    let served = axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await
    .context("HTTP server failed");
    if let Some(flusher) = flusher {
        flusher.shutdown().await;
    }
    if let Some(task) = housekeeping {
        task.abort();
    }
    if let Some(task) = revocation_listener {
        task.abort();
    }
    served?;
    tracing::info!("server stopped");
    Ok(())
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// `/llms.txt`: what the API is and how to call it, for agents (generated from the schema).
async fn llms_txt() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        graphql::llms::llms_txt(),
    )
}

/// `/llms-full.txt`: every query with an example, the scalars, errors, limits and the SDL.
async fn llms_full_txt() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        graphql::llms::llms_full_txt(),
    )
}

/// Counts requests and their latency per route and status.
async fn record_request(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
