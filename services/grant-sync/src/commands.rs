//! Grant sync's commands from Kafka: the use cases of its HTTP routes, each
//! answered as its outcome on `command-outcomes`.
//!
//! | command type | topic | aggregate id | payload | HTTP twin |
//! |---|---|---|---|---|
//! | `RevokeClient` | `<prefix>.grants.commands` | the client's id | `{reason}` | `POST /v1/clients/{id}/revoke` |
//! | `CheckUpstream` | `<prefix>.grants.admin-commands` only | the upstream's id | `{}` | `POST /v1/upstreams/{id}/check` |
//! | `SyncUpstream` | `<prefix>.grants.admin-commands` only | the upstream's id | `{resource}` | `POST /v1/upstreams/{id}/sync` |
//!
//! Upstreams are an administrator's: only administrators write the admin
//! topic, and on the other one their commands are refused
//! (`INSUFFICIENT_SCOPE`). A command id is one idempotency key across both
//! channels.

use async_trait::async_trait;
use contracts::grants::*;
use contracts::{CommandEnvelope, ErrorKind};
use eventstore::{request_digest, CommandContext, StoreError};
use service_kit::command::{aggregate_uuid, context, Failure};
use service_kit::command_topic::{settle, Answer, Dispatch};
use service_kit::json::decode_payload;

use crate::app::{client_view, resources_of, upstream_view, GrantSync};

/// Every command type this service takes from its command topics.
pub const COMMAND_TYPES: [&str; 3] = [REVOKE_CLIENT, CHECK_UPSTREAM, SYNC_UPSTREAM];

fn admin_only(env: &CommandEnvelope, admin: bool) -> Result<(), Failure> {
    if admin {
        return Ok(());
    }
    Err(Failure::refused(
        "INSUFFICIENT_SCOPE",
        ErrorKind::Forbidden,
        format!(
            "{} is an administrator's: send it on the admin-commands topic",
            env.command_type
        ),
    )
    .with_field("command_type"))
}

impl GrantSync {
    async fn kafka(
        &self,
        env: &CommandEnvelope,
        admin: bool,
        ctx: &mut CommandContext,
    ) -> Result<serde_json::Value, Failure> {
        match env.command_type.as_str() {
            REVOKE_CLIENT => {
                let id = aggregate_uuid(env, "the client's id")?;
                let req: RevokeClient = decode_payload(&env.payload)?;
                ctx.request_digest = request_digest(REVOKE_CLIENT, &(id, &req.reason));
                let state = self.revoke_client(ctx, id, req.reason.into()).await?;
                Ok(client_view(&state, None))
            }
            CHECK_UPSTREAM => {
                admin_only(env, admin)?;
                let id = aggregate_uuid(env, "the upstream's id")?;
                let _: CheckUpstream = decode_payload(&env.payload)?;
                ctx.request_digest = request_digest(CHECK_UPSTREAM, &id);
                Ok(upstream_view(&self.check_upstream(ctx, id).await?))
            }
            SYNC_UPSTREAM => {
                admin_only(env, admin)?;
                let id = aggregate_uuid(env, "the upstream's id")?;
                let req: SyncUpstream = decode_payload(&env.payload)?;
                let resources = resources_of(&req)?;
                ctx.request_digest = request_digest(SYNC_UPSTREAM, &(id, &req));
                Ok(upstream_view(
                    &self.sync_upstream(ctx, id, &resources).await?,
                ))
            }
            other => Err(Failure::invalid(
                "UNKNOWN_COMMAND",
                format!(
                    "unknown command type {other:?}: these topics take {}",
                    COMMAND_TYPES.join(", ")
                ),
            )
            .with_field("command_type")),
        }
    }
}

#[async_trait]
impl Dispatch for GrantSync {
    async fn dispatch(&self, env: &CommandEnvelope, admin: bool) -> Result<Answer, StoreError> {
        let mut ctx = context(env);
        let answer = self.kafka(env, admin, &mut ctx).await;
        // Clients and upstreams share the outcome table: either repository
        // reads and answers it.
        settle(&self.clients, &ctx, &env.aggregate_id, answer, |v| {
            Some(v.clone())
        })
        .await
    }
}
