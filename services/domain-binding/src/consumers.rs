//! `<prefix>.issuance.events` into the license replica (in the offset's
//! transaction); a license revoked, reclaimed or deleted has its domain
//! released by this service's event. An expired license keeps its binding
//! until reclaim: the host check answers `LICENSE_EXPIRED` meanwhile.

use std::sync::Arc;

use async_trait::async_trait;
use bus::{HandleError, Incoming, TxHandler};
use chrono::Utc;
use contracts::domain::{ReleaseReason, RELEASE_DOMAIN};
use contracts::issuance::*;
use contracts::{Actor, ActorKind, EventEnvelope};
use eventstore::{derived_id, request_digest, CommandContext};
use sqlx::PgConnection;

use crate::app::DomainBinding;
use crate::domain::BindingCommand;

pub struct ReplicaConsumer {
    pub app: Arc<DomainBinding>,
}

#[async_trait]
impl TxHandler for ReplicaConsumer {
    async fn handle(&self, tx: &mut PgConnection, msg: &Incoming) -> Result<(), HandleError> {
        let payload = msg
            .payload
            .as_deref()
            .ok_or_else(|| HandleError::Poison("empty message".into()))?;
        let e: EventEnvelope = serde_json::from_slice(payload)
            .map_err(|err| HandleError::Poison(format!("not an event envelope: {err}")))?;
        if e.aggregate_type != LICENSE_AGGREGATE {
            return Ok(());
        }
        let Some(view) = service_kit::replica::fold_license(tx, &e).await? else {
            return Ok(());
        };
        let reason = match e.event_type.as_str() {
            LICENSE_REVOKED => ReleaseReason::LicenseRevoked,
            LICENSE_RECLAIMED => ReleaseReason::LicenseReclaimed,
            LICENSE_DELETED => ReleaseReason::LicenseDeleted,
            _ => return Ok(()),
        };
        let ctx = CommandContext {
            command_id: derived_id(e.event_id, "release-domain"),
            command_type: RELEASE_DOMAIN.into(),
            correlation_id: e.correlation_id.clone(),
            causation_id: Some(e.event_id.to_string()),
            actor: Actor::new(ActorKind::Service, crate::SERVICE),
            occurred_at: Utc::now(),
            request_digest: request_digest(RELEASE_DOMAIN, &e.event_id),
        };
        self.app
            .unbind(
                &ctx,
                view.id,
                BindingCommand::Release {
                    license_id: view.id,
                    reason,
                },
            )
            .await
            .map_err(|p| HandleError::Transient(format!("{}: {:?}", p.code(), p.detail())))?;
        Ok(())
    }
}
