//! `/graphql` over WebSocket: live subscriptions in `graphql-transport-ws` (and the legacy
//! `graphql-ws`), with the API key from `connection_init` (`{"apiKey": "..."}`) or the
//! `X-API-Key` header of the upgrade request.
//!
//! async-graphql speaks the protocol; this loop owns the socket around it, so that every way
//! a connection ends has a close code a client can act on:
//!
//! | code | reason |
//! |---|---|
//! | 4400 | a frame that is not a protocol message (bad JSON, unknown type, binary) |
//! | 4401 | no API key, an unknown or revoked one, or `subscribe` before `connection_init` |
//! | 4408 | no `connection_init` within 10 s of connecting |
//! | 4429 | a second `connection_init` |
//! | 1001 | the server is shutting down (after each subscription's final `SHUTTING_DOWN`) |
//!
//! Revoking a key closes the connections using it with 4401 at once, on every replica
//! (Postgres announces it: [`crate::postgres::revocations`]); each connection's key is also
//! checked again every 30 s, in case an announcement was lost. A client that accepts no data for 30 s is dropped without a close frame (it
//! would not read one).

use std::sync::{Arc, Mutex};

use async_graphql::Data;
use async_graphql::http::{WebSocket as GraphqlWebSocket, WebSocketProtocols, WsMessage};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};

use tokio::sync::broadcast::error::RecvError;

use crate::accounts::Principal;
use crate::graphql::subscription::ConnectionScope;
use crate::graphql::{KalshiBookSchema, LiveService};
use crate::postgres::revocations::Revocation;

/// Recognises API keys: the accounts store in production (a seam so the HTTP auth layer and
/// this one share one definition of "a live key").
pub trait Authenticator: Send + Sync + 'static {
    /// The principal of `key`; `Ok(None)` for anything that is not a live key; `Err` when it
    /// cannot be told (the database is down), with a message for logs.
    fn authenticate<'a>(&'a self, key: &'a str)
    -> BoxFuture<'a, Result<Option<Principal>, String>>;
}

