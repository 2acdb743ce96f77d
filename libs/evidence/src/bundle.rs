//! The dispute bundle: every event of a license's chains plus a signed
//! checkpoint of each chain's head, so that a third party can check offline,
//! with only the public keys, that nothing was edited, removed, inserted or
//! reordered since the export. The hash chain alone cannot expose a cut tail
//! or a wholesale rewrite; the signed count and head hash can.
//!
//! It also carries, per context, the owning service's own signed checkpoint
//! (a Merkle tree head over every event of its store, see
//! `service_kit::checkpoints`) and an inclusion proof of each of the
//! license's events under it: evidence from the service itself, signed when
//! the event was published, that the events are those it recorded — which
//! holds even against someone who rewrote a database and recomputed every
//! hash before the export.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashSet};

use chrono::{DateTime, Utc};
use p256::ecdsa::VerifyingKey;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use contracts::checkpoint::{service_of, CheckpointClaims};

use crate::chain::{verify_chain, ChainProblem, StoredEvent};
use crate::merkle;

pub const BUNDLE_FORMAT: &str = "licensing.dispute-bundle/v2";
pub const CHECKPOINT_TYP: &str = "dispute-checkpoint";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisputeBundle {
    pub format: String,
    pub license_id: Uuid,
    pub exported_at: DateTime<Utc>,
    pub chains: Vec<BundleChain>,
    /// Compact JWS (ES256) of a [`Checkpoint`].
    pub checkpoint: String,
    /// The services' signed checkpoints the inclusion proofs are against.
    #[serde(default)]
    #[schema(required = true)]
    pub service_checkpoints: Vec<ServiceCheckpoint>,
}

/// A service's own checkpoint (compact JWS of
/// `contracts::checkpoint::CheckpointClaims`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceCheckpoint {
    pub context: String,
    pub checkpoint: String,
}

/// That one event (by sequence) is leaf `leaf_index` of the tree of
/// `tree_size` leaves a service checkpoint signed: the audit path, hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InclusionProof {
    pub sequence: i64,
    pub leaf_index: u64,
    pub tree_size: u64,
    pub path: Vec<String>,
}

/// What the projector signs of a service checkpoint it used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceHead {
    pub context: String,
    pub tree_size: u64,
    pub root_hash: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BundleChain {
    pub context: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub events: Vec<StoredEvent>,
    /// Inclusion proofs of the chain's first events (those published before
    /// the service checkpoint of the context), in order.
    #[serde(default)]
    #[schema(required = true)]
    pub proofs: Vec<InclusionProof>,
}

/// The JWS payload of `checkpoint`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub typ: String,
    pub iss: String,
    pub license_id: Uuid,
    pub exported_at: DateTime<Utc>,
    pub iat: i64,
    pub chains: Vec<ChainHead>,
    /// The service checkpoints the bundle's proofs are against.
    #[serde(default)]
    pub service_checkpoints: Vec<ServiceHead>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainHead {
    pub context: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub events: usize,
    pub head_hash: String,
    /// How many of the first events have inclusion proofs.
    #[serde(default)]
    pub proven: usize,
}

/// The signed heads of `chains`. An empty chain has no head to sign, so it
/// is left out (and ignored by [`verify_bundle`]).
pub fn heads(chains: &[BundleChain]) -> Vec<ChainHead> {
    chains
        .iter()
        .filter_map(|c| {
            c.events.last().map(|last| ChainHead {
                context: c.context.clone(),
                aggregate_type: c.aggregate_type.clone(),
                aggregate_id: c.aggregate_id.clone(),
                events: c.events.len(),
                head_hash: hex::encode(&last.hash),
                proven: c.proofs.len(),
            })
        })
        .collect()
}

pub fn checkpoint_for(
    license_id: Uuid,
    exported_at: DateTime<Utc>,
    chains: &[BundleChain],
    service_checkpoints: Vec<ServiceHead>,
    iss: &str,
) -> Checkpoint {
    Checkpoint {
        typ: CHECKPOINT_TYP.to_string(),
        iss: iss.to_string(),
        license_id,
        exported_at,
        iat: exported_at.timestamp(),
        chains: heads(chains),
        service_checkpoints,
    }
}

