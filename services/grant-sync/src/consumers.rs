//! What grant sync learns from the other contexts, applied in the consumer
//! offset's transaction: licenses and products (issuance), revoked
//! activations (activation), bound domains (domain binding) — each change
//! also lands in the change feed clients sync from. And its reactions: a
//! license suspended, revoked, reclaimed or deleted ends its leases at once;
//! so does a revoked client, and an upstream license that ended.

use std::sync::Arc;

use async_trait::async_trait;
use bus::{transient, HandleError, Incoming, TxHandler};
use contracts::activation::*;
use contracts::domain::*;
use contracts::grants::*;
use contracts::issuance::*;
use contracts::EventEnvelope;
use eventstore::CommandContext;
use sqlx::PgConnection;

use crate::app::GrantSync;
use crate::store;

/// A reaction's failure, retried: revoking leases refuses nothing a
/// retry could not get past, so a refusal is logged loudly.
fn problem(f: service_kit::command::Failure) -> HandleError {
    use service_kit::command::Failure;
    match f {
        Failure::Store(e) => bus::transient(e),
        refused => {
            tracing::error!(code = ?refused.code(), "reaction refused");
            HandleError::Transient(format!("refused: {:?}", refused.code()))
        }
    }
}

/// `<prefix>.issuance.events`, `<prefix>.activation.events` and
/// `<prefix>.domain.events` into the replicas and the change feed.
pub struct ReplicaConsumer {
    pub app: Arc<GrantSync>,
}

#[async_trait]
impl TxHandler for ReplicaConsumer {
    async fn handle(&self, tx: &mut PgConnection, msg: &Incoming) -> Result<(), HandleError> {
        let e = msg.event()?;
        match e.aggregate_type.as_str() {
            PRODUCT_AGGREGATE if e.event_type == PRODUCT_CREATED => {
                let p: ProductCreated = bus::payload(&e)?;
                let product = CatalogProduct {
                    code: p.code,
                    name: p.name,
                    features: p.features,
                    bundles: p.bundles,
                };
                store::upsert_product(tx, &product, None)
                    .await
                    .map_err(transient)
            }
            LICENSE_AGGREGATE => self.license(tx, &e).await,
            ACTIVATIONS_AGGREGATE => revocations(tx, &e).await,
            BINDING_AGGREGATE => domain(tx, &e).await,
            _ => Ok(()),
        }
    }
}

impl ReplicaConsumer {
    async fn license(&self, tx: &mut PgConnection, e: &EventEnvelope) -> Result<(), HandleError> {
        let Some(view) = service_kit::replica::fold_license(tx, e).await? else {
            return Ok(());
        };
        store::upsert_local_grant(tx, &view)
            .await
            .map_err(transient)?;
        let reason = match e.event_type.as_str() {
            LICENSE_SUSPENDED => LeaseEndReason::LicenseSuspended,
            LICENSE_REVOKED => LeaseEndReason::LicenseRevoked,
            LICENSE_RECLAIMED => LeaseEndReason::LicenseReclaimed,
            LICENSE_DELETED => LeaseEndReason::LicenseDeleted,
            _ => return Ok(()),
        };
        let ctx = CommandContext::reaction(e, REVOKE_LEASES, "revoke-leases", crate::SERVICE);
        self.app
            .revoke_leases(&ctx, view.id, reason, None, Some(view.version))
            .await
            .map_err(problem)
    }
}

