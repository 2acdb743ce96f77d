//! Domain-binding use cases behind the HTTP API and the Kafka reactions:
//! run the binding command (its transaction also takes and lets go of the
//! domain claims, see `store::BindingIndex`), keep the host-check cache
//! current.

use std::sync::Arc;

use contracts::license_view::LicenseView;
use eventstore::{CommandContext, Executed, Repository};
use service_kit::command::Failure;
use sqlx::PgPool;
use uuid::Uuid;

use crate::cache::Cache;
use crate::domain::host::{self, Registrable};
use crate::domain::{Binding, BindingCommand, BindingServices};
use crate::store::BindingIndex;

pub struct DomainBinding {
    pub pool: PgPool,
    pub bindings: Repository<Binding>,
    pub cache: Arc<Cache>,
}

/// A host as submitted in `field`, reduced to its registrable domain.
pub fn parse_host(raw: &str, field: &'static str) -> Result<Registrable, Failure> {
    host::registrable(raw).map_err(|e| Failure::invalid(e.code(), e.to_string()).with_field(field))
}

/// A binding as the HTTP answer and a command's outcome show it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct BindingView {
    pub license_id: Uuid,
    pub product: String,
    /// The bound registrable domain; null while none is bound.
    #[schema(required = true)]
    pub domain: Option<String>,
    /// Changes made so far (the policy's free ones first).
    pub changes_used: u32,
    /// The license left service: nothing binds it again.
    pub released: bool,
    #[schema(required = true)]
    pub bound_at: Option<chrono::DateTime<chrono::Utc>>,
    /// What to set up so the bound domain serves the product.
    pub follow_up: Vec<String>,
}

pub fn view(license_id: Uuid, b: &Binding) -> BindingView {
    BindingView {
        license_id,
        product: b.product.clone(),
        domain: b.domain.clone(),
        changes_used: b.changes_used,
        released: b.released,
        bound_at: b.bound_at,
        follow_up: b
            .domain
            .as_deref()
            .map(crate::domain::binding::follow_up)
            .unwrap_or_default(),
    }
}

impl DomainBinding {
    pub fn new(pool: PgPool, services: BindingServices, cache: Arc<Cache>) -> Self {
        Self {
            bindings: Repository::new(pool.clone(), services)
                .with_projection(Arc::new(BindingIndex))
                .with_local_serialisation(),
            pool,
            cache,
        }
    }

    pub async fn license(&self, id: Uuid) -> Result<LicenseView, Failure> {
        service_kit::replica::license(&self.pool, id)
            .await?
            .ok_or_else(|| Failure::not_found("LICENSE_NOT_FOUND", "no such license"))
    }

    pub async fn binding(&self, license_id: Uuid) -> Result<Binding, Failure> {
        Ok(self.bindings.load(&license_id.to_string()).await?.0)
    }

    /// Runs a binding command; another license of the product holding the
    /// domain refuses it inside its transaction (`DOMAIN_TAKEN`).
    async fn run(
        &self,
        ctx: &CommandContext,
        license_id: Uuid,
        command: BindingCommand,
    ) -> Result<Binding, Failure> {
        let done: Executed<Binding> = self
            .bindings
            .execute(&license_id.to_string(), command, ctx)
            .await?;
        if done.outcome.status == contracts::OutcomeStatus::Rejected {
            return Err(Failure::Rejected(Box::new(done.outcome)));
        }
        self.cache
            .set_domain(license_id, done.aggregate.domain.clone());
        Ok(done.aggregate)
    }

    pub async fn bind(
        &self,
        ctx: &CommandContext,
        license_id: Uuid,
        raw: &str,
    ) -> Result<Binding, Failure> {
        let host = parse_host(raw, "domain")?;
        let license = self.license(license_id).await?;
        let command = BindingCommand::Bind { license, host };
        self.run(ctx, license_id, command).await
    }

    pub async fn change(
        &self,
        ctx: &CommandContext,
        license_id: Uuid,
        raw: &str,
        accept_fee: bool,
    ) -> Result<Binding, Failure> {
        let host = parse_host(raw, "domain")?;
        let license = self.license(license_id).await?;
        let command = BindingCommand::Change {
            license,
            host,
            accept_fee,
        };
        self.run(ctx, license_id, command).await
    }

    /// Unbinds (operator reset or release): the claim goes with the event.
    pub async fn unbind(
        &self,
        ctx: &CommandContext,
        license_id: Uuid,
        command: BindingCommand,
    ) -> Result<Binding, Failure> {
        self.run(ctx, license_id, command).await
    }
}
