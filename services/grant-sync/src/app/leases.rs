//! Leases: checkout, heartbeat, release and revocation of a license's
//! floating seats, and the scheduler that reclaims leases whose heartbeats
//! stopped. Heartbeats themselves are batched in `crate::heartbeat`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use contracts::grants::*;
use eventstore::{derived_id, CommandContext};
use service_kit::command::Failure;
use uuid::Uuid;

use super::{checked, system_context, GrantSync};
use crate::domain::*;
use crate::heartbeat::Beat;
use crate::store::{self, ClientRow};

/// Reclaims leases whose heartbeats stopped. Every instance runs it: the
/// claim (`FOR UPDATE SKIP LOCKED`, then `expiring`) gives each lease to one.
pub async fn reclaim_scheduler(
    app: Arc<GrantSync>,
    every: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if let Err(p) = app.reclaim_due().await {
            tracing::warn!(code = p.code(), "lease reclaim failed; retrying");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
    }
}

impl GrantSync {
    pub async fn grant(&self, license_id: Uuid) -> Result<Grant, Failure> {
        store::grant(&self.pool, license_id)
            .await?
            .ok_or_else(|| Failure::not_found("LICENSE_NOT_FOUND", "no such license"))
    }

    pub async fn checkout(
        &self,
        ctx: &CommandContext,
        client: &ClientRow,
        req: CheckoutLease,
    ) -> Result<Lease, Failure> {
        Self::assigned(client, req.license_id)?;
        let grant = self.grant(req.license_id).await?;
        self.check_clock(client, req.client_time, Some(grant.require_client_time))
            .await?;
        let bundles = store::bundles_of(&self.pool, &grant.product).await?;
        let lease_id = derived_id(ctx.command_id, "lease");
        let command = LeasesCommand::Checkout {
            lease_id,
            client_id: client.client_id,
            grant: Box::new(grant),
            bundles,
            feature: req.feature.into(),
            quantity: req.quantity,
        };
        let done = checked(
            self.leases
                .execute(&req.license_id.to_string(), command, ctx)
                .await,
        )?;
        self.lease_as_stored(&done.aggregate, lease_id).await
    }

    /// A lease as the command left it; one it did not touch (a replayed
    /// checkout of a lease ended since) from the inline index.
    async fn lease_as_stored(&self, leases: &Leases, lease_id: Uuid) -> Result<Lease, Failure> {
        if let Some(l) = leases.touched(&lease_id) {
            return Ok(l.clone());
        }
        store::lease(&self.pool, lease_id)
            .await?
            .ok_or_else(|| Failure::internal("state the command just stored"))
    }

    pub async fn heartbeat(&self, client: &ClientRow, lease_id: Uuid) -> Result<Beat, Failure> {
        self.heartbeats
            .beat(lease_id, client.client_id)
            .await
            .map_err(|e| {
                bus::outage::error("heartbeat", &e);
                Failure::Store(eventstore::StoreError::Corrupt(
                    "the lease store is unavailable".into(),
                ))
            })
    }

    /// The license and heartbeat deadline of one of the client's leases.
    async fn lease_row(
        &self,
        client: &ClientRow,
        lease_id: Uuid,
    ) -> Result<(Uuid, DateTime<Utc>), Failure> {
        store::lease_of_client(&self.pool, lease_id, client.client_id)
            .await?
            .ok_or_else(|| Failure::not_found("LEASE_NOT_FOUND", "no such lease"))
    }

    /// One of the client's leases: its license, its deadline, its state.
    pub async fn lease(
        &self,
        client: &ClientRow,
        lease_id: Uuid,
    ) -> Result<(Uuid, DateTime<Utc>, Lease), Failure> {
        let (license_id, deadline) = self.lease_row(client, lease_id).await?;
        // Live or ended, the inline index holds the whole lease.
        let lease = store::lease(&self.pool, lease_id)
            .await?
            .ok_or_else(|| Failure::not_found("LEASE_NOT_FOUND", "no such lease"))?;
        Ok((license_id, deadline, lease))
    }

    pub async fn release(
        &self,
        ctx: &CommandContext,
        client: &ClientRow,
        lease_id: Uuid,
    ) -> Result<(Uuid, Lease), Failure> {
        let (license_id, _) = self.lease_row(client, lease_id).await?;
        let command = LeasesCommand::Release {
            lease_id,
            client_id: client.client_id,
        };
        let done = checked(
            self.leases
                .execute(&license_id.to_string(), command, ctx)
                .await,
        )?;
        let lease = self.lease_as_stored(&done.aggregate, lease_id).await?;
        Ok((license_id, lease))
    }

    /// Ends every live lease of a license (of one client, when given);
    /// with `license_version`, checkouts decided on older versions of the
    /// license are refused from now on.
    pub async fn revoke_leases(
        &self,
        ctx: &CommandContext,
        license_id: Uuid,
        reason: LeaseEndReason,
        client_id: Option<Uuid>,
        license_version: Option<u64>,
    ) -> Result<(), Failure> {
        let command = LeasesCommand::Revoke {
            license_id,
            reason,
            client_id,
            license_version,
        };
        checked(
            self.leases
                .execute(&license_id.to_string(), command, ctx)
                .await,
        )?;
        Ok(())
    }

    /// Reclaims leases whose heartbeats stopped: marks them `expiring` (no
    /// heartbeat is accepted from then on) and records `LeaseExpired`. A
    /// crash in between leaves them `expiring`, and the next round
    /// finishes them; the derived command id makes a repeat a no-op.
    pub async fn reclaim_due(&self) -> Result<usize, Failure> {
        let now = self.now();
        let rows = store::mark_due_leases_expiring(&self.pool, now).await?;
        let mut pending = store::expiring_leases(&self.pool).await?;
        pending.extend(rows);
        pending.sort();
        pending.dedup();
        for (lease_id, license_id, deadline) in &pending {
            let ctx = system_context(EXPIRE_LEASE, &format!("expire-lease:{lease_id}"));
            let command = LeasesCommand::Expire {
                lease_id: *lease_id,
                deadline: *deadline,
            };
            let done = self
                .leases
                .execute(&license_id.to_string(), command, &ctx)
                .await?;
            // Ended meanwhile (released, revoked): the index already says so.
            if done.aggregate.leases.get(lease_id).map(|l| l.status) == Some(LeaseStatus::Live) {
                tracing::warn!(%lease_id, "lease still live after expiry");
            }
        }
        Ok(pending.len())
    }
}
