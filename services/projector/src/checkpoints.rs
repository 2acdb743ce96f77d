//! The services' signed checkpoints, as the projector holds them: read
//! from `<prefix>.checkpoints`, checked against the keys each service
//! published on its own events topic (`SigningKeyPublished`), and against
//! the projector's own copy of the events (the leaves of each service's
//! Merkle tree are the audit trail's chain hashes, by `leaf_index`).

use async_trait::async_trait;
use bus::{HandleError, Incoming, TxHandler};
use chrono::{DateTime, Utc};
use contracts::activation::{SigningKeyPublished, SIGNING_KEY_PUBLISHED};
use contracts::checkpoint::{CheckpointClaims, CheckpointMessage};
use eventstore::merkle::{self, Hash};
use serde::Serialize;
use sha2::Digest;
use signing::Jwks;
use sqlx::{PgConnection, PgPool, Row};

/// Files every checkpoint message as received (unverified: its service's
/// key may not have been projected yet; it is verified when used).
pub struct CheckpointConsumer;

#[async_trait]
impl TxHandler for CheckpointConsumer {
    /// Only a checkpoint its context's service signed is kept: anything
    /// else on the topic (another service's forgery, garbage) is
    /// dead-lettered, so it can neither shadow nor pre-empt a genuine one.
    async fn handle(&self, tx: &mut PgConnection, msg: &Incoming) -> Result<(), HandleError> {
        let m: CheckpointMessage = msg.json("a checkpoint message")?;
        let (kid, payload) = signing::peek(&m.checkpoint)
            .map_err(|e| HandleError::Poison(format!("checkpoint: {e}")))?;
        // Without a kid it could never be matched to a published key.
        let kid = kid.ok_or_else(|| HandleError::Poison("checkpoint without a kid".into()))?;
        let c: CheckpointClaims = serde_json::from_value(payload)
            .map_err(|e| HandleError::Poison(format!("checkpoint claims: {e}")))?;
        if !c.is_of(&m.context) || c.tree_size != m.tree_size || c.root_hash != m.root_hash {
            return Err(HandleError::Poison(
                "not a checkpoint of its context signed by that context's service".into(),
            ));
        }
        let size =
            i64::try_from(c.tree_size).map_err(|_| HandleError::Poison("tree_size".into()))?;
        let keys = keys_of(&mut *tx, &c.context).await?;
        let verified = match signature_of(&keys, &m.checkpoint, &c) {
            Signature::Valid => Some(true),
            // Its key may not have reached the projector yet.
            Signature::UnknownKey => None,
            Signature::Invalid => {
                return Err(HandleError::Poison(format!(
                    "checkpoint signature does not verify under the keys {} published",
                    c.iss
                )))
            }
        };
        sqlx::query(
            "INSERT INTO service_checkpoints (context, tree_size, root_hash, jws_digest, \
               last_position, signed_at, kid, jws, verified) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
        )
        .bind(&c.context)
        .bind(size)
        .bind(&c.root_hash)
        .bind(hex::encode(sha2::Sha256::digest(m.checkpoint.as_bytes())))
        .bind(c.last_position)
        .bind(c.signed_at)
        .bind(kid)
        .bind(&m.checkpoint)
        .bind(verified)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

/// Checks the checkpoints that were waiting for their key, every couple of
/// seconds: verified once it arrives, refused if it does not sign them.
pub async fn verify_pending(pool: PgPool, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    while !*shutdown.borrow() {
        if let Err(e) = verify_pending_once(&pool).await {
            tracing::debug!(error = %e, "pending checkpoints not checked");
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
            _ = shutdown.changed() => {}
        }
    }
}

async fn verify_pending_once(pool: &PgPool) -> Result<(), sqlx::Error> {
    // Only those whose key has arrived: checkpoints under a kid nobody
    // published (a flood of them included) never crowd out the others.
    let mut keys: std::collections::HashMap<String, Jwks> = std::collections::HashMap::new();
    let (mut contexts, mut kids) = (Vec::new(), Vec::new());
    for context in [
        contracts::topics::ISSUANCE,
        contracts::topics::ACTIVATION,
        contracts::topics::DOMAIN,
        contracts::topics::GRANTS,
    ] {
        let jwks = keys_of(pool, context).await?;
        for k in &jwks.keys {
            contexts.push(context.to_string());
            kids.push(k.kid.clone());
        }
        keys.insert(context.to_string(), jwks);
    }
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS}, jws_digest FROM service_checkpoints WHERE verified IS NULL \
           AND (context, kid) IN (SELECT * FROM unnest($1::text[], $2::text[])) \
         ORDER BY received_at LIMIT 500"
    ))
    .bind(&contexts)
    .bind(&kids)
    .fetch_all(pool)
    .await?;
    for r in &rows {
        let c = stored(r)?;
        let digest: String = r.try_get("jws_digest")?;
        let verdict = match keys.get(&c.context) {
            Some(k) => signature(k, &c),
            None => Signature::UnknownKey,
        };
        let verified = match verdict {
            Signature::Valid => true,
            Signature::Invalid => false,
            Signature::UnknownKey => continue,
        };
        sqlx::query(
            "UPDATE service_checkpoints SET verified = $5 WHERE context = $1 AND tree_size = $2 \
             AND root_hash = $3 AND jws_digest = $4",
        )
        .bind(&c.context)
        .bind(i64::try_from(c.tree_size).unwrap_or(i64::MAX))
        .bind(&c.root_hash)
        .bind(digest)
        .bind(verified)
        .execute(pool)
        .await?;
    }
    Ok(())
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
    // Only checkpoints whose signature was checked: one still waiting for
    // its key is no evidence yet.
    let (filter, context, n) = match s {
        Select::Latest => ("WHERE verified", None, None),
        Select::LatestOf(c) => ("WHERE verified AND context = $1", Some(c), None),
        Select::Size(c, n) => (
            "WHERE verified AND context = $1 AND tree_size = $2",
            Some(c),
            Some(i64::try_from(*n).unwrap_or(i64::MAX)),
        ),
        Select::Covering(c, p) => (
            "WHERE verified AND context = $1 AND last_position >= $2",
            Some(c),
            Some(*p),
        ),
    };
    let sql = match s {
        Select::Latest => format!(
            "SELECT DISTINCT ON (context) {COLUMNS} FROM service_checkpoints {filter} \
             ORDER BY context, tree_size DESC, received_at"
        ),
        Select::LatestOf(_) => format!(
            "SELECT {COLUMNS} FROM service_checkpoints {filter} \
             ORDER BY tree_size DESC, received_at LIMIT 1"
        ),
        // One size may be signed more than once (a restart re-signs);
        // a few suffice.
        Select::Size(..) => format!(
            "SELECT {COLUMNS} FROM service_checkpoints {filter} ORDER BY received_at LIMIT 16"
        ),
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

/// The keys a service published on its own events topic (which only that
/// service may write).
pub async fn keys_of<'e, E: sqlx::PgExecutor<'e>>(
    db: E,
    context: &str,
) -> Result<Jwks, sqlx::Error> {
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT payload::text FROM audit_trail WHERE context = $1 AND event_type = $2",
    )
    .bind(context)
    .bind(SIGNING_KEY_PUBLISHED)
    .fetch_all(db)
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
    match signing::peek(&c.checkpoint)
        .ok()
        .and_then(|(_, v)| serde_json::from_value::<CheckpointClaims>(v).ok())
    {
        Some(claims) if claims.tree_size == c.tree_size && claims.root_hash == c.root_hash => {
            signature_of(jwks, &c.checkpoint, &claims)
        }
        _ => Signature::Invalid,
    }
}

/// Whether `jws` verifies under `jwks` with exactly `claims`, a checkpoint
/// of its context by that context's service.
fn signature_of(jwks: &Jwks, jws: &str, claims: &CheckpointClaims) -> Signature {
    match service_kit::keys::verify_under(jwks, jws) {
        Ok(v) => match serde_json::from_value::<CheckpointClaims>(v) {
            Ok(signed) if signed == *claims && signed.is_of(&claims.context) => Signature::Valid,
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
    let size_i64 = i64::try_from(size).unwrap_or(i64::MAX);
    // From the index alone: a size beyond what is held is answered without
    // reading every leaf first.
    let held: i64 = sqlx::query_scalar(
        "SELECT coalesce(max(leaf_index) + 1, 0) FROM audit_trail WHERE context = $1",
    )
    .bind(context)
    .fetch_one(pool)
    .await?;
    if held < size_i64 {
        return Ok(None);
    }
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT leaf_index, hash FROM audit_trail WHERE context = $1 AND leaf_index < $2 \
         ORDER BY leaf_index",
    )
    .bind(context)
    .bind(size_i64)
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
