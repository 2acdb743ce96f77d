//! Domain-binding use cases behind the HTTP API and the Kafka reactions:
//! run the binding command (its transaction also takes and lets go of the
//! domain claims, see `store::BindingIndex`), keep the host-check cache
//! current.

use std::sync::Arc;

use contracts::license_view::LicenseView;
use eventstore::{CommandContext, Executed, Repository};
use service_kit::command::store_problem;
use service_kit::Problem;
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

pub fn db_problem(e: sqlx::Error) -> Problem {
    store_problem(eventstore::StoreError::Database(e))
}

/// A host as submitted in `field`, reduced to its registrable domain.
pub fn parse_host(raw: &str, field: &str) -> Result<Registrable, Problem> {
    host::registrable(raw)
        .map_err(|e| Problem::unprocessable(e.code(), e.to_string()).with_field(field))
}

fn rejection(done: &Executed<Binding>) -> Option<Problem> {
    service_kit::command::rejection(&done.outcome)
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

    pub async fn license(&self, id: Uuid) -> Result<LicenseView, Problem> {
        service_kit::replica::license(&self.pool, id)
            .await
            .map_err(db_problem)?
            .ok_or_else(|| Problem::not_found("LICENSE_NOT_FOUND", "no such license"))
    }

    pub async fn binding(&self, license_id: Uuid) -> Result<Binding, Problem> {
        Ok(self
            .bindings
            .load(&license_id.to_string())
            .await
            .map_err(store_problem)?
            .0)
    }

    /// Runs a binding command; another license of the product holding the
    /// domain refuses it inside its transaction (`DOMAIN_TAKEN`).
    async fn run(
        &self,
        ctx: &CommandContext,
        license_id: Uuid,
        command: BindingCommand,
    ) -> Result<Binding, Problem> {
        let done = self
            .bindings
            .execute(&license_id.to_string(), command, ctx)
            .await
            .map_err(store_problem)?;
        if let Some(p) = rejection(&done) {
            return Err(p);
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
    ) -> Result<Binding, Problem> {
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
    ) -> Result<Binding, Problem> {
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
    ) -> Result<Binding, Problem> {
        self.run(ctx, license_id, command).await
    }
}
