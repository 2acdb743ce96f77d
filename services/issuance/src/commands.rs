//! The one command handler behind both the HTTP API and the Kafka command
//! topic: a command envelope in, the stored outcome and resulting state out.

use contracts::issuance::*;
use contracts::{CommandEnvelope, CommandOutcome};
use eventstore::{
    request_digest, CommandContext, ErrorKind, Executed, Refused, Repository, StoreError,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::sync::Arc;
use uuid::Uuid;

use crate::domain::{
    ApiKey, IssuanceServices, License, LicenseCommand, Product, ProductCommand, ProductState,
};
use crate::store::{LicenseLookup, WebhookEndpoints};
use service_kit::command::context;

/// Payload of commands that carry nothing (reinstate, delete).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

pub struct Issuance {
    pub pool: PgPool,
    pub licenses: Repository<License>,
    pub products: Repository<Product>,
    pub api_keys: Repository<ApiKey>,
}

/// What the channel a command came through entitles it to: over HTTP the
/// route's scope decided already; over Kafka, who may write the topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authority {
    /// The admin scope: HTTP routes that require it, the admin-commands topic.
    Admin,
    /// License commands only (the `issuer` scope, `<prefix>.issuance.commands`).
    Issuer,
}

/// Commands that change the catalog: the admin scope's alone.
pub fn needs_admin(command_type: &str) -> bool {
    matches!(command_type, CREATE_PRODUCT | SET_POLICY)
}

/// What a dispatched command produced.
pub enum Dispatched {
    License(Executed<License>),
    Product(Executed<Product>),
    /// Refused before reaching an aggregate (bad payload, unknown type).
    Refused(CommandOutcome),
}

impl Dispatched {
    pub fn outcome(&self) -> &CommandOutcome {
        match self {
            Self::License(e) => &e.outcome,
            Self::Product(e) => &e.outcome,
            Self::Refused(o) => o,
        }
    }
}

fn invalid_aggregate_id(message: &str) -> Refused {
    Refused::new("INVALID_AGGREGATE_ID", ErrorKind::Invalid, message).with_field("aggregate_id")
}

impl Issuance {
    pub fn new(pool: PgPool, services: IssuanceServices) -> Self {
        Self {
            licenses: Repository::new(pool.clone(), services.clone())
                .with_projection(Arc::new(LicenseLookup)),
            products: Repository::new(pool.clone(), services.clone()),
            api_keys: Repository::new(pool.clone(), services)
                .with_projection(Arc::new(WebhookEndpoints)),
            pool,
        }
    }

    pub async fn product(&self, code: &str) -> Result<Option<ProductState>, StoreError> {
        Ok(self.products.load(code).await?.0.state)
    }

    pub async fn dispatch(&self, env: &CommandEnvelope) -> Result<Dispatched, StoreError> {
        self.dispatch_to(env, false).await
    }

    /// `dispatch` of a command whose channel grants `authority`: a catalog
    /// command without the admin authority is refused (and the refusal
    /// stored, like every other).
    pub async fn dispatch_as(
        &self,
        env: &CommandEnvelope,
        authority: Authority,
    ) -> Result<Dispatched, StoreError> {
        if authority != Authority::Admin && needs_admin(&env.command_type) {
            let ctx = context(env);
            let message = format!(
                "{} needs the admin scope: send it on the admin-commands topic",
                env.command_type
            );
            return self
                .refuse(
                    env,
                    &ctx,
                    Refused::new("INSUFFICIENT_SCOPE", ErrorKind::Forbidden, message),
                )
                .await;
        }
        self.dispatch(env).await
    }

    /// `dispatch` for a command whose aggregate id the caller has just
    /// generated (HTTP `POST /v1/licenses`): no load of a stream that cannot
    /// exist yet.
    pub async fn dispatch_new(&self, env: &CommandEnvelope) -> Result<Dispatched, StoreError> {
        self.dispatch_to(env, true).await
    }