async fn revocations(tx: &mut PgConnection, e: &EventEnvelope) -> Result<(), HandleError> {
    let revoked: Vec<Revocation> = match e.event_type.as_str() {
        ACTIVATION_UNINSTALLED => {
            let p: ActivationUninstalled = bus::payload(e)?;
            vec![Revocation {
                activation_id: p.activation_id,
                license_id: p.license_id,
                reason: "uninstalled".into(),
                revoked_at: p.uninstalled_at,
            }]
        }
        ACTIVATION_MIGRATED => {
            let p: ActivationMigrated = bus::payload(e)?;
            vec![Revocation {
                activation_id: p.from_activation_id,
                license_id: p.license_id,
                reason: "migrated".into(),
                revoked_at: p.migrated_at,
            }]
        }
        ACTIVATIONS_REVOKED => {
            let p: ActivationsRevoked = bus::payload(e)?;
            let reason = serde_json::to_value(p.reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            p.activation_ids
                .into_iter()
                .map(|activation_id| Revocation {
                    activation_id,
                    license_id: p.license_id,
                    reason: reason.clone(),
                    revoked_at: p.revoked_at,
                })
                .collect()
        }
        _ => return Ok(()),
    };
    for r in &revoked {
        store::insert_revocation(tx, r, None)
            .await
            .map_err(transient)?;
    }
    Ok(())
}

async fn domain(tx: &mut PgConnection, e: &EventEnvelope) -> Result<(), HandleError> {
    let (license_id, domain, at) = match e.event_type.as_str() {
        DOMAIN_BOUND => {
            let p: DomainBound = bus::payload(e)?;
            (p.license_id, Some(p.domain), p.bound_at)
        }
        DOMAIN_CHANGED => {
            let p: DomainChanged = bus::payload(e)?;
            (p.license_id, Some(p.domain), p.changed_at)
        }
        DOMAIN_RESET => {
            let p: DomainReset = bus::payload(e)?;
            (p.license_id, None, p.reset_at)
        }
        DOMAIN_RELEASED => {
            let p: DomainReleased = bus::payload(e)?;
            (p.license_id, None, p.released_at)
        }
        _ => return Ok(()),
    };
    let version = i64::try_from(e.sequence).unwrap_or(i64::MAX);
    store::set_domain(tx, license_id, domain, version, at)
        .await
        .map_err(transient)
}

/// This service's own events (`<prefix>.grants.events`): a revoked client
/// loses its leases; an imported license that ended ends its leases.
pub struct ReactionConsumer {
    pub app: Arc<GrantSync>,
}

#[async_trait]
impl TxHandler for ReactionConsumer {
    async fn handle(&self, _tx: &mut PgConnection, msg: &Incoming) -> Result<(), HandleError> {
        let e = msg.event()?;
        match e.event_type.as_str() {
            CLIENT_REVOKED => {
                let p: ClientRevoked = bus::payload(&e)?;
                let licenses = store::client_licenses(&self.app.pool, p.client_id)
                    .await
                    .map_err(transient)?
                    .unwrap_or_default();
                for license_id in licenses {
                    let ctx = CommandContext::reaction(
                        &e,
                        REVOKE_LEASES,
                        &format!("revoke-leases:{license_id}"),
                        crate::SERVICE,
                    );
                    self.app
                        .revoke_leases(
                            &ctx,
                            license_id,
                            LeaseEndReason::ClientRevoked,
                            Some(p.client_id),
                            None,
                        )
                        .await
                        .map_err(problem)?;
                }
                Ok(())
            }
            UPSTREAM_LICENSE_IMPORTED => {
                let p: UpstreamLicenseImported = bus::payload(&e)?;
                if !p.grant.ends_leases() {
                    return Ok(());
                }
                let reason = match p.grant.status {
                    LicenseStatus::Suspended => LeaseEndReason::LicenseSuspended,
                    LicenseStatus::Reclaimed => LeaseEndReason::LicenseReclaimed,
                    LicenseStatus::Deleted => LeaseEndReason::LicenseDeleted,
                    _ => LeaseEndReason::LicenseRevoked,
                };
                let ctx =
                    CommandContext::reaction(&e, REVOKE_LEASES, "revoke-leases", crate::SERVICE);
                self.app
                    .revoke_leases(
                        &ctx,
                        p.grant.license_id,
                        reason,
                        None,
                        Some(p.grant.version),
                    )
                    .await
                    .map_err(problem)
            }
            _ => Ok(()),
        }
    }
}
