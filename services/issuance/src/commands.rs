//! The one command handler behind both the HTTP API and the Kafka command
//! topic: a command envelope in, the stored outcome and resulting state out.

use contracts::issuance::{IssueLicense, ISSUE_LICENSE};
use contracts::CommandEnvelope;
use eventstore::{request_digest, CommandContext, Executed, Repository, StoreError};
use uuid::Uuid;

use crate::domain::{IssuanceServices, License, LicenseCommand};

pub struct Issuance {
    pub licenses: Repository<License>,
}

impl Issuance {
    pub fn new(pool: sqlx::PgPool, services: IssuanceServices) -> Self {
        Self {
            licenses: Repository::new(pool, services),
        }
    }

    pub async fn dispatch(&self, env: &CommandEnvelope) -> Result<Executed<License>, StoreError> {
        let mut ctx = CommandContext {
            command_id: env.command_id,
            command_type: env.command_type.clone(),
            correlation_id: env.correlation_id.clone(),
            causation_id: env.causation_id.clone(),
            actor: env.actor.clone(),
            occurred_at: env.issued_at,
            request_digest: request_digest(&env.command_type, &env.payload),
        };
        match env.command_type.as_str() {
            ISSUE_LICENSE => {
                let spec = match serde_json::from_value::<IssueLicense>(env.payload.clone()) {
                    Ok(spec) => spec,
                    Err(e) => {
                        return self
                            .refuse(env, &ctx, "INVALID_PAYLOAD", &e.to_string())
                            .await
                    }
                };
                let Ok(license_id) = Uuid::parse_str(&env.aggregate_id) else {
                    return self
                        .refuse(
                            env,
                            &ctx,
                            "INVALID_AGGREGATE_ID",
                            "aggregate_id must be a UUID",
                        )
                        .await;
                };
                ctx.request_digest = request_digest(ISSUE_LICENSE, &spec);
                self.licenses
                    .execute(
                        &env.aggregate_id,
                        LicenseCommand::Issue { license_id, spec },
                        &ctx,
                    )
                    .await
            }
            other => {
                let message = format!("unknown command type {other:?}");
                self.refuse(env, &ctx, "UNKNOWN_COMMAND", &message).await
            }
        }
    }

    /// A command that never reaches the aggregate still gets a stored outcome,
    /// so a duplicate of it is answered the same way.
    async fn refuse(
        &self,
        env: &CommandEnvelope,
        ctx: &CommandContext,
        code: &str,
        message: &str,
    ) -> Result<Executed<License>, StoreError> {
        let outcome = self
            .licenses
            .reject(&env.aggregate_id, ctx, code, message, None)
            .await?;
        Ok(Executed {
            outcome,
            aggregate: License::default(),
            replayed: false,
        })
    }
}
