//! Domain-binding use cases behind the HTTP API and the Kafka reactions:
//! claim the domain, run the binding command, release what is no longer
//! bound, keep the host-check cache current.

use std::sync::Arc;

use actix_web::http::StatusCode;
use contracts::license_view::LicenseView;
use eventstore::{CommandContext, Executed, Repository};
use service_kit::command::store_problem;
use service_kit::Problem;
use sqlx::PgPool;
use uuid::Uuid;

use crate::cache::Cache;
use crate::domain::host::{self, Registrable};
use crate::domain::{Binding, BindingCommand, BindingServices};
use crate::store::{self, BindingIndex, Claim};

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

fn status_of(code: &str, _field: Option<&str>) -> StatusCode {
    match code {
        "LICENSE_NOT_FOUND" => StatusCode::NOT_FOUND,
        "FEE_NOT_ACCEPTED" => StatusCode::PAYMENT_REQUIRED,
        "INVALID_REASON" | "SAME_DOMAIN" | "DOMAIN_NOT_REQUIRED" => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        _ => StatusCode::CONFLICT,
    }
}

fn rejection(done: &Executed<Binding>) -> Option<Problem> {
    service_kit::command::rejection(&done.outcome, status_of)
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

    /// Claims `host`'s domain for the license, runs `command`, and settles the
    /// claims: the new domain's kept on success, the old one's released.
    async fn rebind(
        &self,
        ctx: &CommandContext,
        license: &LicenseView,
        host: &Registrable,
        command: BindingCommand,
    ) -> Result<Binding, Problem> {
        let before = self.binding(license.id).await?;
        let claim = store::claim(&self.pool, &license.product, &host.domain, license.id)
            .await
            .map_err(db_problem)?;
        if let Claim::Taken(_) = claim {
            return Err(Problem::conflict(
                "DOMAIN_TAKEN",
                format!(
                    "{} is bound to another license of {}",
                    host.domain, license.product
                ),
            )
            .with_field("domain"));
        }
        let done = self
            .bindings
            .execute(&license.id.to_string(), command, ctx)
            .await;
        let failed = match &done {
            Ok(d) => rejection(d),
            Err(_) => Some(Problem::internal()),
        };
        let after = done.as_ref().ok().map(|d| d.aggregate.clone());
        let holds_new = after
            .as_ref()
            .is_some_and(|b| b.domain.as_deref() == Some(&host.domain));
        if failed.is_some() && claim == Claim::New && !holds_new {
            store::release(&self.pool, &license.product, &host.domain, license.id)
                .await
                .map_err(db_problem)?;
        }
        let done = done.map_err(store_problem)?;
        if let Some(p) = failed {
            return Err(p);
        }
        if let Some(old) = before.domain.filter(|d| *d != host.domain) {
            store::release(&self.pool, &license.product, &old, license.id)
                .await
                .map_err(db_problem)?;
        }
        self.cache
            .set_domain(license.id, done.aggregate.domain.clone());
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
        let command = BindingCommand::Bind {
            license: license.clone(),
            host: host.clone(),
        };
        self.rebind(ctx, &license, &host, command).await
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
            license: license.clone(),
            host: host.clone(),
            accept_fee,
        };
        self.rebind(ctx, &license, &host, command).await
    }

    /// Unbinds (operator reset or release): the claim goes with the event.
    pub async fn unbind(
        &self,
        ctx: &CommandContext,
        license_id: Uuid,
        command: BindingCommand,
    ) -> Result<Binding, Problem> {
        let before = self.binding(license_id).await?;
        let done = self
            .bindings
            .execute(&license_id.to_string(), command, ctx)
            .await
            .map_err(store_problem)?;
        if let Some(p) = rejection(&done) {
            return Err(p);
        }
        if let Some(old) = before.domain {
            store::release(&self.pool, &before.product, &old, license_id)
                .await
                .map_err(db_problem)?;
        }
        self.cache
            .set_domain(license_id, done.aggregate.domain.clone());
        Ok(done.aggregate)
    }
}
