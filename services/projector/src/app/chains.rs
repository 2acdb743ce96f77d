//! The license's history, aggregate by aggregate, with its hash-chain
//! links checked, and the signed dispute bundle: the same chains with the
//! services' checkpoints and inclusion proofs that vouch for them.

use chrono::{DateTime, Utc};
use eventstore::bundle::{self, BundleChain, DisputeBundle};
use eventstore::chain::{verify_chain, ChainReport};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::{App, Error};
use crate::store::licenses as store;

/// One event about the license, with its hash-chain link checked.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryEvent {
    pub context: String,
    pub event_id: Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub recorded_at: DateTime<Utc>,
    /// The event's payload, as its type and version define it.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// Who caused the event, when, and under which command.
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    /// Hex SHA-256.
    pub prev_hash: String,
    /// Hex SHA-256.
    pub hash: String,
    /// `hash` is the hash of this content after `prev_hash`, and `prev_hash`
    /// is the previous event's `hash`.
    pub link_ok: bool,
}

/// Every event about a license, in recorded order, and each aggregate's
/// chain verified.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct History {
    pub license_id: Uuid,
    pub events: Vec<HistoryEvent>,
    pub chains: Vec<ChainSummary>,
}

/// One aggregate's chain as verified.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChainSummary {
    pub context: String,
    #[serde(flatten)]
    pub report: ChainReport,
}

/// Every aggregate that has an event about the license, whole: a chain can
/// only be checked from its first event.
async fn chains_of(pool: &PgPool, id: Uuid) -> Result<Vec<BundleChain>, Error> {
    let rows = store::chain_events(pool, id).await?;
    let mut chains: Vec<BundleChain> = Vec::new();
    for e in rows {
        let same = chains.last().is_some_and(|c| {
            c.context == e.context
                && c.aggregate_type == e.stored.aggregate_type
                && c.aggregate_id == e.stored.aggregate_id
        });
        if !same {
            chains.push(BundleChain {
                context: e.context.clone(),
                aggregate_type: e.stored.aggregate_type.clone(),
                aggregate_id: e.stored.aggregate_id.clone(),
                events: Vec::new(),
                proofs: Vec::new(),
            });
        }
        if let Some(c) = chains.last_mut() {
            c.events.push(e.stored);
        }
    }
    if chains.is_empty() {
        return Err(Error::NotFound);
    }
    Ok(chains)
}

/// Per context, the latest service checkpoint the projector can stand
/// behind (its signature verifies under the service's published keys and
/// the projector's own copy of the events gives its root), with an
/// inclusion proof of each of the license's events it covers.
async fn prove(
    pool: &PgPool,
    id: Uuid,
    chains: &mut [BundleChain],
) -> Result<Vec<(bundle::ServiceHead, String)>, Error> {
    use crate::checkpoints::{keys_of, leaves, signature, Signature};
    use crate::store::checkpoints::{select, verified_sizes, Select};
    let leaf_of = store::leaf_indexes(pool, id).await?;
    let mut contexts: Vec<String> = chains.iter().map(|c| c.context.clone()).collect();
    contexts.sort();
    contexts.dedup();
    let mut heads = Vec::new();
    for context in contexts {
        let keys = keys_of(pool, &context).await?;
        let candidates = verified_sizes(pool, &context).await?;
        'sizes: for size in candidates {
            let size = u64::try_from(size).unwrap_or_default();
            let Some(l) = leaves(pool, &context, size).await? else {
                // Not every event it covers has reached the projector yet.
                continue;
            };
            let mut tree = eventstore::merkle::Tree::new(&l);
            let root = hex::encode(tree.root(size));
            for cp in select(pool, &Select::Size(context.clone(), size)).await? {
                if signature(&keys, &cp) != Signature::Valid {
                    tracing::warn!(%context, tree_size = size, "ignoring a checkpoint whose signature does not verify");
                    continue;
                }
                if cp.root_hash != root {
                    return Err(Error::Inconsistent(format!(
                        "the projector's {context} events give root {root} for {size} events; \
                         the service signed {}",
                        cp.root_hash
                    )));
                }
                for chain in chains.iter_mut().filter(|c| c.context == context) {
                    for e in &chain.events {
                        let key = (
                            context.clone(),
                            e.aggregate_type.clone(),
                            e.aggregate_id.clone(),
                            e.sequence,
                        );
                        let Some(&leaf) = leaf_of.get(&key).filter(|l| **l < size) else {
                            continue;
                        };
                        chain.proofs.push(bundle::InclusionProof {
                            sequence: e.sequence,
                            leaf_index: leaf,
                            tree_size: size,
                            path: tree
                                .inclusion_proof(leaf, size)
                                .iter()
                                .map(hex::encode)
                                .collect(),
                        });
                    }
                }
                heads.push((
                    bundle::ServiceHead {
                        context: context.clone(),
                        tree_size: size,
                        root_hash: root,
                    },
                    cp.checkpoint,
                ));
                break 'sizes;
            }
        }
    }
    Ok(heads)
}

