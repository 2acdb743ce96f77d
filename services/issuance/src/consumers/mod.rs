//! Commands arriving on `<prefix>.issuance.commands` and
//! `<prefix>.issuance.admin-commands`: the same handler as the HTTP API;
//! every outcome is published on `<prefix>.command-outcomes`. A command's
//! authority is the topic it came through (only administrators write the
//! admin topic), and the stored actor records that topic beside the actor
//! the envelope claims.

use std::sync::Arc;

use async_trait::async_trait;
use bus::{HandleError, Incoming, TxHandler};
use contracts::{CommandEnvelope, CommandOutcome, ErrorKind, OutcomeError, OutcomeStatus};
use eventstore::{StoreError, DIGEST_MISMATCH_CODE};
use rdkafka::producer::FutureProducer;
use sqlx::PgConnection;

pub mod activations;

use crate::commands::{Authority, Issuance};

pub struct CommandConsumer {
    pub issuance: Arc<Issuance>,
    pub producer: FutureProducer,
    pub outcomes_topic: String,
    /// The topic whose commands carry the admin authority.
    pub admin_topic: String,
}

#[async_trait]
impl TxHandler for CommandConsumer {
    async fn handle(&self, _tx: &mut PgConnection, msg: &Incoming) -> Result<(), HandleError> {
        let mut env: CommandEnvelope = msg.json("a command envelope")?;
        if let Err(field) = env.check() {
            // Answered, not stored: nothing of it may reach an event.
            let outcome = CommandOutcome {
                command_id: env.command_id,
                status: OutcomeStatus::Rejected,
                error: Some(OutcomeError {
                    code: "INVALID_ENVELOPE".into(),
                    message: format!("{field} is missing, too long or not printable"),
                    field: Some(field.into()),
                    kind: Some(ErrorKind::Invalid),
                }),
                aggregate_id: env
                    .aggregate_id
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(200)
                    .collect(),
                sequence: None,
            };
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
            let outcome = CommandOutcome {
                command_id: env.command_id,
                status: OutcomeStatus::Rejected,
                error: Some(OutcomeError {
                    code: "INVALID_FIELD".into(),
                    message: "must not contain control characters".into(),
                    field: Some(field),
                    kind: Some(ErrorKind::Invalid),
                }),
                aggregate_id: env.aggregate_id.clone(),
                sequence: None,
            };
            return self.answer(&env, &outcome).await;
        }
        env.actor = env.actor.via_topic(&msg.topic);
        let authority = if msg.topic == self.admin_topic {
            Authority::Admin
        } else {
            Authority::Issuer
        };
        let outcome = match self.issuance.dispatch_as(&env, authority).await {
            Ok(done) => done.outcome().clone(),
            // Not stored: the first command with this id keeps its outcome.
            Err(StoreError::DigestMismatch) => CommandOutcome {
                command_id: env.command_id,
                status: OutcomeStatus::Rejected,
                error: Some(OutcomeError {
                    code: DIGEST_MISMATCH_CODE.into(),
                    message: "command id reused with a different command".into(),
                    field: Some("command_id".into()),
                    kind: Some(ErrorKind::Invalid),
                }),
                aggregate_id: env.aggregate_id.clone(),
                sequence: None,
            },
            // Data the database refuses fails the same way every time.
            Err(StoreError::Database(e)) => return Err(HandleError::from(e)),
            Err(e) => return Err(HandleError::Transient(e.to_string())),
        };
        self.answer(&env, &outcome).await
    }
}

impl CommandConsumer {
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
