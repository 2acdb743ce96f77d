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

const LOCK_KEY: i64 = 0x6c69_6373_6368_6564; // "licsched"
const BATCH: i64 = 500;

pub async fn run(issuance: Arc<Issuance>, every: Duration, mut shutdown: watch::Receiver<bool>) {
    loop {
        if let Err(e) = tick(&issuance).await {
            tracing::warn!(error = %e, "scheduler tick failed");
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
    let leader: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(LOCK_KEY)
        .fetch_one(&mut *tx)
        .await?;
    if !leader {
        return Ok(0);
    }
    let expiring: Vec<Uuid> = sqlx::query_scalar(
        "SELECT license_id FROM license_lookup \
         WHERE status IN ('active', 'suspended') AND expires_at <= $1 ORDER BY expires_at LIMIT $2",
    )
    .bind(now)
    .bind(BATCH)
    .fetch_all(&mut *tx)
    .await?;
    let reclaimable: Vec<Uuid> = sqlx::query_scalar(
        "SELECT license_id FROM license_lookup \
         WHERE status = 'expired' AND reclaim_at <= $1 ORDER BY reclaim_at LIMIT $2",
    )
    .bind(now)
    .bind(BATCH)
    .fetch_all(&mut *tx)
    .await?;
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
