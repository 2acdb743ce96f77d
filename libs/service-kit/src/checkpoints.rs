//! Signed checkpoints: history anchored outside the database.
//!
//! The checkpointer appends every event of the service's store, in the
//! relay's publication order ((tx_id, global_position) below the xmin
//! watermark: a late commit is waited for, never skipped), as a leaf of an
//! RFC 6962 Merkle tree (`merkle_leaves`, leaf input = the event's chain
//! hash), and periodically — when there are new events and the interval has
//! passed — or on demand signs the tree head: a compact JWS (ES256, `kid` of
//! the service's published key) over the service, the context, the tree
//! size, the root hash and the last leaf's position. Each checkpoint is kept
//! in `checkpoints` and published on `<prefix>.checkpoints`; once published
//! it cannot be recalled, so a later rewrite of the database — even one
//! that recomputes every hash — contradicts it.
//!
//! Rounds of every instance are serialised by a transaction-scoped advisory
//! lock; an instance's in-memory tree state is checked against the stored
//! leaves each round and reloaded when another instance moved them.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use contracts::checkpoint::{CheckpointClaims, CheckpointMessage, CHECKPOINT_TYP};
use eventstore::merkle::{leaf_hash, Frontier};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::{watch, Mutex};

use crate::keys::Signer;

/// Leaves appended per statement.
const BATCH: i64 = 10_000;
/// How often a round looks for new events.
const TICK: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    /// The signing service (`iss`).
    pub service: String,
    /// The context whose store it is (`issuance`, ...).
    pub context: String,
    /// `<prefix>.checkpoints`.
    pub topic: String,
    /// Least time between two periodic checkpoints.
    pub interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("signing: {0}")]
    Signing(String),
    #[error("kafka: {0}")]
    Kafka(String),
    #[error("stored tree is inconsistent: {0}")]
    Corrupt(String),
}

/// A signed checkpoint, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Signed {
    pub tree_size: u64,
    pub root_hash: String,
    pub last_position: Option<i64>,
    pub signed_at: DateTime<Utc>,
    pub checkpoint: String,
}

/// What a round knows of the tree.
#[derive(Debug, Clone, Default)]
struct State {
    frontier: Frontier,
    /// (tx_id, global_position) of the last leaf.
    last: Option<(String, i64)>,
    /// Size and time of the latest checkpoint.
    signed: Option<(u64, DateTime<Utc>)>,
}

pub struct Checkpointer {
    pool: PgPool,
    signer: Arc<Signer>,
    producer: bus::Producer,
    config: CheckpointConfig,
    state: Mutex<Option<State>>,
}

