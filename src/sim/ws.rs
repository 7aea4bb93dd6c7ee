//! One WebSocket connection of the simulated exchange: a reader that hands commands to the
//! exchange, a writer that drains the connection's queue at the client's pace and sends a
//! Ping (`heartbeat`) every interval, dropping clients that stop answering. Both halves go
//! silent while the exchange is stalled.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::outbox::Outbox;
use super::{Shared, lock};

/// Where Kalshi serves its WebSocket.
pub(crate) const PATH: &str = "/trade-api/ws/v2";

/// The upgrade handler (the signature was already checked by the REST gate).
pub(crate) async fn upgrade(
    State(shared): State<Arc<Shared>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let tracker = shared.tracker.clone();
    upgrade.on_upgrade(move |socket| tracker.track_future(serve(shared, socket)))
}

async fn serve(shared: Arc<Shared>, socket: WebSocket) {
    let cancel = shared.shutdown.child_token();
    let (id, outbox) = shared.exchange().connect(cancel.clone());
    if shared.record_sent {
        lock(&shared.sent).entry(id).or_default();
    }
    shared.bump();
    tracing::debug!(connection = id, "sim: connection open");
    let (sink, stream) = socket.split();
    let pong_seen = AtomicBool::new(false);
    tokio::join!(
        async {
            read_loop(&shared, id, &cancel, &pong_seen, stream).await;
            cancel.cancel();
        },
        async {
            write_loop(&shared, id, &outbox, &cancel, &pong_seen, sink).await;
            cancel.cancel();
        }
    );
    shared.exchange().disconnect(id);
    shared.bump();
    tracing::debug!(connection = id, "sim: connection closed");
}

fn stalled(stall: &watch::Receiver<Option<Instant>>) -> bool {
    matches!(*stall.borrow(), Some(until) if until > Instant::now())
}

/// Waits while the exchange is stalled: `None` if the connection was cancelled, else
/// whether there was a stall to wait out.
///
/// # Cancel safety
/// Cancel-safe.
async fn wait_unstalled(
    stall: &mut watch::Receiver<Option<Instant>>,
    cancel: &CancellationToken,
) -> Option<bool> {
    let mut waited = false;
    loop {
        let until = *stall.borrow_and_update();
        match until {
            Some(until) if until > Instant::now() => {
                waited = true;
                tokio::select! {
                    () = cancel.cancelled() => return None,
                    () = tokio::time::sleep_until(until) => {}
                    changed = stall.changed() => {
                        if changed.is_err() {
                            tokio::time::sleep_until(until).await;
                        }
                    }
                }
            }
            _ => return (!cancel.is_cancelled()).then_some(waited),
        }
    }
}

async fn read_loop(
    shared: &Shared,
    id: u64,
    cancel: &CancellationToken,
    pong_seen: &AtomicBool,
    mut stream: SplitStream<WebSocket>,
) {
    let mut stall = shared.stall.subscribe();
    loop {
        if wait_unstalled(&mut stall, cancel).await.is_none() {
            return;
        }
        // Reading also lets tungstenite answer Pings, so a stall stops reading too.
        let message = tokio::select! {
            () = cancel.cancelled() => return,
            _ = stall.changed() => continue,
            message = stream.next() => message,
        };
        match message {
            Some(Ok(Message::Text(text))) => {
                shared.exchange().handle_command(id, text.as_str());
                shared.bump();
            }
            Some(Ok(Message::Binary(_))) => {
                if let Some(conn) = shared.exchange().conn_mut(id) {
                    conn.error(None, 1, "Unable to process message", None);
                }
            }
            Some(Ok(Message::Pong(_))) => pong_seen.store(true, Ordering::Relaxed),
            // tungstenite queues the Pong itself.
            Some(Ok(Message::Ping(_))) => {}
            Some(Ok(Message::Close(_)) | Err(_)) | None => return,
        }
    }
}

async fn write_loop(
    shared: &Shared,
    id: u64,
    outbox: &Outbox,
    cancel: &CancellationToken,
    pong_seen: &AtomicBool,
    mut sink: SplitSink<WebSocket, Message>,
) {
    let mut stall = shared.stall.subscribe();
    let mut ping =
        tokio::time::interval_at(Instant::now() + shared.ping_interval, shared.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unanswered_since: Option<Instant> = None;
    'connection: loop {
        match wait_unstalled(&mut stall, cancel).await {
            None => break,
            // The exchange's own silence is not the client's fault: Pongs were not read.
            Some(true) => unanswered_since = None,
            Some(false) => {}
        }
        let mut sent = 0usize;
        while !stalled(&stall) {
            let Some(frame) = outbox.pop() else { break };
            let send = sink.send(Message::Text(frame.text.into()));
            let result = tokio::select! {
                () = cancel.cancelled() => break 'connection,
                result = send => result,
            };
            if result.is_err() {
                break 'connection;
            }
            if let Some(delta) = frame.delta
                && shared.record_sent
            {
                lock(&shared.sent).entry(id).or_default().push(delta);
            }
            sent += 1;
        }
        if sent > 0 {
            shared.bump();
        }
        if stalled(&stall) {
            continue;
        }
        tokio::select! {
            () = cancel.cancelled() => break,
            () = outbox.pushed() => {}
            _ = stall.changed() => {}
            _ = ping.tick() => {
                if stalled(&stall) {
                    continue;
                }
                if pong_seen.swap(false, Ordering::Relaxed) {
                    unanswered_since = None;
                }
                if let (Some(since), Some(timeout)) = (unanswered_since, shared.pong_timeout)
                    && since.elapsed() > timeout
                {
                    tracing::info!(connection = id, "sim: no Pong in time; dropping the connection");
                    break;
                }
                let ping = sink.send(Message::Ping("heartbeat".into()));
                let result = tokio::select! {
                    () = cancel.cancelled() => break,
                    result = ping => result,
                };
                if result.is_err() {
                    break;
                }
                unanswered_since.get_or_insert_with(Instant::now);
            }
        }
    }
    if shared.shutdown.is_cancelled() {
        let close = Message::Close(Some(CloseFrame {
            code: 1001,
            reason: "exchange shutting down".into(),
        }));
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), sink.send(close)).await;
    }
}
