//! A service's command topics (`<prefix>.<context>.commands`, and where a
//! context has one its admin topic): each envelope is checked, handed to
//! the service's one dispatcher — the same use cases its HTTP handlers
//! call — and its outcome published on `<prefix>.command-outcomes`, keyed
//! by command id. A command's authority is the topic it came through (only
//! administrators write an admin topic), and the stored actor records that
//! topic beside the actor the envelope claims.

use std::sync::Arc;

use async_trait::async_trait;
use bus::{HandleError, Incoming, TxHandler};
use contracts::{CommandEnvelope, CommandOutcome, ErrorKind, OutcomeError, OutcomeStatus};
use eventstore::{CommandContext, Refused, StoreError, DIGEST_MISMATCH_CODE};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::command::Failure;

/// The answer to a command from Kafka: its outcome, and whether that
/// outcome is the one stored for the command id (an aggregate's verdict,
/// answered the same to every duplicate) or only this message's answer (a
/// refusal before any aggregate, as over HTTP, evaluated again on a retry;
/// or an answer to a message that was not the command its id names).
#[derive(Debug, Clone)]
pub struct Answer {
    pub outcome: CommandOutcome,
    pub stored: bool,
}

/// Headers of every published outcome: which service answered, and
/// whether the outcome is the command's stored one. A reader that acts on
/// another service's verdict (activation on issuance's, for trials) takes
/// only that service's stored outcomes: whoever may send a command with
/// some id can make any service answer under that id.
pub const SOURCE_HEADER: &str = "source";
pub const STORED_HEADER: &str = "stored";

/// A service's command handler for envelopes from Kafka.
#[async_trait]
pub trait Dispatch: Send + Sync + 'static {
    /// The answer to a checked envelope; `admin`: it came through a topic
    /// only administrators write.
    async fn dispatch(&self, env: &CommandEnvelope, admin: bool) -> Result<Answer, StoreError>;
}

pub struct CommandTopic<D> {
    /// The answering service, named in each outcome's `source` header.
    pub service: String,
    pub dispatcher: Arc<D>,
    pub producer: bus::Producer,
    pub outcomes_topic: String,
    /// The topic whose commands carry the admin authority, if the service
    /// has one.
    pub admin_topic: Option<String>,
}

/// A refusal answered without being stored.
fn answer_only(command_id: Uuid, aggregate_id: String, refused: Refused) -> Answer {
    let outcome = CommandOutcome {
        command_id,
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
    };
    Answer {
        outcome,
        stored: false,
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
            let answer = answer_only(env.command_id, aggregate_id, refused);
            return self.answer(&env, &answer).await;
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
            let answer = answer_only(env.command_id, env.aggregate_id.clone(), refused);
            return self.answer(&env, &answer).await;
        }
        env.actor = env.actor.via_topic(&msg.topic);
        let admin = self.admin_topic.as_deref() == Some(msg.topic.as_str());
        let answer = match self.dispatcher.dispatch(&env, admin).await {
            Ok(answer) => answer,
            // Not stored: the first command with this id keeps its outcome.
            Err(StoreError::DigestMismatch) => {
                let refused = Refused::new(
                    DIGEST_MISMATCH_CODE,
                    ErrorKind::Invalid,
                    "command id reused with a different command",
                )
                .with_field("command_id");
                answer_only(env.command_id, env.aggregate_id.clone(), refused)
            }
            // Data the database refuses fails the same way every time.
            Err(StoreError::Database(e)) => return Err(HandleError::from(e)),
            Err(e) => return Err(HandleError::Transient(e.to_string())),
        };
        self.answer(&env, &answer).await
    }
}

impl<D> CommandTopic<D> {
    async fn answer(&self, env: &CommandEnvelope, answer: &Answer) -> Result<(), HandleError> {
        let correlation = if contracts::envelope::is_trace_id(&env.correlation_id) {
            env.correlation_id.as_str()
        } else {
            ""
        };
        bus::publish_json(
            &self.producer,
            &self.outcomes_topic,
            &env.command_id.to_string(),
            &answer.outcome,
            &[
                ("correlation_id", correlation),
                (SOURCE_HEADER, self.service.as_str()),
                (STORED_HEADER, if answer.stored { "true" } else { "false" }),
            ],
        )
        .await
        .map_err(|e| HandleError::Transient(e.to_string()))
    }
}

/// Answers a use case run for a command from Kafka: the outcome the
/// repository stored for the command id, with `result` from the use case's
/// answer; a refusal before any aggregate (a bad payload, a license not
/// replicated yet) is answered without being stored, as over HTTP, so a
/// retry is evaluated again.
pub async fn settle<A, T>(
    repository: &eventstore::Repository<A>,
    ctx: &CommandContext,
    aggregate_id: &str,
    answer: Result<T, Failure>,
    result: impl FnOnce(&T) -> Option<serde_json::Value>,
) -> Result<Answer, StoreError>
where
    A: cqrs_es::Aggregate + eventstore::Folding,
    A::Command: Clone,
    A::Error: eventstore::CodedError,
    A::Event: eventstore::Refusal,
{
    match answer {
        Ok(value) => {
            let stored = repository.outcome_of(ctx).await?;
            let found = stored.is_some();
            // A use case that appended nothing stored no outcome either.
            let mut outcome = stored.unwrap_or_else(|| CommandOutcome {
                command_id: ctx.command_id,
                status: OutcomeStatus::Accepted,
                error: None,
                aggregate_id: aggregate_id.to_string(),
                sequence: None,
                result: None,
            });
            outcome.result = result(&value);
            Ok(Answer {
                outcome,
                stored: found,
            })
        }
        Err(Failure::Refused(refused)) => Ok(answer_only(
            ctx.command_id,
            aggregate_id.to_string(),
            refused,
        )),
        // A refusal of this command, stored under its id.
        Err(Failure::Rejected(outcome)) if outcome.command_id == ctx.command_id => Ok(Answer {
            outcome: *outcome,
            stored: true,
        }),
        // A refusal of a step the use case ran under an id of its own (an
        // upstream pull's imports): this command's answer, not stored.
        Err(Failure::Rejected(step)) => {
            let mut outcome = *step;
            outcome.command_id = ctx.command_id;
            outcome.aggregate_id = aggregate_id.to_string();
            outcome.sequence = None;
            Ok(Answer {
                outcome,
                stored: false,
            })
        }
        Err(Failure::Store(e)) => Err(e),
        Err(Failure::Internal(what)) => Err(StoreError::Corrupt(what)),
    }
}
