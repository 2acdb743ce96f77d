//! Read API of the projector.

use actix_web::http::StatusCode;
use actix_web::middleware::from_fn;
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use service_kit::auth::require;
use service_kit::Problem;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use uuid::Uuid;

const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1_000;

pub fn routes(cfg: &mut web::ServiceConfig) {
    let auditor = || from_fn(require(AUDITOR));
    cfg.service(
        web::resource("/v1/licenses/{id}")
            .wrap(auditor())
            .route(web::get().to(get_license)),
    )
    .service(
        web::resource("/v1/audit")
            .wrap(auditor())
            .route(web::get().to(audit)),
    );
}

const AUDITOR: &str = "auditor";

fn unavailable(e: sqlx::Error) -> Problem {
    tracing::error!(error = %e, "read model query failed");
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "READ_MODEL_UNAVAILABLE",
        "The read model is unavailable",
    )
}

async fn get_license(
    pool: web::Data<PgPool>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    let state: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT state FROM license_state WHERE license_id = $1")
            .bind(*id)
            .fetch_optional(pool.get_ref())
            .await
            .map_err(unavailable)?;
    let state = state.ok_or_else(|| Problem::not_found("LICENSE_NOT_FOUND", "no such license"))?;
    Ok(HttpResponse::Ok().json(state))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    pub license_id: Option<Uuid>,
    pub actor: Option<String>,
    pub event_type: Option<String>,
    pub correlation_id: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// The last `event_id` of the previous page.
    pub cursor: Option<Uuid>,
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct AuditRecord {
    pub event_id: Uuid,
    pub context: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub license_id: Option<Uuid>,
    pub event_type: String,
    pub event_version: String,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub actor: serde_json::Value,
    pub command_id: Uuid,
    pub correlation_id: String,
    pub causation_id: Option<String>,
    pub payload: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Debug, Serialize)]
pub struct AuditPage {
    pub items: Vec<AuditRecord>,
    pub next_cursor: Option<Uuid>,
}

async fn audit(
    pool: web::Data<PgPool>,
    q: web::Query<AuditQuery>,
) -> Result<HttpResponse, Problem> {
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(
            Problem::unprocessable("INVALID_LIMIT", "limit must be 1-1000").with_field("limit"),
        );
    }
    let mut sql: QueryBuilder<'_, Postgres> = QueryBuilder::new(
        "SELECT event_id, context, aggregate_type, aggregate_id, sequence, license_id, event_type, \
         event_version, occurred_at, recorded_at, actor_kind, actor_id, command_id, correlation_id, \
         causation_id, payload, prev_hash, hash FROM audit_trail WHERE true",
    );
    if let Some(v) = q.license_id {
        sql.push(" AND license_id = ").push_bind(v);
    }
    if let Some(v) = &q.actor {
        sql.push(" AND actor_id = ").push_bind(v.clone());
    }
    if let Some(v) = &q.event_type {
        sql.push(" AND event_type = ").push_bind(v.clone());
    }
    if let Some(v) = &q.correlation_id {
        sql.push(" AND correlation_id = ").push_bind(v.clone());
    }
    if let Some(v) = q.from {
        sql.push(" AND recorded_at >= ").push_bind(v);
    }
    if let Some(v) = q.to {
        sql.push(" AND recorded_at < ").push_bind(v);
    }
    if let Some(v) = q.cursor {
        sql.push(" AND event_id > ").push_bind(v);
    }
    sql.push(" ORDER BY event_id LIMIT ").push_bind(limit);
    let rows = sql
        .build()
        .fetch_all(pool.get_ref())
        .await
        .map_err(unavailable)?;
    let items = rows
        .iter()
        .map(|r| {
            Ok(AuditRecord {
                event_id: r.try_get("event_id")?,
                context: r.try_get("context")?,
                aggregate_type: r.try_get("aggregate_type")?,
                aggregate_id: r.try_get("aggregate_id")?,
                sequence: r.try_get("sequence")?,
                license_id: r.try_get("license_id")?,
                event_type: r.try_get("event_type")?,
                event_version: r.try_get("event_version")?,
                occurred_at: r.try_get("occurred_at")?,
                recorded_at: r.try_get("recorded_at")?,
                actor: serde_json::json!({
                    "kind": r.try_get::<String, _>("actor_kind")?,
                    "id": r.try_get::<String, _>("actor_id")?,
                }),
                command_id: r.try_get("command_id")?,
                correlation_id: r.try_get("correlation_id")?,
                causation_id: r.try_get("causation_id")?,
                payload: r.try_get("payload")?,
                prev_hash: r.try_get("prev_hash")?,
                hash: r.try_get("hash")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(unavailable)?;
    let next_cursor = if items.len() as i64 == limit {
        items.last().map(|i| i.event_id)
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(AuditPage { items, next_cursor }))
}
