//! What every command handler takes from an HTTP request (the command id
//! from `Idempotency-Key`, the caller's API key, the correlation id), the
//! one error type of the use cases beneath both channels ([`Failure`]),
//! and how a refusal or a store failure is answered over HTTP.

use actix_web::http::StatusCode;
use chrono::Utc;
use contracts::{CommandEnvelope, CommandOutcome, ErrorKind, OutcomeStatus};
use eventstore::{request_digest, CommandContext, Refused, StoreError, DIGEST_MISMATCH_CODE};
use serde::Serialize;
use uuid::Uuid;

use crate::auth::Principal;
use crate::{CorrelationId, Problem};

/// What a use case answers instead of its result, whichever channel ran
/// it. Over HTTP each is a problem with its kind's status; over Kafka an
/// aggregate's refusal is the command's stored outcome and a refusal made
/// before any aggregate an answer that is not stored (see
/// `command_topic::settle`).
#[derive(Debug)]
pub enum Failure {
    /// Refused before any aggregate (an unknown license, a fingerprint too
    /// small): nothing stored yet.
    Refused(Refused),
    /// The aggregate refused the command: its outcome is stored.
    Rejected(Box<CommandOutcome>),
    Store(StoreError),
    /// Something that should not happen (signing failed, an event the
    /// command just stored is missing); logged where it happened.
    Internal(String),
}

impl Failure {
    pub fn refused(code: &'static str, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::Refused(Refused::new(code, kind, message))
    }

    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::refused(code, ErrorKind::Invalid, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::refused(code, ErrorKind::NotFound, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::refused(code, ErrorKind::Conflict, message)
    }

    /// The same failure, about `field` (when it is a refusal).
    pub fn with_field(self, field: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        match self {
            Self::Refused(r) => Self::Refused(r.with_field(field)),
            other => other,
        }
    }

    /// Something that should not happen: logged here, answered 500 over
    /// HTTP without its text, retried over Kafka.
    pub fn internal(what: &str) -> Self {
        tracing::error!(what, "internal failure");
        Self::Internal(what.to_string())
    }

    /// The refusal's code.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Refused(r) => Some(r.code),
            Self::Rejected(o) => o.error.as_ref().map(|e| e.code.as_str()),
            Self::Store(_) | Self::Internal(_) => None,
        }
    }
}

impl From<Refused> for Failure {
    fn from(r: Refused) -> Self {
        Self::Refused(r)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(StoreError::Database(e))
    }
}

impl From<Refused> for Problem {
    fn from(r: Refused) -> Self {
        Failure::Refused(r).into()
    }
}

impl From<Failure> for Problem {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Refused(r) => {
                let status = status_of(Some(r.kind));
                let p = Problem::new(status, r.code, status.canonical_reason().unwrap_or("Error"))
                    .with_detail(r.message);
                match r.field {
                    Some(field) => p.with_field(field.into_owned()),
                    None => p,
                }
            }
            Failure::Rejected(outcome) => rejection(&outcome).unwrap_or_else(Problem::internal),
            Failure::Store(e) => store_problem(e),
            Failure::Internal(_) => Problem::internal(),
        }
    }
}

/// The command context of an envelope from Kafka; its request digest is
/// the one of its raw payload until the handler has read the typed payload
/// (which digests as the same request over HTTP does).
pub fn context(env: &CommandEnvelope) -> CommandContext {
    CommandContext {
        command_id: env.command_id,
        command_type: env.command_type.clone(),
        correlation_id: env.correlation_id.clone(),
        causation_id: env.causation_id.clone(),
        actor: env.actor.clone(),
        // The sender's `issued_at` is its own claim, unbounded: an event
        // happens when this service records it.
        occurred_at: Utc::now(),
        request_digest: request_digest(&env.command_type, &env.payload),
    }
}

/// An envelope's aggregate id as the UUID it must be (`names` says whose).
pub fn aggregate_uuid(env: &CommandEnvelope, names: &str) -> Result<Uuid, Failure> {
    Uuid::parse_str(&env.aggregate_id).map_err(|_| {
        Failure::invalid(
            "INVALID_AGGREGATE_ID",
            format!("aggregate_id must be {names} (a UUID)"),
        )
        .with_field("aggregate_id")
    })
}

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
            bus::outage::error("store failure", &other);
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
