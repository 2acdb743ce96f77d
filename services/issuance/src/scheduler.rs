//! Time-driven transitions: expiry at `expires_at`, reclaim once the
//! policy's reclaim delay has passed after it. Emitted as ordinary commands
//! through the same repository, by whichever instance holds the scheduler's
//! advisory lock, on the injectable clock.

use std::sync::Arc;
use std::time::Duration;

use contracts::{Actor, ActorKind};
use eventstore::CommandContext;
use tokio::sync::watch;
use uuid::Uuid;

use crate::commands::Issuance;
use crate::domain::LicenseCommand;
use crate::store;

const LOCK_KEY: i64 = 0x6c69_6373_6368_6564; // "licsched"
const BATCH: i64 = 500;

pub async fn run(issuance: Arc<Issuance>, every: Duration, mut shutdown: watch::Receiver<bool>) {
    loop {
        if let Err(e) = tick(&issuance).await {
            bus::outage::warn("scheduler tick", &e);
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One pass; returns how many transitions it applied.
pub async fn tick(issuance: &Issuance) -> Result<usize, eventstore::StoreError> {
    let now = issuance.licenses.services().clock.now();
    let mut tx = issuance.pool.begin().await?;
    let leader = store::try_xact_lock(&mut tx, LOCK_KEY).await?;
    if !leader {
        return Ok(0);
    }
    let expiring = store::expiring_licenses(&mut tx, now, BATCH).await?;
    let reclaimable = store::reclaimable_licenses(&mut tx, now, BATCH).await?;
    let correlation = format!("scheduler-{}", Uuid::now_v7());
    let mut applied = 0;
    for (ids, command, kind) in [
        (expiring, LicenseCommand::Expire, "ExpireLicense"),
        (reclaimable, LicenseCommand::Reclaim, "ReclaimLicense"),
    ] {
        for id in ids {
            let ctx = CommandContext {
                command_id: Uuid::now_v7(),
                command_type: kind.to_string(),
                correlation_id: correlation.clone(),
                causation_id: None,
                actor: Actor::new(ActorKind::Scheduler, "issuance-scheduler"),
                occurred_at: now,
                request_digest: eventstore::request_digest(kind, &id),
            };
            let done = issuance
                .licenses
                .execute(&id.to_string(), command.clone(), &ctx)
                .await?;
            if done.outcome.status == contracts::OutcomeStatus::Accepted {
                applied += 1;
            }
        }
    }
    tx.commit().await?;
    Ok(applied)
}
