//! HTTP API of issuance. Handlers turn requests into command envelopes and
//! call the same handler as the Kafka consumer.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use contracts::issuance::{IssueLicense, LicenseKind, ISSUE_LICENSE};
use contracts::{Actor, ActorKind, CommandEnvelope, CommandOutcome, OutcomeStatus};
use eventstore::{Executed, StoreError, DIGEST_MISMATCH_CODE};
use serde::Serialize;
use service_kit::{CorrelationId, Json, Problem};
use uuid::Uuid;

use crate::commands::Issuance;
use crate::domain::{License, LicenseStatus};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/licenses", web::post().to(issue_license))
        .route("/v1/licenses/{id}", web::get().to(get_license))
        .route("/v1/commands/{id}", web::get().to(get_outcome));
}

/// A license as answered by issuance.
#[derive(Debug, Serialize)]
pub struct LicenseBody {
    pub id: Uuid,
    pub product: String,
    pub edition: Option<String>,
    pub customer: String,
    pub kind: LicenseKind,
    pub features: Vec<String>,
    pub status: LicenseStatus,
    pub issued_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub version: i64,
}

impl LicenseBody {
    fn from(license: &License, version: i64) -> Option<Self> {
        let s = license.state.as_ref()?;
        Some(Self {
            id: s.id,
            product: s.product.clone(),
            edition: s.edition.clone(),
            customer: s.customer.clone(),
            kind: s.kind,
            features: s.features.clone(),
            status: s.status,
            issued_at: s.issued_at,
            expires_at: s.expires_at,
            version,
        })
    }
}

/// Until API keys exist, callers name themselves; the name is audited.
fn actor(req: &HttpRequest) -> Result<Actor, Problem> {
    let Some(value) = req.headers().get("x-actor") else {
        return Ok(Actor::new(ActorKind::Service, "anonymous"));
    };
    let id = value.to_str().unwrap_or_default();
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b));
    if !ok {
        return Err(Problem::bad_request(
            "INVALID_ACTOR",
            "X-Actor must be 1-64 of A-Z a-z 0-9 . _ @ -",
        )
        .with_field("X-Actor"));
    }
    Ok(Actor::new(ActorKind::Service, id))
}

fn idempotency_key(req: &HttpRequest) -> Result<Uuid, Problem> {
    match req.headers().get("idempotency-key") {
        None => Ok(Uuid::now_v7()),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| Uuid::parse_str(s.trim()).ok())
            .ok_or_else(|| {
                Problem::bad_request("INVALID_IDEMPOTENCY_KEY", "Idempotency-Key must be a UUID")
                    .with_field("Idempotency-Key")
            }),
    }
}

pub fn store_problem(e: StoreError) -> Problem {
    match e {
        StoreError::DigestMismatch => Problem::conflict(
            DIGEST_MISMATCH_CODE,
            "this Idempotency-Key was used for a different request",
        ),
        StoreError::Conflict(_) => Problem::conflict(
            "CONCURRENT_MODIFICATION",
            "the license changed concurrently; retry",
        ),
        other => {
            tracing::error!(error = %other, "store failure");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "STORE_UNAVAILABLE",
                "The event store is unavailable",
            )
        }
    }
}

fn rejection(outcome: &CommandOutcome) -> Problem {
    let (code, message, field) = outcome
        .error
        .as_ref()
        .map(|e| (e.code.clone(), e.message.clone(), e.field.clone()))
        .unwrap_or_default();
    let status = if code == "LICENSE_EXISTS" {
        StatusCode::CONFLICT
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let p = Problem::new(status, code, "Command rejected").with_detail(message);
    match field {
        Some(f) => p.with_field(f),
        None => p,
    }
}

async fn issue_license(
    req: HttpRequest,
    issuance: web::Data<Issuance>,
    correlation: CorrelationId,
    Json(spec): Json<IssueLicense>,
) -> Result<HttpResponse, Problem> {
    let envelope = CommandEnvelope {
        command_id: idempotency_key(&req)?,
        command_type: ISSUE_LICENSE.to_string(),
        aggregate_id: Uuid::now_v7().to_string(),
        issued_at: Utc::now(),
        actor: actor(&req)?,
        correlation_id: correlation.0,
        causation_id: None,
        payload: serde_json::to_value(&spec).map_err(|_| Problem::internal())?,
    };
    let Executed {
        outcome,
        aggregate,
        replayed,
    } = issuance.dispatch(&envelope).await.map_err(store_problem)?;
    if outcome.status == OutcomeStatus::Rejected {
        return Err(rejection(&outcome));
    }
    let version = outcome
        .sequence
        .and_then(|s| i64::try_from(s).ok())
        .unwrap_or(0);
    let body = LicenseBody::from(&aggregate, version).ok_or_else(Problem::internal)?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/v1/licenses/{}", body.id)))
        .insert_header((
            "Idempotent-Replayed",
            if replayed { "true" } else { "false" },
        ))
        .insert_header(("X-Command-Id", outcome.command_id.to_string()))
        .json(body))
}

async fn get_license(
    issuance: web::Data<Issuance>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    let (license, version) = issuance
        .licenses
        .load(&id.to_string())
        .await
        .map_err(store_problem)?;
    let body = LicenseBody::from(&license, version)
        .ok_or_else(|| Problem::not_found("LICENSE_NOT_FOUND", "no such license"))?;
    Ok(HttpResponse::Ok().json(body))
}

async fn get_outcome(
    issuance: web::Data<Issuance>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, Problem> {
    let outcome = issuance
        .licenses
        .outcome(*id)
        .await
        .map_err(store_problem)?
        .ok_or_else(|| Problem::not_found("COMMAND_NOT_FOUND", "no such command"))?;
    Ok(HttpResponse::Ok().json(outcome))
}
