//! Activation's commands from `<prefix>.activation.commands`: the use cases
//! of the HTTP routes, each answered as its outcome on `command-outcomes`.
//! The sender is another team's service (the `caller` principal writes the
//! topic): like an `activator` API key it reaches every license, and names
//! a license it activates by its key.
//!
//! | command type | aggregate id | payload | HTTP twin |
//! |---|---|---|---|
//! | `Activate` | the license's id | [`Activate`] | `POST /v1/activations` |
//! | `Migrate` | the activation's id | [`Migrate`] | `POST /v1/activations/{id}/migrate` |
//! | `Uninstall` | the activation's id | `{}` | `POST /v1/activations/{id}/uninstall` |
//! | `StartTrial` | the product's code | [`StartTrial`] | `POST /v1/trials` |
//!
//! A command id is one idempotency key across both channels: the digest of
//! each command is the one its HTTP twin takes.

use async_trait::async_trait;
use contracts::activation::*;
use contracts::{CommandEnvelope, ErrorKind};
use eventstore::{request_digest, CommandContext, Refused, StoreError};
use serde::de::DeserializeOwned;
use serde_json::json;
use service_kit::auth::Principal;
use service_kit::command::{aggregate_uuid, context, Failure};
use service_kit::command_topic::{settle, Answer, Dispatch};
use service_kit::json::decode_payload;
use uuid::Uuid;

use crate::app::{Activation, Issued};

/// Every command type this service takes from its command topic.
pub const COMMAND_TYPES: [&str; 4] = [ACTIVATE, MIGRATE, UNINSTALL, START_TRIAL];

fn issued_result(i: &Issued) -> Option<serde_json::Value> {
    Some(json!({
        "activation_id": i.seat.activation_id,
        "license_id": i.license.id,
        "created": i.created,
    }))
}

/// The sender of a command from the topic: reaches every license.
fn sender(env: &CommandEnvelope) -> Principal {
    Principal {
        key_id: env.actor.id.clone(),
        scopes: Vec::new(),
        license: None,
    }
}

impl Activation {
    /// The typed payload, the request digest set as its HTTP twin's.
    fn payload<P: DeserializeOwned>(
        env: &CommandEnvelope,
        ctx: &mut CommandContext,
        digest: impl FnOnce(&P) -> String,
    ) -> Result<P, Failure> {
        let p: P = decode_payload(&env.payload)?;
        ctx.request_digest = digest(&p);
        Ok(p)
    }

    async fn kafka_activate(
        &self,
        env: &CommandEnvelope,
        ctx: &mut CommandContext,
    ) -> Result<Issued, Failure> {
        let body: Activate = Self::payload(env, ctx, |b: &Activate| {
            request_digest(ACTIVATE, &(&b.license_key, &b.fingerprint))
        })?;
        let license_id = aggregate_uuid(env, "the license's id")?;
        // As with an API key over HTTP, the key proves the sender knows the
        // license: its id alone (in outcomes, files, events) is no secret.
        let Some(key) = body.license_key.as_deref() else {
            return Err(Failure::invalid(
                "MISSING_FIELD",
                "license_key is required: a command names the license by its key",
            )
            .with_field("payload.license_key"));
        };
        let license = self
            .license_for(&Principal::of_license(license_id), Some(key))
            .await?;
        let policy = crate::domain::seats::policy(&license);
        let device = self.device(&body.fingerprint, body.client_time, &policy)?;
        self.activate(ctx, license, device, false, None).await
    }

    async fn kafka_migrate(
        &self,
        env: &CommandEnvelope,
        ctx: &mut CommandContext,
    ) -> Result<Issued, Failure> {
        let id = aggregate_uuid(env, "the activation's id")?;
        let body: Migrate = Self::payload(env, ctx, |b: &Migrate| {
            request_digest(MIGRATE, &(id, &b.fingerprint))
        })?;
        self.migrate(ctx, &sender(env), id, &body.fingerprint, body.client_time)
            .await
    }

    async fn kafka_uninstall(
        &self,
        env: &CommandEnvelope,
        ctx: &mut CommandContext,
    ) -> Result<(Uuid, String), Failure> {
        let id = aggregate_uuid(env, "the activation's id")?;
        let _: Uninstall = Self::payload(env, ctx, |_: &Uninstall| request_digest(UNINSTALL, &id))?;
        let receipt = self.uninstall(ctx, &sender(env), id).await?;
        Ok((id, receipt))
    }

    async fn kafka_start_trial(
        &self,
        env: &CommandEnvelope,
        ctx: &mut CommandContext,
    ) -> Result<crate::domain::Trial, Failure> {
        let body: StartTrial = Self::payload(env, ctx, crate::app::trial_digest)?;
        if body.product.as_str() != env.aggregate_id {
            return Err(Failure::invalid(
                "INVALID_AGGREGATE_ID",
                "aggregate_id must be the product's code",
            )
            .with_field("aggregate_id"));
        }
        self.start_trial(ctx, &body.product, &body.fingerprint, body.client_time)
            .await
    }
}

#[async_trait]
impl Dispatch for Activation {
    async fn dispatch(&self, env: &CommandEnvelope, _admin: bool) -> Result<Answer, StoreError> {
        let mut ctx = context(env);
        let target = env.aggregate_id.as_str();
        match env.command_type.as_str() {
            ACTIVATE => {
                let answer = self.kafka_activate(env, &mut ctx).await;
                settle(&self.seats, &ctx, target, answer, issued_result).await
            }
            MIGRATE => {
                let answer = self.kafka_migrate(env, &mut ctx).await;
                settle(&self.seats, &ctx, target, answer, |i: &Issued| {
                    let mut r = issued_result(i)?;
                    r["migrated_from"] = json!(env.aggregate_id);
                    Some(r)
                })
                .await
            }
            UNINSTALL => {
                let answer = self.kafka_uninstall(env, &mut ctx).await;
                settle(&self.seats, &ctx, target, answer, |(id, receipt)| {
                    Some(json!({
                        "activation_id": id,
                        "status": "uninstalled",
                        "receipt": receipt,
                    }))
                })
                .await
            }
            START_TRIAL => {
                let answer = self.kafka_start_trial(env, &mut ctx).await;
                settle(&self.trials, &ctx, target, answer, |t| {
                    t.state.as_ref().map(|s| {
                        json!({
                            "trial_id": s.trial_id,
                            "license_id": s.license_id,
                            "status": s.status,
                        })
                    })
                })
                .await
            }
            other => {
                let refused = Failure::Refused(
                    Refused::new(
                        "UNKNOWN_COMMAND",
                        ErrorKind::Invalid,
                        format!(
                            "unknown command type {other:?}: this topic takes {}",
                            COMMAND_TYPES.join(", ")
                        ),
                    )
                    .with_field("command_type"),
                );
                settle(&self.seats, &ctx, target, Err::<(), _>(refused), |_| None).await
            }
        }
    }
}
