//! `serve` on port 0 against the real engines: health, readiness, metrics, GraphQL, shutdown.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{PrivateClickHouse, TestEnv};
use kalshibook::config::Config;
use kalshibook::server::{AppState, serve_on};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

struct Running {
    address: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

async fn start(config: &Config) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let state = AppState::new(config).expect("state");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve_on(listener, state, shutdown.clone()));
    Running {
        address,
        shutdown,
        task,
    }
}

async fn get(address: SocketAddr, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{address}{path}"))
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

async fn readiness(address: SocketAddr) -> (u16, Value) {
    let (status, body) = get(address, "/readyz").await;
    (
        status,
        serde_json::from_str(&body).expect("readiness is JSON"),
    )
}

#[tokio::test]
async fn healthy_ready_metrics_and_graphql_on_real_engines() {
    let env = TestEnv::migrated().await;
    let server = start(&env.config).await;

    assert_eq!(get(server.address, "/healthz").await.0, 200);
    let (status, body) = readiness(server.address).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["unavailable"], serde_json::json!([]));

    let response: Value = reqwest::Client::new()
        .post(format!("http://{}/graphql", server.address))
        .json(&serde_json::json!({ "query": "{ apiVersion }" }))
        .send()
        .await
        .expect("graphql")
        .json()
        .await
        .expect("graphql JSON");
    assert_eq!(response["data"]["apiVersion"], env!("CARGO_PKG_VERSION"));

    let (status, metrics) = get(server.address, "/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("http_requests_total"), "{metrics}");
    assert!(metrics.contains("route=\"/readyz\""), "{metrics}");

    server.shutdown.cancel();
    server.task.await.expect("join").expect("clean shutdown");
    env.cleanup().await;
}

#[tokio::test]
async fn readiness_names_postgres_when_it_is_unreachable() {
    let env = TestEnv::migrated().await;
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let mut config = env.config.clone();
    config.postgres.url =
        kalshibook::config::Secret::new(format!("postgres://postgres@{closed}/nothing"));
    let server = start(&config).await;
    let (status, body) = readiness(server.address).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["unavailable"], serde_json::json!(["postgres"]));
    assert_eq!(body["clickhouse"]["ok"], true);
    server.shutdown.cancel();
    env.cleanup().await;
}

/// Starts a private ClickHouse launcher, proves readiness with it, stops it, and expects
/// `/readyz` to turn 503 naming ClickHouse — then start it again and recover.
#[tokio::test]
async fn readiness_follows_the_clickhouse_launcher() {
    let env = TestEnv::new().await;
    let mut launcher = PrivateClickHouse::start(&env.name).await;
    let mut config = env.config.clone();
    config.clickhouse.url = launcher.url();
    kalshibook::migrate::run(&config)
        .await
        .expect("migrate the private launcher");
    let server = start(&config).await;
    let ready = wait_for_status(server.address, 200).await;
    assert_eq!(ready["unavailable"], serde_json::json!([]), "{ready}");

    launcher.stop().await;
    let (status, body) = readiness(server.address).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["unavailable"], serde_json::json!(["clickhouse"]));
    assert_eq!(body["clickhouse"]["ok"], false);
    assert!(
        body["clickhouse"]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
    );

    launcher.resume().await;
    wait_for_status(server.address, 200).await;
    server.shutdown.cancel();
    env.cleanup().await;
}

/// Polls readiness until it answers `status` (the launcher takes a moment to start).
async fn wait_for_status(address: SocketAddr, status: u16) -> Value {
    let mut last = (0, Value::Null);
    for _ in 0..300 {
        last = readiness(address).await;
        if last.0 == status {
            return last.1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("readiness never reached {status}; last: {:?}", last);
}
