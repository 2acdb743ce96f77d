//! `<prefix>.issuance.events` into the license replica (in the offset's
//! transaction); a license revoked, reclaimed or deleted has its domain
//! released by this service's event. An expired license keeps its binding
//! until reclaim: the host check answers `LICENSE_EXPIRED` meanwhile.

use std::sync::Arc;

use async_trait::async_trait;
use bus::{HandleError, Incoming, TxHandler};
use contracts::domain::{ReleaseReason, RELEASE_DOMAIN};
use contracts::issuance::*;
use eventstore::CommandContext;
use service_kit::command::Failure;
use sqlx::PgConnection;

use crate::app::DomainBinding;
use crate::domain::BindingCommand;

pub struct ReplicaConsumer {
    pub app: Arc<DomainBinding>,
}

#[async_trait]
impl TxHandler for ReplicaConsumer {
    async fn handle(&self, tx: &mut PgConnection, msg: &Incoming) -> Result<(), HandleError> {
        let e = msg.event()?;
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
        let ctx = CommandContext::reaction(&e, RELEASE_DOMAIN, "release-domain", crate::SERVICE);
        let done = self
            .app
            .unbind(
                &ctx,
                view.id,
                BindingCommand::Release {
                    license_id: view.id,
                    reason,
                },
            )
            .await;
        match done {
            Ok(_) => Ok(()),
            // A refusal is the release's stored answer: retrying changes nothing.
            Err(Failure::Refused(_) | Failure::Rejected(_)) => {
                tracing::warn!(license = %view.id, "domain release refused");
                Ok(())
            }
            Err(Failure::Store(e)) => Err(bus::transient(e)),
            Err(Failure::Internal(what)) => Err(HandleError::Transient(what)),
        }
    }
}
