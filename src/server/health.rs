//! `/healthz` (the process is up) and `/readyz` (its dependencies answer).

use std::future::Future;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use super::AppState;
use crate::{clickhouse, postgres};

pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

/// One dependency's state in the readiness answer.
#[derive(Serialize)]
pub struct Check {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Serialize)]
pub struct Readiness {
    pub status: &'static str,
    /// The dependencies that do not answer, by name; empty when ready.
    pub unavailable: Vec<&'static str>,
    pub clickhouse: Check,
    pub postgres: Check,
    /// Present when the collector runs in this process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collector: Option<Check>,
}

/// The collector is healthy while connected and hearing from the exchange.
fn collector_check(probe: &super::CollectorProbe) -> Check {
    use std::sync::atomic::Ordering;
    let now = crate::collector::feed::now_micros();
    let last = probe.health.last_frame_us.load(Ordering::Relaxed);
    let error = if !probe.health.connected.load(Ordering::Relaxed) {
        Some("not connected to the exchange".to_owned())
    } else if now - last > 60_000_000 {
        Some(format!(
            "no frame from the exchange for {} s",
            (now - last) / 1_000_000
        ))
    } else {
        None
    };
    let status = probe.writer.status();
    let error = error.or_else(|| {
        status.last_error.map(|e| {
            format!(
                "inserts failing ({} batches spooled, {} bytes queued): {e}",
                status.spooled_batches, status.queued_bytes
            )
        })
    });
    Check {
        ok: error.is_none(),
        error,
    }
}

/// 200 when ClickHouse and Postgres both answer within the ready timeout; otherwise 503
/// with the failing dependencies named.
pub(super) async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let (clickhouse, postgres) = tokio::join!(
        check(state.ready_timeout, clickhouse::ping(&state.clickhouse)),
        check(state.ready_timeout, postgres::ping(&state.postgres)),
    );
    let collector = state.collector.as_ref().map(collector_check);
    let unavailable: Vec<&'static str> = [
        ("clickhouse", Some(&clickhouse)),
        ("postgres", Some(&postgres)),
        ("collector", collector.as_ref()),
    ]
    .into_iter()
    .filter_map(|(name, check)| check.map(|check| (name, check)))
    .filter(|(_, check)| !check.ok)
    .map(|(name, _)| name)
    .collect();
    let status = if unavailable.is_empty() {
        StatusCode::OK
    } else {
        tracing::warn!(?unavailable, "not ready");
        StatusCode::SERVICE_UNAVAILABLE
    };
    let readiness = Readiness {
        status: if unavailable.is_empty() {
            "ready"
        } else {
            "unavailable"
        },
        unavailable,
        clickhouse,
        postgres,
        collector,
    };
    (status, Json(readiness))
}

async fn check<E: std::fmt::Display>(
    timeout: Duration,
    probe: impl Future<Output = Result<(), E>>,
) -> Check {
    match tokio::time::timeout(timeout, probe).await {
        Ok(Ok(())) => Check {
            ok: true,
            error: None,
        },
        Ok(Err(error)) => Check {
            ok: false,
            error: Some(error.to_string()),
        },
        Err(_) => Check {
            ok: false,
            error: Some(format!("no answer within {} ms", timeout.as_millis())),
        },
    }
}
