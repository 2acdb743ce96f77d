//! What every command handler takes from an HTTP request (the command id
//! from `Idempotency-Key`, the caller's API key, the correlation id) and how
//! a store failure is answered.

use actix_web::http::StatusCode;
use chrono::Utc;
use contracts::{CommandEnvelope, CommandOutcome, ErrorKind, OutcomeStatus};
use eventstore::{request_digest, CommandContext, StoreError, DIGEST_MISMATCH_CODE};
use serde::Serialize;
use uuid::Uuid;

use crate::auth::Principal;
use crate::{CorrelationId, Problem};

pub fn store_problem(e: StoreError) -> Problem {
    match e {
        StoreError::DigestMismatch => Problem::unprocessable(
            DIGEST_MISMATCH_CODE,
            "this Idempotency-Key was used for a different request (another command, \
             target or payload)",
        )
        .with_field("Idempotency-Key"),
        StoreError::Conflict(_) => Problem::conflict(
            "CONCURRENT_MODIFICATION",
            "the aggregate changed concurrently; retry",
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

/// The HTTP status of every refusal of its kind: the one place a refusal
/// becomes a status. (Refusals stored before kinds were recorded had
/// theirs filled in by the migration that added them; a refusal without
/// one would be a conflict.)
pub fn status_of(kind: Option<ErrorKind>) -> StatusCode {
    match kind {
        Some(ErrorKind::Invalid) => StatusCode::UNPROCESSABLE_ENTITY,
        Some(ErrorKind::NotFound) => StatusCode::NOT_FOUND,
        Some(ErrorKind::Forbidden) => StatusCode::FORBIDDEN,
        Some(ErrorKind::PaymentRequired) => StatusCode::PAYMENT_REQUIRED,
        Some(ErrorKind::Conflict) | None => StatusCode::CONFLICT,
    }
}

/// The problem of a refused command: its stored code, message and field,
/// with the status of its kind. None when the command was accepted.
pub fn rejection(outcome: &CommandOutcome) -> Option<Problem> {
    if outcome.status != OutcomeStatus::Rejected {
        return None;
    }
    let (code, message, field, kind) = outcome
        .error
        .as_ref()
        .map(|e| (e.code.clone(), e.message.clone(), e.field.clone(), e.kind))
        .unwrap_or_else(|| ("REJECTED".into(), String::new(), None, None));
    let status = status_of(kind);
    let p = Problem::new(status, code, "Command rejected").with_detail(message);
    Some(match field {
        Some(f) => p.with_field(f),
        None => p,
    })
}

pub fn idempotency_key(req: &actix_web::HttpRequest) -> Result<Uuid, Problem> {
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

/// What every command handler needs from the request.
pub struct Caller {
    pub command_id: Uuid,
    pub principal: Principal,
    pub correlation: CorrelationId,
}

impl actix_web::FromRequest for Caller {
    type Error = Problem;
    type Future = futures::future::LocalBoxFuture<'static, Result<Self, Problem>>;

    fn from_request(
        req: &actix_web::HttpRequest,
        payload: &mut actix_web::dev::Payload,
    ) -> Self::Future {
        let command_id = idempotency_key(req);
        let principal = Principal::from_request(req, payload);
        let correlation = CorrelationId::from_request(req, payload);
        Box::pin(async move {
            Ok(Self {
                command_id: command_id?,
                principal: principal.await?,
                correlation: correlation.await.map_err(|_| Problem::internal())?,
            })
        })
    }
}

impl Caller {
    pub fn envelope<P: Serialize>(
        &self,
        command_type: &str,
        aggregate_id: String,
        payload: &P,
    ) -> Result<CommandEnvelope, Problem> {
        Ok(CommandEnvelope {
            command_id: self.command_id,
            command_type: command_type.to_string(),
            aggregate_id,
            issued_at: Utc::now(),
            actor: self.principal.actor(),
            correlation_id: self.correlation.0.clone(),
            causation_id: None,
            payload: serde_json::to_value(payload).map_err(|_| Problem::internal())?,
        })
    }

    pub fn context<P: Serialize>(&self, command_type: &str, payload: &P) -> CommandContext {
        CommandContext {
            command_id: self.command_id,
            command_type: command_type.to_string(),
            correlation_id: self.correlation.0.clone(),
            causation_id: None,
            actor: self.principal.actor(),
            occurred_at: Utc::now(),
            request_digest: request_digest(command_type, payload),
        }
    }
}
