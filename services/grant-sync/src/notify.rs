//! Wakes long-polling syncs: every change-feed row is announced with
//! `pg_notify` at commit (so every instance hears every change), and this
//! listener fans the license ids out to the waiting requests in-process.

use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use crate::store::CHANNEL;

/// A license id whose grants, revocations or leases changed; `Uuid::nil()`
/// means "anything may have changed" (the listener reconnected).
#[derive(Clone)]
pub struct Notifier {
    tx: broadcast::Sender<Uuid>,
}

impl Default for Notifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Notifier {
    pub fn new() -> Self {
        Self {
            tx: broadcast::channel(16_384).0,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Uuid> {
        self.tx.subscribe()
    }

    /// Listens until shutdown, reconnecting after failures.
    pub async fn listen(self, pool: PgPool, mut shutdown: watch::Receiver<bool>) {
        loop {
            match PgListener::connect_with(&pool).await {
                Ok(mut listener) => {
                    if let Err(e) = listener.listen(CHANNEL).await {
                        tracing::warn!(error = %e, "LISTEN failed");
                    } else {
                        // Whatever happened while disconnected: wake everyone.
                        let _ = self.tx.send(Uuid::nil());
                        loop {
                            tokio::select! {
                                n = listener.recv() => match n {
                                    Ok(n) => {
                                        let id = Uuid::parse_str(n.payload()).unwrap_or_default();
                                        let _ = self.tx.send(id);
                                    }
                                    Err(e) => {
                                        tracing::warn!(error = %e, "change listener lost its connection");
                                        break;
                                    }
                                },
                                _ = shutdown.changed() => return,
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "change listener cannot connect"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
