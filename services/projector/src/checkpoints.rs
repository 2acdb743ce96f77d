//! The services' signed checkpoints, as the projector holds them: read
//! from `<prefix>.checkpoints`, checked against the keys each service
//! published on its own events topic (`SigningKeyPublished`), and against
//! the projector's own copy of the events (the leaves of each service's
//! Merkle tree are the audit trail's chain hashes, by `leaf_index`).

use async_trait::async_trait;
use bus::{HandleError, Incoming, TxHandler};
use chrono::{DateTime, Utc};
use contracts::activation::{SigningKeyPublished, SIGNING_KEY_PUBLISHED};
use contracts::checkpoint::{CheckpointClaims, CheckpointMessage, CHECKPOINT_TYP};
use eventstore::merkle::{self, Hash};
use serde::Serialize;
use signing::Jwks;
use sqlx::{PgConnection, PgPool, Row};

/// Files every checkpoint message as received (unverified: its service's
/// key may not have been projected yet; it is verified when used).
pub struct CheckpointConsumer;

#[async_trait]
impl TxHandler for CheckpointConsumer {
    async fn handle(&self, tx: &mut PgConnection, msg: &Incoming) -> Result<(), HandleError> {
        let m: CheckpointMessage = msg.json("a checkpoint message")?;
        let (kid, payload) = signing::peek(&m.checkpoint)
            .map_err(|e| HandleError::Poison(format!("checkpoint: {e}")))?;
        let c: CheckpointClaims = serde_json::from_value(payload)
            .map_err(|e| HandleError::Poison(format!("checkpoint claims: {e}")))?;
        if c.typ != CHECKPOINT_TYP
            || c.context != m.context
            || c.tree_size != m.tree_size
            || c.root_hash != m.root_hash
        {
            return Err(HandleError::Poison(
                "the message does not say what its checkpoint says".into(),
            ));
        }
        sqlx::query(
            "INSERT INTO service_checkpoints \
               (context, tree_size, root_hash, last_position, signed_at, kid, jws) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(&c.context)
        .bind(i64::try_from(c.tree_size).map_err(|_| HandleError::Poison("tree_size".into()))?)
        .bind(&c.root_hash)
        .bind(c.last_position)
        .bind(c.signed_at)
        .bind(kid)
        .bind(&m.checkpoint)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

/// A stored checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct Stored {
    pub context: String,
    pub tree_size: u64,
    pub root_hash: String,
    pub last_position: Option<i64>,
    pub signed_at: DateTime<Utc>,
    pub kid: Option<String>,
    pub checkpoint: String,
}

fn stored(r: &sqlx::postgres::PgRow) -> Result<Stored, sqlx::Error> {
    let size: i64 = r.try_get("tree_size")?;
    Ok(Stored {
        context: r.try_get("context")?,
        tree_size: u64::try_from(size).unwrap_or_default(),
        root_hash: r.try_get("root_hash")?,
        last_position: r.try_get("last_position")?,
        signed_at: r.try_get("signed_at")?,
        kid: r.try_get("kid")?,
        checkpoint: r.try_get("jws")?,
    })
}

const COLUMNS: &str = "context, tree_size, root_hash, last_position, signed_at, kid, jws";

/// Which checkpoints to read.
pub enum Select {
    /// The latest of each context.
    Latest,
    /// The latest of one context.
    LatestOf(String),
    /// Those of a context with this size.
    Size(String, u64),
    /// The first of a context whose tree holds the event at this global
    /// position.
    Covering(String, i64),
}

pub async fn select(pool: &PgPool, s: &Select) -> Result<Vec<Stored>, sqlx::Error> {
    let (filter, context, n) = match s {
        Select::Latest => ("", None, None),
        Select::LatestOf(c) => ("WHERE context = $1", Some(c), None),
        Select::Size(c, n) => (
            "WHERE context = $1 AND tree_size = $2",
            Some(c),
            Some(i64::try_from(*n).unwrap_or(i64::MAX)),
        ),
        Select::Covering(c, p) => (
            "WHERE context = $1 AND last_position >= $2",
            Some(c),
            Some(*p),
        ),
    };
    let sql = match s {
        Select::Latest => format!(
            "SELECT DISTINCT ON (context) {COLUMNS} FROM service_checkpoints \
             ORDER BY context, tree_size DESC, received_at"
        ),
        Select::LatestOf(_) => format!(
            "SELECT {COLUMNS} FROM service_checkpoints {filter} \
             ORDER BY tree_size DESC, received_at LIMIT 1"
        ),
        Select::Size(..) => {
            format!("SELECT {COLUMNS} FROM service_checkpoints {filter} ORDER BY received_at")
        }
        Select::Covering(..) => format!(
            "SELECT {COLUMNS} FROM service_checkpoints {filter} \
             ORDER BY tree_size, received_at LIMIT 1"
        ),
    };
    let mut q = sqlx::query(&sql);
    if let Some(c) = context {
        q = q.bind(c);
    }
    if let Some(n) = n {
        q = q.bind(n);
    }
    q.fetch_all(pool).await?.iter().map(stored).collect()
}

/// The keys a service published on its own events topic.
pub async fn keys_of(pool: &PgPool, context: &str) -> Result<Jwks, sqlx::Error> {
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT payload::text FROM audit_trail WHERE context = $1 AND event_type = $2",
    )
    .bind(context)
    .bind(SIGNING_KEY_PUBLISHED)
    .fetch_all(pool)
    .await?;
    Ok(Jwks {
        keys: rows
            .iter()
            .filter_map(|p| serde_json::from_str::<SigningKeyPublished>(p).ok())
            .filter_map(|k| serde_json::from_value(k.jwk()).ok())
            .collect(),
    })
}

/// Whether the checkpoint's signature verifies under its service's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Signature {
    Valid,
    Invalid,
    UnknownKey,
}

