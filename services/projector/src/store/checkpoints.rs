//! `service_checkpoints`, the services' signed checkpoints as received, and
//! what checking them reads from `audit_trail`: the keys each service
//! published, and the leaves of its Merkle tree (the chain hashes, by
//! `leaf_index`).

use chrono::{DateTime, Utc};
use contracts::activation::SIGNING_KEY_PUBLISHED;
use contracts::checkpoint::CheckpointClaims;
use serde::Serialize;
use sha2::Digest;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};

/// Files a checkpoint with its token's digest; one already filed (same
/// context, size, root and digest) is left as it is. `verified` is None
/// while its key is unknown.
pub async fn insert(
    tx: &mut PgConnection,
    c: &CheckpointClaims,
    tree_size: i64,
    kid: &str,
    jws: &str,
    verified: Option<bool>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO service_checkpoints (context, tree_size, root_hash, jws_digest, \
           last_position, signed_at, kid, jws, verified) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
    )
    .bind(&c.context)
    .bind(tree_size)
    .bind(&c.root_hash)
    .bind(hex::encode(sha2::Sha256::digest(jws.as_bytes())))
    .bind(c.last_position)
    .bind(c.signed_at)
    .bind(kid)
    .bind(jws)
    .bind(verified)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A stored checkpoint.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = StoredCheckpoint)]
pub struct Stored {
    pub context: String,
    /// Events the tree covers.
    pub tree_size: u64,
    /// Hex Merkle root of those events.
    pub root_hash: String,
    /// The event-store position of the last event covered.
    #[schema(required = true)]
    pub last_position: Option<i64>,
    pub signed_at: DateTime<Utc>,
    /// The signing key's id, from the JWS header.
    #[schema(required = true)]
    pub kid: Option<String>,
    /// The compact JWS (ES256) the service published.
    pub checkpoint: String,
}

fn stored(r: &PgRow) -> Result<Stored, sqlx::Error> {
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

/// The oldest checkpoints still waiting for their key whose (context, kid)
/// is one of the given pairs (at most 500), each with its token's digest.
pub async fn pending(
    pool: &PgPool,
    contexts: &[String],
    kids: &[String],
) -> Result<Vec<(Stored, String)>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS}, jws_digest FROM service_checkpoints WHERE verified IS NULL \
           AND (context, kid) IN (SELECT * FROM unnest($1::text[], $2::text[])) \
         ORDER BY received_at LIMIT 500"
    ))
    .bind(contexts)
    .bind(kids)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| Ok((stored(r)?, r.try_get("jws_digest")?)))
        .collect()
}

/// Records whether a pending checkpoint's signature verified.
pub async fn set_verified(
    pool: &PgPool,
    c: &Stored,
    digest: String,
    verified: bool,
) -> Result<(), sqlx::Error> {
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
    Ok(())
}

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

/// The largest tree sizes (at most 8) a verified checkpoint of the context
/// signed, largest first.
pub async fn verified_sizes(pool: &PgPool, context: &str) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar::<_, i64>(
        "SELECT DISTINCT tree_size FROM service_checkpoints WHERE verified AND context = $1 \
         ORDER BY tree_size DESC LIMIT 8",
    )
    .bind(context)
    .fetch_all(pool)
    .await
}

/// The payloads (`SigningKeyPublished`, as text) of the keys a service
/// published on its own events topic.
pub async fn published_keys<'e, E: sqlx::PgExecutor<'e>>(
    db: E,
    context: &str,
) -> Result<Vec<String>, sqlx::Error> {
    // The type as a literal, so that every plan — a generic one prepared
    // while the trail was empty included — reads the partial index
    // `audit_trail_keys` (a handful of rows), never the whole trail.
    sqlx::query_scalar(&format!(
        "SELECT payload::text FROM audit_trail \
         WHERE context = $1 AND event_type = '{SIGNING_KEY_PUBLISHED}'"
    ))
    .bind(context)
    .fetch_all(db)
    .await
}

/// How many leaves of the context's tree the projector holds, from the
/// index alone: one past the largest `leaf_index`.
pub async fn leaves_held(pool: &PgPool, context: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce(max(leaf_index) + 1, 0) FROM audit_trail WHERE context = $1",
    )
    .bind(context)
    .fetch_one(pool)
    .await
}

/// The context's chain hashes below leaf `size`, with their leaf index, in
/// leaf order.
pub async fn leaf_hashes(
    pool: &PgPool,
    context: &str,
    size: i64,
) -> Result<Vec<(i64, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT leaf_index, hash FROM audit_trail WHERE context = $1 AND leaf_index < $2 \
         ORDER BY leaf_index",
    )
    .bind(context)
    .bind(size)
    .fetch_all(pool)
    .await
}