/// Builds and signs a bundle, so that producers cannot get the format or the
/// checkpoint out of step with the chains.
pub fn seal(
    license_id: Uuid,
    exported_at: DateTime<Utc>,
    chains: Vec<BundleChain>,
    service_checkpoints: Vec<(ServiceHead, String)>,
    iss: &str,
    sign: impl FnOnce(&Checkpoint) -> Result<String, signing::SigningError>,
) -> Result<DisputeBundle, signing::SigningError> {
    let heads = service_checkpoints.iter().map(|(h, _)| h.clone()).collect();
    let checkpoint = sign(&checkpoint_for(
        license_id,
        exported_at,
        &chains,
        heads,
        iss,
    ))?;
    Ok(DisputeBundle {
        format: BUNDLE_FORMAT.to_string(),
        license_id,
        exported_at,
        chains,
        checkpoint,
        service_checkpoints: service_checkpoints
            .into_iter()
            .map(|(h, jws)| ServiceCheckpoint {
                context: h.context,
                checkpoint: jws,
            })
            .collect(),
    })
}

/// What `verify_bundle` found; `valid` iff `failures` is empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleReport {
    pub license_id: Uuid,
    pub exported_at: DateTime<Utc>,
    /// The kid named by the checkpoint's JWS header, if it could be read.
    pub kid: Option<String>,
    pub valid: bool,
    pub chains: Vec<ChainCheck>,
    pub failures: Vec<Failure>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainCheck {
    pub context: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub events: usize,
    pub head_hash: Option<String>,
    pub signed_events: Option<usize>,
    pub signed_head_hash: Option<String>,
    /// Events shown, by a verified inclusion proof, to be in their
    /// service's signed checkpoint.
    pub proven: usize,
    /// What the hash chain itself shows, before comparing with the checkpoint.
    pub problems: Vec<ChainProblem>,
    pub valid: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "failure", rename_all = "snake_case", deny_unknown_fields)]
pub enum Failure {
    #[error("bundle format is {found:?}, expected {BUNDLE_FORMAT:?}")]
    WrongFormat { found: String },
    #[error("checkpoint signature: {reason}")]
    BadSignature { reason: String },
    #[error("signed checkpoint {field} is {signed}, the bundle says {bundle}")]
    CheckpointMismatch {
        field: String,
        signed: String,
        bundle: String,
    },
    #[error("{aggregate_type} {aggregate_id} ({context}): event {sequence} was edited, its content no longer matches its hash")]
    EditedEvent {
        context: String,
        aggregate_type: String,
        aggregate_id: String,
        sequence: i64,
    },
    #[error("{aggregate_type} {aggregate_id} ({context}): {}", removed(*expected_sequence, *count))]
    RemovedEvent {
        context: String,
        aggregate_type: String,
        aggregate_id: String,
        expected_sequence: i64,
        count: i64,
    },
    #[error("{aggregate_type} {aggregate_id} ({context}): event {sequence} was inserted, {}", inserted(belongs_to.as_deref()))]
    InsertedEvent {
        context: String,
        aggregate_type: String,
        aggregate_id: String,
        sequence: i64,
        /// Set when the event names another aggregate than its chain.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        belongs_to: Option<String>,
    },
    #[error("{aggregate_type} {aggregate_id} ({context}): events reordered or replaced, event {sequence} does not follow the event before it")]
    ReorderedEvents {
        context: String,
        aggregate_type: String,
        aggregate_id: String,
        sequence: i64,
    },
    #[error("{aggregate_type} {aggregate_id} ({context}): head hash is {found}, the checkpoint signed {signed} (chain rewritten)")]
    HeadMismatch {
        context: String,
        aggregate_type: String,
        aggregate_id: String,
        signed: String,
        found: String,
    },
    #[error("{aggregate_type} {aggregate_id} ({context}): chain is in the signed checkpoint but missing from the bundle")]
    MissingChain {
        context: String,
        aggregate_type: String,
        aggregate_id: String,
    },
    #[error("{aggregate_type} {aggregate_id} ({context}): chain is not covered by the signed checkpoint")]
    UnsignedChain {
        context: String,
        aggregate_type: String,
        aggregate_id: String,
    },
    #[error("{aggregate_type} {aggregate_id} ({context}): chain is listed more than once")]
    DuplicateChain {
        context: String,
        aggregate_type: String,
        aggregate_id: String,
    },
    #[error("{context}: service checkpoint does not verify: {reason}")]
    BadServiceCheckpoint { context: String, reason: String },
    #[error("{context}: the service checkpoint of {tree_size} events is signed in the bundle's checkpoint but missing")]
    MissingServiceCheckpoint { context: String, tree_size: u64 },
    #[error("{aggregate_type} {aggregate_id} ({context}): event {sequence} is not the event the service's checkpoint of {tree_size} events holds (changed since it was published)")]
    NotInCheckpoint {
        context: String,
        aggregate_type: String,
        aggregate_id: String,
        sequence: i64,
        tree_size: u64,
    },
    #[error("{aggregate_type} {aggregate_id} ({context}): {proven} events were proven at export, the bundle proves {found}")]
    MissingProof {
        context: String,
        aggregate_type: String,
        aggregate_id: String,
        proven: usize,
        found: usize,
    },
}

