//! Heartbeats: the hot path. A heartbeat is no event — it moves its lease's
//! deadline in the `leases` table. Concurrent heartbeats are coalesced into
//! one `UPDATE` per batch, so thousands per second cost tens of statements
//! (and commits), not thousands; each caller still gets the answer of the
//! row it renewed.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, Semaphore};
use uuid::Uuid;

use crate::domain::Clock;
use crate::store;

/// How a heartbeat went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Beat {
    Renewed(DateTime<Utc>),
    /// No such lease for this client.
    NotFound,
    /// Past its deadline plus grace, or reclaimed.
    Expired,
    /// Released or revoked.
    Ended(String),
}

struct Request {
    lease_id: Uuid,
    client_id: Uuid,
    reply: oneshot::Sender<Result<Beat, String>>,
}

#[derive(Clone)]
pub struct Heartbeats {
    tx: mpsc::Sender<Request>,
}

/// Batches in flight at once: enough to overlap a commit with the next
/// statement, few enough that batches grow under load.
const PARALLEL: usize = 2;

impl Heartbeats {
    /// Starts the batcher; it runs until every `Heartbeats` handle is dropped.
    pub fn start(pool: PgPool, clock: Arc<dyn Clock>, batch_max: usize) -> Self {
        let (tx, mut rx) = mpsc::channel::<Request>(batch_max.max(1) * 8);
        let permits = Arc::new(Semaphore::new(PARALLEL));
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < batch_max {
                    match rx.try_recv() {
                        Ok(r) => batch.push(r),
                        Err(_) => break,
                    }
                }
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let (pool, now) = (pool.clone(), clock.now());
                tokio::spawn(async move {
                    answer(&pool, now, batch).await;
                    drop(permit);
                });
            }
        });
        Self { tx }
    }

    pub async fn beat(&self, lease_id: Uuid, client_id: Uuid) -> Result<Beat, String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request {
                lease_id,
                client_id,
                reply,
            })
            .await
            .map_err(|_| "heartbeat batcher stopped".to_string())?;
        rx.await
            .map_err(|_| "heartbeat batch dropped".to_string())?
    }
}

async fn answer(pool: &PgPool, now: DateTime<Utc>, batch: Vec<Request>) {
    match renew(pool, now, &batch).await {
        Ok(results) => {
            for r in batch {
                let beat = results
                    .get(&(r.lease_id, r.client_id))
                    .cloned()
                    .unwrap_or(Beat::NotFound);
                let _ = r.reply.send(Ok(beat));
            }
        }
        Err(e) => {
            bus::outage::error("heartbeat batch", &e);
            for r in batch {
                let _ = r.reply.send(Err(e.to_string()));
            }
        }
    }
}

async fn renew(
    pool: &PgPool,
    now: DateTime<Utc>,
    batch: &[Request],
) -> Result<HashMap<(Uuid, Uuid), Beat>, sqlx::Error> {
    // One row per lease, in lease-id order: concurrent batches then lock
    // their rows in the same order and cannot deadlock.
    let mut pairs: Vec<(Uuid, Uuid)> = batch.iter().map(|r| (r.lease_id, r.client_id)).collect();
    pairs.sort();
    pairs.dedup();
    let ids: Vec<Uuid> = pairs.iter().map(|p| p.0).collect();
    let clients: Vec<Uuid> = pairs.iter().map(|p| p.1).collect();
    let rows = store::renew_leases(pool, &ids, &clients, now).await?;
    let mut out = HashMap::with_capacity(batch.len());
    for r in rows {
        out.insert((r.lease_id, r.client_id), Beat::Renewed(r.deadline));
    }
    let missed: Vec<Uuid> = pairs
        .iter()
        .filter(|p| !out.contains_key(p))
        .map(|p| p.0)
        .collect();
    if missed.is_empty() {
        return Ok(out);
    }
    let rows = store::lease_owners(pool, &missed).await?;
    let mut found = HashMap::new();
    for r in rows {
        found.insert(r.lease_id, (r.client_id, r.status));
    }
    let unanswered: Vec<&Request> = batch
        .iter()
        .filter(|r| !out.contains_key(&(r.lease_id, r.client_id)))
        .collect();
    for req in unanswered {
        let beat = match found.get(&req.lease_id) {
            Some((client, _)) if *client != req.client_id => Beat::NotFound,
            None => Beat::NotFound,
            Some((_, s)) if s == "released" || s == "revoked" => Beat::Ended(s.clone()),
            Some(_) => Beat::Expired,
        };
        out.insert((req.lease_id, req.client_id), beat);
    }
    Ok(out)
}
