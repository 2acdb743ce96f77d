//! Read API of the projector.

mod admin;
mod audit;
mod checkpoints;
mod licenses;

use actix_web::http::StatusCode;
use actix_web::middleware::from_fn;
use actix_web::web;
use contracts::{Actor, ActorKind, EventEnvelope};
use eventstore::chain::StoredEvent;
use serde_json::value::RawValue;
use service_kit::auth::require;
use service_kit::Problem;
use sqlx::postgres::PgRow;
use sqlx::Row;

pub use audit::AuditRecord;

const AUDITOR: &str = "auditor";
const ADMIN: &str = "admin";

pub fn routes(cfg: &mut web::ServiceConfig) {
    let auditor = || from_fn(require(AUDITOR));
    let admin = || from_fn(require(ADMIN));
    cfg.service(
        web::resource("/v1/licenses")
            .wrap(auditor())
            .route(web::get().to(licenses::list)),
    )
    .service(
        web::resource("/v1/licenses/{id}")
            .wrap(auditor())
            .route(web::get().to(licenses::get)),
    )
    .service(
        web::resource("/v1/licenses/{id}/state")
            .wrap(auditor())
            .route(web::get().to(licenses::as_of)),
    )
    .service(
        web::resource("/v1/licenses/{id}/history")
            .wrap(auditor())
            .route(web::get().to(licenses::history)),
    )
    .service(
        web::resource("/v1/licenses/{id}/dispute-bundle")
            .wrap(auditor())
            .route(web::get().to(licenses::dispute_bundle)),
    )
    .service(
        web::resource("/v1/licenses/{id}/decisions")
            .wrap(auditor())
            .route(web::post().to(licenses::decision)),
    )
    .service(
        web::resource("/v1/checkpoints")
            .wrap(auditor())
            .route(web::get().to(checkpoints::list)),
    )
    .service(
        web::resource("/v1/checkpoints/consistency")
            .wrap(auditor())
            .route(web::get().to(checkpoints::consistency)),
    )
    .service(
        web::resource("/v1/audit")
            .wrap(auditor())
            .route(web::get().to(audit::query)),
    )
    .service(
        web::resource("/v1/admin/rebuild")
            .wrap(admin())
            .route(web::post().to(admin::rebuild)),
    )
    .service(
        web::resource("/v1/admin/projections")
            .wrap(admin())
            .route(web::get().to(admin::projections)),
    );
}

fn unavailable(e: impl std::fmt::Display) -> Problem {
    tracing::error!(error = %e, "read model query failed");
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "READ_MODEL_UNAVAILABLE",
        "The read model is unavailable",
    )
}

/// The audit columns every event query reads, `payload` and `metadata` as
/// their exact stored text.
const EVENT_COLUMNS: &str = "event_id, context, aggregate_type, aggregate_id, sequence, \
     global_position, license_id, event_type, event_version, occurred_at, recorded_at, actor_kind, \
     actor_id, actor_via, command_id, correlation_id, causation_id, payload::text AS payload, \
     metadata::text AS metadata, prev_hash, hash";

/// One audit row: the event as the event store holds it, and its context.
struct EventRow {
    context: String,
    stored: StoredEvent,
}

/// The envelope of an audit row (the columns of `ENVELOPE_COLUMNS`).
pub(crate) fn envelope_of(r: &PgRow) -> Result<EventEnvelope<Box<RawValue>>, RowError> {
    let payload: String = r.try_get("payload")?;
    let sequence: i64 = r.try_get("sequence")?;
    let kind: &str = r.try_get("actor_kind")?;
    Ok(EventEnvelope {
        event_id: r.try_get("event_id")?,
        event_type: r.try_get("event_type")?,
        event_version: r.try_get("event_version")?,
        aggregate_type: r.try_get("aggregate_type")?,
        aggregate_id: r.try_get("aggregate_id")?,
        sequence: u64::try_from(sequence).unwrap_or_default(),
        global_position: r.try_get("global_position")?,
        occurred_at: r.try_get("occurred_at")?,
        recorded_at: r.try_get("recorded_at")?,
        command_id: r.try_get("command_id")?,
        correlation_id: r.try_get("correlation_id")?,
        causation_id: r.try_get("causation_id")?,
        actor: Actor {
            kind: serde_json::from_value::<ActorKind>(serde_json::Value::String(kind.into()))?,
            id: r.try_get("actor_id")?,
            via: r.try_get("actor_via")?,
        },
        payload: RawValue::from_string(payload)?,
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

/// What an as-of fold reads: the envelope without the metadata text.
const ENVELOPE_COLUMNS: &str = "event_id, context, aggregate_type, aggregate_id, sequence, \
     global_position, event_type, event_version, occurred_at, recorded_at, actor_kind, actor_id, actor_via, \
     command_id, correlation_id, causation_id, payload::text AS payload, prev_hash, hash";

impl EventRow {
    fn from_row(r: &PgRow) -> Result<Self, RowError> {
        let prev_hash: &str = r.try_get("prev_hash")?;
        let hash: &str = r.try_get("hash")?;
        Ok(Self {
            context: r.try_get("context")?,
            stored: StoredEvent {
                global_position: r.try_get("global_position")?,
                event_id: r.try_get("event_id")?,
                aggregate_type: r.try_get("aggregate_type")?,
                aggregate_id: r.try_get("aggregate_id")?,
                sequence: r.try_get("sequence")?,
                event_type: r.try_get("event_type")?,
                event_version: r.try_get("event_version")?,
                payload: r.try_get("payload")?,
                metadata: r.try_get("metadata")?,
                recorded_at: r.try_get("recorded_at")?,
                prev_hash: hex::decode(prev_hash)?,
                hash: hex::decode(hash)?,
            },
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum RowError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Hex(#[from] hex::FromHexError),
}