fn removed(first: i64, count: i64) -> String {
    if count == 1 {
        format!("event {first} was removed")
    } else {
        format!("events {first} to {} were removed", first + count - 1)
    }
}

fn inserted(belongs_to: Option<&str>) -> String {
    match belongs_to {
        Some(other) => format!("it belongs to {other}"),
        None => "it is not in the signed chain".to_string(),
    }
}

/// Checks a bundle against its own signed checkpoint, offline: `key_for`
/// maps the JWS kid to a trusted key of the exporter (the projector);
/// `service_key_for(context, kid)` to a trusted key of the service that
/// owns `context`. Kept apart so that neither the projector nor one service
/// can vouch for another service's history.
pub fn verify_bundle(
    bundle: &DisputeBundle,
    key_for: impl Fn(&str) -> Option<VerifyingKey>,
    service_key_for: impl Fn(&str, &str) -> Option<VerifyingKey>,
) -> BundleReport {
    let mut failures = Vec::new();
    if bundle.format != BUNDLE_FORMAT {
        failures.push(Failure::WrongFormat {
            found: bundle.format.clone(),
        });
    }

    // verify_with does not say which kid it tried; the message must.
    let kid = RefCell::new(None::<String>);
    let verified = signing::verify_with(&bundle.checkpoint, |k| {
        *kid.borrow_mut() = Some(k.to_string());
        key_for(k)
    });
    let kid = kid.into_inner();
    let checkpoint = match verified {
        Ok(payload) => match serde_json::from_value::<Checkpoint>(payload) {
            Ok(c) => Some(c),
            Err(e) => {
                failures.push(Failure::BadSignature {
                    reason: format!("the signed payload is not a dispute checkpoint: {e}"),
                });
                None
            }
        },
        Err(e) => {
            let reason = match (&e, &kid) {
                (signing::SigningError::BadSignature, Some(k)) => {
                    format!("signature does not verify under the key with kid {k:?}")
                }
                _ => e.to_string(),
            };
            failures.push(Failure::BadSignature { reason });
            None
        }
    };

    if let Some(c) = &checkpoint {
        let mut mismatch = |field: &str, signed: String, bundle: String| {
            if signed != bundle {
                failures.push(Failure::CheckpointMismatch {
                    field: field.to_string(),
                    signed,
                    bundle,
                });
            }
        };
        mismatch("typ", c.typ.clone(), CHECKPOINT_TYP.to_string());
        mismatch(
            "license_id",
            c.license_id.to_string(),
            bundle.license_id.to_string(),
        );
        mismatch(
            "exported_at",
            c.exported_at.to_rfc3339(),
            bundle.exported_at.to_rfc3339(),
        );
    }

    // The services' own checkpoints, each under its service's key.
    let mut services: Vec<CheckpointClaims> = Vec::new();
    for sc in &bundle.service_checkpoints {
        let claims = signing::verify_with(&sc.checkpoint, |kid| service_key_for(&sc.context, kid))
            .map_err(|e| e.to_string())
            .and_then(|v| serde_json::from_value::<CheckpointClaims>(v).map_err(|e| e.to_string()))
            .and_then(|c| {
                if !c.is_of(&sc.context) {
                    Err(format!(
                        "not a checkpoint of {} signed by {}",
                        sc.context,
                        service_of(&sc.context).unwrap_or("a known service")
                    ))
                } else {
                    Ok(c)
                }
            });
        match claims {
            Ok(c) => services.push(c),
            Err(reason) => failures.push(Failure::BadServiceCheckpoint {
                context: sc.context.clone(),
                reason,
            }),
        }
    }
    if let Some(c) = &checkpoint {
        for h in &c.service_checkpoints {
            let present = services.iter().any(|s| {
                s.context == h.context && s.tree_size == h.tree_size && s.root_hash == h.root_hash
            });
            if !present {
                failures.push(Failure::MissingServiceCheckpoint {
                    context: h.context.clone(),
                    tree_size: h.tree_size,
                });
            }
        }
    }

    let signed_heads: &[ChainHead] = checkpoint.as_ref().map_or(&[], |c| &c.chains);
    let same = |h: &ChainHead, c: &BundleChain| {
        h.context == c.context
            && h.aggregate_type == c.aggregate_type
            && h.aggregate_id == c.aggregate_id
    };
    let mut chains = Vec::new();
    for (i, chain) in bundle.chains.iter().enumerate() {
        let (ctx, ty, id) = (
            chain.context.clone(),
            chain.aggregate_type.clone(),
            chain.aggregate_id.clone(),
        );
        if bundle.chains[..i]
            .iter()
            .any(|c| c.context == ctx && c.aggregate_type == ty && c.aggregate_id == id)
        {
            failures.push(Failure::DuplicateChain {
                context: ctx,
                aggregate_type: ty,
                aggregate_id: id,
            });
            continue;
        }
        let signed = signed_heads.iter().find(|h| same(h, chain));
        if signed.is_none() {
            if chain.events.is_empty() {
                continue;
            }
            // Without a readable checkpoint every chain is unsigned; saying
            // so per chain would only repeat the signature failure.
            if checkpoint.is_some() {
                failures.push(Failure::UnsignedChain {
                    context: ctx,
                    aggregate_type: ty,
                    aggregate_id: id,
                });
            }
        }
        let (check, found) = check_chain(chain, signed, &services);
        failures.extend(found);
        chains.push(check);
    }
    for h in signed_heads {
        if !bundle.chains.iter().any(|c| same(h, c)) {
            failures.push(Failure::MissingChain {
                context: h.context.clone(),
                aggregate_type: h.aggregate_type.clone(),
                aggregate_id: h.aggregate_id.clone(),
            });
        }
    }

    BundleReport {
        license_id: bundle.license_id,
        exported_at: checkpoint.map_or(bundle.exported_at, |c| c.exported_at),
        kid,
        valid: failures.is_empty(),
        chains,
        failures,
    }
}