pub fn signature(jwks: &Jwks, c: &Stored) -> Signature {
    match service_kit::keys::verify_under(jwks, &c.checkpoint) {
        Ok(v) => match serde_json::from_value::<CheckpointClaims>(v) {
            Ok(claims)
                if claims.typ == CHECKPOINT_TYP
                    && claims.context == c.context
                    && claims.tree_size == c.tree_size
                    && claims.root_hash == c.root_hash =>
            {
                Signature::Valid
            }
            _ => Signature::Invalid,
        },
        Err(signing::SigningError::UnknownKid(_)) => Signature::UnknownKey,
        Err(_) => Signature::Invalid,
    }
}

/// The leaf hashes of a context's first `size` events, as the projector
/// holds them; None while it does not hold them all.
pub async fn leaves(
    pool: &PgPool,
    context: &str,
    size: u64,
) -> Result<Option<Vec<Hash>>, sqlx::Error> {
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT leaf_index, hash FROM audit_trail WHERE context = $1 AND leaf_index < $2 \
         ORDER BY leaf_index",
    )
    .bind(context)
    .bind(i64::try_from(size).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await?;
    if rows.len() as u64 != size {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(rows.len());
    for (i, (index, hash)) in rows.iter().enumerate() {
        let Some(bytes) = hex::decode(hash).ok().filter(|_| *index == i as i64) else {
            return Ok(None);
        };
        out.push(merkle::leaf_hash(&bytes));
    }
    Ok(Some(out))
}

/// Does the projector's copy of the events give the checkpoint's root?
/// None while it does not hold every event the checkpoint covers.
pub async fn matches_events(pool: &PgPool, c: &Stored) -> Result<Option<bool>, sqlx::Error> {
    Ok(leaves(pool, &c.context, c.tree_size)
        .await?
        .map(|l| hex::encode(merkle::Tree::new(&l).root(c.tree_size)) == c.root_hash))
}