impl App {
    /// Every event about the license with its hash-chain link checked, and
    /// each aggregate's chain verified.
    pub async fn history(&self, id: Uuid) -> Result<History, Error> {
        let chains = chains_of(&self.pool, id).await?;
        let mut events = Vec::new();
        let mut summaries = Vec::new();
        for c in &chains {
            let report = verify_chain(&c.aggregate_type, &c.aggregate_id, &c.events);
            let mut prev = eventstore::chain::ZERO_HASH.to_vec();
            for e in &c.events {
                let link_ok = e.prev_hash == prev && e.compute_hash(&e.prev_hash)[..] == e.hash[..];
                prev = e.hash.clone();
                events.push(HistoryEvent {
                    context: c.context.clone(),
                    event_id: e.event_id,
                    aggregate_type: e.aggregate_type.clone(),
                    aggregate_id: e.aggregate_id.clone(),
                    sequence: e.sequence,
                    event_type: e.event_type.clone(),
                    event_version: e.event_version.clone(),
                    recorded_at: e.recorded_at,
                    payload: serde_json::from_str(&e.payload).unwrap_or_default(),
                    metadata: serde_json::from_str(&e.metadata).unwrap_or_default(),
                    prev_hash: hex::encode(&e.prev_hash),
                    hash: hex::encode(&e.hash),
                    link_ok,
                });
            }
            summaries.push(ChainSummary {
                context: c.context.clone(),
                report,
            });
        }
        // Across contexts there is no common sequence: the time each store
        // recorded the event orders them, the event id breaks ties.
        events.sort_by_key(|e| (e.recorded_at, e.event_id));
        Ok(History {
            license_id: id,
            events,
            chains: summaries,
        })
    }

    /// The license's whole history with the services' checkpoints proving
    /// it, under a checkpoint the projector signs.
    pub async fn dispute_bundle(&self, id: Uuid) -> Result<DisputeBundle, Error> {
        let mut chains = chains_of(&self.pool, id).await?;
        // The projector signs only a history that verifies.
        for c in &chains {
            let report = verify_chain(&c.aggregate_type, &c.aggregate_id, &c.events);
            if !report.is_intact() {
                return Err(Error::Inconsistent(format!(
                    "{} {} ({}): {:?}",
                    c.aggregate_type, c.aggregate_id, c.context, report.problems
                )));
            }
        }
        let heads = prove(&self.pool, id, &mut chains).await?;
        // Whole microseconds: the export time must read back exactly as signed.
        let now = self.clock.now();
        let exported_at = DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now);
        bundle::seal(id, exported_at, chains, heads, &self.issuer, |c| {
            self.signer.sign(c)
        })
        .map_err(Error::Signing)
    }
}