/// Classifies one chain's damage. Sequence numbers are covered by each
/// event's hash, so once edits are ruled out they tell removal, insertion
/// and reordering apart; broken links and the head catch the rest.
fn check_chain(
    chain: &BundleChain,
    signed: Option<&ChainHead>,
    services: &[CheckpointClaims],
) -> (ChainCheck, Vec<Failure>) {
    let (ctx, ty, id) = (&chain.context, &chain.aggregate_type, &chain.aggregate_id);
    let mut failures = Vec::new();
    let inserted = |sequence: i64, belongs_to: Option<String>| Failure::InsertedEvent {
        context: ctx.clone(),
        aggregate_type: ty.clone(),
        aggregate_id: id.clone(),
        sequence,
        belongs_to,
    };

    let (own, foreign): (Vec<&StoredEvent>, Vec<&StoredEvent>) = chain
        .events
        .iter()
        .partition(|e| e.aggregate_type == *ty && e.aggregate_id == *id);
    for e in foreign {
        let other = format!("{} {}", e.aggregate_type, e.aggregate_id);
        failures.push(inserted(e.sequence, Some(other)));
    }
    let own: Vec<StoredEvent> = own.into_iter().cloned().collect();
    let report = verify_chain(ty, id, &own);

    for p in &report.problems {
        if let ChainProblem::HashMismatch { sequence } = p {
            failures.push(Failure::EditedEvent {
                context: ctx.clone(),
                aggregate_type: ty.clone(),
                aggregate_id: id.clone(),
                sequence: *sequence,
            });
        }
    }

    let seqs: Vec<i64> = own.iter().map(|e| e.sequence).collect();
    let expected = signed.map_or_else(
        || seqs.iter().copied().max().unwrap_or(0),
        |h| i64::try_from(h.events).unwrap_or(i64::MAX),
    );
    let mut structural = false;
    let present: BTreeSet<i64> = seqs
        .iter()
        .copied()
        .filter(|s| (1..=expected).contains(s))
        .collect();
    let mut next = 1;
    for s in present.into_iter().chain([expected.saturating_add(1)]) {
        if s > next {
            failures.push(Failure::RemovedEvent {
                context: ctx.clone(),
                aggregate_type: ty.clone(),
                aggregate_id: id.clone(),
                expected_sequence: next,
                count: s - next,
            });
            structural = true;
        }
        next = s.saturating_add(1);
    }
    let mut seen = HashSet::new();
    for s in &seqs {
        if !(1..=expected).contains(s) || !seen.insert(*s) {
            failures.push(inserted(*s, None));
            structural = true;
        }
    }
    if !structural {
        let out_of_place = own
            .iter()
            .zip(1..)
            .find(|(e, n)| e.sequence != *n)
            .map(|(e, _)| e.sequence)
            .or_else(|| {
                report.problems.iter().find_map(|p| match p {
                    ChainProblem::BrokenLink { sequence } => Some(*sequence),
                    _ => None,
                })
            });
        if let Some(sequence) = out_of_place {
            failures.push(Failure::ReorderedEvents {
                context: ctx.clone(),
                aggregate_type: ty.clone(),
                aggregate_id: id.clone(),
                sequence,
            });
            structural = true;
        }
    }
    // A chain rewritten from some point on, hashes recomputed, is
    // self-consistent; only the signed head exposes it.
    if let (false, Some(h), Some(found)) = (structural, signed, &report.head_hash) {
        if *found != h.head_hash {
            failures.push(Failure::HeadMismatch {
                context: ctx.clone(),
                aggregate_type: ty.clone(),
                aggregate_id: id.clone(),
                signed: h.head_hash.clone(),
                found: found.clone(),
            });
        }
    }

    let proven = check_proofs(chain, &own, services, &mut failures);
    if let Some(h) = signed {
        if proven < h.proven {
            failures.push(Failure::MissingProof {
                context: ctx.clone(),
                aggregate_type: ty.clone(),
                aggregate_id: id.clone(),
                proven: h.proven,
                found: proven,
            });
        }
    }

    let check = ChainCheck {
        context: ctx.clone(),
        aggregate_type: ty.clone(),
        aggregate_id: id.clone(),
        events: chain.events.len(),
        head_hash: chain.events.last().map(|e| hex::encode(&e.hash)),
        signed_events: signed.map(|h| h.events),
        signed_head_hash: signed.map(|h| h.head_hash.clone()),
        proven,
        problems: report.problems,
        valid: failures.is_empty(),
    };
    (check, failures)
}

