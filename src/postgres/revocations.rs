//! API key revocations pushed by Postgres: a trigger on `api_keys` (migration V6) notifies
//! the channel [`CHANNEL`] when a key is revoked, and every server replica listens, so its
//! open WebSocket connections using that key close at once rather than at their next
//! periodic re-check (which stays, as the fallback when the listener is down).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{CONNECT_TIMEOUT, PostgresError};
use crate::config::PostgresConfig;

/// The notification channel the V6 trigger announces revoked key ids on.
pub const CHANNEL: &str = "api_key_revoked";
/// How often the listening connection is checked to still answer (a server that vanished
/// without closing the socket would otherwise never be noticed).
const LIVENESS_CHECK: Duration = Duration::from_secs(15);
/// The longest wait before listening again after the connection was lost.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What a listener announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revocation {
    /// This key was revoked.
    Key(Uuid),
    /// Announcements may have been missed (the listening connection was lost and is back):
    /// every open connection checks its key again.
    Unknown,
}

/// Revocations as they are announced; cheap to clone. Without [`Revocations::spawn_listener`]
/// nothing is ever announced (connections rely on their periodic re-check alone).
#[derive(Clone)]
pub struct Revocations {
    config: tokio_postgres::Config,
    sender: broadcast::Sender<Revocation>,
    /// Whether a listener is listening now.
    listening: Arc<watch::Sender<bool>>,
}

impl Revocations {
    /// Prepares the channel; nothing is dialled until [`Revocations::spawn_listener`].
    ///
    /// # Errors
    /// [`PostgresError::Url`] when the URL does not parse.
    pub fn new(config: &PostgresConfig) -> Result<Self, PostgresError> {
        let mut config: tokio_postgres::Config =
            config.url.expose().parse().map_err(PostgresError::Url)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        // A connection that misses announcements only makes its holders re-check sooner:
        // a small buffer is enough (a lagging receiver is told, and re-checks).
        let (sender, _) = broadcast::channel(256);
        Ok(Self {
            config,
            sender,
            listening: Arc::new(watch::Sender::new(false)),
        })
    }

    /// Returns once a listener is listening (revocations from then on are announced).
    pub async fn listening(&self) {
        let mut listening = self.listening.subscribe();
        let _ = listening.wait_for(|listening| *listening).await;
    }

    /// Announcements from now on.
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<Revocation> {
        self.sender.subscribe()
    }

    /// Listens on [`CHANNEL`] until `shutdown`, reconnecting with backoff; once listening
    /// after any failed or lost connection it announces [`Revocation::Unknown`].
    pub fn spawn_listener(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move { this.listen(shutdown).await })
    }

    async fn listen(self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_secs(1);
        // Revocations made while nobody listened were not heard: once listening again (or
        // at last, when the first attempt failed), every connection re-checks its key.
        let mut may_have_missed = false;
        while !shutdown.is_cancelled() {
            let ended = self
                .listen_once(&shutdown, &mut may_have_missed, &mut backoff)
                .await;
            if shutdown.is_cancelled() {
                return;
            }
            may_have_missed = true;
            tracing::warn!(error = %ended, "not listening for API key revocations; retrying");
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One listening connection's life; returns why it ended.
    async fn listen_once(
        &self,
        shutdown: &CancellationToken,
        may_have_missed: &mut bool,
        backoff: &mut Duration,
    ) -> String {
        let (client, mut connection) = match self.config.connect(NoTls).await {
            Ok(pair) => pair,
            Err(error) => return error.to_string(),
        };
        // The connection is driven by its own task; notifications come out of it.
        let (notes_tx, mut notes) = mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(|cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                let note = match message {
                    Ok(AsyncMessage::Notification(note)) => Ok(note.payload().to_owned()),
                    Ok(_) => continue,
                    Err(error) => Err(error.to_string()),
                };
                let failed = note.is_err();
                if notes_tx.send(note).is_err() || failed {
                    return;
                }
            }
        });
        let ended = async {
            if let Err(error) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                return error.to_string();
            }
            tracing::info!(channel = CHANNEL, "listening for API key revocations");
            if std::mem::take(may_have_missed) {
                let _ = self.sender.send(Revocation::Unknown);
            }
            self.listening.send_replace(true);
            metrics::gauge!("api_key_revocations_listening").set(1.0);
            let mut liveness = tokio::time::interval(LIVENESS_CHECK);
            liveness.tick().await;
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return "shutdown".to_owned(),
                    note = notes.recv() => match note {
                        Some(Ok(payload)) => match payload.parse::<Uuid>() {
                            Ok(key) => {
                                let _ = self.sender.send(Revocation::Key(key));
                            }
                            Err(_) => tracing::warn!(%payload, "unreadable revocation notice"),
                        },
                        Some(Err(error)) => return error,
                        None => return "connection closed".to_owned(),
                    },
                    _ = liveness.tick() => {
                        let check = tokio::time::timeout(CONNECT_TIMEOUT, client.simple_query("SELECT 1"));
                        match check.await {
                            // Up for a while: the next loss starts the backoff afresh.
                            Ok(Ok(_)) => *backoff = Duration::from_secs(1),
                            Ok(Err(error)) => return error.to_string(),
                            Err(_) => return "no answer to the liveness check".to_owned(),
                        }
                    }
                }
            }
        }
        .await;
        self.listening.send_replace(false);
        metrics::gauge!("api_key_revocations_listening").set(0.0);
        driver.abort();
        ended
    }
}