impl Authenticator for crate::postgres::accounts::AccountStore {
    fn authenticate<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Principal>, String>> {
        Box::pin(async move {
            Self::authenticate(self, key)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// Live subscriptions are charged like every other request: through the gate (atomic charge
/// in Postgres), and counted in the usage table.
impl crate::graphql::subscription::LiveMeter for super::gate::Gate {
    fn charge<'a>(
        &'a self,
        principal: &'a Principal,
        op: crate::accounts::Operation,
    ) -> BoxFuture<'a, Result<(), crate::graphql::ApiError>> {
        Box::pin(async move {
            match Self::charge(self, principal, &[op], uuid::Uuid::new_v4()).await {
                Ok(_) => {
                    self.usage()
                        .record(principal, &[op], time::OffsetDateTime::now_utc());
                    Ok(())
                }
                Err(refused) => Err(match refused.error {
                    crate::graphql::ApiError::CreditsExhausted(message) => {
                        crate::graphql::ApiError::CreditsExhausted(format!(
                            "{message}; the subscription has ended (live data costs 5 credits per subscription and 1 per 1,000 messages)"
                        ))
                    }
                    other => other,
                }),
            }
        })
    }
}

/// What the WebSocket side of `/graphql` needs.
#[derive(Clone)]
pub struct WsState {
    pub schema: KalshiBookSchema,
    pub auth: Arc<dyn Authenticator>,
    pub revocations: crate::postgres::revocations::Revocations,
    pub live: Arc<LiveService>,
}

/// Upgrades to a WebSocket speaking the protocol the client offered.
pub fn upgrade(state: WsState, headers: &HeaderMap, upgrade: WebSocketUpgrade) -> Response {
    use axum::response::IntoResponse;
    let protocol = headers
        .get(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|offered| {
            offered
                .split(',')
                .find_map(|p| p.trim().parse::<WebSocketProtocols>().ok())
        });
    let Some(protocol) = protocol else {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            "offer the WebSocket subprotocol graphql-transport-ws (or the legacy graphql-ws)",
        )
            .into_response();
    };
    let header_key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    upgrade
        .protocols(["graphql-transport-ws", "graphql-ws"])
        .on_upgrade(move |socket| serve_socket(socket, protocol, header_key, state))
}

/// Why the server closes, as a close frame.
fn close(code: u16, reason: impl Into<String>) -> Message {
    let mut reason: String = reason.into();
    // A close frame's reason is at most 123 bytes.
    while reason.len() > 123 {
        reason.pop();
    }
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// The state `connection_init` leaves for the loop.
#[derive(Default)]
struct Session {
    /// The close the init callback decided on (it can only return an error message).
    refusal: Option<(u16, String)>,
    /// The key and scope once accepted.
    accepted: Option<(String, Arc<ConnectionScope>)>,
}

fn lock(session: &Mutex<Session>) -> std::sync::MutexGuard<'_, Session> {
    session
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn serve_socket(
    socket: WebSocket,
    protocol: WebSocketProtocols,
    header_key: Option<String>,
    state: WsState,
) {
    metrics::gauge!("live_connections").increment(1.0);
    let (mut sink, source) = socket.split();
    let session = Arc::new(Mutex::new(Session::default()));
    // Binary frames are not part of either protocol: pass them on as something async-graphql
    // rejects as malformed, so they end the connection like any other bad frame.
    let incoming = source
        .take_while(|m| futures_util::future::ready(!matches!(m, Ok(Message::Close(_)) | Err(_))))
        .filter_map(|m| async move {
            match m {
                Ok(Message::Text(text)) => Some(text.as_bytes().to_vec()),
                Ok(Message::Binary(_)) => Some(b"binary frame".to_vec()),
                _ => None,
            }
        });
    let init = {
        let session = session.clone();
        let auth = state.auth.clone();
        move |payload: serde_json::Value| async move {
            let presented = payload
                .get("apiKey")
                .and_then(|k| k.as_str())
                .map(str::to_owned)
                .or(header_key);
            let refuse = |code: u16, reason: &str| {
                lock(&session).refusal = Some((code, reason.to_owned()));
                Err(async_graphql::Error::new(reason))
            };
            let Some(key) = presented else {
                return refuse(
                    4401,
                    "no API key: send {\"apiKey\": \"...\"} in connection_init or X-API-Key on the upgrade",
                );
            };
            match auth.authenticate(&key).await {
                Ok(Some(principal)) => {
                    let scope = Arc::new(ConnectionScope::new(principal));
                    lock(&session).accepted = Some((key, scope.clone()));
                    let mut data = Data::default();
                    data.insert(scope);
                    Ok(data)
                }
                Ok(None) => refuse(4401, "the API key is unknown or revoked"),
                Err(error) => {
                    tracing::warn!(%error, "cannot check an API key for a WebSocket");
                    refuse(1011, "cannot check the API key right now; retry shortly")
                }
            }
        }
    };
    let mut protocol_stream = Box::pin(
        GraphqlWebSocket::new(state.schema.clone(), incoming, protocol).on_connection_init(init),
    );
    let config = state.live.config.clone();
    let init_deadline = tokio::time::sleep(config.init_timeout);
    tokio::pin!(init_deadline);
    let mut recheck = tokio::time::interval(config.key_recheck);
    recheck.tick().await;
    let mut revocations = state.revocations.subscribe();
    let mut revocations_open = true;
    let mut stopping = false;
    let shutdown = state.live.shutdown.clone();
    let closing = loop {
        let initialised = lock(&session).accepted.is_some();
        // Cancel safety: the protocol stream, sleep, interval tick and cancellation are all
        // safe to drop mid-wait; the protocol stream keeps its state between polls.
        tokio::select! {
            message = protocol_stream.next() => match message {
                Some(WsMessage::Text(text)) => {
                    // A client that takes nothing for this long is gone or stuck: its
                    // subscriptions cannot even be told they lag, so drop the socket.
                    let sent =
                        tokio::time::timeout(config.send_stall, sink.send(Message::Text(text.into())))
                            .await;
                    if !matches!(sent, Ok(Ok(()))) {
                        break None;
                    }
                    if stopping && open_subscriptions(&session) == 0 {
                        break Some(close(1001, "the server is shutting down; reconnect"));
                    }
                }
                Some(WsMessage::Close(code, reason)) => {
                    break Some(translate_close(&session, code, &reason));
                }
                None => {
                    let refusal = lock(&session).refusal.take();
                    break refusal.map(|(code, reason)| close(code, reason));
                }
            },
            () = &mut init_deadline, if !initialised => {
                break Some(close(4408, format!(
                    "connection_init not received within {} s",
                    config.init_timeout.as_secs()
                )));
            }
            _ = recheck.tick(), if initialised => {
                if key_revoked(&session, state.auth.as_ref()).await {
                    break Some(close(4401, "the API key was revoked"));
                }
            }
            revoked = revocations.recv(), if initialised && revocations_open => {
                let ours = lock(&session)
                    .accepted
                    .as_ref()
                    .map(|(_, scope)| scope.principal.key_id);
                let closes = match revoked {
                    Ok(Revocation::Key(key_id)) => Some(key_id) == ours,
                    // Announcements were missed: ask again.
                    Ok(Revocation::Unknown) | Err(RecvError::Lagged(_)) => {
                        key_revoked(&session, state.auth.as_ref()).await
                    }
                    Err(RecvError::Closed) => {
                        revocations_open = false;
                        false
                    }
                };
                if closes {
                    break Some(close(4401, "the API key was revoked"));
                }
            }
            () = shutdown.cancelled(), if !stopping => {
                // Each subscription ends itself with a final SHUTTING_DOWN message; close once
                // they have all been sent (or at once when there are none).
                stopping = true;
                if open_subscriptions(&session) == 0 {
                    break Some(close(1001, "the server is shutting down; reconnect"));
                }
            }
        }
    };
    if let Some(frame) = closing {
        let _ = sink.send(frame).await;
    }
    let _ = sink.close().await;
    metrics::gauge!("live_connections").decrement(1.0);
}

/// Whether the connection's accepted key is no longer live (a database that cannot tell
/// leaves the connection open: the next check asks again).
async fn key_revoked(session: &Mutex<Session>, auth: &dyn Authenticator) -> bool {
    let key = lock(session).accepted.as_ref().map(|(key, _)| key.clone());
    match key {
        Some(key) => matches!(auth.authenticate(&key).await, Ok(None)),
        None => false,
    }
}

fn open_subscriptions(session: &Mutex<Session>) -> usize {
    lock(session)
        .accepted
        .as_ref()
        .map_or(0, |(_, scope)| scope.open())
}

/// async-graphql's own close codes, turned into the graphql-transport-ws ones with reasons a
/// person can act on.
fn translate_close(session: &Mutex<Session>, code: u16, reason: &str) -> Message {
    if let Some((code, reason)) = lock(session).refusal.take() {
        return close(code, reason);
    }
    match code {
        1002 => close(4400, format!("malformed message: {reason}")),
        1011 => close(
            4401,
            "unauthorized: send connection_init (with an API key) and wait for connection_ack before subscribing",
        ),
        _ => close(code, reason),
    }
}