/// Verifies each inclusion proof of `chain` against its service's
/// checkpoint; how many of its events are proven.
fn check_proofs(
    chain: &BundleChain,
    own: &[StoredEvent],
    services: &[CheckpointClaims],
    failures: &mut Vec<Failure>,
) -> usize {
    let mut proven = 0;
    for p in &chain.proofs {
        let Some(event) = own.iter().find(|e| e.sequence == p.sequence) else {
            continue;
        };
        // Without a trusted checkpoint of that size there is nothing to
        // prove against: that failure is named once, for the checkpoint
        // (and the count of proven events), not again for every event.
        let Some(root) = services
            .iter()
            .find(|s| s.context == chain.context && s.tree_size == p.tree_size)
            .and_then(|s| hash32(&s.root_hash))
        else {
            continue;
        };
        let path: Option<Vec<merkle::Hash>> = p.path.iter().map(|h| hash32(h)).collect();
        let ok = match path {
            Some(path) => merkle::verify_inclusion(
                &merkle::leaf_hash(&event.hash),
                p.leaf_index,
                p.tree_size,
                &path,
                &root,
            ),
            None => false,
        };
        if ok {
            proven += 1;
        } else {
            failures.push(Failure::NotInCheckpoint {
                context: chain.context.clone(),
                aggregate_type: chain.aggregate_type.clone(),
                aggregate_id: chain.aggregate_id.clone(),
                sequence: p.sequence,
                tree_size: p.tree_size,
            });
        }
    }
    proven
}

