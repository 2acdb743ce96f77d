//! A service's command topics (`<prefix>.<context>.commands`, and for
//! issuance its admin topic): each envelope is checked, handed to the
//! service's one dispatcher — the same use cases its HTTP handlers call —
//! and its outcome published on `<prefix>.command-outcomes`, keyed by
//! command id. A command's authority is the topic it came through (only
//! administrators write an admin topic), and the stored actor records that
//! topic beside the actor the envelope claims.

use std::sync::Arc;

use async_trait::async_trait;
use bus::{HandleError, Incoming, TxHandler};
use contracts::{CommandEnvelope, CommandOutcome, ErrorKind, OutcomeError, OutcomeStatus};
use eventstore::{Refused, StoreError, DIGEST_MISMATCH_CODE};
use rdkafka::producer::FutureProducer;
use sqlx::PgConnection;

/// A service's command handler for envelopes from Kafka.
#[async_trait]
pub trait Dispatch: Send + Sync + 'static {
    /// The outcome of a checked envelope (stored, so that a duplicate is
    /// answered the same way); `admin`: it came through a topic only
    /// administrators write.
    async fn dispatch(
        &self,
        env: &CommandEnvelope,
        admin: bool,
    ) -> Result<CommandOutcome, StoreError>;
}

pub struct CommandTopic<D> {
    pub dispatcher: Arc<D>,
    pub producer: FutureProducer,
    pub outcomes_topic: String,
    /// The topic whose commands carry the admin authority, if the service
    /// has one.
    pub admin_topic: Option<String>,
}

/// An answer that is published but not stored: the message was not the
/// command its id names (see `contracts::envelope::UNSTORED_ANSWERS`).
fn unstored(env: &CommandEnvelope, aggregate_id: String, refused: Refused) -> CommandOutcome {
    CommandOutcome {
        command_id: env.command_id,
        status: OutcomeStatus::Rejected,
        error: Some(OutcomeError {
            code: refused.code.into(),
            message: refused.message,
            field: refused.field.map(|f| f.into_owned()),
            kind: Some(refused.kind),
        }),
        aggregate_id,
        sequence: None,
        result: None,
    }
}

#[async_trait]
impl<D: Dispatch> TxHandler for CommandTopic<D> {
    async fn handle(&self, _tx: &mut PgConnection, msg: &Incoming) -> Result<(), HandleError> {
        let mut env: CommandEnvelope = msg.json("a command envelope")?;
        if let Err(field) = env.check() {
            // Answered, not stored: nothing of it may reach an event.
            let aggregate_id = env
                .aggregate_id
                .chars()
                .filter(|c| !c.is_control())
                .take(200)
                .collect();
            let refused = Refused::new(
                "INVALID_ENVELOPE",
                ErrorKind::Invalid,
                format!("{field} is missing, too long or not printable"),
            )
            .with_field(field);
            let outcome = unstored(&env, aggregate_id, refused);
            return self.answer(&env, &outcome).await;
        }
        // As over HTTP: no control character in any string of the payload,
        // whatever its type (PostgreSQL cannot even store a NUL).
        if let Some(field) = contracts::text::control_in_value(&env.payload) {
            let field = if field.is_empty() {
                "payload".to_string()
            } else {
                format!("payload.{field}")
            };
            let refused = Refused::new(
                "INVALID_FIELD",
                ErrorKind::Invalid,
                "must not contain control characters",
            )
            .with_field(field);
            let outcome = unstored(&env, env.aggregate_id.clone(), refused);
            return self.answer(&env, &outcome).await;
        }
        env.actor = env.actor.via_topic(&msg.topic);
        let admin = self.admin_topic.as_deref() == Some(msg.topic.as_str());
        let outcome = match self.dispatcher.dispatch(&env, admin).await {
            Ok(outcome) => outcome,
            // Not stored: the first command with this id keeps its outcome.
            Err(StoreError::DigestMismatch) => {
                let refused = Refused::new(
                    DIGEST_MISMATCH_CODE,
                    ErrorKind::Invalid,
                    "command id reused with a different command",
                )
                .with_field("command_id");
                unstored(&env, env.aggregate_id.clone(), refused)
            }
            // Data the database refuses fails the same way every time.
            Err(StoreError::Database(e)) => return Err(HandleError::from(e)),
            Err(e) => return Err(HandleError::Transient(e.to_string())),
        };
        self.answer(&env, &outcome).await
    }
}

impl<D> CommandTopic<D> {
    async fn answer(
        &self,
        env: &CommandEnvelope,
        outcome: &CommandOutcome,
    ) -> Result<(), HandleError> {
        let correlation = if contracts::envelope::is_trace_id(&env.correlation_id) {
            env.correlation_id.as_str()
        } else {
            ""
        };
        bus::publish_json(
            &self.producer,
            &self.outcomes_topic,
            &env.command_id.to_string(),
            outcome,
            &[("correlation_id", correlation)],
        )
        .await
        .map_err(|e| HandleError::Transient(e.to_string()))
    }
}

/// Runs a use case for a command from Kafka and answers its outcome: the
/// one the repository stored for the command id, with `result` from the
/// use case's answer; a refusal before any aggregate (bad payload, unknown
/// license) is stored here as the command's outcome, so that a duplicate
/// is answered the same way.
pub async fn settle<A, T>(
    repository: &eventstore::Repository<A>,
    ctx: &eventstore::CommandContext,
    aggregate_id: &str,
    answer: Result<T, crate::command::Failure>,
    result: impl FnOnce(&T) -> Option<serde_json::Value>,
) -> Result<CommandOutcome, StoreError>
where
    A: cqrs_es::Aggregate,
    A::Command: Clone,
    A::Error: eventstore::CodedError,
    A::Event: eventstore::Refusal,
{
    match answer {
        Ok(value) => {
            let mut outcome = match repository.outcome(ctx.command_id).await? {
                Some(stored) => stored,
                // A use case that appended nothing (a read it answered):
                // nothing stored, nothing to replay.
                None => CommandOutcome {
                    command_id: ctx.command_id,
                    status: OutcomeStatus::Accepted,
                    error: None,
                    aggregate_id: aggregate_id.to_string(),
                    sequence: None,
                    result: None,
                },
            };
            outcome.result = result(&value);
            Ok(outcome)
        }
        Err(crate::command::Failure::Refused(refused)) => {
            repository.reject(aggregate_id, ctx, &refused).await
        }
        Err(crate::command::Failure::Rejected(outcome)) => Ok(*outcome),
        Err(crate::command::Failure::Store(e)) => Err(e),
    }
}
