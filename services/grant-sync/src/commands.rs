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

use crate::app::{client_view, resources_of, GrantSync};

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

/// What an upstream command's outcome carries: the upstream it was about.
/// Its state (endpoint, member id, secret digest) is an administrator's
/// to read over HTTP; outcomes are read by every caller.
fn upstream_result(id: uuid::Uuid) -> serde_json::Value {
    serde_json::json!({ "upstream_id": id })
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
                serde_json::to_value(client_view(&state, None))
                    .map_err(|e| Failure::internal(&format!("a client's view: {e}")))
            }
            CHECK_UPSTREAM => {
                admin_only(env, admin)?;
                let id = aggregate_uuid(env, "the upstream's id")?;
                let _: CheckUpstream = decode_payload(&env.payload)?;
                ctx.request_digest = request_digest(CHECK_UPSTREAM, &id);
                // A duplicate is answered from its stored outcome without
                // calling the upstream again; an id used for another
                // command is refused before any call.
                if self.upstreams.outcome_of(ctx).await?.is_none() {
                    self.check_upstream(ctx, id).await?;
                }
                Ok(upstream_result(id))
            }
            SYNC_UPSTREAM => {
                admin_only(env, admin)?;
                let id = aggregate_uuid(env, "the upstream's id")?;
                let req: SyncUpstream = decode_payload(&env.payload)?;
                let resources = resources_of(&req)?;
                ctx.request_digest = request_digest(SYNC_UPSTREAM, &(id, &req));
                // Refused before any call when the id names another command.
                // A pull records each resource under an id of its own, so a
                // duplicate pulls again (as a retried HTTP request does):
                // the imports change only what changed.
                self.upstreams.outcome_of(ctx).await?;
                self.sync_upstream(ctx, id, &resources).await?;
                Ok(upstream_result(id))
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