fn hash32(h: &str) -> Option<merkle::Hash> {
    hex::decode(h).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::ZERO_HASH;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).expect("time")
    }

    /// Recomputes every link and hash, as a forger with database access would.
    fn rehash(events: &mut [StoredEvent]) {
        let mut prev = ZERO_HASH.to_vec();
        for e in events {
            e.prev_hash = prev;
            e.hash = e.compute_hash(&e.prev_hash).to_vec();
            prev = e.hash.clone();
        }
    }

    fn event(ty: &str, id: &str, s: i64) -> StoredEvent {
        StoredEvent {
            global_position: s,
            event_id: Uuid::now_v7(),
            aggregate_type: ty.into(),
            aggregate_id: id.into(),
            sequence: s,
            event_type: "Something".into(),
            event_version: "1".into(),
            payload: format!("{{\"n\":{s}}}"),
            metadata: "{}".into(),
            recorded_at: at(1_700_000_000 + s),
            prev_hash: vec![],
            hash: vec![],
        }
    }

    fn chain(context: &str, ty: &str, id: &str, n: i64) -> BundleChain {
        let mut events: Vec<StoredEvent> = (1..=n).map(|s| event(ty, id, s)).collect();
        rehash(&mut events);
        BundleChain {
            context: context.into(),
            aggregate_type: ty.into(),
            aggregate_id: id.into(),
            events,
            proofs: vec![],
        }
    }

    fn ring(kid: &str) -> signing::KeyRing {
        signing::KeyRing::generate(kid).expect("ring")
    }

    fn bundle(ring: &signing::KeyRing) -> DisputeBundle {
        let exported_at = at(1_800_000_000);
        let chains = vec![
            chain("issuance", "License", "l1", 4),
            chain("activation", "Activation", "a1", 3),
        ];
        seal(Uuid::now_v7(), exported_at, chains, vec![], "test", |c| {
            ring.sign(c)
        })
        .expect("seal")
    }

    /// A bundle whose chains' events are leaves of a service's tree (with
    /// other events between them), every one proven under the service's
    /// checkpoint, signed with `service`'s key.
    fn proven_bundle(ring: &signing::KeyRing, service: &signing::KeyRing) -> DisputeBundle {
        proven_bundle_by(ring, service, "issuance")
    }

    fn proven_bundle_by(
        ring: &signing::KeyRing,
        service: &signing::KeyRing,
        iss: &str,
    ) -> DisputeBundle {
        let mut chains = vec![chain("issuance", "License", "l1", 4)];
        let other = chain("issuance", "License", "other", 6);
        // The store's publication order: the chain's events interleaved.
        let mut store: Vec<(Option<i64>, Vec<u8>)> = Vec::new();
        for i in 0..6 {
            store.push((None, other.events[i].hash.clone()));
            if let Some(e) = chains[0].events.get(i) {
                store.push((Some(e.sequence), e.hash.clone()));
            }
        }
        let leaves: Vec<merkle::Hash> = store.iter().map(|(_, h)| merkle::leaf_hash(h)).collect();
        let mut tree = merkle::Tree::new(&leaves);
        let size = leaves.len() as u64;
        let root = hex::encode(tree.root(size));
        chains[0].proofs = store
            .iter()
            .enumerate()
            .filter_map(|(i, (s, _))| s.map(|s| (i as u64, s)))
            .map(|(i, sequence)| InclusionProof {
                sequence,
                leaf_index: i,
                tree_size: size,
                path: tree
                    .inclusion_proof(i, size)
                    .iter()
                    .map(hex::encode)
                    .collect(),
            })
            .collect();
        let claims = CheckpointClaims {
            iss: iss.into(),
            typ: contracts::checkpoint::CHECKPOINT_TYP.into(),
            context: "issuance".into(),
            tree_size: size,
            root_hash: root.clone(),
            last_position: Some(size as i64),
            iat: 1_800_000_000,
            signed_at: at(1_800_000_000),
        };
        let head = ServiceHead {
            context: "issuance".into(),
            tree_size: size,
            root_hash: root,
        };
        let jws = service.sign(&claims).expect("sign");
        seal(
            Uuid::now_v7(),
            at(1_800_000_100),
            chains,
            vec![(head, jws)],
            "test",
            |c| ring.sign(c),
        )
        .expect("seal")
    }

    fn key_in(ring: &signing::KeyRing, kid: &str) -> Option<VerifyingKey> {
        ring.jwks()
            .keys
            .iter()
            .find(|k| k.kid == kid)
            .and_then(|k| signing::verifying_key(k).ok())
    }

    /// Verifies with `exporter`'s keys for the bundle and each
    /// `(context, ring)` for that context's service checkpoints.
    fn check_with(
        b: &DisputeBundle,
        exporter: &signing::KeyRing,
        services: &[(&str, &signing::KeyRing)],
    ) -> BundleReport {
        verify_bundle(
            b,
            |kid| key_in(exporter, kid),
            |context, kid| {
                services
                    .iter()
                    .filter(|(c, _)| *c == context)
                    .find_map(|(_, r)| key_in(r, kid))
            },
        )
    }

    #[test]
    fn inclusion_proofs_verify_and_every_tampering_with_them_is_named() {
        let (k, s) = (ring("projector"), ring("issuance"));
        let b = proven_bundle(&k, &s);
        let r = check_with(&b, &k, &[("issuance", &s)]);
        assert!(r.valid, "{:#?}", r.failures);
        assert_eq!(r.chains[0].proven, 4);

        // Edited: its content no longer matches its hash, which the
        // service's tree still holds.
        let mut e = b.clone();
        e.chains[0].events[1].payload = "{\"n\":99}".into();
        let r = check_with(&e, &k, &[("issuance", &s)]);
        assert!(matches!(
            only_failure(&r),
            Failure::EditedEvent { sequence: 2, .. }
        ));
        // Edited with its hash recomputed: the tree does not hold it.
        let ev = &mut e.chains[0].events[1];
        ev.hash = ev.compute_hash(&ev.prev_hash).to_vec();
        let r = check_with(&e, &k, &[("issuance", &s)]);
        assert!(
            r.failures
                .iter()
                .any(|f| matches!(f, Failure::NotInCheckpoint { sequence: 2, .. })),
            "{:#?}",
            r.failures
        );

        // Rewritten before the export, hashes recomputed, the projector
        // fooled into signing it: only the service's tree tells.
        let mut chains = b.chains.clone();
        chains[0].events[2].payload = "{\"n\":77}".into();
        rehash(&mut chains[0].events);
        let heads = vec![(
            serde_json::from_value::<Checkpoint>(
                signing::verify_with(&b.checkpoint, |_| {
                    signing::verifying_key(&k.jwks().keys[0]).ok()
                })
                .expect("own checkpoint"),
            )
            .expect("claims")
            .service_checkpoints[0]
                .clone(),
            b.service_checkpoints[0].checkpoint.clone(),
        )];
        let forged = seal(b.license_id, b.exported_at, chains, heads, "test", |c| {
            k.sign(c)
        })
        .expect("seal");
        let r = check_with(&forged, &k, &[("issuance", &s)]);
        assert!(!r.valid);
        let not_in: Vec<i64> = r
            .failures
            .iter()
            .filter_map(|f| match f {
                Failure::NotInCheckpoint { sequence, .. } => Some(*sequence),
                _ => None,
            })
            .collect();
        // The edited event and every later one (their hashes were recomputed).
        assert_eq!(not_in, vec![3, 4], "{:#?}", r.failures);

        // A proof stripped, a service checkpoint dropped, or signed by
        // another key: each named.
        let mut p = b.clone();
        p.chains[0].proofs.pop();
        assert!(matches!(
            only_failure(&check_with(&p, &k, &[("issuance", &s)])),
            Failure::MissingProof {
                proven: 4,
                found: 3,
                ..
            }
        ));
        let mut d = b.clone();
        d.service_checkpoints.clear();
        let r = check_with(&d, &k, &[("issuance", &s)]);
        assert!(r
            .failures
            .iter()
            .any(|f| matches!(f, Failure::MissingServiceCheckpoint { .. })));
        let r = check_with(&b, &k, &[]);
        assert!(r
            .failures
            .iter()
            .any(|f| matches!(f, Failure::BadServiceCheckpoint { .. })));
    }

    #[test]
    fn a_service_checkpoint_counts_only_under_its_own_service_key() {
        let (k, s, a) = (ring("projector"), ring("issuance"), ring("activation"));
        let bad = |r: &BundleReport| {
            r.failures
                .iter()
                .any(|f| matches!(f, Failure::BadServiceCheckpoint { context, .. } if context == "issuance"))
        };
        // The exporter's key vouches for the bundle, never for a service's
        // history: the same bundle with the issuance tree signed by the
        // projector is refused even though the projector's key is trusted.
        let by_projector = proven_bundle(&k, &k);
        assert!(bad(&check_with(&by_projector, &k, &[("issuance", &s)])));
        // Another service's trusted key does not count for issuance either.
        let by_activation = proven_bundle(&k, &a);
        let r = check_with(&by_activation, &k, &[("issuance", &s), ("activation", &a)]);
        assert!(bad(&r), "{:#?}", r.failures);
        // A trusted key's checkpoint must still name the context's own
        // service as issuer.
        let misnamed = proven_bundle_by(&k, &s, "activation");
        let r = check_with(&misnamed, &k, &[("issuance", &s)]);
        assert!(bad(&r), "{:#?}", r.failures);
        // Accepted only under its own.
        let by_issuance = proven_bundle(&k, &s);
        assert!(check_with(&by_issuance, &k, &[("issuance", &s)]).valid);
    }

    fn check(b: &DisputeBundle, ring: &signing::KeyRing) -> BundleReport {
        check_with(b, ring, &[])
    }

    /// The one failure of the report, which must be invalid.
    fn only_failure(r: &BundleReport) -> &Failure {
        assert!(!r.valid);
        assert_eq!(r.failures.len(), 1, "{:#?}", r.failures);
        &r.failures[0]
    }

    #[test]
    fn an_untouched_bundle_is_valid_and_survives_json() {
        let k = ring("k1");
        let b = bundle(&k);
        let b: DisputeBundle =
            serde_json::from_str(&serde_json::to_string(&b).expect("json")).expect("parse");
        let r = check(&b, &k);
        assert!(r.valid, "{:#?}", r.failures);
        assert_eq!(r.kid.as_deref(), Some("k1"));
        assert_eq!(r.chains.len(), 2);
        assert!(r.chains.iter().all(|c| c.valid));
    }

    #[test]
    fn an_edited_payload_names_the_event() {
        let k = ring("k1");
        let mut b = bundle(&k);
        b.chains[0].events[1].payload = "{\"n\":99}".into();
        let r = check(&b, &k);
        assert!(matches!(
            only_failure(&r),
            Failure::EditedEvent { sequence: 2, aggregate_id, .. } if aggregate_id == "l1"
        ));
        assert!(r.failures[0].to_string().contains("event 2 was edited"));
    }

    #[test]
    fn a_removed_middle_event_is_reported_removed() {
        let k = ring("k1");
        let mut b = bundle(&k);
        b.chains[0].events.remove(1);
        let r = check(&b, &k);
        assert!(matches!(
            only_failure(&r),
            Failure::RemovedEvent {
                expected_sequence: 2,
                count: 1,
                ..
            }
        ));
    }

    #[test]
    fn a_removed_last_event_is_reported_removed() {
        let k = ring("k1");
        let mut b = bundle(&k);
        b.chains[1].events.pop();
        let r = check(&b, &k);
        assert!(matches!(
            only_failure(&r),
            Failure::RemovedEvent { expected_sequence: 3, count: 1, aggregate_type, .. }
                if aggregate_type == "Activation"
        ));
    }

    #[test]
    fn swapped_events_are_reported_reordered() {
        let k = ring("k1");
        let mut b = bundle(&k);
        b.chains[0].events.swap(1, 2);
        let r = check(&b, &k);
        assert!(matches!(
            only_failure(&r),
            Failure::ReorderedEvents { sequence: 3, .. }
        ));
    }

    #[test]
    fn an_appended_or_duplicated_event_is_reported_inserted() {
        let k = ring("k1");
        let mut b = bundle(&k);
        b.chains[0].events.push(event("License", "l1", 5));
        rehash(&mut b.chains[0].events);
        let r = check(&b, &k);
        assert!(matches!(
            only_failure(&r),
            Failure::InsertedEvent { sequence: 5, .. }
        ));

        let mut b = bundle(&k);
        let copy = b.chains[0].events[1].clone();
        b.chains[0].events.insert(2, copy);
        let r = check(&b, &k);
        assert!(matches!(
            only_failure(&r),
            Failure::InsertedEvent { sequence: 2, .. }
        ));
    }

    #[test]
    fn an_event_of_another_aggregate_is_reported_inserted() {
        let k = ring("k1");
        let mut b = bundle(&k);
        let stray = b.chains[1].events[0].clone();
        b.chains[0].events.push(stray);
        let r = check(&b, &k);
        assert!(matches!(
            only_failure(&r),
            Failure::InsertedEvent { sequence: 1, belongs_to: Some(other), .. }
                if other == "Activation a1"
        ));
    }

    #[test]
    fn a_rewritten_chain_is_a_head_mismatch() {
        let k = ring("k1");
        let mut b = bundle(&k);
        b.chains[1].events[1].payload = "{\"n\":99}".into();
        rehash(&mut b.chains[1].events);
        let r = check(&b, &k);
        assert!(matches!(only_failure(&r), Failure::HeadMismatch { .. }));
    }

    #[test]
    fn a_replaced_event_that_breaks_the_link_is_reported() {
        let k = ring("k1");
        let mut b = bundle(&k);
        let e = &mut b.chains[0].events[1];
        e.payload = "{\"n\":99}".into();
        e.hash = e.compute_hash(&e.prev_hash).to_vec();
        let r = check(&b, &k);
        assert!(matches!(
            only_failure(&r),
            Failure::ReorderedEvents { sequence: 3, .. }
        ));
    }

    #[test]
    fn another_key_is_a_bad_signature_naming_the_kid() {
        let k = ring("k1");
        let b = bundle(&k);
        let r = check(&b, &ring("k1"));
        let f = only_failure(&r);
        assert!(matches!(f, Failure::BadSignature { .. }));
        assert!(f.to_string().contains("\"k1\""), "{f}");

        let r = check(&b, &ring("k2"));
        let f = only_failure(&r);
        assert!(matches!(f, Failure::BadSignature { .. }));
        assert!(f.to_string().contains("no key with kid \"k1\""), "{f}");
    }

    #[test]
    fn a_dropped_chain_is_missing() {
        let k = ring("k1");
        let mut b = bundle(&k);
        b.chains.remove(1);
        let r = check(&b, &k);
        assert!(matches!(
            only_failure(&r),
            Failure::MissingChain { aggregate_id, .. } if aggregate_id == "a1"
        ));
    }

    #[test]
    fn an_unsigned_or_duplicated_chain_is_refused() {
        let k = ring("k1");
        let mut b = bundle(&k);
        b.chains.push(chain("grants", "Grant", "g1", 1));
        let r = check(&b, &k);
        assert!(matches!(only_failure(&r), Failure::UnsignedChain { .. }));

        let mut b = bundle(&k);
        b.chains.push(b.chains[0].clone());
        let r = check(&b, &k);
        assert!(matches!(only_failure(&r), Failure::DuplicateChain { .. }));
    }

    #[test]
    fn a_changed_export_time_or_format_is_refused() {
        let k = ring("k1");
        let mut b = bundle(&k);
        b.exported_at += chrono::Duration::seconds(1);
        let r = check(&b, &k);
        assert!(matches!(
            only_failure(&r),
            Failure::CheckpointMismatch { field, .. } if field == "exported_at"
        ));

        let mut b = bundle(&k);
        b.format = "v0".into();
        let r = check(&b, &k);
        assert!(matches!(only_failure(&r), Failure::WrongFormat { .. }));
    }
}
