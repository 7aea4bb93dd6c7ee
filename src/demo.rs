//! `kalshibook sim` and `kalshibook demo`: the simulated exchange alone, or the simulator,
//! the collector and the API together on the local engines, with data visibly flowing.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, PrivateKey, Secret};
use crate::live::Bus;
use crate::server::{AppState, CollectorProbe};
use crate::sim::{Sim, SimConfig};

/// The demo's Kalshi credentials: a throwaway key the simulator checks every connection
/// against, so the demo exercises real request signing. Never a real Kalshi key.
const DEMO_KEY_PEM: &str = include_str!("sim/testdata/sim_test_key.pem");
const DEMO_KEY_ID: &str = "00000000-demo-4000-8000-000000000000";

/// Options of the simulated exchange.
#[derive(Clone, Debug, Args)]
pub struct SimArgs {
    /// Address to serve Kalshi's REST (/trade-api/v2) and WebSocket (/trade-api/ws/v2) on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: String,
    /// Markets open at start.
    #[arg(long, default_value_t = 20)]
    pub markets: usize,
    /// Seed of everything random.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Market events per second across all markets.
    #[arg(long, default_value_t = 200)]
    pub events_per_sec: u32,
    /// Percent of markets on a sub-cent price grid.
    #[arg(long, default_value_t = 30)]
    pub sub_cent_pct: u8,
    /// Per mille of sequenced frames dropped (the client sees a sequence gap).
    #[arg(long, default_value_t = 0)]
    pub drop_per_mille: u16,
    /// Per mille of deltas preceded by a malformed frame.
    #[arg(long, default_value_t = 0)]
    pub malformed_per_mille: u16,
    /// Close every connection this often, ms (0: never).
    #[arg(long, default_value_t = 0)]
    pub disconnect_every_ms: u64,
    /// Every this many events, markets open, pause, close and settle (0: never).
    #[arg(long, default_value_t = 0)]
    pub churn_every_events: u64,
    /// PEM public (or private) key that every request must be signed with; unset: unsigned.
    #[arg(long)]
    pub public_key: Option<PathBuf>,
    /// Write the exchange's ground truth here (JSONL).
    #[arg(long)]
    pub truth: Option<PathBuf>,
}

impl SimArgs {
    fn sim_config(&self) -> anyhow::Result<SimConfig> {
        let public_key = match &self.public_key {
            Some(path) => {
                let pem = std::fs::read_to_string(path)
                    .with_context(|| format!("--public-key {}", path.display()))?;
                Some(crate::sim::parse_public_key_pem(&pem).context("--public-key")?)
            }
            None => None,
        };
        Ok(SimConfig {
            markets: self.markets,
            seed: self.seed,
            events_per_sec: self.events_per_sec,
            sub_cent_pct: self.sub_cent_pct,
            drop_per_mille: self.drop_per_mille,
            malformed_per_mille: self.malformed_per_mille,
            disconnect_every_ms: self.disconnect_every_ms,
            churn_every_events: self.churn_every_events,
            // A long run must not keep every delta it sent in memory.
            record_sent_deltas: false,
            public_key,
            truth_path: self.truth.clone(),
            ..SimConfig::default()
        })
    }
}

/// Runs the simulated exchange until `shutdown`.
///
/// # Errors
/// Invalid options or an address that cannot be bound.
pub async fn sim(args: &SimArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let config = args.sim_config()?;
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on --listen {}", args.listen))?;
    let sim = Sim::start(config, listener, shutdown)?;
    println!(
        "Kalshi simulator: REST {}  WebSocket {}  ({} markets; Ctrl-C stops)",
        sim.rest_url(),
        sim.ws_url(),
        sim.markets().len()
    );
    sim.stopped().await;
    Ok(())
}

