use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Who caused a change: recorded on every event, shown in the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    pub kind: ActorKind,
    pub id: String,
    /// The Kafka topic a command came through (`kafka:<topic>`), recorded
    /// by the receiving service whatever the envelope claims: a command's
    /// authority is who may write that topic. Absent for HTTP callers,
    /// whose `id` is an authenticated API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A caller authenticated by an API key (id = the key's public SecretId).
    ApiKey,
    /// Another internal service sending commands over Kafka.
    Service,
    /// Time-driven transitions (expiry, reclaim).
    Scheduler,
    /// The system itself (bootstrap, migrations).
    System,
    /// An installed product, authenticated by its license key or by an
    /// activation file of its license (id = the license id).
    License,
}

impl Actor {
    pub fn new(kind: ActorKind, id: impl Into<String>) -> Self {
        Self {
            kind,
            id: id.into(),
            via: None,
        }
    }

    /// This actor as claimed by a command that arrived on `topic`.
    pub fn via_topic(mut self, topic: &str) -> Self {
        self.via = Some(format!("kafka:{topic}"));
        self
    }
}

/// The part of an event's envelope that the command handler fixes; stored in
/// the event store's `metadata` column and covered by the hash chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventMetadata {
    pub occurred_at: DateTime<Utc>,
    pub command_id: Uuid,
    pub correlation_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    pub actor: Actor,
}

/// An event as published on `<prefix>.<context>.events`; also the audit record.
/// `P` is the payload: a parsed value for most readers, the exact stored text
/// (`Box<RawValue>`) for the relay and the projector, because the hash chain
/// covers that text byte for byte and a re-serialised value would reorder keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventEnvelope<P = Value> {
    pub event_id: Uuid,
    pub event_type: String,
    pub event_version: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: u64,
    pub global_position: i64,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub command_id: Uuid,
    pub correlation_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    pub actor: Actor,
    pub payload: P,
    /// Hex SHA-256 of the same aggregate's previous event (zeros for the first).
    pub prev_hash: String,
    /// Hex SHA-256 over `prev_hash` and the event's canonical bytes.
    pub hash: String,
}

impl<P> EventEnvelope<P> {
    /// The same envelope around another payload.
    pub fn with_payload<Q>(self, payload: Q) -> EventEnvelope<Q> {
        EventEnvelope {
            event_id: self.event_id,
            event_type: self.event_type,
            event_version: self.event_version,
            aggregate_type: self.aggregate_type,
            aggregate_id: self.aggregate_id,
            sequence: self.sequence,
            global_position: self.global_position,
            occurred_at: self.occurred_at,
            recorded_at: self.recorded_at,
            command_id: self.command_id,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            actor: self.actor,
            payload,
            prev_hash: self.prev_hash,
            hash: self.hash,
        }
    }
}

/// A command as sent on `<prefix>.<context>.commands`. `command_id` is the
/// idempotency key: a duplicate returns the first outcome and appends nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandEnvelope {
    pub command_id: Uuid,
    pub command_type: String,
    pub aggregate_id: String,
    pub issued_at: DateTime<Utc>,
    pub actor: Actor,
    pub correlation_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    pub payload: Value,
}

/// A correlation or causation id: a UUID, or 1–64 characters of
/// `[A-Za-z0-9._-]`. Ids are echoed in headers, written to logs and stored
/// in every event's metadata, so they never carry arbitrary text.
pub fn is_trace_id(raw: &str) -> bool {
    let plain = !raw.is_empty()
        && raw.len() <= 64
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    plain || Uuid::parse_str(raw).is_ok()
}

fn printable(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_graphic())
}

impl CommandEnvelope {
    /// The envelope's own fields — which a sender over Kafka chooses and
    /// which end up in every resulting event's metadata — bounded and
    /// printable; the field that is not, on error.
    pub fn check(&self) -> Result<(), &'static str> {
        if !printable(&self.command_type, 64) {
            return Err("command_type");
        }
        if !printable(&self.aggregate_id, 200) {
            return Err("aggregate_id");
        }
        if !is_trace_id(&self.correlation_id) {
            return Err("correlation_id");
        }
        if self
            .causation_id
            .as_deref()
            .is_some_and(|c| !is_trace_id(c))
        {
            return Err("causation_id");
        }
        if !printable(&self.actor.id, 128) {
            return Err("actor.id");
        }
        if self
            .actor
            .via
            .as_deref()
            .is_some_and(|v| !printable(v, 300))
        {
            return Err("actor.via");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeStatus {
    Accepted,
    Rejected,
}

/// What kind of refusal a code is, declared with the error that has it
/// (`eventstore::CodedError::kind`), stored with the outcome and published
/// with it: the HTTP status of a refusal follows from its kind alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The command is malformed, or names what the catalog does not hold.
    Invalid,
    /// The command's target does not exist.
    NotFound,
    /// The target's state refuses the command now.
    Conflict,
    /// The sender may not send this command.
    Forbidden,
    /// The command needs a charge its sender did not accept.
    PaymentRequired,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::Forbidden => "forbidden",
            Self::PaymentRequired => "payment_required",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Invalid,
            Self::NotFound,
            Self::Conflict,
            Self::Forbidden,
            Self::PaymentRequired,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutcomeError {
    pub code: String,
    pub message: String,
    /// The payload field the rejection is about, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub field: Option<String>,
    /// Absent only from outcomes stored before kinds were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = ErrorKind)]
    pub kind: Option<ErrorKind>,
}

/// The answer to a command, published on `<prefix>.command-outcomes` keyed by
/// command id, and returned again for any duplicate of the command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandOutcome {
    pub command_id: Uuid,
    pub status: OutcomeStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = OutcomeError)]
    pub error: Option<OutcomeError>,
    pub aggregate_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = u64)]
    pub sequence: Option<u64>,
    /// What the HTTP answer to the same command carries that a sender
    /// needs next (an activation's id, say), never a secret or a bearer
    /// credential: those are read over HTTP by what this names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub result: Option<serde_json::Value>,
}
