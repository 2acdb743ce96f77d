//! Domain binding's commands from Kafka: the use cases of its HTTP routes,
//! each answered as its outcome on `command-outcomes`.
//!
//! | command type | topic | aggregate id | payload | HTTP twin |
//! |---|---|---|---|---|
//! | `BindDomain` | `<prefix>.domain.commands` | the license's id | `{domain}` | `PUT /v1/licenses/{id}/domain` |
//! | `ChangeDomain` | `<prefix>.domain.commands` | the license's id | `{domain, accept_fee?}` | `POST /v1/licenses/{id}/domain/change` |
//! | `ResetDomain` | `<prefix>.domain.admin-commands` only | the license's id | `{reason}` | `DELETE /v1/licenses/{id}/domain` (`domain-admin`) |
//!
//! The operator reset is an administrator's: only administrators write the
//! admin topic, and on the other one it is refused (`INSUFFICIENT_SCOPE`).
//! A command id is one idempotency key across both channels.

use async_trait::async_trait;
use contracts::domain::*;
use contracts::{CommandEnvelope, ErrorKind};
use eventstore::{request_digest, StoreError};
use service_kit::command::{aggregate_uuid, context, Failure};
use service_kit::command_topic::{settle, Answer, Dispatch};
use service_kit::json::decode_payload;
use uuid::Uuid;

use crate::app::{view, DomainBinding};
use crate::domain::{Binding, BindingCommand};

/// Every command type this service takes from its command topics.
pub const COMMAND_TYPES: [&str; 3] = [BIND_DOMAIN, CHANGE_DOMAIN, RESET_DOMAIN];

impl DomainBinding {
    async fn kafka(
        &self,
        env: &CommandEnvelope,
        admin: bool,
        ctx: &mut eventstore::CommandContext,
    ) -> Result<(Uuid, Binding), Failure> {
        let id = aggregate_uuid(env, "the license's id")?;
        let binding = match env.command_type.as_str() {
            BIND_DOMAIN => {
                let req: BindDomain = decode_payload(&env.payload)?;
                ctx.request_digest = request_digest(BIND_DOMAIN, &(id, &req));
                self.bind(ctx, id, &req.domain).await?
            }
            CHANGE_DOMAIN => {
                let req: ChangeDomain = decode_payload(&env.payload)?;
                ctx.request_digest = request_digest(CHANGE_DOMAIN, &(id, &req));
                self.change(ctx, id, &req.domain, req.accept_fee).await?
            }
            RESET_DOMAIN => {
                if !admin {
                    return Err(Failure::refused(
                        "INSUFFICIENT_SCOPE",
                        ErrorKind::Forbidden,
                        "ResetDomain is an administrator's: send it on the admin-commands topic",
                    )
                    .with_field("command_type"));
                }
                let req: ResetDomain = decode_payload(&env.payload)?;
                ctx.request_digest = request_digest(RESET_DOMAIN, &(id, &req));
                let command = BindingCommand::Reset {
                    reason: req.reason.into(),
                };
                self.unbind(ctx, id, command).await?
            }
            other => {
                return Err(Failure::invalid(
                    "UNKNOWN_COMMAND",
                    format!(
                        "unknown command type {other:?}: these topics take {}",
                        COMMAND_TYPES.join(", ")
                    ),
                )
                .with_field("command_type"))
            }
        };
        Ok((id, binding))
    }
}

#[async_trait]
impl Dispatch for DomainBinding {
    async fn dispatch(&self, env: &CommandEnvelope, admin: bool) -> Result<Answer, StoreError> {
        let mut ctx = context(env);
        let answer = self.kafka(env, admin, &mut ctx).await;
        settle(
            &self.bindings,
            &ctx,
            &env.aggregate_id,
            answer,
            |(id, b)| serde_json::to_value(view(*id, b)).ok(),
        )
        .await
    }
}
