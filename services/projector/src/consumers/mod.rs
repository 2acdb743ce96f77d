//! Projects every context's events into `audit_trail` and `license_state`,
//! in the same transaction as the consumer's offsets.

use std::collections::HashMap;

use async_trait::async_trait;
use bus::{HandleError, Incoming, TxHandler};
use contracts::issuance::LICENSE_AGGREGATE;
use contracts::EventEnvelope;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::domain::{license_of, LicenseView};

pub struct EventProjector {
    /// Event topic → the context that owns it.
    pub contexts: HashMap<String, String>,
}

#[async_trait]
impl TxHandler for EventProjector {
    async fn handle(&self, tx: &mut PgConnection, msg: &Incoming) -> Result<(), HandleError> {
        let e = msg.event()?;
        let context = self
            .contexts
            .get(&msg.topic)
            .cloned()
            .unwrap_or_else(|| msg.topic.clone());
        let license_id = license_of(&e);
        if !record_audit(tx, &context, license_id, &e).await? {
            // Already projected: the relay re-published it after a restart.
            return Ok(());
        }
        if e.aggregate_type == LICENSE_AGGREGATE {
            if let Some(id) = license_id {
                fold_license(tx, id, &e).await?;
            }
        }
        Ok(())
    }
}

async fn record_audit(
    tx: &mut PgConnection,
    context: &str,
    license_id: Option<Uuid>,
    e: &EventEnvelope,
) -> Result<bool, HandleError> {
    let inserted = sqlx::query(
        "INSERT INTO audit_trail (event_id, context, aggregate_type, aggregate_id, sequence, \
           global_position, license_id, event_type, event_version, occurred_at, recorded_at, \
           actor_kind, actor_id, command_id, correlation_id, causation_id, payload, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19) \
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(e.event_id)
    .bind(context)
    .bind(&e.aggregate_type)
    .bind(&e.aggregate_id)
    .bind(i64::try_from(e.sequence).unwrap_or(i64::MAX))
    .bind(e.global_position)
    .bind(license_id)
    .bind(&e.event_type)
    .bind(&e.event_version)
    .bind(e.occurred_at)
    .bind(e.recorded_at)
    .bind(serde_json::to_value(e.actor.kind).unwrap_or_default().as_str().unwrap_or_default())
    .bind(&e.actor.id)
    .bind(e.command_id)
    .bind(&e.correlation_id)
    .bind(&e.causation_id)
    .bind(&e.payload)
    .bind(&e.prev_hash)
    .bind(&e.hash)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

async fn fold_license(
    tx: &mut PgConnection,
    id: Uuid,
    e: &EventEnvelope,
) -> Result<(), HandleError> {
    let row = sqlx::query(
        "SELECT state, last_sequence FROM license_state WHERE license_id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let current =
        match row {
            Some(r) => {
                let last: i64 = r.try_get("last_sequence")?;
                if u64::try_from(last).unwrap_or(0) >= e.sequence {
                    return Ok(());
                }
                let state: serde_json::Value = r.try_get("state")?;
                Some(serde_json::from_value::<LicenseView>(state).map_err(|err| {
                    HandleError::Transient(format!("stored view unreadable: {err}"))
                })?)
            }
            None => None,
        };
    let Some(view) =
        LicenseView::fold(current, e).map_err(|err| HandleError::Poison(err.to_string()))?
    else {
        return Ok(());
    };
    let state =
        serde_json::to_value(&view).map_err(|err| HandleError::Transient(err.to_string()))?;
    sqlx::query(
        "INSERT INTO license_state (license_id, state, status, product, customer, expires_at, last_sequence, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, now()) \
         ON CONFLICT (license_id) DO UPDATE SET state = EXCLUDED.state, status = EXCLUDED.status, \
           product = EXCLUDED.product, customer = EXCLUDED.customer, expires_at = EXCLUDED.expires_at, \
           last_sequence = EXCLUDED.last_sequence, updated_at = now()",
    )
    .bind(id)
    .bind(&state)
    .bind(view.status_text())
    .bind(&view.product)
    .bind(&view.customer)
    .bind(view.expires_at)
    .bind(i64::try_from(e.sequence).unwrap_or(i64::MAX))
    .execute(&mut *tx)
    .await?;
    Ok(())
}
