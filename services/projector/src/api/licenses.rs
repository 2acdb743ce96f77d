//! Licenses: the live row, the filtered list, the state at an instant, the
//! history with its hash-chain links, the signed dispute bundle, and the
//! re-evaluation of a past request. Rows come from `store::licenses` and
//! `store::checkpoints`; the folds, chain checks and proofs are here.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use contracts::activation::Fingerprint;
use contracts::issuance::LicenseStatus;
use contracts::text::Name;
use eventstore::bundle::{self, BundleChain};
use eventstore::chain::{verify_chain, ChainReport};
use serde::{Deserialize, Serialize};
use service_kit::json::Json;
use service_kit::{Problem, Query};
use sqlx::PgPool;
use uuid::Uuid;

use super::unavailable;
use crate::domain::decision::{self, Decision, Kind};
use crate::domain::LicenseState;
use crate::store::licenses::{self as store, ListFilter};
use crate::App;

const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1_000;

fn not_found() -> Problem {
    Problem::not_found("LICENSE_NOT_FOUND", "no such license")
}

pub async fn get(app: web::Data<App>, id: web::Path<Uuid>) -> Result<HttpResponse, Problem> {
    let state = store::state(&app.pool, *id).await.map_err(unavailable)?;
    Ok(HttpResponse::Ok().json(state.ok_or_else(not_found)?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub status: Option<Name>,
    pub product: Option<Name>,
    pub customer: Option<Name>,
    #[serde(default, with = "contracts::time::strict_option")]
    pub expiring_before: Option<DateTime<Utc>>,
    /// The last `license_id` of the previous page.
    pub cursor: Option<Uuid>,
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

pub fn limit_of(limit: Option<i64>) -> Result<i64, Problem> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(
            Problem::unprocessable("INVALID_LIMIT", "limit must be 1-1000").with_field("limit"),
        );
    }
    Ok(limit)
}

pub async fn list(app: web::Data<App>, q: Query<ListQuery>) -> Result<HttpResponse, Problem> {
    let limit = limit_of(q.limit)?;
    if let Some(s) = &q.status {
        if serde_json::from_value::<LicenseStatus>(serde_json::Value::String(s.to_string()))
            .is_err()
        {
            return Err(Problem::unprocessable(
                "INVALID_STATUS",
                "status must be active, suspended, expired, revoked, reclaimed or deleted",
            )
            .with_field("status"));
        }
    }
    let filter = ListFilter {
        status: q.status.as_ref().map(|v| v.to_string()),
        product: q.product.as_ref().map(|v| v.to_string()),
        customer: q.customer.as_ref().map(|v| v.to_string()),
        expiring_before: q.expiring_before,
        cursor: q.cursor,
    };
    let rows = store::list(&app.pool, &filter, limit)
        .await
        .map_err(unavailable)?;
    let next_cursor = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|(id, _)| id.to_string()))
        .flatten();
    Ok(HttpResponse::Ok().json(Page {
        items: rows.into_iter().map(|(_, s)| s).collect(),
        next_cursor,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AsOfQuery {
    /// Default: now.
    #[serde(default, with = "contracts::time::strict_option")]
    pub as_of: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize)]
pub struct AsOf {
    pub license_id: Uuid,
    pub as_of: DateTime<Utc>,
    /// False when the license had no event yet at `as_of`.
    pub exists: bool,
    pub events_folded: u64,
    /// The status in force at `as_of` (an active license past its expiry is
    /// expired, whether or not the scheduler had recorded it yet).
    pub effective_status: Option<LicenseStatus>,
    pub state: Option<LicenseState>,
}

/// Every event of the license recorded up to `at`, folded with the live
/// model's own function. Events come ordered by aggregate and sequence: the
/// fold depends only on each aggregate's order.
pub async fn state_at(
    pool: &PgPool,
    id: Uuid,
    at: DateTime<Utc>,
) -> Result<Option<LicenseState>, Problem> {
    let mut events = store::events_until(pool, id, at)
        .await
        .map_err(unavailable)?;
    if events.is_empty() {
        return Ok(None);
    }
    // Sorted here rather than by the database: a long history would not
    // fit the server's sort memory and spill to disk.
    events.sort_unstable_by(|(c1, a), (c2, b)| {
        (c1, &a.aggregate_type, &a.aggregate_id, a.sequence).cmp(&(
            c2,
            &b.aggregate_type,
            &b.aggregate_id,
            b.sequence,
        ))
    });
    let mut state = LicenseState::new(id);
    for (context, e) in &events {
        // The live model dead-letters an event off its contract and goes
        // on without it; so does this fold.
        if let Err(err) = state.apply(context, e) {
            tracing::warn!(event_id = %e.event_id, error = %err, "event skipped by the as-of fold");
        }
    }
    Ok(Some(state))
}

async fn known(pool: &PgPool, id: Uuid) -> Result<(), Problem> {
    if store::has_events(pool, id).await.map_err(unavailable)? {
        Ok(())
    } else {
        Err(not_found())
    }
}

pub async fn as_of(
    app: web::Data<App>,
    id: web::Path<Uuid>,
    q: Query<AsOfQuery>,
) -> Result<HttpResponse, Problem> {
    let at = q.as_of.unwrap_or_else(|| app.clock.now());
    let state = state_at(&app.pool, *id, at).await?;
    if state.is_none() {
        known(&app.pool, *id).await?;
    }
    Ok(HttpResponse::Ok().json(AsOf {
        license_id: *id,
        as_of: at,
        exists: state.is_some(),
        events_folded: state.as_ref().map_or(0, |s| s.events),
        effective_status: state.as_ref().and_then(|s| s.status_at(at)),
        state,
    }))
}

/// Every aggregate that has an event about the license, whole: a chain can
/// only be checked from its first event.
async fn chains_of(pool: &PgPool, id: Uuid) -> Result<Vec<BundleChain>, Problem> {
    let rows = store::chain_events(pool, id).await.map_err(unavailable)?;
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
        return Err(not_found());
    }
    Ok(chains)
}

#[derive(Debug, Serialize)]
pub struct HistoryEvent {
    pub context: String,
    pub event_id: Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub recorded_at: DateTime<Utc>,
    pub payload: serde_json::Value,
    pub metadata: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
    /// `hash` is the hash of this content after `prev_hash`, and `prev_hash`
    /// is the previous event's `hash`.
    pub link_ok: bool,
}

#[derive(Debug, Serialize)]
pub struct History {
    pub license_id: Uuid,
    pub events: Vec<HistoryEvent>,
    pub chains: Vec<ChainSummary>,
}

#[derive(Debug, Serialize)]
pub struct ChainSummary {
    pub context: String,
    #[serde(flatten)]
    pub report: ChainReport,
}

pub async fn history(app: web::Data<App>, id: web::Path<Uuid>) -> Result<HttpResponse, Problem> {
    let chains = chains_of(&app.pool, *id).await?;
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
    Ok(HttpResponse::Ok().json(History {
        license_id: *id,
        events,
        chains: summaries,
    }))
}

fn inconsistent(detail: String) -> Problem {
    tracing::error!(%detail, "history contradicts itself or a signed checkpoint");
    Problem::new(
        actix_web::http::StatusCode::CONFLICT,
        "HISTORY_INCONSISTENT",
        "The recorded history does not verify",
    )
    .with_detail(detail)
}

/// Per context, the latest service checkpoint the projector can stand
/// behind (its signature verifies under the service's published keys and
/// the projector's own copy of the events gives its root), with an
/// inclusion proof of each of the license's events it covers.
async fn prove(
    pool: &PgPool,
    id: Uuid,
    chains: &mut [BundleChain],
) -> Result<Vec<(bundle::ServiceHead, String)>, Problem> {
    use crate::checkpoints::{keys_of, leaves, signature, Signature};
    use crate::store::checkpoints::{select, verified_sizes, Select};
    let leaf_of = store::leaf_indexes(pool, id).await.map_err(unavailable)?;
    let mut contexts: Vec<String> = chains.iter().map(|c| c.context.clone()).collect();
    contexts.sort();
    contexts.dedup();
    let mut heads = Vec::new();
    for context in contexts {
        let keys = keys_of(pool, &context).await.map_err(unavailable)?;
        let candidates = verified_sizes(pool, &context).await.map_err(unavailable)?;
        'sizes: for size in candidates {
            let size = u64::try_from(size).unwrap_or_default();
            let Some(l) = leaves(pool, &context, size).await.map_err(unavailable)? else {
                // Not every event it covers has reached the projector yet.
                continue;
            };
            let mut tree = eventstore::merkle::Tree::new(&l);
            let root = hex::encode(tree.root(size));
            for cp in select(pool, &Select::Size(context.clone(), size))
                .await
                .map_err(unavailable)?
            {
                if signature(&keys, &cp) != Signature::Valid {
                    tracing::warn!(%context, tree_size = size, "ignoring a checkpoint whose signature does not verify");
                    continue;
                }
                if cp.root_hash != root {
                    return Err(inconsistent(format!(
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

pub async fn dispute_bundle(
    app: web::Data<App>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    let mut chains = chains_of(&app.pool, *id).await?;
    // The projector signs only a history that verifies.
    for c in &chains {
        let report = verify_chain(&c.aggregate_type, &c.aggregate_id, &c.events);
        if !report.is_intact() {
            return Err(inconsistent(format!(
                "{} {} ({}): {:?}",
                c.aggregate_type, c.aggregate_id, c.context, report.problems
            )));
        }
    }
    let heads = prove(&app.pool, *id, &mut chains).await?;
    // Whole microseconds: the export time must read back exactly as signed.
    let now = app.clock.now();
    let exported_at = DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now);
    let bundle = bundle::seal(*id, exported_at, chains, heads, &app.issuer, |c| {
        app.signer.sign(c)
    })
    .map_err(|e| {
        tracing::error!(error = %e, "signing a dispute checkpoint failed");
        Problem::internal()
    })?;
    Ok(HttpResponse::Ok()
        .insert_header((
            "Content-Disposition",
            format!("attachment; filename=\"dispute-{id}.json\""),
        ))
        .json(bundle))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum DecisionKind {
    Validation,
    Activation,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    pub kind: DecisionKind,
    /// The instant the request was (or would have been) made.
    #[serde(with = "contracts::time::strict")]
    pub at: DateTime<Utc>,
    /// The device's components as the client reports them (hashed here as
    /// the activation service hashes them).
    #[serde(default)]
    pub fingerprint: Option<Fingerprint>,
    #[serde(default)]
    pub features: Vec<Name>,
    #[serde(default, with = "contracts::time::strict_option")]
    pub client_time: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize)]
pub struct DecisionAnswer {
    pub license_id: Uuid,
    pub at: DateTime<Utc>,
    pub kind: &'static str,
    pub decision: Decision,
    pub effective_status: Option<LicenseStatus>,
    pub events_folded: u64,
    /// Activations of the license live at `at`.
    pub live_activations: u32,
}

const MAX_FEATURES: usize = 64;

pub async fn decision(
    app: web::Data<App>,
    id: web::Path<Uuid>,
    body: Json<DecisionRequest>,
) -> Result<HttpResponse, Problem> {
    let req = body.0;
    if req.features.len() > MAX_FEATURES || req.features.iter().any(|f| f.len() > 64) {
        return Err(Problem::unprocessable(
            "INVALID_FEATURES",
            "at most 64 features of at most 64 characters",
        )
        .with_field("features"));
    }
    let device: Option<BTreeMap<String, String>> = match &req.fingerprint {
        Some(f) => Some(f.components().map_err(|e| {
            Problem::unprocessable("INVALID_FINGERPRINT", e.to_string()).with_field("fingerprint")
        })?),
        None => None,
    };
    let (kind, kind_name) = match req.kind {
        DecisionKind::Validation => (Kind::Validation, "validation"),
        DecisionKind::Activation => (Kind::Activation, "activation"),
    };
    if kind == Kind::Activation && device.is_none() {
        return Err(Problem::unprocessable(
            "FINGERPRINT_REQUIRED",
            "an activation names the device's fingerprint",
        )
        .with_field("fingerprint"));
    }
    let state = match state_at(&app.pool, *id, req.at).await? {
        Some(s) => s,
        None => {
            known(&app.pool, *id).await?;
            LicenseState::new(*id)
        }
    };
    let decision = decision::reevaluate(
        &state,
        kind,
        device.as_ref(),
        &req.features,
        req.client_time,
        req.at,
        app.tolerance,
    );
    Ok(HttpResponse::Ok().json(DecisionAnswer {
        license_id: *id,
        at: req.at,
        kind: kind_name,
        decision,
        effective_status: state.status_at(req.at),
        events_folded: state.events,
        live_activations: state.live_activations,
    }))
}