/// Simulator + collector + API on the configured engines.
///
/// # Errors
/// Unreachable databases, failed migrations, or an address that cannot be bound.
pub async fn demo(
    config: Config,
    args: &SimArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    crate::telemetry::install_crypto_provider();
    let signer = crate::kalshi::Signer::from_pem(DEMO_KEY_ID, DEMO_KEY_PEM)?;
    let mut sim_config = args.sim_config()?;
    sim_config.public_key = Some(signer.public_key());
    sim_config.api_key_id = Some(DEMO_KEY_ID.to_owned());
    let sim_listener = TcpListener::bind("127.0.0.1:0").await?;
    let sim = Sim::start(sim_config, sim_listener, shutdown.clone())?;

    let mut config = config;
    config.kalshi.ws_url = sim.ws_url();
    config.kalshi.rest_url = sim.rest_url();
    config.kalshi.api_key_id = Some(DEMO_KEY_ID.to_owned());
    config.kalshi.private_key = Some(PrivateKey::Pem(Secret::new(DEMO_KEY_PEM)));
    crate::migrate::run(&config).await.context("migrations")?;

    let bus = Bus::default();
    let collector = crate::collector::start(&config, bus.clone(), shutdown.clone()).await?;
    let mut state = AppState::new(&config)?;
    state.bus = Some(bus);
    state.collector = Some(CollectorProbe {
        health: collector.health.clone(),
        writer: collector.writer.clone(),
    });
    let listener = TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen on KALSHIBOOK_LISTEN_ADDR={}",
                config.listen_addr
            )
        })?;
    let address = listener.local_addr()?;
    let demo_key = provision_demo_key(&state).await?;
    println!("KalshiBook demo");
    println!("  API        http://{address}/graphql   (GraphiQL in a browser)");
    println!(
        "  API key    {}   (send as the X-API-Key header; account {DEMO_EMAIL})",
        demo_key.expose()
    );
    println!(
        "  try        curl -s http://{address}/graphql -H 'X-API-Key: {}' -H 'content-type: application/json' -d '{{\"query\":\"{{ markets(first: 3) {{ nodes {{ ticker }} }} }}\"}}'",
        demo_key.expose()
    );
    println!("  health     http://{address}/readyz   metrics http://{address}/metrics");
    println!(
        "  exchange   simulated Kalshi at {} ({} markets)",
        sim.rest_url(),
        sim.markets().len()
    );
    println!("  Ctrl-C stops");

    let summary = tokio::spawn(print_summary(
        collector.health.clone(),
        collector.writer.clone(),
        shutdown.clone(),
    ));
    let served = crate::server::serve_on(listener, state, shutdown.clone()).await;
    shutdown.cancel();
    collector.join().await;
    summary.abort();
    sim.stopped().await;
    served
}

/// The demo's account on the local Postgres.
const DEMO_EMAIL: &str = "demo@kalshibook.local";
/// Credits the demo account is topped up to at each start.
const DEMO_CREDITS: u64 = 1_000_000;

/// Gives the demo account (created on first run) a fresh API key, revoking the previous
/// demo keys (a key is shown once, so an old one cannot be printed again), and tops its
/// credits up so the demo never runs dry. Every step is audited as the CLI operator.
async fn provision_demo_key(state: &AppState) -> anyhow::Result<crate::accounts::ApiKey> {
    use crate::accounts::{Actor, Credits};
    use crate::postgres::accounts::AccountsError;
    let gate = state
        .gate
        .as_ref()
        .context("the demo server has no accounts gate")?;
    let store = gate.store();
    let actor = Actor::cli_from_env();
    let user = match store.find_user_by_email(DEMO_EMAIL).await? {
        Some(user) => user,
        None => {
            // The password is random and never shown: the demo signs in by API key only.
            let password = format!("demo-{:032x}", rand::random::<u128>());
            match store.create_account(DEMO_EMAIL, &password, &actor).await {
                Ok(user) => user,
                Err(AccountsError::EmailTaken) => store
                    .find_user_by_email(DEMO_EMAIL)
                    .await?
                    .context("demo account")?,
                Err(error) => return Err(error.into()),
            }
        }
    };
    for key in store.list_keys(user.account_id).await? {
        if key.revoked_at.is_none() && key.name == "demo" {
            store.revoke_key(user.account_id, key.id, &actor).await?;
        }
    }
    let created = store.create_key(user.account_id, "demo", &actor).await?;
    let balance = store.balance(user.account_id).await?;
    let short = Credits::new(DEMO_CREDITS).saturating_sub(balance.remaining());
    if short > Credits::ZERO {
        store.grant_credits(DEMO_EMAIL, short, &actor).await?;
    }
    Ok(created.key)
}

/// Every few seconds: what the collector has stored, so the flow is visible.
async fn print_summary(
    health: std::sync::Arc<crate::collector::feed::FeedHealth>,
    writer: crate::collector::writer::Writer,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.tick().await;
    let mut last = 0;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let status = writer.status();
        println!(
            "  collector: {}, {} rows stored (+{} in 5 s), {} batches queued, {} spooled{}",
            if health.connected.load(Ordering::Relaxed) {
                "connected"
            } else {
                "NOT connected"
            },
            status.inserted_rows,
            status.inserted_rows - last,
            status.queued_batches,
            status.spooled_batches,
            status
                .last_error
                .map(|e| format!(", last insert error: {e}"))
                .unwrap_or_default(),
        );
        last = status.inserted_rows;
    }
}
