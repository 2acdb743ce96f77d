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
                        bus::outage::warn("change listener: LISTEN", &e);
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
                                        bus::outage::warn("change listener lost its connection", &e);
                                        break;
                                    }
                                },
                                _ = shutdown.changed() => return,
                            }
                        }
                    }
                }
                Err(e) => bus::outage::warn("change listener cannot connect", &e),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