fn lock_key(context: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(format!("licensing-checkpointer:{context}").as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    i64::from_be_bytes(b)
}

impl Checkpointer {
    pub fn new(
        pool: PgPool,
        signer: Arc<Signer>,
        producer: bus::Producer,
        config: CheckpointConfig,
    ) -> Self {
        Self {
            pool,
            signer,
            producer,
            config,
            state: Mutex::new(None),
        }
    }

    /// Rounds until `shutdown` turns true; a failed round is logged and
    /// retried on the next tick.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut failing = false;
        while !*shutdown.borrow() {
            match self.round(false).await {
                Ok(_) if failing => {
                    failing = false;
                    tracing::info!(context = %self.config.context, "checkpoints resumed");
                }
                Ok(_) => {}
                Err(e) => {
                    if !failing {
                        tracing::warn!(context = %self.config.context, error = %e, "checkpoint round failed");
                    }
                    failing = true;
                    *self.state.lock().await = None;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Appends the new events as leaves; signs a checkpoint when one is due
    /// (or with `force`, whenever the tree grew since the last one, or none
    /// exists yet); publishes every checkpoint not yet published. The
    /// latest checkpoint.
    pub async fn round(&self, force: bool) -> Result<Option<Signed>, CheckpointError> {
        let mut guard = self.state.lock().await;
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(lock_key(&self.config.context))
            .execute(&mut *tx)
            .await?;
        let stored_size: i64 =
            sqlx::query_scalar("SELECT coalesce(max(leaf_index) + 1, 0) FROM merkle_leaves")
                .fetch_one(&mut *tx)
                .await?;
        let mut state = match guard.take() {
            Some(s) if s.frontier.size() == stored_size as u64 => s,
            _ => load(&mut tx).await?,
        };
        append(&mut tx, &mut state).await?;
        let now = Utc::now();
        let grew = state.signed.is_none_or(|(n, _)| state.frontier.size() > n);
        let due = match state.signed {
            None => state.frontier.size() > 0 || force,
            Some((_, at)) => {
                grew && (force || (now - at).to_std().unwrap_or_default() >= self.config.interval)
            }
        };
        if due {
            self.sign(&mut tx, &state, now).await?;
            state.signed = Some((state.frontier.size(), now));
        }
        tx.commit().await?;
        *guard = Some(state);
        drop(guard);
        self.publish().await?;
        latest(&self.pool).await
    }

    async fn sign(
        &self,
        tx: &mut PgConnection,
        state: &State,
        now: DateTime<Utc>,
    ) -> Result<(), CheckpointError> {
        let root = state.frontier.root();
        let claims = CheckpointClaims {
            iss: self.config.service.clone(),
            typ: CHECKPOINT_TYP.into(),
            context: self.config.context.clone(),
            tree_size: state.frontier.size(),
            root_hash: hex::encode(root),
            last_position: state.last.as_ref().map(|(_, p)| *p),
            iat: now.timestamp(),
            signed_at: now,
        };
        let jws = self
            .signer
            .sign(&claims)
            .map_err(|e| CheckpointError::Signing(e.to_string()))?;
        sqlx::query(
            "INSERT INTO checkpoints (tree_size, root_hash, last_position, frontier, signed_at, jws) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(i64::try_from(claims.tree_size).unwrap_or(i64::MAX))
        .bind(root.to_vec())
        .bind(claims.last_position)
        .bind(state.frontier.to_bytes())
        .bind(now)
        .bind(&jws)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    /// Publishes, oldest first, the checkpoints no round published yet (a
    /// crash in between publishes one twice: readers keep one per size).
    async fn publish(&self) -> Result<(), CheckpointError> {
        let rows = sqlx::query(
            "SELECT c.tree_size, c.root_hash, c.jws FROM checkpoints c \
             LEFT JOIN checkpoints_published p ON p.tree_size = c.tree_size \
             WHERE p.tree_size IS NULL ORDER BY c.tree_size",
        )
        .fetch_all(&self.pool)
        .await?;
        for r in rows {
            let size: i64 = r.try_get("tree_size")?;
            let root: Vec<u8> = r.try_get("root_hash")?;
            let message = CheckpointMessage {
                context: self.config.context.clone(),
                tree_size: u64::try_from(size).unwrap_or_default(),
                root_hash: hex::encode(root),
                checkpoint: r.try_get("jws")?,
            };
            bus::publish_json(
                &self.producer,
                &self.config.topic,
                &self.config.context,
                &message,
                &[],
            )
            .await
            .map_err(|e| CheckpointError::Kafka(e.to_string()))?;
            sqlx::query(
                "INSERT INTO checkpoints_published (tree_size) VALUES ($1) ON CONFLICT DO NOTHING",
            )
            .bind(size)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }
}

/// The tree as stored: the latest checkpoint's peaks, extended by the
/// leaves appended after it.
async fn load(tx: &mut PgConnection) -> Result<State, CheckpointError> {
    let latest = sqlx::query(
        "SELECT tree_size, frontier, signed_at FROM checkpoints ORDER BY tree_size DESC LIMIT 1",
    )
    .fetch_optional(&mut *tx)
    .await?;
    let mut state = State::default();
    if let Some(r) = latest {
        let size: i64 = r.try_get("tree_size")?;
        let size = u64::try_from(size).unwrap_or_default();
        let peaks: Vec<u8> = r.try_get("frontier")?;
        state.frontier = Frontier::from_bytes(size, &peaks)
            .ok_or_else(|| CheckpointError::Corrupt(format!("checkpoint {size}: bad frontier")))?;
        state.signed = Some((size, r.try_get("signed_at")?));
    }
    loop {
        let rows = sqlx::query(
            "SELECT leaf_index, tx_id::text AS tx_id, global_position, event_hash FROM merkle_leaves \
             WHERE leaf_index >= $1 ORDER BY leaf_index LIMIT $2",
        )
        .bind(i64::try_from(state.frontier.size()).unwrap_or(i64::MAX))
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
        let n = rows.len();
        for r in rows {
            let index: i64 = r.try_get("leaf_index")?;
            if u64::try_from(index).ok() != Some(state.frontier.size()) {
                return Err(CheckpointError::Corrupt(format!(
                    "leaf {index} out of order"
                )));
            }
            let hash: Vec<u8> = r.try_get("event_hash")?;
            state.frontier.push(leaf_hash(&hash));
            state.last = Some((r.try_get("tx_id")?, r.try_get("global_position")?));
        }
        if (n as i64) < BATCH {
            break;
        }
    }
    if state.last.is_none() && state.frontier.size() > 0 {
        let r = sqlx::query(
            "SELECT tx_id::text AS tx_id, global_position FROM merkle_leaves \
             ORDER BY leaf_index DESC LIMIT 1",
        )
        .fetch_one(&mut *tx)
        .await?;
        state.last = Some((r.try_get("tx_id")?, r.try_get("global_position")?));
    }
    Ok(state)
}

/// Appends, as leaves, the events committed since the last leaf.
async fn append(tx: &mut PgConnection, state: &mut State) -> Result<(), CheckpointError> {
    loop {
        let (after_tx, after_pos) = state.last.clone().unwrap_or_else(|| ("0".into(), 0));
        // The text copy of tx_id has its own name, so ORDER BY uses xid8.
        let rows = sqlx::query(
            "SELECT tx_id::text AS tx_text, global_position, hash FROM events \
             WHERE (tx_id, global_position) > ($1::text::xid8, $2) \
               AND tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
             ORDER BY tx_id, global_position LIMIT $3",
        )
        .bind(&after_tx)
        .bind(after_pos)
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
        let n = rows.len();
        if n == 0 {
            return Ok(());
        }
        let (mut idx, mut pos, mut txs, mut hashes) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for r in &rows {
            let hash: Vec<u8> = r.try_get("hash")?;
            let p: i64 = r.try_get("global_position")?;
            let t: String = r.try_get("tx_text")?;
            idx.push(i64::try_from(state.frontier.size()).unwrap_or(i64::MAX));
            state.frontier.push(leaf_hash(&hash));
            pos.push(p);
            txs.push(t.clone());
            hashes.push(hash);
            state.last = Some((t, p));
        }
        sqlx::query(
            "INSERT INTO merkle_leaves (leaf_index, global_position, tx_id, event_hash) \
             SELECT i, p, t::xid8, h FROM unnest($1::int8[], $2::int8[], $3::text[], $4::bytea[]) \
               AS u(i, p, t, h)",
        )
        .bind(&idx)
        .bind(&pos)
        .bind(&txs)
        .bind(&hashes)
        .execute(&mut *tx)
        .await?;
        if (n as i64) < BATCH {
            return Ok(());
        }
    }
}

/// The latest checkpoint signed by this store.
pub async fn latest(pool: &PgPool) -> Result<Option<Signed>, CheckpointError> {
    let r = sqlx::query(
        "SELECT tree_size, root_hash, last_position, signed_at, jws FROM checkpoints \
         ORDER BY tree_size DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    let Some(r) = r else { return Ok(None) };
    let size: i64 = r.try_get("tree_size")?;
    let root: Vec<u8> = r.try_get("root_hash")?;
    Ok(Some(Signed {
        tree_size: u64::try_from(size).unwrap_or_default(),
        root_hash: hex::encode(root),
        last_position: r.try_get("last_position")?,
        signed_at: r.try_get("signed_at")?,
        checkpoint: r.try_get("jws")?,
    }))
}