    async fn dispatch_to(
        &self,
        env: &CommandEnvelope,
        fresh: bool,
    ) -> Result<Dispatched, StoreError> {
        let mut ctx = context(env);
        let t = env.command_type.as_str();
        match t {
            CREATE_PRODUCT | SET_POLICY => {
                let command = if t == CREATE_PRODUCT {
                    let p: CreateProduct = match self.typed(env, &mut ctx).await? {
                        Ok(p) => p,
                        Err(refused) => return Ok(refused),
                    };
                    if p.code != env.aggregate_id {
                        return self
                            .refuse(
                                env,
                                &ctx,
                                invalid_aggregate_id("aggregate_id must be the product code"),
                            )
                            .await;
                    }
                    ProductCommand::Create(p)
                } else {
                    match self.typed(env, &mut ctx).await? {
                        Ok(p) => ProductCommand::SetPolicy(p),
                        Err(refused) => return Ok(refused),
                    }
                };
                let done = self
                    .products
                    .execute(&env.aggregate_id, command, &ctx)
                    .await?;
                Ok(Dispatched::Product(done))
            }
            ISSUE_LICENSE | RENEW_LICENSE | AMEND_FEATURES | SUSPEND_LICENSE
            | REINSTATE_LICENSE | REVOKE_LICENSE | DELETE_LICENSE => {
                let Ok(license_id) = Uuid::parse_str(&env.aggregate_id) else {
                    return self
                        .refuse(
                            env,
                            &ctx,
                            invalid_aggregate_id("aggregate_id must be a UUID"),
                        )
                        .await;
                };
                let command = match self.license_command(env, &mut ctx, license_id).await? {
                    Ok(c) => c,
                    Err(refused) => return Ok(refused),
                };
                let done = if fresh {
                    self.licenses
                        .execute_new(&env.aggregate_id, command, &ctx)
                        .await?
                } else {
                    self.licenses
                        .execute(&env.aggregate_id, command, &ctx)
                        .await?
                };
                Ok(Dispatched::License(done))
            }
            other => {
                let message = format!("unknown command type {other:?}");
                self.refuse(
                    env,
                    &ctx,
                    Refused::new("UNKNOWN_COMMAND", ErrorKind::Invalid, message),
                )
                .await
            }
        }
    }

    async fn license_command(
        &self,
        env: &CommandEnvelope,
        ctx: &mut CommandContext,
        license_id: Uuid,
    ) -> Result<Result<LicenseCommand, Dispatched>, StoreError> {
        Ok(Ok(match env.command_type.as_str() {
            ISSUE_LICENSE => {
                let spec: IssueLicense = match self.typed(env, ctx).await? {
                    Ok(p) => p,
                    Err(r) => return Ok(Err(r)),
                };
                let product = self.product(&spec.product).await?;
                LicenseCommand::Issue {
                    license_id,
                    spec,
                    product,
                }
            }
            RENEW_LICENSE => match self.typed(env, ctx).await? {
                Ok(p) => LicenseCommand::Renew(p),
                Err(r) => return Ok(Err(r)),
            },
            AMEND_FEATURES => {
                let amend: AmendFeatures = match self.typed(env, ctx).await? {
                    Ok(p) => p,
                    Err(r) => return Ok(Err(r)),
                };
                let (license, _) = self.licenses.load(&env.aggregate_id).await?;
                let product = match license.state {
                    Some(s) => self.product(&s.product).await?,
                    None => None,
                };
                LicenseCommand::AmendFeatures { amend, product }
            }
            SUSPEND_LICENSE | REVOKE_LICENSE => {
                let reason: Reason = match self.typed(env, ctx).await? {
                    Ok(p) => p,
                    Err(r) => return Ok(Err(r)),
                };
                if env.command_type == SUSPEND_LICENSE {
                    LicenseCommand::Suspend(reason)
                } else {
                    LicenseCommand::Revoke(reason)
                }
            }
            _ => {
                let _: Empty = match self.typed(env, ctx).await? {
                    Ok(p) => p,
                    Err(r) => return Ok(Err(r)),
                };
                if env.command_type == REINSTATE_LICENSE {
                    LicenseCommand::Reinstate
                } else {
                    LicenseCommand::Delete
                }
            }
        }))
    }

    /// The typed payload, with the request digest taken over its canonical
    /// form; or the stored refusal of an unreadable payload.
    async fn typed<P: DeserializeOwned + Serialize>(
        &self,
        env: &CommandEnvelope,
        ctx: &mut CommandContext,
    ) -> Result<Result<P, Dispatched>, StoreError> {
        match service_kit::json::decode_payload::<P>(&env.payload) {
            Ok(p) => {
                ctx.request_digest = request_digest(&env.command_type, &p);
                Ok(Ok(p))
            }
            Err(refused) => Ok(Err(self.refuse(env, ctx, refused).await?)),
        }
    }

    /// A command that never reaches an aggregate still gets a stored outcome,
    /// so a duplicate of it is answered the same way.
    async fn refuse(
        &self,
        env: &CommandEnvelope,
        ctx: &CommandContext,
        refused: Refused,
    ) -> Result<Dispatched, StoreError> {
        let outcome = self
            .licenses
            .reject(&env.aggregate_id, ctx, &refused)
            .await?;
        Ok(Dispatched::Refused(outcome))
    }
}
