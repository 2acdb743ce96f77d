//! The services' signed checkpoints, as the projector holds them: read
//! from `<prefix>.checkpoints`, checked against the keys each service
//! published on its own events topic (`SigningKeyPublished`), and against
//! the projector's own copy of the events (the leaves of each service's
//! Merkle tree are the audit trail's chain hashes, by `leaf_index`). Their
//! rows are `store::checkpoints`'; here are the consumer that files them,
//! the task that verifies those waiting for their key, and the checks.

use async_trait::async_trait;
use bus::{HandleError, Incoming, TxHandler};
use contracts::activation::SigningKeyPublished;
use contracts::checkpoint::{CheckpointClaims, CheckpointMessage};
use eventstore::merkle::{self, Hash};
use serde::Serialize;
use signing::Jwks;
use sqlx::{PgConnection, PgPool};

use crate::store::checkpoints::{self as store, Stored};

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
        store::insert(&mut *tx, &c, size, &kid, &m.checkpoint, verified).await?;
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
    for (c, digest) in store::pending(pool, &contexts, &kids).await? {
        let verdict = match keys.get(&c.context) {
            Some(k) => signature(k, &c),
            None => Signature::UnknownKey,
        };
        let verified = match verdict {
            Signature::Valid => true,
            Signature::Invalid => false,
            Signature::UnknownKey => continue,
        };
        store::set_verified(pool, &c, digest, verified).await?;
    }
    Ok(())
}

/// The keys a service published on its own events topic (which only that
/// service may write).
pub async fn keys_of<'e, E: sqlx::PgExecutor<'e>>(
    db: E,
    context: &str,
) -> Result<Jwks, sqlx::Error> {
    let rows = store::published_keys(db, context).await?;
    Ok(Jwks {
        keys: rows
            .iter()
            .filter_map(|p| serde_json::from_str::<SigningKeyPublished>(p).ok())
            .filter_map(|k| serde_json::from_value(k.jwk()).ok())
            .collect(),
    })
}

/// Whether the checkpoint's signature verifies under its service's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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
    if store::leaves_held(pool, context).await? < size_i64 {
        return Ok(None);
    }
    let rows = store::leaf_hashes(pool, context, size_i64).await?;
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
